//! Chunk storage on one server: the stripes of files, checksummed per block.
//!
//! Stripe `s` of file (inode) `i` that this server holds is one file,
//! `chunks/<i mod 256, 2 hex>/<i hex>/<s hex>`: a header region of
//! [`data_offset`]`(stripe size)` bytes (a 4 KiB multiple, so data is
//! aligned for direct I/O), then the stripe's bytes from offset 0 to the
//! highest byte written (shorter than a stripe at the end of a file;
//! unwritten parts read as zeros). Format 2:
//!
//! ```text
//! 0..4   "dosC"           4..6   version = 2     6..8  flags (1: unsealed)
//! 8..16  inode            16..24 stripe
//! 24..28 data length      28..32 block size (BLOCK = 64 KiB)
//! 32..36 data offset      36..40 stripe size     40..60 zero
//! 60..64 crc32c of the whole header region with these 4 bytes zero
//! 64..   crc32c of each block of data (the last one may be short),
//!        then zeros up to the data offset
//! ```
//!
//! Format 1 chunks (a 32-byte header, one crc32c over the whole chunk) are
//! still read, checked whole; their next sync rewrites them as format 2. A
//! chunk of a newer format is refused as corrupt (naming the version).
//!
//! ## Writes and syncs: synced data is never replaced by a torn chunk
//! A write never touches a synced chunk. The first write to a chunk after a
//! sync creates a *pending* chunk, `<s>.new`, a sparse file with the same
//! layout, and writes only its own bytes there; the server remembers which
//! ranges of the pending chunk were written (and how much of the synced
//! chunk a truncate kept). So a small write costs its own bytes, plus, on
//! the first touch of a synced block it covers only partly, reading that
//! block to check its checksum (so a write never builds on corrupted
//! bytes), once per block per sync. Reads merge the two: written ranges
//! from the pending chunk, the rest from the synced one (a writer reads its
//! own writes).
//!
//! [`ChunkStore::sync`] *seals* each pending chunk: copies the synced bytes
//! it lacks (checked), computes the block checksums and the header, fsyncs
//! it, renames it over the synced chunk and fsyncs the directory. A crash
//! at any point leaves either the old synced chunk or the new sealed one;
//! pending chunks found at start are unsynced data and are deleted. So the
//! copy of a chunk that a partial rewrite needs happens once per chunk per
//! sync, at the sync, not at the first small write.
//!
//! ## The disk engine: direct I/O, parallel seals (measured)
//! What the server's workers run, chosen by measurement on this machine
//! kind (2 cores, one virtio disk, ext4; BENCHMARKS.md, "Parallel file
//! I/O", has the tables and commands). [`DiskOptions`] holds the choices
//! so that `fs/tests/perf.rs` (`disk_engine`) can time the alternatives
//! side by side:
//!
//! * **Writes** of at least 256 KiB whose offset and length are 4 KiB
//!   multiples (whole stripes: the writes of `cp`, of collective I/O and of
//!   1 MiB transfers) go to their pending chunk with `O_DIRECT` (data starts
//!   at a 4 KiB multiple, the buffer is an aligned copy), their block
//!   checksums computed from the request as it lands, so the seal only
//!   writes the header region and fsyncs. Smaller or unaligned writes go
//!   through the page cache. fio, 1 MiB writes with a final fsync, QD1:
//!   O_DIRECT 1.1-1.6 GiB/s against 0.27-1.0 GiB/s buffered.
//! * **Reads** of synced data spanning at least 256 KiB of blocks use
//!   `O_DIRECT` too (the descriptor's flag is set for the call): data that
//!   went to disk direct is not in the page cache anyway, and a cold read
//!   then skips the cache's copy and page allocation (fio cold 1 MiB reads:
//!   2.5-2.9 GiB/s direct, 2.1 buffered). Such a read starting in a chunk's
//!   first block (a whole-stripe read) fetches the header region and the
//!   blocks in one I/O instead of two. Small reads use the page cache,
//!   which serves re-reads. A short direct read at the chunk's end is its
//!   end; the blocks are checked as for any read. Asking the kernel to read
//!   the file's next chunk ahead (`posix_fadvise(WILLNEED)` at the end of a
//!   chunk, buffered reads) was measured slower for two sequential readers
//!   (321-549 against 584-681 MiB/s) and is not done.
//! * **Syncs** seal up to [`DiskOptions::seal_threads`] (8) chunks at once,
//!   each on its own thread: every chunk needs its own fsync before its
//!   rename (that is what keeps a torn chunk from replacing synced data),
//!   and fsyncs issued together share the file system's journal commits.
//!   Sealing 256 stripes one at a time spent more time in fsyncs than in
//!   writing them (144 against 612 MiB/s write+sync in `disk_engine`).
//!   One `syncfs` per sync would be cheaper still but flushes every other
//!   writer of the disk too, so it is not used.
//! * **Several I/Os in flight** come from the server's pool of worker
//!   threads ([`crate::server`]), each running blocking `pread`/`pwrite`:
//!   fio with 8 `psync` jobs wrote 1.75 GiB/s against 1.94 GiB/s for
//!   io_uring and 1.95 GiB/s for libaio at QD16 (reads: 3.3, 1.9 and 2.3
//!   GiB/s), so an io_uring engine would buy at most ~10% on writes, and
//!   nothing on reads, for unsafe ring code; it stays a possible later step.
//! * **Checksums** (crc32c, SSE4.2 through the `crc32c` crate's run-time
//!   detection) cost about one CPU-second per several GiB; see
//!   `disk_engine`'s last line.
//!
//! A file system that refuses `O_DIRECT` (`EINVAL` at open, at the flag
//! change, or at the I/O) gets buffered I/O from then on, for the whole
//! store.
//!
//! ## Integrity
//! A read checks the header region's checksum and the checksum of every
//! block it touches, and only those: a 4 KiB read of a 1 MiB stripe reads
//! and checks one 64 KiB block, not the stripe. A mismatch is
//! [`Error::ChunkCorrupt`] naming the inode, stripe, the file offset of the
//! bad block (of the chunk, for a bad header) and the server, and no byte
//! of the read is returned. [`ChunkStore::verify`] checks every block of
//! every synced chunk of a file.
//!
//! ## Full disks
//! `ENOSPC` (or `EDQUOT`) from a write or a seal is [`Error::NoSpace`];
//! synced chunks are untouched either way. The bytes of the failed write
//! itself are undefined until rewritten, as with POSIX `write`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::target::{fsync_dir, Target};

/// Size of a chunk's fixed header (the block checksums follow it).
pub const HEADER: usize = 64;
/// Bytes covered by one checksum.
pub const BLOCK: u32 = 64 << 10;
const MAGIC: &[u8; 4] = b"dosC";
const VERSION: u16 = 2;
const V1_HEADER: usize = 32;
const UNSEALED: u16 = 1;
const LOCKS: usize = 64;
/// Alignment of direct I/O (offsets, lengths and buffers).
const DIRECT_ALIGN: u32 = 4096;

/// Where data starts in a chunk of a file with `stripe_size`-byte stripes:
/// after the header and one checksum per block, rounded up to 4 KiB.
pub fn data_offset(stripe_size: u32) -> u64 {
    let blocks = u64::from(stripe_size.div_ceil(BLOCK));
    (HEADER as u64 + 4 * blocks).div_ceil(4096) * 4096
}

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

/// What the server remembers of a pending chunk.
#[derive(Debug, Clone, Default)]
struct Pending {
    /// Ranges written into the pending chunk.
    written: Ranges,
    /// Bytes `0..base` not written here come from the synced chunk.
    base: u32,
    /// Synced blocks checked since the pending chunk was made.
    checked: BTreeSet<u32>,
    /// The file's stripe size.
    stripe_size: u32,
    /// Checksums of blocks wholly written by one write since (so a seal
    /// need not read them back).
    known: BTreeMap<u32, u32>,
}

impl Pending {
    fn len(&self) -> u32 {
        self.base.max(self.written.end())
    }
}

/// A synced chunk, its header checked.
#[derive(Debug)]
struct Synced {
    file: File,
    len: u32,
    data_off: u64,
    crcs: Vec<u32>,
    /// A format-1 chunk: its whole data, checked.
    whole: Option<Vec<u8>>,
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
    /// Chunks a sync seals at once, each on its own thread, so that their
    /// fsyncs overlap (1: one after another).
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
    /// Everything through the page cache, one seal at a time: the engine as
    /// a plain buffered store (for comparisons).
    pub fn buffered() -> DiskOptions {
        DiskOptions {
            direct_write_min: u32::MAX,
            direct_read_min: u32::MAX,
            seal_threads: 1,
        }
    }
}

/// The chunks of one server.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    server: u32,
    locks: Vec<Mutex<()>>,
    pending: Mutex<HashMap<u64, BTreeMap<u64, Pending>>>,
    options: DiskOptions,
    /// False once the target's file system refused `O_DIRECT` (`EINVAL`):
    /// from then on everything goes through the page cache.
    direct_ok: AtomicBool,
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
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

    /// An aligned copy of `data` (nothing zeroed first but the padding).
    fn copy_of(data: &[u8]) -> AlignedBuf {
        let align = DIRECT_ALIGN as usize;
        let mut v: Vec<u8> = Vec::with_capacity(data.len() + align);
        let start = v.as_ptr().align_offset(align).min(align);
        v.resize(start, 0);
        v.extend_from_slice(data);
        AlignedBuf {
            v,
            start,
            len: data.len(),
        }
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

/// Reads into `buf` (aligned, a 4 KiB multiple) at `pos` with `O_DIRECT`
/// turned on for the call: the bytes read (short at the end of the file),
/// or `None` if the file system refuses direct I/O (`EINVAL`).
fn read_direct_at(f: &File, buf: &mut [u8], pos: u64) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a file descriptor this `File` owns, no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) } < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    // A short read that is not a 4 KiB multiple is the end of the file
    // (a read at the unaligned offset after it would be refused).
    let mut got = 0;
    let res = loop {
        if got == buf.len() {
            break Ok(Some(got));
        }
        match f.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break Ok(Some(got)),
            Ok(n) => {
                got += n;
                if got % DIRECT_ALIGN as usize != 0 {
                    break Ok(Some(got));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break Ok(None),
            Err(e) => break Err(e),
        }
    };
    // SAFETY: as above; the descriptor's flags as they were.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    res
}

impl ChunkStore {
    /// Opens the chunk store of `target`, deleting pending copies that a
    /// previous run left unsynced.
    pub fn open(target: &Target) -> Result<ChunkStore> {
        ChunkStore::open_with(target, DiskOptions::default())
    }

    /// [`ChunkStore::open`] with other [`DiskOptions`].
    pub fn open_with(target: &Target, options: DiskOptions) -> Result<ChunkStore> {
        let dir = target.chunk_dir();
        let store = ChunkStore {
            dir,
            server: target.info().index,
            locks: (0..LOCKS).map(|_| Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
            options: DiskOptions {
                seal_threads: options.seal_threads.max(1),
                ..options
            },
            direct_ok: AtomicBool::new(true),
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

    fn pending_map(&self) -> MutexGuard<'_, HashMap<u64, BTreeMap<u64, Pending>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending_of(&self, ino: u64, stripe: u64) -> Option<Pending> {
        self.pending_map().get(&ino)?.get(&stripe).cloned()
    }

    fn set_pending(&self, ino: u64, stripe: u64, p: Pending) {
        self.pending_map().entry(ino).or_default().insert(stripe, p);
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

    fn corrupt(&self, ino: u64, stripe: u64, stripe_size: u32, reason: impl Into<String>) -> Error {
        self.corrupt_at(ino, stripe, stripe_size, 0, reason)
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
        let end = offset + data.len() as u32;
        let whole = offset == 0 && end == stripe_size;
        let (_, new) = self.paths(ino, stripe);
        let (mut p, fresh) = match self.pending_of(ino, stripe) {
            Some(p) => (p, false),
            None => (self.start_pending(ino, stripe, stripe_size, whole)?, true),
        };
        if p.stripe_size != stripe_size {
            return Err(layout_mismatch(stripe_size, p.stripe_size));
        }
        let res = self.write_pending(&mut p, ino, stripe, offset, data);
        if res.is_err() && fresh {
            let _ = fs::remove_file(&new);
            return res;
        }
        res?;
        if whole {
            p.base = 0;
        }
        p.written.insert(offset, end);
        // Blocks this write covers whole get their checksum now; the ones
        // it covers in part lose theirs.
        if !data.is_empty() {
            for b in offset / BLOCK..=(end - 1) / BLOCK {
                let (bs, be) = (
                    b * BLOCK,
                    (b * BLOCK).saturating_add(BLOCK).min(stripe_size),
                );
                if offset <= bs && be <= end {
                    let d = &data[(bs - offset) as usize..(be - offset) as usize];
                    p.known.insert(b, crc32c::crc32c(d));
                } else {
                    p.known.remove(&b);
                }
            }
        }
        self.set_pending(ino, stripe, p);
        Ok(())
    }

    /// The I/O of a write into the pending chunk `p`.
    fn write_pending(
        &self,
        p: &mut Pending,
        ino: u64,
        stripe: u64,
        offset: u32,
        data: &[u8],
    ) -> Result<()> {
        let stripe_size = p.stripe_size;
        let end = offset + data.len() as u32;
        let whole = offset == 0 && end == stripe_size;
        let (synced, new) = self.paths(ino, stripe);
        // Synced blocks this write covers only partly must be sound: a
        // write never builds on corrupted bytes.
        if p.base > 0 && !whole && !data.is_empty() {
            let mut check = Vec::new();
            for b in [offset / BLOCK, end.saturating_sub(1) / BLOCK] {
                let (bs, be) = (b * BLOCK, (b * BLOCK).saturating_add(BLOCK).min(p.base));
                let partial = bs < p.base && !(offset <= bs && end >= be);
                if partial && !p.checked.contains(&b) && !check.contains(&b) {
                    check.push(b);
                }
            }
            if !check.is_empty() {
                if let Some(s) = self.open_synced(&synced, ino, stripe, stripe_size)? {
                    for &b in &check {
                        self.read_synced_range(&s, ino, stripe, stripe_size, b * BLOCK, BLOCK)?;
                    }
                }
                p.checked.extend(check);
            }
        }
        if self.direct_write(offset, data.len())
            && self.write_direct(&new, data_offset(stripe_size) + u64::from(offset), data)?
        {
            return Ok(());
        }
        if !data.is_empty() {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&new)
                .map_err(|e| self.io_err("open", &new, e))?;
            f.write_all_at(data, data_offset(stripe_size) + u64::from(offset))
                .map_err(|e| self.io_err("write", &new, e))?;
        }
        Ok(())
    }

    /// Whether a write of `len` bytes at `offset` of a stripe goes direct.
    fn direct_write(&self, offset: u32, len: usize) -> bool {
        len as u64 >= u64::from(self.options.direct_write_min)
            && offset % DIRECT_ALIGN == 0
            && len % DIRECT_ALIGN as usize == 0
            && self.direct_ok.load(Ordering::Relaxed)
    }

    /// Writes `data` at `pos` of the pending chunk with `O_DIRECT`; `false`
    /// if the target's file system refuses direct I/O (then the caller
    /// writes through the page cache, and so does every later I/O).
    fn write_direct(&self, new: &Path, pos: u64, data: &[u8]) -> Result<bool> {
        let f = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECT)
            .open(new)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct_ok.store(false, Ordering::Relaxed);
                return Ok(false);
            }
            Err(e) => return Err(self.io_err("open", new, e)),
        };
        let buf = AlignedBuf::copy_of(data);
        match f.write_all_at(buf.as_ref(), pos) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct_ok.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(self.io_err("write", new, e)),
        }
    }

    /// Makes the pending chunk of a stripe (an empty sparse file with an
    /// unsealed header); `replace`: its synced bytes will not be used.
    fn start_pending(
        &self,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        replace: bool,
    ) -> Result<Pending> {
        let (synced, new) = self.paths(ino, stripe);
        let base = if replace {
            0
        } else {
            match self.open_synced(&synced, ino, stripe, stripe_size)? {
                Some(s) => s.len,
                None => 0,
            }
        };
        let dir = self.file_dir(ino);
        fs::create_dir_all(&dir).map_err(|e| self.io_err("create", &dir, e))?;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&new)
            .map_err(|e| self.io_err("create", &new, e))?;
        if let Err(e) = f.write_all_at(&header(ino, stripe, 0, stripe_size, UNSEALED), 0) {
            let _ = fs::remove_file(&new);
            return Err(self.io_err("write", &new, e));
        }
        Ok(Pending {
            base,
            stripe_size,
            ..Pending::default()
        })
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
        let end = offset + len;
        let pending = self.pending_of(ino, stripe);
        if let Some(p) = &pending {
            if p.stripe_size != stripe_size {
                return Err(layout_mismatch(stripe_size, p.stripe_size));
            }
        }
        if pending.is_none() {
            // Synced data only: a large read from the start of the chunk
            // reads its header and blocks in one direct I/O.
            if let Some(mut d) =
                self.read_at_once(&synced, ino, stripe, stripe_size, offset, len)?
            {
                d.resize(len as usize, 0);
                return Ok(d);
            }
            // Otherwise the header, then the blocks the read touches.
            let mut d = match self.open_synced(&synced, ino, stripe, stripe_size)? {
                Some(s) => self.read_synced_range(&s, ino, stripe, stripe_size, offset, len)?,
                None => Vec::new(),
            };
            d.resize(len as usize, 0);
            return Ok(d);
        }
        let mut out = vec![0u8; len as usize];
        // From the synced chunk: the kept base not rewritten.
        let from_synced = match &pending {
            None => vec![(offset, end)],
            Some(p) => p.written.gaps(offset, end.min(p.base)),
        };
        if !from_synced.is_empty() {
            if let Some(s) = self.open_synced(&synced, ino, stripe, stripe_size)? {
                let (a, b) = (from_synced[0].0, from_synced[from_synced.len() - 1].1);
                let d = self.read_synced_range(&s, ino, stripe, stripe_size, a, b - a)?;
                for (x, y) in from_synced {
                    let (x, y) = ((x - a) as usize, ((y - a) as usize).min(d.len()));
                    if x < y {
                        let o = (a - offset) as usize;
                        out[o + x..o + y].copy_from_slice(&d[x..y]);
                    }
                }
            }
        }
        if let Some(p) = &pending {
            let parts = p.written.inside(offset, end);
            if !parts.is_empty() {
                let f = File::open(&new).map_err(|e| self.io_err("open", &new, e))?;
                let base = data_offset(stripe_size);
                for (x, y) in parts {
                    let o = (x - offset) as usize;
                    read_full_at(&f, &mut out[o..o + (y - x) as usize], base + u64::from(x))
                        .map_err(|e| self.io_err("read", &new, e))?;
                }
            }
        }
        Ok(out)
    }

    /// Opens a synced chunk and checks its header (and block checksums'
    /// table); `None` if it does not exist.
    fn open_synced(
        &self,
        path: &Path,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
    ) -> Result<Option<Synced>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err("open", path, e)),
        };
        // The header region of a format-2 chunk of this layout, in one read.
        let mut region = vec![0u8; data_offset(stripe_size) as usize];
        let n = read_full_at(&file, &mut region, 0).map_err(|e| self.io_err("read", path, e))?;
        self.parse_synced(file, path, region, n, ino, stripe, stripe_size)
            .map(Some)
    }

    /// A synced chunk from its open `file` and the first `n` bytes of its
    /// header region (`region`, [`data_offset`] bytes long), checked.
    #[allow(clippy::too_many_arguments)]
    fn parse_synced(
        &self,
        file: File,
        path: &Path,
        mut region: Vec<u8>,
        n: usize,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
    ) -> Result<Synced> {
        let bad = |r: &str| self.corrupt(ino, stripe, stripe_size, r);
        if n < V1_HEADER {
            return Err(bad("shorter than its header"));
        }
        if &region[0..4] != MAGIC {
            return Err(bad("bad magic"));
        }
        let field = |b: &[u8], r: std::ops::Range<usize>| {
            let mut a = [0u8; 8];
            a[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(a)
        };
        if field(&region, 8..16) != ino || field(&region, 16..24) != stripe {
            return Err(bad("header names another chunk"));
        }
        let version = u16::from_le_bytes([region[4], region[5]]);
        if version == 1 {
            return self.open_v1(file, path, ino, stripe, stripe_size);
        }
        if version != VERSION {
            return Err(bad(&format!(
                "chunk format {version}; this dosfs reads formats 1 and {VERSION}"
            )));
        }
        if n < region.len() {
            return Err(bad("shorter than its header"));
        }
        let len = field(&region, 24..28) as u32;
        let data_off = field(&region, 32..36);
        if field(&region, 28..32) != u64::from(BLOCK)
            || data_off != data_offset(stripe_size)
            || field(&region, 36..40) != u64::from(stripe_size)
            || len > stripe_size
        {
            return Err(bad("header does not match the file's layout"));
        }
        let want = field(&region, 60..64) as u32;
        region[60..64].fill(0);
        if crc32c::crc32c(&region) != want {
            return Err(bad("header checksum mismatch"));
        }
        let size = file
            .metadata()
            .map_err(|e| self.io_err("stat", path, e))?
            .len();
        if size != data_off + u64::from(len) {
            return Err(bad("length does not match the header"));
        }
        let crcs = (0..len.div_ceil(BLOCK) as usize)
            .map(|i| field(&region, HEADER + 4 * i..HEADER + 4 * i + 4) as u32)
            .collect();
        Ok(Synced {
            file,
            len,
            data_off,
            crcs,
            whole: None,
        })
    }

    /// A format-1 chunk: read whole and checked.
    fn open_v1(
        &self,
        file: File,
        path: &Path,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
    ) -> Result<Synced> {
        let bad = |r: &str| self.corrupt(ino, stripe, stripe_size, r);
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut b).map_err(|e| self.io_err("read", path, e))?;
        let field = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 8];
            a[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(a)
        };
        let len = field(24..28) as usize;
        if len != b.len() - V1_HEADER || len > stripe_size as usize {
            return Err(bad("length does not match the header"));
        }
        let crc = field(28..32) as u32;
        if crc32c::crc32c_append(crc32c::crc32c(&b[..28]), &b[V1_HEADER..]) != crc {
            return Err(bad("checksum mismatch"));
        }
        b.drain(..V1_HEADER);
        Ok(Synced {
            file,
            len: len as u32,
            data_off: V1_HEADER as u64,
            crcs: Vec::new(),
            whole: Some(b),
        })
    }

    /// The checked bytes `offset..offset + len` of a synced chunk, cut at
    /// its end; only the blocks they touch are read and checked.
    fn read_synced_range(
        &self,
        s: &Synced,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(s.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        if let Some(w) = &s.whole {
            return Ok(w[offset as usize..end as usize].to_vec());
        }
        let (b0, b1) = (offset / BLOCK, end.div_ceil(BLOCK));
        let (rs, re) = (b0 * BLOCK, (b1 * BLOCK).min(s.len));
        let want = (re - rs) as usize;
        let pos = s.data_off + u64::from(rs);
        let mut buf = match self.read_direct(s, pos, want)? {
            Some(b) => b,
            None => {
                let mut d = AlignedBuf::unaligned(want);
                let n = read_full_at(&s.file, d.as_mut(), pos)
                    .map_err(|e| self.io_err("read", Path::new("chunk"), e))?;
                d.truncate(n);
                d
            }
        };
        if buf.len() < want {
            return Err(self.corrupt(ino, stripe, stripe_size, "shorter than its header says"));
        }
        buf.truncate(want);
        let d = buf.as_ref();
        self.check_blocks(s, d, b0, b1, ino, stripe, stripe_size)?;
        Ok(d[(offset - rs) as usize..(end - rs) as usize].to_vec())
    }

    /// Checks blocks `b0..b1` of a synced chunk against its checksums; `d`
    /// holds them, from the start of block `b0`.
    #[allow(clippy::too_many_arguments)]
    fn check_blocks(
        &self,
        s: &Synced,
        d: &[u8],
        b0: u32,
        b1: u32,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
    ) -> Result<()> {
        let rs = b0 * BLOCK;
        for b in b0..b1 {
            let (x, y) = (
                (b * BLOCK - rs) as usize,
                ((b * BLOCK).saturating_add(BLOCK).min(s.len) - rs) as usize,
            );
            if crc32c::crc32c(&d[x..y]) != s.crcs[b as usize] {
                return Err(self.corrupt_at(
                    ino,
                    stripe,
                    stripe_size,
                    b * BLOCK,
                    format!(
                        "checksum mismatch in the block at chunk offset {}",
                        b * BLOCK
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A large read of a synced chunk that starts in its first block, as
    /// one direct I/O of the header region and the blocks: the checked
    /// bytes (cut at the chunk's end), or `None` where that does not apply
    /// (small read, direct I/O refused, a format-1 or short chunk: the
    /// caller reads the usual way, which also names any damage).
    fn read_at_once(
        &self,
        path: &Path,
        ino: u64,
        stripe: u64,
        stripe_size: u32,
        offset: u32,
        len: u32,
    ) -> Result<Option<Vec<u8>>> {
        if len < self.options.direct_read_min
            || offset >= BLOCK
            || !self.direct_ok.load(Ordering::Relaxed)
        {
            return Ok(None);
        }
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Some(Vec::new())),
            Err(e) => return Err(self.io_err("open", path, e)),
        };
        let data_off = data_offset(stripe_size) as usize;
        let end = offset + len;
        // Whole blocks up to the one holding the read's end.
        let blocks_end = (end.div_ceil(BLOCK) * BLOCK).min(stripe_size) as usize;
        let mut buf = AlignedBuf::new((data_off + blocks_end).next_multiple_of(4096));
        let n = match read_direct_at(&file, buf.as_mut(), 0) {
            Ok(Some(n)) => n,
            Ok(None) => {
                self.direct_ok.store(false, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(self.io_err("read", path, e)),
        };
        if n < data_off {
            return Ok(None);
        }
        let region = buf.as_ref()[..data_off].to_vec();
        let s = self.parse_synced(file, path, region, data_off, ino, stripe, stripe_size)?;
        if s.whole.is_some() {
            return Ok(None);
        }
        let end = end.min(s.len);
        if offset >= end {
            return Ok(Some(Vec::new()));
        }
        let b1 = end.div_ceil(BLOCK);
        let want = (b1 * BLOCK).min(s.len) as usize;
        let d = &buf.as_ref()[data_off..n];
        if d.len() < want {
            return Err(self.corrupt(ino, stripe, stripe_size, "shorter than its header says"));
        }
        self.check_blocks(&s, &d[..want], 0, b1, ino, stripe, stripe_size)?;
        Ok(Some(d[offset as usize..end as usize].to_vec()))
    }

    /// Reads `len` bytes at `pos` of a synced chunk with `O_DIRECT` if the
    /// options and the file system allow (`None`: read it buffered). The
    /// length read is rounded up to 4 KiB (the chunk may end before).
    fn read_direct(&self, s: &Synced, pos: u64, len: usize) -> Result<Option<AlignedBuf>> {
        if (len as u64) < u64::from(self.options.direct_read_min)
            || pos % u64::from(DIRECT_ALIGN) != 0
            || !self.direct_ok.load(Ordering::Relaxed)
        {
            return Ok(None);
        }
        let mut buf = AlignedBuf::new(len.next_multiple_of(DIRECT_ALIGN as usize));
        match read_direct_at(&s.file, buf.as_mut(), pos) {
            Ok(Some(n)) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Ok(None) => {
                self.direct_ok.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(self.io_err("read", Path::new("chunk"), e)),
        }
    }

    /// Seals, fsyncs and renames every pending chunk of `ino` (of every
    /// inode with `None`), then fsyncs their directories.
    pub fn sync(&self, ino: Option<u64>) -> Result<()> {
        let work: Vec<(u64, Vec<u64>)> = {
            let p = self.pending_map();
            match ino {
                Some(i) => p
                    .get(&i)
                    .map(|m| (i, m.keys().copied().collect()))
                    .into_iter()
                    .collect(),
                None => p
                    .iter()
                    .map(|(&i, m)| (i, m.keys().copied().collect()))
                    .collect(),
            }
        };
        // Seal every chunk, several at once (their fsyncs overlap: one
        // journal commit of the target's file system serves many), then
        // fsync each directory once.
        let jobs: Vec<(u64, u64)> = work
            .iter()
            .flat_map(|(i, ss)| ss.iter().map(move |&s| (*i, s)))
            .collect();
        let errors = Mutex::new(Vec::new());
        let next = AtomicUsize::new(0);
        let seal_all = || loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(ino, s)) = jobs.get(k) else { break };
            if let Err(e) = self.seal(ino, s) {
                errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((k, e));
            }
        };
        let threads = self.options.seal_threads.min(jobs.len());
        if threads <= 1 {
            seal_all();
        } else {
            std::thread::scope(|sc| {
                for _ in 1..threads {
                    sc.spawn(seal_all);
                }
                seal_all();
            });
        }
        let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        errors.sort_by_key(|(k, _)| *k);
        let mut first_err = errors.into_iter().next().map(|(_, e)| e);
        for (ino, _) in work {
            let dir = self.file_dir(ino);
            if let Err(e) =
                fsync_dir(&dir).and_then(|()| fsync_dir(dir.parent().unwrap_or(&self.dir)))
            {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Seals one pending chunk; on failure it stays pending.
    fn seal(&self, ino: u64, stripe: u64) -> Result<()> {
        let _g = self.lock_of(ino, stripe);
        let Some(p) = self.pending_of(ino, stripe) else {
            return Ok(()); // sealed by another sync meanwhile
        };
        let (synced, new) = self.paths(ino, stripe);
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&new)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.forget(ino, stripe);
                return Ok(());
            }
            Err(e) => return Err(self.io_err("open", &new, e)),
        };
        let stripe_size = p.stripe_size;
        let data_off = data_offset(stripe_size);
        let len = p.len();
        // The synced bytes it keeps and lacks.
        let gaps = p.written.gaps(0, p.base);
        if !gaps.is_empty() {
            if let Some(s) = self.open_synced(&synced, ino, stripe, stripe_size)? {
                for (a, b) in gaps {
                    let d = self.read_synced_range(&s, ino, stripe, stripe_size, a, b - a)?;
                    f.write_all_at(&d, data_off + u64::from(a))
                        .map_err(|e| self.io_err("write", &new, e))?;
                }
            }
        }
        f.set_len(data_off + u64::from(len))
            .map_err(|e| self.io_err("truncate", &new, e))?;
        let mut region = vec![0u8; data_off as usize];
        region[..HEADER].copy_from_slice(&header(ino, stripe, len, stripe_size, 0));
        let mut buf = vec![0u8; BLOCK as usize];
        for b in 0..len.div_ceil(BLOCK) {
            let n = ((b * BLOCK).saturating_add(BLOCK).min(len) - b * BLOCK) as usize;
            if let Some(&c) = p.known.get(&b) {
                if n == ((b * BLOCK).saturating_add(BLOCK).min(stripe_size) - b * BLOCK) as usize {
                    let i = HEADER + 4 * b as usize;
                    region[i..i + 4].copy_from_slice(&c.to_le_bytes());
                    continue;
                }
            }
            let got = read_full_at(&f, &mut buf[..n], data_off + u64::from(b * BLOCK))
                .map_err(|e| self.io_err("read", &new, e))?;
            buf[got..n].fill(0);
            let i = HEADER + 4 * b as usize;
            region[i..i + 4].copy_from_slice(&crc32c::crc32c(&buf[..n]).to_le_bytes());
        }
        let crc = crc32c::crc32c(&region);
        region[60..64].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&region, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| self.io_err("seal", &new, e))?;
        fs::rename(&new, &synced).map_err(|e| self.io_err("rename", &new, e))?;
        self.forget(ino, stripe);
        Ok(())
    }

    fn forget(&self, ino: u64, stripe: u64) {
        let mut m = self.pending_map();
        if let Some(s) = m.get_mut(&ino) {
            s.remove(&stripe);
            if s.is_empty() {
                m.remove(&ino);
            }
        }
    }

    /// Removes every chunk of `ino` (after the file was deleted).
    pub fn remove(&self, ino: u64) -> Result<()> {
        self.pending_map().remove(&ino);
        let dir = self.file_dir(ino);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err("remove", &dir, e)),
        }
        fsync_dir(dir.parent().unwrap_or(&self.dir))
    }

    /// Cuts the file to `size` bytes: chunks past it are removed, the chunk
    /// holding it is shortened (pending, durable at the next sync).
    pub fn truncate(&self, ino: u64, stripe_size: u32, size: u64) -> Result<()> {
        check_range(stripe_size, 0, 0)?;
        let ss = u64::from(stripe_size);
        for stripe in self.stripes(ino)? {
            let start = stripe.saturating_mul(ss);
            let (synced, new) = self.paths(ino, stripe);
            let _g = self.lock_of(ino, stripe);
            if start >= size {
                self.forget(ino, stripe);
                for p in [&new, &synced] {
                    match fs::remove_file(p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(self.io_err("remove", p, e)),
                    }
                }
            } else if size - start < ss {
                let keep = (size - start) as u32;
                let mut p = match self.pending_of(ino, stripe) {
                    Some(p) => p,
                    None => self.start_pending(ino, stripe, stripe_size, false)?,
                };
                p.base = p.base.min(keep);
                p.written.clip(keep);
                let _ = p.known.split_off(&(keep / BLOCK));
                self.set_pending(ino, stripe, p);
            }
        }
        Ok(())
    }

    /// Every inode with chunks here.
    pub fn inodes(&self) -> Result<BTreeSet<u64>> {
        let mut out = BTreeSet::new();
        for bucket in read_dir(&self.dir)? {
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

    /// Reads and checks every block of every synced chunk of `ino`.
    pub fn verify(&self, ino: u64, stripe_size: u32) -> Result<VerifyReport> {
        check_range(stripe_size, 0, 0)?;
        let mut rep = VerifyReport::default();
        for stripe in self.stripes(ino)? {
            let _g = self.lock_of(ino, stripe);
            let (synced, new) = self.paths(ino, stripe);
            if new.exists() {
                rep.pending += 1;
            }
            let checked = self
                .open_synced(&synced, ino, stripe, stripe_size)
                .and_then(|s| match s {
                    Some(s) => {
                        let mut at = 0;
                        while at < s.len {
                            self.read_synced_range(&s, ino, stripe, stripe_size, at, BLOCK * 16)?;
                            at = at.saturating_add(BLOCK * 16);
                        }
                        Ok(Some(s.len))
                    }
                    None => Ok(None),
                });
            match checked {
                Ok(Some(len)) => {
                    rep.chunks += 1;
                    rep.bytes += u64::from(len);
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

/// A format-2 header (its checksum field zero).
fn header(ino: u64, stripe: u64, len: u32, stripe_size: u32, flags: u16) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&flags.to_le_bytes());
    h[8..16].copy_from_slice(&ino.to_le_bytes());
    h[16..24].copy_from_slice(&stripe.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    h[28..32].copy_from_slice(&BLOCK.to_le_bytes());
    h[32..36].copy_from_slice(&(data_offset(stripe_size) as u32).to_le_bytes());
    h[36..40].copy_from_slice(&stripe_size.to_le_bytes());
    h
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
