//! Owners of libibverbs objects, over `rdma-mummy-sys`.
//!
//! `rdma-mummy-sys` links a small C shim that opens `libibverbs.so.1` with
//! `dlopen` when the program starts; without it every call fails with
//! `EOPNOTSUPP` (and returns NULL or an error code), which is why nothing here
//! assumes success. Every return code is checked and turned into an
//! [`Error`]; nothing panics. The data-path calls (`poll_cq`, `post_send`,
//! `post_recv`, `req_notify_cq`) go through the provider's function table as
//! libibverbs' own inline functions do, with a missing entry reported as
//! `EOPNOTSUPP` instead of a crash.
//!
//! Lifetimes: [`Dev`] owns the context, protection domain, completion channel
//! and completion queues (dropped in that reverse order); every [`Qp`] and
//! [`Mr`] holds an `Arc<Dev>`, so a queue pair or memory region is always
//! destroyed before the objects it was created from.

use std::ffi::CStr;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdma_mummy_sys as sys;

use crate::{Error, Result};

/// An error from a verbs call that returns an errno value (or -1 and `errno`).
#[cold]
pub(super) fn verbs_err(op: &'static str, ret: i32) -> Error {
    let source = if ret > 0 {
        io::Error::from_raw_os_error(ret)
    } else {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(0) | None => io::Error::from_raw_os_error(libc::EIO),
            _ => e,
        }
    };
    Error::Sys { op, source }
}

/// An error from a verbs call that returned NULL and set `errno`.
#[cold]
fn null_err(op: &'static str) -> Error {
    verbs_err(op, -1)
}

/// The list of RDMA devices; empty if libibverbs or the kernel support is missing.
pub(super) struct DeviceList {
    list: *mut *mut sys::ibv_device,
    n: usize,
}

impl DeviceList {
    /// Asks libibverbs for its devices; `Err` with the reason when it cannot.
    pub(super) fn get() -> io::Result<DeviceList> {
        let mut n: i32 = 0;
        // SAFETY: `n` is a valid out-pointer; the call returns NULL or an
        // array of `n` device pointers that we free in `Drop`.
        let list = unsafe { sys::ibv_get_device_list(&mut n) };
        if list.is_null() {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(0) | None => io::Error::from_raw_os_error(libc::ENODEV),
                _ => e,
            });
        }
        Ok(DeviceList {
            list,
            n: n.max(0) as usize,
        })
    }

    /// The device pointers.
    fn devices(&self) -> impl Iterator<Item = *mut sys::ibv_device> + '_ {
        // SAFETY: `list` holds `n` entries (libibverbs NULL-terminates it too).
        (0..self.n).map(move |i| unsafe { *self.list.add(i) })
    }

    /// The devices' names, in libibverbs' order.
    pub(super) fn names(&self) -> Vec<String> {
        self.devices().filter_map(device_name).collect()
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: `list` came from ibv_get_device_list and is freed once.
        unsafe { sys::ibv_free_device_list(self.list) };
    }
}

/// The name of `dev`, if it has one.
fn device_name(dev: *mut sys::ibv_device) -> Option<String> {
    if dev.is_null() {
        return None;
    }
    // SAFETY: `dev` is an entry of a live device list.
    let name = unsafe { sys::ibv_get_device_name(dev) };
    if name.is_null() {
        return None;
    }
    // SAFETY: libibverbs returns a NUL-terminated name that lives as long as the list.
    Some(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// True if `dev` speaks the InfiniBand transport (InfiniBand or RoCE),
/// whose queue pairs connect by `ibv_modify_qp` alone; iWARP needs rdma_cm.
fn ib_transport(dev: *mut sys::ibv_device) -> bool {
    // SAFETY: `dev` is a non-NULL entry of a live device list; plain field.
    !dev.is_null() && unsafe { (*dev).transport_type } == sys::ibv_transport_type::IBV_TRANSPORT_IB
}

/// An open device.
pub(super) struct Context {
    ctx: NonNull<sys::ibv_context>,
    name: String,
    ib: bool,
}

impl Context {
    /// Opens the device called `name`, or the first InfiniBand-transport
    /// device whose port `port` is active (the first such device if none is).
    pub(super) fn open(name: Option<&str>, port: u8) -> Result<Context> {
        let list =
            DeviceList::get().map_err(|e| not_found(name, &format!("no device list ({e})")))?;
        let mut chosen = None;
        for dev in list.devices() {
            let Some(n) = device_name(dev) else { continue };
            match name {
                Some(want) if want == n => {
                    chosen = Some((dev, n));
                    break;
                }
                Some(_) => {}
                None if !ib_transport(dev) => {}
                None => {
                    if let Ok(ctx) = Context::open_one(dev, n.clone()) {
                        if ctx.query_port(port).is_ok_and(|a| a.state == PORT_ACTIVE) {
                            return Ok(ctx);
                        }
                    }
                    if chosen.is_none() {
                        chosen = Some((dev, n));
                    }
                }
            }
        }
        match chosen {
            Some((dev, n)) => Context::open_one(dev, n),
            None => {
                let names = list.names();
                let have = if names.is_empty() {
                    "there is none".to_string()
                } else {
                    format!("there are {}", names.join(", "))
                };
                Err(not_found(name, &have))
            }
        }
    }

    fn open_one(dev: *mut sys::ibv_device, name: String) -> Result<Context> {
        // SAFETY: `dev` is an entry of a live device list; the context we get
        // does not depend on the list staying alive.
        let ctx = unsafe { sys::ibv_open_device(dev) };
        let ctx = NonNull::new(ctx).ok_or_else(|| null_err("ibv_open_device"))?;
        Ok(Context {
            ctx,
            name,
            ib: ib_transport(dev),
        })
    }

    /// True for InfiniBand and RoCE devices (false for iWARP and others).
    pub(super) fn is_ib(&self) -> bool {
        self.ib
    }

    /// The device's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The device's attributes.
    pub(super) fn query_device(&self) -> Result<sys::ibv_device_attr> {
        // SAFETY: an all-zero ibv_device_attr (integers and arrays) is valid.
        let mut attr: sys::ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the context is open and `attr` is a valid out-pointer.
        let r = unsafe { sys::ibv_query_device(self.ctx.as_ptr(), &mut attr) };
        if r != 0 {
            return Err(verbs_err("ibv_query_device", r));
        }
        Ok(attr)
    }

    /// The attributes of port `port`.
    pub(super) fn query_port(&self, port: u8) -> Result<sys::ibv_port_attr> {
        // SAFETY: an all-zero ibv_port_attr (integers only) is valid.
        let mut attr: sys::ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the context is open and `attr` is a valid out-pointer of the
        // size the wrapper tells libibverbs.
        let r = unsafe { sys::ibv_query_port(self.ctx.as_ptr(), port, &mut attr) };
        if r != 0 {
            return Err(verbs_err("ibv_query_port", r));
        }
        Ok(attr)
    }

    /// GID `index` of `port`.
    pub(super) fn query_gid(&self, port: u8, index: u8) -> Result<[u8; 16]> {
        let mut gid = sys::ibv_gid { raw: [0; 16] };
        // SAFETY: the context is open and `gid` is a valid out-pointer.
        let r = unsafe { sys::ibv_query_gid(self.ctx.as_ptr(), port, index as i32, &mut gid) };
        if r != 0 {
            return Err(verbs_err("ibv_query_gid", r));
        }
        // SAFETY: both views of the union are plain 16 bytes.
        Ok(unsafe { gid.raw })
    }

    /// GID `index` of `port` with its type (`IBV_GID_TYPE_*`); `None` if the
    /// entry is empty or libibverbs is too old to say.
    pub(super) fn query_gid_ex(&self, port: u8, index: u8) -> Option<(u32, [u8; 16])> {
        // SAFETY: an all-zero entry (integers and a byte array) is valid.
        let mut e: sys::ibv_gid_entry = unsafe { std::mem::zeroed() };
        // SAFETY: the context is open and `e` is a valid out-pointer of the
        // size the wrapper passes.
        let r = unsafe {
            sys::ibv_query_gid_ex(self.ctx.as_ptr(), port as u32, index as u32, &mut e, 0)
        };
        if r != 0 {
            return None;
        }
        // SAFETY: both views of the union are plain 16 bytes.
        Some((e.gid_type, unsafe { e.gid.raw }))
    }

    fn as_ptr(&self) -> *mut sys::ibv_context {
        self.ctx.as_ptr()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: opened by us, closed once, after everything made from it
        // (`Dev` drops its other fields first).
        unsafe { sys::ibv_close_device(self.ctx.as_ptr()) };
    }
}

/// `NotFound` for a device that cannot be opened.
#[cold]
fn not_found(name: Option<&str>, have: &str) -> Error {
    let what = match name {
        Some(n) => format!("no RDMA device named {n:?}: {have}"),
        None => format!("no RDMA device: {have}"),
    };
    Error::Sys {
        op: "open an RDMA device",
        source: io::Error::new(io::ErrorKind::NotFound, what),
    }
}

/// `IBV_PORT_ACTIVE`.
pub(super) const PORT_ACTIVE: u32 = sys::ibv_port_state::IBV_PORT_ACTIVE;

/// A protection domain.
pub(super) struct Pd(NonNull<sys::ibv_pd>);

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: allocated by us, freed once, after its QPs and MRs (they hold the `Dev`).
        unsafe { sys::ibv_dealloc_pd(self.0.as_ptr()) };
    }
}

/// A completion channel (the file descriptor that says "a completion queue has news").
pub(super) struct Channel(NonNull<sys::ibv_comp_channel>);

impl Channel {
    /// The descriptor (non-blocking) that polls readable when an event is pending.
    pub(super) fn fd(&self) -> RawFd {
        // SAFETY: the channel is live; `fd` is a plain field.
        unsafe { (*self.0.as_ptr()).fd }
    }

    /// The descriptor, borrowed for as long as the channel.
    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: libibverbs owns the descriptor and closes it only when the
        // channel is destroyed (on drop), which the borrow of `self` outlasts.
        unsafe { BorrowedFd::borrow_raw(self.fd()) }
    }

    /// Reads and acknowledges every pending completion event; never blocks.
    pub(super) fn drain(&self) {
        loop {
            let mut cq = ptr::null_mut();
            let mut ctx = ptr::null_mut();
            // SAFETY: the channel is live and non-blocking; both out-pointers are valid.
            let r = unsafe { sys::ibv_get_cq_event(self.0.as_ptr(), &mut cq, &mut ctx) };
            if r != 0 || cq.is_null() {
                return;
            }
            // SAFETY: `cq` is one of our CQs (the only ones on this channel);
            // every event is acknowledged once, so destroying a CQ never waits.
            unsafe { sys::ibv_ack_cq_events(cq, 1) };
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once, after its CQs (earlier fields of `Dev`).
        unsafe { sys::ibv_destroy_comp_channel(self.0.as_ptr()) };
    }
}

/// A completion queue.
pub(super) struct Cq {
    cq: NonNull<sys::ibv_cq>,
    /// Entries it holds.
    pub(super) size: u32,
}

/// An all-zero work completion, to poll into.
pub(super) fn empty_wc() -> sys::ibv_wc {
    // SAFETY: ibv_wc holds integers and a union of two u32s: all-zero is valid.
    unsafe { std::mem::zeroed() }
}

impl Cq {
    /// Takes up to `out.len()` completions.
    #[inline]
    pub(super) fn poll(&self, out: &mut [sys::ibv_wc]) -> Result<usize> {
        let cq = self.cq.as_ptr();
        // SAFETY: the CQ and its context are live; the provider's table is
        // filled in by libibverbs when the device is opened.
        let f = unsafe { (*(*cq).context).ops.poll_cq };
        let Some(f) = f else {
            return Err(verbs_err("ibv_poll_cq", libc::EOPNOTSUPP));
        };
        let max = out.len().min(i32::MAX as usize) as i32;
        // SAFETY: `out` is valid for writes of `max` completions.
        let r = unsafe { f(cq, max, out.as_mut_ptr()) };
        if r < 0 {
            return Err(verbs_err("ibv_poll_cq", -r));
        }
        Ok(r as usize)
    }

    /// Asks for a completion event on the channel at the next completion.
    pub(super) fn arm(&self) -> Result<()> {
        let cq = self.cq.as_ptr();
        // SAFETY: as in `poll`.
        let f = unsafe { (*(*cq).context).ops.req_notify_cq };
        let Some(f) = f else {
            return Err(verbs_err("ibv_req_notify_cq", libc::EOPNOTSUPP));
        };
        // SAFETY: the CQ is live.
        let r = unsafe { f(cq, 0) };
        if r != 0 {
            return Err(verbs_err("ibv_req_notify_cq", r));
        }
        Ok(())
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once, after every QP using it.
        unsafe { sys::ibv_destroy_cq(self.cq.as_ptr()) };
    }
}

/// An open device with what every endpoint needs once: a protection domain,
/// a completion channel and two completion queues (sends, receives).
pub(super) struct Dev {
    // Dropped in declaration order: CQs, channel, PD, context.
    pub(super) send_cq: Cq,
    pub(super) recv_cq: Cq,
    pub(super) channel: Channel,
    pd: Pd,
    pub(super) ctx: Context,
}

// SAFETY: libibverbs objects may be used from any thread (the library and
// its providers lock what they share); `Dev` has no interior state of its own.
unsafe impl Send for Dev {}
// SAFETY: as above: every method takes `&self` and calls thread-safe verbs.
unsafe impl Sync for Dev {}

impl Dev {
    /// Allocates the protection domain, channel and CQs of `send_cqe` and
    /// `recv_cqe` entries on `ctx`.
    pub(super) fn new(ctx: Context, send_cqe: u32, recv_cqe: u32) -> Result<Dev> {
        // SAFETY: the context is open.
        let pd = unsafe { sys::ibv_alloc_pd(ctx.as_ptr()) };
        let pd = Pd(NonNull::new(pd).ok_or_else(|| null_err("ibv_alloc_pd"))?);
        // SAFETY: the context is open.
        let ch = unsafe { sys::ibv_create_comp_channel(ctx.as_ptr()) };
        let channel = Channel(NonNull::new(ch).ok_or_else(|| null_err("ibv_create_comp_channel"))?);
        set_nonblocking(channel.fd())?;
        let cq = |cqe: u32| -> Result<Cq> {
            let cqe = cqe.clamp(1, i32::MAX as u32);
            // SAFETY: the context and channel are open; no CQ context pointer.
            let cq = unsafe {
                sys::ibv_create_cq(
                    ctx.as_ptr(),
                    cqe as i32,
                    ptr::null_mut(),
                    channel.0.as_ptr(),
                    0,
                )
            };
            let cq = NonNull::new(cq).ok_or_else(|| null_err("ibv_create_cq"))?;
            // SAFETY: the CQ is live; `cqe` is a plain field (what we got, at least `cqe`).
            let got = unsafe { (*cq.as_ptr()).cqe };
            Ok(Cq {
                cq,
                size: (got.max(1) as u32).min(cqe),
            })
        };
        let send_cq = cq(send_cqe)?;
        let recv_cq = cq(recv_cqe)?;
        Ok(Dev {
            send_cq,
            recv_cq,
            channel,
            pd,
            ctx,
        })
    }
}

fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: plain fcntl on a descriptor we own.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(Error::last_os("fcntl O_NONBLOCK (completion channel)"));
    }
    Ok(())
}

/// A registered memory region.
pub(super) struct Mr {
    mr: NonNull<sys::ibv_mr>,
    _dev: Arc<Dev>,
}

// SAFETY: see `Dev`; the region is only read (keys) or deregistered.
unsafe impl Send for Mr {}

/// Local write and remote read and write: what peers' puts and gets need.
pub(super) const ACCESS_REMOTE: i32 = (sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
    | sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
    | sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0) as i32;
/// Remote read only: memory that cannot be written (read-only mappings).
pub(super) const ACCESS_REMOTE_READ: i32 = sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0 as i32;
/// Local write only: buffers the device fills (receives, reads) or reads (sends).
pub(super) const ACCESS_LOCAL: i32 = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32;

impl Mr {
    /// Registers `len` bytes at `addr` with `access` (`ACCESS_*`).
    ///
    /// # Safety
    /// The memory must stay mapped until the region is dropped (the device
    /// may access it until then, as far as `access` allows).
    pub(super) unsafe fn register(
        dev: &Arc<Dev>,
        addr: *mut u8,
        len: usize,
        access: i32,
    ) -> Result<Mr> {
        // SAFETY: the PD is live; the caller keeps the memory mapped.
        let mr = unsafe { sys::ibv_reg_mr(dev.pd.0.as_ptr(), addr.cast(), len, access) };
        let mr = NonNull::new(mr).ok_or_else(|| null_err("ibv_reg_mr"))?;
        Ok(Mr {
            mr,
            _dev: dev.clone(),
        })
    }

    /// The key for local gather/scatter entries.
    pub(super) fn lkey(&self) -> u32 {
        // SAFETY: the region is live; plain field.
        unsafe { (*self.mr.as_ptr()).lkey }
    }

    /// The key peers use.
    pub(super) fn rkey(&self) -> u32 {
        // SAFETY: the region is live; plain field.
        unsafe { (*self.mr.as_ptr()).rkey }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered by us, deregistered once.
        unsafe { sys::ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// What a send work request does.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    /// SEND with immediate data (host order).
    SendImm(u32),
    /// RDMA WRITE to `raddr` in the peer's region `rkey`.
    Write {
        /// Remote address.
        raddr: u64,
        /// Remote key.
        rkey: u32,
    },
    /// RDMA READ from `raddr` in the peer's region `rkey`.
    Read {
        /// Remote address.
        raddr: u64,
        /// Remote key.
        rkey: u32,
    },
}

/// A reliable-connected queue pair.
pub(super) struct Qp {
    qp: NonNull<sys::ibv_qp>,
    /// Bytes a send may carry inline (what the device granted).
    pub(super) max_inline: u32,
    _dev: Arc<Dev>,
}

// SAFETY: see `Dev`.
unsafe impl Send for Qp {}

/// `IBV_QPS_*` values used here.
pub(super) mod qps {
    use super::sys::ibv_qp_state as s;
    pub(in super::super) const INIT: u32 = s::IBV_QPS_INIT;
    pub(in super::super) const RTR: u32 = s::IBV_QPS_RTR;
    pub(in super::super) const RTS: u32 = s::IBV_QPS_RTS;
    pub(in super::super) const ERR: u32 = s::IBV_QPS_ERR;
}

impl Qp {
    /// Creates an RC queue pair on `dev`'s CQs with room for `send_wr` sends
    /// (two gather entries each) and `recv_wr` receives (one entry each),
    /// asking for `max_inline` bytes of inline data (none if the device refuses).
    pub(super) fn create(
        dev: &Arc<Dev>,
        send_wr: u32,
        recv_wr: u32,
        max_inline: u32,
    ) -> Result<Qp> {
        let mut last = libc::EIO;
        for inline in [max_inline, 0] {
            // SAFETY: an all-zero init attribute (pointers NULL, integers 0) is valid.
            let mut a: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
            a.send_cq = dev.send_cq.cq.as_ptr();
            a.recv_cq = dev.recv_cq.cq.as_ptr();
            a.cap = sys::ibv_qp_cap {
                max_send_wr: send_wr,
                max_recv_wr: recv_wr,
                max_send_sge: 2,
                max_recv_sge: 1,
                max_inline_data: inline,
            };
            a.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
            // SAFETY: the PD and CQs are live; `a` is a valid in/out pointer.
            let qp = unsafe { sys::ibv_create_qp(dev.pd.0.as_ptr(), &mut a) };
            if let Some(qp) = NonNull::new(qp) {
                return Ok(Qp {
                    qp,
                    max_inline: a.cap.max_inline_data.min(inline),
                    _dev: dev.clone(),
                });
            }
            last = io::Error::last_os_error()
                .raw_os_error()
                .filter(|&e| e > 0)
                .unwrap_or(libc::EIO);
        }
        Err(verbs_err("ibv_create_qp", last))
    }

    /// The queue pair number (24 bits).
    pub(super) fn qpn(&self) -> u32 {
        // SAFETY: the QP is live; plain field.
        unsafe { (*self.qp.as_ptr()).qp_num }
    }

    /// Applies `attr` under `mask` (`IBV_QP_*` bits).
    pub(super) fn modify(
        &self,
        attr: &mut sys::ibv_qp_attr,
        mask: u32,
        op: &'static str,
    ) -> Result<()> {
        // SAFETY: the QP is live and `attr` a valid attribute block.
        let r = unsafe { sys::ibv_modify_qp(self.qp.as_ptr(), attr, mask as i32) };
        if r != 0 {
            return Err(verbs_err(op, r));
        }
        Ok(())
    }

    /// Moves the queue pair to the error state: outstanding work requests
    /// complete with `IBV_WC_WR_FLUSH_ERR` and the device touches no memory for them.
    pub(super) fn to_error(&self) -> Result<()> {
        // SAFETY: an all-zero attribute block is valid; only the state is used.
        let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = qps::ERR;
        self.modify(
            &mut a,
            sys::ibv_qp_attr_mask::IBV_QP_STATE.0,
            "ibv_modify_qp (to the error state)",
        )
    }

    /// Posts one signaled send work request gathering `sges`.
    ///
    /// # Safety
    /// With `inline`, every entry must be readable during the call. Without,
    /// every entry must lie in memory registered on this device under its
    /// `lkey` that stays valid (and, for a `Read`, is not otherwise accessed)
    /// until the work request completes.
    #[inline]
    pub(super) unsafe fn post_send(
        &self,
        wr_id: u64,
        op: Op,
        sges: &mut [sys::ibv_sge],
        inline: bool,
    ) -> Result<()> {
        // SAFETY: an all-zero work request (NULL pointers, zero integers) is valid.
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = if sges.is_empty() {
            ptr::null_mut()
        } else {
            sges.as_mut_ptr()
        };
        wr.num_sge = sges.len() as i32;
        let mut flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
        // (A zero-length send reads nothing: it needs no inline flag, which
        // a device without inline support might refuse.)
        if inline && !sges.is_empty() {
            flags |= sys::ibv_send_flags::IBV_SEND_INLINE.0;
        }
        wr.send_flags = flags;
        match op {
            Op::SendImm(imm) => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
                wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
            }
            Op::Write { raddr, rkey } => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                wr.wr.rdma = sys::rdma_t {
                    remote_addr: raddr,
                    rkey,
                };
            }
            Op::Read { raddr, rkey } => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_READ;
                wr.wr.rdma = sys::rdma_t {
                    remote_addr: raddr,
                    rkey,
                };
            }
        }
        let qp = self.qp.as_ptr();
        // SAFETY: the QP and its context are live (see `Cq::poll`).
        let f = unsafe { (*(*qp).context).ops.post_send };
        let Some(f) = f else {
            return Err(verbs_err("ibv_post_send", libc::EOPNOTSUPP));
        };
        let mut bad = ptr::null_mut();
        // SAFETY: `wr` and the entries it points to live through the call
        // (the device copies the request); the caller vouches for the memory.
        let r = unsafe { f(qp, &mut wr, &mut bad) };
        if r != 0 {
            return Err(verbs_err("ibv_post_send", r));
        }
        Ok(())
    }

    /// Posts one receive of up to `len` bytes into `addr` (registered under `lkey`).
    ///
    /// # Safety
    /// The memory must be registered on this device under `lkey` and left
    /// alone until the receive completes (or the QP is destroyed).
    #[inline]
    pub(super) unsafe fn post_recv(
        &self,
        wr_id: u64,
        addr: *mut u8,
        len: u32,
        lkey: u32,
    ) -> Result<()> {
        let mut sge = sys::ibv_sge {
            addr: addr as u64,
            length: len,
            lkey,
        };
        let mut wr = sys::ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let qp = self.qp.as_ptr();
        // SAFETY: as in `post_send`.
        let f = unsafe { (*(*qp).context).ops.post_recv };
        let Some(f) = f else {
            return Err(verbs_err("ibv_post_recv", libc::EOPNOTSUPP));
        };
        let mut bad = ptr::null_mut();
        // SAFETY: `wr` and `sge` live through the call; the caller vouches for the memory.
        let r = unsafe { f(qp, &mut wr, &mut bad) };
        if r != 0 {
            return Err(verbs_err("ibv_post_recv", r));
        }
        Ok(())
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once; its CQs and PD outlive it (`dev`).
        unsafe { sys::ibv_destroy_qp(self.qp.as_ptr()) };
    }
}

/// Anonymous memory (page-aligned, zeroed), unmapped on drop.
pub(super) struct Arena {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory; who writes it when is managed by the owner.
unsafe impl Send for Arena {}

impl Arena {
    /// Maps `len` bytes (at least one page).
    pub(super) fn new(len: usize) -> Result<Arena> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping; no pointer arguments.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os("mmap (verbs buffers)"));
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| Error::last_os("mmap (verbs buffers)"))?;
        Ok(Arena { ptr, len })
    }

    /// Start of the memory.
    pub(super) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once (its registration is dropped before).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
