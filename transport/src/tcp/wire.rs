//! What the tcp backend puts on the wire: frame headers, endpoint addresses and the
//! context string of its connection handshake. All integers are little-endian.
//!
//! ```text
//! frame:    0 magic 0xD7 | 1 version 1 | 2 AM id | 3 reserved 0 | 4..8 payload length u32
//!           | payload (header and body of the active message, contiguous)
//! address:  0 version 1 | 1 family (4 or 6) | 2..4 port u16 | IPv4 (4 bytes) or IPv6 (16 bytes)
//! auth ctx: "dos-tcp\0" | version 1 | 3 zero bytes | number of peers u32
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
pub const FRAME_VERSION: u8 = 1;
/// Size of a frame header.
pub const FRAME_HDR: usize = 8;
/// Version of the address encoding.
pub const ADDR_VERSION: u8 = 1;
/// Largest encoded address.
pub const MAX_ADDR: usize = 20;

/// The fixed header in front of every active message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Handler id.
    pub id: AmId,
    /// Payload length in bytes (not counting this header).
    pub len: u32,
}

impl FrameHeader {
    /// Encodes the header.
    #[inline]
    pub fn encode(&self) -> [u8; FRAME_HDR] {
        let l = self.len.to_le_bytes();
        [
            FRAME_MAGIC,
            FRAME_VERSION,
            self.id,
            0,
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
        if h[3] != 0 {
            return Err(bad_frame("reserved byte set"));
        }
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len as usize > max_len {
            return Err(bad_frame("payload longer than max_am"));
        }
        Ok(FrameHeader { id: h[2], len })
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
        let h = FrameHeader {
            id: 0x2a,
            len: 0x0001_0203,
        };
        assert_eq!(h.encode(), [0xD7, 1, 0x2a, 0, 0x03, 0x02, 0x01, 0x00]);
        assert_eq!(FrameHeader::decode(&h.encode(), 1 << 20).unwrap(), h);
    }

    #[test]
    fn frame_header_rejects_bad_input() {
        let good = FrameHeader { id: 1, len: 100 }.encode();
        let reason = |b: &[u8], max| match FrameHeader::decode(b, max) {
            Err(Error::Malformed { reason, .. }) => reason,
            r => panic!("accepted {b:?}: {r:?}"),
        };
        assert_eq!(reason(&good[..7], 100), "shorter than a frame header");
        let mut b = good;
        b[0] = 0;
        assert_eq!(reason(&b, 100), "bad magic");
        let mut b = good;
        b[1] = 2;
        assert_eq!(reason(&b, 100), "unsupported frame version");
        let mut b = good;
        b[3] = 1;
        assert_eq!(reason(&b, 100), "reserved byte set");
        assert_eq!(reason(&good, 99), "payload longer than max_am");
        assert!(FrameHeader::decode(&good, 100).is_ok());
        let huge = FrameHeader {
            id: 1,
            len: u32::MAX,
        };
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
            [b'd', b'o', b's', b'-', b't', b'c', b'p', 0, 1, 0, 0, 0, 2, 1, 0, 0]
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
            let h = FrameHeader { id, len };
            prop_assert_eq!(FrameHeader::decode(&h.encode(), u32::MAX as usize).unwrap(), h);
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
