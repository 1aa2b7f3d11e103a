//! The transport contract over the soft-RoCE backend: endpoints on 127.0.0.1
//! talking RoCEv2 over UDP through the reliability engine.

use dos_transport::auth::Secret;
use dos_transport::contract;
use dos_transport::roce::iface::{PreparedRoce, RoceIface};

fn make(n: usize) -> Vec<RoceIface> {
    let secret = Secret::generate().unwrap();
    let preps: Vec<PreparedRoce> = (0..n)
        .map(|i| RoceIface::prepare(i, n, "127.0.0.1".parse().unwrap(), &secret).unwrap())
        .collect();
    let addrs: Vec<Vec<u8>> = preps.iter().map(|p| p.address()).collect();
    preps
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let a: Vec<Option<Vec<u8>>> =
                (0..n).map(|j| (j != i).then(|| addrs[j].clone())).collect();
            p.connect(&a).unwrap()
        })
        .collect()
}

#[test]
fn contract_roce() {
    contract::run_all(3, make);
}

/// The attack of issue 16 on live sockets: an attacker on the host watches the
/// traffic (a packet socket on the loopback), and for every message packet it
/// sees, sends copies renumbered to the next PSNs, with the payload changed
/// and the ICRC recomputed: from its own UDP port, and with the sender's own
/// address and port (a raw socket). Each message goes out only after the
/// forgeries for the one before it were sent, so that they arrive first. Every
/// message must still arrive exactly, and the forgeries show in the counters.
///
/// Needs CAP_NET_RAW (root, as CI runs); skipped otherwise.
#[test]
fn forged_packets_on_the_wire_change_nothing() {
    use dos_transport::roce::icrc::{icrc, IpUdp, ICRC_LEN};
    use dos_transport::{ActiveMessages, Event, Progress};
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    let Some(cap) = capture_socket() else {
        eprintln!("SKIPPED forged_packets_on_the_wire_change_nothing: no packet socket (not root)");
        return;
    };
    // SAFETY: plain system call; the descriptor is closed by the attacker thread.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    let secret = Secret::generate().unwrap();
    // One datagram per packet (no GSO trains), so that each capture is one packet.
    let preps: Vec<PreparedRoce> = (0..2)
        .map(|i| {
            RoceIface::prepare(i, 2, "127.0.0.1".parse().unwrap(), &secret)
                .unwrap()
                .with_segmentation(false)
        })
        .collect();
    let addrs: Vec<Vec<u8>> = preps.iter().map(|p| p.address()).collect();
    let mut eps: Vec<RoceIface> = preps
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let a: Vec<Option<Vec<u8>>> =
                (0..2).map(|j| (j != i).then(|| addrs[j].clone())).collect();
            p.connect(&a).unwrap()
        })
        .collect();
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let (from, to) = (a.local_addr(), b.local_addr());

    const N: u32 = 40;
    let stop = Arc::new(AtomicBool::new(false));
    let (forged_tx, forged_rx) = mpsc::channel::<u32>();
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let stranger = sock.local_addr().unwrap();
            let mut seen = std::collections::HashSet::new();
            let mut buf = vec![0u8; 65536];
            let (mut plain, mut spoofed) = (0u32, 0u32);
            // Bounded: two forgeries of each kind per message seen.
            while !stop.load(Ordering::Acquire) && seen.len() < 4 * N as usize {
                let Some((id, pkt)) = capture_udp(cap, &mut buf, from, to) else {
                    continue;
                };
                // Its own spoofed packets (identification 1) it leaves alone.
                if id != 0 {
                    continue;
                }
                // SEND_ONLY_WITH_IMMEDIATE: a message.
                if pkt.len() < 24 || pkt[0] != 0x05 {
                    continue;
                }
                let psn = u32::from_be_bytes([0, pkt[9], pkt[10], pkt[11]]);
                if !seen.insert(psn) {
                    continue;
                }
                for k in 1..=2u32 {
                    let mut f = pkt.clone();
                    f[9..12].copy_from_slice(&((psn + k) & 0xFF_FFFF).to_be_bytes()[1..]);
                    let n = f.len() - ICRC_LEN;
                    for x in &mut f[16..n.min(48)] {
                        *x ^= 0xFF;
                    }
                    let c = icrc(&IpUdp::new(stranger, to), &f[..n]).unwrap();
                    f[n..].copy_from_slice(&c.to_le_bytes());
                    if sock.send_to(&f, to).is_ok() {
                        plain += 1;
                    }
                    if raw >= 0 {
                        // The sender's own address and port; identification 1
                        // (the kernel would fill in a 0), DF.
                        let h = IpUdp {
                            ipv4_id: 1,
                            ..IpUdp::new(from, to)
                        };
                        let c = icrc(&h, &f[..n]).unwrap();
                        f[n..].copy_from_slice(&c.to_le_bytes());
                        if send_spoofed(raw, from, to, &f) {
                            spoofed += 1;
                        }
                    }
                }
                let _ = forged_tx.send(psn);
            }
            // SAFETY: closing the descriptors this thread owns.
            unsafe {
                libc::close(cap);
                if raw >= 0 {
                    libc::close(raw);
                }
            }
            (plain, spoofed)
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut forged_for = 0;
    for i in 0..N {
        let msg: Vec<u8> = (0..200u32).map(|k| (k * 7 + i * 13) as u8).collect();
        a.am_send(1, 9, &i.to_le_bytes(), &msg).unwrap();
        let mut got: Option<Vec<u8>> = None;
        while got.is_none() {
            a.progress(|_| {});
            b.progress(|ev| {
                if let Event::Am { id: 9, data, .. } = ev {
                    got.get_or_insert(data.to_vec());
                }
            });
            assert!(Instant::now() < deadline, "message {i} never arrived");
        }
        let got = got.unwrap();
        assert_eq!(&got[..4], &i.to_le_bytes(), "message {i}: wrong number");
        assert!(got[4..] == msg[..], "message {i}: corrupted");
        // The forgeries for the next PSNs go out before the next message.
        if forged_rx.recv_timeout(Duration::from_secs(2)).is_ok() {
            forged_for += 1;
        }
        // And arrive: b reads them before a sends again.
        let until = Instant::now() + Duration::from_millis(5);
        while Instant::now() < until {
            b.progress(|_| {});
        }
    }
    stop.store(true, Ordering::Release);
    let (plain, spoofed) = attacker.join().unwrap();
    let r = b.rejected();
    eprintln!(
        "forged after {forged_for} of {N} messages: {plain} from another port, \
         {spoofed} with the sender's address; rejected {r:?}"
    );
    assert!(forged_for > N / 2, "the attacker saw too little traffic");
    assert!(plain > 0 && r.wrong_source > 0, "{r:?}");
    if spoofed > 0 {
        assert!(r.bad_tag > 0, "{r:?}");
    }
}

/// A packet socket on the loopback that reads IPv4 packets, or `None` without
/// the right to open one.
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

/// The IPv4 identification and the UDP payload of the next captured packet from
/// `from` to `to`, if one comes within the socket's timeout.
fn capture_udp(
    fd: i32,
    buf: &mut [u8],
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
) -> Option<(u16, Vec<u8>)> {
    // SAFETY: reads into a live buffer of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let p = buf.get(..usize::try_from(n).ok()?)?;
    let ihl = usize::from(*p.first()? & 15) * 4;
    if p.len() < ihl + 8 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let (std::net::SocketAddr::V4(f), std::net::SocketAddr::V4(t)) = (from, to) else {
        return None;
    };
    let u = &p[ihl..];
    let ports = (
        u16::from_be_bytes([u[0], u[1]]),
        u16::from_be_bytes([u[2], u[3]]),
    );
    if p[12..16] != f.ip().octets() || p[16..20] != t.ip().octets() || ports != (f.port(), t.port())
    {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    Some((u16::from_be_bytes([p[4], p[5]]), u.get(8..len)?.to_vec()))
}

/// Sends `payload` in a UDP datagram that claims to come from `from`, through
/// the raw socket `fd` (IPv4 identification 1, DF, no UDP checksum).
fn send_spoofed(
    fd: i32,
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    payload: &[u8],
) -> bool {
    let (std::net::SocketAddr::V4(f), std::net::SocketAddr::V4(t)) = (from, to) else {
        return false;
    };
    let total = 20 + 8 + payload.len();
    let mut d = Vec::with_capacity(total);
    d.extend_from_slice(&[0x45, 0]);
    d.extend_from_slice(&(total as u16).to_be_bytes());
    d.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    d.extend_from_slice(&f.ip().octets());
    d.extend_from_slice(&t.ip().octets());
    d.extend_from_slice(&f.port().to_be_bytes());
    d.extend_from_slice(&t.port().to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    // SAFETY: an all-zero sockaddr_in is valid; we fill in family and address.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as u16;
    sin.sin_addr.s_addr = u32::from_ne_bytes(t.ip().octets());
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
