//! The e-commerce scenario of the original AgentMesh Cortex: what each role asks of whom, how it answers, what it
//! proposes and how it votes. Pure: every random choice comes from a seeded generator, so a run can be replayed.

use std::collections::BTreeMap;

use mesh_core::Milli;
use mesh_core::consensus::Proposal;
use mesh_core::waggle::DanceInputs;
use mesh_proto::records::ResponseStatus;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// A task the scenario wants sent to some agent of `to_role`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDraft {
    /// Role of the recipient; the runtime picks a live member of that role.
    pub to_role: &'static str,
    /// Task name.
    pub task: &'static str,
    /// Arguments.
    pub payload: BTreeMap<String, Value>,
}

/// A proposal the scenario wants made.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalDraft {
    /// Subject; proposals on the same subject compete.
    pub subject: String,
    /// Action if accepted.
    pub action: &'static str,
    /// What the waggle dance is computed from.
    pub inputs: DanceInputs,
    /// Details.
    pub payload: BTreeMap<String, Value>,
}

/// One agent's scenario state.
#[derive(Debug)]
pub struct Scenario {
    role: String,
    rng: StdRng,
    started: u64,
    /// Where in its cycle of `proposal_every` tasks this agent starts (from the seed): agents that start together do
    /// not all propose on the same task number, so proposals spread evenly over time.
    phase: u64,
    proposal_every: u32,
}

fn map(v: Value) -> BTreeMap<String, Value> {
    match v {
        Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

impl Scenario {
    /// The scenario for `role`, seeded.
    pub fn new(role: &str, seed: u64, proposal_every: u32) -> Self {
        let phase = if proposal_every == 0 { 0 } else { seed % u64::from(proposal_every) };
        Self { role: role.to_owned(), rng: StdRng::seed_from_u64(seed), started: 0, phase, proposal_every }
    }

    /// The next task this role starts, if it starts any.
    pub fn next_task(&mut self) -> Option<TaskDraft> {
        let n = self.rng.random_range(1..=50u32);
        let draft = match self.role.as_str() {
            "sales" => {
                if self.rng.random_bool(0.5) {
                    TaskDraft {
                        to_role: "inventory",
                        task: "check_stock",
                        payload: map(json!({"sku": format!("sku-{n}"), "quantity": n % 5 + 1})),
                    }
                } else {
                    TaskDraft {
                        to_role: "fraud",
                        task: "verify_transaction",
                        payload: map(
                            json!({"order_id": format!("order-{}", self.started), "amount_cents": u64::from(n) * 1_999}),
                        ),
                    }
                }
            }
            "support" => {
                let to_role = ["sales", "inventory", "fraud"][self.rng.random_range(0..3)];
                TaskDraft {
                    to_role,
                    task: "escalate",
                    payload: map(json!({"ticket": format!("ticket-{}", self.started), "issue": "customer complaint"})),
                }
            }
            "inventory" => {
                if self.rng.random_bool(0.5) {
                    TaskDraft {
                        to_role: "sales",
                        task: "stock_alert",
                        payload: map(json!({"sku": format!("sku-{n}"), "level": n % 7})),
                    }
                } else {
                    TaskDraft {
                        to_role: "support",
                        task: "delivery_update",
                        payload: map(json!({"order_id": format!("order-{n}"), "eta_days": n % 4 + 1})),
                    }
                }
            }
            "fraud" => {
                let account = format!("acct-{}", n % 5);
                if self.rng.random_bool(0.5) {
                    let to_role = if self.rng.random_bool(0.5) { "sales" } else { "support" };
                    TaskDraft { to_role, task: "fraud_alert", payload: map(json!({"account": account, "risk": n * 2})) }
                } else {
                    TaskDraft {
                        to_role: "support",
                        task: "account_suspension",
                        payload: map(json!({"account": account})),
                    }
                }
            }
            _ => return None,
        };
        self.started += 1;
        Some(draft)
    }

    /// A proposal, every `proposal_every` started tasks, for the roles that propose (fraud blocks risky accounts,
    /// sales offers discounts and argues to keep accounts, inventory restocks).
    pub fn next_proposal(&mut self) -> Option<ProposalDraft> {
        if self.proposal_every == 0
            || self.started == 0
            || !(self.started + self.phase).is_multiple_of(u64::from(self.proposal_every))
        {
            return None;
        }
        let mut inputs = DanceInputs {
            priority: Milli(self.rng.random_range(300..=1000)),
            urgency: Milli(self.rng.random_range(200..=1000)),
            confidence: Milli(self.rng.random_range(400..=1000)),
            amount_cents: 0,
        };
        let n = self.rng.random_range(0..5u32);
        let (subject, action, payload) = match self.role.as_str() {
            "fraud" => (format!("account:acct-{n}"), "block_account", json!({"account": format!("acct-{n}")})),
            "sales" if self.rng.random_bool(0.3) => {
                (format!("account:acct-{n}"), "keep_account", json!({"account": format!("acct-{n}")}))
            }
            "sales" => {
                inputs.amount_cents = u64::from(n + 1) * 10_000;
                (
                    format!("discount:sku-{n}"),
                    "apply_discount",
                    json!({"sku": format!("sku-{n}"), "percent": 5 + n * 5}),
                )
            }
            "inventory" => (format!("restock:sku-{n}"), "restock", json!({"sku": format!("sku-{n}"), "quantity": 100})),
            _ => return None,
        };
        Some(ProposalDraft { subject, action, inputs, payload: map(payload) })
    }

    /// Answers a task addressed to this agent.
    pub fn handle_task(
        &self,
        task: &str,
        payload: &BTreeMap<String, Value>,
    ) -> (ResponseStatus, BTreeMap<String, Value>) {
        let text = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let stable = |s: &str| s.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let body = match task {
            "check_stock" => {
                let available = stable(&text("sku")) % 40;
                let wanted = payload.get("quantity").and_then(Value::as_u64).unwrap_or(1);
                json!({"sku": text("sku"), "available": available, "in_stock": available >= wanted})
            }
            "verify_transaction" => {
                let amount = payload.get("amount_cents").and_then(Value::as_u64).unwrap_or(0);
                let risk = (stable(&text("order_id")) % 100).min(100);
                json!({"order_id": text("order_id"), "risk": risk, "approved": risk < 80 || amount < 10_000})
            }
            "escalate" => json!({"ticket": text("ticket"), "accepted_by": self.role}),
            "stock_alert" | "delivery_update" | "fraud_alert" | "account_suspension" => {
                json!({"acknowledged": true, "by": self.role})
            }
            other => return (ResponseStatus::Error, map(json!({"error": format!("unknown task {other:?}")}))),
        };
        (ResponseStatus::Ok, map(body))
    }

    /// How this role votes on `proposal`: (support, intensity). The runtime enforces one support per subject.
    pub fn vote(&mut self, proposal: &Proposal) -> (bool, Milli) {
        let favoured: &[&str] = match self.role.as_str() {
            "fraud" => &["block_account"],
            "sales" => &["apply_discount", "keep_account"],
            "support" => &["keep_account", "restock"],
            "inventory" => &["restock", "block_account"],
            _ => &[],
        };
        let disfavoured: &[&str] = match self.role.as_str() {
            "fraud" => &["keep_account"],
            "sales" => &["block_account"],
            "inventory" => &["apply_discount"],
            _ => &[],
        };
        let mut score = i64::from(proposal.dance.intensity.0);
        if favoured.contains(&proposal.action.as_str()) {
            score += 300;
        }
        if disfavoured.contains(&proposal.action.as_str()) {
            score -= 300;
        }
        score += self.rng.random_range(-150..=150);
        let intensity = Milli(u32::try_from(score.clamp(0, 1000)).unwrap_or(0));
        (score >= 500, intensity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_starts_tasks_for_other_roles() {
        for role in ["sales", "support", "inventory", "fraud"] {
            let mut s = Scenario::new(role, 7, 5);
            for _ in 0..20 {
                let t = s.next_task().expect("known roles start tasks");
                assert_ne!(t.to_role, role);
            }
        }
        assert_eq!(Scenario::new("observer", 7, 5).next_task(), None);
    }

    #[test]
    fn every_task_the_scenario_starts_gets_an_ok_answer() {
        for role in ["sales", "support", "inventory", "fraud"] {
            let mut s = Scenario::new(role, 11, 5);
            for _ in 0..50 {
                let t = s.next_task().expect("task");
                let answer = Scenario::new(t.to_role, 1, 5).handle_task(t.task, &t.payload);
                assert_eq!(answer.0, ResponseStatus::Ok, "{role} -> {} {}", t.to_role, t.task);
            }
        }
        let (status, _) = Scenario::new("sales", 1, 5).handle_task("dance", &BTreeMap::new());
        assert_eq!(status, ResponseStatus::Error);
    }

    #[test]
    fn same_seed_same_choices() {
        let mut a = Scenario::new("fraud", 42, 2);
        let mut b = Scenario::new("fraud", 42, 2);
        for _ in 0..30 {
            assert_eq!(a.next_task(), b.next_task());
            assert_eq!(a.next_proposal(), b.next_proposal());
        }
    }

    #[test]
    fn proposals_come_every_n_tasks_for_proposing_roles() {
        let mut s = Scenario::new("fraud", 3, 3);
        let mut made = 0;
        for _ in 0..9 {
            s.next_task();
            if let Some(p) = s.next_proposal() {
                assert!(p.subject.starts_with("account:"));
                made += 1;
            }
        }
        assert_eq!(made, 3);
        let first = |seed| {
            let mut s = Scenario::new("fraud", seed, 100);
            (1..=100).find(|_| {
                s.next_task();
                s.next_proposal().is_some()
            })
        };
        assert_ne!(first(1), first(2), "the seed sets where in the cycle an agent starts");
        let mut support = Scenario::new("support", 3, 1);
        support.next_task();
        assert_eq!(support.next_proposal(), None);
    }
}
