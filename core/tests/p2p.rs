//! Point-to-point semantics, on ranks run as threads over the real shm stack.

use dos::config::{Config, RndvMode};
use dos::testing::{run_threads, run_threads_with};
use dos::{Error, Request, Source, ANY_SOURCE, ANY_TAG};

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect()
}

fn with_rndv(mode: RndvMode) -> Config {
    Config {
        rndv: mode,
        ..Config::default()
    }
}

#[test]
fn ping_pong_all_sizes_pipelined() {
    ping_pong_all_sizes(RndvMode::Pipeline);
}

#[test]
fn ping_pong_all_sizes_cma() {
    ping_pong_all_sizes(RndvMode::Cma);
}

fn ping_pong_all_sizes(mode: RndvMode) {
    run_threads_with(2, with_rndv(mode), |w| {
        let other = 1 - w.rank();
        for len in [
            0usize,
            1,
            7,
            64,
            1000,
            16 << 10,
            (16 << 10) + 1,
            100_000,
            4 << 20,
        ] {
            let msg = pattern(len, len);
            let mut got = vec![0u8; len];
            if w.rank() == 0 {
                w.send(&msg, other, 1).unwrap();
                let st = w.recv(&mut got, other, 2).unwrap();
                assert_eq!(st.len, len);
            } else {
                let st = w.recv(&mut got, other, 1).unwrap();
                assert_eq!((st.source, st.tag, st.len), (0, 1, len));
                w.send(&got, other, 2).unwrap();
            }
            assert_eq!(got, msg, "len {len}");
        }
    });
}

#[test]
fn non_overtaking_with_mixed_protocols() {
    for mode in [RndvMode::Pipeline, RndvMode::Cma] {
        non_overtaking(mode);
    }
}

fn non_overtaking(mode: RndvMode) {
    run_threads_with(2, with_rndv(mode), |w| {
        let sizes = [10usize, 70_000, 3, 200_000, 0, 5000];
        if w.rank() == 0 {
            for round in 0..20 {
                for (k, &len) in sizes.iter().enumerate() {
                    w.send(&pattern(round * 10 + k, len), 1, 5).unwrap();
                }
            }
        } else {
            for round in 0..20 {
                for (k, &len) in sizes.iter().enumerate() {
                    let (v, st) = w.recv_vec::<u8>(0, 5).unwrap();
                    assert_eq!(st.len, len);
                    assert_eq!(v, pattern(round * 10 + k, len));
                }
            }
        }
    });
}

#[test]
fn any_source_any_tag_and_probe() {
    let n = 4;
    run_threads(n, |w| {
        if w.rank() == 0 {
            let mut seen = vec![false; n];
            for _ in 1..n {
                let st = w.probe(ANY_SOURCE, ANY_TAG).unwrap();
                assert_eq!(st.tag as usize, st.source * 10);
                let mut x = [0u32; 3];
                let st2 = w.recv(&mut x, st.source, st.tag).unwrap();
                assert_eq!(st2, st);
                assert_eq!(x, [st.source as u32; 3]);
                seen[st.source] = true;
            }
            assert!(seen[1..].iter().all(|&b| b));
        } else {
            let r = w.rank() as u32;
            w.send(&[r; 3], 0, (r * 10) as i32).unwrap();
        }
    });
}

#[test]
fn tags_select_messages_out_of_order() {
    run_threads(2, |w| {
        if w.rank() == 0 {
            w.send(&[1u8], 1, 1).unwrap();
            w.send(&[2u8], 1, 2).unwrap();
        } else {
            let mut b = [0u8];
            w.recv(&mut b, 0, 2).unwrap();
            assert_eq!(b, [2]);
            w.recv(&mut b, 0, 1).unwrap();
            assert_eq!(b, [1]);
        }
    });
}

#[test]
fn nonblocking_exchange_everyone() {
    for mode in [RndvMode::Pipeline, RndvMode::Cma] {
        nonblocking_exchange(mode);
    }
}

fn nonblocking_exchange(mode: RndvMode) {
    let n = 5;
    run_threads_with(n, with_rndv(mode), |w| {
        let me = w.rank();
        // 3000+ u64 = 24 KB: above the eager limit, so rendezvous in both directions at once.
        let sends: Vec<Vec<u64>> = (0..n)
            .map(|d| vec![(me * 100 + d) as u64; 3000 + d])
            .collect();
        let mut recvs: Vec<Vec<u64>> = (0..n).map(|_| vec![0; 3000 + me]).collect();
        dos::scope(|s| {
            let mut reqs = Vec::new();
            for (src, buf) in recvs.iter_mut().enumerate() {
                reqs.push(w.irecv(s, buf, src, 3).unwrap());
            }
            for (d, buf) in sends.iter().enumerate() {
                reqs.push(w.isend(s, buf, d, 3).unwrap());
            }
            Request::wait_all(reqs).unwrap();
        });
        for (src, buf) in recvs.iter().enumerate() {
            assert!(buf.iter().all(|&x| x == (src * 100 + me) as u64));
        }
    });
}

#[test]
fn leaked_request_is_completed_by_scope() {
    run_threads(2, |w| {
        let mut buf = [0u32; 4];
        if w.rank() == 0 {
            dos::scope(|s| {
                let r = w.irecv(s, &mut buf, 1, 0).unwrap();
                std::mem::forget(r);
            });
            assert_eq!(buf, [9; 4]);
        } else {
            w.send(&[9u32; 4], 0, 0).unwrap();
        }
    });
}

#[test]
fn wait_any_and_test() {
    run_threads(2, |w| {
        if w.rank() == 0 {
            let mut a = [0u8; 1];
            let mut b = [0u8; 1];
            dos::scope(|s| {
                let mut reqs = vec![
                    w.irecv(s, &mut a, 1, 1).unwrap(),
                    w.irecv(s, &mut b, 1, 2).unwrap(),
                ];
                assert!(!reqs[0].test());
                w.send(&[0u8], 1, 9).unwrap();
                let (i, st) = Request::wait_any(&mut reqs).unwrap();
                assert_eq!(i, 1);
                assert_eq!(st.unwrap().tag, 2);
                w.send(&[0u8], 1, 9).unwrap();
                reqs.pop().unwrap().wait().unwrap();
            });
            assert_eq!((a, b), ([1], [2]));
        } else {
            w.recv(&mut [0u8], 0, 9).unwrap();
            w.send(&[2u8], 0, 2).unwrap();
            w.recv(&mut [0u8], 0, 9).unwrap();
            w.send(&[1u8], 0, 1).unwrap();
        }
    });
}

#[test]
fn errors_are_typed() {
    for mode in [RndvMode::Pipeline, RndvMode::Cma] {
        errors(mode);
    }
}

fn errors(mode: RndvMode) {
    run_threads_with(2, with_rndv(mode), |w| {
        assert!(matches!(
            w.send(&[1u8], 2, 0),
            Err(Error::InvalidRank { rank: 2, size: 2 })
        ));
        assert!(matches!(
            w.send(&[1u8], 0, -3),
            Err(Error::InvalidTag { tag: -3 })
        ));
        assert!(matches!(
            w.recv(&mut [0u8], Source::Rank(5), 0),
            Err(Error::InvalidRank { .. })
        ));
        if w.rank() == 0 {
            w.send(&[1u8; 10], 1, 0).unwrap();
            w.send(&[1u8; 100_000], 1, 0).unwrap();
            w.send(&[1u8; 5], 1, 0).unwrap();
        } else {
            let mut small = [0u8; 4];
            assert!(matches!(
                w.recv(&mut small, 0, 0),
                Err(Error::Truncated {
                    len: 10,
                    capacity: 4
                })
            ));
            let mut mid = vec![0u8; 1000];
            assert!(matches!(
                w.recv(&mut mid, 0, 0),
                Err(Error::Truncated { len: 100_000, .. })
            ));
            let mut words = [0u32; 4];
            assert!(matches!(
                w.recv(&mut words, 0, 0),
                Err(Error::ElementMismatch { len: 5, elem: 4 })
            ));
        }
    });
}

#[test]
fn split_and_dup_isolate_traffic() {
    run_threads(6, |w| {
        let color = (w.rank() % 2) as u32;
        let c = w.split(Some(color), -(w.rank() as i32)).unwrap().unwrap();
        assert_eq!(c.size(), 3);
        // Key is minus the world rank: ranks reversed.
        let members: Vec<usize> = (0..6).filter(|r| r % 2 == color as usize).rev().collect();
        assert_eq!(members[c.rank()], w.rank());
        let d = c.dup().unwrap();
        // A message on `d` is not received on `c`, and vice versa.
        let next = (c.rank() + 1) % 3;
        let prev = (c.rank() + 2) % 3;
        let mut x = [0usize];
        let mut y = [0usize];
        d.sendrecv(&[w.rank()], next, 0, &mut x, prev, 0).unwrap();
        c.sendrecv(&[w.rank() + 100], next, 0, &mut y, prev, 0)
            .unwrap();
        assert_eq!(x[0], members[prev]);
        assert_eq!(y[0], members[prev] + 100);
        let none = w
            .split(if w.rank() == 0 { None } else { Some(1) }, 0)
            .unwrap();
        assert_eq!(none.is_none(), w.rank() == 0);
        if let Some(c) = none {
            assert_eq!(c.size(), 5);
        }
    });
}

#[test]
fn oversubscribed_ranks_make_progress() {
    // More threads than cores: relies on blocking, not spinning.
    run_threads(8, |w| {
        let n = w.size();
        for _ in 0..200 {
            let mut x = [0u32];
            w.sendrecv(
                &[w.rank() as u32],
                (w.rank() + 1) % n,
                0,
                &mut x,
                (w.rank() + n - 1) % n,
                0,
            )
            .unwrap();
            assert_eq!(x[0] as usize, (w.rank() + n - 1) % n);
        }
    });
}

#[test]
fn singleton_world_without_launcher() {
    let w = dos::init().unwrap();
    assert_eq!((w.rank(), w.size()), (0, 1));
    w.send(&[5u16; 100], 0, 4).unwrap();
    let mut v = vec![0u16; 100];
    w.recv(&mut v, 0, 4).unwrap();
    assert!(v.iter().all(|&x| x == 5));
    // A large send to oneself needs the receive posted (as in MPI).
    let big = vec![5u16; 100_000];
    let mut v = vec![0u16; 100_000];
    dos::scope(|s| {
        let r = w.irecv(s, &mut v, 0, 4).unwrap();
        w.send(&big, 0, 4).unwrap();
        r.wait().unwrap();
    });
    assert!(v.iter().all(|&x| x == 5));
}
