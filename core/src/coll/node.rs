//! Node-level collectives through shared-memory slots.
//!
//! When every rank of a communicator is on this node (and its context is one
//! of the first `COLL_CTXS`), small barriers, broadcasts, reductions,
//! allgathers and alltoalls skip
//! messages altogether: each rank has a slot per context in the node's
//! segment ([`super::slot::CollSlot`]), writes its contribution
//! there and reads the others' slots. An allreduce is then one round (write
//! mine, read everyone's, reduce in rank order) instead of ⌈log2 n⌉ rounds of
//! messages; with more ranks than cores that is one round of context switches
//! instead of several.
//!
//! # Protocol
//!
//! Every call on the communicator is a generation `g = 1, 2, ...`, counted by
//! each rank (all ranks call collectives in the same order). Generation `g`
//! lives in the slots of parity `g % 2`. Each rank publishes its slot exactly
//! once per generation, after it finished reading the slots of the previous
//! generation, and before it publishes `g` it waits until every rank
//! published `g - 1`: then nobody still reads the generation `g - 2` being
//! overwritten. A rank that publishes wakes the ranks that sleep (they
//! announce it in their control block and look at the slots once more before
//! sleeping), so no wake-up is lost.
//!
//! | collective | what each rank does |
//! | --- | --- |
//! | barrier | publish (empty), wait for all |
//! | bcast | root publishes the data; the others wait for it, copy, then publish (empty) |
//! | reduce | publish the contribution; the root waits for all and reduces in rank order |
//! | allreduce | publish the contribution, wait for all, reduce in rank order |
//! | allgather | publish the block, copy every rank's block |
//! | alltoall | publish the whole send buffer, copy block `me` of every rank's |
//!
//! Reductions combine `r0 ⊕ r1 ⊕ ... ⊕ r(n-1)` left to right, so every rank
//! gets the same bits and ordered operations hold.
//!
//! # Errors
//!
//! A rank that finds a part of the wrong length (ranks that disagree on
//! counts) still completes its steps of the generation, publishing its own
//! slot, before it returns [`crate::Error::InvalidBuffer`]: every rank
//! publishes every generation whatever happens, so the slots stay consistent
//! and the next collective on the communicator works. (Ranks whose counts
//! put them on different paths, one through the slots and one through
//! messages, or whose buffers fail the local checks on some ranks only, are
//! beyond repair: as in MPI, such a program is erroneous.)

use std::cell::Cell;
use std::mem::{align_of, size_of_val};
use std::rc::Rc;

use bytemuck::Pod;
use dos_transport::shm::ShmIface;

use super::bytes;
use super::reduce::Mine;
use super::slot::{coll_slot, CollSlot, COLL_CTXS};
use crate::engine::am::{Hooks, Service};
use crate::op::Op;
use crate::p2p::{Engine, Entered};
use crate::{Comm, Result};

/// Largest communicator that uses the flat slot algorithms (each rank reads
/// every slot, so their cost grows with the size).
pub(crate) const NODE_MAX_RANKS: usize = 16;

/// The shared-memory index of every rank in `peers` (world ranks), if all
/// are on this node, the context has slots and there are 2..=[`NODE_MAX_RANKS`] ranks.
pub(crate) fn local_indices(eng: &Engine, ctx: u32, peers: &[u32]) -> Option<Rc<[u32]>> {
    if (ctx as usize) >= COLL_CTXS
        || peers.len() < 2
        || peers.len() > NODE_MAX_RANKS
        || eng.config().node_coll_bytes == 0
    {
        return None;
    }
    eng.shm()?;
    peers
        .iter()
        .map(|&p| eng.local_index(p as usize).map(|i| i as u32))
        .collect()
}

/// One generation of a node-level collective.
struct Round<'a> {
    eng: Entered<'a>,
    ctx: usize,
    gen: u64,
    idx: &'a [u32],
    me: usize,
}

impl Round<'_> {
    #[inline]
    fn shm(&self) -> &ShmIface {
        self.eng.shm().expect("a node round has shared memory")
    }

    #[inline]
    fn slot(&self, gen: u64, rank: usize) -> &CollSlot {
        coll_slot(
            self.shm(),
            self.ctx,
            (gen & 1) as usize,
            self.idx[rank] as usize,
        )
        .expect("indices checked when the communicator was made")
    }

    #[inline]
    fn has(&self, rank: usize, gen: u64) -> bool {
        self.slot(gen, rank).generation() >= gen
    }

    /// Waits until every rank published generation `gen`, checking each once
    /// it is seen (a cursor, so each poll reads at most the slots not yet seen).
    fn wait_all(&self, gen: u64) -> Result<()> {
        let n = self.idx.len();
        let mut next = 0;
        self.eng.wait_until(|_| {
            while next < n && self.has(next, gen) {
                next += 1;
            }
            next == n
        })
    }

    /// Publishes this rank's part of the generation, once every rank has
    /// published the previous one, and wakes whoever sleeps.
    fn publish(&self, data: &[u8]) -> Result<()> {
        if self.gen > 1 {
            self.wait_all(self.gen - 1)?;
        }
        // SAFETY: we own our slot, and every rank published `gen - 1`, so
        // nobody still reads the generation `gen - 2` it held at this parity.
        unsafe { self.slot(self.gen, self.me).publish(self.gen, data) };
        self.shm().wake(self.idx.iter().map(|&i| i as usize));
        Ok(())
    }

    /// Waits for `rank`'s part of this generation and returns it.
    fn wait_for(&self, rank: usize) -> Result<&[u8]> {
        self.eng.wait_until(|_| self.has(rank, self.gen))?;
        // SAFETY: we saw `gen`; `rank` will not overwrite it before we publish
        // `gen + 1`, and the returned slice is dropped before we do.
        Ok(unsafe { self.slot(self.gen, rank).payload() })
    }
}

/// The contribution of `rank` in `round`, as a `T` slice.
///
/// Slots start on 64 bytes and payloads 16 bytes in; callers check the
/// alignment of `T` before choosing the node path.
fn part<'r, T: Pod>(round: &'r Round<'_>, rank: usize, len: usize) -> Result<&'r [T]> {
    let b = round.wait_for(rank)?;
    // A peer that disagrees about the count (a usage error on its side)
    // shows as a short part.
    let want = len * std::mem::size_of::<T>();
    if b.len() != want {
        return Err(crate::Error::InvalidBuffer {
            op: "node collective",
            reason: format!("rank {rank} contributed {} bytes, {want} expected", b.len()),
        });
    }
    Ok(bytemuck::cast_slice(b))
}

/// The node collectives as they register with the engine: no messages and
/// no hooks, only their state, the last generation of each context's slots.
pub(crate) static SERVICE: Service = Service {
    name: "node collectives",
    am: None,
    state: || Box::new(Generations::default()),
    hooks: Hooks::NONE,
};

/// The last node-collective generation of each context that has slots.
#[derive(Debug, Default)]
struct Generations([Cell<u64>; COLL_CTXS]);

/// Takes the next generation of context `ctx` (< `COLL_CTXS`).
#[inline]
fn next_gen(eng: &Engine, ctx: usize) -> u64 {
    let g = &eng.service::<Generations>(&SERVICE).0[ctx];
    g.set(g.get() + 1);
    g.get()
}

impl Comm {
    /// Starts a node round for a collective of `bytes` bytes of `T`, if this
    /// communicator takes the node path for it.
    fn node_round<T>(&self, bytes: usize) -> Option<Round<'_>> {
        let idx = self.node.as_deref()?;
        let eng = self.eng.enter();
        if bytes > eng.config().node_coll_bytes || align_of::<T>() > 16 {
            return None;
        }
        eng.shm()?;
        let ctx = self.ctx() as usize;
        Some(Round {
            gen: next_gen(&eng, ctx),
            eng,
            ctx,
            idx,
            me: self.rank(),
        })
    }

    /// Barrier through the slots; `None` if this communicator does not take that path.
    pub(crate) fn node_barrier(&self) -> Option<Result<()>> {
        let r = self.node_round::<u8>(0)?;
        Some(r.publish(&[]).and_then(|()| r.wait_all(r.gen)))
    }

    /// Broadcast through the slots; `None` if this call does not take that path.
    pub(crate) fn node_bcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Option<Result<()>> {
        let r = self.node_round::<T>(size_of_val(buf))?;
        Some((|| {
            if r.me == root {
                return r.publish(bytes(buf));
            }
            // Publish also when the root's part does not fit (ranks that
            // disagree on the count): every rank must publish every
            // generation, or the next collective waits for it forever.
            let got = part::<T>(&r, root, buf.len()).map(|got| buf.copy_from_slice(got));
            let published = r.publish(&[]);
            got.and(published)
        })())
    }

    /// Reduce through the slots; `None` if this call does not take that path.
    pub(crate) fn node_reduce<T, O>(
        &self,
        op: &O,
        send: &[T],
        recv: &mut [T],
        root: usize,
    ) -> Option<Result<()>>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let r = self.node_round::<T>(size_of_val(send))?;
        Some((|| {
            r.publish(bytes(send))?;
            if r.me == root {
                fold_parts(&r, op, recv)?;
            }
            Ok(())
        })())
    }

    /// Allreduce through the slots; `None` if this call does not take that path.
    pub(crate) fn node_allreduce<T, O>(
        &self,
        op: &O,
        mine: Mine<'_, T>,
        acc: &mut [T],
    ) -> Option<Result<()>>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let r = self.node_round::<T>(size_of_val(acc))?;
        Some((|| {
            match mine {
                Mine::Send(s) => r.publish(bytes(s))?,
                Mine::InAcc => r.publish(bytes(acc))?,
            }
            fold_parts(&r, op, acc)
        })())
    }
}

impl Comm {
    /// Allgather through the slots (the whole send buffer of one rank must
    /// fit a slot); `None` if this call does not take that path.
    pub(crate) fn node_allgather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Option<Result<()>> {
        let r = self.node_round::<T>(size_of_val(send))?;
        Some((|| {
            r.publish(bytes(send))?;
            let blk = send.len();
            for (rank, out) in recv.chunks_exact_mut(blk).enumerate() {
                out.copy_from_slice(part(&r, rank, blk)?);
            }
            Ok(())
        })())
    }

    /// Alltoall through the slots (the whole send buffer of one rank must
    /// fit a slot); `None` if this call does not take that path.
    pub(crate) fn node_alltoall<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Option<Result<()>> {
        let r = self.node_round::<T>(size_of_val(send))?;
        Some((|| {
            r.publish(bytes(send))?;
            let blk = send.len() / r.idx.len();
            for (rank, out) in recv.chunks_exact_mut(blk).enumerate() {
                let theirs: &[T] = part(&r, rank, send.len())?;
                out.copy_from_slice(&theirs[r.me * blk..(r.me + 1) * blk]);
            }
            Ok(())
        })())
    }
}

/// `acc = part(0) ⊕ part(1) ⊕ ... ⊕ part(n-1)`, left to right.
fn fold_parts<T, O>(r: &Round<'_>, op: &O, acc: &mut [T]) -> Result<()>
where
    T: Pod + Send + Sync,
    O: Op<T>,
{
    let first: &[T] = part(r, 0, acc.len())?;
    acc.copy_from_slice(first);
    for rank in 1..r.idx.len() {
        let b: &[T] = part(r, rank, acc.len())?;
        op.apply_right(acc, b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::run_threads;

    #[test]
    fn node_path_is_taken_where_it_applies() {
        run_threads(4, |w| {
            assert!(w.node.is_some(), "world of one node");
            let half = w.split(Some(w.rank() as u32 % 2), 0).unwrap().unwrap();
            assert!(half.node.is_some(), "split of one node");
            let alone = w.split(Some(w.rank() as u32), 0).unwrap().unwrap();
            assert!(alone.node.is_none(), "a rank alone needs no slots");
        });
        let cfg = crate::config::Config {
            node_coll_bytes: 0,
            ..crate::config::Config::default()
        };
        crate::testing::run_threads_with(2, cfg, |w| assert!(w.node.is_none()));
    }

    #[test]
    fn ordered_ops_reduce_in_rank_order() {
        let concat = crate::op::user_ordered(|a: u64, b: u64| a * 10 + b);
        let got = run_threads(5, |w| {
            let mut x = [0u64];
            w.allreduce(&[w.rank() as u64 + 1], &mut x, concat).unwrap();
            let mut y = [0u64];
            let recv: &mut [u64] = if w.rank() == 3 { &mut y } else { &mut [] };
            w.reduce(&[w.rank() as u64 + 1], recv, concat, 3).unwrap();
            (x[0], y[0])
        });
        assert!(got.iter().all(|&(x, _)| x == 12345));
        assert_eq!(got[3].1, 12345);
    }
}
