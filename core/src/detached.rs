//! Nonblocking point-to-point requests that are not tied to a [`crate::scope`],
//! for bindings to languages whose requests outlive any Rust borrow (the MPI C
//! interface in the `dos-mpi` crate).
//!
//! A [`Comm::isend_detached`] or [`Comm::irecv_detached`] takes a raw pointer
//! and returns a [`DetachedRequest`]; the caller promises, as in C, that the
//! buffer stays valid until the request completes. Rust programs should use
//! [`Comm::isend`]/[`Comm::irecv`] inside a scope, where the compiler keeps
//! that promise for them.
//!
//! ```
//! let world = dos::init().unwrap();
//! let me = world.rank();
//! let mut got = [0u8; 3];
//! let sent = [1u8, 2, 3];
//! // SAFETY: both buffers outlive the requests, which are waited for below.
//! let r = unsafe { world.irecv_detached(got.as_mut_ptr(), 3, me.into(), 7.into()) }.unwrap();
//! let s = unsafe { world.isend_detached(sent.as_ptr(), 3, me, 7) }.unwrap();
//! s.wait().unwrap();
//! assert_eq!(r.wait().unwrap().len, 3);
//! assert_eq!(got, sent);
//! ```

pub use crate::coll::nonblocking::ffi::{BlockLayout, NbColl};
use crate::comm::Comm;
use crate::p2p::{ReqId, Shared, Source, Status, Tag, TagSel};
use crate::Result;

/// A nonblocking send or receive started with a raw buffer pointer (see the
/// [module docs](self)). Dropping it waits for completion, as dropping a
/// [`crate::Request`] does.
#[must_use = "a request completes only when waited on (dropping it waits)"]
pub struct DetachedRequest {
    inner: Option<(Shared, ReqId)>,
}

impl std::fmt::Debug for DetachedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedRequest")
            .field("id", &self.inner.as_ref().map(|x| x.1))
            .finish()
    }
}

impl Comm {
    /// Starts a standard-mode send of `len` bytes at `buf` (`MPI_Isend`).
    ///
    /// # Safety
    /// `buf` must be valid for reads of `len` bytes and left unmodified until
    /// the returned request has completed (it may complete at once).
    pub unsafe fn isend_detached(
        &self,
        buf: *const u8,
        len: usize,
        dest: usize,
        tag: Tag,
    ) -> Result<DetachedRequest> {
        let (peer, env) = self.p2p_envelope(dest, tag)?;
        // SAFETY: the caller keeps `buf` valid until the request completes.
        let id = unsafe { self.eng.enter().isend(peer, env, buf, len)? };
        Ok(DetachedRequest {
            inner: id.map(|id| (self.eng.clone(), id)),
        })
    }

    /// Starts a synchronous-mode send (`MPI_Issend`): the request completes
    /// once the matching receive has started.
    ///
    /// # Safety
    /// As [`Comm::isend_detached`].
    pub unsafe fn issend_detached(
        &self,
        buf: *const u8,
        len: usize,
        dest: usize,
        tag: Tag,
    ) -> Result<DetachedRequest> {
        let (peer, env) = self.p2p_envelope(dest, tag)?;
        // SAFETY: the caller keeps `buf` valid until the request completes.
        let id = unsafe { self.eng.enter().issend(peer, env, buf, len)? };
        Ok(DetachedRequest {
            inner: Some((self.eng.clone(), id)),
        })
    }

    /// Posts a receive into `cap` bytes at `buf` (`MPI_Irecv`). A longer
    /// message completes the request with [`crate::Error::Truncated`].
    ///
    /// # Safety
    /// `buf` must be valid for writes of `cap` bytes, and neither read nor
    /// written otherwise, until the returned request has completed.
    pub unsafe fn irecv_detached(
        &self,
        buf: *mut u8,
        cap: usize,
        src: Source,
        tag: TagSel,
    ) -> Result<DetachedRequest> {
        self.check_match(src, tag)?;
        // SAFETY: the caller keeps `buf` valid until the request completes.
        let id = unsafe { self.eng.enter().irecv(self.ctx() * 2, src, tag, buf, cap)? };
        Ok(DetachedRequest {
            inner: Some((self.eng.clone(), id)),
        })
    }

    /// Makes progress once on the engine (delivers whatever has arrived).
    pub fn progress(&self) {
        self.eng.enter().progress();
    }
}

impl DetachedRequest {
    /// The request for engine request `id` (a nonblocking collective's,
    /// see [`Comm::icoll_detached`]).
    pub(crate) fn from_engine(eng: Shared, id: ReqId) -> DetachedRequest {
        DetachedRequest {
            inner: Some((eng, id)),
        }
    }

    /// A request that is already complete.
    pub fn completed() -> DetachedRequest {
        DetachedRequest { inner: None }
    }

    /// True if the request has completed, without making progress.
    pub fn is_done(&self) -> bool {
        match &self.inner {
            None => true,
            Some((eng, id)) => eng.enter().is_done(*id),
        }
    }

    /// The request's result if it has completed (without making progress:
    /// one entry into the engine), after which the request is complete
    /// (as [`DetachedRequest::completed`]); `None`, the request unchanged,
    /// if it has not. A fast path for bindings that complete many requests.
    ///
    /// ```
    /// let world = dos::init().unwrap();
    /// let me = world.rank();
    /// let mut got = [0u8; 1];
    /// // SAFETY: `got` outlives the request, which completes below.
    /// let mut r = unsafe { world.irecv_detached(got.as_mut_ptr(), 1, me.into(), 3.into()) }.unwrap();
    /// assert!(r.try_take().is_none()); // nothing sent yet
    /// world.send(&[5u8], me, 3).unwrap();
    /// let st = loop {
    ///     match r.try_take() {
    ///         Some(st) => break st.unwrap(),
    ///         None => world.progress(),
    ///     }
    /// };
    /// assert_eq!((st.len, got[0]), (1, 5));
    /// // Complete now: taking again gives an empty status at once.
    /// assert_eq!(r.try_take().unwrap().unwrap().len, 0);
    /// ```
    pub fn try_take(&mut self) -> Option<Result<Status>> {
        let (eng, id) = match self.inner.take() {
            None => return Some(Ok(Status::default())),
            Some(x) => x,
        };
        let e = eng.enter();
        if !e.is_done(id) {
            drop(e);
            self.inner = Some((eng, id));
            return None;
        }
        let r = e.take(id);
        drop(e);
        Some(r)
    }

    /// Waits (making progress, spinning then sleeping) until the request
    /// has completed, without taking its result: [`DetachedRequest::try_take`]
    /// then returns it. An error means a peer failed and the request will
    /// not complete.
    pub fn wait_done(&self) -> Result<()> {
        match &self.inner {
            None => Ok(()),
            Some((eng, id)) => eng.enter().wait_until(|e| e.is_done(*id)),
        }
    }

    /// Makes progress once and tells whether the request has completed;
    /// [`DetachedRequest::wait`] then returns at once.
    pub fn test(&self) -> bool {
        match &self.inner {
            None => true,
            Some((eng, id)) => {
                let eng = eng.enter();
                if eng.is_done(*id) {
                    return true;
                }
                eng.progress();
                eng.is_done(*id)
            }
        }
    }

    /// Waits for completion; returns what was received (a default status for sends).
    pub fn wait(mut self) -> Result<Status> {
        match self.inner.take() {
            None => Ok(Status::default()),
            Some((eng, id)) => eng.enter().wait(id),
        }
    }

    /// Gives the request up without waiting: a posted receive is withdrawn
    /// (a message for it that arrives later waits for another receive), a
    /// send not yet handed to the transport is dropped. For a library that
    /// shuts down with requests the program never completed.
    pub fn abandon(mut self) {
        if let Some((eng, id)) = self.inner.take() {
            let eng = eng.enter();
            if eng.is_done(id) {
                let _ = eng.take(id);
            } else {
                eng.abandon(id);
            }
        }
    }

    /// Blocks (spinning, then sleeping) until at least one of `reqs` has
    /// completed; returns at once if `reqs` is empty or one already has.
    /// An error means a peer failed and nothing more will complete.
    pub fn wait_any_done(reqs: &[&DetachedRequest]) -> Result<()> {
        if reqs.iter().any(|r| r.is_done()) {
            return Ok(());
        }
        let Some(eng) = reqs
            .iter()
            .find_map(|r| r.inner.as_ref().map(|x| x.0.clone()))
        else {
            return Ok(());
        };
        let ids: Vec<ReqId> = reqs
            .iter()
            .filter_map(|r| r.inner.as_ref().map(|x| x.1))
            .collect();
        let r = eng
            .enter()
            .wait_until(|e| ids.iter().any(|&i| e.is_done(i)));
        r
    }
}

impl Drop for DetachedRequest {
    fn drop(&mut self) {
        if let Some((eng, id)) = self.inner.take() {
            let _ = eng.enter().wait(id);
        }
    }
}
