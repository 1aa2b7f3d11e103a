//! The pending queue: sends that found the transport busy wait here, per
//! peer and in order (so that later sends never overtake them), until
//! progress hands them over.

use super::Engine;
use crate::engine::ReqId;
use crate::p2p::wire::RTS_MAX;
use crate::p2p::Status;
use crate::{Error, Result};

/// A send that found the transport busy, waiting its turn.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) id: u8,
    pub(crate) hdr: [u8; RTS_MAX],
    pub(crate) hdr_len: u8,
    pub(crate) payload: *const u8,
    pub(crate) len: usize,
    /// The payload, when the sender's buffer could not be kept (`send_copy`).
    pub(crate) owned: Vec<u8>,
    /// Completed when the message is handed to the transport (eager sends).
    pub(crate) complete: Option<ReqId>,
}

impl Engine {
    /// Sends a small control message, queueing it behind earlier sends if busy.
    pub(crate) fn send_ctrl(&self, peer: usize, id: u8, hdr: &[u8]) -> Result<()> {
        self.send_copy(peer, id, hdr, &[])
    }

    /// Sends an active message to world rank `peer`, copying `payload` into
    /// the queue if the transport is busy (for messages whose buffer the
    /// caller does not keep, such as one-sided operations and their replies).
    /// `hdr` is at most `RTS_MAX` bytes.
    pub(crate) fn send_copy(&self, peer: usize, id: u8, hdr: &[u8], payload: &[u8]) -> Result<()> {
        debug_assert!(hdr.len() <= RTS_MAX);
        let queued = match self.st.borrow().pending.get(peer) {
            Some(q) => !q.is_empty(),
            None => {
                return Err(Error::InvalidRank {
                    rank: peer,
                    size: self.links.routes.len(),
                })
            }
        };
        if !queued {
            match self.am_send(peer, id, hdr, payload) {
                Ok(()) => return Ok(()),
                Err(dos_transport::Error::Busy { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut p = Pending {
            id,
            hdr: [0; RTS_MAX],
            hdr_len: hdr.len() as u8,
            payload: std::ptr::null(),
            len: 0,
            owned: payload.to_vec(),
            complete: None,
        };
        p.hdr[..hdr.len()].copy_from_slice(hdr);
        let mut st = self.st.borrow_mut();
        st.pending[peer].push_back(p);
        st.npending += 1;
        Ok(())
    }

    /// Hands queued sends to the transport, in order, until it is busy again.
    #[cold]
    pub(crate) fn flush_pending(&self) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        for peer in 0..st.pending.len() {
            while let Some(p) = st.pending[peer].front() {
                let payload: &[u8] = if !p.owned.is_empty() {
                    &p.owned
                } else if p.len == 0 {
                    &[]
                } else {
                    // SAFETY: the request that owns `payload` is still active, so
                    // its buffer is still borrowed (see `isend`).
                    unsafe { std::slice::from_raw_parts(p.payload, p.len) }
                };
                match self.am_send(peer, p.id, &p.hdr[..p.hdr_len as usize], payload) {
                    Ok(()) => {
                        if let Some(id) = p.complete {
                            Self::complete(st, id, Ok(Status::default()));
                        }
                        st.pending[peer].pop_front();
                        st.npending -= 1;
                    }
                    Err(dos_transport::Error::Busy { .. }) => break,
                    Err(e) => {
                        if let Some(id) = p.complete {
                            Self::complete(st, id, Err(e.into()));
                        }
                        st.pending[peer].pop_front();
                        st.npending -= 1;
                    }
                }
            }
        }
    }

    /// Hands every queued send to the transport.
    pub(crate) fn drain_sends(&self) -> Result<()> {
        self.wait_until(|e| e.st.borrow().npending == 0)
    }
}
