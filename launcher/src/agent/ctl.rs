//! One end of a control connection (dosrun <-> node agent) after its
//! authentication: a non-blocking TCP stream with frame buffers, used from a
//! poll loop on both ends.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use super::wire::{self, split_frame, Header, WireError};

/// Most bytes read from a connection in one call (the rest waits for the
/// next poll, so one busy agent cannot starve the others).
const READ_BUDGET: usize = 1 << 20;

/// A control connection.
#[derive(Debug)]
pub struct CtlConn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    used: usize,
    outbuf: Vec<u8>,
    off: usize,
    /// When the last bytes arrived.
    pub last_rx: Instant,
    /// The peer closed it, or it failed.
    pub closed: bool,
}

impl CtlConn {
    /// Wraps an authenticated stream (made non-blocking here); `leftover`
    /// is what was read past the handshake.
    pub fn new(stream: TcpStream, leftover: Vec<u8>) -> io::Result<CtlConn> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(CtlConn {
            stream,
            inbuf: leftover,
            used: 0,
            outbuf: Vec::new(),
            off: 0,
            last_rx: Instant::now(),
            closed: false,
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// The stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether output waits to be written.
    pub fn wants_write(&self) -> bool {
        self.off < self.outbuf.len()
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.outbuf.len() - self.off
    }

    /// Queues a frame encoded by `enc` and writes what the socket takes.
    pub fn send(&mut self, enc: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>) {
        if self.closed {
            return;
        }
        if self.off > 0 && self.off * 2 >= self.outbuf.len() {
            self.outbuf.drain(..self.off);
            self.off = 0;
        }
        // A frame too large to encode is dropped; callers bound their data.
        let _ = enc(&mut self.outbuf);
        self.flush();
    }

    /// Writes what the socket takes now.
    pub fn flush(&mut self) {
        while self.off < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.off..]) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        if self.off == self.outbuf.len() {
            self.outbuf.clear();
            self.off = 0;
        }
    }

    /// Writes everything queued, blocking up to `limit` (end of a job).
    pub fn flush_blocking(&mut self, limit: std::time::Duration) {
        let until = Instant::now() + limit;
        while self.wants_write() && !self.closed {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut p = [libc::pollfd {
                fd: self.fd(),
                events: libc::POLLOUT,
                revents: 0,
            }];
            let ms = left.as_millis().clamp(1, 1000) as i32;
            if crate::sys::poll(&mut p, ms).is_err() {
                break;
            }
            self.flush();
        }
    }

    /// Reads what has arrived (up to a budget).
    pub fn read(&mut self) {
        if self.used > 0 {
            self.inbuf.drain(..self.used);
            self.used = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        let mut got = 0;
        while got < READ_BUDGET {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    got += n;
                    self.last_rx = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    /// The next complete frame read, decoded by `dec`; `Ok(None)` when
    /// none is complete.
    pub fn next_frame<T>(
        &mut self,
        dec: impl FnOnce(Header, &[u8]) -> Result<T, WireError>,
    ) -> Result<Option<T>, WireError> {
        match split_frame(&self.inbuf[self.used..])? {
            None => Ok(None),
            Some((h, body, n)) => {
                let m = dec(h, body)?;
                self.used += n;
                Ok(Some(m))
            }
        }
    }
}

/// The bootstrap line dosrun writes on an agent's stdin: control address,
/// job id, node id and the job's secret (which thus never appears on a
/// command line).
pub fn bootstrap_line(
    addr: std::net::SocketAddr,
    jobid: u64,
    node: usize,
    secret_hex: &str,
) -> String {
    format!(
        "dos-agent-v{} {addr} {jobid:016x} {node} {secret_hex}\n",
        wire::VERSION
    )
}

/// What the bootstrap line carries.
#[derive(Debug)]
pub struct Bootstrap {
    /// dosrun's control address.
    pub addr: std::net::SocketAddr,
    /// The job id.
    pub jobid: u64,
    /// This node's id.
    pub node: usize,
    /// The job's secret.
    pub secret: dos::pmi::Secret,
}

/// Parses a bootstrap line; `None` when malformed.
pub fn parse_bootstrap(line: &str) -> Option<Bootstrap> {
    let mut f = line.split_ascii_whitespace();
    if f.next()? != format!("dos-agent-v{}", wire::VERSION) {
        return None;
    }
    let b = Bootstrap {
        addr: f.next()?.parse().ok()?,
        jobid: dos::pmi::parse_hex64(f.next()?)?,
        node: f.next()?.parse().ok()?,
        secret: dos::pmi::Secret::from_hex(f.next()?).ok()?,
    };
    f.next().is_none().then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_round_trips() {
        let s = dos::pmi::Secret::generate().unwrap();
        let l = bootstrap_line("198.18.0.254:4000".parse().unwrap(), 0xab, 2, &s.to_hex());
        assert!(l.ends_with('\n'));
        let b = parse_bootstrap(&l).unwrap();
        assert_eq!(b.addr.to_string(), "198.18.0.254:4000");
        assert_eq!((b.jobid, b.node), (0xab, 2));
        assert_eq!(b.secret.as_bytes(), s.as_bytes());
        assert!(parse_bootstrap("").is_none());
        assert!(parse_bootstrap("dos-agent-v1 x 1 1 00").is_none());
        assert!(parse_bootstrap(&format!("{} extra", l.trim())).is_none());
    }
}
