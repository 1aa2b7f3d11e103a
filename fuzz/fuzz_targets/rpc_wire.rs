//! `dos::rpc::wire`: `Req::decode`, `Rep::decode` and `batch_entries`, the
//! requests, replies and batches of remote procedure calls.
//!
//! The bytes are read as a request, as a reply and as a batch; what decodes
//! and encodes again must give back its header bytes.
#![no_main]

use dos::rpc::wire::{batch_entries, Rep, Req, REP, REP_LEN, REQ, REQ_LEN};
use libfuzzer_sys::fuzz_target;

fn check(id: u8, m: &[u8]) {
    if id == REQ {
        if let Ok((r, args)) = Req::decode(m, 0) {
            assert_eq!(&r.encode()[..], &m[..REQ_LEN]);
            assert_eq!(args.len(), m.len() - REQ_LEN);
        }
    } else if let Ok((r, payload)) = Rep::decode(m, 0) {
        assert_eq!(&r.encode()[..], &m[..REP_LEN]);
        assert_eq!(payload.len(), m.len() - REP_LEN);
    }
}

fuzz_target!(|data: &[u8]| {
    check(REQ, data);
    check(REP, data);
    let mut seen = 0;
    for e in batch_entries(data, 0) {
        match e {
            Ok((id, m)) => {
                assert!(id == REQ || id == REP);
                seen += m.len();
                assert!(seen <= data.len());
                check(id, m);
            }
            Err(_) => break,
        }
    }
});
