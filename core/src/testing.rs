//! Running a parallel program as threads of one process, for tests.
//!
//! Each thread gets its own [`World`] over a private shared segment, so the
//! whole stack (engine, rings, single-copy transfers) runs as in a real job.
//!
//! ```
//! let sums = dos::testing::run_threads(3, |world| {
//!     let mut total = [0u64];
//!     world.allreduce(&[world.rank() as u64], &mut total, dos::op::Sum).unwrap();
//!     total[0]
//! });
//! assert_eq!(sums, vec![3, 3, 3]);
//! ```

use std::rc::Rc;
use std::sync::Arc;

use dos_transport::shm::{Segment, ShmIface};
use dos_transport::Transport;

use crate::config::Config;
use crate::p2p::Engine;
use crate::World;

/// Runs `f` on `n` ranks, each a thread with its own world; returns their results by rank.
///
/// Panics if any rank panics (after all threads have ended).
pub fn run_threads<R: Send, F: Fn(World) -> R + Sync>(n: usize, f: F) -> Vec<R> {
    run_threads_with(n, Config::from_env().expect("valid DOS_* tunables"), f)
}

/// Like [`run_threads`], with explicit tunables instead of the environment's.
pub fn run_threads_with<R: Send, F: Fn(World) -> R + Sync>(n: usize, cfg: Config, f: F) -> Vec<R> {
    let seg = Arc::new(Segment::create(n, cfg.shm_ring_bytes.min(1 << 16)).expect("segment"));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let seg = seg.clone();
                let f = &f;
                s.spawn(move || {
                    let iface = ShmIface::new(seg, i).expect("attach");
                    let eng = Rc::new(Engine::new(Transport::Shm(iface), cfg, n));
                    let peers: Rc<[u32]> = (0..n as u32).collect();
                    f(World::from_parts(eng, i, peers, None, i, n))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
