//! Attributes and keyvals (`MPI_Comm_create_keyval`, `MPI_Comm_set_attr`,
//! ..., the `Type_*` ones, and the generic store the `Win_*` ones use), and
//! object names (`MPI_Comm_set_name`, `MPI_Type_set_name`).
//!
//! The store is one table of keyvals and one map from `(kind, handle)` to
//! the attributes of that object, in the order they were set. It lives in
//! this thread's storage, apart from the handle tables of [`crate::state`],
//! because the program's copy and delete callbacks may call MPI themselves
//! (a delete callback reading another attribute is common): no borrow is
//! held while a callback runs.
//!
//! The standard's rules, as kept here:
//! * a copy callback runs for each attribute of an object when it is
//!   duplicated (`MPI_Comm_dup`, `MPI_Type_dup`); the new object gets the
//!   attribute when the callback sets `flag`. `MPI_*_NULL_COPY_FN` (the null
//!   pointer) never copies, `MPI_*_DUP_FN` (the value 1) copies the value;
//! * a delete callback runs when an attribute is deleted
//!   (`MPI_*_delete_attr`), replaced (`MPI_*_set_attr` on a key already
//!   set), or its object freed (`MPI_Comm_free`, `MPI_Type_free`, and at
//!   `MPI_Finalize` for `MPI_COMM_SELF`, first of all); on a free the
//!   attributes go in the reverse order they were set. A callback's error
//!   code fails the call with it;
//! * a freed keyval (`MPI_*_free_keyval` sets the program's variable to
//!   `MPI_KEYVAL_INVALID`) cannot be used for new attributes, but the
//!   attributes already set keep it alive, callbacks included (freeing it
//!   again meanwhile is accepted);
//! * a keyval of one kind used on another kind of object is
//!   `MPI_ERR_KEYVAL`, as is an unknown one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};

use crate::abi::{self, Handle};
use crate::error::{err, R};
use crate::ptr::{out, read};
use crate::state;

/// The kind of object an attribute hangs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Comm,
    Type,
    Win,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Comm => "communicator",
            Kind::Type => "datatype",
            Kind::Win => "window",
        }
    }
}

/// `copy(old, keyval, extra_state, value_in, &mut value_out, &mut flag)`:
/// the same C signature for the three kinds (the handle is pointer-sized).
type CopyFn =
    unsafe extern "C" fn(Handle, c_int, *mut c_void, *mut c_void, *mut c_void, *mut c_int) -> c_int;
/// `delete(object, keyval, value, extra_state)`.
type DeleteFn = unsafe extern "C" fn(Handle, c_int, *mut c_void, *mut c_void) -> c_int;

/// `MPI_*_DUP_FN`.
const DUP_FN: usize = 1;

struct Keyval {
    kind: Kind,
    /// 0: null copy, 1: dup, else a [`CopyFn`].
    copy: usize,
    /// 0: null delete, else a [`DeleteFn`].
    delete: usize,
    extra: usize,
    /// Freed by the program; kept while attributes use it.
    freed: bool,
    /// Attributes set with it.
    uses: usize,
}

#[derive(Default)]
struct Store {
    keyvals: HashMap<c_int, Keyval>,
    next: c_int,
    /// Attributes per object, in the order they were set.
    attrs: HashMap<(Kind, Handle), Vec<(c_int, usize)>>,
    names: HashMap<(Kind, Handle), String>,
}

thread_local! {
    static STORE: RefCell<Store> = RefCell::new(Store::default());
}

/// The first keyval the library gives (far from the predefined keys).
const FIRST_KEYVAL: c_int = 100_001;

fn with<T>(f: impl FnOnce(&mut Store) -> R<T>) -> R<T> {
    STORE.with(|s| match s.try_borrow_mut() {
        Ok(mut g) => f(&mut g),
        Err(_) => Err(err(abi::ERR_INTERN, "attribute store busy")),
    })
}

/// Forgets everything (at `MPI_Finalize`).
pub(crate) fn clear() {
    STORE.with(|s| {
        if let Ok(mut g) = s.try_borrow_mut() {
            *g = Store::default();
        }
    });
}

/// A new keyval of `kind` with the program's callbacks.
pub(crate) fn create_keyval(kind: Kind, copy: usize, delete: usize, extra: usize) -> R<c_int> {
    with(|s| {
        if s.next == 0 {
            s.next = FIRST_KEYVAL;
        }
        let k = s.next;
        s.next = s
            .next
            .checked_add(1)
            .ok_or_else(|| err(abi::ERR_NO_MEM, "no keyvals left"))?;
        s.keyvals.insert(
            k,
            Keyval {
                kind,
                copy,
                delete,
                extra,
                freed: false,
                uses: 0,
            },
        );
        Ok(k)
    })
}

fn bad_keyval(kind: Kind, k: c_int) -> crate::error::Error {
    err(
        abi::ERR_KEYVAL,
        format!("{k} is not a {} keyval", kind.name()),
    )
}

/// Frees a keyval: no new attributes with it; those set stay. Freeing it
/// again while attributes keep it alive is accepted (erroneous by the
/// standard; MPICH accepts it too, and its tests free a keyval from inside
/// the keyval's own delete callback).
pub(crate) fn free_keyval(kind: Kind, k: c_int) -> R<()> {
    with(|s| {
        let kv = s
            .keyvals
            .get_mut(&k)
            .filter(|kv| kv.kind == kind)
            .ok_or_else(|| bad_keyval(kind, k))?;
        kv.freed = true;
        if kv.uses == 0 {
            s.keyvals.remove(&k);
        }
        Ok(())
    })
}

/// Runs the delete callback of `k` on `value` of object `h`.
fn run_delete(kind: Kind, h: Handle, k: c_int, value: usize, delete: usize, extra: usize) -> R<()> {
    if delete == 0 {
        return Ok(());
    }
    let _ = kind;
    // SAFETY: `delete` is the program's delete callback, as given to
    // MPI_*_create_keyval with this C signature.
    let f: DeleteFn = unsafe { std::mem::transmute::<usize, DeleteFn>(delete) };
    // SAFETY: a C function called with the arguments the standard specifies.
    let rc = unsafe { f(h, k, value as *mut c_void, extra as *mut c_void) };
    if rc == abi::SUCCESS {
        Ok(())
    } else {
        Err(err(
            rc,
            format!("the delete callback of keyval {k} returned {rc}"),
        ))
    }
}

/// Drops one use of keyval `k`; removes it if freed and unused.
fn release(s: &mut Store, k: c_int) {
    if let Some(kv) = s.keyvals.get_mut(&k) {
        kv.uses = kv.uses.saturating_sub(1);
        if kv.freed && kv.uses == 0 {
            s.keyvals.remove(&k);
        }
    }
}

/// Sets attribute `k` of object `h` to `value` (the old value's delete
/// callback runs first).
pub(crate) fn set(kind: Kind, h: Handle, k: c_int, value: usize) -> R<()> {
    let (old, delete, extra) = with(|s| {
        let kv = s
            .keyvals
            .get(&k)
            .filter(|kv| kv.kind == kind && !kv.freed)
            .ok_or_else(|| bad_keyval(kind, k))?;
        let (delete, extra) = (kv.delete, kv.extra);
        let old = s
            .attrs
            .get(&(kind, h))
            .and_then(|a| a.iter().find(|(key, _)| *key == k).map(|&(_, v)| v));
        Ok((old, delete, extra))
    })?;
    if let Some(v) = old {
        run_delete(kind, h, k, v, delete, extra)?;
    }
    with(|s| {
        let list = s.attrs.entry((kind, h)).or_default();
        match list.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = value,
            None => {
                list.push((k, value));
                if let Some(kv) = s.keyvals.get_mut(&k) {
                    kv.uses += 1;
                }
            }
        }
        Ok(())
    })
}

/// The value of attribute `k` of object `h`, if set.
pub(crate) fn get(kind: Kind, h: Handle, k: c_int) -> R<Option<usize>> {
    with(|s| {
        if !s.keyvals.get(&k).is_some_and(|kv| kv.kind == kind) {
            return Err(bad_keyval(kind, k));
        }
        Ok(s.attrs
            .get(&(kind, h))
            .and_then(|a| a.iter().find(|(key, _)| *key == k).map(|&(_, v)| v)))
    })
}

/// Deletes attribute `k` of object `h` (its delete callback runs); not set:
/// `MPI_ERR_KEYVAL`.
pub(crate) fn delete(kind: Kind, h: Handle, k: c_int) -> R<()> {
    let (value, delete, extra) = with(|s| {
        let kv = s
            .keyvals
            .get(&k)
            .filter(|kv| kv.kind == kind)
            .ok_or_else(|| bad_keyval(kind, k))?;
        let (delete, extra) = (kv.delete, kv.extra);
        let v = s
            .attrs
            .get(&(kind, h))
            .and_then(|a| a.iter().find(|(key, _)| *key == k).map(|&(_, v)| v))
            .ok_or_else(|| err(abi::ERR_KEYVAL, format!("attribute {k} is not set")))?;
        Ok((v, delete, extra))
    })?;
    run_delete(kind, h, k, value, delete, extra)?;
    with(|s| {
        if let Some(list) = s.attrs.get_mut(&(kind, h)) {
            list.retain(|(key, _)| *key != k);
        }
        release(s, k);
        Ok(())
    })
}

/// Deletes every attribute of object `h`, in the reverse order they were
/// set (it is being freed), and forgets its name. Stops at the first
/// callback that fails, keeping the attributes not yet deleted.
pub(crate) fn delete_all(kind: Kind, h: Handle) -> R<()> {
    let keys: Vec<c_int> = with(|s| {
        Ok(s.attrs
            .get(&(kind, h))
            .map(|a| a.iter().rev().map(|&(k, _)| k).collect())
            .unwrap_or_default())
    })?;
    for k in keys {
        delete(kind, h, k)?;
    }
    with(|s| {
        s.attrs.remove(&(kind, h));
        s.names.remove(&(kind, h));
        Ok(())
    })
}

/// Copies the attributes of `old` to `new` through their copy callbacks
/// (`new` is being made as a duplicate of `old`).
pub(crate) fn copy_all(kind: Kind, old: Handle, new: Handle) -> R<()> {
    let list: Vec<(c_int, usize, usize, usize)> = with(|s| {
        Ok(s.attrs
            .get(&(kind, old))
            .map(|a| {
                a.iter()
                    .filter_map(|&(k, v)| s.keyvals.get(&k).map(|kv| (k, v, kv.copy, kv.extra)))
                    .collect()
            })
            .unwrap_or_default())
    })?;
    for (k, v, copy, extra) in list {
        let value = match copy {
            0 => None,
            DUP_FN => Some(v),
            f => {
                // SAFETY: `f` is the program's copy callback, as given to
                // MPI_*_create_keyval with this C signature.
                let f: CopyFn = unsafe { std::mem::transmute::<usize, CopyFn>(f) };
                let mut out_v: usize = 0;
                let mut flag: c_int = 0;
                // SAFETY: a C function called with the arguments the standard specifies.
                let rc = unsafe {
                    f(
                        old,
                        k,
                        extra as *mut c_void,
                        v as *mut c_void,
                        (&mut out_v as *mut usize).cast(),
                        &mut flag,
                    )
                };
                if rc != abi::SUCCESS {
                    return Err(err(
                        rc,
                        format!("the copy callback of keyval {k} returned {rc}"),
                    ));
                }
                (flag != 0).then_some(out_v)
            }
        };
        if let Some(value) = value {
            with(|s| {
                s.attrs.entry((kind, new)).or_default().push((k, value));
                if let Some(kv) = s.keyvals.get_mut(&k) {
                    kv.uses += 1;
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Sets the name of object `h`.
pub(crate) fn set_name(kind: Kind, h: Handle, name: *const c_char) -> R<()> {
    if name.is_null() {
        return Err(err(abi::ERR_ARG, "null name"));
    }
    // SAFETY: a NUL-terminated C string (the caller's contract).
    let s = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
    let mut n: String = s.into_owned();
    // Longer names are truncated, as the standard allows.
    while n.len() >= abi::MAX_OBJECT_NAME {
        n.pop();
    }
    with(|st| {
        st.names.insert((kind, h), n);
        Ok(())
    })
}

/// The name of object `h` set by the program.
pub(crate) fn name(kind: Kind, h: Handle) -> Option<String> {
    with(|s| Ok(s.names.get(&(kind, h)).cloned()))
        .ok()
        .flatten()
}

/// The callback pointer as the library keeps it.
fn fn_addr<F>(f: Option<F>) -> usize
where
    F: Copy,
{
    match f {
        None => 0,
        // SAFETY: F is a function pointer type (pointer-sized).
        Some(f) => unsafe { std::mem::transmute_copy::<F, usize>(&f) },
    }
}

/// The C callbacks as they arrive: a null pointer is a `None`, the value 1
/// (`MPI_*_DUP_FN`) is a pointer the library never calls.
type CCopy = Option<CopyFn>;
type CDelete = Option<DeleteFn>;

mpi_fn! {
    /// A keyval for communicator attributes.
    fn MPI_Comm_create_keyval / PMPI_Comm_create_keyval(copy_fn: CCopy, delete_fn: CDelete, keyval: *mut c_int, extra_state: *mut c_void) on abi::COMM_WORLD => {
        if keyval.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for keyval"));
        }
        let k = create_keyval(Kind::Comm, fn_addr(copy_fn), fn_addr(delete_fn), extra_state as usize)?;
        out(keyval, k, "keyval")
    }
}

mpi_fn! {
    /// Frees a communicator keyval; sets it to `MPI_KEYVAL_INVALID`.
    fn MPI_Comm_free_keyval / PMPI_Comm_free_keyval(keyval: *mut c_int) on abi::COMM_WORLD => {
        free_keyval(Kind::Comm, read(keyval, "keyval")?)?;
        out(keyval, abi::KEYVAL_INVALID, "keyval")
    }
}

mpi_fn! {
    /// Sets a communicator attribute.
    fn MPI_Comm_set_attr / PMPI_Comm_set_attr(comm: Handle, keyval: c_int, attribute_val: *mut c_void) on comm => {
        state::comm(comm)?;
        set(Kind::Comm, comm, keyval, attribute_val as usize)
    }
}

mpi_fn! {
    /// Deletes a communicator attribute (its delete callback runs).
    fn MPI_Comm_delete_attr / PMPI_Comm_delete_attr(comm: Handle, keyval: c_int) on comm => {
        state::comm(comm)?;
        delete(Kind::Comm, comm, keyval)
    }
}

mpi_fn! {
    /// A keyval for datatype attributes.
    fn MPI_Type_create_keyval / PMPI_Type_create_keyval(copy_fn: CCopy, delete_fn: CDelete, keyval: *mut c_int, extra_state: *mut c_void) on abi::COMM_WORLD => {
        if keyval.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for keyval"));
        }
        let k = create_keyval(Kind::Type, fn_addr(copy_fn), fn_addr(delete_fn), extra_state as usize)?;
        out(keyval, k, "keyval")
    }
}

mpi_fn! {
    /// Frees a datatype keyval; sets it to `MPI_KEYVAL_INVALID`.
    fn MPI_Type_free_keyval / PMPI_Type_free_keyval(keyval: *mut c_int) on abi::COMM_WORLD => {
        free_keyval(Kind::Type, read(keyval, "keyval")?)?;
        out(keyval, abi::KEYVAL_INVALID, "keyval")
    }
}

mpi_fn! {
    /// Sets a datatype attribute.
    fn MPI_Type_set_attr / PMPI_Type_set_attr(datatype: Handle, keyval: c_int, attribute_val: *mut c_void) on abi::COMM_WORLD => {
        crate::datatype::get(datatype)?;
        set(Kind::Type, datatype, keyval, attribute_val as usize)
    }
}

mpi_fn! {
    /// A datatype attribute: `flag` false if not set.
    fn MPI_Type_get_attr / PMPI_Type_get_attr(datatype: Handle, keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) on abi::COMM_WORLD => {
        crate::datatype::get(datatype)?;
        match get(Kind::Type, datatype, keyval)? {
            Some(v) => {
                out(attribute_val.cast::<usize>(), v, "attribute_val")?;
                out(flag, 1, "flag")
            }
            None => out(flag, 0, "flag"),
        }
    }
}

mpi_fn! {
    /// Deletes a datatype attribute (its delete callback runs).
    fn MPI_Type_delete_attr / PMPI_Type_delete_attr(datatype: Handle, keyval: c_int) on abi::COMM_WORLD => {
        crate::datatype::get(datatype)?;
        delete(Kind::Type, datatype, keyval)
    }
}

mpi_fn! {
    /// A keyval for window attributes (the windows call [`set`], [`get`],
    /// [`delete`], [`delete_all`] with [`Kind::Win`]).
    fn MPI_Win_create_keyval / PMPI_Win_create_keyval(copy_fn: CCopy, delete_fn: CDelete, keyval: *mut c_int, extra_state: *mut c_void) on abi::COMM_WORLD => {
        if keyval.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for keyval"));
        }
        let k = create_keyval(Kind::Win, fn_addr(copy_fn), fn_addr(delete_fn), extra_state as usize)?;
        out(keyval, k, "keyval")
    }
}

mpi_fn! {
    /// Sets a window attribute of one of the program's keyvals (the
    /// predefined `MPI_WIN_BASE`... cannot be set: `MPI_ERR_KEYVAL`).
    fn MPI_Win_set_attr / PMPI_Win_set_attr(win: Handle, win_keyval: c_int, attribute_val: *mut c_void) on abi::COMM_WORLD => {
        crate::rma::check(win)?;
        set(Kind::Win, win, win_keyval, attribute_val as usize)
    }
}

mpi_fn! {
    /// Deletes a window attribute (its delete callback runs).
    fn MPI_Win_delete_attr / PMPI_Win_delete_attr(win: Handle, win_keyval: c_int) on abi::COMM_WORLD => {
        crate::rma::check(win)?;
        delete(Kind::Win, win, win_keyval)
    }
}

mpi_fn! {
    /// Frees a window keyval; sets it to `MPI_KEYVAL_INVALID`.
    fn MPI_Win_free_keyval / PMPI_Win_free_keyval(keyval: *mut c_int) on abi::COMM_WORLD => {
        free_keyval(Kind::Win, read(keyval, "keyval")?)?;
        out(keyval, abi::KEYVAL_INVALID, "keyval")
    }
}

mpi_fn! {
    /// Names a communicator (truncated to `MPI_MAX_OBJECT_NAME - 1` bytes).
    fn MPI_Comm_set_name / PMPI_Comm_set_name(comm: Handle, comm_name: *const c_char) on comm => {
        state::comm(comm)?;
        set_name(Kind::Comm, comm, comm_name)
    }
}

mpi_fn! {
    /// A communicator's name: the program's, `MPI_COMM_WORLD`/`MPI_COMM_SELF`/
    /// `MPI_COMM_NULL` for those (MPI-4.1), else the empty string.
    fn MPI_Comm_get_name / PMPI_Comm_get_name(comm: Handle, comm_name: *mut c_char, resultlen: *mut c_int) on comm => {
        if comm != abi::COMM_NULL {
            state::comm(comm)?;
        }
        let n = name(Kind::Comm, comm).unwrap_or_else(|| match comm {
            abi::COMM_NULL => "MPI_COMM_NULL".into(),
            abi::COMM_WORLD => "MPI_COMM_WORLD".into(),
            abi::COMM_SELF => "MPI_COMM_SELF".into(),
            _ => String::new(),
        });
        crate::ptr::string(comm_name, abi::MAX_OBJECT_NAME, resultlen, &n)
    }
}

mpi_fn! {
    /// Names a datatype (a predefined one too).
    fn MPI_Type_set_name / PMPI_Type_set_name(datatype: Handle, type_name: *const c_char) on abi::COMM_WORLD => {
        crate::datatype::get(datatype)?;
        set_name(Kind::Type, datatype, type_name)
    }
}

// The MPI-1 names (deprecated since MPI-2.0, still in the standard ABI):
// the communicator functions under their old names.

mpi_fn! {
    /// `MPI_Comm_create_keyval` under its MPI-1 name.
    fn MPI_Keyval_create / PMPI_Keyval_create(copy_fn: CCopy, delete_fn: CDelete, keyval: *mut c_int, extra_state: *mut c_void) on abi::COMM_WORLD => {
        if keyval.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for keyval"));
        }
        let k = create_keyval(Kind::Comm, fn_addr(copy_fn), fn_addr(delete_fn), extra_state as usize)?;
        out(keyval, k, "keyval")
    }
}

mpi_fn! {
    /// `MPI_Comm_free_keyval` under its MPI-1 name.
    fn MPI_Keyval_free / PMPI_Keyval_free(keyval: *mut c_int) on abi::COMM_WORLD => {
        free_keyval(Kind::Comm, read(keyval, "keyval")?)?;
        out(keyval, abi::KEYVAL_INVALID, "keyval")
    }
}

mpi_fn! {
    /// `MPI_Comm_set_attr` under its MPI-1 name.
    fn MPI_Attr_put / PMPI_Attr_put(comm: Handle, keyval: c_int, attribute_val: *mut c_void) on comm => {
        state::comm(comm)?;
        set(Kind::Comm, comm, keyval, attribute_val as usize)
    }
}

mpi_fn! {
    /// `MPI_Comm_delete_attr` under its MPI-1 name.
    fn MPI_Attr_delete / PMPI_Attr_delete(comm: Handle, keyval: c_int) on comm => {
        state::comm(comm)?;
        delete(Kind::Comm, comm, keyval)
    }
}

/// `MPI_Attr_get`: `MPI_Comm_get_attr` under its MPI-1 name.
///
/// # Safety
/// As `MPI_Comm_get_attr`.
#[no_mangle]
pub unsafe extern "C" fn PMPI_Attr_get(
    comm: Handle,
    keyval: c_int,
    attribute_val: *mut c_void,
    flag: *mut c_int,
) -> c_int {
    // SAFETY: the same contract.
    unsafe { crate::comm::PMPI_Comm_get_attr(comm, keyval, attribute_val, flag) }
}

/// `MPI_Attr_get`: forwards to [`PMPI_Attr_get`].
///
/// # Safety
/// As `MPI_Comm_get_attr`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Attr_get(
    comm: Handle,
    keyval: c_int,
    attribute_val: *mut c_void,
    flag: *mut c_int,
) -> c_int {
    // SAFETY: the same contract.
    unsafe { PMPI_Attr_get(comm, keyval, attribute_val, flag) }
}
