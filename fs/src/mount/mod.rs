//! The FUSE mount: `dosfs mount [--fs FILE] MOUNTPOINT` lets unmodified
//! programs (cp, Python, fio, IOR's POSIX backend) use dosfs.
//!
//! [`DosFuse`] answers the kernel's FUSE requests with [`Client`] calls,
//! through the pure-Rust `fuser` crate (no libfuse: as root the mount is a
//! mount(2) call, otherwise it goes through `fusermount3`). Inode numbers
//! are dosfs's own; the namespace requests, which name paths, get them from
//! a table of the (directory, name) each inode the kernel holds was found
//! under ([`state::Names`]).
//!
//! ## Semantics
//!
//! **Close-to-open**, as NFS: `open` reads the file's attributes afresh from
//! the metadata server and the kernel drops its cached pages of the file
//! (no `FOPEN_KEEP_CACHE`); file attributes are not cached by the kernel
//! ([`MountOptions::attr_timeout`], default 0), names for 1 s
//! ([`MountOptions::entry_timeout`]). A name found missing is kept missing
//! by the kernel for [`MountOptions::negative_timeout`] (1 s, `dosfs mount
//! --negative-ms`; 0 turns it off), as NFS keeps negative entries (for
//! longer): a program that stats or opens a missing name again, or probes
//! many (Python's imports), costs no request, and a name another client
//! makes after this mount looked it up is seen within that time. Creates
//! are not affected: the kernel always asks again before `O_EXCL`, and a
//! create is always the metadata server's decision (EEXIST, or the
//! existing file for `O_CREAT`). With `--negative-listings`
//! ([`MountOptions::negative_listings`], off by default) the mount also
//! keeps, for the same time, a listing of each small directory in which a
//! lookup found nothing ([`state::Listings`]), and answers lookups of
//! missing names there itself, so a create is one metadata request instead
//! of two; the price is that a name another client makes stays invisible
//! for up to that time even if this mount never looked it up, which
//! close-to-open does not allow, hence opt-in. Writes are **visible at close**:
//! `close` (FUSE flush) sends the file's buffered writes to the servers,
//! where every client reads them (a read-only handle's close asks nothing:
//! `FOPEN_NOFLUSH`); they are **durable at `fsync`** (a dosfs
//! sync of the file) and at unmount (a sync of every server). Close does
//! not sync: that is MPI-IO's rule, and it keeps creating many small files
//! cheap; a program that needs durability calls fsync, as it would on any
//! file system. A write error found after `write` returned (a buffered
//! write sent later) is given to the next write, close or fsync.
//!
//! **Large I/O.** The kernel sends writes of up to 1 MiB ([`MAX_WRITE`],
//! `max_write`) and reads ahead: at mount the mount's readahead is raised to
//! [`MountOptions::readahead_kb`] (the kernel caps what FUSE's init can ask
//! for, so it is written to the mount's `/sys/class/bdi/` entry; root only).
//! Writes are gathered per file into a write-behind buffer of one stripe row
//! (stripe size x stripe count, 1 to 16 MiB: [`state::WriteBuf`]) and sent
//! as one [`Client::write_at`], which writes to every server of the row at
//! once; the kernel serialises a file's writes, so without this only one
//! server would be busy at a time. A full row is sent from a thread while
//! the kernel's next writes fill the buffer (one row in flight per file;
//! a close, fsync, read or truncate of the file waits for it, and its error
//! goes to the file's next write, close or fsync). Reads go straight to the
//! servers holding the stripes; several requests run at once
//! ([`MountOptions::threads`]), and lookups in one directory run in
//! parallel (`FUSE_PARALLEL_DIROPS`).
//!
//! **Writeback cache** (`dosfs mount --writeback-cache`,
//! [`MountOptions::writeback_cache`]; off by default). The kernel's
//! `FUSE_WRITEBACK_CACHE`: `write(2)` returns once the page cache holds the
//! bytes and the kernel sends them in the background, up to 1 MiB a request
//! (`max_pages` is capped by the kernel's `fs.fuse.max_pages_limit`, 256
//! pages), so a program's write no longer waits for a mount thread. Close
//! (the kernel writes the dirty pages, then FLUSH) and fsync keep their
//! meaning; a write error (ENOSPC, EIO) comes at close or fsync rather than
//! at the write. The catch: the kernel then keeps its own size of a cached
//! file and ignores the size in every reply, so it would not see another
//! client grow or shrink the file. Close-to-open is kept at `open`: the
//! mount knows the size the kernel's inode has (from the entry that made
//! it, then this mount's writes and truncates); when the servers' differs
//! and no handle of this mount has the file open, the entry's generation
//! is raised and the open fails with ESTALE, on which the VFS looks the
//! name up again (`LOOKUP_REVAL`), drops the old inode for one with the
//! servers' size and retries the open, invisibly to the program. What it
//! does not cover: `stat` of a cached, unopened file shows the kernel's
//! size until the next open, and a file this mount holds open keeps its
//! size while open (as NFS).
//!
//! **What is not there.** dosfs keeps no modes, owners or times: files show
//! 0644 and directories 0755, owned by the user who mounted, with the mount
//! time as every time; chmod, chown and utimes succeed and change nothing.
//! No hard or symbolic links, no special files (EPERM/ENOSYS). A file
//! removed while open is gone at once (its chunks are dropped; its
//! handles' later reads fail), as NFS without silly-rename.
//!
//! **Errors** map to errno ([`errno`]): ENOENT, EEXIST, ENOTDIR, EISDIR,
//! ENOTEMPTY, ENOSPC, EINVAL for names dosfs refuses; corrupted data, an
//! unreachable server and protocol errors are EIO, with a log line naming
//! the file and offset (the mount's stderr, or its `--log` file).
//!
//! ## Starting and stopping
//!
//! [`run`] mounts and serves in the foreground until unmounted (or until
//! SIGINT/SIGTERM, which unmount). [`daemon`] starts `dosfs mount` in the
//! background and returns once the mount answers (the mount point's device
//! has changed), printing the daemon's pid. [`umount`] unmounts (as
//! `fusermount3 -u` does); the daemon then syncs and exits. A daemon that
//! was killed (SIGKILL) leaves a dead mount ("transport endpoint is not
//! connected") until `dosfs umount` or `fusermount3 -u` removes it.

mod fs;
pub mod state;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use fs::{DosFuse, MAX_WRITE};

use crate::client::Client;
use crate::error::{Error, Result};

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Threads answering the kernel's requests (reads run in parallel).
    pub threads: usize,
    /// How long the kernel caches a name (and a directory's attributes).
    pub entry_timeout: Duration,
    /// How long the kernel caches a file's attributes (0: asked each time,
    /// which close-to-open needs for sizes).
    pub attr_timeout: Duration,
    /// How long a name found missing stays missing for this mount: the
    /// kernel's negative entries, and the directory listings that answer
    /// lookups of missing names ([`state::Listings`]). Zero: every lookup
    /// asks the metadata server.
    pub negative_timeout: Duration,
    /// Answer lookups of missing names from directory listings kept for
    /// `negative_timeout` ([`state::Listings`]; off by default: a name
    /// another client makes may then stay invisible that long even if this
    /// mount never looked it up, which close-to-open does not allow).
    pub negative_listings: bool,
    /// Readahead of the mount in KiB (0: leave the kernel's).
    pub readahead_kb: u32,
    /// The kernel's writeback cache (`FUSE_WRITEBACK_CACHE`): `write(2)`
    /// returns once the page cache has the bytes. Off by default: it
    /// breaks close-to-open across clients (see the module docs).
    pub writeback_cache: bool,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            threads: 4,
            entry_timeout: Duration::from_secs(1),
            attr_timeout: Duration::ZERO,
            negative_timeout: Duration::from_secs(1),
            negative_listings: false,
            readahead_kb: 4096,
            writeback_cache: false,
        }
    }
}

/// The errno a program sees for a dosfs error.
pub fn errno(e: &Error) -> i32 {
    match e {
        Error::NotFound { .. } => libc::ENOENT,
        Error::Exists { .. } => libc::EEXIST,
        Error::NotADirectory { .. } => libc::ENOTDIR,
        Error::IsADirectory { .. } => libc::EISDIR,
        Error::NotEmpty { .. } => libc::ENOTEMPTY,
        Error::InvalidPath { .. } | Error::InvalidLayout { .. } => libc::EINVAL,
        Error::LayoutFixed { .. } => libc::EPERM,
        Error::Auth { .. } => libc::EACCES,
        e if e.is_no_space() => libc::ENOSPC,
        _ => libc::EIO,
    }
}

fn mount_err(op: &'static str, mountpoint: &Path, source: std::io::Error) -> Error {
    Error::io(op, mountpoint, source)
}

/// Log lines of the mount to stderr (once per process).
fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// The `major:minor` of the file system mounted at `mountpoint`, from
/// /proc/self/mountinfo (a stat would ask the mount itself).
fn mount_dev(mountpoint: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mountpoint.to_str()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && f[4] == want).then(|| f[2].to_owned())
    })
}

/// Whether `mountpoint` is a dosfs FUSE mount (source `dosfs`) in
/// /proc/mounts.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    let Some(want) = mountpoint.to_str() else {
        return false;
    };
    m.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        // mount(2) as root gives type `fuse`, fusermount3 `fuse.dosfs`.
        f.len() > 2 && f[0] == "dosfs" && f[1] == want && f[2].starts_with("fuse")
    })
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts)
/// and returns a thread that unmounts when one arrives.
fn unmount_on_signal(mut unmounter: fuser::SessionUnmounter) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use;
    // pthread_sigmask only changes this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("dosfs-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is an initialised sigset_t; `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                tracing::info!(target: "dosfs::mount", "signal {sig}: unmounting");
                if let Err(e) = unmounter.unmount() {
                    // Busy, or gone: nothing will end the session; leave.
                    tracing::error!(target: "dosfs::mount", "unmount: {e}; exiting");
                    std::process::exit(1);
                }
            }
        })?;
    Ok(())
}

/// Mounts the file system of `client` at `mountpoint` and serves it until
/// it is unmounted (`dosfs umount`, `fusermount3 -u`, SIGINT or SIGTERM);
/// then syncs every server and returns.
pub fn run(client: Client, mountpoint: &Path, opts: MountOptions) -> Result<()> {
    init_log();
    let mountpoint = mountpoint
        .canonicalize()
        .map_err(|e| mount_err("mount point", mountpoint, e))?;
    if !mountpoint.is_dir() {
        return Err(mount_err(
            "mount point",
            &mountpoint,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    // Every server must answer before the mount is made.
    for r in client.statfs() {
        r?;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("dosfs".into()),
        fuser::MountOption::Subtype("dosfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        fuser::MountOption::RW,
    ];
    // No `auto_unmount`: fusermount3 3.14's watcher exits at once when
    // started by fuser (checked: the mount then outlives SIGTERM). As root
    // the mount is mount(2) and the unmount umount(2); others go through
    // fusermount3 both ways. A killed daemon leaves a dead mount that
    // `dosfs umount` (fusermount3 -u) removes.
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let readahead = opts.readahead_kb;
    let fs = DosFuse::new(client, opts);
    let mut session = fuser::Session::new(fs, &mountpoint, &config)
        .map_err(|e| mount_err("mount", &mountpoint, e))?;
    if readahead > 0 && root {
        match mount_dev(&mountpoint) {
            Some(dev) => {
                let p = format!("/sys/class/bdi/{dev}/read_ahead_kb");
                if let Err(e) = std::fs::write(&p, readahead.to_string()) {
                    tracing::warn!(target: "dosfs::mount", "readahead not set ({p}: {e})");
                }
            }
            None => tracing::warn!(target: "dosfs::mount", "readahead not set (mount not found)"),
        }
    }
    unmount_on_signal(session.unmount_callable())
        .map_err(|e| mount_err("signal thread", &mountpoint, e))?;
    tracing::info!(target: "dosfs::mount", "mounted at {}", mountpoint.display());
    session
        .run()
        .map_err(|e| mount_err("serve", &mountpoint, e))?;
    tracing::info!(target: "dosfs::mount", "unmounted {}", mountpoint.display());
    Ok(())
}

/// Starts `exe --fs FS_FILE mount MOUNTPOINT ARGS...` in the background
/// (its own process group, output to `log`) and waits, at most `timeout`,
/// until the mount answers: the mount point's device has changed. Returns
/// the daemon's pid; on failure the daemon is stopped and the error names
/// the last line of its log.
pub fn daemon(
    exe: &Path,
    fs_file: &Path,
    mountpoint: &Path,
    args: &[String],
    log: &Path,
    timeout: Duration,
) -> Result<u32> {
    let mountpoint = mountpoint
        .canonicalize()
        .map_err(|e| mount_err("mount point", mountpoint, e))?;
    let before = std::fs::metadata(&mountpoint)
        .map_err(|e| mount_err("mount point", &mountpoint, e))?
        .dev();
    let fs_file =
        std::path::absolute(fs_file).map_err(|e| Error::io("address file", fs_file, e))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io("open log", log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("open log", log, e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--fs")
        .arg(&fs_file)
        .arg("mount")
        .arg(&mountpoint)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| Error::io("start", exe, e))?;
    let last_log = || {
        std::fs::File::open(log)
            .ok()
            .and_then(|f| BufReader::new(f).lines().map_while(|l| l.ok()).last())
            .unwrap_or_else(|| "(empty log)".into())
    };
    let until = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(mount_err(
                "mount",
                &mountpoint,
                std::io::Error::other(format!("daemon exited ({st}): {}", last_log())),
            ));
        }
        if let Ok(m) = std::fs::metadata(&mountpoint) {
            if m.dev() != before {
                return Ok(child.id());
            }
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(mount_err(
                "mount",
                &mountpoint,
                std::io::Error::other(format!("not mounted after {timeout:?}: {}", last_log())),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts the dosfs mount at `mountpoint`: `fusermount3 -u`, or
/// umount(2) where fusermount3 is missing.
pub fn umount(mountpoint: &Path) -> Result<()> {
    let mp = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    if !is_mounted(&mp) {
        return Err(mount_err(
            "umount",
            &mp,
            std::io::Error::other("not a dosfs mount"),
        ));
    }
    match Command::new("fusermount3").arg("-u").arg(&mp).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(mount_err(
            "umount",
            &mp,
            std::io::Error::other(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        )),
        Err(_) => {
            let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes())
                .map_err(|_| mount_err("umount", &mp, std::io::Error::other("NUL in path")))?;
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                Ok(())
            } else {
                Err(mount_err("umount", &mp, std::io::Error::last_os_error()))
            }
        }
    }
}

/// A default log file for a daemon: in the temporary directory, named
/// after this process.
pub fn default_log() -> PathBuf {
    std::env::temp_dir().join(format!("dosfs-mount.{}.log", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_errno() {
        let p = || "/x".to_string();
        assert_eq!(errno(&Error::NotFound { path: p() }), libc::ENOENT);
        assert_eq!(errno(&Error::Exists { path: p() }), libc::EEXIST);
        assert_eq!(errno(&Error::NotEmpty { path: p() }), libc::ENOTEMPTY);
        assert_eq!(errno(&Error::NotADirectory { path: p() }), libc::ENOTDIR);
        assert_eq!(errno(&Error::IsADirectory { path: p() }), libc::EISDIR);
        assert_eq!(
            errno(&Error::NoSpace {
                op: "write",
                server: 1
            }),
            libc::ENOSPC
        );
        assert_eq!(
            errno(&Error::io(
                "write",
                "/t",
                std::io::Error::from_raw_os_error(libc::ENOSPC)
            )),
            libc::ENOSPC
        );
        assert_eq!(
            errno(&Error::CorruptData {
                path: p(),
                offset: 0,
                stripe: 0,
                server: 0
            }),
            libc::EIO
        );
        assert_eq!(
            errno(&Error::InvalidPath {
                path: p(),
                reason: "x"
            }),
            libc::EINVAL
        );
    }

    #[test]
    fn is_mounted_is_false_for_a_plain_directory() {
        assert!(!is_mounted(Path::new("/")));
        assert!(!is_mounted(&std::env::temp_dir()));
    }
}
