//! The shared segment's layout: an ABI between the processes of one node.
//!
//! ```text
//! offset 0            SegHeader          (one page)
//! ctl_off             RankCtl[n]         (one cache line each, page-rounded)
//! slots_off           Slot[SLOTS][n]     (SLOT_BYTES each, page-rounded)
//! ringctl_off         RingCtl[pool]      (two cache lines each, page-rounded)
//! data_off            ring data[pool]    (ring_bytes each)
//! ```
//! Every region grows linearly with the number of ranks `n`, except the ring
//! pool, which holds `pool = min(n^2, POOL_BYTES / ring_bytes)` rings (see
//! [`pool_rings`]) and is *sparse*: a ring is carved from the pool only when a
//! rank first sends to a peer, and the memfd's pages are allocated on first
//! touch, so the memory used is proportional to the pairs of ranks that
//! actually talk; the virtual size stays below [`POOL_BYTES`] plus about
//! 32 KiB per rank, whatever `n`.
//!
//! **Rings on first use.** The first message from `s` to `r` makes `s` take
//! the next ring index `i` from [`SegHeader::rings_used`] (an atomic bump
//! allocator that never hands out an index twice and never goes past
//! `pool_rings`), write `src = s` and `dst = r` into `RingCtl[i]`, and push
//! `i + 1` onto `r`'s *inbox* ([`RankCtl::inbox`]): a lock-free intrusive
//! stack whose links are [`RingCtl::next`]. The receiver takes the whole
//! stack with one swap (so the stack has no ABA problem) and adds the rings
//! to the ones it polls. A rank thus polls only the rings that carry
//! something to it, plus one word. `s` is the only producer of the ring and
//! keeps it for the rest of the job; rings are never freed. When the pool is
//! exhausted, the send fails with [`crate::Error::RingsExhausted`] and
//! nothing in the segment changes.
//!
//! Measured (`core/tests/shm_scale.rs`, default 128 KiB rings): a 64-rank
//! token ring leaves 1.6 MB of the segment touched (17.3 MB with layout
//! version 2, whose ranks each polled a ring from every peer), 200 ranks
//! 6.8 MB, and `hello` on 1024 ranks 47.6 MB with 11 rings per rank; version 2
//! could not map a segment for 100,000 ranks at all (n^2 rings = 1.3 PB).
//!
//! Everything is addressed by offsets, never pointers, so each process may
//! map the segment anywhere.
//!
//! A ring holds records aligned to [`RECORD_ALIGN`]. Each record starts with a
//! [`RecHdr`] whose `seq` is the record's absolute position in the stream plus
//! one; it is written last, with release ordering, so a reader that sees the
//! expected `seq` sees the whole record. The writer keeps the header word at the
//! next write position zero, so stale bytes of an older lap never look valid.
//!
//! The slot area belongs to the layer above (see [`Slot`]): [`SLOTS`] slots
//! of [`SLOT_BYTES`] per rank, which the transport never reads or writes;
//! what they hold, and how ranks take turns with them, is that layer's
//! protocol (dos uses them for node-level collectives). Pages of the memfd
//! are allocated on first touch, so unused slots cost nothing.

use std::sync::atomic::{AtomicU32, AtomicU64};

/// Segment magic: `DOS-SHM\0`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DOS-SHM\0");
/// Layout version; bump on any change below. Version 3: rings carved from a
/// pool on first use (version 2 had one ring per ordered pair of ranks).
pub const VERSION: u32 = 3;
/// Cache line size assumed by the layout.
pub const CACHE_LINE: usize = 64;
/// Page size assumed for region alignment.
pub const PAGE: usize = 4096;
/// Records start on this alignment.
pub const RECORD_ALIGN: usize = 64;
/// Handler id reserved for padding records at the end of a ring.
pub const PAD_ID: u8 = 0xff;
/// Smallest ring size accepted.
pub const MIN_RING_BYTES: usize = 4 * PAGE;
/// Slots per rank in the slot area (see [`Slot`]).
pub const SLOTS: usize = 32;
/// Bytes of one slot.
pub const SLOT_BYTES: usize = 1024;
/// Most ranks that one node's segment serves.
///
/// The fixed part of the segment costs about 32 KiB of address space per rank
/// (mostly the slot area, touched only when used), and each rank keeps
/// about 100 bytes of private state per local peer; at 16384 ranks that is
/// 513 MiB of address space and 1.6 MiB per process. It is 16 times the
/// hardware threads of the largest nodes made today, and half the default
/// `kernel.pid_max` of 32768.
pub const MAX_RANKS: usize = 16384;
/// Address space reserved for the ring pool, at most: `min(n^2, POOL_BYTES /
/// ring_bytes)` rings (see [`pool_rings`]). Only the rings in use have pages.
///
/// 1 TiB holds every pair's ring up to 2896 ranks of 128 KiB rings (8192
/// ranks of 16 KiB rings), so that any pattern, all-to-all included, runs on
/// a node of 1,000 ranks; it is 1/128 of a process's 47-bit address space.
/// Shared mappings of a memfd are not charged to the overcommit limit, but a
/// process limited by `RLIMIT_AS` needs that much address space for a large
/// node's segment (a node of `n` ranks maps `n^2` rings up to the cap, as
/// before layout version 3: 32 MiB for 16 ranks).
pub const POOL_BYTES: usize = 1 << 40;

/// The segment header, at offset 0.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SegHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// Number of ranks sharing the segment.
    pub nranks: u32,
    /// Bytes of data in each ring (a power of two).
    pub ring_bytes: u64,
    /// Offset of the `RankCtl` array.
    pub ctl_off: u64,
    /// Offset of the slot area.
    pub slots_off: u64,
    /// Offset of the `RingCtl` array.
    pub ringctl_off: u64,
    /// Offset of the first ring's data.
    pub data_off: u64,
    /// Total size of the segment.
    pub total: u64,
    /// Rings in the pool.
    pub pool_rings: u64,
    /// Rings handed out so far (the pool's bump allocator; never above
    /// `pool_rings`).
    pub rings_used: AtomicU64,
    /// Number of ranks that attached so far.
    pub attached: AtomicU32,
    /// Reserved.
    pub _reserved: [u32; 11],
}

/// Per-rank control block: its pid and its doorbell.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RankCtl {
    /// Process id of the rank (for single-copy transfers), 0 until attached.
    pub pid: AtomicU32,
    /// Non-zero while the rank is (about to be) blocked in `futex_wait` on `doorbell`.
    pub sleeping: AtomicU32,
    /// Futex word: senders bump it and wake the rank when it sleeps.
    pub doorbell: AtomicU32,
    /// The rank's inbox of new rings: index + 1 of the ring announced last, 0
    /// when empty; older ones follow through [`RingCtl::next`]. Senders push
    /// with a compare-and-swap, the rank takes all with a swap.
    pub inbox: AtomicU32,
}

/// Per-ring control: the consumer's head on a line of its own, then the
/// producer's line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingCtl {
    /// Bytes consumed so far (absolute position). Written by the consumer only.
    pub head: AtomicU64,
    _pad: [u8; CACHE_LINE - 8],
    /// Bytes produced so far; informational, written by the producer only.
    pub tail: AtomicU64,
    /// The producer's rank, written before the ring is announced.
    pub src: AtomicU32,
    /// The consumer's rank, written before the ring is announced.
    pub dst: AtomicU32,
    /// Index + 1 of the ring announced to the same consumer before this one
    /// (the inbox's link), 0 at the end.
    pub next: AtomicU32,
    _pad2: [u8; CACHE_LINE - 20],
}

/// Header of one record in a ring.
#[repr(C)]
#[derive(Debug)]
pub struct RecHdr {
    /// Absolute stream position of this record plus one; written last.
    pub seq: AtomicU64,
    /// Payload length in bytes.
    pub len: u32,
    /// Handler id, or [`PAD_ID`].
    pub id: u8,
    /// Reserved.
    pub _reserved: [u8; 3],
}

/// One slot of the slot area: [`SLOT_BYTES`] bytes, cache-line aligned, all
/// zero until written, shared by the ranks of the node.
///
/// The transport gives the layer above this memory and nothing else: which
/// rank writes a slot, what it holds and how readers know it is complete
/// (atomics inside it, typically) are that layer's protocol.
#[repr(C, align(64))]
pub struct Slot(std::cell::UnsafeCell<[u8; SLOT_BYTES]>);

impl Slot {
    /// The first of the slot's [`SLOT_BYTES`] bytes (aligned to [`CACHE_LINE`]).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

/// Size of [`RecHdr`].
pub const REC_HDR: usize = std::mem::size_of::<RecHdr>();

const _: () = {
    assert!(std::mem::size_of::<SegHeader>() == 2 * CACHE_LINE);
    assert!(std::mem::size_of::<SegHeader>() <= PAGE);
    assert!(std::mem::offset_of!(SegHeader, pool_rings) == 64);
    assert!(std::mem::offset_of!(RankCtl, inbox) == 12);
    assert!(std::mem::offset_of!(RingCtl, tail) == CACHE_LINE);
    assert!(std::mem::offset_of!(RingCtl, next) == CACHE_LINE + 16);
    assert!(MAX_RANKS * MAX_RANKS <= u32::MAX as usize);
    assert!(std::mem::size_of::<RankCtl>() == CACHE_LINE);
    assert!(std::mem::size_of::<RingCtl>() == 2 * CACHE_LINE);
    assert!(std::mem::size_of::<RecHdr>() == 16);
    assert!(std::mem::align_of::<RecHdr>() == 8);
    assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);
    assert!(std::mem::align_of::<Slot>() == CACHE_LINE);
    assert!(SLOT_BYTES % CACHE_LINE == 0);
    // The slot area took the place of version 3's collective slots
    // (16 contexts of 2 parities of 1024 bytes per rank) byte for byte.
    assert!(SLOTS * SLOT_BYTES == 16 * 2 * 1024);
    assert!(std::mem::offset_of!(SegHeader, slots_off) == 32);
};

/// Rounds `x` up to a multiple of `a` (a power of two).
#[inline]
pub const fn round_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// Size in bytes of a record carrying `len` payload bytes.
#[inline]
pub const fn record_size(len: usize) -> usize {
    round_up(REC_HDR + len, RECORD_ALIGN)
}

/// Rings in the pool of a segment for `nranks` ranks with `ring_bytes` per
/// ring: one per ordered pair of ranks, up to [`POOL_BYTES`] of them.
pub const fn pool_rings(nranks: usize, ring_bytes: usize) -> usize {
    let pairs = nranks.saturating_mul(nranks);
    let fit = POOL_BYTES / if ring_bytes == 0 { 1 } else { ring_bytes };
    let fit = if fit == 0 { 1 } else { fit };
    if pairs < fit {
        pairs
    } else {
        fit
    }
}

/// Offsets of every region of a segment for `nranks` ranks and `ring_bytes` per ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Number of ranks.
    pub nranks: usize,
    /// Data bytes per ring.
    pub ring_bytes: usize,
    /// Rings in the pool.
    pub pool_rings: usize,
    /// Offset of the `RankCtl` array.
    pub ctl_off: usize,
    /// Offset of the slot area.
    pub slots_off: usize,
    /// Offset of the `RingCtl` array.
    pub ringctl_off: usize,
    /// Offset of ring data.
    pub data_off: usize,
    /// Total size.
    pub total: usize,
}

impl Layout {
    /// Computes the layout with the default pool ([`pool_rings`]);
    /// `ring_bytes` must be a power of two of at least [`MIN_RING_BYTES`], and
    /// `nranks` between 1 and [`MAX_RANKS`].
    pub fn new(nranks: usize, ring_bytes: usize) -> crate::Result<Layout> {
        Layout::with_pool(nranks, ring_bytes, pool_rings(nranks, ring_bytes))
    }

    /// Computes the layout with a pool of `pool` rings (1 to `nranks^2`).
    pub fn with_pool(nranks: usize, ring_bytes: usize, pool: usize) -> crate::Result<Layout> {
        let bad = |reason| crate::Error::BadSegment { reason };
        if nranks > MAX_RANKS {
            return Err(crate::Error::TooManyLocalRanks {
                nranks,
                max: MAX_RANKS,
            });
        }
        if nranks == 0 {
            return Err(bad("no ranks"));
        }
        if !ring_bytes.is_power_of_two() || ring_bytes < MIN_RING_BYTES {
            return Err(bad("ring size is not a power of two of at least 16 KiB"));
        }
        if pool == 0 || pool > nranks * nranks {
            return Err(bad("ring pool size out of range"));
        }
        let too_big = || bad("segment larger than the address space");
        let ctl_off = PAGE;
        let slots_off = ctl_off + round_up(nranks * std::mem::size_of::<RankCtl>(), PAGE);
        let ringctl_off = slots_off + round_up(nranks * SLOTS * SLOT_BYTES, PAGE);
        let data_off = ringctl_off + round_up(pool * std::mem::size_of::<RingCtl>(), PAGE);
        let total = pool
            .checked_mul(ring_bytes)
            .and_then(|d| d.checked_add(data_off))
            .filter(|&t| t <= 1 << 47)
            .ok_or_else(too_big)?;
        Ok(Layout {
            nranks,
            ring_bytes,
            pool_rings: pool,
            ctl_off,
            slots_off,
            ringctl_off,
            data_off,
            total,
        })
    }

    /// Offset of the `RankCtl` of `rank`.
    #[inline]
    pub fn rank_ctl(&self, rank: usize) -> usize {
        self.ctl_off + rank * std::mem::size_of::<RankCtl>()
    }

    /// Offset of slot `i` of `rank` (slot `i` of every rank, then slot `i + 1`).
    #[inline]
    pub fn slot(&self, i: usize, rank: usize) -> usize {
        debug_assert!(i < SLOTS && rank < self.nranks);
        self.slots_off + (i * self.nranks + rank) * SLOT_BYTES
    }

    /// Offset of the `RingCtl` of pool ring `i`.
    #[inline]
    pub fn ring_ctl(&self, i: usize) -> usize {
        debug_assert!(i < self.pool_rings);
        self.ringctl_off + i * std::mem::size_of::<RingCtl>()
    }

    /// Offset of the data of pool ring `i`.
    #[inline]
    pub fn ring_data(&self, i: usize) -> usize {
        debug_assert!(i < self.pool_rings);
        self.data_off + i * self.ring_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_regions_do_not_overlap_and_are_aligned() {
        for n in [1usize, 2, 3, 7, 64, 1000, MAX_RANKS] {
            let l = Layout::new(n, MIN_RING_BYTES).unwrap();
            let pool = l.pool_rings;
            assert_eq!(pool, pool_rings(n, MIN_RING_BYTES));
            assert!(l.ctl_off >= std::mem::size_of::<SegHeader>());
            assert!(l.slots_off >= l.rank_ctl(n - 1) + CACHE_LINE);
            assert_eq!(l.slots_off % PAGE, 0);
            assert!(l.ringctl_off >= l.slot(SLOTS - 1, n - 1) + SLOT_BYTES);
            assert!(l.data_off >= l.ring_ctl(pool - 1) + 2 * CACHE_LINE);
            assert_eq!(l.data_off % PAGE, 0);
            assert_eq!(l.total, l.ring_data(pool - 1) + MIN_RING_BYTES);
        }
    }

    #[test]
    fn the_segment_grows_linearly_beyond_the_pool() {
        let ring = 128 << 10;
        // Small nodes: a ring for every ordered pair, as before.
        assert_eq!(pool_rings(16, ring), 256);
        assert_eq!(pool_rings(1024, ring), 1024 * 1024);
        assert_eq!(pool_rings(2896, ring), 2896 * 2896);
        // Large ones: the pool is capped; the rest is ~32 KiB per rank.
        for n in [4096usize, MAX_RANKS] {
            let l = Layout::new(n, ring).unwrap();
            assert_eq!(l.pool_rings, POOL_BYTES / ring);
            assert!(l.total <= POOL_BYTES + n * 33 * 1024 + 1024 * 1024 * 1024);
        }
    }

    #[test]
    fn layout_rejects_bad_parameters() {
        let bad = |r: crate::Result<Layout>| matches!(r, Err(crate::Error::BadSegment { .. }));
        assert!(bad(Layout::new(0, MIN_RING_BYTES)));
        assert!(bad(Layout::new(2, MIN_RING_BYTES + 1)));
        assert!(bad(Layout::new(2, 1024)));
        assert!(bad(Layout::with_pool(2, MIN_RING_BYTES, 0)));
        assert!(bad(Layout::with_pool(2, MIN_RING_BYTES, 5)));
        assert!(bad(Layout::with_pool(2, 1 << 62, 4)));
        for n in [MAX_RANKS + 1, 100_000, usize::MAX / 2] {
            let e = Layout::new(n, MIN_RING_BYTES).unwrap_err();
            assert!(
                matches!(e, crate::Error::TooManyLocalRanks { nranks, max: MAX_RANKS } if nranks == n),
                "{e}"
            );
        }
    }

    #[test]
    fn record_sizes() {
        assert_eq!(record_size(0), 64);
        assert_eq!(record_size(48), 64);
        assert_eq!(record_size(49), 128);
    }
}
