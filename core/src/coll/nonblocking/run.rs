//! Running a schedule: posting its transfers, copying and reducing between
//! its buffers, and waiting for what it posted, step by step.

use std::mem::size_of;

use bytemuck::Pod;

use super::super::check_received;
use super::plan::{Buf, Loc, Step};
use crate::engine::{Engine, ReqId};
use crate::op::Op;
use crate::p2p::wire::Envelope;
use crate::p2p::{Source, Tag, TagSel};
use crate::Error;

/// A started schedule, as the engine holds it (see [`Table`]).
pub(super) trait Running {
    /// Runs steps until one must wait; true once the last one has run.
    /// A schedule that must wait has the engine push `key` onto its ready
    /// queue when the transfer it waits for completes ([`Engine::watch`]).
    fn advance(&mut self, eng: &Engine, key: u32) -> bool;
    /// The engine request the caller holds.
    fn outer(&self) -> (ReqId, u32);
    /// The first error met.
    fn take_error(&mut self) -> Option<Error>;
    /// Transfers still posted (to give up with the outer request).
    fn in_flight(&mut self) -> Vec<ReqId>;
}

/// An operation that is never applied (collectives without reduction).
pub(super) struct NoOp;

impl<T> Op<T> for NoOp {
    fn apply_left(&self, _: &[T], _: &mut [T]) {}
    fn apply_right(&self, _: &mut [T], _: &[T]) {}
}

/// A schedule with its buffers: the caller's, by address (borrowed for the
/// request's scope), and its own scratch.
pub(super) struct Sched<T, O> {
    pub(super) steps: Vec<Step>,
    pub(super) pc: usize,
    pub(super) send: *const T,
    pub(super) send_len: usize,
    pub(super) recv: *mut T,
    pub(super) recv_len: usize,
    pub(super) tmps: Vec<Vec<T>>,
    pub(super) op: O,
    /// Transfers posted since the last wait, with the bytes a receive must get
    /// (`usize::MAX` for sends).
    pub(super) posted: Vec<(ReqId, usize)>,
    /// How many of `posted` the current wait found completed (the first
    /// one not found so is the one watched).
    pub(super) waited: usize,
    pub(super) error: Option<Error>,
    /// Collective context, tag, and world peer of every rank.
    pub(super) ctx: u32,
    pub(super) tag: Tag,
    pub(super) rank: usize,
    pub(super) peers: Vec<u32>,
    pub(super) outer: (ReqId, u32),
    pub(super) par: usize,
    pub(super) op_name: &'static str,
}

impl<T: Pod + Send + Sync, O: Op<T>> Sched<T, O> {
    pub(super) fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    /// Address and byte length of `b`.
    pub(super) fn raw(&mut self, b: Buf) -> (*mut u8, usize) {
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

    pub(super) fn local(&mut self, from: Buf, to: Buf, reduce: Option<bool>) {
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
            Some(left) => super::super::combine(&self.op, dst, src, left, self.par),
        }
    }

    pub(super) fn post(&mut self, eng: &Engine, step: &Step) {
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
    fn advance(&mut self, eng: &Engine, key: u32) -> bool {
        while self.pc < self.steps.len() {
            let step = self.steps[self.pc].clone();
            match step {
                Step::Send { .. } | Step::Recv { .. } => self.post(eng, &step),
                Step::Copy { from, to } => self.local(from, to, None),
                Step::Reduce { from, to, left } => self.local(from, to, Some(left)),
                Step::Wait => {
                    // Transfers complete in any order: skip those done, and
                    // be woken by the first still in flight (each completion
                    // wakes the schedule at most once, so a wait costs
                    // O(transfers) visits in all, not a walk per progress).
                    while let Some(&(id, _)) = self.posted.get(self.waited) {
                        if !eng.is_done(id) {
                            eng.watch(id, key);
                            return false;
                        }
                        self.waited += 1;
                    }
                    self.waited = 0;
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
        self.waited = 0;
        self.posted.drain(..).map(|(id, _)| id).collect()
    }
}
