//! Which process runs on which simulated host in `cargo xtask chaos --hosts N`. Each host is a Linux network
//! namespace of its own ([`mesh_fixtures::netns::Network`]: a veth pair on a bridge, its own address), running its
//! own `mesh up` over its share of the processes. The deployment is then several supervisors that meet only through Kafka and Redis, as on real
//! machines, and a host can be cut off the network (its veth taken down: connections stall, new ones are refused)
//! or lose its supervisor to `kill -9`.
//!
//! Kafka, Redis and the fault proxies stay with the harness; the proxies of a host's processes listen on the
//! bridge's address, the only address a host reaches. Everything is created by the run and removed when it ends
//! (also on an error or Ctrl-C); a run killed outright leaves names that carry its pid, which the next run removes.

use crate::scenario::{AGENTS, MANAGERS};

/// The host the managers run on.
pub const MANAGERS_HOST: u32 = 1;

/// The most simulated hosts a run may ask for: one for the managers and one per agent.
pub const MAX_HOSTS: u32 = 1 + AGENTS.len() as u32;

/// The host `process` runs on: everything on host 1 when there is one host; otherwise the managers on host 1 and
/// the agents dealt over hosts 2..=`hosts` in turn (four agents on three agent hosts: two share the first).
pub fn host_of(process: &str, hosts: u32) -> u32 {
    if hosts <= 1 || MANAGERS.contains(&process) {
        return MANAGERS_HOST;
    }
    let agent_hosts = hosts - 1;
    let index = AGENTS.iter().position(|a| *a == process).map_or(0, |i| i as u32);
    2 + index % agent_hosts
}

/// The processes of `host`, in start order.
pub fn processes_on(host: u32, hosts: u32) -> Vec<String> {
    MANAGERS.iter().chain(&AGENTS).filter(|p| host_of(p, hosts) == host).map(|p| (*p).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_get_the_first_host_and_agents_are_dealt_over_the_rest() {
        assert_eq!(processes_on(1, 4), ["topology", "consensus"]);
        assert_eq!(processes_on(2, 4), ["agent-sales", "agent-fraud"]);
        assert_eq!(processes_on(3, 4), ["agent-support"]);
        assert_eq!(processes_on(4, 4), ["agent-inventory"]);
        assert_eq!(processes_on(1, 1).len(), 6, "one host runs everything");
        assert_eq!(processes_on(2, 2).len(), 4, "two hosts: managers, and every agent on the other");
        let every: usize = (1..=MAX_HOSTS).map(|h| processes_on(h, MAX_HOSTS).len()).sum();
        assert_eq!(every, 6, "each process on exactly one host");
    }
}
