//! The harness the dos-fs integration tests share: servers started in the
//! test process on fresh targets ([`start`]), a `dosfs serve` process
//! ([`serve_process`]), a test pattern, and the namespace cluster with a
//! standing dosfs on one of its hosts ([`NsFs`]).
//!
//! Each test file includes it with `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::server::{Handler, Server, ServerConfig, Service};
use dos_fs::target::{FsId, Target};
use dos_transport::auth::Secret;

/// One test of a file at a time, where the tests share something
/// process-wide (slot mappings, one binary's port, the cluster).
pub fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// Servers on fresh targets under `dir` (removed on drop) and their
/// address file.
pub struct Fs {
    pub dir: PathBuf,
    pub addr: AddrFile,
    /// Whether each server got its same-node (abstract Unix) socket.
    pub local_sockets: Vec<bool>,
}

impl Drop for Fs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a directory on drop.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory `dosfs-<tag>-<pid>` in the temporary directory.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dosfs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The plain service as a handler.
pub fn plain(s: Service) -> Arc<dyn Handler> {
    Arc::new(s)
}

/// `n` servers in this process on fresh targets in [`fresh_dir`]`(tag)`,
/// each `wrap(service)` with `config`, listening on `host` (port chosen
/// by the kernel) and serving from its own thread.
pub fn start_with(
    tag: &str,
    n: u32,
    host: &str,
    config: ServerConfig,
    wrap: impl Fn(Service) -> Arc<dyn Handler>,
) -> Fs {
    let dir = fresh_dir(tag);
    let fsid = FsId::generate().unwrap();
    let secret = Secret::generate().unwrap();
    let mut servers = Vec::new();
    let mut local_sockets = Vec::new();
    for i in 0..n {
        let t = Target::format(&dir.join(i.to_string()), fsid, i, n).unwrap();
        let srv = Server::bind_handler(
            wrap(Service::open(&t).unwrap()),
            &fsid,
            secret.clone(),
            &format!("{host}:0"),
            config,
        )
        .unwrap();
        local_sockets.push(srv.has_local_socket());
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
        local_sockets,
    }
}

/// `n` plain servers on 127.0.0.1 with the default configuration.
pub fn start(tag: &str, n: u32) -> Fs {
    start_with(tag, n, "127.0.0.1", ServerConfig::default(), plain)
}

/// Deterministic pseudo-random bytes (xorshift) from `seed`.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
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

/// The `dosfs` binary, if the crate's `cli` feature built it.
pub fn dosfs_bin() -> Option<&'static str> {
    let bin = option_env!("CARGO_BIN_EXE_dosfs");
    if bin.is_none() {
        eprintln!("skipped: the dosfs binary is not built (feature cli)");
    }
    bin
}

/// Whether this process runs as root (the namespace cluster needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: not root");
    }
    root
}

/// How [`serve_process`] starts a `dosfs serve`.
pub struct Serve<'a> {
    /// A command the binary runs under (`ip netns exec HOST`), or empty.
    pub prefix: &'a [&'a str],
    /// `--listen` (default: the binary's own).
    pub listen: Option<&'a str>,
    /// Server index and server count.
    pub index: u32,
    pub servers: u32,
}

impl Default for Serve<'_> {
    fn default() -> Self {
        Serve {
            prefix: &[],
            listen: None,
            index: 0,
            servers: 1,
        }
    }
}

/// A `dosfs serve` process (the real binary `bin`) on target `dir`; returns
/// the child and the address it printed.
pub fn serve_process(
    bin: &str,
    dir: &Path,
    fsid: FsId,
    secret: &Secret,
    how: Serve<'_>,
) -> (Child, String) {
    let mut cmd = Command::new(how.prefix.first().copied().unwrap_or(bin));
    cmd.args(how.prefix.iter().skip(1));
    if !how.prefix.is_empty() {
        cmd.arg(bin);
    }
    cmd.arg("serve");
    if let Some(l) = how.listen {
        cmd.args(["--listen", l]);
    }
    let mut child = cmd
        .arg("--target")
        .arg(dir)
        .args([
            "--fs-id",
            &fsid.to_string(),
            "--index",
            &how.index.to_string(),
            "--servers",
            &how.servers.to_string(),
        ])
        .env("DOSFS_SECRET", secret.to_hex())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("dosfs-server"), "{line:?}");
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    (child, addr)
}

/// The namespace cluster's script.
pub fn cluster() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/cluster.sh")
}

/// The namespace cluster, up while this lives (`ci/cluster.sh down` on
/// drop). The caller holds `/tmp/dos-cluster.lock`.
pub struct Cluster;

impl Cluster {
    /// `ci/cluster.sh up hosts`.
    pub fn up(hosts: u32) -> Cluster {
        let up = Command::new(cluster())
            .args(["up", &hosts.to_string()])
            .output()
            .unwrap();
        let c = Cluster;
        assert!(up.status.success(), "cluster.sh up {hosts}: {up:?}");
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(cluster()).arg("down").output();
    }
}

/// A standing dosfs (`dosfs up --local N`) on namespace host dos-h2
/// (198.18.0.2) of a cluster of two hosts, stopped (`dosfs down`), its
/// cluster taken down and its directory removed on drop.
pub struct NsFs {
    pub dir: PathBuf,
    pub addr_file: PathBuf,
    bin: &'static str,
    // Dropped after `drop` below has stopped the servers.
    _cluster: Cluster,
}

impl NsFs {
    /// The cluster up with 2 hosts and `servers` servers on dos-h2, with
    /// targets in [`fresh_dir`]`(tag)`.
    pub fn up(bin: &'static str, tag: &str, servers: u32) -> NsFs {
        let cluster = Cluster::up(2);
        let dir = fresh_dir(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let addr_file = dir.join("fs.addr");
        let out = Command::new("ip")
            .args(["netns", "exec", "dos-h2", bin, "up", "--local"])
            .arg(servers.to_string())
            .arg("--target")
            .arg(dir.join("t"))
            .args(["--host", "198.18.0.2", "--fs"])
            .arg(&addr_file)
            .output()
            .unwrap();
        let fs = NsFs {
            dir,
            addr_file,
            bin,
            _cluster: cluster,
        };
        assert!(out.status.success(), "dosfs up: {out:?}");
        fs
    }
}

impl Drop for NsFs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", "dos-h2", self.bin, "down", "--fs"])
            .arg(&self.addr_file)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
