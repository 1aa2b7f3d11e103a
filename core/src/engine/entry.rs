//! Entry into the engine: who drives it, the thread that called
//! [`crate::init`] (the *main* thread, inside a call into dos) or the service
//! thread (while the main thread is away computing); the gate that says
//! which; and the service thread itself.
//!
//! The engine is single-threaded: its state lives in `RefCell`s and its
//! transports are driven by one thread at a time. RPC needs a rank that
//! computes to keep answering, so a second thread must be able to drive it
//! *when the main thread does not*. The gate is one atomic word saying who
//! holds the engine:
//!
//! * The main thread enters at the start of every call that touches the
//!   engine (one compare-and-swap when the word is free; nested calls only
//!   count depth) and leaves at its end (a store). Until RPC starts the
//!   service thread, entering and leaving only count depth: programs that
//!   never use RPC pay nothing.
//! * The service thread takes a free word only when the main thread has not
//!   left a call for a while (the count of leaves has not moved), drives
//!   progress, runs RPC handlers, and sleeps in the transports' wait while
//!   holding the word.
//! * A main thread that finds the word held sets the *want* bit, wakes the
//!   service thread's sleep through the waker the service registered, and
//!   sleeps on the word (futex) until the service thread hands it over.
//!
//! Every access to the engine goes through [`super::Shared::enter`]'s
//! guard (the communicators hold the engine only behind it), so the borrow
//! checker sees to it that no access happens outside the gate.
//!
//! The service thread is started by the first service that needs one (RPC,
//! through [`Engine::start_service_thread`]); it drives the engine's progress
//! (and so every service's hooks) and knows no service itself. Finalizing or
//! dropping the engine stops and joins it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use dos_transport::shm::{futex_wait, futex_wake};

use super::Engine;

/// Nobody drives the engine.
const FREE: u32 = 0;
/// The main thread holds the engine.
const MAIN: u32 = 1;
/// The service thread holds the engine.
const SERVICE: u32 = 2;
/// Holder bits.
const HELD: u32 = 3;
/// The main thread waits for the service thread to hand the engine over.
const WANT: u32 = 4;

/// How the main thread wakes the service thread's sleep in the transports.
pub(crate) type Waker = Box<dyn Fn() + Send + Sync>;

/// The word and what the two threads share; see the [module docs](self).
pub(crate) struct Gate {
    word: AtomicU32,
    /// How many times the main thread left the engine (written by it alone).
    leaves: AtomicU64,
    /// Tells the service thread to end.
    stop: AtomicBool,
    waker: OnceLock<Waker>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("word", &self.word.load(Ordering::Relaxed))
            .field("leaves", &self.leaves.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            word: AtomicU32::new(FREE),
            leaves: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            waker: OnceLock::new(),
        }
    }
}

impl Gate {
    /// The main thread takes the engine (waiting for the service thread to
    /// hand it over if it holds it).
    #[inline]
    pub(crate) fn main_enter(&self) {
        if self
            .word
            .compare_exchange(FREE, MAIN, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.main_enter_slow();
        }
    }

    #[cold]
    fn main_enter_slow(&self) {
        loop {
            let w = self.word.load(Ordering::Acquire);
            if w & HELD == FREE {
                if self
                    .word
                    .compare_exchange(w, MAIN, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            debug_assert_eq!(w & HELD, SERVICE, "the main thread entered twice");
            let w = self.word.fetch_or(WANT, Ordering::AcqRel) | WANT;
            if w & HELD != SERVICE {
                continue;
            }
            if let Some(wake) = self.waker.get() {
                wake();
            }
            // Bounded: a lost wake-up costs a millisecond, not a hang.
            futex_wait(&self.word, w, Duration::from_millis(1));
        }
    }

    /// The main thread leaves the engine.
    #[inline]
    pub(crate) fn main_leave(&self) {
        // Only the main thread writes `leaves`: no read-modify-write needed.
        let n = self.leaves.load(Ordering::Relaxed);
        self.leaves.store(n.wrapping_add(1), Ordering::Relaxed);
        self.word.store(FREE, Ordering::Release);
    }

    /// How many times the main thread has left the engine.
    pub(crate) fn leaves(&self) -> u64 {
        self.leaves.load(Ordering::Relaxed)
    }

    /// The service thread takes a free engine; false if someone holds it.
    pub(crate) fn service_take(&self) -> bool {
        self.word
            .compare_exchange(FREE, SERVICE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// The service thread lets go (and wakes the main thread if it waits).
    pub(crate) fn service_release(&self) {
        let old = self.word.swap(FREE, Ordering::Release);
        if old & WANT != 0 {
            futex_wake(&self.word);
        }
    }

    /// Whether the main thread waits for the engine.
    pub(crate) fn wanted(&self) -> bool {
        self.word.load(Ordering::Relaxed) & WANT != 0
    }

    /// Registers how to wake the service thread's sleep (once).
    pub(crate) fn set_waker(&self, w: Waker) {
        let _ = self.waker.set(w);
    }

    /// Asks the service thread to end, and wakes it.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(wake) = self.waker.get() {
            wake();
        }
    }

    /// Whether the service thread should end.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

impl Engine {
    /// Makes entering the engine take the gate from now on (the service
    /// thread is about to start). Called by the main thread inside the engine.
    pub(crate) fn start_gating(&self) {
        if !self.gated.get() {
            debug_assert!(self.depth.get() > 0, "start_gating outside the engine");
            self.gate.main_enter();
            self.gated.set(true);
        }
    }

    /// Starts the process's service thread, once. Called by the main thread
    /// inside the engine (`self` is the engine behind an `Rc`, which outlives
    /// the thread: finalizing or dropping the engine joins it first).
    pub(crate) fn start_service_thread(&self) {
        if self.service_thread.borrow().is_some() {
            return;
        }
        self.start_gating();
        self.gate.set_waker(self.waker());
        let gate = self.gate.clone();
        let ptr = EnginePtr(self as *const Engine);
        let spawned = std::thread::Builder::new()
            .name("dos-rpc".into())
            .spawn(move || {
                let ptr = ptr;
                // SAFETY: see `EnginePtr`.
                let eng = unsafe { &*ptr.0 };
                service(eng, &gate)
            });
        // Without the thread, services still run inside this rank's dos calls.
        if let Ok(h) = spawned {
            *self.service_thread.borrow_mut() = Some(h);
        }
    }

    /// Stops the service thread, if any: called by the main thread inside
    /// the engine (finalize) or when the engine is dropped.
    pub(crate) fn stop_service_thread(&self) {
        let Some(h) = self.service_thread.borrow_mut().take() else {
            return;
        };
        self.gate.stop();
        let _ = h.join();
    }
}

// ----- the service thread -----------------------------------------------------

/// The engine, sent to the service thread. The engine outlives the thread
/// (dropping or finalizing the engine stops and joins it first) and the
/// gate keeps the two threads from using it at once.
struct EnginePtr(*const Engine);

// SAFETY: see the type's docs: every use of the engine through this pointer
// happens while the service thread holds the gate, which the main thread
// never does at the same time, and the engine lives until the thread is joined.
unsafe impl Send for EnginePtr {}

/// How long the main thread must stay away from dos before the service
/// thread takes the engine over.
const IDLE: Duration = Duration::from_millis(1);

/// The service thread's loop; see the [module docs](self).
fn service(eng: &Engine, gate: &Gate) {
    while !gate.stopping() {
        let seen = gate.leaves();
        std::thread::sleep(IDLE);
        if gate.stopping() {
            return;
        }
        if gate.leaves() != seen || !gate.service_take() {
            continue;
        }
        // The engine is ours until the main thread wants it back.
        loop {
            let n = eng.progress();
            if gate.wanted() || gate.stopping() {
                break;
            }
            if n == 0 {
                let mut ready = || gate.wanted() || gate.stopping();
                if eng.sleep(&mut ready).is_err() {
                    // A peer died: nothing to serve; let the main thread see it.
                    break;
                }
            }
        }
        gate.service_release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_main_thread_takes_over_from_the_service_thread() {
        let g = Arc::new(Gate::default());
        g.main_enter();
        assert!(!g.service_take(), "held by the main thread");
        g.main_leave();
        assert_eq!(g.leaves(), 1);
        assert!(g.service_take());
        assert!(!g.wanted());
        // The service thread holds it and sleeps until wanted.
        let woken = Arc::new(AtomicU32::new(0));
        let w2 = woken.clone();
        g.set_waker(Box::new(move || {
            w2.fetch_add(1, Ordering::SeqCst);
        }));
        let g2 = g.clone();
        let service = std::thread::spawn(move || {
            while !g2.wanted() {
                std::thread::sleep(Duration::from_micros(100));
            }
            g2.service_release();
        });
        g.main_enter();
        assert!(woken.load(Ordering::SeqCst) >= 1, "the sleep was not woken");
        assert!(!g.service_take());
        g.main_leave();
        service.join().unwrap();
        assert!(!g.wanted());
    }

    #[test]
    fn stop_wakes_the_service_thread() {
        let g = Gate::default();
        let woken = Arc::new(AtomicBool::new(false));
        let w2 = woken.clone();
        g.set_waker(Box::new(move || w2.store(true, Ordering::SeqCst)));
        assert!(!g.stopping());
        g.stop();
        assert!(g.stopping());
        assert!(woken.load(Ordering::SeqCst));
    }
}
