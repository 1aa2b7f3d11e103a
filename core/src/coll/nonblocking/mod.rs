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
//! communicator size, as in libNBC. The schedule lives in the engine, which
//! runs its steps until one waits for a transfer still in flight; then the
//! schedule *watches* that transfer's engine request (`Engine::watch`). When
//! a watched request completes, the engine pushes the schedule's key onto a
//! ready queue, and the next progress pass on the thread that owns the world
//! (in any dos call: a wait, a test, a send, a blocking collective, a probe)
//! advances the schedules of that queue, and only those: a pass costs
//! nothing for schedules that wait for messages still to come, however many
//! are outstanding (a wait that posted `k` transfers wakes its schedule at
//! most `k` times in all). The request the caller holds is an engine request
//! that completes when the schedule has run its last step. (The RPC service thread, which drives the
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
//!
//! # Files
//!
//! [`plan`] builds the schedules (data, no I/O), [`run`] runs them, and
//! [`api`] holds the communicator's `i`-collectives; this file holds the
//! engine's table of schedules in flight and the registration with the
//! engine.

mod api;
pub(crate) mod detached;
pub(crate) mod ffi;
mod plan;
mod run;

use std::cell::RefCell;
use std::thread::ThreadId;

use bytemuck::Pod;

use crate::engine::am::{Hooks, Service};
use crate::engine::{Engine, ReqId};
use crate::op::Op;
use crate::p2p::Tag;
use crate::request::{Request, Scope};
use crate::{Comm, Result};
use plan::Plan;
use run::{Running, Sched};

/// The engine's nonblocking collectives: schedules in flight and the
/// sequence number of each communicator context.
#[derive(Default)]
pub(crate) struct Table {
    /// Schedules in flight by key (`None`: a free key, or a schedule taken
    /// out while it advances).
    active: Vec<Option<Box<dyn Running>>>,
    /// Free keys of `active`.
    free: Vec<u32>,
    /// Schedules in flight.
    live: usize,
    /// The ready queue's buffer between passes (see [`progress`]).
    ready: Vec<u32>,
    seq: std::collections::HashMap<u32, u32>,
    /// The thread that started the schedules (the one that owns the world).
    owner: Option<ThreadId>,
    /// Schedules advanced by [`progress`] so far (each one a visit).
    visits: u64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("nonblocking::Table")
            .field("live", &self.live)
            .field("visits", &self.visits)
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
            if eng.nbc().borrow().busy() && !eng.st.borrow().woken.is_empty() {
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
        self.live > 0
    }

    /// Schedules advanced by [`progress`] so far.
    #[cfg(test)]
    pub(crate) fn visits(&self) -> u64 {
        self.visits
    }

    /// A key for a new schedule (its place in `active`, empty until
    /// [`Table::put`]).
    fn reserve(&mut self) -> u32 {
        self.live += 1;
        match self.free.pop() {
            Some(k) => k,
            None => {
                self.active.push(None);
                (self.active.len() - 1) as u32
            }
        }
    }

    /// Gives back the key of a schedule that finished or was dropped.
    fn release(&mut self, key: u32) {
        self.active[key as usize] = None;
        self.free.push(key);
        self.live -= 1;
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

/// Advances the schedules whose awaited transfer completed since the last
/// pass (the keys the engine pushed onto its ready queue, see
/// [`Engine::watch`]); called by the engine's progress. Schedules that wait
/// for nothing new are not visited. Returns how many finished.
pub(crate) fn progress(eng: &Engine) -> usize {
    let mut ready = {
        let mut t = eng.nbc().borrow_mut();
        if t.owner != Some(std::thread::current().id()) {
            return 0;
        }
        std::mem::take(&mut t.ready)
    };
    eng.take_woken(&mut ready);
    let mut n = 0;
    for &key in &ready {
        // Taken out while it runs: its steps may start other collectives
        // (a user's reduction operation), which use the table.
        let taken = {
            let mut t = eng.nbc().borrow_mut();
            let s = t.active.get_mut(key as usize).and_then(Option::take);
            if s.is_some() {
                t.visits += 1;
            }
            s
        };
        // A key woken twice (two passes' wakes), or whose schedule was dropped.
        let Some(mut s) = taken else { continue };
        if s.advance(eng, key) {
            eng.nbc().borrow_mut().release(key);
            finish(eng, s);
            n += 1;
        } else {
            eng.nbc().borrow_mut().active[key as usize] = Some(s);
        }
    }
    ready.clear();
    eng.nbc().borrow_mut().ready = ready;
    n
}

/// Drops the schedule behind engine request `id`, giving up its transfers
/// (the caller's wait failed: a peer died), so that nothing touches the
/// caller's buffers afterwards.
#[cold]
pub(crate) fn forget(eng: &Engine, id: ReqId) {
    let found = {
        let mut t = eng.nbc().borrow_mut();
        let key = t
            .active
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.outer().0 == id));
        key.map(|k| {
            let s = t.active[k].take().expect("found above");
            t.release(k as u32);
            s
        })
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
        // SAFETY: the buffers and the operation are borrowed for `'s`, and
        // the request is registered with the scope, which waits for it (or
        // abandons it) before `'s` ends.
        let id = unsafe {
            self.start_detached(op_name, plan, send.as_ptr(), send.len(), recv, recv_len, op)?
        };
        Ok(s.register(&self.eng, id))
    }

    /// [`Comm::start`] without a scope: starts `plan` and returns the engine
    /// request that completes with it (wait for it with the engine's `wait`,
    /// or `is_done` and `take`; give it up with `abandon`). For callers
    /// that own their buffers beyond one call (`dos::io`'s nonblocking
    /// collective I/O, see [`detached`]).
    ///
    /// # Safety
    /// `send[..send_len]` must stay readable, `recv[..recv_len]` writable and
    /// untouched by anything else, and `op` alive, until the request has
    /// completed (and been taken) or been abandoned.
    #[allow(clippy::too_many_arguments)]
    unsafe fn start_detached<'a, T, O>(
        &self,
        op_name: &'static str,
        plan: Plan,
        send: *const T,
        send_len: usize,
        recv: *mut T,
        recv_len: usize,
        op: O,
    ) -> Result<ReqId>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 'a,
    {
        let n = self.size();
        let peers = (0..n)
            .map(|r| self.peer(r).map(|p| p as u32))
            .collect::<Result<Vec<u32>>>()?;
        let eng = self.eng.enter();
        let (tag, key) = {
            let mut t = eng.nbc().borrow_mut();
            let k = t.seq.entry(self.ctx()).or_insert(0);
            let tag = -(0x1000_0000 + (*k & 0x0fff_ffff) as Tag);
            *k = k.wrapping_add(1);
            t.owner = Some(std::thread::current().id());
            (tag, t.reserve())
        };
        let outer = eng.await_replies(1);
        let mut sched = Box::new(Sched {
            steps: plan.steps,
            pc: 0,
            send,
            send_len,
            recv,
            recv_len,
            tmps: plan.tmps.iter().map(|&l| vec![T::zeroed(); l]).collect(),
            op,
            posted: Vec::new(),
            waited: 0,
            error: None,
            ctx: self.ctx() * 2 + 1,
            tag,
            rank: self.rank(),
            peers,
            outer,
            par: eng.config().reduce_par_bytes,
            op_name,
        });
        let done = sched.advance(&eng, key);
        let boxed: Box<dyn Running + 'a> = sched;
        // SAFETY: the schedule borrows the caller's buffers and operation.
        // It leaves the engine's table (and is dropped) when its last step
        // has run, which completes the outer request, or when the outer
        // request is abandoned (`forget`); the caller keeps what it borrows
        // until then (this function's contract).
        let boxed: Box<dyn Running + 'static> = unsafe { std::mem::transmute(boxed) };
        if done {
            eng.nbc().borrow_mut().release(key);
            finish(&eng, boxed);
        } else {
            eng.nbc().borrow_mut().active[key as usize] = Some(boxed);
        }
        Ok(outer.0)
    }
}

#[cfg(test)]
mod tests {
    use crate::Error;

    #[test]
    fn progress_visits_only_schedules_whose_transfers_completed() {
        // Rank 0 starts IDLE broadcasts from rank 1, which starts none of
        // them yet: IDLE schedules wait for a message that does not come.
        // Then PINGS ping-pongs, each several progress passes with events:
        // no schedule may be visited. (Walking every schedule on every pass
        // visits IDLE per pass: over IDLE * PINGS.)
        const IDLE: usize = 200;
        const PINGS: usize = 100;
        let got = crate::testing::run_threads(2, |w| {
            let mut bufs = vec![[0u64; 1]; IDLE];
            let during = crate::scope(|s| {
                let mut reqs = Vec::new();
                let mut during = 0;
                if w.rank() == 0 {
                    for b in bufs.iter_mut() {
                        reqs.push(w.ibcast(s, b, 1).unwrap());
                    }
                    let before = w.comm().eng.enter().nbc().borrow().visits();
                    let mut x = [0u64];
                    for i in 0..PINGS {
                        w.send(&[i as u64], 1, 5).unwrap();
                        w.recv(&mut x, 1, 5).unwrap();
                    }
                    during = w.comm().eng.enter().nbc().borrow().visits() - before;
                    w.send(&[0u64], 1, 6).unwrap();
                } else {
                    let mut x = [0u64];
                    for _ in 0..PINGS {
                        w.recv(&mut x, 0, 5).unwrap();
                        w.send(&x, 0, 5).unwrap();
                    }
                    w.recv(&mut x, 0, 6).unwrap();
                    for (k, b) in bufs.iter_mut().enumerate() {
                        b[0] = k as u64 + 1;
                        reqs.push(w.ibcast(s, b, 1).unwrap());
                    }
                }
                crate::Request::wait_all(reqs).unwrap();
                during
            });
            let right = bufs.iter().enumerate().all(|(k, b)| b[0] == k as u64 + 1);
            (during, right)
        });
        assert!(got.iter().all(|&(_, right)| right), "{got:?}");
        // Nothing arrived for the broadcasts during the ping-pongs.
        assert_eq!(got[0].0, 0, "schedules visited without news");
    }

    #[test]
    fn completions_wake_each_schedule_a_bounded_number_of_times() {
        // Many outstanding collectives that complete in whatever order their
        // messages come: visits stay within a few per transfer, not per pass.
        const N: usize = 64;
        let got = crate::testing::run_threads(3, |w| {
            let mine: Vec<[u64; 1]> = (0..N).map(|k| [(k * 3 + w.rank()) as u64]).collect();
            let mut sums = vec![[0u64; 1]; N];
            let before = w.comm().eng.enter().nbc().borrow().visits();
            crate::scope(|s| {
                let reqs: Vec<_> = mine
                    .iter()
                    .zip(sums.iter_mut())
                    .map(|(m, o)| w.iallreduce(s, m, o, crate::op::Sum).unwrap())
                    .collect();
                // Waited in reverse order of starting.
                for r in reqs.into_iter().rev() {
                    r.wait().unwrap();
                }
            });
            let visits = w.comm().eng.enter().nbc().borrow().visits() - before;
            let right = (0..N).all(|k| sums[k][0] == (k * 9 + 3) as u64);
            (visits, right)
        });
        for &(visits, right) in &got {
            assert!(right);
            // 3 ranks: recursive doubling folds one rank in, at most 4
            // transfers per rank and collective, each waking it once.
            assert!(
                visits <= (N * 4) as u64,
                "{visits} visits for {N} collectives"
            );
        }
    }

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
}
