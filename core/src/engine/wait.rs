//! Progress, waiting and blocking: one progress pass over the transports
//! and the services, the wait loop that spins briefly, then yields, then
//! blocks in the transports' wait, and giving up a request whose wait failed.

use std::time::{Duration, Instant};

use dos_transport::Progress;

use super::{Engine, Req, ReqId, Route, Slot};
use crate::p2p::eager::EagerPlacer;
use crate::p2p::wire::AM_BYE;
use crate::p2p::Status;
use crate::{Error, Result};

/// Idle polls between two reads of the clock in [`Engine::wait_until`].
pub(crate) const POLLS_PER_CLOCK: u32 = 16;

impl Engine {
    /// Delivers whatever has arrived; returns how many events.
    #[inline]
    pub(crate) fn progress(&self) -> usize {
        // Messages that services gathered (RPC's batches for other nodes)
        // leave before anything waits.
        if self.services_live() {
            self.services_flush();
        }
        let l = &self.links;
        let mut n = l.local.progress(|ev| self.on_event(ev, &l.local_world));
        if let Some(net) = &l.net {
            let placer = EagerPlacer {
                eng: self,
                world: &l.net_world,
            };
            n += net.progress_placing(|ev| self.on_event(ev, &l.net_world), &placer);
        }
        let (pending, streams) = {
            let st = self.st.borrow();
            (st.npending > 0, !st.streams.is_empty())
        };
        if pending {
            self.flush_pending();
        }
        if streams {
            self.pump_streams();
        }
        // Services run their work here, outside the transports' callbacks
        // (RPC handlers, the steps of nonblocking collectives).
        // (A service may have been used for the first time just now.)
        if self.services_live() {
            n += self.services_serve();
        }
        n
    }

    /// Makes progress until `done()` holds: spin, then yield, then block
    /// (for how long each: [`super::crowd`], read when the wait goes idle).
    ///
    /// `done` is called until it first returns true, and never after, so it
    /// may act on what it finds (as [`crate::Comm::mprobe`]'s takes the
    /// message it matched).
    ///
    /// The clock is read only every [`POLLS_PER_CLOCK`] idle polls while
    /// spinning, so a message that arrives quickly costs no clock read at all.
    #[inline]
    pub(crate) fn wait_until(&self, mut done: impl FnMut(&Self) -> bool) -> Result<()> {
        let mut idle = 0u32;
        let mut since: Option<Instant> = None;
        // The policy of the node's crowding as last read (no reading here);
        // it is read again when a wait goes idle (below).
        let mut pol = *self.crowding.current();
        loop {
            if done(self) {
                return Ok(());
            }
            if self.progress() > 0 {
                idle = 0;
                since = None;
                continue;
            }
            idle = idle.wrapping_add(1);
            if idle % POLLS_PER_CLOCK != 0 && !pol.spin.is_zero() {
                std::hint::spin_loop();
                continue;
            }
            let waited = match since {
                Some(t0) => t0.elapsed(),
                None => {
                    let now = Instant::now();
                    since = Some(now);
                    pol = *self.crowding.at(now);
                    Duration::ZERO
                }
            };
            if waited < pol.spin {
                std::hint::spin_loop();
            } else if waited < pol.spin + pol.yield_for {
                std::thread::yield_now();
            } else {
                // The transport asks `done` once more before it sleeps. If it
                // holds then, it must not be asked again: a `done` that takes
                // what it found (a matched probe takes the message out of the
                // queue) would take a second one and lose the first.
                let mut met = false;
                self.block(&mut || {
                    met = met || done(self);
                    met
                })?;
                if met {
                    return Ok(());
                }
            }
        }
    }

    /// Sleeps until a transport has something, or `ready()` holds once this
    /// rank announced that it sleeps (for conditions that other ranks change
    /// directly in shared memory, then wake us).
    #[cold]
    pub(crate) fn block(&self, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        if !self.st.borrow().woken.is_empty() {
            // A schedule's transfer completed outside a progress pass's
            // service step: the next pass advances it; no sleeping.
            return Ok(());
        }
        self.block_any(ready)
    }

    /// [`Engine::block`] whatever the ready queue of schedules holds (for
    /// the service thread, which does not advance schedules: it must not
    /// stay awake for them).
    fn block_any(&self, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        if let Some(rank) = self.st.borrow().failed {
            // A job whose peer died cannot make progress: say so instead of hanging.
            return Err(Error::PeerFailed { rank });
        }
        // Nobody rings our bell when a full ring drains: poll briskly then.
        let busy = {
            let st = self.st.borrow();
            st.npending > 0 || !st.streams.is_empty()
        };
        let timeout = if busy {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(100)
        };
        match &self.links.net {
            None => self.links.local.wait_or(timeout, ready)?,
            // Both transports: sleep in the network's wait; a local peer that
            // rings our doorbell wakes it through the bridge thread.
            Some(net) => self
                .links
                .local
                .wait_with(net, self.bridge.as_ref(), timeout, ready)?,
        }
        Ok(())
    }

    /// Sleeps until a transport may have something, or `ready()` holds (the
    /// RPC service thread's idle wait; see [`Engine::waker`]).
    pub(crate) fn sleep(&self, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        self.block_any(ready)
    }

    /// What ends a [`Engine::sleep`] from another thread: the network
    /// transport's wake-up when there is one (shared memory rings reach it
    /// through the doorbell bridge), else this rank's shm doorbell. A rank
    /// alone sleeps at most a millisecond at a time anyway.
    pub(crate) fn waker(&self) -> crate::engine::entry::Waker {
        let net = self.links.net.as_ref().and_then(|n| n.waker());
        match net.or_else(|| self.links.local.waker()) {
            Some(w) => Box::new(move || dos_transport::Wake::wake(&w)),
            None => Box::new(|| {}),
        }
    }

    /// Waits for request `id` and returns its result, freeing it.
    pub(crate) fn wait(&self, id: ReqId) -> Result<Status> {
        match self.wait_until(|e| e.is_done(id)) {
            Ok(()) => self.take(id),
            Err(e) => {
                self.abandon(id);
                Err(e)
            }
        }
    }

    /// Gives up request `id` after waiting for it failed (a peer died):
    /// detaches it from its buffer, so that nothing touches the buffer once
    /// this returns, and frees its slot.
    ///
    /// Posted receives, queued sends and streams that still point into the
    /// buffer are dropped (a message for it that arrives later is discarded);
    /// bodies lent to a transport are waited for, which ends when their
    /// connection sends them or fails. (With CMA, a live peer may still be
    /// reading the sender's buffer: only a job that is being torn down gets
    /// here.)
    #[cold]
    pub(crate) fn abandon(&self, id: ReqId) {
        let placing = match self.st.borrow().reqs.get(id as usize) {
            None
            | Some(Req {
                slot: Slot::Free, ..
            }) => return,
            Some(req) => matches!(req.slot, Slot::Placing { .. }),
        };
        // Services drop what refers to the request (schedules of nonblocking
        // collectives and their transfers; one-sided replies not yet in).
        if self.services_live() {
            self.services_abandon(id);
        }
        if placing {
            self.release_region(id);
        }
        {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            st.posted.retain(|p| p.req != id);
            st.placing.retain(|(_, p)| p.req != id);
            st.streams.retain(|s| s.sreq != id);
            for q in &mut st.pending {
                let before = q.len();
                q.retain(|p| p.complete != Some(id));
                st.npending -= before - q.len();
            }
        }
        // Loans end when their connection sends or drops them; meanwhile keep
        // the transports going (never blocking on the failed peer's state).
        while self.st.borrow().reqs[id as usize].lent > 0 {
            if self.progress() == 0 {
                let _ = self.links.local.wait(Duration::from_micros(100));
                if let Some(net) = &self.links.net {
                    let _ = net.wait(Duration::from_micros(100));
                }
            }
        }
        let mut st = self.st.borrow_mut();
        let req = &mut st.reqs[id as usize];
        req.slot = Slot::Free;
        req.after = None;
        req.replies = 0;
        req.gen = req.gen.wrapping_add(1);
        st.free.push(id);
    }

    /// Leaves the job: tells every peer reached over the network that this
    /// rank is done (so its connection closing is not taken for a failure),
    /// then hands every queued send to the transport.
    pub(crate) fn finalize(&self) -> Result<()> {
        self.stop_service_thread();
        if self.services_live() {
            self.services_flush();
        }
        for (peer, route) in self.links.routes.iter().enumerate() {
            if let Route::Net(_) = route {
                match self.send_ctrl(peer, AM_BYE, &[]) {
                    // A peer that finalized first has closed its connection.
                    Ok(())
                    | Err(Error::Transport(dos_transport::Error::PeerUnreachable { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.drain_sends()
    }
}
