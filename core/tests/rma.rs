//! One-sided communication: windows on one node (shared mappings), across
//! simulated nodes (active messages over tcp) and over callers' buffers
//! (active messages within a node): totals of concurrent atomics, epochs
//! and locks, and accesses outside windows.

use dos::op::{Max, Replace, Sum};
use dos::testing::{run_cluster, run_cluster_with, run_threads};
use dos::{Error, LockKind, World};

/// Runs `f` on 4 ranks in several layouts: one node, two nodes of two (over
/// tcp and over the soft-RoCE), and one node with every operation as
/// messages (windows over callers' buffers).
fn layouts(f: impl Fn(&World, bool) + Sync) {
    run_threads(4, |w| f(&w, true));
    run_cluster(&[2, 2], |w| f(&w, true));
    // Two nodes over the soft-RoCE: windows use its RDMA READ/WRITE/atomics.
    let roce = dos::config::Config {
        transports: dos::config::Transports {
            shm: true,
            tcp: false,
            roce: true,
            verbs: false,
        },
        ..dos::config::Config::default()
    };
    run_cluster_with(&[2, 2], roce, |w| f(&w, true));
    run_cluster(&[1, 3], |w| f(&w, false));
    run_threads(3, |w| f(&w, false));
}

#[test]
fn concurrent_fetch_add_from_everyone_to_everyone_is_exact() {
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        let mut buf = vec![0u64; n];
        let win = if alloc {
            w.win_allocate::<u64>(n).unwrap()
        } else {
            w.win_create(&mut buf).unwrap()
        };
        for round in 0..50u64 {
            for t in 0..n {
                // Slot `t` of everyone counts what `t`... every rank adds to
                // every slot of every target.
                for slot in 0..n {
                    win.fetch_add(t, slot, round + me as u64).unwrap();
                }
            }
        }
        win.fence().unwrap();
        let mut got = vec![0u64; n];
        win.read_local(&mut got, 0).unwrap();
        let per_rank: u64 = (0..50).sum::<u64>();
        let want = n as u64 * per_rank + 50 * (0..n as u64).sum::<u64>();
        assert_eq!(got, vec![want; n]);
        win.free().unwrap();
    });
}

#[test]
fn put_get_and_accumulate_follow_fence_epochs() {
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        let mut buf = vec![0i64; 2 * n];
        let win = if alloc {
            w.win_allocate::<i64>(2 * n).unwrap()
        } else {
            w.win_create(&mut buf).unwrap()
        };
        // Epoch 1: everyone writes its rank into slot `me` of everyone.
        for t in 0..n {
            win.put(&[me as i64 * 10], t, me).unwrap();
        }
        win.fence().unwrap();
        let mut mine = vec![0i64; n];
        win.read_local(&mut mine, 0).unwrap();
        assert_eq!(mine, (0..n as i64).map(|r| r * 10).collect::<Vec<_>>());
        // Epoch 2: sums into the upper half of rank 0; epoch 3: maxima (MPI
        // leaves mixed operations on one location in one epoch undefined).
        win.accumulate(&vec![1i64; n], 0, n, Sum).unwrap();
        win.fence().unwrap();
        win.accumulate(&[me as i64 * 3], 0, n, Max).unwrap();
        win.fence().unwrap();
        let mut upper = vec![0i64; n];
        win.get(&mut upper, 0, n).unwrap();
        let mut want = vec![n as i64; n];
        want[0] = (n as i64).max(3 * (n as i64 - 1));
        assert_eq!(upper, want);
        // Replace is an element-wise atomic put.
        if me == 1 {
            win.accumulate(&[-5i64], 0, 0, Replace).unwrap();
            win.flush(0).unwrap();
        }
        win.fence().unwrap();
        let mut first = [0i64];
        win.get(&mut first, 0, 0).unwrap();
        assert_eq!(first, [-5]);
        win.free().unwrap();
    });
}

#[test]
fn exclusive_locks_serialize_read_modify_write() {
    // A counter in rank 0, incremented with get + put under an exclusive
    // lock: any overlap of two holders would lose updates.
    layouts(|w, alloc| {
        let mut buf = [0u64; 1];
        let win = if alloc {
            w.win_allocate::<u64>(1).unwrap()
        } else {
            w.win_create(&mut buf).unwrap()
        };
        w.barrier().unwrap();
        for _ in 0..30 {
            win.lock(0, LockKind::Exclusive).unwrap();
            let mut v = [0u64];
            win.get(&mut v, 0, 0).unwrap();
            win.put(&[v[0] + 1], 0, 0).unwrap();
            win.unlock(0).unwrap();
        }
        win.fence().unwrap();
        // Shared locks of every target at once do not exclude each other.
        win.lock_all().unwrap();
        win.unlock_all().unwrap();
        win.lock(0, LockKind::Shared).unwrap();
        let mut v = [0u64];
        win.get(&mut v, 0, 0).unwrap();
        win.unlock(0).unwrap();
        assert_eq!(v[0], 30 * w.size() as u64);
        assert!(matches!(win.unlock(0), Err(Error::InvalidArgument { .. })));
        win.free().unwrap();
    });
}

#[test]
fn accesses_outside_a_window_are_typed_errors_and_touch_nothing() {
    layouts(|w, alloc| {
        let n = w.size();
        // Ranks have parts of different lengths: rank r has r + 2 elements.
        let len = w.rank() + 2;
        let mut buf = vec![7u64; len];
        let win = if alloc {
            w.win_allocate::<u64>(len).unwrap()
        } else {
            w.win_create(&mut buf).unwrap()
        };
        if alloc {
            win.write_local(&vec![7u64; len], 0).unwrap();
        }
        win.fence().unwrap();
        let t = (w.rank() + 1) % n;
        let tlen = t + 2;
        assert_eq!(win.len_of(t).unwrap(), tlen);
        let e = win.put(&[1, 2], t, tlen - 1).unwrap_err();
        assert!(
            matches!(e, Error::RemoteAccess { rank, window_len, .. } if rank == t && window_len == tlen * 8),
            "{e}"
        );
        assert!(matches!(
            win.get(&mut [0u64; 1], t, tlen),
            Err(Error::RemoteAccess { .. })
        ));
        assert!(matches!(
            win.fetch_add(t, usize::MAX, 1),
            Err(Error::RemoteAccess { .. })
        ));
        assert!(matches!(
            win.accumulate(&[1u64], t, tlen + 5, Sum),
            Err(Error::RemoteAccess { .. })
        ));
        assert!(matches!(
            win.put(&[1], n, 0),
            Err(Error::InvalidRank { .. })
        ));
        win.fence().unwrap();
        let mut mine = vec![0u64; len];
        win.read_local(&mut mine, 0).unwrap();
        assert_eq!(mine, vec![7; len], "nothing was written");
        win.free().unwrap();
    });
}

#[test]
fn compare_swap_elects_exactly_one_winner() {
    layouts(|w, alloc| {
        let mut buf = [0u64; 1];
        let win = if alloc {
            w.win_allocate::<u64>(1).unwrap()
        } else {
            w.win_create(&mut buf).unwrap()
        };
        w.barrier().unwrap();
        let old = win.compare_swap(0, 0, 0, w.rank() as u64 + 1).unwrap();
        let mut winners = [u64::from(old == 0)];
        w.allreduce_in_place(&mut winners, Sum).unwrap();
        assert_eq!(winners, [1]);
        let prev = win.swap(0, 0, 99).unwrap();
        assert_ne!(prev, 0);
        win.free().unwrap();
    });
}

#[test]
fn nonblocking_operations_complete_through_requests() {
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        let len = 40_000; // more than one message of the generic path
        let mut buf = vec![0u32; len];
        let win = if alloc {
            w.win_allocate::<u32>(len).unwrap()
        } else {
            w.win_create(&mut buf).unwrap()
        };
        let row: Vec<u32> = (0..len as u32).map(|i| i ^ me as u32).collect();
        win.write_local(&row, 0).unwrap();
        win.fence().unwrap();
        let t = (me + 1) % n;
        let mut got = vec![0u32; len];
        let mut old = 0u64;
        let counters = w.win_allocate::<u64>(1).unwrap();
        dos::scope(|s| {
            let a = win.rget(s, &mut got, t, 0).unwrap();
            let b = counters.rfetch_add(s, &mut old, 0, 0, 1).unwrap();
            dos::Request::wait_all([a, b]).unwrap();
        });
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &v)| v == i as u32 ^ t as u32));
        assert!(old < n as u64);
        // Out of bounds: refused before anything is sent.
        let mut small = [0u32; 2];
        dos::scope(|s| {
            assert!(matches!(
                win.rget(s, &mut small, t, len - 1),
                Err(Error::RemoteAccess { .. })
            ));
            let r = win.rput(s, &row[..2], t, 0).unwrap();
            r.wait().unwrap();
        });
        win.fence().unwrap();
        counters.fence().unwrap();
        let mut total = [0u64];
        counters.get(&mut total, 0, 0).unwrap();
        assert_eq!(total, [n as u64]);
        counters.free().unwrap();
        win.free().unwrap();
    });
}

/// Puts return before they are complete (small ones over RDMA go out from a
/// copy, many in flight): the source may be reused at once, later puts to the
/// same place win, and a flush completes them all.
#[test]
fn puts_in_flight_take_their_bytes_at_the_call_and_complete_at_flush() {
    layouts(|w, alloc| {
        let (n, me) = (w.size(), w.rank());
        const LEN: usize = 300;
        let mut buf = vec![0u32; LEN * n];
        let win = if alloc {
            w.win_allocate::<u32>(LEN * n).unwrap()
        } else {
            w.win_create(&mut buf).unwrap()
        };
        win.fence().unwrap();
        win.lock_all().unwrap();
        let mut src = vec![0u32; LEN];
        for t in 0..n {
            for round in 0..20u32 {
                // Element i of round r: written by every round, the last wins.
                for (i, v) in src.iter_mut().enumerate() {
                    *v = (me as u32) << 24 | round << 16 | i as u32;
                }
                win.put(&src, t, me * LEN).unwrap();
                // Reused at once: the put took its bytes at the call.
                src.fill(u32::MAX);
                // Single elements, many in flight.
                for i in (0..LEN).step_by(7) {
                    win.put(
                        &[(me as u32) << 24 | round << 16 | i as u32],
                        t,
                        me * LEN + i,
                    )
                    .unwrap();
                }
            }
            win.flush(t).unwrap();
        }
        win.unlock_all().unwrap();
        win.fence().unwrap();
        let mut got = vec![0u32; LEN * n];
        win.read_local(&mut got, 0).unwrap();
        for o in 0..n {
            for i in 0..LEN {
                assert_eq!(got[o * LEN + i], (o as u32) << 24 | 19 << 16 | i as u32);
            }
        }
        win.free().unwrap();
    });
}
