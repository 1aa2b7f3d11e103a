//! Checks one-sided communication under a real launcher: every rank adds
//! into every other rank's counters with atomics, writes its row of a shared
//! matrix with puts, takes turns on an exclusive lock, passes values around a
//! ring in post/start/complete/wait epochs, takes tickets with `fetch_op` and
//! swaps with `get_accumulate`, and compares the results with what they must
//! be.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/rmacheck
//! ```
//!
//! Prints `rmacheck: OK N ranks (allocated and created windows)` or the first
//! mismatch, and exits non-zero on a mismatch.

use std::process::ExitCode;

use dos::op::{Replace, Sum};
use dos::rma::NoOp;
use dos::{LockKind, World};

fn check(w: &World, alloc: bool) -> Result<(), String> {
    let (n, me) = (w.size(), w.rank());
    let mut buf = vec![0u64; 2 * n + 1];
    let win = if alloc {
        w.win_allocate::<u64>(2 * n + 1)
    } else {
        w.win_create(&mut buf)
    }
    .map_err(|e| e.to_string())?;
    let err = |e: dos::Error| e.to_string();
    // Counters: slot `n + r` of every rank counts additions from rank r.
    for t in 0..n {
        for _ in 0..100 {
            win.fetch_add(t, n + me, 1).map_err(err)?;
        }
        // Row: slot `me` of every rank holds me * 1000 + t.
        win.put(&[(me * 1000 + t) as u64], t, me).map_err(err)?;
    }
    win.fence().map_err(err)?;
    let mut mine = vec![0u64; 2 * n + 1];
    win.read_local(&mut mine, 0).map_err(err)?;
    for r in 0..n {
        if mine[r] != (r * 1000 + me) as u64 || mine[n + r] != 100 {
            return Err(format!("rank {me}: slots {mine:?}"));
        }
    }
    // A counter in the last slot of rank 0, incremented under the lock.
    for _ in 0..20 {
        win.lock(0, LockKind::Exclusive).map_err(err)?;
        let mut v = [0u64];
        win.get(&mut v, 0, 2 * n).map_err(err)?;
        win.put(&[v[0] + 1], 0, 2 * n).map_err(err)?;
        win.unlock(0).map_err(err)?;
    }
    win.fence().map_err(err)?;
    let mut v = [0u64];
    win.get(&mut v, 0, 2 * n).map_err(err)?;
    if v[0] != 20 * n as u64 {
        return Err(format!("rank {me}: locked counter {} != {}", v[0], 20 * n));
    }
    pscw_and_fetching(w, &win)?;
    match win.put(&[1], (me + 1) % n, 2 * n + 1) {
        Err(dos::Error::RemoteAccess { .. }) => {}
        other => return Err(format!("rank {me}: access past the end gave {other:?}")),
    }
    win.free().map_err(err)
}

/// Post/start/complete/wait around a ring, then concurrent fetching
/// accumulates on rank 0, against serial models. Uses slots 0 and 1 of
/// `win` (it has at least 3) and leaves them zero.
fn pscw_and_fetching(w: &World, win: &dos::Window<'_, u64>) -> Result<(), String> {
    let (n, me) = (w.size(), w.rank());
    let err = |e: dos::Error| e.to_string();
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    win.write_local(&[0, 0], 0).map_err(err)?;
    win.fence().map_err(err)?;
    for round in 0..5u64 {
        win.post(&[left]).map_err(err)?;
        win.start(&[right]).map_err(err)?;
        win.put(&[round * 100 + me as u64], right, 0).map_err(err)?;
        win.accumulate(&[round + 1], right, 1, Sum).map_err(err)?;
        win.complete().map_err(err)?;
        win.wait().map_err(err)?;
        let mut v = [0u64; 2];
        win.read_local(&mut v, 0).map_err(err)?;
        let want = [round * 100 + left as u64, (round + 1) * (round + 2) / 2];
        if v != want {
            return Err(format!(
                "rank {me}: pscw round {round} got {v:?} != {want:?}"
            ));
        }
    }
    // Tickets from rank 0's slot 0, then swaps into its slot 1.
    win.write_local(&[0, 0], 0).map_err(err)?;
    win.fence().map_err(err)?;
    let mut tickets = Vec::new();
    for _ in 0..10 {
        tickets.push(win.fetch_op(1, 0, 0, Sum).map_err(err)?);
    }
    let mut old = [0u64];
    win.get_accumulate(&[me as u64 + 1], &mut old, 0, 1, Replace)
        .map_err(err)?;
    win.fence().map_err(err)?;
    let mut all = vec![0u64; 10 * n];
    w.allgather(&tickets, &mut all).map_err(err)?;
    all.sort_unstable();
    if all != (0..10 * n as u64).collect::<Vec<_>>() {
        return Err(format!("rank {me}: fetch_op tickets {all:?}"));
    }
    let mut seen = vec![0u64; n];
    w.allgather(&old, &mut seen).map_err(err)?;
    seen.push(win.fetch_op(0, 0, 1, NoOp).map_err(err)?);
    seen.sort_unstable();
    if seen != (0..=n as u64).collect::<Vec<_>>() {
        return Err(format!("rank {me}: swapped values {seen:?}"));
    }
    win.fence().map_err(err)?;
    win.write_local(&[0, 0], 0).map_err(err)?;
    win.fence().map_err(err)
}

fn main() -> ExitCode {
    let w = match dos::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("rmacheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    for alloc in [true, false] {
        if let Err(msg) = check(&w, alloc) {
            eprintln!("rmacheck: MISMATCH {msg}");
            return ExitCode::FAILURE;
        }
    }
    if w.rank() == 0 {
        println!(
            "rmacheck: OK {} ranks (allocated and created windows)",
            w.size()
        );
    }
    ExitCode::SUCCESS
}
