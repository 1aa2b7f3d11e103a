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
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[16..20].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let c = crc32c::crc32c(&h[..20]);
    h[20..].copy_from_slice(&c.to_le_bytes());
    h
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
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let c = crc32c::crc32c(&h[..20]);
    h[20..].copy_from_slice(&c.to_le_bytes());
    let mut all: Vec<&[u8]> = vec![&h];
    all.extend_from_slice(parts);
    disk.write_atomic_parts(path, &all)
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
