//! The transport contract suite, instantiated for every backend.

use std::sync::Arc;

use dos_transport::contract;
use dos_transport::loopback::Loopback;
use dos_transport::shm::{Segment, ShmIface};

#[test]
fn contract_loopback() {
    contract::run_all(1, |_| vec![Loopback::new()]);
}

#[test]
fn contract_shm() {
    contract::run_all(4, |n| {
        let seg = Arc::new(Segment::create(n, 1 << 16).unwrap());
        (0..n)
            .map(|i| ShmIface::new(seg.clone(), i).unwrap())
            .collect()
    });
}

#[test]
fn contract_shm_small_rings() {
    contract::run_all(3, |n| {
        let seg = Arc::new(Segment::create(n, 1 << 14).unwrap());
        (0..n)
            .map(|i| ShmIface::new(seg.clone(), i).unwrap())
            .collect()
    });
}
