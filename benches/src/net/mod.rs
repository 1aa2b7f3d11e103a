//! The communication a benchmark needs, as one small trait with a dos and an MPI implementation.
//!
//! Every operation moves bytes (or `f32`s for the reduction) so that both
//! backends time the same work. Point-to-point tags are non-negative.
//! A backend is chosen at build time: [`Backend`] is the MPI one when the
//! `mpi` feature is on, the dos one otherwise.

use crate::Result;

#[cfg(feature = "dos")]
pub mod dos;
#[cfg(feature = "mpi")]
pub mod mpi;

#[cfg(not(any(feature = "dos", feature = "mpi")))]
compile_error!("dos-bench needs the `dos` feature (default) or the `mpi` feature");

/// The backend this build measures.
#[cfg(feature = "mpi")]
pub type Backend = mpi::MpiNet;
/// The backend this build measures.
#[cfg(all(feature = "dos", not(feature = "mpi")))]
pub type Backend = dos::DosNet;

/// Joins the job through the backend this build measures.
pub fn init() -> Result<Backend> {
    Backend::init()
}

/// What `dosbench` needs from a message-passing runtime.
pub trait Net {
    /// `"dos"` or `"mpi"`: the label on every result.
    fn name(&self) -> &'static str;
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;

    /// Blocking send of `buf` to `dest`.
    fn send(&self, buf: &[u8], dest: usize, tag: i32) -> Result<()>;
    /// Blocking receive into `buf` (the message has exactly `buf.len()` bytes) from `src`.
    fn recv(&self, buf: &mut [u8], src: usize, tag: i32) -> Result<()>;
    /// Starts `n` nonblocking sends of `buf` to `dest`, then waits for all of them.
    fn send_window(&self, buf: &[u8], n: usize, dest: usize, tag: i32) -> Result<()>;
    /// Starts `n` nonblocking receives of `len` bytes each from `src` into
    /// consecutive pieces of `bufs` (which holds at least `n * len` bytes),
    /// then waits for all of them.
    fn recv_window(
        &self,
        bufs: &mut [u8],
        len: usize,
        n: usize,
        src: usize,
        tag: i32,
    ) -> Result<()>;
    /// Both at once with `peer`: `n` receives of `sbuf.len()` bytes into
    /// `rbufs` are posted, then `n` sends of `sbuf`, then all are waited for.
    fn exchange_window(
        &self,
        sbuf: &[u8],
        rbufs: &mut [u8],
        n: usize,
        peer: usize,
        tag: i32,
    ) -> Result<()>;

    /// Waits until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Broadcasts `buf` from `root`.
    fn bcast(&self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Element-wise sum of every rank's `send` into every rank's `recv`.
    fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Block `j` of `send` goes to rank `j`; block `i` of `recv` comes from rank `i`.
    fn alltoall(&self, send: &[u8], recv: &mut [u8]) -> Result<()>;

    /// Ends the whole job with `code` after printing `msg`, so that a failed
    /// rank does not leave the others waiting forever.
    fn abort(&self, code: i32, msg: &str) -> !;
    /// Leaves the job cleanly.
    fn finalize(self) -> Result<()>;
}

/// Splits `bufs` into `n` consecutive pieces of `len` bytes (empty when `len == 0`).
pub(crate) fn pieces(bufs: &mut [u8], len: usize, n: usize) -> impl Iterator<Item = &mut [u8]> {
    let mut rest = &mut bufs[..len * n];
    (0..n).map(move |_| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        head
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn pieces_cover_the_window() {
        let mut b = [0u8; 10];
        let v: Vec<usize> = super::pieces(&mut b, 3, 3).map(|p| p.len()).collect();
        assert_eq!(v, vec![3, 3, 3]);
        let z: Vec<usize> = super::pieces(&mut b, 0, 4).map(|p| p.len()).collect();
        assert_eq!(z, vec![0; 4]);
    }
}
