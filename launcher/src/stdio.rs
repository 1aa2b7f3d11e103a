//! Output relay: ranks' bytes cut into whole lines, optionally tagged, queued
//! for dosrun's own stdout or stderr, and written when those are writable.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::sys;

/// Longest partial line held back; a longer one is passed on in pieces.
pub const MAX_LINE: usize = 64 * 1024;

/// Cuts one rank stream into lines.
///
/// Complete lines are appended to the output with the stream's prefix (if
/// any) before each; the partial last line is held until its newline, its
/// stream's end ([`LineSplitter::finish`]) or [`MAX_LINE`] bytes. With a
/// prefix, a piece passed on without its newline gets one, so every tagged
/// line starts on a line of its own.
#[derive(Debug)]
pub struct LineSplitter {
    prefix: Option<Vec<u8>>,
    partial: Vec<u8>,
}

impl LineSplitter {
    /// A splitter whose lines get `prefix` (`None`: passed on unchanged).
    pub fn new(prefix: Option<Vec<u8>>) -> LineSplitter {
        LineSplitter {
            prefix,
            partial: Vec::new(),
        }
    }

    /// The `--tag-output` prefix of Open MPI: `[1,RANK]<stdout>:`.
    pub fn tag(rank: usize, stream: &str) -> Vec<u8> {
        format!("[1,{rank}]<{stream}>:").into_bytes()
    }

    /// Takes `data` read from the stream; appends the lines it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(nl + 1);
            self.emit(line, out);
            data = rest;
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() >= MAX_LINE {
            self.flush_partial(out);
        }
    }

    /// The stream ended: passes on the partial last line, if any.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            self.flush_partial(out);
        }
    }

    fn emit(&mut self, line_with_nl: &[u8], out: &mut Vec<u8>) {
        if let Some(p) = &self.prefix {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(&self.partial);
        out.extend_from_slice(line_with_nl);
        self.partial.clear();
    }

    fn flush_partial(&mut self, out: &mut Vec<u8>) {
        if let Some(p) = &self.prefix {
            out.extend_from_slice(p);
            out.extend_from_slice(&self.partial);
            out.push(b'\n');
        } else {
            out.extend_from_slice(&self.partial);
        }
        self.partial.clear();
    }
}

/// One of dosrun's own output descriptors and what waits to be written to it.
#[derive(Debug)]
pub struct Sink<'fd> {
    fd: BorrowedFd<'fd>,
    buf: Vec<u8>,
    off: usize,
    chunk: usize,
    broken: bool,
}

impl<'fd> Sink<'fd> {
    /// A sink writing to `fd` (1 or 2), which stays blocking: writes happen
    /// only after poll reports it writable, in pieces small enough for a pipe
    /// to take at once.
    pub fn new(fd: BorrowedFd<'fd>) -> Sink<'fd> {
        let chunk = if sys::is_regular_file(fd) {
            1 << 20
        } else if sys::is_fifo(fd) {
            libc::PIPE_BUF
        } else {
            4096
        };
        Sink {
            fd,
            buf: Vec::new(),
            off: 0,
            chunk,
            broken: false,
        }
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bytes waiting.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.off
    }

    /// The queue to append to.
    pub fn queue(&mut self) -> &mut Vec<u8> {
        if self.off > 0 && self.off * 2 >= self.buf.len() {
            self.buf.drain(..self.off);
            self.off = 0;
        }
        &mut self.buf
    }

    /// Appends `data`.
    pub fn push(&mut self, data: &[u8]) {
        if !self.broken {
            self.queue().extend_from_slice(data);
        }
    }

    /// Writes one piece. On a broken pipe the queue is dropped, the sink
    /// marked [`Sink::broken`], and the error returned.
    pub fn write_some(&mut self) -> io::Result<()> {
        if self.broken || self.pending() == 0 {
            return Ok(());
        }
        let end = self.buf.len().min(self.off + self.chunk);
        match sys::write(self.fd, &self.buf[self.off..end]) {
            Ok(n) => {
                self.off += n;
                if self.off == self.buf.len() {
                    self.buf.clear();
                    self.off = 0;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                self.broken = true;
                self.buf = Vec::new();
                self.off = 0;
                Err(e)
            }
        }
    }

    /// Writes everything left, blocking (end of the job).
    pub fn flush_blocking(&mut self) {
        while !self.broken && self.pending() > 0 {
            let mut p = [libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            }];
            if sys::poll(&mut p, -1).is_err() || self.write_some().is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(prefix: Option<&str>, pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = LineSplitter::new(prefix.map(|p| p.as_bytes().to_vec()));
        let mut out = Vec::new();
        for p in pieces {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_reassembled_across_reads() {
        assert_eq!(run(None, &[b"ab", b"c\nd", b"e\n"]), b"abc\nde\n");
        assert_eq!(run(None, &[b"no newline"]), b"no newline");
        assert_eq!(run(None, &[b"\n\n"]), b"\n\n");
        assert_eq!(run(None, &[]), b"");
    }

    #[test]
    fn tags_prefix_every_line() {
        let tag = String::from_utf8(LineSplitter::tag(3, "stdout")).unwrap();
        assert_eq!(tag, "[1,3]<stdout>:");
        assert_eq!(
            run(Some("T:"), &[b"a\nb", b"b\n", b"\nlast"]),
            b"T:a\nT:bb\nT:\nT:last\n"
        );
    }

    #[test]
    fn a_partial_line_is_held_until_complete() {
        let mut s = LineSplitter::new(None);
        let mut out = Vec::new();
        s.push(b"half", &mut out);
        assert!(out.is_empty());
        s.push(b" more\n", &mut out);
        assert_eq!(out, b"half more\n");
    }

    #[test]
    fn very_long_lines_pass_in_pieces() {
        let big = vec![b'x'; MAX_LINE + 10];
        let mut s = LineSplitter::new(None);
        let mut out = Vec::new();
        s.push(&big, &mut out);
        assert_eq!(out.len(), big.len());
        let out = run(Some("T:"), &[&big]);
        assert_eq!(out.len(), 2 + big.len() + 1);
    }

    #[test]
    fn sink_writes_to_a_pipe_and_notices_a_closed_reader() {
        use std::os::fd::AsFd;
        let (r, w) = sys::pipe().unwrap();
        let mut s = Sink::new(w.as_fd());
        s.push(b"hello\n");
        s.flush_blocking();
        let mut buf = [0u8; 16];
        assert_eq!(sys::read(r.as_fd(), &mut buf).unwrap(), 6);
        drop(r);
        s.push(b"lost\n");
        assert!(s.write_some().is_err());
        s.push(b"ignored");
        assert_eq!(s.pending(), 0);
    }
}
