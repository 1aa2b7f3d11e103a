//! Failure groups, partner map and XOR sets (sans-IO).
//!
//! A *failure group* is what fails as a unit: a node (the default), or a
//! single rank (`DOS_CKPT_GROUP=rank`, for testing redundancy on one host).
//! Ranks are described by the group each one is in (`groups[r]`); groups
//! are numbered by their lowest rank. Every function here is a pure function
//! of that vector, so every rank computes the same map without talking.
//!
//! * **Partner (L2)**: the copy of rank `r` goes to the rank with the same
//!   index within its group in the *next* group (groups in a ring), or the
//!   last rank of that group when it is smaller. With one group there is no
//!   partner (a copy on the same node protects nothing against its loss).
//! * **XOR sets (L3)**: the ranks with the same index within their groups,
//!   taken across `set_size` consecutive groups, form a set (SCR's scheme:
//!   members of a set are always in different groups). With fewer groups than
//!   `set_size`, one set spans all groups. A tail of one member is merged into
//!   the set before it; a rank that has no other member (groups of unequal
//!   sizes) is in no set and relies on L2/L4.

/// The ranks of each group, in rank order, groups ordered by lowest rank.
pub fn members(groups: &[usize]) -> Vec<Vec<usize>> {
    let mut ids: Vec<usize> = groups.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = vec![Vec::new(); ids.len()];
    for (r, g) in groups.iter().enumerate() {
        let k = ids.binary_search(g).expect("id of a listed group");
        out[k].push(r);
    }
    out
}

/// `(group index, index within the group)` of every rank.
fn positions(groups: &[usize]) -> (Vec<Vec<usize>>, Vec<(usize, usize)>) {
    let m = members(groups);
    let mut pos = vec![(0, 0); groups.len()];
    for (gi, g) in m.iter().enumerate() {
        for (li, &r) in g.iter().enumerate() {
            pos[r] = (gi, li);
        }
    }
    (m, pos)
}

/// The partner of every rank (who stores its copy), `None` with one group.
pub fn partners(groups: &[usize]) -> Vec<Option<usize>> {
    let (m, pos) = positions(groups);
    if m.len() < 2 {
        return vec![None; groups.len()];
    }
    pos.iter()
        .map(|&(gi, li)| {
            let next = &m[(gi + 1) % m.len()];
            Some(next[li.min(next.len() - 1)])
        })
        .collect()
}

/// The XOR sets: each a list of ranks in different groups (at least 2).
pub fn xor_sets(groups: &[usize], set_size: usize) -> Vec<Vec<usize>> {
    let (m, _) = positions(groups);
    let set_size = set_size.max(2);
    let widest = m.iter().map(Vec::len).max().unwrap_or(0);
    let mut sets = Vec::new();
    for li in 0..widest {
        // The ranks with index `li` in their group, group by group.
        let column: Vec<usize> = m.iter().filter_map(|g| g.get(li).copied()).collect();
        let mut chunks: Vec<Vec<usize>> = column.chunks(set_size).map(<[usize]>::to_vec).collect();
        if chunks.len() > 1 && chunks.last().is_some_and(|c| c.len() < 2) {
            let tail = chunks.pop().expect("a last chunk");
            chunks.last_mut().expect("a chunk before").extend(tail);
        }
        sets.extend(chunks.into_iter().filter(|c| c.len() >= 2));
    }
    sets
}

/// The set of rank `r` and its index in it, if any.
pub fn set_of(sets: &[Vec<usize>], r: usize) -> Option<(usize, usize)> {
    sets.iter()
        .enumerate()
        .find_map(|(s, m)| m.iter().position(|&x| x == r).map(|i| (s, i)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random group vectors: `n` ranks on nodes of random sizes.
    fn layouts() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(1usize..5, 1..9).prop_map(|sizes| {
            let mut g = Vec::new();
            for s in sizes {
                let first = g.len();
                g.extend(std::iter::repeat_n(first, s));
            }
            g
        })
    }

    #[test]
    fn one_group_has_no_partner_and_no_set() {
        assert_eq!(partners(&[0, 0, 0]), vec![None; 3]);
        assert!(xor_sets(&[0, 0, 0], 8).is_empty());
    }

    #[test]
    fn two_nodes_of_two_pair_up_across_nodes() {
        let g = [0, 0, 2, 2];
        assert_eq!(partners(&g), vec![Some(2), Some(3), Some(0), Some(1)]);
        assert_eq!(xor_sets(&g, 8), vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn sets_are_capped_by_the_set_size_and_a_lone_tail_is_merged() {
        let g: Vec<usize> = (0..5).collect(); // 5 groups of one rank
        assert_eq!(xor_sets(&g, 2), vec![vec![0, 1], vec![2, 3, 4]]);
        assert_eq!(xor_sets(&g, 8), vec![vec![0, 1, 2, 3, 4]]);
    }

    proptest! {
        #[test]
        fn partners_live_in_another_group(g in layouts()) {
            let p = partners(&g);
            let ngroups = members(&g).len();
            for (r, q) in p.iter().enumerate() {
                match q {
                    Some(q) => prop_assert!(ngroups > 1 && g[*q] != g[r]),
                    None => prop_assert_eq!(ngroups, 1),
                }
            }
        }

        #[test]
        fn set_members_are_in_distinct_groups_and_sets_are_disjoint(g in layouts(), s in 2usize..9) {
            let sets = xor_sets(&g, s);
            let mut seen = vec![false; g.len()];
            for set in &sets {
                prop_assert!(set.len() >= 2 && set.len() < 2 * s);
                let mut gs: Vec<usize> = set.iter().map(|&r| g[r]).collect();
                gs.sort_unstable();
                gs.dedup();
                prop_assert_eq!(gs.len(), set.len());
                for &r in set {
                    prop_assert!(!seen[r]);
                    seen[r] = true;
                }
            }
        }
    }
}
