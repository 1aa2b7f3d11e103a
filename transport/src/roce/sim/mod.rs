//! A deterministic simulated network for the RoCE engine (tests only).
//!
//! Nodes have an address, a [`VecMemory`] and queue pairs; datagrams that a queue
//! pair transmits travel to the node of its remote address and are handed to the
//! queue pair named by their BTH destination. Each datagram may be lost, corrupted
//! (1 to 3 bit flips anywhere, which the ICRC must catch), delayed behind up to
//! `reorder_by` later datagrams, and duplicated, decided by a fixed-seed PRNG: a run
//! is a pure function of its seed and inputs.
//!
//! Time is a simulated [`Instant`]: it advances by `tick` per datagram sent (the
//! serialization delay) and, when nothing is in flight and nothing can be sent, jumps
//! straight to the earliest timer of any queue pair. Nothing sleeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::engine::{dest_qpn, Completion, Qp, QpConfig, VecMemory};
use super::wire::Qpn;

/// SplitMix64: small, fast, and good enough to drive a simulation.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// How a link treats datagrams.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkConfig {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
    /// Probability that a datagram is delayed behind 1 to `reorder_by` later ones.
    pub reorder: f64,
    /// Largest delay of a reordered datagram, in datagrams.
    pub reorder_by: u64,
    /// Probability that 1 to 3 bits of a datagram are flipped.
    pub corrupt: f64,
}

impl LinkConfig {
    pub(crate) fn lossy(loss: f64) -> LinkConfig {
        LinkConfig {
            loss,
            ..LinkConfig::default()
        }
    }

    /// Every datagram is lost.
    pub(crate) fn cut() -> LinkConfig {
        LinkConfig::lossy(1.0)
    }
}

/// What the network did.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    pub delivered: u64,
    pub undeliverable: u64,
}

/// A host: its address, its memory and its queue pairs.
#[derive(Debug)]
pub(crate) struct Node {
    pub addr: SocketAddr,
    pub mem: VecMemory,
    pub qps: Vec<Qp>,
    /// Completions polled from each queue pair, in order.
    pub done: Vec<Vec<Completion>>,
}

/// A queue pair of the simulation: node index and queue pair index in the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QpId {
    pub node: usize,
    pub qp: usize,
}

#[derive(Debug)]
struct InFlight {
    to: usize,
    data: Vec<u8>,
}

/// The simulated network.
#[derive(Debug)]
pub(crate) struct Sim {
    pub start: Instant,
    pub now: Instant,
    /// Simulated time per datagram sent.
    pub tick: Duration,
    /// Datagrams a queue pair may send per step.
    pub burst: usize,
    pub link: LinkConfig,
    overrides: Vec<((usize, usize), LinkConfig)>,
    pub nodes: Vec<Node>,
    /// In flight, by (due, sequence): due is a count of datagrams sent.
    wire: BTreeMap<(u64, u64), InFlight>,
    clock: u64,
    seq: u64,
    rng: Rng,
    next_qpn: u32,
    buf: Vec<u8>,
    pub stats: SimStats,
    /// When set, every datagram transmitted: (from node, to node, bytes as sent).
    pub log: Option<Vec<(usize, usize, Vec<u8>)>>,
}

impl Sim {
    pub(crate) fn new(seed: u64, link: LinkConfig) -> Sim {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            tick: Duration::from_micros(1),
            burst: 8,
            link,
            overrides: Vec::new(),
            nodes: Vec::new(),
            wire: BTreeMap::new(),
            clock: 0,
            seq: 0,
            rng: Rng::new(seed),
            next_qpn: 0x11,
            buf: vec![0; 65536],
            stats: SimStats::default(),
            log: None,
        }
    }

    /// Adds a node at 10.0.0.(n+1):4791; returns its index.
    pub(crate) fn add_node(&mut self) -> usize {
        let n = self.nodes.len();
        let addr = SocketAddr::from(([10, 0, 0, n as u8 + 1], 4791));
        self.nodes.push(Node {
            addr,
            mem: VecMemory::new(),
            qps: Vec::new(),
            done: Vec::new(),
        });
        n
    }

    /// Connects a new queue pair on node `a` with a new one on node `b`. `f` adjusts
    /// both configurations (its `send_psn` is then each side's first PSN, and the
    /// other side's `recv_psn` is set to match).
    pub(crate) fn connect(
        &mut self,
        a: usize,
        b: usize,
        f: impl Fn(&mut QpConfig),
    ) -> (QpId, QpId) {
        let qa = Qpn::new(self.next_qpn).unwrap();
        let qb = Qpn::new(self.next_qpn + 1).unwrap();
        self.next_qpn += 2;
        let (aa, ab) = (self.nodes[a].addr, self.nodes[b].addr);
        let mut ca = QpConfig::new(qa, qb, aa, ab);
        let mut cb = QpConfig::new(qb, qa, ab, aa);
        f(&mut ca);
        f(&mut cb);
        cb.recv_psn = ca.send_psn;
        ca.recv_psn = cb.send_psn;
        let ia = self.add_qp(a, ca);
        let ib = self.add_qp(b, cb);
        (ia, ib)
    }

    fn add_qp(&mut self, node: usize, cfg: QpConfig) -> QpId {
        let n = &mut self.nodes[node];
        n.qps.push(Qp::new(cfg).expect("valid configuration"));
        n.done.push(Vec::new());
        QpId {
            node,
            qp: n.qps.len() - 1,
        }
    }

    pub(crate) fn qp(&self, id: QpId) -> &Qp {
        &self.nodes[id.node].qps[id.qp]
    }

    pub(crate) fn qp_mut(&mut self, id: QpId) -> &mut Qp {
        &mut self.nodes[id.node].qps[id.qp]
    }

    pub(crate) fn mem(&self, node: usize) -> &VecMemory {
        &self.nodes[node].mem
    }

    pub(crate) fn mem_mut(&mut self, node: usize) -> &mut VecMemory {
        &mut self.nodes[node].mem
    }

    /// The completions polled so far from `id`.
    pub(crate) fn done(&self, id: QpId) -> &[Completion] {
        &self.nodes[id.node].done[id.qp]
    }

    /// Sets how datagrams from node `from` to node `to` are treated.
    pub(crate) fn set_link(&mut self, from: usize, to: usize, cfg: LinkConfig) {
        self.overrides.retain(|(k, _)| *k != (from, to));
        self.overrides.push(((from, to), cfg));
    }

    fn link_for(&self, from: usize, to: usize) -> LinkConfig {
        self.overrides
            .iter()
            .find(|(k, _)| *k == (from, to))
            .map_or(self.link, |(_, c)| *c)
    }

    /// Simulated time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn put(&mut self, from: usize, to: usize, data: &[u8]) {
        let cfg = self.link_for(from, to);
        if let Some(log) = &mut self.log {
            log.push((from, to, data.to_vec()));
        }
        self.stats.sent += 1;
        self.clock += 1;
        if self.rng.chance(cfg.loss) {
            self.stats.lost += 1;
            return;
        }
        let mut data = data.to_vec();
        if self.rng.chance(cfg.corrupt) {
            self.stats.corrupted += 1;
            for _ in 0..=self.rng.below(3) {
                let bit = self.rng.below(data.len() as u64 * 8) as usize;
                data[bit / 8] ^= 1 << (bit % 8);
            }
        }
        let mut due = self.clock;
        if cfg.reorder_by > 0 && self.rng.chance(cfg.reorder) {
            self.stats.reordered += 1;
            due += 1 + self.rng.below(cfg.reorder_by);
        }
        if self.rng.chance(cfg.duplicate) {
            self.stats.duplicated += 1;
            let later = due + self.rng.below(cfg.reorder_by + 1);
            self.seq += 1;
            self.wire.insert(
                (later, self.seq),
                InFlight {
                    to,
                    data: data.clone(),
                },
            );
        }
        self.seq += 1;
        self.wire.insert((due, self.seq), InFlight { to, data });
    }

    fn deliver(&mut self, f: InFlight) {
        let now = self.now;
        let node = &mut self.nodes[f.to];
        let target =
            dest_qpn(&f.data).and_then(|q| node.qps.iter().position(|qp| qp.config().qpn == q));
        match target {
            Some(i) => {
                self.stats.delivered += 1;
                node.qps[i].handle_datagram(now, &f.data, &mut node.mem);
            }
            None => self.stats.undeliverable += 1,
        }
    }

    /// One round: expired timers, up to `burst` datagrams from every queue pair,
    /// delivery of everything due, completions. Returns whether anything happened.
    pub(crate) fn step(&mut self) -> bool {
        let mut active = false;
        let now = self.now;
        for node in &mut self.nodes {
            for qp in &mut node.qps {
                if qp.poll_timeout().is_some_and(|t| t <= now) {
                    qp.handle_timeout(now);
                    active = true;
                }
            }
        }
        let mut out = Vec::new();
        for (n, node) in self.nodes.iter_mut().enumerate() {
            for qp in &mut node.qps {
                for _ in 0..self.burst {
                    match qp.poll_transmit(now, &mut self.buf, &node.mem) {
                        Some(len) => out.push((n, qp.config().remote, self.buf[..len].to_vec())),
                        None => break,
                    }
                }
            }
        }
        let sent = out.len() as u32;
        for (from, to_addr, data) in out {
            match self.nodes.iter().position(|n| n.addr == to_addr) {
                Some(to) => self.put(from, to, &data),
                None => self.stats.undeliverable += 1,
            }
        }
        while let Some(e) = self.wire.first_entry() {
            if e.key().0 > self.clock {
                break;
            }
            let f = e.remove();
            self.deliver(f);
            active = true;
        }
        for node in &mut self.nodes {
            for (qp, done) in node.qps.iter_mut().zip(&mut node.done) {
                while let Some(c) = qp.poll_completion() {
                    done.push(c);
                    active = true;
                }
            }
        }
        if sent > 0 {
            active = true;
            self.now += self.tick * sent;
        }
        active
    }

    /// Nothing happened in the last step: release delayed datagrams, or jump to the
    /// earliest timer. Returns false when there is nothing left to happen at all.
    fn idle(&mut self) -> bool {
        if let Some((&(due, _), _)) = self.wire.last_key_value() {
            self.clock = self.clock.max(due);
            return true;
        }
        let next = self
            .nodes
            .iter()
            .flat_map(|n| n.qps.iter().filter_map(|q| q.poll_timeout()))
            .min();
        match next {
            Some(t) => {
                self.now = self.now.max(t);
                true
            }
            None => false,
        }
    }

    /// Runs until `done` holds (true), or simulated time passes `limit` or nothing is
    /// left to happen (false).
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.elapsed() > limit {
                return false;
            }
            if !self.step() && !self.idle() {
                return done(self);
            }
        }
    }

    /// Runs until nothing is left to happen or `limit` passes; returns whether it
    /// became quiet.
    pub(crate) fn run_quiet(&mut self, limit: Duration) -> bool {
        loop {
            if self.elapsed() > limit {
                return false;
            }
            if !self.step() && !self.idle() {
                return true;
            }
        }
    }

    /// Random bytes from the simulation's PRNG.
    pub(crate) fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        self.rng.bytes(n)
    }
}

#[cfg(test)]
mod tests;
