//! The RPC protocol: active messages 32 to 34.
//!
//! ```text
//! REQ   (32): flags u8 | call u64 | handler u64 | arguments
//! REP   (33): call u64 | status u8 | result (status OK), or a UTF-8 message
//! BATCH (34): { id u8 (REQ or REP) | len u32 | that message's len bytes }*
//! ```
//!
//! Little-endian integers. `handler` is the FNV-1a hash of the handler's
//! name ([`handler_id`]); `call` numbers the caller's calls (0 for one-way
//! requests, which get no reply). A request or reply that does not decode is
//! a protocol error of its sender (the engine reports it and drops it); a
//! reply to no call in flight is dropped.

use crate::{Error, Result};

/// First id of this protocol.
pub const FIRST_ID: u8 = 32;
/// Last id of this protocol.
pub const LAST_ID: u8 = 34;
/// A request.
pub const REQ: u8 = 32;
/// A reply.
pub const REP: u8 = 33;
/// Several requests and replies to one rank in one message (aggregation).
pub const BATCH: u8 = 34;
/// Bytes of a BATCH entry's header.
pub const ENTRY_LEN: usize = 5;

/// Appends a REQ or REP (`id`, header `hdr`, then `body`) to a batch.
pub fn batch_push(batch: &mut Vec<u8>, id: u8, hdr: &[u8], body: &[u8]) {
    batch.push(id);
    batch.extend_from_slice(&((hdr.len() + body.len()) as u32).to_le_bytes());
    batch.extend_from_slice(hdr);
    batch.extend_from_slice(body);
}

/// The entries of a batch from `src`, in order: `(id, message)`; an entry
/// that is cut short or is neither REQ nor REP is an error (entries before
/// it were fine).
pub fn batch_entries(data: &[u8], src: usize) -> impl Iterator<Item = Result<(u8, &[u8])>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bad = |reason| Some(Err(Error::Protocol { src, reason }));
        if rest.len() < ENTRY_LEN {
            rest = &[];
            return bad("short RPC batch entry");
        }
        let id = rest[0];
        let len = u32::from_le_bytes(rest[1..5].try_into().expect("4")) as usize;
        if id != REQ && id != REP {
            rest = &[];
            return bad("RPC batch entry of another kind");
        }
        if rest.len() - ENTRY_LEN < len {
            rest = &[];
            return bad("RPC batch entry cut short");
        }
        let msg = &rest[ENTRY_LEN..ENTRY_LEN + len];
        rest = &rest[ENTRY_LEN + len..];
        Some(Ok((id, msg)))
    })
}

/// REQ flag: no reply is wanted.
pub const ONE_WAY: u8 = 1;

/// Bytes of a REQ header.
pub const REQ_LEN: usize = 17;
/// Bytes of a REP header.
pub const REP_LEN: usize = 9;

/// Reply statuses.
pub mod status {
    /// The handler ran and returned a result.
    pub const OK: u8 = 0;
    /// No handler of that name on the target.
    pub const UNKNOWN: u8 = 1;
    /// The arguments did not decode as the handler's argument type.
    pub const BAD_ARGS: u8 = 2;
    /// The handler returned an error.
    pub const FAILED: u8 = 3;
    /// The handler panicked.
    pub const PANICKED: u8 = 4;
}

/// The stable id of a handler name: 64-bit FNV-1a.
pub const fn handler_id(name: &str) -> u64 {
    let b = name.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// A decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Req {
    /// [`ONE_WAY`] or 0.
    pub flags: u8,
    /// The caller's call number.
    pub call: u64,
    /// [`handler_id`] of the handler.
    pub handler: u64,
}

impl Req {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; REQ_LEN] {
        let mut b = [0u8; REQ_LEN];
        b[0] = self.flags;
        b[1..9].copy_from_slice(&self.call.to_le_bytes());
        b[9..17].copy_from_slice(&self.handler.to_le_bytes());
        b
    }

    /// The header and the arguments after it.
    pub fn decode(data: &[u8], src: usize) -> Result<(Req, &[u8])> {
        if data.len() < REQ_LEN {
            return Err(short(src, "short RPC request"));
        }
        let flags = data[0];
        if flags & !ONE_WAY != 0 {
            return Err(short(src, "unknown RPC request flags"));
        }
        Ok((
            Req {
                flags,
                call: u64::from_le_bytes(data[1..9].try_into().expect("8")),
                handler: u64::from_le_bytes(data[9..17].try_into().expect("8")),
            },
            &data[REQ_LEN..],
        ))
    }
}

/// A decoded reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rep {
    /// The call it answers.
    pub call: u64,
    /// One of [`status`].
    pub status: u8,
}

impl Rep {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; REP_LEN] {
        let mut b = [0u8; REP_LEN];
        b[..8].copy_from_slice(&self.call.to_le_bytes());
        b[8] = self.status;
        b
    }

    /// The header and the payload after it.
    pub fn decode(data: &[u8], src: usize) -> Result<(Rep, &[u8])> {
        if data.len() < REP_LEN {
            return Err(short(src, "short RPC reply"));
        }
        let status = data[8];
        if status > status::PANICKED {
            return Err(short(src, "unknown RPC reply status"));
        }
        Ok((
            Rep {
                call: u64::from_le_bytes(data[..8].try_into().expect("8")),
                status,
            },
            &data[REP_LEN..],
        ))
    }
}

fn short(src: usize, reason: &'static str) -> Error {
    Error::Protocol { src, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        let r = Req {
            flags: ONE_WAY,
            call: 0x0102,
            handler: 0xAABB,
        };
        assert_eq!(
            r.encode(),
            [1, 2, 1, 0, 0, 0, 0, 0, 0, 0xBB, 0xAA, 0, 0, 0, 0, 0, 0]
        );
        let p = Rep {
            call: 7,
            status: status::PANICKED,
        };
        assert_eq!(p.encode(), [7, 0, 0, 0, 0, 0, 0, 0, 4]);
        // FNV-1a's published test vectors.
        assert_eq!(handler_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(handler_id("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn bad_headers_are_protocol_errors() {
        assert!(Req::decode(&[0; 16], 3).is_err());
        let mut b = Req {
            flags: 0,
            call: 1,
            handler: 2,
        }
        .encode();
        b[0] = 2;
        assert!(Req::decode(&b, 3).is_err());
        assert!(Rep::decode(&[0; 8], 3).is_err());
        assert!(Rep::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 9], 3).is_err());
    }

    #[test]
    fn batches_round_trip_and_refuse_garbage() {
        let mut b = Vec::new();
        let r = Req {
            flags: 0,
            call: 9,
            handler: 3,
        }
        .encode();
        batch_push(&mut b, REQ, &r, b"args");
        let p = Rep { call: 9, status: 0 }.encode();
        batch_push(&mut b, REP, &p, b"");
        let got: Vec<_> = batch_entries(&b, 1).collect::<Result<_>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, REQ);
        assert_eq!(Req::decode(got[0].1, 1).unwrap().1, b"args");
        assert_eq!(got[1], (REP, &p[..]));
        // Cut anywhere inside the second entry: the first still decodes.
        for cut in b.len() - 13..b.len() {
            let v: Vec<_> = batch_entries(&b[..cut], 1).collect();
            assert!(v[0].is_ok() && v.last().unwrap().is_err(), "cut {cut}");
        }
        let mut other = b.clone();
        other[0] = 7;
        assert!(batch_entries(&other, 1).next().unwrap().is_err());
    }

    proptest! {
        #[test]
        fn batch_decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            for (id, m) in batch_entries(&data, 0).flatten() {
                let _ = if id == REQ { Req::decode(m, 0).map(|_| ()) } else { Rep::decode(m, 0).map(|_| ()) };
            }
        }

        #[test]
        fn headers_round_trip(flags in 0u8..2, call: u64, handler: u64, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = Req { flags, call, handler };
            let mut b = r.encode().to_vec();
            b.extend_from_slice(&tail);
            let (d, rest) = Req::decode(&b, 0).unwrap();
            prop_assert_eq!(d, r);
            prop_assert_eq!(rest, &tail[..]);
            let p = Rep { call, status: flags * 4 };
            let mut b = p.encode().to_vec();
            b.extend_from_slice(&tail);
            let (d, rest) = Rep::decode(&b, 0).unwrap();
            prop_assert_eq!(d, p);
            prop_assert_eq!(rest, &tail[..]);
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Req::decode(&data, 0);
            let _ = Rep::decode(&data, 0);
        }
    }
}
