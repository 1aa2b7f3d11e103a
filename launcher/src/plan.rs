//! Placement: which host runs which rank, in Open MPI's conventions.
//!
//! A plan lists the job's nodes (hosts that got at least one rank) and maps
//! every rank to a node and a local rank on it. [`Plan::build`] is a pure
//! function of the hosts (with their slots, from `hosts`) and the request:
//!
//! * `--map-by slot` (default): fill each host's slots in order, then the
//!   next host's;
//! * `--map-by node`: one rank per host in turn, skipping hosts whose slots
//!   are full;
//! * `-N n`: at most `n` ranks on every host (and by default `n` times the
//!   number of hosts);
//! * more ranks than slots is an error unless `--oversubscribe`; then the
//!   extra ranks go round the hosts again (by slot: `slots` more per host
//!   and round; by node: one more per host and round). `max_slots` is a
//!   limit even then.
//!
//! The ranks of a node are in increasing order, so local ranks follow rank
//! order. The supervisor, and the node agents that start remote ranks, only
//! ever read a plan: [`Plan::nodes`] gives every node's host and ranks (the
//! index in a node's ranks is the local rank), which `start` starts.

use crate::hosts::{Host, HostKind};

/// Most ranks one job may have.
pub const MAX_RANKS: usize = 1 << 20;

/// A node of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Host name as dosrun reaches it (for the local node: this machine's
    /// host name).
    pub host: String,
    /// Whether it is the machine dosrun runs on.
    pub local: bool,
    /// The ranks placed on it, in increasing order; `ranks[i]` has local rank `i`.
    pub ranks: Vec<usize>,
}

/// Where one rank runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Rank in the job.
    pub rank: usize,
    /// Index of its node in [`Plan::nodes`] (`DOS_NODE_ID`).
    pub node_id: usize,
    /// Rank among the ranks of its node (`DOS_LOCAL_RANK`).
    pub local_rank: usize,
}

/// How ranks are spread over hosts (`--map-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MapBy {
    /// Fill each host's slots before the next host (`slot`).
    #[default]
    Slot,
    /// Round-robin over hosts (`node`).
    Node,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    /// Number of ranks (`-n`); `None`: `-N` times the hosts, or every slot.
    pub np: Option<usize>,
    /// Ranks per host (`-N`).
    pub per_node: Option<usize>,
    /// `--map-by`.
    pub map_by: MapBy,
    /// `--oversubscribe`: hosts may get more ranks than slots.
    pub oversubscribe: bool,
}

/// Why ranks cannot be placed. Each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No host was given.
    #[error("no hosts to place ranks on")]
    NoHosts,
    /// More ranks than slots, without `--oversubscribe`.
    #[error(
        "{np} ranks but only {slots} slot(s) on the hosts (give more slots, or --oversubscribe)"
    )]
    NotEnoughSlots {
        /// Ranks asked for.
        np: usize,
        /// Slots of all hosts.
        slots: usize,
    },
    /// More ranks than the hosts' `max_slots` allow, even oversubscribed.
    #[error("{np} ranks but the hosts' max_slots allow only {max}")]
    MaxSlots {
        /// Ranks asked for.
        np: usize,
        /// Sum of the hosts' limits.
        max: usize,
    },
    /// `-N` more than a host's slots, without `--oversubscribe`.
    #[error(
        "-N {per_node}: host {host} has only {slots} slot(s) (give more slots, or --oversubscribe)"
    )]
    PerNodeSlots {
        /// `-N`.
        per_node: usize,
        /// The host.
        host: String,
        /// Its slots.
        slots: usize,
    },
    /// `-N` more than a host's `max_slots`.
    #[error("-N {per_node}: host {host} allows at most {max} ranks (max_slots)")]
    PerNodeMax {
        /// `-N`.
        per_node: usize,
        /// The host.
        host: String,
        /// Its limit.
        max: usize,
    },
    /// More ranks than `-N` times the hosts.
    #[error("{np} ranks do not fit {per_node} per host on {hosts} host(s)")]
    PerNodeTooFew {
        /// Ranks asked for.
        np: usize,
        /// `-N`.
        per_node: usize,
        /// Number of hosts.
        hosts: usize,
    },
}

/// The placement of every rank of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    nodes: Vec<Node>,
    ranks: Vec<Placement>,
}

impl Plan {
    /// `np` ranks, all on this machine, named `host`.
    #[cfg(test)]
    pub fn local(np: usize, host: &str) -> Plan {
        let h = Host {
            name: host.to_string(),
            kind: HostKind::Local,
            slots: np.max(1),
            max_slots: None,
        };
        Plan::from_lists(&[h], vec![(0..np).collect()])
    }

    /// Places the ranks of `req` on `hosts` (see the module documentation).
    pub fn build(hosts: &[Host], req: Request) -> Result<Plan, PlanError> {
        if hosts.is_empty() {
            return Err(PlanError::NoHosts);
        }
        // The most ranks each host may get.
        let mut cap = Vec::with_capacity(hosts.len());
        for h in hosts {
            let limit = h.max_slots.unwrap_or(usize::MAX);
            cap.push(match req.per_node {
                Some(n) => {
                    if n > h.slots && !req.oversubscribe {
                        return Err(PlanError::PerNodeSlots {
                            per_node: n,
                            host: h.name.clone(),
                            slots: h.slots,
                        });
                    }
                    if n > limit {
                        return Err(PlanError::PerNodeMax {
                            per_node: n,
                            host: h.name.clone(),
                            max: limit,
                        });
                    }
                    n
                }
                None if req.oversubscribe => limit,
                None => h.slots.min(limit),
            });
        }
        let total_cap = cap.iter().fold(0usize, |a, &c| a.saturating_add(c));
        let total_slots = hosts.iter().fold(0usize, |a, h| a.saturating_add(h.slots));
        let np = match (req.np, req.per_node) {
            (Some(np), _) => np,
            (None, Some(_)) => total_cap,
            (None, None) => total_slots,
        };
        if np > total_cap {
            return Err(match req.per_node {
                Some(n) => PlanError::PerNodeTooFew {
                    np,
                    per_node: n,
                    hosts: hosts.len(),
                },
                None if req.oversubscribe => PlanError::MaxSlots { np, max: total_cap },
                None => PlanError::NotEnoughSlots {
                    np,
                    slots: total_slots,
                },
            });
        }
        // First the slots, then (oversubscribed) up to the caps.
        let first: Vec<usize> = hosts
            .iter()
            .zip(&cap)
            .map(|(h, &c)| h.slots.min(c))
            .collect();
        // Ranks are numbered in the order they are handed out.
        let mut per_host: Vec<Vec<usize>> = vec![Vec::new(); hosts.len()];
        let mut next = 0;
        for limit in [&first, &cap] {
            let quantum = |h: usize| match req.map_by {
                MapBy::Slot => hosts[h].slots.max(1),
                MapBy::Node => 1,
            };
            let mut active: Vec<usize> = (0..hosts.len()).collect();
            while next < np {
                active.retain(|&h| per_host[h].len() < limit[h]);
                if active.is_empty() {
                    break;
                }
                for &h in &active {
                    let take = quantum(h).min(limit[h] - per_host[h].len()).min(np - next);
                    per_host[h].extend(next..next + take);
                    next += take;
                    if next == np {
                        break;
                    }
                }
            }
        }
        debug_assert_eq!(next, np);
        Ok(Plan::from_lists(hosts, per_host))
    }

    fn from_lists(hosts: &[Host], per_host: Vec<Vec<usize>>) -> Plan {
        let total: usize = per_host.iter().map(Vec::len).sum();
        let mut nodes = Vec::new();
        let mut ranks = vec![
            Placement {
                rank: 0,
                node_id: 0,
                local_rank: 0,
            };
            total
        ];
        for (h, rs) in per_host.into_iter().enumerate() {
            if rs.is_empty() {
                continue;
            }
            let node_id = nodes.len();
            for (local_rank, &r) in rs.iter().enumerate() {
                ranks[r] = Placement {
                    rank: r,
                    node_id,
                    local_rank,
                };
            }
            nodes.push(Node {
                host: hosts[h].name.clone(),
                local: hosts[h].kind == HostKind::Local,
                ranks: rs,
            });
        }
        Plan { nodes, ranks }
    }

    /// A plan of the given nodes, each with its ranks (sorted here), as
    /// `restart` rearranges them; `None` unless the ranks are exactly
    /// `0..n`, each once. Nodes without ranks are dropped.
    pub fn from_nodes(nodes: Vec<Node>) -> Option<Plan> {
        let mut nodes: Vec<Node> = nodes.into_iter().filter(|n| !n.ranks.is_empty()).collect();
        let total: usize = nodes.iter().map(|n| n.ranks.len()).sum();
        let mut ranks: Vec<Option<Placement>> = vec![None; total];
        for (node_id, n) in nodes.iter_mut().enumerate() {
            n.ranks.sort_unstable();
            for (local_rank, &r) in n.ranks.iter().enumerate() {
                let slot = ranks.get_mut(r)?;
                if slot.is_some() {
                    return None;
                }
                *slot = Some(Placement {
                    rank: r,
                    node_id,
                    local_rank,
                });
            }
        }
        let ranks = ranks.into_iter().collect::<Option<Vec<_>>>()?;
        Some(Plan { nodes, ranks })
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.ranks.len()
    }

    /// The nodes of the job.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every rank's placement, indexed by rank.
    #[allow(dead_code)] // dosrun starts ranks node by node; kept for callers that need a rank's node.
    pub fn ranks(&self) -> &[Placement] {
        &self.ranks
    }

    /// The placements of the ranks of `node_id`, in local-rank order (the
    /// tests' view of a node; `start` reads [`Node::ranks`]).
    #[cfg(test)]
    pub fn node_placements(&self, node_id: usize) -> impl Iterator<Item = Placement> + '_ {
        self.nodes
            .get(node_id)
            .map_or(&[][..], |n| &n.ranks[..])
            .iter()
            .filter_map(|&r| self.ranks.get(r).copied())
    }

    /// Number of ranks on `node_id`'s node (`DOS_LOCAL_SIZE`).
    pub fn local_size(&self, node_id: usize) -> usize {
        self.nodes.get(node_id).map_or(0, |n| n.ranks.len())
    }

    /// The host of `rank`.
    pub fn host_of(&self, rank: usize) -> &str {
        self.ranks
            .get(rank)
            .and_then(|p| self.nodes.get(p.node_id))
            .map_or("?", |n| n.host.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(name: &str, slots: usize, max_slots: Option<usize>) -> Host {
        Host {
            name: name.into(),
            kind: if name == "me" {
                HostKind::Local
            } else {
                HostKind::Remote
            },
            slots,
            max_slots,
        }
    }

    #[test]
    fn from_nodes_needs_every_rank_once() {
        let node = |h: &str, ranks: Vec<usize>| Node {
            host: h.into(),
            local: false,
            ranks,
        };
        let p = Plan::from_nodes(vec![
            node("a", vec![3, 0]),
            node("b", vec![]),
            node("c", vec![1, 2]),
        ])
        .unwrap();
        assert_eq!(p.nodes().len(), 2);
        assert_eq!(p.nodes()[0].ranks, [0, 3]);
        assert_eq!(p.ranks()[3].node_id, 0);
        assert_eq!(p.ranks()[3].local_rank, 1);
        assert_eq!(p.host_of(2), "c");
        assert!(Plan::from_nodes(vec![node("a", vec![0, 0])]).is_none());
        assert!(Plan::from_nodes(vec![node("a", vec![0, 2])]).is_none());
        assert!(Plan::from_nodes(vec![node("a", vec![1]), node("b", vec![1])]).is_none());
    }

    fn req(np: Option<usize>) -> Request {
        Request {
            np,
            ..Request::default()
        }
    }

    fn lists(p: &Plan) -> Vec<(String, Vec<usize>)> {
        p.nodes()
            .iter()
            .map(|n| (n.host.clone(), n.ranks.clone()))
            .collect()
    }

    fn l(host: &str, ranks: &[usize]) -> (String, Vec<usize>) {
        (host.to_string(), ranks.to_vec())
    }

    #[test]
    fn local_plan_puts_everything_on_one_node() {
        let p = Plan::local(4, "me");
        assert_eq!(p.size(), 4);
        assert_eq!(p.nodes().len(), 1);
        assert!(p.nodes()[0].local);
        assert_eq!(p.local_size(0), 4);
        for (r, pl) in p.ranks().iter().enumerate() {
            assert_eq!(
                *pl,
                Placement {
                    rank: r,
                    node_id: 0,
                    local_rank: r
                }
            );
            assert_eq!(p.host_of(r), "me");
        }
        assert_eq!(p.host_of(4), "?");
    }

    #[test]
    fn by_slot_fills_hosts_in_order() {
        let hs = [host("a", 2, None), host("b", 3, None), host("c", 1, None)];
        let p = Plan::build(&hs, req(Some(4))).unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 1]), l("b", &[2, 3])]);
        assert_eq!(p.ranks()[3].node_id, 1);
        assert_eq!(p.ranks()[3].local_rank, 1);
        assert!(!p.nodes()[0].local);
        // -n defaults to every slot.
        let p = Plan::build(&hs, req(None)).unwrap();
        assert_eq!(p.size(), 6);
        assert_eq!(
            lists(&p),
            [l("a", &[0, 1]), l("b", &[2, 3, 4]), l("c", &[5])]
        );
        let placed: Vec<Placement> = p.node_placements(1).collect();
        assert_eq!(
            placed,
            [2, 3, 4]
                .iter()
                .enumerate()
                .map(|(i, &r)| Placement {
                    rank: r,
                    node_id: 1,
                    local_rank: i
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(p.node_placements(9).count(), 0);
    }

    #[test]
    fn by_node_goes_round_robin_skipping_full_hosts() {
        let hs = [host("a", 3, None), host("b", 1, None), host("c", 2, None)];
        let r = Request {
            map_by: MapBy::Node,
            ..req(None)
        };
        let p = Plan::build(&hs, r).unwrap();
        assert_eq!(
            lists(&p),
            [l("a", &[0, 3, 5]), l("b", &[1]), l("c", &[2, 4])]
        );
        let p = Plan::build(&hs, Request { np: Some(2), ..r }).unwrap();
        assert_eq!(lists(&p), [l("a", &[0]), l("b", &[1])]);
    }

    #[test]
    fn too_many_ranks_needs_oversubscribe() {
        let hs = [host("a", 2, None), host("b", 1, None)];
        let e = Plan::build(&hs, req(Some(4))).unwrap_err();
        assert_eq!(e, PlanError::NotEnoughSlots { np: 4, slots: 3 });
        assert_eq!(
            e.to_string(),
            "4 ranks but only 3 slot(s) on the hosts (give more slots, or --oversubscribe)"
        );
        let over = Request {
            oversubscribe: true,
            ..req(Some(7))
        };
        let p = Plan::build(&hs, over).unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 1, 3, 4, 6]), l("b", &[2, 5])]);
        let p = Plan::build(
            &hs,
            Request {
                map_by: MapBy::Node,
                ..over
            },
        )
        .unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 2, 3, 5]), l("b", &[1, 4, 6])]);
    }

    #[test]
    fn max_slots_holds_even_when_oversubscribed() {
        let hs = [host("a", 1, Some(2)), host("b", 1, None)];
        let over = Request {
            oversubscribe: true,
            ..req(Some(5))
        };
        let p = Plan::build(&hs, over).unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 2]), l("b", &[1, 3, 4])]);
        let hs = [host("a", 1, Some(2)), host("b", 1, Some(1))];
        assert_eq!(
            Plan::build(&hs, over),
            Err(PlanError::MaxSlots { np: 5, max: 3 })
        );
    }

    #[test]
    fn ranks_per_node() {
        let hs = [host("a", 4, None), host("b", 4, None), host("c", 4, None)];
        let n2 = Request {
            per_node: Some(2),
            ..req(None)
        };
        let p = Plan::build(&hs, n2).unwrap();
        assert_eq!(
            lists(&p),
            [l("a", &[0, 1]), l("b", &[2, 3]), l("c", &[4, 5])]
        );
        let p = Plan::build(&hs, Request { np: Some(3), ..n2 }).unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 1]), l("b", &[2])]);
        let p = Plan::build(
            &hs,
            Request {
                map_by: MapBy::Node,
                np: Some(5),
                ..n2
            },
        )
        .unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 3]), l("b", &[1, 4]), l("c", &[2])]);
        assert_eq!(
            Plan::build(&hs, Request { np: Some(7), ..n2 }),
            Err(PlanError::PerNodeTooFew {
                np: 7,
                per_node: 2,
                hosts: 3
            })
        );
        let n5 = Request {
            per_node: Some(5),
            ..req(None)
        };
        assert!(matches!(
            Plan::build(&hs, n5),
            Err(PlanError::PerNodeSlots {
                per_node: 5,
                slots: 4,
                ..
            })
        ));
        let p = Plan::build(
            &hs,
            Request {
                oversubscribe: true,
                ..n5
            },
        )
        .unwrap();
        assert_eq!(p.size(), 15);
        assert!(p.nodes().iter().all(|n| n.ranks.len() == 5));
        let capped = [host("a", 1, Some(1))];
        assert!(matches!(
            Plan::build(
                &capped,
                Request {
                    oversubscribe: true,
                    per_node: Some(2),
                    ..req(None)
                }
            ),
            Err(PlanError::PerNodeMax { max: 1, .. })
        ));
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(Plan::build(&[], req(Some(1))), Err(PlanError::NoHosts));
        let p = Plan::build(&[host("a", 2, None)], req(Some(0))).unwrap();
        assert_eq!(p.size(), 0);
        assert!(p.nodes().is_empty());
        // Huge counts saturate instead of overflowing.
        let big = [host("a", usize::MAX, None), host("b", usize::MAX, None)];
        let p = Plan::build(&big, req(Some(3))).unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 1, 2])]);
        let p = Plan::build(
            &big,
            Request {
                map_by: MapBy::Node,
                oversubscribe: true,
                ..req(Some(3))
            },
        )
        .unwrap();
        assert_eq!(lists(&p), [l("a", &[0, 2]), l("b", &[1])]);
        for e in [
            PlanError::NoHosts,
            PlanError::MaxSlots { np: 1, max: 0 },
            PlanError::PerNodeMax {
                per_node: 2,
                host: "h".into(),
                max: 1,
            },
        ] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    fn hosts_strategy() -> impl Strategy<Value = Vec<Host>> {
        prop::collection::vec((1usize..6, prop::option::of(0usize..4)), 1..6).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (slots, extra))| host(&format!("h{i}"), slots, extra.map(|e| slots + e)))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn every_rank_is_placed_once_within_limits(
            hosts in hosts_strategy(),
            np in prop::option::of(0usize..40),
            per_node in prop::option::of(1usize..7),
            by_node in any::<bool>(),
            oversubscribe in any::<bool>(),
        ) {
            let r = Request {
                np,
                per_node,
                map_by: if by_node { MapBy::Node } else { MapBy::Slot },
                oversubscribe,
            };
            let slots: usize = hosts.iter().map(|h| h.slots).sum();
            match Plan::build(&hosts, r) {
                Ok(p) => {
                    if let Some(np) = np {
                        prop_assert_eq!(p.size(), np);
                    }
                    let mut seen = vec![0u32; p.size()];
                    for (id, n) in p.nodes().iter().enumerate() {
                        prop_assert!(!n.ranks.is_empty());
                        prop_assert!(n.ranks.windows(2).all(|w| w[0] < w[1]));
                        let h = hosts.iter().find(|h| h.name == n.host).unwrap();
                        if !oversubscribe {
                            prop_assert!(n.ranks.len() <= h.slots);
                        }
                        if let Some(m) = h.max_slots {
                            prop_assert!(n.ranks.len() <= m);
                        }
                        if let Some(k) = per_node {
                            prop_assert!(n.ranks.len() <= k);
                        }
                        for (i, &rank) in n.ranks.iter().enumerate() {
                            seen[rank] += 1;
                            prop_assert_eq!(
                                p.ranks()[rank],
                                Placement { rank, node_id: id, local_rank: i }
                            );
                            prop_assert_eq!(p.host_of(rank), n.host.as_str());
                        }
                        prop_assert_eq!(p.node_placements(id).count(), n.ranks.len());
                    }
                    prop_assert!(seen.iter().all(|&c| c == 1));
                    // Without oversubscription, by slot, hosts fill in order.
                    if !oversubscribe && !by_node && per_node.is_none() {
                        let mut partial = false;
                        for h in &hosts {
                            let got = p.nodes().iter().find(|n| n.host == h.name)
                                .map_or(0, |n| n.ranks.len());
                            prop_assert!(!partial || got == 0);
                            partial |= got < h.slots;
                        }
                    }
                }
                Err(e) => {
                    let want = np.unwrap_or(0);
                    match e {
                        PlanError::NotEnoughSlots { np: n, slots: s } => {
                            prop_assert!(!oversubscribe);
                            prop_assert_eq!(s, slots);
                            prop_assert!(n > s);
                            prop_assert_eq!(n, want);
                        }
                        PlanError::MaxSlots { np: n, max } => {
                            prop_assert!(oversubscribe);
                            let m: usize = hosts.iter().map(|h| h.max_slots.unwrap_or(usize::MAX)).fold(0, usize::saturating_add);
                            prop_assert_eq!(max, m);
                            prop_assert!(n > m);
                        }
                        PlanError::PerNodeSlots { per_node: k, slots: s, .. } => {
                            prop_assert!(!oversubscribe);
                            prop_assert!(k > s);
                        }
                        PlanError::PerNodeMax { per_node: k, max, .. } => prop_assert!(k > max),
                        PlanError::PerNodeTooFew { np: n, per_node: k, hosts: c } => {
                            prop_assert!(n > k * c);
                        }
                        PlanError::NoHosts => prop_assert!(false, "hosts were given"),
                    }
                }
            }
        }

        #[test]
        fn enough_slots_always_place(hosts in hosts_strategy(), extra in 0usize..3) {
            let slots: usize = hosts.iter().map(|h| h.slots).sum();
            let np = slots.saturating_sub(extra);
            prop_assert!(Plan::build(&hosts, req(Some(np))).is_ok());
            let by_node = Request { map_by: MapBy::Node, ..req(Some(np)) };
            prop_assert!(Plan::build(&hosts, by_node).is_ok());
        }
    }
}
