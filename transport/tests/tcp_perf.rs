//! Rough loopback numbers for the tcp backend (`cargo test --release -p dos-transport
//! --test tcp_perf -- --ignored --nocapture`). Not a benchmark: the real comparison
//! against other MPI transports is `dosbench`'s.

use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use dos_transport::auth::Secret;
use dos_transport::tcp::TcpIface;
use dos_transport::{ActiveMessages, Error, Event, Progress};

fn pair() -> (TcpIface, TcpIface) {
    let s = Secret::generate().unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let a = TcpIface::prepare(0, 2, lo, &s).unwrap();
    let b = TcpIface::prepare(1, 2, lo, &s).unwrap();
    let addrs = vec![Some(a.address()), Some(b.address())];
    let a2 = addrs.clone();
    let h = thread::spawn(move || b.connect(&a2, Duration::from_secs(10)).unwrap());
    let a = a.connect(&addrs, Duration::from_secs(10)).unwrap();
    (a, h.join().unwrap())
}

/// Sends, retrying on Busy while counting what arrives.
fn send(t: &TcpIface, peer: usize, data: &[u8], seen: &mut usize) {
    loop {
        match t.am_send(peer, 1, &[], data) {
            Ok(()) => return,
            Err(Error::Busy { .. }) => {
                *seen += t.progress(|_| {});
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn recv_n(t: &TcpIface, n: usize, mut seen: usize) {
    while seen < n {
        seen += t.progress(|ev| assert!(matches!(ev, Event::Am { .. })));
    }
}

#[test]
#[ignore = "timing; run by hand in release mode"]
fn tcp_pingpong_and_stream() {
    let (mut a, mut b) = pair();
    for size in [8usize, 1024, 65536, 1 << 20] {
        let iters = if size >= 65536 { 500 } else { 20_000 };
        let data = vec![0u8; size];
        let d2 = data.clone();
        let (a2, b2) = (a, b);
        let echo = thread::spawn(move || {
            for _ in 0..iters {
                recv_n(&b2, 1, 0);
                let mut s = 0;
                send(&b2, 0, &d2, &mut s);
            }
            b2
        });
        let t0 = Instant::now();
        for _ in 0..iters {
            let mut s = 0;
            send(&a2, 1, &data, &mut s);
            recv_n(&a2, 1, s);
        }
        let lat = t0.elapsed() / (2 * iters as u32);
        let b3 = echo.join().unwrap();
        println!("size {size:>8}: half round trip {lat:>10.2?}");
        // Stream: a -> b, then one ack.
        let n = (256 << 20) / size.max(4096);
        let sink = thread::spawn(move || {
            recv_n(&b3, n, 0);
            let mut s = 0;
            send(&b3, 0, b"ack", &mut s);
            b3
        });
        let t0 = Instant::now();
        let mut seen = 0;
        for _ in 0..n {
            send(&a2, 1, &data, &mut seen);
        }
        recv_n(&a2, 1, seen);
        let el = t0.elapsed();
        let bw = (n * size) as f64 / el.as_secs_f64() / 1e6;
        println!("size {size:>8}: stream {bw:>9.1} MB/s");
        let b4 = sink.join().unwrap();
        (a, b) = (a2, b4);
    }
}
