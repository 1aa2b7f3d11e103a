//! Buffered sends and the buffer they draw on: `MPI_Buffer_attach`,
//! `MPI_Buffer_detach` (and their `_c` forms), MPI-4.1's `MPI_Buffer_flush`
//! and `MPI_Buffer_iflush`.
//!
//! A buffered send (`MPI_Bsend`, `MPI_Ibsend`, a started `MPI_Bsend_init`)
//! copies its data into memory of dos's own and sends the copy in the
//! background, so it completes at once whatever the receiver does. The
//! attached buffer bounds what may be in flight that way, as the standard
//! says: each pending buffered send holds its size plus
//! `MPI_BSEND_OVERHEAD` bytes of it until it completes, and a send that
//! does not fit in what is left is `MPI_ERR_BUFFER`. With no buffer
//! attached, or `MPI_BUFFER_AUTOMATIC` attached, buffered sends are not
//! bounded (MPI-4.1's automatic buffering; MPI-4.0 called a buffered send
//! without a buffer erroneous, and dos lets it through).
//!
//! `MPI_Buffer_detach` and `MPI_Buffer_flush` wait for every pending
//! buffered send; `MPI_Buffer_iflush` returns a request that completes
//! when they have (their share of the buffer is held until then). The
//! per-communicator and per-session buffers of MPI-4.1
//! (`MPI_Comm_attach_buffer`, ...) are not provided.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dos::detached::DetachedRequest;
use dos::Comm;

use crate::abi::{self, Handle};
use crate::error::{err, R};
use crate::ptr::out;
use crate::request::After;
use crate::state::{self, ReqEntry, ReqKind};

/// `MPI_BSEND_OVERHEAD`: what each pending buffered send holds of the
/// attached buffer beyond its data.
pub(crate) const OVERHEAD: usize = 512;

/// `MPI_BUFFER_AUTOMATIC`.
const AUTOMATIC: usize = 2;

/// The buffered sends in flight and the buffer that bounds them.
#[derive(Default)]
pub(crate) struct Bsends {
    /// Pending buffered sends, each with its copy of the data.
    pub pending: Vec<(DetachedRequest, Vec<u8>)>,
    /// The attached buffer (address, size in bytes), if any.
    pub attached: Option<(usize, usize)>,
    /// Bytes held by the sends of `MPI_Buffer_iflush` requests not yet
    /// completed (those sends have moved into the requests).
    flushing: Arc<AtomicUsize>,
}

impl Bsends {
    /// Drops the sends that have completed.
    pub fn reap(&mut self) {
        self.pending.retain(|(r, _)| !r.test());
    }

    /// Bytes of the attached buffer in use.
    fn used(&self) -> usize {
        self.pending
            .iter()
            .map(|(_, d)| d.len() + OVERHEAD)
            .sum::<usize>()
            + self.flushing.load(Ordering::Acquire)
    }

    /// Checks that a buffered send of `len` bytes fits in the attached buffer.
    fn admit(&mut self, len: usize) -> R<()> {
        let Some((addr, size)) = self.attached else {
            return Ok(());
        };
        if addr == AUTOMATIC {
            return Ok(());
        }
        self.reap();
        let used = self.used();
        if used + len + OVERHEAD > size {
            return Err(err(
                abi::ERR_BUFFER,
                format!(
                    "a buffered send of {len} bytes (+{OVERHEAD}) does not fit in the attached buffer: {used} of {size} bytes in use"
                ),
            ));
        }
        Ok(())
    }
}

/// Starts a buffered send of a copy of `data` to `dest`: it completes in
/// the background. `MPI_ERR_BUFFER` if the attached buffer has no room.
pub(crate) fn start(c: &Comm, data: &[u8], dest: usize, tag: i32) -> R<()> {
    state::with(|st| st.bsend.admit(data.len()))?;
    let copy = data.to_vec();
    // SAFETY: the copy's heap buffer moves with the `Vec` into the state,
    // which keeps it until the request completes.
    let r = unsafe { c.isend_detached(copy.as_ptr(), copy.len(), dest, tag)? };
    state::with(|st| {
        st.bsend.pending.push((r, copy));
        Ok(())
    })
}

/// Takes every pending buffered send out of the state.
fn take_pending() -> R<Vec<(DetachedRequest, Vec<u8>)>> {
    state::with(|st| Ok(std::mem::take(&mut st.bsend.pending)))
}

/// Waits for every pending buffered send (outside the state's borrow).
fn flush() -> R<()> {
    for (r, copy) in take_pending()? {
        r.wait()?;
        drop(copy);
    }
    Ok(())
}

/// Size argument of `MPI_Buffer_attach(_c)`, and the buffer.
fn attach(buffer: *mut c_void, size: i64) -> R<()> {
    let size = usize::try_from(size)
        .map_err(|_| err(abi::ERR_ARG, format!("negative buffer size {size}")))?;
    let addr = buffer as usize;
    if buffer.is_null() && size > 0 {
        return Err(err(abi::ERR_BUFFER, "null buffer"));
    }
    state::with(|st| {
        if st.bsend.attached.is_some() {
            return Err(err(abi::ERR_BUFFER, "a buffer is already attached"));
        }
        st.bsend.attached = Some((addr, if addr == AUTOMATIC { 0 } else { size }));
        Ok(())
    })
}

/// Waits for every buffered send, then detaches the buffer: its address
/// and size (null and 0 if none was attached).
fn detach() -> R<(usize, usize)> {
    flush()?;
    state::with(|st| Ok(st.bsend.attached.take().unwrap_or((0, 0))))
}

mpi_fn! {
    /// Attaches the buffer that bounds buffered sends (`MPI_BUFFER_AUTOMATIC`:
    /// none); `MPI_ERR_BUFFER` if one is attached already.
    fn MPI_Buffer_attach / PMPI_Buffer_attach(buffer: *mut c_void, size: c_int) on abi::COMM_WORLD => {
        attach(buffer, size.into())
    }
}

mpi_fn! {
    /// `MPI_Buffer_attach` with an `MPI_Count` size.
    fn MPI_Buffer_attach_c / PMPI_Buffer_attach_c(buffer: *mut c_void, size: i64) on abi::COMM_WORLD => {
        attach(buffer, size)
    }
}

mpi_fn! {
    /// Waits for every buffered send, then returns the attached buffer.
    fn MPI_Buffer_detach / PMPI_Buffer_detach(buffer_addr: *mut c_void, size: *mut c_int) on abi::COMM_WORLD => {
        if buffer_addr.is_null() || size.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for buffer_addr or size"));
        }
        let (addr, n) = detach()?;
        // The size was an int when attached through this interface; a
        // larger one (attached with `_c`) is reported as INT_MAX.
        out(buffer_addr.cast::<usize>(), addr, "buffer_addr")?;
        out(size, c_int::try_from(n).unwrap_or(c_int::MAX), "size")
    }
}

mpi_fn! {
    /// `MPI_Buffer_detach` with an `MPI_Count` size.
    fn MPI_Buffer_detach_c / PMPI_Buffer_detach_c(buffer_addr: *mut c_void, size: *mut i64) on abi::COMM_WORLD => {
        if buffer_addr.is_null() || size.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for buffer_addr or size"));
        }
        let (addr, n) = detach()?;
        out(buffer_addr.cast::<usize>(), addr, "buffer_addr")?;
        out(size, n as i64, "size")
    }
}

mpi_fn! {
    /// Waits for every pending buffered send (MPI-4.1).
    fn MPI_Buffer_flush / PMPI_Buffer_flush() on abi::COMM_WORLD => {
        flush()
    }
}

/// Gives back, when dropped, what a flush request holds of the buffer.
struct Held {
    flushing: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.flushing.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

mpi_fn! {
    /// A request that completes when every buffered send pending now has
    /// (MPI-4.1). Its transfers are those sends: it tests complete once the
    /// last one started has; waiting for it then waits for the others.
    fn MPI_Buffer_iflush / PMPI_Buffer_iflush(request: *mut Handle) on abi::COMM_WORLD => {
        if request.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for request"));
        }
        let (mut sends, flushing) = state::with(|st| {
            st.bsend.reap();
            Ok((std::mem::take(&mut st.bsend.pending), st.bsend.flushing.clone()))
        })?;
        let Some((last, last_copy)) = sends.pop() else {
            return crate::p2p::new_request(DetachedRequest::completed(), ReqKind::Send, abi::COMM_WORLD, request);
        };
        let bytes = sends.iter().map(|(_, d)| d.len() + OVERHEAD).sum::<usize>() + last_copy.len() + OVERHEAD;
        flushing.fetch_add(bytes, Ordering::AcqRel);
        let held = Held { flushing, bytes };
        let after: After = Box::new(move |_| {
            let r = sends.into_iter().try_for_each(|(r, copy)| {
                r.wait()?;
                drop(copy);
                Ok::<(), dos::Error>(())
            });
            drop(last_copy);
            drop(held);
            r.map_err(crate::error::Error::from)
        });
        let h = state::with(|st| {
            Ok(st.reqs.insert(ReqEntry {
                raw: last,
                kind: ReqKind::Send,
                comm: abi::COMM_WORLD,
                outcome: None,
                after: Some(after),
            }))
        })?;
        out(request, h, "request")
    }
}
