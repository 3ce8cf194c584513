//! Measuring a running deployment: the ramp-up (every process READY, every agent live, the full mesh built), the
//! warm-up, the measured window between two readings of the agents' counters, the one probe that watches the idle
//! full mesh being pruned, the CPU profiles, and the idle deployment's cost. Each phase has its bar and checks for
//! an interrupt at least once a second.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_redis::AnyStore;
use mesh_supervisor::{ProcState, StateFile};
use tokio::task::JoinHandle;

use super::consensus::consensus_figures;
use super::cost::{costs, kind_of, process_cpu};
use super::deploy::Deployment;
use super::error::{Chain, Error};
use super::infra::Infra;
use super::interrupt::check_interrupted;
use super::plan::Plan;
use super::progress::{bar, done};
use super::stats::{AgentSnapshot, agent_totals, topology_figures, window_stats};
use crate::profile::{ProfileRequest, Profiler};
use crate::report::{Consensus, Idle, Join, Messages, Percentiles, ProfileSummary, Report, Sample, Topology};

/// How long the idle deployment is watched at most, after it settled (the measured window's length if shorter).
const IDLE_WINDOW: Duration = Duration::from_secs(20);

/// How often the pruning probe reads the topology manager's edge count.
const PRUNING_POLL: Duration = Duration::from_millis(200);

/// Idle edges are pruned this many decay intervals after they were built (the topology manager's rule).
const PRUNED_AFTER_INTERVALS: u32 = 21;

async fn connect(infra: &Infra) -> Result<AnyStore, Error> {
    AnyStore::connect(&infra.redis, None)
        .await
        .map_err(|source| Error::Store { url: mesh_transport::redact_url(&infra.redis), source })
}

/// When the mesh was ready: every agent live, and the full mesh built if it ever was complete at once.
struct Ramp {
    join: Join,
    converged_at: Option<Instant>,
    members_at: Option<Instant>,
}

/// Ramp-up: processes READY, then every agent live in the roster and the full mesh built.
async fn ramp_up(plan: &Plan, deployment: &mut Deployment, store: &AnyStore) -> Result<Ramp, Error> {
    let n = plan.agents;
    let full_mesh = n * (n - 1);
    let processes = plan.agent_processes() + 2;
    let pb = bar(u64::try_from(processes).unwrap_or(0), "starting");
    let ramp_deadline = deployment.spawned + plan.ramp_timeout;
    loop {
        let Some(state) = deployment.status()? else {
            if Instant::now() >= ramp_deadline {
                return Err(Error::SupervisorNoAnswer(plan.ramp_timeout));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            check_interrupted()?;
            continue;
        };
        let ready = state.processes.iter().filter(|p| p.state == ProcState::Ready).count();
        pb.set_position(u64::try_from(ready).unwrap_or(0));
        if let Some(failed) = state.processes.iter().find(|p| p.state == ProcState::Failed) {
            return Err(Error::ProcessFailed { name: failed.name.clone(), log: deployment.log(&failed.name) });
        }
        if ready == processes {
            break;
        }
        check_interrupted()?;
        if Instant::now() >= ramp_deadline {
            return Err(Error::NotReady { ready, processes, timeout: plan.ramp_timeout });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    done(&pb, format!("READY after {:.1} s", deployment.spawned.elapsed().as_secs_f64()));
    let pb = bar(u64::try_from(full_mesh).unwrap_or(0), "joining");
    let mut converged_at = None;
    let mut members_at = None;
    let (mut live, mut edges, mut most_edges) = (0, 0, 0);
    while Instant::now() < ramp_deadline {
        (live, edges, _) = topology_figures(store, &plan.prefix).await;
        pb.set_position(u64::try_from(edges).unwrap_or(0));
        pb.set_message(format!("{live}/{n} agents live"));
        if live == n && members_at.is_none() {
            members_at = Some(Instant::now());
        }
        if live == n && edges == full_mesh {
            converged_at = Some(Instant::now());
            break;
        }
        // Every agent is in, but the first joiners' idle edges were pruned before the last joined: the full mesh
        // never exists at once (a ramp-up longer than 21 decay intervals). Membership is the convergence then.
        if live == n && edges < most_edges {
            break;
        }
        most_edges = most_edges.max(edges);
        check_interrupted()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since_spawn = |t: Instant| t.duration_since(deployment.spawned).as_secs_f64();
    let join_s = converged_at.map(since_spawn);
    let members_s = members_at.map(since_spawn);
    done(
        &pb,
        match (join_s, members_s) {
            (Some(s), _) => format!("full mesh of {full_mesh} edges after {s:.1} s"),
            (None, Some(m)) => format!(
                "all {n} agents live after {m:.1} s; pruning began before the full mesh was complete ({most_edges} \
                 of {full_mesh} edges at most)"
            ),
            (None, None) => format!("NOT converged: {live}/{n} live, {edges}/{full_mesh} edges"),
        },
    );
    Ok(Ramp {
        join: Join {
            converged_s: join_s,
            members_s,
            live_agents: live,
            edges: edges.max(most_edges),
            full_mesh_edges: full_mesh,
        },
        converged_at,
        members_at,
    })
}

/// The one watch for the idle full mesh being pruned: from the moment the mesh was built, it reads the topology
/// manager's edge count until fewer than the full mesh remain, through the warm-up, the window and (bounded) after.
/// A mesh that never converged is not watched: there is no moment to count from.
struct PruningProbe {
    built: Instant,
    watch: Option<Watch>,
}

/// The probe's task, stopped when dropped (a run that fails or is interrupted stops watching too).
struct Watch(JoinHandle<Instant>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PruningProbe {
    /// Starts watching the mesh built at `built` (if it converged), reading `prefix`'s figures from `store`.
    fn start(store: &AnyStore, prefix: &str, full_mesh: usize, ramp: &Ramp, built: Instant) -> Self {
        let converged = ramp.converged_at.is_some() || ramp.members_at.is_some();
        let watch = converged.then(|| {
            let (store, prefix) = (store.clone(), prefix.to_owned());
            Watch(tokio::spawn(async move {
                loop {
                    let (_, edges, _) = topology_figures(&store, &prefix).await;
                    if edges < full_mesh {
                        return Instant::now();
                    }
                    tokio::time::sleep(PRUNING_POLL).await;
                }
            }))
        });
        Self { built, watch }
    }

    /// Seconds from the mesh built to the first edge seen pruned, if that was seen by `until`; waits for it until
    /// then (an interrupt ends the wait).
    async fn pruned_after_s(self, until: Instant) -> Result<Option<f64>, Error> {
        let Some(mut watch) = self.watch else { return Ok(None) };
        let seen = loop {
            if watch.0.is_finished() {
                break (&mut watch.0).await.ok();
            }
            if Instant::now() >= until {
                break None;
            }
            tokio::time::sleep(PRUNING_POLL).await;
            check_interrupted()?;
        };
        Ok(seen.filter(|t| *t <= until).map(|t| t.duration_since(self.built).as_secs_f64()))
    }
}

/// The deployment with no traffic: what the agents, managers and broker cost while nothing happens.
pub(crate) async fn measure_idle(plan: &Plan, infra: &Infra, deployment: &mut Deployment) -> Result<Idle, Error> {
    let store = connect(infra).await?;
    let ramp = ramp_up(plan, deployment, &store).await?;
    if ramp.members_at.is_none() {
        return Err(Error::IdleNotConverged { live: ramp.join.live_agents, agents: plan.agents });
    }
    // Let the ramp-up's own work (joins, the full mesh's edge events) drain before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = IDLE_WINDOW.min(plan.duration);
    let pb = bar(window.as_secs(), "idle");
    let cpu_start = process_cpu(&deployment.state()?, infra);
    let started = Instant::now();
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        check_interrupted()?;
        pb.inc(1);
    }
    let seconds = started.elapsed().as_secs_f64();
    let state = deployment.state()?;
    let cpu_end = process_cpu(&state, infra);
    let cost = costs(&state, infra, &cpu_start, &cpu_end);
    let cores = |kind: &str| cost.iter().find(|c| c.kind == kind).map_or(0.0, |c| c.cpu_s / seconds);
    let agent_cores = cores("agent");
    #[expect(clippy::cast_precision_loss, reason = "figures for display")]
    let idle = Idle {
        agents: plan.agents,
        seconds,
        agent_cores,
        agent_ms_per_s: agent_cores * 1000.0 / plan.agent_processes().max(1) as f64,
        topology_cores: cores("topology"),
        consensus_cores: cores("consensus"),
        kafka_cores: cores("kafka"),
        agent_peak_rss_mib: cost.iter().find(|c| c.kind == "agent").map_or(0.0, |c| c.peak_rss_mib_max),
    };
    done(&pb, format!("{:.3} of a core for {} idle agents", idle.agent_cores, plan.agents));
    Ok(idle)
}

/// The traffic run on a started deployment: ramp-up, warm-up, the measured window, the consensus figures read
/// back, the pruning and the cost, into `report`; profiles into `report_dir` if the plan asks for them.
pub(crate) async fn measure_mesh(
    plan: &Plan,
    infra: &Infra,
    deployment: &mut Deployment,
    report: &mut Report,
    report_dir: Option<&Path>,
) -> Result<(), Error> {
    let n = plan.agents;
    let full_mesh = n * (n - 1);
    let store = connect(infra).await?;
    let ramp = ramp_up(plan, deployment, &store).await?;
    let mesh_built = ramp.converged_at.or(ramp.members_at).unwrap_or_else(Instant::now);
    let pruning = PruningProbe::start(&store, &plan.prefix, full_mesh, &ramp, mesh_built);
    report.join = ramp.join;

    // Warm-up, then the window: cumulative agent figures at both ends, subtracted.
    let pb = bar(plan.warmup.as_secs(), "warm-up");
    let warm_end = Instant::now() + plan.warmup;
    while Instant::now() < warm_end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        check_interrupted()?;
        pb.inc(1);
    }
    done(&pb, format!("{:.0} s", plan.warmup.as_secs_f64()));
    let start = agent_totals(&store, plan, true).await;
    let window_start = Instant::now();
    let window_start_ms = mesh_node::now_ms();
    let state = deployment.state()?;
    let cpu_start = process_cpu(&state, infra);
    // A profile that cannot be taken costs the run its flame graphs, not its figures.
    let profiler = match (plan.profile, report_dir) {
        (true, Some(dir)) => start_profiles(&state, infra, dir)
            .map_err(|e| eprintln!("warning: no profiles in this run: {}", Chain(&e)))
            .ok(),
        _ => None,
    };
    let pb = bar(plan.duration.as_secs(), "measuring");
    let mut timeline = Vec::new();
    // Delivered within the window so far, and when.
    let mut last = (0u64, Instant::now());
    while window_start.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        check_interrupted()?;
        let now = agent_totals(&store, plan, false).await;
        let dt = last.1.elapsed().as_secs_f64();
        let so_far = now.since(&start).0.delivered;
        #[expect(clippy::cast_precision_loss, reason = "rates for display")]
        let rate = so_far.saturating_sub(last.0) as f64 / dt.max(1e-3);
        timeline.push(Sample { t_s: window_start.elapsed().as_secs_f64(), mesh_per_s: rate });
        last = (so_far, Instant::now());
        pb.set_position(window_start.elapsed().as_secs());
        pb.set_message(format!("{rate:.0} msg/s delivered"));
    }
    // Read at once: what follows (the profiles written, 500 agents' counters read back) is the bench's own work, and
    // on an overloaded machine it took longer than the window itself, whose CPU it then doubled.
    let state = deployment.state()?;
    let cpu_end = process_cpu(&state, infra);
    // Pruning seen by the end of the window counts; with the probe on, so does pruning seen until its deadline.
    let prune_deadline = mesh_built + plan.decay_interval * (PRUNED_AFTER_INTERVALS + 2) + Duration::from_secs(5);
    let watch_until = if plan.probe_pruning { prune_deadline.max(Instant::now()) } else { Instant::now() };
    if let (Some(p), Some(dir)) = (profiler, report_dir) {
        match finish_profiles(p, dir) {
            Ok(profiles) => report.profiles = profiles,
            Err(e) => eprintln!("warning: no profiles in this run: {}", Chain(&e)),
        }
    }
    // Agents publish every second: wait one more so the last second of the window is in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let end = agent_totals(&store, plan, true).await;
    let window_s = window_start.elapsed().as_secs_f64();
    let window_end_ms = mesh_node::now_ms();
    let (window, restarted) = end.since(&start);
    done(&pb, format!("{} messages delivered", window.delivered));
    if restarted > 0 {
        eprintln!("warning: {restarted} agents restarted during the window; their figures count from their restart");
    }

    let AgentSnapshot { delivered, delivery, round_trip, delivered_per_s, shed, .. } = window;
    // Each agent's count over the time between its two writes; over the bench's own window only if no agent wrote
    // twice (the counters were up to a second old at either end: a 10,000 msg/s run read as 9,831 that way).
    #[expect(clippy::cast_precision_loss, reason = "rates for display")]
    let delivered_per_s = if delivered_per_s > 0.0 { delivered_per_s } else { delivered as f64 / window_s };
    report.messages = Messages {
        delivered,
        delivered_per_s,
        end_to_end: Percentiles::of(delivery.histogram()),
        round_trip: Percentiles::of(round_trip.histogram()),
        shed,
    };
    report.timeline = timeline;
    // Read back from a broker the run may have overloaded: a few tries, then the run keeps its other figures.
    let mut tries = 0;
    report.consensus = loop {
        match consensus_figures(infra, plan, window_start_ms, window_end_ms).await {
            Ok(figures) => break figures,
            Err(e) if tries < 3 => {
                tries += 1;
                eprintln!("warning: reading the proposals and decisions back failed (try {tries} of 4): {}", Chain(&e));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                eprintln!("warning: no consensus figures in this run: {}", Chain(&e));
                break Consensus::default();
            }
        }
    };

    let pruned_after_s = pruning.pruned_after_s(watch_until).await?;
    let (_, edges_now, reduction) = topology_figures(&store, &plan.prefix).await;
    report.topology = Topology {
        pruned_after_s,
        expected_prune_s: plan.decay_interval.as_secs_f64() * f64::from(PRUNED_AFTER_INTERVALS),
        edges: edges_now,
        reduction_vs_full_mesh: reduction,
    };
    report.cost = costs(&state, infra, &cpu_start, &cpu_end);
    report.window_stats = window_stats(&store, &plan.prefix).await;
    Ok(())
}

/// Starts a CPU profile of each kind of process of the deployment (and the local broker and Redis).
fn start_profiles(state: &StateFile, infra: &Infra, dir: &Path) -> Result<Profiler, Error> {
    let mut kinds: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in &state.processes {
        if let Some(pid) = p.pid {
            kinds.entry(kind_of(&p.name).to_owned()).or_default().push(pid);
        }
    }
    kinds.entry("kafka".to_owned()).or_default().extend(&infra.broker_pids);
    if let Some(pid) = infra.redis_pid {
        kinds.entry("redis".to_owned()).or_default().push(pid);
    }
    kinds.retain(|_, pids| !pids.is_empty());
    let requests: Vec<ProfileRequest> = kinds.into_iter().map(|(kind, pids)| ProfileRequest { kind, pids }).collect();
    crate::profile::ensure_perf().map_err(Error::Perf)?;
    let out = dir.join("profiles");
    std::fs::create_dir_all(&out).map_err(|source| Error::CreateDir { path: out.clone(), source })?;
    Profiler::start(&requests, &out, 99).map_err(Error::StartPerf)
}

/// Folds the profiles into flame graphs, named relative to the report directory.
fn finish_profiles(profiler: Profiler, dir: &Path) -> Result<Vec<ProfileSummary>, Error> {
    let done = profiler.finish().map_err(Error::FoldProfiles)?;
    Ok(done
        .into_iter()
        .map(|k| ProfileSummary {
            svg: k.svg.strip_prefix(dir).unwrap_or(&k.svg).display().to_string(),
            kind: k.kind,
            processes: k.processes,
            samples: k.samples,
            top: k.top,
        })
        .collect())
}
