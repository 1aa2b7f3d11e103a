//! Packet-level tools of an attacker on the host, for the soft-RoCE forgery
//! tests (`transport/tests/roce.rs`, `launcher/tests/roce_forgery.rs`, which
//! include this file): a packet socket that sees the loopback's IPv4/UDP
//! traffic, and a raw socket that sends datagrams with any source address and
//! port. Root only.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

/// A packet socket on the loopback that reads IPv4 packets (20 ms timeout),
/// or `None` without the right to open one.
pub fn capture_socket() -> Option<i32> {
    // SAFETY: plain system calls on a descriptor we own; the sockaddr_ll is
    // zeroed and then filled in.
    unsafe {
        let proto = (libc::ETH_P_IP as u16).to_be();
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        );
        if fd < 0 {
            return None;
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = libc::if_nametoindex(c"lo".as_ptr()) as i32;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        if libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            libc::close(fd);
            return None;
        }
        Some(fd)
    }
}

/// The next captured UDP datagram over IPv4 within the socket's timeout: its
/// identification, source, destination and payload.
pub fn capture_udp(fd: i32, buf: &mut [u8]) -> Option<(u16, SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    // SAFETY: reads into a live buffer of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let p = buf.get(..usize::try_from(n).ok()?)?;
    let ihl = usize::from(*p.first()? & 15) * 4;
    if p.len() < ihl + 8 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    let u = &p[ihl..];
    let from = SocketAddrV4::new(ip(12), u16::from_be_bytes([u[0], u[1]]));
    let to = SocketAddrV4::new(ip(16), u16::from_be_bytes([u[2], u[3]]));
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    Some((
        u16::from_be_bytes([p[4], p[5]]),
        from,
        to,
        u.get(8..len)?.to_vec(),
    ))
}

/// Sends `payload` in a UDP datagram that claims to come from `from`, through
/// the raw socket `fd` (IPv4 identification 1, DF, no UDP checksum).
pub fn send_spoofed(fd: i32, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> bool {
    let total = 20 + 8 + payload.len();
    let mut d = Vec::with_capacity(total);
    d.extend_from_slice(&[0x45, 0]);
    d.extend_from_slice(&(total as u16).to_be_bytes());
    d.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    d.extend_from_slice(&from.ip().octets());
    d.extend_from_slice(&to.ip().octets());
    d.extend_from_slice(&from.port().to_be_bytes());
    d.extend_from_slice(&to.port().to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    // SAFETY: an all-zero sockaddr_in is valid; we fill in family and address.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as u16;
    sin.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
    // SAFETY: sends from a live buffer to a valid address.
    let n = unsafe {
        libc::sendto(
            fd,
            d.as_ptr().cast(),
            d.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    n == d.len() as isize
}
