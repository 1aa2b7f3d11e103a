//! The index of checkpoints and the on-disk layout of a checkpoint
//! directory (sans-IO over a [`Disk`]).
//!
//! Layout of a level's directory `ROOT` (`<DOS_CKPT_DIR>/dos-ckpt-<id>` for
//! L1, the same under the L4 target):
//!
//! ```text
//! ROOT/index.r<R>              rank R's index (sealed)
//! ROOT/<name>.v<V>/r<o>/...    the files of rank o (the memory API writes `memory.bin`)
//! ROOT/<name>.v<V>/r<o>.manifest  their names, lengths and crc32c (sealed; written last)
//! ROOT/<name>.v<V>/p<o>.bundle the partner copy of rank o's files, kept by its partner (L2)
//! ROOT/<name>.v<V>/x<o>.parity rank o's XOR parity segment (L3)
//! ROOT/<name>.v<V>/r<o>.bundle rank o's files on L4
//! ```
//!
//! **Commit protocol** (every rank, on its own index): (1) the entry is
//! added as [`State::Writing`] and the index stored; (2) the files, then
//! the manifest, partner copies and parity are written; (3) the ranks agree
//! that every part was written; (4) the entry becomes [`State::Complete`]
//! (or [`State::Failed`]) and the index is stored; (5) entries beyond the
//! last `keep` complete ones are dropped from the index, the index stored,
//! and only then their directories removed. Every index store is atomic (a
//! temporary file renamed), so a crash at any step leaves either the
//! previous complete checkpoint or the new one restorable, never a torn
//! one (tested with a crash injected after every disk operation). A
//! checkpoint is complete when any rank's index says so: a rank marks it
//! only after all ranks agreed that all parts were written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::store::{read_sealed, seal, Disk, Files, Manifest};

/// The state of a checkpoint in an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Being written (a crash leaves it so: not restorable).
    Writing,
    /// Written and agreed by every rank: restorable.
    Complete,
    /// Some rank failed to write it, or a restart found it unusable.
    Failed,
}

/// Redundancy levels, as bits.
pub mod level {
    /// L1: node-local.
    pub const LOCAL: u8 = 1;
    /// L2: a partner copy on another failure group.
    pub const PARTNER: u8 = 2;
    /// L3: XOR parity across a set of failure groups.
    pub const XOR: u8 = 4;
    /// L4: the parallel file system.
    pub const FS: u8 = 8;

    /// `"L1+L2"`-style text of a set of levels.
    pub fn names(bits: u8) -> String {
        let v: Vec<&str> = [(LOCAL, "L1"), (PARTNER, "L2"), (XOR, "L3"), (FS, "L4")]
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join("+")
        }
    }
}

/// One checkpoint in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Order of creation in the job (newest is largest).
    pub seq: u64,
    /// The checkpoint's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its state.
    pub state: State,
    /// Ranks that wrote it.
    pub ranks: u32,
    /// The failure group of each rank (for the partner map and XOR sets).
    pub groups: Vec<u32>,
    /// The XOR set size used.
    pub xor_set: u32,
    /// Levels written ([`level`] bits).
    pub levels: u8,
    /// Bytes this rank wrote at L1.
    pub bytes: u64,
    /// When it was written (seconds since the Unix epoch).
    pub unix_secs: u64,
}

/// One rank's index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Entries, oldest first.
    pub entries: Vec<Entry>,
}

impl Index {
    /// Reads an index; a missing one is empty, a corrupt one an error.
    pub fn load(disk: &dyn Disk, path: &Path) -> Result<Index> {
        match read_sealed(disk, path) {
            Ok(b) => postcard::from_bytes(&b).map_err(|_| Error::Corrupt {
                path: path.to_path_buf(),
                reason: "the index does not decode",
            }),
            Err(e) if e.is_not_found() => Ok(Index::default()),
            Err(e) => Err(e),
        }
    }

    /// Stores the index atomically.
    pub fn store(&self, disk: &dyn Disk, path: &Path) -> Result<()> {
        let b = postcard::to_stdvec(self).expect("an index serializes");
        disk.write_atomic(path, &seal(&b))
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.entries.iter().map(|e| e.seq + 1).max().unwrap_or(0)
    }

    /// Adds (or replaces) an entry.
    pub fn put(&mut self, e: Entry) {
        self.entries
            .retain(|x| !(x.name == e.name && x.version == e.version));
        self.entries.push(e);
        self.entries.sort_by_key(|e| e.seq);
    }

    /// Sets the state of `name` v`version`, if listed.
    pub fn set_state(&mut self, name: &str, version: u64, state: State) {
        for e in &mut self.entries {
            if e.name == name && e.version == version {
                e.state = state;
            }
        }
    }

    /// Drops every entry but the newest `keep` complete ones (and one being
    /// written after them): failed ones and crashed writes go, returning the
    /// dropped ones: their data is to be removed after the index is stored.
    pub fn retire(&mut self, keep: usize) -> Vec<Entry> {
        let complete: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.state == State::Complete)
            .map(|e| e.seq)
            .collect();
        let Some(&oldest_kept) = complete.get(complete.len().saturating_sub(keep.max(1))) else {
            return Vec::new();
        };
        let newest = complete.last().copied().unwrap_or(0);
        let (keep_v, drop_v): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| match e.state {
                State::Complete => e.seq >= oldest_kept,
                State::Writing => e.seq > newest,
                State::Failed => false,
            });
        self.entries = keep_v;
        drop_v
    }
}

/// The paths of a level's directory (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// The root: `<base>/dos-ckpt-<id>`.
    pub root: PathBuf,
}

impl Dirs {
    /// The directory of checkpoint id `id` under `base`.
    pub fn new(base: &Path, id: &str) -> Dirs {
        Dirs {
            root: base.join(format!("dos-ckpt-{id}")),
        }
    }
    /// Rank `r`'s index.
    pub fn index(&self, r: usize) -> PathBuf {
        self.root.join(format!("index.r{r}"))
    }
    /// A checkpoint's directory.
    pub fn version(&self, name: &str, v: u64) -> PathBuf {
        self.root.join(format!("{name}.v{v}"))
    }
    /// The directory of rank `o`'s files.
    pub fn files(&self, name: &str, v: u64, o: usize) -> PathBuf {
        self.version(name, v).join(format!("r{o}"))
    }
    /// Rank `o`'s manifest.
    pub fn manifest(&self, name: &str, v: u64, o: usize) -> PathBuf {
        self.version(name, v).join(format!("r{o}.manifest"))
    }
    /// The partner copy of rank `o`'s files.
    pub fn partner(&self, name: &str, v: u64, o: usize) -> PathBuf {
        self.version(name, v).join(format!("p{o}.bundle"))
    }
    /// The spare file a retired partner copy of rank `o` is kept in, so
    /// the next copy reuses its memory (see [`super::store::MappedWrite`]).
    pub fn spare(&self, o: usize) -> PathBuf {
        self.root.join(format!("spare.p{o}"))
    }
    /// Rank `o`'s parity segment.
    pub fn parity(&self, name: &str, v: u64, o: usize) -> PathBuf {
        self.version(name, v).join(format!("x{o}.parity"))
    }
    /// Rank `o`'s bundle (on L4).
    pub fn bundle(&self, name: &str, v: u64, o: usize) -> PathBuf {
        self.version(name, v).join(format!("r{o}.bundle"))
    }
    /// The marker of a complete checkpoint on L4.
    pub fn complete(&self, name: &str, v: u64) -> PathBuf {
        self.version(name, v).join("COMPLETE")
    }
}

/// A name that is safe as one path component.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Usage {
            op: "a checkpoint name",
            reason: "1 to 100 characters from A-Z a-z 0-9 _ -",
        })
    }
}

/// Writes rank `o`'s files and then its manifest; returns the bytes written.
pub fn write_own(
    disk: &dyn Disk,
    d: &Dirs,
    name: &str,
    v: u64,
    o: usize,
    files: &Files,
) -> Result<u64> {
    let dir = d.files(name, v, o);
    for (f, data) in files {
        disk.write_atomic(&dir.join(f), data)?;
    }
    seal_own(disk, d, name, v, o, files)
}

/// Writes rank `o`'s one file `file`, the concatenation of `parts` (not
/// copied), then its manifest; returns the bytes written and their crc32c.
pub fn write_own_parts(
    disk: &dyn Disk,
    d: &Dirs,
    name: &str,
    v: u64,
    o: usize,
    file: &str,
    parts: &[&[u8]],
) -> Result<(u64, u32)> {
    disk.write_atomic_parts(&d.files(name, v, o).join(file), parts)?;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let crc = parts.iter().fold(0, |c, p| crc32c::crc32c_append(c, p));
    write_manifest(
        disk,
        d,
        name,
        v,
        o,
        vec![(file.to_string(), len as u64, crc)],
    )?;
    Ok((len as u64, crc))
}

fn write_manifest(
    disk: &dyn Disk,
    d: &Dirs,
    name: &str,
    v: u64,
    o: usize,
    files: Vec<(String, u64, u32)>,
) -> Result<()> {
    let b = postcard::to_stdvec(&Manifest { files }).expect("a manifest serializes");
    disk.write_atomic(&d.manifest(name, v, o), &seal(&b))
}

/// Writes the manifest of rank `o`'s `files` (already on disk).
pub fn seal_own(
    disk: &dyn Disk,
    d: &Dirs,
    name: &str,
    v: u64,
    o: usize,
    files: &Files,
) -> Result<u64> {
    let m = files
        .iter()
        .map(|(f, b)| (f.clone(), b.len() as u64, crc32c::crc32c(b)))
        .collect();
    write_manifest(disk, d, name, v, o, m)?;
    Ok(files.iter().map(|(_, b)| b.len() as u64).sum())
}

/// Rank `o`'s files, checked against its manifest.
pub fn read_own(disk: &dyn Disk, d: &Dirs, name: &str, v: u64, o: usize) -> Result<Files> {
    let mpath = d.manifest(name, v, o);
    let m: Manifest =
        postcard::from_bytes(&read_sealed(disk, &mpath)?).map_err(|_| Error::Corrupt {
            path: mpath.clone(),
            reason: "the manifest does not decode",
        })?;
    let dir = d.files(name, v, o);
    m.files
        .into_iter()
        .map(|(f, len, crc)| {
            let p = dir.join(&f);
            let b = disk.read(&p)?;
            if b.len() as u64 != len || crc32c::crc32c(&b) != crc {
                return Err(Error::Corrupt {
                    path: p,
                    reason: "checksum mismatch with the manifest",
                });
            }
            Ok((f, b))
        })
        .collect()
}

/// The newest complete checkpoint in `index` whose files of rank `o` verify
/// (a single rank's view: the distributed restart adds partner and parity).
pub fn newest_own(
    disk: &dyn Disk,
    d: &Dirs,
    index: &Index,
    o: usize,
) -> Option<(String, u64, Files)> {
    index
        .entries
        .iter()
        .rev()
        .filter(|e| e.state == State::Complete)
        .find_map(|e| {
            read_own(disk, d, &e.name, e.version, o)
                .ok()
                .map(|f| (e.name.clone(), e.version, f))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckpt::store::MemDisk;

    fn entry(seq: u64, v: u64) -> Entry {
        Entry {
            seq,
            name: "t".into(),
            version: v,
            state: State::Writing,
            ranks: 1,
            groups: vec![0],
            xor_set: 8,
            levels: level::LOCAL,
            bytes: 0,
            unix_secs: 0,
        }
    }

    fn files(v: u64) -> Files {
        vec![
            ("a".into(), vec![v as u8; 100]),
            ("b".into(), vec![v as u8 ^ 0x55; 37]),
        ]
    }

    /// One rank's commit of `v` (steps 1, 2, 4, 5 of the protocol; 3 is the
    /// agreement, which a single rank passes).
    fn commit(disk: &MemDisk, d: &Dirs, v: u64, keep: usize) -> Result<()> {
        let ip = d.index(0);
        let mut idx = Index::load(disk, &ip)?;
        idx.put(entry(idx.next_seq(), v));
        idx.store(disk, &ip)?;
        write_own(disk, d, "t", v, 0, &files(v))?;
        idx.set_state("t", v, State::Complete);
        idx.store(disk, &ip)?;
        let gone = idx.retire(keep);
        idx.store(disk, &ip)?;
        for e in gone {
            disk.remove_all(&d.version(&e.name, e.version))?;
        }
        Ok(())
    }

    fn restorable(disk: &MemDisk, d: &Dirs) -> Option<u64> {
        let idx = Index::load(disk, &d.index(0)).ok()?;
        newest_own(disk, d, &idx, 0).map(|(_, v, f)| {
            assert_eq!(f, files(v), "a restorable checkpoint has its data");
            v
        })
    }

    #[test]
    fn a_crash_at_any_step_leaves_the_old_or_the_new_checkpoint() {
        let d = Dirs::new(Path::new("/ck"), "job");
        for keep in [1, 2] {
            let mut k = 0;
            loop {
                let disk = MemDisk::default();
                commit(&disk, &d, 1, keep).unwrap();
                commit(&disk, &d, 2, keep).unwrap();
                disk.budget.set(Some(k));
                let done = commit(&disk, &d, 3, keep).is_ok();
                disk.budget.set(None);
                let got = restorable(&disk, &d);
                assert!(
                    matches!(got, Some(2) | Some(3)),
                    "crash after {k} ops: {got:?}"
                );
                if done {
                    assert_eq!(got, Some(3));
                    break;
                }
                // After a crash the next commit works and cleans up.
                commit(&disk, &d, 4, keep).unwrap();
                assert_eq!(restorable(&disk, &d), Some(4));
                let idx = Index::load(&disk, &d.index(0)).unwrap();
                assert!(
                    idx.entries
                        .iter()
                        .filter(|e| e.state == State::Complete)
                        .count()
                        <= keep
                );
                k += 1;
            }
            assert!(k > 5, "the protocol has several steps");
        }
    }

    #[test]
    fn retire_keeps_the_last_k_complete() {
        let mut idx = Index::default();
        for v in 0..5 {
            let mut e = entry(v, v);
            e.state = if v == 2 {
                State::Failed
            } else {
                State::Complete
            };
            idx.put(e);
        }
        let gone: Vec<u64> = idx.retire(2).iter().map(|e| e.version).collect();
        assert_eq!(gone, vec![0, 1, 2]);
        assert_eq!(
            idx.entries.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn a_corrupt_file_is_caught() {
        let disk = MemDisk::default();
        let d = Dirs::new(Path::new("/ck"), "job");
        commit(&disk, &d, 1, 2).unwrap();
        commit(&disk, &d, 2, 2).unwrap();
        disk.files
            .borrow_mut()
            .get_mut(&d.files("t", 2, 0).join("a"))
            .unwrap()[3] ^= 1;
        assert_eq!(restorable(&disk, &d), Some(1));
    }

    #[test]
    fn names_are_one_safe_path_component() {
        assert!(check_name("heat_2-d").is_ok());
        for bad in ["", "a/b", "..", "a b", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
