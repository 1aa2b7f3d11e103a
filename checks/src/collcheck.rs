//! `collcheck`: checks every collective against a serial computation.
//!
//! Run under the launcher:
//!
//! ```text
//! dosrun -n 4 target/debug/collcheck [--seed S] [--cases K]
//! ```
//!
//! Every rank derives all ranks' data from the seed, so each can compute the
//! expected result of each collective by itself. Each case draws sizes
//! (around the algorithm thresholds and the eager limit), counts,
//! displacements and a root, and runs every collective with a commutative
//! (wrapping sum) and a non-commutative (affine map composition) operation,
//! on the world and on a communicator split by parity with reversed keys;
//! then groups and the communicators `Comm::create` and
//! `Comm::create_group` make from them.
//! Rank 0 prints `collcheck: OK <n> ranks <k> cases`; a mismatch aborts the
//! job with a message naming the collective, the rank and the case.
//!
//! The checking functions are also used by the `coll` integration tests,
//! which drive them with proptest on ranks run as threads.

use dos::op::{self, Sum};
use dos::Comm;

/// One test case: every rank builds the same one from the same numbers.
#[derive(Debug, Clone)]
pub struct Case {
    /// Seeds the data, counts and displacements.
    pub seed: u64,
    /// Elements (of `u64`) per rank for reductions and broadcasts; blocks of
    /// gathers and all-to-alls have about `count / size` elements.
    pub count: usize,
    /// The root (reduced modulo the communicator size).
    pub root: usize,
}

/// A mismatch or error, described for humans.
pub type Check = Result<(), String>;

/// An element-wise reduction on `u64`.
type Combine = fn(u64, u64) -> u64;

/// SplitMix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed))
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    /// A number below `n` (0 if `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Element `i` of rank `rank`'s data for the collective salted `salt`.
fn val(seed: u64, salt: u64, rank: usize, i: usize) -> u64 {
    mix(seed ^ mix(salt ^ mix(((rank as u64) << 40) ^ i as u64)))
}

fn vals(seed: u64, salt: u64, rank: usize, len: usize) -> Vec<u64> {
    (0..len).map(|i| val(seed, salt, rank, i)).collect()
}

/// An associative, non-commutative operation: composition of affine maps
/// `x -> a x + b` on `u32` (`a` in the high half), lower rank applied first.
pub fn affine(x: u64, y: u64) -> u64 {
    let (ax, bx) = ((x >> 32) as u32, x as u32);
    let (ay, by) = ((y >> 32) as u32, y as u32);
    let a = ax.wrapping_mul(ay);
    let b = bx.wrapping_mul(ay).wrapping_add(by);
    ((a as u64) << 32) | b as u64
}

/// Serial reduction over ranks `0..n` of `f`, in rank order.
fn serial(n: usize, len: usize, f: Combine, data: impl Fn(usize) -> Vec<u64>) -> Vec<u64> {
    let mut acc = data(0);
    assert_eq!(acc.len(), len);
    for q in 1..n {
        for (a, b) in acc.iter_mut().zip(data(q)) {
            *a = f(*a, b);
        }
    }
    acc
}

fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

fn same(what: &str, got: &[u64], want: &[u64]) -> Check {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        return Err(format!(
            "{what}: element {i} of {} is {:#x}, expected {:#x}",
            got.len(),
            got[i],
            want[i]
        ));
    }
    Ok(())
}

fn ok<T>(what: &str, r: dos::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// A variable layout: counts and displacements of `n` blocks in a buffer
/// of `len`, with gaps, in rank order or reversed.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Elements per rank.
    pub counts: Vec<usize>,
    /// Start of each rank's block.
    pub displs: Vec<usize>,
    /// Buffer length.
    pub len: usize,
}

impl Layout {
    /// Places `counts` with random gaps, in rank order or (sometimes) reversed.
    pub fn new(rng: &mut Rng, counts: Vec<usize>) -> Layout {
        let n = counts.len();
        let reversed = rng.below(3) == 0;
        let mut displs = vec![0; n];
        let mut at = rng.below(3);
        for k in 0..n {
            let i = if reversed { n - 1 - k } else { k };
            displs[i] = at;
            at += counts[i] + rng.below(2);
        }
        Layout {
            counts,
            displs,
            len: at + rng.below(2),
        }
    }

    fn block(&self, i: usize) -> std::ops::Range<usize> {
        self.displs[i]..self.displs[i] + self.counts[i]
    }
}

/// Block length of gathers and all-to-alls for this case on `n` ranks.
fn block_len(case: &Case, n: usize) -> usize {
    case.count / n
}

/// Runs every collective on `comm` for `case` and compares with the serial result.
pub fn check_comm(comm: &Comm, case: &Case) -> Check {
    let (n, r) = (comm.size(), comm.rank());
    let root = case.root % n;
    let seed = case.seed;
    let count = case.count;
    let blk = block_len(case, n);
    let ctx = |what: &str| {
        format!("{what} (rank {r} of {n}, root {root}, count {count}, seed {seed:#x})")
    };
    let mut rng = Rng::new(seed ^ 0x5eed);

    ok(&ctx("barrier"), comm.barrier())?;

    // bcast
    let data = vals(seed, 1, root, count);
    let mut buf = if r == root {
        data.clone()
    } else {
        vec![0; count]
    };
    ok(&ctx("bcast"), comm.bcast(&mut buf, root))?;
    same(&ctx("bcast"), &buf, &data)?;

    // reduce, allreduce, allreduce_in_place with both operations
    let ops: [(&str, Combine); 2] = [("sum", add), ("affine", affine)];
    for (k, (name, f)) in ops.into_iter().enumerate() {
        let salt = 10 + k as u64;
        let mine = vals(seed, salt, r, count);
        let want = serial(n, count, f, |q| vals(seed, salt, q, count));
        let nc = op::user_ordered(f);

        let mut got = if r == root {
            vec![0; count]
        } else {
            Vec::new()
        };
        let res = if k == 0 {
            comm.reduce(&mine, &mut got, Sum, root)
        } else {
            comm.reduce(&mine, &mut got, nc, root)
        };
        ok(&ctx(&format!("reduce {name}")), res)?;
        if r == root {
            same(&ctx(&format!("reduce {name}")), &got, &want)?;
        }

        let mut got = vec![0; count];
        let res = if k == 0 {
            comm.allreduce(&mine, &mut got, Sum)
        } else {
            comm.allreduce(&mine, &mut got, nc)
        };
        ok(&ctx(&format!("allreduce {name}")), res)?;
        same(&ctx(&format!("allreduce {name}")), &got, &want)?;

        let mut inplace = mine.clone();
        let res = if k == 0 {
            comm.allreduce_in_place(&mut inplace, Sum)
        } else {
            comm.allreduce_in_place(&mut inplace, nc)
        };
        ok(&ctx(&format!("allreduce_in_place {name}")), res)?;
        same(&ctx(&format!("allreduce_in_place {name}")), &inplace, &want)?;

        // scan and exscan
        let mut got = vec![0; count];
        let res = if k == 0 {
            comm.scan(&mine, &mut got, Sum)
        } else {
            comm.scan(&mine, &mut got, nc)
        };
        ok(&ctx(&format!("scan {name}")), res)?;
        let want_scan = serial(r + 1, count, f, |q| vals(seed, salt, q, count));
        same(&ctx(&format!("scan {name}")), &got, &want_scan)?;

        let sentinel = vec![0xdead_beef; count];
        let mut got = sentinel.clone();
        let res = if k == 0 {
            comm.exscan(&mine, &mut got, Sum)
        } else {
            comm.exscan(&mine, &mut got, nc)
        };
        ok(&ctx(&format!("exscan {name}")), res)?;
        let want_ex = if r == 0 {
            sentinel
        } else {
            serial(r, count, f, |q| vals(seed, salt, q, count))
        };
        same(&ctx(&format!("exscan {name}")), &got, &want_ex)?;

        // reduce_scatter with random counts, reduce_scatter_block
        let counts: Vec<usize> = (0..n).map(|_| rng.below(2 * blk + 2)).collect();
        let total: usize = counts.iter().sum();
        let start: usize = counts[..r].iter().sum();
        let mine = vals(seed, salt + 100, r, total);
        let want = serial(n, total, f, |q| vals(seed, salt + 100, q, total));
        let mut got = vec![0; counts[r]];
        let res = if k == 0 {
            comm.reduce_scatter(&mine, &mut got, &counts, Sum)
        } else {
            comm.reduce_scatter(&mine, &mut got, &counts, nc)
        };
        ok(&ctx(&format!("reduce_scatter {name}")), res)?;
        same(
            &ctx(&format!("reduce_scatter {name}")),
            &got,
            &want[start..start + counts[r]],
        )?;

        let mine = vals(seed, salt + 200, r, n * blk);
        let want = serial(n, n * blk, f, |q| vals(seed, salt + 200, q, n * blk));
        let mut got = vec![0; blk];
        let res = if k == 0 {
            comm.reduce_scatter_block(&mine, &mut got, Sum)
        } else {
            comm.reduce_scatter_block(&mine, &mut got, nc)
        };
        ok(&ctx(&format!("reduce_scatter_block {name}")), res)?;
        same(
            &ctx(&format!("reduce_scatter_block {name}")),
            &got,
            &want[r * blk..(r + 1) * blk],
        )?;
    }

    // gather, allgather, scatter
    let all: Vec<u64> = (0..n).flat_map(|q| vals(seed, 20, q, blk)).collect();
    let mut got = if r == root {
        vec![0; n * blk]
    } else {
        Vec::new()
    };
    ok(
        &ctx("gather"),
        comm.gather(&all[r * blk..(r + 1) * blk], &mut got, root),
    )?;
    if r == root {
        same(&ctx("gather"), &got, &all)?;
    }
    let mut got = vec![0; n * blk];
    ok(
        &ctx("allgather"),
        comm.allgather(&all[r * blk..(r + 1) * blk], &mut got),
    )?;
    same(&ctx("allgather"), &got, &all)?;
    let send = if r == root { all.clone() } else { Vec::new() };
    let mut got = vec![0; blk];
    ok(&ctx("scatter"), comm.scatter(&send, &mut got, root))?;
    same(&ctx("scatter"), &got, &all[r * blk..(r + 1) * blk])?;

    // gatherv, allgatherv, scatterv
    let counts: Vec<usize> = (0..n).map(|_| rng.below(2 * blk + 2)).collect();
    let lay = Layout::new(&mut rng, counts);
    let mine = vals(seed, 21, r, lay.counts[r]);
    let mut want = vec![0u64; lay.len];
    for q in 0..n {
        want[lay.block(q)].copy_from_slice(&vals(seed, 21, q, lay.counts[q]));
    }
    let mut got = vec![0u64; lay.len];
    ok(
        &ctx("gatherv"),
        comm.gatherv(&mine, &mut got, &lay.counts, &lay.displs, root),
    )?;
    if r == root {
        same(&ctx("gatherv"), &got, &want)?;
    }
    let mut got = vec![0u64; lay.len];
    ok(
        &ctx("allgatherv"),
        comm.allgatherv(&mine, &mut got, &lay.counts, &lay.displs),
    )?;
    same(&ctx("allgatherv"), &got, &want)?;
    let send = if r == root { want.clone() } else { Vec::new() };
    let mut got = vec![0u64; lay.counts[r]];
    ok(
        &ctx("scatterv"),
        comm.scatterv(&send, &lay.counts, &lay.displs, &mut got, root),
    )?;
    same(&ctx("scatterv"), &got, &mine)?;

    // alltoall: element k of the block from q to d is val(q, d * 2^20 + k)
    let send: Vec<u64> = (0..n)
        .flat_map(|d| (0..blk).map(move |k| val(seed, 30, r, (d << 20) + k)))
        .collect();
    let want: Vec<u64> = (0..n)
        .flat_map(|q| (0..blk).map(move |k| val(seed, 30, q, (r << 20) + k)))
        .collect();
    let mut got = vec![0; n * blk];
    ok(&ctx("alltoall"), comm.alltoall(&send, &mut got))?;
    same(&ctx("alltoall"), &got, &want)?;

    // alltoallv: rank q sends c(q, d) elements to d
    let c = |q: usize, d: usize| {
        (mix(seed ^ ((q as u64) << 32) ^ d as u64) % (blk as u64 + 2)) as usize
    };
    let sl = Layout::new(&mut rng, (0..n).map(|d| c(r, d)).collect());
    let rl = Layout::new(&mut rng, (0..n).map(|q| c(q, r)).collect());
    let mut send = vec![0u64; sl.len];
    for d in 0..n {
        for (k, x) in send[sl.block(d)].iter_mut().enumerate() {
            *x = val(seed, 31, r, (d << 20) + k);
        }
    }
    let mut want = vec![0u64; rl.len];
    for q in 0..n {
        for (k, x) in want[rl.block(q)].iter_mut().enumerate() {
            *x = val(seed, 31, q, (r << 20) + k);
        }
    }
    let mut got = vec![0u64; rl.len];
    ok(
        &ctx("alltoallv"),
        comm.alltoallv(
            &send, &sl.counts, &sl.displs, &mut got, &rl.counts, &rl.displs,
        ),
    )?;
    same(&ctx("alltoallv"), &got, &want)?;
    check_nonblocking(comm, case)?;
    check_in_place(comm, case)
}

/// Every in-place form (`MPI_IN_PLACE`) for `case` on `comm` against the
/// serial results.
pub fn check_in_place(comm: &Comm, case: &Case) -> Check {
    let (n, r) = (comm.size(), comm.rank());
    let root = (case.root / 5) % n;
    let (seed, count) = (case.seed ^ 0x2c2c, case.count);
    let blk = block_len(case, n);
    let ctx = |what: &str| {
        format!("{what} (in place, rank {r} of {n}, root {root}, count {count}, seed {seed:#x})")
    };
    let nc = op::user_ordered(affine);
    let of = |salt: u64, f: Combine, upto: usize, len: usize| {
        serial(upto, len, f, |q| vals(seed, salt, q, len))
    };

    let mut b = vals(seed, 1, r, count);
    ok(
        &ctx("reduce_in_place"),
        comm.reduce_in_place(&mut b, nc, root),
    )?;
    let want = if r == root {
        of(1, affine, n, count)
    } else {
        vals(seed, 1, r, count)
    };
    same(&ctx("reduce_in_place"), &b, &want)?;

    let blocks = |salt: u64, q: usize| vals(seed, salt, q, n * blk);
    let mut b = if r == root {
        let mut b = vec![0; n * blk];
        b[root * blk..(root + 1) * blk].copy_from_slice(&vals(seed, 2, root, blk));
        b
    } else {
        vals(seed, 2, r, blk)
    };
    ok(&ctx("gather_in_place"), comm.gather_in_place(&mut b, root))?;
    if r == root {
        let want: Vec<u64> = (0..n).flat_map(|q| vals(seed, 2, q, blk)).collect();
        same(&ctx("gather_in_place"), &b, &want)?;
    }

    let mut b = if r == root {
        blocks(3, root)
    } else {
        vec![0; blk]
    };
    ok(
        &ctx("scatter_in_place"),
        comm.scatter_in_place(&mut b, root),
    )?;
    let want = if r == root {
        blocks(3, root)
    } else {
        blocks(3, root)[r * blk..(r + 1) * blk].to_vec()
    };
    same(&ctx("scatter_in_place"), &b, &want)?;

    let mut b = vec![0; n * blk];
    b[r * blk..(r + 1) * blk].copy_from_slice(&vals(seed, 4, r, blk));
    ok(&ctx("allgather_in_place"), comm.allgather_in_place(&mut b))?;
    let want: Vec<u64> = (0..n).flat_map(|q| vals(seed, 4, q, blk)).collect();
    same(&ctx("allgather_in_place"), &b, &want)?;

    let mut b = blocks(5, r);
    ok(&ctx("alltoall_in_place"), comm.alltoall_in_place(&mut b))?;
    let want: Vec<u64> = (0..n)
        .flat_map(|q| blocks(5, q)[r * blk..(r + 1) * blk].to_vec())
        .collect();
    same(&ctx("alltoall_in_place"), &b, &want)?;

    let mut b = blocks(6, r);
    ok(
        &ctx("reduce_scatter_block_in_place"),
        comm.reduce_scatter_block_in_place(&mut b, nc),
    )?;
    let whole = of(6, affine, n, n * blk);
    same(
        &ctx("reduce_scatter_block_in_place"),
        &b[..blk],
        &whole[r * blk..(r + 1) * blk],
    )?;

    // Uneven blocks: rank q gets q + blk elements.
    let counts: Vec<usize> = (0..n).map(|q| q + blk).collect();
    let total: usize = counts.iter().sum();
    let start: usize = counts[..r].iter().sum();
    let mut b = vals(seed, 7, r, total);
    ok(
        &ctx("reduce_scatter_in_place"),
        comm.reduce_scatter_in_place(&mut b, &counts, nc),
    )?;
    let whole = of(7, affine, n, total);
    same(
        &ctx("reduce_scatter_in_place"),
        &b[..counts[r]],
        &whole[start..start + counts[r]],
    )?;

    let mut b = vals(seed, 8, r, count);
    ok(&ctx("scan_in_place"), comm.scan_in_place(&mut b, nc))?;
    same(&ctx("scan_in_place"), &b, &of(8, affine, r + 1, count))?;

    let mut b = vals(seed, 9, r, count);
    ok(&ctx("exscan_in_place"), comm.exscan_in_place(&mut b, nc))?;
    let want = if r == 0 {
        vals(seed, 9, 0, count)
    } else {
        of(9, affine, r, count)
    };
    same(&ctx("exscan_in_place"), &b, &want)
}

/// Every nonblocking collective for `case` on `comm`, all outstanding at
/// once and completed together, next to a blocking collective, compared with
/// the serial results.
pub fn check_nonblocking(comm: &Comm, case: &Case) -> Check {
    let (n, r) = (comm.size(), comm.rank());
    let root = (case.root / 3) % n;
    let (seed, count) = (case.seed ^ 0x1b1b, case.count);
    let blk = block_len(case, n);
    let ctx = |what: &str| {
        format!("{what} (nonblocking, rank {r} of {n}, root {root}, count {count}, seed {seed:#x})")
    };
    let nc = op::user_ordered(affine);
    let at_root = |len: usize| if r == root { len } else { 0 };

    let sum_in = vals(seed, 1, r, count);
    let mut sum = vec![0; count];
    let mut sum_ip = vals(seed, 2, r, count);
    let aff_in = vals(seed, 3, r, count);
    let mut aff = vec![0; at_root(count)];
    let mut aff_ip = vals(seed, 4, r, count);
    let bc_data = vals(seed, 5, root, count);
    let mut bc = if r == root {
        bc_data.clone()
    } else {
        vec![0; count]
    };
    let gat_in = vals(seed, 6, r, blk);
    let mut gat = vec![0; at_root(n * blk)];
    let sca_in = if r == root {
        vals(seed, 7, r, n * blk)
    } else {
        Vec::new()
    };
    let mut sca = vec![0; blk];
    let allg_in = vals(seed, 8, r, blk);
    let mut allg = vec![0; n * blk];
    let a2a_in = vals(seed, 9, r, n * blk);
    let mut a2a = vec![0; n * blk];
    let rsb_in = vals(seed, 10, r, n * blk);
    let mut rsb = vec![0; blk];
    let scan_in = vals(seed, 11, r, count);
    let mut scan = vec![0; count];
    let mut exscan = vec![0xdead_beef; count];
    let mut blocking = [0u64];
    // Variable layouts (with gaps, sometimes reversed), as for the blocking ones.
    let mut rng = Rng::new(seed ^ 0x7777);
    let vc: Vec<usize> = (0..n).map(|_| rng.below(2 * blk + 2)).collect();
    let lay = Layout::new(&mut rng, vc);
    let v_in = vals(seed, 13, r, lay.counts[r]);
    let mut v_all = vec![0u64; lay.len];
    for q in 0..n {
        v_all[lay.block(q)].copy_from_slice(&vals(seed, 13, q, lay.counts[q]));
    }
    let mut gv = vec![0u64; if r == root { lay.len } else { 0 }];
    let mut agv = vec![0u64; lay.len];
    let sv_in = if r == root { v_all.clone() } else { Vec::new() };
    let mut sv = vec![0u64; lay.counts[r]];
    let c = |q: usize, d: usize| {
        (mix(seed ^ ((q as u64) << 32) ^ d as u64) % (blk as u64 + 2)) as usize
    };
    let sl = Layout::new(&mut rng, (0..n).map(|d| c(r, d)).collect());
    let rl = Layout::new(&mut rng, (0..n).map(|q| c(q, r)).collect());
    let mut a2av_in = vec![0u64; sl.len];
    for d in 0..n {
        for (k, x) in a2av_in[sl.block(d)].iter_mut().enumerate() {
            *x = val(seed, 14, r, (d << 20) + k);
        }
    }
    let mut a2av = vec![0u64; rl.len];
    // Uneven blocks: rank q gets q + blk elements.
    let rs_counts: Vec<usize> = (0..n).map(|q| q + blk).collect();
    let rs_total: usize = rs_counts.iter().sum();
    let rs_start: usize = rs_counts[..r].iter().sum();
    let rs_in = vals(seed, 12, r, rs_total);
    let mut rs = vec![0; rs_counts[r]];

    let res = dos::scope(|s| -> dos::Result<()> {
        let reqs = vec![
            comm.ibarrier(s)?,
            comm.iallreduce(s, &sum_in, &mut sum, Sum)?,
            comm.iallreduce_in_place(s, &mut sum_ip, nc)?,
            comm.ireduce(s, &aff_in, &mut aff, nc, root)?,
            comm.ireduce_in_place(s, &mut aff_ip, nc, root)?,
            comm.ibcast(s, &mut bc, root)?,
            comm.igather(s, &gat_in, &mut gat, root)?,
            comm.iscatter(s, &sca_in, &mut sca, root)?,
            comm.iallgather(s, &allg_in, &mut allg)?,
            comm.ialltoall(s, &a2a_in, &mut a2a)?,
            comm.ireduce_scatter_block(s, &rsb_in, &mut rsb, nc)?,
            comm.ireduce_scatter(s, &rs_in, &mut rs, &rs_counts, nc)?,
            comm.igatherv(s, &v_in, &mut gv, &lay.counts, &lay.displs, root)?,
            comm.iscatterv(s, &sv_in, &lay.counts, &lay.displs, &mut sv, root)?,
            comm.iallgatherv(s, &v_in, &mut agv, &lay.counts, &lay.displs)?,
            comm.ialltoallv(
                s, &a2av_in, &sl.counts, &sl.displs, &mut a2av, &rl.counts, &rl.displs,
            )?,
            comm.iscan(s, &scan_in, &mut scan, nc)?,
            comm.iexscan(s, &scan_in, &mut exscan, nc)?,
        ];
        comm.allreduce(&[1u64], &mut blocking, Sum)?;
        dos::Request::wait_all(reqs).map(|_| ())
    });
    ok(&ctx("start or wait"), res)?;
    same(
        &ctx("blocking allreduce among them"),
        &blocking,
        &[n as u64],
    )?;
    let of = |salt: u64, f: Combine, upto: usize, len: usize| {
        serial(upto, len, f, |q| vals(seed, salt, q, len))
    };
    same(&ctx("iallreduce"), &sum, &of(1, add, n, count))?;
    same(
        &ctx("iallreduce_in_place"),
        &sum_ip,
        &of(2, affine, n, count),
    )?;
    if r == root {
        same(&ctx("ireduce"), &aff, &of(3, affine, n, count))?;
        same(&ctx("ireduce_in_place"), &aff_ip, &of(4, affine, n, count))?;
    } else {
        same(
            &ctx("ireduce_in_place (not root)"),
            &aff_ip,
            &vals(seed, 4, r, count),
        )?;
    }
    same(&ctx("ibcast"), &bc, &bc_data)?;
    if r == root {
        let want: Vec<u64> = (0..n).flat_map(|q| vals(seed, 6, q, blk)).collect();
        same(&ctx("igather"), &gat, &want)?;
    }
    same(
        &ctx("iscatter"),
        &sca,
        &vals(seed, 7, root, n * blk)[r * blk..(r + 1) * blk],
    )?;
    let want: Vec<u64> = (0..n).flat_map(|q| vals(seed, 8, q, blk)).collect();
    same(&ctx("iallgather"), &allg, &want)?;
    let want: Vec<u64> = (0..n)
        .flat_map(|q| vals(seed, 9, q, n * blk)[r * blk..(r + 1) * blk].to_vec())
        .collect();
    same(&ctx("ialltoall"), &a2a, &want)?;
    same(
        &ctx("ireduce_scatter_block"),
        &rsb,
        &of(10, affine, n, n * blk)[r * blk..(r + 1) * blk],
    )?;
    same(
        &ctx("ireduce_scatter"),
        &rs,
        &of(12, affine, n, rs_total)[rs_start..rs_start + rs_counts[r]],
    )?;
    if r == root {
        same(&ctx("igatherv"), &gv, &v_all)?;
    }
    same(&ctx("iscatterv"), &sv, &v_in)?;
    same(&ctx("iallgatherv"), &agv, &v_all)?;
    let mut want = vec![0u64; rl.len];
    for q in 0..n {
        for (k, x) in want[rl.block(q)].iter_mut().enumerate() {
            *x = val(seed, 14, q, (r << 20) + k);
        }
    }
    same(&ctx("ialltoallv"), &a2av, &want)?;
    same(&ctx("iscan"), &scan, &of(11, affine, r + 1, count))?;
    let want_ex = if r == 0 {
        vec![0xdead_beef; count]
    } else {
        of(11, affine, r, count)
    };
    same(&ctx("iexscan"), &exscan, &want_ex)
}

/// Checks `case` on `world` and on a split of it (by parity, reversed keys).
pub fn check_case(world: &Comm, case: &Case) -> Check {
    check_comm(world, case)?;
    let color = (world.rank() % 2) as u32;
    let sub = world
        .split(Some(color), -(world.rank() as i32))
        .map_err(|e| format!("split: {e}"))?
        .ok_or("split gave no communicator")?;
    if sub.rank() != sub.size() - 1 - world.rank() / 2 {
        return Err(format!(
            "split: world rank {} is rank {} of {}",
            world.rank(),
            sub.rank(),
            sub.size()
        ));
    }
    let sub_case = Case {
        seed: case.seed ^ 0xabcd,
        ..case.clone()
    };
    check_comm(&sub, &sub_case)
}

/// Groups and the communicators made from them (`Comm::create` over the
/// whole communicator, `Comm::create_group` among the members only) against
/// serial models: membership, rank order, and an allreduce on each.
pub fn check_groups(world: &Comm) -> Check {
    let (n, me) = (world.size(), world.rank());
    let all = world.group();
    // Every rank but those of the form 3k+1, in world order.
    let out: Vec<usize> = (0..n).filter(|r| r % 3 == 1).collect();
    let kept = all.excl(&out).map_err(|e| format!("excl: {e}"))?;
    let want: Vec<usize> = (0..n).filter(|r| r % 3 != 1).collect();
    if kept.members() != want.as_slice() {
        return Err(format!("excl: {:?}, expected {want:?}", kept.members()));
    }
    let sub = world.create(&kept).map_err(|e| format!("create: {e}"))?;
    match (sub, want.iter().position(|&r| r == me)) {
        (Some(c), Some(pos)) => {
            if c.rank() != pos || c.size() != want.len() {
                return Err(format!(
                    "create: rank {} of {}, expected {pos} of {}",
                    c.rank(),
                    c.size(),
                    want.len()
                ));
            }
            let mut sum = [0u64];
            c.allreduce(&[me as u64], &mut sum, dos::op::Sum)
                .map_err(|e| format!("allreduce on create's communicator: {e}"))?;
            let serial: u64 = want.iter().map(|&r| r as u64).sum();
            if sum[0] != serial {
                return Err(format!("create: sum {} != {serial}", sum[0]));
            }
        }
        (None, None) => {}
        (got, pos) => {
            return Err(format!(
                "create: member {} but position {pos:?}",
                got.is_some()
            ))
        }
    }
    // The first half of the ranks in reverse order, among themselves only.
    let half: Vec<usize> = (0..n.div_ceil(2)).rev().collect();
    if let Some(pos) = half.iter().position(|&r| r == me) {
        let g = all.incl(&half).map_err(|e| format!("incl: {e}"))?;
        let c = world
            .create_group(&g, 7)
            .map_err(|e| format!("create_group: {e}"))?;
        if c.rank() != pos || c.size() != half.len() {
            return Err(format!(
                "create_group: rank {} of {}, expected {pos} of {}",
                c.rank(),
                c.size(),
                half.len()
            ));
        }
        let mut ranks = vec![0u64; half.len()];
        c.allgather(&[me as u64], &mut ranks)
            .map_err(|e| format!("allgather on create_group's communicator: {e}"))?;
        let serial: Vec<u64> = half.iter().map(|&r| r as u64).collect();
        if ranks != serial {
            return Err(format!("create_group: order {ranks:?} != {serial:?}"));
        }
    }
    Ok(())
}

/// The sizes (in `u64` elements) a case draws from: tiny, around the 2 KiB
/// stack scratch, the 16 KiB eager limit and algorithm switches, and large.
pub fn draw_count(rng: &mut Rng) -> usize {
    match rng.below(6) {
        0 => rng.below(4),
        1 => 1 + rng.below(64),
        2 => 200 + rng.below(120),
        3 => 1900 + rng.below(300),
        4 => 4000 + rng.below(5000),
        _ => 15_000 + rng.below(6000),
    }
}

#[allow(dead_code)]
fn main() {
    let world = match dos::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("collcheck: init failed: {e}");
            std::process::exit(2);
        }
    };
    let mut seed = 1u64;
    let mut cases = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--seed", Some(v)) => seed = v,
            ("--cases", Some(v)) => cases = v as usize,
            _ => {
                if world.rank() == 0 {
                    eprintln!("usage: collcheck [--seed S] [--cases K]");
                }
                std::process::exit(2);
            }
        }
    }
    let mut rng = Rng::new(seed);
    for k in 0..cases {
        let case = Case {
            seed: rng.next_u64(),
            count: draw_count(&mut rng),
            root: rng.below(1 << 16),
        };
        if let Err(msg) = check_case(&world, &case) {
            world.abort(
                1,
                &format!("collcheck: FAILED in case {k} of seed {seed}: {msg}"),
            );
        }
    }
    if let Err(msg) = check_groups(&world) {
        world.abort(1, &format!("collcheck: FAILED in groups: {msg}"));
    }
    if let Err(e) = world.barrier() {
        eprintln!("collcheck: final barrier: {e}");
        std::process::exit(1);
    }
    if world.rank() == 0 {
        println!("collcheck: OK {} ranks {} cases", world.size(), cases);
    }
}
