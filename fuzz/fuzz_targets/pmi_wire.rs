//! `dos::pmi::wire`: `Header::decode`, `split_frame`, `Request::decode` and
//! `Reply::decode`, the frames between a rank and its wire-up service.
//!
//! The bytes are read as a stream of frames, each decoded both as a request and as
//! a reply; what decodes and encodes again must give back the frame's bytes.
#![no_main]

use dos::pmi::wire::{split_frame, Header, Reply, Request, HEADER_LEN, MAX_BODY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        assert!(h.len <= MAX_BODY);
    }
    let mut rest = data;
    while let Ok(Some((h, body, used))) = split_frame(rest) {
        assert_eq!(used, HEADER_LEN + body.len());
        assert!(used <= rest.len());
        let frame = &rest[..used];
        if let Ok(r) = Request::decode(h, body) {
            let mut out = Vec::new();
            if r.encode(&mut out).is_ok() {
                assert_eq!(out, frame);
            }
        }
        if let Ok(r) = Reply::decode(h, body) {
            let mut out = Vec::new();
            if r.encode(&mut out).is_ok() {
                assert_eq!(out, frame);
            }
        }
        rest = &rest[used..];
    }
});
