//! Accumulates that act on every lane of a 64-bit word alike, done a word
//! at a time: the wrapping sum of integers (carries stopped at the lane
//! boundaries) and the bitwise operations, on integers of 1, 2, 4 or 8
//! bytes.
//!
//! The target of an accumulate of coded type (the C binding's, MPI's
//! `MPI_Accumulate`) used to convert the operands into a `Vec<T>` and call
//! [`crate::op::Op::apply_right`], an iterator chain per element. In the
//! debug build, which runs the MPI test suites, that chain is several
//! function calls per element: 65% of the CPU of MPICH's
//! `large_acc_flush_local` (18.75 GB of `MPI_CHAR` sums), `Zip::next` on
//! top. Here the loop is a plain index loop over `u64` words with the
//! operation chosen once, outside it: sixteen `MPI_CHAR` lanes per word,
//! four words per step, and no call per step in either build. Window memory
//! aligned to a word is combined in place, without copies.

use super::target::{AccOp, AccType};
use crate::op;

/// The codes this module reads (those of [`super::raw`]).
mod code {
    use super::{op, AccOp, AccType};
    pub(super) const I8: u8 = <i8 as AccType>::CODE;
    pub(super) const U8: u8 = <u8 as AccType>::CODE;
    pub(super) const I16: u8 = <i16 as AccType>::CODE;
    pub(super) const U16: u8 = <u16 as AccType>::CODE;
    pub(super) const I32: u8 = <i32 as AccType>::CODE;
    pub(super) const U32: u8 = <u32 as AccType>::CODE;
    pub(super) const I64: u8 = <i64 as AccType>::CODE;
    pub(super) const U64: u8 = <u64 as AccType>::CODE;
    pub(super) const SUM: u8 = <op::Sum as AccOp>::CODE;
    pub(super) const BAND: u8 = <op::BitAnd as AccOp>::CODE;
    pub(super) const BOR: u8 = <op::BitOr as AccOp>::CODE;
    pub(super) const BXOR: u8 = <op::BitXor as AccOp>::CODE;
}
use code as raw;

/// A word-at-a-time operation: what to do and the lanes' top bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Wrapping sum in lanes whose top bits are the set bits of the mask.
    Sum(Word),
    /// Bitwise and.
    And,
    /// Bitwise or.
    Or,
    /// Bitwise exclusive or.
    Xor,
}

/// The word the kernels work on: 16 bytes, an integer the debug build
/// still adds without a call.
pub(crate) type Word = u128;

/// The top bit of every lane of `width` bytes.
const fn tops(width: usize) -> Word {
    let lane: Word = match width {
        1 => 0x80,
        2 => 0x8000,
        4 => 0x8000_0000,
        _ => 0x8000_0000_0000_0000,
    };
    let mut t = 0;
    let mut at = 0;
    while at < 16 {
        t |= lane << (8 * at);
        at += width;
    }
    t
}

impl Kernel {
    /// The kernel of operation code `opc` on element code `ty` (the codes
    /// of [`super::raw`]), if it has one: `MPI_SUM`, `MPI_BAND`, `MPI_BOR`,
    /// `MPI_BXOR` on the integer codes.
    pub(crate) fn of(opc: u8, ty: u8) -> Option<Kernel> {
        let width = match ty {
            raw::I8 | raw::U8 => 1,
            raw::I16 | raw::U16 => 2,
            raw::I32 | raw::U32 => 4,
            raw::I64 | raw::U64 => 8,
            _ => return None,
        };
        match opc {
            raw::SUM => Some(Kernel::Sum(tops(width))),
            raw::BAND => Some(Kernel::And),
            raw::BOR => Some(Kernel::Or),
            raw::BXOR => Some(Kernel::Xor),
            _ => None,
        }
    }

    /// `cur[i] = cur[i] op src[i]` for every word both hold.
    pub(crate) fn apply_words(self, cur: &mut [Word], src: &[Word]) {
        let n = cur.len().min(src.len());
        let (cur, src) = (&mut cur[..n], &src[..n]);
        // One loop per kernel, the choice made once; `while` with indexing,
        // which the debug build compiles without calls, four words a step.
        macro_rules! each {
            (|$a:ident, $b:ident| $e:expr) => {{
                let mut i = 0;
                while i + 4 <= n {
                    let ($a, $b) = (cur[i], src[i]);
                    cur[i] = $e;
                    let ($a, $b) = (cur[i + 1], src[i + 1]);
                    cur[i + 1] = $e;
                    let ($a, $b) = (cur[i + 2], src[i + 2]);
                    cur[i + 2] = $e;
                    let ($a, $b) = (cur[i + 3], src[i + 3]);
                    cur[i + 3] = $e;
                    i += 4;
                }
                while i < n {
                    let ($a, $b) = (cur[i], src[i]);
                    cur[i] = $e;
                    i += 1;
                }
            }};
        }
        match self {
            // The low bits of every lane add without reaching the next lane
            // (its top bit is clear in both); the top bit is the sum's bit
            // there, the carry out dropped.
            Kernel::Sum(h) => {
                let m = !h;
                each!(|a, b| ((a & m) + (b & m)) ^ ((a ^ b) & h))
            }
            Kernel::And => each!(|a, b| a & b),
            Kernel::Or => each!(|a, b| a | b),
            Kernel::Xor => each!(|a, b| a ^ b),
        }
    }

    /// `cur = cur op src` on bytes of whole elements (`cur.len() ==
    /// src.len()`, checked by the callers), through word copies of both.
    pub(crate) fn apply_bytes(self, cur: &mut [u8], src: &[u8]) {
        let mut a = words_of(cur);
        let b = words_of(src);
        self.apply_words(&mut a, &b);
        cur.copy_from_slice(&bytemuck::cast_slice::<Word, u8>(&a)[..cur.len()]);
    }

    /// `dst = dst op src` on `src.len()` bytes of window memory at `dst`
    /// (the caller holds the accumulate lock). Memory aligned to a word
    /// whose length is whole words is combined in place; other memory
    /// through a copy.
    ///
    /// # Safety
    /// `dst` is valid for `src.len()` bytes, and nothing else of this
    /// process refers to them during the call.
    pub(crate) unsafe fn apply_at(self, dst: *mut u8, src: &[u8]) {
        let n = src.len();
        let b = words_of(src);
        let whole = n % std::mem::size_of::<Word>() == 0;
        if whole && dst.align_offset(std::mem::align_of::<Word>()) == 0 {
            // SAFETY: `dst` is aligned for `Word` and valid for `n` bytes,
            // `n / 16` whole words; the caller excludes other references.
            let cur = unsafe { std::slice::from_raw_parts_mut(dst.cast::<Word>(), b.len()) };
            self.apply_words(cur, &b);
            return;
        }
        let mut cur: Vec<Word> = vec![0; b.len()];
        // SAFETY: the caller vouches for `n` bytes at `dst`; `cur` holds at
        // least `n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(dst, cur.as_mut_ptr().cast::<u8>(), n) };
        self.apply_words(&mut cur, &b);
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(cur.as_ptr().cast::<u8>(), dst, n) };
    }
}

/// `bytes` in aligned words, the last one padded with zeros.
pub(crate) fn words_of(bytes: &[u8]) -> Vec<Word> {
    let mut w: Vec<Word> = vec![0; bytes.len().div_ceil(std::mem::size_of::<Word>())];
    bytemuck::cast_slice_mut::<Word, u8>(&mut w)[..bytes.len()].copy_from_slice(bytes);
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{BitAnd, BitOr, BitXor, Op, Sum};
    use proptest::prelude::*;

    /// The element-wise model: the typed operation of `crate::op`.
    fn model(opc: u8, ty: u8, cur: &mut [u8], src: &[u8]) {
        fn typed<T: bytemuck::Pod, O: Op<T>>(cur: &mut [u8], src: &[u8], op: O) {
            let sz = std::mem::size_of::<T>();
            let mut a: Vec<T> = cur
                .chunks_exact(sz)
                .map(bytemuck::pod_read_unaligned)
                .collect();
            let b: Vec<T> = src
                .chunks_exact(sz)
                .map(bytemuck::pod_read_unaligned)
                .collect();
            op.apply_right(&mut a, &b);
            cur.copy_from_slice(bytemuck::cast_slice(&a));
        }
        macro_rules! on {
            ($t:ty) => {
                match opc {
                    raw::SUM => typed::<$t, _>(cur, src, Sum),
                    raw::BAND => typed::<$t, _>(cur, src, BitAnd),
                    raw::BOR => typed::<$t, _>(cur, src, BitOr),
                    _ => typed::<$t, _>(cur, src, BitXor),
                }
            };
        }
        match ty {
            raw::I8 => on!(i8),
            raw::U8 => on!(u8),
            raw::I16 => on!(i16),
            raw::U16 => on!(u16),
            raw::I32 => on!(i32),
            raw::U32 => on!(u32),
            raw::I64 => on!(i64),
            _ => on!(u64),
        }
    }

    const TYPES: [u8; 8] = [
        raw::I8,
        raw::U8,
        raw::I16,
        raw::U16,
        raw::I32,
        raw::U32,
        raw::I64,
        raw::U64,
    ];
    const OPS: [u8; 4] = [raw::SUM, raw::BAND, raw::BOR, raw::BXOR];

    #[test]
    fn only_lane_wise_pairs_have_a_kernel() {
        assert_eq!(Kernel::of(raw::SUM, <f64 as AccType>::CODE), None);
        assert_eq!(Kernel::of(<op::Prod as AccOp>::CODE, raw::I32), None);
        assert_eq!(Kernel::of(<op::Max as AccOp>::CODE, raw::U8), None);
        assert_eq!(
            Kernel::of(raw::SUM, raw::U8),
            Some(Kernel::Sum(0x8080_8080_8080_8080_8080_8080_8080_8080))
        );
    }

    #[test]
    fn carries_stop_at_lane_boundaries() {
        let mut cur = [0xffu8, 0x7f, 0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0xfe];
        let src = [0x01u8, 0x01, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03];
        assert_eq!(tops(2), 0x8000_8000_8000_8000_8000_8000_8000_8000);
        assert_eq!(tops(8), 0x8000_0000_0000_0000_8000_0000_0000_0000);
        Kernel::of(raw::SUM, raw::U8)
            .unwrap()
            .apply_bytes(&mut cur, &src);
        assert_eq!(cur, [0x00, 0x80, 0x00, 0x00, 0xfe, 0xfe, 0xfe, 0xfe, 0x01]);
    }

    proptest! {
        /// Every kernel against the element-wise model, on any length of
        /// whole elements (tails shorter than a word included) and any bytes.
        #[test]
        fn kernels_match_the_element_wise_model(
            t in 0usize..8,
            o in 0usize..4,
            elems in 0usize..40,
            seed in proptest::collection::vec(any::<u8>(), 640),
        ) {
            let (ty, opc) = (TYPES[t], OPS[o]);
            let sz = super::super::raw::type_size(ty).unwrap();
            let n = elems * sz;
            let src = &seed[..n];
            let mut cur = seed[320..320 + n].to_vec();
            let mut want = cur.clone();
            model(opc, ty, &mut want, src);
            Kernel::of(opc, ty).unwrap().apply_bytes(&mut cur, src);
            prop_assert_eq!(&cur, &want);
            // In window memory, aligned (in place) or not (through a copy).
            for shift in [0usize, 1] {
                let mut mem: Vec<Word> = vec![0; 24];
                let bytes = bytemuck::cast_slice_mut::<Word, u8>(&mut mem);
                bytes[shift..shift + n].copy_from_slice(&seed[320..320 + n]);
                let k = Kernel::of(opc, ty).unwrap();
                // SAFETY: `bytes` holds `shift + n` (at most 321) of its 384
                // bytes, referred to by nothing else during the call.
                unsafe { k.apply_at(bytes.as_mut_ptr().add(shift), src) };
                prop_assert_eq!(&bytes[shift..shift + n], &want[..]);
                prop_assert!(bytes[..shift].iter().chain(&bytes[shift + n..]).all(|&b| b == 0));
            }
        }
    }
}
