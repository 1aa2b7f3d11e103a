//! `dos_transport::roce::wire`: the RoCEv2 packet decoder and every header decoder.
//!
//! Invariants checked: nothing panics; a packet that passes its ICRC decodes as it
//! does without the check; a decoded packet encodes again to the same length, and
//! that encoding decodes to the same packet. The input is also tried with its ICRC
//! recomputed, so that the structure checks behind the ICRC are reached.
#![no_main]

use dos_transport::roce::icrc::{self, IpUdp, ICRC_LEN};
use dos_transport::roce::wire::{
    Aeth, AtomicAckEth, AtomicEth, Bth, ImmDt, Packet, Reth, Syndrome,
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
