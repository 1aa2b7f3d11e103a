//! Ranks started from several threads at once (`DOS_SPAWN_THREADS`) get
//! exactly what ranks started one after the other get: their rank and
//! local rank, the environment, the binding, their own process group, the
//! wire-up socket, default signal dispositions and an empty mask, the
//! descriptor limit; and a program that cannot start leaves no process.

mod common;

use common::{dosrun, run_with, LIMIT};

/// What a rank sees of itself, one line, without pids.
const SELF_REPORT: &str = r#"set -- $(cat /proc/$$/stat)
pg=no; [ "$5" = "$$" ] && pg=own
pmi=$(readlink /proc/$$/fd/$DOS_PMI_FD)
shm=$(readlink /proc/$$/fd/$DOS_SHM_FD)
echo "rank=$DOS_RANK local=$DOS_LOCAL_RANK/$DOS_LOCAL_SIZE node=$DOS_NODE_ID size=$DOS_SIZE" \
  "x=$SPAWN_TEST_X pgrp=$pg pmi=${pmi%%:*} shm=${shm%% *} nofile=$(ulimit -n)" \
  "$(grep -E '^(SigBlk|SigIgn|Cpus_allowed_list)' /proc/$$/status | tr '\t\n' '  ')""#;

fn lines(np: usize, threads: &str, extra: &[&str]) -> Vec<String> {
    let n = np.to_string();
    let mut cmd = dosrun();
    cmd.env("DOS_SPAWN_THREADS", threads)
        .args(["-n", &n, "-x", "SPAWN_TEST_X=seen"])
        .args(extra)
        .args(["sh", "-c", SELF_REPORT]);
    let r = run_with(&mut cmd, b"", LIMIT);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let mut v: Vec<String> = r.stdout.lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn ranks_started_from_many_threads_get_what_one_thread_gives() {
    let one = lines(64, "1", &[]);
    assert_eq!(one.len(), 64, "{one:?}");
    for i in 0..64 {
        let rank = format!("rank={i} local={i}/64 node=0 size=64 ");
        assert!(one.iter().any(|x| x.starts_with(&rank)), "{i}: {one:?}");
    }
    for l in &one {
        assert!(l.contains("x=seen pgrp=own pmi=socket shm=/memfd"), "{l}");
        assert!(l.contains("SigBlk: 0000000000000000"), "{l}");
        assert!(l.contains("SigIgn: 0000000000000000"), "{l}");
    }
    assert_eq!(lines(64, "4", &[]), one);
    assert_eq!(lines(64, "auto", &[]), one);
    // Bound ranks, one a core, from more threads than ranks.
    let bound = lines(2, "8", &["--bind-to", "core"]);
    assert_eq!(bound, lines(2, "1", &["--bind-to", "core"]));
    assert!(bound.iter().all(|l| l.contains("Cpus_allowed_list: ")));
}

/// A program every rank fails to exec (its interpreter is missing), from
/// several threads: one typed error naming the program, the status of
/// the shell, no rank left behind.
#[test]
fn a_program_that_cannot_exec_stops_the_job_from_many_threads() {
    let dir = common::TempDir::new("spawn-noexec");
    let prog = dir.path().join("noexec");
    std::fs::write(&prog, "#!/nonexistent/interpreter\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for threads in ["1", "4"] {
        let mut cmd = dosrun();
        cmd.env("DOS_SPAWN_THREADS", threads)
            .args(["-n", "32"])
            .arg(&prog);
        let r = run_with(&mut cmd, b"", LIMIT);
        r.assert_no_panic();
        assert_eq!(r.code(), 127, "{threads}: {}", r.stderr);
        let lines = r.dosrun_lines();
        assert_eq!(lines.len(), 1, "{threads}: {}", r.stderr);
        assert!(
            lines[0].contains("rank 0 on host")
                && lines[0].contains("noexec")
                && lines[0].contains("No such file"),
            "{threads}: {}",
            r.stderr
        );
    }
}
