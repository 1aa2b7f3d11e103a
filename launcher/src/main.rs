//! `dosrun`: the job launcher of dos.
//!
//! ```text
//! dosrun [-n N] [-H HOSTS | --hostfile FILE] [--map-by slot|node] [-N N] [--oversubscribe]
//!        [--bind-to core|numa|none] [--report-bindings] [--tag-output] [--timeout SECS]
//!        [--grace MS] [--stall-timeout SECS] [-x NAME[=VALUE]]
//!        [--fs DIR [--fs-stage-out PATH]]
//!        [--max-restarts K [--spares N] [--restart-np M]] [--mpi pmi1|none]
//!        [--] PROGRAM [ARGS]
//! dosrun --topology | --info | --help | --version
//! ```
//!
//! Modules, in the order a job goes through them:
//! * `args`: the command line (mpirun's conventions);
//! * `hosts`: `-H` lists and hostfiles, which hosts are this machine;
//! * `slurm`: inside a Slurm allocation, its hosts and slots, `-n`'s
//!   default, node agents started through srun;
//! * `plan`: which host runs which rank;
//! * `topology`, `bind`: this machine's cores through hwloc, and the CPUs
//!   each local rank is bound to;
//! * `pmi_server`: the wire-up service the ranks connect to (`dos::pmi`);
//! * `pmi1`: MPICH programs (found in the program's ELF `DT_NEEDED`, or
//!   `--mpi pmi1`): a bridge per rank that serves it PMI-1 on `PMI_FD`
//!   over dos's wire-up (`dosrun --pmi1-bridge`, hidden);
//! * `refusals`: the rate-limited log of refused connections (wire-up
//!   socket and control port);
//! * `spawn`: starting a rank (a vfork-style `clone`, own process group,
//!   parent-death signal, stdio pipes, the node's shared segment inherited);
//! * `start`: starting one node's ranks (program, bindings, segment,
//!   environment, spawns, binding reports), the same here and in a node
//!   agent;
//! * `supervise`: the poll loop: exits, output relay with back-pressure,
//!   signals, stopped ranks (`--stall-timeout`), stopping the job on
//!   failure, which rank to blame, exit status;
//! * `agent`: node agents on the other hosts: `agent::pool`, dosrun's side
//!   (launch through ssh, authenticated control connections, heartbeats),
//!   `agent::node`, the agent itself (`dosrun --agent`, hidden), and
//!   `agent::wire`, `agent::ctl`, their control protocol;
//! * `restart`: `--max-restarts`: which failures are restarted, where the
//!   ranks of a lost host go (spares, free slots, `--restart-np`), the
//!   ranks' `DOS_RUN_ATTEMPT` and `DOS_CKPT_ID`, the one-line report; the
//!   loop over attempts is [`run`], each attempt a whole run ([`run_once`]);
//! * `stdio`: line splitting, tags and output queues;
//! * `fsjob`: `--fs DIR`, a dosfs server per node inside dosrun and the
//!   node agents, its address file for the ranks, stage-out at the end;
//! * `info`: `dosrun --info`;
//! * `sys`: the Linux calls.

mod acceptor;
mod agent;
mod args;
mod bind;
mod fsjob;
mod hosts;
mod info;
mod plan;
mod pmi1;
mod pmi_server;
mod refusals;
mod restart;
mod slurm;
mod spawn;
mod spawn_pool;
mod start;
mod stdio;
mod supervise;
mod sys;
mod topology;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::time::{Duration, Instant};

use agent::pool::{Agents, AgentsConfig};
use agent::wire::Assign;

use dos::config::Config;
use dos::pmi::Secret;

use args::{Action, RunOpts};
use bind::CpuMask;
use hosts::{Host, HostKind, LocalHost};
use plan::{Plan, Request};
use restart::HostPool;
use spawn::{SpawnError, Spawned};
use start::{JobEnv, Node, Outcome, Side};
use supervise::{Ended, Supervisor, Watch, STATUS_INTERNAL, STATUS_USAGE};
use sys::SignalFd;
use topology::Topology;

fn main() {
    dos::log::install_from_env();
    if agent::node::is_agent_mode(std::env::args_os().nth(1).as_deref()) {
        std::process::exit(agent::node::run());
    }
    if pmi1::is_bridge_mode(std::env::args_os().nth(1).as_deref()) {
        std::process::exit(pmi1::run(std::env::args_os().collect()));
    }
    let alloc = slurm::Allocation::from_env(|n| std::env::var(n).ok());
    let in_allocation = !matches!(alloc, Ok(None));
    let code = match args::parse_in(std::env::args_os().skip(1), in_allocation) {
        Ok(Action::Help) => print_out(&args::help()),
        Ok(Action::Version) => print_out(&format!("dosrun {}\n", env!("CARGO_PKG_VERSION"))),
        Ok(Action::Info) => print_out(&info::render(|n| std::env::var(n).ok())),
        Ok(Action::Topology) => match Topology::load() {
            Ok(t) => {
                let allowed = CpuMask::current().ok().map(|m| m.pus());
                print_out(&t.render(&sys::hostname(), allowed.as_deref()))
            }
            Err(e) => fail(STATUS_INTERNAL, &e.to_string()),
        },
        Ok(Action::Run(o)) => run(*o, &alloc),
        Err(e) => fail(STATUS_USAGE, &format!("{e} (see dosrun --help)")),
    };
    std::process::exit(code);
}

fn print_out(s: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Prints `dosrun: msg` on stderr; returns `code`.
fn fail(code: i32, msg: &str) -> i32 {
    let _ = writeln!(std::io::stderr().lock(), "dosrun: {msg}");
    code
}

/// The hosts to place the ranks on, the request, and whether the hosts are
/// a Slurm allocation's: the hosts of `-H` or the hostfile, else those of
/// the allocation dosrun runs in (`alloc`, whose task count is then `-n`'s
/// default), else this machine (`host`), taking as many ranks as asked
/// for: locally dosrun does not insist on `--oversubscribe` (its default
/// slots are the CPUs it may use).
fn host_list(
    o: &RunOpts,
    host: &str,
    alloc: &Result<Option<slurm::Allocation>, slurm::SlurmError>,
) -> Result<(Vec<Host>, Request, bool), String> {
    let mut req = Request {
        np: o.np,
        per_node: o.per_node,
        map_by: o.map_by,
        oversubscribe: o.oversubscribe,
    };
    let mut from_slurm = false;
    let entries = match &o.hostfile {
        Some(path) => hosts::read_hostfile(path).map_err(|e| e.to_string())?,
        None if o.hosts.is_empty() => match alloc {
            Ok(None) => Vec::new(),
            Ok(Some(a)) => {
                from_slurm = true;
                if req.np.is_none() && req.per_node.is_none() {
                    req.np = Some(a.tasks());
                }
                a.hosts.clone()
            }
            Err(e) => return Err(format!("inside a Slurm allocation: {e}")),
        },
        None => o.hosts.clone(),
    };
    let list = if entries.is_empty() {
        req.oversubscribe = true;
        vec![Host {
            name: host.to_string(),
            kind: HostKind::Local,
            slots: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_slots: None,
        }]
    } else {
        let local = LocalHost::current(host.to_string());
        hosts::merge(&entries, &local, hosts::system_resolve).map_err(|e| e.to_string())?
    };
    Ok((list, req, from_slurm))
}

/// How node agents are started and watched, from the options.
fn agents_config(o: &RunOpts) -> Result<AgentsConfig, String> {
    let agent_path = match &o.agent_path {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find dosrun's own path for the node agents: {e}"))?,
    };
    Ok(AgentsConfig {
        launch: o
            .launch_agent
            .clone()
            .unwrap_or_else(|| ["ssh", "-o", "BatchMode=yes"].map(str::to_string).to_vec()),
        agent_path,
        heartbeat: o.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT),
        timeout: o.heartbeat_timeout.unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT),
        start_timeout: AGENT_START_TIMEOUT,
    })
}

/// Time between heartbeats of dosrun and its agents.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(200);
/// Silence after which a host is lost.
const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node agent may take to connect after its launch (ssh's own
/// connection set-up included).
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks, once for the job, that the transports the ranks may use can
/// connect them (rather than every rank failing alike): the ranks see
/// `DOS_TRANSPORTS` from the exports (`--transports`, `-x`) or dosrun's
/// environment. Needing the network with verbs alone needs an RDMA device
/// here (as `dosrun --info` shows) and a dosrun built with verbs.
fn check_transports(
    exports: &[(OsString, OsString)],
    cfg: &Config,
    nnodes: usize,
) -> Result<(), String> {
    let t = match exports.iter().rev().find(|(k, _)| k == "DOS_TRANSPORTS") {
        Some((_, v)) => {
            let v = v.to_string_lossy();
            dos::config::Transports::parse(&v).ok_or_else(|| {
                format!("DOS_TRANSPORTS={v:?} is not a comma list of shm, tcp, roce and verbs")
            })?
        }
        None => cfg.transports,
    };
    let needs_network = nnodes > 1 || !t.shm;
    if !needs_network {
        return Ok(());
    }
    if !t.network() {
        return Err(
            "the transports allowed (shm) cannot reach the ranks of other hosts: allow tcp, roce or verbs"
                .into(),
        );
    }
    if !t.tcp && !t.roce {
        if let Some(why) = info::verbs_unavailable() {
            return Err(format!(
                "the transports allowed need verbs, but {why}: allow tcp or roce (see dosrun --info)"
            ));
        }
    }
    Ok(())
}

/// Descriptors dosrun holds per local rank: its pidfd, its stdout and stderr
/// pipes, its wire-up connection.
const FDS_PER_RANK: u64 = 4;
/// Descriptors for the rest: standard streams, listeners, signalfd, agents,
/// strangers' connections.
const FDS_RESERVE: u64 = 128;

/// Runs a job, restarting it after failures (`--max-restarts`, see
/// `restart`); returns dosrun's exit status.
fn run(mut o: RunOpts, alloc: &Result<Option<slurm::Allocation>, slurm::SlurmError>) -> i32 {
    sys::ensure_std_fds_open();

    // Everything that can be checked is checked before anything starts.
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(STATUS_USAGE, &e.to_string()),
    };
    let host = sys::hostname();
    let (list, req, from_slurm) = match host_list(&o, &host, alloc) {
        Ok(x) => x,
        Err(e) => return fail(STATUS_USAGE, &e),
    };
    // The allocation's hosts: node agents through srun unless told otherwise.
    if from_slurm && o.launch_agent.is_none() {
        o.launch_agent = Some(slurm::srun_launch());
    }
    // --mpi pmi1, or a program linking MPICH without --mpi: every rank runs
    // through its PMI-1 bridge, dosrun itself; the program is looked up
    // here first (if ranks may run here), as it would be without the bridge.
    let here = list.iter().any(|h| h.kind == HostKind::Local);
    let resolved = here.then(|| {
        let exports = args::resolve_exports(&o.exports, |n| std::env::var_os(n));
        spawn::resolve_program(&o.program, start::ranks_path(&exports).as_deref())
    });
    let pmi1 = match o.pmi1 {
        Some(b) => b,
        None => matches!(&resolved, Some(Ok(p)) if pmi1::links_mpich(p)),
    };
    o.pmi1 = Some(pmi1);
    if pmi1 {
        if let Some(Err(e)) = resolved {
            return fail(STATUS_USAGE, &e.to_string());
        }
        let me = match &o.agent_path {
            Some(p) => p.clone(),
            None => match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    return fail(
                        STATUS_INTERNAL,
                        &format!("cannot find dosrun's own path for the PMI-1 bridges: {e}"),
                    )
                }
            },
        };
        o.args = pmi1::bridge_args(&o.program, &o.program, &o.args);
        o.program = me.into_os_string();
    }
    let mut pool = match HostPool::new(list, o.spares) {
        Ok(p) => p,
        Err(e) => return fail(STATUS_USAGE, &e.to_string()),
    };
    let mut plan = match Plan::build(pool.active(), req) {
        Ok(p) => p,
        Err(e) => return fail(STATUS_USAGE, &e.to_string()),
    };
    // One checkpoint id for every attempt: the user's, else a new one.
    let exports = args::resolve_exports(&o.exports, |n| std::env::var_os(n));
    let ckpt_id = match exports
        .iter()
        .rev()
        .find(|(k, _)| k == restart::ENV_CKPT_ID)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os(restart::ENV_CKPT_ID))
    {
        Some(v) => v,
        None => match sys::random_u64() {
            Ok(r) => format!("{r:016x}").into(),
            Err(e) => return fail(STATUS_INTERNAL, &format!("getrandom: {e}")),
        },
    };
    let mut pending: Option<(String, Instant)> = None;
    let mut attempt = 0;
    loop {
        let mut extra: Vec<(OsString, OsString)> = vec![
            (restart::ENV_RUN_ATTEMPT.into(), attempt.to_string().into()),
            (restart::ENV_CKPT_ID.into(), ckpt_id.clone()),
        ];
        if o.pmi1 == Some(true) {
            let mut node_of = vec![0; plan.size()];
            for (id, n) in plan.nodes().iter().enumerate() {
                for &r in &n.ranks {
                    if let Some(x) = node_of.get_mut(r) {
                        *x = id;
                    }
                }
            }
            extra.push((
                pmi1::ENV_PROCESS_MAPPING.into(),
                dos::pmi::simple::process_mapping(&node_of).into(),
            ));
        }
        let report = pending.take();
        let head = report.as_ref().map(|(h, _)| h.clone());
        let ended = run_once(&o, &cfg, &host, &plan, &extra, report);
        if let (Some(head), false) = (head, ended.supervised) {
            // The restart could not even be set up: its line says so.
            let line = restart::report_line(&head, None, None);
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
        let Some(f) = ended.failure else {
            return ended.status;
        };
        if !f.restartable {
            return ended.status;
        }
        if attempt >= o.max_restarts {
            if o.max_restarts > 0 {
                fail(
                    ended.status,
                    &format!(
                        "no restarts left ({} made); exiting with the failure's status {}",
                        o.max_restarts, ended.status
                    ),
                );
            }
            return ended.status;
        }
        attempt += 1;
        match pool.replan(&plan, &f.lost, o.restart_np, req) {
            Ok(r) => {
                let head = restart::report_head(attempt, o.max_restarts, &f, &r.moves);
                pending = Some((head, f.at.unwrap_or_else(Instant::now)));
                plan = r.plan;
            }
            Err(e) => {
                return fail(
                    ended.status,
                    &format!(
                        "cannot restart: {e}; exiting with the failure's status {}",
                        ended.status
                    ),
                )
            }
        }
    }
}

/// One run of the job on `plan`, with `extra` exported to the ranks (they
/// replace exports of the same names); `report`: this run is a restart,
/// with the head of its report line and the failure's time.
fn run_once(
    o: &RunOpts,
    cfg: &Config,
    host: &str,
    plan: &Plan,
    extra: &[(OsString, OsString)],
    report: Option<(String, Instant)>,
) -> Ended {
    let ended = |status| Ended {
        status,
        failure: None,
        supervised: false,
    };
    let host = host.to_string();
    let nnodes = plan.nodes().len();
    // Each node's shared segment serves a bounded number of ranks: say so now,
    // for every node, rather than when a segment is made.
    for id in 0..nnodes {
        if let Err(e @ dos_transport::Error::TooManyLocalRanks { .. }) =
            dos_transport::shm::wire::Layout::new(plan.local_size(id), cfg.shm_ring_bytes)
        {
            return ended(fail(
                STATUS_USAGE,
                &format!("{e} (host {})", plan.nodes()[id].host),
            ));
        }
    }
    let remote: Vec<usize> = (0..nnodes).filter(|&n| !plan.nodes()[n].local).collect();
    let grace = o.grace.unwrap_or(Duration::from_millis(cfg.kill_grace_ms));
    let mut exports = args::resolve_exports(&o.exports, |n| std::env::var_os(n));
    exports.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    exports.extend_from_slice(extra);
    // --fs: the ranks of node N find the address file DIR/dosfs-N.addr in DOSFS.
    let fs_dir = match o.fs.as_deref().map(fsjob::absolute).transpose() {
        Ok(d) => d,
        Err(e) => return ended(fail(STATUS_USAGE, &e)),
    };
    let node_exports = |n: usize| {
        let mut e = exports.clone();
        if let Some(d) = &fs_dir {
            e.push((
                dos_fs::addrfile::ENV.into(),
                fsjob::addr_path(d, n).into_os_string(),
            ));
        }
        e
    };
    if let Err(e) = check_transports(&exports, cfg, nnodes) {
        return ended(fail(STATUS_USAGE, &e));
    }
    let agents_cfg = if remote.is_empty() {
        None
    } else {
        match agents_config(o) {
            Ok(c) => Some(c),
            Err(e) => return ended(fail(STATUS_USAGE, &e)),
        }
    };

    let local_node = plan.nodes().iter().position(|n| n.local);
    let local_size = local_node.map_or(0, |id| plan.local_size(id));
    let local_exports = node_exports(local_node.unwrap_or(nnodes));
    let no_ranks: &[usize] = &[];
    let node = Node {
        id: local_node.unwrap_or(nnodes),
        ranks: local_node.map_or(no_ranks, |id| &plan.nodes()[id].ranks),
        name: local_node.map_or(&host, |id| &plan.nodes()[id].host),
        hostname: &host,
        bind_to: o.bind_to,
        report_bindings: o.report_bindings,
        program: &o.program,
        argv0: &o.program,
        exports: &local_exports,
        shm_ring_bytes: cfg.shm_ring_bytes,
        topology_cache: cfg.topology_cache,
        spawn_threads: cfg.spawn_threads,
    };
    let (jobid, secret) = match (sys::random_u64(), Secret::generate()) {
        (Ok(j), Ok(s)) => (j, s),
        (Err(e), _) => return ended(fail(STATUS_INTERNAL, &format!("getrandom: {e}"))),
        (_, Err(e)) => return ended(fail(STATUS_INTERNAL, &format!("getrandom: {e}"))),
    };
    // The control port, on the address that reaches the remote hosts.
    let mut agents = None;
    if let (Some(acfg), Some(&first)) = (agents_cfg, remote.first()) {
        let h = &plan.nodes()[first].host;
        let ip = match hosts::system_resolve(h)
            .ok()
            .and_then(|a| a.first().copied())
            .ok_or_else(|| format!("cannot resolve host {h}"))
            .and_then(|a| {
                agent::pool::local_addr_towards(a)
                    .map_err(|e| format!("no route to host {h} ({a}): {e}"))
            }) {
            Ok(ip) => ip,
            Err(e) => return ended(fail(STATUS_USAGE, &e)),
        };
        match Agents::bind(ip, jobid, secret.clone(), acfg) {
            Ok(a) => agents = Some(a),
            Err(e) => {
                return ended(fail(
                    STATUS_INTERNAL,
                    &format!("cannot listen on a control port on {ip}: {e}"),
                ))
            }
        }
    }
    let node_addr = agents.as_ref().map(|a| a.addr().ip());
    let fs_job = match &fs_dir {
        None => None,
        Some(dir) => {
            let made = dos_fs::target::FsId::generate()
                .map_err(|e| e.to_string())
                .and_then(|fsid| Ok((fsid, fsjob::fs_secret(&secret)?)));
            match made {
                Ok((fsid, fs_secret)) => {
                    if let Some(a) = agents.as_mut() {
                        a.set_fs(dir.clone().into_os_string(), nnodes as u32, fsid.0);
                    }
                    Some(fsjob::FsJob {
                        dir: dir.clone(),
                        fsid,
                        secret: fs_secret,
                        stage_out: o.fs_stage_out.clone(),
                        addr_out: o.fs_addr.clone(),
                    })
                }
                Err(e) => return ended(fail(STATUS_INTERNAL, &e)),
            }
        }
    };
    // Without ranks here the service serves nobody; its name is unused.
    let (pmi_name, service) = match start::serve(&node, jobid, &secret) {
        Ok(x) => x,
        Err(e) => return ended(fail(STATUS_INTERNAL, &e)),
    };
    // The program, the bindings and the segment of this node.
    let prepared = match local_node.map(|_| node.prepare(Side::Launcher)) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return ended(fail(e.status, &e.why)),
    };
    let signals = match SignalFd::new() {
        Ok(s) => s,
        Err(e) => return ended(fail(STATUS_INTERNAL, &format!("signalfd: {e}"))),
    };
    // As many descriptors as dosrun may have (the ranks get the limit
    // they had); then check that the ranks of this host fit.
    let nofile = sys::raise_nofile_limit();
    let need = FDS_PER_RANK * local_size as u64 + FDS_RESERVE;
    if let Some(limit) = sys::nofile_limit().filter(|&l| l < need) {
        return ended(fail(
            STATUS_USAGE,
            &format!(
                "{local_size} ranks on this host need about {need} open files in dosrun, but its limit (RLIMIT_NOFILE, hard limit included) is {limit}: raise it (ulimit -Hn) or run fewer ranks per host"
            ),
        ));
    }

    // The node agents first: their ssh connections set up while the local
    // ranks start.
    let mut start_error = None;
    if let Some(a) = agents.as_mut() {
        let cwd = std::env::current_dir()
            .map(|p| p.into_os_string())
            .unwrap_or_default();
        let ms = |d: Duration| d.as_millis().min(u32::MAX as u128) as u32;
        for &n in &remote {
            let node = &plan.nodes()[n];
            let assign = Assign {
                node: n as u32,
                nodes: nnodes as u32,
                size: plan.size() as u32,
                program: o.program.clone(),
                argv0: o.program.clone(),
                args: o.args.clone(),
                cwd: cwd.clone(),
                env: node_exports(n),
                ranks: node.ranks.iter().map(|&r| r as u32).collect(),
                bind: o.bind_to,
                report_bindings: o.report_bindings,
                grace_ms: ms(grace),
                heartbeat_ms: ms(o.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT)),
                heartbeat_timeout_ms: ms(o.heartbeat_timeout.unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT)),
            };
            if let Err(e) = a.launch(n, &node.host, assign) {
                start_error = Some(format!(
                    "cannot start the launch agent for host {}: {e}",
                    node.host
                ));
                break;
            }
        }
    }

    // --fs: every node's server up before any rank starts.
    let mut fs_end = None;
    if let (Some(f), None) = (fs_job, &start_error) {
        let ip = node_addr.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        match f.start(local_node, ip, nnodes, &remote, agents.as_mut()) {
            Ok(e) => fs_end = Some(e),
            Err(e) => {
                if let Some(mut a) = agents.take() {
                    // Agents still connecting are not waited for.
                    a.abandon_unconnected();
                    a.finish();
                }
                return ended(fail(STATUS_USAGE, &format!("--fs: {e}")));
            }
        }
    }

    let job = JobEnv {
        size: plan.size(),
        nodes: nnodes,
        jobid,
        pmi_name: &pmi_name,
        secret: &secret,
        node_addr,
    };
    // Reading a terminal that is not ours would stop dosrun (SIGTTIN).
    let relay_stdin = !sys::is_background_tty(rustix::stdio::stdin());

    let watch = Watch {
        grace,
        timeout: o.timeout,
        stall_timeout: o.stall_timeout,
        blame_window: Duration::from_millis(cfg.blame_window_ms),
    };
    let mut sup = Supervisor::new(
        plan,
        service,
        local_node,
        agents,
        signals,
        o.tag_output,
        watch,
    );
    if let Some(e) = start_error {
        sup.internal_failure(&e);
    }
    if let Some(e) = fs_end {
        sup.set_fs_end(e);
    }
    if let Some((head, since)) = report {
        sup.restart_report(head, since);
    }
    if let Some(p) = prepared {
        let mut out = LocalRanks {
            sup: &mut sup,
            host: node.name,
            program: &o.program,
        };
        p.start(&node, job, &o.args, relay_stdin, nofile, &mut out);
    }
    sup.run()
}

/// Where the ranks of dosrun's own host go as they start: to the supervisor,
/// their binding reports to stderr.
struct LocalRanks<'a> {
    sup: &'a mut Supervisor,
    host: &'a str,
    program: &'a OsStr,
}

impl Outcome for LocalRanks<'_> {
    fn started(&mut self, rank: usize, s: Spawned) {
        self.sup.add(rank, s);
    }

    fn report(&mut self, line: String) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn failed(&mut self, rank: usize, _not_started: &[usize], e: &SpawnError) {
        let prog = self.program.to_string_lossy();
        self.sup.start_failed(rank, self.host, &prog, e);
    }
}
