//! The hostile-input fault: what a careless or malicious client with write access to the topics does, written
//! straight to the broker under traffic. Poison (a binary record at the broker's size limit) on every topic the mesh
//! reads, and forged verdicts about one agent: its death and a roster entry saying so, written without credentials;
//! a vote in its name, tagged with another agent's valid key; a decision contradicting one the consensus manager made;
//! and that other agent, under its own key, proposing with itself as the only voter and voting for it.

use anyhow::{Context, Result};
use mesh_core::Milli;
use mesh_core::consensus::{Decision, Outcome};
use mesh_core::waggle::{DanceInputs, WaggleDance};
use mesh_kafka::KafkaBus;
use mesh_proto::auth::{DeploymentSecret, Principal, Signer};
use mesh_proto::{TopicKind, TopicNames, partition_for};
use mesh_transport::{Bus, OutRecord};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::check::hostile::{Injected, Mark};

/// Bytes of a poison record: at librdkafka's default message limit, within the broker's 1 MiB.
const POISON_BYTES: usize = 1_000_000;

/// What one injection wrote: the records to find dead-lettered, and how many forged manager records every agent
/// reads (and must ignore).
pub struct Injection {
    /// Every hostile record written.
    pub injected: Vec<Injected>,
    /// Forged records only the agents read: each agent's `unauthenticated` counter must grow by this many.
    pub agent_records: u64,
    /// Proposals whose voter set was the proposer's choice: each must be decided `refused`, never accepted.
    pub refused: Vec<String>,
}

/// Writes the hostile records about `agent` (an agent id), numbered `n` so that trials do not repeat ids.
/// `decided` is a decision the consensus manager published, to contradict; `proposal` a proposal to vote on;
/// `epoch` the newest roster epoch read (a self-chosen voter set is named at it, as the attack would be).
#[expect(clippy::too_many_arguments, reason = "what the harness observed, passed as it is")]
pub async fn inject(
    bus: &KafkaBus,
    topics: &TopicNames,
    secret: &DeploymentSecret,
    agent: &str,
    n: usize,
    decided: Option<Decision>,
    proposal: Option<String>,
    epoch: u64,
) -> Result<Injection> {
    let mut injected = Vec::new();
    let target = Target { bus, topics };
    let poisoned = [
        (TopicKind::Messages, agent),
        (TopicKind::Topology, agent),
        (TopicKind::Heartbeats, agent),
        (TopicKind::Membership, agent),
        (TopicKind::Proposals, "poison"),
        (TopicKind::Votes, "poison"),
    ];
    for (i, (kind, key)) in poisoned.into_iter().enumerate() {
        let value = poison(n * 16 + i);
        let topic = topics.name(kind);
        let sha = Sha256::digest(&value).iter().map(|b| format!("{b:02x}")).collect();
        write(bus, &topic, key, value, None).await?;
        injected.push(Injected {
            what: format!("a {POISON_BYTES}-byte binary record on {topic}"),
            topic,
            mark: Mark::Sha256(sha),
            reason: Some("not a JSON envelope".into()),
        });
    }

    let unsigned = Some("not authenticated".to_owned());
    let dead = envelope("dead", &format!("forged-dead-{n}"), json!({ "agent": agent, "last_heard_ms": 1 }));
    injected.push(forged(&target, TopicKind::Topology, agent, &dead, None, "dead", unsigned.clone()).await?);
    let profile = json!({ "id": agent, "name": agent, "role": "sales", "capabilities": [], "metadata": {} });
    let member = envelope(
        "member",
        &format!("forged-member-{n}"),
        json!({ "member": { "profile": profile, "status": "dead", "epoch": 1_000_000 } }),
    );
    injected.push(forged(&target, TopicKind::Membership, agent, &member, None, "member", unsigned.clone()).await?);

    // An agent of the mesh (holding its own valid key) voting in the target's name.
    let voter = if agent == "sales" { "support" } else { "sales" };
    let proposal = proposal.unwrap_or_else(|| format!("no-such-proposal-{n}"));
    let vote = envelope(
        "vote",
        &format!("forged-vote-{n}"),
        json!({ "vote": { "proposal": proposal, "voter": agent, "support": false, "intensity": 1000 } }),
    );
    let as_voter = Principal::Agent(voter.parse().context("agent id")?);
    let signer = Signer::new(as_voter.clone(), secret.key_of(&as_voter));
    injected.push(forged(&target, TopicKind::Votes, &proposal, &vote, Some(&signer), "vote", unsigned).await?);

    // The same agent, under its own key and in its own name, choosing its voters: itself alone.
    let mine = format!("chaos-alone-{n}");
    let subject = format!("account:chaos-{n}");
    let inputs = DanceInputs { priority: Milli(900), urgency: Milli(900), confidence: Milli(900), amount_cents: 0 };
    let proposal_record = envelope(
        "proposal",
        &mine,
        json!({ "proposal": {
            "id": mine, "proposer": voter, "subject": subject, "action": "block_account",
            "dance": WaggleDance::perform(inputs, &subject), "voters": [voter], "epoch": epoch,
            "created_at_ms": mesh_node::now_us() / 1_000 },
            "inputs": inputs, "payload": {} }),
    );
    forged(&target, TopicKind::Proposals, &mine, &proposal_record, Some(&signer), "proposal", None).await?;
    let own_vote = envelope(
        "vote",
        &format!("{mine}-vote"),
        json!({ "vote": { "proposal": mine, "voter": voter, "support": true, "intensity": 1000 } }),
    );
    forged(&target, TopicKind::Votes, &mine, &own_vote, Some(&signer), "vote", None).await?;

    // The verdict, contradicted (the agents read decisions; nobody dead-letters them, so they ignore and count).
    let contradiction = decided.map_or_else(
        || {
            json!({ "proposal": format!("forged-proposal-{n}"), "subject": "account:acct-1", "action":
            "block_account", "outcome": { "outcome": "accepted" }, "supports": 3, "against": 0, "voters": 3,
            "needed": 2, "support_intensity": 3000 })
        },
        |mut d| {
            d.outcome = if d.outcome == Outcome::Accepted { Outcome::Rejected } else { Outcome::Accepted };
            serde_json::to_value(d).unwrap_or(Value::Null)
        },
    );
    let key = contradiction.get("proposal").and_then(Value::as_str).unwrap_or("forged").to_owned();
    let decision = envelope("decision", &format!("forged-decision-{n}"), json!({ "decision": contradiction }));
    injected.push(forged(&target, TopicKind::Decisions, &key, &decision, None, "decision", None).await?);
    // The forged `member` and the decision: read by every agent, and to be ignored by each.
    Ok(Injection { injected, agent_records: 2, refused: vec![mine] })
}

/// A value that is not UTF-8 (so its letter carries it as cut hex, with its SHA-256), distinct per `seed`.
fn poison(seed: usize) -> Vec<u8> {
    (0..POISON_BYTES).map(|i| if i % 2 == 0 { 0xff } else { ((i + seed) % 251) as u8 }).collect()
}

fn envelope(kind: &str, id: &str, body: Value) -> Value {
    json!({ "v": 1, "kind": kind, "id": id, "ts": mesh_node::now_us() / 1_000, "body": body })
}

/// Where hostile records go.
struct Target<'a> {
    bus: &'a KafkaBus,
    topics: &'a TopicNames,
}

async fn forged(
    target: &Target<'_>,
    kind: TopicKind,
    key: &str,
    value: &Value,
    signer: Option<&Signer>,
    what: &str,
    reason: Option<String>,
) -> Result<Injected> {
    let topic = target.topics.name(kind);
    let payload = serde_json::to_vec(value).context("forged record")?;
    let id = value.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let auth = signer.map(|s| s.header(&topic, key.as_bytes(), &payload));
    write(target.bus, &topic, key, payload, auth).await?;
    Ok(Injected { what: format!("forged {what} {id}"), topic, mark: Mark::Text(format!("\"{id}\"")), reason })
}

async fn write(bus: &KafkaBus, topic: &str, key: &str, payload: Vec<u8>, auth: Option<String>) -> Result<()> {
    let partitions = bus.partition_count(topic).await.with_context(|| format!("partitions of {topic}"))?;
    let record = OutRecord {
        topic: topic.to_owned(),
        partition: partition_for(key.as_bytes(), partitions),
        key: key.as_bytes().to_vec(),
        payload,
        sent_at_us: None,
        auth,
    };
    bus.publish(record).await.with_context(|| format!("writing a hostile record to {topic}"))?;
    Ok(())
}
