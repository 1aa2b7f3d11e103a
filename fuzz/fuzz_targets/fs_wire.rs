//! `dos_fs::wire`: the request and reply frames of dosfs, between clients
//! and storage servers.
//!
//! The bytes are read as a request frame and as a reply frame. A request
//! that decodes encodes back to the same bytes (the encoding is canonical);
//! a reply that decodes survives an encode/decode round trip. A slot
//! request (same-node data path, `dos_fs::shm`) that decodes is checked
//! against a server's slot table as the server does before running it: the
//! table grants it exactly when the slot exists and the length fits, and
//! never panics or reaches outside the region. An RDMA grant that decodes
//! (`Reply::RoceSlots`, `dos_fs::rdma`) is checked as a client does before
//! it connects: accepted exactly when it is what a server could grant.
#![no_main]

use std::sync::OnceLock;

use dos_fs::shm::{Region, SlotTable};
use dos_fs::wire::{
    decode_reply_frame, decode_request_frame, Header, Reply, Request, HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

const SLOTS: u32 = 4;
const SLOT_SIZE: u32 = 8192;

fn table() -> &'static SlotTable {
    static T: OnceLock<SlotTable> = OnceLock::new();
    T.get_or_init(|| {
        let (region, _fd) = Region::create(SLOTS, SLOT_SIZE).expect("a slot region");
        SlotTable::new(region)
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= HEADER_LEN {
        let _ = Header::decode(&data[..HEADER_LEN]);
    }
    if let Ok((id, req)) = decode_request_frame(data) {
        assert_eq!(req.encode(id), data);
        if let Request::WriteSlot { slot, len, .. } | Request::ReadSlot { slot, len, .. } = req {
            let t = table();
            let fits = slot < SLOTS && len <= SLOT_SIZE;
            assert_eq!(t.take(slot, len).is_ok(), fits);
            if fits {
                let mut buf = vec![0u8; len as usize];
                t.region().get(slot, &mut buf).unwrap();
                t.region().put(slot, &buf).unwrap();
                t.give_back(slot);
            }
        }
    }
    if let Ok((id, rep)) = decode_reply_frame(data) {
        if let Reply::RoceSlots { count, size, .. } = &rep {
            let ok = *count > 0 && dos_fs::shm::grant(*count, *size) == (*count, *size);
            assert_eq!(dos_fs::rdma::check_grant(*count, *size).is_ok(), ok);
        }
        let again = rep.encode(id);
        assert_eq!(decode_reply_frame(&again).unwrap(), (id, rep));
    }
});
