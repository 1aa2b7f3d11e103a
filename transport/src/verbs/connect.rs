//! Typed bring-up: [`VerbsBuilder::open`] (a device) → [`VerbsBuilder::prepare`]
//! (a queue pair per peer; [`Prepared::address`] is published) →
//! [`Prepared::connect`] (every queue pair INIT → RTR → RTS).
//!
//! Connecting exchanges no packets: an RC queue pair needs only the peer's
//! LID/GID, QPN and first PSN, which the published address carries. A peer
//! may therefore send as soon as its own `connect` returned, possibly before
//! ours moved our queue pair to RTR; the device retries such packets for a
//! while (`RETRY_CNT` × `TIMEOUT`, about half a second), so the layer above
//! passes a barrier (the wire-up's fence) after `connect` before sending.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rdma_mummy_sys as sys;

use super::ffi::{qps, Context, Dev, Qp, PORT_ACTIVE};
use super::iface::{Cfg, VerbsIface, DEFAULT_LINGER, DEFAULT_MAX_AM, DEFAULT_SPIN};
use super::wire::{Address, LINK_ETHERNET, LINK_IB, MAX_24};
use crate::{Error, Result};

/// Port used unless [`VerbsBuilder::port`] says otherwise.
pub const DEFAULT_PORT: u8 = 1;
/// Receive buffers posted per connection (the sender's credits) by default.
pub const DEFAULT_RECV_DEPTH: u16 = 32;
/// Send work requests in flight per connection, by default.
pub const DEFAULT_SEND_DEPTH: u32 = 128;
/// Registered send buffers of `max_am` bytes shared by all connections, by default.
pub const DEFAULT_SEND_SLOTS: u32 = 32;
/// Inline bytes asked of the device per send, by default.
pub const DEFAULT_MAX_INLINE: u32 = 128;

/// Largest `max_am` accepted.
const MAX_MAX_AM: usize = 1 << 30;
/// Most receive buffers per connection (credits travel in 16 bits).
const MAX_RECV_DEPTH: u16 = 4096;
/// Most endpoints (a peer index travels in 28 bits of a work request id).
pub(super) const MAX_PEERS: usize = 1 << 28;
/// Local ACK timeout: 4.096 µs × 2^14 ≈ 67 ms per try.
const ACK_TIMEOUT: u8 = 14;
/// Retries after a timeout (7 is the most).
const RETRY_CNT: u8 = 7;
/// Retries after "receiver not ready": 7 means for ever (credits make it rare).
const RNR_RETRY: u8 = 7;
/// Delay before a "receiver not ready" retry: code 12 = 0.64 ms.
const MIN_RNR_TIMER: u8 = 12;
/// Outstanding RDMA reads per connection, at most.
const MAX_RD_ATOMIC: i32 = 16;

/// An open RDMA device and the parameters of the endpoint to make on it.
pub struct VerbsBuilder {
    ctx: Context,
    port: u8,
    gid_index: Option<u8>,
    max_am: usize,
    recv_depth: u16,
    send_depth: u32,
    send_slots: u32,
    max_inline: u32,
    spin: Duration,
    linger: Duration,
}

impl std::fmt::Debug for VerbsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsBuilder")
            .field("device", &self.ctx.name())
            .field("port", &self.port)
            .field("gid_index", &self.gid_index)
            .field("max_am", &self.max_am)
            .field("recv_depth", &self.recv_depth)
            .field("send_depth", &self.send_depth)
            .field("send_slots", &self.send_slots)
            .field("max_inline", &self.max_inline)
            .finish_non_exhaustive()
    }
}

impl VerbsBuilder {
    /// Opens the RDMA device called `device`, or with `None` the first
    /// InfiniBand or RoCE device whose port 1 is active (the first such
    /// device if none is).
    ///
    /// Fails with [`Error::Sys`] of kind [`io::ErrorKind::NotFound`] when
    /// there is no such device (also when libibverbs is not installed or
    /// the kernel has no RDMA support: then there is no device at all).
    pub fn open(device: Option<&str>) -> Result<VerbsBuilder> {
        Ok(VerbsBuilder {
            ctx: Context::open(device, DEFAULT_PORT)?,
            port: DEFAULT_PORT,
            gid_index: None,
            max_am: DEFAULT_MAX_AM,
            recv_depth: DEFAULT_RECV_DEPTH,
            send_depth: DEFAULT_SEND_DEPTH,
            send_slots: DEFAULT_SEND_SLOTS,
            max_inline: DEFAULT_MAX_INLINE,
            spin: DEFAULT_SPIN,
            linger: DEFAULT_LINGER,
        })
    }

    /// The name of the opened device.
    pub fn device_name(&self) -> &str {
        self.ctx.name()
    }

    /// The device port to use (default 1).
    pub fn port(mut self, port: u8) -> Self {
        self.port = port;
        self
    }

    /// The GID table entry that names this endpoint (default: on Ethernet a
    /// RoCE v2 entry, preferably an IPv4 one; on InfiniBand entry 0).
    pub fn gid_index(mut self, index: u8) -> Self {
        self.gid_index = Some(index);
        self
    }

    /// Largest active message, the size of every receive buffer (default
    /// 64 KiB, 1 KiB to 1 GiB). Every endpoint of a job must use the same
    /// value: `connect` refuses an address with another one.
    pub fn max_am(mut self, bytes: usize) -> Self {
        self.max_am = bytes;
        self
    }

    /// Receive buffers posted per connection (default 32, 1 to 4096): how many
    /// active messages a peer may have in flight to this endpoint.
    pub fn recv_depth(mut self, n: u16) -> Self {
        self.recv_depth = n;
        self
    }

    /// Send work requests in flight per connection (default 128, at least 2).
    pub fn send_depth(mut self, n: u32) -> Self {
        self.send_depth = n;
        self
    }

    /// Registered buffers that messages too large to go inline are copied
    /// into, shared by all connections (default 32, at least 1).
    pub fn send_slots(mut self, n: u32) -> Self {
        self.send_slots = n;
        self
    }

    /// Bytes of a send that go inline in the work request, if the device
    /// allows (default 128; 0 for none).
    pub fn max_inline(mut self, bytes: u32) -> Self {
        self.max_inline = bytes;
        self
    }

    /// How long [`crate::Progress::wait`] polls before it blocks (default 10 µs).
    pub fn spin(mut self, d: Duration) -> Self {
        self.spin = d;
        self
    }

    /// How long dropping the endpoint may wait for its sends to complete
    /// (default 2 s).
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Creates a queue pair for every other endpoint of `npeers`, this one
    /// being `index`, and moves them to INIT.
    pub fn prepare(self, index: usize, npeers: usize) -> Result<Prepared> {
        if index >= npeers {
            return Err(Error::NoSuchPeer {
                peer: index,
                npeers,
            });
        }
        if npeers > MAX_PEERS {
            return Err(config("verbs npeers", "more than 2^28 endpoints"));
        }
        if !(1024..=MAX_MAX_AM).contains(&self.max_am) {
            return Err(config("verbs max_am", "must be 1 KiB to 1 GiB"));
        }
        if !(1..=MAX_RECV_DEPTH).contains(&self.recv_depth) {
            return Err(config("verbs recv_depth", "must be 1 to 4096"));
        }
        if self.send_depth < 2 || self.send_slots == 0 {
            return Err(config(
                "verbs send depth",
                "send_depth must be at least 2 and send_slots at least 1",
            ));
        }
        if !self.ctx.is_ib() {
            return Err(Error::Unsupported {
                backend: "verbs",
                op: "devices without the InfiniBand transport (iWARP connects through rdma_cm)",
            });
        }
        let dattr = self.ctx.query_device()?;
        let pattr = self.ctx.query_port(self.port)?;
        if pattr.state != PORT_ACTIVE {
            return Err(Error::Sys {
                op: "RDMA port state",
                source: io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!(
                        "port {} of {} is not active (state {})",
                        self.port,
                        self.ctx.name(),
                        pattr.state
                    ),
                ),
            });
        }
        let max_msg = (pattr.max_msg_sz as usize).clamp(1, MAX_MAX_AM);
        if self.max_am > max_msg {
            return Err(config(
                "verbs max_am",
                "larger than the port's largest message",
            ));
        }
        let link_layer = match pattr.link_layer {
            sys::IBV_LINK_LAYER_ETHERNET => LINK_ETHERNET,
            _ => LINK_IB,
        };
        let gid_index = match self.gid_index {
            Some(i) => i,
            None => choose_gid(&self.ctx, self.port, link_layer, pattr.gid_tbl_len),
        };
        let gid = self.ctx.query_gid(self.port, gid_index)?;
        if link_layer == LINK_ETHERNET && gid == [0; 16] {
            return Err(config(
                "verbs GID",
                "the chosen GID table entry is empty (RoCE needs one)",
            ));
        }

        // Receive buffers: `recv_depth` for messages (the peer's credits),
        // and a reserve for credit-only messages (see `Cfg::reserve`).
        let max_wr = dattr.max_qp_wr.max(1) as u32;
        let threshold = (u32::from(self.recv_depth) / 2).max(1);
        let reserve = 2 * u32::from(self.recv_depth).div_ceil(threshold) + 1;
        if u32::from(self.recv_depth) + reserve > max_wr {
            return Err(config(
                "verbs recv_depth",
                "more receives per queue pair than the device allows",
            ));
        }
        let recv_wr = u32::from(self.recv_depth) + reserve;
        let send_wr = self.send_depth.min(max_wr);
        if send_wr < 2 {
            return Err(config("verbs send depth", "the device allows too few"));
        }
        let others = (npeers - 1) as u64;
        let max_cqe = dattr.max_cqe.max(1) as u64;
        let recv_cqe = others * u64::from(recv_wr);
        if recv_cqe > max_cqe {
            return Err(Error::Unsupported {
                backend: "verbs",
                op: "this many peers at this receive depth (the device's completion queues are too small)",
            });
        }
        // Sends beyond the send CQ's size wait (`Busy`), so it may be capped.
        let send_cqe = (others * u64::from(send_wr) + 1).min(max_cqe);

        let dev = Arc::new(Dev::new(self.ctx, send_cqe as u32, recv_cqe.max(1) as u32)?);
        let mut psn_seed = [0u8; 4];
        // A failure leaves a fixed start; PSNs only need to differ per QP.
        let _ = getrandom::fill(&mut psn_seed);
        let mut psn = u32::from_le_bytes(psn_seed);
        let mut qpv = Vec::with_capacity(npeers);
        let mut psns = Vec::with_capacity(npeers);
        let mut max_inline = self.max_inline;
        for p in 0..npeers {
            if p == index {
                qpv.push(None);
                psns.push(0);
                continue;
            }
            let qp = Qp::create(&dev, send_wr, recv_wr, self.max_inline)?;
            max_inline = max_inline.min(qp.max_inline);
            to_init(&qp, self.port)?;
            psn = psn.wrapping_mul(0x9E37_79B9).wrapping_add(p as u32 | 1);
            psns.push(psn & MAX_24);
            qpv.push(Some(qp));
        }
        let cfg = Cfg {
            index,
            npeers,
            max_am: self.max_am,
            stride: self.max_am.next_multiple_of(64),
            recv_depth: u32::from(self.recv_depth),
            reserve,
            threshold,
            send_wr,
            send_slots: self.send_slots,
            max_inline: if npeers > 1 { max_inline } else { 0 },
            max_msg,
            spin: self.spin,
            linger: self.linger,
        };
        let local = Address {
            link_layer,
            mtu: pattr.active_mtu.clamp(1, 5) as u8,
            rd_atomic: dattr.max_qp_rd_atom.clamp(0, MAX_RD_ATOMIC) as u8,
            lid: pattr.lid,
            recv_depth: self.recv_depth,
            gid,
            max_am: self.max_am as u32,
            index: index as u32,
            qps: qpv
                .iter()
                .zip(&psns)
                .map(|(q, &s)| q.as_ref().map_or((0, 0), |q| (q.qpn() & MAX_24, s)))
                .collect(),
        };
        Ok(Prepared {
            cfg,
            port: self.port,
            gid_index,
            init_rd_atomic: dattr.max_qp_init_rd_atom.clamp(0, MAX_RD_ATOMIC) as u8,
            local,
            qps: qpv,
            dev,
        })
    }
}

#[cold]
fn config(what: &'static str, reason: &'static str) -> Error {
    Error::Malformed { what, reason }
}

/// The GID entry to publish: on InfiniBand entry 0; on Ethernet the first
/// RoCE v2 entry holding an IPv4 address, else the first RoCE v2 entry, else
/// the first non-empty one (entry 0 if libibverbs cannot say).
fn choose_gid(ctx: &Context, port: u8, link_layer: u8, table_len: i32) -> u8 {
    if link_layer != LINK_ETHERNET {
        return 0;
    }
    let mut best: Option<(u8, u8)> = None;
    for i in 0..table_len.clamp(0, 256) {
        let i = i as u8;
        let Some((ty, gid)) = ctx.query_gid_ex(port, i) else {
            continue;
        };
        if gid == [0; 16] {
            continue;
        }
        let v4 = gid[..10] == [0; 10] && gid[10..12] == [0xff, 0xff];
        let score = match (ty == sys::IBV_GID_TYPE_ROCE_V2, v4) {
            (true, true) => 3,
            (true, false) => 2,
            _ => 1,
        };
        match best {
            Some((s, _)) if s >= score => {}
            _ => best = Some((score, i)),
        }
    }
    best.map_or(0, |(_, i)| i)
}

/// RESET → INIT: port, partition key 0, remote read and write allowed.
fn to_init(qp: &Qp, port: u8) -> Result<()> {
    // SAFETY: an all-zero attribute block is valid; the mask says what is used.
    let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
    a.qp_state = qps::INIT;
    a.pkey_index = 0;
    a.port_num = port;
    a.qp_access_flags = (sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
        | sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
        | sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ)
        .0;
    use sys::ibv_qp_attr_mask as m;
    let mask = m::IBV_QP_STATE | m::IBV_QP_PKEY_INDEX | m::IBV_QP_PORT | m::IBV_QP_ACCESS_FLAGS;
    qp.modify(&mut a, mask.0, "ibv_modify_qp (INIT)")
}

/// An endpoint whose queue pairs exist (in INIT) and whose address is known;
/// not yet connected.
pub struct Prepared {
    cfg: Cfg,
    port: u8,
    gid_index: u8,
    init_rd_atomic: u8,
    local: Address,
    qps: Vec<Option<Qp>>,
    dev: Arc<Dev>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("device", &self.dev.ctx.name())
            .field("index", &self.cfg.index)
            .field("npeers", &self.cfg.npeers)
            .field("address", &self.local)
            .finish_non_exhaustive()
    }
}

/// What connecting to one peer needs from its address.
pub(super) struct Remote {
    pub(super) qpn: u32,
    pub(super) psn: u32,
    pub(super) recv_depth: u32,
    addr: Address,
}

impl Prepared {
    /// The address to publish (see [`super::wire::Address`]): opaque bytes
    /// for the wire-up exchange.
    pub fn address(&self) -> Vec<u8> {
        self.local.encode()
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        self.dev.ctx.name()
    }

    /// Connects to every peer that has an address.
    ///
    /// `addrs[p]` is peer `p`'s [`Prepared::address`], or `None` if `p` is
    /// not reached over verbs (its queue pair is destroyed); this endpoint's
    /// own entry is ignored. Every endpoint must pass `None` for exactly the
    /// peers that pass `None` for it. Sends to a peer without a connection
    /// fail with [`Error::PeerUnreachable`]; sends to itself always work.
    ///
    /// Nothing is exchanged on the network: pass a barrier after every
    /// endpoint's `connect` before sending (see the module documentation).
    pub fn connect(self, addrs: &[Option<Vec<u8>>]) -> Result<VerbsIface> {
        let (me, n) = (self.cfg.index, self.cfg.npeers);
        if addrs.len() != n {
            return Err(config(
                "verbs address table",
                "its length differs from npeers",
            ));
        }
        // Check every address before changing anything.
        let mut remotes: Vec<Option<Remote>> = Vec::with_capacity(n);
        for (p, a) in addrs.iter().enumerate() {
            let Some(a) = a.as_ref().filter(|_| p != me) else {
                remotes.push(None);
                continue;
            };
            let addr = Address::decode(a)?;
            if addr.index as usize != p || addr.qps.len() != n {
                return Err(config(
                    "verbs address",
                    "index or endpoint count differs from its place in the table",
                ));
            }
            if addr.max_am as usize != self.cfg.max_am {
                return Err(config(
                    "verbs address",
                    "largest active message differs from this endpoint's",
                ));
            }
            if addr.link_layer != self.local.link_layer {
                return Err(config(
                    "verbs address",
                    "InfiniBand and Ethernet ports cannot be connected",
                ));
            }
            let (qpn, psn) = addr.qps[me];
            if qpn == 0 {
                return Err(config("verbs address", "no queue pair for this endpoint"));
            }
            remotes.push(Some(Remote {
                qpn,
                psn,
                recv_depth: u32::from(addr.recv_depth),
                addr,
            }));
        }
        let Prepared {
            cfg,
            port,
            gid_index,
            init_rd_atomic,
            local,
            qps,
            dev,
        } = self;
        let qps: Vec<Option<Qp>> = qps
            .into_iter()
            .zip(&remotes)
            .map(|(q, r)| q.filter(|_| r.is_some()))
            .collect();
        // Receives are posted (in INIT) before the peers may send.
        let iface = VerbsIface::assemble(cfg, dev, qps, &remotes)?;
        for (p, r) in remotes.iter().enumerate() {
            let (Some(r), Some(qp)) = (r, iface.qp(p)) else {
                continue;
            };
            to_rtr(qp, port, gid_index, &local, r)?;
            to_rts(qp, local.qps[p].1, init_rd_atomic.min(r.addr.rd_atomic))?;
        }
        Ok(iface)
    }
}

/// INIT → RTR: the peer's queue pair, first PSN and path.
fn to_rtr(qp: &Qp, port: u8, gid_index: u8, local: &Address, r: &Remote) -> Result<()> {
    // SAFETY: an all-zero attribute block is valid; the mask says what is used.
    let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
    a.qp_state = qps::RTR;
    a.path_mtu = u32::from(local.mtu.min(r.addr.mtu));
    a.dest_qp_num = r.qpn;
    a.rq_psn = r.psn;
    a.max_dest_rd_atomic = local.rd_atomic;
    a.min_rnr_timer = MIN_RNR_TIMER;
    a.ah_attr.dlid = r.addr.lid;
    a.ah_attr.sl = 0;
    a.ah_attr.src_path_bits = 0;
    a.ah_attr.port_num = port;
    // Ethernet (RoCE) routes by GID; InfiniBand by LID within a subnet.
    if local.link_layer == LINK_ETHERNET || r.addr.lid == 0 {
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.dgid = sys::ibv_gid { raw: r.addr.gid };
        a.ah_attr.grh.sgid_index = gid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.grh.traffic_class = 0;
        a.ah_attr.grh.flow_label = 0;
    }
    use sys::ibv_qp_attr_mask as m;
    let mask = m::IBV_QP_STATE
        | m::IBV_QP_AV
        | m::IBV_QP_PATH_MTU
        | m::IBV_QP_DEST_QPN
        | m::IBV_QP_RQ_PSN
        | m::IBV_QP_MAX_DEST_RD_ATOMIC
        | m::IBV_QP_MIN_RNR_TIMER;
    qp.modify(&mut a, mask.0, "ibv_modify_qp (RTR)")
}

/// RTR → RTS: our first PSN, timeouts and retries, reads in flight.
fn to_rts(qp: &Qp, psn: u32, rd_atomic: u8) -> Result<()> {
    // SAFETY: an all-zero attribute block is valid; the mask says what is used.
    let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
    a.qp_state = qps::RTS;
    a.sq_psn = psn;
    a.timeout = ACK_TIMEOUT;
    a.retry_cnt = RETRY_CNT;
    a.rnr_retry = RNR_RETRY;
    a.max_rd_atomic = rd_atomic;
    use sys::ibv_qp_attr_mask as m;
    let mask = m::IBV_QP_STATE
        | m::IBV_QP_SQ_PSN
        | m::IBV_QP_TIMEOUT
        | m::IBV_QP_RETRY_CNT
        | m::IBV_QP_RNR_RETRY
        | m::IBV_QP_MAX_QP_RD_ATOMIC;
    qp.modify(&mut a, mask.0, "ibv_modify_qp (RTS)")
}
