//! Simulated hosts for `cargo xtask chaos --hosts N`: each host is a Linux network namespace of its own, joined to
//! the harness by a veth pair on a bridge, with its own address, running its own `mesh up` over its share of the
//! processes. The deployment is then several supervisors that meet only through Kafka and Redis, as on real
//! machines, and a host can be cut off the network (its veth taken down: connections stall, new ones are refused)
//! or lose its supervisor to `kill -9`.
//!
//! Kafka, Redis and the fault proxies stay with the harness; the proxies of a host's processes listen on the
//! bridge's address, the only address a host reaches. Everything is created by the run and removed when it ends
//! (also on an error or Ctrl-C); a run killed outright leaves names that carry its pid, which the next run removes.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

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

/// The namespaces, veth pairs and bridge of a run. Dropping it removes them.
#[derive(Debug)]
pub struct Network {
    /// The harness's pid: part of every name, so a later run can tell a dead run's leftovers.
    owner: u32,
    /// The third octet of 10.213.x.0/24.
    subnet: u8,
    hosts: u32,
}

/// Name prefix of everything a run creates (`mc<pid>…`), short enough for Linux's 15-character interface names.
const PREFIX: &str = "mc";

impl Network {
    /// Creates `hosts` namespaces on one bridge, after removing what runs that no longer exist left behind.
    pub fn create(hosts: u32) -> Result<Self> {
        if !(2..=MAX_HOSTS).contains(&hosts) {
            bail!("--hosts {hosts}: use 2 to {MAX_HOSTS} simulated hosts (1 runs everything in this namespace)");
        }
        if !nix::unistd::geteuid().is_root() {
            bail!("--hosts needs root: network namespaces and veth pairs are created with `ip` (run as root)");
        }
        sweep_stale();
        let taken = ip(&["-o", "-4", "addr", "show"])?;
        let subnet = (1..=250u8)
            .find(|s| !taken.contains(&format!("10.213.{s}.")))
            .context("no free 10.213.x.0/24 subnet for the simulated hosts")?;
        let net = Network { owner: std::process::id(), subnet, hosts };
        // From here on, Drop removes whatever was created, also when a step below fails.
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", net.bridge_addr()), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for host in 1..=hosts {
            let (ns, veth) = (net.namespace(host), net.veth(host));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.host_addr(host)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// How many hosts.
    pub fn hosts(&self) -> u32 {
        self.hosts
    }

    /// The harness's address on the bridge: where the proxies of every host's processes listen.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    /// A host's own address.
    pub fn host_addr(&self, host: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, u8::try_from(1 + host).unwrap_or(u8::MAX))
    }

    /// The namespace `ip netns exec` runs a host's supervisor in.
    pub fn namespace(&self, host: u32) -> String {
        format!("{PREFIX}{}h{host}", self.owner)
    }

    fn bridge(&self) -> String {
        format!("{PREFIX}{}br", self.owner)
    }

    /// The bridge side of a host's veth pair (taking it down cuts the host off).
    fn veth(&self, host: u32) -> String {
        format!("{PREFIX}{}v{host}", self.owner)
    }

    /// Cuts `host` off: its link goes down on the bridge side, so its established connections stall (segments are
    /// lost, as on a pulled cable) and new ones fail with "no route to host".
    pub fn cut(&self, host: u32) -> Result<()> {
        ip(&["link", "set", &self.veth(host), "down"]).map(drop)
    }

    /// Reconnects `host`.
    pub fn heal(&self, host: u32) -> Result<()> {
        ip(&["link", "set", &self.veth(host), "up"]).map(drop)
    }

    /// Every host's link up.
    pub fn heal_all(&self) {
        for host in 1..=self.hosts {
            let _ = self.heal(host);
        }
    }

    /// Hosts cut off now.
    pub fn cut_hosts(&self) -> Vec<u32> {
        (1..=self.hosts)
            .filter(|h| ip(&["-o", "link", "show", &self.veth(*h)]).is_ok_and(|line| !admin_up(&line)))
            .collect()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        remove(self.owner);
    }
}

/// Removes the namespaces (their veth pairs go with them) and the bridge of the run with pid `owner`. A process
/// still in one of its namespaces was started there by that run (a run killed outright leaves its supervisors
/// behind): it is killed first, or the namespace would outlive its name.
fn remove(owner: u32) {
    for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        if owner_of(name, 'h') == Some(owner) {
            for pid in ip(&["netns", "pids", name]).unwrap_or_default().split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
            let _ = ip(&["netns", "delete", name]);
        }
    }
    for line in ip(&["-o", "link", "show"]).unwrap_or_default().lines() {
        // `5: mc123br: <...` or `6: mc123v1@if2: <...`
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        if owner_of(name, 'b') == Some(owner) || owner_of(name, 'v') == Some(owner) {
            let _ = ip(&["link", "delete", name]);
        }
    }
}

/// The pid in a name this module made (`mc<pid><kind>…`), if `name` is one.
fn owner_of(name: &str, kind: char) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let (pid, tail) = rest.split_at(digits);
    let valid_tail = match kind {
        'b' => tail == "br",
        _ => tail.strip_prefix(kind).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())),
    };
    if valid_tail { pid.parse().ok() } else { None }
}

/// Removes what runs whose process is gone left behind (a run killed with SIGKILL cannot clean up).
fn sweep_stale() {
    let mut owners = std::collections::BTreeSet::new();
    for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
        owners.extend(line.split_whitespace().next().and_then(|n| owner_of(n, 'h')));
    }
    for line in ip(&["-o", "link", "show", "type", "bridge"]).unwrap_or_default().lines() {
        owners.extend(line.split(": ").nth(1).and_then(|n| owner_of(n, 'b')));
    }
    for owner in owners {
        if !std::path::Path::new(&format!("/proc/{owner}")).exists() {
            tracing::info!(owner, "removing the simulated hosts of a chaos run that no longer exists");
            remove(owner);
        }
    }
}

/// Whether an `ip -o link show` line has the UP flag (set by `ip link set up`; NO-CARRIER is another matter).
fn admin_up(line: &str) -> bool {
    let flags = line.split('<').nth(1).and_then(|f| f.split('>').next()).unwrap_or_default();
    flags.split(',').any(|f| f == "UP")
}

/// Runs `ip ARGS`; its stdout, or an error with its stderr.
fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("running `ip` (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    #[test]
    fn only_names_this_module_makes_are_read_as_a_run_of_some_pid() {
        assert_eq!(owner_of("mc1234h2", 'h'), Some(1234));
        assert_eq!(owner_of("mc1234br", 'b'), Some(1234));
        assert_eq!(owner_of("mc1234v3", 'v'), Some(1234));
        assert_eq!(owner_of("mc1234h", 'h'), None);
        assert_eq!(owner_of("mc1234brx", 'b'), None);
        assert_eq!(owner_of("mcbr", 'b'), None);
        assert_eq!(owner_of("docker0", 'b'), None);
        assert_eq!(owner_of("mc12h3x", 'h'), None);
    }

    #[test]
    fn a_link_is_up_by_its_flag_not_by_its_carrier() {
        assert!(admin_up("7: mc1v1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500"));
        assert!(admin_up("7: mc1v1@if2: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500"));
        assert!(!admin_up("7: mc1v1@if2: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN"));
    }
}
