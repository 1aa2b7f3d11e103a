//! Scenario tests of the engine over the simulated network.
//!
//! The heavy soaks are `#[ignore]`d; run them with
//! `cargo test -p dos-transport --release roce::sim -- --ignored`.

use super::Rng;
use super::*;
use crate::roce::engine::*;
use crate::roce::icrc::{self, IpUdp, ICRC_LEN};
use crate::roce::wire::{Opcode, Packet, Psn, Qpn, Syndrome};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngSeed};

const KB: usize = 1 << 10;
const MB: usize = 1 << 20;
/// Simulated-time budget of a scenario: generous, a hang shows up as a failure.
const LIMIT: Duration = Duration::from_secs(60);

/// Settings for the simulation: a 1 ms timeout backing off to 50 ms (the simulated
/// round trip is a few microseconds; the real ratio, 20 ms to 1 s), a 5 s retry
/// budget, a short RNR timer, 64 packets in flight.
fn base(c: &mut QpConfig) {
    c.timeout = Duration::from_millis(1);
    c.min_rnr_timer = 4; // 40 us
    c.window = 64;
    c.ack_req_every = 16;
    c.max_timeout = Duration::from_millis(50);
    c.retry_budget = Duration::from_secs(5);
}

fn sge(key: u32, addr: u64, len: usize) -> Sge {
    Sge {
        key,
        addr,
        len: len as u32,
    }
}

fn remote(rkey: u32, addr: u64) -> RemoteAddr {
    RemoteAddr { rkey, addr }
}

fn wr_ids(c: &[Completion]) -> Vec<u64> {
    c.iter().map(|c| c.wr_id).collect()
}

fn statuses(c: &[Completion]) -> Vec<WcStatus> {
    c.iter().map(|c| c.status).collect()
}

// Address layout of the regions in `Traffic`.
const SRC: u64 = 0x1000_0000;
const DST: u64 = 0x2000_0000;
const TARGET: u64 = 0x3000_0000;
const RBUF: u64 = 0x4000_0000;

/// Traffic in both directions at once, with everything checked at the end.
///
/// A: WRITE `size` bytes to B, READ `size` bytes from B, SEND `size / 4` bytes with
/// immediate data, and FETCH_ADD on B's counter, in that order.
/// B: RDMA WRITE with immediate `size / 2` bytes to A, then SEND `size / 8` bytes.
struct Traffic {
    sim: Sim,
    a: QpId,
    b: QpId,
    size: usize,
    a_src: Vec<u8>,
    b_src: Vec<u8>,
    keys: [u32; 8],
}

impl Traffic {
    fn new(seed: u64, link: LinkConfig, size: usize, tweak: impl Fn(&mut QpConfig)) -> Traffic {
        let mut sim = Sim::new(seed, link);
        let (na, nb) = (sim.add_node(), sim.add_node());
        let (a, b) = sim.connect(na, nb, |c| {
            base(c);
            tweak(c)
        });
        let a_src = sim.random_bytes(size);
        let b_src = sim.random_bytes(size);
        let ma = sim.mem_mut(na);
        let a_src_k = ma.register(SRC, a_src.clone(), Access::NONE);
        let a_dst_k = ma.register(DST, vec![0; size], Access::LOCAL_WRITE);
        let a_tgt_k = ma.register(TARGET, vec![0; size], Access::REMOTE_WRITE);
        let a_rbuf_k = ma.register(RBUF, vec![0; size], Access::LOCAL_WRITE);
        let mb = sim.mem_mut(nb);
        let b_src_k = mb.register(SRC, b_src.clone(), Access::REMOTE_READ);
        let b_tgt_k = mb.register(TARGET, vec![0; size], Access::REMOTE_WRITE);
        let b_rbuf_k = mb.register(RBUF, vec![0; size], Access::LOCAL_WRITE);
        let b_ctr_k = mb.register(0x5000_0000, vec![0; 8], Access::REMOTE_ATOMIC);
        let keys = [
            a_src_k, a_dst_k, a_tgt_k, a_rbuf_k, b_src_k, b_tgt_k, b_rbuf_k, b_ctr_k,
        ];

        let qa = sim.qp_mut(a);
        qa.post_recv(RecvWr {
            wr_id: 900,
            sge: sge(a_rbuf_k, RBUF, size),
        })
        .unwrap();
        qa.post_recv(RecvWr {
            wr_id: 901,
            sge: sge(a_rbuf_k, RBUF, size),
        })
        .unwrap();
        qa.post_send(SendWr::write(
            1,
            sge(a_src_k, SRC, size),
            remote(b_tgt_k, TARGET),
        ))
        .unwrap();
        qa.post_send(SendWr::read(
            2,
            sge(a_dst_k, DST, size),
            remote(b_src_k, SRC),
        ))
        .unwrap();
        qa.post_send(SendWr::send_imm(3, sge(a_src_k, SRC, size / 4), 0xA11CE))
            .unwrap();
        qa.post_send(SendWr::fetch_add(4, remote(b_ctr_k, 0x5000_0000), 5))
            .unwrap();
        let qb = sim.qp_mut(b);
        qb.post_recv(RecvWr {
            wr_id: 800,
            sge: sge(b_rbuf_k, RBUF, size),
        })
        .unwrap();
        qb.post_send(SendWr::write_imm(
            11,
            sge(b_src_k, SRC, size / 2),
            remote(a_tgt_k, TARGET),
            0xB0B,
        ))
        .unwrap();
        qb.post_send(SendWr::send(12, sge(b_src_k, SRC, size / 8)))
            .unwrap();
        Traffic {
            sim,
            a,
            b,
            size,
            a_src,
            b_src,
            keys,
        }
    }

    fn finished(sim: &Sim, a: QpId, b: QpId) -> bool {
        sim.done(a).len() >= 6 && sim.done(b).len() >= 3
    }

    /// Runs to the end and checks every completion and every byte.
    fn run_and_check(mut self) -> Sim {
        let (a, b) = (self.a, self.b);
        assert!(
            self.sim.run_until(LIMIT, |s| Traffic::finished(s, a, b)),
            "did not finish: A {:?} B {:?}\nA {:?}\nB {:?}\nnet {:?}",
            self.sim.done(a),
            self.sim.done(b),
            self.sim.qp(a).stats(),
            self.sim.qp(b).stats(),
            self.sim.stats,
        );
        // Nothing more happens afterwards: every work request completed exactly once.
        assert!(self.sim.run_quiet(self.sim.elapsed() + LIMIT));
        let size = self.size;
        let k = self.keys;
        let (da, db) = (self.sim.done(a).to_vec(), self.sim.done(b).to_vec());
        let sends_a: Vec<_> = da.iter().filter(|c| !c.opcode.is_recv()).copied().collect();
        let recvs_a: Vec<_> = da.iter().filter(|c| c.opcode.is_recv()).copied().collect();
        let sends_b: Vec<_> = db.iter().filter(|c| !c.opcode.is_recv()).copied().collect();
        let recvs_b: Vec<_> = db.iter().filter(|c| c.opcode.is_recv()).copied().collect();
        assert_eq!(wr_ids(&sends_a), [1, 2, 3, 4], "{da:?}");
        assert!(
            sends_a.iter().all(|c| c.status == WcStatus::Success),
            "{da:?}"
        );
        assert_eq!(
            sends_a.iter().map(|c| c.byte_len).collect::<Vec<_>>(),
            [size as u32, size as u32, (size / 4) as u32, 8]
        );
        assert_eq!(sends_a[3].atomic_orig, Some(0));
        assert_eq!(wr_ids(&sends_b), [11, 12], "{db:?}");
        assert!(
            sends_b.iter().all(|c| c.status == WcStatus::Success),
            "{db:?}"
        );
        // A received the WRITE with immediate (first receive buffer) and the SEND.
        assert_eq!(wr_ids(&recvs_a), [900, 901]);
        assert_eq!(recvs_a[0].opcode, WcOpcode::RecvRdmaWithImm);
        assert_eq!(
            (recvs_a[0].status, recvs_a[0].byte_len, recvs_a[0].imm),
            (WcStatus::Success, (size / 2) as u32, Some(0xB0B))
        );
        assert_eq!(
            (recvs_a[1].status, recvs_a[1].byte_len, recvs_a[1].imm),
            (WcStatus::Success, (size / 8) as u32, None)
        );
        assert_eq!(wr_ids(&recvs_b), [800]);
        assert_eq!(
            (recvs_b[0].status, recvs_b[0].byte_len, recvs_b[0].imm),
            (WcStatus::Success, (size / 4) as u32, Some(0xA11CE))
        );
        // Every byte.
        let (ma, mb) = (self.sim.mem(a.node), self.sim.mem(b.node));
        assert!(
            mb.bytes(k[5]).unwrap() == &self.a_src[..],
            "WRITE data differs"
        );
        assert!(
            ma.bytes(k[1]).unwrap() == &self.b_src[..],
            "READ data differs"
        );
        assert!(
            mb.bytes(k[6]).unwrap()[..size / 4] == self.a_src[..size / 4],
            "SEND data differs"
        );
        assert!(mb.bytes(k[6]).unwrap()[size / 4..].iter().all(|&x| x == 0));
        assert!(
            ma.bytes(k[2]).unwrap()[..size / 2] == self.b_src[..size / 2],
            "WRITE-imm data differs"
        );
        assert!(ma.bytes(k[2]).unwrap()[size / 2..].iter().all(|&x| x == 0));
        assert!(
            ma.bytes(k[3]).unwrap()[..size / 8] == self.b_src[..size / 8],
            "SEND data differs"
        );
        assert_eq!(mb.bytes(k[7]).unwrap(), 5u64.to_ne_bytes());
        assert_eq!(self.sim.qp(a).state(), QpState::Ready);
        assert_eq!(self.sim.qp(b).state(), QpState::Ready);
        self.sim
    }
}

fn run_traffic(seed: u64, link: LinkConfig, size: usize, tweak: impl Fn(&mut QpConfig)) -> Sim {
    Traffic::new(seed, link, size, tweak).run_and_check()
}

#[test]
fn clean_network_is_bit_exact_and_never_retransmits() {
    for mtu in [Mtu::MTU_1024, Mtu::MTU_4096] {
        let sim = run_traffic(1, LinkConfig::default(), 2 * MB, |c| c.mtu = mtu);
        for node in &sim.nodes {
            let s = node.qps[0].stats();
            assert_eq!(
                (s.tx_retransmits, s.timeouts, s.go_backs, s.seq_naks_sent),
                (0, 0, 0, 0),
                "{s:?}"
            );
        }
    }
}

#[test]
fn five_percent_loss() {
    let sim = run_traffic(2, LinkConfig::lossy(0.05), 2 * MB, |_| {});
    assert!(sim.stats.lost > 100, "{:?}", sim.stats);
}

#[test]
fn twenty_percent_loss() {
    let sim = run_traffic(3, LinkConfig::lossy(0.20), 2 * MB, |c| {
        c.window = 16;
        c.ack_req_every = 4;
    });
    assert!(sim.stats.lost > 1000, "{:?}", sim.stats);
}

#[test]
fn duplication() {
    let link = LinkConfig {
        duplicate: 0.10,
        reorder_by: 4,
        ..LinkConfig::default()
    };
    let sim = run_traffic(4, link, MB, |_| {});
    assert!(sim.stats.duplicated > 100, "{:?}", sim.stats);
    let dups: u64 = sim
        .nodes
        .iter()
        .map(|n| n.qps[0].stats().rx_duplicates)
        .sum();
    assert!(dups > 0);
}

#[test]
fn reordering() {
    let link = LinkConfig {
        reorder: 0.05,
        reorder_by: 8,
        ..LinkConfig::default()
    };
    let sim = run_traffic(5, link, MB, |_| {});
    assert!(sim.stats.reordered > 100, "{:?}", sim.stats);
}

#[test]
fn corruption_is_caught_by_the_icrc() {
    let link = LinkConfig {
        corrupt: 0.05,
        ..LinkConfig::default()
    };
    let sim = run_traffic(6, link, MB, |_| {});
    let caught: u64 = sim
        .nodes
        .iter()
        .map(|n| n.qps[0].stats().rx_icrc_errors)
        .sum();
    assert!(caught > 50, "{:?}", sim.stats);
    // Flips in the BTH's byte 4 (FECN, BECN, reserved) are not covered, and
    // harmless; every other corrupted datagram was caught (or misdelivered by a
    // flipped destination QPN, which the network counts).
    assert!(caught <= sim.stats.corrupted);
}

#[test]
fn everything_at_once() {
    let link = LinkConfig {
        loss: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_by: 6,
        corrupt: 0.02,
    };
    run_traffic(7, link, MB, |c| {
        c.mtu = Mtu::MTU_4096;
    });
    run_traffic(8, link, MB / 2, |c| {
        c.mtu = Mtu::MTU_256;
        c.window = 32;
    });
}

#[test]
fn psn_wraparound() {
    // Both sides start 40 PSNs before 2^24: every kind of request crosses the wrap.
    let link = LinkConfig {
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.02,
        reorder_by: 4,
        corrupt: 0.01,
    };
    for start in [Psn::MAX - 40, Psn::MAX, Psn::MAX - 100] {
        let sim = run_traffic(9, link, 256 * KB, |c| {
            c.send_psn = Psn::new(start);
        });
        // The sequence numbers did wrap, both ways.
        for (node, min) in [(0, 577), (1, 160)] {
            let q = &sim.nodes[node].qps[0];
            let next = q.next_send_psn();
            assert_eq!(next.distance_from(Psn::new(start)), min, "PSNs used");
            assert!(next.get() < start, "wrapped");
            assert_eq!(sim.nodes[1 - node].qps[0].expected_psn(), next);
        }
    }
    // And without loss, exactly at the boundary, with reads only.
    let mut sim = Sim::new(10, LinkConfig::default());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, _) = sim.connect(na, nb, |c| {
        base(c);
        c.send_psn = Psn::new(Psn::MAX - 1);
    });
    let data = sim.random_bytes(8 * KB);
    let src = sim
        .mem_mut(nb)
        .register(SRC, data.clone(), Access::REMOTE_READ);
    let dst = sim
        .mem_mut(na)
        .register(DST, vec![0; 8 * KB], Access::LOCAL_WRITE);
    for i in 0..4 {
        let off = (i * 2 * KB) as u64;
        sim.qp_mut(a)
            .post_send(SendWr::read(
                i as u64,
                sge(dst, DST + off, 2 * KB),
                remote(src, SRC + off),
            ))
            .unwrap();
    }
    assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 4));
    assert_eq!(wr_ids(sim.done(a)), [0, 1, 2, 3]);
    assert!(sim.done(a).iter().all(|c| c.status == WcStatus::Success));
    assert_eq!(sim.mem(na).bytes(dst).unwrap(), &data[..]);
}

#[test]
fn retry_exhaustion_fails_and_flushes() {
    let mut sim = Sim::new(11, LinkConfig::default());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, |c| {
        base(c);
        c.max_timeout = Duration::from_millis(16);
        c.retry_budget = Duration::from_millis(100);
    });
    let src = sim
        .mem_mut(na)
        .register(SRC, vec![7; 64 * KB], Access::LOCAL_WRITE);
    let tgt = sim
        .mem_mut(nb)
        .register(TARGET, vec![0; 64 * KB], Access::ALL);
    sim.qp_mut(b)
        .post_recv(RecvWr {
            wr_id: 50,
            sge: sge(tgt, TARGET, 64 * KB),
        })
        .unwrap();
    // First one WRITE goes through, then the link is cut.
    sim.qp_mut(a)
        .post_send(SendWr::write(1, sge(src, SRC, 8 * KB), remote(tgt, TARGET)))
        .unwrap();
    assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 1));
    sim.set_link(na, nb, LinkConfig::cut());
    sim.set_link(nb, na, LinkConfig::cut());
    let qa = sim.qp_mut(a);
    qa.post_recv(RecvWr {
        wr_id: 60,
        sge: sge(src, SRC, KB),
    })
    .unwrap();
    qa.post_send(SendWr::write(
        2,
        sge(src, SRC, 16 * KB),
        remote(tgt, TARGET),
    ))
    .unwrap();
    qa.post_send(SendWr::send(3, sge(src, SRC, 100))).unwrap();
    qa.post_send(SendWr::read(4, sge(src, SRC, 4 * KB), remote(tgt, TARGET)))
        .unwrap();
    let t0 = sim.elapsed();
    assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 5));
    let took = sim.elapsed() - t0;
    let d = sim.done(a);
    assert_eq!(wr_ids(d), [1, 2, 3, 4, 60]);
    assert_eq!(
        statuses(d),
        [
            WcStatus::Success,
            WcStatus::RetryExceeded,
            WcStatus::Flushed,
            WcStatus::Flushed,
            WcStatus::Flushed
        ]
    );
    assert_eq!(d[4].opcode, WcOpcode::Recv);
    // It gave up when the 100 ms budget ended, after timeouts backing off from
    // 1 ms to 16 ms: at 1, 3, 7, 15, 31, 47, 63, 79, 95 and 100 ms.
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(101),
        "{took:?}"
    );
    let qa = sim.qp_mut(a);
    assert_eq!(qa.state(), QpState::Error);
    assert_eq!(qa.stats().timeouts, 10);
    assert_eq!(qa.poll_timeout(), None);
    assert_eq!(
        qa.post_send(SendWr::send(5, sge(src, SRC, 1))),
        Err(PostError::QpInError)
    );
    // B never saw the later work requests: its receive buffer is still there.
    assert!(sim.run_quiet(sim.elapsed() + LIMIT));
    assert_eq!(sim.qp(b).recv_queue_len(), 1);
    assert!(sim.done(b).is_empty());
}

/// A SEND before the receiver posted a buffer: RNR NAKs, then success.
#[test]
fn rnr_then_success() {
    for link in [LinkConfig::default(), LinkConfig::lossy(0.05)] {
        let mut sim = Sim::new(12, link);
        let (na, nb) = (sim.add_node(), sim.add_node());
        let (a, b) = sim.connect(na, nb, |c| {
            base(c);
            c.rnr_budget = None;
        });
        let msg = sim.random_bytes(5 * KB + 3);
        let src = sim.mem_mut(na).register(SRC, msg.clone(), Access::NONE);
        let rbuf = sim
            .mem_mut(nb)
            .register(RBUF, vec![0; 8 * KB], Access::LOCAL_WRITE);
        let qa = sim.qp_mut(a);
        qa.post_send(SendWr::send_imm(1, sge(src, SRC, msg.len()), 42))
            .unwrap();
        qa.post_send(SendWr::send(2, sge(src, SRC, 10))).unwrap();
        // 5 ms of RNR NAKs (every 40 us).
        sim.run_until(Duration::from_millis(5), |_| false);
        assert!(sim.done(a).is_empty() && sim.done(b).is_empty());
        assert!(
            sim.qp(b).stats().rnr_naks_sent > 20,
            "{:?}",
            sim.qp(b).stats()
        );
        assert!(sim.qp(a).stats().rnr_naks_received > 20);
        let qb = sim.qp_mut(b);
        qb.post_recv(RecvWr {
            wr_id: 7,
            sge: sge(rbuf, RBUF, 8 * KB),
        })
        .unwrap();
        qb.post_recv(RecvWr {
            wr_id: 8,
            sge: sge(rbuf, RBUF + 6 * KB as u64, 2 * KB),
        })
        .unwrap();
        assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 2 && s.done(b).len() == 2));
        assert!(sim.run_quiet(sim.elapsed() + LIMIT));
        assert_eq!(wr_ids(sim.done(a)), [1, 2]);
        assert!(sim.done(a).iter().all(|c| c.status == WcStatus::Success));
        let d = sim.done(b);
        assert_eq!(wr_ids(d), [7, 8]);
        assert_eq!((d[0].byte_len, d[0].imm), (msg.len() as u32, Some(42)));
        assert_eq!((d[1].byte_len, d[1].imm), (10, None));
        let got = sim.mem(nb).bytes(rbuf).unwrap();
        assert_eq!(&got[..msg.len()], &msg[..]);
        assert_eq!(&got[6 * KB..6 * KB + 10], &msg[..10]);
    }
}

#[test]
fn rnr_retry_exhaustion() {
    let mut sim = Sim::new(13, LinkConfig::default());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, |c| {
        base(c);
        // RNR NAKs ask for 40 us: the budget ends after the fourth.
        c.rnr_budget = Some(Duration::from_micros(100));
    });
    let src = sim.mem_mut(na).register(SRC, vec![1; 4 * KB], Access::NONE);
    let tgt = sim
        .mem_mut(nb)
        .register(TARGET, vec![0; 4 * KB], Access::REMOTE_WRITE);
    let qa = sim.qp_mut(a);
    // A WRITE with immediate needs a receive buffer too.
    qa.post_send(SendWr::write(1, sge(src, SRC, 3 * KB), remote(tgt, TARGET)))
        .unwrap();
    qa.post_send(SendWr::write_imm(
        2,
        sge(src, SRC, 3 * KB),
        remote(tgt, TARGET),
        9,
    ))
    .unwrap();
    qa.post_send(SendWr::send(3, sge(src, SRC, 10))).unwrap();
    assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 3));
    assert_eq!(
        statuses(sim.done(a)),
        [
            WcStatus::Success,
            WcStatus::RnrRetryExceeded,
            WcStatus::Flushed
        ]
    );
    // The first transmission and the retries within the budget.
    assert_eq!(sim.qp(b).stats().rnr_naks_sent, 4);
    assert_eq!(sim.qp(a).stats().rnr_naks_received, 4);
    // The WRITE's first two packets were written (once); the last one never was.
    let got = sim.mem(nb).bytes(tgt).unwrap();
    assert!(got[..2 * KB].iter().all(|&x| x == 1));
    assert!(got[3 * KB..].iter().all(|&x| x == 0));
    assert_eq!(sim.qp(a).state(), QpState::Error);
    // B is fine, and still expects the PSN of the rejected packet.
    assert_eq!(sim.qp(b).state(), QpState::Ready);
}

/// The real timeouts: 20 ms backing off to 1 s.
fn real_timeouts(c: &mut QpConfig) {
    let d = QpConfig::new(c.qpn, c.remote_qpn, c.local, c.remote);
    (c.timeout, c.max_timeout, c.retry_budget) = (d.timeout, d.max_timeout, d.retry_budget);
}

/// A peer that goes silent (stopped, descheduled, its link down) for 1 s and for
/// 5 s, with the default timeouts and budget: the transfer resumes when it is
/// back, and backing off kept the retransmissions few (with 8 tries of 20 ms, the
/// old policy, a 200 ms silence was fatal).
#[test]
fn a_peer_silent_for_seconds_is_waited_for() {
    for (seed, secs, most_timeouts) in [(30, 1, 6), (31, 5, 10)] {
        let silence = Duration::from_secs(secs);
        let mut sim = Sim::new(seed, LinkConfig::default());
        let (na, nb) = (sim.add_node(), sim.add_node());
        let (a, b) = sim.connect(na, nb, |c| {
            base(c);
            real_timeouts(c);
        });
        assert_eq!(sim.qp(a).config().retry_budget, DEFAULT_RETRY_BUDGET);
        let data = sim.random_bytes(256 * KB);
        let src = sim.mem_mut(na).register(SRC, data.clone(), Access::NONE);
        let tgt = sim
            .mem_mut(nb)
            .register(TARGET, vec![0; 256 * KB], Access::ALL);
        let w = |id, len| SendWr::write(id, sge(src, SRC, len), remote(tgt, TARGET));
        sim.qp_mut(a).post_send(w(1, 64 * KB)).unwrap();
        assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 1));
        // B goes silent: nothing reaches it, nothing comes from it.
        sim.set_link(na, nb, LinkConfig::cut());
        sim.set_link(nb, na, LinkConfig::cut());
        sim.qp_mut(a).post_send(w(2, 256 * KB)).unwrap();
        let t0 = sim.elapsed();
        assert!(!sim.run_until(t0 + silence, |s| s.done(a).len() > 1));
        assert!(sim.elapsed() - t0 >= silence);
        assert_eq!(sim.qp(a).state(), QpState::Ready);
        sim.set_link(na, nb, LinkConfig::default());
        sim.set_link(nb, na, LinkConfig::default());
        assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 2));
        assert_eq!(statuses(sim.done(a)), [WcStatus::Success; 2]);
        assert_eq!(sim.mem(nb).bytes(tgt).unwrap(), &data[..]);
        // Resumed within one largest timeout of B's return.
        let took = sim.elapsed() - t0;
        assert!(took < silence + Duration::from_millis(1100), "{took:?}");
        // 20, 40, 80, 160, 320, 640 ms, then every second: a handful of
        // timeouts, not one every 20 ms.
        let timeouts = sim.qp(a).stats().timeouts;
        assert!(timeouts <= most_timeouts, "{timeouts} timeouts");
        assert_eq!(
            (sim.qp(a).state(), sim.qp(b).state()),
            (QpState::Ready, QpState::Ready)
        );
    }
}

/// Budgets and timeouts of centuries (from a tunable) neither overflow the clock
/// nor panic.
#[test]
fn enormous_budgets_do_not_overflow() {
    let mut sim = Sim::new(40, LinkConfig::cut());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, _) = sim.connect(na, nb, |c| {
        base(c);
        c.timeout = Duration::from_secs(u64::MAX / 4);
        c.max_timeout = Duration::MAX;
        c.retry_budget = Duration::MAX;
        c.rnr_budget = Some(Duration::MAX);
    });
    let src = sim.mem_mut(na).register(SRC, vec![1; KB], Access::NONE);
    sim.qp_mut(a)
        .post_send(SendWr::send(1, sge(src, SRC, KB)))
        .unwrap();
    assert!(!sim.run_until(Duration::from_secs(1), |s| !s.done(a).is_empty()));
    assert!(sim.qp(a).poll_timeout().is_some());
    assert_eq!(sim.qp(a).state(), QpState::Ready);
}

/// The backoff schedule, the budget's end, and progress bringing the timeout back
/// to its start, driven by hand with exact times.
#[test]
fn retransmissions_back_off_to_a_time_budget() {
    let ms = Duration::from_millis;
    let sched: Vec<_> = (0..9)
        .map(|k| backoff_timeout(ms(20), ms(1000), k))
        .collect();
    assert_eq!(sched, [20, 40, 80, 160, 320, 640, 1000, 1000, 1000].map(ms));
    assert_eq!(backoff_timeout(ms(20), ms(1000), u32::MAX), ms(1000));
    assert_eq!(
        backoff_timeout(Duration::MAX, Duration::MAX, 3),
        Duration::MAX
    );
    let (x, y): (SocketAddr, SocketAddr) = (
        "10.0.0.1:4791".parse().unwrap(),
        "10.0.0.2:4791".parse().unwrap(),
    );
    let qpn = |v| Qpn::new(v).unwrap();
    let mut ca = QpConfig::new(qpn(1), qpn(2), x, y);
    ca.retry_budget = Duration::from_secs(5);
    let mut a = Qp::new(ca).unwrap();
    let mut b = Qp::new(QpConfig::new(qpn(2), qpn(1), y, x)).unwrap();
    let (mut ma, mut mb) = (VecMemory::new(), VecMemory::new());
    let src = ma.register(SRC, vec![5; 2 * KB], Access::NONE);
    let rbuf = mb.register(RBUF, vec![0; 4 * KB], Access::LOCAL_WRITE);
    for id in [1, 2] {
        b.post_recv(RecvWr {
            wr_id: id,
            sge: sge(rbuf, RBUF + (id - 1) * 2 * KB as u64, 2 * KB),
        })
        .unwrap();
    }
    let mut buf = vec![0; a.max_datagram_len()];
    let t0 = Instant::now();
    // Two one-packet SENDs; everything A sends is lost.
    a.post_send(SendWr::send(1, sge(src, SRC, KB))).unwrap();
    a.post_send(SendWr::send(2, sge(src, SRC, KB))).unwrap();
    let drain = |a: &mut Qp, now, buf: &mut Vec<u8>, ma: &VecMemory| {
        let mut v = Vec::new();
        while let Some(n) = a.poll_transmit(now, buf, ma) {
            v.push(buf[..n].to_vec());
        }
        v
    };
    assert_eq!(drain(&mut a, t0, &mut buf, &ma).len(), 2);
    let mut now = t0;
    let mut gaps = Vec::new();
    let mut last = Vec::new();
    for _ in 0..4 {
        let t = a.poll_timeout().unwrap();
        gaps.push(t - now);
        now = t;
        a.handle_timeout(now);
        last = drain(&mut a, now, &mut buf, &ma);
        assert_eq!(last.len(), 2);
    }
    assert_eq!(gaps, [20, 40, 80, 160].map(ms));
    // The retransmission of the first SEND gets through: its ACK is progress,
    // and the timer for the second starts again at 20 ms.
    b.handle_datagram(now, &last[0], &mut mb);
    for d in drain(&mut b, now, &mut buf, &mb) {
        a.handle_datagram(now, &d, &mut ma);
    }
    assert_eq!(
        a.poll_completion().map(|c| (c.wr_id, c.status)),
        Some((1, WcStatus::Success))
    );
    assert_eq!(a.poll_timeout(), Some(now + ms(20)));
    // Then silence again: 20, 40, ..., 640 ms, then 1 s until the 5 s budget ends,
    // the last timer armed for its end exactly.
    let stalled = now;
    gaps.clear();
    while let Some(t) = a.poll_timeout() {
        gaps.push(t - now);
        now = t;
        a.handle_timeout(now);
        drain(&mut a, now, &mut buf, &ma);
    }
    assert_eq!(
        gaps,
        [20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 740].map(ms)
    );
    assert_eq!(now - stalled, Duration::from_secs(5));
    assert_eq!(a.state(), QpState::Error);
    assert_eq!(
        a.poll_completion().map(|c| (c.wr_id, c.status)),
        Some((2, WcStatus::RetryExceeded))
    );
}

/// Two requesters FETCH_ADD the same word of a third node, concurrently, over
/// lossy and duplicating links: every addition happens exactly once.
#[test]
fn concurrent_fetch_add_is_exact() {
    let link = LinkConfig {
        loss: 0.10,
        duplicate: 0.10,
        reorder: 0.05,
        reorder_by: 5,
        corrupt: 0.01,
    };
    let mut sim = Sim::new(14, link);
    let (r, x, y) = (sim.add_node(), sim.add_node(), sim.add_node());
    let cfg = |c: &mut QpConfig| {
        base(c);
        c.sq_depth = 512;
        c.max_rd_atomic = 8;
        c.max_dest_rd_atomic = 8;
    };
    let (qx, _) = sim.connect(x, r, cfg);
    let (qy, _) = sim.connect(y, r, cfg);
    let ctr = sim
        .mem_mut(r)
        .register(0x8000, vec![0; 64], Access::REMOTE_ATOMIC);
    const N: u64 = 300;
    for i in 0..N {
        sim.qp_mut(qx)
            .post_send(SendWr::fetch_add(i, remote(ctr, 0x8008), 1))
            .unwrap();
        sim.qp_mut(qy)
            .post_send(SendWr::fetch_add(i, remote(ctr, 0x8008), 1 << 32))
            .unwrap();
    }
    assert!(sim.run_until(LIMIT, |s| s.done(qx).len() == N as usize
        && s.done(qy).len() == N as usize));
    assert!(sim.run_quiet(sim.elapsed() + LIMIT));
    let word = u64::from_ne_bytes(sim.mem(r).bytes(ctr).unwrap()[8..16].try_into().unwrap());
    assert_eq!(word, N + (N << 32));
    // Neighbouring words untouched.
    assert!(sim.mem(r).bytes(ctr).unwrap()[..8].iter().all(|&b| b == 0));
    assert!(sim.mem(r).bytes(ctr).unwrap()[16..].iter().all(|&b| b == 0));
    let mut origs = Vec::new();
    for (q, shift) in [(qx, 0), (qy, 32)] {
        let d = sim.done(q);
        assert_eq!(wr_ids(d), (0..N).collect::<Vec<_>>());
        assert!(d
            .iter()
            .all(|c| c.status == WcStatus::Success && c.byte_len == 8));
        // Each requester's own part of the word counts 0, 1, 2, ... in order.
        let mine: Vec<u64> = d
            .iter()
            .map(|c| (c.atomic_orig.unwrap() >> shift) & 0xFFFF_FFFF)
            .collect();
        assert_eq!(mine, (0..N).collect::<Vec<_>>());
        origs.extend(d.iter().map(|c| c.atomic_orig.unwrap()));
    }
    // No two executions saw the same value: no atomic ran twice.
    origs.sort_unstable();
    origs.dedup();
    assert_eq!(origs.len(), 2 * N as usize);
    // Duplicates did reach the responder and were answered from its resources.
    let replays: u64 = sim.nodes[r]
        .qps
        .iter()
        .map(|q| q.stats().atomic_replays)
        .sum();
    assert!(replays > 0, "no atomic replay exercised");
}

#[test]
fn compare_swap_semantics() {
    let mut sim = Sim::new(15, LinkConfig::lossy(0.1));
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, _) = sim.connect(na, nb, |c| {
        base(c);
    });
    let mut init = vec![0u8; 16];
    init[8..].copy_from_slice(&100u64.to_ne_bytes());
    let w = sim.mem_mut(nb).register(0x10, init, Access::REMOTE_ATOMIC);
    let at = remote(w, 0x18);
    let qa = sim.qp_mut(a);
    qa.post_send(SendWr::compare_swap(1, at, 5, 6)).unwrap(); // fails: 100 != 5
    qa.post_send(SendWr::compare_swap(2, at, 100, 7)).unwrap(); // 100 -> 7
    qa.post_send(SendWr::compare_swap(3, at, 100, 8)).unwrap(); // fails: 7 != 100
    qa.post_send(SendWr::fetch_add(4, at, u64::MAX)).unwrap(); // 7 -> 6 (wraps)
    qa.post_send(SendWr::compare_swap(5, at, 6, u64::MAX))
        .unwrap(); // 6 -> MAX
    qa.post_send(SendWr::fetch_add(6, at, 2)).unwrap(); // MAX -> 1
    assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 6));
    let d = sim.done(a);
    assert!(d.iter().all(|c| c.status == WcStatus::Success));
    assert_eq!(
        d.iter()
            .map(|c| (c.opcode, c.atomic_orig.unwrap()))
            .collect::<Vec<_>>(),
        [
            (WcOpcode::CompareSwap, 100),
            (WcOpcode::CompareSwap, 100),
            (WcOpcode::CompareSwap, 7),
            (WcOpcode::FetchAdd, 7),
            (WcOpcode::CompareSwap, 6),
            (WcOpcode::FetchAdd, u64::MAX),
        ]
    );
    let got = sim.mem(nb).bytes(w).unwrap();
    assert_eq!(u64::from_ne_bytes(got[8..].try_into().unwrap()), 1);
    assert_eq!(&got[..8], &[0; 8]);
    // Misaligned atomics are refused at posting.
    assert_eq!(
        sim.qp_mut(a)
            .post_send(SendWr::fetch_add(7, remote(w, 0x14), 1)),
        Err(PostError::Misaligned)
    );
}

/// Every way a remote access can be wrong: the work request fails with
/// RemoteAccessError, later ones are flushed, no byte of the target changes.
#[test]
fn remote_access_errors_touch_nothing() {
    #[derive(Debug, Clone, Copy)]
    enum Bad {
        WriteKey,
        WriteOutOfBounds,
        WriteBeforeRegion,
        WriteNoRight,
        ReadKey,
        ReadOutOfBounds,
        ReadNoRight,
        AtomicKey,
        AtomicOutOfBounds,
        AtomicNoRight,
        ZeroLengthIsFine,
    }
    use Bad::*;
    for (i, bad) in [
        WriteKey,
        WriteOutOfBounds,
        WriteBeforeRegion,
        WriteNoRight,
        ReadKey,
        ReadOutOfBounds,
        ReadNoRight,
        AtomicKey,
        AtomicOutOfBounds,
        AtomicNoRight,
        ZeroLengthIsFine,
    ]
    .into_iter()
    .enumerate()
    {
        for link in [LinkConfig::default(), LinkConfig::lossy(0.2)] {
            let mut sim = Sim::new(16 + i as u64, link);
            let (na, nb) = (sim.add_node(), sim.add_node());
            let (a, b) = sim.connect(na, nb, |c| {
                base(c);
            });
            let data = sim.random_bytes(8 * KB);
            let src = sim
                .mem_mut(na)
                .register(SRC, data.clone(), Access::LOCAL_WRITE);
            // Two adjacent regions: 0x1000..0x2000 writable and readable, and
            // 0x2000..0x3000 with every right; plus a read-only and a write-only one.
            let patt: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
            let mb = sim.mem_mut(nb);
            let r1 = mb.register(
                0x1000,
                patt.clone(),
                Access::REMOTE_WRITE | Access::REMOTE_READ,
            );
            let r2 = mb.register(0x2000, patt.clone(), Access::ALL);
            let ro = mb.register(0x9000, patt.clone(), Access::REMOTE_READ);
            let wo = mb.register(0xA000, patt.clone(), Access::REMOTE_WRITE);
            let before = sim.mem(nb).clone();
            let wr = match bad {
                WriteKey => SendWr::write(1, sge(src, SRC, 512), remote(0xBAD, 0x1000)),
                WriteOutOfBounds => SendWr::write(1, sge(src, SRC, 2 * KB), remote(r1, 0x1F00)),
                WriteBeforeRegion => SendWr::write(1, sge(src, SRC, 16), remote(r2, 0x1FF8)),
                WriteNoRight => SendWr::write(1, sge(src, SRC, 16), remote(ro, 0x9000)),
                ReadKey => SendWr::read(1, sge(src, SRC, 16), remote(r1 ^ 2, 0x1000)),
                ReadOutOfBounds => SendWr::read(1, sge(src, SRC, 4097), remote(r1, 0x1000)),
                ReadNoRight => SendWr::read(1, sge(src, SRC, 16), remote(wo, 0xA000)),
                AtomicKey => SendWr::fetch_add(1, remote(0, 0x1000), 1),
                AtomicOutOfBounds => SendWr::fetch_add(1, remote(r2, 0x3000), 1),
                AtomicNoRight => SendWr::compare_swap(1, remote(r1, 0x1008), 0, 1),
                ZeroLengthIsFine => SendWr::write(1, sge(src, SRC, 0), remote(0xBAD, 0)),
            };
            let qa = sim.qp_mut(a);
            qa.post_send(wr).unwrap();
            qa.post_send(SendWr::write(2, sge(src, SRC, 64), remote(r2, 0x2000)))
                .unwrap();
            assert!(sim.run_until(LIMIT, |s| s.done(a).len() == 2), "{bad:?}");
            assert!(sim.run_quiet(sim.elapsed() + LIMIT));
            let d = sim.done(a);
            if let ZeroLengthIsFine = bad {
                assert_eq!(statuses(d), [WcStatus::Success; 2]);
                assert_eq!(&sim.mem(nb).bytes(r2).unwrap()[..64], &data[..64]);
                continue;
            }
            assert_eq!(
                statuses(d),
                [WcStatus::RemoteAccessError, WcStatus::Flushed],
                "{bad:?} {link:?}"
            );
            // Not a byte changed on B (the second WRITE was flushed, not sent).
            for key in [r1, r2, ro, wo] {
                assert_eq!(sim.mem(nb).bytes(key), before.bytes(key), "{bad:?}");
            }
            // Not a byte of A's buffer either (failed READs deliver nothing).
            assert_eq!(sim.mem(na).bytes(src).unwrap(), &data[..]);
            // Both sides are in the error state (IBA: class C error at the responder).
            assert_eq!(sim.qp(a).state(), QpState::Error);
            assert_eq!(sim.qp(b).state(), QpState::Error);
        }
    }
}

/// The golden sequence of a WRITE of three MTUs: FIRST (with RETH), MIDDLE,
/// LAST (with AckReq), then one coalesced ACK of the last PSN.
#[test]
fn golden_write_of_three_mtus() {
    let mut sim = Sim::new(30, LinkConfig::default());
    sim.log = Some(Vec::new());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, |c| {
        base(c);
        c.send_psn = Psn::new(0x00AB_CDEF);
    });
    let data = sim.random_bytes(3 * KB);
    let src = sim.mem_mut(na).register(SRC, data.clone(), Access::NONE);
    let tgt = sim
        .mem_mut(nb)
        .register(TARGET, vec![0; 3 * KB], Access::REMOTE_WRITE);
    sim.qp_mut(a)
        .post_send(SendWr::write(
            77,
            sge(src, SRC, 3 * KB),
            remote(tgt, TARGET),
        ))
        .unwrap();
    assert!(sim.run_quiet(LIMIT));
    assert_eq!(
        sim.done(a),
        &[Completion {
            wr_id: 77,
            status: WcStatus::Success,
            opcode: WcOpcode::RdmaWrite,
            byte_len: 3072,
            imm: None,
            atomic_orig: None,
        }]
    );
    let (addr_a, addr_b) = (sim.nodes[na].addr, sim.nodes[nb].addr);
    let (qpn_a, qpn_b) = (sim.qp(a).config().qpn, sim.qp(b).config().qpn);
    let log = sim.log.take().unwrap();
    let mut seen = Vec::new();
    for (from, to, bytes) in &log {
        let hdrs = IpUdp::new(sim.nodes[*from].addr, sim.nodes[*to].addr);
        let p = Packet::decode(&hdrs, bytes).expect("every datagram decodes");
        seen.push((*from, p.bth.opcode, p.bth.psn.get(), p.bth.ack_req));
        if *from == na {
            assert_eq!(p.bth.dest_qp, qpn_b);
            assert_eq!(bytes.len(), p.bth.opcode.headers_len() + KB + ICRC_LEN);
            let i = p.bth.psn.distance_from(Psn::new(0x00AB_CDEF)) as usize;
            assert_eq!(p.payload, &data[i * KB..(i + 1) * KB]);
            assert_eq!(p.reth.is_some(), i == 0);
            if let Some(reth) = p.reth {
                assert_eq!((reth.va, reth.rkey, reth.dma_len), (TARGET, tgt, 3072));
            }
            assert_eq!(hdrs, IpUdp::new(addr_a, addr_b));
        } else {
            assert_eq!(p.bth.dest_qp, qpn_a);
            assert!(matches!(p.aeth.unwrap().syndrome, Syndrome::Ack { .. }));
        }
    }
    assert_eq!(
        seen,
        [
            (na, Opcode::RdmaWriteFirst, 0xAB_CDEF, false),
            (na, Opcode::RdmaWriteMiddle, 0xAB_CDF0, false),
            (na, Opcode::RdmaWriteLast, 0xAB_CDF1, true),
            (nb, Opcode::Acknowledge, 0xAB_CDF1, false),
        ]
    );
    assert_eq!(sim.mem(nb).bytes(tgt).unwrap(), &data[..]);
}

/// A READ of 2.5 MTUs: one request, then FIRST/MIDDLE/LAST responses with the
/// PSNs the request consumed; a SEND after it gets the next PSN.
#[test]
fn golden_read_and_send() {
    let mut sim = Sim::new(31, LinkConfig::default());
    sim.log = Some(Vec::new());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, |c| {
        base(c);
        c.send_psn = Psn::new(Psn::MAX - 1);
    });
    let data = sim.random_bytes(2560);
    let src = sim
        .mem_mut(nb)
        .register(SRC, data.clone(), Access::REMOTE_READ);
    let dst = sim
        .mem_mut(na)
        .register(DST, vec![0; 4096], Access::LOCAL_WRITE);
    sim.qp_mut(b)
        .post_recv(RecvWr {
            wr_id: 5,
            sge: sge(dst, DST, 0),
        })
        .unwrap();
    let qa = sim.qp_mut(a);
    qa.post_send(SendWr::read(1, sge(dst, DST, 2560), remote(src, SRC)))
        .unwrap();
    qa.post_send(SendWr::send(2, sge(dst, DST, 0))).unwrap();
    assert!(sim.run_quiet(LIMIT));
    assert_eq!(wr_ids(sim.done(a)), [1, 2]);
    assert_eq!(wr_ids(sim.done(b)), [5]);
    assert_eq!(&sim.mem(na).bytes(dst).unwrap()[..2560], &data[..]);
    let seen: Vec<_> = sim
        .log
        .take()
        .unwrap()
        .iter()
        .map(|(from, to, bytes)| {
            let hdrs = IpUdp::new(sim.nodes[*from].addr, sim.nodes[*to].addr);
            let p = Packet::decode(&hdrs, bytes).unwrap();
            (p.bth.opcode, p.bth.psn.get(), p.payload.len())
        })
        .collect();
    // The requester sends the READ and the SEND before any response arrives.
    assert_eq!(
        seen,
        [
            (Opcode::RdmaReadRequest, Psn::MAX - 1, 0),
            (Opcode::SendOnly, 1, 0),
            (Opcode::RdmaReadResponseFirst, Psn::MAX - 1, 1024),
            (Opcode::RdmaReadResponseMiddle, Psn::MAX, 1024),
            (Opcode::RdmaReadResponseLast, 0, 512),
            (Opcode::Acknowledge, 1, 0),
        ]
    );
}

/// Replaying an old SEND packet does not deliver it again; the responder
/// acknowledges it.
#[test]
fn duplicate_send_is_acknowledged_not_delivered() {
    let mut sim = Sim::new(32, LinkConfig::default());
    sim.log = Some(Vec::new());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, base);
    let src = sim.mem_mut(na).register(SRC, vec![3; 100], Access::NONE);
    let rbuf = sim
        .mem_mut(nb)
        .register(RBUF, vec![0; 400], Access::LOCAL_WRITE);
    for i in 0..3 {
        sim.qp_mut(b)
            .post_recv(RecvWr {
                wr_id: i,
                sge: sge(rbuf, RBUF + 100 * i, 100),
            })
            .unwrap();
    }
    sim.qp_mut(a)
        .post_send(SendWr::send(1, sge(src, SRC, 100)))
        .unwrap();
    assert!(sim.run_quiet(LIMIT));
    assert_eq!(wr_ids(sim.done(b)), [0]);
    let send = sim.log.as_ref().unwrap()[0].2.clone();
    let acks = sim.qp(b).stats().tx_acks;
    let now = sim.now;
    let node = &mut sim.nodes[nb];
    node.qps[b.qp].handle_datagram(now, &send, &mut node.mem);
    node.qps[b.qp].handle_datagram(now, &send, &mut node.mem);
    assert!(sim.run_quiet(sim.elapsed() + LIMIT));
    assert_eq!(wr_ids(sim.done(b)), [0], "delivered twice");
    assert_eq!(sim.qp(b).stats().rx_duplicates, 2);
    assert_eq!(sim.qp(b).stats().tx_acks, acks + 1, "one coalesced ACK");
    assert_eq!(sim.qp(b).recv_queue_len(), 2);
    assert_eq!(&sim.mem(nb).bytes(rbuf).unwrap()[100..], &[0; 300]);
    assert_eq!(sim.qp(a).stats().rx_stale_responses, 1);
}

#[test]
fn local_errors() {
    // A SEND too long for the receive buffer: the receiver's completion says
    // local length error, the sender's remote invalid request.
    let mut sim = Sim::new(33, LinkConfig::default());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, base);
    let src = sim.mem_mut(na).register(SRC, vec![3; 5000], Access::NONE);
    let rbuf = sim
        .mem_mut(nb)
        .register(RBUF, vec![0; 8192], Access::LOCAL_WRITE);
    sim.qp_mut(b)
        .post_recv(RecvWr {
            wr_id: 9,
            sge: sge(rbuf, RBUF, 4000),
        })
        .unwrap();
    sim.qp_mut(b)
        .post_recv(RecvWr {
            wr_id: 10,
            sge: sge(rbuf, RBUF, 4000),
        })
        .unwrap();
    sim.qp_mut(a)
        .post_send(SendWr::send(1, sge(src, SRC, 5000)))
        .unwrap();
    assert!(sim.run_quiet(LIMIT));
    assert_eq!(statuses(sim.done(a)), [WcStatus::RemoteInvalidRequest]);
    assert_eq!(
        statuses(sim.done(b)),
        [WcStatus::LocalLengthError, WcStatus::Flushed]
    );
    assert_eq!(wr_ids(sim.done(b)), [9, 10]);
    // Nothing beyond the buffer was written.
    assert!(sim.mem(nb).bytes(rbuf).unwrap()[4000..]
        .iter()
        .all(|&x| x == 0));

    // A local source that is not registered, and a READ into a buffer without
    // LOCAL_WRITE.
    for case in 0..2 {
        let mut sim = Sim::new(34, LinkConfig::default());
        let (na, nb) = (sim.add_node(), sim.add_node());
        let (a, _) = sim.connect(na, nb, base);
        let mine = sim.mem_mut(na).register(SRC, vec![3; 100], Access::NONE);
        let theirs = sim.mem_mut(nb).register(SRC, vec![1; 100], Access::ALL);
        let wr = if case == 0 {
            SendWr::write(1, sge(mine + 2, SRC, 10), remote(theirs, SRC))
        } else {
            SendWr::read(1, sge(mine, SRC, 10), remote(theirs, SRC))
        };
        sim.qp_mut(a).post_send(wr).unwrap();
        sim.qp_mut(a)
            .post_send(SendWr::send(2, sge(mine, SRC, 10)))
            .unwrap();
        assert!(sim.run_quiet(LIMIT));
        assert_eq!(
            statuses(sim.done(a)),
            [WcStatus::LocalProtectionError, WcStatus::Flushed]
        );
        assert_eq!(sim.mem(na).bytes(mine).unwrap(), &[3; 100]);
    }
}

/// Moves datagrams between two queue pairs by hand until neither sends any.
fn pump(a: &mut Qp, ma: &mut VecMemory, b: &mut Qp, mb: &mut VecMemory, now: Instant) {
    let mut buf = vec![0; 65536];
    loop {
        let mut moved = false;
        while let Some(n) = a.poll_transmit(now, &mut buf, ma) {
            b.handle_datagram(now, &buf[..n], mb);
            moved = true;
        }
        while let Some(n) = b.poll_transmit(now, &mut buf, mb) {
            a.handle_datagram(now, &buf[..n], ma);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn queue_limits() {
    let (x, y): (SocketAddr, SocketAddr) = (
        "10.0.0.1:4791".parse().unwrap(),
        "10.0.0.2:4791".parse().unwrap(),
    );
    let qpn = |v| Qpn::new(v).unwrap();
    let mut ca = QpConfig::new(qpn(1), qpn(2), x, y);
    ca.sq_depth = 4;
    ca.rq_depth = 2;
    let mut a = Qp::new(ca).unwrap();
    let mut b = Qp::new(QpConfig::new(qpn(2), qpn(1), y, x)).unwrap();
    let (mut ma, mut mb) = (VecMemory::new(), VecMemory::new());
    let src = ma.register(SRC, vec![0; 64], Access::ALL);
    let tgt = mb.register(TARGET, vec![0; 64], Access::ALL);
    let write = |i| SendWr::write(i, sge(src, SRC, 8), remote(tgt, TARGET));
    for i in 0..4 {
        a.post_send(write(i)).unwrap();
    }
    assert_eq!(a.post_send(write(4)), Err(PostError::SendQueueFull));
    let r = RecvWr {
        wr_id: 0,
        sge: sge(src, SRC, 8),
    };
    a.post_recv(r).unwrap();
    a.post_recv(r).unwrap();
    assert_eq!(a.post_recv(r), Err(PostError::RecvQueueFull));
    // Completed but not polled: the slots are still taken.
    pump(&mut a, &mut ma, &mut b, &mut mb, Instant::now());
    assert_eq!(a.send_queue_len(), 0);
    assert_eq!(a.post_send(write(4)), Err(PostError::SendQueueFull));
    assert_eq!(
        a.poll_completion().map(|c| (c.wr_id, c.status)),
        Some((0, WcStatus::Success))
    );
    a.post_send(write(4)).unwrap();
    assert_eq!(a.post_send(write(5)), Err(PostError::SendQueueFull));
    // Too long for 2^20 packets of 1024 bytes.
    let max = a.config().max_msg_len();
    assert_eq!(max, 1 << 30);
    while a.poll_completion().is_some() {}
    let too_big = SendWr::read(9, sge(src, SRC, (1 << 30) + 1), remote(tgt, 0));
    assert_eq!(
        a.post_send(too_big),
        Err(PostError::TooLarge { len: max + 1, max })
    );
}

/// A held ACK is not sent, covers what arrives meanwhile (one cumulative
/// ACK), and goes once let go; READ responses are not held.
#[test]
fn held_acks_wait_and_coalesce() {
    let (x, y): (SocketAddr, SocketAddr) = (
        "10.0.0.1:4791".parse().unwrap(),
        "10.0.0.2:4791".parse().unwrap(),
    );
    let qpn = |v| Qpn::new(v).unwrap();
    let mut a = Qp::new(QpConfig::new(qpn(1), qpn(2), x, y)).unwrap();
    let mut b = Qp::new(QpConfig::new(qpn(2), qpn(1), y, x)).unwrap();
    let (mut ma, mut mb) = (VecMemory::new(), VecMemory::new());
    let src = ma.register(SRC, vec![7; 64], Access::ALL);
    let tgt = mb.register(TARGET, vec![0; 64], Access::ALL);
    let now = Instant::now();
    let mut buf = vec![0; 65536];
    let decode = |bytes: &[u8], from: SocketAddr, to: SocketAddr| {
        let p = Packet::decode(&IpUdp::new(from, to), bytes).unwrap();
        (p.bth.opcode, p.bth.psn.get())
    };
    b.hold_ack(true);
    for i in 0..3 {
        a.post_send(SendWr::write(i, sge(src, SRC, 8), remote(tgt, TARGET)))
            .unwrap();
        let n = a.poll_transmit(now, &mut buf, &ma).unwrap();
        b.handle_datagram(now, &buf[..n], &mut mb);
        assert!(b.poll_transmit(now, &mut buf, &mb).is_none(), "write {i}");
    }
    assert!(b.ack_held());
    // A READ is answered at once, ACK or not.
    a.post_send(SendWr::read(3, sge(src, SRC, 8), remote(tgt, TARGET)))
        .unwrap();
    let n = a.poll_transmit(now, &mut buf, &ma).unwrap();
    b.handle_datagram(now, &buf[..n], &mut mb);
    let n = b.poll_transmit(now, &mut buf, &mb).unwrap();
    assert_eq!(decode(&buf[..n], y, x), (Opcode::RdmaReadResponseOnly, 3));
    assert!(b.poll_transmit(now, &mut buf, &mb).is_none());
    // Let go: one cumulative ACK (the last PSN the responder took).
    a.handle_datagram(now, &buf[..n], &mut ma);
    b.hold_ack(false);
    assert!(!b.ack_held());
    let mut acks = Vec::new();
    while let Some(n) = b.poll_transmit(now, &mut buf, &mb) {
        acks.push(decode(&buf[..n], y, x));
        a.handle_datagram(now, &buf[..n], &mut ma);
    }
    assert_eq!(acks, [(Opcode::Acknowledge, 3)]);
    let done: Vec<u64> = std::iter::from_fn(|| a.poll_completion())
        .map(|c| c.wr_id)
        .collect();
    assert_eq!(done, [0, 1, 2, 3]);
    assert_eq!(mb.bytes(tgt).unwrap()[..8], [7; 8]);
}

/// A READ of a word, then a fenced WRITE to it: the READ returns the old value.
#[test]
fn fence_orders_a_write_after_a_read() {
    let mut sim = Sim::new(36, LinkConfig::default());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, _) = sim.connect(na, nb, base);
    let mine = sim.mem_mut(na).register(SRC, vec![9; 16], Access::ALL);
    let theirs = sim.mem_mut(nb).register(TARGET, vec![1; 8], Access::ALL);
    let qa = sim.qp_mut(a);
    qa.post_send(SendWr::read(1, sge(mine, SRC, 8), remote(theirs, TARGET)))
        .unwrap();
    qa.post_send(SendWr::write(2, sge(mine, SRC + 8, 8), remote(theirs, TARGET)).fenced())
        .unwrap();
    // Without the fence both would leave in the same step.
    let mut buf = vec![0; 8192];
    let now = sim.now;
    let node = &mut sim.nodes[na];
    assert!(node.qps[0]
        .poll_transmit(now, &mut buf, &node.mem)
        .is_some());
    assert!(node.qps[0]
        .poll_transmit(now, &mut buf, &node.mem)
        .is_none());
    assert!(sim.run_quiet(LIMIT));
    assert_eq!(statuses(sim.done(a)), [WcStatus::Success; 2]);
    assert_eq!(&sim.mem(na).bytes(mine).unwrap()[..8], &[1; 8]);
    assert_eq!(sim.mem(nb).bytes(theirs).unwrap(), &[9; 8]);
}

/// Random datagrams, and random variations of real packets resealed with a valid
/// ICRC (so that they reach the protocol logic), never make the engine panic, and
/// an ICRC failure is always counted as one.
#[test]
fn hostile_datagrams_never_panic() {
    let mut rng = Rng::new(37);
    let mut sim = Sim::new(37, LinkConfig::default());
    sim.log = Some(Vec::new());
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, |c| {
        base(c);
        c.mtu = Mtu::MTU_256;
    });
    let all = sim.mem_mut(nb).register(0, vec![0; 4096], Access::ALL);
    let mine = sim.mem_mut(na).register(0, vec![5; 4096], Access::ALL);
    for i in 0..4 {
        sim.qp_mut(b)
            .post_recv(RecvWr {
                wr_id: i,
                sge: sge(all, 0, 1024),
            })
            .unwrap();
    }
    let qa = sim.qp_mut(a);
    qa.post_send(SendWr::write(1, sge(mine, 0, 1000), remote(all, 0)))
        .unwrap();
    qa.post_send(SendWr::read(2, sge(mine, 0, 1000), remote(all, 0)))
        .unwrap();
    qa.post_send(SendWr::send_imm(3, sge(mine, 0, 600), 1))
        .unwrap();
    qa.post_send(SendWr::fetch_add(4, remote(all, 8), 1))
        .unwrap();
    assert!(sim.run_quiet(LIMIT));
    let real = sim.log.take().unwrap();
    let now = sim.now;
    let mut icrc_bad = 0;
    for round in 0..20_000 {
        let (from, to, orig) = &real[rng.below(real.len() as u64) as usize];
        let mut d = orig.clone();
        let reseal = round % 2 == 0;
        match rng.below(4) {
            0 => {
                let n = rng.below(80) as usize;
                d = rng.bytes(n);
            }
            1 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(d.len() as u64) as usize;
                    d[at] = rng.next_u64() as u8;
                }
            }
            2 => {
                // Keep the opcode valid, randomize the rest of the headers.
                let keep = d[0];
                for x in d.iter_mut().take(40) {
                    *x = rng.next_u64() as u8;
                }
                d[0] = keep & 0x1F;
                d[1] &= 0xF0;
            }
            _ => d.truncate(rng.below(d.len() as u64 + 1) as usize & !3),
        }
        let hdrs = IpUdp::new(sim.nodes[*from].addr, sim.nodes[*to].addr);
        if reseal && d.len() >= 16 {
            let n = d.len() - ICRC_LEN;
            let c = icrc::icrc(&hdrs, &d[..n]).unwrap();
            d[n..].copy_from_slice(&c.to_le_bytes());
        }
        if matches!(
            Packet::decode(&hdrs, &d),
            Err(crate::roce::wire::WireError::Icrc { .. })
        ) {
            icrc_bad += 1;
        }
        // Deliver to the addressed node's queue pair (whatever the BTH says).
        let node = &mut sim.nodes[*to];
        node.qps[0].handle_datagram(now, &d, &mut node.mem);
        let mut buf = vec![0; 4096];
        while node.qps[0]
            .poll_transmit(now, &mut buf, &node.mem)
            .is_some()
        {}
        while node.qps[0].poll_completion().is_some() {}
    }
    let s = |q: QpId| sim.qp(q).stats().clone();
    assert_eq!(s(a).rx_icrc_errors + s(b).rx_icrc_errors, icrc_bad);
    assert!(s(a).rx_malformed + s(b).rx_malformed > 0);
}

// ----- property tests (fixed seeds) -----

#[derive(Debug, Clone)]
enum Op {
    Write(usize, bool),
    Read(usize),
    Send(usize, bool),
    FetchAdd(u64),
    CompareSwap,
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..20_000, any::<bool>()).prop_map(|(n, imm)| Op::Write(n, imm)),
        (0usize..20_000).prop_map(Op::Read),
        (0usize..6_000, any::<bool>()).prop_map(|(n, imm)| Op::Send(n, imm)),
        (1u64..1000).prop_map(Op::FetchAdd),
        Just(Op::CompareSwap),
    ]
}

fn any_link() -> impl Strategy<Value = LinkConfig> {
    (
        0.0..0.15f64,
        0.0..0.08f64,
        0.0..0.08f64,
        1u64..8,
        0.0..0.03f64,
    )
        .prop_map(
            |(loss, duplicate, reorder, reorder_by, corrupt)| LinkConfig {
                loss,
                duplicate,
                reorder,
                reorder_by,
                corrupt,
            },
        )
}

fn prop_config(cases: u32, seed: u64) -> PropConfig {
    PropConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..PropConfig::default()
    }
}

/// Random work requests over a random network: each completes exactly once, in
/// posting order, successfully, with every byte where it belongs.
fn random_workload(
    seed: u64,
    link: LinkConfig,
    mtu: Mtu,
    window: u32,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(seed, link);
    let (na, nb) = (sim.add_node(), sim.add_node());
    let (a, b) = sim.connect(na, nb, |c| {
        base(c);
        c.mtu = mtu;
        c.window = window;
        c.ack_req_every = (window / 4).max(1);
    });
    const REGION: usize = 64 * KB;
    let a_src = sim.random_bytes(REGION);
    let b_src = sim.random_bytes(REGION);
    let ka_src = sim.mem_mut(na).register(SRC, a_src.clone(), Access::NONE);
    let ka_dst = sim
        .mem_mut(na)
        .register(DST, vec![0; REGION], Access::LOCAL_WRITE);
    let kb_src = sim
        .mem_mut(nb)
        .register(SRC, b_src.clone(), Access::REMOTE_READ);
    let kb_tgt = sim
        .mem_mut(nb)
        .register(TARGET, vec![0; REGION], Access::REMOTE_WRITE);
    let kb_rbuf = sim.mem_mut(nb).register(
        RBUF,
        vec![0; 8 * KB * ops.len().max(1)],
        Access::LOCAL_WRITE,
    );
    let kb_ctr = sim
        .mem_mut(nb)
        .register(0x7000, vec![0; 8], Access::REMOTE_ATOMIC);
    // Expected contents, computed alongside.
    let mut want_dst = vec![0u8; REGION];
    let mut want_tgt = vec![0u8; REGION];
    let mut want_rbuf = vec![0u8; 8 * KB * ops.len().max(1)];
    let mut want_recvs = Vec::new();
    let mut ctr = 0u64;
    let mut want_origs = Vec::new();
    let mut rng = Rng::new(seed ^ 0x5555);
    let mut recv_no = 0u64;
    for (i, op) in ops.iter().enumerate() {
        let i = i as u64;
        let off = |rng: &mut Rng, n: usize| rng.below((REGION - n + 1) as u64) as usize;
        let wr = match *op {
            Op::Write(n, imm) => {
                let (s, t) = (off(&mut rng, n), off(&mut rng, n));
                want_tgt[t..t + n].copy_from_slice(&a_src[s..s + n]);
                let local = sge(ka_src, SRC + s as u64, n);
                let to = remote(kb_tgt, TARGET + t as u64);
                if imm {
                    want_recvs.push((recv_no, WcOpcode::RecvRdmaWithImm, n as u32, Some(i as u32)));
                    recv_no += 1;
                    SendWr::write_imm(i, local, to, i as u32)
                } else {
                    SendWr::write(i, local, to)
                }
            }
            Op::Read(n) => {
                let (s, t) = (off(&mut rng, n), off(&mut rng, n));
                // Reads land in A's buffer: later ones overwrite earlier ones, and
                // reads complete in order.
                want_dst[t..t + n].copy_from_slice(&b_src[s..s + n]);
                SendWr::read(
                    i,
                    sge(ka_dst, DST + t as u64, n),
                    remote(kb_src, SRC + s as u64),
                )
            }
            Op::Send(n, imm) => {
                let s = off(&mut rng, n);
                let at = recv_no as usize * 8 * KB;
                want_rbuf[at..at + n].copy_from_slice(&a_src[s..s + n]);
                want_recvs.push((recv_no, WcOpcode::Recv, n as u32, imm.then_some(i as u32)));
                recv_no += 1;
                let local = sge(ka_src, SRC + s as u64, n);
                if imm {
                    SendWr::send_imm(i, local, i as u32)
                } else {
                    SendWr::send(i, local)
                }
            }
            Op::FetchAdd(x) => {
                want_origs.push(Some(ctr));
                ctr = ctr.wrapping_add(x);
                SendWr::fetch_add(i, remote(kb_ctr, 0x7000), x)
            }
            Op::CompareSwap => {
                // Alternately a compare that matches and one that does not.
                let compare = if i % 2 == 0 { ctr } else { ctr ^ 1 };
                want_origs.push(Some(ctr));
                ctr = AtomicOp::CompareSwap { compare, swap: i }.apply(ctr);
                SendWr::compare_swap(i, remote(kb_ctr, 0x7000), compare, i)
            }
        };
        if !matches!(op, Op::FetchAdd(_) | Op::CompareSwap) {
            want_origs.push(None);
        }
        sim.qp_mut(a).post_send(wr).unwrap();
    }
    for r in 0..recv_no {
        sim.qp_mut(b)
            .post_recv(RecvWr {
                wr_id: r,
                sge: sge(kb_rbuf, RBUF + r * 8 * KB as u64, 8 * KB),
            })
            .unwrap();
    }
    let n = ops.len();
    let finished = sim.run_until(LIMIT, |s| {
        s.done(a).len() == n && s.done(b).len() == want_recvs.len()
    });
    prop_assert!(
        finished,
        "stuck: {:?} {:?} {:?}",
        sim.done(a),
        sim.qp(a).stats(),
        sim.qp(b).stats()
    );
    prop_assert!(sim.run_quiet(sim.elapsed() + LIMIT));
    let d = sim.done(a);
    prop_assert_eq!(wr_ids(d), (0..n as u64).collect::<Vec<_>>());
    prop_assert!(d.iter().all(|c| c.status == WcStatus::Success), "{:?}", d);
    prop_assert_eq!(
        d.iter().map(|c| c.atomic_orig).collect::<Vec<_>>(),
        want_origs
    );
    let got_recvs: Vec<_> = sim
        .done(b)
        .iter()
        .map(|c| (c.wr_id, c.opcode, c.byte_len, c.imm))
        .collect();
    prop_assert_eq!(got_recvs, want_recvs);
    prop_assert!(sim.done(b).iter().all(|c| c.status == WcStatus::Success));
    prop_assert!(
        sim.mem(na).bytes(ka_dst).unwrap() == &want_dst[..],
        "READ data"
    );
    prop_assert!(
        sim.mem(nb).bytes(kb_tgt).unwrap() == &want_tgt[..],
        "WRITE data"
    );
    prop_assert!(
        sim.mem(nb).bytes(kb_rbuf).unwrap() == &want_rbuf[..],
        "SEND data"
    );
    prop_assert_eq!(sim.mem(nb).bytes(kb_ctr).unwrap(), &ctr.to_ne_bytes()[..]);
    Ok(())
}

proptest! {
    #![proptest_config(prop_config(64, 0x0D05_0001))]
    #[test]
    fn random_workloads_complete_exactly_once(
        seed in any::<u64>(),
        link in any_link(),
        mtu in prop_oneof![Just(Mtu::MTU_256), Just(Mtu::MTU_1024), Just(Mtu::MTU_4096)],
        window in prop_oneof![Just(1u32), Just(8), Just(64)],
        ops in proptest::collection::vec(any_op(), 1..12),
    ) {
        random_workload(seed, link, mtu, window, &ops)?;
    }
}

/// Heavy soak: 16 MiB each way under 20% loss with everything else. Run with
/// `cargo test -p dos-transport --release roce::sim -- --ignored`.
#[test]
#[ignore = "soak: minutes in debug builds; run in release"]
fn soak_large_transfers_under_heavy_loss() {
    let link = LinkConfig {
        loss: 0.20,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_by: 8,
        corrupt: 0.02,
    };
    for (seed, mtu) in [(100, Mtu::MTU_1024), (101, Mtu::MTU_4096)] {
        run_traffic(seed, link, 16 * MB, |c| {
            c.mtu = mtu;
            c.window = 32;
            c.ack_req_every = 8;
        });
    }
}

fn soak_cases() -> u32 {
    std::env::var("DOS_ROCE_SOAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn harsh_link() -> impl Strategy<Value = LinkConfig> {
    (0.0..0.3f64, 0.0..0.2f64, 0.0..0.2f64, 1u64..20, 0.0..0.1f64).prop_map(
        |(loss, duplicate, reorder, reorder_by, corrupt)| LinkConfig {
            loss,
            duplicate,
            reorder,
            reorder_by,
            corrupt,
        },
    )
}

proptest! {
    #![proptest_config(prop_config(soak_cases(), 0x0D05_0002))]
    /// The heavy version of the property test: `DOS_ROCE_SOAK_CASES` cases (300),
    /// harsher links, longer workloads. Run with `--ignored` in release.
    #[test]
    #[ignore = "soak: run in release"]
    fn soak_random_workloads(
        seed in any::<u64>(),
        link in harsh_link(),
        mtu in prop_oneof![Just(Mtu::MTU_256), Just(Mtu::MTU_1024), Just(Mtu::MTU_4096)],
        window in prop_oneof![Just(1u32), Just(8), Just(64), Just(256)],
        ops in proptest::collection::vec(any_op(), 1..40),
    ) {
        random_workload(seed, link, mtu, window, &ops)?;
    }
}
