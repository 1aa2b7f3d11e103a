//! The two-phase I/O planner: who reads or writes which bytes of the file,
//! and which bytes travel from which rank to which aggregator. Pure data, no
//! I/O: [`plan`] takes every rank's access list and returns a [`Plan`] that
//! every rank computes identically (they all see the same lists, gathered
//! once), so the exchange needs no negotiation.
//!
//! ## Model
//!
//! Rank `r` accesses a list of `(offset, len)` ranges of the file, in any
//! order, possibly overlapping, holes allowed; its data is *packed*: the
//! bytes of range `k` follow those of ranges `0..k` in its buffer. A
//! collective write has the effect of a serial one that applies ranks in
//! rank order and each rank's ranges in list order (so where ranges
//! overlap, the highest rank and the latest range win; MPI leaves that case
//! undefined, here it is at least deterministic). A collective read fills
//! each rank's packed buffer as serial reads of its ranges would.
//!
//! ## The plan
//!
//! * **Direct** ([`Plan::direct`]): when no stripe is touched by two ranks
//!   (the ranks' ranges do not interleave within a stripe), aggregation
//!   would only add a copy: each rank is its own [`Worker`] for its own
//!   ranges, and nothing is exchanged. Two ranks never touch the same stripe,
//!   so they never contend for a chunk on a server.
//!   Every call first gathers one [`Summary`] per rank (its number of
//!   ranges and their span): when no stripe lies in two ranks' spans
//!   ([`decide`] gives [`Path::Direct`]), each rank plans its own worker
//!   ([`direct_worker`]) without seeing the others' lists, and it is the
//!   worker the full planner would give it. Only when spans share a stripe
//!   are the lists gathered and planned here (possibly still direct, when
//!   the ranges themselves do not interleave).
//! * **Aggregated**: the covering range of every access, from the stripe
//!   holding its first byte to the stripe holding its last, is split into
//!   contiguous *file domains* of whole stripes, as even as stripes allow,
//!   one per aggregator (ROMIO's two-phase I/O with Lustre-style
//!   stripe-aligned domains: no two aggregators ever write one stripe, so
//!   their requests to a server never overlap and each is as large as the
//!   domain). Every range is cut at domain boundaries into [`Part`]s; the
//!   part goes from its rank to the domain's aggregator (write) or back
//!   (read).
//! * **Data sieving**: a worker reads or writes [`Extent`]s, the sorted,
//!   disjoint runs covering its parts, where runs separated by a hole of at
//!   most `sieve_hole` bytes are merged into one extent. An extent with
//!   holes ([`Extent::full`] false) is read first when writing, its parts
//!   are laid over it, and it is written back whole (read-modify-write):
//!   one large request instead of many small ones. In the direct case a
//!   hole is merged only if no *other* rank touches a stripe of it, so a
//!   rank never writes back bytes that another rank writes in the same call.
//!
//! Rank `r`'s message to aggregator `a` is the concatenation of `a`'s parts
//! from `r` in the order of [`Worker::parts`] (rank order, then `r`'s list
//! order), which both ends know from the plan: [`Plan::send_parts`].

use std::collections::BTreeMap;

/// One rank's access: `(offset, len)` ranges of the file, in its buffer's
/// packed order.
pub type Access = [(u64, u64)];

/// Options of the planner (what MPI-IO passes as hints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Holes of at most this many bytes between two runs of one worker are
    /// read and written with them (data sieving); 0 turns sieving off.
    pub sieve_hole: u64,
    /// Whether the direct path may be taken when ranks do not interleave.
    pub allow_direct: bool,
}

impl Default for Options {
    /// Holes up to 64 KiB are sieved; the direct path is allowed.
    fn default() -> Options {
        Options {
            sieve_hole: 64 << 10,
            allow_direct: true,
        }
    }
}

/// A bad access list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A range whose end does not fit in `u64`.
    #[error("rank {rank}: range {offset} + {len} overflows")]
    Overflow {
        /// The rank.
        rank: usize,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// A stripe size of zero.
    #[error("stripe size 0")]
    ZeroStripe,
    /// An aggregator that is not a rank, or none at all while data moves.
    #[error(
        "aggregator list {aggregators:?} is not a non-empty sorted list of ranks below {ranks}"
    )]
    BadAggregators {
        /// The list given.
        aggregators: Vec<usize>,
        /// The number of ranks.
        ranks: usize,
    },
}

/// A piece of one rank's data inside one worker's share of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The rank whose buffer holds (write) or receives (read) the bytes.
    pub rank: usize,
    /// Where the bytes lie in the file.
    pub offset: u64,
    /// How many.
    pub len: u64,
    /// Where they lie in the rank's packed buffer.
    pub buf_offset: u64,
}

/// A contiguous range a worker reads or writes with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Its first byte in the file.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Whether the worker's parts cover every byte of it (a write need not
    /// read it first).
    pub full: bool,
}

/// A rank that does I/O: an aggregator, or (direct) any rank with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// The rank doing the I/O.
    pub rank: usize,
    /// Its file domain (`start..end`, stripe-aligned); in the direct case the
    /// span of its own ranges.
    pub domain: (u64, u64),
    /// What it reads or writes: sorted, disjoint, inside the domain.
    pub extents: Vec<Extent>,
    /// The parts it serves, in rank order, each rank's in its list order.
    pub parts: Vec<Part>,
}

/// The plan of one collective access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// No stripe is touched by two ranks: each rank does its own I/O.
    pub direct: bool,
    /// The workers, by rank, with disjoint extents.
    pub workers: Vec<Worker>,
    /// Bytes in each rank's packed buffer.
    pub packed: Vec<u64>,
}

impl Plan {
    /// The worker rank `rank` is, if any.
    pub fn worker_of(&self, rank: usize) -> Option<&Worker> {
        self.workers.iter().find(|w| w.rank == rank)
    }

    /// The parts `rank` exchanges with each worker, by worker rank, in the
    /// order the bytes travel (in the direct case only the rank itself,
    /// which needs no message; see [`Worker::parts`]).
    pub fn send_parts(&self, rank: usize) -> BTreeMap<usize, Vec<Part>> {
        let mut out: BTreeMap<usize, Vec<Part>> = BTreeMap::new();
        for w in &self.workers {
            for p in w.parts.iter().filter(|p| p.rank == rank) {
                out.entry(w.rank).or_default().push(*p);
            }
        }
        out
    }

    /// The plan cut into rounds, so that no worker handles more than
    /// `window` bytes of file (rounded up to whole stripes of `stripe_size`)
    /// at once (ROMIO's `cb_buffer_size`): round `i` holds the `i`-th
    /// non-empty window of every worker's domain, with its parts (cut at
    /// window boundaries, in the same order) and extents (sieving holes of at
    /// most `sieve_hole` bytes). Windows are disjoint, so rounds may run one
    /// after the other in any order. A direct plan is one round.
    pub fn rounds(&self, window: u64, stripe_size: u64, sieve_hole: u64) -> Vec<Plan> {
        let ss = stripe_size.max(1);
        let window = match window.max(1).div_ceil(ss).checked_mul(ss) {
            Some(w) if !self.direct && !self.workers.is_empty() => w,
            _ => return vec![self.clone()],
        };
        let mut rounds: Vec<Vec<Worker>> = Vec::new();
        for w in &self.workers {
            let mut per: BTreeMap<u64, Vec<Part>> = BTreeMap::new();
            for p in &w.parts {
                let (mut off, end) = (p.offset, p.offset + p.len);
                while off < end {
                    let k = (off - w.domain.0) / window;
                    let w_end = w.domain.0.saturating_add((k + 1).saturating_mul(window));
                    let take = end.min(w_end) - off;
                    per.entry(k).or_default().push(Part {
                        rank: p.rank,
                        offset: off,
                        len: take,
                        buf_offset: p.buf_offset + (off - p.offset),
                    });
                    off += take;
                }
            }
            for (i, (k, parts)) in per.into_iter().enumerate() {
                if rounds.len() <= i {
                    rounds.push(Vec::new());
                }
                let lo = w.domain.0 + k * window;
                let hi = lo.saturating_add(window).min(w.domain.1);
                rounds[i].push(Worker {
                    rank: w.rank,
                    domain: (lo, hi),
                    extents: extents(&parts, sieve_hole, |_, _| true),
                    parts,
                });
            }
        }
        rounds
            .into_iter()
            .map(|workers| Plan {
                direct: false,
                workers,
                packed: self.packed.clone(),
            })
            .collect()
    }

    /// Bytes rank `from` exchanges with worker `to` (either direction).
    pub fn bytes_between(&self, from: usize, to: usize) -> u64 {
        self.worker_of(to).map_or(0, |w| {
            w.parts
                .iter()
                .filter(|p| p.rank == from)
                .map(|p| p.len)
                .sum()
        })
    }
}

/// The plan for `accesses` (one list per rank) over a file of `stripe_size`
/// byte stripes, with `aggregators` (sorted comm ranks) as the aggregators.
pub fn plan(
    accesses: &[&Access],
    stripe_size: u64,
    aggregators: &[usize],
    opts: Options,
) -> Result<Plan, PlanError> {
    if stripe_size == 0 {
        return Err(PlanError::ZeroStripe);
    }
    let n = accesses.len();
    // Checked ranges with their packed offsets; empty ranges dropped.
    let mut packed = vec![0u64; n];
    let mut ranges: Vec<Vec<Part>> = Vec::with_capacity(n);
    for (rank, acc) in accesses.iter().enumerate() {
        let (mine, len) = parts_of(rank, acc)?;
        packed[rank] = len;
        ranges.push(mine);
    }
    let owners = stripe_owners(&ranges, stripe_size);
    let direct = opts.allow_direct && owners.is_some();
    let mut workers = Vec::new();
    if direct {
        let owners = owners.unwrap_or_default();
        for (rank, mine) in ranges.iter().enumerate() {
            if mine.is_empty() {
                continue;
            }
            let lo = mine.iter().map(|p| p.offset).min().unwrap_or(0);
            let hi = mine.iter().map(|p| p.offset + p.len).max().unwrap_or(0);
            let may_fill = |a: u64, b: u64| hole_is_free(&owners, rank, a, b, stripe_size);
            workers.push(Worker {
                rank,
                domain: (lo, hi),
                extents: extents(mine, opts.sieve_hole, may_fill),
                parts: mine.clone(),
            });
        }
        return Ok(Plan {
            direct,
            workers,
            packed,
        });
    }
    let all = ranges.iter().flatten();
    let (Some(lo), Some(hi)) = (
        all.clone().map(|p| p.offset).min(),
        all.map(|p| p.offset + p.len).max(),
    ) else {
        return Ok(Plan {
            direct: true,
            workers,
            packed,
        });
    };
    if aggregators.is_empty()
        || aggregators.windows(2).any(|w| w[0] >= w[1])
        || aggregators.iter().any(|&a| a >= n)
    {
        return Err(PlanError::BadAggregators {
            aggregators: aggregators.to_vec(),
            ranks: n,
        });
    }
    // Stripes first..=last, split into contiguous blocks.
    let first = lo / stripe_size;
    let last = (hi - 1) / stripe_size;
    let stripes = last - first + 1;
    let used = (aggregators.len() as u64).min(stripes);
    let (base, extra) = (stripes / used, stripes % used);
    let mut bounds = Vec::with_capacity(used as usize + 1);
    let mut s = first;
    bounds.push(s);
    for i in 0..used {
        s += base + u64::from(i < extra);
        bounds.push(s);
    }
    let domain_of = |off: u64| -> usize {
        let st = off / stripe_size;
        bounds.partition_point(|&b| b <= st) - 1
    };
    let mut parts: Vec<Vec<Part>> = vec![Vec::new(); used as usize];
    for p in ranges.iter().flatten() {
        let mut off = p.offset;
        let end = p.offset + p.len;
        while off < end {
            let d = domain_of(off);
            let d_end = bounds[d + 1].saturating_mul(stripe_size);
            let take = (end.min(d_end)) - off;
            parts[d].push(Part {
                rank: p.rank,
                offset: off,
                len: take,
                buf_offset: p.buf_offset + (off - p.offset),
            });
            off += take;
        }
    }
    for (d, parts) in parts.into_iter().enumerate() {
        if parts.is_empty() {
            continue;
        }
        let domain = (
            bounds[d].saturating_mul(stripe_size),
            bounds[d + 1].saturating_mul(stripe_size),
        );
        workers.push(Worker {
            rank: aggregators[d],
            domain,
            extents: extents(&parts, opts.sieve_hole, |_, _| true),
            parts,
        });
    }
    Ok(Plan {
        direct: false,
        workers,
        packed,
    })
}

/// `rank`'s non-empty ranges as parts with their packed offsets, and the
/// length of its packed buffer.
fn parts_of(rank: usize, acc: &Access) -> Result<(Vec<Part>, u64), PlanError> {
    let mut mine = Vec::with_capacity(acc.len());
    let mut packed = 0u64;
    for &(offset, len) in acc {
        if offset.checked_add(len).is_none() {
            return Err(PlanError::Overflow { rank, offset, len });
        }
        if len > 0 {
            mine.push(Part {
                rank,
                offset,
                len,
                buf_offset: packed,
            });
        }
        packed += len;
    }
    Ok((mine, packed))
}

/// What a rank tells the others at the start of a collective call: how many
/// ranges it accesses and the span they cover. One allgather of these
/// decides the path ([`decide`]); in the direct case it is the only
/// collective of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The number of ranges (empty ones included), or [`Summary::OVERFLOW`]
    /// when one of them ends past `u64::MAX` (then `first` and `end` are
    /// that range's offset and length, for the error every rank reports).
    pub count: u64,
    /// The first byte of its non-empty ranges (0 when there are none).
    pub first: u64,
    /// One past their last byte (0 when there are none).
    pub end: u64,
}

impl Summary {
    /// The `count` of a list with a range that overflows.
    pub const OVERFLOW: u64 = u64::MAX;

    /// The summary of one rank's access list.
    pub fn of(acc: &Access) -> Summary {
        let mut s = Summary {
            count: acc.len() as u64,
            first: u64::MAX,
            end: 0,
        };
        for &(offset, len) in acc {
            let Some(end) = offset.checked_add(len) else {
                return Summary {
                    count: Summary::OVERFLOW,
                    first: offset,
                    end: len,
                };
            };
            if len > 0 {
                s.first = s.first.min(offset);
                s.end = s.end.max(end);
            }
        }
        if s.end == 0 {
            s.first = 0;
        }
        s
    }

    /// As the three words of the allgather.
    pub fn to_words(self) -> [u64; 3] {
        [self.count, self.first, self.end]
    }

    /// From the three words of the allgather.
    pub fn from_words(w: [u64; 3]) -> Summary {
        Summary {
            count: w[0],
            first: w[1],
            end: w[2],
        }
    }
}

/// How a collective call proceeds, decided from every rank's [`Summary`]
/// (every rank decides the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// No stripe lies in the spans of two ranks (the IOR segmented pattern):
    /// each rank reads or writes its own ranges ([`direct_worker`]); no
    /// list is gathered and nothing is exchanged. The full planner would
    /// give the same workers (its direct case covers this one).
    Direct,
    /// No rank has more than one range: the summaries are the lists (one
    /// per rank), to plan with [`plan`] without gathering them.
    Known(Vec<Vec<(u64, u64)>>),
    /// The lists must be gathered (their counts are the summaries').
    Gather,
}

/// The path of a collective call from every rank's summary over a file of
/// `stripe_size` byte stripes (direct only if `allow_direct`).
pub fn decide(
    summaries: &[Summary],
    stripe_size: u64,
    allow_direct: bool,
) -> Result<Path, PlanError> {
    if stripe_size == 0 {
        return Err(PlanError::ZeroStripe);
    }
    if let Some((rank, s)) = summaries
        .iter()
        .enumerate()
        .find(|(_, s)| s.count == Summary::OVERFLOW)
    {
        return Err(PlanError::Overflow {
            rank,
            offset: s.first,
            len: s.end,
        });
    }
    if allow_direct {
        let mut spans: Vec<(u64, u64)> = summaries
            .iter()
            .filter(|s| s.first < s.end)
            .map(|s| (s.first / stripe_size, (s.end - 1) / stripe_size))
            .collect();
        spans.sort_unstable();
        if spans.windows(2).all(|w| w[0].1 < w[1].0) {
            return Ok(Path::Direct);
        }
    }
    if summaries.iter().all(|s| s.count <= 1) {
        return Ok(Path::Known(
            summaries
                .iter()
                .map(|s| {
                    if s.first < s.end {
                        vec![(s.first, s.end - s.first)]
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        ));
    }
    Ok(Path::Gather)
}

/// On the [`Path::Direct`] path, rank `rank`'s own worker for its list
/// `acc` (`None` if it has no bytes to move): its ranges as parts, in list
/// order, and their extents, holes of at most `sieve_hole` bytes filled
/// (every hole lies inside the rank's span, whose stripes no other rank
/// touches). A one-rank [`Plan`] of it has `direct` set.
pub fn direct_worker(
    rank: usize,
    acc: &Access,
    sieve_hole: u64,
) -> Result<Option<Worker>, PlanError> {
    let (parts, _) = parts_of(rank, acc)?;
    let (Some(lo), Some(hi)) = (
        parts.iter().map(|p| p.offset).min(),
        parts.iter().map(|p| p.offset + p.len).max(),
    ) else {
        return Ok(None);
    };
    Ok(Some(Worker {
        rank,
        domain: (lo, hi),
        extents: extents(&parts, sieve_hole, |_, _| true),
        parts,
    }))
}

/// Runs of stripes touched by each rank, as sorted disjoint `(first, last,
/// rank)` intervals, if no stripe is touched by two ranks; `None` otherwise.
fn stripe_owners(ranges: &[Vec<Part>], ss: u64) -> Option<Vec<(u64, u64, usize)>> {
    let mut iv: Vec<(u64, u64, usize)> = ranges
        .iter()
        .flatten()
        .map(|p| (p.offset / ss, (p.offset + p.len - 1) / ss, p.rank))
        .collect();
    iv.sort_unstable();
    let mut merged: Vec<(u64, u64, usize)> = Vec::with_capacity(iv.len());
    for (a, b, r) in iv {
        match merged.last_mut() {
            Some(last) if a <= last.1 => {
                if last.2 != r {
                    return None;
                }
                last.1 = last.1.max(b);
            }
            _ => merged.push((a, b, r)),
        }
    }
    Some(merged)
}

/// Whether the hole `a..b` (bytes) touches no stripe of a rank other than
/// `rank` (direct case: filling it cannot overwrite another rank's bytes).
fn hole_is_free(owners: &[(u64, u64, usize)], rank: usize, a: u64, b: u64, ss: u64) -> bool {
    let (sa, sb) = (a / ss, (b - 1) / ss);
    // First interval whose last stripe is >= sa.
    let i = owners.partition_point(|iv| iv.1 < sa);
    owners[i..]
        .iter()
        .take_while(|iv| iv.0 <= sb)
        .all(|iv| iv.2 == rank)
}

/// The extents covering `parts`: runs of covered bytes, merged across holes
/// of at most `hole` bytes that `may_fill(start, end)` allows.
fn extents(parts: &[Part], hole: u64, may_fill: impl Fn(u64, u64) -> bool) -> Vec<Extent> {
    let mut iv: Vec<(u64, u64)> = parts.iter().map(|p| (p.offset, p.offset + p.len)).collect();
    iv.sort_unstable();
    // Covered runs.
    let mut runs: Vec<(u64, u64)> = Vec::with_capacity(iv.len());
    for (a, b) in iv {
        match runs.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => runs.push((a, b)),
        }
    }
    let mut out: Vec<Extent> = Vec::with_capacity(runs.len());
    for (a, b) in runs {
        if let Some(last) = out.last_mut() {
            let end = last.offset + last.len;
            if a - end <= hole && may_fill(end, a) {
                last.len = b - last.offset;
                last.full = false;
                continue;
            }
        }
        out.push(Extent {
            offset: a,
            len: b - a,
            full: true,
        });
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
