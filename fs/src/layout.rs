//! RAID-0 file layouts and their arithmetic.
//!
//! A file is cut into *stripes* of `stripe_size` bytes; stripe `s` (counted
//! from 0 at file offset 0) lives on server
//! `(first + s % stripe_count) % servers`, where `servers` is the number of
//! servers of the file system. Each server stores each of its stripes as one
//! *chunk* named by (inode, stripe) (see [`crate::chunk`]), so the stripe
//! index is also the chunk's name and no per-server object offset is needed
//! on the wire; [`Layout::object_offset`] gives it for accounting.
//!
//! A read or write of `len` bytes at `offset` becomes a list of [`Piece`]s,
//! each inside one stripe, in file order; [`Layout::pieces`] computes them
//! and [`Layout::file_offset`] maps a piece back.
//!
//! ## Defaults
//! [`DEFAULT_STRIPE_SIZE`] is 1 MiB and the default count is *all servers*
//! ([`LayoutSpec::ALL`]), as in a BeeOND/GekkoFS file system started on a
//! job's own nodes: the point of such a file system is that bandwidth grows
//! with the nodes, so a file uses every node's disk unless told otherwise.
//! 1 MiB is Lustre's default and the transfer size of the issue's
//! benchmarks: large enough that a request's fixed costs (a round trip, a
//! checksum, a rename at sync) are small against its data, small enough that
//! a 2-rank, 64 MiB-per-rank write spreads over every server. BeeGFS's
//! 512 KiB x 4 fits a standing file system shared by many jobs, which this is
//! not (yet).
//!
//! ```
//! use dos_fs::layout::Layout;
//! let l = Layout::new(4096, 3, 1, 4).unwrap(); // 4 KiB stripes over servers 1, 2, 3
//! let p: Vec<_> = l.pieces(4000, 200).unwrap().collect();
//! assert_eq!(p.len(), 2); // 96 bytes in stripe 0, 104 in stripe 1
//! assert_eq!((p[0].server, p[0].stripe, p[0].offset, p[0].len), (1, 0, 4000, 96));
//! assert_eq!((p[1].server, p[1].stripe, p[1].offset, p[1].len), (2, 1, 0, 104));
//! assert_eq!(l.file_offset(p[1].stripe, p[1].offset), 4096);
//! ```

use crate::error::{Error, Result};

/// The default stripe size: 1 MiB (see the module docs for why).
pub const DEFAULT_STRIPE_SIZE: u32 = 1 << 20;
/// The smallest stripe size a user may set (one page).
pub const MIN_STRIPE_SIZE: u32 = 4096;
/// The largest stripe size (a chunk must fit in one wire message).
pub const MAX_STRIPE_SIZE: u32 = 64 << 20;

/// A file's RAID-0 layout, fixed when the file is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Bytes per stripe.
    pub stripe_size: u32,
    /// How many servers the file is striped over (`1..=servers`).
    pub stripe_count: u32,
    /// The server holding stripe 0.
    pub first: u32,
    /// The number of servers of the file system when the file was created.
    pub servers: u32,
}

impl Layout {
    /// A layout; fails unless `1 <= stripe_size <= MAX_STRIPE_SIZE`,
    /// `1 <= stripe_count <= servers` and `first < servers`.
    ///
    /// Any stripe size of at least one byte is valid arithmetic; the policy
    /// minimum for users, [`MIN_STRIPE_SIZE`], is checked by [`LayoutSpec::resolve`].
    pub fn new(stripe_size: u32, stripe_count: u32, first: u32, servers: u32) -> Result<Layout> {
        let bad = |reason: String| Err(Error::InvalidLayout { reason });
        if stripe_size == 0 || stripe_size > MAX_STRIPE_SIZE {
            return bad(format!(
                "stripe size {stripe_size} is not in 1..={MAX_STRIPE_SIZE}"
            ));
        }
        if servers == 0 {
            return bad("a file system has at least one server".into());
        }
        if stripe_count == 0 || stripe_count > servers {
            return bad(format!(
                "stripe count {stripe_count} is not in 1..={servers} (the number of servers)"
            ));
        }
        if first >= servers {
            return bad(format!(
                "first server {first} is not below the number of servers {servers}"
            ));
        }
        Ok(Layout {
            stripe_size,
            stripe_count,
            first,
            servers,
        })
    }

    /// The server holding stripe `stripe`.
    pub fn server_of(&self, stripe: u64) -> u32 {
        let slot = (stripe % u64::from(self.stripe_count)) as u32;
        ((u64::from(self.first) + u64::from(slot)) % u64::from(self.servers)) as u32
    }

    /// The servers the file uses, in stripe order (stripe 0's first).
    pub fn server_list(&self) -> impl Iterator<Item = u32> + '_ {
        (0..u64::from(self.stripe_count)).map(|s| self.server_of(s))
    }

    /// The stripe holding file offset `off`, and the offset inside it.
    pub fn stripe_of(&self, off: u64) -> (u64, u32) {
        let ss = u64::from(self.stripe_size);
        (off / ss, (off % ss) as u32)
    }

    /// The file offset of byte `offset` of stripe `stripe` (saturating at
    /// `u64::MAX` for stripes past the largest file).
    pub fn file_offset(&self, stripe: u64, offset: u32) -> u64 {
        stripe
            .saturating_mul(u64::from(self.stripe_size))
            .saturating_add(u64::from(offset))
    }

    /// The offset of byte `offset` of stripe `stripe` in its server's share of
    /// the file (as if the server's stripes were stored end to end, Lustre's
    /// object offset).
    pub fn object_offset(&self, stripe: u64, offset: u32) -> u64 {
        (stripe / u64::from(self.stripe_count))
            .saturating_mul(u64::from(self.stripe_size))
            .saturating_add(u64::from(offset))
    }

    /// How many bytes of a file of `size` bytes server `server` holds.
    pub fn bytes_on(&self, server: u32, size: u64) -> u64 {
        let ss = u64::from(self.stripe_size);
        let full = size / ss;
        let tail = size % ss;
        let count = u64::from(self.stripe_count);
        // Which slot (0..count) the server has, if any.
        let slot = (0..self.stripe_count).find(|&k| self.server_of(u64::from(k)) == server);
        let Some(slot) = slot else { return 0 };
        let slot = u64::from(slot);
        // Full stripes s < full with s % count == slot.
        let n_full = full / count + u64::from(full % count > slot);
        let mut bytes = n_full * ss;
        if tail > 0 && full % count == slot {
            bytes += tail;
        }
        bytes
    }

    /// The pieces of the byte range `offset..offset + len`, one per stripe
    /// touched, in file order; fails if the range overflows `u64`.
    pub fn pieces(&self, offset: u64, len: u64) -> Result<Pieces> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::InvalidLayout {
                reason: format!("range {offset} + {len} overflows"),
            })?;
        Ok(Pieces {
            layout: *self,
            pos: offset,
            start: offset,
            end,
        })
    }
}

/// A part of a byte range that lies in one stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The server holding the stripe.
    pub server: u32,
    /// The stripe (its index in the file, and the chunk's name).
    pub stripe: u64,
    /// The offset inside the stripe.
    pub offset: u32,
    /// The length (at most the stripe size).
    pub len: u32,
    /// Where the piece starts in the caller's buffer (its distance from the
    /// start of the range).
    pub buf_offset: u64,
}

/// The iterator of [`Layout::pieces`].
#[derive(Debug, Clone)]
pub struct Pieces {
    layout: Layout,
    pos: u64,
    start: u64,
    end: u64,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.pos >= self.end {
            return None;
        }
        let (stripe, offset) = self.layout.stripe_of(self.pos);
        let room = u64::from(self.layout.stripe_size - offset);
        let len = room.min(self.end - self.pos) as u32;
        let p = Piece {
            server: self.layout.server_of(stripe),
            stripe,
            offset,
            len,
            buf_offset: self.pos - self.start,
        };
        self.pos += u64::from(len);
        Some(p)
    }
}

/// A layout as asked for (by `setstripe` or a directory default): each field
/// may be left to the default, and the count may be "all servers".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutSpec {
    /// Bytes per stripe; 0 for the default.
    pub stripe_size: u32,
    /// Servers per file; 0 for the default, [`LayoutSpec::ALL`] for all.
    pub stripe_count: u32,
    /// The first server; [`LayoutSpec::ANY`] to let the file system choose.
    pub first: u32,
}

impl Default for LayoutSpec {
    /// Every field unset (inherits everything).
    fn default() -> LayoutSpec {
        LayoutSpec {
            stripe_size: 0,
            stripe_count: 0,
            first: LayoutSpec::ANY,
        }
    }
}

impl LayoutSpec {
    /// A count meaning "every server" (`lfs setstripe -c -1`).
    pub const ALL: u32 = u32::MAX;
    /// A first server meaning "the file system chooses" (spread by inode).
    pub const ANY: u32 = u32::MAX;

    /// The default: 1 MiB stripes over every server, first server chosen.
    pub const DEFAULT: LayoutSpec = LayoutSpec {
        stripe_size: DEFAULT_STRIPE_SIZE,
        stripe_count: LayoutSpec::ALL,
        first: LayoutSpec::ANY,
    };

    /// Fills the unset fields of `self` from `parent`.
    pub fn inherit(self, parent: LayoutSpec) -> LayoutSpec {
        LayoutSpec {
            stripe_size: if self.stripe_size == 0 {
                parent.stripe_size
            } else {
                self.stripe_size
            },
            stripe_count: if self.stripe_count == 0 {
                parent.stripe_count
            } else {
                self.stripe_count
            },
            first: if self.first == LayoutSpec::ANY {
                parent.first
            } else {
                self.first
            },
        }
    }

    /// Checks a spec a user asked for, before it is stored on a directory.
    pub fn check(&self) -> Result<()> {
        let ss = self.stripe_size;
        if ss != 0
            && (!(MIN_STRIPE_SIZE..=MAX_STRIPE_SIZE).contains(&ss) || ss % MIN_STRIPE_SIZE != 0)
        {
            return Err(Error::InvalidLayout {
                reason: format!(
                    "stripe size {ss} must be a multiple of {MIN_STRIPE_SIZE} in {MIN_STRIPE_SIZE}..={MAX_STRIPE_SIZE}"
                ),
            });
        }
        Ok(())
    }

    /// The layout of a new file with inode `ino` on a file system of
    /// `servers` servers: unset fields take the defaults, "all" becomes
    /// `servers`, a count above `servers` is clamped to it, and an unchosen
    /// first server is `ino % servers` (spreading files' first stripes).
    pub fn resolve(self, servers: u32, ino: u64) -> Result<Layout> {
        self.check()?;
        let s = self.inherit(LayoutSpec::DEFAULT);
        let count = if s.stripe_count == LayoutSpec::ALL {
            servers
        } else {
            s.stripe_count.min(servers)
        };
        let first = if s.first == LayoutSpec::ANY {
            (ino % u64::from(servers.max(1))) as u32
        } else {
            s.first
        };
        Layout::new(s.stripe_size, count, first, servers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invalid_layouts_are_refused() {
        assert!(Layout::new(0, 1, 0, 1).is_err());
        assert!(Layout::new(MAX_STRIPE_SIZE + 1, 1, 0, 1).is_err());
        assert!(Layout::new(4096, 0, 0, 1).is_err());
        assert!(Layout::new(4096, 3, 0, 2).is_err());
        assert!(Layout::new(4096, 1, 2, 2).is_err());
        assert!(Layout::new(4096, 1, 0, 0).is_err());
        assert!(Layout::new(1, 2, 1, 2).is_ok());
    }

    #[test]
    fn spec_resolution() {
        let l = LayoutSpec::default().resolve(3, 7).unwrap();
        assert_eq!(l, Layout::new(DEFAULT_STRIPE_SIZE, 3, 1, 3).unwrap());
        let s = LayoutSpec {
            stripe_size: 65536,
            stripe_count: 8,
            first: 0,
        };
        assert_eq!(
            s.resolve(4, 9).unwrap(),
            Layout::new(65536, 4, 0, 4).unwrap()
        );
        let bad = LayoutSpec {
            stripe_size: 1000,
            ..LayoutSpec::default()
        };
        assert!(bad.resolve(4, 0).is_err());
        let child = LayoutSpec {
            stripe_count: 2,
            ..LayoutSpec::default()
        };
        let dir = LayoutSpec {
            stripe_size: 8192,
            stripe_count: 1,
            first: 1,
        };
        assert_eq!(
            child.inherit(dir),
            LayoutSpec {
                stripe_size: 8192,
                stripe_count: 2,
                first: 1
            }
        );
        let first_too_big = LayoutSpec {
            first: 5,
            ..LayoutSpec::default()
        };
        assert!(first_too_big.resolve(2, 0).is_err());
    }

    #[test]
    fn overflowing_range_is_refused() {
        let l = Layout::new(4096, 1, 0, 1).unwrap();
        assert!(l.pieces(u64::MAX, 2).is_err());
        assert_eq!(l.pieces(u64::MAX - 1, 1).unwrap().count(), 1);
        assert_eq!(l.pieces(5, 0).unwrap().count(), 0);
    }

    fn layout() -> impl Strategy<Value = Layout> {
        (1u32..9, 1u32..300, 0u32..9).prop_flat_map(|(servers, ss, f)| {
            (1..=servers)
                .prop_map(move |count| Layout::new(ss, count, f % servers, servers).unwrap())
        })
    }

    proptest! {
        /// Against a byte-by-byte serial model: every byte of the range is in
        /// exactly one piece, in order, on the right server and stripe, and
        /// maps back to its file offset; pieces are maximal.
        #[test]
        fn pieces_match_serial_model(l in layout(), offset in 0u64..5000, len in 0u64..3000) {
            let pieces: Vec<Piece> = l.pieces(offset, len).unwrap().collect();
            let mut next_buf = 0u64;
            for p in &pieces {
                prop_assert_eq!(p.buf_offset, next_buf);
                prop_assert!(p.len >= 1 && p.len <= l.stripe_size);
                prop_assert!(u64::from(p.offset) + u64::from(p.len) <= u64::from(l.stripe_size));
                for i in 0..u64::from(p.len) {
                    let file_off = offset + p.buf_offset + i;
                    // The model: one byte at a time.
                    let stripe = file_off / u64::from(l.stripe_size);
                    let in_stripe = file_off % u64::from(l.stripe_size);
                    let server = (l.first as u64 + stripe % l.stripe_count as u64) % l.servers as u64;
                    prop_assert_eq!(p.stripe, stripe);
                    prop_assert_eq!(u64::from(p.offset) + i, in_stripe);
                    prop_assert_eq!(u64::from(p.server), server);
                    prop_assert_eq!(l.file_offset(p.stripe, p.offset) + i, file_off);
                }
                next_buf += u64::from(p.len);
            }
            prop_assert_eq!(next_buf, len);
            // Maximal: consecutive pieces meet at a stripe boundary.
            for w in pieces.windows(2) {
                prop_assert_eq!(w[0].offset + w[0].len, l.stripe_size);
                prop_assert_eq!(w[1].offset, 0);
                prop_assert_eq!(w[1].stripe, w[0].stripe + 1);
            }
        }

        /// Per-server byte counts and object offsets agree with the model.
        #[test]
        fn bytes_on_and_object_offsets_match_model(l in layout(), size in 0u64..6000) {
            let mut per_server = vec![0u64; l.servers as usize];
            for b in 0..size {
                let stripe = b / u64::from(l.stripe_size);
                let s = (l.first as u64 + stripe % l.stripe_count as u64) % l.servers as u64;
                let (st, off) = l.stripe_of(b);
                // Object offsets of one server are dense: byte k of its share.
                prop_assert_eq!(l.object_offset(st, off), per_server[s as usize]);
                per_server[s as usize] += 1;
            }
            for s in 0..l.servers {
                prop_assert_eq!(l.bytes_on(s, size), per_server[s as usize], "server {}", s);
            }
            let used: Vec<u32> = l.server_list().collect();
            let mut dedup = used.clone();
            dedup.sort_unstable();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), used.len());
        }
    }
}
