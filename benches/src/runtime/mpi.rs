//! [`Runtime`] over MPI (rsmpi), for side-by-side comparison with dos.
//!
//! MPI's default error handler aborts the job on any failure, so these
//! operations only ever return `Ok`, except for one-sided accesses outside
//! the window, which are refused here before MPI sees them.
//!
//! rsmpi 0.8 has no one-sided communication: windows use the raw bindings
//! ([`::mpi::ffi`]) on the world communicator's handle.

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;

use ::mpi::collective::SystemOperation;
use ::mpi::datatype::Equivalence;
use ::mpi::environment::Universe;
use ::mpi::ffi;
use ::mpi::point_to_point::{Destination, Source};
use ::mpi::raw::AsRaw;
use ::mpi::request::multiple_scope;
use ::mpi::topology::{Communicator, SimpleCommunicator};
use ::mpi::traits::{CommunicatorCollectives, Root};

use super::{pieces, Runtime, WinElem};
use crate::{Error, Result};

/// `MPI_COMM_WORLD`. Dropping it finalizes MPI.
pub struct MpiRuntime {
    // Declared before the universe so that it is dropped before MPI_Finalize.
    world: SimpleCommunicator,
    _universe: Universe,
}

impl std::fmt::Debug for MpiRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiRuntime")
            .field("rank", &self.world.rank())
            .field("size", &self.world.size())
            .finish()
    }
}

fn rank_i32(r: usize) -> i32 {
    // Ranks come from `size()`, which is an `i32` in MPI.
    i32::try_from(r).unwrap_or(i32::MAX)
}

/// An `MPI_Win` made by `MPI_Win_allocate` over the world, and this rank's part.
///
/// Not freed on drop (`MPI_Win_free` is collective): call [`Runtime::win_free`].
pub struct MpiWin<T> {
    win: ffi::MPI_Win,
    /// This rank's part: `count` elements (null when `count` is 0).
    base: *mut T,
    /// Elements in every rank's part.
    count: usize,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for MpiWin<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiWin")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<T: WinElem> MpiWin<T> {
    /// Refuses `len` elements at `disp` unless they lie within a part.
    fn check(&self, op: &'static str, disp: usize, len: usize) -> Result<()> {
        match disp.checked_add(len) {
            Some(end) if end <= self.count => Ok(()),
            _ => Err(Error::Mpi {
                op,
                what: format!(
                    "elements {disp}..{} are outside the window's {}",
                    disp.saturating_add(len),
                    self.count
                ),
            }),
        }
    }
}

/// `MPI_SUCCESS` is 0 in every MPI library.
fn mpi_ok(op: &'static str, rc: c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Mpi {
            op,
            what: format!("error code {rc}"),
        })
    }
}

fn count_i32(op: &'static str, n: usize) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| Error::Mpi {
        op,
        what: format!("{n} elements do not fit an MPI count"),
    })
}

fn disp_aint(op: &'static str, d: usize) -> Result<ffi::MPI_Aint> {
    ffi::MPI_Aint::try_from(d).map_err(|_| Error::Mpi {
        op,
        what: format!("displacement {d} does not fit MPI_Aint"),
    })
}

impl MpiRuntime {
    /// Runs `f` on this rank's part of `win` under an exclusive lock of this
    /// rank (how MPI lets a rank load and store its own window memory).
    fn with_own_part<T: WinElem>(
        &self,
        win: &MpiWin<T>,
        op: &'static str,
        f: impl FnOnce(*mut T),
    ) -> Result<()> {
        let me = self.world.rank();
        // SAFETY: `win` is a live window of this communicator; `me` is a
        // rank of it; MPI_LOCK_EXCLUSIVE and assert 0 are valid arguments.
        let rc = unsafe { ffi::MPI_Win_lock(ffi::MPI_LOCK_EXCLUSIVE as c_int, me, 0, win.win) };
        mpi_ok(op, rc)?;
        f(win.base);
        // SAFETY: as above; this rank holds the lock it releases.
        mpi_ok(op, unsafe { ffi::MPI_Win_unlock(me, win.win) })
    }

    /// `MPI_Init`.
    pub fn init() -> Result<MpiRuntime> {
        let universe = ::mpi::initialize().ok_or(Error::MpiInit)?;
        Ok(MpiRuntime {
            world: universe.world(),
            _universe: universe,
        })
    }
}

impl Runtime for MpiRuntime {
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    #[inline]
    fn send(&self, buf: &[u8], dest: usize, tag: i32) -> Result<()> {
        self.world
            .process_at_rank(rank_i32(dest))
            .send_with_tag(buf, tag);
        Ok(())
    }

    #[inline]
    fn recv(&self, buf: &mut [u8], src: usize, tag: i32) -> Result<()> {
        self.world
            .process_at_rank(rank_i32(src))
            .receive_into_with_tag(buf, tag);
        Ok(())
    }

    fn send_window(&self, buf: &[u8], n: usize, dest: usize, tag: i32) -> Result<()> {
        let p = self.world.process_at_rank(rank_i32(dest));
        multiple_scope(n, |scope, coll| {
            for _ in 0..n {
                coll.add(p.immediate_send_with_tag(scope, buf, tag));
            }
            let mut done = Vec::with_capacity(n);
            coll.wait_all(&mut done);
        });
        Ok(())
    }

    fn recv_window(
        &self,
        bufs: &mut [u8],
        len: usize,
        n: usize,
        src: usize,
        tag: i32,
    ) -> Result<()> {
        let p = self.world.process_at_rank(rank_i32(src));
        multiple_scope(n, |scope, coll| {
            for piece in pieces(bufs, len, n) {
                coll.add(p.immediate_receive_into_with_tag(scope, piece, tag));
            }
            let mut done = Vec::with_capacity(n);
            coll.wait_all(&mut done);
        });
        Ok(())
    }

    fn exchange_window(
        &self,
        sbuf: &[u8],
        rbufs: &mut [u8],
        n: usize,
        peer: usize,
        tag: i32,
    ) -> Result<()> {
        let p = self.world.process_at_rank(rank_i32(peer));
        let len = sbuf.len();
        multiple_scope(2 * n, |scope, coll| {
            for piece in pieces(rbufs, len, n) {
                coll.add(p.immediate_receive_into_with_tag(scope, piece, tag));
            }
            for _ in 0..n {
                coll.add(p.immediate_send_with_tag(scope, sbuf, tag));
            }
            let mut done = Vec::with_capacity(2 * n);
            coll.wait_all(&mut done);
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn bcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.world
            .process_at_rank(rank_i32(root))
            .broadcast_into(buf);
        Ok(())
    }

    fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.world
            .all_reduce_into(send, recv, SystemOperation::sum());
        Ok(())
    }

    fn alltoall(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.world.all_to_all_into(send, recv);
        Ok(())
    }

    type Win<T: WinElem> = MpiWin<T>;

    fn win_allocate<T: WinElem>(&self, count: usize) -> Result<MpiWin<T>> {
        const OP: &str = "MPI_Win_allocate";
        let bytes = count
            .checked_mul(std::mem::size_of::<T>())
            .ok_or(Error::Mpi {
                op: OP,
                what: format!("{count} elements overflow"),
            })?;
        let bytes = disp_aint(OP, bytes)?;
        let unit = count_i32(OP, std::mem::size_of::<T>())?;
        let mut base: *mut T = std::ptr::null_mut();
        let mut win = ffi::MPI_Win(std::ptr::null_mut());
        // SAFETY: `base` and `win` are valid places for the results (the base
        // pointer is written through the `void *` that MPI_Win_allocate
        // takes as `void **`); the communicator is the live world; reading
        // the `RSMPI_INFO_NULL` constant has no side effects.
        let rc = unsafe {
            ffi::MPI_Win_allocate(
                bytes,
                unit,
                ffi::RSMPI_INFO_NULL,
                self.world.as_raw(),
                (&mut base as *mut *mut T).cast::<c_void>(),
                &mut win,
            )
        };
        mpi_ok(OP, rc)?;
        let w = MpiWin {
            win,
            base,
            count,
            _t: PhantomData,
        };
        // MPI does not zero the memory it allocates; nobody starts before it is.
        if count > 0 {
            self.with_own_part(&w, OP, |p| {
                // SAFETY: `p` points to this rank's `count` elements, locked
                // exclusively; all-zero bytes are a valid u8 or u64.
                unsafe { std::ptr::write_bytes(p, 0, count) }
            })?;
        }
        self.world.barrier();
        Ok(w)
    }

    fn win_free<T: WinElem>(&self, mut win: MpiWin<T>) -> Result<()> {
        // SAFETY: `win.win` is a live window, freed once (it is consumed here).
        mpi_ok("MPI_Win_free", unsafe { ffi::MPI_Win_free(&mut win.win) })
    }

    fn epoch_begin<T: WinElem>(&self, win: &MpiWin<T>) -> Result<()> {
        // SAFETY: a live window; assert 0 makes no promises.
        mpi_ok("MPI_Win_lock_all", unsafe {
            ffi::MPI_Win_lock_all(0, win.win)
        })
    }

    fn epoch_end<T: WinElem>(&self, win: &MpiWin<T>) -> Result<()> {
        // SAFETY: a live window, in the epoch `epoch_begin` opened.
        mpi_ok("MPI_Win_unlock_all", unsafe {
            ffi::MPI_Win_unlock_all(win.win)
        })
    }

    #[inline]
    unsafe fn put<T: WinElem>(
        &self,
        win: &MpiWin<T>,
        src: &[T],
        target: usize,
        disp: usize,
    ) -> Result<()> {
        const OP: &str = "MPI_Put";
        win.check(OP, disp, src.len())?;
        let n = count_i32(OP, src.len())?;
        let d = disp_aint(OP, disp)?;
        let dt = T::equivalent_datatype().as_raw();
        // SAFETY: `src` holds `n` elements of datatype `dt`, and the caller
        // keeps it unchanged until the flush that completes this put; the
        // target's part has room for them at `disp` (checked above: every
        // part has `count` elements).
        let rc = unsafe {
            ffi::MPI_Put(
                src.as_ptr().cast::<c_void>(),
                n,
                dt,
                rank_i32(target),
                d,
                n,
                dt,
                win.win,
            )
        };
        mpi_ok(OP, rc)
    }

    #[inline]
    fn get<T: WinElem>(
        &self,
        win: &MpiWin<T>,
        dst: &mut [T],
        target: usize,
        disp: usize,
    ) -> Result<()> {
        const OP: &str = "MPI_Get";
        win.check(OP, disp, dst.len())?;
        let n = count_i32(OP, dst.len())?;
        let d = disp_aint(OP, disp)?;
        let dt = T::equivalent_datatype().as_raw();
        // SAFETY: `dst` has room for `n` elements of `dt` and stays borrowed
        // until the flush below completes the get; the target's part holds
        // them at `disp` (checked above); every bit pattern is a valid u8 or u64.
        let rc = unsafe {
            ffi::MPI_Get(
                dst.as_mut_ptr().cast::<c_void>(),
                n,
                dt,
                rank_i32(target),
                d,
                n,
                dt,
                win.win,
            )
        };
        mpi_ok(OP, rc)?;
        self.flush(win, target)
    }

    #[inline]
    fn flush<T: WinElem>(&self, win: &MpiWin<T>, target: usize) -> Result<()> {
        // SAFETY: a live window, inside an epoch; `target` is a rank of it.
        mpi_ok("MPI_Win_flush", unsafe {
            ffi::MPI_Win_flush(rank_i32(target), win.win)
        })
    }

    #[inline]
    fn fetch_add(&self, win: &MpiWin<u64>, target: usize, disp: usize, value: u64) -> Result<u64> {
        const OP: &str = "MPI_Fetch_and_op";
        win.check(OP, disp, 1)?;
        let d = disp_aint(OP, disp)?;
        let mut old = 0u64;
        // SAFETY: `value` and `old` are one MPI_UINT64_T each and live until
        // the flush below completes the operation; the target's part holds
        // element `disp` (checked above).
        let rc = unsafe {
            ffi::MPI_Fetch_and_op(
                (&value as *const u64).cast::<c_void>(),
                (&mut old as *mut u64).cast::<c_void>(),
                u64::equivalent_datatype().as_raw(),
                rank_i32(target),
                d,
                SystemOperation::sum().as_raw(),
                win.win,
            )
        };
        mpi_ok(OP, rc)?;
        self.flush(win, target)?;
        Ok(old)
    }

    fn win_read_local<T: WinElem>(
        &self,
        win: &MpiWin<T>,
        dst: &mut [T],
        disp: usize,
    ) -> Result<()> {
        const OP: &str = "window read";
        win.check(OP, disp, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        self.with_own_part(win, OP, |p| {
            // SAFETY: `disp..disp + dst.len()` is within this rank's part
            // (checked above), which is locked exclusively; `dst` is separate memory.
            unsafe { std::ptr::copy_nonoverlapping(p.add(disp), dst.as_mut_ptr(), dst.len()) }
        })
    }

    fn win_write_local<T: WinElem>(&self, win: &MpiWin<T>, src: &[T], disp: usize) -> Result<()> {
        const OP: &str = "window write";
        win.check(OP, disp, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.with_own_part(win, OP, |p| {
            // SAFETY: as in `win_read_local`, the other way round.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p.add(disp), src.len()) }
        })
    }

    fn abort(&self, code: i32, msg: &str) -> ! {
        eprintln!("dosbench: {msg}");
        self.world.abort(code)
    }

    fn finalize(self) -> Result<()> {
        drop(self);
        Ok(())
    }
}

/// An `MPI_File` opened by [`super::IoRuntime::file_open`]. Not closed on
/// drop (`MPI_File_close` is collective): call [`super::IoRuntime::file_close`].
pub struct MpiFile(ffi::MPI_File);

impl std::fmt::Debug for MpiFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiFile").finish_non_exhaustive()
    }
}

fn c_path(op: &'static str, path: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path).map_err(|_| Error::Mpi {
        op,
        what: format!("path {path:?} contains a NUL byte"),
    })
}

fn offset(op: &'static str, off: u64) -> Result<ffi::MPI_Offset> {
    ffi::MPI_Offset::try_from(off).map_err(|_| Error::Mpi {
        op,
        what: format!("offset {off} does not fit MPI_Offset"),
    })
}

/// MPI-IO (ROMIO or OMPIO, whichever the library picks) on a local directory.
/// File operations return error codes (`MPI_ERRORS_RETURN` is MPI's default
/// for files) and become [`Error::Mpi`].
impl super::IoRuntime for MpiRuntime {
    type File = MpiFile;
    const DEFAULT_DIR: &'static str = ".";

    fn file_open(&self, path: &str, per_proc: bool, write: bool) -> Result<MpiFile> {
        const OP: &str = "MPI_File_open";
        let name = c_path(OP, path)?;
        let amode = if write {
            (ffi::MPI_MODE_RDWR | ffi::MPI_MODE_CREATE) as c_int
        } else {
            ffi::MPI_MODE_RDONLY as c_int
        };
        let mut fh = std::mem::MaybeUninit::<ffi::MPI_File>::uninit();
        // SAFETY: `name` is a NUL-terminated string that outlives the call;
        // `fh` is a valid place for the handle; the communicators and the
        // info constant are live for the whole job.
        let rc = unsafe {
            let comm = if per_proc {
                ffi::RSMPI_COMM_SELF
            } else {
                self.world.as_raw()
            };
            ffi::MPI_File_open(
                comm,
                name.as_ptr(),
                amode,
                ffi::RSMPI_INFO_NULL,
                fh.as_mut_ptr(),
            )
        };
        mpi_ok(OP, rc)?;
        // SAFETY: MPI_File_open succeeded, so it wrote the handle.
        Ok(MpiFile(unsafe { fh.assume_init() }))
    }

    fn file_write_at(&self, file: &MpiFile, off: u64, data: &[u8], collective: bool) -> Result<()> {
        let op = if collective {
            "MPI_File_write_at_all"
        } else {
            "MPI_File_write_at"
        };
        let n = count_i32(op, data.len())?;
        let off = offset(op, off)?;
        let dt = u8::equivalent_datatype().as_raw();
        // SAFETY: `data` holds `n` bytes and outlives the (blocking) call;
        // the file handle is open; the status is ignored.
        let rc = unsafe {
            let buf = data.as_ptr().cast::<c_void>();
            if collective {
                ffi::MPI_File_write_at_all(file.0, off, buf, n, dt, ffi::RSMPI_STATUS_IGNORE)
            } else {
                ffi::MPI_File_write_at(file.0, off, buf, n, dt, ffi::RSMPI_STATUS_IGNORE)
            }
        };
        mpi_ok(op, rc)
    }

    fn file_read_at(
        &self,
        file: &MpiFile,
        off: u64,
        buf: &mut [u8],
        collective: bool,
    ) -> Result<usize> {
        let op = if collective {
            "MPI_File_read_at_all"
        } else {
            "MPI_File_read_at"
        };
        let n = count_i32(op, buf.len())?;
        let off = offset(op, off)?;
        let dt = u8::equivalent_datatype().as_raw();
        let mut status = std::mem::MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: `buf` has room for `n` bytes and outlives the (blocking)
        // call; the file handle is open; `status` is a valid place.
        let rc = unsafe {
            let p = buf.as_mut_ptr().cast::<c_void>();
            if collective {
                ffi::MPI_File_read_at_all(file.0, off, p, n, dt, status.as_mut_ptr())
            } else {
                ffi::MPI_File_read_at(file.0, off, p, n, dt, status.as_mut_ptr())
            }
        };
        mpi_ok(op, rc)?;
        let mut got: c_int = 0;
        // SAFETY: the read succeeded and filled in `status`.
        let rc = unsafe { ffi::MPI_Get_count(status.as_ptr(), dt, &mut got) };
        mpi_ok("MPI_Get_count", rc)?;
        Ok(usize::try_from(got).unwrap_or(0))
    }

    fn file_sync(&self, file: &MpiFile) -> Result<()> {
        // SAFETY: an open file handle.
        mpi_ok("MPI_File_sync", unsafe { ffi::MPI_File_sync(file.0) })
    }

    fn file_close(&self, mut file: MpiFile) -> Result<()> {
        // SAFETY: an open file handle, closed once (it is consumed here).
        mpi_ok("MPI_File_close", unsafe {
            ffi::MPI_File_close(&mut file.0)
        })
    }

    fn file_delete(&self, path: &str) -> Result<()> {
        const OP: &str = "MPI_File_delete";
        let name = c_path(OP, path)?;
        // SAFETY: a NUL-terminated string that outlives the call; a live info constant.
        mpi_ok(OP, unsafe {
            ffi::MPI_File_delete(name.as_ptr(), ffi::RSMPI_INFO_NULL)
        })
    }
}
