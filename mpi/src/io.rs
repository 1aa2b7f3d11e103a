//! MPI-IO on dosfs: the `MPI_File_*` functions on `dos::io`.
//!
//! An `MPI_File` is a [`dos::io::File`] (collective open on a duplicate of
//! the communicator, two-phase collective I/O, views, atomic mode) plus
//! what MPI keeps beside it: the access mode, the individual file pointer,
//! the view's datatypes, the info hints, the error handler.
//!
//! ## File names
//!
//! A name is on one of two file systems, as ROMIO picks a driver:
//!
//! * **dosfs**, the job's parallel file system: the one whose address file
//!   `$DOSFS` names (what `dosrun --fs DIR` gives every rank; or a standing
//!   one, `dosfs up`, named with `DOSFS=FILE`), else `./dosfs.addr`. Names
//!   with the prefix `dosfs:` (as ROMIO's `lustre:`; `dosfs:/out` is `/out`)
//!   and, in a job that has a dosfs, plain names: a relative name is taken
//!   from the root of dosfs (`out` is `/out`), so programs that write
//!   `testFile` in their working directory work unchanged under
//!   `dosrun --fs`. A `dosfs:` name in a job without a dosfs is `MPI_ERR_IO`
//!   from `MPI_File_open` and `MPI_File_delete`, with a message saying to
//!   run under `dosrun --fs DIR` or to set `DOSFS`.
//! * **the local (or a shared, NFS-like) POSIX file system**, as ROMIO's
//!   `ufs` driver (`io_local.rs`): names with the prefix `ufs:` or `nfs:`,
//!   and plain names in a job without a dosfs, which is what an MPI library
//!   does with a path that no parallel file system claims (MPICH's
//!   io/zero_count opens its own executable, io/simple_collective mixes
//!   MPI-IO with POSIX `unlink()`). Paths are the process's own, relative to
//!   its working directory. Every rank opens the file itself (rank 0 first,
//!   creating it if asked); the collective reads and writes are each rank's
//!   own `pread`/`pwrite` of its view's ranges followed by an agreement on
//!   the outcome; no aggregation, no data sieving; atomic mode is accepted
//!   and kept as a flag (one `pwrite` per contiguous range).
//!
//! The prefixes of ROMIO's other drivers (`lustre:`, `gpfs:`, `pvfs2:`,
//! ...) are `MPI_ERR_BAD_FILE`. The ranks must agree on whether the job
//! has a dosfs.
//!
//! ## Open modes and errors
//!
//! Exactly one of `MPI_MODE_RDONLY`, `WRONLY`, `RDWR`; `RDONLY` with
//! `CREATE` or `EXCL`, `RDWR` with `SEQUENTIAL`, or an unknown bit is
//! `MPI_ERR_AMODE`; ranks passing different modes get `MPI_ERR_NOT_SAME`.
//! `EXCL` creates the file and fails with `MPI_ERR_FILE_EXISTS` if it
//! exists (it implies `CREATE`); a missing file without `CREATE` is
//! `MPI_ERR_NO_SUCH_FILE`; a directory or an invalid dosfs name
//! `MPI_ERR_BAD_FILE`. `DELETE_ON_CLOSE` deletes the file in
//! `MPI_File_close`; `APPEND` sets the initial file pointer to the end;
//! `UNIQUE_OPEN` and `SEQUENTIAL` are accepted (dosfs needs no hint
//! for either; with `SEQUENTIAL` the program uses the shared file pointer,
//! as the standard requires, which is not checked). A write to a file opened read-only, or a read of one opened
//! write-only, is `MPI_ERR_ACCESS`; a full target `MPI_ERR_NO_SPACE`;
//! another failure of the file system (a server down, a corrupt chunk)
//! `MPI_ERR_IO` with dosfs's message; an invalid `MPI_File` (or
//! `MPI_FILE_NULL`) `MPI_ERR_FILE`. In a collective call, every rank
//! returns the same class (dos::io agrees on errors).
//!
//! Errors go to the file's error handler: `MPI_ERRORS_RETURN` by default,
//! as the standard says for files; `MPI_File_set_errhandler(MPI_FILE_NULL,
//! ...)` changes the default for files opened later and for
//! `MPI_File_open`/`MPI_File_delete` themselves. A handler of
//! `MPI_File_create_errhandler` is called with the file (`MPI_FILE_NULL`
//! for open and delete) and the error code; if it returns, the function
//! returns the code.
//!
//! ## Data and views
//!
//! Buffers may be of any committed datatype: a noncontiguous one is packed
//! into a temporary buffer before a write and unpacked after a read.
//! `MPI_File_set_view` (collective) takes the etype and filetype as
//! flattened by the library's datatypes (`dtype`: `(offset, length)` runs
//! in type order, with the extent) and hands the runs to
//! [`dos::io::View::new`] unchanged: one representation, the flattened
//! list, on both sides. The filetype's runs must not be negative, their
//! offsets must not decrease, and on a file opened for writing they must
//! not overlap (the standard's rules for filetypes; else `MPI_ERR_IO`, the
//! class MPICH's ROMIO gives and its tests expect); on a file opened
//! read-only overlapping runs are taken ([`dos::io::View::with_overlaps`]:
//! the bytes covered twice are read twice), its size a whole number of etypes
//! (else `MPI_ERR_TYPE`); a filetype of no data is allowed (a rank that
//! takes no part: only accesses of 0 bytes, others `MPI_ERR_IO`). The ranks
//! agree on the outcome of `MPI_File_set_view`: a bad view on one rank is
//! an error on all (`MPI_ERR_IO` on the others), none waits; `datarep` `native` (or
//! `internal`, the same here) or `external32`: the data is converted to
//! and from big-endian on its way ([`crate::external`]), for types whose
//! external32 size is their size here (views keep their offsets), others
//! (`MPI_LONG`, `MPI_UNSIGNED_LONG`, `MPI_WCHAR`) being
//! `MPI_ERR_UNSUPPORTED_DATAREP`. Offsets of every call count etypes of the
//! view, as in MPI. The count of a status is the bytes that lay before the
//! end of the file (`MPI_Get_count` divides it by the buffer type's size);
//! the buffer past them is left as it was, in collective reads too.
//!
//! ## Hints
//!
//! The info given to `MPI_File_open` maps onto `dos::io`'s [`Hints`]:
//! `striping_unit` and `striping_factor` (the layout of a file this open
//! creates; ignored for an existing file, whose layout is fixed),
//! `cb_nodes` (that many aggregators, spread over the ranks; default one per
//! node), `cb_buffer_size` (bytes of file per aggregator and round),
//! `romio_cb_write`/`romio_cb_read` `enable` (always aggregate: no direct
//! path), `romio_ds_read`/`romio_ds_write` `disable` (no data sieving).
//! Other keys are kept and returned by `MPI_File_get_info`, with the values
//! in effect of the mapped ones. `MPI_File_set_info` and the info of
//! `MPI_File_set_view` are kept and returned, not applied (dos::io fixes
//! the hints at open).
//!
//! ## What exists
//!
//! `File_open`, `close`, `delete`, `read_at`, `write_at`, `read_at_all`,
//! `write_at_all`, `iread_at`, `iwrite_at`, `iread_at_all`,
//! `iwrite_at_all`, `read`, `write`, `read_all`, `write_all`, `iread`,
//! `iwrite`, `iread_all`, `iwrite_all`, `seek`, `get_position`,
//! `get_byte_offset`, `set_view`, `get_view`, `sync`, `get_size`,
//! `set_size`, `preallocate`, `get_amode`, `get_group`, `set_info`,
//! `get_info`, `set_atomicity`, `get_atomicity`, `set_errhandler`,
//! `get_errhandler`, `call_errhandler`, `get_type_extent`; the shared file
//! pointer: `read_shared`, `write_shared`, `iread_shared`, `iwrite_shared`,
//! `read_ordered`, `write_ordered`, `seek_shared`, `get_position_shared`.
//!
//! ## The shared file pointer
//!
//! One `u64` (in etypes of the view) in a `dos::Window` of the file's
//! communicator, at its rank 0, allocated by `MPI_File_open`. An
//! independent access (`write_shared`) takes its position with one atomic
//! fetch-and-add of its size, then reads or writes there: concurrent ones
//! never overlap and each lands whole, in some order. Between ranks of one
//! node the add is a CPU atomic on the shared mapping; from another node it
//! is a message that rank 0 serves when it calls into dos (MPI's weak
//! progress: a rank 0 computing for long delays the others' shared
//! accesses). The `_ordered` forms gather the ranks' sizes, rank 0 moves the
//! pointer once past all of them, and the ranks access their shares in rank
//! order with the two-phase collective. `seek_shared` and `set_view` wait for
//! every rank (a barrier) before rank 0 moves the pointer, so no access of a
//! rank that has not arrived yet is served after the move.
//!
//! The nonblocking forms do their I/O in the call and return a completed
//! request (the standard allows it; the request is waited for and tested
//! as any other). For the collective ones (`iread_at_all`, ...) this means
//! the call is as synchronizing as the blocking one: a program that lets a
//! rank wait for another between starting a nonblocking collective I/O and
//! completing it, while the other has not started it yet, hangs here.
//! `dos::io`'s own nonblocking collectives (a state machine over
//! nonblocking exchanges) need a scope that lives as long as the request,
//! which the C interface does not have yet.
//!
//! The split collectives (`read_all_begin`/`_end`, `write_all_*`,
//! `read_at_all_*`, `write_at_all_*`, `read_ordered_*`, `write_ordered_*`)
//! do the collective transfer in `_begin` and report it in `_end`; a second
//! `_begin` before the `_end`, or an `_end` without its `_begin`, is
//! `MPI_ERR_OTHER`.
//!
//! The large-count `_c` forms of the reads and writes (`read_at_c`,
//! `write_at_all_c`, `read_c`, `write_all_c`, `read_shared_c`,
//! `write_ordered_c`, `iread_at_c`, ...) take an `MPI_Count`.
//!
//! Not here: `Register_datarep`, the `_c` forms of the nonblocking and
//! split collective calls other than `iread_at_c`/`iwrite_at_c`.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};

use dos::io::{Error as IoError, File, Fs, FsErrorKind, Hints, LayoutSpec, Mode, View};

use crate::abi::{
    self, Handle, Status, ERR_ACCESS, ERR_AMODE, ERR_BAD_FILE, ERR_FILE, ERR_FILE_EXISTS, ERR_INFO,
    ERR_IO, ERR_NOT_SAME, ERR_NO_SPACE, ERR_NO_SUCH_FILE, ERR_UNSUPPORTED_DATAREP,
};
use crate::datatype::{self, Layout};
use crate::dtype::Shared;
use crate::error::{err, Error, R};
use crate::p2p::set_status;
use crate::ptr::{dst, out, read, src, string};
use crate::state;

#[path = "io_local.rs"]
mod local;
use local::Local;

/// Where an open file lives: dosfs (through `dos::io`), or the local POSIX
/// file system ([`Local`]). Both answer the same calls with MPI errors.
enum Backing {
    Dos(Box<File>),
    Local(Local),
}

/// `$call` on either backing; `dos::io`'s errors become MPI errors.
macro_rules! both {
    ($self:ident, $f:ident => $call:expr) => {
        match $self {
            Backing::Dos($f) => $call.map_err(io_err),
            Backing::Local($f) => $call,
        }
    };
}

impl Backing {
    fn path(&self) -> &str {
        match self {
            Backing::Dos(f) => f.path(),
            Backing::Local(f) => f.path(),
        }
    }
    fn comm(&self) -> &dos::Comm {
        match self {
            Backing::Dos(f) => f.comm(),
            Backing::Local(f) => f.comm(),
        }
    }
    fn write_at(&self, o: u64, data: &[u8]) -> R<()> {
        both!(self, f => f.write_at(o, data))
    }
    fn write_at_all(&self, o: u64, data: &[u8]) -> R<()> {
        both!(self, f => f.write_at_all(o, data))
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> R<usize> {
        both!(self, f => f.read_at(o, b))
    }
    fn read_at_all(&self, o: u64, b: &mut [u8]) -> R<usize> {
        both!(self, f => f.read_at_all(o, b))
    }
    fn size(&self) -> R<u64> {
        both!(self, f => f.size())
    }
    fn set_size(&self, s: u64) -> R<()> {
        both!(self, f => f.set_size(s))
    }
    fn sync(&self) -> R<()> {
        both!(self, f => f.sync())
    }
    fn view(&self) -> (u64, View) {
        match self {
            Backing::Dos(f) => f.view(),
            Backing::Local(f) => f.view(),
        }
    }
    fn set_view(&self, d: u64, v: View) -> R<()> {
        both!(self, f => f.set_view(d, v))
    }
    fn set_atomicity(&self, a: bool) -> R<()> {
        both!(self, f => f.set_atomicity(a))
    }
    fn atomicity(&self) -> bool {
        match self {
            Backing::Dos(f) => f.atomicity(),
            Backing::Local(f) => f.atomicity(),
        }
    }
    fn close(self) -> R<()> {
        match self {
            Backing::Dos(f) => f.close().map_err(io_err),
            Backing::Local(f) => f.close(),
        }
    }
}

/// `MPI_FILE_NULL`.
pub(crate) const FILE_NULL: Handle = 0x118;
/// The first handle of a file the program opens.
const FILE_BASE: Handle = 0x7800_0000;

// Open modes (`MPI_MODE_*`, the standard ABI's values).
const MODE_APPEND: c_int = 1;
const MODE_CREATE: c_int = 2;
const MODE_DELETE_ON_CLOSE: c_int = 4;
const MODE_EXCL: c_int = 8;
const MODE_RDONLY: c_int = 16;
const MODE_RDWR: c_int = 32;
const MODE_SEQUENTIAL: c_int = 64;
const MODE_UNIQUE_OPEN: c_int = 128;
const MODE_WRONLY: c_int = 256;
const MODE_ALL: c_int = 511;

/// `MPI_DISPLACEMENT_CURRENT`.
const DISPLACEMENT_CURRENT: i64 = -1;

// `MPI_SEEK_*`.
const SEEK_CUR: c_int = 401;
const SEEK_END: c_int = 402;
const SEEK_SET: c_int = 403;

/// ROMIO's POSIX drivers: a name with one of these prefixes is a local path.
const LOCAL_PREFIXES: &[&str] = &["ufs:", "nfs:"];

/// ROMIO's other driver prefixes: a name with one is neither a dosfs path
/// nor a local one.
const OTHER_PREFIXES: &[&str] = &[
    "lustre:",
    "gpfs:",
    "pvfs2:",
    "panfs:",
    "xfs:",
    "testfs:",
    "daos:",
    "gekkofs:",
    "beegfs:",
    "ime:",
    "quobytefs:",
];

/// An open file and what MPI keeps beside it.
struct Entry {
    file: Backing,
    /// The dosfs of the file; `None` for a local file.
    fs: Option<Fs>,
    amode: c_int,
    errhandler: Handle,
    /// Info keys as given (open, set_info, set_view), in order.
    info: Vec<(String, String)>,
    /// The individual file pointer, in etypes of the view.
    pos: u64,
    disp: u64,
    etype: (Handle, Shared),
    filetype: (Handle, Shared),
    datarep: String,
    /// The shared file pointer (etypes of the view): one `u64` at rank 0
    /// of the file's communicator, moved by atomic fetch-and-add.
    shared: dos::Window<'static, u64>,
    /// The split collective begun and not yet ended: its name and the
    /// bytes it moved (`_begin` does the transfer, `_end` reports it).
    split: Option<(&'static str, u64)>,
    /// The view's filetype holds no data: only accesses of 0 bytes.
    empty_view: bool,
}

impl Entry {
    /// The view's data representation is `external32` (big-endian in the
    /// file, converted by [`crate::external`]).
    fn external32(&self) -> bool {
        self.datarep == "external32"
    }
}

/// The open files, and the error handler of `MPI_FILE_NULL` (the default
/// of new files).
struct Files {
    slots: Vec<Option<Entry>>,
    default_errhandler: Handle,
}

impl Drop for Files {
    fn drop(&mut self) {
        // Files the program never closed, at thread exit (after
        // `MPI_Finalize`): closing would be collective on a finished world.
        for e in self.slots.drain(..).flatten() {
            std::mem::forget(e);
        }
    }
}

thread_local! {
    static FILES: RefCell<Files> = const {
        RefCell::new(Files { slots: Vec::new(), default_errhandler: abi::ERRORS_RETURN })
    };
}

fn slot(h: Handle) -> Option<usize> {
    let off = h.checked_sub(FILE_BASE)?;
    (off % 8 == 0).then_some(off / 8)
}

fn bad_file(h: Handle) -> Error {
    if h == FILE_NULL {
        err(ERR_FILE, "MPI_FILE_NULL is not an open file")
    } else {
        err(ERR_FILE, format!("invalid file handle {h:#x}"))
    }
}

/// Runs `f` on the open file `h`.
fn with<T>(h: Handle, f: impl FnOnce(&mut Entry) -> R<T>) -> R<T> {
    FILES.with(|fs| {
        let mut g = fs
            .try_borrow_mut()
            .map_err(|_| err(abi::ERR_OTHER, "MPI called from inside MPI"))?;
        let e = slot(h)
            .and_then(|i| g.slots.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or_else(|| bad_file(h))?;
        f(e)
    })
}

/// The error handler of file `h` (the default one for `MPI_FILE_NULL` or
/// an invalid handle).
fn errhandler_of(h: Handle) -> Handle {
    FILES.with(|fs| match fs.try_borrow() {
        Ok(g) => slot(h)
            .and_then(|i| g.slots.get(i))
            .and_then(Option::as_ref)
            .map_or(g.default_errhandler, |e| e.errhandler),
        Err(_) => abi::ERRORS_ARE_FATAL,
    })
}

/// Runs a function body for file `fh`: as [`crate::error::finish`], with
/// the file's error handler.
fn finish(func: &str, fh: Handle, body: impl FnOnce() -> R<()>) -> c_int {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(err(abi::ERR_INTERN, format!("internal error: {what}")))
    });
    match r {
        Ok(()) => abi::SUCCESS,
        Err(e) => raise(func, fh, errhandler_of(fh), e),
    }
}

/// Invokes `handler` on `e` for file `fh`: returns the class, or ends the job.
fn raise(func: &str, fh: Handle, handler: Handle, e: Error) -> c_int {
    if handler == abi::ERRORS_RETURN {
        return e.class;
    }
    if let Some((_, f)) = crate::error::user_errhandler(handler) {
        // The program's handler (MPI_File_create_errhandler), called with
        // the file and the code; if it returns, so does the function.
        return crate::error::call_user(f, fh, e.class);
    }
    let name = crate::error::class_string(e.class).unwrap_or("unknown error class");
    let name = name.split(':').next().unwrap_or(name);
    let rank = state::world_rank()
        .map(|r| format!("rank {r}"))
        .unwrap_or_else(|| "a rank".into());
    eprintln!("dos-mpi: {rank}: {func}: {name}: {}", e.msg);
    eprintln!("dos-mpi: {rank}: the file's error handler is fatal: aborting the job");
    state::abort(e.class.max(1), &format!("{func}: {name}"))
}

/// As `mpi_fn!`, errors going to the handler of the file given after `on`.
macro_rules! file_fn {
    (
        $(#[doc = $doc:literal])*
        fn $mpi:ident / $pmpi:ident ( $($a:ident : $t:ty),* $(,)? ) on $fh:expr => $body:block
    ) => {
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// Every pointer argument valid as the MPI standard requires of it.
        #[no_mangle]
        pub unsafe extern "C" fn $pmpi($($a: $t),*) -> c_int {
            // SAFETY: the pointers are the C caller's, valid as the MPI
            // standard requires of them (this function's contract).
            let fh_for_errors: Handle = unsafe { $fh };
            finish(stringify!($mpi), fh_for_errors, || {
                // SAFETY: as above, the C caller's pointers.
                unsafe { $body }
            })
        }

        #[doc = concat!("`", stringify!($mpi), "`: forwards to [`", stringify!($pmpi), "`] (the profiling interface).")]
        ///
        /// # Safety
        /// As for the profiling entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $mpi($($a: $t),*) -> c_int {
            // SAFETY: the same contract as the profiling entry point's.
            unsafe { $pmpi($($a),*) }
        }
    };
}

/// The MPI error of a `dos::io` error.
fn io_err(e: IoError) -> Error {
    let e = match e {
        IoError::Comm(c) => return Error::from(c),
        e => e,
    };
    let class = match &e {
        IoError::Fs { kind, .. } => match kind {
            FsErrorKind::NotFound => ERR_NO_SUCH_FILE,
            FsErrorKind::Exists => ERR_FILE_EXISTS,
            FsErrorKind::IsADirectory | FsErrorKind::NotADirectory | FsErrorKind::InvalidPath => {
                ERR_BAD_FILE
            }
            FsErrorKind::NoSpace => ERR_NO_SPACE,
            FsErrorKind::Auth => ERR_ACCESS,
            _ => ERR_IO,
        },
        IoError::InvalidArgument { .. } => abi::ERR_ARG,
        IoError::Access { .. } => ERR_ACCESS,
        _ => ERR_IO,
    };
    let mut msg = e.to_string();
    if let IoError::Fs {
        kind: FsErrorKind::AddrFile,
        ..
    } = &e
    {
        msg = format!(
            "no dosfs for this job ({msg}): run it under `dosrun --fs DIR`, or set DOSFS to a \
             dosfs address file"
        );
    }
    err(class, msg)
}

/// Which file system a name is on, and its path there.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Dosfs(String),
    Local(String),
}

/// Where a file name lives (see the module docs): `dosfs:` names and, in a
/// job with a dosfs, plain names are dosfs paths; `ufs:` and `nfs:` names,
/// and plain names in a job without one, are local paths.
fn place(name: &str, has_dosfs: bool) -> R<Place> {
    for p in LOCAL_PREFIXES {
        if let Some(rest) = name.strip_prefix(p) {
            if rest.is_empty() {
                return Err(err(ERR_BAD_FILE, "an empty file name"));
            }
            return Ok(Place::Local(rest.to_owned()));
        }
    }
    if has_dosfs || name.starts_with("dosfs:") || OTHER_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        return dosfs_path(name).map(Place::Dosfs);
    }
    if name.is_empty() {
        return Err(err(ERR_BAD_FILE, "an empty file name"));
    }
    Ok(Place::Local(name.to_owned()))
}

/// The dosfs path of a file name (see the module docs).
fn dosfs_path(name: &str) -> R<String> {
    let rest = match name.strip_prefix("dosfs:") {
        Some(r) => r,
        None => {
            if let Some(p) = OTHER_PREFIXES.iter().find(|p| name.starts_with(**p)) {
                return Err(err(
                    ERR_BAD_FILE,
                    format!("{name}: the prefix {p} names another file system; dos-mpi does MPI-IO on dosfs (dosfs:) and on local files (ufs:, nfs:)"),
                ));
            }
            name
        }
    };
    if rest.is_empty() {
        return Err(err(ERR_BAD_FILE, "an empty file name"));
    }
    Ok(if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{}", rest.trim_start_matches("./"))
    })
}

/// A C string argument.
///
/// # Safety
/// Unless null, `p` must be a NUL-terminated string.
unsafe fn text(p: *const c_char, what: &str) -> R<String> {
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null pointer for {what}")));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The pairs of info `h` (`MPI_INFO_NULL`: none).
fn info_pairs(h: Handle) -> R<Vec<(String, String)>> {
    if h == abi::INFO_NULL {
        return Ok(Vec::new());
    }
    state::with(|st| {
        st.infos
            .get(&h)
            .cloned()
            .ok_or_else(|| err(ERR_INFO, format!("invalid info handle {h:#x}")))
    })
}

/// `dos::io` hints from info pairs, for a communicator of `n` ranks.
fn hints_of(pairs: &[(String, String)], n: usize) -> Hints {
    let mut h = Hints::default();
    let mut layout = LayoutSpec::default();
    let mut set_layout = false;
    for (k, v) in pairs {
        let num = v.trim().parse::<i64>().ok();
        match (k.as_str(), num) {
            ("striping_unit", Some(x)) if x > 0 => {
                if let Ok(x) = u32::try_from(x) {
                    layout.stripe_size = x;
                    set_layout = true;
                }
            }
            ("striping_factor", Some(x)) => {
                if x < 0 {
                    layout.stripe_count = LayoutSpec::ALL;
                    set_layout = true;
                } else if let Ok(x) = u32::try_from(x) {
                    layout.stripe_count = x;
                    set_layout = true;
                }
            }
            ("cb_nodes", Some(x)) if x > 0 => {
                let k = (x as usize).min(n);
                // k aggregators spread evenly over the ranks.
                let mut a: Vec<usize> = (0..k).map(|i| i * n / k).collect();
                a.dedup();
                h.aggregators = Some(a);
            }
            ("cb_buffer_size", Some(x)) if x > 0 => h.cb_buffer = x as u64,
            ("romio_cb_write" | "romio_cb_read", _) if v == "enable" => h.direct = false,
            ("romio_ds_read" | "romio_ds_write", _) if v == "disable" => h.sieve_hole = 0,
            _ => {}
        }
    }
    if set_layout {
        h.layout = Some(layout);
    }
    h
}

/// The amode's access as a `dos::io` mode, or `MPI_ERR_AMODE`.
fn mode_of(amode: c_int) -> R<Mode> {
    let bad = |why: &str| Err(err(ERR_AMODE, format!("amode {amode:#x}: {why}")));
    if amode & !MODE_ALL != 0 {
        return bad("unknown bits");
    }
    let access = [MODE_RDONLY, MODE_WRONLY, MODE_RDWR]
        .iter()
        .filter(|&&m| amode & m != 0)
        .count();
    if access != 1 {
        return bad("exactly one of MPI_MODE_RDONLY, MPI_MODE_WRONLY, MPI_MODE_RDWR is needed");
    }
    if amode & MODE_RDONLY != 0 && amode & (MODE_CREATE | MODE_EXCL) != 0 {
        return bad("MPI_MODE_RDONLY with MPI_MODE_CREATE or MPI_MODE_EXCL");
    }
    if amode & MODE_RDWR != 0 && amode & MODE_SEQUENTIAL != 0 {
        return bad("MPI_MODE_RDWR with MPI_MODE_SEQUENTIAL");
    }
    let _ = MODE_UNIQUE_OPEN; // accepted: dosfs needs no hint for it
    let m = if amode & MODE_RDONLY != 0 {
        Mode::READ_ONLY
    } else if amode & MODE_WRONLY != 0 {
        Mode::WRITE_ONLY
    } else {
        Mode::READ_WRITE
    };
    Ok(if amode & MODE_EXCL != 0 {
        m.exclusive()
    } else if amode & MODE_CREATE != 0 {
        m.create()
    } else {
        m
    })
}

file_fn! {
    /// Opens a file of the job's dosfs, or a local one, on every rank of
    /// `comm` (collective).
    fn MPI_File_open / PMPI_File_open(comm: Handle, filename: *const c_char, amode: c_int, info: Handle, fh: *mut Handle) on FILE_NULL => {
        crate::inter::deny(comm)?;
        if fh.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for fh"));
        }
        let c = state::comm(comm)?;
        let name = text(filename, "filename")?;
        let mode = mode_of(amode)?;
        let pairs = info_pairs(info)?;
        let fs = Fs::from_env();
        // Every rank must see the file system (or none) and pass the same amode.
        let mine = [u64::from(fs.is_err()), u64::from(fs.is_ok()), amode as u64, !(amode as u64)];
        let mut all = [0u64; 4];
        c.allreduce(&mine, &mut all, dos::op::Max)?;
        if all[2] != !all[3] {
            return Err(err(ERR_NOT_SAME, "the ranks passed different amodes"));
        }
        let (create, exclusive) = (amode & (MODE_CREATE | MODE_EXCL) != 0, amode & MODE_EXCL != 0);
        let (file, fs) = match place(&name, all[1] != 0)? {
            Place::Local(path) => {
                (Backing::Local(Local::open(&c, &path, mode, create, exclusive)?), None)
            }
            Place::Dosfs(path) => {
                let fs = fs.map_err(io_err)?;
                if all[0] != 0 {
                    return Err(err(ERR_IO, "another rank could not reach the job's dosfs"));
                }
                let hints = hints_of(&pairs, c.size());
                let file = File::open_with(&c, &fs, &path, mode, hints).map_err(io_err)?;
                (Backing::Dos(Box::new(file)), Some(fs))
            }
        };
        let pos = if amode & MODE_APPEND != 0 {
            file.size()?
        } else {
            0
        };
        let shared = file.comm().win_allocate::<u64>(1)?;
        let byte = datatype::ty(BYTE)?;
        let e = Entry {
            file,
            fs,
            amode,
            errhandler: FILES.with(|f| f.borrow().default_errhandler),
            info: pairs,
            pos,
            disp: 0,
            etype: (BYTE, byte.clone()),
            filetype: (BYTE, byte),
            datarep: "native".into(),
            shared,
            split: None,
            empty_view: false,
        };
        let h = FILES.with(|f| {
            let mut g = f.borrow_mut();
            let i = match g.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    g.slots.push(None);
                    g.slots.len() - 1
                }
            };
            g.slots[i] = Some(e);
            FILE_BASE + 8 * i
        });
        out(fh, h, "fh")
    }
}

/// `MPI_BYTE`.
const BYTE: Handle = 0x247;

file_fn! {
    /// Closes a file (collective); with `MPI_MODE_DELETE_ON_CLOSE`, deletes it.
    fn MPI_File_close / PMPI_File_close(fh: *mut Handle) on if fh.is_null() { FILE_NULL } else { *fh } => {
        let h = read(fh, "fh")?;
        let e = FILES.with(|f| {
            let mut g = f.borrow_mut();
            slot(h)
                .and_then(|i| g.slots.get_mut(i))
                .and_then(Option::take)
                .ok_or_else(|| bad_file(h))
        })?;
        let (path, fs, del) = (e.file.path().to_owned(), e.fs.clone(), e.amode & MODE_DELETE_ON_CLOSE != 0);
        let rank = e.file.comm().rank();
        drop(e.shared);
        e.file.close()?;
        if del && rank == 0 {
            match &fs {
                Some(fs) => File::delete(fs, &path).map_err(io_err)?,
                None => Local::delete(&path)?,
            }
        }
        out(fh, FILE_NULL, "fh")
    }
}

file_fn! {
    /// Deletes a file of the job's dosfs, or a local one (not collective).
    fn MPI_File_delete / PMPI_File_delete(filename: *const c_char, info: Handle) on FILE_NULL => {
        let name = text(filename, "filename")?;
        info_pairs(info)?;
        let fs = Fs::from_env();
        match place(&name, fs.is_ok())? {
            Place::Local(path) => Local::delete(&path),
            Place::Dosfs(path) => File::delete(&fs.map_err(io_err)?, &path).map_err(io_err),
        }
    }
}

/// The bytes of `count` elements of `dt` to write, packed if need be.
///
/// # Safety
/// `buf` valid for `count` elements of `dt`.
unsafe fn gather<'a>(
    buf: *const c_void,
    count: i64,
    dt: Handle,
    ext: bool,
) -> R<std::borrow::Cow<'a, [u8]>> {
    if ext {
        // SAFETY: the caller's contract.
        let native = unsafe { gather(buf, count, dt, false) }?;
        let out = crate::external::to_file(&native, elements(count)?, dt)?;
        return Ok(std::borrow::Cow::Owned(out));
    }
    match datatype::layout_n(elements(count)?, dt)? {
        // SAFETY: the caller's contract.
        Layout::Dense(n) => Ok(std::borrow::Cow::Borrowed(unsafe { src(buf, n) }?)),
        Layout::Packed { ty, count, len } => {
            if buf.is_null() && len > 0 {
                return Err(err(abi::ERR_BUFFER, "null buffer"));
            }
            let mut v = vec![0u8; len];
            // SAFETY: the caller's contract (the span was checked by `layout`).
            unsafe { ty.pack(buf.cast(), count, &mut v) };
            Ok(std::borrow::Cow::Owned(v))
        }
    }
}

/// Reads through `read` into `count` elements of `dt` at `buf`; returns
/// the bytes read.
///
/// # Safety
/// `buf` valid for `count` elements of `dt`.
unsafe fn scatter(
    buf: *mut c_void,
    count: i64,
    dt: Handle,
    ext: bool,
    read: impl FnOnce(&mut [u8]) -> R<usize>,
) -> R<usize> {
    let n = elements(count)?;
    if ext {
        let len = match datatype::layout_n(n, dt)? {
            Layout::Dense(len) => len,
            Layout::Packed { len, .. } => len,
        };
        // Checked before anything is read.
        crate::external::same_size(dt)?;
        let mut file = vec![0u8; len];
        let got = read(&mut file)?;
        let native = crate::external::from_file(&file, n, dt)?;
        // SAFETY: the caller's contract.
        return unsafe {
            scatter_native(buf, n, dt, |b| {
                b[..got].copy_from_slice(&native[..got]);
                Ok(got)
            })
        };
    }
    // SAFETY: the caller's contract.
    unsafe { scatter_native(buf, n, dt, read) }
}

/// [`scatter`] of data as it is in memory.
///
/// # Safety
/// `buf` valid for `n` elements of `dt`.
unsafe fn scatter_native(
    buf: *mut c_void,
    n: usize,
    dt: Handle,
    read: impl FnOnce(&mut [u8]) -> R<usize>,
) -> R<usize> {
    match datatype::layout_n(n, dt)? {
        // SAFETY: the caller's contract.
        Layout::Dense(n) => read(unsafe { dst(buf, n) }?),
        Layout::Packed { ty, count, len } => {
            if buf.is_null() && len > 0 {
                return Err(err(abi::ERR_BUFFER, "null buffer"));
            }
            let mut v = vec![0u8; len];
            let n = read(&mut v)?;
            // SAFETY: the caller's contract (the span was checked by `layout`).
            unsafe { ty.unpack(&v[..n], buf.cast(), count) };
            Ok(n)
        }
    }
}

/// A count argument (`int` or `MPI_Count`), or `MPI_ERR_COUNT` if negative.
fn elements(count: i64) -> R<usize> {
    usize::try_from(count).map_err(|_| err(abi::ERR_COUNT, format!("negative count {count}")))
}

/// A file offset argument, or `MPI_ERR_ARG` if negative.
fn offset(o: i64) -> R<u64> {
    u64::try_from(o).map_err(|_| err(abi::ERR_ARG, format!("negative offset {o}")))
}

/// Checks that `bytes` are whole etypes of `e`; returns their number.
fn etypes(e: &Entry, bytes: usize) -> R<u64> {
    if e.empty_view && bytes > 0 {
        return Err(err(
            ERR_IO,
            format!("an access of {bytes} bytes through a view whose filetype holds no data"),
        ));
    }
    let es = e.etype.1.size.max(1) as u64;
    if bytes as u64 % es != 0 {
        return Err(err(
            abi::ERR_TYPE,
            format!("{bytes} bytes are not a whole number of etypes of {es} bytes"),
        ));
    }
    Ok(bytes as u64 / es)
}

/// How a transfer is done.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Independent,
    Collective,
}

/// Where a transfer starts: an explicit offset, or the individual file pointer.
#[derive(Clone, Copy)]
enum At {
    Offset(i64),
    Pointer,
}

/// Writes `count` elements of `dt` at `at`; returns the bytes written.
///
/// # Safety
/// `buf` valid for `count` elements of `dt`.
unsafe fn write(
    fh: Handle,
    at: At,
    buf: *const c_void,
    count: i64,
    dt: Handle,
    kind: Kind,
) -> R<u64> {
    let ext = with(fh, |e| Ok(e.external32()))?;
    // SAFETY: the caller's contract.
    let data = unsafe { gather(buf, count, dt, ext) }?;
    with(fh, |e| {
        let n = etypes(e, data.len())?;
        let o = match at {
            At::Offset(o) => offset(o)?,
            At::Pointer => e.pos,
        };
        match kind {
            Kind::Independent => e.file.write_at(o, &data),
            Kind::Collective => e.file.write_at_all(o, &data),
        }?;
        if let At::Pointer = at {
            e.pos = o + n;
        }
        Ok(data.len() as u64)
    })
}

/// Reads `count` elements of `dt` at `at`; returns the bytes read.
///
/// # Safety
/// `buf` valid for `count` elements of `dt`.
unsafe fn read_into(
    fh: Handle,
    at: At,
    buf: *mut c_void,
    count: i64,
    dt: Handle,
    kind: Kind,
) -> R<u64> {
    with(fh, |e| {
        let o = match at {
            At::Offset(o) => offset(o)?,
            At::Pointer => e.pos,
        };
        let ext = e.external32();
        // SAFETY: the caller's contract.
        let n = unsafe {
            scatter(buf, count, dt, ext, |b| {
                etypes(e, b.len())?;
                match kind {
                    Kind::Independent => e.file.read_at(o, b),
                    Kind::Collective => read_all_keeping_tail(e, o, b),
                }
            })
        }?;
        if let At::Pointer = at {
            // The pointer moves past what was asked for (MPI: by the
            // etypes read; a read at the end reads fewer).
            let es = e.etype.1.size.max(1);
            e.pos = o + (n / es) as u64;
        }
        Ok(n as u64)
    })
}

/// A collective read that leaves the bytes of `b` past the end of the file
/// as they were, as the standard says (`dos::io` zeroes them): when the
/// access may reach the end, the tail is saved and put back.
fn read_all_keeping_tail(e: &Entry, o: u64, b: &mut [u8]) -> R<usize> {
    let size = e.file.size()?;
    let (disp, view) = e.file.view();
    let ranges = view
        .map(disp, o, b.len() as u64)
        .map_err(|x| err(abi::ERR_ARG, x.to_string()))?;
    let before: u64 = ranges
        .iter()
        .map(|&(at, len)| size.saturating_sub(at).min(len))
        .sum();
    let before = before as usize;
    let saved = (before < b.len()).then(|| b[before..].to_vec());
    let n = e.file.read_at_all(o, b)?;
    if let Some(t) = saved {
        let from = n.max(before);
        b[from..].copy_from_slice(&t[from - before..]);
    }
    Ok(n)
}

fn status_of(bytes: u64) -> Status {
    Status::new(abi::ANY_SOURCE, abi::ANY_TAG, abi::SUCCESS, bytes)
}

/// A completed request with the status of a transfer of `bytes`.
///
/// # Safety
/// `request` valid for a write.
unsafe fn done_request(bytes: u64, request: *mut Handle) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe { crate::request::insert_completed(Some(status_of(bytes)), request) }
}

macro_rules! write_fns {
    ($($mpi:ident / $pmpi:ident, $kind:ident, $doc:literal;)*) => {$(
        file_fn! {
            #[doc = $doc]
            fn $mpi / $pmpi(fh: Handle, offset: i64, buf: *const c_void, count: c_int, datatype: Handle, status: *mut Status) on fh => {
                let n = write(fh, At::Offset(offset), buf, i64::from(count), datatype, Kind::$kind)?;
                set_status(status, status_of(n));
                Ok(())
            }
        }
    )*};
}

write_fns! {
    MPI_File_write_at / PMPI_File_write_at, Independent, "Writes at an offset (in etypes of the view).";
    MPI_File_write_at_all / PMPI_File_write_at_all, Collective, "Writes at an offset, collectively (two-phase).";
}

macro_rules! read_fns {
    ($($mpi:ident / $pmpi:ident, $kind:ident, $doc:literal;)*) => {$(
        file_fn! {
            #[doc = $doc]
            fn $mpi / $pmpi(fh: Handle, offset: i64, buf: *mut c_void, count: c_int, datatype: Handle, status: *mut Status) on fh => {
                let n = read_into(fh, At::Offset(offset), buf, i64::from(count), datatype, Kind::$kind)?;
                set_status(status, status_of(n));
                Ok(())
            }
        }
    )*};
}

read_fns! {
    MPI_File_read_at / PMPI_File_read_at, Independent, "Reads at an offset (in etypes of the view).";
    MPI_File_read_at_all / PMPI_File_read_at_all, Collective, "Reads at an offset, collectively (two-phase).";
}

macro_rules! ptr_fns {
    ($($mpi:ident / $pmpi:ident, $kind:ident, $w:ident, $doc:literal;)*) => {$(
        file_fn! {
            #[doc = $doc]
            fn $mpi / $pmpi(fh: Handle, buf: ptr_ty!($w), count: c_int, datatype: Handle, status: *mut Status) on fh => {
                let n = do_io!($w, fh, At::Pointer, buf, i64::from(count), datatype, Kind::$kind)?;
                set_status(status, status_of(n));
                Ok(())
            }
        }
    )*};
}

macro_rules! ptr_ty {
    (w) => { *const c_void };
    (r) => { *mut c_void };
}

macro_rules! do_io {
    (w, $($a:expr),*) => { write($($a),*) };
    (r, $($a:expr),*) => { read_into($($a),*) };
}

ptr_fns! {
    MPI_File_write / PMPI_File_write, Independent, w, "Writes at the individual file pointer and moves it.";
    MPI_File_write_all / PMPI_File_write_all, Collective, w, "Writes at the individual file pointer, collectively.";
    MPI_File_read / PMPI_File_read, Independent, r, "Reads at the individual file pointer and moves it.";
    MPI_File_read_all / PMPI_File_read_all, Collective, r, "Reads at the individual file pointer, collectively.";
}

macro_rules! nb_at_fns {
    ($($mpi:ident / $pmpi:ident, $kind:ident, $w:ident, $doc:literal;)*) => {$(
        file_fn! {
            #[doc = $doc]
            fn $mpi / $pmpi(fh: Handle, offset: i64, buf: ptr_ty!($w), count: c_int, datatype: Handle, request: *mut Handle) on fh => {
                if request.is_null() {
                    return Err(err(abi::ERR_ARG, "null pointer for request"));
                }
                let n = do_io!($w, fh, At::Offset(offset), buf, i64::from(count), datatype, Kind::$kind)?;
                done_request(n, request)
            }
        }
    )*};
}

nb_at_fns! {
    MPI_File_iwrite_at / PMPI_File_iwrite_at, Independent, w, "Nonblocking write at an offset (done in the call; the request is complete).";
    MPI_File_iwrite_at_all / PMPI_File_iwrite_at_all, Collective, w, "Nonblocking collective write at an offset (done in the call).";
    MPI_File_iread_at / PMPI_File_iread_at, Independent, r, "Nonblocking read at an offset (done in the call; the request is complete).";
    MPI_File_iread_at_all / PMPI_File_iread_at_all, Collective, r, "Nonblocking collective read at an offset (done in the call).";
}

macro_rules! nb_ptr_fns {
    ($($mpi:ident / $pmpi:ident, $kind:ident, $w:ident, $doc:literal;)*) => {$(
        file_fn! {
            #[doc = $doc]
            fn $mpi / $pmpi(fh: Handle, buf: ptr_ty!($w), count: c_int, datatype: Handle, request: *mut Handle) on fh => {
                if request.is_null() {
                    return Err(err(abi::ERR_ARG, "null pointer for request"));
                }
                let n = do_io!($w, fh, At::Pointer, buf, i64::from(count), datatype, Kind::$kind)?;
                done_request(n, request)
            }
        }
    )*};
}

nb_ptr_fns! {
    MPI_File_iwrite / PMPI_File_iwrite, Independent, w, "Nonblocking write at the individual file pointer (done in the call).";
    MPI_File_iwrite_all / PMPI_File_iwrite_all, Collective, w, "Nonblocking collective write at the individual file pointer (done in the call).";
    MPI_File_iread / PMPI_File_iread, Independent, r, "Nonblocking read at the individual file pointer (done in the call).";
    MPI_File_iread_all / PMPI_File_iread_all, Collective, r, "Nonblocking collective read at the individual file pointer (done in the call).";
}

/// The `dos::io` view of an etype and a filetype; `None` for a filetype
/// of no data (legal: a rank that takes no part of the file).
///
/// A filetype whose displacements are negative, decreasing or (unless
/// `rdonly`: a file opened read-only, where MPI allows them) overlapping is
/// `MPI_ERR_IO`, as MPICH's ROMIO answers (the standard names no class);
/// one that is not whole etypes `MPI_ERR_TYPE`.
fn view_of(etype: &Shared, filetype: &Shared, rdonly: bool) -> R<Option<View>> {
    let es = etype.size as u64;
    if es == 0 {
        return Err(err(abi::ERR_TYPE, "an etype of 0 bytes"));
    }
    if filetype.size == 0 {
        return Ok(None);
    }
    if !filetype.flat {
        return Err(err(abi::ERR_COUNT, "a filetype of more than 2^24 pieces"));
    }
    let mut segs = Vec::with_capacity(filetype.segs.len());
    for &(o, l) in &filetype.segs {
        let o = u64::try_from(o).map_err(|_| {
            err(
                ERR_IO,
                format!("the filetype has a negative displacement {o}"),
            )
        })?;
        segs.push((o, l as u64));
    }
    let extent = u64::try_from(filetype.extent())
        .map_err(|_| err(ERR_IO, "the filetype has a negative extent"))?;
    let view = if rdonly {
        View::with_overlaps(es, &segs, extent)
    } else {
        View::new(es, &segs, extent)
    };
    view.map(Some).map_err(|e| {
        use dos::io::ViewError as V;
        let class = match e {
            V::ZeroEtype | V::Empty | V::NotEtypes { .. } => abi::ERR_TYPE,
            V::Unsorted { .. } | V::Extent { .. } => ERR_IO,
            _ => abi::ERR_ARG,
        };
        err(class, format!("the view: {e}"))
    })
}

/// A committed datatype's compiled form.
fn committed(h: Handle, what: &str) -> R<Shared> {
    // Communication-style check: a derived type must be committed.
    datatype::layout_n(0, h).map_err(|e| err(e.class, format!("{what}: {}", e.msg)))?;
    datatype::ty(h)
}

file_fn! {
    /// Sets this rank's view (collective; resets the individual file pointer).
    fn MPI_File_set_view / PMPI_File_set_view(fh: Handle, disp: i64, etype: Handle, filetype: Handle, datarep: *const c_char, info: Handle) on fh => {
        let current = disp == DISPLACEMENT_CURRENT;
        // Overlapping filetypes are allowed on a file opened read-only.
        let rdonly = with(fh, |e| Ok(e.amode & MODE_RDONLY != 0))?;
        let local = view_args(disp, etype, filetype, datarep, info, rdonly);
        with(fh, |e| {
            // Every rank's own checks first, agreed (also the barrier
            // before the shared pointer moves): no rank is left waiting in
            // a collective that another one never enters.
            let mut all = [0u64];
            e.file.comm().allreduce(&[u64::from(local.is_err())], &mut all, dos::op::Max)?;
            let (d, rep, et, ft, view, pairs) = match local {
                Err(x) => return Err(x),
                Ok(_) if all[0] != 0 => {
                    return Err(err(ERR_IO, "MPI_File_set_view: the view is wrong on another rank"))
                }
                Ok(v) => v,
            };
            let empty = view.is_none();
            let view = view.unwrap_or_default();
            // The shared pointer goes back to 0 too, once every rank has
            // arrived (set_view's own agreement is the barrier after it).
            e.file.comm().barrier()?;
            let d = if current {
                if e.amode & MODE_SEQUENTIAL == 0 {
                    return Err(err(abi::ERR_ARG, "MPI_DISPLACEMENT_CURRENT needs a file opened with MPI_MODE_SEQUENTIAL"));
                }
                // The byte where the shared pointer is, through the old view.
                let at = shared_take(e, 0)?;
                let (d0, v) = e.file.view();
                let byte = v
                    .map(d0, at, 1)
                    .map_err(|x| err(abi::ERR_ARG, x.to_string()))?
                    .first()
                    .map_or(d0, |r| r.0);
                // Every rank has read it before rank 0 resets it.
                e.file.comm().barrier()?;
                byte
            } else {
                d
            };
            if e.file.comm().rank() == 0 {
                e.shared.swap(0, 0, 0)?;
            }
            e.file.set_view(d, view)?;
            e.disp = d;
            e.etype = (etype, et);
            e.filetype = (filetype, ft);
            e.datarep = rep;
            e.empty_view = empty;
            e.pos = 0;
            merge(&mut e.info, pairs);
            Ok(())
        })
    }
}

/// The checked arguments of `MPI_File_set_view`: displacement (0 for
/// `MPI_DISPLACEMENT_CURRENT`), data representation, etype, filetype, its
/// view, the info pairs.
///
/// # Safety
/// `datarep` a C string (or null).
#[allow(clippy::type_complexity)]
unsafe fn view_args(
    disp: i64,
    etype: Handle,
    filetype: Handle,
    datarep: *const c_char,
    info: Handle,
    rdonly: bool,
) -> R<(
    u64,
    String,
    Shared,
    Shared,
    Option<View>,
    Vec<(String, String)>,
)> {
    // SAFETY: the caller's contract.
    let rep = unsafe { text(datarep, "datarep") }?;
    if rep != "native" && rep != "internal" && rep != "external32" {
        return Err(err(
            ERR_UNSUPPORTED_DATAREP,
            format!(
                "data representation {rep:?}: only \"native\", \"internal\" (the same here) and \"external32\""
            ),
        ));
    }
    let d = if disp == DISPLACEMENT_CURRENT {
        0
    } else {
        u64::try_from(disp).map_err(|_| {
            err(
                abi::ERR_ARG,
                format!("displacement {disp}: must be >= 0 (or MPI_DISPLACEMENT_CURRENT)"),
            )
        })?
    };
    let et = committed(etype, "etype")?;
    let ft = committed(filetype, "filetype")?;
    if rep == "external32" {
        crate::external::same_size(etype)?;
        crate::external::same_size(filetype)?;
    }
    let view = view_of(&et, &ft, rdonly)?;
    Ok((d, rep, et, ft, view, info_pairs(info)?))
}

/// Sets the pairs of `new` in `info` (a key set again takes the new value).
fn merge(info: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    for (k, v) in new {
        match info.iter_mut().find(|(x, _)| *x == k) {
            Some(p) => p.1 = v,
            None => info.push((k, v)),
        }
    }
}

/// A handle for `t` to give back to the program: the predefined one
/// itself, a new committed copy of a derived one (the program frees it).
fn handle_out(h: Handle, t: &Shared) -> R<Handle> {
    if !datatype::in_table(h) {
        return Ok(h);
    }
    let n = datatype::insert((**t).clone());
    datatype::commit(n)?;
    Ok(n)
}

file_fn! {
    /// This rank's view: displacement, etype, filetype, data representation.
    fn MPI_File_get_view / PMPI_File_get_view(fh: Handle, disp: *mut i64, etype: *mut Handle, filetype: *mut Handle, datarep: *mut c_char) on fh => {
        let (d, et, ft, rep) = with(fh, |e| Ok((e.disp, e.etype.clone(), e.filetype.clone(), e.datarep.clone())))?;
        out(disp, d as i64, "disp")?;
        out(etype, handle_out(et.0, &et.1)?, "etype")?;
        out(filetype, handle_out(ft.0, &ft.1)?, "filetype")?;
        let mut len: c_int = 0;
        string(datarep, 128, &mut len, &rep)
    }
}

/// The number of etypes of the view that lie before byte `size` of the file.
fn view_end(e: &Entry, size: u64) -> u64 {
    let (disp, v) = e.file.view();
    let Some(rel) = size.checked_sub(disp) else {
        return 0;
    };
    let tiles = rel / v.extent();
    let rem = rel % v.extent();
    let part: u64 = v
        .segments()
        .iter()
        .map(|&(o, l)| rem.saturating_sub(o).min(l))
        .sum();
    (tiles * v.size() + part) / v.etype()
}

file_fn! {
    /// Moves the individual file pointer (`MPI_SEEK_SET`, `CUR`, `END`; in etypes).
    fn MPI_File_seek / PMPI_File_seek(fh: Handle, offset: i64, whence: c_int) on fh => {
        with(fh, |e| {
            let base = match whence {
                SEEK_SET => 0i128,
                SEEK_CUR => e.pos as i128,
                SEEK_END => {
                    let size = e.file.size()?;
                    view_end(e, size) as i128
                }
                _ => return Err(err(abi::ERR_ARG, format!("whence {whence}: not MPI_SEEK_SET, MPI_SEEK_CUR or MPI_SEEK_END"))),
            };
            let p = base + offset as i128;
            e.pos = u64::try_from(p).map_err(|_| err(abi::ERR_ARG, format!("seek to {p}: before the start of the view")))?;
            Ok(())
        })
    }
}

file_fn! {
    /// The individual file pointer, in etypes of the view.
    fn MPI_File_get_position / PMPI_File_get_position(fh: Handle, offset: *mut i64) on fh => {
        let p = with(fh, |e| Ok(e.pos))?;
        out(offset, p as i64, "offset")
    }
}

file_fn! {
    /// The byte of the file where `offset` (etypes of the view) lies.
    fn MPI_File_get_byte_offset / PMPI_File_get_byte_offset(fh: Handle, offset: i64, disp: *mut i64) on fh => {
        let o = self::offset(offset)?;
        let b = with(fh, |e| {
            let (d, v) = e.file.view();
            let r = v.map(d, o, 1).map_err(|x| err(abi::ERR_ARG, x.to_string()))?;
            Ok(r.first().map_or(d, |x| x.0))
        })?;
        out(disp, b as i64, "disp")
    }
}

file_fn! {
    /// Makes every write that returned durable and visible (collective).
    fn MPI_File_sync / PMPI_File_sync(fh: Handle) on fh => {
        with(fh, |e| e.file.sync())
    }
}

file_fn! {
    /// The file's size in bytes.
    fn MPI_File_get_size / PMPI_File_get_size(fh: Handle, size: *mut i64) on fh => {
        let s = with(fh, |e| e.file.size())?;
        out(size, s as i64, "size")
    }
}

file_fn! {
    /// Cuts or extends the file (collective).
    fn MPI_File_set_size / PMPI_File_set_size(fh: Handle, size: i64) on fh => {
        let s = u64::try_from(size).map_err(|_| err(abi::ERR_ARG, format!("negative size {size}")))?;
        with(fh, |e| e.file.set_size(s))
    }
}

file_fn! {
    /// Makes the file at least `size` bytes long (collective; never cuts it).
    fn MPI_File_preallocate / PMPI_File_preallocate(fh: Handle, size: i64) on fh => {
        let s = u64::try_from(size).map_err(|_| err(abi::ERR_ARG, format!("negative size {size}")))?;
        with(fh, |e| {
            let now = e.file.size()?;
            // Every rank must take the same branch: agree on the size.
            let mut all = [0u64];
            e.file.comm().allreduce(&[now], &mut all, dos::op::Max).map_err(Error::from)?;
            if s > all[0] {
                e.file.set_size(s)?;
            } else if e.amode & MODE_RDONLY != 0 {
                return Err(err(ERR_ACCESS, "preallocate on a file opened read-only"));
            }
            Ok(())
        })
    }
}

file_fn! {
    /// The amode the file was opened with.
    fn MPI_File_get_amode / PMPI_File_get_amode(fh: Handle, amode: *mut c_int) on fh => {
        let a = with(fh, |e| Ok(e.amode))?;
        out(amode, a, "amode")
    }
}

file_fn! {
    /// The group of the communicator the file was opened on.
    fn MPI_File_get_group / PMPI_File_get_group(fh: Handle, group: *mut Handle) on fh => {
        if group.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for group"));
        }
        let g = with(fh, |e| Ok(e.file.comm().group()))?;
        let h = state::with(|st| Ok(st.groups.insert(g)))?;
        out(group, h, "group")
    }
}

file_fn! {
    /// Sets hints (kept and returned by `MPI_File_get_info`; collective).
    fn MPI_File_set_info / PMPI_File_set_info(fh: Handle, info: Handle) on fh => {
        let pairs = info_pairs(info)?;
        with(fh, |e| {
            merge(&mut e.info, pairs);
            Ok(())
        })
    }
}

file_fn! {
    /// The hints in effect: the keys given, with the values dos::io uses.
    fn MPI_File_get_info / PMPI_File_get_info(fh: Handle, info_used: *mut Handle) on fh => {
        if info_used.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for info_used"));
        }
        let pairs = with(fh, |e| {
            let mut p = e.info.clone();
            let mut used = vec![("filename".into(), e.file.path().to_owned())];
            if let Backing::Dos(f) = &e.file {
                let l = f.layout();
                used.splice(
                    0..0,
                    [
                        ("striping_unit".into(), l.stripe_size.to_string()),
                        ("striping_factor".into(), l.stripe_count.to_string()),
                        ("cb_nodes".into(), f.aggregators().len().to_string()),
                    ],
                );
            }
            merge(&mut p, used);
            Ok(p)
        })?;
        let h = state::with(|st| Ok(st.infos.insert(pairs)))?;
        out(info_used, h, "info_used")
    }
}

file_fn! {
    /// Sets atomic mode (collective, the same flag on every rank).
    fn MPI_File_set_atomicity / PMPI_File_set_atomicity(fh: Handle, flag: c_int) on fh => {
        with(fh, |e| e.file.set_atomicity(flag != 0))
    }
}

file_fn! {
    /// Whether the file is in atomic mode.
    fn MPI_File_get_atomicity / PMPI_File_get_atomicity(fh: Handle, flag: *mut c_int) on fh => {
        let a = with(fh, |e| Ok(e.file.atomicity()))?;
        out(flag, c_int::from(a), "flag")
    }
}

fn check_errhandler(e: Handle) -> R<()> {
    crate::error::check_handler(e, crate::error::HandlerKind::File)
}

mpi_fn! {
    /// An error handler for files calling `function(&file, &code)`.
    fn MPI_File_create_errhandler / PMPI_File_create_errhandler(function: Option<crate::error::HandlerFn>, errhandler: *mut Handle) on abi::COMM_WORLD => {
        if errhandler.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for errhandler"));
        }
        let f = function.map_or(0, |f| f as usize);
        let h = crate::error::create_errhandler(crate::error::HandlerKind::File, f)?;
        out(errhandler, h, "errhandler")
    }
}

file_fn! {
    /// Sets a file's error handler; on `MPI_FILE_NULL`, the default of files.
    fn MPI_File_set_errhandler / PMPI_File_set_errhandler(fh: Handle, errhandler: Handle) on fh => {
        check_errhandler(errhandler)?;
        if fh == FILE_NULL {
            FILES.with(|f| f.borrow_mut().default_errhandler = errhandler);
            return Ok(());
        }
        with(fh, |e| {
            e.errhandler = errhandler;
            Ok(())
        })
    }
}

file_fn! {
    /// A file's error handler (on `MPI_FILE_NULL`, the default of files).
    fn MPI_File_get_errhandler / PMPI_File_get_errhandler(fh: Handle, errhandler: *mut Handle) on fh => {
        let h = if fh == FILE_NULL {
            FILES.with(|f| f.borrow().default_errhandler)
        } else {
            with(fh, |e| Ok(e.errhandler))?
        };
        out(errhandler, h, "errhandler")
    }
}

file_fn! {
    /// Invokes the file's error handler with `errorcode`.
    fn MPI_File_call_errhandler / PMPI_File_call_errhandler(fh: Handle, errorcode: c_int) on fh => {
        if fh != FILE_NULL {
            with(fh, |_| Ok(()))?;
        }
        Err(err(errorcode, "MPI_File_call_errhandler"))
    }
}

file_fn! {
    /// The extent of `datatype` in the file (its extent: `native` data).
    fn MPI_File_get_type_extent / PMPI_File_get_type_extent(fh: Handle, datatype: Handle, extent: *mut isize) on fh => {
        with(fh, |_| Ok(()))?;
        let t = datatype::ty(datatype)?;
        out(extent, t.extent(), "extent")
    }
}

/// The position of the shared file pointer: where an access of `n`
/// etypes starts, moving the pointer past it (`n` = 0: just reads it).
fn shared_take(e: &Entry, n: u64) -> R<u64> {
    Ok(e.shared.fetch_add(0, 0, n)?)
}

/// An independent transfer at the shared file pointer; the bytes moved.
///
/// # Safety
/// `buf` valid for `count` elements of `dt` (written when `!write`).
unsafe fn shared_io(fh: Handle, write: bool, buf: *mut c_void, count: i64, dt: Handle) -> R<u64> {
    let ext = with(fh, |e| Ok(e.external32()))?;
    if write {
        // SAFETY: the caller's contract.
        let data = unsafe { gather(buf, count, dt, ext) }?;
        with(fh, |e| {
            let n = etypes(e, data.len())?;
            if e.amode & MODE_RDONLY != 0 {
                return Err(err(ERR_ACCESS, "a write to a file opened read-only"));
            }
            let at = shared_take(e, n)?;
            e.file.write_at(at, &data)?;
            Ok(data.len() as u64)
        })
    } else {
        with(fh, |e| {
            // SAFETY: the caller's contract.
            let n = unsafe {
                scatter(buf, count, dt, ext, |b| {
                    let n = etypes(e, b.len())?;
                    if e.amode & MODE_WRONLY != 0 {
                        return Err(err(ERR_ACCESS, "a read of a file opened write-only"));
                    }
                    let at = shared_take(e, n)?;
                    e.file.read_at(at, b)
                })
            }?;
            Ok(n as u64)
        })
    }
}

/// A collective transfer in rank order at the shared file pointer
/// (`_ordered`): the ranks' sizes are gathered, rank 0 moves the pointer
/// past all of them, and each rank accesses its share collectively.
///
/// # Safety
/// As [`shared_io`].
unsafe fn ordered_io(fh: Handle, write: bool, buf: *mut c_void, count: i64, dt: Handle) -> R<u64> {
    let one = |e: &Entry, len: usize| -> R<u64> {
        let n = etypes(e, len)?;
        let c = e.file.comm();
        let mut all = vec![0u64; c.size()];
        c.allgather(&[n], &mut all)?;
        let before: u64 = all[..c.rank()].iter().sum();
        let total: u64 = all.iter().sum();
        let mut base = [0u64];
        if c.rank() == 0 {
            base[0] = shared_take(e, total)?;
        }
        c.bcast(&mut base, 0)?;
        Ok(base[0] + before)
    };
    let ext = with(fh, |e| Ok(e.external32()))?;
    if write {
        // SAFETY: the caller's contract.
        let data = unsafe { gather(buf, count, dt, ext) }?;
        with(fh, |e| {
            let at = one(e, data.len())?;
            e.file.write_at_all(at, &data)?;
            Ok(data.len() as u64)
        })
    } else {
        with(fh, |e| {
            // SAFETY: the caller's contract.
            let n = unsafe {
                scatter(buf, count, dt, ext, |b| {
                    let at = one(e, b.len())?;
                    e.file.read_at_all(at, b)
                })
            }?;
            Ok(n as u64)
        })
    }
}

macro_rules! shared_fns {
    ($($mpi:ident / $pmpi:ident, $f:ident, $w:ident, $doc:literal;)*) => {$(
        file_fn! {
            #[doc = $doc]
            fn $mpi / $pmpi(fh: Handle, buf: ptr_ty!($w), count: c_int, datatype: Handle, status: *mut Status) on fh => {
                let n = $f(fh, is_write!($w), buf as *mut c_void, i64::from(count), datatype)?;
                set_status(status, status_of(n));
                Ok(())
            }
        }
    )*};
}

macro_rules! is_write {
    (w) => {
        true
    };
    (r) => {
        false
    };
}

shared_fns! {
    MPI_File_write_shared / PMPI_File_write_shared, shared_io, w, "Writes at the shared file pointer (independent; the pointer moves atomically).";
    MPI_File_read_shared / PMPI_File_read_shared, shared_io, r, "Reads at the shared file pointer (independent; the pointer moves atomically).";
    MPI_File_write_ordered / PMPI_File_write_ordered, ordered_io, w, "Writes at the shared file pointer in rank order (collective).";
    MPI_File_read_ordered / PMPI_File_read_ordered, ordered_io, r, "Reads at the shared file pointer in rank order (collective).";
}

macro_rules! nb_shared_fns {
    ($($mpi:ident / $pmpi:ident, $w:ident, $doc:literal;)*) => {$(
        file_fn! {
            #[doc = $doc]
            fn $mpi / $pmpi(fh: Handle, buf: ptr_ty!($w), count: c_int, datatype: Handle, request: *mut Handle) on fh => {
                if request.is_null() {
                    return Err(err(abi::ERR_ARG, "null pointer for request"));
                }
                let n = shared_io(fh, is_write!($w), buf as *mut c_void, i64::from(count), datatype)?;
                done_request(n, request)
            }
        }
    )*};
}

nb_shared_fns! {
    MPI_File_iwrite_shared / PMPI_File_iwrite_shared, w, "Nonblocking write at the shared file pointer (done in the call).";
    MPI_File_iread_shared / PMPI_File_iread_shared, r, "Nonblocking read at the shared file pointer (done in the call).";
}

/// Rank 0's part of `MPI_File_seek_shared`: moves the pointer.
fn seek_shared_root(e: &Entry, offset: i64, whence: c_int) -> R<()> {
    let base = match whence {
        SEEK_SET => 0i128,
        SEEK_CUR => shared_take(e, 0)? as i128,
        _ => view_end(e, e.file.size()?) as i128,
    };
    let p = base + offset as i128;
    let p = u64::try_from(p).map_err(|_| {
        err(
            abi::ERR_ARG,
            format!("seek to {p}: before the start of the view"),
        )
    })?;
    e.shared.swap(0, 0, p)?;
    Ok(())
}

file_fn! {
    /// Moves the shared file pointer (collective, the same arguments on every rank).
    fn MPI_File_seek_shared / PMPI_File_seek_shared(fh: Handle, offset: i64, whence: c_int) on fh => {
        with(fh, |e| {
            let c = e.file.comm().clone();
            // Every rank checks; rank 0 moves the pointer once every rank
            // has arrived (its accesses before the call are done); all agree.
            c.barrier()?;
            let mut res: R<()> = Ok(());
            if ![SEEK_SET, SEEK_CUR, SEEK_END].contains(&whence) {
                res = Err(err(abi::ERR_ARG, format!("whence {whence}: not MPI_SEEK_SET, MPI_SEEK_CUR or MPI_SEEK_END")));
            }
            if res.is_ok() && c.rank() == 0 {
                res = seek_shared_root(e, offset, whence);
            }
            let mut flag = [u64::from(res.is_err())];
            let mut all = [0u64];
            c.allreduce(&flag, &mut all, dos::op::Max)?;
            flag[0] = all[0];
            match res {
                Err(x) => Err(x),
                Ok(()) if flag[0] != 0 => Err(err(abi::ERR_ARG, "MPI_File_seek_shared failed on another rank")),
                Ok(()) => Ok(()),
            }
        })
    }
}

file_fn! {
    /// The shared file pointer, in etypes of the view.
    fn MPI_File_get_position_shared / PMPI_File_get_position_shared(fh: Handle, offset: *mut i64) on fh => {
        let p = with(fh, |e| shared_take(e, 0))?;
        out(offset, p as i64, "offset")
    }
}

/// Records the start of split collective `name` on `fh` (one at a time
/// per file, as the standard says).
fn split_check(fh: Handle, name: &'static str) -> R<()> {
    with(fh, |e| match e.split {
        Some((other, _)) => Err(err(
            abi::ERR_OTHER,
            format!("{name}: the split collective {other} is not ended yet"),
        )),
        None => Ok(()),
    })
}

fn split_begun(fh: Handle, name: &'static str, bytes: u64) -> R<()> {
    with(fh, |e| {
        e.split = Some((name, bytes));
        Ok(())
    })
}

/// Ends split collective `name` on `fh`; the bytes it moved.
fn split_end(fh: Handle, name: &'static str) -> R<u64> {
    with(fh, |e| match e.split {
        Some((n, b)) if n == name => {
            e.split = None;
            Ok(b)
        }
        Some((n, _)) => Err(err(
            abi::ERR_OTHER,
            format!("the split collective begun is {n}, not {name}"),
        )),
        None => Err(err(
            abi::ERR_OTHER,
            format!("no split collective {name} was begun on this file"),
        )),
    })
}

macro_rules! split_fns {
    ($($begin:ident / $pbegin:ident, $end:ident / $pend:ident, $name:literal, $w:ident, $how:ident;)*) => {$(
        file_fn! {
            /// Begins a split collective: the transfer is done here (collectively).
            fn $begin / $pbegin(fh: Handle, offset: i64, buf: ptr_ty!($w), count: c_int, datatype: Handle) on fh => {
                split_check(fh, $name)?;
                let n = split_do!($how, $w, fh, offset, buf, i64::from(count), datatype)?;
                split_begun(fh, $name, n)
            }
        }
        file_fn! {
            /// Ends a split collective: its status.
            fn $end / $pend(fh: Handle, buf: ptr_ty!($w), status: *mut Status) on fh => {
                let _ = buf;
                let n = split_end(fh, $name)?;
                set_status(status, status_of(n));
                Ok(())
            }
        }
    )*};
}

macro_rules! split_do {
    (at, $w:ident, $fh:expr, $o:expr, $buf:expr, $c:expr, $dt:expr) => {
        do_io!($w, $fh, At::Offset($o), $buf, $c, $dt, Kind::Collective)
    };
    (ptr, $w:ident, $fh:expr, $o:expr, $buf:expr, $c:expr, $dt:expr) => {{
        let _ = $o;
        do_io!($w, $fh, At::Pointer, $buf, $c, $dt, Kind::Collective)
    }};
    (ordered, $w:ident, $fh:expr, $o:expr, $buf:expr, $c:expr, $dt:expr) => {{
        let _ = $o;
        ordered_io($fh, is_write!($w), $buf as *mut c_void, $c, $dt)
    }};
}

split_fns! {
    MPI_File_write_at_all_begin / PMPI_File_write_at_all_begin, MPI_File_write_at_all_end / PMPI_File_write_at_all_end, "write_at_all", w, at;
    MPI_File_read_at_all_begin / PMPI_File_read_at_all_begin, MPI_File_read_at_all_end / PMPI_File_read_at_all_end, "read_at_all", r, at;
}

/// The split collectives without an offset.
macro_rules! split_fns_nooff {
    ($($begin:ident / $pbegin:ident, $end:ident / $pend:ident, $name:literal, $w:ident, $how:ident;)*) => {$(
        file_fn! {
            /// Begins a split collective: the transfer is done here (collectively).
            fn $begin / $pbegin(fh: Handle, buf: ptr_ty!($w), count: c_int, datatype: Handle) on fh => {
                split_check(fh, $name)?;
                let n = split_do!($how, $w, fh, 0, buf, i64::from(count), datatype)?;
                split_begun(fh, $name, n)
            }
        }
        file_fn! {
            /// Ends a split collective: its status.
            fn $end / $pend(fh: Handle, buf: ptr_ty!($w), status: *mut Status) on fh => {
                let _ = buf;
                let n = split_end(fh, $name)?;
                set_status(status, status_of(n));
                Ok(())
            }
        }
    )*};
}

split_fns_nooff! {
    MPI_File_write_all_begin / PMPI_File_write_all_begin, MPI_File_write_all_end / PMPI_File_write_all_end, "write_all", w, ptr;
    MPI_File_read_all_begin / PMPI_File_read_all_begin, MPI_File_read_all_end / PMPI_File_read_all_end, "read_all", r, ptr;
    MPI_File_write_ordered_begin / PMPI_File_write_ordered_begin, MPI_File_write_ordered_end / PMPI_File_write_ordered_end, "write_ordered", w, ordered;
    MPI_File_read_ordered_begin / PMPI_File_read_ordered_begin, MPI_File_read_ordered_end / PMPI_File_read_ordered_end, "read_ordered", r, ordered;
}

/// The large-count (`MPI_Count`) forms: the same transfers.
macro_rules! c_forms {
    ($($mpi:ident / $pmpi:ident ( $fh:ident : $fht:ty $(, $a:ident : $t:ty)* ) => $body:block)*) => {$(
        file_fn! {
            /// The large-count form (`MPI_Count` count) of the function without `_c`.
            fn $mpi / $pmpi ( $fh: $fht $(, $a : $t)* ) on $fh => $body
        }
    )*};
}

c_forms! {
    MPI_File_write_at_c / PMPI_File_write_at_c(fh: Handle, offset: i64, buf: *const c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = write(fh, At::Offset(offset), buf, count, datatype, Kind::Independent)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_write_at_all_c / PMPI_File_write_at_all_c(fh: Handle, offset: i64, buf: *const c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = write(fh, At::Offset(offset), buf, count, datatype, Kind::Collective)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_read_at_c / PMPI_File_read_at_c(fh: Handle, offset: i64, buf: *mut c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = read_into(fh, At::Offset(offset), buf, count, datatype, Kind::Independent)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_read_at_all_c / PMPI_File_read_at_all_c(fh: Handle, offset: i64, buf: *mut c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = read_into(fh, At::Offset(offset), buf, count, datatype, Kind::Collective)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_write_c / PMPI_File_write_c(fh: Handle, buf: *const c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = write(fh, At::Pointer, buf, count, datatype, Kind::Independent)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_write_all_c / PMPI_File_write_all_c(fh: Handle, buf: *const c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = write(fh, At::Pointer, buf, count, datatype, Kind::Collective)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_read_c / PMPI_File_read_c(fh: Handle, buf: *mut c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = read_into(fh, At::Pointer, buf, count, datatype, Kind::Independent)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_read_all_c / PMPI_File_read_all_c(fh: Handle, buf: *mut c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = read_into(fh, At::Pointer, buf, count, datatype, Kind::Collective)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_write_shared_c / PMPI_File_write_shared_c(fh: Handle, buf: *const c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = shared_io(fh, true, buf as *mut c_void, count, datatype)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_read_shared_c / PMPI_File_read_shared_c(fh: Handle, buf: *mut c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = shared_io(fh, false, buf, count, datatype)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_write_ordered_c / PMPI_File_write_ordered_c(fh: Handle, buf: *const c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = ordered_io(fh, true, buf as *mut c_void, count, datatype)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_read_ordered_c / PMPI_File_read_ordered_c(fh: Handle, buf: *mut c_void, count: i64, datatype: Handle, status: *mut Status) => {
        let n = ordered_io(fh, false, buf, count, datatype)?;
        set_status(status, status_of(n));
        Ok(())
    }
    MPI_File_iwrite_at_c / PMPI_File_iwrite_at_c(fh: Handle, offset: i64, buf: *const c_void, count: i64, datatype: Handle, request: *mut Handle) => {
        if request.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for request"));
        }
        let n = write(fh, At::Offset(offset), buf, count, datatype, Kind::Independent)?;
        done_request(n, request)
    }
    MPI_File_iread_at_c / PMPI_File_iread_at_c(fh: Handle, offset: i64, buf: *mut c_void, count: i64, datatype: Handle, request: *mut Handle) => {
        if request.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for request"));
        }
        let n = read_into(fh, At::Offset(offset), buf, count, datatype, Kind::Independent)?;
        done_request(n, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_dosfs_paths() {
        assert_eq!(dosfs_path("out").unwrap(), "/out");
        assert_eq!(dosfs_path("./a/b").unwrap(), "/a/b");
        assert_eq!(dosfs_path("/x/y").unwrap(), "/x/y");
        assert_eq!(dosfs_path("dosfs:/x").unwrap(), "/x");
        assert_eq!(dosfs_path("dosfs:x").unwrap(), "/x");
        assert_eq!(dosfs_path("lustre:/tmp/x").unwrap_err().class, ERR_BAD_FILE);
        assert_eq!(dosfs_path("").unwrap_err().class, ERR_BAD_FILE);
        assert_eq!(dosfs_path("dosfs:").unwrap_err().class, ERR_BAD_FILE);
    }

    #[test]
    fn names_find_their_file_system() {
        let dosfs = |p: &str| Place::Dosfs(p.into());
        let local = |p: &str| Place::Local(p.into());
        // A job with a dosfs: plain names are its paths.
        assert_eq!(place("out", true).unwrap(), dosfs("/out"));
        assert_eq!(place("dosfs:/x", true).unwrap(), dosfs("/x"));
        assert_eq!(place("ufs:/tmp/x", true).unwrap(), local("/tmp/x"));
        assert_eq!(place("nfs:rel/x", true).unwrap(), local("rel/x"));
        // Without one: plain names are local, as ROMIO's ufs driver.
        assert_eq!(place("./zero_count", false).unwrap(), local("./zero_count"));
        assert_eq!(place("/abs/f", false).unwrap(), local("/abs/f"));
        assert_eq!(place("dosfs:/x", false).unwrap(), dosfs("/x"));
        for bad in ["", "ufs:", "lustre:/x"] {
            assert_eq!(place(bad, false).unwrap_err().class, ERR_BAD_FILE, "{bad}");
        }
    }

    #[test]
    fn amodes_follow_the_standard() {
        assert!(mode_of(MODE_RDONLY).is_ok());
        assert!(mode_of(MODE_RDWR | MODE_CREATE | MODE_DELETE_ON_CLOSE).is_ok());
        assert!(mode_of(MODE_WRONLY | MODE_EXCL | MODE_APPEND | MODE_UNIQUE_OPEN).is_ok());
        for bad in [
            0,
            MODE_RDONLY | MODE_WRONLY,
            MODE_RDONLY | MODE_RDWR,
            MODE_RDONLY | MODE_CREATE,
            MODE_RDONLY | MODE_EXCL,
            MODE_RDWR | MODE_SEQUENTIAL,
            MODE_RDWR | 1024,
        ] {
            assert_eq!(mode_of(bad).unwrap_err().class, ERR_AMODE, "{bad:#x}");
        }
        assert!(mode_of(MODE_WRONLY | MODE_SEQUENTIAL).is_ok());
    }

    #[test]
    fn hints_map_onto_dos_io() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let h = hints_of(
            &p(&[
                ("striping_unit", "65536"),
                ("striping_factor", "2"),
                ("cb_nodes", "2"),
                ("cb_buffer_size", "1048576"),
                ("romio_cb_write", "enable"),
                ("romio_ds_read", "disable"),
                ("other", "kept"),
            ]),
            4,
        );
        let l = h.layout.unwrap();
        assert_eq!((l.stripe_size, l.stripe_count), (65536, 2));
        assert_eq!(h.aggregators, Some(vec![0, 2]));
        assert_eq!(h.cb_buffer, 1 << 20);
        assert!(!h.direct);
        assert_eq!(h.sieve_hole, 0);
        // Unparseable values are ignored, as hints may be.
        assert_eq!(hints_of(&p(&[("striping_unit", "x")]), 4), Hints::default());
    }

    #[test]
    fn a_flattened_filetype_becomes_a_view() {
        use crate::dtype::Type;
        use std::sync::Arc;
        let int = Arc::new(Type::basic(4, 4));
        // vector(3 blocks of 2 ints, stride 4 ints) resized to 64 bytes.
        let v = Type::vector(3, 2, 4, &int).unwrap();
        let v = Arc::new(Type::resized(0, 64, &v).unwrap());
        let view = view_of(&int, &v, false).unwrap().unwrap();
        assert_eq!(view.segments(), &[(0, 8), (16, 8), (32, 8)]);
        assert_eq!((view.extent(), view.etype()), (64, 4));
        assert_eq!(view.map(100, 5, 8).unwrap(), vec![(136, 4), (164, 4)]);
        // A negative displacement is not a filetype (MPI_ERR_IO, as ROMIO).
        let neg = Arc::new(Type::hindexed(&[1], &[-4], &int).unwrap());
        assert_eq!(view_of(&int, &neg, false).unwrap_err().class, ERR_IO);
        // Nor are decreasing ones.
        let dec = Arc::new(Type::hindexed(&[1, 1], &[8, 0], &int).unwrap());
        assert_eq!(view_of(&int, &dec, false).unwrap_err().class, ERR_IO);
        assert_eq!(view_of(&int, &dec, true).unwrap_err().class, ERR_IO);
        // Overlapping ones only on a file opened read-only.
        let over = Arc::new(Type::hindexed(&[3, 1], &[0, 4], &int).unwrap());
        assert_eq!(view_of(&int, &over, false).unwrap_err().class, ERR_IO);
        let v = view_of(&int, &over, true).unwrap().unwrap();
        assert_eq!(v.segments(), &[(0, 12), (4, 4)]);
        // A filetype of no data is a view of nothing (a rank without data).
        let none = Arc::new(Type::hindexed(&[], &[], &int).unwrap());
        assert_eq!(view_of(&int, &none, false).unwrap(), None);
        // A filetype that is not whole etypes.
        let three = Arc::new(Type::basic(3, 1));
        let eight = Arc::new(Type::basic(8, 8));
        assert_eq!(
            view_of(&eight, &three, false).unwrap_err().class,
            abi::ERR_TYPE
        );
    }
}
