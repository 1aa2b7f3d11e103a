//! Registered memory of a verbs endpoint: the user's registrations, the loans
//! of zero-copy sends and puts, synchronous RDMA through the staging buffer,
//! and the [`crate::Rma`] operations.

use super::iface::*;
use std::time::Instant;

use rdma_mummy_sys as sys;

use super::ffi::{Mr, Op, ACCESS_REMOTE, ACCESS_REMOTE_READ};
use super::wire::VerbsKey;
use crate::{Error, MemRegion, RemoteKey, Result, Rma, Sent};

/// A user registration.
pub(super) struct Region {
    pub(super) len: usize,
    pub(super) mr: Mr,
    /// Registered for writing (else read-only memory: peers may only read it).
    pub(super) writable: bool,
    /// Zero-copy sends and puts reading from it, not yet completed.
    pub(super) inflight: u32,
}

/// A zero-copy send or put in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loan {
    pub(super) peer: usize,
    pub(super) token: u64,
    pub(super) region: (usize, u32),
    pub(super) slot: Option<u32>,
}

impl VerbsIface {
    /// The live registration containing `len` bytes at `ptr` (one the
    /// device may write into, if `write`): its table key and lkey.
    pub(super) fn registered(
        &self,
        ptr: usize,
        len: usize,
        write: bool,
    ) -> Option<((usize, u32), u32)> {
        let regions = self.regions.borrow();
        let (&key, r) = regions.range(..=(ptr, u32::MAX)).next_back()?;
        let end = ptr.checked_add(len)?;
        (end <= key.0 + r.len && (r.writable || !write)).then(|| (key, r.mr.lkey()))
    }

    /// The local address of `offset` in this endpoint's own region `k`, if
    /// `k` names a live registration that allows the access (to oneself).
    pub(super) fn own(
        &self,
        k: &VerbsKey,
        offset: usize,
        len: usize,
        write: bool,
    ) -> Result<*mut u8> {
        if len == 0 {
            // Nothing is accessed: any aligned, non-null pointer does.
            return Ok(std::ptr::NonNull::dangling().as_ptr());
        }
        let live = self
            .regions
            .borrow()
            .get(&(k.addr as usize, k.rkey))
            .is_some_and(|r| r.len as u64 == k.len && (r.writable || !write));
        if !live {
            return Err(Error::RemoteAccess {
                offset,
                len,
                region_len: 0,
            });
        }
        Ok((k.addr as usize + offset) as *mut u8)
    }

    /// Lends `token`'s memory to a work request: a loan-table entry.
    pub(super) fn lend(&self, loan: Loan) -> u32 {
        if let Some(r) = self.regions.borrow_mut().get_mut(&loan.region) {
            r.inflight += 1;
        }
        let mut loans = self.loans.borrow_mut();
        match self.free_loans.borrow_mut().pop() {
            Some(i) => {
                loans[i as usize] = Some(loan);
                i
            }
            None => {
                loans.push(Some(loan));
                (loans.len() - 1) as u32
            }
        }
    }

    /// Undoes `lend` for a work request that was not posted.
    pub(super) fn unlend(&self, i: u32) {
        if let Some(l) = self
            .loans
            .borrow_mut()
            .get_mut(i as usize)
            .and_then(Option::take)
        {
            if let Some(r) = self.regions.borrow_mut().get_mut(&l.region) {
                r.inflight = r.inflight.saturating_sub(1);
            }
            if let Some(s) = l.slot {
                self.free_slots.borrow_mut().push(s);
            }
            self.free_loans.borrow_mut().push(i);
        }
    }

    /// Posts one synchronous RDMA operation and waits for its completion.
    pub(super) fn run_sync(
        &self,
        peer: usize,
        op: Op,
        sge: sys::ibv_sge,
        what: (usize, usize, usize),
    ) -> Result<()> {
        let (p, qp) = self.up(peer)?;
        let start = Instant::now();
        while !self.room(p, 0) {
            if self.reap_send() == 0 {
                std::hint::spin_loop();
            }
            if p.state.get() != State::Up {
                return Err(Error::PeerUnreachable { peer });
            }
            if start.elapsed() > SYNC_DEADLINE {
                self.log(peer, "no room to post a get or put for 60 s");
                self.fail(peer, None);
                return Err(Error::PeerUnreachable { peer });
            }
        }
        let seq = self.sync_seq.get().wrapping_add(1);
        self.sync_seq.set(seq);
        let mut sges = [sge];
        // SAFETY: the caller's entry names registered memory that it keeps
        // valid until this function returns, which is after the completion.
        unsafe {
            self.post(
                peer,
                (p, qp),
                wr_id(Kind::Sync, peer, seq),
                op,
                &mut sges,
                false,
            )?
        };
        let mut given_up = false;
        loop {
            if let Some((s, status)) = self.sync_done.get() {
                if s == seq {
                    self.sync_done.set(None);
                    return match status {
                        sys::ibv_wc_status::IBV_WC_SUCCESS => Ok(()),
                        sys::ibv_wc_status::IBV_WC_REM_ACCESS_ERR => Err(Error::RemoteAccess {
                            offset: what.0,
                            len: what.1,
                            region_len: what.2,
                        }),
                        _ => Err(Error::PeerUnreachable { peer }),
                    };
                }
            }
            if self.reap_send() == 0 {
                std::hint::spin_loop();
            }
            if !given_up && start.elapsed() > SYNC_DEADLINE {
                // Flush it: its completion still comes, and only then may the
                // memory it names be reused.
                self.log(peer, "a get or put did not complete in 60 s");
                self.fail(peer, None);
                given_up = true;
            }
        }
    }

    /// A synchronous get (`read`) or put of `len` bytes at `local` and
    /// `offset` of the peer's region `k`.
    /// A blocking RDMA READ (`read`) into, or WRITE from, `local` of `len`
    /// bytes at `offset` of the region `rkey`; to itself a plain copy.
    ///
    /// # Safety
    /// `local` is valid for `len` bytes (writable for a read) during the call.
    pub(super) unsafe fn sync_op(
        &self,
        peer: usize,
        local: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
        read: bool,
    ) -> Result<()> {
        let k = VerbsKey::unpack(rkey.as_bytes())?;
        crate::check_bounds(offset, len, k.len as usize)?;
        if peer >= self.cfg.npeers {
            return Err(self.bad_peer(peer));
        }
        if peer == self.cfg.index {
            let at = self.own(&k, offset, len, !read)?;
            let (from, to) = if read {
                (at as *const u8, local)
            } else {
                (local as *const u8, at)
            };
            // SAFETY: `own` vouches for the region, the caller for `local`.
            unsafe { std::ptr::copy(from, to, len) };
            return Ok(());
        }
        self.up(peer)?;
        if len == 0 {
            return Ok(());
        }
        self.sync_rdma(peer, read, local, len, &k, offset)
    }

    pub(super) fn sync_rdma(
        &self,
        peer: usize,
        read: bool,
        local: *mut u8,
        len: usize,
        k: &VerbsKey,
        offset: usize,
    ) -> Result<()> {
        let what = (offset, len, k.len as usize);
        let raddr = k.addr + offset as u64;
        let op = |at: u64| {
            if read {
                Op::Read {
                    raddr: at,
                    rkey: k.rkey,
                }
            } else {
                Op::Write {
                    raddr: at,
                    rkey: k.rkey,
                }
            }
        };
        if let Some((_, lkey)) = self.registered(local as usize, len, read) {
            // Straight from or into registered memory.
            let mut done = 0;
            while done < len {
                let n = (len - done).min(self.cfg.max_msg);
                let sge = sys::ibv_sge {
                    addr: local as u64 + done as u64,
                    length: n as u32,
                    lkey,
                };
                self.run_sync(peer, op(raddr + done as u64), sge, what)?;
                done += n;
            }
            return Ok(());
        }
        // Through the staging buffer, one `stride` at a time.
        let stage = self.staging();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.cfg.stride);
            if !read {
                // SAFETY: the caller's `local` is readable for `len` bytes; the
                // staging buffer holds `stride` bytes and is ours.
                unsafe { std::ptr::copy_nonoverlapping(local.add(done), stage, n) };
            }
            let sge = sys::ibv_sge {
                addr: stage as u64,
                length: n as u32,
                lkey: self.bufs.mr.lkey(),
            };
            self.run_sync(peer, op(raddr + done as u64), sge, what)?;
            if read {
                // SAFETY: the read completed into the staging buffer; the
                // caller's `local` is writable for `len` bytes.
                unsafe { std::ptr::copy_nonoverlapping(stage, local.add(done), n) };
            }
            done += n;
        }
        Ok(())
    }
}

impl Rma for VerbsIface {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        let key = if len == 0 {
            // Nothing to access: a key that allows only empty accesses.
            VerbsKey {
                addr: ptr as u64,
                len: 0,
                rkey: 0,
            }
        } else {
            // SAFETY: the contract of `mem_register`: the caller keeps the
            // memory valid until `mem_deregister` (which drops the region).
            let (mr, writable) =
                match unsafe { Mr::register(&self.dev, ptr as *mut u8, len, ACCESS_REMOTE) } {
                    Ok(mr) => (mr, true),
                    // Read-only memory (a constant, say) can still be a source.
                    // SAFETY: as above.
                    Err(e) => match unsafe {
                        Mr::register(&self.dev, ptr as *mut u8, len, ACCESS_REMOTE_READ)
                    } {
                        Ok(mr) => (mr, false),
                        Err(_) => return Err(e),
                    },
                };
            let rkey = mr.rkey();
            self.regions.borrow_mut().insert(
                (ptr as usize, rkey),
                Region {
                    len,
                    mr,
                    writable,
                    inflight: 0,
                },
            );
            VerbsKey {
                addr: ptr as u64,
                len: len as u64,
                rkey,
            }
        };
        Ok(MemRegion {
            addr: ptr as usize,
            len,
            rkey: RemoteKey::from_bytes(&key.pack())?,
        })
    }

    fn mem_deregister(&self, region: &MemRegion) -> Result<()> {
        let k = VerbsKey::unpack(region.rkey.as_bytes())?;
        if k.len == 0 {
            return Ok(());
        }
        let at = (k.addr as usize, k.rkey);
        // Zero-copy sends from it must complete first (their completions come:
        // as successes, or flushed with a failed connection).
        loop {
            let inflight = match self.regions.borrow().get(&at) {
                Some(r) => r.inflight,
                None => {
                    return Err(Error::Malformed {
                        what: "verbs remote key",
                        reason: "not a live registration of this endpoint",
                    })
                }
            };
            if inflight == 0 {
                break;
            }
            if self.reap_send() == 0 {
                std::hint::spin_loop();
            }
        }
        // Dropping the region deregisters it: later accesses with its key fail.
        drop(self.regions.borrow_mut().remove(&at));
        Ok(())
    }

    unsafe fn put_zc(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
        token: u64,
    ) -> Result<Sent> {
        let k = VerbsKey::unpack(rkey.as_bytes())?;
        crate::check_bounds(offset, len, k.len as usize)?;
        if peer >= self.cfg.npeers {
            return Err(self.bad_peer(peer));
        }
        if len > self.cfg.max_am {
            return Err(Error::TooLarge {
                len,
                max: self.cfg.max_am,
            });
        }
        if peer == self.cfg.index {
            let dst = self.own(&k, offset, len, true)?;
            // SAFETY: `own` vouches for a live registration covering the
            // checked bounds; the caller vouches for `src`.
            unsafe { std::ptr::copy(src, dst, len) };
            return Ok(Sent::Done);
        }
        let (p, qp) = self.up(peer)?;
        if len == 0 {
            return Ok(Sent::Done);
        }
        if !self.room(p, 1) {
            return Err(Error::Busy { peer });
        }
        let op = Op::Write {
            raddr: k.addr + offset as u64,
            rkey: k.rkey,
        };
        if let Some((region, lkey)) = self
            .registered(src as usize, len, false)
            .filter(|_| len > self.cfg.max_inline as usize)
        {
            // Zero copy: the device reads `src` until the completion.
            let i = self.lend(Loan {
                peer,
                token,
                region,
                slot: None,
            });
            let mut sges = [sys::ibv_sge {
                addr: src as u64,
                length: len as u32,
                lkey,
            }];
            // SAFETY: `src` lies in a live registration (kept until the
            // completion) and the caller keeps it unchanged until SendDone.
            let r = unsafe {
                self.post(
                    peer,
                    (p, qp),
                    wr_id(Kind::Zc, peer, i),
                    op,
                    &mut sges,
                    false,
                )
            };
            if let Err(e) = r {
                self.unlend(i);
                return Err(e);
            }
            return Ok(Sent::Pending);
        }
        if len <= self.cfg.max_inline as usize {
            let mut sges = [sys::ibv_sge {
                addr: src as u64,
                length: len as u32,
                lkey: 0,
            }];
            // SAFETY: inline: `src` is readable during the call.
            unsafe {
                self.post(
                    peer,
                    (p, qp),
                    wr_id(Kind::Inline, peer, 0),
                    op,
                    &mut sges,
                    true,
                )?
            };
            return Ok(Sent::Done);
        }
        let Some(s) = self.free_slots.borrow_mut().pop() else {
            return Err(Error::Busy { peer });
        };
        let buf = self.slot_buf(s);
        // SAFETY: slot `s` is ours and holds `stride >= max_am >= len` bytes;
        // the caller vouches for `src`.
        unsafe { std::ptr::copy_nonoverlapping(src, buf, len) };
        // SAFETY: slot `s` is ours and holds the message.
        unsafe { self.post_slot(peer, (p, qp), s, len, op) }.map(|()| Sent::Done)
    }

    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        // SAFETY: forwarded with the caller's guarantee for `dst`.
        unsafe { self.sync_op(peer, dst, len, rkey, offset, true) }
    }

    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        // SAFETY: forwarded with the caller's guarantee for `src` (only read).
        unsafe { self.sync_op(peer, src as *mut u8, len, rkey, offset, false) }
    }
}

/// Up to two gather entries (header and payload), without allocating.
pub(super) struct Sges {
    pub(super) e: [sys::ibv_sge; 2],
    pub(super) n: usize,
}

impl Sges {
    pub(super) fn new() -> Sges {
        const ZERO: sys::ibv_sge = sys::ibv_sge {
            addr: 0,
            length: 0,
            lkey: 0,
        };
        Sges { e: [ZERO; 2], n: 0 }
    }

    pub(super) fn push(&mut self, e: sys::ibv_sge) {
        if let Some(x) = self.e.get_mut(self.n) {
            *x = e;
            self.n += 1;
        }
    }

    pub(super) fn as_mut(&mut self) -> &mut [sys::ibv_sge] {
        &mut self.e[..self.n]
    }
}
