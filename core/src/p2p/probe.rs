//! Matched probes (`MPI_Mprobe`, `MPI_Improbe`) and the receives of what
//! they matched (`MPI_Mrecv`, `MPI_Imrecv`).
//!
//! [`Comm::mprobe`] finds a message like [`Comm::probe`] does, and also takes
//! it out of the matching queue: the [`Message`] it returns can be received
//! only through [`Comm::mrecv`] (or [`Comm::imrecv`]), so no other receive,
//! not even one with [`crate::ANY_SOURCE`] posted in between, can take it.
//! This is what makes "probe for the size, then receive" safe when several
//! receives with wildcards are outstanding.

use bytemuck::Pod;

use super::matching::{matches, sel_src, sel_tag, Unexpected};
use super::{Engine, ReqId, Shared, Source, Status, TagSel};
use crate::request::{Request, Scope};
use crate::{Comm, Result};

impl Engine {
    /// Removes the first unexpected message that matches, if any (after one
    /// round of progress).
    fn improbe_take(&self, ctx: u32, src: Source, tag: TagSel) -> Option<Unexpected> {
        self.progress();
        let (src, tag) = (sel_src(src), sel_tag(tag));
        let mut st = self.st.borrow_mut();
        let i = st
            .unexpected
            .iter()
            .position(|u| matches(ctx, src, tag, &u.env))?;
        st.unexpected.remove(i)
    }

    /// Starts receiving the matched message `u` into `cap` bytes at `buf`.
    ///
    /// # Safety
    /// As [`Engine::irecv`]: `buf` valid for writes of `cap` bytes, and not
    /// otherwise accessed, until the request completes.
    unsafe fn mrecv_start(&self, u: Unexpected, buf: *mut u8, cap: usize) -> ReqId {
        let id = Self::alloc_req(&mut self.st.borrow_mut());
        self.deliver_unexpected(u, buf, cap, id);
        id
    }
}

fn status_of(u: &Unexpected) -> Status {
    Status {
        source: u.env.src as usize,
        tag: u.env.tag,
        len: u.len(),
    }
}

/// A message taken out of the matching queue by [`Comm::mprobe`] or
/// [`Comm::improbe`] (`MPI_Message`); receive it with [`Comm::mrecv`] or
/// [`Comm::imrecv`].
///
/// No other receive, not even one with [`crate::ANY_SOURCE`] posted in
/// between, can take a matched message.
///
/// A `Message` that is dropped without being received is received and
/// discarded (a large one is fetched first, so its sender completes).
///
/// ```
/// let world = dos::init().unwrap();
/// let me = world.rank();
/// world.send(&[7u16, 8, 9], me, 3).unwrap();
/// let msg = world.mprobe(dos::ANY_SOURCE, dos::ANY_TAG).unwrap();
/// let mut v = vec![0u16; msg.status().count::<u16>()];
/// let st = world.mrecv(msg, &mut v).unwrap();
/// assert_eq!((v, st.tag), (vec![7, 8, 9], 3));
/// ```
pub struct Message {
    eng: Shared,
    /// `None` once received.
    msg: Option<Unexpected>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("status", &self.status())
            .finish()
    }
}

impl Message {
    /// Sender, tag and length of the message.
    pub fn status(&self) -> Status {
        self.msg.as_ref().map(status_of).unwrap_or_default()
    }

    fn take(mut self) -> Unexpected {
        self.msg
            .take()
            .expect("a Message holds its message until received")
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if let Some(u) = self.msg.take() {
            // Receive it and throw it away, so that a rendezvous sender completes.
            let mut sink = vec![0u8; u.len()];
            let eng = self.eng.enter();
            // SAFETY: `sink` outlives the request, which is waited for here.
            let id = unsafe { eng.mrecv_start(u, sink.as_mut_ptr(), sink.len()) };
            let _ = eng.wait(id);
        }
    }
}

impl Comm {
    /// Waits for a matching message and takes it out of the matching queue
    /// (`MPI_Mprobe`); see [`Message`].
    pub fn mprobe(&self, src: impl Into<Source>, tag: impl Into<TagSel>) -> Result<Message> {
        let (src, tag) = (src.into(), tag.into());
        self.check_match(src, tag)?;
        let ctx = self.ctx() * 2;
        let mut found = None;
        self.eng.enter().wait_until(|e| {
            found = e.improbe_take(ctx, src, tag);
            found.is_some()
        })?;
        Ok(Message {
            eng: self.eng.clone(),
            msg: found,
        })
    }

    /// Takes a matching message out of the matching queue if one has arrived
    /// (`MPI_Improbe`).
    pub fn improbe(
        &self,
        src: impl Into<Source>,
        tag: impl Into<TagSel>,
    ) -> Result<Option<Message>> {
        let (src, tag) = (src.into(), tag.into());
        self.check_match(src, tag)?;
        let found = self.eng.enter().improbe_take(self.ctx() * 2, src, tag);
        Ok(found.map(|u| Message {
            eng: self.eng.clone(),
            msg: Some(u),
        }))
    }

    /// Receives the matched message `msg` into `buf` (`MPI_Mrecv`).
    ///
    /// A message longer than `buf` gives [`crate::Error::Truncated`] (it is consumed).
    pub fn mrecv<T: Pod>(&self, msg: Message, buf: &mut [T]) -> Result<Status> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        let eng = msg.eng.clone();
        let u = msg.take();
        let eng = eng.enter();
        // SAFETY: `buf` is exclusively borrowed for this whole call, and we
        // wait for the request before returning.
        let id = unsafe { eng.mrecv_start(u, bytes.as_mut_ptr(), bytes.len()) };
        crate::comm::check_elems::<T>(eng.wait(id)?)
    }

    /// Starts receiving the matched message `msg` into `buf` (`MPI_Imrecv`);
    /// `buf` stays borrowed until the scope ends.
    pub fn imrecv<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        msg: Message,
        buf: &'s mut [T],
    ) -> Result<Request<'s>> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        let eng = msg.eng.clone();
        let u = msg.take();
        // SAFETY: `buf` is exclusively borrowed for `'s`, and the scope
        // completes the request before `'s` ends.
        let id = unsafe { eng.enter().mrecv_start(u, bytes.as_mut_ptr(), bytes.len()) };
        Ok(s.register(&eng, id))
    }
}
