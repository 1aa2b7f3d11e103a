//! Communication schedules: who talks to whom, about which part of the data,
//! as pure functions of a rank and the communicator size.
//!
//! Nothing here communicates; the executors in the sibling modules follow
//! these schedules with the collective send/receive primitives.

use std::ops::Range;

/// Lowest set bit of `v` (0 for 0).
#[inline]
fn lowbit(v: usize) -> usize {
    v & v.wrapping_neg()
}

/// A node of the binomial tree over relative ranks `0..n` rooted at 0.
///
/// Node `v`'s parent is `v` minus its lowest set bit; its subtree is the
/// contiguous range `v..end()`; its children are `v + 1, v + 2, v + 4, ...`
/// below both `n` and `v`'s lowest set bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binomial {
    v: usize,
    n: usize,
}

impl Binomial {
    pub(crate) fn new(v: usize, n: usize) -> Binomial {
        debug_assert!(v < n);
        Binomial { v, n }
    }

    /// The parent, or `None` at the root.
    #[inline]
    pub(crate) fn parent(&self) -> Option<usize> {
        (self.v != 0).then(|| self.v - lowbit(self.v))
    }

    /// One past the last relative rank of this node's subtree.
    #[inline]
    pub(crate) fn end(&self) -> usize {
        if self.v == 0 {
            self.n
        } else {
            self.v.saturating_add(lowbit(self.v)).min(self.n)
        }
    }

    /// The children, nearest (smallest subtree) first; `.rev()` gives the
    /// largest subtree first.
    #[inline]
    pub(crate) fn children(&self) -> impl DoubleEndedIterator<Item = usize> {
        let (v, end) = (self.v, self.end());
        let mut k = 0;
        while k < usize::BITS && v + (1usize << k) < end {
            k += 1;
        }
        (0..k).map(move |i| v + (1 << i))
    }
}

/// Relative rank of `rank` in a tree rooted at `root` of an `n`-rank communicator.
#[inline]
pub(crate) fn rel(rank: usize, root: usize, n: usize) -> usize {
    (rank + n - root) % n
}

/// Real rank of relative rank `v` in a tree rooted at `root`.
#[inline]
pub(crate) fn real(v: usize, root: usize, n: usize) -> usize {
    (v + root) % n
}

/// The folding of `n` ranks onto `p` participants, `p` the largest power of
/// two not above `n`: the first `2 * rem` ranks pair up (`rem = n - p`), each
/// even one handing its data to the odd one above it, which takes part for both.
/// Participants keep the rank order: participant `i` stands for a contiguous
/// range of ranks below participant `i + 1`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fold {
    /// Number of participants (a power of two).
    pub(crate) p: usize,
    /// Number of folded pairs.
    pub(crate) rem: usize,
}

/// What one rank does in a [`Fold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FoldRole {
    /// Sends its data to `partner` (the rank above) and waits for the result.
    Excluded { partner: usize },
    /// Takes `partner`'s data (the rank below) and participates as `newrank`.
    Absorbs { partner: usize, newrank: usize },
    /// Participates alone as `newrank`.
    Plain { newrank: usize },
}

impl Fold {
    pub(crate) fn new(n: usize) -> Fold {
        debug_assert!(n >= 1);
        let p = 1usize << (usize::BITS - 1 - n.leading_zeros());
        Fold { p, rem: n - p }
    }

    pub(crate) fn role(&self, rank: usize) -> FoldRole {
        if rank < 2 * self.rem {
            if rank % 2 == 0 {
                FoldRole::Excluded { partner: rank + 1 }
            } else {
                FoldRole::Absorbs {
                    partner: rank - 1,
                    newrank: rank / 2,
                }
            }
        } else {
            FoldRole::Plain {
                newrank: rank - self.rem,
            }
        }
    }

    /// The rank that participates as `newrank`.
    #[inline]
    pub(crate) fn real(&self, newrank: usize) -> usize {
        if newrank < self.rem {
            2 * newrank + 1
        } else {
            newrank + self.rem
        }
    }

    /// The participant that stands for `rank`.
    #[inline]
    pub(crate) fn newrank_of(&self, rank: usize) -> usize {
        match self.role(rank) {
            FoldRole::Excluded { partner } => partner / 2,
            FoldRole::Absorbs { newrank, .. } | FoldRole::Plain { newrank } => newrank,
        }
    }
}

/// Start of block `b` when `count` elements are cut into `parts` blocks
/// whose sizes differ by at most one (larger blocks first).
#[inline]
pub(crate) fn block_start(count: usize, parts: usize, b: usize) -> usize {
    b * (count / parts) + b.min(count % parts)
}

/// Elements of blocks `r.start..r.end` (see [`block_start`]).
#[inline]
pub(crate) fn block_range(count: usize, parts: usize, r: Range<usize>) -> Range<usize> {
    block_start(count, parts, r.start)..block_start(count, parts, r.end)
}

/// One step of a recursive-halving reduce-scatter over `p` blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HalvingStep {
    /// The participant to exchange with.
    pub(crate) partner: usize,
    /// Blocks this participant keeps (and receives the partner's part of).
    pub(crate) keep: Range<usize>,
    /// Blocks it hands to the partner.
    pub(crate) give: Range<usize>,
}

/// Recursive halving among `p` (a power of two) participants, masks 1, 2, 4, ...
///
/// Before step `j` a participant holds the reduction over its aligned group
/// of `2^j` participants (contiguous in rank order) for a range of blocks that
/// the partner `v ^ 2^j` holds too; each keeps one half. After all steps
/// participant `v` owns block `bit_reverse(v)`. Replaying the steps backwards
/// with `keep` and `give` swapped is the matching allgather.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Halving {
    pub(crate) p: usize,
    pub(crate) v: usize,
}

impl Halving {
    /// Number of steps, `log2 p`.
    #[inline]
    pub(crate) fn steps(&self) -> usize {
        self.p.trailing_zeros() as usize
    }

    /// Step `j` for participant `v`.
    pub(crate) fn step(&self, j: usize) -> HalvingStep {
        let (mut lo, mut hi) = (0, self.p);
        for i in 0..=j {
            let mid = lo + (hi - lo) / 2;
            let upper = self.v & (1 << i) != 0;
            if i == j {
                let (keep, give) = if upper {
                    (mid..hi, lo..mid)
                } else {
                    (lo..mid, mid..hi)
                };
                return HalvingStep {
                    partner: self.v ^ (1 << j),
                    keep,
                    give,
                };
            }
            if upper {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        unreachable!("the loop returns at i == j")
    }
}

/// The rounds of a Bruck allgather on `n` ranks: `(distance, blocks)` — in
/// round `k` a rank sends its first `blocks` blocks to `rank - distance` and
/// receives as many from `rank + distance`, appending them.
pub(crate) fn bruck_rounds(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut d = 1;
    std::iter::from_fn(move || {
        if d >= n {
            return None;
        }
        let r = (d, d.min(n - d));
        d *= 2;
        Some(r)
    })
}

/// The pieces of rank order covered by relative ranks `a..b` of a tree
/// rooted at `root`: one range of ranks, or two when it wraps past `n - 1`.
pub(crate) fn rotated(a: usize, b: usize, root: usize, n: usize) -> (Range<usize>, Range<usize>) {
    let start = (a + root) % n;
    let len = b - a;
    if start + len <= n {
        (start..start + len, 0..0)
    } else {
        (start..n, 0..start + len - n)
    }
}

/// Step `i` (`1..n`) of a pairwise exchange on `n` ranks: `(to, from)`.
/// Partners are `rank ^ i` when `n` is a power of two, otherwise the rank
/// sends `i` ahead and receives from `i` behind. In every step each rank
/// sends to one rank and receives from one, and over the steps it meets
/// every other rank once.
#[inline]
pub(crate) fn pairwise(rank: usize, n: usize, i: usize) -> (usize, usize) {
    if n.is_power_of_two() {
        (rank ^ i, rank ^ i)
    } else {
        ((rank + i) % n, (rank + n - i) % n)
    }
}

/// Step `s` (`0..n - 1`) of a ring allgather at ring position `v`: the
/// block passed on to `v + 1` (received in the previous step, or `v`'s own
/// at first) and the block arriving from `v - 1`.
#[inline]
pub(crate) fn ring_blocks(v: usize, n: usize, s: usize) -> (usize, usize) {
    ((v + n - s) % n, (v + 2 * n - s - 1) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tree_covers_every_node_once() {
        for n in 1..40 {
            let mut parent_of = vec![None; n];
            for v in 0..n {
                let t = Binomial::new(v, n);
                for c in t.children() {
                    assert!(c < n);
                    assert_eq!(parent_of[c].replace(v), None, "n {n} child {c}");
                    assert_eq!(Binomial::new(c, n).parent(), Some(v));
                }
                // Children's subtrees tile v+1..end.
                let mut next = v + 1;
                for c in t.children() {
                    assert_eq!(c, next);
                    next = Binomial::new(c, n).end();
                }
                assert_eq!(next, t.end());
            }
            assert!(parent_of[0].is_none());
            assert!(parent_of[1..].iter().all(|p| p.is_some()));
            assert_eq!(Binomial::new(0, n).end(), n);
        }
        let rev: Vec<_> = Binomial::new(0, 8).children().rev().collect();
        assert_eq!(rev, [4, 2, 1]);
        assert_eq!(Binomial::new(4, 6).children().collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn relative_ranks_round_trip() {
        for n in 1..10 {
            for root in 0..n {
                for r in 0..n {
                    assert_eq!(real(rel(r, root, n), root, n), r);
                }
            }
        }
    }

    #[test]
    fn fold_keeps_rank_order() {
        for n in 1..70 {
            let f = Fold::new(n);
            assert!(f.p.is_power_of_two() && f.p <= n && 2 * f.p > n);
            let mut last = None;
            for v in 0..f.p {
                let r = f.real(v);
                assert!(r < n);
                match f.role(r) {
                    FoldRole::Absorbs { partner, newrank } => {
                        assert_eq!(newrank, v);
                        assert_eq!(partner + 1, r);
                        assert_eq!(f.role(partner), FoldRole::Excluded { partner: r });
                    }
                    FoldRole::Plain { newrank } => assert_eq!(newrank, v),
                    FoldRole::Excluded { .. } => panic!("participant {r} excluded"),
                }
                assert!(last < Some(r));
                last = Some(r);
            }
            for r in 0..n {
                assert!(f.real(f.newrank_of(r)) >= r && f.real(f.newrank_of(r)) <= r + 1);
            }
        }
    }

    #[test]
    fn blocks_partition() {
        for count in 0..30 {
            for parts in 1..9 {
                assert_eq!(block_start(count, parts, 0), 0);
                assert_eq!(block_start(count, parts, parts), count);
                for b in 0..parts {
                    let len = block_start(count, parts, b + 1) - block_start(count, parts, b);
                    assert!(len == count / parts || len == count / parts + 1);
                }
            }
        }
    }

    #[test]
    fn halving_partners_agree_and_end_bit_reversed() {
        for k in 0..6 {
            let p = 1usize << k;
            for v in 0..p {
                let h = Halving { p, v };
                assert_eq!(h.steps(), k);
                let mut held = 0..p;
                for j in 0..k {
                    let s = h.step(j);
                    let t = Halving { p, v: s.partner }.step(j);
                    assert_eq!(t.partner, v);
                    assert_eq!(s.keep, t.give);
                    assert_eq!(s.give, t.keep);
                    assert_eq!(s.keep.start.min(s.give.start), held.start);
                    assert_eq!(s.keep.end.max(s.give.end), held.end);
                    held = s.keep;
                }
                assert_eq!(held.len(), 1);
                let rev = if k == 0 {
                    0
                } else {
                    v.reverse_bits() >> (usize::BITS as usize - k)
                };
                assert_eq!(held.start, rev);
            }
        }
    }

    #[test]
    fn bruck_collects_every_block() {
        for n in 1..40 {
            let got: usize = 1 + bruck_rounds(n).map(|(_, b)| b).sum::<usize>();
            assert_eq!(got, n);
            let mut have = 1;
            for (d, b) in bruck_rounds(n) {
                assert_eq!(d, have);
                have += b;
            }
        }
    }

    #[test]
    fn rotated_pieces() {
        assert_eq!(rotated(1, 3, 0, 5), (1..3, 0..0));
        assert_eq!(rotated(1, 4, 3, 5), (4..5, 0..2));
        assert_eq!(rotated(0, 5, 2, 5), (2..5, 0..2));
        assert_eq!(rotated(2, 4, 1, 5), (3..5, 0..0));
    }

    #[test]
    fn pairwise_steps_match_up() {
        for n in 1..20 {
            for i in 1..n {
                let mut hit = vec![false; n];
                for r in 0..n {
                    let (to, from) = pairwise(r, n, i);
                    assert_ne!(to, r);
                    assert!(!std::mem::replace(&mut hit[to], true));
                    // `to` expects this rank in the same step.
                    assert_eq!(pairwise(to, n, i).1, r);
                    assert_eq!(pairwise(from, n, i).0, r);
                }
            }
            for r in 0..n {
                let mut met: Vec<usize> = (1..n).map(|i| pairwise(r, n, i).0).collect();
                met.sort();
                assert_eq!(met, (0..n).filter(|&q| q != r).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn ring_passes_on_what_arrived() {
        for n in 2..12 {
            for v in 0..n {
                let mut have = vec![v];
                for s in 0..n - 1 {
                    let (out, inc) = ring_blocks(v, n, s);
                    assert!(have.contains(&out));
                    // The left neighbour sends the block this rank receives.
                    assert_eq!(ring_blocks((v + n - 1) % n, n, s).0, inc);
                    assert!(!have.contains(&inc));
                    have.push(inc);
                }
                assert_eq!(have.len(), n);
            }
        }
    }
}
