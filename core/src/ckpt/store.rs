//! Checkpoint files on a disk: sealed files (a header with a crc32c), the
//! bundle of a rank's files, and the [`Disk`] trait the index and the levels
//! write through (the real file system, or a crashing one in tests).
//!
//! A *sealed* file is `DOSCKPT1`, the payload's length (u64 LE), its crc32c
//! (u32 LE), the header's own crc32c (u32 LE), then the payload: a torn or
//! bit-flipped file fails [`unseal`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

const MAGIC: &[u8; 8] = b"DOSCKPT1";
const HEADER: usize = 24;

/// The header of a sealed file holding `payload`.
pub fn seal_header(payload: &[u8]) -> [u8; HEADER] {
    header_for(payload.len() as u64, crc32c::crc32c(payload))
}

/// `payload` with its header.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&seal_header(payload));
    out.extend_from_slice(payload);
    out
}

/// Writes `payload` sealed at `path` (atomically, without copying it).
pub fn write_sealed(disk: &dyn Disk, path: &Path, payload: &[u8]) -> Result<()> {
    write_sealed_parts(disk, path, &[payload])
}

/// Writes the concatenation of `parts` sealed at `path` (without
/// concatenating them).
pub fn write_sealed_parts(disk: &dyn Disk, path: &Path, parts: &[&[u8]]) -> Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let crc = parts.iter().fold(0, |c, p| crc32c::crc32c_append(c, p));
    let h = header_for(len as u64, crc);
    let mut all: Vec<&[u8]> = vec![&h];
    all.extend_from_slice(parts);
    disk.write_atomic_parts(path, &all)
}

/// The header of a sealed file whose payload has `len` bytes and crc32c
/// `crc` (known without a pass over the payload, e.g. the sender's).
pub fn header_for(len: u64, crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let c = crc32c::crc32c(&h[..20]);
    h[20..].copy_from_slice(&c.to_le_bytes());
    h
}

/// A shared, writable mapping of a whole file (kept open), unmapped when
/// dropped. [`MappedWrite`] writes through one; a session keeps the
/// mappings of its partner copies so that the next copy into the same
/// (recycled) file finds its pages mapped already.
#[derive(Debug)]
pub struct Mapping {
    file: std::fs::File,
    /// `(device, inode)` of the file.
    id: (u64, u64),
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone (the pointer is only
// turned into slices through `&mut` borrows of its owner), so moving it to
// another thread is as safe as moving a `Vec<u8>`.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` (at least 1).
    fn new(file: std::fs::File, len: usize) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        // SAFETY: maps `len` bytes of a file at least `len` long; the
        // mapping is owned by the value returned and unmapped in `drop`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            file,
            id: (m.dev(), m.ino()),
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no slice of it
        // outlives the borrow of its owner that made it.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Reserves `len` bytes of `file` (so that a full file system is an error
/// here, never a `SIGBUS` on a store into the mapping).
fn reserve(file: &std::fs::File, from: usize, len: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len <= from {
        return Ok(());
    }
    let off = |x: usize| {
        libc::off_t::try_from(x).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    // SAFETY: a plain system call on a file descriptor we own.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), off(from)?, off(len - from)?) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(r))
    }
}

/// A sealed file written in place through a shared mapping of its
/// temporary file: the caller fills [`MappedWrite::payload`] (a partner
/// copy is received straight into it, so the transfer is the write: no
/// receive buffer, no second copy), then [`MappedWrite::commit`] writes the
/// header with the payload's crc32c the caller knows (the sender's; the
/// copy is checked when it is read, as every file is) and renames the file
/// into place. Dropped uncommitted, the temporary file is removed.
///
/// The space is reserved with `fallocate` before the mapping, so a full
/// file system is an error here, never a `SIGBUS` on a store.
#[derive(Debug)]
pub struct MappedWrite {
    path: PathBuf,
    tmp: PathBuf,
    map: Option<Mapping>,
    len: usize,
}

impl MappedWrite {
    /// Creates the temporary file of `path` for a payload of `len` bytes
    /// and maps it. With `reuse`, an old file there (a retired copy) is
    /// renamed into the temporary name and overwritten: on a tmpfs its
    /// pages are already allocated, which saves allocating and zeroing
    /// them (half the time of a fresh copy on the test VM); if `cache`
    /// holds a mapping of that file, long enough, it is taken (its pages
    /// are mapped already).
    pub fn create(
        path: &Path,
        len: usize,
        reuse: Option<&Path>,
        cache: &mut Vec<Mapping>,
    ) -> Result<MappedWrite> {
        use std::os::unix::fs::MetadataExt;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::file("create", dir))?;
        let tmp = tmp_name(path);
        let reused = reuse.is_some_and(|r| std::fs::rename(r, &tmp).is_ok());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!reused)
            .open(&tmp)
            .map_err(Error::file("create", &tmp))?;
        let total = HEADER + len;
        let fail = |op: &'static str, e: std::io::Error| {
            let _ = std::fs::remove_file(&tmp);
            Error::file(op, &tmp)(e)
        };
        // A reused file was a complete copy: every byte of it was written,
        // so its blocks are allocated already and only a longer payload
        // needs more (allocating what is there again walks every page: 2 ms
        // of the 25 of a 64 MiB copy on the test VM).
        let mut have = 0;
        let old = if reused {
            have = file
                .metadata()
                .map_err(|e| fail("stat", e))?
                .len()
                .min(total as u64) as usize;
            // A longer old file is cut (a shorter one grows below).
            file.set_len(total as u64)
                .map_err(|e| fail("truncate", e))?;
            let m = file.metadata().map_err(|e| fail("stat", e))?;
            let id = (m.dev(), m.ino());
            cache
                .iter()
                .position(|c| c.id == id && c.len >= total)
                .map(|i| cache.remove(i))
        } else {
            None
        };
        reserve(&file, have, total).map_err(|e| fail("allocate", e))?;
        let map = match old {
            Some(m) => m,
            None => Mapping::new(file, total).map_err(|e| fail("map", e))?,
        };
        Ok(MappedWrite {
            path: path.to_path_buf(),
            tmp,
            map: Some(map),
            len,
        })
    }

    /// The payload's bytes, in the file (zero, or an old copy's bytes,
    /// until written).
    pub fn payload(&mut self) -> &mut [u8] {
        match &self.map {
            // SAFETY: the mapping is at least `HEADER + len` bytes, alive
            // while `self.map` holds it, and borrowed mutably through
            // `&mut self` only.
            Some(m) => unsafe { std::slice::from_raw_parts_mut(m.ptr.add(HEADER), self.len) },
            None => &mut [],
        }
    }

    /// Seals the file with `crc` (the payload's crc32c), syncs it and
    /// renames it into place; returns its mapping (to be reused for the
    /// same file later, or dropped).
    pub fn commit(mut self, crc: u32) -> Result<Mapping> {
        let h = header_for(self.len as u64, crc);
        let map = self.map.take().expect("a mapping until committed");
        // SAFETY: the mapping holds at least HEADER bytes and is alive.
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), map.ptr, HEADER) };
        let r = map
            .file
            .sync_data()
            .map_err(Error::file("sync", &self.tmp))
            .and_then(|()| {
                std::fs::rename(&self.tmp, &self.path).map_err(Error::file("rename", &self.path))
            });
        r?;
        self.tmp = PathBuf::new();
        Ok(map)
    }
}

impl Drop for MappedWrite {
    fn drop(&mut self) {
        self.map.take();
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The payload of a sealed file, checked.
pub fn unseal<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let bad = |reason| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("not a checkpoint file (short, or no magic)"));
    }
    let word = |a: usize| u32::from_le_bytes(bytes[a..a + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..20]) != word(20) {
        return Err(bad("header checksum mismatch"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if bytes.len() as u64 - HEADER as u64 != len {
        return Err(bad("length mismatch (a torn write?)"));
    }
    let payload = &bytes[HEADER..];
    if crc32c::crc32c(payload) != word(16) {
        return Err(bad("data checksum mismatch"));
    }
    Ok(payload)
}

/// One rank's files of one checkpoint: `(name, contents)`.
pub type Files = Vec<(String, Vec<u8>)>;

/// A rank's files as one byte string (what partners and XOR sets protect):
/// the number of files (u32 LE), then for each its name's length (u32 LE),
/// name, contents' length (u64 LE) and contents.
pub fn bundle(files: &Files) -> Vec<u8> {
    let size = 4 + files
        .iter()
        .map(|(n, b)| 12 + n.len() + b.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (n, b) in files {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// The start of the [`bundle`] of one file `name` of `len` bytes (its
/// contents follow).
pub fn bundle_prefix(name: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + name.len());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out
}

/// The [`bundle`] of one file `name` whose contents are the concatenation
/// of `parts` (one copy of the data).
pub fn bundle_one(name: &str, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = bundle_prefix(name, len);
    out.reserve(len);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// The files of a [`bundle`].
pub fn unbundle(path: &Path, bytes: &[u8]) -> Result<Files> {
    let bad = || Error::Corrupt {
        path: path.to_path_buf(),
        reason: "the bundle does not decode",
    };
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = at.checked_add(n).ok_or_else(bad)?;
        let s = bytes.get(at..end).ok_or_else(bad)?;
        at = end;
        Ok(s)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut files = Vec::new();
    for _ in 0..count {
        let nl = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let name = std::str::from_utf8(take(nl)?)
            .map_err(|_| bad())?
            .to_string();
        let bl = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let b = take(usize::try_from(bl).map_err(|_| bad())?)?.to_vec();
        files.push((name, b));
    }
    if at != bytes.len() {
        return Err(bad());
    }
    Ok(files)
}

/// A rank's manifest: its files, their lengths and checksums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `(name, length, crc32c)` of each file.
    pub files: Vec<(String, u64, u32)>,
}

/// Where a disk operation writes: a file system, or a test's memory.
pub trait Disk {
    /// The contents of `path`.
    fn read(&self, path: &Path) -> Result<Vec<u8>>;
    /// Writes `path` so that it is either wholly there or not at all (a
    /// temporary file renamed).
    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()>;
    /// [`Disk::write_atomic`] of the concatenation of `parts` (without
    /// concatenating them, where the disk can).
    fn write_atomic_parts(&self, path: &Path, parts: &[&[u8]]) -> Result<()> {
        self.write_atomic(path, &parts.concat())
    }
    /// Removes `path` and everything under it; a missing path is fine.
    fn remove_all(&self, path: &Path) -> Result<()>;
    /// The names in directory `dir` (empty when it does not exist).
    fn list(&self, dir: &Path) -> Result<Vec<String>>;
}

/// The local file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(Error::file("read", path))
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::file("create", dir))?;
        let tmp = tmp_name(path);
        let mut f = std::fs::File::create(&tmp).map_err(Error::file("create", &tmp))?;
        f.write_all(data).map_err(Error::file("write", &tmp))?;
        f.sync_data().map_err(Error::file("sync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(Error::file("rename", path))
    }

    fn write_atomic_parts(&self, path: &Path, parts: &[&[u8]]) -> Result<()> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::file("create", dir))?;
        let tmp = tmp_name(path);
        let mut f = std::fs::File::create(&tmp).map_err(Error::file("create", &tmp))?;
        for p in parts {
            f.write_all(p).map_err(Error::file("write", &tmp))?;
        }
        f.sync_data().map_err(Error::file("sync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(Error::file("rename", path))
    }

    fn remove_all(&self, path: &Path) -> Result<()> {
        let r = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        r.map_err(Error::file("remove", path))
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut v = Vec::new();
                for e in rd {
                    let e = e.map_err(Error::file("list", dir))?;
                    v.push(e.file_name().to_string_lossy().into_owned());
                }
                v.sort();
                Ok(v)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::file("list", dir)(e)),
        }
    }
}

/// Test hook (fault injection, not for applications): a disk whose atomic
/// write puts the first half of the data under the temporary name, syncs
/// it, and then kills this process with SIGKILL, so the file is never
/// renamed into place (a rank that dies in the middle of writing its L1
/// file; see [`super::Ckpt::die_during_checkpoint`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DieMidWrite;

impl Disk for DieMidWrite {
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        RealDisk.read(path)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::file("create", dir))?;
        let tmp = tmp_name(path);
        let mut f = std::fs::File::create(&tmp).map_err(Error::file("create", &tmp))?;
        f.write_all(&data[..data.len() / 2])
            .map_err(Error::file("write", &tmp))?;
        f.sync_data().map_err(Error::file("sync", &tmp))?;
        eprintln!(
            "dos::ckpt: dying by SIGKILL in the middle of writing {} (test hook)",
            path.display()
        );
        // SAFETY: sends a signal to this process; no memory effects.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        // SIGKILL cannot be caught; never reached.
        std::process::abort()
    }

    fn remove_all(&self, path: &Path) -> Result<()> {
        RealDisk.remove_all(path)
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        RealDisk.list(dir)
    }
}

/// The temporary name `path` is written under before its rename.
pub fn tmp_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Reads a sealed file and returns its payload.
pub fn read_sealed(disk: &dyn Disk, path: &Path) -> Result<Vec<u8>> {
    let b = disk.read(path)?;
    unseal(path, &b).map(<[u8]>::to_vec)
}

/// A disk in memory that crashes after a given number of operations: every
/// operation from then on fails and changes nothing (tests of the commit
/// protocol; a `write_atomic` is two operations, so a crash can fall
/// between the temporary file and its rename).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemDisk {
    /// The files, by path.
    pub files: std::cell::RefCell<std::collections::BTreeMap<PathBuf, Vec<u8>>>,
    /// Operations left before the crash (`None`: never crashes).
    pub budget: std::cell::Cell<Option<usize>>,
}

#[cfg(test)]
impl MemDisk {
    fn step(&self) -> Result<()> {
        match self.budget.get() {
            Some(0) => Err(Error::Usage {
                op: "disk",
                reason: "crashed",
            }),
            Some(n) => {
                self.budget.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
impl Disk for MemDisk {
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.files.borrow().get(path).cloned().ok_or_else(|| {
            Error::file("read", path)(std::io::Error::from(std::io::ErrorKind::NotFound))
        })
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        self.step()?;
        let tmp = tmp_name(path);
        self.files.borrow_mut().insert(tmp.clone(), data.to_vec());
        self.step()?;
        let mut f = self.files.borrow_mut();
        f.remove(&tmp);
        f.insert(path.to_path_buf(), data.to_vec());
        Ok(())
    }

    fn remove_all(&self, path: &Path) -> Result<()> {
        self.step()?;
        self.files
            .borrow_mut()
            .retain(|p, _| p != path && !p.starts_with(path));
        Ok(())
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .files
            .borrow()
            .keys()
            .filter_map(|p| p.strip_prefix(dir).ok())
            .filter_map(|rest| rest.iter().next())
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        v.dedup();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_catch_every_flipped_bit_and_torn_tail() {
        let p = Path::new("x");
        let s = seal(b"hello checkpoint");
        assert_eq!(unseal(p, &s).unwrap(), b"hello checkpoint");
        for i in 0..s.len() * 8 {
            let mut t = s.clone();
            t[i / 8] ^= 1 << (i % 8);
            assert!(unseal(p, &t).is_err(), "bit {i}");
        }
        for n in 0..s.len() {
            assert!(unseal(p, &s[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn sealed_parts_read_back_as_one_payload() {
        let d = MemDisk::default();
        let p = Path::new("/s");
        write_sealed_parts(&d, p, &[b"ab", b"", b"cde"]).unwrap();
        assert_eq!(read_sealed(&d, p).unwrap(), b"abcde");
        assert_eq!(d.read(p).unwrap(), seal(b"abcde"));
    }

    #[test]
    fn mapped_writes_read_back_sealed_and_vanish_when_dropped() {
        let dir = std::env::temp_dir().join(format!("dos-ckpt-mapped-{}", std::process::id()));
        let p = dir.join("sub").join("copy");
        let mut cache = Vec::new();
        let mut w = MappedWrite::create(&p, 5, None, &mut cache).unwrap();
        w.payload().copy_from_slice(b"hello");
        assert!(tmp_name(&p).exists() && !p.exists());
        w.commit(crc32c::crc32c(b"hello")).unwrap();
        assert_eq!(read_sealed(&RealDisk, &p).unwrap(), b"hello");
        assert!(!tmp_name(&p).exists());
        // A wrong checksum (a corrupted transfer) is caught on reading.
        let w = MappedWrite::create(&p, 3, None, &mut cache).unwrap();
        w.commit(7).unwrap();
        assert!(read_sealed(&RealDisk, &p).is_err());
        // Dropped uncommitted: no temporary file left, the old file stays.
        let mut w = MappedWrite::create(&p, 0, None, &mut cache).unwrap();
        assert!(w.payload().is_empty());
        drop(w);
        assert!(!tmp_name(&p).exists() && p.exists());
        // Reusing an old file, longer or shorter, or a missing one.
        let old = dir.join("spare");
        for (was, now) in [(100usize, 4usize), (2, 7), (0, 3)] {
            if was > 0 {
                std::fs::write(&old, vec![0xaa; was]).unwrap();
            }
            let mut w = MappedWrite::create(&p, now, Some(&old), &mut cache).unwrap();
            let data: Vec<u8> = (0..now as u8).collect();
            w.payload().copy_from_slice(&data);
            w.commit(crc32c::crc32c(&data)).unwrap();
            assert_eq!(read_sealed(&RealDisk, &p).unwrap(), data);
            assert!(!old.exists());
        }
        // A retired copy renamed back as the spare is written through the
        // mapping its last write left (taken from the cache).
        let mut w = MappedWrite::create(&p, 6, None, &mut cache).unwrap();
        w.payload().copy_from_slice(b"first!");
        cache.push(w.commit(crc32c::crc32c(b"first!")).unwrap());
        std::fs::rename(&p, &old).unwrap();
        let mut w = MappedWrite::create(&p, 4, Some(&old), &mut cache).unwrap();
        assert!(cache.is_empty(), "the cached mapping was taken");
        w.payload().copy_from_slice(b"next");
        cache.push(w.commit(crc32c::crc32c(b"next")).unwrap());
        assert_eq!(read_sealed(&RealDisk, &p).unwrap(), b"next");
        // A cached mapping too short for the file is not taken.
        std::fs::rename(&p, &old).unwrap();
        let mut w = MappedWrite::create(&p, 64, Some(&old), &mut cache).unwrap();
        assert_eq!(cache.len(), 1);
        w.payload().fill(9);
        w.commit(crc32c::crc32c(&[9; 64])).unwrap();
        assert_eq!(read_sealed(&RealDisk, &p).unwrap(), [9; 64]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bundles_round_trip() {
        let f: Files = vec![("a".into(), vec![1, 2]), ("b".into(), vec![])];
        assert_eq!(unbundle(Path::new("x"), &bundle(&f)).unwrap(), f);
        let b = bundle(&f);
        let one = bundle_one("m", &[b"ab", b"", b"c"]);
        assert_eq!(one, bundle(&vec![("m".into(), b"abc".to_vec())]));
        for n in 0..b.len() {
            assert!(unbundle(Path::new("x"), &b[..n]).is_err(), "cut at {n}");
        }
        assert!(unbundle(Path::new("x"), &[0xff, 0xff, 0xff, 0xff, 1]).is_err());
    }
}
