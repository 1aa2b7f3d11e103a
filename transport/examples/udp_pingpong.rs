//! A raw UDP ping-pong: the baseline for the soft-RoCE's latency (what the
//! kernel's UDP path costs between two hosts, with nothing on top).
//!
//! ```text
//! udp_pingpong serve ADDR:PORT           # echoes datagrams for 60 s of silence at most
//! udp_pingpong ADDR:PORT [ITERS]         # one-way latency (half the round trip), µs
//! udp_pingpong sink ADDR:PORT            # counts a blast's datagrams, prints MB/s
//! udp_pingpong blast ADDR:PORT SIZE      # sends SIZE-byte datagrams for 2 s
//! udp_pingpong sink-gro ADDR:PORT        # the sink, with UDP GRO
//! udp_pingpong blast-gso ADDR:PORT SIZE  # the blast, in GSO trains of 64 KiB
//! ```
//!
//! Both sides busy-poll a non-blocking socket (like the spinning raw TCP
//! ping-pong of `dosbench raw-tcp`), sizes 8 B to 1 KiB (one datagram each).
//! Prints `udp_pingpong SIZE LATENCY_US` lines. The blast sends batches of 32
//! datagrams (sendmmsg) as fast as the socket takes them; the sink reads
//! batches of 32 (recvmmsg) and prints `udp_sink SIZE MB/s DATAGRAMS/s` of
//! what arrived (no flow control: what the sink cannot take is lost, as for
//! any UDP sender), the raw ceiling of a datagram transport on this path.
//! The GSO blast sends the same datagrams in trains of up to 64 KiB (one
//! `UDP_SEGMENT` send each, 32 per sendmmsg) and the GRO sink takes trains
//! whole: the ceiling for a datagram transport that uses both, as the
//! soft-RoCE does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dos_transport::roce::udp::{RecvBatch, UdpSocket};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| {
        eprintln!("udp_pingpong: {s:?} is not IP:PORT");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut batch = RecvBatch::new(1, 2048);
    match args.as_slice() {
        [mode, a] if mode == "serve" => {
            let s = UdpSocket::bind(addr(a)).expect("bind");
            let mut last = Instant::now();
            while last.elapsed() < Duration::from_secs(60) {
                if s.recv_batch(&mut batch).expect("recv") == 1 {
                    let d = batch.get(0);
                    if d.data == b"bye" {
                        return;
                    }
                    let (to, data) = (d.src, d.data.to_vec());
                    while s.send_batch(&[(to, &data[..])]).expect("send") == 0 {}
                    last = Instant::now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        [mode, a] if mode == "sink" || mode == "sink-gro" => {
            let s = UdpSocket::bind(addr(a)).expect("bind");
            if mode == "sink-gro" {
                assert!(s.enable_gro(), "UDP_GRO refused");
            }
            let mut batch = RecvBatch::new(32, 65536);
            let (mut bytes, mut n, mut size) = (0u64, 0u64, 0usize);
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            while last.elapsed() < Duration::from_secs(if first.is_some() { 1 } else { 60 }) {
                let k = s.recv_batch(&mut batch).expect("recv");
                if k == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                last = Instant::now();
                first.get_or_insert(last);
                for i in 0..k {
                    for d in batch.get(i).segments() {
                        size = d.len();
                        bytes += size as u64;
                        n += 1;
                    }
                }
            }
            let secs = first.map_or(1.0, |f| (last - f).as_secs_f64().max(1e-6));
            println!(
                "udp_sink {size} {:.1} {:.0}",
                bytes as f64 / secs / 1e6,
                n as f64 / secs
            );
        }
        [mode, a, size] if mode == "blast" => {
            let to = addr(a);
            let size: usize = size.parse().expect("SIZE");
            let s = UdpSocket::bind(SocketAddr::new(local_for(to.ip()), 0)).expect("bind");
            let msg = vec![7u8; size];
            let batch: Vec<(SocketAddr, &[u8])> = (0..32).map(|_| (to, &msg[..])).collect();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(2) {
                let _ = s.send_batch(&batch);
            }
        }
        [mode, a, size] if mode == "blast-gso" => {
            let to = addr(a);
            let size: usize = size.parse().expect("SIZE");
            let s = UdpSocket::bind(SocketAddr::new(local_for(to.ip()), 0)).expect("bind");
            let msg = vec![7u8; size];
            let per = (65507 / size).clamp(1, 64);
            let train: Vec<&[u8]> = (0..per).map(|_| &msg[..]).collect();
            let batch: Vec<(SocketAddr, &[&[u8]])> = (0..32).map(|_| (to, &train[..])).collect();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(2) {
                let _ = s.send_segmented(&batch);
            }
        }
        [a, rest @ ..] => {
            let to = addr(a);
            let iters: usize = rest.first().and_then(|v| v.parse().ok()).unwrap_or(20_000);
            let s = UdpSocket::bind("0.0.0.0:0".parse().unwrap()).expect("bind");
            let ip = to.ip();
            let s = if ip.is_loopback() {
                s
            } else {
                UdpSocket::bind(SocketAddr::new(local_for(ip), 0)).unwrap_or(s)
            };
            for size in [8usize, 64, 256, 1024] {
                let msg = vec![7u8; size];
                let mut total = Duration::ZERO;
                for i in 0..iters + iters / 10 {
                    let t = Instant::now();
                    while s.send_batch(&[(to, &msg[..])]).expect("send") == 0 {}
                    let until = Instant::now() + Duration::from_secs(1);
                    loop {
                        if s.recv_batch(&mut batch).expect("recv") == 1 {
                            break;
                        }
                        if Instant::now() > until {
                            eprintln!("udp_pingpong: no echo (lost datagram?); retrying");
                            while s.send_batch(&[(to, &msg[..])]).expect("send") == 0 {}
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    if i >= iters / 10 {
                        total += t.elapsed();
                    }
                }
                println!(
                    "udp_pingpong {size} {:.2}",
                    total.as_secs_f64() * 1e6 / iters as f64 / 2.0
                );
            }
            let _ = s.send_batch(&[(to, &b"bye"[..])]);
        }
        _ => {
            eprintln!("usage: udp_pingpong serve ADDR:PORT | udp_pingpong ADDR:PORT [ITERS]");
            std::process::exit(2)
        }
    }
}

/// This host's address on the way to `peer` (the wildcard works for sending,
/// but a fixed source keeps the measurement like the real transport's).
fn local_for(peer: std::net::IpAddr) -> std::net::IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("probe socket");
    // connect() on UDP sends nothing; it only picks the route and source.
    probe.connect((peer, 9)).expect("route");
    probe.local_addr().expect("local address").ip()
}
