//! Shared-memory backend: every rank of a node maps one segment.
//!
//! * [`wire`]: the segment layout (a versioned `repr(C)` ABI). It grows
//!   linearly with the ranks of the node: rings come from a pool, one carved
//!   when a rank first sends to a peer and announced in the peer's inbox, so
//!   memory follows the pairs that talk (up to [`wire::MAX_RANKS`] ranks).
//!   Besides the rings, the segment lends the layer above a slot area whose
//!   meaning it decides ([`wire::Slot`]; dos's node-level collectives).
//! * [`mem`]: creating and attaching the segment (a memfd, so it vanishes with
//!   its last user) through the memfd/mmap helpers that core's node-shared
//!   window memory uses too, and single-copy transfers with CMA
//!   (`process_vm_readv`/`process_vm_writev`).
//! * `ep`: the lock-free single-producer/single-consumer rings, one per ordered
//!   pair of ranks that talks.
//! * `iface`: [`ShmIface`], one rank's endpoint, and the [`DoorbellBridge`]
//!   that lets a rank sleep in a network transport's wait and still hear its
//!   local peers (for any network backend with a waker).
//! * `progress`: the futex doorbell that lets an idle rank block.
//!
//! ```
//! use std::sync::Arc;
//! use dos_transport::shm::{Segment, ShmIface};
//! use dos_transport::{ActiveMessages, Event, Progress};
//! let seg = Arc::new(Segment::create(2, 1 << 16).unwrap());
//! let a = ShmIface::new(seg.clone(), 0).unwrap();
//! let b = ShmIface::new(seg, 1).unwrap();
//! a.am_send(1, 3, &[1, 2], &[3]).unwrap();
//! let mut seen = 0;
//! b.progress(|ev| {
//!     let Event::Am { src, id, data } = ev else { panic!() };
//!     assert_eq!((src, id, data), (0, 3, &[1u8, 2, 3][..]));
//!     seen += 1;
//! });
//! assert_eq!(seen, 1);
//! ```

mod ep;
mod iface;
pub mod mem;
mod progress;
pub mod wire;

pub use iface::{DoorbellBridge, ShmIface, ShmWaker};
pub use mem::Segment;
pub use progress::{futex_wait, futex_wake};
