//! Nonblocking collective I/O (`MPI_File_iwrite_at_all`,
//! `MPI_File_iread_at_all`).
//!
//! `iwrite_at_all` and `iread_at_all` check their arguments, map them
//! through the view and queue the operation on the file; the call returns
//! at once with an [`IoRequest`]. Each operation is a state machine over the
//! same two-phase engine as the blocking calls ([`super::plan`]), whose
//! communication steps are nonblocking collectives of dos's schedule engine
//! (`coll/nonblocking`) on a private duplicate of the file's communicator
//! (made when the file is opened): gather the access lists (two
//! `iallgatherv`), plan, then per round an `ialltoallv` to or from the
//! aggregators around the aggregator's I/O, and agree on the outcome (an
//! `iallreduce`, and an `ibcast` of the error if any rank failed). Their
//! messages never meet those of other collectives on the file's or the
//! caller's communicator, whatever is started in between. An operation owns
//! its buffers (a write copies its data at the start, so the caller's buffer
//! is free at once; a read's bytes are copied into the caller's buffer when
//! its request completes), so nothing it touches can go away before its
//! transfers end.
//!
//! The operations of a file run one after the other, in the order they
//! were started, which is the same on every rank (MPI requires ranks to
//! start collectives in the same order): only the oldest one starts
//! transfers, so their schedules are started in the same order everywhere.
//! Progress is MPI's weak progress, as with ROMIO's generalized requests:
//! the transfers in flight advance in any dos call, and an operation moves
//! to its next step when a request of the file is tested or waited for
//! ([`IoRequest::test`] does not block; it may do this rank's part of the
//! file I/O of a step), or when the file's view or atomicity is set or the
//! file closed, which complete every operation in flight. Completing the
//! requests in another order than they were started is fine: waiting for
//! one first completes those started before it.

use std::collections::{BTreeMap, VecDeque};

use super::coll::{extent_of, layout_of};
use super::error::{Error, FsErrorKind, Result};
use super::file::{File, MAX_MESSAGE};
use super::nb::{Inner, IoRequest};
use super::plan::{Part, Plan};
use crate::engine::ReqId;
use crate::request::Scope;
use crate::Comm;

/// What an operation does.
#[derive(Debug)]
enum Kind {
    /// Write `data` (packed) to the file ranges.
    Write { data: Vec<u8> },
    /// Read the file ranges into `out` (packed).
    Read { out: Vec<u8> },
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Queued, nothing started.
    Queued,
    /// Gathering the lengths of the access lists.
    Counts,
    /// Gathering the access lists.
    Lists,
    /// Exchanging round `round`'s data.
    Exchange,
    /// Agreeing on the outcome.
    Agree,
    /// Receiving the error of the rank that failed.
    Message,
}

/// One nonblocking collective operation. Its buffers are not touched (nor
/// moved: they are heap buffers) while a transfer `sub` is in flight.
#[derive(Debug)]
struct Machine {
    id: u64,
    comm: Comm,
    kind: Kind,
    ranges: Vec<(u64, u64)>,
    stage: Stage,
    /// The nonblocking collective in flight.
    sub: Option<ReqId>,
    /// Counts of the access lists: this rank's, everyone's.
    count: Vec<u64>,
    counts: Vec<u64>,
    /// The access lists: this rank's flattened, everyone's.
    flat: Vec<u64>,
    all: Vec<u64>,
    /// Layout of `all`: counts and displacements (in u64s).
    lists: (Vec<usize>, Vec<usize>),
    rounds: Vec<Plan>,
    round: usize,
    /// A round's exchange: send and receive buffers and their layouts.
    sbuf: Vec<u8>,
    scounts: (Vec<usize>, Vec<usize>),
    recv: Vec<u8>,
    rcounts: (Vec<usize>, Vec<usize>),
    /// This rank's outcome so far, and a read's file size (rank 0).
    res: Result<()>,
    size: u64,
    agree_send: Vec<u64>,
    agree_recv: Vec<u64>,
    /// The failed rank's error: `[is_fs, kind, len]` as 24 bytes, then the
    /// message.
    msg: Vec<u8>,
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Dropped unfinished (a file dropped while unwinding): detach the
        // transfer from the buffers before they go.
        if let Some(id) = self.sub.take() {
            self.comm.eng.enter().abandon(id);
        }
    }
}

/// The file's nonblocking collective operations: in flight (oldest first),
/// and finished but not yet collected by their requests.
#[derive(Debug)]
pub(crate) struct Queue {
    /// The private duplicate of the file's communicator.
    comm: Comm,
    /// Sequence number of the next operation.
    next: u64,
    pending: VecDeque<Box<Machine>>,
    /// Outcomes: bytes (written, or of a read before the end of the file)
    /// and a read's bytes.
    done: BTreeMap<u64, Result<(usize, Vec<u8>)>>,
}

impl Machine {
    /// Waits for (`block`) or tests the transfer in flight; `Ok(false)` if
    /// it is still going.
    fn sub_done(&mut self, block: bool) -> Result<bool> {
        let Some(id) = self.sub else {
            return Ok(true);
        };
        let eng = self.comm.eng.enter();
        let r = if block {
            eng.wait(id)
        } else if eng.is_done(id) || {
            eng.progress();
            eng.is_done(id)
        } {
            eng.take(id)
        } else {
            return Ok(false);
        };
        self.sub = None;
        r.map(|_| true).map_err(Error::from)
    }

    /// Advances as far as it can without waiting (or, with `block`, to the
    /// end); returns the outcome once finished.
    #[allow(clippy::type_complexity)]
    fn step(&mut self, f: &File, block: bool) -> Option<Result<(usize, Vec<u8>)>> {
        loop {
            match self.sub_done(block) {
                Ok(true) => {}
                Ok(false) => return None,
                // Communication failed: the other ranks see it too.
                Err(e) => return Some(Err(e)),
            }
            let next = match self.stage {
                Stage::Queued => {
                    // A read's rank 0 asks for the size after the lists'
                    // allgather: every rank's written end is told first.
                    if let (Kind::Read { .. }, Ok(())) = (&self.kind, &self.res) {
                        if let Err(e) = f.fs.client().publish_size(f.attr.ino) {
                            self.res = Err(e.into());
                        }
                    }
                    self.start_counts()
                }
                Stage::Counts => self.start_lists(),
                Stage::Lists => self.plan(f).and_then(|()| self.next_round(f)),
                Stage::Exchange => {
                    self.finish_exchange(f);
                    self.round += 1;
                    self.next_round(f)
                }
                Stage::Agree => match self.agreed() {
                    Some(r) => return Some(r),
                    None => self.start_message(),
                },
                Stage::Message => {
                    let res = std::mem::replace(&mut self.res, Ok(()));
                    return Some(Err(match res {
                        // This rank failed first: its own error.
                        Err(e) => e,
                        Ok(()) => self.remote_error(),
                    }));
                }
            };
            if let Err(e) = next {
                return Some(Err(e));
            }
        }
    }

    fn start_counts(&mut self) -> Result<()> {
        let n = self.comm.size();
        self.count = vec![self.ranges.len() as u64];
        self.counts = vec![0; n];
        let ones = vec![1usize; n];
        let displs: Vec<usize> = (0..n).collect();
        // SAFETY: `count` and `counts` are not touched until the request
        // is taken (`sub_done`) or abandoned (`drop`).
        self.sub = Some(unsafe {
            self.comm
                .iallgatherv_detached(&self.count, &mut self.counts, &ones, &displs)?
        });
        self.stage = Stage::Counts;
        Ok(())
    }

    fn start_lists(&mut self) -> Result<()> {
        let c2: Vec<usize> = self.counts.iter().map(|&c| 2 * c as usize).collect();
        let (c2, displs, total) = layout_of(c2);
        self.flat = self.ranges.iter().flat_map(|&(o, l)| [o, l]).collect();
        self.all = vec![0; total];
        self.lists = (c2, displs);
        // SAFETY: as in `start_counts`.
        self.sub = Some(unsafe {
            self.comm.iallgatherv_detached(
                &self.flat,
                &mut self.all,
                &self.lists.0,
                &self.lists.1,
            )?
        });
        self.stage = Stage::Lists;
        Ok(())
    }

    fn plan(&mut self, f: &File) -> Result<()> {
        let (c, d) = &self.lists;
        let all: Vec<Vec<(u64, u64)>> = (0..self.comm.size())
            .map(|r| {
                self.all[d[r]..d[r] + c[r]]
                    .chunks_exact(2)
                    .map(|x| (x[0], x[1]))
                    .collect()
            })
            .collect();
        // Every rank plans the same lists: a bad list fails everywhere.
        match f.plan_of(&all) {
            Ok(p) => self.rounds = f.rounds(&p),
            Err(e) => self.res = Err(e),
        }
        if let (Kind::Read { .. }, 0, Ok(())) = (&self.kind, self.comm.rank(), &self.res) {
            match f.fs.client().stat(&f.path) {
                Ok(a) => self.size = a.size,
                Err(e) => self.res = Err(e.into()),
            }
        }
        Ok(())
    }

    /// The bytes of this rank's part `p` (a write's data, packed).
    fn mine<'a>(data: &'a [u8], p: &Part) -> &'a [u8] {
        &data[p.buf_offset as usize..(p.buf_offset + p.len) as usize]
    }

    /// Starts round `round` (or the agreement after the last): the I/O
    /// that comes before its exchange, then the exchange.
    fn next_round(&mut self, f: &File) -> Result<()> {
        let (me, n) = (self.comm.rank(), self.comm.size());
        loop {
            let Some(round) = self.rounds.get(self.round) else {
                return self.start_agree();
            };
            let mut scounts = vec![0usize; n];
            let mut rcounts = vec![0usize; n];
            self.sbuf.clear();
            match &mut self.kind {
                Kind::Write { data } => {
                    if round.direct {
                        if let (Ok(()), Some(w)) = (&self.res, round.worker_of(me)) {
                            let src: Vec<&[u8]> =
                                w.parts.iter().map(|p| Machine::mine(data, p)).collect();
                            self.res = f.locked(|| f.write_extents(w, &src));
                        }
                        self.round += 1;
                        continue;
                    }
                    for (&w, parts) in &round.send_parts(me) {
                        for p in parts {
                            self.sbuf.extend_from_slice(Machine::mine(data, p));
                            scounts[w] += p.len as usize;
                        }
                    }
                    if let Some(w) = round.worker_of(me) {
                        for p in &w.parts {
                            rcounts[p.rank] += p.len as usize;
                        }
                    }
                }
                Kind::Read { out } => {
                    if let Some(w) = round.worker_of(me) {
                        let bufs = match &self.res {
                            Ok(()) => f.locked(|| f.read_extents(w)),
                            Err(_) => Ok(Vec::new()),
                        };
                        let bufs = bufs.unwrap_or_else(|e| {
                            self.res = Err(e);
                            Vec::new()
                        });
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
                            if round.direct {
                                if let Some(b) = bytes {
                                    let at = p.buf_offset as usize;
                                    out[at..at + len].copy_from_slice(b);
                                }
                            } else {
                                scounts[p.rank] += len;
                                match bytes {
                                    Some(b) => self.sbuf.extend_from_slice(b),
                                    None => self.sbuf.resize(self.sbuf.len() + len, 0),
                                }
                            }
                        }
                    }
                    if round.direct {
                        self.round += 1;
                        continue;
                    }
                    for (&w, parts) in &round.send_parts(me) {
                        rcounts[w] = parts.iter().map(|p| p.len as usize).sum();
                    }
                }
            }
            let (sc, sd, _) = layout_of(scounts);
            let (rc, rd, rtotal) = layout_of(rcounts);
            self.recv = vec![0u8; rtotal];
            self.scounts = (sc, sd);
            self.rcounts = (rc, rd);
            // SAFETY: as in `start_counts`.
            self.sub = Some(unsafe {
                self.comm.ialltoallv_detached(
                    &self.sbuf,
                    (&self.scounts.0, &self.scounts.1),
                    &mut self.recv,
                    (&self.rcounts.0, &self.rcounts.1),
                )?
            });
            self.stage = Stage::Exchange;
            return Ok(());
        }
    }

    /// After a round's exchange: an aggregator writes what it received; a
    /// rank copies what it was sent into its read buffer.
    fn finish_exchange(&mut self, f: &File) {
        let me = self.comm.rank();
        let round = &self.rounds[self.round];
        match &mut self.kind {
            Kind::Write { .. } => {
                if let (Ok(()), Some(w)) = (&self.res, round.worker_of(me)) {
                    let mut cursor = self.rcounts.1.clone();
                    let sources: Vec<&[u8]> = w
                        .parts
                        .iter()
                        .map(|p| {
                            let c = &mut cursor[p.rank];
                            let s = &self.recv[*c..*c + p.len as usize];
                            *c += p.len as usize;
                            s
                        })
                        .collect();
                    self.res = f.locked(|| f.write_extents(w, &sources));
                }
            }
            Kind::Read { out } => {
                for (&w, parts) in &round.send_parts(me) {
                    let mut c = self.rcounts.1[w];
                    for p in parts {
                        let (at, len) = (p.buf_offset as usize, p.len as usize);
                        out[at..at + len].copy_from_slice(&self.recv[c..c + len]);
                        c += len;
                    }
                }
            }
        }
    }

    fn start_agree(&mut self) -> Result<()> {
        let me = self.comm.rank() as u64;
        self.agree_send = vec![if self.res.is_err() { u64::MAX - me } else { 0 }, self.size];
        self.agree_recv = vec![0; 2];
        // SAFETY: as in `start_counts`.
        self.sub = Some(unsafe {
            self.comm
                .iallreduce_max_detached(&self.agree_send, &mut self.agree_recv)?
        });
        self.stage = Stage::Agree;
        Ok(())
    }

    /// The outcome if every rank succeeded; `None` if one failed (its
    /// error comes next).
    fn agreed(&mut self) -> Option<Result<(usize, Vec<u8>)>> {
        if self.agree_recv[0] != 0 {
            return None;
        }
        Some(Ok(match &mut self.kind {
            Kind::Write { data } => (data.len(), Vec::new()),
            Kind::Read { out } => {
                let size = self.agree_recv[1];
                let count: u64 = self
                    .ranges
                    .iter()
                    .map(|&(o, l)| size.saturating_sub(o).min(l))
                    .sum();
                (count as usize, std::mem::take(out))
            }
        }))
    }

    /// Starts the broadcast of the error of the rank that failed first
    /// (lowest), which sends its own.
    fn start_message(&mut self) -> Result<()> {
        let root = (u64::MAX - self.agree_recv[0]) as usize;
        self.msg = vec![0u8; 24 + MAX_MESSAGE];
        if root != self.comm.rank() {
            // Not the sender: its own error, if any, gives way to root's.
            self.res = Ok(());
        }
        if let Err(e) = &self.res {
            let mut m = e.to_string().into_bytes();
            m.truncate(MAX_MESSAGE);
            let hdr = [
                u64::from(e.fs_kind().is_some()),
                e.fs_kind().map_or(0, FsErrorKind::code),
                m.len() as u64,
            ];
            for (i, h) in hdr.iter().enumerate() {
                self.msg[8 * i..8 * i + 8].copy_from_slice(&h.to_le_bytes());
            }
            self.msg[24..24 + m.len()].copy_from_slice(&m);
        }
        // SAFETY: as in `start_counts`.
        self.sub = Some(unsafe { self.comm.ibcast_detached(&mut self.msg, root)? });
        self.stage = Stage::Message;
        Ok(())
    }

    /// The failed rank's error, as every rank returns it.
    fn remote_error(&self) -> Error {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.msg[8 * i..8 * i + 8]);
            u64::from_le_bytes(b)
        };
        let len = (word(2) as usize).min(MAX_MESSAGE);
        let message = String::from_utf8_lossy(&self.msg[24..24 + len]).into_owned();
        if word(0) == 1 {
            Error::Fs {
                kind: FsErrorKind::from_code(word(1)),
                message,
            }
        } else {
            Error::Elsewhere {
                op: match self.kind {
                    Kind::Write { .. } => "iwrite_at_all",
                    Kind::Read { .. } => "iread_at_all",
                },
                rank: (u64::MAX - self.agree_recv[0]) as usize,
                message,
            }
        }
    }
}

impl Queue {
    /// The queue of a file opened on `comm`: makes the private duplicate
    /// (collective), so that starting an operation never waits for others.
    pub(super) fn new(comm: &Comm) -> Result<Queue> {
        Ok(Queue {
            comm: comm.dup()?,
            next: 0,
            pending: VecDeque::new(),
            done: BTreeMap::new(),
        })
    }
}

impl File {
    /// Queues an operation and starts it if it is the oldest; returns its
    /// number.
    fn enqueue(&self, kind: Kind, ranges: Vec<(u64, u64)>) -> Result<u64> {
        let id = {
            let mut q = self.queue.borrow_mut();
            let id = q.next;
            q.next += 1;
            let comm = q.comm.clone();
            q.pending.push_back(Box::new(Machine {
                id,
                comm,
                kind,
                ranges,
                stage: Stage::Queued,
                sub: None,
                count: Vec::new(),
                counts: Vec::new(),
                flat: Vec::new(),
                all: Vec::new(),
                lists: (Vec::new(), Vec::new()),
                rounds: Vec::new(),
                round: 0,
                sbuf: Vec::new(),
                scounts: (Vec::new(), Vec::new()),
                recv: Vec::new(),
                rcounts: (Vec::new(), Vec::new()),
                res: Ok(()),
                size: 0,
                agree_send: Vec::new(),
                agree_recv: Vec::new(),
                msg: Vec::new(),
            }));
            id
        };
        self.run_queue(Some(id), false);
        Ok(id)
    }

    /// Advances the operations in order, up to operation `upto` (all if
    /// `None`): to their end with `block`, else as far as they go without
    /// waiting. Returns whether they have all finished.
    pub(super) fn run_queue(&self, upto: Option<u64>, block: bool) -> bool {
        loop {
            let head = {
                let mut q = self.queue.borrow_mut();
                match q.pending.front() {
                    Some(m) if upto.is_none_or(|u| m.id <= u) => q.pending.pop_front(),
                    _ => return true,
                }
            };
            let Some(mut m) = head else {
                return true;
            };
            match m.step(self, block) {
                Some(out) => {
                    self.queue.borrow_mut().done.insert(m.id, out);
                }
                None => {
                    self.queue.borrow_mut().pending.push_front(m);
                    return false;
                }
            }
        }
    }

    /// Completes every operation in flight (their outcomes wait for their
    /// requests).
    pub(super) fn drain(&self) {
        self.run_queue(None, true);
    }

    /// Whether operation `id` has finished, advancing the queue without
    /// waiting.
    pub(super) fn test_op(&self, id: u64) -> bool {
        self.run_queue(Some(id), false);
        self.queue.borrow().done.contains_key(&id)
    }

    /// The outcome of operation `id`, waiting for it.
    pub(super) fn collect(&self, id: u64) -> Result<(usize, Vec<u8>)> {
        self.run_queue(Some(id), true);
        let r = self.queue.borrow_mut().done.remove(&id);
        r.unwrap_or_else(|| {
            Err(Error::InvalidArgument {
                op: "IoRequest::wait",
                reason: "the collective operation was not found on its file".into(),
            })
        })
    }

    /// Completes operation `id` and drops its outcome (its request is
    /// dropped unwaited).
    pub(super) fn forget(&self, id: u64) {
        self.run_queue(Some(id), true);
        self.queue.borrow_mut().done.remove(&id);
    }

    /// Starts writing `data` at `offset` collectively
    /// (`MPI_File_iwrite_at_all`): as [`File::write_at_all`], completed by
    /// the request: the data is copied, so `data` is free again at once;
    /// the operation advances when a request of the file is tested or
    /// waited for (see the [manual](super#nonblocking-collective-io)).
    /// Collective:
    /// every rank starts it, in the same order as its other nonblocking
    /// collectives on the file. The request's [`IoRequest::wait`] returns
    /// `data.len()`, or the error every rank gets.
    pub fn iwrite_at_all<'s>(
        &'s self,
        _s: &'s Scope<'s, '_>,
        offset: u64,
        data: &[u8],
    ) -> Result<IoRequest<'s>> {
        const OP: &str = "iwrite_at_all";
        self.check_write(OP)?;
        let ranges = self.to_file(OP, &[(offset, data.len() as u64)])?;
        let id = self.enqueue(
            Kind::Write {
                data: data.to_vec(),
            },
            ranges,
        )?;
        Ok(IoRequest::from_inner(Inner::Coll {
            file: self,
            id,
            out: None,
        }))
    }

    /// Starts reading into `buf` from `offset` collectively
    /// (`MPI_File_iread_at_all`): as [`File::read_at_all`]; `buf` stays
    /// borrowed until the request completes, and receives the bytes then.
    /// The request's [`IoRequest::wait`] returns how many of the bytes lie
    /// before the end of the file.
    pub fn iread_at_all<'s>(
        &'s self,
        _s: &'s Scope<'s, '_>,
        offset: u64,
        buf: &'s mut [u8],
    ) -> Result<IoRequest<'s>> {
        const OP: &str = "iread_at_all";
        self.check_read(OP)?;
        let ranges = self.to_file(OP, &[(offset, buf.len() as u64)])?;
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let out = vec![0u8; total as usize];
        let id = self.enqueue(Kind::Read { out }, ranges)?;
        Ok(IoRequest::from_inner(Inner::Coll {
            file: self,
            id,
            out: Some(buf),
        }))
    }
}
