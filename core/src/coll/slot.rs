//! The node-level collectives' slots, laid over the shared segment's slot
//! area (`dos_transport::shm::wire::Slot`): the transport lends the memory,
//! this module gives it its meaning (see [`super::node`] for the protocol).
//!
//! Each of the first [`COLL_CTXS`] communicator contexts has two generations
//! (parities) of one slot per local rank, each written only by its rank:
//! context `ctx` at parity `p` is the segment's slot `2 * ctx + p`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dos_transport::shm::wire::{Slot, SLOTS, SLOT_BYTES};
use dos_transport::shm::ShmIface;

/// Communicator contexts that have node-level collective slots.
pub(crate) const COLL_CTXS: usize = SLOTS / 2;
/// Payload bytes of one collective slot.
pub(crate) const COLL_PAYLOAD: usize = SLOT_BYTES - 16;

/// One rank's slot for node-level collectives, written only by that rank.
///
/// A collective call on a communicator is a *generation* `g` (1, 2, ...). Its
/// rank writes the payload, then `gen = g` with release ordering; readers that
/// load `gen == g` with acquire ordering see the payload. Generation `g` lives
/// at parity `g % 2`: before writing `g`, a rank waits until every member of
/// the communicator published `g - 1`, which each does only after it finished
/// reading generation `g - 2`, so the slot it overwrites is no longer read.
#[repr(C, align(64))]
pub(crate) struct CollSlot {
    /// Generation of the contents; written last.
    gen: AtomicU64,
    /// Payload length in bytes.
    len: AtomicU32,
    /// Reserved.
    _reserved: u32,
    /// Payload.
    data: std::cell::UnsafeCell<[u8; COLL_PAYLOAD]>,
}

const _: () = {
    // A collective slot is exactly one slot of the segment, no more aligned.
    assert!(std::mem::size_of::<CollSlot>() == SLOT_BYTES);
    assert!(std::mem::align_of::<CollSlot>() <= std::mem::align_of::<Slot>());
    assert!(std::mem::offset_of!(CollSlot, data) == 16);
};

/// The collective slot of local rank `rank` for context `ctx` and generation
/// parity `parity` (0 or 1); `None` when the context has no slots or the
/// rank is out of range.
#[inline]
pub(crate) fn coll_slot(
    shm: &ShmIface,
    ctx: usize,
    parity: usize,
    rank: usize,
) -> Option<&CollSlot> {
    if ctx >= COLL_CTXS || parity > 1 {
        return None;
    }
    let s = shm.slot(2 * ctx + parity, rank)?;
    // SAFETY: the slot is SLOT_BYTES of shared memory aligned to 64, as large
    // and at least as aligned as a CollSlot (asserted above), and lives as
    // long as the borrow of `shm`; every bit pattern (all zero at first) is a
    // valid CollSlot (atomics, an integer and bytes); other processes touch
    // it only through the atomics and the protocol of `publish`.
    Some(unsafe { &*(s.as_ptr() as *const CollSlot) })
}

impl CollSlot {
    /// The generation published last (acquire: its payload is visible).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    /// Writes `data` (at most [`COLL_PAYLOAD`] bytes, longer is cut) and then
    /// publishes generation `gen`.
    ///
    /// # Safety
    /// Only the slot's owner calls this, and no reader is still reading the
    /// generation being overwritten (the protocol in the type's documentation).
    #[inline]
    pub(crate) unsafe fn publish(&self, gen: u64, data: &[u8]) {
        let n = data.len().min(COLL_PAYLOAD);
        // SAFETY: the caller guarantees exclusive access to the payload now.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.data.get().cast::<u8>(), n);
        }
        self.len.store(n as u32, Ordering::Relaxed);
        self.gen.store(gen, Ordering::Release);
    }

    /// The payload of the generation last seen through [`CollSlot::generation`].
    ///
    /// # Safety
    /// The caller saw the generation it reads, and by the protocol the owner
    /// does not overwrite it while the returned slice lives.
    #[inline]
    pub(crate) unsafe fn payload(&self) -> &[u8] {
        let n = (self.len.load(Ordering::Relaxed) as usize).min(COLL_PAYLOAD);
        // SAFETY: in bounds; stable by the caller's guarantee.
        unsafe { std::slice::from_raw_parts(self.data.get().cast::<u8>(), n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dos_transport::shm::Segment;
    use std::sync::Arc;

    #[test]
    fn slots_of_contexts_and_parities_are_distinct_and_published_whole() {
        let seg = Arc::new(Segment::create(2, 1 << 16).unwrap());
        let a = ShmIface::new(seg.clone(), 0).unwrap();
        let b = ShmIface::new(seg, 1).unwrap();
        assert!(coll_slot(&a, COLL_CTXS, 0, 0).is_none());
        assert!(coll_slot(&a, 0, 2, 0).is_none());
        assert!(coll_slot(&a, 0, 0, 2).is_none());
        for ctx in [0, COLL_CTXS - 1] {
            for parity in 0..2 {
                let tag = [ctx as u8, parity as u8, 7];
                // SAFETY: rank 0 owns its slot; nobody reads it yet.
                unsafe { coll_slot(&a, ctx, parity, 0).unwrap().publish(5, &tag) };
            }
        }
        for ctx in [0, COLL_CTXS - 1] {
            for parity in 0..2 {
                let s = coll_slot(&b, ctx, parity, 0).unwrap();
                assert_eq!(s.generation(), 5);
                // SAFETY: generation 5 was seen and is not overwritten.
                assert_eq!(unsafe { s.payload() }, &[ctx as u8, parity as u8, 7]);
                assert_eq!(coll_slot(&b, ctx, parity, 1).unwrap().generation(), 0);
            }
        }
        // Too long a payload is cut to the slot.
        let big = vec![1u8; COLL_PAYLOAD + 10];
        // SAFETY: as above.
        unsafe { coll_slot(&a, 1, 0, 0).unwrap().publish(6, &big) };
        let s = coll_slot(&b, 1, 0, 0).unwrap();
        assert_eq!(s.generation(), 6);
        // SAFETY: generation 6 was seen and is not overwritten.
        let n = unsafe { s.payload() }.len();
        assert_eq!(n, COLL_PAYLOAD);
    }
}
