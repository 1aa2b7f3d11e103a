//! The wire-up service through the real dosrun, driven by `dos-pmi-probe`
//! (which uses `dos::pmi::Client`).

mod common;

use common::{probe, run};

fn expect_sums(np: usize, stdout: &str) {
    let sum: usize = (0..np).sum();
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    let mut want: Vec<String> = (0..np)
        .map(|r| format!("rank {r} of {np}: sum {sum}"))
        .collect();
    want.sort();
    assert_eq!(lines, want);
}

#[test]
fn put_fence_get_across_job_sizes() {
    for np in [1, 2, 3, 4, 7] {
        let n = np.to_string();
        let r = run(&["-n", &n, probe()]);
        assert_eq!(r.code(), 0, "-n {np}: {r:?}");
        assert!(r.stderr.is_empty(), "-n {np}: {r:?}");
        expect_sums(np, &r.stdout);
    }
}

#[test]
fn abort_stops_the_job_with_its_code() {
    let r = run(&["-n", "3", probe(), "abort", "7", "something\nbroke"]);
    r.assert_no_panic();
    assert_eq!(r.code(), 7, "{r:?}");
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(lines[0].starts_with("dosrun: rank 1 (pid "), "{}", lines[0]);
    assert!(
        lines[0].contains("abort with code 7: something broke"),
        "{}",
        lines[0]
    );
}

#[test]
fn abort_in_a_job_of_one() {
    let r = run(&["-n", "1", probe(), "abort", "300", "x"]);
    // Codes outside 1..=255 become 1.
    assert_eq!(r.code(), 1, "{r:?}");
    assert_eq!(r.dosrun_lines().len(), 1, "{r:?}");
}

#[test]
fn garbage_connections_are_closed_and_the_job_goes_on() {
    let r = run(&["-n", "3", probe(), "garbage"]);
    assert_eq!(r.code(), 0, "{r:?}");
    expect_sums(3, &r.stdout);
    // Each refused connection is logged once: garbage and a wrong secret per rank.
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 6, "{r:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("dosrun: refused a wire-up connection: ")),
        "{r:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("wrong proof")).count(),
        3,
        "{r:?}"
    );
}

#[test]
fn a_fence_fails_when_a_rank_leaves_without_it() {
    let r = run(&["-n", "3", probe(), "skip", "2"]);
    r.assert_no_panic();
    assert_eq!(r.code(), 3, "{r:?}");
    assert!(r.stderr.contains("cannot complete"), "{r:?}");
    // One rank is blamed; the other's identical failure, seen before the
    // decision, is listed as its consequence.
    let lines = r.dosrun_lines();
    let blamed: Vec<_> = lines
        .iter()
        .filter(|l| !l.ends_with("(a consequence)"))
        .collect();
    assert_eq!(blamed.len(), 1, "{r:?}");
    assert!(lines[0].contains("exited with status 3"), "{}", lines[0]);
}

#[test]
fn the_probe_alone_is_not_under_dosrun() {
    let out = std::process::Command::new(probe())
        .env_remove("DOS_PMI_ADDR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not started by dosrun"));
}

/// Each rank inherits one end of a socket pair joined to the service
/// (`DOS_PMI_FD`) and joins through it.
#[test]
fn ranks_join_through_their_socket_pair() {
    let script = format!(
        "case $(readlink /proc/$$/fd/\"$DOS_PMI_FD\") in socket:*) exec {} ;; *) exit 9 ;; esac",
        probe()
    );
    let r = run(&["-n", "3", "sh", "-c", &script]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stderr.is_empty(), "{r:?}");
    expect_sums(3, &r.stdout);
}

/// A wrapper that closes the descriptor before the program runs: the rank
/// connects to the service's socket and authenticates instead, and the
/// unused pair does not count as the rank leaving the wire-up.
#[test]
fn a_rank_whose_wrapper_closed_its_pair_connects_instead() {
    // bash: dash takes only one-digit descriptor numbers in redirections.
    let script = format!("eval \"exec $DOS_PMI_FD<&-\"; exec {}", probe());
    let r = run(&["-n", "3", "bash", "-c", &script]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stderr.is_empty(), "{r:?}");
    expect_sums(3, &r.stdout);
}
