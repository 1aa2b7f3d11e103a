//! Global arrays and the distributed lock, on one node (threads over shared
//! memory) and across simulated nodes (TCP and the soft-RoCE between them),
//! against serial computations.

use dos::config::Config;
use dos::dsm::{Distribution, GlobalVec};
use dos::testing::{run_cluster, run_cluster_with, run_threads};
use dos::World;
use proptest::prelude::*;

/// Every check of a global array of `len` elements distributed by `dist`;
/// returns what each rank saw go wrong, if anything.
fn check_array(w: &World, len: usize, dist: Distribution) -> Result<(), String> {
    let (n, me) = (w.size(), w.rank());
    let e = |e: dos::Error| e.to_string();
    let mut v: GlobalVec<u64> = w.global_vec(len, dist).map_err(e)?;
    // 1. Each rank writes the elements i with i % n == me: single puts and ranges.
    let mine: Vec<usize> = (0..len).filter(|i| i % n == me).collect();
    for &i in &mine {
        v.put(i, i as u64 * 3 + 1).map_err(e)?;
    }
    v.sync().map_err(e)?;
    let mut all = vec![0u64; len];
    v.get_range(0, &mut all).map_err(e)?;
    for (i, x) in all.iter().enumerate() {
        if *x != i as u64 * 3 + 1 {
            return Err(format!("element {i} is {x} after puts"));
        }
    }
    v.sync().map_err(e)?;
    // 2. Local work in parallel, with global indices.
    v.par_for_each_local(|i, x| *x = *x * 2 + i as u64);
    v.sync().map_err(e)?;
    // 3. A range written by one rank across owners, read back element-wise.
    if me == n - 1 && len > 2 {
        let src: Vec<u64> = (1..len - 1).map(|i| 1000 + i as u64).collect();
        v.put_range(1, &src).map_err(e)?;
    }
    v.sync().map_err(e)?;
    for i in 0..len {
        let want = if len > 2 && (1..len - 1).contains(&i) {
            1000 + i as u64
        } else {
            (i as u64 * 3 + 1) * 2 + i as u64
        };
        let got = v.get(i).map_err(e)?;
        if got != want {
            return Err(format!("element {i} is {got}, not {want}"));
        }
    }
    v.sync().map_err(e)?;
    // 4. Atomics from every rank on every element, 64 and 32 bits.
    let mut c32: GlobalVec<i32> = w.global_vec(len, dist).map_err(e)?;
    for i in 0..len {
        v.fetch_add(i, 1).map_err(e)?;
        c32.fetch_add(i, -(me as i32) - 1).map_err(e)?;
    }
    v.sync().map_err(e)?;
    let want32 = -((n * (n + 1) / 2) as i32);
    for i in 0..len {
        let got = c32.get(i).map_err(e)?;
        if got != want32 {
            return Err(format!("32-bit element {i} is {got}, not {want32}"));
        }
    }
    // Neighbours in one word stay apart.
    c32.sync().map_err(e)?;
    c32.local_mut().iter_mut().for_each(|x| *x = 0);
    c32.sync().map_err(e)?;
    // 5. Compare-and-swap election on element 0: exactly one winner.
    let won = len > 0 && c32.compare_swap(0, 0, me as i32 + 1).map_err(e)? == 0;
    c32.sync().map_err(e)?;
    let mut wins = [0u64];
    w.allreduce(&[u64::from(won)], &mut wins, dos::op::Sum)
        .map_err(e)?;
    if len > 0 && wins[0] != 1 {
        return Err(format!("{} ranks won the election", wins[0]));
    }
    if len > 1 && c32.get(1).map_err(e)? != 0 {
        return Err("the CAS on element 0 changed element 1".into());
    }
    c32.free().map_err(e)?;
    v.free().map_err(e)
}

fn dists() -> Vec<Distribution> {
    vec![
        Distribution::Block,
        Distribution::BlockCyclic { block: 1 },
        Distribution::BlockCyclic { block: 3 },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn global_arrays_match_the_serial_result_on_one_node(n in 1usize..6, len in 0usize..40, d in 0usize..3) {
        let dist = dists()[d];
        for r in run_threads(n, |w| check_array(&w, len, dist)) {
            prop_assert_eq!(r, Ok(()));
        }
    }
}

#[test]
fn global_arrays_across_nodes() {
    for dist in dists() {
        for len in [0, 1, 7, 50] {
            for r in run_cluster(&[2, 1, 2], |w| check_array(&w, len, dist)) {
                assert_eq!(r, Ok(()), "{dist:?} len {len}");
            }
        }
    }
}

fn roce() -> Config {
    Config::parse(|k| (k == "DOS_TRANSPORTS").then(|| "shm,roce".to_string())).unwrap()
}

#[test]
fn global_arrays_across_nodes_over_the_soft_roce() {
    for r in run_cluster_with(&[1, 2], roce(), |w| {
        check_array(&w, 23, Distribution::BlockCyclic { block: 2 })
    }) {
        assert_eq!(r, Ok(()));
    }
}

/// Every rank adds 1 to one counter `k` times with a plain read and write
/// under the lock; returns the final count.
fn count_under_lock(w: &World, k: u64) -> u64 {
    let lock = w.dist_lock().unwrap();
    let count = w.win_allocate::<u64>(1).unwrap();
    for _ in 0..k {
        let held = lock.lock().unwrap();
        let mut v = [0u64];
        count.get(&mut v, 0, 0).unwrap();
        // Widen the window in which an unprotected update would be lost.
        std::thread::yield_now();
        count.put(&[v[0] + 1], 0, 0).unwrap();
        count.flush(0).unwrap();
        held.unlock().unwrap();
    }
    count.fence().unwrap();
    let mut v = [0u64];
    count.get(&mut v, 0, 0).unwrap();
    lock.free().unwrap();
    v[0]
}

#[test]
fn the_lock_gives_exact_totals_on_one_node() {
    for n in [1, 2, 3, 5] {
        assert_eq!(
            run_threads(n, |w| count_under_lock(&w, 200)),
            vec![200 * n as u64; n]
        );
    }
}

#[test]
fn the_lock_gives_exact_totals_across_nodes() {
    assert_eq!(
        run_cluster(&[2, 1, 1], |w| count_under_lock(&w, 100)),
        vec![400; 4]
    );
    assert_eq!(
        run_cluster_with(&[1, 1, 1], roce(), |w| count_under_lock(&w, 50)),
        vec![150; 3]
    );
}
