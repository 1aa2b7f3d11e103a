//! The real `dosfs` binary: `up --local 3`, the CLI, faults, `down`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dos_fs::addrfile::AddrFile;

/// A file system of `n` local servers in a fresh directory; `down` on drop.
struct Fs {
    dir: PathBuf,
    addr: PathBuf,
}

impl Fs {
    fn up(tag: &str, n: u32) -> Fs {
        let dir = std::env::temp_dir().join(format!("dosfs-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fs = Fs {
            addr: dir.join("fs.addr"),
            dir,
        };
        fs.ok(&[
            "up",
            "--local",
            &n.to_string(),
            "--target",
            fs.targets().to_str().unwrap(),
        ]);
        fs
    }

    fn targets(&self) -> PathBuf {
        self.dir.join("targets")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dosfs"))
            .arg("--fs")
            .arg(&self.addr)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "dosfs {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "dosfs {args:?} succeeded");
        String::from_utf8(o.stderr).unwrap()
    }

    fn file(&self) -> AddrFile {
        AddrFile::read(&self.addr).unwrap()
    }

    fn local(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        if let Ok(f) = AddrFile::read(&self.addr) {
            let _ = self.run(&["down"]);
            // Whatever `down` left (it failed?): only our own servers' pids.
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

fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn cp_in_and_out_bit_exact_layouts_and_restart() {
    let fs = Fs::up("cp", 3);
    let mode = std::fs::metadata(&fs.addr).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let data = random_file(&fs.local("in.bin"), 3_000_017, 1);
    fs.ok(&["mkdir", "-p", "/a/b"]);
    let out = fs.ok(&["setstripe", "-S", "64K", "-c", "2", "/a/b"]);
    assert!(out.contains("stripe_size:  65536"), "{out}");
    fs.ok(&["cp", "in.bin", ":/a/b/"]);
    let g = fs.ok(&["getstripe", "/a/b/in.bin"]);
    assert!(
        g.contains("stripe_size:  65536") && g.contains("stripe_count: 2"),
        "{g}"
    );
    // Every command also takes a path written as cp writes the dosfs side.
    assert_eq!(fs.ok(&["getstripe", ":/a/b/in.bin"]), g);
    assert_eq!(fs.ok(&["getstripe", "dosfs:/a/b/in.bin"]), g);
    // setstripe on a new file makes it with that layout; on an existing one it fails.
    let g = fs.ok(&["setstripe", "-S", "1M", "-c", "-1", "-i", "2", "/wide"]);
    assert!(
        g.contains("stripe_count: 3") && g.contains("servers:      2 0 1"),
        "{g}"
    );
    let e = fs.fails(&["setstripe", "-c", "1", "/wide"]);
    assert!(e.contains("cannot change"), "{e}");
    fs.ok(&["cp", "in.bin", ":/wide"]);
    fs.ok(&["cp", ":/a/b/in.bin", "out.bin"]);
    assert!(std::fs::read(fs.local("out.bin")).unwrap() == data);
    let ls = fs.ok(&["ls", "-l", "/a/b"]);
    assert!(ls.contains("3000017") && ls.contains("in.bin"), "{ls}");
    fs.ok(&["mv", "/a/b/in.bin", "/moved"]);
    let st = fs.ok(&["stat", "/moved"]);
    assert!(st.contains("size: 3000017"), "{st}");
    let df = fs.ok(&["df"]);
    assert_eq!(df.lines().count(), 4, "{df}");
    let v = fs.ok(&["verify"]);
    assert!(v.contains("verified 2 files") && v.contains("0 bad"), "{v}");

    // Restart on the same targets: every synced byte reads back.
    fs.ok(&["down"]);
    assert!(!fs.addr.exists());
    fs.ok(&[
        "up",
        "--local",
        "3",
        "--target",
        fs.targets().to_str().unwrap(),
    ]);
    fs.ok(&["cp", ":/moved", "again.bin"]);
    assert!(std::fs::read(fs.local("again.bin")).unwrap() == data);
    fs.ok(&["cp", ":/wide", "wide.bin"]);
    assert!(std::fs::read(fs.local("wide.bin")).unwrap() == data);
    fs.ok(&["rm", "-r", "/a"]);
    assert_eq!(
        fs.ok(&["ls", "/"]).lines().collect::<Vec<_>>(),
        ["moved", "wide"]
    );
    // A file system of another size on these targets is refused.
    fs.ok(&["down"]);
    let o = Command::new(env!("CARGO_BIN_EXE_dosfs"))
        .args([
            "--fs",
            fs.addr.to_str().unwrap(),
            "up",
            "--local",
            "2",
            "--target",
        ])
        .arg(fs.targets())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 servers"));
}

#[test]
fn killed_server_is_named_within_two_seconds_and_data_survives_restart() {
    let fs = Fs::up("kill", 3);
    let data = random_file(&fs.local("in.bin"), 2 << 20, 2);
    fs.ok(&["setstripe", "-S", "64K", "-c", "-1", "/f"]);
    fs.ok(&["cp", "in.bin", ":/f"]);
    let victim = fs.file().servers[1].pid.unwrap();
    // SAFETY: kill has no memory effects; the pid is a server this test started.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let t = Instant::now();
    let e = fs.fails(&["cp", ":/f", "out.bin"]);
    let took = t.elapsed();
    assert!(e.contains("server 1") && e.contains("unreachable"), "{e}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Metadata still answers (server 0 is alive).
    assert!(fs.ok(&["stat", "/f"]).contains("size: 2097152"));
    // Restart all servers on their targets.
    let _ = fs.run(&["down"]);
    fs.ok(&[
        "up",
        "--local",
        "3",
        "--target",
        fs.targets().to_str().unwrap(),
    ]);
    fs.ok(&["cp", ":/f", "out.bin"]);
    assert!(std::fs::read(fs.local("out.bin")).unwrap() == data);
}

#[test]
fn corrupted_chunk_is_found_by_verify_and_refused_by_read() {
    let fs = Fs::up("corrupt", 3);
    random_file(&fs.local("in.bin"), 300_000, 3);
    fs.ok(&["setstripe", "-S", "64K", "-c", "3", "-i", "0", "/f"]);
    fs.ok(&["cp", "in.bin", ":/f"]);
    let ino: u64 = fs
        .ok(&["stat", "/f"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("inode: ").map(|v| v.parse().unwrap()))
        .unwrap();
    // Stripe 4 (offset 262144) is on server 4 % 3 = 1.
    let chunk = fs
        .targets()
        .join(format!("1/chunks/{:02x}/{ino:x}/d0", ino & 0xff));
    // Its data object holds it at 4 x 64 KiB (fs/src/chunk.rs).
    let mut b = std::fs::read(&chunk).unwrap();
    b[262_144 + 1000] ^= 0xff;
    std::fs::write(&chunk, &b).unwrap();
    let o = fs.run(&["verify"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("BAD /f offset 262144 (server 1)"), "{out}");
    let e = fs.fails(&["cp", ":/f", "out.bin"]);
    assert!(e.contains("/f: corrupted data at offset 262144"), "{e}");
}

#[test]
fn path_traversal_and_bad_names_are_refused() {
    let fs = Fs::up("paths", 2);
    random_file(&fs.local("x"), 10, 4);
    for args in [
        vec!["mkdir", "/a/../b"],
        vec!["mkdir", ".."],
        vec!["cp", "x", ":/../../etc/passwd"],
        vec!["stat", "/a/./b"],
    ] {
        let e = fs.fails(&args);
        assert!(e.contains("invalid path"), "{args:?}: {e}");
    }
    assert_eq!(fs.ok(&["ls", "/"]), "");
    // Nothing was created outside the targets.
    assert!(!fs.dir.join("b").exists());
}

#[test]
fn connections_without_the_secret_are_refused() {
    let fs = Fs::up("auth", 2);
    let f = fs.file();
    // Raw bytes that are not a handshake: no reply, the connection closes.
    let mut s = TcpStream::connect(&f.servers[0].addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = dos_fs::wire::Request::Stat { path: "/".into() }.encode(1);
    frame.resize(64, 0);
    s.write_all(&frame).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.len() <= dos_transport::auth::HELLO_LEN,
        "got a reply: {got:?}"
    );
    // A client with another secret is refused.
    let text = std::fs::read_to_string(&fs.addr).unwrap();
    let line = text.lines().find(|l| l.starts_with("secret ")).unwrap();
    let forged = fs.dir.join("forged.addr");
    std::fs::write(
        &forged,
        text.replace(line, &format!("secret {}", "ab".repeat(32))),
    )
    .unwrap();
    std::fs::set_permissions(&forged, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dosfs"))
        .arg("--fs")
        .arg(&forged)
        .args(["ls", "/"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("server 0"), "{e}");
    // An address file others can read is refused before any connection.
    std::fs::set_permissions(&forged, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dosfs"))
        .arg("--fs")
        .arg(&forged)
        .args(["ls", "/"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("chmod 600"));
}

#[test]
fn serve_refuses_a_target_of_another_server_or_a_newer_format() {
    let fs = Fs::up("refuse", 2);
    fs.ok(&["down"]);
    let serve = |target: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dosfs"))
            .args(["serve", "--target"])
            .arg(fs.targets().join(target))
            .args(extra)
            .env("DOSFS_SECRET", "00".repeat(32))
            .output()
            .unwrap()
    };
    let fsid = std::fs::read_to_string(fs.targets().join("0/dosfs-target"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("fsid ").map(str::to_owned))
        .unwrap();
    // Target 0 started as server 1.
    let o = serve("0", &["--fs-id", &fsid, "--index", "1", "--servers", "2"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("target is server 0 of 2, not server 1"), "{e}");
    // Another file system's id.
    let o = serve("1", &["--fs-id", &"ab".repeat(16)]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("belongs to file system"),
        "{e}"
    );
    // A target written by a newer dosfs.
    let d = fs.targets().join("1/dosfs-target");
    let text = std::fs::read_to_string(&d)
        .unwrap()
        .replace(&format!("format {}", dos_fs::target::FORMAT), "format 9");
    std::fs::write(&d, &text).unwrap();
    let o = serve("1", &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("format 9 is newer"),
        "{e}"
    );
    // A target written by the dosfs of format 1 (one file per stripe).
    std::fs::write(&d, text.replace("format 9", "format 1")).unwrap();
    let o = serve("1", &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("format 1 is older"),
        "{e}"
    );
    // A directory that is not a target.
    let o = serve("nothing-here", &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("not a dosfs target"),
        "{e}"
    );
}

/// A second server on a target in use (`dosfs serve` twice, or two
/// `dosrun --fs DIR` jobs) is refused with a message naming the target and
/// the running server's pid, and the running server's files are untouched.
#[test]
fn a_second_server_on_a_busy_target_is_refused() {
    let fs = Fs::up("busy", 1);
    let src = random_file(&fs.local("src"), 100_000, 3);
    fs.ok(&["cp", fs.local("src").to_str().unwrap(), "dosfs:/f"]);
    let pid = fs.file().servers[0].pid.unwrap();
    let t = Instant::now();
    let mut second = Command::new(env!("CARGO_BIN_EXE_dosfs"))
        .args(["serve", "--target"])
        .arg(fs.targets().join("0"))
        .env("DOSFS_SECRET", "00".repeat(32))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A second server that starts serving would never exit: bounded wait.
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut e = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut e)
        .unwrap();
    assert!(
        matches!(status, Some(st) if !st.success()),
        "a second server started on a busy target: {e}"
    );
    assert!(
        e.contains("target in use by another dosfs server") && e.contains(&format!("pid {pid}")),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    fs.ok(&["cp", "dosfs:/f", fs.local("back").to_str().unwrap()]);
    assert!(std::fs::read(fs.local("back")).unwrap() == src);
    // Once the first is down, the target serves again.
    fs.ok(&["down"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dosfs"))
        .args(["serve", "--target"])
        .arg(fs.targets().join("0"))
        .env("DOSFS_SECRET", "00".repeat(32))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("dosfs-server 0 listening"), "{line:?}");
}

/// `flock LOCK dosfs up ...` (as the cluster scripts run it): the servers
/// left running do not inherit the caller's descriptors, so the lock is free
/// once `up` returned. Before the fix they held it until `dosfs down`, and
/// the next `flock` on it (`CLUSTER=1 ci/bench-io.sh`) waited.
#[test]
fn servers_started_under_a_lock_do_not_hold_it() {
    if Command::new("flock").arg("--version").output().is_err() {
        eprintln!("skipped: no flock(1)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("dosfs-cli-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fs = Fs {
        addr: dir.join("fs.addr"),
        dir,
    };
    let lock = fs.dir.join("l.lock");
    let up = Command::new("flock")
        .arg(&lock)
        .arg(env!("CARGO_BIN_EXE_dosfs"))
        .arg("--fs")
        .arg(&fs.addr)
        .args(["up", "--local", "2", "--target"])
        .arg(fs.targets())
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    assert_eq!(fs.file().servers.len(), 2);
    let free = Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap();
    assert!(free.success(), "the servers hold the lock `up` ran under");
}
