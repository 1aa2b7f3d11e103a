//! `scan`, `exscan`: recursive doubling (Hillis–Steele).

use std::mem::size_of_val;

use bytemuck::Pod;

use crate::coll::{check_len, combine, tag, with_scratch};
use crate::op::Op;
use crate::{Comm, Result};

impl Comm {
    /// Inclusive prefix reduction: rank `i` gets `send` of ranks `0..=i`
    /// combined with `op` in rank order (`MPI_Scan`).
    ///
    /// `recv` must be as long as `send`. Recursive doubling: ⌈log2 n⌉ rounds
    /// of exchanges with ranks `2^k` apart.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    ///
    /// ```
    /// dos::testing::run_threads(4, |world| {
    ///     let mut prefix = [0u32];
    ///     world.scan(&[world.rank() as u32 + 1], &mut prefix, dos::op::Sum).unwrap();
    ///     let r = world.rank() as u32 + 1;
    ///     assert_eq!(prefix[0], r * (r + 1) / 2);
    /// });
    /// ```
    pub fn scan<T, O>(&self, send: &[T], recv: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        check_len("scan", "recv", recv.len(), send.len())?;
        recv.copy_from_slice(send);
        self.prefix(&op, send, recv, true)
    }

    /// Exclusive prefix reduction: rank `i > 0` gets `send` of ranks `0..i`
    /// combined with `op` in rank order; rank 0's `recv` is left untouched
    /// (`MPI_Exscan`).
    ///
    /// `recv` must be as long as `send`. Recursive doubling, like [`Comm::scan`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut before = [u64::MAX];
    ///     world.exscan(&[10], &mut before, dos::op::Sum).unwrap();
    ///     let want = if world.rank() == 0 { u64::MAX } else { 10 * world.rank() as u64 };
    ///     assert_eq!(before[0], want);
    /// });
    /// ```
    pub fn exscan<T, O>(&self, send: &[T], recv: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        check_len("exscan", "recv", recv.len(), send.len())?;
        self.prefix(&op, send, recv, false)
    }

    /// Recursive doubling: before step `mask` a rank holds in `partial` the
    /// reduction over its aligned group of `mask` ranks; it swaps it with the
    /// neighbouring group's, adding that to `recv` when the group is lower.
    /// For an inclusive scan `recv` starts as the rank's own contribution.
    fn prefix<T, O>(&self, op: &O, send: &[T], recv: &mut [T], inclusive: bool) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let (name, tag) = if inclusive {
            ("scan", tag::SCAN)
        } else {
            ("exscan", tag::EXSCAN)
        };
        let (n, r) = (self.size(), self.rank());
        if n == 1 || size_of_val(send) == 0 {
            return Ok(());
        }
        let par = self.par_bytes();
        let count = send.len();
        with_scratch(count, |partial: &mut [T]| {
            with_scratch(count, |tmp: &mut [T]| {
                partial.copy_from_slice(send);
                let mut have = inclusive;
                let mut mask = 1;
                while mask < n {
                    let peer = r ^ mask;
                    if peer < n {
                        self.c_sendrecv(name, partial, peer, tmp, peer, tag)?;
                        let lower = peer < r;
                        if lower {
                            if have {
                                combine(op, recv, tmp, true, par);
                            } else {
                                recv.copy_from_slice(tmp);
                                have = true;
                            }
                        }
                        // The last round's partial is not needed.
                        if mask << 1 < n {
                            combine(op, partial, tmp, lower, par);
                        }
                    }
                    mask <<= 1;
                }
                Ok(())
            })
        })
    }
}
