//! Point-to-point communication: blocking and nonblocking sends in the four
//! modes, receives, sendrecv, probes.
//!
//! A buffer of a predefined or dense derived datatype is one run of bytes
//! that dos moves as it is (zero copy). A noncontiguous derived datatype is
//! packed into a temporary buffer before sending and unpacked from one after
//! receiving (blocking sends and receives, `Sendrecv(_replace)`; `Isend`/`Irsend` of
//! such a type send a packed copy in the background and complete at once).
//! Matching counts bytes of the type signature: a receive of a different
//! type of the same size takes the message (`Irecv` of a noncontiguous type
//! receives into a temporary unpacked at completion). Standard and ready sends are dos's `send`
//! (eager below the threshold, rendezvous above); synchronous sends are dos's
//! `ssend`; buffered sends copy the data and send the copy in the background,
//! so they complete at once whatever the receiver does, within the attached
//! buffer ([`crate::bsend`]). `MPI_DATATYPE_NULL` is accepted with
//! `MPI_PROC_NULL` as the peer (nothing moves). The MPI-4 functions
//! (`MPI_Isendrecv(_replace)`, the `_c` forms) are in [`crate::p2p4`].
//!
//! `MPI_Send` (standard mode), `MPI_Recv`, `MPI_Isend` and `MPI_Irecv` of a
//! predefined type with ordinary arguments go straight to dos's
//! `send`/`recv`/`isend_detached`/`irecv_detached` after a few compares, on
//! the one path of each function, inside the ordinary error wrapper
//! ([`mpi_fn!`], made cheap in session 12: an error is one pointer and the
//! handler is reached only on the error path); the rarer cases (derived
//! types, `MPI_PROC_NULL`, the other modes) follow on the same path.
//!
//! Every blocking receive ends in [`complete_recv`] (unpack a noncontiguous
//! layout, store the status of the message or of the failure); a
//! nonblocking one builds its status with [`recv_outcome`] when it completes.

use std::ffi::{c_int, c_void};

use dos::detached::DetachedRequest;
use dos::{Comm, Source, TagSel};

use crate::abi::{self, Handle, Status};
use crate::datatype::{self, Layout};
use crate::error::{err, R};
use crate::ptr::{dst, out, src};
use crate::request::After;
use crate::state::{self, ReqEntry, ReqKind};

/// A destination rank: `None` for `MPI_PROC_NULL`.
pub(crate) fn dest_rank(c: &Comm, dest: c_int) -> R<Option<usize>> {
    match dest {
        abi::PROC_NULL => Ok(None),
        d if d >= 0 && (d as usize) < c.size() => Ok(Some(d as usize)),
        d => Err(err(
            abi::ERR_RANK,
            format!("invalid rank {d} in a communicator of size {}", c.size()),
        )),
    }
}

/// A source selector: `None` for `MPI_PROC_NULL`.
pub(crate) fn source_sel(c: &Comm, source: c_int) -> R<Option<Source>> {
    match source {
        abi::PROC_NULL => Ok(None),
        abi::ANY_SOURCE => Ok(Some(Source::Any)),
        s if s >= 0 && (s as usize) < c.size() => Ok(Some(Source::Rank(s as usize))),
        s => Err(err(
            abi::ERR_RANK,
            format!(
                "invalid source rank {s} in a communicator of size {}",
                c.size()
            ),
        )),
    }
}

/// A send tag: `0..=MPI_TAG_UB`.
pub(crate) fn send_tag(tag: c_int) -> R<i32> {
    if tag < 0 {
        return Err(err(abi::ERR_TAG, format!("invalid tag {tag}")));
    }
    Ok(tag)
}

/// A receive tag selector: `MPI_ANY_TAG` or `0..=MPI_TAG_UB`.
pub(crate) fn recv_tag(tag: c_int) -> R<TagSel> {
    match tag {
        abi::ANY_TAG => Ok(TagSel::Any),
        t if t >= 0 => Ok(TagSel::Tag(t)),
        t => Err(err(abi::ERR_TAG, format!("invalid tag {t}"))),
    }
}

/// `MPI_BYTE`.
pub(crate) const BYTE: Handle = 0x247;

/// The count and datatype a transfer with `peer` moves: `MPI_DATATYPE_NULL`
/// with `MPI_PROC_NULL` as the peer is accepted (nothing moves; MPICH's
/// `recvnull` relies on it) as zero bytes; anything else as given.
#[inline]
pub(crate) fn null_peer_type(peer: c_int, n: usize, dt: Handle) -> (usize, Handle) {
    if peer == abi::PROC_NULL && dt == abi::DATATYPE_NULL {
        (0, BYTE)
    } else {
        (n, dt)
    }
}

/// `n` elements of datatype `dt` as one run of bytes (a noncontiguous
/// derived type is `MPI_ERR_UNSUPPORTED_OPERATION` here: callers pack it).
#[inline]
pub(crate) fn bytes_n(n: usize, dt: Handle) -> R<usize> {
    if let Some(len) = dense_len(n, dt) {
        return Ok(len);
    }
    match datatype::layout_n(n, dt)? {
        Layout::Dense(len) => Ok(len),
        Layout::Packed { .. } => Err(err(
            abi::ERR_UNSUPPORTED_OPERATION,
            "a noncontiguous derived datatype is not supported by this function",
        )),
    }
}

/// Stores `s` unless `p` is `MPI_STATUS_IGNORE`. A function that completes
/// one operation successfully leaves `MPI_ERROR` as the program set it
/// (MPI-4.1 section 3.2.5: only the functions returning several statuses
/// update it); after a failure the field is undefined by the standard, and
/// dos stores the error class there too (besides returning it).
///
/// # Safety
/// Unless null, `p` must be valid for a write of a status.
pub(crate) unsafe fn set_status(p: *mut Status, s: Status) {
    if !p.is_null() {
        // SAFETY: non-null, and valid by the caller's contract; each field
        // written in place (the error field is not read).
        unsafe {
            std::ptr::addr_of_mut!((*p).MPI_SOURCE).write(s.MPI_SOURCE);
            std::ptr::addr_of_mut!((*p).MPI_TAG).write(s.MPI_TAG);
            std::ptr::addr_of_mut!((*p).private).write(s.private);
            if s.MPI_ERROR != abi::SUCCESS {
                std::ptr::addr_of_mut!((*p).MPI_ERROR).write(s.MPI_ERROR);
            }
        }
    }
}

/// The status of a completed receive.
pub(crate) fn recv_status(st: dos::Status) -> Status {
    Status::new(st.source as c_int, st.tag, abi::SUCCESS, st.len as u64)
}

/// The status of a receive that failed with `e` (for a truncated message,
/// the selectors asked for: dos does not report the sender of a message it
/// truncated).
pub(crate) fn failed_status(source: c_int, tag: c_int, e: &crate::error::Error) -> Status {
    Status::new(source, tag, e.class, 0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Standard,
    Sync,
    Buffered,
}

/// The common checks of a send; `None` for `MPI_PROC_NULL`.
///
/// # Safety
/// `buf` must be valid for `count` elements of `dt` for `'a`.
unsafe fn send_args<'a>(
    buf: *const c_void,
    n: usize,
    dt: Handle,
    dest: c_int,
    tag: c_int,
    comm: Handle,
) -> R<(Comm, Option<usize>, i32, &'a [u8])> {
    let c = state::comm(comm)?;
    let len = bytes_n(n, dt)?;
    // SAFETY: the caller's contract.
    unsafe { send_args_len(c, buf, len, dest, tag) }
}

/// [`send_args`] for `len` bytes at `buf`, the communicator looked up.
///
/// # Safety
/// `buf` must be valid for `len` bytes for `'a`.
pub(crate) unsafe fn send_args_len<'a>(
    c: Comm,
    buf: *const c_void,
    len: usize,
    dest: c_int,
    tag: c_int,
) -> R<(Comm, Option<usize>, i32, &'a [u8])> {
    let tag = send_tag(tag)?;
    let d = dest_rank(&c, dest)?;
    // SAFETY: the caller's contract.
    let b = unsafe { src(buf, len)? };
    Ok((c, d, tag, b))
}

/// The bytes to send for `n` elements of `dt` at `buf`: the buffer
/// itself for a dense type, else a packed copy kept in `keep`.
///
/// # Safety
/// `buf` valid for `n` elements of `dt`.
#[inline]
pub(crate) unsafe fn send_bytes(
    buf: *const c_void,
    n: usize,
    dt: Handle,
    keep: &mut Vec<u8>,
) -> R<(*const c_void, usize)> {
    if !datatype::is_derived(dt) {
        return Ok((buf, bytes_n(n, dt)?));
    }
    match datatype::layout_n(n, dt)? {
        Layout::Dense(n) => Ok((buf, n)),
        l => {
            // SAFETY: the caller's contract.
            *keep = unsafe { crate::types::pack_to_vec(buf, &l)? };
            Ok((keep.as_ptr().cast(), keep.len()))
        }
    }
}

/// The length of `n` elements of a predefined, unpadded datatype, without
/// building a `Result`; `None` for anything else (a derived or padded type,
/// an invalid handle, an overflow): the caller's general path reports it.
#[inline]
pub(crate) fn dense_len(n: usize, dt: Handle) -> Option<usize> {
    if datatype::is_derived(dt) {
        return None;
    }
    n.checked_mul(datatype::predefined(dt)?.size)
}

/// The common case of a blocking call's buffer: `n` elements of a
/// predefined, unpadded datatype at `buf` (not null unless empty), `tag`
/// not negative: its bytes, without building a `Result`. `None` for
/// anything else: the general path checks again and reports what is wrong.
///
/// # Safety
/// `buf` valid for `n` elements of `dt` for `'a`.
#[inline]
unsafe fn dense_buffer<'a>(buf: *const c_void, n: usize, dt: Handle) -> Option<&'a [u8]> {
    let len = dense_len(n, dt)?;
    if len == 0 {
        return Some(&[]);
    }
    if buf.is_null() {
        return None;
    }
    // SAFETY: not null, and valid for `len` bytes by the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

/// Starts a send of a copy of `data` that completes in the background (not
/// counted against the attached buffer: see [`crate::bsend`] for buffered sends).
fn send_copy(c: &Comm, data: &[u8], dest: usize, tag: i32) -> R<()> {
    let copy = data.to_vec();
    // SAFETY: the copy's heap buffer moves with the `Vec` into the state,
    // which keeps it until the request completes.
    let r = unsafe { c.isend_detached(copy.as_ptr(), copy.len(), dest, tag)? };
    state::with(|st| {
        st.reap();
        st.detached.push((r, copy));
        Ok(())
    })
}

/// The common case of a blocking standard-mode send (a predefined type, a
/// rank of `c`, a tag not negative, a buffer not null unless empty)
/// straight to dos's blocking send, checked without building a `Result`;
/// `None` (nothing done) for anything else, which the general path checks
/// again and reports.
///
/// # Safety
/// `buf` valid for `n` elements of `dt`.
#[inline]
unsafe fn send_common(
    c: &Comm,
    buf: *const c_void,
    n: usize,
    dt: Handle,
    dest: c_int,
    tag: c_int,
) -> Option<dos::Result<()>> {
    if tag < 0 {
        return None;
    }
    // SAFETY: the caller's contract.
    let b = unsafe { dense_buffer(buf, n, dt)? };
    let d = usize::try_from(dest).ok().filter(|&d| d < c.size())?;
    Some(c.send(b, d, tag))
}

/// A blocking send of `n` elements: the common case (see [`send_common`])
/// straight to dos's send, anything else in [`send_general`].
///
/// # Safety
/// As [`send_args`].
#[inline(always)]
pub(crate) unsafe fn send(
    mode: Mode,
    buf: *const c_void,
    n: usize,
    dt: Handle,
    dest: c_int,
    tag: c_int,
    comm: Handle,
) -> R<()> {
    let c = state::comm(comm)?;
    if mode == Mode::Standard {
        // SAFETY: the caller's contract.
        if let Some(r) = unsafe { send_common(&c, buf, n, dt, dest, tag) } {
            return Ok(r?);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { send_general(mode, c, buf, n, dt, dest, tag) }
}

/// [`send`] of anything but the common case: derived types, the other
/// modes, `MPI_PROC_NULL`, bad arguments.
///
/// # Safety
/// As [`send_args`].
#[inline(never)]
unsafe fn send_general(
    mode: Mode,
    c: Comm,
    buf: *const c_void,
    n: usize,
    dt: Handle,
    dest: c_int,
    tag: c_int,
) -> R<()> {
    let (n, dt) = null_peer_type(dest, n, dt);
    let mut keep = Vec::new();
    // SAFETY: the caller's contract.
    let (p, len) = unsafe { send_bytes(buf, n, dt, &mut keep)? };
    // SAFETY: `p` is the caller's buffer or `keep`.
    let (c, d, tag, b) = unsafe { send_args_len(c, p, len, dest, tag)? };
    let Some(d) = d else { return Ok(()) };
    match mode {
        Mode::Standard => c.send(b, d, tag)?,
        Mode::Sync => c.ssend(b, d, tag)?,
        Mode::Buffered => crate::bsend::start(&c, b, d, tag)?,
    }
    Ok(())
}

mpi_fn! {
    /// Standard-mode send.
    fn MPI_Send / PMPI_Send(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle) on comm => {
        send(Mode::Standard, buf, datatype::count(count)?, datatype, dest, tag, comm)
    }
}

mpi_fn! {
    /// Synchronous send: returns once the matching receive has started.
    fn MPI_Ssend / PMPI_Ssend(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle) on comm => {
        send(Mode::Sync, buf, datatype::count(count)?, datatype, dest, tag, comm)
    }
}

mpi_fn! {
    /// Ready send: as a standard send (correct whether or not the receive is posted).
    fn MPI_Rsend / PMPI_Rsend(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle) on comm => {
        send(Mode::Standard, buf, datatype::count(count)?, datatype, dest, tag, comm)
    }
}

mpi_fn! {
    /// Buffered send: completes at once; the library keeps a copy of the data.
    fn MPI_Bsend / PMPI_Bsend(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle) on comm => {
        send(Mode::Buffered, buf, datatype::count(count)?, datatype, dest, tag, comm)
    }
}

/// The common case of a blocking receive's arguments (a predefined type, a
/// rank of `c` or `MPI_ANY_SOURCE`, a tag not negative or `MPI_ANY_TAG`, a
/// buffer not null unless empty), checked with a few compares: the bytes to
/// receive into and the selectors. `None` for anything else, which
/// [`recv`] checks on its longer way and reports.
///
/// # Safety
/// `buf` valid for `n` elements of `dt` for `'a`.
#[inline]
unsafe fn recv_dense<'a>(
    c: &Comm,
    buf: *mut c_void,
    n: usize,
    dt: Handle,
    source: c_int,
    tag: c_int,
) -> Option<(&'a mut [u8], Source, TagSel)> {
    let t = match tag {
        abi::ANY_TAG => TagSel::Any,
        t if t >= 0 => TagSel::Tag(t),
        _ => return None,
    };
    let s = match source {
        abi::ANY_SOURCE => Source::Any,
        s => Source::Rank(usize::try_from(s).ok().filter(|&s| s < c.size())?),
    };
    let len = dense_len(n, dt)?;
    let b: &mut [u8] = if len == 0 {
        &mut []
    } else if buf.is_null() {
        return None;
    } else {
        // SAFETY: not null, and the caller's receive buffer, valid for
        // writes of `len` bytes (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    };
    Some((b, s, t))
}

/// The status and error of a receive from `source` with `tag` (the
/// selectors the program gave) that ended with `r`: the message's status,
/// or for a failure the selectors and the error class (dos does not report
/// the sender of a message it truncated). Blocking receives take it
/// through [`complete_recv`], nonblocking ones when their request completes.
#[inline]
pub(crate) fn recv_outcome(
    r: dos::Result<dos::Status>,
    source: c_int,
    tag: c_int,
) -> (Status, Option<crate::error::Error>) {
    match r {
        Ok(st) => (recv_status(st), None),
        Err(e) => {
            let e = crate::error::Error::from(e);
            (failed_status(source, tag, &e), Some(e))
        }
    }
}

/// The end of every blocking receive (`Recv`, `Sendrecv(_replace)`,
/// `Mrecv`, their `_c` forms): unpacks the bytes received into `tmp` to
/// `buf` for a noncontiguous `layout` (nothing for a dense one or `None`),
/// stores the status ([`recv_outcome`]) and returns the error, if any.
///
/// # Safety
/// `buf` valid for `layout`; `status` for a status (or null).
#[inline]
pub(crate) unsafe fn complete_recv(
    r: dos::Result<dos::Status>,
    unpack: Option<(&Layout, &[u8])>,
    buf: *mut c_void,
    source: c_int,
    tag: c_int,
    status: *mut Status,
) -> R<()> {
    let got = r.as_ref().map_or(0, |st| st.len);
    let (st, e) = recv_outcome(r, source, tag);
    let unpacked = match (unpack, &e) {
        // SAFETY: the caller's contract.
        (Some((l, tmp)), None) => unsafe { unpack_received(l, tmp, got, buf) },
        _ => Ok(()),
    };
    // SAFETY: the caller's contract.
    unsafe { set_status(status, st) };
    match e {
        Some(e) => Err(e),
        None => unpacked,
    }
}

/// After a receive of `got` bytes into `tmp`: unpacks them into `recvbuf`
/// for a noncontiguous layout (nothing to do for a dense one).
///
/// # Safety
/// `recvbuf` valid for `layout`.
pub(crate) unsafe fn unpack_received(
    layout: &Layout,
    tmp: &[u8],
    got: usize,
    recvbuf: *mut c_void,
) -> R<()> {
    if let Layout::Packed { .. } = layout {
        let got = got.min(tmp.len());
        // SAFETY: the caller's contract.
        unsafe { crate::types::unpack_from(&tmp[..got], recvbuf, layout)? };
    }
    Ok(())
}

/// `MPI_Recv` of `n` elements: the common case (see [`recv_dense`]) straight
/// to dos's blocking receive, anything else (derived types, `MPI_PROC_NULL`,
/// errors to report) after it.
///
/// # Safety
/// `buf` valid for `count` elements of `dt`, `status` for a status (or null).
#[inline(always)]
pub(crate) unsafe fn recv(
    buf: *mut c_void,
    n: usize,
    dt: Handle,
    source: c_int,
    tag: c_int,
    comm: Handle,
    status: *mut Status,
) -> R<()> {
    let c = state::comm(comm)?;
    // SAFETY: the caller's contract.
    if let Some((b, s, t)) = unsafe { recv_dense(&c, buf, n, dt, source, tag) } {
        // SAFETY: the caller's contract.
        return unsafe { complete_recv(c.recv(b, s, t), None, buf, source, tag, status) };
    }
    // SAFETY: the caller's contract.
    unsafe { recv_general(c, buf, n, dt, source, tag, status) }
}

/// [`recv`] of anything but the common case: derived types,
/// `MPI_PROC_NULL`, bad arguments.
///
/// # Safety
/// As [`recv`].
#[inline(never)]
unsafe fn recv_general(
    c: Comm,
    buf: *mut c_void,
    n: usize,
    dt: Handle,
    source: c_int,
    tag: c_int,
    status: *mut Status,
) -> R<()> {
    let (n, dt) = null_peer_type(source, n, dt);
    let l = if datatype::is_derived(dt) {
        datatype::layout_n(n, dt)?
    } else {
        Layout::Dense(bytes_n(n, dt)?)
    };
    let t = recv_tag(tag)?;
    let Some(s) = source_sel(&c, source)? else {
        // SAFETY: the caller's contract.
        unsafe { set_status(status, Status::proc_null()) };
        return Ok(());
    };
    let mut tmp = Vec::new();
    let b = match &l {
        // SAFETY: the caller's contract.
        Layout::Dense(len) => unsafe { dst(buf, *len)? },
        Layout::Packed { len, .. } => {
            tmp.resize(*len, 0);
            &mut tmp[..]
        }
    };
    let r = c.recv(b, s, t);
    // SAFETY: the caller's contract.
    unsafe { complete_recv(r, Some((&l, &tmp)), buf, source, tag, status) }
}

mpi_fn! {
    /// Blocking receive; a longer message is `MPI_ERR_TRUNCATE`.
    fn MPI_Recv / PMPI_Recv(
        buf: *mut c_void,
        count: c_int,
        datatype: Handle,
        source: c_int,
        tag: c_int,
        comm: Handle,
        status: *mut Status,
    ) on comm => {
        recv(buf, datatype::count(count)?, datatype, source, tag, comm, status)
    }
}

/// Registers a request; stores its handle.
///
/// # Safety
/// `request` valid for a write (or null: `MPI_ERR_ARG`).
pub(crate) unsafe fn new_request(
    raw: DetachedRequest,
    kind: ReqKind,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    let h = state::with(|st| {
        Ok(st.reqs.insert(ReqEntry {
            raw,
            kind,
            comm,
            outcome: None,
            after: None,
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

/// # Safety
/// As [`send_args`]; `request` valid for a write.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn isend(
    mode: Mode,
    buf: *const c_void,
    n: usize,
    dt: Handle,
    dest: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // The common case first: a predefined type, no layout to build.
    if mode != Mode::Buffered && !request.is_null() {
        if let Some(len) = dense_len(n, dt) {
            // SAFETY: the caller's contract.
            return unsafe { isend_dense(mode, buf, len, dest, tag, comm, request) };
        }
    }
    // SAFETY: the caller's contract.
    unsafe { isend_general(mode, buf, n, dt, dest, tag, comm, request) }
}

/// [`isend`] of anything but the common case: derived types, buffered
/// mode, `MPI_PROC_NULL`, bad arguments.
///
/// # Safety
/// As [`isend`].
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn isend_general(
    mode: Mode,
    buf: *const c_void,
    n: usize,
    dt: Handle,
    dest: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    let (n, dt) = null_peer_type(dest, n, dt);
    if datatype::is_derived(dt) && !matches!(datatype::layout_n(n, dt)?, Layout::Dense(_)) {
        if mode == Mode::Sync {
            // The packed copy lives in the request's hook until it completes.
            let c = state::comm(comm)?;
            let mut keep = Vec::new();
            // SAFETY: the caller's contract.
            let (p, len) = unsafe { send_bytes(buf, n, dt, &mut keep)? };
            // SAFETY: `p` is `keep`.
            let (c, d, tag, b) = unsafe { send_args_len(c, p, len, dest, tag)? };
            let raw = match d {
                None => DetachedRequest::completed(),
                // SAFETY: `keep` (its heap buffer) moves into the hook and
                // lives until the request completes.
                Some(d) => unsafe { c.issend_detached(b.as_ptr(), b.len(), d, tag)? },
            };
            let after: After = Box::new(move |_| {
                drop(keep);
                Ok(())
            });
            let h = state::with(|st| {
                Ok(st.reqs.insert(ReqEntry {
                    raw,
                    kind: ReqKind::Send,
                    comm,
                    outcome: None,
                    after: Some(after),
                }))
            })?;
            // SAFETY: the caller's contract.
            return unsafe { out(request, h, "request") };
        }
        // A packed copy sent in the background, as a buffered send (the
        // standard lets a standard-mode send buffer).
        let c = state::comm(comm)?;
        let mut keep = Vec::new();
        // SAFETY: the caller's contract.
        let (p, len) = unsafe { send_bytes(buf, n, dt, &mut keep)? };
        // SAFETY: `p` is `keep`.
        let (c, d, tag, b) = unsafe { send_args_len(c, p, len, dest, tag)? };
        if let Some(d) = d {
            if mode == Mode::Buffered {
                crate::bsend::start(&c, b, d, tag)?;
            } else {
                send_copy(&c, b, d, tag)?;
            }
        }
        // SAFETY: the caller's contract.
        return unsafe { new_request(DetachedRequest::completed(), ReqKind::Send, comm, request) };
    }
    if mode == Mode::Buffered {
        // SAFETY: the caller's contract.
        let (c, d, tag, b) = unsafe { send_args(buf, n, dt, dest, tag, comm)? };
        if let Some(d) = d {
            crate::bsend::start(&c, b, d, tag)?;
        }
        // SAFETY: the caller's contract.
        return unsafe { new_request(DetachedRequest::completed(), ReqKind::Send, comm, request) };
    }
    let len = bytes_n(n, dt)?;
    // SAFETY: the caller's contract.
    unsafe { isend_dense(mode, buf, len, dest, tag, comm, request) }
}

/// [`isend`] of `len` bytes at `buf` in the standard or synchronous mode.
///
/// # Safety
/// `buf` valid for `len` bytes until the request completes; `request` for a write.
#[inline(always)]
unsafe fn isend_dense(
    mode: Mode,
    buf: *const c_void,
    len: usize,
    dest: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // One visit to the state: the communicator is borrowed, not cloned, and
    // the request stored in the same borrow (dos calls back into nothing here).
    let h = state::with(|st| {
        let c = &st
            .comms
            .get(&comm)
            .ok_or_else(|| state::bad_comm(comm))?
            .comm;
        let tag = send_tag(tag)?;
        let d = dest_rank(c, dest)?;
        // SAFETY: the caller's contract.
        let b = unsafe { src(buf, len)? };
        let raw = match d {
            None => DetachedRequest::completed(),
            // SAFETY: the caller keeps the buffer until the request completes (MPI's rule).
            Some(d) if mode == Mode::Sync => unsafe {
                c.issend_detached(b.as_ptr(), b.len(), d, tag)?
            },
            // SAFETY: as above.
            Some(d) => unsafe { c.isend_detached(b.as_ptr(), b.len(), d, tag)? },
        };
        Ok(st.reqs.insert(ReqEntry {
            raw,
            kind: ReqKind::Send,
            comm,
            outcome: None,
            after: None,
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

mpi_fn! {
    /// Nonblocking standard send.
    fn MPI_Isend / PMPI_Isend(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
        isend(Mode::Standard, buf, datatype::count(count)?, datatype, dest, tag, comm, request)
    }
}

mpi_fn! {
    /// Nonblocking synchronous send.
    fn MPI_Issend / PMPI_Issend(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
        isend(Mode::Sync, buf, datatype::count(count)?, datatype, dest, tag, comm, request)
    }
}

mpi_fn! {
    /// Nonblocking ready send (as a standard one).
    fn MPI_Irsend / PMPI_Irsend(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
        isend(Mode::Standard, buf, datatype::count(count)?, datatype, dest, tag, comm, request)
    }
}

mpi_fn! {
    /// Nonblocking buffered send (complete at once).
    fn MPI_Ibsend / PMPI_Ibsend(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
        isend(Mode::Buffered, buf, datatype::count(count)?, datatype, dest, tag, comm, request)
    }
}

mpi_fn! {
    /// Nonblocking receive.
    fn MPI_Irecv / PMPI_Irecv(
        buf: *mut c_void,
        count: c_int,
        datatype: Handle,
        source: c_int,
        tag: c_int,
        comm: Handle,
        request: *mut Handle,
    ) on comm => {
        irecv(buf, datatype::count(count)?, datatype, source, tag, comm, request)
    }
}

/// `MPI_Irecv` of `n` elements.
///
/// # Safety
/// `buf` valid for `n` elements of `datatype` until the request completes;
/// `request` for a write.
#[inline(always)]
pub(crate) unsafe fn irecv(
    buf: *mut c_void,
    n: usize,
    datatype: Handle,
    source: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // The common case first: a predefined type, no layout to build.
    if !request.is_null() {
        if let Some(len) = dense_len(n, datatype) {
            // SAFETY: the caller's contract.
            return unsafe { irecv_dense(buf, len, source, tag, comm, request) };
        }
    }
    // SAFETY: the caller's contract.
    unsafe { irecv_general(buf, n, datatype, source, tag, comm, request) }
}

/// [`irecv`] of anything but the common case: derived types,
/// `MPI_PROC_NULL`, bad arguments.
///
/// # Safety
/// As [`irecv`].
#[inline(never)]
unsafe fn irecv_general(
    buf: *mut c_void,
    n: usize,
    datatype: Handle,
    source: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    let (n, datatype) = null_peer_type(source, n, datatype);
    if datatype::is_derived(datatype) {
        if let l @ Layout::Packed { .. } = datatype::layout_n(n, datatype)? {
            // SAFETY: the caller's contract.
            return unsafe { irecv_packed(buf, l, source, tag, comm, request) };
        }
    }
    let len = bytes_n(n, datatype)?;
    // SAFETY: the caller's contract.
    unsafe { irecv_dense(buf, len, source, tag, comm, request) }
}

/// [`irecv`] of `len` bytes into `buf`.
///
/// # Safety
/// `buf` valid for `len` bytes until the request completes; `request` for a write.
#[inline(always)]
unsafe fn irecv_dense(
    buf: *mut c_void,
    len: usize,
    source: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // One visit to the state, as in `isend`.
    let h = state::with(|st| {
        let c = &st
            .comms
            .get(&comm)
            .ok_or_else(|| state::bad_comm(comm))?
            .comm;
        let t = recv_tag(tag)?;
        let (raw, kind) = match source_sel(c, source)? {
            None => (DetachedRequest::completed(), ReqKind::ProcNull),
            Some(s) => {
                // SAFETY: the caller's contract.
                let b = unsafe { dst(buf, len)? };
                // SAFETY: the caller keeps the buffer until the request completes (MPI's rule).
                let r = unsafe { c.irecv_detached(b.as_mut_ptr(), b.len(), s, t)? };
                (r, ReqKind::Recv { source, tag })
            }
        };
        Ok(st.reqs.insert(ReqEntry {
            raw,
            kind,
            comm,
            outcome: None,
            after: None,
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

/// `MPI_Irecv` of a noncontiguous datatype: into a temporary, unpacked into
/// `buf` (as far as the message goes) when the request completes.
///
/// # Safety
/// `buf` valid for layout `l` until the request completes; `request` for a write.
#[cold]
unsafe fn irecv_packed(
    buf: *mut c_void,
    l: Layout,
    source: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    let c = state::comm(comm)?;
    let t = recv_tag(tag)?;
    let Layout::Packed { len, .. } = l else {
        return Err(err(abi::ERR_INTERN, "irecv_packed of a dense layout"));
    };
    let (raw, kind, after) = match source_sel(&c, source)? {
        None => (DetachedRequest::completed(), ReqKind::ProcNull, None),
        Some(s) => {
            let mut tmp = vec![0u8; len];
            // SAFETY: `tmp`'s heap buffer moves into the hook, which lives
            // until the request completes.
            let r = unsafe { c.irecv_detached(tmp.as_mut_ptr(), len, s, t)? };
            let after: After = Box::new(move |st: &Status| {
                let got = (st.bytes() as usize).min(tmp.len());
                // SAFETY: the caller keeps `buf` until the request completes (MPI's rule).
                unsafe { crate::types::unpack_from(&tmp[..got], buf, &l) }
            });
            (r, ReqKind::Recv { source, tag }, Some(after))
        }
    };
    let h = state::with(|st| {
        Ok(st.reqs.insert(ReqEntry {
            raw,
            kind,
            comm,
            outcome: None,
            after,
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

/// # Safety
/// The buffers valid for their counts, `status` for a status (or null).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sendrecv(
    sendbuf: *const c_void,
    sendcount: usize,
    sendtype: Handle,
    dest: c_int,
    sendtag: c_int,
    recvbuf: *mut c_void,
    recvcount: usize,
    recvtype: Handle,
    source: c_int,
    recvtag: c_int,
    comm: Handle,
    status: *mut Status,
) -> R<()> {
    // SAFETY: the caller's contract.
    let x = unsafe {
        crate::p2p4::Exchange::new(
            sendbuf, sendcount, sendtype, dest, sendtag, recvbuf, recvcount, recvtype, source,
            recvtag, comm,
        )?
    };
    // SAFETY: the caller's buffers (or `x`'s copies) live through the call.
    let (sb, rb) = unsafe { (x.send_bytes(), x.recv_bytes()) };
    let (c, stag, rt) = (&x.comm, x.send_tag, x.recv_tag);
    let r = match (x.dest, x.source) {
        (None, None) => Ok(None),
        (Some(d), None) => c.send(sb, d, stag).map(|()| None),
        (None, Some(s)) => c.recv(rb, s, rt).map(Some),
        (Some(d), Some(s)) => c.sendrecv(sb, d, stag, rb, s, rt).map(Some),
    };
    match r {
        Ok(None) => {
            // SAFETY: the caller's contract.
            unsafe { set_status(status, Status::proc_null()) };
            Ok(())
        }
        Ok(Some(st)) => {
            let unpack = Some((&x.layout, &x.tmp[..]));
            // SAFETY: the caller's contract.
            unsafe { complete_recv(Ok(st), unpack, recvbuf, source, recvtag, status) }
        }
        // SAFETY: the caller's contract.
        Err(e) => unsafe { complete_recv(Err(e), None, recvbuf, source, recvtag, status) },
    }
}

mpi_fn! {
    /// Sends and receives at once, without deadlock whatever the peers' order.
    fn MPI_Sendrecv / PMPI_Sendrecv(
        sendbuf: *const c_void,
        sendcount: c_int,
        sendtype: Handle,
        dest: c_int,
        sendtag: c_int,
        recvbuf: *mut c_void,
        recvcount: c_int,
        recvtype: Handle,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
        status: *mut Status,
    ) on comm => {
        sendrecv(sendbuf, datatype::count(sendcount)?, sendtype, dest, sendtag, recvbuf, datatype::count(recvcount)?, recvtype, source, recvtag, comm, status)
    }
}

mpi_fn! {
    /// Sends the buffer and receives into it.
    fn MPI_Sendrecv_replace / PMPI_Sendrecv_replace(
        buf: *mut c_void,
        count: c_int,
        datatype: Handle,
        dest: c_int,
        sendtag: c_int,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
        status: *mut Status,
    ) on comm => {
        sendrecv_replace(buf, datatype::count(count)?, datatype, dest, sendtag, source, recvtag, comm, status)
    }
}

/// A copy of the `n` elements of `dt` at `buf` to send: packed bytes (the
/// count and type to send them with are returned beside).
///
/// # Safety
/// `buf` valid for `n` elements of `dt`.
pub(crate) unsafe fn copy_out(
    buf: *const c_void,
    n: usize,
    dt: Handle,
) -> R<(Vec<u8>, usize, Handle)> {
    let l = datatype::layout_n(n, dt)?;
    if let Layout::Packed { .. } = l {
        // SAFETY: the caller's contract.
        let copy = unsafe { crate::types::pack_to_vec(buf, &l)? };
        let len = copy.len();
        return Ok((copy, len, BYTE));
    }
    let len = bytes_n(n, dt)?;
    // SAFETY: the caller's contract.
    let copy = unsafe { src(buf, len)? }.to_vec();
    Ok((copy, n, dt))
}

/// `MPI_Sendrecv_replace` of `n` elements.
///
/// # Safety
/// `buf` valid for `n` elements of `datatype`, `status` for a status (or null).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sendrecv_replace(
    buf: *mut c_void,
    n: usize,
    datatype: Handle,
    dest: c_int,
    sendtag: c_int,
    source: c_int,
    recvtag: c_int,
    comm: Handle,
    status: *mut Status,
) -> R<()> {
    let (sn, st) = null_peer_type(dest, n, datatype);
    // SAFETY: the caller's contract.
    let (copy, sn, st) = unsafe { copy_out(buf, sn, st)? };
    // SAFETY: `copy` lives through the call; `buf` by the caller's contract.
    unsafe {
        sendrecv(
            copy.as_ptr().cast(),
            sn,
            st,
            dest,
            sendtag,
            buf,
            n,
            datatype,
            source,
            recvtag,
            comm,
            status,
        )
    }
}

mpi_fn! {
    /// Waits for a matching message and describes it.
    fn MPI_Probe / PMPI_Probe(source: c_int, tag: c_int, comm: Handle, status: *mut Status) on comm => {
        let c = state::comm(comm)?;
        let t = recv_tag(tag)?;
        let st = match source_sel(&c, source)? {
            None => Status::proc_null(),
            Some(s) => recv_status(c.probe(s, t)?),
        };
        set_status(status, st);
        Ok(())
    }
}

mpi_fn! {
    /// Describes a matching message if one has arrived.
    fn MPI_Iprobe / PMPI_Iprobe(source: c_int, tag: c_int, comm: Handle, flag: *mut c_int, status: *mut Status) on comm => {
        if flag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for flag"));
        }
        let c = state::comm(comm)?;
        let t = recv_tag(tag)?;
        let found = match source_sel(&c, source)? {
            None => Some(Status::proc_null()),
            Some(s) => c.iprobe(s, t)?.map(recv_status),
        };
        out(flag, found.is_some() as c_int, "flag")?;
        if let Some(st) = found {
            set_status(status, st);
        }
        Ok(())
    }
}
