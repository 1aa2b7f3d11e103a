//! The library's state: the dos world, and the tables that map handles to
//! objects (communicators, requests).
//!
//! dos offers `MPI_THREAD_FUNNELED`: one thread calls into MPI. The state
//! is a process-wide [`Local`] that only the thread which called `MPI_Init`
//! may reach (another thread is told MPI is not running on it); the few
//! functions that any thread may call (`MPI_Initialized`, `MPI_Finalized`,
//! `MPI_Wtime`) read only process-wide atomics.
//!
//! Why not a `thread_local!`: in a shared library (libmpi.so) every visit to
//! thread-local storage goes through `__tls_get_addr` and the key's
//! registration check, some 30 instructions, and a small-message `MPI_Isend`
//! and its `MPI_Wait` visit the state several times. A [`Local`] costs a compare
//! of `pthread_self()` (one load from the thread pointer) and a flag.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use dos::detached::DetachedRequest;
use dos::Comm;

use crate::abi::{self, Handle};
use crate::error::{err, R};

/// Where the library is in its life: before `MPI_Init`, running, after `MPI_Finalize`.
static PHASE: AtomicU8 = AtomicU8::new(BEFORE);
const BEFORE: u8 = 0;
const RUNNING: u8 = 1;
const AFTER: u8 = 2;

/// True once `MPI_Init` has succeeded.
pub(crate) fn initialized() -> bool {
    PHASE.load(Ordering::Acquire) != BEFORE
}

/// True once `MPI_Finalize` has returned.
pub(crate) fn finalized() -> bool {
    PHASE.load(Ordering::Acquire) == AFTER
}

/// A communicator and its error handler.
pub(crate) struct CommEntry {
    pub comm: Comm,
    pub errhandler: Handle,
}

/// What a request's completion yields.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReqKind {
    /// A send (an empty status).
    Send,
    /// A receive; a truncated message reports the selectors given.
    Recv { source: i32, tag: i32 },
    /// A receive from `MPI_PROC_NULL`: complete, with the `MPI_PROC_NULL` status.
    ProcNull,
    /// A nonblocking collective (an empty status; `MPI_Request_free` is
    /// erroneous for it).
    Coll,
}

/// A nonblocking request in flight.
pub(crate) struct ReqEntry {
    pub raw: DetachedRequest,
    pub kind: ReqKind,
    /// The communicator whose error handler its errors go to.
    pub comm: Handle,
    /// Its outcome, once `MPI_Request_get_status` has seen it complete
    /// (boxed: rare, and the entry moves on every request's path).
    pub outcome: Option<Box<(crate::abi::Status, Option<crate::error::Error>)>>,
    /// What runs when it completes (see [`crate::request::After`]).
    pub after: Option<crate::request::After>,
}

/// Objects by handle: a slab, so that a lookup is an index (the request
/// and communicator tables are on the path of every message).
///
/// The `fixed` handles (predefined ones, as `MPI_COMM_WORLD`) take the first
/// slots; the others are `base + 8 * i`.
pub(crate) struct Table<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
    fixed: &'static [Handle],
    base: Handle,
}

impl<T> Table<T> {
    pub fn new(fixed: &'static [Handle], base: Handle) -> Table<T> {
        Table {
            items: fixed.iter().map(|_| None).collect(),
            free: Vec::new(),
            fixed,
            base,
        }
    }

    /// A table without fixed handles, usable in a `static`.
    pub const fn empty(base: Handle) -> Table<T> {
        Table {
            items: Vec::new(),
            free: Vec::new(),
            fixed: &[],
            base,
        }
    }

    #[inline]
    fn index(&self, h: Handle) -> Option<usize> {
        if let Some(i) = self.fixed.iter().position(|&f| f == h) {
            return Some(i);
        }
        let off = h.checked_sub(self.base)?;
        (off % 8 == 0).then(|| self.fixed.len() + off / 8)
    }

    #[inline]
    fn handle(&self, i: usize) -> Handle {
        match self.fixed.get(i) {
            Some(&h) => h,
            None => self.base + 8 * (i - self.fixed.len()),
        }
    }

    /// Stores `v` under a fixed handle.
    pub fn set(&mut self, h: Handle, v: T) {
        let i = self.index(h).expect("a fixed handle");
        self.items[i] = Some(v);
    }

    /// Stores `v` under a new handle (a freed slot if there is one: on the
    /// path of every nonblocking call, so inlined, without the drop of the
    /// slot's old value that an assignment would check for).
    #[inline]
    pub fn insert(&mut self, v: T) -> Handle {
        match self.free.pop().filter(|&i| i < self.items.len()) {
            Some(i) => {
                let old = self.items[i].replace(v);
                // A free slot is empty: `remove` and `discard` empty it
                // before listing it; nothing to drop.
                debug_assert!(old.is_none());
                std::mem::forget(old);
                self.handle(i)
            }
            None => self.push(v),
        }
    }

    /// [`Table::insert`] into a new slot.
    #[cold]
    fn push(&mut self, v: T) -> Handle {
        self.items.push(Some(v));
        self.handle(self.items.len() - 1)
    }

    pub fn get(&self, h: &Handle) -> Option<&T> {
        self.items.get(self.index(*h)?)?.as_ref()
    }

    pub fn get_mut(&mut self, h: &Handle) -> Option<&mut T> {
        let i = self.index(*h)?;
        self.items.get_mut(i)?.as_mut()
    }

    pub fn remove(&mut self, h: &Handle) -> Option<T> {
        let i = self.index(*h)?;
        let v = self.items.get_mut(i)?.take()?;
        if i >= self.fixed.len() {
            self.free.push(i);
        }
        Some(v)
    }

    /// Drops the object of handle `h` where it lies (no move out, unlike
    /// [`Table::remove`]: for hot paths that have read what they need).
    #[inline]
    pub fn discard(&mut self, h: &Handle) {
        if let Some(i) = self.index(*h) {
            if let Some(slot @ Some(_)) = self.items.get_mut(i) {
                *slot = None;
                if i >= self.fixed.len() {
                    self.free.push(i);
                }
            }
        }
    }

    /// Takes every object out.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.free.clear();
        self.items.drain(..).flatten()
    }
}

/// The first handle of a communicator the program makes.
const COMM_BASE: Handle = abi::FIRST_DYNAMIC;
/// The first handle of a group.
const GROUP_BASE: Handle = 0x2000_0000;
/// The first handle of a user operation.
const OP_BASE: Handle = 0x3000_0000;
/// The first handle of a request.
const REQ_BASE: Handle = 0x4000_0000;

/// The state between `MPI_Init` and `MPI_Finalize`.
pub(crate) struct State {
    pub world: dos::World,
    pub comms: Table<CommEntry>,
    pub reqs: Table<ReqEntry>,
    /// Groups (`MPI_GROUP_EMPTY` is the fixed slot).
    pub groups: Table<dos::Group>,
    /// User reduction operations (`MPI_Op_create`).
    pub ops: Table<crate::reduce::UserFn>,
    /// Persistent requests (`MPI_Send_init`, ...).
    pub persist: Table<crate::persist::Persist>,
    /// Matched messages (`MPI_Mprobe`).
    pub messages: Table<crate::persist::Matched>,
    /// Info objects (`MPI_INFO_ENV` is the fixed slot).
    pub infos: Table<crate::info::Info>,
    /// Requests given up with `MPI_Request_free` while active, and buffered
    /// sends with their copy of the data: completed in the background, waited
    /// for at `MPI_Finalize` and `MPI_Buffer_detach`.
    pub detached: Vec<(DetachedRequest, Vec<u8>)>,
    /// Receives given up with `MPI_Request_free` while active: they complete
    /// in the background; at `MPI_Finalize` those still unmatched are withdrawn.
    pub freed_recvs: Vec<DetachedRequest>,
    /// Buffered sends in flight and the buffer of `MPI_Buffer_attach`.
    pub bsend: crate::bsend::Bsends,
    pub thread_level: i32,
    pub main_thread: std::thread::ThreadId,
}

/// The thread that called `MPI_Init` (its `pthread_self()`; 0: none yet).
static OWNER: AtomicUsize = AtomicUsize::new(0);

/// This thread's id as [`OWNER`] keeps it.
#[inline]
fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// True if this thread is the one that called `MPI_Init`.
#[inline]
pub(crate) fn on_mpi_thread() -> bool {
    OWNER.load(Ordering::Acquire) == this_thread()
}

/// A value of the library's that only the thread which called `MPI_Init`
/// may reach (dos is `MPI_THREAD_FUNNELED`), borrowed by one call at a time:
/// a cheaper `thread_local!` + `RefCell` (see the [module docs](self)).
pub(crate) struct Local<T> {
    busy: Cell<bool>,
    value: UnsafeCell<T>,
}

// SAFETY: `busy` and `value` are touched only on the thread that called
// MPI_Init (`on_mpi_thread`, checked by every access below), so never by two
// threads at once; a thread that gets the id of that thread after it ended
// finds what it left, as if it were the same thread.
unsafe impl<T> Sync for Local<T> {}

impl<T> Local<T> {
    pub const fn new(v: T) -> Local<T> {
        Local {
            busy: Cell::new(false),
            value: UnsafeCell::new(v),
        }
    }

    /// Runs `f` on the value; `None` on another thread than MPI's, or while
    /// the value is borrowed already (a call into MPI from inside MPI).
    #[inline(always)]
    pub fn with<U>(&self, f: impl FnOnce(&mut T) -> U) -> Option<U> {
        if !on_mpi_thread() || self.busy.replace(true) {
            return None;
        }
        struct Release<'a>(&'a Cell<bool>);
        impl Drop for Release<'_> {
            #[inline]
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _release = Release(&self.busy);
        // SAFETY: on MPI's thread (so no other thread reaches `value`) and
        // not borrowed (`busy` was false and is true until `_release` drops).
        Some(f(unsafe { &mut *self.value.get() }))
    }

    /// True if the value is borrowed (only meaningful on MPI's thread).
    #[inline]
    fn busy(&self) -> bool {
        self.busy.get()
    }
}

static STATE: Local<Option<State>> = Local::new(None);

impl State {
    /// Completes what finished among the detached requests.
    pub fn reap(&mut self) {
        self.detached.retain(|(r, _)| !r.test());
        self.freed_recvs.retain(|r| !r.test());
    }
}

/// Starts the library: joins the dos job.
pub(crate) fn init(required: i32) -> R<i32> {
    if initialized()
        || OWNER
            .compare_exchange(0, this_thread(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return Err(err(abi::ERR_OTHER, "MPI_Init called twice"));
    }
    let r = init_here(required);
    if r.is_err() {
        OWNER.store(0, Ordering::Release);
    }
    r
}

/// [`init`] once this thread is [`OWNER`].
fn init_here(required: i32) -> R<i32> {
    let world = dos::init()?;
    let me = world.rank();
    // MPI_COMM_SELF without a word to anyone: a split would send every
    // rank's color to every rank (n^2 messages, a ring of the shared
    // segment touched per pair: most of a 64-rank MPI_Init). Only this
    // process uses the context, so it takes the next free one here; every
    // rank takes the same id (1, after the world's 0), as a split would.
    let ctx = world.free_context();
    world.reserve_contexts(ctx + 1);
    let selfc = world.with_members(ctx, &[me])?;
    let mut comms = Table::new(&[abi::COMM_WORLD, abi::COMM_SELF], COMM_BASE);
    comms.set(
        abi::COMM_WORLD,
        CommEntry {
            comm: world.comm().clone(),
            errhandler: abi::ERRORS_ARE_FATAL,
        },
    );
    comms.set(
        abi::COMM_SELF,
        CommEntry {
            comm: selfc,
            errhandler: abi::ERRORS_ARE_FATAL,
        },
    );
    // dos is MPI_THREAD_FUNNELED: a request for more is answered with that.
    let provided = abi::provided_thread_level(required);
    let mut groups = Table::new(&[abi::GROUP_EMPTY], GROUP_BASE);
    groups.set(abi::GROUP_EMPTY, world.comm().group().incl(&[])?);
    // Info objects made before MPI_Init keep their handles.
    let infos = crate::info::take_outside(world.size());
    let st = State {
        world,
        comms,
        reqs: Table::new(&[], REQ_BASE),
        groups,
        ops: Table::new(&[], OP_BASE),
        persist: Table::new(&[], crate::persist::PERSIST_BASE),
        messages: Table::new(&[], crate::persist::MESSAGE_BASE),
        infos,
        detached: Vec::new(),
        freed_recvs: Vec::new(),
        bsend: Default::default(),
        thread_level: provided,
        main_thread: std::thread::current().id(),
    };
    STATE
        .with(|s| *s = Some(st))
        .ok_or_else(|| err(abi::ERR_INTERN, "the state is borrowed during MPI_Init"))?;
    PHASE.store(RUNNING, Ordering::Release);
    Ok(provided)
}

/// Ends the library: completes what is left, leaves the dos job.
pub(crate) fn finalize() -> R<()> {
    if initialized() && !finalized() {
        // The attributes of MPI_COMM_SELF go first, as if it were freed
        // (their delete callbacks may still call MPI).
        crate::attr::delete_all(crate::attr::Kind::Comm, abi::COMM_SELF)?;
    }
    crate::attr::clear();
    crate::topo::clear();
    if on_mpi_thread() && STATE.busy() {
        return Err(err(abi::ERR_OTHER, "MPI called from inside MPI"));
    }
    crate::inter::clear();
    crate::request::clear_compounds();
    let Some(mut st) = STATE.with(|s| s.take()).flatten() else {
        return Err(not_running());
    };
    PHASE.store(AFTER, Ordering::Release);
    // Windows the program did not free go before dos leaves the job.
    crate::rma::forget_all();
    for r in st.freed_recvs.drain(..) {
        r.abandon();
    }
    for (r, _) in st.detached.drain(..) {
        r.wait()?;
    }
    for (r, _) in st.bsend.pending.drain(..) {
        r.wait()?;
    }
    // Requests the program never completed (erroneous, but no reason to
    // hang): withdrawn.
    for e in st.reqs.drain() {
        e.raw.abandon();
    }
    st.comms.drain().for_each(drop);
    st.groups.drain().for_each(drop);
    st.persist.drain().for_each(drop);
    st.messages.drain().for_each(drop);
    // Info objects stay usable after MPI_Finalize (MPI-4).
    crate::info::give_back(std::mem::replace(&mut st.infos, Table::empty(0)));
    st.world.finalize()?;
    Ok(())
}

fn not_running() -> crate::error::Error {
    if finalized() {
        err(abi::ERR_OTHER, "MPI has been finalized")
    } else {
        err(
            abi::ERR_OTHER,
            "MPI_Init has not been called (or not on this thread)",
        )
    }
}

/// Runs `f` on the state (inlined: on the path of every call, where a
/// call of its own would save and restore registers around `f`).
#[inline(always)]
pub(crate) fn with<T>(f: impl FnOnce(&mut State) -> R<T>) -> R<T> {
    match STATE.with(|s| s.as_mut().map(f)) {
        Some(Some(r)) => r,
        _ => Err(refused()),
    }
}

/// Why [`with`] could not reach the state.
#[cold]
fn refused() -> crate::error::Error {
    if on_mpi_thread() && STATE.busy() {
        err(abi::ERR_OTHER, "MPI called from inside MPI")
    } else {
        not_running()
    }
}

/// The communicator of handle `h` (a cheap clone).
pub(crate) fn comm(h: Handle) -> R<Comm> {
    with(|st| match st.comms.get(&h) {
        Some(e) => Ok(e.comm.clone()),
        None => Err(bad_comm(h)),
    })
}

/// The error for an invalid communicator handle.
pub(crate) fn bad_comm(h: Handle) -> crate::error::Error {
    if h == abi::COMM_NULL {
        err(abi::ERR_COMM, "MPI_COMM_NULL is not a communicator")
    } else {
        err(abi::ERR_COMM, format!("invalid communicator handle {h:#x}"))
    }
}

/// The error handler of communicator `h`; that of `MPI_COMM_WORLD` if `h`
/// is not valid; `MPI_ERRORS_ARE_FATAL` before `MPI_Init`.
pub(crate) fn errhandler_of(h: Handle) -> Handle {
    STATE
        .with(|s| {
            let st = s.as_ref()?;
            st.comms
                .get(&h)
                .or_else(|| st.comms.get(&abi::COMM_WORLD))
                .map(|e| e.errhandler)
        })
        .flatten()
        .unwrap_or(abi::ERRORS_ARE_FATAL)
}

/// This process's rank in `MPI_COMM_WORLD`, when running.
pub(crate) fn world_rank() -> Option<usize> {
    STATE
        .with(|s| s.as_ref().map(|st| st.world.rank()))
        .flatten()
}

/// Ends the whole job with exit status `code` (`MPI_Abort`, fatal errors).
pub(crate) fn abort(code: i32, msg: &str) -> ! {
    // Through dos (the launcher learns of the abort) when running.
    let world = STATE.with(|s| s.take()).flatten();
    match world {
        Some(st) => st.world.abort(code, msg),
        None => {
            eprintln!("dos-mpi: abort: {msg}");
            std::process::exit(if code == 0 { 1 } else { code })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn table_handles() {
        let mut t: Table<u32> = Table::new(&[0x101, 0x102], 0x1_0000);
        assert!(t.get(&0x101).is_none());
        t.set(0x101, 1);
        let a = t.insert(10);
        let b = t.insert(11);
        assert_eq!((a, b), (0x1_0000, 0x1_0008));
        assert_eq!(t.get(&0x101), Some(&1));
        assert_eq!(t.get(&a), Some(&10));
        // Not handles of this table: below the base, misaligned, past the end.
        for h in [0x100, 0x1_0004, 0x2_0000, 0] {
            assert!(t.get(&h).is_none(), "{h:#x}");
        }
        assert_eq!(t.remove(&a), Some(10));
        assert!(t.get(&a).is_none() && t.remove(&a).is_none());
        // Discarding: as removing, without the value; twice is nothing.
        let d = t.insert(20);
        t.discard(&d);
        t.discard(&d);
        assert!(t.get(&d).is_none());
        assert_eq!(t.insert(21), d);
        assert_eq!(t.remove(&d), Some(21));
        // A freed slot is used again; a fixed one never is.
        assert_eq!(t.insert(12), a);
        assert_eq!(t.remove(&0x101), Some(1));
        assert_eq!(t.insert(13), 0x1_0010);
        *t.get_mut(&b).unwrap() += 1;
        let mut all: Vec<u32> = t.drain().collect();
        all.sort();
        assert_eq!(all, [12, 12, 13]);
    }
}
