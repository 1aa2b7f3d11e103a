//! Nonblocking collectives on raw pointers, not tied to a [`crate::scope`]:
//! for bindings whose requests outlive any Rust borrow (the MPI C interface
//! of the `dos-mpi` crate). [`Comm::icoll_detached`] checks the arguments as
//! the scoped `i`-collectives do, starts the same schedule, and returns a
//! [`DetachedRequest`] that completes with it (wait, test, or pass it to
//! [`DetachedRequest::wait_any_done`] with point-to-point ones). Progress is
//! the engine's: the schedule advances in any dos call on the thread that
//! started it.

use bytemuck::Pod;

use super::super::{bad_buffer, check_layout, check_len, mul};
use super::plan::*;
use crate::detached::DetachedRequest;
use crate::op::Op;
use crate::{Comm, Result};

/// A layout of blocks: `counts[i]` elements at `displs[i]`.
pub type BlockLayout<'a> = (&'a [usize], &'a [usize]);

/// Which nonblocking collective [`Comm::icoll_detached`] starts, with its
/// arguments other than the buffers. Lengths and counts are in elements of
/// the buffers' type.
// Each variant's doc describes its fields.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy)]
pub enum NbColl<'a> {
    /// `MPI_Ibarrier` (no buffers).
    Barrier,
    /// `MPI_Ibcast` of `recv` from `root`.
    Bcast { root: usize },
    /// `MPI_Ireduce` into `recv` at `root`. `in_place`: at the root, `recv`
    /// holds its contribution (no `send`); elsewhere `send` is the
    /// contribution.
    Reduce { root: usize, in_place: bool },
    /// `MPI_Iallreduce`. `in_place`: `recv` holds the contribution.
    Allreduce { in_place: bool },
    /// `MPI_Ireduce_scatter_block`: `send` is `size()` blocks of `recv.len()`.
    ReduceScatterBlock,
    /// `MPI_Ireduce_scatter` with `counts` per rank.
    ReduceScatter { counts: &'a [usize] },
    /// `MPI_Igather` of blocks of `blk` into `recv` at `root`. `in_place`: the
    /// root's own block is in `recv` already (no `send` there).
    Gather {
        root: usize,
        blk: usize,
        in_place: bool,
    },
    /// `MPI_Iscatter` of blocks of `blk` from `send` at `root`. `in_place`:
    /// the root keeps its block in `send` (no `recv` there).
    Scatter {
        root: usize,
        blk: usize,
        in_place: bool,
    },
    /// `MPI_Iallgather`: `recv` is `size()` blocks of `send.len()`.
    Allgather,
    /// `MPI_Ialltoall`: both buffers `size()` equal blocks.
    Alltoall,
    /// `MPI_Igatherv` at `root` (the layout significant there only).
    Gatherv {
        root: usize,
        layout: BlockLayout<'a>,
    },
    /// `MPI_Iscatterv` from `root` (the layout significant there only).
    Scatterv {
        root: usize,
        layout: BlockLayout<'a>,
    },
    /// `MPI_Iallgatherv`.
    Allgatherv { layout: BlockLayout<'a> },
    /// `MPI_Ialltoallv` with send and receive layouts.
    Alltoallv {
        send: BlockLayout<'a>,
        recv: BlockLayout<'a>,
    },
    /// `MPI_Iscan` (`inclusive`) or `MPI_Iexscan`.
    Scan { inclusive: bool },
}

impl Comm {
    /// Starts the nonblocking collective `what` on `send[..send_len]` and
    /// `recv[..recv_len]` with operation `op` (ignored by those that do not
    /// reduce), and returns its request.
    ///
    /// # Errors
    /// As the scoped `i`-collectives ([`Comm::ibcast`], ...): a bad root
    /// ([`crate::Error::InvalidRank`]) or buffers of the wrong length
    /// ([`crate::Error::InvalidBuffer`]), before any communication.
    ///
    /// # Safety
    /// `send[..send_len]` must stay readable, and `recv[..recv_len]`
    /// writable and untouched by anything else, until the request has
    /// completed or been abandoned; the two must not overlap.
    pub unsafe fn icoll_detached<T, O>(
        &self,
        what: NbColl<'_>,
        send: *const T,
        send_len: usize,
        recv: *mut T,
        recv_len: usize,
        op: O,
    ) -> Result<DetachedRequest>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 'static,
    {
        let (n, r) = (self.size(), self.rank());
        let (name, plan) = match what {
            NbColl::Barrier => ("ibarrier", plan_barrier(r, n)),
            NbColl::Bcast { root } => {
                self.check_root(root)?;
                ("ibcast", plan_bcast(r, n, root, recv_len))
            }
            NbColl::Reduce { root, in_place } => {
                self.check_root(root)?;
                let count = if in_place && r == root {
                    recv_len
                } else {
                    send_len
                };
                if r == root && !in_place {
                    check_len("ireduce", "recv", recv_len, send_len)?;
                }
                ("ireduce", plan_reduce(r, n, root, count, in_place))
            }
            NbColl::Allreduce { in_place } => {
                if !in_place {
                    check_len("iallreduce", "recv", recv_len, send_len)?;
                }
                ("iallreduce", plan_allreduce(r, n, recv_len, in_place))
            }
            NbColl::ReduceScatterBlock => {
                const OP: &str = "ireduce_scatter_block";
                check_len(OP, "send", send_len, mul(OP, n, recv_len)?)?;
                (OP, plan_reduce_scatter_block(r, n, recv_len))
            }
            NbColl::ReduceScatter { counts } => {
                const OP: &str = "ireduce_scatter";
                check_len(OP, "counts", counts.len(), n)?;
                let total = counts
                    .iter()
                    .try_fold(0usize, |a, &c| a.checked_add(c))
                    .ok_or_else(|| bad_buffer(OP, "counts overflow".to_string()))?;
                check_len(OP, "send", send_len, total)?;
                check_len(OP, "recv", recv_len, counts[r])?;
                let start = counts[..r].iter().sum();
                (OP, plan_reduce_scatter(r, n, total, start, counts[r]))
            }
            NbColl::Gather {
                root,
                blk,
                in_place,
            } => {
                const OP: &str = "igather";
                self.check_root(root)?;
                if r == root {
                    check_len(OP, "recv", recv_len, mul(OP, n, blk)?)?;
                }
                if !(in_place && r == root) {
                    check_len(OP, "send", send_len, blk)?;
                }
                (OP, plan_gather(r, n, root, blk, in_place && r == root))
            }
            NbColl::Scatter {
                root,
                blk,
                in_place,
            } => {
                const OP: &str = "iscatter";
                self.check_root(root)?;
                if r == root {
                    check_len(OP, "send", send_len, mul(OP, n, blk)?)?;
                }
                if !(in_place && r == root) {
                    check_len(OP, "recv", recv_len, blk)?;
                }
                (OP, plan_scatter(r, n, root, blk, in_place && r == root))
            }
            NbColl::Allgather => {
                const OP: &str = "iallgather";
                check_len(OP, "recv", recv_len, mul(OP, n, send_len)?)?;
                (OP, plan_allgather(r, n, send_len))
            }
            NbColl::Alltoall => {
                const OP: &str = "ialltoall";
                check_len(OP, "recv", recv_len, send_len)?;
                if send_len % n != 0 {
                    return Err(bad_buffer(
                        OP,
                        format!("{send_len} elements do not split into {n} blocks"),
                    ));
                }
                (OP, plan_alltoall(r, n, send_len / n))
            }
            NbColl::Gatherv { root, layout } => {
                const OP: &str = "igatherv";
                self.check_root(root)?;
                if r == root {
                    check_layout(OP, "recv", layout.0, layout.1, n, recv_len)?;
                    check_len(OP, "send", send_len, layout.0[r])?;
                    check_disjoint(OP, layout)?;
                }
                (OP, plan_gatherv(r, n, root, send_len, layout))
            }
            NbColl::Scatterv { root, layout } => {
                const OP: &str = "iscatterv";
                self.check_root(root)?;
                if r == root {
                    check_layout(OP, "send", layout.0, layout.1, n, send_len)?;
                    check_len(OP, "recv", recv_len, layout.0[r])?;
                }
                (OP, plan_scatterv(r, n, root, recv_len, layout))
            }
            NbColl::Allgatherv { layout } => {
                const OP: &str = "iallgatherv";
                check_layout(OP, "recv", layout.0, layout.1, n, recv_len)?;
                check_len(OP, "send", send_len, layout.0[r])?;
                check_disjoint(OP, layout)?;
                (OP, plan_allgatherv(r, n, layout))
            }
            NbColl::Alltoallv { send: s, recv: v } => {
                const OP: &str = "ialltoallv";
                check_layout(OP, "send", s.0, s.1, n, send_len)?;
                check_layout(OP, "recv", v.0, v.1, n, recv_len)?;
                check_disjoint(OP, v)?;
                if s.0[r] != v.0[r] {
                    return Err(bad_buffer(
                        OP,
                        format!("sends {} elements to itself but expects {}", s.0[r], v.0[r]),
                    ));
                }
                (OP, plan_alltoallv(r, n, s, v))
            }
            NbColl::Scan { inclusive } => {
                let name = if inclusive { "iscan" } else { "iexscan" };
                check_len(name, "recv", recv_len, send_len)?;
                (name, plan_scan(r, n, send_len, inclusive))
            }
        };
        // SAFETY: this function's contract.
        let id = unsafe { self.start_detached(name, plan, send, send_len, recv, recv_len, op)? };
        Ok(DetachedRequest::from_engine(self.eng.clone(), id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::run::NoOp as NoOpFor;
    use super::NbColl;
    use crate::op::Sum;
    use crate::Error;

    #[test]
    fn detached_collectives_complete_and_check_their_arguments() {
        crate::testing::run_threads(3, |w| {
            let c = w.comm();
            let me = w.rank() as u64;
            let mine = [me + 1, 10 * (me + 1)];
            let mut sum = [0u64; 2];
            let counts = [1usize, 2, 3];
            let displs = [0usize, 1, 3];
            let part = vec![me; counts[w.rank()]];
            let mut all = [9u64; 6];
            // SAFETY: the buffers outlive the requests, waited for below.
            let (a, g) = unsafe {
                let a = c.icoll_detached(
                    NbColl::Allreduce { in_place: false },
                    mine.as_ptr(),
                    2,
                    sum.as_mut_ptr(),
                    2,
                    Sum,
                );
                let layout = (&counts[..], &displs[..]);
                let g = c.icoll_detached(
                    NbColl::Allgatherv { layout },
                    part.as_ptr(),
                    part.len(),
                    all.as_mut_ptr(),
                    6,
                    NoOpFor,
                );
                (a.unwrap(), g.unwrap())
            };
            g.wait().unwrap();
            a.wait().unwrap();
            assert_eq!(sum, [6, 60]);
            assert_eq!(all, [0, 1, 1, 2, 2, 2]);
            // Bad arguments: typed errors, nothing started.
            // SAFETY: nothing is started.
            unsafe {
                let bad_root = c.icoll_detached::<u64, _>(
                    NbColl::Bcast { root: 3 },
                    std::ptr::null(),
                    0,
                    sum.as_mut_ptr(),
                    2,
                    NoOpFor,
                );
                assert!(
                    matches!(bad_root, Err(Error::InvalidRank { .. })),
                    "{bad_root:?}"
                );
                let short = c.icoll_detached(
                    NbColl::Allreduce { in_place: false },
                    mine.as_ptr(),
                    2,
                    sum.as_mut_ptr(),
                    1,
                    Sum,
                );
                assert!(
                    matches!(short, Err(Error::InvalidBuffer { .. })),
                    "{short:?}"
                );
            }
        });
    }
}
