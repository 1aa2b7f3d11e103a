//! `long double` in reductions: `MPI_LONG_DOUBLE`,
//! `MPI_C_LONG_DOUBLE_COMPLEX` (and the C++ one) and `MPI_LONG_DOUBLE_INT`.
//!
//! On x86-64 Linux a C `long double` is the x87 80-bit extended format in
//! 16 bytes. Rust has no such type, so the arithmetic is done by the x87
//! unit itself (`fld`/`faddp`/`fmulp`/`fsubp`/`fstp` on 80-bit memory
//! operands): every operation rounds exactly as the C program's own
//! `long double` operations do (precision control is the Linux default,
//! 64-bit significands). Comparisons (`MPI_MIN`, `MPI_MAX`, `MPI_MINLOC`,
//! `MPI_MAXLOC`) compare sign, exponent and significand as integers, which
//! orders every non-NaN value as the FPU does (±0 equal).
//!
//! On other architectures `long double` has other formats; there the
//! types stay opaque (`MPI_ERR_OP` for the predefined operations).

use bytemuck::{Pod, Zeroable};

use crate::reduce::{Kind, Num};

/// A C `long double` (x87 extended, 16 bytes with padding).
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C, align(16))]
pub(crate) struct LongDouble([u8; 16]);

/// A C `long double _Complex`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C, align(16))]
pub(crate) struct ComplexLongDouble {
    re: LongDouble,
    im: LongDouble,
}

/// `MPI_LONG_DOUBLE_INT`'s C struct `{long double v; int i;}` (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C, align(16))]
pub(crate) struct LongDoubleInt {
    v: LongDouble,
    i: i32,
    pad: [u8; 12],
}

#[derive(Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
}

/// `a ∘ b` on the x87 unit.
#[cfg(target_arch = "x86_64")]
fn arith(a: LongDouble, b: LongDouble, op: Arith) -> LongDouble {
    let mut out = LongDouble([0; 16]);
    let (pa, pb, po) = (a.0.as_ptr(), b.0.as_ptr(), out.0.as_mut_ptr());
    // SAFETY: the three pointers are valid for 10 bytes; the x87 stack is
    // empty on entry (the x86-64 ABI) and left empty (two loads, one
    // popping operation, one popping store); st(0)/st(1) are declared
    // clobbered.
    unsafe {
        match op {
            Arith::Add => std::arch::asm!(
                "fld tbyte ptr [{a}]",
                "fld tbyte ptr [{b}]",
                "faddp",
                "fstp tbyte ptr [{o}]",
                a = in(reg) pa, b = in(reg) pb, o = in(reg) po,
                out("st(0)") _, out("st(1)") _,
                options(nostack),
            ),
            // st(1) = a, st(0) = b: fsubp gives st(1) - st(0) = a - b.
            Arith::Sub => std::arch::asm!(
                "fld tbyte ptr [{a}]",
                "fld tbyte ptr [{b}]",
                "fsubp",
                "fstp tbyte ptr [{o}]",
                a = in(reg) pa, b = in(reg) pb, o = in(reg) po,
                out("st(0)") _, out("st(1)") _,
                options(nostack),
            ),
            Arith::Mul => std::arch::asm!(
                "fld tbyte ptr [{a}]",
                "fld tbyte ptr [{b}]",
                "fmulp",
                "fstp tbyte ptr [{o}]",
                a = in(reg) pa, b = in(reg) pb, o = in(reg) po,
                out("st(0)") _, out("st(1)") _,
                options(nostack),
            ),
        }
    }
    out
}

/// Elsewhere the operations do not exist ([`supported`] is false).
#[cfg(not(target_arch = "x86_64"))]
fn arith(a: LongDouble, _b: LongDouble, _op: Arith) -> LongDouble {
    a
}

/// True where the `long double` operations are implemented.
pub(crate) const fn supported() -> bool {
    cfg!(target_arch = "x86_64")
}

impl LongDouble {
    /// A key ordering non-NaN values as numbers (±0 equal).
    fn key(self) -> i128 {
        let mant = u64::from_le_bytes(self.0[0..8].try_into().expect("8 bytes"));
        let se = u16::from_le_bytes([self.0[8], self.0[9]]);
        let mag = (i128::from(se & 0x7fff) << 64) | i128::from(mant);
        if se & 0x8000 != 0 {
            -mag
        } else {
            mag
        }
    }
}

impl Num for LongDouble {
    #[inline]
    fn apply(k: Kind, a: Self, b: Self) -> Self {
        match k {
            Kind::Sum => arith(a, b, Arith::Add),
            Kind::Prod => arith(a, b, Arith::Mul),
            Kind::Min => {
                if b.key() < a.key() {
                    b
                } else {
                    a
                }
            }
            Kind::Max => {
                if b.key() > a.key() {
                    b
                } else {
                    a
                }
            }
            _ => a,
        }
    }
}

impl Num for ComplexLongDouble {
    #[inline]
    fn apply(k: Kind, a: Self, b: Self) -> Self {
        match k {
            Kind::Sum => ComplexLongDouble {
                re: arith(a.re, b.re, Arith::Add),
                im: arith(a.im, b.im, Arith::Add),
            },
            Kind::Prod => ComplexLongDouble {
                re: arith(
                    arith(a.re, b.re, Arith::Mul),
                    arith(a.im, b.im, Arith::Mul),
                    Arith::Sub,
                ),
                im: arith(
                    arith(a.re, b.im, Arith::Mul),
                    arith(a.im, b.re, Arith::Mul),
                    Arith::Add,
                ),
            },
            _ => a,
        }
    }
}

impl Num for LongDoubleInt {
    #[inline]
    fn apply(k: Kind, a: Self, b: Self) -> Self {
        let (ka, kb) = (a.v.key(), b.v.key());
        let pick_a = match k {
            Kind::MinLoc => ka < kb || (ka == kb && a.i <= b.i),
            Kind::MaxLoc => ka > kb || (ka == kb && a.i <= b.i),
            _ => true,
        };
        if pick_a {
            a
        } else {
            b
        }
    }
}

/// The one-sided accumulates' arithmetic on these types
/// ([`dos::rma::raw::set_foreign`]): `cur[i] = cur[i] op src[i]` on whole
/// elements, with dos's operation codes (Sum 1, Prod 2, Min 3, Max 4,
/// `MINLOC`, `MAXLOC`); false for a pair the standard does not define or
/// where `long double` is not implemented here.
pub(crate) fn combine(op: u8, ty: u8, cur: &mut [u8], src: &[u8]) -> bool {
    use dos::rma::raw;
    let k = match op {
        1 => Kind::Sum,
        2 => Kind::Prod,
        3 => Kind::Min,
        4 => Kind::Max,
        raw::MINLOC => Kind::MinLoc,
        raw::MAXLOC => Kind::MaxLoc,
        _ => return false,
    };
    fn each<T: Num>(k: Kind, cur: &mut [u8], src: &[u8]) -> bool {
        let sz = std::mem::size_of::<T>();
        if cur.len() != src.len() || cur.len() % sz != 0 {
            return false;
        }
        for (c, s) in cur.chunks_exact_mut(sz).zip(src.chunks_exact(sz)) {
            let a: T = bytemuck::pod_read_unaligned(c);
            let b: T = bytemuck::pod_read_unaligned(s);
            c.copy_from_slice(bytemuck::bytes_of(&T::apply(k, a, b)));
        }
        true
    }
    if !supported() {
        return false;
    }
    match (ty, k) {
        (raw::LONG_DOUBLE, Kind::Sum | Kind::Prod | Kind::Min | Kind::Max) => {
            each::<LongDouble>(k, cur, src)
        }
        (raw::COMPLEX_LONG_DOUBLE, Kind::Sum | Kind::Prod) => {
            each::<ComplexLongDouble>(k, cur, src)
        }
        (raw::LONG_DOUBLE_INT, Kind::MinLoc | Kind::MaxLoc) => each::<LongDoubleInt>(k, cur, src),
        _ => false,
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The x87 bytes of a small integer `n > 0`.
    fn int(n: u64) -> LongDouble {
        let shift = n.leading_zeros();
        let mant = n << shift;
        let exp = 16383 + 63 - shift as u16;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&mant.to_le_bytes());
        b[8..10].copy_from_slice(&exp.to_le_bytes());
        LongDouble(b)
    }

    fn neg(x: LongDouble) -> LongDouble {
        let mut b = x.0;
        b[9] ^= 0x80;
        LongDouble(b)
    }

    #[test]
    fn x87_arithmetic_and_order() {
        assert_eq!(LongDouble::apply(Kind::Sum, int(2), int(3)), int(5));
        assert_eq!(LongDouble::apply(Kind::Prod, int(6), int(7)), int(42));
        assert_eq!(arith(int(2), int(7), Arith::Sub), neg(int(5)));
        assert_eq!(
            LongDouble::apply(Kind::Min, int(9), neg(int(1))),
            neg(int(1))
        );
        assert_eq!(LongDouble::apply(Kind::Max, int(9), int(10)), int(10));
        // 2^64 + 1 is exact in 64 bits of significand only up to 2^64:
        // (2^63 + 1) + (2^63 + 1) = 2^64 + 2, exact in x87 (not in f64).
        let big = int((1 << 63) + 1);
        let s = LongDouble::apply(Kind::Sum, big, big);
        let mant = u64::from_le_bytes(s.0[..8].try_into().unwrap());
        assert_eq!(mant, (1 << 63) + 1);
        // (1 + 2i)(3 - i) = 5 + 5i
        let z = ComplexLongDouble::apply(
            Kind::Prod,
            ComplexLongDouble {
                re: int(1),
                im: int(2),
            },
            ComplexLongDouble {
                re: int(3),
                im: neg(int(1)),
            },
        );
        assert_eq!((z.re, z.im), (int(5), int(5)));
    }
}
