//! Nonblocking collectives (`MPI_Ibarrier`, `MPI_Ibcast`, `MPI_Iallreduce`, ...).
//!
//! Each `i`-collective starts inside a [`crate::scope`] and returns an
//! ordinary [`Request`]: wait for it, test it, or pass it to
//! [`Request::wait_all`]/[`Request::wait_any`] with point-to-point requests.
//! Its buffers stay borrowed until the scope ends, and the scope does not end
//! before the collective has completed.
//!
//! ```
//! use dos::op::Sum;
//! dos::testing::run_threads(3, |world| {
//!     let mine = [world.rank() as u64 + 1];
//!     let mut total = [0u64];
//!     let mut root_says = if world.rank() == 0 { [42u32] } else { [0] };
//!     dos::scope(|s| {
//!         let a = world.iallreduce(s, &mine, &mut total, Sum).unwrap();
//!         let b = world.ibcast(s, &mut root_says, 0).unwrap();
//!         // ... compute, or talk point-to-point, while both proceed ...
//!         dos::Request::wait_all([a, b]).unwrap();
//!     });
//!     assert_eq!(total, [6]);
//!     assert_eq!(root_says, [42]);
//! });
//! ```
//!
//! # Design
//!
//! A nonblocking collective is a *schedule*: a list of steps (send a piece of
//! a buffer to a rank, receive one, copy, reduce, and *wait* for every
//! transfer posted since the last wait), built up front from the rank and the
//! communicator size, as in libNBC. The schedule lives in the engine; every
//! time the engine makes progress on the thread that owns the world (in any
//! dos call: a wait, a test, a send, a blocking collective, a probe) it runs
//! the steps of each schedule until one waits for a transfer still in flight.
//! The request the caller holds is an engine request that completes when the
//! schedule has run its last step. (The RPC service thread, which drives the
//! engine while the main thread computes, advances the transfers but not the
//! schedules: a schedule may run the caller's reduction operation, which
//! belongs to the main thread.)
//!
//! Messages travel on the communicator's collective class with a tag of
//! their own per collective: the `k`-th nonblocking collective on a
//! communicator uses tag `-(2^28 + k mod 2^28)` on every rank (ranks start
//! collectives in the same order, as MPI requires), so any number of them can
//! be outstanding at once, next to blocking collectives (which use small
//! positive tags), without their messages meeting.
//!
//! # Algorithms
//!
//! | collective | schedule |
//! | --- | --- |
//! | `ibarrier` | dissemination, ⌈log2 n⌉ rounds |
//! | `ibcast` | binomial tree from the root |
//! | `ireduce` | binomial tree over rank order into rank 0 (one receive per child in flight at once), forwarded to the root |
//! | `iallreduce`, `ireduce_scatter(_block)` | recursive doubling, folding the `n - p` extra ranks onto neighbours first |
//! | `igather(v)`, `iscatter(v)` | direct transfers to or from the root, 32 peers at a time |
//! | `iallgather(v)`, `ialltoall(v)` | direct exchange with every peer, 32 peers at a time |
//! | `iscan`, `iexscan` | recursive doubling (Hillis–Steele) |
//!
//! Reductions combine contributions in rank order, as the blocking ones do
//! (see the [collectives module](super)), so results equal the serial
//! `r0 ⊕ r1 ⊕ ... ⊕ r(n-1)` also for non-commutative operations. The
//! shared-memory slots of the blocking collectives are not used.
//!
//! # Errors
//!
//! Bad arguments (a root out of range, buffers of the wrong length) are
//! returned by the call that starts the collective, before any communication.
//! A transfer that fails once it runs (a message of the wrong length because
//! ranks disagree on counts) does not stop the schedule: the rank still sends
//! what it owes the others, so that they complete, and the request returns
//! the first error.

use std::cell::RefCell;
use std::mem::size_of;
use std::thread::ThreadId;

use bytemuck::Pod;

use super::sched::{real, rel, Binomial, Fold, FoldRole};
use super::{bad_buffer, check_layout, check_len, check_received, mul, ALLTOALL_WINDOW};
use crate::engine::am::{Hooks, Service};
use crate::engine::{Engine, ReqId};
use crate::op::Op;
use crate::p2p::wire::Envelope;
use crate::p2p::{Source, Tag, TagSel};
use crate::request::{Request, Scope};
use crate::{Comm, Error, Result};

/// Where a piece of a schedule's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// The caller's send buffer (read only).
    Send,
    /// The caller's receive (or in-out) buffer.
    Recv,
    /// Scratch buffer `i` of the schedule.
    Tmp(usize),
}

/// Elements `off..off + len` of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Buf {
    loc: Loc,
    off: usize,
    len: usize,
}

fn buf(loc: Loc, off: usize, len: usize) -> Buf {
    Buf { loc, off, len }
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Post a send of `b` to rank `to`.
    Send { b: Buf, to: usize },
    /// Post a receive of exactly `b` from rank `from`.
    Recv { b: Buf, from: usize },
    /// Copy `from` into `to` (same length).
    Copy { from: Buf, to: Buf },
    /// `to = from ⊕ to` if `left` (`from` holds lower ranks), else `to = to ⊕ from`.
    Reduce { from: Buf, to: Buf, left: bool },
    /// Wait until every transfer posted so far has completed.
    Wait,
}

/// A schedule under construction: steps and scratch sizes.
#[derive(Debug, Default)]
struct Plan {
    steps: Vec<Step>,
    tmps: Vec<usize>,
}

impl Plan {
    fn tmp(&mut self, len: usize) -> Loc {
        self.tmps.push(len);
        Loc::Tmp(self.tmps.len() - 1)
    }
    fn send(&mut self, b: Buf, to: usize) {
        self.steps.push(Step::Send { b, to });
    }
    fn recv(&mut self, b: Buf, from: usize) {
        self.steps.push(Step::Recv { b, from });
    }
    fn copy(&mut self, from: Buf, to: Buf) {
        if from != to && from.len > 0 {
            self.steps.push(Step::Copy { from, to });
        }
    }
    fn reduce(&mut self, from: Buf, to: Buf, left: bool) {
        self.steps.push(Step::Reduce { from, to, left });
    }
    fn wait(&mut self) {
        if !matches!(self.steps.last(), None | Some(Step::Wait)) {
            self.steps.push(Step::Wait);
        }
    }
}

// ----- the schedules, pure functions of the rank and the size -----

/// Dissemination barrier.
fn plan_barrier(r: usize, n: usize) -> Plan {
    let mut p = Plan::default();
    let none = buf(Loc::Recv, 0, 0);
    let mut d = 1;
    while d < n {
        p.send(none, (r + d) % n);
        p.recv(none, (r + n - d) % n);
        p.wait();
        d *= 2;
    }
    p
}

/// Binomial-tree broadcast of `count` elements of `Recv` from `root`.
fn plan_bcast(r: usize, n: usize, root: usize, count: usize) -> Plan {
    let mut p = Plan::default();
    let all = buf(Loc::Recv, 0, count);
    let t = Binomial::new(rel(r, root, n), n);
    if let Some(parent) = t.parent() {
        p.recv(all, real(parent, root, n));
        p.wait();
    }
    for c in t.children().rev() {
        p.send(all, real(c, root, n));
    }
    p.wait();
    p
}

/// Reduction of `Send` (or of `Recv` at the root when `in_place`) into
/// `Recv` of `root`, over a binomial tree in rank order rooted at rank 0.
fn plan_reduce(r: usize, n: usize, root: usize, count: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    let mine = if in_place && r == root {
        buf(Loc::Recv, 0, count)
    } else {
        buf(Loc::Send, 0, count)
    };
    let t = Binomial::new(r, n);
    let children: Vec<usize> = t.children().collect();
    // The accumulator: the root's result buffer; elsewhere scratch, or the
    // contribution itself for a leaf.
    let acc = if r == root {
        buf(Loc::Recv, 0, count)
    } else if children.is_empty() {
        mine
    } else {
        buf(p.tmp(count), 0, count)
    };
    p.copy(mine, acc);
    let parts: Vec<Buf> = children
        .iter()
        .map(|&c| {
            let b = buf(p.tmp(count), 0, count);
            p.recv(b, c);
            b
        })
        .collect();
    p.wait();
    // Children's subtrees are contiguous ranges above this rank, nearest first.
    for b in parts {
        p.reduce(b, acc, false);
    }
    if let Some(parent) = t.parent() {
        p.send(acc, parent);
        p.wait();
    }
    if root != 0 {
        if r == 0 {
            p.send(acc, root);
        } else if r == root {
            p.recv(buf(Loc::Recv, 0, count), 0);
        }
        p.wait();
    }
    p
}

/// Recursive-doubling allreduce of `mine` into `acc` (`count` elements).
fn plan_allreduce_into(p: &mut Plan, r: usize, n: usize, count: usize, mine: Buf, acc: Buf) {
    p.copy(mine, acc);
    let fold = Fold::new(n);
    let newrank = match fold.role(r) {
        FoldRole::Excluded { partner } => {
            p.send(acc, partner);
            p.wait();
            p.recv(acc, partner);
            p.wait();
            return;
        }
        FoldRole::Absorbs { partner, newrank } => {
            let t = buf(p.tmp(count), 0, count);
            p.recv(t, partner);
            p.wait();
            p.reduce(t, acc, true);
            newrank
        }
        FoldRole::Plain { newrank } => newrank,
    };
    if fold.p > 1 {
        let t = buf(p.tmp(count), 0, count);
        let mut mask = 1;
        while mask < fold.p {
            let pv = newrank ^ mask;
            let peer = fold.real(pv);
            p.send(acc, peer);
            p.recv(t, peer);
            p.wait();
            p.reduce(t, acc, pv < newrank);
            mask <<= 1;
        }
    }
    if let FoldRole::Absorbs { partner, .. } = fold.role(r) {
        p.send(acc, partner);
        p.wait();
    }
}

fn plan_allreduce(r: usize, n: usize, count: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    let acc = buf(Loc::Recv, 0, count);
    let mine = if in_place {
        acc
    } else {
        buf(Loc::Send, 0, count)
    };
    plan_allreduce_into(&mut p, r, n, count, mine, acc);
    p.wait();
    p
}

/// Allreduce of the whole `Send` (`total` elements) into scratch, keeping
/// elements `start..start + len`.
fn plan_reduce_scatter(r: usize, n: usize, total: usize, start: usize, len: usize) -> Plan {
    let mut p = Plan::default();
    let acc = buf(p.tmp(total), 0, total);
    plan_allreduce_into(&mut p, r, n, total, buf(Loc::Send, 0, total), acc);
    p.wait();
    p.copy(buf(acc.loc, start, len), buf(Loc::Recv, 0, len));
    p
}

fn plan_reduce_scatter_block(r: usize, n: usize, blk: usize) -> Plan {
    plan_reduce_scatter(r, n, n * blk, r * blk, blk)
}

/// Transfers with peers `(r + i) % n`, `i` in `1..n`, `ALLTOALL_WINDOW` at a time.
fn windowed(p: &mut Plan, n: usize, mut each: impl FnMut(&mut Plan, usize)) {
    for i in 1..n {
        each(p, i);
        if i % ALLTOALL_WINDOW == 0 {
            p.wait();
        }
    }
    p.wait();
}

fn plan_gather(r: usize, n: usize, root: usize, blk: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    if r == root {
        if !in_place {
            p.copy(buf(Loc::Send, 0, blk), buf(Loc::Recv, r * blk, blk));
        }
        windowed(&mut p, n, |p, i| {
            let from = (r + i) % n;
            p.recv(buf(Loc::Recv, from * blk, blk), from);
        });
    } else {
        p.send(buf(Loc::Send, 0, blk), root);
        p.wait();
    }
    p
}

fn plan_scatter(r: usize, n: usize, root: usize, blk: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    if r == root {
        if !in_place {
            p.copy(buf(Loc::Send, r * blk, blk), buf(Loc::Recv, 0, blk));
        }
        windowed(&mut p, n, |p, i| {
            let to = (r + i) % n;
            p.send(buf(Loc::Send, to * blk, blk), to);
        });
    } else {
        p.recv(buf(Loc::Recv, 0, blk), root);
        p.wait();
    }
    p
}

fn plan_allgather(r: usize, n: usize, blk: usize) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, 0, blk), buf(Loc::Recv, r * blk, blk));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, 0, blk), to);
        p.recv(buf(Loc::Recv, from * blk, blk), from);
    });
    p
}

fn plan_alltoall(r: usize, n: usize, blk: usize) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, r * blk, blk), buf(Loc::Recv, r * blk, blk));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, to * blk, blk), to);
        p.recv(buf(Loc::Recv, from * blk, blk), from);
    });
    p
}

/// A layout of blocks: `counts[i]` elements at `displs[i]`.
type Blocks<'a> = (&'a [usize], &'a [usize]);

fn plan_gatherv(r: usize, n: usize, root: usize, mine: usize, (c, d): Blocks<'_>) -> Plan {
    let mut p = Plan::default();
    if r == root {
        p.copy(buf(Loc::Send, 0, c[r]), buf(Loc::Recv, d[r], c[r]));
        windowed(&mut p, n, |p, i| {
            let from = (r + i) % n;
            p.recv(buf(Loc::Recv, d[from], c[from]), from);
        });
    } else {
        p.send(buf(Loc::Send, 0, mine), root);
        p.wait();
    }
    p
}

fn plan_scatterv(r: usize, n: usize, root: usize, mine: usize, (c, d): Blocks<'_>) -> Plan {
    let mut p = Plan::default();
    if r == root {
        p.copy(buf(Loc::Send, d[r], c[r]), buf(Loc::Recv, 0, c[r]));
        windowed(&mut p, n, |p, i| {
            let to = (r + i) % n;
            p.send(buf(Loc::Send, d[to], c[to]), to);
        });
    } else {
        p.recv(buf(Loc::Recv, 0, mine), root);
        p.wait();
    }
    p
}

fn plan_allgatherv(r: usize, n: usize, (c, d): Blocks<'_>) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, 0, c[r]), buf(Loc::Recv, d[r], c[r]));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, 0, c[r]), to);
        p.recv(buf(Loc::Recv, d[from], c[from]), from);
    });
    p
}

fn plan_alltoallv(r: usize, n: usize, (sc, sd): Blocks<'_>, (rc, rd): Blocks<'_>) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, sd[r], sc[r]), buf(Loc::Recv, rd[r], rc[r]));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, sd[to], sc[to]), to);
        p.recv(buf(Loc::Recv, rd[from], rc[from]), from);
    });
    p
}

/// Checks that blocks of a receive layout do not overlap (they are written
/// by transfers in flight at once).
fn check_disjoint(op: &'static str, (c, d): Blocks<'_>) -> Result<()> {
    let mut v: Vec<(usize, usize)> = d.iter().copied().zip(c.iter().copied()).collect();
    v.retain(|&(_, len)| len > 0);
    v.sort_unstable();
    if v.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(bad_buffer(op, "two ranks' blocks overlap".to_string()));
    }
    Ok(())
}

/// Hillis–Steele prefix reduction: before the round of distance `d`, `acc`
/// holds ranks `r - d + 1..=r` (clipped at 0).
fn plan_scan(r: usize, n: usize, count: usize, inclusive: bool) -> Plan {
    let mut p = Plan::default();
    let mine = buf(Loc::Send, 0, count);
    let out = buf(Loc::Recv, 0, count);
    // Inclusive: the result is the accumulator. Exclusive: a separate one.
    let acc = if inclusive {
        out
    } else if r + 1 < n {
        buf(p.tmp(count), 0, count)
    } else {
        mine
    };
    p.copy(mine, acc);
    let t = buf(p.tmp(count), 0, count);
    let mut d = 1;
    let mut first = true;
    while d < n {
        if r + d < n {
            p.send(acc, r + d);
        }
        if r >= d {
            p.recv(t, r - d);
        }
        p.wait();
        if r >= d {
            if !inclusive {
                if first {
                    p.copy(t, out);
                } else {
                    p.reduce(t, out, true);
                }
            }
            if inclusive || r + d < n {
                // (Only ranks that still send need the inclusive partial.)
                if acc != mine {
                    p.reduce(t, acc, true);
                }
            }
            first = false;
        }
        d *= 2;
    }
    p
}

// ----- running schedules -----

/// A started schedule, as the engine holds it (see [`Table`]).
trait Running {
    /// Runs steps until one must wait; true once the last one has run.
    fn advance(&mut self, eng: &Engine) -> bool;
    /// The engine request the caller holds.
    fn outer(&self) -> (ReqId, u32);
    /// The first error met.
    fn take_error(&mut self) -> Option<Error>;
    /// Transfers still posted (to give up with the outer request).
    fn in_flight(&mut self) -> Vec<ReqId>;
}

/// An operation that is never applied (collectives without reduction).
struct NoOp;

impl<T> Op<T> for NoOp {
    fn apply_left(&self, _: &[T], _: &mut [T]) {}
    fn apply_right(&self, _: &mut [T], _: &[T]) {}
}

/// A schedule with its buffers: the caller's, by address (borrowed for the
/// request's scope), and its own scratch.
struct Sched<T, O> {
    steps: Vec<Step>,
    pc: usize,
    send: *const T,
    send_len: usize,
    recv: *mut T,
    recv_len: usize,
    tmps: Vec<Vec<T>>,
    op: O,
    /// Transfers posted since the last wait, with the bytes a receive must get
    /// (`usize::MAX` for sends).
    posted: Vec<(ReqId, usize)>,
    error: Option<Error>,
    /// Collective context, tag, and world peer of every rank.
    ctx: u32,
    tag: Tag,
    rank: usize,
    peers: Vec<u32>,
    outer: (ReqId, u32),
    par: usize,
    op_name: &'static str,
}

impl<T: Pod + Send + Sync, O: Op<T>> Sched<T, O> {
    fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    /// Address and byte length of `b`.
    fn raw(&mut self, b: Buf) -> (*mut u8, usize) {
        let base = match b.loc {
            Loc::Send => {
                debug_assert!(b.off + b.len <= self.send_len);
                self.send as *mut T
            }
            Loc::Recv => {
                debug_assert!(b.off + b.len <= self.recv_len);
                self.recv
            }
            Loc::Tmp(i) => self.tmps[i].as_mut_ptr(),
        };
        if size_of::<T>() == 0 || b.len == 0 {
            return (std::ptr::NonNull::<u8>::dangling().as_ptr(), 0);
        }
        // SAFETY: the plan keeps every piece inside its buffer (checked at
        // the start of the collective against the caller's lengths).
        (
            unsafe { base.add(b.off) }.cast::<u8>(),
            b.len * size_of::<T>(),
        )
    }

    fn local(&mut self, from: Buf, to: Buf, reduce: Option<bool>) {
        if size_of::<T>() == 0 || from.len == 0 {
            return;
        }
        let (src, _) = self.raw(from);
        let (dst, _) = self.raw(to);
        // SAFETY: `from` and `to` are distinct pieces (different buffers, or
        // disjoint blocks of one) of live buffers, `len` elements each.
        let (src, dst) = unsafe {
            (
                std::slice::from_raw_parts(src.cast::<T>(), from.len),
                std::slice::from_raw_parts_mut(dst.cast::<T>(), to.len),
            )
        };
        match reduce {
            None => dst.copy_from_slice(src),
            Some(left) => super::combine(&self.op, dst, src, left, self.par),
        }
    }

    fn post(&mut self, eng: &Engine, step: &Step) {
        match *step {
            Step::Send { b, to } => {
                let (p, len) = self.raw(b);
                let env = Envelope {
                    ctx: self.ctx,
                    src: self.rank as u32,
                    tag: self.tag,
                };
                // SAFETY: the piece stays valid and unchanged until the
                // request completes: the caller's buffers are borrowed until
                // the outer request completes, which is after every posted
                // transfer, and no later step writes it before the next wait.
                match unsafe { eng.isend(self.peers[to] as usize, env, p, len) } {
                    Ok(None) => {}
                    Ok(Some(id)) => self.posted.push((id, usize::MAX)),
                    Err(e) => self.fail(e),
                }
            }
            Step::Recv { b, from } => {
                let (p, len) = self.raw(b);
                // SAFETY: as for sends; no step touches the piece before the next wait.
                match unsafe {
                    eng.irecv(self.ctx, Source::Rank(from), TagSel::Tag(self.tag), p, len)
                } {
                    Ok(id) => self.posted.push((id, len)),
                    Err(e) => self.fail(e),
                }
            }
            _ => unreachable!("only transfers are posted"),
        }
    }
}

impl<T: Pod + Send + Sync, O: Op<T>> Running for Sched<T, O> {
    fn advance(&mut self, eng: &Engine) -> bool {
        while self.pc < self.steps.len() {
            let step = self.steps[self.pc].clone();
            match step {
                Step::Send { .. } | Step::Recv { .. } => self.post(eng, &step),
                Step::Copy { from, to } => self.local(from, to, None),
                Step::Reduce { from, to, left } => self.local(from, to, Some(left)),
                Step::Wait => {
                    if !self.posted.iter().all(|&(id, _)| eng.is_done(id)) {
                        return false;
                    }
                    for (id, want) in std::mem::take(&mut self.posted) {
                        let r = eng
                            .take(id)
                            .and_then(|st| check_received(self.op_name, st.len, want));
                        if let Err(e) = r {
                            self.fail(e);
                        }
                    }
                }
            }
            self.pc += 1;
        }
        debug_assert!(self.posted.is_empty(), "plans end with a wait");
        true
    }

    fn outer(&self) -> (ReqId, u32) {
        self.outer
    }

    fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn in_flight(&mut self) -> Vec<ReqId> {
        self.posted.drain(..).map(|(id, _)| id).collect()
    }
}

/// The engine's nonblocking collectives: schedules in flight and the
/// sequence number of each communicator context.
#[derive(Default)]
pub(crate) struct Table {
    active: Vec<Box<dyn Running>>,
    seq: std::collections::HashMap<u32, u32>,
    /// The thread that started the schedules (the one that owns the world).
    owner: Option<ThreadId>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("nonblocking::Table")
            .field("active", &self.active.len())
            .finish_non_exhaustive()
    }
}

/// Nonblocking collectives as they register with the engine: no active
/// messages of their own (their transfers are point-to-point messages), a
/// step of every schedule after each progress pass, and dropping the
/// schedule of an abandoned request.
pub(crate) static SERVICE: Service = Service {
    name: "nonblocking collectives",
    am: None,
    state: || Box::new(RefCell::new(Table::default())),
    hooks: Hooks {
        serve: Some(|eng| {
            if eng.nbc().borrow().busy() {
                progress(eng)
            } else {
                0
            }
        }),
        abandon: Some(|eng, id| {
            if eng.nbc().borrow().busy() {
                forget(eng, id)
            }
        }),
        ..Hooks::NONE
    },
};

impl Engine {
    /// Nonblocking collectives in flight.
    #[inline]
    pub(crate) fn nbc(&self) -> &RefCell<Table> {
        self.service(&SERVICE)
    }
}

impl Table {
    /// True if any schedule is in flight.
    #[inline]
    pub(crate) fn busy(&self) -> bool {
        !self.active.is_empty()
    }
}

/// Finishes a schedule: completes the caller's request.
fn finish(eng: &Engine, mut s: Box<dyn Running>) {
    let (id, gen) = s.outer();
    let r = match s.take_error() {
        None => Ok(()),
        Some(e) => Err(e),
    };
    drop(s);
    eng.reply_arrived(id, gen, r);
}

/// Advances every schedule in flight (called by the engine's progress);
/// returns how many finished.
pub(crate) fn progress(eng: &Engine) -> usize {
    let mut list = {
        let mut t = eng.nbc().borrow_mut();
        if t.owner != Some(std::thread::current().id()) {
            return 0;
        }
        std::mem::take(&mut t.active)
    };
    let mut n = 0;
    let mut i = 0;
    while i < list.len() {
        if list[i].advance(eng) {
            finish(eng, list.swap_remove(i));
            n += 1;
        } else {
            i += 1;
        }
    }
    let mut t = eng.nbc().borrow_mut();
    list.append(&mut t.active);
    t.active = list;
    n
}

/// Drops the schedule behind engine request `id`, giving up its transfers
/// (the caller's wait failed: a peer died), so that nothing touches the
/// caller's buffers afterwards.
#[cold]
pub(crate) fn forget(eng: &Engine, id: ReqId) {
    let found = {
        let mut t = eng.nbc().borrow_mut();
        t.active
            .iter()
            .position(|s| s.outer().0 == id)
            .map(|i| t.active.swap_remove(i))
    };
    if let Some(mut s) = found {
        for sub in s.in_flight() {
            eng.abandon(sub);
        }
    }
}

impl Comm {
    /// Starts `plan` on the caller's buffers and returns the request.
    #[allow(clippy::too_many_arguments)]
    fn start<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        op_name: &'static str,
        plan: Plan,
        send: &'s [T],
        recv: *mut T,
        recv_len: usize,
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        let n = self.size();
        let peers = (0..n)
            .map(|r| self.peer(r).map(|p| p as u32))
            .collect::<Result<Vec<u32>>>()?;
        let eng = self.eng.enter();
        let tag = {
            let mut t = eng.nbc().borrow_mut();
            let k = t.seq.entry(self.ctx()).or_insert(0);
            let tag = -(0x1000_0000 + (*k & 0x0fff_ffff) as Tag);
            *k = k.wrapping_add(1);
            t.owner = Some(std::thread::current().id());
            tag
        };
        let outer = eng.await_replies(1);
        let mut sched = Box::new(Sched {
            steps: plan.steps,
            pc: 0,
            send: send.as_ptr(),
            send_len: send.len(),
            recv,
            recv_len,
            tmps: plan.tmps.iter().map(|&l| vec![T::zeroed(); l]).collect(),
            op,
            posted: Vec::new(),
            error: None,
            ctx: self.ctx() * 2 + 1,
            tag,
            rank: self.rank(),
            peers,
            outer,
            par: eng.config().reduce_par_bytes,
            op_name,
        });
        let done = sched.advance(&eng);
        let boxed: Box<dyn Running + 's> = sched;
        // SAFETY: the schedule borrows the caller's buffers and operation for
        // `'s`. It leaves the engine's table (and is dropped) when its last
        // step has run, which completes the outer request, or when the outer
        // request is abandoned (`forget`); the scope waits for the outer
        // request (or abandons it) before `'s` ends, so the schedule never
        // outlives what it borrows.
        let boxed: Box<dyn Running + 'static> = unsafe { std::mem::transmute(boxed) };
        if done {
            finish(&eng, boxed);
        } else {
            eng.nbc().borrow_mut().active.push(boxed);
        }
        drop(eng);
        Ok(s.register(&self.eng, outer.0))
    }

    /// Starts a barrier (`MPI_Ibarrier`): the request completes once every
    /// rank of the communicator has started it.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     dos::scope(|s| {
    ///         let b = world.ibarrier(s).unwrap();
    ///         // ... work that does not depend on the others ...
    ///         b.wait().unwrap();
    ///     });
    /// });
    /// ```
    pub fn ibarrier<'s>(&self, s: &'s Scope<'s, '_>) -> Result<Request<'s>> {
        let plan = plan_barrier(self.rank(), self.size());
        self.start::<u8, _>(s, "ibarrier", plan, &[], std::ptr::null_mut(), 0, NoOp)
    }

    /// Starts broadcasting `buf` of rank `root` into `buf` of every rank
    /// (`MPI_Ibcast`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] if `root` is not a rank of the communicator.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut x = if world.rank() == 2 { [5u8, 6] } else { [0; 2] };
    ///     dos::scope(|s| world.ibcast(s, &mut x, 2).unwrap().wait().unwrap());
    ///     assert_eq!(x, [5, 6]);
    /// });
    /// ```
    pub fn ibcast<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        self.check_root(root)?;
        let plan = plan_bcast(self.rank(), self.size(), root, buf.len());
        let (p, l) = (buf.as_mut_ptr(), buf.len());
        self.start(s, "ibcast", plan, &[], p, l, NoOp)
    }

    /// Starts reducing `send` of every rank with `op`, in rank order, into
    /// `recv` of rank `root` (`MPI_Ireduce`); `recv` may be empty elsewhere
    /// and is not touched there.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `recv` differs from `send` in length.
    ///
    /// ```
    /// dos::testing::run_threads(4, |world| {
    ///     let mut max = [0i32];
    ///     let mine = [world.rank() as i32 * 3 - 4];
    ///     dos::scope(|s| {
    ///         let q = world.ireduce(s, &mine, &mut max, dos::op::Max, 1).unwrap();
    ///         q.wait().unwrap();
    ///     });
    ///     if world.rank() == 1 {
    ///         assert_eq!(max, [5]);
    ///     }
    /// });
    /// ```
    pub fn ireduce<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        self.check_root(root)?;
        if self.rank() == root {
            check_len("ireduce", "recv", recv.len(), send.len())?;
        }
        let plan = plan_reduce(self.rank(), self.size(), root, send.len(), false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "ireduce", plan, send, p, l, op)
    }

    /// [`Comm::ireduce`] with `buf` as the contribution on every rank and,
    /// at the root, also as the result (`MPI_Ireduce` with `MPI_IN_PLACE`);
    /// other ranks' `buf` is not changed.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`.
    pub fn ireduce_in_place<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        self.check_root(root)?;
        let plan = plan_reduce(self.rank(), self.size(), root, buf.len(), true);
        if self.rank() == root {
            let (p, l) = (buf.as_mut_ptr(), buf.len());
            self.start(s, "ireduce", plan, &[], p, l, op)
        } else {
            self.start(s, "ireduce", plan, buf, std::ptr::null_mut(), 0, op)
        }
    }

    /// Starts reducing `send` of every rank with `op`, in rank order, into
    /// `recv` of every rank (`MPI_Iallreduce`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut sum = [0u64; 2];
    ///     let r = world.rank() as u64;
    ///     let mine = [r, 10 * r];
    ///     dos::scope(|s| {
    ///         let q = world.iallreduce(s, &mine, &mut sum, dos::op::Sum).unwrap();
    ///         q.wait().unwrap();
    ///     });
    ///     assert_eq!(sum, [3, 30]);
    /// });
    /// ```
    pub fn iallreduce<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        check_len("iallreduce", "recv", recv.len(), send.len())?;
        let plan = plan_allreduce(self.rank(), self.size(), send.len(), false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "iallreduce", plan, send, p, l, op)
    }

    /// [`Comm::iallreduce`] with `buf` as both contribution and result
    /// (`MPI_Iallreduce` with `MPI_IN_PLACE`).
    pub fn iallreduce_in_place<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        let plan = plan_allreduce(self.rank(), self.size(), buf.len(), true);
        let (p, l) = (buf.as_mut_ptr(), buf.len());
        self.start(s, "iallreduce", plan, &[], p, l, op)
    }

    /// Starts reducing `send` (`size() * recv.len()` elements) of every rank
    /// with `op` and leaving block `rank` of the result in `recv`
    /// (`MPI_Ireduce_scatter_block`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `send` is not `size()` blocks of `recv.len()`.
    pub fn ireduce_scatter_block<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        const OP: &str = "ireduce_scatter_block";
        let (n, blk) = (self.size(), recv.len());
        check_len(OP, "send", send.len(), mul(OP, n, blk)?)?;
        let plan = plan_reduce_scatter_block(self.rank(), n, blk);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, op)
    }

    /// Starts reducing `send` (`counts.iter().sum()` elements) of every
    /// rank with `op` and leaving rank `i`'s block, `counts[i]` elements
    /// after the blocks of the ranks before it, in `recv` of rank `i`
    /// (`MPI_Ireduce_scatter`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `counts` does not have one entry
    /// per rank or a buffer has the wrong length.
    ///
    /// ```
    /// dos::testing::run_threads(2, |world| {
    ///     let send = [1u32, 2, 3];
    ///     let mut mine = vec![0u32; if world.rank() == 0 { 1 } else { 2 }];
    ///     dos::scope(|s| {
    ///         let q = world.ireduce_scatter(s, &send, &mut mine, &[1, 2], dos::op::Sum);
    ///         q.unwrap().wait().unwrap();
    ///     });
    ///     let want: &[u32] = if world.rank() == 0 { &[2] } else { &[4, 6] };
    ///     assert_eq!(mine, want);
    /// });
    /// ```
    pub fn ireduce_scatter<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        const OP: &str = "ireduce_scatter";
        let (n, r) = (self.size(), self.rank());
        check_len(OP, "counts", counts.len(), n)?;
        let total = counts
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c))
            .ok_or_else(|| bad_buffer(OP, "counts overflow".to_string()))?;
        check_len(OP, "send", send.len(), total)?;
        check_len(OP, "recv", recv.len(), counts[r])?;
        let start = counts[..r].iter().sum();
        let plan = plan_reduce_scatter(r, n, total, start, counts[r]);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, op)
    }

    /// Starts collecting `send` of every rank, in rank order, into `recv` of
    /// rank `root` (`MPI_Igather`); `recv` holds `size() * send.len()`
    /// elements at the root and may be empty elsewhere.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `recv` has the wrong length.
    pub fn igather<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "igather";
        self.check_root(root)?;
        let (n, r, blk) = (self.size(), self.rank(), send.len());
        if r == root {
            check_len(OP, "recv", recv.len(), mul(OP, n, blk)?)?;
        }
        let plan = plan_gather(r, n, root, blk, false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending block `i` of `send` (`size() * recv.len()` elements,
    /// significant at the root only) of rank `root` into `recv` of rank `i`
    /// (`MPI_Iscatter`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `send` has the wrong length.
    pub fn iscatter<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "iscatter";
        self.check_root(root)?;
        let (n, r, blk) = (self.size(), self.rank(), recv.len());
        if r == root {
            check_len(OP, "send", send.len(), mul(OP, n, blk)?)?;
        }
        let plan = plan_scatter(r, n, root, blk, false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts collecting `send` of every rank, in rank order, into `recv`
    /// (`size() * send.len()` elements) of every rank (`MPI_Iallgather`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` has the wrong length.
    pub fn iallgather<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'s>> {
        const OP: &str = "iallgather";
        let (n, blk) = (self.size(), send.len());
        check_len(OP, "recv", recv.len(), mul(OP, n, blk)?)?;
        let plan = plan_allgather(self.rank(), n, blk);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending block `i` of `send` to rank `i`, which stores it as
    /// block `rank` of its `recv` (`MPI_Ialltoall`); both hold `size()`
    /// blocks of equal length.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if the lengths differ or are not a
    /// multiple of the communicator size.
    pub fn ialltoall<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'s>> {
        const OP: &str = "ialltoall";
        let n = self.size();
        check_len(OP, "recv", recv.len(), send.len())?;
        if send.len() % n != 0 {
            return Err(bad_buffer(
                OP,
                format!("{} elements do not split into {n} blocks", send.len()),
            ));
        }
        let plan = plan_alltoall(self.rank(), n, send.len() / n);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts collecting `send` of every rank `i` into
    /// `recv[displs[i]..displs[i] + counts[i]]` of rank `root`
    /// (`MPI_Igatherv`); `counts`, `displs` and `recv` are significant only
    /// at the root, where the blocks must not overlap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`;
    /// [`crate::Error::InvalidBuffer`] at the root if the layout does not
    /// have one entry per rank, reaches past `recv`, overlaps, or if `send`
    /// is not `counts[root]` long.
    pub fn igatherv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "igatherv";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        if r == root {
            check_layout(OP, "recv", counts, displs, n, recv.len())?;
            check_len(OP, "send", send.len(), counts[r])?;
            check_disjoint(OP, (counts, displs))?;
        }
        let plan = plan_gatherv(r, n, root, send.len(), (counts, displs));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending `send[displs[i]..displs[i] + counts[i]]` of rank `root`
    /// into `recv` of every rank `i` (`MPI_Iscatterv`); `send`, `counts` and
    /// `displs` are significant only at the root.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`;
    /// [`crate::Error::InvalidBuffer`] at the root if the layout does not
    /// have one entry per rank or reaches past `send`, or if `recv` is not
    /// `counts[root]` long.
    pub fn iscatterv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        counts: &[usize],
        displs: &[usize],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "iscatterv";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        if r == root {
            check_layout(OP, "send", counts, displs, n, send.len())?;
            check_len(OP, "recv", recv.len(), counts[r])?;
        }
        let plan = plan_scatterv(r, n, root, recv.len(), (counts, displs));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts collecting `send` of every rank `i` into
    /// `recv[displs[i]..displs[i] + counts[i]]` of every rank
    /// (`MPI_Iallgatherv`); the blocks must not overlap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if the layout does not have one entry
    /// per rank, reaches past `recv` or overlaps, or if `send` is not
    /// `counts[rank]` long.
    pub fn iallgatherv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<Request<'s>> {
        const OP: &str = "iallgatherv";
        let (n, r) = (self.size(), self.rank());
        check_layout(OP, "recv", counts, displs, n, recv.len())?;
        check_len(OP, "send", send.len(), counts[r])?;
        check_disjoint(OP, (counts, displs))?;
        let plan = plan_allgatherv(r, n, (counts, displs));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending `send[sdispls[i]..sdispls[i] + scounts[i]]` to rank
    /// `i`, which stores it at `recv[rdispls[rank]..rdispls[rank] +
    /// rcounts[rank]]` (`MPI_Ialltoallv`); `rcounts[i]` must equal rank
    /// `i`'s `scounts[rank]`, and receive blocks must not overlap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if a count or displacement array does
    /// not have one entry per rank, a block reaches past its buffer, or
    /// receive blocks overlap.
    #[allow(clippy::too_many_arguments)]
    pub fn ialltoallv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        scounts: &[usize],
        sdispls: &[usize],
        recv: &'s mut [T],
        rcounts: &[usize],
        rdispls: &[usize],
    ) -> Result<Request<'s>> {
        const OP: &str = "ialltoallv";
        let (n, r) = (self.size(), self.rank());
        check_layout(OP, "send", scounts, sdispls, n, send.len())?;
        check_layout(OP, "recv", rcounts, rdispls, n, recv.len())?;
        check_disjoint(OP, (rcounts, rdispls))?;
        if scounts[r] != rcounts[r] {
            return Err(bad_buffer(
                OP,
                format!(
                    "sends {} elements to itself but expects {}",
                    scounts[r], rcounts[r]
                ),
            ));
        }
        let plan = plan_alltoallv(r, n, (scounts, sdispls), (rcounts, rdispls));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts an inclusive prefix reduction (`MPI_Iscan`): rank `i` gets
    /// `send` of ranks `0..=i` combined with `op` in rank order.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    pub fn iscan<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        check_len("iscan", "recv", recv.len(), send.len())?;
        let plan = plan_scan(self.rank(), self.size(), send.len(), true);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "iscan", plan, send, p, l, op)
    }

    /// Starts an exclusive prefix reduction (`MPI_Iexscan`): rank `i > 0`
    /// gets `send` of ranks `0..i` combined in rank order; rank 0's `recv`
    /// is not touched.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    pub fn iexscan<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        check_len("iexscan", "recv", recv.len(), send.len())?;
        let plan = plan_scan(self.rank(), self.size(), send.len(), false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "iexscan", plan, send, p, l, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_wait_drops_the_schedule_and_its_transfers() {
        // Rank 1 dies; rank 0's wait fails, and nothing of the collective
        // stays in the engine (no posted receive into the caller's buffer).
        let got = crate::testing::run_cluster(&[1, 1], |w| {
            if w.rank() == 1 {
                std::thread::sleep(std::time::Duration::from_millis(50));
                crate::testing::vanish(w);
                return true;
            }
            let mine = vec![1u64; 5000];
            let mut sum = vec![0u64; 5000];
            let res = crate::scope(|s| {
                w.iallreduce(s, &mine, &mut sum, crate::op::Sum)
                    .unwrap()
                    .wait()
            });
            assert!(matches!(res, Err(Error::PeerFailed { rank: 1 })), "{res:?}");
            let eng = w.comm().eng.enter();
            let busy = eng.nbc().borrow().busy();
            !busy
        });
        assert!(got[0], "the schedule outlived its failed request");
    }

    #[test]
    fn plans_end_with_a_wait() {
        for n in 1..12 {
            for r in 0..n {
                for p in [
                    plan_barrier(r, n),
                    plan_bcast(r, n, n / 2, 3),
                    plan_reduce(r, n, n - 1, 3, false),
                    plan_allreduce(r, n, 3, false),
                    plan_gather(r, n, 0, 2, false),
                    plan_scatter(r, n, 0, 2, false),
                    plan_allgather(r, n, 2),
                    plan_alltoall(r, n, 2),
                    plan_scan(r, n, 2, true),
                    plan_scan(r, n, 2, false),
                    plan_reduce_scatter_block(r, n, 2),
                ] {
                    let mut open = false;
                    for s in &p.steps {
                        match s {
                            Step::Send { .. } | Step::Recv { .. } => open = true,
                            Step::Wait => open = false,
                            _ => {}
                        }
                    }
                    assert!(!open, "n {n} rank {r}: {:?}", p.steps);
                }
            }
        }
    }
}
