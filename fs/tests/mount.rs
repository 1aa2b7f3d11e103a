//! The FUSE mount through the real `dosfs` binary: `up --local 3`,
//! `mount --daemon`, unmodified programs (cp, ls, mv, rm, Python, fio) on
//! the mount, the native CLI on the same files, and `umount`.
//!
//! Needs /dev/fuse and fusermount3 (Debian's fuse3; ci/deps.sh installs
//! it); without them each test says so and passes. fio (also in ci/deps.sh)
//! likewise.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dos_fs::addrfile::AddrFile;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dosfs")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether FUSE can be used here; says why not.
fn fuse_usable() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP: /dev/fuse is missing (no FUSE in this machine)");
        return false;
    }
    if !have("fusermount3") {
        eprintln!("SKIP: fusermount3 is missing (apt-get install fuse3; ci/deps.sh does)");
        return false;
    }
    true
}

/// A file system of `n` local servers in a fresh directory, mounted at
/// `dir/mnt`; unmounted, stopped and removed on drop.
struct Mounted {
    dir: PathBuf,
    addr: PathBuf,
    mnt: PathBuf,
    pid: Option<u32>,
    /// A tmpfs mounted over the targets' directory (a small disk).
    tmpfs: Option<PathBuf>,
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
                .unwrap_or(true)
        })
        .unwrap_or(false)
}

fn mounted(mnt: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == mnt.to_str())
}

impl Mounted {
    fn new(tag: &str, n: u32) -> Mounted {
        Mounted::with_targets_on(tag, n, None).unwrap()
    }

    /// With `tmpfs_mib`, the targets live on a tmpfs of that size (None if
    /// it cannot be mounted here: not root).
    fn with_targets_on(tag: &str, n: u32, tmpfs_mib: Option<u32>) -> Option<Mounted> {
        Mounted::with(tag, n, tmpfs_mib, &[])
    }

    /// As [`Mounted::with_targets_on`], with more `dosfs mount` arguments.
    fn with(tag: &str, n: u32, tmpfs_mib: Option<u32>, extra: &[&str]) -> Option<Mounted> {
        let dir = std::env::temp_dir().join(format!("dosfs-mount-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        let mut m = Mounted {
            addr: dir.join("fs.addr"),
            mnt: dir.join("mnt").canonicalize().unwrap(),
            dir,
            pid: None,
            tmpfs: None,
        };
        let t = m.dir.join("targets");
        if let Some(mib) = tmpfs_mib {
            std::fs::create_dir_all(&t).unwrap();
            let o = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&t)
                .output()
                .unwrap();
            if !o.status.success() {
                eprintln!(
                    "SKIP: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                return None;
            }
            m.tmpfs = Some(t.clone());
        }
        m.ok(&[
            "up",
            "--local",
            &n.to_string(),
            "--target",
            t.to_str().unwrap(),
        ]);
        let log = m.dir.join("mount.log");
        let mut args = vec![
            "mount",
            "--daemon",
            "--log",
            log.to_str().unwrap(),
            m.mnt.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = m.ok(&args);
        // "dosfs: mounted at MNT (pid N, log L)"
        let pid = out
            .split("(pid ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok());
        assert!(pid.is_some(), "no pid in {out:?}");
        m.pid = pid;
        assert!(mounted(&m.mnt), "not in /proc/mounts after mount");
        Some(m)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
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

    /// A path inside the mount.
    fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn local(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Unmounts with `dosfs umount` and waits for the daemon to exit.
    fn umount(&mut self) {
        self.ok(&["umount", self.mnt.to_str().unwrap()]);
        let pid = self.pid.take().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !pid_alive(pid),
            "the mount daemon did not exit after umount"
        );
        assert!(!mounted(&self.mnt), "stale mount left in /proc/mounts");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .output();
        }
        if let Some(pid) = self.pid {
            let until = Instant::now() + Duration::from_secs(5);
            while pid_alive(pid) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(pid) {
                // SAFETY: kill has no memory effects; the pid is the daemon this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        }
        if let Ok(f) = AddrFile::read(&self.addr) {
            let _ = self.run(&["down"]);
            for pid in f.servers.iter().filter_map(|s| s.pid) {
                if pid_alive(pid) {
                    // SAFETY: as above; a server this test started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        if let Some(t) = &self.tmpfs {
            let _ = Command::new("umount").arg(t).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sh(cmd: &str, args: &[&Path]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn programs_use_the_mount_and_see_the_native_clis_files() {
    if !fuse_usable() {
        return;
    }
    let mut m = Mounted::new("tools", 3);

    // cp in and out, bit-exact (not a multiple of the stripe size).
    let data = random_bytes(3 * (1 << 20) + 12_345, 1);
    std::fs::write(m.local("in.bin"), &data).unwrap();
    std::fs::create_dir(m.m("d1")).unwrap();
    sh("cp", &[&m.local("in.bin"), &m.m("d1/a.bin")]);
    sh("cp", &[&m.m("d1/a.bin"), &m.local("out.bin")]);
    assert!(std::fs::read(m.local("out.bin")).unwrap() == data);
    assert_eq!(
        std::fs::metadata(m.m("d1/a.bin")).unwrap().len(),
        data.len() as u64
    );

    // The native CLI reads what was written through the mount (closed).
    m.ok(&["cp", ":/d1/a.bin", m.local("native.bin").to_str().unwrap()]);
    assert!(std::fs::read(m.local("native.bin")).unwrap() == data);

    // ...and the mount reads what the CLI wrote.
    let other = random_bytes(2 * (1 << 20) + 7, 2);
    std::fs::write(m.local("other.bin"), &other).unwrap();
    m.ok(&["cp", "other.bin", ":/b.bin"]);
    assert!(std::fs::read(m.m("b.bin")).unwrap() == other);

    // Close-to-open: a file read through the mount (its pages cached),
    // then rewritten and grown by another client, reads new at the next open.
    let newer = random_bytes(other.len() + (1 << 20), 3);
    std::fs::write(m.local("newer.bin"), &newer).unwrap();
    m.ok(&["cp", "newer.bin", ":/b.bin"]);
    assert!(std::fs::read(m.m("b.bin")).unwrap() == newer);
    // The same size again (so no size change tells the kernel): the pages
    // cached by the read above must not be served at the next open.
    let mut newer = newer;
    newer.iter_mut().step_by(4096).for_each(|b| *b ^= 0x5a);
    std::fs::write(m.local("newer.bin"), &newer).unwrap();
    m.ok(&["cp", "newer.bin", ":/b.bin"]);
    assert!(std::fs::read(m.m("b.bin")).unwrap() == newer);

    // mkdir / ls / mv / rm with the usual tools, and their errno.
    std::fs::create_dir(m.m("d2")).unwrap();
    let e = std::fs::create_dir(m.m("d2")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    sh("mv", &[&m.m("d1/a.bin"), &m.m("d2/moved.bin")]);
    let ls = sh("ls", &[&m.m("d2")]);
    assert_eq!(ls.trim(), "moved.bin");
    assert!(sh("ls", &[&m.m("d1")]).trim().is_empty());
    assert!(std::fs::read(m.m("d2/moved.bin")).unwrap() == data);
    let e = std::fs::remove_dir(m.m("d2")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    let e = std::fs::File::open(m.m("d1/a.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    // A directory moved: what is below it moves too.
    sh("mv", &[&m.m("d2"), &m.m("d1/d2")]);
    assert!(std::fs::read(m.m("d1/d2/moved.bin")).unwrap() == data);
    sh("rm", &[&m.m("d1/d2/moved.bin")]);
    sh("rmdir", &[&m.m("d1/d2")]);
    assert!(m.ok(&["ls", "/d1"]).trim().is_empty());

    // Small writes, seeks, overwrites and truncation from Python.
    let script = r#"
import os, sys
p = sys.argv[1]
with open(p, "w") as f:
    for i in range(20000):
        f.write("line %d\n" % i)
with open(p) as f:
    lines = f.read().splitlines()
assert len(lines) == 20000 and lines[12345] == "line 12345", len(lines)
with open(p, "r+b") as f:
    f.seek(5)
    f.write(b"XYZ")
    f.seek(0, 2)
    f.write(b"tail")
    f.flush()
    os.fsync(f.fileno())
    f.seek(0)
    head = f.read(10)
assert head == b"line XYZin", head
os.truncate(p, 100)
assert os.path.getsize(p) == 100
with open(p, "rb") as f:
    assert len(f.read()) == 100
os.rename(p, p + ".2")
assert sorted(os.listdir(os.path.dirname(p))) == sorted(["b.bin", "d1", "py.txt.2"]), os.listdir(os.path.dirname(p))
os.unlink(p + ".2")
print("ok")
"#;
    if have("python3") {
        let o = Command::new("python3")
            .args(["-c", script])
            .arg(m.m("py.txt"))
            .output()
            .unwrap();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok",
            "python: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        eprintln!("SKIP (python part): python3 is missing");
    }

    // A directory listed over several pages of the metadata server.
    std::fs::create_dir(m.m("many")).unwrap();
    for i in 0..2500 {
        std::fs::File::create(m.m(&format!("many/f{i:05}"))).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(m.m("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let want: Vec<String> = (0..2500).map(|i| format!("f{i:05}")).collect();
    assert_eq!(names, want);

    // Positional writes into the middle of a file, read back.
    let mut patched = newer.clone();
    patched[1 << 20..(1 << 20) + 5].copy_from_slice(b"hello");
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.m("b.bin"))
            .unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_all().unwrap();
        f.seek(SeekFrom::Start((1 << 20) - 2)).unwrap();
        let mut b = [0u8; 9];
        f.read_exact(&mut b).unwrap();
        let mut want = newer[(1 << 20) - 2..(1 << 20) + 7].to_vec();
        want[2..7].copy_from_slice(b"hello");
        assert_eq!(&b[..], &want[..]);
    }

    // Unmount: no stale mount, the daemon exits, the data stays.
    m.umount();
    m.ok(&["cp", ":/b.bin", m.local("after.bin").to_str().unwrap()]);
    assert!(std::fs::read(m.local("after.bin")).unwrap() == patched);
}

#[test]
fn fio_verifies_crc32c_through_the_mount() {
    if !fuse_usable() {
        return;
    }
    if !have("fio") {
        eprintln!("SKIP: fio is missing (apt-get install fio; ci/deps.sh does)");
        return;
    }
    let m = Mounted::new("fio", 3);
    for (rw, bs, size) in [("write", "1M", "16M"), ("randwrite", "64k", "8M")] {
        let o = Command::new("fio")
            .arg(format!("--name=v-{rw}"))
            .arg(format!("--directory={}", m.mnt.display()))
            .arg(format!("--rw={rw}"))
            .arg(format!("--bs={bs}"))
            .arg(format!("--size={size}"))
            .args([
                "--ioengine=psync",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--end_fsync=1",
                "--numjobs=1",
                "--verify_state_save=0",
            ])
            .current_dir(&m.dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "fio {rw} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.contains("verify: bad"), "{out}");
    }
}

#[test]
fn corrupted_chunk_reads_as_eio_and_the_log_names_file_and_offset() {
    if !fuse_usable() {
        return;
    }
    let m = Mounted::new("corrupt", 3);
    std::fs::write(m.local("in.bin"), random_bytes(300_000, 3)).unwrap();
    m.ok(&["setstripe", "-S", "64K", "-c", "3", "-i", "0", "/f"]);
    m.ok(&["cp", "in.bin", ":/f"]);
    let ino: u64 = m
        .ok(&["stat", "/f"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("inode: ").map(|v| v.parse().unwrap()))
        .unwrap();
    // Stripe 4 (offset 262144) is on server 4 % 3 = 1.
    let chunk = m
        .dir
        .join(format!("targets/1/chunks/{:02x}/{ino:x}/d0", ino & 0xff));
    // Its data object holds it at 4 x 64 KiB (fs/src/chunk.rs).
    let mut b = std::fs::read(&chunk).unwrap();
    b[262_144 + 1000] ^= 0xff;
    std::fs::write(&chunk, &b).unwrap();
    let e = std::fs::read(m.m("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // The first stripes still read.
    let mut f = std::fs::File::open(m.m("f")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact(&mut head).unwrap();
    let log = std::fs::read_to_string(m.dir.join("mount.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("/f: corrupted data at offset 262144")),
        "{log}"
    );
}

#[test]
fn foreground_mount_unmounts_on_sigterm() {
    if !fuse_usable() {
        return;
    }
    let mut m = Mounted::new("fg", 1);
    // The daemon of `Mounted` goes first; then a foreground mount.
    m.umount();
    let before = std::fs::metadata(&m.mnt).unwrap().dev();
    let mut child = Command::new(bin())
        .arg("--fs")
        .arg(&m.addr)
        .arg("mount")
        .arg(&m.mnt)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    m.pid = Some(child.id());
    let until = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&m.mnt).unwrap().dev() == before {
        assert!(Instant::now() < until, "foreground mount did not come up");
        assert!(child.try_wait().unwrap().is_none(), "mount exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(m.m("x"), b"through the foreground mount").unwrap();
    // SAFETY: kill has no memory effects; the pid is the child just started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "mount exited with {st}");
    assert!(!mounted(&m.mnt), "stale mount after SIGTERM");
    m.pid = None;
    m.ok(&["cp", ":/x", "x.out"]);
    assert_eq!(
        std::fs::read(m.local("x.out")).unwrap(),
        b"through the foreground mount"
    );
}

/// The errno of an I/O error, for messages.
fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A full target (a tmpfs of 8 MiB under the server) gives the writer
/// ENOSPC (at a write or at fsync, never EIO or a silent success), and
/// corrupts nothing: a file written before reads back exactly, `verify`
/// finds nothing bad, and once the big file is removed writes succeed again.
#[test]
fn a_full_target_gives_enospc_to_the_writer_and_corrupts_nothing() {
    if !fuse_usable() {
        return;
    }
    let Some(m) = Mounted::with_targets_on("enospc", 1, Some(8)) else {
        return;
    };
    let keep = random_bytes(300_000, 4);
    std::fs::write(m.m("keep"), &keep).unwrap();
    let chunk = random_bytes(1 << 20, 5);
    let mut f = std::fs::File::create(m.m("big")).unwrap();
    let mut err = None;
    for _ in 0..32 {
        if let Err(e) = f.write_all(&chunk) {
            err = Some(e);
            break;
        }
    }
    if err.is_none() {
        err = f.sync_all().err();
    }
    drop(f);
    let e = err.expect("32 MiB fit on an 8 MiB target");
    assert_eq!(errno_of(&e), libc::ENOSPC, "{e}");
    assert!(std::fs::read(m.m("keep")).unwrap() == keep, "keep changed");
    let v = m.ok(&["verify"]);
    assert!(v.contains(" 0 bad"), "{v}");
    std::fs::remove_file(m.m("big")).unwrap();
    let again = random_bytes(2 << 20, 6);
    std::fs::write(m.m("again"), &again).unwrap();
    let f = std::fs::File::open(m.m("again")).unwrap();
    f.sync_all().unwrap();
    assert!(std::fs::read(m.m("again")).unwrap() == again);
    assert!(std::fs::read(m.m("keep")).unwrap() == keep);
}

/// Runs `f` on a thread and gives its result, or None after `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// A data server killed while mounted: reading its stripes through the
/// mount fails with EIO within 2 s (the errno for an unreachable server,
/// with a log line naming it), the namespace still answers, nothing hangs;
/// once the server is restarted on its target (same address), the mount
/// reads every synced byte back.
#[test]
fn a_killed_server_gives_eio_within_2s_and_data_reads_back_after_restart() {
    if !fuse_usable() {
        return;
    }
    let m = Mounted::new("kill", 2);
    m.ok(&["mkdir", "/d"]);
    m.ok(&["setstripe", "-S", "64K", "-c", "-1", "/d"]);
    let data = random_bytes(1 << 20, 7);
    {
        let mut f = std::fs::File::create(m.m("d/f")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let file = AddrFile::read(&m.addr).unwrap();
    let victim = file.servers[1].pid.unwrap();
    let addr = file.servers[1].addr.clone();
    // SAFETY: kill has no memory effects; the pid is a server this test started.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    while pid_alive(victim) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let path = m.m("d/f");
    let t = Instant::now();
    let r = within(Duration::from_secs(10), move || std::fs::read(path))
        .expect("a read through the mount hung");
    let took = t.elapsed();
    let e = r.expect_err("read a file half of whose stripes are gone");
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
    assert!(took < Duration::from_secs(2), "EIO took {took:?}");
    let log = std::fs::read_to_string(m.dir.join("mount.log")).unwrap_or_default();
    assert!(
        log.contains("server 1"),
        "the log does not name the server: {log}"
    );
    // The namespace (server 0) still answers through the mount.
    let mnt = m.mnt.clone();
    let names = within(Duration::from_secs(5), move || {
        std::fs::read_dir(mnt.join("d")).map(|d| d.count())
    })
    .expect("readdir hung")
    .unwrap();
    assert_eq!(names, 1);
    // The server again, on its target and address.
    let mut server = Command::new(bin())
        .args(["serve", "--target"])
        .arg(m.dir.join("targets/1"))
        .args(["--listen", &addr])
        .env("DOSFS_SECRET", file.secret.to_hex())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.contains("listening"), "{line:?}");
    let back = std::fs::read(m.m("d/f"));
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        back.unwrap() == data,
        "synced bytes changed across the restart"
    );
}

/// Close-to-open: a file written and closed through one mount (no fsync)
/// is seen whole by the CLI and by a second mount; a rewrite closed through
/// the first is seen by the second at its next open.
#[test]
fn a_second_client_sees_a_file_closed_through_the_mount() {
    if !fuse_usable() {
        return;
    }
    let m = Mounted::new("cto", 2);
    let mnt2 = m.dir.join("mnt2");
    std::fs::create_dir_all(&mnt2).unwrap();
    let mnt2 = mnt2.canonicalize().unwrap();
    let log2 = m.dir.join("mount2.log");
    let out = m.ok(&[
        "mount",
        "--daemon",
        "--log",
        log2.to_str().unwrap(),
        mnt2.to_str().unwrap(),
    ]);
    let pid2: Option<u32> = out
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok());
    struct Unmount(PathBuf, Option<u32>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.0).output();
            if let Some(pid) = self.1 {
                let until = Instant::now() + Duration::from_secs(5);
                while pid_alive(pid) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    let _second = Unmount(mnt2.clone(), pid2);
    let one = random_bytes(3 << 20, 8);
    std::fs::write(m.m("f"), &one).unwrap();
    // The CLI, another client, right after the close.
    m.ok(&["cp", "dosfs:/f", m.local("cli.out").to_str().unwrap()]);
    assert!(std::fs::read(m.local("cli.out")).unwrap() == one);
    assert!(
        std::fs::read(mnt2.join("f")).unwrap() == one,
        "second mount"
    );
    // A shorter rewrite through the first mount; the second's next open sees it.
    let two = random_bytes(1 << 20, 9);
    std::fs::write(m.m("f"), &two).unwrap();
    assert!(
        std::fs::read(mnt2.join("f")).unwrap() == two,
        "stale after reopen"
    );
    // And the other way.
    std::fs::write(mnt2.join("g"), b"from the second mount").unwrap();
    assert_eq!(std::fs::read(m.m("g")).unwrap(), b"from the second mount");
}

/// A data server killed before a program writes through the mount: rows
/// are sent from a write-behind thread, so the error may come at a later
/// write than the one whose bytes failed, but it comes, as EIO, at a write
/// or at close (never a silent success), and nothing hangs.
#[test]
fn a_killed_server_fails_a_write_or_the_close_with_eio() {
    use std::os::fd::IntoRawFd;
    if !fuse_usable() {
        return;
    }
    let m = Mounted::new("wkill", 2);
    m.ok(&["mkdir", "/d"]);
    // Rows of 2 MiB, written 1 MiB at a time: rows go by write-behind.
    m.ok(&["setstripe", "-S", "1M", "-c", "-1", "/d"]);
    let file = AddrFile::read(&m.addr).unwrap();
    let victim = file.servers[1].pid.unwrap();
    // SAFETY: kill has no memory effects; the pid is a server this test started.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    while pid_alive(victim) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let path = m.m("d/f");
    let chunk = random_bytes(1 << 20, 8);
    let r = within(Duration::from_secs(20), move || {
        let mut f = std::fs::File::create(path).unwrap();
        for k in 0..8 {
            if let Err(e) = f.write_all(&chunk) {
                return Err((format!("write {k}"), errno_of(&e)));
            }
        }
        let fd = f.into_raw_fd();
        // SAFETY: `fd` is the file's own descriptor, closed once here.
        if unsafe { libc::close(fd) } != 0 {
            return Err(("close".into(), errno_of(&std::io::Error::last_os_error())));
        }
        Ok(())
    })
    .expect("writing through the mount hung");
    let (at, errno) = r.expect_err("8 MiB written and closed with a server dead");
    eprintln!("EIO at {at}");
    assert_eq!(errno, libc::EIO, "at {at}");
}

/// Rows sent by write-behind while the next fills, a partial last row, then
/// writes out of order over bytes already sent: the file reads back as the
/// writes made it (in order), through the mount and through the CLI.
#[test]
fn write_behind_rows_and_rewrites_read_back_exact() {
    use std::os::unix::fs::FileExt;
    if !fuse_usable() {
        return;
    }
    let m = Mounted::new("wb", 2);
    m.ok(&["mkdir", "/d"]);
    m.ok(&["setstripe", "-S", "1M", "-c", "-1", "/d"]);
    let mut want = random_bytes(9 << 20, 12);
    let f = std::fs::File::create(m.m("d/f")).unwrap();
    for (k, c) in want.chunks(1 << 20).enumerate() {
        f.write_all_at(c, (k << 20) as u64).unwrap();
    }
    // Over the first row (long sent) and across the in-flight one.
    let patch = random_bytes(3 << 19, 13);
    for off in [1000usize, (7 << 20) - 5000] {
        f.write_all_at(&patch, off as u64).unwrap();
        want[off..off + patch.len()].copy_from_slice(&patch);
    }
    drop(f);
    assert!(std::fs::read(m.m("d/f")).unwrap() == want, "mount");
    let out = m.local("back");
    m.ok(&["cp", ":/d/f", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == want, "cli");
}

/// The kernel's writeback cache (`mount --writeback-cache`, where the kernel
/// keeps a cached file's size and ignores the servers'): writes through the
/// mount (rewrites, a truncate, an append) read back exact through the
/// mount and the CLI, and close-to-open holds: at its next open the mount
/// sees a file another client grew, shrank or rewrote at the same size
/// after the mount had read (cached) it. Without the generation raised at
/// such an open, the grown file reads short and the shrunk one long.
#[test]
fn writeback_cache_keeps_exact_data_and_close_to_open() {
    use std::os::unix::fs::FileExt;
    if !fuse_usable() {
        return;
    }
    let m = Mounted::with("wbc", 2, None, &["--writeback-cache"]).unwrap();
    let cli_in = |data: &[u8], tag: &str| {
        std::fs::write(m.local(tag), data).unwrap();
        m.ok(&["cp", m.local(tag).to_str().unwrap(), ":/f"]);
    };
    let cli_out = || {
        let out = m.local("out");
        let _ = std::fs::remove_file(&out);
        m.ok(&["cp", ":/f", out.to_str().unwrap()]);
        std::fs::read(&out).unwrap()
    };
    let one = random_bytes((3 << 20) + 7, 20);
    std::fs::write(m.m("f"), &one).unwrap();
    assert!(cli_out() == one, "the CLI after a close through the mount");
    assert!(std::fs::read(m.m("f")).unwrap() == one, "mount");
    // Another client grows, shrinks, rewrites at the same size.
    let grown = random_bytes((4 << 20) + 11, 21);
    cli_in(&grown, "grown");
    let back = std::fs::read(m.m("f")).unwrap();
    assert_eq!(back.len(), grown.len(), "grown: size at the next open");
    assert!(back == grown, "grown: bytes");
    assert_eq!(
        std::fs::metadata(m.m("f")).unwrap().len(),
        grown.len() as u64
    );
    let shrunk = random_bytes((1 << 20) + 3, 22);
    cli_in(&shrunk, "shrunk");
    let back = std::fs::read(m.m("f")).unwrap();
    assert_eq!(back.len(), shrunk.len(), "shrunk: size at the next open");
    assert!(back == shrunk, "shrunk: bytes");
    let mut same = shrunk.clone();
    same.iter_mut().step_by(4096).for_each(|b| *b ^= 0x5a);
    cli_in(&same, "same");
    assert!(
        std::fs::read(m.m("f")).unwrap() == same,
        "same size: stale pages"
    );
    // Through the mount: a rewrite inside, a truncate, an append.
    let mut want = same;
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.m("f"))
            .unwrap();
        let patch = random_bytes(300_000, 23);
        f.write_all_at(&patch, 5000).unwrap();
        want[5000..5000 + patch.len()].copy_from_slice(&patch);
        f.set_len(700_001).unwrap();
        want.truncate(700_001);
        let tail = random_bytes(2 << 20, 24);
        f.write_all_at(&tail, 700_001).unwrap();
        want.extend_from_slice(&tail);
    }
    assert!(
        std::fs::read(m.m("f")).unwrap() == want,
        "mount after rewrites"
    );
    assert!(cli_out() == want, "the CLI after rewrites");
}

/// With `--negative-listings`, a name found missing stays missing for the
/// mount's negative time (the kernel's negative entry, and the mount's
/// listing of the directory, which answers lookups of other missing names
/// there without the metadata server), and no longer; a create is still decided by the metadata
/// server (O_EXCL of a name another client made is EEXIST, O_CREAT opens
/// it), and a name this mount makes is seen at once.
#[test]
fn missing_names_are_cached_for_the_negative_time_and_creates_ask_the_server() {
    if !fuse_usable() {
        return;
    }
    let neg = Duration::from_secs(3);
    let m = Mounted::with(
        "neg",
        1,
        None,
        &["--negative-ms", "3000", "--negative-listings"],
    )
    .unwrap();
    std::fs::create_dir(m.m("d")).unwrap();
    let t0 = Instant::now();
    let missing = |p: &Path| matches!(std::fs::metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    assert!(missing(&m.m("d/x")));
    // Another client (the CLI) makes x and y.
    std::fs::write(m.local("src"), b"made by the CLI").unwrap();
    let src = m.local("src");
    m.ok(&["cp", src.to_str().unwrap(), "dosfs:/d/x"]);
    m.ok(&["cp", src.to_str().unwrap(), "dosfs:/d/y"]);
    if t0.elapsed() < neg {
        // x: the kernel's negative entry; y: never looked up, answered
        // from the mount's listing of d (fetched when x was missing).
        assert!(missing(&m.m("d/x")), "x seen within the negative time");
        assert!(missing(&m.m("d/y")), "y asked of the server: no listing");
        let excl = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.m("d/y"));
        assert_eq!(
            excl.map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EEXIST)),
            "O_EXCL of a name another client made"
        );
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(m.m("d/x"))
            .unwrap();
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"made by the CLI", "O_CREAT opens the existing file");
    } else {
        eprintln!("SKIP (the within-time checks): the machine took longer than {neg:?}");
    }
    // What this mount makes is seen at once, whatever is cached.
    std::fs::write(m.m("d/z"), b"z").unwrap();
    assert_eq!(std::fs::read(m.m("d/z")).unwrap(), b"z");
    std::fs::rename(m.m("d/z"), m.m("d/w")).unwrap();
    assert_eq!(std::fs::read(m.m("d/w")).unwrap(), b"z");
    // After the negative time every name is seen.
    std::thread::sleep(neg.saturating_sub(t0.elapsed()) + Duration::from_millis(200));
    assert_eq!(std::fs::read(m.m("d/y")).unwrap(), b"made by the CLI");
    assert_eq!(std::fs::read(m.m("d/x")).unwrap(), b"made by the CLI");
    let mut names: Vec<String> = std::fs::read_dir(m.m("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["w", "x", "y"]);
}

/// By default the kernel keeps a missing name missing for the negative
/// time (a repeated stat of it costs no request) and no longer: a name
/// another client makes after this mount looked it up shows within that
/// time; a name never looked up shows at once (no listings by default).
#[test]
fn the_kernel_keeps_a_missing_name_for_the_negative_time_only() {
    if !fuse_usable() {
        return;
    }
    let neg = Duration::from_secs(3);
    let m = Mounted::with("negk", 1, None, &["--negative-ms", "3000"]).unwrap();
    let missing = |p: &Path| matches!(std::fs::metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let t0 = Instant::now();
    assert!(missing(&m.m("x")));
    std::fs::write(m.local("src"), b"cli").unwrap();
    let src = m.local("src");
    m.ok(&["cp", src.to_str().unwrap(), "dosfs:/x"]);
    m.ok(&["cp", src.to_str().unwrap(), "dosfs:/y"]);
    // Never looked up here: seen at once (close-to-open for names).
    assert_eq!(std::fs::read(m.m("y")).unwrap(), b"cli");
    if t0.elapsed() < neg {
        assert!(missing(&m.m("x")), "no negative entry kept");
    } else {
        eprintln!("SKIP (the within-time check): the machine took longer than {neg:?}");
    }
    std::thread::sleep(neg.saturating_sub(t0.elapsed()) + Duration::from_millis(200));
    assert_eq!(std::fs::read(m.m("x")).unwrap(), b"cli");
}
