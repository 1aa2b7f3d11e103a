//! Blocking while idle: a futex doorbell per rank.
//!
//! A rank that has nothing to do announces itself asleep, looks once more at its
//! rings, and sleeps on its doorbell word. A sender that published a record
//! checks the flag and rings the bell only then, so the fast path costs one
//! load and no syscall.
//!
//! Between the sender's publication and its look at the flag there must be a
//! full barrier, and between the sleeper's flag and its last look at the
//! rings another (Dekker's pattern), or a wake-up can be lost. A full fence
//! (`mfence`) costs about 100 ns on this VM, as much as the rest of a small
//! message together, so the barrier is made *asymmetric* (as liburcu and
//! folly do): each process registers for `membarrier(2)`'s
//! `MEMBARRIER_CMD_GLOBAL_EXPEDITED` when it attaches ([`Barriers::new`]);
//! senders then only keep the compiler from reordering ([`Barriers::light`]),
//! and a rank about to sleep pays for both sides with one `membarrier` call
//! ([`Barriers::heavy`]), which runs a full barrier on every CPU that runs a
//! registered process: a sender's load of the flag either ran after that
//! barrier (it sees the flag) or before it, and then its earlier store was
//! drained by it (the sleeper sees the record). A sender that could not
//! register fences; a sleeper whose `membarrier` fails fences and bounds its
//! sleep to [`FALLBACK_SLEEP`].
//!
//! The bell rings once per sleep: the sender that finds the flag set clears
//! it with a swap and makes the system call; the senders after it see the
//! flag clear. Before, every message sent to a sleeping rank made a
//! `futex_wake` until the rank ran again, which on a loaded machine turned a
//! window of 64 small messages into 64 system calls.

use std::sync::atomic::{compiler_fence, fence, AtomicU32, Ordering};
use std::time::Duration;

/// The longest a rank sleeps when its `membarrier` call failed, so that a
/// wake-up lost to a sender that skipped its fence costs at most this.
pub(crate) const FALLBACK_SLEEP: Duration = Duration::from_millis(1);

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint) }
}

/// How this process orders its publications against sleepers (decided once
/// per endpoint, see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Barriers {
    /// This process is registered for expedited global membarriers: its
    /// senders need no fence.
    registered: bool,
    /// The kernel has no expedited global membarrier, so no process on this
    /// node skips its fence and a sleeper's own fence is enough.
    absent: bool,
}

impl Barriers {
    /// Registers this process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED` if the
    /// kernel has it (idempotent; one system call per endpoint).
    pub(crate) fn new() -> Barriers {
        const NEED: libc::c_long = (MEMBARRIER_CMD_GLOBAL_EXPEDITED
            | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
            as libc::c_long;
        let q = membarrier(MEMBARRIER_CMD_QUERY);
        let enosys = q < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
        let absent = enosys || (q >= 0 && q & NEED != NEED);
        let registered =
            !absent && q >= 0 && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
        Barriers { registered, absent }
    }

    /// Whether senders of this process skip the fence.
    pub(crate) fn registered(self) -> bool {
        self.registered
    }

    /// Senders fence whatever the kernel offers (`DOS_SHM_FENCE=1`).
    pub(crate) fn fenced(self) -> Barriers {
        Barriers {
            registered: false,
            ..self
        }
    }

    /// The sender's side: between publishing and looking at `sleeping`.
    #[inline(always)]
    pub(crate) fn light(self) {
        if self.registered {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The sleeper's side: after setting `sleeping`, before the last look.
    /// Returns false if only a fence could be made while other processes
    /// may skip theirs (then sleep at most [`FALLBACK_SLEEP`]).
    #[cold]
    pub(crate) fn heavy(self) -> bool {
        fence(Ordering::SeqCst);
        self.absent || membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0
    }
}

/// Sleeps while `*word == expected`, for at most `timeout` (or until a
/// [`futex_wake`] on the word, a signal, or spuriously: look again after).
/// Works across processes on a shared mapping.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 in shared memory; FUTEX_WAIT (not
    // private) because other processes wake it. Errors (EAGAIN, EINTR,
    // ETIMEDOUT) all mean "return and look again".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes one sleeper on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; waking has no memory-safety preconditions.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

/// Rings `bell` if its owner is asleep. Call after publishing a record.
#[inline]
pub(crate) fn notify(b: Barriers, sleeping: &AtomicU32, bell: &AtomicU32) {
    b.light();
    if sleeping.load(Ordering::Relaxed) != 0 {
        ring_once(sleeping, bell);
    }
}

/// Rings `bell` unless another sender already did for this sleep.
#[cold]
pub(crate) fn ring_once(sleeping: &AtomicU32, bell: &AtomicU32) {
    if sleeping.swap(0, Ordering::AcqRel) != 0 {
        ring(bell);
    }
}

/// Rings `bell` (always).
#[cold]
pub(crate) fn ring(bell: &AtomicU32) {
    bell.fetch_add(1, Ordering::Release);
    futex_wake(bell);
}
