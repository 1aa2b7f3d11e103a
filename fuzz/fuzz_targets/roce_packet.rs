//! `dos_transport::roce::wire`: the RoCEv2 packet decoder and every header decoder.
//!
//! Invariants checked: nothing panics; a packet that passes its ICRC decodes as it
//! does without the check; a decoded packet encodes again to the same length, and
//! that encoding decodes to the same packet. The input is also tried with its ICRC
//! recomputed, so that the structure checks behind the ICRC are reached.
//!
//! Authenticated packets (the dos extension, `wire::Framing` with a key): the input
//! is decoded as one (with its ICRC recomputed, and also with a right tag put in
//! where its structure says the tag is, so that the checks behind the tag are
//! reached); a packet that passes decodes as `decode_unverified_tagged` says,
//! encodes again to the same length and packet, fails under another key, and fails
//! with a bit of its tag flipped.
#![no_main]

use dos_transport::roce::icrc::{self, IpUdp, ICRC_LEN};
use dos_transport::roce::wire::{
    Aeth, AtomicAckEth, AtomicEth, Bth, Framing, ImmDt, Packet, PacketKey, Reth, Syndrome,
    WireError, AUTH_TAG_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v4 = IpUdp::new(
        "198.18.0.1:49152".parse().unwrap(),
        "198.18.0.2:4791".parse().unwrap(),
    );
    let v6 = IpUdp::new(
        "[fd00::1]:49152".parse().unwrap(),
        "[fd00::2]:4791".parse().unwrap(),
    );

    let _ = Bth::decode(data);
    let _ = Reth::decode(data);
    let _ = Aeth::decode(data);
    let _ = AtomicEth::decode(data);
    let _ = AtomicAckEth::decode(data);
    let _ = ImmDt::decode(data);
    if let Some(&b) = data.first() {
        if let Ok(s) = Syndrome::from_byte(b) {
            assert_eq!(s.to_byte(), b);
        }
    }

    let unverified = Packet::decode_unverified(data);
    for hdrs in [&v4, &v6] {
        if let Ok(p) = Packet::decode(hdrs, data) {
            assert_eq!(Ok(p), unverified);
        }
    }

    if data.len() < 16 {
        return;
    }
    let mut sealed = data.to_vec();
    let n = sealed.len() - ICRC_LEN;
    let crc = icrc::icrc(&v4, &sealed[..n]).expect("a BTH's worth of bytes");
    sealed[n..].copy_from_slice(&crc.to_le_bytes());
    authenticated(&v4, &sealed);
    let checked = Packet::decode(&v4, &sealed);
    assert_eq!(checked, Packet::decode_unverified(&sealed));
    if let Ok(p) = checked {
        let mut out = vec![0u8; p.encoded_len()];
        let len = p.encode(&v4, &mut out).expect("a decoded packet encodes");
        assert_eq!(len, sealed.len());
        assert_eq!(Packet::decode(&v4, &out), Ok(p));
        // Flipping a bit outside the masked BTH byte fails the ICRC.
        let bit = usize::from(data[0]) * 8 % (len * 8);
        if bit / 8 != 4 {
            out[bit / 8] ^= 1 << (bit % 8);
            assert!(Packet::decode(&v4, &out).is_err());
        }
    }
});

/// The checks of an authenticated connection on `sealed` (a datagram with a valid
/// ICRC for `hdrs`).
fn authenticated(hdrs: &IpUdp, sealed: &[u8]) {
    let key = PacketKey::from_bytes([0x42; 32]);
    let f = Framing {
        hdrs: *hdrs,
        key: Some(key.clone()),
    };
    let other = Framing {
        hdrs: *hdrs,
        key: Some(PacketKey::from_bytes([0x43; 32])),
    };
    let _ = Packet::decode_framed(&f, sealed);
    // Put the right tag where the structure says it is, zero the pad, reseal.
    let Ok((_, at)) = Packet::decode_unverified_tagged(sealed) else {
        return;
    };
    let mut b = sealed.to_vec();
    let n = b.len() - ICRC_LEN;
    let tag = key.tag(&b[..at]);
    b[at..at + AUTH_TAG_LEN].copy_from_slice(&tag);
    b[at + AUTH_TAG_LEN..n].fill(0);
    let crc = icrc::icrc(hdrs, &b[..n]).expect("a BTH's worth of bytes");
    b[n..].copy_from_slice(&crc.to_le_bytes());
    let p = Packet::decode_framed(&f, &b).expect("a packet with its right tag decodes");
    assert_eq!(Packet::decode_unverified_tagged(&b).map(|t| t.0), Ok(p));
    assert_eq!(Packet::decode_framed(&other, &b), Err(WireError::Auth));
    let mut out = vec![0u8; p.framed_len(AUTH_TAG_LEN)];
    let len = p
        .encode_framed(&f, &mut out)
        .expect("a decoded packet encodes");
    assert_eq!(len, b.len());
    assert_eq!(Packet::decode_framed(&f, &out), Ok(p));
    let bit = usize::from(sealed[1]) % (AUTH_TAG_LEN * 8);
    b[at + bit / 8] ^= 1 << (bit % 8);
    let crc = icrc::icrc(hdrs, &b[..n]).expect("a BTH's worth of bytes");
    b[n..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Packet::decode_framed(&f, &b), Err(WireError::Auth));
}
