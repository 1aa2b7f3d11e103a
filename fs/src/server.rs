//! A storage server: the request handler ([`Service`], no I/O of its own
//! beyond its target) and its threaded driver ([`Server`]), which listens
//! on TCP and, for clients on its node, on an abstract Unix socket with
//! shared data slots ([`crate::shm`]).
//!
//! [`Service::handle`] is a function from a [`Request`] to a [`Reply`] on
//! one target: the metadata of the file system (server 0 only) and the
//! server's chunks. Metadata requests sent to another server are refused
//! with [`Error::WrongServer`]; data requests go to whichever server the
//! client's layout arithmetic names, so file data never passes through the
//! metadata server unless it holds the stripe.
//!
//! ## Threads
//! [`Server::serve`] accepts connections on one thread; each connection has
//! a reader thread that authenticates it ([`dos_transport::auth`], the file
//! system's secret, 2 s to answer) and then reads request frames; the
//! requests run on a pool of [`ServerConfig::workers`] threads shared by all
//! connections, each reply written back under the connection's write lock
//! as it completes (replies carry their request's id and may overtake each
//! other). So one client pipelining requests on one connection keeps
//! several I/Os in flight on the target, up to
//! [`ServerConfig::max_in_flight`] per connection; past that its reader
//! stops reading (back-pressure through TCP). A thread pool over blocking
//! `pread`/`pwrite` was chosen over io_uring: no unsafe ring code, it
//! works on any kernel and file system, and a pool of 8 keeps a virtio disk's
//! queue as busy as fio at QD8 (measured: fio's 8 psync jobs came within
//! ~10% of io_uring at QD16 writing and beat it reading; [`crate::chunk`]).
//!
//! Namespace requests (stat, lookup, create, mkdir, readdir, unlink,
//! rename) are answered on the connection's reader thread itself, not
//! handed to the pool: they never wait for the disk, and the two hand-offs
//! were most of their cost (1.6-5x the create rate measured on a loaded
//! 2-core machine).
//!
//! Metadata requests run one at a time under a mutex (the namespace is in
//! memory; a create is a journal append and a map insert); a sync's fsync
//! of the journal runs outside it, so metadata requests do not wait for
//! the disk ([`Meta::sync_handle`]).
//!
//! ## Connections still authenticating are bounded
//! Each connection gets a thread, so strangers must not be able to make
//! the server spawn threads without end: at most
//! [`ServerConfig::max_authenticating`] connections (default 64) may be in
//! the handshake at once, and at most [`ServerConfig::max_per_source`]
//! (default 8) from one source address; a connection over a bound is
//! closed at once (a client connects again; a source at its bound takes
//! room only from itself). The handshake has a *total* deadline,
//! [`AUTH_TIMEOUT`] (2 s), not a per-read one, so a peer trickling bytes
//! frees its slot within 2 s too. Clients' liveness probes
//! ([`crate::client::probe`]) are handshakes: a server answers them from
//! its accept and connection threads whatever its workers do.
//!
//! ## Same-node connections
//! A connection accepted on the Unix socket runs the same handshake, then
//! must send [`Request::ShmSetup`]; the server answers with its slot region
//! (or none) before reading requests. Slot requests are checked by the
//! connection thread before they are queued ([`SlotTable::take`]: slot in
//! range, length fits, slot not owned by a request in flight); a refused
//! one is answered at once with a protocol error and the connection goes
//! on. The worker copies a written slot out (so the checksum is of the
//! bytes written) or reads into it, frees the slot, then replies. Slot
//! requests on a TCP connection, or on a Unix one without slots, are
//! refused the same way. The Unix accept loop stops with the TCP one
//! ([`Server::serve`] shuts its listener down, which frees the name).
//!
//! ## RDMA connections
//! A TCP connection whose first request is [`Request::RoceSetup`] gets a
//! soft-RoCE endpoint of its own, bound to the address the client reached,
//! and a region of slots registered with it ([`crate::rdma::accept`]); the
//! reply carries the endpoint's address and the region's remote key. Its
//! slot requests then go through the same [`SlotTable`] checks and the
//! same worker code as a same-node connection's: the client RDMA-wrote the
//! slot before naming it, or RDMA-reads it after the reply. A setup that is
//! not the first request, or on a Unix connection, is a protocol error; one
//! that cannot be served (no endpoint, a bad address, [`ServerConfig::rdma`]
//! off) is answered with no slots. The endpoint is dropped before the
//! region (field order of the connection's shared state).
//!
//! ## Handlers
//! [`Server`] runs any [`Handler`]; [`Service`] is the real one. Tests wrap
//! it (a slow handler shows that a busy server is not declared dead).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use dos_transport::auth::{handshake, Role, Secret};

use crate::chunk::ChunkStore;
use crate::error::{Error, Result};
use crate::meta::{Meta, MAX_READDIR};
use crate::rdma::{self, ServerRdma};
use crate::shm::{self, Region, SlotTable, Stream};
use crate::target::{FsPath, Target};
use crate::wire::{auth_context, Header, Reply, Request, ServerSpace, WireError, HEADER_LEN};

/// How long a new connection may take to authenticate, in all.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a worker may wait to hand a reply to a client that does not
/// read; then the connection is closed and the worker freed.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a [`Server`] runs: a map from a request to its reply.
pub trait Handler: Send + Sync + 'static {
    /// The server's index (sent in the handshake).
    fn index(&self) -> u32;
    /// Handles one request.
    fn handle(&self, req: Request) -> Reply;

    /// A [`Request::Write`] whose bytes the caller holds (a slot's, staged):
    /// by default the request, with a copy of `data`.
    fn write_from(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        data: &[u8],
    ) -> Reply {
        self.handle(Request::Write {
            ino,
            stripe,
            stripe_size,
            offset,
            data: data.to_vec(),
        })
    }

    /// A [`Request::Read`] of `len` bytes into `out` (at least `len` bytes,
    /// all of it usable as scratch): [`Reply::Ok`] when the first `len`
    /// bytes of `out` are the data. By default the request and one copy.
    #[allow(clippy::too_many_arguments)]
    fn read_into(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        len: u32,
        out: &mut [u8],
    ) -> Reply {
        if out.len() < len as usize {
            return error_reply(&crate::chunk::short_read_buffer());
        }
        match self.handle(Request::Read {
            ino,
            stripe,
            stripe_size,
            offset,
            len,
        }) {
            Reply::Data(d) if d.len() == len as usize => {
                out[..d.len()].copy_from_slice(&d);
                Reply::Ok
            }
            Reply::Data(_) => error_reply(&Error::protocol("read returned another length")),
            r => r,
        }
    }
}

impl Handler for Service {
    fn index(&self) -> u32 {
        self.index
    }

    fn handle(&self, req: Request) -> Reply {
        Service::handle(self, req)
    }

    fn write_from(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        data: &[u8],
    ) -> Reply {
        ok_reply(self.chunks.write(ino, stripe, stripe_size, offset, data))
    }

    fn read_into(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        len: u32,
        out: &mut [u8],
    ) -> Reply {
        ok_reply(
            self.chunks
                .read_into(ino, stripe, stripe_size, offset, len, out),
        )
    }
}

/// The reply that reports `e` (the one conversion of every path's errors).
fn error_reply(e: &Error) -> Reply {
    Reply::Error(WireError::from_error(e))
}

/// [`Reply::Ok`], or the reply that reports the error.
fn ok_reply(r: Result<()>) -> Reply {
    r.map_or_else(|e| error_reply(&e), |()| Reply::Ok)
}

/// The request handler of one server.
#[derive(Debug)]
pub struct Service {
    index: u32,
    meta: Option<Mutex<Meta>>,
    chunks: ChunkStore,
    /// One server per target, held while the service lives ([`crate::lock`]).
    _lock: crate::lock::TargetLock,
}

impl Service {
    /// Opens the server on `target`: its chunks, and the metadata if it is
    /// server 0.
    pub fn open(target: &Target) -> Result<Service> {
        let index = target.info().index;
        let lock = crate::lock::TargetLock::acquire(target.dir())?;
        let meta = if index == 0 {
            Some(Mutex::new(Meta::open(target)?))
        } else {
            None
        };
        let svc = Service {
            index,
            meta,
            chunks: ChunkStore::open(target)?,
            _lock: lock,
        };
        if let Some(m) = &svc.meta {
            // Chunks of files the namespace no longer has (a client died
            // between removing a file and dropping its chunks, or a create
            // was lost in a crash) are removed at start.
            let m = m.lock().unwrap_or_else(|p| p.into_inner());
            svc.drop_orphans(|ino| m.stat_ino(ino).is_ok())?;
        }
        Ok(svc)
    }

    /// Removes the chunks here of every inode for which `live` is false;
    /// returns how many inodes lost chunks. Server 0 runs it at start over
    /// its own chunks; a data server needs the list of live inodes from the
    /// metadata server (not yet in the protocol).
    pub fn drop_orphans(&self, live: impl Fn(u64) -> bool) -> Result<u64> {
        let mut n = 0;
        for ino in self.chunks.inodes()? {
            if !live(ino) {
                self.chunks.remove(ino)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// This server's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Handles one request.
    pub fn handle(&self, req: Request) -> Reply {
        self.try_handle(req).unwrap_or_else(|e| error_reply(&e))
    }

    fn meta(&self) -> Result<std::sync::MutexGuard<'_, Meta>> {
        let m = self.meta.as_ref().ok_or(Error::WrongServer {
            server: self.index,
            reason: "metadata requests go to server 0",
        })?;
        Ok(m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn try_handle(&self, req: Request) -> Result<Reply> {
        let p = |s: &str| FsPath::parse(s);
        Ok(match req {
            Request::Stat { path } => Reply::Attr(self.meta()?.stat(&p(&path)?)?),
            Request::StatIno { ino } => Reply::Attr(self.meta()?.stat_ino(ino)?),
            Request::Lookup { parent, name } => Reply::Attr(self.meta()?.lookup(parent, &name)?),
            Request::Create {
                path,
                spec,
                exclusive,
            } => Reply::Attr(self.meta()?.create(&p(&path)?, spec, exclusive)?),
            Request::Mkdir { path } => Reply::Attr(self.meta()?.mkdir(&p(&path)?)?),
            Request::Readdir { path, after, limit } => {
                let (entries, more) =
                    self.meta()?
                        .readdir(&p(&path)?, &after, limit.min(MAX_READDIR))?;
                Reply::Entries { entries, more }
            }
            Request::Unlink { path } => Reply::Attr(self.meta()?.unlink(&p(&path)?)?),
            Request::Rename { from, to } => {
                Reply::Renamed(self.meta()?.rename(&p(&from)?, &p(&to)?)?)
            }
            Request::SetSize {
                ino,
                size,
                grow_only,
            } => Reply::Attr(self.meta()?.set_size(ino, size, grow_only)?),
            Request::SetStripe { path, spec } => {
                Reply::Attr(self.meta()?.set_stripe(&p(&path)?, spec)?)
            }
            Request::Read {
                ino,
                stripe,
                stripe_size,
                offset,
                len,
            } => Reply::Data(self.chunks.read(ino, stripe, stripe_size, offset, len)?),
            Request::Write {
                ino,
                stripe,
                stripe_size,
                offset,
                data,
            } => {
                self.chunks.write(ino, stripe, stripe_size, offset, &data)?;
                Reply::Ok
            }
            Request::Sync { ino } => {
                self.chunks.sync(ino)?;
                if self.meta.is_some() {
                    // The journal's fsync runs without the namespace lock:
                    // metadata requests go on meanwhile.
                    let h = self.meta()?.sync_handle()?;
                    h.sync()?;
                    self.meta()?.finish_sync()?;
                }
                Reply::Ok
            }
            Request::Statfs => {
                let s = self.chunks.space()?;
                let inodes = match &self.meta {
                    Some(_) => self.meta()?.inode_count(),
                    None => 0,
                };
                Reply::Space(ServerSpace {
                    server: self.index,
                    total: s.total,
                    free: s.free,
                    inodes,
                })
            }
            Request::Verify { ino, stripe_size } => {
                Reply::Verify(self.chunks.verify(ino, stripe_size)?)
            }
            Request::DropFile { ino } => {
                self.chunks.remove(ino)?;
                Reply::Ok
            }
            Request::ListChunks { after, limit } => {
                let limit = limit.clamp(1, MAX_READDIR) as usize;
                let all = self.chunks.inodes()?;
                let mut it = all.range(after.saturating_add(1)..);
                let entries = it
                    .by_ref()
                    .take(limit)
                    .map(|&ino| crate::meta::DirEntry {
                        name: String::new(),
                        ino,
                        kind: crate::meta::Kind::File,
                    })
                    .collect();
                Reply::Entries {
                    entries,
                    more: it.next().is_some(),
                }
            }
            Request::Truncate {
                ino,
                stripe_size,
                size,
            } => {
                self.chunks.truncate(ino, stripe_size, size)?;
                Reply::Ok
            }
            Request::ShmSetup { .. }
            | Request::RoceSetup { .. }
            | Request::WriteSlot { .. }
            | Request::ReadSlot { .. } => {
                return Err(Error::protocol(
                    "slot requests need a connection with data slots (same-node or RDMA)",
                ))
            }
        })
    }
}

/// Tunables of [`Server`].
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Worker threads running requests (I/Os in flight on the target).
    pub workers: usize,
    /// Most requests of one connection queued or running at once.
    pub max_in_flight: usize,
    /// Most connections in the handshake at once.
    pub max_authenticating: usize,
    /// Most connections in the handshake at once from one source address.
    pub max_per_source: usize,
    /// Whether TCP clients may ask for RDMA slots over the soft-RoCE
    /// ([`crate::rdma`]); off, they are granted none and stay on TCP.
    pub rdma: bool,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            workers: 8,
            max_in_flight: 16,
            max_authenticating: 64,
            max_per_source: 8,
            rdma: true,
        }
    }
}

/// Counts of connections in the handshake, in all and per source.
#[derive(Debug, Default)]
struct Authenticating {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A slot among the connections authenticating; freed on drop.
struct AuthSlot {
    table: Arc<Mutex<Authenticating>>,
    ip: IpAddr,
}

impl AuthSlot {
    fn take(
        table: &Arc<Mutex<Authenticating>>,
        ip: IpAddr,
        config: &ServerConfig,
    ) -> Option<AuthSlot> {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let mine = t.by_source.get(&ip).copied().unwrap_or(0);
        if t.total >= config.max_authenticating.max(1) || mine >= config.max_per_source.max(1) {
            return None;
        }
        t.total += 1;
        *t.by_source.entry(ip).or_insert(0) += 1;
        Some(AuthSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AuthSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.total -= 1;
        if let Some(n) = t.by_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.by_source.remove(&self.ip);
            }
        }
    }
}

/// A stream whose reads and writes share one deadline.
struct Deadline<'a> {
    stream: &'a mut Stream,
    until: Instant,
}

impl Deadline<'_> {
    fn arm(&self, write: bool) -> std::io::Result<()> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "handshake deadline passed",
            ));
        }
        if write {
            self.stream.set_write_timeout(Some(left))
        } else {
            self.stream.set_read_timeout(Some(left))
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm(false)?;
        self.stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm(true)?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// One connection's write half and its count of requests in flight.
#[derive(Debug)]
struct ConnOut {
    stream: Mutex<Stream>,
    in_flight: Mutex<usize>,
    room: Condvar,
    /// The soft-RoCE endpoint of an RDMA connection ([`crate::rdma`]).
    /// Declared before `slots`, so dropped first: the endpoint's thread
    /// writes into the slots' region until it stops.
    rdma: OnceLock<ServerRdma>,
    /// The data slots of a same-node connection ([`shm`]) or of an RDMA one:
    /// the same table and the same checks, however the bytes arrive.
    slots: OnceLock<SlotTable>,
}

impl ConnOut {
    fn send(&self, frame: &[u8]) {
        self.send_parts(&[frame]);
    }

    /// Sends a reply; a data reply goes out as its 28-byte prefix and the
    /// data itself, without copying the data into a frame.
    fn send_reply(&self, id: u64, reply: &Reply) {
        match reply {
            Reply::Data(d) if d.len() <= u32::MAX as usize - 4 => {
                let mut pre = [0u8; HEADER_LEN + 4];
                pre[..HEADER_LEN].copy_from_slice(
                    &Header {
                        kind: reply.kind(),
                        id,
                        len: 4 + d.len() as u32,
                    }
                    .encode(),
                );
                pre[HEADER_LEN..].copy_from_slice(&(d.len() as u32).to_le_bytes());
                self.send_parts(&[&pre, d]);
            }
            r => self.send(&r.encode(id)),
        }
    }

    fn send_parts(&self, parts: &[&[u8]]) {
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let (mut i, mut at) = (0, 0);
        while i < parts.len() {
            let bufs: Vec<std::io::IoSlice<'_>> = std::iter::once(&parts[i][at..])
                .chain(parts[i + 1..].iter().copied())
                .map(std::io::IoSlice::new)
                .collect();
            match s.write_vectored(&bufs) {
                Ok(0) => break,
                Ok(mut n) => {
                    while i < parts.len() && n >= parts[i].len() - at {
                        n -= parts[i].len() - at;
                        i += 1;
                        at = 0;
                    }
                    at += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if i < parts.len() {
            s.shutdown();
        }
    }

    fn done(&self) {
        let mut n = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        self.room.notify_one();
    }
}

type Job = (u64, Request, Arc<ConnOut>);

/// A storage server listening on TCP, and on its node's abstract Unix
/// socket for clients on the same node ([`shm`]).
pub struct Server {
    listener: TcpListener,
    unix: Option<UnixListener>,
    service: Arc<dyn Handler>,
    secret: Secret,
    context: Vec<u8>,
    config: ServerConfig,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("index", &self.service.index())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `addr` for `service`; connections must prove they hold `secret`.
    pub fn bind(
        service: Service,
        fsid: &crate::target::FsId,
        secret: Secret,
        addr: &str,
        config: ServerConfig,
    ) -> Result<Server> {
        Server::bind_handler(Arc::new(service), fsid, secret, addr, config)
    }

    /// Binds `addr` for any [`Handler`].
    pub fn bind_handler(
        service: Arc<dyn Handler>,
        fsid: &crate::target::FsId,
        secret: Secret,
        addr: &str,
        config: ServerConfig,
    ) -> Result<Server> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("listen on", addr, e))?;
        let index = service.index();
        // The same-node socket is an extra: without it (the name is taken
        // by another server of this file system and index in this network
        // namespace, which should not happen) clients use TCP.
        let unix = match shm::socket_addr(fsid, index).and_then(|a| UnixListener::bind_addr(&a)) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "dosfs server {index}: no same-node socket {}: {e}; local clients use TCP",
                    shm::socket_name(fsid, index)
                );
                None
            }
        };
        Ok(Server {
            listener,
            unix,
            service,
            secret,
            context: auth_context(fsid),
            config,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("local address of", "listener", e))
    }

    /// Whether clients on this node get the same-node path ([`shm`]).
    pub fn has_local_socket(&self) -> bool {
        self.unix.is_some()
    }

    /// A flag that stops [`Server::serve`] at its next accepted connection
    /// (connect once to wake it).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Accepts and serves connections until the stop flag is set.
    pub fn serve(self) -> Result<()> {
        let (tx, rx) = sync_channel::<Job>(self.config.workers * 4);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..self.config.workers.max(1) {
            let rx = rx.clone();
            let svc = self.service.clone();
            workers.push(
                thread::Builder::new()
                    .name(format!("dosfs-worker-{i}"))
                    .spawn(move || worker(svc.as_ref(), &rx))
                    .map_err(|e| Error::io("spawn", "worker thread", e))?,
            );
        }
        let table = Arc::new(Mutex::new(Authenticating::default()));
        let spawn = |stream: Stream, slot: AuthSlot| {
            let tx = tx.clone();
            let secret = self.secret.clone();
            let context = self.context.clone();
            let limits = Limits {
                max: self.config.max_in_flight.max(1),
                rdma: self.config.rdma,
            };
            let svc = self.service.clone();
            let _ = thread::Builder::new()
                .name("dosfs-conn".into())
                .spawn(move || connection(stream, slot, &secret, &context, limits, &tx, &svc));
        };
        thread::scope(|scope| {
            // Same-node clients: one source as far as the bounds go (their
            // own bound is the total one).
            let unix = self.unix.as_ref();
            if let Some(l) = unix {
                let local = ServerConfig {
                    max_per_source: self.config.max_authenticating,
                    ..self.config
                };
                let (table, stop, spawn) = (&table, &self.stop, &spawn);
                scope.spawn(move || {
                    for conn in l.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(stream) = conn else {
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        let ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
                        if let Some(slot) = AuthSlot::take(table, ip, &local) {
                            spawn(Stream::Unix(stream), slot);
                        }
                    }
                });
            }
            for conn in self.listener.incoming() {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let Some(slot) = stream
                    .peer_addr()
                    .ok()
                    .and_then(|a| AuthSlot::take(&table, a.ip(), &self.config))
                else {
                    // Over a bound: closed at once (dropped).
                    continue;
                };
                spawn(Stream::Tcp(stream), slot);
            }
            // Wake the Unix accept loop: a listening socket shut down fails
            // its accept at once, and the name is free for a new server.
            if let Some(l) = unix {
                let _ = rustix::net::shutdown(l, rustix::net::Shutdown::Both);
            }
        });
        drop(tx);
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    }
}

fn worker(svc: &dyn Handler, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((id, req, out)) = job else { return };
        let reply = match (req, out.slots.get()) {
            (req @ (Request::WriteSlot { .. } | Request::ReadSlot { .. }), Some(t)) => {
                with_slot(svc, t, req)
            }
            (req, _) => svc.handle(req),
        };
        out.send_reply(id, &reply);
        out.done();
    }
}

/// Runs a slot request whose slot the connection thread gave it, and frees
/// the slot before the reply goes out. A write's bytes are copied once, into
/// a private aligned buffer the disk engine writes from (the checksum must
/// be of the bytes written, which the client could change in the slot); a
/// read goes from the disk straight into the slot when it can
/// ([`Handler::read_into`]).
fn with_slot(svc: &dyn Handler, t: &SlotTable, req: Request) -> Reply {
    match req {
        Request::WriteSlot {
            ino,
            stripe,
            stripe_size,
            offset,
            len,
            slot,
        } => crate::chunk::with_staging(len as usize, |buf| {
            let copied = t.region().get(slot, buf);
            t.give_back(slot);
            match copied {
                Ok(()) => svc.write_from(ino, stripe, stripe_size, offset, buf),
                Err(e) => error_reply(&e),
            }
        }),
        Request::ReadSlot {
            ino,
            stripe,
            stripe_size,
            offset,
            len,
            slot,
        } => {
            // SAFETY: the connection thread took `slot` for this request
            // (`SlotTable::take`) and it is given back only below, after
            // the last use of `out`: no other reference to it exists here.
            let rep = match unsafe { t.region().slot_mut(slot) } {
                Ok(out) => svc.read_into(ino, stripe, stripe_size, offset, len, out),
                Err(e) => error_reply(&e),
            };
            t.give_back(slot);
            rep
        }
        req => svc.handle(req),
    }
}

/// The slot setup of a same-node connection: its first frame must be
/// [`Request::ShmSetup`]; the answer carries the region's memfd. `None`
/// when the connection must close (not a setup frame, or the socket failed).
fn setup_slots(stream: &mut Stream) -> Option<Option<SlotTable>> {
    let Stream::Unix(sock) = stream else {
        return Some(None);
    };
    let mut h = [0u8; HEADER_LEN];
    sock.read_exact(&mut h).ok()?;
    let h = Header::decode(&h).ok()?;
    let mut body = vec![0u8; h.len as usize];
    sock.read_exact(&mut body).ok()?;
    let (slots, slot_size) = match Request::decode(h.kind, &body) {
        Ok(Request::ShmSetup { slots, slot_size }) => (slots, slot_size),
        _ => return None,
    };
    let (count, size) = shm::grant(slots, slot_size);
    let made = if count > 0 {
        match Region::create(count, size) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("dosfs server: no data slots for a local client: {e}");
                None
            }
        }
    } else {
        None
    };
    match made {
        Some((region, fd)) => {
            let frame = Reply::Slots { count, size }.encode(h.id);
            shm::send_with_fd(sock, &frame, Some(&fd)).ok()?;
            Some(Some(SlotTable::new(region)))
        }
        None => {
            let frame = Reply::Slots { count: 0, size: 0 }.encode(h.id);
            shm::send_with_fd(sock, &frame, None).ok()?;
            Some(None)
        }
    }
}

/// What a connection may do.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Requests in flight.
    max: usize,
    /// Whether RDMA slots may be granted.
    rdma: bool,
}

/// The answer to [`Request::RoceSetup`] on a TCP connection: an endpoint
/// and registered slots ([`rdma::accept`]) installed in `out`, or no slots.
fn setup_rdma(
    stream: &Stream,
    out: &ConnOut,
    secret: &Secret,
    index: u32,
    slots: u32,
    size: u32,
    addr: &[u8],
) -> Reply {
    let none = Reply::RoceSlots {
        count: 0,
        size: 0,
        addr: Vec::new(),
        rkey: Vec::new(),
    };
    let Stream::Tcp(s) = stream else {
        return none;
    };
    let ip = match s.local_addr() {
        Ok(a) => a.ip(),
        Err(_) => return none,
    };
    match rdma::accept(ip, secret, slots, size, addr) {
        Ok((ep, table, reply)) => {
            // Both are empty: this runs once, on the first request.
            let _ = out.rdma.set(ep);
            let _ = out.slots.set(table);
            reply
        }
        Err(e) => {
            eprintln!(
                "dosfs server {index}: no RDMA slots for {}: {e}; it stays on TCP",
                stream.peer()
            );
            none
        }
    }
}

/// Serves one connection: authenticate, then read requests and queue them.
fn connection(
    mut stream: Stream,
    slot: AuthSlot,
    secret: &Secret,
    context: &[u8],
    limits: Limits,
    tx: &SyncSender<Job>,
    svc: &Arc<dyn Handler>,
) {
    let max = limits.max;
    let index = svc.index();
    if let Stream::Tcp(s) = &stream {
        let _ = s.set_nodelay(true);
    }
    let mut timed = Deadline {
        stream: &mut stream,
        until: Instant::now() + AUTH_TIMEOUT,
    };
    let res = handshake(
        &mut timed,
        secret,
        context,
        Role::Responder,
        u64::from(index),
    );
    if let Err(e) = res {
        drop(slot);
        let peer = stream.peer();
        eprintln!("dosfs server {index}: refused connection from {peer}: {e}");
        stream.shutdown();
        return;
    }
    // A same-node connection asks for its slots next (within the same
    // deadline).
    let slots = match setup_slots(&mut stream) {
        Some(s) => s,
        None => {
            stream.shutdown();
            return;
        }
    };
    drop(slot);
    // Idle clients may stay connected; a client that stops reading its
    // replies cannot hold a worker for longer than REPLY_TIMEOUT.
    if stream.set_read_timeout(None).is_err()
        || stream.set_write_timeout(Some(REPLY_TIMEOUT)).is_err()
    {
        return;
    }
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let out = Arc::new(ConnOut {
        stream: Mutex::new(write_half),
        in_flight: Mutex::new(0),
        room: Condvar::new(),
        rdma: OnceLock::new(),
        slots: OnceLock::new(),
    });
    if let Some(t) = slots {
        let _ = out.slots.set(t);
    }
    let mut first = true;
    loop {
        let mut h = [0u8; HEADER_LEN];
        if stream.read_exact(&mut h).is_err() {
            break;
        }
        let parsed = Header::decode(&h).and_then(|h| {
            let mut body = vec![0u8; h.len as usize];
            stream
                .read_exact(&mut body)
                .map_err(|e| Error::io("read", "connection", e))?;
            Ok((h.id, Request::decode(h.kind, &body)))
        });
        let (id, req) = match parsed {
            Ok((id, Ok(req))) => (id, req),
            Ok((id, Err(e))) => {
                // A body we cannot read: answer, and keep the connection (the
                // frame boundary is intact).
                out.send(&error_reply(&e).encode(id));
                continue;
            }
            Err(_) => break, // a bad header: the stream is out of step
        };
        // RDMA slots: asked for by the first request of a TCP connection.
        if let Request::RoceSetup {
            slots,
            slot_size,
            addr,
        } = &req
        {
            let reply = if first && !stream.is_unix() && limits.rdma {
                setup_rdma(&stream, &out, secret, index, *slots, *slot_size, addr)
            } else if first && !stream.is_unix() {
                Reply::RoceSlots {
                    count: 0,
                    size: 0,
                    addr: Vec::new(),
                    rkey: Vec::new(),
                }
            } else {
                error_reply(&Error::protocol(
                    "RDMA setup must be the first request of a TCP connection",
                ))
            };
            first = false;
            out.send_reply(id, &reply);
            continue;
        }
        first = false;
        // A slot request owns its slot from here to its reply: a slot that
        // does not exist, is too short, or is owned already is refused now.
        if let Request::WriteSlot { slot, len, .. } | Request::ReadSlot { slot, len, .. } = &req {
            let taken = match out.slots.get() {
                Some(t) => t.take(*slot, *len),
                None => Err(Error::protocol("this connection has no data slots")),
            };
            if let Err(e) = taken {
                out.send(&error_reply(&e).encode(id));
                continue;
            }
        }
        // Namespace requests are a lock, a B-tree operation and at most a
        // journal append (no disk wait): answered here, on the connection's
        // own thread, they skip two thread hand-offs, which is most of their
        // cost (1.6-5x the create rate on a loaded 2-core machine,
        // BENCHMARKS.md "Metadata"). Data requests go to the pool.
        if matches!(
            req,
            Request::Stat { .. }
                | Request::StatIno { .. }
                | Request::Lookup { .. }
                | Request::Create { .. }
                | Request::Mkdir { .. }
                | Request::Readdir { .. }
                | Request::Unlink { .. }
                | Request::Rename { .. }
        ) {
            out.send_reply(id, &svc.handle(req));
            continue;
        }
        {
            let mut n = out.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            while *n >= max {
                n = out.room.wait(n).unwrap_or_else(|p| p.into_inner());
            }
            *n += 1;
        }
        if tx.send((id, req, out.clone())).is_err() {
            break;
        }
    }
    stream.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that answers every read with `len` bytes of 7.
    struct Sevens;

    impl Handler for Sevens {
        fn index(&self) -> u32 {
            0
        }

        fn handle(&self, req: Request) -> Reply {
            match req {
                Request::Read { len, .. } => Reply::Data(vec![7; len as usize]),
                _ => Reply::Ok,
            }
        }
    }

    #[test]
    fn default_read_into_says_what_is_wrong() {
        let mut out = [0u8; 8];
        assert_eq!(Sevens.read_into(1, 0, 4096, 0, 8, &mut out), Reply::Ok);
        assert_eq!(out, [7; 8]);
        // A short buffer is named as such (not as a reply of another length),
        // with the chunk store's words.
        match Sevens.read_into(1, 0, 4096, 0, 9, &mut out) {
            Reply::Error(e) => {
                assert_eq!(e, WireError::from_error(&crate::chunk::short_read_buffer()));
            }
            r => panic!("{r:?}"),
        }
    }
}
