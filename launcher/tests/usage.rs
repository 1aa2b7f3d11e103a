//! Bad usage: one clear line on stderr, exit status 2, nothing started.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{run, TempDir};

fn assert_usage_error(args: &[&str], needle: &str) {
    let r = run(args);
    r.assert_no_panic();
    assert_eq!(r.code(), 2, "{args:?}: {r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line expected: {:?}",
        r.stderr
    );
    assert!(lines[0].starts_with("dosrun: "), "{args:?}: {:?}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} lacks {needle:?}",
        lines[0]
    );
    assert!(r.stdout.is_empty(), "{args:?}: {:?}", r.stdout);
}

#[test]
fn missing_program() {
    assert_usage_error(&[], "no program");
    assert_usage_error(&["-n", "2"], "no program");
    assert_usage_error(&["-n", "2", "--"], "no program");
}

#[test]
fn bad_rank_counts() {
    assert_usage_error(&["-n", "0", "true"], "at least 1");
    assert_usage_error(&["-n"], "needs");
    assert_usage_error(&["-n", "many", "true"], "not a number");
    assert_usage_error(&["-np", "1.5", "true"], "not a number");
    assert_usage_error(&["true"], "missing -n");
}

#[test]
fn unknown_flags_and_bad_values() {
    assert_usage_error(&["--bogus", "-n", "1", "true"], "unknown option --bogus");
    assert_usage_error(&["-n", "1", "--timeout", "soon", "true"], "--timeout");
    assert_usage_error(&["-n", "1", "--grace", "-5", "true"], "--grace");
    assert_usage_error(&["-n", "1", "-x", "1BAD", "true"], "-x");
}

#[test]
fn programs_that_cannot_run() {
    let d = TempDir::new("usage");
    assert_usage_error(
        &["-n", "1", "no-such-command-dosrun-test"],
        "command not found",
    );
    let missing = format!("{}/missing", d.str());
    assert_usage_error(&["-n", "1", &missing], "no such file");
    let plain = d.path().join("plain");
    std::fs::write(&plain, "echo hi\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_usage_error(&["-n", "2", plain.to_str().unwrap()], "not executable");
    assert_usage_error(&["-n", "1", d.str()], "is a directory");
    // -x PATH changes where the program is looked for, as in the ranks.
    assert_usage_error(
        &["-n", "1", "-x", &format!("PATH={}", d.str()), "sh"],
        "command not found",
    );
    // Nothing ran: the directory holds only what the test made.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn help_version_info() {
    let r = run(&["--help"]);
    assert_eq!(r.code(), 0);
    assert!(r.stdout.starts_with("Usage: dosrun"));
    let r = run(&["--version"]);
    assert_eq!(r.code(), 0);
    assert!(r.stdout.starts_with("dosrun "));
    let r = run(&["--info"]);
    assert_eq!(r.code(), 0, "{r:?}");
    for needle in [
        "shm",
        "loopback",
        "DOS_SHM_RING_BYTES",
        "DOS_KILL_GRACE_MS",
        "DOS_EAGER_LIMIT",
    ] {
        assert!(
            r.stdout.contains(needle),
            "--info lacks {needle}: {}",
            r.stdout
        );
    }
}

#[test]
fn bad_tunables_are_reported_not_panicked() {
    let r = common::run_with(
        common::dosrun()
            .env("DOS_SHM_RING_BYTES", "12")
            .args(["-n", "1", "true"]),
        b"",
        common::LIMIT,
    );
    r.assert_no_panic();
    assert_eq!(r.code(), 2);
    assert_eq!(r.stderr.lines().count(), 1);
    assert!(r.stderr.contains("DOS_SHM_RING_BYTES"), "{}", r.stderr);
}

/// Transports that cannot connect the ranks give one error from dosrun at
/// the start, not one per rank.
#[test]
fn transports_that_cannot_work_are_refused_once() {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_dosrun"));
    let hello = bin.parent().unwrap().join("examples/hello");
    if !hello.exists() {
        eprintln!("skipped: build the examples first (cargo build --examples -p dos)");
        return;
    }
    let hello = hello.to_str().unwrap();
    let r = run(&["-n", "3", "--transports", "verbs", hello]);
    if r.code() == 0 {
        eprintln!("skipped: this host and build have verbs");
        return;
    }
    assert_usage_error(
        &["-n", "3", "--transports", "verbs", hello],
        "the transports allowed need verbs, but ",
    );
    assert_usage_error(
        &["-n", "3", "-x", "DOS_TRANSPORTS=verbs", hello],
        "allow tcp or roce",
    );
}

/// More ranks than dosrun's descriptor limit can serve: one clear line at
/// the start rather than a failure half-way through the ranks' start.
#[test]
fn too_few_file_descriptors_for_the_ranks() {
    let dosrun = env!("CARGO_BIN_EXE_dosrun");
    let r = common::run_with(
        std::process::Command::new("sh").args([
            "-c",
            &format!("ulimit -Sn 256 && ulimit -Hn 256 && exec {dosrun} -n 100 true"),
        ]),
        b"",
        common::LIMIT,
    );
    assert_eq!(r.code(), 2, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr
            .contains("100 ranks on this host need about 528 open files"),
        "{r:?}"
    );
}
