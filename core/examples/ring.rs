//! A token travels around a ring of ranks; each rank adds its rank to it.
//!
//! Shows blocking point-to-point messages (`send` to the next rank, `recv`
//! from the previous one), a `barrier` to start the clock together and a
//! `bcast` of the result.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/examples/ring [LAPS]
//! ```
//!
//! The token starts at 0 on rank 0 and makes LAPS trips (default 10) around
//! ranks 0, 1, ..., N-1, 0. Rank 0 then holds `LAPS * N(N-1)/2`; it checks
//! that, broadcasts the token so every rank can check it too, and prints
//! `ring: token T after LAPS laps on N ranks OK (X us per hop)`. A wrong
//! token prints `MISMATCH` and ends with a non-zero status.

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

/// Tag of the token's messages.
const TAG: dos::Tag = 7;

const USAGE: &str = "usage: ring [LAPS]";

fn parse_laps(mut it: impl Iterator<Item = String>) -> Result<u64, String> {
    let laps = match it.next() {
        None => 10,
        Some(a) if a == "-h" || a == "--help" => return Err(USAGE.to_string()),
        Some(a) => a
            .parse()
            .map_err(|_| format!("LAPS must be a whole number, not {a:?}\n{USAGE}"))?,
    };
    if let Some(extra) = it.next() {
        return Err(format!("unexpected argument {extra:?}\n{USAGE}"));
    }
    Ok(laps)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let laps = parse_laps(std::env::args().skip(1))?;
    let world = dos::init()?;
    let (rank, size) = (world.rank(), world.size());
    let next = (rank + 1) % size;
    let prev = (rank + size - 1) % size;

    world.barrier()?;
    let start = Instant::now();
    let mut token = [0u64];
    for _ in 0..laps {
        if rank == 0 {
            // Rank 0 adds 0; it starts each lap and ends it.
            world.send(&token, next, TAG)?;
            world.recv(&mut token, prev, TAG)?;
        } else {
            world.recv(&mut token, prev, TAG)?;
            token[0] = token[0].wrapping_add(rank as u64);
            world.send(&token, next, TAG)?;
        }
    }
    let elapsed = start.elapsed();

    world.bcast(&mut token, 0)?;
    let expected = laps.wrapping_mul((size * (size - 1) / 2) as u64);
    if rank == 0 && token[0] == expected {
        let hops = laps.saturating_mul(size as u64).max(1);
        let us = elapsed.as_secs_f64() * 1e6 / hops as f64;
        println!(
            "ring: token {} after {laps} laps on {size} ranks OK ({us:.2} us per hop)",
            token[0]
        );
    }
    world.finalize()?;
    if token[0] != expected {
        return Err(format!(
            "rank {rank}: token {} after {laps} laps on {size} ranks, expected {expected}: MISMATCH",
            token[0]
        )
        .into());
    }
    Ok(())
}
