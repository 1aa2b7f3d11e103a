//! [`Fs`], [`Mode`], [`Hints`] and [`File`]: opening, independent I/O, sync,
//! size, close; the collective transfers are in `coll.rs`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dos_fs::addrfile::AddrFile;
use dos_fs::client::Client;
use dos_fs::layout::{Layout, LayoutSpec};
use dos_fs::meta::{Attr, Kind};
use dos_fs::wire::Request;

use super::error::{Error, FsErrorKind, Result};
use super::lock::FileLock;
use super::nbcoll::Queue;
use super::plan::{plan, Options, Worker};
use super::view::View;
use crate::op::Max;
use crate::Comm;

/// A running dosfs file system, as a rank reaches it: a client with one
/// connection per server (opened on first use). Cheap to clone; clones
/// share the connections.
#[derive(Clone)]
pub struct Fs {
    client: Arc<Client>,
    addr: PathBuf,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("addr", &self.addr)
            .field("servers", &self.client.servers())
            .finish()
    }
}

/// The file system [`Fs::from_env`] found last, to share its connections.
static DEFAULT: Mutex<Option<Fs>> = Mutex::new(None);

impl Fs {
    /// The file system whose address file is `path` (written by `dosfs up`;
    /// it holds the secret, so it must not be readable by others).
    pub fn open(path: &Path) -> Result<Fs> {
        let a = AddrFile::read(path)?;
        Ok(Fs {
            client: Arc::new(Client::new(&a)),
            addr: path.to_owned(),
        })
    }

    /// The file system named by `DOSFS` (an address file), else
    /// `./dosfs.addr`; one per process, shared by every call that names the
    /// same file.
    pub fn from_env() -> Result<Fs> {
        let path = AddrFile::locate(None);
        let mut g = DEFAULT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fs) = g.as_ref().filter(|fs| fs.addr == path) {
            return Ok(fs.clone());
        }
        let fs = Fs::open(&path)?;
        *g = Some(fs.clone());
        Ok(fs)
    }

    /// The blocking client underneath (for metadata calls: `mkdir`,
    /// `set_stripe`, `readdir`, ...).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn client_arc(&self) -> Arc<Client> {
        self.client.clone()
    }

    /// The address file this handle was made from.
    pub fn addr_file(&self) -> &Path {
        &self.addr
    }
}

/// How a file is opened (`MPI_MODE_*`): an access mode, and whether to
/// create it. Build one from a constant: `Mode::READ_WRITE.create()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode {
    read: bool,
    write: bool,
    create: bool,
    exclusive: bool,
}

impl Mode {
    /// `MPI_MODE_RDONLY`.
    pub const READ_ONLY: Mode = Mode {
        read: true,
        write: false,
        create: false,
        exclusive: false,
    };
    /// `MPI_MODE_WRONLY`.
    pub const WRITE_ONLY: Mode = Mode {
        read: false,
        write: true,
        create: false,
        exclusive: false,
    };
    /// `MPI_MODE_RDWR`.
    pub const READ_WRITE: Mode = Mode {
        read: true,
        write: true,
        create: false,
        exclusive: false,
    };

    /// With `MPI_MODE_CREATE`: create the file if it does not exist.
    pub const fn create(self) -> Mode {
        Mode {
            create: true,
            ..self
        }
    }

    /// With `MPI_MODE_CREATE | MPI_MODE_EXCL`: create the file, failing
    /// with [`FsErrorKind::Exists`] if it exists.
    pub const fn exclusive(self) -> Mode {
        Mode {
            create: true,
            exclusive: true,
            ..self
        }
    }

    /// Whether reads are allowed.
    pub fn can_read(&self) -> bool {
        self.read
    }

    /// Whether writes are allowed.
    pub fn can_write(&self) -> bool {
        self.write
    }

    fn name(&self) -> &'static str {
        match (self.read, self.write) {
            (true, false) => "read-only",
            (false, true) => "write-only",
            _ => "read-write",
        }
    }

    /// MPI's rule: a read-only file cannot be created.
    fn check(&self) -> Result<()> {
        if self.create && !self.write {
            return Err(Error::InvalidArgument {
                op: "File::open",
                reason: "a read-only file cannot be created (MPI_MODE_RDONLY with MPI_MODE_CREATE)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Tuning of one open file (what MPI passes as info hints). Every rank
/// must pass the same hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hints {
    /// Aggregators of collective calls, as sorted ranks of the file's
    /// communicator; `None` (the default) for one per node, the lowest rank
    /// of each (`cb_nodes` in ROMIO).
    pub aggregators: Option<Vec<usize>>,
    /// Holes up to this many bytes are read and written with the data
    /// around them (data sieving; `ind_wr_buffer_size`-like); 0 turns it off.
    pub sieve_hole: u64,
    /// Whether collective calls may take the direct path when the ranks'
    /// ranges do not interleave within a stripe (each rank then does its own
    /// I/O); `false` always aggregates (`romio_cb_write=enable`).
    pub direct: bool,
    /// Bytes of file an aggregator handles per round of a collective call
    /// (rounded up to whole stripes; ROMIO's `cb_buffer_size`): it bounds
    /// the memory an aggregator needs, whatever the size of the call.
    pub cb_buffer: u64,
    /// The layout of a file this open creates (`striping_unit`,
    /// `striping_factor`); `None` inherits its directory's.
    pub layout: Option<LayoutSpec>,
}

impl Default for Hints {
    fn default() -> Hints {
        let o = Options::default();
        Hints {
            aggregators: None,
            sieve_hole: o.sieve_hole,
            direct: o.allow_direct,
            cb_buffer: 16 << 20,
            layout: None,
        }
    }
}

/// An open file of dosfs, shared by the ranks of a communicator
/// (`MPI_File`). See the [module](super) for the semantics.
///
/// Not `Send`: like the communicator it holds, it is used by the thread that
/// called [`crate::init`].
#[derive(Debug)]
pub struct File {
    pub(super) comm: Comm,
    pub(super) fs: Fs,
    pub(super) path: String,
    pub(super) attr: Attr,
    pub(super) mode: Mode,
    pub(super) aggregators: Vec<usize>,
    pub(super) hints: Hints,
    /// The view: displacement and view ([`File::set_view`]).
    pub(super) view: RefCell<(u64, View)>,
    /// In atomic mode, the file's lock ([`File::set_atomicity`]).
    pub(super) atomic: RefCell<Option<FileLock>>,
    /// Nonblocking collective operations not yet carried out.
    pub(super) queue: RefCell<Queue>,
    /// A size the file had (or exceeded) when last asked: files only grow
    /// but by [`File::set_size`], so a read below it needs no stat.
    pub(super) known_size: std::cell::Cell<u64>,
    open: bool,
}

/// Longest error message carried between ranks.
pub(super) const MAX_MESSAGE: usize = 4096;

/// Agrees on the outcome of a collective step: if any rank's `local` is an
/// error, every rank returns the error of the lowest such rank (an
/// [`Error::Fs`] identical on every rank; anything else is
/// [`Error::Elsewhere`] on the others). Also returns the maximum of `extra`
/// over the ranks (a size, for instance).
pub(super) fn agree<T>(
    comm: &Comm,
    op: &'static str,
    local: Result<T>,
    extra: u64,
) -> Result<(T, u64)> {
    let me = comm.rank();
    let mine = [
        if local.is_err() {
            u64::MAX - me as u64
        } else {
            0
        },
        extra,
    ];
    let mut all = [0u64; 2];
    super::quiet::allreduce_max(comm, &mine, &mut all)?;
    if all[0] == 0 {
        return local.map(|v| (v, all[1]));
    }
    let root = (u64::MAX - all[0]) as usize;
    // The failed rank says what failed: [is_fs, kind, message length].
    let mut hdr = [0u64; 3];
    let mut msg = Vec::new();
    if let (true, Err(e)) = (root == me, &local) {
        msg = e.to_string().into_bytes();
        msg.truncate(MAX_MESSAGE);
        hdr = [
            u64::from(e.fs_kind().is_some()),
            e.fs_kind().map_or(0, FsErrorKind::code),
            msg.len() as u64,
        ];
    }
    comm.bcast(&mut hdr, root)?;
    msg.resize((hdr[2] as usize).min(MAX_MESSAGE), 0);
    comm.bcast(&mut msg, root)?;
    if root == me {
        return local.map(|v| (v, all[1]));
    }
    let message = String::from_utf8_lossy(&msg).into_owned();
    Err(if hdr[0] == 1 {
        Error::Fs {
            kind: FsErrorKind::from_code(hdr[1]),
            message,
        }
    } else {
        Error::Elsewhere {
            op,
            rank: root,
            message,
        }
    })
}

impl File {
    /// Opens `path` on the file system of the environment ([`Fs::from_env`])
    /// on every rank of `comm`. Collective; see [`File::open_with`].
    pub fn open(comm: &Comm, path: &str, mode: Mode) -> Result<File> {
        let (fs, _) = agree(comm, "File::open", Fs::from_env(), 0)?;
        File::open_with(comm, &fs, path, mode, Hints::default())
    }

    /// Opens `path` of `fs` on every rank of `comm` (`MPI_File_open`).
    /// Collective: rank 0 looks the file up (or creates it, with the layout
    /// of `hints` if given) and broadcasts the outcome, so every rank returns
    /// the same file or the same error ([`FsErrorKind::NotFound`],
    /// [`FsErrorKind::Exists`], [`FsErrorKind::IsADirectory`], ...). The file
    /// keeps a duplicate of `comm` for its collective calls.
    pub fn open_with(comm: &Comm, fs: &Fs, path: &str, mode: Mode, hints: Hints) -> Result<File> {
        mode.check()?;
        let n = comm.size();
        if let Some(a) = &hints.aggregators {
            if a.is_empty() || a.windows(2).any(|w| w[0] >= w[1]) || a.iter().any(|&r| r >= n) {
                return Err(Error::InvalidArgument {
                    op: "File::open",
                    reason: format!(
                        "aggregators {a:?} are not a sorted non-empty list of ranks below {n}"
                    ),
                });
            }
        }
        let comm = comm.dup()?;
        let found = if comm.rank() == 0 {
            lookup(fs.client(), path, mode, hints.layout)
        } else {
            // Placeholder until rank 0's answer arrives.
            Ok(Attr {
                ino: 0,
                kind: Kind::File,
                size: 0,
                layout: Layout::new(1, 1, 0, 1)?,
            })
        };
        let (attr, _) = agree(&comm, "File::open", found, 0)?;
        let l = attr.layout;
        let mut w = [
            attr.ino,
            attr.size,
            u64::from(l.stripe_size),
            u64::from(l.stripe_count),
            u64::from(l.first),
            u64::from(l.servers),
        ];
        comm.bcast(&mut w, 0)?;
        let c = |x: u64| u32::try_from(x).unwrap_or(0);
        let layout = Layout::new(c(w[2]), c(w[3]), c(w[4]), c(w[5]))?;
        let attr = Attr {
            ino: w[0],
            kind: Kind::File,
            size: w[1],
            layout,
        };
        let queue = Queue::new(&comm)?;
        let aggregators = match &hints.aggregators {
            Some(a) => a.clone(),
            None => node_leaders(&comm)?,
        };
        Ok(File {
            comm,
            fs: fs.clone(),
            path: path.to_owned(),
            attr,
            mode,
            aggregators,
            hints,
            view: RefCell::new((0, View::default())),
            atomic: RefCell::new(None),
            queue: RefCell::new(queue),
            known_size: std::cell::Cell::new(0),
            open: true,
        })
    }

    /// Deletes `path` from `fs` (`MPI_File_delete`; not collective: call it
    /// on one rank).
    pub fn delete(fs: &Fs, path: &str) -> Result<()> {
        fs.client().unlink(path)?;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file's layout (stripe size, count, first server).
    pub fn layout(&self) -> Layout {
        self.attr.layout
    }

    /// The aggregators of collective calls (ranks of the file's communicator).
    pub fn aggregators(&self) -> &[usize] {
        &self.aggregators
    }

    /// The file's communicator (a duplicate of the one it was opened on).
    pub fn comm(&self) -> &Comm {
        &self.comm
    }

    /// The file's access mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub(super) fn check_write(&self, op: &'static str) -> Result<()> {
        if !self.mode.write {
            return Err(Error::Access {
                op,
                mode: self.mode.name(),
            });
        }
        Ok(())
    }

    pub(super) fn check_read(&self, op: &'static str) -> Result<()> {
        if !self.mode.read {
            return Err(Error::Access {
                op,
                mode: self.mode.name(),
            });
        }
        Ok(())
    }

    /// Writes `data` at `offset` (`MPI_File_write_at`; independent): straight
    /// to the servers holding the stripes, every server at once. Under a
    /// view ([`File::set_view`]), `offset` counts etypes of the view and the
    /// bytes go to the view's pieces of the file, one request each (no data
    /// sieving: writing back a hole could undo another rank's concurrent
    /// write of it). In atomic mode ([`File::set_atomicity`]) the whole
    /// write holds the file's lock.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_write("write_at")?;
        let ranges = self.to_file("write_at", &[(offset, data.len() as u64)])?;
        self.locked(|| {
            let c = self.fs.client();
            let mut at = 0usize;
            for &(o, l) in &ranges {
                c.write_behind(&self.attr, o, &data[at..at + l as usize])?;
                at += l as usize;
            }
            Ok(())
        })
    }

    /// Reads into `buf` from `offset` (`MPI_File_read_at`; independent);
    /// returns how many bytes were in the file (fewer than `buf.len()` at its
    /// end; the rest of `buf` is left as it was). Under a view, `offset`
    /// counts etypes of the view, the count is the bytes of the view's
    /// pieces that lie before the end of the file, and pieces separated by
    /// holes of at most [`Hints::sieve_hole`] bytes are read as one request
    /// (data sieving, planned by [`super::plan`]).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.check_read("read_at")?;
        let ranges = self.to_file("read_at", &[(offset, buf.len() as u64)])?;
        self.locked(|| self.read_ranges(&ranges, buf))
    }

    /// Reads the file `ranges` into `buf` (packed, in order); returns how
    /// many bytes lay before the end of the file (only those are written).
    pub(super) fn read_ranges(&self, ranges: &[(u64, u64)], buf: &mut [u8]) -> Result<usize> {
        let end = ranges.iter().map(|&(o, l)| o.saturating_add(l)).max();
        let size = self.size_at_least(end.unwrap_or(0))?;
        let c = self.fs.client();
        if let [(offset, len)] = ranges[..] {
            let n = size.saturating_sub(offset).min(len) as usize;
            if n > 0 {
                c.read_at(&self.path, &self.attr, offset, &mut buf[..n])?;
            }
            return Ok(n);
        }
        let w = self.sieve_plan(ranges)?;
        Ok(read_worker(c, &self.path, &self.attr, size, &w, buf)?)
    }

    /// The extents (data sieving) and parts of one rank's reads of
    /// `ranges`, from the planner.
    pub(super) fn sieve_plan(&self, ranges: &[(u64, u64)]) -> Result<Worker> {
        let opts = Options {
            sieve_hole: self.hints.sieve_hole,
            allow_direct: true,
        };
        let p = plan(
            &[ranges],
            u64::from(self.attr.layout.stripe_size),
            &[0],
            opts,
        )?;
        Ok(p.workers.into_iter().next().unwrap_or(Worker {
            rank: 0,
            domain: (0, 0),
            extents: Vec::new(),
            parts: Vec::new(),
        }))
    }

    /// Sets this rank's view of the file (`MPI_File_set_view`; collective,
    /// each rank with its own `disp` and `view`): from now on the offsets of
    /// the read and write calls count etypes of `view` tiled from byte
    /// `disp` on, skipping its holes (see [`super::view`]). Like MPI, it
    /// completes the nonblocking collective operations in flight on the file
    /// first. Every rank returns the same outcome.
    pub fn set_view(&self, disp: u64, view: View) -> Result<()> {
        self.drain();
        agree(&self.comm, "set_view", Ok(()), 0)?;
        *self.view.borrow_mut() = (disp, view);
        Ok(())
    }

    /// This rank's view: displacement and view (`MPI_File_get_view`).
    pub fn view(&self) -> (u64, View) {
        self.view.borrow().clone()
    }

    /// The file ranges of `list` (`(offset, len)` pairs in the view's
    /// etypes and bytes), in order, through the view.
    pub(super) fn to_file(&self, op: &'static str, list: &[(u64, u64)]) -> Result<Vec<(u64, u64)>> {
        let v = self.view.borrow();
        let mut out = Vec::with_capacity(list.len());
        for &(o, l) in list {
            v.1.map_into(v.0, o, l, &mut out)
                .map_err(|e| Error::InvalidArgument {
                    op,
                    reason: format!("offset {o} + {l} bytes through the view: {e}"),
                })?;
        }
        Ok(out)
    }

    /// Sets atomic mode (`MPI_File_set_atomicity`; collective, the same
    /// `atomic` on every rank). In atomic mode every access of a rank (an
    /// independent read or write, all its pieces under a view; each
    /// aggregator's I/O of a collective round) holds the file's lock, kept
    /// by a lock service at rank 0 of the file's communicator: accesses of
    /// different ranks that overlap are then sequentially consistent (a
    /// read sees all or none of a concurrent write). The cost is a lock
    /// request and grant (a round trip to rank 0) and an unlock message per
    /// access, and accesses of the ranks are serialized, including those
    /// that do not overlap (see the [manual](super#atomic-mode)).
    pub fn set_atomicity(&self, atomic: bool) -> Result<()> {
        self.drain();
        let mine = [u64::from(atomic), u64::from(!atomic)];
        let mut all = [0u64; 2];
        self.comm.allreduce(&mine, &mut all, Max)?;
        let res = if all[0] == 1 && all[1] == 1 {
            Err(Error::InvalidArgument {
                op: "set_atomicity",
                reason: "the ranks passed different flags".into(),
            })
        } else {
            Ok(())
        };
        agree(&self.comm, "set_atomicity", res, 0)?;
        *self.atomic.borrow_mut() = if atomic {
            Some(FileLock::new(&self.comm)?)
        } else {
            None
        };
        Ok(())
    }

    /// Whether the file is in atomic mode (`MPI_File_get_atomicity`).
    pub fn atomicity(&self) -> bool {
        self.atomic.borrow().is_some()
    }

    /// Runs `f` holding the file's lock in atomic mode, else just runs it.
    pub(super) fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let g = self.atomic.borrow();
        let Some(w) = g.as_ref() else {
            drop(g);
            return f();
        };
        w.lock()?;
        // The writes land before the lock goes (they are written behind).
        let r = f().and_then(|v| {
            self.fs.client().flush(self.attr.ino)?;
            Ok(v)
        });
        let u = w.unlock();
        let r = r?;
        u?;
        Ok(r)
    }

    /// The file's size in bytes (`MPI_File_get_size`; asks the metadata
    /// server, after telling it where this rank's writes reached: other
    /// ranks' writes count after a [`File::sync`]).
    pub fn size(&self) -> Result<u64> {
        let c = self.fs.client();
        c.publish_size(self.attr.ino)?;
        let size = c.stat(&self.path)?.size;
        self.known_size.set(size);
        Ok(size)
    }

    /// The file's size when it is known to be at least `end` (no request),
    /// else [`File::size`]. A file shrinks only by [`File::set_size`]
    /// (collective, which sets the known size), so a read below a size
    /// seen before needs not ask the metadata server again.
    pub(super) fn size_at_least(&self, end: u64) -> Result<u64> {
        match self.known_size.get() {
            k if k >= end => Ok(k),
            _ => self.size(),
        }
    }

    /// Makes every write to the file that returned before this call, on any
    /// rank, durable (`MPI_File_sync`; collective). It starts with a barrier
    /// (so sync, barrier, sync is one call here); the ranks share the
    /// servers out between them, each syncing its share at once.
    pub fn sync(&self) -> Result<()> {
        // This rank's writes in flight first (their errors are agreed below).
        let flushed = self.fs.client().flush(self.attr.ino);
        super::quiet::barrier(&self.comm)?;
        let mut servers: Vec<u32> = self.attr.layout.server_list().collect();
        servers.push(0);
        servers.sort_unstable();
        servers.dedup();
        let (n, me) = (self.comm.size(), self.comm.rank());
        let mine: Vec<u32> = servers
            .iter()
            .enumerate()
            .filter(|(i, _)| i % n == me)
            .map(|(_, &s)| s)
            .collect();
        let (client, ino) = (self.fs.client(), self.attr.ino);
        let sync_one = |s: u32| client.call(s, &Request::Sync { ino: Some(ino) }).map(drop);
        // This rank's servers at once (each seals and fsyncs its chunks).
        let res = flushed
            .and_then(|()| {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = mine
                        .iter()
                        .map(|&s| (s, scope.spawn(move || sync_one(s))))
                        .collect();
                    handles.into_iter().try_for_each(|(s, h)| {
                        h.join().unwrap_or_else(|_| {
                            Err(dos_fs::Error::Remote {
                                server: s,
                                message: "the sync thread panicked".into(),
                            })
                        })
                    })
                })
            })
            .map_err(Error::from);
        agree(&self.comm, "sync", res, 0).map(drop)
    }

    /// Sets the file's size (`MPI_File_set_size`; collective): cuts it or
    /// extends it with zeros.
    pub fn set_size(&self, size: u64) -> Result<()> {
        self.check_write("set_size")?;
        let flushed = self.fs.client().flush(self.attr.ino);
        self.comm.barrier()?;
        let res = if let Err(e) = flushed {
            Err(e.into())
        } else if self.comm.rank() == 0 {
            let c = self.fs.client();
            c.stat(&self.path)
                .and_then(|a| c.set_size(&a, size))
                .map(drop)
                .map_err(Error::from)
        } else {
            Ok(())
        };
        self.known_size.set(0);
        agree(&self.comm, "set_size", res, 0).map(drop)
    }

    /// Closes the file (`MPI_File_close`; collective). Dropping an open
    /// `File` does the same, ignoring errors.
    pub fn close(mut self) -> Result<()> {
        self.open = false;
        self.drain();
        let flushed = self.fs.client().flush(self.attr.ino);
        self.atomic.borrow_mut().take();
        super::quiet::barrier(&self.comm)?;
        Ok(flushed?)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // Collective like close; skipped while unwinding, where the other
        // ranks may never arrive.
        if self.open && !std::thread::panicking() {
            self.drain();
            let _ = self.fs.client().flush(self.attr.ino);
            let _ = self.comm.barrier();
        }
    }
}

/// Reads the extents of `w` (one rank's reads, [`File::sieve_plan`]) from a
/// file of `size` bytes and copies its parts into `buf` (packed); returns
/// how many bytes of the parts lay before the end of the file (only those
/// are written).
pub(super) fn read_worker(
    c: &Client,
    path: &str,
    attr: &Attr,
    size: u64,
    w: &Worker,
    buf: &mut [u8],
) -> dos_fs::Result<usize> {
    let mut count = 0u64;
    for e in &w.extents {
        let n = size.saturating_sub(e.offset).min(e.len);
        if n == 0 {
            continue;
        }
        let mut ebuf = vec![0u8; n as usize];
        c.read_at(path, attr, e.offset, &mut ebuf)?;
        let end = e.offset + n;
        for part in w
            .parts
            .iter()
            .filter(|p| p.offset >= e.offset && p.offset < end)
        {
            let take = (end.min(part.offset + part.len) - part.offset) as usize;
            let at = (part.offset - e.offset) as usize;
            let b = part.buf_offset as usize;
            buf[b..b + take].copy_from_slice(&ebuf[at..at + take]);
            count += take as u64;
        }
    }
    Ok(count as usize)
}

/// Rank 0's part of open: find, or create, the file.
fn lookup(c: &Client, path: &str, mode: Mode, layout: Option<LayoutSpec>) -> Result<Attr> {
    let a = if mode.create {
        c.create(path, layout, mode.exclusive)?
    } else {
        c.stat(path)?
    };
    if a.kind != Kind::File {
        return Err(dos_fs::Error::IsADirectory {
            path: path.to_owned(),
        }
        .into());
    }
    Ok(a)
}

/// The lowest rank of each node of `comm`, sorted: every rank finds the
/// lowest rank it shares a node with (the ranks its engine reaches through
/// the node's shared memory) and the ranks gather that.
fn node_leaders(comm: &Comm) -> Result<Vec<usize>> {
    let me = comm.rank();
    let leader = {
        let eng = comm.eng.enter();
        (0..comm.size())
            .find(|&r| r == me || comm.peer(r).is_ok_and(|p| eng.local_index(p).is_some()))
            .unwrap_or(me)
    };
    let mut all = vec![0u64; comm.size()];
    comm.allgather(&[leader as u64], &mut all)?;
    let mut v: Vec<usize> = all.into_iter().map(|x| x as usize).collect();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}
