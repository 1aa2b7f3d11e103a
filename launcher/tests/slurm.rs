//! dosrun inside a Slurm allocation, with the allocation's variables set by
//! the test (no Slurm needed): hosts and slots from `SLURM_JOB_NODELIST` and
//! `SLURM_TASKS_PER_NODE`, `-n`'s default, node agents through `srun` (a
//! stand-in `srun` that records its arguments), malformed variables, and
//! `--info`.
//!
//! `on_a_real_slurm_cluster` (ignored: it needs root and slurm-wlm, and it
//! takes the namespace cluster; one step of `ci/test.sh`) starts Slurm on the
//! namespace hosts (`ci/cluster.sh slurm 3`: 3 nodes x 2 CPUs) once and runs,
//! in turn: `salloc -N 3 dosrun collcheck` (and `-n 6`), an `sbatch --wait`
//! script running dosrun, a rank that exits 3 and one killed by SIGKILL under
//! salloc and under sbatch (the job's exit status and dosrun's report), a dos
//! program started directly by `srun -n 6 --mpi=pmi2` (p2pcheck over PMI-2,
//! as each rank's debug line shows, and over PMI-1 with `DOS_PMI=1`; and a rank
//! that exits 3 or is killed there), and after each: no job in `squeue` and
//! no process of the job left on any host. Build the checks first:
//!
//! ```text
//! cargo build -p dos-launcher -p dos-checks --bins
//! flock /tmp/dos-cluster.lock cargo test -p dos-launcher --test slurm -- --ignored on_a_real_slurm_cluster
//! ```

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

const STATE: &str = "/tmp/dos-cluster";
const HOSTS: usize = 3;

fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/cluster.sh")
}

fn cluster(args: &[&str]) -> Run {
    run_with(
        Command::new("bash").arg(cluster_script()).args(args),
        b"",
        Duration::from_secs(180),
    )
}

/// Takes the cluster (and Slurm) down when the test ends, also when it fails.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let r = cluster(&["down"]);
        if r.code() != 0 {
            eprintln!("cluster.sh down failed: {r:?}");
        }
    }
}

/// A Slurm client command (`salloc`, `sbatch`, `srun`, `squeue`) of the
/// test cluster, with this process's `SLURM_*` variables removed.
fn slurm(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLURM_") {
            c.env_remove(k);
        }
    }
    c.env("SLURM_CONF", format!("{STATE}/slurm/slurm.conf"));
    c
}

fn slurm_run(c: &mut Command) -> Run {
    let r = run_with(c, b"", Duration::from_secs(90));
    r.assert_no_panic();
    r
}

/// The command lines of the processes in host `k`'s namespace, the
/// cluster's daemons (sshd, slurmd, slurmctld and its slurmscriptd) aside.
fn job_processes(k: usize) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "pids", &format!("dos-h{k}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|p| std::fs::read(format!("/proc/{}/cmdline", p.trim())).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| {
            !c.trim().is_empty()
                && !c.starts_with("sshd")
                && !c.starts_with("/usr/sbin/slurmd ")
                && !c.starts_with("/usr/sbin/slurmctld ")
                && !c.starts_with("slurmctld: slurmscriptd")
        })
        .collect()
}

/// Asserts that within a few seconds no job is in the queue and no process
/// of a job (slurmstepd, agent, rank) is left on any host.
fn assert_nothing_left(what: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let q = slurm("squeue")
            .args(["-h", "-o", "%i %T"])
            .output()
            .unwrap();
        let queue = String::from_utf8_lossy(&q.stdout).trim().to_string();
        let left: Vec<String> = (1..=HOSTS).flat_map(job_processes).collect();
        if q.status.success() && queue.is_empty() && left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "after {what}: queue {queue:?}, processes left {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bin(name: &str) -> String {
    Path::new(env!("CARGO_BIN_EXE_dosrun"))
        .with_file_name(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// A rank's body: rank 4 (on dos-h3 with 2 slots per host) exits 3, or
/// kills itself with SIGKILL; the others sleep.
fn failing_rank(how: &str) -> String {
    let act = match how {
        "exit" => "exit 3",
        _ => "kill -9 $$",
    };
    format!("if [ \"$DOS_RANK\" = 4 ]; then sleep 0.5; {act}; fi; exec sleep 30")
}

fn assert_failure_report(r: &Run, how: &str, code: i32) {
    let want = match how {
        "exit" => "on host dos-h3 exited with status 3; stopping the job",
        _ => "on host dos-h3 was killed by signal 9 (SIGKILL)",
    };
    assert_eq!(r.code(), code, "{r:?}");
    assert!(
        r.dosrun_lines()
            .iter()
            .any(|l| l.starts_with("dosrun: rank 4 (pid ") && l.contains(want)),
        "{how}: {r:?}"
    );
}

/// The whole tour of the real Slurm cluster (see the module doc).
#[test]
#[ignore = "needs root, slurm-wlm and the namespace cluster (flock /tmp/dos-cluster.lock)"]
fn on_a_real_slurm_cluster() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    let collcheck = bin("collcheck");
    assert!(
        Path::new(&collcheck).exists(),
        "build the checks first: cargo build -p dos-checks --bins"
    );
    let dosrun = env!("CARGO_BIN_EXE_dosrun");
    let up = cluster(&["slurm", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh slurm: {up:?}");

    // salloc: one task per node by default, then 2 per node.
    let r = slurm_run(slurm("salloc").args(["-N", "3", dosrun, &collcheck]));
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stdout.contains("collcheck: OK 3 ranks"), "{r:?}");
    assert!(!r.stderr.contains("dos: "), "{r:?}");
    assert_nothing_left("salloc -N 3 dosrun collcheck");
    let r = slurm_run(slurm("salloc").args(["-N", "3", "-n", "6", dosrun, &collcheck]));
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stdout.contains("collcheck: OK 6 ranks"), "{r:?}");
    assert_nothing_left("salloc -N 3 -n 6 dosrun collcheck");
    // Where the ranks ran: two per node, on the allocation's nodes.
    let r = slurm_run(slurm("salloc").args([
        "-N",
        "3",
        "-n",
        "6",
        dosrun,
        "sh",
        "-c",
        "echo $DOS_RANK on $(hostname)",
    ]));
    assert_eq!(r.code(), 0, "{r:?}");
    let want: Vec<String> = (0..6)
        .map(|i| format!("{i} on dos-h{}", i / 2 + 1))
        .collect();
    assert_eq!(ranks(&r), want, "{r:?}");
    assert_nothing_left("salloc: ranks' hosts");

    // A failing rank under salloc: salloc's status is dosrun's.
    for (how, code) in [("exit", 3), ("kill", 137)] {
        let body = failing_rank(how);
        let r = slurm_run(slurm("salloc").args(["-N", "3", "-n", "6", dosrun, "sh", "-c", &body]));
        assert_failure_report(&r, how, code);
        assert!(r.elapsed < Duration::from_secs(25), "{how}: {r:?}");
        assert_nothing_left(&format!("salloc, a rank that fails ({how})"));
    }

    // sbatch --wait: the batch script runs dosrun on the allocation.
    let d = TempDir::new("sbatch");
    for (name, body, code) in [
        ("ok", collcheck.clone(), 0),
        ("exit", format!("sh -c '{}'", failing_rank("exit")), 3),
        ("kill", format!("sh -c '{}'", failing_rank("kill")), 137),
    ] {
        let script = d.path().join(format!("{name}.sh"));
        let out = d.path().join(format!("{name}.out"));
        std::fs::write(&script, format!("#!/bin/sh\nexec {dosrun} {body}\n")).unwrap();
        let r = slurm_run(slurm("sbatch").args([
            "--wait",
            "-N",
            "3",
            "-n",
            "6",
            &format!("--output={}", out.display()),
            script.to_str().unwrap(),
        ]));
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        // sbatch --wait exits with the job's exit code: the batch
        // script's, which is dosrun's (exec).
        assert_eq!(r.code(), code, "sbatch {name}: {r:?}\noutput: {text}");
        match name {
            "ok" => assert!(text.contains("collcheck: OK 6 ranks"), "{text}"),
            how => {
                let fake = Run {
                    status: r.status,
                    stdout: String::new(),
                    stderr: text.clone(),
                    elapsed: r.elapsed,
                };
                assert_failure_report(&fake, how, code);
            }
        }
        assert_nothing_left(&format!("sbatch ({name})"));
    }

    // Direct launch: srun starts the dos program's ranks itself; dos::init
    // joins through Slurm's PMI server (mpi/pmi2) in PMI-2's wire protocol,
    // which each rank says in a debug line.
    let p2pcheck = bin("p2pcheck");
    let r = slurm_run(
        slurm("srun")
            .env("DOS_LOG", "warn,dos::pmi::direct=debug")
            .args(["-N", "3", "-n", "6", "--mpi=pmi2", &p2pcheck]),
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stdout.contains("p2pcheck: OK 6 ranks"), "{r:?}");
    assert_eq!(
        r.stderr.matches("direct launch over PMI-2").count(),
        6,
        "{r:?}"
    );
    assert!(
        !r.stderr
            .lines()
            .any(|l| l.contains("dos: ") && !l.contains("direct launch over PMI-2")),
        "{r:?}"
    );
    // DOS_PMI=1: the same over PMI-1 (Slurm's plug-in serves both).
    let r = slurm_run(
        slurm("srun")
            .env("DOS_LOG", "warn,dos::pmi::direct=debug")
            .env("DOS_PMI", "1")
            .args(["-N", "3", "-n", "6", "--mpi=pmi2", &p2pcheck]),
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stdout.contains("p2pcheck: OK 6 ranks"), "{r:?}");
    assert_eq!(
        r.stderr.matches("direct launch over PMI-1").count(),
        6,
        "{r:?}"
    );
    assert_nothing_left("srun --mpi=pmi2 p2pcheck");
    // A rank that exits 3 or is killed: srun ends the others
    // (--kill-on-bad-exit), its status and report are Slurm's: the largest
    // of the tasks' statuses (143 when the others' SIGTERM is the largest).
    for (how, codes, want) in [
        (
            "exit 3",
            [3, 143],
            "dos-h3: task 4: Exited with exit code 3",
        ),
        ("kill -9 $$", [137, 143], "dos-h3: task 4: Killed"),
    ] {
        let body = format!("if [ \"$PMI_RANK\" = 4 ]; then {how}; fi; exec {p2pcheck}");
        let r = slurm_run(slurm("srun").args([
            "-N",
            "3",
            "-n",
            "6",
            "--mpi=pmi2",
            "--kill-on-bad-exit=1",
            "sh",
            "-c",
            &body,
        ]));
        assert!(codes.contains(&r.code()), "{how}: {r:?}");
        assert!(r.stderr.contains(want), "{how}: {r:?}");
        assert_nothing_left(&format!("srun --mpi=pmi2, a rank that fails ({how})"));
    }
}
