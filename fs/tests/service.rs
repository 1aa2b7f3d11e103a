//! Servers and clients in one process, over real TCP on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::client::{Client, Conn};
use dos_fs::layout::LayoutSpec;
use dos_fs::server::{Handler, ServerConfig, Service};
use dos_fs::target::{FsId, Target};
use dos_fs::wire::{Reply, Request};
use dos_fs::Error;
use dos_transport::auth::Secret;

use common::{pattern, serve_process, start_with, Cleanup, Fs, Serve};

#[test]
fn striped_write_and_read_back_bit_exact() {
    let fs = start("rw", 3);
    let c = Client::new(&fs.addr);
    c.mkdir("/d").unwrap();
    let spec = LayoutSpec {
        stripe_size: 65536,
        stripe_count: LayoutSpec::ALL,
        first: LayoutSpec::ANY,
    };
    c.set_stripe("/d", spec).unwrap();
    let a = c.create("/d/f", None, true).unwrap();
    assert_eq!((a.layout.stripe_size, a.layout.stripe_count), (65536, 3));
    let data = pattern(1_000_003, 1);
    // Unaligned pieces, written out of order.
    c.write_at(&a, 500_000, &data[500_000..]).unwrap();
    c.write_at(&a, 0, &data[..500_000]).unwrap();
    let a = c.stat("/d/f").unwrap();
    assert_eq!(a.size, data.len() as u64);
    let mut back = vec![0u8; data.len()];
    c.read_at("/d/f", &a, 0, &mut back).unwrap();
    assert!(back == data);
    let mut mid = vec![0u8; 70_000];
    c.read_at("/d/f", &a, 123_456, &mut mid).unwrap();
    assert!(mid == data[123_456..193_456]);
    c.sync(&a).unwrap();
    // Every server holds a share, the metadata server too.
    for s in c.statfs() {
        s.unwrap();
    }
    let v = c.verify("/").unwrap();
    assert_eq!(v.files, 1);
    assert_eq!(v.total.bytes, data.len() as u64);
    assert!(v.bad.is_empty());
    // Shrink, rename over, remove.
    let a = c.set_size(&a, 100_000).unwrap();
    assert_eq!(a.size, 100_000);
    let b = c.create("/b", None, true).unwrap();
    c.write_at(&b, 0, b"bee").unwrap();
    c.rename("/b", "/d/f").unwrap();
    let names: Vec<String> = c
        .readdir("/d")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["f"]);
    let mut three = [0u8; 3];
    let f = c.stat("/d/f").unwrap();
    c.read_at("/d/f", &f, 0, &mut three).unwrap();
    assert_eq!(&three, b"bee");
    c.unlink("/d/f").unwrap();
    assert!(matches!(c.stat("/d/f"), Err(Error::NotFound { .. })));
    assert!(c.readdir("/d").unwrap().is_empty());
}

#[test]
fn corrupted_chunk_is_reported_by_read_and_verify() {
    let fs = start("corrupt", 2);
    let c = Client::new(&fs.addr);
    let a = c
        .set_stripe(
            "/f",
            LayoutSpec {
                stripe_size: 4096,
                stripe_count: 2,
                first: 0,
            },
        )
        .unwrap();
    c.write_at(&a, 0, &pattern(4 * 4096, 2)).unwrap();
    c.sync(&a).unwrap();
    // Stripe 3 lives on server 1: flip a byte of it on disk.
    let p = fs
        .dir
        .join(format!("1/chunks/{:02x}/{:x}/d0", a.ino & 0xff, a.ino));
    // Its data object holds it at 3 x 4096 (fs/src/chunk.rs).
    let mut b = std::fs::read(&p).unwrap();
    b[12_288 + 100] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let a = c.stat("/f").unwrap();
    let mut buf = vec![0u8; 4 * 4096];
    let e = c.read_at("/f", &a, 0, &mut buf).unwrap_err();
    assert!(
        matches!(&e, Error::CorruptData { path, offset: 12288, server: 1, .. } if path == "/f"),
        "{e}"
    );
    // The healthy stripes still read.
    let mut first = vec![0u8; 3 * 4096];
    c.read_at("/f", &a, 0, &mut first).unwrap();
    assert!(first == pattern(4 * 4096, 2)[..3 * 4096]);
    let v = c.verify("/").unwrap();
    assert_eq!(v.bad.len(), 1);
    assert_eq!(
        (v.bad[0].path.as_str(), v.bad[0].offset, v.bad[0].server),
        ("/f", 12288, 1)
    );
}

#[test]
fn unauthenticated_and_wrong_secret_connections_are_refused() {
    let fs = start("auth", 1);
    let addr = &fs.addr.servers[0].addr;
    // A request without the handshake: the server reads it as a bad hello
    // and closes the connection without answering it.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let frame = Request::Stat { path: "/".into() }.encode(1);
    let mut padded = frame.clone();
    padded.resize(48, 0);
    s.write_all(&padded).unwrap();
    // All that comes back is the server's own hello, then the close.
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(
        got.len(),
        dos_transport::auth::HELLO_LEN,
        "the server answered an unauthenticated request"
    );
    assert_eq!(&got[..4], b"dosH");
    // The wrong secret.
    let other = Secret::generate().unwrap();
    let e = Conn::connect(
        addr,
        0,
        &fs.addr.fsid,
        &other,
        std::time::Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Auth { server: 0, .. } | Error::ServerDown { .. }),
        "{e}"
    );
    // The right secret but another file system's id.
    let e = Conn::connect(
        addr,
        0,
        &FsId([9; 16]),
        &fs.addr.secret,
        std::time::Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Auth { .. } | Error::ServerDown { .. }),
        "{e}"
    );
    // The right one works.
    let mut c = Conn::connect(
        addr,
        0,
        &fs.addr.fsid,
        &fs.addr.secret,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(matches!(c.call(&Request::Statfs).unwrap(), Reply::Space(_)));
}

#[test]
fn bad_requests_get_typed_errors() {
    let fs = start("bad", 2);
    let c = Client::new(&fs.addr);
    for bad in ["/a/../b", "/x\0y"] {
        assert!(
            matches!(c.mkdir(bad), Err(Error::InvalidPath { .. })),
            "{bad:?}"
        );
    }
    // Metadata sent to a data server.
    let e = c.call(1, &Request::Stat { path: "/".into() }).unwrap_err();
    assert!(matches!(e, Error::WrongServer { server: 1, .. }), "{e}");
    // A piece that does not fit a stripe.
    let e = c
        .call(
            1,
            &Request::Read {
                ino: 5,
                stripe: 0,
                stripe_size: 4096,
                offset: 4000,
                len: 200,
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidLayout { .. }), "{e}");
    // The connection still works after errors.
    assert_eq!(c.stat("/").unwrap().ino, 1);
    let e = c
        .set_stripe(
            "/",
            LayoutSpec {
                stripe_size: 12345,
                ..LayoutSpec::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidLayout { .. }), "{e}");
}

#[test]
fn concurrent_clients_writing_one_file_and_creating_in_one_directory() {
    let fs = start("concurrent", 3);
    let setup = Client::new(&fs.addr);
    let spec = LayoutSpec {
        stripe_size: 65536,
        stripe_count: LayoutSpec::ALL,
        first: LayoutSpec::ANY,
    };
    let a = setup.set_stripe("/shared", spec).unwrap();
    setup.mkdir("/many").unwrap();
    // Four writers, each its own client, interleaved 10,000-byte blocks:
    // many blocks share a stripe (and so a chunk) with other writers' blocks.
    let block = 10_000usize;
    let blocks = 64usize;
    let writers = 4usize;
    let data = pattern(block * blocks, 9);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (fs, data) = (&fs, &data);
            s.spawn(move || {
                let c = Client::new(&fs.addr);
                for b in (w..blocks).step_by(writers) {
                    let off = b * block;
                    c.write_at(&a, off as u64, &data[off..off + block]).unwrap();
                }
                for i in 0..200 {
                    c.create(&format!("/many/w{w}-{i}"), None, true).unwrap();
                }
            });
        }
    });
    let a = setup.stat("/shared").unwrap();
    assert_eq!(a.size, data.len() as u64);
    setup.sync(&a).unwrap();
    let mut back = vec![0u8; data.len()];
    setup.read_at("/shared", &a, 0, &mut back).unwrap();
    assert!(back == data, "concurrent writes lost bytes");
    assert_eq!(setup.readdir("/many").unwrap().len(), writers * 200);
}

/// `n` servers in this process on fresh targets.
fn start(tag: &str, n: u32) -> Fs {
    common::start(&format!("svc-{tag}"), n)
}

/// One server over a fresh target, serving `wrap(service)` with `config`.
fn start_one(
    tag: &str,
    config: ServerConfig,
    wrap: impl Fn(Service) -> std::sync::Arc<dyn Handler>,
) -> Fs {
    start_with(&format!("svc-{tag}"), 1, "127.0.0.1", config, wrap)
}

/// A server whose reads take `delay`: busy, not dead.
struct Slow {
    inner: Service,
    delay: Duration,
}

impl Handler for Slow {
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

#[test]
fn a_slow_server_is_not_declared_dead_but_one_stuck_past_the_io_timeout_is() {
    let fs = start_one("slow", ServerConfig::default(), |s| {
        std::sync::Arc::new(Slow {
            inner: s,
            delay: Duration::from_millis(2600),
        })
    });
    let c = Client::new(&fs.addr);
    let a = c.create("/f", None, true).unwrap();
    c.write_at(&a, 0, b"slow but alive").unwrap();
    // The read takes 2.6 s, longer than a dead server may take to be seen:
    // the server answers the probes, so the read waits and succeeds.
    let mut buf = [0u8; 14];
    let t = Instant::now();
    c.read_at("/f", &a, 0, &mut buf).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(2500));
    assert_eq!(&buf, b"slow but alive");
    // Alive but without progress past the client's I/O timeout: an error.
    let mut c = Client::new(&fs.addr);
    c.io_timeout = Duration::from_millis(1200);
    let e = c.read_at("/f", &a, 0, &mut buf).unwrap_err();
    match &e {
        Error::ServerDown {
            server: 0, source, ..
        } => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{e}")
        }
        e => panic!("{e}"),
    }
}

#[test]
fn connections_still_authenticating_are_bounded_and_given_2s() {
    let config = ServerConfig {
        max_per_source: 3,
        ..ServerConfig::default()
    };
    let fs = start_one("caps", config, |s| std::sync::Arc::new(s));
    let addr = &fs.addr.servers[0].addr;
    let hello_or_eof = |s: &mut TcpStream| -> usize {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; dos_transport::auth::HELLO_LEN];
        let mut got = 0;
        while got < b.len() {
            match s.read(&mut b[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    };
    // Three silent connections fill this source's slots (each got a hello).
    let mut silent: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            assert_eq!(hello_or_eof(&mut s), dos_transport::auth::HELLO_LEN);
            s
        })
        .collect();
    // A fourth is closed at once, without a hello.
    let mut over = TcpStream::connect(addr).unwrap();
    assert_eq!(
        hello_or_eof(&mut over),
        0,
        "a connection over the bound was served"
    );
    // A peer trickling a byte every 300 ms is closed within the 2 s
    // deadline of the whole handshake, and the slots come back.
    let t = Instant::now();
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(6) {
        if silent[0].write_all(&[0]).is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 1];
        silent[0]
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match silent[0].read(&mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a trickling peer kept its slot");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    silent.clear();
    std::thread::sleep(Duration::from_millis(200));
    let c = Client::new(&fs.addr);
    assert_eq!(c.stat("/").unwrap().ino, 1);
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on a child process this test started.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0);
    if sig == libc::SIGSTOP {
        // kill returns before every thread has stopped: wait for state T.
        let stat = format!("/proc/{}/stat", child.id());
        for _ in 0..200 {
            let s = std::fs::read_to_string(&stat).unwrap_or_default();
            let state = s.rsplit(") ").next().and_then(|r| r.chars().next());
            if state == Some('T') {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("server {} did not stop", child.id());
    }
}

/// The rule: a server that stops (SIGSTOP: no reset, no answer) or
/// is killed makes operations on its stripes fail with an error naming it
/// within 2 s; continued, it serves again; restarted on its target, every
/// synced byte reads back.
#[test]
fn a_stopped_or_killed_server_fails_operations_within_2s_and_a_restarted_one_serves_synced_bytes() {
    let Some(bin) = common::dosfs_bin() else {
        return;
    };
    let dir = common::fresh_dir("svc-stop");
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let _cleanup = Cleanup(dir.clone());
    struct Kill(Vec<std::process::Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    // Dropped before `_cleanup`: the servers end before their targets go.
    let mut procs = Kill(Vec::new());
    let mut servers = Vec::new();
    for i in 0..2 {
        let (child, addr) = serve_process(
            bin,
            &dir.join(i.to_string()),
            fsid,
            &secret,
            Serve {
                index: i,
                servers: 2,
                ..Serve::default()
            },
        );
        procs.0.push(child);
        servers.push(ServerAddr { addr, pid: None });
    }
    let mut file = AddrFile {
        fsid,
        secret: secret.clone(),
        servers,
    };
    let c = Client::new(&file);
    let spec = LayoutSpec {
        stripe_size: 65536,
        stripe_count: 2,
        first: 0,
    };
    let a = c.set_stripe("/f", spec).unwrap();
    let data = pattern(4 * 65536, 11);
    c.write_at(&a, 0, &data).unwrap();
    c.sync(&a).unwrap();

    // Server 1 (stripes 1 and 3) stops.
    signal(&procs.0[1], libc::SIGSTOP);
    let mut buf = vec![0u8; data.len()];
    let t = Instant::now();
    let e = c.read_at("/f", &a, 0, &mut buf).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, Error::ServerDown { server: 1, .. }), "{e}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {e}");
    assert!(e.to_string().contains(&file.servers[1].addr), "{e}");
    // A write to its stripe, and a fresh connection to it, fail the same way.
    let t = Instant::now();
    let e = c.write_at(&a, 65536, b"x").unwrap_err();
    assert!(matches!(e, Error::ServerDown { server: 1, .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let e = Client::new(&file).call(1, &Request::Statfs).unwrap_err();
    assert!(matches!(e, Error::ServerDown { server: 1, .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // Stripes on server 0 still read.
    let mut first = vec![0u8; 65536];
    c.read_at("/f", &a, 0, &mut first).unwrap();
    assert!(first == data[..65536]);
    // Server 0, the metadata server, stops too: metadata fails naming it.
    signal(&procs.0[0], libc::SIGSTOP);
    let t = Instant::now();
    let e = c.stat("/f").unwrap_err();
    assert!(matches!(e, Error::ServerDown { server: 0, .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // Continued, both serve again (the client reconnects).
    signal(&procs.0[0], libc::SIGCONT);
    signal(&procs.0[1], libc::SIGCONT);
    c.read_at("/f", &a, 0, &mut buf).unwrap();
    assert!(buf == data);
    // Killed: seen at once.
    let mut dead = procs.0.remove(1);
    dead.kill().unwrap();
    dead.wait().unwrap();
    let t = Instant::now();
    let e = c.read_at("/f", &a, 0, &mut buf).unwrap_err();
    assert!(matches!(e, Error::ServerDown { server: 1, .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // Restarted on its target (a new port): every synced byte reads back.
    let (child, addr) = serve_process(
        bin,
        &dir.join("1"),
        fsid,
        &secret,
        Serve {
            index: 1,
            servers: 2,
            ..Serve::default()
        },
    );
    procs.0.push(child);
    file.servers[1].addr = addr;
    let c = Client::new(&file);
    let a = c.stat("/f").unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_at("/f", &a, 0, &mut back).unwrap();
    assert!(back == data, "synced bytes changed across the restart");
}

/// A client that died between removing a file and dropping its chunks left
/// orphans: server 0 removes them when it starts again.
#[test]
fn orphan_chunks_are_removed_at_start() {
    let dir = common::fresh_dir("svc-orphan");
    let _cleanup = Cleanup(dir.clone());
    let t = Target::format(&dir, FsId([3; 16]), 0, 1).unwrap();
    let svc = Service::open(&t).unwrap();
    let ok = |r: Reply| assert!(!matches!(r, Reply::Error(_)), "{r:?}");
    let mut inos = Vec::new();
    for name in ["/gone", "/kept"] {
        let a = match svc.handle(Request::Create {
            path: name.into(),
            spec: None,
            exclusive: true,
        }) {
            Reply::Attr(a) => a,
            r => panic!("{r:?}"),
        };
        ok(svc.handle(Request::Write {
            ino: a.ino,
            stripe: 0,
            stripe_size: a.layout.stripe_size,
            offset: 0,
            data: b"bytes".to_vec(),
        }));
        inos.push(a.ino);
    }
    ok(svc.handle(Request::Sync { ino: None }));
    // The unlink reaches the metadata; the client dies before DropFile.
    ok(svc.handle(Request::Unlink {
        path: "/gone".into(),
    }));
    ok(svc.handle(Request::Sync { ino: None }));
    drop(svc);
    let chunk_dir = |ino: u64| t.chunk_dir().join(format!("{:02x}/{ino:x}", ino & 0xff));
    assert!(chunk_dir(inos[0]).exists());
    let _svc = Service::open(&t).unwrap();
    assert!(
        !chunk_dir(inos[0]).exists(),
        "the orphan's chunks are still there"
    );
    assert!(chunk_dir(inos[1]).exists(), "a live file lost its chunks");
}

/// Metadata rates at each layer, side by side in one run (a measurement,
/// not a check): `Service::handle` in this thread (the metadata server's own
/// cost: namespace lock, B-tree insert, journal append), then over TCP with
/// 1, 2 and 4 client threads creating in one directory, then 100,000 files
/// in one directory in steps (creates must not slow down as it grows).
/// `cargo test --release -p dos-fs --test service md_rates -- --ignored --nocapture`
#[test]
#[ignore]
fn md_rates() {
    let n = 20_000u64;
    let dir = common::fresh_dir("svc-mdrate");
    let t = Target::format(&dir, FsId([9; 16]), 0, 1).unwrap();
    let svc = Service::open(&t).unwrap();
    let _ = svc.handle(Request::Mkdir { path: "/d".into() });
    let t0 = Instant::now();
    for i in 0..n {
        let r = svc.handle(Request::Create {
            path: format!("/d/f{i}"),
            spec: None,
            exclusive: true,
        });
        assert!(matches!(r, Reply::Attr(_)), "{r:?}");
    }
    let s = t0.elapsed().as_secs_f64();
    println!("Service::handle create: {:.0}/s", n as f64 / s);
    let t0 = Instant::now();
    for i in 0..n {
        let r = svc.handle(Request::Stat {
            path: format!("/d/f{i}"),
        });
        assert!(matches!(r, Reply::Attr(_)), "{r:?}");
    }
    println!(
        "Service::handle stat:   {:.0}/s",
        n as f64 / t0.elapsed().as_secs_f64()
    );
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);

    let fs = start("mdrate", 1);
    let c = Client::new(&fs.addr);
    c.mkdir("/d").unwrap();
    for threads in [1u64, 2, 4] {
        let per = n / threads;
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for k in 0..threads {
                let addr = &fs.addr;
                s.spawn(move || {
                    let c = Client::new(addr);
                    for i in 0..per {
                        c.create(&format!("/d/t{threads}.{k}.{i}"), None, true)
                            .unwrap();
                    }
                });
            }
        });
        println!(
            "TCP create, {threads} client threads, one directory: {:.0}/s",
            (per * threads) as f64 / t0.elapsed().as_secs_f64()
        );
    }
    // One directory growing to 100,000 entries: the rate of each step.
    c.mkdir("/big").unwrap();
    let step = 25_000u64;
    for k in 0..4 {
        let t0 = Instant::now();
        for i in 0..step {
            c.create(&format!("/big/f{}", k * step + i), None, true)
                .unwrap();
        }
        println!(
            "one directory, entries {}..{}: {:.0} creates/s",
            k * step,
            (k + 1) * step,
            step as f64 / t0.elapsed().as_secs_f64()
        );
    }
    assert_eq!(c.stat("/big").unwrap().size, 4 * step);
}

/// A file removed while a server holding its stripes did not get the drop
/// (a client that died after the unlink, or a server that was down) leaves
/// chunks on data servers, which server 0's start-up sweep cannot see:
/// `collect_orphans` (run by `dosfs verify /`) drops them on every server
/// and keeps every live file's chunks.
#[test]
fn orphan_chunks_on_data_servers_are_collected() {
    let fs = start("orphans", 3);
    let c = Client::new(&fs.addr);
    c.mkdir("/d").unwrap();
    c.set_stripe(
        "/d",
        LayoutSpec {
            stripe_size: 65536,
            stripe_count: 3,
            first: 0,
        },
    )
    .unwrap();
    let data = pattern(3 * 65536, 5);
    let mut files = Vec::new();
    for name in ["/d/gone", "/d/kept"] {
        let a = c.create(name, None, true).unwrap();
        c.write_at(&a, 0, &data).unwrap();
        c.sync(&a).unwrap();
        files.push(a);
    }
    // Only the metadata server hears of the removal.
    c.call(
        0,
        &Request::Unlink {
            path: "/d/gone".into(),
        },
    )
    .unwrap();
    let holds = |s: u32, ino: u64| match c
        .call(
            s,
            &Request::ListChunks {
                after: 0,
                limit: 100,
            },
        )
        .unwrap()
    {
        Reply::Entries { entries, .. } => entries.iter().any(|e| e.ino == ino),
        r => panic!("{r:?}"),
    };
    for s in 0..3 {
        assert!(holds(s, files[0].ino), "server {s} had no chunk to lose");
    }
    let mut dropped = c.collect_orphans().unwrap();
    dropped.sort_unstable();
    assert_eq!(
        dropped,
        vec![(0, files[0].ino), (1, files[0].ino), (2, files[0].ino)]
    );
    for s in 0..3 {
        assert!(!holds(s, files[0].ino), "server {s} kept the orphan");
        assert!(
            holds(s, files[1].ino),
            "server {s} lost a live file's chunk"
        );
    }
    let mut back = vec![0; data.len()];
    c.read_at("/d/kept", &files[1], 0, &mut back).unwrap();
    assert!(back == data);
    assert!(c.collect_orphans().unwrap().is_empty());
    // A removal with every server up reaches every server of the layout.
    c.unlink("/d/kept").unwrap();
    for s in 0..3 {
        assert!(
            !holds(s, files[1].ino),
            "server {s} kept a removed file's chunk"
        );
    }
}
