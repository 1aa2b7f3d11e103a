//! `gather(v)`, `scatter(v)`: binomial trees for small blocks, linear (every
//! transfer in flight at once) for large blocks and the `v` variants.

use std::mem::size_of_val;

use bytemuck::Pod;

use crate::coll::sched::{real, rel, rotated, Binomial};
use crate::coll::{
    check_layout, check_len, go_on, in_rank_order, mul, tag, with_scratch, Carver, Window,
    ALLTOALL_WINDOW, GATHER_LINEAR_MIN_BLOCK, TREE_WINDOW,
};
use crate::{Comm, Result};

/// Requests in flight in the linear algorithms.
const LINEAR_WINDOW: usize = 2 * ALLTOALL_WINDOW;

impl Comm {
    /// Collects `send` of every rank, in rank order, into `recv` of rank
    /// `root` (`MPI_Gather`).
    ///
    /// Every rank sends as many elements; at the root `recv` holds
    /// `size() * send.len()` elements, elsewhere it may be empty and is not
    /// touched. Binomial tree below 4 KiB bytes per
    /// rank, direct transfers to the root above.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `recv` has the wrong length.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut all = [0u16; 6];
    ///     let recv: &mut [u16] = if world.rank() == 0 { &mut all } else { &mut [] };
    ///     let r = world.rank() as u16;
    ///     world.gather(&[r, r * 10], recv, 0).unwrap();
    ///     if world.rank() == 0 {
    ///         assert_eq!(all, [0, 0, 1, 10, 2, 20]);
    ///     }
    /// });
    /// ```
    pub fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        const OP: &str = "gather";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        let blk = send.len();
        if r == root {
            check_len(OP, "recv", recv.len(), mul(OP, n, blk)?)?;
        }
        if n == 1 {
            recv.copy_from_slice(send);
            return Ok(());
        }
        if size_of_val(send) == 0 {
            return Ok(());
        }
        if size_of_val(send) >= GATHER_LINEAR_MIN_BLOCK {
            if r != root {
                return self.c_send(send, root, tag::GATHER);
            }
            recv[r * blk..(r + 1) * blk].copy_from_slice(send);
            return crate::scope(move |s| {
                let mut w = Window::<LINEAR_WINDOW>::new(OP);
                for (q, piece) in recv.chunks_mut(blk).enumerate() {
                    if q != root {
                        self.c_irecv(s, &mut w, piece, q, tag::GATHER)?;
                    }
                }
                w.wait_all()
            });
        }
        self.gather_binomial(send, recv, root)
    }

    /// Binomial gather: node `v` collects its subtree `v..end` (relative
    /// ranks, contiguous) and sends it to its parent in one message.
    fn gather_binomial<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        let (n, r) = (self.size(), self.rank());
        let blk = send.len();
        let tree = Binomial::new(rel(r, root, n), n);
        match tree.parent() {
            None => {
                recv[r * blk..(r + 1) * blk].copy_from_slice(send);
                if root == 0 {
                    return self.gather_children(tree, root, blk, &mut recv[blk..]);
                }
                // Relative ranks 1..n wrap around the end of `recv`: collect
                // them in relative order and copy the two pieces into place.
                with_scratch((n - 1) * blk, |tmp: &mut [T]| {
                    self.gather_children(tree, root, blk, tmp)?;
                    let (a, b) = rotated(1, n, root, n);
                    let split = a.len() * blk;
                    recv[a.start * blk..a.end * blk].copy_from_slice(&tmp[..split]);
                    recv[b.start * blk..b.end * blk].copy_from_slice(&tmp[split..]);
                    Ok(())
                })
            }
            Some(parent) => {
                let parent = real(parent, root, n);
                if tree.children().next().is_none() {
                    return self.c_send(send, parent, tag::GATHER);
                }
                let v = rel(r, root, n);
                with_scratch((tree.end() - v) * blk, |tmp: &mut [T]| {
                    tmp[..blk].copy_from_slice(send);
                    self.gather_children(tree, root, blk, &mut tmp[blk..])?;
                    self.c_send(tmp, parent, tag::GATHER)
                })
            }
        }
    }

    /// Receives the subtrees of `tree`'s children, nearest (and usually
    /// first ready) first, into consecutive parts of `region` (which starts
    /// at the first child). Blocking receives: no request bookkeeping, and no
    /// allocation for small gathers.
    fn gather_children<T: Pod>(
        &self,
        tree: Binomial,
        root: usize,
        blk: usize,
        region: &mut [T],
    ) -> Result<()> {
        let n = self.size();
        let mut rest = region;
        for c in tree.children() {
            let len = (Binomial::new(c, n).end() - c) * blk;
            let (piece, tail) = rest.split_at_mut(len);
            rest = tail;
            self.c_recv("gather", piece, real(c, root, n), tag::GATHER)?;
        }
        Ok(())
    }

    /// Collects `send` of every rank `i` into `recv[displs[i]..displs[i] + counts[i]]`
    /// of rank `root` (`MPI_Gatherv`).
    ///
    /// `counts` and `displs` (one entry per rank) and `recv` are significant
    /// only at the root; rank `i` must send `counts[i]` elements.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`;
    /// [`crate::Error::InvalidBuffer`] at the root if `counts`/`displs` do not
    /// have one entry per rank, reach past `recv`, or if `send` is not
    /// `counts[root]` long.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mine = vec![world.rank() as u8; world.rank()];
    ///     let mut all = [9u8; 5];
    ///     world.gatherv(&mine, &mut all, &[0, 1, 2], &[0, 0, 3], 1).unwrap();
    ///     if world.rank() == 1 {
    ///         assert_eq!(all, [1, 9, 9, 2, 2]);
    ///     }
    /// });
    /// ```
    pub fn gatherv<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()> {
        const OP: &str = "gatherv";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        if r != root {
            return self.c_send(send, root, tag::GATHER);
        }
        check_layout(OP, "recv", counts, displs, n, recv.len())?;
        check_len(OP, "send", send.len(), counts[r])?;
        recv[displs[r]..displs[r] + counts[r]].copy_from_slice(send);
        if !in_rank_order(counts, displs) {
            for q in (0..n).filter(|&q| q != root) {
                self.c_recv(
                    OP,
                    &mut recv[displs[q]..displs[q] + counts[q]],
                    q,
                    tag::GATHER,
                )?;
            }
            return Ok(());
        }
        crate::scope(move |s| {
            let mut w = Window::<LINEAR_WINDOW>::new(OP);
            let mut carver = Carver::new(recv);
            for q in 0..n {
                let piece = carver.take(displs[q], counts[q]);
                if q != root {
                    self.c_irecv(s, &mut w, piece, q, tag::GATHER)?;
                }
            }
            w.wait_all()
        })
    }

    /// Sends block `i` of `send` (of rank `root`) to rank `i`'s `recv`
    /// (`MPI_Scatter`).
    ///
    /// Every rank receives `recv.len()` elements; at the root `send` holds
    /// `size() * recv.len()` elements, elsewhere it may be empty. Binomial
    /// tree below 4 KiB bytes per rank, direct
    /// transfers from the root above.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `send` has the wrong length.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let all = [10u32, 11, 20, 21, 30, 31];
    ///     let send: &[u32] = if world.rank() == 2 { &all } else { &[] };
    ///     let mut mine = [0u32; 2];
    ///     world.scatter(send, &mut mine, 2).unwrap();
    ///     let b = 10 * (world.rank() as u32 + 1);
    ///     assert_eq!(mine, [b, b + 1]);
    /// });
    /// ```
    pub fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        const OP: &str = "scatter";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        let blk = recv.len();
        if r == root {
            check_len(OP, "send", send.len(), mul(OP, n, blk)?)?;
        }
        if n == 1 {
            recv.copy_from_slice(send);
            return Ok(());
        }
        if size_of_val(recv) == 0 {
            return Ok(());
        }
        if size_of_val(recv) >= GATHER_LINEAR_MIN_BLOCK {
            if r != root {
                return self.c_recv(OP, recv, root, tag::SCATTER);
            }
            recv.copy_from_slice(&send[r * blk..(r + 1) * blk]);
            return crate::scope(|s| {
                let mut w = Window::<LINEAR_WINDOW>::new(OP);
                for (q, piece) in send.chunks(blk).enumerate() {
                    if q != root {
                        self.c_isend(s, &mut w, piece, q, tag::SCATTER)?;
                    }
                }
                w.wait_all()
            });
        }
        self.scatter_binomial(send, recv, root)
    }

    /// Binomial scatter: node `v` receives its subtree's blocks `v..end`
    /// (relative ranks) in one message and passes each child its part.
    fn scatter_binomial<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        const OP: &str = "scatter";
        let (n, r) = (self.size(), self.rank());
        let blk = recv.len();
        let tree = Binomial::new(rel(r, root, n), n);
        match tree.parent() {
            None => {
                recv.copy_from_slice(&send[r * blk..(r + 1) * blk]);
                if root == 0 {
                    return self.scatter_children(tree, root, blk, &send[blk..]);
                }
                with_scratch((n - 1) * blk, |tmp: &mut [T]| {
                    let (a, b) = rotated(1, n, root, n);
                    let split = a.len() * blk;
                    tmp[..split].copy_from_slice(&send[a.start * blk..a.end * blk]);
                    tmp[split..].copy_from_slice(&send[b.start * blk..b.end * blk]);
                    self.scatter_children(tree, root, blk, tmp)
                })
            }
            Some(parent) => {
                let parent = real(parent, root, n);
                if tree.children().next().is_none() {
                    return self.c_recv(OP, recv, parent, tag::SCATTER);
                }
                let v = rel(r, root, n);
                with_scratch((tree.end() - v) * blk, |tmp: &mut [T]| {
                    // After a disagreement on counts, still pass the children
                    // their parts, so that their calls end too (see `go_on`).
                    let mut first = Ok(());
                    go_on(&mut first, self.c_recv(OP, tmp, parent, tag::SCATTER))?;
                    recv.copy_from_slice(&tmp[..blk]);
                    self.scatter_children(tree, root, blk, &tmp[blk..])?;
                    first
                })
            }
        }
    }

    /// Sends each child of `tree` its subtree's blocks from `region` (which
    /// starts at the first child), largest subtree first.
    fn scatter_children<T: Pod>(
        &self,
        tree: Binomial,
        root: usize,
        blk: usize,
        region: &[T],
    ) -> Result<()> {
        let n = self.size();
        let first = tree.children().next().unwrap_or(0);
        crate::scope(|s| {
            let mut w = Window::<TREE_WINDOW>::new("scatter");
            for c in tree.children().rev() {
                let start = (c - first) * blk;
                let end = (Binomial::new(c, n).end() - first) * blk;
                self.c_isend(
                    s,
                    &mut w,
                    &region[start..end],
                    real(c, root, n),
                    tag::SCATTER,
                )?;
            }
            w.wait_all()
        })
    }

    /// Sends `send[displs[i]..displs[i] + counts[i]]` of rank `root` to rank
    /// `i`'s `recv` (`MPI_Scatterv`).
    ///
    /// `send`, `counts` and `displs` are significant only at the root; rank
    /// `i`'s `recv` must hold `counts[i]` elements.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`;
    /// [`crate::Error::InvalidBuffer`] at the root if `counts`/`displs` do not
    /// have one entry per rank, reach past `send`, or if `recv` is not
    /// `counts[root]` long.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let all = [1u8, 2, 2, 3, 3, 3];
    ///     let mut mine = vec![0u8; world.rank() + 1];
    ///     world.scatterv(&all, &[1, 2, 3], &[0, 1, 3], &mut mine, 0).unwrap();
    ///     assert_eq!(mine, vec![world.rank() as u8 + 1; world.rank() + 1]);
    /// });
    /// ```
    pub fn scatterv<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        displs: &[usize],
        recv: &mut [T],
        root: usize,
    ) -> Result<()> {
        const OP: &str = "scatterv";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        if r != root {
            return self.c_recv(OP, recv, root, tag::SCATTER);
        }
        check_layout(OP, "send", counts, displs, n, send.len())?;
        check_len(OP, "recv", recv.len(), counts[r])?;
        recv.copy_from_slice(&send[displs[r]..displs[r] + counts[r]]);
        crate::scope(|s| {
            let mut w = Window::<LINEAR_WINDOW>::new(OP);
            for q in (0..n).filter(|&q| q != root) {
                let piece = &send[displs[q]..displs[q] + counts[q]];
                self.c_isend(s, &mut w, piece, q, tag::SCATTER)?;
            }
            w.wait_all()
        })
    }
}
