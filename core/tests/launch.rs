//! The example and check programs as real jobs under the real `dosrun`, on 1 to 7
//! ranks: their results, and how a failing dos job ends (exit status, the
//! rank named, no process and no shared segment left behind).
//!
//! The binaries are not built by `cargo test -p dos`: build them first with
//! `cargo build --workspace --bins --examples`. They are found next to this
//! test's executable (`target/<profile>/deps/launch-*`): `dosrun` and the
//! check programs of `dos-checks` in `target/<profile>/`, the examples in
//! `target/<profile>/examples/`.

mod common;

use std::time::Duration;

use common::{
    assert_all_dead, assert_no_segment_of, check, dosrun_lines, example, maps_segment, read_pid,
    run, run_with, start, Job, TempDir,
};

/// Job sizes every example runs with.
const SIZES: [usize; 5] = [1, 2, 3, 4, 7];

/// The line of `out` that starts with `prefix`; fails if there is not exactly one.
fn line_starting<'a>(job: &Job, out: &'a str, prefix: &str) -> &'a str {
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line starting with {prefix:?}\n{job}"
    );
    lines[0]
}

#[test]
fn hello_every_rank_says_hello() {
    for n in SIZES {
        let j = run(n, &example("hello"), &[]);
        j.assert_success();
        for r in 0..n {
            let want = format!("hello from rank {r} of {n}");
            let count = j.stdout.lines().filter(|l| *l == want).count();
            assert_eq!(count, 1, "{want:?} printed {count} times\n{j}");
        }
        assert_eq!(
            line_starting(&j, &j.stdout, "hello: "),
            format!("hello: {n} ranks OK"),
            "{j}"
        );
        assert_eq!(j.stdout.lines().count(), n + 1, "{j}");
    }
}

#[test]
fn ring_token_sums_the_ranks() {
    let laps = 5;
    for n in SIZES {
        let j = run(n, &example("ring"), &[&laps.to_string()]);
        j.assert_success();
        let want = format!(
            "ring: token {} after {laps} laps on {n} ranks OK ",
            laps * n * (n - 1) / 2
        );
        let line = line_starting(&j, &j.stdout, "ring: ");
        assert!(line.starts_with(&want), "expected {want:?}\n{j}");
    }
}

#[test]
fn pi_is_accurate_to_1e_9() {
    for n in SIZES {
        let j = run(n, &example("pi"), &[]);
        j.assert_success();
        let line = line_starting(&j, &j.stdout, "pi: 3");
        let rest = line
            .strip_prefix("pi: 3.1415926536 error ")
            .unwrap_or_else(|| panic!("pi line {line:?} lacks the 10 digits\n{j}"));
        let (err, tail) = rest.split_once(' ').expect("error is followed by text");
        let err: f64 = err
            .parse()
            .unwrap_or_else(|_| panic!("bad error {err:?}\n{j}"));
        assert!(err < 1e-9, "error {err} too large\n{j}");
        assert_eq!(
            tail,
            format!("with 10000000 intervals on {n} ranks OK"),
            "{j}"
        );
    }
}

#[test]
fn pi_with_few_intervals() {
    for n in [3, 7] {
        let j = run(n, &example("pi"), &["1000"]);
        j.assert_success();
        let line = line_starting(&j, &j.stdout, "pi: 3");
        assert!(
            line.ends_with(&format!("with 1000 intervals on {n} ranks OK")),
            "{j}"
        );
    }
}

/// The part of heat's summary line that must not depend on the job size.
fn heat_result(j: &Job) -> String {
    let lines: Vec<&str> = j
        .stdout
        .lines()
        .filter_map(|l| l.split_once(" ranks: sum "))
        .map(|(_, r)| r)
        .collect();
    assert_eq!(lines.len(), 1, "expected one summary line\n{j}");
    lines[0].to_string()
}

#[test]
fn heat_matches_the_serial_computation_bit_for_bit() {
    let mut results = Vec::new();
    for n in SIZES {
        let j = run(n, &example("heat"), &["--check"]);
        j.assert_success();
        assert!(j.stdout.lines().any(|l| l == "heat: OK"), "{j}");
        let summary = format!("heat: 128 x 128 grid, 200 steps on {n} ranks: sum ");
        assert!(
            j.stdout.lines().any(|l| l.starts_with(&summary)),
            "expected {summary:?}\n{j}"
        );
        results.push((n, heat_result(&j)));
    }
    for (n, r) in &results {
        assert_eq!(r, &results[0].1, "{n} ranks differ from 1 rank");
    }
}

#[test]
fn heat_with_uneven_rows() {
    // 7 rows over 7 ranks: one row each, edges included; 50 rows: blocks of 7 and 8.
    for (size, n) in [("7", 7), ("50", 7), ("50", 4)] {
        let j = run(
            n,
            &example("heat"),
            &["--size", size, "--steps", "40", "--check"],
        );
        j.assert_success();
        assert!(j.stdout.lines().any(|l| l == "heat: OK"), "{j}");
    }
}

#[test]
fn heat_rejects_more_ranks_than_rows() {
    let j = run(4, &example("heat"), &["--size", "3"]);
    assert_ne!(j.code(), 0, "{j}");
    assert!(
        j.stderr.contains("cannot give each of 4 ranks a row"),
        "{j}"
    );
}

#[test]
fn collcheck_passes() {
    for n in SIZES {
        let j = run(n, &check("collcheck"), &[]);
        j.assert_success();
        let line = line_starting(&j, &j.stdout, "collcheck: ");
        assert!(
            line.starts_with(&format!("collcheck: OK {n} ranks ")),
            "expected `collcheck: OK {n} ranks ...`\n{j}"
        );
    }
}

#[test]
fn transports_option_puts_one_host_on_the_network() {
    // `--transports tcp`: the ranks of one host talk over tcp (loopback), and
    // everything still works; the default is shared memory.
    for (opt, want) in [
        (Some("tcp"), "loopback+tcp"),
        (Some("roce"), "loopback+roce"),
        (None, "shm"),
        (Some("shm,tcp"), "shm"),
    ] {
        let mut args = vec![];
        if let Some(o) = opt {
            args.extend(["--transports", o]);
        }
        let j = run_with(3, &args, &example("hello"), &["--transports"]);
        j.assert_success();
        for r in 0..3 {
            let line = format!("hello from rank {r} of 3 over {want}");
            assert!(
                j.stdout.lines().any(|l| l == line),
                "{opt:?}: no {line:?}\n{j}"
            );
        }
        let j = run_with(3, &args, &check("collcheck"), &[]);
        j.assert_success();
        let j = run_with(2, &args, &check("rmacheck"), &[]);
        j.assert_success();
        let j = run_with(3, &args, &check("rpccheck"), &[]);
        j.assert_success();
        let j = run_with(3, &args, &check("dsmcheck"), &[]);
        j.assert_success();
        let j = run_with(3, &args, &check("p2pcheck"), &[]);
        j.assert_success();
        let j = run_with(3, &args, &check("regioncheck"), &["24"]);
        j.assert_success();
    }
    // Only verbs, on a host (or build) without an RDMA device: one clear
    // error from dosrun at the start, not one per rank.
    if !std::path::Path::new("/sys/class/infiniband").exists() {
        let j = run_with(2, &["--transports", "verbs"], &example("hello"), &[]);
        assert_eq!(j.code(), 2, "{j}");
        assert!(
            j.stderr.contains("no RDMA device") || j.stderr.contains("without the verbs backend"),
            "{j}"
        );
        assert_eq!(j.stderr.lines().count(), 1, "{j}");
    }
    let j = run_with(2, &["--transports", "udp"], &example("hello"), &[]);
    assert_eq!(j.code(), 2, "{j}");
    assert!(j.stderr.contains("--transports"), "{j}");
}

/// Runs check program `name` with `args` under dosrun for every size in
/// `SIZES`: it must succeed and print `NAME: OK N ranks` then `tail`, and
/// nothing more on that line when `exact`.
fn check_program_passes(name: &str, args: &[&str], tail: &str, exact: bool) {
    for n in SIZES {
        let j = run(n, &check(name), args);
        j.assert_success();
        let line = line_starting(&j, &j.stdout, &format!("{name}: "));
        let want = format!("{name}: OK {n} ranks{tail}");
        if exact {
            assert_eq!(line, want, "{j}");
        } else {
            assert!(line.starts_with(&want), "expected `{want}...`\n{j}");
        }
    }
}

#[test]
fn rmacheck_passes() {
    check_program_passes("rmacheck", &[], "", false);
}

/// `rmacheck` (post/start/complete/wait, fetching accumulates, atomics,
/// locks) with every rank on the network: tcp and the soft-RoCE on loopback.
#[test]
fn rmacheck_passes_over_the_network() {
    for t in ["tcp", "roce"] {
        for n in SIZES {
            let j = run_with(n, &["--transports", t], &check("rmacheck"), &[]);
            j.assert_success();
            let line = line_starting(&j, &j.stdout, "rmacheck: ");
            assert!(
                line.starts_with(&format!("rmacheck: OK {n} ranks")),
                "{t}: {j}"
            );
        }
    }
}

#[test]
fn dsmcheck_passes() {
    check_program_passes("dsmcheck", &[], "", true);
}

#[test]
fn regioncheck_passes() {
    check_program_passes("regioncheck", &["40"], ", 40 x 40 product", true);
}

#[test]
fn p2pcheck_passes() {
    check_program_passes("p2pcheck", &[], "", true);
}

#[test]
fn rpccheck_passes() {
    check_program_passes("rpccheck", &[], "", true);
}

/// Runs hello on `n` ranks with rank `rank` failing `how`; returns the job
/// and the ranks' pids, after checking that nothing of the job is left.
fn failing_hello(n: usize, rank: usize, how: &str) -> (Job, Vec<i32>, TempDir) {
    let d = TempDir::new(how);
    let fail = format!("{rank}:{how}");
    let j = run(
        n,
        &example("hello"),
        &["--pid-dir", d.str(), "--fail", &fail],
    );
    j.assert_no_panic();
    let pids = d.pids();
    assert_eq!(pids.len(), n, "not every rank recorded its pid\n{j}");
    assert_all_dead(&pids);
    assert_no_segment_of(&j, &pids);
    (j, pids, d)
}

/// Asserts dosrun printed exactly one line, naming rank `rank` and its pid.
fn assert_names_rank(j: &Job, d: &TempDir, rank: usize, what: &str) -> String {
    let lines = dosrun_lines(j);
    assert_eq!(lines.len(), 1, "expected one dosrun line\n{j}");
    let pid = read_pid(d, rank);
    let who = format!("dosrun: rank {rank} (pid {pid}) on host ");
    assert!(lines[0].starts_with(&who), "expected {who:?}\n{j}");
    assert!(lines[0].contains(what), "expected {what:?}\n{j}");
    assert!(lines[0].ends_with("; stopping the job"), "{j}");
    lines[0].to_string()
}

#[test]
fn a_rank_exiting_with_3_ends_the_job_with_3() {
    let (j, _, d) = failing_hello(3, 1, "exit");
    assert_eq!(j.code(), 3, "{j}");
    assert_names_rank(&j, &d, 1, "exited with status 3");
}

#[test]
fn a_rank_calling_abort_ends_the_job_with_its_code() {
    let (j, _, d) = failing_hello(4, 2, "abort");
    assert_eq!(j.code(), 3, "{j}");
    assert_names_rank(
        &j,
        &d,
        2,
        "called abort with code 3: hello: rank 2 aborts as asked",
    );
}

#[test]
fn rank_0_calling_abort_in_a_job_of_one() {
    let (j, _, d) = failing_hello(1, 0, "abort");
    assert_eq!(j.code(), 3, "{j}");
    assert_names_rank(&j, &d, 0, "called abort with code 3");
}

#[test]
fn a_rank_killed_by_sigkill_gives_137() {
    let (j, _, d) = failing_hello(3, 2, "kill");
    assert_eq!(j.code(), 137, "{j}");
    assert_names_rank(&j, &d, 2, "was killed by signal 9 (SIGKILL)");
}

#[test]
fn a_hung_job_is_ended_by_the_timeout_with_124() {
    let n = 4;
    let d = TempDir::new("hang");
    let timeout = Duration::from_secs(6);
    let job = start(
        n,
        timeout,
        &example("hello"),
        &["--pid-dir", d.str(), "--fail", "1:hang"],
    );
    // While the job runs, every rank holds the segment (dosrun lets go of
    // it once the ranks have it): the check after the job looks for the
    // right thing.
    let (job, pids) = job.wait_pids(&d, n);
    for &p in &pids {
        assert!(
            maps_segment(p),
            "process {p} of a running job does not map the shared segment"
        );
    }
    let j = job.finish();
    assert_eq!(j.code(), 124, "{j}");
    assert!(j.elapsed >= timeout, "{j}");
    let lines = dosrun_lines(&j);
    assert_eq!(lines.len(), 1, "expected one dosrun line\n{j}");
    assert!(lines[0].contains("--timeout"), "{j}");
    assert_all_dead(&pids);
    assert_no_segment_of(&j, &pids);
}

/// Started without dosrun (a world of one), a rank that aborts says why on
/// stderr through dos's log at the default level `DOS_LOG=warn`;
/// `DOS_LOG=off` silences it, and a `DOS_LOG` that is no filter makes
/// `dos::init` fail naming the variable.
#[test]
fn a_world_of_one_that_aborts_says_why_unless_dos_log_silences_it() {
    let hello = example("hello");
    let run = |log: Option<&str>| {
        let mut c = std::process::Command::new(&hello);
        c.args(["--fail", "0:abort"]).env_remove("DOS_LOG");
        if let Some(v) = log {
            c.env("DOS_LOG", v);
        }
        let out = c.output().expect("run hello");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let (code, err) = run(None);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(
        err,
        "dos: ERROR world: abort: hello: rank 0 aborts as asked\n"
    );
    let (code, err) = run(Some("off"));
    assert_eq!((code, err.as_str()), (Some(3), ""));
    let (code, err) = run(Some("dos=loud"));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("hello: ") && err.contains("DOS_LOG"),
        "{err}"
    );
}
