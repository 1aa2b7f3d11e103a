//! Nonblocking collectives against serial models, on 1, 2, 3, 4 and 7 ranks
//! run as threads over the real shm stack: many outstanding at once on one
//! communicator, overlapped with point-to-point and blocking collectives,
//! waited in any order; small, eager-sized and rendezvous-sized buffers; a
//! non-commutative operation; a rank that starts late or waits late.

use dos::op::{self, Sum};
use dos::testing::run_threads;
use dos::{Comm, Error, Request};

const SIZES: [usize; 5] = [1, 2, 3, 4, 7];

/// Rank `r`'s contribution: element `i` of a collective numbered `k`.
fn val(k: u64, r: usize, i: usize) -> u64 {
    (k + 1)
        .wrapping_mul(1_000_003)
        .wrapping_add((r as u64) << 20)
        .wrapping_add(i as u64 * 7919)
        % 1_000_000_007
}

/// An affine map `x -> a x + b` as a pair; composition is associative and
/// not commutative, so a result in the wrong order shows.
type Aff = [u64; 2];

fn compose(f: Aff, g: Aff) -> Aff {
    // f from lower ranks first, then g: x -> g(f(x)).
    [
        f[0].wrapping_mul(g[0]),
        f[1].wrapping_mul(g[0]).wrapping_add(g[1]),
    ]
}

fn aff(k: u64, r: usize, i: usize) -> Aff {
    [val(k, r, i) | 1, val(k + 100, r, i)]
}

/// Serial fold of ranks `ranks` for element `i`.
fn sum_of(k: u64, ranks: std::ops::Range<usize>, i: usize) -> u64 {
    ranks.fold(0u64, |a, r| a.wrapping_add(val(k, r, i)))
}

fn aff_of(k: u64, ranks: std::ops::Range<usize>, i: usize) -> Aff {
    ranks.fold([1, 0], |a, r| compose(a, aff(k, r, i)))
}

/// Everything at once on `w`, then checks against the serial model.
fn all_at_once(w: &Comm, count: usize) {
    let (n, r) = (w.size(), w.rank());
    let root = (count + 1) % n;
    let vals = |k: u64| (0..count).map(|i| val(k, r, i)).collect::<Vec<u64>>();
    let affs = |k: u64| (0..count).map(|i| aff(k, r, i)).collect::<Vec<Aff>>();

    let s_allred = vals(0);
    let mut allred = vec![0u64; count];
    let mut allred_ip = vals(1);
    let s_red = affs(2);
    let mut red = vec![[0u64; 2]; if r == root { count } else { 0 }];
    let mut red_ip = affs(3);
    let mut bc = if r == root { vals(4) } else { vec![0; count] };
    let s_gat = vals(5);
    let mut gat = vec![0u64; if r == root { n * count } else { 0 }];
    let s_sca: Vec<u64> = if r == root {
        (0..n * count).map(|i| val(6, 0, i)).collect()
    } else {
        Vec::new()
    };
    let mut sca = vec![0u64; count];
    let s_allg = vals(7);
    let mut allg = vec![0u64; n * count];
    let s_a2a: Vec<u64> = (0..n * count).map(|i| val(8, r, i)).collect();
    let mut a2a = vec![0u64; n * count];
    let s_rsb: Vec<Aff> = (0..n * count).map(|i| aff(9, r, i)).collect();
    let mut rsb = vec![[0u64; 2]; count];
    let s_scan = affs(10);
    let mut scan = vec![[0u64; 2]; count];
    let s_exs = affs(11);
    let mut exs = vec![[7u64; 2]; count];
    // Point-to-point around a ring, in flight with the collectives.
    let ring_out = vals(12);
    let mut ring_in = vec![0u64; count];
    let mut blocking = [0u64];

    let ord = op::user_ordered(compose);
    dos::scope(|s| {
        let mut reqs: Vec<Request> = vec![
            w.ibarrier(s).unwrap(),
            w.iallreduce(s, &s_allred, &mut allred, Sum).unwrap(),
            w.iallreduce_in_place(s, &mut allred_ip, Sum).unwrap(),
        ];
        reqs.push(w.irecv(s, &mut ring_in, (r + n - 1) % n, 3).expect("irecv"));
        reqs.push(w.ireduce(s, &s_red, &mut red, ord, root).unwrap());
        reqs.push(w.ireduce_in_place(s, &mut red_ip, ord, 0).unwrap());
        reqs.push(w.ibcast(s, &mut bc, root).unwrap());
        // A blocking collective between the starts must not meet their messages.
        w.allreduce(&[1u64], &mut blocking, Sum).unwrap();
        reqs.push(w.igather(s, &s_gat, &mut gat, root).unwrap());
        reqs.push(w.iscatter(s, &s_sca, &mut sca, root).unwrap());
        reqs.push(w.iallgather(s, &s_allg, &mut allg).unwrap());
        reqs.push(w.isend(s, &ring_out, (r + 1) % n, 3).unwrap());
        reqs.push(w.ialltoall(s, &s_a2a, &mut a2a).unwrap());
        reqs.push(w.ireduce_scatter_block(s, &s_rsb, &mut rsb, ord).unwrap());
        reqs.push(w.iscan(s, &s_scan, &mut scan, ord).unwrap());
        reqs.push(w.iexscan(s, &s_exs, &mut exs, ord).unwrap());
        // Complete them in an order that differs from rank to rank.
        let k = reqs.len();
        reqs.rotate_left(r % k);
        while let Some((_, res)) = Request::wait_any(&mut reqs) {
            res.unwrap();
        }
    });
    assert_eq!(blocking, [n as u64]);
    for i in 0..count {
        assert_eq!(allred[i], sum_of(0, 0..n, i), "iallreduce");
        assert_eq!(allred_ip[i], sum_of(1, 0..n, i), "iallreduce_in_place");
        if r == root {
            assert_eq!(red[i], aff_of(2, 0..n, i), "ireduce");
        }
        if r == 0 {
            assert_eq!(red_ip[i], aff_of(3, 0..n, i), "ireduce_in_place");
        } else {
            assert_eq!(red_ip[i], aff(3, r, i), "ireduce_in_place non-root");
        }
        assert_eq!(bc[i], val(4, root, i), "ibcast");
        assert_eq!(sca[i], val(6, 0, r * count + i), "iscatter");
        assert_eq!(ring_in[i], val(12, (r + n - 1) % n, i), "ring");
        assert_eq!(
            rsb[i],
            aff_of(9, 0..n, r * count + i),
            "ireduce_scatter_block"
        );
        assert_eq!(scan[i], aff_of(10, 0..r + 1, i), "iscan");
        if r > 0 {
            assert_eq!(exs[i], aff_of(11, 0..r, i), "iexscan");
        } else {
            assert_eq!(exs[i], [7, 7], "iexscan leaves rank 0 alone");
        }
    }
    for q in 0..n {
        for i in 0..count {
            if r == root {
                assert_eq!(gat[q * count + i], val(5, q, i), "igather");
            }
            assert_eq!(allg[q * count + i], val(7, q, i), "iallgather");
            assert_eq!(a2a[q * count + i], val(8, q, r * count + i), "ialltoall");
        }
    }
}

#[test]
fn every_nonblocking_collective_matches_serial() {
    for n in SIZES {
        // 0, 1, small, above the stack scratch, rendezvous-sized (40 KB of u64).
        for count in [0usize, 1, 5, 300, 5000] {
            run_threads(n, |w| all_at_once(&w, count));
        }
    }
}

#[test]
fn on_a_split_communicator() {
    run_threads(7, |w| {
        let half = w.split(Some((w.rank() % 2) as u32), 0).unwrap().unwrap();
        all_at_once(&half, 17);
        all_at_once(&w, 3);
    });
}

#[test]
fn started_early_waited_late_while_others_compute() {
    for n in SIZES {
        run_threads(n, |w| {
            let r = w.rank();
            let count = 3000; // rendezvous-sized
            let mine: Vec<u64> = (0..count).map(|i| val(40, r, i)).collect();
            let mut sum = vec![0u64; count];
            let mut b = if r == n - 1 {
                vec![9u32; 10]
            } else {
                vec![0; 10]
            };
            dos::scope(|s| {
                let a = w.iallreduce(s, &mine, &mut sum, Sum).unwrap();
                let c = w.ibcast(s, &mut b, n - 1).unwrap();
                // Rank 0 computes without calling dos before waiting; the
                // others wait at once (and must wait for rank 0).
                if r == 0 {
                    let t = std::time::Instant::now();
                    let mut x = 0u64;
                    while t.elapsed() < std::time::Duration::from_millis(150) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                c.wait().unwrap();
                a.wait().unwrap();
            });
            for (i, &v) in sum.iter().enumerate() {
                assert_eq!(v, sum_of(40, 0..n, i));
            }
            assert_eq!(b, vec![9; 10]);
            // A rank that starts late: the others' schedules wait for it.
            if r == n / 2 {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let (mut t, me) = ([0u64], [r as u64]);
            dos::scope(|s| {
                let q = w.iallreduce(s, &me, &mut t, Sum).unwrap();
                // test() makes progress without blocking.
                while !q.test() {
                    std::hint::spin_loop();
                }
                q.wait().unwrap();
            });
            assert_eq!(t[0], (n * (n - 1) / 2) as u64);
        });
    }
}

#[test]
fn many_outstanding_on_one_communicator_stay_apart() {
    for n in SIZES {
        run_threads(n, |w| {
            let r = w.rank();
            const K: usize = 40;
            let mine: Vec<[u64; 4]> = (0..K).map(|k| [val(k as u64, r, 0); 4]).collect();
            let mut out = vec![[0u64; 4]; K];
            let mut bs: Vec<[u64; 2]> = (0..K)
                .map(|k| if r == k % n { [k as u64; 2] } else { [0; 2] })
                .collect();
            dos::scope(|s| {
                let mut reqs = Vec::new();
                for (k, ((m, o), b)) in mine
                    .iter()
                    .zip(out.iter_mut())
                    .zip(bs.iter_mut())
                    .enumerate()
                {
                    reqs.push(w.iallreduce(s, m, o, Sum).unwrap());
                    reqs.push(w.ibarrier(s).unwrap());
                    reqs.push(w.ibcast(s, b, k % n).unwrap());
                }
                // Waited newest first.
                while let Some(q) = reqs.pop() {
                    q.wait().unwrap();
                }
            });
            for k in 0..K {
                assert_eq!(out[k], [sum_of(k as u64, 0..n, 0); 4]);
                assert_eq!(bs[k], [k as u64; 2]);
            }
        });
    }
}

#[test]
fn bad_arguments_are_typed_errors_and_mismatches_leave_the_comm_usable() {
    run_threads(3, |w| {
        let r = w.rank();
        let (mut x, mut y, mut z, mut v) = ([0u8; 2], [0u64; 1], [0u64; 5], [0u64; 6]);
        let (two, one) = ([1u64, 2], [1u32]);
        dos::scope(|s| {
            assert!(matches!(
                w.ibcast(s, &mut x, 3),
                Err(Error::InvalidRank { rank: 3, size: 3 })
            ));
            assert!(matches!(
                w.iallreduce(s, &two, &mut y, Sum),
                Err(Error::InvalidBuffer { .. })
            ));
            assert!(matches!(
                w.iallgather(s, &two, &mut z),
                Err(Error::InvalidBuffer { .. })
            ));
            // Receive blocks that overlap (written by transfers at once).
            assert!(matches!(
                w.iallgatherv(s, &two, &mut v, &[2, 2, 2], &[0, 1, 4]),
                Err(Error::InvalidBuffer { .. })
            ));
        });
        // Rank 0 broadcasts 10 elements, the others expect 6: they get an
        // error, and the communicator still works.
        let mut buf = vec![1u16; if r == 0 { 10 } else { 6 }];
        let res = dos::scope(|s| w.ibcast(s, &mut buf, 0).unwrap().wait());
        if r == 0 {
            // The root's sends may or may not see the truncation.
            let _ = res;
        } else {
            assert!(
                matches!(
                    res,
                    Err(Error::Truncated { .. }) | Err(Error::InvalidBuffer { .. })
                ),
                "{res:?}"
            );
        }
        w.barrier().unwrap();
        let mut t = [0u32];
        dos::scope(|s| w.iallreduce(s, &one, &mut t, Sum).unwrap().wait().unwrap());
        assert_eq!(t, [3]);
    });
}

#[test]
fn with_the_rpc_service_thread_driving_the_engine() {
    // While a rank computes, the RPC service thread drives its engine: the
    // schedules' transfers proceed, their steps (which run the caller's
    // closure, here one that borrows a local) wait for the rank's next call.
    for n in [2usize, 3, 4] {
        run_threads(n, |w| {
            let rpc = w.rpc();
            rpc.register("twice", |_ctx, x: u64| Ok::<_, String>(2 * x));
            w.barrier().unwrap();
            let r = w.rank();
            let one = 1u64;
            let local = &one;
            let weird = op::user_ordered(|a: Aff, b: Aff| {
                let c = compose(a, b);
                [c[0].wrapping_mul(*local), c[1]]
            });
            let mine: Vec<Aff> = (0..700).map(|i| aff(50, r, i)).collect();
            let mut got = vec![[0u64; 2]; 700];
            dos::scope(|s| {
                let q = w.iallreduce(s, &mine, &mut got, weird).unwrap();
                if r == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                } else {
                    // Served by rank 0's service thread while it sleeps.
                    assert_eq!(rpc.call::<_, u64>(0, "twice", &21u64).unwrap(), 42);
                }
                q.wait().unwrap();
            });
            for (i, g) in got.iter().enumerate() {
                assert_eq!(*g, aff_of(50, 0..n, i));
            }
            w.barrier().unwrap();
        });
    }
}

#[test]
fn a_vanished_peer_fails_the_request_and_releases_the_buffers() {
    // Rank 1 (alone on node 1) ends like a crashed process while rank 0
    // waits for an iallreduce and an ibcast that need it: both requests
    // fail naming it, the schedules are dropped with their transfers, and
    // the scope ends (the buffers are free again) instead of hanging.
    let got = dos::testing::run_cluster(&[1, 1], |w| {
        if w.rank() == 1 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            dos::testing::vanish(w);
            return None;
        }
        let mine = vec![1u64; 5000];
        let mut sum = vec![0u64; 5000];
        let mut b = [0u8; 3];
        let res = dos::scope(|s| {
            let a = w.iallreduce(s, &mine, &mut sum, Sum).unwrap();
            let c = w.ibcast(s, &mut b, 1).unwrap();
            (a.wait().map(|_| ()), c.wait().map(|_| ()))
        });
        sum[0] = 7; // the buffer is ours again
        Some(res)
    });
    let (a, c) = got.into_iter().next().flatten().expect("rank 0 reports");
    assert!(matches!(a, Err(Error::PeerFailed { rank: 1 })), "{a:?}");
    assert!(matches!(c, Err(Error::PeerFailed { rank: 1 })), "{c:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Up to 24 collectives of random kinds and lengths outstanding at once;
    /// every rank completes them in its own random order (by `test` or by
    /// `wait`), interleaved with point-to-point traffic that wakes nothing
    /// of theirs. Progress advances only the schedules whose transfers
    /// completed, so a schedule that is never woken hangs here, and one
    /// advanced wrongly shows in the results.
    #[test]
    fn any_mix_completes_in_any_order(
        n in 2usize..5,
        kinds in proptest::collection::vec((0u8..3, 1usize..1500), 1..24),
        seed in proptest::prelude::any::<u64>(),
    ) {
        run_threads(n, |w| {
            let r = w.rank();
            let len = |k: usize| kinds[k].1;
            let mine: Vec<Vec<u64>> = (0..kinds.len())
                .map(|k| (0..len(k)).map(|i| val(k as u64, r, i)).collect())
                .collect();
            let mut outs: Vec<Vec<u64>> = (0..kinds.len())
                .map(|k| {
                    if kinds[k].0 == 1 && r != k % n {
                        vec![0; len(k)]
                    } else {
                        mine[k].clone()
                    }
                })
                .collect();
            dos::scope(|s| {
                let mut reqs: Vec<Option<Request<'_>>> = Vec::new();
                for (k, o) in outs.iter_mut().enumerate() {
                    reqs.push(Some(match kinds[k].0 {
                        0 => w.iallreduce(s, &mine[k], o, Sum).unwrap(),
                        1 => w.ibcast(s, o, k % n).unwrap(),
                        _ => w.ibarrier(s).unwrap(),
                    }));
                }
                // A rank's own order: a xorshift of the seed and the rank.
                let mut x = seed ^ (r as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let peer = (r + 1) % n;
                let from = (r + n - 1) % n;
                // As many exchanges on every rank (a rank that left the
                // loop early would leave its neighbour waiting).
                for round in 0..2 * reqs.len() as u64 {
                    // Point-to-point in between: a ring exchange (8 bytes go
                    // eagerly: the sends do not wait).
                    let mut got = [0u64];
                    w.send(&[round], peer, 9).unwrap();
                    w.recv(&mut got, from, 9).unwrap();
                    assert_eq!(got, [round]);
                    let i = (next() % reqs.len() as u64) as usize;
                    let Some(q) = reqs[i].take() else { continue };
                    // Waited, or tested and put back if not complete.
                    if next() % 2 == 0 || q.test() {
                        q.wait().unwrap();
                    } else {
                        reqs[i] = Some(q);
                    }
                }
                // The rest from a random start, wrapping around.
                let m = reqs.len();
                let start = (next() % m as u64) as usize;
                for j in 0..m {
                    if let Some(q) = reqs[(start + j) % m].take() {
                        q.wait().unwrap();
                    }
                }
            });
            for k in 0..kinds.len() {
                let want: Vec<u64> = match kinds[k].0 {
                    0 => (0..len(k)).map(|i| sum_of(k as u64, 0..n, i)).collect(),
                    1 => (0..len(k)).map(|i| val(k as u64, k % n, i)).collect(),
                    _ => mine[k].clone(),
                };
                assert_eq!(outs[k], want, "collective {k} of kind {}", kinds[k].0);
            }
        });
    }
}
