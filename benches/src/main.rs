//! `dosbench`: OSU-style benchmarks for dos (under `dosrun`) or MPI (under
//! `mpirun`, when built with `--features mpi`), and a raw TCP baseline
//! between two hosts (`dosbench raw-tcp`, no launcher). See `dosbench --help`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use dos_bench::cli::{self, Command};
use dos_bench::runtime::{self, Runtime};
use dos_bench::sched::Bench;
use dos_bench::{compare, rawtcp, suite};

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dosbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cmd = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(dos_bench::Error::Usage(msg)) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    match cmd {
        Command::Help => {
            print!("{}", cli::usage());
            Ok(())
        }
        Command::Compare { files } => {
            let outcomes = compare::load(&files)?;
            print!("{}", compare::markdown(&compare::compare(&outcomes)));
            Ok(())
        }
        Command::RawTcpServe { addr } => {
            let server = rawtcp::Server::bind(&addr)?;
            // On stdout, so that a script that asked for port 0 learns the port.
            println!("dosbench raw-tcp: listening on {}", server.local_addr()?);
            std::io::stdout().flush()?;
            let done = server.serve_one(rawtcp::ACCEPT_TIMEOUT)?;
            eprintln!(
                "dosbench raw-tcp: {} closed the connection after {} requests",
                done.peer, done.requests
            );
            Ok(())
        }
        Command::RawTcp { addr, opts, json } => {
            let mut client = rawtcp::Client::connect(&addr, rawtcp::CONNECT_RETRY)?;
            if !json {
                println!(
                    "# raw TCP {} -> {}: TCP_NODELAY, busy-polled ping-pong, blocking stream\n",
                    client.local_addr(),
                    client.peer_addr()
                );
            }
            for bench in [Bench::Latency, Bench::Bw] {
                let out = match bench {
                    Bench::Latency => client.latency(&opts),
                    _ => client.bw(&opts),
                }
                .with_context(|| format!("raw-tcp {}", bench.name()))?;
                let mut stdout = std::io::stdout().lock();
                if json {
                    writeln!(stdout, "{}", out.json())?;
                } else {
                    writeln!(stdout, "{}", out.table())?;
                }
                stdout.flush()?;
            }
            Ok(())
        }
        Command::Rpc { opts, json } => rpc_main(&opts, json, false),
        Command::Dsm { opts, json } => rpc_main(&opts, json, true),
        Command::Ckpt { size, reps, dir } => ckpt_main(size, reps, dir),
        Command::Io { opts, json } => {
            let rt = runtime::init().context("joining the job")?;
            match dos_bench::io::run(&rt, &opts) {
                Ok(Some(out)) => {
                    let mut stdout = std::io::stdout().lock();
                    if json {
                        writeln!(stdout, "{}", out.json())?;
                    } else {
                        write!(stdout, "{}", out.table())?;
                    }
                    stdout.flush()?;
                }
                Ok(None) => {}
                Err(e) => {
                    let msg = format!(
                        "rank {}: io failed: {:#}",
                        rt.rank(),
                        anyhow::Error::from(e)
                    );
                    rt.abort(1, &msg);
                }
            }
            rt.finalize().context("leaving the job")?;
            Ok(())
        }
        Command::Md { opts, json } => {
            let rt = runtime::init().context("joining the job")?;
            match dos_bench::md::run(&rt, &opts) {
                Ok(Some(out)) => {
                    let mut stdout = std::io::stdout().lock();
                    if json {
                        writeln!(stdout, "{}", out.json())?;
                    } else {
                        write!(stdout, "{}", out.table())?;
                    }
                    stdout.flush()?;
                }
                Ok(None) => {}
                Err(e) => {
                    let msg = format!(
                        "rank {}: md failed: {:#}",
                        rt.rank(),
                        anyhow::Error::from(e)
                    );
                    rt.abort(1, &msg);
                }
            }
            rt.finalize().context("leaving the job")?;
            Ok(())
        }
        Command::Hello => {
            let rt = runtime::init().context("joining the job")?;
            if rt.rank() == 0 {
                println!("hello from {} ranks ({})", rt.size(), rt.name());
            }
            rt.finalize().context("leaving the job")?;
            Ok(())
        }
        Command::Run {
            benches,
            opts,
            json,
        } => {
            let rt = runtime::init().context("joining the job")?;
            for b in benches {
                match suite::run(&rt, b, &opts) {
                    Ok(Some(out)) => {
                        let mut stdout = std::io::stdout().lock();
                        if json {
                            writeln!(stdout, "{}", out.json())?;
                        } else {
                            writeln!(stdout, "{}", out.table())?;
                        }
                        stdout.flush()?;
                    }
                    Ok(None) => {}
                    // Every rank sees this one the same way: end cleanly.
                    Err(e @ dos_bench::Error::TooFewRanks { .. }) => {
                        if rt.rank() == 0 {
                            eprintln!("dosbench: {e}");
                        }
                        rt.finalize()?;
                        std::process::exit(2);
                    }
                    // Others may be waiting for this rank: end the whole job.
                    Err(e) => {
                        let msg = format!(
                            "rank {}: {b:?} failed: {:#}",
                            rt.rank(),
                            anyhow::Error::from(e)
                        );
                        rt.abort(1, &msg);
                    }
                }
            }
            rt.finalize().context("leaving the job")?;
            Ok(())
        }
    }
}

/// `dosbench rpc` (dos's RPC) or, with `dsm`, `dosbench dsm` (global arrays
/// and the lock), against a point-to-point ping-pong.
#[cfg(all(feature = "dos", not(feature = "mpi")))]
fn rpc_main(opts: &dos_bench::suite::Options, json: bool, dsm: bool) -> anyhow::Result<()> {
    let w = dos::init().context("joining the job")?;
    let name = if dsm { "dsm" } else { "rpc" };
    let run = if dsm {
        dos_bench::rpc::run_dsm
    } else {
        dos_bench::rpc::run
    };
    let rows = match run(&w, opts) {
        Ok(r) => r,
        Err(e @ dos_bench::Error::TooFewRanks { .. }) => {
            if w.rank() == 0 {
                eprintln!("dosbench: {e}");
            }
            w.finalize()?;
            std::process::exit(2);
        }
        Err(e) => w.abort(1, &format!("rank {}: {name} failed: {e:#}", w.rank())),
    };
    if w.rank() == 0 {
        let t = w.transport_name();
        let mut out = std::io::stdout().lock();
        if !json {
            writeln!(
                out,
                "# dosbench {name} (dos, {} ranks, {t}): ranks 0 and 1",
                w.size()
            )?;
            writeln!(out, "# {:<44}{:>16}", "What", "Mean")?;
        }
        for r in &rows {
            if json {
                writeln!(out, "{}", r.json(name, &t))?;
            } else {
                writeln!(out, "{:<46}{:>12.2} {}", r.what, r.value, r.unit)?;
            }
        }
    }
    w.finalize().context("leaving the job")?;
    Ok(())
}

/// `dosbench ckpt`: checkpoint bandwidth per level.
#[cfg(all(feature = "dos", not(feature = "mpi")))]
fn ckpt_main(size: usize, reps: usize, dir: Option<String>) -> anyhow::Result<()> {
    let w = dos::init().context("joining the job")?;
    let opts = dos_bench::ckpt::CkptOptions { size, reps, dir };
    let rows = match dos_bench::ckpt::run(&w, &opts) {
        Ok(r) => r,
        Err(e) => w.abort(1, &format!("rank {}: ckpt failed: {e}", w.rank())),
    };
    if w.rank() == 0 {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "# dosbench ckpt (dos, {} ranks, {}): {} per rank, median of {reps}",
            w.size(),
            w.transport_name(),
            size
        )?;
        for r in &rows {
            writeln!(out, "{:<36}{:>12.1} {}", r.what, r.value, r.unit)?;
        }
    }
    w.finalize().context("leaving the job")?;
    Ok(())
}

/// `dosbench ckpt` needs the dos build.
#[cfg(not(all(feature = "dos", not(feature = "mpi"))))]
fn ckpt_main(_size: usize, _reps: usize, _dir: Option<String>) -> anyhow::Result<()> {
    anyhow::bail!("ckpt measures dos::ckpt: it needs the default (dos) build of dosbench")
}

/// `dosbench rpc` and `dsm` need the dos build.
#[cfg(not(all(feature = "dos", not(feature = "mpi"))))]
fn rpc_main(_opts: &dos_bench::suite::Options, _json: bool, _dsm: bool) -> anyhow::Result<()> {
    anyhow::bail!(
        "rpc and dsm measure dos's own features: they need the default (dos) build of dosbench"
    )
}
