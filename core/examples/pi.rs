//! Pi by numerical integration, split across ranks.
//!
//! Shows a data-parallel computation combined with `allreduce` (every rank
//! gets the total) and `reduce` (rank 0 gets the slowest rank's time).
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/examples/pi [INTERVALS]
//! ```
//!
//! pi = ∫₀¹ 4/(1+x²) dx, by the midpoint rule on INTERVALS equal intervals
//! (default 10⁷). Rank r of N takes the r-th of N contiguous blocks of
//! intervals. Rank 0 prints
//! `pi: 3.1415926536 error E with INTERVALS intervals on N ranks OK`, where E
//! is the distance to `std::f64::consts::PI`, and `OK` means E is within the
//! midpoint rule's error (about 1/(12 n²)) plus a rounding allowance; it
//! prints `MISMATCH` and ends with a non-zero status otherwise. With the
//! default 10⁷ intervals, E is below 1e-9.

use std::error::Error;
use std::f64::consts::PI;
use std::process::ExitCode;
use std::time::Instant;

use dos::op::{Max, Sum};

const USAGE: &str = "usage: pi [INTERVALS]";

/// Intervals summed into one partial sum before it joins the rank's total,
/// which keeps rounding errors small for large interval counts.
const CHUNK: u64 = 4096;

fn parse_intervals(mut it: impl Iterator<Item = String>) -> Result<u64, String> {
    let n = match it.next() {
        None => 10_000_000,
        Some(a) if a == "-h" || a == "--help" => return Err(USAGE.to_string()),
        Some(a) => a
            .replace('_', "")
            .parse()
            .map_err(|_| format!("INTERVALS must be a whole number, not {a:?}\n{USAGE}"))?,
    };
    if n == 0 {
        return Err(format!("INTERVALS must be at least 1\n{USAGE}"));
    }
    if let Some(extra) = it.next() {
        return Err(format!("unexpected argument {extra:?}\n{USAGE}"));
    }
    Ok(n)
}

/// ∑ f(midpoint of interval i) for i in `lo..hi`, with intervals of width `h`.
fn partial_sum(lo: u64, hi: u64, h: f64) -> f64 {
    let f = |i: u64| {
        let x = (i as f64 + 0.5) * h;
        4.0 / (1.0 + x * x)
    };
    let mut total = 0.0;
    let mut start = lo;
    while start < hi {
        let end = hi.min(start + CHUNK);
        total += (start..end).map(f).sum::<f64>();
        start = end;
    }
    total
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let n = parse_intervals(std::env::args().skip(1))?;
    let world = dos::init()?;
    let (rank, size) = (world.rank(), world.size());

    // This rank's block of intervals: [n*r/N, n*(r+1)/N).
    let block = |r: usize| (u128::from(n) * r as u128 / size as u128) as u64;
    let (lo, hi) = (block(rank), block(rank + 1));
    let h = 1.0 / n as f64;

    let start = Instant::now();
    let mine = [partial_sum(lo, hi, h) * h];
    let mut total = [0.0f64];
    world.allreduce(&mine, &mut total, Sum)?;
    let secs = [start.elapsed().as_secs_f64()];
    let mut slowest = [0.0f64];
    world.reduce(&secs, &mut slowest, Max, 0)?;

    let pi = total[0];
    let err = (pi - PI).abs();
    let nf = n as f64;
    let bound = 1.0 / (10.0 * nf * nf) + 1e-11;
    let ok = err <= bound;
    if rank == 0 {
        let verdict = if ok { "OK" } else { "MISMATCH" };
        println!("pi: {pi:.10} error {err:.1e} with {n} intervals on {size} ranks {verdict}");
        println!("pi: slowest rank took {:.3} ms", slowest[0] * 1e3);
    }
    world.finalize()?;
    if ok {
        Ok(())
    } else {
        Err(format!("error {err:e} exceeds the bound {bound:e}").into())
    }
}
