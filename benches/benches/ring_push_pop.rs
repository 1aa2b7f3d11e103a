//! `ring_push_pop`: one active message through the shared-memory rings and out
//! again, in one process and one thread (no scheduler in the way): what the
//! shm transport itself costs, below tag matching and protocols.
//!
//! * `one_way/N`: rank 0 pushes an N-byte message into its ring to rank 1,
//!   rank 1 pops it.
//! * `round_trip/N`: the same, and back.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dos_transport::shm::{Segment, ShmIface};
use dos_transport::{ActiveMessages, Event, Progress};

const HDR: [u8; 16] = [7; 16];

/// Pushes `payload` from `tx` to `to`, then pops until `rx` has delivered it.
#[inline]
fn hop(tx: &ShmIface, rx: &ShmIface, to: usize, payload: &[u8]) {
    tx.am_send(to, 1, &HDR, payload).expect("ring has room");
    let mut got = 0;
    while got == 0 {
        got = rx.progress(|ev| {
            let Event::Am { data, .. } = ev else {
                return;
            };
            black_box(data.len());
        });
    }
}

fn ring_push_pop(c: &mut Criterion) {
    let seg = Arc::new(Segment::create(2, 1 << 16).expect("segment"));
    let a = ShmIface::new(seg.clone(), 0).expect("rank 0");
    let b = ShmIface::new(seg, 1).expect("rank 1");
    let mut g = c.benchmark_group("ring_push_pop");
    for size in [0usize, 8, 64, 1024, 8192] {
        let payload = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes((size + HDR.len()) as u64));
        g.bench_with_input(BenchmarkId::new("one_way", size), &payload, |bn, p| {
            bn.iter(|| hop(&a, &b, 1, p))
        });
        g.bench_with_input(BenchmarkId::new("round_trip", size), &payload, |bn, p| {
            bn.iter(|| {
                hop(&a, &b, 1, p);
                hop(&b, &a, 0, p);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ring_push_pop);
criterion_main!(benches);
