//! `dos_transport::tcp::wire`: `FrameHeader::decode`, `PutHeader::decode`,
//! `TcpKey::unpack` and `decode_addr`.
//!
//! The bytes are read as the receiver reads a stream (a frame header, then for a
//! put its put header), and each decoder is also run on them alone. Whatever
//! decodes must encode back to the bytes it came from.
#![no_main]

use dos_transport::tcp::wire::{
    decode_addr, encode_addr, FrameHeader, PutHeader, TcpKey, FRAME_HDR, PUT_HDR,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max in [0, 64, 1 << 20, usize::MAX] {
        if let Ok(h) = FrameHeader::decode(data, max) {
            assert!(h.len as usize <= max);
            assert_eq!(&h.encode()[..], &data[..FRAME_HDR]);
            if h.put {
                let body = &data[FRAME_HDR..];
                if let Ok(p) = PutHeader::decode(body) {
                    assert_eq!(&p.encode()[..], &body[..PUT_HDR]);
                }
            }
        }
    }
    if let Ok(p) = PutHeader::decode(data) {
        assert_eq!(&p.encode()[..], &data[..PUT_HDR]);
    }
    if let Ok(k) = TcpKey::unpack(data) {
        assert_eq!(&k.pack()[..], data);
    }
    if let Ok(a) = decode_addr(data) {
        assert_eq!(encode_addr(a), data);
    }
});
