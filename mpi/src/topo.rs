//! Process topologies: Cartesian grids (`MPI_Cart_*`), general graphs
//! (`MPI_Graph_*`) and distributed graphs (`MPI_Dist_graph_*`), and
//! `MPI_Topo_test`.
//!
//! A topology is information attached to a communicator, nothing more:
//! the communicator itself is a dos communicator made by `split` (the
//! processes beyond the grid's or graph's size get `MPI_COMM_NULL`; `reorder`
//! is accepted and ignored: the ranks keep their order, which the standard
//! allows). The topology lives in a map from the communicator's handle,
//! copied by `MPI_Comm_dup` and dropped by `MPI_Comm_free`. The rank and
//! coordinate arithmetic is pure ([`Cart`]), tested against a serial model.
//!
//! `MPI_Dist_graph_create` (edges given by any process) gathers every edge
//! on every process (an allgather of the counts, then of the edges) and
//! keeps those into or out of this process, in the order of the sources'
//! ranks and then of the order given.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;

use crate::abi::{self, Handle};
use crate::error::{err, R};
use crate::ptr::{ints, out};
use crate::state::{self, CommEntry};

/// A Cartesian grid: the extent and periodicity of each dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cart {
    pub dims: Vec<i32>,
    pub periods: Vec<bool>,
}

impl Cart {
    /// The number of processes in the grid.
    pub fn size(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }

    /// The coordinates of `rank` (row-major: the last dimension varies fastest).
    pub fn coords(&self, rank: usize) -> Vec<i32> {
        let mut c = vec![0; self.dims.len()];
        let mut r = rank;
        for i in (0..self.dims.len()).rev() {
            let d = self.dims[i] as usize;
            c[i] = (r % d) as i32;
            r /= d;
        }
        c
    }

    /// The rank at `coords`; a periodic dimension wraps, a coordinate out of
    /// a non-periodic one is `None`.
    pub fn rank(&self, coords: &[i32]) -> Option<usize> {
        let mut r = 0usize;
        for (i, &c) in coords.iter().enumerate() {
            let d = self.dims[i];
            let c = if self.periods[i] {
                c.rem_euclid(d)
            } else if (0..d).contains(&c) {
                c
            } else {
                return None;
            };
            r = r * d as usize + c as usize;
        }
        Some(r)
    }

    /// `(source, dest)` of a shift by `disp` along `dir` from `rank`
    /// (`None`: `MPI_PROC_NULL`).
    pub fn shift(&self, rank: usize, dir: usize, disp: i32) -> (Option<usize>, Option<usize>) {
        let c = self.coords(rank);
        let mut s = c.clone();
        s[dir] = s[dir].saturating_sub(disp);
        let mut d = c;
        d[dir] = d[dir].saturating_add(disp);
        (self.rank(&s), self.rank(&d))
    }
}

/// A communicator's topology.
#[derive(Debug, Clone)]
pub(crate) enum Topo {
    Cart(Cart),
    Graph {
        index: Vec<i32>,
        edges: Vec<i32>,
    },
    Dist {
        sources: Vec<i32>,
        sourceweights: Vec<i32>,
        dests: Vec<i32>,
        destweights: Vec<i32>,
        weighted: bool,
    },
}

thread_local! {
    static TOPOS: RefCell<HashMap<Handle, Topo>> = RefCell::new(HashMap::new());
}

fn get(h: Handle) -> Option<Topo> {
    TOPOS.with(|t| t.borrow().get(&h).cloned())
}

fn attach(h: Handle, t: Topo) {
    TOPOS.with(|m| m.borrow_mut().insert(h, t));
}

/// Gives `new` the topology of `old` (`MPI_Comm_dup`).
pub(crate) fn copy(old: Handle, new: Handle) {
    if let Some(t) = get(old) {
        attach(new, t);
    }
}

/// Drops the topology of `h` (`MPI_Comm_free`).
pub(crate) fn forget(h: Handle) {
    TOPOS.with(|m| m.borrow_mut().remove(&h));
}

/// Forgets every topology (`MPI_Finalize`).
pub(crate) fn clear() {
    TOPOS.with(|m| m.borrow_mut().clear());
}

fn no_topo(h: Handle, what: &str) -> crate::error::Error {
    err(
        abi::ERR_TOPOLOGY,
        format!("communicator {h:#x} has no {what} topology"),
    )
}

fn cart_of(h: Handle) -> R<Cart> {
    state::comm(h)?;
    match get(h) {
        Some(Topo::Cart(c)) => Ok(c),
        _ => Err(no_topo(h, "Cartesian")),
    }
}

/// A count argument: non-negative.
fn len(n: c_int, class: c_int, what: &str) -> R<usize> {
    usize::try_from(n).map_err(|_| err(class, format!("negative {what} {n}")))
}

/// Reads `n` ints (none for `n == 0`, whatever the pointer).
unsafe fn int_vec(p: *const c_int, n: usize, what: &str) -> R<Vec<i32>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the caller's array of `n` ints.
    Ok(unsafe { ints(p, n, what) }?.to_vec())
}

/// Writes `v` to the C array `p` (at most `max` elements).
unsafe fn write_ints(p: *mut c_int, v: &[i32], max: usize, what: &str) -> R<()> {
    let n = v.len().min(max);
    if n == 0 {
        return Ok(());
    }
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null pointer for {what}")));
    }
    // SAFETY: the caller's array of at least `max` ints.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, n) };
    Ok(())
}

/// Makes the communicator of the first `n` ranks of `comm` (the others
/// get `MPI_COMM_NULL`) with topology `t`; stores its handle in `newcomm`.
unsafe fn make(comm: Handle, n: usize, t: Topo, newcomm: *mut Handle) -> R<()> {
    if newcomm.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for the new communicator"));
    }
    let c = state::comm(comm)?;
    if n > c.size() {
        return Err(err(
            abi::ERR_ARG,
            format!(
                "the topology has {n} processes, the communicator {}",
                c.size()
            ),
        ));
    }
    let me = c.rank();
    let color = (me < n).then_some(0u32);
    let s = c.split(color, me as i32)?;
    let errhandler = state::errhandler_of(comm);
    let h = match s {
        None => abi::COMM_NULL,
        Some(comm) => {
            let h = state::with(|st| Ok(st.comms.insert(CommEntry { comm, errhandler })))?;
            attach(h, t);
            h
        }
    };
    // SAFETY: checked non-null above; the caller's pointer.
    unsafe { out(newcomm, h, "newcomm") }
}

unsafe fn read_cart(ndims: c_int, dims: *const c_int, periods: *const c_int) -> R<Cart> {
    let nd = len(ndims, abi::ERR_DIMS, "ndims")?;
    // SAFETY: the caller's arrays of `ndims` ints.
    let d = unsafe { int_vec(dims, nd, "dims") }?;
    // SAFETY: as above.
    let p = unsafe { int_vec(periods, nd, "periods") }?;
    if let Some(&bad) = d.iter().find(|&&x| x <= 0) {
        return Err(err(
            abi::ERR_DIMS,
            format!("dimension {bad} is not positive"),
        ));
    }
    let cart = Cart {
        dims: d,
        periods: p.iter().map(|&x| x != 0).collect(),
    };
    if cart
        .dims
        .iter()
        .try_fold(1usize, |a, &x| a.checked_mul(x as usize))
        .is_none()
    {
        return Err(err(abi::ERR_DIMS, "the grid's size overflows"));
    }
    Ok(cart)
}

mpi_fn! {
    /// A communicator with a Cartesian grid of `dims` (row-major ranks).
    /// Collective.
    fn MPI_Cart_create / PMPI_Cart_create(comm: Handle, ndims: c_int, dims: *const c_int, periods: *const c_int, reorder: c_int, comm_cart: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = reorder;
        state::comm(comm)?;
        let cart = read_cart(ndims, dims, periods)?;
        let n = cart.size();
        make(comm, n, Topo::Cart(cart), comm_cart)
    }
}

mpi_fn! {
    /// The rank `MPI_Cart_create` would give this process (`MPI_UNDEFINED`
    /// beyond the grid).
    fn MPI_Cart_map / PMPI_Cart_map(comm: Handle, ndims: c_int, dims: *const c_int, periods: *const c_int, newrank: *mut c_int) on comm => {
        let c = state::comm(comm)?;
        let cart = read_cart(ndims, dims, periods)?;
        if cart.size() > c.size() {
            return Err(err(abi::ERR_ARG, "the grid is larger than the communicator"));
        }
        let r = if c.rank() < cart.size() { c.rank() as c_int } else { abi::UNDEFINED };
        out(newrank, r, "newrank")
    }
}

mpi_fn! {
    /// `MPI_CART`, `MPI_GRAPH`, `MPI_DIST_GRAPH` or `MPI_UNDEFINED`.
    fn MPI_Topo_test / PMPI_Topo_test(comm: Handle, status: *mut c_int) on comm => {
        state::comm(comm)?;
        let t = match get(comm) {
            Some(Topo::Cart(_)) => abi::CART,
            Some(Topo::Graph { .. }) => abi::GRAPH,
            Some(Topo::Dist { .. }) => abi::DIST_GRAPH,
            None => abi::UNDEFINED,
        };
        out(status, t, "status")
    }
}

mpi_fn! {
    /// The number of dimensions of a Cartesian communicator.
    fn MPI_Cartdim_get / PMPI_Cartdim_get(comm: Handle, ndims: *mut c_int) on comm => {
        let c = cart_of(comm)?;
        out(ndims, c.dims.len() as c_int, "ndims")
    }
}

mpi_fn! {
    /// Dimensions, periods, and this process's coordinates.
    fn MPI_Cart_get / PMPI_Cart_get(comm: Handle, maxdims: c_int, dims: *mut c_int, periods: *mut c_int, coords: *mut c_int) on comm => {
        let cart = cart_of(comm)?;
        let max = len(maxdims, abi::ERR_ARG, "maxdims")?;
        if max < cart.dims.len() {
            return Err(err(abi::ERR_ARG, format!("maxdims {max} is below the grid's {} dimensions", cart.dims.len())));
        }
        let me = state::comm(comm)?.rank();
        write_ints(dims, &cart.dims, max, "dims")?;
        let p: Vec<i32> = cart.periods.iter().map(|&b| b as i32).collect();
        write_ints(periods, &p, max, "periods")?;
        write_ints(coords, &cart.coords(me), max, "coords")
    }
}

mpi_fn! {
    /// The rank at `coords` (periodic dimensions wrap; out of a
    /// non-periodic one: `MPI_ERR_ARG`).
    fn MPI_Cart_rank / PMPI_Cart_rank(comm: Handle, coords: *const c_int, rank: *mut c_int) on comm => {
        let cart = cart_of(comm)?;
        let c = int_vec(coords, cart.dims.len(), "coords")?;
        let r = cart.rank(&c).ok_or_else(|| err(abi::ERR_ARG, format!("coordinates {c:?} are outside the grid {:?}", cart.dims)))?;
        out(rank, r as c_int, "rank")
    }
}

mpi_fn! {
    /// The coordinates of `rank`.
    fn MPI_Cart_coords / PMPI_Cart_coords(comm: Handle, rank: c_int, maxdims: c_int, coords: *mut c_int) on comm => {
        let cart = cart_of(comm)?;
        let n = cart.size();
        let r = usize::try_from(rank).ok().filter(|&r| r < n)
            .ok_or_else(|| err(abi::ERR_RANK, format!("rank {rank} is not in the grid of {n}")))?;
        let max = len(maxdims, abi::ERR_ARG, "maxdims")?;
        if max < cart.dims.len() {
            return Err(err(abi::ERR_ARG, format!("maxdims {max} is below the grid's {} dimensions", cart.dims.len())));
        }
        write_ints(coords, &cart.coords(r), max, "coords")
    }
}

mpi_fn! {
    /// The neighbours `disp` steps down and up dimension `direction`
    /// (`MPI_PROC_NULL` off a non-periodic edge).
    fn MPI_Cart_shift / PMPI_Cart_shift(comm: Handle, direction: c_int, disp: c_int, rank_source: *mut c_int, rank_dest: *mut c_int) on comm => {
        let cart = cart_of(comm)?;
        let dir = usize::try_from(direction).ok().filter(|&d| d < cart.dims.len())
            .ok_or_else(|| err(abi::ERR_ARG, format!("direction {direction} is not a dimension of the grid")))?;
        let me = state::comm(comm)?.rank();
        let (s, d) = cart.shift(me, dir, disp);
        let f = |x: Option<usize>| x.map_or(abi::PROC_NULL, |r| r as c_int);
        out(rank_source, f(s), "rank_source")?;
        out(rank_dest, f(d), "rank_dest")
    }
}

mpi_fn! {
    /// The sub-grids keeping the dimensions flagged in `remain_dims`: one
    /// communicator per value of the others. Collective.
    fn MPI_Cart_sub / PMPI_Cart_sub(comm: Handle, remain_dims: *const c_int, newcomm: *mut Handle) on comm => {
        let cart = cart_of(comm)?;
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        let keep: Vec<bool> = int_vec(remain_dims, cart.dims.len(), "remain_dims")?.iter().map(|&x| x != 0).collect();
        let c = state::comm(comm)?;
        let coords = cart.coords(c.rank());
        let (mut color, mut key) = (0u64, 0u64);
        let mut sub = Cart { dims: Vec::new(), periods: Vec::new() };
        for i in 0..cart.dims.len() {
            if keep[i] {
                key = key * cart.dims[i] as u64 + coords[i] as u64;
                sub.dims.push(cart.dims[i]);
                sub.periods.push(cart.periods[i]);
            } else {
                color = color * cart.dims[i] as u64 + coords[i] as u64;
            }
        }
        let s = c.split(Some(color as u32), key as i32)?
            .ok_or_else(|| err(abi::ERR_INTERN, "Cart_sub: no communicator"))?;
        let errhandler = state::errhandler_of(comm);
        let h = state::with(|st| Ok(st.comms.insert(CommEntry { comm: s, errhandler })))?;
        attach(h, Topo::Cart(sub));
        out(newcomm, h, "newcomm")
    }
}

/// Checks a graph's `index` and `edges` for `nnodes` nodes.
fn check_graph(nnodes: usize, index: &[i32], edges: &[i32]) -> R<()> {
    let mut prev = 0;
    for &i in index {
        if i < prev {
            return Err(err(abi::ERR_ARG, "index is not non-decreasing"));
        }
        prev = i;
    }
    if let Some(&e) = edges.iter().find(|&&e| e < 0 || e as usize >= nnodes) {
        return Err(err(
            abi::ERR_RANK,
            format!("edge to {e}, not a node of the graph"),
        ));
    }
    Ok(())
}

fn graph_of(h: Handle) -> R<(Vec<i32>, Vec<i32>)> {
    state::comm(h)?;
    match get(h) {
        Some(Topo::Graph { index, edges }) => Ok((index, edges)),
        _ => Err(no_topo(h, "graph")),
    }
}

fn neighbors_of(index: &[i32], edges: &[i32], rank: c_int) -> R<Vec<i32>> {
    let r = usize::try_from(rank)
        .ok()
        .filter(|&r| r < index.len())
        .ok_or_else(|| {
            err(
                abi::ERR_RANK,
                format!("rank {rank} is not a node of the graph"),
            )
        })?;
    let lo = if r == 0 { 0 } else { index[r - 1] as usize };
    let hi = index[r] as usize;
    Ok(edges[lo..hi].to_vec())
}

mpi_fn! {
    /// A communicator with a general graph (`index`, `edges` as the
    /// standard defines them). Collective.
    fn MPI_Graph_create / PMPI_Graph_create(comm: Handle, nnodes: c_int, index: *const c_int, edges: *const c_int, reorder: c_int, comm_graph: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = reorder;
        state::comm(comm)?;
        let n = len(nnodes, abi::ERR_ARG, "nnodes")?;
        let idx = int_vec(index, n, "index")?;
        let ne = idx.last().copied().unwrap_or(0);
        let ne = len(ne, abi::ERR_ARG, "number of edges")?;
        let e = int_vec(edges, ne, "edges")?;
        check_graph(n, &idx, &e)?;
        make(comm, n, Topo::Graph { index: idx, edges: e }, comm_graph)
    }
}

mpi_fn! {
    /// The rank `MPI_Graph_create` would give this process.
    fn MPI_Graph_map / PMPI_Graph_map(comm: Handle, nnodes: c_int, index: *const c_int, edges: *const c_int, newrank: *mut c_int) on comm => {
        let _ = (index, edges);
        let c = state::comm(comm)?;
        let n = len(nnodes, abi::ERR_ARG, "nnodes")?;
        if n > c.size() {
            return Err(err(abi::ERR_ARG, "the graph is larger than the communicator"));
        }
        let r = if c.rank() < n { c.rank() as c_int } else { abi::UNDEFINED };
        out(newrank, r, "newrank")
    }
}

mpi_fn! {
    /// The number of nodes and edges of a graph communicator.
    fn MPI_Graphdims_get / PMPI_Graphdims_get(comm: Handle, nnodes: *mut c_int, nedges: *mut c_int) on comm => {
        let (index, edges) = graph_of(comm)?;
        out(nnodes, index.len() as c_int, "nnodes")?;
        out(nedges, edges.len() as c_int, "nedges")
    }
}

mpi_fn! {
    /// The `index` and `edges` of a graph communicator.
    fn MPI_Graph_get / PMPI_Graph_get(comm: Handle, maxindex: c_int, maxedges: c_int, index: *mut c_int, edges: *mut c_int) on comm => {
        let (idx, e) = graph_of(comm)?;
        let mi = len(maxindex, abi::ERR_ARG, "maxindex")?;
        let me = len(maxedges, abi::ERR_ARG, "maxedges")?;
        write_ints(index, &idx, mi, "index")?;
        write_ints(edges, &e, me, "edges")
    }
}

mpi_fn! {
    /// The number of neighbours of `rank` in a graph communicator.
    fn MPI_Graph_neighbors_count / PMPI_Graph_neighbors_count(comm: Handle, rank: c_int, nneighbors: *mut c_int) on comm => {
        let (idx, e) = graph_of(comm)?;
        let n = neighbors_of(&idx, &e, rank)?;
        out(nneighbors, n.len() as c_int, "nneighbors")
    }
}

mpi_fn! {
    /// The neighbours of `rank` in a graph communicator.
    fn MPI_Graph_neighbors / PMPI_Graph_neighbors(comm: Handle, rank: c_int, maxneighbors: c_int, neighbors: *mut c_int) on comm => {
        let (idx, e) = graph_of(comm)?;
        let n = neighbors_of(&idx, &e, rank)?;
        let max = len(maxneighbors, abi::ERR_ARG, "maxneighbors")?;
        write_ints(neighbors, &n, max, "neighbors")
    }
}

/// Reads weights: `MPI_UNWEIGHTED` gives `None`; `MPI_WEIGHTS_EMPTY` (for
/// no edges, yet weighted) gives weights of 1.
unsafe fn weights(p: *const c_int, n: usize, what: &str) -> R<Option<Vec<i32>>> {
    if p as usize == abi::UNWEIGHTED {
        return Ok(None);
    }
    if p as usize == abi::WEIGHTS_EMPTY {
        return Ok(Some(vec![1; n]));
    }
    // SAFETY: the caller's array of `n` ints.
    Ok(Some(unsafe { int_vec(p, n, what) }?))
}

fn check_ranks(v: &[i32], size: usize, what: &str) -> R<()> {
    match v.iter().find(|&&r| r < 0 || r as usize >= size) {
        Some(&r) => Err(err(
            abi::ERR_RANK,
            format!("{what}: rank {r} is not in the communicator of {size}"),
        )),
        None => Ok(()),
    }
}

/// Makes a distributed-graph communicator over every rank of `comm`.
unsafe fn make_dist(comm: Handle, t: Topo, newcomm: *mut Handle) -> R<()> {
    let n = state::comm(comm)?.size();
    // SAFETY: the caller's pointer.
    unsafe { make(comm, n, t, newcomm) }
}

mpi_fn! {
    /// A distributed graph from each process's own in- and out-neighbours.
    /// Collective.
    fn MPI_Dist_graph_create_adjacent / PMPI_Dist_graph_create_adjacent(comm: Handle, indegree: c_int, sources: *const c_int, sourceweights: *const c_int, outdegree: c_int, destinations: *const c_int, destweights: *const c_int, info: Handle, reorder: c_int, comm_dist_graph: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = (info, reorder);
        let size = state::comm(comm)?.size();
        let ni = len(indegree, abi::ERR_ARG, "indegree")?;
        let no = len(outdegree, abi::ERR_ARG, "outdegree")?;
        let s = int_vec(sources, ni, "sources")?;
        let d = int_vec(destinations, no, "destinations")?;
        check_ranks(&s, size, "sources")?;
        check_ranks(&d, size, "destinations")?;
        let sw = weights(sourceweights, ni, "sourceweights")?;
        let dw = weights(destweights, no, "destweights")?;
        let weighted = sw.is_some() || dw.is_some();
        let t = Topo::Dist {
            sourceweights: sw.unwrap_or_else(|| vec![1; ni]),
            destweights: dw.unwrap_or_else(|| vec![1; no]),
            sources: s,
            dests: d,
            weighted,
        };
        make_dist(comm, t, comm_dist_graph)
    }
}

mpi_fn! {
    /// A distributed graph from edges any process may give: `n` sources,
    /// each with `degrees[i]` destinations (and weights). Collective.
    fn MPI_Dist_graph_create / PMPI_Dist_graph_create(comm: Handle, n: c_int, sources: *const c_int, degrees: *const c_int, destinations: *const c_int, weights_: *const c_int, info: Handle, reorder: c_int, comm_dist_graph: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = (info, reorder);
        let c = state::comm(comm)?;
        let size = c.size();
        let nn = len(n, abi::ERR_ARG, "n")?;
        let src = int_vec(sources, nn, "sources")?;
        let deg = int_vec(degrees, nn, "degrees")?;
        check_ranks(&src, size, "sources")?;
        if deg.iter().any(|&d| d < 0) {
            return Err(err(abi::ERR_ARG, "negative degree"));
        }
        let total: usize = deg.iter().map(|&d| d as usize).sum();
        let dst = int_vec(destinations, total, "destinations")?;
        check_ranks(&dst, size, "destinations")?;
        let w = weights(weights_, total, "weights")?;
        // Every edge as (source, dest, weight), gathered on every rank.
        let mut mine: Vec<i32> = Vec::with_capacity(3 * total);
        let mut k = 0;
        for (i, &s) in src.iter().enumerate() {
            for _ in 0..deg[i] {
                mine.extend_from_slice(&[s, dst[k], w.as_ref().map_or(1, |w| w[k])]);
                k += 1;
            }
        }
        let weighted_here = [i32::from(w.is_some())];
        let mut counts = vec![0i32; size];
        c.allgather(&[mine.len() as i32], &mut counts)?;
        let mut wflags = vec![0i32; size];
        c.allgather(&weighted_here, &mut wflags)?;
        let counts: Vec<usize> = counts.iter().map(|&x| x as usize).collect();
        let mut displs = Vec::with_capacity(size);
        let mut acc = 0;
        for &x in &counts {
            displs.push(acc);
            acc += x;
        }
        let mut all = vec![0i32; acc];
        c.allgatherv(&mine, &mut all, &counts, &displs)?;
        let me = c.rank() as i32;
        let (mut s_, mut sw, mut d_, mut dw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in all.chunks(3) {
            if e[1] == me {
                s_.push(e[0]);
                sw.push(e[2]);
            }
            if e[0] == me {
                d_.push(e[1]);
                dw.push(e[2]);
            }
        }
        let t = Topo::Dist { sources: s_, sourceweights: sw, dests: d_, destweights: dw, weighted: wflags.iter().any(|&f| f != 0) };
        make_dist(comm, t, comm_dist_graph)
    }
}

fn dist_of(h: Handle) -> R<Topo> {
    state::comm(h)?;
    match get(h) {
        Some(t @ Topo::Dist { .. }) => Ok(t),
        Some(Topo::Graph { index, edges }) => {
            // A graph communicator answers too: its neighbours both ways.
            let me = state::comm(h)?.rank() as c_int;
            let n = neighbors_of(&index, &edges, me)?;
            Ok(Topo::Dist {
                sourceweights: vec![1; n.len()],
                destweights: vec![1; n.len()],
                sources: n.clone(),
                dests: n,
                weighted: false,
            })
        }
        Some(Topo::Cart(cart)) => {
            let me = state::comm(h)?.rank();
            let mut n = Vec::new();
            for d in 0..cart.dims.len() {
                let (s, t) = cart.shift(me, d, 1);
                n.push(s.map_or(abi::PROC_NULL, |r| r as i32));
                n.push(t.map_or(abi::PROC_NULL, |r| r as i32));
            }
            Ok(Topo::Dist {
                sourceweights: vec![1; n.len()],
                destweights: vec![1; n.len()],
                sources: n.clone(),
                dests: n,
                weighted: false,
            })
        }
        None => Err(no_topo(h, "distributed graph")),
    }
}

/// The neighbours of `h` for the neighbourhood collectives
/// ([`crate::neighbor`]).
pub(crate) struct Neighbours {
    pub(crate) sources: Vec<i32>,
    pub(crate) dests: Vec<i32>,
    /// A Cartesian topology: slot `2d` is the -1 neighbour of dimension `d`,
    /// `2d + 1` the +1 one (a block sent to +1 fills the receiver's -1 slot).
    pub(crate) cart: bool,
}

/// The in- and out-neighbours of any topology of `h` (`MPI_ERR_TOPOLOGY`
/// without one).
pub(crate) fn neighbours(h: Handle) -> R<Neighbours> {
    let cart = matches!(get(h), Some(Topo::Cart(_)));
    let Topo::Dist { sources, dests, .. } = dist_of(h)? else {
        unreachable!("dist_of gives a distributed graph")
    };
    Ok(Neighbours {
        sources,
        dests,
        cart,
    })
}

mpi_fn! {
    /// In- and out-degree, and whether the graph has weights.
    fn MPI_Dist_graph_neighbors_count / PMPI_Dist_graph_neighbors_count(comm: Handle, indegree: *mut c_int, outdegree: *mut c_int, weighted: *mut c_int) on comm => {
        let Topo::Dist { sources, dests, weighted: w, .. } = dist_of(comm)? else { unreachable!() };
        out(indegree, sources.len() as c_int, "indegree")?;
        out(outdegree, dests.len() as c_int, "outdegree")?;
        out(weighted, w as c_int, "weighted")
    }
}

mpi_fn! {
    /// The in- and out-neighbours (and weights, unless `MPI_UNWEIGHTED`).
    fn MPI_Dist_graph_neighbors / PMPI_Dist_graph_neighbors(comm: Handle, maxindegree: c_int, sources: *mut c_int, sourceweights: *mut c_int, maxoutdegree: c_int, destinations: *mut c_int, destweights: *mut c_int) on comm => {
        let Topo::Dist { sources: s, sourceweights: sw, dests: d, destweights: dw, .. } = dist_of(comm)? else { unreachable!() };
        let mi = len(maxindegree, abi::ERR_ARG, "maxindegree")?;
        let mo = len(maxoutdegree, abi::ERR_ARG, "maxoutdegree")?;
        write_ints(sources, &s, mi, "sources")?;
        write_ints(destinations, &d, mo, "destinations")?;
        if sourceweights as usize != abi::UNWEIGHTED && sourceweights as usize != abi::WEIGHTS_EMPTY {
            write_ints(sourceweights, &sw, mi, "sourceweights")?;
        }
        if destweights as usize != abi::UNWEIGHTED && destweights as usize != abi::WEIGHTS_EMPTY {
            write_ints(destweights, &dw, mo, "destweights")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Cart;

    /// The serial model: every rank's coordinates by counting in the grid.
    fn model(dims: &[i32]) -> Vec<Vec<i32>> {
        let mut all = vec![vec![0; dims.len()]];
        let n: i32 = dims.iter().product();
        for _ in 1..n {
            let mut c = all.last().unwrap().clone();
            for i in (0..dims.len()).rev() {
                c[i] += 1;
                if c[i] < dims[i] {
                    break;
                }
                c[i] = 0;
            }
            all.push(c);
        }
        all
    }

    #[test]
    fn coords_and_ranks_match_the_model() {
        for dims in [vec![4], vec![2, 3], vec![3, 1, 2], vec![2, 2, 2]] {
            let cart = Cart {
                periods: vec![false; dims.len()],
                dims: dims.clone(),
            };
            for (r, c) in model(&dims).iter().enumerate() {
                assert_eq!(&cart.coords(r), c);
                assert_eq!(cart.rank(c), Some(r));
            }
        }
    }

    #[test]
    fn shifts_wrap_only_where_periodic() {
        let cart = Cart {
            dims: vec![2, 3],
            periods: vec![false, true],
        };
        // rank 0 = (0,0): along dim 1 (periodic) the source is (0,2) = 2.
        assert_eq!(cart.shift(0, 1, 1), (Some(2), Some(1)));
        // along dim 0 (not periodic): no source, dest (1,0) = 3.
        assert_eq!(cart.shift(0, 0, 1), (None, Some(3)));
        assert_eq!(cart.shift(3, 0, 1), (Some(0), None));
        assert_eq!(cart.shift(0, 1, -4), (Some(1), Some(2)));
        assert_eq!(cart.rank(&[0, -1]), Some(2));
        assert_eq!(cart.rank(&[2, 0]), None);
    }
}
