//! Typed bring-up: [`TcpBuilder`] → [`Prepared`] (listening; its address is
//! published) → [`TcpIface`] (every connection up and authenticated).
//!
//! Each pair of endpoints that both have an address gets one connection: the
//! lower index connects, the higher accepts. Both ends run the [`crate::auth`]
//! handshake on it, with [`super::wire::auth_context`]; the connecting end's id is
//! its index, so an accepted connection says (and proves) which peer it is.
//! Connections may arrive in any order; one that fails the handshake, claims an
//! index that should not connect to us, or duplicates a live one is closed and
//! logged once, and accepting goes on. Everything runs in one `poll` loop with the
//! sans-IO [`Handshake`], so a silent or slow stranger delays nobody. A connect
//! that is refused (or whose handshake fails) is retried with back-off until the
//! deadline.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::iface::{TcpIface, DEFAULT_LINGER, DEFAULT_MAX_AM, DEFAULT_MAX_QUEUED};
use super::wire::{auth_context, decode_addr, encode_addr, AUTH_CONTEXT_LEN};
use crate::auth::{Handshake, Role, Secret, HELLO_LEN, PROOF_LEN};
use crate::error::chain;
use crate::{Error, Result};

/// Most connections in handshake at once (beyond them, the oldest incoming one is dropped).
const MAX_PENDING: usize = 1024;
/// First delay before retrying a failed connect; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Rejected connections logged per `connect` call.
const MAX_LOGGED_REJECTIONS: usize = 10;
/// Largest `max_am` accepted (the frame length field is a u32; keep far below).
const MAX_MAX_AM: usize = 1 << 30;

/// Parameters of an endpoint, before it listens.
#[derive(Debug, Clone)]
pub struct TcpBuilder {
    pub(super) index: usize,
    pub(super) npeers: usize,
    bind_ip: IpAddr,
    pub(super) max_am: usize,
    pub(super) max_queued: usize,
    pub(super) linger: Duration,
}

impl TcpIface {
    /// Starts describing endpoint `index` of `npeers`, which listens on `bind_ip`
    /// (the address its peers reach it at; a port is chosen by the system).
    pub fn builder(index: usize, npeers: usize, bind_ip: IpAddr) -> TcpBuilder {
        TcpBuilder {
            index,
            npeers,
            bind_ip,
            max_am: DEFAULT_MAX_AM,
            max_queued: DEFAULT_MAX_QUEUED,
            linger: DEFAULT_LINGER,
        }
    }

    /// `TcpIface::builder(index, npeers, bind_ip).prepare(secret)`.
    pub fn prepare(
        index: usize,
        npeers: usize,
        bind_ip: IpAddr,
        secret: &Secret,
    ) -> Result<Prepared> {
        TcpIface::builder(index, npeers, bind_ip).prepare(secret)
    }
}

impl TcpBuilder {
    /// Largest active message, header included (default 1 MiB, at least 1 KiB).
    /// Every endpoint of a job must use the same value: a larger frame closes
    /// the connection.
    pub fn max_am(mut self, bytes: usize) -> Self {
        self.max_am = bytes;
        self
    }

    /// Bytes queued for one peer beyond which `am_send` returns `Busy` (default 4 MiB).
    pub fn max_queued(mut self, bytes: usize) -> Self {
        self.max_queued = bytes;
        self
    }

    /// How long dropping the endpoint may spend sending what is still queued
    /// (default 2 s); what is left then is lost and the peers see the stream end.
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Opens the listening socket.
    pub fn prepare(self, secret: &Secret) -> Result<Prepared> {
        if self.index >= self.npeers {
            return Err(Error::NoSuchPeer {
                peer: self.index,
                npeers: self.npeers,
            });
        }
        if self.npeers > u32::MAX as usize {
            return Err(config("tcp npeers", "more than 2^32 - 1 endpoints"));
        }
        if !(1024..=MAX_MAX_AM).contains(&self.max_am) {
            return Err(config("tcp max_am", "must be 1 KiB to 1 GiB"));
        }
        if self.bind_ip.is_unspecified() {
            return Err(config(
                "tcp bind address",
                "the unspecified address cannot be published",
            ));
        }
        let listener = TcpListener::bind((self.bind_ip, 0)).map_err(sys("tcp listen"))?;
        listener.set_nonblocking(true).map_err(sys("tcp listen"))?;
        let local = listener.local_addr().map_err(sys("tcp listen"))?;
        Ok(Prepared {
            cfg: self,
            listener,
            local,
            secret: secret.clone(),
        })
    }
}

#[cold]
fn config(what: &'static str, reason: &'static str) -> Error {
    Error::Malformed { what, reason }
}

fn sys(op: &'static str) -> impl Fn(io::Error) -> Error {
    move |source| Error::Sys { op, source }
}

/// An endpoint that listens and knows its address, not yet connected.
#[derive(Debug)]
pub struct Prepared {
    cfg: TcpBuilder,
    listener: TcpListener,
    local: SocketAddr,
    secret: Secret,
}

/// Where one connection is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Outgoing, TCP connect in progress.
    Connecting,
    /// Waiting for the peer's hello.
    Hello,
    /// Waiting for the peer's proof.
    Proof,
    /// Proof verified; done once our own proof is out.
    Verified,
}

/// A connection in handshake.
#[derive(Debug)]
struct Pending {
    sock: TcpStream,
    /// We dialled it (rather than accepted it).
    outgoing: bool,
    /// Outgoing: the peer we dialled. Incoming: the peer it claims to be.
    peer: Option<usize>,
    from: SocketAddr,
    since: Instant,
    hs: Handshake,
    stage: Stage,
    out: [u8; HELLO_LEN + PROOF_LEN],
    out_len: usize,
    out_pos: usize,
    inb: [u8; HELLO_LEN],
    in_have: usize,
}

impl Pending {
    fn new(sock: TcpStream, peer: Option<usize>, from: SocketAddr, hs: Handshake) -> Pending {
        let mut p = Pending {
            sock,
            outgoing: peer.is_some(),
            peer,
            from,
            since: Instant::now(),
            hs,
            stage: Stage::Hello,
            out: [0; HELLO_LEN + PROOF_LEN],
            out_len: 0,
            out_pos: 0,
            inb: [0; HELLO_LEN],
            in_have: 0,
        };
        let hello = p.hs.hello();
        p.queue(&hello);
        p
    }

    fn queue(&mut self, m: &[u8]) {
        self.out[self.out_len..self.out_len + m.len()].copy_from_slice(m);
        self.out_len += m.len();
    }

    fn events(&self) -> i16 {
        match self.stage {
            Stage::Connecting => libc::POLLOUT,
            _ if self.out_pos < self.out_len => libc::POLLIN | libc::POLLOUT,
            _ => libc::POLLIN,
        }
    }

    /// Writes what is queued, as far as the socket takes it.
    fn send_out(&mut self) -> Result<()> {
        while self.out_pos < self.out_len {
            match self.sock.write(&self.out[self.out_pos..self.out_len]) {
                Ok(k) => self.out_pos += k,
                Err(e) if super::progress::would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(sys("tcp handshake send")(e)),
            }
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.stage == Stage::Verified && self.out_pos == self.out_len
    }
}

/// Outcome of driving one connection.
enum Step {
    /// Still in handshake.
    Going,
    /// Authenticated as this peer.
    Done(usize),
    /// Give up on this connection.
    Failed(Error),
}

impl Prepared {
    /// The listening address, encoded for publication (see [`super::wire`]).
    pub fn address(&self) -> Vec<u8> {
        encode_addr(self.local)
    }

    /// The listening socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connects to every peer that has an address, within `timeout`.
    ///
    /// `addrs[p]` is peer `p`'s [`Prepared::address`], or `None` if `p` is not
    /// reached over tcp (a peer on the same host that uses shm); this endpoint's
    /// own entry is ignored. Every endpoint must pass `None` for exactly the peers
    /// that pass `None` for it. Sends to a peer without a connection fail with
    /// [`Error::PeerUnreachable`]; sends to itself always work.
    ///
    /// Fails with [`Error::ConnectTimeout`] naming the peers still missing.
    pub fn connect(self, addrs: &[Option<Vec<u8>>], timeout: Duration) -> Result<TcpIface> {
        let me = self.cfg.index;
        let n = self.cfg.npeers;
        if addrs.len() != n {
            return Err(Error::Malformed {
                what: "tcp address table",
                reason: "its length differs from npeers",
            });
        }
        let mut dial: Vec<Option<SocketAddr>> = vec![None; n];
        for (p, a) in addrs.iter().enumerate() {
            if let (Some(a), true) = (a, p != me) {
                let sa = decode_addr(a)?;
                if p > me {
                    dial[p] = Some(sa);
                }
            }
        }
        let mut b = Bringup {
            me,
            expect: addrs
                .iter()
                .enumerate()
                .map(|(p, a)| a.is_some() && p != me)
                .collect(),
            ctx: auth_context(n),
            secret: &self.secret,
            done: (0..n).map(|_| None).collect(),
            pending: Vec::new(),
            retry: dial.iter().map(|d| d.map(|_| Instant::now())).collect(),
            backoff: vec![MIN_BACKOFF; n],
            dial,
            logged: vec![false; n],
            rejected: 0,
            remaining: 0,
        };
        b.remaining = b.expect.iter().filter(|&&e| e).count();
        let deadline = Instant::now() + timeout;
        b.run(&self.listener, deadline)?;
        let socks = b.done.into_iter().map(|s| s.map(OwnedFd::from)).collect();
        TcpIface::from_parts(&self.cfg, socks)
    }
}

/// State of one `connect` call.
struct Bringup<'a> {
    me: usize,
    /// Peers we must end up connected to.
    expect: Vec<bool>,
    ctx: [u8; AUTH_CONTEXT_LEN],
    secret: &'a Secret,
    /// Authenticated connections, by peer.
    done: Vec<Option<TcpStream>>,
    pending: Vec<Pending>,
    /// Peers we dial (higher indices with an address).
    dial: Vec<Option<SocketAddr>>,
    /// When to (re)try dialling each peer; `None` while a dial is in flight or done.
    retry: Vec<Option<Instant>>,
    /// The delay before the next retry of each peer.
    backoff: Vec<Duration>,
    /// Whether a failure to reach this peer was already logged.
    logged: Vec<bool>,
    /// Incoming connections rejected so far (only the first few are logged).
    rejected: usize,
    /// Expected peers not connected yet.
    remaining: usize,
}

impl Bringup<'_> {
    fn missing(&self) -> Vec<usize> {
        (0..self.expect.len())
            .filter(|&p| self.expect[p] && self.done[p].is_none())
            .collect()
    }

    fn run(&mut self, listener: &TcpListener, deadline: Instant) -> Result<()> {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        loop {
            if self.remaining == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ConnectTimeout {
                    missing: self.missing(),
                });
            }
            self.start_dials(now)?;
            let next = self
                .retry
                .iter()
                .flatten()
                .min()
                .copied()
                .unwrap_or(deadline)
                .min(deadline);
            fds.clear();
            fds.push(libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.extend(self.pending.iter().map(|c| libc::pollfd {
                fd: c.sock.as_raw_fd(),
                events: c.events(),
                revents: 0,
            }));
            let ms = super::progress::timeout_ms(next.saturating_duration_since(now));
            // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(Error::Sys {
                        op: "poll",
                        source: e,
                    });
                }
                continue;
            }
            // Drive the connections polled (`fds[i + 1]` is `pending[i]`), then
            // retire the finished ones from the highest index down, so that
            // `swap_remove` moves only survivors.
            let mut ended = Vec::new();
            for (i, fd) in fds[1..].iter().enumerate() {
                if fd.revents != 0 {
                    match self.drive(i, fd.revents) {
                        Step::Going => {}
                        step => ended.push((i, step)),
                    }
                }
            }
            for (i, step) in ended.into_iter().rev() {
                let c = self.pending.swap_remove(i);
                match step {
                    Step::Done(p) => self.finish(c, p),
                    Step::Failed(e) => self.reject(c, e),
                    Step::Going => {}
                }
            }
            // Accept last: it may reorder `pending`.
            if fds[0].revents != 0 {
                self.accept(listener)?;
            }
        }
    }

    /// Starts the dials whose time has come.
    fn start_dials(&mut self, now: Instant) -> Result<()> {
        for p in 0..self.dial.len() {
            let (Some(addr), Some(at)) = (self.dial[p], self.retry[p]) else {
                continue;
            };
            if at > now {
                continue;
            }
            self.retry[p] = None;
            match connect_nonblocking(&addr) {
                Ok(sock) => {
                    let hs =
                        Handshake::new(self.secret, &self.ctx, Role::Initiator, self.me as u64)?;
                    let mut c = Pending::new(sock, Some(p), addr, hs);
                    c.stage = Stage::Connecting;
                    self.pending.push(c);
                }
                Err(e) => {
                    self.log_dial(
                        p,
                        &Error::Sys {
                            op: "tcp connect",
                            source: e,
                        },
                    );
                    self.redial_later(p);
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, listener: &TcpListener) -> Result<()> {
        loop {
            match listener.accept() {
                Ok((sock, from)) => {
                    if self.pending.len() >= MAX_PENDING {
                        // Make room by dropping the oldest stranger still in handshake,
                        // so that silent connections cannot lock peers out.
                        let oldest = (0..self.pending.len())
                            .filter(|&i| !self.pending[i].outgoing)
                            .min_by_key(|&i| self.pending[i].since);
                        let Some(i) = oldest else { continue };
                        let c = self.pending.swap_remove(i);
                        self.log_rejection(c.from, "too many connections in handshake");
                    }
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let hs =
                        Handshake::new(self.secret, &self.ctx, Role::Responder, self.me as u64)?;
                    self.pending.push(Pending::new(sock, None, from, hs));
                }
                Err(e) if super::progress::would_block(&e) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A connection that died before we took it, or out of descriptors:
                // try again at the next readiness.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Advances connection `i` after poll reported `revents`.
    fn drive(&mut self, i: usize, revents: i16) -> Step {
        let c = &mut self.pending[i];
        if c.stage == Stage::Connecting {
            match c.sock.take_error() {
                Ok(None) if revents & libc::POLLOUT != 0 => c.stage = Stage::Hello,
                Ok(None) => return Step::Going,
                Ok(Some(e)) | Err(e) => {
                    return Step::Failed(Error::Sys {
                        op: "tcp connect",
                        source: e,
                    })
                }
            }
        }
        if let Err(e) = c.send_out() {
            return Step::Failed(e);
        }
        loop {
            let need = match c.stage {
                Stage::Hello => HELLO_LEN,
                Stage::Proof => PROOF_LEN,
                _ => break,
            };
            match c.sock.read(&mut c.inb[c.in_have..need]) {
                Ok(0) => {
                    return Step::Failed(Error::Sys {
                        op: "tcp handshake receive",
                        source: io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(k) => c.in_have += k,
                Err(e) if super::progress::would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Step::Failed(sys("tcp handshake receive")(e)),
            }
            if c.in_have < need {
                continue;
            }
            c.in_have = 0;
            if c.stage == Stage::Hello {
                let proof = match c.hs.on_hello(&c.inb[..HELLO_LEN]) {
                    Ok(p) => p,
                    Err(e) => return Step::Failed(e),
                };
                let claimed = c.hs.claimed_peer_id().unwrap_or(u64::MAX);
                let ok = match c.peer {
                    Some(p) => claimed == p as u64,
                    None => {
                        claimed < self.me as u64
                            && self.expect[claimed as usize]
                            && self.done[claimed as usize].is_none()
                    }
                };
                if !ok {
                    return Step::Failed(Error::AuthFailed {
                        reason: "peer claims an index that should not connect here",
                    });
                }
                c.peer = Some(claimed as usize);
                c.queue(&proof);
                c.stage = Stage::Proof;
                // Send the proof now rather than after another poll.
                if let Err(e) = c.send_out() {
                    return Step::Failed(e);
                }
            } else {
                match c.hs.on_proof(&c.inb[..PROOF_LEN]) {
                    Ok(_) => c.stage = Stage::Verified,
                    Err(e) => return Step::Failed(e),
                }
            }
        }
        if c.done() {
            return match c.peer {
                Some(p) => Step::Done(p),
                None => Step::Failed(Error::AuthFailed {
                    reason: "no peer index",
                }),
            };
        }
        if revents & (libc::POLLHUP | libc::POLLERR) != 0 && revents & libc::POLLIN == 0 {
            return Step::Failed(Error::Sys {
                op: "tcp handshake",
                source: io::ErrorKind::ConnectionReset.into(),
            });
        }
        Step::Going
    }

    fn finish(&mut self, c: Pending, p: usize) {
        if self.done[p].is_some() {
            self.reject(
                c,
                Error::AuthFailed {
                    reason: "a second connection from the same peer",
                },
            );
            return;
        }
        if let Err(e) = c.sock.set_nodelay(true) {
            self.reject(c, sys("setsockopt TCP_NODELAY")(e));
            return;
        }
        self.done[p] = Some(c.sock);
        self.remaining -= 1;
    }

    /// Closes a connection that failed: logs it, and re-dials if it was ours.
    #[cold]
    fn reject(&mut self, c: Pending, e: Error) {
        match (c.outgoing, c.peer) {
            (true, Some(p)) => {
                self.log_dial(p, &e);
                if self.done[p].is_none() {
                    self.redial_later(p);
                }
            }
            _ => self.log_rejection(c.from, &chain(&e)),
        }
    }

    /// Logs a rejected incoming connection, up to [`MAX_LOGGED_REJECTIONS`] of them.
    #[cold]
    fn log_rejection(&mut self, from: SocketAddr, why: &str) {
        self.rejected += 1;
        if self.rejected <= MAX_LOGGED_REJECTIONS {
            let more = if self.rejected == MAX_LOGGED_REJECTIONS {
                " (further rejections are not logged)"
            } else {
                ""
            };
            tracing::warn!(
                "tcp endpoint {}: rejected a connection from {from}: {why}{more}",
                self.me
            );
        }
    }

    /// Schedules the next dial of peer `p`, backing off exponentially.
    fn redial_later(&mut self, p: usize) {
        self.retry[p] = Some(Instant::now() + self.backoff[p]);
        self.backoff[p] = (self.backoff[p] * 2).min(MAX_BACKOFF);
    }

    /// Logs the first failure to reach peer `p` (dials are retried; one line is enough).
    #[cold]
    fn log_dial(&mut self, p: usize, e: &Error) {
        // A refused connection is normal while a peer starts up; log the rest.
        let refused = matches!(e, Error::Sys { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused);
        if !refused && !std::mem::replace(&mut self.logged[p], true) {
            tracing::warn!(
                "tcp endpoint {}: connecting to peer {p} failed (will retry): {}",
                self.me,
                chain(e)
            );
        }
    }
}

/// Starts a non-blocking connect to `addr`.
fn connect_nonblocking(addr: &SocketAddr) -> io::Result<TcpStream> {
    let fam = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain system call without pointer arguments.
    let fd = unsafe {
        libc::socket(
            fam,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let r = match addr {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sa` is a valid sockaddr_in and the length is its size.
            unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of_val(&sa) as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sa` is a valid sockaddr_in6 and the length is its size.
            unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of_val(&sa) as libc::socklen_t,
                )
            }
        }
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from(sock))
}
