//! Servers and clients in one process, over real TCP on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::client::{Client, Conn};
use dos_fs::layout::LayoutSpec;
use dos_fs::server::{Server, ServerConfig, Service};
use dos_fs::target::{FsId, Target};
use dos_fs::wire::{Reply, Request};
use dos_fs::Error;
use dos_transport::auth::Secret;

struct Fs {
    dir: PathBuf,
    addr: AddrFile,
}

impl Drop for Fs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` servers on fresh targets, each serving from its own thread.
fn start(tag: &str, n: u32) -> Fs {
    let dir = std::env::temp_dir().join(format!("dosfs-svc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let mut servers = Vec::new();
    for i in 0..n {
        let t = Target::format(&dir.join(i.to_string()), fsid, i, n).unwrap();
        let svc = Service::open(&t).unwrap();
        let srv = Server::bind(
            svc,
            &fsid,
            secret.clone(),
            "127.0.0.1:0",
            ServerConfig::default(),
        )
        .unwrap();
        servers.push(ServerAddr {
            addr: srv.local_addr().unwrap().to_string(),
            pid: None,
        });
        std::thread::spawn(move || srv.serve());
    }
    Fs {
        dir,
        addr: AddrFile {
            fsid,
            secret,
            servers,
        },
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

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
        .join(format!("1/chunks/{:02x}/{:x}/3", a.ino & 0xff, a.ino));
    let mut b = std::fs::read(&p).unwrap();
    b[100] ^= 1;
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
