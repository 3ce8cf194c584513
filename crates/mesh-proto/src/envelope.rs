//! The versioned envelope around every record: `{"v":1,"kind":"...","id":"...","ts":...,"body":{...}}`.
//!
//! Decoding is two steps, envelope then body by kind, so that a refused record's reason names exactly what was wrong
//! (`body of 'task': missing field 'to'`), which is what the dead-letter topic keeps.

use serde::{Deserialize, Serialize};

use crate::records::{
    DeadBody, DeadLetterBody, DecisionBody, EdgeBody, EdgesBody, ExpireBody, HeartbeatBody, InhibitBody, JoinBody,
    LeaveBody, MemberBody, ProbeBody, ProposalBody, Record, ResponseBody, TaskBody, TickBody, VoteBody, WeightsBody,
    WindowBody,
};
use crate::topics::TopicKind;

/// The envelope version this build writes and the newest it reads.
pub const WIRE_VERSION: u16 = 1;

/// The fields every record carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Unique id of this record (the message id of tasks and responses, used for deduplication).
    pub id: String,
    /// When the writer created it, in ms since the Unix epoch (the writer's clock).
    pub ts: u64,
}

/// A decoded record with its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Id and timestamp.
    pub header: Header,
    /// Kind and body.
    pub record: Record,
}

/// Why a record could not be decoded; the text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record had no value (a tombstone) where one was needed.
    #[error("record has no value")]
    Empty,
    /// Not a JSON envelope.
    #[error("not a JSON envelope: {0}")]
    NotAnEnvelope(String),
    /// Written by a newer (or bogus) version of the protocol.
    #[error("unsupported envelope version {found}, this reader understands up to {WIRE_VERSION}")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// A kind this reader does not know.
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// The body does not match its kind.
    #[error("body of {kind:?} is invalid: {detail}")]
    BadBody {
        /// The kind.
        kind: String,
        /// What was wrong.
        detail: String,
    },
    /// A record of its kind larger than readers accept ([`Record::size_limit`]).
    #[error("a {kind:?} record of {size} bytes is over the {limit}-byte limit of its kind")]
    TooLarge {
        /// The kind.
        kind: String,
        /// The record's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A known kind on a topic where it does not belong.
    #[error("kind {kind:?} does not belong on the {topic} topic")]
    WrongTopic {
        /// The kind.
        kind: String,
        /// The topic kind.
        topic: TopicKind,
    },
}

#[derive(Serialize)]
struct RawOut<'a, B> {
    v: u16,
    kind: &'a str,
    id: &'a str,
    ts: u64,
    body: &'a B,
}

/// The body is kept as raw JSON text at first and parsed once, straight into its kind's type: a record is read
/// once, not into a generic value and then again into its type (the hot path of every reader).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIn<'a> {
    v: u16,
    kind: String,
    id: String,
    ts: u64,
    #[serde(borrow)]
    body: &'a serde_json::value::RawValue,
}

fn write<B: Serialize>(envelope: &Envelope, body: &B) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&RawOut {
        v: WIRE_VERSION,
        kind: envelope.record.kind(),
        id: &envelope.header.id,
        ts: envelope.header.ts,
        body,
    })
}

/// Encodes a record. Serialization of these plain types cannot fail; if it ever did, it would be a bug in this crate,
/// so the error is not part of the signature.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let written = match &envelope.record {
        Record::Join(b) => write(envelope, b),
        Record::Leave(b) => write(envelope, b),
        Record::Dead(b) => write(envelope, b),
        Record::Tick(b) => write(envelope, b),
        Record::Window(b) => write(envelope, b),
        Record::Probe(b) => write(envelope, b),
        Record::Weights(b) => write(envelope, b),
        Record::Edge(b) => write(envelope, b),
        Record::Edges(b) => write(envelope, b),
        Record::Heartbeat(b) => write(envelope, b),
        Record::Task(b) => write(envelope, b),
        Record::Response(b) => write(envelope, b),
        Record::Member(b) => write(envelope, b),
        Record::Proposal(b) => write(envelope, b),
        Record::Vote(b) => write(envelope, b),
        Record::Expire(b) => write(envelope, b),
        Record::Inhibit(b) => write(envelope, b),
        Record::Decision(b) => write(envelope, b),
        Record::DeadLetter(b) => write(envelope, b),
    };
    written.expect("invariant: record bodies are plain data that always serialize")
}

fn body<T: serde::de::DeserializeOwned>(kind: &str, raw: &serde_json::value::RawValue) -> Result<T, DecodeError> {
    serde_json::from_str(raw.get()).map_err(|e| DecodeError::BadBody { kind: kind.to_owned(), detail: e.to_string() })
}

/// Decodes a record read from `topic`, checking the version, the kind, the body and that the kind belongs there.
pub fn decode(bytes: Option<&[u8]>, topic: Option<TopicKind>) -> Result<Envelope, DecodeError> {
    let bytes = bytes.ok_or(DecodeError::Empty)?;
    let raw: RawIn = serde_json::from_slice(bytes).map_err(|e| DecodeError::NotAnEnvelope(e.to_string()))?;
    if raw.v == 0 || raw.v > WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: raw.v });
    }
    let kind = raw.kind.as_str();
    if let Some(topic) = topic {
        if !Record::KINDS.contains(&kind) {
            return Err(DecodeError::UnknownKind(raw.kind));
        }
        if !Record::allowed_on(kind).contains(&topic) {
            return Err(DecodeError::WrongTopic { kind: raw.kind, topic });
        }
    }
    if let Some(limit) = Record::size_limit(kind)
        && bytes.len() > limit
    {
        return Err(DecodeError::TooLarge { kind: raw.kind, size: bytes.len(), limit });
    }
    let record = match kind {
        "join" => Record::Join(body::<JoinBody>(kind, raw.body)?),
        "leave" => Record::Leave(body::<LeaveBody>(kind, raw.body)?),
        "dead" => Record::Dead(body::<DeadBody>(kind, raw.body)?),
        "tick" => Record::Tick(body::<TickBody>(kind, raw.body)?),
        "window" => Record::Window(body::<WindowBody>(kind, raw.body)?),
        "probe" => Record::Probe(body::<ProbeBody>(kind, raw.body)?),
        "weights" => Record::Weights(body::<WeightsBody>(kind, raw.body)?),
        "edge" => Record::Edge(body::<EdgeBody>(kind, raw.body)?),
        "edges" => Record::Edges(body::<EdgesBody>(kind, raw.body)?),
        "heartbeat" => Record::Heartbeat(body::<HeartbeatBody>(kind, raw.body)?),
        "task" => Record::Task(body::<TaskBody>(kind, raw.body)?),
        "response" => Record::Response(body::<ResponseBody>(kind, raw.body)?),
        "member" => Record::Member(body::<MemberBody>(kind, raw.body)?),
        "proposal" => Record::Proposal(body::<ProposalBody>(kind, raw.body)?),
        "vote" => Record::Vote(body::<VoteBody>(kind, raw.body)?),
        "expire" => Record::Expire(body::<ExpireBody>(kind, raw.body)?),
        "inhibit" => Record::Inhibit(body::<InhibitBody>(kind, raw.body)?),
        "decision" => Record::Decision(body::<DecisionBody>(kind, raw.body)?),
        "deadletter" => Record::DeadLetter(body::<DeadLetterBody>(kind, raw.body)?),
        _ => return Err(DecodeError::UnknownKind(raw.kind)),
    };
    Ok(Envelope { header: Header { id: raw.id, ts: raw.ts }, record })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::HeartbeatBody;
    use mesh_core::AgentId;

    fn heartbeat() -> Envelope {
        Envelope {
            header: Header { id: "hb-1".into(), ts: 1_700_000_000_000 },
            record: Record::Heartbeat(HeartbeatBody { agent: AgentId::new("sales").expect("valid"), seq: 7 }),
        }
    }

    #[test]
    fn round_trips() {
        let e = heartbeat();
        let bytes = encode(&e);
        assert_eq!(decode(Some(&bytes), Some(TopicKind::Heartbeats)), Ok(e));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"\xff\x00garbage", "not a JSON envelope"),
            (br#"{"v":2,"kind":"heartbeat","id":"x","ts":1,"body":{}}"#, "unsupported envelope version 2"),
            (br#"{"v":1,"kind":"gossip","id":"x","ts":1,"body":{}}"#, "unknown kind \"gossip\""),
            (br#"{"v":1,"kind":"heartbeat","id":"x","ts":1,"body":{"agent":"sales"}}"#, "missing field `seq`"),
            (br#"{"v":1,"kind":"heartbeat","id":"x","ts":1,"body":{"agent":"BAD ID","seq":1}}"#, "identifier holds"),
            (br#"{"v":1,"kind":"task","id":"x","ts":1,"body":{}}"#, "does not belong on the heartbeats topic"),
        ];
        for (bytes, expected) in cases {
            let err = decode(Some(bytes), Some(TopicKind::Heartbeats)).expect_err("must be refused").to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
        assert_eq!(decode(None, None), Err(DecodeError::Empty));
    }

    /// docs/protocol.md "Changing the protocol": a field a reader does not know is refused by name (in the envelope
    /// or a body), and a record without an optional field still decodes.
    #[test]
    fn unknown_fields_are_refused_by_name_and_optional_ones_may_be_absent() {
        let body_extra = br#"{"v":1,"kind":"heartbeat","id":"x","ts":1,"body":{"agent":"sales","seq":1,"colour":"b"}}"#;
        let err = decode(Some(body_extra), Some(TopicKind::Heartbeats)).expect_err("refused").to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let envelope_extra =
            br#"{"v":1,"kind":"heartbeat","id":"x","ts":1,"trace":7,"body":{"agent":"sales","seq":1}}"#;
        let err = decode(Some(envelope_extra), Some(TopicKind::Heartbeats)).expect_err("refused").to_string();
        assert!(err.contains("unknown field `trace`"), "{err}");
        // A letter written before sizes and hashes were recorded.
        let old_letter = br#"{"v":1,"kind":"deadletter","id":"t-1-1","ts":1,"body":{"reason":"r","source":{"topic":"t","partition":0,"offset":1},"consumer":"topology","key":null,"payload_text":"x","payload_hex":null}}"#;
        let Record::DeadLetter(letter) = decode(Some(old_letter), Some(TopicKind::Deadletter)).expect("decodes").record
        else {
            panic!("a dead letter")
        };
        assert_eq!((letter.payload_size, letter.payload_sha256, letter.payload_truncated), (None, None, false));
    }

    #[test]
    fn a_valid_record_larger_than_its_kind_allows_is_refused_with_the_sizes() {
        let join = |metadata: usize| {
            format!(
                r#"{{"v":1,"kind":"join","id":"x","ts":1,"body":{{"agent":{{"id":"sales","name":"sales","role":"sales","capabilities":[],"metadata":{{"blob":"{}"}}}}}}}}"#,
                "a".repeat(metadata)
            )
        };
        assert!(decode(Some(join(10).as_bytes()), Some(TopicKind::Topology)).is_ok(), "a small join is fine");
        let huge = join(900_000);
        let err = decode(Some(huge.as_bytes()), Some(TopicKind::Topology)).expect_err("refused").to_string();
        assert!(
            err.contains(&format!("a \"join\" record of {} bytes is over the 16384-byte limit", huge.len())),
            "{err}"
        );
        // The managers' own kinds are theirs to bound.
        assert_eq!(Record::size_limit("window"), None);
    }
}
