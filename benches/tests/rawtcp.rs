//! The raw TCP baseline end to end on 127.0.0.1: in threads through the
//! library, and as two `dosbench` processes; and a server fed garbage stops
//! with an error (not a panic, not a hang).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dos_bench::rawtcp::{Client, Server, CONNECT_RETRY, HEADER_LEN, MAGIC};
use dos_bench::report::Outcome;
use dos_bench::sched::{Bench, Unit};
use dos_bench::suite::Options;
use dos_bench::{compare, Error};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `f` in a thread and fails the test if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(e) => panic!("no result within {limit:?} ({e})"),
    }
}

fn small_opts() -> Options {
    Options {
        min_size: Some(1),
        max_size: Some(16 << 10), // below and above the large-message threshold
        iters: Some(20),
        warmup: Some(2),
        window: 4,
    }
}

fn powers_of_two(lo: usize, hi: usize) -> Vec<usize> {
    (0..usize::BITS)
        .map(|k| 1usize << k)
        .filter(|&s| s >= lo && s <= hi)
        .collect()
}

fn check(o: &Outcome, bench: Bench, sizes: &[usize]) {
    assert_eq!(o.benchmark, bench);
    assert_eq!((o.implementation.as_str(), o.ranks), ("raw", 2));
    assert_eq!(o.unit, bench.unit());
    let got: Vec<usize> = o.rows.iter().map(|r| r.size).collect();
    assert_eq!(got, sizes, "{bench:?}");
    for r in &o.rows {
        assert!(
            r.avg.is_finite() && r.avg > 0.0 && r.min == r.avg && r.max == r.avg,
            "{bench:?} {r:?}"
        );
        assert!(r.iters >= 1);
    }
}

#[test]
fn client_and_server_in_threads() {
    within(LIMIT, || {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let served = thread::spawn(move || server.serve_one(Duration::from_secs(10)));
        let opts = small_opts();
        let mut client = Client::connect(&addr.to_string(), CONNECT_RETRY).unwrap();
        assert_eq!(client.peer_addr(), addr);
        let lat = client.latency(&opts).unwrap();
        let after_latency = client.requests();
        let bw = client.bw(&opts).unwrap();
        let (local, sent) = (client.local_addr(), client.requests());
        drop(client);
        let summary = served.join().unwrap().unwrap();
        let sizes = powers_of_two(1, 16 << 10);
        check(&lat, Bench::Latency, &sizes);
        check(&bw, Bench::Bw, &sizes);
        assert_eq!(lat.unit, Unit::Micros);
        assert_eq!(bw.unit, Unit::MBps);
        // Spin-up ping-pongs before each benchmark, then one ping-pong
        // request per size, one stream request per bw iteration.
        let plan = Bench::Bw.plan().with_overrides(opts.iters, opts.warmup);
        let streams: u64 = sizes
            .iter()
            .map(|&s| (plan.counts(s).iters + plan.counts(s).warmup) as u64)
            .sum();
        assert!(after_latency > sizes.len() as u64);
        assert!(sent > after_latency + streams);
        assert_eq!(summary.requests, sent);
        assert_eq!(summary.peer, local);
    });
}

#[test]
fn client_waits_for_a_late_server() {
    within(LIMIT, || {
        // A free port, released again for the server to take a little later.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let client = {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&addr, CONNECT_RETRY)?;
                c.latency(&Options {
                    max_size: Some(8),
                    iters: Some(5),
                    warmup: Some(0),
                    ..Options::default()
                })
            })
        };
        thread::sleep(Duration::from_millis(300));
        let server = Server::bind(&addr).unwrap();
        let summary = server.serve_one(Duration::from_secs(10)).unwrap();
        assert!(summary.requests > 4); // spin-up, then 1, 2, 4, 8 bytes
        check(
            &client.join().unwrap().unwrap(),
            Bench::Latency,
            &[1, 2, 4, 8],
        );
    });
}

#[test]
fn server_gives_up_without_a_client() {
    let t0 = Instant::now();
    let server = Server::bind("127.0.0.1:0").unwrap();
    let err = server.serve_one(Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn client_gives_up_without_a_server() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let err =
        Client::connect(&format!("127.0.0.1:{port}"), Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, Error::Socket { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// A `dosbench` process, killed if the test ends before it does.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Proc {
    /// Waits for the exit at most `limit`; returns the status and stderr.
    fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                t0.elapsed() < limit,
                "dosbench still running after {limit:?}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status, err)
    }
}

/// Starts `dosbench raw-tcp serve 127.0.0.1:0` and reads the port it took.
fn start_server() -> (Proc, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dosbench"))
        .args(["raw-tcp", "serve", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server did not say where it listens");
    let addr = line
        .trim()
        .strip_prefix("dosbench raw-tcp: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (proc, addr)
}

#[test]
fn two_processes_json_for_compare() {
    let (server, addr) = start_server();
    let client = Command::new(env!("CARGO_BIN_EXE_dosbench"))
        .args(["raw-tcp", &addr.to_string()])
        .args(["--max-size", "1K", "--iters", "10", "--warmup", "1"])
        .args(["--window", "4", "--json"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = Proc(client);
    let mut out = client.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let (status, err) = client.finish(LIMIT);
    assert!(status.success(), "client: {status}: {err}");
    let stdout = rx.recv_timeout(LIMIT).unwrap();
    let (status, err) = server.finish(LIMIT);
    assert!(status.success(), "server: {status}: {err}");
    assert!(err.contains("closed the connection"), "{err}");

    let outs: Vec<Outcome> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(outs.len(), 2, "{stdout}");
    let sizes = powers_of_two(1, 1024);
    check(&outs[0], Bench::Latency, &sizes);
    check(&outs[1], Bench::Bw, &sizes);
    let rows = compare::compare(&outs);
    assert_eq!(rows.len(), 2 * sizes.len());
    assert!(rows.iter().all(|c| c.raw.is_some() && c.dos.is_none()));
    assert!(compare::markdown(&rows)
        .lines()
        .next()
        .unwrap()
        .contains("| raw | dos/raw |"));
}

/// Sends `bytes` to a fresh server (then keeps the connection open, or
/// closes it) and expects it to stop with an error within a few seconds.
fn server_refuses(bytes: &[u8], close: bool, expect: &str) {
    let (server, addr) = start_server();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    if close {
        drop(s);
        let (status, err) = server.finish(Duration::from_secs(20));
        assert_refused(status, &err, expect);
    } else {
        let (status, err) = server.finish(Duration::from_secs(20));
        assert_refused(status, &err, expect);
        drop(s);
    }
}

fn assert_refused(status: ExitStatus, err: &str, expect: &str) {
    // 1 is `dosbench: <error>`; a panic would be 101, a signal no code.
    assert_eq!(status.code(), Some(1), "{status}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
}

#[test]
fn garbage_makes_the_server_fail() {
    server_refuses(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        false,
        "magic number",
    );
    // Well-formed but out of bounds: 128 MiB messages.
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = 1;
    h[8..16].copy_from_slice(&(128u64 << 20).to_le_bytes());
    h[16] = 1;
    server_refuses(&h, false, "message size");
    // An unknown operation.
    h[4] = 7;
    server_refuses(&h, false, "unknown operation 7");
    // Half a header, then the connection closes.
    server_refuses(&h[..10], true, "10 of 24 header bytes");
}
