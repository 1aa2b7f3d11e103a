//! The shared segment (a memfd mapped by every rank of the node), the memfd
//! helpers it is made with ([`memfd`], [`open_peer_fd`], [`SharedMapping`]:
//! also what core maps its node-shared window memory with), and single-copy
//! transfers between address spaces with CMA.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::wire::{Layout, SegHeader, MAGIC, VERSION};
use crate::{Error, RemoteKey, Result};

/// Largest piece that [`copy`] hands to `memcpy` at once.
pub const COPY_CHUNK: usize = 128 << 10;

/// Copies `n` bytes from `src` to `dst` (which must not overlap), in pieces of at
/// most [`COPY_CHUNK`]: the copy of a one-sided put or get between two ranks'
/// memory.
///
/// Why pieces: glibc's `memcpy` switches to non-temporal stores above a
/// threshold derived from the cache sizes, and on machines like this one's
/// (1 MiB of L2 per core) that path is slower for the sizes a put moves: one
/// `memcpy` of 1 MiB into a shared mapping takes 18.3-18.8 us here, eight of
/// 128 KiB 15.3 us; 4 MiB 79.9 against 68.7 us; 16 MiB 465 against 364 us
/// (Open MPI's datatype engine copies in 128 KiB pieces as well).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes, and the two
/// ranges must not overlap.
///
/// ```
/// let src: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
/// let mut dst = vec![0u8; src.len()];
/// // SAFETY: two separate buffers of the same length.
/// unsafe { dos_transport::shm::mem::copy(src.as_ptr(), dst.as_mut_ptr(), src.len()) };
/// assert_eq!(src, dst);
/// ```
#[inline]
pub unsafe fn copy(src: *const u8, dst: *mut u8, n: usize) {
    let mut off = 0;
    while off < n {
        let k = (n - off).min(COPY_CHUNK);
        // SAFETY: `off + k <= n`, inside both ranges (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(src.add(off), dst.add(off), k) };
        off += k;
    }
}

/// A new anonymous memfd (close-on-exec) of `len` zero bytes, named `name`
/// (the name only shows in `/proc/<pid>/fd`). Its memory disappears when
/// the last descriptor and mapping of it are gone.
pub fn memfd(name: &CStr, len: usize) -> Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| sys("memfd_create", e))?;
    rustix::fs::ftruncate(&fd, len as u64).map_err(|e| sys("ftruncate", e))?;
    Ok(fd)
}

/// Opens descriptor `fd` of process `pid` (read-write, close-on-exec)
/// through `/proc/<pid>/fd/<fd>`: the kernel allows it to a process that may
/// trace `pid`, the same check as CMA's.
pub fn open_peer_fd(pid: u32, fd: RawFd) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        format!("/proc/{pid}/fd/{fd}"),
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys("open a peer's memfd", e))
}

/// The size in bytes of the file behind `fd`.
pub fn file_size(fd: BorrowedFd<'_>) -> Result<usize> {
    let st = rustix::fs::fstat(fd).map_err(|e| sys("fstat", e))?;
    usize::try_from(st.st_size).map_err(|_| Error::BadSegment {
        reason: "negative file size",
    })
}

#[cold]
fn sys(op: &'static str, e: rustix::io::Errno) -> Error {
    Error::Sys {
        op,
        source: e.into(),
    }
}

/// A shared, read-write mapping of the first `len` bytes of a file (a
/// memfd), at an address the kernel picks; unmapped when dropped. The
/// memory stays while any mapping or descriptor of it does, so the
/// descriptor may be closed once mapped.
#[derive(Debug)]
pub struct SharedMapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: plain shared memory, handed out only as raw pointers: what is
// accessed through them, and how, is the users' contract.
unsafe impl Send for SharedMapping {}
// SAFETY: as above.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Maps `len` bytes of `fd` from its start.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> Result<SharedMapping> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a new mapping at an address the kernel chooses, so no
        // existing memory or reference is affected.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| sys("mmap", e))?;
        let base = NonNull::new(p.cast()).ok_or(Error::BadSegment {
            reason: "mmap returned null",
        })?;
        Ok(SharedMapping { base, len })
    }

    /// The first byte (page-aligned).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped (never, for a mapping that exists).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range; the owner of the mapping
        // keeps every borrow of it within its own lifetime.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A mapped shared segment.
///
/// The memory lives in an anonymous memfd: it disappears when the last process
/// that maps it or holds its descriptor exits, so no segment outlives its job,
/// whatever way the job ends.
#[derive(Debug)]
pub struct Segment {
    map: SharedMapping,
    layout: Layout,
    fd: OwnedFd,
}

impl Segment {
    /// Creates a zeroed segment for `nranks` ranks with `ring_bytes` per ring
    /// and the default pool of rings ([`super::wire::pool_rings`]).
    ///
    /// The descriptor is close-on-exec; a launcher passes it to its ranks
    /// by duplicating it onto a known number in the child.
    ///
    /// More than [`super::wire::MAX_RANKS`] ranks give
    /// [`Error::TooManyLocalRanks`].
    pub fn create(nranks: usize, ring_bytes: usize) -> Result<Segment> {
        Segment::with_layout(Layout::new(nranks, ring_bytes)?)
    }

    /// Like [`Segment::create`], with a pool of `pool` rings (1 to
    /// `nranks^2`): once `pool` pairs of ranks have talked, a new pair's
    /// first send fails with [`Error::RingsExhausted`].
    pub fn create_with_pool(nranks: usize, ring_bytes: usize, pool: usize) -> Result<Segment> {
        Segment::with_layout(Layout::with_pool(nranks, ring_bytes, pool)?)
    }

    fn with_layout(layout: Layout) -> Result<Segment> {
        let fd = memfd(c"dos-shm", layout.total)?;
        let map = SharedMapping::new(fd.as_fd(), layout.total)?;
        // SAFETY: the mapping is at least one page, page-aligned, zeroed, and
        // nobody else knows of it yet.
        unsafe {
            let h = map.as_ptr() as *mut SegHeader;
            (*h).magic = MAGIC;
            (*h).version = VERSION;
            (*h).nranks = layout.nranks as u32;
            (*h).ring_bytes = layout.ring_bytes as u64;
            (*h).ctl_off = layout.ctl_off as u64;
            (*h).slots_off = layout.slots_off as u64;
            (*h).ringctl_off = layout.ringctl_off as u64;
            (*h).data_off = layout.data_off as u64;
            (*h).total = layout.total as u64;
            (*h).pool_rings = layout.pool_rings as u64;
        }
        Ok(Segment { map, layout, fd })
    }

    /// Maps the segment behind an inherited descriptor, checking its header.
    ///
    /// Takes ownership of `fd`.
    pub fn attach(fd: OwnedFd) -> Result<Segment> {
        let size = file_size(fd.as_fd())?;
        if size < std::mem::size_of::<SegHeader>() {
            return Err(Error::BadSegment {
                reason: "segment smaller than its header",
            });
        }
        let map = SharedMapping::new(fd.as_fd(), size)?;
        // (Returning an error below drops `map`, which unmaps it.)
        // SAFETY: at least a header's worth of mapped bytes, page-aligned.
        let h = unsafe { &*(map.as_ptr() as *const SegHeader) };
        if h.magic != MAGIC {
            return Err(Error::BadSegment {
                reason: "bad magic",
            });
        }
        if h.version != VERSION {
            return Err(Error::BadSegment {
                reason: "layout version mismatch",
            });
        }
        let pool = usize::try_from(h.pool_rings).unwrap_or(usize::MAX);
        let layout = match Layout::with_pool(h.nranks as usize, h.ring_bytes as usize, pool) {
            Ok(l)
                if l.total == size
                    && l.total as u64 == h.total
                    && l.ctl_off as u64 == h.ctl_off
                    && l.slots_off as u64 == h.slots_off
                    && l.ringctl_off as u64 == h.ringctl_off
                    && l.data_off as u64 == h.data_off =>
            {
                l
            }
            _ => {
                return Err(Error::BadSegment {
                    reason: "header disagrees with its size",
                })
            }
        };
        Ok(Segment { map, layout, fd })
    }

    /// Takes the next ring of the pool, or `None` when all are handed out.
    /// Never hands out an index twice, and never counts past the pool.
    #[cold]
    pub(crate) fn alloc_ring(&self) -> Option<usize> {
        let pool = self.layout.pool_rings as u64;
        self.header()
            .rings_used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < pool).then_some(u + 1)
            })
            .ok()
            .map(|i| i as usize)
    }

    /// Rings of the pool handed out so far (to pairs of ranks that talked).
    pub fn rings_used(&self) -> usize {
        self.header().rings_used.load(Ordering::Acquire) as usize
    }

    /// Bytes of memory the segment holds now (its pages that were touched),
    /// as opposed to its size, most of which is usually never touched.
    pub fn resident_bytes(&self) -> Result<u64> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| sys("fstat", e))?;
        Ok(st.st_blocks as u64 * 512)
    }

    /// The segment's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The memfd behind the segment.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Pointer to `off` bytes into the segment.
    #[inline]
    pub(crate) fn at(&self, off: usize) -> *mut u8 {
        debug_assert!(off < self.layout.total);
        // SAFETY: offsets come from `Layout`, inside the mapping.
        unsafe { self.map.as_ptr().add(off) }
    }

    /// The header.
    pub(crate) fn header(&self) -> &SegHeader {
        // SAFETY: mapped, aligned, validated at create/attach.
        unsafe { &*(self.map.as_ptr() as *const SegHeader) }
    }

    /// Counts one more attached rank, returning the new count.
    pub(crate) fn note_attached(&self) -> u32 {
        self.header().attached.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// Version byte of packed CMA keys.
const RKEY_CMA_V1: u8 = 0x11;
/// Packed size of a CMA key.
const RKEY_CMA_LEN: usize = 24;

/// A decoded CMA remote key: a region of another process's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmaKey {
    /// Owning process.
    pub pid: u32,
    /// Start address in that process.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

impl CmaKey {
    /// Packs the key (little-endian, versioned).
    pub fn pack(&self) -> RemoteKey {
        let mut b = [0u8; RKEY_CMA_LEN];
        b[0] = RKEY_CMA_V1;
        b[4..8].copy_from_slice(&self.pid.to_le_bytes());
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        RemoteKey::from_bytes(&b).expect("fits")
    }

    /// Decodes a packed key; never panics.
    pub fn unpack(k: &RemoteKey) -> Result<CmaKey> {
        let b = k.as_bytes();
        if b.len() != RKEY_CMA_LEN {
            return Err(Error::Malformed {
                what: "shm remote key",
                reason: "wrong length",
            });
        }
        if b[0] != RKEY_CMA_V1 {
            return Err(Error::Malformed {
                what: "shm remote key",
                reason: "unknown version",
            });
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u32_at(i) as u64) | ((u32_at(i + 4) as u64) << 32);
        Ok(CmaKey {
            pid: u32_at(4),
            addr: u64_at(8),
            len: u64_at(16),
        })
    }
}

/// Which direction a CMA transfer goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dir {
    /// Remote to local (`process_vm_readv`).
    Read,
    /// Local to remote (`process_vm_writev`).
    Write,
}

/// Copies `len` bytes between `local` and `remote` in process `pid`, looping
/// over partial transfers.
///
/// # Safety
/// `local` must be valid for `len` bytes of reads (Write) or writes (Read).
pub(crate) unsafe fn cma_copy(
    dir: Dir,
    pid: u32,
    local: *mut u8,
    remote: u64,
    len: usize,
) -> Result<()> {
    let mut done = 0usize;
    while done < len {
        let liov = libc::iovec {
            // SAFETY: `done < len`, inside the caller's buffer.
            iov_base: unsafe { local.add(done) }.cast(),
            iov_len: len - done,
        };
        let riov = libc::iovec {
            iov_base: (remote as usize + done) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: one local and one remote iovec as built above; the kernel
        // checks the remote range against the target's mappings.
        let n = unsafe {
            match dir {
                Dir::Read => libc::process_vm_readv(pid as libc::pid_t, &liov, 1, &riov, 1, 0),
                Dir::Write => libc::process_vm_writev(pid as libc::pid_t, &liov, 1, &riov, 1, 0),
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Sys {
                op: match dir {
                    Dir::Read => "process_vm_readv",
                    Dir::Write => "process_vm_writev",
                },
                source: e,
            });
        }
        if n == 0 {
            return Err(Error::Sys {
                op: "process_vm_readv",
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no progress"),
            });
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn two_mappings_of_a_memfd_share_its_memory() {
        let fd = memfd(c"dos-test", 8192).unwrap();
        assert_eq!(file_size(fd.as_fd()).unwrap(), 8192);
        let a = SharedMapping::new(fd.as_fd(), 8192).unwrap();
        // Opened as a peer would (through /proc), then mapped; the
        // descriptor may go once mapped.
        let peer = open_peer_fd(std::process::id(), fd.as_raw_fd()).unwrap();
        let b = SharedMapping::new(peer.as_fd(), 8192).unwrap();
        drop(peer);
        assert_eq!((a.len(), a.is_empty()), (8192, false));
        assert_eq!(a.as_ptr() as usize % 4096, 0);
        // SAFETY: both map the same 8192 bytes, accessed by this thread only.
        unsafe {
            assert_eq!(b.as_ptr().add(8191).read(), 0, "zeroed");
            a.as_ptr().add(8191).write(7);
            assert_eq!(b.as_ptr().add(8191).read(), 7);
        }
        assert!(matches!(
            open_peer_fd(std::process::id(), 1 << 20),
            Err(Error::Sys { .. })
        ));
    }

    #[test]
    fn cma_key_round_trip_and_golden_bytes() {
        let k = CmaKey {
            pid: 0x01020304,
            addr: 0x1122334455667788,
            len: 4096,
        };
        let p = k.pack();
        assert_eq!(
            p.as_bytes(),
            &[
                0x11, 0, 0, 0, 4, 3, 2, 1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0x10,
                0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(CmaKey::unpack(&p).unwrap(), k);
    }

    #[test]
    fn cma_key_rejects_garbage() {
        for b in [&[][..], &[0x11; 23][..], &[0x12; 24][..]] {
            assert!(CmaKey::unpack(&RemoteKey::from_bytes(b).unwrap()).is_err());
        }
    }

    #[test]
    fn attach_rejects_foreign_memfd() {
        // SAFETY: valid name; we own the result.
        let raw = unsafe { libc::memfd_create(c"x".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: valid descriptor.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 65536) }, 0);
        assert!(matches!(Segment::attach(fd), Err(Error::BadSegment { .. })));
    }

    #[test]
    fn create_then_attach_duplicate() {
        let s = Segment::create(3, super::super::wire::MIN_RING_BYTES).unwrap();
        // SAFETY: valid descriptor; dup gives us our own.
        let d = unsafe { libc::dup(s.fd()) };
        assert!(d >= 0);
        // SAFETY: fresh descriptor from dup.
        let t = Segment::attach(unsafe { OwnedFd::from_raw_fd(d) }).unwrap();
        assert_eq!(t.layout(), s.layout());
    }

    #[test]
    fn attach_rejects_a_header_that_lies_about_its_pool() {
        let s = Segment::create(3, super::super::wire::MIN_RING_BYTES).unwrap();
        // SAFETY: the header of our own, freshly created segment.
        unsafe { (*(s.at(0) as *mut SegHeader)).pool_rings = 10 };
        // SAFETY: valid descriptor; dup gives us our own.
        let d = unsafe { libc::dup(s.fd()) };
        assert!(d >= 0);
        // SAFETY: fresh descriptor from dup.
        let r = Segment::attach(unsafe { OwnedFd::from_raw_fd(d) });
        assert!(matches!(r, Err(Error::BadSegment { .. })), "{r:?}");
    }

    #[test]
    fn the_allocator_stops_at_the_pool_size() {
        let s = Segment::create_with_pool(3, super::super::wire::MIN_RING_BYTES, 4).unwrap();
        let got: Vec<_> = (0..6).map(|_| s.alloc_ring()).collect();
        assert_eq!(got, [Some(0), Some(1), Some(2), Some(3), None, None]);
        assert_eq!(s.rings_used(), 4);
    }

    #[test]
    fn a_segment_for_the_most_ranks_is_sparse() {
        let s = Segment::create(super::super::wire::MAX_RANKS, 128 << 10).unwrap();
        assert!(s.layout().total > 1 << 40);
        assert!(s.resident_bytes().unwrap() < 1 << 20);
    }

    #[test]
    fn too_many_ranks_is_a_typed_error_not_an_mmap_failure() {
        let e = Segment::create(100_000, 128 << 10).unwrap_err();
        assert!(
            matches!(e, Error::TooManyLocalRanks { nranks: 100_000, max } if max == super::super::wire::MAX_RANKS),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with("too many ranks on one node for the shared segment"));
    }
}
