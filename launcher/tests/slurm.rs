//! dosrun inside a Slurm allocation, with the allocation's variables set by
//! the test (no Slurm needed): hosts and slots from `SLURM_JOB_NODELIST` and
//! `SLURM_TASKS_PER_NODE`, `-n`'s default, node agents through `srun` (a
//! stand-in `srun` that records its arguments), malformed variables, and
//! `--info`. The real Slurm cluster is not part of these tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{dosrun, run_with, Run, TempDir, LIMIT};

/// The Slurm variables of a test allocation, every other `SLURM_*` removed.
fn in_allocation(nodelist: &str, tasks: Option<&str>) -> Command {
    let mut c = dosrun();
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLURM_") {
            c.env_remove(k);
        }
    }
    c.env("SLURM_JOB_ID", "4242")
        .env("SLURM_JOB_NODELIST", nodelist);
    if let Some(t) = tasks {
        c.env("SLURM_TASKS_PER_NODE", t);
    }
    c
}

fn go(c: &mut Command, args: &[&str]) -> Run {
    let r = run_with(c.args(args), b"", LIMIT);
    r.assert_no_panic();
    r
}

fn ranks(r: &Run) -> Vec<String> {
    let mut v: Vec<String> = r.stdout.lines().map(str::to_string).collect();
    v.sort();
    v
}

const PRINT_RANK: &[&str] = &["sh", "-c", "echo $DOS_RANK/$DOS_SIZE"];

#[test]
fn the_allocation_gives_hosts_slots_and_the_default_n() {
    let r = go(&mut in_allocation("localhost", Some("3")), PRINT_RANK);
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(ranks(&r), ["0/3", "1/3", "2/3"], "{r:?}");
    // -n chooses fewer; more than the allocation's slots is refused.
    let mut a = vec!["-n", "2"];
    a.extend_from_slice(PRINT_RANK);
    let r = go(&mut in_allocation("localhost", Some("3")), &a);
    assert_eq!(ranks(&r), ["0/2", "1/2"], "{r:?}");
    let r = go(
        &mut in_allocation("localhost", Some("3")),
        &["-n", "4", "true"],
    );
    assert_eq!(r.code(), 2, "{r:?}");
    // Without counts, one slot per host.
    let r = go(&mut in_allocation("localhost", None), PRINT_RANK);
    assert_eq!(ranks(&r), ["0/1"], "{r:?}");
}

#[test]
fn malformed_variables_are_usage_errors_unless_hosts_are_given() {
    for (list, tasks, want) in [
        (
            "node[1-",
            Some("1"),
            "dosrun: inside a Slurm allocation: SLURM_JOB_NODELIST=\"node[1-\": the text ends at byte 7 in the middle of an element",
        ),
        (
            "node[1-2]",
            Some("2(x3)"),
            "dosrun: inside a Slurm allocation: SLURM_TASKS_PER_NODE has 3 counts for the 2 hosts of SLURM_JOB_NODELIST",
        ),
        (
            "node1",
            Some("2(x"),
            "dosrun: inside a Slurm allocation: SLURM_TASKS_PER_NODE=\"2(x\": the text ends at byte 3 in the middle of an element",
        ),
    ] {
        let r = go(&mut in_allocation(list, tasks), &["true"]);
        assert_eq!(r.code(), 2, "{r:?}");
        assert_eq!(r.dosrun_lines(), [want], "{r:?}");
        assert!(r.elapsed < std::time::Duration::from_secs(10), "{r:?}");
    }
    // -H: the allocation is not used.
    let r = go(
        &mut in_allocation("node[1-", Some("1")),
        &["-H", "localhost", "-n", "1", "true"],
    );
    assert_eq!(r.code(), 0, "{r:?}");
}

#[test]
fn node_agents_start_through_srun() {
    let d = TempDir::new("srun");
    let log = d.path().join("srun.args");
    let srun = d.path().join("srun");
    std::fs::write(
        &srun,
        format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&srun, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", d.str(), std::env::var("PATH").unwrap_or_default());
    // The stand-in srun fails: the job stops, naming the host and srun.
    let r = go(
        in_allocation("localhost,198.18.0.[2-3]", Some("1(x3)")).env("PATH", &path),
        &["sleep", "30"],
    );
    assert_eq!(r.code(), 1, "{r:?}");
    let lines = r.dosrun_lines();
    assert!(
        lines.iter().any(|l| l.starts_with("dosrun: host 198.18.0.")
            && l.contains("the launch agent (srun) exited with status 1")),
        "{r:?}"
    );
    let args = std::fs::read_to_string(&log).unwrap();
    let first = args.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(
            "--nodes=1 --ntasks=1 --nodelist=198.18.0.2 --kill-on-bad-exit=1 --cpu-bind=none "
        ) || first.starts_with(
            "--nodes=1 --ntasks=1 --nodelist=198.18.0.3 --kill-on-bad-exit=1 --cpu-bind=none "
        ),
        "{args}"
    );
    assert!(first.ends_with(" --agent"), "{args}");
    // --launch-agent still overrides srun.
    let r = go(
        in_allocation("localhost,198.18.0.2", Some("1,1")).env("PATH", &path),
        &["--launch-agent", "false", "sleep", "30"],
    );
    assert_eq!(r.code(), 1, "{r:?}");
    assert!(
        r.dosrun_lines()
            .iter()
            .any(|l| l.contains("the launch agent (false) exited with status 1")),
        "{r:?}"
    );
}

#[test]
fn info_names_the_launch_mechanism() {
    let r = go(&mut in_allocation("n[01-03]", Some("2(x3)")), &["--info"]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(
        r.stdout.contains(
            "Launch: srun starts the node agents (Slurm job 4242, 3 hosts n[01-03], 6 tasks"
        ),
        "{}",
        r.stdout
    );
    let mut c = dosrun();
    c.env_remove("SLURM_JOB_ID").env_remove("SLURM_JOBID");
    let r = go(&mut c, &["--info"]);
    assert!(r.stdout.contains("\nLaunch: ssh "), "{}", r.stdout);
}
