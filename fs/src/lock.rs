//! One server per target: an exclusive lock on a target while a server
//! runs on it.
//!
//! Two servers on one target (two `dosrun --fs DIR` jobs at once, or
//! `dosfs serve` twice) would append to one journal and rewrite the same
//! chunks from two processes, each with its own view of the namespace: the
//! journal would interleave records that do not apply to either view, and
//! the second server's start-up would delete the first one's pending
//! chunks. So [`TargetLock::acquire`] takes an exclusive `flock(2)` on the
//! file `lock` in the target directory, held for as long as the server
//! lives (by its [`crate::server::Service`]); a second server finds it taken
//! and refuses with [`Error::TargetBusy`], naming the target and the pid
//! written in the file by the holder.
//!
//! `flock` rather than a pid file: the kernel drops the lock when its
//! holder dies however it dies (SIGKILL, a lost node agent), so a crashed
//! server never leaves a stale lock behind, and no pid liveness guess is
//! needed. The lock is on an open file description, so it also excludes a
//! second server in the same process (tests, or dosrun's own server). A
//! server of the same process that is stopping may hold it a moment longer
//! (connection threads still finishing), so acquiring retries for
//! [`LOCK_WAIT`] before refusing. flock does not reach across NFS; dosfs
//! targets are on each node's local disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The lock file's name in a target directory.
pub const LOCK_FILE: &str = "lock";
/// How long [`TargetLock::acquire`] retries a taken lock before refusing.
pub const LOCK_WAIT: Duration = Duration::from_millis(1500);

/// The exclusive lock of one target, released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub struct TargetLock {
    _file: File,
    path: PathBuf,
}

impl TargetLock {
    /// Takes the lock of the target directory `dir`, or refuses with
    /// [`Error::TargetBusy`] if another server holds it.
    pub fn acquire(dir: &Path) -> Result<TargetLock> {
        TargetLock::acquire_within(dir, LOCK_WAIT)
    }

    /// [`TargetLock::acquire`], retrying for `wait`.
    pub fn acquire_within(dir: &Path, wait: Duration) -> Result<TargetLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("open the lock of", &path, e))?;
        let until = Instant::now() + wait;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io("lock", &path, e));
            }
            if Instant::now() >= until {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(Error::TargetBusy {
                    dir: dir.to_owned(),
                    holder: s.trim().parse().ok(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Who holds it, for the message of the next one that tries.
        let pid = format!("{}\n", std::process::id());
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        Ok(TargetLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::tests::TempDir;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let d = TempDir::new("lock");
        let a = TargetLock::acquire(&d.0).unwrap();
        let t = Instant::now();
        let e = TargetLock::acquire_within(&d.0, Duration::from_millis(100)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(100));
        match &e {
            Error::TargetBusy { dir, holder } => {
                assert_eq!(dir, &d.0);
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string().contains("in use by another dosfs server"),
            "{e}"
        );
        drop(a);
        TargetLock::acquire_within(&d.0, Duration::ZERO).unwrap();
    }
}
