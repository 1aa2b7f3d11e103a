//! Nonblocking collective I/O (`MPI_File_iwrite_at_all`,
//! `MPI_File_iread_at_all`).
//!
//! `iwrite_at_all` and `iread_at_all` return an [`IoRequest`] at once: the
//! call only checks its arguments, maps them through the view and queues the
//! operation on the file (a write copies its data, so that the caller's
//! buffer is free again and the queue owns everything it needs). The
//! operations of a file are carried out in the order they were started, the
//! same on every rank (MPI requires ranks to start collectives in the same
//! order), by the same two-phase engine as the blocking calls, on a private
//! duplicate of the file's communicator made by the first of them: their
//! messages never meet those of other collectives on the file's or the
//! caller's communicator, whatever is started in between.
//!
//! Progress is MPI's weak progress, as with ROMIO's generalized requests:
//! an operation is carried out when a request of the file is waited for or
//! tested (which carries out every operation queued before it too, so ranks
//! may complete their requests in any order), or when the file's view, its
//! atomicity or the file itself is closed. [`IoRequest::test`] therefore
//! returns `true`: it completes the operation, waiting for the other ranks
//! to reach theirs. Do not make a rank's arrival at its wait depend on
//! another rank having completed the operation (a blocking collective on
//! the file's communicator between start and wait is fine; a receive of a
//! message that the peer sends only after its wait is not).

use std::collections::{BTreeMap, VecDeque};

use super::coll::split_mut;
use super::error::Result;
use super::file::File;
use super::nb::{Inner, IoRequest};
use crate::request::Scope;
use crate::Comm;

/// One queued operation.
#[derive(Debug)]
enum Op {
    /// Write `data` (packed) to the file ranges.
    Write {
        ranges: Vec<(u64, u64)>,
        data: Vec<u8>,
    },
    /// Read the file ranges (packed).
    Read { ranges: Vec<(u64, u64)> },
}

/// The file's nonblocking collective operations: queued, and finished but
/// not yet collected by their requests.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// The private duplicate of the file's communicator.
    comm: Option<Comm>,
    /// Sequence number of the next operation.
    next: u64,
    /// Operations not yet carried out, oldest first.
    pending: VecDeque<(u64, Op)>,
    /// Outcomes of finished operations: bytes (written, or in the file) and
    /// for a read the bytes read.
    done: BTreeMap<u64, Result<(usize, Vec<u8>)>>,
}

impl File {
    /// Queues `op`; returns its number.
    fn enqueue(&self, op: Op) -> Result<u64> {
        if self.queue.borrow().comm.is_none() {
            // Collective, like the call: every rank's first one makes it.
            let c = self.comm.dup()?;
            self.queue.borrow_mut().comm = Some(c);
        }
        let mut q = self.queue.borrow_mut();
        let id = q.next;
        q.next += 1;
        q.pending.push_back((id, op));
        Ok(id)
    }

    /// Carries out the queued operations up to operation `id` (all of them
    /// if `None`), in order.
    pub(super) fn run_queue(&self, upto: Option<u64>) {
        loop {
            let (id, op, comm) = {
                let mut q = self.queue.borrow_mut();
                match q.pending.front() {
                    Some(&(id, _)) if upto.is_none_or(|u| id <= u) => {}
                    _ => return,
                }
                let Some((id, op)) = q.pending.pop_front() else {
                    return;
                };
                let Some(comm) = q.comm.clone() else {
                    return;
                };
                (id, op, comm)
            };
            let out = match op {
                Op::Write { ranges, data } => {
                    let list = super::coll::split(std::iter::once(&data[..]), &ranges);
                    self.write_file_list(&comm, &list)
                        .map(|()| (data.len(), Vec::new()))
                }
                Op::Read { ranges } => {
                    let total: u64 = ranges.iter().map(|r| r.1).sum();
                    let mut buf = vec![0u8; total as usize];
                    let mut list = split_mut(std::iter::once(&mut buf[..]), &ranges);
                    self.read_file_list(&comm, &mut list).map(|n| (n, buf))
                }
            };
            self.queue.borrow_mut().done.insert(id, out);
        }
    }

    /// Carries out every queued operation; the first error of those whose
    /// requests were leaked is not reported (their requests are gone).
    pub(super) fn drain(&self) -> Result<()> {
        self.run_queue(None);
        Ok(())
    }

    /// The outcome of operation `id`, carrying it out first if needed.
    pub(super) fn collect(&self, id: u64) -> Result<(usize, Vec<u8>)> {
        self.run_queue(Some(id));
        let r = self.queue.borrow_mut().done.remove(&id);
        r.unwrap_or_else(|| {
            Err(super::error::Error::InvalidArgument {
                op: "IoRequest::wait",
                reason: "the collective operation was not found on its file".into(),
            })
        })
    }

    /// Forgets the outcome of operation `id` (its request was dropped
    /// after finishing, or is being dropped).
    pub(super) fn forget(&self, id: u64) {
        self.run_queue(Some(id));
        self.queue.borrow_mut().done.remove(&id);
    }

    /// Starts writing `data` at `offset` collectively
    /// (`MPI_File_iwrite_at_all`): as [`File::write_at_all`], completed by
    /// the request (see the module `nbcoll` in the manual of
    /// [`crate::io`]: the data is copied, and the operation is carried out
    /// when a request of the file is waited for or tested). Collective:
    /// every rank starts it, in the same order as its other nonblocking
    /// collectives on the file. The request's [`IoRequest::wait`] returns
    /// `data.len()`, or the error every rank gets.
    pub fn iwrite_at_all<'s>(
        &'s self,
        _s: &'s Scope<'s, '_>,
        offset: u64,
        data: &[u8],
    ) -> Result<IoRequest<'s>> {
        const OP: &str = "iwrite_at_all";
        self.check_write(OP)?;
        let ranges = self.to_file(OP, &[(offset, data.len() as u64)])?;
        let id = self.enqueue(Op::Write {
            ranges,
            data: data.to_vec(),
        })?;
        Ok(IoRequest::from_inner(Inner::Coll {
            file: self,
            id,
            out: None,
        }))
    }

    /// Starts reading into `buf` from `offset` collectively
    /// (`MPI_File_iread_at_all`): as [`File::read_at_all`]; `buf` stays
    /// borrowed until the request completes, and receives the bytes then.
    /// The request's [`IoRequest::wait`] returns how many of the bytes lie
    /// before the end of the file.
    pub fn iread_at_all<'s>(
        &'s self,
        _s: &'s Scope<'s, '_>,
        offset: u64,
        buf: &'s mut [u8],
    ) -> Result<IoRequest<'s>> {
        const OP: &str = "iread_at_all";
        self.check_read(OP)?;
        let ranges = self.to_file(OP, &[(offset, buf.len() as u64)])?;
        let id = self.enqueue(Op::Read { ranges })?;
        Ok(IoRequest::from_inner(Inner::Coll {
            file: self,
            id,
            out: Some(buf),
        }))
    }
}
