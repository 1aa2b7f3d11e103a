//! Reduction operations: built-in ones and user closures.
//!
//! An operation combines element-wise. Built-ins are types ([`Sum`], [`Prod`],
//! [`Min`], [`Max`] for every primitive number; [`BitAnd`], [`BitOr`],
//! [`BitXor`] for integers only — a bitwise operation on floats does not
//! compile). A closure becomes an operation with [`user`] (commutative) or
//! [`user_ordered`] (applied in rank order, like a non-commutative MPI op).
//!
//! # What an operation must be
//!
//! Every operation must be **associative**: `(a ⊕ b) ⊕ c == a ⊕ (b ⊕ c)`.
//! The collectives group the contributions differently depending on the
//! algorithm (a tree, recursive doubling, the shared-memory slots), which
//! depends on the message size, the number of ranks and `DOS_NODE_COLL_BYTES`;
//! only associativity makes the result independent of that choice. An operation
//! need **not** be commutative: [`user_ordered`] ones are always combined in
//! rank order, `r0 ⊕ r1 ⊕ ... ⊕ r(n-1)`. (Floating-point sums are not exactly
//! associative; dos still gives every rank the same bits, but the rounding
//! may differ between algorithms.)
//!
//! An associative, non-commutative example: composing affine maps
//! `x ↦ a·x + b`, stored as `[a, b]`, where rank order is the order of
//! application (rank 0's map first).
//!
//! ```
//! use dos::op::{self, Op};
//! let mut acc = [1, 5, 3];
//! op::Max.apply_right(&mut acc, &[4, 2, 3]);
//! assert_eq!(acc, [4, 5, 3]);
//!
//! // `f ⊕ g` applies f, then g: x ↦ g.a·(f.a·x + f.b) + g.b.
//! let then = op::user_ordered(|f: [u64; 2], g: [u64; 2]| [g[0] * f[0], g[0] * f[1] + g[1]]);
//! let mut x = [[2u64, 5]]; // x ↦ 2x + 5
//! then.apply_left(&[[3, 1]], &mut x); // (x ↦ 3x + 1) ⊕ (x ↦ 2x + 5)
//! assert_eq!(x, [[6, 7]]); // x ↦ 2(3x + 1) + 5 = 6x + 7
//!
//! // In a collective, every rank gets the maps of all ranks composed in rank order.
//! let got = dos::testing::run_threads(4, |world| {
//!     let r = world.rank() as u64;
//!     let mut map = [[r + 2, r + 1]]; // rank r: x ↦ (r + 2)·x + (r + 1)
//!     world.allreduce_in_place(&mut map, then).unwrap();
//!     map[0]
//! });
//! // The serial composition: apply rank 0's map first, rank 3's last.
//! let serial = (0..4u64).fold([1, 0], |f, r| [(r + 2) * f[0], (r + 2) * f[1] + (r + 1)]);
//! assert_eq!(serial, [120, 119]);
//! assert!(got.iter().all(|&m| m == serial));
//! ```

use bytemuck::Pod;

/// An element-wise, associative reduction operation on `T`.
///
/// `a ⊕ b` where `a` comes from lower ranks than `b`; implementations need not
/// be commutative unless [`Op::commutative`] says so.
pub trait Op<T>: Sync {
    /// `inout[i] = a[i] ⊕ inout[i]` (`a` holds lower ranks' contribution).
    fn apply_left(&self, a: &[T], inout: &mut [T]);
    /// `inout[i] = inout[i] ⊕ b[i]` (`b` holds higher ranks' contribution).
    fn apply_right(&self, inout: &mut [T], b: &[T]);
    /// True if `a ⊕ b == b ⊕ a`, which lets algorithms combine in any order.
    fn commutative(&self) -> bool {
        true
    }
}

macro_rules! builtin {
    ($(#[$m:meta])* $name:ident, |$a:ident, $b:ident| $e:expr, [$($t:ty),*]) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;
        $(
            impl Op<$t> for $name {
                #[inline]
                fn apply_left(&self, a: &[$t], inout: &mut [$t]) {
                    for (o, &$a) in inout.iter_mut().zip(a) {
                        let $b = *o;
                        *o = $e;
                    }
                }
                #[inline]
                fn apply_right(&self, inout: &mut [$t], b: &[$t]) {
                    for (o, &$b) in inout.iter_mut().zip(b) {
                        let $a = *o;
                        *o = $e;
                    }
                }
            }
        )*
    };
}

builtin!(
    /// Sum (`MPI_SUM`); wrapping for integers.
    Sum, |a, b| a.wrapping_add(b), [i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize]
);
builtin!(
    /// Product (`MPI_PROD`); wrapping for integers.
    Prod, |a, b| a.wrapping_mul(b), [i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize]
);
builtin!(
    /// Minimum (`MPI_MIN`).
    Min, |a, b| if b < a { b } else { a }, [i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64]
);
builtin!(
    /// Maximum (`MPI_MAX`).
    Max, |a, b| if b > a { b } else { a }, [i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64]
);
builtin!(
    /// Bitwise and (`MPI_BAND`).
    BitAnd, |a, b| a & b, [i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize]
);
builtin!(
    /// Bitwise or (`MPI_BOR`).
    BitOr, |a, b| a | b, [i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize]
);
builtin!(
    /// Bitwise exclusive or (`MPI_BXOR`).
    BitXor, |a, b| a ^ b, [i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize]
);

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Op<$t> for Sum {
            #[inline]
            fn apply_left(&self, a: &[$t], inout: &mut [$t]) {
                // IEEE addition is commutative: a ⊕ inout == inout + a.
                for (o, &x) in inout.iter_mut().zip(a) { *o += x; }
            }
            #[inline]
            fn apply_right(&self, inout: &mut [$t], b: &[$t]) {
                for (o, &x) in inout.iter_mut().zip(b) { *o += x; }
            }
        }
        impl Op<$t> for Prod {
            #[inline]
            fn apply_left(&self, a: &[$t], inout: &mut [$t]) {
                // IEEE multiplication is commutative too.
                for (o, &x) in inout.iter_mut().zip(a) { *o *= x; }
            }
            #[inline]
            fn apply_right(&self, inout: &mut [$t], b: &[$t]) {
                for (o, &x) in inout.iter_mut().zip(b) { *o *= x; }
            }
        }
    )*};
}
float_arith!(f32, f64);

/// A user operation made from an element-wise closure; see [`user`] and [`user_ordered`].
#[derive(Debug, Clone, Copy)]
pub struct UserOp<F> {
    f: F,
    commutative: bool,
}

/// A commutative, associative user operation from `f(a, b)`; see [the
/// requirements](self#what-an-operation-must-be).
pub fn user<T, F: Fn(T, T) -> T + Sync>(f: F) -> UserOp<F> {
    UserOp {
        f,
        commutative: true,
    }
}

/// An associative operation that is applied in rank order (`a` from lower
/// ranks); it need not be commutative, but it must be associative (see [the
/// requirements](self#what-an-operation-must-be)): `|a, b| a * 10 + b`, for
/// example, is not, and its result would depend on the algorithm.
pub fn user_ordered<T, F: Fn(T, T) -> T + Sync>(f: F) -> UserOp<F> {
    UserOp {
        f,
        commutative: false,
    }
}

impl<T: Copy, F: Fn(T, T) -> T + Sync> Op<T> for UserOp<F> {
    #[inline]
    fn apply_left(&self, a: &[T], inout: &mut [T]) {
        for (o, &x) in inout.iter_mut().zip(a) {
            *o = (self.f)(x, *o);
        }
    }
    #[inline]
    fn apply_right(&self, inout: &mut [T], b: &[T]) {
        for (o, &x) in inout.iter_mut().zip(b) {
            *o = (self.f)(*o, x);
        }
    }
    fn commutative(&self) -> bool {
        self.commutative
    }
}

/// `inout = inout ⊕ b`, in parallel with rayon when the buffer holds at least
/// `par_bytes` bytes.
pub(crate) fn reduce_right<T: Pod + Send + Sync, O: Op<T>>(
    op: &O,
    inout: &mut [T],
    b: &[T],
    par_bytes: usize,
) {
    use rayon::prelude::*;
    if std::mem::size_of_val(inout) < par_bytes {
        op.apply_right(inout, b);
    } else {
        let chunk = (64 * 1024 / std::mem::size_of::<T>().max(1)).max(1);
        inout
            .par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .for_each(|(o, x)| op.apply_right(o, x));
    }
}

/// `inout = a ⊕ inout`, in parallel with rayon for large buffers.
pub(crate) fn reduce_left<T: Pod + Send + Sync, O: Op<T>>(
    op: &O,
    a: &[T],
    inout: &mut [T],
    par_bytes: usize,
) {
    use rayon::prelude::*;
    if std::mem::size_of_val(inout) < par_bytes {
        op.apply_left(a, inout);
    } else {
        let chunk = (64 * 1024 / std::mem::size_of::<T>().max(1)).max(1);
        inout
            .par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk))
            .for_each(|(o, x)| op.apply_left(x, o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins() {
        let mut x = [1i32, -2, 3];
        Sum.apply_right(&mut x, &[1, 1, 1]);
        assert_eq!(x, [2, -1, 4]);
        Min.apply_left(&[0, 0, 9], &mut x);
        assert_eq!(x, [0, -1, 4]);
        let mut f = [1.5f64];
        Prod.apply_right(&mut f, &[2.0]);
        assert_eq!(f, [3.0]);
        let mut u = [0b1100u8];
        BitXor.apply_right(&mut u, &[0b1010]);
        assert_eq!(u, [0b0110]);
        let mut w = [u64::MAX];
        Sum.apply_right(&mut w, &[2]);
        assert_eq!(w, [1]);
    }

    #[test]
    fn parallel_matches_serial() {
        let a: Vec<u64> = (0..300_000).collect();
        let mut x = vec![1u64; 300_000];
        let mut y = x.clone();
        reduce_right(&Sum, &mut x, &a, 1);
        Sum.apply_right(&mut y, &a);
        assert_eq!(x, y);
        let o = user_ordered(|a: u64, b: u64| a.wrapping_mul(31).wrapping_add(b));
        let mut p = vec![7u64; 300_000];
        let mut q = p.clone();
        reduce_left(&o, &a, &mut p, 1);
        o.apply_left(&a, &mut q);
        assert_eq!(p, q);
    }
}

/// Replace (`MPI_REPLACE`): the result is the newer operand. For one-sided
/// accumulate, where it makes a put that is atomic per element.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replace;

impl<T: Copy + Sync> Op<T> for Replace {
    #[inline]
    fn apply_left(&self, _a: &[T], _inout: &mut [T]) {}
    #[inline]
    fn apply_right(&self, inout: &mut [T], b: &[T]) {
        inout.copy_from_slice(&b[..inout.len()]);
    }
    fn commutative(&self) -> bool {
        false
    }
}

mod loc;
pub use loc::{LocValue, MaxLoc, MinLoc, ValueIndex};
