//! Global arrays and the distributed lock, on one node (threads over shared
//! memory) and across simulated nodes (TCP and the soft-RoCE between them),
//! against serial computations.

#[allow(dead_code)]
#[path = "../../checks/src/dsmcheck.rs"]
mod dsmcheck;

use dos::config::Config;
use dos::dsm::Distribution;
use dos::testing::{run_cluster, run_cluster_with, run_threads};
use dsmcheck::{check_array, count_under_lock, dists};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn global_arrays_match_the_serial_result_on_one_node(n in 1usize..6, len in 0usize..40, d in 0usize..3) {
        let dist = dists()[d];
        for r in run_threads(n, |w| check_array(&w, len, dist)) {
            prop_assert_eq!(r, Ok(()));
        }
    }
}

#[test]
fn global_arrays_across_nodes() {
    for dist in dists() {
        for len in [0, 1, 7, 50] {
            for r in run_cluster(&[2, 1, 2], |w| check_array(&w, len, dist)) {
                assert_eq!(r, Ok(()), "{dist:?} len {len}");
            }
        }
    }
}

fn roce() -> Config {
    Config::parse(|k| (k == "DOS_TRANSPORTS").then(|| "shm,roce".to_string())).unwrap()
}

#[test]
fn global_arrays_across_nodes_over_the_soft_roce() {
    for r in run_cluster_with(&[1, 2], roce(), |w| {
        check_array(&w, 23, Distribution::BlockCyclic { block: 2 })
    }) {
        assert_eq!(r, Ok(()));
    }
}

#[test]
fn the_lock_gives_exact_totals_on_one_node() {
    for n in [1, 2, 3, 5] {
        assert_eq!(
            run_threads(n, |w| count_under_lock(&w, 200)),
            vec![200 * n as u64; n]
        );
    }
}

#[test]
fn the_lock_gives_exact_totals_across_nodes() {
    assert_eq!(
        run_cluster(&[2, 1, 1], |w| count_under_lock(&w, 100)),
        vec![400; 4]
    );
    assert_eq!(
        run_cluster_with(&[1, 1, 1], roce(), |w| count_under_lock(&w, 50)),
        vec![150; 3]
    );
}
