//! Bringing a soft-RoCE endpoint up: binding ([`RoceIface::prepare`]), its
//! connection address, the MTU, the initial PSNs and packet keys, and
//! [`PreparedRoce::connect`], which makes one queue pair per peer.

use super::iface::*;
use super::mem::*;
use super::progress::*;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::engine::{Access, Qp, QpConfig, Sge};
use super::udp::{RecvBatch, UdpSocket, GRO_SLOT};
use super::wire::{PacketKey, Psn, Qpn};
use crate::{Error, Result};

/// A bound, not yet connected endpoint: its [`PreparedRoce::address`] goes to the peers.
#[derive(Debug)]
pub struct PreparedRoce {
    pub(super) me: usize,
    pub(super) n: usize,
    pub(super) sock: UdpSocket,
    pub(super) seed: [u8; 16],
    /// The MTU of the interface the socket is bound to (IP bytes).
    pub(super) link_mtu: usize,
    pub(super) max_mtu: u32,
    /// Send trains with UDP GSO and receive them with UDP GRO.
    pub(super) segmentation: bool,
    /// The queue pairs' local ACK timeout, if not the engine's default.
    pub(super) ack_timeout: Option<Duration>,
    /// The queue pairs' retry budget, if not the engine's default.
    pub(super) retry_budget: Option<Duration>,
    /// Authenticate every packet (the default).
    pub(super) auth: bool,
    /// This endpoint's fresh nonce, sent in its address: part of every packet key.
    pub(super) nonce: [u8; NONCE_LEN],
    /// The job's key of packet keys, derived from its secret.
    pub(super) job_key: JobKey,
}

/// Bytes of an endpoint's nonce.
pub(super) const NONCE_LEN: usize = 16;

/// The key from which every packet key of a job is derived (not shown by `Debug`).
pub(super) struct JobKey([u8; 32]);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobKey(..)")
    }
}

impl JobKey {
    pub(super) fn new(secret: &crate::auth::Secret) -> JobKey {
        JobKey(blake3::derive_key(
            "dos roce packet keys v1",
            secret.as_bytes(),
        ))
    }

    /// The packet key of the direction `from` → `to` of the connection between
    /// the endpoints with nonces `from_nonce` and `to_nonce`.
    pub(super) fn packet_key(
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
pub(super) fn link_mtu_of(ip: IpAddr) -> usize {
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
pub(super) fn initial_psn(seed: &[u8; 16], from: usize, to: usize) -> Psn {
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
    /// [module docs](super::iface)). Off (`DOS_ROCE_AUTH=0`), packets are plain RoCEv2,
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

pub(super) fn qpn(p: usize) -> Result<Qpn> {
    Qpn::new(QPN_BASE + p as u32).ok_or(Error::Malformed {
        what: "roce queue pair number",
        reason: "too many ranks",
    })
}

/// Bytes of an endpoint's address: IPv4 address (4), port (2), log2 of its MTU
/// (2), flags (1), nonce (16).
pub(super) const ADDR_LEN: usize = 9 + NONCE_LEN;
/// Address flag: the endpoint authenticates its packets.
pub(super) const ADDR_FLAG_AUTH: u8 = 1;

/// A peer's connection address, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PeerAddr {
    /// Where its socket is.
    pub(super) addr: SocketAddr,
    /// The RoCE MTU it offers.
    pub(super) mtu: u32,
    /// Whether it authenticates its packets.
    pub(super) auth: bool,
    /// Its nonce for the packet keys.
    pub(super) nonce: [u8; NONCE_LEN],
}

/// An endpoint's address ([`PreparedRoce::address`]).
pub(super) fn decode_addr(b: &[u8]) -> Result<PeerAddr> {
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
