//! The mount's bookkeeping, without I/O: which name each inode the kernel
//! knows was found under ([`Names`]), and the write-behind buffer of an open
//! file ([`WriteBuf`]).

use std::collections::HashMap;

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
