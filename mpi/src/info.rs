//! Info objects: `MPI_Info_create`, `set`, `get`, `get_string`,
//! `get_valuelen`, `delete`, `get_nkeys`, `get_nthkey`, `dup`, `free`;
//! `MPI_INFO_ENV` (read-only: `maxprocs`, the job's size, and `host`).
//!
//! An info object is an ordered list of (key, value) strings: keys of 1 to
//! `MPI_MAX_INFO_KEY - 1` characters (else `MPI_ERR_INFO_KEY`), values of
//! at most `MPI_MAX_INFO_VAL - 1` (else `MPI_ERR_INFO_VALUE`); deleting an
//! absent key is `MPI_ERR_INFO_NOKEY`, an invalid handle `MPI_ERR_INFO`.
//! The functions that take an info argument elsewhere accept any valid one
//! and ignore its hints for now.
//!
//! As MPI-4 allows, the info functions work before `MPI_Init` and after
//! `MPI_Finalize` too: the objects made then live in a table of this
//! module's, which `MPI_Init` takes into the state (handles unchanged) and
//! `MPI_Finalize` gives back. Outside `MPI_Init`..`MPI_Finalize`,
//! `MPI_INFO_ENV` holds what it holds inside when `dosrun` started the
//! program (`maxprocs` from its environment), else `host` only.

use std::ffi::{c_char, c_int, CStr};
use std::sync::Mutex;

use crate::abi::{self, Handle, ERR_INFO, ERR_INFO_KEY, ERR_INFO_NOKEY, ERR_INFO_VALUE};
use crate::error::{err, R};
use crate::ptr::{out, read};
use crate::state::{self, Table};

/// The first handle of an info object.
pub(crate) const INFO_BASE: Handle = 0x7000_0000;

const MAX_KEY: usize = 256;
const MAX_VAL: usize = 1024;

/// An info object's pairs, in the order set.
pub(crate) type Info = Vec<(String, String)>;

/// What `MPI_INFO_ENV` holds.
pub(crate) fn env_info(size: usize) -> Info {
    vec![
        ("maxprocs".to_string(), size.to_string()),
        ("host".to_string(), crate::env::hostname()),
    ]
}

/// The info objects while MPI is not running (see the [module docs](self)).
static OUTSIDE: Mutex<Option<Table<Info>>> = Mutex::new(None);

/// What `MPI_INFO_ENV` holds outside `MPI_Init`..`MPI_Finalize`: the same
/// as inside when `dosrun` started the program (the job's size is in its
/// environment), else `host` only.
fn env_outside() -> Info {
    match dos::pmi::size_from_env() {
        Some(n) => env_info(n),
        None => vec![("host".to_string(), crate::env::hostname())],
    }
}

/// A table with only `MPI_INFO_ENV`, as it is outside `MPI_Init`..`MPI_Finalize`.
fn fresh() -> Table<Info> {
    let mut t = Table::new(&[abi::INFO_ENV], INFO_BASE);
    t.set(abi::INFO_ENV, env_outside());
    t
}

/// The table `MPI_Init` takes into the state, `MPI_INFO_ENV` filled in for
/// a job of `size` processes.
pub(crate) fn take_outside(size: usize) -> Table<Info> {
    let mut t = OUTSIDE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(fresh);
    t.set(abi::INFO_ENV, env_info(size));
    t
}

/// Takes back the table at `MPI_Finalize`.
pub(crate) fn give_back(mut t: Table<Info>) {
    t.set(abi::INFO_ENV, env_outside());
    *OUTSIDE.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
}

/// Runs `f` on the table of info objects: the state's while MPI runs, else
/// this module's.
fn with_table<T>(f: impl FnOnce(&mut Table<Info>) -> R<T>) -> R<T> {
    if state::initialized() && !state::finalized() {
        return state::with(|st| f(&mut st.infos));
    }
    let mut g = OUTSIDE.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(fresh))
}

fn bad(h: Handle) -> crate::error::Error {
    if h == abi::INFO_NULL {
        err(ERR_INFO, "MPI_INFO_NULL is not an info object")
    } else {
        err(ERR_INFO, format!("invalid info handle {h:#x}"))
    }
}

/// Runs `f` on info `h` (`write`: `MPI_INFO_ENV` is read-only).
fn with_info<T>(h: Handle, write: bool, f: impl FnOnce(&mut Info) -> R<T>) -> R<T> {
    if write && h == abi::INFO_ENV {
        return Err(err(ERR_INFO, "MPI_INFO_ENV cannot be changed"));
    }
    with_table(|t| f(t.get_mut(&h).ok_or_else(|| bad(h))?))
}

/// A C string argument, checked.
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

/// A key argument: 1 to `MPI_MAX_INFO_KEY - 1` characters.
///
/// # Safety
/// As [`text`].
unsafe fn key(p: *const c_char) -> R<String> {
    // SAFETY: the caller's contract.
    let k = unsafe { text(p, "key") }?;
    if k.is_empty() || k.len() >= MAX_KEY {
        return Err(err(
            ERR_INFO_KEY,
            format!(
                "a key of {} characters (1 to {} allowed)",
                k.len(),
                MAX_KEY - 1
            ),
        ));
    }
    Ok(k)
}

/// Copies `s` into `buf` of `cap` bytes (at most `cap - 1` characters and the NUL).
///
/// # Safety
/// `buf` valid for `cap` bytes.
unsafe fn put(buf: *mut c_char, cap: usize, s: &str) -> R<()> {
    if cap == 0 {
        return Ok(());
    }
    if buf.is_null() {
        return Err(err(abi::ERR_ARG, "null string buffer"));
    }
    let n = s.len().min(cap - 1);
    // SAFETY: `buf` holds `cap` > `n` bytes by the caller's contract.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
        buf.add(n).write(0);
    }
    Ok(())
}

mpi_fn! {
    /// A new, empty info object.
    fn MPI_Info_create / PMPI_Info_create(info: *mut Handle) on abi::COMM_WORLD => {
        if info.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for info"));
        }
        let h = with_table(|t| Ok(t.insert(Vec::new())))?;
        out(info, h, "info")
    }
}

mpi_fn! {
    /// Sets `key` to `value` (replacing an earlier value).
    fn MPI_Info_set / PMPI_Info_set(info: Handle, k: *const c_char, value: *const c_char) on abi::COMM_WORLD => {
        let k = key(k)?;
        let v = text(value, "value")?;
        if v.len() >= MAX_VAL {
            return Err(err(ERR_INFO_VALUE, format!("a value of {} characters (at most {})", v.len(), MAX_VAL - 1)));
        }
        with_info(info, true, |i| {
            match i.iter_mut().find(|(x, _)| *x == k) {
                Some(e) => e.1 = v,
                None => i.push((k, v)),
            }
            Ok(())
        })
    }
}

/// The value of `k` in `info`, if set.
fn lookup(info: Handle, k: &str) -> R<Option<String>> {
    with_info(info, false, |i| {
        Ok(i.iter().find(|(x, _)| x == k).map(|e| e.1.clone()))
    })
}

mpi_fn! {
    /// The value of `key` (at most `valuelen` characters and a NUL), if set.
    fn MPI_Info_get / PMPI_Info_get(info: Handle, k: *const c_char, valuelen: c_int, value: *mut c_char, flag: *mut c_int) on abi::COMM_WORLD => {
        let k = key(k)?;
        let cap = usize::try_from(valuelen).map_err(|_| err(abi::ERR_ARG, format!("negative valuelen {valuelen}")))?;
        match lookup(info, &k)? {
            None => out(flag, 0, "flag"),
            Some(v) => {
                put(value, cap + 1, &v)?;
                out(flag, 1, "flag")
            }
        }
    }
}

mpi_fn! {
    /// The length of `key`'s value, if set.
    fn MPI_Info_get_valuelen / PMPI_Info_get_valuelen(info: Handle, k: *const c_char, valuelen: *mut c_int, flag: *mut c_int) on abi::COMM_WORLD => {
        let k = key(k)?;
        match lookup(info, &k)? {
            None => out(flag, 0, "flag"),
            Some(v) => {
                out(valuelen, v.len() as c_int, "valuelen")?;
                out(flag, 1, "flag")
            }
        }
    }
}

mpi_fn! {
    /// The value of `key` into `value` of `*buflen` bytes (truncated);
    /// `*buflen` becomes the length it needs, the NUL included.
    fn MPI_Info_get_string / PMPI_Info_get_string(info: Handle, k: *const c_char, buflen: *mut c_int, value: *mut c_char, flag: *mut c_int) on abi::COMM_WORLD => {
        let k = key(k)?;
        let cap = read(buflen, "buflen")?;
        let cap = usize::try_from(cap).map_err(|_| err(abi::ERR_ARG, format!("negative buflen {cap}")))?;
        match lookup(info, &k)? {
            None => out(flag, 0, "flag"),
            Some(v) => {
                put(value, cap, &v)?;
                out(buflen, v.len() as c_int + 1, "buflen")?;
                out(flag, 1, "flag")
            }
        }
    }
}

mpi_fn! {
    /// Removes `key`; `MPI_ERR_INFO_NOKEY` if it is not set.
    fn MPI_Info_delete / PMPI_Info_delete(info: Handle, k: *const c_char) on abi::COMM_WORLD => {
        let k = key(k)?;
        with_info(info, true, |i| {
            let at = i.iter().position(|(x, _)| *x == k).ok_or_else(|| err(ERR_INFO_NOKEY, format!("no key {k:?}")))?;
            i.remove(at);
            Ok(())
        })
    }
}

mpi_fn! {
    /// The number of keys set.
    fn MPI_Info_get_nkeys / PMPI_Info_get_nkeys(info: Handle, nkeys: *mut c_int) on abi::COMM_WORLD => {
        let n = with_info(info, false, |i| Ok(i.len()))?;
        out(nkeys, n as c_int, "nkeys")
    }
}

mpi_fn! {
    /// The `n`th key (from 0, in the order set), into `key` of
    /// `MPI_MAX_INFO_KEY` bytes.
    fn MPI_Info_get_nthkey / PMPI_Info_get_nthkey(info: Handle, n: c_int, k: *mut c_char) on abi::COMM_WORLD => {
        let s = with_info(info, false, |i| {
            usize::try_from(n)
                .ok()
                .and_then(|n| i.get(n))
                .map(|e| e.0.clone())
                .ok_or_else(|| err(abi::ERR_ARG, format!("no key number {n} among {}", i.len())))
        })?;
        if k.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for key"));
        }
        put(k, MAX_KEY, &s)
    }
}

mpi_fn! {
    /// A copy of `info`.
    fn MPI_Info_dup / PMPI_Info_dup(info: Handle, newinfo: *mut Handle) on abi::COMM_WORLD => {
        if newinfo.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newinfo"));
        }
        let c = with_info(info, false, |i| Ok(i.clone()))?;
        let h = with_table(|t| Ok(t.insert(c)))?;
        out(newinfo, h, "newinfo")
    }
}

mpi_fn! {
    /// Frees an info object; the handle becomes `MPI_INFO_NULL`.
    fn MPI_Info_free / PMPI_Info_free(info: *mut Handle) on abi::COMM_WORLD => {
        let h = read(info, "info")?;
        if h == abi::INFO_ENV {
            return Err(err(ERR_INFO, "MPI_INFO_ENV cannot be freed"));
        }
        with_table(|t| t.remove(&h).map(|_| ()).ok_or_else(|| bad(h)))?;
        out(info, abi::INFO_NULL, "info")
    }
}

mpi_fn! {
    /// A new info object with the contents of `MPI_INFO_ENV` (argc and
    /// argv are not looked at: dos starts every process the same way).
    fn MPI_Info_create_env / PMPI_Info_create_env(argc: c_int, argv: *mut *mut std::ffi::c_char, info: *mut Handle) on abi::COMM_WORLD => {
        let _ = (argc, argv);
        if info.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for info"));
        }
        let c = with_info(abi::INFO_ENV, false, |i| Ok(i.clone()))?;
        let h = with_table(|t| Ok(t.insert(c)))?;
        out(info, h, "info")
    }
}
