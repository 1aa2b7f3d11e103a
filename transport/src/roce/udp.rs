//! Batched UDP sockets, as the soft-RoCE driver needs them.
//!
//! * Unconnected, non-blocking, with `IP_MTU_DISCOVER = IP_PMTUDISC_DO`: the kernel
//!   then sends every IPv4 datagram with DF set and identification 0, the fields
//!   that the RoCEv2 ICRC covers but the receiver cannot see
//!   ([`crate::roce::icrc::IpUdp::new`]).
//! * `IP_PKTINFO` on: each received datagram comes with the address it was sent to,
//!   so the receiver rebuilds the exact headers the sender's ICRC covered, also on
//!   a socket bound to a wildcard address.
//! * `sendmmsg` / `recvmmsg`: one system call for a batch of datagrams.
//! * UDP segmentation offload (`UDP_SEGMENT`, [`UdpSocket::send_segmented`]): one
//!   send of up to [`GSO_MAX_SEGMENTS`] equal datagrams, which travel through the
//!   kernel (and through veth and bridges) as one buffer and are split into
//!   datagrams only where needed, each with its own IPv4 identification (0, 1,
//!   ...). Its receiving half, `UDP_GRO` ([`UdpSocket::enable_gro`]), hands such a
//!   train to the reader in one piece ([`Datagram::segments`]).
//!
//! * Receive buffers of [`RECV_BUFFER`] bytes (forced past `net.core.rmem_max`
//!   where the process may): many peers' windows arriving at once at a receiver
//!   that is descheduled are kept, not dropped.
//! * ICMP errors on request ([`UdpSocket::enable_errors`]): a peer whose port
//!   is closed shows in [`UdpSocket::take_refused`].
//!
//! IPv4 only for now.
//!
//! ```
//! use dos_transport::roce::udp::{RecvBatch, UdpSocket};
//! let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//! let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//! let sent = a.send_batch(&[(b.local_addr(), &b"one"[..]), (b.local_addr(), &b"two"[..])]).unwrap();
//! assert_eq!(sent, 2);
//! let mut batch = RecvBatch::new(8, 2048);
//! let mut got = 0;
//! while got < 2 {
//!     got += b.recv_batch(&mut batch).unwrap();
//! }
//! let d = batch.get(0);
//! assert_eq!((d.data, d.src, d.dst), (&b"one"[..], a.local_addr(), b.local_addr()));
//! ```

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::icrc::{GSO_MAX_SEGMENTS, MAX_IPV4_PAYLOAD};
use crate::{Error, Result};

/// Send buffer size asked for (the kernel caps it at `net.core.wmem_max`).
const SOCKET_BUFFER: i32 = 4 << 20;
/// Receive buffer size asked for: room for the windows of many peers sending to
/// one rank at once (16 peers of 128 packets of 4 KiB, and the kernel's
/// bookkeeping), so that a receiver that is descheduled for a while does not drop
/// them. Forced past `net.core.rmem_max` with `SO_RCVBUFFORCE` where the process
/// may (`CAP_NET_ADMIN`), capped at it otherwise.
pub const RECV_BUFFER: i32 = 16 << 20;

/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// A non-blocking UDP socket set up for RoCEv2 datagrams.
#[derive(Debug)]
pub struct UdpSocket {
    fd: OwnedFd,
    local: SocketAddr,
}

fn sys(op: &'static str) -> Error {
    Error::last_os(op)
}

fn set_int(fd: RawFd, level: i32, name: i32, v: i32, op: &'static str) -> Result<()> {
    // SAFETY: `v` is a live int for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(sys(op));
    }
    Ok(())
}

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()),
        u16::from_be(s.sin_port),
    ))
}

fn v4(a: SocketAddr, op: &'static str) -> Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(Error::Unsupported { backend: "udp", op }),
    }
}

impl UdpSocket {
    /// Binds a socket to `addr` (port 0 picks one).
    pub fn bind(addr: SocketAddr) -> Result<UdpSocket> {
        let a = v4(addr, "IPv6 sockets")?;
        // SAFETY: plain system call.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(sys("socket"));
        }
        // SAFETY: a fresh descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();
        set_int(
            f,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
            "IP_MTU_DISCOVER",
        )?;
        set_int(f, libc::IPPROTO_IP, libc::IP_PKTINFO, 1, "IP_PKTINFO")?;
        // Larger buffers are a wish, not a requirement.
        if set_int(
            f,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            RECV_BUFFER,
            "SO_RCVBUFFORCE",
        )
        .is_err()
        {
            let _ = set_int(
                f,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                RECV_BUFFER,
                "SO_RCVBUF",
            );
        }
        let _ = set_int(
            f,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            SOCKET_BUFFER,
            "SO_SNDBUF",
        );
        let sa = to_sockaddr(a);
        // SAFETY: `sa` is a valid sockaddr_in for the duration of the call.
        let r = unsafe {
            libc::bind(
                f,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(sys("bind"));
        }
        // SAFETY: an all-zero sockaddr_in is valid to be overwritten.
        let mut got: libc::sockaddr_in = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: valid out-pointers of the right size.
        let r =
            unsafe { libc::getsockname(f, (&mut got as *mut libc::sockaddr_in).cast(), &mut len) };
        if r != 0 {
            return Err(sys("getsockname"));
        }
        Ok(UdpSocket {
            fd,
            local: from_sockaddr(&got),
        })
    }

    /// The receive buffer the kernel gave the socket, in bytes (`SO_RCVBUF`: what
    /// was asked for, doubled for its bookkeeping, within the limits).
    pub fn recv_buffer(&self) -> usize {
        let mut v: i32 = 0;
        let mut len = size_of::<i32>() as libc::socklen_t;
        // SAFETY: valid out-pointers of the right size.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut v as *mut i32).cast(),
                &mut len,
            )
        };
        if r == 0 {
            v.max(0) as usize
        } else {
            0
        }
    }

    /// Asks the kernel to queue the ICMP errors that datagrams of this socket
    /// cause (`IP_RECVERR`), for [`UdpSocket::take_refused`]. With it on, a receive
    /// may also fail once with the error; callers that turn it on treat a failed
    /// receive as "nothing received".
    pub fn enable_errors(&self) -> bool {
        set_int(
            self.fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            1,
            "IP_RECVERR",
        )
        .is_ok()
    }

    /// The destinations that answered a datagram with "port unreachable" (ICMP)
    /// since the last call: nothing listens there any more. Needs
    /// [`UdpSocket::enable_errors`].
    pub fn take_refused(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for _ in 0..64 {
            // SAFETY: all-zero C structs are valid to be overwritten.
            let mut name: libc::sockaddr_in = unsafe { zeroed() };
            let mut ctrl = [0u64; 64];
            let mut byte = [0u8; 1];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { zeroed() };
            msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctrl.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 64]>() as _;
            // SAFETY: `msg` points at live buffers of the sizes it declares.
            let r = unsafe {
                libc::recvmsg(self.fd(), &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
            };
            if r < 0 {
                break;
            }
            // SAFETY: walking the control messages the kernel wrote into `ctrl`.
            let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
            while !c.is_null() {
                // SAFETY: `c` is a control message header inside `ctrl`.
                let h = unsafe { &*c };
                if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_RECVERR {
                    // SAFETY: an IP_RECVERR message carries a sock_extended_err,
                    // possibly unaligned.
                    let e: libc::sock_extended_err =
                        unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
                    if e.ee_origin == libc::SO_EE_ORIGIN_ICMP
                        && e.ee_errno == libc::ECONNREFUSED as u32
                        && name.sin_family == libc::AF_INET as libc::sa_family_t
                    {
                        out.push(from_sockaddr(&name));
                    }
                }
                // SAFETY: as above.
                c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
            }
        }
        out
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The descriptor, to wait on with poll/epoll (readable when datagrams wait).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends each `(destination, payload)` as one datagram, in batches; returns
    /// how many went out (fewer when the socket buffer is full: the rest may be
    /// retried). A datagram larger than the path MTU fails the call with
    /// `EMSGSIZE` (DF is set): RoCE segments by the path MTU before sending.
    pub fn send_batch(&self, msgs: &[(SocketAddr, &[u8])]) -> Result<usize> {
        let mut sent = 0;
        let none: (SocketAddr, &[&[u8]]) = (SocketAddr::from(([0, 0, 0, 0], 0)), &[]);
        let mut one = [none; SEND_BATCH];
        for chunk in msgs.chunks(SEND_BATCH) {
            for (o, (to, d)) in one.iter_mut().zip(chunk) {
                *o = (*to, std::slice::from_ref(d));
            }
            let k = self.send_segmented(&one[..chunk.len()])?;
            sent += k;
            if k < chunk.len() {
                break;
            }
        }
        Ok(sent)
    }

    /// Asks the kernel to hand over trains of datagrams that arrive together (from
    /// one GSO send) in one piece (`UDP_GRO`); returns whether it will. A batch
    /// for such a socket needs slots of [`GRO_SLOT`] bytes, and its reader must
    /// split each [`Datagram`] into its [`Datagram::segments`].
    pub fn enable_gro(&self) -> bool {
        set_int(self.fd(), libc::SOL_UDP, libc::UDP_GRO, 1, "UDP_GRO").is_ok()
    }

    /// Sends each `(destination, segments)` as one UDP GSO send: the kernel turns
    /// it into one datagram per segment, with IPv4 identifications 0, 1, ... in
    /// order. Every segment but the last must have the first one's length, the
    /// last may be shorter; at most [`GSO_MAX_SEGMENTS`] of them and
    /// [`MAX_IPV4_PAYLOAD`] bytes together. A single segment is a plain datagram.
    /// Returns how many sends went out, as [`UdpSocket::send_batch`].
    ///
    /// Fails with [`Error::Unsupported`] when the kernel refuses segmentation
    /// (before Linux 4.18, or no checksum offload on the way): send one datagram
    /// at a time then.
    pub fn send_segmented(&self, msgs: &[(SocketAddr, &[&[u8]])]) -> Result<usize> {
        const CMSG: usize = 4; // u64 words: CMSG_SPACE(2) is 24 bytes
        let mut sent = 0;
        // SAFETY: all-zero iovecs are valid, filled below.
        let mut inline: [libc::iovec; SEND_BATCH] = unsafe { zeroed() };
        let mut spill: Vec<libc::iovec> = Vec::new();
        for chunk in msgs.chunks(SEND_BATCH) {
            let mut addrs = [to_sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); SEND_BATCH];
            let mut ctrl = [[0u64; CMSG]; SEND_BATCH];
            // SAFETY: all-zero mmsghdrs are valid, filled below.
            let mut hdrs: [libc::mmsghdr; SEND_BATCH] = unsafe { zeroed() };
            // One iovec per segment: on the stack unless trains need more.
            let niov: usize = chunk.iter().map(|m| m.1.len()).sum();
            let iovs: &mut [libc::iovec] = if niov <= SEND_BATCH {
                &mut inline[..niov]
            } else {
                // SAFETY: as above.
                spill.resize(niov, unsafe { zeroed() });
                &mut spill[..]
            };
            let mut at = 0;
            for (dst, segs) in chunk {
                let first = segs.first().map_or(0, |s| s.len());
                let total: usize = segs.iter().map(|s| s.len()).sum();
                let shape_ok = segs.split_last().is_some_and(|(last, rest)| {
                    rest.iter().all(|s| s.len() == first) && last.len() <= first
                });
                // One segment is a plain datagram: any length, even none.
                if !shape_ok
                    || (first == 0 && segs.len() > 1)
                    || segs.len() > GSO_MAX_SEGMENTS
                    || total > MAX_IPV4_PAYLOAD
                {
                    return Err(Error::Malformed {
                        what: "UDP GSO send",
                        reason: "segments of unequal length, too many or too long",
                    });
                }
                v4(*dst, "IPv6 destinations")?;
                for (v, d) in iovs[at..].iter_mut().zip(segs.iter()) {
                    *v = libc::iovec {
                        iov_base: d.as_ptr() as *mut libc::c_void,
                        iov_len: d.len(),
                    };
                }
                at += segs.len();
            }
            at = 0;
            for (i, (dst, segs)) in chunk.iter().enumerate() {
                addrs[i] = to_sockaddr(v4(*dst, "IPv6 destinations")?);
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = iovs[at..].as_mut_ptr();
                h.msg_iovlen = segs.len();
                at += segs.len();
                if segs.len() > 1 {
                    h.msg_control = ctrl[i].as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE is a pure computation.
                    h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                    // SAFETY: the control buffer holds CMSG_SPACE(2) bytes,
                    // aligned for cmsghdr; the macros stay inside it.
                    unsafe {
                        let c = libc::CMSG_FIRSTHDR(h);
                        (*c).cmsg_level = libc::SOL_UDP;
                        (*c).cmsg_type = libc::UDP_SEGMENT;
                        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                        std::ptr::write_unaligned(
                            libc::CMSG_DATA(c).cast::<u16>(),
                            segs[0].len() as u16,
                        );
                    }
                }
            }
            // SAFETY: `hdrs[..n]` point at live addresses, iovecs, control
            // buffers and payloads.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd(),
                    hdrs.as_mut_ptr(),
                    chunk.len() as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    return Ok(sent);
                }
                let refused = matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                );
                if refused && chunk[0].1.len() > 1 {
                    return Err(Error::Unsupported {
                        backend: "udp",
                        op: "UDP segmentation offload",
                    });
                }
                return Err(Error::Sys {
                    op: "sendmmsg",
                    source: e,
                });
            }
            sent += r as usize;
            if (r as usize) < chunk.len() {
                return Ok(sent);
            }
        }
        Ok(sent)
    }

    /// Receives what is waiting (up to the batch's capacity) into `batch`;
    /// returns how many datagrams (0 when none waits).
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> Result<usize> {
        let n = batch.slots;
        batch.prepare();
        // SAFETY: every mmsghdr points at live buffers, names and control
        // buffers of `batch`, sized as declared.
        let r = unsafe {
            libc::recvmmsg(
                self.fd(),
                batch.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                batch.len = 0;
                return Ok(0);
            }
            return Err(Error::Sys {
                op: "recvmmsg",
                source: e,
            });
        }
        batch.len = r as usize;
        batch.local_port = self.local.port();
        Ok(batch.len)
    }
}

/// One received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Its payload.
    pub data: &'a [u8],
    /// Who sent it.
    pub src: SocketAddr,
    /// The address it was sent to (from `IP_PKTINFO`).
    pub dst: SocketAddr,
    /// True if it did not fit the buffer and was cut.
    pub truncated: bool,
    /// Length of each datagram of a train received in one piece (`UDP_GRO`),
    /// the last one may be shorter; `data.len()` for a single datagram.
    pub segment: usize,
}

impl<'a> Datagram<'a> {
    /// The datagrams this piece holds: one, or the train that a GSO send made.
    pub fn segments(&self) -> std::slice::Chunks<'a, u8> {
        self.data.chunks(self.segment.max(1))
    }
}

/// Slot size that a [`RecvBatch`] needs for a socket with `UDP_GRO` on: the
/// kernel joins datagrams up to 64 KiB.
pub const GRO_SLOT: usize = 65536;

/// Buffers for [`UdpSocket::recv_batch`]: `slots` datagrams of up to `size` bytes.
pub struct RecvBatch {
    slots: usize,
    size: usize,
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; 8]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
    local_port: u16,
}

// SAFETY: the raw pointers in the message headers point into the batch's own
// heap buffers (which move with it) and are rewritten before every use.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.slots)
            .field("size", &self.size)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Room for `slots` datagrams of `size` bytes each.
    pub fn new(slots: usize, size: usize) -> RecvBatch {
        let slots = slots.max(1);
        RecvBatch {
            slots,
            size,
            bufs: vec![0; slots * size],
            // SAFETY: all-zero sockaddr_in, iovec and mmsghdr values are valid.
            names: vec![unsafe { zeroed() }; slots],
            ctrl: vec![[0; 8]; slots],
            // SAFETY: as above.
            iovs: vec![unsafe { zeroed() }; slots],
            // SAFETY: as above.
            hdrs: vec![unsafe { zeroed() }; slots],
            len: 0,
            local_port: 0,
        }
    }

    fn prepare(&mut self) {
        for i in 0..self.slots {
            self.iovs[i] = libc::iovec {
                // SAFETY: inside `bufs`.
                iov_base: unsafe { self.bufs.as_mut_ptr().add(i * self.size) }.cast(),
                iov_len: self.size,
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = size_of::<[u64; 8]>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }

    /// Datagrams received by the last call.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the last call received nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i` of the last call (`i < len()`).
    pub fn get(&self, i: usize) -> Datagram<'_> {
        assert!(i < self.len, "datagram {i} of {}", self.len);
        let h = &self.hdrs[i];
        let n = (h.msg_len as usize).min(self.size);
        let mut dst = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, self.local_port));
        let mut segment = n;
        // Walk the control messages for IP_PKTINFO.
        let mh = &h.msg_hdr;
        // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the
        // CMSG macros stay inside it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                    let info =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                    dst = SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()),
                        self.local_port,
                    ));
                } else if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
                    if size > 0 {
                        segment = size as usize;
                    }
                }
                c = libc::CMSG_NXTHDR(mh, c);
            }
        }
        Datagram {
            data: &self.bufs[i * self.size..i * self.size + n],
            src: from_sockaddr(&self.names[i]),
            dst,
            truncated: mh.msg_flags & libc::MSG_TRUNC != 0,
            segment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roce::icrc::IpUdp;
    use crate::roce::wire::{Bth, Opcode, Packet, Psn, Qpn};

    fn recv_all(
        s: &UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddr, SocketAddr)> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while out.len() < want {
            let n = s.recv_batch(batch).unwrap();
            for i in 0..n {
                let d = batch.get(i);
                out.push((d.data.to_vec(), d.src, d.dst));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {want}",
                out.len()
            );
        }
        out
    }

    #[test]
    fn batches_arrive_with_their_addresses_and_icrcs_verify() {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // A wildcard bind: the destination comes from IP_PKTINFO.
        let b = UdpSocket::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let bdst: SocketAddr = format!("127.0.0.1:{}", b.local_addr().port())
            .parse()
            .unwrap();
        // RoCE packets encoded with the headers the kernel will put around them.
        let hdrs = IpUdp::new(a.local_addr(), bdst);
        let bufs: Vec<Vec<u8>> = (0..100u32)
            .map(|k| {
                let mut p = Packet::new(Bth::new(
                    Opcode::SendOnly,
                    Qpn::new(3).unwrap(),
                    Psn::new(k),
                ));
                let body = vec![k as u8; (k as usize * 13) % 1000];
                p.payload = &body;
                let mut buf = vec![0u8; 1100];
                let n = p.encode(&hdrs, &mut buf).unwrap();
                buf.truncate(n);
                buf
            })
            .collect();
        let msgs: Vec<(SocketAddr, &[u8])> = bufs.iter().map(|b| (bdst, &b[..])).collect();
        let mut sent = 0;
        while sent < msgs.len() {
            sent += a.send_batch(&msgs[sent..]).unwrap();
        }
        let mut batch = RecvBatch::new(16, 2048);
        let got = recv_all(&b, &mut batch, 100);
        for (k, (data, src, dst)) in got.iter().enumerate() {
            assert_eq!((*src, *dst), (a.local_addr(), bdst));
            let h = IpUdp::new(*src, *dst);
            let p =
                Packet::decode(&h, data).expect("the ICRC verifies with the kernel's real headers");
            assert_eq!(p.bth.psn.get(), k as u32);
        }
    }

    #[test]
    fn the_receive_buffer_is_large_and_a_closed_port_is_reported() {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // Forced to the full size with CAP_NET_ADMIN (the kernel doubles it); at
        // least the system's limit otherwise.
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // CAP_NET_ADMIN (bit 12) among the effective capabilities.
        let net_admin = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("CapEff:"))?;
                u64::from_str_radix(l["CapEff:".len()..].trim(), 16).ok()
            })
            .is_some_and(|c| c & (1 << 12) != 0);
        let want = if net_admin {
            2 * RECV_BUFFER as usize
        } else {
            (2 * rmem_max).min(2 * RECV_BUFFER as usize)
        };
        assert!(a.recv_buffer() >= want, "{} < {want}", a.recv_buffer());
        // A peer that went away: its port answers "unreachable".
        let gone = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = gone.local_addr();
        drop(gone);
        assert!(a.enable_errors());
        assert!(a.take_refused().is_empty());
        a.send_batch(&[(to, &b"anyone?"[..])]).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            got = a.take_refused();
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, [to]);
    }

    #[test]
    fn oversized_datagrams_are_refused_not_fragmented() {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let big = vec![0u8; 70_000];
        assert!(a.send_batch(&[(a.local_addr(), &big[..])]).is_err());
        assert!(matches!(
            UdpSocket::bind("[::1]:0".parse().unwrap()),
            Err(Error::Unsupported { .. })
        ));
    }

    /// A GSO send of equal segments and a shorter last one arrives as those
    /// datagrams, in one piece at a GRO socket and one by one at another.
    #[test]
    fn gso_trains_arrive_whole_with_gro_and_split_without() {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let whole = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let split = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(whole.enable_gro());
        let segs: Vec<Vec<u8>> = (0..10u8)
            .map(|k| vec![k; if k == 9 { 333 } else { 1000 }])
            .collect();
        let refs: Vec<&[u8]> = segs.iter().map(|v| &v[..]).collect();
        let sent = a
            .send_segmented(&[
                (whole.local_addr(), &refs[..]),
                (split.local_addr(), &refs[..]),
                (split.local_addr(), &refs[..1]),
            ])
            .unwrap();
        assert_eq!(sent, 3);
        let mut big = RecvBatch::new(4, GRO_SLOT);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 10 {
            for i in 0..whole.recv_batch(&mut big).unwrap() {
                let d = big.get(i);
                if got.is_empty() {
                    // Loopback keeps the train whole.
                    assert_eq!((d.data.len(), d.segment), (9333, 1000));
                }
                got.extend(d.segments().map(<[u8]>::to_vec));
            }
            assert!(std::time::Instant::now() < deadline);
        }
        assert_eq!(got, segs);
        let mut small = RecvBatch::new(16, 2048);
        let one = recv_all(&split, &mut small, 11);
        let datagrams: Vec<Vec<u8>> = one.into_iter().map(|(d, _, _)| d).collect();
        assert_eq!(datagrams[..10], segs[..]);
        assert_eq!(datagrams[10], segs[0]);
    }

    #[test]
    fn gso_sends_of_the_wrong_shape_are_refused() {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = a.local_addr();
        let x = [0u8; 1000];
        let y = [0u8; 1001];
        let bad: [&[&[u8]]; 4] = [
            &[&x[..], &y[..]],           // last longer
            &[&x[..], &x[..10], &x[..]], // short one in the middle
            &[],
            &[&x[..0], &x[..0]],
        ];
        for segs in bad {
            assert!(matches!(
                a.send_segmented(&[(to, segs)]),
                Err(Error::Malformed { .. })
            ));
        }
        let many: Vec<&[u8]> = (0..GSO_MAX_SEGMENTS + 1).map(|_| &x[..10]).collect();
        assert!(a.send_segmented(&[(to, &many[..])]).is_err());
        let long: Vec<&[u8]> = (0..66).map(|_| &x[..]).collect();
        assert!(a.send_segmented(&[(to, &long[..])]).is_err());
    }
}
