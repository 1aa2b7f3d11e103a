//! Strided and indexed layouts (`MPI_Type_vector`, `MPI_Type_indexed`):
//! send a column of a matrix, or any set of blocks of a slice, without
//! copying it out by hand.
//!
//! A [`Layout`] names blocks of elements of a slice, in order. [`Vector`] is
//! `count` blocks of `blocklen` elements whose starts are `stride` elements
//! apart; [`Indexed`] is any list of `(displacement, length)` blocks.
//! [`Comm::send_layout`] packs the blocks into one message and
//! [`Comm::recv_layout`] unpacks a message into the blocks of its buffer, so
//! the two sides may use different layouts (a row on one side, a column on
//! the other), as with MPI type signatures. A layout that reaches past the
//! end of the buffer is a typed error.
//!
//! ```
//! use dos::datatype::{Layout, Vector};
//! let world = dos::init().unwrap();
//! let me = world.rank();
//! // A 3 x 4 row-major matrix; its column 1 is 3 blocks of 1, 4 apart.
//! let a: Vec<f64> = (0..12).map(f64::from).collect();
//! let col = Vector { count: 3, blocklen: 1, stride: 4 };
//! world.send_layout(&a, &col.offset(1), me, 0).unwrap();
//! let mut column = [0.0; 3];
//! world.recv(&mut column, me, 0).unwrap();
//! assert_eq!(column, [1.0, 5.0, 9.0]);
//! // And back into column 2 of another matrix.
//! world.send(&column, me, 1).unwrap();
//! let mut b = vec![0.0; 12];
//! world.recv_layout(&mut b, &col.offset(2), me, 1).unwrap();
//! assert_eq!((b[2], b[6], b[10]), (1.0, 5.0, 9.0));
//! ```

use bytemuck::Pod;

use crate::{Comm, Error, Result, Source, Status, Tag, TagSel};

/// Blocks of elements of a slice, in the order they are sent.
pub trait Layout {
    /// Calls `f(start, len)` for every block, in order (in elements).
    fn for_each_block(&self, f: &mut dyn FnMut(usize, usize));

    /// Elements the layout selects (the length of the packed message).
    fn size(&self) -> usize {
        let mut n = 0usize;
        self.for_each_block(&mut |_, len| n = n.saturating_add(len));
        n
    }

    /// One past the last element the layout reaches: the least buffer length.
    fn extent(&self) -> usize {
        let mut e = 0usize;
        self.for_each_block(&mut |start, len| {
            if len > 0 {
                e = e.max(start.saturating_add(len));
            }
        });
        e
    }

    /// Copies the selected elements of `buf` into a new vector, in block order.
    fn pack<T: Pod>(&self, buf: &[T]) -> Result<Vec<T>>
    where
        Self: Sized,
    {
        check_extent("pack", self, buf.len())?;
        let mut out = Vec::with_capacity(self.size());
        let mut inside = true;
        self.for_each_block(&mut |start, len| match start
            .checked_add(len)
            .and_then(|end| buf.get(start..end))
        {
            Some(b) => out.extend_from_slice(b),
            None => inside = false,
        });
        if !inside {
            return Err(outside("pack"));
        }
        Ok(out)
    }

    /// Copies `packed` into the selected elements of `buf`, in block order;
    /// stops early if `packed` is shorter than [`Layout::size`]. Returns how
    /// many elements were written.
    fn unpack<T: Pod>(&self, packed: &[T], buf: &mut [T]) -> Result<usize>
    where
        Self: Sized,
    {
        check_extent("unpack", self, buf.len())?;
        if packed.len() > self.size() {
            return Err(Error::InvalidBuffer {
                op: "unpack",
                reason: format!(
                    "{} elements do not fit a layout of {}",
                    packed.len(),
                    self.size()
                ),
            });
        }
        let mut done = 0;
        let mut inside = true;
        self.for_each_block(&mut |start, len| {
            let n = len.min(packed.len() - done);
            match start.checked_add(n).and_then(|end| buf.get_mut(start..end)) {
                Some(b) => {
                    b.copy_from_slice(&packed[done..done + n]);
                    done += n;
                }
                None => inside = false,
            }
        });
        if !inside {
            return Err(outside("unpack"));
        }
        Ok(done)
    }
}

/// A block outside the buffer (a [`Layout`] whose blocks change between calls).
#[cold]
fn outside(op: &'static str) -> Error {
    Error::InvalidBuffer {
        op,
        reason: "a block of the layout lies outside the buffer".into(),
    }
}

fn check_extent(op: &'static str, l: &dyn Layout, len: usize) -> Result<()> {
    let e = l.extent();
    if e > len {
        return Err(Error::InvalidBuffer {
            op,
            reason: format!("the layout reaches element {e} of a buffer of {len}"),
        });
    }
    Ok(())
}

/// `count` blocks of `blocklen` elements, the start of each `stride`
/// elements after the previous one (`MPI_Type_vector`), starting at element 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vector {
    /// Number of blocks.
    pub count: usize,
    /// Elements per block.
    pub blocklen: usize,
    /// Elements from the start of one block to the start of the next.
    pub stride: usize,
}

impl Vector {
    /// The same blocks, starting at element `first` (column `first` of a matrix).
    pub fn offset(self, first: usize) -> Offset<Vector> {
        Offset {
            first,
            layout: self,
        }
    }
}

impl Layout for Vector {
    fn for_each_block(&self, f: &mut dyn FnMut(usize, usize)) {
        if self.blocklen == 0 {
            return;
        }
        for i in 0..self.count {
            f(i.saturating_mul(self.stride), self.blocklen);
        }
    }
}

/// A layout moved `first` elements further into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset<L> {
    /// Where the layout starts.
    pub first: usize,
    /// The layout.
    pub layout: L,
}

impl<L: Layout> Layout for Offset<L> {
    fn for_each_block(&self, f: &mut dyn FnMut(usize, usize)) {
        self.layout
            .for_each_block(&mut |start, len| f(start.saturating_add(self.first), len));
    }
}

/// Blocks at any displacements (`MPI_Type_indexed`): `(start, len)` in elements.
/// Blocks may come in any order; they are sent in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Indexed {
    /// `(displacement, length)` of each block, in elements.
    pub blocks: Vec<(usize, usize)>,
}

impl Indexed {
    /// The layout of these `(displacement, length)` blocks.
    pub fn new(blocks: impl IntoIterator<Item = (usize, usize)>) -> Indexed {
        Indexed {
            blocks: blocks.into_iter().collect(),
        }
    }
}

impl Layout for Indexed {
    fn for_each_block(&self, f: &mut dyn FnMut(usize, usize)) {
        for &(start, len) in &self.blocks {
            if len > 0 {
                f(start, len);
            }
        }
    }
}

impl Comm {
    /// Sends the elements of `buf` that `layout` selects, packed in block
    /// order, to `dest` with `tag`; see [`crate::datatype`].
    pub fn send_layout<T: Pod, L: Layout>(
        &self,
        buf: &[T],
        layout: &L,
        dest: usize,
        tag: Tag,
    ) -> Result<()> {
        let packed = layout.pack(buf)?;
        self.send(&packed, dest, tag)
    }

    /// Receives a message into the elements of `buf` that `layout` selects,
    /// in block order; see [`crate::datatype`]. A shorter message fills the
    /// first blocks; a longer one gives [`Error::Truncated`].
    pub fn recv_layout<T: Pod, L: Layout>(
        &self,
        buf: &mut [T],
        layout: &L,
        src: impl Into<Source>,
        tag: impl Into<TagSel>,
    ) -> Result<Status> {
        check_extent("recv_layout", layout, buf.len())?;
        let mut packed = vec![T::zeroed(); layout.size()];
        let st = self.recv(&mut packed, src, tag)?;
        layout.unpack(&packed[..st.count::<T>()], buf)?;
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_indexed_blocks() {
        let v = Vector {
            count: 3,
            blocklen: 2,
            stride: 5,
        };
        assert_eq!((v.size(), v.extent()), (6, 12));
        let a: Vec<u32> = (0..20).collect();
        assert_eq!(v.pack(&a).unwrap(), [0, 1, 5, 6, 10, 11]);
        assert_eq!(v.offset(3).pack(&a).unwrap(), [3, 4, 8, 9, 13, 14]);
        assert!(matches!(
            v.offset(9).pack(&a),
            Err(Error::InvalidBuffer { .. })
        ));
        let ix = Indexed::new([(7, 1), (0, 3), (4, 0)]);
        assert_eq!(ix.pack(&a).unwrap(), [7, 0, 1, 2]);
        let mut b = vec![0u32; 8];
        assert_eq!(ix.unpack(&[9, 8], &mut b).unwrap(), 2);
        assert_eq!(b, [8, 0, 0, 0, 0, 0, 0, 9]);
        assert!(ix.unpack(&[1; 5], &mut b).is_err());
    }
}
