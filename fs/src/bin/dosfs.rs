//! `dosfs`: start, stop and use the dos parallel file system.
//!
//! See `dosfs --help` and the `dos_fs` crate documentation.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};

use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::client::Client;
use dos_fs::layout::LayoutSpec;
use dos_fs::meta::{Attr, Kind};
use dos_fs::server::{Server, ServerConfig, Service};
use dos_fs::target::{Expect, FsId, FsPath, Target};
use dos_fs::wire::Request;
use dos_fs::Error;
use dos_transport::auth::Secret;

/// The environment variable that hands a server the file system's secret.
const SECRET_ENV: &str = "DOSFS_SECRET";

#[derive(Parser, Debug)]
#[command(
    name = "dosfs",
    version,
    about = "The dos parallel file system: servers, layouts and files."
)]
struct Cli {
    /// The address file of the file system (default: $DOSFS, else ./dosfs.addr).
    #[arg(long = "fs", global = true, value_name = "FILE")]
    fs: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one storage server over a target directory (the secret comes in $DOSFS_SECRET, as hex).
    Serve {
        /// The target directory.
        #[arg(long)]
        target: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The file system's id (32 hex digits); required to format a new target.
        #[arg(long)]
        fs_id: Option<String>,
        /// This server's index.
        #[arg(long)]
        index: Option<u32>,
        /// The number of servers; with --fs-id and --index, formats the target if it is new.
        #[arg(long)]
        servers: Option<u32>,
        /// Worker threads (I/Os in flight on the target).
        #[arg(long, default_value_t = 8)]
        threads: usize,
    },
    /// Start N servers on this host over DIR/0 .. DIR/N-1 (--local N), or one per host of a
    /// hostfile over DIR/NODE on each, through dosrun's node agents (--hostfile FILE); write
    /// the address file.
    Up {
        /// How many servers to start on this host.
        #[arg(
            long,
            required_unless_present = "hostfile",
            conflicts_with = "hostfile"
        )]
        local: Option<u32>,
        /// One server per host of FILE (dosrun's hostfile format), started by dosrun.
        #[arg(long, value_name = "FILE")]
        hostfile: Option<PathBuf>,
        /// With --hostfile: how dosrun starts its node agents (dosrun's --launch-agent).
        #[arg(long, value_name = "CMD", requires = "hostfile")]
        launch_agent: Option<String>,
        /// The directory holding the targets.
        #[arg(long)]
        target: PathBuf,
        /// Host address the servers listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Worker threads per server.
        #[arg(long, default_value_t = 8)]
        threads: usize,
    },
    /// Sync and stop the servers of the address file, and remove it.
    Down,
    /// List a directory.
    Ls {
        /// Show kind and size.
        #[arg(short = 'l')]
        long: bool,
        /// The directory (default: /).
        #[arg(default_value = "/")]
        #[arg(value_parser = in_fs)]
        path: String,
    },
    /// Show a file's or directory's attributes.
    Stat {
        /// The path.
        #[arg(value_parser = in_fs)]
        path: String,
    },
    /// Create a directory.
    Mkdir {
        /// Create missing parents, and accept an existing directory.
        #[arg(short = 'p')]
        parents: bool,
        /// The path.
        #[arg(value_parser = in_fs)]
        path: String,
    },
    /// Remove a file or an empty directory.
    Rm {
        /// Remove a directory and everything below it.
        #[arg(short = 'r')]
        recursive: bool,
        /// The path.
        #[arg(value_parser = in_fs)]
        path: String,
    },
    /// Rename.
    Mv {
        /// From.
        #[arg(value_parser = in_fs)]
        from: String,
        /// To.
        #[arg(value_parser = in_fs)]
        to: String,
    },
    /// Space used and free on every server.
    Df,
    /// Copy a file in or out: name dosfs paths with a leading ':' (cp data.bin :/data.bin).
    Cp {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Set a directory's default layout, or create an empty file with a layout (like lfs setstripe).
    Setstripe {
        /// Stripe size (bytes; K, M, G suffixes).
        #[arg(short = 'S', long = "stripe-size")]
        size: Option<String>,
        /// Stripe count (-1: all servers).
        #[arg(short = 'c', long = "stripe-count", allow_hyphen_values = true)]
        count: Option<i64>,
        /// First server (-1: chosen per file).
        #[arg(short = 'i', long = "stripe-index", allow_hyphen_values = true)]
        index: Option<i64>,
        /// The directory or new file.
        #[arg(value_parser = in_fs)]
        path: String,
    },
    /// Show a file's layout, or the one a directory gives new files.
    Getstripe {
        /// The path.
        #[arg(value_parser = in_fs)]
        path: String,
    },
    /// Read every synced chunk and check its checksum; on the whole file
    /// system (/), also remove chunks of files that no longer exist.
    Verify {
        /// The file or tree (default: /).
        #[arg(default_value = "/")]
        #[arg(value_parser = in_fs)]
        path: String,
    },
    /// Mount the file system through FUSE (close-to-open; writes visible at close, durable at fsync).
    Mount {
        /// The directory to mount on.
        mountpoint: PathBuf,
        /// Run in the background: return once mounted, printing the daemon's pid.
        #[arg(long)]
        daemon: bool,
        /// The background daemon's log file (default: /tmp/dosfs-mount.PID.log).
        #[arg(long, requires = "daemon")]
        log: Option<PathBuf>,
        /// Threads answering the kernel's requests.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Readahead of the mount in KiB (root only; 0 keeps the kernel's).
        #[arg(long, default_value_t = 4096)]
        readahead_kb: u32,
        /// The kernel's writeback cache: faster writes; the kernel keeps
        /// file sizes (see `dos_fs::mount`).
        #[arg(long)]
        writeback_cache: bool,
        /// How long, in ms, a name found missing stays missing for this
        /// mount (the kernel's negative entries and the mount's directory
        /// listings; 0: every lookup asks the metadata server).
        #[arg(long, default_value_t = 1000)]
        negative_ms: u64,
        /// Answer lookups of missing names from a listing of the directory
        /// kept for the negative time: a create costs one metadata request
        /// instead of two, but a name another client makes may stay
        /// invisible that long even if never looked up (see `dos_fs::mount`).
        #[arg(long)]
        negative_listings: bool,
    },
    /// Unmount a dosfs mount (as fusermount3 -u does).
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
}

/// Marks every descriptor this process inherited beyond stdin, stdout and
/// stderr close-on-exec, so the servers, the mount daemon and the dosrun
/// that `up`, `mount --daemon` and `up --hostfile` leave running do not
/// hold them. A lock held by the caller (`flock /tmp/dos-cluster.lock
/// dosfs up ...`) would otherwise stay held by long-lived servers after the
/// caller ended, and the next user of the lock would wait for them (how
/// `CLUSTER=1 ci/bench-io.sh` hung at its start); a pipe of the caller
/// (`$(dosfs up ...)`) would not see its end. This process keeps them
/// until it exits.
fn no_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC changes only descriptor
    // flags; it touches no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    // Kernels before 5.11: one descriptor at a time.
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number changes only its flags (a
        // number already closed, such as read_dir's own, gives EBADF).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn main() {
    no_inherited_fds();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("dosfs: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let fs_file = AddrFile::locate(cli.fs.as_deref());
    match cli.cmd {
        Cmd::Serve {
            target,
            listen,
            fs_id,
            index,
            servers,
            threads,
        } => serve(&target, &listen, fs_id.as_deref(), index, servers, threads),
        Cmd::Up {
            local: None,
            hostfile: Some(hostfile),
            launch_agent,
            target,
            ..
        } => up_hosts(&hostfile, &target, &fs_file, launch_agent.as_deref()),
        Cmd::Up {
            local,
            target,
            host,
            threads,
            ..
        } => up(local.unwrap_or(0), &target, &fs_file, &host, threads),
        Cmd::Down => down(&fs_file),
        Cmd::Mount {
            mountpoint,
            daemon: true,
            log,
            threads,
            readahead_kb,
            writeback_cache,
            negative_ms,
            negative_listings,
        } => {
            let log = log.unwrap_or_else(dos_fs::mount::default_log);
            let exe = std::env::current_exe().context("locate the dosfs binary")?;
            let mut args = vec![
                format!("--threads={threads}"),
                format!("--readahead-kb={readahead_kb}"),
                format!("--negative-ms={negative_ms}"),
            ];
            if negative_listings {
                args.push("--negative-listings".into());
            }
            if writeback_cache {
                args.push("--writeback-cache".into());
            }
            let pid = dos_fs::mount::daemon(
                &exe,
                &fs_file,
                &mountpoint,
                &args,
                &log,
                Duration::from_secs(20),
            )?;
            println!(
                "dosfs: mounted at {} (pid {pid}, log {})",
                mountpoint.display(),
                log.display()
            );
            Ok(())
        }
        Cmd::Mount {
            mountpoint,
            threads,
            readahead_kb,
            writeback_cache,
            negative_ms,
            negative_listings,
            ..
        } => {
            let opts = dos_fs::mount::MountOptions {
                threads,
                readahead_kb,
                writeback_cache,
                negative_timeout: Duration::from_millis(negative_ms),
                negative_listings,
                ..Default::default()
            };
            Ok(dos_fs::mount::run(
                Client::open(Some(&fs_file))?,
                &mountpoint,
                opts,
            )?)
        }
        Cmd::Umount { mountpoint } => Ok(dos_fs::mount::umount(&mountpoint)?),
        cmd => {
            let c = Client::open(Some(&fs_file))?;
            client_cmd(&c, cmd)
        }
    }
}

fn serve(
    dir: &Path,
    listen: &str,
    fs_id: Option<&str>,
    index: Option<u32>,
    servers: Option<u32>,
    threads: usize,
) -> anyhow::Result<()> {
    let hex = std::env::var(SECRET_ENV)
        .with_context(|| format!("${SECRET_ENV} must hold the file system's secret"))?;
    let secret = Secret::from_hex(hex.trim()).context("bad secret")?;
    let fsid = fs_id
        .map(|s| FsId::parse(s).ok_or_else(|| anyhow!("--fs-id must be 32 hex digits")))
        .transpose()?;
    let target = match (fsid, index, servers) {
        (Some(id), Some(i), Some(n)) => Target::format(dir, id, i, n)?,
        _ => Target::open(dir, Expect { fsid, index })?,
    };
    let info = target.info();
    let service = Service::open(&target)?;
    let server = Server::bind(
        service,
        &info.fsid,
        secret,
        listen,
        ServerConfig {
            workers: threads.max(1),
            ..ServerConfig::default()
        },
    )?;
    let addr = server.local_addr()?;
    // The one line on stdout: `dosfs up` reads the address from it.
    println!("dosfs-server {} listening {addr}", info.index);
    std::io::stdout().flush()?;
    eprintln!(
        "dosfs server {} of {} (fs {}) on {addr}, target {}",
        info.index,
        info.servers,
        info.fsid,
        dir.display()
    );
    server.serve()?;
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

fn is_our_server(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
            let dosfs =
                args.iter().any(|a| a.ends_with(b"dosfs")) && args.iter().any(|a| *a == b"serve");
            // `up --hostfile`: the dosrun that runs the servers.
            let dosrun = args.first().is_some_and(|a| a.ends_with(b"dosrun"))
                && args.iter().any(|a| *a == b"--fs-addr");
            dosfs || dosrun
        })
        .unwrap_or(false)
}

fn up(n: u32, dir: &Path, fs_file: &Path, host: &str, threads: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--local needs at least one server");
    }
    if let Ok(old) = AddrFile::read(fs_file) {
        if old.servers.iter().filter_map(|s| s.pid).any(pid_alive) {
            bail!(
                "{} names running servers; `dosfs down` first",
                fs_file.display()
            );
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let fsid = match Target::open(&dir.join("0"), Expect::default()) {
        Ok(t) if t.info().servers != n => bail!(
            "{} holds a file system of {} servers, not {n}",
            dir.display(),
            t.info().servers
        ),
        Ok(t) => t.info().fsid,
        Err(Error::NotATarget { .. }) => FsId::generate()?,
        Err(e) => return Err(e.into()),
    };
    let secret = Secret::generate()?;
    let exe = std::env::current_exe().context("locate the dosfs binary")?;
    let mut children = Vec::new();
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let log_path = dir.join(format!("server-{i}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .arg("--target")
            .arg(dir.join(i.to_string()))
            .args(["--fs-id", &fsid.to_string()])
            .args(["--index", &i.to_string(), "--servers", &n.to_string()])
            .args(["--listen", &format!("{host}:0")])
            .args(["--threads", &threads.to_string()])
            .env(SECRET_ENV, secret.to_hex())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().with_context(|| format!("start server {i}"))?;
        let out = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send((i, line));
        });
        children.push(child);
    }
    drop(tx);
    let mut addrs = vec![String::new(); n as usize];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failed = None;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, line)) => match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["dosfs-server", _, "listening", a] => addrs[i as usize] = (*a).to_owned(),
                _ => {
                    failed = Some(i);
                    break;
                }
            },
            Err(_) => {
                failed = Some(u32::MAX);
                break;
            }
        }
    }
    if let Some(i) = failed {
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let which = if i == u32::MAX {
            "a server did not start in 20 s".to_owned()
        } else {
            let log = fs::read_to_string(dir.join(format!("server-{i}.log"))).unwrap_or_default();
            format!(
                "server {i} failed to start: {}",
                log.lines().last().unwrap_or("(no log)")
            )
        };
        bail!("{which}; logs in {}", dir.display());
    }
    let file = AddrFile {
        fsid,
        secret,
        servers: children
            .iter()
            .zip(addrs)
            .map(|(c, addr)| ServerAddr {
                addr,
                pid: Some(c.id()),
            })
            .collect(),
    };
    file.write(fs_file)?;
    println!(
        "dosfs: {n} servers up (fs {fsid}); address file {}",
        fs_file.display()
    );
    Ok(())
}

/// `up --hostfile`: dosrun runs the servers in its node agents (see
/// `dos_fs::standing::launch_hosts`); the dosrun next to this dosfs, else
/// the one on PATH.
fn up_hosts(
    hostfile: &Path,
    target: &Path,
    fs_file: &Path,
    launch_agent: Option<&str>,
) -> anyhow::Result<()> {
    if let Ok(old) = AddrFile::read(fs_file) {
        if old.servers.iter().filter_map(|s| s.pid).any(pid_alive) {
            bail!(
                "{} names running servers; `dosfs down` first",
                fs_file.display()
            );
        }
    }
    let dosrun = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("dosrun")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("dosrun"));
    let f = dos_fs::standing::launch_hosts(&dos_fs::standing::HostsSpec {
        dosrun: &dosrun,
        hostfile,
        target,
        addr_file: fs_file,
        launch_agent,
        timeout: Duration::from_secs(120),
    })?;
    println!(
        "dosfs: {} servers up (fs {}); address file {}",
        f.servers.len(),
        f.fsid,
        fs_file.display()
    );
    Ok(())
}

fn down(fs_file: &Path) -> anyhow::Result<()> {
    let file = AddrFile::read(fs_file)?;
    let mut c = Client::new(&file);
    c.io_timeout = Duration::from_secs(10);
    for s in 0..c.servers() {
        if let Err(e) = c.call(s, &Request::Sync { ino: None }) {
            eprintln!("dosfs: server {s} not synced: {e}");
        }
    }
    drop(c);
    for (i, s) in file.servers.iter().enumerate() {
        let Some(pid) = s.pid else {
            eprintln!(
                "dosfs: server {i} ({}) was not started here; stop it where it runs",
                s.addr
            );
            continue;
        };
        if !pid_alive(pid) {
            continue;
        }
        if !is_our_server(pid) {
            eprintln!("dosfs: pid {pid} is no longer dosfs server {i}; left alone");
            continue;
        }
        let Ok(p) = i32::try_from(pid) else { continue };
        // SAFETY: kill has no memory effects; `p` is a checked dosfs server pid.
        unsafe { libc::kill(p, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if pid_alive(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    fs::remove_file(fs_file).with_context(|| format!("remove {}", fs_file.display()))?;
    println!("dosfs: {} servers down", file.servers.len());
    Ok(())
}

/// Parses `4096`, `64K`, `1M`, `2G` (powers of 1024).
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    n.checked_mul(mul)
        .ok_or_else(|| anyhow!("size {s:?} too large"))
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "directory",
    }
}

fn client_cmd(c: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ls { long, path } => {
            let a = c.stat(&path)?;
            if a.kind == Kind::File {
                println!("{path}");
                return Ok(());
            }
            for e in c.readdir(&path)? {
                let slash = if e.kind == Kind::Dir { "/" } else { "" };
                if long {
                    let child = FsPath::parse(&path)?.join(&e.name)?.to_string();
                    let a = c.stat(&child)?;
                    println!("{:<9} {:>14} {}{slash}", kind_name(a.kind), a.size, e.name);
                } else {
                    println!("{}{slash}", e.name);
                }
            }
        }
        Cmd::Stat { path } => {
            let a = c.stat(&path)?;
            println!(
                "  path: {path}\n  type: {}\n inode: {}",
                kind_name(a.kind),
                a.ino
            );
            match a.kind {
                Kind::File => println!("  size: {} ({})", a.size, human(a.size)),
                Kind::Dir => println!("entries: {}", a.size),
            }
            print_layout(&a);
        }
        Cmd::Mkdir { parents, path } => {
            if parents {
                let p = FsPath::parse(&path)?;
                let mut cur = FsPath::root();
                for n in p.names() {
                    cur = cur.join(n)?;
                    match c.mkdir(&cur.to_string()) {
                        Ok(_) => {}
                        Err(Error::Exists { .. })
                            if c.stat(&cur.to_string())?.kind == Kind::Dir => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            } else {
                c.mkdir(&path)?;
            }
        }
        Cmd::Rm { recursive, path } => remove(c, &path, recursive)?,
        Cmd::Mv { from, to } => c.rename(&from, &to)?,
        Cmd::Df => {
            println!(
                "{:>6} {:<22} {:>12} {:>12} {:>12} {:>5} {:>8}  path",
                "server", "address", "size", "used", "free", "use%", "inodes"
            );
            let mut down = 0;
            for (i, r) in c.statfs().into_iter().enumerate() {
                match r {
                    Ok(s) => {
                        let used = s.total.saturating_sub(s.free);
                        let pct = (used * 100).checked_div(s.total).unwrap_or(0);
                        let inodes = if i == 0 {
                            s.inodes.to_string()
                        } else {
                            "-".into()
                        };
                        // How this client reaches the server: shm (same
                        // node), tcp, or roce (DOS_FS_TRANSPORT).
                        let path = c
                            .data_path(i as u32)
                            .map_or_else(|_| "-".to_owned(), |p| p.to_string());
                        println!(
                            "{:>6} {:<22} {:>12} {:>12} {:>12} {:>4}% {:>8}  {path}",
                            s.server,
                            addr_of(c, i),
                            human(s.total),
                            human(used),
                            human(s.free),
                            pct,
                            inodes
                        );
                    }
                    Err(e) => {
                        down += 1;
                        println!("{i:>6} {:<22} {e}", addr_of(c, i));
                    }
                }
            }
            if down > 0 {
                bail!("{down} server(s) did not answer");
            }
        }
        Cmd::Cp { src, dst } => cp(c, &src, &dst)?,
        Cmd::Setstripe {
            size,
            count,
            index,
            path,
        } => {
            let spec = LayoutSpec {
                stripe_size: match size {
                    Some(s) => u32::try_from(parse_size(&s)?).context("stripe size too large")?,
                    None => 0,
                },
                stripe_count: match count {
                    None | Some(0) => 0,
                    Some(-1) => LayoutSpec::ALL,
                    Some(n) => {
                        u32::try_from(n).context("stripe count must be -1, 0 or positive")?
                    }
                },
                first: match index {
                    None | Some(-1) => LayoutSpec::ANY,
                    Some(n) => {
                        u32::try_from(n).context("stripe index must be -1 or a server index")?
                    }
                },
            };
            let a = c.set_stripe(&path, spec)?;
            print_layout(&a);
        }
        Cmd::Getstripe { path } => print_layout(&c.stat(&path)?),
        Cmd::Verify { path } => {
            let v = c.verify(&path)?;
            for b in &v.bad {
                println!(
                    "BAD {} offset {} (server {}): {}",
                    b.path, b.offset, b.server, b.reason
                );
            }
            println!(
                "verified {} files, {} chunks, {}; {} bad, {} not yet synced",
                v.files,
                v.total.chunks,
                human(v.total.bytes),
                v.bad.len(),
                v.total.pending
            );
            // Chunks of files the namespace no longer has (removed while a
            // server was down, a crashed client or create): dropped.
            if path == "/" {
                let gone = c.collect_orphans()?;
                let files: std::collections::BTreeSet<u64> = gone.iter().map(|g| g.1).collect();
                println!(
                    "removed orphan chunks of {} deleted files ({} server-files)",
                    files.len(),
                    gone.len()
                );
            }
            if !v.bad.is_empty() {
                bail!("{} corrupted chunk(s)", v.bad.len());
            }
        }
        Cmd::Serve { .. } | Cmd::Up { .. } | Cmd::Down => unreachable!("handled in run"),
        Cmd::Mount { .. } | Cmd::Umount { .. } => unreachable!("handled in run"),
    }
    Ok(())
}

fn addr_of(c: &Client, i: usize) -> String {
    c.addr(i as u32).unwrap_or("?").to_owned()
}

fn print_layout(a: &Attr) {
    let l = &a.layout;
    if a.kind == Kind::Dir {
        println!("default layout for new files:");
    }
    println!("stripe_size:  {}", l.stripe_size);
    println!("stripe_count: {}", l.stripe_count);
    if a.kind == Kind::File {
        println!("first_server: {}", l.first);
        let list: Vec<String> = l.server_list().map(|s| s.to_string()).collect();
        println!("servers:      {}", list.join(" "));
    }
}

fn remove(c: &Client, path: &str, recursive: bool) -> anyhow::Result<()> {
    if recursive && c.stat(path)?.kind == Kind::Dir {
        let p = FsPath::parse(path)?;
        for e in c.readdir(path)? {
            remove(c, &p.join(&e.name)?.to_string(), true)?;
        }
    }
    c.unlink(path)?;
    Ok(())
}

/// A dosfs path written as `:/x` or `dosfs:/x`.
/// A path inside the file system, given plain (`/results`) or as cp names
/// the dosfs side (`:/results`, `dosfs:/results`).
fn in_fs(s: &str) -> Result<String, std::convert::Infallible> {
    Ok(fs_path(s).unwrap_or(s).to_string())
}

fn fs_path(s: &str) -> Option<&str> {
    s.strip_prefix("dosfs:").or_else(|| s.strip_prefix(':'))
}

struct Progress {
    total: u64,
    done: u64,
    start: Instant,
    show: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            done: 0,
            start: Instant::now(),
            show: std::io::stderr().is_terminal(),
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.show {
            let secs = self.start.elapsed().as_secs_f64().max(1e-6);
            let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
            eprint!(
                "\r{:>3}% {} / {}  {}/s   ",
                pct,
                human(self.done),
                human(self.total),
                human((self.done as f64 / secs) as u64)
            );
        }
    }

    fn finish(&self) {
        if self.show {
            eprintln!();
        }
    }
}

/// Bytes moved per batch: whole stripe rows, about 64 MiB.
fn batch_len(a: &Attr) -> u64 {
    let row = u64::from(a.layout.stripe_size) * u64::from(a.layout.stripe_count);
    (64 << 20) / row * row + if row > 64 << 20 { row } else { 0 }
}

fn cp(c: &Client, src: &str, dst: &str) -> anyhow::Result<()> {
    match (fs_path(src), fs_path(dst)) {
        (None, Some(to)) => {
            let mut f = File::open(src).with_context(|| format!("open {src}"))?;
            let size = f.metadata()?.len();
            let to = into_dir(c, to, src)?;
            let mut a = c.create(&to, None, false)?;
            if a.size > 0 {
                a = c.set_size(&a, 0)?;
            }
            let batch = batch_len(&a);
            let mut buf = vec![0u8; batch.min(size.max(1)) as usize];
            let mut off = 0u64;
            let mut prog = Progress::new(size);
            while off < size {
                let n = (size - off).min(batch) as usize;
                f.read_exact(&mut buf[..n])
                    .with_context(|| format!("read {src}"))?;
                c.write_at(&a, off, &buf[..n])?;
                off += n as u64;
                prog.add(n as u64);
            }
            c.sync(&a)?;
            prog.finish();
        }
        (Some(from), None) => {
            let a = c.stat(from)?;
            if a.kind != Kind::File {
                bail!("{from}: is a directory");
            }
            let mut dst = PathBuf::from(dst);
            if dst.is_dir() {
                let name = FsPath::parse(from)?
                    .names()
                    .last()
                    .cloned()
                    .ok_or_else(|| anyhow!("{from}: no file name"))?;
                dst.push(name);
            }
            let mut out =
                File::create(&dst).with_context(|| format!("create {}", dst.display()))?;
            let batch = batch_len(&a);
            let mut buf = vec![0u8; batch.min(a.size.max(1)) as usize];
            let mut off = 0u64;
            let mut prog = Progress::new(a.size);
            while off < a.size {
                let n = (a.size - off).min(batch) as usize;
                c.read_at(from, &a, off, &mut buf[..n])?;
                out.write_all(&buf[..n])
                    .with_context(|| format!("write {}", dst.display()))?;
                off += n as u64;
                prog.add(n as u64);
            }
            out.sync_all()?;
            prog.finish();
        }
        (Some(from), Some(to)) => {
            let a = c.stat(from)?;
            let to = into_dir(c, to, from)?;
            let mut b = c.create(&to, None, false)?;
            if b.size > 0 {
                b = c.set_size(&b, 0)?;
            }
            let batch = batch_len(&a);
            let mut buf = vec![0u8; batch.min(a.size.max(1)) as usize];
            let mut off = 0u64;
            while off < a.size {
                let n = (a.size - off).min(batch) as usize;
                c.read_at(from, &a, off, &mut buf[..n])?;
                c.write_at(&b, off, &buf[..n])?;
                off += n as u64;
            }
            c.sync(&b)?;
        }
        (None, None) => {
            bail!("name the dosfs side with a leading ':' (e.g. dosfs cp data.bin :/data.bin)")
        }
    }
    Ok(())
}

/// `to`, or `to/<last name of from>` when `to` is a directory.
fn into_dir(c: &Client, to: &str, from: &str) -> anyhow::Result<String> {
    match c.stat(to) {
        Ok(a) if a.kind == Kind::Dir => {
            let name = Path::new(from)
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{from}: no file name"))?;
            Ok(FsPath::parse(to)?.join(name)?.to_string())
        }
        _ => Ok(to.to_owned()),
    }
}
