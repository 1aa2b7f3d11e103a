//! The FUSE file system: kernel requests mapped onto [`Client`] calls.

use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use super::state::{Listings, Names, Push, WriteBuf};
use super::{errno, MountOptions};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::meta::{Attr, DirEntry, Kind, ROOT};
use crate::wire::{Reply, Request as Wire};

/// Largest write the kernel sends in one request, and the readahead asked
/// for at init.
pub const MAX_WRITE: u32 = 1 << 20;
/// Entries fetched from the metadata server per readdir page.
const READDIR_PAGE: u32 = 1024;
/// The write-behind buffer: one stripe row, within these bounds.
const WBUF_MIN: usize = 1 << 20;
const WBUF_MAX: usize = 16 << 20;

/// An open file: its attributes as of open (or the last refresh) and its
/// write-behind buffer, shared by every handle of the inode (so a read
/// through one handle sees what another wrote).
#[derive(Debug)]
struct OpenFile {
    attr: Attr,
    buf: WriteBuf,
    /// An error of a write sent after its `write` call returned, given to
    /// the next write, flush or fsync of the file.
    deferred: Option<Errno>,
    opens: u32,
    /// A full row being sent by a write-behind thread while the next one
    /// fills ([`DosFuse::send_behind`]); it hands back its buffer.
    sending: Option<Sending>,
}

/// A write-behind send in flight: its result and its buffer (reused).
type Sending = std::thread::JoinHandle<(Result<()>, Vec<u8>)>;

/// A directory being listed: one page of entries, fetched as the kernel
/// asks for offsets past it. Offsets: 0 is `.`, 1 is `..`, entry `i` of
/// the directory is `i + 2`.
#[derive(Debug)]
struct DirCursor {
    ino: u64,
    path: String,
    /// Offset of `page[0]`.
    base: u64,
    page: Vec<DirEntry>,
    more: bool,
}

/// With the writeback cache, what the kernel's inode of a file holds: the
/// kernel then keeps its own size of a cached file and ignores the size in
/// every reply ([`DosFuse::stale_in_kernel`]).
#[derive(Debug, Default, Clone, Copy)]
struct KernelInode {
    /// The generation given with the file's entries; raised to make the
    /// kernel drop an inode whose size is stale.
    gen: u64,
    /// The size the kernel's inode has: from the entry that made it, then
    /// this mount's writes and truncates.
    size: u64,
    /// The generation was raised and the kernel may still hold the old
    /// inode: every entry replied may make the new one.
    pending: bool,
}

/// The mounted file system.
#[derive(Debug)]
pub struct DosFuse {
    client: Arc<Client>,
    opts: MountOptions,
    names: RwLock<Names>,
    /// Listings answering lookups of missing names ([`Listings`]).
    listings: Mutex<Listings>,
    files: Mutex<HashMap<u64, Arc<Mutex<OpenFile>>>>,
    dirs: Mutex<HashMap<u64, DirCursor>>,
    /// Files' kernel inodes (writeback-cache mode only).
    kernel: Mutex<HashMap<u64, KernelInode>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn name_str(name: &OsStr) -> std::result::Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

fn unexpected(r: Reply) -> Error {
    Error::Protocol {
        reason: format!("unexpected reply {r:?}"),
    }
}

impl DosFuse {
    /// A file system over `client`.
    pub fn new(client: Client, opts: MountOptions) -> DosFuse {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let listings = Listings::new(if opts.negative_listings {
            opts.negative_timeout
        } else {
            Duration::ZERO
        });
        DosFuse {
            client: Arc::new(client),
            opts,
            names: RwLock::new(Names::new()),
            listings: Mutex::new(listings),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            kernel: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid,
            gid,
            started: SystemTime::now(),
        }
    }

    fn names(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        self.names.read().unwrap_or_else(|p| p.into_inner())
    }

    fn names_mut(&self) -> std::sync::RwLockWriteGuard<'_, Names> {
        self.names.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A printable name of `ino` for log lines.
    fn describe(&self, ino: u64) -> String {
        self.names()
            .path(ino)
            .map_or_else(|_| format!("inode {ino}"), |p| p.to_string())
    }

    /// Maps an error to an errno, logging what the program cannot see.
    fn fail(&self, op: &str, ino: u64, e: &Error) -> Errno {
        let n = errno(e);
        if n == libc::EIO || n == libc::ENOSPC {
            tracing::error!(target: "dosfs::mount", "{op} {}: {e}", self.describe(ino));
        } else {
            tracing::debug!(target: "dosfs::mount", "{op} {}: {e}", self.describe(ino));
        }
        Errno::from_i32(n)
    }

    fn attr_of(&self, a: &Attr, size: u64) -> FileAttr {
        let (kind, perm, nlink) = match a.kind {
            Kind::File => (FileType::RegularFile, 0o644, 1),
            Kind::Dir => (FileType::Directory, 0o755, 2),
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: a.layout.stripe_size.max(4096),
            flags: 0,
        }
    }

    /// Attributes for the kernel; a file's size counts its buffered writes.
    fn fattr(&self, a: &Attr) -> FileAttr {
        let mut size = a.size;
        if a.kind == Kind::File {
            let f = self.file(a.ino);
            if let Some(f) = f {
                size = size.max(lock(&f).buf.end());
            }
        }
        self.attr_of(a, size)
    }

    fn ttl(&self, a: &Attr) -> Duration {
        match a.kind {
            Kind::File => self.opts.attr_timeout,
            Kind::Dir => self.opts.entry_timeout,
        }
    }

    /// Answers a lookup "no such entry": a negative entry the kernel keeps
    /// for [`MountOptions::negative_timeout`] (plain ENOENT when zero).
    fn negative(&self, reply: ReplyEntry) {
        let ttl = self.opts.negative_timeout;
        if ttl.is_zero() {
            return reply.error(Errno::ENOENT);
        }
        // Node id 0: the kernel keeps the name as missing for `ttl`.
        let fa = FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        reply.entry(&ttl, &fa, Generation(0));
    }

    /// After a lookup in `dir` found nothing: fetches `dir`'s listing (one
    /// page; a larger directory gets none) unless one is valid or being
    /// fetched, so the next lookups of missing names in `dir` are answered
    /// without the metadata server ([`Listings`]).
    fn list_dir(&self, dir: u64) {
        let started = Instant::now();
        if !lock(&self.listings).start_fetch(dir, started) {
            return;
        }
        let path = self.names().path(dir).map(|p| p.to_string());
        let got = path.map_err(|_| ()).and_then(|path| {
            self.client
                .call(
                    0,
                    &Wire::Readdir {
                        path,
                        after: String::new(),
                        limit: crate::meta::MAX_READDIR,
                    },
                )
                .map_err(|_| ())
        });
        let mut l = lock(&self.listings);
        match got {
            Ok(Reply::Entries { entries, more }) => {
                let names = (!more).then(|| {
                    entries
                        .into_iter()
                        .map(|e| e.name)
                        .collect::<HashSet<String>>()
                });
                l.fetched(dir, names, false, started);
            }
            _ => l.fetched(dir, None, true, started),
        }
    }

    fn attr_req(&self, req: &Wire) -> Result<Attr> {
        match self.client.call(0, req)? {
            Reply::Attr(a) => Ok(a),
            r => Err(unexpected(r)),
        }
    }

    fn stat_ino(&self, ino: u64) -> Result<Attr> {
        self.attr_req(&Wire::StatIno { ino })
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> std::result::Result<String, Errno> {
        let name = name_str(name)?;
        match self.names().child(parent.0, name) {
            Ok(p) => Ok(p.to_string()),
            Err(Error::NotFound { .. }) => Err(Errno::ESTALE),
            Err(e) => Err(Errno::from_i32(errno(&e))),
        }
    }

    fn entry(&self, parent: u64, name: &OsStr, a: &Attr, reply: ReplyEntry) {
        let fa = self.fattr(a);
        let gen = self.entered(parent, name, a, fa.size);
        reply.entry(&self.opts.entry_timeout, &fa, Generation(gen));
    }

    /// Records that the kernel is handed `a` (of size `size`) as `name`
    /// in `parent`; gives the generation to reply with.
    fn entered(&self, parent: u64, name: &OsStr, a: &Attr, size: u64) -> u64 {
        let mut names = self.names_mut();
        let fresh = names.lookups(a.ino) == 0;
        names.entered(parent, &name.to_string_lossy(), a.ino);
        if !self.opts.writeback_cache || a.kind != Kind::File {
            return 0;
        }
        let mut k = lock(&self.kernel);
        let e = k.entry(a.ino).or_default();
        // A new kernel inode takes this size; an inode the kernel already
        // holds keeps its own.
        if fresh || e.pending {
            e.size = size;
        }
        e.gen
    }

    /// Writeback-cache mode: whether the kernel's inode of `a` (no handle
    /// of this mount has it open) has a size other than the servers'
    /// (another client wrote or truncated the file). Then its generation
    /// is raised and the open fails with ESTALE: the kernel looks the name
    /// up again (`LOOKUP_REVAL`), finds the new generation, drops the old
    /// inode and makes a new one with the servers' size, and retries the
    /// open. Once per change: a second mismatch (a race with another
    /// writer) opens with the kernel's size.
    fn stale_in_kernel(&self, a: &Attr) -> bool {
        if !self.opts.writeback_cache || self.file(a.ino).is_some() {
            return false;
        }
        let mut k = lock(&self.kernel);
        let Some(e) = k.get_mut(&a.ino) else {
            return false;
        };
        if e.size == a.size || e.pending {
            e.pending = false;
            return false;
        }
        e.gen += 1;
        e.pending = true;
        true
    }

    /// Writeback-cache mode: the kernel's inode of `ino` now has `size`
    /// (a truncate), or at least `grown` (a write).
    fn kernel_size(&self, ino: u64, size: Option<u64>, grown: u64) {
        if !self.opts.writeback_cache {
            return;
        }
        if let Some(e) = lock(&self.kernel).get_mut(&ino) {
            e.size = size.unwrap_or(e.size).max(grown);
        }
    }

    fn open_file(&self, a: Attr) -> Arc<Mutex<OpenFile>> {
        let mut files = lock(&self.files);
        let f = files.entry(a.ino).or_insert_with(|| {
            let row = u64::from(a.layout.stripe_size) * u64::from(a.layout.stripe_count);
            let cap = usize::try_from(row)
                .unwrap_or(WBUF_MAX)
                .clamp(WBUF_MIN, WBUF_MAX);
            Arc::new(Mutex::new(OpenFile {
                attr: a,
                buf: WriteBuf::new(cap),
                deferred: None,
                opens: 0,
                sending: None,
            }))
        });
        let mut g = lock(f);
        g.opens += 1;
        // Close-to-open: the attributes read at open are the ones used.
        let keep = g.attr.size.max(g.buf.end());
        g.attr = a;
        if !g.buf.is_empty() || g.sending.is_some() {
            g.attr.size = g.attr.size.max(keep);
        }
        drop(g);
        f.clone()
    }

    fn file(&self, ino: u64) -> Option<Arc<Mutex<OpenFile>>> {
        lock(&self.files).get(&ino).cloned()
    }

    /// Waits for the write-behind send of `f` in flight, if any, and gives
    /// its result.
    fn wait_send(&self, f: &mut OpenFile) -> Result<()> {
        let Some(h) = f.sending.take() else {
            return Ok(());
        };
        match h.join() {
            Ok((r, data)) => {
                f.buf.recycle(data);
                r
            }
            Err(_) => Err(Error::Protocol {
                reason: "the write-behind thread panicked".into(),
            }),
        }
    }

    /// Sends a full row `data` at `off` from a thread, so the kernel's next
    /// writes fill the buffer meanwhile (one send in flight per file: the
    /// previous one is waited for first, and its error is this write's).
    fn send_behind(&self, f: &mut OpenFile, off: u64, data: Vec<u8>) -> Result<()> {
        self.wait_send(f)?;
        f.attr.size = f.attr.size.max(off + data.len() as u64);
        let (client, attr) = (self.client.clone(), f.attr);
        let spawned = std::thread::Builder::new()
            .name("dosfs-wb".into())
            .spawn(move || {
                let r = client.write_at(&attr, off, &data);
                (r, data)
            });
        match spawned {
            Ok(h) => {
                f.sending = Some(h);
                Ok(())
            }
            // No thread (out of resources): the row was not sent, and
            // this write fails with the reason.
            Err(e) => Err(Error::io("spawn", "write-behind thread", e)),
        }
    }

    /// Sends the buffered writes of `f` to the servers (after any send in
    /// flight).
    fn flush_buf(&self, f: &mut OpenFile) -> Result<()> {
        self.wait_send(f)?;
        if let Some((off, data)) = f.buf.take() {
            let r = self.client.write_at(&f.attr, off, &data);
            f.attr.size = f.attr.size.max(off + data.len() as u64);
            f.buf.recycle(data);
            r?;
        }
        Ok(())
    }

    /// Flushes, then gives any deferred error.
    fn settle(&self, op: &str, ino: u64, f: &mut OpenFile) -> std::result::Result<(), Errno> {
        if let Err(e) = self.flush_buf(f) {
            return Err(self.fail(op, ino, &e));
        }
        match f.deferred.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write_inner(&self, ino: u64, off: u64, data: &[u8]) -> std::result::Result<(), Errno> {
        let Some(f) = self.file(ino) else {
            return Err(Errno::EBADF);
        };
        let mut f = lock(&f);
        if let Some(e) = f.deferred.take() {
            return Err(e);
        }
        loop {
            match f.buf.push(off, data) {
                Push::Buffered => return Ok(()),
                Push::Full => {
                    // The row goes from a thread; its error goes to the
                    // next write, close or fsync (an error of the previous
                    // row's send is this write's).
                    let Some((off, data)) = f.buf.take() else {
                        return Ok(());
                    };
                    return self
                        .send_behind(&mut f, off, data)
                        .map_err(|e| self.fail("write", ino, &e));
                }
                Push::FlushFirst => {
                    if let Err(e) = self.flush_buf(&mut f) {
                        return Err(self.fail("write", ino, &e));
                    }
                }
                Push::Direct => {
                    // After the row in flight: writes stay in order.
                    if let Err(e) = self.wait_send(&mut f) {
                        return Err(self.fail("write", ino, &e));
                    }
                    let r = self.client.write_at(&f.attr, off, data);
                    f.attr.size = f.attr.size.max(off + data.len() as u64);
                    return r.map_err(|e| self.fail("write", ino, &e));
                }
            }
        }
    }

    fn read_inner(&self, ino: u64, off: u64, size: u32) -> std::result::Result<Vec<u8>, Errno> {
        let f = self.file(ino);
        let mut a = match &f {
            Some(f) => {
                // Read-your-writes across handles: send what is buffered.
                // Its error also goes to the writer's next write or close.
                let mut g = lock(f);
                if let Err(e) = self.flush_buf(&mut g) {
                    let n = self.fail("write-behind", ino, &e);
                    g.deferred = Some(n);
                    return Err(n);
                }
                g.attr
            }
            None => self.stat_ino(ino).map_err(|e| self.fail("read", ino, &e))?,
        };
        if off + u64::from(size) > a.size {
            // Past the size known at open: the file may have grown since.
            let fresh = self.stat_ino(ino).map_err(|e| self.fail("read", ino, &e))?;
            // Everything this mount wrote is on the servers (flushed
            // above), so the server's size is the file's.
            a.size = fresh.size;
            if let Some(f) = &f {
                let mut g = lock(f);
                g.attr.size = fresh.size.max(g.buf.end());
            }
        }
        let n = a.size.saturating_sub(off).min(u64::from(size)) as usize;
        let mut buf = vec![0u8; n];
        if n > 0 {
            let path = self.describe(ino);
            if let Err(e) = self.client.read_at(&path, &a, off, &mut buf) {
                return Err(self.fail("read", ino, &e));
            }
        }
        Ok(buf)
    }

    /// Lists from offset `offset` into `reply` (the cursor is taken out
    /// of the table while the metadata server is asked, so listings of
    /// other directories go on meanwhile).
    fn readdir_inner(
        &self,
        fh: u64,
        offset: u64,
        reply: &mut ReplyDirectory,
    ) -> std::result::Result<(), Errno> {
        let Some(mut c) = lock(&self.dirs).remove(&fh) else {
            return Err(Errno::EBADF);
        };
        let r = self.list(&mut c, offset, reply);
        lock(&self.dirs).insert(fh, c);
        r
    }

    fn list(
        &self,
        c: &mut DirCursor,
        offset: u64,
        reply: &mut ReplyDirectory,
    ) -> std::result::Result<(), Errno> {
        let mut off = offset;
        if off == 0 {
            if reply.add(INodeNo(c.ino), 1, FileType::Directory, ".") {
                return Ok(());
            }
            off = 1;
        }
        if off == 1 {
            let parent = self.names().parent(c.ino).unwrap_or(ROOT);
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                return Ok(());
            }
            off = 2;
        }
        if off < c.base {
            // A seek back: list again from the start.
            c.base = 2;
            c.page.clear();
            c.more = true;
        }
        loop {
            while off >= c.base + c.page.len() as u64 {
                if !c.more {
                    return Ok(());
                }
                let after = c.page.last().map(|e| e.name.clone()).unwrap_or_default();
                c.base += c.page.len() as u64;
                self.fetch(c, after)?;
            }
            let e = &c.page[(off - c.base) as usize];
            let kind = match e.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            };
            if reply.add(INodeNo(e.ino), off + 1, kind, &e.name) {
                return Ok(());
            }
            off += 1;
        }
    }

    /// The page after `after` into `c`.
    fn fetch(&self, c: &mut DirCursor, after: String) -> std::result::Result<(), Errno> {
        let req = Wire::Readdir {
            path: c.path.clone(),
            after,
            limit: READDIR_PAGE,
        };
        match self.client.call(0, &req) {
            Ok(Reply::Entries { entries, more }) => {
                c.more = more && !entries.is_empty();
                c.page = entries;
                Ok(())
            }
            Ok(r) => Err(self.fail("readdir", c.ino, &unexpected(r))),
            Err(e) => Err(self.fail("readdir", c.ino, &e)),
        }
    }

    fn rename_inner(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> std::result::Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let from = self.child(parent, name)?;
        let to = self.child(newparent, newname)?;
        let new_name = name_str(newname)?;
        let lookup = |parent: INodeNo, name: &str| match self.attr_req(&Wire::Lookup {
            parent: parent.0,
            name: name.to_owned(),
        }) {
            Ok(a) => Ok(Some(a.ino)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("rename", parent.0, &e)),
        };
        // What the rename replaces: it loses its name.
        let replaced = lookup(newparent, new_name)?;
        if replaced.is_some() && flags.contains(RenameFlags::RENAME_NOREPLACE) {
            return Err(Errno::EEXIST);
        }
        self.client
            .rename(&from, &to)
            .map_err(|e| self.fail("rename", parent.0, &e))?;
        {
            let mut l = lock(&self.listings);
            l.removed(parent.0, name_str(name)?);
            l.added(newparent.0, new_name);
        }
        let moved = lookup(newparent, new_name).ok().flatten();
        let mut names = self.names_mut();
        if let Some(old) = replaced.filter(|&o| Some(o) != moved) {
            names.removed(old);
        }
        if let Some(ino) = moved {
            names.renamed(ino, newparent.0, new_name);
        }
        Ok(())
    }
}

impl Filesystem for DosFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(n) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(n);
        }
        if let Err(n) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(n);
        }
        let _ = config.set_max_background(64);
        // Lookups (and listings) of one directory run at once: a shared
        // directory's stats are not serialised by FUSE (creates still are,
        // by the VFS's directory lock, as on any file system).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        if self.opts.writeback_cache {
            if let Err(e) = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE) {
                tracing::warn!(target: "dosfs::mount", "no writeback cache in this kernel ({e:?})");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        // Make everything written through the mount durable.
        for s in 0..self.client.servers() {
            if let Err(e) = self.client.call(s, &Wire::Sync { ino: None }) {
                tracing::error!(target: "dosfs::mount", "sync at unmount: {e}");
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name_s = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if lock(&self.listings).absent(parent.0, name_s, Instant::now()) {
            return self.negative(reply);
        }
        match self.attr_req(&Wire::Lookup {
            parent: parent.0,
            name: name_s.to_owned(),
        }) {
            Ok(a) => self.entry(parent.0, name, &a, reply),
            Err(Error::NotFound { .. }) => {
                self.list_dir(parent.0);
                self.negative(reply)
            }
            Err(e) => reply.error(self.fail("lookup", parent.0, &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut names = self.names_mut();
        names.forget(ino.0, nlookup);
        if names.lookups(ino.0) == 0 {
            lock(&self.kernel).remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.stat_ino(ino.0) {
            Ok(a) => reply.attr(&self.ttl(&a), &self.fattr(&a)),
            Err(e) => reply.error(self.fail("getattr", ino.0, &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // dosfs keeps no modes, owners or times: only the size changes.
        let Some(size) = size else {
            return match self.stat_ino(ino.0) {
                Ok(a) => reply.attr(&self.ttl(&a), &self.fattr(&a)),
                Err(e) => reply.error(self.fail("setattr", ino.0, &e)),
            };
        };
        let f = self.file(ino.0);
        let mut g = f.as_ref().map(|f| lock(f));
        if let Some(g) = g.as_deref_mut() {
            if let Err(e) = self.settle("truncate", ino.0, g) {
                return reply.error(e);
            }
        }
        let r = self
            .stat_ino(ino.0)
            .and_then(|a| self.client.set_size(&a, size));
        match r {
            Ok(a) => {
                if let Some(g) = g.as_deref_mut() {
                    g.attr = a;
                }
                drop(g);
                self.kernel_size(ino.0, Some(size), 0);
                reply.attr(&self.ttl(&a), &self.fattr(&a));
            }
            Err(e) => reply.error(self.fail("truncate", ino.0, &e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.client.mkdir(&path) {
            Ok(a) => {
                lock(&self.listings).added(parent.0, &name.to_string_lossy());
                self.entry(parent.0, name, &a, reply)
            }
            Err(e) => reply.error(self.fail("mkdir", parent.0, &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.client.unlink(&path) {
            Ok(a) => {
                self.names_mut().removed(a.ino);
                lock(&self.listings).removed(parent.0, &name.to_string_lossy());
                // Buffered writes of a removed file have nowhere to go.
                if let Some(f) = self.file(a.ino) {
                    let mut g = lock(&f);
                    let _ = g.buf.take();
                    let _ = self.wait_send(&mut g);
                }
                reply.ok()
            }
            Err(e) => reply.error(self.fail("unlink", parent.0, &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.client.stat(&path) {
            Ok(a) if a.kind != Kind::Dir => return reply.error(Errno::ENOTDIR),
            Ok(_) => {}
            Err(e) => return reply.error(self.fail("rmdir", parent.0, &e)),
        }
        match self.client.unlink(&path) {
            Ok(a) => {
                self.names_mut().removed(a.ino);
                let mut l = lock(&self.listings);
                l.removed(parent.0, &name.to_string_lossy());
                l.drop_dir(a.ino);
                drop(l);
                reply.ok()
            }
            Err(e) => reply.error(self.fail("rmdir", parent.0, &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.rename_inner(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Close-to-open: fresh attributes at every open, and the kernel
        // drops its cached pages of the file (no FOPEN_KEEP_CACHE). A
        // read-only handle writes nothing, so its close needs no flush
        // request (the handles that wrote flush at their own close).
        let fopen = if flags.0 & libc::O_ACCMODE == libc::O_RDONLY {
            FopenFlags::FOPEN_NOFLUSH
        } else {
            FopenFlags::empty()
        };
        match self.stat_ino(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.error(Errno::EISDIR),
            Ok(a) if self.stale_in_kernel(&a) => reply.error(Errno::ESTALE),
            Ok(a) => {
                self.open_file(a);
                reply.opened(FileHandle(ino.0), fopen);
            }
            Err(e) => reply.error(self.fail("open", ino.0, &e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let exclusive = flags & libc::O_EXCL != 0;
        let mut r = self.client.create(&path, None, exclusive);
        if let Ok(a) = &r {
            if flags & libc::O_TRUNC != 0 && a.size > 0 {
                r = self.client.set_size(a, 0);
            }
        }
        match r {
            Ok(a) if a.kind == Kind::Dir => reply.error(Errno::EISDIR),
            Ok(a) => {
                lock(&self.listings).added(parent.0, &name.to_string_lossy());
                self.open_file(a);
                let fa = self.fattr(&a);
                let gen = self.entered(parent.0, name, &a, fa.size);
                reply.created(
                    &self.opts.entry_timeout,
                    &fa,
                    Generation(gen),
                    FileHandle(a.ino),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(self.fail("create", parent.0, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_inner(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Ok(n) = u32::try_from(data.len()) else {
            return reply.error(Errno::EINVAL);
        };
        self.kernel_size(ino.0, None, offset + u64::from(n));
        match self.write_inner(ino.0, offset, data) {
            Ok(()) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(): the file's writes reach the servers (visible to every
        // client); fsync makes them durable.
        let Some(f) = self.file(ino.0) else {
            return reply.ok();
        };
        let mut g = lock(&f);
        match self.settle("close", ino.0, &mut g) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(f) = self.file(ino.0) else {
            return reply.ok();
        };
        let r = self.settle("release", ino.0, &mut lock(&f));
        // Lock order: the table, then the file (as open does).
        let mut files = lock(&self.files);
        let mut g = lock(&f);
        g.opens = g.opens.saturating_sub(1);
        if g.opens == 0 {
            drop(g);
            files.remove(&ino.0);
        }
        drop(files);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let a = match self.file(ino.0) {
            Some(f) => {
                let mut g = lock(&f);
                if let Err(e) = self.settle("fsync", ino.0, &mut g) {
                    return reply.error(e);
                }
                g.attr
            }
            None => match self.stat_ino(ino.0) {
                Ok(a) => a,
                Err(e) => return reply.error(self.fail("fsync", ino.0, &e)),
            },
        };
        match self.client.sync(&a) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsync", ino.0, &e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let path = match self.names().path(ino.0) {
            Ok(p) => p.to_string(),
            Err(_) => return reply.error(Errno::ESTALE),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(
            fh,
            DirCursor {
                ino: ino.0,
                path,
                base: 2,
                page: Vec::new(),
                more: true,
            },
        );
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.readdir_inner(fh.0, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        const BSIZE: u64 = 4096;
        let (mut total, mut free, mut files) = (0u64, 0u64, 0u64);
        for r in self.client.statfs() {
            match r {
                Ok(s) => {
                    total += s.total;
                    free += s.free;
                    files += s.inodes;
                }
                Err(e) => return reply.error(self.fail("statfs", ino.0, &e)),
            }
        }
        let blocks = total / BSIZE;
        let bfree = free / BSIZE;
        reply.statfs(
            blocks,
            bfree,
            bfree,
            files,
            u64::from(u32::MAX),
            BSIZE as u32,
            crate::target::MAX_NAME as u32,
            BSIZE as u32,
        );
    }
}
