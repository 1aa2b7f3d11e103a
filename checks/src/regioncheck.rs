//! Checks the coherent shared region under a real launcher: a parallel
//! matrix product in shared memory (rank 0 writes the inputs, every rank
//! computes its rows of the result, rows of different ranks share pages),
//! and a histogram that every rank adds to under the distributed lock; both
//! against the serial result.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/regioncheck [N]
//! ```
//!
//! Prints `regioncheck: OK R ranks, N x N product` or the first mismatch
//! (exit status 1). `dosbench dsm` measures what the page faults cost.

use std::process::ExitCode;

use dos::World;

/// Entry `(i, j)` of the inputs.
fn a(i: usize, j: usize) -> f64 {
    ((i * 7 + j * 3) % 11) as f64 - 5.0
}
fn b(i: usize, j: usize) -> f64 {
    ((i * 5 + j * 13) % 17) as f64 * 0.5
}

/// Buckets of the histogram.
const BUCKETS: usize = 64;

/// The matrices A, B, C (n x n each) and the histogram in `region`.
type Parts<'a> = (&'a mut [f64], &'a mut [f64], &'a mut [f64], &'a mut [u64]);

fn slices(region: &dos::dsm::SharedRegion, n: usize) -> Parts<'_> {
    let f: &mut [f64] = region.as_mut_slice();
    let (ma, rest) = f.split_at_mut(n * n);
    let (mb, rest) = rest.split_at_mut(n * n);
    let (mc, rest) = rest.split_at_mut(n * n);
    let hist: &mut [u64] = bytemuck::cast_slice_mut(&mut rest[..BUCKETS]);
    (ma, mb, mc, hist)
}

fn check(w: &World, n: usize) -> Result<u64, String> {
    let err = |e: dos::Error| e.to_string();
    let (size, me) = (w.size(), w.rank());
    // A, B and C (n x n f64 each), then the histogram (u64s).
    let bytes = (3 * n * n) * 8 + BUCKETS * 8;
    let region = w.shared_region(bytes).map_err(err)?;
    let lock = w.dist_lock().map_err(err)?;
    // The three matrices and the histogram, as slices of the region. They are
    // taken anew after every synchronization: what other ranks wrote appears
    // there, so the compiler must not keep values across it.
    let parts = |region| slices(region, n);
    // 1. Rank 0 writes the inputs; the barrier publishes them.
    if me == 0 {
        let (ma, mb, _, _) = parts(&region);
        for i in 0..n {
            for j in 0..n {
                ma[i * n + j] = a(i, j);
                mb[i * n + j] = b(i, j);
            }
        }
    }
    region.barrier().map_err(err)?;
    // 2. Rows i with i % size == me: neighbouring rows (other ranks') share pages.
    {
        let (ma, mb, mc, _) = parts(&region);
        for i in (me..n).step_by(size) {
            for j in 0..n {
                mc[i * n + j] = (0..n).map(|k| ma[i * n + k] * mb[k * n + j]).sum();
            }
        }
    }
    region.barrier().map_err(err)?;
    {
        let (_, _, mc, _) = parts(&region);
        for i in 0..n {
            for j in 0..n {
                let want: f64 = (0..n).map(|k| a(i, k) * b(k, j)).sum();
                if mc[i * n + j] != want {
                    return Err(format!("C[{i}][{j}] is {}, not {want}", mc[i * n + j]));
                }
            }
        }
    }
    // 3. A histogram under the lock: every rank adds its values one by one.
    for v in 0..200usize {
        let held = region.lock(&lock).map_err(err)?;
        parts(&region).3[(v * 31 + me) % BUCKETS] += 1;
        held.unlock().map_err(err)?;
    }
    region.barrier().map_err(err)?;
    let mut want = vec![0u64; BUCKETS];
    for r in 0..size {
        for v in 0..200usize {
            want[(v * 31 + r) % BUCKETS] += 1;
        }
    }
    let hist = parts(&region).3;
    if hist[..] != want[..] {
        return Err(format!("histogram {hist:?}, not {want:?}"));
    }
    let faults = region.faults();
    region.barrier().map_err(err)?;
    region.free().map_err(err)?;
    Ok(faults)
}

fn main() -> ExitCode {
    let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 64,
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: regioncheck [N]");
            return ExitCode::from(2);
        }
    };
    let w = match dos::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("regioncheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match check(&w, n) {
        Ok(_faults) => {
            if w.rank() == 0 {
                println!("regioncheck: OK {} ranks, {n} x {n} product", w.size());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regioncheck: rank {}: MISMATCH {e}", w.rank());
            ExitCode::FAILURE
        }
    }
}
