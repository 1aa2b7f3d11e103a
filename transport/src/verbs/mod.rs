//! Verbs backend: the transport contract over libibverbs RC queue pairs
//! (InfiniBand and RoCE devices), behind the cargo feature `verbs`. iWARP
//! devices are refused: their queue pairs connect through rdma_cm.
//!
//! * [`wire`]: the published address (LID/GID, and per peer the QPN and first
//!   PSN of the queue pair meant for it), the packed remote key (address,
//!   length, rkey) and the immediate data of every message; decoders never panic.
//! * `connect`: typed bring-up, [`VerbsBuilder::open`] (a device) →
//!   [`VerbsBuilder::prepare`] (one RC queue pair per peer, in INIT;
//!   [`Prepared::address`] goes to the peers through the wire-up exchange) →
//!   [`Prepared::connect`] (INIT → RTR → RTS; nothing is exchanged on the
//!   network, so the layer above passes a barrier before sending).
//! * `iface`: [`VerbsIface`], its peers and buffers, and [`crate::ActiveMessages`].
//! * `mem`: the user's registrations, loans of zero-copy operations, and
//!   [`crate::Rma`].
//! * `progress`: completion handling, [`crate::Progress`], and blocking: epoll
//!   over the completion channel and an eventfd ([`Waker`]), through the crate's
//!   rustix-based helpers (`poll.rs`).
//! * `ffi`: owners of the libibverbs objects; every return code is checked.
//!
//! The binding is `rdma-mummy-sys` (the low-level crate of the `sideway`
//! project): it loads `libibverbs.so.1` at run time, so a program built with
//! this feature starts on hosts without rdma-core, where [`devices`] is empty
//! and [`VerbsBuilder::open`] fails with `NotFound`. README.md says why this
//! binding and not another.
//!
//! How the contract maps onto verbs:
//!
//! * Active messages: SEND with immediate data (the handler id and returned
//!   credits) on the peer's queue pair, into receive buffers of `max_am`
//!   bytes posted per connection. Messages up to the device's inline size go
//!   inline from the caller's slices; larger ones are copied into one of the
//!   shared registered send buffers. `am_send` says `Busy` when the peer has
//!   no credit left (all its buffers hold unconsumed messages), the queue
//!   pair is full, or no send buffer is free. `am_send_zc` sends the body in
//!   place when it lies in memory registered with [`crate::Rma::mem_register`]
//!   (then `Sent::Pending` and `Event::SendDone` on completion), and copies
//!   otherwise.
//! * Progress: receive completions are delivered in queue order (per-peer
//!   order is RC order) and their buffers reposted; send completions free
//!   buffers and report `SendDone`. `wait` polls for a short time
//!   ([`VerbsBuilder::spin`]), then arms both completion queues and sleeps
//!   in `epoll_wait` on the completion channel.
//! * RMA: `mem_register` is `ibv_reg_mr` with local write, remote read and
//!   remote write. `get` and `put` are RDMA READ and WRITE that complete in the
//!   call (the completion queue is polled until their completion), straight
//!   from or into registered memory, else through a staging buffer.
//!   `put_zc` is an RDMA WRITE: from registered memory in place
//!   (`Sent::Pending`, `SendDone` on completion), else inline or from a
//!   send buffer (`Sent::Done`); at most `max_am` bytes, like tcp. A put is
//!   ordered before later sends on the same queue pair, so its bytes are in
//!   place when an active message sent after it arrives. Bounds are checked
//!   at the origin against the key; the target's device checks them again.
//!   No atomics yet (`Caps.atomics == false`).
//! * Failures: a completion with an error status (the peer's process or host
//!   died: retries exhausted; a put or get with a stale key: remote access
//!   error) moves the queue pair to the error state; its work requests are
//!   flushed (`SendDone` for each loan), then [`crate::Event::Disconnected`]
//!   is reported once and sends fail with [`crate::Error::PeerUnreachable`].
//!   Unlike tcp, an access with a stale key breaks the connection (the
//!   device does that); the memory is never touched.
//!
//! Costs: per connection `recv_depth + reserve` receive buffers of `max_am`
//! bytes (with the defaults 37 × 64 KiB), registered and pinned; per
//! endpoint `send_slots + 1` more. A message costs one `ibv_post_send`
//! (plus a copy above the inline size) and one completion on each side.

mod connect;
mod ffi;
mod iface;
mod mem;
mod progress;
pub mod wire;

pub use connect::{
    Prepared, VerbsBuilder, DEFAULT_MAX_INLINE, DEFAULT_PORT, DEFAULT_RECV_DEPTH,
    DEFAULT_SEND_DEPTH, DEFAULT_SEND_SLOTS,
};
pub use iface::{VerbsIface, DEFAULT_LINGER, DEFAULT_MAX_AM, DEFAULT_SPIN};
pub use progress::Waker;

/// The names of the RDMA devices on this host, in libibverbs' order.
///
/// Empty when there is none, also when libibverbs is not installed or the
/// kernel lacks RDMA support. Never panics. For `dosrun --info`.
pub fn devices() -> Vec<String> {
    ffi::DeviceList::get()
        .map(|l| l.names())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Caps, Error};

    #[test]
    fn caps_are_consistent() {
        for (max_am, inline) in [(DEFAULT_MAX_AM, 0), (DEFAULT_MAX_AM, 128), (1024, 4096)] {
            let c: Caps = VerbsIface::caps_with(max_am, inline);
            assert!(c.am && c.rma && c.put_zc && c.inter_node);
            assert!(!c.atomics, "no atomics are implemented");
            assert_eq!(c.max_am, max_am);
            assert!(c.max_inline <= c.max_am);
            assert!(c.put_zc || !c.rma, "rma implies put_zc");
        }
    }

    #[test]
    fn devices_never_panics() {
        let d = devices();
        // Without the kernel's RDMA class there can be no device.
        if std::fs::read_dir("/sys/class/infiniband").is_err() {
            assert!(d.is_empty(), "{d:?}");
        }
        assert_eq!(devices(), d, "stable between calls");
    }

    #[test]
    fn unknown_device_is_not_found() {
        let e = VerbsBuilder::open(Some("dos-no-such-rdma-device")).unwrap_err();
        match e {
            Error::Sys { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}");
                assert!(source.to_string().contains("dos-no-such-rdma-device"));
            }
            e => panic!("not a NotFound: {e:?}"),
        }
    }

    #[test]
    fn no_device_here_is_not_found() {
        if !devices().is_empty() {
            return;
        }
        match VerbsBuilder::open(None) {
            Err(Error::Sys { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            r => panic!("opened a device where there is none: {r:?}"),
        }
    }
}
