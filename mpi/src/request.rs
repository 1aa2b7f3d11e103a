//! Completing requests: the `Wait*` and `Test*` families, `Request_free`,
//! `Request_get_status`; and what a status tells (`Get_count`).
//!
//! Every nonblocking operation is one entry of the request table
//! ([`ReqEntry`]): a dos [`DetachedRequest`] (its transfers, completed by
//! dos's engine), a [`ReqKind`] saying what status its completion yields,
//! and an optional [`After`] hook: work done once the transfers have
//! completed without error, before the status is returned (unpacking a
//! noncontiguous receive from its temporary, copying a reduction's result
//! back into a misaligned buffer) and which owns what must live until then
//! (temporaries, packed copies). Every `Wait*`/`Test*` form completes any
//! kind the same way, so point-to-point and nonblocking collective requests
//! mix in one array.
//!
//! Adding a kind of request (a one-sided request-based operation, an MPI-IO
//! one): start the operation as a `DetachedRequest` (or a completed one
//! with the outcome stored in `outcome`), insert a `ReqEntry` with a
//! `ReqKind` (a new variant if its status differs: one match arm in
//! `complete_raw` below) and an `after` hook for what it must do at the
//! end; nothing else here changes.
//!
//! A *compound* request ([`insert_compound`]) stands for several requests
//! of the table (the point-to-point transfers of an intercommunicator's
//! nonblocking collective, the agreement of `MPI_Comm_idup`): it is
//! complete once all of them are, which every `Wait*`/`Test*` form and
//! `MPI_Request_get_status` check without blocking in a `Test`. Its
//! [`After`] hook then runs (building the new communicator, folding a
//! reduction), outside the state's borrow as every hook: hooks may call
//! MPI (a user operation, an attribute copy callback).
//!
//! `MPI_Waitall` completes the requests in order; those that have completed
//! and have no hook are completed together in one visit to the state (after
//! the first pending one has been waited for, the rest that finished
//! meanwhile too), and leave the table without being moved out of it.
//!
//! Progress is dos's weak progress: transfers and the schedules of
//! nonblocking collectives advance inside MPI calls (any wait, test, send,
//! probe or collective), not in the background while the program computes
//! outside MPI (dos's RPC thread moves bytes already in flight, but never
//! runs a schedule's next step).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

use dos::detached::DetachedRequest;

use crate::abi::{self, Handle, Status};
use crate::datatype;
use crate::error::{err, Error, R};
use crate::p2p::{recv_outcome, set_status};
use crate::persist::{self, around, is_persistent};
use crate::ptr::{out, read};
use crate::state::{self, ReqEntry, ReqKind};

/// Work a request does when its transfers have completed without error
/// (see the [module docs](self)), given the status so far; dropped unrun if
/// they failed or the request is withdrawn at `MPI_Finalize`. What it
/// captures lives until then.
pub(crate) type After = Box<dyn FnOnce(&Status) -> R<()>>;

thread_local! {
    /// The parts of each compound request (see the [module docs](self)).
    static PARTS: RefCell<HashMap<Handle, Vec<Handle>>> = RefCell::new(HashMap::new());
}

/// How many compound requests have parts pending (the fast path: none).
static COMPOUNDS: AtomicUsize = AtomicUsize::new(0);

/// Stores a compound request: complete when every request of `parts` (of
/// the table, not persistent) is; then `after` runs. Writes its handle to
/// `request`. The parts must not be given to the program.
///
/// # Safety
/// `request` null or valid for a write.
pub(crate) unsafe fn insert_compound(
    parts: Vec<Handle>,
    kind: ReqKind,
    comm: Handle,
    after: After,
    request: *mut Handle,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    let h = state::with(|st| {
        Ok(st.reqs.insert(ReqEntry {
            raw: DetachedRequest::completed(),
            kind,
            comm,
            outcome: None,
            after: Some(after),
        }))
    })?;
    let parts: Vec<Handle> = parts
        .into_iter()
        .filter(|&p| p != abi::REQUEST_NULL)
        .collect();
    if !parts.is_empty() {
        PARTS.with(|m| m.borrow_mut().insert(h, parts));
        COMPOUNDS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: checked not null; the caller's contract.
    unsafe { out(request, h, "request") }
}

/// True if `h` is a compound request whose parts are pending.
#[inline]
fn is_compound(h: Handle) -> bool {
    COMPOUNDS.load(Ordering::Relaxed) != 0 && PARTS.with(|m| m.borrow().contains_key(&h))
}

/// `hs` with each compound request replaced by its pending parts.
fn expand(hs: &[Handle]) -> Vec<Handle> {
    if COMPOUNDS.load(Ordering::Relaxed) == 0 {
        return hs.to_vec();
    }
    let mut out = Vec::with_capacity(hs.len());
    for &h in hs {
        match PARTS.with(|m| m.borrow().get(&h).cloned()) {
            Some(p) => out.extend(expand(&p)),
            None => out.push(h),
        }
    }
    out
}

/// Completes the parts of compound request `h` if they have all completed
/// (`wait`: waiting for them); true once `h` has no parts pending (then it
/// completes as any request with a hook: its hook runs, or the error of a
/// part is its outcome). True at once for any other request.
fn settle(h: Handle, wait: bool) -> R<bool> {
    if !is_compound(h) {
        return Ok(true);
    }
    if !wait {
        let parts = PARTS
            .with(|m| m.borrow().get(&h).cloned())
            .unwrap_or_default();
        for p in parts {
            if !settle(p, false)? {
                return Ok(false);
            }
            let ready = state::with(|st| Ok(st.reqs.get(&p).is_none_or(done)))?;
            if !ready {
                progress()?;
                if !state::with(|st| Ok(st.reqs.get(&p).is_none_or(done)))? {
                    return Ok(false);
                }
            }
        }
    }
    let Some(mut parts) = PARTS.with(|m| m.borrow_mut().remove(&h)) else {
        // Settled meanwhile (by a hook that waited on it).
        return Ok(true);
    };
    COMPOUNDS.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: no statuses.
    let failed = unsafe { complete_list(&mut parts, std::ptr::null_mut()) };
    let failed = match failed {
        Ok(x) => x,
        Err(x) => Some(x),
    };
    if let Some(x) = failed {
        state::with(|st| {
            if let Some(e) = st.reqs.get_mut(&h) {
                e.after = None;
                let s = Status::new(abi::ANY_SOURCE, abi::ANY_TAG, x.class, 0);
                e.outcome = Some(Box::new((s, Some(x))));
            }
            Ok(())
        })?;
    }
    Ok(true)
}

/// Forgets every compound request's parts (`MPI_Finalize` withdraws the
/// requests themselves).
pub(crate) fn clear_compounds() {
    PARTS.with(|m| m.borrow_mut().clear());
    COMPOUNDS.store(0, Ordering::Relaxed);
}

/// Waits for `e` (at once if it has completed) and returns its status and
/// result, after running its [`After`] hook.
fn complete(mut e: ReqEntry) -> (Status, Option<Error>) {
    let after = e.after.take();
    let (st, x) = complete_raw(e);
    match (after, x) {
        (Some(f), None) => match f(&st) {
            Ok(()) => (st, None),
            Err(x) => {
                let mut st = st;
                st.MPI_ERROR = x.class;
                (st, Some(x))
            }
        },
        (_, x) => (st, x),
    }
}

/// [`complete`] without the hook.
fn complete_raw(e: ReqEntry) -> (Status, Option<Error>) {
    if let Some(o) = e.outcome {
        return *o;
    }
    if let ReqKind::ProcNull = e.kind {
        return (Status::proc_null(), None);
    }
    outcome_of(e.kind, e.raw.wait())
}

/// True if `e` has completed (without making progress).
fn done(e: &ReqEntry) -> bool {
    e.outcome.is_some() || e.raw.is_done()
}

/// Completes request `h` inside the state's borrow if that is safe: it has
/// completed already and has no [`After`] hook (so nothing runs that could
/// call MPI: no progress, no user function). One lookup, no move of the
/// entry to a caller; `None` (the request untouched) otherwise.
#[inline]
fn quick(st: &mut state::State, h: Handle) -> Option<(Status, Option<Error>)> {
    let e = st.reqs.get_mut(&h)?;
    if e.after.is_some() {
        return None;
    }
    let r = match e.outcome.take() {
        Some(o) => *o,
        None => {
            let r = e.raw.try_take()?;
            outcome_of(e.kind, r)
        }
    };
    st.reqs.discard(&h);
    Some(r)
}

/// The status and error of a request of `kind` whose transfers ended with `r`.
#[inline]
fn outcome_of(kind: ReqKind, r: dos::Result<dos::Status>) -> (Status, Option<Error>) {
    match (kind, r) {
        (ReqKind::ProcNull, _) => (Status::proc_null(), None),
        (ReqKind::Send | ReqKind::Coll, Ok(_)) => (Status::empty(), None),
        (ReqKind::Send | ReqKind::Coll, Err(x)) => {
            let x = Error::from(x);
            (
                Status::new(abi::ANY_SOURCE, abi::ANY_TAG, x.class, 0),
                Some(x),
            )
        }
        (ReqKind::Recv { source, tag }, r) => recv_outcome(r, source, tag),
    }
}

/// Makes progress once, outside the state's borrow: progress may run a
/// nonblocking collective's next step, hence a user operation, which may
/// call MPI.
fn progress() -> R<()> {
    state::comm(abi::COMM_WORLD)?.progress();
    Ok(())
}

/// Takes request `h` out of the table if it has completed, without making
/// progress (`wait`: takes it anyway; the caller waits for it).
fn take_now(h: Handle, wait: bool) -> R<Option<ReqEntry>> {
    if !settle(h, wait)? {
        return Ok(None);
    }
    state::with(|st| {
        let e = st
            .reqs
            .get(&h)
            .ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}")))?;
        if wait || done(e) {
            Ok(st.reqs.remove(&h))
        } else {
            Ok(None)
        }
    })
}

/// Takes request `h` out of the table if it has completed, after one
/// progress pass if it had not (`wait`: waits for it).
fn take(h: Handle, wait: bool) -> R<Option<ReqEntry>> {
    if let Some(e) = take_now(h, wait)? {
        return Ok(Some(e));
    }
    progress()?;
    take_now(h, false)
}

/// Blocks until one of the requests `hs` may have completed. Their dos
/// requests leave the table while it waits (placeholders stand in), so that
/// the state is not borrowed while the engine runs schedules and user
/// operations.
fn block_any(hs: &[Handle]) -> R<()> {
    let hs = &expand(hs)[..];
    let raws: Vec<(Handle, DetachedRequest)> = state::with(|st| {
        Ok(hs
            .iter()
            .filter_map(|&h| {
                let e = st.reqs.get_mut(&h)?;
                Some((
                    h,
                    std::mem::replace(&mut e.raw, DetachedRequest::completed()),
                ))
            })
            .collect())
    })?;
    let refs: Vec<&DetachedRequest> = raws.iter().map(|(_, r)| r).collect();
    let r = DetachedRequest::wait_any_done(&refs).map_err(Error::from);
    drop(refs);
    state::with(|st| {
        for (h, raw) in raws {
            match st.reqs.get_mut(&h) {
                Some(e) => e.raw = raw,
                // Freed meanwhile (by a user operation): let it finish in the background.
                None => st.detached.push((raw, Vec::new())),
            }
        }
        Ok(())
    })?;
    r
}

/// The requests array of `count` handles.
///
/// # Safety
/// Unless null, `p` valid for `count` handles.
unsafe fn handles<'a>(p: *mut Handle, count: c_int) -> R<&'a mut [Handle]> {
    let n = datatype::count(count)?;
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(err(abi::ERR_ARG, "null array of requests"));
    }
    // SAFETY: non-null, `n` handles by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// Stores status `i` of an array (unless `MPI_STATUSES_IGNORE`).
///
/// # Safety
/// Unless null, `p` valid for at least `i + 1` statuses.
unsafe fn set_nth(p: *mut Status, i: usize, s: Status) {
    if !p.is_null() {
        // SAFETY: the caller's contract.
        unsafe { p.add(i).write(s) };
    }
}

/// Completes request `*req` (waiting, or only if done), sets it to
/// `MPI_REQUEST_NULL`; `None` if `wait` is false and it is not done.
///
/// # Safety
/// `req` valid for a handle.
unsafe fn finish_one(req: *mut Handle, wait: bool) -> R<Option<(Status, Option<Error>)>> {
    // SAFETY: the caller's contract.
    let h = unsafe { read(req, "request")? };
    if h == abi::REQUEST_NULL {
        return Ok(Some((Status::empty(), None)));
    }
    let Some(e) = take(h, wait)? else {
        return Ok(None);
    };
    let r = complete(e);
    // SAFETY: the caller's contract.
    unsafe { out(req, abi::REQUEST_NULL, "request")? };
    Ok(Some(r))
}

mpi_fn! {
    /// Waits for a request; sets it to `MPI_REQUEST_NULL`.
    fn MPI_Wait / PMPI_Wait(request: *mut Handle, status: *mut Status) on abi::COMM_WORLD => {
        let h = read(request, "request")?;
        if !is_persistent(h) && h != abi::REQUEST_NULL {
            // Completed already: in one visit to the state; else waited
            // for in the table.
            if let Some((st, e)) = state::with(|st| Ok(quick(st, h)))? {
                *request = abi::REQUEST_NULL;
                set_status(status, st);
                return e.map_or(Ok(()), Err);
            }
            let mut one = [h];
            let mut st = Status::empty();
            let r = complete_list(&mut one, &mut st);
            *request = one[0];
            let e = r?;
            set_status(status, st);
            return e.map_or(Ok(()), Err);
        }
        let mut one = [h];
        let r = around(&mut one, |a| finish_one(a.as_mut_ptr(), true));
        out(request, one[0], "request")?;
        let (st, e) = r?.unwrap_or((Status::empty(), None));
        set_status(status, st);
        e.map_or(Ok(()), Err)
    }
}

mpi_fn! {
    /// Tells whether a request has completed (then as `MPI_Wait`).
    fn MPI_Test / PMPI_Test(request: *mut Handle, flag: *mut c_int, status: *mut Status) on abi::COMM_WORLD => {
        if flag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for flag"));
        }
        let h = read(request, "request")?;
        if !is_persistent(h) && h != abi::REQUEST_NULL {
            // Completed already: in one visit to the state.
            if let Some((st, e)) = state::with(|st| Ok(quick(st, h)))? {
                *request = abi::REQUEST_NULL;
                out(flag, 1, "flag")?;
                set_status(status, st);
                return e.map_or(Ok(()), Err);
            }
        }
        let mut one = [h];
        let r = around(&mut one, |a| finish_one(a.as_mut_ptr(), false));
        out(request, one[0], "request")?;
        match r? {
            None => out(flag, 0, "flag"),
            Some((st, e)) => {
                out(flag, 1, "flag")?;
                set_status(status, st);
                e.map_or(Ok(()), Err)
            }
        }
    }
}

/// Completes all of `reqs` (they have completed, or `wait`); fills the
/// statuses; `MPI_ERR_IN_STATUS` if one failed (its own class when the
/// statuses are ignored).
///
/// The entries stay in the table: one that has completed is completed there
/// ([`quick`]); for one that has not, only its dos request leaves the table
/// while this waits for it outside the state's borrow (progress may run a
/// nonblocking collective's user operation, which may call MPI), and the
/// entry is completed when it is back. Entries with an [`After`] hook are
/// taken out and completed as before.
///
/// # Safety
/// `statuses` null or valid for `reqs.len()` statuses.
unsafe fn complete_all(reqs: &mut [Handle], statuses: *mut Status) -> R<()> {
    // SAFETY: the caller's contract.
    match unsafe { complete_list(reqs, statuses)? } {
        None => Ok(()),
        Some(e) if statuses.is_null() => Err(e),
        Some(e) => Err(err(
            abi::ERR_IN_STATUS,
            format!("a request failed: {}", e.msg),
        )),
    }
}

/// [`complete_all`] but for its result: `Err` for an invalid handle (no
/// request completed), else the first request's error, if one failed.
///
/// # Safety
/// As [`complete_all`].
unsafe fn complete_list(reqs: &mut [Handle], statuses: *mut Status) -> R<Option<Error>> {
    let mut first: Option<Error> = None;
    let mut note = |i: usize, s: Status, e: Option<Error>| {
        // SAFETY: the caller's contract.
        unsafe { set_nth(statuses, i, s) };
        if let Some(e) = e {
            first.get_or_insert(e);
        }
    };
    // An invalid handle fails the call before any request is completed;
    // then those at the front that have completed and have no hook are
    // completed in the same visit to the state.
    let mut i = state::with(|st| {
        if let Some(h) = reqs
            .iter()
            .find(|&&h| h != abi::REQUEST_NULL && st.reqs.get(&h).is_none())
        {
            return Err(err(
                abi::ERR_REQUEST,
                format!("invalid request handle {h:#x}"),
            ));
        }
        Ok(batch(st, reqs, 0, &mut note))
    })?;
    while i < reqs.len() {
        let h = reqs[i];
        if h == abi::REQUEST_NULL {
            note(i, Status::empty(), None);
            i += 1;
            continue;
        }
        settle(h, true)?;
        loop {
            // Completed already (the common case once a first wait has
            // made progress for all): in one visit; else its dos request
            // out, to wait for.
            let step = state::with(|st| {
                if let Some(r) = quick(st, h) {
                    return Ok(Step::Done(r));
                }
                Ok(match st.reqs.get_mut(&h) {
                    // The same handle twice (erroneous): done at its first.
                    None => Step::Done((Status::empty(), None)),
                    Some(e) if e.after.is_some() => Step::Hook(st.reqs.remove(&h)),
                    Some(e) => {
                        Step::Wait(std::mem::replace(&mut e.raw, DetachedRequest::completed()))
                    }
                })
            })?;
            match step {
                Step::Done((s, e)) => {
                    note(i, s, e);
                    break;
                }
                Step::Hook(e) => {
                    let (s, e) = e.map_or((Status::empty(), None), complete);
                    note(i, s, e);
                    break;
                }
                Step::Wait(raw) => {
                    let failed = raw.wait_done().is_err();
                    state::with(|st| {
                        match st.reqs.get_mut(&h) {
                            Some(e) => e.raw = raw,
                            // Freed meanwhile (by a user operation): let it
                            // finish in the background.
                            None => st.detached.push((raw, Vec::new())),
                        }
                        Ok(())
                    })?;
                    if failed {
                        // It will not complete (a peer failed): completed as
                        // the general path does, which reports the error.
                        let e = state::with(|st| Ok(st.reqs.remove(&h)))?;
                        let (s, e) = e.map_or((Status::empty(), None), complete);
                        note(i, s, e);
                        break;
                    }
                    // Complete now: the next turn takes it.
                }
            }
        }
        reqs[i] = abi::REQUEST_NULL;
        i += 1;
        if i < reqs.len() {
            // The wait above made progress for the others too: those that
            // completed meanwhile, in one visit.
            i = state::with(|st| Ok(batch(st, reqs, i, &mut note)))?;
        }
    }
    Ok(first)
}

/// Completes `reqs[from..]` in order, inside the state's borrow, as long as
/// each has completed and has no hook ([`quick`]), and none is compound
/// (none is while no compound request is pending); each is noted and set
/// to `MPI_REQUEST_NULL`. Returns the index of the first one left.
fn batch(
    st: &mut state::State,
    reqs: &mut [Handle],
    from: usize,
    note: &mut impl FnMut(usize, Status, Option<Error>),
) -> usize {
    if COMPOUNDS.load(Ordering::Relaxed) != 0 {
        return from;
    }
    let mut i = from;
    while let Some(&h) = reqs.get(i) {
        if h == abi::REQUEST_NULL {
            note(i, Status::empty(), None);
        } else {
            let Some((s, e)) = quick(st, h) else {
                break;
            };
            note(i, s, e);
            reqs[i] = abi::REQUEST_NULL;
        }
        i += 1;
    }
    i
}

/// What [`complete_all`] does next with one request.
enum Step {
    /// Completed, with its status and error.
    Done((Status, Option<Error>)),
    /// One with a hook, taken out of the table (`None`: gone meanwhile).
    Hook(Option<ReqEntry>),
    /// Not complete: its dos request, to wait for.
    Wait(DetachedRequest),
}

mpi_fn! {
    /// Waits for every request.
    fn MPI_Waitall / PMPI_Waitall(count: c_int, array_of_requests: *mut Handle, array_of_statuses: *mut Status) on abi::COMM_WORLD => {
        let reqs = handles(array_of_requests, count)?;
        around(reqs, |reqs| complete_all(reqs, array_of_statuses))
    }
}

mpi_fn! {
    /// Tells whether every request has completed (then as `MPI_Waitall`).
    fn MPI_Testall / PMPI_Testall(count: c_int, array_of_requests: *mut Handle, flag: *mut c_int, array_of_statuses: *mut Status) on abi::COMM_WORLD => {
        if flag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for flag"));
        }
        let reqs = handles(array_of_requests, count)?;
        around(reqs, |reqs| testall(reqs, flag, array_of_statuses))
    }
}

/// `MPI_Testall` on requests that are not persistent.
///
/// # Safety
/// `flag` valid for an int, `array_of_statuses` as for [`complete_all`].
unsafe fn testall(reqs: &mut [Handle], flag: *mut c_int, array_of_statuses: *mut Status) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let check = |reqs: &[Handle]| {
            for &h in reqs.iter().filter(|&&h| h != abi::REQUEST_NULL) {
                if !settle(h, false)? {
                    return Ok(false);
                }
            }
            state::with(|st| {
                let mut all = true;
                for h in reqs.iter().filter(|&&h| h != abi::REQUEST_NULL) {
                    let e = st.reqs.get(h).ok_or_else(|| {
                        err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}"))
                    })?;
                    all &= done(e);
                }
                Ok(all)
            })
        };
        let mut all = check(reqs)?;
        if !all {
            progress()?;
            all = check(reqs)?;
        }
        out(flag, all as c_int, "flag")?;
        if all {
            complete_all(reqs, array_of_statuses)?;
        }
        Ok(())
    }
}

/// A completed request of an array: its index, status and error.
type Completed = (usize, Status, Option<Error>);

/// The first completed request of `reqs` (`wait`: blocks until one is);
/// `Ok(None)`: none active (`MPI_UNDEFINED`); `Err` as the request failed.
fn any_done(reqs: &mut [Handle], wait: bool) -> R<Option<Option<Completed>>> {
    loop {
        let active: Vec<Handle> = reqs
            .iter()
            .copied()
            .filter(|&h| h != abi::REQUEST_NULL)
            .collect();
        if active.is_empty() {
            return Ok(None);
        }
        for pass in 0..2 {
            if pass == 1 {
                progress()?;
            }
            for (i, h) in reqs.iter_mut().enumerate() {
                if *h == abi::REQUEST_NULL {
                    continue;
                }
                if let Some(e) = take_now(*h, false)? {
                    *h = abi::REQUEST_NULL;
                    let (st, x) = complete(e);
                    return Ok(Some(Some((i, st, x))));
                }
            }
        }
        if !wait {
            return Ok(Some(None));
        }
        block_any(&active)?;
    }
}

mpi_fn! {
    /// Waits until one request completes; its index (or `MPI_UNDEFINED`).
    fn MPI_Waitany / PMPI_Waitany(count: c_int, array_of_requests: *mut Handle, index: *mut c_int, status: *mut Status) on abi::COMM_WORLD => {
        if index.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for index"));
        }
        let reqs = handles(array_of_requests, count)?;
        match around(reqs, |reqs| any_done(reqs, true))? {
            None | Some(None) => {
                out(index, abi::UNDEFINED, "index")?;
                set_status(status, Status::empty());
                Ok(())
            }
            Some(Some((i, st, e))) => {
                out(index, i as c_int, "index")?;
                set_status(status, st);
                e.map_or(Ok(()), Err)
            }
        }
    }
}

mpi_fn! {
    /// Tells whether one request has completed (then as `MPI_Waitany`).
    fn MPI_Testany / PMPI_Testany(count: c_int, array_of_requests: *mut Handle, index: *mut c_int, flag: *mut c_int, status: *mut Status) on abi::COMM_WORLD => {
        if index.is_null() || flag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for index or flag"));
        }
        let reqs = handles(array_of_requests, count)?;
        match around(reqs, |reqs| any_done(reqs, false))? {
            None => {
                out(flag, 1, "flag")?;
                out(index, abi::UNDEFINED, "index")?;
                set_status(status, Status::empty());
                Ok(())
            }
            Some(None) => {
                out(flag, 0, "flag")?;
                out(index, abi::UNDEFINED, "index")
            }
            Some(Some((i, st, e))) => {
                out(flag, 1, "flag")?;
                out(index, i as c_int, "index")?;
                set_status(status, st);
                e.map_or(Ok(()), Err)
            }
        }
    }
}

/// Completes every completed request of `reqs` (`wait`: at least one).
///
/// # Safety
/// `outcount` valid for an int, `indices` and `statuses` for `reqs.len()` entries (or null statuses).
unsafe fn some(
    reqs: &mut [Handle],
    wait: bool,
    outcount: *mut c_int,
    indices: *mut c_int,
    statuses: *mut Status,
) -> R<()> {
    if outcount.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for outcount"));
    }
    loop {
        let active: Vec<Handle> = reqs
            .iter()
            .copied()
            .filter(|&h| h != abi::REQUEST_NULL)
            .collect();
        if active.is_empty() {
            // SAFETY: the caller's contract.
            return unsafe { out(outcount, abi::UNDEFINED, "outcount") };
        }
        let mut n = 0usize;
        let mut first: Option<Error> = None;
        progress()?;
        for (i, h) in reqs.iter_mut().enumerate() {
            if *h == abi::REQUEST_NULL {
                continue;
            }
            if let Some(e) = take_now(*h, false)? {
                *h = abi::REQUEST_NULL;
                let (st, x) = complete(e);
                if indices.is_null() {
                    return Err(err(abi::ERR_ARG, "null array of indices"));
                }
                // SAFETY: the caller's contract: `indices` holds `reqs.len()` ints.
                unsafe { indices.add(n).write(i as c_int) };
                // SAFETY: as above for the statuses.
                unsafe { set_nth(statuses, n, st) };
                n += 1;
                if let Some(x) = x {
                    first.get_or_insert(x);
                }
            }
        }
        if n > 0 || !wait {
            // SAFETY: the caller's contract.
            unsafe { out(outcount, n as c_int, "outcount")? };
            return match first {
                None => Ok(()),
                Some(x) if statuses.is_null() => Err(x),
                Some(x) => Err(err(
                    abi::ERR_IN_STATUS,
                    format!("a request failed: {}", x.msg),
                )),
            };
        }
        block_any(&active)?;
    }
}

mpi_fn! {
    /// Waits until at least one request completes; completes all that have.
    fn MPI_Waitsome / PMPI_Waitsome(incount: c_int, array_of_requests: *mut Handle, outcount: *mut c_int, array_of_indices: *mut c_int, array_of_statuses: *mut Status) on abi::COMM_WORLD => {
        let reqs = handles(array_of_requests, incount)?;
        around(reqs, |reqs| some(reqs, true, outcount, array_of_indices, array_of_statuses))
    }
}

mpi_fn! {
    /// Completes every request that has completed (perhaps none).
    fn MPI_Testsome / PMPI_Testsome(incount: c_int, array_of_requests: *mut Handle, outcount: *mut c_int, array_of_indices: *mut c_int, array_of_statuses: *mut Status) on abi::COMM_WORLD => {
        let reqs = handles(array_of_requests, incount)?;
        around(reqs, |reqs| some(reqs, false, outcount, array_of_indices, array_of_statuses))
    }
}

mpi_fn! {
    /// Gives up the handle; an active request still completes (in the background).
    fn MPI_Request_free / PMPI_Request_free(request: *mut Handle) on abi::COMM_WORLD => {
        let h = read(request, "request")?;
        if h == abi::REQUEST_NULL {
            return Err(err(abi::ERR_REQUEST, "MPI_REQUEST_NULL cannot be freed"));
        }
        let h = if is_persistent(h) {
            match persist::remove(h)? {
                None => return out(request, abi::REQUEST_NULL, "request"),
                Some(inner) => inner,
            }
        } else {
            h
        };
        // A compound request whose parts have completed becomes an
        // ordinary one with a hook.
        settle(h, false)?;
        let hook = state::with(|st| {
            let e = st.reqs.get(&h).ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {h:#x}")))?;
            let complete = e.outcome.is_some() || (e.raw.is_done() && !is_compound(h));
            if matches!(e.kind, ReqKind::Coll) && e.outcome.is_none() {
                // MPI-4 6.12: freeing a nonblocking collective's request is
                // erroneous, refused; but one the program has seen complete
                // (`MPI_Request_get_status`, as MPICH's tests do) is freed.
                return Err(err(abi::ERR_REQUEST, "the request of a nonblocking collective cannot be freed unless MPI_Request_get_status has seen it complete: complete it"));
            }
            if e.after.is_some() && !complete {
                return Err(err(abi::ERR_UNSUPPORTED_OPERATION, "freeing an active request of a noncontiguous datatype is not supported: complete it"));
            }
            let e = st.reqs.remove(&h).expect("present");
            if e.after.is_some() {
                // Done already: its hook (an unpack) runs below, outside
                // the state's borrow.
                return Ok(Some(e));
            }
            match e.kind {
                ReqKind::Recv { .. } => st.freed_recvs.push(e.raw),
                _ => st.detached.push((e.raw, Vec::new())),
            }
            st.reap();
            Ok(None)
        })?;
        if let Some(e) = hook {
            let _ = complete(e);
        }
        out(request, abi::REQUEST_NULL, "request")
    }
}

mpi_fn! {
    /// Whether a request has completed, without freeing it.
    fn MPI_Request_get_status / PMPI_Request_get_status(request: Handle, flag: *mut c_int, status: *mut Status) on abi::COMM_WORLD => {
        if flag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for flag"));
        }
        let request = persist::stand_in(request)?.unwrap_or(abi::REQUEST_NULL);
        if request == abi::REQUEST_NULL {
            out(flag, 1, "flag")?;
            set_status(status, Status::empty());
            return Ok(());
        }
        progress()?;
        if !settle(request, false)? {
            return out(flag, 0, "flag");
        }
        // Completed and not seen so far: its hook runs outside the state's
        // borrow (it may call MPI), the outcome is kept for the completion.
        let fresh = state::with(|st| {
            let e = st.reqs.get_mut(&request).ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {request:#x}")))?;
            if e.outcome.is_none() && e.raw.is_done() {
                let raw = std::mem::replace(&mut e.raw, DetachedRequest::completed());
                return Ok(Some(ReqEntry { raw, kind: e.kind, comm: e.comm, outcome: None, after: e.after.take() }));
            }
            Ok(None)
        })?;
        if let Some(e) = fresh {
            let o = complete(e);
            state::with(|st| {
                if let Some(e) = st.reqs.get_mut(&request) {
                    e.outcome = Some(Box::new(o));
                }
                Ok(())
            })?;
        }
        let st = state::with(|st| {
            let e = st.reqs.get(&request).ok_or_else(|| err(abi::ERR_REQUEST, format!("invalid request handle {request:#x}")))?;
            Ok(e.outcome.as_ref().map(|o| o.0))
        })?;
        out(flag, st.is_some() as c_int, "flag")?;
        if let Some(s) = st {
            set_status(status, s);
        }
        Ok(())
    }
}

mpi_fn! {
    /// Whether the request of a status was cancelled (`MPI_Cancel` of a receive).
    fn MPI_Test_cancelled / PMPI_Test_cancelled(status: *const Status, flag: *mut c_int) on abi::COMM_WORLD => {
        let s = read(status, "status")?;
        out(flag, s.cancelled() as c_int, "flag")
    }
}

/// Whole elements of `dt` in the bytes a status reports, or `MPI_UNDEFINED`.
///
/// # Safety
/// `status` valid for a read.
unsafe fn elements(status: *const Status, dt: Handle) -> R<i64> {
    // SAFETY: the caller's contract.
    let s = unsafe { read(status, "status")? };
    let t = datatype::get(dt)?;
    let b = s.bytes();
    if t.size == 0 {
        return Ok(0);
    }
    Ok(if b % t.size as u64 != 0 {
        abi::UNDEFINED as i64
    } else {
        (b / t.size as u64) as i64
    })
}

fn to_int(n: i64) -> c_int {
    c_int::try_from(n).unwrap_or(abi::UNDEFINED)
}

mpi_fn! {
    /// The number of elements of `datatype` received (`MPI_UNDEFINED` if not whole).
    fn MPI_Get_count / PMPI_Get_count(status: *const Status, datatype: Handle, count: *mut c_int) on abi::COMM_WORLD => {
        let n = elements(status, datatype)?;
        out(count, to_int(n), "count")
    }
}

mpi_fn! {
    /// `MPI_Get_count` with a 64-bit count.
    fn MPI_Get_count_c / PMPI_Get_count_c(status: *const Status, datatype: Handle, count: *mut i64) on abi::COMM_WORLD => {
        let n = elements(status, datatype)?;
        out(count, n, "count")
    }
}

mpi_fn! {
    /// The number of basic elements received (`MPI_UNDEFINED` if not whole).
    fn MPI_Get_elements / PMPI_Get_elements(status: *const Status, datatype: Handle, count: *mut c_int) on abi::COMM_WORLD => {
        let n = datatype::basic_elements(read(status, "status")?.bytes(), datatype)?;
        out(count, to_int(n), "count")
    }
}

mpi_fn! {
    /// The size in bytes of a datatype.
    fn MPI_Type_size / PMPI_Type_size(datatype: Handle, size: *mut c_int) on abi::COMM_WORLD => {
        let t = datatype::get(datatype)?;
        // Beyond an int: MPI_UNDEFINED, as the standard says.
        out(size, c_int::try_from(t.size).unwrap_or(abi::UNDEFINED), "size")
    }
}

mpi_fn! {
    /// The size in bytes of a datatype, 64-bit.
    fn MPI_Type_size_c / PMPI_Type_size_c(datatype: Handle, size: *mut i64) on abi::COMM_WORLD => {
        let t = datatype::get(datatype)?;
        out(size, t.size as i64, "size")
    }
}

mpi_fn! {
    /// Lower bound and extent of a datatype.
    fn MPI_Type_get_extent / PMPI_Type_get_extent(datatype: Handle, lb: *mut isize, extent: *mut isize) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(lb, t.lb, "lb")?;
        out(extent, t.extent(), "extent")
    }
}

/// Stores a request that is complete already (the transfer was done in the
/// call, as one-sided `R*` operations and MPI-IO's nonblocking forms do) and
/// writes its handle to `request`; `status`, if any, is what `Wait`/`Test`
/// report for it.
///
/// # Safety
/// `request` null or valid for a write.
pub(crate) unsafe fn insert_completed(status: Option<Status>, request: *mut Handle) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    let h = state::with(|st| {
        Ok(st.reqs.insert(ReqEntry {
            raw: DetachedRequest::completed(),
            kind: ReqKind::Send,
            comm: abi::COMM_WORLD,
            outcome: status.map(|s| Box::new((s, None))),
            after: None,
        }))
    })?;
    // SAFETY: checked not null; the caller's contract.
    unsafe { out(request, h, "request") }
}
