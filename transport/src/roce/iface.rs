//! `RoceIface`: one rank's soft-RoCE endpoint — a UDP socket ([`crate::udp`]),
//! one reliable-connected queue pair ([`super::engine::Qp`]) per peer, and the
//! transport traits on top.
//!
//! * Active messages are SENDs with immediate data (the handler id): the sender
//!   copies header and body into a slot of its registered send pool; every
//!   queue pair keeps [`RECV_DEPTH`] receive slots posted and reposts each after
//!   its message was delivered.
//! * [`Rma::put_zc`] is an RDMA WRITE from the caller's memory, registered for
//!   the time of the write (the engine reads it when it transmits and again if
//!   it retransmits, so the body is lent until the write is acknowledged);
//!   `get` and `put` are an RDMA READ / WRITE that complete in the call.
//! * Memory registered with [`Rma::mem_register`] is what peers' RDMA WRITEs,
//!   READs and atomics may reach; the engine checks every access against it.
//! * Queue pair numbers: rank `a`'s queue pair for peer `b` is `QPN_BASE + b`,
//!   and the initial PSNs of each direction are derived from the job's secret,
//!   so that a datagram from outside the job is dropped as out of sequence.
//! * Like a RoCE NIC, which binds a connected queue pair to its remote address,
//!   a queue pair takes datagrams only from its peer's address and UDP port (the
//!   one in the peer's connection address); anything else, and datagrams for a
//!   queue pair number it does not have, is dropped and counted
//!   ([`RoceIface::rejected`]), never logged.
//! * Packet authentication (on unless [`PreparedRoce::with_packet_auth`] turns
//!   it off, `DOS_ROCE_AUTH=0`): every packet carries a tag, keyed BLAKE3 over
//!   its BTH, extension headers and payload ([`super::wire`]'s module docs), so
//!   that a packet seen on the wire can neither be renumbered nor re-sent from
//!   elsewhere: its ICRC is easy to recompute, its tag is not. The key of the
//!   direction `a` → `b` is
//!   `BLAKE3-keyed(K, "dos roce v2 qp key" | a | b | nonce_a | nonce_b)` with
//!   `K = BLAKE3-derive_key("dos roce packet keys v1", job secret)` and the
//!   16-byte nonces that each endpoint draws afresh and sends in its connection
//!   address (which the job's authenticated wire-up carries): one key per queue
//!   pair, direction and incarnation, nothing without the job's secret (the
//!   [`crate::auth`] design: one secret per job, nothing accepted without proof).
//!   Both ends must agree: an endpoint that authenticates refuses to connect to
//!   one that does not ([`PreparedRoce::connect`]).
//!   Cost: 16 bytes per packet and one keyed BLAKE3 per packet at each end
//!   (about 1 µs per 4 KiB packet on a 2-core x86 VM with AVX2); between two
//!   namespace hosts sharing those 2 cores, 0.49 of the plain bandwidth and the
//!   same latency (ARCHITECTURE.md, `ci/bench-roce.sh`).
//!
//! * Retransmission backs off to a time budget ([`PreparedRoce::with_retry_budget`],
//!   30 s by default; see the engine's Retransmission notes). RNR NAKs (a peer
//!   whose receive slots are all taken because its owner has not delivered for
//!   a while) are retried without limit: a rank that computes for minutes is
//!   not dead, and one that died is reported by the launcher.
//! * Leaving drains ([`RoceIface::drain`], on drop): the endpoint goes on
//!   retransmitting until every message it sent was acknowledged, then answers
//!   its peers' retransmissions for [`LINGER`], bounded by the retry budget
//!   ([`PreparedRoce::with_retry_budget`]); a peer whose port is closed has left
//!   and is not waited for.
//!
//! Not `Sync`: one thread drives it (like every backend).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::engine::{
    dest_qpn, Access, AtomicOp, Memory, PostError, Qp, QpConfig, RegionInfo, RemoteAddr, SendWr,
    Sge, WcOpcode, WcStatus,
};
use super::icrc::{ipv4_id_mask, GSO_MAX_SEGMENTS, ICRC_LEN, MAX_IPV4_PAYLOAD};
use super::wire::{PacketKey, Psn, Qpn, AUTH_TAG_LEN};
use crate::udp::{RecvBatch, UdpSocket, GRO_SLOT};
use crate::{
    ActiveMessages, AmId, Caps, Error, Event, Iface, MemRegion, Progress, RemoteKey, Result, Rma,
    Sent,
};

/// QPN of this rank's queue pair for peer `p`: `QPN_BASE + p`.
pub const QPN_BASE: u32 = 0x100;
/// Receive slots posted per queue pair.
pub const RECV_DEPTH: usize = 64;
/// Send slots of the active-message pool.
const SEND_SLOTS: usize = 256;
/// Largest active message (header and body).
pub const DEFAULT_MAX_AM: usize = 64 * 1024;
/// How long a blocking get, put or atomic polls for its answer before sleeping.
const SYNC_SPIN: Duration = Duration::from_millis(1);
/// How long a leaving endpoint goes on answering after everything it sent was
/// acknowledged, until nothing has arrived for this long: a peer whose last
/// message's ACK was lost sends it again after its timeout (20 ms, more when
/// backing off), and must get its ACK, or it waits for a rank that has left.
pub const LINGER: Duration = Duration::from_millis(100);
/// Datagrams read per `recvmmsg`.
const RX_BATCH: usize = 32;
/// The largest RoCE MTU by default: 4096, the largest the IBA defines.
/// [`PreparedRoce::with_max_mtu`] allows up to 32768 (an extension only this
/// implementation accepts) on links whose MTU carries it.
pub const DEFAULT_MAX_MTU: u32 = 4096;
/// Bytes of a RoCEv2 datagram around the payload on an IPv4 link: IPv4 and
/// UDP headers, the largest transport headers, the authentication tag, the ICRC.
const LINK_OVERHEAD: usize =
    20 + 8 + super::wire::MAX_HEADERS_LEN + AUTH_TAG_LEN + super::icrc::ICRC_LEN;
/// Size of a packed remote key.
const RKEY_LEN: usize = 21;

/// Registered process memory, reached by key.
#[derive(Debug, Default)]
struct RawMemory {
    regions: HashMap<u32, (usize, usize, Access)>,
    next_key: u32,
}

impl RawMemory {
    fn register(&mut self, addr: usize, len: usize, access: Access) -> u32 {
        self.next_key = self.next_key.wrapping_add(1).max(1);
        while self.regions.contains_key(&self.next_key) {
            self.next_key = self.next_key.wrapping_add(1).max(1);
        }
        self.regions.insert(self.next_key, (addr, len, access));
        self.next_key
    }

    fn deregister(&mut self, key: u32) -> bool {
        self.regions.remove(&key).is_some()
    }
}

impl Memory for RawMemory {
    fn region(&self, key: u32) -> Option<RegionInfo> {
        self.regions
            .get(&key)
            .map(|&(addr, len, access)| RegionInfo {
                addr: addr as u64,
                len: len as u64,
                access,
            })
    }

    fn read(&self, key: u32, offset: u64, dst: &mut [u8]) {
        let (addr, len, _) = self.regions[&key];
        assert!(offset as usize + dst.len() <= len);
        // SAFETY: the engine checked the range against the region; registered
        // memory stays valid while registered (the registrant's promise).
        unsafe {
            std::ptr::copy(
                (addr + offset as usize) as *const u8,
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
    }

    fn write(&mut self, key: u32, offset: u64, src: &[u8]) {
        let (addr, len, _) = self.regions[&key];
        assert!(offset as usize + src.len() <= len);
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy(src.as_ptr(), (addr + offset as usize) as *mut u8, src.len()) };
    }

    fn atomic(&mut self, key: u32, offset: u64, op: AtomicOp) -> u64 {
        let (addr, len, _) = self.regions[&key];
        assert!(offset as usize + 8 <= len);
        let p = (addr + offset as usize) as *mut u64;
        assert!(p as usize % 8 == 0);
        // SAFETY: aligned and inside a registered region; other processes and
        // this one reach the word only with atomics.
        let w = unsafe { AtomicU64::from_ptr(p) };
        match op {
            AtomicOp::FetchAdd { add } => w.fetch_add(add, Ordering::AcqRel),
            AtomicOp::CompareSwap { compare, swap } => {
                match w.compare_exchange(compare, swap, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(v) | Err(v) => v,
                }
            }
        }
    }
}

/// What a work request id stands for.
#[derive(Debug, Clone, Copy)]
enum Wr {
    /// An active message in send slot `slot`.
    Am { slot: usize },
    /// A receive slot of a peer's queue pair.
    Recv { slot: usize },
    /// A zero-copy put: its temporary registration and the caller's token.
    Put { key: u32, token: u64 },
    /// A blocking get/put: its temporary registration; `done` is set on completion.
    Sync { key: u32 },
    /// A blocking remote atomic.
    Atomic,
}

struct PeerQp {
    qp: Qp,
}

struct State {
    qps: Vec<Option<PeerQp>>,
    mem: RawMemory,
    wrs: HashMap<u64, Wr>,
    next_wr: u64,
    send_free: Vec<usize>,
    /// Completed blocking operations: wr id → status.
    sync_done: HashMap<u64, WcStatus>,
    /// Completed remote atomics: wr id → status and old value.
    atomic_done: HashMap<u64, (WcStatus, u64)>,
    /// Peers whose queue pair failed, to report once.
    broken: VecDeque<usize>,
}

/// What the owner and the driver thread share.
struct Inner {
    sock: UdpSocket,
    /// Trains go out with UDP GSO (and come in with GRO); cleared if the kernel
    /// refuses a GSO send.
    gso: AtomicBool,
    st: Mutex<State>,
    rx: Mutex<RecvBatch>,
    /// Deliverable completions: (peer, recv slot, length, id) and (peer, token).
    stashed: Mutex<Stash>,
    /// When the owner last drove the engines (µs since `epoch`).
    owner_seen: AtomicU64,
    epoch: Instant,
    stop: AtomicBool,
    /// Written by the driver when it stashed something while the owner sleeps.
    wake: OwnedFd,
    /// The datagrams being built and sent; taken before `st`.
    tx: Mutex<TxBatch>,
    /// Trains of more than one packet sent with GSO and received with GRO.
    trains_out: AtomicU64,
    trains_in: AtomicU64,
    /// Held ACKs that the driver thread let go for an owner gone away.
    driver_releases: AtomicU64,
    /// Datagrams dropped because they did not come from the address and port of
    /// the queue pair they name (or named no queue pair of ours).
    rx_foreign: AtomicU64,
    /// Tests stop the driver thread for a while with this.
    #[cfg(test)]
    driver_paused: AtomicBool,
}

/// Datagrams built for one transmission, back to back in one buffer that is
/// kept from one transmission to the next (no allocation per datagram).
#[derive(Default)]
struct TxBatch {
    bytes: Vec<u8>,
    used: usize,
    dgrams: Vec<(SocketAddr, std::ops::Range<usize>)>,
}

impl TxBatch {
    fn clear(&mut self) {
        self.used = 0;
        self.dgrams.clear();
    }

    /// Room for a datagram of up to `max` bytes after the last one.
    fn room(&mut self, max: usize) -> &mut [u8] {
        if self.bytes.len() < self.used + max {
            self.bytes.resize(self.used + max, 0);
        }
        &mut self.bytes[self.used..self.used + max]
    }

    /// Makes the first `len` bytes of the last [`TxBatch::room`] a datagram to `to`.
    fn commit(&mut self, to: SocketAddr, len: usize) {
        self.dgrams.push((to, self.used..self.used + len));
        self.used += len;
    }

    /// Adds every datagram that `qp` has to send now.
    fn fill<M: super::engine::Memory + ?Sized>(&mut self, qp: &mut Qp, now: Instant, mem: &M) {
        let (to, max) = (qp.config().remote, qp.max_datagram_len());
        while let Some(len) = qp.poll_transmit(now, self.room(max), mem) {
            self.commit(to, len);
        }
    }

    #[cfg(test)]
    fn push(&mut self, to: SocketAddr, d: &[u8]) {
        self.room(d.len()).copy_from_slice(d);
        self.commit(to, d.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.dgrams[i].1.clone()]
    }

    /// Splits the datagrams into trains that one UDP GSO send can carry:
    /// consecutive datagrams to one destination, all of the first one's length
    /// but the last, which may be shorter; at most [`GSO_MAX_SEGMENTS`] and
    /// 64 KiB.
    fn trains(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.dgrams.len() {
            let (to, len) = (self.dgrams[i].0, self.dgrams[i].1.len());
            let mut total = len;
            let mut j = i + 1;
            while j < self.dgrams.len() && j - i < GSO_MAX_SEGMENTS {
                let (t, r) = &self.dgrams[j];
                if *t != to || r.len() > len || total + r.len() > MAX_IPV4_PAYLOAD {
                    break;
                }
                total += r.len();
                j += 1;
                if r.len() < len {
                    break;
                }
            }
            out.push(i..j);
            i = j;
        }
        out
    }

    /// Turns the ICRC of the `k`-th datagram of each train between "for IPv4
    /// identification 0" and "for identification `k`", the one the kernel gives
    /// it when it splits the train (its own inverse).
    fn set_train_ids(&mut self, trains: &[std::ops::Range<usize>]) {
        for r in trains {
            for (k, i) in r.clone().enumerate().skip(1) {
                let d = self.dgrams[i].1.clone();
                let body = d.len() - ICRC_LEN;
                let mask = ipv4_id_mask(body, k as u16).to_le_bytes();
                for (b, m) in self.bytes[d.start + body..d.end].iter_mut().zip(mask) {
                    *b ^= m;
                }
            }
        }
    }
}

type Stash = (Vec<(usize, usize, usize, u8)>, Vec<(usize, u64)>);

/// One rank's soft-RoCE endpoint; see the [module docs](self).
pub struct RoceIface {
    me: usize,
    n: usize,
    max_am: usize,
    inner: Arc<Inner>,
    send_pool: Box<[u8]>,
    send_key: u32,
    recv_pool: Box<[u8]>,
    recv_key: u32,
    /// Set while `progress` runs (a call from a callback does nothing).
    busy: Cell<bool>,
    /// Messages to itself.
    self_q: RefCell<VecDeque<(u8, Vec<u8>)>>,
    driver: Option<std::thread::JoinHandle<()>>,
    /// The queue pairs' retry budget: how long dropping the endpoint waits for
    /// its last messages to be acknowledged.
    retry_budget: Duration,
}

impl std::fmt::Debug for RoceIface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The queue pairs' state, for diagnosing a stuck exchange.
        let qps: Vec<String> = match self.inner.st.try_lock() {
            Ok(st) => st
                .qps
                .iter()
                .enumerate()
                .filter_map(|(p, q)| q.as_ref().map(|q| (p, &q.qp)))
                .map(|(p, qp)| {
                    format!(
                        "peer {p}: {:?}, next psn {}, expected {}, sq {}, rq {}, ack held {}, {:?}",
                        qp.state(),
                        qp.next_send_psn().get(),
                        qp.expected_psn().get(),
                        qp.send_queue_len(),
                        qp.recv_queue_len(),
                        qp.ack_held(),
                        qp.stats()
                    )
                })
                .collect(),
            Err(_) => vec!["(state locked)".to_string()],
        };
        f.debug_struct("RoceIface")
            .field("index", &self.me)
            .field("npeers", &self.n)
            .field("addr", &self.inner.sock.local_addr())
            .field("gso", &self.inner.gso.load(Ordering::Relaxed))
            .field("trains", &self.trains())
            .field("rx_foreign", &self.inner.rx_foreign.load(Ordering::Relaxed))
            .field("qps", &qps)
            .finish_non_exhaustive()
    }
}

/// A bound, not yet connected endpoint: its [`PreparedRoce::address`] goes to the peers.
#[derive(Debug)]
pub struct PreparedRoce {
    me: usize,
    n: usize,
    sock: UdpSocket,
    seed: [u8; 16],
    /// The MTU of the interface the socket is bound to (IP bytes).
    link_mtu: usize,
    max_mtu: u32,
    /// Send trains with UDP GSO and receive them with UDP GRO.
    segmentation: bool,
    /// The queue pairs' local ACK timeout, if not the engine's default.
    ack_timeout: Option<Duration>,
    /// The queue pairs' retry budget, if not the engine's default.
    retry_budget: Option<Duration>,
    /// Authenticate every packet (the default).
    auth: bool,
    /// This endpoint's fresh nonce, sent in its address: part of every packet key.
    nonce: [u8; NONCE_LEN],
    /// The job's key of packet keys, derived from its secret.
    job_key: JobKey,
}

/// Bytes of an endpoint's nonce.
const NONCE_LEN: usize = 16;

/// The key from which every packet key of a job is derived (not shown by `Debug`).
struct JobKey([u8; 32]);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobKey(..)")
    }
}

impl JobKey {
    fn new(secret: &crate::auth::Secret) -> JobKey {
        JobKey(blake3::derive_key(
            "dos roce packet keys v1",
            secret.as_bytes(),
        ))
    }

    /// The packet key of the direction `from` → `to` of the connection between
    /// the endpoints with nonces `from_nonce` and `to_nonce`.
    fn packet_key(
        &self,
        from: usize,
        to: usize,
        from_nonce: &[u8; NONCE_LEN],
        to_nonce: &[u8; NONCE_LEN],
    ) -> PacketKey {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"dos roce v2 qp key");
        h.update(&(from as u64).to_le_bytes());
        h.update(&(to as u64).to_le_bytes());
        h.update(from_nonce);
        h.update(to_nonce);
        PacketKey::from_bytes(*h.finalize().as_bytes())
    }
}

/// Datagrams an endpoint dropped as not its peers' ([`RoceIface::rejected`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Not from the address and UDP port of the queue pair they name, or for a
    /// queue pair number this endpoint does not have.
    pub wrong_source: u64,
    /// From the right address, with a wrong authentication tag.
    pub bad_tag: u64,
}

/// The largest RoCE MTU (a power of two from 256) whose datagrams fit an IP
/// MTU of `link_mtu` bytes, at most `cap`; as real RoCE devices do, a
/// 1500-byte Ethernet gets 1024 and a 9000-byte (jumbo) one 4096.
pub fn roce_mtu_for(link_mtu: usize, cap: u32) -> u32 {
    let mut m = 256u32;
    while m < cap && (2 * m) as usize + LINK_OVERHEAD <= link_mtu {
        m *= 2;
    }
    m
}

/// The MTU of the interface that holds `ip` (1500 if it cannot be found).
fn link_mtu_of(ip: IpAddr) -> usize {
    let IpAddr::V4(ip) = ip else { return 1500 };
    if ip.is_unspecified() {
        return 1500;
    }
    let mut found = None;
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; we read it only while alive.
    if unsafe { libc::getifaddrs(&mut ifs) } != 0 {
        return 1500;
    }
    let mut cur = ifs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null()
            // SAFETY: a non-null address of the list.
            || i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET
        {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        if u32::from_be(sin.sin_addr.s_addr) != u32::from(ip) {
            continue;
        }
        // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated and
        // shorter than IFNAMSIZ (the kernel's limit on interface names).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        // SAFETY: ifa_name is a NUL-terminated C string of the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_bytes();
        for (d, s) in req
            .ifr_name
            .iter_mut()
            .zip(name.iter().take(libc::IFNAMSIZ - 1))
        {
            *d = *s as libc::c_char;
        }
        // SAFETY: a datagram socket only to ask for the MTU; closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of `req`.
            if unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) } == 0 {
                // SAFETY: the kernel filled the MTU member of the union.
                found = Some(unsafe { req.ifr_ifru.ifru_mtu }.max(0) as usize);
            }
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(fd) };
        }
        break;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(ifs) };
    found.unwrap_or(1500)
}

/// The initial PSN of the direction `from` → `to`, derived from the job's secret.
fn initial_psn(seed: &[u8; 16], from: usize, to: usize) -> Psn {
    let mut h: u64 = 0x524f_4345;
    for v in [
        u64::from_le_bytes(seed[..8].try_into().expect("8")),
        u64::from_le_bytes(seed[8..].try_into().expect("8")),
        from as u64,
        to as u64,
    ] {
        h ^= v;
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    Psn::new((h & 0x00ff_ffff) as u32)
}

impl RoceIface {
    /// Binds endpoint `me` of `n` to `ip`, on UDP port 4791 if it is free and
    /// on a port the kernel chooses otherwise; `secret` seeds the initial PSNs
    /// of every connection.
    pub fn prepare(
        me: usize,
        n: usize,
        ip: IpAddr,
        secret: &crate::auth::Secret,
    ) -> Result<PreparedRoce> {
        // RoCEv2's own port if it is free (one rank per host: what capture
        // tools decode as RoCE without being told), any port otherwise.
        let sock = UdpSocket::bind(SocketAddr::new(ip, super::ROCE_V2_PORT))
            .or_else(|_| UdpSocket::bind(SocketAddr::new(ip, 0)))?;
        let mut seed = [0u8; 16];
        for (i, b) in secret.as_bytes().iter().enumerate() {
            seed[i % 16] ^= *b;
        }
        let mut nonce = [0u8; NONCE_LEN];
        crate::auth::fill_random(&mut nonce)?;
        Ok(PreparedRoce {
            me,
            n,
            sock,
            seed,
            link_mtu: link_mtu_of(ip),
            max_mtu: DEFAULT_MAX_MTU,
            segmentation: true,
            ack_timeout: None,
            retry_budget: None,
            auth: true,
            nonce,
            job_key: JobKey::new(secret),
        })
    }
}

impl PreparedRoce {
    /// Limits the RoCE MTU to `mtu` bytes (a power of two from 256 to 32768;
    /// above 4096 only peers of this implementation understand the packets).
    /// Every endpoint of a job should be given the same limit; a connection
    /// uses the smaller of its two ends' MTUs either way.
    pub fn with_max_mtu(mut self, mtu: u32) -> Result<PreparedRoce> {
        if super::engine::Mtu::new(mtu).is_none() {
            return Err(Error::Malformed {
                what: "roce MTU",
                reason: "not a power of two from 256 to 32768",
            });
        }
        self.max_mtu = mtu;
        Ok(self)
    }

    /// Whether to send trains of equal packets with UDP segmentation offload and
    /// to receive them in one piece with UDP GRO (on by default; used only where
    /// the kernel offers it). The packets on the wire are the same either way:
    /// each carries the ICRC for the IPv4 identification the kernel gives it
    /// ([`super::icrc::ipv4_id_mask`]).
    pub fn with_segmentation(mut self, on: bool) -> PreparedRoce {
        self.segmentation = on;
        self
    }

    /// Sets the local ACK timeout of every queue pair (how long a sender waits
    /// for an acknowledgement before it goes back and resends; IBA's local
    /// ACK timeout). The default is the engine's, 20 ms; it backs off to 1 s
    /// (or to `t` if that is longer) while nothing is acknowledged.
    pub fn with_ack_timeout(mut self, t: Duration) -> PreparedRoce {
        self.ack_timeout = Some(t);
        self
    }

    /// Sets how long every queue pair keeps retransmitting without progress
    /// before it gives its peer up ([`QpConfig::retry_budget`]; the default is
    /// [`super::engine::DEFAULT_RETRY_BUDGET`], 30 s), and so how long a
    /// leaving endpoint waits for its last messages to be acknowledged.
    pub fn with_retry_budget(mut self, t: Duration) -> Result<PreparedRoce> {
        if t.is_zero() {
            return Err(Error::Malformed {
                what: "roce retry budget",
                reason: "must not be zero",
            });
        }
        self.retry_budget = Some(t);
        Ok(self)
    }

    /// Whether every packet carries an authentication tag (on by default; see the
    /// [module docs](self)). Off (`DOS_ROCE_AUTH=0`), packets are plain RoCEv2,
    /// for peers that are RoCE devices: then only the source address check and
    /// the secret initial PSNs keep strangers' datagrams out. Every endpoint of a
    /// job must say the same.
    pub fn with_packet_auth(mut self, on: bool) -> PreparedRoce {
        self.auth = on;
        self
    }

    /// The RoCE MTU this endpoint offers: what its link carries, at most the limit.
    pub fn mtu(&self) -> u32 {
        roce_mtu_for(self.link_mtu, self.max_mtu)
    }

    /// The address peers connect to (25 bytes): IPv4 address, UDP port, the RoCE
    /// MTU this end offers, whether it authenticates packets and its nonce.
    pub fn address(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(ADDR_LEN);
        if let SocketAddr::V4(a) = self.sock.local_addr() {
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.port().to_le_bytes());
            v.extend_from_slice(&(self.mtu().trailing_zeros() as u16).to_le_bytes());
            v.push(u8::from(self.auth) * ADDR_FLAG_AUTH);
            v.extend_from_slice(&self.nonce);
        }
        v
    }

    /// Creates a queue pair for every peer whose address is given (`addrs[p]`;
    /// `None` for itself and for peers reached otherwise).
    ///
    /// Fails on an address that does not decode, and on a peer that does not
    /// authenticate packets when this end does, or the other way round (the job's
    /// endpoints were set up differently: `DOS_ROCE_AUTH`).
    pub fn connect(self, addrs: &[Option<Vec<u8>>]) -> Result<RoceIface> {
        let max_am = DEFAULT_MAX_AM;
        let n = self.n;
        if addrs.len() != n {
            return Err(Error::Malformed {
                what: "roce addresses",
                reason: "not one per peer",
            });
        }
        let mut mem = RawMemory::default();
        let send_pool = vec![0u8; SEND_SLOTS * max_am].into_boxed_slice();
        let send_key = mem.register(send_pool.as_ptr() as usize, send_pool.len(), Access::NONE);
        let npeers = addrs.iter().filter(|a| a.is_some()).count();
        let recv_pool = vec![0u8; (npeers * RECV_DEPTH).max(1) * max_am].into_boxed_slice();
        let recv_key = mem.register(
            recv_pool.as_ptr() as usize,
            recv_pool.len(),
            Access::LOCAL_WRITE,
        );
        let local = self.sock.local_addr();
        let my_mtu = self.mtu();
        let mut largest_dgram = 0;
        let mut qps = Vec::with_capacity(n);
        let mut st_wrs = HashMap::new();
        let mut next_wr = 1u64;
        let mut k = 0;
        for (p, a) in addrs.iter().enumerate() {
            let Some(a) = a else {
                qps.push(None);
                continue;
            };
            let PeerAddr {
                addr: remote,
                mtu: their_mtu,
                auth: their_auth,
                nonce: their_nonce,
            } = decode_addr(a)?;
            if their_auth != self.auth {
                return Err(Error::Malformed {
                    what: "roce address",
                    reason: if self.auth {
                        "a peer does not authenticate its packets and this end does \
                         (DOS_ROCE_AUTH differs between ranks)"
                    } else {
                        "a peer authenticates its packets and this end does not \
                         (DOS_ROCE_AUTH differs between ranks)"
                    },
                });
            }
            let mut cfg = QpConfig::new(qpn(p)?, qpn(self.me)?, local, remote);
            // Both ends compute the same: the smaller of the two offers.
            cfg.mtu = super::engine::Mtu::new(my_mtu.min(their_mtu)).ok_or(Error::Malformed {
                what: "roce address",
                reason: "MTU out of range",
            })?;
            cfg.send_psn = initial_psn(&self.seed, self.me, p);
            cfg.recv_psn = initial_psn(&self.seed, p, self.me);
            cfg.rq_depth = RECV_DEPTH * 2;
            if let Some(t) = self.ack_timeout {
                cfg.timeout = t;
                cfg.max_timeout = cfg.max_timeout.max(t);
            }
            if let Some(t) = self.retry_budget {
                cfg.retry_budget = t;
            }
            let mut qp = Qp::new(cfg).map_err(|e| Error::Malformed {
                what: "roce queue pair configuration",
                reason: e.0,
            })?;
            if self.auth {
                let k = &self.job_key;
                qp.set_packet_keys(
                    k.packet_key(self.me, p, &self.nonce, &their_nonce),
                    k.packet_key(p, self.me, &their_nonce, &self.nonce),
                );
            }
            largest_dgram = largest_dgram.max(qp.max_datagram_len());
            let recv_base = k * RECV_DEPTH;
            for s in 0..RECV_DEPTH {
                let slot = recv_base + s;
                let id = next_wr;
                next_wr += 1;
                st_wrs.insert(id, Wr::Recv { slot });
                qp.post_recv(super::engine::RecvWr {
                    wr_id: id,
                    sge: Sge {
                        key: recv_key,
                        addr: (recv_pool.as_ptr() as usize + slot * max_am) as u64,
                        len: max_am as u32,
                    },
                })
                .map_err(|_| Error::Malformed {
                    what: "roce receive queue",
                    reason: "too small for the receive slots",
                })?;
            }
            qps.push(Some(PeerQp { qp }));
            k += 1;
        }
        // SAFETY: plain system call.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::last_os("eventfd"));
        }
        let gso = self.segmentation && self.sock.enable_gro();
        // Room for one byte more than the largest datagram of any queue pair,
        // so that an oversized one shows as such; a whole train with GRO.
        let slot = if gso {
            GRO_SLOT
        } else {
            largest_dgram.max(256) + 1
        };
        let inner = Arc::new(Inner {
            sock: self.sock,
            gso: AtomicBool::new(gso),
            st: Mutex::new(State {
                qps,
                mem,
                wrs: st_wrs,
                next_wr,
                send_free: (0..SEND_SLOTS).rev().collect(),
                sync_done: HashMap::new(),
                atomic_done: HashMap::new(),
                broken: VecDeque::new(),
            }),
            rx: Mutex::new(RecvBatch::new(RX_BATCH, slot)),
            stashed: Mutex::new((Vec::new(), Vec::new())),
            owner_seen: AtomicU64::new(0),
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            tx: Mutex::new(TxBatch::default()),
            trains_out: AtomicU64::new(0),
            trains_in: AtomicU64::new(0),
            driver_releases: AtomicU64::new(0),
            rx_foreign: AtomicU64::new(0),
            #[cfg(test)]
            driver_paused: AtomicBool::new(false),
            // SAFETY: a fresh descriptor that we own.
            wake: unsafe { OwnedFd::from_raw_fd(efd) },
        });
        let d = inner.clone();
        let driver = std::thread::Builder::new()
            .name(format!("dos-roce-{}", self.me))
            .spawn(move || d.drive())
            .map_err(|e| Error::Sys {
                op: "spawn the roce driver thread",
                source: e,
            })?;
        Ok(RoceIface {
            me: self.me,
            n,
            max_am,
            inner,
            send_pool,
            send_key,
            recv_pool,
            recv_key,
            busy: Cell::new(false),
            self_q: RefCell::new(VecDeque::new()),
            driver: Some(driver),
            retry_budget: self
                .retry_budget
                .unwrap_or(super::engine::DEFAULT_RETRY_BUDGET),
        })
    }
}

fn qpn(p: usize) -> Result<Qpn> {
    Qpn::new(QPN_BASE + p as u32).ok_or(Error::Malformed {
        what: "roce queue pair number",
        reason: "too many ranks",
    })
}

/// Bytes of an endpoint's address: IPv4 address (4), port (2), log2 of its MTU
/// (2), flags (1), nonce (16).
const ADDR_LEN: usize = 9 + NONCE_LEN;
/// Address flag: the endpoint authenticates its packets.
const ADDR_FLAG_AUTH: u8 = 1;

/// A peer's connection address, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerAddr {
    /// Where its socket is.
    addr: SocketAddr,
    /// The RoCE MTU it offers.
    mtu: u32,
    /// Whether it authenticates its packets.
    auth: bool,
    /// Its nonce for the packet keys.
    nonce: [u8; NONCE_LEN],
}

/// An endpoint's address ([`PreparedRoce::address`]).
fn decode_addr(b: &[u8]) -> Result<PeerAddr> {
    let bad = |reason| Error::Malformed {
        what: "roce address",
        reason,
    };
    let Some((&[a, b2, c, d, p0, p1, m0, m1, flags], nonce)) = b.split_first_chunk::<9>() else {
        return Err(bad("not 25 bytes"));
    };
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| bad("not 25 bytes"))?;
    let log = u16::from_le_bytes([m0, m1]);
    let mtu = (8..=15)
        .contains(&log)
        .then(|| 1u32 << log)
        .ok_or(bad("MTU out of range"))?;
    if flags & !ADDR_FLAG_AUTH != 0 {
        return Err(bad("unknown flags"));
    }
    Ok(PeerAddr {
        addr: SocketAddr::new(IpAddr::from([a, b2, c, d]), u16::from_le_bytes([p0, p1])),
        mtu,
        auth: flags & ADDR_FLAG_AUTH != 0,
        nonce,
    })
}

/// A remote key: region key, address and length.
fn pack_key(key: u32, addr: usize, len: usize) -> Result<RemoteKey> {
    let mut b = [0u8; RKEY_LEN];
    b[0] = b'R';
    b[1..5].copy_from_slice(&key.to_le_bytes());
    b[5..13].copy_from_slice(&(addr as u64).to_le_bytes());
    b[13..21].copy_from_slice(&(len as u64).to_le_bytes());
    RemoteKey::from_bytes(&b)
}

fn unpack_key(k: &RemoteKey) -> Result<(u32, u64, u64)> {
    match k.as_bytes() {
        b if b.len() == RKEY_LEN && b[0] == b'R' => Ok((
            u32::from_le_bytes(b[1..5].try_into().expect("4")),
            u64::from_le_bytes(b[5..13].try_into().expect("8")),
            u64::from_le_bytes(b[13..21].try_into().expect("8")),
        )),
        _ => Err(Error::Malformed {
            what: "roce remote key",
            reason: "not a key of this backend",
        }),
    }
}

impl RoceIface {
    /// A handle that makes this endpoint's current or next `wait` return,
    /// usable from any thread (for a rank that must also hear shared memory).
    pub fn waker(&self) -> RoceWaker {
        RoceWaker(self.inner.clone())
    }

    /// Trains of packets sent with UDP GSO and received whole with UDP GRO so
    /// far (both 0 without segmentation).
    pub fn trains(&self) -> (u64, u64) {
        (
            self.inner.trains_out.load(Ordering::Relaxed),
            self.inner.trains_in.load(Ordering::Relaxed),
        )
    }

    /// Datagrams dropped so far as not its peers': from a wrong source, or with
    /// a wrong authentication tag (counted, never logged: a flood of them costs
    /// no more than reading them).
    pub fn rejected(&self) -> Rejected {
        let bad_tag = self
            .lock()
            .qps
            .iter()
            .flatten()
            .map(|pq| pq.qp.stats().rx_auth_failures)
            .sum();
        Rejected {
            wrong_source: self.inner.rx_foreign.load(Ordering::Relaxed),
            bad_tag,
        }
    }

    /// The UDP address of this endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.sock.local_addr()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    fn take_wr(st: &mut State, w: Wr) -> u64 {
        let id = st.next_wr;
        st.next_wr += 1;
        st.wrs.insert(id, w);
        id
    }

    /// Reposts receive slot `slot` of peer `p`.
    fn repost(&self, p: usize, slot: usize) {
        let mut st = self.lock();
        let id = Self::take_wr(&mut st, Wr::Recv { slot });
        let addr = (self.recv_pool.as_ptr() as usize + slot * self.max_am) as u64;
        if let Some(Some(pq)) = st.qps.get_mut(p) {
            let _ = pq.qp.post_recv(super::engine::RecvWr {
                wr_id: id,
                sge: Sge {
                    key: self.recv_key,
                    addr,
                    len: self.max_am as u32,
                },
            });
        }
    }

    /// Posts `wr` to peer `peer`'s queue pair and, with `ring` or when the
    /// queue pair had nothing under way, sends what it can at once (so that a
    /// message goes out without waiting for the next `progress`). Otherwise
    /// the work request waits for the next pump, post to that peer or `wait`
    /// (a doorbell rung once for many: one system call and one GSO train for a
    /// burst of small puts).
    fn post(&self, peer: usize, wr: SendWr, ring: bool) -> Result<()> {
        let mut tx = self.inner.tx();
        tx.clear();
        let mut guard = self.lock();
        let st = &mut *guard;
        let pq = match st.qps.get_mut(peer) {
            Some(Some(pq)) => pq,
            Some(None) => return Err(Error::PeerUnreachable { peer }),
            None => {
                return Err(Error::NoSuchPeer {
                    peer,
                    npeers: self.n,
                })
            }
        };
        // A queue pair with nothing under way sends at once: a lone put does
        // not wait for the next progress, a burst's first one opens it.
        let ring = ring || pq.qp.send_queue_len() == 0;
        pq.qp.post_send(wr).map_err(|e| match e {
            PostError::SendQueueFull | PostError::RecvQueueFull => Error::Busy { peer },
            // Broken: a Disconnected event for it is on its way.
            PostError::QpInError => Error::PeerUnreachable { peer },
            PostError::TooLarge { len, max } => Error::TooLarge {
                len: len as usize,
                max: max as usize,
            },
            PostError::Misaligned => Error::Malformed {
                what: "remote atomic",
                reason: "address not 8-byte aligned",
            },
        })?;
        if !ring {
            return Ok(());
        }
        let now = Instant::now();
        tx.fill(&mut pq.qp, now, &st.mem);
        // The ACK held back for this peer follows the answer.
        if pq.qp.ack_held() {
            pq.qp.hold_ack(false);
            tx.fill(&mut pq.qp, now, &st.mem);
        }
        drop(guard);
        self.inner.transmit(&mut tx);
        self.inner
            .owner_seen
            .store(self.inner.now_us(), Ordering::Relaxed);
        Ok(())
    }

    /// Runs a blocking RDMA READ or WRITE of `len` bytes at `local` to completion.
    fn sync_op(
        &self,
        peer: usize,
        local: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
        read: bool,
    ) -> Result<()> {
        let (key, addr, rlen) = unpack_key(rkey)?;
        crate::check_bounds(offset, len, rlen as usize)?;
        if peer == self.me {
            // Itself: a copy within its own registered memory.
            let mut st = self.lock();
            let Some(r) = st
                .mem
                .region(key)
                .filter(|r| r.addr == addr && r.len == rlen)
            else {
                return Err(Error::RemoteAccess {
                    offset,
                    len,
                    region_len: 0,
                });
            };
            // SAFETY: `local` is the caller's buffer of `len` bytes.
            let buf = unsafe { std::slice::from_raw_parts_mut(local, len) };
            if read {
                st.mem.read(key, offset as u64, buf);
            } else {
                st.mem.write(key, offset as u64, buf);
            }
            let _ = r;
            return Ok(());
        }
        let (lkey, id) = {
            let mut st = self.lock();
            let lkey = st.mem.register(local as usize, len, Access::LOCAL_WRITE);
            let id = Self::take_wr(&mut st, Wr::Sync { key: lkey });
            (lkey, id)
        };
        let sge = Sge {
            key: lkey,
            addr: local as u64,
            len: len as u32,
        };
        let remote = RemoteAddr {
            rkey: key,
            addr: addr + offset as u64,
        };
        let wr = if read {
            SendWr::read(id, sge, remote)
        } else {
            SendWr::write(id, sge, remote)
        };
        if let Err(e) = self.post(peer, wr, true) {
            let mut st = self.lock();
            st.mem.deregister(lkey);
            st.wrs.remove(&id);
            return Err(e);
        }
        self.await_wr(peer, offset, len, rlen as usize, |st| {
            st.sync_done.remove(&id).map(|s| (s, ()))
        })
    }

    /// Waits for the completion of the synchronous work request that `take`
    /// finds (it removes and returns the status and the result), pumping the
    /// driver meanwhile; maps a failed status to the caller's error.
    fn await_wr<T>(
        &self,
        peer: usize,
        offset: usize,
        len: usize,
        region_len: usize,
        mut take: impl FnMut(&mut State) -> Option<(WcStatus, T)>,
    ) -> Result<T> {
        let spin_until = Instant::now() + SYNC_SPIN;
        loop {
            self.inner
                .owner_seen
                .store(self.inner.now_us(), Ordering::Relaxed);
            self.inner.pump(false);
            if let Some((status, v)) = take(&mut self.lock()) {
                return match status {
                    WcStatus::Success => Ok(v),
                    WcStatus::RemoteAccessError => Err(Error::RemoteAccess {
                        offset,
                        len,
                        region_len,
                    }),
                    _ => Err(Error::PeerUnreachable { peer }),
                };
            }
            // The answer usually comes within microseconds: poll for a
            // while before sleeping (a wake-up costs tens of them here).
            if Instant::now() < spin_until {
                std::hint::spin_loop();
            } else {
                self.wait_socket(Duration::from_millis(1));
            }
        }
    }

    /// Sleeps until the socket is readable or the driver has news, for at
    /// most `timeout` (or until the earliest timer of a queue pair).
    fn wait_socket(&self, timeout: Duration) {
        let now = Instant::now();
        let t = match self.inner.next_timer() {
            Some(t) if t <= now => return,
            Some(t) => (t - now).min(timeout),
            None => timeout,
        };
        let mut pfd = [
            libc::pollfd {
                fd: self.inner.sock.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.inner.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds.
        unsafe { libc::poll(pfd.as_mut_ptr(), 2, ms) };
        if pfd[1].revents != 0 {
            let mut b = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our eventfd.
            unsafe { libc::read(self.inner.wake.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every step leaves the state consistent; a panic elsewhere does not matter here.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Receives, drives every queue pair, transmits; stashes what the owner
    /// must deliver. Returns whether it stashed anything, and how many
    /// datagrams it handled. With `defer_acks`, a queue pair that delivered
    /// messages holds its ACK back ([`Qp::hold_ack`]: the owner is about to
    /// deliver them and, likely, to answer; the answer goes out first) until
    /// the owner sends to that peer, its next pump, or before it sleeps.
    fn pump(&self, defer_acks: bool) -> (bool, usize) {
        let now = Instant::now();
        let mut ams = Vec::new();
        let mut puts = Vec::new();
        let mut tx = self.tx();
        tx.clear();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut handled = 0;
        // 0. ACKs held back by the last pump go first.
        for pq in st.qps.iter_mut().flatten() {
            if pq.qp.ack_held() {
                pq.qp.hold_ack(false);
                tx.fill(&mut pq.qp, now, &st.mem);
            }
        }
        // 1. Datagrams in.
        {
            let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..8 {
                let k = self.sock.recv_batch(&mut rx).unwrap_or(0);
                handled += k;
                for i in 0..k {
                    let piece = rx.get(i);
                    if piece.segment < piece.data.len() {
                        self.trains_in.fetch_add(1, Ordering::Relaxed);
                    }
                    for d in piece.segments() {
                        self.receive(st, now, piece.src, d);
                    }
                }
                if k < RX_BATCH {
                    break;
                }
            }
        }
        // 2. Timers, completions, transmissions.
        for p in 0..st.qps.len() {
            let Some(pq) = st.qps[p].as_mut() else {
                continue;
            };
            if pq.qp.poll_timeout().is_some_and(|t| t <= now) {
                pq.qp.handle_timeout(now);
            }
            let delivered = ams.len();
            while let Some(c) = pq.qp.poll_completion() {
                let Some(w) = st.wrs.remove(&c.wr_id) else {
                    continue;
                };
                match (w, c.opcode) {
                    (Wr::Recv { slot }, WcOpcode::Recv) if c.status == WcStatus::Success => {
                        ams.push((p, slot, c.byte_len as usize, c.imm.unwrap_or(0) as u8));
                    }
                    (Wr::Recv { .. }, _) => {}
                    (Wr::Am { slot }, _) => st.send_free.push(slot),
                    (Wr::Put { key, token }, _) => {
                        st.mem.deregister(key);
                        puts.push((p, token));
                    }
                    (Wr::Sync { key }, _) => {
                        st.mem.deregister(key);
                        st.sync_done.insert(c.wr_id, c.status);
                    }
                    (Wr::Atomic, _) => {
                        st.atomic_done
                            .insert(c.wr_id, (c.status, c.atomic_orig.unwrap_or(0)));
                    }
                }
                if c.status != WcStatus::Success
                    && c.status != WcStatus::Flushed
                    && !st.broken.contains(&p)
                {
                    st.broken.push_back(p);
                }
            }
            pq.qp.hold_ack(defer_acks && ams.len() > delivered);
            tx.fill(&mut pq.qp, now, &st.mem);
        }
        let news = !ams.is_empty() || !puts.is_empty() || !st.broken.is_empty();
        if news {
            // Still under the state lock: stashes keep the order of completions.
            let mut s = self.stashed.lock().unwrap_or_else(|e| e.into_inner());
            s.0.extend(ams);
            s.1.extend(puts);
        }
        drop(guard);
        self.transmit(&mut tx);
        (news, handled)
    }

    /// Hands datagram `d` from `src` to the queue pair it names, if it has one
    /// and `src` is that queue pair's peer (a RoCE NIC binds a connected queue
    /// pair to its remote address); counts it as foreign otherwise.
    fn receive(&self, st: &mut State, now: Instant, src: SocketAddr, d: &[u8]) {
        // Our queue pair for peer p is number BASE + p.
        let peer = dest_qpn(d).map(|q| q.get().wrapping_sub(QPN_BASE) as usize);
        match peer.and_then(|p| st.qps.get_mut(p)) {
            Some(Some(pq)) if pq.qp.config().remote == src => {
                pq.qp.handle_datagram(now, d, &mut st.mem);
            }
            _ => {
                self.rx_foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The transmit batch (taken before the state lock).
    fn tx(&self) -> MutexGuard<'_, TxBatch> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the datagrams of `tx`: trains with UDP GSO where the kernel does
    /// it, one datagram at a time otherwise, many per system call; what the
    /// socket does not take in a moment counts as lost (the engine retransmits
    /// it).
    fn transmit(&self, tx: &mut TxBatch) {
        if tx.dgrams.is_empty() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(5);
        let mut first = 0;
        if self.gso.load(Ordering::Relaxed) && tx.dgrams.len() > 1 {
            let trains = tx.trains();
            tx.set_train_ids(&trains);
            let segs: Vec<&[u8]> = (0..tx.dgrams.len()).map(|i| tx.get(i)).collect();
            let msgs: Vec<(SocketAddr, &[&[u8]])> = trains
                .iter()
                .map(|r| (tx.dgrams[r.start].0, &segs[r.clone()]))
                .collect();
            let mut sent = 0;
            let mut refused = false;
            while sent < msgs.len() && Instant::now() < deadline {
                match self.sock.send_segmented(&msgs[sent..]) {
                    Ok(k) => {
                        let t = msgs[sent..sent + k].iter().filter(|m| m.1.len() > 1);
                        self.trains_out
                            .fetch_add(t.count() as u64, Ordering::Relaxed);
                        sent += k;
                    }
                    Err(Error::Unsupported { .. }) => {
                        refused = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !refused {
                return;
            }
            // This kernel or path cannot: one datagram at a time from now on,
            // the rest with identification 0 again.
            self.gso.store(false, Ordering::Relaxed);
            drop(msgs);
            drop(segs);
            tx.set_train_ids(&trains[sent..]);
            first = trains.get(sent).map_or(tx.dgrams.len(), |r| r.start);
        }
        let msgs: Vec<(SocketAddr, &[u8])> = (first..tx.dgrams.len())
            .map(|i| (tx.dgrams[i].0, tx.get(i)))
            .collect();
        let mut sent = 0;
        while sent < msgs.len() && Instant::now() < deadline {
            match self.sock.send_batch(&msgs[sent..]) {
                Ok(k) => sent += k,
                Err(_) => break,
            }
        }
    }

    /// Sends what waits: the ACKs held back and the work requests posted
    /// without a doorbell. Returns how many held ACKs it let go.
    fn flush_pending(&self) -> usize {
        let mut tx = self.tx();
        tx.clear();
        let mut released = 0;
        {
            let now = Instant::now();
            let mut guard = self.lock();
            let st = &mut *guard;
            for pq in st.qps.iter_mut().flatten() {
                released += usize::from(pq.qp.ack_held());
                pq.qp.hold_ack(false);
                tx.fill(&mut pq.qp, now, &st.mem);
            }
        }
        self.transmit(&mut tx);
        released
    }

    /// The earliest timer of any queue pair.
    fn next_timer(&self) -> Option<Instant> {
        self.lock()
            .qps
            .iter()
            .flatten()
            .filter_map(|pq| pq.qp.poll_timeout())
            .min()
    }

    /// The driver thread: while the owner has not driven the engines for a
    /// millisecond (it computes, or sleeps), it receives, acknowledges,
    /// retransmits and sends on its behalf, and wakes the owner when there is
    /// something to deliver. While the owner is active it only checks in.
    fn drive(&self) {
        while !self.stop.load(Ordering::Acquire) {
            #[cfg(test)]
            if self.driver_paused.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let idle = self
                .now_us()
                .saturating_sub(self.owner_seen.load(Ordering::Relaxed));
            if idle < 1000 {
                std::thread::sleep(Duration::from_micros(1000 - idle));
                continue;
            }
            // What the owner held back or left unsent before it went away.
            let released = self.flush_pending() as u64;
            self.driver_releases.fetch_add(released, Ordering::Relaxed);
            let timeout = match self.next_timer() {
                Some(t) => t
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
                None => Duration::from_millis(50),
            };
            poll_fd(self.sock.fd(), timeout);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if self.pump(false).0 {
                let one = 1u64.to_ne_bytes();
                // SAFETY: 8 bytes from a live buffer to our eventfd.
                unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
            }
        }
    }
}

/// Wakes a [`RoceIface`] blocked in `wait` ([`RoceIface::waker`]).
#[derive(Clone)]
pub struct RoceWaker(Arc<Inner>);

impl std::fmt::Debug for RoceWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoceWaker").finish_non_exhaustive()
    }
}

impl RoceWaker {
    /// Makes the endpoint's current or next `wait` return.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: 8 bytes from a live buffer to the endpoint's eventfd.
        unsafe { libc::write(self.0.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn poll_fd(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

impl RoceIface {
    /// Leaves gracefully (what dropping the endpoint does): keeps receiving,
    /// acknowledging and retransmitting until every message sent has been
    /// acknowledged (a lost last message is sent again, instead of leaving its
    /// peer waiting for it forever), then for [`LINGER`] after the last datagram
    /// arrived (answering the retransmissions of peers whose ACKs were lost);
    /// bounded by the retry budget. A peer whose port answers "unreachable" has
    /// left: what is still unacknowledged to it is given up at once. Messages
    /// that arrive meanwhile are dropped. Returns whether everything sent was
    /// acknowledged (or given up to a peer that left).
    pub fn drain(&self) -> bool {
        let start = Instant::now();
        // A budget of centuries: a day is as good as forever here.
        let deadline = start
            .checked_add(self.retry_budget)
            .unwrap_or(start + Duration::from_secs(86_400));
        let errors = self.inner.sock.enable_errors();
        let mut last_rx = start;
        loop {
            self.inner
                .owner_seen
                .store(self.inner.now_us(), Ordering::Relaxed);
            let (_, handled) = self.inner.pump(false);
            if handled > 0 {
                last_rx = Instant::now();
            }
            // What arrives now has no taker: drop it, and give its receive
            // slot back (a peer that still sends must not run into RNR NAKs).
            let (ams, _) =
                std::mem::take(&mut *self.inner.stashed.lock().unwrap_or_else(|e| e.into_inner()));
            for (peer, slot, _, _) in ams {
                self.repost(peer, slot);
            }
            let refused = if errors {
                self.inner.sock.take_refused()
            } else {
                Vec::new()
            };
            let pending = {
                let mut st = self.lock();
                st.broken.clear();
                let mut pending = false;
                for pq in st.qps.iter_mut().flatten() {
                    if refused.contains(&pq.qp.config().remote) {
                        pq.qp.set_error();
                    }
                    pending |= pq.qp.state() == super::engine::QpState::Ready
                        && pq.qp.send_queue_len() > 0;
                }
                pending
            };
            let now = Instant::now();
            if now >= deadline {
                return !pending;
            }
            if !pending && now.saturating_duration_since(last_rx) >= LINGER {
                return true;
            }
            let _ = self.inner.flush_pending();
            self.wait_socket(Duration::from_millis(5));
        }
    }
}

impl Drop for RoceIface {
    fn drop(&mut self) {
        self.drain();
        self.inner.stop.store(true, Ordering::Release);
        if let Some(t) = self.driver.take() {
            let _ = t.join();
        }
    }
}

impl Iface for RoceIface {
    fn name(&self) -> &'static str {
        "roce"
    }

    fn caps(&self) -> Caps {
        RoceIface::caps_with(self.max_am)
    }

    fn index(&self) -> usize {
        self.me
    }

    fn npeers(&self) -> usize {
        self.n
    }
}

impl RoceIface {
    /// The capabilities of an endpoint whose largest active message is `max_am`.
    pub fn caps_with(max_am: usize) -> Caps {
        Caps {
            am: true,
            max_am,
            max_inline: max_am,
            rma: true,
            put_zc: true,
            atomics: true,
            inter_node: true,
        }
    }
}

impl ActiveMessages for RoceIface {
    fn am_send(&self, peer: usize, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        let len = hdr.len() + payload.len();
        if len > self.max_am {
            return Err(Error::TooLarge {
                len,
                max: self.max_am,
            });
        }
        if peer >= self.n {
            return Err(Error::NoSuchPeer {
                peer,
                npeers: self.n,
            });
        }
        if peer == self.me {
            let mut q = self.self_q.borrow_mut();
            if q.len() >= SEND_SLOTS {
                return Err(Error::Busy { peer });
            }
            q.push_back((id, [hdr, payload].concat()));
            return Ok(());
        }
        let (slot, wr) = {
            let mut st = self.lock();
            if st.broken.contains(&peer) {
                return Err(Error::PeerUnreachable { peer });
            }
            let Some(slot) = st.send_free.pop() else {
                return Err(Error::Busy { peer });
            };
            (slot, Self::take_wr(&mut st, Wr::Am { slot }))
        };
        let base = self.send_pool.as_ptr() as usize + slot * self.max_am;
        // SAFETY: the slot is ours until its send completes; `max_am` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), base as *mut u8, hdr.len());
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                (base + hdr.len()) as *mut u8,
                payload.len(),
            );
        }
        let sge = Sge {
            key: self.send_key,
            addr: base as u64,
            len: len as u32,
        };
        let r = self.post(peer, SendWr::send_imm(wr, sge, u32::from(id)), true);
        if r.is_err() {
            let mut st = self.lock();
            st.wrs.remove(&wr);
            st.send_free.push(slot);
        }
        r
    }
}

impl Progress for RoceIface {
    fn progress<F: FnMut(Event<'_>)>(&self, mut f: F) -> usize {
        if self.busy.replace(true) {
            return 0;
        }
        self.inner
            .owner_seen
            .store(self.inner.now_us(), Ordering::Relaxed);
        // Datagrams handled count as work done even when they deliver no
        // event (one-sided operations served for a peer, ACKs): a waiter
        // that sees work keeps spinning instead of going to sleep while a
        // peer's puts and gets stream in.
        let (_, handled) = self.inner.pump(true);
        let (ams, puts) =
            std::mem::take(&mut *self.inner.stashed.lock().unwrap_or_else(|e| e.into_inner()));
        let mut count = 0;
        let mine: Vec<(u8, Vec<u8>)> = self.self_q.borrow_mut().drain(..).collect();
        for (id, data) in mine {
            f(Event::Am {
                src: self.me,
                id,
                data: &data,
            });
            count += 1;
        }
        for (peer, token) in puts {
            f(Event::SendDone { peer, token });
            count += 1;
        }
        for (peer, slot, len, id) in ams {
            let off = slot * self.max_am;
            let data = &self.recv_pool[off..off + len.min(self.max_am)];
            f(Event::Am {
                src: peer,
                id,
                data,
            });
            self.repost(peer, slot);
            count += 1;
        }
        let broken: Vec<usize> = self.lock().broken.drain(..).collect();
        for peer in broken {
            f(Event::Disconnected { peer });
            count += 1;
        }
        self.busy.set(false);
        count + handled
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        let stashed = {
            let s = self.inner.stashed.lock().unwrap_or_else(|e| e.into_inner());
            !s.0.is_empty() || !s.1.is_empty()
        };
        if stashed || !self.self_q.borrow().is_empty() {
            return Ok(());
        }
        // Held-back ACKs and unsent work requests go out before this rank sleeps.
        let _ = self.inner.flush_pending();
        self.wait_socket(timeout);
        Ok(())
    }
}

impl Rma for RoceIface {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        let key = self.lock().mem.register(
            ptr as usize,
            len,
            Access::LOCAL_WRITE
                | Access::REMOTE_WRITE
                | Access::REMOTE_READ
                | Access::REMOTE_ATOMIC,
        );
        Ok(MemRegion {
            addr: ptr as usize,
            len,
            rkey: pack_key(key, ptr as usize, len)?,
        })
    }

    fn mem_deregister(&self, region: &MemRegion) -> Result<()> {
        let (key, _, _) = unpack_key(&region.rkey)?;
        if self.lock().mem.deregister(key) {
            Ok(())
        } else {
            Err(Error::Malformed {
                what: "roce remote key",
                reason: "no such registration",
            })
        }
    }

    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        self.sync_op(peer, dst, len, rkey, offset, true)
    }

    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        self.sync_op(peer, src as *mut u8, len, rkey, offset, false)
    }

    fn atomic(
        &self,
        peer: usize,
        rkey: &RemoteKey,
        offset: usize,
        op: crate::RemoteAtomic,
    ) -> Result<u64> {
        let (key, addr, rlen) = unpack_key(rkey)?;
        crate::check_bounds(offset, 8, rlen as usize)?;
        let word = addr + offset as u64;
        if word % 8 != 0 {
            return Err(Error::Malformed {
                what: "remote atomic",
                reason: "word not 8-byte aligned",
            });
        }
        let aop = match op {
            crate::RemoteAtomic::FetchAdd(add) => AtomicOp::FetchAdd { add },
            crate::RemoteAtomic::CompareSwap { compare, swap } => {
                AtomicOp::CompareSwap { compare, swap }
            }
        };
        if peer == self.me {
            let mut st = self.lock();
            if st
                .mem
                .region(key)
                .filter(|r| r.addr == addr && r.len == rlen)
                .is_none()
            {
                return Err(Error::RemoteAccess {
                    offset,
                    len: 8,
                    region_len: 0,
                });
            }
            return Ok(st.mem.atomic(key, offset as u64, aop));
        }
        let id = {
            let mut st = self.lock();
            Self::take_wr(&mut st, Wr::Atomic)
        };
        let remote = RemoteAddr {
            rkey: key,
            addr: word,
        };
        let wr = match aop {
            AtomicOp::FetchAdd { add } => SendWr::fetch_add(id, remote, add),
            AtomicOp::CompareSwap { compare, swap } => {
                SendWr::compare_swap(id, remote, compare, swap)
            }
        };
        if let Err(e) = self.post(peer, wr, true) {
            self.lock().wrs.remove(&id);
            return Err(e);
        }
        self.await_wr(peer, offset, 8, rlen as usize, |st| {
            st.atomic_done.remove(&id)
        })
    }

    unsafe fn put_zc(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
        token: u64,
    ) -> Result<Sent> {
        let (key, addr, rlen) = unpack_key(rkey)?;
        crate::check_bounds(offset, len, rlen as usize)?;
        let (lkey, id) = {
            let mut st = self.lock();
            let lkey = st.mem.register(src as usize, len, Access::NONE);
            (lkey, Self::take_wr(&mut st, Wr::Put { key: lkey, token }))
        };
        let wr = SendWr::write(
            id,
            Sge {
                key: lkey,
                addr: src as u64,
                len: len as u32,
            },
            RemoteAddr {
                rkey: key,
                addr: addr + offset as u64,
            },
        );
        match self.post(peer, wr, false) {
            Ok(()) => Ok(Sent::Pending),
            Err(e) => {
                let mut st = self.lock();
                st.mem.deregister(lkey);
                st.wrs.remove(&id);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(n: usize) -> Vec<RoceIface> {
        make_with(&vec![DEFAULT_MAX_MTU; n])
    }

    /// Endpoints on loopback, endpoint `i` limited to MTU `mtus[i]`.
    fn make_with(mtus: &[u32]) -> Vec<RoceIface> {
        make_full(mtus, &vec![true; mtus.len()])
    }

    /// As [`make_with`], endpoint `i` with segmentation `segs[i]`.
    fn make_full(mtus: &[u32], segs: &[bool]) -> Vec<RoceIface> {
        make_tweaked(mtus.len(), |i, p| {
            p.with_max_mtu(mtus[i]).unwrap().with_segmentation(segs[i])
        })
    }

    /// `n` endpoints on loopback, endpoint `i` set up by `tweak(i, ..)`.
    fn make_tweaked(
        n: usize,
        tweak: impl Fn(usize, PreparedRoce) -> PreparedRoce,
    ) -> Vec<RoceIface> {
        let secret = crate::auth::Secret::generate().unwrap();
        let preps: Vec<PreparedRoce> = (0..n)
            .map(|i| {
                tweak(
                    i,
                    RoceIface::prepare(i, n, "127.0.0.1".parse().unwrap(), &secret).unwrap(),
                )
            })
            .collect();
        let addrs: Vec<Vec<u8>> = preps.iter().map(|p| p.address()).collect();
        preps
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let a: Vec<Option<Vec<u8>>> =
                    (0..n).map(|j| (j != i).then(|| addrs[j].clone())).collect();
                p.connect(&a).unwrap()
            })
            .collect()
    }

    #[test]
    fn initial_psns_differ_per_direction_and_job() {
        let s = [7u8; 16];
        assert_ne!(initial_psn(&s, 0, 1), initial_psn(&s, 1, 0));
        assert_ne!(initial_psn(&s, 0, 1), initial_psn(&[8u8; 16], 0, 1));
    }

    #[test]
    fn keys_and_addresses_round_trip_and_reject_garbage() {
        let k = pack_key(5, 0x1000, 64).unwrap();
        assert_eq!(unpack_key(&k).unwrap(), (5, 0x1000, 64));
        assert!(unpack_key(&RemoteKey::from_bytes(&[1, 2, 3]).unwrap()).is_err());
        assert!(decode_addr(&[1, 2, 3]).is_err());
        // The MTU travels as its log2, 8 (256) to 15 (32768); then the flags
        // and the nonce.
        let mut ok = [7u8; ADDR_LEN];
        ok[..9].copy_from_slice(&[198, 18, 0, 1, 0xb7, 0x12, 12, 0, 1]);
        assert_eq!(
            decode_addr(&ok).unwrap(),
            PeerAddr {
                addr: "198.18.0.1:4791".parse().unwrap(),
                mtu: 4096,
                auth: true,
                nonce: [7; NONCE_LEN],
            }
        );
        for bad_log in [0u8, 7, 16, 255] {
            let mut a = ok;
            a[6] = bad_log;
            assert!(decode_addr(&a).is_err(), "log2 MTU {bad_log}");
        }
        let mut a = ok;
        a[8] = 0;
        assert!(!decode_addr(&a).unwrap().auth);
        a[8] = 2;
        assert!(decode_addr(&a).is_err(), "unknown flag");
        assert!(decode_addr(&ok[..6]).is_err());
        assert!(decode_addr(&ok[..ADDR_LEN - 1]).is_err());
        assert!(decode_addr(&[ok.as_slice(), &[0]].concat()).is_err());
        // What an endpoint sends decodes to itself.
        let secret = crate::auth::Secret::generate().unwrap();
        let p = RoceIface::prepare(0, 2, "127.0.0.1".parse().unwrap(), &secret).unwrap();
        let a = decode_addr(&p.address()).unwrap();
        assert_eq!(
            (a.addr, a.auth, a.nonce),
            (p.sock.local_addr(), true, p.nonce)
        );
    }

    /// Waits (pumping both) until `b` delivers a message, which it returns.
    fn next_message(a: &RoceIface, b: &RoceIface) -> (u8, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            a.progress(|_| {});
            let mut got = None;
            b.progress(|ev| {
                if let Event::Am { id, data, .. } = ev {
                    got.get_or_insert((id, data.to_vec()));
                }
            });
            if let Some(m) = got {
                return m;
            }
            assert!(Instant::now() < deadline, "no message");
        }
    }

    /// A SEND_ONLY_WITH_IMMEDIATE (how active messages travel) to `b`'s queue
    /// pair for peer 0 at the PSN it expects next, with a valid ICRC for the
    /// datagram `from` → `b`, and a tag made with `key` if given: what someone
    /// who saw the traffic but has no key can make.
    fn forge(b: &RoceIface, from: SocketAddr, key: Option<PacketKey>) -> Vec<u8> {
        use super::super::icrc::IpUdp;
        use super::super::wire::{Bth, Framing, ImmDt, Opcode, Packet};
        let epsn = b.lock().qps[0].as_ref().unwrap().qp.expected_psn();
        let mut p = Packet::new(Bth::new(
            Opcode::SendOnlyWithImmediate,
            qpn(0).unwrap(),
            epsn,
        ));
        p.imm = Some(ImmDt(66));
        p.payload = b"forged!!";
        let f = Framing {
            hdrs: IpUdp::new(from, b.local_addr()),
            key,
        };
        let mut d = vec![0u8; 128];
        let n = p.encode_framed(&f, &mut d).unwrap();
        d.truncate(n);
        d
    }

    /// The attack, on the receive path: a packet with the right QPN,
    /// the next PSN and a valid ICRC, from another port, or from the peer's own
    /// address without the key; none is delivered, each is counted, and the
    /// connection goes on as if nothing happened.
    #[test]
    fn forged_packets_are_dropped_and_the_connection_goes_on() {
        let mut eps = make(2);
        let b = eps.pop().unwrap();
        let a = eps.pop().unwrap();
        a.am_send(1, 5, b"one", b"").unwrap();
        assert_eq!(next_message(&a, &b), (5, b"one".to_vec()));
        let peer = a.local_addr();
        let stranger = SocketAddr::new(peer.ip(), peer.port().wrapping_add(1));
        let epsn = b.lock().qps[0].as_ref().unwrap().qp.expected_psn();
        let guess = PacketKey::from_bytes([0x5a; 32]);
        let receive = |from: SocketAddr, d: &[u8]| {
            let mut st = b.lock();
            b.inner.receive(&mut st, Instant::now(), from, d);
        };
        // From another port, even with the right tag (as if the key leaked).
        let right_key = {
            let st = b.lock();
            let qp = &st.qps[0].as_ref().unwrap().qp;
            qp.rx_key().cloned()
        };
        receive(stranger, &forge(&b, stranger, None));
        receive(stranger, &forge(&b, stranger, right_key.clone()));
        // For a queue pair that does not exist.
        let mut other = forge(&b, peer, None);
        other[7] = 0x77;
        receive(peer, &other);
        assert_eq!(b.rejected().wrong_source, 3);
        // From the peer's address and port: without a tag, with a guessed one.
        receive(peer, &forge(&b, peer, None));
        receive(peer, &forge(&b, peer, Some(guess)));
        assert_eq!(b.rejected().bad_tag, 1);
        {
            let st = b.lock();
            let qp = &st.qps[0].as_ref().unwrap().qp;
            assert_eq!(qp.expected_psn(), epsn, "a forged packet was taken");
            assert_eq!(qp.stats().rx_malformed, 1);
        }
        // The real thing still works, and nothing forged was delivered.
        a.am_send(1, 6, b"two", b"").unwrap();
        assert_eq!(next_message(&a, &b), (6, b"two".to_vec()));
        assert!(right_key.is_some());
        assert_eq!(
            b.rejected(),
            Rejected {
                wrong_source: 3,
                bad_tag: 1
            }
        );
    }

    #[test]
    fn endpoints_must_agree_on_packet_authentication() {
        let secret = crate::auth::Secret::generate().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = RoceIface::prepare(0, 2, ip, &secret).unwrap();
        let b = RoceIface::prepare(1, 2, ip, &secret)
            .unwrap()
            .with_packet_auth(false);
        let (aa, ba) = (a.address(), b.address());
        for (p, theirs) in [(a, ba), (b, aa)] {
            match p.connect(&[None, Some(theirs)]) {
                Err(Error::Malformed {
                    what: "roce address",
                    reason,
                }) => assert!(reason.contains("DOS_ROCE_AUTH"), "{reason}"),
                other => panic!("connected: {:?}", other.map(|_| ())),
            }
        }
    }

    /// Without authentication (`DOS_ROCE_AUTH=0`) packets are plain RoCEv2 and
    /// still flow; the source check stays.
    #[test]
    fn plain_endpoints_exchange_messages_and_check_sources() {
        let mut eps = make_tweaked(2, |_, p| p.with_packet_auth(false));
        let b = eps.pop().unwrap();
        let a = eps.pop().unwrap();
        a.am_send(1, 5, b"one", &[1; 5000]).unwrap();
        assert_eq!(next_message(&a, &b).0, 5);
        let stranger = SocketAddr::new(a.local_addr().ip(), a.local_addr().port() ^ 1);
        let forged = forge(&b, stranger, None);
        b.inner
            .receive(&mut b.lock(), Instant::now(), stranger, &forged);
        assert_eq!(b.rejected().wrong_source, 1);
        a.am_send(1, 6, b"two", b"").unwrap();
        assert_eq!(next_message(&a, &b), (6, b"two".to_vec()));
    }

    #[test]
    fn the_mtu_follows_the_link_like_a_roce_device() {
        assert_eq!(roce_mtu_for(1500, 4096), 1024);
        assert_eq!(roce_mtu_for(9000, 4096), 4096);
        assert_eq!(roce_mtu_for(9000, 32768), 8192);
        assert_eq!(roce_mtu_for(65536, 32768), 32768);
        assert_eq!(roce_mtu_for(2048, 4096), 1024);
        assert_eq!(roce_mtu_for(9000, 1024), 1024);
        // Nothing below IBA's smallest.
        assert_eq!(roce_mtu_for(300, 4096), 256);
        // Loopback's 64 KiB carries IBA's largest.
        assert_eq!(link_mtu_of("127.0.0.1".parse().unwrap()), 65536);
        let secret = crate::auth::Secret::generate().unwrap();
        let p = RoceIface::prepare(0, 1, "127.0.0.1".parse().unwrap(), &secret).unwrap();
        assert_eq!(p.mtu(), 4096);
        assert!(p.with_max_mtu(1000).is_err());
    }

    #[test]
    fn held_back_acks_go_out_when_the_owner_goes_away() {
        // A long ACK timeout, so that a busy machine cannot make the driver
        // thread miss it: an ACK held until a retransmission still shows.
        let mut eps = make_tweaked(2, |_, p| p.with_ack_timeout(Duration::from_secs(2)));
        let b = eps.pop().unwrap();
        let a = eps.pop().unwrap();
        // b's owner takes the message itself (its driver thread is paused
        // meanwhile, so a busy machine cannot hand it to the driver) and
        // holds the ACK back for an answer that never comes.
        b.inner.driver_paused.store(true, Ordering::Release);
        // Past the driver's last check-in (it may be asleep in the socket).
        std::thread::sleep(Duration::from_millis(60));
        a.am_send(1, 5, b"hello", b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = false;
        while !got {
            b.progress(|ev| got |= matches!(ev, Event::Am { id: 5, .. }));
            assert!(Instant::now() < deadline, "no message");
        }
        assert!(b.lock().qps[0].as_ref().unwrap().qp.ack_held());
        // b's owner now stays away: the driver thread must let the ACK go
        // when it sees that (after 1 ms), long before a's retransmission.
        b.inner.driver_paused.store(false, Ordering::Release);
        let acked = || {
            let st = a.lock();
            let qp = &st.qps[1].as_ref().unwrap().qp;
            qp.send_queue_len() == 0 && st.send_free.len() == SEND_SLOTS
        };
        let until = Instant::now() + Duration::from_millis(1900);
        while !acked() && Instant::now() < until {
            a.progress(|_| {});
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(acked(), "the ACK was held until a retransmission");
        let st = a.lock();
        assert_eq!(st.qps[1].as_ref().unwrap().qp.stats().tx_retransmits, 0);
        // Let go by the driver's check on an absent owner, not by chance (its
        // next pump after 50 ms of quiet would send it too, too late for the
        // default 20 ms timer).
        assert_eq!(b.inner.driver_releases.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn leaving_waits_until_the_last_message_is_acknowledged() {
        let mut eps = make_tweaked(2, |_, p| {
            p.with_retry_budget(Duration::from_secs(20)).unwrap()
        });
        let b = eps.pop().unwrap();
        let a = eps.pop().unwrap();
        // b hears nothing for a while: its driver thread is paused and its
        // owner does not progress (a stopped or descheduled process).
        b.inner.driver_paused.store(true, Ordering::Release);
        std::thread::sleep(Duration::from_millis(60));
        a.am_send(1, 5, b"last words", b"").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let leaving = std::thread::spawn(move || {
            let t0 = Instant::now();
            drop(a);
            let _ = tx.send(t0.elapsed());
        });
        // a does not leave while its last message is unacknowledged (it
        // used to, and the message was lost with it).
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "a left with its last message unacknowledged"
        );
        // b is back: it gets the message (once) and acknowledges it; a leaves.
        b.inner.driver_paused.store(false, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = 0;
        while got == 0 {
            b.progress(|ev| {
                if let Event::Am { id: 5, data, .. } = ev {
                    assert_eq!(data, b"last words");
                    got += 1;
                }
            });
            assert!(Instant::now() < deadline, "no message");
        }
        let took = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a left once its message was acknowledged");
        leaving.join().unwrap();
        assert!(took >= Duration::from_millis(500), "{took:?}");
        b.progress(|ev| assert!(!matches!(ev, Event::Am { .. }), "delivered twice"));
    }

    #[test]
    fn leaving_gives_up_at_once_on_a_peer_that_has_left() {
        let mut eps = make_tweaked(2, |_, p| {
            p.with_retry_budget(Duration::from_secs(20)).unwrap()
        });
        let b = eps.pop().unwrap();
        let a = eps.pop().unwrap();
        let t0 = Instant::now();
        drop(b);
        // Nothing was under way: b left after lingering a moment.
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // A message to it is never acknowledged, but its port answers
        // "unreachable": a does not wait for its 20 s retry budget.
        a.am_send(1, 5, b"anyone?", b"").unwrap();
        let t0 = Instant::now();
        drop(a);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_zero_retry_budget_is_refused() {
        let secret = crate::auth::Secret::generate().unwrap();
        let p = RoceIface::prepare(0, 2, "127.0.0.1".parse().unwrap(), &secret).unwrap();
        assert!(matches!(
            p.with_retry_budget(Duration::ZERO),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn ends_with_different_mtus_use_the_smaller() {
        // 256 against 4096: a 10 000-byte message is 40 packets each way.
        let mut eps = make_with(&[4096, 256]);
        let b = eps.pop().unwrap();
        let a = eps.pop().unwrap();
        let msg: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        a.am_send(1, 3, b"", &msg).unwrap();
        b.am_send(0, 4, b"", &msg).unwrap();
        let (mut at_a, mut at_b) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while at_a.is_none() || at_b.is_none() {
            a.progress(|ev| {
                if let Event::Am { id: 4, data, .. } = ev {
                    at_a = Some(data.to_vec());
                }
            });
            b.progress(|ev| {
                if let Event::Am { id: 3, data, .. } = ev {
                    at_b = Some(data.to_vec());
                }
            });
            assert!(Instant::now() < deadline, "messages lost");
        }
        assert_eq!(at_a.unwrap(), msg);
        assert_eq!(at_b.unwrap(), msg);
        for e in [&a, &b] {
            let st = e.lock();
            let qp = st.qps.iter().flatten().next().unwrap();
            assert_eq!(qp.qp.config().mtu.get(), 256);
        }
    }

    #[test]
    fn two_endpoints_exchange_messages_and_puts() {
        let mut eps = make(2);
        let b = eps.pop().unwrap();
        let a = eps.pop().unwrap();
        let mut region = vec![0u8; 100_000];
        let r = b.mem_register(region.as_mut_ptr(), region.len()).unwrap();
        a.am_send(1, 9, b"key:", r.rkey.as_bytes()).unwrap();
        let src: Vec<u8> = (0..90_000u32).map(|i| (i * 7) as u8).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = None;
        while got.is_none() {
            a.progress(|_| {});
            b.progress(|ev| {
                if let Event::Am {
                    src: 0,
                    id: 9,
                    data,
                } = ev
                {
                    got = Some(data.to_vec());
                }
            });
            assert!(Instant::now() < deadline, "no message");
        }
        assert_eq!(&got.unwrap()[..4], b"key:");
        // SAFETY: `src` outlives the put (we wait for its SendDone).
        let s = unsafe { a.put_zc(1, src.as_ptr(), src.len(), &r.rkey, 10, 77) }.unwrap();
        assert_eq!(s, Sent::Pending);
        let mut done = false;
        while !done {
            a.progress(|ev| {
                if let Event::SendDone { peer: 1, token: 77 } = ev {
                    done = true;
                }
            });
            b.progress(|_| {});
            assert!(Instant::now() < deadline, "put never done");
        }
        assert!(region[10..90_010] == src[..]);
        assert!(region[..10].iter().all(|&x| x == 0));
    }

    /// Endpoints with and without UDP GSO/GRO move data both ways: trains
    /// split by the receiving kernel (no GRO there) carry ICRCs for their
    /// identifications, trains received whole are split by the driver.
    #[test]
    fn endpoints_with_and_without_segmentation_interoperate() {
        let eps = make_full(&[4096, 4096, 1024], &[true, false, true]);
        const LEN: usize = 300_000;
        let mut regions: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; 3 * LEN]).collect();
        let keys: Vec<_> = eps
            .iter()
            .zip(regions.iter_mut())
            .map(|(e, r)| e.mem_register(r.as_mut_ptr(), r.len()).unwrap())
            .collect();
        for (i, e) in eps.iter().enumerate() {
            for (j, key) in keys.iter().enumerate() {
                if i == j {
                    continue;
                }
                let src: Vec<u8> = (0..LEN).map(|k| (k * 31 + i * 7 + j) as u8).collect();
                // SAFETY: `src` and `back` outlive the blocking calls.
                unsafe { e.put(j, src.as_ptr(), LEN, &key.rkey, i * LEN) }.unwrap();
                let mut back = vec![0u8; LEN];
                // SAFETY: as above.
                unsafe { e.get(j, back.as_mut_ptr(), LEN, &key.rkey, i * LEN) }.unwrap();
                assert!(back == src, "{i} -> {j}");
            }
        }
        for (j, r) in regions.iter().enumerate() {
            for i in (0..3).filter(|&i| i != j) {
                let want: Vec<u8> = (0..LEN).map(|k| (k * 31 + i * 7 + j) as u8).collect();
                assert!(r[i * LEN..(i + 1) * LEN] == want[..], "{i} -> {j}");
            }
        }
        let t: Vec<(u64, u64)> = eps.iter().map(|e| e.trains()).collect();
        // 0 and 2 send trains (puts, READ responses) and receive them whole
        // from each other; 1 neither sends nor joins any.
        assert!(t[0].0 > 0 && t[2].0 > 0, "{t:?}");
        assert!(t[0].1 > 0 && t[2].1 > 0, "{t:?}");
        assert_eq!(t[1], (0, 0));
    }

    #[test]
    fn trains_follow_the_gso_rules_and_carry_their_identifications() {
        use super::super::icrc::{icrc, IpUdp};
        let a: SocketAddr = "198.18.0.1:4791".parse().unwrap();
        let b: SocketAddr = "198.18.0.2:4791".parse().unwrap();
        let mut tx = TxBatch::default();
        let mut add = |to: SocketAddr, len: usize, fill: u8| {
            let mut d = vec![fill; len];
            let c = icrc(&IpUdp::new(a, to), &d[..len - ICRC_LEN]).unwrap();
            d[len - ICRC_LEN..].copy_from_slice(&c.to_le_bytes());
            tx.push(to, &d);
        };
        for k in 0..3 {
            add(b, 1040, k); // 0..3: a train
        }
        add(b, 520, 9); // 3: its shorter last
        add(b, 1000, 1); // 4..: a new one (70 datagrams: 64, then 6)
        for k in 0..69 {
            add(b, 1000, k);
        }
        // (63 of 1040 bytes would pass 64 KiB: such a train stops at 62.)
        add(a, 1040, 2); // another destination
        add(a, 2000, 3); // longer: new train
        for _ in 0..40 {
            add(a, 2000, 4); // 64 KiB: 32 of 2000 bytes
        }
        let trains = tx.trains();
        assert_eq!(
            trains,
            vec![0..4, 4..68, 68..74, 74..75, 75..107, 107..116],
            "{trains:?}"
        );
        tx.set_train_ids(&trains);
        for r in &trains {
            for (k, i) in r.clone().enumerate() {
                let d = tx.get(i);
                let (to, n) = (tx.dgrams[i].0, d.len());
                let hdrs = IpUdp {
                    ipv4_id: k as u16,
                    ..IpUdp::new(a, to)
                };
                let want = icrc(&hdrs, &d[..n - ICRC_LEN]).unwrap();
                assert_eq!(d[n - ICRC_LEN..], want.to_le_bytes(), "datagram {i}");
            }
        }
        // Its own inverse.
        tx.set_train_ids(&trains);
        for i in 0..tx.dgrams.len() {
            let d = tx.get(i);
            let n = d.len();
            let want = icrc(&IpUdp::new(a, tx.dgrams[i].0), &d[..n - ICRC_LEN]).unwrap();
            assert_eq!(d[n - ICRC_LEN..], want.to_le_bytes());
        }
    }

    /// A kernel that refuses GSO sends (here: a socket without UDP checksums,
    /// which Linux will not segment) turns segmentation off for the endpoint;
    /// what was refused goes out one datagram at a time, with the ICRCs for
    /// identification 0 again.
    #[test]
    fn a_refused_gso_send_falls_back_to_single_datagrams() {
        // A long ACK timeout: a busy machine must not cause retransmissions.
        let eps = make_tweaked(2, |_, p| p.with_ack_timeout(Duration::from_secs(2)));
        let one = 1i32;
        // SAFETY: setting an int socket option on a live descriptor.
        let r = unsafe {
            libc::setsockopt(
                eps[0].inner.sock.fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        assert!(eps[0].inner.gso.load(Ordering::Relaxed));
        let mut region = vec![0u8; 200_000];
        let key = eps[1]
            .mem_register(region.as_mut_ptr(), region.len())
            .unwrap();
        let src: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // SAFETY: `src` outlives the blocking put.
        unsafe { eps[0].put(1, src.as_ptr(), src.len(), &key.rkey, 0) }.unwrap();
        assert!(region == src);
        assert!(!eps[0].inner.gso.load(Ordering::Relaxed));
        assert_eq!(eps[0].trains().0, 0);
        let st = eps[0].lock();
        // Nothing was lost on the way: the refused trains went out at once.
        assert_eq!(st.qps[1].as_ref().unwrap().qp.stats().tx_retransmits, 0);
    }
}
