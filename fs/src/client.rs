//! The client: the I/O plan (no I/O) and a blocking driver.
//!
//! [`plan`] splits a byte range of a file into the pieces each server holds
//! ([`crate::layout`]); that is all a client needs to know to talk to data
//! servers directly. [`Client`] drives the protocol over one authenticated
//! connection per server ([`Conn`]): metadata requests go to server 0,
//! and [`Client::read_at`]/[`Client::write_at`] run one thread per server
//! involved, each keeping up to [`Client::window`] requests in flight on its
//! connection, so a large read or write moves data from every server at once.
//! [`Client::sync`] syncs every server of the file at once.
//!
//! ## Which connection: the same-node path or TCP
//! A connection first tries the server's abstract Unix socket
//! ([`crate::shm`]); it exists only in the server's network namespace, so
//! a client on the server's node gets it and any other client gets
//! `ECONNREFUSED` at once and connects over TCP ([`Conn::data_path`] says
//! which). On the Unix socket the client asks for [`Client::slots`] slots of
//! [`Client::slot_size`] bytes; then each piece that fits a slot travels
//! through one: a write is one copy into the slot and a
//! [`Request::WriteSlot`], a read a [`Request::ReadSlot`] and one copy out.
//! A piece owns its slot from its send to its reply, so the window of a
//! connection is at most its slots; larger pieces go inline. Measured with
//! `fs/tests/datapath.rs` (`throughput`), a server that does no I/O takes
//! 2 x 64 MiB of 1 MiB writes at about 3 GiB/s through slots against
//! 0.8-1.5 GiB/s over loopback TCP; [`Client::local`] `= false` keeps a
//! client on TCP.
//!
//! [`Client::write_behind`] is [`Client::write_at`] without waiting for the
//! replies when [`Client::behind_window`] is set (`DOS_FS_WRITE_BEHIND`;
//! off by default, as measured): several writes of successive calls stay
//! in flight on each server (the crate docs, "Write-behind"); every other
//! request waits for its server's write-behind replies, and
//! [`Client::flush`] for all.
//!
//! A TCP connection may carry its data by RDMA instead ([`crate::rdma`],
//! [`Client::transport`], `DOS_FS_TRANSPORT=roce`): its first request asks
//! for slots in the server's memory, and the same slot protocol runs with
//! RDMA WRITEs into them and RDMA READs out of them ([`Slots`],
//! [`DataPath::Roce`]). A server that grants none leaves it on TCP.
//!
//! Failures are typed: a server that cannot be reached or stops answering
//! is [`Error::ServerDown`] naming its index and address; a corrupted chunk
//! met by a read is [`Error::CorruptData`] naming the file and offset, and
//! no bytes are returned for the read.
//!
//! ## Liveness: a dead server is an error within 2 s, a slow one is not
//! A killed server is seen at once (its kernel resets the connection, or
//! closes the Unix socket). A
//! server whose process stopped running (SIGSTOP, a hung host, a host that
//! went off the network) resets nothing, so every wait on a server is cut
//! into ticks of [`Liveness::silence`] (500 ms): when a tick passes with no
//! byte from the server, the client *probes* it: a fresh connection the way
//! it reaches the server (TCP, or the same-node Unix socket) and the secret
//! handshake ([`probe`]), which the server's accept and
//! connection threads answer without touching its worker pool, its disk or
//! any lock. No answer within [`Liveness::probe_timeout`] (1 s) and the
//! operation fails with [`Error::ServerDown`] (`op` "liveness probe").
//! Connecting is bounded the same way (TCP connect and handshake within
//! `probe_timeout`). So a dead or unreachable server fails an operation
//! within `silence + probe_timeout` = 1.5 s of its last byte, inside the
//! issue's 2 s.
//!
//! "Within 2 s" does *not* mean that a request must be answered within
//! 2 s: a server under load (its workers busy with large I/Os, a sync's
//! fsync of a large file, a queue of pipelined requests) keeps answering
//! probes, so its requests may take as long as the disk needs. What is
//! bounded is how long a client waits on a server that gives no sign of
//! life. A live server that makes no progress on a connection (no byte
//! sent for [`Client::io_timeout`], default 30 s, e.g. a disk hung in the
//! kernel) is also [`Error::ServerDown`] (`op` "wait for reply", a
//! `TimedOut` source). Only a machine so overloaded that a runnable thread
//! waits over a second for a CPU can be mistaken for a dead server; raise
//! [`Liveness::probe_timeout`] there.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dos_transport::auth::{fill_random, handshake, Role, Secret};

use crate::addrfile::AddrFile;
use crate::chunk::VerifyReport;
use crate::error::{Error, Result};
use crate::layout::{Layout, LayoutSpec, Piece};
use crate::meta::{Attr, DirEntry, Kind};
use crate::rdma::{ClientSetup, RdmaError, RdmaSlots, Transport};
use crate::shm::{self, Region, Stream};
use crate::target::{FsId, FsPath};
use crate::wire::{auth_context, encode_write, Header, Reply, Request, ServerSpace, HEADER_LEN};

/// Longest wait for a TCP connection to a server (and then its handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`Client::read_piece`]: four 64 KiB checksum blocks.
pub const READ_PIECE: u32 = 256 << 10;
/// Default [`Client::behind_window`] (`DOS_FS_WRITE_BEHIND`): 0, off. On
/// the loaded 2-core machine 16 measured 0.55-0.62x of off and 4 gave
/// 1.17x (independent) but 0.62x (collective) (BENCHMARKS.md, session 9).
pub const BEHIND_WINDOW: usize = 0;
/// Default longest wait for progress (any byte) from a server that is alive.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How a client tells a dead server from a slow one (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Silence (no byte from the server while waiting on it) after which
    /// the server is probed.
    pub silence: Duration,
    /// Longest wait for a probe (TCP connect and handshake) to succeed.
    pub probe_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            silence: Duration::from_millis(500),
            probe_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// Whether server `server` at `addr` is alive: a fresh TCP connection and
/// the secret handshake, all within `timeout`. The server answers it from
/// its accept and connection threads, whatever its workers are doing.
pub fn probe(
    addr: &str,
    server: u32,
    fsid: &FsId,
    secret: &Secret,
    timeout: Duration,
) -> Result<()> {
    open_stream(addr, server, fsid, secret, timeout).map(drop)
}

/// [`probe`] over the server's same-node Unix socket ([`shm`]).
fn probe_local(
    addr: &str,
    server: u32,
    fsid: &FsId,
    secret: &Secret,
    timeout: Duration,
) -> Result<()> {
    let down = |source| Error::ServerDown {
        server,
        addr: addr.to_owned(),
        op: "connect",
        source,
    };
    let start = Instant::now();
    let sa = shm::socket_addr(fsid, server).map_err(down)?;
    let sock = UnixStream::connect_addr(&sa).map_err(down)?;
    authenticate(
        Stream::Unix(sock),
        addr,
        server,
        fsid,
        secret,
        timeout,
        start,
    )
    .map(drop)
}

fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))
}

/// Connects and authenticates within `timeout`.
fn open_stream(
    addr: &str,
    server: u32,
    fsid: &FsId,
    secret: &Secret,
    timeout: Duration,
) -> Result<Stream> {
    let down = |op, source| Error::ServerDown {
        server,
        addr: addr.to_owned(),
        op,
        source,
    };
    let start = Instant::now();
    let sa = resolve(addr).map_err(|e| down("resolve", e))?;
    let stream = TcpStream::connect_timeout(&sa, timeout).map_err(|e| down("connect", e))?;
    let _ = stream.set_nodelay(true);
    authenticate(
        Stream::Tcp(stream),
        addr,
        server,
        fsid,
        secret,
        timeout,
        start,
    )
}

/// The same-node path to server `server`, if it runs in this network
/// namespace ([`shm`]): the Unix socket, authenticated, and the slots the
/// server granted for a request of `want` (slots, bytes each). `Ok(None)`
/// when no such server listens here (then TCP is the way).
fn open_local(
    addr: &str,
    server: u32,
    fsid: &FsId,
    secret: &Secret,
    timeout: Duration,
    want: (u32, u32),
) -> Result<Option<(Stream, Option<Arc<Region>>)>> {
    let start = Instant::now();
    let Ok(sa) = shm::socket_addr(fsid, server) else {
        return Ok(None);
    };
    let Ok(sock) = UnixStream::connect_addr(&sa) else {
        return Ok(None);
    };
    let mut stream = authenticate(
        Stream::Unix(sock),
        addr,
        server,
        fsid,
        secret,
        timeout,
        start,
    )?;
    let Stream::Unix(sock) = &mut stream else {
        return Err(Error::protocol("not a Unix socket"));
    };
    let down = |op, source| Error::ServerDown {
        server,
        addr: addr.to_owned(),
        op,
        source,
    };
    let setup = Request::ShmSetup {
        slots: want.0,
        slot_size: want.1,
    };
    sock.write_all(&setup.encode(1))
        .map_err(|e| down("send slot setup", e))?;
    let mut h = [0u8; HEADER_LEN];
    let fd = shm::recv_with_fd(sock, &mut h)?;
    let h = Header::decode(&h)?;
    let mut body = vec![0u8; h.len as usize];
    sock.read_exact(&mut body)
        .map_err(|e| down("receive slot setup", e))?;
    let region = match (Reply::decode(h.kind, &body)?, fd) {
        (Reply::Slots { count: 0, .. }, _) => None,
        (Reply::Slots { count, size }, Some(fd)) => {
            Some(Arc::new(Region::attach(fd, count, size)?))
        }
        (Reply::Error(e), _) => return Err(e.into_error(server)),
        _ => return Err(Error::protocol("slot setup answered without a region")),
    };
    Ok(Some((stream, region)))
}

/// Asks server `server` on the fresh TCP connection `stream` for RDMA slots
/// ([`crate::rdma`]): `want` (slots, bytes each), a soft-RoCE endpoint
/// given up after `budget` without progress. `Ok(None)` when the server
/// grants none or does not know the request (the connection stays on TCP,
/// in step); an error when the server fails to answer.
fn open_rdma(
    stream: &mut Stream,
    addr: &str,
    server: u32,
    secret: &Secret,
    want: (u32, u32),
    budget: Duration,
) -> Result<Option<Arc<RdmaSlots>>> {
    let down = |op, source| Error::ServerDown {
        server,
        addr: addr.to_owned(),
        op,
        source,
    };
    let Stream::Tcp(tcp) = &*stream else {
        return Ok(None);
    };
    let ip = tcp.local_addr().map_err(|e| down("local address", e))?.ip();
    let setup = match ClientSetup::prepare(ip, secret, budget) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(server, %addr, "dosfs: no soft-RoCE endpoint here ({e}); TCP");
            return Ok(None);
        }
    };
    let req = Request::RoceSetup {
        slots: want.0,
        slot_size: want.1,
        addr: setup.address(),
    };
    stream
        .write_all(&req.encode(1))
        .map_err(|e| down("send RDMA setup", e))?;
    let mut h = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut h)
        .map_err(|e| down("receive RDMA setup", e))?;
    let h = Header::decode(&h)?;
    let mut body = vec![0u8; h.len as usize];
    stream
        .read_exact(&mut body)
        .map_err(|e| down("receive RDMA setup", e))?;
    if h.id != 1 {
        return Err(Error::protocol("RDMA setup answered with another id"));
    }
    match Reply::decode(h.kind, &body)? {
        Reply::RoceSlots { count: 0, .. } => {
            tracing::info!(server, %addr, "dosfs: the server grants no RDMA slots; TCP");
            Ok(None)
        }
        Reply::RoceSlots {
            count,
            size,
            addr: their,
            rkey,
        } => match setup.connect(count, size, &their, &rkey) {
            Ok(slots) => Ok(Some(Arc::new(slots))),
            // A grant this client cannot use (out of bounds, an address it
            // cannot reach): the connection is in step and carries data
            // inline, as with no grant.
            Err(e) => {
                tracing::warn!(server, %addr, "dosfs: unusable RDMA grant ({e}); TCP");
                Ok(None)
            }
        },
        // A server that does not know the request.
        Reply::Error(e) => {
            tracing::info!(server, %addr, "dosfs: no RDMA ({}); TCP", e.message);
            Ok(None)
        }
        r => Err(unexpected(r)),
    }
}

/// Runs the handshake on a connected stream within what is left of
/// `timeout` since `start`, and checks that server `server` answered.
fn authenticate(
    mut stream: Stream,
    addr: &str,
    server: u32,
    fsid: &FsId,
    secret: &Secret,
    timeout: Duration,
    start: Instant,
) -> Result<Stream> {
    let down = |op, source| Error::ServerDown {
        server,
        addr: addr.to_owned(),
        op,
        source,
    };
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(10));
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| down("configure", e))?;
    let mut id = [0u8; 8];
    fill_random(&mut id).map_err(|source| Error::Auth { server, source })?;
    let my_id = u64::from_le_bytes(id) | 1 << 63;
    let peer = handshake(
        &mut stream,
        secret,
        &auth_context(fsid),
        Role::Initiator,
        my_id,
    )
    .map_err(|source| match source {
        dos_transport::Error::Sys { source, .. } => down("authenticate", source),
        source => Error::Auth { server, source },
    })?;
    if peer != u64::from(server) {
        return Err(Error::WrongServer {
            server,
            reason:
                "another server of the file system answers at this address (stale address file?)",
        });
    }
    Ok(stream)
}

/// How a connection to a server carries data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// TCP (another node, or the same-node path is off).
    Tcp,
    /// The server's Unix socket, data inline (it granted no slots).
    Local,
    /// The server's Unix socket, data through shared slots ([`shm`]).
    Slots,
    /// TCP for requests, data by RDMA into and out of the server's slots
    /// over the soft-RoCE ([`crate::rdma`]).
    Roce,
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataPath::Tcp => "tcp",
            DataPath::Local => "unix",
            DataPath::Slots => "shm",
            DataPath::Roce => "roce",
        })
    }
}

/// A connection's data slots: shared with a server on this node, or the
/// server's reached by RDMA. Either way a piece owns a slot from its
/// request to its reply, and the server handles the slot request the same.
#[derive(Debug, Clone)]
pub enum Slots {
    /// A shared region mapped here ([`shm`]).
    Shm(Arc<Region>),
    /// The server's region, reached by one-sided soft-RoCE operations.
    Roce {
        /// The slots.
        rdma: Arc<RdmaSlots>,
        /// The server (for errors).
        server: u32,
        /// Its address (for errors).
        addr: Arc<str>,
    },
}

impl Slots {
    /// Number of slots.
    pub fn count(&self) -> u32 {
        match self {
            Slots::Shm(r) => r.count(),
            Slots::Roce { rdma, .. } => rdma.count(),
        }
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> u32 {
        match self {
            Slots::Shm(r) => r.slot_size(),
            Slots::Roce { rdma, .. } => rdma.slot_size(),
        }
    }

    fn rdma_error(server: u32, addr: &str, op: &'static str, e: RdmaError) -> Error {
        match e {
            RdmaError::Down(e) => Error::ServerDown {
                server,
                addr: addr.to_owned(),
                op,
                source: std::io::Error::new(ErrorKind::ConnectionReset, e.to_string()),
            },
            RdmaError::Other(e) => e,
        }
    }

    /// Puts `data` into slot `slot` (a copy, or an RDMA WRITE that the
    /// server acknowledged).
    pub fn put(&self, slot: u32, data: &[u8]) -> Result<()> {
        match self {
            Slots::Shm(r) => r.put(slot, data),
            Slots::Roce { rdma, server, addr } => rdma
                .put(slot, data)
                .map_err(|e| Self::rdma_error(*server, addr, "rdma write", e)),
        }
    }

    /// Fills `out` from the start of slot `slot`.
    pub fn get(&self, slot: u32, out: &mut [u8]) -> Result<()> {
        match self {
            Slots::Shm(r) => r.get(slot, out),
            Slots::Roce { rdma, server, addr } => rdma
                .get(slot, out)
                .map_err(|e| Self::rdma_error(*server, addr, "rdma read", e)),
        }
    }
}

/// The pieces of `offset..offset + len` of a file with `layout`, grouped by
/// the server that holds them, each group in file order.
pub fn plan(layout: &Layout, offset: u64, len: u64) -> Result<BTreeMap<u32, Vec<Piece>>> {
    let mut by_server: BTreeMap<u32, Vec<Piece>> = BTreeMap::new();
    for p in layout.pieces(offset, len)? {
        by_server.entry(p.server).or_default().push(p);
    }
    Ok(by_server)
}

/// `pieces` with every piece longer than `max` cut at the multiples of
/// `max` inside its stripe (so the parts of a stripe line up with its
/// checksum blocks when `max` is a multiple of them); `max` 0 cuts nothing.
///
/// ```
/// use dos_fs::client::{plan, split_pieces};
/// use dos_fs::layout::Layout;
/// let l = Layout::new(1 << 20, 1, 0, 1).unwrap();
/// let p = split_pieces(plan(&l, 4096, 1 << 20).unwrap()[&0].clone(), 256 << 10);
/// let lens: Vec<u32> = p.iter().map(|x| x.len).collect();
/// assert_eq!(lens, [258048, 262144, 262144, 262144, 4096]);
/// ```
pub fn split_pieces(pieces: Vec<Piece>, max: u32) -> Vec<Piece> {
    if max == 0 {
        return pieces;
    }
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        let (mut off, end) = (p.offset, p.offset + p.len);
        while off < end {
            let cut = (off / max).saturating_add(1).saturating_mul(max).min(end);
            out.push(Piece {
                offset: off,
                len: cut - off,
                buf_offset: p.buf_offset + u64::from(off - p.offset),
                ..p
            });
            off = cut;
        }
    }
    out
}

/// Which request of a batch to send next, and which one a reply answers:
/// the flow control of one connection, without I/O.
///
/// Piece `k` of a batch of `n` is sent as request id `first_id + k`; at
/// most `window` are in flight; replies may come in any order. After
/// [`Pipeline::stop`] (a piece failed) nothing new is sent and the
/// requests in flight are drained, so the connection stays in step.
///
/// ```
/// use dos_fs::client::Pipeline;
/// let mut p = Pipeline::new(3, 2, 100);
/// assert_eq!(p.poll_send(), Some((100, 0)));
/// assert_eq!(p.poll_send(), Some((101, 1)));
/// assert_eq!(p.poll_send(), None); // window full
/// assert_eq!(p.on_reply(101).unwrap(), 1);
/// assert_eq!(p.poll_send(), Some((102, 2)));
/// assert!(p.on_reply(101).is_err()); // answered already
/// p.on_reply(100).unwrap();
/// p.on_reply(102).unwrap();
/// assert!(p.is_done());
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    first_id: u64,
    window: usize,
    next: usize,
    total: usize,
    in_flight: Vec<bool>,
    count: usize,
    stopped: bool,
}

impl Pipeline {
    /// A batch of `n` requests, ids from `first_id`, at most `window`
    /// (at least 1) in flight.
    pub fn new(n: usize, window: usize, first_id: u64) -> Pipeline {
        Pipeline {
            first_id,
            window: window.max(1),
            next: 0,
            total: n,
            in_flight: vec![false; n],
            count: 0,
            stopped: false,
        }
    }

    /// The next request to send (its id and piece), if the window allows.
    pub fn poll_send(&mut self) -> Option<(u64, usize)> {
        if self.stopped || self.next >= self.total || self.count >= self.window {
            return None;
        }
        let k = self.next;
        self.next += 1;
        self.in_flight[k] = true;
        self.count += 1;
        Some((self.first_id + k as u64, k))
    }

    /// Takes the reply to request `id`; returns its piece. A reply to a
    /// request not in flight is a protocol error.
    pub fn on_reply(&mut self, id: u64) -> Result<usize> {
        let k = id
            .checked_sub(self.first_id)
            .and_then(|k| usize::try_from(k).ok())
            .filter(|&k| k < self.total && self.in_flight[k])
            .ok_or_else(|| Error::protocol("reply to a request not in flight"))?;
        self.in_flight[k] = false;
        self.count -= 1;
        Ok(k)
    }

    /// Sends nothing more; the requests in flight still get their replies.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.count
    }

    /// Whether every request that will be sent has been answered.
    pub fn is_done(&self) -> bool {
        self.count == 0 && (self.stopped || self.next >= self.total)
    }
}

/// One authenticated connection to a server.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    slots: Option<Slots>,
    server: u32,
    addr: String,
    next_id: u64,
    fsid: FsId,
    secret: Secret,
    io_timeout: Duration,
    liveness: Liveness,
    /// Requests sent by [`Client::write_behind`] and not yet answered, by id.
    behind: BTreeMap<u64, Behind>,
}

/// A request sent by [`Client::write_behind`] whose reply is still to come:
/// a piece of a write (its slot is taken until then).
#[derive(Debug, Clone, Copy)]
struct Behind {
    ino: u64,
    /// (stripe, offset in it, length) of the write.
    range: (u64, u32, u32),
    slot: Option<u32>,
}

impl Behind {
    /// Whether this write touches bytes of `p` of file `ino` (then `p` must
    /// wait for it: the server's workers may run requests in any order).
    fn overlaps(&self, ino: u64, p: &Piece) -> bool {
        let (s, o, l) = self.range;
        self.ino == ino && s == p.stripe && o < p.offset + p.len && p.offset < o + l
    }
}

impl Conn {
    /// Connects to server `server` at `addr` and authenticates with `secret`
    /// (within [`CONNECT_TIMEOUT`]); a live server may then take up to
    /// `io_timeout` without sending a byte, a dead one is given up as the
    /// default [`Liveness`] says.
    pub fn connect(
        addr: &str,
        server: u32,
        fsid: &FsId,
        secret: &Secret,
        io_timeout: Duration,
    ) -> Result<Conn> {
        Conn::connect_with(addr, server, fsid, secret, io_timeout, Liveness::default())
    }

    /// [`Conn::connect`] with explicit liveness settings.
    pub fn connect_with(
        addr: &str,
        server: u32,
        fsid: &FsId,
        secret: &Secret,
        io_timeout: Duration,
        liveness: Liveness,
    ) -> Result<Conn> {
        Conn::connect_via(addr, server, fsid, secret, io_timeout, liveness, None)
    }

    /// [`Conn::connect_via`] that, on TCP, also asks for RDMA slots
    /// ([`crate::rdma`]) when `rdma` names the slots wanted (count, bytes
    /// each).
    #[allow(clippy::too_many_arguments)]
    pub fn connect_opts(
        addr: &str,
        server: u32,
        fsid: &FsId,
        secret: &Secret,
        io_timeout: Duration,
        liveness: Liveness,
        local: Option<(u32, u32)>,
        rdma: Option<(u32, u32)>,
    ) -> Result<Conn> {
        let mut c = Conn::connect_via(addr, server, fsid, secret, io_timeout, liveness, local)?;
        if let (Some(want), Stream::Tcp(_)) = (rdma, &c.stream) {
            // Bounded like the connection itself: a server that does not
            // answer the setup within the probe timeout is down.
            let t = liveness.probe_timeout;
            let _ = c.stream.set_read_timeout(Some(t));
            // The server's endpoint answers from its own thread, as it
            // answers a probe: silent for the probe timeout, it is down.
            let budget = liveness.probe_timeout;
            let got = open_rdma(&mut c.stream, addr, server, secret, want, budget)?;
            let tick = liveness.silence.max(Duration::from_millis(1));
            c.stream
                .set_read_timeout(Some(tick))
                .map_err(|e| c.down("configure", e))?;
            c.slots = got.map(|rdma| Slots::Roce {
                rdma,
                server,
                addr: addr.into(),
            });
        }
        tracing::debug!(server, %addr, path = %c.data_path(), "dosfs: connected");
        Ok(c)
    }

    /// [`Conn::connect_with`] that first tries the same-node path
    /// ([`shm`]) when `local` names the slots wanted (count, bytes each).
    pub fn connect_via(
        addr: &str,
        server: u32,
        fsid: &FsId,
        secret: &Secret,
        io_timeout: Duration,
        liveness: Liveness,
        local: Option<(u32, u32)>,
    ) -> Result<Conn> {
        let t = liveness.probe_timeout;
        let found = match local {
            // A same-node socket that does not prove to be this server (a
            // stray server of the same file-system id and index, e.g. on
            // the same targets under another secret) is not ours: the
            // address file's TCP address is authoritative. A silent or
            // dead one fails here, within the probe timeout.
            Some(want) => match open_local(addr, server, fsid, secret, t, want) {
                Err(Error::Auth { .. } | Error::WrongServer { .. }) => None,
                r => r?,
            },
            None => None,
        };
        let (stream, slots) = match found {
            Some(x) => x,
            None => (open_stream(addr, server, fsid, secret, t)?, None),
        };
        let tick = liveness.silence.max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(tick))
            .and_then(|()| stream.set_write_timeout(Some(tick)))
            .map_err(|e| Error::ServerDown {
                server,
                addr: addr.to_owned(),
                op: "configure",
                source: e,
            })?;
        Ok(Conn {
            stream,
            slots: slots.map(Slots::Shm),
            server,
            addr: addr.to_owned(),
            next_id: 1,
            fsid: *fsid,
            secret: secret.clone(),
            io_timeout,
            liveness,
            behind: BTreeMap::new(),
        })
    }

    /// Writes in flight ([`Client::write_behind`]) on this connection.
    pub fn behind(&self) -> usize {
        self.behind.len()
    }

    /// A data slot no write in flight owns.
    fn free_slot(&self) -> Option<u32> {
        let n = self.slots.as_ref()?.count();
        (0..n).find(|&s| !self.behind.values().any(|b| b.slot == Some(s)))
    }

    /// Waits for the reply to one request in flight; returns its file and
    /// whether it succeeded (an error reply is the `Err` inside).
    fn reap_one(&mut self) -> Result<(u64, Result<()>)> {
        let (id, rep) = self.recv()?;
        let b = self
            .behind
            .remove(&id)
            .ok_or_else(|| Error::protocol("reply to a request not in flight"))?;
        Ok((
            b.ino,
            match rep {
                Reply::Error(e) => Err(e.into_error(self.server)),
                _ => Ok(()),
            },
        ))
    }

    /// How this connection carries data.
    pub fn data_path(&self) -> DataPath {
        match (&self.stream, &self.slots) {
            (Stream::Tcp(_), Some(Slots::Roce { .. })) => DataPath::Roce,
            (Stream::Tcp(_), _) => DataPath::Tcp,
            (Stream::Unix(_), None) => DataPath::Local,
            (Stream::Unix(_), Some(_)) => DataPath::Slots,
        }
    }

    /// The data slots of a same-node connection.
    pub fn slots(&self) -> Option<&Arc<Region>> {
        match &self.slots {
            Some(Slots::Shm(r)) => Some(r),
            _ => None,
        }
    }

    /// The data slots of the connection, shared or RDMA.
    pub fn data_slots(&self) -> Option<&Slots> {
        self.slots.as_ref()
    }

    /// The RDMA slots of a TCP connection ([`crate::rdma`]).
    pub fn rdma_slots(&self) -> Option<&Arc<RdmaSlots>> {
        match &self.slots {
            Some(Slots::Roce { rdma, .. }) => Some(rdma),
            _ => None,
        }
    }

    /// Called when a tick passed without progress since `last`: an error if
    /// the server is dead (probe failed) or alive but stuck past the
    /// I/O timeout.
    fn check_alive(&self, last: Instant, op: &'static str) -> Result<()> {
        if last.elapsed() >= self.io_timeout {
            return Err(self.down(
                op,
                std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "alive but no progress for {:.1} s",
                        last.elapsed().as_secs_f64()
                    ),
                ),
            ));
        }
        // Probed the way it is reached: a same-node server may have been
        // restarted on another TCP port than the address file says.
        let t = self.liveness.probe_timeout;
        match &self.stream {
            Stream::Unix(_) => probe_local(&self.addr, self.server, &self.fsid, &self.secret, t),
            Stream::Tcp(_) => probe(&self.addr, self.server, &self.fsid, &self.secret, t),
        }
        .map_err(|e| match e {
            Error::ServerDown { source, .. } => self.down("liveness probe", source),
            e => self.down("liveness probe", std::io::Error::other(e.to_string())),
        })
    }

    /// Fills `buf`, probing the server while it is silent.
    fn read_full(&mut self, buf: &mut [u8], op: &'static str) -> Result<()> {
        let mut got = 0;
        let mut last = Instant::now();
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(self.down(op, ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    got += n;
                    last = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.check_alive(last, op)?;
                }
                Err(e) => return Err(self.down(op, e)),
            }
        }
        Ok(())
    }

    /// Writes all of `buf`, probing the server while it takes nothing.
    fn write_full(&mut self, buf: &[u8], op: &'static str) -> Result<()> {
        let mut put = 0;
        let mut last = Instant::now();
        while put < buf.len() {
            match self.stream.write(&buf[put..]) {
                Ok(0) => return Err(self.down(op, ErrorKind::WriteZero.into())),
                Ok(n) => {
                    put += n;
                    last = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.check_alive(last, op)?;
                }
                Err(e) => return Err(self.down(op, e)),
            }
        }
        Ok(())
    }

    fn down(&self, op: &'static str, source: std::io::Error) -> Error {
        Error::ServerDown {
            server: self.server,
            addr: self.addr.clone(),
            op,
            source,
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// `n` consecutive fresh request ids; returns the first.
    pub fn reserve_ids(&mut self, n: usize) -> u64 {
        let first = self.next_id + 1;
        self.next_id += n as u64;
        first
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.write_full(frame, "send request")
    }

    /// Receives one reply.
    pub fn recv(&mut self) -> Result<(u64, Reply)> {
        let mut h = [0u8; HEADER_LEN];
        self.read_full(&mut h, "wait for reply")?;
        let h = Header::decode(&h)?;
        let mut body = vec![0u8; h.len as usize];
        self.read_full(&mut body, "receive reply")?;
        Ok((h.id, Reply::decode(h.kind, &body)?))
    }

    /// Sends `req` and waits for its reply; an error reply is an `Err`.
    pub fn call(&mut self, req: &Request) -> Result<Reply> {
        let id = self.next_id();
        self.send(&req.encode(id))?;
        let (rid, rep) = self.recv()?;
        if rid != id {
            return Err(Error::protocol("reply to another request"));
        }
        match rep {
            Reply::Error(e) => Err(e.into_error(self.server)),
            r => Ok(r),
        }
    }
}

/// A file found bad by [`Client::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadChunk {
    /// The file.
    pub path: String,
    /// The file offset where the chunk starts.
    pub offset: u64,
    /// The server holding it.
    pub server: u32,
    /// What is wrong.
    pub reason: String,
}

/// What [`Client::verify`] found over a tree.
#[derive(Debug, Clone, Default)]
pub struct VerifySummary {
    /// Files checked.
    pub files: u64,
    /// Chunks and bytes checked, and chunks pending a sync.
    pub total: VerifyReport,
    /// Bad chunks.
    pub bad: Vec<BadChunk>,
}

/// A client of one file system.
#[derive(Debug)]
pub struct Client {
    fsid: FsId,
    secret: Secret,
    addrs: Vec<String>,
    conns: Vec<Mutex<Option<Conn>>>,
    /// Longest wait for a reply.
    pub io_timeout: Duration,
    /// Requests in flight per server connection.
    pub window: usize,
    /// How a dead server is told from a slow one.
    pub liveness: Liveness,
    /// Use the same-node path ([`shm`]) to servers on this node (default
    /// on; off: TCP to every server).
    pub local: bool,
    /// Data slots asked of each same-node server (at least the window).
    pub slots: u32,
    /// Bytes per slot (pieces larger go inline).
    pub slot_size: u32,
    /// How servers on other nodes are reached: TCP, or RDMA into their
    /// slots over the soft-RoCE ([`crate::rdma`]; `DOS_FS_TRANSPORT`).
    pub transport: Transport,
    /// Reads are cut into requests of at most this many bytes (0: one per
    /// piece), so one large read keeps several reads in flight on each
    /// server's disk.
    pub read_piece: u32,
    /// Writes in flight per connection by [`Client::write_behind`] (at
    /// most the slots on a same-node connection); 0 makes it
    /// [`Client::write_at`] (`DOS_FS_WRITE_BEHIND`, default
    /// [`BEHIND_WINDOW`]).
    pub behind_window: usize,
    /// The first error of a write-behind request of each file, kept until
    /// [`Client::write_behind`] or [`Client::flush`] of that file reports it.
    deferred: Mutex<BTreeMap<u64, Error>>,
    /// The end of each file's [`Client::write_behind`] writes not yet told
    /// to the metadata server (grow-only; sent by [`Client::publish_size`]).
    grow: Mutex<BTreeMap<u64, u64>>,
}

fn unexpected(r: Reply) -> Error {
    Error::protocol(format!("unexpected reply kind {:#x}", r.kind()))
}

impl Client {
    /// A client of the file system in `addr` (connections open on first use).
    pub fn new(addr: &AddrFile) -> Client {
        Client {
            fsid: addr.fsid,
            secret: addr.secret.clone(),
            addrs: addr.servers.iter().map(|s| s.addr.clone()).collect(),
            conns: addr.servers.iter().map(|_| Mutex::new(None)).collect(),
            io_timeout: IO_TIMEOUT,
            window: 8,
            liveness: Liveness::default(),
            local: true,
            slots: 16,
            slot_size: crate::layout::DEFAULT_STRIPE_SIZE,
            transport: Transport::from_env().unwrap_or_else(|e| {
                tracing::warn!("dosfs: {e}; using auto");
                Transport::Auto
            }),
            read_piece: READ_PIECE,
            behind_window: match std::env::var("DOS_FS_WRITE_BEHIND") {
                Err(_) => BEHIND_WINDOW,
                Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                    tracing::warn!(
                        "dosfs: DOS_FS_WRITE_BEHIND={v} is not a number; using {BEHIND_WINDOW}"
                    );
                    BEHIND_WINDOW
                }),
            },
            deferred: Mutex::new(BTreeMap::new()),
            grow: Mutex::new(BTreeMap::new()),
        }
    }

    /// A client of the file system whose address file is `path` (or
    /// `$DOSFS`, or `./dosfs.addr`).
    pub fn open(path: Option<&Path>) -> Result<Client> {
        Ok(Client::new(&AddrFile::read(&AddrFile::locate(path))?))
    }

    /// The address of server `server`.
    pub fn addr(&self, server: u32) -> Option<&str> {
        self.addrs.get(server as usize).map(String::as_str)
    }

    /// The number of servers.
    pub fn servers(&self) -> u32 {
        self.addrs.len() as u32
    }

    /// Runs `f` on the connection to `server`, connecting first if needed;
    /// a connection that failed is dropped (the next use reconnects). The
    /// write-behind requests of the connection are answered first
    /// ([`Client::write_behind`]), so `f` sees their effects.
    pub fn with_conn<T>(&self, server: u32, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        self.with_conn_opt(server, true, f)
    }

    /// [`Client::with_conn`], the write-behind requests first answered or
    /// (`settle` false) left in flight.
    fn with_conn_opt<T>(
        &self,
        server: u32,
        settle: bool,
        f: impl FnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        let slot = self.conns.get(server as usize).ok_or(Error::WrongServer {
            server,
            reason: "no such server in the address file",
        })?;
        let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let want = (self.slots.max(self.window as u32), self.slot_size);
            *g = Some(Conn::connect_opts(
                &self.addrs[server as usize],
                server,
                &self.fsid,
                &self.secret,
                self.io_timeout,
                self.liveness,
                self.local.then_some(want),
                self.transport.wants_roce().then_some(want),
            )?);
        }
        let Some(conn) = g.as_mut() else {
            return Err(Error::protocol("no connection"));
        };
        let r = if settle {
            self.settle(conn).and_then(|()| f(conn))
        } else {
            f(conn)
        };
        if let Err(e @ (Error::ServerDown { .. } | Error::Protocol { .. })) = &r {
            if let Some(c) = g.take() {
                self.lost(&c, e);
            }
        }
        r
    }

    /// Keeps `e` as the error of file `ino` unless it has one already.
    fn defer(&self, ino: u64, e: Error) {
        let mut d = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        d.entry(ino).or_insert(e);
    }

    /// The kept error of file `ino`, taken.
    fn take_deferred(&self, ino: u64) -> Result<()> {
        let mut d = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        d.remove(&ino).map_or(Ok(()), Err)
    }

    /// Waits for every write-behind reply of `c`, keeping their errors.
    fn settle(&self, c: &mut Conn) -> Result<()> {
        while !c.behind.is_empty() {
            let (ino, r) = c.reap_one()?;
            if let Err(e) = r {
                self.defer(ino, e);
            }
        }
        Ok(())
    }

    /// A connection dropped after `e` with write-behind requests in flight:
    /// their files get an error naming the server (their bytes may be lost).
    fn lost(&self, c: &Conn, e: &Error) {
        let inos: std::collections::BTreeSet<u64> = c.behind.values().map(|b| b.ino).collect();
        for ino in inos {
            self.defer(
                ino,
                Error::ServerDown {
                    server: c.server,
                    addr: c.addr.clone(),
                    op: "write (in flight)",
                    source: std::io::Error::new(ErrorKind::ConnectionAborted, e.to_string()),
                },
            );
        }
    }

    /// How the connection to `server` carries data (connecting first).
    pub fn data_path(&self, server: u32) -> Result<DataPath> {
        self.with_conn(server, |c| Ok(c.data_path()))
    }

    /// One request to server `server`.
    pub fn call(&self, server: u32, req: &Request) -> Result<Reply> {
        self.with_conn(server, |c| c.call(req))
    }

    fn attr(&self, req: &Request) -> Result<Attr> {
        match self.call(0, req)? {
            Reply::Attr(a) => Ok(a),
            r => Err(unexpected(r)),
        }
    }

    /// Attributes of `path`.
    pub fn stat(&self, path: &str) -> Result<Attr> {
        self.attr(&Request::Stat { path: path.into() })
    }

    /// Creates a directory.
    pub fn mkdir(&self, path: &str) -> Result<Attr> {
        self.attr(&Request::Mkdir { path: path.into() })
    }

    /// Creates a file (or returns the existing one unless `exclusive`).
    pub fn create(&self, path: &str, spec: Option<LayoutSpec>, exclusive: bool) -> Result<Attr> {
        self.attr(&Request::Create {
            path: path.into(),
            spec,
            exclusive,
        })
    }

    /// Every entry of a directory, in name order (page by page).
    pub fn readdir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let mut out: Vec<DirEntry> = Vec::new();
        loop {
            let after = out.last().map(|e| e.name.clone()).unwrap_or_default();
            match self.call(
                0,
                &Request::Readdir {
                    path: path.into(),
                    after,
                    limit: 1024,
                },
            )? {
                Reply::Entries { entries, more } => {
                    let empty = entries.is_empty();
                    out.extend(entries);
                    if !more || empty {
                        return Ok(out);
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
    }

    /// Removes a file (and its chunks on every server) or an empty directory.
    pub fn unlink(&self, path: &str) -> Result<Attr> {
        let a = self.attr(&Request::Unlink { path: path.into() })?;
        if a.kind == Kind::File {
            self.drop_chunks(&a)?;
        }
        Ok(a)
    }

    fn drop_chunks(&self, a: &Attr) -> Result<()> {
        for s in a.layout.server_list() {
            self.call(s, &Request::DropFile { ino: a.ino })?;
        }
        Ok(())
    }

    /// Renames; a file replaced at `to` loses its chunks.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        match self.call(
            0,
            &Request::Rename {
                from: from.into(),
                to: to.into(),
            },
        )? {
            Reply::Renamed(Some(old)) if old.kind == Kind::File => self.drop_chunks(&old),
            Reply::Renamed(_) => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// `setstripe`: a directory's default layout, or a new empty file's.
    pub fn set_stripe(&self, path: &str, spec: LayoutSpec) -> Result<Attr> {
        self.attr(&Request::SetStripe {
            path: path.into(),
            spec,
        })
    }

    /// Sets a file's size, cutting its chunks when it shrinks.
    pub fn set_size(&self, a: &Attr, size: u64) -> Result<Attr> {
        let new = self.attr(&Request::SetSize {
            ino: a.ino,
            size,
            grow_only: false,
        })?;
        if size < a.size {
            for s in a.layout.server_list() {
                self.call(
                    s,
                    &Request::Truncate {
                        ino: a.ino,
                        stripe_size: a.layout.stripe_size,
                        size,
                    },
                )?;
            }
        }
        Ok(new)
    }

    /// Makes a file's data and the metadata durable: every server holding
    /// its stripes, and server 0, sync at once (a sync is mostly fsyncs,
    /// which overlap on the disk); the first error in server order wins.
    pub fn sync(&self, a: &Attr) -> Result<()> {
        self.publish_size(a.ino)?;
        let mut servers: Vec<u32> = a.layout.server_list().collect();
        servers.push(0);
        servers.sort_unstable();
        servers.dedup();
        let req = Request::Sync { ino: Some(a.ino) };
        if servers.len() == 1 {
            return self.call(servers[0], &req).map(drop);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = servers
                .iter()
                .map(|&s| {
                    let req = &req;
                    scope.spawn(move || self.call(s, req).map(drop))
                })
                .collect();
            let mut res = Ok(());
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(Error::protocol("sync thread panicked")));
                if res.is_ok() {
                    res = r;
                }
            }
            res
        })
    }

    /// Space on every server; a server that fails gives its error.
    pub fn statfs(&self) -> Vec<Result<ServerSpace>> {
        (0..self.servers())
            .map(|s| match self.call(s, &Request::Statfs)? {
                Reply::Space(sp) => Ok(sp),
                r => Err(unexpected(r)),
            })
            .collect()
    }

    /// Sends `pieces` to `server` with up to `window` in flight. On a
    /// connection with data slots each piece that fits one gets a slot of
    /// its own from its send to its reply (`make` and `take` are given it);
    /// the slots bound the window.
    fn pipeline(
        &self,
        server: u32,
        pieces: &[Piece],
        mut make: impl FnMut(u64, &Piece, Option<(&Slots, u32)>) -> Result<Vec<u8>>,
        mut take: impl FnMut(&Piece, Reply, Option<(&Slots, u32)>) -> Result<()>,
    ) -> Result<()> {
        let window = self.window;
        self.with_conn(server, |c| {
            let region = c.slots.clone();
            let window = match &region {
                Some(r) => window.min(r.count() as usize),
                None => window,
            };
            let mut free: Vec<u32> = match &region {
                Some(r) => (0..r.count()).rev().collect(),
                None => Vec::new(),
            };
            let mut owner: Vec<Option<u32>> = vec![None; pieces.len()];
            let mut pl = Pipeline::new(pieces.len(), window, c.reserve_ids(pieces.len()));
            let mut first_err = None;
            while !pl.is_done() {
                while let Some((id, k)) = pl.poll_send() {
                    let p = &pieces[k];
                    let slot = match &region {
                        Some(r) if p.len <= r.slot_size() => free.pop(),
                        _ => None,
                    };
                    owner[k] = slot;
                    let r = region.as_ref();
                    match make(id, p, slot.and_then(|s| Some((r?, s)))) {
                        Ok(frame) => c.send(&frame)?,
                        // An RDMA write to a dead server: the requests in
                        // flight will not be answered either (the
                        // connection is dropped).
                        Err(e @ Error::ServerDown { .. }) => return Err(e),
                        Err(e) => {
                            // Nothing went out: the request is answered here.
                            free.extend(owner[k].take());
                            pl.on_reply(id)?;
                            pl.stop();
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if pl.is_done() {
                    break;
                }
                let (id, rep) = c.recv()?;
                let k = pl.on_reply(id)?;
                let slot = owner[k].take();
                let r = region.as_ref();
                let res = match rep {
                    Reply::Error(e) => Err(e.into_error(server)),
                    rep => take(&pieces[k], rep, slot.and_then(|s| Some((r?, s)))),
                };
                free.extend(slot);
                if let Err(e @ Error::ServerDown { .. }) = res {
                    return Err(e);
                }
                if let Err(e) = res {
                    pl.stop();
                    first_err.get_or_insert(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        })
    }

    /// Runs `per_server` for every server of the plan, in parallel; the first
    /// error (in server order) wins.
    fn each_server<F>(&self, plan: &BTreeMap<u32, Vec<Piece>>, per_server: F) -> Result<()>
    where
        F: Fn(u32, &[Piece]) -> Result<()> + Sync,
    {
        if plan.len() == 1 {
            let (s, p) = plan.iter().next().expect("one entry");
            return per_server(*s, p);
        }
        let f = &per_server;
        std::thread::scope(|scope| {
            let handles: Vec<_> = plan
                .iter()
                .map(|(&s, p)| scope.spawn(move || f(s, p)))
                .collect();
            let mut res = Ok(());
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(Error::protocol("I/O thread panicked")));
                if res.is_ok() {
                    res = r;
                }
            }
            res
        })
    }

    /// Writes `data` at `offset` of file `a` straight to the servers holding
    /// its stripes, then grows its size (not durable until [`Client::sync`]).
    pub fn write_at(&self, a: &Attr, offset: u64, data: &[u8]) -> Result<()> {
        self.write_data(a, offset, data)?;
        if !data.is_empty() {
            self.attr(&Request::SetSize {
                ino: a.ino,
                size: offset + data.len() as u64,
                grow_only: true,
            })?;
        }
        Ok(())
    }

    /// The data of [`Client::write_at`], each server's pieces pipelined,
    /// waiting for every reply; the size is left to the caller.
    fn write_data(&self, a: &Attr, offset: u64, data: &[u8]) -> Result<()> {
        if a.kind != Kind::File {
            return Err(Error::IsADirectory {
                path: format!("#{}", a.ino),
            });
        }
        let plan = plan(&a.layout, offset, data.len() as u64)?;
        self.each_server(&plan, |server, pieces| {
            self.pipeline(
                server,
                pieces,
                |id, p, slot| {
                    let b = p.buf_offset as usize;
                    let bytes = &data[b..b + p.len as usize];
                    Ok(match slot {
                        Some((region, slot)) => {
                            region.put(slot, bytes)?;
                            Request::WriteSlot {
                                ino: a.ino,
                                stripe: p.stripe,
                                stripe_size: a.layout.stripe_size,
                                offset: p.offset,
                                len: p.len,
                                slot,
                            }
                            .encode(id)
                        }
                        None => {
                            encode_write(id, a.ino, p.stripe, a.layout.stripe_size, p.offset, bytes)
                        }
                    })
                },
                |_, r, _| match r {
                    Reply::Ok => Ok(()),
                    r => Err(unexpected(r)),
                },
            )
        })
    }

    /// [`Client::write_at`] that does not wait for the servers' replies:
    /// it returns once every piece is sent, its bytes copied into a slot
    /// (same node, or RDMA) or into the request frame, so `data` may be
    /// reused at once. Up to [`Client::behind_window`] requests stay in
    /// flight per server (and at most one slot each), so a caller writing
    /// 1 MiB at a time keeps that many writes on the servers' disks; with a
    /// window of 0 each call waits for its replies, as `write_at` does.
    ///
    /// The file's size is not sent per write: the client keeps the end its
    /// writes reached and tells the metadata server once, at
    /// [`Client::publish_size`] (which [`Client::flush`] and
    /// [`Client::sync`] call), so a 1 MiB write is one request to one
    /// server instead of that and a `SetSize` round trip to server 0.
    /// Until then other clients see the file's old size (MPI-IO's
    /// non-atomic rule: writes are visible to others after sync).
    ///
    /// Every other request to a server first waits for that server's
    /// write-behind replies (a read, a sync, a stat see the writes), and a
    /// write waits for an earlier one in flight that overlaps it (the
    /// server may run requests in any order). A write that failed on the
    /// server is reported by the next `write_behind` or [`Client::flush`]
    /// of the same file; a server lost with writes in flight is
    /// [`Error::ServerDown`] there.
    pub fn write_behind(&self, a: &Attr, offset: u64, data: &[u8]) -> Result<()> {
        if a.kind != Kind::File {
            return Err(Error::IsADirectory {
                path: format!("#{}", a.ino),
            });
        }
        if self.behind_window == 0 {
            self.write_data(a, offset, data)?;
            self.grow_to(a.ino, offset + data.len() as u64, data.is_empty());
            return self.take_deferred(a.ino);
        }
        let plan = plan(&a.layout, offset, data.len() as u64)?;
        let window = self.behind_window;
        self.each_server(&plan, |server, pieces| {
            self.with_conn_opt(server, false, |c| {
                for p in pieces {
                    let bytes = &data[p.buf_offset as usize..][..p.len as usize];
                    let fits = c.slots.as_ref().is_some_and(|r| p.len <= r.slot_size());
                    let slot = loop {
                        let slot = if fits { c.free_slot() } else { None };
                        let busy = c.behind.len() >= window
                            || (fits && slot.is_none())
                            || c.behind.values().any(|b| b.overlaps(a.ino, p));
                        if !busy {
                            break slot;
                        }
                        let (ino, r) = c.reap_one()?;
                        if let Err(e) = r {
                            self.defer(ino, e);
                        }
                    };
                    let id = c.next_id();
                    let frame = match (slot, &c.slots) {
                        (Some(slot), Some(region)) => {
                            region.put(slot, bytes)?;
                            Request::WriteSlot {
                                ino: a.ino,
                                stripe: p.stripe,
                                stripe_size: a.layout.stripe_size,
                                offset: p.offset,
                                len: p.len,
                                slot,
                            }
                            .encode(id)
                        }
                        _ => {
                            encode_write(id, a.ino, p.stripe, a.layout.stripe_size, p.offset, bytes)
                        }
                    };
                    c.send(&frame)?;
                    c.behind.insert(
                        id,
                        Behind {
                            ino: a.ino,
                            range: (p.stripe, p.offset, p.len),
                            slot,
                        },
                    );
                }
                Ok(())
            })
        })?;
        self.grow_to(a.ino, offset + data.len() as u64, data.is_empty());
        self.take_deferred(a.ino)
    }

    /// Notes that file `ino` reaches `end` (unless the write was `empty`):
    /// the size goes to the metadata server at [`Client::publish_size`].
    fn grow_to(&self, ino: u64, end: u64, empty: bool) {
        if empty {
            return;
        }
        let mut g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.entry(ino).or_insert(0);
        *e = (*e).max(end);
    }

    /// Tells the metadata server the size file `ino`'s
    /// [`Client::write_behind`] writes reached, if they grew it (one
    /// grow-only `SetSize`; nothing when there is none to tell).
    /// [`Client::flush`] and [`Client::sync`] do it; so must a caller
    /// before it asks for the size expecting to see its own writes.
    pub fn publish_size(&self, ino: u64) -> Result<()> {
        let end = {
            let mut g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
            g.remove(&ino)
        };
        let Some(size) = end else { return Ok(()) };
        self.attr(&Request::SetSize {
            ino,
            size,
            grow_only: true,
        })
        .map(drop)
    }

    /// The end of file `ino`'s writes not yet published
    /// ([`Client::publish_size`]), if any.
    pub fn unpublished_size(&self, ino: u64) -> Option<u64> {
        let g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&ino).copied()
    }

    /// Waits for every write-behind request of this client
    /// ([`Client::write_behind`]) on every open connection; returns the
    /// first error of file `ino`'s (others stay for their files).
    pub fn flush(&self, ino: u64) -> Result<()> {
        let mut res = Ok(());
        for (server, slot) in self.conns.iter().enumerate() {
            let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
            let Some(c) = g.as_mut() else { continue };
            if let Err(e) = self.settle(c) {
                if let Some(c) = g.take() {
                    self.lost(&c, &e);
                }
                tracing::debug!(server, "dosfs: flush: {e}");
            }
        }
        if let Err(e) = self.take_deferred(ino) {
            res = Err(e);
        }
        let published = self.publish_size(ino);
        res.and(published)
    }

    /// Reads `buf.len()` bytes at `offset` of file `a` (named `path` in
    /// errors) from the servers holding its stripes; bytes never written
    /// read as zeros. The caller clamps to the file's size.
    pub fn read_at(&self, path: &str, a: &Attr, offset: u64, buf: &mut [u8]) -> Result<()> {
        let plan: BTreeMap<u32, Vec<Piece>> = plan(&a.layout, offset, buf.len() as u64)?
            .into_iter()
            .map(|(s, p)| (s, split_pieces(p, self.read_piece)))
            .collect();
        let out = Mutex::new(buf);
        let res = self.each_server(&plan, |server, pieces| {
            self.pipeline(
                server,
                pieces,
                |id, p, slot| {
                    Ok(match slot {
                        Some((_, slot)) => Request::ReadSlot {
                            ino: a.ino,
                            stripe: p.stripe,
                            stripe_size: a.layout.stripe_size,
                            offset: p.offset,
                            len: p.len,
                            slot,
                        }
                        .encode(id),
                        None => Request::Read {
                            ino: a.ino,
                            stripe: p.stripe,
                            stripe_size: a.layout.stripe_size,
                            offset: p.offset,
                            len: p.len,
                        }
                        .encode(id),
                    })
                },
                |p, r, slot| {
                    let b = p.buf_offset as usize;
                    let n = p.len as usize;
                    match (r, slot) {
                        (Reply::Ok, Some((slots @ Slots::Shm(_), slot))) => {
                            let mut g = out.lock().unwrap_or_else(|e| e.into_inner());
                            slots.get(slot, &mut g[b..b + n])
                        }
                        (Reply::Ok, Some((slots, slot))) => {
                            // An RDMA READ takes a while: not under the
                            // lock the other servers' pieces need.
                            let mut tmp = vec![0u8; n];
                            slots.get(slot, &mut tmp)?;
                            let mut g = out.lock().unwrap_or_else(|e| e.into_inner());
                            g[b..b + n].copy_from_slice(&tmp);
                            Ok(())
                        }
                        (Reply::Data(d), None) if d.len() == n => {
                            let mut g = out.lock().unwrap_or_else(|e| e.into_inner());
                            g[b..b + n].copy_from_slice(&d);
                            Ok(())
                        }
                        (r, _) => Err(unexpected(r)),
                    }
                },
            )
        });
        res.map_err(|e| match e {
            Error::ChunkCorrupt {
                stripe,
                file_offset,
                server,
                ..
            } => Error::CorruptData {
                path: path.to_owned(),
                offset: file_offset,
                stripe,
                server,
            },
            e => e,
        })
    }

    /// Removes, on every server, the chunks of inodes the namespace no
    /// longer has: a file removed while a server holding its stripes was
    /// down, a client that died between the unlink and the chunk drops, a
    /// create lost with the journal's unsynced tail. Returns the (server,
    /// inode) pairs dropped. Safe while clients work: a chunk exists only
    /// after its file's create returned, so an inode server 0 does not know
    /// (asked after the chunk was listed) is gone for good, and inode
    /// numbers are never reused. A server that is down is an error naming
    /// it (the others are collected first).
    pub fn collect_orphans(&self) -> Result<Vec<(u32, u64)>> {
        let mut dropped = Vec::new();
        let mut down = None;
        for s in 0..self.servers() {
            let mut after = 0;
            loop {
                let page = match self.call(s, &Request::ListChunks { after, limit: 4096 }) {
                    Ok(Reply::Entries { entries, more }) => (entries, more),
                    Ok(r) => return Err(unexpected(r)),
                    Err(e @ Error::ServerDown { .. }) => {
                        down.get_or_insert(e);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                for e in &page.0 {
                    match self.call(0, &Request::StatIno { ino: e.ino }) {
                        Ok(_) => {}
                        Err(Error::NotFound { .. }) => {
                            self.call(s, &Request::DropFile { ino: e.ino })?;
                            dropped.push((s, e.ino));
                        }
                        Err(err) => return Err(err),
                    }
                }
                match page.0.last() {
                    Some(l) if page.1 => after = l.ino,
                    _ => break,
                }
            }
        }
        match down {
            Some(e) => Err(e),
            None => Ok(dropped),
        }
    }

    /// Checks every synced chunk of the file or tree at `path`.
    pub fn verify(&self, path: &str) -> Result<VerifySummary> {
        let mut sum = VerifySummary::default();
        let mut stack = vec![FsPath::parse(path)?];
        while let Some(p) = stack.pop() {
            let a = self.stat(&p.to_string())?;
            if a.kind == Kind::Dir {
                for e in self.readdir(&p.to_string())? {
                    stack.push(p.join(&e.name)?);
                }
                continue;
            }
            sum.files += 1;
            for s in a.layout.server_list() {
                let rep = match self.call(
                    s,
                    &Request::Verify {
                        ino: a.ino,
                        stripe_size: a.layout.stripe_size,
                    },
                )? {
                    Reply::Verify(v) => v,
                    r => return Err(unexpected(r)),
                };
                sum.total.chunks += rep.chunks;
                sum.total.bytes += rep.bytes;
                sum.total.pending += rep.pending;
                for (stripe, reason) in rep.bad {
                    sum.bad.push(BadChunk {
                        path: p.to_string(),
                        offset: a.layout.file_offset(stripe, 0),
                        server: s,
                        reason,
                    });
                }
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model: replies in a random order; every piece is sent
        /// once and answered once, the window is never exceeded, and a stop
        /// drains what is in flight.
        #[test]
        fn pipeline_flow_control(n in 0usize..40, window in 0usize..6, picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..100), stop_at in proptest::option::of(0usize..40)) {
            let mut p = Pipeline::new(n, window, 1000);
            let mut outstanding: Vec<u64> = Vec::new();
            let mut answered = vec![false; n];
            let mut sent = 0usize;
            let mut replies = 0usize;
            let mut picks = picks.into_iter();
            while !p.is_done() {
                while let Some((id, k)) = p.poll_send() {
                    prop_assert_eq!(id, 1000 + k as u64);
                    prop_assert_eq!(k, sent);
                    sent += 1;
                    outstanding.push(id);
                }
                prop_assert!(outstanding.len() <= window.max(1));
                prop_assert_eq!(p.in_flight(), outstanding.len());
                prop_assert!(!outstanding.is_empty());
                let i = picks.next().map_or(0, |x| x.index(outstanding.len()));
                let id = outstanding.swap_remove(i);
                let k = p.on_reply(id).unwrap();
                prop_assert!(!answered[k]);
                answered[k] = true;
                prop_assert!(p.on_reply(id).is_err());
                replies += 1;
                if Some(replies) == stop_at {
                    p.stop();
                }
            }
            prop_assert!(outstanding.is_empty());
            if stop_at.is_none_or(|s| s > n) {
                prop_assert!(answered.iter().all(|&a| a));
            }
            prop_assert!(p.on_reply(999).is_err());
            prop_assert!(p.on_reply(1000 + n as u64).is_err());
        }
    }

    proptest! {
        /// Split pieces cover exactly the bytes of the pieces, in order,
        /// none longer than the cut, none crossing a multiple of it.
        #[test]
        fn split_pieces_cover_the_same_bytes(ss in 1u32..5000, count in 1u32..4, off in 0u64..20000, len in 0u64..30000, max in 0u32..3000) {
            let l = Layout::new(ss, count, 0, count).unwrap();
            for (_, pieces) in plan(&l, off, len).unwrap() {
                let split = split_pieces(pieces.clone(), max);
                let mut at = 0;
                for p in &pieces {
                    let mut covered = 0;
                    while covered < p.len {
                        let q = &split[at];
                        prop_assert_eq!((q.server, q.stripe), (p.server, p.stripe));
                        prop_assert_eq!(q.offset, p.offset + covered);
                        prop_assert_eq!(q.buf_offset, p.buf_offset + u64::from(covered));
                        prop_assert!(q.len > 0);
                        if max > 0 {
                            prop_assert!(q.len <= max);
                            prop_assert_eq!(q.offset / max, (q.offset + q.len - 1) / max);
                        }
                        covered += q.len;
                        at += 1;
                    }
                    prop_assert_eq!(covered, p.len);
                }
                prop_assert_eq!(at, split.len());
            }
        }
    }

    #[test]
    fn plan_groups_pieces_by_server_in_file_order() {
        let l = Layout::new(10, 3, 1, 3).unwrap();
        let p = plan(&l, 5, 40).unwrap();
        let stripes = |s: u32| p[&s].iter().map(|x| x.stripe).collect::<Vec<_>>();
        assert_eq!(stripes(1), [0, 3]);
        assert_eq!(stripes(2), [1, 4]);
        assert_eq!(stripes(0), [2]);
        let total: u64 = p.values().flatten().map(|x| u64::from(x.len)).sum();
        assert_eq!(total, 40);
    }
}
