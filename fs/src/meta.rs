//! The namespace: directories, files, their layouts and sizes.
//!
//! One server, index 0, holds all metadata (see the crate docs for why). The
//! namespace lives in memory as a table of inodes; each directory keeps its
//! entries in a `BTreeMap` by name, so a create or lookup in a directory of
//! n entries costs O(log n), and [`Meta::readdir`] returns one page of at most
//! `limit` entries after a given name, so listing a directory of a million
//! files is a million / limit requests of bounded size, never one huge reply.
//!
//! Every change is first appended to the [journal](crate::journal) as a
//! redo record, then applied; replay at start applies the same records with
//! the same function, so what was applied before a crash and what replay
//! rebuilds cannot differ. A change is durable once [`Meta::sync`] returns
//! (MPI-IO's rule: data and metadata are durable after a sync); a killed
//! server process loses nothing that reached the journal, since the records
//! are in the kernel's page cache. When the journal passes
//! [`Meta::snapshot_after`] bytes, a sync also writes a snapshot and empties
//! the journal, so start-up time stays bounded.
//!
//! Inode numbers are never reused, even after a power cut that loses the
//! journal's unsynced tail (with creates in it whose numbers data servers
//! may already hold chunks under): they are reserved [`INODE_BATCH`] at a
//! time by a journal record that is fsynced before the first of them is
//! handed out, and numbering resumes after the reservation at start.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dos_transport::codec::{Reader, Writer};

use crate::error::{Error, Result};
use crate::journal::{Journal, Replay};
use crate::layout::{Layout, LayoutSpec};
use crate::target::{check_name, FsPath, Target};

/// The inode number of the root directory.
pub const ROOT: u64 = 1;
/// Journal bytes after which a sync writes a snapshot.
pub const SNAPSHOT_AFTER: u64 = 64 << 20;
/// Inode numbers reserved (durably) at a time.
pub const INODE_BATCH: u64 = 4096;
/// Most entries one [`Meta::readdir`] page returns.
pub const MAX_READDIR: u32 = 4096;

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

impl Kind {
    /// The byte for the wire and the journal.
    pub fn byte(self) -> u8 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
        }
    }

    /// The kind of a byte.
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            _ => None,
        }
    }
}

/// What stat returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes (files); number of entries (directories).
    pub size: u64,
    /// A file's layout; for a directory, the layout a new file with the
    /// default spec would get if it had inode `ino` (its stripe size, count).
    pub layout: Layout,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name.
    pub name: String,
    /// Its inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
}

#[derive(Debug)]
struct Inode {
    parent: u64,
    name: String,
    kind: Kind,
    size: u64,
    /// Files only.
    layout: Option<Layout>,
    /// Directories: the spec new entries inherit.
    spec: LayoutSpec,
    /// Directories only.
    children: BTreeMap<String, u64>,
}

/// One change of the namespace: a journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Mkdir {
        parent: u64,
        name: String,
        ino: u64,
        spec: LayoutSpec,
    },
    Create {
        parent: u64,
        name: String,
        ino: u64,
        layout: Layout,
    },
    Unlink {
        parent: u64,
        name: String,
    },
    Rename {
        from_parent: u64,
        from_name: String,
        to_parent: u64,
        to_name: String,
    },
    SetSize {
        ino: u64,
        size: u64,
    },
    SetSpec {
        ino: u64,
        spec: LayoutSpec,
    },
    /// Inode numbers below `upto` may be in use (made durable before use).
    Reserve {
        upto: u64,
    },
}

pub(crate) fn put_layout(w: &mut Writer, l: &Layout) {
    w.u32(l.stripe_size)
        .u32(l.stripe_count)
        .u32(l.first)
        .u32(l.servers);
}

pub(crate) fn get_layout(r: &mut Reader<'_>) -> Result<Layout> {
    let (ss, c, f, s) = (r.u32(), r.u32(), r.u32(), r.u32());
    let (Ok(ss), Ok(c), Ok(f), Ok(s)) = (ss, c, f, s) else {
        return Err(Error::protocol("truncated layout"));
    };
    Layout::new(ss, c, f, s)
}

pub(crate) fn put_spec(w: &mut Writer, s: &LayoutSpec) {
    w.u32(s.stripe_size).u32(s.stripe_count).u32(s.first);
}

pub(crate) fn get_spec(r: &mut Reader<'_>) -> Result<LayoutSpec> {
    let t = |_| Error::protocol("truncated layout spec");
    Ok(LayoutSpec {
        stripe_size: r.u32().map_err(t)?,
        stripe_count: r.u32().map_err(t)?,
        first: r.u32().map_err(t)?,
    })
}

impl Op {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Op::Mkdir {
                parent,
                name,
                ino,
                spec,
            } => {
                w.u8(1).u64(*parent).bytes16(name.as_bytes()).u64(*ino);
                put_spec(&mut w, spec);
            }
            Op::Create {
                parent,
                name,
                ino,
                layout,
            } => {
                w.u8(2).u64(*parent).bytes16(name.as_bytes()).u64(*ino);
                put_layout(&mut w, layout);
            }
            Op::Unlink { parent, name } => {
                w.u8(3).u64(*parent).bytes16(name.as_bytes());
            }
            Op::Rename {
                from_parent,
                from_name,
                to_parent,
                to_name,
            } => {
                w.u8(4)
                    .u64(*from_parent)
                    .bytes16(from_name.as_bytes())
                    .u64(*to_parent)
                    .bytes16(to_name.as_bytes());
            }
            Op::SetSize { ino, size } => {
                w.u8(5).u64(*ino).u64(*size);
            }
            Op::SetSpec { ino, spec } => {
                w.u8(6).u64(*ino);
                put_spec(&mut w, spec);
            }
            Op::Reserve { upto } => {
                w.u8(7).u64(*upto);
            }
        }
        w.into_vec()
    }

    fn decode(b: &[u8]) -> Result<Op> {
        let mut r = Reader::new(b);
        let t = |e: dos_transport::codec::CodecError| Error::protocol(e.reason());
        let name = |r: &mut Reader<'_>| -> Result<String> {
            let s = dos_transport::codec::utf8(r.bytes16().map_err(t)?).map_err(t)?;
            Ok(s.to_owned())
        };
        let op = match r.u8().map_err(t)? {
            1 => Op::Mkdir {
                parent: r.u64().map_err(t)?,
                name: name(&mut r)?,
                ino: r.u64().map_err(t)?,
                spec: get_spec(&mut r)?,
            },
            2 => Op::Create {
                parent: r.u64().map_err(t)?,
                name: name(&mut r)?,
                ino: r.u64().map_err(t)?,
                layout: get_layout(&mut r)?,
            },
            3 => Op::Unlink {
                parent: r.u64().map_err(t)?,
                name: name(&mut r)?,
            },
            4 => Op::Rename {
                from_parent: r.u64().map_err(t)?,
                from_name: name(&mut r)?,
                to_parent: r.u64().map_err(t)?,
                to_name: name(&mut r)?,
            },
            5 => Op::SetSize {
                ino: r.u64().map_err(t)?,
                size: r.u64().map_err(t)?,
            },
            6 => Op::SetSpec {
                ino: r.u64().map_err(t)?,
                spec: get_spec(&mut r)?,
            },
            7 => Op::Reserve {
                upto: r.u64().map_err(t)?,
            },
            _ => return Err(Error::protocol("unknown journal operation")),
        };
        r.end().map_err(t)?;
        Ok(op)
    }
}

/// The metadata of one file system, persistent in a target's `meta/`.
#[derive(Debug)]
pub struct Meta {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Inode numbers below this are durably reserved: after a crash,
    /// numbering resumes here, so a number handed out before the crash (whose
    /// create may have been lost with the journal's unsynced tail, while data
    /// servers still hold chunks under it) is never given to another file.
    reserved: u64,
    /// Inode numbers below this are reserved by a record known to be on
    /// disk; [`Meta::alloc_ino`] hands out only these. Raised by the thread
    /// that fsyncs the next reservation ahead of need.
    durable: Arc<AtomicU64>,
    /// A reservation's fsync is running on its thread.
    refilling: Arc<AtomicBool>,
    servers: u32,
    journal: Journal,
    /// Journal size after which [`Meta::sync`] writes a snapshot.
    pub snapshot_after: u64,
}

impl Meta {
    /// Opens the metadata in `target` (server 0's), replaying the snapshot
    /// and journal.
    pub fn open(target: &Target) -> Result<Meta> {
        let dir = target.meta_dir();
        let (journal, replay) = Journal::open(&dir)?;
        let mut m = Meta {
            inodes: HashMap::new(),
            next_ino: ROOT + 1,
            reserved: ROOT + 1,
            durable: Arc::new(AtomicU64::new(ROOT + 1)),
            refilling: Arc::new(AtomicBool::new(false)),
            servers: target.info().servers,
            journal,
            snapshot_after: SNAPSHOT_AFTER,
        };
        let Replay {
            snapshot, records, ..
        } = replay;
        let corrupt = |reason| Error::MetaCorrupt {
            path: dir.join("journal"),
            offset: 0,
            reason,
        };
        match snapshot {
            Some((_, state)) => m.load_state(&state).map_err(|_| Error::MetaCorrupt {
                path: dir.join("snapshot"),
                offset: 0,
                reason: "snapshot does not decode",
            })?,
            None => {
                m.inodes
                    .insert(ROOT, Inode::dir(0, String::new(), LayoutSpec::default()));
            }
        }
        for rec in records {
            let op = Op::decode(&rec).map_err(|_| corrupt("record does not decode"))?;
            m.apply(op)
                .map_err(|_| corrupt("record does not apply to the namespace"))?;
        }
        m.next_ino = m.next_ino.max(m.reserved);
        m.reserved = m.next_ino;
        m.durable.store(m.next_ino, Ordering::Release);
        Ok(m)
    }

    /// The number of servers of the file system.
    pub fn servers(&self) -> u32 {
        self.servers
    }

    /// How many inodes exist.
    pub fn inode_count(&self) -> u64 {
        self.inodes.len() as u64
    }

    fn attr(&self, ino: u64) -> Result<Attr> {
        let i = self.inodes.get(&ino).ok_or_else(|| Error::NotFound {
            path: format!("#{ino}"),
        })?;
        let layout = match i.layout {
            Some(l) => l,
            None => i.spec.resolve(self.servers, 0)?,
        };
        let size = match i.kind {
            Kind::File => i.size,
            Kind::Dir => i.children.len() as u64,
        };
        Ok(Attr {
            ino,
            kind: i.kind,
            size,
            layout,
        })
    }

    /// The inode of `path`.
    fn resolve(&self, path: &FsPath) -> Result<u64> {
        let mut ino = ROOT;
        for (k, n) in path.names().iter().enumerate() {
            let dir = &self.inodes[&ino];
            if dir.kind != Kind::Dir {
                return Err(Error::NotADirectory {
                    path: prefix(path, k),
                });
            }
            ino = *dir.children.get(n).ok_or_else(|| Error::NotFound {
                path: prefix(path, k + 1),
            })?;
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last name of `path`.
    fn parent_of<'p>(&self, path: &'p FsPath) -> Result<(u64, &'p str)> {
        let Some((parent, name)) = path.split_last() else {
            return Err(Error::InvalidPath {
                path: "/".to_owned(),
                reason: crate::target::PATH_REASONS[7],
            });
        };
        let ino = self.resolve(&parent)?;
        if self.inodes[&ino].kind != Kind::Dir {
            return Err(Error::NotADirectory {
                path: parent.to_string(),
            });
        }
        Ok((ino, name))
    }

    /// Stat by path.
    pub fn stat(&self, path: &FsPath) -> Result<Attr> {
        self.attr(self.resolve(path)?)
    }

    /// Stat by inode.
    pub fn stat_ino(&self, ino: u64) -> Result<Attr> {
        self.attr(ino)
    }

    /// Looks `name` up in directory `parent` (by inode, as a mount does).
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        check_name(name)?;
        let dir = self.inodes.get(&parent).ok_or_else(|| Error::NotFound {
            path: format!("#{parent}"),
        })?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotADirectory {
                path: format!("#{parent}"),
            });
        }
        let ino = dir.children.get(name).ok_or_else(|| Error::NotFound {
            path: format!("#{parent}/{name}"),
        })?;
        self.attr(*ino)
    }

    /// Creates a file. With `spec`, its unset fields come from the parent
    /// directory's spec. An existing file is returned unless `exclusive`.
    pub fn create(
        &mut self,
        path: &FsPath,
        spec: Option<LayoutSpec>,
        exclusive: bool,
    ) -> Result<Attr> {
        let (parent, name) = self.parent_of(path)?;
        if let Some(&ino) = self.inodes[&parent].children.get(name) {
            if exclusive {
                return Err(Error::Exists {
                    path: path.to_string(),
                });
            }
            let a = self.attr(ino)?;
            if a.kind == Kind::Dir {
                return Err(Error::IsADirectory {
                    path: path.to_string(),
                });
            }
            return Ok(a);
        }
        let ino = self.alloc_ino()?;
        let dir_spec = self.inodes[&parent].spec;
        let layout = spec
            .unwrap_or_default()
            .inherit(dir_spec)
            .resolve(self.servers, ino)?;
        self.commit(Op::Create {
            parent,
            name: name.to_owned(),
            ino,
            layout,
        })?;
        self.attr(ino)
    }

    /// Creates a directory, inheriting its parent's layout spec.
    pub fn mkdir(&mut self, path: &FsPath) -> Result<Attr> {
        if path.is_root() {
            return Err(Error::Exists { path: "/".into() });
        }
        let (parent, name) = self.parent_of(path)?;
        if self.inodes[&parent].children.contains_key(name) {
            return Err(Error::Exists {
                path: path.to_string(),
            });
        }
        let ino = self.alloc_ino()?;
        let spec = self.inodes[&parent].spec;
        self.commit(Op::Mkdir {
            parent,
            name: name.to_owned(),
            ino,
            spec,
        })?;
        self.attr(ino)
    }

    /// Up to `limit` entries of directory `path` whose names sort after
    /// `after` (empty: from the start), and whether more follow.
    pub fn readdir(&self, path: &FsPath, after: &str, limit: u32) -> Result<(Vec<DirEntry>, bool)> {
        let ino = self.resolve(path)?;
        let dir = &self.inodes[&ino];
        if dir.kind != Kind::Dir {
            return Err(Error::NotADirectory {
                path: path.to_string(),
            });
        }
        let limit = limit.clamp(1, MAX_READDIR) as usize;
        let lower = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after.to_owned())
        };
        let mut it = dir.children.range((lower, Bound::Unbounded));
        let entries: Vec<DirEntry> = it
            .by_ref()
            .take(limit)
            .map(|(name, &ino)| DirEntry {
                name: name.clone(),
                ino,
                kind: self.inodes[&ino].kind,
            })
            .collect();
        Ok((entries, it.next().is_some()))
    }

    /// Removes a file or an empty directory; returns what it was (a file's
    /// layout tells the caller which servers hold chunks to drop).
    pub fn unlink(&mut self, path: &FsPath) -> Result<Attr> {
        let (parent, name) = self.parent_of(path)?;
        let ino = self.resolve(path)?;
        let a = self.attr(ino)?;
        if a.kind == Kind::Dir && a.size > 0 {
            return Err(Error::NotEmpty {
                path: path.to_string(),
            });
        }
        self.commit(Op::Unlink {
            parent,
            name: name.to_owned(),
        })?;
        Ok(a)
    }

    /// Renames `from` to `to`, replacing a file (or an empty directory, for
    /// a directory) there; returns the replaced inode's attributes, whose
    /// chunks the caller drops.
    pub fn rename(&mut self, from: &FsPath, to: &FsPath) -> Result<Option<Attr>> {
        let (fp, fname) = self.parent_of(from)?;
        let src = self.resolve(from)?;
        let (tp, tname) = self.parent_of(to)?;
        let src_kind = self.inodes[&src].kind;
        // A directory cannot move into itself.
        let mut up = tp;
        while up != 0 {
            if up == src {
                return Err(Error::InvalidPath {
                    path: to.to_string(),
                    reason: crate::target::PATH_REASONS[6],
                });
            }
            up = self.inodes[&up].parent;
        }
        let replaced = match self.inodes[&tp].children.get(tname) {
            None => None,
            Some(&dst) if dst == src => return Ok(None),
            Some(&dst) => {
                let a = self.attr(dst)?;
                match (src_kind, a.kind) {
                    (Kind::File, Kind::Dir) => {
                        return Err(Error::IsADirectory {
                            path: to.to_string(),
                        })
                    }
                    (Kind::Dir, Kind::File) => {
                        return Err(Error::NotADirectory {
                            path: to.to_string(),
                        })
                    }
                    (Kind::Dir, Kind::Dir) if a.size > 0 => {
                        return Err(Error::NotEmpty {
                            path: to.to_string(),
                        })
                    }
                    _ => Some(a),
                }
            }
        };
        self.commit(Op::Rename {
            from_parent: fp,
            from_name: fname.to_owned(),
            to_parent: tp,
            to_name: tname.to_owned(),
        })?;
        Ok(replaced)
    }

    /// Sets a file's size; with `grow_only`, only if larger than now (what
    /// writers report after writing).
    pub fn set_size(&mut self, ino: u64, size: u64, grow_only: bool) -> Result<Attr> {
        let a = self.attr(ino)?;
        if a.kind == Kind::Dir {
            return Err(Error::IsADirectory {
                path: format!("#{ino}"),
            });
        }
        if size != a.size && !(grow_only && size < a.size) {
            self.commit(Op::SetSize { ino, size })?;
        }
        self.attr(ino)
    }

    /// `setstripe`: on a directory, sets the spec new entries inherit; on a
    /// missing path, creates an empty file with that layout; an existing
    /// file's layout is fixed ([`Error::LayoutFixed`]).
    pub fn set_stripe(&mut self, path: &FsPath, spec: LayoutSpec) -> Result<Attr> {
        spec.check()?;
        match self.resolve(path) {
            Ok(ino) if self.inodes[&ino].kind == Kind::Dir => {
                let spec = spec.inherit(self.inodes[&ino].spec);
                // Check it resolves on this file system before storing it.
                spec.resolve(self.servers, 0)?;
                self.commit(Op::SetSpec { ino, spec })?;
                self.attr(ino)
            }
            Ok(_) => Err(Error::LayoutFixed {
                path: path.to_string(),
            }),
            Err(Error::NotFound { .. }) => self.create(path, Some(spec), true),
            Err(e) => Err(e),
        }
    }

    /// Makes every change so far durable; writes a snapshot when the
    /// journal has grown past [`Meta::snapshot_after`].
    pub fn sync(&mut self) -> Result<()> {
        self.journal.sync()?;
        if self.journal.len() > self.snapshot_after {
            let state = self.save_state();
            self.journal.snapshot(&state)?;
        }
        Ok(())
    }

    /// The first half of a sync that leaves the namespace free: a handle
    /// to fsync without holding the [`Meta`] (so creates and lookups go on
    /// while the disk works); then [`Meta::finish_sync`].
    pub fn sync_handle(&self) -> Result<crate::journal::SyncHandle> {
        self.journal.sync_handle()
    }

    /// The second half of a sync after [`Meta::sync_handle`]'s fsync: a
    /// snapshot if the journal has grown past [`Meta::snapshot_after`].
    pub fn finish_sync(&mut self) -> Result<()> {
        if self.journal.len() > self.snapshot_after {
            self.journal.sync()?;
            let state = self.save_state();
            self.journal.snapshot(&state)?;
        }
        Ok(())
    }

    /// The next inode number, always one below a reservation known to be
    /// durable. Half-way through a reservation the next one is journaled
    /// and fsynced on a thread of its own (the namespace lock is not held
    /// over the disk: creates go on meanwhile); only when the durable
    /// numbers run out before that fsync is done (or it failed) does a
    /// create wait for the fsync itself.
    fn alloc_ino(&mut self) -> Result<u64> {
        let durable = self.durable.load(Ordering::Acquire);
        if self.next_ino >= durable {
            if self.reserved <= self.next_ino {
                let upto = self.next_ino + INODE_BATCH;
                self.commit(Op::Reserve { upto })?;
            }
            self.journal.sync()?;
            self.durable.fetch_max(self.reserved, Ordering::AcqRel);
        } else if durable - self.next_ino <= INODE_BATCH / 2
            && self.reserved == durable
            && !self.refilling.swap(true, Ordering::AcqRel)
        {
            let upto = durable + INODE_BATCH;
            let handle = self
                .commit(Op::Reserve { upto })
                .and_then(|()| self.journal.sync_handle());
            match handle {
                Ok(h) => {
                    let (d, busy) = (self.durable.clone(), self.refilling.clone());
                    let spawned = std::thread::Builder::new()
                        .name("dosfs-reserve".into())
                        .spawn(move || {
                            if h.sync().is_ok() {
                                d.fetch_max(upto, Ordering::AcqRel);
                            }
                            busy.store(false, Ordering::Release);
                        });
                    if spawned.is_err() {
                        self.refilling.store(false, Ordering::Release);
                    }
                }
                // Not fatal for this create: its number is durable already.
                Err(_) => self.refilling.store(false, Ordering::Release),
            }
        }
        Ok(self.next_ino)
    }

    /// Journals `op`, then applies it.
    fn commit(&mut self, op: Op) -> Result<()> {
        self.journal.append(&op.encode())?;
        self.apply(op)
    }

    /// Applies one change; the same code runs live and at replay.
    fn apply(&mut self, op: Op) -> Result<()> {
        let missing = || Error::protocol("journal names a missing inode");
        match op {
            Op::Mkdir {
                parent,
                name,
                ino,
                spec,
            } => {
                self.link(parent, &name, ino)?;
                self.inodes.insert(ino, Inode::dir(parent, name, spec));
                self.next_ino = self.next_ino.max(ino + 1);
            }
            Op::Create {
                parent,
                name,
                ino,
                layout,
            } => {
                self.link(parent, &name, ino)?;
                self.inodes.insert(ino, Inode::file(parent, name, layout));
                self.next_ino = self.next_ino.max(ino + 1);
            }
            Op::Unlink { parent, name } => {
                let dir = self.inodes.get_mut(&parent).ok_or_else(missing)?;
                let ino = dir.children.remove(&name).ok_or_else(missing)?;
                self.drop_tree(ino);
            }
            Op::Rename {
                from_parent,
                from_name,
                to_parent,
                to_name,
            } => {
                let fdir = self.inodes.get_mut(&from_parent).ok_or_else(missing)?;
                let ino = fdir.children.remove(&from_name).ok_or_else(missing)?;
                let tdir = self.inodes.get_mut(&to_parent).ok_or_else(missing)?;
                if let Some(old) = tdir.children.insert(to_name.clone(), ino) {
                    self.drop_tree(old);
                }
                let i = self.inodes.get_mut(&ino).ok_or_else(missing)?;
                i.parent = to_parent;
                i.name = to_name;
            }
            Op::SetSize { ino, size } => {
                self.inodes.get_mut(&ino).ok_or_else(missing)?.size = size;
            }
            Op::SetSpec { ino, spec } => {
                self.inodes.get_mut(&ino).ok_or_else(missing)?.spec = spec;
            }
            Op::Reserve { upto } => {
                self.reserved = self.reserved.max(upto);
            }
        }
        Ok(())
    }

    fn link(&mut self, parent: u64, name: &str, ino: u64) -> Result<()> {
        if self.inodes.contains_key(&ino) {
            return Err(Error::protocol("journal reuses an inode number"));
        }
        let dir = self
            .inodes
            .get_mut(&parent)
            .filter(|d| d.kind == Kind::Dir)
            .ok_or_else(|| Error::protocol("journal names a missing directory"))?;
        if dir.children.insert(name.to_owned(), ino).is_some() {
            return Err(Error::protocol("journal creates an existing name"));
        }
        Ok(())
    }

    fn drop_tree(&mut self, ino: u64) {
        if let Some(i) = self.inodes.remove(&ino) {
            for (_, c) in i.children {
                self.drop_tree(c);
            }
        }
    }

    /// The whole namespace as a snapshot payload: the next inode number,
    /// then every inode with its parent and name, parents before children.
    fn save_state(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.next_ino.max(self.reserved))
            .u64(self.inodes.len() as u64);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            let i = &self.inodes[&ino];
            w.u64(ino)
                .u64(i.parent)
                .bytes16(i.name.as_bytes())
                .u8(i.kind.byte())
                .u64(i.size);
            match i.layout {
                Some(l) => put_layout(&mut w, &l),
                None => put_spec(&mut w, &i.spec),
            }
            stack.extend(i.children.values().copied());
        }
        w.into_vec()
    }

    fn load_state(&mut self, b: &[u8]) -> Result<()> {
        let mut r = Reader::new(b);
        let t = |e: dos_transport::codec::CodecError| Error::protocol(e.reason());
        self.next_ino = r.u64().map_err(t)?;
        self.reserved = self.next_ino;
        let n = r.u64().map_err(t)?;
        self.inodes.clear();
        for _ in 0..n {
            let ino = r.u64().map_err(t)?;
            let parent = r.u64().map_err(t)?;
            let name = dos_transport::codec::utf8(r.bytes16().map_err(t)?)
                .map_err(t)?
                .to_owned();
            let kind =
                Kind::from_byte(r.u8().map_err(t)?).ok_or_else(|| Error::protocol("bad kind"))?;
            let size = r.u64().map_err(t)?;
            let mut i = match kind {
                Kind::File => Inode::file(parent, name.clone(), get_layout(&mut r)?),
                Kind::Dir => Inode::dir(parent, name.clone(), get_spec(&mut r)?),
            };
            i.size = size;
            if ino == ROOT {
                self.inodes.insert(ino, i);
            } else {
                self.link(parent, &name, ino)?;
                self.inodes.insert(ino, i);
            }
        }
        r.end().map_err(t)?;
        if !self.inodes.contains_key(&ROOT) {
            return Err(Error::protocol("snapshot without a root"));
        }
        Ok(())
    }
}

impl Inode {
    fn dir(parent: u64, name: String, spec: LayoutSpec) -> Inode {
        Inode {
            parent,
            name,
            kind: Kind::Dir,
            size: 0,
            layout: None,
            spec,
            children: BTreeMap::new(),
        }
    }

    fn file(parent: u64, name: String, layout: Layout) -> Inode {
        Inode {
            parent,
            name,
            kind: Kind::File,
            size: 0,
            layout: Some(layout),
            spec: LayoutSpec::default(),
            children: BTreeMap::new(),
        }
    }
}

/// The first `k` names of `p` as a path, for error messages.
fn prefix(p: &FsPath, k: usize) -> String {
    let mut s = String::new();
    for n in &p.names()[..k] {
        s.push('/');
        s.push_str(n);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
