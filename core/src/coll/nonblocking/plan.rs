//! Schedules as data: the steps of every nonblocking collective, pure
//! functions of the rank and the communicator size (see the [module
//! docs](super) for the algorithms).

use super::super::sched::{real, rel, Binomial, Fold, FoldRole};
use super::super::{bad_buffer, ALLTOALL_WINDOW};
use crate::Result;

/// Where a piece of a schedule's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loc {
    /// The caller's send buffer (read only).
    Send,
    /// The caller's receive (or in-out) buffer.
    Recv,
    /// Scratch buffer `i` of the schedule.
    Tmp(usize),
}

/// Elements `off..off + len` of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Buf {
    pub(super) loc: Loc,
    pub(super) off: usize,
    pub(super) len: usize,
}

pub(super) fn buf(loc: Loc, off: usize, len: usize) -> Buf {
    Buf { loc, off, len }
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Post a send of `b` to rank `to`.
    Send { b: Buf, to: usize },
    /// Post a receive of exactly `b` from rank `from`.
    Recv { b: Buf, from: usize },
    /// Copy `from` into `to` (same length).
    Copy { from: Buf, to: Buf },
    /// `to = from ⊕ to` if `left` (`from` holds lower ranks), else `to = to ⊕ from`.
    Reduce { from: Buf, to: Buf, left: bool },
    /// Wait until every transfer posted so far has completed.
    Wait,
}

/// A schedule under construction: steps and scratch sizes.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) steps: Vec<Step>,
    pub(super) tmps: Vec<usize>,
}

impl Plan {
    pub(super) fn tmp(&mut self, len: usize) -> Loc {
        self.tmps.push(len);
        Loc::Tmp(self.tmps.len() - 1)
    }
    pub(super) fn send(&mut self, b: Buf, to: usize) {
        self.steps.push(Step::Send { b, to });
    }
    pub(super) fn recv(&mut self, b: Buf, from: usize) {
        self.steps.push(Step::Recv { b, from });
    }
    pub(super) fn copy(&mut self, from: Buf, to: Buf) {
        if from != to && from.len > 0 {
            self.steps.push(Step::Copy { from, to });
        }
    }
    pub(super) fn reduce(&mut self, from: Buf, to: Buf, left: bool) {
        self.steps.push(Step::Reduce { from, to, left });
    }
    pub(super) fn wait(&mut self) {
        if !matches!(self.steps.last(), None | Some(Step::Wait)) {
            self.steps.push(Step::Wait);
        }
    }
}

// ----- the schedules, pure functions of the rank and the size -----

/// Dissemination barrier.
pub(super) fn plan_barrier(r: usize, n: usize) -> Plan {
    let mut p = Plan::default();
    let none = buf(Loc::Recv, 0, 0);
    let mut d = 1;
    while d < n {
        p.send(none, (r + d) % n);
        p.recv(none, (r + n - d) % n);
        p.wait();
        d *= 2;
    }
    p
}

/// Binomial-tree broadcast of `count` elements of `Recv` from `root`.
pub(super) fn plan_bcast(r: usize, n: usize, root: usize, count: usize) -> Plan {
    let mut p = Plan::default();
    let all = buf(Loc::Recv, 0, count);
    let t = Binomial::new(rel(r, root, n), n);
    if let Some(parent) = t.parent() {
        p.recv(all, real(parent, root, n));
        p.wait();
    }
    for c in t.children().rev() {
        p.send(all, real(c, root, n));
    }
    p.wait();
    p
}

/// Reduction of `Send` (or of `Recv` at the root when `in_place`) into
/// `Recv` of `root`, over a binomial tree in rank order rooted at rank 0.
pub(super) fn plan_reduce(r: usize, n: usize, root: usize, count: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    let mine = if in_place && r == root {
        buf(Loc::Recv, 0, count)
    } else {
        buf(Loc::Send, 0, count)
    };
    let t = Binomial::new(r, n);
    let children: Vec<usize> = t.children().collect();
    // The accumulator: the root's result buffer; elsewhere scratch, or the
    // contribution itself for a leaf.
    let acc = if r == root {
        buf(Loc::Recv, 0, count)
    } else if children.is_empty() {
        mine
    } else {
        buf(p.tmp(count), 0, count)
    };
    p.copy(mine, acc);
    let parts: Vec<Buf> = children
        .iter()
        .map(|&c| {
            let b = buf(p.tmp(count), 0, count);
            p.recv(b, c);
            b
        })
        .collect();
    p.wait();
    // Children's subtrees are contiguous ranges above this rank, nearest first.
    for b in parts {
        p.reduce(b, acc, false);
    }
    if let Some(parent) = t.parent() {
        p.send(acc, parent);
        p.wait();
    }
    if root != 0 {
        if r == 0 {
            p.send(acc, root);
        } else if r == root {
            p.recv(buf(Loc::Recv, 0, count), 0);
        }
        p.wait();
    }
    p
}

/// Recursive-doubling allreduce of `mine` into `acc` (`count` elements).
pub(super) fn plan_allreduce_into(
    p: &mut Plan,
    r: usize,
    n: usize,
    count: usize,
    mine: Buf,
    acc: Buf,
) {
    p.copy(mine, acc);
    let fold = Fold::new(n);
    let newrank = match fold.role(r) {
        FoldRole::Excluded { partner } => {
            p.send(acc, partner);
            p.wait();
            p.recv(acc, partner);
            p.wait();
            return;
        }
        FoldRole::Absorbs { partner, newrank } => {
            let t = buf(p.tmp(count), 0, count);
            p.recv(t, partner);
            p.wait();
            p.reduce(t, acc, true);
            newrank
        }
        FoldRole::Plain { newrank } => newrank,
    };
    if fold.p > 1 {
        let t = buf(p.tmp(count), 0, count);
        let mut mask = 1;
        while mask < fold.p {
            let pv = newrank ^ mask;
            let peer = fold.real(pv);
            p.send(acc, peer);
            p.recv(t, peer);
            p.wait();
            p.reduce(t, acc, pv < newrank);
            mask <<= 1;
        }
    }
    if let FoldRole::Absorbs { partner, .. } = fold.role(r) {
        p.send(acc, partner);
        p.wait();
    }
}

pub(super) fn plan_allreduce(r: usize, n: usize, count: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    let acc = buf(Loc::Recv, 0, count);
    let mine = if in_place {
        acc
    } else {
        buf(Loc::Send, 0, count)
    };
    plan_allreduce_into(&mut p, r, n, count, mine, acc);
    p.wait();
    p
}

/// Allreduce of the whole `Send` (`total` elements) into scratch, keeping
/// elements `start..start + len`.
pub(super) fn plan_reduce_scatter(
    r: usize,
    n: usize,
    total: usize,
    start: usize,
    len: usize,
) -> Plan {
    let mut p = Plan::default();
    let acc = buf(p.tmp(total), 0, total);
    plan_allreduce_into(&mut p, r, n, total, buf(Loc::Send, 0, total), acc);
    p.wait();
    p.copy(buf(acc.loc, start, len), buf(Loc::Recv, 0, len));
    p
}

pub(super) fn plan_reduce_scatter_block(r: usize, n: usize, blk: usize) -> Plan {
    plan_reduce_scatter(r, n, n * blk, r * blk, blk)
}

/// Transfers with peers `(r + i) % n`, `i` in `1..n`, `ALLTOALL_WINDOW` at a time.
pub(super) fn windowed(p: &mut Plan, n: usize, mut each: impl FnMut(&mut Plan, usize)) {
    for i in 1..n {
        each(p, i);
        if i % ALLTOALL_WINDOW == 0 {
            p.wait();
        }
    }
    p.wait();
}

pub(super) fn plan_gather(r: usize, n: usize, root: usize, blk: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    if r == root {
        if !in_place {
            p.copy(buf(Loc::Send, 0, blk), buf(Loc::Recv, r * blk, blk));
        }
        windowed(&mut p, n, |p, i| {
            let from = (r + i) % n;
            p.recv(buf(Loc::Recv, from * blk, blk), from);
        });
    } else {
        p.send(buf(Loc::Send, 0, blk), root);
        p.wait();
    }
    p
}

pub(super) fn plan_scatter(r: usize, n: usize, root: usize, blk: usize, in_place: bool) -> Plan {
    let mut p = Plan::default();
    if r == root {
        if !in_place {
            p.copy(buf(Loc::Send, r * blk, blk), buf(Loc::Recv, 0, blk));
        }
        windowed(&mut p, n, |p, i| {
            let to = (r + i) % n;
            p.send(buf(Loc::Send, to * blk, blk), to);
        });
    } else {
        p.recv(buf(Loc::Recv, 0, blk), root);
        p.wait();
    }
    p
}

pub(super) fn plan_allgather(r: usize, n: usize, blk: usize) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, 0, blk), buf(Loc::Recv, r * blk, blk));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, 0, blk), to);
        p.recv(buf(Loc::Recv, from * blk, blk), from);
    });
    p
}

pub(super) fn plan_alltoall(r: usize, n: usize, blk: usize) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, r * blk, blk), buf(Loc::Recv, r * blk, blk));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, to * blk, blk), to);
        p.recv(buf(Loc::Recv, from * blk, blk), from);
    });
    p
}

/// A layout of blocks: `counts[i]` elements at `displs[i]`.
pub(super) type Blocks<'a> = (&'a [usize], &'a [usize]);

pub(super) fn plan_gatherv(
    r: usize,
    n: usize,
    root: usize,
    mine: usize,
    (c, d): Blocks<'_>,
) -> Plan {
    let mut p = Plan::default();
    if r == root {
        p.copy(buf(Loc::Send, 0, c[r]), buf(Loc::Recv, d[r], c[r]));
        windowed(&mut p, n, |p, i| {
            let from = (r + i) % n;
            p.recv(buf(Loc::Recv, d[from], c[from]), from);
        });
    } else {
        p.send(buf(Loc::Send, 0, mine), root);
        p.wait();
    }
    p
}

pub(super) fn plan_scatterv(
    r: usize,
    n: usize,
    root: usize,
    mine: usize,
    (c, d): Blocks<'_>,
) -> Plan {
    let mut p = Plan::default();
    if r == root {
        p.copy(buf(Loc::Send, d[r], c[r]), buf(Loc::Recv, 0, c[r]));
        windowed(&mut p, n, |p, i| {
            let to = (r + i) % n;
            p.send(buf(Loc::Send, d[to], c[to]), to);
        });
    } else {
        p.recv(buf(Loc::Recv, 0, mine), root);
        p.wait();
    }
    p
}

pub(super) fn plan_allgatherv(r: usize, n: usize, (c, d): Blocks<'_>) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, 0, c[r]), buf(Loc::Recv, d[r], c[r]));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, 0, c[r]), to);
        p.recv(buf(Loc::Recv, d[from], c[from]), from);
    });
    p
}

pub(super) fn plan_alltoallv(
    r: usize,
    n: usize,
    (sc, sd): Blocks<'_>,
    (rc, rd): Blocks<'_>,
) -> Plan {
    let mut p = Plan::default();
    p.copy(buf(Loc::Send, sd[r], sc[r]), buf(Loc::Recv, rd[r], rc[r]));
    windowed(&mut p, n, |p, i| {
        let (to, from) = ((r + i) % n, (r + n - i) % n);
        p.send(buf(Loc::Send, sd[to], sc[to]), to);
        p.recv(buf(Loc::Recv, rd[from], rc[from]), from);
    });
    p
}

/// Checks that blocks of a receive layout do not overlap (they are written
/// by transfers in flight at once).
pub(super) fn check_disjoint(op: &'static str, (c, d): Blocks<'_>) -> Result<()> {
    let mut v: Vec<(usize, usize)> = d.iter().copied().zip(c.iter().copied()).collect();
    v.retain(|&(_, len)| len > 0);
    v.sort_unstable();
    if v.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(bad_buffer(op, "two ranks' blocks overlap".to_string()));
    }
    Ok(())
}

/// Hillis–Steele prefix reduction: before the round of distance `d`, `acc`
/// holds ranks `r - d + 1..=r` (clipped at 0).
pub(super) fn plan_scan(r: usize, n: usize, count: usize, inclusive: bool) -> Plan {
    let mut p = Plan::default();
    let mine = buf(Loc::Send, 0, count);
    let out = buf(Loc::Recv, 0, count);
    // Inclusive: the result is the accumulator. Exclusive: a separate one.
    let acc = if inclusive {
        out
    } else if r + 1 < n {
        buf(p.tmp(count), 0, count)
    } else {
        mine
    };
    p.copy(mine, acc);
    let t = buf(p.tmp(count), 0, count);
    let mut d = 1;
    let mut first = true;
    while d < n {
        if r + d < n {
            p.send(acc, r + d);
        }
        if r >= d {
            p.recv(t, r - d);
        }
        p.wait();
        if r >= d {
            if !inclusive {
                if first {
                    p.copy(t, out);
                } else {
                    p.reduce(t, out, true);
                }
            }
            if inclusive || r + d < n {
                // (Only ranks that still send need the inclusive partial.)
                if acc != mine {
                    p.reduce(t, acc, true);
                }
            }
            first = false;
        }
        d *= 2;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_end_with_a_wait() {
        for n in 1..12 {
            for r in 0..n {
                for p in [
                    plan_barrier(r, n),
                    plan_bcast(r, n, n / 2, 3),
                    plan_reduce(r, n, n - 1, 3, false),
                    plan_allreduce(r, n, 3, false),
                    plan_gather(r, n, 0, 2, false),
                    plan_scatter(r, n, 0, 2, false),
                    plan_allgather(r, n, 2),
                    plan_alltoall(r, n, 2),
                    plan_scan(r, n, 2, true),
                    plan_scan(r, n, 2, false),
                    plan_reduce_scatter_block(r, n, 2),
                ] {
                    let mut open = false;
                    for s in &p.steps {
                        match s {
                            Step::Send { .. } | Step::Recv { .. } => open = true,
                            Step::Wait => open = false,
                            _ => {}
                        }
                    }
                    assert!(!open, "n {n} rank {r}: {:?}", p.steps);
                }
            }
        }
    }
}
