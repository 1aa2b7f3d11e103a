//! A program for `dosrun --max-restarts` (the launcher's restart tests,
//! launcher/tests/restart.rs): it computes in steps, checkpoints every step
//! to files, resumes from the last complete checkpoint when restarted, and
//! can fail on purpose.
//!
//! ```text
//! restartcheck DIR STEPS [STEP_MS] [FAIL]
//! FAIL: kill@STEP:RANK | exit@STEP:RANK | kill-always@STEP:RANK | exit-always@STEP:RANK
//! dosrun -n 4 --max-restarts 3 target/debug/restartcheck /tmp/rc 40 20 kill@5:1
//! ```
//!
//! It talks to dosrun's wire-up service only (`dos::pmi::Client`): a fence
//! is its barrier and put/fence/get its allreduce. State lives in files under
//! `DIR/$DOS_CKPT_ID/`, so every attempt of one dosrun invocation (same
//! `DOS_CKPT_ID`) continues the same computation, on any host that shares
//! `DIR`:
//!
//! * `pid.ATTEMPT.RANK`: each rank's pid (`DOS_RUN_ATTEMPT`), for tests
//!   that kill a rank from outside, and `host.ATTEMPT.RANK` its host name;
//! * `state.RANK.STEP`: the rank's state after STEP;
//! * `failed_at`, `restored_at.ATTEMPT`: wall-clock nanoseconds of the
//!   failure on purpose and of rank 0's put after restoring (the recovery
//!   benchmark, ci/bench-recovery.sh);
//! * `commit`: the last step whose states every rank wrote; rank 0 writes it
//!   (atomically, by rename) between two fences, so that every rank knows it
//!   is durable before the next step, with the rank count that wrote it
//!   (`STEP SIZE`; a restart on another count starts over from step 0).
//!
//! Step `s` (from 1): every rank puts `(rank + 1) * s`, fences, sums the
//! values of all ranks (`sum`), and its state becomes `state * 1000003 +
//! sum + rank` (wrapping u64). At the end rank 0 prints
//! `restartcheck: OK result=R steps=S ranks=N attempt=A`, R the wrapping sum
//! of every rank's state ([`expected`] computes it). On a restart rank 0
//! first prints `restartcheck: attempt A resumed from step C` and, when C >
//! 0, puts the wire-up key `dos.ckpt.restored` with `restartcheck step C`:
//! the line dosrun reports as the checkpoint used.
//!
//! `FAIL` (in step STEP, after its first fence, so that on a restart rank
//! 0's put has reached dosrun first): the rank kills itself with SIGKILL or
//! exits with status 3 at STEP, on attempt 0 only, or on every attempt
//! (`-always`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use dos::pmi::Client;

/// The result of `steps` steps on `ranks` ranks (see the module docs).
pub fn expected(ranks: u64, steps: u64) -> u64 {
    let mut total = 0u64;
    for r in 0..ranks {
        let mut state = 0u64;
        for s in 1..=steps {
            let sum = s * ranks * (ranks + 1) / 2;
            state = state.wrapping_mul(1_000_003).wrapping_add(sum + r);
        }
        total = total.wrapping_add(state);
    }
    total
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Kill,
    Exit,
}

#[derive(Debug, Clone, Copy)]
struct Fail {
    how: How,
    step: u64,
    rank: usize,
    always: bool,
}

fn parse_fail(s: &str) -> Result<Fail, String> {
    let (what, at) = s.split_once('@').ok_or("FAIL: WHAT@STEP:RANK")?;
    let (step, rank) = at.split_once(':').ok_or("FAIL: WHAT@STEP:RANK")?;
    let (how, always) = match what {
        "kill" => (How::Kill, false),
        "exit" => (How::Exit, false),
        "kill-always" => (How::Kill, true),
        "exit-always" => (How::Exit, true),
        _ => return Err(format!("FAIL: unknown failure {what:?}")),
    };
    Ok(Fail {
        how,
        step: step.parse().map_err(|_| "FAIL: bad STEP")?,
        rank: rank.parse().map_err(|_| "FAIL: bad RANK")?,
        always,
    })
}

fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Result<Option<u64>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{}: not a number", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The committed step and the rank count that committed it.
fn read_commit(path: &Path) -> Result<Option<(u64, u64)>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bad = || format!("{}: not STEP SIZE", path.display());
    let (a, b) = text.trim().split_once(' ').ok_or_else(bad)?;
    Ok(Some((
        a.parse().map_err(|_| bad())?,
        b.parse().map_err(|_| bad())?,
    )))
}

/// The wall clock in nanoseconds since the epoch (the same on every host
/// of the namespace cluster).
fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A wire-up error: a peer failed (its fence cannot complete). The rank
/// waits before it exits, so that dosrun blames the peer, not this
/// consequence (it stops this rank meanwhile).
fn e2s(e: dos::Error) -> String {
    std::thread::sleep(Duration::from_millis(1000));
    e.to_string()
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: restartcheck DIR STEPS [STEP_MS] [FAIL]";
    let dir = PathBuf::from(args.first().ok_or(usage)?);
    let steps: u64 = args.get(1).ok_or(usage)?.parse().map_err(|_| usage)?;
    let step_ms: u64 = match args.get(2) {
        Some(v) => v.parse().map_err(|_| usage)?,
        None => 10,
    };
    let fail = args.get(3).map(|s| parse_fail(s)).transpose()?;
    let attempt: u64 = std::env::var("DOS_RUN_ATTEMPT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let id = std::env::var("DOS_CKPT_ID").unwrap_or_else(|_| "none".into());
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(format!(
            "DOS_CKPT_ID {id:?} is not usable as a directory name"
        ));
    }
    let dir = dir.join(id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    let mut pmi = Client::from_env()
        .map_err(e2s)?
        .ok_or("run me under dosrun")?;
    let (rank, size) = (pmi.rank(), pmi.size());
    write_atomic(
        &dir.join(format!("pid.{attempt}.{rank}")),
        &std::process::id().to_string(),
    )?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    write_atomic(&dir.join(format!("host.{attempt}.{rank}")), host.trim())?;

    // Resume from the last complete checkpoint.
    // A checkpoint of another rank count is not restorable here: the
    // program allows it by starting over.
    let (committed, ranks_then) = read_commit(&dir.join("commit"))?.unwrap_or((0, size as u64));
    let commit = if ranks_then == size as u64 {
        committed
    } else {
        if rank == 0 {
            println!(
                "restartcheck: {size} ranks now, the checkpoint of step {committed} has {ranks_then}: starting over"
            );
        }
        0
    };
    let mut state = if commit == 0 {
        0
    } else {
        read_u64(&dir.join(format!("state.{rank}.{commit}")))?
            .ok_or_else(|| format!("rank {rank}: no state for committed step {commit}"))?
    };
    if rank == 0 && attempt > 0 {
        println!("restartcheck: attempt {attempt} resumed from step {commit}");
        if commit > 0 {
            pmi.put(
                "dos.ckpt.restored",
                format!("restartcheck step {commit}").as_bytes(),
            )
            .map_err(e2s)?;
            write_atomic(
                &dir.join(format!("restored_at.{attempt}")),
                &unix_nanos().to_string(),
            )?;
        }
    }

    for s in commit + 1..=steps {
        std::thread::sleep(Duration::from_millis(step_ms));
        pmi.put(
            &format!("v.{s}.{rank}"),
            &((rank as u64 + 1) * s).to_le_bytes(),
        )
        .map_err(e2s)?;
        pmi.fence().map_err(e2s)?;
        // After the step's first fence: rank 0's put of the restored
        // checkpoint (before its first step) has reached dosrun.
        if let Some(f) = fail.filter(|f| f.step == s && f.rank == rank) {
            if f.always || attempt == 0 {
                // For the recovery benchmark: when the failure happened.
                write_atomic(&dir.join("failed_at"), &unix_nanos().to_string())?;
                match f.how {
                    // SAFETY: kill has no memory effects.
                    How::Kill => unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    },
                    How::Exit => std::process::exit(3),
                }
            }
        }
        let mut sum = 0u64;
        for r in 0..size {
            let v = pmi.get(&format!("v.{s}.{r}")).map_err(e2s)?;
            let v: [u8; 8] = v.try_into().map_err(|_| "a value is not 8 bytes")?;
            sum = sum.wrapping_add(u64::from_le_bytes(v));
        }
        state = state
            .wrapping_mul(1_000_003)
            .wrapping_add(sum + rank as u64);
        write_atomic(&dir.join(format!("state.{rank}.{s}")), &state.to_string())?;
        pmi.fence().map_err(e2s)?;
        if rank == 0 {
            write_atomic(&dir.join("commit"), &format!("{s} {size}"))?;
        }
        pmi.fence().map_err(e2s)?;
    }

    pmi.put(&format!("final.{rank}"), &state.to_le_bytes())
        .map_err(e2s)?;
    pmi.fence().map_err(e2s)?;
    if rank == 0 {
        let mut total = 0u64;
        for r in 0..size {
            let v = pmi.get(&format!("final.{r}")).map_err(e2s)?;
            let v: [u8; 8] = v.try_into().map_err(|_| "a value is not 8 bytes")?;
            total = total.wrapping_add(u64::from_le_bytes(v));
        }
        println!("restartcheck: OK result={total} steps={steps} ranks={size} attempt={attempt}");
    }
    pmi.finalize().map_err(e2s)?;
    Ok(())
}

#[allow(dead_code)]
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restartcheck: {e}");
            ExitCode::FAILURE
        }
    }
}
