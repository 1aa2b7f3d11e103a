//! `MPI_MINLOC` and `MPI_MAXLOC`: reductions of (value, index) pairs.

use std::fmt::Debug;

use bytemuck::{Pod, Zeroable};

use super::Op;

mod sealed {
    pub trait Sealed {}
}

/// A value type that [`ValueIndex`] pairs with an index: the primitive
/// numbers of 4 and 8 bytes. (Sealed: the padding that keeps the pair
/// plain data is chosen per type.)
pub trait LocValue: Pod + PartialOrd + Debug + sealed::Sealed {
    /// Explicit padding after the index, so that the pair has no hidden bytes.
    #[doc(hidden)]
    type Pad: Pod + Default + Debug + PartialEq;
}

/// A value and its index, for [`MinLoc`] and [`MaxLoc`] (`MPI_DOUBLE_INT`,
/// `MPI_2INT`, ...). Plain data: send and reduce slices of it like numbers.
///
/// ```
/// use dos::op::{MaxLoc, MinLoc, ValueIndex};
/// let world = dos::init().unwrap();
/// let me = world.rank() as i32;
/// // Each rank offers its own value, tagged with its rank.
/// let mine = [ValueIndex::new(1.5f64 * me as f64, me), ValueIndex::new(2.0, me)];
/// let mut min = [ValueIndex::default(); 2];
/// world.allreduce(&mine, &mut min, MinLoc).unwrap();
/// assert_eq!((min[0].value, min[0].index), (0.0, 0));
/// // Ties pick the lowest index.
/// assert_eq!((min[1].value, min[1].index), (2.0, 0));
/// let mut max = [ValueIndex::default(); 2];
/// world.allreduce(&mine, &mut max, MaxLoc).unwrap();
/// assert_eq!(max[1].index, 0);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ValueIndex<T: LocValue> {
    /// The value compared.
    pub value: T,
    /// Where it came from (a rank, a position); ties pick the lowest.
    pub index: i32,
    _pad: T::Pad,
}

impl<T: LocValue> ValueIndex<T> {
    /// The pair `(value, index)`.
    pub fn new(value: T, index: i32) -> Self {
        ValueIndex {
            value,
            index,
            _pad: T::Pad::default(),
        }
    }
}

macro_rules! loc_value {
    ($pad:ty: $($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl LocValue for $t {
            type Pad = $pad;
        }
        // No hidden padding: the fields fill the struct exactly.
        const _: () = assert!(
            std::mem::size_of::<ValueIndex<$t>>()
                == std::mem::size_of::<$t>() + 4 + std::mem::size_of::<$pad>()
        );
        // SAFETY: `repr(C)` of Pod fields with no padding (asserted above);
        // every bit pattern of each field is valid.
        unsafe impl Zeroable for ValueIndex<$t> {}
        // SAFETY: as above; the type is `Copy` and `'static`.
        unsafe impl Pod for ValueIndex<$t> {}
    )*};
}
loc_value!([u8; 0]: i32, u32, f32);
loc_value!([u8; 4]: i64, u64, f64);

/// Minimum with its index (`MPI_MINLOC`): the smaller value, and of equal
/// values the lower index. Commutative and associative. (Values that do not
/// compare, such as NaN, count as equal.)
#[derive(Debug, Clone, Copy, Default)]
pub struct MinLoc;

/// Maximum with its index (`MPI_MAXLOC`): the larger value, and of equal
/// values the lower index.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxLoc;

#[inline]
fn pick<T: LocValue>(
    a: ValueIndex<T>,
    b: ValueIndex<T>,
    b_wins: bool,
    a_wins: bool,
) -> ValueIndex<T> {
    if !a_wins && (b_wins || b.index < a.index) {
        b
    } else {
        a
    }
}

#[inline]
fn minloc<T: LocValue>(a: ValueIndex<T>, b: ValueIndex<T>) -> ValueIndex<T> {
    pick(a, b, b.value < a.value, a.value < b.value)
}

#[inline]
fn maxloc<T: LocValue>(a: ValueIndex<T>, b: ValueIndex<T>) -> ValueIndex<T> {
    pick(a, b, b.value > a.value, a.value > b.value)
}

macro_rules! loc_op {
    ($name:ident, $f:ident) => {
        impl<T: LocValue> Op<ValueIndex<T>> for $name {
            #[inline]
            fn apply_left(&self, a: &[ValueIndex<T>], inout: &mut [ValueIndex<T>]) {
                for (o, &x) in inout.iter_mut().zip(a) {
                    *o = $f(x, *o);
                }
            }
            #[inline]
            fn apply_right(&self, inout: &mut [ValueIndex<T>], b: &[ValueIndex<T>]) {
                for (o, &x) in inout.iter_mut().zip(b) {
                    *o = $f(*o, x);
                }
            }
        }
    };
}
loc_op!(MinLoc, minloc);
loc_op!(MaxLoc, maxloc);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_pick_the_lowest_index_in_either_order() {
        let a = ValueIndex::new(1.0f64, 5);
        let b = ValueIndex::new(1.0f64, 2);
        assert_eq!(minloc(a, b).index, 2);
        assert_eq!(minloc(b, a).index, 2);
        assert_eq!(maxloc(a, b).index, 2);
        let c = ValueIndex::new(3i32, 9);
        let d = ValueIndex::new(-3i32, 1);
        assert_eq!(minloc(c, d), d);
        assert_eq!(maxloc(c, d), c);
        assert_eq!(std::mem::size_of::<ValueIndex<f64>>(), 16);
        assert_eq!(std::mem::size_of::<ValueIndex<f32>>(), 8);
    }
}
