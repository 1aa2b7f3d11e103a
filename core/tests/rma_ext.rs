//! One-sided additions checked against serial models on 1, 2, 3, 4 and 7
//! ranks, on one node and across simulated nodes (tcp and the soft-RoCE):
//! post/start/complete/wait epochs (ring and star), fetching accumulates
//! with every built-in operation, and the window's communicator and local
//! views. A soak of the same: `cargo test -p dos --test rma_ext -- --ignored`.

use dos::op::{BitAnd, BitOr, BitXor, Max, Min, Prod, Replace, Sum};
use dos::rma::NoOp;
use dos::testing::{run_cluster, run_cluster_with, run_threads};
use dos::{Error, LockKind, Window, World};

fn roce() -> dos::config::Config {
    dos::config::Config {
        transports: dos::config::Transports {
            shm: true,
            tcp: false,
            roce: true,
            verbs: false,
        },
        ..dos::config::Config::default()
    }
}

/// Runs `f(world, allocated)` on 1, 2, 3, 4 and 7 ranks of one node (with
/// allocated windows, and with windows over callers' buffers, whose
/// operations travel as messages), and across simulated nodes over tcp and
/// over the soft-RoCE.
fn layouts(f: impl Fn(&World, bool) + Sync) {
    for n in [1, 2, 3, 4, 7] {
        run_threads(n, |w| f(&w, true));
        run_threads(n, |w| f(&w, false));
    }
    run_cluster(&[1, 1], |w| f(&w, true));
    run_cluster(&[2, 1], |w| f(&w, false));
    run_cluster(&[3, 4], |w| f(&w, true));
    run_cluster_with(&[2, 2], roce(), |w| f(&w, true));
    run_cluster_with(&[1, 2], roce(), |w| f(&w, false));
}

fn window<'a, T: dos::Pod>(w: &World, alloc: bool, buf: &'a mut [T]) -> Window<'a, T> {
    if alloc {
        w.win_allocate::<T>(buf.len()).unwrap()
    } else {
        w.win_create(buf).unwrap()
    }
}

#[test]
fn pscw_ring_exchange_matches_the_serial_model() {
    const M: usize = 5;
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        let (right, left) = ((me + 1) % n, (me + n - 1) % n);
        let mut buf = vec![0i64; 2 * M];
        let win = window(w, alloc, &mut buf);
        for round in 0..4i64 {
            let row: Vec<i64> = (0..M as i64)
                .map(|i| me as i64 * 1000 + round * 10 + i)
                .collect();
            win.post(&[left]).unwrap();
            win.start(&[right]).unwrap();
            // Rows go right; the sums of the rounds accumulate too, and the
            // left neighbour's part is read back.
            // (The put last: nothing after it in the epoch carries it along.)
            win.accumulate(&row, right, M, Sum).unwrap();
            win.put(&row, right, 0).unwrap();
            win.complete().unwrap();
            if round % 2 == 0 {
                win.wait().unwrap();
            } else {
                // Polling ends the epoch as wait does.
                let mut polls = 0u64;
                while !win.test().unwrap() {
                    polls += 1;
                    assert!(polls < 50_000_000, "test never saw the completion");
                }
            }
            // Serial model: what `left` wrote this round, and the sum of its
            // rows so far.
            let want_row: Vec<i64> = (0..M as i64)
                .map(|i| left as i64 * 1000 + round * 10 + i)
                .collect();
            let want_sum: Vec<i64> = (0..M as i64)
                .map(|i| (0..=round).map(|r| left as i64 * 1000 + r * 10 + i).sum())
                .collect();
            let mut got = vec![0i64; 2 * M];
            win.read_local(&mut got, 0).unwrap();
            assert_eq!(got[..M], want_row[..], "rank {me} round {round}");
            assert_eq!(got[M..], want_sum[..], "rank {me} round {round}");
            // The neighbour reads what was written into it, in a second epoch.
            win.post(&[left]).unwrap();
            win.start(&[right]).unwrap();
            let mut back = vec![0i64; M];
            win.get(&mut back, right, 0).unwrap();
            win.complete().unwrap();
            win.wait().unwrap();
            assert_eq!(back, row, "rank {me} reads its row at {right}");
        }
        // Fences work again once the epochs are closed.
        win.fence().unwrap();
        win.free().unwrap();
    });
}

#[test]
fn pscw_star_in_and_out_matches_the_serial_model() {
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        let mut buf = vec![0u64; n];
        let win = window(w, alloc, &mut buf);
        let everyone: Vec<usize> = (0..n).collect();
        // In: everyone (rank 0 too) reads what rank 0 wrote before posting,
        // then writes into its own slot of rank 0.
        for round in 0..3u64 {
            if me == 0 {
                // Rank 0 takes its time: a start that did not wait for the
                // post would read the previous round.
                std::thread::sleep(std::time::Duration::from_millis(2));
                win.write_local(&vec![round * 1000; n], 0).unwrap();
                win.post(&everyone).unwrap();
            }
            win.start(&[0]).unwrap();
            let mut seen = [0u64];
            win.get(&mut seen, 0, me).unwrap();
            assert_eq!(seen[0], round * 1000, "rank {me} round {round}");
            win.put(&[round * 1000 + me as u64 * 3 + 1], 0, me).unwrap();
            win.complete().unwrap();
            if me == 0 {
                win.wait().unwrap();
                let mut got = vec![0u64; n];
                win.read_local(&mut got, 0).unwrap();
                let want: Vec<u64> = (0..n as u64).map(|r| round * 1000 + r * 3 + 1).collect();
                assert_eq!(got, want);
            }
        }
        // Out: rank 0 adds into slot 0 of everyone else.
        let others: Vec<usize> = (1..n).collect();
        if me != 0 {
            win.post(&[0]).unwrap();
        } else {
            win.start(&others).unwrap();
            for &t in &others {
                win.accumulate(&[t as u64 * 100], t, 0, Sum).unwrap();
            }
            win.complete().unwrap();
        }
        if me != 0 {
            win.wait().unwrap();
            let mut got = [0u64];
            win.read_local(&mut got, 0).unwrap();
            assert_eq!(got[0], me as u64 * 100);
        }
        // Empty groups are epochs with nobody: they end at once.
        win.post(&[]).unwrap();
        win.start(&[]).unwrap();
        win.complete().unwrap();
        assert!(win.test().unwrap());
        win.free().unwrap();
    });
}

#[test]
fn pscw_misuse_is_a_typed_error_and_leaves_the_window_usable() {
    for n in [1, 2, 3] {
        run_threads(n, |w| {
            let (n, me) = (w.size(), w.rank());
            let win = w.win_allocate::<u64>(2).unwrap();
            let bad = |r: dos::Result<()>| {
                assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
            };
            bad(win.complete());
            bad(win.wait());
            assert!(matches!(win.test(), Err(Error::InvalidArgument { .. })));
            assert!(matches!(
                win.post(&[n]),
                Err(Error::InvalidRank { rank, size }) if rank == n && size == n
            ));
            bad(win.start(&[me, me]));
            // Post to self, then the misuses inside the epochs.
            win.post(&[me]).unwrap();
            bad(win.post(&[me]));
            bad(win.fence());
            win.start(&[me]).unwrap();
            bad(win.start(&[me]));
            bad(win.lock(me, LockKind::Shared));
            win.put(&[5], me, 1).unwrap();
            win.complete().unwrap();
            win.wait().unwrap();
            let mut v = [0u64; 2];
            win.read_local(&mut v, 0).unwrap();
            assert_eq!(v, [0, 5]);
            // Start while holding a lock.
            win.lock(me, LockKind::Exclusive).unwrap();
            win.post(&[me]).unwrap();
            bad(win.start(&[me]));
            win.unlock(me).unwrap();
            win.start(&[me]).unwrap();
            win.complete().unwrap();
            win.wait().unwrap();
            win.fence().unwrap();
            win.free().unwrap();
        });
    }
}

#[test]
fn concurrent_fetch_op_gives_a_permutation_of_the_serial_prefixes() {
    const K: u64 = 20;
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        let mut buf = vec![0u64; 2];
        let win = window(w, alloc, &mut buf);
        // Everyone adds 1 to rank 0's counter K times: the old values are
        // the serial prefix sums 0..n*K, in some order.
        let mut olds: Vec<u64> = (0..K)
            .map(|_| win.fetch_op(1, 0, 0, Sum).unwrap())
            .collect();
        // Everyone swaps its id into rank n-1's slot 1 (initially 0):
        // the old values and the final one are {0} ∪ ids, each once.
        let last = n - 1;
        let swapped = win.fetch_op(me as u64 + 1, last, 1, Replace).unwrap();
        win.fence().unwrap();
        let mut all = vec![0u64; n * K as usize];
        w.allgather(&olds, &mut all).unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..n as u64 * K).collect::<Vec<_>>());
        olds.sort_unstable();
        olds.dedup();
        assert_eq!(olds.len(), K as usize, "one rank saw a value twice");
        let mut sw = vec![0u64; n];
        w.allgather(&[swapped], &mut sw).unwrap();
        let fin = win.fetch_op(0, last, 1, NoOp).unwrap();
        sw.push(fin);
        sw.sort_unstable();
        assert_eq!(sw, (0..=n as u64).collect::<Vec<_>>());
        assert_eq!(win.fetch_op(0, 0, 0, NoOp).unwrap(), n as u64 * K);
        win.free().unwrap();
    });
}

/// Applies `op` to a serial copy and checks what `get_accumulate` returned
/// and left, one origin per location (rank `me` into its right neighbour).
fn check_ops<T>(w: &World, alloc: bool, init: [T; 2], src: [T; 2])
where
    T: dos::rma::AccType + PartialEq + std::fmt::Debug + Copy,
    Sum: dos::op::Op<T>,
    Prod: dos::op::Op<T>,
    Min: dos::op::Op<T>,
    Max: dos::op::Op<T>,
{
    use dos::op::Op;
    let (n, me) = (w.size(), w.rank());
    let right = (me + 1) % n;
    let mut buf = vec![init[0]; 12];
    let win = window(w, alloc, &mut buf);
    for s in 0..6 {
        win.write_local(&init, 2 * s).unwrap();
    }
    win.fence().unwrap();
    let mut olds = [[init[0]; 2]; 6];
    win.get_accumulate(&src, &mut olds[0], right, 0, Sum)
        .unwrap();
    win.get_accumulate(&src, &mut olds[1], right, 2, Prod)
        .unwrap();
    win.get_accumulate(&src, &mut olds[2], right, 4, Min)
        .unwrap();
    win.get_accumulate(&src, &mut olds[3], right, 6, Max)
        .unwrap();
    win.get_accumulate(&src, &mut olds[4], right, 8, Replace)
        .unwrap();
    win.get_accumulate(&[], &mut olds[5], right, 10, NoOp)
        .unwrap();
    win.fence().unwrap();
    assert!(olds.iter().all(|o| *o == init), "{olds:?}");
    let mut got = vec![init[0]; 12];
    win.read_local(&mut got, 0).unwrap();
    let model = |f: &dyn Fn(&mut [T])| {
        let mut v = init;
        f(&mut v);
        v
    };
    let want = [
        model(&|v| Sum.apply_right(v, &src)),
        model(&|v| Prod.apply_right(v, &src)),
        model(&|v| Min.apply_right(v, &src)),
        model(&|v| Max.apply_right(v, &src)),
        src,
        init,
    ]
    .concat();
    assert_eq!(got, want);
    win.free().unwrap();
}

#[test]
fn get_accumulate_returns_old_values_for_every_op_and_type() {
    layouts(|w, alloc| {
        check_ops::<i32>(w, alloc, [5, -3], [-2, 7]);
        check_ops::<u64>(w, alloc, [6, 9], [3, 1]);
        check_ops::<f64>(w, alloc, [1.5, -2.0], [0.25, 4.0]);
        check_ops::<u8>(w, alloc, [3, 200], [2, 100]);
        // Bitwise ones on integers.
        let (n, me) = (w.size(), w.rank());
        let right = (me + 1) % n;
        let mut buf = vec![0u32; 3];
        let win = window(w, alloc, &mut buf);
        win.write_local(&[0b1100, 0b1100, 0b1100], 0).unwrap();
        win.fence().unwrap();
        let o = [
            win.fetch_op(0b1010, right, 0, BitAnd).unwrap(),
            win.fetch_op(0b1010, right, 1, BitOr).unwrap(),
            win.fetch_op(0b1010, right, 2, BitXor).unwrap(),
        ];
        win.fence().unwrap();
        assert_eq!(o, [0b1100; 3]);
        let mut got = [0u32; 3];
        win.read_local(&mut got, 0).unwrap();
        assert_eq!(got, [0b1000, 0b1110, 0b0110]);
        win.free().unwrap();
    });
}

#[test]
fn concurrent_get_accumulate_of_vectors_is_atomic_per_element() {
    // 320 KB: several messages per call on every path that uses messages.
    const M: usize = 40_000;
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        let mut buf = vec![0i64; M];
        let win = window(w, alloc, &mut buf);
        let mut seen = vec![0i64; M];
        // (old value, addition) at three elements, per call.
        let probes = [0, M / 2, M - 1];
        let mut pairs = Vec::new();
        for round in 0..5 {
            let add = me as i64 + 1 + round;
            win.get_accumulate(&vec![add; M], &mut seen, 0, 0, Sum)
                .unwrap();
            for &i in &probes {
                pairs.extend([seen[i], add]);
            }
        }
        win.fence().unwrap();
        let total: i64 = (0..n as i64)
            .map(|r| (0..5).map(|k| r + 1 + k).sum::<i64>())
            .sum();
        let mut got = vec![0i64; M];
        win.get(&mut got, 0, 0).unwrap();
        assert_eq!(got, vec![total; M]);
        // Serial model per element: the calls in the order of their old
        // values form a chain 0, a1, a1 + a2, ... up to the total.
        let mut all = vec![0i64; pairs.len() * n];
        w.allgather(&pairs, &mut all).unwrap();
        for (j, _) in probes.iter().enumerate() {
            let mut calls: Vec<(i64, i64)> = all
                .chunks_exact(2 * probes.len())
                .map(|c| (c[2 * j], c[2 * j + 1]))
                .collect();
            calls.sort_unstable();
            let mut at = 0;
            for (old, add) in calls {
                assert_eq!(old, at, "element {}: {all:?}", probes[j]);
                at += add;
            }
            assert_eq!(at, total);
        }
        win.free().unwrap();
    });
}

#[test]
fn fetching_accumulates_reject_bad_arguments() {
    run_threads(2, |w| {
        let win = w.win_allocate::<i64>(4).unwrap();
        let mut out = [0i64; 2];
        assert!(matches!(
            win.get_accumulate(&[1, 2, 3], &mut out, 1, 0, Sum),
            Err(Error::InvalidBuffer { .. })
        ));
        assert!(matches!(
            win.get_accumulate(&[1, 2], &mut out, 1, 3, Sum),
            Err(Error::RemoteAccess { rank: 1, .. })
        ));
        assert!(matches!(
            win.fetch_op(1, 2, 0, Sum),
            Err(Error::InvalidRank { rank: 2, size: 2 })
        ));
        // Accumulate with no operation changes nothing.
        win.accumulate(&[9, 9], 1 - w.rank(), 0, NoOp).unwrap();
        win.fence().unwrap();
        let mut v = [7i64; 4];
        win.read_local(&mut v, 0).unwrap();
        assert_eq!(v, [0; 4]);
        win.free().unwrap();
    });
}

#[test]
fn window_communicator_and_local_views() {
    // (world, allocated, all ranks on one node)
    let f = |w: &World, alloc: bool, one_node: bool| {
        let me = w.rank();
        // A window over a split communicator names its own ranks.
        let half = w.split(Some((me % 2) as u32), me as i32).unwrap().unwrap();
        let mut buf = vec![0u32; 3];
        let mut win = if alloc {
            half.win_allocate::<u32>(3).unwrap()
        } else {
            half.win_create(&mut buf).unwrap()
        };
        assert_eq!(win.comm().size(), half.size());
        assert_eq!(win.comm().rank(), half.rank());
        let (hn, hme) = (half.size(), half.rank());
        win.local_mut().copy_from_slice(&[hme as u32; 3]);
        win.fence().unwrap();
        win.put(&[100 + hme as u32], (hme + 1) % hn, 2).unwrap();
        win.fence().unwrap();
        let from = ((hme + hn - 1) % hn) as u32;
        assert_eq!(win.local(), [hme as u32, hme as u32, 100 + from]);
        // A peer's part, when it is mapped here.
        let peer = (hme + 1) % hn;
        match win.node_part_mut(peer).unwrap() {
            Some(p) => {
                assert!(alloc && (one_node || peer == hme), "mapped across nodes?");
                assert_eq!(p[..2], [peer as u32, peer as u32]);
            }
            None => assert!(!alloc || !one_node, "rank {me}: no view of {peer}"),
        }
        assert!(matches!(
            win.node_part_mut(hn),
            Err(Error::InvalidRank { .. })
        ));
        win.fence().unwrap();
        win.free().unwrap();
    };
    for n in [1, 2, 3, 4, 7] {
        run_threads(n, |w| f(&w, true, true));
        run_threads(n, |w| f(&w, false, true));
    }
    // One rank per node: every peer is on another node.
    run_cluster(&[1, 1, 1, 1], |w| f(&w, true, false));
    run_cluster_with(&[1, 1], roce(), |w| f(&w, true, false));
}

/// The epoch and fetching-accumulate tests 20 times over (heavy: run with
/// `cargo test -p dos --test rma_ext -- --ignored`).
#[test]
#[ignore = "heavy: 20 rounds of every layout"]
fn soak_pscw_and_fetching_accumulates() {
    for _ in 0..20 {
        pscw_ring_exchange_matches_the_serial_model();
        pscw_star_in_and_out_matches_the_serial_model();
        concurrent_fetch_op_gives_a_permutation_of_the_serial_prefixes();
        concurrent_get_accumulate_of_vectors_is_atomic_per_element();
    }
}
