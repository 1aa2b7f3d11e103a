//! Chunk storage on one server: the stripes of files, each checksummed.
//!
//! Stripe `s` of file (inode) `i` that this server holds is one file,
//! `chunks/<i mod 256, 2 hex>/<i hex>/<s hex>`: a 32-byte header, then the
//! stripe's bytes from offset 0 to the highest byte written (shorter than a
//! stripe at the end of a file; unwritten parts read as zeros).
//!
//! ```text
//! 0..4   "dosC"           4..6   version = 1     6..8  flags (1: unsealed)
//! 8..16  inode            16..24 stripe
//! 24..28 data length      28..32 crc32c of bytes 0..28 and the data
//! ```
//!
//! ## Writes and syncs: synced data is never replaced by a torn chunk
//! A write never touches a synced chunk. The first write to a chunk after a
//! sync makes a *pending* copy, `<s>.new` (the synced bytes, verified, or
//! nothing for a new chunk; a write of a whole stripe copies nothing), and
//! every write until the next sync goes into that copy with `pwrite`, so
//! small writes cost one copy per chunk per sync, not one per write.
//! [`ChunkStore::sync`] *seals* each pending chunk (computes its checksum
//! into the header), fsyncs it, renames it over the synced chunk and fsyncs
//! the directory. A crash at any point leaves either the old synced chunk
//! or the new sealed one; pending copies found at start are unsynced data
//! and are deleted. Reads see pending data (a writer reads its own writes).
//!
//! ## Integrity
//! Every read of a synced chunk reads the whole chunk and checks its header
//! and checksum; a mismatch is [`Error::ChunkCorrupt`] naming the inode,
//! stripe, file offset and server, and no byte of that chunk is returned.
//! (A whole-chunk check costs a full stripe read for a small read; the
//! stripes that `cp` and collective I/O move are whole stripes.)
//! [`ChunkStore::verify`] checks every synced chunk of a file.
//!
//! ## Full disks
//! `ENOSPC` (or `EDQUOT`) from a write or a seal is [`Error::NoSpace`]; a
//! failed first copy is removed, and synced chunks are untouched either way.
//! The bytes of the failed write itself are undefined until rewritten, as
//! with POSIX `write`.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::target::{fsync_dir, Target};

/// Size of a chunk's header.
pub const HEADER: usize = 32;
const MAGIC: &[u8; 4] = b"dosC";
const VERSION: u16 = 1;
const UNSEALED: u16 = 1;
const LOCKS: usize = 64;

/// What [`ChunkStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Synced chunks checked.
    pub chunks: u64,
    /// Their data bytes.
    pub bytes: u64,
    /// Chunks written but not synced (not checked: they have no checksum yet).
    pub pending: u64,
    /// Bad chunks: stripe and reason.
    pub bad: Vec<(u64, String)>,
}

/// Space on a server's target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Bytes in the target's file system.
    pub total: u64,
    /// Bytes free for unprivileged writers.
    pub free: u64,
}

/// The chunks of one server.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    server: u32,
    locks: Vec<Mutex<()>>,
    pending: Mutex<HashMap<u64, BTreeSet<u64>>>,
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChunkStore {
    /// Opens the chunk store of `target`, deleting pending copies that a
    /// previous run left unsynced.
    pub fn open(target: &Target) -> Result<ChunkStore> {
        let dir = target.chunk_dir();
        let store = ChunkStore {
            dir,
            server: target.info().index,
            locks: (0..LOCKS).map(|_| Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
        };
        store.drop_unsynced()?;
        Ok(store)
    }

    fn drop_unsynced(&self) -> Result<()> {
        for bucket in read_dir(&self.dir)? {
            for file_dir in read_dir(&bucket)? {
                for chunk in read_dir(&file_dir)? {
                    if chunk.extension().is_some_and(|e| e == "new") {
                        fs::remove_file(&chunk).map_err(|e| Error::io("remove", &chunk, e))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn file_dir(&self, ino: u64) -> PathBuf {
        self.dir
            .join(format!("{:02x}", ino & 0xff))
            .join(format!("{ino:x}"))
    }

    fn paths(&self, ino: u64, stripe: u64) -> (PathBuf, PathBuf) {
        let d = self.file_dir(ino);
        (
            d.join(format!("{stripe:x}")),
            d.join(format!("{stripe:x}.new")),
        )
    }

    fn lock_of(&self, ino: u64, stripe: u64) -> MutexGuard<'_, ()> {
        let h =
            ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stripe.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        lock(&self.locks[(h >> 58) as usize % LOCKS])
    }

    fn corrupt(&self, ino: u64, stripe: u64, stripe_size: u32, reason: impl Into<String>) -> Error {
        Error::ChunkCorrupt {
            ino,
            stripe,
            file_offset: stripe.saturating_mul(u64::from(stripe_size)),
            server: self.server,
            reason: reason.into(),
        }
    }

    fn io_err(&self, op: &'static str, path: &Path, e: std::io::Error) -> Error {
        let err = Error::io(op, path, e);
        if err.is_no_space() {
            Error::NoSpace {
                op,
                server: self.server,
            }
        } else {
            err
        }
    }

    /// Writes `data` at `offset` in stripe `stripe` of inode `ino`, whose
    /// stripes are `stripe_size` bytes. Durable after [`ChunkStore::sync`].
    pub fn write(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        data: &[u8],
    ) -> Result<()> {
        check_range(stripe_size, offset, data.len())?;
        let _g = self.lock_of(ino, stripe);
        let (synced, new) = self.paths(ino, stripe);
        let whole = offset == 0 && data.len() == stripe_size as usize;
        let f = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&new)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let dir = self.file_dir(ino);
                fs::create_dir_all(&dir).map_err(|e| self.io_err("create", &dir, e))?;
                // The first write since the last sync: start from the synced bytes.
                let base = if whole {
                    Vec::new()
                } else {
                    self.read_synced(&synced, ino, stripe, stripe_size)?
                        .unwrap_or_default()
                };
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&new)
                    .map_err(|e| self.io_err("create", &new, e))?;
                let res = f
                    .write_all_at(&header(ino, stripe, 0, 0, UNSEALED), 0)
                    .and_then(|()| f.write_all_at(&base, HEADER as u64));
                if let Err(e) = res {
                    let _ = fs::remove_file(&new);
                    return Err(self.io_err("write", &new, e));
                }
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(ino)
                    .or_default()
                    .insert(stripe);
                f
            }
            Err(e) => return Err(self.io_err("open", &new, e)),
        };
        f.write_all_at(data, HEADER as u64 + u64::from(offset))
            .map_err(|e| self.io_err("write", &new, e))
    }

    /// Reads `len` bytes at `offset` of a stripe; bytes never written
    /// (holes, past the chunk's end) read as zeros.
    pub fn read(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>> {
        check_range(stripe_size, offset, len as usize)?;
        let _g = self.lock_of(ino, stripe);
        let (synced, new) = self.paths(ino, stripe);
        let mut out = vec![0u8; len as usize];
        match File::open(&new) {
            Ok(f) => {
                let mut got = 0usize;
                while got < out.len() {
                    let pos = HEADER as u64 + u64::from(offset) + got as u64;
                    match f.read_at(&mut out[got..], pos) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(self.io_err("read", &new, e)),
                    }
                }
                return Ok(out);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_err("open", &new, e)),
        }
        if let Some(mut data) = self.read_synced(&synced, ino, stripe, stripe_size)? {
            if offset == 0 && data.len() >= len as usize {
                // The common case, a whole stripe: no second copy.
                data.truncate(len as usize);
                return Ok(data);
            }
            let start = (offset as usize).min(data.len());
            let end = (offset as usize + len as usize).min(data.len());
            out[..end - start].copy_from_slice(&data[start..end]);
        }
        Ok(out)
    }

    /// The verified data of a synced chunk; `None` if it does not exist.
    fn read_synced(
        &self,
        path: &Path,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
    ) -> Result<Option<Vec<u8>>> {
        let b = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err("read", path, e)),
        };
        let bad = |r: &str| self.corrupt(ino, stripe, stripe_size, r);
        if b.len() < HEADER {
            return Err(bad("shorter than its header"));
        }
        if &b[0..4] != MAGIC || u16::from_le_bytes([b[4], b[5]]) != VERSION {
            return Err(bad("bad magic or version"));
        }
        let field = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 8];
            a[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(a)
        };
        if field(8..16) != ino || field(16..24) != stripe {
            return Err(bad("header names another chunk"));
        }
        let len = field(24..28) as usize;
        if len != b.len() - HEADER || len > stripe_size as usize {
            return Err(bad("length does not match the header"));
        }
        let crc = field(28..32) as u32;
        if crc32c::crc32c_append(crc32c::crc32c(&b[..28]), &b[HEADER..]) != crc {
            return Err(bad("checksum mismatch"));
        }
        let mut b = b;
        b.drain(..HEADER);
        Ok(Some(b))
    }

    /// Seals, fsyncs and renames every pending chunk of `ino` (of every
    /// inode with `None`), then fsyncs their directories.
    pub fn sync(&self, ino: Option<u64>) -> Result<()> {
        let work: Vec<(u64, BTreeSet<u64>)> = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match ino {
                Some(i) => p.remove(&i).map(|s| (i, s)).into_iter().collect(),
                None => p.drain().collect(),
            }
        };
        let mut first_err = None;
        for (ino, stripes) in work {
            let mut failed = BTreeSet::new();
            for &s in &stripes {
                if let Err(e) = self.seal(ino, s) {
                    failed.insert(s);
                    first_err.get_or_insert(e);
                }
            }
            let dir = self.file_dir(ino);
            if let Err(e) =
                fsync_dir(&dir).and_then(|()| fsync_dir(dir.parent().unwrap_or(&self.dir)))
            {
                first_err.get_or_insert(e);
            }
            if !failed.is_empty() {
                let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                p.entry(ino).or_default().extend(failed);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn seal(&self, ino: u64, stripe: u64) -> Result<()> {
        let _g = self.lock_of(ino, stripe);
        let (synced, new) = self.paths(ino, stripe);
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&new)
        {
            Ok(f) => f,
            // Removed (file deleted or truncated away) since it was written.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err("open", &new, e)),
        };
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut b).map_err(|e| self.io_err("read", &new, e))?;
        if b.len() < HEADER {
            return Err(self.corrupt(ino, stripe, 0, "pending chunk lost its header"));
        }
        let len = (b.len() - HEADER) as u32;
        let mut h = header(ino, stripe, len, 0, 0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..28]), &b[HEADER..]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| self.io_err("seal", &new, e))?;
        fs::rename(&new, &synced).map_err(|e| self.io_err("rename", &new, e))
    }

    /// Removes every chunk of `ino` (after the file was deleted).
    pub fn remove(&self, ino: u64) -> Result<()> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ino);
        let dir = self.file_dir(ino);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err("remove", &dir, e)),
        }
        fsync_dir(dir.parent().unwrap_or(&self.dir))
    }

    /// Cuts the file to `size` bytes: chunks past it are removed, the chunk
    /// holding it is shortened (as a pending copy, durable at the next sync).
    pub fn truncate(&self, ino: u64, stripe_size: u32, size: u64) -> Result<()> {
        let ss = u64::from(stripe_size.max(1));
        for stripe in self.stripes(ino)? {
            let start = stripe.saturating_mul(ss);
            let (synced, new) = self.paths(ino, stripe);
            if start >= size {
                let _g = self.lock_of(ino, stripe);
                for p in [&new, &synced] {
                    match fs::remove_file(p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(self.io_err("remove", p, e)),
                    }
                }
            } else if size - start < ss {
                let keep = (size - start) as u32;
                // A zero-length write makes the pending copy; then cut it.
                self.write(ino, stripe, stripe_size, 0, &[])?;
                let _g = self.lock_of(ino, stripe);
                let f = OpenOptions::new()
                    .write(true)
                    .open(&new)
                    .map_err(|e| self.io_err("open", &new, e))?;
                let len = f
                    .metadata()
                    .map_err(|e| self.io_err("stat", &new, e))?
                    .len();
                let want = HEADER as u64 + u64::from(keep);
                if len > want {
                    f.set_len(want)
                        .map_err(|e| self.io_err("truncate", &new, e))?;
                }
            }
        }
        Ok(())
    }

    /// The stripes of `ino` stored here (synced or pending).
    pub fn stripes(&self, ino: u64) -> Result<BTreeSet<u64>> {
        let mut out = BTreeSet::new();
        for p in read_dir(&self.file_dir(ino))? {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let hex = name.strip_suffix(".new").unwrap_or(name);
            if let Ok(s) = u64::from_str_radix(hex, 16) {
                out.insert(s);
            }
        }
        Ok(out)
    }

    /// Reads and checks every synced chunk of `ino`.
    pub fn verify(&self, ino: u64, stripe_size: u32) -> Result<VerifyReport> {
        let mut rep = VerifyReport::default();
        for stripe in self.stripes(ino)? {
            let _g = self.lock_of(ino, stripe);
            let (synced, new) = self.paths(ino, stripe);
            if new.exists() {
                rep.pending += 1;
            }
            match self.read_synced(&synced, ino, stripe, stripe_size) {
                Ok(Some(d)) => {
                    rep.chunks += 1;
                    rep.bytes += d.len() as u64;
                }
                Ok(None) => {}
                Err(Error::ChunkCorrupt { reason, .. }) => {
                    rep.chunks += 1;
                    rep.bad.push((stripe, reason));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(rep)
    }

    /// Space on the target's file system.
    pub fn space(&self) -> Result<SpaceInfo> {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).map_err(|_| {
            Error::InvalidPath {
                path: self.dir.display().to_string(),
                reason: "a name contains '/' or NUL",
            }
        })?;
        // SAFETY: statvfs is plain old data, valid when zeroed.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(self.io_err("statvfs", &self.dir, std::io::Error::last_os_error()));
        }
        let frsize = st.f_frsize as u64;
        Ok(SpaceInfo {
            total: st.f_blocks as u64 * frsize,
            free: st.f_bavail as u64 * frsize,
        })
    }

    /// The server index these chunks belong to.
    pub fn server(&self) -> u32 {
        self.server
    }
}

fn header(ino: u64, stripe: u64, len: u32, crc: u32, flags: u16) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&flags.to_le_bytes());
    h[8..16].copy_from_slice(&ino.to_le_bytes());
    h[16..24].copy_from_slice(&stripe.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn check_range(stripe_size: u32, offset: u32, len: usize) -> Result<()> {
    if stripe_size == 0
        || stripe_size > crate::layout::MAX_STRIPE_SIZE
        || u64::from(offset) + len as u64 > u64::from(stripe_size)
    {
        return Err(Error::InvalidLayout {
            reason: format!("piece {offset}+{len} does not fit a stripe of {stripe_size} bytes"),
        });
    }
    Ok(())
}

/// The entries of `dir`, or none if it does not exist.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.path()).map_err(|e| Error::io("list", dir, e)))
            .collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("list", dir, e)),
    }
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
