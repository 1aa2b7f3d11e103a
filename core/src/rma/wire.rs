//! One-sided operations carried in active messages (the generic path, for
//! peers whose window memory this process cannot reach directly).
//!
//! Ids 16..=29; little-endian, fixed-width fields. `win` is the window id,
//! `off` a byte offset in the target's window, `tok` the origin's token for
//! the reply.
//!
//! ```text
//! PUT      (16): win u32 | off u64 | bytes...
//! GET      (17): win u32 | off u64 | len u32 | tok u32
//! GETRESP  (18): tok u32 | status u8 | bytes...
//! ACC      (19): win u32 | off u64 | op u8 | ty u8 | bytes...
//! ATOMIC   (20): win u32 | off u64 | kind u8 | tok u32 | a u64 | b u64
//! ATOMRESP (21): tok u32 | status u8 | old u64
//! FLUSH    (22): tok u32 [| win u32 | PUTV entries...]   (with the last gathered puts)
//! FLUSHED  (23): tok u32 | rejected u32    (operations the target refused since the last FLUSH)
//! PUTV     (24): win u32 | { off u64 | len u32 | bytes[len] }...   (puts gathered in order)
//! GETACC   (25): win u32 | off u64 | op u8 | ty u8 | tok u32 | len u32 | bytes...   (operands, none for no-op; GETRESP answers with the old bytes)
//! POST     (26): win u32       (the target opened an exposure epoch to the receiver)
//! COMPLETE (27): win u32       (the origin ended its access epoch to the receiver)
//! GETV     (28): win u32 | tok u32 | { off u64 | len u32 }...   (pieces read in order; one GETRESP answers with their bytes, or refuses all)
//! ACCV     (29): win u32 | op u8 | ty u8 | PUTV entries...   (accumulates of many pieces, in order)
//! ```
//!
//! Statuses: 0 done, 1 refused (no such window, or outside it).

use crate::{Error, Result};
use dos_transport::codec;

/// First id of this protocol.
pub const FIRST_ID: u8 = 16;
/// Last id of this protocol.
pub const LAST_ID: u8 = 29;

pub const PUT: u8 = 16;
pub const GET: u8 = 17;
pub const GETRESP: u8 = 18;
pub const ACC: u8 = 19;
pub const ATOMIC: u8 = 20;
pub const ATOMRESP: u8 = 21;
pub const FLUSH: u8 = 22;
pub const FLUSHED: u8 = 23;
pub const PUTV: u8 = 24;
pub const GETACC: u8 = 25;
pub const POST: u8 = 26;
pub const COMPLETE: u8 = 27;
pub const GETV: u8 = 28;
pub const ACCV: u8 = 29;

/// Bytes of a PUTV entry besides its data: offset and length.
pub const PUTV_ENTRY: usize = 12;

/// Appends one put (`off`, `bytes`) to the body of a PUTV message.
pub fn putv_push(body: &mut Vec<u8>, off: u64, bytes: &[u8]) {
    body.extend_from_slice(&off.to_le_bytes());
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
}

/// The puts of a PUTV body (after its window id), in order; a malformed
/// entry ends the walk with an error (the ones before it stand).
pub fn putv_entries(body: &[u8], src: usize) -> impl Iterator<Item = Result<(u64, &[u8])>> {
    let mut r = Some(Reader::new(body, src));
    std::iter::from_fn(move || {
        let rd = r.as_mut()?;
        if rd.r.remaining() == 0 {
            return None;
        }
        let entry = (|| {
            let off = rd.u64()?;
            let len = rd.u32()? as usize;
            Ok((off, rd.take(len)?))
        })();
        if entry.is_err() {
            r = None;
        }
        Some(entry)
    })
}

/// Bytes of a GETV entry: offset and length.
pub const GETV_ENTRY: usize = 12;

/// Appends one piece (`off`, `len`) to the entries of a GETV message.
pub fn getv_push(body: &mut Vec<u8>, off: u64, len: u32) {
    body.extend_from_slice(&off.to_le_bytes());
    body.extend_from_slice(&len.to_le_bytes());
}

/// The pieces of GETV entries, in order; a malformed entry ends the walk
/// with an error.
pub fn getv_entries(body: &[u8], src: usize) -> impl Iterator<Item = Result<(u64, u32)>> + '_ {
    let mut r = Some(Reader::new(body, src));
    std::iter::from_fn(move || {
        let rd = r.as_mut()?;
        if rd.r.remaining() == 0 {
            return None;
        }
        let entry = rd.u64().and_then(|o| Ok((o, rd.u32()?)));
        if entry.is_err() {
            r = None;
        }
        Some(entry)
    })
}

/// Status of a reply: done.
pub const OK: u8 = 0;
/// Status of a reply: refused by the target.
pub const REFUSED: u8 = 1;

/// Kinds of remote atomic operations.
pub const FETCH_ADD: u8 = 1;
pub const COMPARE_SWAP: u8 = 2;
pub const SWAP: u8 = 3;

/// Reads little-endian fields off the front of a one-sided message: the
/// shared [`codec::Reader`], with its errors blamed on the sender.
pub struct Reader<'a> {
    r: codec::Reader<'a>,
    src: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8], src: usize) -> Reader<'a> {
        Reader {
            r: codec::Reader::new(b),
            src,
        }
    }

    fn check<T>(&self, v: std::result::Result<T, codec::CodecError>) -> Result<T> {
        v.map_err(|e| Error::Protocol {
            src: self.src,
            reason: match e {
                codec::CodecError::Trailing => "one-sided message too long",
                _ => "short one-sided message",
            },
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let v = self.r.take(n);
        self.check(v)
    }

    pub fn u8(&mut self) -> Result<u8> {
        let v = self.r.u8();
        self.check(v)
    }

    pub fn u32(&mut self) -> Result<u32> {
        let v = self.r.u32();
        self.check(v)
    }

    pub fn u64(&mut self) -> Result<u64> {
        let v = self.r.u64();
        self.check(v)
    }

    /// The rest of the message.
    pub fn rest(self) -> &'a [u8] {
        self.r.rest()
    }

    /// Fails unless the message was read to its end.
    pub fn end(self) -> Result<()> {
        let v = self.r.end();
        self.check(v)
    }
}

/// Writes little-endian fields into a fixed buffer.
pub struct Writer<const N: usize> {
    b: [u8; N],
    n: usize,
}

impl<const N: usize> Default for Writer<N> {
    fn default() -> Self {
        Writer { b: [0; N], n: 0 }
    }
}

impl<const N: usize> Writer<N> {
    pub fn u8(mut self, v: u8) -> Self {
        self.b[self.n] = v;
        self.n += 1;
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.b[self.n..self.n + 4].copy_from_slice(&v.to_le_bytes());
        self.n += 4;
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.b[self.n..self.n + 8].copy_from_slice(&v.to_le_bytes());
        self.n += 8;
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_round_trip_and_short_input_is_an_error() {
        let w = Writer::<32>::default().u32(7).u64(1 << 40).u8(3);
        assert_eq!(w.bytes(), [7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 3]);
        let mut r = Reader::new(w.bytes(), 0);
        assert_eq!(
            (r.u32().unwrap(), r.u64().unwrap(), r.u8().unwrap()),
            (7, 1 << 40, 3)
        );
        r.end().unwrap();
        let mut r = Reader::new(&w.bytes()[..5], 0);
        r.u32().unwrap();
        assert!(matches!(r.u64(), Err(Error::Protocol { .. })));
        let mut r = Reader::new(w.bytes(), 0);
        r.u32().unwrap();
        assert!(r.end().is_err());
    }

    #[test]
    fn gathered_puts_round_trip_and_a_bad_tail_stops_the_walk() {
        let mut body = Vec::new();
        putv_push(&mut body, 8, &[1, 2, 3]);
        putv_push(&mut body, 0, &[]);
        putv_push(&mut body, 1 << 40, &[9; 100]);
        let got: Vec<(u64, Vec<u8>)> = putv_entries(&body, 3)
            .map(|e| e.map(|(o, b)| (o, b.to_vec())).unwrap())
            .collect();
        assert_eq!(
            got,
            [(8, vec![1, 2, 3]), (0, vec![]), (1 << 40, vec![9; 100])]
        );
        // A length past the end: the entries before stand, then one error.
        let mut bad = body.clone();
        putv_push(&mut bad, 5, &[7; 10]);
        bad.truncate(bad.len() - 1);
        let walk: Vec<_> = putv_entries(&bad, 3).collect();
        assert_eq!(walk.len(), 4);
        assert!(walk[..3].iter().all(Result::is_ok));
        assert!(matches!(walk[3], Err(Error::Protocol { src: 3, .. })));
    }

    proptest! {
        #[test]
        fn getv_entries_decode_as_pushed_and_garbage_never_panics(
            pieces in proptest::collection::vec((any::<u64>(), any::<u32>()), 0..30),
            junk in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut body = Vec::new();
            for &(o, l) in &pieces {
                getv_push(&mut body, o, l);
            }
            prop_assert_eq!(body.len(), pieces.len() * GETV_ENTRY);
            let got: Vec<(u64, u32)> = getv_entries(&body, 0).map(Result::unwrap).collect();
            prop_assert_eq!(got, pieces);
            let walk: Vec<_> = getv_entries(&junk, 2).collect();
            prop_assert_eq!(walk.len(), junk.len().div_ceil(GETV_ENTRY));
            prop_assert_eq!(walk.iter().filter(|e| e.is_err()).count(), usize::from(junk.len() % GETV_ENTRY != 0));
        }

        #[test]
        fn reader_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut r = Reader::new(&b, 0);
            let _ = r.u32().and_then(|_| r.u64()).and_then(|_| r.u8());
        }

        #[test]
        fn gathered_puts_decode_as_pushed_and_garbage_never_panics(
            puts in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..50)), 0..20),
            junk in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut body = Vec::new();
            for (o, b) in &puts {
                putv_push(&mut body, *o, b);
            }
            let got: Vec<(u64, Vec<u8>)> = putv_entries(&body, 0)
                .map(|e| e.map(|(o, b)| (o, b.to_vec())).unwrap())
                .collect();
            prop_assert_eq!(got, puts);
            // Random bytes: entries or one error at the end, never more than fit.
            let n = putv_entries(&junk, 0).count();
            prop_assert!(n <= junk.len() / 12 + 1);
        }
    }
}
