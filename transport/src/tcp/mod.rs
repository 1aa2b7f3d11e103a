//! TCP backend: ranks on different hosts, one connection per pair.
//!
//! * [`wire`]: the frame header (`magic, version, id, length`), the published
//!   address and the handshake context; golden-byte tested, decoders never panic.
//! * `connect`: typed bring-up, [`TcpIface::builder`] → [`TcpBuilder::prepare`]
//!   (listening; [`Prepared::address`] goes to the peers through the wire-up
//!   exchange) → [`Prepared::connect`] (every connection up and authenticated with
//!   the job's [`crate::auth::Secret`]). The lower index connects, the higher accepts.
//! * `ep`: one connection: a non-blocking socket with `TCP_NODELAY`, the send
//!   queue for what the socket could not take, the partial frame received.
//! * `iface`: [`TcpIface`], with [`crate::ActiveMessages`] and [`crate::Progress`].
//! * `progress`: epoll over the sockets and an eventfd ([`Waker`]) for the owner;
//!   the flusher thread and its own epoll set for output (both through the
//!   crate's rustix-based epoll and eventfd helpers, `poll.rs`).
//!
//! Capabilities: active messages only (`Caps.rma == false`; `mem_register`, `get`
//! and `put` return [`crate::Error::Unsupported`]): the layer above moves large
//! data with pipelined active messages, as the wire has no one-sided access.
//!
//! Costs: a message goes out with one `sendmsg` of the frame header and the
//! caller's two slices, without a copy, whenever nothing is queued before it for
//! that peer; only what the socket does not take is copied into the peer's queue
//! (and `am_send` says `Busy` when that queue exceeds a bound, 4 MiB by default).
//! Receiving costs one `epoll_wait` per `progress` and one `recv` of up to 256 KiB
//! per readable peer; frames are delivered straight from that buffer. Memory per
//! peer is a few words plus what is in flight (a peer that sent a frame larger
//! than 32 KiB keeps a reassembly buffer of that size).
//!
//! Queued bytes are sent by a flusher thread of the endpoint, which sleeps in
//! `epoll_wait` unless a socket pushed back. Decision: the contract lets a sender
//! stop calling into its endpoint after `am_send` returned `Ok` (the shm rings
//! need nothing more), and a rank deep in a computation should not hold up a peer
//! that waits for its data; the alternatives were making the caller flush (a
//! contract change, and no overlap of computation and communication) or blocking
//! in `am_send` until a partial frame is out (deadlocks when two ranks push to each
//! other). The price is an uncontended mutex per send, noise next to the syscall.
//!
//! Failures: a peer that closes its connection, resets it, or sends something
//! that is not a frame (bad magic or version, a length above `max_am`) has its
//! connection closed and is reported once as [`crate::Event::Disconnected`]; later
//! sends to it fail with [`crate::Error::PeerUnreachable`]. A hung peer whose host
//! is alive is not detected here (the launcher's heartbeats do that).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Duration;
//! use dos_transport::auth::Secret;
//! use dos_transport::tcp::TcpIface;
//! use dos_transport::{ActiveMessages, Event, Progress};
//!
//! let secret = Secret::generate().unwrap();
//! let ip = Ipv4Addr::LOCALHOST.into();
//! let a = TcpIface::prepare(0, 2, ip, &secret).unwrap();
//! let b = TcpIface::prepare(1, 2, ip, &secret).unwrap();
//! // The addresses travel through the job's key-value exchange.
//! let addrs = vec![Some(a.address()), Some(b.address())];
//! let addrs2 = addrs.clone();
//! let t = std::thread::spawn(move || b.connect(&addrs2, Duration::from_secs(10)).unwrap());
//! let a = a.connect(&addrs, Duration::from_secs(10)).unwrap();
//! let b = t.join().unwrap();
//!
//! a.am_send(1, 3, &[1, 2], &[3]).unwrap();
//! let mut got = Vec::new();
//! while got.is_empty() {
//!     b.wait(Duration::from_secs(1)).unwrap();
//!     b.progress(|ev| {
//!         if let Event::Am { src, id, data } = ev {
//!             got.push((src, id, data.to_vec()));
//!         }
//!     });
//! }
//! assert_eq!(got, vec![(0, 3, vec![1, 2, 3])]);
//! ```

mod connect;
mod ep;
mod iface;
mod progress;
pub mod wire;

pub use connect::{Prepared, TcpBuilder};
pub use iface::{TcpIface, DEFAULT_LINGER, DEFAULT_MAX_AM, DEFAULT_MAX_QUEUED};
pub use progress::Waker;
