//! `dos::pmi::simple`: `split_line`, `Command::parse` and `Response::parse`,
//! the PMI-1 lines MPICH programs send to dosrun, and
//! `dos::pmi::direct::parse_process_mapping` (a value from a PMI server).
//!
//! The bytes are read as a stream of lines; what parses and encodes again
//! must parse to the same message.
#![no_main]

use dos::pmi::simple::{split_line, Command, Response, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((line, used))) = split_line(rest) {
        assert!(line.len() <= MAX_LINE && used == line.len() + 1);
        if let Ok(c) = Command::parse(line) {
            let mut out = Vec::new();
            if c.encode(&mut out).is_ok() {
                let again = std::str::from_utf8(&out).unwrap();
                assert_eq!(Command::parse(again.trim_end_matches('\n')), Ok(c));
            }
        }
        if let Ok(r) = Response::parse(line) {
            let mut out = Vec::new();
            if r.encode(&mut out).is_ok() {
                let again = std::str::from_utf8(&out).unwrap();
                assert_eq!(Response::parse(again.trim_end_matches('\n')), Ok(r));
            }
        }
        if let Some(m) = dos::pmi::direct::parse_process_mapping(line, 64) {
            assert_eq!(m.len(), 64);
        }
        rest = &rest[used..];
    }
});
