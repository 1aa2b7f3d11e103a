//! The mount's bookkeeping, without I/O: which name each inode the kernel
//! knows was found under ([`Names`]), the directory listings that answer
//! lookups of missing names ([`Listings`]), and the write-behind buffer of
//! an open file ([`WriteBuf`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::meta::ROOT;
use crate::target::FsPath;

/// Where an inode was found: its directory and its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    parent: u64,
    name: String,
    /// The kernel's lookup count (entries replied minus forgotten).
    lookups: u64,
}

/// The inodes the kernel holds, each with the (directory, name) it was
/// last seen under, so a dosfs path can be built for the namespace requests
/// (which name paths) and for error messages.
///
/// An entry lives while the kernel's lookup count of it is above zero
/// ([`Names::forget`]); the root is always there. dosfs has no hard links,
/// so every inode has one name.
#[derive(Debug, Default)]
pub struct Names {
    map: HashMap<u64, Name>,
}

impl Names {
    /// An empty table (the root is implicit).
    pub fn new() -> Names {
        Names::default()
    }

    /// The kernel was handed `ino` as `name` in `parent` (lookup, create,
    /// mkdir): counts one lookup and records the name.
    pub fn entered(&mut self, parent: u64, name: &str, ino: u64) {
        if ino == ROOT {
            return;
        }
        let e = self.map.entry(ino).or_insert_with(|| Name {
            parent,
            name: String::new(),
            lookups: 0,
        });
        e.parent = parent;
        name.clone_into(&mut e.name);
        e.lookups += 1;
    }

    /// The kernel's lookup count of `ino` (0: the kernel holds no inode
    /// for it, so the next entry replied makes a new one).
    pub fn lookups(&self, ino: u64) -> u64 {
        self.map.get(&ino).map_or(0, |e| e.lookups)
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(e) = self.map.get_mut(&ino) {
            e.lookups = e.lookups.saturating_sub(n);
            if e.lookups == 0 {
                self.map.remove(&ino);
            }
        }
    }

    /// `ino` was renamed to `name` in `parent` (its lookups stay).
    pub fn renamed(&mut self, ino: u64, parent: u64, name: &str) {
        if let Some(e) = self.map.get_mut(&ino) {
            e.parent = parent;
            name.clone_into(&mut e.name);
        }
    }

    /// `ino` was removed (or replaced by a rename): it has no name now,
    /// and a request naming it as a directory fails.
    pub fn removed(&mut self, ino: u64) {
        self.map.remove(&ino);
    }

    /// The parent directory of `ino` (the root's is the root), if known.
    pub fn parent(&self, ino: u64) -> Option<u64> {
        if ino == ROOT {
            return Some(ROOT);
        }
        self.map.get(&ino).map(|e| e.parent)
    }

    /// The dosfs path of `ino`; [`Error::NotFound`] (`#ino`) when the
    /// kernel names an inode this table does not hold or a cycle.
    pub fn path(&self, ino: u64) -> Result<FsPath> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let e = self.map.get(&cur).filter(|_| names.len() <= 4096);
            let Some(e) = e else {
                return Err(Error::NotFound {
                    path: format!("#{ino}"),
                });
            };
            names.push(e.name.as_str());
            cur = e.parent;
        }
        let mut p = FsPath::root();
        for n in names.iter().rev() {
            p = p.join(n)?;
        }
        Ok(p)
    }

    /// The path of `name` in directory `parent`.
    pub fn child(&self, parent: u64, name: &str) -> Result<FsPath> {
        self.path(parent)?.join(name)
    }

    /// Inodes held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Most directories with a listing kept at once ([`Listings`]).
pub const LISTINGS_MAX: usize = 64;

/// One directory's names as of a listing, and the names this mount added
/// to it since.
#[derive(Debug)]
struct Listing {
    /// `None`: no usable listing (too large, or being fetched).
    names: Option<HashSet<String>>,
    /// Until when `names` (or the verdict "too large") holds.
    until: Instant,
    /// A fetch is running: names added meanwhile, merged when it lands.
    fetching: Option<Vec<String>>,
}

/// Directory listings that answer the kernel's lookups of names that do
/// not exist without asking the metadata server.
///
/// A create through FUSE is a lookup of the new name (which finds nothing),
/// then the create: two metadata requests. After a lookup that found
/// nothing in directory `d`, the mount fetches `d`'s listing (one readdir
/// page, only for directories of at most one page); for the next `ttl`
/// (the mount's name-cache time) a lookup in `d` of a name that is not in
/// the listing is answered "no such entry" at once. Names this mount
/// creates, makes or renames into `d` are added to the listing (also while
/// a fetch is running: [`Listings::fetched`] merges them), so the mount
/// never denies a name it made itself. A name another client makes in `d`
/// is seen once the listing expires, at most `ttl` later: the same bound
/// as names already cached (a name another client removed stays visible for
/// up to the same time). A create is always decided by the metadata server,
/// so `O_CREAT|O_EXCL` of a name another client made meanwhile still fails
/// with EEXIST, and `O_CREAT` opens the existing file.
#[derive(Debug)]
pub struct Listings {
    dirs: HashMap<u64, Listing>,
    ttl: Duration,
}

impl Listings {
    /// Listings valid for `ttl` (zero: none are kept).
    pub fn new(ttl: Duration) -> Listings {
        Listings {
            dirs: HashMap::new(),
            ttl,
        }
    }

    /// Whether `name` is known missing from directory `dir` at `now`.
    pub fn absent(&self, dir: u64, name: &str, now: Instant) -> bool {
        match self.dirs.get(&dir) {
            Some(Listing {
                names: Some(names),
                until,
                ..
            }) => now < *until && !names.contains(name),
            _ => false,
        }
    }

    /// Whether a listing of `dir` should be fetched at `now` (none is
    /// valid and none is being fetched); if so, the fetch is registered and
    /// must end with [`Listings::fetched`].
    pub fn start_fetch(&mut self, dir: u64, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        if let Some(l) = self.dirs.get_mut(&dir) {
            if l.fetching.is_some() || now < l.until {
                return false;
            }
            l.names = None;
            l.fetching = Some(Vec::new());
            return true;
        }
        if self.dirs.len() >= LISTINGS_MAX {
            self.dirs
                .retain(|_, l| l.fetching.is_some() || now < l.until);
            if self.dirs.len() >= LISTINGS_MAX {
                return false;
            }
        }
        self.dirs.insert(
            dir,
            Listing {
                names: None,
                until: now,
                fetching: Some(Vec::new()),
            },
        );
        true
    }

    /// The fetch of `dir` that started at `started` ended: `names` is the
    /// whole directory, or `None` if it could not be listed in one page
    /// (then no listing is kept for `ttl`) or the fetch failed (then none
    /// is kept, and the next lookup may try again).
    pub fn fetched(
        &mut self,
        dir: u64,
        names: Option<HashSet<String>>,
        failed: bool,
        started: Instant,
    ) {
        let Some(l) = self.dirs.get_mut(&dir) else {
            return;
        };
        let added = l.fetching.take().unwrap_or_default();
        if failed {
            l.names = None;
            l.until = started;
            return;
        }
        l.names = names.map(|mut n| {
            n.extend(added);
            n
        });
        // Valid from when the listing was asked for.
        l.until = started + self.ttl;
    }

    /// This mount made `name` in `dir` (create, mkdir, rename target).
    pub fn added(&mut self, dir: u64, name: &str) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            if let Some(n) = &mut l.names {
                n.insert(name.to_owned());
            }
            if let Some(f) = &mut l.fetching {
                f.push(name.to_owned());
            }
        }
    }

    /// This mount removed `name` from `dir` (unlink, rmdir, rename source).
    pub fn removed(&mut self, dir: u64, name: &str) {
        if let Some(Listing { names: Some(n), .. }) = self.dirs.get_mut(&dir) {
            n.remove(name);
        }
    }

    /// Directory `dir` is gone: its listing too.
    pub fn drop_dir(&mut self, dir: u64) {
        self.dirs.remove(&dir);
    }
}

/// What [`WriteBuf::push`] decided for one write.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Taken into the buffer; nothing to send yet.
    Buffered,
    /// Taken; the buffer is full: send it ([`WriteBuf::take`]).
    Full,
    /// Not taken (not contiguous, or would overflow): send the buffer
    /// first, then push again.
    FlushFirst,
    /// Not taken: a large write with an empty buffer goes straight to the
    /// servers.
    Direct,
}

/// The write-behind buffer of an open file: contiguous small writes are
/// gathered into one large write (up to `cap` bytes, a stripe row), so a
/// program writing 4 KiB at a time still sends the servers stripe-sized
/// requests to every server at once.
#[derive(Debug)]
pub struct WriteBuf {
    off: u64,
    data: Vec<u8>,
    cap: usize,
}

impl WriteBuf {
    /// An empty buffer of at most `cap` (at least 1) bytes.
    pub fn new(cap: usize) -> WriteBuf {
        WriteBuf {
            off: 0,
            data: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// Offers a write of `data` at `off`.
    pub fn push(&mut self, off: u64, data: &[u8]) -> Push {
        if self.data.is_empty() {
            if data.len() >= self.cap {
                return Push::Direct;
            }
            self.off = off;
        } else if off != self.off + self.data.len() as u64
            || self.data.len() + data.len() > self.cap
        {
            return Push::FlushFirst;
        }
        if self.data.capacity() < self.cap {
            self.data.reserve_exact(self.cap - self.data.len());
        }
        self.data.extend_from_slice(data);
        if self.data.len() >= self.cap {
            Push::Full
        } else {
            Push::Buffered
        }
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The file offset after the buffered bytes (the file's size is at
    /// least this while they are buffered); 0 when nothing is.
    pub fn end(&self) -> u64 {
        if self.data.is_empty() {
            0
        } else {
            self.off + self.data.len() as u64
        }
    }

    /// The buffered bytes and their offset, leaving the buffer empty (its
    /// memory is kept for the next ones).
    pub fn take(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data);
        Some((self.off, data))
    }

    /// Hands back a vector from [`WriteBuf::take`] so its memory is reused.
    pub fn recycle(&mut self, mut v: Vec<u8>) {
        if self.data.is_empty() && v.capacity() >= self.cap {
            v.clear();
            self.data = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn listings_answer_missing_names_within_their_time_only() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(1);
        let mut l = Listings::new(ttl);
        assert!(!l.absent(5, "x", t0), "nothing is known before a listing");
        assert!(l.start_fetch(5, t0));
        assert!(!l.start_fetch(5, t0), "one fetch at a time");
        assert!(!l.absent(5, "x", t0), "nothing is known while fetching");
        l.fetched(5, Some(["a".to_owned()].into_iter().collect()), false, t0);
        assert!(l.absent(5, "x", t0));
        assert!(!l.absent(5, "a", t0), "a listed name goes to the server");
        assert!(!l.absent(6, "x", t0), "another directory");
        assert!(!l.start_fetch(5, t0 + ttl / 2), "still valid");
        // Expired: nothing is known, and a new fetch may start.
        assert!(!l.absent(5, "x", t0 + ttl));
        assert!(l.start_fetch(5, t0 + ttl));
    }

    #[test]
    fn names_this_mount_adds_are_never_denied_even_during_a_fetch() {
        let t0 = Instant::now();
        let mut l = Listings::new(Duration::from_secs(1));
        assert!(l.start_fetch(5, t0));
        // Made while the listing was in flight, and so missing from it.
        l.added(5, "made");
        l.fetched(5, Some(HashSet::new()), false, t0);
        assert!(!l.absent(5, "made", t0));
        assert!(l.absent(5, "other", t0));
        l.added(5, "later");
        assert!(!l.absent(5, "later", t0));
        l.removed(5, "later");
        assert!(l.absent(5, "later", t0));
        l.drop_dir(5);
        assert!(!l.absent(5, "other", t0));
    }

    #[test]
    fn too_large_failed_and_disabled_listings_answer_nothing() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(1);
        let mut l = Listings::new(ttl);
        assert!(l.start_fetch(5, t0));
        l.fetched(5, None, false, t0);
        assert!(!l.absent(5, "x", t0));
        assert!(
            !l.start_fetch(5, t0),
            "a too-large directory is not listed again at once"
        );
        assert!(l.start_fetch(6, t0));
        l.fetched(6, Some(HashSet::new()), true, t0);
        assert!(!l.absent(6, "x", t0));
        assert!(l.start_fetch(6, t0), "a failed fetch may be tried again");
        let mut off = Listings::new(Duration::ZERO);
        assert!(!off.start_fetch(5, t0));
        // Bounded: at most LISTINGS_MAX directories at once.
        let mut many = Listings::new(ttl);
        for d in 0..LISTINGS_MAX as u64 {
            assert!(many.start_fetch(d, t0));
            many.fetched(d, Some(HashSet::new()), false, t0);
        }
        assert!(!many.start_fetch(1000, t0));
        assert!(many.start_fetch(1000, t0 + ttl), "expired ones make room");
    }

    #[test]
    fn paths_follow_renames_and_forgets() {
        let mut n = Names::new();
        n.entered(ROOT, "a", 2);
        n.entered(2, "b", 3);
        n.entered(3, "f", 4);
        assert_eq!(n.path(4).unwrap().to_string(), "/a/b/f");
        assert_eq!(n.path(ROOT).unwrap().to_string(), "/");
        assert_eq!(n.child(3, "g").unwrap().to_string(), "/a/b/g");
        // Moving a directory moves everything below it.
        n.renamed(3, ROOT, "c");
        assert_eq!(n.path(4).unwrap().to_string(), "/c/f");
        assert_eq!(n.parent(4), Some(3));
        n.entered(5, "gone", 6);
        n.removed(6);
        assert!(n.path(6).is_err());
        n.forget(6, 1);
        n.entered(3, "f", 4);
        n.forget(4, 1);
        assert!(n.path(4).is_ok());
        n.forget(4, 1);
        assert!(matches!(n.path(4), Err(Error::NotFound { .. })));
        assert!(matches!(n.path(99), Err(Error::NotFound { .. })));
        assert!(n.child(3, "..").is_err());
    }

    #[test]
    fn a_cycle_is_not_found_not_a_hang() {
        let mut n = Names::new();
        n.entered(3, "x", 2);
        n.entered(2, "y", 3);
        assert!(matches!(n.path(2), Err(Error::NotFound { .. })));
    }

    proptest! {
        /// Against a model (a sparse file of bytes): any sequence of writes
        /// through the buffer, sending what it says to send, gives the same
        /// file as writing each directly, and nothing buffered exceeds cap.
        #[test]
        fn write_buffer_matches_direct_writes(cap in 1usize..64, writes in proptest::collection::vec((0u64..200, 0usize..80, any::<u8>()), 0..40)) {
            let mut model = vec![0u8; 400];
            let mut got = vec![0u8; 400];
            let sent = |file: &mut Vec<u8>, off: u64, d: &[u8]| {
                file[off as usize..off as usize + d.len()].copy_from_slice(d);
            };
            let mut b = WriteBuf::new(cap);
            for (off, len, byte) in writes {
                let data = vec![byte; len];
                sent(&mut model, off, &data);
                loop {
                    match b.push(off, &data) {
                        Push::Buffered => break,
                        Push::Full => {
                            let (o, d) = b.take().unwrap();
                            prop_assert!(d.len() <= cap);
                            sent(&mut got, o, &d);
                            b.recycle(d);
                            break;
                        }
                        Push::FlushFirst => {
                            let (o, d) = b.take().unwrap();
                            sent(&mut got, o, &d);
                        }
                        Push::Direct => {
                            prop_assert!(b.is_empty());
                            sent(&mut got, off, &data);
                            break;
                        }
                    }
                }
            }
            if let Some((o, d)) = b.take() {
                sent(&mut got, o, &d);
            }
            prop_assert_eq!(b.end(), 0);
            prop_assert_eq!(got, model);
        }
    }
}
