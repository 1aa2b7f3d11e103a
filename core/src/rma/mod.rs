//! One-sided communication: windows of memory that other ranks read, write,
//! accumulate into and update atomically (MPI's RMA).
//!
//! A [`Window`] is created collectively over a communicator, either in memory
//! the runtime allocates ([`Comm::win_allocate`]) or over the caller's buffer
//! ([`Comm::win_create`]). Each rank's part may have a different length; the
//! displacement of every operation counts elements of `T` from the start of
//! the target's part.
//!
//! * Data: [`Window::put`], [`Window::get`], [`Window::accumulate`] (with the
//!   built-in operations of [`crate::op`] and [`crate::op::Replace`]; each
//!   element is updated atomically with respect to other accumulates).
//! * Fetching accumulates ([`accumulate`](mod@accumulate)):
//!   [`Window::get_accumulate`] and [`Window::fetch_op`] with every built-in
//!   operation, [`crate::op::Replace`] and [`NoOp`], atomic per element with
//!   respect to the other accumulates.
//! * Many pieces of one target in one call ([`runs`](mod@runs)):
//!   [`Window::get_runs`] and [`Window::accumulate_raw_runs`] (an MPI
//!   derived target datatype): a few batched messages (GETV, ACCV) instead
//!   of one per piece.
//! * Atomics on `Window<u64>`: [`Window::fetch_add`], [`Window::compare_swap`],
//!   [`Window::swap`].
//! * Nonblocking: [`Window::rput`], [`Window::rget`], [`Window::raccumulate`],
//!   [`Window::rfetch_add`] give [`Request`]s within a [`crate::scope`].
//! * Completion and epochs: [`Window::flush`] / [`Window::flush_all`] (every
//!   operation issued to the target is complete there), [`Window::fence`]
//!   (flush everything, then a barrier: MPI's active-target fence epochs),
//!   [`Window::lock`] / [`Window::unlock`] (passive target, shared or
//!   exclusive; unlock flushes), [`Window::lock_all`] / [`Window::unlock_all`],
//!   and post/start/complete/wait between groups of ranks ([`pscw`]:
//!   [`Window::post`], [`Window::start`], [`Window::complete`],
//!   [`Window::wait`], [`Window::test`]).
//! * Run-time codes instead of types, for language bindings ([`raw`]):
//!   [`Window::accumulate_raw`], [`Window::get_accumulate_raw`] and
//!   [`Window::compare_swap_raw`] on a byte window, with the logical
//!   operations and a compare-and-swap of any integer width besides.
//! * The window's communicator ([`Window::comm`]) and slices of window
//!   memory: this rank's part ([`Window::local`], [`Window::local_mut`]) and
//!   a node peer's ([`Window::node_part_mut`]) ([`local`](mod@local)).
//!
//! An access outside the target's part is [`Error::RemoteAccess`] at the
//! origin, before anything is sent; the target's memory outside its window
//! is never touched (the target checks every access it serves, too).
//!
//! # How operations travel
//!
//! * Between ranks of one node, in allocated windows: the window's memory is
//!   a memfd that every rank of the node maps. Put and get are copies,
//!   atomics are CPU atomics on the shared mapping, locks are atomics on a
//!   header word: no message, no involvement of the target.
//! * Otherwise (other nodes, or a window over the caller's buffer): active
//!   messages that the target serves whenever it makes progress (in any call
//!   into `dos`), the generic path every transport has. Flush asks the
//!   target to confirm.
//!
//! ```
//! let got = dos::testing::run_threads(4, |world| {
//!     let win = world.win_allocate::<u64>(1).unwrap();
//!     // Everyone adds its rank + 1 into rank 0's counter.
//!     win.fetch_add(0, 0, world.rank() as u64 + 1).unwrap();
//!     win.fence().unwrap();
//!     let mut total = [0u64];
//!     win.get(&mut total, 0, 0).unwrap();
//!     total[0]
//! });
//! assert_eq!(got, vec![10; 4]);
//! ```

use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::size_of;

use bytemuck::Pod;

use crate::op::Op;
use crate::{Comm, Error, Request, Result, Scope};
use dos_transport::shm::mem::copy as shm_copy;
use dos_transport::{Iface, MemRegion, RemoteAtomic, RemoteKey, Rma, Sent};

pub mod accumulate;
pub mod local;
pub(crate) mod mapped;
pub mod pscw;
pub mod raw;
pub mod runs;
pub(crate) mod target;
pub(crate) mod wire;
pub(crate) mod words;

pub use accumulate::NoOp;

use mapped::{Mapping, WinHeader};
pub use target::{AccOp, AccType};
use target::{Exposed, LOCK_WORD};
use wire::Writer;

/// Bytes of data per active message of the generic path.
const AM_CHUNK: usize = 16 * 1024;
/// RDMA puts of at most this many bytes go out from a copy without waiting
/// (many in flight, complete at the next flush); larger ones write straight
/// from the caller's memory and wait for the target's acknowledgement, which
/// costs little next to the transfer (MPI's put may be either).
const PUT_BOUNCE_MAX: usize = 64 * 1024;
/// Puts of at most this many bytes through messages are gathered per target
/// ([`wire::PUTV`]) ...
const GATHER_MAX: usize = 8 * 1024;
/// ... into messages of about this many bytes.
const GATHER_BYTES: usize = 32 * 1024;

/// Bytes of data per active message of the generic path to a rank on another
/// node: fewer, larger messages (a system call each over tcp), within what the
/// transport carries (64 KiB over roce, 1 MiB over tcp).
const NET_AM_CHUNK: usize = 256 * 1024;

/// Bytes of data per message of the generic path to world rank `world`.
fn am_chunk(eng: &crate::p2p::Engine, world: usize) -> usize {
    let room = eng.max_am_to(world).saturating_sub(64).max(1024);
    if eng.net_of(world).is_some() {
        room.min(NET_AM_CHUNK)
    } else {
        room.min(AM_CHUNK)
    }
}

/// Bytes of gathered puts per message to world rank `world` (PUTV or FLUSH).
fn gather_room(eng: &crate::p2p::Engine, world: usize) -> usize {
    eng.max_am_to(world).saturating_sub(64).min(GATHER_BYTES)
}

/// Shared or exclusive passive-target lock ([`Window::lock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Many holders at once (`MPI_LOCK_SHARED`).
    Shared,
    /// One holder (`MPI_LOCK_EXCLUSIVE`).
    Exclusive,
}

/// A remote part reached with the network transport's own one-sided
/// operations (RDMA READ/WRITE and atomics: roce, verbs).
#[derive(Debug)]
struct Rdma {
    /// The target's index in the network transport.
    idx: usize,
    /// Key of its data (`None` for an empty part).
    data: Option<RemoteKey>,
    /// Key of its header (the lock word), if the transport has atomics.
    header: Option<RemoteKey>,
}

/// How this rank reaches one target's part of the window.
#[derive(Debug)]
struct Part {
    /// World rank (the engine's peer index).
    world: usize,
    /// Bytes in its part.
    len: usize,
    /// Its data, mapped here (allocated windows on this node).
    data: Option<*mut u8>,
    /// Its header, mapped here (every window on this node).
    header: Option<*const WinHeader>,
    /// Keeps the mapping alive.
    _map: Option<Mapping>,
    /// The network transport's one-sided operations, for parts on other nodes.
    rdma: Option<Rdma>,
}

/// A window: this rank's memory exposed to one-sided operations of the ranks
/// of a communicator, and the means to reach theirs. See the [module
/// documentation](self).
///
/// Not `Send` (like [`Comm`]). Dropping it withdraws this rank's memory:
/// operations that arrive later are refused. Call [`Window::free`] to do so
/// collectively, after every rank's operations completed.
pub struct Window<'a, T: Pod> {
    comm: Comm,
    id: u32,
    parts: Vec<Part>,
    /// This rank's memory: an allocated mapping, or the header of a created window.
    own: Mapping,
    /// This rank's data (in `own`, or the caller's buffer).
    data: *mut u8,
    len: usize,
    /// Operations sent as messages to each target since its last flush.
    unflushed: RefCell<Vec<u32>>,
    /// Small puts to each target gathered into one PUTV message (its body),
    /// sent before anything else goes to that target, at a flush, or when it
    /// fills.
    gathered: RefCell<Vec<Vec<u8>>>,
    /// Passive-target locks held, per target.
    locks: RefCell<Vec<Option<LockKind>>>,
    /// This rank's memory registered with the network transport (data, header).
    net_regions: Vec<MemRegion>,
    /// Open post/start epochs ([`pscw`]).
    epochs: pscw::Epochs,
    _t: PhantomData<(&'a mut [T], *mut ())>,
}

impl<T: Pod> std::fmt::Debug for Window<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("id", &self.id)
            .field("rank", &self.comm.rank())
            .field("len", &(self.len / size_of::<T>().max(1)))
            .finish_non_exhaustive()
    }
}

impl Comm {
    /// Creates a window over `count` elements of runtime-allocated, zeroed
    /// memory on this rank (`MPI_Win_allocate`). Collective.
    ///
    /// Ranks of one node map each other's parts: their operations on each
    /// other are plain memory accesses.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero-sized `T`; system errors when
    /// the memory cannot be made or mapped.
    pub fn win_allocate<T: Pod>(&self, count: usize) -> Result<Window<'static, T>> {
        let len = count
            .checked_mul(size_of::<T>())
            .ok_or(Error::InvalidArgument {
                op: "win_allocate",
                reason: "size overflows",
            })?;
        let own = Mapping::create(len)?;
        let data = own.data();
        Window::build(self, own, data, len, true)
    }

    /// Creates a window over the caller's `buf` (`MPI_Win_create`). Collective.
    ///
    /// The buffer stays borrowed for the window's life; read and write it
    /// through the window ([`Window::read_local`], [`Window::write_local`]),
    /// since other ranks may write it. Operations on it travel as messages
    /// that this rank serves when it calls into `dos`.
    pub fn win_create<'a, T: Pod>(&self, buf: &'a mut [T]) -> Result<Window<'a, T>> {
        let own = Mapping::create(0)?;
        let len = std::mem::size_of_val(buf);
        Window::build(self, own, buf.as_mut_ptr().cast(), len, false)
    }
}

impl<'a, T: Pod> Window<'a, T> {
    fn build(
        comm: &Comm,
        own: Mapping,
        data: *mut u8,
        len: usize,
        shared: bool,
    ) -> Result<Window<'a, T>> {
        if size_of::<T>() == 0 {
            return Err(Error::InvalidArgument {
                op: "window creation",
                reason: "zero-sized element type",
            });
        }
        let eng = comm.eng.enter();
        // A window id unused by every member (as communicator contexts are).
        let mut id = [eng.next_win()];
        comm.allreduce_in_place(&mut id, crate::op::Max)?;
        let id = id[0];
        eng.bump_win(id + 1);
        eng.rma().borrow_mut().expose(
            id,
            Exposed {
                data,
                len,
                header: own.header(),
            },
        );
        // Who is where: pid, descriptor, bytes, and whether the data is in it.
        let fd = own.fd().expect("the owner's mapping keeps its descriptor");
        let mine = [
            std::process::id() as u64,
            fd as u64,
            len as u64,
            shared as u64,
        ];
        let mut all = vec![0u64; 4 * comm.size()];
        comm.allgather(&mine, &mut all)?;
        let mut parts = Vec::with_capacity(comm.size());
        for (r, info) in all.chunks_exact(4).enumerate() {
            let world = comm.peer(r)?;
            let plen = info[2] as usize;
            let mut part = Part {
                world,
                len: plen,
                data: None,
                header: None,
                _map: None,
                rdma: None,
            };
            if r == comm.rank() {
                part.header = Some(own.header() as *const WinHeader);
                part.data = shared.then_some(data);
            } else if eng.local_index(world).is_some() {
                let peer_shared = info[3] != 0;
                let m = Mapping::open(
                    info[0] as u32,
                    info[1] as i32,
                    if peer_shared { plen } else { 0 },
                )?;
                part.header = Some(m.header() as *const WinHeader);
                part.data = peer_shared.then(|| m.data());
                part._map = Some(m);
            }
            parts.push(part);
        }
        // Parts on other nodes: the network transport's one-sided operations,
        // when it has them (keys exchanged like the rest).
        let mut net_regions = Vec::new();
        let caps = eng.net().map(|t| t.caps());
        let rdma = caps.is_some_and(|c| c.rma);
        const KEY: usize = 1 + dos_transport::MAX_RKEY;
        let mut mine = [0u8; 2 * KEY];
        if let (true, Some(net)) = (rdma, eng.net()) {
            let mut put_key = |slot: usize, ptr: *const u8, n: usize| -> Result<()> {
                let r = net.mem_register(ptr, n)?;
                let b = r.rkey.as_bytes();
                mine[slot * KEY] = b.len() as u8;
                mine[slot * KEY + 1..slot * KEY + 1 + b.len()].copy_from_slice(b);
                net_regions.push(r);
                Ok(())
            };
            if len > 0 {
                put_key(0, data, len)?;
            }
            if caps.is_some_and(|c| c.atomics) {
                put_key(
                    1,
                    own.header() as *const WinHeader as *const u8,
                    mapped::HEADER,
                )?;
            }
        }
        let mut keys = vec![0u8; 2 * KEY * comm.size()];
        comm.allgather(&mine, &mut keys)?;
        for (r, part) in parts.iter_mut().enumerate() {
            if part.data.is_some() || part.header.is_some() || !rdma {
                continue;
            }
            let Some((_, idx)) = eng.net_of(part.world) else {
                continue;
            };
            let key = |slot: usize| -> Result<Option<RemoteKey>> {
                let at = (r * 2 + slot) * KEY;
                let n = keys[at] as usize;
                if n == 0 {
                    return Ok(None);
                }
                Ok(Some(RemoteKey::from_bytes(
                    &keys[at + 1..at + 1 + n.min(KEY - 1)],
                )?))
            };
            part.rdma = Some(Rdma {
                idx,
                data: key(0)?,
                header: key(1)?,
            });
        }
        let n = comm.size();
        Ok(Window {
            comm: comm.clone(),
            id,
            parts,
            own,
            data,
            len,
            unflushed: RefCell::new(vec![0; n]),
            gathered: RefCell::new(vec![Vec::new(); n]),
            locks: RefCell::new(vec![None; n]),
            net_regions,
            epochs: pscw::Epochs::default(),
            _t: PhantomData,
        })
    }

    /// Where this rank's part starts (for views of it within the crate).
    pub(crate) fn local_ptr(&self) -> *mut u8 {
        self.data
    }

    /// The memfd of this rank's part and the offset of its data in it (an
    /// allocated window), for mapping the part a second time.
    pub(crate) fn local_fd(&self) -> Option<(std::os::fd::RawFd, usize)> {
        self.own.fd().map(|fd| (fd, mapped::HEADER))
    }

    /// Whether `target`'s part is mapped here (reached with plain copies).
    pub(crate) fn is_mapped(&self, target: usize) -> bool {
        self.parts.get(target).is_some_and(|p| p.data.is_some())
    }

    /// Elements in this rank's part.
    pub fn local_len(&self) -> usize {
        self.len / size_of::<T>()
    }

    /// Elements in `target`'s part.
    pub fn len_of(&self, target: usize) -> Result<usize> {
        Ok(self.part(target)?.len / size_of::<T>())
    }

    /// Copies this rank's part, from element `disp`, into `dst`.
    pub fn read_local(&self, dst: &mut [T], disp: usize) -> Result<()> {
        let (off, n) = self.span(self.comm.rank(), disp, dst.len())?;
        // SAFETY: inside this rank's part, which `self` keeps valid.
        unsafe { std::ptr::copy(self.data.add(off), dst.as_mut_ptr().cast::<u8>(), n) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        Ok(())
    }

    /// Copies `src` into this rank's part from element `disp`.
    pub fn write_local(&self, src: &[T], disp: usize) -> Result<()> {
        let (off, n) = self.span(self.comm.rank(), disp, src.len())?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: as in `read_local`.
        unsafe { std::ptr::copy(src.as_ptr().cast::<u8>(), self.data.add(off), n) };
        Ok(())
    }

    fn part(&self, target: usize) -> Result<&Part> {
        // A match, not `ok_or`: the error is built (and dropped) only when
        // needed, not on every put and flush.
        match self.parts.get(target) {
            Some(p) => Ok(p),
            None => Err(Error::InvalidRank {
                rank: target,
                size: self.parts.len(),
            }),
        }
    }

    /// Byte offset and length of `count` elements at `disp` of `target`'s
    /// part, or the typed error for an access outside it.
    fn span(&self, target: usize, disp: usize, count: usize) -> Result<(usize, usize)> {
        let p = self.part(target)?;
        let sz = size_of::<T>();
        let off = disp.checked_mul(sz);
        let n = count.checked_mul(sz);
        match (off, n) {
            (Some(off), Some(n)) if off.checked_add(n).is_some_and(|e| e <= p.len) => Ok((off, n)),
            _ => Err(Error::RemoteAccess {
                rank: target,
                offset: disp.saturating_mul(sz),
                len: count.saturating_mul(sz),
                window_len: p.len,
            }),
        }
    }

    /// The network transport, index and data key of a part reached with RDMA.
    fn rdma_data<'p>(
        eng: &'p crate::p2p::Engine,
        p: &'p Part,
    ) -> Option<(&'p dos_transport::Transport, usize, &'p RemoteKey)> {
        let r = p.rdma.as_ref()?;
        let (net, _) = eng.net_of(p.world)?;
        Some((net, r.idx, r.data.as_ref()?))
    }

    fn note_sent(&self, target: usize) {
        self.unflushed.borrow_mut()[target] += 1;
    }

    /// Writes `src` into `target`'s part from element `disp` (`MPI_Put`).
    /// Complete at the target after [`Window::flush`] (or unlock, or fence).
    pub fn put(&self, src: &[T], target: usize, disp: usize) -> Result<()> {
        let (off, n) = self.span(target, disp, src.len())?;
        let p = &self.parts[target];
        if let Some(d) = p.data {
            // SAFETY: inside the target's mapped part; `src` is separate memory.
            unsafe { shm_copy(src.as_ptr().cast::<u8>(), d.add(off), n) };
            return Ok(());
        }
        let eng = self.comm.eng.enter();
        let bytes: &[u8] = bytemuck::cast_slice(src);
        if let Some((net, idx, key)) = Self::rdma_data(&eng, p) {
            if n > PUT_BOUNCE_MAX {
                // SAFETY: `src` is valid for `n` bytes during the call, which
                // completes the RDMA WRITE before returning.
                unsafe { net.put(idx, src.as_ptr().cast(), n, key, off) }?;
                return Ok(());
            }
            if n == 0 {
                return Ok(());
            }
            // A small put goes out without waiting for it, from a copy that the
            // engine keeps until the transport is done with it; flush waits.
            let buf = bytes.to_vec();
            let token = eng.rma().borrow_mut().put_token();
            loop {
                // SAFETY: `buf`'s heap bytes stay put and unchanged until the
                // SendDone of `token` (the table owns them from `lend`), or
                // are dropped here after `Done` or an error.
                match unsafe { net.put_zc(idx, buf.as_ptr(), n, key, off, token) } {
                    Ok(Sent::Done) => return Ok(()),
                    Ok(Sent::Pending) => {
                        eng.rma().borrow_mut().lend(token, p.world, buf);
                        return Ok(());
                    }
                    // Its send queue is full: completions make room.
                    Err(dos_transport::Error::Busy { .. }) => {
                        if eng.progress() == 0 {
                            std::thread::yield_now();
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let room = gather_room(&eng, p.world);
        let entry = wire::PUTV_ENTRY + n;
        if n <= GATHER_MAX && entry <= room / 2 {
            // Gathered with the other small puts to this target: one message
            // (and one system call over tcp) for many. What was gathered goes
            // when the next one does not fit, before anything else to the
            // target, or with the flush.
            if self.gathered.borrow()[target].len() + entry > room {
                self.send_gathered(&eng, target)?;
            }
            wire::putv_push(&mut self.gathered.borrow_mut()[target], off as u64, bytes);
            self.note_sent(target);
            return Ok(());
        }
        self.send_gathered(&eng, target)?;
        let per = am_chunk(&eng, p.world);
        for (k, chunk) in bytes.chunks(per).enumerate() {
            let w = Writer::<16>::default()
                .u32(self.id)
                .u64((off + k * per) as u64);
            eng.send_copy(p.world, wire::PUT, w.bytes(), chunk)?;
        }
        self.note_sent(target);
        Ok(())
    }

    /// Sends the puts gathered for `target`, if any (in order, before whatever
    /// this rank sends it next).
    fn send_gathered(&self, eng: &crate::p2p::Engine, target: usize) -> Result<()> {
        let mut g = self.gathered.borrow_mut();
        if g[target].is_empty() {
            return Ok(());
        }
        let w = Writer::<4>::default().u32(self.id);
        // (send_copy copies or queues; it calls back into no window.)
        let r = eng.send_copy(self.parts[target].world, wire::PUTV, w.bytes(), &g[target]);
        g[target].clear();
        r
    }

    /// Reads `dst.len()` elements of `target`'s part from element `disp`
    /// (`MPI_Get`); complete when it returns.
    pub fn get(&self, dst: &mut [T], target: usize, disp: usize) -> Result<()> {
        let (off, n) = self.span(target, disp, dst.len())?;
        let p = &self.parts[target];
        let out: &mut [u8] = bytemuck::cast_slice_mut(dst);
        if let Some(d) = p.data {
            // SAFETY: inside the target's mapped part.
            unsafe { shm_copy(d.add(off), out.as_mut_ptr(), n) };
            return Ok(());
        }
        let eng = self.comm.eng.enter();
        if let Some((net, idx, key)) = Self::rdma_data(&eng, p) {
            if n > 0 {
                // SAFETY: `out` is valid for `n` bytes and exclusively ours
                // during the call, which completes the RDMA READ.
                unsafe { net.get(idx, out.as_mut_ptr(), n, key, off) }?;
            }
            return Ok(());
        }
        let per = am_chunk(&eng, p.world);
        for (k, chunk) in out.chunks_mut(per).enumerate() {
            let eng = self.comm.eng.enter();
            let tok = eng
                .rma()
                .borrow_mut()
                .expect(Some((chunk.as_mut_ptr(), chunk.len())));
            let w = Writer::<24>::default()
                .u32(self.id)
                .u64((off + k * per) as u64)
                .u32(chunk.len() as u32)
                .u32(tok);
            let status = self
                .send_gathered(&eng, target)
                .and_then(|()| eng.send_copy(p.world, wire::GET, w.bytes(), &[]))
                .and_then(|()| self.await_reply(tok))
                .map(|r| r.status);
            if status? != Some(wire::OK) {
                return Err(self.refused(target, off, n));
            }
        }
        Ok(())
    }

    /// Waits for the reply `tok`, serving others meanwhile; forgets it on error.
    fn await_reply(&self, tok: u32) -> Result<target::Reply> {
        let eng = self.comm.eng.enter();
        let r = eng.wait_until(|e| e.rma().borrow().arrived(tok));
        let reply = eng.rma().borrow_mut().take(tok);
        r?;
        Ok(reply.expect("arrived"))
    }

    fn refused(&self, target: usize, offset: usize, len: usize) -> Error {
        Error::RemoteAccess {
            rank: target,
            offset,
            len,
            window_len: self.parts[target].len,
        }
    }

    /// Combines `src` into `target`'s part from element `disp` with `op`,
    /// element by element, each element atomically with respect to other
    /// accumulates (`MPI_Accumulate`).
    pub fn accumulate<O>(&self, src: &[T], target: usize, disp: usize, op: O) -> Result<()>
    where
        T: AccType,
        O: AccOp + Op<T>,
    {
        let (off, n) = self.span(target, disp, src.len())?;
        if O::CODE == NoOp::CODE {
            return Ok(());
        }
        let p = &self.parts[target];
        if let (Some(d), Some(h)) = (p.data, p.header) {
            // SAFETY: inside the target's mapped part; its header is mapped.
            unsafe { target::accumulate(&*h, d.add(off), src, &op) };
            return Ok(());
        }
        let per = (AM_CHUNK / size_of::<T>()).max(1);
        for (k, chunk) in src.chunks(per).enumerate() {
            let w = Writer::<16>::default()
                .u32(self.id)
                .u64((off + k * per * size_of::<T>()) as u64)
                .u8(O::CODE)
                .u8(T::CODE);
            let eng = self.comm.eng.enter();
            self.send_gathered(&eng, target)?;
            eng.send_copy(p.world, wire::ACC, w.bytes(), bytemuck::cast_slice(chunk))?;
        }
        let _ = n;
        self.note_sent(target);
        Ok(())
    }

    /// Runs a 64-bit atomic at byte `off` of `target`'s part (or on its lock word).
    pub(crate) fn atomic(&self, target: usize, off: u64, kind: u8, a: u64, b: u64) -> Result<u64> {
        let p = self.part(target)?;
        let direct = if off == LOCK_WORD {
            // SAFETY: the header is mapped while `self` lives.
            p.header.map(|h| unsafe { &(*h).lock })
        } else {
            p.data.and_then(|d| {
                // SAFETY: `off + 8 <= len` was checked by the caller; aligned
                // (parts start on 64 bytes and elements are u64).
                let ptr = unsafe { d.add(off as usize) };
                // SAFETY: as above; window memory is shared and accessed atomically.
                (ptr as usize % 8 == 0)
                    .then(|| unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr.cast()) })
            })
        };
        if let Some(word) = direct {
            return target::atomic_op(word, kind, a, b).ok_or(Error::InvalidArgument {
                op: "atomic",
                reason: "unknown operation",
            });
        }
        // The network transport's own atomics (one packet and its answer).
        if let (Some(r), Some((net, _))) = (&p.rdma, self.comm.eng.enter().net_of(p.world)) {
            let (key, at) = if off == LOCK_WORD {
                (r.header.as_ref(), 0)
            } else {
                (r.data.as_ref(), off as usize)
            };
            let op = match kind {
                wire::FETCH_ADD => Some(RemoteAtomic::FetchAdd(a)),
                wire::COMPARE_SWAP => Some(RemoteAtomic::CompareSwap {
                    compare: b,
                    swap: a,
                }),
                _ => None,
            };
            if let (Some(key), Some(op), true) = (key, op, net.caps().atomics) {
                return Ok(net.atomic(r.idx, key, at, op)?);
            }
        }
        let eng = self.comm.eng.enter();
        let tok = eng.rma().borrow_mut().expect(None);
        let w = Writer::<40>::default()
            .u32(self.id)
            .u64(off)
            .u8(kind)
            .u32(tok)
            .u64(a)
            .u64(b);
        let reply = self
            .send_gathered(&eng, target)
            .and_then(|()| eng.send_copy(p.world, wire::ATOMIC, w.bytes(), &[]))
            .and_then(|()| self.await_reply(tok))?;
        if reply.status != Some(wire::OK) {
            return Err(self.refused(target, off as usize, 8));
        }
        Ok(reply.value)
    }

    /// Flushes: every operation this rank issued to `target` is complete
    /// there (`MPI_Win_flush`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the target refused some of them (its
    /// window was freed while they were on their way).
    pub fn flush(&self, target: usize) -> Result<()> {
        let p = self.part(target)?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if p.rdma.is_some() {
            let eng = self.comm.eng.enter();
            if eng.rma().borrow().in_flight(p.world) > 0 {
                eng.wait_until(|e| e.rma().borrow().in_flight(p.world) == 0)?;
            }
        }
        if self.unflushed.borrow()[target] == 0 {
            return Ok(());
        }
        let eng = self.comm.eng.enter();
        let tok = eng.rma().borrow_mut().expect(None);
        // The puts gathered for the target ride in the FLUSH: one message.
        let sent = {
            let mut g = self.gathered.borrow_mut();
            let w = if g[target].is_empty() {
                Writer::<8>::default().u32(tok)
            } else {
                Writer::<8>::default().u32(tok).u32(self.id)
            };
            let r = eng.send_copy(p.world, wire::FLUSH, w.bytes(), &g[target]);
            g[target].clear();
            r
        };
        let reply = sent.and_then(|()| self.await_reply(tok))?;
        self.unflushed.borrow_mut()[target] = 0;
        if reply.value > 0 {
            return Err(Error::InvalidArgument {
                op: "flush",
                reason: "the target refused operations (was its window freed?)",
            });
        }
        Ok(())
    }

    /// [`Window::flush`] to every target (`MPI_Win_flush_all`).
    pub fn flush_all(&self) -> Result<()> {
        (0..self.parts.len()).try_for_each(|t| self.flush(t))
    }

    /// Ends an access and exposure epoch: every operation of every rank is
    /// complete and visible everywhere (`MPI_Win_fence`). Collective.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] while a post/start epoch is open ([`pscw`]).
    pub fn fence(&self) -> Result<()> {
        self.epochs.check_none("fence")?;
        self.flush_all()?;
        self.comm.barrier()
    }

    /// Takes the passive-target lock of `target` (`MPI_Win_lock`); waits,
    /// serving other ranks, while it is held in a conflicting way.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if this rank holds the lock of `target`
    /// already, or inside an access epoch of [`Window::start`].
    pub fn lock(&self, target: usize, kind: LockKind) -> Result<()> {
        self.part(target)?;
        if self.epochs.in_access() {
            return Err(Error::InvalidArgument {
                op: "lock",
                reason: "inside an access epoch of start (call complete first)",
            });
        }
        if self.locks.borrow()[target].is_some() {
            return Err(Error::InvalidArgument {
                op: "lock",
                reason: "this rank already holds the lock of that target",
            });
        }
        let mut spins = 0u32;
        loop {
            let got = match kind {
                LockKind::Exclusive => {
                    self.atomic(target, LOCK_WORD, wire::COMPARE_SWAP, mapped::EXCLUSIVE, 0)? == 0
                }
                LockKind::Shared => {
                    let old = self.atomic(target, LOCK_WORD, wire::FETCH_ADD, 1, 0)?;
                    if old & mapped::EXCLUSIVE != 0 {
                        self.atomic(target, LOCK_WORD, wire::FETCH_ADD, u64::MAX, 0)?;
                        false
                    } else {
                        true
                    }
                }
            };
            if got {
                self.locks.borrow_mut()[target] = Some(kind);
                return Ok(());
            }
            // Let the holder (maybe on this core) get on, and serve requests.
            spins += 1;
            self.comm.eng.enter().progress();
            if spins % 8 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(50));
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Flushes and releases the lock of `target` (`MPI_Win_unlock`).
    pub fn unlock(&self, target: usize) -> Result<()> {
        let kind = self
            .locks
            .borrow_mut()
            .get_mut(target)
            .and_then(Option::take);
        let Some(kind) = kind else {
            return Err(Error::InvalidArgument {
                op: "unlock",
                reason: "this rank holds no lock of that target",
            });
        };
        self.flush(target)?;
        let delta = match kind {
            LockKind::Exclusive => mapped::EXCLUSIVE.wrapping_neg(),
            LockKind::Shared => u64::MAX,
        };
        self.atomic(target, LOCK_WORD, wire::FETCH_ADD, delta, 0)?;
        Ok(())
    }

    /// Takes a shared lock of every target (`MPI_Win_lock_all`): the usual
    /// start of a passive-target epoch over the whole window.
    pub fn lock_all(&self) -> Result<()> {
        (0..self.parts.len()).try_for_each(|t| self.lock(t, LockKind::Shared))
    }

    /// Flushes and releases every lock this rank holds (`MPI_Win_unlock_all`).
    pub fn unlock_all(&self) -> Result<()> {
        let held: Vec<usize> = (0..self.parts.len())
            .filter(|&t| self.locks.borrow()[t].is_some())
            .collect();
        held.into_iter().try_for_each(|t| self.unlock(t))
    }

    /// [`Window::put`] as a request (`MPI_Rput`): complete when `src` may be
    /// reused, which is at once (the data is copied or already in place);
    /// remote completion still needs a flush.
    pub fn rput<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        src: &'s [T],
        target: usize,
        disp: usize,
    ) -> Result<Request<'s>> {
        self.put(src, target, disp)?;
        Ok(s.completed())
    }

    /// [`Window::get`] as a request (`MPI_Rget`): `dst` is borrowed until it
    /// completes, with the data in place.
    pub fn rget<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        dst: &'s mut [T],
        target: usize,
        disp: usize,
    ) -> Result<Request<'s>> {
        let (off, n) = self.span(target, disp, dst.len())?;
        let p = &self.parts[target];
        if p.data.is_some() || Self::rdma_data(&self.comm.eng.enter(), p).is_some() {
            self.get(dst, target, disp)?;
            return Ok(s.completed());
        }
        let out: &mut [u8] = bytemuck::cast_slice_mut(dst);
        let eng = self.comm.eng.enter();
        let per = am_chunk(&eng, p.world);
        let chunks = n.div_ceil(per) as u32;
        let (id, gen) = eng.await_replies(chunks);
        let req = s.register(&self.comm.eng, id);
        for (k, chunk) in out.chunks_mut(per).enumerate() {
            let at = off + k * per;
            let tok = eng.rma().borrow_mut().expect_for(
                Some((chunk.as_mut_ptr(), chunk.len())),
                (id, gen, None),
                (target, at, chunk.len(), p.len),
            );
            let w = Writer::<24>::default()
                .u32(self.id)
                .u64(at as u64)
                .u32(chunk.len() as u32)
                .u32(tok);
            let sent = self
                .send_gathered(&eng, target)
                .and_then(|()| eng.send_copy(p.world, wire::GET, w.bytes(), &[]));
            if let Err(e) = sent {
                // This part and the ones not sent will not be answered.
                eng.rma().borrow_mut().take(tok);
                eng.reply_arrived(id, gen, Err(e));
                for _ in k + 1..chunks as usize {
                    eng.reply_arrived(id, gen, Err(Error::PeerFailed { rank: p.world }));
                }
                break;
            }
        }
        Ok(req)
    }

    /// [`Window::accumulate`] as a request (`MPI_Raccumulate`): complete at
    /// once, like [`Window::rput`].
    pub fn raccumulate<'s, O>(
        &self,
        s: &'s Scope<'s, '_>,
        src: &'s [T],
        target: usize,
        disp: usize,
        op: O,
    ) -> Result<Request<'s>>
    where
        T: AccType,
        O: AccOp + Op<T>,
    {
        self.accumulate(src, target, disp, op)?;
        Ok(s.completed())
    }

    /// Frees the window collectively (`MPI_Win_free`): waits until every
    /// rank's operations are complete, then withdraws this rank's memory.
    ///
    /// # Errors
    /// As [`Window::fence`] (an open post/start epoch is an error; the
    /// memory is withdrawn all the same).
    pub fn free(self) -> Result<()> {
        self.fence()
    }
}

impl Window<'_, u64> {
    /// [`Window::fetch_add`] as a request: the old value lands in `old`
    /// when it completes.
    pub fn rfetch_add<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        old: &'s mut u64,
        target: usize,
        disp: usize,
        value: u64,
    ) -> Result<Request<'s>> {
        let (off, _) = self.span(target, disp, 1)?;
        let p = &self.parts[target];
        if p.data.is_some() || p.rdma.as_ref().is_some_and(|r| r.data.is_some()) {
            *old = self.atomic(target, off as u64, wire::FETCH_ADD, value, 0)?;
            return Ok(s.completed());
        }
        let eng = self.comm.eng.enter();
        let (id, gen) = eng.await_replies(1);
        let req = s.register(&self.comm.eng, id);
        let tok = eng.rma().borrow_mut().expect_for(
            None,
            (id, gen, Some(old as *mut u64)),
            (target, off, 8, p.len),
        );
        let w = Writer::<40>::default()
            .u32(self.id)
            .u64(off as u64)
            .u8(wire::FETCH_ADD)
            .u32(tok)
            .u64(value)
            .u64(0);
        let sent = self
            .send_gathered(&eng, target)
            .and_then(|()| eng.send_copy(p.world, wire::ATOMIC, w.bytes(), &[]));
        if let Err(e) = sent {
            eng.rma().borrow_mut().take(tok);
            eng.reply_arrived(id, gen, Err(e));
        }
        Ok(req)
    }

    /// Adds `value` to element `disp` of `target`'s part; returns the old
    /// value (`MPI_Fetch_and_op` with `MPI_SUM`). Atomic; complete on return.
    pub fn fetch_add(&self, target: usize, disp: usize, value: u64) -> Result<u64> {
        let (off, _) = self.span(target, disp, 1)?;
        self.atomic(target, off as u64, wire::FETCH_ADD, value, 0)
    }

    /// Stores `new` into element `disp` of `target`'s part if it holds
    /// `expected`; returns the old value (`MPI_Compare_and_swap`).
    pub fn compare_swap(&self, target: usize, disp: usize, expected: u64, new: u64) -> Result<u64> {
        let (off, _) = self.span(target, disp, 1)?;
        self.atomic(target, off as u64, wire::COMPARE_SWAP, new, expected)
    }

    /// Stores `value` into element `disp` of `target`'s part; returns the
    /// old value (`MPI_Fetch_and_op` with `MPI_REPLACE`).
    pub fn swap(&self, target: usize, disp: usize, value: u64) -> Result<u64> {
        let (off, _) = self.span(target, disp, 1)?;
        self.atomic(target, off as u64, wire::SWAP, value, 0)
    }
}

impl<T: Pod> Drop for Window<'_, T> {
    fn drop(&mut self) {
        // From now on, operations that arrive are refused: the memory (the
        // caller's buffer, or our mapping) is no longer touched.
        self.comm.eng.enter().rma().borrow_mut().withdraw(self.id);
        if let Some(net) = self.comm.eng.enter().net() {
            for r in &self.net_regions {
                let _ = net.mem_deregister(r);
            }
        }
        let _ = &self.own;
    }
}
