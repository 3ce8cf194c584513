//! Forgeries on the real broker, against an authenticated mesh (as `mesh up` makes every deployment): records
//! written without the deployment's credentials, or by one agent as another, change neither the roster, the graph
//! nor a decision. The forged records readers can name are dead-lettered with the reason; the mesh goes on deciding;
//! and a third-party agent given only its own key (`mesh key agent ID`) joins and is heard.

use std::process::Command;
use std::time::Duration;

use mesh_core::waggle::WaggleDance;
use mesh_proto::auth::{Principal, Signer};
use mesh_proto::{TopicKind, partition_for};
use mesh_transport::{Bus, OutRecord};
use serde_json::{Value, json};

use crate::support::{FAST, Mesh};
use crate::wire::{produce, response_to, task_json};

/// How a forged record is tagged.
enum Tag {
    /// No `mesh-auth` header: a client without credentials.
    None,
    /// A valid tag of `0`'s key, naming `0`: an agent writing in another's name under its own.
    As(&'static str),
    /// Naming `0` with the tag `1`'s key makes: an agent passing its own tag off as another's.
    Claiming(&'static str, &'static str),
}

fn agent(id: &str) -> Principal {
    Principal::Agent(id.parse().expect("valid id"))
}

/// Appends `value` under `key` to `kind`'s topic, partitioned by the wire contract, tagged as `tag` says.
async fn forge(mesh: &Mesh, kind: TopicKind, key: &str, value: &Value, tag: Tag) {
    let topic = mesh.topics.name(kind);
    let partitions = mesh.bus.partition_count(&topic).await.expect("topic exists");
    let payload = serde_json::to_vec(value).expect("json");
    let auth = match tag {
        Tag::None => None,
        Tag::As(who) => {
            Some(Signer::new(agent(who), mesh.key_of(&agent(who))).header(&topic, key.as_bytes(), &payload))
        }
        Tag::Claiming(named, by) => {
            let theirs = Signer::new(agent(by), mesh.key_of(&agent(by))).header(&topic, key.as_bytes(), &payload);
            Some(format!("{}:{}", agent(named), theirs.rsplit_once(':').expect("PRINCIPAL:TAG").1))
        }
    };
    let record = OutRecord {
        partition: partition_for(key.as_bytes(), partitions),
        topic,
        key: key.as_bytes().to_vec(),
        payload,
        sent_at_us: None,
        auth,
    };
    mesh.bus.publish(record).await.expect("forged record appended");
}

fn envelope(kind: &str, id: &str, body: Value) -> Value {
    json!({ "v": 1, "kind": kind, "id": id, "ts": 1_764_000_000_000_u64, "body": body })
}

fn profile(id: &str) -> Value {
    json!({ "id": id, "name": id, "role": "sales", "capabilities": [], "metadata": {} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_change_neither_the_roster_nor_the_graph_nor_a_decision() {
    let mut mesh = Mesh::new("forgery", FAST).await;
    mesh.start_managers();
    for role in ["sales", "fraud", "inventory"] {
        mesh.start_agent(role, "5", "2");
    }
    mesh.eventually("three agents live and a first decision", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 3 && mesh.consensus_stats().await.decided? >= 1).then_some(())
    })
    .await;

    // A client without credentials: joins as a new agent, declares a live one dead, forges the roster and a verdict.
    let join = |id: &str, n: u32| envelope("join", &format!("forged-join-{n}"), json!({ "agent": profile(id) }));
    forge(&mesh, TopicKind::Topology, "mallory", &join("mallory", 1), Tag::None).await;
    let dead = envelope("dead", "forged-dead", json!({ "agent": "sales", "last_heard_ms": 1 }));
    forge(&mesh, TopicKind::Topology, "sales", &dead, Tag::None).await;
    let member = |id: &str, status: &str| {
        envelope(
            "member",
            &format!("forged-member-{id}"),
            json!({ "member": {
            "profile": profile(id), "status": status, "epoch": 99 } }),
        )
    };
    forge(&mesh, TopicKind::Membership, "ghost", &member("ghost", "live"), Tag::None).await;
    forge(&mesh, TopicKind::Membership, "sales", &member("sales", "dead"), Tag::None).await;
    let decision = envelope(
        "decision",
        "forged-decision",
        json!({ "decision": {
        "proposal": "forged-proposal", "subject": "account:acct-1", "action": "block_account",
        "outcome": { "outcome": "accepted" }, "supports": 3, "against": 0, "voters": 3, "needed": 2,
        "support_intensity": 3000 } }),
    );
    forge(&mesh, TopicKind::Decisions, "forged-proposal", &decision, Tag::None).await;
    let task = |id: &str| {
        envelope("task", id, json!({ "from": "sales", "to": "inventory", "task": "check_stock", "payload": {} }))
    };
    forge(&mesh, TopicKind::Messages, "inventory", &task("forged-task-1"), Tag::None).await;

    // An agent of the mesh (fraud, with its own valid key) writing as another: joining as mallory, voting and
    // sending a task as sales, once naming itself and once passing its tag off as sales's.
    forge(&mesh, TopicKind::Topology, "mallory", &join("mallory", 2), Tag::As("fraud")).await;
    let vote = |n: u32| {
        envelope(
            "vote",
            &format!("forged-vote-{n}"),
            json!({ "vote": {
            "proposal": "some-proposal", "voter": "sales", "support": false, "intensity": 1000 } }),
        )
    };
    forge(&mesh, TopicKind::Votes, "some-proposal", &vote(1), Tag::As("fraud")).await;
    forge(&mesh, TopicKind::Votes, "some-proposal", &vote(2), Tag::Claiming("sales", "fraud")).await;
    forge(&mesh, TopicKind::Messages, "inventory", &task("forged-task-2"), Tag::Claiming("sales", "fraud")).await;

    // fraud, under its own valid key, proposes with itself as the only voter (and would accept on its own vote).
    let epoch = mesh.consensus_stats().await.roster_epoch.expect("the manager read the roster");
    let inputs = json!({ "priority": 900, "urgency": 700, "confidence": 500, "amount_cents": 0 });
    let dance = WaggleDance::perform(serde_json::from_value(inputs.clone()).expect("inputs"), "account:acct-9");
    let mine = envelope(
        "proposal",
        "fraud-alone",
        json!({ "proposal": {
            "id": "fraud-alone", "proposer": "fraud", "subject": "account:acct-9", "action": "block_account",
            "dance": dance, "voters": ["fraud"], "epoch": epoch, "created_at_ms": 1_764_000_000_000_u64 },
            "inputs": inputs, "payload": {} }),
    );
    forge(&mesh, TopicKind::Proposals, "fraud-alone", &mine, Tag::As("fraud")).await;
    let own_vote = envelope(
        "vote",
        "fraud-alone-vote",
        json!({ "vote": { "proposal": "fraud-alone", "voter": "fraud", "support": true, "intensity": 1000 } }),
    );
    forge(&mesh, TopicKind::Votes, "fraud-alone", &own_vote, Tag::As("fraud")).await;

    // The same task from a client holding the credentials, after the forged ones in the same partition: once it is
    // answered, inventory has read the forgeries before it.
    produce(&mesh, &mesh.topics.name(TopicKind::Messages), "inventory", task_json("signed-task").as_bytes());
    mesh.eventually("an answer to the signed task", Duration::from_secs(20), async || {
        response_to(&mesh, "signed-task").await
    })
    .await;
    for forged in ["forged-task-1", "forged-task-2"] {
        assert!(response_to(&mesh, forged).await.is_none(), "{forged} was answered: its sender was believed");
    }

    // Every forgery a manager reads is dead-lettered with why (the topology manager reads joins, deaths and
    // messages; the consensus manager votes and the roster); the agents ignore and count the roster and verdict
    // records only the managers may write.
    let topic = |kind| mesh.topics.name(kind);
    let expected = [
        (topic(TopicKind::Topology), "forged-join-1", "must carry a `mesh-auth` header written by agent/mallory"),
        (
            topic(TopicKind::Topology),
            "forged-join-2",
            "must be written by agent/mallory, but its `mesh-auth` names agent/fraud",
        ),
        (topic(TopicKind::Topology), "forged-dead", "must carry a `mesh-auth` header written by topology"),
        (topic(TopicKind::Votes), "forged-vote-1", "names agent/fraud"),
        (topic(TopicKind::Votes), "forged-vote-2", "tag does not match"),
        (topic(TopicKind::Messages), "forged-task-1", "written by agent/sales"),
        (topic(TopicKind::Messages), "forged-task-2", "tag does not match"),
        (topic(TopicKind::Membership), "forged-member-ghost", "written by topology"),
    ];
    let letters = mesh
        .eventually("every forgery dead-lettered", Duration::from_secs(30), async || {
            let letters = mesh.letters().await;
            let found = |(t, id, _): &(String, &str, &str)| {
                letters
                    .iter()
                    .any(|d| &d.source.topic == t && d.payload_text.as_deref().is_some_and(|p| p.contains(id)))
            };
            expected.iter().all(found).then_some(letters)
        })
        .await;
    for (t, id, why) in &expected {
        let letter = letters
            .iter()
            .find(|d| &d.source.topic == t && d.payload_text.as_deref().is_some_and(|p| p.contains(id)))
            .expect("found above");
        assert!(letter.reason.contains(why), "{id}: {:?} does not say {why:?}", letter.reason);
    }
    for role in ["sales", "fraud", "inventory"] {
        mesh.eventually(
            &format!("{role} ignored the forged roster and verdict"),
            Duration::from_secs(20),
            async || (mesh.agent_stats(role).await.unauthenticated.unwrap_or(0) >= 3).then_some(()),
        )
        .await;
    }

    // fraud's own proposal with a voter set of one is decided refused, with the reason, and nothing else was.
    let decided = mesh
        .eventually("fraud-alone decided", Duration::from_secs(20), async || {
            mesh.read_topic(TopicKind::Decisions).await.into_iter().find_map(|r| match r.envelope.ok()?.record {
                mesh_proto::records::Record::Decision(d) if d.decision.proposal.as_str() == "fraud-alone" => {
                    Some(d.decision)
                }
                _ => None,
            })
        })
        .await;
    let mesh_core::consensus::Outcome::Refused { reason } = &decided.outcome else {
        panic!("fraud decided its own proposal: {decided:?}")
    };
    assert!(reason.contains(&format!("not the live roster at epoch {epoch} (3 live)")), "{reason}");
    mesh.eventually("the refusal counted", Duration::from_secs(10), async || {
        (mesh.consensus_stats().await.refused? == 1).then_some(())
    })
    .await;

    // Nothing changed: three live agents, no mallory or ghost, sales never told it was dead, and the mesh goes on
    // deciding.
    assert_eq!(mesh.topology_stats().await.live_agents, Some(3), "the roster changed");
    assert!(!mesh.logs("sales").contains("joining again"), "sales believed a forged roster\n{}", mesh.logs("sales"));
    let decided = mesh.consensus_stats().await.decided.unwrap_or(0);
    mesh.eventually("decisions after the forgeries", Duration::from_secs(60), async || {
        (mesh.consensus_stats().await.decided? > decided).then_some(())
    })
    .await;
    for name in ["topology", "consensus", "sales", "fraud", "inventory"] {
        assert!(mesh.running(name), "{name} died\n{}", mesh.logs(name));
    }
    assert_eq!(mesh.consensus_stats().await.refused, Some(1), "an honest proposal was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_agent_holding_only_its_own_key_joins_and_is_heard() {
    let mut mesh = Mesh::new("third-party", FAST).await;
    mesh.start_managers();
    mesh.start_agent("inventory", "0", "0");

    // `mesh key agent billing` prints the key the managers derive for billing, and only that.
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["key", "agent", "billing", "--secret-file"])
        .arg(mesh.secret_file())
        .output()
        .expect("mesh key runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(printed.trim(), mesh.key_of(&agent("billing")).to_hex());
    let key_file = mesh.dir.path().join("billing.key");
    std::fs::write(&key_file, &printed).expect("key file");

    // A manager cannot run on an agent key.
    let refused = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["topology", "--kafka", &mesh.kafka, "--agent-key-file"])
        .arg(&key_file)
        .env_remove("MESH_SECRET_FILE")
        .output()
        .expect("mesh topology runs");
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs the deployment secret"));

    // billing holds its key and not the secret: it joins, is counted live, and its tasks are answered.
    let key = key_file.display().to_string();
    mesh.spawn_with(
        "billing",
        &["agent", "--name", "billing", "--role", "sales", "--rate", "5", "--proposal-every", "0"],
        &[("MESH_SECRET_FILE", None), ("MESH_AGENT_KEY_FILE", Some(key.as_str()))],
    );
    mesh.eventually("billing and inventory live", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 2).then_some(())
    })
    .await;
    mesh.eventually("billing's tasks answered", Duration::from_secs(30), async || {
        (mesh.agent_stats("billing").await.responses_received.unwrap_or(0) > 0).then_some(())
    })
    .await;
    assert!(mesh.running("billing"), "billing died\n{}", mesh.logs("billing"));
}
