//! One bounds-checked reader and writer for the little-endian byte formats of
//! dos's control and service protocols (the wire-up protocol, the launcher's
//! control frames, one-sided messages).
//!
//! Every read checks the bytes left and returns a [`CodecError`] instead of
//! panicking; each protocol turns that into its own typed error with
//! [`CodecError::reason`]. Length-prefixed fields and list counts are checked
//! against the bytes left before anything is allocated, so a lying length
//! cannot make a decoder allocate.
//!
//! The RoCE codec (`roce::wire`) is not written with this: it must match the
//! InfiniBand wire bit for bit, in network byte order.
//!
//! ```
//! use dos_transport::codec::{CodecError, Reader, Writer};
//! let mut w = Writer::new();
//! w.u8(7).u32(0xdead_beef).bytes32(b"key");
//! let v = w.into_vec();
//! let mut r = Reader::new(&v);
//! assert_eq!(r.u8(), Ok(7));
//! assert_eq!(r.u32(), Ok(0xdead_beef));
//! assert_eq!(r.bytes32(), Ok(&b"key"[..]));
//! assert_eq!(r.end(), Ok(()));
//! assert_eq!(Reader::new(&v[..3]).u32(), Err(CodecError::Truncated));
//! ```

use std::fmt;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer bytes than the field needs.
    Truncated,
    /// Bytes left after the last field.
    Trailing,
    /// A list count larger than the bytes left could hold.
    CountTooLarge,
    /// A string field that is not UTF-8.
    NotUtf8,
}

impl CodecError {
    /// A short reason, for the protocol's own error.
    pub fn reason(self) -> &'static str {
        match self {
            CodecError::Truncated => "truncated message",
            CodecError::Trailing => "trailing bytes in message",
            CodecError::CountTooLarge => "list longer than the message",
            CodecError::NotUtf8 => "string is not UTF-8",
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for CodecError {}

/// A cursor over a message; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `b` from its start.
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.b.len() {
            return Err(CodecError::Truncated);
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, CodecError> {
        self.array().map(i32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Bytes preceded by their length as a `u16`.
    pub fn bytes16(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// Bytes preceded by their length as a `u32`.
    pub fn bytes32(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A UTF-8 string preceded by its length as a `u32`.
    pub fn str32(&mut self) -> Result<&'a str, CodecError> {
        utf8(self.bytes32()?)
    }

    /// A list count as a `u32`, checked against the bytes left: each item
    /// takes at least `min_item` bytes, so a lying count cannot make the
    /// caller allocate.
    pub fn count(&mut self, min_item: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.b.len() {
            return Err(CodecError::CountTooLarge);
        }
        Ok(n)
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.b.len()
    }

    /// The rest of the message.
    pub fn rest(self) -> &'a [u8] {
        self.b
    }

    /// Fails unless the message was read to its end.
    pub fn end(&self) -> Result<(), CodecError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing)
        }
    }
}

/// `b` as UTF-8.
pub fn utf8(b: &[u8]) -> Result<&str, CodecError> {
    std::str::from_utf8(b).map_err(|_| CodecError::NotUtf8)
}

/// Appends little-endian fields to a growable buffer (the counterpart of
/// [`Reader`]).
#[derive(Debug, Default)]
pub struct Writer {
    v: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Appends to `v`.
    pub fn from_vec(v: Vec<u8>) -> Writer {
        Writer { v }
    }

    /// A byte.
    pub fn u8(&mut self, x: u8) -> &mut Writer {
        self.v.push(x);
        self
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, x: u16) -> &mut Writer {
        self.v.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, x: u32) -> &mut Writer {
        self.v.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A little-endian `i32`.
    pub fn i32(&mut self, x: i32) -> &mut Writer {
        self.v.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, x: u64) -> &mut Writer {
        self.v.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// Raw bytes, no length.
    pub fn raw(&mut self, b: &[u8]) -> &mut Writer {
        self.v.extend_from_slice(b);
        self
    }

    /// Bytes preceded by their length as a `u16`.
    ///
    /// # Panics
    /// If `b` is longer than `u16::MAX`: callers check their limits first.
    pub fn bytes16(&mut self, b: &[u8]) -> &mut Writer {
        let n = u16::try_from(b.len()).expect("field longer than u16::MAX");
        self.u16(n).raw(b)
    }

    /// Bytes preceded by their length as a `u32`.
    ///
    /// # Panics
    /// If `b` is longer than `u32::MAX`: callers check their limits first.
    pub fn bytes32(&mut self, b: &[u8]) -> &mut Writer {
        let n = u32::try_from(b.len()).expect("field longer than u32::MAX");
        self.u32(n).raw(b)
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// The message.
    pub fn into_vec(self) -> Vec<u8> {
        self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_reads_fail_and_consume_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(CodecError::Truncated));
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.u16(), Ok(0x0201));
        assert_eq!(r.end(), Err(CodecError::Trailing));
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn lying_count_is_refused() {
        let mut w = Writer::new();
        w.u32(1_000_000).u64(0);
        let v = w.into_vec();
        assert_eq!(Reader::new(&v).count(8), Err(CodecError::CountTooLarge));
        assert_eq!(Reader::new(&v).count(1), Err(CodecError::CountTooLarge));
        let mut w = Writer::new();
        w.u32(1).u64(0);
        assert_eq!(Reader::new(&w.into_vec()).count(8), Ok(1));
    }

    #[test]
    fn bad_utf8_is_refused() {
        let mut w = Writer::new();
        w.bytes32(&[0xff, 0xfe]);
        assert_eq!(Reader::new(&w.into_vec()).str32(), Err(CodecError::NotUtf8));
    }

    proptest! {
        #[test]
        fn round_trip(a: u8, b: u16, c: u32, d: i32, e: u64, s in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut w = Writer::new();
            w.u8(a).u16(b).u32(c).i32(d).u64(e).bytes16(&s).bytes32(&s);
            let v = w.into_vec();
            let mut r = Reader::new(&v);
            prop_assert_eq!(r.u8(), Ok(a));
            prop_assert_eq!(r.u16(), Ok(b));
            prop_assert_eq!(r.u32(), Ok(c));
            prop_assert_eq!(r.i32(), Ok(d));
            prop_assert_eq!(r.u64(), Ok(e));
            prop_assert_eq!(r.bytes16(), Ok(&s[..]));
            prop_assert_eq!(r.bytes32(), Ok(&s[..]));
            prop_assert_eq!(r.end(), Ok(()));
        }

        #[test]
        fn any_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&v);
            let _ = r.u8();
            let _ = r.bytes16();
            let _ = r.count(4);
            let _ = r.str32();
            let _ = r.u64();
            let _ = r.end();
        }
    }
}
