//! The benchmarks, written once over [`Runtime`].
//!
//! Point-to-point benchmarks (`latency`, `bw`, `bibw`) run between ranks 0
//! and 1 (other ranks wait at the barrier) and report rank 0's measurement,
//! as OSU does. Collective benchmarks time every call on every rank, with a
//! barrier after each call so that calls do not overlap, and report the
//! average, minimum and maximum over ranks of each rank's mean latency (OSU's
//! `-f` columns). After timing, each collective checks the data it produced.
//!
//! One-sided benchmarks (`put_lat`, `get_lat`, `put_bw`, `atomic_lat`) are
//! OSU's in "flush" mode: a window allocated once per benchmark for the
//! largest size, and per size one passive-target epoch that rank 0 opens
//! before and closes after the timed loop (`MPI_Win_lock_all`); each
//! iteration completes its operations at rank 1 with a flush (or returns
//! complete: get, fetch-and-add). Rank 1 meanwhile waits in a barrier,
//! which keeps it making progress (both runtimes serve operations that
//! arrive as messages only inside their calls). After the epoch, rank 1
//! checks what landed in its window (`put_lat`, `put_bw`, `atomic_lat`) and
//! rank 0 what it read (`get_lat`, `atomic_lat`).

use std::time::{Duration, Instant};

use crate::report::{Outcome, Row};
use crate::runtime::{Runtime, WinElem};
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
    /// Messages per window in `bw` and `bibw`; puts per flush in `put_bw`.
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
pub fn run<R: Runtime>(rt: &R, bench: Bench, opts: &Options) -> Result<Option<Outcome>> {
    if rt.size() < bench.min_ranks() {
        return Err(Error::TooFewRanks {
            bench: bench.name(),
            need: bench.min_ranks(),
            have: rt.size(),
        });
    }
    let sizes = bench.sizes(opts.min_size, opts.max_size);
    let plan = bench.plan().with_overrides(opts.iters, opts.warmup);
    let window = opts.window.max(1);
    let mut rows = Vec::with_capacity(sizes.len());
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mut bufs = Buffers::new(rt, bench, max, window);
    let wins = Windows::new(rt, bench, max, window, &bufs)?;
    spin_up(rt, SPIN_UP)?;
    for &size in &sizes {
        let c = plan.counts(size);
        rt.barrier()?;
        let spread = match bench {
            Bench::Latency => latency(rt, &mut bufs, size, c)?,
            Bench::Bw => bw(rt, &mut bufs, size, c, window)?,
            Bench::Bibw => bibw(rt, &mut bufs, size, c, window)?,
            Bench::Allreduce => allreduce(rt, &mut bufs, size, c)?,
            Bench::Bcast => bcast(rt, &mut bufs, size, c)?,
            Bench::Alltoall => alltoall(rt, &mut bufs, size, c)?,
            Bench::Barrier => barrier(rt, c)?,
            Bench::PutLat => put_lat(rt, wins.bytes(), &mut bufs, size, c)?,
            Bench::GetLat => get_lat(rt, wins.bytes(), &mut bufs, size, c)?,
            Bench::PutBw => put_bw(rt, wins.bytes(), &mut bufs, size, c, window)?,
            Bench::AtomicLat => atomic_lat(rt, wins.words(), c)?,
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
    wins.free(rt)?;
    rt.barrier()?;
    Ok((rt.rank() == 0).then(|| Outcome {
        benchmark: bench,
        implementation: rt.name().to_string(),
        ranks: rt.size(),
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
    fn new<R: Runtime>(rt: &R, bench: Bench, max: usize, window: usize) -> Buffers {
        let (rank, n) = (rt.rank(), rt.size());
        let (send, recv) = match bench {
            Bench::Latency | Bench::Bcast | Bench::PutLat | Bench::GetLat => {
                (payload(max), vec![1u8; max])
            }
            Bench::Bw | Bench::Bibw | Bench::PutBw => (payload(max), vec![1u8; max * window]),
            Bench::Alltoall => {
                // Block j of rank r holds byte r*31+j, so every block is checkable.
                let send = (0..n * max)
                    .map(|i| pattern(rank, i.checked_div(max).unwrap_or(0)))
                    .collect();
                (send, vec![1u8; n * max])
            }
            Bench::Allreduce | Bench::Barrier | Bench::AtomicLat => (Vec::new(), Vec::new()),
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

/// The windows of a one-sided benchmark, allocated once for the largest size.
struct Windows<R: Runtime> {
    /// `put_lat`, `get_lat`: the largest size; `put_bw`: a window of them.
    bytes: Option<R::Win<u8>>,
    /// `atomic_lat`: one counter.
    words: Option<R::Win<u64>>,
}

impl<R: Runtime> Windows<R> {
    /// Allocates what `bench` needs (collective). For `get_lat`, rank 1's
    /// part then holds the payload that rank 0 reads.
    fn new(rt: &R, bench: Bench, max: usize, window: usize, b: &Buffers) -> Result<Windows<R>> {
        let mut w = Windows {
            bytes: None,
            words: None,
        };
        match bench {
            Bench::PutLat | Bench::GetLat => w.bytes = Some(rt.win_allocate(max)?),
            Bench::PutBw => w.bytes = Some(rt.win_allocate(max * window)?),
            Bench::AtomicLat => w.words = Some(rt.win_allocate(1)?),
            _ => {}
        }
        if let (Bench::GetLat, 1, Some(win)) = (bench, rt.rank(), &w.bytes) {
            rt.win_write_local(win, &b.send[..max], 0)?;
        }
        Ok(w)
    }

    fn bytes(&self) -> &R::Win<u8> {
        self.bytes.as_ref().expect("allocated for this benchmark")
    }

    fn words(&self) -> &R::Win<u64> {
        self.words.as_ref().expect("allocated for this benchmark")
    }

    /// Frees them (collective).
    fn free(self, rt: &R) -> Result<()> {
        if let Some(w) = self.bytes {
            rt.win_free(w)?;
        }
        if let Some(w) = self.words {
            rt.win_free(w)?;
        }
        Ok(())
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

fn latency<R: Runtime>(rt: &R, b: &mut Buffers, size: usize, c: Counts) -> Result<Option<Spread>> {
    let (s, r) = (&b.send[..size], &mut b.recv[..size]);
    let me = rt.rank();
    r.fill(0);
    let out = match me {
        0 => {
            let mut t0 = Instant::now();
            for i in 0..c.warmup + c.iters {
                if i == c.warmup {
                    t0 = Instant::now();
                }
                rt.send(s, 1, TAG_DATA)?;
                rt.recv(r, 1, TAG_DATA)?;
            }
            let us = micros(t0.elapsed()) / (2 * c.iters) as f64;
            Some(Spread::single(us))
        }
        1 => {
            for _ in 0..c.warmup + c.iters {
                rt.recv(r, 0, TAG_DATA)?;
                rt.send(s, 0, TAG_DATA)?;
            }
            None
        }
        _ => return Ok(None),
    };
    check_pieces(Bench::Latency, me, r, s)?;
    Ok(out)
}

fn bw<R: Runtime>(
    rt: &R,
    b: &mut Buffers,
    size: usize,
    c: Counts,
    window: usize,
) -> Result<Option<Spread>> {
    let mut ack = [0u8; 4];
    match rt.rank() {
        0 => {
            let s = &b.send[..size];
            let mut t0 = Instant::now();
            for i in 0..c.warmup + c.iters {
                if i == c.warmup {
                    t0 = Instant::now();
                }
                rt.send_window(s, window, 1, TAG_DATA)?;
                rt.recv(&mut ack, 1, TAG_ACK)?;
            }
            let bytes = (size * window * c.iters) as f64;
            Ok(Some(Spread::single(mbps(bytes, t0.elapsed()))))
        }
        1 => {
            let r = &mut b.recv[..size * window];
            r.fill(0);
            for _ in 0..c.warmup + c.iters {
                rt.recv_window(r, size, window, 0, TAG_DATA)?;
                rt.send(&ack, 0, TAG_ACK)?;
            }
            check_pieces(Bench::Bw, 1, r, &b.send[..size])?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

fn bibw<R: Runtime>(
    rt: &R,
    b: &mut Buffers,
    size: usize,
    c: Counts,
    window: usize,
) -> Result<Option<Spread>> {
    let me = rt.rank();
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
        rt.exchange_window(s, r, window, peer, TAG_DATA)?;
    }
    let bytes = (2 * size * window * c.iters) as f64;
    let v = mbps(bytes, t0.elapsed());
    check_pieces(Bench::Bibw, me, r, s)?;
    Ok((me == 0).then(|| Spread::single(v)))
}

/// Runs `op` `c.warmup` untimed then `c.iters` timed times inside one
/// passive-target epoch on `w`; returns the time of the timed ones (the
/// epoch's opening and closing are not timed).
fn in_epoch<R: Runtime, T: WinElem>(
    rt: &R,
    w: &R::Win<T>,
    c: Counts,
    mut op: impl FnMut() -> Result<()>,
) -> Result<Duration> {
    rt.epoch_begin(w)?;
    let mut t0 = Instant::now();
    for i in 0..c.warmup + c.iters {
        if i == c.warmup {
            t0 = Instant::now();
        }
        op()?;
    }
    let d = t0.elapsed();
    rt.epoch_end(w)?;
    Ok(d)
}

/// On the target, after the origin's epoch: checks that its part holds
/// `want` in each `want.len()`-byte piece of `r.len()` bytes, then zeroes
/// that much of it for the next size.
fn check_window<R: Runtime>(
    rt: &R,
    w: &R::Win<u8>,
    bench: Bench,
    r: &mut [u8],
    want: &[u8],
) -> Result<()> {
    rt.win_read_local(w, r, 0)?;
    check_pieces(bench, rt.rank(), r, want)?;
    r.fill(0);
    rt.win_write_local(w, r, 0)
}

fn put_lat<R: Runtime>(
    rt: &R,
    w: &R::Win<u8>,
    b: &mut Buffers,
    size: usize,
    c: Counts,
) -> Result<Option<Spread>> {
    let me = rt.rank();
    let s = &b.send[..size];
    let out = if me == 0 {
        let d = in_epoch(rt, w, c, || {
            // SAFETY: `s` stays unchanged until the flush right after.
            unsafe { rt.put(w, s, 1, 0) }?;
            rt.flush(w, 1)
        })?;
        Some(Spread::single(micros(d) / c.iters as f64))
    } else {
        None
    };
    // Rank 1 waits here while rank 0 works, serving its operations.
    rt.barrier()?;
    if me == 1 {
        check_window(rt, w, Bench::PutLat, &mut b.recv[..size], s)?;
    }
    Ok(out)
}

fn get_lat<R: Runtime>(
    rt: &R,
    w: &R::Win<u8>,
    b: &mut Buffers,
    size: usize,
    c: Counts,
) -> Result<Option<Spread>> {
    let me = rt.rank();
    let out = if me == 0 {
        let r = &mut b.recv[..size];
        r.fill(0);
        let d = in_epoch(rt, w, c, || rt.get(w, r, 1, 0))?;
        // Rank 1's part holds the payload (`Windows::new`).
        check_pieces(Bench::GetLat, 0, r, &b.send[..size])?;
        Some(Spread::single(micros(d) / c.iters as f64))
    } else {
        None
    };
    rt.barrier()?;
    Ok(out)
}

fn put_bw<R: Runtime>(
    rt: &R,
    w: &R::Win<u8>,
    b: &mut Buffers,
    size: usize,
    c: Counts,
    window: usize,
) -> Result<Option<Spread>> {
    let me = rt.rank();
    let s = &b.send[..size];
    let out = if me == 0 {
        let d = in_epoch(rt, w, c, || {
            for j in 0..window {
                // SAFETY: `s` stays unchanged until the flush after the loop.
                unsafe { rt.put(w, s, 1, j * size) }?;
            }
            rt.flush(w, 1)
        })?;
        let bytes = (size * window * c.iters) as f64;
        Some(Spread::single(mbps(bytes, d)))
    } else {
        None
    };
    rt.barrier()?;
    if me == 1 {
        check_window(rt, w, Bench::PutBw, &mut b.recv[..size * window], s)?;
    }
    Ok(out)
}

fn atomic_lat<R: Runtime>(rt: &R, w: &R::Win<u64>, c: Counts) -> Result<Option<Spread>> {
    let me = rt.rank();
    let total = (c.warmup + c.iters) as u64;
    let wrong = |what: String| Error::Validation {
        bench: Bench::AtomicLat.name(),
        size: 8,
        rank: me,
        what,
    };
    let out = if me == 0 {
        let mut old = u64::MAX;
        let d = in_epoch(rt, w, c, || {
            old = rt.fetch_add(w, 1, 0, 1)?;
            Ok(())
        })?;
        // The counter starts at 0 and only rank 0 adds to it.
        if old != total - 1 {
            return Err(wrong(format!(
                "the last fetch-and-add returned {old}, expected {}",
                total - 1
            )));
        }
        Some(Spread::single(micros(d) / c.iters as f64))
    } else {
        None
    };
    rt.barrier()?;
    if me == 1 {
        let mut v = [0u64];
        rt.win_read_local(w, &mut v, 0)?;
        if v[0] != total {
            return Err(wrong(format!("the counter is {}, expected {total}", v[0])));
        }
        rt.win_write_local(w, &[0], 0)?;
    }
    Ok(out)
}

/// Keeps this core busy for `d` without communicating (so the runtime's
/// own state is untouched), then meets the other ranks at a barrier.
fn spin_up<R: Runtime>(rt: &R, d: Duration) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::hint::spin_loop();
    }
    rt.barrier()
}

/// Times `op` `c.iters` times after `c.warmup` untimed calls, with a barrier
/// after each; returns this rank's mean in microseconds.
fn timed<R: Runtime>(rt: &R, c: Counts, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut total = Duration::ZERO;
    for i in 0..c.warmup + c.iters {
        let t = Instant::now();
        op()?;
        let d = t.elapsed();
        if i >= c.warmup {
            total += d;
        }
        rt.barrier()?;
    }
    Ok(micros(total) / c.iters as f64)
}

fn allreduce<R: Runtime>(
    rt: &R,
    b: &mut Buffers,
    size: usize,
    c: Counts,
) -> Result<Option<Spread>> {
    let n = size / 4;
    let (s, r) = (&b.fsend[..n], &mut b.frecv[..n]);
    let us = timed(rt, c, || rt.allreduce_sum_f32(s, r))?;
    let p = rt.size();
    let want = (p * (p + 1) / 2) as f32;
    if let Some(bad) = r.iter().position(|&x| x != want) {
        return Err(Error::Validation {
            bench: "allreduce",
            size,
            rank: rt.rank(),
            what: format!("element {bad} is {}, expected {want}", r[bad]),
        });
    }
    spread_over_ranks(rt, us)
}

fn bcast<R: Runtime>(rt: &R, b: &mut Buffers, size: usize, c: Counts) -> Result<Option<Spread>> {
    let me = rt.rank();
    let buf = if me == 0 {
        &mut b.send[..size]
    } else {
        b.recv[..size].fill(0);
        &mut b.recv[..size]
    };
    let us = timed(rt, c, || rt.bcast(buf, 0))?;
    check_pieces(Bench::Bcast, me, buf, &payload(size))?;
    spread_over_ranks(rt, us)
}

fn alltoall<R: Runtime>(rt: &R, b: &mut Buffers, size: usize, c: Counts) -> Result<Option<Spread>> {
    let (me, p) = (rt.rank(), rt.size());
    // The send buffer is laid out for the largest size: gather this size's blocks.
    let max = b.send.len() / p.max(1);
    let send: Vec<u8> = (0..p)
        .flat_map(|j| b.send[j * max..j * max + size].iter().copied())
        .collect();
    let recv = &mut b.recv[..p * size];
    let us = timed(rt, c, || rt.alltoall(&send, recv))?;
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
    spread_over_ranks(rt, us)
}

fn barrier<R: Runtime>(rt: &R, c: Counts) -> Result<Option<Spread>> {
    for _ in 0..c.warmup {
        rt.barrier()?;
    }
    let t0 = Instant::now();
    for _ in 0..c.iters {
        rt.barrier()?;
    }
    let us = micros(t0.elapsed()) / c.iters as f64;
    spread_over_ranks(rt, us)
}

/// Collects every rank's value on rank 0 (outside any timed region).
fn spread_over_ranks<R: Runtime>(rt: &R, mine: f64) -> Result<Option<Spread>> {
    if rt.rank() != 0 {
        rt.send(&mine.to_le_bytes(), 0, TAG_STATS)?;
        return Ok(None);
    }
    let mut all = Vec::with_capacity(rt.size());
    all.push(mine);
    for src in 1..rt.size() {
        let mut b = [0u8; 8];
        rt.recv(&mut b, src, TAG_STATS)?;
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
    use crate::runtime::dos::DosRuntime;

    #[test]
    fn collectives_run_on_one_rank() {
        let rt = DosRuntime::init().unwrap();
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
            let out = run(&rt, bench, &opts).unwrap().unwrap();
            assert!(!out.rows.is_empty(), "{bench:?}");
            assert!(out.rows.iter().all(|r| r.avg >= 0.0 && r.min <= r.max));
        }
        for bench in [Bench::PutLat, Bench::AtomicLat] {
            assert!(matches!(
                run(&rt, bench, &opts),
                Err(Error::TooFewRanks { need: 2, .. })
            ));
        }
        assert!(matches!(
            run(&rt, Bench::Latency, &opts),
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
            let rt = DosRuntime::from_world(world);
            Bench::ALL
                .iter()
                .map(|&b| run(&rt, b, &opts).map_err(|e| e.to_string()))
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

    const ONE_SIDED: [Bench; 4] = [Bench::PutLat, Bench::GetLat, Bench::PutBw, Bench::AtomicLat];

    fn small_opts() -> Options {
        Options {
            max_size: Some(64 << 10), // several 16 KiB active messages per put and get
            iters: Some(3),
            warmup: Some(1),
            window: 4,
            ..Options::default()
        }
    }

    #[test]
    fn one_sided_across_nodes() {
        // Rank 0 alone on one node, ranks 1 and 2 on the other: every
        // operation of rank 0 travels as an active message over tcp, served
        // by rank 1 while it waits in the barrier.
        let opts = small_opts();
        let outs = ::dos::testing::run_cluster(&[1, 2], |world| {
            let rt = DosRuntime::from_world(world);
            ONE_SIDED
                .iter()
                .map(|&b| run(&rt, b, &opts).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        });
        for (rank, per_rank) in outs.into_iter().enumerate() {
            for (b, r) in ONE_SIDED.iter().zip(per_rank) {
                let got = r.unwrap_or_else(|e| panic!("{b:?} on rank {rank}: {e}"));
                assert_eq!(got.is_some(), rank == 0, "{b:?} on rank {rank}");
                if let Some(o) = got {
                    assert_eq!(o.rows.len(), b.sizes(None, opts.max_size).len(), "{b:?}");
                    assert!(o.rows.iter().all(|r| r.avg.is_finite() && r.avg > 0.0));
                }
            }
        }
    }

    /// dos with one one-sided operation broken: it returns at once, doing nothing.
    #[derive(Debug)]
    struct Broken {
        rt: DosRuntime,
        op: Bench,
    }

    impl Runtime for Broken {
        type Win<T: WinElem> = <DosRuntime as Runtime>::Win<T>;
        fn name(&self) -> &'static str {
            "broken"
        }
        fn rank(&self) -> usize {
            self.rt.rank()
        }
        fn size(&self) -> usize {
            self.rt.size()
        }
        fn send(&self, buf: &[u8], dest: usize, tag: i32) -> Result<()> {
            self.rt.send(buf, dest, tag)
        }
        fn recv(&self, buf: &mut [u8], src: usize, tag: i32) -> Result<()> {
            self.rt.recv(buf, src, tag)
        }
        fn send_window(&self, buf: &[u8], n: usize, dest: usize, tag: i32) -> Result<()> {
            self.rt.send_window(buf, n, dest, tag)
        }
        fn recv_window(&self, b: &mut [u8], l: usize, n: usize, s: usize, t: i32) -> Result<()> {
            self.rt.recv_window(b, l, n, s, t)
        }
        fn exchange_window(
            &self,
            s: &[u8],
            r: &mut [u8],
            n: usize,
            p: usize,
            t: i32,
        ) -> Result<()> {
            self.rt.exchange_window(s, r, n, p, t)
        }
        fn barrier(&self) -> Result<()> {
            self.rt.barrier()
        }
        fn bcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
            self.rt.bcast(buf, root)
        }
        fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
            self.rt.allreduce_sum_f32(send, recv)
        }
        fn alltoall(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
            self.rt.alltoall(send, recv)
        }
        fn win_allocate<T: WinElem>(&self, count: usize) -> Result<Self::Win<T>> {
            self.rt.win_allocate(count)
        }
        fn win_free<T: WinElem>(&self, win: Self::Win<T>) -> Result<()> {
            self.rt.win_free(win)
        }
        fn epoch_begin<T: WinElem>(&self, win: &Self::Win<T>) -> Result<()> {
            self.rt.epoch_begin(win)
        }
        fn epoch_end<T: WinElem>(&self, win: &Self::Win<T>) -> Result<()> {
            self.rt.epoch_end(win)
        }
        unsafe fn put<T: WinElem>(
            &self,
            w: &Self::Win<T>,
            s: &[T],
            t: usize,
            d: usize,
        ) -> Result<()> {
            if matches!(self.op, Bench::PutLat | Bench::PutBw) {
                return Ok(());
            }
            // SAFETY: the caller's promise is passed on unchanged.
            unsafe { self.rt.put(w, s, t, d) }
        }
        fn get<T: WinElem>(&self, w: &Self::Win<T>, r: &mut [T], t: usize, d: usize) -> Result<()> {
            if self.op == Bench::GetLat {
                return Ok(());
            }
            self.rt.get(w, r, t, d)
        }
        fn flush<T: WinElem>(&self, win: &Self::Win<T>, target: usize) -> Result<()> {
            self.rt.flush(win, target)
        }
        fn fetch_add(&self, w: &Self::Win<u64>, t: usize, d: usize, v: u64) -> Result<u64> {
            if self.op == Bench::AtomicLat {
                return Ok(0);
            }
            self.rt.fetch_add(w, t, d, v)
        }
        fn win_read_local<T: WinElem>(
            &self,
            w: &Self::Win<T>,
            r: &mut [T],
            d: usize,
        ) -> Result<()> {
            self.rt.win_read_local(w, r, d)
        }
        fn win_write_local<T: WinElem>(&self, w: &Self::Win<T>, s: &[T], d: usize) -> Result<()> {
            self.rt.win_write_local(w, s, d)
        }
        fn abort(&self, code: i32, msg: &str) -> ! {
            self.rt.abort(code, msg)
        }
        fn finalize(self) -> Result<()> {
            self.rt.finalize()
        }
    }

    #[test]
    fn a_broken_operation_is_caught() {
        let opts = small_opts();
        for op in ONE_SIDED {
            // Two nodes, so that the rank that sees the error can vanish
            // and the other one's waiting ends with an error too.
            let outs = ::dos::testing::run_cluster(&[1, 1], |world| {
                let rt = Broken {
                    rt: DosRuntime::from_world(world),
                    op,
                };
                match run(&rt, op, &opts) {
                    Err(Error::Validation { rank, .. }) => {
                        ::dos::testing::vanish(rt.rt.into_world());
                        Some(rank)
                    }
                    _ => None,
                }
            });
            // A put that lands nowhere is seen by the target, a get that
            // reads nothing or a lost atomic by the origin.
            let want = match op {
                Bench::PutLat | Bench::PutBw => vec![None, Some(1)],
                _ => vec![Some(0), None],
            };
            assert_eq!(outs, want, "{op:?}");
        }
    }
}
