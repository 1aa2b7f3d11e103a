//! Running a parallel program as threads of one process, for tests.
//!
//! Each thread gets its own [`World`] over a private shared segment, so the
//! whole stack (engine, rings, single-copy transfers) runs as in a real job.
//! [`run_cluster`] groups the threads into simulated nodes: each node has its
//! own segment, and nodes talk over authenticated TCP on 127.0.0.1, with the
//! same per-peer routing as a multi-node job.
//!
//! ```
//! let sums = dos::testing::run_threads(3, |world| {
//!     let mut total = [0u64];
//!     world.allreduce(&[world.rank() as u64], &mut total, dos::op::Sum).unwrap();
//!     total[0]
//! });
//! assert_eq!(sums, vec![3, 3, 3]);
//! ```

use std::io::Write;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use dos_transport::auth::Secret;
use dos_transport::shm::Segment;

use crate::config::Config;
use crate::p2p::{Engine, Links, Shared};
use crate::select::{self, Net, Place, Routes};
use crate::World;

/// Runs `f` on `n` ranks, each a thread with its own world; returns their results by rank.
///
/// A rank that panics while others run aborts the process, after the panic
/// message: the others may be waiting for it in shared memory, where nothing
/// tells them it is gone (a real job's launcher ends such a job), and a test
/// must fail rather than hang. A single rank's panic is passed on.
pub fn run_threads<R: Send, F: Fn(World) -> R + Sync>(n: usize, f: F) -> Vec<R> {
    run_threads_with(n, Config::from_env().expect("valid DOS_* tunables"), f)
}

/// Runs rank `r`'s part of a job of `size` ranks; see [`run_threads`] for why
/// a panic aborts.
fn rank_or_abort<R>(r: usize, size: usize, test: &str, part: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(part)) {
        Ok(v) => v,
        Err(p) if size == 1 => std::panic::resume_unwind(p),
        Err(p) => {
            // The test harness captures the panic message and would never print it,
            // since the process aborts first: it goes to stderr itself, past the capture.
            let what = p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a panic without a message)");
            let _ = writeln!(
                std::io::stderr().lock(),
                "dos::testing: rank {r} of {size} of test {test} panicked: {what}\n\
                 aborting, since the other ranks may wait for it forever"
            );
            std::process::abort()
        }
    }
}

/// The name of the calling thread, which the test harness names after the test.
fn test_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// Like [`run_threads`], with explicit tunables instead of the environment's.
pub fn run_threads_with<R: Send, F: Fn(World) -> R + Sync>(n: usize, cfg: Config, f: F) -> Vec<R> {
    let seg = Arc::new(Segment::create(n, cfg.shm_ring_bytes.min(1 << 16)).expect("segment"));
    let test = test_name();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let seg = seg.clone();
                let (f, test) = (&f, &test);
                s.spawn(move || {
                    let shm = select::local(Some(seg), i, cfg.shm_fence).expect("attach");
                    let links = Links::single_node(shm);
                    let eng = Shared::new(Engine::new(links, cfg, n));
                    let peers: Rc<[u32]> = (0..n as u32).collect();
                    rank_or_abort(i, n, test, || {
                        f(World::from_parts(eng, i, peers, None, i, n))
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Ends `world` the way a crashed rank ends: its connections close without
/// the goodbye a finalizing rank sends, so peers that still wait for it get
/// [`crate::Error::PeerFailed`] naming it (across nodes; within a node the
/// launcher stops the job).
///
/// ```
/// let got = dos::testing::run_cluster(&[1, 1], |world| {
///     if world.rank() == 1 {
///         dos::testing::vanish(world);
///         return None;
///     }
///     Some(world.recv_vec::<u8>(1, 0).unwrap_err())
/// });
/// assert!(matches!(got[0], Some(dos::Error::PeerFailed { rank: 1 })), "{got:?}");
/// ```
pub fn vanish(world: World) {
    world.vanish()
}

/// Runs `f` on ranks grouped into simulated nodes of `per_node[i]` ranks each
/// (ranks numbered node by node); returns the results by rank.
///
/// Ranks of a node share a segment; ranks of different nodes talk over TCP on
/// 127.0.0.1, authenticated with a fresh job secret. A rank that panics while
/// others run aborts the process, as in [`run_threads`].
///
/// ```
/// let sums = dos::testing::run_cluster(&[2, 1], |world| {
///     let mut total = [0u32];
///     world.allreduce(&[1u32], &mut total, dos::op::Sum).unwrap();
///     (world.transport_name(), total[0])
/// });
/// assert_eq!(sums[0], ("shm+tcp".to_string(), 3));
/// ```
pub fn run_cluster<R: Send, F: Fn(World) -> R + Sync>(per_node: &[usize], f: F) -> Vec<R> {
    run_cluster_with(
        per_node,
        Config::from_env().expect("valid DOS_* tunables"),
        f,
    )
}

/// [`run_cluster`] with the tunables `cfg`; with `cfg.transports` allowing
/// roce but not tcp, the simulated nodes talk over the soft-RoCE instead.
pub fn run_cluster_with<R: Send, F: Fn(World) -> R + Sync>(
    per_node: &[usize],
    cfg: Config,
    f: F,
) -> Vec<R> {
    let net_kind = if cfg.transports.roce && !cfg.transports.tcp {
        Net::Roce
    } else {
        Net::Tcp
    };
    assert!(per_node.iter().all(|&n| n > 0), "every node needs a rank");
    let size: usize = per_node.iter().sum();
    let places: Vec<Place> = per_node
        .iter()
        .enumerate()
        .flat_map(|(node, &n)| (0..n).map(move |local| Place { node, local }))
        .collect();
    let segs: Vec<Arc<Segment>> = per_node
        .iter()
        .map(|&n| Arc::new(Segment::create(n, cfg.shm_ring_bytes.min(1 << 16)).expect("segment")))
        .collect();
    let secret = Secret::generate().expect("random secret");
    let multi = per_node.len() > 1;
    let addrs = Mutex::new(vec![None::<Vec<u8>>; size]);
    let published = Barrier::new(size);
    let test = test_name();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..size)
            .map(|r| {
                let (f, places, segs, test) = (&f, &places, &segs, &test);
                let (secret, addrs, published) = (&secret, &addrs, &published);
                s.spawn(move || {
                    let Place { node, local } = places[r];
                    let shm = select::local(Some(segs[node].clone()), local, cfg.shm_fence)
                        .expect("attach");
                    let routes = Routes::new(r, places, per_node[node], true).expect("routes");
                    let links = if multi {
                        let prep = select::prepare_net(
                            net_kind,
                            r,
                            size,
                            Ipv4Addr::LOCALHOST.into(),
                            secret,
                            &cfg,
                        )
                        .expect("network endpoint");
                        addrs.lock().expect("lock")[r] = Some(prep.address());
                        published.wait();
                        let all = addrs.lock().expect("lock").clone();
                        let theirs = routes
                            .addrs(|q| Ok(all[q].clone().expect("published")))
                            .expect("addresses");
                        routes
                            .connect(shm, prep, &theirs, Duration::from_secs(60), || Ok(()))
                            .expect("connect")
                    } else {
                        routes.links(shm, None)
                    };
                    let eng = Shared::new(Engine::new(links, cfg, per_node[node]));
                    let peers: Rc<[u32]> = (0..size as u32).collect();
                    rank_or_abort(r, size, test, || {
                        f(World::from_parts(
                            eng,
                            r,
                            peers,
                            None,
                            local,
                            per_node[node],
                        ))
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
