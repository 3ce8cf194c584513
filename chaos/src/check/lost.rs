//! No acknowledged message is lost: every task on the messages topic (a record there is one the broker
//! acknowledged) is answered, once the mesh had time to drain. An agent that commits its offset before answering,
//! or a restarted agent that resumes past its backlog, leaves a task unanswered forever.

use super::{CheckResult, Verdict};
use crate::observe::Observed;

/// Name of this invariant.
pub const NAME: &str = "no-lost-message";

/// Tasks sent before `cutoff_ms` must all have a response; `drained` says whether the wait for them ran its course.
pub fn check(o: &Observed, cutoff_ms: u64) -> CheckResult {
    let total = o.tasks.values().filter(|t| t.ts < cutoff_ms).count();
    let lost = o.unanswered_before(cutoff_ms);
    if total == 0 {
        return CheckResult::new(NAME, Verdict::Unknown, "no task was sent: nothing to check");
    }
    let examples: Vec<String> =
        lost.iter().take(5).map(|(id, t)| format!("{id} ({} -> {}, ts {})", t.from, t.to, t.ts)).collect();
    CheckResult::holds(
        NAME,
        lost.is_empty(),
        if lost.is_empty() {
            format!("{total} acknowledged tasks, all answered")
        } else {
            format!("{} of {total} acknowledged tasks never answered, e.g. {}", lost.len(), examples.join(", "))
        },
    )
}

/// The number of lost tasks (for the report).
pub fn count(o: &Observed, cutoff_ms: u64) -> usize {
    o.unanswered_before(cutoff_ms).len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ResponseSeen, TaskSeen};

    fn task(o: &mut Observed, id: &str, ts: u64) {
        o.tasks.insert(id.into(), TaskSeen { ts, from: "a".into(), to: "b".into() });
        o.task_order.push(id.into());
    }

    #[test]
    fn an_unanswered_old_task_is_lost_and_a_recent_one_is_not_yet() {
        let mut o = Observed::default();
        task(&mut o, "t1", 100);
        task(&mut o, "t2", 200);
        task(&mut o, "t3", 900);
        let r = ResponseSeen { id: "t1.r".into(), ts: 150, from: "b".into(), to: "a".into(), content: "{}".into() };
        o.responses.insert("t1".into(), vec![r]);
        let c = check(&o, 500);
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains("t2") && !c.detail.contains("t3"), "{c:?}");
        assert_eq!(count(&o, 500), 1);
        assert_eq!(check(&o, 120).verdict, Verdict::Pass);
        assert_eq!(check(&Observed::default(), 500).verdict, Verdict::Unknown);
    }
}
