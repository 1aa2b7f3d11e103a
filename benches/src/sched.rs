//! What each benchmark measures, over which message sizes, and how many times.
//!
//! The counts follow the OSU micro-benchmarks: many iterations for small
//! messages, fewer above [`LARGE_MESSAGE`] bytes, each preceded by untimed
//! warm-up iterations.

use serde::{Deserialize, Serialize};

/// Messages above this many bytes count as large and get the smaller
/// iteration count (OSU's `LARGE_MESSAGE_SIZE`).
pub const LARGE_MESSAGE: usize = 8192;

/// Messages in flight per window in `bw` and `bibw`, and puts per flush in
/// `put_bw` (OSU's window size).
pub const DEFAULT_WINDOW: usize = 64;

/// One benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bench {
    /// Ping-pong between ranks 0 and 1; one-way latency is half the round trip.
    Latency,
    /// Rank 0 streams windows of nonblocking sends to rank 1, which acknowledges each window.
    Bw,
    /// Ranks 0 and 1 stream windows to each other at the same time.
    Bibw,
    /// `allreduce` of `f32` with sum, every rank.
    Allreduce,
    /// `bcast` from rank 0.
    Bcast,
    /// `alltoall`; the size is the block each rank sends to each other rank.
    Alltoall,
    /// `barrier`.
    Barrier,
    /// One-sided: rank 0 puts into rank 1's window and flushes, per iteration.
    PutLat,
    /// One-sided: rank 0 gets from rank 1's window (complete on return).
    GetLat,
    /// One-sided: rank 0 puts a window of messages into rank 1's window, then flushes once.
    PutBw,
    /// One-sided: rank 0 fetch-and-adds a `u64` in rank 1's window.
    AtomicLat,
}

/// What a benchmark reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// Microseconds per operation: lower is better.
    #[serde(rename = "us")]
    Micros,
    /// Megabytes (10^6 bytes) per second: higher is better.
    #[serde(rename = "MB/s")]
    MBps,
}

impl Unit {
    /// The column heading used in tables.
    pub fn heading(self) -> &'static str {
        match self {
            Unit::Micros => "Latency (us)",
            Unit::MBps => "Bandwidth (MB/s)",
        }
    }

    /// True when a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::MBps)
    }
}

/// Iterations and warm-up iterations for one message size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Timed iterations.
    pub iters: usize,
    /// Untimed iterations before them.
    pub warmup: usize,
}

/// Counts for small and for large messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Up to [`LARGE_MESSAGE`] bytes.
    pub small: Counts,
    /// Above [`LARGE_MESSAGE`] bytes.
    pub large: Counts,
}

impl Plan {
    /// The counts for messages of `size` bytes.
    pub fn counts(&self, size: usize) -> Counts {
        if size > LARGE_MESSAGE {
            self.large
        } else {
            self.small
        }
    }

    /// Applies `--iters` and `--warmup`: each sets the small-message count,
    /// and the large-message count keeps its default proportion to it
    /// (never below one timed iteration).
    pub fn with_overrides(self, iters: Option<usize>, warmup: Option<usize>) -> Plan {
        let scale = |given: usize, small: usize, large: usize, floor: usize| -> usize {
            if small == 0 {
                return large.max(floor);
            }
            let v = (given as u128 * large as u128).div_ceil(small as u128);
            (v as usize).max(floor)
        };
        let mut p = self;
        if let Some(n) = iters {
            p.small.iters = n.max(1);
            p.large.iters = scale(n, self.small.iters, self.large.iters, 1);
        }
        if let Some(w) = warmup {
            p.small.warmup = w;
            p.large.warmup = if w == 0 {
                0
            } else {
                scale(w, self.small.warmup, self.large.warmup, 1)
            };
        }
        p
    }
}

impl Bench {
    /// Every benchmark, in the order `all` runs them.
    pub const ALL: [Bench; 11] = [
        Bench::Latency,
        Bench::Bw,
        Bench::Bibw,
        Bench::Allreduce,
        Bench::Bcast,
        Bench::Alltoall,
        Bench::Barrier,
        Bench::PutLat,
        Bench::GetLat,
        Bench::PutBw,
        Bench::AtomicLat,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Bench::Latency => "latency",
            Bench::Bw => "bw",
            Bench::Bibw => "bibw",
            Bench::Allreduce => "allreduce",
            Bench::Bcast => "bcast",
            Bench::Alltoall => "alltoall",
            Bench::Barrier => "barrier",
            Bench::PutLat => "put_lat",
            Bench::GetLat => "get_lat",
            Bench::PutBw => "put_bw",
            Bench::AtomicLat => "atomic_lat",
        }
    }

    /// The benchmark called `name` on the command line.
    pub fn from_name(name: &str) -> Option<Bench> {
        Bench::ALL.into_iter().find(|b| b.name() == name)
    }

    /// One line saying what it measures.
    pub fn describe(self) -> &'static str {
        match self {
            Bench::Latency => "ping-pong between ranks 0 and 1, one-way latency",
            Bench::Bw => "rank 0 -> 1 bandwidth, windows of 64 nonblocking sends",
            Bench::Bibw => "bidirectional bandwidth between ranks 0 and 1",
            Bench::Allreduce => "allreduce, f32 sum, latency across all ranks",
            Bench::Bcast => "broadcast from rank 0, latency across all ranks",
            Bench::Alltoall => "alltoall (size = block per peer), latency across all ranks",
            Bench::Barrier => "barrier latency across all ranks",
            Bench::PutLat => "one-sided put + flush, rank 0 into rank 1's window, latency",
            Bench::GetLat => "one-sided get, rank 0 from rank 1's window, latency",
            Bench::PutBw => "one-sided rank 0 -> 1 bandwidth, windows of 64 puts + one flush",
            Bench::AtomicLat => "one-sided u64 fetch-and-add on rank 1's window, latency",
        }
    }

    /// What it reports.
    pub fn unit(self) -> Unit {
        match self {
            Bench::Bw | Bench::Bibw | Bench::PutBw => Unit::MBps,
            _ => Unit::Micros,
        }
    }

    /// Ranks it needs at least.
    pub fn min_ranks(self) -> usize {
        if self.pairwise() {
            2
        } else {
            1
        }
    }

    /// True for benchmarks between ranks 0 and 1 that report rank 0's
    /// value; false for collectives over every rank.
    pub fn pairwise(self) -> bool {
        matches!(
            self,
            Bench::Latency
                | Bench::Bw
                | Bench::Bibw
                | Bench::PutLat
                | Bench::GetLat
                | Bench::PutBw
                | Bench::AtomicLat
        )
    }

    /// True for the one-sided benchmarks (windows, put, get, atomics).
    pub fn one_sided(self) -> bool {
        matches!(
            self,
            Bench::PutLat | Bench::GetLat | Bench::PutBw | Bench::AtomicLat
        )
    }

    /// False for benchmarks that take no message size (barrier).
    pub fn sized(self) -> bool {
        !matches!(self, Bench::Barrier)
    }

    /// Message sizes must be a multiple of this (the element size).
    pub fn granule(self) -> usize {
        match self {
            Bench::Allreduce => std::mem::size_of::<f32>(),
            Bench::AtomicLat => std::mem::size_of::<u64>(),
            _ => 1,
        }
    }

    /// Default smallest and largest message size in bytes.
    pub fn default_range(self) -> (usize, usize) {
        match self {
            Bench::Latency => (0, 4 << 20),
            Bench::Bw | Bench::Bibw | Bench::PutLat | Bench::GetLat | Bench::PutBw => (1, 4 << 20),
            Bench::AtomicLat => (8, 8),
            Bench::Allreduce => (8, 1 << 20),
            Bench::Bcast | Bench::Alltoall => (1, 1 << 20),
            Bench::Barrier => (0, 0),
        }
    }

    /// Default iteration counts (the OSU defaults).
    pub fn plan(self) -> Plan {
        let c = |iters, warmup| Counts { iters, warmup };
        match self {
            Bench::Latency | Bench::PutLat | Bench::GetLat | Bench::AtomicLat => Plan {
                small: c(10_000, 100),
                large: c(1_000, 10),
            },
            Bench::Bw | Bench::Bibw | Bench::PutBw => Plan {
                small: c(100, 10),
                large: c(20, 2),
            },
            Bench::Allreduce | Bench::Bcast | Bench::Alltoall | Bench::Barrier => Plan {
                small: c(1_000, 200),
                large: c(100, 10),
            },
        }
    }

    /// The message sizes to run, given optional `--min-size`/`--max-size`
    /// (`atomic_lat` has only its 8 bytes, `barrier` only 0).
    pub fn sizes(self, min: Option<usize>, max: Option<usize>) -> Vec<usize> {
        if !self.sized() {
            return vec![0];
        }
        if self == Bench::AtomicLat {
            return vec![std::mem::size_of::<u64>()];
        }
        let (dmin, dmax) = self.default_range();
        let lo = min.unwrap_or(dmin);
        let hi = max.unwrap_or(dmax);
        // Zero-byte collectives measure nothing useful; zero-byte ping-pong does.
        let zero_ok = matches!(self, Bench::Latency);
        sizes(lo, hi, self.granule(), zero_ok)
    }
}

/// The OSU size schedule: `0` (if `zero_ok` and `min == 0`), then every power
/// of two in `min..=max` that is a multiple of `granule`.
pub fn sizes(min: usize, max: usize, granule: usize, zero_ok: bool) -> Vec<usize> {
    let granule = granule.max(1);
    let mut out = Vec::new();
    if zero_ok && min == 0 && max >= min {
        out.push(0);
    }
    let mut p: usize = 1;
    while p <= max {
        if p >= min && p % granule == 0 {
            out.push(p);
        }
        match p.checked_mul(2) {
            Some(n) => p = n,
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_schedule() {
        assert_eq!(sizes(0, 8, 1, true), vec![0, 1, 2, 4, 8]);
        assert_eq!(sizes(0, 8, 1, false), vec![1, 2, 4, 8]);
        assert_eq!(sizes(3, 20, 1, false), vec![4, 8, 16]);
        assert_eq!(sizes(1, 16, 4, false), vec![4, 8, 16]);
        assert_eq!(sizes(9, 8, 1, true), Vec::<usize>::new());
        assert_eq!(sizes(0, 0, 1, true), vec![0]);
        let lat = Bench::Latency.sizes(None, None);
        assert_eq!(lat.len(), 24); // 0, 1 B .. 4 MiB
        assert_eq!((lat[0], *lat.last().unwrap()), (0, 4 << 20));
        let ar = Bench::Allreduce.sizes(None, None);
        assert_eq!((ar[0], *ar.last().unwrap()), (8, 1 << 20));
        assert_eq!(Bench::Allreduce.sizes(Some(1), Some(8)), vec![4, 8]);
        assert_eq!(Bench::Barrier.sizes(Some(4), Some(64)), vec![0]);
        assert_eq!(sizes(1 << 63, usize::MAX, 1, false), vec![1 << 63]); // no overflow
        let put = Bench::PutLat.sizes(None, None);
        assert_eq!(put.len(), 23); // 1 B .. 4 MiB
        assert_eq!((put[0], *put.last().unwrap()), (1, 4 << 20));
        assert_eq!(Bench::GetLat.sizes(Some(0), Some(4)), vec![1, 2, 4]); // no 0
        assert_eq!(Bench::PutBw.sizes(None, Some(64 << 10)).len(), 17);
        assert_eq!(Bench::AtomicLat.sizes(None, None), vec![8]);
        assert_eq!(Bench::AtomicLat.sizes(Some(1), Some(4)), vec![8]);
    }

    #[test]
    fn iteration_scaling() {
        let p = Bench::Latency.plan();
        assert_eq!(p.counts(8192).iters, 10_000);
        assert_eq!(p.counts(8193).iters, 1_000);
        let q = p.with_overrides(Some(500), Some(20));
        assert_eq!(
            q.small,
            Counts {
                iters: 500,
                warmup: 20
            }
        );
        assert_eq!(
            q.large,
            Counts {
                iters: 50,
                warmup: 2
            }
        );
        // Never fewer than one timed iteration; zero warm-up stays zero.
        let r = Bench::Bw.plan().with_overrides(Some(1), Some(0));
        assert_eq!(
            r.large,
            Counts {
                iters: 1,
                warmup: 0
            }
        );
        assert_eq!(
            r.small,
            Counts {
                iters: 1,
                warmup: 0
            }
        );
        // No overrides, no change.
        assert_eq!(p.with_overrides(None, None), p);
    }

    #[test]
    fn names_round_trip() {
        for b in Bench::ALL {
            assert_eq!(Bench::from_name(b.name()), Some(b));
        }
        assert_eq!(Bench::from_name("nope"), None);
        assert_eq!(Bench::from_name("put_lat"), Some(Bench::PutLat));
        assert_eq!(Bench::from_name("atomic_lat"), Some(Bench::AtomicLat));
    }

    #[test]
    fn one_sided_shape() {
        for b in [Bench::PutLat, Bench::GetLat, Bench::PutBw, Bench::AtomicLat] {
            assert!(b.one_sided() && b.pairwise() && b.sized(), "{b:?}");
            assert_eq!(b.min_ranks(), 2);
            // JSON names are the command-line names.
            assert_eq!(
                serde_json::to_string(&b).unwrap(),
                format!("\"{}\"", b.name())
            );
        }
        assert_eq!(Bench::PutBw.unit(), Unit::MBps);
        assert_eq!(Bench::PutLat.unit(), Unit::Micros);
        assert_eq!(Bench::PutLat.plan(), Bench::Latency.plan());
        assert_eq!(Bench::PutBw.plan(), Bench::Bw.plan());
        assert!(!Bench::Allreduce.pairwise() && !Bench::Latency.one_sided());
        // The single-word names did not change with snake_case.
        for b in [
            Bench::Latency,
            Bench::Bibw,
            Bench::Allreduce,
            Bench::Alltoall,
        ] {
            assert_eq!(
                serde_json::to_string(&b).unwrap(),
                format!("\"{}\"", b.name())
            );
        }
    }
}
