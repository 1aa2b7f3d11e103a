//! MPI-IO on the local (or a shared, NFS-like) POSIX file system: ROMIO's
//! `ufs` driver for dos. Names with the prefix `ufs:` or `nfs:`, and plain
//! names in a job without a dosfs, are paths of the file system the process
//! sees, as an MPI library that finds no parallel file system claiming a
//! path opens it (see the module docs of [`super`]).
//!
//! [`Local`] offers what `dos::io::File` offers the rest of `io.rs`: the
//! view (the same [`View`], mapped to file ranges by [`View::map`]), reads
//! and writes with `pread`/`pwrite` per range, size, sync, truncation. The
//! collective forms are the independent ones followed by an agreement on the
//! outcome (every rank returns the same class), with no aggregation: each
//! rank moves its own bytes. Atomic mode is kept as a flag: the ranks'
//! writes go to the file as one `pwrite` per range, which POSIX makes atomic
//! per range on a local file system, not across ranges.

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;

use dos::io::{Mode, View};

use crate::abi::{
    self, ERR_ACCESS, ERR_BAD_FILE, ERR_FILE_EXISTS, ERR_IO, ERR_NO_SPACE, ERR_NO_SUCH_FILE,
};
use crate::error::{err, Error, R};

/// A file of the local file system, open on every rank of a communicator.
pub(super) struct Local {
    f: std::fs::File,
    path: String,
    comm: dos::Comm,
    mode: Mode,
    view: RefCell<(u64, View)>,
    atomic: Cell<bool>,
}

/// The MPI error of a failed system call on `path`.
fn os_err(path: &str, what: &str, e: std::io::Error) -> Error {
    let class = match e.kind() {
        ErrorKind::NotFound => ERR_NO_SUCH_FILE,
        ErrorKind::AlreadyExists => ERR_FILE_EXISTS,
        ErrorKind::PermissionDenied => ERR_ACCESS,
        ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::InvalidInput => {
            ERR_BAD_FILE
        }
        ErrorKind::StorageFull => ERR_NO_SPACE,
        _ => ERR_IO,
    };
    err(class, format!("{what} {path}: {e}"))
}

/// Every rank of `comm` learns whether all succeeded: its own error, or
/// `MPI_ERR_IO` if only another rank failed.
fn agree<T>(comm: &dos::Comm, what: &str, r: R<T>) -> R<T> {
    let mut any = [0u64];
    comm.allreduce(&[u64::from(r.is_err())], &mut any, dos::op::Max)?;
    match r {
        Err(e) => Err(e),
        Ok(_) if any[0] != 0 => Err(err(ERR_IO, format!("{what} failed on another rank"))),
        ok => ok,
    }
}

impl Local {
    /// Opens `path` on every rank of `comm` (collective): rank 0 creates it
    /// if asked (`create`; `exclusive` with `MPI_MODE_EXCL`, which fails if
    /// it exists), then the others open it.
    pub(super) fn open(
        comm: &dos::Comm,
        path: &str,
        mode: Mode,
        create: bool,
        exclusive: bool,
    ) -> R<Local> {
        let comm = comm.dup()?;
        let opts = |create: bool, exclusive: bool| {
            let mut o = OpenOptions::new();
            o.read(mode.can_read()).write(mode.can_write());
            if exclusive {
                o.create_new(true);
            } else if create {
                o.create(true);
            }
            o
        };
        let first = if comm.rank() == 0 {
            opts(create, exclusive)
                .open(path)
                .map_err(|e| os_err(path, "open", e))
                .map(Some)
        } else {
            Ok(None)
        };
        let mut code = [first.as_ref().err().map_or(0, |e| e.class)];
        comm.bcast(&mut code, 0)?;
        if code[0] != 0 {
            return Err(match first {
                Err(e) => e,
                _ => err(code[0], format!("open {path}: failed on rank 0")),
            });
        }
        let f = match first {
            Ok(Some(f)) => Ok(f),
            _ => opts(false, false)
                .open(path)
                .map_err(|e| os_err(path, "open", e)),
        };
        let f = agree(&comm, "open", f)?;
        let is_dir = f.metadata().map(|m| m.is_dir()).unwrap_or(false);
        agree(
            &comm,
            "open",
            if is_dir {
                Err(err(ERR_BAD_FILE, format!("{path} is a directory")))
            } else {
                Ok(())
            },
        )?;
        let whole = View::contiguous(1).map_err(|e| err(ERR_IO, e.to_string()))?;
        Ok(Local {
            f,
            path: path.to_owned(),
            comm,
            mode,
            view: RefCell::new((0, whole)),
            atomic: Cell::new(false),
        })
    }

    /// Deletes `path` (not collective).
    pub(super) fn delete(path: &str) -> R<()> {
        std::fs::remove_file(path).map_err(|e| os_err(path, "delete", e))
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn comm(&self) -> &dos::Comm {
        &self.comm
    }

    /// The file ranges of `len` bytes from `offset` (etypes) of the view.
    fn ranges(&self, offset: u64, len: usize) -> R<Vec<(u64, u64)>> {
        let v = self.view.borrow();
        v.1.map(v.0, offset, len as u64)
            .map_err(|e| err(abi::ERR_ARG, format!("{}: {e}", self.path)))
    }

    pub(super) fn write_at(&self, offset: u64, data: &[u8]) -> R<()> {
        if !self.mode.can_write() {
            return Err(err(ERR_ACCESS, "write to a file opened read-only"));
        }
        let mut at = 0usize;
        for (o, l) in self.ranges(offset, data.len())? {
            let l = l as usize;
            self.f
                .write_all_at(&data[at..at + l], o)
                .map_err(|e| os_err(&self.path, "write", e))?;
            at += l;
        }
        Ok(())
    }

    /// Reads into `buf`; how many bytes lay before the end of the file (the
    /// rest of `buf` is left as it was).
    pub(super) fn read_at(&self, offset: u64, buf: &mut [u8]) -> R<usize> {
        if !self.mode.can_read() {
            return Err(err(ERR_ACCESS, "read of a file opened write-only"));
        }
        let size = self.size()?;
        let (mut at, mut got) = (0usize, 0usize);
        for (o, l) in self.ranges(offset, buf.len())? {
            let l = l as usize;
            let n = size.saturating_sub(o).min(l as u64) as usize;
            if n > 0 {
                self.f
                    .read_exact_at(&mut buf[at..at + n], o)
                    .map_err(|e| os_err(&self.path, "read", e))?;
            }
            got += n;
            at += l;
        }
        Ok(got)
    }

    pub(super) fn write_at_all(&self, offset: u64, data: &[u8]) -> R<()> {
        let r = self.write_at(offset, data);
        agree(&self.comm, "write_at_all", r)
    }

    pub(super) fn read_at_all(&self, offset: u64, buf: &mut [u8]) -> R<usize> {
        let r = self.read_at(offset, buf);
        agree(&self.comm, "read_at_all", r)
    }

    pub(super) fn size(&self) -> R<u64> {
        self.f
            .metadata()
            .map(|m| m.len())
            .map_err(|e| os_err(&self.path, "stat", e))
    }

    /// Truncates or extends the file (collective: rank 0 does it, once
    /// every rank has arrived, so that no rank's earlier access sees it).
    pub(super) fn set_size(&self, size: u64) -> R<()> {
        self.comm.barrier()?;
        let r = if self.comm.rank() == 0 {
            self.f
                .set_len(size)
                .map_err(|e| os_err(&self.path, "truncate", e))
        } else {
            Ok(())
        };
        agree(&self.comm, "set_size", r)
    }

    pub(super) fn sync(&self) -> R<()> {
        let r = if self.mode.can_write() {
            self.f
                .sync_data()
                .map_err(|e| os_err(&self.path, "sync", e))
        } else {
            Ok(())
        };
        agree(&self.comm, "sync", r)
    }

    pub(super) fn view(&self) -> (u64, View) {
        self.view.borrow().clone()
    }

    pub(super) fn set_view(&self, disp: u64, view: View) -> R<()> {
        agree(&self.comm, "set_view", Ok(()))?;
        *self.view.borrow_mut() = (disp, view);
        Ok(())
    }

    pub(super) fn set_atomicity(&self, atomic: bool) -> R<()> {
        agree(&self.comm, "set_atomicity", Ok(()))?;
        self.atomic.set(atomic);
        Ok(())
    }

    pub(super) fn atomicity(&self) -> bool {
        self.atomic.get()
    }

    /// Closes the file (collective: every rank's writes are in the file
    /// when any returns).
    pub(super) fn close(self) -> R<()> {
        self.comm.barrier()?;
        Ok(())
    }
}
