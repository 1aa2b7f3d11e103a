//! Blocking while idle: a futex doorbell per rank.
//!
//! A rank that has nothing to do announces itself asleep, looks once more at its
//! rings, and sleeps on its doorbell word. A sender that published a record
//! checks the flag (after a full fence) and rings the bell only then, so the
//! fast path costs one fence and one load, and no syscall.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
pub(crate) fn notify(sleeping: &AtomicU32, bell: &AtomicU32) {
    std::sync::atomic::fence(Ordering::SeqCst);
    if sleeping.load(Ordering::Relaxed) != 0 {
        ring(bell);
    }
}

#[cold]
pub(crate) fn ring(bell: &AtomicU32) {
    bell.fetch_add(1, Ordering::Release);
    futex_wake(bell);
}
