//! File views (`MPI_File_set_view`): which bytes of the file a rank sees,
//! and in which order.
//!
//! A [`View`] is an *etype* (the unit offsets count in, `etype` bytes) and a
//! *filetype*: a list of `(offset, len)` byte segments, sorted and disjoint
//! (for reading only, [`View::with_overlaps`]: overlapping), inside a tile of [`View::extent`] bytes. The filetype tiles the file from
//! a displacement `disp` on: tile `k` starts at `disp + k * extent`. The
//! rank sees the concatenation of every tile's segments, and nothing of the
//! holes between them; after [`super::File::set_view`], the offsets of
//! `read_at`, `write_at`, `read_at_all`, `write_at_all` (and their list and
//! nonblocking forms) count etypes of that stream, as in MPI.
//!
//! The constructors are MPI's type constructors, in etypes:
//! [`View::contiguous`] (`MPI_Type_contiguous` of the etype; the default
//! view is `View::contiguous(1)`, every byte), [`View::vector`]
//! (`MPI_Type_vector`), [`View::subarray`] (`MPI_Type_create_subarray`, C
//! order), [`View::indexed`] (`MPI_Type_indexed`), and [`View::new`] for any
//! flattened filetype in bytes (what an MPI datatype flattens to), with
//! [`View::resized`] (`MPI_Type_create_resized` with a lower bound of 0) to
//! set the tile's extent.
//!
//! ```
//! use dos::io::View;
//! // Rank r of 4 sees every 4th block of 2 eight-byte elements.
//! let r = 1;
//! let v = View::vector(8, 1, 2, 4).unwrap().resized(64).unwrap();
//! // The view's first 40 bytes from disp 16 * r: blocks at 16, 80, 144.
//! assert_eq!(
//!     v.map(16 * r, 0, 40).unwrap(),
//!     vec![(16, 16), (80, 16), (144, 8)]
//! );
//! ```
//!
//! [`View::map`] flattens an access of the view into file ranges, in the
//! view's order, adjacent ranges merged; the collective and independent
//! calls hand those ranges to the planner ([`super::plan`]), so a view goes
//! through the same two-phase engine and data sieving as an explicit list.

/// A bad view, or an access that does not fit one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// An etype of zero bytes.
    #[error("an etype of 0 bytes")]
    ZeroEtype,
    /// A filetype that selects no byte.
    #[error("the filetype selects no byte")]
    Empty,
    /// Segments out of order or overlapping.
    #[error("filetype segment {index} ({offset}, {len}) overlaps or precedes the one before")]
    Unsorted {
        /// The segment's index.
        index: usize,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// An extent smaller than the span of the segments (from the first
    /// one's start to the last one's end): tiles would overlap.
    #[error("extent {extent} is smaller than the span {end} of the filetype's segments")]
    Extent {
        /// The extent given.
        extent: u64,
        /// The span of the segments.
        end: u64,
    },
    /// A filetype whose size is not a whole number of etypes.
    #[error("the filetype holds {size} bytes, not a multiple of the etype ({etype} bytes)")]
    NotEtypes {
        /// Bytes the filetype selects.
        size: u64,
        /// The etype's size.
        etype: u64,
    },
    /// Subarray arguments that do not fit (lengths differ, a subarray
    /// outside the array, no dimension).
    #[error("bad subarray: {0}")]
    Subarray(String),
    /// A size, offset or file position that does not fit in `u64`.
    #[error("the view's arithmetic overflows u64")]
    Overflow,
    /// A filetype of more segments than [`View::MAX_SEGMENTS`] (its
    /// flattened form would not fit in memory).
    #[error("the filetype has {0} segments, more than {max}", max = View::MAX_SEGMENTS)]
    TooManySegments(u64),
}

/// A file view's etype and filetype; see the [module](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    etype: u64,
    segs: Vec<(u64, u64)>,
    extent: u64,
    /// `starts[i]`: bytes of the segments before segment `i`.
    starts: Vec<u64>,
    size: u64,
}

impl Default for View {
    /// Every byte, offsets in bytes (MPI's default view: etype and filetype
    /// `MPI_BYTE`).
    fn default() -> View {
        View::contiguous(1).unwrap_or_else(|_| unreachable!("1 byte is a valid etype"))
    }
}

impl View {
    /// The most segments a filetype may have (flattened, 16 bytes each).
    pub const MAX_SEGMENTS: u64 = 1 << 22;

    /// A view of the filetype `segs` (byte `(offset, len)` segments of a
    /// tile, sorted and disjoint; empty ones are dropped; merged where they
    /// touch) tiling every `extent` bytes, with offsets counting etypes of
    /// `etype` bytes: tile `k`'s segments lie at `disp + k * extent +
    /// offset`. The extent must cover the segments' span (first start to
    /// last end); the first need not start at 0 (an MPI filetype with a
    /// positive lower bound: its segments' offsets from the type's origin,
    /// its extent `ub - lb`).
    ///
    /// # Errors
    /// [`ViewError`] for a zero etype, a filetype selecting nothing,
    /// segments out of order or overlapping, an extent short of the last
    /// segment's end, or a size that is not whole etypes.
    pub fn new(etype: u64, segs: &[(u64, u64)], extent: u64) -> Result<View, ViewError> {
        View::build(etype, segs, extent, false)
    }

    /// [`View::new`] for a file opened read-only: the segments' starts must
    /// still not decrease, but a segment may overlap the ones before it (MPI
    /// forbids overlapping filetypes only on files opened for writing). Such
    /// a view maps the bytes covered twice into the stream twice, in the
    /// filetype's order; [`View::map`] then returns overlapping ranges, which
    /// the planner reads as it reads any list.
    ///
    /// # Errors
    /// As [`View::new`], except for overlaps.
    pub fn with_overlaps(etype: u64, segs: &[(u64, u64)], extent: u64) -> Result<View, ViewError> {
        View::build(etype, segs, extent, true)
    }

    fn build(
        etype: u64,
        segs: &[(u64, u64)],
        extent: u64,
        overlaps: bool,
    ) -> Result<View, ViewError> {
        if etype == 0 {
            return Err(ViewError::ZeroEtype);
        }
        if segs.len() as u64 > View::MAX_SEGMENTS {
            return Err(ViewError::TooManySegments(segs.len() as u64));
        }
        let mut v: Vec<(u64, u64)> = Vec::with_capacity(segs.len());
        // The start of the last segment given (merged ones keep the first's)
        // and the furthest end so far.
        let (mut prev, mut max_end) = (0u64, 0u64);
        for (index, &(offset, len)) in segs.iter().enumerate() {
            if len == 0 {
                continue;
            }
            let end = offset.checked_add(len).ok_or(ViewError::Overflow)?;
            match v.last_mut() {
                Some(_) if offset < prev || (!overlaps && offset < max_end) => {
                    return Err(ViewError::Unsorted { index, offset, len })
                }
                Some(last) if offset == last.0 + last.1 && offset >= max_end => last.1 += len,
                _ => v.push((offset, len)),
            }
            prev = offset;
            max_end = max_end.max(end);
        }
        let Some(&(first, _)) = v.first() else {
            return Err(ViewError::Empty);
        };
        // Tile k's segments lie at k * extent + offset: they do not meet
        // the next tile's if the extent covers their span (MPI's filetypes
        // may start past their origin: a lower bound above 0).
        let end = max_end - first;
        if extent < end {
            return Err(ViewError::Extent { extent, end });
        }
        let mut starts = Vec::with_capacity(v.len());
        let mut size = 0u64;
        for &(_, l) in &v {
            starts.push(size);
            size = size.checked_add(l).ok_or(ViewError::Overflow)?;
        }
        if size % etype != 0 {
            return Err(ViewError::NotEtypes { size, etype });
        }
        Ok(View {
            etype,
            segs: v,
            extent,
            starts,
            size,
        })
    }

    /// Every byte, in etypes of `etype` bytes (`MPI_Type_contiguous`).
    pub fn contiguous(etype: u64) -> Result<View, ViewError> {
        View::new(etype, &[(0, etype)], etype)
    }

    /// `count` blocks of `blocklen` etypes, their starts `stride` etypes
    /// apart (`MPI_Type_vector`); the extent is MPI's, from the first
    /// block's start to the last one's end (use [`View::resized`] to tile
    /// with the stride).
    pub fn vector(etype: u64, count: u64, blocklen: u64, stride: u64) -> Result<View, ViewError> {
        let ov = ViewError::Overflow;
        let (bl, st) = (
            blocklen.checked_mul(etype).ok_or(ov.clone())?,
            stride.checked_mul(etype).ok_or(ov.clone())?,
        );
        if count > View::MAX_SEGMENTS {
            return Err(ViewError::TooManySegments(count));
        }
        if count > 0 && blocklen > 0 && stride < blocklen {
            return Err(ViewError::Unsorted {
                index: 1,
                offset: st,
                len: bl,
            });
        }
        let segs = (0..count)
            .map(|i| Ok((i.checked_mul(st).ok_or(ov.clone())?, bl)))
            .collect::<Result<Vec<_>, ViewError>>()?;
        let extent = count
            .saturating_sub(1)
            .checked_mul(st)
            .and_then(|x| x.checked_add(bl))
            .ok_or(ov)?;
        View::new(etype, &segs, extent)
    }

    /// The `subsizes` block starting at `starts` of a `sizes` array of
    /// etypes, in C (row-major) order (`MPI_Type_create_subarray` with
    /// `MPI_ORDER_C`); the extent is the whole array.
    pub fn subarray(
        etype: u64,
        sizes: &[u64],
        subsizes: &[u64],
        starts: &[u64],
    ) -> Result<View, ViewError> {
        let d = sizes.len();
        if d == 0 || subsizes.len() != d || starts.len() != d {
            return Err(ViewError::Subarray(format!(
                "{} sizes, {} subsizes, {} starts (need the same number, at least 1)",
                d,
                subsizes.len(),
                starts.len()
            )));
        }
        for i in 0..d {
            if starts[i]
                .checked_add(subsizes[i])
                .is_none_or(|e| e > sizes[i])
            {
                return Err(ViewError::Subarray(format!(
                    "dimension {i}: start {} + subsize {} exceeds size {}",
                    starts[i], subsizes[i], sizes[i]
                )));
            }
        }
        let ov = ViewError::Overflow;
        // Elements of one step in each dimension (row-major strides).
        let mut stride = vec![1u64; d];
        for i in (0..d - 1).rev() {
            stride[i] = stride[i + 1].checked_mul(sizes[i + 1]).ok_or(ov.clone())?;
        }
        let total = stride[0].checked_mul(sizes[0]).ok_or(ov.clone())?;
        let extent = total.checked_mul(etype).ok_or(ov.clone())?;
        let row = subsizes[d - 1].checked_mul(etype).ok_or(ov.clone())?;
        let rows = subsizes[..d - 1]
            .iter()
            .try_fold(1u64, |a, &b| a.checked_mul(b))
            .ok_or(ov.clone())?;
        if rows > View::MAX_SEGMENTS {
            return Err(ViewError::TooManySegments(rows));
        }
        let mut segs = Vec::new();
        if subsizes.iter().all(|&s| s > 0) {
            // Odometer over the outer dimensions.
            let mut idx = vec![0u64; d - 1];
            loop {
                let mut el = starts[d - 1];
                for i in 0..d - 1 {
                    el += (starts[i] + idx[i]) * stride[i];
                }
                segs.push((el * etype, row));
                let mut i = d - 1;
                loop {
                    if i == 0 {
                        return View::new(etype, &segs, extent);
                    }
                    i -= 1;
                    idx[i] += 1;
                    if idx[i] < subsizes[i] {
                        break;
                    }
                    idx[i] = 0;
                }
            }
        }
        View::new(etype, &segs, extent)
    }

    /// Blocks of `(displacement, length)` etypes, displacements increasing
    /// (`MPI_Type_indexed`; MPI requires file views' displacements to be
    /// monotonically nondecreasing); the extent is the end of the last one.
    pub fn indexed(etype: u64, blocks: &[(u64, u64)]) -> Result<View, ViewError> {
        let ov = ViewError::Overflow;
        let segs = blocks
            .iter()
            .map(|&(d, l)| {
                Ok((
                    d.checked_mul(etype).ok_or(ov.clone())?,
                    l.checked_mul(etype).ok_or(ov.clone())?,
                ))
            })
            .collect::<Result<Vec<_>, ViewError>>()?;
        let extent = segs.iter().map(|&(o, l)| o + l).max().unwrap_or(0);
        View::new(etype, &segs, extent)
    }

    /// The same filetype tiling every `extent` bytes
    /// (`MPI_Type_create_resized`, lower bound 0).
    pub fn resized(self, extent: u64) -> Result<View, ViewError> {
        View::new(self.etype, &self.segs, extent)
    }

    /// Bytes of the etype: offsets count these.
    pub fn etype(&self) -> u64 {
        self.etype
    }

    /// Bytes of one tile (`MPI_Type_get_extent` of the filetype).
    pub fn extent(&self) -> u64 {
        self.extent
    }

    /// Bytes one tile selects (`MPI_Type_size` of the filetype).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The filetype's segments, byte `(offset, len)` within a tile, sorted,
    /// disjoint, not touching (for a view of [`View::with_overlaps`]: starts
    /// not decreasing, overlaps kept).
    pub fn segments(&self) -> &[(u64, u64)] {
        &self.segs
    }

    /// Whether the view is every byte from its displacement (no holes).
    pub fn is_contiguous(&self) -> bool {
        self.segs.len() == 1 && self.segs[0] == (0, self.extent)
    }

    /// The file ranges of `len` bytes of the view from `offset` etypes on,
    /// with the view starting at byte `disp` of the file: `(offset, len)`
    /// ranges in the view's order, adjacent ones merged.
    ///
    /// # Errors
    /// [`ViewError::Overflow`] if a position does not fit in `u64`.
    pub fn map(&self, disp: u64, offset: u64, len: u64) -> Result<Vec<(u64, u64)>, ViewError> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        self.map_into(disp, offset, len, &mut out)?;
        Ok(out)
    }

    /// [`View::map`], appending to `out` (merging with its last range).
    pub fn map_into(
        &self,
        disp: u64,
        offset: u64,
        len: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), ViewError> {
        let ov = ViewError::Overflow;
        if len == 0 {
            return Ok(());
        }
        let b = offset.checked_mul(self.etype).ok_or(ov.clone())?;
        b.checked_add(len).ok_or(ov.clone())?;
        if self.is_contiguous() {
            let at = disp.checked_add(b).ok_or(ov.clone())?;
            at.checked_add(len).ok_or(ov)?;
            match out.last_mut() {
                Some(last) if last.0 + last.1 == at => last.1 += len,
                _ => out.push((at, len)),
            }
            return Ok(());
        }
        let (mut tile, mut r) = (b / self.size, b % self.size);
        let mut i = self.starts.partition_point(|&s| s <= r) - 1;
        let mut left = len;
        while left > 0 {
            let (so, sl) = self.segs[i];
            let within = r - self.starts[i];
            let take = (sl - within).min(left);
            let at = tile
                .checked_mul(self.extent)
                .and_then(|x| x.checked_add(disp))
                .and_then(|x| x.checked_add(so + within))
                .ok_or(ov.clone())?;
            at.checked_add(take).ok_or(ov.clone())?;
            match out.last_mut() {
                Some(last) if last.0 + last.1 == at => last.1 += take,
                _ => out.push((at, take)),
            }
            left -= take;
            r += take;
            if r == self.starts[i] + sl {
                i += 1;
                if i == self.segs.len() {
                    i = 0;
                    r = 0;
                    tile += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The serial model: byte `k` of the view is byte `k % size` of the
    /// tile's selected bytes, in tile `k / size`.
    fn model(v: &View, disp: u64, offset: u64, len: u64) -> Vec<u64> {
        let sel: Vec<u64> = v.segments().iter().flat_map(|&(o, l)| o..o + l).collect();
        let b = offset * v.etype();
        (b..b + len)
            .map(|k| disp + (k / v.size()) * v.extent() + sel[(k % v.size()) as usize])
            .collect()
    }

    fn expand(ranges: &[(u64, u64)]) -> Vec<u64> {
        ranges.iter().flat_map(|&(o, l)| o..o + l).collect()
    }

    fn any_view() -> impl Strategy<Value = View> {
        let etype = prop_oneof![Just(1u64), Just(4), Just(8), 1u64..13];
        (
            etype,
            prop::collection::vec((0u64..6, 1u64..5), 1..6),
            0u64..7,
        )
            .prop_map(|(e, gaps, tail)| {
                let mut segs = Vec::new();
                let mut at = 0;
                for (gap, len) in gaps {
                    at += gap * e;
                    segs.push((at, len * e));
                    at += len * e;
                }
                // The first segment may start past 0 (a lower bound).
                View::new(e, &segs, at - segs[0].0 + tail * e).unwrap()
            })
    }

    proptest! {
        #[test]
        fn map_agrees_with_the_serial_model(
            v in any_view(),
            disp in 0u64..100,
            offset in 0u64..40,
            len in 0u64..300,
        ) {
            let got = v.map(disp, offset, len).unwrap();
            prop_assert_eq!(expand(&got), model(&v, disp, offset, len));
            // Merged: no two ranges touch, none is empty.
            for w in got.windows(2) {
                prop_assert!(w[0].0 + w[0].1 != w[1].0);
            }
            prop_assert!(got.iter().all(|r| r.1 > 0));
        }

        #[test]
        fn subarray_selects_the_block(
            sizes in prop::collection::vec(1u64..6, 1..4),
            seed in any::<u64>(),
            etype in 1u64..5,
        ) {
            let d = sizes.len();
            let mut starts = vec![0; d];
            let mut subs = vec![0; d];
            for i in 0..d {
                let x = seed.rotate_left(i as u32 * 13);
                starts[i] = x % sizes[i];
                subs[i] = 1 + (x >> 8) % (sizes[i] - starts[i]);
            }
            let v = View::subarray(etype, &sizes, &subs, &starts).unwrap();
            // Model: every element of the array, in C order, kept if inside.
            let total: u64 = sizes.iter().product();
            let mut want = Vec::new();
            for el in 0..total {
                let mut rest = el;
                let mut inside = true;
                for i in (0..d).rev() {
                    let c = rest % sizes[i];
                    rest /= sizes[i];
                    inside &= c >= starts[i] && c < starts[i] + subs[i];
                }
                if inside {
                    want.extend(el * etype..(el + 1) * etype);
                }
            }
            prop_assert_eq!(v.extent(), total * etype);
            prop_assert_eq!(expand(&v.map(0, 0, v.size()).unwrap()), want);
        }
    }

    #[test]
    fn constructors_and_errors() {
        let v = View::vector(2, 3, 1, 4).unwrap();
        assert_eq!(v.segments(), &[(0, 2), (8, 2), (16, 2)]);
        assert_eq!((v.extent(), v.size()), (18, 6));
        let v = View::indexed(4, &[(1, 2), (3, 1), (10, 1)]).unwrap();
        assert_eq!(v.segments(), &[(4, 12), (40, 4)]);
        assert!(View::contiguous(8).unwrap().is_contiguous());
        assert_eq!(View::contiguous(0), Err(ViewError::ZeroEtype));
        assert_eq!(View::new(1, &[(0, 0)], 4), Err(ViewError::Empty));
        assert!(matches!(
            View::new(1, &[(4, 2), (0, 1)], 8),
            Err(ViewError::Unsorted { .. })
        ));
        assert!(matches!(
            View::new(1, &[(4, 2), (8, 1)], 4),
            Err(ViewError::Extent { .. })
        ));
        // A lower bound of 8: tiles of 8 bytes, data at 8..16 of each.
        let lb = View::new(1, &[(8, 8)], 8).unwrap();
        assert_eq!(lb.map(100, 0, 20).unwrap(), vec![(108, 20)]);
        assert!(matches!(
            View::new(4, &[(0, 6)], 8),
            Err(ViewError::NotEtypes { .. })
        ));
        assert!(matches!(
            View::subarray(1, &[4, 4], &[2, 3], &[1, 2]),
            Err(ViewError::Subarray(_))
        ));
        assert!(matches!(
            View::vector(1, 3, 4, 2),
            Err(ViewError::Unsorted { .. })
        ));
        assert!(matches!(
            View::vector(1, 1 << 40, 1, 2),
            Err(ViewError::TooManySegments(_))
        ));
        assert!(matches!(
            View::subarray(
                1,
                &[1 << 30, 1 << 30, 2],
                &[1 << 30, 1 << 30, 1],
                &[0, 0, 0]
            ),
            Err(ViewError::TooManySegments(_))
        ));
        let huge = View::contiguous(1 << 40).unwrap();
        assert_eq!(huge.map(0, 1 << 30, 1), Err(ViewError::Overflow));
        assert_eq!(
            View::new(1, &[(0, 1)], u64::MAX).unwrap().map(0, 2, 1),
            Err(ViewError::Overflow)
        );
    }

    #[test]
    fn overlaps_only_for_reading_and_never_decreasing() {
        // MPICH's tst_fileview: ints at 0..3 and 1 (bytes 0..12 and 4..8).
        let segs = [(0, 12), (4, 4)];
        assert!(matches!(
            View::new(4, &segs, 12),
            Err(ViewError::Unsorted { index: 1, .. })
        ));
        let v = View::with_overlaps(4, &segs, 12).unwrap();
        assert_eq!(v.segments(), &segs);
        assert_eq!((v.size(), v.extent()), (16, 12));
        // The stream: bytes 0..12, 4..8, then the next tile at 12.
        assert_eq!(
            v.map(0, 0, 40).unwrap(),
            vec![(0, 12), (4, 4), (12, 12), (16, 4), (24, 8)]
        );
        assert_eq!(
            expand(&v.map(0, 0, 40).unwrap()),
            model(&v, 0, 0, 40),
            "the map agrees with the serial model"
        );
        // Decreasing starts stay an error, after a merge too.
        assert!(matches!(
            View::with_overlaps(1, &[(0, 4), (4, 4), (2, 1)], 8),
            Err(ViewError::Unsorted { index: 2, .. })
        ));
        // The extent must cover the furthest end, not the last segment's.
        assert!(matches!(
            View::with_overlaps(1, &[(0, 8), (2, 1)], 4),
            Err(ViewError::Extent { end: 8, .. })
        ));
    }
}
