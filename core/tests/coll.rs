//! Collectives against serial computations, on ranks run as threads over the
//! real shm stack: random sizes (crossing the algorithm thresholds and the
//! eager limit), counts, displacements and roots, a commutative and a
//! non-commutative operation, on the world and on split communicators.
//! The checks themselves are shared with the `collcheck` test program (checks/).

#[allow(dead_code)]
#[path = "../../checks/src/collcheck.rs"]
mod collcheck;

use collcheck::{check_case, Case};
use dos::config::Config;
use dos::testing::{run_threads, run_threads_with};
use dos::Error;
use proptest::prelude::*;

const SIZES: [usize; 7] = [1, 2, 3, 4, 5, 7, 8];

/// Runs `case` twice: with the defaults (small collectives among the ranks
/// of one node go through shared-memory slots) and with that path off (the
/// message-based algorithms that communicators spanning nodes use).
fn run_case(n: usize, case: &Case) -> Result<(), String> {
    let results = run_threads(n, |w| check_case(&w, case));
    results
        .into_iter()
        .collect::<Result<(), String>>()
        .map_err(|e| format!("node slots: {e}"))?;
    let messages = Config {
        node_coll_bytes: 0,
        ..Config::default()
    };
    let results = run_threads_with(n, messages, |w| check_case(&w, case));
    results
        .into_iter()
        .collect::<Result<(), String>>()
        .map_err(|e| format!("messages: {e}"))
}

fn count_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..4,
        4usize..300,
        // Around the 2 KiB stack scratch (256 u64) and the 16 KiB eager
        // limit / large-algorithm switches (2048 u64).
        250usize..270,
        2000usize..2200,
        // Large: Rabenseifner, van de Geijn, rings, pairwise exchanges.
        4000usize..9000,
        16_000usize..20_000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_collective_matches_serial(seed in any::<u64>(), count in count_strategy(), root in 0usize..64) {
        let case = Case { seed, count, root };
        for n in SIZES {
            if let Err(msg) = run_case(n, &case) {
                return Err(TestCaseError::fail(format!("{n} ranks: {msg}")));
            }
        }
    }
}

#[test]
fn every_threshold_on_every_size() {
    for (k, count) in [
        0usize, 1, 255, 256, 257, 2047, 2048, 2049, 4096, 16_384, 20_000,
    ]
    .into_iter()
    .enumerate()
    {
        for n in SIZES {
            let case = Case {
                seed: 77 + k as u64,
                count,
                root: k,
            };
            if let Err(msg) = run_case(n, &case) {
                panic!("{n} ranks: {msg}");
            }
        }
    }
}

#[test]
fn floating_point_results_agree_across_ranks() {
    // Rank-ordered combination gives bit-identical sums on every rank.
    for count in [3usize, 5000] {
        let got = run_threads(5, |w| {
            let mine: Vec<f64> = (0..count)
                .map(|i| 1.0 / (1.0 + (i * 7 + w.rank() * 13) as f64))
                .collect();
            let mut out = vec![0.0; count];
            w.allreduce(&mine, &mut out, dos::op::Sum).unwrap();
            out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        });
        assert!(got.windows(2).all(|p| p[0] == p[1]));
    }
}

#[test]
fn many_small_allreduces_in_a_row() {
    run_threads(4, |w| {
        for i in 0..2000u64 {
            let mut x = [0u64];
            w.allreduce(&[i + w.rank() as u64], &mut x, dos::op::Sum)
                .unwrap();
            assert_eq!(x[0], 4 * i + 6);
        }
    });
}

#[test]
fn bad_roots_are_invalid_rank() {
    run_threads(3, |w| {
        let mut b = [0u8; 3];
        let bad = |r: dos::Result<()>| matches!(r, Err(Error::InvalidRank { rank: 3, size: 3 }));
        assert!(bad(w.bcast(&mut b[..1], 3)));
        assert!(bad(w.reduce(&[1u8], &mut b[..1], dos::op::Sum, 3)));
        assert!(bad(w.gather(&[1u8], &mut b, 3)));
        assert!(bad(w.gatherv(&[1u8], &mut b, &[1, 1, 1], &[0, 1, 2], 3)));
        assert!(bad(w.scatter(&b.clone(), &mut [0u8], 3)));
        assert!(bad(w.scatterv(
            &b.clone(),
            &[1, 1, 1],
            &[0, 1, 2],
            &mut [0u8],
            3
        )));
        // The communicator still works afterwards.
        w.barrier().unwrap();
    });
}

#[test]
fn wrong_lengths_are_invalid_buffer() {
    run_threads(3, |w| {
        let bad = |r: dos::Result<()>| matches!(r, Err(Error::InvalidBuffer { .. }));
        let root = w.rank() == 0;
        let mut two = [0u32; 2];
        let mut five = [0u32; 5];
        let mut six = [0u32; 6];
        assert!(bad(w.allreduce(&[1u32], &mut two, dos::op::Sum)));
        assert!(bad(w.scan(&[1u32], &mut two, dos::op::Sum)));
        assert!(bad(w.exscan(&[1u32, 2, 3], &mut two, dos::op::Sum)));
        if root {
            assert!(bad(w.reduce(&[1u32], &mut two, dos::op::Sum, 0)));
            assert!(bad(w.gather(&[1u32, 2], &mut five, 0)));
            assert!(bad(w.scatter(&five, &mut two, 0)));
            // counts/displs of the wrong length, or reaching past the buffer
            assert!(bad(w.gatherv(&[1u32], &mut six, &[1, 1], &[0, 1], 0)));
            assert!(bad(w.gatherv(&[1u32], &mut six, &[1, 1, 2], &[0, 1, 5], 0)));
            assert!(bad(w.gatherv(
                &[1u32],
                &mut six,
                &[1, usize::MAX, 1],
                &[0, 1, 2],
                0
            )));
            assert!(bad(w.scatterv(
                &six,
                &[1, 1, 1],
                &[0, 1, 6],
                &mut [0u32],
                0
            )));
            assert!(bad(w.scatterv(
                &six,
                &[2, 1, 1],
                &[0, 2, 3],
                &mut [0u32],
                0
            )));
        }
        assert!(bad(w.allgather(&[1u32, 2], &mut five)));
        assert!(bad(w.allgatherv(&[1u32], &mut six, &[1, 1, 1], &[0, 1, 9])));
        assert!(bad(w.allgatherv(&[1u32], &mut six, &[2, 2, 2], &[0, 1, 3])));
        assert!(bad(w.alltoall(&six, &mut five)));
        assert!(bad(w.alltoall(&five, &mut [0u32; 5])));
        assert!(bad(w.alltoallv(
            &six,
            &[1, 1],
            &[0, 1],
            &mut five,
            &[1, 1, 1],
            &[0, 1, 2]
        )));
        assert!(bad(w.alltoallv(
            &six,
            &[1, 1, 1],
            &[0, 1, 2],
            &mut five,
            &[1, 1, 1],
            &[0, 1, 5]
        )));
        assert!(bad(w.reduce_scatter(
            &six,
            &mut [0u32; 1],
            &[2, 2, 2],
            dos::op::Sum
        )));
        assert!(bad(w.reduce_scatter(
            &five,
            &mut [0u32; 2],
            &[2, 2, 2],
            dos::op::Sum
        )));
        assert!(bad(w.reduce_scatter(
            &six,
            &mut [0u32; 2],
            &[2, 2],
            dos::op::Sum
        )));
        assert!(bad(w.reduce_scatter_block(&five, &mut two, dos::op::Sum)));
        // Nothing was sent: the communicator still works.
        let mut x = [0u32];
        w.allreduce(&[1], &mut x, dos::op::Sum).unwrap();
        assert_eq!(x[0], 3);
    });
}

#[test]
fn disagreeing_counts_are_reported() {
    // Rank 1 sends a longer block than the root expects: truncation, typed.
    run_threads(2, |w| {
        let send = vec![7u8; if w.rank() == 1 { 3 } else { 1 }];
        let mut recv = [0u8; 2];
        let r = w.gatherv(&send, &mut recv, &[1, 1], &[0, 1], 0);
        if w.rank() == 0 {
            assert!(matches!(r, Err(Error::Truncated { .. })), "{r:?}");
        } else {
            r.unwrap();
        }
    });
}

#[test]
fn zero_sized_and_wide_elements() {
    run_threads(3, |w| {
        let mut unit = [(); 4];
        w.bcast(&mut unit, 1).unwrap();
        let mut wide = [0u128; 3];
        w.allgather(&[w.rank() as u128 + (1 << 100)], &mut wide)
            .unwrap();
        assert_eq!(wide, [1 << 100, (1 << 100) + 1, (1 << 100) + 2]);
        let mut s = [0u128];
        w.allreduce(&[1u128 << 90], &mut s, dos::op::Sum).unwrap();
        assert_eq!(s[0], 3 << 90);
    });
}

#[test]
fn mixed_small_collectives_keep_generations_apart() {
    // Bcast and reduce publish without waiting for everyone: a root can run
    // ahead into the next calls. Rotating roots, mixed kinds and a rank that
    // lags now and then check that no slot is overwritten while still read.
    for n in [2usize, 3, 4, 7] {
        run_threads(n, |w| {
            let (r, n) = (w.rank() as u64, w.size() as u64);
            for i in 0..400u64 {
                if (i + r) % 37 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                let root = (i % n) as usize;
                match i % 4 {
                    0 => {
                        let mut b = [if root as u64 == r { i } else { 0 }; 3];
                        w.bcast(&mut b, root).unwrap();
                        assert_eq!(b, [i; 3]);
                    }
                    1 => {
                        let mut out = [0u64; 2];
                        let recv: &mut [u64] = if root as u64 == r { &mut out } else { &mut [] };
                        w.reduce(&[r + i, 1], recv, dos::op::Sum, root).unwrap();
                        if root as u64 == r {
                            assert_eq!(out, [n * (n - 1) / 2 + n * i, n]);
                        }
                    }
                    2 => w.barrier().unwrap(),
                    _ => {
                        let mut s = [0u64];
                        w.allreduce(&[r * i], &mut s, dos::op::Sum).unwrap();
                        assert_eq!(s, [i * n * (n - 1) / 2]);
                    }
                }
            }
        });
    }
}

#[test]
fn communicators_beyond_the_slot_contexts_still_work() {
    // Only the first contexts have node slots; later communicators use messages.
    run_threads(3, |w| {
        let mut comms = vec![w.dup().unwrap()];
        for _ in 0..20 {
            let c = comms.last().unwrap().dup().unwrap();
            comms.push(c);
        }
        for (k, c) in comms.iter().enumerate() {
            let mut s = [0u64];
            c.allreduce(&[k as u64 + c.rank() as u64], &mut s, dos::op::Sum)
                .unwrap();
            assert_eq!(s, [3 * k as u64 + 3]);
            c.barrier().unwrap();
        }
    });
}
