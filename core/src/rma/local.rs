//! A window's communicator and direct views of window memory: this rank's
//! own part ([`Window::local`], [`Window::local_mut`]) and, on one node, a
//! peer's part mapped here ([`Window::node_part_mut`], like
//! `MPI_Win_shared_query`).
//!
//! The views borrow the window mutably, so this rank issues no one-sided
//! operation on it (nor frees it) while one is held. What the borrow checker
//! cannot see is other ranks: as in MPI, a view must only be used while no
//! other rank accesses the same memory, that is between synchronizations
//! that order the accesses (after a [`Window::fence`] and before the next
//! one, between [`Window::wait`] and the next [`Window::post`] for this
//! rank's part, or while this rank holds the exclusive lock of the part it
//! views). The memory is plain data, so a view used against that rule reads
//! stale or mixed values; it cannot break the process.
//!
//! ```
//! let got = dos::testing::run_threads(2, |world| {
//!     let mut win = world.win_allocate::<u32>(4).unwrap();
//!     win.local_mut().copy_from_slice(&[world.rank() as u32; 4]);
//!     win.fence().unwrap();
//!     let peer = 1 - world.rank();
//!     win.put(&[7], peer, 0).unwrap();
//!     win.fence().unwrap();
//!     assert_eq!(win.comm().size(), 2);
//!     win.local().to_vec()
//! });
//! assert_eq!(got, vec![vec![7, 0, 0, 0], vec![7, 1, 1, 1]]);
//! ```

use std::mem::size_of;
use std::sync::atomic::{fence, Ordering};

use bytemuck::Pod;

use super::Window;
use crate::{Comm, Result};

impl<T: Pod> Window<'_, T> {
    /// The communicator the window was created over (`MPI_Win_get_group`):
    /// ranks in every operation are ranks of it.
    pub fn comm(&self) -> &Comm {
        &self.comm
    }

    /// This rank's part as a slice (see the [module documentation](self)
    /// for when other ranks may not be writing it).
    pub fn local(&mut self) -> &[T] {
        fence(Ordering::SeqCst);
        // SAFETY: `data` holds `len` bytes of this rank's part, aligned for
        // `T` (a page-aligned mapping, or the caller's `&mut [T]`), valid
        // while `self` lives; the `&mut self` borrow keeps this rank's own
        // window operations away while the slice lives.
        unsafe { std::slice::from_raw_parts(self.data as *const T, self.len / size_of::<T>()) }
    }

    /// This rank's part as a mutable slice (see [`Window::local`]).
    pub fn local_mut(&mut self) -> &mut [T] {
        fence(Ordering::SeqCst);
        // SAFETY: as in `local`; the `&mut self` borrow makes it exclusive
        // within this process.
        unsafe { std::slice::from_raw_parts_mut(self.data.cast::<T>(), self.len / size_of::<T>()) }
    }

    /// The part of `rank` as a mutable slice, if it is mapped into this
    /// process (`MPI_Win_shared_query`): this rank's own part of an
    /// allocated window, or that of a rank on this node; `None` otherwise
    /// (other nodes, or windows over callers' buffers, reached only through
    /// operations). Same rules as [`Window::local`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a rank outside the communicator.
    pub fn node_part_mut(&mut self, rank: usize) -> Result<Option<&mut [T]>> {
        let p = self.part(rank)?;
        let (Some(d), len) = (p.data, p.len) else {
            return Ok(None);
        };
        fence(Ordering::SeqCst);
        // SAFETY: the mapped part holds `len` bytes, page-aligned, valid
        // while `self` lives (it keeps the mapping); exclusive within this
        // process by the `&mut self` borrow.
        Ok(Some(unsafe {
            std::slice::from_raw_parts_mut(d.cast::<T>(), len / size_of::<T>())
        }))
    }
}
