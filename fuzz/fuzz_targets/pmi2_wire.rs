//! `dos::pmi::pmi2`: `decode` and `Command::from_message`, the PMI-2
//! messages between a rank and Slurm (or dosrun).
//!
//! The bytes are read as a stream of messages; a message encodes again to
//! bytes that decode to it, and a typed command converts back to a message
//! that gives the same command.
#![no_main]

use dos::pmi::pmi2::{decode, Command, MAX_BODY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((m, used))) = decode(rest) {
        assert!(used <= rest.len() && used <= 6 + MAX_BODY);
        let mut out = Vec::new();
        if m.encode(&mut out).is_ok() {
            assert_eq!(decode(&out).unwrap().unwrap().0, m);
        }
        if let Ok(c) = Command::from_message(&m) {
            assert_eq!(Command::from_message(&c.to_message()), Ok(c));
        }
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
});
