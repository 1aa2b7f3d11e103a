//! Point-to-point protocol headers carried in transport active messages.
//!
//! The protocol version is the active-message id space itself: ids 1..=3 are
//! version 1 of this protocol; a change of any header below takes new ids.
//! All fields are little-endian and fixed-width.
//!
//! ```text
//! EAGER (id 1): ctx u32 | src u32 | tag i32 | payload...
//! RTS   (id 2): ctx u32 | src u32 | tag i32 | len u64 | sreq u32 | rkey_len u8 | rkey...
//! FIN   (id 3): sreq u32 | status u8
//! CTS   (id 4): sreq u32 | rreq u32            (pipelined rendezvous: "send it")
//! DATA  (id 5): rreq u32 | offset u64 | bytes... (one chunk of a pipelined payload)
//! BYE   (id 6): (empty)                        (the sender finalized)
//! PUTCTS(id 7): sreq u32 | rreq u32 | rkey_len u8 | rkey... ("put it there": the
//!               receiver registered its buffer with the network transport)
//! DONE  (id 8): rreq u32                       (every put of the payload is in place)
//! ```

use crate::{Error, Result};
use dos_transport::{AmId, RemoteKey, MAX_RKEY};

/// Eager message: header then the whole payload.
pub const AM_EAGER: AmId = 1;
/// Ready-to-send: the receiver fetches the payload from the sender's registered buffer.
pub const AM_RTS: AmId = 2;
/// The receiver is done with a rendezvous payload; the sender's request completes.
pub const AM_FIN: AmId = 3;

/// Clear-to-send: the receiver asks for a rendezvous payload in chunks.
pub const AM_CTS: AmId = 4;
/// One chunk of a pipelined rendezvous payload.
pub const AM_DATA: AmId = 5;

/// Goodbye: the sender has finalized; its connection closing next is no failure.
pub const AM_BYE: AmId = 6;

/// Clear-to-send with the receiver's registered buffer: the sender puts the payload there.
pub const AM_PUTCTS: AmId = 7;
/// All puts of a rendezvous payload were sent (they arrive before this).
pub const AM_DONE: AmId = 8;

/// Largest encoded PUTCTS.
pub const PUTCTS_MAX: usize = 9 + MAX_RKEY;
/// Size of an encoded DONE.
pub const DONE_LEN: usize = 4;

/// Size of an encoded CTS.
pub const CTS_LEN: usize = 8;
/// Size of a DATA header.
pub const DATA_HDR: usize = 12;

/// Size of an encoded [`Envelope`].
pub const ENVELOPE_LEN: usize = 12;
/// Largest encoded RTS header.
pub const RTS_MAX: usize = ENVELOPE_LEN + 8 + 4 + 1 + MAX_RKEY;
/// Size of an encoded FIN.
pub const FIN_LEN: usize = 5;

/// Matching information of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Communicator context id.
    pub ctx: u32,
    /// Sender's rank in that communicator.
    pub src: u32,
    /// Tag.
    pub tag: i32,
}

impl Envelope {
    /// Encodes into 12 bytes.
    #[inline]
    pub fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        b[0..4].copy_from_slice(&self.ctx.to_le_bytes());
        b[4..8].copy_from_slice(&self.src.to_le_bytes());
        b[8..12].copy_from_slice(&self.tag.to_le_bytes());
        b
    }

    /// Decodes the front of `b`, returning the envelope and the rest.
    #[inline]
    pub fn decode(b: &[u8]) -> Option<(Envelope, &[u8])> {
        if b.len() < ENVELOPE_LEN {
            return None;
        }
        let w = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Some((
            Envelope {
                ctx: u32::from_le_bytes(w(0)),
                src: u32::from_le_bytes(w(4)),
                tag: i32::from_le_bytes(w(8)),
            },
            &b[ENVELOPE_LEN..],
        ))
    }
}

/// A ready-to-send announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rts {
    /// Matching information.
    pub env: Envelope,
    /// Payload length in bytes.
    pub len: u64,
    /// The sender's request id, echoed in FIN.
    pub sreq: u32,
    /// Key of the sender's registered buffer.
    pub rkey: RemoteKey,
}

impl Rts {
    /// Encodes into `out`, returning the used length.
    pub fn encode(&self, out: &mut [u8; RTS_MAX]) -> usize {
        out[..ENVELOPE_LEN].copy_from_slice(&self.env.encode());
        out[12..20].copy_from_slice(&self.len.to_le_bytes());
        out[20..24].copy_from_slice(&self.sreq.to_le_bytes());
        let k = self.rkey.as_bytes();
        out[24] = k.len() as u8;
        out[25..25 + k.len()].copy_from_slice(k);
        25 + k.len()
    }

    /// Decodes an RTS; never panics.
    pub fn decode(b: &[u8], src: usize) -> Result<Rts> {
        let bad = |reason| Error::Protocol { src, reason };
        let (env, rest) = Envelope::decode(b).ok_or(bad("short RTS"))?;
        if rest.len() < 13 {
            return Err(bad("short RTS"));
        }
        let len = u64::from_le_bytes(rest[0..8].try_into().expect("8"));
        let sreq = u32::from_le_bytes(rest[8..12].try_into().expect("4"));
        let klen = rest[12] as usize;
        let key = rest.get(13..13 + klen).ok_or(bad("RTS key truncated"))?;
        let rkey = RemoteKey::from_bytes(key).map_err(|_| bad("RTS key too long"))?;
        Ok(Rts {
            env,
            len,
            sreq,
            rkey,
        })
    }
}

/// FIN status: the payload was fetched.
pub const FIN_OK: u8 = 0;
/// FIN status: the receiver failed to fetch the payload.
pub const FIN_FAILED: u8 = 1;

/// Encodes a FIN.
pub fn fin_encode(sreq: u32, status: u8) -> [u8; FIN_LEN] {
    let mut b = [0u8; FIN_LEN];
    b[..4].copy_from_slice(&sreq.to_le_bytes());
    b[4] = status;
    b
}

/// Decodes a FIN; never panics.
pub fn fin_decode(b: &[u8], src: usize) -> Result<(u32, u8)> {
    if b.len() != FIN_LEN {
        return Err(Error::Protocol {
            src,
            reason: "FIN of wrong length",
        });
    }
    Ok((u32::from_le_bytes(b[..4].try_into().expect("4")), b[4]))
}

/// Encodes a CTS.
pub fn cts_encode(sreq: u32, rreq: u32) -> [u8; CTS_LEN] {
    let mut b = [0u8; CTS_LEN];
    b[..4].copy_from_slice(&sreq.to_le_bytes());
    b[4..].copy_from_slice(&rreq.to_le_bytes());
    b
}

/// Decodes a CTS into `(sreq, rreq)`; never panics.
pub fn cts_decode(b: &[u8], src: usize) -> Result<(u32, u32)> {
    if b.len() != CTS_LEN {
        return Err(Error::Protocol {
            src,
            reason: "CTS of wrong length",
        });
    }
    Ok((
        u32::from_le_bytes(b[..4].try_into().expect("4")),
        u32::from_le_bytes(b[4..].try_into().expect("4")),
    ))
}

/// Encodes a PUTCTS into `out`; returns its length.
pub fn putcts_encode(sreq: u32, rreq: u32, rkey: &RemoteKey, out: &mut [u8; PUTCTS_MAX]) -> usize {
    let k = rkey.as_bytes();
    out[..4].copy_from_slice(&sreq.to_le_bytes());
    out[4..8].copy_from_slice(&rreq.to_le_bytes());
    out[8] = k.len() as u8;
    out[9..9 + k.len()].copy_from_slice(k);
    9 + k.len()
}

/// Decodes a PUTCTS into `(sreq, rreq, rkey)`; never panics.
pub fn putcts_decode(b: &[u8], src: usize) -> Result<(u32, u32, RemoteKey)> {
    let bad = |reason| Error::Protocol { src, reason };
    if b.len() < 9 || b.len() != 9 + b[8] as usize {
        return Err(bad("PUTCTS of wrong length"));
    }
    let rkey = RemoteKey::from_bytes(&b[9..]).map_err(|_| bad("PUTCTS key too long"))?;
    Ok((
        u32::from_le_bytes(b[..4].try_into().expect("4")),
        u32::from_le_bytes(b[4..8].try_into().expect("4")),
        rkey,
    ))
}

/// Decodes a DONE into `rreq`; never panics.
pub fn done_decode(b: &[u8], src: usize) -> Result<u32> {
    match <[u8; DONE_LEN]>::try_from(b) {
        Ok(a) => Ok(u32::from_le_bytes(a)),
        Err(_) => Err(Error::Protocol {
            src,
            reason: "DONE of wrong length",
        }),
    }
}

/// Encodes a DATA header.
#[inline]
pub fn data_encode(rreq: u32, offset: u64) -> [u8; DATA_HDR] {
    let mut b = [0u8; DATA_HDR];
    b[..4].copy_from_slice(&rreq.to_le_bytes());
    b[4..].copy_from_slice(&offset.to_le_bytes());
    b
}

/// Decodes a DATA message into `(rreq, offset, bytes)`; never panics.
#[inline]
pub fn data_decode(b: &[u8], src: usize) -> Result<(u32, u64, &[u8])> {
    if b.len() < DATA_HDR {
        return Err(Error::Protocol {
            src,
            reason: "short DATA header",
        });
    }
    Ok((
        u32::from_le_bytes(b[..4].try_into().expect("4")),
        u64::from_le_bytes(b[4..12].try_into().expect("8")),
        &b[DATA_HDR..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelope_golden() {
        let e = Envelope {
            ctx: 2,
            src: 0x0102,
            tag: -1,
        };
        assert_eq!(e.encode(), [2, 0, 0, 0, 2, 1, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(Envelope::decode(&e.encode()).unwrap().0, e);
    }

    #[test]
    fn rts_golden_and_round_trip() {
        let r = Rts {
            env: Envelope {
                ctx: 1,
                src: 3,
                tag: 7,
            },
            len: 1 << 20,
            sreq: 9,
            rkey: RemoteKey::from_bytes(&[0xaa, 0xbb]).unwrap(),
        };
        let mut b = [0u8; RTS_MAX];
        let n = r.encode(&mut b);
        assert_eq!(
            &b[..n],
            &[
                1, 0, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2, 0xaa,
                0xbb
            ]
        );
        assert_eq!(Rts::decode(&b[..n], 0).unwrap(), r);
        assert!(Rts::decode(&b[..n - 1], 0).is_err());
    }

    #[test]
    fn fin_golden() {
        assert_eq!(fin_encode(0x01020304, FIN_FAILED), [4, 3, 2, 1, 1]);
        assert_eq!(fin_decode(&[4, 3, 2, 1, 1], 0).unwrap(), (0x01020304, 1));
        assert!(fin_decode(&[1, 2], 0).is_err());
    }

    #[test]
    fn putcts_and_done_golden() {
        let key = RemoteKey::from_bytes(&[0xaa, 0xbb]).unwrap();
        let mut b = [0u8; PUTCTS_MAX];
        let n = putcts_encode(1, 0x0200, &key, &mut b);
        assert_eq!(&b[..n], [1, 0, 0, 0, 0, 2, 0, 0, 2, 0xaa, 0xbb]);
        assert_eq!(putcts_decode(&b[..n], 0).unwrap(), (1, 0x0200, key));
        assert!(putcts_decode(&b[..n - 1], 0).is_err());
        assert!(putcts_decode(&[0; 8], 0).is_err());
        assert_eq!(done_decode(&7u32.to_le_bytes(), 0).unwrap(), 7);
        assert!(done_decode(&[0; 5], 0).is_err());
    }

    #[test]
    fn cts_and_data_golden() {
        assert_eq!(cts_encode(1, 0x0200), [1, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(cts_decode(&cts_encode(7, 9), 0).unwrap(), (7, 9));
        assert!(cts_decode(&[0; 7], 0).is_err());
        let h = data_encode(3, 0x10000);
        assert_eq!(h, [3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
        let mut m = h.to_vec();
        m.extend_from_slice(b"xy");
        assert_eq!(data_decode(&m, 0).unwrap(), (3, 0x10000, &b"xy"[..]));
        assert!(data_decode(&m[..11], 0).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Envelope::decode(&b);
            let _ = Rts::decode(&b, 0);
            let _ = fin_decode(&b, 0);
            let _ = cts_decode(&b, 0);
            let _ = putcts_decode(&b, 0);
            let _ = done_decode(&b, 0);
            let _ = data_decode(&b, 0);
        }
    }
}
