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
//!
//! # Files
//!
//! * `mod.rs`: the configuration, the [`Qp`] and what both halves share (completions,
//!   the error state);
//! * `memory.rs`: [`Memory`], [`check_access`], [`VecMemory`];
//! * `wr.rs`: work requests, completions, states and statistics;
//! * `requester.rs`: the send queue, acknowledgements, go-back-N and the timers;
//! * `responder.rs`: execution of requests, duplicates, responder resources.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::icrc::{IpUdp, ICRC_LEN};
use super::wire::{
    Aeth, AtomicAckEth, AtomicEth, Bth, Framing, ImmDt, Msn, NakCode, Opcode, Packet, PacketKey,
    Psn, Qpn, Reth, Syndrome, WireError, BTH_LEN, MAX_HEADERS_LEN,
};

mod memory;
mod requester;
mod responder;
mod wr;

pub use memory::*;
use requester::*;
use responder::*;
pub use wr::*;

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

/// The destination queue pair number of a datagram (BTH bytes 5 to 7), read without
/// any check: for demultiplexing before [`Qp::handle_datagram`], which checks it again.
pub fn dest_qpn(dgram: &[u8]) -> Option<Qpn> {
    let b = dgram.get(..BTH_LEN)?;
    Qpn::new(u32::from_be_bytes([0, b[5], b[6], b[7]]))
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
