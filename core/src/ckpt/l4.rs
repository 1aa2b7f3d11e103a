//! Level 4: checkpoints on the parallel file system, written by a
//! background thread while the application computes.
//!
//! The target (`DOS_CKPT_FS`) is `dosfs:/DIR`, a directory of the dosfs
//! named by `$DOSFS` or `./dosfs.addr` (written with `dos_fs::client`), or
//! a plain directory path (a parallel file system's mount). Each rank's
//! flush thread writes its sealed bundle `r<o>.bundle`; once every rank's
//! write is done (checked collectively at the next checkpoint, or by
//! [`super::Ckpt::wait_fs`]), rank 0 writes the `COMPLETE` marker, which
//! holds the index entry. A restart trusts only marked checkpoints. At most
//! one L4 checkpoint is in flight: when the next is due, the previous one
//! is waited for (and marked) first, so memory stays bounded and a
//! checkpoint is never more than one L4 interval from being marked.
//!
//! The flush costs the application little: the memory API's bundle is not
//! built, the thread copies the rank's L1 file (opened when the checkpoint
//! is taken) to a directory target in the kernel (`copy_file_range`),
//! sealed with the crc32c L1 computed (no pass over the data), and the
//! thread runs at `SCHED_IDLE` until the application waits for it
//! ([`Flusher`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::error::{Error, Result};
use super::store::{Disk, RealDisk};

/// Where level 4 writes.
#[derive(Debug, Clone)]
pub enum Remote {
    /// A directory (a mounted parallel file system).
    Dir(PathBuf),
    /// A directory in a dosfs.
    Dosfs {
        /// The client (shared with the flush thread).
        client: Arc<dos_fs::client::Client>,
        /// The directory in the file system.
        dir: String,
    },
}

impl Remote {
    /// The target named by `DOS_CKPT_FS` (`None` when empty).
    pub fn parse(spec: &str) -> Result<Option<Remote>> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(None);
        }
        if let Some(dir) = spec.strip_prefix("dosfs:") {
            let client = dos_fs::client::Client::open(None)?;
            let dir = if dir.starts_with('/') {
                dir.to_string()
            } else {
                format!("/{dir}")
            };
            return Ok(Some(Remote::Dosfs {
                client: Arc::new(client),
                dir,
            }));
        }
        Ok(Some(Remote::Dir(PathBuf::from(spec))))
    }

    fn fs_path(dir: &str, rel: &Path) -> String {
        format!("{}/{}", dir.trim_end_matches('/'), rel.display())
    }

    /// Writes `data` at `rel` (relative to the target).
    pub fn write(&self, rel: &Path, data: &[u8]) -> Result<()> {
        match self {
            Remote::Dir(d) => RealDisk.write_atomic(&d.join(rel), data),
            Remote::Dosfs { client, dir } => {
                let path = Remote::fs_path(dir, rel);
                // Parents, one component at a time (existing ones are fine).
                let mut p = String::new();
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                for c in &parts[..parts.len().saturating_sub(1)] {
                    p.push('/');
                    p.push_str(c);
                    match client.mkdir(&p) {
                        Ok(_) | Err(dos_fs::Error::Exists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let a = client.create(&path, None, false)?;
                let a = client.set_size(&a, 0)?;
                client.write_at(&a, 0, data)?;
                client.sync(&a)?;
                Ok(())
            }
        }
    }

    /// Reads `rel`.
    pub fn read(&self, rel: &Path) -> Result<Vec<u8>> {
        match self {
            Remote::Dir(d) => RealDisk.read(&d.join(rel)),
            Remote::Dosfs { client, dir } => {
                let path = Remote::fs_path(dir, rel);
                let a = match client.stat(&path) {
                    Ok(a) => a,
                    Err(dos_fs::Error::NotFound { .. }) => {
                        return Err(Error::file("read", path)(
                            std::io::ErrorKind::NotFound.into(),
                        ))
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut b = vec![0u8; a.size as usize];
                client.read_at(&path, &a, 0, &mut b)?;
                Ok(b)
            }
        }
    }

    /// The names in directory `rel` (empty if missing).
    pub fn list(&self, rel: &Path) -> Result<Vec<String>> {
        match self {
            Remote::Dir(d) => RealDisk.list(&d.join(rel)),
            Remote::Dosfs { client, dir } => match client.readdir(&Remote::fs_path(dir, rel)) {
                Ok(v) => Ok(v.into_iter().map(|e| e.name).collect()),
                Err(dos_fs::Error::NotFound { .. }) => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Removes `rel` and what is under it.
    pub fn remove_all(&self, rel: &Path) -> Result<()> {
        match self {
            Remote::Dir(d) => RealDisk.remove_all(&d.join(rel)),
            Remote::Dosfs { client, dir } => {
                let path = Remote::fs_path(dir, rel);
                match client.stat(&path) {
                    Ok(a) if a.kind == dos_fs::meta::Kind::Dir => {
                        for name in self.list(rel)? {
                            self.remove_all(&rel.join(name))?;
                        }
                    }
                    Ok(_) => {}
                    Err(dos_fs::Error::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                match client.unlink(&path) {
                    Ok(_) | Err(dos_fs::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

/// What a flush writes after its head.
#[derive(Debug)]
pub enum Body {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// The first `len` bytes of an open file (the L1 file: copied by the
    /// kernel, `copy_file_range`, to a directory target; the file stays
    /// readable when L1 retires it meanwhile).
    File(std::fs::File, u64),
}

/// A job for the flush thread: write `head` then `body` at `rel`, then
/// report `seq`.
struct Job {
    seq: u64,
    rel: PathBuf,
    head: Vec<u8>,
    body: Body,
}

impl Remote {
    /// Writes `head` followed by `body` at `rel` (atomically on a
    /// directory: a temporary file, synced and renamed).
    pub fn write_parts(&self, rel: &Path, head: &[u8], body: Body) -> Result<()> {
        match (self, body) {
            (_, Body::Bytes(b)) => self.write_two(rel, head, &b),
            (Remote::Dir(d), Body::File(f, len)) => {
                use std::io::{Read, Write};
                let path = d.join(rel);
                let dir = path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(Error::file("create", dir))?;
                let tmp = super::store::tmp_name(&path);
                let r = (|| {
                    let mut out =
                        std::fs::File::create(&tmp).map_err(Error::file("create", &tmp))?;
                    out.write_all(head).map_err(Error::file("write", &tmp))?;
                    // `io::copy` between files is `copy_file_range` on Linux.
                    let n = std::io::copy(&mut f.take(len), &mut out)
                        .map_err(Error::file("copy", &tmp))?;
                    if n != len {
                        return Err(Error::file("copy", &tmp)(
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ));
                    }
                    out.sync_data().map_err(Error::file("sync", &tmp))?;
                    drop(out);
                    std::fs::rename(&tmp, &path).map_err(Error::file("rename", &path))
                })();
                if r.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                r
            }
            (Remote::Dosfs { .. }, Body::File(f, len)) => {
                use std::io::Read;
                let mut b = Vec::with_capacity(len as usize);
                f.take(len)
                    .read_to_end(&mut b)
                    .map_err(Error::file("read", rel))?;
                self.write_two(rel, head, &b)
            }
        }
    }

    fn write_two(&self, rel: &Path, head: &[u8], body: &[u8]) -> Result<()> {
        match self {
            Remote::Dir(d) => RealDisk.write_atomic_parts(&d.join(rel), &[head, body]),
            Remote::Dosfs { .. } => self.write(rel, &[head, body].concat()),
        }
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class: it runs on cycles
/// nothing else wants.
fn idle_priority() {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's (0) policy; `p` is a valid param.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) };
    if r != 0 {
        tracing::debug!(
            "SCHED_IDLE for the flush thread: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The background writer of one rank. Its thread runs at `SCHED_IDLE`
/// (on cycles the application leaves: with busy ranks on every core, a
/// flush at normal priority takes its CPU time from them) until the
/// application waits for it ([`Flusher::hurry`]: back to normal priority,
/// so a flush never starves the rank that needs it done).
#[derive(Debug)]
pub struct Flusher {
    tx: Option<mpsc::Sender<Job>>,
    /// `(seq, ok)` of finished writes.
    done: Arc<Mutex<Vec<(u64, bool)>>>,
    /// The thread's kernel id (0 until it started).
    tid: Arc<std::sync::atomic::AtomicI32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread writing to `remote`.
    pub fn start(remote: Remote) -> Flusher {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let d = done.clone();
        let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let t = tid.clone();
        let thread = std::thread::Builder::new()
            .name("dos-ckpt-l4".into())
            .spawn(move || {
                // SAFETY: gettid has no arguments and no memory effects.
                let me = unsafe { libc::gettid() };
                t.store(me, std::sync::atomic::Ordering::Release);
                for j in rx {
                    idle_priority();
                    let ok = match remote.write_parts(&j.rel, &j.head, j.body) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!("checkpoint flush of {} failed: {e}", j.rel.display());
                            false
                        }
                    };
                    d.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((j.seq, ok));
                }
            })
            .ok();
        Flusher {
            tx: Some(tx),
            done,
            tid,
            thread,
        }
    }

    /// Queues a write of `head` then `body` (returns at once).
    pub fn submit(&self, seq: u64, rel: PathBuf, head: Vec<u8>, body: Body) -> bool {
        self.tx.as_ref().is_some_and(|t| {
            t.send(Job {
                seq,
                rel,
                head,
                body,
            })
            .is_ok()
        })
    }

    /// Puts the thread back at normal priority until its next job (the
    /// application waits for the current one). Leaving `SCHED_IDLE` needs
    /// `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20; without, the thread stays
    /// idle-class (it still runs while the waiting rank sleeps).
    pub fn hurry(&self) {
        let tid = self.tid.load(std::sync::atomic::Ordering::Acquire);
        if tid != 0 {
            let p = libc::sched_param { sched_priority: 0 };
            // SAFETY: sets the policy of our own flush thread; `p` is valid.
            unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &p) };
        }
    }

    /// `Some(ok)` once the write of `seq` finished.
    pub fn status(&self, seq: u64) -> Option<bool> {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, ok)| *ok)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Finish queued writes: the process may exit right after.
        self.hurry();
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_copies_the_l1_file_at_idle_priority_until_hurried() {
        let dir = std::env::temp_dir().join(format!("dos-ckpt-l4-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("l1");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let f = Flusher::start(Remote::Dir(dir.join("fs")));
        let file = std::fs::File::open(&src).unwrap();
        // L1 retires its file meanwhile: the open file is still copied.
        std::fs::remove_file(&src).unwrap();
        assert!(f.submit(1, "v/r0".into(), b"head".to_vec(), Body::File(file, 90_000)));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while f.status(1).is_none() {
            assert!(std::time::Instant::now() < until, "the flush never ended");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(f.status(1), Some(true));
        let got = std::fs::read(dir.join("fs/v/r0")).unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..], &data[..90_000]);
        let tid = f.tid.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: queries the policy of our own thread.
        let policy = || unsafe { libc::sched_getscheduler(tid) };
        assert_eq!(policy(), libc::SCHED_IDLE);
        f.hurry();
        // Without CAP_SYS_NICE (and RLIMIT_NICE) it may stay idle.
        assert!([libc::SCHED_OTHER, libc::SCHED_IDLE].contains(&policy()));
        // A file shorter than announced is a failed flush, not a short file.
        let short = std::fs::File::open(dir.join("fs/v/r0")).unwrap();
        assert!(f.submit(2, "v/r1".into(), Vec::new(), Body::File(short, 1 << 20)));
        drop(f);
        assert!(!dir.join("fs/v/r1").exists() && !dir.join("fs/v/r1.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
