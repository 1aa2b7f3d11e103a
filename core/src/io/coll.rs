//! The collective transfers of [`File`]: gather the access lists, plan
//! ([`super::plan`]), exchange with the aggregators over dos messages, do
//! the I/O, agree on the outcome.
//!
//! A call starts with one allgather of each rank's [`Summary`] (its number
//! of ranges and their span), which decides the path ([`decide`]). When no
//! stripe lies in two ranks' spans, each rank does its own I/O and the call
//! ends there: one collective, no exchange, and (as for independent I/O)
//! each rank's outcome is its own. Otherwise the lists are gathered (not
//! when every rank has at most one range: the summaries are the lists),
//! planned, exchanged in rounds, and the outcome agreed.

use super::error::Result;
use super::file::{agree, File};
use super::plan::{
    decide, direct_worker, plan, Access, Extent, Options, Part, Path, Plan, Summary, Worker,
};
use crate::Comm;

/// Where the bytes of each part of a rank's own list lie: the list's
/// ranges by their start in the packed order.
struct Packed {
    starts: Vec<u64>,
}

impl Packed {
    fn new(lens: impl Iterator<Item = usize>) -> Packed {
        let mut at = 0u64;
        let starts = lens
            .map(|l| {
                let s = at;
                at += l as u64;
                s
            })
            .collect();
        Packed { starts }
    }

    /// The bytes of part `p` (of this rank) in `list`.
    fn source<'a>(&self, list: &[(u64, &'a [u8])], p: &Part) -> &'a [u8] {
        let (k, at) = self.locate(p.buf_offset);
        &list[k].1[at..at + p.len as usize]
    }

    /// The range holding packed byte `buf_offset` (of a non-empty part), and
    /// the offset inside it.
    fn locate(&self, buf_offset: u64) -> (usize, usize) {
        let k = self.starts.partition_point(|&s| s <= buf_offset) - 1;
        (k, (buf_offset - self.starts[k]) as usize)
    }
}

/// The extent of `w` holding part `p` (parts lie inside exactly one).
pub(super) fn extent_of(w: &Worker, p: &Part) -> usize {
    w.extents.partition_point(|e| e.offset <= p.offset) - 1
}

/// The bytes of `bufs` (concatenated) cut into the file `ranges`, in order
/// (their lengths add up to the buffers'; a range may span buffers).
pub(super) fn split<'a>(
    mut bufs: impl Iterator<Item = &'a [u8]>,
    ranges: &[(u64, u64)],
) -> Vec<(u64, &'a [u8])> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut cur: &'a [u8] = &[];
    for &(o, l) in ranges {
        let (mut at, mut left) = (o, l as usize);
        while left > 0 {
            while cur.is_empty() {
                match bufs.next() {
                    Some(b) => cur = b,
                    None => return out,
                }
            }
            let (a, b) = cur.split_at(left.min(cur.len()));
            out.push((at, a));
            cur = b;
            at += a.len() as u64;
            left -= a.len();
        }
    }
    out
}

/// [`split`] of mutable buffers.
pub(super) fn split_mut<'a>(
    mut bufs: impl Iterator<Item = &'a mut [u8]>,
    ranges: &[(u64, u64)],
) -> Vec<(u64, &'a mut [u8])> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut cur: &'a mut [u8] = &mut [];
    for &(o, l) in ranges {
        let (mut at, mut left) = (o, l as usize);
        while left > 0 {
            while cur.is_empty() {
                match bufs.next() {
                    Some(b) => cur = b,
                    None => return out,
                }
            }
            let n = left.min(cur.len());
            let (a, b) = std::mem::take(&mut cur).split_at_mut(n);
            out.push((at, a));
            cur = b;
            at += n as u64;
            left -= n;
        }
    }
    out
}

/// How many bytes of the ranges `mine` lie below `size`.
fn count_below(mine: &Access, size: u64) -> usize {
    mine.iter()
        .map(|&(o, l)| size.saturating_sub(o).min(l))
        .sum::<u64>() as usize
}

/// Counts and displacements of an `alltoallv` from byte counts per rank.
pub(super) fn layout_of(counts: Vec<usize>) -> (Vec<usize>, Vec<usize>, usize) {
    let mut displs = Vec::with_capacity(counts.len());
    let mut at = 0;
    for &c in &counts {
        displs.push(at);
        at += c;
    }
    (counts, displs, at)
}

/// A collective call's plan and its path.
struct Call {
    plan: Plan,
    /// The direct path decided from the summaries: the plan holds this
    /// rank's worker only, and the call needs no further collective.
    alone: bool,
}

impl File {
    fn plan_options(&self) -> Options {
        Options {
            sieve_hole: self.hints.sieve_hole,
            allow_direct: self.hints.direct,
        }
    }

    /// Every rank's access list, gathered, given each rank's count.
    fn gather_accesses(
        &self,
        comm: &Comm,
        mine: &Access,
        counts: &[u64],
    ) -> Result<Vec<Vec<(u64, u64)>>> {
        let n = comm.size();
        let flat: Vec<u64> = mine.iter().flat_map(|&(o, l)| [o, l]).collect();
        let (c2, displs, total) = layout_of(counts.iter().map(|&c| 2 * c as usize).collect());
        let mut all = vec![0u64; total];
        comm.allgatherv(&flat, &mut all, &c2, &displs)?;
        Ok((0..n)
            .map(|r| {
                all[displs[r]..displs[r] + c2[r]]
                    .chunks_exact(2)
                    .map(|x| (x[0], x[1]))
                    .collect()
            })
            .collect())
    }

    /// The plan of one collective call with `mine` as this rank's ranges:
    /// one allgather of the summaries, and the lists only when the path
    /// needs them (see the module's docs).
    fn collective_plan(&self, comm: &Comm, mine: &Access) -> Result<Call> {
        let n = comm.size();
        let mut words = vec![0u64; 3 * n];
        super::quiet::allgather(comm, &Summary::of(mine).to_words(), &mut words)?;
        let sums: Vec<Summary> = words
            .chunks_exact(3)
            .map(|w| Summary::from_words([w[0], w[1], w[2]]))
            .collect();
        let ss = u64::from(self.attr.layout.stripe_size);
        let plan = match decide(&sums, ss, self.hints.direct)? {
            Path::Direct => {
                let me = comm.rank();
                let mut packed = vec![0u64; n];
                packed[me] = mine.iter().map(|r| r.1).sum();
                return Ok(Call {
                    plan: Plan {
                        direct: true,
                        workers: direct_worker(me, mine, self.hints.sieve_hole)?
                            .into_iter()
                            .collect(),
                        packed,
                    },
                    alone: true,
                });
            }
            Path::Known(all) => self.plan_of(&all)?,
            Path::Gather => {
                let counts: Vec<u64> = sums.iter().map(|s| s.count).collect();
                let all = self.gather_accesses(comm, mine, &counts)?;
                self.plan_of(&all)?
            }
        };
        Ok(Call { plan, alone: false })
    }

    /// The plan of every rank's access list.
    pub(super) fn plan_of(&self, all: &[Vec<(u64, u64)>]) -> Result<Plan> {
        let refs: Vec<&Access> = all.iter().map(Vec::as_slice).collect();
        Ok(plan(
            &refs,
            u64::from(self.attr.layout.stripe_size),
            &self.aggregators,
            self.plan_options(),
        )?)
    }

    /// Writes `data` at `offset` (`MPI_File_write_at_all`; collective).
    /// Under a view ([`File::set_view`]), `offset` counts etypes of the
    /// view and the data goes to its pieces of the file, through the same
    /// two-phase engine as [`File::write_at_all_list`].
    pub fn write_at_all(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_at_all_list(&[(offset, data)])
    }

    /// Writes each `(offset, bytes)` of `list` (noncontiguous, any order;
    /// collective, every rank with its own list, possibly empty). Where
    /// ranges overlap, the result is as if ranks wrote in rank order and
    /// each rank its list in order. Under a view, the offsets count etypes
    /// of the view.
    pub fn write_at_all_list(&self, list: &[(u64, &[u8])]) -> Result<()> {
        const OP: &str = "write_at_all";
        self.check_write(OP)?;
        let lens: Vec<(u64, u64)> = list.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
        let ranges = self.to_file(OP, &lens)?;
        let flat = split(list.iter().map(|(_, d)| *d), &ranges);
        self.write_file_list(&self.comm, &flat)
    }

    /// [`File::write_at_all_list`] of file ranges (no view), on `comm` (the
    /// file's communicator, or the private one of nonblocking collectives).
    pub(super) fn write_file_list(&self, comm: &Comm, list: &[(u64, &[u8])]) -> Result<()> {
        const OP: &str = "write_at_all";
        let mine: Vec<(u64, u64)> = list.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
        let Call { plan, alone } = self.collective_plan(comm, &mine)?;
        let me = comm.rank();
        let n = comm.size();
        let packed = Packed::new(list.iter().map(|(_, d)| d.len()));
        let src = |p: &Part| packed.source(list, p);
        if alone {
            return match plan.worker_of(me) {
                Some(w) => {
                    let sources: Vec<&[u8]> = w.parts.iter().map(src).collect();
                    self.locked(|| self.write_extents(w, &sources))
                }
                None => Ok(()),
            };
        }
        let mut res = Ok(());
        for round in self.rounds(&plan) {
            let (recv, rdispls) = if round.direct {
                (Vec::new(), Vec::new())
            } else {
                // Phase one: every rank sends each aggregator its parts.
                let sends = round.send_parts(me);
                let mut scounts = vec![0usize; n];
                let mut sbuf = Vec::new();
                for (&w, parts) in &sends {
                    for p in parts {
                        sbuf.extend_from_slice(src(p));
                        scounts[w] += p.len as usize;
                    }
                }
                let mut rcounts = vec![0usize; n];
                if let Some(w) = round.worker_of(me) {
                    for p in &w.parts {
                        rcounts[p.rank] += p.len as usize;
                    }
                }
                let (scounts, sdispls, _) = layout_of(scounts);
                let (rcounts, rdispls, rtotal) = layout_of(rcounts);
                let mut recv = vec![0u8; rtotal];
                comm.alltoallv(&sbuf, &scounts, &sdispls, &mut recv, &rcounts, &rdispls)?;
                (recv, rdispls)
            };
            // Phase two: the workers write (after a failure, a worker only
            // keeps exchanging, so that every rank stays in step).
            if let (Ok(()), Some(w)) = (&res, round.worker_of(me)) {
                let mut cursor = rdispls.clone();
                let sources: Vec<&[u8]> = w
                    .parts
                    .iter()
                    .map(|p| {
                        if round.direct {
                            src(p)
                        } else {
                            let c = &mut cursor[p.rank];
                            let s = &recv[*c..*c + p.len as usize];
                            *c += p.len as usize;
                            s
                        }
                    })
                    .collect();
                res = self.locked(|| self.write_extents(w, &sources));
            }
        }
        agree(comm, OP, res, 0).map(drop)
    }

    /// The rounds of `plan` (see [`Plan::rounds`] and [`super::Hints::cb_buffer`]).
    pub(super) fn rounds(&self, plan: &Plan) -> Vec<Plan> {
        plan.rounds(
            self.hints.cb_buffer,
            u64::from(self.attr.layout.stripe_size),
            self.hints.sieve_hole,
        )
    }

    /// A worker's writes: each extent from its one part when that part
    /// covers it, else from a buffer (read first when it has holes) with
    /// the parts laid over it in order.
    pub(super) fn write_extents(&self, w: &Worker, sources: &[&[u8]]) -> Result<()> {
        let mut by_extent: Vec<Vec<usize>> = vec![Vec::new(); w.extents.len()];
        for (i, p) in w.parts.iter().enumerate() {
            by_extent[extent_of(w, p)].push(i);
        }
        let c = self.fs.client();
        for (e, parts) in w.extents.iter().zip(&by_extent) {
            if let [only] = parts[..] {
                let p = &w.parts[only];
                if p.offset == e.offset && p.len == e.len {
                    c.write_behind(&self.attr, e.offset, sources[only])?;
                    continue;
                }
            }
            let mut buf = vec![0u8; e.len as usize];
            if !e.full {
                c.read_at(&self.path, &self.attr, e.offset, &mut buf)?;
            }
            for &i in parts {
                let p = &w.parts[i];
                let at = (p.offset - e.offset) as usize;
                buf[at..at + p.len as usize].copy_from_slice(sources[i]);
            }
            c.write_behind(&self.attr, e.offset, &buf)?;
        }
        Ok(())
    }

    /// Reads into `buf` from `offset` (`MPI_File_read_at_all`; collective);
    /// returns how many of the bytes lie before the end of the file (the
    /// rest read as zeros). Under a view, `offset` counts etypes of the view.
    pub fn read_at_all(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_at_all_list(&mut [(offset, buf)])
    }

    /// Reads each `(offset, buffer)` of `list` (noncontiguous, any order;
    /// collective); returns how many of the bytes lie before the end of the
    /// file (the rest read as zeros). Under a view, the offsets count
    /// etypes of the view.
    pub fn read_at_all_list(&self, list: &mut [(u64, &mut [u8])]) -> Result<usize> {
        const OP: &str = "read_at_all";
        self.check_read(OP)?;
        let lens: Vec<(u64, u64)> = list.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
        let ranges = self.to_file(OP, &lens)?;
        let mut flat = split_mut(list.iter_mut().map(|(_, d)| &mut **d), &ranges);
        self.read_file_list(&self.comm, &mut flat)
    }

    /// [`File::read_at_all_list`] of file ranges (no view), on `comm`.
    pub(super) fn read_file_list(
        &self,
        comm: &Comm,
        list: &mut [(u64, &mut [u8])],
    ) -> Result<usize> {
        const OP: &str = "read_at_all";
        let mine: Vec<(u64, u64)> = list.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
        // Every rank's written end reaches the metadata server before the
        // plan's allgather, so rank 0's size below counts the writes of
        // earlier collective calls (whose aggregators hold their ends).
        let published = self.fs.client().publish_size(self.attr.ino);
        let Call { plan, alone } = self.collective_plan(comm, &mine)?;
        let me = comm.rank();
        let n = comm.size();
        let packed = Packed::new(list.iter().map(|(_, d)| d.len()));
        if alone {
            // This rank's own reads, and its own size for the count (every
            // rank published its written end before the allgather).
            published?;
            if let Some(w) = plan.worker_of(me) {
                self.locked(|| self.read_direct(w, list, &packed))?;
            }
            let end = mine.iter().map(|&(o, l)| o + l).max().unwrap_or(0);
            let size = self.size_at_least(end)?;
            return Ok(count_below(&mine, size));
        }
        // Rank 0 learns the size for the count (no request when a size seen
        // before covers every rank's extents).
        let mut res: Result<u64> = if me == 0 {
            let end = plan
                .workers
                .iter()
                .flat_map(|w| w.extents.last())
                .map(|e| e.offset.saturating_add(e.len))
                .max()
                .unwrap_or(0);
            published
                .map_err(super::Error::from)
                .and_then(|()| self.size_at_least(end))
        } else {
            published.map(|()| 0).map_err(super::Error::from)
        };
        for round in self.rounds(&plan) {
            // The direct case: each rank reads straight into its buffers.
            if round.direct {
                if let (Ok(_), Some(w)) = (&res, round.worker_of(me)) {
                    if let Err(e) = self.locked(|| self.read_direct(w, list, &packed)) {
                        res = Err(e);
                    }
                }
                continue;
            }
            // Phase one: the workers read into messages to each rank (zeros
            // after a failure, so that every rank stays in step).
            let mut sbuf = Vec::new();
            let mut scounts = vec![0usize; n];
            if let Some(w) = round.worker_of(me) {
                let bufs = match &res {
                    Ok(_) => self.locked(|| self.read_extents(w)),
                    Err(_) => Ok(Vec::new()),
                };
                let bufs = bufs.unwrap_or_else(|e| {
                    res = Err(e);
                    Vec::new()
                });
                // Messages in rank order, each in part order.
                let mut order: Vec<usize> = (0..w.parts.len()).collect();
                order.sort_by_key(|&i| w.parts[i].rank);
                for i in order {
                    let p = &w.parts[i];
                    let len = p.len as usize;
                    let bytes = (!bufs.is_empty()).then(|| {
                        let k = extent_of(w, p);
                        let at = (p.offset - w.extents[k].offset) as usize;
                        &bufs[k][at..at + len]
                    });
                    scounts[p.rank] += len;
                    match bytes {
                        Some(b) => sbuf.extend_from_slice(b),
                        None => sbuf.resize(sbuf.len() + len, 0),
                    }
                }
            }
            // Phase two: the workers send each rank its parts.
            let sends = round.send_parts(me);
            let mut rcounts = vec![0usize; n];
            for (&w, parts) in &sends {
                rcounts[w] = parts.iter().map(|p| p.len as usize).sum();
            }
            let (scounts, sdispls, _) = layout_of(scounts);
            let (rcounts, rdispls, rtotal) = layout_of(rcounts);
            let mut recv = vec![0u8; rtotal];
            comm.alltoallv(&sbuf, &scounts, &sdispls, &mut recv, &rcounts, &rdispls)?;
            for (&w, parts) in &sends {
                let mut c = rdispls[w];
                for p in parts {
                    let (i, off) = packed.locate(p.buf_offset);
                    let len = p.len as usize;
                    list[i].1[off..off + len].copy_from_slice(&recv[c..c + len]);
                    c += len;
                }
            }
        }
        let size = if me == 0 {
            *res.as_ref().unwrap_or(&0)
        } else {
            0
        };
        let (_, size) = agree(comm, OP, res, size)?;
        Ok(count_below(&mine, size))
    }

    /// A direct worker's reads into its own rank's buffers: an extent that
    /// is exactly one part goes straight into the buffer, others through a
    /// buffer of their own.
    fn read_direct(
        &self,
        w: &Worker,
        list: &mut [(u64, &mut [u8])],
        packed: &Packed,
    ) -> Result<()> {
        let c = self.fs.client();
        let mut by_extent: Vec<Vec<usize>> = vec![Vec::new(); w.extents.len()];
        for (i, p) in w.parts.iter().enumerate() {
            by_extent[extent_of(w, p)].push(i);
        }
        for (e, parts) in w.extents.iter().zip(&by_extent) {
            if let [only] = parts[..] {
                let p = &w.parts[only];
                let (i, off) = packed.locate(p.buf_offset);
                if p.offset == e.offset && p.len == e.len && off + p.len as usize <= list[i].1.len()
                {
                    let dst = &mut list[i].1[off..off + p.len as usize];
                    c.read_at(&self.path, &self.attr, e.offset, dst)?;
                    continue;
                }
            }
            let mut buf = vec![0u8; e.len as usize];
            c.read_at(&self.path, &self.attr, e.offset, &mut buf)?;
            for &k in parts {
                let p = &w.parts[k];
                let (i, off) = packed.locate(p.buf_offset);
                let at = (p.offset - e.offset) as usize;
                let len = p.len as usize;
                list[i].1[off..off + len].copy_from_slice(&buf[at..at + len]);
            }
        }
        Ok(())
    }

    /// A worker's reads: every extent into a buffer.
    pub(super) fn read_extents(&self, w: &Worker) -> Result<Vec<Vec<u8>>> {
        let c = self.fs.client();
        w.extents
            .iter()
            .map(|e: &Extent| {
                let mut buf = vec![0u8; e.len as usize];
                c.read_at(&self.path, &self.attr, e.offset, &mut buf)?;
                Ok(buf)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_locates_parts_past_empty_ranges() {
        let p = Packed::new([0usize, 5, 0, 3].into_iter());
        assert_eq!(p.locate(0), (1, 0));
        assert_eq!(p.locate(4), (1, 4));
        assert_eq!(p.locate(5), (3, 0));
        assert_eq!(p.locate(7), (3, 2));
    }

    #[test]
    fn alltoallv_layout_is_prefix_sums() {
        let (c, d, t) = layout_of(vec![3, 0, 2]);
        assert_eq!((c, d, t), (vec![3, 0, 2], vec![0, 3, 3], 5));
    }
}
