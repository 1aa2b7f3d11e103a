//! The small collectives of collective I/O, waited for without spinning.
//!
//! A collective file call is mostly waiting for dosfs servers, which on a
//! job's own nodes run on the ranks' cores. The engine's waits spin for up
//! to a millisecond before they sleep (`DOS_SPIN_US`, [`crate::engine`]'s
//! crowding policy, which counts this job's ranks and the load, not the
//! servers' threads that are about to run): a rank that reaches a call's
//! allgather first, or the sync's barrier, spun on the core the servers
//! needed to finish the other rank's writes. Measured before this module
//! (`dosbench io --collective`, 2 ranks, 3 local servers, 1 MiB transfers):
//! `DOS_SPIN_US=0` alone raised collective write+sync by 1.2x, and by 1.8x
//! with write-behind (BENCHMARKS.md, "Session 12: the data path's queue
//! depth").
//!
//! So the summaries' allgather, the outcome's allreduce and the sync's
//! barrier of `dos::io` are the engine's nonblocking collectives on the
//! file's communicator, waited for here: a few progress passes, then the
//! transports' blocking wait (woken by the peer's doorbell or its network
//! message), never a spin. So are independent nonblocking operations
//! (`iwrite_at`, `iread_at`), whose own thread does the I/O and wakes the
//! engine when it is done. Their cost is a wake-up (tens of microseconds)
//! against calls that move a stripe (a millisecond of disk).

use crate::engine::ReqId;
use crate::Comm;

use super::error::{Error, Result};

/// Progress passes before a wait sleeps: a peer already there is met
/// without a system call, one that is not costs no spinning.
const POLLS: u32 = 16;

/// Waits for the engine request `id` of `comm` without spinning; on
/// failure the request is abandoned (its buffers are free once this
/// returns, whatever the outcome).
fn wait_quietly(comm: &Comm, id: ReqId) -> Result<()> {
    let eng = comm.eng.enter();
    let mut idle = 0u32;
    let res = loop {
        if eng.is_done(id) {
            return eng.take(id).map(drop).map_err(Error::from);
        }
        if eng.progress() > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < POLLS {
            continue;
        }
        if let Err(e) = eng.block(&mut || false) {
            break e;
        }
    };
    eng.abandon(id);
    Err(Error::from(res))
}

/// Waits until `req` (a request of engine `eng`) has completed, without
/// spinning: a progress pass, then the transports' blocking wait, which the
/// I/O thread's wake-up ends. The caller then collects it with
/// `Request::wait`, which returns at once, or, if the engine cannot wait
/// (a peer failed), gives the request up and reports that as it always did.
pub(super) fn wait_request(eng: &crate::engine::Shared, req: &crate::request::Request<'_>) {
    let mut idle = 0u32;
    while !req.test() {
        idle += 1;
        if idle < POLLS {
            continue;
        }
        if eng.enter().block(&mut || false).is_err() {
            return;
        }
    }
}

/// `MPI_Allgather` of `send` (every rank the same length) into `recv`.
pub(super) fn allgather(comm: &Comm, send: &[u64], recv: &mut [u64]) -> Result<()> {
    let n = comm.size();
    let k = send.len();
    if recv.len() != n * k {
        return Err(Error::InvalidArgument {
            op: "allgather",
            reason: format!("{} words received for {n} ranks of {k}", recv.len()),
        });
    }
    let counts = vec![k; n];
    let displs: Vec<usize> = (0..n).map(|r| r * k).collect();
    // SAFETY: `send` and `recv` outlive the request: `wait_quietly` returns
    // only after it was taken or abandoned, and neither is touched before.
    let id = unsafe { comm.iallgatherv_detached(send, recv, &counts, &displs)? };
    wait_quietly(comm, id)
}

/// `MPI_Allreduce` with `MPI_MAX` of `send` into `recv` (same length).
pub(super) fn allreduce_max(comm: &Comm, send: &[u64], recv: &mut [u64]) -> Result<()> {
    if recv.len() != send.len() {
        return Err(Error::InvalidArgument {
            op: "allreduce",
            reason: format!("{} words sent, {} received", send.len(), recv.len()),
        });
    }
    // SAFETY: as in `allgather`.
    let id = unsafe { comm.iallreduce_max_detached(send, recv)? };
    wait_quietly(comm, id)
}

/// `MPI_Barrier`, as an allreduce of one word.
pub(super) fn barrier(comm: &Comm) -> Result<()> {
    let mut out = [0u64];
    allreduce_max(comm, &[0], &mut out)
}
