//! The transport contract over the soft-RoCE backend: endpoints on 127.0.0.1
//! talking RoCEv2 over UDP through the reliability engine.

mod forge;

use std::net::SocketAddr;

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

    let Some(cap) = forge::capture_socket() else {
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
                let Some((id, f, t, pkt)) = forge::capture_udp(cap, &mut buf) else {
                    continue;
                };
                if (SocketAddr::V4(f), SocketAddr::V4(t)) != (from, to) {
                    continue;
                }
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
                        if match (from, to) {
                            (SocketAddr::V4(a), SocketAddr::V4(b)) => {
                                forge::send_spoofed(raw, a, b, &f)
                            }
                            _ => false,
                        } {
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
