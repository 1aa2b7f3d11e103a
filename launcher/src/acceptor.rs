//! One authenticated acceptor for dosrun's listening sockets: the agents'
//! control port ([`crate::agent::pool`], TCP) and a node's wire-up socket
//! ([`crate::pmi_server`], an abstract Unix socket).
//!
//! Every connection first proves that it knows the job's secret: the
//! acceptor runs the responder side of [`dos_transport::auth`]'s handshake
//! on it (non-blocking, from the owner's poll loop), and hands the owner
//! the connections that complete it ([`Joined`], with the peer's id and
//! what came after its proof). What fails is closed and logged,
//! rate-limited ([`RefusalLog`]); nothing else changes.
//!
//! Strangers cannot crowd out the job's own connections:
//! * connections still authenticating are bounded by the peers the owner
//!   still expects plus a slack ([`Limits::slack`]), and optionally, per
//!   source address, by the same plus a smaller slack
//!   ([`Limits::source_slack`]): a source at its bound makes room among its
//!   own connections, never among the others';
//! * at a bound, a connection that has sent nothing valid (no hello) makes
//!   room first, the oldest of them, and only then one that sent a hello
//!   but no proof ([`refusals::evict`]; a connection of the job sends its
//!   hello as soon as it connects);
//! * one that sends no hello within [`HELLO_TIMEOUT`], or does not complete
//!   the handshake within [`AUTH_TIMEOUT`], is closed;
//! * out of descriptors, an idle connection makes room, or the listener
//!   rests for [`ACCEPT_PAUSE`] (it would stay readable);
//! * on a Unix socket, connections of other users are closed at once.
//!
//! A peer whose connection was closed during the handshake connects again
//! (the ranks' `dos::pmi::Client` and the agents retry).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use dos::pmi::Secret;
use dos_transport::auth::{Handshake, Role, HELLO_LEN, PROOF_LEN};

use crate::refusals::{self, RefusalLog};
use crate::sys;

/// How long a connection may stay without sending a valid hello (the job's
/// peers send theirs as soon as they have connected).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may take to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections accepted in one go, before the others are served.
const ACCEPT_BATCH: usize = 64;
/// Most connections [`Acceptor::drain_backlog`] takes at the end.
const DRAIN_MAX: usize = 1 << 14;
/// How long the listener rests when dosrun is out of descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A listening socket the acceptor serves.
pub trait Listen: AsRawFd {
    /// Its connections.
    type Stream: Read + Write + AsFd + AsRawFd;
    /// Accepts one connection, with its source address if it has one.
    fn accept_one(&self) -> io::Result<(Self::Stream, Option<SocketAddr>)>;
    /// Makes `s` non-blocking.
    fn nonblocking(s: &Self::Stream) -> io::Result<()>;
}

impl Listen for TcpListener {
    type Stream = TcpStream;

    fn accept_one(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        self.accept().map(|(s, a)| (s, Some(a)))
    }

    fn nonblocking(s: &TcpStream) -> io::Result<()> {
        s.set_nonblocking(true)
    }
}

impl Listen for UnixListener {
    type Stream = UnixStream;

    fn accept_one(&self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        self.accept().map(|(s, _)| (s, None))
    }

    fn nonblocking(s: &UnixStream) -> io::Result<()> {
        s.set_nonblocking(true)
    }
}

/// Bounds of the connections authenticating at once, beyond the peers the
/// owner still expects.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// In all.
    pub slack: usize,
    /// From one source address (`None`: no bound per source).
    pub source_slack: Option<usize>,
}

/// Who the acceptor is, and whom it lets in.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The job's secret.
    pub secret: Secret,
    /// The handshake's context.
    pub context: Vec<u8>,
    /// Our id in the handshake.
    pub id: u64,
    /// Only connections of this user (a Unix socket's peer credentials).
    pub same_user: Option<u32>,
}

/// A connection that authenticated.
#[derive(Debug)]
pub struct Joined<S> {
    /// The stream (non-blocking).
    pub stream: S,
    /// The id the peer proved.
    pub peer: u64,
    /// Its source address, if it has one.
    pub from: Option<SocketAddr>,
    /// What it sent after its proof.
    pub inbuf: Vec<u8>,
    /// What of our handshake is not written yet (the socket was full).
    pub unsent: Vec<u8>,
}

/// What a polled descriptor of the acceptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptTag {
    /// The listening socket.
    Listener,
    /// A connection authenticating.
    Pending(u64),
}

#[derive(Debug)]
struct Pending<S> {
    stream: S,
    from: Option<SocketAddr>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    out_off: usize,
    hs: Box<Handshake>,
    since: Instant,
}

impl<S> Pending<S> {
    /// Whether it sent a valid hello.
    fn hailed(&self) -> bool {
        self.hs.claimed_peer_id().is_some()
    }

    /// The bytes the handshake still needs from the peer.
    fn needs(&self) -> usize {
        if self.hailed() {
            PROOF_LEN
        } else {
            HELLO_LEN + PROOF_LEN
        }
    }
}

/// The acceptor of one listening socket (see the module documentation).
#[derive(Debug)]
pub struct Acceptor<L: Listen> {
    listener: L,
    who: Identity,
    limits: Limits,
    /// What is refused, in log lines ("control", "wire-up").
    what: &'static str,
    pending: HashMap<u64, Pending<L::Stream>>,
    /// Authenticating connections that have not sent a valid hello, by age.
    idle: BTreeSet<u64>,
    /// Authenticating connections that sent a hello, by age.
    hailed: BTreeSet<u64>,
    next: u64,
    joined: Vec<Joined<L::Stream>>,
    log: RefusalLog,
    /// The owner's work is done: refusals are not logged any more.
    log_closed: bool,
    /// Lines to print (refusals and their summaries), without a prefix.
    lines: Vec<String>,
    /// The listener is not polled until then (out of descriptors).
    accept_paused: Option<Instant>,
}

impl<L: Listen> Acceptor<L> {
    /// Serves `listener` (non-blocking), whose connections are `what` in
    /// the log ("control", "wire-up").
    pub fn new(listener: L, what: &'static str, who: Identity, limits: Limits) -> Acceptor<L> {
        Acceptor {
            listener,
            who,
            limits,
            what,
            pending: HashMap::new(),
            idle: BTreeSet::new(),
            hailed: BTreeSet::new(),
            next: 1,
            joined: Vec::new(),
            log: RefusalLog::new(what),
            log_closed: false,
            lines: Vec::new(),
            accept_paused: None,
        }
    }

    /// Connections authenticating.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Gives the descriptors to poll, and what they are, to `add`.
    pub fn poll_fds(&self, mut add: impl FnMut(libc::pollfd, AcceptTag)) {
        let pfd = |fd: RawFd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        if self.accept_paused.is_none() {
            add(
                pfd(self.listener.as_raw_fd(), libc::POLLIN),
                AcceptTag::Listener,
            );
        }
        for (&id, p) in &self.pending {
            let mut ev = libc::POLLIN;
            if p.out_off < p.outbuf.len() {
                ev |= libc::POLLOUT;
            }
            add(pfd(p.stream.as_raw_fd(), ev), AcceptTag::Pending(id));
        }
    }

    /// When [`Acceptor::expire`] has work next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        let since = |id: Option<&u64>| id.and_then(|id| self.pending.get(id)).map(|p| p.since);
        [
            since(self.idle.first()).map(|t| t + HELLO_TIMEOUT),
            since(self.hailed.first()).map(|t| t + AUTH_TIMEOUT),
            self.log.deadline(),
            self.accept_paused,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Closes the connections that did not authenticate in time, gives the
    /// summary of refusals when due, and resumes accepting.
    pub fn expire(&mut self, now: Instant) {
        if self.accept_paused.is_some_and(|t| now >= t) {
            self.accept_paused = None;
        }
        for (hailed, limit, why) in [
            (false, HELLO_TIMEOUT, "sent no hello in time"),
            (true, AUTH_TIMEOUT, "did not authenticate in time"),
        ] {
            loop {
                let set = if hailed { &self.hailed } else { &self.idle };
                let Some(&id) = set.first() else { break };
                match self.pending.get(&id) {
                    Some(p) if now < p.since + limit => break,
                    Some(_) => self.refuse(id, why),
                    None => {
                        self.idle.remove(&id);
                        self.hailed.remove(&id);
                    }
                }
            }
        }
        if let Some(line) = self.log.poll(now).filter(|_| !self.log_closed) {
            self.lines.push(line);
        }
    }

    /// Handles readiness of one of its descriptors; `expected`: the peers
    /// the owner still waits for (they widen the bounds).
    pub fn ready(&mut self, tag: AcceptTag, revents: i16, expected: usize) {
        match tag {
            AcceptTag::Listener => {
                self.accept(expected);
            }
            AcceptTag::Pending(id) => {
                if revents & libc::POLLOUT != 0 {
                    self.flush(id);
                }
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read(id);
                }
            }
        }
    }

    /// The connections that authenticated since the last call.
    pub fn take_joined(&mut self) -> Vec<Joined<L::Stream>> {
        std::mem::take(&mut self.joined)
    }

    /// The lines to print since the last call (refusals, summaries).
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    /// The owner refuses a connection that authenticated (`why`: it is not
    /// a peer it expects): it is closed and logged like the others.
    pub fn refuse_joined(&mut self, j: Joined<L::Stream>, why: &str) {
        self.note_refusal(self.line(j.from, why));
    }

    /// Reads once more what every authenticating connection sent.
    pub fn read_all_pending(&mut self) {
        let ids: Vec<u64> = self
            .idle
            .iter()
            .chain(self.hailed.iter())
            .copied()
            .collect();
        for id in ids {
            self.read(id);
        }
    }

    /// The owner's work is done: gives what was counted now, and logs no
    /// refusal any more (connections closing as the job ends are not news).
    pub fn close_log(&mut self, now: Instant) {
        if self.log_closed {
            return;
        }
        self.log_closed = true;
        if let Some(line) = self.log.flush(now) {
            self.lines.push(line);
        }
    }

    /// Takes what waits in the listener's backlog (at most [`DRAIN_MAX`]
    /// connections) and reads every authenticating connection once more:
    /// the owner's work is done, and connections made before that are
    /// answered and counted, not reset with the listener.
    pub fn drain_backlog(&mut self, expected: usize) {
        let mut taken = 0;
        while taken < DRAIN_MAX {
            let n = self.accept(expected);
            if n == 0 {
                break;
            }
            taken += n;
            self.read_all_pending();
        }
        self.read_all_pending();
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections; returns how many it took
    /// from the backlog.
    fn accept(&mut self, expected: usize) -> usize {
        let mut taken = 0;
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept_one() {
                Ok((stream, from)) => {
                    taken += 1;
                    if let Some(uid) = self.who.same_user {
                        if sys::peer_uid(stream.as_fd()).ok() != Some(uid) {
                            self.note_refusal("a process of another user connected".into());
                            continue;
                        }
                    }
                    if L::nonblocking(&stream).is_err() {
                        continue;
                    }
                    self.admit(from.map(|a| a.ip()), expected);
                    let Ok(hs) = Handshake::new(
                        &self.who.secret,
                        &self.who.context,
                        Role::Responder,
                        self.who.id,
                    ) else {
                        continue;
                    };
                    let id = self.next;
                    self.next += 1;
                    self.pending.insert(
                        id,
                        Pending {
                            stream,
                            from,
                            inbuf: Vec::new(),
                            outbuf: hs.hello().to_vec(),
                            out_off: 0,
                            hs: Box::new(hs),
                            since: Instant::now(),
                        },
                    );
                    self.idle.insert(id);
                    self.flush(id);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.evict(None, false, "dosrun is out of file descriptors") {
                        self.accept_paused = Some(Instant::now() + ACCEPT_PAUSE);
                        let line = format!("cannot accept a {} connection: {e}", self.what);
                        self.note_refusal(line);
                        return taken;
                    }
                }
                Err(_) => return taken,
            }
        }
        taken
    }

    /// Makes room for one more connection from `source` at a bound.
    fn admit(&mut self, source: Option<IpAddr>, expected: usize) {
        let crowded_source = match (self.limits.source_slack, source) {
            (Some(slack), Some(ip)) => {
                let same = self
                    .pending
                    .values()
                    .filter(|p| p.from.map(|a| a.ip()) == Some(ip))
                    .count();
                same >= expected + slack
            }
            _ => false,
        };
        let (source, why) = if crowded_source {
            (
                source,
                "too many connections authenticating from this address",
            )
        } else if self.pending.len() >= expected + self.limits.slack {
            (None, "too many connections authenticating")
        } else {
            return;
        };
        if !self.evict(source, false, why) {
            self.evict(source, true, why);
        }
    }

    /// Closes the oldest authenticating connection (from `source` if
    /// given) that has sent no valid hello (`hailed`: a hello but no
    /// proof); see [`refusals::evict`].
    fn evict(&mut self, source: Option<IpAddr>, hailed: bool, why: &str) -> bool {
        refusals::evict(&mut FromSource { acc: self, source }, hailed, why)
    }

    fn line(&self, from: Option<SocketAddr>, why: &str) -> String {
        match from {
            Some(a) => format!("refused a {} connection from {a}: {why}", self.what),
            None => format!("refused a {} connection: {why}", self.what),
        }
    }

    /// Logs a refusal, rate-limited.
    fn note_refusal(&mut self, line: String) {
        if self.log_closed {
            return;
        }
        if let Some(l) = self.log.note(Instant::now(), line) {
            self.lines.push(l);
        }
    }

    /// Closes an authenticating connection, and logs it.
    fn refuse(&mut self, id: u64, why: &str) {
        self.idle.remove(&id);
        self.hailed.remove(&id);
        if let Some(p) = self.pending.remove(&id) {
            self.note_refusal(self.line(p.from, why));
        }
    }

    /// Reads what `id` sent, as far as the handshake needs, and advances it.
    fn read(&mut self, id: u64) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        let mut chunk = [0u8; 512];
        let mut eof = false;
        while p.inbuf.len() < p.needs() {
            match p.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => p.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if !p.hailed() && p.inbuf.len() >= HELLO_LEN {
            match p.hs.on_hello(&p.inbuf[..HELLO_LEN]) {
                Ok(proof) => {
                    p.outbuf.extend_from_slice(&proof);
                    p.inbuf.drain(..HELLO_LEN);
                    self.idle.remove(&id);
                    self.hailed.insert(id);
                    self.flush(id);
                }
                Err(e) => return self.refuse(id, &e.to_string()),
            }
        }
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        if p.hailed() && p.inbuf.len() >= PROOF_LEN {
            let peer = match p.hs.on_proof(&p.inbuf[..PROOF_LEN]) {
                Ok(peer) => peer,
                Err(e) => return self.refuse(id, &e.to_string()),
            };
            self.idle.remove(&id);
            self.hailed.remove(&id);
            let Some(mut p) = self.pending.remove(&id) else {
                return;
            };
            p.inbuf.drain(..PROOF_LEN);
            p.outbuf.drain(..p.out_off);
            self.joined.push(Joined {
                stream: p.stream,
                peer,
                from: p.from,
                inbuf: p.inbuf,
                unsent: p.outbuf,
            });
            return;
        }
        if eof {
            self.refuse(id, "closed during authentication");
        }
    }

    /// Writes what the connection can take now.
    fn flush(&mut self, id: u64) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        write_queued(&mut p.stream, &p.outbuf, &mut p.out_off);
    }
}

/// Writes `buf[*off..]` as far as `w` takes it now, advancing `off`. When
/// it would block, the owner polls for `POLLOUT`; on other errors, the read
/// side sees the connection close.
pub fn write_queued(w: &mut impl Write, buf: &[u8], off: &mut usize) {
    while *off < buf.len() {
        match w.write(&buf[*off..]) {
            Ok(0) => break,
            Ok(n) => *off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

/// The authenticating connections of an acceptor (from `source`, if
/// given), as eviction sees them.
struct FromSource<'a, L: Listen> {
    acc: &'a mut Acceptor<L>,
    source: Option<IpAddr>,
}

impl<L: Listen> refusals::Admission for FromSource<'_, L> {
    fn oldest(&self, hailed: bool) -> Option<u64> {
        let set = if hailed {
            &self.acc.hailed
        } else {
            &self.acc.idle
        };
        set.iter().copied().find(|id| {
            self.source.is_none()
                || self
                    .acc
                    .pending
                    .get(id)
                    .and_then(|p| p.from)
                    .map(|a| a.ip())
                    == self.source
        })
    }

    fn read_again(&mut self, id: u64) -> bool {
        self.acc.read(id);
        !self.acc.pending.contains_key(&id)
    }

    fn refuse(&mut self, id: u64, why: &str) {
        self.acc.refuse(id, why);
    }
}
