//! The benchmarks, written once over [`Net`].
//!
//! Point-to-point benchmarks (`latency`, `bw`, `bibw`) run between ranks 0
//! and 1 (other ranks wait at the barrier) and report rank 0's measurement,
//! as OSU does. Collective benchmarks time every call on every rank, with a
//! barrier after each call so that calls do not overlap, and report the
//! average, minimum and maximum over ranks of each rank's mean latency (OSU's
//! `-f` columns). After timing, each collective checks the data it produced.

use std::time::{Duration, Instant};

use crate::net::Net;
use crate::report::{Outcome, Row};
use crate::sched::{Bench, Counts, DEFAULT_WINDOW};
use crate::stats::Spread;
use crate::{Error, Result};

const TAG_DATA: i32 = 1;
const TAG_ACK: i32 = 2;
const TAG_STATS: i32 = 3;

/// Untimed activity before each benchmark. A runtime that starts in a few
/// milliseconds (dos) otherwise meets its first sizes on idle, slowly clocked
/// cores, while one that spends 300 ms in init (Open MPI) does not.
pub const SPIN_UP: Duration = Duration::from_millis(100);

/// How to run: the command-line overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Smallest message size (default: the benchmark's own).
    pub min_size: Option<usize>,
    /// Largest message size (default: the benchmark's own).
    pub max_size: Option<usize>,
    /// Timed iterations for small messages (large ones scale with it).
    pub iters: Option<usize>,
    /// Warm-up iterations for small messages (large ones scale with it).
    pub warmup: Option<usize>,
    /// Messages per window in `bw` and `bibw`.
    pub window: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            min_size: None,
            max_size: None,
            iters: None,
            warmup: None,
            window: DEFAULT_WINDOW,
        }
    }
}

/// Runs `bench` on every rank; returns the results on rank 0 and `None` elsewhere.
///
/// Every rank must call it with the same arguments.
pub fn run<N: Net>(net: &N, bench: Bench, opts: &Options) -> Result<Option<Outcome>> {
    if net.size() < bench.min_ranks() {
        return Err(Error::TooFewRanks {
            bench: bench.name(),
            need: bench.min_ranks(),
            have: net.size(),
        });
    }
    let sizes = bench.sizes(opts.min_size, opts.max_size);
    let plan = bench.plan().with_overrides(opts.iters, opts.warmup);
    let window = opts.window.max(1);
    let mut rows = Vec::with_capacity(sizes.len());
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mut bufs = Buffers::new(net, bench, max, window);
    spin_up(net, SPIN_UP)?;
    for &size in &sizes {
        let c = plan.counts(size);
        net.barrier()?;
        let spread = match bench {
            Bench::Latency => latency(net, &mut bufs, size, c)?,
            Bench::Bw => bw(net, &mut bufs, size, c, window)?,
            Bench::Bibw => bibw(net, &mut bufs, size, c, window)?,
            Bench::Allreduce => allreduce(net, &mut bufs, size, c)?,
            Bench::Bcast => bcast(net, &mut bufs, size, c)?,
            Bench::Alltoall => alltoall(net, &mut bufs, size, c)?,
            Bench::Barrier => barrier(net, c)?,
        };
        if let Some(s) = spread {
            rows.push(Row {
                size,
                avg: s.avg,
                min: s.min,
                max: s.max,
                iters: c.iters,
            });
        }
    }
    net.barrier()?;
    Ok((net.rank() == 0).then(|| Outcome {
        benchmark: bench,
        implementation: net.name().to_string(),
        ranks: net.size(),
        unit: bench.unit(),
        rows,
    }))
}

/// Buffers allocated once for the largest size and touched before timing.
struct Buffers {
    send: Vec<u8>,
    recv: Vec<u8>,
    fsend: Vec<f32>,
    frecv: Vec<f32>,
}

impl Buffers {
    fn new<N: Net>(net: &N, bench: Bench, max: usize, window: usize) -> Buffers {
        let (rank, n) = (net.rank(), net.size());
        let (send, recv) = match bench {
            Bench::Latency | Bench::Bcast => (payload(max), vec![1u8; max]),
            Bench::Bw | Bench::Bibw => (payload(max), vec![1u8; max * window]),
            Bench::Alltoall => {
                // Block j of rank r holds byte r*31+j, so every block is checkable.
                let send = (0..n * max)
                    .map(|i| pattern(rank, i.checked_div(max).unwrap_or(0)))
                    .collect();
                (send, vec![1u8; n * max])
            }
            Bench::Allreduce | Bench::Barrier => (Vec::new(), Vec::new()),
        };
        let elems = if bench == Bench::Allreduce {
            max / 4
        } else {
            0
        };
        Buffers {
            send,
            recv,
            fsend: vec![(rank + 1) as f32; elems],
            frecv: vec![0.0; elems],
        }
    }
}

/// The bytes every point-to-point message and broadcast carries: position
/// dependent and never zero, so a misplaced or missing byte is noticed
/// (receive buffers are zeroed before each size).
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

/// Checks, after timing, that `got` holds `want` in each of its `want.len()`-byte pieces.
fn check_pieces(bench: Bench, rank: usize, got: &[u8], want: &[u8]) -> Result<()> {
    if want.is_empty() {
        return Ok(());
    }
    for (k, piece) in got.chunks_exact(want.len()).enumerate() {
        if let Some(bad) = piece.iter().zip(want).position(|(a, b)| a != b) {
            return Err(Error::Validation {
                bench: bench.name(),
                size: want.len(),
                rank,
                what: format!(
                    "message {k}: byte {bad} is {}, expected {}",
                    piece[bad], want[bad]
                ),
            });
        }
    }
    Ok(())
}

fn pattern(rank: usize, block: usize) -> u8 {
    (rank.wrapping_mul(31).wrapping_add(block) % 251) as u8
}

fn latency<N: Net>(net: &N, b: &mut Buffers, size: usize, c: Counts) -> Result<Option<Spread>> {
    let (s, r) = (&b.send[..size], &mut b.recv[..size]);
    let me = net.rank();
    r.fill(0);
    let out = match me {
        0 => {
            let mut t0 = Instant::now();
            for i in 0..c.warmup + c.iters {
                if i == c.warmup {
                    t0 = Instant::now();
                }
                net.send(s, 1, TAG_DATA)?;
                net.recv(r, 1, TAG_DATA)?;
            }
            let us = micros(t0.elapsed()) / (2 * c.iters) as f64;
            Some(Spread::single(us))
        }
        1 => {
            for _ in 0..c.warmup + c.iters {
                net.recv(r, 0, TAG_DATA)?;
                net.send(s, 0, TAG_DATA)?;
            }
            None
        }
        _ => return Ok(None),
    };
    check_pieces(Bench::Latency, me, r, s)?;
    Ok(out)
}

fn bw<N: Net>(
    net: &N,
    b: &mut Buffers,
    size: usize,
    c: Counts,
    window: usize,
) -> Result<Option<Spread>> {
    let mut ack = [0u8; 4];
    match net.rank() {
        0 => {
            let s = &b.send[..size];
            let mut t0 = Instant::now();
            for i in 0..c.warmup + c.iters {
                if i == c.warmup {
                    t0 = Instant::now();
                }
                net.send_window(s, window, 1, TAG_DATA)?;
                net.recv(&mut ack, 1, TAG_ACK)?;
            }
            let bytes = (size * window * c.iters) as f64;
            Ok(Some(Spread::single(mbps(bytes, t0.elapsed()))))
        }
        1 => {
            let r = &mut b.recv[..size * window];
            r.fill(0);
            for _ in 0..c.warmup + c.iters {
                net.recv_window(r, size, window, 0, TAG_DATA)?;
                net.send(&ack, 0, TAG_ACK)?;
            }
            check_pieces(Bench::Bw, 1, r, &b.send[..size])?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

fn bibw<N: Net>(
    net: &N,
    b: &mut Buffers,
    size: usize,
    c: Counts,
    window: usize,
) -> Result<Option<Spread>> {
    let me = net.rank();
    if me > 1 {
        return Ok(None);
    }
    let peer = 1 - me;
    let s = &b.send[..size];
    let r = &mut b.recv[..size * window];
    r.fill(0);
    let mut t0 = Instant::now();
    for i in 0..c.warmup + c.iters {
        if i == c.warmup {
            t0 = Instant::now();
        }
        net.exchange_window(s, r, window, peer, TAG_DATA)?;
    }
    let bytes = (2 * size * window * c.iters) as f64;
    let v = mbps(bytes, t0.elapsed());
    check_pieces(Bench::Bibw, me, r, s)?;
    Ok((me == 0).then(|| Spread::single(v)))
}

/// Keeps this core busy for `d` without communicating (so the runtime's
/// own state is untouched), then meets the other ranks at a barrier.
fn spin_up<N: Net>(net: &N, d: Duration) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::hint::spin_loop();
    }
    net.barrier()
}

/// Times `op` `c.iters` times after `c.warmup` untimed calls, with a barrier
/// after each; returns this rank's mean in microseconds.
fn timed<N: Net>(net: &N, c: Counts, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut total = Duration::ZERO;
    for i in 0..c.warmup + c.iters {
        let t = Instant::now();
        op()?;
        let d = t.elapsed();
        if i >= c.warmup {
            total += d;
        }
        net.barrier()?;
    }
    Ok(micros(total) / c.iters as f64)
}

fn allreduce<N: Net>(net: &N, b: &mut Buffers, size: usize, c: Counts) -> Result<Option<Spread>> {
    let n = size / 4;
    let (s, r) = (&b.fsend[..n], &mut b.frecv[..n]);
    let us = timed(net, c, || net.allreduce_sum_f32(s, r))?;
    let p = net.size();
    let want = (p * (p + 1) / 2) as f32;
    if let Some(bad) = r.iter().position(|&x| x != want) {
        return Err(Error::Validation {
            bench: "allreduce",
            size,
            rank: net.rank(),
            what: format!("element {bad} is {}, expected {want}", r[bad]),
        });
    }
    spread_over_ranks(net, us)
}

fn bcast<N: Net>(net: &N, b: &mut Buffers, size: usize, c: Counts) -> Result<Option<Spread>> {
    let me = net.rank();
    let buf = if me == 0 {
        &mut b.send[..size]
    } else {
        b.recv[..size].fill(0);
        &mut b.recv[..size]
    };
    let us = timed(net, c, || net.bcast(buf, 0))?;
    check_pieces(Bench::Bcast, me, buf, &payload(size))?;
    spread_over_ranks(net, us)
}

fn alltoall<N: Net>(net: &N, b: &mut Buffers, size: usize, c: Counts) -> Result<Option<Spread>> {
    let (me, p) = (net.rank(), net.size());
    // The send buffer is laid out for the largest size: gather this size's blocks.
    let max = b.send.len() / p.max(1);
    let send: Vec<u8> = (0..p)
        .flat_map(|j| b.send[j * max..j * max + size].iter().copied())
        .collect();
    let recv = &mut b.recv[..p * size];
    let us = timed(net, c, || net.alltoall(&send, recv))?;
    for i in 0..p {
        let want = pattern(i, me);
        if let Some(bad) = recv[i * size..(i + 1) * size]
            .iter()
            .position(|&x| x != want)
        {
            return Err(Error::Validation {
                bench: "alltoall",
                size,
                rank: me,
                what: format!("byte {bad} of the block from rank {i} is wrong"),
            });
        }
    }
    spread_over_ranks(net, us)
}

fn barrier<N: Net>(net: &N, c: Counts) -> Result<Option<Spread>> {
    for _ in 0..c.warmup {
        net.barrier()?;
    }
    let t0 = Instant::now();
    for _ in 0..c.iters {
        net.barrier()?;
    }
    let us = micros(t0.elapsed()) / c.iters as f64;
    spread_over_ranks(net, us)
}

/// Collects every rank's value on rank 0 (outside any timed region).
fn spread_over_ranks<N: Net>(net: &N, mine: f64) -> Result<Option<Spread>> {
    if net.rank() != 0 {
        net.send(&mine.to_le_bytes(), 0, TAG_STATS)?;
        return Ok(None);
    }
    let mut all = Vec::with_capacity(net.size());
    all.push(mine);
    for src in 1..net.size() {
        let mut b = [0u8; 8];
        net.recv(&mut b, src, TAG_STATS)?;
        all.push(f64::from_le_bytes(b));
    }
    Ok(Spread::of(&all))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mbps(bytes: f64, d: Duration) -> f64 {
    bytes / d.as_secs_f64().max(f64::MIN_POSITIVE) / 1e6
}

#[cfg(all(test, feature = "dos"))]
mod tests {
    use super::*;
    use crate::net::dos::DosNet;

    #[test]
    fn collectives_run_on_one_rank() {
        let net = DosNet::init().unwrap();
        let opts = Options {
            max_size: Some(64),
            iters: Some(3),
            warmup: Some(1),
            ..Options::default()
        };
        for bench in [
            Bench::Allreduce,
            Bench::Bcast,
            Bench::Alltoall,
            Bench::Barrier,
        ] {
            let out = run(&net, bench, &opts).unwrap().unwrap();
            assert!(!out.rows.is_empty(), "{bench:?}");
            assert!(out.rows.iter().all(|r| r.avg >= 0.0 && r.min <= r.max));
        }
        assert!(matches!(
            run(&net, Bench::Latency, &opts),
            Err(Error::TooFewRanks {
                need: 2,
                have: 1,
                ..
            })
        ));
    }

    #[test]
    fn every_benchmark_runs_on_three_ranks() {
        let opts = Options {
            max_size: Some(16 << 10), // eager and rendezvous sizes
            iters: Some(3),
            warmup: Some(1),
            window: 4,
            ..Options::default()
        };
        let outs = ::dos::testing::run_threads(3, |world| {
            let net = DosNet::from_world(world);
            Bench::ALL
                .iter()
                .map(|&b| run(&net, b, &opts).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        });
        for (rank, per_rank) in outs.into_iter().enumerate() {
            for (b, r) in Bench::ALL.iter().zip(per_rank) {
                let got = r.unwrap_or_else(|e| panic!("{b:?} on rank {rank}: {e}"));
                assert_eq!(got.is_some(), rank == 0, "{b:?} on rank {rank}");
                if let Some(o) = got {
                    assert_eq!((o.ranks, o.implementation.as_str()), (3, "dos"));
                    assert_eq!(o.rows.len(), b.sizes(None, opts.max_size).len(), "{b:?}");
                    assert!(o.rows.iter().all(|r| r.avg.is_finite() && r.avg >= 0.0));
                }
            }
        }
    }
}
