//! Data storage on one server: one data object per (file, server), the
//! stripes in place, a checksummed map committed by a journal.
//!
//! ## On disk (target format 2)
//! The stripes of file (inode) `i` that this server holds live in two
//! *data objects*, `chunks/<i mod 256, 2 hex>/<i hex>/d0` and `.../d1`
//! (sparse files, like a Lustre OST object): stripe `s` of a file with
//! `S`-byte stripes is at byte `s * S` of one of them, its *slot*. Nothing
//! in an object says what it holds; the **chunk map** does: for every
//! synced stripe, its slot, its length (bytes `0..len` of the stripe; the
//! rest reads as zeros), the file's stripe size and a crc32c of every
//! 64 KiB block ([`BLOCK`]). The map lives in memory and on disk as the
//! journal `chunks/journal` (records of [`crate::journal`]: a torn tail is
//! cut, damage elsewhere refuses to start) and its snapshot
//! `chunks/snapshot`. Records (little-endian):
//!
//! ```text
//! 1 commit: u32 n, then n entries:
//!           ino u64, stripe u64, slot u8, stripe size u32, len u32,
//!           crc32c u32 x ceil(len / 64 KiB)
//! 2 cut:    ino u64, first stripe u64   (stripes >= it are gone: truncate)
//! 3 drop:   ino u64                     (the file is gone)
//! ```
//!
//! The snapshot is one commit record of the whole map.
//!
//! ## Writes and syncs: synced data is never overwritten
//! A write to a stripe the map does not hold (a fresh region) goes to slot
//! 0 in place. A write to a synced stripe goes to its *other* slot: the
//! synced bytes are not touched until a later commit says they are no
//! longer current. The server remembers, per pending stripe, which ranges
//! of the new slot were written, how much of the synced stripe a truncate
//! kept, and the checksums of blocks wholly written by one write (computed
//! while the data is copied into the aligned buffer of a direct write).
//! Reads merge the two (a writer reads its own writes).
//!
//! [`ChunkStore::sync`] is a **group commit**: for every pending stripe
//! of the file (of every file with `None`) it copies the synced bytes the
//! new slot lacks (checked), computes the checksums it does not know yet,
//! then `fdatasync`s each data object written (several at once), then
//! appends ONE journal record naming every stripe with its new slot,
//! length and checksums, and `fdatasync`s the journal. Only then does the
//! map point at the new bytes; the superseded slot's range is then punched
//! out (`fallocate(PUNCH_HOLE)`) to give the space back. A crash before
//! the journal's fdatasync leaves the map as it was: the old synced bytes
//! read back and the new ones are unreferenced (a torn journal tail is
//! dropped at start). So a sync costs one fdatasync per data object and
//! one of the journal, not an fsync and a rename per stripe as format 1
//! did. A sync excludes reads and writes on this server for its duration
//! (they are short: the data went to disk with the writes).
//!
//! Truncates (a `cut` record) and removals (`drop`) are committed to the
//! journal at once, before anything is deleted.
//!
//! ## The disk engine (measured)
//! [`DiskOptions`] holds the choices so that `fs/tests/perf.rs`
//! (`disk_engine`) can time alternatives side by side (BENCHMARKS.md,
//! "Parallel file I/O", has the tables and commands):
//!
//! * **Writes** of at least 256 KiB whose object offset and length are
//!   4 KiB multiples (whole stripes: the writes of `cp`, of collective I/O
//!   and of 1 MiB transfers) go to their data object with `O_DIRECT`; the
//!   aligned copy and the block checksums are one pass (each 64 KiB block
//!   is checksummed right after it is copied, while it is in the cache).
//!   Consecutive stripes of a file land at consecutive offsets of one
//!   object, so large writes are large sequential writes. Smaller or
//!   unaligned writes go through the page cache.
//! * **Preallocation**: the first direct write to a stripe since a sync
//!   first `fallocate`s the stripe's range (extending the object). ext4
//!   runs direct writes into allocated blocks below the file's size under
//!   a shared inode lock, in parallel; writes into holes or past the end
//!   take it exclusively, so the server's 8 workers writing one object
//!   would go one at a time. `disk_engine`, load 17, two runs: write+sync
//!   570 MiB/s median before (no preallocation, no buffer reuse), 914
//!   after (fio 1376 and 1362 in the same runs).
//! * **Syncs** cost one `fdatasync` per data object written (8 at once)
//!   and one of the journal: 1-4% of write+sync in `disk_engine` (the
//!   format-1 engine's per-chunk fsync and rename took 8-15% with 8 at
//!   once, 73-84% one at a time).
//! * **Reads** of synced data spanning at least 256 KiB use `O_DIRECT` (a
//!   second descriptor of the object opened with the flag); the map is in
//!   memory, so a read is one `pread` and the checks of the blocks it
//!   touches, without opening or parsing anything per stripe. Objects'
//!   descriptors are cached (up to [`OPEN_OBJECTS`]), and so is each
//!   worker thread's aligned buffer (a fresh one costs a page fault per
//!   4 KiB as the disk fills it).
//! * **Several I/Os in flight** come from the server's pool of worker
//!   threads ([`crate::server`]), each running blocking `pread`/`pwrite`
//!   (fio: 8 psync jobs within ~10% of io_uring/libaio QD16 on this
//!   machine kind).
//! * **Checksums**: crc32c with SSE4.2 (the `crc32c` crate).
//!
//! A file system that refuses `O_DIRECT` (`EINVAL`) gets buffered I/O
//! from then on, for the whole store.
//!
//! ## Integrity
//! A read checks the checksum of every block it touches, and only those.
//! A mismatch is [`Error::ChunkCorrupt`] naming the inode, stripe, the file
//! offset of the bad block and the server, and no byte of the read is
//! returned. [`ChunkStore::verify`] checks every block of every synced
//! stripe of a file. A partial write over a synced block first checks it
//! (a write never builds on corrupted bytes).
//!
//! ## Full disks
//! `ENOSPC` (or `EDQUOT`) from a write, a sync's fdatasync or the journal
//! is [`Error::NoSpace`]; the map, and so every synced byte, is unchanged.
//! The bytes of the failed write itself are undefined until rewritten, as
//! with POSIX `write`.
//!
//! ## Older targets
//! Format 1 targets (one file per stripe with its own header) are refused
//! by [`crate::target::Target::open`] with [`Error::OldFormat`]: copy the
//! data out with the dosfs that wrote it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::target::{fsync_dir, Target};

/// Bytes covered by one checksum.
pub const BLOCK: u32 = 64 << 10;
/// Data objects whose descriptors a store keeps open.
pub const OPEN_OBJECTS: usize = 256;
const LOCKS: usize = 64;
/// Alignment of direct I/O (offsets, lengths and buffers).
const DIRECT_ALIGN: u32 = 4096;
/// The journal is folded into a snapshot when it grows past this.
const SNAPSHOT_AT: u64 = if cfg!(test) { 4096 } else { 64 << 20 };

const REC_COMMIT: u8 = 1;
const REC_CUT: u8 = 2;
const REC_DROP: u8 = 3;

/// What [`ChunkStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Synced stripes checked.
    pub chunks: u64,
    /// Their data bytes.
    pub bytes: u64,
    /// Stripes written but not synced (not checked: they have no checksum yet).
    pub pending: u64,
    /// Bad stripes: stripe and reason.
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

/// Disjoint, non-adjacent byte ranges `start..end` (a set of offsets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(BTreeMap<u32, u32>);

impl Ranges {
    /// Adds `start..end`.
    pub fn insert(&mut self, start: u32, end: u32) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // Merge every range touching s..e.
        let touching: Vec<(u32, u32)> = self
            .0
            .range(..=e)
            .rev()
            .take_while(|&(_, &re)| re >= s)
            .map(|(&rs, &re)| (rs, re))
            .collect();
        for (rs, re) in touching {
            self.0.remove(&rs);
            s = s.min(rs);
            e = e.max(re);
        }
        self.0.insert(s, e);
    }

    /// Drops everything at or past `end`.
    pub fn clip(&mut self, end: u32) {
        let cut: Vec<(u32, u32)> = self
            .0
            .range(..)
            .filter(|&(_, &e)| e > end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, _) in cut {
            self.0.remove(&s);
            if s < end {
                self.0.insert(s, end);
            }
        }
    }

    /// The parts of `start..end` in the set, in order.
    pub fn inside(&self, start: u32, end: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let first = self
            .0
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        for (&s, &e) in self.0.range(first..end) {
            let (a, b) = (s.max(start), e.min(end));
            if a < b {
                out.push((a, b));
            }
        }
        out
    }

    /// The parts of `start..end` not in the set, in order.
    pub fn gaps(&self, start: u32, end: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut at = start;
        for (a, b) in self.inside(start, end) {
            if a > at {
                out.push((at, a));
            }
            at = b;
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// The end of the last range (0 if empty).
    pub fn end(&self) -> u32 {
        self.0.values().next_back().copied().unwrap_or(0)
    }
}

/// A byte buffer whose data starts at a [`DIRECT_ALIGN`] boundary (an
/// aligned window of a larger vector: safe code, one spare page).
#[derive(Debug)]
struct AlignedBuf {
    v: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let align = DIRECT_ALIGN as usize;
        let v = vec![0u8; len + align];
        let start = v.as_ptr().align_offset(align).min(align);
        AlignedBuf { v, start, len }
    }

    /// An empty buffer for `cap` bytes, filled by [`AlignedBuf::extend`].
    fn with_capacity(cap: usize) -> AlignedBuf {
        let align = DIRECT_ALIGN as usize;
        let mut v: Vec<u8> = Vec::with_capacity(cap + align);
        let start = v.as_ptr().align_offset(align).min(align);
        v.resize(start, 0);
        AlignedBuf { v, start, len: 0 }
    }

    /// Appends `d` (within the capacity, so the data stays aligned).
    fn extend(&mut self, d: &[u8]) {
        self.v.extend_from_slice(d);
        self.len += d.len();
    }

    /// A plain buffer with the same interface (for buffered reads).
    fn unaligned(len: usize) -> AlignedBuf {
        AlignedBuf {
            v: vec![0u8; len],
            start: 0,
            len,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    fn as_ref(&self) -> &[u8] {
        &self.v[self.start..self.start + self.len]
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.start..self.start + self.len]
    }
}

/// A synced stripe, as the map holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    slot: u8,
    stripe_size: u32,
    len: u32,
    crcs: Vec<u32>,
}

/// What the server remembers of a stripe written since its last sync.
#[derive(Debug, Clone, Default)]
struct Pending {
    /// The slot written (the one the map does not point at).
    slot: u8,
    /// Ranges written there.
    written: Ranges,
    /// Bytes `0..base` not written here come from the synced stripe.
    base: u32,
    /// Synced blocks checked since the stripe became pending.
    checked: BTreeSet<u32>,
    /// The file's stripe size.
    stripe_size: u32,
    /// Checksums of blocks wholly written by one write since (so a sync
    /// need not read them back).
    known: BTreeMap<u32, u32>,
}

impl Pending {
    fn len(&self) -> u32 {
        self.base.max(self.written.end())
    }
}

/// The open descriptors of one data object.
#[derive(Debug)]
struct Object {
    path: PathBuf,
    file: File,
    /// The same object opened with `O_DIRECT` (`None`: refused).
    direct: OnceLock<Option<File>>,
}

/// How a [`ChunkStore`] does its I/O. The defaults are what measurements
/// on this machine kind chose (module docs, "The disk engine"); the others
/// exist so that `fs/tests/perf.rs` can compare them in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskOptions {
    /// Writes of at least this many bytes whose offset and length are
    /// 4 KiB multiples go to disk with `O_DIRECT` (`u32::MAX`: never).
    pub direct_write_min: u32,
    /// Reads of synced data spanning at least this many bytes of blocks
    /// bypass the page cache with `O_DIRECT` (`u32::MAX`: never).
    pub direct_read_min: u32,
    /// Data objects a sync flushes at once, each `fdatasync` on its own
    /// thread (1: one after another).
    pub seal_threads: usize,
}

impl Default for DiskOptions {
    fn default() -> DiskOptions {
        DiskOptions {
            direct_write_min: 256 << 10,
            direct_read_min: 256 << 10,
            seal_threads: 8,
        }
    }
}

impl DiskOptions {
    /// Everything through the page cache, one flush at a time: the engine
    /// as a plain buffered store (for comparisons).
    pub fn buffered() -> DiskOptions {
        DiskOptions {
            direct_write_min: u32::MAX,
            direct_read_min: u32::MAX,
            seal_threads: 1,
        }
    }
}

type Map<T> = HashMap<u64, BTreeMap<u64, T>>;

/// The data of one server.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    server: u32,
    locks: Vec<Mutex<()>>,
    /// Reads, writes and truncates share it; a sync or a removal holds it
    /// alone.
    gate: RwLock<()>,
    map: Mutex<Map<Entry>>,
    pending: Mutex<Map<Pending>>,
    journal: Mutex<Journal>,
    objects: Mutex<HashMap<(u64, u8), Arc<Object>>>,
    /// Inodes whose directory or objects were created since the last sync
    /// (their directories are fsynced before the commit).
    created: Mutex<HashSet<u64>>,
    options: DiskOptions,
    /// False once the target's file system refused `O_DIRECT` (`EINVAL`):
    /// from then on everything goes through the page cache.
    direct_ok: AtomicBool,
    /// Tests: the next sync fails after its data fdatasync, before the
    /// journal commit (a crash at that point, as far as the disk goes).
    #[cfg(test)]
    fail_before_commit: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_full_at(f: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether an I/O error says the file system refuses direct I/O.
fn refuses_direct(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Little-endian reader of a journal payload.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (a, b) = self.0.split_first_chunk::<N>()?;
        self.0 = b;
        Some(*a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|a| a[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

fn encode_entry(out: &mut Vec<u8>, ino: u64, stripe: u64, e: &Entry) {
    out.extend_from_slice(&ino.to_le_bytes());
    out.extend_from_slice(&stripe.to_le_bytes());
    out.push(e.slot);
    out.extend_from_slice(&e.stripe_size.to_le_bytes());
    out.extend_from_slice(&e.len.to_le_bytes());
    for c in &e.crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
}

/// Commit records for `entries`, each under the journal's record bound.
fn commit_records(entries: &[(u64, u64, Entry)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let mut body = Vec::new();
        let mut n = 0u32;
        while i < entries.len() && (n == 0 || body.len() < crate::journal::MAX_RECORD / 2) {
            let (ino, stripe, e) = &entries[i];
            encode_entry(&mut body, *ino, *stripe, e);
            n += 1;
            i += 1;
        }
        let mut rec = vec![REC_COMMIT];
        rec.extend_from_slice(&n.to_le_bytes());
        rec.extend_from_slice(&body);
        out.push(rec);
    }
    out
}

/// Applies one journal record (or the snapshot) to the map; `None` if it
/// does not parse.
fn apply_record(map: &mut Map<Entry>, rec: &[u8]) -> Option<()> {
    let mut c = Cursor(rec);
    match c.u8()? {
        REC_COMMIT => {
            let n = c.u32()?;
            for _ in 0..n {
                let (ino, stripe, slot) = (c.u64()?, c.u64()?, c.u8()?);
                let (stripe_size, len) = (c.u32()?, c.u32()?);
                if slot > 1
                    || stripe_size == 0
                    || stripe_size > crate::layout::MAX_STRIPE_SIZE
                    || len > stripe_size
                    || stripe
                        .checked_mul(u64::from(stripe_size))?
                        .checked_add(u64::from(stripe_size))?
                        > i64::MAX as u64
                {
                    return None;
                }
                let crcs = (0..len.div_ceil(BLOCK))
                    .map(|_| c.u32())
                    .collect::<Option<Vec<u32>>>()?;
                map.entry(ino).or_default().insert(
                    stripe,
                    Entry {
                        slot,
                        stripe_size,
                        len,
                        crcs,
                    },
                );
            }
        }
        REC_CUT => {
            let (ino, first) = (c.u64()?, c.u64()?);
            if let Some(m) = map.get_mut(&ino) {
                let _ = m.split_off(&first);
                if m.is_empty() {
                    map.remove(&ino);
                }
            }
        }
        REC_DROP => {
            map.remove(&c.u64()?);
        }
        _ => return None,
    }
    c.0.is_empty().then_some(())
}

impl ChunkStore {
    /// Opens the store of `target`: replays its journal into the map.
    pub fn open(target: &Target) -> Result<ChunkStore> {
        ChunkStore::open_with(target, DiskOptions::default())
    }

    /// [`ChunkStore::open`] with other [`DiskOptions`].
    pub fn open_with(target: &Target, options: DiskOptions) -> Result<ChunkStore> {
        let dir = target.chunk_dir();
        let (journal, replay) = Journal::open(&dir)?;
        let mut map = Map::new();
        let bad = |path: &str| Error::MetaCorrupt {
            path: dir.join(path),
            offset: 0,
            reason: "a chunk map record does not parse",
        };
        if let Some((_, snap)) = &replay.snapshot {
            apply_record(&mut map, snap).ok_or_else(|| bad("snapshot"))?;
        }
        for r in &replay.records {
            apply_record(&mut map, r).ok_or_else(|| bad("journal"))?;
        }
        Ok(ChunkStore {
            dir,
            server: target.info().index,
            locks: (0..LOCKS).map(|_| Mutex::new(())).collect(),
            gate: RwLock::new(()),
            map: Mutex::new(map),
            pending: Mutex::new(HashMap::new()),
            journal: Mutex::new(journal),
            objects: Mutex::new(HashMap::new()),
            created: Mutex::new(HashSet::new()),
            options: DiskOptions {
                seal_threads: options.seal_threads.max(1),
                ..options
            },
            direct_ok: AtomicBool::new(true),
            #[cfg(test)]
            fail_before_commit: AtomicBool::new(false),
        })
    }

    fn file_dir(&self, ino: u64) -> PathBuf {
        self.dir
            .join(format!("{:02x}", ino & 0xff))
            .join(format!("{ino:x}"))
    }

    /// The path of data object `slot` (0 or 1) of `ino`.
    pub fn object_path(&self, ino: u64, slot: u8) -> PathBuf {
        self.file_dir(ino).join(format!("d{slot}"))
    }

    /// Where the synced bytes of a stripe are: the data object's path, the
    /// byte offset of the stripe in it and the stripe's length (for tests
    /// and tools that inspect the disk).
    pub fn locate(&self, ino: u64, stripe: u64) -> Option<(PathBuf, u64, u32)> {
        let m = lock(&self.map);
        let e = m.get(&ino)?.get(&stripe)?;
        Some((
            self.object_path(ino, e.slot),
            stripe * u64::from(e.stripe_size),
            e.len,
        ))
    }

    fn lock_of(&self, ino: u64, stripe: u64) -> MutexGuard<'_, ()> {
        let h =
            ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stripe.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        lock(&self.locks[(h >> 58) as usize % LOCKS])
    }

    fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    fn pending_of(&self, ino: u64, stripe: u64) -> Option<Pending> {
        lock(&self.pending).get(&ino)?.get(&stripe).cloned()
    }

    fn set_pending(&self, ino: u64, stripe: u64, p: Pending) {
        lock(&self.pending)
            .entry(ino)
            .or_default()
            .insert(stripe, p);
    }

    fn entry_of(&self, ino: u64, stripe: u64) -> Option<Entry> {
        lock(&self.map).get(&ino)?.get(&stripe).cloned()
    }

    fn corrupt_at(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        at: u32,
        reason: impl Into<String>,
    ) -> Error {
        Error::ChunkCorrupt {
            ino,
            stripe,
            file_offset: stripe
                .saturating_mul(u64::from(stripe_size))
                .saturating_add(u64::from(at)),
            server: self.server,
            reason: reason.into(),
        }
    }

    fn io_err(&self, op: &'static str, path: &Path, e: std::io::Error) -> Error {
        self.mark_no_space(Error::io(op, path, e), op)
    }

    fn mark_no_space(&self, err: Error, op: &'static str) -> Error {
        if err.is_no_space() {
            Error::NoSpace {
                op,
                server: self.server,
            }
        } else {
            err
        }
    }

    /// The open data object `slot` of `ino`; `create`: make it if missing
    /// (else `None` when it does not exist).
    fn object(&self, ino: u64, slot: u8, create: bool) -> Result<Option<Arc<Object>>> {
        if let Some(o) = lock(&self.objects).get(&(ino, slot)) {
            return Ok(Some(o.clone()));
        }
        let path = self.object_path(ino, slot);
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).custom_flags(libc::O_NOFOLLOW);
        let file = match opts.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && create => {
                let dir = self.file_dir(ino);
                fs::create_dir_all(&dir).map_err(|e| self.io_err("create", &dir, e))?;
                lock(&self.created).insert(ino);
                opts.create(true)
                    .open(&path)
                    .map_err(|e| self.io_err("create", &path, e))?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err("open", &path, e)),
        };
        let o = Arc::new(Object {
            path,
            file,
            direct: OnceLock::new(),
        });
        let mut objs = lock(&self.objects);
        if objs.len() >= OPEN_OBJECTS {
            objs.clear();
        }
        Ok(Some(objs.entry((ino, slot)).or_insert(o).clone()))
    }

    /// The object's `O_DIRECT` descriptor, if direct I/O is allowed.
    fn direct_file<'a>(&self, o: &'a Object) -> Option<&'a File> {
        if !self.direct_ok.load(Ordering::Relaxed) {
            return None;
        }
        let f = o.direct.get_or_init(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECT)
                .open(&o.path)
                .ok()
        });
        if f.is_none() {
            self.direct_ok.store(false, Ordering::Relaxed);
        }
        f.as_ref()
    }

    /// Byte offset of stripe `stripe` in its objects.
    fn stripe_pos(stripe: u64, stripe_size: u32) -> Result<u64> {
        stripe
            .checked_mul(u64::from(stripe_size))
            .filter(|p| p.saturating_add(u64::from(stripe_size)) <= i64::MAX as u64)
            .ok_or_else(|| Error::InvalidLayout {
                reason: format!("stripe {stripe} of {stripe_size} bytes is past the largest file"),
            })
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
        let pos = Self::stripe_pos(stripe, stripe_size)?;
        let _s = self.shared();
        let _g = self.lock_of(ino, stripe);
        let end = offset + data.len() as u32;
        let whole = offset == 0 && end == stripe_size;
        let entry = self.entry_of(ino, stripe);
        if let Some(e) = &entry {
            if e.stripe_size != stripe_size {
                return Err(layout_mismatch(stripe_size, e.stripe_size));
            }
        }
        let mut fresh = false;
        let mut p = match self.pending_of(ino, stripe) {
            Some(p) => p,
            None => {
                fresh = true;
                Pending {
                    slot: entry.as_ref().map_or(0, |e| 1 - e.slot),
                    base: if whole {
                        0
                    } else {
                        entry.as_ref().map_or(0, |e| e.len)
                    },
                    stripe_size,
                    ..Pending::default()
                }
            }
        };
        if p.stripe_size != stripe_size {
            return Err(layout_mismatch(stripe_size, p.stripe_size));
        }
        // Synced blocks this write covers only partly must be sound: a
        // write never builds on corrupted bytes.
        if let (Some(e), false, false) = (&entry, whole, data.is_empty()) {
            if p.base > 0 {
                for b in [offset / BLOCK, (end - 1) / BLOCK] {
                    let (bs, be) = (b * BLOCK, (b * BLOCK).saturating_add(BLOCK).min(p.base));
                    let partial = bs < p.base && !(offset <= bs && end >= be);
                    if partial && !p.checked.contains(&b) {
                        self.read_entry(ino, stripe, e, b * BLOCK, BLOCK)?;
                        p.checked.insert(b);
                    }
                }
            }
        }
        if !data.is_empty() {
            let o = self
                .object(ino, p.slot, true)?
                .ok_or_else(|| Error::InvalidLayout {
                    reason: "data object vanished".into(),
                })?;
            let at = pos + u64::from(offset);
            // Only for a stripe written by large direct writes: a small
            // write allocates its own bytes.
            if fresh
                && self.direct_write(at, data.len())
                && self.direct_write(pos, stripe_size as usize)
            {
                self.preallocate(&o, pos, stripe_size)?;
            }
            let crcs = self.write_object(&o, at, offset, stripe_size, data)?;
            if whole {
                p.base = 0;
            }
            p.written.insert(offset, end);
            for b in offset / BLOCK..=(end - 1) / BLOCK {
                match crcs.get(&b) {
                    Some(&c) => p.known.insert(b, c),
                    None => p.known.remove(&b),
                };
            }
        } else if whole {
            p.base = 0;
        }
        self.set_pending(ino, stripe, p);
        Ok(())
    }

    /// Whether a write of `len` bytes at byte `at` of an object goes direct.
    fn direct_write(&self, at: u64, len: usize) -> bool {
        len as u64 >= u64::from(self.options.direct_write_min)
            && at % u64::from(DIRECT_ALIGN) == 0
            && len % DIRECT_ALIGN as usize == 0
    }

    /// Allocates the stripe's `stripe_size` bytes at `pos` of object `o`
    /// before its first direct write since a sync (`fallocate`, extending
    /// the object's size): ext4 lets direct writes into allocated blocks
    /// below the file's size run in parallel (a shared inode lock), while
    /// writes into holes or past the end take it alone, one at a time
    /// (module docs, "The disk engine"). A file system without
    /// `fallocate` just skips it; `ENOSPC` is [`Error::NoSpace`] before any
    /// byte is written.
    fn preallocate(&self, o: &Object, pos: u64, stripe_size: u32) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on a descriptor this `Object` owns, no pointers.
        let r = unsafe {
            libc::fallocate(
                o.file.as_raw_fd(),
                0,
                pos as libc::off_t,
                libc::off_t::from(stripe_size),
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(()),
            _ => Err(self.io_err("fallocate", &o.path, e)),
        }
    }

    /// Writes `data` at byte `at` of object `o` (stripe offset `offset`):
    /// direct if large and aligned, else buffered. Returns the checksums of
    /// the stripe's blocks that `data` covers whole.
    fn write_object(
        &self,
        o: &Object,
        at: u64,
        offset: u32,
        stripe_size: u32,
        data: &[u8],
    ) -> Result<BTreeMap<u32, u32>> {
        let end = offset + data.len() as u32;
        let mut crcs = BTreeMap::new();
        // The whole blocks, as (block, range in data).
        let whole_blocks = (offset / BLOCK..=(end - 1) / BLOCK).filter_map(|b| {
            let (bs, be) = (
                b * BLOCK,
                (b * BLOCK).saturating_add(BLOCK).min(stripe_size),
            );
            (offset <= bs && be <= end).then(|| (b, (bs - offset) as usize..(be - offset) as usize))
        });
        if self.direct_write(at, data.len()) {
            if let Some(f) = self.direct_file(o) {
                // Already aligned (a slot's bytes staged by the server,
                // [`with_staging`]): checksummed and written from where
                // they are.
                if data.as_ptr() as usize % DIRECT_ALIGN as usize == 0 {
                    for (b, r) in whole_blocks.clone() {
                        crcs.insert(b, crc32c::crc32c(&data[r]));
                    }
                    match f.write_all_at(data, at) {
                        Ok(()) => return Ok(crcs),
                        Err(e) if refuses_direct(&e) => {
                            self.direct_ok.store(false, Ordering::Relaxed);
                            crcs.clear();
                        }
                        Err(e) => return Err(self.io_err("write", &o.path, e)),
                    }
                    return self.write_buffered(o, at, data, whole_blocks);
                }
                // One pass: copy each block into the aligned buffer and
                // checksum it while it is in the cache.
                let mut buf = take_write_buf(data.len());
                let mut done = 0;
                for (b, r) in whole_blocks.clone() {
                    if r.start > done {
                        buf.extend(&data[done..r.start]);
                    }
                    buf.extend(&data[r.clone()]);
                    crcs.insert(b, crc32c::crc32c(&data[r.clone()]));
                    done = r.end;
                }
                buf.extend(&data[done..]);
                let res = f.write_all_at(buf.as_ref(), at);
                give_write_buf(buf);
                match res {
                    Ok(()) => return Ok(crcs),
                    Err(e) if refuses_direct(&e) => {
                        self.direct_ok.store(false, Ordering::Relaxed);
                        crcs.clear();
                    }
                    Err(e) => return Err(self.io_err("write", &o.path, e)),
                }
            }
        }
        self.write_buffered(o, at, data, whole_blocks)
    }

    /// The buffered write of [`ChunkStore::write_object`] and the
    /// checksums of `whole_blocks`.
    fn write_buffered(
        &self,
        o: &Object,
        at: u64,
        data: &[u8],
        whole_blocks: impl Iterator<Item = (u32, std::ops::Range<usize>)>,
    ) -> Result<BTreeMap<u32, u32>> {
        o.file
            .write_all_at(data, at)
            .map_err(|e| self.io_err("write", &o.path, e))?;
        Ok(whole_blocks
            .map(|(b, r)| (b, crc32c::crc32c(&data[r])))
            .collect())
    }

    /// Reads `len` bytes at `offset` of a stripe; bytes never written
    /// (holes, past the stripe's end) read as zeros.
    pub fn read(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>> {
        check_range(stripe_size, offset, len as usize)?;
        let pos = Self::stripe_pos(stripe, stripe_size)?;
        let _s = self.shared();
        let _g = self.lock_of(ino, stripe);
        let end = offset + len;
        let entry = self.entry_of(ino, stripe);
        if let Some(e) = &entry {
            if e.stripe_size != stripe_size {
                return Err(layout_mismatch(stripe_size, e.stripe_size));
            }
        }
        let pending = self.pending_of(ino, stripe);
        let Some(p) = pending else {
            let mut d = match &entry {
                Some(e) => self.read_entry(ino, stripe, e, offset, len)?,
                None => Vec::new(),
            };
            d.resize(len as usize, 0);
            return Ok(d);
        };
        if p.stripe_size != stripe_size {
            return Err(layout_mismatch(stripe_size, p.stripe_size));
        }
        let mut out = vec![0u8; len as usize];
        // From the synced stripe: the kept base not rewritten.
        let from_synced = p.written.gaps(offset, end.min(p.base));
        if let (Some(e), false) = (&entry, from_synced.is_empty()) {
            let (a, b) = (from_synced[0].0, from_synced[from_synced.len() - 1].1);
            let d = self.read_entry(ino, stripe, e, a, b - a)?;
            for (x, y) in from_synced {
                let (x, y) = ((x - a) as usize, ((y - a) as usize).min(d.len()));
                if x < y {
                    let o = (a - offset) as usize;
                    out[o + x..o + y].copy_from_slice(&d[x..y]);
                }
            }
        }
        let parts = p.written.inside(offset, end);
        if !parts.is_empty() {
            if let Some(o) = self.object(ino, p.slot, false)? {
                for (x, y) in parts {
                    let i = (x - offset) as usize;
                    read_full_at(
                        &o.file,
                        &mut out[i..i + (y - x) as usize],
                        pos + u64::from(x),
                    )
                    .map_err(|e| self.io_err("read", &o.path, e))?;
                }
            }
        }
        Ok(out)
    }

    /// [`ChunkStore::read`] into `out` (at least `len` bytes; all of it may
    /// be used as scratch, the first `len` bytes are the data). A synced
    /// stripe read in whole checksum blocks into an aligned `out` is one
    /// `O_DIRECT` read straight into it, the blocks checked there: no copy
    /// (a server's reply slot, [`crate::shm`]). Anything else is
    /// [`ChunkStore::read`] and one copy.
    #[allow(clippy::too_many_arguments)]
    pub fn read_into(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        len: u32,
        out: &mut [u8],
    ) -> Result<()> {
        check_range(stripe_size, offset, len as usize)?;
        if out.len() < len as usize {
            return Err(short_read_buffer());
        }
        {
            let _s = self.shared();
            let _g = self.lock_of(ino, stripe);
            let entry = self.entry_of(ino, stripe);
            if let (Some(e), None) = (&entry, self.pending_of(ino, stripe)) {
                if e.stripe_size != stripe_size {
                    return Err(layout_mismatch(stripe_size, e.stripe_size));
                }
                if self.read_entry_direct(ino, stripe, e, offset, len, out)? {
                    return Ok(());
                }
            }
        }
        let d = self.read(ino, stripe, stripe_size, offset, len)?;
        out[..d.len()].copy_from_slice(&d);
        Ok(())
    }

    /// The fast case of [`ChunkStore::read_into`]: `offset..offset + len`
    /// is whole checksum blocks (or ends at the stripe's end) of synced
    /// stripe `e`, large enough for `O_DIRECT`, and `out` is aligned with
    /// room for the read rounded up to [`DIRECT_ALIGN`]. `false` when it is
    /// not that case (nothing read).
    fn read_entry_direct(
        &self,
        ino: u64,
        stripe: u64,
        e: &Entry,
        offset: u32,
        len: u32,
        out: &mut [u8],
    ) -> Result<bool> {
        let end = offset.saturating_add(len);
        let want = len as usize;
        let dma = want.next_multiple_of(DIRECT_ALIGN as usize);
        let pos = stripe * u64::from(e.stripe_size) + u64::from(offset);
        if len < self.options.direct_read_min
            || offset % BLOCK != 0
            || end > e.len
            || (end % BLOCK != 0 && end != e.len)
            || pos % u64::from(DIRECT_ALIGN) != 0
            || out.len() < dma
            || out.as_ptr() as usize % DIRECT_ALIGN as usize != 0
        {
            return Ok(false);
        }
        let Some(o) = self.object(ino, e.slot, false)? else {
            return Ok(false);
        };
        let Some(f) = self.direct_file(&o) else {
            return Ok(false);
        };
        let n = match read_direct(f, &mut out[..dma], pos) {
            Ok(n) => n,
            Err(err) if refuses_direct(&err) => {
                self.direct_ok.store(false, Ordering::Relaxed);
                return Ok(false);
            }
            Err(err) => return Err(self.io_err("read", &o.path, err)),
        };
        if n < want {
            return Err(self.corrupt_at(
                ino,
                stripe,
                e.stripe_size,
                offset,
                "the data object is shorter than the chunk map says",
            ));
        }
        self.verify_blocks(ino, stripe, e, offset, end, &out[..want])?;
        Ok(true)
    }

    /// Checks `data`, the bytes `start..end` of synced stripe `e`, against
    /// its block checksums: `start` is a block boundary, and `end` one too
    /// or the stripe's end (the last block may be short).
    fn verify_blocks(
        &self,
        ino: u64,
        stripe: u64,
        e: &Entry,
        start: u32,
        end: u32,
        data: &[u8],
    ) -> Result<()> {
        debug_assert!(start % BLOCK == 0 && data.len() == (end - start) as usize);
        for b in start / BLOCK..end.div_ceil(BLOCK) {
            let (x, y) = (
                (b * BLOCK - start) as usize,
                ((b * BLOCK).saturating_add(BLOCK).min(end) - start) as usize,
            );
            if e.crcs.get(b as usize) != Some(&crc32c::crc32c(&data[x..y])) {
                return Err(self.corrupt_at(
                    ino,
                    stripe,
                    e.stripe_size,
                    b * BLOCK,
                    format!(
                        "checksum mismatch in the block at stripe offset {}",
                        b * BLOCK
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The checked bytes `offset..offset + len` of synced stripe `e`, cut
    /// at its end; only the blocks they touch are read and checked.
    fn read_entry(
        &self,
        ino: u64,
        stripe: u64,
        e: &Entry,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(e.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let (b0, b1) = (offset / BLOCK, end.div_ceil(BLOCK));
        let (rs, re) = (b0 * BLOCK, (b1 * BLOCK).min(e.len));
        let want = (re - rs) as usize;
        let short = || {
            self.corrupt_at(
                ino,
                stripe,
                e.stripe_size,
                rs,
                "the data object is shorter than the chunk map says",
            )
        };
        let Some(o) = self.object(ino, e.slot, false)? else {
            return Err(short());
        };
        let pos = stripe * u64::from(e.stripe_size) + u64::from(rs);
        let mut buf = None;
        if want as u64 >= u64::from(self.options.direct_read_min)
            && pos % u64::from(DIRECT_ALIGN) == 0
        {
            if let Some(f) = self.direct_file(&o) {
                let mut b = take_read_buf(want.next_multiple_of(DIRECT_ALIGN as usize));
                match read_direct(f, b.as_mut(), pos) {
                    Ok(n) => {
                        b.truncate(n);
                        buf = Some(b);
                    }
                    Err(e) if refuses_direct(&e) => self.direct_ok.store(false, Ordering::Relaxed),
                    Err(err) => return Err(self.io_err("read", &o.path, err)),
                }
            }
        }
        let buf = match buf {
            Some(b) => b,
            None => {
                let mut d = AlignedBuf::unaligned(want);
                let n = read_full_at(&o.file, d.as_mut(), pos)
                    .map_err(|err| self.io_err("read", &o.path, err))?;
                d.truncate(n);
                d
            }
        };
        if buf.len() < want {
            return Err(short());
        }
        let d = &buf.as_ref()[..want];
        self.verify_blocks(ino, stripe, e, rs, re, d)?;
        let out = d[(offset - rs) as usize..(end - rs) as usize].to_vec();
        give_read_buf(buf);
        Ok(out)
    }

    /// Makes every pending stripe of `ino` (of every inode with `None`)
    /// durable: one group commit (module docs).
    pub fn sync(&self, ino: Option<u64>) -> Result<()> {
        let _x = self.exclusive();
        let work: Vec<(u64, u64, Pending)> = {
            let p = lock(&self.pending);
            let one = |i: u64, m: &BTreeMap<u64, Pending>| {
                m.iter()
                    .map(move |(&s, p)| (i, s, p.clone()))
                    .collect::<Vec<_>>()
            };
            match ino {
                Some(i) => p.get(&i).map(|m| one(i, m)).unwrap_or_default(),
                None => p.iter().flat_map(|(&i, m)| one(i, m)).collect(),
            }
        };
        // 1. Complete each new slot and compute its checksums.
        let mut entries = Vec::with_capacity(work.len());
        let mut objects: BTreeSet<(u64, u8)> = BTreeSet::new();
        for (ino, stripe, p) in &work {
            entries.push((*ino, *stripe, self.seal(*ino, *stripe, p)?));
            objects.insert((*ino, p.slot));
        }
        // 2. The data (several objects at once), and new directories.
        let objs: Vec<Arc<Object>> = objects
            .iter()
            .filter_map(|&(i, s)| self.object(i, s, false).transpose())
            .collect::<Result<_>>()?;
        self.flush_all(&objs)?;
        let created: Vec<u64> = {
            let mut c = lock(&self.created);
            let mine: Vec<u64> = c
                .iter()
                .copied()
                .filter(|i| objects.iter().any(|o| o.0 == *i))
                .collect();
            for i in &mine {
                c.remove(i);
            }
            mine
        };
        for i in created {
            let dir = self.file_dir(i);
            fsync_dir(&dir).and_then(|()| fsync_dir(dir.parent().unwrap_or(&self.dir)))?;
        }
        #[cfg(test)]
        if self.fail_before_commit.swap(false, Ordering::Relaxed) {
            return Err(Error::InvalidLayout {
                reason: "test: failed before the commit".into(),
            });
        }
        // 3. One commit.
        if !entries.is_empty() {
            let mut j = lock(&self.journal);
            for rec in commit_records(&entries) {
                j.append(&rec)
                    .map_err(|e| self.mark_no_space(e, "chunk journal append"))?;
            }
            j.sync()
                .map_err(|e| self.mark_no_space(e, "chunk journal sync"))?;
        }
        // 4. The map points at the new bytes; the old ones are let go.
        let mut superseded = Vec::new();
        {
            let mut m = lock(&self.map);
            let mut pm = lock(&self.pending);
            for (ino, stripe, e) in entries {
                if let Some(ps) = pm.get_mut(&ino) {
                    ps.remove(&stripe);
                    if ps.is_empty() {
                        pm.remove(&ino);
                    }
                }
                let (ss, slot) = (e.stripe_size, e.slot);
                if let Some(old) = m.entry(ino).or_default().insert(stripe, e) {
                    if old.slot != slot {
                        superseded.push((ino, 1 - slot, stripe * u64::from(ss), ss));
                    }
                }
            }
        }
        for (ino, slot, pos, len) in superseded {
            if let Ok(Some(o)) = self.object(ino, slot, false) {
                punch(&o.file, pos, u64::from(len));
            }
        }
        self.maybe_snapshot()
    }

    /// Completes the new slot of a pending stripe: copies the kept synced
    /// bytes it lacks, zero-fills what was never written up to its length,
    /// and returns its map entry.
    fn seal(&self, ino: u64, stripe: u64, p: &Pending) -> Result<Entry> {
        let ss = p.stripe_size;
        let pos = stripe * u64::from(ss);
        let len = p.len();
        let o = self
            .object(ino, p.slot, true)?
            .ok_or_else(|| Error::InvalidLayout {
                reason: "data object vanished".into(),
            })?;
        let gaps = p.written.gaps(0, p.base);
        if !gaps.is_empty() {
            if let Some(e) = self.entry_of(ino, stripe) {
                for (a, b) in gaps {
                    let d = self.read_entry(ino, stripe, &e, a, b - a)?;
                    o.file
                        .write_all_at(&d, pos + u64::from(a))
                        .map_err(|e| self.io_err("write", &o.path, e))?;
                }
            }
        }
        // Never-written holes below `len` must read as zeros, whatever an
        // older version left in this slot.
        let gaps: Vec<(u32, u32)> = {
            let mut all = p.written.clone();
            if p.base > 0 {
                all.insert(0, p.base);
            }
            all.gaps(0, len)
        };
        for (a, b) in gaps {
            o.file
                .write_all_at(&vec![0u8; (b - a) as usize], pos + u64::from(a))
                .map_err(|e| self.io_err("write", &o.path, e))?;
        }
        let mut crcs = Vec::with_capacity(len.div_ceil(BLOCK) as usize);
        let mut buf = vec![0u8; BLOCK as usize];
        for b in 0..len.div_ceil(BLOCK) {
            let n = ((b * BLOCK).saturating_add(BLOCK).min(len) - b * BLOCK) as usize;
            let full = ((b * BLOCK).saturating_add(BLOCK).min(ss) - b * BLOCK) as usize;
            if let (Some(&c), true) = (p.known.get(&b), n == full) {
                crcs.push(c);
                continue;
            }
            let got = read_full_at(&o.file, &mut buf[..n], pos + u64::from(b * BLOCK))
                .map_err(|e| self.io_err("read", &o.path, e))?;
            buf[got..n].fill(0);
            crcs.push(crc32c::crc32c(&buf[..n]));
        }
        Ok(Entry {
            slot: p.slot,
            stripe_size: ss,
            len,
            crcs,
        })
    }

    /// `fdatasync`s the objects, up to `seal_threads` at once.
    fn flush_all(&self, objs: &[Arc<Object>]) -> Result<()> {
        let next = AtomicUsize::new(0);
        let first_err = Mutex::new(None);
        let run = || loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(o) = objs.get(k) else { break };
            if let Err(e) = o.file.sync_data() {
                lock(&first_err).get_or_insert(self.io_err("fdatasync", &o.path, e));
            }
        };
        let threads = self.options.seal_threads.min(objs.len());
        if threads <= 1 {
            run();
        } else {
            std::thread::scope(|sc| {
                for _ in 1..threads {
                    sc.spawn(run);
                }
                run();
            });
        }
        match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Folds the journal into a snapshot once it is large.
    fn maybe_snapshot(&self) -> Result<()> {
        let mut j = lock(&self.journal);
        if j.len() < SNAPSHOT_AT {
            return Ok(());
        }
        let all: Vec<(u64, u64, Entry)> = {
            let m = lock(&self.map);
            m.iter()
                .flat_map(|(&i, s)| s.iter().map(move |(&st, e)| (i, st, e.clone())))
                .collect()
        };
        let mut body = Vec::new();
        for (i, s, e) in &all {
            encode_entry(&mut body, *i, *s, e);
        }
        let mut rec = vec![REC_COMMIT];
        rec.extend_from_slice(&(all.len() as u32).to_le_bytes());
        rec.extend_from_slice(&body);
        j.snapshot(&rec)
            .map_err(|e| self.mark_no_space(e, "chunk map snapshot"))
    }

    /// Appends `rec` to the journal and makes it durable.
    fn commit_now(&self, rec: &[u8]) -> Result<()> {
        let mut j = lock(&self.journal);
        j.append(rec)
            .and_then(|()| j.sync())
            .map_err(|e| self.mark_no_space(e, "chunk journal append"))
    }

    /// Removes every stripe of `ino` (after the file was deleted).
    pub fn remove(&self, ino: u64) -> Result<()> {
        let _x = self.exclusive();
        lock(&self.pending).remove(&ino);
        lock(&self.created).remove(&ino);
        {
            let mut objs = lock(&self.objects);
            objs.remove(&(ino, 0));
            objs.remove(&(ino, 1));
        }
        if lock(&self.map).contains_key(&ino) {
            let mut rec = vec![REC_DROP];
            rec.extend_from_slice(&ino.to_le_bytes());
            self.commit_now(&rec)?;
            lock(&self.map).remove(&ino);
        }
        let dir = self.file_dir(ino);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err("remove", &dir, e)),
        }
        fsync_dir(dir.parent().unwrap_or(&self.dir))
    }

    /// Cuts the file to `size` bytes: stripes past it are gone at once
    /// (committed), the stripe holding it is shortened (pending, durable at
    /// the next sync).
    pub fn truncate(&self, ino: u64, stripe_size: u32, size: u64) -> Result<()> {
        check_range(stripe_size, 0, 0)?;
        let ss = u64::from(stripe_size);
        let first_gone = size.div_ceil(ss);
        let _x = self.exclusive();
        let gone: Vec<(u64, Entry)> = lock(&self.map)
            .get(&ino)
            .map(|m| {
                m.range(first_gone..)
                    .map(|(&s, e)| (s, e.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if !gone.is_empty() {
            let mut rec = vec![REC_CUT];
            rec.extend_from_slice(&ino.to_le_bytes());
            rec.extend_from_slice(&first_gone.to_le_bytes());
            self.commit_now(&rec)?;
            let mut m = lock(&self.map);
            if let Some(s) = m.get_mut(&ino) {
                let _ = s.split_off(&first_gone);
                if s.is_empty() {
                    m.remove(&ino);
                }
            }
        }
        if let Some(ps) = lock(&self.pending).get_mut(&ino) {
            let _ = ps.split_off(&first_gone);
        }
        for (stripe, e) in gone {
            if let Ok(Some(o)) = self.object(ino, e.slot, false) {
                punch(
                    &o.file,
                    stripe * u64::from(e.stripe_size),
                    u64::from(e.stripe_size),
                );
            }
        }
        if size % ss != 0 {
            let stripe = size / ss;
            let keep = (size % ss) as u32;
            let entry = self.entry_of(ino, stripe);
            let p = match self.pending_of(ino, stripe) {
                Some(p) => Some(p),
                None => entry.as_ref().map(|e| Pending {
                    slot: 1 - e.slot,
                    base: e.len,
                    stripe_size: e.stripe_size,
                    ..Pending::default()
                }),
            };
            if let Some(mut p) = p {
                if p.stripe_size != stripe_size {
                    return Err(layout_mismatch(stripe_size, p.stripe_size));
                }
                p.base = p.base.min(keep);
                p.written.clip(keep);
                let _ = p.known.split_off(&(keep / BLOCK));
                self.set_pending(ino, stripe, p);
            }
        }
        Ok(())
    }

    /// Every inode with data here (synced, pending, or objects on disk).
    pub fn inodes(&self) -> Result<BTreeSet<u64>> {
        let mut out: BTreeSet<u64> = lock(&self.map).keys().copied().collect();
        out.extend(lock(&self.pending).keys().copied());
        for bucket in read_dir(&self.dir)? {
            let name = bucket.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.len() != 2 || !bucket.is_dir() {
                continue;
            }
            for file_dir in read_dir(&bucket)? {
                let name = file_dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Ok(i) = u64::from_str_radix(name, 16) {
                    out.insert(i);
                }
            }
        }
        Ok(out)
    }

    /// The stripes of `ino` stored here (synced or pending).
    pub fn stripes(&self, ino: u64) -> Result<BTreeSet<u64>> {
        let mut out: BTreeSet<u64> = lock(&self.map)
            .get(&ino)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        if let Some(p) = lock(&self.pending).get(&ino) {
            out.extend(p.keys().copied());
        }
        Ok(out)
    }

    /// Reads and checks every block of every synced stripe of `ino`.
    pub fn verify(&self, ino: u64, stripe_size: u32) -> Result<VerifyReport> {
        check_range(stripe_size, 0, 0)?;
        let _s = self.shared();
        let mut rep = VerifyReport {
            pending: lock(&self.pending).get(&ino).map_or(0, |p| p.len() as u64),
            ..VerifyReport::default()
        };
        let entries: Vec<(u64, Entry)> = lock(&self.map)
            .get(&ino)
            .map(|m| m.iter().map(|(&s, e)| (s, e.clone())).collect())
            .unwrap_or_default();
        for (stripe, e) in entries {
            rep.chunks += 1;
            let checked = if e.stripe_size != stripe_size {
                Err(layout_mismatch(stripe_size, e.stripe_size))
            } else {
                let mut at = 0;
                let mut r = Ok(());
                while at < e.len && r.is_ok() {
                    r = self.read_entry(ino, stripe, &e, at, BLOCK * 16).map(|_| ());
                    at = at.saturating_add(BLOCK * 16);
                }
                r
            };
            match checked {
                Ok(()) => rep.bytes += u64::from(e.len),
                Err(Error::ChunkCorrupt { reason, .. }) => rep.bad.push((stripe, reason)),
                Err(Error::InvalidLayout { reason }) => rep.bad.push((stripe, reason)),
                Err(err) => return Err(err),
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

thread_local! {
    /// The aligned buffer of this thread's last direct read, reused: a
    /// fresh one costs a page fault per 4 KiB when the disk fills it.
    static READ_BUF: std::cell::RefCell<Option<AlignedBuf>> = const { std::cell::RefCell::new(None) };
}

/// An aligned buffer of `len` bytes (contents undefined), this thread's
/// cached one if it is large enough.
fn take_read_buf(len: usize) -> AlignedBuf {
    match READ_BUF.with(|b| b.borrow_mut().take()) {
        Some(mut b)
            if b.v.len() - b.start >= len && b.v.len() - b.start <= 2 * len.max(1 << 20) =>
        {
            b.len = len;
            b
        }
        _ => AlignedBuf::new(len),
    }
}

/// Keeps `b` (an aligned one) for this thread's next [`take_read_buf`].
fn give_read_buf(b: AlignedBuf) {
    if (b.v.as_ptr() as usize + b.start) % DIRECT_ALIGN as usize == 0 {
        READ_BUF.with(|c| *c.borrow_mut() = Some(b));
    }
}

thread_local! {
    /// This thread's staging buffer ([`with_staging`]), reused.
    static STAGE_BUF: std::cell::RefCell<Option<AlignedBuf>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` on an aligned private buffer of `len` bytes (contents
/// undefined), this thread's cached one if it fits. A server copies a
/// slot's bytes into it and hands them to [`ChunkStore::write`], which then
/// writes them with `O_DIRECT` from there: one copy from the slot to the
/// disk, and the checksums are of the private bytes, which the client
/// cannot change under them.
pub fn with_staging<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut b = match STAGE_BUF.with(|b| b.borrow_mut().take()) {
        Some(b) if b.v.len() - b.start >= len && b.v.len() - b.start <= 2 * len.max(1 << 20) => b,
        _ => AlignedBuf::new(len),
    };
    b.len = len;
    let r = f(b.as_mut());
    STAGE_BUF.with(|c| *c.borrow_mut() = Some(b));
    r
}

thread_local! {
    /// The aligned buffer of this thread's last direct write, reused.
    static WRITE_BUF: std::cell::RefCell<Option<AlignedBuf>> = const { std::cell::RefCell::new(None) };
}

/// An empty aligned buffer for `cap` bytes ([`AlignedBuf::with_capacity`]),
/// this thread's cached one if it fits.
fn take_write_buf(cap: usize) -> AlignedBuf {
    match WRITE_BUF.with(|b| b.borrow_mut().take()) {
        Some(mut b)
            if b.v.capacity() >= b.start + cap
                && b.v.capacity() <= 2 * (cap.max(1 << 20) + DIRECT_ALIGN as usize) =>
        {
            b.v.truncate(b.start);
            b.len = 0;
            b
        }
        _ => AlignedBuf::with_capacity(cap),
    }
}

/// Keeps `b` for this thread's next [`take_write_buf`].
fn give_write_buf(b: AlignedBuf) {
    WRITE_BUF.with(|c| *c.borrow_mut() = Some(b));
}

/// Gives back the space of `len` bytes at `pos` of a data object (best
/// effort: a file system without hole punching keeps the bytes, which the
/// map no longer references).
fn punch(f: &File, pos: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor this `File` owns, no pointers.
    unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            pos as libc::off_t,
            len as libc::off_t,
        )
    };
}

/// Reads into `buf` (aligned, a 4 KiB multiple) at `pos` through an
/// `O_DIRECT` descriptor: the bytes read (short at the end of the file).
fn read_direct(f: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                // A short read that is not a 4 KiB multiple is the end.
                if got % DIRECT_ALIGN as usize != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A read into a buffer shorter than the read (every read-into path says
/// this, the chunk store's and a handler's default).
pub(crate) fn short_read_buffer() -> Error {
    Error::protocol("a read buffer shorter than the read")
}

fn layout_mismatch(asked: u32, has: u32) -> Error {
    Error::InvalidLayout {
        reason: format!("a stripe size of {asked} bytes for a chunk written with {has}"),
    }
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
