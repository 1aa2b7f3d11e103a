//! Persistent requests (`MPI_Send_init` and its modes, `MPI_Recv_init`,
//! `MPI_Start`, `MPI_Startall`), matched probes (`MPI_Mprobe`,
//! `MPI_Improbe`, `MPI_Mrecv`, `MPI_Imrecv`) and `MPI_Cancel`.
//!
//! A persistent request is a handle of its own table (from
//! [`PERSIST_BASE`]) holding the arguments and, while active, the handle
//! of the ordinary request that `MPI_Start` made through `PMPI_Isend` (or
//! `Issend`, `Irsend`, `Ibsend`, `Irecv`). The `Wait`/`Test` families see
//! through it with [`around`]: the active request stands in for it, and
//! when that completes the persistent one becomes inactive again and keeps
//! its handle. An inactive one is treated as `MPI_REQUEST_NULL` is, as the
//! standard says.
//! A request of a derived datatype holds a committed copy of the type, so
//! the program may free its own after the `_init` call (the copy goes with
//! `MPI_Request_free`); noncontiguous types are packed by the `I*` call each
//! `MPI_Start` makes.
//!
//! `MPI_Mrecv` of a noncontiguous type receives into a temporary and
//! unpacks. `MPI_Imrecv` receives at once (the message is already matched,
//! so this waits only for its data) and returns a complete request.
//!
//! `MPI_Cancel` withdraws a receive not yet matched (its status then says
//! cancelled: `MPI_Test_cancelled`); a send is never cancelled (the
//! standard allows it: the send completes normally, and its status says
//! not cancelled).

use std::ffi::{c_int, c_void};

use dos::detached::DetachedRequest;

use crate::abi::{self, Handle, Status};
use crate::error::{err, R};
use crate::p2p::{complete_recv, recv_status, recv_tag, set_status, source_sel};
use crate::ptr::{dst, out, read};
use crate::state::{self, ReqKind};

/// The first handle of a persistent request.
pub(crate) const PERSIST_BASE: Handle = 0x5000_0000;
/// The first handle of a matched message.
pub(crate) const MESSAGE_BASE: Handle = 0x6000_0000;

const MESSAGE_NULL: Handle = 0x128;
const MESSAGE_NO_PROC: Handle = 0x129;

/// True if `h` may be a persistent request (no state visit).
#[inline]
pub(crate) fn is_persistent(h: Handle) -> bool {
    (PERSIST_BASE..MESSAGE_BASE).contains(&h)
}

/// What `MPI_Start` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Send,
    Ssend,
    Rsend,
    Bsend,
    Recv,
    /// A persistent collective (`MPI_Bcast_init`, ...): its starter.
    Coll,
}

/// What starts a persistent collective: the nonblocking collective with the
/// arguments given at init, storing its request.
pub(crate) type Starter = std::rc::Rc<dyn Fn(*mut Handle) -> c_int>;

/// A persistent request: its arguments and the active request, if any.
pub(crate) struct Persist {
    op: Op,
    buf: usize,
    count: c_int,
    dt: Handle,
    peer: c_int,
    tag: c_int,
    comm: Handle,
    active: Option<Handle>,
    /// The starter of a persistent collective.
    coll: Option<Starter>,
}

/// Runs `f` on `reqs` with each persistent request replaced by its active
/// request (or `MPI_REQUEST_NULL` when inactive); afterwards, a persistent
/// request whose stand-in `f` completed (set to `MPI_REQUEST_NULL`) is
/// inactive, and every persistent handle is put back.
pub(crate) fn around<T>(reqs: &mut [Handle], f: impl FnOnce(&mut [Handle]) -> R<T>) -> R<T> {
    if !reqs.iter().any(|&h| is_persistent(h)) {
        return f(reqs);
    }
    let orig = reqs.to_vec();
    state::with(|st| {
        for h in reqs.iter_mut().filter(|h| is_persistent(**h)) {
            let p = st
                .persist
                .get(h)
                .ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}")))?;
            *h = p.active.unwrap_or(abi::REQUEST_NULL);
        }
        Ok(())
    })
    .inspect_err(|_| reqs.copy_from_slice(&orig))?;
    let r = f(reqs);
    let _ = state::with(|st| {
        for (h, o) in reqs.iter_mut().zip(&orig) {
            if is_persistent(*o) {
                if *h == abi::REQUEST_NULL {
                    if let Some(p) = st.persist.get_mut(o) {
                        p.active = None;
                    }
                }
                *h = *o;
            }
        }
        Ok(())
    });
    r
}

/// The active request of persistent request `h` (`None`: inactive), or `h`
/// itself if it is not persistent.
pub(crate) fn stand_in(h: Handle) -> R<Option<Handle>> {
    if !is_persistent(h) {
        return Ok(Some(h));
    }
    state::with(|st| {
        st.persist
            .get(&h)
            .map(|p| p.active)
            .ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}")))
    })
}

/// Removes persistent request `h`; its active request, if any.
pub(crate) fn remove(h: Handle) -> R<Option<Handle>> {
    let p = state::with(|st| {
        st.persist
            .remove(&h)
            .ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}")))
    })?;
    if p.op != Op::Coll && crate::datatype::in_table(p.dt) {
        // The request's own copy of a derived type (see `init`).
        crate::datatype::free(p.dt)?;
    }
    Ok(p.active)
}

/// Checks the arguments as the nonblocking call would, then registers.
///
/// # Safety
/// `request` valid for a write (or null).
#[allow(clippy::too_many_arguments)]
unsafe fn init(
    op: Op,
    buf: *const c_void,
    count: c_int,
    dt: Handle,
    peer: c_int,
    tag: c_int,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    let c = state::comm(comm)?;
    // A noncontiguous type is fine: `MPI_Start` starts `MPI_Isend`/`MPI_Irecv`,
    // which pack and unpack.
    let len = match crate::datatype::layout(count, dt)? {
        crate::datatype::Layout::Dense(n) => n,
        crate::datatype::Layout::Packed { len, .. } => len,
    };
    if len > 0 && buf.is_null() {
        return Err(err(abi::ERR_BUFFER, format!("null buffer for {len} bytes")));
    }
    if op == Op::Recv {
        recv_tag(tag)?;
        source_sel(&c, peer)?;
    } else {
        crate::p2p::send_tag(tag)?;
        crate::p2p::dest_rank(&c, peer)?;
    }
    // A derived type may be freed while the request lives (MPI: the
    // request keeps using it): the request holds a committed copy of its own.
    let dt = if crate::datatype::in_table(dt) {
        let copy = crate::datatype::insert((*crate::datatype::ty(dt)?).clone());
        crate::datatype::commit(copy)?;
        copy
    } else {
        dt
    };
    let p = Persist {
        op,
        buf: buf as usize,
        count,
        dt,
        peer,
        tag,
        comm,
        active: None,
        coll: None,
    };
    let h = state::with(|st| Ok(st.persist.insert(p)))?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

macro_rules! send_init {
    ($($mpi:ident / $pmpi:ident => $op:expr, $what:literal;)*) => {$(
        mpi_fn! {
            #[doc = $what]
            fn $mpi / $pmpi(buf: *const c_void, count: c_int, datatype: Handle, dest: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
                init($op, buf, count, datatype, dest, tag, comm, request)
            }
        }
    )*};
}

send_init! {
    MPI_Send_init / PMPI_Send_init => Op::Send, "A persistent standard send: `MPI_Start` starts it.";
    MPI_Ssend_init / PMPI_Ssend_init => Op::Ssend, "A persistent synchronous send: `MPI_Start` starts it.";
    MPI_Rsend_init / PMPI_Rsend_init => Op::Rsend, "A persistent ready send: `MPI_Start` starts it.";
    MPI_Bsend_init / PMPI_Bsend_init => Op::Bsend, "A persistent buffered send: `MPI_Start` starts it.";
}

mpi_fn! {
    /// A persistent receive: `MPI_Start` starts it.
    fn MPI_Recv_init / PMPI_Recv_init(buf: *mut c_void, count: c_int, datatype: Handle, source: c_int, tag: c_int, comm: Handle, request: *mut Handle) on comm => {
        init(Op::Recv, buf, count, datatype, source, tag, comm, request)
    }
}

/// Registers a persistent collective on `comm` that `start` starts (the
/// arguments checked by the caller); stores its handle.
///
/// # Safety
/// `request` valid for a write (or null).
pub(crate) unsafe fn coll_init(comm: Handle, request: *mut Handle, start: Starter) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    state::comm(comm)?;
    let p = Persist {
        op: Op::Coll,
        buf: 0,
        count: 0,
        dt: abi::DATATYPE_NULL,
        peer: 0,
        tag: 0,
        comm,
        active: None,
        coll: Some(start),
    };
    let h = state::with(|st| Ok(st.persist.insert(p)))?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

/// Starts persistent request `h`.
///
/// # Safety
/// The buffer given at init valid as the standard requires.
unsafe fn start(h: Handle) -> R<()> {
    let p = state::with(|st| {
        let p = st
            .persist
            .get(&h)
            .ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}")))?;
        if p.active.is_some() {
            return Err(err(
                abi::ERR_REQUEST,
                "the persistent request is already active",
            ));
        }
        Ok((
            p.op,
            p.buf,
            p.count,
            p.dt,
            p.peer,
            p.tag,
            p.comm,
            p.coll.clone(),
        ))
    })?;
    let (op, buf, count, dt, peer, tag, comm, coll) = p;
    let mut inner: Handle = abi::REQUEST_NULL;
    // SAFETY: the arguments were checked at init; the buffer is the caller's.
    let rc = unsafe {
        let b = buf as *mut c_void;
        match op {
            Op::Send => crate::p2p::PMPI_Isend(b, count, dt, peer, tag, comm, &mut inner),
            Op::Ssend => crate::p2p::PMPI_Issend(b, count, dt, peer, tag, comm, &mut inner),
            Op::Rsend => crate::p2p::PMPI_Irsend(b, count, dt, peer, tag, comm, &mut inner),
            Op::Bsend => crate::p2p::PMPI_Ibsend(b, count, dt, peer, tag, comm, &mut inner),
            Op::Recv => crate::p2p::PMPI_Irecv(b, count, dt, peer, tag, comm, &mut inner),
            Op::Coll => match &coll {
                Some(f) => f(&mut inner),
                None => abi::ERR_INTERN,
            },
        }
    };
    if rc != abi::SUCCESS {
        return Err(err(rc, "starting the persistent request failed"));
    }
    state::with(|st| {
        if let Some(p) = st.persist.get_mut(&h) {
            p.active = Some(inner);
        }
        Ok(())
    })
}

mpi_fn! {
    /// Starts a persistent request.
    fn MPI_Start / PMPI_Start(request: *mut Handle) on abi::COMM_WORLD => {
        start(read(request, "request")?)
    }
}

mpi_fn! {
    /// Starts persistent requests, in order.
    fn MPI_Startall / PMPI_Startall(count: c_int, array_of_requests: *mut Handle) on abi::COMM_WORLD => {
        let n = crate::datatype::count(count)?;
        if n > 0 && array_of_requests.is_null() {
            return Err(err(abi::ERR_ARG, "null array of requests"));
        }
        for i in 0..n {
            start(array_of_requests.add(i).read())?;
        }
        Ok(())
    }
}

mpi_fn! {
    /// Cancels a pending receive (a send is never cancelled; an inactive
    /// persistent request or a completed one: nothing to do).
    fn MPI_Cancel / PMPI_Cancel(request: *mut Handle) on abi::COMM_WORLD => {
        let h = read(request, "request")?;
        if h == abi::REQUEST_NULL {
            return Err(err(abi::ERR_REQUEST, "MPI_REQUEST_NULL cannot be cancelled"));
        }
        let Some(h) = stand_in(h)? else {
            return Ok(());
        };
        state::with(|st| {
            let e = st
                .reqs
                .get_mut(&h)
                .ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}")))?;
            if let ReqKind::Recv { source, tag } = e.kind {
                if e.outcome.is_none() && !e.raw.test() {
                    let raw = std::mem::replace(&mut e.raw, DetachedRequest::completed());
                    raw.abandon();
                    let mut s = Status::new(source, tag, abi::SUCCESS, 0);
                    s.private[2] = 1;
                    e.outcome = Some(Box::new((s, None)));
                }
            }
            Ok(())
        })
    }
}

// ----- matched probes -----

/// A matched message and the communicator it came on.
pub(crate) struct Matched {
    msg: dos::Message,
}

/// Registers a matched message (or `MPI_MESSAGE_NO_PROC`) in `message`.
///
/// # Safety
/// `message` valid for a write.
unsafe fn put_message(m: Option<dos::Message>, message: *mut Handle) -> R<()> {
    let h = match m {
        None => MESSAGE_NO_PROC,
        Some(msg) => state::with(|st| Ok(st.messages.insert(Matched { msg })))?,
    };
    // SAFETY: the caller's contract.
    unsafe { out(message, h, "message") }
}

mpi_fn! {
    /// Waits for a matching message and takes it out of the matching queue.
    fn MPI_Mprobe / PMPI_Mprobe(source: c_int, tag: c_int, comm: Handle, message: *mut Handle, status: *mut Status) on comm => {
        if message.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for message"));
        }
        let c = state::comm(comm)?;
        let t = recv_tag(tag)?;
        match source_sel(&c, source)? {
            None => {
                set_status(status, Status::proc_null());
                put_message(None, message)
            }
            Some(s) => {
                let m = c.mprobe(s, t)?;
                set_status(status, recv_status(m.status()));
                put_message(Some(m), message)
            }
        }
    }
}

mpi_fn! {
    /// Takes a matching message out of the matching queue if one has arrived.
    fn MPI_Improbe / PMPI_Improbe(source: c_int, tag: c_int, comm: Handle, flag: *mut c_int, message: *mut Handle, status: *mut Status) on comm => {
        if message.is_null() || flag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for message or flag"));
        }
        let c = state::comm(comm)?;
        let t = recv_tag(tag)?;
        match source_sel(&c, source)? {
            None => {
                out(flag, 1, "flag")?;
                set_status(status, Status::proc_null());
                put_message(None, message)
            }
            Some(s) => match c.improbe(s, t)? {
                None => out(flag, 0, "flag"),
                Some(m) => {
                    out(flag, 1, "flag")?;
                    set_status(status, recv_status(m.status()));
                    put_message(Some(m), message)
                }
            },
        }
    }
}

/// Receives matched message `*message` into `buf`; sets the handle to
/// `MPI_MESSAGE_NULL`.
///
/// # Safety
/// `buf` valid for `count` elements of `dt`, `message` for a handle,
/// `status` for a status (or null).
pub(crate) unsafe fn mrecv(
    buf: *mut c_void,
    count: usize,
    dt: Handle,
    message: *mut Handle,
    status: *mut Status,
) -> R<()> {
    // SAFETY: the caller's contract.
    let h = unsafe { read(message, "message")? };
    let (n, dt) = crate::p2p::null_peer_type(
        if h == MESSAGE_NO_PROC {
            abi::PROC_NULL
        } else {
            0
        },
        count,
        dt,
    );
    let l = crate::datatype::layout_n(n, dt)?;
    if h == MESSAGE_NO_PROC {
        // SAFETY: the caller's contract.
        unsafe {
            set_status(status, Status::proc_null());
            return out(message, MESSAGE_NULL, "message");
        }
    }
    // A noncontiguous type: received into a temporary, unpacked after.
    let mut tmp = Vec::new();
    let b = match &l {
        // SAFETY: the caller's contract.
        crate::datatype::Layout::Dense(len) => unsafe { dst(buf, *len)? },
        crate::datatype::Layout::Packed { len, .. } => {
            tmp.resize(*len, 0);
            &mut tmp[..]
        }
    };
    let m = state::with(|st| {
        st.messages
            .remove(&h)
            .ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid message handle {h:#x}")))
    })?;
    let (source, tag) = {
        let s = m.msg.status();
        (s.source as c_int, s.tag)
    };
    let c = state::comm(abi::COMM_SELF)?;
    // SAFETY: the caller's contract.
    unsafe { out(message, MESSAGE_NULL, "message")? };
    let r = c.mrecv(m.msg, b);
    // SAFETY: the caller's contract.
    unsafe { complete_recv(r, Some((&l, &tmp)), buf, source, tag, status) }
}

mpi_fn! {
    /// Receives a matched message.
    fn MPI_Mrecv / PMPI_Mrecv(buf: *mut c_void, count: c_int, datatype: Handle, message: *mut Handle, status: *mut Status) on abi::COMM_WORLD => {
        mrecv(buf, crate::datatype::count(count)?, datatype, message, status)
    }
}

mpi_fn! {
    /// Receives a matched message (at once: it is matched already) and
    /// returns a complete request carrying its status.
    fn MPI_Imrecv / PMPI_Imrecv(buf: *mut c_void, count: c_int, datatype: Handle, message: *mut Handle, request: *mut Handle) on abi::COMM_WORLD => {
        imrecv(buf, crate::datatype::count(count)?, datatype, message, request)
    }
}

/// `MPI_Imrecv` of `count` elements.
///
/// # Safety
/// As [`mrecv`]; `request` valid for a write.
pub(crate) unsafe fn imrecv(
    buf: *mut c_void,
    count: usize,
    datatype: Handle,
    message: *mut Handle,
    request: *mut Handle,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    let mut s = Status::empty();
    // SAFETY: the caller's contract.
    let r = unsafe { mrecv(buf, count, datatype, message, &mut s) };
    let h = state::with(|st| {
        Ok(st.reqs.insert(state::ReqEntry {
            raw: DetachedRequest::completed(),
            kind: ReqKind::Send,
            comm: abi::COMM_WORLD,
            outcome: Some(Box::new((s, r.err()))),
            after: None,
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}
