//! Misuse and corner cases that must leave a job usable (issue 15), in
//! process (ranks as threads) and as real jobs under `dosrun`: a split color
//! of `u32::MAX`, collectives whose ranks disagree on counts (through the
//! shared-memory slots and through messages), RPC served by a rank alone
//! while it computes, and a second `init`. The checks are shared with the
//! `errcheck` test program (checks/).
//!
//! The `dosrun` tests need the binaries: `cargo build --workspace --bins --examples`.

mod common;
#[allow(dead_code)]
#[path = "../../checks/src/errcheck.rs"]
mod errcheck;

use std::sync::mpsc;
use std::time::Duration;

use dos::config::Config;
use dos::testing::{run_threads, run_threads_with};
use proptest::prelude::*;

/// Runs `f` in a thread and fails the test if it takes longer than `limit`
/// (a hang is the bug these tests look for; the stuck threads are left behind).
fn within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    try_within(limit, f).unwrap_or_else(|| panic!("{what}: still running after {limit:?} (hang)"))
}

/// [`within`], with `None` for a hang.
fn try_within<R: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

fn messages_only() -> Config {
    Config {
        node_coll_bytes: 0,
        ..Config::default()
    }
}

fn all_ok(what: &str, got: Vec<Result<(), String>>) {
    for (r, g) in got.into_iter().enumerate() {
        assert_eq!(g, Ok(()), "{what}: rank {r}");
    }
}

#[test]
fn split_color_u32_max_is_not_undefined() {
    for n in [2, 3, 4, 5] {
        let got = within(Duration::from_secs(60), "split", move || {
            run_threads(n, |w| errcheck::check_split(&w))
        });
        all_ok(&format!("{n} ranks"), got);
    }
}

/// A color per rank: `None` or one of a few, extremes included.
fn color() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(1)),
        Just(Some(u32::MAX - 1)),
        Just(Some(u32::MAX)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 4, failure_persistence: None, ..ProptestConfig::default() })]

    /// `split` against a serial model: every rank with a color gets the ranks
    /// of that color ordered by (key, old rank), and an allreduce on it sums them.
    #[test]
    fn split_matches_serial(spec in prop::collection::vec((color(), -2i32..3), 1..7)) {
        let n = spec.len();
        let spec2 = spec.clone();
        let got = within(Duration::from_secs(60), "split", move || {
            run_threads(n, |w| {
                let (color, key) = spec2[w.rank()];
                let sub = w.split(color, key).unwrap();
                sub.map(|c| {
                    let mut sum = [0u64];
                    c.allreduce(&[1u64 << w.rank()], &mut sum, dos::op::Sum).unwrap();
                    (c.rank(), c.size(), sum[0])
                })
            })
        });
        for (r, g) in got.into_iter().enumerate() {
            let (color, key) = spec[r];
            let Some(color) = color else {
                prop_assert_eq!(g, None, "rank {} passed None", r);
                continue;
            };
            let mut members: Vec<(i32, usize)> = (0..n)
                .filter(|&q| spec[q].0 == Some(color))
                .map(|q| (spec[q].1, q))
                .collect();
            members.sort();
            let want_rank = members.iter().position(|&m| m == (key, r)).unwrap();
            let want_sum: u64 = members.iter().map(|&(_, q)| 1u64 << q).sum();
            prop_assert_eq!(g, Some((want_rank, members.len(), want_sum)), "rank {}", r);
        }
    }
}

/// Runs the mismatch check of every collective on `sizes` ranks with `cfg`,
/// one at a time (so a hang names its collective).
fn mismatch(path: &str, sizes: &[usize], cfg: Config) {
    mismatch_sized(path, sizes, cfg, (10, 6))
}

/// [`mismatch`] with `(good, bad)` elements per block.
fn mismatch_sized(path: &str, sizes: &[usize], cfg: Config, (good, bad): (usize, usize)) {
    let mut failed = Vec::new();
    for &n in sizes {
        for what in errcheck::MISMATCHED {
            let what = what.to_string();
            let label = format!("{what} through {path} on {n} ranks");
            let got = try_within(Duration::from_secs(20), move || {
                run_threads_with(n, cfg, |w| {
                    errcheck::check_mismatch_sized(&w, &what, good, bad)
                })
            });
            match got {
                None => failed.push(format!("{label}: hangs")),
                Some(got) => {
                    for (r, g) in got.into_iter().enumerate() {
                        if let Err(e) = g {
                            failed.push(format!("{label}: rank {r}: {e}"));
                        }
                    }
                }
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn mismatched_counts_leave_the_node_slots_usable() {
    mismatch("slots", &[2, 3, 4], Config::default());
}

#[test]
fn mismatched_counts_leave_the_messages_usable() {
    mismatch("messages", &[2, 3, 4, 5], messages_only());
}

#[test]
fn mismatched_large_counts_leave_the_messages_usable() {
    // 40 KB against 36 KB per block: Rabenseifner, van de Geijn, rings,
    // pairwise exchanges and the linear gather and scatter (both counts on
    // the same side of every algorithm threshold: ranks whose counts pick
    // different algorithms are not covered, see coll::node).
    mismatch_sized("messages", &[2, 3, 4, 5], messages_only(), (5000, 4500));
}

#[test]
fn a_rank_alone_serves_itself_while_it_computes() {
    let got = within(Duration::from_secs(60), "alone", || {
        run_threads(1, |w| errcheck::check_alone(&w, Duration::from_secs(5)))
    });
    all_ok("1 rank", got);
    let got = within(Duration::from_secs(60), "alone", || {
        let w = dos::init().unwrap();
        errcheck::check_alone(&w, Duration::from_secs(5))
    });
    assert_eq!(got, Ok(()), "dos::init without dosrun");
}

// ----- the same under dosrun -----

fn errcheck_job(n: usize, opts: &[&str], what: &str) {
    let j = common::run_with(n, opts, &common::check("errcheck"), &[what]);
    j.assert_success();
    let want = format!("errcheck: OK {what} {n} ranks");
    assert!(
        j.stdout.lines().any(|l| l == want),
        "expected {want:?}\n{j}"
    );
}

#[test]
fn under_dosrun_split_color_u32_max() {
    errcheck_job(4, &[], "split");
}

#[test]
fn under_dosrun_mismatched_counts_through_slots_and_messages() {
    for n in [2, 4] {
        errcheck_job(n, &[], "mismatch");
        errcheck_job(n, &["-x", "DOS_NODE_COLL_BYTES=0"], "mismatch");
    }
}

#[test]
fn under_dosrun_a_rank_alone_serves_itself() {
    errcheck_job(1, &[], "alone");
    errcheck_job(2, &[], "alone");
}

#[test]
fn a_program_started_alone_serves_itself() {
    // Without dosrun: a world of one.
    let out = std::process::Command::new(common::check("errcheck"))
        .arg("alone")
        .output()
        .expect("run errcheck");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("errcheck: OK alone 1 ranks"),
        "{out:?}"
    );
}

#[test]
fn under_dosrun_a_second_init_is_a_typed_error() {
    errcheck_job(2, &[], "init");
}
