//! What the tcp backend puts on the wire: frame headers, endpoint addresses and the
//! context string of its connection handshake. All integers are little-endian.
//!
//! ```text
//! frame:    0 magic 0xD7 | 1 version 2 | 2 AM id (0 for a put) | 3 kind (0 AM, 1 put)
//!           | 4..8 payload length u32 | payload
//!           AM:  header and body of the active message, contiguous
//!           put: 0..4 region u32 | 4..8 key u32 | 8..16 offset u64 | the bytes to write
//! rkey:     0 'T' | 1 version 1 | 2..4 zero | 4..8 region u32 | 8..12 key u32 | 12..20 length u64
//! address:  0 version 1 | 1 family (4 or 6) | 2..4 port u16 | IPv4 (4 bytes) or IPv6 (16 bytes)
//! auth ctx: "dos-tcp\0" | frame version 2 | 3 zero bytes | number of peers u32
//! ```
//!
//! A connection starts with the [`crate::auth`] handshake (with [`auth_context`]),
//! then carries frames only. A payload length above the receiver's `max_am` is a
//! protocol error: the receiver closes the connection instead of allocating for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{AmId, Error, Result};

/// First byte of every frame.
pub const FRAME_MAGIC: u8 = 0xD7;
/// Frame format version; bump on any change.
pub const FRAME_VERSION: u8 = 2;
/// Size of the header of a put, after the frame header.
pub const PUT_HDR: usize = 16;
/// Size of a packed tcp remote key.
pub const RKEY_LEN: usize = 20;
/// Size of a frame header.
pub const FRAME_HDR: usize = 8;
/// Version of the address encoding.
pub const ADDR_VERSION: u8 = 1;
/// Largest encoded address.
pub const MAX_ADDR: usize = 20;

/// The fixed header in front of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Handler id (0 for a put).
    pub id: AmId,
    /// Payload length in bytes (not counting this header).
    pub len: u32,
    /// A put into registered memory ([`PutHeader`] first), not an active message.
    pub put: bool,
}

impl FrameHeader {
    /// The header of an active message.
    #[inline]
    pub fn am(id: AmId, len: u32) -> FrameHeader {
        FrameHeader {
            id,
            len,
            put: false,
        }
    }

    /// Encodes the header.
    #[inline]
    pub fn encode(&self) -> [u8; FRAME_HDR] {
        let l = self.len.to_le_bytes();
        [
            FRAME_MAGIC,
            FRAME_VERSION,
            self.id,
            self.put as u8,
            l[0],
            l[1],
            l[2],
            l[3],
        ]
    }

    /// Decodes the header at the start of `b`, accepting payloads of at most `max_len` bytes.
    ///
    /// Fails on short input, a bad magic or version, reserved bits, or an oversized length.
    #[inline]
    pub fn decode(b: &[u8], max_len: usize) -> Result<FrameHeader> {
        let Some(h) = b.first_chunk::<FRAME_HDR>() else {
            return Err(bad_frame("shorter than a frame header"));
        };
        if h[0] != FRAME_MAGIC {
            return Err(bad_frame("bad magic"));
        }
        if h[1] != FRAME_VERSION {
            return Err(bad_frame("unsupported frame version"));
        }
        let put = match h[3] {
            0 => false,
            1 => true,
            _ => return Err(bad_frame("unknown frame kind")),
        };
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len as usize > max_len {
            return Err(bad_frame("payload longer than max_am"));
        }
        if put && (h[2] != 0 || (len as usize) < PUT_HDR) {
            return Err(bad_frame("malformed put"));
        }
        Ok(FrameHeader { id: h[2], len, put })
    }
}

/// What a put frame says after its frame header: where its bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutHeader {
    /// Registration slot at the target.
    pub region: u32,
    /// The registration's key (a stale or guessed one does not match).
    pub key: u32,
    /// Offset in the region.
    pub offset: u64,
}

impl PutHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; PUT_HDR] {
        let mut b = [0u8; PUT_HDR];
        b[..4].copy_from_slice(&self.region.to_le_bytes());
        b[4..8].copy_from_slice(&self.key.to_le_bytes());
        b[8..].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    /// Decodes the header at the start of `b` (any 16 bytes are a header;
    /// the target checks them against its registrations).
    pub fn decode(b: &[u8]) -> Result<PutHeader> {
        let Some(h) = b.first_chunk::<PUT_HDR>() else {
            return Err(bad_frame("put shorter than its header"));
        };
        Ok(PutHeader {
            region: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            key: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            offset: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        })
    }
}

/// A registered region as its remote key names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKey {
    /// Registration slot.
    pub region: u32,
    /// The registration's key.
    pub key: u32,
    /// Length of the region in bytes.
    pub len: u64,
}

impl TcpKey {
    /// Packs the key.
    pub fn pack(&self) -> [u8; RKEY_LEN] {
        let mut b = [0u8; RKEY_LEN];
        b[0] = b'T';
        b[1] = 1;
        b[4..8].copy_from_slice(&self.region.to_le_bytes());
        b[8..12].copy_from_slice(&self.key.to_le_bytes());
        b[12..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Unpacks a key made by [`TcpKey::pack`].
    pub fn unpack(b: &[u8]) -> Result<TcpKey> {
        let bad = |reason| Error::Malformed {
            what: "tcp remote key",
            reason,
        };
        let Ok(b) = <&[u8; RKEY_LEN]>::try_from(b) else {
            return Err(bad("wrong length"));
        };
        if b[0] != b'T' || b[1] != 1 || b[2] != 0 || b[3] != 0 {
            return Err(bad("not a tcp key of this version"));
        }
        Ok(TcpKey {
            region: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            key: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            len: u64::from_le_bytes([b[12], b[13], b[14], b[15], b[16], b[17], b[18], b[19]]),
        })
    }
}

#[cold]
fn bad_frame(reason: &'static str) -> Error {
    Error::Malformed {
        what: "tcp frame",
        reason,
    }
}

#[cold]
fn bad_addr(reason: &'static str) -> Error {
    Error::Malformed {
        what: "tcp address",
        reason,
    }
}

/// Encodes an endpoint's listening address for publication.
pub fn encode_addr(a: SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(MAX_ADDR);
    v.push(ADDR_VERSION);
    match a.ip() {
        IpAddr::V4(ip) => {
            v.push(4);
            v.extend_from_slice(&a.port().to_le_bytes());
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(6);
            v.extend_from_slice(&a.port().to_le_bytes());
            v.extend_from_slice(&ip.octets());
        }
    }
    v
}

/// Decodes a published address.
pub fn decode_addr(b: &[u8]) -> Result<SocketAddr> {
    let [ver, fam, p0, p1, ip @ ..] = b else {
        return Err(bad_addr("too short"));
    };
    if *ver != ADDR_VERSION {
        return Err(bad_addr("unsupported version"));
    }
    let port = u16::from_le_bytes([*p0, *p1]);
    let ip = match (*fam, ip.len()) {
        (4, 4) => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        (6, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(ip);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        (4 | 6, _) => return Err(bad_addr("wrong length for its family")),
        _ => return Err(bad_addr("unknown address family")),
    };
    if ip.is_unspecified() || port == 0 {
        return Err(bad_addr("unspecified address or port"));
    }
    Ok(SocketAddr::new(ip, port))
}

/// Length of [`auth_context`].
pub const AUTH_CONTEXT_LEN: usize = 16;

/// The context of the handshake on a tcp connection of a job of `npeers` endpoints.
pub fn auth_context(npeers: usize) -> [u8; AUTH_CONTEXT_LEN] {
    let mut c = [0u8; AUTH_CONTEXT_LEN];
    c[..8].copy_from_slice(b"dos-tcp\0");
    c[8] = FRAME_VERSION;
    c[12..16].copy_from_slice(&(npeers as u32).to_le_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_header_golden_bytes() {
        let h = FrameHeader::am(0x2a, 0x0001_0203);
        assert_eq!(h.encode(), [0xD7, 2, 0x2a, 0, 0x03, 0x02, 0x01, 0x00]);
        assert_eq!(FrameHeader::decode(&h.encode(), 1 << 20).unwrap(), h);
        let p = FrameHeader {
            id: 0,
            len: 20,
            put: true,
        };
        assert_eq!(p.encode(), [0xD7, 2, 0, 1, 20, 0, 0, 0]);
        assert_eq!(FrameHeader::decode(&p.encode(), 1 << 20).unwrap(), p);
        let ph = PutHeader {
            region: 1,
            key: 0x0a0b_0c0d,
            offset: 0x0102,
        };
        assert_eq!(
            ph.encode(),
            [1, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a, 2, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn frame_header_rejects_bad_input() {
        let good = FrameHeader::am(1, 100).encode();
        let reason = |b: &[u8], max| match FrameHeader::decode(b, max) {
            Err(Error::Malformed { reason, .. }) => reason,
            r => panic!("accepted {b:?}: {r:?}"),
        };
        assert_eq!(reason(&good[..7], 100), "shorter than a frame header");
        let mut b = good;
        b[0] = 0;
        assert_eq!(reason(&b, 100), "bad magic");
        let mut b = good;
        b[1] = 1;
        assert_eq!(reason(&b, 100), "unsupported frame version");
        let mut b = good;
        b[3] = 2;
        assert_eq!(reason(&b, 100), "unknown frame kind");
        let mut b = good;
        b[3] = 1; // a put with a handler id
        assert_eq!(reason(&b, 100), "malformed put");
        assert_eq!(reason(&good, 99), "payload longer than max_am");
        assert!(FrameHeader::decode(&good, 100).is_ok());
        let huge = FrameHeader::am(1, u32::MAX);
        assert!(FrameHeader::decode(&huge.encode(), usize::MAX >> 1).is_ok());
        assert!(FrameHeader::decode(&huge.encode(), 1 << 20).is_err());
    }

    #[test]
    fn address_golden_bytes() {
        let a: SocketAddr = "127.0.0.1:4660".parse().unwrap();
        assert_eq!(encode_addr(a), [1, 4, 0x34, 0x12, 127, 0, 0, 1]);
        assert_eq!(decode_addr(&encode_addr(a)).unwrap(), a);
        let a: SocketAddr = "[::1]:258".parse().unwrap();
        let mut want = vec![1, 6, 2, 1];
        want.extend_from_slice(&[0; 15]);
        want.push(1);
        assert_eq!(encode_addr(a), want);
        assert_eq!(decode_addr(&want).unwrap(), a);
        assert_eq!(want.len(), MAX_ADDR);
    }

    #[test]
    fn address_rejects_bad_input() {
        for b in [
            &[][..],
            &[1, 4, 1],
            &[2, 4, 1, 0, 127, 0, 0, 1],
            &[1, 5, 1, 0, 127, 0, 0, 1],
            &[1, 4, 1, 0, 127, 0, 0],
            &[1, 6, 1, 0, 127, 0, 0, 1],
            &[1, 4, 0, 0, 127, 0, 0, 1],
            &[1, 4, 1, 0, 0, 0, 0, 0],
        ] {
            assert!(
                matches!(decode_addr(b), Err(Error::Malformed { .. })),
                "{b:?}"
            );
        }
    }

    #[test]
    fn auth_context_golden_bytes() {
        assert_eq!(
            auth_context(0x0102),
            [b'd', b'o', b's', b'-', b't', b'c', b'p', 0, 2, 0, 0, 0, 2, 1, 0, 0]
        );
    }

    proptest! {
        #[test]
        fn frame_decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..32), max in any::<usize>()) {
            if let Ok(h) = FrameHeader::decode(&b, max) {
                prop_assert!(h.len as usize <= max);
                prop_assert_eq!(&h.encode()[..], &b[..FRAME_HDR]);
            }
        }

        #[test]
        fn frame_header_round_trips(id in any::<u8>(), len in any::<u32>()) {
            let h = FrameHeader::am(id, len);
            prop_assert_eq!(FrameHeader::decode(&h.encode(), u32::MAX as usize).unwrap(), h);
        }

        #[test]
        fn put_header_and_key_round_trip(region in any::<u32>(), key in any::<u32>(), off in any::<u64>()) {
            let h = PutHeader { region, key, offset: off };
            prop_assert_eq!(PutHeader::decode(&h.encode()).unwrap(), h);
            let k = TcpKey { region, key, len: off };
            prop_assert_eq!(TcpKey::unpack(&k.pack()).unwrap(), k);
        }

        #[test]
        fn key_decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(k) = TcpKey::unpack(&b) {
                prop_assert_eq!(&k.pack()[..], &b[..]);
            }
        }

        #[test]
        fn address_decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(a) = decode_addr(&b) {
                prop_assert_eq!(encode_addr(a), b);
            }
        }

        #[test]
        fn address_round_trips(v6 in any::<bool>(), ip in any::<[u8; 16]>(), port in 1u16..) {
            let ip = if v6 { IpAddr::V6(Ipv6Addr::from(ip)) } else { IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])) };
            prop_assume!(!ip.is_unspecified());
            let a = SocketAddr::new(ip, port);
            prop_assert_eq!(decode_addr(&encode_addr(a)).unwrap(), a);
        }
    }
}
