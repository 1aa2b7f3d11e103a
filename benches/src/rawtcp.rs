//! A raw TCP baseline: ping-pong latency and stream bandwidth over one bare
//! kernel TCP connection, to set dos's TCP numbers against.
//!
//! Two processes, usually on two hosts:
//!
//! ```text
//! host-b$ dosbench raw-tcp serve 10.0.0.2:5000
//! host-a$ dosbench raw-tcp 10.0.0.2:5000 --json > raw.jsonl
//! ```
//!
//! The server ([`Server`]) accepts one connection and answers the client's
//! requests until the client closes. Every request starts with a [`Header`]
//! of [`HEADER_LEN`] little-endian bytes: a magic number, the operation
//! ([`Op`]), the message size and the iteration count (warm-up included).
//!
//! * [`Op::PingPong`]: `iters` times, the server reads `size` bytes and writes
//!   them back. Both sides busy-poll a non-blocking socket (a `read` or
//!   `write` that would block is retried after [`std::hint::spin_loop`]), so
//!   the figure is what a spinning runtime could get out of the kernel.
//!   Latency is half the round trip, in microseconds.
//! * [`Op::Stream`]: the server reads `iters * size` bytes, then writes one
//!   acknowledgement byte. The client makes each OSU `bw` iteration one such
//!   request: a window of `--window` (default 64) back-to-back writes of
//!   `size` bytes, then the acknowledgement, exactly the structure of the
//!   `bw` benchmark. Bandwidth is in MB/s (10^6 bytes per second), as `bw`
//!   reports it. Stream sockets block.
//!
//! Both sides set `TCP_NODELAY`. Sizes and iteration counts follow the same
//! schedules as `latency` and `bw` ([`Bench::plan`]), over the powers of two
//! from 1 B to 4 MiB unless told otherwise. Results are ordinary
//! [`Outcome`]s labelled `raw`, with 2 ranks, so `dosbench compare` puts them
//! in a column of their own.
//!
//! Everything is bounded: sizes up to [`MAX_SIZE`], iteration counts up to
//! [`MAX_ITERS`], [`ACCEPT_TIMEOUT`] for a client to arrive, [`IDLE_TIMEOUT`]
//! without progress in any transfer. A malformed header is a
//! [`BadRequest`], after which the server stops with an error.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::report::{Outcome, Row};
use crate::sched::{self, Bench};
use crate::suite::{Options, SPIN_UP};
use crate::{Error, Result};

/// The implementation label on raw TCP results.
pub const IMPL: &str = "raw";

/// Largest message size a request may ask for (64 MiB).
pub const MAX_SIZE: usize = 64 << 20;

/// Largest iteration count a request may ask for.
pub const MAX_ITERS: usize = 10_000_000;

/// Bytes in a request header.
pub const HEADER_LEN: usize = 24;

/// The first four header bytes (`dRaw`, read little-endian).
pub const MAGIC: u32 = u32::from_le_bytes(*b"dRaw");

/// How long `raw-tcp serve` waits for its client.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the client keeps trying to connect while the server starts.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// Either side gives up after this long without any progress.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The byte that acknowledges a stream.
const ACK: u8 = 0xac;

/// The server reads streams in pieces of at least this many bytes.
const STREAM_CHUNK: usize = 256 << 10;

/// Smallest and largest message size when none is given.
const DEFAULT_SIZES: (usize, usize) = (1, 4 << 20);

/// What a request asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Echo `size` bytes back, `iters` times.
    PingPong,
    /// Take `iters * size` bytes, then acknowledge with one byte.
    Stream,
}

impl Op {
    fn code(self) -> u32 {
        match self {
            Op::PingPong => 1,
            Op::Stream => 2,
        }
    }

    fn from_code(code: u32) -> Option<Op> {
        match code {
            1 => Some(Op::PingPong),
            2 => Some(Op::Stream),
            _ => None,
        }
    }
}

/// Why a request header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRequest {
    /// The magic number is wrong: not a `dosbench raw-tcp` client.
    #[error("magic number {0:#010x}, expected {MAGIC:#010x} (not a dosbench raw-tcp client?)")]
    Magic(u32),
    /// The operation code is unknown.
    #[error("unknown operation {0}")]
    Op(u32),
    /// The message size is zero or above [`MAX_SIZE`].
    #[error("message size {0} is outside 1..={MAX_SIZE}")]
    Size(u64),
    /// The iteration count is zero or above [`MAX_ITERS`].
    #[error("iteration count {0} is outside 1..={MAX_ITERS}")]
    Iters(u64),
    /// The connection closed in the middle of a header.
    #[error("the connection closed after {0} of {HEADER_LEN} header bytes")]
    Truncated(usize),
}

/// One request: what to do, with how many bytes, how many times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The operation.
    pub op: Op,
    /// Message size in bytes, `1..=MAX_SIZE`.
    pub size: usize,
    /// Iterations, warm-up included, `1..=MAX_ITERS`.
    pub iters: usize,
}

impl Header {
    /// A header, if it is within bounds.
    pub fn new(op: Op, size: usize, iters: usize) -> Result<Header, BadRequest> {
        if size == 0 || size > MAX_SIZE {
            return Err(BadRequest::Size(size as u64));
        }
        if iters == 0 || iters > MAX_ITERS {
            return Err(BadRequest::Iters(iters as u64));
        }
        Ok(Header { op, size, iters })
    }

    /// The wire form: magic, op (`u32`), size and iters (`u64`), little-endian.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.op.code().to_le_bytes());
        b[8..16].copy_from_slice(&(self.size as u64).to_le_bytes());
        b[16..24].copy_from_slice(&(self.iters as u64).to_le_bytes());
        b
    }

    /// Reads the wire form, checking every field.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, BadRequest> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(BadRequest::Magic(magic));
        }
        let code = u32_at(4);
        let op = Op::from_code(code).ok_or(BadRequest::Op(code))?;
        let (size, iters) = (u64_at(8), u64_at(16));
        let size_ok = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0 && s <= MAX_SIZE);
        let size = size_ok.ok_or(BadRequest::Size(size))?;
        let iters_ok = usize::try_from(iters)
            .ok()
            .filter(|&n| n > 0 && n <= MAX_ITERS);
        let iters = iters_ok.ok_or(BadRequest::Iters(iters))?;
        Ok(Header { op, size, iters })
    }
}

/// The message sizes the client runs: powers of two in
/// `--min-size..=--max-size`, by default 1 B to 4 MiB.
pub fn sizes(opts: &Options) -> Vec<usize> {
    let lo = opts.min_size.unwrap_or(DEFAULT_SIZES.0);
    let hi = opts.max_size.unwrap_or(DEFAULT_SIZES.1).min(MAX_SIZE);
    sched::sizes(lo, hi, 1, false)
}

/// Checks that every request `opts` leads to is within the server's bounds.
pub fn check_options(opts: &Options) -> std::result::Result<(), String> {
    if let Some(m) = opts.max_size.filter(|&m| m > MAX_SIZE) {
        return Err(format!(
            "--max-size {m} is above the raw-tcp limit {MAX_SIZE}"
        ));
    }
    if opts.window == 0 || opts.window > MAX_ITERS {
        return Err(format!("--window must be in 1..={MAX_ITERS}"));
    }
    for bench in [Bench::Latency, Bench::Bw] {
        let plan = bench.plan().with_overrides(opts.iters, opts.warmup);
        for c in [plan.small, plan.large] {
            if c.iters.saturating_add(c.warmup) > MAX_ITERS {
                return Err(format!(
                    "--iters plus --warmup must stay within {MAX_ITERS} for raw-tcp"
                ));
            }
        }
    }
    Ok(())
}

fn socket_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Socket { what, source }
}

/// Sets `TCP_NODELAY` and the idle timeouts of blocking reads and writes.
fn configure(s: &TcpStream) -> Result<()> {
    s.set_nodelay(true)
        .map_err(socket_err("setting TCP_NODELAY"))?;
    s.set_read_timeout(Some(IDLE_TIMEOUT))
        .map_err(socket_err("setting the read timeout"))?;
    s.set_write_timeout(Some(IDLE_TIMEOUT))
        .map_err(socket_err("setting the write timeout"))
}

fn set_spinning(s: &TcpStream, on: bool) -> Result<()> {
    s.set_nonblocking(on)
        .map_err(socket_err("switching the socket's blocking mode"))
}

fn idle_timeout(what: &str) -> Error {
    Error::Timeout {
        what: what.to_string(),
        secs: IDLE_TIMEOUT.as_secs(),
    }
}

fn closed(what: &str) -> Error {
    Error::Protocol(format!("the peer closed the connection while {what}"))
}

/// Counts `WouldBlock`s of a spinning transfer and gives up after
/// [`IDLE_TIMEOUT`] without progress (the clock is read rarely).
struct Idle {
    spins: u32,
    since: Option<Instant>,
}

impl Idle {
    const CHECK_EVERY: u32 = 1 << 16;

    fn new() -> Idle {
        Idle {
            spins: 0,
            since: None,
        }
    }

    fn progress(&mut self) {
        self.spins = 0;
        self.since = None;
    }

    fn spin(&mut self, what: &str) -> Result<()> {
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if self.spins % Self::CHECK_EVERY == 0 {
            let now = Instant::now();
            match self.since {
                None => self.since = Some(now),
                Some(t) if now.duration_since(t) > IDLE_TIMEOUT => {
                    return Err(idle_timeout(what));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Fills `buf` from a non-blocking socket, spinning while nothing is there.
fn spin_read_exact(mut s: &TcpStream, buf: &mut [u8], what: &str) -> Result<()> {
    let mut done = 0;
    let mut idle = Idle::new();
    while done < buf.len() {
        match s.read(&mut buf[done..]) {
            Ok(0) => return Err(closed(what)),
            Ok(n) => {
                done += n;
                idle.progress();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => idle.spin(what)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(socket_err(what)(e)),
        }
    }
    Ok(())
}

/// Writes all of `buf` to a non-blocking socket, spinning while it is full.
fn spin_write_all(mut s: &TcpStream, buf: &[u8], what: &str) -> Result<()> {
    let mut done = 0;
    let mut idle = Idle::new();
    while done < buf.len() {
        match s.write(&buf[done..]) {
            Ok(0) => return Err(closed(what)),
            Ok(n) => {
                done += n;
                idle.progress();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => idle.spin(what)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(socket_err(what)(e)),
        }
    }
    Ok(())
}

/// A blocking read with the idle timeout; `Ok(0)` only at end of stream.
fn read_some(mut s: &TcpStream, buf: &mut [u8], what: &str) -> Result<usize> {
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(idle_timeout(what));
            }
            Err(e) => return Err(socket_err(what)(e)),
        }
    }
}

/// A blocking `write_all` with the idle timeout.
fn write_all(mut s: &TcpStream, buf: &[u8], what: &str) -> Result<()> {
    s.write_all(buf).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => idle_timeout(what),
        _ => socket_err(what)(e),
    })
}

/// A blocking `read_exact` with the idle timeout.
fn read_exact(s: &TcpStream, buf: &mut [u8], what: &str) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match read_some(s, &mut buf[done..], what)? {
            0 => return Err(closed(what)),
            n => done += n,
        }
    }
    Ok(())
}

/// The listening side of the baseline: `dosbench raw-tcp serve`.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
}

/// What a server did before its client closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSummary {
    /// The client's address.
    pub peer: SocketAddr,
    /// Requests answered.
    pub requests: u64,
}

impl Server {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one).
    pub fn bind(addr: &str) -> Result<Server> {
        let listener = TcpListener::bind(addr).map_err(socket_err(format!("binding {addr}")))?;
        Ok(Server { listener })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(socket_err("reading the listening address"))
    }

    /// Accepts one client (waiting at most `accept_timeout`) and answers its
    /// requests until it closes the connection.
    ///
    /// A malformed header ends the service with [`Error::BadRequest`].
    pub fn serve_one(self, accept_timeout: Duration) -> Result<ServeSummary> {
        let (stream, peer) = self.accept(accept_timeout)?;
        drop(self.listener);
        stream
            .set_nonblocking(false)
            .map_err(socket_err("making the connection blocking"))?;
        configure(&stream)?;
        let mut buf = Vec::new();
        let mut requests = 0u64;
        while let Some(h) = read_header(&stream)? {
            serve(&stream, h, &mut buf)?;
            requests += 1;
        }
        Ok(ServeSummary { peer, requests })
    }

    fn accept(&self, timeout: Duration) -> Result<(TcpStream, SocketAddr)> {
        let what = "waiting for a client";
        self.listener
            .set_nonblocking(true)
            .map_err(socket_err("making the listener non-blocking"))?;
        let t0 = Instant::now();
        loop {
            match self.listener.accept() {
                Ok(c) => return Ok(c),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    if t0.elapsed() >= timeout {
                        return Err(Error::Timeout {
                            what: what.to_string(),
                            secs: timeout.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(socket_err(what)(e)),
            }
        }
    }
}

/// The next request, or `None` when the client closed between requests.
fn read_header(s: &TcpStream) -> Result<Option<Header>> {
    let what = "reading a request header";
    let mut b = [0u8; HEADER_LEN];
    let mut done = 0;
    while done < HEADER_LEN {
        match read_some(s, &mut b[done..], what)? {
            0 if done == 0 => return Ok(None),
            0 => return Err(Error::BadRequest(BadRequest::Truncated(done))),
            n => done += n,
        }
    }
    Header::decode(&b).map(Some).map_err(Error::BadRequest)
}

/// Answers one request; `buf` is reused between requests.
fn serve(s: &TcpStream, h: Header, buf: &mut Vec<u8>) -> Result<()> {
    match h.op {
        Op::PingPong => {
            if buf.len() < h.size {
                buf.resize(h.size, 0);
            }
            let b = &mut buf[..h.size];
            set_spinning(s, true)?;
            for _ in 0..h.iters {
                spin_read_exact(s, b, "reading a ping")?;
                spin_write_all(s, b, "writing a pong")?;
            }
            set_spinning(s, false)
        }
        Op::Stream => {
            let want = h.size.clamp(STREAM_CHUNK, MAX_SIZE); // constants: min < max
            if buf.len() < want {
                buf.resize(want, 0);
            }
            // Both factors are bounded, so this cannot overflow a u64.
            let mut left = h.size as u64 * h.iters as u64;
            while left > 0 {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                match read_some(s, &mut buf[..n], "reading a stream")? {
                    0 => return Err(closed("reading a stream")),
                    got => left -= got as u64,
                }
            }
            write_all(s, &[ACK], "acknowledging a stream")
        }
    }
}

/// The measuring side of the baseline: `dosbench raw-tcp ADDR:PORT`.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    requests: u64,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`), retrying for up to `retry_for`
    /// while the server is not listening yet.
    pub fn connect(addr: &str, retry_for: Duration) -> Result<Client> {
        let what = format!("connecting to {addr}");
        let targets: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(socket_err(format!("resolving {addr}")))?
            .collect();
        let t0 = Instant::now();
        let mut last = std::io::Error::new(ErrorKind::NotFound, "the name has no addresses");
        loop {
            for t in &targets {
                let left = retry_for.saturating_sub(t0.elapsed());
                let wait = left.clamp(Duration::from_millis(100), Duration::from_secs(1));
                match TcpStream::connect_timeout(t, wait) {
                    Ok(stream) => {
                        configure(&stream)?;
                        let peer = stream.peer_addr().map_err(socket_err(&what))?;
                        let local = stream.local_addr().map_err(socket_err(&what))?;
                        return Ok(Client {
                            stream,
                            peer,
                            local,
                            requests: 0,
                        });
                    }
                    Err(e) => last = e,
                }
            }
            if targets.is_empty() || t0.elapsed() >= retry_for {
                return Err(socket_err(format!(
                    "{what} (tried for {} s)",
                    retry_for.as_secs_f64()
                ))(last));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Requests sent so far (the server counts the same).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn request(&mut self, op: Op, size: usize, iters: usize) -> Result<()> {
        let h = Header::new(op, size, iters).map_err(Error::BadRequest)?;
        write_all(&self.stream, &h.encode(), "sending a request header")?;
        self.requests += 1;
        Ok(())
    }

    /// One ping-pong request: `warmup + iters` round trips of `s.len()`
    /// bytes, echoed into `r`; returns the time of the last `iters`.
    fn ping_pong(&mut self, s: &[u8], r: &mut [u8], warmup: usize, iters: usize) -> Result<f64> {
        self.request(Op::PingPong, s.len(), warmup + iters)?;
        set_spinning(&self.stream, true)?;
        let mut t0 = Instant::now();
        for i in 0..warmup + iters {
            if i == warmup {
                t0 = Instant::now();
            }
            spin_write_all(&self.stream, s, "writing a ping")?;
            spin_read_exact(&self.stream, r, "reading a pong")?;
        }
        let secs = t0.elapsed().as_secs_f64();
        set_spinning(&self.stream, false)?;
        Ok(secs)
    }

    /// Untimed 1-byte ping-pongs for [`SPIN_UP`], as the other benchmarks
    /// spin up first: both hosts' cores are busy and clocked up before the
    /// first size.
    fn spin_up(&mut self) -> Result<()> {
        let (s, mut r) = ([1u8], [0u8]);
        let t0 = Instant::now();
        while t0.elapsed() < SPIN_UP {
            self.ping_pong(&s, &mut r, 0, 1000)?;
        }
        Ok(())
    }

    /// Ping-pong latency (half the round trip, in microseconds) for every
    /// size of [`sizes`], with `latency`'s iteration counts.
    pub fn latency(&mut self, opts: &Options) -> Result<Outcome> {
        let sizes = sizes(opts);
        let plan = Bench::Latency
            .plan()
            .with_overrides(opts.iters, opts.warmup);
        let max = sizes.iter().copied().max().unwrap_or(0);
        let send = payload(max);
        let mut recv = vec![0u8; max];
        let mut rows = Vec::with_capacity(sizes.len());
        self.spin_up()?;
        for &size in &sizes {
            let c = plan.counts(size);
            let (s, r) = (&send[..size], &mut recv[..size]);
            r.fill(0);
            let secs = self.ping_pong(s, r, c.warmup, c.iters)?;
            let us = secs * 1e6 / (2 * c.iters) as f64;
            if let Some(bad) = r.iter().zip(s).position(|(a, b)| a != b) {
                return Err(Error::Validation {
                    bench: "raw-tcp latency",
                    size,
                    rank: 0,
                    what: format!("echoed byte {bad} is {}, expected {}", r[bad], s[bad]),
                });
            }
            rows.push(row(size, us, c.iters));
        }
        Ok(outcome(Bench::Latency, rows))
    }

    /// Stream bandwidth in MB/s for every size of [`sizes`], with `bw`'s
    /// iteration counts: each iteration is `opts.window` back-to-back
    /// messages and one acknowledgement.
    pub fn bw(&mut self, opts: &Options) -> Result<Outcome> {
        let sizes = sizes(opts);
        let plan = Bench::Bw.plan().with_overrides(opts.iters, opts.warmup);
        let window = opts.window.max(1);
        let max = sizes.iter().copied().max().unwrap_or(0);
        let send = payload(max);
        let mut rows = Vec::with_capacity(sizes.len());
        self.spin_up()?;
        for &size in &sizes {
            let c = plan.counts(size);
            let s = &send[..size];
            let mut t0 = Instant::now();
            for i in 0..c.warmup + c.iters {
                if i == c.warmup {
                    t0 = Instant::now();
                }
                self.request(Op::Stream, size, window)?;
                for _ in 0..window {
                    write_all(&self.stream, s, "streaming")?;
                }
                let mut ack = [0u8; 1];
                read_exact(&self.stream, &mut ack, "waiting for the acknowledgement")?;
                if ack[0] != ACK {
                    return Err(Error::Protocol(format!(
                        "acknowledgement byte {:#04x}, expected {ACK:#04x}",
                        ack[0]
                    )));
                }
            }
            let secs = t0.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
            let bytes = (size * window * c.iters) as f64;
            rows.push(row(size, bytes / secs / 1e6, c.iters));
        }
        Ok(outcome(Bench::Bw, rows))
    }
}

fn row(size: usize, v: f64, iters: usize) -> Row {
    Row {
        size,
        avg: v,
        min: v,
        max: v,
        iters,
    }
}

fn outcome(benchmark: Bench, rows: Vec<Row>) -> Outcome {
    Outcome {
        benchmark,
        implementation: IMPL.to_string(),
        ranks: 2,
        unit: benchmark.unit(),
        rows,
    }
}

/// Non-zero, position-dependent bytes, so a lost or moved byte shows.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 241) as u8 + 7).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for h in [
            Header::new(Op::PingPong, 1, 1).unwrap(),
            Header::new(Op::Stream, MAX_SIZE, MAX_ITERS).unwrap(),
        ] {
            assert_eq!(Header::decode(&h.encode()), Ok(h));
        }
        let b = Header::new(Op::Stream, 4096, 64).unwrap().encode();
        assert_eq!(&b[0..4], b"dRaw");
        assert_eq!(b[4], 2);
        assert_eq!(&b[8..10], &[0x00, 0x10]); // 4096, little-endian
        assert_eq!(b[16], 64);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let good = Header::new(Op::PingPong, 8, 10).unwrap().encode();
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            Header::decode(&b)
        };
        assert!(matches!(with(0, b"GET "), Err(BadRequest::Magic(_))));
        assert_eq!(with(4, &[9, 0, 0, 0]), Err(BadRequest::Op(9)));
        assert_eq!(with(8, &[0; 8]), Err(BadRequest::Size(0)));
        let big = (MAX_SIZE as u64 + 1).to_le_bytes();
        assert_eq!(with(8, &big), Err(BadRequest::Size(MAX_SIZE as u64 + 1)));
        assert_eq!(with(16, &[0xff; 8]), Err(BadRequest::Iters(u64::MAX)));
        assert_eq!(with(16, &[0; 8]), Err(BadRequest::Iters(0)));
        assert_eq!(
            Header::new(Op::Stream, 1, MAX_ITERS + 1),
            Err(BadRequest::Iters(MAX_ITERS as u64 + 1))
        );
    }

    #[test]
    fn size_schedule_and_bounds() {
        let d = Options::default();
        let s = sizes(&d);
        assert_eq!((s.len(), s[0], *s.last().unwrap()), (23, 1, 4 << 20));
        let o = Options {
            min_size: Some(0),
            max_size: Some(8),
            ..d
        };
        assert_eq!(sizes(&o), vec![1, 2, 4, 8]);
        assert!(check_options(&d).is_ok());
        let too_big = Options {
            max_size: Some(MAX_SIZE * 2),
            ..d
        };
        assert!(check_options(&too_big).is_err());
        let too_many = Options {
            iters: Some(MAX_ITERS),
            warmup: Some(1),
            ..d
        };
        assert!(check_options(&too_many).is_err());
    }
}
