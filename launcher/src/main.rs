//! `dosrun`: the job launcher of dos.
//!
//! ```text
//! dosrun -n N [--tag-output] [--timeout SECS] [--grace MS] [-x NAME[=VALUE]] [--] PROGRAM [ARGS]
//! ```
//!
//! Modules, in the order a job goes through them:
//! * `args`: the command line (mpirun's conventions);
//! * `plan`: which host runs which rank (today: all on this host);
//! * `pmi_server`: the wire-up service the ranks connect to (`dos::pmi`);
//! * `spawn`: starting a rank (own process group, parent-death signal,
//!   stdio pipes, the node's shared segment inherited);
//! * `supervise`: the poll loop: exits, output relay, signals, stopping the
//!   job on failure, exit status;
//! * `stdio`: line splitting, tags and output queues;
//! * `info`: `dosrun --info`;
//! * `sys`: the Linux calls.

mod args;
mod info;
mod plan;
mod pmi_server;
mod spawn;
mod stdio;
mod supervise;
mod sys;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Duration;

use dos::config::Config;
use dos::pmi;
use dos_transport::shm::Segment;

use args::{Action, RunOpts};
use plan::Plan;
use pmi_server::Service;
use spawn::Launcher;
use supervise::{Supervisor, STATUS_INTERNAL};
use sys::SignalFd;

/// Exit status of a usage error.
const STATUS_USAGE: i32 = 2;

fn main() {
    let code = match args::parse(std::env::args_os().skip(1)) {
        Ok(Action::Help) => print_out(args::HELP),
        Ok(Action::Version) => print_out(&format!("dosrun {}\n", env!("CARGO_PKG_VERSION"))),
        Ok(Action::Info) => print_out(&info::render(|n| std::env::var(n).ok())),
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

/// Runs a job; returns dosrun's exit status.
fn run(o: RunOpts) -> i32 {
    sys::ensure_std_fds_open();

    // Everything that can be checked is checked before anything starts.
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(STATUS_USAGE, &e.to_string()),
    };
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

    let host = sys::hostname();
    let plan = Plan::local(o.np, &host);
    let (jobid, secret) = match (sys::random_u64(), sys::random_u64()) {
        (Ok(j), Ok(s)) => (j, s),
        (Err(e), _) | (_, Err(e)) => return fail(STATUS_INTERNAL, &format!("getrandom: {e}")),
    };
    let pmi_name = pmi::socket_name(jobid);
    let service = match Service::bind(&pmi_name, plan.size(), secret) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                STATUS_INTERNAL,
                &format!("cannot listen on the wire-up socket @{pmi_name}: {e}"),
            )
        }
    };
    // One segment per node; for now the only node is this host.
    let local_size = plan.nodes().first().map_or(0, |n| n.ranks.len());
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
        jobid,
        &pmi_name,
        secret,
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
    for p in plan.ranks() {
        let host = plan.host_of(p.rank);
        match launcher.spawn(*p, plan.local_size(p.node_id), relay_stdin && p.rank == 0) {
            Ok(s) => sup.add(p.rank, host, s),
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
