//! Derived datatypes, sans-IO: a type built from its definition is compiled
//! at once to a flattened list of `(byte offset, length)` segments in
//! type-map order (adjacent runs merged), with its size, bounds (`lb`,
//! `ub`: the extent), true bounds and number of basic elements. Packing
//! `count` elements copies each segment of element `i` from
//! `base + i * extent + offset`.
//!
//! Bounds follow the standard: the lower (upper) bound of a constructed type
//! is the least (greatest) bound of its blocks' elements; a struct's upper
//! bound is padded to the strictest alignment of its basic types unless a
//! resized type is inside it (an explicit bound); `create_resized` sets both.
//! The true bounds are those of the bytes actually described.
//!
//! A vector whose flattened list would pass 2^24 segments is kept without
//! it ([`Type::flat`] false): its size, bounds and element counts are
//! computed from its first and last blocks, so the queries answer exactly,
//! while the data paths ([`crate::datatype::layout`], MPI-IO views) refuse
//! it with `MPI_ERR_COUNT`; types built on it inherit that.
//!
//! Arithmetic is checked: a type whose size, offsets or bounds overflow is
//! `MPI_ERR_COUNT`; a negative count or block length `MPI_ERR_COUNT`; a
//! malformed subarray `MPI_ERR_ARG`.

use std::sync::Arc;

use crate::abi;
use crate::error::{err, Error, R};

/// A compiled datatype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Type {
    /// Bytes of data in one element.
    pub size: usize,
    pub lb: isize,
    pub ub: isize,
    pub true_lb: isize,
    pub true_ub: isize,
    /// Basic (predefined) elements in one element.
    pub nbasic: usize,
    /// Strictest alignment of the basic types inside (struct padding).
    pub align: usize,
    /// True if a resized type is inside: no alignment padding applies.
    pub sticky: bool,
    /// `(offset, len)` of the data of one element, type-map order, merged.
    pub segs: Vec<(isize, usize)>,
    /// The type map's basic elements in order, run-length encoded (for
    /// `Get_elements` of a partial element and for `external32`); only
    /// kept while short (`None` beyond [`MAP_LIMIT`] runs).
    pub basics: Option<Vec<Basic>>,
    /// The one predefined type (its handle) every basic element is, if
    /// there is one: what a reduction on a derived type combines.
    pub base: Option<usize>,
    /// False for a type whose pieces were not listed ([`Type::segs`] empty)
    /// because they are more than [`SEG_LIMIT`]: its size, bounds and
    /// elements are exact, but it cannot move data ([`Type::dense`] false;
    /// the data paths refuse it with `MPI_ERR_COUNT`).
    pub flat: bool,
}

/// `n` basic elements of `size` bytes, of the predefined type of handle
/// `h` (0 when not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Basic {
    pub n: usize,
    pub size: usize,
    pub h: usize,
}

/// Appends `k` copies of `runs` to `to`, merging equal neighbours; `false`
/// (and `to` unspecified) past [`MAP_LIMIT`] runs.
fn push_basics(to: &mut Vec<Basic>, runs: &[Basic], k: usize) -> bool {
    if k == 0 {
        return true;
    }
    if let [one] = runs {
        // One run repeated k times is one run.
        let Some(n) = one.n.checked_mul(k) else {
            return false;
        };
        let b = Basic { n, ..*one };
        match to.last_mut() {
            Some(l) if l.size == b.size && l.h == b.h => l.n = l.n.saturating_add(b.n),
            _ => to.push(b),
        }
        return to.len() <= MAP_LIMIT;
    }
    for _ in 0..k {
        for &b in runs {
            match to.last_mut() {
                Some(l) if l.size == b.size && l.h == b.h => l.n = l.n.saturating_add(b.n),
                _ => to.push(b),
            }
        }
        if to.len() > MAP_LIMIT {
            return false;
        }
    }
    true
}

/// Most runs kept in [`Type::basics`].
const MAP_LIMIT: usize = 4096;

/// Most segments one type may flatten to.
const SEG_LIMIT: usize = 1 << 24;

fn overflow() -> Error {
    err(abi::ERR_COUNT, "the datatype's size or bounds overflow")
}

fn count(n: i64, what: &str) -> R<usize> {
    usize::try_from(n).map_err(|_| err(abi::ERR_COUNT, format!("negative {what} {n}")))
}

fn push_seg(segs: &mut Vec<(isize, usize)>, off: isize, len: usize) -> R<()> {
    if len == 0 {
        return Ok(());
    }
    if let Some(last) = segs.last_mut() {
        if last.0.checked_add(last.1 as isize) == Some(off) {
            last.1 += len;
            return Ok(());
        }
    }
    if segs.len() >= SEG_LIMIT {
        return Err(err(abi::ERR_COUNT, "the datatype has too many pieces"));
    }
    segs.push((off, len));
    Ok(())
}

impl Type {
    /// A predefined type of `size` bytes aligned to `align`.
    pub fn basic(size: usize, align: usize) -> Type {
        Type {
            size,
            lb: 0,
            ub: size as isize,
            true_lb: 0,
            true_ub: size as isize,
            nbasic: 1,
            align: align.max(1),
            sticky: false,
            segs: vec![(0, size)],
            basics: Some(vec![Basic { n: 1, size, h: 0 }]),
            base: None,
            flat: true,
        }
    }

    /// The same type, recorded as the predefined type of handle `h`.
    pub fn of_handle(mut self, h: usize) -> Type {
        self.base = Some(h);
        if let Some(b) = &mut self.basics {
            if let [one] = &mut b[..] {
                one.h = h;
            }
        }
        self
    }

    pub fn extent(&self) -> isize {
        self.ub - self.lb
    }

    /// True if `count` elements are one run of `count * size` bytes starting
    /// at the buffer: the zero-copy case.
    pub fn dense(&self) -> bool {
        self.flat
            && self.segs.len() <= 1
            && self.segs.first().is_none_or(|&(o, _)| o == 0)
            && self.extent() == self.size as isize
    }

    /// True if one element of this type is `k >= 1` elements of `unit`
    /// end to end (at `unit`'s extent, from offset 0), with the extent of
    /// those `k`: the memory of a C array of `k` units.
    pub fn repeats(&self, unit: &Type) -> bool {
        if !self.flat || !unit.flat {
            return false;
        }
        if unit.size == 0 || self.size % unit.size != 0 || self.lb != 0 {
            return false;
        }
        let k = self.size / unit.size;
        if k == 0 || self.extent() != unit.extent() * k as isize {
            return false;
        }
        let mut want = Vec::new();
        for i in 0..k {
            for &(o, l) in &unit.segs {
                let _ = push_seg(&mut want, i as isize * unit.extent() + o, l);
            }
        }
        want == self.segs
    }

    /// The general constructor: blocks of `(blocklen, byte displacement,
    /// type)` in order (hindexed and struct; the others reduce to it).
    fn blocks(blocks: &[(usize, isize, &Type)], is_struct: bool) -> R<Type> {
        let mut t = Type {
            size: 0,
            lb: 0,
            ub: 0,
            true_lb: 0,
            true_ub: 0,
            nbasic: 0,
            align: 1,
            sticky: false,
            segs: Vec::new(),
            basics: Some(Vec::new()),
            base: None,
            flat: true,
        };
        let mut any = false;
        let mut any_data = false;
        // The basic type shared by every block with data (None once mixed).
        let mut base: Option<Option<usize>> = None;
        for &(k, d, old) in blocks {
            if k == 0 {
                continue;
            }
            let ext = old.extent();
            let span = isize::try_from(k - 1)
                .ok()
                .and_then(|k| k.checked_mul(ext))
                .ok_or_else(overflow)?;
            let add = |a: isize, b: isize| a.checked_add(b).ok_or_else(overflow);
            let lo = add(add(d, old.lb)?, span.min(0))?;
            let hi = add(add(d, old.ub)?, span.max(0))?;
            if !any {
                (t.lb, t.ub) = (lo, hi);
                any = true;
            } else {
                t.lb = t.lb.min(lo);
                t.ub = t.ub.max(hi);
            }
            if old.size > 0 {
                let tlo = add(add(d, old.true_lb)?, span.min(0))?;
                let thi = add(add(d, old.true_ub)?, span.max(0))?;
                if !any_data {
                    (t.true_lb, t.true_ub) = (tlo, thi);
                    any_data = true;
                } else {
                    t.true_lb = t.true_lb.min(tlo);
                    t.true_ub = t.true_ub.max(thi);
                }
            }
            t.size = k
                .checked_mul(old.size)
                .and_then(|s| s.checked_add(t.size))
                .ok_or_else(overflow)?;
            t.nbasic = k
                .checked_mul(old.nbasic)
                .and_then(|s| s.checked_add(t.nbasic))
                .ok_or_else(overflow)?;
            t.align = t.align.max(old.align);
            t.sticky |= old.sticky;
            if old.size > 0 {
                base = match base {
                    None => Some(old.base),
                    Some(b) if b == old.base => Some(b),
                    Some(_) => Some(None),
                };
            }
            if !old.flat {
                // Pieces not listed inside: none listed here either.
                t.flat = false;
                t.segs = Vec::new();
            }
            if !t.flat || old.segs.is_empty() {
                if let (Some(b), Some(ob)) = (&mut t.basics, &old.basics) {
                    if !push_basics(b, ob, k) {
                        t.basics = None;
                    }
                }
                continue;
            }
            if old.dense() {
                // One run for the whole block.
                push_seg(&mut t.segs, d, k * old.size)?;
                if let (Some(b), Some(ob)) = (&mut t.basics, &old.basics) {
                    if !push_basics(b, ob, k) {
                        t.basics = None;
                    }
                }
                continue;
            }
            for j in 0..k {
                let base = add(d, (j as isize).checked_mul(ext).ok_or_else(overflow)?)?;
                for &(o, l) in &old.segs {
                    push_seg(&mut t.segs, add(base, o)?, l)?;
                }
                if let (Some(b), Some(ob)) = (&mut t.basics, &old.basics) {
                    if !push_basics(b, ob, 1) {
                        t.basics = None;
                    }
                }
            }
        }
        t.base = base.flatten();
        if is_struct && !t.sticky && any {
            let a = t.align as isize;
            let ext = t.ub - t.lb;
            let pad = (a - ext.rem_euclid(a)) % a;
            t.ub = t.ub.checked_add(pad).ok_or_else(overflow)?;
        }
        Ok(t)
    }

    pub fn contiguous(n: i64, old: &Type) -> R<Type> {
        let n = count(n, "count")?;
        Type::blocks(&[(n, 0, old)], false)
    }

    /// `hvector`: `stride` in bytes.
    pub fn hvector(n: i64, blocklen: i64, stride: isize, old: &Type) -> R<Type> {
        let n = count(n, "count")?;
        let k = count(blocklen, "block length")?;
        if n > 0 && k > 0 && old.dense() && old.extent() > 0 {
            if let Some(row) = (k as isize).checked_mul(old.extent()) {
                if row == stride {
                    // Blocks end to end: the same type map and bounds as one block.
                    let all = i64::try_from(n)
                        .ok()
                        .and_then(|n| n.checked_mul(blocklen))
                        .ok_or_else(overflow)?;
                    return Type::contiguous(all, old);
                }
            }
        }
        let pieces = old.segs.len().max(1);
        if n.saturating_mul(pieces) > SEG_LIMIT || !old.flat {
            // The flattened form would not fit: the type's numbers only.
            return Type::unlisted_vector(n, k, stride, old);
        }
        let mut b = Vec::with_capacity(n);
        for i in 0..n {
            let d = (i as isize).checked_mul(stride).ok_or_else(overflow)?;
            b.push((k, d, old));
        }
        Type::blocks(&b, false)
    }

    /// `n` blocks of `k` elements of `old`, `stride` bytes apart, without
    /// listing their pieces ([`Type::flat`] false): the numbers are those
    /// [`Type::blocks`] gives, from the first and the last block.
    fn unlisted_vector(n: usize, k: usize, stride: isize, old: &Type) -> R<Type> {
        let one = Type::blocks(&[(k, 0, old)], false)?;
        let mut t = one.clone();
        t.flat = false;
        t.segs = Vec::new();
        if n == 0 || k == 0 {
            return Type::blocks(&[], false);
        }
        let last = isize::try_from(n - 1)
            .ok()
            .and_then(|i| i.checked_mul(stride))
            .ok_or_else(overflow)?;
        let add = |a: isize, b: isize| a.checked_add(b).ok_or_else(overflow);
        t.lb = one.lb.min(add(one.lb, last)?);
        t.ub = one.ub.max(add(one.ub, last)?);
        if one.size > 0 {
            t.true_lb = one.true_lb.min(add(one.true_lb, last)?);
            t.true_ub = one.true_ub.max(add(one.true_ub, last)?);
        }
        t.size = n.checked_mul(one.size).ok_or_else(overflow)?;
        t.nbasic = n.checked_mul(one.nbasic).ok_or_else(overflow)?;
        t.basics = match &one.basics {
            Some(b) => {
                let mut v = Vec::new();
                push_basics(&mut v, b, n).then_some(v)
            }
            None => None,
        };
        Ok(t)
    }

    /// `vector`: `stride` in elements of `old`.
    pub fn vector(n: i64, blocklen: i64, stride: i64, old: &Type) -> R<Type> {
        let s = (stride as isize)
            .checked_mul(old.extent())
            .ok_or_else(overflow)?;
        Type::hvector(n, blocklen, s, old)
    }

    /// `hindexed`: displacements in bytes.
    pub fn hindexed(blocklens: &[i64], displs: &[isize], old: &Type) -> R<Type> {
        let mut b = Vec::with_capacity(blocklens.len());
        for (&k, &d) in blocklens.iter().zip(displs) {
            b.push((count(k, "block length")?, d, old));
        }
        Type::blocks(&b, false)
    }

    /// `indexed`: displacements in elements of `old`.
    pub fn indexed(blocklens: &[i64], displs: &[i64], old: &Type) -> R<Type> {
        let d = displs
            .iter()
            .map(|&d| (d as isize).checked_mul(old.extent()).ok_or_else(overflow))
            .collect::<R<Vec<_>>>()?;
        Type::hindexed(blocklens, &d, old)
    }

    /// `struct`: each block its own type.
    pub fn structure(blocklens: &[i64], displs: &[isize], types: &[&Type]) -> R<Type> {
        let mut b = Vec::with_capacity(blocklens.len());
        for ((&k, &d), &t) in blocklens.iter().zip(displs).zip(types) {
            b.push((count(k, "block length")?, d, t));
        }
        Type::blocks(&b, true)
    }

    pub fn resized(lb: isize, extent: isize, old: &Type) -> R<Type> {
        let mut t = old.clone();
        t.lb = lb;
        t.ub = lb.checked_add(extent).ok_or_else(overflow)?;
        t.sticky = true;
        Ok(t)
    }

    /// `subarray` of an array of `sizes`, `subsizes` starting at `starts`;
    /// `c_order` for row-major, else Fortran's column-major.
    pub fn subarray(
        sizes: &[i64],
        subsizes: &[i64],
        starts: &[i64],
        c_order: bool,
        old: &Type,
    ) -> R<Type> {
        let n = sizes.len();
        if n == 0 || subsizes.len() != n || starts.len() != n {
            return Err(err(abi::ERR_ARG, "subarray: ndims must be positive"));
        }
        for i in 0..n {
            if sizes[i] < 1
                || subsizes[i] < 1
                || starts[i] < 0
                || subsizes[i] + starts[i] > sizes[i]
            {
                return Err(err(
                    abi::ERR_ARG,
                    format!(
                        "subarray dimension {i}: size {}, subsize {}, start {} out of range",
                        sizes[i], subsizes[i], starts[i]
                    ),
                ));
            }
        }
        // Dimension order from the fastest-varying one.
        let order: Vec<usize> = if c_order {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        let ext = old.extent();
        let mut stride = ext; // bytes between neighbours along the current dimension
        let mut t = Type::contiguous(subsizes[order[0]], old)?;
        let mut disp = (starts[order[0]] as isize)
            .checked_mul(stride)
            .ok_or_else(overflow)?;
        let mut total = (sizes[order[0]] as isize)
            .checked_mul(ext)
            .ok_or_else(overflow)?;
        for &dim in &order[1..] {
            stride = total;
            t = Type::hvector(subsizes[dim], 1, stride, &t)?;
            disp = (starts[dim] as isize)
                .checked_mul(stride)
                .and_then(|x| x.checked_add(disp))
                .ok_or_else(overflow)?;
            total = (sizes[dim] as isize)
                .checked_mul(total)
                .ok_or_else(overflow)?;
        }
        let placed = Type::hindexed(&[1], &[disp], &t)?;
        Type::resized(0, total, &placed)
    }

    /// `darray`: the part of a `gsizes` array (of `old`) that process
    /// `rank` of a `psizes` process grid (row-major, as the standard says
    /// whatever the array order) owns, for each dimension distributed
    /// [`Distrib::None`], [`Distrib::Block`] or [`Distrib::Cyclic`] with
    /// its distribution argument (`None`: the default). Lower bound 0,
    /// extent the whole array's, as `subarray`.
    pub fn darray(
        size: i64,
        rank: i64,
        dims: &[(i64, Distrib, Option<i64>, i64)],
        c_order: bool,
        old: &Type,
    ) -> R<Type> {
        let n = dims.len();
        if n == 0 {
            return Err(err(abi::ERR_ARG, "darray: ndims must be positive"));
        }
        if size < 1 || rank < 0 || rank >= size {
            return Err(err(
                abi::ERR_ARG,
                format!("darray: rank {rank} of a size {size} process grid"),
            ));
        }
        let mut procs: i64 = 1;
        for (i, &(g, d, a, p)) in dims.iter().enumerate() {
            if g < 1 || p < 1 {
                return Err(err(
                    abi::ERR_ARG,
                    format!("darray dimension {i}: gsize {g} and psize {p} must be positive"),
                ));
            }
            if d == Distrib::None && p != 1 {
                return Err(err(
                    abi::ERR_ARG,
                    format!("darray dimension {i}: MPI_DISTRIBUTE_NONE with psize {p} (must be 1)"),
                ));
            }
            match (d, a) {
                (_, Some(a)) if a < 1 => {
                    return Err(err(
                        abi::ERR_ARG,
                        format!("darray dimension {i}: distribution argument {a}"),
                    ))
                }
                (Distrib::Block, Some(a)) if a.saturating_mul(p) < g => {
                    return Err(err(
                        abi::ERR_ARG,
                        format!(
                            "darray dimension {i}: blocks of {a} on {p} processes do not cover {g}"
                        ),
                    ))
                }
                _ => {}
            }
            procs = procs.checked_mul(p).ok_or_else(overflow)?;
        }
        if procs != size {
            return Err(err(
                abi::ERR_ARG,
                format!("darray: the process grid has {procs} processes, not {size}"),
            ));
        }
        // This process's coordinates, row-major.
        let mut coords = vec![0i64; n];
        let mut r = rank;
        for i in (0..n).rev() {
            coords[i] = r % dims[i].3;
            r /= dims[i].3;
        }
        // From the fastest-varying dimension.
        let order: Vec<usize> = if c_order {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        let mut t = old.clone();
        let mut stride = old.extent(); // bytes of one index step along `dim`
        for &dim in &order {
            let (g, d, a, p) = dims[dim];
            let c = coords[dim];
            // (start index, length) of this process's blocks along `dim`.
            let mut blocks: Vec<(i64, i64)> = Vec::new();
            match d {
                Distrib::None => blocks.push((0, g)),
                Distrib::Block => {
                    let b = a.unwrap_or((g + p - 1) / p);
                    let start = c.saturating_mul(b);
                    let len = b.min(g - start);
                    if len > 0 {
                        blocks.push((start, len));
                    }
                }
                Distrib::Cyclic => {
                    let b = a.unwrap_or(1);
                    let step = b.checked_mul(p).ok_or_else(overflow)?;
                    let mut s = c.saturating_mul(b);
                    while s < g {
                        blocks.push((s, b.min(g - s)));
                        s = s.checked_add(step).ok_or_else(overflow)?;
                    }
                }
            }
            let lens: Vec<i64> = blocks.iter().map(|b| b.1).collect();
            let displs = blocks
                .iter()
                .map(|b| (b.0 as isize).checked_mul(stride).ok_or_else(overflow))
                .collect::<R<Vec<_>>>()?;
            // `t`'s extent is `stride`: one index step along `dim`.
            let placed = Type::hindexed(&lens, &displs, &t)?;
            stride = (g as isize).checked_mul(stride).ok_or_else(overflow)?;
            t = Type::resized(0, stride, &placed)?;
        }
        Ok(t)
    }

    /// Bytes `count` elements pack to.
    pub fn packed_len(&self, count: usize) -> R<usize> {
        count.checked_mul(self.size).ok_or_else(overflow)
    }

    /// The span `[lo, hi)` of bytes relative to the buffer that `count`
    /// elements touch (empty if no data).
    pub fn span(&self, count: usize) -> R<(isize, isize)> {
        if count == 0 || self.size == 0 {
            return Ok((0, 0));
        }
        let last = isize::try_from(count - 1)
            .ok()
            .and_then(|c| c.checked_mul(self.extent()))
            .ok_or_else(overflow)?;
        let lo = self.true_lb.checked_add(last.min(0)).ok_or_else(overflow)?;
        let hi = self.true_ub.checked_add(last.max(0)).ok_or_else(overflow)?;
        Ok((lo, hi))
    }

    /// Calls `f(offset, len)` for each run of `count` elements, in order,
    /// adjacent runs of consecutive elements merged.
    fn runs(&self, count: usize, mut f: impl FnMut(isize, usize)) {
        let ext = self.extent();
        let mut cur: Option<(isize, usize)> = None;
        for i in 0..count {
            let base = i as isize * ext;
            for &(o, l) in &self.segs {
                let off = base + o;
                match &mut cur {
                    Some((co, cl)) if *co + *cl as isize == off => *cl += l,
                    _ => {
                        if let Some((co, cl)) = cur {
                            f(co, cl);
                        }
                        cur = Some((off, l));
                    }
                }
            }
        }
        if let Some((co, cl)) = cur {
            f(co, cl);
        }
    }

    /// Packs `count` elements at `base` into `out` (`packed_len(count)` bytes).
    ///
    /// # Safety
    /// `base` valid for reads over [`Type::span`] of `count`.
    pub unsafe fn pack(&self, base: *const u8, count: usize, out: &mut [u8]) {
        let mut pos = 0;
        self.runs(count, |o, l| {
            // SAFETY: the caller's contract: every run lies inside the span.
            let s = unsafe { std::slice::from_raw_parts(base.wrapping_offset(o), l) };
            out[pos..pos + l].copy_from_slice(s);
            pos += l;
        });
    }

    /// Unpacks `data` (at most `packed_len(count)` bytes) into `count`
    /// elements at `base`; a short `data` fills the first elements.
    ///
    /// # Safety
    /// `base` valid for writes over [`Type::span`] of `count`.
    pub unsafe fn unpack(&self, data: &[u8], base: *mut u8, count: usize) {
        let mut pos = 0;
        self.runs(count, |o, l| {
            let l = l.min(data.len() - pos.min(data.len()));
            if l == 0 {
                return;
            }
            // SAFETY: the caller's contract: every run lies inside the span.
            let d = unsafe { std::slice::from_raw_parts_mut(base.wrapping_offset(o), l) };
            d.copy_from_slice(&data[pos..pos + l]);
            pos += l;
        });
    }

    /// Basic elements in `bytes` of packed data, `None` if they do not
    /// end on a basic element.
    pub fn elements_in(&self, bytes: u64) -> Option<u64> {
        if self.size == 0 {
            return Some(0);
        }
        let whole = bytes / self.size as u64;
        let mut rest = (bytes % self.size as u64) as usize;
        let mut n = whole.checked_mul(self.nbasic as u64)?;
        if rest == 0 {
            return Some(n);
        }
        for b in self.basics.as_ref()? {
            if rest == 0 || b.size == 0 {
                continue;
            }
            let whole = (rest / b.size).min(b.n);
            rest -= whole * b.size;
            n += whole as u64;
            if whole < b.n && rest > 0 {
                // Ends inside this basic element.
                return None;
            }
        }
        (rest == 0).then_some(n)
    }
}

/// How `darray` distributes one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Distrib {
    None,
    Block,
    Cyclic,
}

/// A shared compiled type.
pub(crate) type Shared = Arc<Type>;

#[cfg(test)]
mod tests {
    use super::Type;
    use proptest::prelude::*;

    /// A type's definition, for the serial model.
    #[derive(Debug, Clone)]
    enum Def {
        Basic(usize),
        Contig(i64, Box<Def>),
        Vector(i64, i64, i64, Box<Def>),
        Hindexed(Vec<(i64, isize)>, Box<Def>),
        Struct(Vec<(i64, isize, Def)>),
        Resized(isize, isize, Box<Def>),
        Subarray(Vec<(i64, i64, i64)>, bool, Box<Def>),
    }

    fn build(d: &Def) -> Type {
        match d {
            Def::Basic(s) => Type::basic(*s, *s),
            Def::Contig(n, o) => Type::contiguous(*n, &build(o)).unwrap(),
            Def::Vector(n, k, s, o) => Type::vector(*n, *k, *s, &build(o)).unwrap(),
            Def::Hindexed(b, o) => {
                let (k, d): (Vec<_>, Vec<_>) = b.iter().copied().unzip();
                Type::hindexed(&k, &d, &build(o)).unwrap()
            }
            Def::Struct(b) => {
                let ts: Vec<Type> = b.iter().map(|x| build(&x.2)).collect();
                let k: Vec<i64> = b.iter().map(|x| x.0).collect();
                let d: Vec<isize> = b.iter().map(|x| x.1).collect();
                Type::structure(&k, &d, &ts.iter().collect::<Vec<_>>()).unwrap()
            }
            Def::Resized(lb, ext, o) => Type::resized(*lb, *ext, &build(o)).unwrap(),
            Def::Subarray(dims, c, o) => {
                let s: Vec<i64> = dims.iter().map(|x| x.0).collect();
                let ss: Vec<i64> = dims.iter().map(|x| x.1).collect();
                let st: Vec<i64> = dims.iter().map(|x| x.2).collect();
                Type::subarray(&s, &ss, &st, *c, &build(o)).unwrap()
            }
        }
    }

    /// The serial model: the type map `(offset, basic size)` of one
    /// element, element by element from the definition, and the extent
    /// (that of the children taken from the compiled types: the bounds
    /// rules are checked by hand below).
    fn model(d: &Def) -> (Vec<(isize, usize)>, isize) {
        match d {
            Def::Basic(s) => (vec![(0, *s)], *s as isize),
            Def::Contig(n, o) => model(&Def::Vector(*n, 1, 1, o.clone())),
            Def::Vector(n, k, s, o) => {
                let (m, e) = (model(o).0, build(o).extent());
                let b = (0..*n)
                    .map(|i| (*k, (i * s) as isize * e))
                    .collect::<Vec<_>>();
                model_blocks(b.iter().map(|&(k, d)| (k, d, (&m, e))))
            }
            Def::Hindexed(b, o) => {
                let (m, e) = (model(o).0, build(o).extent());
                model_blocks(b.iter().map(|&(k, d)| (k, d, (&m, e))))
            }
            Def::Struct(b) => {
                let ms: Vec<_> = b
                    .iter()
                    .map(|x| (model(&x.2).0, build(&x.2).extent()))
                    .collect();
                model_blocks(b.iter().zip(&ms).map(|(x, (m, e))| (x.0, x.1, (m, *e))))
            }
            Def::Resized(_, ext, o) => (model(o).0, *ext),
            Def::Subarray(dims, c, o) => {
                let (m, e) = (model(o).0, build(o).extent());
                let n = dims.len();
                // Every index tuple of the subarray in memory order.
                let order: Vec<usize> = if *c {
                    (0..n).collect()
                } else {
                    (0..n).rev().collect()
                };
                let mut out = Vec::new();
                let mut idx: Vec<i64> = dims.iter().map(|x| x.2).collect();
                'all: loop {
                    // Linear index of idx.
                    let mut lin: i64 = 0;
                    for &dd in &order {
                        lin = lin * dims[dd].0 + idx[dd];
                    }
                    for &(off, s) in &m {
                        out.push((lin as isize * e + off, s));
                    }
                    // Increment, fastest dimension last in `order`.
                    for &dd in order.iter().rev() {
                        idx[dd] += 1;
                        if idx[dd] < dims[dd].2 + dims[dd].1 {
                            continue 'all;
                        }
                        idx[dd] = dims[dd].2;
                    }
                    break;
                }
                let total: i64 = dims.iter().map(|x| x.0).product();
                (out, total as isize * e)
            }
        }
    }

    fn model_blocks<'a>(
        b: impl Iterator<Item = (i64, isize, (&'a Vec<(isize, usize)>, isize))>,
    ) -> (Vec<(isize, usize)>, isize) {
        let mut out = Vec::new();
        for (k, d, (m, e)) in b {
            for j in 0..k {
                for &(o, s) in m {
                    out.push((d + j as isize * e + o, s));
                }
            }
        }
        (out, 0)
    }

    fn def() -> impl Strategy<Value = Def> {
        let leaf = prop_oneof![Just(1usize), Just(2), Just(4), Just(8)].prop_map(Def::Basic);
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                (0i64..4, inner.clone()).prop_map(|(n, o)| Def::Contig(n, Box::new(o))),
                (0i64..4, 0i64..3, -3i64..5, inner.clone()).prop_map(|(n, k, s, o)| Def::Vector(
                    n,
                    k,
                    s,
                    Box::new(o)
                )),
                (
                    prop::collection::vec((0i64..3, -40isize..40), 0..4),
                    inner.clone()
                )
                    .prop_map(|(b, o)| Def::Hindexed(b, Box::new(o))),
                prop::collection::vec((0i64..3, -40isize..40, inner.clone()), 1..4)
                    .prop_map(Def::Struct),
                (-8isize..8, 1isize..40, inner.clone()).prop_map(|(lb, e, o)| Def::Resized(
                    lb,
                    e,
                    Box::new(o)
                )),
                (
                    prop::collection::vec(
                        (1i64..4, 1i64..4, 0i64..3).prop_map(|(s, ss, st)| {
                            let ss = ss.min(s);
                            (s, ss, st.min(s - ss))
                        }),
                        1..4
                    ),
                    any::<bool>(),
                    inner
                )
                    .prop_map(|(d, c, o)| Def::Subarray(d, c, Box::new(o))),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Packing through the flattened segments gives, byte for byte, what
        /// packing basic element by basic element from the definition gives,
        /// for 1 to 3 elements; unpacking puts the bytes back in place; the
        /// size and true bounds are those of the model's type map.
        #[test]
        fn flattened_pack_matches_the_serial_model(d in def(), count in 1usize..4) {
            let t = build(&d);
            let (map, _) = model(&d);
            prop_assert_eq!(t.size, map.iter().map(|m| m.1).sum::<usize>());
            prop_assert_eq!(t.nbasic, map.len());
            if !map.is_empty() {
                prop_assert_eq!(t.true_lb, map.iter().map(|m| m.0).min().unwrap());
                prop_assert_eq!(t.true_ub, map.iter().map(|m| m.0 + m.1 as isize).max().unwrap());
            }
            if let Def::Resized(lb, e, _) = d { prop_assert_eq!((t.lb, t.extent()), (lb, e)); }
            if let Def::Subarray(..) = d {
                prop_assert_eq!((t.lb, t.extent()), (0, model(&d).1));
            }
            let (lo, hi) = t.span(count).unwrap();
            let pad = 64isize;
            let len = (hi - lo + 2 * pad) as usize;
            let mem: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            // SAFETY: `origin` minus `lo - pad` is inside `mem`: the span fits.
            let origin = unsafe { mem.as_ptr().offset(pad - lo) };
            let mut packed = vec![0u8; t.packed_len(count).unwrap()];
            // SAFETY: the span of `count` elements lies inside `mem`.
            unsafe { t.pack(origin, count, &mut packed) };
            let mut expect = Vec::new();
            let ext = t.extent();
            for i in 0..count {
                for &(o, s) in &map {
                    let at = (pad - lo + i as isize * ext + o) as usize;
                    expect.extend_from_slice(&mem[at..at + s]);
                }
            }
            prop_assert_eq!(&packed, &expect);
            // Unpack into a zeroed copy: exactly the model's bytes come back.
            let mut back = vec![0u8; len];
            // SAFETY: as above.
            let borigin = unsafe { back.as_mut_ptr().offset(pad - lo) };
            // SAFETY: the span of `count` elements lies inside `back`.
            unsafe { t.unpack(&packed, borigin, count) };
            for i in 0..count {
                for &(o, s) in &map {
                    let at = (pad - lo + i as isize * ext + o) as usize;
                    prop_assert_eq!(&back[at..at + s], &mem[at..at + s]);
                }
            }
            // Elements: whole elements, and each basic boundary.
            prop_assert_eq!(t.elements_in((t.size * count) as u64), Some((t.nbasic * count) as u64));
        }
    }

    #[test]
    fn bounds_and_extents_by_hand() {
        let int = Type::basic(4, 4);
        let dbl = Type::basic(8, 8);
        let ch = Type::basic(1, 1);
        // vector(3, 2, 4, int): blocks at 0, 16, 32, each 8 bytes.
        let v = Type::vector(3, 2, 4, &int).unwrap();
        assert_eq!((v.size, v.lb, v.extent()), (24, 0, 40));
        assert_eq!(v.segs, [(0, 8), (16, 8), (32, 8)]);
        // Negative stride: lb below zero.
        let n = Type::vector(2, 1, -2, &int).unwrap();
        assert_eq!((n.lb, n.ub, n.true_lb), (-8, 4, -8));
        // struct { double; char } pads to 16.
        let s = Type::structure(&[1, 1], &[0, 8], &[&dbl, &ch]).unwrap();
        assert_eq!((s.size, s.extent(), s.true_ub), (9, 16, 9));
        assert!(!s.dense());
        // contiguous of int is dense; resized no longer.
        let c = Type::contiguous(5, &int).unwrap();
        assert!(c.dense());
        assert_eq!(c.segs, [(0, 20)]);
        let r = Type::resized(0, 24, &c).unwrap();
        assert!(!r.dense());
        // subarray 4x5 of int, 2x3 at (1,2), C order: rows at 28 and 48.
        let sa = Type::subarray(&[4, 5], &[2, 3], &[1, 2], true, &int).unwrap();
        assert_eq!(sa.segs, [(28, 12), (48, 12)]);
        assert_eq!((sa.lb, sa.extent(), sa.size), (0, 80, 24));
        // The same in Fortran order: columns of 2 at (1,2) of a 4x5 column-major.
        let sf = Type::subarray(&[4, 5], &[2, 3], &[1, 2], false, &int).unwrap();
        assert_eq!(sf.segs, [(36, 8), (52, 8), (68, 8)]);
        // Partial elements.
        assert_eq!(s.elements_in(8), Some(1));
        assert_eq!(s.elements_in(9 + 8), Some(3));
        assert_eq!(s.elements_in(4), None);
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        use crate::abi;
        let int = Type::basic(4, 4);
        assert_eq!(
            Type::contiguous(-1, &int).unwrap_err().class,
            abi::ERR_COUNT
        );
        assert_eq!(
            Type::vector(2, -1, 1, &int).unwrap_err().class,
            abi::ERR_COUNT
        );
        let big = Type::contiguous(i64::from(i32::MAX), &int).unwrap();
        assert_eq!(
            Type::contiguous(i64::from(i32::MAX), &big)
                .unwrap_err()
                .class,
            abi::ERR_COUNT
        );
        assert_eq!(
            Type::hvector(2, 1, isize::MAX, &big).unwrap_err().class,
            abi::ERR_COUNT
        );
        assert_eq!(
            Type::subarray(&[4], &[3], &[2], true, &int)
                .unwrap_err()
                .class,
            abi::ERR_ARG
        );
        assert_eq!(
            Type::subarray(&[], &[], &[], true, &int).unwrap_err().class,
            abi::ERR_ARG
        );
        // A vector too fragmented to flatten is kept unlisted, without
        // allocating its pieces (it used to build a list of a billion blocks
        // and abort): exact size and bounds, no segments.
        let four = Type::contiguous(4, &int).unwrap();
        let n = i32::MAX as usize / 2;
        let v = Type::vector(i64::from(i32::MAX / 2), 1, 3, &four).unwrap();
        assert!(!v.flat && v.segs.is_empty());
        assert_eq!(v.size, n * 16);
        assert_eq!(v.ub, ((n - 1) * 48 + 16) as isize);
        // One whose blocks are end to end is a contiguous run.
        let v = Type::vector(i64::from(i32::MAX), 1, 1, &int).unwrap();
        assert_eq!(v.segs, [(0, 4 * i32::MAX as usize)]);
        assert_eq!(
            (v.size, v.extent(), v.nbasic),
            (
                4 * i32::MAX as usize,
                4 * i32::MAX as isize,
                i32::MAX as usize
            )
        );
    }
}
