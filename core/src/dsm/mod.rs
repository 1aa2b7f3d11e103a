//! Distributed shared memory: partitioned global arrays ([`GlobalVec`]), a
//! distributed lock ([`DistLock`]) and a coherent shared region
//! ([`SharedRegion`]: one address range on every rank, pages fetched on
//! fault, release consistency; see [`region`]), built on one-sided
//! [windows](crate::Window).
//!
//! A [`GlobalVec<T>`] is one array of `len` plain-data elements spread over
//! the ranks of a communicator by a [`Distribution`]: every rank reads and
//! writes any element or range (one-sided: the owner does not take part),
//! updates integer elements atomically, and works on its own part directly
//! (with rayon if it likes). [`GlobalVec::sync`] completes everything issued
//! and is a barrier, as MPI's fence.
//!
//! ```
//! use dos::dsm::Distribution;
//! let sums = dos::testing::run_threads(3, |world| {
//!     let v = world.global_vec::<u64>(10, Distribution::BlockCyclic { block: 2 }).unwrap();
//!     // Every rank adds 1 to every element.
//!     for i in 0..v.len() {
//!         v.fetch_add(i, 1).unwrap();
//!     }
//!     v.sync().unwrap();
//!     let mut all = vec![0u64; 10];
//!     v.get_range(0, &mut all).unwrap();
//!     all.iter().sum::<u64>()
//! });
//! assert_eq!(sums, vec![30; 3]);
//! ```

mod lock;
pub mod region;

pub use lock::{DistLock, DistLockGuard};
pub use region::{RegionLockGuard, SharedRegion};

use bytemuck::Pod;
use rayon::prelude::*;

use crate::rma::wire;
use crate::{Comm, Error, Result, Window};

/// How a [`GlobalVec`]'s elements are spread over the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Contiguous blocks of `ceil(len / ranks)` elements: rank 0 the first,
    /// rank 1 the next, ... (the last ranks may have fewer, or none).
    Block,
    /// Blocks of `block` elements dealt round-robin: block `b` on rank
    /// `b % ranks` (ScaLAPACK's one-dimensional block-cyclic).
    BlockCyclic {
        /// Elements per block (at least 1).
        block: usize,
    },
}

/// Where elements live: the arithmetic of a [`Distribution`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    len: usize,
    ranks: usize,
    /// Elements per block.
    block: usize,
    cyclic: bool,
}

impl Layout {
    /// The layout of `len` elements over `ranks` ranks.
    pub fn new(len: usize, ranks: usize, dist: Distribution) -> Result<Layout> {
        if ranks == 0 {
            return Err(Error::InvalidArgument {
                op: "a global array",
                reason: "no ranks",
            });
        }
        Ok(match dist {
            Distribution::Block => Layout {
                len,
                ranks,
                block: len.div_ceil(ranks).max(1),
                cyclic: false,
            },
            Distribution::BlockCyclic { block: 0 } => {
                return Err(Error::InvalidArgument {
                    op: "a block-cyclic global array",
                    reason: "blocks of 0 elements",
                })
            }
            Distribution::BlockCyclic { block } => Layout {
                len,
                ranks,
                block,
                cyclic: true,
            },
        })
    }

    /// Elements in the array.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The distribution this layout was made from.
    pub fn distribution(&self) -> Distribution {
        if self.cyclic {
            Distribution::BlockCyclic { block: self.block }
        } else {
            Distribution::Block
        }
    }

    /// Number of ranks the elements are spread over.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The owner of element `i` and its index in the owner's part (`i < len`).
    pub fn owner(&self, i: usize) -> (usize, usize) {
        let b = i / self.block;
        if self.cyclic {
            (
                b % self.ranks,
                (b / self.ranks) * self.block + i % self.block,
            )
        } else {
            (b, i % self.block)
        }
    }

    /// Elements on rank `r`.
    pub fn local_len(&self, r: usize) -> usize {
        if r >= self.ranks {
            return 0;
        }
        if !self.cyclic {
            let start = (r * self.block).min(self.len);
            return ((r + 1) * self.block).min(self.len) - start;
        }
        let blocks = self.len.div_ceil(self.block);
        if r >= blocks {
            return 0;
        }
        let mine = (blocks - r).div_ceil(self.ranks);
        let mut n = mine * self.block;
        // The last block may be short.
        if (blocks - 1) % self.ranks == r {
            n -= blocks * self.block - self.len;
        }
        n
    }

    /// The global index of element `j` of rank `r`'s part.
    pub fn global(&self, r: usize, j: usize) -> usize {
        if self.cyclic {
            (j / self.block * self.ranks + r) * self.block + j % self.block
        } else {
            r * self.block + j
        }
    }

    /// Elements from `i` on that are on the same rank, consecutively in its
    /// part (at most to the end of `i`'s block).
    fn run(&self, i: usize) -> usize {
        (self.block - i % self.block).min(self.len - i)
    }
}

/// Integer element types with remote atomics ([`GlobalVec::fetch_add`],
/// [`GlobalVec::compare_swap`]): 64-bit ones map to the window's 64-bit
/// atomics, 32-bit ones run a compare-and-swap loop on the 8-byte word that
/// holds them.
pub trait GlobalAtomic: Pod + PartialEq {
    /// The value's bits, zero-extended.
    fn to_bits(self) -> u64;
    /// The value of the low bits.
    fn from_bits(b: u64) -> Self;
    /// `self + other`, wrapping.
    fn wrapping_add(self, other: Self) -> Self;
}

macro_rules! global_atomic {
    ($($t:ty => $u:ty),*) => {$(
        impl GlobalAtomic for $t {
            fn to_bits(self) -> u64 {
                self as $u as u64
            }
            fn from_bits(b: u64) -> Self {
                b as $u as $t
            }
            fn wrapping_add(self, other: Self) -> Self {
                <$t>::wrapping_add(self, other)
            }
        }
    )*};
}
global_atomic!(u64 => u64, i64 => u64, u32 => u32, i32 => u32);

/// A partitioned global array; see the [module docs](self).
///
/// Created collectively by [`Comm::global_vec`]; [`GlobalVec::free`] ends it
/// collectively. Not `Send` (like [`Comm`]).
pub struct GlobalVec<T: Pod> {
    win: Window<'static, T>,
    layout: Layout,
}

impl<T: Pod> std::fmt::Debug for GlobalVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalVec")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Comm {
    /// A global array of `len` zeroed elements distributed over this
    /// communicator by `dist` (collective: every rank passes the same `len`
    /// and `dist`).
    pub fn global_vec<T: Pod>(&self, len: usize, dist: Distribution) -> Result<GlobalVec<T>> {
        let layout = Layout::new(len, self.size(), dist)?;
        // Whole 8-byte words per part, so that 32-bit atomics can work on
        // the word that holds an element.
        let size = std::mem::size_of::<T>().max(1);
        let words = (layout.local_len(self.rank()) * size).div_ceil(8) * 8;
        let win = self.win_allocate::<T>(words / size + usize::from(words % size != 0))?;
        Ok(GlobalVec { win, layout })
    }
}

impl<T: Pod> GlobalVec<T> {
    /// Elements in the array.
    pub fn len(&self) -> usize {
        self.layout.len
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.layout.len == 0
    }

    /// Where the elements live.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn check(&self, i: usize, n: usize) -> Result<()> {
        if i.checked_add(n).is_none_or(|end| end > self.layout.len) {
            return Err(Error::InvalidArgument {
                op: "a global array access",
                reason: "outside the array",
            });
        }
        Ok(())
    }

    /// Element `i` (complete on return).
    pub fn get(&self, i: usize) -> Result<T> {
        let mut v = [T::zeroed()];
        self.get_range(i, &mut v)?;
        Ok(v[0])
    }

    /// Writes `v` into element `i` (complete at the owner after
    /// [`GlobalVec::flush`] or [`GlobalVec::sync`]).
    pub fn put(&self, i: usize, v: T) -> Result<()> {
        self.put_range(i, &[v])
    }

    /// Elements `i..i + dst.len()` into `dst`, in one operation per run of
    /// elements on one rank.
    pub fn get_range(&self, i: usize, dst: &mut [T]) -> Result<()> {
        self.check(i, dst.len())?;
        let mut done = 0;
        while done < dst.len() {
            let g = i + done;
            let (r, j) = self.layout.owner(g);
            let n = self.layout.run(g).min(dst.len() - done);
            self.win.get(&mut dst[done..done + n], r, j)?;
            done += n;
        }
        Ok(())
    }

    /// Writes `src` into elements `i..i + src.len()`.
    pub fn put_range(&self, i: usize, src: &[T]) -> Result<()> {
        self.check(i, src.len())?;
        let mut done = 0;
        while done < src.len() {
            let g = i + done;
            let (r, j) = self.layout.owner(g);
            let n = self.layout.run(g).min(src.len() - done);
            self.win.put(&src[done..done + n], r, j)?;
            done += n;
        }
        Ok(())
    }

    /// Completes every put issued by this rank (at their owners).
    pub fn flush(&self) -> Result<()> {
        self.win.flush_all()
    }

    /// Completes every operation of every rank and waits for all ranks (a
    /// barrier; MPI's fence): what any rank wrote before, every rank reads after.
    pub fn sync(&self) -> Result<()> {
        self.win.fence()
    }

    /// This rank's part, to work on directly between [`GlobalVec::sync`]s
    /// (no other rank may access it meanwhile: MPI's rule for local access).
    pub fn local_mut(&mut self) -> &mut [T] {
        let n = self.layout.local_len(self.win.comm().rank());
        // SAFETY: the window's part holds at least `n` elements (it was
        // allocated for them, rounded up), stays mapped while `self` lives,
        // and `&mut self` keeps this rank's other views away.
        unsafe { std::slice::from_raw_parts_mut(self.win.local_ptr().cast::<T>(), n) }
    }

    /// The global index of element `j` of this rank's part.
    pub fn global_index(&self, j: usize) -> usize {
        self.layout.global(self.win.comm().rank(), j)
    }

    /// Runs `f(global index, element)` on every element of this rank's part,
    /// in parallel (rayon).
    pub fn par_for_each_local<F>(&mut self, f: F)
    where
        T: Send,
        F: Fn(usize, &mut T) + Sync + Send,
    {
        let (layout, me) = (self.layout, self.win.comm().rank());
        self.local_mut()
            .par_iter_mut()
            .enumerate()
            .for_each(|(j, x)| f(layout.global(me, j), x));
    }

    /// Ends the array collectively (every rank's operations must be complete).
    pub fn free(self) -> Result<()> {
        self.win.free()
    }
}

impl<T: GlobalAtomic> GlobalVec<T> {
    /// Byte offset of the 8-byte word holding element `i` in its owner's
    /// part, and the bit shift of the element in it.
    fn word(&self, i: usize) -> Result<(usize, u64, u32)> {
        self.check(i, 1)?;
        let (r, j) = self.layout.owner(i);
        let byte = j * std::mem::size_of::<T>();
        Ok((r, (byte & !7) as u64, ((byte & 7) * 8) as u32))
    }

    /// Adds `v` to element `i` atomically (with respect to the other atomics
    /// on the array); returns the old value. Complete on return.
    pub fn fetch_add(&self, i: usize, v: T) -> Result<T> {
        let (r, off, shift) = self.word(i)?;
        if std::mem::size_of::<T>() == 8 {
            return self
                .win
                .atomic(r, off, wire::FETCH_ADD, v.to_bits(), 0)
                .map(T::from_bits);
        }
        self.update(r, off, shift, |old| old.wrapping_add(v))
    }

    /// Stores `new` into element `i` if it holds `expected`; returns the old
    /// value (atomic, complete on return).
    pub fn compare_swap(&self, i: usize, expected: T, new: T) -> Result<T> {
        let (r, off, shift) = self.word(i)?;
        if std::mem::size_of::<T>() == 8 {
            return self
                .win
                .atomic(
                    r,
                    off,
                    wire::COMPARE_SWAP,
                    new.to_bits(),
                    expected.to_bits(),
                )
                .map(T::from_bits);
        }
        self.update(r, off, shift, |old| if old == expected { new } else { old })
    }

    /// A 32-bit element updated with a compare-and-swap loop on its word.
    fn update(&self, r: usize, off: u64, shift: u32, f: impl Fn(T) -> T) -> Result<T> {
        let bits = 8 * std::mem::size_of::<T>() as u32;
        let mask = ((1u64 << bits) - 1) << shift;
        let mut word = self.win.atomic(r, off, wire::FETCH_ADD, 0, 0)?;
        loop {
            let old = T::from_bits((word & mask) >> shift);
            let new = (word & !mask) | ((f(old).to_bits() << shift) & mask);
            if new == word {
                return Ok(old);
            }
            let seen = self.win.atomic(r, off, wire::COMPARE_SWAP, new, word)?;
            if seen == word {
                return Ok(old);
            }
            word = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn layouts_cover_every_element_once(len in 0usize..200, ranks in 1usize..9, block in 0usize..12) {
            let dist = if block == 0 { Distribution::Block } else { Distribution::BlockCyclic { block } };
            let l = Layout::new(len, ranks, dist).unwrap();
            let total: usize = (0..ranks).map(|r| l.local_len(r)).sum();
            prop_assert_eq!(total, len);
            let mut seen = vec![vec![false; len]; ranks];
            for i in 0..len {
                let (r, j) = l.owner(i);
                prop_assert!(r < ranks && j < l.local_len(r), "{} -> {:?}", i, (r, j));
                prop_assert!(!seen[r][j]);
                seen[r][j] = true;
                prop_assert_eq!(l.global(r, j), i);
                // A run stays on one rank, consecutive in its part.
                let n = l.run(i);
                prop_assert!(n >= 1 && i + n <= len);
                for k in 0..n {
                    prop_assert_eq!(l.owner(i + k), (r, j + k));
                }
            }
        }
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(Layout::new(10, 0, Distribution::Block).is_err());
        assert!(Layout::new(10, 2, Distribution::BlockCyclic { block: 0 }).is_err());
    }
}
