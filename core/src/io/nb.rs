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
use super::file::File;
use crate::engine::am::{Hooks, Service};
use crate::engine::{Engine, ReqId};
use crate::request::{Request, Scope};

/// The `io` service: no active messages yet (ids 48-63 are reserved for
/// it), a `serve` hook completing finished operations and an `abandon` hook.
pub(crate) static SERVICE: Service = Service {
    name: "io",
    am: None,
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
}

impl Engine {
    fn io_table(&self) -> &Table {
        self.service(&SERVICE)
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
type Outcome = Arc<Mutex<Option<dos_fs::Result<usize>>>>;

/// A nonblocking read or write in flight; see [`File::iwrite_at`].
#[must_use = "an I/O request completes only when waited on (dropping it waits)"]
#[derive(Debug)]
pub struct IoRequest<'s> {
    req: Request<'s>,
    outcome: Outcome,
}

impl IoRequest<'_> {
    /// Waits for the operation; returns the bytes read (at most the buffer,
    /// fewer at the end of the file) or written.
    pub fn wait(self) -> Result<usize> {
        self.req.wait()?;
        let r = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match r {
            Some(r) => Ok(r?),
            None => Err(Error::InvalidArgument {
                op: "IoRequest::wait",
                reason: "the operation ended without an outcome".into(),
            }),
        }
    }

    /// Makes progress once and tells whether the operation has finished.
    pub fn test(&self) -> bool {
        self.req.test()
    }
}

/// A buffer handed to an operation's thread.
struct Buf(*mut u8, usize);
// SAFETY: the buffer is borrowed for the scope of the request, which does not
// end before the thread has finished (the request completes after it, or an
// abandoned request joins it), and nothing else touches it meanwhile.
unsafe impl Send for Buf {}

impl File {
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
        Ok(IoRequest {
            req: s.register(&self.comm.eng, id),
            outcome,
        })
    }

    /// Starts writing `data` at `offset` (`MPI_File_iwrite_at`); `data`
    /// stays borrowed until the request completes.
    pub fn iwrite_at<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        offset: u64,
        data: &'s [u8],
    ) -> Result<IoRequest<'s>> {
        self.check_write("iwrite_at")?;
        let buf = Buf(data.as_ptr().cast_mut(), data.len());
        self.start(s, move |c, a, _| {
            let buf = buf;
            // SAFETY: see `Buf`; only read here.
            let data = unsafe { std::slice::from_raw_parts(buf.0, buf.1) };
            c.write_at(a, offset, data).map(|()| data.len())
        })
    }

    /// Starts reading into `buf` from `offset` (`MPI_File_iread_at`); the
    /// request's [`IoRequest::wait`] says how many bytes were in the file.
    pub fn iread_at<'s>(
        &self,
        s: &'s Scope<'s, '_>,
        offset: u64,
        buf: &'s mut [u8],
    ) -> Result<IoRequest<'s>> {
        self.check_read("iread_at")?;
        let b = Buf(buf.as_mut_ptr(), buf.len());
        self.start(s, move |c, a, path| {
            let b = b;
            // SAFETY: see `Buf`.
            let buf = unsafe { std::slice::from_raw_parts_mut(b.0, b.1) };
            let size = c.stat(path)?.size;
            let n = size.saturating_sub(offset).min(buf.len() as u64) as usize;
            if n > 0 {
                c.read_at(path, a, offset, &mut buf[..n])?;
            }
            Ok(n)
        })
    }
}
