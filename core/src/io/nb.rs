//! Nonblocking independent I/O (`MPI_File_iread_at`, `MPI_File_iwrite_at`).
//!
//! The file system's client is blocking, so each operation runs on a
//! thread of its own, which makes the blocking client calls and then queues
//! its completion and wakes the engine (its transports' waker). The `io`
//! service, registered with the engine like the other services
//! (`crate::services`), completes the waiting engine requests from its
//! `serve` hook, on the thread that drives the engine: the caller holds an
//! ordinary request inside a [`crate::scope`], which keeps the buffer
//! borrowed until the I/O has finished (a request whose wait failed is
//! abandoned: the hook then waits for the thread before the buffer can be
//! freed). The I/O's own outcome (bytes, or a file-system error) is kept
//! beside the request and returned by [`IoRequest::wait`].

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dos_fs::client::Client;
use dos_fs::meta::Attr;

use super::error::{Error, Result};
use super::file::{read_worker, File};
use super::lock::Locks;
use crate::engine::am::{Hooks, Ids, Service};
use crate::engine::{Engine, ReqId};
use crate::request::{Request, Scope};

/// The `io` service: the file-lock messages of atomic mode (ids 48-50 of
/// its block 48-63, `lock.rs`), a `serve` hook completing finished
/// operations and an `abandon` hook.
pub(crate) static SERVICE: Service = Service {
    name: "io",
    am: Some((IO_LOCK_IDS, super::lock::on_am)),
    state: || Box::new(Table::default()),
    hooks: Hooks {
        serve: Some(serve),
        abandon: Some(abandon),
        ..Hooks::NONE
    },
};

/// Operations in flight on one engine.
#[derive(Default)]
struct Table {
    /// Finished operations, queued by their threads.
    done: Arc<Mutex<Vec<(ReqId, u32)>>>,
    /// Threads of the operations in flight, by request.
    threads: RefCell<Vec<(ReqId, JoinHandle<()>)>>,
    /// The file locks of atomic mode.
    locks: RefCell<Locks>,
}

/// The ids of the lock service.
const IO_LOCK_IDS: Ids = Ids {
    first: super::lock::LOCK,
    last: super::lock::GRANT,
};

impl Engine {
    fn io_table(&self) -> &Table {
        self.service(&SERVICE)
    }

    /// The file locks of atomic mode on this engine.
    pub(super) fn io_locks(&self) -> &RefCell<Locks> {
        &self.io_table().locks
    }
}

/// Completes the requests of finished operations; returns how many.
fn serve(eng: &Engine) -> usize {
    let t = eng.io_table();
    let done: Vec<(ReqId, u32)> =
        std::mem::take(&mut *t.done.lock().unwrap_or_else(|p| p.into_inner()));
    for &(id, gen) in &done {
        let handle = {
            let mut th = t.threads.borrow_mut();
            th.iter()
                .position(|(r, _)| *r == id)
                .map(|i| th.swap_remove(i).1)
        };
        if let Some(h) = handle {
            // The thread queued its completion as its last act.
            let _ = h.join();
        }
        eng.reply_arrived(id, gen, Ok(()));
    }
    done.len()
}

/// A request given up: wait for its thread, which may still touch the buffer.
fn abandon(eng: &Engine, id: ReqId) {
    let handle = {
        let mut th = eng.io_table().threads.borrow_mut();
        th.iter()
            .position(|(r, _)| *r == id)
            .map(|i| th.swap_remove(i).1)
    };
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// The outcome of one operation, written by its thread.
pub(super) type Outcome = Arc<Mutex<Option<dos_fs::Result<usize>>>>;

/// A nonblocking read or write in flight: independent ([`File::iwrite_at`],
/// [`File::iread_at`]) or collective ([`File::iwrite_at_all`],
/// [`File::iread_at_all`]).
#[must_use = "an I/O request completes only when waited on (dropping it waits)"]
#[derive(Debug)]
pub struct IoRequest<'s> {
    inner: RefCell<Inner<'s>>,
}

/// What an [`IoRequest`] waits for.
#[derive(Debug)]
pub(super) enum Inner<'s> {
    /// An independent operation on a thread of its own; `eng` is the
    /// engine its thread wakes, waited on asleep ([`super::quiet`]).
    Thread {
        req: Request<'s>,
        outcome: Outcome,
        eng: crate::engine::Shared,
    },
    /// A queued collective operation of `file` (see `nbcoll.rs`); a read's
    /// bytes go to `out`.
    Coll {
        file: &'s File,
        id: u64,
        out: Option<&'s mut [u8]>,
    },
    /// Finished when it started (atomic mode), or already collected.
    Ready(Option<Result<usize>>),
}

impl<'s> IoRequest<'s> {
    pub(super) fn from_inner(inner: Inner<'s>) -> IoRequest<'s> {
        IoRequest {
            inner: RefCell::new(inner),
        }
    }

    /// Waits for the operation; returns the bytes read (at most the buffer,
    /// fewer at the end of the file) or written.
    pub fn wait(self) -> Result<usize> {
        self.finish()
    }

    fn finish(&self) -> Result<usize> {
        let inner = std::mem::replace(&mut *self.inner.borrow_mut(), Inner::Ready(None));
        match inner {
            Inner::Thread { req, outcome, eng } => {
                // The thread and the servers it waits on need the cores a
                // spinning wait would take: sleep until the thread wakes
                // the engine, then collect the request.
                super::quiet::wait_request(&eng, &req);
                req.wait()?;
                let r = outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
                match r {
                    Some(r) => Ok(r?),
                    None => Err(Error::InvalidArgument {
                        op: "IoRequest::wait",
                        reason: "the operation ended without an outcome".into(),
                    }),
                }
            }
            Inner::Coll { file, id, out } => {
                let (n, bytes) = file.collect(id)?;
                if let Some(out) = out {
                    out.copy_from_slice(&bytes[..out.len()]);
                }
                Ok(n)
            }
            Inner::Ready(r) => r.unwrap_or_else(|| {
                Err(Error::InvalidArgument {
                    op: "IoRequest::wait",
                    reason: "the request was collected already".into(),
                })
            }),
        }
    }

    /// Makes progress once and tells whether the operation has finished
    /// (for a collective one, advancing the file's operations without
    /// waiting: see [`File::iwrite_at_all`]).
    pub fn test(&self) -> bool {
        let done = match &*self.inner.borrow() {
            Inner::Thread { req, .. } => return req.test(),
            Inner::Ready(_) => return true,
            Inner::Coll { file, id, .. } => file.test_op(*id),
        };
        if done {
            let r = self.finish();
            *self.inner.borrow_mut() = Inner::Ready(Some(r));
        }
        done
    }
}

impl Drop for IoRequest<'_> {
    fn drop(&mut self) {
        // A collective operation is carried out (the other ranks count on
        // it) and its outcome dropped; skipped while unwinding.
        if let Inner::Coll { file, id, .. } = &*self.inner.get_mut() {
            if !std::thread::panicking() {
                file.forget(*id);
            }
        }
    }
}

/// A buffer handed to an operation's thread.
struct Buf(*mut u8, usize);
// SAFETY: the buffer is borrowed for the scope of the request, which does not
// end before the thread has finished (the request completes after it, or an
// abandoned request joins it), and nothing else touches it meanwhile.
unsafe impl Send for Buf {}

impl File {
    /// Whether an independent nonblocking operation is done at once, in
    /// the caller's thread: in atomic mode (the lock belongs to the
    /// caller's thread).
    fn needs_sync(&self) -> bool {
        self.atomicity()
    }

    fn start<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        op: impl FnOnce(&Client, &Attr, &str) -> dos_fs::Result<usize> + Send + 'static,
    ) -> Result<IoRequest<'s>> {
        let eng = self.comm.eng.enter();
        let (id, gen) = eng.await_replies(1);
        let t = eng.io_table();
        let done = t.done.clone();
        let wake = eng.waker();
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let out = outcome.clone();
        let (client, attr, path) = (self.fs.client_arc(), self.attr, self.path.clone());
        let spawned = std::thread::Builder::new()
            .name("dos-io".into())
            .spawn(move || {
                let r = op(&client, &attr, &path);
                *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                done.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id, gen));
                wake();
            });
        match spawned {
            Ok(h) => t.threads.borrow_mut().push((id, h)),
            Err(e) => {
                *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(dos_fs::Error::Io {
                    op: "start an I/O thread",
                    path: self.path.clone().into(),
                    source: e,
                }));
                eng.reply_arrived(id, gen, Ok(()));
            }
        }
        drop(eng);
        Ok(IoRequest::from_inner(Inner::Thread {
            req: s.register(&self.comm.eng, id),
            outcome,
            eng: self.comm.eng.clone(),
        }))
    }

    /// Starts writing `data` at `offset` (`MPI_File_iwrite_at`); `data`
    /// stays borrowed until the request completes. Under a view, `offset`
    /// counts etypes and the pieces are written as by [`File::write_at`].
    /// In atomic mode the write is done at once (the file's lock is the
    /// calling thread's) and the request is complete.
    pub fn iwrite_at<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        offset: u64,
        data: &'s [u8],
    ) -> Result<IoRequest<'s>> {
        self.check_write("iwrite_at")?;
        if self.needs_sync() {
            let r = self.write_at(offset, data).map(|()| data.len());
            return Ok(IoRequest::from_inner(Inner::Ready(Some(r))));
        }
        let ranges = self.to_file("iwrite_at", &[(offset, data.len() as u64)])?;
        let buf = Buf(data.as_ptr().cast_mut(), data.len());
        self.start(s, move |c, a, _| {
            let buf = buf;
            // SAFETY: see `Buf`; only read here.
            let data = unsafe { std::slice::from_raw_parts(buf.0, buf.1) };
            // The view's pieces, one request each (as `write_at`).
            let mut at = 0usize;
            for (o, l) in ranges {
                c.write_at(a, o, &data[at..at + l as usize])?;
                at += l as usize;
            }
            Ok(data.len())
        })
    }

    /// Starts reading into `buf` from `offset` (`MPI_File_iread_at`); the
    /// request's [`IoRequest::wait`] says how many bytes were in the file.
    /// Under a view, as [`File::read_at`] (data sieving). In atomic mode
    /// the read is done at once.
    pub fn iread_at<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        offset: u64,
        buf: &'s mut [u8],
    ) -> Result<IoRequest<'s>> {
        self.check_read("iread_at")?;
        if self.needs_sync() {
            let r = self.read_at(offset, buf);
            return Ok(IoRequest::from_inner(Inner::Ready(Some(r))));
        }
        let ranges = self.to_file("iread_at", &[(offset, buf.len() as u64)])?;
        // Under a view, the pieces as `read_at` reads them (data sieving).
        let sieved = match ranges.len() {
            0 | 1 => None,
            _ => Some(self.sieve_plan(&ranges)?),
        };
        let offset = ranges.first().map_or(0, |r| r.0);
        let b = Buf(buf.as_mut_ptr(), buf.len());
        self.start(s, move |c, a, path| {
            let b = b;
            // SAFETY: see `Buf`.
            let buf = unsafe { std::slice::from_raw_parts_mut(b.0, b.1) };
            let size = c.stat(path)?.size;
            if let Some(w) = &sieved {
                return read_worker(c, path, a, size, w, buf);
            }
            let n = size.saturating_sub(offset).min(buf.len() as u64) as usize;
            if n > 0 {
                c.read_at(path, a, offset, &mut buf[..n])?;
            }
            Ok(n)
        })
    }
}
