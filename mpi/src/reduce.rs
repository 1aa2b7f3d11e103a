//! The predefined reduction operations on the predefined datatypes.
//!
//! [`DynOp`] implements dos's [`dos::op::Op`] for every element type a
//! datatype maps to ([`Elem`]), so MPI's reductions run on dos's own
//! collective algorithms. [`check`] says first whether the standard allows
//! the operation on the type (`MPI_ERR_OP` if not).
//!
//! A user operation is called with the program's datatype handle and a
//! count of its elements ([`check_on`]). A user operation on a derived
//! datatype never reaches this module's typed path: every reduction takes
//! [`crate::userop::general`] first, which packs whole elements of the
//! program's type and calls the function on them in rank order.

use std::ffi::{c_int, c_void};

use bytemuck::{Pod, Zeroable};

use crate::abi::{self, op, Handle};
use crate::datatype::Elem;
use crate::error::{err, R};

/// A predefined operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sum,
    Prod,
    Min,
    Max,
    Land,
    Lor,
    Lxor,
    Band,
    Bor,
    Bxor,
    MinLoc,
    MaxLoc,
    /// A user operation (`MPI_Op_create`), called on datatype handle `dt`,
    /// each element of which is `per` elements of the reduced basic type
    /// (1 for a predefined `dt`; a dense derived one, such as a
    /// `Type_contiguous(9, MPI_INT)` matrix, is reduced as its basic type
    /// but the user function is called with the program's handle and a
    /// count of whole elements of it).
    User {
        f: UserFn,
        dt: Handle,
        per: usize,
    },
}

/// The C function of a user operation: `inoutvec[i] = invec[i] ∘ inoutvec[i]`
/// for `*len` elements of `*datatype`.
pub(crate) type CUserFn = unsafe extern "C" fn(
    invec: *mut c_void,
    inoutvec: *mut c_void,
    len: *mut c_int,
    datatype: *mut Handle,
);

/// The C function of a large-count user operation (`MPI_Op_create_c`,
/// `MPI_User_function_c`): `*len` is an `MPI_Count`.
pub(crate) type CUserFnC = unsafe extern "C" fn(
    invec: *mut c_void,
    inoutvec: *mut c_void,
    len: *mut i64,
    datatype: *mut Handle,
);

/// A user function of either width.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UserCall {
    /// `MPI_User_function` (of `MPI_Op_create`): an `int` length.
    Int(CUserFn),
    /// `MPI_User_function_c` (of `MPI_Op_create_c`): an `MPI_Count` length.
    Count(CUserFnC),
}

/// A user operation: its function, and whether it commutes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserFn {
    pub f: UserCall,
    pub commute: bool,
}

impl PartialEq for UserFn {
    fn eq(&self, o: &UserFn) -> bool {
        let addr = |f: &UserCall| match *f {
            UserCall::Int(f) => (0, f as usize),
            UserCall::Count(f) => (1, f as usize),
        };
        addr(&self.f) == addr(&o.f) && self.commute == o.commute
    }
}
impl Eq for UserFn {}

impl UserFn {
    /// The most elements one call of the function takes.
    pub(crate) fn max_len(&self) -> usize {
        match self.f {
            UserCall::Int(_) => i32::MAX as usize,
            UserCall::Count(_) => i64::MAX as usize,
        }
    }

    /// `len` elements of `dt` at `inv` combined into `inout` by one call,
    /// or `MPI_ERR_COUNT` if `len` is beyond what the function takes.
    ///
    /// # Safety
    /// Both buffers valid for `len` elements of `dt` (the standard's
    /// contract for user functions).
    pub(crate) unsafe fn call(
        &self,
        inv: *mut c_void,
        inout: *mut c_void,
        len: usize,
        dt: &mut Handle,
    ) -> R<()> {
        if len > self.max_len() {
            return Err(err(
                abi::ERR_COUNT,
                format!("{len} elements for a user function of MPI_Op_create (at most INT_MAX; MPI_Op_create_c takes more)"),
            ));
        }
        // SAFETY: the caller's contract; `len` checked.
        unsafe { self.call_in_bounds(inv, inout, len, dt) };
        Ok(())
    }

    /// [`UserFn::call`] with `len` at most [`UserFn::max_len`].
    ///
    /// # Safety
    /// As [`UserFn::call`], and `len <= self.max_len()`.
    unsafe fn call_in_bounds(
        &self,
        inv: *mut c_void,
        inout: *mut c_void,
        len: usize,
        dt: &mut Handle,
    ) {
        debug_assert!(len <= self.max_len());
        match self.f {
            UserCall::Int(f) => {
                let mut l = len as c_int;
                // SAFETY: the caller's contract; `l` fits.
                unsafe { f(inv, inout, &mut l, dt) }
            }
            UserCall::Count(f) => {
                let mut l = len as i64;
                // SAFETY: as above.
                unsafe { f(inv, inout, &mut l, dt) }
            }
        }
    }
}

/// The handle of the predefined datatype named `name` (the reduction path
/// sees the datatype's description, and a user function wants its handle).
fn handle_named(name: &str) -> Handle {
    static NAMES: std::sync::OnceLock<Vec<(&'static str, Handle)>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            (0x200..0x300)
                .filter_map(|h| crate::datatype::predefined(h).map(|t| (t.name, h)))
                .collect()
        })
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(abi::DATATYPE_NULL, |&(_, h)| h)
}

/// `inout = a ∘ inout` through the user's C function, `per` basic elements
/// to one element of `dt`, in chunks of at most the elements of `dt` one
/// call takes (`INT_MAX` for `MPI_Op_create`'s functions).
fn call_user<T: Pod>(u: UserFn, dt: Handle, per: usize, a: &[T], inout: &mut [T]) {
    let mut dt = dt;
    let per = per.max(1);
    let chunk = (u.max_len() / per).max(1) * per;
    for (x, o) in a.chunks(chunk).zip(inout.chunks_mut(chunk)) {
        let len = x.len().min(o.len()) / per;
        // SAFETY: the user function reads `len` elements of `dt` (each `per`
        // basic elements) at `invec` and updates `len` at `inoutvec`, as the
        // standard requires of it; it gets a pointer to its own copy of the
        // datatype handle.
        // `len` is at most `chunk / per`, within `u.max_len()`.
        unsafe {
            u.call_in_bounds(
                x.as_ptr() as *mut c_void,
                o.as_mut_ptr().cast::<c_void>(),
                len,
                &mut dt,
            )
        };
    }
}

/// The operation of handle `h` on datatype `dt` whose reduction type (of
/// [`crate::datatype::for_reduction`]) is `t`: [`check`], and a user
/// operation is given the program's handle `dt` with whole elements of it.
pub(crate) fn check_on(h: Handle, dt: Handle, t: &crate::datatype::Predefined) -> R<Kind> {
    match check(h, t.elem, t.name)? {
        Kind::User { f, dt: base, .. } if crate::datatype::is_derived(dt) => {
            let bsize = crate::datatype::predefined(base).map_or(0, |b| b.size);
            if bsize == 0 || t.size % bsize != 0 {
                return Err(err(
                    abi::ERR_UNSUPPORTED_OPERATION,
                    format!(
                        "user operations on this derived type of {} are not supported yet",
                        t.name
                    ),
                ));
            }
            Ok(Kind::User {
                f,
                dt,
                per: t.size / bsize,
            })
        }
        k => Ok(k),
    }
}

/// The operation of handle `h`, checked against element type `elem`.
pub(crate) fn check(h: Handle, elem: Elem, tname: &str) -> R<Kind> {
    use Elem::*;
    let k = match h {
        op::SUM => Kind::Sum,
        op::PROD => Kind::Prod,
        op::MIN => Kind::Min,
        op::MAX => Kind::Max,
        op::LAND => Kind::Land,
        op::LOR => Kind::Lor,
        op::LXOR => Kind::Lxor,
        op::BAND => Kind::Band,
        op::BOR => Kind::Bor,
        op::BXOR => Kind::Bxor,
        op::MINLOC => Kind::MinLoc,
        op::MAXLOC => Kind::MaxLoc,
        op::REPLACE | op::NO_OP => {
            return Err(err(
                abi::ERR_OP,
                "MPI_REPLACE and MPI_NO_OP are for one-sided accumulate only",
            ))
        }
        op::NULL => return Err(err(abi::ERR_OP, "MPI_OP_NULL is not an operation")),
        _ => {
            let u = crate::state::with(|st| Ok(st.ops.get(&h).copied()))
                .ok()
                .flatten()
                .ok_or_else(|| err(abi::ERR_OP, format!("invalid operation handle {h:#x}")))?;
            if elem == Elem::Opaque {
                return Err(err(
                    abi::ERR_UNSUPPORTED_OPERATION,
                    format!("user operations on {tname} are not supported yet"),
                ));
            }
            return Ok(Kind::User {
                f: u,
                dt: handle_named(tname),
                per: 1,
            });
        }
    };
    let int = matches!(elem, I8 | I16 | I32 | I64 | I128 | U8 | U16 | U32 | U64);
    let float = matches!(elem, F32 | F64 | LongDouble);
    let complex = matches!(elem, ComplexF32 | ComplexF64 | ComplexLongDouble);
    let pair = matches!(
        elem,
        FloatInt | DoubleInt | LongInt | TwoInt | ShortInt | TwoReal | TwoDouble | LongDoubleInt
    );
    let ok = match k {
        Kind::Sum | Kind::Prod => int || float || complex,
        Kind::Min | Kind::Max => int || float,
        Kind::Land | Kind::Lor | Kind::Lxor => int || matches!(elem, Bool | Logical),
        Kind::Band | Kind::Bor | Kind::Bxor => int || elem == Byte,
        Kind::MinLoc | Kind::MaxLoc => pair,
        Kind::User { .. } => true,
    };
    if ok {
        Ok(k)
    } else {
        Err(err(
            abi::ERR_OP,
            format!("operation {k:?} is not defined on {tname}"),
        ))
    }
}

/// An element type that the predefined operations combine.
pub(crate) trait Num: Pod + Send + Sync {
    /// `a ⊕ b`, `a` from the lower ranks.
    fn apply(k: Kind, a: Self, b: Self) -> Self;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Num for $t {
            #[inline]
            fn apply(k: Kind, a: $t, b: $t) -> $t {
                match k {
                    Kind::Sum => a.wrapping_add(b),
                    Kind::Prod => a.wrapping_mul(b),
                    Kind::Min => a.min(b),
                    Kind::Max => a.max(b),
                    Kind::Land => ((a != 0) && (b != 0)) as $t,
                    Kind::Lor => ((a != 0) || (b != 0)) as $t,
                    Kind::Lxor => ((a != 0) != (b != 0)) as $t,
                    Kind::Band => a & b,
                    Kind::Bor => a | b,
                    Kind::Bxor => a ^ b,
                    Kind::MinLoc | Kind::MaxLoc | Kind::User { .. } => a,
                }
            }
        }
    )*};
}
int!(i8, i16, i32, i64, i128, u8, u16, u32, u64);

macro_rules! float {
    ($($t:ty),*) => {$(
        impl Num for $t {
            #[inline]
            fn apply(k: Kind, a: $t, b: $t) -> $t {
                match k {
                    Kind::Sum => a + b,
                    Kind::Prod => a * b,
                    Kind::Min => if b < a { b } else { a },
                    Kind::Max => if b > a { b } else { a },
                    _ => a,
                }
            }
        }
    )*};
}
float!(f32, f64);

macro_rules! complex {
    ($name:ident, $t:ty) => {
        /// A C complex number (`re`, `im`).
        #[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
        #[repr(C)]
        pub(crate) struct $name {
            re: $t,
            im: $t,
        }
        impl Num for $name {
            #[inline]
            fn apply(k: Kind, a: $name, b: $name) -> $name {
                match k {
                    Kind::Sum => $name {
                        re: a.re + b.re,
                        im: a.im + b.im,
                    },
                    Kind::Prod => $name {
                        re: a.re * b.re - a.im * b.im,
                        im: a.re * b.im + a.im * b.re,
                    },
                    _ => a,
                }
            }
        }
    };
}
complex!(ComplexF32, f32);
complex!(ComplexF64, f64);

macro_rules! pair {
    ($name:ident { v: $v:ty, $(pad0: $p0:ty,)? i: $i:ty $(, pad: $p:ty)? }) => {
        /// A (value, index) pair for `MPI_MINLOC`/`MPI_MAXLOC`, laid out as the C struct.
        #[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
        #[repr(C)]
        pub(crate) struct $name {
            v: $v,
            $(pad0: $p0,)?
            i: $i,
            $(pad: $p,)?
        }
        impl Num for $name {
            #[inline]
            fn apply(k: Kind, a: $name, b: $name) -> $name {
                let pick_a = match k {
                    Kind::MinLoc => a.v < b.v || (a.v == b.v && a.i <= b.i),
                    Kind::MaxLoc => a.v > b.v || (a.v == b.v && a.i <= b.i),
                    _ => true,
                };
                if pick_a { a } else { b }
            }
        }
    };
}
pair!(FloatInt { v: f32, i: i32 });
pair!(DoubleInt {
    v: f64,
    i: i32,
    pad: i32
});
pair!(LongInt {
    v: i64,
    i: i32,
    pad: i32
});
pair!(TwoInt { v: i32, i: i32 });
pair!(ShortInt {
    v: i16,
    pad0: i16,
    i: i32
});
pair!(TwoReal { v: f32, i: f32 });
pair!(TwoDouble { v: f64, i: f64 });

/// `inout[i] = f(inout[i], other[i])`.
#[inline(always)]
fn zip_with<T: Copy>(inout: &mut [T], other: &[T], f: impl Fn(T, T) -> T) {
    for (o, &x) in inout.iter_mut().zip(other) {
        *o = f(*o, x);
    }
}

/// Combines `other` into `inout` with predefined operation `k`: `other` is
/// the left operand if `left` (from the lower ranks), else the right one.
///
/// The operation is chosen once, not per element: in each arm `T::apply`
/// sees a constant kind, its `match` folds away and the loop is a plain
/// element-wise loop that the compiler may vectorize, as it may dos's own
/// `op::Sum` (one loop over a `match` depended on the compiler unswitching it).
#[inline]
fn combine<T: Num>(k: Kind, inout: &mut [T], other: &[T], left: bool) {
    macro_rules! arms {
        ($($kind:ident),*) => {
            match k {
                $(Kind::$kind => {
                    if left {
                        zip_with(inout, other, |o, x| T::apply(Kind::$kind, x, o))
                    } else {
                        zip_with(inout, other, |o, x| T::apply(Kind::$kind, o, x))
                    }
                })*
                _ => {
                    if left {
                        zip_with(inout, other, |o, x| T::apply(k, x, o))
                    } else {
                        zip_with(inout, other, |o, x| T::apply(k, o, x))
                    }
                }
            }
        };
    }
    arms!(Sum, Prod, Min, Max, Band, Bor, Bxor, MinLoc, MaxLoc)
}

/// A predefined operation as a dos operation on any [`Num`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct DynOp(pub Kind);

impl<T: Num> dos::op::Op<T> for DynOp {
    #[inline]
    fn apply_left(&self, a: &[T], inout: &mut [T]) {
        if let Kind::User { f, dt, per } = self.0 {
            return call_user(f, dt, per, a, inout);
        }
        combine(self.0, inout, a, true);
    }
    #[inline]
    fn apply_right(&self, inout: &mut [T], b: &[T]) {
        if let Kind::User { f, dt, per } = self.0 {
            // The user function updates its second argument: b ∘ ... is
            // not what is asked, so combine into a copy of `b` and move it back.
            let mut t = b.to_vec();
            call_user(f, dt, per, inout, &mut t);
            inout.copy_from_slice(&t[..inout.len()]);
            return;
        }
        combine(self.0, inout, b, false);
    }
    fn commutative(&self) -> bool {
        match self.0 {
            Kind::User { f, .. } => f.commute,
            _ => true,
        }
    }
}

/// Calls `$f::<T>($args)` with `T` the Rust type of element type `$elem`.
macro_rules! typed {
    ($elem:expr, $f:ident($($a:expr),* $(,)?)) => {{
        use $crate::datatype::Elem as E;
        use $crate::reduce as rd;
        match $elem {
            E::I8 => $f::<i8>($($a),*),
            E::I16 => $f::<i16>($($a),*),
            E::I32 | E::Logical => $f::<i32>($($a),*),
            E::I64 => $f::<i64>($($a),*),
            E::I128 => $f::<i128>($($a),*),
            E::U8 | E::Bool | E::Byte => $f::<u8>($($a),*),
            E::U16 => $f::<u16>($($a),*),
            E::U32 => $f::<u32>($($a),*),
            E::U64 => $f::<u64>($($a),*),
            E::F32 => $f::<f32>($($a),*),
            E::F64 => $f::<f64>($($a),*),
            E::ComplexF32 => $f::<rd::ComplexF32>($($a),*),
            E::ComplexF64 => $f::<rd::ComplexF64>($($a),*),
            E::FloatInt => $f::<rd::FloatInt>($($a),*),
            E::DoubleInt => $f::<rd::DoubleInt>($($a),*),
            E::LongInt => $f::<rd::LongInt>($($a),*),
            E::TwoInt => $f::<rd::TwoInt>($($a),*),
            E::ShortInt => $f::<rd::ShortInt>($($a),*),
            E::TwoReal => $f::<rd::TwoReal>($($a),*),
            E::TwoDouble => $f::<rd::TwoDouble>($($a),*),
            E::LongDouble => $f::<$crate::ldouble::LongDouble>($($a),*),
            E::ComplexLongDouble => $f::<$crate::ldouble::ComplexLongDouble>($($a),*),
            E::LongDoubleInt => $f::<$crate::ldouble::LongDoubleInt>($($a),*),
            E::Opaque => Err($crate::error::err(
                $crate::abi::ERR_OP,
                "no predefined operation applies to this datatype",
            )),
        }
    }};
}
pub(crate) use typed;

/// `bytes` as a slice of `T`, copied if the buffer is not aligned for `T`
/// (MPI lets a program put an `int` at any address).
pub(crate) fn cast<T: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    if bytes.is_empty() {
        return std::borrow::Cow::Borrowed(&[]);
    }
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(copy_of(bytes)),
    }
}

/// An aligned copy of `bytes` as `T`s.
fn copy_of<T: Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>().max(1)];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
    v
}

/// Runs `f` on `bytes` as a mutable slice of `T`, through an aligned copy
/// (copied back afterwards) if the buffer is not aligned for `T`.
pub(crate) fn with_mut<T: Pod, X>(bytes: &mut [u8], f: impl FnOnce(&mut [T]) -> R<X>) -> R<X> {
    if bytes.is_empty() {
        return f(&mut []);
    }
    match bytemuck::try_cast_slice_mut(bytes) {
        Ok(s) => f(s),
        Err(_) => {
            let mut v: Vec<T> = copy_of(bytes);
            let r = f(&mut v);
            bytes.copy_from_slice(bytemuck::cast_slice(&v));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dos::op::Op;

    /// `DynOp` chooses the loop per operation (`combine`): the same results,
    /// element by element, as one `Num::apply` per element, on both sides.
    #[test]
    fn the_loop_per_operation_is_apply_per_element() {
        fn check<T: Num + PartialEq + std::fmt::Debug>(a: &[T], b: &[T]) {
            use Kind::*;
            for k in [
                Sum, Prod, Min, Max, Land, Lor, Lxor, Band, Bor, Bxor, MinLoc, MaxLoc,
            ] {
                let mut left = b.to_vec();
                DynOp(k).apply_left(a, &mut left);
                let mut right = a.to_vec();
                DynOp(k).apply_right(&mut right, b);
                for i in 0..a.len() {
                    assert_eq!(left[i], T::apply(k, a[i], b[i]), "{k:?} left {i}");
                    assert_eq!(right[i], T::apply(k, a[i], b[i]), "{k:?} right {i}");
                }
            }
        }
        let ints: Vec<i32> = (0..37).map(|i| (i * 7919) % 23 - 11).collect();
        let others: Vec<i32> = (0..37).map(|i| (i * 104_729) % 19 - 9).collect();
        check(&ints, &others);
        let f: Vec<f32> = ints.iter().map(|&x| x as f32 * 0.5).collect();
        let g: Vec<f32> = others.iter().map(|&x| x as f32 * 0.25).collect();
        check(&f, &g);
        let p: Vec<TwoInt> = ints
            .iter()
            .zip(&others)
            .map(|(&v, &i)| TwoInt { v, i })
            .collect();
        let q: Vec<TwoInt> = others
            .iter()
            .zip(&ints)
            .map(|(&v, &i)| TwoInt { v, i })
            .collect();
        check(&p, &q);
    }

    #[test]
    fn pairs_have_the_c_layout() {
        assert_eq!(std::mem::size_of::<DoubleInt>(), 16);
        assert_eq!(std::mem::size_of::<ShortInt>(), 8);
        assert_eq!(std::mem::size_of::<LongInt>(), 16);
    }

    #[test]
    fn minloc_takes_the_lower_index_on_ties() {
        let mut x = [TwoInt { v: 3, i: 5 }, TwoInt { v: 1, i: 9 }];
        DynOp(Kind::MinLoc).apply_right(&mut x, &[TwoInt { v: 3, i: 2 }, TwoInt { v: 2, i: 0 }]);
        assert_eq!(x, [TwoInt { v: 3, i: 2 }, TwoInt { v: 1, i: 9 }]);
        DynOp(Kind::MaxLoc).apply_left(&[TwoInt { v: 7, i: 1 }, TwoInt { v: 1, i: 1 }], &mut x);
        assert_eq!(x, [TwoInt { v: 7, i: 1 }, TwoInt { v: 1, i: 1 }]);
    }

    #[test]
    fn ops_are_checked_against_types() {
        assert!(check(op::BAND, Elem::F64, "MPI_DOUBLE").is_err());
        assert!(check(op::SUM, Elem::F64, "MPI_DOUBLE").is_ok());
        assert!(check(op::MINLOC, Elem::I32, "MPI_INT").is_err());
        assert!(check(op::LAND, Elem::Bool, "MPI_C_BOOL").is_ok());
        assert!(check(op::REPLACE, Elem::I32, "MPI_INT").is_err());
        assert_eq!(
            check(0x999, Elem::I32, "MPI_INT").unwrap_err().class,
            abi::ERR_OP
        );
    }

    #[test]
    fn misaligned_buffers_go_through_a_copy() {
        let mut raw = [0u8; 9];
        raw[1..5].copy_from_slice(&7i32.to_ne_bytes());
        raw[5..9].copy_from_slice(&9i32.to_ne_bytes());
        let (head, odd) = raw.split_at_mut(1);
        let _ = head;
        let v = cast::<i32>(odd);
        assert_eq!(&*v, &[7, 9]);
        with_mut::<i32, ()>(odd, |s| {
            s[0] += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(i32::from_ne_bytes(raw[1..5].try_into().unwrap()), 8);
        assert!(cast::<f64>(&[]).is_empty());
    }

    #[test]
    fn complex_product() {
        let mut x = [ComplexF64 { re: 1.0, im: 2.0 }];
        DynOp(Kind::Prod).apply_right(&mut x, &[ComplexF64 { re: 3.0, im: -1.0 }]);
        assert_eq!(x, [ComplexF64 { re: 5.0, im: 5.0 }]);
    }
}
