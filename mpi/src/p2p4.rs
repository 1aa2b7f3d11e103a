//! The MPI-4 point-to-point functions: `MPI_Isendrecv`,
//! `MPI_Isendrecv_replace`, the large-count `_c` forms of the blocking and
//! nonblocking sends and receives (`MPI_Send_c`, ..., `MPI_Sendrecv_replace_c`,
//! `MPI_Mrecv_c`, `MPI_Imrecv_c`),
//! and the status setters and getters (`MPI_Status_set_source`, `_tag`,
//! `_error`, `_cancelled`; MPI-4.1's `MPI_Status_get_source`, `_tag`,
//! `_error`).
//!
//! A `_c` form takes its count as an `MPI_Count` and does what the `int`
//! form does with it (the same code, see [`crate::p2p`]); a message may
//! then exceed 2 GiB.
//!
//! `MPI_Isendrecv` posts the receive and starts the send at once, as one
//! request: its dos request is the receive's, and its completion hook
//! waits for the send (which needs only the peer's receive) and unpacks a
//! noncontiguous receive. `MPI_Test` on it reports it complete once the
//! message has arrived; the send's completion is then waited for in that
//! call. `MPI_Isendrecv_replace` sends a copy of the buffer, so the receive
//! may land in it at once.

use std::ffi::{c_int, c_void};

use dos::detached::DetachedRequest;

use crate::abi::{self, Handle, Status};
use crate::datatype::{self, Layout};
use crate::error::{err, R};
use crate::p2p::{self, Mode};
use crate::ptr::{dst, out, read};
use crate::request::After;
use crate::state::{self, ReqEntry, ReqKind};

/// An `MPI_Count` argument as `usize` (`MPI_ERR_COUNT` if negative).
fn count_c(c: i64) -> R<usize> {
    usize::try_from(c).map_err(|_| err(abi::ERR_COUNT, format!("negative count {c}")))
}

/// The checked arguments of a send and a receive made together
/// (`MPI_Sendrecv`, `MPI_Isendrecv`, their `_replace` and `_c` forms): the
/// one normalisation of counts, datatypes, ranks and tags that the blocking
/// forms ([`crate::p2p::sendrecv`]) and the nonblocking ones here share.
/// Every argument is checked before anything moves.
pub(crate) struct Exchange {
    /// The communicator.
    pub(crate) comm: dos::Comm,
    /// The destination; `None` for `MPI_PROC_NULL`.
    pub(crate) dest: Option<usize>,
    /// The send tag.
    pub(crate) send_tag: i32,
    send: *const u8,
    send_len: usize,
    /// A packed copy of a noncontiguous send buffer (else empty); `send`
    /// points into its heap buffer, which does not move with the `Vec`.
    pub(crate) keep: Vec<u8>,
    /// The source; `None` for `MPI_PROC_NULL`.
    pub(crate) source: Option<dos::Source>,
    /// The receive tag selector.
    pub(crate) recv_tag: dos::TagSel,
    /// The receive buffer's layout.
    pub(crate) layout: Layout,
    recv: *mut u8,
    recv_len: usize,
    /// The temporary a noncontiguous receive lands in (else empty); `recv`
    /// points into its heap buffer.
    pub(crate) tmp: Vec<u8>,
}

impl Exchange {
    /// Checks and normalises the arguments: `MPI_DATATYPE_NULL` with
    /// `MPI_PROC_NULL`, a packed copy of a noncontiguous send buffer, a
    /// temporary for a noncontiguous receive.
    ///
    /// # Safety
    /// The buffers valid for their counts of their types while the
    /// `Exchange` (or what its pointers are handed to) is in use.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn new(
        sendbuf: *const c_void,
        sn: usize,
        stype: Handle,
        dest: c_int,
        sendtag: c_int,
        recvbuf: *mut c_void,
        rn: usize,
        rtype: Handle,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
    ) -> R<Exchange> {
        let c = state::comm(comm)?;
        let (sn, stype) = p2p::null_peer_type(dest, sn, stype);
        let (rn, rtype) = p2p::null_peer_type(source, rn, rtype);
        let mut keep = Vec::new();
        // SAFETY: the caller's contract.
        let (p, len) = unsafe { p2p::send_bytes(sendbuf, sn, stype, &mut keep)? };
        // SAFETY: `p` is the caller's buffer or `keep`'s heap buffer, which
        // moves with `keep` into the `Exchange` unchanged.
        let (comm, dest, send_tag, sb) = unsafe { p2p::send_args_len(c, p, len, dest, sendtag)? };
        let layout = datatype::layout_n(rn, rtype)?;
        let recv_tag = p2p::recv_tag(recvtag)?;
        let source = p2p::source_sel(&comm, source)?;
        let mut tmp = Vec::new();
        let (recv, recv_len) = match &layout {
            Layout::Dense(len) => {
                // SAFETY: the caller's contract.
                let b = unsafe { dst(recvbuf, *len)? };
                (b.as_mut_ptr(), *len)
            }
            Layout::Packed { len, .. } => {
                tmp.resize(*len, 0);
                (tmp.as_mut_ptr(), *len)
            }
        };
        Ok(Exchange {
            comm,
            dest,
            send_tag,
            send: sb.as_ptr(),
            send_len: sb.len(),
            keep,
            source,
            recv_tag,
            layout,
            recv,
            recv_len,
            tmp,
        })
    }

    /// The bytes to send.
    ///
    /// # Safety
    /// As [`Exchange::new`]: the caller's send buffer still valid (or
    /// `keep` still alive).
    pub(crate) unsafe fn send_bytes<'a>(&self) -> &'a [u8] {
        if self.send_len == 0 {
            return &[];
        }
        // SAFETY: checked by `new` for this length; valid by the contract.
        unsafe { std::slice::from_raw_parts(self.send, self.send_len) }
    }

    /// Where the message is received: pointer and length.
    pub(crate) fn recv_target(&self) -> (*mut u8, usize) {
        (self.recv, self.recv_len)
    }

    /// The bytes to receive into.
    ///
    /// # Safety
    /// As [`Exchange::new`]; no other reference to the receive buffer in use.
    pub(crate) unsafe fn recv_bytes<'a>(&self) -> &'a mut [u8] {
        if self.recv_len == 0 {
            return &mut [];
        }
        // SAFETY: checked by `new` for this length; valid by the contract.
        unsafe { std::slice::from_raw_parts_mut(self.recv, self.recv_len) }
    }
}

/// `MPI_Isendrecv` of `sn` elements of `stype` from `sendbuf` and `rn` of
/// `rtype` into `recvbuf`.
///
/// # Safety
/// The buffers valid for their counts until the request completes;
/// `request` valid for a write.
#[allow(clippy::too_many_arguments)]
unsafe fn isendrecv(
    sendbuf: *const c_void,
    sn: usize,
    stype: Handle,
    dest: c_int,
    sendtag: c_int,
    recvbuf: *mut c_void,
    rn: usize,
    rtype: Handle,
    source: c_int,
    recvtag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    // SAFETY: the caller's contract.
    let x = unsafe {
        Exchange::new(
            sendbuf, sn, stype, dest, sendtag, recvbuf, rn, rtype, source, recvtag, comm,
        )?
    };
    // SAFETY: the caller keeps `sendbuf` until the request completes; `keep`
    // moves into the hook below.
    let sb = unsafe { x.send_bytes() };
    let (rp, rlen) = x.recv_target();
    let Exchange {
        comm: c,
        dest: d,
        send_tag: stag,
        keep,
        source: s,
        recv_tag: rt,
        layout: rl,
        tmp,
        ..
    } = x;
    let recv = match s {
        None => None,
        // SAFETY: the caller keeps `recvbuf` until the request completes;
        // `tmp`'s heap buffer moves into the hook, which lives as long.
        Some(s) => Some(unsafe { c.irecv_detached(rp, rlen, s, rt)? }),
    };
    let send = match d {
        None => DetachedRequest::completed(),
        // SAFETY: the caller keeps `sendbuf` until the request completes;
        // `keep` moves into the hook.
        Some(d) => match unsafe { c.isend_detached(sb.as_ptr(), sb.len(), d, stag) } {
            Ok(r) => r,
            Err(e) => {
                // Withdrawn, not waited for (dropping a request waits).
                if let Some(r) = recv {
                    r.abandon();
                }
                return Err(e.into());
            }
        },
    };
    let (raw, kind, after): (DetachedRequest, ReqKind, After) = match recv {
        Some(r) => (
            r,
            ReqKind::Recv {
                source,
                tag: recvtag,
            },
            Box::new(move |st: &Status| {
                send.wait()?;
                drop(keep);
                // SAFETY: the caller keeps `recvbuf` until the request completes.
                unsafe { p2p::unpack_received(&rl, &tmp, st.bytes() as usize, recvbuf) }
            }),
        ),
        // From `MPI_PROC_NULL`: the request is the send's.
        None => (
            send,
            ReqKind::ProcNull,
            Box::new(move |_: &Status| {
                drop(keep);
                Ok(())
            }),
        ),
    };
    let h = state::with(|st| {
        Ok(st.reqs.insert(ReqEntry {
            raw,
            kind,
            comm,
            outcome: None,
            after: Some(after),
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

/// `MPI_Isendrecv_replace` of `n` elements.
///
/// # Safety
/// `buf` valid for `n` elements of `dt` until the request completes;
/// `request` valid for a write.
#[allow(clippy::too_many_arguments)]
unsafe fn isendrecv_replace(
    buf: *mut c_void,
    n: usize,
    dt: Handle,
    dest: c_int,
    sendtag: c_int,
    source: c_int,
    recvtag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    let (sn, st) = p2p::null_peer_type(dest, n, dt);
    // SAFETY: the caller's contract.
    let (copy, sn, st) = unsafe { p2p::copy_out(buf, sn, st)? };
    // The copy is sent; it must live until the send completes: it is
    // handed over as the send buffer and kept by a hook of its own.
    let mut inner = abi::REQUEST_NULL;
    // SAFETY: `copy`'s heap buffer does not move when the `Vec` does; it
    // lives in the hook below until the request completes.
    unsafe {
        isendrecv(
            copy.as_ptr().cast(),
            sn,
            st,
            dest,
            sendtag,
            buf,
            n,
            dt,
            source,
            recvtag,
            comm,
            &mut inner,
        )?
    };
    state::with(|s| {
        let e = s
            .reqs
            .get_mut(&inner)
            .ok_or_else(|| err(abi::ERR_INTERN, "the request just made is gone"))?;
        let first = e.after.take();
        e.after = Some(Box::new(move |st: &Status| {
            let r = match first {
                Some(f) => f(st),
                None => Ok(()),
            };
            drop(copy);
            r
        }));
        Ok(())
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, inner, "request") }
}

mpi_fn! {
    /// Starts a send and a receive at once (MPI-4): one request for both.
    fn MPI_Isendrecv / PMPI_Isendrecv(
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
        request: *mut Handle,
    ) on comm => {
        isendrecv(sendbuf, datatype::count(sendcount)?, sendtype, dest, sendtag, recvbuf, datatype::count(recvcount)?, recvtype, source, recvtag, comm, request)
    }
}

mpi_fn! {
    /// `MPI_Isendrecv` with `MPI_Count` counts.
    fn MPI_Isendrecv_c / PMPI_Isendrecv_c(
        sendbuf: *const c_void,
        sendcount: i64,
        sendtype: Handle,
        dest: c_int,
        sendtag: c_int,
        recvbuf: *mut c_void,
        recvcount: i64,
        recvtype: Handle,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
        request: *mut Handle,
    ) on comm => {
        isendrecv(sendbuf, count_c(sendcount)?, sendtype, dest, sendtag, recvbuf, count_c(recvcount)?, recvtype, source, recvtag, comm, request)
    }
}

mpi_fn! {
    /// Sends the buffer and receives into it, nonblocking (MPI-4).
    fn MPI_Isendrecv_replace / PMPI_Isendrecv_replace(
        buf: *mut c_void,
        count: c_int,
        datatype: Handle,
        dest: c_int,
        sendtag: c_int,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
        request: *mut Handle,
    ) on comm => {
        isendrecv_replace(buf, datatype::count(count)?, datatype, dest, sendtag, source, recvtag, comm, request)
    }
}

mpi_fn! {
    /// `MPI_Isendrecv_replace` with an `MPI_Count` count.
    fn MPI_Isendrecv_replace_c / PMPI_Isendrecv_replace_c(
        buf: *mut c_void,
        count: i64,
        datatype: Handle,
        dest: c_int,
        sendtag: c_int,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
        request: *mut Handle,
    ) on comm => {
        isendrecv_replace(buf, count_c(count)?, datatype, dest, sendtag, source, recvtag, comm, request)
    }
}

/// The `_c` forms of the sends of one mode.
macro_rules! send_c {
    ($(#[doc = $doc:literal])* $mpi:ident / $pmpi:ident => $mode:expr) => {
        mpi_fn! {
            $(#[doc = $doc])*
            fn $mpi / $pmpi(buf: *const c_void, count: i64, datatype: Handle, dest: c_int, tag: c_int, comm: Handle) on comm => {
                p2p::send($mode, buf, count_c(count)?, datatype, dest, tag, comm)
            }
        }
    };
}

send_c! {
    /// `MPI_Send` with an `MPI_Count` count.
    MPI_Send_c / PMPI_Send_c => Mode::Standard
}
send_c! {
    /// `MPI_Ssend` with an `MPI_Count` count.
    MPI_Ssend_c / PMPI_Ssend_c => Mode::Sync
}
send_c! {
    /// `MPI_Rsend` with an `MPI_Count` count.
    MPI_Rsend_c / PMPI_Rsend_c => Mode::Standard
}
send_c! {
    /// `MPI_Bsend` with an `MPI_Count` count.
    MPI_Bsend_c / PMPI_Bsend_c => Mode::Buffered
}

/// The `_c` forms of the nonblocking sends of one mode.
macro_rules! isend_c {
    ($(#[doc = $doc:literal])* $mpi:ident / $pmpi:ident => $mode:expr) => {
        mpi_fn! {
            $(#[doc = $doc])*
            fn $mpi / $pmpi(buf: *const c_void, count: i64, datatype: Handle, dest: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
                p2p::isend($mode, buf, count_c(count)?, datatype, dest, tag, comm, request)
            }
        }
    };
}

isend_c! {
    /// `MPI_Isend` with an `MPI_Count` count.
    MPI_Isend_c / PMPI_Isend_c => Mode::Standard
}
isend_c! {
    /// `MPI_Issend` with an `MPI_Count` count.
    MPI_Issend_c / PMPI_Issend_c => Mode::Sync
}
isend_c! {
    /// `MPI_Irsend` with an `MPI_Count` count.
    MPI_Irsend_c / PMPI_Irsend_c => Mode::Standard
}
isend_c! {
    /// `MPI_Ibsend` with an `MPI_Count` count.
    MPI_Ibsend_c / PMPI_Ibsend_c => Mode::Buffered
}

mpi_fn! {
    /// `MPI_Recv` with an `MPI_Count` count.
    fn MPI_Recv_c / PMPI_Recv_c(buf: *mut c_void, count: i64, datatype: Handle, source: c_int, tag: c_int, comm: Handle, status: *mut Status) on comm => {
        p2p::recv(buf, count_c(count)?, datatype, source, tag, comm, status)
    }
}

mpi_fn! {
    /// `MPI_Irecv` with an `MPI_Count` count.
    fn MPI_Irecv_c / PMPI_Irecv_c(buf: *mut c_void, count: i64, datatype: Handle, source: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
        p2p::irecv(buf, count_c(count)?, datatype, source, tag, comm, request)
    }
}

mpi_fn! {
    /// `MPI_Sendrecv` with `MPI_Count` counts.
    fn MPI_Sendrecv_c / PMPI_Sendrecv_c(
        sendbuf: *const c_void,
        sendcount: i64,
        sendtype: Handle,
        dest: c_int,
        sendtag: c_int,
        recvbuf: *mut c_void,
        recvcount: i64,
        recvtype: Handle,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
        status: *mut Status,
    ) on comm => {
        p2p::sendrecv(sendbuf, count_c(sendcount)?, sendtype, dest, sendtag, recvbuf, count_c(recvcount)?, recvtype, source, recvtag, comm, status)
    }
}

mpi_fn! {
    /// `MPI_Sendrecv_replace` with an `MPI_Count` count.
    fn MPI_Sendrecv_replace_c / PMPI_Sendrecv_replace_c(
        buf: *mut c_void,
        count: i64,
        datatype: Handle,
        dest: c_int,
        sendtag: c_int,
        source: c_int,
        recvtag: c_int,
        comm: Handle,
        status: *mut Status,
    ) on comm => {
        p2p::sendrecv_replace(buf, count_c(count)?, datatype, dest, sendtag, source, recvtag, comm, status)
    }
}

mpi_fn! {
    /// `MPI_Mrecv` with an `MPI_Count` count.
    fn MPI_Mrecv_c / PMPI_Mrecv_c(buf: *mut c_void, count: i64, datatype: Handle, message: *mut Handle, status: *mut Status) on abi::COMM_WORLD => {
        crate::persist::mrecv(buf, count_c(count)?, datatype, message, status)
    }
}

mpi_fn! {
    /// `MPI_Imrecv` with an `MPI_Count` count.
    fn MPI_Imrecv_c / PMPI_Imrecv_c(buf: *mut c_void, count: i64, datatype: Handle, message: *mut Handle, request: *mut Handle) on abi::COMM_WORLD => {
        crate::persist::imrecv(buf, count_c(count)?, datatype, message, request)
    }
}

/// The status at `status` to write a field of (`MPI_ERR_ARG` if null).
fn status_arg(status: *mut Status) -> R<*mut Status> {
    if status.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for status"));
    }
    Ok(status)
}

mpi_fn! {
    /// Sets the status's `MPI_SOURCE` (MPI-4, for generalized requests' query functions).
    fn MPI_Status_set_source / PMPI_Status_set_source(status: *mut Status, source: c_int) on abi::COMM_WORLD => {
        let p = status_arg(status)?;
        // SAFETY: non-null, valid for a status by the caller's contract (one
        // field written in place: the others may be uninitialized).
        std::ptr::addr_of_mut!((*p).MPI_SOURCE).write(source);
        Ok(())
    }
}

mpi_fn! {
    /// Sets the status's `MPI_TAG` (MPI-4).
    fn MPI_Status_set_tag / PMPI_Status_set_tag(status: *mut Status, tag: c_int) on abi::COMM_WORLD => {
        let p = status_arg(status)?;
        // SAFETY: as in `MPI_Status_set_source`.
        std::ptr::addr_of_mut!((*p).MPI_TAG).write(tag);
        Ok(())
    }
}

mpi_fn! {
    /// Sets the status's `MPI_ERROR` (MPI-4).
    fn MPI_Status_set_error / PMPI_Status_set_error(status: *mut Status, error: c_int) on abi::COMM_WORLD => {
        let p = status_arg(status)?;
        // SAFETY: as in `MPI_Status_set_source`.
        std::ptr::addr_of_mut!((*p).MPI_ERROR).write(error);
        Ok(())
    }
}

mpi_fn! {
    /// Sets whether the status says its request was cancelled (what
    /// `MPI_Test_cancelled` reads).
    fn MPI_Status_set_cancelled / PMPI_Status_set_cancelled(status: *mut Status, flag: c_int) on abi::COMM_WORLD => {
        let p = status_arg(status)?;
        // SAFETY: as in `MPI_Status_set_source`.
        std::ptr::addr_of_mut!((*p).private[2]).write((flag != 0) as c_int);
        Ok(())
    }
}

mpi_fn! {
    /// The status's `MPI_SOURCE` (MPI-4.1).
    fn MPI_Status_get_source / PMPI_Status_get_source(status: *const Status, source: *mut c_int) on abi::COMM_WORLD => {
        let s = read(status, "status")?;
        out(source, s.MPI_SOURCE, "source")
    }
}

mpi_fn! {
    /// The status's `MPI_TAG` (MPI-4.1).
    fn MPI_Status_get_tag / PMPI_Status_get_tag(status: *const Status, tag: *mut c_int) on abi::COMM_WORLD => {
        let s = read(status, "status")?;
        out(tag, s.MPI_TAG, "tag")
    }
}

mpi_fn! {
    /// The status's `MPI_ERROR` (MPI-4.1).
    fn MPI_Status_get_error / PMPI_Status_get_error(status: *const Status, error: *mut c_int) on abi::COMM_WORLD => {
        let s = read(status, "status")?;
        out(error, s.MPI_ERROR, "error")
    }
}
