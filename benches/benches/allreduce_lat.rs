//! `allreduce_lat`: latency of `allreduce` (f32 sum) between ranks that are
//! threads of one process (`dos::testing::run_threads`), so the whole dos stack
//! (engine, matching, collective algorithm, shm rings) runs without a launcher.
//!
//! Each sample starts fresh ranks and times `iters` back-to-back calls on
//! rank 0 after a barrier; set-up is not timed.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn allreduce_lat(c: &mut Criterion) {
    let mut g = c.benchmark_group("allreduce_lat");
    g.sample_size(20);
    for ranks in [2usize, 4] {
        for bytes in [8usize, 4096, 65536] {
            let n = bytes / 4;
            g.bench_function(BenchmarkId::new(format!("{ranks}ranks"), bytes), |bn| {
                bn.iter_custom(|iters| {
                    let times = dos::testing::run_threads(ranks, |world| {
                        let send = vec![1.0f32; n];
                        let mut recv = vec![0.0f32; n];
                        world
                            .allreduce(&send, &mut recv, dos::op::Sum)
                            .expect("allreduce");
                        world.barrier().expect("barrier");
                        let t = Instant::now();
                        for _ in 0..iters {
                            world
                                .allreduce(&send, &mut recv, dos::op::Sum)
                                .expect("allreduce");
                        }
                        t.elapsed()
                    });
                    times.into_iter().max().unwrap_or(Duration::ZERO)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, allreduce_lat);
criterion_main!(benches);
