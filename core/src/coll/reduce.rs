//! `reduce`, `allreduce`: binomial tree / recursive doubling for small
//! buffers, Rabenseifner (recursive-halving reduce-scatter, then gather or
//! allgather) for large ones.

use std::mem::size_of_val;

use bytemuck::Pod;

use crate::coll::sched::{block_range, real, rel, Binomial, Fold, FoldRole, Halving};
use crate::coll::{
    check_len, combine, go_on, split_ranges, tag, with_scratch, ALLREDUCE_LARGE_BYTES,
    REDUCE_LARGE_BYTES,
};
use crate::op::Op;
use crate::{Comm, Result};

/// Where a rank's own contribution is when an algorithm starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mine<'a, T> {
    /// In the caller's send buffer; the accumulator's contents are irrelevant.
    Send(&'a [T]),
    /// Already in the accumulator (in-place operation).
    InAcc,
}

impl Comm {
    /// Combines `send` of every rank element-wise with `op`, in rank order,
    /// into `recv` of rank `root` (`MPI_Reduce`).
    ///
    /// `recv` is significant only at the root, where it must be as long as
    /// `send`; elsewhere it may be empty and is not touched. Small buffers are
    /// reduced up a binomial tree, large ones (from 16 KiB)
    /// with Rabenseifner's reduce-scatter + gather.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `recv` has the wrong length.
    ///
    /// ```
    /// dos::testing::run_threads(4, |world| {
    ///     let mut max = [0i32];
    ///     let mine = [world.rank() as i32 * 10];
    ///     let recv: &mut [i32] = if world.rank() == 2 { &mut max } else { &mut [] };
    ///     world.reduce(&mine, recv, dos::op::Max, 2).unwrap();
    ///     if world.rank() == 2 {
    ///         assert_eq!(max, [30]);
    ///     }
    /// });
    /// ```
    pub fn reduce<T, O>(&self, send: &[T], recv: &mut [T], op: O, root: usize) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "reduce";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        if r == root {
            check_len(OP, "recv", recv.len(), send.len())?;
        }
        if n == 1 {
            recv.copy_from_slice(send);
            return Ok(());
        }
        if size_of_val(send) == 0 {
            return Ok(());
        }
        if let Some(done) = self.node_reduce(&op, send, recv, root) {
            return done;
        }
        let fold = Fold::new(n);
        if size_of_val(send) >= REDUCE_LARGE_BYTES && send.len() >= fold.p {
            self.reduce_rabenseifner(&op, send, recv, root)
        } else {
            self.reduce_binomial(&op, send, recv, root)
        }
    }

    /// Combines `send` of every rank element-wise with `op`, in rank order,
    /// into `recv` of every rank (`MPI_Allreduce`).
    ///
    /// `recv` must be as long as `send`. Every rank gets the same result, bit
    /// for bit. Small buffers use recursive doubling (with two ranks: one
    /// exchange and one local reduction), large ones (from
    /// 16 KiB) Rabenseifner's reduce-scatter + allgather.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut sum = [0u64; 2];
    ///     world.allreduce(&[1, world.rank() as u64], &mut sum, dos::op::Sum).unwrap();
    ///     assert_eq!(sum, [3, 3]);
    /// });
    /// ```
    pub fn allreduce<T, O>(&self, send: &[T], recv: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        check_len("allreduce", "recv", recv.len(), send.len())?;
        self.allreduce_into(&op, Mine::Send(send), recv)
    }

    /// [`Comm::allreduce`] with `buf` as both contribution and result
    /// (`MPI_Allreduce` with `MPI_IN_PLACE`).
    ///
    /// The operation must be associative; it need not be commutative (see
    /// [`crate::op`]). Here, affine maps `x ↦ a·x + b` (as `[a, b]`) composed
    /// in rank order:
    ///
    /// ```
    /// let then = dos::op::user_ordered(|f: [u64; 2], g: [u64; 2]| [g[0] * f[0], g[0] * f[1] + g[1]]);
    /// let got = dos::testing::run_threads(3, |world| {
    ///     let r = world.rank() as u64;
    ///     let mut x = [[r + 2, r + 1]];
    ///     world.allreduce_in_place(&mut x, then).unwrap();
    ///     x[0]
    /// });
    /// // 4·(3·(2x + 1) + 2) + 3 = 24x + 23
    /// assert_eq!(got, vec![[24, 23]; 3]);
    /// ```
    pub fn allreduce_in_place<T, O>(&self, buf: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        self.allreduce_into(&op, Mine::InAcc, buf)
    }

    /// Allreduce of `mine` into `acc` (same length), choosing the algorithm.
    pub(crate) fn allreduce_into<T, O>(
        &self,
        op: &O,
        mine: Mine<'_, T>,
        acc: &mut [T],
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let n = self.size();
        if n == 1 {
            if let Mine::Send(s) = mine {
                acc.copy_from_slice(s);
            }
            return Ok(());
        }
        if size_of_val(acc) == 0 {
            return Ok(());
        }
        if let Some(done) = self.node_allreduce(op, mine, acc) {
            return done;
        }
        let fold = Fold::new(n);
        if size_of_val(acc) >= ALLREDUCE_LARGE_BYTES && acc.len() >= fold.p {
            self.allreduce_rabenseifner(op, fold, mine, acc)
        } else {
            self.allreduce_doubling(op, fold, mine, acc)
        }
    }

    /// First step of every folded algorithm: an excluded rank hands its data
    /// to its partner; an absorbing rank combines it (lower) with its own,
    /// which is then in `acc`.
    fn fold_in<'a, T, O>(
        &self,
        op: &O,
        role: FoldRole,
        mine: Mine<'a, T>,
        acc: &mut [T],
        tmp: &mut [T],
        tag: crate::Tag,
    ) -> Result<Mine<'a, T>>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "allreduce";
        let par = self.par_bytes();
        match (role, mine) {
            (FoldRole::Excluded { partner }, Mine::Send(s)) => self.c_send(s, partner, tag)?,
            (FoldRole::Excluded { partner }, Mine::InAcc) => self.c_send(acc, partner, tag)?,
            (FoldRole::Absorbs { partner, .. }, Mine::Send(s)) => {
                self.c_recv(OP, acc, partner, tag)?;
                combine(op, acc, s, false, par);
                return Ok(Mine::InAcc);
            }
            (FoldRole::Absorbs { partner, .. }, Mine::InAcc) => {
                let t = &mut tmp[..acc.len()];
                self.c_recv(OP, t, partner, tag)?;
                combine(op, acc, t, true, par);
            }
            (FoldRole::Plain { .. }, _) => {}
        }
        Ok(mine)
    }

    /// Recursive doubling among the folded participants: in step `k`,
    /// participants `2^k` apart exchange everything they have reduced.
    fn allreduce_doubling<T, O>(
        &self,
        op: &O,
        fold: Fold,
        mine: Mine<'_, T>,
        acc: &mut [T],
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "allreduce";
        let role = fold.role(self.rank());
        let count = acc.len();
        let par = self.par_bytes();
        // With two participants and the contribution still in `send`, the one
        // exchange receives straight into `acc`: no scratch.
        let tmp_len = match (role, mine) {
            (FoldRole::Excluded { .. }, _) => 0,
            (FoldRole::Plain { .. }, Mine::Send(_)) if fold.p == 2 => 0,
            _ => count,
        };
        // Ranks that disagree on the count: every step is still taken (see
        // `go_on`), and the first such error returned at the end.
        let mut first = Ok(());
        with_scratch(tmp_len, |tmp: &mut [T]| {
            let mut mine = match self.fold_in(op, role, mine, acc, tmp, tag::ALLREDUCE) {
                Ok(m) => m,
                Err(e) => {
                    go_on(&mut first, Err(e))?;
                    Mine::InAcc
                }
            };
            let newrank = match role {
                FoldRole::Excluded { partner } => {
                    let got = self.c_recv(OP, acc, partner, tag::ALLREDUCE);
                    go_on(&mut first, got)?;
                    return std::mem::replace(&mut first, Ok(()));
                }
                FoldRole::Absorbs { newrank, .. } | FoldRole::Plain { newrank } => newrank,
            };
            let mut mask = 1;
            while mask < fold.p {
                let pn = newrank ^ mask;
                let peer = fold.real(pn);
                let lower = pn < newrank;
                match mine {
                    Mine::Send(s) => {
                        let got = self.c_sendrecv(OP, s, peer, acc, peer, tag::ALLREDUCE);
                        go_on(&mut first, got)?;
                        combine(op, acc, s, !lower, par);
                        mine = Mine::InAcc;
                    }
                    Mine::InAcc => {
                        let t = &mut tmp[..count];
                        let got = self.c_sendrecv(OP, acc, peer, t, peer, tag::ALLREDUCE);
                        go_on(&mut first, got)?;
                        combine(op, acc, t, lower, par);
                    }
                }
                mask <<= 1;
            }
            if let FoldRole::Absorbs { partner, .. } = role {
                self.c_send(acc, partner, tag::ALLREDUCE)?;
            }
            std::mem::replace(&mut first, Ok(()))
        })
    }

    /// Recursive-halving reduce-scatter among the folded participants; each
    /// ends with one fully reduced block of `acc`. Returns the participant's
    /// new rank, or `None` for an excluded rank (which has sent its data).
    /// A count disagreement is kept in `first` and the steps go on (`go_on`).
    #[allow(clippy::too_many_arguments)]
    fn reduce_scatter_halving<T, O>(
        &self,
        op: &O,
        fold: Fold,
        mine: Mine<'_, T>,
        acc: &mut [T],
        tmp: &mut [T],
        tag: crate::Tag,
        first: &mut Result<()>,
    ) -> Result<Option<usize>>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "reduce";
        let role = fold.role(self.rank());
        let count = acc.len();
        let par = self.par_bytes();
        let mut mine = match self.fold_in(op, role, mine, acc, tmp, tag) {
            Ok(m) => m,
            Err(e) => {
                go_on(first, Err(e))?;
                Mine::InAcc
            }
        };
        let newrank = match role {
            FoldRole::Excluded { .. } => return Ok(None),
            FoldRole::Absorbs { newrank, .. } | FoldRole::Plain { newrank } => newrank,
        };
        let h = Halving {
            p: fold.p,
            v: newrank,
        };
        for j in 0..h.steps() {
            let st = h.step(j);
            let peer = fold.real(st.partner);
            let lower = st.partner < newrank;
            let keep = block_range(count, fold.p, st.keep);
            let give = block_range(count, fold.p, st.give);
            match mine {
                Mine::Send(s) => {
                    let got =
                        self.c_sendrecv(OP, &s[give], peer, &mut acc[keep.clone()], peer, tag);
                    go_on(first, got)?;
                    combine(op, &mut acc[keep.clone()], &s[keep], !lower, par);
                    mine = Mine::InAcc;
                }
                Mine::InAcc => {
                    let t = &mut tmp[..keep.len()];
                    go_on(first, self.c_sendrecv(OP, &acc[give], peer, t, peer, tag))?;
                    combine(op, &mut acc[keep], t, lower, par);
                }
            }
        }
        Ok(Some(newrank))
    }

    /// Scratch needed by [`Comm::reduce_scatter_halving`]: the larger first half,
    /// or everything for an absorbing rank reducing in place.
    fn halving_scratch<T>(&self, fold: Fold, mine: &Mine<'_, T>, count: usize) -> usize {
        match (fold.role(self.rank()), mine) {
            (FoldRole::Excluded { .. }, _) => 0,
            (FoldRole::Absorbs { .. }, Mine::InAcc) => count,
            _ => {
                let mid = block_range(count, fold.p, 0..fold.p / 2).end;
                mid.max(count - mid)
            }
        }
    }

    /// Rabenseifner allreduce: recursive-halving reduce-scatter, then the same
    /// steps backwards as a recursive-doubling allgather.
    fn allreduce_rabenseifner<T, O>(
        &self,
        op: &O,
        fold: Fold,
        mine: Mine<'_, T>,
        acc: &mut [T],
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "allreduce";
        let count = acc.len();
        let tmp_len = self.halving_scratch(fold, &mine, count);
        // Every step is taken even after a disagreement on counts (`go_on`).
        let mut first = Ok(());
        let got = with_scratch(tmp_len, |tmp: &mut [T]| {
            self.reduce_scatter_halving(op, fold, mine, acc, tmp, tag::ALLREDUCE, &mut first)
        })?;
        let Some(newrank) = got else {
            let FoldRole::Excluded { partner } = fold.role(self.rank()) else {
                unreachable!("only excluded ranks leave the halving");
            };
            go_on(&mut first, self.c_recv(OP, acc, partner, tag::ALLREDUCE))?;
            return first;
        };
        let h = Halving {
            p: fold.p,
            v: newrank,
        };
        for j in (0..h.steps()).rev() {
            let st = h.step(j);
            let peer = fold.real(st.partner);
            let keep = block_range(count, fold.p, st.keep);
            let give = block_range(count, fold.p, st.give);
            let (sb, rb) = split_ranges(acc, keep, give);
            go_on(
                &mut first,
                self.c_sendrecv(OP, sb, peer, rb, peer, tag::ALLREDUCE),
            )?;
        }
        if let FoldRole::Absorbs { partner, .. } = fold.role(self.rank()) {
            self.c_send(acc, partner, tag::ALLREDUCE)?;
        }
        first
    }

    /// Rabenseifner reduce: recursive-halving reduce-scatter, then a binomial
    /// gather of the blocks to the participant standing for `root`.
    fn reduce_rabenseifner<T, O>(
        &self,
        op: &O,
        send: &[T],
        recv: &mut [T],
        root: usize,
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "reduce";
        let (n, r) = (self.size(), self.rank());
        let count = send.len();
        let fold = Fold::new(n);
        let role = fold.role(r);
        if let FoldRole::Excluded { partner } = role {
            self.c_send(send, partner, tag::REDUCE)?;
            if r == root {
                return self.c_recv(OP, recv, partner, tag::REDUCE_FWD);
            }
            return Ok(());
        }
        // The participant standing for the root gathers the result.
        let proot = match fold.role(root) {
            FoldRole::Excluded { partner } => partner,
            _ => root,
        };
        let newroot = fold.newrank_of(root);
        let body = |acc: &mut [T]| -> Result<()> {
            // Every step is taken even after a disagreement on counts (`go_on`).
            let mut first = Ok(());
            let mine = Mine::Send(send);
            let tmp_len = self.halving_scratch(fold, &mine, count);
            let newrank = with_scratch(tmp_len, |tmp: &mut [T]| {
                self.reduce_scatter_halving(op, fold, mine, acc, tmp, tag::REDUCE, &mut first)
            })?
            .expect("participants return their new rank");
            let h = Halving {
                p: fold.p,
                v: newrank,
            };
            for j in (0..h.steps()).rev() {
                let st = h.step(j);
                let peer = fold.real(st.partner);
                if (newrank ^ newroot) & (1 << j) != 0 {
                    let keep = block_range(count, fold.p, st.keep);
                    self.c_send(&acc[keep], peer, tag::REDUCE)?;
                    return first;
                }
                let give = block_range(count, fold.p, st.give);
                go_on(
                    &mut first,
                    self.c_recv(OP, &mut acc[give], peer, tag::REDUCE),
                )?;
            }
            if proot != root {
                self.c_send(acc, root, tag::REDUCE_FWD)?;
            }
            first
        };
        if r == root {
            body(recv)
        } else {
            let mut acc = vec![T::zeroed(); count];
            body(&mut acc)
        }
    }

    /// Binomial reduce: each node combines its children's subtrees (higher
    /// ranks, nearest first) after its own contribution and passes the result
    /// up. Rooted at `root` for commutative operations; at rank 0, then
    /// forwarded to `root`, otherwise, so that every subtree is a contiguous
    /// range of ranks.
    fn reduce_binomial<T, O>(&self, op: &O, send: &[T], recv: &mut [T], root: usize) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "reduce";
        let (n, r) = (self.size(), self.rank());
        let count = send.len();
        let par = self.par_bytes();
        let troot = if op.commutative() { root } else { 0 };
        let v = rel(r, troot, n);
        let tree = Binomial::new(v, n);
        let nchildren = tree.children().count();
        if nchildren == 0 {
            let parent = tree
                .parent()
                .expect("a leaf of a tree of two or more has a parent");
            self.c_send(send, real(parent, troot, n), tag::REDUCE)?;
        } else {
            let tmp_len = if nchildren > 1 { count } else { 0 };
            let body = |acc: &mut [T]| -> Result<()> {
                // Every child is received and the parent sent to even after
                // a disagreement on counts (`go_on`).
                let mut first = Ok(());
                with_scratch(tmp_len, |tmp: &mut [T]| {
                    for (i, c) in tree.children().enumerate() {
                        let src = real(c, troot, n);
                        if i == 0 {
                            go_on(&mut first, self.c_recv(OP, acc, src, tag::REDUCE))?;
                            combine(op, acc, send, true, par);
                        } else {
                            go_on(&mut first, self.c_recv(OP, tmp, src, tag::REDUCE))?;
                            combine(op, acc, tmp, false, par);
                        }
                    }
                    match tree.parent() {
                        Some(p) => self.c_send(acc, real(p, troot, n), tag::REDUCE)?,
                        None if troot != root => self.c_send(acc, root, tag::REDUCE_FWD)?,
                        None => {}
                    }
                    std::mem::replace(&mut first, Ok(()))
                })
            };
            if r == root && v == 0 {
                body(recv)?;
            } else {
                with_scratch(count, body)?;
            }
        }
        if r == root && troot != root {
            self.c_recv(OP, recv, troot, tag::REDUCE_FWD)?;
        }
        Ok(())
    }
}
