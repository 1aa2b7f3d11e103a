//! The datatype constructors, commit/free/dup, bounds, and `Pack`/`Unpack`
//! (the compiled types are [`crate::dtype`]'s, the handle table
//! [`crate::datatype`]'s).

use std::ffi::{c_int, c_void};

use crate::abi::{self, Handle};
use crate::datatype::{self, Layout};
use crate::dtype::Type;
use crate::error::{err, R};
use crate::ptr::{out, read};

/// `MPI_ORDER_C` and `MPI_ORDER_FORTRAN`.
pub const ORDER_C: c_int = 56;
pub const ORDER_FORTRAN: c_int = 57;

/// `n` values at `p` (an `MPI_ERR_ARG` if null with `n > 0`).
unsafe fn arr<'a, T>(p: *const T, n: c_int, what: &str) -> R<&'a [T]> {
    let n = datatype::count(n)?;
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null pointer for {what}")));
    }
    // SAFETY: non-null, valid for `n` values by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// `MPI_COMBINER_*` (the standard ABI's values).
mod combiner {
    use std::ffi::c_int;
    pub const NAMED: c_int = 101;
    pub const DUP: c_int = 102;
    pub const CONTIGUOUS: c_int = 103;
    pub const VECTOR: c_int = 104;
    pub const HVECTOR: c_int = 105;
    pub const INDEXED: c_int = 106;
    pub const HINDEXED: c_int = 107;
    pub const INDEXED_BLOCK: c_int = 108;
    pub const HINDEXED_BLOCK: c_int = 109;
    pub const STRUCT: c_int = 110;
    pub const SUBARRAY: c_int = 111;
    pub const RESIZED: c_int = 116;
}

/// How a derived datatype was made (`MPI_Type_get_envelope`/`get_contents`).
struct Envelope {
    combiner: c_int,
    ints: Vec<c_int>,
    addrs: Vec<isize>,
    types: Vec<Handle>,
}

thread_local! {
    static ENVELOPES: std::cell::RefCell<std::collections::HashMap<Handle, Envelope>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Records the constructor and arguments of the new type `h`.
fn record(h: Handle, combiner: c_int, ints: Vec<c_int>, addrs: Vec<isize>, types: Vec<Handle>) {
    ENVELOPES.with(|e| {
        e.borrow_mut().insert(
            h,
            Envelope {
                combiner,
                ints,
                addrs,
                types,
            },
        )
    });
}

/// `(combiner, #ints, #addresses, #types)` of a datatype.
fn envelope(h: Handle) -> R<(c_int, usize, usize, usize)> {
    if datatype::predefined(h).is_some() {
        return Ok((combiner::NAMED, 0, 0, 0));
    }
    datatype::ty(h)?;
    ENVELOPES.with(|e| {
        e.borrow()
            .get(&h)
            .map(|v| (v.combiner, v.ints.len(), v.addrs.len(), v.types.len()))
            .ok_or_else(|| {
                err(
                    abi::ERR_TYPE,
                    format!("datatype {h:#x} has no recorded constructor"),
                )
            })
    })
}

mpi_fn! {
    /// The combiner of a datatype and the numbers of its constructor's arguments.
    fn MPI_Type_get_envelope / PMPI_Type_get_envelope(datatype: Handle, num_integers: *mut c_int, num_addresses: *mut c_int, num_datatypes: *mut c_int, comb: *mut c_int) on abi::COMM_WORLD => {
        let (c, ni, na, nt) = envelope(datatype)?;
        out(num_integers, ni as c_int, "num_integers")?;
        out(num_addresses, na as c_int, "num_addresses")?;
        out(num_datatypes, nt as c_int, "num_datatypes")?;
        out(comb, c, "combiner")
    }
}

mpi_fn! {
    /// The arguments a derived datatype was made with; the derived types
    /// among them are new handles (duplicates) the program frees.
    fn MPI_Type_get_contents / PMPI_Type_get_contents(datatype: Handle, max_integers: c_int, max_addresses: c_int, max_datatypes: c_int, integers: *mut c_int, addresses: *mut isize, datatypes: *mut Handle) on abi::COMM_WORLD => {
        let (c, ni, na, nt) = envelope(datatype)?;
        if c == combiner::NAMED {
            return Err(err(abi::ERR_TYPE, "MPI_Type_get_contents of a predefined datatype"));
        }
        if (max_integers as i64) < ni as i64 || (max_addresses as i64) < na as i64 || (max_datatypes as i64) < nt as i64 {
            return Err(err(abi::ERR_ARG, "the output arrays are smaller than MPI_Type_get_envelope says"));
        }
        let (ints, addrs, types) = ENVELOPES.with(|e| {
            let e = e.borrow();
            let v = &e[&datatype];
            (v.ints.clone(), v.addrs.clone(), v.types.clone())
        });
        for (i, v) in ints.iter().enumerate() {
            out(integers.add(i), *v, "array_of_integers")?;
        }
        for (i, v) in addrs.iter().enumerate() {
            out(addresses.add(i), *v, "array_of_addresses")?;
        }
        for (i, &t) in types.iter().enumerate() {
            let h = if datatype::is_derived(t) {
                let o = datatype::ty(t)?;
                let committed = datatype::layout(0, t).is_ok();
                let d = datatype::insert((*o).clone());
                if committed {
                    datatype::commit(d)?;
                }
                if let Some(env) = ENVELOPES.with(|e| e.borrow().get(&t).map(|v| (v.combiner, v.ints.clone(), v.addrs.clone(), v.types.clone()))) {
                    record(d, env.0, env.1, env.2, env.3);
                }
                d
            } else {
                t
            };
            out(datatypes.add(i), h, "array_of_datatypes")?;
        }
        Ok(())
    }
}

fn i64s(v: &[c_int]) -> Vec<i64> {
    v.iter().map(|&x| i64::from(x)).collect()
}

unsafe fn new(newtype: *mut Handle, t: R<Type>) -> R<()> {
    if newtype.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for newtype"));
    }
    let h = datatype::insert(t?);
    // SAFETY: checked non-null; valid by the caller's contract.
    unsafe { out(newtype, h, "newtype") }
}

mpi_fn! {
    /// `count` copies of `oldtype` end to end.
    fn MPI_Type_contiguous / PMPI_Type_contiguous(count: c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::contiguous(count.into(), &o))?;
        record(*newtype, combiner::CONTIGUOUS, vec![count], vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// `count` blocks of `blocklength`, `stride` elements apart.
    fn MPI_Type_vector / PMPI_Type_vector(count: c_int, blocklength: c_int, stride: c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::vector(count.into(), blocklength.into(), stride.into(), &o))?;
        record(*newtype, combiner::VECTOR, vec![count, blocklength, stride], vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// `count` blocks of `blocklength`, `stride` bytes apart.
    fn MPI_Type_create_hvector / PMPI_Type_create_hvector(count: c_int, blocklength: c_int, stride: isize, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::hvector(count.into(), blocklength.into(), stride, &o))?;
        record(*newtype, combiner::HVECTOR, vec![count, blocklength], vec![stride], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of varying lengths at displacements in elements.
    fn MPI_Type_indexed / PMPI_Type_indexed(count: c_int, blocklengths: *const c_int, displacements: *const c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let b = arr(blocklengths, count, "array_of_blocklengths")?;
        let d = arr(displacements, count, "array_of_displacements")?;
        new(newtype, Type::indexed(&i64s(b), &i64s(d), &o))?;
        record(*newtype, combiner::INDEXED, [&[count][..], b, d].concat(), vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of varying lengths at displacements in bytes.
    fn MPI_Type_create_hindexed / PMPI_Type_create_hindexed(count: c_int, blocklengths: *const c_int, displacements: *const isize, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let b = arr(blocklengths, count, "array_of_blocklengths")?;
        let d = arr(displacements, count, "array_of_displacements")?;
        new(newtype, Type::hindexed(&i64s(b), d, &o))?;
        record(*newtype, combiner::HINDEXED, [&[count][..], b].concat(), d.to_vec(), vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of one length at displacements in elements.
    fn MPI_Type_create_indexed_block / PMPI_Type_create_indexed_block(count: c_int, blocklength: c_int, displacements: *const c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let d = arr(displacements, count, "array_of_displacements")?;
        let b = vec![i64::from(blocklength); d.len()];
        new(newtype, Type::indexed(&b, &i64s(d), &o))?;
        record(*newtype, combiner::INDEXED_BLOCK, [&[count, blocklength][..], d].concat(), vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of one length at displacements in bytes.
    fn MPI_Type_create_hindexed_block / PMPI_Type_create_hindexed_block(count: c_int, blocklength: c_int, displacements: *const isize, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let d = arr(displacements, count, "array_of_displacements")?;
        let b = vec![i64::from(blocklength); d.len()];
        new(newtype, Type::hindexed(&b, d, &o))?;
        record(*newtype, combiner::HINDEXED_BLOCK, vec![count, blocklength], d.to_vec(), vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks each of its own type at displacements in bytes.
    fn MPI_Type_create_struct / PMPI_Type_create_struct(count: c_int, blocklengths: *const c_int, displacements: *const isize, types: *const Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let b = arr(blocklengths, count, "array_of_blocklengths")?;
        let d = arr(displacements, count, "array_of_displacements")?;
        let t = arr(types, count, "array_of_types")?;
        let ts = t.iter().map(|&h| datatype::ty(h)).collect::<R<Vec<_>>>()?;
        let refs: Vec<&Type> = ts.iter().map(|t| &**t).collect();
        new(newtype, Type::structure(&i64s(b), d, &refs))?;
        record(*newtype, combiner::STRUCT, [&[count][..], b].concat(), d.to_vec(), t.to_vec());
        Ok(())
    }
}

mpi_fn! {
    /// `oldtype` with the given lower bound and extent.
    fn MPI_Type_create_resized / PMPI_Type_create_resized(oldtype: Handle, lb: isize, extent: isize, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::resized(lb, extent, &o))?;
        record(*newtype, combiner::RESIZED, vec![], vec![lb, extent], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// A subarray of an `ndims`-dimensional array in C or Fortran order.
    fn MPI_Type_create_subarray / PMPI_Type_create_subarray(ndims: c_int, sizes: *const c_int, subsizes: *const c_int, starts: *const c_int, order: c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        if ndims <= 0 {
            return Err(err(abi::ERR_ARG, format!("subarray of {ndims} dimensions")));
        }
        let c_order = match order {
            ORDER_C => true,
            ORDER_FORTRAN => false,
            o => return Err(err(abi::ERR_ARG, format!("invalid order {o}"))),
        };
        let s = arr(sizes, ndims, "array_of_sizes")?;
        let ss = arr(subsizes, ndims, "array_of_subsizes")?;
        let st = arr(starts, ndims, "array_of_starts")?;
        new(newtype, Type::subarray(&i64s(s), &i64s(ss), &i64s(st), c_order, &o))?;
        record(*newtype, combiner::SUBARRAY, [&[ndims][..], s, ss, st, &[order][..]].concat(), vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Commits a datatype for communication.
    fn MPI_Type_commit / PMPI_Type_commit(datatype: *mut Handle) on abi::COMM_WORLD => {
        datatype::commit(read(datatype, "datatype")?)
    }
}

mpi_fn! {
    /// Frees a derived datatype (`MPI_ERR_TYPE` for a predefined one).
    fn MPI_Type_free / PMPI_Type_free(datatype: *mut Handle) on abi::COMM_WORLD => {
        let h = read(datatype, "datatype")?;
        if datatype::is_derived(h) {
            // The attributes' delete callbacks first.
            crate::attr::delete_all(crate::attr::Kind::Type, h)?;
        }
        datatype::free(h)?;
        out(datatype, abi::DATATYPE_NULL, "datatype")
    }
}

mpi_fn! {
    /// A copy of a datatype, committed if it was.
    fn MPI_Type_dup / PMPI_Type_dup(oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let committed = datatype::layout(0, oldtype).is_ok();
        new(newtype, Ok((*o).clone()))?;
        record(*newtype, combiner::DUP, vec![], vec![], vec![oldtype]);
        if committed {
            datatype::commit(*newtype)?;
        }
        crate::attr::copy_all(crate::attr::Kind::Type, oldtype, *newtype)
    }
}

mpi_fn! {
    /// Lower bound and extent, as `MPI_Count`.
    fn MPI_Type_get_extent_x / PMPI_Type_get_extent_x(datatype: Handle, lb: *mut i64, extent: *mut i64) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(lb, t.lb as i64, "lb")?;
        out(extent, t.extent() as i64, "extent")
    }
}

mpi_fn! {
    /// Bounds of the bytes the datatype actually describes.
    fn MPI_Type_get_true_extent / PMPI_Type_get_true_extent(datatype: Handle, true_lb: *mut isize, true_extent: *mut isize) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(true_lb, t.true_lb, "true_lb")?;
        out(true_extent, t.true_ub - t.true_lb, "true_extent")
    }
}

mpi_fn! {
    /// `MPI_Type_get_true_extent` as `MPI_Count`.
    fn MPI_Type_get_true_extent_x / PMPI_Type_get_true_extent_x(datatype: Handle, true_lb: *mut i64, true_extent: *mut i64) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(true_lb, t.true_lb as i64, "true_lb")?;
        out(true_extent, (t.true_ub - t.true_lb) as i64, "true_extent")
    }
}

mpi_fn! {
    /// The size as `MPI_Count`.
    fn MPI_Type_size_x / PMPI_Type_size_x(datatype: Handle, size: *mut i64) on abi::COMM_WORLD => {
        out(size, datatype::ty(datatype)?.size as i64, "size")
    }
}

mpi_fn! {
    /// Basic elements received, as `MPI_Count`.
    fn MPI_Get_elements_x / PMPI_Get_elements_x(status: *const abi::Status, datatype: Handle, count: *mut i64) on abi::COMM_WORLD => {
        let n = datatype::basic_elements(read(status, "status")?.bytes(), datatype)?;
        out(count, n, "count")
    }
}

mpi_fn! {
    /// Bytes `incount` elements pack to (an upper bound, exact here).
    fn MPI_Pack_size / PMPI_Pack_size(incount: c_int, datatype: Handle, comm: Handle, size: *mut c_int) on comm => {
        crate::state::comm(comm)?;
        let n = datatype::count(incount)?;
        let len = datatype::ty(datatype)?.packed_len(n)?;
        let len = c_int::try_from(len).map_err(|_| err(abi::ERR_COUNT, "pack size beyond INT_MAX"))?;
        out(size, len, "size")
    }
}

/// Packs `count` elements of `h` at `buf` into a new buffer (or borrows it
/// when dense).
///
/// # Safety
/// `buf` valid for `count` elements of `h`.
pub(crate) unsafe fn pack_to_vec(buf: *const c_void, l: &Layout) -> R<Vec<u8>> {
    let Layout::Packed { ty, count, len } = l else {
        unreachable!("dense layouts are not packed");
    };
    let mut v = vec![0u8; *len];
    if *len > 0 {
        if buf.is_null() {
            return Err(err(abi::ERR_BUFFER, format!("null buffer for {len} bytes")));
        }
        // SAFETY: the caller's contract.
        unsafe { ty.pack(buf.cast(), *count, &mut v) };
    }
    Ok(v)
}

mpi_fn! {
    /// Packs `incount` elements into `outbuf` at `*position`, advancing it.
    fn MPI_Pack / PMPI_Pack(inbuf: *const c_void, incount: c_int, datatype: Handle, outbuf: *mut c_void, outsize: c_int, position: *mut c_int, comm: Handle) on comm => {
        crate::state::comm(comm)?;
        let pos = read(position, "position")?;
        let l = datatype::layout(incount, datatype)?;
        let data = match &l {
            Layout::Dense(n) => crate::ptr::src(inbuf, *n)?.to_vec(),
            Layout::Packed { .. } => pack_to_vec(inbuf, &l)?,
        };
        let p = usize::try_from(pos).map_err(|_| err(abi::ERR_ARG, format!("negative position {pos}")))?;
        let size = datatype::count(outsize)?;
        if p.checked_add(data.len()).is_none_or(|e| e > size) {
            return Err(err(abi::ERR_TRUNCATE, format!("{} bytes at position {p} do not fit in {size}", data.len())));
        }
        let o = crate::ptr::dst(outbuf, size)?;
        o[p..p + data.len()].copy_from_slice(&data);
        out(position, (p + data.len()) as c_int, "position")
    }
}

/// Unpacks `data` into `count` elements of layout `l` at `buf`.
///
/// # Safety
/// `buf` valid for the elements of `l`.
pub(crate) unsafe fn unpack_from(data: &[u8], buf: *mut c_void, l: &Layout) -> R<()> {
    match l {
        Layout::Dense(n) => {
            let n = (*n).min(data.len());
            // SAFETY: the caller's contract.
            let d = unsafe { crate::ptr::dst(buf, n)? };
            d.copy_from_slice(&data[..n]);
        }
        Layout::Packed { ty, count, .. } => {
            if !data.is_empty() && buf.is_null() {
                return Err(err(abi::ERR_BUFFER, "null buffer"));
            }
            // SAFETY: the caller's contract.
            unsafe { ty.unpack(data, buf.cast(), *count) };
        }
    }
    Ok(())
}

mpi_fn! {
    /// Unpacks `outcount` elements from `inbuf` at `*position`, advancing it.
    fn MPI_Unpack / PMPI_Unpack(inbuf: *const c_void, insize: c_int, position: *mut c_int, outbuf: *mut c_void, outcount: c_int, datatype: Handle, comm: Handle) on comm => {
        crate::state::comm(comm)?;
        let pos = read(position, "position")?;
        let l = datatype::layout(outcount, datatype)?;
        let len = match &l { Layout::Dense(n) => *n, Layout::Packed { len, .. } => *len };
        let p = usize::try_from(pos).map_err(|_| err(abi::ERR_ARG, format!("negative position {pos}")))?;
        let size = datatype::count(insize)?;
        if p.checked_add(len).is_none_or(|e| e > size) {
            return Err(err(abi::ERR_TRUNCATE, format!("{len} bytes at position {p} are beyond the {size} packed")));
        }
        let i = crate::ptr::src(inbuf, size)?;
        unpack_from(&i[p..p + len], outbuf, &l)?;
        out(position, (p + len) as c_int, "position")
    }
}

/// A buffer of `n` elements of a datatype as one run of bytes: the buffer
/// itself when the type is dense, else a temporary packed from it (if
/// asked) and unpacked into it by [`Staged::finish`].
pub(crate) struct Staged {
    l: Layout,
    tmp: Vec<u8>,
    buf: *mut c_void,
}

impl Staged {
    /// # Safety
    /// `buf` valid for `n` elements of `dt`.
    pub unsafe fn new(buf: *const c_void, n: usize, dt: Handle, fill: bool) -> R<Staged> {
        let l = datatype::layout_n(n, dt)?;
        let tmp = match &l {
            Layout::Dense(_) => Vec::new(),
            // SAFETY: the caller's contract.
            Layout::Packed { len, .. } if fill => unsafe { pack_to_vec(buf, &l)? },
            Layout::Packed { len, .. } => vec![0; *len],
        };
        Ok(Staged {
            l,
            tmp,
            buf: buf as *mut c_void,
        })
    }

    /// The bytes.
    ///
    /// # Safety
    /// As for [`Staged::new`]; the buffer writable if written.
    pub unsafe fn bytes(&mut self) -> R<&mut [u8]> {
        match self.l {
            // SAFETY: the caller's contract.
            Layout::Dense(n) => unsafe { crate::ptr::dst(self.buf, n) },
            Layout::Packed { .. } => Ok(&mut self.tmp[..]),
        }
    }

    /// Unpacks a temporary into the buffer.
    ///
    /// # Safety
    /// As for [`Staged::new`], the buffer writable.
    pub unsafe fn finish(self) -> R<()> {
        if let Layout::Packed { .. } = self.l {
            // SAFETY: the caller's contract.
            unsafe { unpack_from(&self.tmp, self.buf, &self.l)? };
        }
        Ok(())
    }
}

/// The blocks of a v-form collective (`counts[i]` elements of a datatype
/// at `displs[i]` extents from the buffer) packed one after another into a
/// temporary: `cs`/`ds` are their byte lengths and offsets there.
pub(crate) struct VStaged {
    ty: crate::dtype::Shared,
    buf: *mut c_void,
    counts: Vec<usize>,
    offs: Vec<isize>,
    pub cs: Vec<usize>,
    pub ds: Vec<usize>,
    pub tmp: Vec<u8>,
}

impl VStaged {
    /// # Safety
    /// `counts` and `displs` valid for `n` ints, `buf` for the blocks.
    pub unsafe fn new(
        buf: *const c_void,
        counts: *const c_int,
        displs: *const c_int,
        n: usize,
        dt: Handle,
        fill: bool,
    ) -> R<VStaged> {
        datatype::layout_n(0, dt)?; // committed
        let ty = datatype::ty(dt)?;
        // SAFETY: the caller's contract.
        let (c, d) = unsafe {
            (
                crate::ptr::ints(counts, n, "counts")?,
                crate::ptr::ints(displs, n, "displacements")?,
            )
        };
        let mut v = VStaged {
            buf: buf as *mut c_void,
            counts: Vec::with_capacity(n),
            offs: Vec::with_capacity(n),
            cs: Vec::with_capacity(n),
            ds: Vec::with_capacity(n),
            tmp: Vec::new(),
            ty,
        };
        let mut pos = 0usize;
        for i in 0..n {
            let ci = datatype::count(c[i])?;
            let len = v.ty.packed_len(ci)?;
            v.ty.span(ci)?;
            let off = (d[i] as isize)
                .checked_mul(v.ty.extent())
                .ok_or_else(|| err(abi::ERR_COUNT, "a displacement overflows"))?;
            v.counts.push(ci);
            v.offs.push(off);
            v.cs.push(len);
            v.ds.push(pos);
            pos = pos
                .checked_add(len)
                .ok_or_else(|| err(abi::ERR_COUNT, "the blocks overflow"))?;
        }
        v.tmp = vec![0; pos];
        if fill && pos > 0 {
            if buf.is_null() {
                return Err(err(abi::ERR_BUFFER, format!("null buffer for {pos} bytes")));
            }
            for i in 0..n {
                let (ds, cs) = (v.ds[i], v.cs[i]);
                // SAFETY: the caller's contract: each block lies in the buffer.
                unsafe {
                    v.ty.pack(
                        buf.cast::<u8>().offset(v.offs[i]),
                        v.counts[i],
                        &mut v.tmp[ds..ds + cs],
                    )
                };
            }
        }
        Ok(v)
    }

    /// Unpacks every block into the buffer.
    ///
    /// # Safety
    /// As for [`VStaged::new`], the buffer writable.
    pub unsafe fn finish(self) -> R<()> {
        if self.tmp.is_empty() {
            return Ok(());
        }
        if self.buf.is_null() {
            return Err(err(abi::ERR_BUFFER, "null buffer"));
        }
        for i in 0..self.counts.len() {
            let d = &self.tmp[self.ds[i]..self.ds[i] + self.cs[i]];
            // SAFETY: the caller's contract.
            unsafe {
                self.ty.unpack(
                    d,
                    self.buf.cast::<u8>().offset(self.offs[i]),
                    self.counts[i],
                )
            };
        }
        Ok(())
    }
}
