//! `RoceIface`: one rank's soft-RoCE endpoint — a UDP socket ([`super::udp`]),
//! one reliable-connected queue pair ([`super::engine::Qp`]) per peer, and the
//! transport traits on top.
//!
//! * Active messages are SENDs with immediate data (the handler id): the sender
//!   copies header and body into a slot of its registered send pool; every
//!   queue pair keeps [`RECV_DEPTH`] receive slots posted and reposts each after
//!   its message was delivered.
//! * [`Rma::put_zc`](crate::Rma::put_zc) is an RDMA WRITE from the caller's memory, registered for
//!   the time of the write (the engine reads it when it transmits and again if
//!   it retransmits, so the body is lent until the write is acknowledged);
//!   `get` and `put` are an RDMA READ / WRITE that complete in the call.
//! * Memory registered with [`Rma::mem_register`](crate::Rma::mem_register) is what peers' RDMA WRITEs,
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
//!
//! # Files
//!
//! * `iface.rs` (this one): the endpoint, its shared state, active messages and
//!   the blocking operations;
//! * `connect.rs`: binding, the connection address, MTU, initial PSNs and packet
//!   keys, [`PreparedRoce::connect`];
//! * `mem.rs`: registered memory, remote keys and the [`crate::Rma`] operations;
//! * `progress.rs`: building and sending trains of datagrams, the receive path,
//!   the timers, the driver thread, draining, and [`crate::Progress`].

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::engine::{Access, Memory, PostError, Qp, RemoteAddr, SendWr, Sge, WcStatus};
use super::udp::{RecvBatch, UdpSocket};
use super::wire::AUTH_TAG_LEN;
use crate::{ActiveMessages, AmId, Caps, Error, Iface, RemoteKey, Result};

pub use super::connect::{roce_mtu_for, PreparedRoce};
pub use super::progress::RoceWaker;

use super::mem::*;
use super::progress::*;

/// QPN of this rank's queue pair for peer `p`: `QPN_BASE + p`.
pub const QPN_BASE: u32 = 0x100;
/// Receive slots posted per queue pair.
pub const RECV_DEPTH: usize = 64;
/// Send slots of the active-message pool.
pub(super) const SEND_SLOTS: usize = 256;
/// Largest active message (header and body).
pub const DEFAULT_MAX_AM: usize = 64 * 1024;
/// How long a blocking get, put or atomic polls for its answer before sleeping.
pub(super) const SYNC_SPIN: Duration = Duration::from_millis(1);
/// How long a leaving endpoint goes on answering after everything it sent was
/// acknowledged, until nothing has arrived for this long: a peer whose last
/// message's ACK was lost sends it again after its timeout (20 ms, more when
/// backing off), and must get its ACK, or it waits for a rank that has left.
pub const LINGER: Duration = Duration::from_millis(100);
/// Datagrams read per `recvmmsg`.
pub(super) const RX_BATCH: usize = 32;
/// The largest RoCE MTU by default: 4096, the largest the IBA defines.
/// [`PreparedRoce::with_max_mtu`] allows up to 32768 (an extension only this
/// implementation accepts) on links whose MTU carries it.
pub const DEFAULT_MAX_MTU: u32 = 4096;
/// Bytes of a RoCEv2 datagram around the payload on an IPv4 link: IPv4 and
/// UDP headers, the largest transport headers, the authentication tag, the ICRC.
pub(super) const LINK_OVERHEAD: usize =
    20 + 8 + super::wire::MAX_HEADERS_LEN + AUTH_TAG_LEN + super::icrc::ICRC_LEN;
/// Size of a packed remote key.
pub(super) const RKEY_LEN: usize = 21;

/// What a work request id stands for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wr {
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

pub(super) struct PeerQp {
    pub(super) qp: Qp,
}

pub(super) struct State {
    pub(super) qps: Vec<Option<PeerQp>>,
    pub(super) mem: RawMemory,
    pub(super) wrs: HashMap<u64, Wr>,
    pub(super) next_wr: u64,
    pub(super) send_free: Vec<usize>,
    /// Completed blocking operations: wr id → status.
    pub(super) sync_done: HashMap<u64, WcStatus>,
    /// Completed remote atomics: wr id → status and old value.
    pub(super) atomic_done: HashMap<u64, (WcStatus, u64)>,
    /// Peers whose queue pair failed, to report once.
    pub(super) broken: VecDeque<usize>,
}

/// What the owner and the driver thread share.
pub(super) struct Inner {
    pub(super) sock: UdpSocket,
    /// Trains go out with UDP GSO (and come in with GRO); cleared if the kernel
    /// refuses a GSO send.
    pub(super) gso: AtomicBool,
    pub(super) st: Mutex<State>,
    pub(super) rx: Mutex<RecvBatch>,
    /// Deliverable completions: (peer, recv slot, length, id) and (peer, token).
    pub(super) stashed: Mutex<Stash>,
    /// When the owner last drove the engines (µs since `epoch`).
    pub(super) owner_seen: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) stop: AtomicBool,
    /// Written by the driver when it stashed something while the owner sleeps.
    pub(super) wake: OwnedFd,
    /// The datagrams being built and sent; taken before `st`.
    pub(super) tx: Mutex<TxBatch>,
    /// Trains of more than one packet sent with GSO and received with GRO.
    pub(super) trains_out: AtomicU64,
    pub(super) trains_in: AtomicU64,
    /// Held ACKs that the driver thread let go for an owner gone away.
    pub(super) driver_releases: AtomicU64,
    /// Datagrams dropped because they did not come from the address and port of
    /// the queue pair they name (or named no queue pair of ours).
    pub(super) rx_foreign: AtomicU64,
    /// Tests stop the driver thread for a while with this.
    #[cfg(test)]
    pub(super) driver_paused: AtomicBool,
}

pub(super) type Stash = (Vec<(usize, usize, usize, u8)>, Vec<(usize, u64)>);

/// One rank's soft-RoCE endpoint; see the [module docs](self).
pub struct RoceIface {
    pub(super) me: usize,
    pub(super) n: usize,
    pub(super) max_am: usize,
    pub(super) inner: Arc<Inner>,
    pub(super) send_pool: Box<[u8]>,
    pub(super) send_key: u32,
    pub(super) recv_pool: Box<[u8]>,
    pub(super) recv_key: u32,
    /// Set while `progress` runs (a call from a callback does nothing).
    pub(super) busy: Cell<bool>,
    /// Messages to itself.
    pub(super) self_q: RefCell<VecDeque<(u8, Vec<u8>)>>,
    pub(super) driver: Option<std::thread::JoinHandle<()>>,
    /// The queue pairs' retry budget: how long dropping the endpoint waits for
    /// its last messages to be acknowledged.
    pub(super) retry_budget: Duration,
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

/// Datagrams an endpoint dropped as not its peers' ([`RoceIface::rejected`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Not from the address and UDP port of the queue pair they name, or for a
    /// queue pair number this endpoint does not have.
    pub wrong_source: u64,
    /// From the right address, with a wrong authentication tag.
    pub bad_tag: u64,
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

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    pub(super) fn take_wr(st: &mut State, w: Wr) -> u64 {
        let id = st.next_wr;
        st.next_wr += 1;
        st.wrs.insert(id, w);
        id
    }

    /// Reposts receive slot `slot` of peer `p`.
    pub(super) fn repost(&self, p: usize, slot: usize) {
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
    pub(super) fn post(&self, peer: usize, wr: SendWr, ring: bool) -> Result<()> {
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
    pub(super) fn sync_op(
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
    pub(super) fn await_wr<T>(
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
    pub(super) fn wait_socket(&self, timeout: Duration) {
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

#[cfg(test)]
mod tests {
    use super::super::connect::*;
    use super::super::icrc::ICRC_LEN;
    use super::super::mem::*;
    use super::super::wire::PacketKey;
    use super::*;
    use crate::{Event, Progress, Rma, Sent};
    use std::net::IpAddr;

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
