//! `icollbench`: latency of nonblocking against blocking collectives, and
//! how much of an `iallreduce` hides behind computation.
//!
//! ```text
//! dosrun -n 4 target/release/examples/icollbench
//! ```
//!
//! Rank 0 prints, per size, the mean time of `allreduce`, of `iallreduce`
//! started and waited at once, of `ibarrier`/`barrier`, and of an
//! `iallreduce` overlapped with a computation of the same length as a
//! blocking one (polled with `test` every few microseconds).

use std::time::{Duration, Instant};

use dos::op::Sum;

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn main() -> dos::Result<()> {
    let world = dos::init()?;
    let iters = 2000;
    let mean = |t: Instant, k: usize| t.elapsed().as_secs_f64() * 1e6 / k as f64;
    for count in [1usize, 128, 8192] {
        let send = vec![1u64; count];
        let mut recv = vec![0u64; count];
        let k = if count > 1000 { iters / 10 } else { iters };
        world.barrier()?;
        let t = Instant::now();
        for _ in 0..k {
            world.allreduce(&send, &mut recv, Sum)?;
        }
        let blocking = mean(t, k);
        world.barrier()?;
        let t = Instant::now();
        for _ in 0..k {
            dos::scope(|s| world.iallreduce(s, &send, &mut recv, Sum)?.wait())?;
        }
        let nonblocking = mean(t, k);
        // Overlap: compute for as long as a blocking allreduce takes,
        // testing the request every 2 µs.
        let work = Duration::from_secs_f64(blocking * 1e-6);
        world.barrier()?;
        let t = Instant::now();
        for _ in 0..k {
            dos::scope(|s| {
                let r = world.iallreduce(s, &send, &mut recv, Sum)?;
                let t0 = Instant::now();
                while t0.elapsed() < work {
                    spin(Duration::from_micros(2));
                    let _ = r.test();
                }
                r.wait()
            })?;
        }
        let overlapped = mean(t, k);
        if world.rank() == 0 {
            println!(
                "{} ranks, {:>6} B: allreduce {:8.2} us, iallreduce+wait {:8.2} us, \
                 iallreduce over {:.2} us of work {:8.2} us",
                world.size(),
                count * 8,
                blocking,
                nonblocking,
                blocking,
                overlapped
            );
        }
    }
    world.barrier()?;
    let t = Instant::now();
    for _ in 0..iters {
        world.barrier()?;
    }
    let b = mean(t, iters);
    let t = Instant::now();
    for _ in 0..iters {
        dos::scope(|s| world.ibarrier(s)?.wait())?;
    }
    let ib = mean(t, iters);
    if world.rank() == 0 {
        println!(
            "{} ranks: barrier {b:.2} us, ibarrier+wait {ib:.2} us",
            world.size()
        );
    }
    Ok(())
}
