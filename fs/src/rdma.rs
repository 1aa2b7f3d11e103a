//! The data path between nodes by RDMA: the server's data slots
//! ([`crate::shm::SlotTable`], the same table as the same-node path)
//! registered with a soft-RoCE endpoint ([`dos_transport::roce`]) that the
//! client reaches with one-sided operations.
//!
//! ## Setting it up
//! The TCP connection stays the control path: it carries the secret
//! handshake, every request and every reply. When the client wants RDMA
//! ([`Transport`]), its first request on a TCP connection is
//! [`Request::RoceSetup`](crate::wire::Request::RoceSetup), with the slots
//! it wants and the address of a soft-RoCE endpoint it bound to the local
//! IP address of that TCP connection. The server binds one of its own to
//! its side's IP address (one endpoint per client connection, two
//! endpoints in all: the server is endpoint [`SERVER`], the client
//! [`CLIENT`]), connects it to the client's address, creates a region of
//! slots as for a same-node client ([`crate::shm::grant`] clamps it),
//! registers it, and answers
//! [`Reply::RoceSlots`]: how many slots of
//! what size, its address and the region's remote key. The client checks
//! the grant ([`check_grant`]) and connects. Packets are authenticated
//! with keys derived from the file system's secret and a fresh nonce per
//! endpoint ([`dos_transport::roce::iface`]), so only the two endpoints of
//! this connection can reach each other's queue pair, and the remote key
//! reaches nothing but the region. A server that cannot (no soft-RoCE
//! here, an address of another family) or does not know the request (an
//! older server: a protocol error) grants no slots, and the connection
//! carries data inline over TCP as before.
//!
//! ## Moving data
//! A write is an RDMA WRITE of the piece into a free slot, completed
//! (acknowledged by the server's endpoint, so the bytes are in the slot)
//! before [`Request::WriteSlot`](crate::wire::Request::WriteSlot) names the
//! slot on the TCP connection. A read is
//! [`Request::ReadSlot`](crate::wire::Request::ReadSlot): the server reads
//! into the slot and answers `Ok`, and the client RDMA READs the slot into
//! the caller's buffer. So the server stays passive: its endpoint's driver
//! thread answers the one-sided operations, and the server handles a slot
//! request exactly as it does one from a same-node client — the same
//! checks of slot number, length and ownership ([`crate::shm::SlotTable`]),
//! a refused one answered with a protocol error while the connection goes
//! on, the same worker code — whichever way the bytes reached the slot.
//! The key a client names is checked by the server's endpoint on every
//! access against the registered region: a wrong key or a range outside it
//! is refused (the client sees a typed error, the server nothing).
//!
//! ## Failures
//! The client's endpoint gives a silent server up after
//! [`Liveness::probe_timeout`](crate::client::Liveness::probe_timeout)
//! (1 s) without progress (its retry budget): the server's endpoint
//! answers from a thread of its own, as the server answers a liveness
//! probe, so a second of silence from it means what a failed probe means.
//! An RDMA operation on a dead or stopped server is thus
//! [`Error::ServerDown`] (`op` "rdma write" or "rdma read") about a second
//! after its last answer (measured 1.1-1.2 s from `SIGKILL` or `SIGSTOP`
//! to the error, `fs/tests/rdma.rs`), inside the 1.5 s of a wait on its TCP
//! connection; the client then gives the connection up without waiting for
//! the replies still in flight on it. (A killed server's UDP port answers
//! "unreachable", but the soft-RoCE acts on that only when an endpoint
//! leaves; the budget is what bounds the wait.) The server's endpoint (and
//! with it the region) goes when the connection ends.
//!
//! ## Choosing it
//! [`Transport`] (`DOS_FS_TRANSPORT=auto|tcp|roce`, read by
//! [`crate::client::Client::new`]) chooses how a client reaches servers on
//! other nodes; servers on its own node are reached through the same-node
//! path ([`crate::shm`]) whatever it says (unless
//! [`crate::client::Client::local`] is off). `auto` is TCP: on the
//! namespace hosts of the test cluster (veth pairs sharing 2 cores) the
//! soft-RoCE moves 1 MiB writes slower than the kernel's TCP (see
//! [`AUTO_ROCE`]); `roce` asks for the soft-RoCE and falls back to TCP when
//! a server grants none. [`crate::client::Conn::data_path`] says what a
//! connection got ([`crate::client::DataPath::Roce`]), `dosfs df` prints it.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use dos_transport::auth::Secret;
use dos_transport::roce::iface::{PreparedRoce, RoceIface};
use dos_transport::{RemoteKey, Rma};

use crate::error::{Error, Result};
use crate::shm::{self, Region, SlotTable};
use crate::wire::Reply;

/// The environment variable that chooses the between-node data path.
pub const ENV: &str = "DOS_FS_TRANSPORT";
/// The server's endpoint number in a connection's two-endpoint soft-RoCE.
pub const SERVER: usize = 0;
/// The client's endpoint number.
pub const CLIENT: usize = 1;
/// Whether `auto` uses the soft-RoCE between nodes. No: measured between
/// namespace hosts of the test cluster (2 cores, veth), the kernel's TCP
/// moves 1 MiB pieces faster than the soft-RoCE, whose every packet is
/// built, checksummed (ICRC), authenticated (BLAKE3) and acknowledged in
/// user space: medians of 9 rounds of 64 MiB between two namespace hosts,
/// write+sync 280 MiB/s by TCP against 227 by RDMA, reads 751 against 297
/// (a loaded machine; `fs/tests/rdma.rs`, `namespace_throughput`).
pub const AUTO_ROCE: bool = false;
/// How long a server's endpoint goes on retransmitting to a client that
/// went silent (it sends only RDMA READ responses and acknowledgements).
pub const SERVER_RETRY_BUDGET: Duration = Duration::from_secs(2);

/// How a client reaches servers on other nodes ([`ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The default between nodes ([`AUTO_ROCE`]: TCP).
    #[default]
    Auto,
    /// TCP, data inline.
    Tcp,
    /// RDMA into the servers' slots over the soft-RoCE, TCP if a server
    /// grants none.
    Roce,
}

impl Transport {
    /// Parses `auto`, `tcp` or `roce`.
    pub fn parse(s: &str) -> Result<Transport> {
        match s.trim() {
            "" | "auto" => Ok(Transport::Auto),
            "tcp" => Ok(Transport::Tcp),
            "roce" => Ok(Transport::Roce),
            other => Err(Error::Malformed {
                path: ENV.into(),
                reason: format!("{other:?} is not auto, tcp or roce"),
            }),
        }
    }

    /// The value of [`ENV`] (auto when unset).
    pub fn from_env() -> Result<Transport> {
        match std::env::var(ENV) {
            Ok(v) => Transport::parse(&v),
            Err(std::env::VarError::NotPresent) => Ok(Transport::Auto),
            Err(std::env::VarError::NotUnicode(_)) => Transport::parse("\u{fffd}"),
        }
    }

    /// Whether a TCP connection asks for RDMA slots.
    pub fn wants_roce(self) -> bool {
        match self {
            Transport::Auto => AUTO_ROCE,
            Transport::Tcp => false,
            Transport::Roce => true,
        }
    }
}

fn transport_error(e: dos_transport::Error) -> Error {
    Error::protocol(format!("soft-RoCE: {e}"))
}

/// A server's side of one connection's RDMA: its endpoint, which answers
/// the client's one-sided operations on its own thread. Must be dropped
/// before the [`SlotTable`] whose region it registered (the endpoint's
/// thread writes into the region until it stops).
pub struct ServerRdma {
    iface: Mutex<RoceIface>,
}

impl std::fmt::Debug for ServerRdma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRdma").finish_non_exhaustive()
    }
}

impl ServerRdma {
    /// Datagrams the endpoint dropped (not from the client's address, or
    /// failing authentication).
    pub fn rejected(&self) -> u64 {
        let r = self
            .iface
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected();
        r.wrong_source + r.bad_tag
    }
}

/// The server's answer to a RoCE setup asking for `slots` slots of
/// `slot_size` bytes from a client whose endpoint is at `client_addr`:
/// its endpoint bound to `local_ip` and connected, the slot table of a
/// fresh region registered with it, and the reply to send. An error
/// (answered as no slots) when any of it fails.
pub fn accept(
    local_ip: IpAddr,
    secret: &Secret,
    slots: u32,
    slot_size: u32,
    client_addr: &[u8],
) -> Result<(ServerRdma, SlotTable, Reply)> {
    let (count, size) = shm::grant(slots, slot_size);
    if count == 0 {
        return Err(Error::protocol("no RDMA slots asked for"));
    }
    let prepared = RoceIface::prepare(SERVER, 2, local_ip, secret)
        .and_then(|p| p.with_retry_budget(SERVER_RETRY_BUDGET))
        .map_err(transport_error)?;
    let addr = prepared.address();
    if addr.is_empty() {
        return Err(Error::protocol(
            "the soft-RoCE has no address here (IPv4 only)",
        ));
    }
    let iface = prepared
        .connect(&[None, Some(client_addr.to_vec())])
        .map_err(transport_error)?;
    let (region, _fd) = Region::create(count, size)?;
    let mr = iface
        .mem_register(region.base(), region.len())
        .map_err(transport_error)?;
    let reply = Reply::RoceSlots {
        count,
        size,
        addr,
        rkey: mr.rkey.as_bytes().to_vec(),
    };
    Ok((
        ServerRdma {
            iface: Mutex::new(iface),
        },
        SlotTable::new(region),
        reply,
    ))
}

/// Checks a server's grant of `count` slots of `size` bytes: what
/// [`shm::grant`] would give for that request, and at least one slot.
pub fn check_grant(count: u32, size: u32) -> Result<()> {
    if count == 0 || shm::grant(count, size) != (count, size) {
        return Err(Error::protocol(format!(
            "RDMA slots out of bounds ({count} x {size} bytes)"
        )));
    }
    Ok(())
}

/// A client's endpoint, bound but not connected yet: its address goes in
/// the setup request.
#[derive(Debug)]
pub struct ClientSetup {
    prepared: PreparedRoce,
}

impl ClientSetup {
    /// An endpoint bound to `local_ip` (the local address of the TCP
    /// connection to the server), giving a silent server up after `budget`.
    pub fn prepare(local_ip: IpAddr, secret: &Secret, budget: Duration) -> Result<ClientSetup> {
        let prepared = RoceIface::prepare(CLIENT, 2, local_ip, secret)
            .and_then(|p| p.with_retry_budget(budget.max(Duration::from_millis(1))))
            .map_err(transport_error)?;
        Ok(ClientSetup { prepared })
    }

    /// The address to send.
    pub fn address(&self) -> Vec<u8> {
        self.prepared.address()
    }

    /// Connects to the server's endpoint at `addr` for the region of
    /// `count` slots of `size` bytes reached by `rkey` (the fields of
    /// [`Reply::RoceSlots`], checked here).
    pub fn connect(self, count: u32, size: u32, addr: &[u8], rkey: &[u8]) -> Result<RdmaSlots> {
        check_grant(count, size)?;
        let rkey = RemoteKey::from_bytes(rkey).map_err(transport_error)?;
        let iface = self
            .prepared
            .connect(&[Some(addr.to_vec()), None])
            .map_err(transport_error)?;
        Ok(RdmaSlots {
            iface: Mutex::new(iface),
            rkey,
            count,
            size,
        })
    }
}

/// A client's RDMA slots on one server.
pub struct RdmaSlots {
    iface: Mutex<RoceIface>,
    rkey: RemoteKey,
    count: u32,
    size: u32,
}

impl std::fmt::Debug for RdmaSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaSlots")
            .field("count", &self.count)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Why an RDMA operation on a slot failed.
#[derive(Debug)]
pub enum RdmaError {
    /// The server's endpoint is gone or silent (dead, or unreachable).
    Down(dos_transport::Error),
    /// Anything else: a slot or range out of bounds, a key the server
    /// refused.
    Other(Error),
}

impl RdmaSlots {
    /// Number of slots.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> u32 {
        self.size
    }

    /// Replaces the remote key (tests: a key the server never gave).
    pub fn set_rkey(&mut self, rkey: RemoteKey) {
        self.rkey = rkey;
    }

    /// The remote key in use.
    pub fn rkey(&self) -> &RemoteKey {
        &self.rkey
    }

    fn offset(&self, slot: u32, len: usize) -> std::result::Result<usize, RdmaError> {
        if slot >= self.count || len > self.size as usize {
            return Err(RdmaError::Other(Error::protocol(format!(
                "{len} bytes at slot {slot} do not fit {} slots of {}",
                self.count, self.size
            ))));
        }
        Ok(slot as usize * self.size as usize)
    }

    fn map(e: dos_transport::Error) -> RdmaError {
        match e {
            e @ dos_transport::Error::PeerUnreachable { .. } => RdmaError::Down(e),
            dos_transport::Error::RemoteAccess { .. } => RdmaError::Other(Error::protocol(
                format!("the server refused an RDMA access: {e}"),
            )),
            e => RdmaError::Other(transport_error(e)),
        }
    }

    /// RDMA-writes `data` into slot `slot`; returns once the server's
    /// endpoint acknowledged it (the bytes are in the slot).
    pub fn put(&self, slot: u32, data: &[u8]) -> std::result::Result<(), RdmaError> {
        let off = self.offset(slot, data.len())?;
        let iface = self.iface.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `data` is borrowed for the call, and the put completes
        // (or fails) before it returns.
        unsafe { iface.put(SERVER, data.as_ptr(), data.len(), &self.rkey, off) }.map_err(Self::map)
    }

    /// RDMA-reads the first `out.len()` bytes of slot `slot` into `out`.
    pub fn get(&self, slot: u32, out: &mut [u8]) -> std::result::Result<(), RdmaError> {
        let off = self.offset(slot, out.len())?;
        let iface = self.iface.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `out` is borrowed mutably for the call, and the get
        // completes (or fails) before it returns.
        unsafe { iface.get(SERVER, out.as_mut_ptr(), out.len(), &self.rkey, off) }
            .map_err(Self::map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!(Transport::parse("auto").unwrap(), Transport::Auto);
        assert_eq!(Transport::parse("").unwrap(), Transport::Auto);
        assert_eq!(Transport::parse("tcp").unwrap(), Transport::Tcp);
        assert_eq!(Transport::parse(" roce ").unwrap(), Transport::Roce);
        let e = Transport::parse("verbs").unwrap_err().to_string();
        assert!(e.contains("DOS_FS_TRANSPORT") && e.contains("verbs"), "{e}");
        assert!(Transport::Roce.wants_roce());
        assert!(!Transport::Tcp.wants_roce());
        assert_eq!(Transport::Auto.wants_roce(), AUTO_ROCE);
    }

    #[test]
    fn grants_are_checked() {
        assert!(check_grant(0, 4096).is_err());
        assert!(check_grant(4, 4095).is_err());
        assert!(check_grant(shm::MAX_SLOTS + 1, 4096).is_err());
        assert!(check_grant(4, shm::MAX_SLOT_SIZE + 4096).is_err());
        check_grant(16, 1 << 20).unwrap();
    }

    /// Both ends in this process over loopback: a put lands in the
    /// server's slot, a get reads it back, a slot out of range is refused
    /// before anything is sent, and a key the server never gave is refused
    /// by the server's endpoint without touching the region.
    #[test]
    fn one_sided_into_server_slots() {
        let secret = Secret::generate().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let c = ClientSetup::prepare(ip, &secret, Duration::from_millis(1500)).unwrap();
        let (srv, table, reply) = accept(ip, &secret, 4, 8192, &c.address()).unwrap();
        let Reply::RoceSlots {
            count,
            size,
            addr,
            rkey,
        } = reply
        else {
            panic!("{reply:?}")
        };
        assert_eq!((count, size), (4, 8192));
        let mut slots = c.connect(count, size, &addr, &rkey).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        slots.put(3, &data).unwrap();
        assert_eq!(table.region().get_vec(3, data.len()).unwrap(), data);
        table.region().put(1, b"from the server").unwrap();
        let mut back = [0u8; 15];
        slots.get(1, &mut back).unwrap();
        assert_eq!(&back, b"from the server");
        assert!(matches!(slots.put(4, b"x"), Err(RdmaError::Other(_))));
        assert!(matches!(
            slots.put(0, &vec![0; 8193]),
            Err(RdmaError::Other(_))
        ));
        // A key the server did not give (another region number): refused
        // by the server's endpoint.
        let good = *slots.rkey();
        let mut bad = good.as_bytes().to_vec();
        bad[1] ^= 0x55;
        slots.set_rkey(RemoteKey::from_bytes(&bad).unwrap());
        match slots.put(0, b"forged") {
            Err(RdmaError::Other(Error::Protocol { reason })) => {
                assert!(reason.contains("refused"), "{reason}")
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(table.region().get_vec(0, 6).unwrap(), [0u8; 6]);
        drop(slots);
        drop(srv);
    }
}
