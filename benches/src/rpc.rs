//! `dosbench rpc`: remote procedure calls between ranks 0 and 1 (dos only),
//! with a point-to-point ping-pong in the same run for scale; and `dosbench
//! dsm`: global-array and distributed-lock latencies ([`run_dsm`]).
//!
//! Rank 0 calls rank 1; rank 1 waits in a barrier meanwhile (inside dos, so
//! its main thread serves the calls), except for the "target computing" row,
//! where rank 1 spins outside dos and its RPC service thread answers. Other
//! ranks wait in the barrier. Rows, each the mean over `--iters` operations
//! after `--warmup`:
//!
//! * `p2p round trip 8 B`: send + receive of 8 bytes (twice OSU's latency);
//! * `rpc round trip empty` / `1 KiB`: a blocking call without arguments and
//!   result, and with 1 KiB of plain-data arguments;
//! * `rpc round trip empty, target computing`;
//! * `rpc calls/s empty` / `1 KiB`: windows of `--window` asynchronous calls,
//!   then waiting for all of them;
//! * `one-way calls/s empty`: notifications, then one call to know that all
//!   were handled.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::suite::Options;
use crate::{Error, Result};

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What was measured.
    pub what: &'static str,
    /// The mean.
    pub value: f64,
    /// `us` or `calls/s`.
    pub unit: &'static str,
}

impl Row {
    /// A JSON line of benchmark `bench` (`rpc`, `dsm`).
    pub fn json(&self, bench: &str, transport: &str) -> String {
        serde_json::json!({
            "bench": bench,
            "transport": transport,
            "what": self.what,
            "value": self.value,
            "unit": self.unit,
        })
        .to_string()
    }
}

fn err(source: dos::Error) -> Error {
    Error::Dos { op: "rpc", source }
}

/// Seconds per iteration of `f` over `n` iterations after `warm` untimed ones.
fn time(warm: usize, n: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    let t0 = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t0.elapsed().as_secs_f64() / n as f64)
}

/// The 8-byte ping-pong between ranks 0 and 1: rank 0's row.
fn p2p_round_trip(w: &dos::World, warmup: usize, iters: usize) -> Result<Option<Row>> {
    let mut b = [0u8; 8];
    match w.rank() {
        0 => {
            let s = time(warmup, iters, &mut || {
                w.send(&b, 1, 1).map_err(err)?;
                w.recv(&mut b, 1, 2).map_err(err).map(|_| ())
            })?;
            return Ok(Some(Row {
                what: "p2p round trip 8 B",
                value: s * 1e6,
                unit: "us",
            }));
        }
        1 => {
            for _ in 0..warmup + iters {
                w.recv(&mut b, 0, 1).map_err(err)?;
                w.send(&b, 0, 2).map_err(err)?;
            }
        }
        _ => {}
    }
    Ok(None)
}

/// Runs the RPC benchmarks; rank 0 returns the rows, the others nothing.
pub fn run(w: &dos::World, opts: &Options) -> Result<Vec<Row>> {
    if w.size() < 2 {
        return Err(Error::TooFewRanks {
            bench: "rpc",
            need: 2,
            have: w.size(),
        });
    }
    let iters = opts.iters.unwrap_or(10_000).max(1);
    let warmup = opts.warmup.unwrap_or(iters / 10);
    let window = opts.window.max(1);
    let rpc = w.rpc();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    rpc.register("nop", |_ctx, ()| Ok::<_, String>(()));
    rpc.register_pod("sink", |_ctx, _b: &[u8]| Ok::<_, String>(Vec::<u8>::new()));
    let c = calls.clone();
    rpc.register("count", move |_ctx, ()| {
        c.fetch_add(1, Ordering::Relaxed);
        Ok::<_, String>(())
    });
    rpc.register("sink_bytes", |_ctx, _b: Vec<u8>| Ok::<_, String>(()));
    let s = stop.clone();
    rpc.register("stop", move |_ctx, ()| {
        s.store(true, Ordering::SeqCst);
        Ok::<_, String>(())
    });
    let kib = vec![7u8; 1024];
    let mut rows = Vec::new();
    let me = w.rank();
    w.barrier().map_err(err)?;

    // 1. Point-to-point ping-pong.
    rows.extend(p2p_round_trip(w, warmup, iters)?);
    w.barrier().map_err(err)?;

    if me == 0 {
        // 2. Round trips.
        let s = time(warmup, iters, &mut || {
            rpc.call::<_, ()>(1, "nop", &()).map_err(err)
        })?;
        rows.push(Row {
            what: "rpc round trip empty",
            value: s * 1e6,
            unit: "us",
        });
        let s = time(warmup, iters, &mut || {
            rpc.call_pod::<u8, u8>(1, "sink", &kib)
                .map_err(err)
                .map(|_| ())
        })?;
        rows.push(Row {
            what: "rpc round trip 1 KiB",
            value: s * 1e6,
            unit: "us",
        });
        // 3. Rates: windows of asynchronous calls.
        let rounds = (iters / window).max(1);
        let s = time(1, rounds, &mut || {
            let p: Vec<_> = (0..window)
                .map(|_| rpc.call_async::<_, ()>(1, "nop", &()))
                .collect::<dos::Result<_>>()
                .map_err(err)?;
            p.into_iter().try_for_each(|p| p.wait()).map_err(err)
        })?;
        rows.push(Row {
            what: "rpc calls/s empty",
            value: window as f64 / s,
            unit: "calls/s",
        });
        let s = time(1, rounds, &mut || {
            let p: Vec<_> = (0..window)
                .map(|_| rpc.call_async::<_, ()>(1, "sink_bytes", &kib[..]))
                .collect::<dos::Result<_>>()
                .map_err(err)?;
            p.into_iter().try_for_each(|p| p.wait()).map_err(err)
        })?;
        rows.push(Row {
            what: "rpc calls/s 1 KiB",
            value: window as f64 / s,
            unit: "calls/s",
        });
        // 4. One-way calls, then one call behind them.
        let n = iters * 10;
        let t0 = Instant::now();
        for _ in 0..n {
            rpc.notify(1, "count", &()).map_err(err)?;
        }
        rpc.call::<_, ()>(1, "nop", &()).map_err(err)?;
        let s = t0.elapsed().as_secs_f64();
        rows.push(Row {
            what: "one-way calls/s empty",
            value: n as f64 / s,
            unit: "calls/s",
        });
    }
    w.barrier().map_err(err)?;
    if me == 1 {
        let want = (iters * 10) as u64;
        if calls.load(Ordering::Relaxed) != want {
            return Err(Error::Validation {
                bench: "rpc",
                size: 0,
                rank: 1,
                what: format!(
                    "handled {} of {want} one-way calls",
                    calls.load(Ordering::Relaxed)
                ),
            });
        }
    }

    // 5. Round trips while the target computes (its service thread answers).
    w.barrier().map_err(err)?;
    if me == 0 {
        // Let rank 1 get away from dos first.
        std::thread::sleep(Duration::from_millis(5));
        let s = time(warmup.min(100), iters.min(2000), &mut || {
            rpc.call::<_, ()>(1, "nop", &()).map_err(err)
        })?;
        rows.push(Row {
            what: "rpc round trip empty, target computing",
            value: s * 1e6,
            unit: "us",
        });
        rpc.call::<_, ()>(1, "stop", &()).map_err(err)?;
    } else if me == 1 {
        let t0 = Instant::now();
        let mut x = 0u64;
        while !stop.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(120) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    w.barrier().map_err(err)?;
    Ok(rows)
}

/// `dosbench dsm`: rank 0 reads and writes single elements of a global array
/// that live on rank 1 (get: complete on return; put: then flushed), every
/// 64-bit element atomic, and the distributed lock taken and released,
/// first by rank 0 alone, then by every rank at once (the mean time per
/// acquire-release pair per rank under contention). A ping-pong gives scale.
pub fn run_dsm(w: &dos::World, opts: &Options) -> Result<Vec<Row>> {
    use dos::dsm::Distribution;
    if w.size() < 2 {
        return Err(Error::TooFewRanks {
            bench: "dsm",
            need: 2,
            have: w.size(),
        });
    }
    let iters = opts.iters.unwrap_or(10_000).max(1);
    let warmup = opts.warmup.unwrap_or(iters / 10);
    let me = w.rank();
    let n = w.size();
    // Element `n + 1` of a block-cyclic array with blocks of 1 lives on rank 1.
    let v = w
        .global_vec::<u64>(4 * n, Distribution::BlockCyclic { block: 1 })
        .map_err(err)?;
    let lock = w.dist_lock().map_err(err)?;
    let mut rows = Vec::new();
    w.barrier().map_err(err)?;
    rows.extend(p2p_round_trip(w, warmup, iters)?);
    if me == 0 {
        let i = n + 1;
        let s = time(warmup, iters, &mut || v.get(i).map_err(err).map(|_| ()))?;
        rows.push(Row {
            what: "global array get 8 B",
            value: s * 1e6,
            unit: "us",
        });
        let s = time(warmup, iters, &mut || {
            v.put(i, 7).map_err(err)?;
            v.flush().map_err(err)
        })?;
        rows.push(Row {
            what: "global array put 8 B + flush",
            value: s * 1e6,
            unit: "us",
        });
        let s = time(warmup, iters, &mut || {
            v.fetch_add(i, 1).map_err(err).map(|_| ())
        })?;
        rows.push(Row {
            what: "global array fetch_add",
            value: s * 1e6,
            unit: "us",
        });
        let s = time(warmup, iters, &mut || {
            let g = lock.lock().map_err(err)?;
            g.unlock().map_err(err)
        })?;
        rows.push(Row {
            what: "lock + unlock, one rank",
            value: s * 1e6,
            unit: "us",
        });
    }
    w.barrier().map_err(err)?;
    let k = (iters / 10).max(1);
    let s = time(k / 10, k, &mut || {
        let g = lock.lock().map_err(err)?;
        g.unlock().map_err(err)
    })?;
    let mut all = vec![0f64; n];
    w.allgather(&[s], &mut all).map_err(err)?;
    if me == 0 {
        rows.push(Row {
            what: "lock + unlock, all ranks contending",
            value: all.iter().sum::<f64>() / n as f64 * 1e6,
            unit: "us",
        });
    }
    w.barrier().map_err(err)?;
    // Shared-region page faults: rank 0 touches pages homed on rank 1 (every
    // n-th page), first reading (fetch) then writing (twin) each.
    let pages = 256usize;
    let page = 4096usize;
    let region = w.shared_region(pages * n * page).map_err(err)?;
    region.barrier().map_err(err)?;
    if me == 0 {
        let bytes: &mut [u8] = region.as_mut_slice();
        let t0 = Instant::now();
        let mut sum = 0u64;
        for k in 0..pages {
            sum += u64::from(std::hint::black_box(bytes[(k * n + 1) * page]));
        }
        let read = t0.elapsed().as_secs_f64() / pages as f64;
        let t0 = Instant::now();
        for k in 0..pages {
            bytes[(k * n + 1) * page] = 1;
        }
        let write = t0.elapsed().as_secs_f64() / pages as f64;
        std::hint::black_box(sum);
        rows.push(Row {
            what: "shared region read fault (fetch a page)",
            value: read * 1e6,
            unit: "us",
        });
        rows.push(Row {
            what: "shared region write fault (twin a page)",
            value: write * 1e6,
            unit: "us",
        });
        let t0 = Instant::now();
        region.release().map_err(err)?;
        rows.push(Row {
            what: "shared region release, per written page",
            value: t0.elapsed().as_secs_f64() / pages as f64 * 1e6,
            unit: "us",
        });
    }
    region.barrier().map_err(err)?;
    region.free().map_err(err)?;
    lock.free().map_err(err)?;
    v.free().map_err(err)?;
    Ok(rows)
}
