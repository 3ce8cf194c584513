//! Who wrote a record. Every kind has one writer that may write it (an agent writes its own `join`, `task` and
//! `vote`; the topology manager the roster and the graph; the consensus manager the verdicts), and with a deployment
//! secret configured each record carries a Kafka header `mesh-auth` that proves it: an HMAC-SHA256 tag of the
//! record under its writer's key. Readers holding the secret recompute the tag with the key of the writer the record
//! *must* have (a vote's voter, a task's sender, the topology manager for a `member`), so a client without the
//! secret cannot change the roster, the graph or a decision, and an agent holding only its own key cannot write as
//! another agent or as a manager.
//!
//! HMAC rather than signatures because it costs about a microsecond a record: the topology manager checks every
//! message of the mesh, and on a two-core machine that shares its cores with the broker, public-key verification of
//! every message would cost a large share of one core. The price is that checking a tag needs the secret: the
//! managers and the deployment's own agents check everything, while a third-party agent given only its own key
//! (`mesh key agent ID`) can prove what it writes but not check what others wrote (docs/protocol.md, "Trust").
//!
//! The derivations (written out in docs/protocol.md, with a worked example that a test recomputes):
//! - a principal's key: `HMAC-SHA256(secret, "mesh/v1/key/" + principal)`, principals `topology`, `consensus`
//!   and `agent/{id}`;
//! - a record's tag: `HMAC-SHA256(key, u32be(len topic) ‖ topic ‖ u32be(len key) ‖ key ‖ value)` over the full
//!   topic name, the record key and the value bytes exactly as written;
//! - the header: `mesh-auth: {principal}:{tag as 64 lower-case hex digits}`.

use std::fmt;

use hmac::{Hmac, Mac};
use mesh_core::AgentId;
use sha2::Sha256;

use crate::records::Record;

/// The Kafka header a record's tag travels in.
pub const AUTH_HEADER: &str = "mesh-auth";

/// The fewest bytes a deployment secret may have: 32 bytes is the HMAC-SHA256 key size.
pub const SECRET_MIN_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a record's writer could not be established: the reason a reader dead-letters it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The record carries no `mesh-auth` header.
    #[error("not authenticated: a {kind} must carry a `{AUTH_HEADER}` header written by {expected}")]
    Missing {
        /// The record's kind.
        kind: &'static str,
        /// Who must have written it.
        expected: Principal,
    },
    /// The header is not `PRINCIPAL:HEX`.
    #[error("not authenticated: the `{AUTH_HEADER}` header is not PRINCIPAL:TAG (64 hex digits)")]
    Malformed,
    /// The header names a writer other than the one this record must have.
    #[error("not authenticated: a {kind} must be written by {expected}, but its `{AUTH_HEADER}` names {claimed}")]
    WrongWriter {
        /// The record's kind.
        kind: &'static str,
        /// Who must have written it.
        expected: Principal,
        /// Who the header names.
        claimed: String,
    },
    /// The tag does not match the record under its writer's key.
    #[error(
        "not authenticated: the `{AUTH_HEADER}` tag does not match: this {kind} was not written by {expected} with \
         the deployment's key, or was changed since"
    )]
    BadTag {
        /// The record's kind.
        kind: &'static str,
        /// Who must have written it.
        expected: Principal,
    },
    /// A secret or key file's content is unusable.
    #[error("{0}")]
    BadCredential(String),
}

/// A writer the mesh knows by name: the key a record must be tagged with follows from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// The topology manager: the roster, the graph, its changelog and probes.
    Topology,
    /// The consensus manager: decisions, expiries and inhibitions.
    Consensus,
    /// One agent: its own membership, heartbeats, messages, proposals and votes.
    Agent(AgentId),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Topology => f.write_str("topology"),
            Principal::Consensus => f.write_str("consensus"),
            Principal::Agent(id) => write!(f, "agent/{id}"),
        }
    }
}

impl Principal {
    /// Who must have written `record`, or `None` for a kind anyone may write (a dead letter: every reader writes
    /// them, and only operators read them).
    pub fn writer_of(record: &Record) -> Option<Principal> {
        Some(match record {
            Record::Join(b) => Principal::Agent(b.agent.id.clone()),
            Record::Leave(b) => Principal::Agent(b.agent.clone()),
            Record::Heartbeat(b) => Principal::Agent(b.agent.clone()),
            Record::Task(b) => Principal::Agent(b.from.clone()),
            Record::Response(b) => Principal::Agent(b.from.clone()),
            Record::Proposal(b) => Principal::Agent(b.proposal.proposer.clone()),
            Record::Vote(b) => Principal::Agent(b.vote.voter.clone()),
            Record::Dead(_)
            | Record::Tick(_)
            | Record::Window(_)
            | Record::Probe(_)
            | Record::Weights(_)
            | Record::Edge(_)
            | Record::Edges(_)
            | Record::Member(_) => Principal::Topology,
            Record::Expire(_) | Record::Inhibit(_) | Record::Decision(_) => Principal::Consensus,
            Record::DeadLetter(_) => return None,
        })
    }
}

/// The deployment secret: every principal's key derives from it, so it is the managers' credential. Never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct DeploymentSecret(Vec<u8>);

impl fmt::Debug for DeploymentSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeploymentSecret(***)")
    }
}

impl DeploymentSecret {
    /// The secret file's content, surrounding whitespace removed (so a trailing newline does not count); refused
    /// when shorter than [`SECRET_MIN_BYTES`].
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let secret = text.trim();
        if secret.len() < SECRET_MIN_BYTES {
            return Err(AuthError::BadCredential(format!(
                "the deployment secret has {} bytes, fewer than {SECRET_MIN_BYTES}; write at least 32 random bytes \
                 (for example 64 hex digits: `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// The key of `principal`.
    pub fn key_of(&self, principal: &Principal) -> PrincipalKey {
        let mut mac = mac(&self.0);
        mac.update(format!("mesh/v1/key/{principal}").as_bytes());
        PrincipalKey(mac.finalize().into_bytes().into())
    }
}

/// One principal's 32-byte key: what it tags its records with. An agent's key is all a third-party agent needs.
#[derive(Clone, PartialEq, Eq)]
pub struct PrincipalKey([u8; 32]);

impl fmt::Debug for PrincipalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrincipalKey(***)")
    }
}

impl PrincipalKey {
    /// A key written as 64 hex digits (what `mesh key agent ID` prints), surrounding whitespace removed.
    pub fn parse_hex(text: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        let bad = || {
            AuthError::BadCredential(format!(
                "an agent key is 64 hex digits (as `mesh key agent ID` prints), not {} characters",
                text.len()
            ))
        };
        hex32(text).map(Self).ok_or_else(bad)
    }

    /// The key as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Whether `tag` is this key's tag of the record, compared in constant time (the comparison does not tell a
    /// forger how many leading bytes were right).
    pub fn verifies(&self, topic: &str, key: &[u8], value: &[u8], tag: &[u8; 32]) -> bool {
        self.mac_of(topic, key, value).verify_slice(tag).is_ok()
    }

    /// The tag of a record under this key.
    pub fn tag(&self, topic: &str, key: &[u8], value: &[u8]) -> [u8; 32] {
        self.mac_of(topic, key, value).finalize().into_bytes().into()
    }

    fn mac_of(&self, topic: &str, key: &[u8], value: &[u8]) -> HmacSha256 {
        let mut mac = mac(&self.0);
        for part in [topic.as_bytes(), key] {
            mac.update(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            mac.update(part);
        }
        mac.update(value);
        mac
    }
}

/// What a writer puts on its records: its name and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    principal: Principal,
    key: PrincipalKey,
}

impl Signer {
    /// A signer for `principal` holding `key`.
    pub fn new(principal: Principal, key: PrincipalKey) -> Self {
        Self { principal, key }
    }

    /// Who this signer writes as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The `mesh-auth` header value for a record.
    pub fn header(&self, topic: &str, key: &[u8], value: &[u8]) -> String {
        format!("{}:{}", self.principal, hex(&self.key.tag(topic, key, value)))
    }
}

/// What a process holds: the deployment secret (managers, the deployment's own agents), or one agent's key (a
/// third-party agent), or nothing (an unauthenticated mesh, which trusts every writer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The deployment secret, if this process holds it.
    pub secret: Option<DeploymentSecret>,
    /// This agent's own key, if it holds only that.
    pub agent_key: Option<PrincipalKey>,
}

impl Credentials {
    /// Whether records are tagged and checked at all.
    pub fn authenticated(&self) -> bool {
        self.secret.is_some() || self.agent_key.is_some()
    }

    /// The signer for `principal`: its key derived from the secret, or the agent key given (which is taken to be
    /// this agent's; a wrong one shows as every record refused by the managers). `None` when unauthenticated.
    pub fn signer(&self, principal: Principal) -> Result<Option<Signer>, AuthError> {
        if let Some(secret) = &self.secret {
            let key = secret.key_of(&principal);
            return Ok(Some(Signer::new(principal, key)));
        }
        match (&self.agent_key, &principal) {
            (None, _) => Ok(None),
            (Some(key), Principal::Agent(_)) => Ok(Some(Signer::new(principal, key.clone()))),
            (Some(_), _) => Err(AuthError::BadCredential(format!(
                "the {principal} manager needs the deployment secret (--secret-file, MESH_SECRET_FILE), not an \
                 agent key"
            ))),
        }
    }

    /// The checker of what this process reads: with the secret, every record's writer is established; without it
    /// nothing can be, and everything is accepted.
    pub fn verifier(&self) -> Verifier {
        Verifier { secret: self.secret.clone().map(std::sync::Arc::new), keys: Default::default() }
    }
}

/// Checks a record's `mesh-auth` header against the writer its content says it must have.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    secret: Option<std::sync::Arc<DeploymentSecret>>,
    /// Keys derived so far, shared by clones: deriving one costs as much as checking a tag, and a reader sees the
    /// same few writers over and over. Bounded: emptied when it reaches [`Verifier::KEYS_CACHED`].
    keys: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Principal, PrincipalKey>>>,
}

impl Verifier {
    /// The most derived keys kept (a mesh of this many agents and more re-derives some).
    pub const KEYS_CACHED: usize = 4096;

    /// The key of `principal`, derived once.
    fn key_of(&self, secret: &DeploymentSecret, principal: &Principal) -> PrincipalKey {
        let Ok(mut keys) = self.keys.lock() else { return secret.key_of(principal) };
        if let Some(key) = keys.get(principal) {
            return key.clone();
        }
        if keys.len() >= Self::KEYS_CACHED {
            keys.clear();
        }
        let key = secret.key_of(principal);
        keys.insert(principal.clone(), key.clone());
        key
    }

    /// Whether this verifier checks anything (it holds the deployment secret).
    pub fn checks(&self) -> bool {
        self.secret.is_some()
    }

    /// `Ok` when `record` (decoded from `value`, read from `topic` under `key`) carries a tag of the writer it must
    /// have, or when this verifier holds no secret; the reason to dead-letter it otherwise.
    pub fn check(
        &self,
        record: &Record,
        topic: &str,
        key: &[u8],
        value: &[u8],
        header: Option<&[u8]>,
    ) -> Result<(), AuthError> {
        let Some(secret) = &self.secret else { return Ok(()) };
        let Some(expected) = Principal::writer_of(record) else { return Ok(()) };
        let kind = record.kind();
        let Some(header) = header else { return Err(AuthError::Missing { kind, expected }) };
        let text = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (claimed, tag) = text.rsplit_once(':').ok_or(AuthError::Malformed)?;
        let named = match &expected {
            Principal::Topology => claimed == "topology",
            Principal::Consensus => claimed == "consensus",
            Principal::Agent(id) => claimed.strip_prefix("agent/") == Some(id.as_str()),
        };
        if !named {
            let claimed: String = claimed.chars().take(140).collect();
            return Err(AuthError::WrongWriter { kind, expected, claimed });
        }
        let given = hex32(tag).ok_or(AuthError::Malformed)?;
        if self.key_of(secret, &expected).verifies(topic, key, value, &given) {
            Ok(())
        } else {
            Err(AuthError::BadTag { kind, expected })
        }
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
}

/// 64 hex digits as 32 bytes.
fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, Header, decode, encode};
    use mesh_core::consensus::Vote;

    const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn secret() -> DeploymentSecret {
        DeploymentSecret::parse(SECRET).expect("long enough")
    }

    fn vote_by(voter: &str) -> (Record, Vec<u8>) {
        let vote = Vote {
            proposal: "p-1".parse().expect("id"),
            voter: voter.parse().expect("id"),
            support: true,
            intensity: mesh_core::Milli(800),
        };
        let env = Envelope {
            header: Header { id: format!("{voter}-1"), ts: 1_764_000_000_000 },
            record: Record::Vote(crate::VoteBody { vote }),
        };
        let bytes = encode(&env);
        (decode(Some(&bytes), None).expect("decodes").record, bytes)
    }

    #[test]
    fn a_record_tagged_by_its_own_writer_passes_and_every_forgery_is_named() {
        let creds = Credentials { secret: Some(secret()), agent_key: None };
        let verifier = creds.verifier();
        let (vote, bytes) = vote_by("sales");
        let topic = "agentmesh.votes";
        let sales = creds.signer(Principal::Agent("sales".parse().expect("id"))).expect("signer").expect("some");
        let header = sales.header(topic, b"p-1", &bytes);
        assert_eq!(verifier.check(&vote, topic, b"p-1", &bytes, Some(header.as_bytes())), Ok(()));

        let err = |h: Option<&str>, topic: &str, key: &[u8], value: &[u8]| {
            verifier.check(&vote, topic, key, value, h.map(str::as_bytes)).expect_err("refused").to_string()
        };
        assert!(err(None, topic, b"p-1", &bytes).contains("must carry a `mesh-auth` header written by agent/sales"));
        assert!(err(Some("garbage"), topic, b"p-1", &bytes).contains("is not PRINCIPAL:TAG"));
        // Another agent's valid key cannot vote as sales.
        let fraud = creds.signer(Principal::Agent("fraud".parse().expect("id"))).expect("signer").expect("some");
        let as_fraud = fraud.header(topic, b"p-1", &bytes);
        assert!(err(Some(&as_fraud), topic, b"p-1", &bytes).contains("names agent/fraud"));
        let lying = format!("agent/sales:{}", as_fraud.rsplit_once(':').expect("tag").1);
        assert!(err(Some(&lying), topic, b"p-1", &bytes).contains("tag does not match"));
        // The tag covers the topic, the key and every byte of the value.
        assert!(err(Some(&header), "agentmesh.proposals", b"p-1", &bytes).contains("tag does not match"));
        assert!(err(Some(&header), topic, b"p-2", &bytes).contains("tag does not match"));
        let mut changed = bytes.clone();
        *changed.last_mut().expect("bytes") = b' ';
        assert!(err(Some(&header), topic, b"p-1", &changed).contains("tag does not match"));
        // A different deployment's secret is a different key.
        let other = Credentials {
            secret: Some(DeploymentSecret::parse(&SECRET.replace('0', "1")).expect("long enough")),
            agent_key: None,
        };
        let theirs = other.signer(Principal::Agent("sales".parse().expect("id"))).expect("ok").expect("some");
        assert!(err(Some(&theirs.header(topic, b"p-1", &bytes)), topic, b"p-1", &bytes).contains("does not match"));
    }

    #[test]
    fn an_agent_key_signs_only_as_that_agent_and_checks_nothing() {
        let key = secret().key_of(&Principal::Agent("sales".parse().expect("id")));
        let third_party =
            Credentials { secret: None, agent_key: Some(PrincipalKey::parse_hex(&key.to_hex()).expect("hex")) };
        assert!(third_party.authenticated());
        assert!(!third_party.verifier().checks());
        let signer = third_party.signer(Principal::Agent("sales".parse().expect("id"))).expect("ok").expect("some");
        let (vote, bytes) = vote_by("sales");
        let header = signer.header("agentmesh.votes", b"p-1", &bytes);
        let managers = Credentials { secret: Some(secret()), agent_key: None }.verifier();
        assert_eq!(managers.check(&vote, "agentmesh.votes", b"p-1", &bytes, Some(header.as_bytes())), Ok(()));
        assert!(third_party.signer(Principal::Topology).is_err(), "a manager cannot run on an agent key");
    }

    #[test]
    fn without_a_secret_everything_is_accepted_and_nothing_signed() {
        let open = Credentials::default();
        assert!(!open.authenticated());
        assert_eq!(open.signer(Principal::Consensus), Ok(None));
        let (vote, bytes) = vote_by("sales");
        assert_eq!(open.verifier().check(&vote, "t", b"k", &bytes, None), Ok(()));
    }

    #[test]
    fn credentials_are_refused_with_the_fix_and_never_shown() {
        let short = DeploymentSecret::parse("  too-short\n").expect_err("refused").to_string();
        assert!(short.contains("openssl rand -hex 32"), "{short}");
        assert!(PrincipalKey::parse_hex("abc").is_err());
        assert!(PrincipalKey::parse_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{:?}", secret()), "DeploymentSecret(***)");
        assert!(!format!("{:?}", Credentials { secret: Some(secret()), agent_key: None }).contains("0123"));
    }

    /// The worked example of docs/protocol.md, "Trust": a third party recomputes these two values to check its own
    /// implementation of the derivations.
    #[test]
    fn the_documented_example_is_what_the_code_computes() {
        let key = secret().key_of(&Principal::Agent("sales".parse().expect("id")));
        let tag = key.tag("agentmesh.votes", b"p-1", br#"{"v":1}"#);
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md"))
            .expect("docs/protocol.md");
        assert!(doc.contains(&key.to_hex()), "docs/protocol.md must show the key of agent/sales: {}", key.to_hex());
        assert!(doc.contains(&hex(&tag)), "docs/protocol.md must show the example tag: {}", hex(&tag));
    }
}
