//! Nonblocking operations whose buffers the compiler keeps borrowed.
//!
//! A nonblocking send or receive lives inside a [`scope`]: the buffer is
//! borrowed for the whole scope, and the scope does not return before every
//! request started in it has completed, even one that was leaked with
//! `mem::forget`. Dropping a [`Request`] waits for it.
//!
//! ```
//! let world = dos::init().unwrap();
//! let me = world.rank();
//! let mut got = [0u64; 4];
//! let sent = [me as u64; 4];
//! dos::scope(|s| {
//!     let r = world.irecv(s, &mut got, me, 0).unwrap();
//!     let w = world.isend(s, &sent, me, 0).unwrap();
//!     dos::Request::wait_all([r, w]).unwrap();
//! });
//! assert_eq!(got, sent);
//! ```

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::rc::Rc;

use crate::p2p::persistent::Phase;
use crate::p2p::{ReqId, Shared, Status};
use crate::Result;

/// The region inside which nonblocking operations may borrow buffers; see [`scope`].
///
/// `'s` is the scope's own lifetime, `'env` that of everything borrowed into it
/// (as in `std::thread::scope`).
pub struct Scope<'s, 'env: 's> {
    started: RefCell<Vec<(Shared, ReqId, u32)>>,
    /// Persistent requests made in the scope (see [`crate::Persistent`]).
    persistent: RefCell<Vec<(Shared, Rc<Cell<Phase>>)>>,
    _scope: PhantomData<&'s mut &'s ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("started", &self.started.borrow().len())
            .finish()
    }
}

/// Runs `f` with a [`Scope`]; waits for every request started in it before returning.
pub fn scope<'env, R>(f: impl for<'s> FnOnce(&'s Scope<'s, 'env>) -> R) -> R {
    struct Guard<'a, 'env>(&'a Scope<'a, 'env>);
    impl Drop for Guard<'_, '_> {
        fn drop(&mut self) {
            self.0.finish();
        }
    }
    let s = Scope {
        started: RefCell::new(Vec::new()),
        persistent: RefCell::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    // The guard waits for every request even if `f` unwinds. Buffers are
    // borrowed for `'s`, which outlives every local of `f`, and the guard
    // completes their transfers before `'s` ends.
    let g = Guard(&s);
    let r = f(g.0);
    drop(g);
    r
}

impl<'s> Scope<'s, '_> {
    pub(crate) fn register(&'s self, eng: &Shared, id: ReqId) -> Request<'s> {
        let gen = eng.enter().generation(id);
        self.started.borrow_mut().push((eng.clone(), id, gen));
        Request {
            inner: Some((eng.clone(), id)),
            _scope: PhantomData,
        }
    }

    /// A request that is already complete (a send that went out at once).
    pub(crate) fn completed(&'s self) -> Request<'s> {
        Request {
            inner: None,
            _scope: PhantomData,
        }
    }

    /// Remembers a persistent request, to complete it if it is leaked while active.
    pub(crate) fn register_persistent(&'s self, eng: &Shared, phase: Rc<Cell<Phase>>) {
        self.persistent.borrow_mut().push((eng.clone(), phase));
    }

    fn finish(&self) {
        for (eng, phase) in self.persistent.borrow_mut().drain(..) {
            crate::p2p::persistent::finish(&eng, &phase);
        }
        for (eng, id, gen) in self.started.borrow_mut().drain(..) {
            // A request still in this slot generation was leaked: complete and free it.
            let eng = eng.enter();
            if eng.generation(id) == gen {
                let _ = eng.wait(id);
            }
        }
    }
}

/// A nonblocking operation in flight, borrowing its buffer for the scope `'s`.
#[must_use = "a request completes only when waited on (dropping it waits)"]
pub struct Request<'s> {
    inner: Option<(Shared, ReqId)>,
    _scope: PhantomData<&'s ()>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.inner.as_ref().map(|x| x.1))
            .finish()
    }
}

impl Request<'_> {
    /// Waits for completion; returns what was received (a default status for sends).
    pub fn wait(mut self) -> Result<Status> {
        match self.inner.take() {
            None => Ok(Status::default()),
            Some((eng, id)) => eng.enter().wait(id),
        }
    }

    /// Makes progress once and tells whether the request has completed;
    /// [`Request::wait`] then returns at once.
    pub fn test(&self) -> bool {
        match &self.inner {
            None => true,
            Some((eng, id)) => {
                let eng = eng.enter();
                if eng.is_done(*id) {
                    return true;
                }
                eng.progress();
                eng.is_done(*id)
            }
        }
    }

    /// Waits for all requests; returns their statuses, or the first error
    /// after all have completed.
    pub fn wait_all<'a>(reqs: impl IntoIterator<Item = Request<'a>>) -> Result<Vec<Status>> {
        all_statuses(reqs.into_iter().map(Request::wait))
    }

    /// Waits until one of `reqs` completes; removes it and returns its index and result.
    /// Returns `None` when `reqs` is empty.
    pub fn wait_any<'a>(reqs: &mut Vec<Request<'a>>) -> Option<(usize, Result<Status>)> {
        if reqs.is_empty() {
            return None;
        }
        loop {
            if let Some(i) = reqs.iter().position(|r| r.test()) {
                return Some((i, reqs.remove(i).wait()));
            }
            // Let the engine block if nothing moves: wait on the first one's engine
            // until anything completes.
            if let Some((eng, _)) = &reqs[0].inner {
                let eng = eng.clone();
                let ids: Vec<ReqId> = reqs
                    .iter()
                    .filter_map(|r| r.inner.as_ref().map(|x| x.1))
                    .collect();
                let r = eng
                    .enter()
                    .wait_until(|e| ids.iter().any(|&i| e.is_done(i)));
                if r.is_err() {
                    // A peer failed: nothing more will complete; give up all.
                    return Some((0, reqs.remove(0).wait()));
                }
            }
        }
    }
}

impl<'a> Request<'a> {
    /// Makes progress once; if every request has completed, takes them all
    /// and returns their statuses (or the first error), else leaves `reqs`
    /// alone and returns `None` (`MPI_Testall`). An empty `reqs` is complete.
    pub fn test_all(reqs: &mut Vec<Request<'a>>) -> Option<Result<Vec<Status>>> {
        if reqs.iter().all(|r| r.test()) {
            Some(Request::wait_all(reqs.drain(..)))
        } else {
            None
        }
    }

    /// Makes progress once; removes the first completed request and returns
    /// its index and result, or `None` if none has completed (or `reqs` is
    /// empty) (`MPI_Testany`).
    pub fn test_any(reqs: &mut Vec<Request<'a>>) -> Option<(usize, Result<Status>)> {
        let i = reqs.iter().position(|r| r.test())?;
        Some((i, reqs.remove(i).wait()))
    }

    /// Makes progress once; removes every completed request and returns
    /// their indices (positions in `reqs` before the call, ascending) with
    /// their results; empty if none has completed (`MPI_Testsome`).
    pub fn test_some(reqs: &mut Vec<Request<'a>>) -> Vec<(usize, Result<Status>)> {
        let done: Vec<bool> = reqs.iter().map(|r| r.test()).collect();
        let mut out = Vec::new();
        let mut kept = Vec::with_capacity(reqs.len());
        for (i, (r, d)) in reqs.drain(..).zip(done).enumerate() {
            if d {
                out.push((i, r.wait()));
            } else {
                kept.push(r);
            }
        }
        *reqs = kept;
        out
    }

    /// Waits until at least one request completes, then removes every
    /// completed one and returns their indices (positions in `reqs` before
    /// the call, ascending) with their results (`MPI_Waitsome`). Returns an
    /// empty vector at once when `reqs` is empty.
    ///
    /// ```
    /// let world = dos::init().unwrap();
    /// let me = world.rank();
    /// let mut bufs = [[0u8; 2]; 3];
    /// dos::scope(|s| {
    ///     let mut reqs = Vec::new();
    ///     for (tag, b) in bufs.iter_mut().enumerate() {
    ///         reqs.push(world.irecv(s, b, me, tag as i32).unwrap());
    ///     }
    ///     world.send(&[1u8, 1], me, 1).unwrap();
    ///     let done = dos::Request::wait_some(&mut reqs);
    ///     assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), [1]);
    ///     assert_eq!(reqs.len(), 2);
    ///     world.send(&[0u8, 0], me, 0).unwrap();
    ///     world.send(&[2u8, 2], me, 2).unwrap();
    ///     dos::Request::wait_all(reqs).unwrap();
    /// });
    /// assert_eq!(bufs, [[0, 0], [1, 1], [2, 2]]);
    /// ```
    pub fn wait_some(reqs: &mut Vec<Request<'a>>) -> Vec<(usize, Result<Status>)> {
        if reqs.is_empty() {
            return Vec::new();
        }
        loop {
            let out = Request::test_some(reqs);
            if !out.is_empty() {
                return out;
            }
            // Block in the engine until any of them completes.
            let eng = reqs
                .iter()
                .find_map(|r| r.inner.as_ref().map(|x| x.0.clone()));
            if let Some(eng) = eng {
                let ids: Vec<ReqId> = reqs
                    .iter()
                    .filter_map(|r| r.inner.as_ref().map(|x| x.1))
                    .collect();
                let r = eng
                    .enter()
                    .wait_until(|e| ids.iter().any(|&i| e.is_done(i)));
                if r.is_err() {
                    // A peer failed: nothing more will complete; give up all.
                    return reqs.drain(..).map(|r| r.wait()).enumerate().collect();
                }
            }
        }
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if let Some((eng, id)) = self.inner.take() {
            let _ = eng.enter().wait(id);
        }
    }
}

/// The statuses of waits that have all been done, in order, or the first
/// error (its status a default one); every wait runs whatever fails.
pub(crate) fn all_statuses(waits: impl Iterator<Item = Result<Status>>) -> Result<Vec<Status>> {
    let mut out = Vec::new();
    let mut first_err = None;
    for w in waits {
        match w {
            Ok(s) => out.push(s),
            Err(e) => {
                out.push(Status::default());
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        None => Ok(out),
        Some(e) => Err(e),
    }
}
