//! The metadata journal: an append-only log of checksummed records, and
//! the snapshot that bounds it.
//!
//! ## Records (little-endian)
//!
//! ```text
//! 0..4   payload length n (1..=MAX_RECORD)
//! 4..8   crc32c of bytes 8..16+n
//! 8..16  sequence number (1, 2, 3, ... never reused)
//! 16..   payload (one metadata operation, see crate::meta)
//! ```
//!
//! Each record is appended with one `write(2)`; [`Journal::sync`] makes all
//! records so far durable (`fdatasync`). At start, [`Journal::open`] reads
//! every record and classifies the first bad one:
//!
//! - a **torn tail** (a record cut by a crash: shorter than its header or
//!   length says, or with a bad checksum and nothing but zero bytes after
//!   it, as a file extended by the crash but never written leaves) is
//!   dropped: the file is truncated to the last good record, and
//!   the operation it held had not been synced, so no one was promised it;
//! - anything else (a bad record with good bytes after it) is
//!   **corruption**: [`Error::MetaCorrupt`] with the byte offset, and the
//!   server does not start on silently lost metadata.
//!
//! ## Snapshot
//! When the journal grows past a bound, the metadata writes its whole state
//! to `snapshot` atomically (temporary file, fsync, rename, fsync of the
//! directory; magic `dosM`, version, the sequence number it includes, a
//! crc32c of the payload) and then empties the journal. A crash between the
//! two leaves records the snapshot already holds; replay skips records whose
//! sequence number the snapshot includes, so either order of survival is
//! consistent.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::target::{fsync_dir, write_atomic};

/// Largest record payload.
pub const MAX_RECORD: usize = 1 << 20;
const HEADER: usize = 16;
const SNAP_MAGIC: &[u8; 4] = b"dosM";
const SNAP_VERSION: u32 = 1;
const SNAP_HEADER: usize = 4 + 4 + 8 + 8 + 4;

/// An open journal, positioned for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    next_seq: u64,
    bytes: u64,
}

/// What [`Journal::open`] found: the snapshot (if any) and the records after it.
#[derive(Debug, Default)]
pub struct Replay {
    /// The snapshot's payload and the last sequence number it includes.
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Records newer than the snapshot, in order.
    pub records: Vec<Vec<u8>>,
    /// Bytes of torn tail that were dropped.
    pub torn_bytes: u64,
}

impl Journal {
    /// Opens (or creates) the journal `dir/journal` and the snapshot
    /// `dir/snapshot`; returns what to replay.
    pub fn open(dir: &Path) -> Result<(Journal, Replay)> {
        let path = dir.join("journal");
        let snapshot = read_snapshot(&dir.join("snapshot"))?;
        let snap_seq = snapshot.as_ref().map_or(0, |s| s.0);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| Error::io("read", &path, e))?;
        let scan = scan(&buf).map_err(|(offset, reason)| Error::MetaCorrupt {
            path: path.clone(),
            offset,
            reason,
        })?;
        let torn_bytes = buf.len() as u64 - scan.good_len;
        if torn_bytes > 0 {
            file.set_len(scan.good_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("truncate torn tail of", &path, e))?;
        }
        let mut last = snap_seq;
        let mut records = Vec::new();
        for (seq, payload) in scan.records {
            if seq <= snap_seq {
                continue;
            }
            if seq <= last {
                return Err(Error::MetaCorrupt {
                    path,
                    offset: 0,
                    reason: "sequence numbers go backwards",
                });
            }
            last = seq;
            records.push(buf[payload.0..payload.1].to_vec());
        }
        Ok((
            Journal {
                path,
                file,
                next_seq: last + 1,
                bytes: scan.good_len,
            },
            Replay {
                snapshot,
                records,
                torn_bytes,
            },
        ))
    }

    /// Appends one record (not yet durable: see [`Journal::sync`]).
    pub fn append(&mut self, payload: &[u8]) -> Result<()> {
        if payload.is_empty() || payload.len() > MAX_RECORD {
            return Err(Error::MetaCorrupt {
                path: self.path.clone(),
                offset: self.bytes,
                reason: "record payload of unsupported size",
            });
        }
        let seq = self.next_seq;
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload);
        rec.extend_from_slice(&crc.to_le_bytes());
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(payload);
        if let Err(e) = self.file.write_all(&rec) {
            // A partial append is a torn tail: cut it so later records are not
            // written after garbage.
            let _ = self.file.set_len(self.bytes);
            let err = Error::io("append to", &self.path, e);
            if err.is_no_space() {
                // The metadata journal is on server 0's target.
                return Err(Error::NoSpace {
                    op: "metadata journal append",
                    server: 0,
                });
            }
            return Err(err);
        }
        self.next_seq += 1;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }

    /// A handle that makes every record appended so far durable, usable
    /// without holding the journal (its owner's lock): the fsync of a sync
    /// need not stop appends.
    pub fn sync_handle(&self) -> Result<SyncHandle> {
        Ok(SyncHandle {
            file: self
                .file
                .try_clone()
                .map_err(|e| Error::io("dup", &self.path, e))?,
            path: self.path.clone(),
        })
    }

    /// Bytes in the journal.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether the journal holds no record.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Writes `state` as the snapshot including every record so far, then
    /// empties the journal.
    pub fn snapshot(&mut self, state: &[u8]) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_owned();
        let seq = self.next_seq - 1;
        let mut s = Vec::with_capacity(SNAP_HEADER + state.len());
        s.extend_from_slice(SNAP_MAGIC);
        s.extend_from_slice(&SNAP_VERSION.to_le_bytes());
        s.extend_from_slice(&seq.to_le_bytes());
        s.extend_from_slice(&(state.len() as u64).to_le_bytes());
        s.extend_from_slice(&crc32c::crc32c(state).to_le_bytes());
        s.extend_from_slice(state);
        write_atomic(&dir.join("snapshot"), &s)?;
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| Error::io("empty", &self.path, e))?;
        self.bytes = 0;
        fsync_dir(&dir)
    }
}

struct Scan {
    records: Vec<(u64, (usize, usize))>,
    good_len: u64,
}

/// Parses records; `Err((offset, reason))` for corruption before the tail.
fn scan(buf: &[u8]) -> std::result::Result<Scan, (u64, &'static str)> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let torn = Scan {
            records: Vec::new(),
            good_len: pos as u64,
        };
        if rest.len() < HEADER {
            return Ok(Scan { records, ..torn });
        }
        let n = u32::from_le_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
        let all_zero_after =
            |from: usize| rest.get(from..).is_none_or(|t| t.iter().all(|&b| b == 0));
        if n == 0 || n > MAX_RECORD {
            if all_zero_after(0) {
                return Ok(Scan { records, ..torn });
            }
            return Err((pos as u64, "record length out of range"));
        }
        if HEADER + n > rest.len() {
            // Cut short by a crash while appending.
            return Ok(Scan { records, ..torn });
        }
        let payload = &rest[HEADER..HEADER + n];
        if crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload) != crc {
            if all_zero_after(HEADER + n) {
                return Ok(Scan { records, ..torn });
            }
            return Err((pos as u64, "record checksum mismatch"));
        }
        records.push((seq, (pos + HEADER, pos + HEADER + n)));
        pos += HEADER + n;
    }
    Ok(Scan {
        records,
        good_len: pos as u64,
    })
}

fn read_snapshot(path: &Path) -> Result<Option<(u64, Vec<u8>)>> {
    let b = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let bad = |offset, reason| Error::MetaCorrupt {
        path: path.to_owned(),
        offset,
        reason,
    };
    if b.len() < SNAP_HEADER || &b[0..4] != SNAP_MAGIC {
        return Err(bad(0, "not a dosfs metadata snapshot"));
    }
    let version = u32::from_le_bytes(b[4..8].try_into().unwrap_or_default());
    if version != SNAP_VERSION {
        return Err(bad(4, "unsupported snapshot version"));
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(b[24..28].try_into().unwrap_or_default());
    let payload = &b[SNAP_HEADER..];
    if payload.len() as u64 != len {
        return Err(bad(16, "snapshot length mismatch"));
    }
    if crc32c::crc32c(payload) != crc {
        return Err(bad(SNAP_HEADER as u64, "snapshot checksum mismatch"));
    }
    Ok(Some((seq, payload.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::tests::TempDir;

    fn reopen(d: &Path) -> Result<(Journal, Replay)> {
        Journal::open(d)
    }

    #[test]
    fn records_survive_reopen() {
        let d = TempDir::new("journal");
        let (mut j, r) = reopen(&d.0).unwrap();
        assert!(r.records.is_empty() && r.snapshot.is_none());
        for i in 0..10u8 {
            j.append(&[i; 5]).unwrap();
        }
        j.sync().unwrap();
        drop(j);
        let (mut j, r) = reopen(&d.0).unwrap();
        assert_eq!(r.records.len(), 10);
        assert_eq!(r.records[3], vec![3; 5]);
        j.append(b"more").unwrap();
        drop(j);
        assert_eq!(reopen(&d.0).unwrap().1.records.len(), 11);
    }

    #[test]
    fn torn_tail_is_dropped_and_later_appends_are_kept() {
        let d = TempDir::new("torn");
        let (mut j, _) = reopen(&d.0).unwrap();
        j.append(b"one").unwrap();
        j.append(b"two").unwrap();
        drop(j);
        let p = d.0.join("journal");
        let full = fs::read(&p).unwrap();
        // Every cut inside the second record is a torn tail.
        let first_len = HEADER + 3;
        for cut in first_len + 1..full.len() {
            fs::write(&p, &full[..cut]).unwrap();
            let (_, r) = reopen(&d.0).unwrap();
            assert_eq!(r.records, vec![b"one".to_vec()], "cut at {cut}");
            assert_eq!(fs::metadata(&p).unwrap().len(), first_len as u64);
        }
        // A crash that extended the file with zeros.
        let mut z = full[..first_len].to_vec();
        z.extend_from_slice(&[0; 40]);
        fs::write(&p, &z).unwrap();
        let (mut j, r) = reopen(&d.0).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.torn_bytes, 40);
        j.append(b"three").unwrap();
        drop(j);
        let r = reopen(&d.0).unwrap().1;
        assert_eq!(r.records, vec![b"one".to_vec(), b"three".to_vec()]);
    }

    #[test]
    fn corruption_before_the_tail_is_detected() {
        let d = TempDir::new("corrupt");
        let (mut j, _) = reopen(&d.0).unwrap();
        j.append(b"one").unwrap();
        j.append(b"two").unwrap();
        drop(j);
        let p = d.0.join("journal");
        let mut b = fs::read(&p).unwrap();
        b[HEADER + 1] ^= 0x20; // a bit flip in the first payload
        fs::write(&p, &b).unwrap();
        let e = reopen(&d.0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::MetaCorrupt {
                    offset: 0,
                    reason: "record checksum mismatch",
                    ..
                }
            ),
            "{e}"
        );
        b[HEADER + 1] ^= 0x20;
        b[0] = 0xff; // a length out of range, with good bytes after it
        b[3] = 0xff;
        fs::write(&p, &b).unwrap();
        assert!(matches!(reopen(&d.0), Err(Error::MetaCorrupt { .. })));
    }

    #[test]
    fn snapshot_bounds_the_journal_and_replay_skips_what_it_holds() {
        let d = TempDir::new("snap");
        let (mut j, _) = reopen(&d.0).unwrap();
        j.append(b"a").unwrap();
        j.append(b"b").unwrap();
        let before = fs::read(d.0.join("journal")).unwrap();
        j.snapshot(b"STATE-ab").unwrap();
        assert!(j.is_empty());
        j.append(b"c").unwrap();
        drop(j);
        let r = reopen(&d.0).unwrap().1;
        assert_eq!(r.snapshot, Some((2, b"STATE-ab".to_vec())));
        assert_eq!(r.records, vec![b"c".to_vec()]);
        // A crash after the snapshot but before the journal was emptied:
        // the old records are skipped.
        fs::write(d.0.join("journal"), &before).unwrap();
        let r = reopen(&d.0).unwrap().1;
        assert!(r.records.is_empty());
        // A damaged snapshot is corruption.
        let sp = d.0.join("snapshot");
        let mut s = fs::read(&sp).unwrap();
        let last = s.len() - 1;
        s[last] ^= 1;
        fs::write(&sp, &s).unwrap();
        assert!(matches!(reopen(&d.0), Err(Error::MetaCorrupt { .. })));
    }
}

/// See [`Journal::sync_handle`].
#[derive(Debug)]
pub struct SyncHandle {
    file: File,
    path: PathBuf,
}

impl SyncHandle {
    /// Makes every record appended before the handle was taken durable.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }
}
