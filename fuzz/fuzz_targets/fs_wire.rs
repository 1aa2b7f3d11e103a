//! `dos_fs::wire`: the request and reply frames of dosfs, between clients
//! and storage servers.
//!
//! The bytes are read as a request frame and as a reply frame. A request
//! that decodes encodes back to the same bytes (the encoding is canonical);
//! a reply that decodes survives an encode/decode round trip.
#![no_main]

use dos_fs::wire::{decode_reply_frame, decode_request_frame, Header, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= HEADER_LEN {
        let _ = Header::decode(&data[..HEADER_LEN]);
    }
    if let Ok((id, req)) = decode_request_frame(data) {
        assert_eq!(req.encode(id), data);
    }
    if let Ok((id, rep)) = decode_reply_frame(data) {
        let again = rep.encode(id);
        assert_eq!(decode_reply_frame(&again).unwrap(), (id, rep));
    }
});
