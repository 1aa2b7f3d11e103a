//! The data path between clients and servers ([`dos_fs::shm`]): a client on
//! the server's node gets the Unix socket and data slots, one elsewhere
//! (another network namespace) TCP; the slot protocol's checks; clients
//! that die holding slots; restarted servers.
//!
//! The throughput comparison (TCP against slots, a server that does no I/O
//! against the real one) is ignored by default:
//!
//! ```text
//! cargo test --release -p dos-fs --test datapath -- --ignored throughput --nocapture
//! ```
//!
//! and the namespace test needs root and the namespace cluster:
//!
//! ```text
//! flock /tmp/dos-cluster.lock cargo test -p dos-fs --test datapath -- --ignored namespace
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::client::{Client, Conn, DataPath, Liveness};
use dos_fs::layout::LayoutSpec;
use dos_fs::meta::Attr;
use dos_fs::server::{Handler, Server, ServerConfig, Service};
use dos_fs::target::{FsId, Target};
use dos_fs::wire::{Reply, Request};
use dos_fs::Error;
use dos_transport::auth::Secret;

use common::{pattern, plain, serial, serve_process, start_with, Fs, Serve};

/// `n` servers in this process, each `wrap(service)`, listening on `host`,
/// each with its same-node socket.
fn start(tag: &str, n: u32, host: &str, wrap: impl Fn(Service) -> Arc<dyn Handler>) -> Fs {
    let fs = start_with(&format!("dp-{tag}"), n, host, ServerConfig::default(), wrap);
    assert!(fs.local_sockets.iter().all(|&l| l));
    fs
}

/// Mappings of slot regions in this process (client and server sides).
fn slot_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("dosfs-slots"))
        .count()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn write_read(c: &Client, path: &str, spec: LayoutSpec, data: &[u8]) -> Attr {
    let a = c.set_stripe(path, spec).unwrap();
    c.write_at(&a, 0, data).unwrap();
    c.sync(&a).unwrap();
    let a = c.stat(path).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_at(path, &a, 0, &mut back).unwrap();
    assert!(back == data, "{path}: bytes differ");
    a
}

#[test]
fn a_same_node_client_uses_slots_and_tcp_when_told_to() {
    let _g = serial();
    let fs = start("local", 3, "127.0.0.1", plain);
    let c = Client::new(&fs.addr);
    for s in 0..3 {
        assert_eq!(c.data_path(s).unwrap(), DataPath::Slots);
    }
    let data = pattern(5 << 20, 1);
    // 64 KiB pieces, 1 MiB pieces (one slot each), 4 MiB pieces (over a
    // slot: inline on the Unix socket).
    for (k, stripe) in [65536u32, 1 << 20, 4 << 20].into_iter().enumerate() {
        let spec = LayoutSpec {
            stripe_size: stripe,
            ..LayoutSpec::default()
        };
        write_read(&c, &format!("/f{k}"), spec, &data);
    }
    // A client that keeps off the same-node path reads the same bytes
    // over TCP.
    let mut tcp = Client::new(&fs.addr);
    tcp.local = false;
    assert_eq!(tcp.data_path(1).unwrap(), DataPath::Tcp);
    for k in 0..3 {
        let path = format!("/f{k}");
        let a = tcp.stat(&path).unwrap();
        let mut back = vec![0u8; data.len()];
        tcp.read_at(&path, &a, 0, &mut back).unwrap();
        assert!(back == data);
    }
    // No slots asked for: the Unix socket with data inline.
    let mut inline = Client::new(&fs.addr);
    inline.slots = 0;
    inline.window = 0;
    assert_eq!(inline.data_path(0).unwrap(), DataPath::Local);
    let a = inline.stat("/f1").unwrap();
    let mut back = vec![0u8; data.len()];
    inline.read_at("/f1", &a, 0, &mut back).unwrap();
    assert!(back == data);
}

/// A server of the same file-system id and index already holds the
/// same-node name (another secret: a stray server on the same targets): the
/// new one serves TCP only, and its clients do not talk to the stray one.
#[test]
fn a_stray_server_on_the_same_name_is_not_used() {
    let _g = serial();
    let stray = start("stray", 1, "127.0.0.1", plain);
    let dir = common::fresh_dir("dp-real");
    let t = Target::format(&dir.join("0"), stray.addr.fsid, 0, 1).unwrap();
    let secret = Secret::generate().unwrap();
    let srv = Server::bind(
        Service::open(&t).unwrap(),
        &stray.addr.fsid,
        secret.clone(),
        "127.0.0.1:0",
        ServerConfig::default(),
    )
    .unwrap();
    assert!(!srv.has_local_socket(), "the name is taken");
    let real = Fs {
        dir,
        addr: AddrFile {
            fsid: stray.addr.fsid,
            secret,
            servers: vec![ServerAddr {
                addr: srv.local_addr().unwrap().to_string(),
                pid: None,
            }],
        },
        local_sockets: vec![false],
    };
    std::thread::spawn(move || srv.serve());
    let c = Client::new(&real.addr);
    assert_eq!(c.data_path(0).unwrap(), DataPath::Tcp);
    write_read(&c, "/mine", LayoutSpec::default(), &pattern(100_000, 2));
    let s = Client::new(&stray.addr);
    assert!(matches!(s.stat("/mine"), Err(Error::NotFound { .. })));
}

/// A stopped server frees its same-node name (its Unix accept loop ends
/// with the TCP one), so a server started again in the same process (as
/// `dosrun --fs` and the standing servers do) gets the same-node path.
#[test]
fn a_stopped_server_frees_its_name_for_the_next_one() {
    let _g = serial();
    let dir = common::fresh_dir("dp-again");
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let t = Target::format(&dir.join("0"), fsid, 0, 1).unwrap();
    for round in 0..2 {
        let srv = Server::bind(
            Service::open(&t).unwrap(),
            &fsid,
            secret.clone(),
            "127.0.0.1:0",
            ServerConfig::default(),
        )
        .unwrap();
        assert!(srv.has_local_socket(), "round {round}");
        let addr = srv.local_addr().unwrap();
        let stop = srv.stop_flag();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(srv.serve().is_ok()));
        let file = AddrFile {
            fsid,
            secret: secret.clone(),
            servers: vec![ServerAddr {
                addr: addr.to_string(),
                pid: None,
            }],
        };
        {
            let c = Client::new(&file);
            assert_eq!(c.data_path(0).unwrap(), DataPath::Slots);
            c.mkdir(&format!("/d{round}")).unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(addr);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "serve ends"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads wait `delay` first: a slot stays owned while one is in flight.
struct SlowReads {
    inner: Service,
    delay: Duration,
}

impl Handler for SlowReads {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn handle(&self, req: Request) -> Reply {
        if matches!(req, Request::Read { .. }) {
            std::thread::sleep(self.delay);
        }
        self.inner.handle(req)
    }
}

fn slow(s: Service) -> Arc<dyn Handler> {
    Arc::new(SlowReads {
        inner: s,
        delay: Duration::from_millis(300),
    })
}

fn raw_conn(fs: &Fs, local: Option<(u32, u32)>) -> Conn {
    Conn::connect_via(
        &fs.addr.servers[0].addr,
        0,
        &fs.addr.fsid,
        &fs.addr.secret,
        Duration::from_secs(10),
        Liveness::default(),
        local,
    )
    .unwrap()
}

fn protocol_error(r: Reply, what: &str) {
    match r {
        Reply::Error(e) => {
            let e = e.into_error(0);
            assert!(matches!(e, Error::Protocol { .. }), "{what}: {e}");
        }
        r => panic!("{what}: got {r:?}"),
    }
}

#[test]
fn bad_slot_numbers_lengths_and_owned_slots_are_typed_errors() {
    let _g = serial();
    let fs = start("bad", 1, "127.0.0.1", slow);
    let c = Client::new(&fs.addr);
    let spec = LayoutSpec {
        stripe_size: 8192,
        stripe_count: 1,
        first: 0,
    };
    let a = c.set_stripe("/f", spec).unwrap();
    let mut conn = raw_conn(&fs, Some((4, 4096)));
    assert_eq!(conn.data_path(), DataPath::Slots);
    let region = conn.slots().unwrap().clone();
    assert_eq!((region.count(), region.slot_size()), (4, 4096));
    let w = |slot, len| Request::WriteSlot {
        ino: a.ino,
        stripe: 0,
        stripe_size: 8192,
        offset: 0,
        len,
        slot,
    };
    let r = |slot, len| Request::ReadSlot {
        ino: a.ino,
        stripe: 0,
        stripe_size: 8192,
        offset: 0,
        len,
        slot,
    };
    for (req, what) in [
        (w(4, 10), "slot past the end"),
        (w(u32::MAX, 10), "slot u32::MAX"),
        (w(0, 4097), "longer than a slot"),
        (r(4, 10), "read: slot past the end"),
        (r(1, u32::MAX), "read: longer than a slot"),
    ] {
        let id = conn.next_id();
        conn.send(&req.encode(id)).unwrap();
        let (rid, rep) = conn.recv().unwrap();
        assert_eq!(rid, id);
        protocol_error(rep, what);
    }
    // A slot owned by a request in flight cannot be named again.
    region.put(2, b"0123456789").unwrap();
    assert_eq!(conn.call(&w(2, 10)).unwrap(), Reply::Ok);
    let first = conn.next_id();
    conn.send(&r(2, 10).encode(first)).unwrap();
    let second = conn.next_id();
    conn.send(&r(2, 10).encode(second)).unwrap();
    let (rid, rep) = conn.recv().unwrap();
    assert_eq!(rid, second, "the refusal comes before the slow read");
    protocol_error(rep, "slot owned");
    let (rid, rep) = conn.recv().unwrap();
    assert_eq!((rid, rep), (first, Reply::Ok));
    let mut back = [0u8; 10];
    region.get(2, &mut back).unwrap();
    assert_eq!(&back, b"0123456789");
    // Slot requests on TCP, and a second setup, are refused too; the
    // connection goes on.
    let mut tcp = raw_conn(&fs, None);
    assert_eq!(tcp.data_path(), DataPath::Tcp);
    let e = tcp.call(&w(0, 1)).unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "slots on TCP: {e}");
    assert_eq!(tcp.call(&Request::Statfs).map(|r| r.kind()).unwrap(), 0x84);
    assert!(matches!(
        conn.call(&Request::ShmSetup {
            slots: 1,
            slot_size: 4096
        }),
        Err(Error::Protocol { .. })
    ));
    assert_eq!(conn.call(&r(2, 10)).unwrap(), Reply::Ok);
}

#[test]
fn a_client_that_dies_holding_slots_frees_them_and_others_go_on() {
    let _g = serial();
    let fs = start("dies", 1, "127.0.0.1", slow);
    let c = Client::new(&fs.addr);
    let a = c
        .set_stripe(
            "/f",
            LayoutSpec {
                stripe_size: 8192,
                stripe_count: 1,
                first: 0,
            },
        )
        .unwrap();
    c.write_at(&a, 0, b"still here").unwrap();
    let before = slot_mappings();
    let mut conn = raw_conn(&fs, Some((8, 4096)));
    // Client and server each map the region.
    assert_eq!(slot_mappings(), before + 2);
    for slot in 0..8 {
        let id = conn.next_id();
        let req = Request::ReadSlot {
            ino: a.ino,
            stripe: 0,
            stripe_size: 8192,
            offset: 0,
            len: 10,
            slot,
        };
        conn.send(&req.encode(id)).unwrap();
    }
    // It goes away with every slot owned by a request in flight.
    drop(conn);
    wait_for("the server drops the region", || slot_mappings() == before);
    let mut back = [0u8; 10];
    c.read_at("/f", &a, 0, &mut back).unwrap();
    assert_eq!(&back, b"still here");
}

#[test]
fn a_restarted_server_gives_the_same_client_fresh_slots() {
    let _g = serial();
    let Some(bin) = common::dosfs_bin() else {
        return;
    };
    let dir = common::fresh_dir("dp-restart");
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let _cleanup = common::Cleanup(dir.clone());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let target = dir.join("0");
    let (child, addr) = serve_process(bin, &target, fsid, &secret, Serve::default());
    let mut server = Kill(child);
    let file = AddrFile {
        fsid,
        secret: secret.clone(),
        servers: vec![ServerAddr { addr, pid: None }],
    };
    let c = Client::new(&file);
    assert_eq!(c.data_path(0).unwrap(), DataPath::Slots);
    let data = pattern(3 << 20, 5);
    let spec = LayoutSpec {
        stripe_size: 1 << 20,
        ..LayoutSpec::default()
    };
    write_read(&c, "/f", spec, &data);
    let _ = server.0.kill();
    let _ = server.0.wait();
    let a = c.stat("/f").unwrap_err();
    assert!(matches!(a, Error::ServerDown { server: 0, .. }), "{a}");
    // Restarted on its target (on another TCP port: the same-node path is
    // found by the file system's id and the index, not the address).
    let (child, _addr) = serve_process(bin, &target, fsid, &secret, Serve::default());
    server = Kill(child);
    let a = c.stat("/f").unwrap();
    assert_eq!(c.data_path(0).unwrap(), DataPath::Slots);
    let mut back = vec![0u8; data.len()];
    c.read_at("/f", &a, 0, &mut back).unwrap();
    assert!(back == data, "synced bytes changed across the restart");
    drop(server);
}

/// Run by [`a_client_in_another_network_namespace_uses_tcp`] inside a
/// namespace host: writes and reads a file, prints the data path.
#[test]
fn namespace_child() {
    let Ok(addr) = std::env::var("DOSFS_DATAPATH_CHILD") else {
        return;
    };
    let c = Client::open(Some(Path::new(&addr))).unwrap();
    let data = pattern(3 << 20, 9);
    write_read(&c, "/from-ns", LayoutSpec::default(), &data);
    let paths: Vec<_> = (0..c.servers())
        .map(|s| format!("{:?}", c.data_path(s).unwrap()))
        .collect();
    println!("DATAPATH {}", paths.join(","));
}

/// A client in a namespace host of the cluster cannot reach the servers'
/// abstract sockets (they belong to the root namespace) and uses TCP; a
/// client next to the servers uses slots; both see the same bytes.
#[test]
#[ignore = "needs root and the namespace cluster (flock /tmp/dos-cluster.lock)"]
fn a_client_in_another_network_namespace_uses_tcp() {
    let _g = serial();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root");
        return;
    }
    let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/cluster.sh");
    let up = std::process::Command::new(&cluster)
        .args(["up", "1"])
        .output()
        .unwrap();
    struct Down(PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.0).arg("down").output();
        }
    }
    let _down = Down(cluster.clone());
    assert!(up.status.success(), "cluster.sh up 1: {up:?}");
    let fs = start("ns", 2, "198.18.0.254", plain);
    let addr_file = fs.dir.join("fs.addr");
    fs.addr.write(&addr_file).unwrap();
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", "dos-h1"])
        .arg(&me)
        .args([
            "--exact",
            "namespace_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DOSFS_DATAPATH_CHILD", &addr_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child: {out:?}");
    assert!(text.contains("DATAPATH Tcp,Tcp"), "{text}");
    let c = Client::new(&fs.addr);
    assert_eq!(c.data_path(0).unwrap(), DataPath::Slots);
    assert_eq!(c.data_path(1).unwrap(), DataPath::Slots);
    let a = c.stat("/from-ns").unwrap();
    let mut back = vec![0u8; 3 << 20];
    c.read_at("/from-ns", &a, 0, &mut back).unwrap();
    assert!(back == pattern(3 << 20, 9));
}

/// A handler that counts requests in flight (the queue depth a server
/// sees) and the time spent in data requests, around `inner` or around
/// nothing (no disk: writes dropped, reads of zeros).
struct Meter {
    inner: Service,
    null: bool,
    now: AtomicUsize,
    max: AtomicUsize,
    depth_sum: AtomicU64,
    data_reqs: AtomicU64,
    busy_ns: AtomicU64,
}

impl Handler for Meter {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn handle(&self, req: Request) -> Reply {
        let data = matches!(req, Request::Read { .. } | Request::Write { .. });
        if !data {
            return self.inner.handle(req);
        }
        let d = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(d, Ordering::SeqCst);
        self.depth_sum.fetch_add(d as u64, Ordering::Relaxed);
        self.data_reqs.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let r = match (self.null, req) {
            (true, Request::Read { len, .. }) => Reply::Data(vec![0; len as usize]),
            (true, _) => Reply::Ok,
            (false, req) => self.inner.handle(req),
        };
        self.busy_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

/// 2 writers x 64 MiB in 1 MiB calls to one file striped 1 MiB over 3
/// servers, sync, read back: TCP against slots, a null server against the
/// real one, alternating, medians of 3. Prints MiB/s and the queue depth
/// the servers saw.
#[test]
#[ignore = "a benchmark: cargo test --release -p dos-fs --test datapath -- --ignored throughput --nocapture"]
fn throughput() {
    let _g = serial();
    let block: usize = 64 << 20;
    let transfer: usize = std::env::var("DOSFS_TP_TRANSFER_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        << 20;
    let ranks = 2;
    for null in [true, false] {
        let meters: Arc<Mutex<Vec<Arc<Meter>>>> = Arc::default();
        let m2 = meters.clone();
        let fs = start(
            if null { "tp-null" } else { "tp" },
            3,
            "127.0.0.1",
            move |s| {
                let m = Arc::new(Meter {
                    inner: s,
                    null,
                    now: AtomicUsize::new(0),
                    max: AtomicUsize::new(0),
                    depth_sum: AtomicU64::new(0),
                    data_reqs: AtomicU64::new(0),
                    busy_ns: AtomicU64::new(0),
                });
                m2.lock().unwrap().push(m.clone());
                m
            },
        );
        /// Per path: name, write and read MiB/s per rep, mean depth, max depth.
        type Row = (&'static str, Vec<f64>, Vec<f64>, f64, usize);
        let mut results: Vec<Row> = Vec::new();
        for local in [false, true] {
            results.push((if local { "slots" } else { "tcp" }, vec![], vec![], 0.0, 0));
        }
        let data = pattern(block, 3);
        for rep in 0..3 {
            // Alternating which path goes first.
            let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let local = k == 1;
                for m in meters.lock().unwrap().iter() {
                    m.max.store(0, Ordering::SeqCst);
                    m.depth_sum.store(0, Ordering::SeqCst);
                    m.data_reqs.store(0, Ordering::SeqCst);
                }
                let mut c = Client::new(&fs.addr);
                c.local = local;
                if let Some(k) = std::env::var("DOSFS_TP_READ_PIECE_KIB")
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                {
                    c.read_piece = k << 10;
                }
                let c = &c;
                let path = format!("/f{rep}-{local}");
                let a = c.create(&path, None, true).unwrap();
                let a = &a;
                let t = Instant::now();
                std::thread::scope(|s| {
                    for r in 0..ranks {
                        let data = &data;
                        s.spawn(move || {
                            for i in 0..block / transfer {
                                let off = (r * block + i * transfer) as u64;
                                c.write_at(a, off, &data[i * transfer..(i + 1) * transfer])
                                    .unwrap();
                            }
                        });
                    }
                });
                let written = t.elapsed();
                c.sync(a).unwrap();
                let w = (ranks * block) as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
                eprintln!(
                    "  {}: writes {:.0} ms, sync {:.0} ms",
                    if local { "slots" } else { "tcp" },
                    written.as_secs_f64() * 1e3,
                    (t.elapsed() - written).as_secs_f64() * 1e3
                );
                if std::env::var_os("DOSFS_TP_DROP").is_some() {
                    // Cold reads (root): the page cache dropped.
                    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
                }
                let t = Instant::now();
                std::thread::scope(|s| {
                    for r in 0..ranks {
                        let data = &data;
                        let path = &path;
                        s.spawn(move || {
                            let mut buf = vec![0u8; transfer];
                            for i in 0..block / transfer {
                                let off = (r * block + i * transfer) as u64;
                                c.read_at(path, a, off, &mut buf).unwrap();
                                if !null {
                                    assert!(buf == data[i * transfer..(i + 1) * transfer]);
                                }
                            }
                        });
                    }
                });
                let rd = (ranks * block) as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
                let ms = meters.lock().unwrap();
                let reqs: u64 = ms.iter().map(|m| m.data_reqs.load(Ordering::SeqCst)).sum();
                let depth: u64 = ms.iter().map(|m| m.depth_sum.load(Ordering::SeqCst)).sum();
                let max = ms
                    .iter()
                    .map(|m| m.max.load(Ordering::SeqCst))
                    .max()
                    .unwrap_or(0);
                let e = &mut results[k];
                e.1.push(w);
                e.2.push(rd);
                e.3 = depth as f64 / reqs.max(1) as f64;
                e.4 = e.4.max(max);
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (name, mut w, mut r, depth, max) in results {
            println!(
                "server {:5} path {name:5}: write+sync {:7.0} MiB/s  read {:7.0} MiB/s  (mean depth per server {depth:.1}, max {max})",
                if null { "null" } else { "disk" },
                med(&mut w),
                med(&mut r)
            );
        }
    }
}

/// A handler that holds every write whose first byte is `slow_byte` for
/// `delay`, fails every write whose first byte is `bad_byte`, and counts
/// the writes in flight at once.
struct Writes {
    inner: Service,
    slow_byte: u8,
    bad_byte: u8,
    delay: Duration,
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Handler for Writes {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn handle(&self, req: Request) -> Reply {
        let first = match &req {
            Request::Write { data, .. } => data.first().copied(),
            _ => None,
        };
        let Some(first) = first else {
            return self.inner.handle(req);
        };
        let d = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(d, Ordering::SeqCst);
        if first == self.slow_byte {
            std::thread::sleep(self.delay);
        }
        let r = if first == self.bad_byte {
            Reply::Error(dos_fs::wire::WireError::from_error(&Error::InvalidLayout {
                reason: "test: this write fails".into(),
            }))
        } else {
            self.inner.handle(req)
        };
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

/// A client that writes behind with 16 in flight per server.
fn behind_client(fs: &Fs) -> Client {
    let mut c = Client::new(&fs.addr);
    c.behind_window = 16;
    c
}

fn writes_server(tag: &str, slow_byte: u8, bad_byte: u8) -> (Fs, Arc<Writes>) {
    let keep: Arc<Mutex<Option<Arc<Writes>>>> = Arc::default();
    let k = keep.clone();
    let fs = start(tag, 1, "127.0.0.1", move |s| {
        let w = Arc::new(Writes {
            inner: s,
            slow_byte,
            bad_byte,
            delay: Duration::from_millis(300),
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        });
        *k.lock().unwrap() = Some(w.clone());
        w
    });
    let w = keep.lock().unwrap().take().unwrap();
    (fs, w)
}

/// `write_behind` keeps several 1 MiB writes (one piece each) on the
/// server at once, where `write_at` has one: the queue depth of a caller
/// that writes a transfer at a time. All bytes read back after a flush.
#[test]
fn write_behind_keeps_several_writes_in_flight_and_lands_them_all() {
    let _s = serial();
    let (fs, w) = writes_server("behind", 7, 0xff);
    let c = behind_client(&fs);
    let a = c
        .set_stripe(
            "/wb",
            LayoutSpec {
                stripe_size: 1 << 20,
                stripe_count: 1,
                ..LayoutSpec::default()
            },
        )
        .unwrap();
    let mut data = pattern(8 << 20, 3);
    for k in 0..8 {
        data[k << 20] = 7; // every transfer is held by the server
    }
    let t = Instant::now();
    for k in 0..8usize {
        c.write_behind(&a, (k as u64) << 20, &data[k << 20..(k + 1) << 20])
            .unwrap();
    }
    let sent = t.elapsed();
    c.flush(a.ino).unwrap();
    assert!(
        w.max.load(Ordering::SeqCst) >= 2,
        "at most {} writes in flight (sent in {sent:?})",
        w.max.load(Ordering::SeqCst)
    );
    c.sync(&a).unwrap();
    let a = c.stat("/wb").unwrap();
    assert_eq!(a.size, 8 << 20);
    let mut back = vec![0u8; 8 << 20];
    c.read_at("/wb", &a, 0, &mut back).unwrap();
    assert!(back == data, "bytes differ");
}

/// A write behind an overlapping one still in flight waits for it: the
/// later bytes win even when the server would have run it first.
#[test]
fn write_behind_keeps_overlapping_writes_in_order() {
    let _s = serial();
    let (fs, _w) = writes_server("order", 1, 0xff);
    let c = behind_client(&fs);
    let a = c
        .set_stripe(
            "/o",
            LayoutSpec {
                stripe_size: 1 << 20,
                stripe_count: 1,
                ..LayoutSpec::default()
            },
        )
        .unwrap();
    // The first write is held 300 ms; the second, over the same bytes, not.
    c.write_behind(&a, 0, &vec![1u8; 256 << 10]).unwrap();
    c.write_behind(&a, 4096, &vec![2u8; 64 << 10]).unwrap();
    c.flush(a.ino).unwrap();
    let a = c.stat("/o").unwrap();
    let mut back = vec![0u8; 256 << 10];
    c.read_at("/o", &a, 0, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 1));
    assert!(
        back[4096..4096 + (64 << 10)].iter().all(|&b| b == 2),
        "the earlier write overtook the later one"
    );
    assert!(back[4096 + (64 << 10)..].iter().all(|&b| b == 1));
}

/// A write that fails on the server after `write_behind` returned is
/// reported by the file's next write or flush, once, and not to
/// another file's.
#[test]
fn write_behind_reports_a_failed_write_at_the_next_flush() {
    let _s = serial();
    let (fs, _w) = writes_server("fail", 0xfe, 9);
    let c = behind_client(&fs);
    let spec = LayoutSpec {
        stripe_size: 1 << 20,
        stripe_count: 1,
        ..LayoutSpec::default()
    };
    let a = c.set_stripe("/f", spec).unwrap();
    let b = c.set_stripe("/g", spec).unwrap();
    c.write_behind(&b, 0, &[5u8; 8192]).unwrap();
    // Reported by the write itself (its reply came while it waited for
    // room) or by the flush: exactly once.
    let r1 = c.write_behind(&a, 0, &[9u8; 8192]);
    let r2 = c.flush(a.ino);
    let e = match (r1, r2) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
        r => panic!("not reported exactly once: {r:?}"),
    };
    assert!(e.to_string().contains("this write fails"), "{e}");
    c.flush(a.ino).unwrap();
    c.flush(b.ino).unwrap();
}

/// A handler that counts the `SetSize` requests it answers.
struct Sizes {
    inner: Service,
    set_sizes: AtomicUsize,
}

impl Handler for Sizes {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn handle(&self, req: Request) -> Reply {
        if matches!(req, Request::SetSize { .. }) {
            self.set_sizes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.handle(req)
    }
}

/// `write_behind` (every `dos::io` write) tells the metadata server the
/// file's size once, at the flush, not after every write: a 1 MiB write is
/// one request to one server. Until then another client sees the old size
/// (MPI-IO's rule: others see writes after a sync); after it, the size and
/// every byte.
#[test]
fn write_behind_tells_the_size_once_at_the_flush() {
    let _s = serial();
    let keep: Arc<Mutex<Vec<Arc<Sizes>>>> = Arc::default();
    let k = keep.clone();
    let fs = start("sizes", 2, "127.0.0.1", move |s| {
        let h = Arc::new(Sizes {
            inner: s,
            set_sizes: AtomicUsize::new(0),
        });
        k.lock().unwrap().push(h.clone());
        h
    });
    let count = || -> usize {
        keep.lock()
            .unwrap()
            .iter()
            .map(|h| h.set_sizes.load(Ordering::SeqCst))
            .sum()
    };
    let other = Client::new(&fs.addr);
    for window in [0usize, 4] {
        let mut c = Client::new(&fs.addr);
        c.behind_window = window;
        let path = format!("/size{window}");
        let a = c
            .set_stripe(
                &path,
                LayoutSpec {
                    stripe_size: 1 << 20,
                    stripe_count: 2,
                    ..LayoutSpec::default()
                },
            )
            .unwrap();
        let data = pattern(8 << 20, 11);
        let before = count();
        for k in 0..8usize {
            c.write_behind(&a, (k as u64) << 20, &data[k << 20..(k + 1) << 20])
                .unwrap();
        }
        assert_eq!(c.unpublished_size(a.ino), Some(8 << 20), "window {window}");
        assert_eq!(other.stat(&path).unwrap().size, 0, "window {window}");
        c.flush(a.ino).unwrap();
        assert_eq!(count() - before, 1, "window {window}: SetSize requests");
        assert_eq!(c.unpublished_size(a.ino), None);
        let a = other.stat(&path).unwrap();
        assert_eq!(a.size, 8 << 20, "window {window}");
        let mut back = vec![0u8; 8 << 20];
        other.read_at(&path, &a, 0, &mut back).unwrap();
        assert!(back == data, "window {window}: bytes differ");
        // Nothing new to tell: a second flush sends nothing.
        c.flush(a.ino).unwrap();
        assert_eq!(count() - before, 1, "window {window}");
    }
}

/// Many writes in flight to one server (write-behind, 16 at once, every
/// one a rewrite of synced stripes) when the server is killed: the writer
/// gets [`Error::ServerDown`] naming it within 2 s of the kill, nothing
/// hangs, and once the server is restarted on its target every synced
/// byte reads back as it was synced (the rewrites were never synced).
#[test]
fn writes_in_flight_to_a_killed_server_fail_naming_it_and_synced_data_stays() {
    let _g = serial();
    let Some(bin) = common::dosfs_bin() else {
        return;
    };
    let dir = common::fresh_dir("dp-killwb");
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let _cleanup = common::Cleanup(dir.clone());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let target = dir.join("0");
    let (child, addr) = serve_process(bin, &target, fsid, &secret, Serve::default());
    let server = Arc::new(Mutex::new(Kill(child)));
    let file = AddrFile {
        fsid,
        secret: secret.clone(),
        servers: vec![ServerAddr { addr, pid: None }],
    };
    let mut c = Client::new(&file);
    c.behind_window = 16;
    let spec = LayoutSpec {
        stripe_size: 1 << 20,
        stripe_count: 1,
        ..LayoutSpec::default()
    };
    let synced = pattern(4 << 20, 11);
    let a = write_read(&c, "/k", spec, &synced);
    let other = pattern(1 << 20, 12);
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let killer = {
        let (server, killed_at) = (server.clone(), killed_at.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut s = server.lock().unwrap();
            let _ = s.0.kill();
            *killed_at.lock().unwrap() = Some(Instant::now());
            let _ = s.0.wait();
        })
    };
    let start = Instant::now();
    let mut err = None;
    for k in 0..100_000u64 {
        let r = c.write_behind(&a, (k % 4) << 20, &other).and_then(|()| {
            if k % 64 == 63 {
                c.flush(a.ino)
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            err = Some(e);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no error 10 s after the kill"
        );
    }
    let failed_at = Instant::now();
    killer.join().unwrap();
    let e = err.expect("the writes failed");
    assert!(matches!(e, Error::ServerDown { server: 0, .. }), "{e}");
    let killed = killed_at.lock().unwrap().expect("killed");
    let after = failed_at.saturating_duration_since(killed);
    assert!(
        after < Duration::from_secs(2),
        "the error came {after:?} after the kill"
    );
    // Restarted on its target: the synced bytes, none of the rewrites.
    let (child, _addr) = serve_process(bin, &target, fsid, &secret, Serve::default());
    *server.lock().unwrap() = Kill(child);
    let _ = c.flush(a.ino);
    let a = c.stat("/k").unwrap();
    assert_eq!(a.size, 4 << 20);
    let mut back = vec![0u8; synced.len()];
    c.read_at("/k", &a, 0, &mut back).unwrap();
    assert!(
        back == synced,
        "synced bytes changed across the kill and restart"
    );
}
