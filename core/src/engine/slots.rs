//! Request slots: what a nonblocking operation is while in flight, its
//! generation (to detect reuse), bodies lent to a transport, and replies
//! still awaited; completion and freeing.

use super::{Engine, State};
use crate::p2p::Status;
use crate::Result;
use dos_transport::MemRegion;

/// Index of a request slot.
pub(crate) type ReqId = u32;

#[derive(Debug)]
pub(crate) enum Slot {
    Free,
    /// In flight, nothing to remember (eager send queued, receive posted).
    Active,
    /// A rendezvous send waiting for CTS (pipeline) or FIN (CMA).
    Sending {
        buf: *const u8,
        len: usize,
    },
    /// A rendezvous receive whose payload the sender puts into `region`
    /// (registered with the network transport) until DONE.
    Placing {
        region: MemRegion,
        cap: usize,
        status: Status,
    },
    /// A pipelined rendezvous receive collecting chunks.
    Receiving {
        buf: *mut u8,
        cap: usize,
        got: usize,
        status: Status,
    },
    Done(Result<Status>),
}

#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) slot: Slot,
    pub(crate) gen: u32,
    /// Bodies of this (send) request that a transport still reads (zero-copy
    /// sends that said `Pending`); the request completes only at zero.
    pub(crate) lent: u32,
    /// The result to post once `lent` reaches zero.
    pub(crate) after: Option<Result<Status>>,
    /// Replies from other ranks this request still waits for (one-sided gets).
    pub(crate) replies: u32,
    /// Who is told when it completes: 0 nobody, else `key + 1` of the
    /// nonblocking collective's schedule that waits for it (pushed onto
    /// [`State::woken`]; see [`Engine::watch`]).
    pub(crate) watch: u32,
}

impl Engine {
    pub(crate) fn alloc_req(st: &mut State) -> ReqId {
        if let Some(id) = st.free.pop() {
            let req = &mut st.reqs[id as usize];
            req.slot = Slot::Active;
            req.watch = 0;
            id
        } else {
            st.reqs.push(Req {
                slot: Slot::Active,
                gen: 0,
                lent: 0,
                after: None,
                replies: 0,
                watch: 0,
            });
            (st.reqs.len() - 1) as ReqId
        }
    }

    /// Completes request `id` with `r`, telling whoever watches it (every
    /// completion goes through here).
    #[inline]
    pub(crate) fn complete(st: &mut State, id: ReqId, r: Result<Status>) {
        let req = &mut st.reqs[id as usize];
        req.slot = Slot::Done(r);
        if req.watch != 0 {
            let key = req.watch - 1;
            req.watch = 0;
            st.woken.push(key);
        }
    }

    /// Has the completion of request `id` (still in flight) push `key` onto
    /// [`State::woken`] (the nonblocking collectives' ready queue).
    #[inline]
    pub(crate) fn watch(&self, id: ReqId, key: u32) {
        self.st.borrow_mut().reqs[id as usize].watch = key + 1;
    }

    /// Takes the keys of the watched requests completed since the last call
    /// (into `into`, which is cleared first).
    #[inline]
    pub(crate) fn take_woken(&self, into: &mut Vec<u32>) {
        into.clear();
        std::mem::swap(&mut self.st.borrow_mut().woken, into);
    }

    /// Generation of a slot, to detect reuse.
    pub(crate) fn generation(&self, id: ReqId) -> u32 {
        self.st.borrow().reqs[id as usize].gen
    }

    /// True if request `id` has completed.
    pub(crate) fn is_done(&self, id: ReqId) -> bool {
        matches!(self.st.borrow().reqs[id as usize].slot, Slot::Done(_))
    }

    /// Takes the result of a completed request and frees its slot.
    pub(crate) fn take(&self, id: ReqId) -> Result<Status> {
        let mut st = self.st.borrow_mut();
        let req = &mut st.reqs[id as usize];
        let slot = std::mem::replace(&mut req.slot, Slot::Free);
        req.gen = req.gen.wrapping_add(1);
        st.free.push(id);
        match slot {
            Slot::Done(r) => r,
            _ => unreachable!("take of an incomplete request"),
        }
    }

    /// Returns an unused request slot.
    pub(crate) fn free_req(st: &mut State, id: ReqId) {
        let req = &mut st.reqs[id as usize];
        req.slot = Slot::Free;
        req.gen = req.gen.wrapping_add(1);
        st.free.push(id);
    }

    /// A new request that completes after `replies` replies arrived (each
    /// reported with [`Engine::reply_arrived`]).
    pub(crate) fn await_replies(&self, replies: u32) -> (ReqId, u32) {
        let mut st = self.st.borrow_mut();
        let id = Self::alloc_req(&mut st);
        let req = &mut st.reqs[id as usize];
        req.replies = replies;
        req.after = Some(Ok(Status::default()));
        if replies == 0 {
            req.slot = Slot::Done(Ok(Status::default()));
            req.after = None;
        }
        (id, req.gen)
    }

    /// One reply for request `id` of generation `gen` arrived (`Err` if it
    /// reports a failure, which the request then returns).
    pub(crate) fn reply_arrived(&self, id: ReqId, gen: u32, r: Result<()>) {
        let mut st = self.st.borrow_mut();
        let Some(req) = st.reqs.get_mut(id as usize) else {
            return;
        };
        if req.gen != gen || req.replies == 0 {
            return;
        }
        req.replies -= 1;
        if let Err(e) = r {
            if matches!(req.after, Some(Ok(_))) {
                req.after = Some(Err(e));
            }
        }
        if req.replies == 0 && req.lent == 0 {
            if let Some(r) = req.after.take() {
                Self::complete(&mut st, id, r);
            }
        }
    }

    /// A transport stopped reading a lent body of request `token`.
    pub(crate) fn on_send_done(&self, token: u64) {
        if token & super::am::SERVICE_TOKEN != 0 {
            return self.services_send_done(token);
        }
        let (id, gen) = ((token & 0xffff_ffff) as ReqId, (token >> 32) as u32);
        let mut st = self.st.borrow_mut();
        let Some(req) = st.reqs.get_mut(id as usize) else {
            return;
        };
        if req.gen & LOAN_GEN_MASK != gen || req.lent == 0 {
            return;
        }
        req.lent -= 1;
        if req.lent == 0 {
            if let Some(r) = req.after.take() {
                Self::complete(&mut st, id, r);
            }
        }
    }
}

/// The generation bits a loan token carries: the top bit of a token marks
/// loans of services ([`super::am::SERVICE_TOKEN`]).
pub(crate) const LOAN_GEN_MASK: u32 = 0x7fff_ffff;

/// The token of a loan of request `id` in generation `gen` (`Event::SendDone`).
#[inline]
pub(crate) fn loan_token(id: ReqId, gen: u32) -> u64 {
    (u64::from(gen & LOAN_GEN_MASK) << 32) | u64::from(id)
}
