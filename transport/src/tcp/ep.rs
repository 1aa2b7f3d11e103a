//! One connection to one peer: the socket, the queue of bytes the socket could not
//! take yet ([`Tx`], shared with the flusher thread), and the partial frame
//! received so far ([`Ep`], the owner's side).
//!
//! Sending: a frame goes out with one `sendmsg` of header, message header and
//! body (no copy) whenever nothing is queued before it. What the socket does not
//! take is copied into the queue and the socket is armed in the flusher's epoll
//! set; later frames are appended behind it (order) until the flusher has sent
//! it. A queue above the endpoint's bound makes `am_send` return `Busy`. The
//! queue sits behind a mutex, uncontended unless the flusher is at work: next to
//! the `sendmsg` it is noise.
//!
//! Zero-copy sends (`am_send_zc`) queue the body they could not send as a
//! pointer to the caller's memory instead of a copy ([`Seg::Lent`]); its token
//! is *released* once the last byte went to the socket or the connection
//! failed, always under the queue's lock, so no thread reads the body after
//! its release. The owner reports released tokens as `Event::SendDone`.
//!
//! Receiving: one `recv` per batch into the endpoint's shared scratch buffer,
//! complete frames delivered straight from it, and only a trailing partial frame
//! copied into this connection's own buffer. A large frame is read directly into
//! that buffer, at its final place, so it crosses memory once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::progress::{would_block, OutSet};
use super::wire::{FrameHeader, PutHeader, FRAME_HDR, PUT_HDR};
use crate::{AmId, AmPlacer, Error, Event, Result, Sent, PLACE_PEEK};

/// Size of the shared receive buffer: the most one `recv` reads.
pub(crate) const SCRATCH: usize = 256 * 1024;
/// A frame of up to this size (header included) whose start arrived with an
/// earlier `recv` is completed by copying that start to the front of the scratch
/// buffer; a larger one is completed in place in the connection's own buffer, at
/// the price of one more `recv` (a syscall costs about as much as copying this much).
const SMALL_FRAME: usize = 32 * 1024;

/// Why a connection ended while reading.
#[derive(Debug)]
pub(crate) enum Broken {
    /// The peer closed it (end of stream).
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// The peer sent something that is not a frame.
    Protocol(Error),
}

/// A stretch of the send queue.
#[derive(Debug)]
enum Seg {
    /// The next this many bytes of the queue's own buffer.
    Own(usize),
    /// A body still in the memory of a zero-copy sender.
    Lent {
        ptr: *const u8,
        len: usize,
        token: u64,
    },
}

/// Bytes accepted by `am_send` that the socket has not taken yet, and the socket.
#[derive(Default)]
struct TxQueue {
    /// The socket; `None` once closed (checked under the lock before every send,
    /// so the flusher never writes to a closed, possibly reused, descriptor).
    sock: Option<OwnedFd>,
    /// Copied bytes, from `head`.
    buf: Vec<u8>,
    head: usize,
    /// What is queued, in order: copied bytes and lent bodies.
    segs: VecDeque<Seg>,
    /// Bytes queued (copied and lent).
    queued: usize,
    /// Tokens of lent bodies no longer read, for the owner to report.
    released: Vec<u64>,
    /// Armed in the flusher's set (exactly when the queue is not empty).
    armed: bool,
    /// Added to the flusher's set once.
    registered: bool,
    /// A send failed or the connection was closed: sends fail.
    failed: bool,
}

// SAFETY: the raw pointers of `Seg::Lent` are bodies that `am_send_zc`'s caller
// keeps readable, from any thread, until their token is released; they are
// only dereferenced under the queue's mutex.
unsafe impl Send for TxQueue {}

impl TxQueue {
    #[inline]
    fn queued(&self) -> usize {
        self.queued
    }

    /// Appends copies of `parts`, without their first `skip` bytes.
    #[cold]
    fn push(&mut self, parts: &[&[u8]], mut skip: usize) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        let before = self.buf.len();
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            self.buf.extend_from_slice(&p[skip..]);
            skip = 0;
        }
        let n = self.buf.len() - before;
        if n == 0 {
            return;
        }
        self.queued += n;
        match self.segs.back_mut() {
            Some(Seg::Own(m)) => *m += n,
            _ => self.segs.push_back(Seg::Own(n)),
        }
    }

    /// Appends a lent body.
    #[cold]
    fn push_lent(&mut self, ptr: *const u8, len: usize, token: u64, flag: &AtomicBool) {
        if len == 0 {
            self.release(token, flag);
            return;
        }
        self.queued += len;
        self.segs.push_back(Seg::Lent { ptr, len, token });
    }

    fn release(&mut self, token: u64, flag: &AtomicBool) {
        self.released.push(token);
        flag.store(true, Ordering::Release);
    }

    /// Drops the first `n` queued bytes (they went to the socket).
    fn consume(&mut self, mut n: usize, flag: &AtomicBool) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.segs.front_mut() else {
                return;
            };
            match front {
                Seg::Own(m) => {
                    let k = n.min(*m);
                    *m -= k;
                    n -= k;
                    self.head += k;
                    if *m == 0 {
                        self.segs.pop_front();
                    }
                }
                Seg::Lent { ptr, len, token } => {
                    let k = n.min(*len);
                    // SAFETY: stays within (or one past) the lent body.
                    *ptr = unsafe { ptr.add(k) };
                    *len -= k;
                    n -= k;
                    if *len == 0 {
                        let t = *token;
                        self.segs.pop_front();
                        self.release(t, flag);
                    }
                }
            }
        }
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
    }

    /// Marks the connection failed and drops what is queued (releasing lent bodies).
    #[cold]
    fn fail(&mut self, out: &OutSet, fd: RawFd, flag: &AtomicBool) {
        self.failed = true;
        for seg in std::mem::take(&mut self.segs) {
            if let Seg::Lent { token, .. } = seg {
                self.release(token, flag);
            }
        }
        self.buf = Vec::new();
        self.head = 0;
        self.queued = 0;
        if self.armed {
            out.remove(fd);
            self.armed = false;
            self.registered = false;
        }
    }

    /// Writes queued bytes until the queue is empty or the socket is full.
    #[cold]
    fn write_out(&mut self, out: &OutSet, fd: RawFd, flag: &AtomicBool) {
        while self.sock.is_some() {
            let r = match self.segs.front() {
                None => return,
                Some(Seg::Own(m)) => send(fd, &self.buf[self.head..self.head + m]),
                Some(Seg::Lent { ptr, len, .. }) => {
                    // SAFETY: a lent body is readable until released (see `Seg`).
                    let body = unsafe { std::slice::from_raw_parts(*ptr, *len) };
                    send(fd, body)
                }
            };
            match r {
                Ok(n) => self.consume(n, flag),
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(out, fd, flag),
            }
        }
    }
}

/// The sending side of a connection, shared by the owner and the flusher thread.
pub(crate) struct Tx {
    fd: RawFd,
    q: Mutex<TxQueue>,
    /// News for the owner, shared by every connection of the endpoint, so
    /// that it looks at the queues only when there is some.
    flags: Arc<TxFlags>,
}

/// What the connections of an endpoint tell its owner (see `Tx::flags`).
#[derive(Debug, Default)]
pub(crate) struct TxFlags {
    /// A lent body was released.
    pub(crate) released: AtomicBool,
    /// A queue holds bytes the socket did not take yet.
    pub(crate) queued: AtomicBool,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("fd", &self.fd)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl Tx {
    #[inline]
    fn lock(&self) -> MutexGuard<'_, TxQueue> {
        // The queue stays consistent at every await-free step; a panic elsewhere
        // while holding the lock leaves nothing half-done that matters here.
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued()
    }

    /// True while sends may succeed.
    pub(crate) fn can_send(&self) -> bool {
        !self.lock().failed
    }

    /// Hands every released token to `f`.
    pub(crate) fn take_released(&self, mut f: impl FnMut(u64)) {
        let released = std::mem::take(&mut self.lock().released);
        released.into_iter().for_each(&mut f);
    }

    /// Sends one frame to peer `peer`, or queues what the socket does not take.
    #[inline]
    pub(crate) fn send(
        &self,
        out: &OutSet,
        peer: usize,
        bound: usize,
        id: AmId,
        hdr: &[u8],
        payload: &[u8],
    ) -> Result<()> {
        // SAFETY: nothing is lent: the body is copied before returning.
        unsafe { self.send_frame(out, peer, bound, id, false, hdr, payload, None) }.map(|_| ())
    }

    /// Sends one frame; what the socket does not take is queued, the body as a
    /// loan under `lend` if given (then `Pending` until that token is released).
    ///
    /// # Safety
    /// With `lend`, `payload` stays readable and unchanged until the token is
    /// released (see `am_send_zc`).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn send_frame(
        &self,
        out: &OutSet,
        peer: usize,
        bound: usize,
        id: AmId,
        put: bool,
        hdr: &[u8],
        payload: &[u8],
        lend: Option<u64>,
    ) -> Result<Sent> {
        let mut q = self.lock();
        if q.failed {
            return Err(Error::PeerUnreachable { peer });
        }
        let len = hdr.len() + payload.len();
        let h = FrameHeader {
            id,
            len: len as u32,
            put,
        }
        .encode();
        let parts: [&[u8]; 3] = [&h, hdr, payload];
        if q.queued() > 0 {
            if q.queued() >= bound {
                // Help the flusher (the caller is spinning on us anyway).
                q.write_out(out, self.fd, &self.flags.released);
                if q.failed {
                    return Err(Error::PeerUnreachable { peer });
                }
                if q.queued() >= bound {
                    return Err(Error::Busy { peer });
                }
            }
            if q.queued() > 0 {
                return Ok(queue_parts(&mut q, &parts, 0, lend, &self.flags.released));
            }
        }
        let total = FRAME_HDR + len;
        loop {
            match sendmsg(self.fd, &parts) {
                Ok(n) if n == total => return Ok(Sent::Done),
                Ok(n) => break self.enqueue(&mut q, out, peer, &parts, n, lend),
                Err(e) if would_block(&e) => {
                    break self.enqueue(&mut q, out, peer, &parts, 0, lend)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    q.fail(out, self.fd, &self.flags.released);
                    break Err(Error::PeerUnreachable { peer });
                }
            }
        }
    }

    #[cold]
    fn enqueue(
        &self,
        q: &mut TxQueue,
        out: &OutSet,
        peer: usize,
        parts: &[&[u8]; 3],
        sent: usize,
        lend: Option<u64>,
    ) -> Result<Sent> {
        if let Err(e) = out.arm(self.fd, peer, !q.registered) {
            // Without the flusher the queue would never drain, and part of a
            // frame may be out already: end the connection in both directions
            // so that both sides see it end.
            q.fail(out, self.fd, &self.flags.released);
            // SAFETY: the socket is open (`sock` is held under the lock);
            // shutdown takes no pointers.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
            return Err(e);
        }
        q.registered = true;
        q.armed = true;
        self.flags.queued.store(true, Ordering::Relaxed);
        Ok(queue_parts(q, parts, sent, lend, &self.flags.released))
    }

    /// For the owner while it polls: sends what it can of a queue the flusher
    /// is not working on. Returns true if bytes remain (or the flusher has it).
    pub(crate) fn help_flush(&self, out: &OutSet) -> bool {
        let Ok(mut q) = self.q.try_lock() else {
            return true;
        };
        if q.queued() > 0 {
            q.write_out(out, self.fd, &self.flags.released);
        }
        q.queued() > 0
    }

    /// For the flusher, after an output event: sends what it can, re-arms if
    /// bytes remain. Returns true if the owner should look (the queue is now
    /// empty or failed, or a lent body was released).
    #[cold]
    pub(crate) fn flush_ready(&self, out: &OutSet, peer: usize) -> bool {
        let mut q = self.lock();
        if !q.armed {
            return false;
        }
        let released = q.released.len();
        q.write_out(out, self.fd, &self.flags.released);
        if q.failed {
            return true;
        }
        if q.released.len() > released && q.queued() > 0 {
            if out.arm(self.fd, peer, false).is_err() {
                q.fail(out, self.fd, &self.flags.released);
                // SAFETY: as in `enqueue`.
                unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
            }
            return true;
        }
        if q.queued() == 0 {
            q.armed = false;
            return true;
        }
        if out.arm(self.fd, peer, false).is_err() {
            q.fail(out, self.fd, &self.flags.released);
            // SAFETY: as in `enqueue`.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
            return true;
        }
        false
    }

    /// Closes the socket; later sends fail.
    #[cold]
    fn close(&self, out: &OutSet) {
        let mut q = self.lock();
        q.fail(out, self.fd, &self.flags.released);
        if q.registered {
            out.remove(self.fd);
            q.registered = false;
        }
        drop(q.sock.take());
    }

    /// Stops sending: the peer reads the end of the stream after our last byte.
    #[cold]
    fn shutdown_write(&self) {
        let q = self.lock();
        if q.sock.is_some() {
            // SAFETY: the socket is open (held under the lock); no pointers.
            unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
        }
    }
}

/// Queues `parts` after their first `sent` bytes: copies, except the body
/// when it is lent under `lend`.
fn queue_parts(
    q: &mut TxQueue,
    parts: &[&[u8]; 3],
    sent: usize,
    lend: Option<u64>,
    flag: &AtomicBool,
) -> Sent {
    let Some(token) = lend else {
        q.push(parts, sent);
        return Sent::Done;
    };
    let head = parts[0].len() + parts[1].len();
    let body = parts[2];
    if sent < head {
        q.push(&parts[..2], sent);
    }
    let skip = sent.saturating_sub(head);
    if skip == body.len() {
        return Sent::Done;
    }
    // SAFETY: `skip < body.len()`.
    q.push_lent(
        unsafe { body.as_ptr().add(skip) },
        body.len() - skip,
        token,
        flag,
    );
    Sent::Pending
}

/// The frame being received: `buf[..have]` holds its first bytes.
#[derive(Default)]
struct RxPart {
    buf: Vec<u8>,
    have: usize,
    /// The rest of a put being written in place (its header already read).
    place: Option<Placing>,
    /// A large active message whose body an [`AmPlacer`] claimed.
    am: Option<AmPlacing>,
    /// The placer declined the large frame in `buf` (do not ask again).
    declined: bool,
    /// The last frame was large: read only a header's worth at a time, so
    /// that the next large body goes straight to its place.
    large: bool,
}

/// A claimed active message: `buf[FRAME_HDR..FRAME_HDR + keep]` holds its
/// kept first bytes; `got` of the `rest` bytes after them have been placed.
#[derive(Debug, Clone, Copy)]
struct AmPlacing {
    id: AmId,
    keep: usize,
    rest: usize,
    got: usize,
}

/// A placer that claims nothing.
pub(crate) struct NoPlacer;

impl AmPlacer for NoPlacer {
    fn claim(&self, _: usize, _: AmId, _: &[u8], _: usize) -> Option<usize> {
        None
    }
    fn dst(&self, _: usize, _: usize, _: usize) -> Option<*mut u8> {
        None
    }
}

/// A put whose remaining `left` bytes go to `at` (offset already advanced).
#[derive(Debug, Clone, Copy)]
struct Placing {
    at: PutHeader,
    left: usize,
}

/// Decides where the bytes of a put go: a pointer valid for writes of `len`
/// bytes at `at`, or `None` to drop them (no such registration, a stale key,
/// or outside the region). Consulted before every write, so a registration
/// that ends in between stops the writes.
pub(crate) type Place<'a> = &'a dyn Fn(PutHeader, usize) -> Option<*mut u8>;

/// One peer's connection, as the owner sees it.
pub(crate) struct Ep {
    fd: RawFd,
    /// False once closed (after its `Disconnected` was delivered).
    open: Cell<bool>,
    tx: Arc<Tx>,
    rx: RefCell<RxPart>,
}

impl std::fmt::Debug for Ep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ep")
            .field("fd", &self.fd)
            .field("open", &self.open.get())
            .field("tx", &self.tx)
            .finish_non_exhaustive()
    }
}

impl Ep {
    /// Wraps a connected, authenticated, non-blocking socket.
    /// `flags` are the endpoint's, shared by its connections.
    pub(crate) fn new(sock: OwnedFd, flags: Arc<TxFlags>) -> Ep {
        let fd = sock.as_raw_fd();
        Ep {
            fd,
            open: Cell::new(true),
            tx: Arc::new(Tx {
                fd,
                q: Mutex::new(TxQueue {
                    sock: Some(sock),
                    ..TxQueue::default()
                }),
                flags,
            }),
            rx: RefCell::new(RxPart::default()),
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// The sending side.
    #[inline]
    pub(crate) fn tx(&self) -> &Arc<Tx> {
        &self.tx
    }

    /// True until the connection is closed.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.open.get()
    }

    /// Reads what the socket has (one `recv`; two when a large frame completes) and
    /// delivers every complete frame from `peer` to `f`; puts are written where
    /// `place` says, straight from the socket once their header is in. Returns
    /// the number delivered, or why the connection ended (after delivering what
    /// came before).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read<F: FnMut(Event<'_>)>(
        &self,
        peer: usize,
        scratch: &mut [u8],
        max_am: usize,
        place: Place<'_>,
        placer: &dyn AmPlacer,
        f: &mut F,
        delivered: &mut usize,
    ) -> std::result::Result<(), Broken> {
        let mut part = self.rx.borrow_mut();
        let part = &mut *part;
        // The rest of a claimed active message: straight into its place.
        if part.am.is_some() && !self.place_am(part, peer, scratch, placer, f, delivered)? {
            return Ok(());
        }
        // The rest of a put: straight into its place (or dropped).
        if let Some(pl) = part.place.as_mut() {
            let n = match place(pl.at, pl.left) {
                // SAFETY: `place` vouches for `left` writable bytes at `dst`.
                Some(dst) => recv(self.fd, unsafe {
                    std::slice::from_raw_parts_mut(dst, pl.left)
                })?,
                None => {
                    let k = pl.left.min(scratch.len());
                    recv(self.fd, &mut scratch[..k])?
                }
            };
            pl.left -= n;
            pl.at.offset += n as u64;
            if pl.left > 0 {
                return Ok(());
            }
            part.place = None;
        }
        // A large frame in progress: read its rest in place.
        if part.have >= FRAME_HDR {
            let h =
                FrameHeader::decode(&part.buf[..FRAME_HDR], max_am).map_err(Broken::Protocol)?;
            let total = FRAME_HDR + h.len as usize;
            if !h.put && total > SMALL_FRAME && !part.declined {
                // Offer it to the placer once its first bytes are here.
                let peek = (FRAME_HDR + PLACE_PEEK).min(total);
                if part.have < peek {
                    let n = recv(self.fd, &mut part.buf[part.have..peek])?;
                    part.have += n;
                    if part.have < peek {
                        return Ok(());
                    }
                }
                let len = h.len as usize;
                match placer.claim(peer, h.id, &part.buf[FRAME_HDR..peek], len) {
                    Some(keep) if keep <= peek - FRAME_HDR => {
                        // Bytes past the kept ones that are already here go first.
                        let extra = part.have - FRAME_HDR - keep;
                        if extra > 0 {
                            if let Some(dst) = placer.dst(peer, 0, extra) {
                                // SAFETY: the placer vouches for `extra` bytes at `dst`.
                                unsafe {
                                    std::ptr::copy_nonoverlapping(
                                        part.buf[FRAME_HDR + keep..].as_ptr(),
                                        dst,
                                        extra,
                                    )
                                };
                            }
                        }
                        part.am = Some(AmPlacing {
                            id: h.id,
                            keep,
                            rest: len - keep,
                            got: extra,
                        });
                        part.have = FRAME_HDR + keep;
                        if !self.place_am(part, peer, scratch, placer, f, delivered)? {
                            return Ok(());
                        }
                    }
                    _ => part.declined = true,
                }
            }
            if part.have >= FRAME_HDR && !h.put && total > SMALL_FRAME && part.declined {
                let want = total - part.have;
                let n = recv(self.fd, &mut part.buf[part.have..total])?;
                part.have += n;
                if n < want {
                    return Ok(());
                }
                part.have = 0;
                part.declined = false;
                *delivered += 1;
                f(Event::Am {
                    src: peer,
                    id: h.id,
                    data: &part.buf[FRAME_HDR..total],
                });
                // The socket may hold more: go on with the frames that follow.
            }
        }
        // Small frames: carry the partial one to the front of the scratch buffer.
        let k = part.have;
        scratch[..k].copy_from_slice(&part.buf[..k]);
        // After a large frame, read just enough for the next header and the
        // placer's peek: if it is large too, its body goes straight to its place.
        let upto = if part.large {
            (k + FRAME_HDR + PLACE_PEEK).max(k + 1).min(scratch.len())
        } else {
            scratch.len()
        };
        let n = recv(self.fd, &mut scratch[k..upto])?;
        part.have = 0;
        let end = k + n;
        let mut pos = 0;
        while end - pos >= FRAME_HDR {
            let h = FrameHeader::decode(&scratch[pos..end], max_am).map_err(Broken::Protocol)?;
            let total = FRAME_HDR + h.len as usize;
            if h.put {
                if end - pos < FRAME_HDR + PUT_HDR {
                    break;
                }
                let at =
                    PutHeader::decode(&scratch[pos + FRAME_HDR..end]).map_err(Broken::Protocol)?;
                let len = h.len as usize - PUT_HDR;
                let dst = place(at, len);
                if dst.is_none() {
                    rejected_put(peer, at, len);
                }
                let body = pos + FRAME_HDR + PUT_HDR;
                let here = len.min(end - body);
                if let Some(dst) = dst {
                    // SAFETY: `place` vouches for `len >= here` bytes at `dst`.
                    unsafe { std::ptr::copy_nonoverlapping(scratch[body..].as_ptr(), dst, here) };
                }
                if here < len {
                    // The rest comes straight from the socket.
                    part.place = Some(Placing {
                        at: PutHeader {
                            offset: at.offset + here as u64,
                            ..at
                        },
                        left: len - here,
                    });
                    return Ok(());
                }
                pos += total;
                continue;
            }
            part.large = total > SMALL_FRAME;
            if end - pos < total {
                break;
            }
            *delivered += 1;
            f(Event::Am {
                src: peer,
                id: h.id,
                data: &scratch[pos + FRAME_HDR..pos + total],
            });
            pos += total;
        }
        let rest = &scratch[pos..end];
        if !rest.is_empty() {
            // A header here was validated by the loop, so `want` is at most a
            // max_am frame. (A put's partial header is carried like a small frame.)
            let want = match FrameHeader::decode(rest, max_am) {
                Ok(h) if !h.put && FRAME_HDR + h.len as usize > SMALL_FRAME => {
                    FRAME_HDR + h.len as usize
                }
                _ => rest.len(),
            };
            if part.buf.len() < want {
                part.buf.resize(want, 0);
            }
            part.buf[..rest.len()].copy_from_slice(rest);
            part.have = rest.len();
        }
        Ok(())
    }

    /// Reads the rest of a claimed active message straight into its place
    /// (or drops it if the claim was withdrawn); when it is complete,
    /// delivers [`Event::Placed`] and returns true.
    fn place_am<F: FnMut(Event<'_>)>(
        &self,
        part: &mut RxPart,
        peer: usize,
        scratch: &mut [u8],
        placer: &dyn AmPlacer,
        f: &mut F,
        delivered: &mut usize,
    ) -> std::result::Result<bool, Broken> {
        let Some(am) = part.am.as_mut() else {
            return Ok(true);
        };
        while am.got < am.rest {
            let left = am.rest - am.got;
            let n = match placer.dst(peer, am.got, left) {
                // SAFETY: the placer vouches for `left` writable bytes at `dst`.
                Some(dst) => recv(self.fd, unsafe {
                    std::slice::from_raw_parts_mut(dst, left)
                })?,
                None => {
                    let k = left.min(scratch.len());
                    recv(self.fd, &mut scratch[..k])?
                }
            };
            if n == 0 {
                return Ok(false);
            }
            am.got += n;
            if am.got < am.rest {
                return Ok(false);
            }
        }
        let (id, keep) = (am.id, am.keep);
        part.am = None;
        part.have = 0;
        part.large = true;
        *delivered += 1;
        f(Event::Placed {
            src: peer,
            id,
            head: &part.buf[FRAME_HDR..FRAME_HDR + keep],
        });
        Ok(true)
    }

    /// Closes the connection (after a failure); later sends fail.
    #[cold]
    pub(crate) fn close(&self, out: &OutSet, owner: &super::progress::Poller) {
        if !self.open.replace(false) {
            return;
        }
        owner.remove(self.fd);
        self.tx.close(out);
        *self.rx.borrow_mut() = RxPart::default();
    }

    /// For drop: stop sending (the peer reads the end of stream after our last
    /// byte) and discard pending input so that closing does not reset the
    /// connection and destroy our unsent bytes.
    #[cold]
    pub(crate) fn shutdown(&self, scratch: &mut [u8]) {
        if !self.open.get() {
            return;
        }
        self.tx.shutdown_write();
        self.discard_input(scratch);
    }

    /// Reads and drops whatever input is pending.
    #[cold]
    pub(crate) fn discard_input(&self, scratch: &mut [u8]) {
        if !self.open.get() {
            return;
        }
        for _ in 0..64 {
            match recv(self.fd, scratch) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}

/// Reports a put that its target drops (a bug of the sender or a stale key).
#[cold]
fn rejected_put(peer: usize, at: PutHeader, len: usize) {
    tracing::warn!(
        "tcp: dropped a put of {len} bytes from peer {peer} \
         (region {} offset {}): no such registration or out of bounds",
        at.region,
        at.offset
    );
}

/// One non-blocking `sendmsg` of `parts`; never raises SIGPIPE.
#[inline]
fn sendmsg(fd: RawFd, parts: &[&[u8]; 3]) -> io::Result<usize> {
    let iov = parts.map(|p| libc::iovec {
        iov_base: p.as_ptr() as *mut libc::c_void,
        iov_len: p.len(),
    });
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at three iovecs describing live, readable slices; the
    // kernel only reads them.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// One non-blocking `send`; never raises SIGPIPE.
fn send(fd: RawFd, b: &[u8]) -> io::Result<usize> {
    // SAFETY: `b` is a live slice the kernel only reads.
    let r = unsafe {
        libc::send(
            fd,
            b.as_ptr().cast(),
            b.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// One non-blocking `recv` into `b`: the byte count (0 if nothing is pending),
/// or why the stream ended.
#[inline]
fn recv(fd: RawFd, b: &mut [u8]) -> std::result::Result<usize, Broken> {
    loop {
        // SAFETY: `b` is a live, writable slice of `b.len()` bytes.
        let r = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
        if r > 0 {
            return Ok(r as usize);
        }
        if r == 0 {
            return if b.is_empty() {
                Ok(0)
            } else {
                Err(Broken::Eof)
            };
        }
        let e = io::Error::last_os_error();
        if would_block(&e) {
            return Ok(0);
        }
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Broken::Io(e));
        }
    }
}

impl From<Broken> for Error {
    fn from(b: Broken) -> Error {
        match b {
            Broken::Eof => Error::Sys {
                op: "tcp recv",
                source: io::ErrorKind::UnexpectedEof.into(),
            },
            Broken::Io(source) => Error::Sys {
                op: "tcp recv",
                source,
            },
            Broken::Protocol(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// Bytes waiting in socket `fd`.
    fn pending(fd: RawFd) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int to the live `n`.
        let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
        assert_eq!(r, 0);
        n as usize
    }

    const MAX: usize = 64 * 1024;

    fn frame(k: usize, len: usize) -> Vec<u8> {
        let mut v = FrameHeader::am(k as u8, len as u32).encode().to_vec();
        v.extend((0..len).map(|i| (i * 7 + k) as u8));
        v
    }

    /// Claims large frames with even ids, keeping their first 5 bytes; the
    /// rest goes to `rest`.
    #[derive(Default)]
    struct EvenPlacer {
        rest: std::cell::RefCell<Vec<u8>>,
    }

    impl AmPlacer for EvenPlacer {
        fn claim(&self, _: usize, id: AmId, head: &[u8], len: usize) -> Option<usize> {
            let keep = 5.min(head.len());
            (id % 2 == 0).then(|| {
                *self.rest.borrow_mut() = vec![0; len - keep];
                keep
            })
        }
        fn dst(&self, _: usize, offset: usize, n: usize) -> Option<*mut u8> {
            let mut r = self.rest.borrow_mut();
            assert!(offset + n <= r.len(), "placed past the end");
            // SAFETY: inside the vector, which outlives the write.
            Some(unsafe { r.as_mut_ptr().add(offset) })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the write boundaries, frames arrive whole and in order, and a
        /// bad frame or the end of the stream ends the connection after them.
        #[test]
        fn frames_survive_any_fragmentation(
            sizes in proptest::collection::vec(prop_oneof![0usize..100, 0usize..=MAX, Just(MAX)], 1..30),
            cuts in proptest::collection::vec(1usize..40_000, 1..100),
            garbage in any::<bool>(),
            placing in any::<bool>(),
        ) {
            let mut stream = Vec::new();
            for (k, &len) in sizes.iter().enumerate() {
                stream.extend(frame(k, len));
            }
            if garbage {
                stream.extend([0xD7, 1, 0, 0, 0xff, 0xff, 0xff, 0x7f]);
            }
            let (mut a, b) = UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            let ep = Ep::new(OwnedFd::from(b), Arc::default());
            let mut scratch = vec![0u8; SCRATCH];
            let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
            let mut n = 0;
            let mut end = None;
            let mut pos = 0;
            let even = EvenPlacer::default();
            let placer: &dyn AmPlacer = if placing { &even } else { &NoPlacer };
            let mut drain = |got: &mut Vec<(u8, Vec<u8>)>, n: &mut usize, closed: bool| {
                while closed || pending(ep.fd()) > 0 {
                    let r = ep.read(0, &mut scratch, MAX, &|_, _| None, placer, &mut |ev| {
                        match ev {
                            Event::Am { id, data, .. } => got.push((id, data.to_vec())),
                            Event::Placed { id, head, .. } => {
                                let mut v = head.to_vec();
                                v.extend_from_slice(&even.rest.borrow());
                                got.push((id, v));
                            }
                            _ => {}
                        }
                    }, n);
                    if let Err(e) = r {
                        return Some(e);
                    }
                }
                None
            };
            for (i, c) in cuts.iter().cycle().enumerate() {
                if pos >= stream.len() || end.is_some() || i > 100_000 {
                    break;
                }
                let c = (*c).min(stream.len() - pos);
                a.write_all(&stream[pos..pos + c]).unwrap();
                pos += c;
                end = drain(&mut got, &mut n, false);
            }
            drop(a);
            if end.is_none() {
                end = drain(&mut got, &mut n, true);
            }
            prop_assert_eq!(n, got.len());
            prop_assert_eq!(got.len(), sizes.len());
            for (k, (id, data)) in got.iter().enumerate() {
                prop_assert_eq!(*id, k as u8);
                prop_assert_eq!(&frame(k, sizes[k])[FRAME_HDR..], &data[..]);
            }
            match end {
                Some(Broken::Protocol(_)) => prop_assert!(garbage),
                Some(Broken::Eof) => prop_assert!(!garbage),
                e => prop_assert!(false, "{:?}", e),
            }
        }
    }

    #[test]
    fn queue_keeps_order_and_skips_sent_bytes() {
        let flag = AtomicBool::new(false);
        let mut q = TxQueue::default();
        q.push(&[b"abc", b"de", b"f"], 4);
        assert_eq!(&q.buf[q.head..], b"ef");
        q.push(&[b"gh", b"", b"i"], 0);
        assert_eq!(&q.buf[q.head..], b"efghi");
        q.consume(3, &flag);
        assert_eq!(q.queued(), 2);
        q.push(&[b"j"], 0);
        assert_eq!(&q.buf[q.head..], b"hij");
        q.consume(3, &flag);
        assert_eq!((q.queued(), q.buf.len(), q.head), (0, 0, 0));
        assert!(!flag.load(Ordering::Relaxed));
    }

    #[test]
    fn lent_bodies_are_released_once_sent_or_failed() {
        let flag = AtomicBool::new(false);
        let body = *b"0123456789";
        let mut q = TxQueue::default();
        let parts: [&[u8]; 3] = [b"HH", b"h", &body];
        // 2 bytes went out: the rest of the header is copied, the body lent.
        assert_eq!(
            queue_parts(&mut q, &parts, 2, Some(7), &flag),
            Sent::Pending
        );
        assert_eq!(q.queued(), 11);
        q.consume(5, &flag); // "h" and "0123"
        assert!(q.released.is_empty());
        q.push(&[b"tail"], 0);
        q.consume(6, &flag); // "456789": the body is done
        assert_eq!(q.released, vec![7]);
        assert!(flag.swap(false, Ordering::Relaxed));
        assert_eq!(q.queued(), 4);
        // A body already sent in full is not lent at all.
        assert_eq!(queue_parts(&mut q, &parts, 13, Some(8), &flag), Sent::Done);
        // A failed connection releases what it held.
        assert_eq!(
            queue_parts(&mut q, &parts, 4, Some(9), &flag),
            Sent::Pending
        );
        let out = OutSet::new_for_test();
        q.fail(&out, -1, &flag);
        assert_eq!(q.released, vec![7, 9]);
        assert_eq!(q.queued(), 0);
    }
}
