//! Placement: which host runs which rank.
//!
//! A plan lists the job's nodes (hosts with slots) and maps every rank to a
//! node and a local rank on it. Today every rank runs on the local host;
//! `-H`/`--hostfile` will build multi-node plans with [`Plan::fill`], and the
//! supervisor and node agents only ever read a plan.

/// A node of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Host name as dosrun reaches it.
    pub host: String,
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

/// A host offered to the job and how many ranks it takes before the plan
/// moves on to the next host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSlots {
    /// Host name.
    pub host: String,
    /// Ranks it takes per round (at least 1).
    pub slots: usize,
}

/// The placement of every rank of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    nodes: Vec<Node>,
    ranks: Vec<Placement>,
}

impl Plan {
    /// `np` ranks, all on `host`.
    pub fn local(np: usize, host: &str) -> Plan {
        Plan::fill(
            np,
            &[HostSlots {
                host: host.to_string(),
                slots: np.max(1),
            }],
        )
    }

    /// Places `np` ranks by slot: fills each host's slots in order, then
    /// goes round again (oversubscribing) while ranks remain. Hosts that get
    /// no rank are not nodes of the job. Ranks of a node are consecutive
    /// within each round, so a node's local ranks follow rank order.
    pub fn fill(np: usize, hosts: &[HostSlots]) -> Plan {
        let mut per_host: Vec<Vec<usize>> = vec![Vec::new(); hosts.len()];
        let mut rank = 0;
        while rank < np && !hosts.is_empty() {
            for (h, hs) in hosts.iter().enumerate() {
                for _ in 0..hs.slots.max(1) {
                    if rank == np {
                        break;
                    }
                    per_host[h].push(rank);
                    rank += 1;
                }
            }
        }
        let mut nodes = Vec::new();
        let mut ranks = vec![
            Placement {
                rank: 0,
                node_id: 0,
                local_rank: 0,
            };
            rank
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
                host: hosts[h].host.clone(),
                ranks: rs,
            });
        }
        Plan { nodes, ranks }
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
    pub fn ranks(&self) -> &[Placement] {
        &self.ranks
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

    fn hs(host: &str, slots: usize) -> HostSlots {
        HostSlots {
            host: host.into(),
            slots,
        }
    }

    #[test]
    fn local_plan_puts_everything_on_one_node() {
        let p = Plan::local(4, "me");
        assert_eq!(p.size(), 4);
        assert_eq!(p.nodes().len(), 1);
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
    }

    #[test]
    fn fill_by_slot_and_oversubscribe() {
        let p = Plan::fill(7, &[hs("a", 2), hs("b", 1)]);
        assert_eq!(p.nodes()[0].ranks, [0, 1, 3, 4, 6]);
        assert_eq!(p.nodes()[1].ranks, [2, 5]);
        assert_eq!(p.ranks()[5].node_id, 1);
        assert_eq!(p.ranks()[5].local_rank, 1);
        assert_eq!(p.host_of(2), "b");
        // Hosts that get no rank are not nodes.
        let p = Plan::fill(2, &[hs("a", 2), hs("b", 2)]);
        assert_eq!(p.nodes().len(), 1);
        assert_eq!(p.host_of(9), "?");
        assert_eq!(Plan::fill(3, &[]).size(), 0);
    }
}
