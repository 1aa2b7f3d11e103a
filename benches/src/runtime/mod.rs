//! The runtime the benchmarks run on: what a benchmark needs of it, as one
//! small trait ([`Runtime`]) with a dos and an MPI implementation.
//!
//! Every operation moves bytes (or `f32`s for the reduction, or `u64`s for
//! the one-sided atomic) so that both backends time the same work.
//! Point-to-point tags are non-negative.
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
pub type Backend = mpi::MpiRuntime;
/// The backend this build measures.
#[cfg(all(feature = "dos", not(feature = "mpi")))]
pub type Backend = dos::DosRuntime;

/// Joins the job through the backend this build measures.
pub fn init() -> Result<Backend> {
    Backend::init()
}

mod sealed {
    //! The bounds each backend puts on window elements, implied by [`super::WinElem`].

    /// What dos needs of a window element.
    #[cfg(feature = "dos")]
    pub trait DosElem: ::dos::Pod {}
    #[cfg(feature = "dos")]
    impl<T: ::dos::Pod> DosElem for T {}
    /// What dos needs of a window element (nothing: no dos in this build).
    #[cfg(not(feature = "dos"))]
    pub trait DosElem {}
    #[cfg(not(feature = "dos"))]
    impl<T> DosElem for T {}

    /// What MPI needs of a window element: its datatype.
    #[cfg(feature = "mpi")]
    pub trait MpiElem: ::mpi::datatype::Equivalence {}
    #[cfg(feature = "mpi")]
    impl<T: ::mpi::datatype::Equivalence> MpiElem for T {}
    /// What MPI needs of a window element (nothing: no MPI in this build).
    #[cfg(not(feature = "mpi"))]
    pub trait MpiElem {}
    #[cfg(not(feature = "mpi"))]
    impl<T> MpiElem for T {}

    /// Only the element types below.
    pub trait Sealed:
        DosElem + MpiElem + Copy + Default + PartialEq + std::fmt::Debug + 'static
    {
    }
    impl Sealed for u8 {}
    impl Sealed for u64 {}
}

/// Element types of one-sided windows: `u8` for data, `u64` for atomics.
pub trait WinElem: sealed::Sealed {}
impl WinElem for u8 {}
impl WinElem for u64 {}

/// What `dosbench` needs from a message-passing runtime.
///
/// The one-sided part follows MPI's passive-target model as the OSU
/// one-sided benchmarks use it in "flush" mode: a window allocated
/// collectively, an access epoch opened once by the origin
/// ([`Runtime::epoch_begin`], `MPI_Win_lock_all`), operations completed at the
/// target with [`Runtime::flush`], the epoch closed ([`Runtime::epoch_end`]), the
/// window freed collectively. A target that only waits (in
/// [`Runtime::barrier`], say) keeps making progress, which both runtimes may
/// need to serve operations that arrive as messages.
pub trait Runtime {
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

    /// A one-sided window of `T`s: a part on every rank.
    type Win<T: WinElem>;

    /// Creates a window of `count` zeroed elements on every rank
    /// (`MPI_Win_allocate`; displacements count elements). Collective; every
    /// rank passes the same `count`.
    fn win_allocate<T: WinElem>(&self, count: usize) -> Result<Self::Win<T>>;
    /// Frees `win` once every rank's operations are complete (`MPI_Win_free`). Collective.
    fn win_free<T: WinElem>(&self, win: Self::Win<T>) -> Result<()>;
    /// Opens a passive-target access epoch to every rank of `win`
    /// (`MPI_Win_lock_all`, shared). Only the origin calls it.
    fn epoch_begin<T: WinElem>(&self, win: &Self::Win<T>) -> Result<()>;
    /// Closes the epoch of [`Runtime::epoch_begin`]; every operation issued in it
    /// is complete at its target (`MPI_Win_unlock_all`).
    fn epoch_end<T: WinElem>(&self, win: &Self::Win<T>) -> Result<()>;
    /// Writes `src` into `target`'s part from element `disp` (`MPI_Put`);
    /// complete at the target after [`Runtime::flush`].
    ///
    /// # Safety
    /// `src` must stay allocated and unchanged until the next
    /// [`Runtime::flush`] of `target` or [`Runtime::epoch_end`] on `win`: MPI may
    /// read it as late as that (dos copies it before returning).
    unsafe fn put<T: WinElem>(
        &self,
        win: &Self::Win<T>,
        src: &[T],
        target: usize,
        disp: usize,
    ) -> Result<()>;
    /// Reads `dst.len()` elements of `target`'s part from element `disp`;
    /// complete when it returns (`MPI_Get` and `MPI_Win_flush`).
    fn get<T: WinElem>(
        &self,
        win: &Self::Win<T>,
        dst: &mut [T],
        target: usize,
        disp: usize,
    ) -> Result<()>;
    /// Completes at `target` every operation this rank issued to it (`MPI_Win_flush`).
    fn flush<T: WinElem>(&self, win: &Self::Win<T>, target: usize) -> Result<()>;
    /// Adds `value` to element `disp` of `target`'s part atomically and
    /// returns the old value; complete when it returns (`MPI_Fetch_and_op`
    /// with `MPI_UINT64_T` and `MPI_SUM`, then `MPI_Win_flush`).
    fn fetch_add(
        &self,
        win: &Self::Win<u64>,
        target: usize,
        disp: usize,
        value: u64,
    ) -> Result<u64>;
    /// Copies this rank's own part, from element `disp`, into `dst`. Outside
    /// any epoch of this rank.
    fn win_read_local<T: WinElem>(
        &self,
        win: &Self::Win<T>,
        dst: &mut [T],
        disp: usize,
    ) -> Result<()>;
    /// Copies `src` into this rank's own part from element `disp`. Outside
    /// any epoch of this rank.
    fn win_write_local<T: WinElem>(&self, win: &Self::Win<T>, src: &[T], disp: usize)
        -> Result<()>;

    /// Ends the whole job with `code` after printing `msg`, so that a failed
    /// rank does not leave the others waiting forever.
    fn abort(&self, code: i32, msg: &str) -> !;
    /// Leaves the job cleanly.
    fn finalize(self) -> Result<()>;
}

/// What `dosbench io` needs: MPI-IO's explicit-offset calls on one file.
///
/// A shared file is opened by every rank of the job together; with
/// `per_proc` each rank opens its own file alone (on a communicator of one
/// rank). `dos::io` implements it on dosfs, MPI-IO (through `mpi::ffi`) on a
/// local directory.
pub trait IoRuntime: Runtime {
    /// An open file.
    type File;
    /// The directory files go to when `--path` is not given.
    const DEFAULT_DIR: &'static str;

    /// Opens `path` (`MPI_File_open`): read-write and created if `write`,
    /// read-only otherwise. Collective over the job, or over this rank alone
    /// if `per_proc`.
    fn file_open(&self, path: &str, per_proc: bool, write: bool) -> Result<Self::File>;
    /// Writes all of `data` at `offset` (`MPI_File_write_at`, or
    /// `MPI_File_write_at_all` if `collective`).
    fn file_write_at(
        &self,
        file: &Self::File,
        offset: u64,
        data: &[u8],
        collective: bool,
    ) -> Result<()>;
    /// Reads into `buf` from `offset` and returns the bytes read
    /// (`MPI_File_read_at`, or `MPI_File_read_at_all` if `collective`).
    fn file_read_at(
        &self,
        file: &Self::File,
        offset: u64,
        buf: &mut [u8],
        collective: bool,
    ) -> Result<usize>;
    /// Makes the file's writes durable (`MPI_File_sync`). Collective over the file's ranks.
    fn file_sync(&self, file: &Self::File) -> Result<()>;
    /// Closes the file (`MPI_File_close`). Collective over the file's ranks.
    fn file_close(&self, file: Self::File) -> Result<()>;
    /// Deletes `path` (`MPI_File_delete`); one rank calls it.
    fn file_delete(&self, path: &str) -> Result<()>;
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
