//! The two ends of a ring: a producer (this rank's sending side towards one
//! peer) and a consumer (its receiving side from one peer).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::{record_size, RecHdr, RingCtl, PAD_ID, RECORD_ALIGN, REC_HDR};

/// Lines of a record's body the consumer prefetches at once (the first is
/// the header's own line, already read): the eager messages up to 1 KiB.
const PREFETCH_LINES: usize = 16;

/// Bytes a ring carries before its end maps the whole ring at once.
const HOT_BYTES: u64 = 4096;

/// Maps all `len` bytes of a ring at `data` into this process at once
/// (`madvise` `how`: `MADV_POPULATE_WRITE` for the producer, `_READ` for the
/// consumer), once the ring has carried [`HOT_BYTES`].
///
/// Each end of a ring otherwise takes one page fault per 4 KiB page on the
/// first lap, in the middle of its messages: on this VM 1-2 us each, paid by
/// both processes, which made the first 1,000-2,000 round trips of a fresh
/// ring (a short benchmark's whole run) 0.05-0.15 us slower than the ones
/// after (ARCHITECTURE.md, shared-memory transport). Populating at creation
/// instead would cost every ring (most rings of a large job carry a few
/// messages) and job start-up; a ring that has carried a page is one that
/// is used. Failure (a kernel before 5.14) only leaves the faults as they were.
#[cold]
#[inline(never)]
fn populate(data: *mut u8, len: usize, how: libc::c_int) {
    use super::wire::PAGE;
    let start = data as usize & !(PAGE - 1);
    let end = (data as usize + len + PAGE - 1) & !(PAGE - 1);
    // SAFETY: [start, end) covers the ring, which lies in the mapped segment
    // (rings start at page-aligned offsets of the page-aligned mapping and
    // are whole pages long); populating changes no contents.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, how) };
}

/// The sending end of one ring.
#[derive(Debug)]
pub(crate) struct TxRing {
    ctl: *const RingCtl,
    data: *mut u8,
    mask: usize,
    size: usize,
    tail: Cell<u64>,
    head_cache: Cell<u64>,
    /// Stream position past which the ring is populated (see [`populate`]).
    populate_at: Cell<u64>,
}

/// The receiving end of one ring.
#[derive(Debug)]
pub(crate) struct RxRing {
    ctl: *const RingCtl,
    data: *mut u8,
    mask: usize,
    head: Cell<u64>,
    /// Stream position past which the ring is populated (see [`populate`]).
    populate_at: Cell<u64>,
}

/// Outcome of a push.
pub(crate) enum Push {
    Done,
    Full,
}

impl TxRing {
    /// # Safety
    /// `ctl` and `data` point into a mapped segment that outlives the ring, and
    /// this is the only producer of that ring.
    pub(crate) unsafe fn new(ctl: *const RingCtl, data: *mut u8, size: usize) -> Self {
        // SAFETY: the caller guarantees `ctl` is valid.
        let tail = unsafe { (*ctl).tail.load(Ordering::Acquire) };
        // SAFETY: as above.
        let head = unsafe { (*ctl).head.load(Ordering::Acquire) };
        TxRing {
            ctl,
            data,
            mask: size - 1,
            size,
            tail: Cell::new(tail),
            head_cache: Cell::new(head),
            populate_at: Cell::new(tail + HOT_BYTES),
        }
    }

    #[inline]
    fn ctl(&self) -> &RingCtl {
        // SAFETY: valid for the ring's life (see `new`).
        unsafe { &*self.ctl }
    }

    #[inline]
    fn hdr(&self, pos: usize) -> *mut RecHdr {
        // SAFETY: `pos` is masked into the ring and record-aligned.
        unsafe { self.data.add(pos) as *mut RecHdr }
    }

    /// Largest payload that fits at all.
    pub(crate) fn max_payload(size: usize) -> usize {
        // The record, possibly a pad before it, and the zeroed next header must fit.
        size / 2 - REC_HDR - RECORD_ALIGN
    }

    /// Appends one record made of `a` then `b`, or reports `Full`.
    #[inline]
    pub(crate) fn push(&self, id: u8, a: &[u8], b: &[u8]) -> Push {
        let len = a.len() + b.len();
        let rec = record_size(len);
        let tail = self.tail.get();
        let pos = tail as usize & self.mask;
        let to_end = self.size - pos;
        let need = if rec <= to_end { rec } else { to_end + rec };
        // Keep one aligned slot free beyond the record: its header is zeroed.
        if (tail - self.head_cache.get()) as usize + need + RECORD_ALIGN > self.size {
            self.head_cache.set(self.ctl().head.load(Ordering::Acquire));
            if (tail - self.head_cache.get()) as usize + need + RECORD_ALIGN > self.size {
                return Push::Full;
            }
        }
        let (at, seq) = if rec <= to_end {
            (pos, tail + 1)
        } else {
            (0, tail + to_end as u64 + 1)
        };
        // SAFETY: [at, at+rec) and the next header lie in space the consumer has
        // released (checked above), so nobody reads them until `seq` is published.
        unsafe {
            let h = self.hdr(at);
            (*h).len = len as u32;
            (*h).id = id;
            let body = self.data.add(at + REC_HDR);
            std::ptr::copy_nonoverlapping(a.as_ptr(), body, a.len());
            std::ptr::copy_nonoverlapping(b.as_ptr(), body.add(a.len()), b.len());
            let next = (at + rec) & self.mask;
            (*self.hdr(next)).seq.store(0, Ordering::Relaxed);
            (*h).seq.store(seq, Ordering::Release);
            if rec > to_end {
                // The pad is published after the record it skips to, so a reader
                // that passes the pad finds the record complete.
                let p = self.hdr(pos);
                (*p).len = (to_end - REC_HDR) as u32;
                (*p).id = PAD_ID;
                (*p).seq.store(tail + 1, Ordering::Release);
            }
        }
        let new_tail = tail + need as u64;
        self.tail.set(new_tail);
        self.ctl().tail.store(new_tail, Ordering::Relaxed);
        if new_tail >= self.populate_at.get() {
            self.populate_at.set(u64::MAX);
            populate(self.data, self.size, libc::MADV_POPULATE_WRITE);
        }
        Push::Done
    }
}

impl RxRing {
    /// # Safety
    /// As for [`TxRing::new`], for the only consumer of the ring.
    pub(crate) unsafe fn new(ctl: *const RingCtl, data: *mut u8, size: usize) -> Self {
        // SAFETY: the caller guarantees `ctl` is valid.
        let head = unsafe { (*ctl).head.load(Ordering::Acquire) };
        RxRing {
            ctl,
            data,
            mask: size - 1,
            head: Cell::new(head),
            populate_at: Cell::new(head + HOT_BYTES),
        }
    }

    #[inline]
    fn seq_at(&self, pos: usize) -> &AtomicU64 {
        // SAFETY: `pos` is masked and aligned; the header lies in the ring.
        unsafe { &(*(self.data.add(pos) as *const RecHdr)).seq }
    }

    /// True if a record is ready.
    #[inline]
    pub(crate) fn ready(&self) -> bool {
        let head = self.head.get();
        self.seq_at(head as usize & self.mask)
            .load(Ordering::Acquire)
            == head + 1
    }

    /// Asks for the lines after the header's of a record of `len` bytes at
    /// `pos` at once (up to [`PREFETCH_LINES`]), so that their misses overlap
    /// each other and the decoding of the header instead of coming one after
    /// another when the handler copies the body.
    #[inline(always)]
    fn prefetch_body(&self, pos: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let end = pos + REC_HDR + len;
            let mut line = pos + RECORD_ALIGN;
            while line < end && line < pos + PREFETCH_LINES * RECORD_ALIGN {
                // SAFETY: SSE is part of x86_64's baseline, and a prefetch
                // reads nothing the program sees and never faults (`line`
                // lies in the ring anyway).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(self.data.wrapping_add(line) as *const i8) };
                line += RECORD_ALIGN;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (pos, len);
    }

    /// Delivers up to `max` ready records to `f`; returns how many.
    #[inline]
    pub(crate) fn pop<F: FnMut(u8, &[u8])>(&self, max: usize, mut f: F) -> usize {
        let mut n = 0;
        let mut head = self.head.get();
        while n < max {
            let pos = head as usize & self.mask;
            if self.seq_at(pos).load(Ordering::Acquire) != head + 1 {
                break;
            }
            // SAFETY: the acquire load above made the record written before its
            // `seq` visible; the producer does not touch it until `head` passes it.
            let (id, len) = unsafe {
                let h = self.data.add(pos) as *const RecHdr;
                ((*h).id, (*h).len as usize)
            };
            if id == PAD_ID {
                head += (self.mask + 1 - pos) as u64;
                continue;
            }
            // Defensive: a record claiming more than the ring holds is a bug in the
            // producer; skip to the end rather than read out of bounds.
            let len = len.min(self.mask + 1 - pos - REC_HDR);
            self.prefetch_body(pos, len);
            // SAFETY: as above; `len` is bounded by the ring end.
            let body = unsafe { std::slice::from_raw_parts(self.data.add(pos + REC_HDR), len) };
            f(id, body);
            head += record_size(len) as u64;
            n += 1;
        }
        if head != self.head.get() {
            if head >= self.populate_at.get() {
                self.populate_at.set(u64::MAX);
                populate(self.data, self.mask + 1, libc::MADV_POPULATE_READ);
            }
            self.head.set(head);
            // SAFETY: valid for the ring's life.
            unsafe { (*self.ctl).head.store(head, Ordering::Release) };
        }
        n
    }
}
