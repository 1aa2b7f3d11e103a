//! `bcast`: binomial tree, or scatter + ring allgather (van de Geijn) for
//! large buffers, or flat (the root to every rank) for large buffers when the
//! job's ranks outnumber the node's CPUs (see `coll::bcast_algorithm`).

use std::mem::size_of_val;
use std::ops::Range;

use bytemuck::Pod;

use crate::coll::sched::{real, rel, ring_blocks, Binomial};
use crate::coll::{bcast_algorithm, go_on, split_ranges, tag, BcastAlgo, Window, TREE_WINDOW};
use crate::{Comm, Result};

const OP: &str = "bcast";

impl Comm {
    /// Copies `buf` of rank `root` into `buf` of every other rank (`MPI_Bcast`).
    ///
    /// Every rank passes a buffer of the same length. Small buffers travel
    /// down a binomial tree; large ones (from 16 KiB on at
    /// least 4 ranks) are scattered down the tree
    /// in pieces and reassembled with a ring allgather, except when the
    /// job's ranks outnumber the node's CPUs (a job on one node): then from
    /// 16 KiB on the root sends to every rank itself (up to 16 ranks; the
    /// tree beyond), in one step and with the least copying.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] if `root` is not a rank of the communicator.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut x = if world.rank() == 1 { [7u32, 8] } else { [0, 0] };
    ///     world.bcast(&mut x, 1).unwrap();
    ///     assert_eq!(x, [7, 8]);
    /// });
    /// ```
    pub fn bcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.check_root(root)?;
        let n = self.size();
        let bytes = size_of_val(buf);
        if n == 1 || bytes == 0 {
            return Ok(());
        }
        if let Some(done) = self.node_bcast(buf, root) {
            return done;
        }
        match bcast_algorithm(bytes, n, self.oversubscribed()) {
            BcastAlgo::ScatterRing => self.bcast_scatter_ring(buf, root),
            BcastAlgo::Flat => self.bcast_flat(buf, root),
            BcastAlgo::Binomial => self.bcast_binomial(buf, root),
        }
    }

    /// The root sends to every rank itself (in windows of [`TREE_WINDOW`]).
    fn bcast_flat<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let n = self.size();
        if self.rank() != root {
            return self.c_recv(OP, buf, root, tag::BCAST);
        }
        let buf: &[T] = buf;
        crate::scope(|s| {
            let mut w = Window::<TREE_WINDOW>::new(OP);
            for i in 1..n {
                self.c_isend(s, &mut w, buf, (root + i) % n, tag::BCAST)?;
            }
            w.wait_all()
        })
    }

    fn bcast_binomial<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let n = self.size();
        let tree = Binomial::new(rel(self.rank(), root, n), n);
        // A rank whose receive fails (ranks that disagree on the count)
        // still forwards what it has, so that its subtree ends the call too
        // (with an error of its own) instead of waiting forever.
        let got = match tree.parent() {
            Some(parent) => self.c_recv(OP, buf, real(parent, root, n), tag::BCAST),
            None => Ok(()),
        };
        let buf: &[T] = buf;
        let sent = crate::scope(|s| {
            let mut w = Window::<TREE_WINDOW>::new(OP);
            for c in tree.children().rev() {
                self.c_isend(s, &mut w, buf, real(c, root, n), tag::BCAST)?;
            }
            w.wait_all()
        });
        got.and(sent)
    }

    /// Van de Geijn: relative rank `v` owns chunk `v`; a binomial scatter
    /// gives every rank its chunk, a ring allgather gives it the others.
    fn bcast_scatter_ring<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let n = self.size();
        let count = buf.len();
        let c = count.div_ceil(n);
        let chunks =
            |a: usize, b: usize| -> Range<usize> { (a * c).min(count)..(b * c).min(count) };
        let v = rel(self.rank(), root, n);
        let tree = Binomial::new(v, n);
        // Every step is taken even after a disagreement on counts (`go_on`).
        let mut first = Ok(());
        if let Some(parent) = tree.parent() {
            let r = chunks(v, tree.end());
            let got = self.c_recv(OP, &mut buf[r], real(parent, root, n), tag::BCAST);
            go_on(&mut first, got)?;
        }
        {
            let buf: &[T] = buf;
            crate::scope(|s| {
                let mut w = Window::<TREE_WINDOW>::new(OP);
                for ch in tree.children().rev() {
                    let r = chunks(ch, Binomial::new(ch, n).end());
                    self.c_isend(s, &mut w, &buf[r], real(ch, root, n), tag::BCAST)?;
                }
                w.wait_all()
            })?;
        }
        let ring = self.ring_allgather(
            OP,
            buf,
            |i| chunks(i, i + 1),
            v,
            |i| real(i, root, n),
            tag::BCAST_RING,
        );
        first.and(ring)
    }

    /// Ring allgather in place: position `v` of the ring (real rank `real(v)`)
    /// holds `block(v)` of `buf` and ends with every block.
    pub(crate) fn ring_allgather<T: Pod>(
        &self,
        op: &'static str,
        buf: &mut [T],
        block: impl Fn(usize) -> Range<usize>,
        v: usize,
        real: impl Fn(usize) -> usize,
        tag: crate::Tag,
    ) -> Result<()> {
        let n = self.size();
        let right = real((v + 1) % n);
        let left = real((v + n - 1) % n);
        // Every step is taken even after a disagreement on counts (`go_on`).
        let mut first = Ok(());
        for s in 0..n - 1 {
            let (out, inc) = ring_blocks(v, n, s);
            let (sb, rb) = split_ranges(buf, block(out), block(inc));
            go_on(&mut first, self.c_sendrecv(op, sb, right, rb, left, tag))?;
        }
        first
    }
}
