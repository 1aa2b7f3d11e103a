//! The restart plan (sans-IO): from what each current rank can read of a
//! checkpoint written by `n` ranks, where each old rank's files come from.

/// Availability bits a current rank reports for an old rank.
pub mod have {
    /// Its own files (L1), checked against the manifest.
    pub const OWN: u8 = 1;
    /// A partner copy of them (L2).
    pub const PARTNER: u8 = 2;
    /// Its XOR parity segment (L3).
    pub const PARITY: u8 = 4;
}

/// Where old rank `o`'s files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from L1 by the current rank `holder`.
    Own {
        /// The rank that reads them.
        holder: usize,
    },
    /// The partner copy read by `holder`.
    Partner {
        /// The rank that reads it.
        holder: usize,
    },
    /// Rebuilt on `root` from the XOR set's other members: `(member,
    /// current rank that holds its files and parity)`.
    Xor {
        /// Index of the lost member in `set`.
        index: usize,
        /// The old ranks of the set.
        set: Vec<usize>,
        /// Who holds each other member (in `set` order; the lost one's place unused).
        holders: Vec<usize>,
        /// Where the lost member is rebuilt.
        root: usize,
    },
}

impl Source {
    /// The current rank that ends up with the files.
    pub fn target(&self) -> usize {
        match self {
            Source::Own { holder } | Source::Partner { holder } => *holder,
            Source::Xor { root, .. } => *root,
        }
    }
}

/// The plan for `n` old ranks on `m` current ranks, from `avail[r][o]`
/// (bits of [`have`] that current rank `r` reports for old rank `o`) and
/// the checkpoint's XOR sets; `None` when some old rank cannot be rebuilt.
/// With `n == m`, old rank `o`'s files go to current rank `o` (the caller
/// moves them there when the holder is another rank).
pub fn plan(n: usize, m: usize, avail: &[Vec<u8>], sets: &[Vec<usize>]) -> Option<Vec<Source>> {
    let holders = |o: usize, bits: u8| -> Vec<usize> {
        (0..m)
            .filter(|&r| avail[r].get(o).is_some_and(|a| a & bits == bits))
            .collect()
    };
    let pick = |o: usize, hs: Vec<usize>| -> Option<usize> {
        if hs.contains(&o) {
            Some(o)
        } else {
            hs.first().copied()
        }
    };
    (0..n)
        .map(|o| {
            if let Some(h) = pick(o, holders(o, have::OWN)) {
                return Some(Source::Own { holder: h });
            }
            if let Some(h) = pick(o, holders(o, have::PARTNER)) {
                return Some(Source::Partner { holder: h });
            }
            let set = sets.iter().find(|s| s.contains(&o))?;
            let index = set.iter().position(|&x| x == o)?;
            let mut hs = Vec::with_capacity(set.len());
            for &k in set {
                if k == o {
                    hs.push(usize::MAX);
                } else {
                    hs.push(pick(k, holders(k, have::OWN | have::PARITY))?);
                }
            }
            let root = if o < m { o } else { o % m };
            Some(Source::Xor {
                index,
                set: set.clone(),
                holders: hs,
                root,
            })
        })
        .collect()
}

/// The levels a plan uses and how many old ranks were rebuilt (not read
/// from their own L1): the text of the report line.
pub fn describe(p: &[Source]) -> (&'static str, usize) {
    let rebuilt = p
        .iter()
        .enumerate()
        .filter(|(o, s)| !matches!(s, Source::Own { holder } if holder == o))
        .count();
    let level = if p.iter().any(|s| matches!(s, Source::Xor { .. })) {
        "L3"
    } else if p.iter().any(|s| matches!(s, Source::Partner { .. })) {
        "L2"
    } else {
        "L1"
    };
    (level, rebuilt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use have::*;

    #[test]
    fn everything_local_reads_own() {
        let a = vec![vec![OWN | PARITY, 0], vec![PARTNER, OWN | PARITY]];
        let p = plan(2, 2, &a, &[]).unwrap();
        assert_eq!(
            p,
            vec![Source::Own { holder: 0 }, Source::Own { holder: 1 }]
        );
        assert_eq!(describe(&p), ("L1", 0));
    }

    #[test]
    fn a_lost_rank_comes_from_its_partner_or_from_parity() {
        // Rank 1 lost its L1; rank 2 holds its partner copy.
        let a = vec![
            vec![OWN | PARITY, 0, 0],
            vec![0, 0, 0],
            vec![0, PARTNER, OWN | PARITY],
        ];
        let sets = vec![vec![0, 1, 2]];
        let p = plan(3, 3, &a, &sets).unwrap();
        assert_eq!(p[1], Source::Partner { holder: 2 });
        assert_eq!(describe(&p), ("L2", 1));
        // Without the partner copy: XOR from 0 and 2, rebuilt on 1.
        let a = vec![
            vec![OWN | PARITY, 0, 0],
            vec![0, 0, 0],
            vec![0, 0, OWN | PARITY],
        ];
        let p = plan(3, 3, &a, &sets).unwrap();
        assert_eq!(
            p[1],
            Source::Xor {
                index: 1,
                set: vec![0, 1, 2],
                holders: vec![0, usize::MAX, 2],
                root: 1
            }
        );
        // Two members lost: nothing rebuilds rank 1.
        let a = vec![vec![OWN | PARITY, 0, 0], vec![0, 0, 0], vec![0, 0, 0]];
        assert!(plan(3, 3, &a, &sets).is_none());
    }

    #[test]
    fn fewer_ranks_take_over_the_missing_ones() {
        // 3 old ranks on 2: old rank 2's files seen by rank 0 (same node).
        let a = vec![vec![OWN, 0, OWN], vec![0, OWN, 0]];
        let p = plan(3, 2, &a, &[]).unwrap();
        assert_eq!(p[2], Source::Own { holder: 0 });
    }
}
