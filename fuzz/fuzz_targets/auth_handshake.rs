//! `dos_transport::auth`: `Hello::decode` and the two steps of `Handshake` that
//! read a peer's bytes (`on_hello`, `on_proof`), which every connection of a job
//! (tcp, wire-up, control) runs before anything else.
#![no_main]

use dos_transport::auth::{Handshake, Hello, Role, Secret, HELLO_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Hello::decode(data) {
        assert_eq!(&h.encode()[..], data);
    }
    let secret = Secret::from_bytes(&[0x5A; 32]).unwrap();
    for role in [Role::Initiator, Role::Responder] {
        let mut hs = Handshake::with_nonce(&secret, b"fuzz", role, 1, [7; 32]);
        let (hello, proof) = data.split_at(data.len().min(HELLO_LEN));
        if hs.on_hello(hello).is_ok() {
            // Forging a proof would need the secret.
            assert!(hs.on_proof(proof).is_err());
            assert!(hs.on_hello(hello).is_err());
        } else {
            assert!(hs.on_proof(proof).is_err());
        }
    }
});
