//! The RDMA data path ([`dos_fs::rdma`]): clients told to use the
//! soft-RoCE move data by one-sided operations into and out of the
//! servers' slots, bytes exact; a server that grants no slots keeps them on
//! TCP; bad slots and setups are typed errors and the connection goes on;
//! a server killed mid-transfer is an error naming it within 2 s.
//!
//! On one host the soft-RoCE runs over loopback (the client keeps off the
//! same-node path). Between namespace hosts of the test cluster (root,
//! `ci/cluster.sh`):
//!
//! ```text
//! cargo build -p dos-fs --bins
//! flock /tmp/dos-cluster.lock cargo test -p dos-fs --test rdma -- --ignored namespace --nocapture
//! ```

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    dosfs_bin, fresh_dir, is_root, pattern, plain, serial, serve_process, start_with, Fs, NsFs,
    Serve,
};

use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::client::{Client, Conn, DataPath, Liveness};
use dos_fs::layout::LayoutSpec;
use dos_fs::rdma::Transport;
use dos_fs::server::ServerConfig;
use dos_fs::target::FsId;
use dos_fs::wire::{Reply, Request};
use dos_fs::Error;
use dos_transport::auth::Secret;

/// `n` servers in this process on 127.0.0.1.
fn start(tag: &str, n: u32, config: ServerConfig) -> Fs {
    start_with(&format!("rdma-{tag}"), n, "127.0.0.1", config, plain)
}

/// A client that reaches every server by RDMA (none by the same-node path).
fn roce_client(addr: &AddrFile) -> Client {
    let mut c = Client::new(addr);
    c.local = false;
    c.transport = Transport::Roce;
    c
}

/// Writes, syncs and reads back files of several sizes and stripe sizes
/// at unaligned offsets, comparing every byte; `other` (another data
/// path) reads them too.
fn exact_round_trips(c: &Client, other: Option<&Client>, tag: &str) {
    // Sizes: tiny, a page +- 1, a slot (1 MiB) + 1, several slots,
    // unaligned; stripes of 64 KiB, 1 MiB (one slot) and 4 MiB (over a
    // slot: those pieces go inline over TCP).
    let sizes = [1usize, 4095, 4097, (1 << 20) + 1, (3 << 20) + 12345];
    let stripes = [65536u32, 1 << 20, 4 << 20];
    for (k, &stripe) in stripes.iter().enumerate() {
        let path = format!("/{tag}-{k}");
        let spec = LayoutSpec {
            stripe_size: stripe,
            ..LayoutSpec::default()
        };
        let a = c.create(&path, Some(spec), true).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for (j, &n) in sizes.iter().enumerate() {
            let off = (j as u64 * 1_000_003) % (5 << 20);
            let data = pattern(n, (k * 10 + j) as u64 + 1);
            c.write_at(&a, off, &data).unwrap();
            let end = off as usize + n;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
        }
        c.sync(&a).unwrap();
        let a = c.stat(&path).unwrap();
        assert_eq!(a.size, model.len() as u64);
        for reader in std::iter::once(c).chain(other) {
            let mut back = vec![0xeeu8; model.len()];
            reader.read_at(&path, &a, 0, &mut back).unwrap();
            assert!(back == model, "{path}: bytes differ");
            // An unaligned piece in the middle.
            let (o, n) = (12_345usize, (2 << 20) + 7);
            let n = n.min(model.len() - o);
            let mut part = vec![0u8; n];
            reader.read_at(&path, &a, o as u64, &mut part).unwrap();
            assert!(part == model[o..o + n], "{path}: a piece differs");
        }
    }
}

#[test]
fn a_client_told_roce_moves_data_by_rdma_and_the_bytes_are_exact() {
    let _g = serial();
    let fs = start("exact", 3, ServerConfig::default());
    let c = roce_client(&fs.addr);
    for s in 0..3 {
        assert_eq!(c.data_path(s).unwrap(), DataPath::Roce);
    }
    let mut tcp = Client::new(&fs.addr);
    tcp.local = false;
    tcp.transport = Transport::Tcp;
    assert_eq!(tcp.data_path(0).unwrap(), DataPath::Tcp);
    exact_round_trips(&c, Some(&tcp), "roce");
    // What TCP wrote, RDMA reads.
    exact_round_trips(&tcp, Some(&c), "tcp");
}

#[test]
fn a_server_without_rdma_keeps_the_client_on_tcp() {
    let _g = serial();
    let fs = start(
        "nordma",
        2,
        ServerConfig {
            rdma: false,
            ..ServerConfig::default()
        },
    );
    let c = roce_client(&fs.addr);
    assert_eq!(c.data_path(0).unwrap(), DataPath::Tcp);
    assert_eq!(c.data_path(1).unwrap(), DataPath::Tcp);
    let a = c.create("/f", None, true).unwrap();
    let data = pattern(3 << 20, 3);
    c.write_at(&a, 7, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_at("/f", &a, 7, &mut back).unwrap();
    assert!(back == data);
}

fn raw(fs: &Fs, rdma: Option<(u32, u32)>) -> Conn {
    Conn::connect_opts(
        &fs.addr.servers[0].addr,
        0,
        &fs.addr.fsid,
        &fs.addr.secret,
        Duration::from_secs(10),
        Liveness::default(),
        None,
        rdma,
    )
    .unwrap()
}

fn protocol_error(r: std::result::Result<Reply, Error>, what: &str) {
    match r {
        Err(Error::Protocol { .. }) => {}
        r => panic!("{what}: got {r:?}"),
    }
}

/// Slot numbers and lengths from an RDMA client get the same checks as a
/// same-node client's; a second setup, a setup that is not first, and a
/// setup naming an endpoint that does not exist are refused or granted
/// nothing; every time the connection goes on.
#[test]
fn bad_slots_and_setups_from_an_rdma_client_are_refused_and_it_goes_on() {
    let _g = serial();
    let fs = start("bad", 1, ServerConfig::default());
    let c = Client::new(&fs.addr);
    let a = c
        .create(
            "/f",
            Some(LayoutSpec {
                stripe_size: 8192,
                stripe_count: 1,
                first: 0,
            }),
            true,
        )
        .unwrap();
    let mut conn = raw(&fs, Some((4, 4096)));
    assert_eq!(conn.data_path(), DataPath::Roce);
    let slots = conn.data_slots().unwrap().clone();
    assert_eq!((slots.count(), slots.slot_size()), (4, 4096));
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
    protocol_error(conn.call(&w(4, 10)), "slot past the end");
    protocol_error(conn.call(&w(u32::MAX, 10)), "slot u32::MAX");
    protocol_error(conn.call(&w(0, 4097)), "longer than a slot");
    protocol_error(conn.call(&r(1, u32::MAX)), "read longer than a slot");
    // Client-side checks refuse before anything is sent.
    assert!(matches!(slots.put(4, b"x"), Err(Error::Protocol { .. })));
    assert!(matches!(
        slots.put(0, &[0u8; 4097]),
        Err(Error::Protocol { .. })
    ));
    // A second setup is refused.
    protocol_error(
        conn.call(&Request::RoceSetup {
            slots: 4,
            slot_size: 4096,
            addr: vec![1; 25],
        }),
        "second setup",
    );
    // The connection still moves data by RDMA.
    slots.put(2, b"0123456789").unwrap();
    assert_eq!(conn.call(&w(2, 10)).unwrap(), Reply::Ok);
    assert_eq!(conn.call(&r(3, 10)).unwrap(), Reply::Ok);
    let mut back = [0u8; 10];
    slots.get(3, &mut back).unwrap();
    assert_eq!(&back, b"0123456789");
    // A setup that is not the first request of its connection, and one
    // naming no endpoint: refused, granted nothing.
    let mut tcp = raw(&fs, None);
    assert_eq!(tcp.data_path(), DataPath::Tcp);
    assert_eq!(tcp.call(&Request::Statfs).unwrap().kind(), 0x84);
    protocol_error(
        tcp.call(&Request::RoceSetup {
            slots: 4,
            slot_size: 4096,
            addr: Vec::new(),
        }),
        "setup not first",
    );
    let mut junk = raw(&fs, None);
    match junk.call(&Request::RoceSetup {
        slots: 4,
        slot_size: 4096,
        addr: vec![0xff; 7],
    }) {
        Ok(Reply::RoceSlots { count: 0, .. }) => {}
        r => panic!("junk address: {r:?}"),
    }
    assert_eq!(junk.call(&Request::Statfs).unwrap().kind(), 0x84);
    protocol_error(junk.call(&w(0, 1)), "slots on a connection granted none");
}

/// Kills (`SIGKILL`: its sockets close) or stops (`SIGSTOP`: it goes
/// silent) a `dosfs serve` process while a client writes to it by RDMA: the
/// write fails with the server's ServerDown within 2 s.
pub fn kill_mid_transfer(bin_prefix: &[&str], listen: &str, expect: DataPath, signal: i32) {
    let Some(bin) = dosfs_bin() else {
        return;
    };
    let dir = fresh_dir("rdma-kill");
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let how = Serve {
        prefix: bin_prefix,
        listen: Some(listen),
        ..Serve::default()
    };
    let (mut child, addr) = serve_process(bin, &dir.join("0"), fsid, &secret, how);
    let file = AddrFile {
        fsid,
        secret,
        servers: vec![ServerAddr { addr, pid: None }],
    };
    let c = Arc::new(roce_client(&file));
    assert_eq!(c.data_path(0).unwrap(), expect);
    let a = c.create("/big", None, true).unwrap();
    let data = Arc::new(pattern(8 << 20, 11));
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let (c, data) = (c.clone(), data.clone());
        std::thread::spawn(move || {
            let mut off = 0u64;
            let t = Instant::now();
            loop {
                if let Err(e) = c.write_at(&a, off, &data) {
                    return (e, Instant::now());
                }
                if off == 0 {
                    let _ = tx.send(());
                }
                off += data.len() as u64;
                assert!(t.elapsed() < Duration::from_secs(60), "never failed");
            }
        })
    };
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a first write");
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    // SAFETY: a signal to our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as i32, signal) };
    let (e, at) = writer.join().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let took = at.saturating_duration_since(killed);
    eprintln!("signal {signal} mid-transfer: {e} after {took:?}");
    assert!(matches!(e, Error::ServerDown { server: 0, .. }), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_killed_mid_transfer_is_a_typed_error_within_2s() {
    let _g = serial();
    kill_mid_transfer(&[], "127.0.0.1:0", DataPath::Roce, libc::SIGKILL);
}

#[test]
fn a_server_stopped_mid_transfer_is_a_typed_error_within_2s() {
    let _g = serial();
    kill_mid_transfer(&[], "127.0.0.1:0", DataPath::Roce, libc::SIGSTOP);
}

/// Run by [`namespace_roce`] inside a namespace host: the exact round
/// trips by RDMA against servers on another host; prints the data paths.
#[test]
fn namespace_child() {
    let Ok(addr) = std::env::var("DOSFS_RDMA_CHILD") else {
        return;
    };
    let file = AddrFile::read(Path::new(&addr)).unwrap();
    let c = Client::new(&file); // DOS_FS_TRANSPORT=roce from the parent
    let paths: Vec<_> = (0..c.servers())
        .map(|s| c.data_path(s).unwrap().to_string())
        .collect();
    println!("DATAPATH {}", paths.join(","));
    exact_round_trips(&c, None, "ns");
    println!("EXACT ok");
}

/// Run by [`namespace_throughput`] inside a namespace host: 64 MiB
/// written in 1 MiB calls, synced, read back, over TCP and over RDMA in
/// turn, 3 rounds; prints MiB/s per round.
#[test]
fn namespace_tp_child() {
    let Ok(addr) = std::env::var("DOSFS_RDMA_TP_CHILD") else {
        return;
    };
    let file = AddrFile::read(Path::new(&addr)).unwrap();
    let total = 64usize << 20;
    let chunk = 1usize << 20;
    let data = pattern(chunk, 5);
    for round in 0..3 {
        for t in [Transport::Tcp, Transport::Roce] {
            let mut c = Client::new(&file);
            c.transport = t;
            if let Some(p) = std::env::var("DOSFS_TP_READ_PIECE")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                c.read_piece = p;
            }
            let path = format!("/tp-{round}-{t:?}");
            let a = c.create(&path, None, true).unwrap();
            let paths: Vec<_> = (0..c.servers())
                .map(|s| c.data_path(s).unwrap().to_string())
                .collect();
            let t0 = Instant::now();
            for k in 0..total / chunk {
                c.write_at(&a, (k * chunk) as u64, &data).unwrap();
            }
            let w_nosync = t0.elapsed();
            c.sync(&a).unwrap();
            let w = t0.elapsed();
            let a = c.stat(&path).unwrap();
            let mut back = vec![0u8; chunk];
            let t1 = Instant::now();
            for k in 0..total / chunk {
                c.read_at(&path, &a, (k * chunk) as u64, &mut back).unwrap();
            }
            let r = t1.elapsed();
            assert!(back == data);
            let mib = (total >> 20) as f64;
            println!(
                "TP round {round} {t:?} paths {} write {:.0} MiB/s (before sync {:.0}) read {:.0} MiB/s",
                paths.join(","),
                mib / w.as_secs_f64(),
                mib / w_nosync.as_secs_f64(),
                mib / r.as_secs_f64()
            );
            c.unlink(&path).unwrap();
        }
    }
}

/// Throughput between namespace hosts, TCP against RDMA (a benchmark):
/// 2 servers on dos-h2, a client on dos-h1.
///
/// ```text
/// cargo build --release -p dos-fs --bins
/// flock /tmp/dos-cluster.lock cargo test --release -p dos-fs --test rdma -- --ignored namespace_throughput --nocapture
/// ```
#[test]
#[ignore = "a benchmark on the namespace cluster (root, flock /tmp/dos-cluster.lock)"]
fn namespace_throughput() {
    let _g = serial();
    let Some(bin) = dosfs_bin().filter(|_| is_root()) else {
        return;
    };
    let servers = std::env::var("DOSFS_TP_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let ns = NsFs::up(bin, "rdma-tp", servers);
    let addr_file = ns.addr_file.clone();
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", "dos-h1"])
        .arg(&me)
        .args(["--exact", "namespace_tp_child", "--nocapture"])
        .env("DOSFS_RDMA_TP_CHILD", &addr_file)
        .env(
            "DOSFS_TP_READ_PIECE",
            std::env::var("DOSFS_TP_READ_PIECE").unwrap_or_default(),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child: {out:?}");
    for l in text.lines().filter(|l| l.starts_with("TP ")) {
        println!("{l}");
    }
}

/// Servers on namespace host dos-h2, a client on dos-h1 told
/// `DOS_FS_TRANSPORT=roce`: it gets RDMA to both, and every byte round
/// trips. Then a client here (root namespace, over the bridge) writing by
/// RDMA to a server on dos-h2 that is killed gets the typed error in 2 s.
#[test]
#[ignore = "needs root and the namespace cluster (flock /tmp/dos-cluster.lock)"]
fn namespace_roce() {
    let _g = serial();
    let Some(bin) = dosfs_bin().filter(|_| is_root()) else {
        return;
    };
    let ns = NsFs::up(bin, "rdma-ns", 2);
    let addr_file = ns.addr_file.clone();
    let me = std::env::current_exe().unwrap();
    let t = Instant::now();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", "dos-h1"])
        .arg(&me)
        .args(["--exact", "namespace_child", "--nocapture"])
        .env("DOSFS_RDMA_CHILD", &addr_file)
        .env("DOS_FS_TRANSPORT", "roce")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child: {out:?}");
    assert!(text.contains("DATAPATH roce,roce"), "{text}");
    assert!(text.contains("EXACT ok"), "{text}");
    eprintln!("round trips from dos-h1 in {:?}", t.elapsed());
    // `dosfs df` on dos-h1 shows the data path.
    let df = std::process::Command::new("ip")
        .args(["netns", "exec", "dos-h1", bin, "df", "--fs"])
        .arg(&addr_file)
        .env("DOS_FS_TRANSPORT", "roce")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&df.stdout);
    assert!(df.status.success(), "df: {df:?}");
    assert_eq!(text.matches(" roce").count(), 2, "{text}");
    let df = std::process::Command::new("ip")
        .args(["netns", "exec", "dos-h1", bin, "df", "--fs"])
        .arg(&addr_file)
        .env("DOS_FS_TRANSPORT", "tcp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&df.stdout);
    assert_eq!(text.matches(" tcp").count(), 2, "{text}");
    for signal in [libc::SIGKILL, libc::SIGSTOP] {
        kill_mid_transfer(
            &["ip", "netns", "exec", "dos-h2"],
            "198.18.0.2:0",
            DataPath::Roce,
            signal,
        );
    }
}

/// A server (here a fake one) whose grant the client cannot use: slots
/// out of bounds, or an address that does not decode. The client stays on
/// TCP on the same connection, in step: its next request is answered.
#[test]
fn an_unusable_grant_leaves_the_client_on_tcp() {
    use std::io::{Read, Write};
    let _g = serial();
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let grants = [
        (shm_max_slots() + 1, 4096, vec![1u8; 25]),
        (4, 4095, vec![1u8; 25]),
        (4, 4096, vec![0xffu8; 3]),
    ];
    for (count, size, addr) in grants {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap().to_string();
        let (s2, c2) = (secret.clone(), fsid);
        let fake = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let ctx = dos_fs::wire::auth_context(&c2);
            dos_transport::auth::handshake(
                &mut s,
                &s2,
                &ctx,
                dos_transport::auth::Role::Responder,
                0,
            )
            .unwrap();
            // Two requests: the setup, then a statfs.
            for _ in 0..2 {
                let mut h = [0u8; dos_fs::wire::HEADER_LEN];
                s.read_exact(&mut h).unwrap();
                let h = dos_fs::wire::Header::decode(&h).unwrap();
                let mut body = vec![0u8; h.len as usize];
                s.read_exact(&mut body).unwrap();
                let reply = match Request::decode(h.kind, &body).unwrap() {
                    Request::RoceSetup { .. } => Reply::RoceSlots {
                        count,
                        size,
                        addr: addr.clone(),
                        rkey: vec![b'R'; 21],
                    },
                    _ => Reply::Ok,
                };
                s.write_all(&reply.encode(h.id)).unwrap();
            }
        });
        let mut conn = Conn::connect_opts(
            &at,
            0,
            &fsid,
            &secret,
            Duration::from_secs(10),
            Liveness::default(),
            None,
            Some((4, 4096)),
        )
        .unwrap();
        assert_eq!(conn.data_path(), DataPath::Tcp, "{count} x {size}");
        assert_eq!(conn.call(&Request::Statfs).unwrap(), Reply::Ok);
        fake.join().unwrap();
    }
}

fn shm_max_slots() -> u32 {
    dos_fs::shm::MAX_SLOTS
}
