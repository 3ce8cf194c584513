//! The consensus figures, from the records themselves: every proposal and decision of the run read back from Kafka
//! and paired by proposal id, so the latency is the one a reader of the topics sees (proposal sent to decision
//! sent), not what any process says about itself.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use mesh_kafka::{KafkaBus, KafkaConfig};
use mesh_proto::records::Record;
use mesh_proto::{TopicKind, TopicNames, decode};
use mesh_transport::{Assignment, Bus, Reader, StartAt};

use super::error::Error;
use super::infra::Infra;
use super::plan::Plan;
use crate::report::{Consensus, Percentiles};

/// Reads every proposal and decision of the run from Kafka and pairs them: latency from the proposal's creation to
/// the decision record, for proposals made inside the window.
pub(crate) async fn consensus_figures(
    infra: &Infra,
    plan: &Plan,
    from_ms: u64,
    until_ms: u64,
) -> Result<Consensus, Error> {
    // Decisions of proposals late in the window may take up to the proposal timeout; give them a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bus = KafkaBus::new(KafkaConfig::new(&infra.kafka, "mesh-bench-reader"))
        .map_err(|source| Error::KafkaClient { kafka: infra.kafka.clone(), source })?;
    let topics = TopicNames::new(plan.prefix.clone());
    // Times in µs: the records' `mesh-sent-us` headers (the proposal's send, the decision's send), else their ms stamps.
    let mut proposed: BTreeMap<String, (u64, u64, usize)> = BTreeMap::new();
    let mut decided: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for kind in [TopicKind::Proposals, TopicKind::Decisions] {
        let topic = topics.name(kind);
        for record in read_all(&bus, &topic).await? {
            let Ok(env) = decode(record.payload.as_deref(), Some(kind)) else { continue };
            match env.record {
                Record::Proposal(b) => {
                    let sent_us = record.sent_at_us.unwrap_or(b.proposal.created_at_ms * 1000);
                    proposed.insert(
                        b.proposal.id.to_string(),
                        (b.proposal.created_at_ms, sent_us, b.proposal.voters.len()),
                    );
                }
                Record::Decision(b) => {
                    let expired = b.decision.outcome == mesh_core::consensus::Outcome::Expired;
                    let sent_us = record.sent_at_us.unwrap_or(env.header.ts * 1000);
                    decided.entry(b.decision.proposal.to_string()).or_insert((sent_us, expired));
                }
                _ => {}
            }
        }
    }
    let mut h: Histogram<u64> = Histogram::new_with_bounds(1, 600_000_000, 3).map_err(Error::Histogram)?;
    let (mut proposals, mut decisions, mut voters, mut expired) = (0u64, 0u64, 0usize, 0u64);
    for (id, (created, sent_us, n)) in &proposed {
        if !(from_ms..until_ms).contains(created) {
            continue;
        }
        proposals += 1;
        voters += n;
        if let Some((decided_us, was_expired)) = decided.get(id) {
            decisions += 1;
            expired += u64::from(*was_expired);
            h.saturating_record(decided_us.saturating_sub(*sent_us).max(1));
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "rates for display")]
    Ok(Consensus {
        proposals,
        decisions,
        decisions_per_s: decisions as f64 / ((until_ms - from_ms) as f64 / 1000.0).max(1e-3),
        voters: if proposals == 0 { 0.0 } else { voters as f64 / proposals as f64 },
        latency: Percentiles::of(&h),
        expired,
    })
}

/// Every record of a topic up to its end offsets at the time of the call.
async fn read_all(bus: &KafkaBus, topic: &str) -> Result<Vec<mesh_transport::InRecord>, Error> {
    let failed = |source| Error::ReadTopic { topic: topic.to_owned(), source };
    let partitions = bus.partition_count(topic).await.map_err(failed)?;
    let mut ends = BTreeMap::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let end = bus.end_offset(topic, p).await.map_err(failed)?;
        if end > 0 {
            ends.insert(p, end);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    let assignments =
        ends.keys().map(|p| Assignment { topic: topic.to_owned(), partition: *p, start: StartAt::Beginning }).collect();
    let mut reader = bus.reader(&format!("mesh-bench-{}", mesh_node::now_ms()), assignments).await.map_err(failed)?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        let record = tokio::time::timeout_at(deadline, reader.next())
            .await
            .map_err(|_| Error::ReadTimeout { topic: topic.to_owned() })?
            .map_err(failed)?;
        if ends.get(&record.partition).is_some_and(|end| record.offset + 1 >= *end) {
            ends.remove(&record.partition);
        }
        out.push(record);
    }
    Ok(out)
}
