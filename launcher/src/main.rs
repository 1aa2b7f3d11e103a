//! `dosrun`: the job launcher of dos.
//!
//! ```text
//! dosrun [-n N] [-H HOSTS | --hostfile FILE] [--map-by slot|node] [-N N] [--oversubscribe]
//!        [--bind-to core|numa|none] [--report-bindings] [--tag-output] [--timeout SECS]
//!        [--grace MS] [-x NAME[=VALUE]] [--] PROGRAM [ARGS]
//! dosrun --topology | --info | --help | --version
//! ```
//!
//! Modules, in the order a job goes through them:
//! * `args`: the command line (mpirun's conventions);
//! * `hosts`: `-H` lists and hostfiles, which hosts are this machine;
//! * `plan`: which host runs which rank (ranks on other hosts are refused
//!   until node agents exist);
//! * `topology`, `bind`: this machine's cores through hwloc, and the CPUs
//!   each local rank is bound to;
//! * `pmi_server`: the wire-up service the ranks connect to (`dos::pmi`);
//! * `spawn`: starting a rank (own process group, parent-death signal,
//!   stdio pipes, the node's shared segment inherited);
//! * `supervise`: the poll loop: exits, output relay, signals, stopping the
//!   job on failure, exit status;
//! * `stdio`: line splitting, tags and output queues;
//! * `info`: `dosrun --info`;
//! * `sys`: the Linux calls.

mod args;
mod bind;
mod hosts;
mod info;
mod plan;
mod pmi_server;
mod spawn;
mod stdio;
mod supervise;
mod sys;
mod topology;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Duration;

use dos::config::Config;
use dos::pmi::{self, Secret};
use dos_transport::shm::Segment;

use args::{Action, RunOpts};
use bind::{BindTo, Binding, CpuMask};
use hosts::{Host, HostKind, LocalHost};
use plan::{Plan, Request};
use pmi_server::Service;
use spawn::Launcher;
use supervise::{Supervisor, STATUS_INTERNAL};
use sys::SignalFd;
use topology::Topology;

/// Exit status of a usage error.
const STATUS_USAGE: i32 = 2;

fn main() {
    let code = match args::parse(std::env::args_os().skip(1)) {
        Ok(Action::Help) => print_out(args::HELP),
        Ok(Action::Version) => print_out(&format!("dosrun {}\n", env!("CARGO_PKG_VERSION"))),
        Ok(Action::Info) => print_out(&info::render(|n| std::env::var(n).ok())),
        Ok(Action::Topology) => match Topology::load() {
            Ok(t) => {
                let allowed = CpuMask::current().ok().map(|m| m.pus());
                print_out(&t.render(&sys::hostname(), allowed.as_deref()))
            }
            Err(e) => fail(STATUS_INTERNAL, &e.to_string()),
        },
        Ok(Action::Run(o)) => run(o),
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

/// Places the ranks: on the hosts of `-H` or the hostfile, else all on
/// this machine (`host`), as many as asked for: locally dosrun does not
/// insist on `--oversubscribe` (its default slots are the CPUs it may use).
fn make_plan(o: &RunOpts, host: &str) -> Result<Plan, String> {
    let entries = match &o.hostfile {
        Some(path) => hosts::read_hostfile(path).map_err(|e| e.to_string())?,
        None => o.hosts.clone(),
    };
    let mut req = Request {
        np: o.np,
        per_node: o.per_node,
        map_by: o.map_by,
        oversubscribe: o.oversubscribe,
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
    Plan::build(&list, req).map_err(|e| e.to_string())
}

/// This machine's topology, restricted to the CPUs dosrun may use.
fn local_topology() -> Result<Topology, String> {
    let t = Topology::load().map_err(|e| e.to_string())?;
    Ok(match CpuMask::current() {
        Ok(m) => t.restrict(&m.pus()),
        Err(_) => t,
    })
}

/// Runs a job; returns dosrun's exit status.
fn run(o: RunOpts) -> i32 {
    sys::ensure_std_fds_open();

    // Everything that can be checked is checked before anything starts.
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(STATUS_USAGE, &e.to_string()),
    };
    let host = sys::hostname();
    let plan = match make_plan(&o, &host) {
        Ok(p) => p,
        Err(e) => return fail(STATUS_USAGE, &e),
    };
    if let Some(n) = plan.nodes().iter().find(|n| !n.local) {
        return fail(
            STATUS_USAGE,
            &format!(
                "remote hosts need node agents (not implemented yet): {}",
                n.host
            ),
        );
    }
    let grace = o.grace.unwrap_or(Duration::from_millis(cfg.kill_grace_ms));
    let exports = args::resolve_exports(&o.exports, |n| std::env::var_os(n));
    let path = exports
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"));
    let program = match spawn::resolve_program(&o.program, path.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(STATUS_USAGE, &e.to_string()),
    };

    // One node today: this machine, if it got any rank.
    let local_node = plan.nodes().iter().position(|n| n.local);
    let local_size = local_node.map_or(0, |id| plan.local_size(id));
    // The default policy binds only when ranks fit on the cores; with more
    // ranks than online CPUs it cannot, so skip loading the topology (hwloc
    // takes a few milliseconds, most of a job's start-up).
    let cannot_bind_by_default =
        o.bind_to.is_none() && !o.report_bindings && local_size > sys::online_cpus();
    let (topo, bindings) =
        if local_size == 0 || o.bind_to == Some(BindTo::None) || cannot_bind_by_default {
            (None, vec![Binding::unbound(); local_size])
        } else {
            match local_topology() {
                Ok(t) => match bind::bind_node(&t, &host, o.bind_to, local_size) {
                    Ok(b) => (Some(t), b),
                    Err(e) => return fail(STATUS_USAGE, &e.to_string()),
                },
                Err(e) if o.bind_to.is_some() => return fail(STATUS_INTERNAL, &e),
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "dosrun: warning: ranks are not bound: {e}"
                    );
                    (None, vec![Binding::unbound(); local_size])
                }
            }
        };
    let (jobid, secret) = match (sys::random_u64(), Secret::generate()) {
        (Ok(j), Ok(s)) => (j, s),
        (Err(e), _) => return fail(STATUS_INTERNAL, &format!("getrandom: {e}")),
        (_, Err(e)) => return fail(STATUS_INTERNAL, &format!("getrandom: {e}")),
    };
    let local_id = local_node.unwrap_or(0);
    let pmi_name = pmi::socket_name(jobid, local_id);
    let local_ranks: Vec<usize> =
        local_node.map_or(Vec::new(), |id| plan.nodes()[id].ranks.clone());
    let service = match Service::bind(&pmi_name, local_ranks, jobid, secret.clone()) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                STATUS_INTERNAL,
                &format!("cannot listen on the wire-up socket @{pmi_name}: {e}"),
            )
        }
    };
    // One segment per node; for now the only node is this host.
    let seg = match Segment::create(local_size, cfg.shm_ring_bytes) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                STATUS_INTERNAL,
                &format!("cannot create the shared segment: {e}"),
            )
        }
    };
    let signals = match SignalFd::new() {
        Ok(s) => s,
        Err(e) => return fail(STATUS_INTERNAL, &format!("signalfd: {e}")),
    };
    let nofile = sys::raise_nofile_limit();

    let mut env: Vec<(OsString, OsString)> = exports;
    env.extend(Launcher::job_env(
        plan.size(),
        plan.nodes().len(),
        jobid,
        &pmi_name,
        &secret,
        Some(seg.fd().as_raw_fd()),
    ));
    let launcher = Launcher {
        program,
        argv0: o.program.clone(),
        args: o.args,
        env,
        shm_fd: Some(seg.fd().as_raw_fd()),
        nofile,
    };
    // Reading a terminal that is not ours would stop dosrun (SIGTTIN).
    let relay_stdin = !sys::is_background_tty(0);

    let mut sup = Supervisor::new(service, signals, o.tag_output, grace, o.timeout);
    for p in local_node
        .into_iter()
        .flat_map(|id| plan.node_placements(id))
    {
        let host = plan.host_of(p.rank);
        let binding = bindings.get(p.local_rank);
        let stdin = relay_stdin && p.rank == 0;
        match launcher.spawn(
            p,
            plan.local_size(p.node_id),
            stdin,
            binding.and_then(Binding::mask),
        ) {
            Ok(s) => {
                if o.report_bindings {
                    let unbound = Binding::unbound();
                    let b = binding.unwrap_or(&unbound);
                    let line = b.report(&topo.clone().unwrap_or_default(), host, s.pid, p.rank);
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                }
                sup.add(p.rank, host, s)
            }
            Err(e) => {
                let prog = o.program.to_string_lossy();
                sup.start_failed(p.rank, host, &prog, &e);
                break;
            }
        }
    }
    // The ranks hold the segment now; dosrun does not need it.
    drop(seg);
    sup.run()
}
