//! Multi-node routing, in one process: ranks as threads grouped into simulated
//! nodes (shared memory inside a node, authenticated TCP on 127.0.0.1 between
//! nodes), running point-to-point and every collective.

#[allow(dead_code)]
#[path = "../../checks/src/collcheck.rs"]
mod collcheck;

use collcheck::{check_case, Case};
use dos::testing::run_cluster;
use dos::{Request, ANY_SOURCE, ANY_TAG};

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ seed) as u8)
        .collect()
}

#[test]
fn ping_pong_across_nodes_all_sizes() {
    run_cluster(&[1, 1], |w| {
        assert_eq!(w.transport_name(), "shm+tcp");
        let other = 1 - w.rank();
        for len in [
            0usize,
            1,
            100,
            16 << 10,
            (16 << 10) + 1,
            40_000,
            100_000,
            256 << 10,
            300_000,
            3 << 20,
        ] {
            let msg = pattern(len, len);
            let mut got = vec![0u8; len];
            if w.rank() == 0 {
                w.send(&msg, other, 1).unwrap();
                w.recv(&mut got, other, 2).unwrap();
            } else {
                w.recv(&mut got, other, 1).unwrap();
                w.send(&got, other, 2).unwrap();
            }
            assert_eq!(got, msg, "len {len}");
        }
    });
}

#[test]
fn any_source_mixes_shm_and_tcp_senders_in_order() {
    // Node 0 holds ranks 0 and 1, node 1 ranks 2 and 3: rank 0 hears from a
    // node-local peer and from two remote ones.
    run_cluster(&[2, 2], |w| {
        let per = 30usize;
        if w.rank() == 0 {
            let mut next = [0usize; 4];
            for _ in 0..3 * per {
                let (v, st) = w.recv_vec::<u8>(ANY_SOURCE, ANY_TAG).unwrap();
                let k = next[st.source];
                assert_eq!(st.tag as usize, k % 3);
                assert_eq!(v, pattern(st.source * 1000 + k, 10 + k * 997));
                next[st.source] += 1;
            }
            assert_eq!(&next[1..], &[per, per, per]);
        } else {
            let bufs: Vec<Vec<u8>> = (0..per)
                .map(|k| pattern(w.rank() * 1000 + k, 10 + k * 997))
                .collect();
            dos::scope(|s| {
                let reqs: Vec<_> = bufs
                    .iter()
                    .enumerate()
                    .map(|(k, b)| w.isend(s, b, 0, (k % 3) as i32).unwrap())
                    .collect();
                Request::wait_all(reqs).unwrap();
            });
        }
    });
}

#[test]
fn collectives_across_nodes_match_serial() {
    for (k, shape) in [&[2usize, 2][..], &[3, 1, 1], &[1, 2]]
        .into_iter()
        .enumerate()
    {
        for (j, count) in [1usize, 300, 2100, 17_000].into_iter().enumerate() {
            let case = Case {
                seed: (k * 10 + j) as u64 + 7,
                count,
                root: k + j,
            };
            let results = run_cluster(shape, |w| check_case(&w, &case));
            for (r, res) in results.into_iter().enumerate() {
                if let Err(msg) = res {
                    panic!("nodes {shape:?}, count {count}, rank {r}: {msg}");
                }
            }
        }
    }
}

#[test]
fn split_by_node_and_sendrecv_ring() {
    run_cluster(&[2, 3], |w| {
        let n = w.size();
        let node = if w.rank() < 2 { 0 } else { 1 };
        let c = w.split(Some(node), 0).unwrap().unwrap();
        assert_eq!(c.size(), if node == 0 { 2 } else { 3 });
        let mut x = [0usize];
        w.sendrecv(
            &[w.rank()],
            (w.rank() + 1) % n,
            0,
            &mut x,
            (w.rank() + n - 1) % n,
            0,
        )
        .unwrap();
        assert_eq!(x[0], (w.rank() + n - 1) % n);
        let mut sum = [0usize];
        c.allreduce(&[w.rank()], &mut sum, dos::op::Sum).unwrap();
        assert_eq!(sum[0], if node == 0 { 1 } else { 2 + 3 + 4 });
    });
}

#[test]
fn a_rank_blocked_on_a_vanished_peer_gets_an_error_naming_it() {
    // Rank 1 (alone on node 1) ends like a crashed process, while rank 0 is
    // blocked in a receive from it, then in a collective that needs it: both
    // give PeerFailed { rank: 1 } instead of hanging.
    for collective in [false, true] {
        let got = run_cluster(&[1, 1], |w| {
            if w.rank() == 1 {
                std::thread::sleep(std::time::Duration::from_millis(50));
                dos::testing::vanish(w);
                return None;
            }
            Some(if collective {
                let mut s = [0u64];
                w.allreduce(&[1u64], &mut s, dos::op::Sum).unwrap_err()
            } else {
                w.recv_vec::<u8>(1, 0).map(|_| ()).unwrap_err()
            })
        });
        assert!(
            matches!(got[0], Some(dos::Error::PeerFailed { rank: 1 })),
            "collective {collective}: {:?}",
            got[0]
        );
    }
}

#[test]
fn large_messages_across_nodes_land_in_place_or_truncate() {
    // Rendezvous across nodes puts the payload straight into the receive
    // buffer; a buffer too small takes the chunked path and reports Truncated.
    run_cluster(&[1, 1], |w| {
        let big = pattern(5, 300_000);
        if w.rank() == 0 {
            w.send(&big, 1, 1).unwrap();
            w.send(&big, 1, 2).unwrap();
            dos::scope(|s| {
                let reqs: Vec<_> = (0..8)
                    .map(|k| w.isend(s, &big[k * 1000..], 1, 10 + k as i32).unwrap())
                    .collect();
                Request::wait_all(reqs).unwrap();
            });
        } else {
            let mut got = vec![0u8; 300_000];
            w.recv(&mut got, 0, 1).unwrap();
            assert!(got == big);
            let mut small = vec![0u8; 100_000];
            let e = w.recv(&mut small, 0, 2).unwrap_err();
            assert!(matches!(e, dos::Error::Truncated { .. }), "{e}");
            // Several in flight at once, received in reverse order.
            for k in (0..8).rev() {
                let (v, _) = w.recv_vec::<u8>(0, 10 + k as i32).unwrap();
                assert!(v[..] == big[k * 1000..], "message {k}");
            }
        }
    });
}
