//! `dos::io` against real dosfs servers: the IOR-like patterns of the
//! `iocheck` program (segmented, strided, random noncontiguous, with holes,
//! independent, nonblocking; through vector, subarray and indexed views;
//! nonblocking collectives; overlapping writes in atomic mode), written and
//! read back, then read by a job of another size; and tests of views,
//! nonblocking collectives (started without waiting, completed in any
//! order) and atomic mode (reads never see two writes mixed, which they do
//! without it) on thread ranks.
//!
//! * On ranks that are threads (`run_threads`, and `run_cluster` for several
//!   nodes, so several aggregators), with servers in this process: no
//!   binaries needed.
//! * Under the real `dosrun` with servers started by the real
//!   `dosfs up --local 3`, N in {1, 2, 3, 4, 7}: build the binaries first
//!   (`cargo build --workspace --bins`, as ci/test.sh does); they are found
//!   next to this test's executable.
//! * Across the 3 hosts of the namespace cluster (root and `ip netns`, else
//!   skipped; the command is on `iocheck_across_namespace_hosts`).

#[path = "../../checks/src/iocheck.rs"]
mod iocheck;

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use dos::io::{File, Fs, FsErrorKind, Hints, Mode, View};
use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::server::{Server, ServerConfig, Service};
use dos_fs::target::{FsId, Target};
use dos_transport::auth::Secret;

/// A file system of `n` servers on threads of this process, over
/// temporary targets; its address file is written too.
struct InProcess {
    dir: PathBuf,
    fs: Fs,
}

impl InProcess {
    fn up(tag: &str, n: u32) -> InProcess {
        InProcess::up_partly(tag, n, n)
    }

    /// `n` servers of which only the first `started` run (the others'
    /// addresses refuse connections).
    fn up_partly(tag: &str, n: u32, started: u32) -> InProcess {
        let dir = std::env::temp_dir().join(format!("dos-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (fsid, secret) = (FsId::generate().unwrap(), Secret::generate().unwrap());
        let mut servers = Vec::new();
        for i in 0..n {
            let target = Target::format(&dir.join(i.to_string()), fsid, i, n).unwrap();
            if i >= started {
                let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                servers.push(ServerAddr {
                    addr: gone.local_addr().unwrap().to_string(),
                    pid: None,
                });
                continue;
            }
            let server = Server::bind(
                Service::open(&target).unwrap(),
                &fsid,
                secret.clone(),
                "127.0.0.1:0",
                ServerConfig::default(),
            )
            .unwrap();
            servers.push(ServerAddr {
                addr: server.local_addr().unwrap().to_string(),
                pid: None,
            });
            std::thread::spawn(move || server.serve());
        }
        let addr = dir.join("fs.addr");
        AddrFile {
            fsid,
            secret,
            servers,
        }
        .write(&addr)
        .unwrap();
        InProcess {
            fs: Fs::open(&addr).unwrap(),
            dir,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn all_ok(what: &str, res: Vec<Result<(), String>>) {
    for (r, x) in res.into_iter().enumerate() {
        if let Err(e) = x {
            panic!("{what}: rank {r}: {e}");
        }
    }
}

#[test]
fn patterns_on_thread_ranks_then_read_by_another_size() {
    let srv = InProcess::up("threads", 3);
    for n in [1, 2, 3, 4] {
        let dir = format!("/t{n}");
        let fs = &srv.fs;
        all_ok(
            &format!("write on {n}"),
            dos::testing::run_threads(n, |w| iocheck::write_check(&w, fs, &dir)),
        );
        let m = n % 4 + 1;
        all_ok(
            &format!("read on {m} of what {n} wrote"),
            dos::testing::run_threads(m, |w| iocheck::read_check(&w, fs, &dir)),
        );
    }
}

#[test]
fn patterns_on_two_nodes_use_one_aggregator_per_node() {
    let srv = InProcess::up("cluster", 3);
    let fs = &srv.fs;
    let aggs = dos::testing::run_cluster(&[2, 3], |w| {
        let f =
            File::open_with(&w, fs, "/aggs", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        f.aggregators().to_vec()
    });
    for a in aggs {
        assert_eq!(a, [0, 2]);
    }
    all_ok(
        "write on 2+3",
        dos::testing::run_cluster(&[2, 3], |w| iocheck::write_check(&w, fs, "/c")),
    );
    all_ok(
        "read on 1+1+1",
        dos::testing::run_cluster(&[1, 1, 1], |w| iocheck::read_check(&w, fs, "/c")),
    );
}

#[test]
fn open_agrees_on_errors_and_files() {
    let srv = InProcess::up("open", 2);
    let fs = &srv.fs;
    let res = dos::testing::run_threads(3, |w| {
        // Every rank gets the same typed error.
        let missing = File::open_with(&w, fs, "/none", Mode::READ_ONLY, Hints::default());
        let e = missing.unwrap_err();
        assert_eq!(e.fs_kind(), Some(FsErrorKind::NotFound), "{e}");
        let msg = e.to_string();
        // The same file on every rank, set_size and size.
        let f = File::open_with(&w, fs, "/f", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        f.set_size(12345).unwrap();
        assert_eq!(f.size().unwrap(), 12345);
        f.set_size(10).unwrap();
        assert_eq!(f.size().unwrap(), 10);
        let mut buf = [7u8; 20];
        assert_eq!(f.read_at(0, &mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], &[0; 10]);
        assert_eq!(&buf[10..], &[7; 10]);
        f.close().unwrap();
        w.barrier().unwrap();
        if w.rank() == 1 {
            File::delete(fs, "/f").unwrap();
        }
        w.barrier().unwrap();
        let gone = File::open_with(&w, fs, "/f", Mode::READ_ONLY, Hints::default());
        assert_eq!(gone.unwrap_err().fs_kind(), Some(FsErrorKind::NotFound));
        // A directory is not a file.
        if w.rank() == 0 {
            fs.client().mkdir("/d").unwrap();
        }
        w.barrier().unwrap();
        let dir = File::open_with(&w, fs, "/d", Mode::READ_ONLY, Hints::default());
        assert_eq!(dir.unwrap_err().fs_kind(), Some(FsErrorKind::IsADirectory));
        msg
    });
    assert!(res.iter().all(|m| *m == res[0]), "{res:?}");
    // Bad aggregator hints are refused before anything is sent.
    let bad = dos::testing::run_threads(2, |w| {
        let hints = Hints {
            aggregators: Some(vec![1, 0]),
            ..Hints::default()
        };
        matches!(
            File::open_with(&w, fs, "/g", Mode::READ_WRITE.create(), hints),
            Err(dos::io::Error::InvalidArgument { .. })
        )
    });
    assert!(bad.iter().all(|&b| b));
}

#[test]
fn a_server_down_is_the_same_error_on_every_rank() {
    // Two servers formatted, the second never started: its address refuses.
    let srv = InProcess::up_partly("down", 2, 1);
    let fs = &srv.fs;
    let res = dos::testing::run_threads(3, |w| {
        let f = File::open_with(&w, fs, "/x", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        assert_eq!(f.layout().stripe_count, 2);
        // 2 MiB from each rank: stripes on both servers.
        let data = vec![w.rank() as u8; 2 << 20];
        let e = f
            .write_at_all(w.rank() as u64 * (2 << 20), &data)
            .unwrap_err();
        assert_eq!(e.fs_kind(), Some(FsErrorKind::ServerDown), "{e}");
        let e2 = f.sync().unwrap_err();
        assert_eq!(e2.fs_kind(), Some(FsErrorKind::ServerDown), "{e2}");
        // A nonblocking write meets it too, as its request's error.
        let e3 = dos::scope(|s| f.iwrite_at(s, 0, &data).unwrap().wait()).unwrap_err();
        assert_eq!(e3.fs_kind(), Some(FsErrorKind::ServerDown), "{e3}");
        // And a nonblocking collective one, agreed like the blocking one.
        let e4 = dos::scope(|s| {
            f.iwrite_at_all(s, w.rank() as u64 * (2 << 20), &data)
                .unwrap()
                .wait()
        })
        .unwrap_err();
        assert_eq!(e4.fs_kind(), Some(FsErrorKind::ServerDown), "{e4}");
        assert_eq!(e4.to_string(), e.to_string());
        e.to_string()
    });
    assert!(res.iter().all(|m| *m == res[0]), "{res:?}");
    assert!(res[0].contains("server 1"), "{}", res[0]);
}

#[test]
fn nonblocking_reads_and_writes_complete_as_requests() {
    let srv = InProcess::up("nb", 2);
    let fs = &srv.fs;
    dos::testing::run_threads(2, |w| {
        let f =
            File::open_with(&w, fs, "/nb", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let (me, other) = (w.rank() as u64, 1 - w.rank() as u64);
        let a = vec![me as u8 + 1; 300_000];
        let b = vec![me as u8 + 11; 5000];
        dos::scope(|s| {
            let r1 = f.iwrite_at(s, me * 400_000, &a).unwrap();
            let r2 = f.iwrite_at(s, me * 400_000 + 300_000, &b).unwrap();
            // Messages go on meanwhile.
            let mut x = [0u64];
            w.sendrecv(&[me], other as usize, 0, &mut x, other as usize, 0)
                .unwrap();
            assert_eq!(x, [other]);
            assert_eq!(r2.wait().unwrap(), 5000);
            assert_eq!(r1.wait().unwrap(), 300_000);
        });
        f.sync().unwrap();
        let mut back = vec![0u8; 305_000];
        dos::scope(|s| {
            let r = f.iread_at(s, other * 400_000, &mut back).unwrap();
            assert_eq!(r.wait().unwrap(), 305_000);
        });
        assert!(back[..300_000].iter().all(|&x| x == other as u8 + 1));
        assert!(back[300_000..].iter().all(|&x| x == other as u8 + 11));
        // Across the end of the file (705000 bytes).
        let mut tail = vec![9u8; 10_000];
        dos::scope(|s| {
            let r = f.iread_at(s, 700_000, &mut tail).unwrap();
            while !r.test() {}
            assert_eq!(r.wait().unwrap(), 5000);
        });
        assert!(tail[..5000].iter().all(|&x| x == 12));
        assert!(tail[5000..].iter().all(|&x| x == 9));
        let ro = File::open_with(&w, fs, "/nb", Mode::READ_ONLY, Hints::default()).unwrap();
        let refused = dos::scope(|s| ro.iwrite_at(s, 0, &a).map(drop));
        assert!(matches!(refused, Err(dos::io::Error::Access { .. })));
    });
}

/// Every rank writes the same 8 stripes, each time all of one value, and
/// reads them back `iters` times; returns how many reads mixed two writes.
fn overlapping_writes(w: &dos::World, fs: &Fs, path: &str, atomic: bool, iters: u64) -> u64 {
    let hints = Hints {
        layout: Some(dos::io::LayoutSpec {
            stripe_size: 64 << 10,
            stripe_count: dos::io::LayoutSpec::ALL,
            first: dos::io::LayoutSpec::ANY,
        }),
        ..Hints::default()
    };
    let f = File::open_with(w, fs, path, Mode::READ_WRITE.create(), hints).unwrap();
    f.set_atomicity(atomic).unwrap();
    assert_eq!(f.atomicity(), atomic);
    let region = 8 * (64 << 10) + 777;
    let mut back = vec![0u8; region];
    let mut mixed = 0;
    for it in 0..iters {
        let tag = (w.rank() as u64 * iters + it + 1) as u8;
        f.write_at(0, &vec![tag; region]).unwrap();
        assert_eq!(f.read_at(0, &mut back).unwrap(), region);
        mixed += u64::from(back.iter().any(|&b| b != back[0]));
    }
    f.set_atomicity(false).unwrap();
    f.close().unwrap();
    mixed
}

#[test]
fn atomic_mode_keeps_overlapping_writes_whole() {
    let srv = InProcess::up("atomic", 3);
    let fs = &srv.fs;
    let mixed = dos::testing::run_threads(4, |w| overlapping_writes(&w, fs, "/a", true, 12));
    assert_eq!(mixed, vec![0; 4], "reads that mixed two writes, by rank");
    // Without it, the same writes may interleave (how often depends on the
    // machine's load: only reported).
    let mixed = dos::testing::run_threads(4, |w| overlapping_writes(&w, fs, "/b", false, 12));
    eprintln!("without atomic mode, mixed reads by rank: {mixed:?}");
}

#[test]
fn atomicity_flags_must_agree() {
    let srv = InProcess::up("atomflags", 1);
    let fs = &srv.fs;
    let res = dos::testing::run_threads(2, |w| {
        let f = File::open_with(&w, fs, "/f", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let e = f.set_atomicity(w.rank() == 0).unwrap_err();
        assert!(!f.atomicity());
        // Still usable, and the mode can then be set.
        f.set_atomicity(true).unwrap();
        assert!(f.atomicity());
        f.write_at(w.rank() as u64, b"x").unwrap();
        e.to_string()
    });
    assert!(res[0].contains("different flags"), "{res:?}");
    assert!(res[1].contains("different flags"), "{res:?}");
}

#[test]
fn atomic_mode_across_nodes() {
    let srv = InProcess::up("atomic2", 2);
    let fs = &srv.fs;
    let mixed = dos::testing::run_cluster(&[1, 2], |w| overlapping_writes(&w, fs, "/a", true, 6));
    assert_eq!(mixed, vec![0; 3]);
}

#[test]
fn views_map_offsets_and_check_them() {
    let srv = InProcess::up("views", 2);
    let fs = &srv.fs;
    dos::testing::run_threads(2, |w| {
        let f = File::open_with(&w, fs, "/v", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let me = w.rank() as u64;
        // Interleaved 10-byte blocks, 2-byte etypes; offsets count etypes.
        let v = View::new(2, &[(0, 10)], 20).unwrap();
        f.set_view(10 * me, v.clone()).unwrap();
        assert_eq!(f.view(), (10 * me, v));
        let data: Vec<u8> = (0..40).map(|i| (me * 100 + i) as u8).collect();
        f.write_at_all(0, &data[..20]).unwrap();
        f.write_at(10, &data[20..]).unwrap(); // 10 etypes = 20 bytes on
        f.sync().unwrap();
        let mut back = vec![0u8; 36];
        assert_eq!(f.read_at_all(2, &mut back).unwrap(), 36);
        assert_eq!(back, data[4..]);
        // Nonblocking independent calls go through the view too.
        let more: Vec<u8> = (0..10).map(|i| (me * 100 + 40 + i) as u8).collect();
        let mut again = vec![0u8; 46];
        dos::scope(|s| {
            assert_eq!(f.iwrite_at(s, 20, &more).unwrap().wait().unwrap(), 10);
        });
        f.sync().unwrap();
        dos::scope(|s| {
            assert_eq!(f.iread_at(s, 2, &mut again).unwrap().wait().unwrap(), 46);
        });
        assert_eq!(&again[..36], &data[4..]);
        assert_eq!(&again[36..], &more[..]);
        // Bytes past the end of the view's last piece in the file.
        let mut tail = vec![7u8; 30];
        let n = f.read_at(20, &mut tail).unwrap();
        assert_eq!(n, 10);
        assert_eq!(&tail[..10], &more[..]);
        assert_eq!(&tail[10..], &[7; 20]);
        // An offset whose file position overflows is a typed error.
        let e = f.write_at(u64::MAX / 2, b"xy").unwrap_err();
        assert!(matches!(e, dos::io::Error::InvalidArgument { .. }), "{e}");
        f.set_view(0, View::default()).unwrap();
        let mut all = vec![0u8; 100];
        assert_eq!(f.read_at(0, &mut all).unwrap(), 100);
        for (k, blk) in all.chunks(10).enumerate() {
            let (r, j) = (k as u64 % 2, k as u64 / 2);
            let want: Vec<u8> = (0..10).map(|i| (r * 100 + j * 10 + i) as u8).collect();
            assert_eq!(blk, &want[..], "block {k}");
        }
    });
}

#[test]
fn nonblocking_collectives_complete_in_any_order() {
    let srv = InProcess::up("nbcoll", 2);
    let fs = &srv.fs;
    dos::testing::run_threads(3, |w| {
        let f = File::open_with(&w, fs, "/n", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let me = w.rank() as u64;
        let block = |k: u64| vec![(k * 3 + me + 1) as u8; 5000];
        dos::scope(|s| {
            let mut reqs: Vec<_> = (0..3)
                .map(|k| f.iwrite_at_all(s, (k * 3 + me) * 5000, &block(k)).unwrap())
                .collect();
            // Collectives on the world and the file's communicator meanwhile.
            let mut sum = [0u64];
            w.allreduce(&[me], &mut sum, dos::op::Sum).unwrap();
            assert_eq!(sum, [3]);
            f.comm().barrier().unwrap();
            // Each rank completes them in another order; one is dropped.
            reqs.rotate_left(me as usize);
            let dropped = reqs.pop().unwrap();
            for r in reqs {
                assert_eq!(r.wait().unwrap(), 5000);
            }
            drop(dropped);
        });
        f.sync().unwrap();
        let mut back = vec![0u8; 45_000];
        let n = dos::scope(|s| f.iread_at_all(s, 0, &mut back).unwrap().wait()).unwrap();
        assert_eq!(n, 45_000);
        for (i, blk) in back.chunks(5000).enumerate() {
            assert!(blk.iter().all(|&b| b == i as u8 + 1), "block {i}");
        }
        // Past the end: the count says how many were in the file.
        let mut over = vec![0u8; 10_000];
        let n = dos::scope(|s| f.iread_at_all(s, 40_000, &mut over).unwrap().wait()).unwrap();
        assert_eq!(n, 5000);
        let ro = File::open_with(&w, fs, "/n", Mode::READ_ONLY, Hints::default()).unwrap();
        let refused = dos::scope(|s| ro.iwrite_at_all(s, 0, b"x").map(drop));
        assert!(matches!(refused, Err(dos::io::Error::Access { .. })));
    });
}

#[test]
fn nonblocking_collectives_start_without_waiting_for_the_others() {
    let srv = InProcess::up("nbstart", 2);
    let fs = &srv.fs;
    let polls = dos::testing::run_threads(2, |w| {
        let f = File::open_with(&w, fs, "/s", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let me = w.rank() as u64;
        if me == 1 {
            // Rank 0 starts and tests meanwhile, without waiting for this one.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let data = vec![me as u8 + 1; 100_000];
        let mut back = vec![0u8; 200_000];
        dos::scope(|s| {
            let t0 = std::time::Instant::now();
            let r = f.iwrite_at_all(s, me * 100_000, &data).unwrap();
            let started = t0.elapsed();
            let mut polls = 0u32;
            while !r.test() {
                polls += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(r.wait().unwrap(), 100_000);
            // A read after it, started and completed the same way.
            let r = f.iread_at_all(s, 0, &mut back).unwrap();
            while !r.test() {}
            assert_eq!(r.wait().unwrap(), 200_000);
            (started, polls)
        })
    });
    let (started, polls) = polls[0];
    assert!(
        started < std::time::Duration::from_millis(250),
        "{started:?}"
    );
    assert!(polls > 0, "rank 0's test completed before rank 1 started");
}

/// What atomic mode costs: every rank writes its own 64 KiB blocks with
/// `write_at` (no overlap), with and without atomic mode, side by side;
/// prints the medians of 3 runs of 100 writes per rank. Run alone:
///
/// ```text
/// cargo test --release -p dos --test io atomic_mode_cost -- --ignored --nocapture
/// ```
#[test]
#[ignore]
fn atomic_mode_cost() {
    let srv = InProcess::up("atomcost", 3);
    let fs = &srv.fs;
    for layout in [&[4usize][..], &[2, 2]] {
        let mut times = [Vec::new(), Vec::new()];
        for run in 0..3 {
            for (k, atomic) in [false, true].into_iter().enumerate() {
                let t = dos::testing::run_cluster(layout, |w| {
                    let path = format!("/cost{run}{k}");
                    let f =
                        File::open_with(&w, fs, &path, Mode::READ_WRITE.create(), Hints::default())
                            .unwrap();
                    f.set_atomicity(atomic).unwrap();
                    let block = vec![w.rank() as u8; 64 << 10];
                    w.barrier().unwrap();
                    let t0 = std::time::Instant::now();
                    for i in 0..100u64 {
                        f.write_at((i * w.size() as u64 + w.rank() as u64) << 16, &block)
                            .unwrap();
                    }
                    w.barrier().unwrap();
                    t0.elapsed().as_secs_f64()
                });
                times[k].push(t[0]);
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (off, on) = (med(&mut times[0]), med(&mut times[1]));
        eprintln!(
            "atomic mode cost, nodes {layout:?}, 100 x 64 KiB write_at per rank: off {:.1} ms, on {:.1} ms, ratio {:.2}",
            off * 1e3,
            on * 1e3,
            on / off
        );
    }
}

// ----- under the real dosrun -----

/// `target/<profile>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Servers started with the real `dosfs up --local`; stopped with
/// `dosfs down`, and killed by pid if that fails.
struct Standing {
    dir: PathBuf,
    addr: PathBuf,
    dosfs: PathBuf,
}

impl Standing {
    fn up(tag: &str, n: u32) -> Standing {
        Standing::up_on(tag, n, "127.0.0.1")
    }

    /// [`Standing::up`] with the servers listening on `host`.
    fn up_on(tag: &str, n: u32, host: &str) -> Standing {
        let dosfs = profile_dir().join("dosfs");
        assert!(
            dosfs.is_file(),
            "{} is missing: build with `cargo build --workspace --bins`",
            dosfs.display()
        );
        let dir = std::env::temp_dir().join(format!("dos-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = Standing {
            addr: dir.join("fs.addr"),
            dir,
            dosfs,
        };
        let o = s.dosfs(&[
            "up",
            "--local",
            &n.to_string(),
            "--target",
            s.dir.join("targets").to_str().unwrap(),
            "--host",
            host,
        ]);
        assert!(o.status.success(), "dosfs up failed: {o:?}");
        s
    }

    fn dosfs(&self, args: &[&str]) -> Output {
        Command::new(&self.dosfs)
            .arg("--fs")
            .arg(&self.addr)
            .args(args)
            .output()
            .unwrap()
    }

    /// `DOSFS=addr dosrun -n N iocheck MODE DIR`.
    fn iocheck(&self, n: usize, mode: &str, dir: &str) -> Output {
        Command::new(common::dosrun())
            .env("DOSFS", &self.addr)
            .args(["-n", &n.to_string(), "--timeout", "120", "--"])
            .arg(common::check("iocheck"))
            .args([mode, dir])
            .output()
            .unwrap()
    }
}

impl Drop for Standing {
    fn drop(&mut self) {
        if let Ok(f) = AddrFile::read(&self.addr) {
            let _ = self.dosfs(&["down"]);
            for pid in f.servers.iter().filter_map(|s| s.pid) {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    // SAFETY: kill has no memory effects; the pid is a server this test started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_ok(o: &Output, want: &str) {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && out.lines().any(|l| l == want),
        "expected {want:?}: {}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        o.status
    );
}

#[test]
fn iocheck_under_dosrun_with_three_servers() {
    let s = Standing::up("dosrun", 3);
    for n in [1, 2, 3, 4, 7] {
        let dir = format!("/run{n}");
        assert_ok(
            &s.iocheck(n, "write", &dir),
            &format!("iocheck: OK write {n} ranks"),
        );
        let m = if n == 7 { 2 } else { n + 1 };
        assert_ok(
            &s.iocheck(m, "read", &dir),
            &format!("iocheck: OK read {m} ranks"),
        );
    }
    // Servers restarted on their targets still have every synced byte.
    let o = s.dosfs(&["down"]);
    assert!(o.status.success(), "dosfs down: {o:?}");
    let o = s.dosfs(&[
        "up",
        "--local",
        "3",
        "--target",
        s.dir.join("targets").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "dosfs up again: {o:?}");
    assert_ok(&s.iocheck(3, "read", "/run7"), "iocheck: OK read 3 ranks");
}

/// The namespace cluster of `ci/cluster.sh` (3 hosts x 2 slots): servers on
/// the bridge address, jobs of 6 and 3 ranks over the hosts (one aggregator
/// per host), files read back by a job of another size. Needs root and the
/// cluster to itself (run alone, or under the lock that other users of the
/// cluster take); skipped, saying why, when not root or without `ip netns`:
///
/// ```text
/// cargo build --workspace --bins
/// flock /tmp/dos-cluster.lock cargo test -p dos --test io across_namespace_hosts
/// ```
#[test]
fn iocheck_across_namespace_hosts() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root");
        return;
    }
    if !Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: `ip netns` is unavailable");
        return;
    }
    let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/cluster.sh");
    let up = Command::new(&cluster).args(["up", "3"]).output().unwrap();
    struct Down(PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new(&self.0).arg("down").output();
        }
    }
    let _down = Down(cluster.clone());
    assert!(up.status.success(), "cluster.sh up 3: {up:?}");
    let s = Standing::up_on("multi", 3, "198.18.0.254");
    let state = "/tmp/dos-cluster";
    let run = |n: usize, mode: &str, dir: &str| {
        Command::new(common::dosrun())
            .args(["--hostfile", &format!("{state}/hostfile"), "--launch-agent"])
            .arg(format!("ssh -F {state}/ssh_config -o BatchMode=yes"))
            .args(["-n", &n.to_string(), "--timeout", "180", "-x"])
            .arg(format!("DOSFS={}", s.addr.display()))
            .arg("--")
            .arg(common::check("iocheck"))
            .args([mode, dir])
            .output()
            .unwrap()
    };
    assert_ok(&run(6, "write", "/m6"), "iocheck: OK write 6 ranks");
    assert_ok(&run(4, "read", "/m6"), "iocheck: OK read 4 ranks");
    assert_ok(&run(3, "write", "/m3"), "iocheck: OK write 3 ranks");
    assert_ok(&run(5, "read", "/m3"), "iocheck: OK read 5 ranks");
}

/// Segmented collective calls (the ranks' spans share no stripe: the direct
/// path, one allgather and each rank on its own): lists with holes written,
/// read back by another rank, and a read across the end of the file counts
/// each rank's own bytes below the size.
#[test]
fn direct_collective_calls_count_each_ranks_bytes() {
    let srv = InProcess::up("direct", 2);
    let fs = &srv.fs;
    const SEG: u64 = 3 << 20;
    dos::testing::run_threads(3, |w| {
        let f = File::open_with(&w, fs, "/d", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let me = w.rank() as u64;
        let (a, b) = (vec![me as u8 + 1; 100_000], vec![me as u8 + 11; 50_000]);
        f.write_at_all_list(&[(me * SEG, &a), (me * SEG + 200_000, &b)])
            .unwrap();
        f.sync().unwrap();
        // The next rank's segment, its hole reading as zeros.
        let next = (me + 1) % 3;
        let mut back = vec![9u8; 250_000];
        assert_eq!(f.read_at_all(next * SEG, &mut back).unwrap(), 250_000);
        assert!(back[..100_000].iter().all(|&x| x == next as u8 + 1));
        assert!(back[100_000..200_000].iter().all(|&x| x == 0));
        assert!(back[200_000..].iter().all(|&x| x == next as u8 + 11));
        // The file ends at 2 * SEG + 250000: the last rank reads past it.
        let mut tail = vec![9u8; 100_000];
        let n = f.read_at_all(me * SEG + 200_000, &mut tail).unwrap();
        assert_eq!(n, if me == 2 { 50_000 } else { 100_000 });
        assert!(tail[..50_000].iter().all(|&x| x == me as u8 + 11));
        assert!(tail[50_000..]
            .iter()
            .all(|&x| x == 0 || (me == 2 && x == 9)));
    });
}

/// This thread's CPU time.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, nothing else.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A rank that reaches a collective call before the others waits for them
/// asleep, not spinning on the cores the servers need (`io/quiet.rs`). Rank
/// 0's CPU over 40 direct-path `write_at_all` calls and a sync is measured
/// twice: both ranks on time, then rank 1 arriving 3 ms late at each. With
/// the engine's spin (1 ms, then yielding, per wait) the late phase costs
/// rank 0 over 40 ms more; asleep, a few wake-ups.
#[test]
fn a_rank_waiting_in_collective_io_does_not_spin() {
    let srv = InProcess::up("quiet", 1);
    let fs = &srv.fs;
    const CALLS: u64 = 40;
    let cpu = dos::testing::run_threads(2, |w| {
        let f = File::open_with(&w, fs, "/q", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let me = w.rank() as u64;
        let data = vec![me as u8 + 1; 4096];
        let mut used = Vec::new();
        for (phase, late) in [(0, 0), (1, 3000)] {
            w.barrier().unwrap();
            let t0 = thread_cpu();
            for i in 0..CALLS {
                if me == 1 {
                    std::thread::sleep(std::time::Duration::from_micros(late));
                }
                let at = ((phase * 2 + me) * CALLS + i) * 4096;
                f.write_at_all(at, &data).unwrap();
            }
            f.sync().unwrap();
            used.push(thread_cpu() - t0);
        }
        let mut back = vec![0u8; 4096];
        f.read_at(((2 + 1 - me) * CALLS + 7) * 4096, &mut back)
            .unwrap();
        assert!(back.iter().all(|&x| x == 2 - me as u8));
        f.close().unwrap();
        used
    });
    let extra = cpu[0][1].saturating_sub(cpu[0][0]);
    assert!(
        extra < std::time::Duration::from_millis(20),
        "rank 0 used {extra:?} more CPU when rank 1 came 3 ms late to each of {CALLS} calls \
         (on time {:?}, late {:?}; spinning 1 ms per wait costs 40 ms)",
        cpu[0][0],
        cpu[0][1]
    );
}

/// A server whose writes take `delay_us` (changeable while it runs).
struct SlowWrites {
    inner: Service,
    delay_us: Arc<std::sync::atomic::AtomicU64>,
}

impl dos_fs::server::Handler for SlowWrites {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn handle(&self, req: dos_fs::wire::Request) -> dos_fs::wire::Reply {
        if matches!(req, dos_fs::wire::Request::Write { .. }) {
            let us = self.delay_us.load(std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_micros(us));
        }
        self.inner.handle(req)
    }
}

/// Waiting for an independent nonblocking write (`iwrite_at`, done by a
/// thread of its own) sleeps until that thread is done (`io/quiet.rs`):
/// with the server taking 3 ms per write, 80 writes waited for one at a
/// time cost the rank's thread under 20 ms more CPU than with a fast
/// server; the engine's spin (1 ms per wait, then yielding) measured
/// 52 ms.
#[test]
fn waiting_for_a_nonblocking_write_does_not_spin() {
    let dir = std::env::temp_dir().join(format!("dos-io-nbquiet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (fsid, secret) = (FsId::generate().unwrap(), Secret::generate().unwrap());
    let target = Target::format(&dir.join("0"), fsid, 0, 1).unwrap();
    let delay_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let server = Server::bind_handler(
        Arc::new(SlowWrites {
            inner: Service::open(&target).unwrap(),
            delay_us: delay_us.clone(),
        }),
        &fsid,
        secret.clone(),
        "127.0.0.1:0",
        ServerConfig::default(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    std::thread::spawn(move || server.serve());
    let addr_file = dir.join("fs.addr");
    AddrFile {
        fsid,
        secret,
        servers: vec![ServerAddr { addr, pid: None }],
    }
    .write(&addr_file)
    .unwrap();
    let fs = Fs::open(&addr_file).unwrap();
    const CALLS: u64 = 80;
    let used = dos::testing::run_threads(1, |w| {
        let f =
            File::open_with(&w, &fs, "/n", Mode::READ_WRITE.create(), Hints::default()).unwrap();
        let data = vec![5u8; 4096];
        let mut used = Vec::new();
        for (phase, us) in [(0u64, 0u64), (1, 3000)] {
            delay_us.store(us, std::sync::atomic::Ordering::SeqCst);
            let t0 = thread_cpu();
            for i in 0..CALLS {
                dos::scope(|s| -> dos::io::Result<()> {
                    f.iwrite_at(s, (phase * CALLS + i) * 4096, &data)?.wait()?;
                    Ok(())
                })
                .unwrap();
            }
            used.push(thread_cpu() - t0);
        }
        f.close().unwrap();
        used
    });
    let _ = std::fs::remove_dir_all(&dir);
    let extra = used[0][1].saturating_sub(used[0][0]);
    assert!(
        extra < std::time::Duration::from_millis(20),
        "waiting for {CALLS} slow writes took {extra:?} more CPU (fast {:?}, slow {:?}; \\
         spinning 1 ms per wait costs up to 80 ms)",
        used[0][0],
        used[0][1]
    );
}
