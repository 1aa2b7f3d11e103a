//! The target side of one-sided operations that arrive as active messages,
//! and the origin's table of replies it waits for.
//!
//! A window registers its memory here under its id; the handlers check every
//! access against that registration, so a message naming a window that is
//! gone, or reaching outside one, touches nothing (it is counted, and the
//! origin's next flush reports it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;

use super::mapped::WinHeader;
use super::wire::{self, Reader, Writer};
use crate::engine::am::{self, Hooks, Ids, Service};
use crate::engine::Engine;
use crate::op::{self, Op};
use crate::{Error, Result};

/// Memory a window exposes on this rank.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exposed {
    pub(crate) data: *mut u8,
    pub(crate) len: usize,
    pub(crate) header: *const WinHeader,
}

/// A reply an origin waits for.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    /// Where GETRESP bytes go, and how many fit.
    pub(crate) dst: Option<(*mut u8, usize)>,
    /// Set when the reply arrived.
    pub(crate) status: Option<u8>,
    /// ATOMRESP's old value, or FLUSHED's count of refused operations.
    pub(crate) value: u64,
    /// The request this reply completes a part of (nonblocking operations):
    /// its slot and generation, and where an atomic's old value goes.
    pub(crate) req: Option<(u32, u32, Option<*mut u64>)>,
    /// What to report for a refused reply.
    pub(crate) refused: Option<(usize, usize, usize, usize)>,
}

/// One-sided state of an engine.
#[derive(Debug, Default)]
pub(crate) struct Table {
    wins: HashMap<u32, Exposed>,
    replies: HashMap<u32, Reply>,
    next_tok: u32,
    /// Operations refused since the last FLUSH from each origin (world rank).
    refused: HashMap<usize, u32>,
    /// RDMA puts of this rank in flight: target (world rank) and the copy of
    /// the bytes the transport reads, by token.
    lent: HashMap<u64, (usize, Vec<u8>)>,
    /// How many of them go to each world rank.
    in_flight: HashMap<usize, usize>,
    next_put: u64,
    /// Post/start notifications received ([`super::pscw`]).
    pub(crate) sync: super::pscw::Arrivals,
}

/// The bit that marks the token of an RDMA put from a bounce buffer: its
/// `SendDone` belongs to this table ([`Table::put_done`]), not to a request
/// (the engine hands such tokens to the services' `send_done` hooks).
pub(crate) const PUT_TOKEN: u64 = am::SERVICE_TOKEN;

/// One-sided operations as they register with the engine: the RMA block of
/// active-message ids, and hooks for abandoned requests and finished loans.
pub(crate) static SERVICE: Service = Service {
    name: "rma",
    am: Some((
        Ids {
            first: wire::FIRST_ID,
            last: wire::LAST_ID,
        },
        on_am,
    )),
    state: || Box::new(RefCell::new(Table::default())),
    hooks: Hooks {
        // Replies not yet in will find no one to write to.
        abandon: Some(|eng, id| eng.rma().borrow_mut().forget_request(id)),
        send_done: Some(|eng, token| {
            if token & PUT_TOKEN != 0 {
                eng.rma().borrow_mut().put_done(token)
            }
        }),
        ..Hooks::NONE
    },
};

const _: () = assert!(am::RMA.holds(Ids {
    first: wire::FIRST_ID,
    last: wire::LAST_ID,
}));

impl Engine {
    /// One-sided state: windows exposed by this rank, operations in flight.
    #[inline]
    pub(crate) fn rma(&self) -> &RefCell<Table> {
        self.service(&SERVICE)
    }
}

impl Table {
    pub(crate) fn expose(&mut self, id: u32, e: Exposed) {
        self.wins.insert(id, e);
    }

    pub(crate) fn withdraw(&mut self, id: u32) {
        self.wins.remove(&id);
        self.sync.forget(id);
    }

    /// A token for a reply, registered with where its bytes go.
    pub(crate) fn expect(&mut self, dst: Option<(*mut u8, usize)>) -> u32 {
        self.next_tok = self.next_tok.wrapping_add(1);
        let t = self.next_tok;
        self.replies.insert(
            t,
            Reply {
                dst,
                ..Reply::default()
            },
        );
        t
    }

    /// A token whose reply completes part of request `req` (slot, generation,
    /// where an atomic's old value goes); `refused` is the error it reports
    /// if the target refuses: (rank, offset, len, window length).
    pub(crate) fn expect_for(
        &mut self,
        dst: Option<(*mut u8, usize)>,
        req: (u32, u32, Option<*mut u64>),
        refused: (usize, usize, usize, usize),
    ) -> u32 {
        let t = self.expect(dst);
        let r = self.replies.get_mut(&t).expect("just added");
        r.req = Some(req);
        r.refused = Some(refused);
        t
    }

    /// Forgets the replies of request slot `id` (given up: its buffers are
    /// about to be released).
    pub(crate) fn forget_request(&mut self, id: u32) {
        self.replies
            .retain(|_, r| !matches!(r.req, Some((i, _, _)) if i == id));
    }

    pub(crate) fn arrived(&self, tok: u32) -> bool {
        self.replies.get(&tok).is_some_and(|r| r.status.is_some())
    }

    /// Takes a reply that arrived (or forgets one given up on).
    pub(crate) fn take(&mut self, tok: u32) -> Option<Reply> {
        self.replies.remove(&tok)
    }

    /// The window memory for `len` bytes at `off`, if inside a live window.
    pub(crate) fn reach(&self, win: u32, off: u64, len: usize) -> Option<(Exposed, usize)> {
        let e = *self.wins.get(&win)?;
        let off = usize::try_from(off).ok()?;
        (off.checked_add(len)? <= e.len).then_some((e, off))
    }

    /// A fresh token for an RDMA put from a bounce buffer.
    pub(crate) fn put_token(&mut self) -> u64 {
        self.next_put = self.next_put.wrapping_add(1);
        PUT_TOKEN | (self.next_put & !PUT_TOKEN)
    }

    /// Keeps `buf`, which an RDMA put to `target` with `token` reads, until its
    /// `SendDone`.
    pub(crate) fn lend(&mut self, token: u64, target: usize, buf: Vec<u8>) {
        self.lent.insert(token, (target, buf));
        *self.in_flight.entry(target).or_default() += 1;
    }

    /// The put of `token` is done (at the target, or failed with its
    /// connection): its buffer goes.
    pub(crate) fn put_done(&mut self, token: u64) {
        let Some((target, _)) = self.lent.remove(&token) else {
            return;
        };
        if let Some(k) = self.in_flight.get_mut(&target) {
            *k -= 1;
            if *k == 0 {
                self.in_flight.remove(&target);
            }
        }
    }

    /// RDMA puts to world rank `target` not done yet.
    pub(crate) fn in_flight(&self, target: usize) -> usize {
        self.in_flight.get(&target).copied().unwrap_or(0)
    }

    fn refuse(&mut self, src: usize) {
        *self.refused.entry(src).or_default() += 1;
    }
}

/// Applies the puts of a PUTV body from world rank `src` to window `win`, in
/// order; those outside the window, and a malformed rest, are refused
/// (counted for the next FLUSH, whose reply must come whatever the body).
fn put_gathered(eng: &Engine, src: usize, win: u32, body: &[u8]) {
    let mut t = eng.rma().borrow_mut();
    for entry in wire::putv_entries(body, src) {
        let Ok((off, bytes)) = entry else {
            t.refuse(src);
            return;
        };
        match t.reach(win, off, bytes.len()) {
            // SAFETY: inside the exposed window, which its owner keeps valid
            // while exposed; `bytes` is a separate buffer.
            Some((e, o)) => unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), e.data.add(o), bytes.len())
            },
            None => t.refuse(src),
        }
    }
}

/// Handles one one-sided active message from world rank `src`.
pub(crate) fn on_am(eng: &Engine, src: usize, id: u8, data: &[u8]) -> Result<()> {
    let mut r = Reader::new(data, src);
    match id {
        wire::PUT => {
            let (win, off) = (r.u32()?, r.u64()?);
            let bytes = r.rest();
            let mut t = eng.rma().borrow_mut();
            match t.reach(win, off, bytes.len()) {
                // SAFETY: inside the exposed window, which its owner keeps
                // valid while exposed; `bytes` is a separate buffer.
                Some((e, o)) => unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), e.data.add(o), bytes.len())
                },
                None => t.refuse(src),
            }
            Ok(())
        }
        wire::PUTV => {
            let win = r.u32()?;
            put_gathered(eng, src, win, r.rest());
            Ok(())
        }
        wire::GET => {
            let (win, off, len, tok) = (r.u32()?, r.u64()?, r.u32()? as usize, r.u32()?);
            r.end()?;
            let reach = eng.rma().borrow().reach(win, off, len);
            let hdr = |st| Writer::<8>::default().u32(tok).u8(st);
            match reach {
                Some((e, o)) => {
                    // SAFETY: inside the exposed window (see PUT).
                    let bytes = unsafe { std::slice::from_raw_parts(e.data.add(o), len) };
                    eng.send_copy(src, wire::GETRESP, hdr(wire::OK).bytes(), bytes)
                }
                None => eng.send_copy(src, wire::GETRESP, hdr(wire::REFUSED).bytes(), &[]),
            }
        }
        wire::GETV => {
            let (win, tok) = (r.u32()?, r.u32()?);
            let cap = eng.max_am_to(src);
            let got = {
                let t = eng.rma().borrow();
                super::runs::gather_pieces(r.rest(), src, cap, |off, len| {
                    let (e, o) = t.reach(win, off, len)?;
                    // SAFETY: inside the exposed window (see PUT), read
                    // while the table is borrowed (no window goes away).
                    Some(unsafe { std::slice::from_raw_parts(e.data.add(o), len) })
                })
            };
            let hdr = |st| Writer::<8>::default().u32(tok).u8(st);
            match got {
                Some(bytes) => eng.send_copy(src, wire::GETRESP, hdr(wire::OK).bytes(), &bytes),
                None => eng.send_copy(src, wire::GETRESP, hdr(wire::REFUSED).bytes(), &[]),
            }
        }
        wire::GETRESP => {
            let (tok, status) = (r.u32()?, r.u8()?);
            let bytes = r.rest();
            let mut t = eng.rma().borrow_mut();
            if let Some(reply) = t.replies.get_mut(&tok) {
                if let (Some((dst, cap)), wire::OK) = (reply.dst, status) {
                    // SAFETY: the waiting origin keeps `dst` valid for `cap`
                    // bytes until it takes the reply (or forgets it).
                    unsafe {
                        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len().min(cap))
                    };
                }
                reply.status = Some(status);
            }
            complete_part(eng, t, tok);
            Ok(())
        }
        wire::ACC => {
            let (win, off, opc, ty) = (r.u32()?, r.u64()?, r.u8()?, r.u8()?);
            let bytes = r.rest();
            let mut t = eng.rma().borrow_mut();
            match t.reach(win, off, bytes.len()) {
                Some((e, o)) => {
                    // SAFETY: inside the exposed window; its header is mapped
                    // as long as the window is exposed.
                    let ok = unsafe { accumulate_coded(&*e.header, e.data.add(o), opc, ty, bytes) };
                    if !ok {
                        t.refuse(src);
                    }
                }
                None => t.refuse(src),
            }
            Ok(())
        }
        wire::ACCV => {
            let (win, opc, ty) = (r.u32()?, r.u8()?, r.u8()?);
            let mut t = eng.rma().borrow_mut();
            for entry in wire::putv_entries(r.rest(), src) {
                let Ok((off, bytes)) = entry else {
                    t.refuse(src);
                    break;
                };
                match t.reach(win, off, bytes.len()) {
                    Some((e, o)) => {
                        // SAFETY: as for ACC.
                        let ok =
                            unsafe { accumulate_coded(&*e.header, e.data.add(o), opc, ty, bytes) };
                        if !ok {
                            t.refuse(src);
                        }
                    }
                    None => t.refuse(src),
                }
            }
            Ok(())
        }
        wire::ATOMIC => {
            let (win, off, kind, tok, a, b) =
                (r.u32()?, r.u64()?, r.u8()?, r.u32()?, r.u64()?, r.u64()?);
            r.end()?;
            let old = {
                let t = eng.rma().borrow();
                atomic_at(&t, win, off, kind, a, b)
            };
            let w = match old {
                Some(v) => Writer::<16>::default().u32(tok).u8(wire::OK).u64(v),
                None => Writer::<16>::default().u32(tok).u8(wire::REFUSED).u64(0),
            };
            eng.send_copy(src, wire::ATOMRESP, w.bytes(), &[])
        }
        wire::ATOMRESP => {
            let (tok, status, old) = (r.u32()?, r.u8()?, r.u64()?);
            r.end()?;
            let mut t = eng.rma().borrow_mut();
            if let Some(reply) = t.replies.get_mut(&tok) {
                reply.status = Some(status);
                reply.value = old;
                if let (Some((_, _, Some(out))), wire::OK) = (reply.req, status) {
                    // SAFETY: the request's owner keeps `out` valid until the
                    // request completes (or is given up, which forgets this reply).
                    unsafe { out.write(old) };
                }
            }
            complete_part(eng, t, tok);
            Ok(())
        }
        wire::FLUSH => {
            let tok = r.u32()?;
            // The origin's last gathered puts may ride along.
            let rest = r.rest();
            if !rest.is_empty() {
                let mut r = Reader::new(rest, src);
                match r.u32() {
                    Ok(win) => put_gathered(eng, src, win, r.rest()),
                    Err(_) => eng.rma().borrow_mut().refuse(src),
                }
            }
            // Messages from one origin are handled in order: everything it
            // sent before this FLUSH is done.
            let refused = eng.rma().borrow_mut().refused.remove(&src).unwrap_or(0);
            let w = Writer::<8>::default().u32(tok).u32(refused);
            eng.send_copy(src, wire::FLUSHED, w.bytes(), &[])
        }
        wire::FLUSHED => {
            let (tok, refused) = (r.u32()?, r.u32()?);
            r.end()?;
            if let Some(reply) = eng.rma().borrow_mut().replies.get_mut(&tok) {
                reply.status = Some(wire::OK);
                reply.value = u64::from(refused);
            }
            Ok(())
        }
        wire::GETACC => super::accumulate::on_getacc(eng, src, data),
        wire::POST | wire::COMPLETE => {
            let win = r.u32()?;
            r.end()?;
            eng.rma().borrow_mut().sync.note(id, win, src);
            Ok(())
        }
        _ => Err(Error::Protocol {
            src,
            reason: "unknown one-sided message",
        }),
    }
}

/// If reply `tok` belongs to a nonblocking request, takes it and reports it
/// to the request.
fn complete_part(eng: &Engine, mut t: std::cell::RefMut<'_, Table>, tok: u32) {
    if !matches!(t.replies.get(&tok), Some(Reply { req: Some(_), .. })) {
        return;
    }
    let reply = t.take(tok).expect("present");
    drop(t);
    let (id, gen, _) = reply.req.expect("checked");
    let r = match (reply.status, reply.refused) {
        (Some(wire::OK), _) => Ok(()),
        (_, Some((rank, offset, len, window_len))) => Err(Error::RemoteAccess {
            rank,
            offset,
            len,
            window_len,
        }),
        _ => Err(Error::Protocol {
            src: usize::MAX,
            reason: "refused one-sided reply",
        }),
    };
    eng.reply_arrived(id, gen, r);
}

/// Offset that names the window's lock word instead of its data.
pub(crate) const LOCK_WORD: u64 = u64::MAX;

/// Runs atomic `kind` on the 8 bytes at `off` of window `win` (or on its
/// lock word); `None` if refused.
fn atomic_at(t: &Table, win: u32, off: u64, kind: u8, a: u64, b: u64) -> Option<u64> {
    let e = *t.wins.get(&win)?;
    let word: &AtomicU64 = if off == LOCK_WORD {
        // SAFETY: the header is mapped while the window is exposed.
        unsafe { &(*e.header).lock }
    } else {
        let (e, o) = t.reach(win, off, 8)?;
        // SAFETY: 8 bytes inside the window.
        let p = unsafe { e.data.add(o) };
        if p as usize % 8 != 0 {
            return None;
        }
        // SAFETY: aligned, inside the window, and window memory is accessed
        // with atomics by every rank that uses atomics on it.
        unsafe { AtomicU64::from_ptr(p.cast()) }
    };
    atomic_op(word, kind, a, b)
}

/// Applies atomic `kind` with operands `a` (add, swap or new value) and `b`
/// (expected value of a compare-and-swap); returns the old value.
pub(crate) fn atomic_op(word: &AtomicU64, kind: u8, a: u64, b: u64) -> Option<u64> {
    Some(match kind {
        wire::FETCH_ADD => word.fetch_add(a, Ordering::AcqRel),
        wire::SWAP => word.swap(a, Ordering::AcqRel),
        wire::COMPARE_SWAP => {
            match word.compare_exchange(b, a, Ordering::AcqRel, Ordering::Acquire) {
                Ok(v) | Err(v) => v,
            }
        }
        _ => return None,
    })
}

/// Element types that one-sided accumulate can carry between ranks.
pub trait AccType: Pod + Send + Sync {
    /// Code of the type on the wire.
    const CODE: u8;
}

/// Operations that one-sided accumulate can carry between ranks.
pub trait AccOp: Copy {
    /// Code of the operation on the wire.
    const CODE: u8;
}

macro_rules! codes {
    ($tr:ident: $($t:ty = $c:expr),*) => {$(impl $tr for $t { const CODE: u8 = $c; })*};
}
codes!(AccType: i32 = 1, u32 = 2, i64 = 3, u64 = 4, f32 = 5, f64 = 6, u8 = 7, i8 = 8, i16 = 9, u16 = 10);
codes!(AccOp: op::Replace = 0, op::Sum = 1, op::Prod = 2, op::Min = 3, op::Max = 4, op::BitAnd = 5, op::BitOr = 6, op::BitXor = 7);

/// `dst[i] = dst[i] ⊕ src[i]` on window memory at `dst` (any alignment),
/// under the window's accumulate lock.
///
/// # Safety
/// `dst` is valid for `src.len()` elements of window memory.
pub(crate) unsafe fn accumulate<T: Pod + Send + Sync, O: Op<T>>(
    header: &WinHeader,
    dst: *mut u8,
    src: &[T],
    op: &O,
) {
    let mut cur: Vec<T> = vec![T::zeroed(); src.len()];
    let n = std::mem::size_of_val(src);
    header.acc_lock();
    // SAFETY: the caller vouches for `n` bytes at `dst`; `cur` holds `n` bytes.
    unsafe { std::ptr::copy_nonoverlapping(dst, cur.as_mut_ptr().cast::<u8>(), n) };
    op.apply_right(&mut cur, src);
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(cur.as_ptr().cast::<u8>(), dst, n) };
    header.acc_unlock();
}

/// [`accumulate`] with the operation and element type given by their codes;
/// false if the pair is unknown or the bytes are not whole elements.
///
/// # Safety
/// `dst` is valid for `bytes.len()` bytes of window memory.
pub(crate) unsafe fn accumulate_coded(
    header: &WinHeader,
    dst: *mut u8,
    opc: u8,
    ty: u8,
    bytes: &[u8],
) -> bool {
    if let Some(k) = super::words::Kernel::of(opc, ty) {
        let sz = super::raw::type_size(ty).unwrap_or(1);
        if bytes.len() % sz != 0 {
            return false;
        }
        header.acc_lock();
        // SAFETY: the caller vouches for `bytes.len()` bytes at `dst`; the
        // accumulate lock keeps other accumulates off them.
        unsafe { k.apply_at(dst, bytes) };
        header.acc_unlock();
        return true;
    }
    fn typed<T: AccType>(bytes: &[u8]) -> Option<Vec<T>> {
        let sz = std::mem::size_of::<T>();
        (bytes.len() % sz == 0).then(|| {
            // One copy into aligned elements (the payload sits at any offset
            // of a message), not an unaligned read per element: that was
            // the hot spot of large accumulates (MPICH's rma_contig).
            let mut v = vec![T::zeroed(); bytes.len() / sz];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            v
        })
    }
    macro_rules! by_op {
        ($t:ty, [$($o:ident),*]) => {{
            let Some(v) = typed::<$t>(bytes) else { return false };
            match opc {
                $(<op::$o as AccOp>::CODE => {
                    // SAFETY: forwarded from the caller.
                    unsafe { accumulate(header, dst, &v, &op::$o) };
                    true
                })*
                _ => false,
            }
        }};
    }
    macro_rules! ints {
        ($t:ty) => {
            by_op!($t, [Replace, Sum, Prod, Min, Max, BitAnd, BitOr, BitXor])
        };
    }
    match ty {
        1 => ints!(i32),
        2 => ints!(u32),
        3 => ints!(i64),
        4 => ints!(u64),
        5 => by_op!(f32, [Replace, Sum, Prod, Min, Max]),
        6 => by_op!(f64, [Replace, Sum, Prod, Min, Max]),
        7 => ints!(u8),
        8 => ints!(i8),
        9 => ints!(i16),
        10 => ints!(u16),
        _ => false,
    }
}
