//! The entry point: a run's phases in order. Infrastructure; on a fresh broker the unmeasured warm-up; the mesh
//! through the supervisor (or the peak search), measured; the idle deployment if asked; last, on the same broker
//! now idle and warm, the plain-Kafka baselines; then the verdicts and the outputs. Everything this run started is
//! stopped on the way out, whichever phase failed.

use mesh_proto::TopicNames;

use super::baseline::{run_baseline, run_fleet_baseline, typical_message_bytes, warm_broker};
use super::cgroup::RunCgroups;
use super::deploy::Deployment;
use super::error::{Chain, Error, OptionsError};
use super::infra::Infra;
use super::interrupt::watch_signals;
use super::judge::finish;
use super::measure::{measure_idle, measure_mesh};
use super::options::Options;
use super::output::{print, read_report, write_outputs};
use super::peak::run_peak_search;
use super::plan::Plan;
use crate::report::{Report, RunConfig, SCHEMA};

/// Runs `mesh bench` as `opts` asks: the table on stdout, the reports where asked. Flags that cannot be run fail
/// with [`Error::Options`] before anything starts.
pub fn run(opts: &Options) -> Result<(), Error> {
    let started_at_ms = mesh_node::now_ms();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut plan = Plan::new(opts, started_at_ms, cores)?;
    // Against the current directory: the deployment's supervisors run elsewhere and must find it.
    plan.state_dir = std::path::absolute(&plan.state_dir).map_err(|source| OptionsError::CurrentDir { source })?;
    let compare = match &opts.compare {
        Some(path) => Some((path.as_path(), read_report(path)?)),
        None => None,
    };
    // Made before the infrastructure, so dropped after it: a cgroup can go only once its processes have.
    let cgroups = if opts.client_cgroup {
        match RunCgroups::create() {
            Ok(cgroups) => {
                plan.client_cgroup = Some(cgroups.clients().to_path_buf());
                Some(cgroups)
            }
            Err(why) => {
                eprintln!(
                    "warning: the client processes share the CPU with the broker thread by thread ({why}): hundreds \
                     of them on this machine may starve it (run as root, or --no-client-cgroup to silence this)"
                );
                None
            }
        }
    } else {
        None
    };
    let mesh = mesh_config(&plan);
    std::fs::create_dir_all(&plan.state_dir)
        .map_err(|source| Error::CreateDir { path: plan.state_dir.clone(), source })?;
    let infra = Infra::start(opts, &plan, &mesh)?;
    if let Some(cgroups) = &cgroups
        && let Err(why) = cgroups.adopt_servers(infra.broker_pids.iter().copied().chain(infra.redis_pid))
    {
        eprintln!("warning: the broker and Redis share the CPU with the clients' cgroup as a whole ({why})");
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(Error::Runtime)?;

    runtime.spawn(watch_signals());
    let payload_bytes = typical_message_bytes();
    if !plan.broker_warmup.is_zero() {
        runtime.block_on(warm_broker(&infra, &plan, payload_bytes))?;
    }
    let mut report = Report {
        schema: SCHEMA.to_owned(),
        started_at_ms,
        version: opts.binary.version.clone(),
        config: RunConfig {
            agents: plan.agents,
            agents_per_process: plan.agents_per_process,
            agent_processes: plan.agent_processes(),
            infra: infra.label.to_owned(),
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            broker_warmup_s: plan.broker_warmup.as_secs_f64(),
            kafka_nodes: opts.brokers,
            hosts: opts.hosts,
            client_nice: plan.client_nice,
            client_cgroup: plan.client_cgroup.is_some(),
            task_rate_per_agent: plan.task_rate,
            offered_msgs_per_s: plan.offered_msgs_per_s,
            proposals_per_s: plan.proposals_per_s,
            messages_partitions: plan.partitions,
            decay_interval_ms: u64::try_from(plan.decay_interval.as_millis()).unwrap_or(u64::MAX),
            cores: plan.cores,
        },
        ..Report::default()
    };
    let binary = &opts.binary;
    if plan.peak_search {
        report.peak = Some(run_peak_search(&plan, &infra, binary, &runtime, payload_bytes, &mut report)?);
    } else if !opts.baseline_only {
        let mut deployment = Deployment::start(&plan, &infra, binary)?;
        let outcome =
            runtime.block_on(measure_mesh(&plan, &infra, &mut deployment, &mut report, opts.report.as_deref()));
        let stopped = deployment.stop();
        outcome?;
        stopped?;
        // After the traffic run, so that one always meets a fresh broker; a failure here loses only this figure.
        if plan.idle_phase {
            let idle_plan = plan.at_rate(0.0, "idle");
            let measured = infra
                .create_on_embedded(&mesh_node::topic_specs(&mesh_config(&idle_plan)))
                .and_then(|()| Deployment::start(&idle_plan, &infra, binary))
                .and_then(|mut deployment| {
                    let outcome = runtime.block_on(measure_idle(&idle_plan, &infra, &mut deployment));
                    let stopped = deployment.stop();
                    let idle = outcome?;
                    stopped?;
                    Ok(idle)
                });
            match measured {
                Ok(idle) => report.idle = Some(idle),
                Err(e) => eprintln!("idle run failed, its figures are missing from the report: {}", Chain(&e)),
            }
        }
    }
    // The baselines run after the mesh, on a broker that is warm (JIT, page cache) and idle again: run first, they
    // measured the broker's own start-up as much as Kafka.
    if !opts.no_baseline && !plan.peak_search {
        let (b, timeline) = runtime.block_on(run_baseline(&infra, &plan, payload_bytes))?;
        report.baseline = Some(b);
        report.baseline_timeline = timeline;
    }
    if !opts.no_baseline && plan.baseline_processes > 1 && !plan.peak_search {
        report.baseline_processes = Some(run_fleet_baseline(&infra, &plan, payload_bytes, binary)?);
    }
    finish(&mut report);
    print(&report, compare.as_ref().map(|(path, old)| (*path, old)));
    write_outputs(opts, &report)?;
    // The clients first, as on an early return: any still held by a task would log the broker's going as an outage.
    drop(runtime);
    drop(infra);
    Ok(())
}

/// The mesh a plan deploys, as far as its topics go: what the embedded broker must have created for it.
fn mesh_config(plan: &Plan) -> mesh_node::MeshConfig {
    mesh_node::MeshConfig {
        topics: TopicNames::new(plan.prefix.clone()),
        messages_partitions: plan.partitions,
        consensus_partitions: 4,
        ..mesh_node::MeshConfig::default()
    }
}
