//! Persistent requests (`MPI_Send_init`, `MPI_Recv_init`, `MPI_Start`).

use std::cell::Cell;
use std::marker::PhantomData;
use std::rc::Rc;

use bytemuck::Pod;

use super::wire::Envelope;
use super::{ReqId, Shared, Source, Status, Tag, TagSel};
use crate::request::Scope;
use crate::{Comm, Error, Result};

/// Where a persistent request is in its cycle; shared with its scope, which
/// completes an active one that was leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not started (or waited for).
    Idle,
    /// Started and already complete (a send that went out at once).
    Complete,
    /// Started, in flight as this engine request.
    Active(ReqId),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Send {
        peer: usize,
        env: Envelope,
        sync: bool,
    },
    Recv {
        ctx: u32,
        src: Source,
        tag: TagSel,
    },
}

/// A send or receive set up once and started many times (`MPI_Send_init`,
/// `MPI_Ssend_init`, `MPI_Recv_init`); made by [`Comm::send_init`],
/// [`Comm::ssend_init`] and [`Comm::recv_init`] inside a [`crate::scope`].
///
/// The request holds its buffer for the scope. Between a [`Persistent::wait`]
/// and the next [`Persistent::start`] the buffer is reachable through
/// [`Persistent::data`] and [`Persistent::data_mut`] (to fill the next
/// message, or read the one received); while the request is active it is
/// not, so the transfer never sees the buffer change under it. Dropping an
/// active request waits for it; the scope completes one that was leaked.
///
/// ```
/// let world = dos::init().unwrap();
/// let (me, n) = (world.rank(), world.size());
/// let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
/// let mut out = [0u64; 2];
/// let mut inb = [0u64; 2];
/// dos::scope(|s| {
///     let mut send = world.send_init(s, &mut out, next, 1).unwrap();
///     let mut recv = world.recv_init(s, &mut inb, prev, 1).unwrap();
///     for step in 0..5u64 {
///         send.data_mut().unwrap().fill(step * 100 + me as u64);
///         dos::Persistent::start_all([&mut recv, &mut send]).unwrap();
///         dos::Persistent::wait_all([&mut send, &mut recv]).unwrap();
///         assert_eq!(recv.data().unwrap(), &[step * 100 + prev as u64; 2]);
///     }
/// });
/// ```
pub struct Persistent<'s, T> {
    eng: Shared,
    kind: Kind,
    buf: *mut T,
    len: usize,
    phase: Rc<Cell<Phase>>,
    _buf: PhantomData<&'s mut [T]>,
}

impl<T> std::fmt::Debug for Persistent<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistent")
            .field("kind", &self.kind)
            .field("len", &self.len)
            .field("phase", &self.phase.get())
            .finish()
    }
}

fn active_error(op: &'static str) -> Error {
    Error::InvalidArgument {
        op,
        reason: "the persistent request is active (wait for it first)",
    }
}

impl<'s, T: Pod> Persistent<'s, T> {
    fn new(s: &'s Scope<'s, '_>, eng: &Shared, kind: Kind, buf: &'s mut [T]) -> Self {
        let phase = Rc::new(Cell::new(Phase::Idle));
        s.register_persistent(eng, phase.clone());
        Persistent {
            eng: eng.clone(),
            kind,
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            phase,
            _buf: PhantomData,
        }
    }

    /// Starts the operation (`MPI_Start`); an error if it is already active.
    pub fn start(&mut self) -> Result<()> {
        if self.phase.get() != Phase::Idle {
            return Err(active_error("Persistent::start"));
        }
        let bytes = std::mem::size_of_val(self.data()?);
        let eng = self.eng.enter();
        let phase = match self.kind {
            // SAFETY: the buffer is borrowed for `'s` and reachable only
            // through `self` while the request is active (`data` refuses);
            // the request is completed before `'s` ends (by `wait`, by drop,
            // or by the scope).
            Kind::Send { peer, env, sync } => unsafe {
                if sync {
                    Phase::Active(eng.issend(peer, env, self.buf as *const u8, bytes)?)
                } else {
                    match eng.isend(peer, env, self.buf as *const u8, bytes)? {
                        None => Phase::Complete,
                        Some(id) => Phase::Active(id),
                    }
                }
            },
            // SAFETY: as above, for writes.
            Kind::Recv { ctx, src, tag } => unsafe {
                Phase::Active(eng.irecv(ctx, src, tag, self.buf as *mut u8, bytes)?)
            },
        };
        self.phase.set(phase);
        Ok(())
    }

    /// Starts every request (`MPI_Startall`); stops at the first error.
    pub fn start_all<'a, 'b: 'a>(
        reqs: impl IntoIterator<Item = &'a mut Persistent<'b, T>>,
    ) -> Result<()>
    where
        T: 'a,
    {
        reqs.into_iter().try_for_each(|r| r.start())
    }

    /// Waits for the started operation (`MPI_Wait`) and returns what was
    /// received (a default status for sends, and for a request not started).
    /// The request can then be started again.
    pub fn wait(&mut self) -> Result<Status> {
        let r = match self.phase.get() {
            Phase::Idle | Phase::Complete => Ok(Status::default()),
            Phase::Active(id) => self.eng.enter().wait(id),
        };
        self.phase.set(Phase::Idle);
        crate::comm::check_elems::<T>(r?)
    }

    /// Waits for every request; returns their statuses, or the first error
    /// after all have completed.
    pub fn wait_all<'a, 'b: 'a>(
        reqs: impl IntoIterator<Item = &'a mut Persistent<'b, T>>,
    ) -> Result<Vec<Status>>
    where
        T: 'a,
    {
        crate::request::all_statuses(reqs.into_iter().map(Persistent::wait))
    }

    /// Makes progress once and tells whether the started operation has
    /// completed (true for a request not started); [`Persistent::wait`]
    /// then returns at once.
    pub fn test(&self) -> bool {
        match self.phase.get() {
            Phase::Idle | Phase::Complete => true,
            Phase::Active(id) => {
                let eng = self.eng.enter();
                if eng.is_done(id) {
                    return true;
                }
                eng.progress();
                eng.is_done(id)
            }
        }
    }

    /// True between [`Persistent::start`] and [`Persistent::wait`].
    pub fn is_active(&self) -> bool {
        self.phase.get() != Phase::Idle
    }

    /// The buffer, while the request is not active.
    pub fn data(&self) -> Result<&[T]> {
        if self.is_active() {
            return Err(active_error("Persistent::data"));
        }
        // SAFETY: borrowed exclusively for `'s` by this request, and no
        // transfer uses it while the request is idle.
        Ok(unsafe { std::slice::from_raw_parts(self.buf, self.len) })
    }

    /// The buffer, mutably, while the request is not active (to fill the next send).
    pub fn data_mut(&mut self) -> Result<&mut [T]> {
        if self.is_active() {
            return Err(active_error("Persistent::data_mut"));
        }
        // SAFETY: as in `data`, and `&mut self` makes this the only access.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.buf, self.len) })
    }
}

impl<T> Drop for Persistent<'_, T> {
    fn drop(&mut self) {
        if let Phase::Active(id) = self.phase.replace(Phase::Idle) {
            let _ = self.eng.enter().wait(id);
        }
    }
}

/// Completes a leaked persistent request (called by its scope).
pub(crate) fn finish(eng: &Shared, phase: &Cell<Phase>) {
    if let Phase::Active(id) = phase.replace(Phase::Idle) {
        let _ = eng.enter().wait(id);
    }
}

impl Comm {
    /// A persistent send of `buf` to `dest` with `tag` (`MPI_Send_init`),
    /// started with [`Persistent::start`]; see [`Persistent`].
    pub fn send_init<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        dest: usize,
        tag: Tag,
    ) -> Result<Persistent<'s, T>> {
        self.send_init_as(s, buf, dest, tag, false)
    }

    /// A persistent synchronous send (`MPI_Ssend_init`): each start completes
    /// only once the matching receive has started (see [`Comm::ssend`]).
    pub fn ssend_init<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        dest: usize,
        tag: Tag,
    ) -> Result<Persistent<'s, T>> {
        self.send_init_as(s, buf, dest, tag, true)
    }

    fn send_init_as<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        dest: usize,
        tag: Tag,
        sync: bool,
    ) -> Result<Persistent<'s, T>> {
        let (peer, env) = self.p2p_envelope(dest, tag)?;
        let kind = Kind::Send { peer, env, sync };
        Ok(Persistent::new(s, &self.eng, kind, buf))
    }

    /// A persistent receive into `buf` from `src` with `tag` (`MPI_Recv_init`).
    pub fn recv_init<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        src: impl Into<Source>,
        tag: impl Into<TagSel>,
    ) -> Result<Persistent<'s, T>> {
        let (src, tag) = (src.into(), tag.into());
        self.check_match(src, tag)?;
        let kind = Kind::Recv {
            ctx: self.ctx() * 2,
            src,
            tag,
        };
        Ok(Persistent::new(s, &self.eng, kind, buf))
    }
}
