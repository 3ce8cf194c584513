//! The read models the runtimes publish to the snapshot store (Redis): where each lives, and what the statistics
//! hashes hold.
//!
//! The managers and every agent write their statistics as flat string hashes that `mesh status`, `mesh bench`,
//! `mesh inspect`, `cargo xtask chaos` and the tests read back. Each hash is one type here, so that a field's name and
//! encoding are written once, for the writer and all its readers, and `docs/protocol.md` ("Redis keys") describes
//! them. This module only turns values into string pairs and back: reading and writing the store is the caller's.
//!
//! Every field is optional when read: a hash may predate a field (written by an older version), a writer may not
//! have written it yet (an agent's hash holds only `started_at_ms` until its first statistics), and an unreadable
//! value is no reason to lose the others. Each reader decides what a missing field means for it.

/// The store keys the runtimes write, under the mesh's prefix: one place for the writers and their readers to agree
/// on. Documented in `docs/protocol.md`.
pub mod redis_keys {
    /// JSON snapshot of the topology manager (state after the last applied window, changelog position): what a
    /// restarted manager resumes from.
    pub fn topology_snapshot(prefix: &str) -> String {
        format!("{prefix}:topology:snapshot")
    }
    /// Hash of graph statistics ([`super::TopologyStats`]), refreshed at every window and every second.
    pub fn topology_stats(prefix: &str) -> String {
        format!("{prefix}:topology:stats")
    }
    /// JSON snapshot of the consensus manager (state machine and offsets): what a restarted manager resumes from.
    pub fn consensus_snapshot(prefix: &str) -> String {
        format!("{prefix}:consensus:snapshot")
    }
    /// Hash of consensus statistics ([`super::ConsensusStats`]).
    pub fn consensus_stats(prefix: &str) -> String {
        format!("{prefix}:consensus:stats")
    }
    /// Hash of one agent's counters ([`super::AgentStats`]), refreshed when they change.
    pub fn agent_stats(prefix: &str, agent: &str) -> String {
        format!("{prefix}:agent:{agent}")
    }
    /// Hash proposal id → decision JSON: the first decision stored for a proposal is final.
    pub fn decisions(prefix: &str) -> String {
        format!("{prefix}:decisions")
    }
}

/// How one kind of value is spelled in a hash field, so that every field of a kind is spelled alike.
trait FieldValue: Sized {
    /// The field's text, as written to the store.
    fn encode(&self) -> String;
    /// The value of a field's text; `None` when it is not one (readers then treat the field as absent).
    fn decode(text: &str) -> Option<Self>;
}

impl FieldValue for u64 {
    fn encode(&self) -> String {
        self.to_string()
    }
    fn decode(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// Fractions and weights: four decimals, which is what the topology manager has always written and all its readers
/// need.
impl FieldValue for f64 {
    fn encode(&self) -> String {
        format!("{self:.4}")
    }
    fn decode(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl FieldValue for String {
    fn encode(&self) -> String {
        self.clone()
    }
    fn decode(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

/// The fields of a statistics hash that its writer also exports as Prometheus metrics under the same names, each
/// with its help text: so a name exists once for the hash, its readers and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricFields {
    /// Counts since the writer started (Prometheus counters).
    pub counters: &'static [(&'static str, &'static str)],
    /// Whole-number levels (gauges).
    pub gauges: &'static [(&'static str, &'static str)],
    /// Levels with a fraction (gauges of floating-point values).
    pub fractions: &'static [(&'static str, &'static str)],
}

/// The values of a hash's [`MetricFields`] (0 for a field not set), in the same order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricValues {
    /// Each counter's value.
    pub counters: Vec<(&'static str, u64)>,
    /// Each whole-number level.
    pub gauges: Vec<(&'static str, i64)>,
    /// Each fractional level.
    pub fractions: Vec<(&'static str, f64)>,
}

/// Declares a statistics hash: the struct, whose field names are the hash's field names (so each is written once),
/// and its conversions to and from the store's field/value pairs, in declaration order. A field marked
/// `as counter("help")`, `as gauge("help")` or `as fraction("help")` is also one of the writer's Prometheus metrics
/// ([`MetricFields`]), and its help is its documentation.
macro_rules! stats_hash {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: Option<$ty:ty>
                $(as counter($counter:literal))?
                $(as gauge($gauge:literal))?
                $(as fraction($fraction:literal))?,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                $(#[doc = $counter])?
                $(#[doc = $gauge])?
                $(#[doc = $fraction])?
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// Every field name of the hash, in the order they are written: for documentation checks and tools
            /// that list them.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The fields the writer exports as metrics, by kind, with their help texts.
            pub const METRICS: MetricFields = MetricFields {
                counters: &[$($((stringify!($field), $counter),)?)*],
                gauges: &[$($((stringify!($field), $gauge),)?)*],
                fractions: &[$($((stringify!($field), $fraction),)?)*],
            };

            /// The values of [`Self::METRICS`], to copy into the metrics registry.
            pub fn metric_values(&self) -> MetricValues {
                let mut values = MetricValues::default();
                $(
                    $(
                        let _: &str = $counter;
                        values.counters.push((stringify!($field), self.$field.unwrap_or_default()));
                    )?
                    $(
                        let _: &str = $gauge;
                        let level = i64::try_from(self.$field.unwrap_or_default()).unwrap_or(i64::MAX);
                        values.gauges.push((stringify!($field), level));
                    )?
                    $(
                        let _: &str = $fraction;
                        values.fractions.push((stringify!($field), self.$field.unwrap_or_default()));
                    )?
                )*
                values
            }

            /// The field/value pairs to write (HSET) to the hash, the absent fields left out: a field written
            /// earlier on its own (an agent's `started_at_ms`) is kept, as HSET only sets the fields it is given.
            pub fn to_fields(&self) -> Vec<(String, String)> {
                let mut fields = Vec::with_capacity(Self::FIELDS.len());
                $(
                    if let Some(value) = &self.$field {
                        fields.push((stringify!($field).to_owned(), FieldValue::encode(value)));
                    }
                )*
                fields
            }

            /// Reads a hash as the store returns it (HGETALL pairs, or a map of them). Never fails: a field missing
            /// or unreadable is `None` and the others are kept, so a hash written by an older or newer version
            /// still reads; fields this version does not know are ignored.
            pub fn from_fields<K: AsRef<str>, V: AsRef<str>>(fields: impl IntoIterator<Item = (K, V)>) -> Self {
                let mut stats = Self::default();
                for (name, text) in fields {
                    match name.as_ref() {
                        $( stringify!($field) => stats.$field = FieldValue::decode(text.as_ref()), )*
                        _ => {}
                    }
                }
                stats
            }
        }
    };
}

stats_hash! {
    /// The topology manager's statistics: how `mesh status`, `mesh bench` and `cargo xtask chaos` see the graph
    /// and whether the manager keeps up with its windows.
    pub struct TopologyStats {
        /// Agents in the graph.
        pub agents: Option<u64>,
        /// Agents live in the roster.
        pub live_agents: Option<u64>,
        pub edges: Option<u64> as gauge("Edges of the SlimeMold graph"),
        pub active_edges: Option<u64> as gauge("Edges that carried traffic since they were made"),
        /// Edges over those of the full mesh.
        pub density: Option<f64>,
        /// 1 - density: how much smaller than the full mesh the graph is.
        pub reduction_vs_full_mesh: Option<f64>,
        pub mean_weight: Option<f64> as fraction("Mean weight of the graph's edges (0 to 1)"),
        /// Smallest edge weight.
        pub min_weight: Option<f64>,
        /// Largest edge weight.
        pub max_weight: Option<f64>,
        /// The roster's epoch.
        pub epoch: Option<u64>,
        pub messages_counted: Option<u64> as counter("Tasks and responses counted into the graph"),
        /// Records counted into the window being recorded.
        pub open_window_records: Option<u64>,
        /// How long the window being recorded has waited for its acknowledgement; 0 when none does.
        pub oldest_open_window_ms: Option<u64>,
        /// What the manager waits for, for people.
        pub waiting_for: Option<String>,
        /// How long after its tick the last window was applied.
        pub window_late_ms: Option<u64>,
        /// The latest any window was applied after its tick, since start.
        pub window_late_max_ms: Option<u64>,
        pub windows_applied: Option<u64> as counter("Windows applied (one per decay tick)"),
        pub windows_late: Option<u64>
            as counter("Windows applied more than one decay interval + 100 ms after their tick"),
        /// Round trip of the last probe on the heartbeats topic.
        pub probe_rtt_ms: Option<u64>,
        pub probes_returned: Option<u64> as counter("The manager's own heartbeat probes read back"),
        /// When the failure detector's clocks last started (ms since the Unix epoch).
        pub detector_clocks_since_ms: Option<u64>,
        /// When the manager wrote these statistics (ms since the Unix epoch).
        pub updated_at_ms: Option<u64>,
        /// Tick of the last applied window; absent until one is.
        pub tick: Option<u64>,
        /// Sequence number of the last applied window; absent until one is.
        pub window: Option<u64>,
    }
}

stats_hash! {
    /// The consensus manager's statistics: proposals waiting and decided, and the inputs it set aside.
    pub struct ConsensusStats {
        /// Proposals waiting for a decision.
        pub pending: Option<u64>,
        /// Decisions remembered (the latest 100,000).
        pub decided: Option<u64>,
        /// Proposals accepted since start.
        pub accepted: Option<u64>,
        /// Proposals rejected since start.
        pub rejected: Option<u64>,
        /// Proposals expired since start.
        pub expired: Option<u64>,
        /// Proposals inhibited since start.
        pub inhibited: Option<u64>,
        /// Proposals refused since start.
        pub refused: Option<u64>,
        pub proposals_parked: Option<u64> as gauge("Proposals waiting for the roster to reach their epoch"),
        pub roster_epoch: Option<u64> as gauge("The newest roster epoch read"),
        pub ignored_inputs: Option<u64> as counter("Inputs not applied (duplicates, late votes, non-voters)"),
        pub dead_lettered: Option<u64> as counter("Records dead-lettered (undecodable or not authenticated)"),
        pub early_dropped: Option<u64>
            as counter("Inputs for proposals never seen, dropped to keep their buffer bounded"),
        pub early_buffered: Option<u64> as gauge("Inputs read before their proposal, waiting for it"),
        /// When the manager wrote these statistics (ms since the Unix epoch).
        pub updated_at_ms: Option<u64>,
    }
}

stats_hash! {
    /// One agent's counters and latency histograms: what `mesh bench` measures a run by and the tests watch.
    pub struct AgentStats {
        /// The agent's role.
        pub role: Option<String>,
        pub tasks_sent: Option<u64> as counter("Tasks sent to other agents"),
        pub tasks_handled: Option<u64> as counter("Tasks handled (answered)"),
        /// Responses sent.
        pub responses_sent: Option<u64>,
        pub responses_received: Option<u64> as counter("Responses to this agent's tasks"),
        pub duplicates: Option<u64> as counter("Records read again (at-least-once delivery) and recognised by id"),
        pub proposals: Option<u64> as counter("Proposals made"),
        pub votes: Option<u64> as counter("Votes cast"),
        pub no_recipient: Option<u64> as counter("Tasks not sent: no live agent of the role"),
        /// Scenario ticks skipped before the agent was a member.
        pub not_member: Option<u64>,
        pub errors_answered: Option<u64> as counter("Tasks answered with an error (an unknown task name)"),
        pub tasks_unanswerable: Option<u64> as counter("Tasks dead-lettered because no response can name them"),
        pub sends_refused: Option<u64> as counter("Sends the broker refused for good (dead-lettered)"),
        pub heartbeats_skipped: Option<u64> as counter("Heartbeat ticks skipped while one was unacknowledged"),
        pub tasks_shed: Option<u64>
            as counter("Scenario tasks not sent: the send window was full (the broker acknowledged too slowly)"),
        pub send_window: Option<u64> as gauge("Own tasks this agent may have unacknowledged at once (AIMD window)"),
        pub unauthenticated: Option<u64> as counter("Records read that their writer did not tag (forged), ignored"),
        pub round_trips_lost: Option<u64> as counter("Tasks whose round trip went unmeasured (too many awaited)"),
        /// Send-to-handling latency, µs: an HdrHistogram V2, base64 (`mesh_node::latency::Latency` decodes it).
        pub delivery_us: Option<String>,
        /// Task-to-response latency, µs, encoded like `delivery_us`.
        pub round_trip_us: Option<String>,
        pub live_peers: Option<u64> as gauge("Other agents live in this agent's roster"),
        /// Sends awaiting acknowledgement.
        pub in_flight: Option<u64>,
        pub supports_held: Option<u64> as gauge("Subjects on which this agent holds a support"),
        /// When this run of the agent started (ms since the Unix epoch): written once, on its own, at start, so a
        /// restart shows.
        pub started_at_ms: Option<u64>,
        /// When the agent wrote these statistics (ms since the Unix epoch).
        pub updated_at_ms: Option<u64>,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn topology() -> TopologyStats {
        TopologyStats {
            agents: Some(4),
            live_agents: Some(3),
            edges: Some(12),
            active_edges: Some(9),
            density: Some(1.0),
            reduction_vs_full_mesh: Some(0.25),
            mean_weight: Some(0.5125),
            min_weight: Some(0.1),
            max_weight: Some(0.9999),
            epoch: Some(7),
            messages_counted: Some(1_000),
            open_window_records: Some(3),
            oldest_open_window_ms: Some(0),
            waiting_for: Some("the next tick".to_owned()),
            window_late_ms: Some(12),
            window_late_max_ms: Some(250),
            windows_applied: Some(40),
            windows_late: Some(1),
            probe_rtt_ms: Some(2),
            probes_returned: Some(80),
            detector_clocks_since_ms: Some(1_764_000_000_000),
            updated_at_ms: Some(1_764_000_004_000),
            tick: Some(882_000_002),
            window: Some(39),
        }
    }

    #[test]
    fn metric_fields_are_fields_of_their_hash_and_read_their_values() {
        for (fields, metrics) in [
            (TopologyStats::FIELDS, TopologyStats::METRICS),
            (ConsensusStats::FIELDS, ConsensusStats::METRICS),
            (AgentStats::FIELDS, AgentStats::METRICS),
        ] {
            assert!(!metrics.counters.is_empty() && !metrics.gauges.is_empty());
            for (name, help) in metrics.counters.iter().chain(metrics.gauges).chain(metrics.fractions) {
                assert!(fields.contains(name), "{name} is a field");
                assert!(!help.is_empty(), "{name} has a help text");
            }
        }
        let stats = AgentStats {
            tasks_sent: Some(7),
            live_peers: Some(3),
            role: Some("sales".into()),
            ..AgentStats::default()
        };
        let values = stats.metric_values();
        assert_eq!(values.counters.len(), AgentStats::METRICS.counters.len());
        assert!(values.counters.contains(&("tasks_sent", 7)));
        assert!(values.counters.contains(&("votes", 0)), "a counter not set reads 0");
        assert!(values.gauges.contains(&("live_peers", 3)));
        assert!(!values.counters.iter().any(|(name, _)| *name == "live_peers"), "a level is not a counter");
        let topology = TopologyStats { mean_weight: Some(0.25), edges: Some(12), ..TopologyStats::default() };
        let values = topology.metric_values();
        assert_eq!(values.fractions, vec![("mean_weight", 0.25)]);
        assert!(values.gauges.contains(&("edges", 12)));
    }

    #[test]
    fn topology_stats_round_trip_in_the_writers_encoding() {
        let stats = topology();
        let fields = stats.to_fields();
        assert_eq!(fields.len(), TopologyStats::FIELDS.len(), "every field set is written");
        let map: HashMap<String, String> = fields.iter().cloned().collect();
        assert_eq!(map["density"], "1.0000", "fractions keep their four decimals");
        assert_eq!(map["max_weight"], "0.9999");
        assert_eq!(map["tick"], "882000002");
        assert_eq!(TopologyStats::from_fields(&map), stats);
        assert_eq!(TopologyStats::from_fields(fields), stats);
    }

    /// The hash exactly as the topology manager wrote it before this type existed: names, order and spelling.
    #[test]
    fn topology_stats_are_written_as_they_always_were() {
        let expected = [
            ("agents", "4"),
            ("live_agents", "3"),
            ("edges", "12"),
            ("active_edges", "9"),
            ("density", "1.0000"),
            ("reduction_vs_full_mesh", "0.2500"),
            ("mean_weight", "0.5125"),
            ("min_weight", "0.1000"),
            ("max_weight", "0.9999"),
            ("epoch", "7"),
            ("messages_counted", "1000"),
            ("open_window_records", "3"),
            ("oldest_open_window_ms", "0"),
            ("waiting_for", "the next tick"),
            ("window_late_ms", "12"),
            ("window_late_max_ms", "250"),
            ("windows_applied", "40"),
            ("windows_late", "1"),
            ("probe_rtt_ms", "2"),
            ("probes_returned", "80"),
            ("detector_clocks_since_ms", "1764000000000"),
            ("updated_at_ms", "1764000004000"),
            ("tick", "882000002"),
            ("window", "39"),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(topology().to_fields(), expected);
    }

    #[test]
    fn fractions_are_rounded_to_four_decimals_as_before() {
        let stats = TopologyStats { mean_weight: Some(0.123_456), ..TopologyStats::default() };
        assert_eq!(stats.to_fields(), vec![("mean_weight".to_owned(), "0.1235".to_owned())]);
    }

    #[test]
    fn consensus_stats_round_trip() {
        let stats = ConsensusStats {
            pending: Some(2),
            decided: Some(10),
            accepted: Some(6),
            rejected: Some(1),
            expired: Some(1),
            inhibited: Some(1),
            refused: Some(1),
            proposals_parked: Some(0),
            roster_epoch: Some(5),
            ignored_inputs: Some(3),
            dead_lettered: Some(0),
            early_dropped: Some(0),
            early_buffered: Some(4),
            updated_at_ms: Some(1_764_000_000_000),
        };
        let map: BTreeMap<String, String> = stats.to_fields().into_iter().collect();
        assert_eq!(map.len(), ConsensusStats::FIELDS.len());
        assert_eq!(ConsensusStats::from_fields(&map), stats);
    }

    #[test]
    fn agent_stats_round_trip_with_opaque_histograms() {
        let stats = AgentStats {
            role: Some("sales".to_owned()),
            tasks_sent: Some(5),
            responses_received: Some(4),
            delivery_us: Some("base64 text this crate does not look into".to_owned()),
            started_at_ms: Some(1),
            updated_at_ms: Some(2),
            ..AgentStats::default()
        };
        assert_eq!(AgentStats::from_fields(stats.to_fields()), stats);
    }

    #[test]
    fn a_hash_from_an_older_writer_reads_without_the_fields_it_lacks() {
        // Before `probes_returned` and `detector_clocks_since_ms` existed, and before any window was applied.
        let mut old: HashMap<String, String> = topology().to_fields().into_iter().collect();
        for gone in ["probes_returned", "detector_clocks_since_ms", "tick", "window"] {
            old.remove(gone);
        }
        let read = TopologyStats::from_fields(&old);
        assert_eq!(read.probes_returned, None);
        assert_eq!(read.tick, None);
        assert_eq!(read.live_agents, Some(3), "the other fields are kept");
        assert_eq!(
            TopologyStats {
                probes_returned: None,
                detector_clocks_since_ms: None,
                tick: None,
                window: None,
                ..topology()
            },
            read
        );
    }

    #[test]
    fn unreadable_and_unknown_fields_are_skipped_not_fatal() {
        let stats = ConsensusStats::from_fields([("pending", "many"), ("decided", "3"), ("from_the_future", "1")]);
        assert_eq!(stats, ConsensusStats { decided: Some(3), ..ConsensusStats::default() });
    }

    #[test]
    fn an_agent_hash_before_its_first_statistics_holds_only_its_start() {
        let started = AgentStats { started_at_ms: Some(42), ..AgentStats::default() };
        assert_eq!(started.to_fields(), vec![("started_at_ms".to_owned(), "42".to_owned())]);
        let read = AgentStats::from_fields(started.to_fields());
        assert_eq!((read.started_at_ms, read.tasks_handled), (Some(42), None));
    }

    #[test]
    fn an_empty_hash_is_all_absent() {
        let none: [(&str, &str); 0] = [];
        assert_eq!(AgentStats::from_fields(none), AgentStats::default());
    }

    /// The row of `docs/protocol.md`'s "Redis keys" table that documents `key`.
    fn documented_row(key: &str) -> String {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md"))
            .expect("docs/protocol.md");
        let start = format!("| `{key}` |");
        let row = doc.lines().find(|l| l.starts_with(&start)).map(str::to_owned);
        row.unwrap_or_else(|| panic!("docs/protocol.md documents {key}"))
    }

    #[test]
    fn docs_protocol_documents_every_field_of_every_hash() {
        let hashes = [
            (redis_keys::topology_stats("agentmesh"), TopologyStats::FIELDS),
            (redis_keys::consensus_stats("agentmesh"), ConsensusStats::FIELDS),
            (redis_keys::agent_stats("agentmesh", "ID"), AgentStats::FIELDS),
        ];
        for (key, fields) in hashes {
            let row = documented_row(&key);
            for field in fields {
                assert!(row.contains(&format!("`{field}`")), "docs/protocol.md does not document {key} field {field}");
            }
        }
    }
}
