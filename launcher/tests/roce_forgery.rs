//! Issue 16, item 11, as an attacker on the host does it: a soft-RoCE job on
//! the loopback (`--transports roce`, so that its ranks talk RoCEv2 over UDP)
//! while a packet socket watches the traffic and, for every message packet it
//! sees, sends copies renumbered to the next PSNs, with the payload changed and
//! the ICRC recomputed: from a port of its own, and with the sender's own
//! address and port (a raw socket). The job must finish with the right result.
//!
//! Needs root (a packet socket and a raw socket) and the examples built
//! (`cargo build --examples -p dos`); skipped otherwise.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dos_transport::roce::icrc::{icrc, IpUdp, ICRC_LEN};

#[test]
fn a_roce_job_survives_forged_packets() {
    let ring = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/examples/ring");
    if !ring.exists() {
        eprintln!("skipped: build the examples first (cargo build --examples -p dos)");
        return;
    }
    // The job, the capture and the forgeries live in a network namespace of
    // their own (this thread's, which its children and threads inherit), so
    // that the attacker sees and hits nothing but this job.
    let worker = std::thread::spawn(move || {
        // SAFETY: moves this thread alone into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err("cannot make a network namespace (not root)");
        }
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            return Err("cannot bring the namespace's loopback up");
        }
        let cap = capture_socket().ok_or("no packet socket")?;
        // SAFETY: plain system call; closed by the attacker thread.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        let stop = Arc::new(AtomicBool::new(false));
        let attacker = {
            let stop = stop.clone();
            std::thread::spawn(move || attack(cap, raw, &stop))
        };
        let mut c = common::dosrun();
        // Authentication is the default; say so, so that the environment
        // cannot turn it off (with DOS_ROCE_AUTH=0 this job fails: the packets
        // spoofed with the sender's address get through).
        c.env("DOS_ROCE_AUTH", "1")
            .args(["-n", "3", "--transports", "roce", "--timeout", "120"])
            .arg(&ring)
            .arg("300");
        let run = common::run_with(&mut c, b"", Duration::from_secs(150));
        stop.store(true, Ordering::Release);
        let (plain, spoofed) = attacker.join().unwrap();
        Ok((run, plain, spoofed))
    });
    let (run, plain, spoofed) = match worker.join().unwrap() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    eprintln!("forged {plain} packets from another port, {spoofed} with the sender's address");
    assert_eq!(run.code(), 0, "{run:?}");
    assert!(run.stdout.contains("laps on 3 ranks OK"), "{run:?}");
    assert!(plain > 100, "the attacker saw too little traffic: {plain}");
}

/// Forges from what `cap` captures until `stop`; returns how many packets it
/// sent from its own port and with a spoofed source. Bounded: at most 20 000.
fn attack(cap: i32, raw: i32, stop: &AtomicBool) -> (u32, u32) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    let (mut plain, mut spoofed) = (0u32, 0u32);
    while !stop.load(Ordering::Acquire) && plain < 10_000 {
        let Some((id, from, to, pkt)) = capture_udp(cap, &mut buf) else {
            continue;
        };
        // Our own spoofed packets (identification 1) we leave alone; what we
        // take for RoCE: a SEND opcode, transport version 0, default P_Key.
        if id != 0
            || pkt.len() < 24
            || pkt.len() % 4 != 0
            || !matches!(pkt[0], 0x00..=0x05)
            || pkt[1] & 0x0F != 0
            || pkt[2..4] != [0xFF, 0xFF]
            || from.port() == stranger.port()
        {
            continue;
        }
        let psn = u32::from_be_bytes([0, pkt[9], pkt[10], pkt[11]]);
        for k in 1..=2u32 {
            let mut f = pkt.clone();
            f[9..12].copy_from_slice(&((psn + k) & 0xFF_FFFF).to_be_bytes()[1..]);
            let n = f.len() - ICRC_LEN;
            for x in &mut f[16..n.min(64)] {
                *x ^= 0x5A;
            }
            let c = icrc(&IpUdp::new(stranger, to.into()), &f[..n]).unwrap();
            f[n..].copy_from_slice(&c.to_le_bytes());
            if sock.send_to(&f, to).is_ok() {
                plain += 1;
            }
            if raw >= 0 {
                let h = IpUdp {
                    ipv4_id: 1,
                    ..IpUdp::new(from.into(), to.into())
                };
                let c = icrc(&h, &f[..n]).unwrap();
                f[n..].copy_from_slice(&c.to_le_bytes());
                if send_spoofed(raw, from, to, &f) {
                    spoofed += 1;
                }
            }
        }
    }
    // SAFETY: closing the descriptors this thread owns.
    unsafe {
        libc::close(cap);
        if raw >= 0 {
            libc::close(raw);
        }
    }
    (plain, spoofed)
}

/// A packet socket on the loopback that reads IPv4 packets (20 ms timeout),
/// or `None` without the right to open one.
fn capture_socket() -> Option<i32> {
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
fn capture_udp(fd: i32, buf: &mut [u8]) -> Option<(u16, SocketAddrV4, SocketAddrV4, Vec<u8>)> {
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
fn send_spoofed(fd: i32, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> bool {
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
