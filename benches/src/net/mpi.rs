//! [`Net`] over MPI (rsmpi), for side-by-side comparison with dos.
//!
//! MPI's default error handler aborts the job on any failure, so these
//! operations only ever return `Ok`.

use ::mpi::collective::SystemOperation;
use ::mpi::environment::Universe;
use ::mpi::point_to_point::{Destination, Source};
use ::mpi::request::multiple_scope;
use ::mpi::topology::{Communicator, SimpleCommunicator};
use ::mpi::traits::{CommunicatorCollectives, Root};

use super::{pieces, Net};
use crate::{Error, Result};

/// `MPI_COMM_WORLD`. Dropping it finalizes MPI.
pub struct MpiNet {
    // Declared before the universe so that it is dropped before MPI_Finalize.
    world: SimpleCommunicator,
    _universe: Universe,
}

impl std::fmt::Debug for MpiNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiNet")
            .field("rank", &self.world.rank())
            .field("size", &self.world.size())
            .finish()
    }
}

fn rank_i32(r: usize) -> i32 {
    // Ranks come from `size()`, which is an `i32` in MPI.
    i32::try_from(r).unwrap_or(i32::MAX)
}

impl MpiNet {
    /// `MPI_Init`.
    pub fn init() -> Result<MpiNet> {
        let universe = ::mpi::initialize().ok_or(Error::MpiInit)?;
        Ok(MpiNet {
            world: universe.world(),
            _universe: universe,
        })
    }
}

impl Net for MpiNet {
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    #[inline]
    fn send(&self, buf: &[u8], dest: usize, tag: i32) -> Result<()> {
        self.world
            .process_at_rank(rank_i32(dest))
            .send_with_tag(buf, tag);
        Ok(())
    }

    #[inline]
    fn recv(&self, buf: &mut [u8], src: usize, tag: i32) -> Result<()> {
        self.world
            .process_at_rank(rank_i32(src))
            .receive_into_with_tag(buf, tag);
        Ok(())
    }

    fn send_window(&self, buf: &[u8], n: usize, dest: usize, tag: i32) -> Result<()> {
        let p = self.world.process_at_rank(rank_i32(dest));
        multiple_scope(n, |scope, coll| {
            for _ in 0..n {
                coll.add(p.immediate_send_with_tag(scope, buf, tag));
            }
            let mut done = Vec::with_capacity(n);
            coll.wait_all(&mut done);
        });
        Ok(())
    }

    fn recv_window(
        &self,
        bufs: &mut [u8],
        len: usize,
        n: usize,
        src: usize,
        tag: i32,
    ) -> Result<()> {
        let p = self.world.process_at_rank(rank_i32(src));
        multiple_scope(n, |scope, coll| {
            for piece in pieces(bufs, len, n) {
                coll.add(p.immediate_receive_into_with_tag(scope, piece, tag));
            }
            let mut done = Vec::with_capacity(n);
            coll.wait_all(&mut done);
        });
        Ok(())
    }

    fn exchange_window(
        &self,
        sbuf: &[u8],
        rbufs: &mut [u8],
        n: usize,
        peer: usize,
        tag: i32,
    ) -> Result<()> {
        let p = self.world.process_at_rank(rank_i32(peer));
        let len = sbuf.len();
        multiple_scope(2 * n, |scope, coll| {
            for piece in pieces(rbufs, len, n) {
                coll.add(p.immediate_receive_into_with_tag(scope, piece, tag));
            }
            for _ in 0..n {
                coll.add(p.immediate_send_with_tag(scope, sbuf, tag));
            }
            let mut done = Vec::with_capacity(2 * n);
            coll.wait_all(&mut done);
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn bcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.world
            .process_at_rank(rank_i32(root))
            .broadcast_into(buf);
        Ok(())
    }

    fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.world
            .all_reduce_into(send, recv, SystemOperation::sum());
        Ok(())
    }

    fn alltoall(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.world.all_to_all_into(send, recv);
        Ok(())
    }

    fn abort(&self, code: i32, msg: &str) -> ! {
        eprintln!("dosbench: {msg}");
        self.world.abort(code)
    }

    fn finalize(self) -> Result<()> {
        drop(self);
        Ok(())
    }
}
