//! Checks that misuse and corner cases leave a job usable (issue 15):
//!
//! * `split`: `Comm::split(Some(u32::MAX), ..)` is a color like any other,
//!   distinct from `None` (`MPI_UNDEFINED`): even ranks pass `u32::MAX`, odd
//!   ranks `None`.
//! * `mismatch`: collectives whose ranks disagree on the count (one rank at
//!   a time passes fewer elements: rank 0, the root, then rank 1, then on 4
//!   ranks or more rank 2) end with the
//!   documented errors on the ranks that see the disagreement, and the
//!   communicator stays usable: a barrier and a correct allreduce follow.
//!   Run it with and without `DOS_NODE_COLL_BYTES=0` (shared-memory slots or
//!   messages).
//! * `alone`: RPC requests a rank sends itself are served while it computes
//!   (the service thread runs in a world of any size, one included) and by a
//!   barrier.
//! * `init`: a second `dos::init`, from another thread, is
//!   `Error::AlreadyJoined` under dosrun.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/errcheck mismatch
//! dosrun -n 4 -x DOS_NODE_COLL_BYTES=0 target/release/errcheck mismatch
//! dosrun -n 1 target/release/errcheck alone
//! ```
//!
//! Prints `errcheck: OK <check> N ranks` or the first mismatch, and exits
//! non-zero on a mismatch.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dos::op::Sum;
use dos::{Comm, Error, World};

/// Checks the collective on `w` after a split where even ranks pass
/// `Some(u32::MAX)` and odd ones `None`.
pub fn check_split(w: &Comm) -> Result<(), String> {
    let (n, me) = (w.size(), w.rank());
    let color = (me % 2 == 0).then_some(u32::MAX);
    let sub = w.split(color, 0).map_err(|e| e.to_string())?;
    match (color, sub) {
        (None, None) => {}
        (None, Some(c)) => return Err(format!("rank {me} passed None but got {c:?}")),
        (Some(_), None) => return Err(format!("rank {me} passed u32::MAX but got None")),
        (Some(_), Some(c)) => {
            let evens = n.div_ceil(2);
            if c.size() != evens || c.rank() != me / 2 {
                return Err(format!(
                    "rank {me}: communicator of color u32::MAX is rank {} of {}, \
                     expected rank {} of {evens}",
                    c.rank(),
                    c.size(),
                    me / 2
                ));
            }
            let mut sum = [0u64];
            c.allreduce(&[me as u64], &mut sum, Sum)
                .map_err(|e| e.to_string())?;
            let want = (0..n as u64).step_by(2).sum::<u64>();
            if sum[0] != want {
                return Err(format!(
                    "allreduce on the split gave {}, not {want}",
                    sum[0]
                ));
            }
            c.barrier().map_err(|e| e.to_string())?;
        }
    }
    w.barrier().map_err(|e| e.to_string())
}

/// The collectives `check_mismatch` runs with disagreeing counts.
pub const MISMATCHED: [&str; 7] = [
    "bcast",
    "reduce",
    "allreduce",
    "allgather",
    "alltoall",
    "gather",
    "scatter",
];

/// Whether `e` is one of the errors documented for ranks that disagree on
/// counts.
fn documented(e: &Error) -> bool {
    matches!(e, Error::InvalidBuffer { .. } | Error::Truncated { .. })
}

/// Runs collective `what` with `count` elements per block on `w` (root 0).
fn run_collective(w: &Comm, what: &str, count: usize) -> dos::Result<()> {
    let (n, me) = (w.size(), w.rank());
    let mine: Vec<u64> = (0..count as u64).map(|i| i + 100 * me as u64).collect();
    match what {
        "bcast" => {
            let mut buf = mine;
            w.bcast(&mut buf, 0)
        }
        "reduce" => {
            let mut out = vec![0u64; if me == 0 { count } else { 0 }];
            w.reduce(&mine, &mut out, Sum, 0)
        }
        "allreduce" => {
            let mut out = vec![0u64; count];
            w.allreduce(&mine, &mut out, Sum)
        }
        "allgather" => {
            let mut out = vec![0u64; count * n];
            w.allgather(&mine, &mut out)
        }
        "alltoall" => {
            let send: Vec<u64> = (0..(count * n) as u64).collect();
            let mut out = vec![0u64; count * n];
            w.alltoall(&send, &mut out)
        }
        "gather" => {
            let mut out = vec![0u64; if me == 0 { count * n } else { 0 }];
            w.gather(&mine, &mut out, 0)
        }
        "scatter" => {
            let send: Vec<u64> = if me == 0 {
                (0..(count * n) as u64).collect()
            } else {
                Vec::new()
            };
            let mut out = vec![0u64; count];
            w.scatter(&send, &mut out, 0)
        }
        _ => unreachable!("unknown collective {what}"),
    }
}

/// Runs every collective of [`MISMATCHED`] with rank 0 (the root), then
/// rank 1 (and then rank 2 on 4 or more ranks) passing 6 elements where the
/// others pass 10, each followed by a barrier
/// and a correct allreduce: every rank's call returns, with success or a
/// documented error, at least one rank reports the disagreement, and the
/// communicator stays usable.
pub fn check_mismatch(w: &Comm) -> Result<(), String> {
    MISMATCHED
        .iter()
        .try_for_each(|what| check_mismatch_of(w, what))
}

/// [`check_mismatch`] for collective `what` alone.
pub fn check_mismatch_of(w: &Comm, what: &str) -> Result<(), String> {
    check_mismatch_sized(w, what, 10, 6)
}

/// [`check_mismatch_of`] with `good` elements per block on most ranks and
/// `bad` on the ranks that disagree (large counts reach the large-message
/// algorithms).
pub fn check_mismatch_sized(
    w: &Comm,
    what: &str,
    good: usize,
    bad_count: usize,
) -> Result<(), String> {
    let (n, me) = (w.size(), w.rank());
    if n < 2 {
        return Ok(());
    }
    let bad: &[usize] = if n >= 4 { &[0, 1, 2] } else { &[0, 1] };
    {
        for &b in bad {
            let count = if me == b { bad_count } else { good };
            let erred = match run_collective(w, what, count) {
                Ok(()) => 0,
                Err(e) if documented(&e) => 1,
                Err(e) => return Err(format!("{what}: rank {me}: undocumented error {e}")),
            };
            w.barrier()
                .map_err(|e| format!("barrier after {what} (bad rank {b}): {e}"))?;
            let mut sum = [0u64; 4];
            w.allreduce(&[me as u64, 1, 2, erred], &mut sum, Sum)
                .map_err(|e| format!("allreduce after {what} (bad rank {b}): {e}"))?;
            if sum[3] == 0 {
                return Err(format!(
                    "{what} (bad rank {b}): no rank saw the disagreement"
                ));
            }
            let sum = [sum[0], sum[1], sum[2]];
            let want = [(n * (n - 1) / 2) as u64, n as u64, 2 * n as u64];
            if sum != want {
                return Err(format!(
                    "allreduce after {what} (bad rank {b}) gave {sum:?}, not {want:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Notifications a rank sends itself in [`check_alone`].
pub const NOTES: usize = 10;

/// Every rank notifies itself [`NOTES`] times and computes: the service
/// thread must run the handlers meanwhile (within `wait`); then the same
/// once more, served by a barrier at the latest.
pub fn check_alone(w: &World, wait: Duration) -> Result<(), String> {
    let me = w.rank();
    let rpc = w.rpc();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    rpc.register("tick", move |_ctx, ()| {
        g.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(())
    });
    w.barrier().map_err(|e| e.to_string())?;
    for _ in 0..NOTES {
        rpc.notify(me, "tick", &()).map_err(|e| e.to_string())?;
    }
    // Compute (stay away from dos) until the handlers ran or time is up.
    let t0 = Instant::now();
    while got.load(Ordering::SeqCst) < NOTES && t0.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(5));
    }
    let served = got.load(Ordering::SeqCst);
    if served != NOTES {
        return Err(format!(
            "rank {me}: {served} of {NOTES} notifications to itself served while it computed for {wait:?}"
        ));
    }
    for _ in 0..NOTES {
        rpc.notify(me, "tick", &()).map_err(|e| e.to_string())?;
    }
    w.barrier().map_err(|e| e.to_string())?;
    // The barrier (or the service thread) has served them by now on a rank
    // alone; with peers, wait as above.
    let t0 = Instant::now();
    while got.load(Ordering::SeqCst) < 2 * NOTES && t0.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(5));
    }
    let served = got.load(Ordering::SeqCst);
    if served != 2 * NOTES {
        return Err(format!(
            "rank {me}: {served} of {} notifications served",
            2 * NOTES
        ));
    }
    w.barrier().map_err(|e| e.to_string())
}

/// A second `dos::init`, from another thread, must be `AlreadyJoined`
/// (under dosrun), and the world keeps working.
pub fn check_init(w: &World) -> Result<(), String> {
    let second = std::thread::spawn(|| dos::init().map(|_| ()))
        .join()
        .map_err(|_| "the second init panicked".to_string())?;
    match second {
        Err(Error::AlreadyJoined) => {}
        other => return Err(format!("second init gave {other:?}, not AlreadyJoined")),
    }
    match dos::init() {
        Err(Error::AlreadyJoined) => {}
        other => {
            return Err(format!(
                "third init gave {:?}, not AlreadyJoined",
                other.map(|_| ())
            ))
        }
    }
    let mut sum = [0u64];
    w.allreduce(&[1u64], &mut sum, Sum)
        .map_err(|e| e.to_string())?;
    if sum[0] != w.size() as u64 {
        return Err(format!("allreduce gave {}", sum[0]));
    }
    Ok(())
}

fn main() -> ExitCode {
    let what = std::env::args().nth(1).unwrap_or_default();
    let w = match dos::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("errcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = match what.as_str() {
        "split" => check_split(&w),
        "mismatch" => check_mismatch(&w),
        "alone" => check_alone(&w, Duration::from_secs(5)),
        "init" => check_init(&w),
        _ => {
            eprintln!("usage: errcheck split|mismatch|alone|init");
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(()) => {
            if w.rank() == 0 {
                println!("errcheck: OK {what} {} ranks", w.size());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("errcheck: rank {}: MISMATCH {e}", w.rank());
            ExitCode::FAILURE
        }
    }
}
