//! Checks the distributed shared memory under a real launcher: global arrays
//! in both distributions and uneven sizes against the serial result (puts,
//! ranges across owners, parallel local work, 32- and 64-bit atomics, a
//! compare-and-swap election), and a counter that every rank increments
//! under the distributed lock with plain reads and writes.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/dsmcheck
//! ```
//!
//! Prints `dsmcheck: OK N ranks` or the first mismatch (exit status 1).

use std::process::ExitCode;

use dos::dsm::{Distribution, GlobalVec};
use dos::World;

/// Every check of a global array of `len` elements distributed by `dist`;
/// returns what each rank saw go wrong, if anything.
pub fn check_array(w: &World, len: usize, dist: Distribution) -> Result<(), String> {
    let (n, me) = (w.size(), w.rank());
    let e = |e: dos::Error| e.to_string();
    let mut v: GlobalVec<u64> = w.global_vec(len, dist).map_err(e)?;
    // 1. Each rank writes the elements i with i % n == me: single puts and ranges.
    let mine: Vec<usize> = (0..len).filter(|i| i % n == me).collect();
    for &i in &mine {
        v.put(i, i as u64 * 3 + 1).map_err(e)?;
    }
    v.sync().map_err(e)?;
    let mut all = vec![0u64; len];
    v.get_range(0, &mut all).map_err(e)?;
    for (i, x) in all.iter().enumerate() {
        if *x != i as u64 * 3 + 1 {
            return Err(format!("element {i} is {x} after puts"));
        }
    }
    v.sync().map_err(e)?;
    // 2. Local work in parallel, with global indices.
    v.par_for_each_local(|i, x| *x = *x * 2 + i as u64);
    v.sync().map_err(e)?;
    // 3. A range written by one rank across owners, read back element-wise.
    if me == n - 1 && len > 2 {
        let src: Vec<u64> = (1..len - 1).map(|i| 1000 + i as u64).collect();
        v.put_range(1, &src).map_err(e)?;
    }
    v.sync().map_err(e)?;
    for i in 0..len {
        let want = if len > 2 && (1..len - 1).contains(&i) {
            1000 + i as u64
        } else {
            (i as u64 * 3 + 1) * 2 + i as u64
        };
        let got = v.get(i).map_err(e)?;
        if got != want {
            return Err(format!("element {i} is {got}, not {want}"));
        }
    }
    v.sync().map_err(e)?;
    // 4. Atomics from every rank on every element, 64 and 32 bits.
    let mut c32: GlobalVec<i32> = w.global_vec(len, dist).map_err(e)?;
    for i in 0..len {
        v.fetch_add(i, 1).map_err(e)?;
        c32.fetch_add(i, -(me as i32) - 1).map_err(e)?;
    }
    v.sync().map_err(e)?;
    let want32 = -((n * (n + 1) / 2) as i32);
    for i in 0..len {
        let got = c32.get(i).map_err(e)?;
        if got != want32 {
            return Err(format!("32-bit element {i} is {got}, not {want32}"));
        }
    }
    // Neighbours in one word stay apart.
    c32.sync().map_err(e)?;
    c32.local_mut().iter_mut().for_each(|x| *x = 0);
    c32.sync().map_err(e)?;
    // 5. Compare-and-swap election on element 0: exactly one winner.
    let won = len > 0 && c32.compare_swap(0, 0, me as i32 + 1).map_err(e)? == 0;
    c32.sync().map_err(e)?;
    let mut wins = [0u64];
    w.allreduce(&[u64::from(won)], &mut wins, dos::op::Sum)
        .map_err(e)?;
    if len > 0 && wins[0] != 1 {
        return Err(format!("{} ranks won the election", wins[0]));
    }
    if len > 1 && c32.get(1).map_err(e)? != 0 {
        return Err("the CAS on element 0 changed element 1".into());
    }
    c32.free().map_err(e)?;
    v.free().map_err(e)
}

/// Every rank adds 1 to one counter `k` times with a plain read and write
/// under the lock; returns the final count.
pub fn count_under_lock(w: &World, k: u64) -> u64 {
    let lock = w.dist_lock().unwrap();
    let count = w.win_allocate::<u64>(1).unwrap();
    for _ in 0..k {
        let held = lock.lock().unwrap();
        let mut v = [0u64];
        count.get(&mut v, 0, 0).unwrap();
        // Widen the window in which an unprotected update would be lost.
        std::thread::yield_now();
        count.put(&[v[0] + 1], 0, 0).unwrap();
        count.flush(0).unwrap();
        held.unlock().unwrap();
    }
    count.fence().unwrap();
    let mut v = [0u64];
    count.get(&mut v, 0, 0).unwrap();
    lock.free().unwrap();
    v[0]
}

/// The distributions checked.
pub fn dists() -> Vec<Distribution> {
    vec![
        Distribution::Block,
        Distribution::BlockCyclic { block: 1 },
        Distribution::BlockCyclic { block: 3 },
    ]
}

#[allow(dead_code)]
fn main() -> ExitCode {
    let w = match dos::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("dsmcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    for dist in dists() {
        for len in [0, 1, 5, 64, 1001] {
            if let Err(e) = check_array(&w, len, dist) {
                eprintln!(
                    "dsmcheck: rank {}: MISMATCH {dist:?} len {len}: {e}",
                    w.rank()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let n = w.size() as u64;
    let total = count_under_lock(&w, 100);
    if total != 100 * n {
        eprintln!(
            "dsmcheck: rank {}: MISMATCH the lock gave {total}, not {}",
            w.rank(),
            100 * n
        );
        return ExitCode::FAILURE;
    }
    if w.rank() == 0 {
        println!("dsmcheck: OK {n} ranks");
    }
    ExitCode::SUCCESS
}
