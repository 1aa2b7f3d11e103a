//! Remote procedure calls across simulated nodes (threads; shared memory
//! within a node, TCP or the soft-RoCE between nodes), and calls to a rank
//! that died.

#[allow(dead_code)]
#[path = "../../checks/src/rpccheck.rs"]
mod rpccheck;

use dos::config::Config;
use dos::testing::{run_cluster, run_cluster_with};
use dos::Error;

#[test]
fn every_check_across_nodes_over_tcp() {
    let got = run_cluster(&[2, 1, 2], |w| rpccheck::check(&w));
    for (r, g) in got.into_iter().enumerate() {
        assert_eq!(g, Ok(()), "rank {r}");
    }
}

#[test]
fn every_check_across_nodes_over_the_soft_roce() {
    let cfg = Config::parse(|k| (k == "DOS_TRANSPORTS").then(|| "shm,roce".to_string())).unwrap();
    let got = run_cluster_with(&[1, 2], cfg, |w| {
        assert!(
            w.transport_name().contains("roce"),
            "{}",
            w.transport_name()
        );
        rpccheck::check(&w)
    });
    for (r, g) in got.into_iter().enumerate() {
        assert_eq!(g, Ok(()), "rank {r}");
    }
}

#[test]
fn a_call_to_a_rank_that_died_names_it() {
    // Rank 1 (alone on node 1) ends like a crashed process; rank 0's calls to
    // it, before and after its connection is seen to break, fail with
    // PeerFailed { rank: 1 } instead of hanging.
    let got = run_cluster(&[1, 1], |w| {
        let rpc = w.rpc();
        rpc.register("twice", |_ctx, x: u64| Ok::<_, String>(2 * x));
        w.barrier().unwrap();
        if w.rank() == 1 {
            dos::testing::vanish(w);
            return Vec::new();
        }
        // Rank 1 may still serve calls until it is gone: call after that.
        std::thread::sleep(std::time::Duration::from_millis(200));
        (0..3)
            .map(|_| {
                let e = rpc.call::<_, u64>(1, "twice", &1u64).unwrap_err();
                std::thread::sleep(std::time::Duration::from_millis(20));
                e
            })
            .collect()
    });
    assert_eq!(got[0].len(), 3);
    for e in &got[0] {
        assert!(matches!(e, Error::PeerFailed { rank: 1 }), "{e:?}");
    }
}
