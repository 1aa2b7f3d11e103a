//! Window memory that the ranks of a node map: a memfd per window and rank
//! (made and mapped with dos-transport's `shm::mem` helpers, as the node's
//! shared segment is).
//!
//! The owner creates the memfd and maps it; a peer on the same node opens it
//! through `/proc/<pid>/fd/<fd>` (which the kernel allows to a process that
//! may trace the owner — the same check as CMA, which the shm transport
//! already needs) and maps it too. The memory lives as long as any mapping or
//! descriptor does, so a peer that exits early strands nothing and frees
//! nothing under anyone.
//!
//! ```text
//! 0      WinHeader (64 bytes: the lock word and the accumulate lock), rest of the page unused
//! 4096   the window's bytes
//! ```

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dos_transport::shm::mem::{file_size, memfd, open_peer_fd, SharedMapping};

use crate::{Error, Result};

/// Bytes before the window's data: a page, so that the data is page-aligned
/// like memory from `MPI_Alloc_mem` (and large copies into it run at full
/// speed: a 64-byte offset against page-aligned sources measured 10-50%
/// slower puts from 32 KiB up).
pub(crate) const HEADER: usize = 4096;

/// Bit of the lock word held by an exclusive lock; the bits below count shared locks.
pub(crate) const EXCLUSIVE: u64 = 1 << 63;

/// The shared header of a window: synchronization words that local peers use
/// with CPU atomics and remote peers through the target's progress.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct WinHeader {
    /// Passive-target lock: [`EXCLUSIVE`] or a count of shared holders.
    pub(crate) lock: AtomicU64,
    /// Spin lock that makes accumulates atomic per element.
    pub(crate) acc: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<WinHeader>() <= HEADER);

impl WinHeader {
    /// Takes the accumulate lock (held for one element-wise update only).
    pub(crate) fn acc_lock(&self) {
        let mut spins = 0u32;
        while self
            .acc
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    pub(crate) fn acc_unlock(&self) {
        self.acc.store(0, Ordering::Release);
    }
}

/// A mapping of window memory (header and data).
#[derive(Debug)]
pub(crate) struct Mapping {
    map: SharedMapping,
    /// The memfd, kept open by the owner so that peers can open it.
    fd: Option<OwnedFd>,
}

impl Mapping {
    /// Creates the memory of a window of `len` bytes (zeroed).
    pub(crate) fn create(len: usize) -> Result<Mapping> {
        let size = HEADER.checked_add(len).ok_or(Error::InvalidArgument {
            op: "window allocation",
            reason: "size overflows",
        })?;
        let fd = memfd(c"dos-win", size)?;
        let map = SharedMapping::new(fd.as_fd(), size)?;
        Ok(Mapping { map, fd: Some(fd) })
    }

    /// Maps the window memory of process `pid`, whose descriptor is `fd`,
    /// expecting `len` bytes of data.
    pub(crate) fn open(pid: u32, fd: i32, len: usize) -> Result<Mapping> {
        let fd = open_peer_fd(pid, fd)?;
        let size = HEADER + len;
        if file_size(fd.as_fd())? != size {
            return Err(Error::InvalidArgument {
                op: "window creation",
                reason: "a peer's window memory has an unexpected size",
            });
        }
        let map = SharedMapping::new(fd.as_fd(), size)?;
        // The mapping keeps the memory; the descriptor is not needed.
        Ok(Mapping { map, fd: None })
    }

    /// The descriptor peers open, if this is the owner's mapping.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    pub(crate) fn header(&self) -> &WinHeader {
        // SAFETY: the mapping starts with a page-aligned, zero-initialized
        // header, accessed only through atomics.
        unsafe { &*(self.map.as_ptr() as *const WinHeader) }
    }

    /// The window's first data byte.
    pub(crate) fn data(&self) -> *mut u8 {
        // SAFETY: within the mapping (its size is at least `HEADER`).
        unsafe { self.map.as_ptr().add(HEADER) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_mapping_shares_the_memory_and_the_locks() {
        let a = Mapping::create(100).unwrap();
        let b = Mapping::open(std::process::id(), a.fd().unwrap(), 100).unwrap();
        // SAFETY: both point at 100 valid bytes of the same memfd.
        unsafe {
            a.data().add(7).write(42);
            assert_eq!(b.data().add(7).read(), 42);
        }
        a.header().lock.store(EXCLUSIVE, Ordering::Release);
        assert_eq!(b.header().lock.load(Ordering::Acquire), EXCLUSIVE);
        assert!(matches!(
            Mapping::open(std::process::id(), a.fd().unwrap(), 99),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
