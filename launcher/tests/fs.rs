//! `dosrun --fs DIR` on this host: the ranks get `DOSFS`, the servers
//! answer during the job, the data stays in `DIR` for the next job,
//! `--fs-stage-out` copies it out bit for bit, a job whose rank fails still
//! syncs and stops its servers, and `dosfs up --hostfile` / `dosfs down`
//! run servers through dosrun.
//!
//! The test process itself is the file system's client (the `dos-fs`
//! library), reading the address file a rank copies out while it waits.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_with, TempDir};
use dos_fs::addrfile::AddrFile;
use dos_fs::client::Client;

/// A rank program: rank 0 copies `$DOSFS` to `ctl/addr`, every rank waits
/// for `ctl/go`, then exits with `code`.
fn waiting_rank(ctl: &Path, code: i32) -> String {
    let c = ctl.display();
    format!(
        "test -n \"$DOSFS\" || exit 9; \
         if [ $DOS_RANK = 0 ]; then cp \"$DOSFS\" {c}/tmp && mv {c}/tmp {c}/addr; fi; \
         while [ ! -e {c}/go ]; do sleep 0.01; done; exit {code}"
    )
}

/// Waits (bounded) for the address file a rank copied.
fn await_addr(ctl: &Path) -> (AddrFile, String) {
    let p = ctl.join("addr");
    let until = Instant::now() + common::LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&p) {
            let f = AddrFile::parse(&p, &text).expect("a valid address file");
            return (f, text);
        }
        assert!(Instant::now() < until, "no address file from the job");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Runs a job of `n` ranks with `--fs dir` (and `extra` options) whose ranks
/// wait; `during` runs as the job's client; returns the job's outcome.
fn with_job(
    n: usize,
    dir: &Path,
    extra: &[&str],
    code: i32,
    during: impl FnOnce(&Client, &AddrFile),
) -> common::Run {
    let ctl = TempDir::new("fsctl");
    let mut cmd = common::dosrun();
    cmd.args(["-n", &n.to_string(), "--fs"])
        .arg(dir)
        .args(extra)
        .args(["sh", "-c", &waiting_rank(ctl.path(), code)]);
    let job = std::thread::spawn(move || run_with(&mut cmd, b"", common::LIMIT));
    let (file, _) = await_addr(ctl.path());
    let c = Client::new(&file);
    during(&c, &file);
    drop(c);
    std::fs::write(ctl.path().join("go"), b"").unwrap();
    let r = job.join().unwrap();
    r.assert_no_panic();
    // The servers are gone with the job.
    for s in &file.servers {
        let addr = s.addr.parse().unwrap();
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
            "server {} still listens after the job",
            s.addr
        );
    }
    r
}

/// Two jobs over one directory: the first writes (and never syncs), the
/// second reads it back; a third stages it out, compared byte for byte.
#[test]
fn fs_per_job_keeps_data_and_stages_out() {
    let d = TempDir::new("fs");
    let dir = d.path().join("fs");
    let big = pattern(3 << 20, 7);
    let r = with_job(2, &dir, &[], 0, |c, f| {
        assert_eq!(f.servers.len(), 1, "one node, one server");
        assert!(f.servers[0].addr.starts_with("127.0.0.1:"));
        c.mkdir("/out").unwrap();
        let a = c.create("/out/big", None, true).unwrap();
        c.write_at(&a, 0, &big).unwrap();
        let a = c.create("/small", None, true).unwrap();
        c.write_at(&a, 0, b"hello").unwrap();
    });
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(dir.join("0").join("dosfs-target").is_file());
    assert!(!dir.join("dosfs-0.addr").exists(), "address file removed");

    let out = d.path().join("staged");
    let r = with_job(
        1,
        &dir,
        &["--fs-stage-out", out.to_str().unwrap()],
        0,
        |c, _| {
            let a = c.stat("/out/big").unwrap();
            assert_eq!(a.size, big.len() as u64);
            let mut back = vec![0; big.len()];
            c.read_at("/out/big", &a, 0, &mut back).unwrap();
            assert!(back == big, "data of the first job differs");
            let a = c.create("/later", None, true).unwrap();
            c.write_at(&a, 0, b"second job").unwrap();
        },
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stderr.contains("3 files copied"), "{}", r.stderr);
    assert!(std::fs::read(out.join("out/big")).unwrap() == big);
    assert_eq!(std::fs::read(out.join("small")).unwrap(), b"hello");
    assert_eq!(std::fs::read(out.join("later")).unwrap(), b"second job");
}

/// A rank that fails: the job's status is its, and the servers were synced
/// before they stopped (the next job reads what was written).
#[test]
fn fs_servers_stop_synced_when_a_rank_fails() {
    let d = TempDir::new("fsfail");
    let dir = d.path().join("fs");
    let r = with_job(2, &dir, &[], 3, |c, _| {
        let a = c.create("/x", None, true).unwrap();
        c.write_at(&a, 0, b"written before the failure").unwrap();
    });
    assert_eq!(r.code(), 3, "{r:?}");
    let r = with_job(1, &dir, &[], 0, |c, _| {
        let a = c.stat("/x").unwrap();
        let mut back = vec![0; a.size as usize];
        c.read_at("/x", &a, 0, &mut back).unwrap();
        assert_eq!(back, b"written before the failure");
    });
    assert_eq!(r.code(), 0, "{r:?}");
}

/// `--fs-stage-out` of a job whose rank failed: the file system is staged
/// out anyway (what a failed job wrote is what one inspects, or restarts
/// from), and dosrun's status is still the failed rank's.
#[test]
fn fs_stage_out_of_a_failed_job_copies_anyway_and_keeps_the_failure() {
    let d = TempDir::new("fsfailout");
    let dir = d.path().join("fs");
    let out = d.path().join("staged");
    let r = with_job(
        2,
        &dir,
        &["--fs-stage-out", out.to_str().unwrap()],
        3,
        |c, _| {
            c.mkdir("/ckpt").unwrap();
            let a = c.create("/ckpt/step7", None, true).unwrap();
            c.write_at(&a, 0, b"state before the failure").unwrap();
        },
    );
    assert_eq!(r.code(), 3, "{r:?}");
    assert!(r.stderr.contains("1 files copied"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(out.join("ckpt/step7")).unwrap(),
        b"state before the failure"
    );
}

/// A target of another file system stops the job before any rank runs.
#[test]
fn fs_refuses_a_foreign_target() {
    let d = TempDir::new("fsbad");
    let dir = d.path().join("fs");
    std::fs::create_dir_all(dir.join("0")).unwrap();
    std::fs::write(dir.join("0/junk"), b"x").unwrap();
    let r = common::run(&["-n", "1", "--fs", dir.to_str().unwrap(), "true"]);
    assert_eq!(r.code(), 2, "{r:?}");
    assert!(r.stderr.contains("dosrun: --fs:"), "{}", r.stderr);
    assert!(r.stderr.contains("not a dosfs target"), "{}", r.stderr);
}

/// The `dosfs` binary next to dosrun: the one `ci/test.sh` built with every
/// binary of the workspace, else built here.
pub fn dosfs_bin() -> PathBuf {
    let dosrun = Path::new(env!("CARGO_BIN_EXE_dosrun"));
    let bin = dosrun.with_file_name("dosfs");
    if bin.is_file() {
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut b = Command::new(cargo);
    b.args(["build", "-q", "-p", "dos-fs", "--bin", "dosfs"]);
    if dosrun.parent().and_then(|p| p.file_name()) == Some("release".as_ref()) {
        b.arg("--release");
    }
    let st = b.status().expect("run cargo build");
    assert!(
        st.success() && bin.is_file(),
        "cannot build {}",
        bin.display()
    );
    bin
}

/// `dosfs up --hostfile` with this host only, then the CLI against it,
/// then `dosfs down`: the dosrun that ran the servers is gone.
#[test]
fn dosfs_up_hostfile_and_down() {
    let d = TempDir::new("fsup");
    let hosts = d.path().join("hosts");
    std::fs::write(&hosts, "localhost\n").unwrap();
    let addr = d.path().join("fs.addr");
    let dosfs = dosfs_bin();
    let fs = |args: &[&str]| {
        let o = Command::new(&dosfs)
            .arg("--fs")
            .arg(&addr)
            .args(args)
            .env("PATH", path_with_dosrun())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, out) = fs(&[
        "up",
        "--hostfile",
        hosts.to_str().unwrap(),
        "--target",
        d.path().join("t").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let f = AddrFile::read(&addr).unwrap();
    let pid = f.servers[0].pid.expect("dosrun's pid");
    let src = d.path().join("in.bin");
    let data = pattern(1 << 20, 3);
    std::fs::write(&src, &data).unwrap();
    let (code, out) = fs(&["cp", src.to_str().unwrap(), ":/in.bin"]);
    assert_eq!(code, Some(0), "{out}");
    let back = d.path().join("back.bin");
    let (code, out) = fs(&["cp", ":/in.bin", back.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(std::fs::read(&back).unwrap() == data);
    let (code, out) = fs(&["down"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!addr.exists());
    let until = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "dosrun {pid} still runs");
    assert!(d.path().join("t/0/dosfs-target").is_file());
}

/// PATH with the dosrun under test first.
fn path_with_dosrun() -> std::ffi::OsString {
    let dir = Path::new(env!("CARGO_BIN_EXE_dosrun"))
        .parent()
        .unwrap()
        .to_owned();
    let mut p = std::ffi::OsString::from(dir);
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
