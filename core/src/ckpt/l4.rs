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

/// A job for the flush thread: write `data` at `rel`, then report `seq`.
struct Job {
    seq: u64,
    rel: PathBuf,
    data: Vec<u8>,
}

/// The background writer of one rank.
#[derive(Debug)]
pub struct Flusher {
    tx: Option<mpsc::Sender<Job>>,
    /// `(seq, ok)` of finished writes.
    done: Arc<Mutex<Vec<(u64, bool)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread writing to `remote`.
    pub fn start(remote: Remote) -> Flusher {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("dos-ckpt-l4".into())
            .spawn(move || {
                for j in rx {
                    let ok = match remote.write(&j.rel, &j.data) {
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
            thread,
        }
    }

    /// Queues a write (returns at once).
    pub fn submit(&self, seq: u64, rel: PathBuf, data: Vec<u8>) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|t| t.send(Job { seq, rel, data }).is_ok())
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
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
