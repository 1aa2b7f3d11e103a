//! A coherent shared region: the same virtual address range on every rank,
//! pages fetched from their home rank on first access, kept coherent under
//! release consistency (the design of Argo DSM, simplified).
//!
//! * **Same addresses.** Rank 0 reserves the range (`PROT_NONE`) and every
//!   other rank maps the same addresses (`MAP_FIXED_NOREPLACE`); if any rank
//!   cannot, all try again elsewhere. Pointers into the region mean the same
//!   on every rank.
//! * **Homes.** Page `p` lives on rank `p % ranks`, in a [`Window`] that holds
//!   every rank's home pages: the one copy that counts. On its home rank the
//!   page *is* that copy (the window's memory mapped at the region's address),
//!   so a rank's own pages never fault.
//! * **Faults.** A page starts inaccessible. The first access faults
//!   (`SIGSEGV`); the handler fetches the page from its home (a one-sided get)
//!   and maps it read-only. A write then faults again: the handler keeps a
//!   *twin* (a copy of the page as fetched) and maps it read-write.
//! * **Release** ([`SharedRegion::release`]): every written page is compared
//!   with its twin and only the bytes that changed go home (twin and diff:
//!   ranks that write different bytes of one page do not undo each other),
//!   then the pages become read-only again.
//! * **Acquire** ([`SharedRegion::acquire`]): every cached page is dropped,
//!   so what others released is fetched anew.
//! * **Synchronization.** [`SharedRegion::barrier`] is release, a barrier and
//!   acquire; [`SharedRegion::lock`] takes a [`DistLock`] and acquires, and
//!   its guard releases and unlocks. A data-race-free program (every access
//!   to shared data ordered by these) sees one memory across hosts.
//!
//! ```
//! let world = dos::init().unwrap();
//! let region = world.shared_region(1 << 16).unwrap();
//! let xs: &mut [u64] = region.as_mut_slice();
//! xs[world.rank()] = 7; // faults the page in, then makes it writable
//! region.barrier().unwrap(); // every rank's writes are home, and seen
//! assert_eq!(region.as_mut_slice::<u64>()[0], 7);
//! if world.size() == 1 {
//!     assert_eq!(region.faults(), 0); // a rank's own pages never fault
//! }
//! ```
//!
//! Limits: only the thread that called `init` may touch the region (a fault on
//! another thread ends the process with a message), and a page whose home is
//! on another node must not be first touched inside a dos call (pass a copy
//! of region data to `send` and the like, or touch it before); the region is
//! not `Send`.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::sync::{Once, OnceLock};

use super::lock::{DistLock, DistLockGuard};
use crate::{Comm, Error, Result, Window};

/// Page states.
const INVALID: u8 = 0;
const READ: u8 = 1;
const DIRTY: u8 = 2;
/// A page homed on this rank: the home copy itself is mapped there, so it
/// never faults, needs no twin and is never invalidated.
const HOME: u8 = 3;

/// Regions that the fault handler knows, at most this many at once.
const MAX_REGIONS: usize = 16;

static REGIONS: [AtomicPtr<State>; MAX_REGIONS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_REGIONS];
static INSTALL: Once = Once::new();
/// The SIGSEGV action before ours (Rust's stack-overflow handler, usually).
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// A saved `sigaction` (plain data).
struct Previous(libc::sigaction);
// SAFETY: a plain C struct of integers and a function address, read only.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// What the fault handler works with; boxed so that its address is stable.
struct State {
    base: *mut u8,
    len: usize,
    page: usize,
    ranks: usize,
    win: Window<'static, u8>,
    states: Box<[AtomicU8]>,
    /// Twins of written pages, one page each (allocated once: the fault
    /// handler allocates nothing for a local home).
    twins: RefCell<Box<[u8]>>,
    /// Pages in DIRTY state.
    dirty: RefCell<Vec<usize>>,
    /// Pages in READ or DIRTY state.
    cached: RefCell<Vec<usize>>,
    /// The thread that may touch the region.
    owner: libc::pthread_t,
    faults: Cell<u64>,
}

/// A region of memory shared by the ranks of a communicator; see the
/// [module docs](self). Created collectively by [`Comm::shared_region`].
pub struct SharedRegion {
    state: Box<State>,
    slot: usize,
}

impl std::fmt::Debug for SharedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegion")
            .field("base", &self.state.base)
            .field("len", &self.state.len)
            .finish_non_exhaustive()
    }
}

/// The region's lock held, with its changes acquired; dropping it releases
/// them and the lock.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RegionLockGuard<'a> {
    region: &'a SharedRegion,
    guard: Option<DistLockGuard<'a>>,
}

impl std::fmt::Debug for RegionLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionLockGuard").finish_non_exhaustive()
    }
}

impl Comm {
    /// A shared region of at least `len` bytes (whole pages), zeroed, at the
    /// same address on every rank of this communicator (collective).
    pub fn shared_region(&self, len: usize) -> Result<SharedRegion> {
        let page = page_size();
        let npages = len.div_ceil(page).max(1);
        let len = npages * page;
        let (n, me) = (self.size(), self.rank());
        let homed = (npages + n - 1 - me) / n;
        let win = self.win_allocate::<u8>(homed * page)?;
        let base = agree_on_addresses(self, len)?;
        install_handler();
        // This rank's home pages: the window's memory itself, in place.
        let mut states: Vec<AtomicU8> = (0..npages).map(|_| AtomicU8::new(INVALID)).collect();
        if let Some((fd, data_off)) = win.local_fd() {
            for p in (me..npages).step_by(n) {
                let at = base as usize + p * page;
                let off = data_off + (p / n) * page;
                // SAFETY: replaces one page of our own reservation with the
                // window's shared memory at the same offset the home copy has.
                let r = unsafe {
                    libc::mmap(
                        at as *mut libc::c_void,
                        page,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED | libc::MAP_FIXED,
                        fd,
                        off as libc::off_t,
                    )
                };
                if r as usize == at {
                    states[p] = AtomicU8::new(HOME);
                }
            }
        }
        let state = Box::new(State {
            base,
            len,
            page,
            ranks: n,
            win,
            states: states.into_boxed_slice(),
            twins: RefCell::new(vec![0u8; len].into_boxed_slice()),
            dirty: RefCell::new(Vec::new()),
            cached: RefCell::new(Vec::new()),
            // SAFETY: no preconditions.
            owner: unsafe { libc::pthread_self() },
            faults: Cell::new(0),
        });
        let ptr = &*state as *const State as *mut State;
        let slot = REGIONS
            .iter()
            .position(|s| {
                s.compare_exchange(
                    std::ptr::null_mut(),
                    ptr,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            })
            .ok_or(Error::InvalidArgument {
                op: "shared_region",
                reason: "too many shared regions at once (16)",
            })?;
        state.win.fence()?;
        Ok(SharedRegion { state, slot })
    }
}

/// Rank 0 reserves `len` bytes; every rank maps the same addresses, or all
/// try again elsewhere.
fn agree_on_addresses(comm: &Comm, len: usize) -> Result<*mut u8> {
    let mut hint = 0x5a00_0000_0000usize;
    for attempt in 0..16 {
        let mut addr = [0u64];
        if comm.rank() == 0 {
            let want = if attempt == 0 { 0 } else { hint };
            // SAFETY: a fresh anonymous reservation; nothing is overwritten
            // (MAP_FIXED_NOREPLACE is not used here: a hint only).
            let p = unsafe {
                libc::mmap(
                    want as *mut libc::c_void,
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            addr[0] = if p == libc::MAP_FAILED { 0 } else { p as u64 };
        }
        comm.bcast(&mut addr, 0)?;
        let a = addr[0] as usize;
        let mut ok = a != 0;
        if ok && comm.rank() != 0 {
            // SAFETY: maps fresh anonymous memory at `a` only if nothing is
            // there (MAP_FIXED_NOREPLACE fails instead of replacing).
            let p = unsafe {
                libc::mmap(
                    a as *mut libc::c_void,
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE
                        | libc::MAP_ANONYMOUS
                        | libc::MAP_NORESERVE
                        | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            ok = p as usize == a;
            if p != libc::MAP_FAILED && !ok {
                // An old kernel took the address as a hint: undo.
                // SAFETY: unmapping what this call mapped.
                unsafe { libc::munmap(p, len) };
            }
        }
        let mut all = [0u64];
        comm.allreduce(&[u64::from(!ok)], &mut all, crate::op::Sum)?;
        if all[0] == 0 {
            return Ok(a as *mut u8);
        }
        if ok {
            // SAFETY: unmapping this rank's mapping of the failed attempt.
            unsafe { libc::munmap(a as *mut libc::c_void, len) };
        }
        hint = hint.wrapping_add(0x10_0000_0000 * (attempt + 1));
    }
    Err(Error::InvalidArgument {
        op: "shared_region",
        reason: "no address range free on every rank",
    })
}

fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: installing a SIGSEGV handler with SA_SIGINFO; the previous
        // action is kept for addresses outside our regions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGSEGV, &sa, &mut old);
            let _ = PREVIOUS.set(Previous(old));
        }
    });
}

/// Writes `msg` to stderr and aborts (from the fault handler).
fn die(msg: &str) -> ! {
    // SAFETY: write(2) of a live buffer; abort ends the process.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &REGIONS {
        let p = slot.load(Ordering::Acquire);
        if p.is_null() {
            continue;
        }
        // SAFETY: a registered region stays alive until it deregisters.
        let st = unsafe { &*p };
        let base = st.base as usize;
        if addr >= base && addr < base + st.len {
            // SAFETY: no preconditions.
            if unsafe { libc::pthread_equal(libc::pthread_self(), st.owner) } == 0 {
                die("dos: a shared region was touched by a thread other than the one that called dos::init\n");
            }
            if let Err(e) = st.fault((addr - base) / st.page) {
                die(&format!(
                    "dos: shared region page fault at {addr:#x} failed: {e}\n"
                ));
            }
            return;
        }
    }
    // Not ours: what would have happened without us.
    // SAFETY: calling or restoring the previous action, as the kernel would have.
    unsafe {
        match PREVIOUS.get().map(|p| p.0) {
            Some(old) if old.sa_flags & libc::SA_SIGINFO != 0 && old.sa_sigaction > 1 => {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(old.sa_sigaction);
                f(sig, info, ctx);
            }
            _ => {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
            }
        }
    }
}

impl State {
    fn page_ptr(&self, p: usize) -> *mut u8 {
        // SAFETY: `p` is a page of the region.
        unsafe { self.base.add(p * self.page) }
    }

    fn protect(&self, p: usize, prot: libc::c_int) -> Result<()> {
        // SAFETY: changes the protection of one page of our own mapping.
        if unsafe { libc::mprotect(self.page_ptr(p).cast(), self.page, prot) } != 0 {
            return Err(Error::InvalidArgument {
                op: "shared region",
                reason: "mprotect failed",
            });
        }
        Ok(())
    }

    fn home(&self, p: usize) -> (usize, usize) {
        (p % self.ranks, (p / self.ranks) * self.page)
    }

    /// Handles a fault on page `p` (the thread is the owner).
    fn fault(&self, p: usize) -> Result<()> {
        self.faults.set(self.faults.get() + 1);
        match self.states[p].load(Ordering::Relaxed) {
            INVALID => {
                let (home, off) = self.home(p);
                let eng = self.win.comm().eng.inside();
                if eng && !self.win.is_mapped(home) {
                    die("dos: a shared region page homed on another node was first touched inside a dos call\n");
                }
                self.protect(p, libc::PROT_READ | libc::PROT_WRITE)?;
                // SAFETY: the page is mapped read-write and ours.
                let dst = unsafe { std::slice::from_raw_parts_mut(self.page_ptr(p), self.page) };
                self.win.get(dst, home, off)?;
                self.protect(p, libc::PROT_READ)?;
                self.states[p].store(READ, Ordering::Relaxed);
                self.cached.borrow_mut().push(p);
            }
            READ => {
                // A write: keep the page as it is now, then let it be written.
                let at = p * self.page;
                // SAFETY: the page is readable.
                let src = unsafe { std::slice::from_raw_parts(self.page_ptr(p), self.page) };
                self.twins.borrow_mut()[at..at + self.page].copy_from_slice(src);
                self.protect(p, libc::PROT_READ | libc::PROT_WRITE)?;
                self.states[p].store(DIRTY, Ordering::Relaxed);
                self.dirty.borrow_mut().push(p);
            }
            _ => die("dos: a fault on a writable or home shared region page\n"),
        }
        Ok(())
    }

    /// Sends home the bytes of every written page that differ from its twin.
    fn release(&self) -> Result<()> {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for &p in &dirty {
            let (home, off) = self.home(p);
            let at = p * self.page;
            let twins = self.twins.borrow();
            let twin = &twins[at..at + self.page];
            // SAFETY: the page is readable (DIRTY pages are read-write).
            let now = unsafe { std::slice::from_raw_parts(self.page_ptr(p), self.page) };
            let mut i = 0;
            while i < self.page {
                if now[i] == twin[i] {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < self.page && now[i] != twin[i] {
                    i += 1;
                }
                self.win.put(&now[start..i], home, off + start)?;
            }
            drop(twins);
            self.protect(p, libc::PROT_READ)?;
            self.states[p].store(READ, Ordering::Relaxed);
        }
        if !dirty.is_empty() {
            self.win.flush_all()?;
        }
        Ok(())
    }

    /// Drops every cached page (they are fetched again when touched).
    fn acquire(&self) -> Result<()> {
        debug_assert!(self.dirty.borrow().is_empty(), "acquire before release");
        for p in std::mem::take(&mut *self.cached.borrow_mut()) {
            self.protect(p, libc::PROT_NONE)?;
            self.states[p].store(INVALID, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl SharedRegion {
    /// The first byte: the same address on every rank.
    pub fn as_ptr(&self) -> *mut u8 {
        self.state.base
    }

    /// Bytes in the region (whole pages).
    pub fn len(&self) -> usize {
        self.state.len
    }

    /// Whether the region is empty (never: at least one page).
    pub fn is_empty(&self) -> bool {
        self.state.len == 0
    }

    /// The region as a slice of `T` (as many as fit). Reads and writes of it
    /// fault pages in as described in the [module docs](self); only the
    /// thread that called `init` may use it.
    #[allow(clippy::mut_from_ref)]
    pub fn as_mut_slice<T: bytemuck::Pod>(&self) -> &mut [T] {
        let n = self.state.len / std::mem::size_of::<T>().max(1);
        // SAFETY: the region is mapped for `len` bytes while `self` lives and
        // is page-aligned; pages that are not accessible fault and are made
        // accessible by the handler before the access completes; `T` is
        // plain data, so any bytes are a valid `T`. Several slices of one
        // region alias like the shared memory they stand for.
        unsafe { std::slice::from_raw_parts_mut(self.state.base.cast::<T>(), n) }
    }

    /// Sends this rank's changes home (a release: before unlocking, or
    /// before others read what this rank wrote).
    pub fn release(&self) -> Result<()> {
        self.state.release()
    }

    /// Forgets cached pages, so that changes others released are seen (an
    /// acquire: after locking). Releases this rank's changes first.
    pub fn acquire(&self) -> Result<()> {
        self.state.release()?;
        self.state.acquire()
    }

    /// Release, barrier, acquire: after it, every rank sees what every rank
    /// wrote before it (collective).
    pub fn barrier(&self) -> Result<()> {
        self.state.release()?;
        self.state.win.fence()?;
        self.state.acquire()
    }

    /// Takes `lock` and acquires: the holder sees what the previous holders
    /// released. The guard releases, then unlocks.
    pub fn lock<'a>(&'a self, lock: &'a DistLock) -> Result<RegionLockGuard<'a>> {
        let g = lock.lock()?;
        self.acquire()?;
        Ok(RegionLockGuard {
            region: self,
            guard: Some(g),
        })
    }

    /// Page faults handled on this rank so far.
    pub fn faults(&self) -> u64 {
        self.state.faults.get()
    }

    /// Ends the region collectively (after a [`SharedRegion::barrier`] if its
    /// contents matter).
    pub fn free(self) -> Result<()> {
        self.state.win.fence()
    }
}

impl RegionLockGuard<'_> {
    /// Releases the changes and the lock, reporting errors.
    pub fn unlock(mut self) -> Result<()> {
        self.region.release()?;
        match self.guard.take() {
            Some(g) => g.unlock(),
            None => Ok(()),
        }
    }
}

impl Drop for RegionLockGuard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            let _ = self.region.release();
            let _ = g.unlock();
        }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        REGIONS[self.slot].store(std::ptr::null_mut(), Ordering::Release);
        // SAFETY: unmapping the region this rank mapped; nothing refers to it
        // any more (slices borrowed `self`).
        unsafe { libc::munmap(self.state.base.cast(), self.state.len) };
    }
}
