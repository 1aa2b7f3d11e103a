//! Redistribution of `GlobalVec` data from `N` ranks to `M` (sans-IO): the
//! runs of a saved rank's part, each contiguous both in that part and in the
//! global index, so that the part is written into the new array with one
//! `put_range` per run (the new distribution decides where each lands).

use crate::dsm::{Distribution, Layout};

/// `(index in rank r's part, global index, length)` of each run of rank
/// `r`'s part under `layout`.
pub fn runs(layout: &Layout, r: usize) -> Vec<(usize, usize, usize)> {
    let n = layout.local_len(r);
    if n == 0 {
        return Vec::new();
    }
    let step = match layout.distribution() {
        Distribution::Block => n,
        Distribution::BlockCyclic { block } => block,
    };
    (0..n)
        .step_by(step)
        .map(|j| (j, layout.global(r, j), step.min(n - j)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dist(b: usize) -> Distribution {
        if b == 0 {
            Distribution::Block
        } else {
            Distribution::BlockCyclic { block: b }
        }
    }

    proptest! {
        /// Saving each of N parts and writing its runs into an M-rank
        /// layout reproduces the array, whatever N, M and distributions.
        #[test]
        fn n_to_m_moves_every_element_once(len in 0usize..200, n in 1usize..9, m in 1usize..9,
                                           b1 in 0usize..7, b2 in 0usize..7) {
            let old = Layout::new(len, n, dist(b1)).unwrap();
            let new = Layout::new(len, m, dist(b2)).unwrap();
            // Old parts hold their global indices.
            let parts: Vec<Vec<usize>> = (0..n)
                .map(|r| (0..old.local_len(r)).map(|j| old.global(r, j)).collect())
                .collect();
            let mut newparts: Vec<Vec<Option<usize>>> =
                (0..m).map(|r| vec![None; new.local_len(r)]).collect();
            for (r, part) in parts.iter().enumerate() {
                for (j, g, k) in runs(&old, r) {
                    for t in 0..k {
                        let (o, jj) = new.owner(g + t);
                        prop_assert!(newparts[o][jj].is_none());
                        newparts[o][jj] = Some(part[j + t]);
                    }
                }
            }
            for (r, p) in newparts.iter().enumerate() {
                for (j, x) in p.iter().enumerate() {
                    prop_assert_eq!(*x, Some(new.global(r, j)));
                }
            }
        }
    }
}
