//! Duplicates are counted and handled idempotently. Delivery is at least once, so after a crash a task can be
//! handled twice; the mesh must then give the same answer under the same id (`<task id>.r`), so that the asker,
//! which deduplicates by id, sees one answer.

use super::CheckResult;
use crate::observe::Observed;

/// Name of this invariant.
pub const NAME: &str = "duplicates-idempotent";

/// Extra copies of answers and of tasks.
pub fn count(o: &Observed) -> u64 {
    let answers: usize = o.responses.values().map(|v| v.len().saturating_sub(1)).sum();
    answers as u64 + o.task_copies
}

/// Every copy of an answer has the first copy's id and content.
pub fn check(o: &Observed) -> CheckResult {
    let mut divergent = Vec::new();
    for (task, copies) in &o.responses {
        let first = &copies[0];
        if copies.iter().any(|c| c.id != first.id || c.content != first.content || c.from != first.from) {
            divergent.push(task.clone());
        }
    }
    let n = count(o);
    CheckResult::holds(
        NAME,
        divergent.is_empty(),
        if divergent.is_empty() {
            format!("{n} duplicate records, all identical to the first copy")
        } else {
            format!("{} tasks answered differently on redelivery, e.g. {}", divergent.len(), divergent[0])
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::observe::ResponseSeen;

    fn answer(id: &str, content: &str) -> ResponseSeen {
        ResponseSeen { id: id.into(), ts: 1, from: "b".into(), to: "a".into(), content: content.into() }
    }

    #[test]
    fn identical_copies_are_counted_and_pass_and_a_different_answer_fails() {
        let mut o = Observed::default();
        o.responses.insert("t1".into(), vec![answer("t1.r", "ok"), answer("t1.r", "ok")]);
        o.responses.insert("t2".into(), vec![answer("t2.r", "ok")]);
        assert_eq!(count(&o), 1);
        assert_eq!(check(&o).verdict, Verdict::Pass);
        o.responses.insert("t3".into(), vec![answer("t3.r", "ok"), answer("t3.r", "other")]);
        let c = check(&o);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("t3"), "{c:?}");
    }
}
