//! The soft-RoCE endpoint's registered memory: process memory reached by key
//! (the engine's [`super::engine::Memory`]), remote keys, and the [`crate::Rma`] operations.

use super::iface::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::engine::{Access, AtomicOp, Memory, RegionInfo, RemoteAddr, SendWr, Sge};
use crate::{Error, MemRegion, RemoteKey, Result, Rma, Sent};

/// Registered process memory, reached by key.
#[derive(Debug, Default)]
pub(super) struct RawMemory {
    pub(super) regions: HashMap<u32, (usize, usize, Access)>,
    pub(super) next_key: u32,
}

impl RawMemory {
    pub(super) fn register(&mut self, addr: usize, len: usize, access: Access) -> u32 {
        self.next_key = self.next_key.wrapping_add(1).max(1);
        while self.regions.contains_key(&self.next_key) {
            self.next_key = self.next_key.wrapping_add(1).max(1);
        }
        self.regions.insert(self.next_key, (addr, len, access));
        self.next_key
    }

    pub(super) fn deregister(&mut self, key: u32) -> bool {
        self.regions.remove(&key).is_some()
    }
}

impl Memory for RawMemory {
    fn region(&self, key: u32) -> Option<RegionInfo> {
        self.regions
            .get(&key)
            .map(|&(addr, len, access)| RegionInfo {
                addr: addr as u64,
                len: len as u64,
                access,
            })
    }

    fn read(&self, key: u32, offset: u64, dst: &mut [u8]) {
        let (addr, len, _) = self.regions[&key];
        assert!(offset as usize + dst.len() <= len);
        // SAFETY: the engine checked the range against the region; registered
        // memory stays valid while registered (the registrant's promise).
        unsafe {
            std::ptr::copy(
                (addr + offset as usize) as *const u8,
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
    }

    fn write(&mut self, key: u32, offset: u64, src: &[u8]) {
        let (addr, len, _) = self.regions[&key];
        assert!(offset as usize + src.len() <= len);
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy(src.as_ptr(), (addr + offset as usize) as *mut u8, src.len()) };
    }

    fn atomic(&mut self, key: u32, offset: u64, op: AtomicOp) -> u64 {
        let (addr, len, _) = self.regions[&key];
        assert!(offset as usize + 8 <= len);
        let p = (addr + offset as usize) as *mut u64;
        assert!(p as usize % 8 == 0);
        // SAFETY: aligned and inside a registered region; other processes and
        // this one reach the word only with atomics.
        let w = unsafe { AtomicU64::from_ptr(p) };
        match op {
            AtomicOp::FetchAdd { add } => w.fetch_add(add, Ordering::AcqRel),
            AtomicOp::CompareSwap { compare, swap } => {
                match w.compare_exchange(compare, swap, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(v) | Err(v) => v,
                }
            }
        }
    }
}

/// A remote key: region key, address and length.
pub(super) fn pack_key(key: u32, addr: usize, len: usize) -> Result<RemoteKey> {
    let mut b = [0u8; RKEY_LEN];
    b[0] = b'R';
    b[1..5].copy_from_slice(&key.to_le_bytes());
    b[5..13].copy_from_slice(&(addr as u64).to_le_bytes());
    b[13..21].copy_from_slice(&(len as u64).to_le_bytes());
    RemoteKey::from_bytes(&b)
}

pub(super) fn unpack_key(k: &RemoteKey) -> Result<(u32, u64, u64)> {
    match k.as_bytes() {
        b if b.len() == RKEY_LEN && b[0] == b'R' => Ok((
            u32::from_le_bytes(b[1..5].try_into().expect("4")),
            u64::from_le_bytes(b[5..13].try_into().expect("8")),
            u64::from_le_bytes(b[13..21].try_into().expect("8")),
        )),
        _ => Err(Error::Malformed {
            what: "roce remote key",
            reason: "not a key of this backend",
        }),
    }
}

impl Rma for RoceIface {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        let key = self.lock().mem.register(
            ptr as usize,
            len,
            Access::LOCAL_WRITE
                | Access::REMOTE_WRITE
                | Access::REMOTE_READ
                | Access::REMOTE_ATOMIC,
        );
        Ok(MemRegion {
            addr: ptr as usize,
            len,
            rkey: pack_key(key, ptr as usize, len)?,
        })
    }

    fn mem_deregister(&self, region: &MemRegion) -> Result<()> {
        let (key, _, _) = unpack_key(&region.rkey)?;
        if self.lock().mem.deregister(key) {
            Ok(())
        } else {
            Err(Error::Malformed {
                what: "roce remote key",
                reason: "no such registration",
            })
        }
    }

    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        self.sync_op(peer, dst, len, rkey, offset, true)
    }

    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        self.sync_op(peer, src as *mut u8, len, rkey, offset, false)
    }

    fn atomic(
        &self,
        peer: usize,
        rkey: &RemoteKey,
        offset: usize,
        op: crate::RemoteAtomic,
    ) -> Result<u64> {
        let (key, addr, rlen) = unpack_key(rkey)?;
        crate::check_bounds(offset, 8, rlen as usize)?;
        let word = addr + offset as u64;
        if word % 8 != 0 {
            return Err(Error::Malformed {
                what: "remote atomic",
                reason: "word not 8-byte aligned",
            });
        }
        let aop = match op {
            crate::RemoteAtomic::FetchAdd(add) => AtomicOp::FetchAdd { add },
            crate::RemoteAtomic::CompareSwap { compare, swap } => {
                AtomicOp::CompareSwap { compare, swap }
            }
        };
        if peer == self.me {
            let mut st = self.lock();
            if st
                .mem
                .region(key)
                .filter(|r| r.addr == addr && r.len == rlen)
                .is_none()
            {
                return Err(Error::RemoteAccess {
                    offset,
                    len: 8,
                    region_len: 0,
                });
            }
            return Ok(st.mem.atomic(key, offset as u64, aop));
        }
        let id = {
            let mut st = self.lock();
            Self::take_wr(&mut st, Wr::Atomic)
        };
        let remote = RemoteAddr {
            rkey: key,
            addr: word,
        };
        let wr = match aop {
            AtomicOp::FetchAdd { add } => SendWr::fetch_add(id, remote, add),
            AtomicOp::CompareSwap { compare, swap } => {
                SendWr::compare_swap(id, remote, compare, swap)
            }
        };
        if let Err(e) = self.post(peer, wr, true) {
            self.lock().wrs.remove(&id);
            return Err(e);
        }
        self.await_wr(peer, offset, 8, rlen as usize, |st| {
            st.atomic_done.remove(&id)
        })
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
        let (key, addr, rlen) = unpack_key(rkey)?;
        crate::check_bounds(offset, len, rlen as usize)?;
        let (lkey, id) = {
            let mut st = self.lock();
            let lkey = st.mem.register(src as usize, len, Access::NONE);
            (lkey, Self::take_wr(&mut st, Wr::Put { key: lkey, token }))
        };
        let wr = SendWr::write(
            id,
            Sge {
                key: lkey,
                addr: src as u64,
                len: len as u32,
            },
            RemoteAddr {
                rkey: key,
                addr: addr + offset as u64,
            },
        );
        match self.post(peer, wr, false) {
            Ok(()) => Ok(Sent::Pending),
            Err(e) => {
                let mut st = self.lock();
                st.mem.deregister(lkey);
                st.wrs.remove(&id);
                Err(e)
            }
        }
    }
}
