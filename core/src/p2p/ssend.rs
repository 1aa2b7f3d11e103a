//! Synchronous sends (`MPI_Ssend`, `MPI_Issend`).
//!
//! A synchronous send completes only once the matching receive has started.
//! It always takes the rendezvous protocol, whatever its size: the payload
//! stays with the sender until the receiver has matched the announcement
//! (RTS), and the sender's request completes on the receiver's answer (FIN
//! after a single-copy fetch, or the clear-to-send that starts the pipelined
//! transfer). No extra acknowledgement is needed on the eager path, because a
//! synchronous send never takes it.

use bytemuck::Pod;

use super::wire::Envelope;
use super::{Engine, ReqId, Tag};
use crate::request::{Request, Scope};
use crate::{Comm, Result};

impl Engine {
    /// Starts a synchronous send of `len` bytes at `buf` to world rank
    /// `peer`: always by rendezvous, so the request completes only after the
    /// receiver matched it.
    ///
    /// # Safety
    /// As [`Engine::isend`]: `buf` stays valid and unchanged until the
    /// request completes.
    pub(crate) unsafe fn issend(
        &self,
        peer: usize,
        env: Envelope,
        buf: *const u8,
        len: usize,
    ) -> Result<ReqId> {
        self.isend_rdv(peer, env, buf, len)
    }
}

impl Comm {
    /// The world rank of `dest` and the envelope of a point-to-point message to it.
    pub(crate) fn p2p_envelope(&self, dest: usize, tag: Tag) -> Result<(usize, Envelope)> {
        crate::comm::check_tag(tag)?;
        let peer = self.peer(dest)?;
        let env = Envelope {
            ctx: self.ctx() * 2,
            src: self.rank() as u32,
            tag,
        };
        Ok((peer, env))
    }

    /// Sends `buf` to `dest` and returns once the matching receive has
    /// started (`MPI_Ssend`); see [`Comm::issend`].
    ///
    /// Unlike [`Comm::send`], this never returns while the message sits
    /// unreceived at the destination, so two ranks that both `ssend` to each
    /// other before receiving deadlock, as in MPI.
    pub fn ssend<T: Pod>(&self, buf: &[T], dest: usize, tag: Tag) -> Result<()> {
        let (peer, env) = self.p2p_envelope(dest, tag)?;
        let bytes: &[u8] = bytemuck::cast_slice(buf);
        // SAFETY: `buf` is borrowed for this whole call, and we wait for the
        // request before returning.
        let id = unsafe {
            self.eng
                .enter()
                .issend(peer, env, bytes.as_ptr(), bytes.len())?
        };
        self.eng.enter().wait(id).map(|_| ())
    }

    /// Starts a synchronous send (`MPI_Issend`): the request completes once
    /// the matching receive has started; `buf` stays borrowed until the scope ends.
    ///
    /// Synchronous sends always take the rendezvous protocol, whatever their
    /// size: the payload stays with the sender until the receiver has matched
    /// the announcement, and the request completes on the receiver's answer.
    ///
    /// ```
    /// let world = dos::init().unwrap();
    /// let me = world.rank();
    /// let mut got = [0u32; 3];
    /// dos::scope(|s| {
    ///     // To itself: the receive must be posted, or the send never completes.
    ///     let r = world.irecv(s, &mut got, me, 4).unwrap();
    ///     let w = world.issend(s, &[1u32, 2, 3], me, 4).unwrap();
    ///     dos::Request::wait_all([w, r]).unwrap();
    /// });
    /// assert_eq!(got, [1, 2, 3]);
    /// ```
    pub fn issend<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s [T],
        dest: usize,
        tag: Tag,
    ) -> Result<Request<'s>> {
        let (peer, env) = self.p2p_envelope(dest, tag)?;
        let bytes: &[u8] = bytemuck::cast_slice(buf);
        // SAFETY: `buf` is borrowed for `'s`, and the scope completes the
        // request before `'s` ends.
        let id = unsafe {
            self.eng
                .enter()
                .issend(peer, env, bytes.as_ptr(), bytes.len())?
        };
        Ok(s.register(&self.eng, id))
    }
}
