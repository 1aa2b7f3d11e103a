//! The reliability engine of the soft-RoCE backend: one Reliable Connection queue
//! pair, sans-IO.
//!
//! A [`Qp`] is both halves of one RC connection to one remote queue pair: the
//! *requester*, which turns the work requests posted to its send queue into request
//! packets and completes them when they are acknowledged, and the *responder*, which
//! executes the remote's requests against local memory in PSN order and answers them.
//! It does no I/O and reads no clock; the caller (the socket driver, or the simulated
//! network of the tests) drives it:
//!
//! * [`Qp::handle_datagram`]: a UDP payload arrived for this queue pair;
//! * [`Qp::poll_transmit`]: the next UDP payload to send, if any;
//! * [`Qp::poll_timeout`] / [`Qp::handle_timeout`]: the next deadline, and its expiry;
//! * [`Qp::poll_completion`]: work completions, of sends and of receives;
//! * [`Qp::post_send`] / [`Qp::post_recv`]: work requests.
//!
//! Memory is reached only through the [`Memory`] trait, by key, address and length;
//! every access is checked against the region's bounds and rights
//! ([`check_access`]) before the trait's raw `read`/`write`/`atomic` is called.
//! [`VecMemory`] implements it with plain vectors (tests, simulation); the socket
//! driver implements it over registered process memory.
//!
//! # Driving a queue pair
//!
//! Two queue pairs wired back to back, as a socket driver would wire one to a UDP
//! socket (`sendmmsg` what `poll_transmit` gives, `handle_datagram` what `recvmmsg`
//! gets, demultiplexed by [`dest_qpn`]; sleep until the earliest `poll_timeout`):
//!
//! ```
//! use std::time::Instant;
//! use dos_transport::roce::engine::*;
//! use dos_transport::roce::wire::Qpn;
//!
//! let (x, y) = ("10.0.0.1:4791".parse().unwrap(), "10.0.0.2:4791".parse().unwrap());
//! let (qx, qy) = (Qpn::new(0x11).unwrap(), Qpn::new(0x12).unwrap());
//! let mut a = Qp::new(QpConfig::new(qx, qy, x, y)).unwrap();
//! let mut b = Qp::new(QpConfig::new(qy, qx, y, x)).unwrap();
//!
//! let (mut mem_a, mut mem_b) = (VecMemory::new(), VecMemory::new());
//! let src = mem_a.register(0x1000, b"hello, rdma".to_vec(), Access::NONE);
//! let dst = mem_b.register(0x2000, vec![0; 64], Access::LOCAL_WRITE);
//! b.post_recv(RecvWr { wr_id: 2, sge: Sge { key: dst, addr: 0x2000, len: 64 } }).unwrap();
//! a.post_send(SendWr::send_imm(1, Sge { key: src, addr: 0x1000, len: 11 }, 7)).unwrap();
//!
//! let mut buf = vec![0u8; a.max_datagram_len()];
//! loop {
//!     let now = Instant::now();
//!     let mut moved = false;
//!     while let Some(n) = a.poll_transmit(now, &mut buf, &mem_a) {
//!         assert_eq!(dest_qpn(&buf[..n]), Some(qy));
//!         b.handle_datagram(now, &buf[..n], &mut mem_b);
//!         moved = true;
//!     }
//!     while let Some(n) = b.poll_transmit(now, &mut buf, &mem_b) {
//!         a.handle_datagram(now, &buf[..n], &mut mem_a);
//!         moved = true;
//!     }
//!     if !moved {
//!         break; // a real driver would wait for input or poll_timeout() here
//!     }
//! }
//! let sent = a.poll_completion().unwrap();
//! assert_eq!((sent.wr_id, sent.status), (1, WcStatus::Success));
//! let got = b.poll_completion().unwrap();
//! assert_eq!((got.wr_id, got.byte_len, got.imm), (2, 11, Some(7)));
//! assert_eq!(&mem_b.bytes(dst).unwrap()[..11], b"hello, rdma");
//! ```
//!
//! # Design notes
//!
//! ## States
//!
//! A queue pair is created connected ([`QpState::Ready`], IBA's Ready-To-Send): the
//! remote QPN, both initial PSNs and the addresses are exchanged out of band (the
//! wire-up service) before [`Qp::new`]. There is no Reset/Init/RTR/SQD sequence. The
//! only other state is [`QpState::Error`], entered on a fatal error on either side:
//! the failing work request completes with its error status, every other queued work
//! request (send and receive) completes with [`WcStatus::Flushed`], posting fails,
//! and nothing is sent any more, except that a responder that rejected a request with
//! a fatal NAK repeats that NAK when the same request is retransmitted (so that a lost
//! NAK cannot turn a remote access error into a retry exhaustion at the peer).
//!
//! ## Requester
//!
//! * Work requests get their PSNs when they are first transmitted: one per packet,
//!   `ceil(len / mtu)` (at least one) for SEND and WRITE, as many as response packets
//!   for an RDMA READ (the request is one packet, the PSNs belong to its responses),
//!   one for an atomic. PSNs count modulo 2^24 ([`Psn`]).
//! * The *send point* (work request, packet) walks the send queue; `una` is the oldest
//!   PSN not yet acknowledged (or, for a READ, whose response has not arrived). At most
//!   [`QpConfig::window`] PSNs are in flight past `una`; at most
//!   [`QpConfig::max_rd_atomic`] READ/atomic requests are outstanding; a `fence`d work
//!   request waits until every earlier READ and atomic completed. A READ's PSNs count
//!   in the window, so a READ larger than the window holds back later requests until
//!   enough of its responses arrived.
//! * AckReq is set on the last packet of every message, on every
//!   [`QpConfig::ack_req_every`]-th packet and on the packet that fills the window.
//! * Acknowledgements are cumulative: an ACK of PSN `p` acknowledges every PSN up to
//!   `p`; a read response, an atomic acknowledge or a NAK of PSN `p` acknowledges every
//!   PSN before `p` (IBA's implicit acknowledgement). Completion is strictly in posting
//!   order; a READ or atomic is completed only by its response data, never by a later
//!   ACK (the highest ACK seen is remembered and applied again once the READ or atomic
//!   in front completes).
//! * Go-back-N: on a PSN-sequence-error NAK, on the retransmission timeout, and when a
//!   response shows that a READ or atomic response was lost (a read response or atomic
//!   acknowledge for a later PSN, or an ACK covering the READ/atomic), the send point
//!   moves back to `una`: everything from there is sent again with the same PSNs
//!   (a partially received READ is re-requested for its missing part only, with the
//!   PSN of the first missing response and the RETH moved accordingly). NAK- and
//!   loss-triggered go-backs happen at most once per value of `una` (duplicated NAKs
//!   and reordered responses do not multiply them); the timer always goes back. How
//!   long the requester keeps trying is a time, not a count: see Retransmission.
//! * RNR NAK: the responder had no receive buffer. Transmission stops for the time the
//!   NAK's RNR timer code stands for ([`rnr_timer_duration`]), then goes back to the
//!   NAK's PSN. [`QpConfig::rnr_budget`] bounds how long RNR NAKs may go on without
//!   progress (`None`: unlimited, IBA's 7); exhausted: [`WcStatus::RnrRetryExceeded`].
//! * Fatal NAKs (invalid request, remote access error, remote operational error)
//!   complete the work request they name with the matching status, then the error
//!   state flushes the rest.
//!
//! ## Responder
//!
//! * It expects one PSN (`ePSN`). A request packet with `ePSN` is executed; an earlier
//!   one is a duplicate; a later one is out of sequence and dropped, and answered with
//!   a PSN-sequence-error NAK carrying `ePSN` — once: further out-of-sequence packets
//!   are dropped silently until `ePSN` arrives (one NAK per sequence error, as the IBA
//!   asks, so that a burst of packets behind a hole costs one go-back, not many).
//! * SEND packets fill the receive buffer at the head of the receive queue, taken at
//!   the first packet; with none posted, the packet is answered with an RNR NAK (once,
//!   like a sequence NAK) and not executed. An RDMA WRITE with immediate data takes a
//!   receive buffer at its packet carrying the immediate (the last), for the completion
//!   only.
//! * RETH and AtomicETH accesses are checked against the memory region (key, bounds,
//!   rights) before anything is touched; the whole range of a WRITE is checked at its
//!   first packet and each packet's part again when written, a READ at the request and
//!   each packet again when read. A failure is a fatal NAK "remote access error";
//!   malformed sequences (a MIDDLE without FIRST, wrong payload lengths, lengths
//!   that do not add up) are "invalid request"; a receive buffer that is too small is
//!   "invalid request" with a local length error on the receive completion.
//! * Duplicates are never executed again: a duplicate SEND or WRITE packet is only
//!   acknowledged (cumulatively, `ePSN - 1`); a duplicate READ that matches one of the
//!   responder resources (the last [`QpConfig::max_dest_rd_atomic`] READs and
//!   atomics) is served again from the PSN it asks for; a duplicate atomic that matches
//!   one gets the saved original value again without being executed (IBA's atomic
//!   replay rule). A duplicate that matches none is dropped. A duplicate READ whose
//!   response stream is still queued moves that stream back to the PSN asked for
//!   (never forward) instead of starting a second one, so that repeated re-requests
//!   do not multiply the response traffic.
//! * ACKs are coalesced: an AckReq sets a flag, and one ACK of `ePSN - 1` goes out on
//!   the next [`Qp::poll_transmit`] however many requests asked. Read responses,
//!   atomic acknowledges and NAKs go out in PSN order through one queue, and the
//!   coalesced ACK only once that queue is empty (an ACK must not overtake the response
//!   to an earlier READ).
//! * READ response data is read from memory when each response packet is built, not
//!   when the request arrives (IBA allows a later WRITE to be executed before an
//!   earlier READ has been read out; the requester's fence orders them).
//!
//! ## Bounds
//!
//! Posted send work requests plus their unpolled completions stay within
//! [`QpConfig::sq_depth`], receive buffers plus theirs within [`QpConfig::rq_depth`]
//! (a full queue is [`PostError::SendQueueFull`] / [`PostError::RecvQueueFull`]), so
//! the completion queue never holds more than both depths. The responder keeps
//! [`QpConfig::max_dest_rd_atomic`] resources and queues at most twice that many
//! responses plus one; a new READ or atomic that finds the queue full is dropped
//! unexecuted (the requester retransmits it), and so is a NAK. Outstanding READs and
//! atomics of the requester are bounded by [`QpConfig::max_rd_atomic`], PSNs in flight
//! by [`QpConfig::window`]. The only buffer is one MTU of scratch space.
//!
//! ## Timers
//!
//! One retransmission timer: armed when a packet is sent and none is running,
//! restarted whenever `una` advances, stopped when nothing is outstanding. One RNR
//! timer while waiting after an RNR NAK (the retransmission timer is stopped
//! meanwhile). Acknowledgement coalescing needs no timer: the ACK is built when the
//! driver asks for the next datagram.
//!
//! ## Retransmission: exponential backoff to a time budget
//!
//! * The retransmission timeout starts at [`QpConfig::timeout`] (20 ms) and doubles
//!   with every timeout in a row that brought no progress, up to
//!   [`QpConfig::max_timeout`] (1 s): 20, 40, 80, ... 640 ms, then 1 s
//!   ([`backoff_timeout`]). Any progress (`una` advancing) brings it back to the start.
//! * The requester gives up only when nothing was acknowledged for
//!   [`QpConfig::retry_budget`] (30 s by default, [`DEFAULT_RETRY_BUDGET`]) while
//!   something was outstanding: the timer that ends the budget is armed for its end,
//!   the work request at `una` completes with [`WcStatus::RetryExceeded`] and the
//!   queue pair enters the error state. This is IBA's local ACK timeout times its
//!   retry count, but in time: a count of 7 tries of 20 ms gave a peer 160 ms, and a
//!   rank stopped for 200 ms, or starved of the CPU on an oversubscribed node, killed
//!   its job. Whether a peer is dead is decided by the launcher's supervision (its
//!   heartbeat and the ranks' exit), which tears the job down in milliseconds; the
//!   budget only bounds how long a connection to a vanished host lingers.
//! * NAK- and loss-triggered go-backs neither back off nor use up the budget: they
//!   show that the remote is alive and receiving. An RNR NAK restarts the budget
//!   (the remote is alive, only short of receive buffers);
//!   [`QpConfig::rnr_budget`] bounds RNR waits separately.
//!
//! ## Simplified relative to the IBA specification, and why
//!
//! * No state machine beyond Ready/Error, no path migration, no alternate path, no
//!   P_Key checking (sent as [`super::wire::DEFAULT_PKEY`], not checked): one process
//!   talks to its job's peers over UDP, connection parameters come from the wire-up.
//! * No end-to-end credits: ACKs carry the "no credit count" code and the requester
//!   ignores credits. Receiver-not-ready is handled by RNR NAKs alone (as rxe does).
//! * The MSN is maintained and sent, but the requester completes by PSN only.
//! * One scatter-gather element per work request; every work request is signaled; no
//!   solicited events, inline data, SEND with invalidate, memory windows.
//! * Retransmission is go-back-N (as in IBA RC, which has no selective repeat): a
//!   lost packet costs the packets in flight behind it.
//! * Retries are bounded by a time, not by IBA's three-bit count: a UDP path may be
//!   lossier than a lossless fabric, and its peers are processes that may be
//!   descheduled for a while.
//! * A message is at most 2^20 packets (and 2^31 bytes), so that every PSN in flight
//!   stays well inside the 2^23 half-window of 24-bit serial arithmetic.
//! * MTUs are powers of two from 256 to 32768 bytes; above 4096 is an extension that
//!   only peers of this implementation accept (UDP over loopback or jumbo frames).
//! * A responder's fatal error moves its queue pair to the error state as IBA requires,
//!   but it keeps repeating the fatal NAK for retransmissions of the offending PSN (see
//!   States). Responses still queued when the error happens are dropped.
//! * Lost READ/atomic responses are detected from later responses at once (rxe does
//!   the same), at most once per `una`, so reordering costs at most one spurious
//!   go-back per hole.
//! * Local and remote keys share one namespace (the [`Memory`] keys). Local source
//!   buffers of SEND and WRITE need no right; receive buffers and READ destinations
//!   need [`Access::LOCAL_WRITE`]. A bad local buffer completes the work request with
//!   [`WcStatus::LocalProtectionError`] when it is used, not when it is posted.
//! * Atomics operate on native-endian 64-bit words; the original value is returned in
//!   the completion ([`Completion::atomic_orig`]), not written to local memory.
//! * Posting to a queue pair in the error state fails ([`PostError::QpInError`]) instead
//!   of completing at once with a flush status.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::ops::BitOr;
use std::time::{Duration, Instant};

use super::icrc::{IpUdp, ICRC_LEN};
use super::wire::{
    Aeth, AtomicAckEth, AtomicEth, Bth, Framing, ImmDt, Msn, NakCode, Opcode, Packet, PacketKey,
    Psn, Qpn, Reth, Syndrome, WireError, BTH_LEN, MAX_HEADERS_LEN,
};

// ---------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------

/// Access rights of a memory region (a set of flags, combined with `|`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u8);

impl Access {
    /// No right: enough to be the source of a local SEND or WRITE.
    pub const NONE: Access = Access(0);
    /// The engine may write into the region for this queue pair's own work requests
    /// (receive buffers, READ destinations).
    pub const LOCAL_WRITE: Access = Access(1);
    /// The peer may RDMA WRITE into the region.
    pub const REMOTE_WRITE: Access = Access(2);
    /// The peer may RDMA READ from the region.
    pub const REMOTE_READ: Access = Access(4);
    /// The peer may run atomics on the region.
    pub const REMOTE_ATOMIC: Access = Access(8);
    /// Every right.
    pub const ALL: Access = Access(15);

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights of both.
    pub const fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        self.union(rhs)
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Access::LOCAL_WRITE, "LOCAL_WRITE"),
            (Access::REMOTE_WRITE, "REMOTE_WRITE"),
            (Access::REMOTE_READ, "REMOTE_READ"),
            (Access::REMOTE_ATOMIC, "REMOTE_ATOMIC"),
        ];
        let mut first = true;
        write!(f, "Access(")?;
        for (a, name) in names {
            if self.contains(a) {
                if !first {
                    write!(f, " | ")?;
                }
                write!(f, "{name}")?;
                first = false;
            }
        }
        if first {
            write!(f, "NONE")?;
        }
        write!(f, ")")
    }
}

/// What a memory region is: where it starts in the address space that RETHs and
/// scatter-gather elements use, how long it is, and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Rights.
    pub access: Access,
}

/// A 64-bit atomic operation on a word of a memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    /// If the word equals `compare`, replace it with `swap`.
    CompareSwap {
        /// Value to compare with.
        compare: u64,
        /// Value to store on equality.
        swap: u64,
    },
    /// Add `add` to the word (wrapping).
    FetchAdd {
        /// Value to add.
        add: u64,
    },
}

impl AtomicOp {
    /// The word's new value, given its old one.
    pub const fn apply(self, old: u64) -> u64 {
        match self {
            AtomicOp::CompareSwap { compare, swap } => {
                if old == compare {
                    swap
                } else {
                    old
                }
            }
            AtomicOp::FetchAdd { add } => old.wrapping_add(add),
        }
    }
}

/// The memory a queue pair reads and writes: registered regions named by a 32-bit key.
///
/// The engine checks every access with [`check_access`] (which uses only
/// [`Memory::region`]) and calls `read`, `write` and `atomic` only for a range that
/// passed that check in the same call, with `offset` relative to the region's start.
/// Implementations therefore need no checks of their own (they may assert).
pub trait Memory {
    /// The region of `key`, if one is registered.
    fn region(&self, key: u32) -> Option<RegionInfo>;
    /// Copies `dst.len()` bytes at `offset` of region `key` into `dst`.
    fn read(&self, key: u32, offset: u64, dst: &mut [u8]);
    /// Copies `src` to `offset` of region `key`.
    fn write(&mut self, key: u32, offset: u64, src: &[u8]);
    /// Runs `op` on the 64-bit word at `offset` of region `key` (8-byte aligned as an
    /// address) atomically with respect to other atomics, and returns its old value.
    fn atomic(&mut self, key: u32, offset: u64, op: AtomicOp) -> u64;
}

/// Why an access to memory was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// No region has this key.
    #[error("no memory region has key {0:#x}")]
    NoSuchKey(u32),
    /// The range is not inside the region.
    #[error("access of {len} bytes at {addr:#x} is outside the memory region")]
    OutOfBounds {
        /// Start address of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
    },
    /// The region does not grant the right the access needs.
    #[error("the memory region does not grant {0:?}")]
    NotPermitted(Access),
}

/// Checks an access of `len` bytes at `addr` in the region `key` that needs `need`;
/// returns the offset of `addr` in the region.
pub fn check_access<M: Memory + ?Sized>(
    mem: &M,
    key: u32,
    addr: u64,
    len: u64,
    need: Access,
) -> Result<u64, AccessError> {
    let r = mem.region(key).ok_or(AccessError::NoSuchKey(key))?;
    if !r.access.contains(need) {
        return Err(AccessError::NotPermitted(need));
    }
    let oob = AccessError::OutOfBounds { addr, len };
    let offset = addr.checked_sub(r.addr).ok_or(oob)?;
    let end = offset.checked_add(len).ok_or(oob)?;
    if end > r.len {
        return Err(oob);
    }
    Ok(offset)
}

/// [`Memory`] backed by vectors: for tests, simulation and examples.
#[derive(Debug, Default, Clone)]
pub struct VecMemory {
    regions: Vec<(u32, RegionInfo, Vec<u8>)>,
    next_key: u32,
}

impl VecMemory {
    /// No regions.
    pub fn new() -> VecMemory {
        VecMemory::default()
    }

    /// Registers `data` as a region starting at address `addr` with rights `access`;
    /// returns its key (never 0).
    pub fn register(&mut self, addr: u64, data: Vec<u8>, access: Access) -> u32 {
        // Keys that are not small consecutive integers, so that a test's made-up key
        // is unlikely to name a region.
        let key = loop {
            self.next_key = self.next_key.wrapping_add(1);
            let key = self.next_key.wrapping_mul(0x9E37_79B1) | 1;
            if self.region(key).is_none() {
                break key;
            }
        };
        let info = RegionInfo {
            addr,
            len: data.len() as u64,
            access,
        };
        self.regions.push((key, info, data));
        key
    }

    /// Removes the region `key`; returns its bytes.
    pub fn deregister(&mut self, key: u32) -> Option<Vec<u8>> {
        let i = self.regions.iter().position(|r| r.0 == key)?;
        Some(self.regions.remove(i).2)
    }

    /// The bytes of region `key`.
    pub fn bytes(&self, key: u32) -> Option<&[u8]> {
        self.regions
            .iter()
            .find(|r| r.0 == key)
            .map(|r| r.2.as_slice())
    }

    /// The bytes of region `key`, writable.
    pub fn bytes_mut(&mut self, key: u32) -> Option<&mut [u8]> {
        self.regions
            .iter_mut()
            .find(|r| r.0 == key)
            .map(|r| r.2.as_mut_slice())
    }

    fn data(&self, key: u32) -> &[u8] {
        self.bytes(key).expect("access to a checked region")
    }

    fn data_mut(&mut self, key: u32) -> &mut [u8] {
        self.bytes_mut(key).expect("access to a checked region")
    }
}

impl Memory for VecMemory {
    fn region(&self, key: u32) -> Option<RegionInfo> {
        self.regions.iter().find(|r| r.0 == key).map(|r| r.1)
    }

    fn read(&self, key: u32, offset: u64, dst: &mut [u8]) {
        let at = offset as usize;
        dst.copy_from_slice(&self.data(key)[at..at + dst.len()]);
    }

    fn write(&mut self, key: u32, offset: u64, src: &[u8]) {
        let at = offset as usize;
        self.data_mut(key)[at..at + src.len()].copy_from_slice(src);
    }

    fn atomic(&mut self, key: u32, offset: u64, op: AtomicOp) -> u64 {
        let at = offset as usize;
        let word: &mut [u8; 8] = (&mut self.data_mut(key)[at..at + 8])
            .try_into()
            .expect("8 bytes");
        let old = u64::from_ne_bytes(*word);
        *word = op.apply(old).to_ne_bytes();
        old
    }
}

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

/// Largest number of packets (PSNs) of one message.
pub const MAX_MSG_PACKETS: u32 = 1 << 20;
/// Largest message in bytes (IBA's limit), further bounded by [`MAX_MSG_PACKETS`].
pub const MAX_MSG_BYTES: u64 = 1 << 31;
/// Largest send window in PSNs ([`QpConfig::window`]).
pub const MAX_WINDOW: u32 = 1 << 20;

/// A path MTU: the largest payload of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mtu(u32);

impl Mtu {
    /// 256 bytes.
    pub const MTU_256: Mtu = Mtu(256);
    /// 512 bytes.
    pub const MTU_512: Mtu = Mtu(512);
    /// 1024 bytes: fits a 1500-byte Ethernet frame with its headers.
    pub const MTU_1024: Mtu = Mtu(1024);
    /// 2048 bytes.
    pub const MTU_2048: Mtu = Mtu(2048);
    /// 4096 bytes: the largest the IBA defines.
    pub const MTU_4096: Mtu = Mtu(4096);

    /// `bytes` as an MTU, if it is a power of two from 256 to 32768.
    pub const fn new(bytes: u32) -> Option<Mtu> {
        if bytes.is_power_of_two() && bytes >= 256 && bytes <= 32768 {
            Some(Mtu(bytes))
        } else {
            None
        }
    }

    /// The MTU in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The parameters of a queue pair and of its connection.
#[derive(Debug, Clone)]
pub struct QpConfig {
    /// This queue pair's number (the BTH destination of the packets it receives).
    pub qpn: Qpn,
    /// The remote queue pair's number.
    pub remote_qpn: Qpn,
    /// Local UDP address that datagrams are sent from and received at.
    pub local: SocketAddr,
    /// The remote queue pair's UDP address.
    pub remote: SocketAddr,
    /// Path MTU; both ends must use the same.
    pub mtu: Mtu,
    /// PSN of this side's first request (the remote's `recv_psn`).
    pub send_psn: Psn,
    /// PSN of the first request expected from the remote (the remote's `send_psn`).
    pub recv_psn: Psn,
    /// Send queue depth: posted send work requests plus their unpolled completions.
    pub sq_depth: usize,
    /// Receive queue depth: posted receive buffers plus their unpolled completions.
    pub rq_depth: usize,
    /// READ and atomic requests this side may have outstanding (IBA's initiator depth).
    /// Must not exceed the remote's `max_dest_rd_atomic`: the remote keeps that many
    /// results for replay, and a retransmitted atomic whose result it no longer has
    /// is never answered. IBA negotiates this when connecting; so must the wire-up.
    pub max_rd_atomic: usize,
    /// READ and atomic requests of the remote that this side remembers for replay
    /// (IBA's responder resources); at least the remote's `max_rd_atomic`.
    pub max_dest_rd_atomic: usize,
    /// Largest number of PSNs in flight past the oldest unacknowledged one.
    pub window: u32,
    /// Ask for an acknowledgement at least every this many packets.
    pub ack_req_every: u32,
    /// Local ACK timeout: retransmit when nothing was acknowledged for this long.
    /// It doubles with every timeout in a row without progress, up to
    /// [`QpConfig::max_timeout`], and is back to this value once `una` advances.
    pub timeout: Duration,
    /// The largest retransmission timeout that backing off reaches.
    pub max_timeout: Duration,
    /// How long the requester keeps retransmitting without progress (no PSN
    /// acknowledged, no RNR NAK) before the work request at `una` fails with
    /// [`WcStatus::RetryExceeded`]: IBA's local ACK timeout times its retry count,
    /// expressed as a time.
    pub retry_budget: Duration,
    /// How long RNR NAKs without progress may go on before the work request fails
    /// with [`WcStatus::RnrRetryExceeded`]; `None`: retry forever (IBA's 7).
    pub rnr_budget: Option<Duration>,
    /// The RNR timer code (0 to 31, [`rnr_timer_duration`]) that this side's RNR
    /// NAKs ask the remote to wait.
    pub min_rnr_timer: u8,
}

impl QpConfig {
    /// A configuration with defaults: MTU 1024, PSNs 0, queues of 256, 16 outstanding
    /// READs/atomics, a window of 128 packets with AckReq every 16, a 20 ms timeout
    /// backing off to 1 s, a retry budget of [`DEFAULT_RETRY_BUDGET`], unlimited RNR
    /// retries, RNR timer code 12 (0.64 ms).
    pub fn new(qpn: Qpn, remote_qpn: Qpn, local: SocketAddr, remote: SocketAddr) -> QpConfig {
        QpConfig {
            qpn,
            remote_qpn,
            local,
            remote,
            mtu: Mtu::MTU_1024,
            send_psn: Psn::new(0),
            recv_psn: Psn::new(0),
            sq_depth: 256,
            rq_depth: 256,
            max_rd_atomic: 16,
            max_dest_rd_atomic: 16,
            window: 128,
            ack_req_every: 16,
            timeout: Duration::from_millis(20),
            max_timeout: Duration::from_secs(1),
            retry_budget: DEFAULT_RETRY_BUDGET,
            rnr_budget: None,
            min_rnr_timer: 12,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |what| Err(ConfigError(what));
        if self.sq_depth == 0 || self.rq_depth == 0 {
            return fail("queue depths must be at least 1");
        }
        if self.max_rd_atomic == 0 || self.max_dest_rd_atomic == 0 {
            return fail("READ/atomic depths must be at least 1");
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return fail("window must be 1 to MAX_WINDOW packets");
        }
        if self.ack_req_every == 0 {
            return fail("ack_req_every must be at least 1");
        }
        if self.timeout.is_zero() {
            return fail("timeout must not be zero");
        }
        if self.max_timeout < self.timeout {
            return fail("max_timeout must not be below timeout");
        }
        if self.retry_budget.is_zero() {
            return fail("retry_budget must not be zero");
        }
        if self.min_rnr_timer > 31 {
            return fail("min_rnr_timer is a five-bit code");
        }
        if self.local.ip().to_canonical().is_ipv4() != self.remote.ip().to_canonical().is_ipv4() {
            return fail("local and remote addresses of different IP families");
        }
        Ok(())
    }

    /// Largest message (work request length) this configuration carries.
    pub fn max_msg_len(&self) -> u64 {
        (u64::from(self.mtu.get()) * u64::from(MAX_MSG_PACKETS)).min(MAX_MSG_BYTES)
    }
}

/// The default [`QpConfig::retry_budget`]: 30 s without progress before a
/// connection is given up. Long enough that a peer stopped, swapped out or starved
/// of CPU for seconds is waited for (whether a peer died is the launcher's call,
/// from its heartbeat), short enough that a vanished peer is reported.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// The retransmission timeout after `timeouts` timeouts in a row without progress:
/// `timeout` doubled that many times, at most `max_timeout`.
pub fn backoff_timeout(timeout: Duration, max_timeout: Duration, timeouts: u32) -> Duration {
    timeout
        .checked_mul(1u32 << timeouts.min(31))
        .map_or(max_timeout, |t| t.min(max_timeout))
}

/// A configuration that [`Qp::new`] rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue pair configuration: {0}")]
pub struct ConfigError(pub &'static str);

/// How long an RNR timer code (0 to 31, IBA table 45; higher bits ignored) asks the
/// requester to wait: 0.01 ms to 491.52 ms, and 655.36 ms for code 0.
pub fn rnr_timer_duration(code: u8) -> Duration {
    const MICROS: [u32; 32] = [
        655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280, 1920, 2560, 3840,
        5120, 7680, 10_240, 15_360, 20_480, 30_720, 40_960, 61_440, 81_920, 122_880, 163_840,
        245_760, 327_680, 491_520,
    ];
    Duration::from_micros(u64::from(MICROS[usize::from(code & 0x1F)]))
}

// ---------------------------------------------------------------------------------
// Work requests and completions
// ---------------------------------------------------------------------------------

/// A local buffer: `len` bytes at `addr` in the memory region `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge {
    /// Key of the local memory region.
    pub key: u32,
    /// Address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Where a remote access goes: an address in the remote region `rkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr {
    /// Key of the remote memory region.
    pub rkey: u32,
    /// Remote address of the first byte (or of the 64-bit word of an atomic).
    pub addr: u64,
}

/// What a send work request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// SEND `local` into the remote's next receive buffer.
    Send {
        /// The message.
        local: Sge,
        /// Immediate data for the remote's receive completion.
        imm: Option<u32>,
    },
    /// RDMA WRITE `local` to `remote`.
    Write {
        /// The data.
        local: Sge,
        /// Where it goes.
        remote: RemoteAddr,
        /// Immediate data: the write then also consumes a remote receive buffer and
        /// makes a receive completion there.
        imm: Option<u32>,
    },
    /// RDMA READ `local.len` bytes from `remote` into `local`.
    Read {
        /// Where the data lands (needs [`Access::LOCAL_WRITE`]).
        local: Sge,
        /// What is read.
        remote: RemoteAddr,
    },
    /// Atomic compare and swap of the remote 64-bit word.
    CompareSwap {
        /// The word (8-byte aligned).
        remote: RemoteAddr,
        /// Value to compare with.
        compare: u64,
        /// Value stored on equality.
        swap: u64,
    },
    /// Atomic fetch and add on the remote 64-bit word.
    FetchAdd {
        /// The word (8-byte aligned).
        remote: RemoteAddr,
        /// Value added.
        add: u64,
    },
}

/// A send work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWr {
    /// The caller's id, returned in the completion.
    pub wr_id: u64,
    /// What to do.
    pub op: SendOp,
    /// Wait until every earlier READ and atomic of this queue pair completed before
    /// starting (IBA's fence indicator).
    pub fence: bool,
}

impl SendWr {
    /// A SEND of `local`.
    pub const fn send(wr_id: u64, local: Sge) -> SendWr {
        SendWr::new(wr_id, SendOp::Send { local, imm: None })
    }

    /// A SEND of `local` with immediate data.
    pub const fn send_imm(wr_id: u64, local: Sge, imm: u32) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::Send {
                local,
                imm: Some(imm),
            },
        )
    }

    /// An RDMA WRITE of `local` to `remote`.
    pub const fn write(wr_id: u64, local: Sge, remote: RemoteAddr) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::Write {
                local,
                remote,
                imm: None,
            },
        )
    }

    /// An RDMA WRITE with immediate data.
    pub const fn write_imm(wr_id: u64, local: Sge, remote: RemoteAddr, imm: u32) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::Write {
                local,
                remote,
                imm: Some(imm),
            },
        )
    }

    /// An RDMA READ of `local.len` bytes at `remote` into `local`.
    pub const fn read(wr_id: u64, local: Sge, remote: RemoteAddr) -> SendWr {
        SendWr::new(wr_id, SendOp::Read { local, remote })
    }

    /// An atomic compare and swap.
    pub const fn compare_swap(wr_id: u64, remote: RemoteAddr, compare: u64, swap: u64) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::CompareSwap {
                remote,
                compare,
                swap,
            },
        )
    }

    /// An atomic fetch and add.
    pub const fn fetch_add(wr_id: u64, remote: RemoteAddr, add: u64) -> SendWr {
        SendWr::new(wr_id, SendOp::FetchAdd { remote, add })
    }

    /// This work request with the fence indicator set.
    pub const fn fenced(mut self) -> SendWr {
        self.fence = true;
        self
    }

    const fn new(wr_id: u64, op: SendOp) -> SendWr {
        SendWr {
            wr_id,
            op,
            fence: false,
        }
    }

    /// Bytes the work request moves (8 for atomics).
    fn len(&self) -> u32 {
        match self.op {
            SendOp::Send { local, .. }
            | SendOp::Write { local, .. }
            | SendOp::Read { local, .. } => local.len,
            SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. } => 8,
        }
    }

    fn is_rd_atomic(&self) -> bool {
        !matches!(self.op, SendOp::Send { .. } | SendOp::Write { .. })
    }

    fn wc_opcode(&self) -> WcOpcode {
        match self.op {
            SendOp::Send { .. } => WcOpcode::Send,
            SendOp::Write { .. } => WcOpcode::RdmaWrite,
            SendOp::Read { .. } => WcOpcode::RdmaRead,
            SendOp::CompareSwap { .. } => WcOpcode::CompareSwap,
            SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
        }
    }
}

/// A receive work request: a buffer for one incoming SEND (or for the completion of an
/// incoming RDMA WRITE with immediate data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWr {
    /// The caller's id, returned in the completion.
    pub wr_id: u64,
    /// The buffer (needs [`Access::LOCAL_WRITE`]).
    pub sge: Sge,
}

/// Why a work request was not posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// The send queue (with the unpolled send completions) is at its depth.
    #[error("send queue full")]
    SendQueueFull,
    /// The receive queue (with the unpolled receive completions) is at its depth.
    #[error("receive queue full")]
    RecvQueueFull,
    /// The message is longer than the queue pair carries ([`QpConfig::max_msg_len`]).
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Requested length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An atomic on an address that is not 8-byte aligned.
    #[error("atomic on an address that is not 8-byte aligned")]
    Misaligned,
    /// The queue pair is in the error state.
    #[error("queue pair in the error state")]
    QpInError,
}

/// How a work request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WcStatus {
    /// Done.
    Success,
    /// Retransmissions without progress exhausted the retry budget.
    RetryExceeded,
    /// RNR NAKs without progress exhausted the RNR budget.
    RnrRetryExceeded,
    /// The remote rejected the access (key, bounds or rights).
    RemoteAccessError,
    /// The remote rejected the request as invalid (or its receive buffer was too small).
    RemoteInvalidRequest,
    /// The remote could not complete the request.
    RemoteOperationalError,
    /// A local buffer was not accessible (key, bounds or `LOCAL_WRITE`).
    LocalProtectionError,
    /// An incoming SEND did not fit this receive buffer.
    LocalLengthError,
    /// The remote's response did not fit the request (length, opcode).
    BadResponse,
    /// The queue pair entered the error state before this work request completed.
    Flushed,
}

/// What a completed work request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WcOpcode {
    /// A SEND this side posted.
    Send,
    /// An RDMA WRITE this side posted.
    RdmaWrite,
    /// An RDMA READ this side posted.
    RdmaRead,
    /// A compare and swap this side posted.
    CompareSwap,
    /// A fetch and add this side posted.
    FetchAdd,
    /// A receive buffer that an incoming SEND filled.
    Recv,
    /// A receive buffer consumed by an incoming RDMA WRITE with immediate data.
    RecvRdmaWithImm,
}

impl WcOpcode {
    /// Whether this completes a receive work request (as opposed to a send one).
    pub const fn is_recv(self) -> bool {
        matches!(self, WcOpcode::Recv | WcOpcode::RecvRdmaWithImm)
    }
}

/// A work completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Completion {
    /// The work request's id.
    pub wr_id: u64,
    /// How it ended.
    pub status: WcStatus,
    /// What it was.
    pub opcode: WcOpcode,
    /// Bytes moved (on success): the message length; for a receive, the bytes
    /// received, or the RDMA WRITE's length with immediate data; 8 for atomics.
    pub byte_len: u32,
    /// Immediate data of a receive completion.
    pub imm: Option<u32>,
    /// The remote word's value before an atomic (on success).
    pub atomic_orig: Option<u64>,
}

/// The state of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpState {
    /// Connected and working (IBA's RTS).
    Ready,
    /// Failed: work requests flushed, nothing more sent (see the module docs).
    Error,
}

/// Counters of a queue pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QpStats {
    /// Datagrams produced by [`Qp::poll_transmit`].
    pub tx_packets: u64,
    /// Request packets sent again (PSN already sent before).
    pub tx_retransmits: u64,
    /// ACK packets sent (coalesced acknowledgements, not NAKs).
    pub tx_acks: u64,
    /// Datagrams that decoded and were for this queue pair.
    pub rx_packets: u64,
    /// Datagrams dropped for a bad ICRC (corrupted).
    pub rx_icrc_errors: u64,
    /// Datagrams dropped because they did not decode otherwise.
    pub rx_malformed: u64,
    /// Datagrams dropped for a wrong authentication tag (forged, or of another
    /// connection; [`Qp::set_packet_keys`]).
    pub rx_auth_failures: u64,
    /// Datagrams for another queue pair number.
    pub rx_wrong_qp: u64,
    /// Duplicate request packets (PSN before the expected one).
    pub rx_duplicates: u64,
    /// Request packets after the expected PSN (dropped).
    pub rx_out_of_sequence: u64,
    /// Responses that acknowledged nothing new or were outside the PSNs in flight.
    pub rx_stale_responses: u64,
    /// Requests dropped because the response queue was full.
    pub rx_busy_drops: u64,
    /// Datagrams dropped in the error state.
    pub rx_dropped_in_error: u64,
    /// PSN sequence error NAKs sent.
    pub seq_naks_sent: u64,
    /// PSN sequence error NAKs received.
    pub seq_naks_received: u64,
    /// RNR NAKs sent.
    pub rnr_naks_sent: u64,
    /// RNR NAKs received.
    pub rnr_naks_received: u64,
    /// Retransmission timer expiries with something outstanding.
    pub timeouts: u64,
    /// Go-backs to the oldest unacknowledged PSN (any cause).
    pub go_backs: u64,
    /// Duplicate READs served again.
    pub read_replays: u64,
    /// Duplicate atomics answered from the saved result.
    pub atomic_replays: u64,
}

/// The destination queue pair number of a datagram (BTH bytes 5 to 7), read without
/// any check: for demultiplexing before [`Qp::handle_datagram`], which checks it again.
pub fn dest_qpn(dgram: &[u8]) -> Option<Qpn> {
    let b = dgram.get(..BTH_LEN)?;
    Qpn::new(u32::from_be_bytes([0, b[5], b[6], b[7]]))
}

// ---------------------------------------------------------------------------------
// The queue pair
// ---------------------------------------------------------------------------------

/// Number of PSNs of a message of `len` bytes.
fn npkts(len: u32, mtu: u32) -> u32 {
    len.div_ceil(mtu).max(1)
}

#[derive(Debug)]
struct SendWqe {
    wr: SendWr,
    npkts: u32,
    /// First PSN, assigned at the first transmission.
    first_psn: Option<Psn>,
    /// PSNs acknowledged (SEND, WRITE) or response packets received (READ, atomic).
    acked: u32,
}

#[derive(Debug)]
struct Requester {
    sq: VecDeque<SendWqe>,
    /// The send point: work request `sq[send_idx]`, its packet `send_pkt` (for a READ:
    /// below `npkts` means the request must be sent for the part from `send_pkt`).
    send_idx: usize,
    send_pkt: u32,
    /// The next PSN to assign.
    next_psn: Psn,
    /// One past the highest PSN transmitted.
    sent_end: Psn,
    /// Highest PSN an ACK covered.
    max_ack: Option<Psn>,
    /// READ/atomic work requests sent and not completed.
    rd_atomic: usize,
    since_ack_req: u32,
    /// Timeouts in a row without progress (the backoff exponent).
    timeouts: u32,
    /// Since when nothing was acknowledged while something was outstanding
    /// (cleared by progress and by an RNR NAK, which shows the remote is alive).
    stalled_since: Option<Instant>,
    /// Since when RNR NAKs came without progress.
    rnr_since: Option<Instant>,
    rto: Option<Instant>,
    rnr_until: Option<Instant>,
    /// `una` of the last NAK- or loss-triggered go-back.
    went_back_at: Option<Psn>,
}

impl Requester {
    /// Oldest PSN not acknowledged (or not yet assigned).
    fn una(&self) -> Psn {
        match self.sq.front() {
            Some(SendWqe {
                first_psn: Some(f),
                acked,
                ..
            }) => f.wrapping_add(*acked),
            _ => self.next_psn,
        }
    }

    /// PSNs sent and not acknowledged.
    fn in_flight(&self) -> i32 {
        self.sent_end.distance_from(self.una())
    }

    /// Moves the send point back to `una`.
    fn rewind(&mut self) {
        if let Some(w) = self.sq.front() {
            if w.first_psn.is_some() {
                self.send_idx = 0;
                self.send_pkt = w.acked;
            }
        }
    }
}

#[derive(Debug)]
enum InMsg {
    Send {
        wr: RecvWr,
        written: u32,
    },
    Write {
        rkey: u32,
        va: u64,
        len: u32,
        written: u32,
    },
}

#[derive(Debug)]
enum RespOut {
    Read {
        /// First PSN of the READ request this stream answers (the resource).
        origin: Psn,
        rkey: u32,
        va: u64,
        remaining: u32,
        psn: Psn,
        first: bool,
    },
    AtomicAck {
        psn: Psn,
        orig: u64,
    },
    Nak {
        psn: Psn,
        syndrome: Syndrome,
    },
}

/// A READ or atomic this responder executed, kept for duplicates.
#[derive(Debug, Clone, Copy)]
enum Resource {
    Read {
        first: Psn,
        npkts: u32,
        rkey: u32,
        va: u64,
        len: u32,
    },
    Atomic {
        psn: Psn,
        orig: u64,
    },
}

#[derive(Debug)]
struct Responder {
    epsn: Psn,
    msn: Msn,
    rq: VecDeque<RecvWr>,
    msg: Option<InMsg>,
    /// A sequence or RNR NAK was sent for `epsn`: drop out-of-sequence packets silently.
    nak_sent: bool,
    ack_pending: bool,
    /// The plain ACK waits ([`Qp::hold_ack`]).
    hold_ack: bool,
    out: VecDeque<RespOut>,
    resources: VecDeque<Resource>,
    /// The request this responder rejected fatally, and how.
    fatal: Option<(Psn, NakCode)>,
    repeat_fatal: bool,
}

/// What executing an in-sequence request did.
enum Exec {
    /// Executed; `ePSN` advances by this many PSNs.
    Done(u32),
    /// No receive buffer: RNR NAK.
    Rnr,
    /// The response queue is full: dropped, the requester will retransmit.
    Busy,
    /// Rejected: fatal NAK.
    Fatal(NakCode),
}

/// One RC queue pair; see the [module docs](self).
#[derive(Debug)]
pub struct Qp {
    cfg: QpConfig,
    /// How the packets it sends are framed (headers for the ICRC, tag key).
    tx_hdrs: Framing,
    /// How the packets it receives are framed.
    rx_hdrs: Framing,
    state: QpState,
    req: Requester,
    resp: Responder,
    cq: VecDeque<Completion>,
    send_cqes: usize,
    recv_cqes: usize,
    stats: QpStats,
    scratch: Vec<u8>,
    resp_turn: bool,
}

fn emit(f: &Framing, buf: &mut [u8], p: &Packet<'_>) -> usize {
    p.encode_framed(f, buf)
        .expect("the engine builds packets that fit the buffer and their opcode")
}

impl Qp {
    /// A queue pair in the [`QpState::Ready`] state.
    pub fn new(cfg: QpConfig) -> Result<Qp, ConfigError> {
        cfg.validate()?;
        let req = Requester {
            sq: VecDeque::new(),
            send_idx: 0,
            send_pkt: 0,
            next_psn: cfg.send_psn,
            sent_end: cfg.send_psn,
            max_ack: None,
            rd_atomic: 0,
            since_ack_req: 0,
            timeouts: 0,
            stalled_since: None,
            rnr_since: None,
            rto: None,
            rnr_until: None,
            went_back_at: None,
        };
        let resp = Responder {
            epsn: cfg.recv_psn,
            msn: Msn::new(0),
            rq: VecDeque::new(),
            msg: None,
            nak_sent: false,
            ack_pending: false,
            hold_ack: false,
            out: VecDeque::new(),
            resources: VecDeque::new(),
            fatal: None,
            repeat_fatal: false,
        };
        Ok(Qp {
            tx_hdrs: Framing::plain(IpUdp::new(cfg.local, cfg.remote)),
            rx_hdrs: Framing::plain(IpUdp::new(cfg.remote, cfg.local)),
            state: QpState::Ready,
            req,
            resp,
            cq: VecDeque::new(),
            send_cqes: 0,
            recv_cqes: 0,
            stats: QpStats::default(),
            scratch: vec![0; cfg.mtu.get() as usize],
            resp_turn: false,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QpConfig {
        &self.cfg
    }

    /// Authenticates every packet from now on (a dos extension,
    /// [`super::wire`]'s module docs): the packets it sends carry tags made with
    /// `tx`, those it receives must carry tags made with `rx` (the remote's `tx`)
    /// or are dropped and counted ([`QpStats::rx_auth_failures`]). Call it before
    /// the first packet, on both ends alike.
    pub fn set_packet_keys(&mut self, tx: PacketKey, rx: PacketKey) {
        self.tx_hdrs.key = Some(tx);
        self.rx_hdrs.key = Some(rx);
    }

    /// The key the tags of received packets must be made with, if any.
    #[cfg(test)]
    pub(crate) fn rx_key(&self) -> Option<&PacketKey> {
        self.rx_hdrs.key.as_ref()
    }

    /// The state.
    pub fn state(&self) -> QpState {
        self.state
    }

    /// Holds back (`true`) or lets go (`false`) the plain ACK of the requests
    /// received: while held, [`Qp::poll_transmit`] does not send it, and the
    /// requests that arrive meanwhile are acknowledged together (the ACK is
    /// cumulative). NAKs, atomic ACKs and READ responses go out as usual.
    ///
    /// For a driver that delivers messages to an owner who is likely to answer
    /// at once: the answer then goes out before the ACK, and the peer, waiting
    /// for the answer, is not held up by the ACK ahead of it. The driver must let
    /// go soon (at its next turn, or before it sleeps), or the requester times
    /// out and retransmits.
    pub fn hold_ack(&mut self, hold: bool) {
        self.resp.hold_ack = hold;
    }

    /// Whether a plain ACK waits because it is held ([`Qp::hold_ack`]).
    pub fn ack_held(&self) -> bool {
        self.resp.hold_ack && self.resp.ack_pending
    }

    /// The counters.
    pub fn stats(&self) -> &QpStats {
        &self.stats
    }

    /// The PSN the next new request packet will get.
    pub fn next_send_psn(&self) -> Psn {
        self.req.next_psn
    }

    /// The PSN the responder expects next from the remote.
    pub fn expected_psn(&self) -> Psn {
        self.resp.epsn
    }

    /// The smallest buffer [`Qp::poll_transmit`] accepts: the largest datagram this
    /// queue pair sends.
    pub fn max_datagram_len(&self) -> usize {
        MAX_HEADERS_LEN + self.cfg.mtu.get() as usize + self.tx_hdrs.tag_len() + ICRC_LEN
    }

    /// Send work requests posted and not completed.
    pub fn send_queue_len(&self) -> usize {
        self.req.sq.len()
    }

    /// Receive buffers posted and not consumed.
    pub fn recv_queue_len(&self) -> usize {
        self.resp.rq.len() + usize::from(matches!(self.resp.msg, Some(InMsg::Send { .. })))
    }

    /// Posts a send work request. It completes (once) through
    /// [`Qp::poll_completion`]; completions of send work requests come in posting order.
    pub fn post_send(&mut self, wr: SendWr) -> Result<(), PostError> {
        if self.state == QpState::Error {
            return Err(PostError::QpInError);
        }
        if self.req.sq.len() + self.send_cqes >= self.cfg.sq_depth {
            return Err(PostError::SendQueueFull);
        }
        let len = u64::from(wr.len());
        let max = self.cfg.max_msg_len();
        if len > max {
            return Err(PostError::TooLarge { len, max });
        }
        if let SendOp::CompareSwap { remote, .. } | SendOp::FetchAdd { remote, .. } = wr.op {
            if remote.addr % 8 != 0 {
                return Err(PostError::Misaligned);
            }
        }
        let npkts = if wr.is_rd_atomic() && !matches!(wr.op, SendOp::Read { .. }) {
            1
        } else {
            npkts(wr.len(), self.cfg.mtu.get())
        };
        self.req.sq.push_back(SendWqe {
            wr,
            npkts,
            first_psn: None,
            acked: 0,
        });
        Ok(())
    }

    /// Posts a receive buffer for an incoming SEND (or RDMA WRITE with immediate).
    /// Buffers are consumed in posting order.
    pub fn post_recv(&mut self, wr: RecvWr) -> Result<(), PostError> {
        if self.state == QpState::Error {
            return Err(PostError::QpInError);
        }
        if self.recv_queue_len() + self.recv_cqes >= self.cfg.rq_depth {
            return Err(PostError::RecvQueueFull);
        }
        self.resp.rq.push_back(wr);
        Ok(())
    }

    /// The next work completion, if any.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        let c = self.cq.pop_front()?;
        if c.opcode.is_recv() {
            self.recv_cqes -= 1;
        } else {
            self.send_cqes -= 1;
        }
        Some(c)
    }

    /// Moves the queue pair to the error state (flushing every work request), as a
    /// fatal error would; for tearing a connection down.
    pub fn set_error(&mut self) {
        self.enter_error();
    }

    /// When [`Qp::handle_timeout`] should be called next, if a timer is running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == QpState::Error {
            return None;
        }
        match (self.req.rto, self.req.rnr_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers that expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == QpState::Error {
            return;
        }
        if self.req.rnr_until.is_some_and(|t| now >= t) {
            self.req.rnr_until = None;
            self.req.rewind();
            self.stats.go_backs += 1;
        }
        if self.req.rto.is_some_and(|t| now >= t) {
            self.req.rto = None;
            if self.req.in_flight() > 0 {
                self.stats.timeouts += 1;
                if self
                    .req
                    .stalled_since
                    .is_some_and(|s| now.saturating_duration_since(s) >= self.cfg.retry_budget)
                {
                    self.fail(WcStatus::RetryExceeded);
                    return;
                }
                self.req.timeouts = self.req.timeouts.saturating_add(1);
                self.go_back(true);
            }
        }
    }

    /// Handles a datagram received from the remote (the UDP payload). Corrupted and
    /// malformed datagrams are counted and dropped.
    pub fn handle_datagram<M: Memory + ?Sized>(&mut self, now: Instant, dgram: &[u8], mem: &mut M) {
        let pkt = match Packet::decode_framed(&self.rx_hdrs, dgram) {
            Ok(p) => p,
            Err(WireError::Icrc { .. }) => {
                self.stats.rx_icrc_errors += 1;
                return;
            }
            Err(WireError::Auth) => {
                self.stats.rx_auth_failures += 1;
                return;
            }
            Err(_) => {
                self.stats.rx_malformed += 1;
                return;
            }
        };
        if pkt.bth.dest_qp != self.cfg.qpn {
            self.stats.rx_wrong_qp += 1;
            return;
        }
        self.stats.rx_packets += 1;
        let response = pkt.bth.opcode.is_response();
        if self.state == QpState::Error {
            match self.resp.fatal {
                Some((psn, _)) if !response && pkt.bth.psn == psn => self.resp.repeat_fatal = true,
                _ => self.stats.rx_dropped_in_error += 1,
            }
            return;
        }
        if response {
            self.on_response(now, &pkt, mem);
        } else {
            self.on_request(&pkt, mem);
        }
    }

    /// Writes the next datagram to send into `buf` and returns its length, or `None`
    /// when there is nothing to send now. `buf` must hold
    /// [`Qp::max_datagram_len`] bytes.
    ///
    /// # Panics
    /// If `buf` is smaller than [`Qp::max_datagram_len`].
    pub fn poll_transmit<M: Memory + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mem: &M,
    ) -> Option<usize> {
        assert!(
            buf.len() >= self.max_datagram_len(),
            "poll_transmit needs a buffer of max_datagram_len() bytes"
        );
        let n = if self.state == QpState::Error {
            self.error_transmit(buf)
        } else {
            // Alternate between the two halves so that neither starves the other.
            self.resp_turn = !self.resp_turn;
            if self.resp_turn {
                match self.resp_transmit(buf, mem) {
                    Some(n) => Some(n),
                    None => self.req_transmit(now, buf, mem),
                }
            } else {
                match self.req_transmit(now, buf, mem) {
                    Some(n) => Some(n),
                    None if self.state == QpState::Ready => self.resp_transmit(buf, mem),
                    None => self.error_transmit(buf),
                }
            }
        };
        if n.is_some() {
            self.stats.tx_packets += 1;
        }
        n
    }

    // ----- completions and errors -----

    fn push_send_cqe(&mut self, w: &SendWqe, status: WcStatus, atomic_orig: Option<u64>) {
        let ok = status == WcStatus::Success;
        self.cq.push_back(Completion {
            wr_id: w.wr.wr_id,
            status,
            opcode: w.wr.wc_opcode(),
            byte_len: if ok { w.wr.len() } else { 0 },
            imm: None,
            atomic_orig: atomic_orig.filter(|_| ok),
        });
        self.send_cqes += 1;
    }

    fn push_recv_cqe(
        &mut self,
        wr: RecvWr,
        status: WcStatus,
        opcode: WcOpcode,
        len: u32,
        imm: Option<u32>,
    ) {
        let ok = status == WcStatus::Success;
        self.cq.push_back(Completion {
            wr_id: wr.wr_id,
            status,
            opcode,
            byte_len: if ok { len } else { 0 },
            imm: imm.filter(|_| ok),
            atomic_orig: None,
        });
        self.recv_cqes += 1;
    }

    /// Removes the oldest send work request and completes it.
    fn complete_front(&mut self, status: WcStatus, atomic_orig: Option<u64>) {
        let Some(w) = self.req.sq.pop_front() else {
            return;
        };
        if self.req.send_idx > 0 {
            self.req.send_idx -= 1;
        } else {
            // The send point was inside it (gone back, then acknowledged): go on with
            // the next one.
            self.req.send_pkt = 0;
        }
        if w.first_psn.is_some() && w.wr.is_rd_atomic() {
            self.req.rd_atomic -= 1;
        }
        self.push_send_cqe(&w, status, atomic_orig);
    }

    /// The oldest send work request failed with `status`: complete it, flush the rest.
    fn fail(&mut self, status: WcStatus) {
        self.complete_front(status, None);
        self.enter_error();
    }

    fn enter_error(&mut self) {
        if self.state == QpState::Error {
            return;
        }
        self.state = QpState::Error;
        while let Some(w) = self.req.sq.pop_front() {
            self.push_send_cqe(&w, WcStatus::Flushed, None);
        }
        self.req.send_idx = 0;
        self.req.send_pkt = 0;
        self.req.rd_atomic = 0;
        self.req.rto = None;
        self.req.rnr_until = None;
        if let Some(InMsg::Send { wr, .. }) = self.resp.msg.take() {
            self.push_recv_cqe(wr, WcStatus::Flushed, WcOpcode::Recv, 0, None);
        }
        while let Some(wr) = self.resp.rq.pop_front() {
            self.push_recv_cqe(wr, WcStatus::Flushed, WcOpcode::Recv, 0, None);
        }
        self.resp.out.clear();
        self.resp.ack_pending = false;
    }

    /// The responder rejects the request `psn` with a fatal NAK.
    fn resp_fatal(&mut self, psn: Psn, code: NakCode) {
        self.resp.fatal = Some((psn, code));
        self.resp.repeat_fatal = true;
        self.enter_error();
    }

    fn error_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (psn, code) = self.resp.fatal?;
        if !std::mem::take(&mut self.resp.repeat_fatal) {
            return None;
        }
        let mut p = Packet::new(Bth::new(Opcode::Acknowledge, self.cfg.remote_qpn, psn));
        p.aeth = Some(Aeth {
            syndrome: Syndrome::Nak(code),
            msn: self.resp.msn,
        });
        Some(emit(&self.tx_hdrs, buf, &p))
    }

    // ----- requester -----

    /// The retransmission timer's next deadline, armed at `now`: the backed-off
    /// timeout, but not past the end of the retry budget (so that a dead path fails
    /// when the budget ends, not up to one backed-off timeout later).
    fn rto_deadline(&mut self, now: Instant) -> Instant {
        let since = *self.req.stalled_since.get_or_insert(now);
        let b = backoff_timeout(self.cfg.timeout, self.cfg.max_timeout, self.req.timeouts);
        // Checked: a budget or timeout of centuries must not overflow the clock.
        let t = now
            .checked_add(b)
            .unwrap_or(now + Duration::from_secs(86_400));
        match since.checked_add(self.cfg.retry_budget) {
            Some(end) => t.min(end).max(now),
            None => t,
        }
    }

    /// `una` advanced: restore the retry budgets and the timeout, restart the timer,
    /// keep the send point at or after `una`.
    fn on_progress(&mut self, now: Instant) {
        self.req.timeouts = 0;
        self.req.stalled_since = None;
        self.req.rnr_since = None;
        self.req.rto = None;
        if self.req.in_flight() > 0 && self.req.rnr_until.is_none() {
            self.req.rto = Some(self.rto_deadline(now));
        }
        let r = &mut self.req;
        r.went_back_at = None;
        // An ACK that `una` passed has done its work; forgetting it keeps it from
        // looking ahead again once PSNs wrap.
        let una = r.una();
        if r.max_ack.is_some_and(|m| m.distance_from(una) < 0) {
            r.max_ack = None;
        }
        if r.send_idx == 0 {
            if let Some(w) = r.sq.front() {
                r.send_pkt = r.send_pkt.max(w.acked);
            }
        }
    }

    /// Acknowledges every PSN up to and including `last` (SEND and WRITE work requests
    /// only: a READ or atomic in front stops it). Returns whether `una` advanced.
    fn ack_through(&mut self, last: Psn) -> bool {
        let mut progress = false;
        while let Some(w) = self.req.sq.front_mut() {
            let Some(first) = w.first_psn else {
                break;
            };
            if w.wr.is_rd_atomic() {
                break;
            }
            let covered = last.distance_from(first) + 1;
            if covered <= w.acked as i32 {
                break;
            }
            let covered = (covered as u32).min(w.npkts);
            w.acked = covered;
            progress = true;
            if covered < w.npkts {
                break;
            }
            self.complete_front(WcStatus::Success, None);
        }
        progress
    }

    /// Goes back to `una` (see the module docs); `timer`: the retransmission timer
    /// expired (always goes back) rather than a NAK or a detected loss (once per `una`).
    /// The retry budget is the timer's business ([`Qp::handle_timeout`]): a NAK shows
    /// that the remote is there.
    fn go_back(&mut self, timer: bool) {
        let una = self.req.una();
        if self.req.in_flight() <= 0 || (!timer && self.req.went_back_at == Some(una)) {
            return;
        }
        self.req.went_back_at = Some(una);
        self.req.rewind();
        self.req.rto = None;
        self.stats.go_backs += 1;
    }

    /// After an ACK: if it covers a READ or atomic whose response has not arrived,
    /// that response was lost.
    fn check_lost_response(&mut self) {
        let (Some(max_ack), Some(w)) = (self.req.max_ack, self.req.sq.front()) else {
            return;
        };
        if let (true, Some(first)) = (w.wr.is_rd_atomic(), w.first_psn) {
            if max_ack.distance_from(first.wrapping_add(w.acked)) >= 0 {
                self.go_back(false);
            }
        }
    }

    fn on_response<M: Memory + ?Sized>(&mut self, now: Instant, pkt: &Packet<'_>, mem: &mut M) {
        let p = pkt.bth.psn;
        let una = self.req.una();
        let d = p.distance_from(una);
        if d < 0 || d >= self.req.in_flight() {
            self.stats.rx_stale_responses += 1;
            return;
        }
        let before = p.wrapping_add(Psn::MAX); // p - 1
        let Some(aeth) = pkt.aeth else {
            // READ_RESPONSE_MIDDLE: the only response without an AETH.
            self.on_read_response(now, pkt, mem);
            return;
        };
        match (pkt.bth.opcode, aeth.syndrome) {
            (Opcode::Acknowledge, Syndrome::Ack { .. }) => {
                if self.req.max_ack.map_or(true, |m| p.distance_from(m) > 0) {
                    self.req.max_ack = Some(p);
                }
                if self.ack_through(p) {
                    self.after_progress(now);
                } else {
                    self.stats.rx_stale_responses += 1;
                }
                self.check_lost_response();
            }
            (Opcode::Acknowledge, Syndrome::RnrNak { timer }) => {
                self.stats.rnr_naks_received += 1;
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state != QpState::Ready
                    || self.req.una() != p
                    || self.req.rnr_until.is_some()
                {
                    return;
                }
                // The remote answered: it is alive; the retry budget starts again.
                self.req.timeouts = 0;
                self.req.stalled_since = None;
                let since = *self.req.rnr_since.get_or_insert(now);
                if self
                    .cfg
                    .rnr_budget
                    .is_some_and(|b| now.saturating_duration_since(since) >= b)
                {
                    self.fail(WcStatus::RnrRetryExceeded);
                    return;
                }
                self.req.rnr_until = Some(now + rnr_timer_duration(timer));
                self.req.rto = None;
            }
            (Opcode::Acknowledge, Syndrome::Nak(NakCode::PsnSequenceError)) => {
                self.stats.seq_naks_received += 1;
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state == QpState::Ready {
                    self.go_back(false);
                }
            }
            (Opcode::Acknowledge, Syndrome::Nak(code)) => {
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state == QpState::Ready && self.req.una() == p {
                    self.fail(match code {
                        NakCode::RemoteAccessError => WcStatus::RemoteAccessError,
                        NakCode::InvalidRequest => WcStatus::RemoteInvalidRequest,
                        _ => WcStatus::RemoteOperationalError,
                    });
                }
            }
            (Opcode::AtomicAcknowledge, Syndrome::Ack { .. }) => {
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state != QpState::Ready {
                    return;
                }
                let front_is_it = self.req.una() == p
                    && self.req.sq.front().is_some_and(|w| {
                        matches!(
                            w.wr.op,
                            SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. }
                        )
                    });
                if !front_is_it {
                    // An earlier READ/atomic response is missing.
                    self.go_back(false);
                    return;
                }
                let orig = pkt.atomic_ack_eth.map(|a| a.orig);
                self.complete_front(WcStatus::Success, orig);
                self.after_progress(now);
            }
            (
                Opcode::RdmaReadResponseFirst
                | Opcode::RdmaReadResponseLast
                | Opcode::RdmaReadResponseOnly,
                Syndrome::Ack { .. },
            ) => self.on_read_response(now, pkt, mem),
            _ => {
                // A read response or atomic acknowledge with a NAK syndrome.
                self.stats.rx_malformed += 1;
            }
        }
    }

    /// Progress was made: restart timers and apply an ACK remembered beyond a READ or
    /// atomic that has now completed.
    fn after_progress(&mut self, now: Instant) {
        if let Some(max_ack) = self.req.max_ack {
            self.ack_through(max_ack);
        }
        self.on_progress(now);
    }

    fn on_read_response<M: Memory + ?Sized>(
        &mut self,
        now: Instant,
        pkt: &Packet<'_>,
        mem: &mut M,
    ) {
        let p = pkt.bth.psn;
        if self.ack_through(p.wrapping_add(Psn::MAX)) {
            self.after_progress(now);
        }
        if self.state != QpState::Ready {
            return;
        }
        let mtu = self.cfg.mtu.get();
        let una = self.req.una();
        let Some(w) = self.req.sq.front() else {
            return;
        };
        let (SendOp::Read { local, .. }, Some(first)) = (w.wr.op, w.first_psn) else {
            self.go_back(false);
            return;
        };
        if p != una {
            // A response of a later READ, or a later response of this one: lost responses.
            self.go_back(false);
            return;
        }
        let i = w.acked;
        let last = i + 1 == w.npkts;
        let off = i * mtu;
        let expect = (local.len - off).min(mtu);
        let op = pkt.bth.opcode;
        let op_ok = if last {
            matches!(
                op,
                Opcode::RdmaReadResponseLast | Opcode::RdmaReadResponseOnly
            )
        } else {
            matches!(
                op,
                Opcode::RdmaReadResponseFirst | Opcode::RdmaReadResponseMiddle
            )
        };
        debug_assert_eq!(first.wrapping_add(i), p);
        if !op_ok || pkt.payload.len() != expect as usize {
            self.fail(WcStatus::BadResponse);
            return;
        }
        if expect > 0 {
            let addr = local.addr.wrapping_add(u64::from(off));
            match check_access(mem, local.key, addr, u64::from(expect), Access::LOCAL_WRITE) {
                Ok(o) => mem.write(local.key, o, pkt.payload),
                Err(_) => {
                    self.fail(WcStatus::LocalProtectionError);
                    return;
                }
            }
        }
        if let Some(w) = self.req.sq.front_mut() {
            w.acked += 1;
        }
        if last {
            self.complete_front(WcStatus::Success, None);
        }
        self.after_progress(now);
    }

    fn req_transmit<M: Memory + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mem: &M,
    ) -> Option<usize> {
        if self.req.rnr_until.is_some() {
            return None;
        }
        let mtu = self.cfg.mtu.get();
        let window = self.cfg.window as i32;
        let una = self.req.una();
        let idx = self.req.send_idx;
        let w = self.req.sq.get(idx)?;
        let first_psn = match w.first_psn {
            Some(f) => f,
            None => {
                if (w.wr.fence && self.req.rd_atomic > 0)
                    || (w.wr.is_rd_atomic() && self.req.rd_atomic >= self.cfg.max_rd_atomic)
                    || self.req.next_psn.distance_from(una) >= window
                {
                    return None;
                }
                let f = self.req.next_psn;
                let n = w.npkts;
                let rd_atomic = w.wr.is_rd_atomic();
                self.req.next_psn = f.wrapping_add(n);
                if rd_atomic {
                    self.req.rd_atomic += 1;
                }
                self.req.sq[idx].first_psn = Some(f);
                f
            }
        };
        let w = &self.req.sq[idx];
        let i = self.req.send_pkt;
        let psn = first_psn.wrapping_add(i);
        if psn.distance_from(una) >= window {
            return None;
        }
        let mut bth = Bth::new(Opcode::SendOnly, self.cfg.remote_qpn, psn);
        let mut p_reth = None;
        let mut p_atomic = None;
        let mut p_imm = None;
        let mut payload_len = 0usize;
        // PSNs this packet accounts for.
        let span;
        match w.wr.op {
            SendOp::Send { local, imm } | SendOp::Write { local, imm, .. } => {
                let write = matches!(w.wr.op, SendOp::Write { .. });
                let off = i * mtu;
                let n = (local.len - off).min(mtu);
                let (first, last) = (i == 0, i + 1 == w.npkts);
                if n > 0 {
                    let addr = local.addr.wrapping_add(u64::from(off));
                    match check_access(mem, local.key, addr, u64::from(n), Access::NONE) {
                        Ok(o) => mem.read(local.key, o, &mut self.scratch[..n as usize]),
                        Err(_) => {
                            self.fail(WcStatus::LocalProtectionError);
                            return None;
                        }
                    }
                }
                payload_len = n as usize;
                let with_imm = last && imm.is_some();
                bth.opcode = match (write, first, last, with_imm) {
                    (false, true, true, false) => Opcode::SendOnly,
                    (false, true, true, true) => Opcode::SendOnlyWithImmediate,
                    (false, true, false, _) => Opcode::SendFirst,
                    (false, false, false, _) => Opcode::SendMiddle,
                    (false, false, true, false) => Opcode::SendLast,
                    (false, false, true, true) => Opcode::SendLastWithImmediate,
                    (true, true, true, false) => Opcode::RdmaWriteOnly,
                    (true, true, true, true) => Opcode::RdmaWriteOnlyWithImmediate,
                    (true, true, false, _) => Opcode::RdmaWriteFirst,
                    (true, false, false, _) => Opcode::RdmaWriteMiddle,
                    (true, false, true, false) => Opcode::RdmaWriteLast,
                    (true, false, true, true) => Opcode::RdmaWriteLastWithImmediate,
                };
                if let (SendOp::Write { remote, .. }, true) = (w.wr.op, first) {
                    p_reth = Some(Reth {
                        va: remote.addr,
                        rkey: remote.rkey,
                        dma_len: local.len,
                    });
                }
                if with_imm {
                    p_imm = imm.map(ImmDt);
                }
                self.req.since_ack_req += 1;
                bth.ack_req = last
                    || self.req.since_ack_req >= self.cfg.ack_req_every
                    || psn.wrapping_add(1).distance_from(una) >= window;
                if bth.ack_req {
                    self.req.since_ack_req = 0;
                }
                span = 1;
                self.req.send_pkt += 1;
                if self.req.send_pkt == w.npkts {
                    self.req.send_idx += 1;
                    self.req.send_pkt = 0;
                }
            }
            SendOp::Read { local, remote } => {
                let off = i * mtu;
                bth.opcode = Opcode::RdmaReadRequest;
                p_reth = Some(Reth {
                    va: remote.addr.wrapping_add(u64::from(off)),
                    rkey: remote.rkey,
                    dma_len: local.len - off,
                });
                span = w.npkts - i;
                self.req.send_idx += 1;
                self.req.send_pkt = 0;
            }
            SendOp::CompareSwap {
                remote,
                compare,
                swap,
            } => {
                bth.opcode = Opcode::CompareSwap;
                p_atomic = Some(AtomicEth {
                    va: remote.addr,
                    rkey: remote.rkey,
                    swap_add: swap,
                    compare,
                });
                span = 1;
                self.req.send_idx += 1;
                self.req.send_pkt = 0;
            }
            SendOp::FetchAdd { remote, add } => {
                bth.opcode = Opcode::FetchAdd;
                p_atomic = Some(AtomicEth {
                    va: remote.addr,
                    rkey: remote.rkey,
                    swap_add: add,
                    compare: 0,
                });
                span = 1;
                self.req.send_idx += 1;
                self.req.send_pkt = 0;
            }
        }
        if psn.distance_from(self.req.sent_end) < 0 {
            self.stats.tx_retransmits += 1;
        }
        let end = psn.wrapping_add(span);
        if end.distance_from(self.req.sent_end) > 0 {
            self.req.sent_end = end;
        }
        if self.req.rto.is_none() {
            self.req.rto = Some(self.rto_deadline(now));
        }
        let mut p = Packet::new(bth);
        p.reth = p_reth;
        p.atomic_eth = p_atomic;
        p.imm = p_imm;
        p.payload = &self.scratch[..payload_len];
        Some(emit(&self.tx_hdrs, buf, &p))
    }

    // ----- responder -----

    fn out_full(&self) -> bool {
        self.resp.out.len() > 2 * self.cfg.max_dest_rd_atomic
    }

    fn remember(&mut self, r: Resource) {
        if self.resp.resources.len() >= self.cfg.max_dest_rd_atomic {
            self.resp.resources.pop_front();
        }
        self.resp.resources.push_back(r);
    }

    fn on_request<M: Memory + ?Sized>(&mut self, pkt: &Packet<'_>, mem: &mut M) {
        let p = pkt.bth.psn;
        let d = p.distance_from(self.resp.epsn);
        if d < 0 {
            self.stats.rx_duplicates += 1;
            self.on_duplicate(pkt, mem);
            return;
        }
        if d > 0 {
            self.stats.rx_out_of_sequence += 1;
            // (With the response queue full, no NAK: the requester's timer recovers.)
            if !self.resp.nak_sent && !self.out_full() {
                self.resp.nak_sent = true;
                self.resp.out.push_back(RespOut::Nak {
                    psn: self.resp.epsn,
                    syndrome: Syndrome::Nak(NakCode::PsnSequenceError),
                });
                self.stats.seq_naks_sent += 1;
            }
            return;
        }
        self.resp.nak_sent = false;
        match self.execute(pkt, mem) {
            Exec::Done(n) => {
                self.resp.epsn = self.resp.epsn.wrapping_add(n);
                let rd_atomic = matches!(
                    pkt.bth.opcode,
                    Opcode::RdmaReadRequest | Opcode::CompareSwap | Opcode::FetchAdd
                );
                if pkt.bth.ack_req && !rd_atomic {
                    self.resp.ack_pending = true;
                }
            }
            Exec::Rnr if self.out_full() => self.stats.rx_busy_drops += 1,
            Exec::Rnr => {
                self.resp.nak_sent = true;
                self.resp.out.push_back(RespOut::Nak {
                    psn: p,
                    syndrome: Syndrome::RnrNak {
                        timer: self.cfg.min_rnr_timer,
                    },
                });
                self.stats.rnr_naks_sent += 1;
            }
            Exec::Busy => self.stats.rx_busy_drops += 1,
            Exec::Fatal(code) => self.resp_fatal(p, code),
        }
    }

    fn on_duplicate<M: Memory + ?Sized>(&mut self, pkt: &Packet<'_>, mem: &M) {
        let p = pkt.bth.psn;
        match pkt.bth.opcode {
            Opcode::RdmaReadRequest => {
                let Some(reth) = pkt.reth else { return };
                let mtu = self.cfg.mtu.get();
                // It must ask for the rest of a READ we served, from one of its PSNs.
                let origin = self.resp.resources.iter().rev().find_map(|r| match *r {
                    Resource::Read {
                        first,
                        npkts,
                        rkey,
                        va,
                        len,
                    } => {
                        let k = p.distance_from(first);
                        let fits = k >= 0
                            && (k as u32) < npkts
                            && rkey == reth.rkey
                            && va.wrapping_add(u64::from(k as u32 * mtu)) == reth.va
                            && len - k as u32 * mtu == reth.dma_len;
                        fits.then_some(first)
                    }
                    Resource::Atomic { .. } => None,
                });
                let Some(origin) = origin else { return };
                if reth.dma_len > 0
                    && check_access(
                        mem,
                        reth.rkey,
                        reth.va,
                        u64::from(reth.dma_len),
                        Access::REMOTE_READ,
                    )
                    .is_err()
                {
                    return;
                }
                // A stream of this READ still queued: move it back to the PSN asked for
                // (never forward: it will get there by itself).
                for o in self.resp.out.iter_mut() {
                    if let RespOut::Read {
                        origin: o_origin,
                        va,
                        remaining,
                        psn,
                        first,
                        ..
                    } = o
                    {
                        if *o_origin == origin {
                            if p.distance_from(*psn) < 0 {
                                self.stats.read_replays += 1;
                                (*va, *remaining, *psn, *first) = (reth.va, reth.dma_len, p, true);
                            }
                            return;
                        }
                    }
                }
                if self.resp.out.len() >= self.cfg.max_dest_rd_atomic {
                    return;
                }
                self.stats.read_replays += 1;
                self.resp.out.push_back(RespOut::Read {
                    origin,
                    rkey: reth.rkey,
                    va: reth.va,
                    remaining: reth.dma_len,
                    psn: p,
                    first: true,
                });
            }
            Opcode::CompareSwap | Opcode::FetchAdd => {
                let orig = self.resp.resources.iter().find_map(|r| match *r {
                    Resource::Atomic { psn, orig } if psn == p => Some(orig),
                    _ => None,
                });
                if let Some(orig) = orig {
                    if self.resp.out.len() < self.cfg.max_dest_rd_atomic {
                        self.stats.atomic_replays += 1;
                        self.resp.out.push_back(RespOut::AtomicAck { psn: p, orig });
                    }
                }
            }
            _ => self.resp.ack_pending = true,
        }
    }

    fn complete_recv_error(&mut self, wr: RecvWr, status: WcStatus) {
        self.push_recv_cqe(wr, status, WcOpcode::Recv, 0, None);
    }

    /// Executes the in-sequence request `pkt`.
    fn execute<M: Memory + ?Sized>(&mut self, pkt: &Packet<'_>, mem: &mut M) -> Exec {
        use Opcode::*;
        let mtu = self.cfg.mtu.get();
        let op = pkt.bth.opcode;
        let payload = pkt.payload;
        if payload.len() > mtu as usize {
            return Exec::Fatal(NakCode::InvalidRequest);
        }
        let plen = payload.len() as u32;
        let invalid = Exec::Fatal(NakCode::InvalidRequest);
        match op {
            SendFirst
            | SendOnly
            | SendOnlyWithImmediate
            | SendMiddle
            | SendLast
            | SendLastWithImmediate => {
                let starts = matches!(op, SendFirst | SendOnly | SendOnlyWithImmediate);
                let ends = !matches!(op, SendFirst | SendMiddle);
                let (wr, written) = match (self.resp.msg.take(), starts) {
                    (None, true) => {
                        let Some(wr) = self.resp.rq.front().copied() else {
                            return Exec::Rnr;
                        };
                        (wr, 0)
                    }
                    (Some(InMsg::Send { wr, written }), false) => (wr, written),
                    (other, _) => {
                        self.resp.msg = other;
                        return invalid;
                    }
                };
                // Lengths: FIRST and MIDDLE carry a full MTU, LAST at least a byte.
                let len_ok = if ends {
                    starts || plen > 0
                } else {
                    plen == mtu
                };
                if !len_ok {
                    self.resp.msg = (!starts).then_some(InMsg::Send { wr, written });
                    return invalid;
                }
                if starts {
                    self.resp.rq.pop_front();
                }
                if u64::from(written) + u64::from(plen) > u64::from(wr.sge.len) {
                    self.complete_recv_error(wr, WcStatus::LocalLengthError);
                    return invalid;
                }
                let end = written + plen;
                if plen > 0 {
                    let addr = wr.sge.addr.wrapping_add(u64::from(written));
                    match check_access(mem, wr.sge.key, addr, u64::from(plen), Access::LOCAL_WRITE)
                    {
                        Ok(o) => mem.write(wr.sge.key, o, payload),
                        Err(_) => {
                            self.complete_recv_error(wr, WcStatus::LocalProtectionError);
                            return Exec::Fatal(NakCode::RemoteOperationalError);
                        }
                    }
                }
                if ends {
                    let imm = pkt.imm.map(|i| i.0);
                    self.push_recv_cqe(wr, WcStatus::Success, WcOpcode::Recv, end, imm);
                    self.resp.msn = self.resp.msn.wrapping_add(1);
                } else {
                    self.resp.msg = Some(InMsg::Send { wr, written: end });
                }
                Exec::Done(1)
            }
            RdmaWriteFirst
            | RdmaWriteOnly
            | RdmaWriteOnlyWithImmediate
            | RdmaWriteMiddle
            | RdmaWriteLast
            | RdmaWriteLastWithImmediate => {
                let starts = matches!(
                    op,
                    RdmaWriteFirst | RdmaWriteOnly | RdmaWriteOnlyWithImmediate
                );
                let ends = !matches!(op, RdmaWriteFirst | RdmaWriteMiddle);
                let with_imm =
                    matches!(op, RdmaWriteOnlyWithImmediate | RdmaWriteLastWithImmediate);
                let (rkey, va, len, written) = match (&self.resp.msg, starts) {
                    (None, true) => {
                        let Some(reth) = pkt.reth else { return invalid };
                        if u64::from(reth.dma_len) > self.cfg.max_msg_len() {
                            return invalid;
                        }
                        (reth.rkey, reth.va, reth.dma_len, 0)
                    }
                    (
                        Some(InMsg::Write {
                            rkey,
                            va,
                            len,
                            written,
                        }),
                        false,
                    ) => (*rkey, *va, *len, *written),
                    _ => return invalid,
                };
                let end = written + plen;
                let len_ok = match (starts, ends) {
                    (true, true) => plen == len,
                    (_, false) => plen == mtu && end < len,
                    (false, true) => plen > 0 && end == len,
                };
                if !len_ok {
                    return invalid;
                }
                if with_imm && self.resp.rq.is_empty() {
                    return Exec::Rnr;
                }
                if starts && len > 0 {
                    // The whole range, before anything is written.
                    if check_access(mem, rkey, va, u64::from(len), Access::REMOTE_WRITE).is_err() {
                        return Exec::Fatal(NakCode::RemoteAccessError);
                    }
                }
                if plen > 0 {
                    let addr = va.wrapping_add(u64::from(written));
                    match check_access(mem, rkey, addr, u64::from(plen), Access::REMOTE_WRITE) {
                        Ok(o) => mem.write(rkey, o, payload),
                        Err(_) => return Exec::Fatal(NakCode::RemoteAccessError),
                    }
                }
                if ends {
                    self.resp.msg = None;
                    self.resp.msn = self.resp.msn.wrapping_add(1);
                    if with_imm {
                        if let Some(wr) = self.resp.rq.pop_front() {
                            let imm = pkt.imm.map(|i| i.0);
                            self.push_recv_cqe(
                                wr,
                                WcStatus::Success,
                                WcOpcode::RecvRdmaWithImm,
                                len,
                                imm,
                            );
                        }
                    }
                } else {
                    self.resp.msg = Some(InMsg::Write {
                        rkey,
                        va,
                        len,
                        written: end,
                    });
                }
                Exec::Done(1)
            }
            RdmaReadRequest => {
                let Some(reth) = pkt.reth else { return invalid };
                if self.resp.msg.is_some() || u64::from(reth.dma_len) > self.cfg.max_msg_len() {
                    return invalid;
                }
                if reth.dma_len > 0
                    && check_access(
                        mem,
                        reth.rkey,
                        reth.va,
                        u64::from(reth.dma_len),
                        Access::REMOTE_READ,
                    )
                    .is_err()
                {
                    return Exec::Fatal(NakCode::RemoteAccessError);
                }
                if self.out_full() {
                    return Exec::Busy;
                }
                let n = npkts(reth.dma_len, mtu);
                self.remember(Resource::Read {
                    first: pkt.bth.psn,
                    npkts: n,
                    rkey: reth.rkey,
                    va: reth.va,
                    len: reth.dma_len,
                });
                self.resp.out.push_back(RespOut::Read {
                    origin: pkt.bth.psn,
                    rkey: reth.rkey,
                    va: reth.va,
                    remaining: reth.dma_len,
                    psn: pkt.bth.psn,
                    first: true,
                });
                self.resp.msn = self.resp.msn.wrapping_add(1);
                Exec::Done(n)
            }
            CompareSwap | FetchAdd => {
                let Some(a) = pkt.atomic_eth else {
                    return invalid;
                };
                if self.resp.msg.is_some() || a.va % 8 != 0 {
                    return invalid;
                }
                let off = match check_access(mem, a.rkey, a.va, 8, Access::REMOTE_ATOMIC) {
                    Ok(o) => o,
                    Err(_) => return Exec::Fatal(NakCode::RemoteAccessError),
                };
                if self.out_full() {
                    return Exec::Busy;
                }
                let aop = if op == CompareSwap {
                    AtomicOp::CompareSwap {
                        compare: a.compare,
                        swap: a.swap_add,
                    }
                } else {
                    AtomicOp::FetchAdd { add: a.swap_add }
                };
                let orig = mem.atomic(a.rkey, off, aop);
                let psn = pkt.bth.psn;
                self.remember(Resource::Atomic { psn, orig });
                self.resp.out.push_back(RespOut::AtomicAck { psn, orig });
                self.resp.msn = self.resp.msn.wrapping_add(1);
                Exec::Done(1)
            }
            _ => invalid,
        }
    }

    fn resp_transmit<M: Memory + ?Sized>(&mut self, buf: &mut [u8], mem: &M) -> Option<usize> {
        let qpn = self.cfg.remote_qpn;
        let msn = self.resp.msn;
        let ack = |syndrome| Some(Aeth { syndrome, msn });
        let ok = Syndrome::Ack {
            credits: Syndrome::NO_CREDITS,
        };
        let Some(front) = self.resp.out.front_mut() else {
            if self.resp.hold_ack || !std::mem::take(&mut self.resp.ack_pending) {
                return None;
            }
            let psn = self.resp.epsn.wrapping_add(Psn::MAX);
            let mut p = Packet::new(Bth::new(Opcode::Acknowledge, qpn, psn));
            p.aeth = ack(ok);
            self.stats.tx_acks += 1;
            return Some(emit(&self.tx_hdrs, buf, &p));
        };
        match front {
            RespOut::Nak { psn, syndrome } => {
                let mut p = Packet::new(Bth::new(Opcode::Acknowledge, qpn, *psn));
                p.aeth = ack(*syndrome);
                self.resp.out.pop_front();
                Some(emit(&self.tx_hdrs, buf, &p))
            }
            RespOut::AtomicAck { psn, orig } => {
                let mut p = Packet::new(Bth::new(Opcode::AtomicAcknowledge, qpn, *psn));
                p.aeth = ack(ok);
                p.atomic_ack_eth = Some(AtomicAckEth { orig: *orig });
                self.resp.out.pop_front();
                Some(emit(&self.tx_hdrs, buf, &p))
            }
            RespOut::Read {
                rkey,
                va,
                remaining,
                psn,
                first,
                ..
            } => {
                let mtu = self.cfg.mtu.get();
                let n = (*remaining).min(mtu);
                let last = *remaining <= mtu;
                let opcode = match (*first, last) {
                    (true, true) => Opcode::RdmaReadResponseOnly,
                    (true, false) => Opcode::RdmaReadResponseFirst,
                    (false, true) => Opcode::RdmaReadResponseLast,
                    (false, false) => Opcode::RdmaReadResponseMiddle,
                };
                let this_psn = *psn;
                if n > 0 {
                    // Checked again: the region may have gone since the request.
                    match check_access(mem, *rkey, *va, u64::from(n), Access::REMOTE_READ) {
                        Ok(o) => mem.read(*rkey, o, &mut self.scratch[..n as usize]),
                        Err(_) => {
                            self.resp_fatal(this_psn, NakCode::RemoteAccessError);
                            return self.error_transmit(buf);
                        }
                    }
                }
                *va = va.wrapping_add(u64::from(n));
                *remaining -= n;
                *psn = psn.wrapping_add(1);
                *first = false;
                if last {
                    self.resp.out.pop_front();
                }
                let mut p = Packet::new(Bth::new(opcode, qpn, this_psn));
                if opcode != Opcode::RdmaReadResponseMiddle {
                    p.aeth = ack(ok);
                }
                p.payload = &self.scratch[..n as usize];
                Some(emit(&self.tx_hdrs, buf, &p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_checks() {
        let mut m = VecMemory::new();
        let k = m.register(
            0x1000,
            vec![0; 0x100],
            Access::REMOTE_READ | Access::LOCAL_WRITE,
        );
        let ok = |addr, len, need| check_access(&m, k, addr, len, need);
        assert_eq!(ok(0x1000, 0x100, Access::REMOTE_READ), Ok(0));
        assert_eq!(ok(0x10FF, 1, Access::LOCAL_WRITE), Ok(0xFF));
        assert_eq!(ok(0x1100, 0, Access::NONE), Ok(0x100));
        let oob = |addr, len| AccessError::OutOfBounds { addr, len };
        assert_eq!(ok(0x10FF, 2, Access::NONE), Err(oob(0x10FF, 2)));
        assert_eq!(ok(0xFFF, 1, Access::NONE), Err(oob(0xFFF, 1)));
        // An address and length that overflow 64 bits.
        assert_eq!(
            ok(0x1001, u64::MAX, Access::NONE),
            Err(oob(0x1001, u64::MAX))
        );
        assert_eq!(
            ok(0x1000, 8, Access::REMOTE_WRITE),
            Err(AccessError::NotPermitted(Access::REMOTE_WRITE))
        );
        assert_eq!(
            check_access(&m, k ^ 4, 0x1000, 1, Access::NONE),
            Err(AccessError::NoSuchKey(k ^ 4))
        );
        let k2 = m.register(0, vec![0; 16], Access::ALL);
        assert_ne!(k, k2);
        assert_eq!(m.atomic(k2, 8, AtomicOp::FetchAdd { add: 5 }), 0);
        assert_eq!(
            m.atomic(
                k2,
                8,
                AtomicOp::CompareSwap {
                    compare: 5,
                    swap: 9
                }
            ),
            5
        );
        assert_eq!(m.bytes(k2).unwrap()[8..], 9u64.to_ne_bytes());
        assert_eq!(m.deregister(k2).map(|v| v.len()), Some(16));
        assert_eq!(m.region(k2), None);
        assert_eq!(
            format!("{:?}", Access::REMOTE_READ | Access::REMOTE_ATOMIC),
            "Access(REMOTE_READ | REMOTE_ATOMIC)"
        );
        assert_eq!(format!("{:?}", Access::NONE), "Access(NONE)");
    }

    #[test]
    fn rnr_timer_codes() {
        assert_eq!(rnr_timer_duration(0), Duration::from_micros(655_360));
        assert_eq!(rnr_timer_duration(1), Duration::from_micros(10));
        assert_eq!(rnr_timer_duration(12), Duration::from_micros(640));
        assert_eq!(rnr_timer_duration(31), Duration::from_micros(491_520));
        // Increasing from code 1 on.
        for c in 1..31 {
            assert!(rnr_timer_duration(c) < rnr_timer_duration(c + 1));
        }
    }

    #[test]
    fn configuration_is_checked() {
        let q = |v| Qpn::new(v).unwrap();
        let v4: SocketAddr = "10.0.0.1:4791".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:4791".parse().unwrap();
        let good = QpConfig::new(q(1), q(2), v4, v4);
        assert!(Qp::new(good.clone()).is_ok());
        let bad: [fn(&mut QpConfig); 9] = [
            |c| c.sq_depth = 0,
            |c| c.max_dest_rd_atomic = 0,
            |c| c.window = 0,
            |c| c.window = MAX_WINDOW + 1,
            |c| c.ack_req_every = 0,
            |c| c.timeout = Duration::ZERO,
            |c| c.min_rnr_timer = 32,
            |c| c.max_timeout = c.timeout / 2,
            |c| c.retry_budget = Duration::ZERO,
        ];
        for f in bad {
            let mut c = good.clone();
            f(&mut c);
            assert!(Qp::new(c).is_err());
        }
        assert!(Qp::new(QpConfig::new(q(1), q(2), v4, v6)).is_err());
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:4791".parse().unwrap();
        assert!(Qp::new(QpConfig::new(q(1), q(2), v4, mapped)).is_ok());
        assert_eq!(Mtu::new(4096), Some(Mtu::MTU_4096));
        for bad in [0, 128, 1000, 65536] {
            assert_eq!(Mtu::new(bad), None);
        }
        let mut c = good;
        c.mtu = Mtu::new(32768).unwrap();
        assert_eq!(c.max_msg_len(), MAX_MSG_BYTES);
        let qp = Qp::new(c).unwrap();
        assert_eq!(qp.max_datagram_len(), 32768 + MAX_HEADERS_LEN + ICRC_LEN);
        assert_eq!((qp.state(), qp.poll_timeout()), (QpState::Ready, None));
    }

    #[test]
    fn dest_qpn_peeks_at_the_bth() {
        let mut b = [0u8; 16];
        b[5..8].copy_from_slice(&[0x12, 0x34, 0x56]);
        assert_eq!(dest_qpn(&b), Qpn::new(0x12_3456));
        assert_eq!(dest_qpn(&b[..11]), None);
    }

    #[test]
    fn error_state_flushes_and_refuses() {
        let q = |v| Qpn::new(v).unwrap();
        let a: SocketAddr = "10.0.0.1:4791".parse().unwrap();
        let mut qp = Qp::new(QpConfig::new(q(1), q(2), a, a)).unwrap();
        let s = Sge {
            key: 1,
            addr: 0,
            len: 1,
        };
        qp.post_send(SendWr::send(1, s)).unwrap();
        qp.post_recv(RecvWr { wr_id: 2, sge: s }).unwrap();
        qp.set_error();
        let got: Vec<_> = std::iter::from_fn(|| qp.poll_completion())
            .map(|c| (c.wr_id, c.status, c.opcode))
            .collect();
        assert_eq!(
            got,
            [
                (1, WcStatus::Flushed, WcOpcode::Send),
                (2, WcStatus::Flushed, WcOpcode::Recv)
            ]
        );
        assert_eq!(
            qp.post_recv(RecvWr { wr_id: 3, sge: s }),
            Err(PostError::QpInError)
        );
        let mut buf = vec![0; qp.max_datagram_len()];
        assert_eq!(
            qp.poll_transmit(Instant::now(), &mut buf, &VecMemory::new()),
            None
        );
    }
}
