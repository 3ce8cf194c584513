//! Hostile input is refused, not believed: every poison record and every forgery that a manager or agent reads and
//! can name is in the dead-letter topic (the records themselves are left out of every other checker's view, as the
//! mesh leaves them out of its state), the agents counted the manager records they ignored, and a proposal whose
//! voters its proposer chose was decided `refused`.

use std::collections::BTreeMap;

use mesh_core::consensus::{Decision, Outcome};
use mesh_proto::records::DeadLetterBody;
use serde::{Deserialize, Serialize};

use super::{CheckResult, Verdict};

/// Name of this invariant.
pub const NAME: &str = "hostile-input-refused";

/// One record the harness wrote as an attacker would, and how its dead letter is recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Injected {
    /// What it is, for the report (`forged dead of fraud`).
    pub what: String,
    /// The topic it was written to.
    pub topic: String,
    /// The SHA-256 of its value (hex), as a letter of a cut value carries it; or text its letter's copy contains.
    pub mark: Mark,
    /// Text the letter's reason must contain; `None` for a record the agents ignore without a letter.
    pub reason: Option<String>,
}

/// How a record's letter is found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// A large value: its SHA-256, in the letter's `payload_sha256`.
    Sha256(String),
    /// A small record: text in the letter's copy of it (its envelope id).
    Text(String),
}

fn matches(letter: &DeadLetterBody, injected: &Injected) -> bool {
    letter.source.topic == injected.topic
        && match &injected.mark {
            Mark::Sha256(h) => letter.payload_sha256.as_deref() == Some(h.as_str()),
            Mark::Text(t) => letter.payload_text.as_deref().is_some_and(|p| p.contains(t.as_str())),
        }
}

/// What the scenario wrote.
pub struct Injections<'a> {
    /// Every hostile record.
    pub injected: &'a [Injected],
    /// How many of them only the agents read (forged manager records they must have ignored, each of them).
    pub agent_records: u64,
    /// Proposals whose voters their proposer chose: each must be decided `refused`.
    pub refused: &'a [String],
}

/// `letters` and `decisions` as the tail read them; `ignored` each agent's `unauthenticated` counter.
pub fn check(
    letters: &[DeadLetterBody],
    decisions: &BTreeMap<String, Vec<Decision>>,
    injection: &Injections<'_>,
    ignored: &BTreeMap<String, u64>,
) -> CheckResult {
    let (injected, agent_records) = (injection.injected, injection.agent_records);
    if injected.is_empty() {
        return CheckResult::new(NAME, Verdict::Unknown, "nothing was injected");
    }
    let mut missing = Vec::new();
    for id in injection.refused {
        match decisions.get(id).and_then(|d| d.first()).map(|d| &d.outcome) {
            Some(Outcome::Refused { .. }) => {}
            Some(other) => missing.push(format!("proposal {id} with a voter set of its own: decided {other:?}")),
            None => missing.push(format!("proposal {id} with a voter set of its own: no decision")),
        }
    }
    for i in injected.iter().filter(|i| i.reason.is_some()) {
        let why = i.reason.as_deref().unwrap_or_default();
        match letters.iter().find(|l| matches(l, i)) {
            Some(l) if l.reason.contains(why) => {}
            Some(l) => missing.push(format!("{}: dead-lettered, but {:?} does not say {why:?}", i.what, l.reason)),
            None => missing.push(format!("{}: no dead letter", i.what)),
        }
    }
    let believers: Vec<String> =
        ignored.iter().filter(|(_, n)| **n < agent_records).map(|(a, n)| format!("{a} ignored {n}")).collect();
    if !missing.is_empty() || !believers.is_empty() {
        let mut detail = missing;
        if !believers.is_empty() {
            detail.push(format!(
                "agents that did not ignore all {agent_records} forged manager records: {}",
                believers.join(", ")
            ));
        }
        return CheckResult::holds(NAME, false, detail.join("; "));
    }
    CheckResult::holds(
        NAME,
        true,
        format!(
            "{} hostile records: {} dead-lettered with the reason, {agent_records} forged manager records ignored by \
             every agent ({} agents), {} self-chosen voter sets refused",
            injected.len(),
            injected.iter().filter(|i| i.reason.is_some()).count(),
            ignored.len(),
            injection.refused.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::records::SourcePosition;

    fn letter(topic: &str, text: &str, reason: &str) -> DeadLetterBody {
        DeadLetterBody::new(
            reason,
            SourcePosition { topic: topic.into(), partition: 0, offset: 1 },
            String::from("topology"),
            None,
            Some(text.as_bytes()),
        )
    }

    fn forged(topic: &str, id: &str, reason: Option<&str>) -> Injected {
        Injected {
            what: id.into(),
            topic: topic.into(),
            mark: Mark::Text(id.into()),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn a_forgery_without_its_letter_or_a_believing_agent_fails_the_check() {
        let injected = [forged("t.votes", "forged-vote", Some("not authenticated")), forged("t.decisions", "x", None)];
        let ok = [letter("t.votes", r#"{"id":"forged-vote"}"#, "not authenticated: ...")];
        let agents = BTreeMap::from([("sales".to_owned(), 1)]);
        let refused = ["alone".to_owned()];
        let decision = |outcome: Outcome| Decision {
            proposal: "alone".parse().expect("id"),
            subject: "s".into(),
            action: "a".into(),
            outcome,
            supports: 1,
            against: 0,
            voters: 1,
            needed: 1,
            support_intensity: 1000,
        };
        let decided = |o: Outcome| BTreeMap::from([("alone".to_owned(), vec![decision(o)])]);
        let was_refused = decided(Outcome::Refused { reason: "voters".into() });
        let of = |agent_records| Injections { injected: &injected, agent_records, refused: &refused };
        assert_eq!(check(&ok, &was_refused, &of(1), &agents).verdict, Verdict::Pass);
        assert_eq!(check(&[], &was_refused, &of(1), &agents).verdict, Verdict::Fail, "no letter");
        let wrong = [letter("t.votes", r#"{"id":"forged-vote"}"#, "too large")];
        assert_eq!(check(&wrong, &was_refused, &of(1), &agents).verdict, Verdict::Fail, "letter for another reason");
        assert_eq!(check(&ok, &was_refused, &of(2), &agents).verdict, Verdict::Fail, "an agent believed one");
        let accepted = decided(Outcome::Accepted);
        assert_eq!(check(&ok, &accepted, &of(1), &agents).verdict, Verdict::Fail, "its own voters accepted it");
        assert_eq!(check(&ok, &BTreeMap::new(), &of(1), &agents).verdict, Verdict::Fail, "never decided");
        let nothing = Injections { injected: &[], agent_records: 0, refused: &[] };
        assert_eq!(check(&ok, &was_refused, &nothing, &agents).verdict, Verdict::Unknown);
    }
}
