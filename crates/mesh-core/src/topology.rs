//! The topology manager's state machine: the SlimeMold graph and the roster, changed only by recorded windows.
//!
//! The manager reads joins, leaves and deaths (the topology topic) and every task and response (the messages
//! topic's partitions), in whatever interleaving the partitions are delivered. It does not wait for anything to
//! close a window: when its clock crosses a tick boundary it *seals* the open window ([`Topology::close`]): the
//! roster changes in the order they were read, the number of messages per edge, and per input partition the range
//! of offsets read. The runtime appends that [`Window`] to the manager's changelog and only once the broker has
//! acknowledged it *applies* it ([`Topology::apply`]): decay for the ticks since the previous window, then the roster
//! changes, then the reinforcements. Kafka Streams does the same for its state stores.
//!
//! So the graph is a pure function of the changelog, and recovery replays the changelog from the snapshot's
//! position instead of re-deriving windows. Exactness is a property of the ranges: a window applies only if it is
//! the next in sequence and each of its ranges starts where the previous applied window's range of that partition
//! ended. The applied windows therefore tile each partition without gap or overlap, and every message reinforces its
//! edge exactly once, whatever crashed when. A window that was sealed but never acknowledged is simply re-cut by the
//! next incarnation from the same positions, and a window written by a stale writer fails the check and is ignored
//! by every reader alike.
//!
//! `cargo xtask chaos` proves both halves: the graph is the changelog's (the recovered snapshot equals
//! `mesh_node::topology::replay_changelog` at the same window), and the changelog is exact
//! (`mesh_node::topology::audit` finds each window's counts and roster changes exactly in its ranges of the input log,
//! the sum equal to the tasks and responses there).
//!
//! No clock is read here: the tick of a window is passed in.
//!
//! Why this design (issue 11). The earlier one aligned windows with Chandy–Lamport markers: every tick the manager
//! appended a `tick` record to every partition it read and closed a window once all had delivered theirs. That cost
//! partitions + 1 records per tick (501 per tick at 500 agents) and made every window wait for the slowest partition's
//! marker round trip; on two busy cores windows closed seconds late, which stalled membership and death verdicts and
//! made the suite flaky. The changelog costs one record per tick (more only past 8,000 reinforced edges in one window,
//! `mesh_proto::changelog::REINFORCEMENTS_PER_PART`) and never waits on a partition. Agents reporting their own
//! per-edge counts would cut the manager's reading further but lose exactness under agent crashes; Kafka transactions
//! (read-process-write) would fence a stale writer at the broker, at a commit round trip per window and no support on
//! the embedded broker.
//!
//! The figures (same machine, `mesh bench`, docs/bench.md): records the manager writes per tick at 500 agents, 501
//! before and 1 now; windows applied late at 4 agents and 1,000 msg/s, 0 of 22 (the worst 13 ms after its tick) where
//! the marker design closed none for 8 s in one CI run; the fresh-clone suite, which failed 4 runs of 4 on window
//! deadlines, passes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph::{EdgeChange, GraphParams, SlimeGraph};
use crate::membership::{AgentProfile, Member, Roster};
use crate::{AgentId, Milli};

/// An input partition: a Kafka topic partition, by name and number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Source {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// The offsets `[from, to)` of one input partition that a window covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// First offset covered.
    pub from: i64,
    /// One past the last offset covered: where the next window of this partition starts.
    pub to: i64,
}

impl Span {
    fn source(&self) -> Source {
        Source { topic: self.topic.clone(), partition: self.partition }
    }
}

/// What a record read by the manager means for the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyInput {
    /// An agent joined.
    Join(AgentProfile),
    /// An agent left on its own.
    Leave(AgentId),
    /// The failure detector's verdict, read back from the log.
    Dead(AgentId),
    /// A task or response along `from` → `to`.
    Message {
        /// Sender.
        from: AgentId,
        /// Recipient.
        to: AgentId,
    },
}

/// A roster change recorded in a window, in the order it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RosterChange {
    /// An agent joined.
    Join(AgentProfile),
    /// An agent left on its own.
    Leave(AgentId),
    /// An agent was declared dead.
    Dead(AgentId),
}

/// The messages that flowed along one edge in a window. On the wire: `[from, to, messages]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reinforcement(pub AgentId, pub AgentId, pub u32);

/// A sealed window: everything needed to apply it, recorded in the changelog before it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Position in the chain of windows: the previous applied window's `seq` + 1 (the first is 1).
    pub seq: u64,
    /// The decay tick the window closes at: `floor(unix_ms / decay_interval_ms)` when it was sealed.
    pub tick: u64,
    /// Roster changes, in the order the topology topic delivered them.
    pub roster: Vec<RosterChange>,
    /// Messages per edge, in (from, to) order.
    pub reinforcements: Vec<Reinforcement>,
    /// Per partition that advanced, the offsets read into this window, in (topic, partition) order.
    pub spans: Vec<Span>,
}

impl Window {
    /// Messages counted in the window.
    pub fn messages(&self) -> u64 {
        self.reinforcements.iter().map(|r| u64::from(r.2)).sum()
    }
}

/// Why a recorded window was not applied. Every reader of the changelog refuses the same windows, so refusals are
/// deterministic too; a refusal of the manager's own fresh window is a bug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not the next window of the chain (a duplicate, or one written by a stale writer).
    OutOfSequence {
        /// The `seq` that would apply.
        expected: u64,
        /// The window's.
        got: u64,
    },
    /// A range does not start where the previous window of that partition ended: applying it would skip or repeat
    /// messages.
    Gap {
        /// The partition.
        source: Source,
        /// Where its next window must start.
        expected: i64,
        /// Where this one starts.
        got: i64,
    },
    /// The tick is before the previous window's.
    TickBackwards {
        /// The previous window's tick.
        last: u64,
        /// This one's.
        got: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OutOfSequence { expected, got } => write!(f, "window {got} is not the next one ({expected})"),
            Refusal::Gap { source, expected, got } => write!(
                f,
                "its range of {}/{} starts at {got}, not at {expected} where the previous one ended",
                source.topic, source.partition
            ),
            Refusal::TickBackwards { last, got } => write!(f, "tick {got} is before the previous window's {last}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// What applying a window changed, for the runtime to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowEffects {
    /// Roster entries that changed, in order.
    pub members: Vec<Member>,
    /// Edge changes from decay and roster changes, each with the tick it happened at, in order.
    pub edges: Vec<(u64, EdgeChange)>,
    /// Edges reinforced (or re-created) by messages, with their weight after the window, in (from, to) order.
    pub reinforced: Vec<Reinforced>,
    /// Agents that joined (start watching their heartbeats).
    pub joined: Vec<AgentId>,
    /// Agents that left or died (stop watching).
    pub gone: Vec<AgentId>,
    /// Messages whose edge was reinforced; the others had an end that was not in the graph.
    pub applied_messages: u64,
}

/// An edge that carried messages in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reinforced {
    /// Source.
    pub from: AgentId,
    /// Target.
    pub to: AgentId,
    /// Weight after the window.
    pub weight: Milli,
    /// Messages along it in the window.
    pub messages: u32,
}

/// The last applied window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// Its `seq`.
    pub seq: u64,
    /// Its tick.
    pub tick: u64,
}

/// Decay ticks applied one by one (so each prune is reported at the tick it happened); past this gap, the rest are
/// applied at once and reported at the window's tick.
const MAX_TICK_STEPS: u64 = 10_000;

/// The open window: what was read since the last sealed window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Open {
    roster: Vec<RosterChange>,
    counts: BTreeMap<(AgentId, AgentId), u32>,
    /// Per partition: where this window's range starts and one past the last offset read.
    reads: BTreeMap<Source, (i64, i64)>,
    /// The last sealed window, and where each partition's ranges end after it (ahead of `Topology::last` between
    /// `close` and `apply`).
    sealed: Option<Closed>,
    sealed_ends: BTreeMap<Source, i64>,
    /// Records observed into this window (events and skipped records alike).
    records: u64,
}

/// The topology manager's state: graph, roster, the last applied window and where it left each input partition.
/// Serializable: the manager snapshots it to Redis (the open window is not part of it; a restored manager reads
/// again from [`Topology::resume_positions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "TopologyWire", from = "TopologyWire")]
pub struct Topology {
    graph: SlimeGraph,
    roster: Roster,
    last: Option<Closed>,
    /// Per partition, one past the last offset of the applied windows.
    ends: BTreeMap<Source, i64>,
    /// Messages counted by the applied windows, all of them.
    messages: u64,
    open: Open,
}

/// Where the applied windows left one partition, in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    topic: String,
    partition: i32,
    next: i64,
}

/// The snapshot form: the open window is left out, and the positions are a list (JSON keys must be strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyWire {
    graph: SlimeGraph,
    roster: Roster,
    last: Option<Closed>,
    ends: Vec<End>,
    messages: u64,
}

impl From<Topology> for TopologyWire {
    fn from(t: Topology) -> Self {
        Self {
            ends: t.ends.into_iter().map(|(s, next)| End { topic: s.topic, partition: s.partition, next }).collect(),
            graph: t.graph,
            roster: t.roster,
            last: t.last,
            messages: t.messages,
        }
    }
}

impl From<TopologyWire> for Topology {
    fn from(w: TopologyWire) -> Self {
        Self {
            ends: w.ends.into_iter().map(|e| (Source { topic: e.topic, partition: e.partition }, e.next)).collect(),
            graph: w.graph,
            roster: w.roster,
            last: w.last,
            messages: w.messages,
            open: Open::default(),
        }
    }
}

impl Topology {
    /// An empty graph and roster, before any window.
    pub fn new(params: GraphParams) -> Self {
        Self {
            graph: SlimeGraph::new(params),
            roster: Roster::new(),
            last: None,
            ends: BTreeMap::new(),
            messages: 0,
            open: Open::default(),
        }
    }

    /// The graph as of the last applied window.
    pub fn graph(&self) -> &SlimeGraph {
        &self.graph
    }

    /// The roster as of the last applied window.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The last applied window.
    pub fn last(&self) -> Option<Closed> {
        self.last
    }

    /// Messages counted by every applied window.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Where to read each partition from after a restore: one past the last offset of the applied windows.
    /// Partitions absent were never covered by a window and are read from their beginning.
    pub fn resume_positions(&self) -> &BTreeMap<Source, i64> {
        &self.ends
    }

    /// Records read into the open window.
    pub fn open_records(&self) -> u64 {
        self.open.records
    }

    /// A record read at `offset` of `source`, with what it means (`None`: a record the graph ignores, such as an
    /// edge event or a dead letter; it is still covered by the window's range). Returns `false` for a record at or
    /// before a position already covered (a re-delivery), which is ignored.
    pub fn observe(&mut self, source: &Source, offset: i64, input: Option<TopologyInput>) -> bool {
        let covered = self.open.sealed_ends.get(source).or_else(|| self.ends.get(source)).copied();
        let entry = self.open.reads.entry(source.clone()).or_insert_with(|| {
            let start = covered.unwrap_or(offset);
            (start, start)
        });
        if offset < entry.1 {
            return false;
        }
        entry.1 = offset + 1;
        self.open.records += 1;
        match input {
            None => {}
            Some(TopologyInput::Join(p)) => self.open.roster.push(RosterChange::Join(p)),
            Some(TopologyInput::Leave(id)) => self.open.roster.push(RosterChange::Leave(id)),
            Some(TopologyInput::Dead(id)) => self.open.roster.push(RosterChange::Dead(id)),
            Some(TopologyInput::Message { from, to }) => {
                let n = self.open.counts.entry((from, to)).or_insert(0);
                *n = n.saturating_add(1);
            }
        }
        true
    }

    /// Seals the open window at `tick` (a tick before the previous window's is taken as that one's) and starts the
    /// next. The caller records the window durably, then [`apply`](Self::apply)s it; until then the graph is
    /// unchanged.
    pub fn close(&mut self, tick: u64) -> Window {
        let previous = self.open.sealed.or(self.last);
        let seq = previous.map_or(1, |c| c.seq + 1);
        let tick = previous.map_or(tick, |c| tick.max(c.tick));
        let open = std::mem::take(&mut self.open);
        let mut sealed_ends = if open.sealed.is_some() { open.sealed_ends } else { self.ends.clone() };
        let mut spans = Vec::new();
        for (source, (from, to)) in open.reads {
            if to > from {
                spans.push(Span { topic: source.topic.clone(), partition: source.partition, from, to });
                sealed_ends.insert(source, to);
            }
        }
        self.open.sealed = Some(Closed { seq, tick });
        self.open.sealed_ends = sealed_ends;
        Window {
            seq,
            tick,
            roster: open.roster,
            reinforcements: open.counts.into_iter().map(|((from, to), n)| Reinforcement(from, to, n)).collect(),
            spans,
        }
    }

    /// Checks that `window` is the next one of the chain, without applying it.
    pub fn check(&self, window: &Window) -> Result<(), Refusal> {
        let expected = self.last.map_or(1, |c| c.seq + 1);
        if window.seq != expected {
            return Err(Refusal::OutOfSequence { expected, got: window.seq });
        }
        if let Some(last) = self.last
            && window.tick < last.tick
        {
            return Err(Refusal::TickBackwards { last: last.tick, got: window.tick });
        }
        for span in &window.spans {
            let source = span.source();
            if let Some(end) = self.ends.get(&source)
                && *end != span.from
            {
                return Err(Refusal::Gap { source, expected: *end, got: span.from });
            }
        }
        Ok(())
    }

    /// Applies a recorded window: decay for each tick since the previous window, then the roster changes in order,
    /// then the reinforcements. Refused (and nothing changes) unless it is the next window of the chain.
    pub fn apply(&mut self, window: &Window) -> Result<WindowEffects, Refusal> {
        self.check(window)?;
        let mut fx = WindowEffects::default();
        if let Some(last) = self.last {
            let ticks = window.tick - last.tick;
            let stepped = ticks.min(MAX_TICK_STEPS);
            if ticks > stepped {
                let rest = self.graph.decay(ticks - stepped);
                fx.edges.extend(rest.into_iter().map(|c| (last.tick + (ticks - stepped), c)));
            }
            for t in (window.tick - stepped + 1)..=window.tick {
                fx.edges.extend(self.graph.decay(1).into_iter().map(|c| (t, c)));
            }
        }
        for change in &window.roster {
            self.apply_roster_change(change, window.tick, &mut fx);
        }
        for Reinforcement(from, to, n) in &window.reinforcements {
            if let Some(EdgeChange::Created { weight, .. } | EdgeChange::Reinforced { weight, .. }) =
                self.graph.reinforce_by(from, to, *n)
            {
                fx.applied_messages += u64::from(*n);
                fx.reinforced.push(Reinforced { from: from.clone(), to: to.clone(), weight, messages: *n });
            }
        }
        for span in &window.spans {
            self.ends.insert(span.source(), span.to);
        }
        self.messages += window.messages();
        self.last = Some(Closed { seq: window.seq, tick: window.tick });
        // A window applied from the changelog (recovery) moves the sealed position with it.
        if self.open.sealed.is_none_or(|s| s.seq <= window.seq) {
            self.open.sealed = None;
            self.open.sealed_ends.clear();
        }
        Ok(fx)
    }

    fn apply_roster_change(&mut self, change: &RosterChange, tick: u64, fx: &mut WindowEffects) {
        match change {
            RosterChange::Join(profile) => {
                let id = profile.id.clone();
                if let Some(m) = self.roster.join(profile.clone()) {
                    fx.members.push(m);
                    fx.joined.push(id.clone());
                }
                fx.edges.extend(self.graph.add_agent(&id).into_iter().map(|c| (tick, c)));
            }
            RosterChange::Leave(id) | RosterChange::Dead(id) if !self.roster.is_live(id) => {}
            RosterChange::Leave(id) => {
                if let Some(m) = self.roster.leave(id) {
                    fx.members.push(m);
                }
                fx.edges.extend(self.graph.remove_agent(id).into_iter().map(|c| (tick, c)));
                fx.gone.push(id.clone());
            }
            RosterChange::Dead(id) => {
                if let Some(m) = self.roster.declare_dead(id) {
                    fx.members.push(m);
                }
                fx.edges.extend(self.graph.remove_agent(id).into_iter().map(|c| (tick, c)));
                fx.gone.push(id.clone());
            }
        }
    }
}

/// Applies a changelog from scratch, skipping refused windows: the state every reader of the same changelog reaches.
/// Returns it with the refusals (window `seq` and why), for checkers and tests.
pub fn replay<'a>(
    params: GraphParams,
    windows: impl IntoIterator<Item = &'a Window>,
) -> (Topology, Vec<(u64, Refusal)>) {
    let mut topology = Topology::new(params);
    let mut refused = Vec::new();
    for w in windows {
        if let Err(r) = topology.apply(w) {
            refused.push((w.seq, r));
        }
    }
    (topology, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use proptest::prelude::*;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid id")
    }

    fn profile(s: &str) -> AgentProfile {
        AgentProfile {
            id: id(s),
            name: s.to_owned(),
            role: Role::new("sales").expect("role"),
            capabilities: vec![],
            metadata: BTreeMap::new(),
        }
    }

    fn topo() -> Source {
        Source { topic: "t.topology".into(), partition: 0 }
    }

    fn msgs(p: i32) -> Source {
        Source { topic: "t.messages".into(), partition: p }
    }

    fn message(from: &str, to: &str) -> Option<TopologyInput> {
        Some(TopologyInput::Message { from: id(from), to: id(to) })
    }

    fn joined(t: &mut Topology, names: &[&str], tick: u64) {
        for (i, n) in names.iter().enumerate() {
            t.observe(&topo(), i64::try_from(i).expect("small"), Some(TopologyInput::Join(profile(n))));
        }
        let w = t.close(tick);
        t.apply(&w).expect("applies");
    }

    #[test]
    fn an_agent_that_leaves_and_joins_again_within_one_window_is_still_watched() {
        use crate::membership::FailureDetector;
        let mut t = Topology::new(GraphParams::default());
        joined(&mut t, &["a", "b"], 1);
        let mut detector = FailureDetector::new(2_000);
        detector.watch(&id("a"), 0);
        detector.watch(&id("b"), 0);
        // a restarts faster than a decay interval: its leave and its new join land in the same window; c joins and
        // leaves within it.
        t.observe(&topo(), 2, Some(TopologyInput::Leave(id("a"))));
        t.observe(&topo(), 3, Some(TopologyInput::Join(profile("a"))));
        t.observe(&topo(), 4, Some(TopologyInput::Join(profile("c"))));
        t.observe(&topo(), 5, Some(TopologyInput::Leave(id("c"))));
        let w = t.close(2);
        let fx = t.apply(&w).expect("applies");
        assert_eq!((fx.joined.clone(), fx.gone.clone()), (vec![id("a"), id("c")], vec![id("a"), id("c")]));
        detector.follow(&fx.joined, &fx.gone, t.roster(), 1_000);
        assert_eq!(detector.last_seen(&id("a")), Some(1_000), "live after the window: watched from its rejoin");
        assert_eq!(detector.last_seen(&id("c")), None, "gone after the window: not watched");
        assert_eq!(detector.last_seen(&id("b")), Some(0), "untouched");
        assert_eq!(detector.check(2_001), vec![id("b")], "a's clock restarted at its rejoin");
        assert_eq!(detector.check(3_001), vec![id("a")], "and it is judged when it falls silent");
    }

    #[test]
    fn a_window_holds_counts_per_edge_and_the_ranges_it_read() {
        let mut t = Topology::new(GraphParams::default());
        joined(&mut t, &["a", "b"], 10);
        t.observe(&msgs(0), 0, message("a", "b"));
        t.observe(&msgs(1), 5, message("a", "b"));
        t.observe(&msgs(1), 6, None);
        t.observe(&msgs(0), 1, message("b", "a"));
        let w = t.close(11);
        assert_eq!(w.seq, 2);
        assert_eq!(w.reinforcements, vec![Reinforcement(id("a"), id("b"), 2), Reinforcement(id("b"), id("a"), 1)]);
        assert_eq!(
            w.spans,
            vec![
                Span { topic: "t.messages".into(), partition: 0, from: 0, to: 2 },
                Span { topic: "t.messages".into(), partition: 1, from: 5, to: 7 },
            ]
        );
        assert_eq!(t.graph().weight(&id("a"), &id("b")), Some(Milli(500)), "sealed, not applied yet");
        let fx = t.apply(&w).expect("next in the chain");
        assert_eq!(fx.applied_messages, 3);
        // One tick of decay, then two messages: 0.5 - 0.02 + 0.2.
        assert_eq!(t.graph().weight(&id("a"), &id("b")), Some(Milli(680)));
        assert_eq!(t.graph().weight(&id("b"), &id("a")), Some(Milli(580)));
        assert_eq!(t.resume_positions().get(&msgs(1)), Some(&7));
    }

    #[test]
    fn reads_go_on_into_the_next_window_while_one_is_sealed_and_not_yet_applied() {
        let mut t = Topology::new(GraphParams::default());
        joined(&mut t, &["a", "b"], 1);
        t.observe(&msgs(0), 0, message("a", "b"));
        let first = t.close(2);
        t.observe(&msgs(0), 1, message("a", "b"));
        let second = t.close(3);
        assert_eq!((first.seq, second.seq), (2, 3));
        assert_eq!(second.spans[0].from, 1, "the second starts where the sealed first ends");
        t.apply(&first).expect("first");
        t.apply(&second).expect("second");
        assert_eq!(t.messages(), 2);
    }

    #[test]
    fn windows_out_of_sequence_overlapping_or_backwards_are_refused_and_change_nothing() {
        let mut t = Topology::new(GraphParams::default());
        joined(&mut t, &["a", "b"], 5);
        t.observe(&msgs(0), 0, message("a", "b"));
        let w = t.close(6);
        let mut stale = w.clone();
        stale.seq = 7;
        assert_eq!(t.apply(&stale), Err(Refusal::OutOfSequence { expected: 2, got: 7 }));
        t.apply(&w).expect("applies");
        assert!(matches!(t.apply(&w), Err(Refusal::OutOfSequence { .. })), "a duplicate is refused");
        let mut overlap = w.clone();
        overlap.seq = 3;
        assert_eq!(t.apply(&overlap), Err(Refusal::Gap { source: msgs(0), expected: 1, got: 0 }));
        let mut backwards = Window { seq: 3, tick: 4, roster: vec![], reinforcements: vec![], spans: vec![] };
        assert_eq!(t.apply(&backwards), Err(Refusal::TickBackwards { last: 6, got: 4 }));
        backwards.tick = 6;
        let weight = t.graph().weight(&id("a"), &id("b"));
        t.apply(&backwards).expect("the same tick again");
        assert_eq!(t.graph().weight(&id("a"), &id("b")), weight, "no decay within one tick");
    }

    #[test]
    fn an_idle_edge_is_pruned_at_the_21st_tick_and_reported_at_that_tick_even_in_one_late_window() {
        let mut t = Topology::new(GraphParams::default());
        joined(&mut t, &["a", "b"], 100);
        // One window covering 30 ticks (the manager was stopped): the prune is reported at tick 121, not 130.
        let w = t.close(130);
        let fx = t.apply(&w).expect("applies");
        let pruned: Vec<u64> =
            fx.edges.iter().filter(|(_, c)| matches!(c, EdgeChange::Pruned { .. })).map(|(t, _)| *t).collect();
        assert_eq!(pruned, vec![121, 121]);
    }

    #[test]
    fn roster_changes_apply_before_the_messages_of_their_window() {
        let mut t = Topology::new(GraphParams::default());
        t.observe(&msgs(0), 0, message("a", "b"));
        t.observe(&topo(), 0, Some(TopologyInput::Join(profile("a"))));
        t.observe(&topo(), 1, Some(TopologyInput::Join(profile("b"))));
        let w = t.close(1);
        let fx = t.apply(&w).expect("applies");
        assert_eq!(fx.applied_messages, 1, "both ends joined in the same window");
        assert_eq!(t.graph().weight(&id("a"), &id("b")), Some(Milli(600)));
        t.observe(&topo(), 2, Some(TopologyInput::Dead(id("b"))));
        t.observe(&msgs(0), 1, message("a", "b"));
        let w = t.close(2);
        let fx = t.apply(&w).expect("applies");
        assert_eq!(fx.applied_messages, 0, "counted, but its recipient is gone");
        assert_eq!(fx.gone, vec![id("b")]);
        assert_eq!(t.messages(), 2);
    }

    #[test]
    fn a_re_delivered_record_is_not_counted_twice() {
        let mut t = Topology::new(GraphParams::default());
        assert!(t.observe(&msgs(0), 3, message("a", "b")));
        assert!(!t.observe(&msgs(0), 3, message("a", "b")));
        assert!(!t.observe(&msgs(0), 2, message("a", "b")));
        assert_eq!(t.close(1).messages(), 1);
    }

    #[test]
    fn a_snapshot_round_trips_without_its_open_window() {
        let mut t = Topology::new(GraphParams::default());
        joined(&mut t, &["a", "b", "c"], 1);
        t.observe(&msgs(0), 0, message("a", "c"));
        let json = serde_json::to_string(&t).expect("encode");
        let back: Topology = serde_json::from_str(&json).expect("decode");
        assert_eq!(back.graph(), t.graph());
        assert_eq!(back.last(), t.last());
        assert_eq!(back.resume_positions(), t.resume_positions());
        assert_eq!(back.open_records(), 0);
    }

    /// A random log: joins and leaves on the topology partition, messages over two messages partitions.
    fn logs() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
        proptest::collection::vec((0u8..3, 0u8..4, 0u8..4), 0..80)
    }

    fn input(kind: u8, a: u8, b: u8) -> (Source, Option<TopologyInput>) {
        let (na, nb) = (format!("a{a}"), format!("a{b}"));
        match kind {
            0 if a == 3 => (topo(), Some(TopologyInput::Leave(id(&na)))),
            0 => (topo(), Some(TopologyInput::Join(profile(&na)))),
            1 => (msgs(0), message(&na, &nb)),
            _ => (msgs(1), message(&na, &nb)),
        }
    }

    proptest! {
        /// Crash anywhere: after sealing without recording, after recording without applying, or after applying
        /// without a snapshot. The restored manager reads again from the snapshot's positions, replays the recorded
        /// windows and goes on; the recorded chain tiles every partition and its replay equals the restored state.
        #[test]
        fn every_message_is_counted_exactly_once_whatever_crashes_when(
            log in logs(),
            cuts in proptest::collection::vec((0usize..80, 0u8..3), 0..6),
            ticks in proptest::collection::vec(0u64..3, 1..20),
        ) {
            let records: Vec<(Source, i64, Option<TopologyInput>)> = {
                let mut next: BTreeMap<Source, i64> = BTreeMap::new();
                log.iter().map(|&(k, a, b)| {
                    let (s, i) = input(k, a, b);
                    let o = next.entry(s.clone()).or_insert(0);
                    *o += 1;
                    (s, *o - 1, i)
                }).collect()
            };
            let total_messages = records.iter().filter(|r| matches!(r.2, Some(TopologyInput::Message { .. }))).count() as u64;
            let mut changelog: Vec<Window> = Vec::new();
            let mut snapshot: Option<(Topology, usize)> = None;
            let mut live = Topology::new(GraphParams::default());
            let mut tick = 0u64;
            let mut ticks = ticks.iter().cycle();
            let mut i = 0usize;
            let mut crashes = cuts.clone();
            crashes.sort_unstable();
            let mut crashes = crashes.into_iter().peekable();
            while i < records.len() {
                let (s, o, inp) = records[i].clone();
                live.observe(&s, o, inp);
                i += 1;
                if i.is_multiple_of(5) || i == records.len() {
                    tick += ticks.next().copied().unwrap_or(1);
                    let w = live.close(tick);
                    match crashes.peek().copied() {
                        Some((at, how)) if at <= i => {
                            crashes.next();
                            if how >= 1 { changelog.push(w.clone()); }
                            if how == 2 { live.apply(&w).expect("own window"); snapshot = Some((live.clone(), changelog.len())); }
                            // Restart: snapshot + replay of the changelog after it, then read on from its positions.
                            let (mut restored, from) = snapshot.clone().unwrap_or((Topology::new(GraphParams::default()), 0));
                            for w in &changelog[from..] { let _ = restored.apply(w); }
                            live = restored;
                            let resume = live.resume_positions().clone();
                            i = records.iter().position(|(s, o, _)| resume.get(s).is_none_or(|end| o >= end)).unwrap_or(records.len());
                            // Records of other partitions before `i` but past their resume position are read again too.
                            let again: Vec<_> = records[..i].iter().filter(|(s, o, _)| resume.get(s).is_some_and(|end| o >= end)).cloned().collect();
                            for (s, o, inp) in again { live.observe(&s, o, inp); }
                        }
                        _ => {
                            changelog.push(w.clone());
                            live.apply(&w).expect("own window");
                            if i.is_multiple_of(10) { snapshot = Some((live.clone(), changelog.len())); }
                        }
                    }
                }
            }
            // Drain: one last window covering whatever is left.
            tick += 1;
            let w = live.close(tick);
            changelog.push(w.clone());
            live.apply(&w).expect("own window");
            let (replayed, _) = replay(GraphParams::default(), &changelog);
            prop_assert_eq!(replayed.graph(), live.graph());
            prop_assert_eq!(replayed.roster(), live.roster());
            prop_assert_eq!(replayed.messages(), total_messages, "every message counted exactly once");
        }
    }
}
