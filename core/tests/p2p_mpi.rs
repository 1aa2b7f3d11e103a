//! The MPI point-to-point features users reach for first (issue 15):
//! synchronous sends, matched probes, test/wait on sets of requests,
//! persistent requests and MINLOC/MAXLOC, each checked against a serial
//! model on 1, 2, 3, 4 and 7 ranks run as threads over the real shm stack.

#[allow(dead_code)]
#[path = "../../checks/src/p2pcheck.rs"]
mod p2pcheck;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use dos::config::{Config, RndvMode};
use dos::op::{MaxLoc, MinLoc, ValueIndex};
use dos::testing::{run_cluster, run_cluster_with, run_threads, run_threads_with};
use dos::{Error, Persistent, Request, ANY_SOURCE, ANY_TAG};

const SIZES: [usize; 5] = [1, 2, 3, 4, 7];

fn with_rndv(mode: RndvMode) -> Config {
    Config {
        rndv: mode,
        ..Config::default()
    }
}

fn payload(src: usize, seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (src * 31 + seq * 7 + i) as u8).collect()
}

// ----- ssend -----

/// A synchronous send stays incomplete while the receiver has not posted
/// (small messages too, which a standard send completes at once).
fn ssend_waits_for_the_receiver(mode: RndvMode) {
    ssend_waits_with(|f| {
        run_threads_with(2, with_rndv(mode), f);
    });
}

/// Runs the check with `run` (two ranks, on one node or on two).
fn ssend_waits_with(run: impl Fn(&(dyn Fn(dos::World) + Sync))) {
    for len in [0usize, 8, 100_000] {
        let posted = Barrier::new(2);
        run(&|w| {
            let data = payload(0, 1, len);
            if w.rank() == 0 {
                dos::scope(|s| {
                    let r = w.issend(s, &data, 1, 5).unwrap();
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_millis(50) {
                        assert!(!r.test(), "issend of {len} bytes completed unreceived");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    posted.wait();
                    r.wait().unwrap();
                });
                // The plain send of the same message completes at once when eager.
                if len <= 8 {
                    dos::scope(|s| {
                        let r = w.isend(s, &data, 1, 6).unwrap();
                        assert!(r.test());
                    });
                }
            } else {
                posted.wait();
                let mut got = vec![0u8; len];
                w.recv(&mut got, 0, 5).unwrap();
                assert_eq!(got, data);
                if len <= 8 {
                    w.recv(&mut got, 0, 6).unwrap();
                }
            }
        });
    }
}

#[test]
fn ssend_waits_for_the_receiver_across_nodes() {
    ssend_waits_with(|f| {
        run_cluster(&[1, 1], f);
    });
}

#[test]
fn ssend_waits_for_the_receiver_pipelined() {
    ssend_waits_for_the_receiver(RndvMode::Pipeline);
}

#[test]
fn ssend_waits_for_the_receiver_cma() {
    ssend_waits_for_the_receiver(RndvMode::Cma);
}

#[test]
fn ssend_ring_matches_the_model() {
    for n in SIZES {
        let got = run_threads(n, |w| {
            let (me, n) = (w.rank(), w.size());
            let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
            let mut out = Vec::new();
            for (step, len) in [0usize, 3, 1000, 70_000].into_iter().enumerate() {
                let mut rb = vec![0u8; len];
                dos::scope(|s| {
                    let r = w.irecv(s, &mut rb, prev, step as i32).unwrap();
                    w.ssend(&payload(me, step, len), next, step as i32).unwrap();
                    r.wait().unwrap();
                });
                out.push(rb);
            }
            // Blocking ssend paired with a blocking receive on the other side.
            if n > 1 {
                if me % 2 == 0 && next != me {
                    w.ssend(&[me as u32], next, 9).unwrap();
                } else if me % 2 == 1 {
                    let mut x = [0u32];
                    w.recv(&mut x, prev, 9).unwrap();
                    assert_eq!(x[0], prev as u32);
                }
                if n % 2 == 1 && me == 0 {
                    // Rank n-1 is even too: it sent to 0.
                    let mut x = [0u32];
                    w.recv(&mut x, n - 1, 9).unwrap();
                }
            }
            out
        });
        for (me, out) in got.iter().enumerate() {
            let prev = (me + n - 1) % n;
            for (step, len) in [0usize, 3, 1000, 70_000].into_iter().enumerate() {
                assert_eq!(
                    out[step],
                    payload(prev, step, len),
                    "n={n} rank {me} step {step}"
                );
            }
        }
    }
}

#[test]
fn ssend_errors_are_typed() {
    run_threads(2, |w| {
        assert!(matches!(
            w.ssend(&[1u8], 5, 0),
            Err(Error::InvalidRank { .. })
        ));
        assert!(matches!(
            w.ssend(&[1u8], 1, -1),
            Err(Error::InvalidTag { .. })
        ));
        dos::scope(|s| {
            assert!(matches!(
                w.issend(s, &[1u8], 2, 0),
                Err(Error::InvalidRank { .. })
            ));
        });
    });
}

// ----- mprobe / mrecv -----

const PER_SENDER: usize = 12;

fn mlen(seq: usize) -> usize {
    // Eager and rendezvous sizes mixed, some empty.
    match seq % 4 {
        0 => 0,
        1 => seq * 13,
        2 => 40_000 + seq,
        _ => 4096,
    }
}

/// Every other rank sends to rank 0, which takes each message with a
/// matched probe on ANY_SOURCE and, before receiving it, posts a wildcard
/// receive that tries to steal it. The model: every message arrives once,
/// intact, and per sender in the order sent.
fn mprobe_cannot_be_stolen(mode: RndvMode) {
    for n in SIZES {
        run_threads_with(n, with_rndv(mode), |w| {
            let me = w.rank();
            let senders: Vec<usize> = if n == 1 { vec![0] } else { (1..n).collect() };
            if n == 1 {
                // Only eager sizes to itself (a blocking rendezvous to self would wait).
                for seq in 0..PER_SENDER {
                    w.send(&payload(0, seq, mlen(seq) % 5000), 0, seq as i32)
                        .unwrap();
                }
            } else if me != 0 {
                for seq in 0..PER_SENDER {
                    w.send(&payload(me, seq, mlen(seq)), 0, seq as i32).unwrap();
                }
            }
            if me != 0 {
                return;
            }
            let total = senders.len() * PER_SENDER;
            let mut next_seq = vec![0usize; n];
            let mut check = |src: usize, tag: i32, data: &[u8]| {
                let seq = tag as usize;
                assert_eq!(seq, next_seq[src], "non-overtaking from {src}");
                next_seq[src] += 1;
                let len = if n == 1 { mlen(seq) % 5000 } else { mlen(seq) };
                assert_eq!(data, &payload(src, seq, len)[..], "from {src} seq {seq}");
            };
            let mut got = 0;
            while got < total {
                let msg = w.mprobe(ANY_SOURCE, ANY_TAG).unwrap();
                let st = msg.status();
                let mut buf = vec![0u8; st.len];
                if got + 1 < total {
                    let mut thief = vec![0u8; 50_000];
                    let (tst, tlen) = dos::scope(|s| {
                        let t = w.irecv(s, &mut thief, ANY_SOURCE, ANY_TAG).unwrap();
                        let got_st = w.mrecv(msg, &mut buf).unwrap();
                        assert_eq!(got_st, st);
                        let tst = t.wait().unwrap();
                        (tst, tst.len)
                    });
                    check(st.source, st.tag, &buf);
                    check(tst.source, tst.tag, &thief[..tlen]);
                    got += 2;
                } else {
                    assert_eq!(w.mrecv(msg, &mut buf).unwrap(), st);
                    check(st.source, st.tag, &buf);
                    got += 1;
                }
            }
            for &s in &senders {
                assert_eq!(next_seq[s], PER_SENDER);
            }
            assert!(w.iprobe(ANY_SOURCE, ANY_TAG).unwrap().is_none());
        });
    }
}

#[test]
fn mprobe_cannot_be_stolen_pipelined() {
    mprobe_cannot_be_stolen(RndvMode::Pipeline);
}

#[test]
fn mprobe_cannot_be_stolen_cma() {
    mprobe_cannot_be_stolen(RndvMode::Cma);
}

#[test]
fn improbe_imrecv_and_a_dropped_message() {
    let sent = Barrier::new(2);
    run_threads(2, |w| {
        if w.rank() == 1 {
            w.send(&[1u64; 3], 0, 1).unwrap();
            // A rendezvous message that rank 0 drops unreceived: this send
            // must still complete.
            w.send(&vec![2u8; 100_000], 0, 2).unwrap();
            w.send(&[3u64; 2], 0, 3).unwrap();
            sent.wait();
            return;
        }
        assert!(w.improbe(1, 99).unwrap().is_none());
        assert!(matches!(w.improbe(2, 0), Err(Error::InvalidRank { .. })));
        let msg = loop {
            if let Some(m) = w.improbe(1, 1).unwrap() {
                break m;
            }
        };
        assert_eq!(msg.status().count::<u64>(), 3);
        let mut a = [0u64; 3];
        dos::scope(|s| {
            let r = w.imrecv(s, msg, &mut a).unwrap();
            assert_eq!(r.wait().unwrap().len, 24);
        });
        assert_eq!(a, [1; 3]);
        drop(w.mprobe(1, 2).unwrap());
        // The dropped message is gone; the next one is received.
        let mut b = [0u64; 2];
        assert_eq!(w.recv(&mut b, 1, ANY_TAG).unwrap().tag, 3);
        assert_eq!(b, [3; 2]);
        // A too short buffer is a typed error.
        sent.wait();
    });
}

#[test]
fn mrecv_truncation_is_typed() {
    run_threads(1, |w| {
        w.send(&[1u8; 10], 0, 0).unwrap();
        let m = w.mprobe(0, 0).unwrap();
        let mut small = [0u8; 4];
        assert!(matches!(
            w.mrecv(m, &mut small),
            Err(Error::Truncated { len: 10, .. })
        ));
        assert!(w.iprobe(0, 0).unwrap().is_none());
    });
}

// ----- test_all / test_any / test_some / wait_some -----

#[test]
fn request_sets_match_the_model() {
    for n in SIZES {
        run_threads(n, |w| {
            let (me, n) = (w.rank(), w.size());
            // Every rank receives one message from every rank (itself too),
            // sent in a rank-dependent order; sets of requests collect them.
            let mut bufs = vec![[0u32; 2]; n];
            let mut seen = vec![false; n];
            dos::scope(|s| {
                let mut reqs: Vec<Request> = Vec::new();
                for (src, b) in bufs.iter_mut().enumerate() {
                    reqs.push(w.irecv(s, b, src, 7).unwrap());
                }
                // Positions in the original vector, tracked as requests leave it.
                let mut pos: Vec<usize> = (0..n).collect();
                if n > 1 {
                    assert!(Request::test_all(&mut reqs).is_none());
                    assert_eq!(reqs.len(), n);
                }
                for k in 0..n {
                    let dest = (me + k) % n;
                    w.send(&[me as u32, dest as u32], dest, 7).unwrap();
                }
                let mut round = 0;
                while !reqs.is_empty() {
                    let done = match round % 3 {
                        0 => Request::wait_some(&mut reqs),
                        1 => Request::test_any(&mut reqs).into_iter().collect(),
                        _ => Request::test_some(&mut reqs),
                    };
                    let mut last = None;
                    let mut removed = Vec::new();
                    for (i, r) in done {
                        assert!(last.is_none_or(|l| l < i), "ascending indices");
                        last = Some(i);
                        let st = r.unwrap();
                        let src = pos[i];
                        assert_eq!(st.source, src);
                        assert!(!seen[src]);
                        seen[src] = true;
                        removed.push(i);
                    }
                    for &i in removed.iter().rev() {
                        pos.remove(i);
                    }
                    round += 1;
                }
                assert!(Request::test_all(&mut reqs).unwrap().unwrap().is_empty());
                assert!(Request::wait_some(&mut reqs).is_empty());
                assert!(Request::test_any(&mut reqs).is_none());
            });
            assert!(seen.iter().all(|&x| x));
            for (src, b) in bufs.iter().enumerate() {
                assert_eq!(*b, [src as u32, me as u32]);
            }
            w.barrier().unwrap();
        });
    }
}

#[test]
fn test_all_takes_everything_once_complete() {
    run_threads(2, |w| {
        let peer = 1 - w.rank();
        let mut a = [0u8; 3];
        let mut b = vec![0u8; 90_000];
        let big = vec![5u8; 90_000];
        dos::scope(|s| {
            let mut reqs = vec![
                w.irecv(s, &mut a, peer, 0).unwrap(),
                w.irecv(s, &mut b, peer, 1).unwrap(),
                w.isend(s, &[4u8; 3], peer, 0).unwrap(),
                w.isend(s, &big, peer, 1).unwrap(),
            ];
            let sts = loop {
                if let Some(r) = Request::test_all(&mut reqs) {
                    break r.unwrap();
                }
            };
            assert!(reqs.is_empty());
            assert_eq!((sts[0].len, sts[1].len), (3, 90_000));
        });
        assert_eq!((a, b[89_999]), ([4; 3], 5));
    });
}

// ----- persistent requests -----

fn persistent_ring(mode: RndvMode) {
    for n in SIZES {
        for len in [1usize, 20_000] {
            run_threads_with(n, with_rndv(mode), |w| {
                let (me, n) = (w.rank(), w.size());
                let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
                let mut out = vec![0u64; len];
                let mut inb = vec![0u64; len];
                let mut sync_out = [0u32; 1];
                let mut sync_in = [0u32; 1];
                dos::scope(|s| {
                    let mut send = w.send_init(s, &mut out, next, 3).unwrap();
                    let mut recv = w.recv_init(s, &mut inb, prev, 3).unwrap();
                    let mut ssend = w.ssend_init(s, &mut sync_out, next, 4).unwrap();
                    let mut srecv = w.recv_init(s, &mut sync_in, ANY_SOURCE, 4).unwrap();
                    for step in 0..6u64 {
                        for (i, x) in send.data_mut().unwrap().iter_mut().enumerate() {
                            *x = step * 1000 + me as u64 * 10 + i as u64;
                        }
                        ssend.data_mut().unwrap()[0] = step as u32 + me as u32;
                        Persistent::start_all([&mut recv, &mut send]).unwrap();
                        srecv.start().unwrap();
                        ssend.start().unwrap();
                        // Active: the buffer is out of reach, starting again is refused.
                        assert!(matches!(
                            send.data_mut(),
                            Err(Error::InvalidArgument { .. })
                        ));
                        assert!(matches!(recv.start(), Err(Error::InvalidArgument { .. })));
                        let st = Persistent::wait_all([&mut recv, &mut send]).unwrap();
                        assert_eq!((st[0].source, st[0].len), (prev, len * 8));
                        ssend.wait().unwrap();
                        assert_eq!(srecv.wait().unwrap().source, prev);
                        let want: Vec<u64> = (0..len)
                            .map(|i| step * 1000 + prev as u64 * 10 + i as u64)
                            .collect();
                        assert_eq!(recv.data().unwrap(), &want[..], "n={n} step {step}");
                        assert_eq!(srecv.data().unwrap()[0], step as u32 + prev as u32);
                    }
                });
            });
        }
    }
}

#[test]
fn persistent_ring_pipelined() {
    persistent_ring(RndvMode::Pipeline);
}

#[test]
fn persistent_ring_cma() {
    persistent_ring(RndvMode::Cma);
}

#[test]
fn leaked_persistent_request_is_completed_by_scope() {
    run_threads(2, |w| {
        let mut buf = vec![0u32; 30_000];
        if w.rank() == 0 {
            dos::scope(|s| {
                let mut r = w.recv_init(s, &mut buf, 1, 0).unwrap();
                r.start().unwrap();
                std::mem::forget(r);
            });
            assert!(buf.iter().all(|&x| x == 9));
        } else {
            buf.fill(9);
            dos::scope(|s| {
                let mut r = w.send_init(s, &mut buf, 0, 0).unwrap();
                r.start().unwrap();
                // Dropped while active: waits.
            });
        }
    });
}

// ----- MINLOC / MAXLOC -----

fn loc_model(n: usize, len: usize, f: impl Fn(usize, usize) -> f64, max: bool) -> Vec<(f64, i32)> {
    (0..len)
        .map(|i| {
            let mut best = (f(0, i), 0i32);
            for r in 1..n {
                let v = f(r, i);
                if (max && v > best.0) || (!max && v < best.0) {
                    best = (v, r as i32);
                }
            }
            best
        })
        .collect()
}

#[test]
fn minloc_maxloc_match_the_model() {
    minloc_maxloc(Config::default());
}

#[test]
fn minloc_maxloc_match_the_model_without_node_slots_in_parallel() {
    // The point-to-point algorithms (no node-level slots), reducing with rayon.
    minloc_maxloc(Config {
        node_coll_bytes: 0,
        reduce_par_bytes: 1,
        ..Config::default()
    });
}

fn minloc_maxloc(cfg: Config) {
    // Few distinct values, so that ties are common.
    let fv = |r: usize, i: usize| ((r * 7 + i * 3) % 5) as f64 - 2.0;
    let fi = |r: usize, i: usize| ((r * 5 + i) % 3) as i32;
    for n in SIZES {
        for len in [1usize, 7, 5000] {
            run_threads_with(n, cfg, |w| {
                let me = w.rank();
                let mine: Vec<ValueIndex<f64>> = (0..len)
                    .map(|i| ValueIndex::new(fv(me, i), me as i32))
                    .collect();
                for (max, model) in [
                    (false, loc_model(n, len, fv, false)),
                    (true, loc_model(n, len, fv, true)),
                ] {
                    let mut out = vec![ValueIndex::default(); len];
                    if max {
                        w.allreduce(&mine, &mut out, MaxLoc).unwrap();
                    } else {
                        w.allreduce(&mine, &mut out, MinLoc).unwrap();
                    }
                    let got: Vec<(f64, i32)> = out.iter().map(|p| (p.value, p.index)).collect();
                    assert_eq!(got, model, "n={n} len={len} max={max}");
                    let root = n - 1;
                    let mut red = vec![ValueIndex::default(); len];
                    if max {
                        w.reduce(&mine, &mut red, MaxLoc, root).unwrap();
                    } else {
                        w.reduce(&mine, &mut red, MinLoc, root).unwrap();
                    }
                    if me == root {
                        assert_eq!(red, out);
                    }
                }
                // Integer values, indices not equal to ranks.
                let mine: Vec<ValueIndex<i32>> = (0..len)
                    .map(|i| ValueIndex::new(fi(me, i), (len - i) as i32 * 100 + me as i32))
                    .collect();
                let mut out = vec![ValueIndex::default(); len];
                w.allreduce(&mine, &mut out, MinLoc).unwrap();
                for (i, p) in out.iter().enumerate() {
                    let best = (0..n).map(|r| fi(r, i)).min().unwrap();
                    let first = (0..n).find(|&r| fi(r, i) == best).unwrap();
                    assert_eq!(
                        (p.value, p.index),
                        (best, (len - i) as i32 * 100 + first as i32)
                    );
                }
            });
        }
    }
}

// ----- across simulated nodes -----

/// Runs every check of `p2pcheck` on `w`, panicking at once on a mismatch.
///
/// A rank that returned its error instead would leave the job: its peers
/// would then wait for it forever in the barrier after the check (a rank of a
/// thread job cannot be seen to end), and the test would hang where it should
/// fail. A panic aborts the whole test process instead (see
/// `dos::testing::run_threads`); the message goes straight to stderr first,
/// since the test harness's captured output dies with the process.
fn check_or_fail(w: &dos::World, nodes: &[usize]) -> Result<(), String> {
    p2pcheck::check_all(w).map_err(|e| {
        use std::io::Write;
        let msg = format!("{nodes:?} rank {}: {e}", w.rank());
        let _ = writeln!(std::io::stderr(), "p2pcheck failed: {msg}");
        panic!("p2pcheck failed: {msg}")
    })
}

#[test]
fn every_feature_across_nodes() {
    // Shared memory inside a node, TCP between nodes: 2, 3, 4 and 7 ranks.
    for nodes in [&[1usize, 1][..], &[2, 1], &[1, 1, 2], &[3, 2, 2]] {
        let r = run_cluster(nodes, |w| check_or_fail(&w, nodes));
        for (rank, x) in r.into_iter().enumerate() {
            x.unwrap_or_else(|e| panic!("{nodes:?} rank {rank}: {e}"));
        }
    }
}

fn roce() -> Config {
    Config {
        transports: dos::config::Transports {
            shm: true,
            tcp: false,
            roce: true,
            verbs: false,
        },
        ..Config::default()
    }
}

#[test]
fn every_feature_across_nodes_over_roce() {
    // The soft-RoCE between nodes: rendezvous by RDMA put into the receiver's buffer.
    for nodes in [&[1usize, 1][..], &[2, 2]] {
        let r = run_cluster_with(nodes, roce(), |w| check_or_fail(&w, nodes));
        for (rank, x) in r.into_iter().enumerate() {
            x.unwrap_or_else(|e| panic!("{nodes:?} rank {rank}: {e}"));
        }
    }
}

#[test]
fn ssend_waits_for_the_receiver_over_roce() {
    ssend_waits_with(|f| {
        run_cluster_with(&[1, 1], roce(), f);
    });
}

// ----- strided and indexed layouts -----

#[test]
fn layouts_match_a_manual_copy() {
    use dos::datatype::{Indexed, Layout, Vector};
    for n in SIZES {
        for (rows, cols) in [(3usize, 4usize), (5000, 7)] {
            if n == 1 && rows > 3 {
                // A blocking rendezvous send to oneself waits forever.
                continue;
            }
            run_threads(n, |w| {
                let (me, n) = (w.rank(), w.size());
                let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
                let mat = |r: usize| -> Vec<f64> {
                    (0..rows * cols)
                        .map(|i| (r * 1_000_000 + i) as f64)
                        .collect()
                };
                let a = mat(me);
                let col = Vector {
                    count: rows,
                    blocklen: 1,
                    stride: cols,
                };
                // Column (me % cols) to the next rank, into its column (prev % cols).
                let mut b = vec![-1.0; rows * cols];
                let mut packed = vec![0.0; rows];
                dos::scope(|s| {
                    let r = w.irecv(s, &mut packed, prev, 2).unwrap();
                    // Blocking on both sides: even ranks send first, odd ones
                    // receive first (large columns go by rendezvous).
                    let send = || w.send_layout(&a, &col.offset(me % cols), next, 1);
                    if me % 2 == 0 {
                        send().unwrap();
                    }
                    let st = w.recv_layout(&mut b, &col.offset(prev % cols), prev, 1);
                    assert_eq!(st.unwrap().len, rows * 8);
                    if me % 2 == 1 {
                        send().unwrap();
                    }
                    // The column again, as a plain message into a plain buffer.
                    w.send_layout(&a, &col.offset(me % cols), next, 2).unwrap();
                    r.wait().unwrap();
                });
                let sender = mat(prev);
                let manual: Vec<f64> = (0..rows).map(|i| sender[i * cols + prev % cols]).collect();
                assert_eq!(packed, manual);
                for i in 0..rows {
                    for j in 0..cols {
                        let want = if j == prev % cols {
                            sender[i * cols + j]
                        } else {
                            -1.0
                        };
                        assert_eq!(b[i * cols + j], want, "n={n} ({i},{j})");
                    }
                }
                // An indexed layout: the diagonal and the last row, backwards.
                let d = rows.min(cols);
                let ix = Indexed::new(
                    (0..d)
                        .map(|i| (i * cols + i, 1))
                        .chain([((rows - 1) * cols, cols)]),
                );
                let mut got = vec![0.0; ix.size()];
                dos::scope(|s| {
                    let r = w.irecv(s, &mut got, prev, 3).unwrap();
                    w.send_layout(&a, &ix, next, 3).unwrap();
                    r.wait().unwrap();
                });
                let mut manual: Vec<f64> = (0..d).map(|i| sender[i * cols + i]).collect();
                manual.extend_from_slice(&sender[(rows - 1) * cols..]);
                assert_eq!(got, manual);
                // A layout past the end of the buffer is a typed error.
                assert!(matches!(
                    w.send_layout(&a[..1], &col, next, 4),
                    Err(Error::InvalidBuffer { .. })
                ));
                assert!(matches!(
                    w.recv_layout(&mut b[..1], &col, prev, 4),
                    Err(Error::InvalidBuffer { .. })
                ));
                w.barrier().unwrap();
            });
        }
    }
}
