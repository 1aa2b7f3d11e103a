//! `dos::ckpt`: checkpoints and restarts of ranks run as threads (the
//! restart is a second job with `attempt = 1` on the same directory), and
//! through `dosrun` with a real program (`heat_ckpt`), a run that fails
//! after checkpointing and a second run with `DOS_RUN_ATTEMPT=1`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dos::ckpt::{Ckpt, Data, Error, Options, Slot};
use dos::config::Config;
use dos::dsm::Distribution;
use dos::testing::{run_cluster, run_threads};

/// A fresh directory for one test's L1, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("dos-ckpt-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn opts(dir: &Path, attempt: u32, levels: u8, by_rank: bool) -> Options {
    let mut o = Options::from_config(&Config::default()).unwrap();
    o.id = "t".into();
    o.dir = dir.to_path_buf();
    o.attempt = attempt;
    o.levels = levels;
    o.group_by_rank = by_rank;
    o.fs = None;
    o
}

/// Rank `r`'s state at version `v`.
fn state(r: usize, v: u64) -> Vec<f64> {
    (0..1000)
        .map(|i| (r * 1_000_000 + i) as f64 * 0.5 + v as f64)
        .collect()
}

/// Writes versions 1 and 2 of "s" on `n` ranks (threads).
fn write_two(dir: &Path, n: usize, levels: u8, by_rank: bool) {
    run_threads(n, |w| {
        let mut ck = Ckpt::with_options(&w, opts(dir, 0, levels, by_rank)).unwrap();
        assert_eq!(ck.latest().unwrap(), None, "a first run restores nothing");
        for v in 1..=2u64 {
            let u = state(w.rank(), v);
            ck.checkpoint("s", v, &[Data::slice(&u), Data::value(&v)])
                .unwrap();
        }
    });
}

/// Restores on `n` ranks; returns each rank's (version, line).
fn restore(dir: &Path, n: usize, levels: u8, by_rank: bool) -> Vec<(u64, String)> {
    run_threads(n, |w| {
        let mut ck = Ckpt::with_options(&w, opts(dir, 1, levels, by_rank)).unwrap();
        let mut u = vec![0.0; 1000];
        let mut v = 0u64;
        let got = ck
            .recover(&mut [Slot::slice(&mut u), Slot::value(&mut v)])
            .unwrap()
            .expect("a checkpoint to restore");
        assert_eq!(got.1, v);
        assert_eq!(
            u,
            state(w.rank(), v),
            "rank {} restored bit-identical",
            w.rank()
        );
        (v, ck.restored().unwrap().to_string())
    })
}

fn rm(p: PathBuf) {
    let _ = std::fs::remove_dir_all(&p);
    let _ = std::fs::remove_file(&p);
}

/// Removes rank `o`'s own L1 files (and its parity) of `s` v`v`.
fn lose_own(dir: &Path, v: u64, o: usize) {
    let d = dir.join("dos-ckpt-t").join(format!("s.v{v}"));
    rm(d.join(format!("r{o}")));
    rm(d.join(format!("r{o}.manifest")));
    rm(d.join(format!("x{o}.parity")));
}

const L12: u8 = 1 | 2;
const L123: u8 = 1 | 2 | 4;
const L13: u8 = 1 | 4;

#[test]
fn a_restart_restores_the_newest_checkpoint_bit_identical() {
    let dir = scratch("newest");
    write_two(&dir, 3, L123, true);
    let got = restore(&dir, 3, L123, true);
    assert!(
        got.iter()
            .all(|(v, l)| *v == 2 && l.starts_with("s v2 from L1")),
        "{got:?}"
    );
}

#[test]
fn a_rank_that_lost_its_l1_is_rebuilt_from_its_partner() {
    let dir = scratch("partner");
    write_two(&dir, 4, L12, true);
    lose_own(&dir, 2, 1);
    let got = restore(&dir, 4, L12, true);
    assert!(
        got.iter()
            .all(|(v, l)| *v == 2 && l.contains("from L2 (1 of 4")),
        "{got:?}"
    );
    // The rebuilt rank's files are back in L1: a second restart reads L1.
    let got = restore(&dir, 4, L12, true);
    assert!(got[0].1.contains("from L1"), "{got:?}");
}

/// A partner copy is received into the file of a retired one (its memory
/// reused, not freed and allocated again) and restores bit-identical.
#[test]
fn partner_copies_reuse_the_files_of_retired_ones() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch("recycle");
    let root = dir.join("dos-ckpt-t");
    run_threads(2, |w| {
        let mut o = opts(&dir, 0, L12, true);
        o.keep = 1;
        let mut ck = Ckpt::with_options(&w, o).unwrap();
        let q = 1 - w.rank();
        let copy = |v: u64| root.join(format!("s.v{v}")).join(format!("p{q}.bundle"));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let save = |ck: &mut Ckpt, v: u64| {
            let u = state(w.rank(), v);
            ck.checkpoint("s", v, &[Data::slice(&u), Data::value(&v)])
                .unwrap();
        };
        save(&mut ck, 1);
        let first = ino(&copy(1));
        save(&mut ck, 2);
        let second = ino(&copy(2));
        // v1 is retired: its copy becomes the spare (in the background).
        let spare = root.join(format!("spare.p{q}"));
        let until = Instant::now() + Duration::from_secs(20);
        while !spare.exists() {
            assert!(Instant::now() < until, "no spare copy after v1 retired");
            std::thread::sleep(Duration::from_millis(2));
        }
        save(&mut ck, 3);
        assert_eq!(ino(&copy(3)), first, "v3's copy is v1's file, reused");
        assert!(!copy(1).exists());
        // v3 took the spare; v2, retired in the background now, may have become
        // the next one already, but never v1's file again.
        let now = std::fs::metadata(&spare).ok().map(|m| m.ino());
        assert!(now.is_none() || now == Some(second), "{now:?}");
    });
    lose_own(&dir, 3, 1);
    let got = restore(&dir, 2, L12, true);
    assert!(
        got.iter()
            .all(|(v, l)| *v == 3 && l.contains("from L2 (1 of 2")),
        "{got:?}"
    );
}

#[test]
fn a_rank_without_l1_and_partner_copy_is_rebuilt_from_xor_parity() {
    let dir = scratch("xor");
    write_two(&dir, 4, L13, true);
    lose_own(&dir, 2, 2);
    let got = restore(&dir, 4, L13, true);
    assert!(
        got.iter()
            .all(|(v, l)| *v == 2 && l.contains("from L3 (1 of 4")),
        "{got:?}"
    );
}

#[test]
fn two_lost_members_of_one_set_fall_back_to_the_previous_checkpoint() {
    let dir = scratch("xor2");
    write_two(&dir, 3, L13, true);
    lose_own(&dir, 2, 0);
    lose_own(&dir, 2, 1);
    let got = restore(&dir, 3, L13, true);
    assert!(got.iter().all(|(v, _)| *v == 1), "{got:?}");
}

#[test]
fn a_corrupt_file_falls_back_to_the_previous_checkpoint() {
    let dir = scratch("corrupt");
    write_two(&dir, 2, 1, true);
    let f = dir.join("dos-ckpt-t/s.v2/r1/memory.bin");
    let mut b = std::fs::read(&f).unwrap();
    b[40] ^= 0x10;
    std::fs::write(&f, b).unwrap();
    let got = restore(&dir, 2, 1, true);
    assert!(
        got.iter()
            .all(|(v, l)| *v == 1 && l.starts_with("s v1 from L1")),
        "{got:?}"
    );
}

#[test]
fn a_lost_node_is_rebuilt_from_the_other_nodes() {
    // Two simulated nodes of two ranks; the failure group is the node.
    let dir = scratch("node");
    run_cluster(&[2, 2], |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 0, L123, false)).unwrap();
        let u = state(w.rank(), 7);
        ck.checkpoint("s", 7, &[Data::slice(&u), Data::value(&7u64)])
            .unwrap();
    });
    // Node 1 (ranks 2 and 3) is lost: its own files, parity and the partner
    // copies it kept (of ranks 0 and 1).
    for o in [2, 3] {
        lose_own(&dir, 7, o);
    }
    for o in [0, 1] {
        rm(dir.join(format!("dos-ckpt-t/s.v7/p{o}.bundle")));
    }
    let got = run_cluster(&[2, 2], |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 1, L123, false)).unwrap();
        let mut u = vec![0.0; 1000];
        let mut v = 0u64;
        ck.recover(&mut [Slot::slice(&mut u), Slot::value(&mut v)])
            .unwrap()
            .unwrap();
        assert_eq!(u, state(w.rank(), 7));
        ck.restored().unwrap().to_string()
    });
    assert!(got[0].contains("s v7 from L2 (2 of 4"), "{got:?}");
}

#[test]
fn a_lost_node_restarts_on_fewer_ranks_with_global_array_state() {
    // Two simulated nodes of two ranks; node 1 is lost and the job comes
    // back on node 0 alone (`--restart-np 2`): ranks 0 and 1 take over the
    // parts of old ranks 2 and 3 from the partner copies they hold.
    let dir = scratch("node-np");
    let len = 999;
    run_cluster(&[2, 2], |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 0, L12, false)).unwrap();
        let mut g = w.global_vec::<u32>(len, Distribution::Block).unwrap();
        g.par_for_each_local(|i, x| *x = (i as u32) ^ 0x5a5a);
        g.sync().unwrap();
        ck.checkpoint("g", 3, &[Data::global(&mut g)]).unwrap();
        g.free().unwrap();
    });
    for o in [2, 3] {
        let d = dir.join("dos-ckpt-t/g.v3");
        rm(d.join(format!("r{o}")));
        rm(d.join(format!("r{o}.manifest")));
    }
    for o in [0, 1] {
        rm(dir.join(format!("dos-ckpt-t/g.v3/p{o}.bundle")));
    }
    let lines = run_cluster(&[2], |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 1, L12, false)).unwrap();
        let g = w.global_vec::<u32>(len, Distribution::Block).unwrap();
        assert_eq!(
            ck.recover(&mut [Slot::global(&g)]).unwrap(),
            Some(("g".into(), 3))
        );
        let mut all = vec![0u32; len];
        g.get_range(0, &mut all).unwrap();
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, x)| *x == (i as u32) ^ 0x5a5a));
        g.sync().unwrap();
        g.free().unwrap();
        ck.restored().unwrap().to_string()
    });
    assert_eq!(
        lines[0],
        "g v3 from L2 (2 of 4 ranks rebuilt, onto 2 ranks)"
    );
}

/// Saves a global array of `len` on `n` ranks, restores it on each `m`.
#[test]
fn global_arrays_restore_onto_other_rank_counts() {
    let len = 1001;
    for (n, m, d1, d2) in [
        (4, 3, Distribution::Block, Distribution::Block),
        (
            2,
            5,
            Distribution::BlockCyclic { block: 7 },
            Distribution::Block,
        ),
        (
            3,
            3,
            Distribution::Block,
            Distribution::BlockCyclic { block: 3 },
        ),
    ] {
        let dir = scratch(&format!("gv{n}{m}"));
        run_threads(n, |w| {
            let mut ck = Ckpt::with_options(&w, opts(&dir, 0, 1, false)).unwrap();
            let mut g = w.global_vec::<u64>(len, d1).unwrap();
            g.par_for_each_local(|i, x| *x = (i * i) as u64 + 3);
            g.sync().unwrap();
            ck.checkpoint("g", 5, &[Data::global(&mut g)]).unwrap();
            g.free().unwrap();
        });
        run_threads(m, |w| {
            let mut ck = Ckpt::with_options(&w, opts(&dir, 1, 1, false)).unwrap();
            let g = w.global_vec::<u64>(len, d2).unwrap();
            let got = ck.recover(&mut [Slot::global(&g)]).unwrap();
            assert_eq!(got, Some(("g".to_string(), 5)));
            let mut all = vec![0u64; len];
            g.get_range(0, &mut all).unwrap();
            for (i, x) in all.iter().enumerate() {
                assert_eq!(*x, (i * i) as u64 + 3, "{n} -> {m}: element {i}");
            }
            g.sync().unwrap();
            g.free().unwrap();
        });
    }
}

#[test]
fn per_rank_data_onto_another_rank_count_is_a_typed_error() {
    let dir = scratch("count");
    write_two(&dir, 3, 1, false);
    let errs = run_threads(2, |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 1, 1, false)).unwrap();
        let mut u = vec![0.0; 1000];
        let mut v = 0u64;
        let e = ck.recover(&mut [Slot::slice(&mut u), Slot::value(&mut v)]);
        e.unwrap_err()
    });
    for e in errs {
        assert!(
            matches!(
                e,
                Error::RankCount {
                    saved: 3,
                    now: 2,
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn slots_that_do_not_match_are_a_typed_error() {
    let dir = scratch("shape");
    write_two(&dir, 2, 1, false);
    let errs = run_threads(2, |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 1, 1, false)).unwrap();
        let mut u = vec![0.0; 999];
        let mut v = 0u64;
        let e = ck.recover(&mut [Slot::slice(&mut u), Slot::value(&mut v)]);
        e.unwrap_err()
    });
    assert!(
        errs.iter().all(|e| matches!(e, Error::Shape(_))),
        "{errs:?}"
    );
}

#[test]
fn the_file_api_agrees_on_validity_and_falls_back_when_a_rank_rejects() {
    let dir = scratch("files");
    run_threads(3, |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 0, L123, true)).unwrap();
        for round in 1..=3u8 {
            let v = ck.start_output("f").unwrap();
            assert_eq!(v, u64::from(round));
            let p = ck.route_file("part.dat").unwrap();
            std::fs::write(&p, [round, w.rank() as u8]).unwrap();
            // Round 3 is invalid on rank 1: invalid everywhere.
            let valid = !(round == 3 && w.rank() == 1);
            assert_eq!(ck.complete_output(valid).unwrap(), round != 3);
        }
        assert!(ck.route_file("x").is_err(), "no output open");
    });
    let seen = run_threads(3, |w| {
        let mut ck = Ckpt::with_options(&w, opts(&dir, 1, L123, true)).unwrap();
        assert!(ck.have_restart().unwrap());
        let (_, v) = ck.start_restart().unwrap();
        let b = std::fs::read(ck.route_file("part.dat").unwrap()).unwrap();
        assert_eq!(b, [v as u8, w.rank() as u8]);
        // Rank 2 finds v2 unusable: everyone falls back to v1.
        assert!(!ck.complete_restart(w.rank() != 2).unwrap());
        let (_, v1) = ck.start_restart().unwrap();
        let b = std::fs::read(ck.route_file("part.dat").unwrap()).unwrap();
        assert_eq!(b, [v1 as u8, w.rank() as u8]);
        assert!(ck.complete_restart(true).unwrap());
        (v, v1)
    });
    assert!(seen.iter().all(|&s| s == (2, 1)), "{seen:?}");
}

#[test]
fn need_checkpoint_answers_the_same_everywhere() {
    let dir = scratch("need");
    let answers = run_threads(3, |w| {
        let mut o = opts(&dir, 0, 1, false);
        o.policy.every = 3;
        let mut ck = Ckpt::with_options(&w, o).unwrap();
        let mut yes = Vec::new();
        for step in 0..9u64 {
            // Rank-dependent time between calls must not matter.
            std::thread::sleep(std::time::Duration::from_millis(w.rank() as u64));
            if ck.need_checkpoint().unwrap() {
                yes.push(step);
                ck.checkpoint("n", step, &[Data::value(&step)]).unwrap();
            }
        }
        yes
    });
    assert!(answers.iter().all(|a| *a == vec![2, 5, 8]), "{answers:?}");
}

#[test]
fn only_the_last_k_checkpoints_are_kept() {
    let dir = scratch("keep");
    run_threads(2, |w| {
        let mut o = opts(&dir, 0, L12, true);
        o.keep = 2;
        let mut ck = Ckpt::with_options(&w, o).unwrap();
        for v in 1..=5u64 {
            ck.checkpoint("k", v, &[Data::value(&v)]).unwrap();
        }
    });
    let mut left: Vec<String> = std::fs::read_dir(dir.join("dos-ckpt-t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("k."))
        .collect();
    left.sort();
    assert_eq!(left, ["k.v4", "k.v5"]);
}

#[test]
fn l4_is_written_in_the_background_and_restores_when_l1_is_gone() {
    let dir = scratch("l4");
    let fs = scratch("l4-target");
    let with_fs = |attempt| {
        let mut o = opts(&dir, attempt, 1 | 8, false);
        o.fs = Some(dos::ckpt::l4::Remote::Dir(fs.to_path_buf()));
        o.fs_every = 2;
        o
    };
    run_threads(2, |w| {
        let mut ck = Ckpt::with_options(&w, with_fs(0)).unwrap();
        for v in 1..=3u64 {
            let u = state(w.rank(), v);
            ck.checkpoint("s", v, &[Data::slice(&u), Data::value(&v)])
                .unwrap();
        }
        assert!(ck.wait_fs().unwrap());
    });
    // Checkpoints 1 and 3 went to L4 (every 2nd).
    assert!(fs.join("dos-ckpt-t/s.v1/COMPLETE").is_file());
    assert!(!fs.join("dos-ckpt-t/s.v2").exists());
    assert!(fs.join("dos-ckpt-t/s.v3/COMPLETE").is_file());
    std::fs::remove_dir_all(dir.join("dos-ckpt-t")).unwrap();
    let got = run_threads(2, |w| {
        let mut ck = Ckpt::with_options(&w, with_fs(1)).unwrap();
        let mut u = vec![0.0; 1000];
        let mut v = 0u64;
        ck.recover(&mut [Slot::slice(&mut u), Slot::value(&mut v)])
            .unwrap()
            .unwrap();
        assert_eq!(u, state(w.rank(), v));
        ck.restored().unwrap().to_string()
    });
    assert!(got[0].starts_with("s v3 from L4"), "{got:?}");
}

// ---- through dosrun, with the heat_ckpt example ----

/// Runs `heat_ckpt ARGS` on `n` ranks under dosrun with the checkpoint
/// tunables `env` (through `env`, so that they win over dosrun's).
fn heat(n: usize, env: &[String], args: &[&str]) -> common::Job {
    let prog = common::example("heat_ckpt");
    let mut a: Vec<String> = env.to_vec();
    a.push(prog.display().to_string());
    a.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    common::run(n, Path::new("/usr/bin/env"), &a)
}

fn env(dir: &Path, id: &str, attempt: u32, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("DOS_CKPT_DIR={}", dir.display()),
        format!("DOS_CKPT_ID={id}"),
        format!("DOS_RUN_ATTEMPT={attempt}"),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The result line of rank 0.
fn result(j: &common::Job) -> String {
    j.stdout
        .lines()
        .find(|l| l.contains(" steps: sum "))
        .unwrap_or_else(|| panic!("no result line\n{j}"))
        .to_string()
}

fn restored(j: &common::Job) -> String {
    j.stdout
        .lines()
        .find_map(|l| l.strip_prefix("heat_ckpt: restored "))
        .unwrap_or_else(|| panic!("no restore line\n{j}"))
        .to_string()
}

const HEAT: &[&str] = &["--size", "40", "--steps", "24", "--every", "4"];

/// An undisturbed run's result line.
fn reference(dir: &Path) -> String {
    let j = heat(3, &env(dir, "ref", 0, &[]), HEAT);
    j.assert_success();
    result(&j)
}

/// Run 1 fails after step `at` (rank 1; `kill`: by SIGKILL); returns its job.
fn failing_run(dir: &Path, id: &str, n: usize, at: u64, kill: bool, extra: &[&str]) -> common::Job {
    let at = at.to_string();
    let mut args = HEAT.to_vec();
    args.extend(["--fail-at", &at, "--fail-rank", "1"]);
    if kill {
        args.push("--kill");
    }
    let j = heat(n, &env(dir, id, 0, extra), &args);
    assert!(!j.status.success(), "run 1 must fail\n{j}");
    j
}

#[test]
fn dosrun_a_failed_run_restarts_from_its_checkpoint_bit_identical() {
    let dir = scratch("dosrun-exit");
    let want = reference(&dir);
    failing_run(&dir, "exit", 3, 10, false, &[]);
    let j = heat(3, &env(&dir, "exit", 1, &[]), HEAT);
    j.assert_success();
    assert_eq!(restored(&j), "heat v8 from L1 (0 of 3 ranks rebuilt)");
    assert_eq!(result(&j), want);
}

#[test]
fn dosrun_a_killed_rank_restarts_and_a_corrupt_checkpoint_falls_back() {
    let dir = scratch("dosrun-kill");
    let want = reference(&dir);
    failing_run(&dir, "kill", 3, 14, true, &["DOS_CKPT_LEVELS=1"]);
    // Corrupt rank 2's newest file: the checksum catches it, v8 is used.
    let f = dir.join("dos-ckpt-kill/heat.v12/r2/memory.bin");
    let mut b = std::fs::read(&f).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    std::fs::write(&f, b).unwrap();
    let j = heat(3, &env(&dir, "kill", 1, &["DOS_CKPT_LEVELS=1"]), HEAT);
    j.assert_success();
    assert_eq!(restored(&j), "heat v8 from L1 (0 of 3 ranks rebuilt)");
    assert_eq!(result(&j), want);
}

#[test]
fn dosrun_a_lost_l1_is_rebuilt_from_the_partner_or_parity() {
    let dir = scratch("dosrun-lost");
    let want = reference(&dir);
    // Every rank its own failure group: partners and XOR sets on one host.
    for (levels, id, lvl) in [("1,2", "l2", "L2"), ("1,3", "l3", "L3")] {
        let extra = [&*format!("DOS_CKPT_LEVELS={levels}"), "DOS_CKPT_GROUP=rank"];
        failing_run(&dir, id, 3, 10, false, &extra);
        lose_own_of(&dir.join(format!("dos-ckpt-{id}/heat.v8")), 1);
        let j = heat(3, &env(&dir, id, 1, &extra), HEAT);
        j.assert_success();
        assert_eq!(
            restored(&j),
            format!("heat v8 from {lvl} (1 of 3 ranks rebuilt)")
        );
        assert_eq!(result(&j), want);
    }
}

#[test]
fn dosrun_global_array_state_restarts_on_fewer_ranks() {
    let dir = scratch("dosrun-fewer");
    let want = reference(&dir);
    failing_run(&dir, "fewer", 4, 10, false, &[]);
    let j = heat(2, &env(&dir, "fewer", 1, &[]), HEAT);
    j.assert_success();
    assert!(restored(&j).starts_with("heat v8 from L1"), "{j}");
    assert_eq!(result(&j), want);
}

fn lose_own_of(version_dir: &Path, o: usize) {
    rm(version_dir.join(format!("r{o}")));
    rm(version_dir.join(format!("r{o}.manifest")));
    rm(version_dir.join(format!("x{o}.parity")));
}

#[test]
fn dosckpt_lists_and_removes_checkpoints() {
    let dir = scratch("dosckpt");
    write_two(&dir, 2, L12, true);
    // Version 3 fails on rank 1: listed as failed.
    run_threads(2, |w| {
        let mut o = opts(&dir, 0, L12, true);
        o.attempt = 1; // keep the history
        let mut ck = Ckpt::with_options(&w, o).unwrap();
        ck.start_output("s").unwrap();
        assert!(!ck.complete_output(w.rank() == 0).unwrap());
    });
    let bin = common::dosrun().with_file_name("dosckpt");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&bin)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let d = dir.to_str().unwrap();
    let (ok, out, err) = run(&["list", d]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{out}");
    let row = |v: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("s v{v} ")))
            .copied()
            .unwrap_or_else(|| panic!("{out}"))
    };
    assert!(
        row("1").contains("complete") && row("1").contains("L1+L2"),
        "{out}"
    );
    assert!(row("2").contains("complete"), "{out}");
    assert!(row("3").contains("failed"), "{out}");
    let (ok, _, err) = run(&["rm", "t", "s", "1", "--dir", d]);
    assert!(ok, "{err}");
    let (_, out, _) = run(&["list", d]);
    assert!(!out.contains("s v1 ") && out.contains("s v2 "), "{out}");
    let (ok, _, err) = run(&["rm", "nosuch", "--dir", d]);
    assert!(!ok && err.contains("dos-ckpt-nosuch"), "{err}");
    let (ok, _, _) = run(&["rm", "t", "--dir", d]);
    assert!(ok);
    let (_, out, _) = run(&["list", d]);
    assert!(out.starts_with("no checkpoints"), "{out}");
}

/// 20 trials: a random rank killed (SIGKILL) after a random step, then the
/// restart; every result bit-identical to the undisturbed run. Heavy:
/// `cargo test -p dos --test ckpt -- --ignored kill_soak`.
#[test]
#[ignore]
fn kill_soak() {
    let dir = scratch("soak");
    let want = reference(&dir);
    let mut seed = std::process::id() as u64;
    for trial in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = 1 + (seed >> 33) % 23;
        let rank = ((seed >> 20) % 3).to_string();
        let id = format!("soak{trial}");
        let at_s = at.to_string();
        let mut args = HEAT.to_vec();
        args.extend(["--fail-at", &at_s, "--fail-rank", &rank, "--kill"]);
        let j = heat(3, &env(&dir, &id, 0, &[]), &args);
        assert!(!j.status.success(), "{j}");
        let j = heat(3, &env(&dir, &id, 1, &[]), HEAT);
        j.assert_success();
        assert_eq!(
            result(&j),
            want,
            "trial {trial}: killed rank {rank} after step {at}"
        );
    }
}

#[test]
fn bad_checkpoint_tunables_are_typed_errors() {
    let cfg = |var: &'static str, val: &'static str| {
        Config::parse(move |n| (n == var).then(|| val.to_string()))
    };
    for (var, val) in [
        ("DOS_CKPT_LEVELS", "1,5"),
        ("DOS_CKPT_XOR_SET", "1"),
        ("DOS_CKPT_KEEP", "0"),
        ("DOS_CKPT_GROUP", "rack"),
        ("DOS_CKPT_FS_EVERY", "0"),
        ("DOS_RUN_ATTEMPT", "-1"),
    ] {
        assert!(
            matches!(cfg(var, val), Err(dos::Error::Environment { var: v, .. }) if v == var),
            "{var}={val}"
        );
    }
    let c = cfg("DOS_CKPT_LEVELS", "L2, 3").unwrap();
    assert_eq!(c.ckpt_levels, 2 | 4);
    let c = cfg("DOS_CKPT_ID", "a/b").unwrap();
    assert!(matches!(
        Options::from_config(&c),
        Err(Error::Usage {
            op: "DOS_CKPT_ID",
            ..
        })
    ));
    let o = Options::from_config(&cfg("DOS_CKPT_LEVELS", "2").unwrap()).unwrap();
    assert_eq!(o.levels, 1 | 2, "L1 is always written");
    assert!(o.fs.is_none());
}

/// dosfs servers of one test (`dosfs up --local`), stopped on drop.
struct Dosfs {
    dir: Scratch,
    addr: PathBuf,
    bin: PathBuf,
}

impl Dosfs {
    fn up(tag: &str) -> Dosfs {
        let bin = common::dosrun().with_file_name("dosfs");
        assert!(
            bin.is_file(),
            "{} is missing: cargo build --workspace --bins",
            bin.display()
        );
        let dir = scratch(tag);
        let fs = Dosfs {
            addr: dir.join("fs.addr"),
            dir,
            bin,
        };
        let targets = fs.dir.join("targets");
        let o = fs.cmd(&[
            "up",
            "--local",
            "2",
            "--target",
            targets.to_str().unwrap(),
            "--host",
            "127.0.0.1",
        ]);
        assert!(o.status.success(), "dosfs up: {o:?}");
        fs
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(&self.bin)
            .arg("--fs")
            .arg(&self.addr)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Dosfs {
    fn drop(&mut self) {
        if let Ok(f) = dos_fs::addrfile::AddrFile::read(&self.addr) {
            let _ = self.cmd(&["down"]);
            for pid in f.servers.iter().filter_map(|s| s.pid) {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    // SAFETY: kill has no memory effects; the pid is a server this test started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

#[test]
fn dosrun_l4_on_dosfs_restores_when_every_l1_is_lost() {
    let dir = scratch("dosrun-l4");
    let want = reference(&dir);
    let fs = Dosfs::up("dosfs-l4");
    let extra = [
        &*format!("DOSFS={}", fs.addr.display()),
        "DOS_CKPT_LEVELS=1,4",
        "DOS_CKPT_FS=dosfs:/ckpt",
        "DOS_CKPT_FS_EVERY=2",
    ];
    failing_run(&dir, "l4", 3, 14, false, &extra);
    // Every node's L1 is gone. L4 got v4 and v12 (every 2nd checkpoint);
    // v4 was marked complete when v12 was queued (one in flight at most),
    // v12 never was: the run failed before its next checkpoint.
    std::fs::remove_dir_all(dir.join("dos-ckpt-l4")).unwrap();
    let j = heat(3, &env(&dir, "l4", 1, &extra), HEAT);
    j.assert_success();
    let r = restored(&j);
    assert!(
        r.starts_with("heat v") && r.contains("from L4 (3 ranks read back)"),
        "{r}"
    );
    assert_eq!(result(&j), want);
}

// ---- the whole loop: dosrun --max-restarts and dos::ckpt together ----

/// The pids of dosrun's children (its ranks on this host), in order.
fn children(dosrun: i32) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{dosrun}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                v.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    v.sort_unstable();
    v
}

/// `trials` runs of `heat_ckpt` on 3 ranks under `dosrun --max-restarts 5`;
/// in each, a random rank is killed (SIGKILL) from outside at a random
/// moment. Every run ends with status 0 and the bits of the undisturbed
/// run, and dosrun's restart line names the killed pid and the checkpoint
/// the ranks restored.
fn killed_from_outside(trials: usize) {
    let dir = scratch("max-restarts");
    const ARGS: &[&str] = &[
        "--size",
        "40",
        "--steps",
        "60",
        "--every",
        "4",
        "--delay-ms",
        "4",
    ];
    let reference = {
        let j = heat(3, &env(&dir, "mr-ref", 0, &[]), ARGS);
        j.assert_success();
        result(&j)
    };
    let prog = common::example("heat_ckpt");
    let ckdir = format!("DOS_CKPT_DIR={}", dir.display());
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    for trial in 0..trials {
        let mut args = vec![ckdir.as_str(), prog.to_str().unwrap()];
        args.extend_from_slice(ARGS);
        let job = common::start_with(
            3,
            Duration::from_secs(60),
            &["--max-restarts", "5"],
            Path::new("/usr/bin/env"),
            &args,
        );
        // Wait for the three ranks, then a random moment of the run (60
        // steps of at least 4 ms).
        let t0 = Instant::now();
        let ranks = loop {
            let c = children(job.pid());
            if c.len() == 3 || t0.elapsed() > Duration::from_secs(20) {
                break c;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(ranks.len(), 3, "trial {trial}: the ranks did not start");
        std::thread::sleep(Duration::from_millis(next(200)));
        let victim = ranks[next(3) as usize];
        let alive = !common::dead(victim);
        // SAFETY: kill has no memory effects; the pid is a rank of our job,
        // a child of dosrun not reaped before dosrun ends, so not reused.
        let hit = alive && unsafe { libc::kill(victim, libc::SIGKILL) } == 0;
        let j = job.finish();
        j.assert_no_panic();
        assert!(j.status.success(), "trial {trial}\n{j}");
        assert_eq!(result(&j), reference, "trial {trial}: killed {victim}\n{j}");
        let restarts: Vec<&str> = common::dosrun_lines(&j)
            .into_iter()
            .filter(|l| l.starts_with("dosrun: restart "))
            .collect();
        if hit && j.stdout.contains("heat_ckpt: restored ") {
            assert_eq!(restarts.len(), 1, "trial {trial}\n{j}");
            let line = restarts[0];
            assert!(
                line.starts_with("dosrun: restart 1/5: ")
                    && line.contains(&format!("(pid {victim})"))
                    && line.contains("SIGKILL")
                    && line.contains("checkpoint: heat v"),
                "trial {trial}: {line}"
            );
        } else if hit {
            // Killed before the first checkpoint: the run starts over.
            assert_eq!(restarts.len(), 1, "trial {trial}\n{j}");
        }
    }
}

#[test]
fn dosrun_max_restarts_brings_heat_back_after_kills_from_outside() {
    killed_from_outside(3);
}

/// A rank that dies (SIGKILL) in the middle of writing its L1 file of
/// v12, under `dosrun --max-restarts 3`: the restarted run restores v8,
/// the previous complete checkpoint, and ends with the undisturbed bits.
#[test]
fn dosrun_max_restarts_a_death_during_a_checkpoint_falls_back_to_the_previous_one() {
    let dir = scratch("die-in-ckpt");
    let want = reference(&dir);
    let prog = common::example("heat_ckpt");
    let ckdir = format!("DOS_CKPT_DIR={}", dir.display());
    let mut args = vec!["DOS_CKPT_ID=die", ckdir.as_str(), prog.to_str().unwrap()];
    args.extend_from_slice(HEAT);
    args.extend(["--die-in-checkpoint", "12", "--fail-rank", "1"]);
    let j = common::run_with(
        3,
        &["--max-restarts", "3"],
        Path::new("/usr/bin/env"),
        &args,
    );
    j.assert_no_panic();
    assert!(j.status.success(), "{j}");
    let died = format!(
        "dying by SIGKILL in the middle of writing {}",
        dir.join("dos-ckpt-die/heat.v12/r1/memory.bin").display()
    );
    assert!(j.stderr.contains(&died), "{j}");
    assert_eq!(restored(&j), "heat v8 from L1 (0 of 3 ranks rebuilt)");
    let restarts: Vec<&str> = common::dosrun_lines(&j)
        .into_iter()
        .filter(|l| l.starts_with("dosrun: restart "))
        .collect();
    assert_eq!(restarts.len(), 1, "{j}");
    assert!(
        restarts[0].starts_with("dosrun: restart 1/3: ")
            && restarts[0].contains("SIGKILL")
            && restarts[0].contains("checkpoint: heat v8"),
        "{}",
        restarts[0]
    );
    assert_eq!(result(&j), want);
}

/// The 20 trials on one host:
/// `cargo test -p dos --test ckpt -- --ignored max_restarts_soak`.
#[test]
#[ignore]
fn max_restarts_soak() {
    killed_from_outside(20);
}
