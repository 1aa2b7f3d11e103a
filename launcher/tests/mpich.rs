//! MPICH programs under `dosrun --mpi pmi1` on this host: a cpi-shaped
//! program (tests/mpich/cpi.c: MPI_Bcast, MPI_Reduce) compiled here with
//! Debian's `mpicc.mpich` (package mpich, ch4:ucx, PMI-1 to its launcher),
//! run on 1, 2 and 3 ranks; found as an MPICH program without the option,
//! `--mpi none`; a rank that exits 3 or calls MPI_Abort, with
//! dosrun's usual report and status; `--tag-output`; nothing left running.
//! Skipped, saying so, when `mpicc.mpich` is missing (ci/deps.sh installs
//! it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{run, Run, TempDir};

/// The compiled program, or `None` (skip) without mpicc.mpich.
fn cpi() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<(TempDir, PathBuf)>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let found = Command::new("mpicc.mpich")
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                eprintln!(
                    "skipped: mpicc.mpich not found (apt-get install mpich; ci/deps.sh does)"
                );
                return None;
            }
            let d = TempDir::new("mpich");
            let exe = d.path().join("cpi");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mpich/cpi.c");
            let out = Command::new("mpicc.mpich")
                .arg("-O1")
                .arg("-o")
                .arg(&exe)
                .arg(&src)
                .arg("-lm")
                .output()
                .expect("run mpicc.mpich");
            assert!(
                out.status.success(),
                "mpicc.mpich failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some((d, exe))
        })
        .as_ref()
        .map(|(_, p)| p.as_path())
}

/// A copy of the program of this test's own (so that the processes of
/// tests running at once are told apart), in `d`.
fn own_copy(d: &TempDir) -> Option<String> {
    let exe = d.path().join("cpi");
    std::fs::copy(cpi()?, &exe).unwrap();
    Some(exe.to_str().unwrap().to_string())
}

fn go(args: &[&str]) -> Run {
    let r = run(args);
    r.assert_no_panic();
    r
}

/// No process runs the program any more.
fn assert_none_left(exe: &str) {
    let exe = std::fs::canonicalize(exe).unwrap();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid = e.file_name().into_string().ok()?;
            pid.parse::<i32>().ok()?;
            (std::fs::read_link(e.path().join("exe")).ok()? == exe).then_some(pid)
        })
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn cpi_runs_on_1_2_and_3_ranks() {
    let d = TempDir::new("cpi");
    let Some(exe) = own_copy(&d) else { return };
    let exe_s = exe.as_str();
    for n in [1, 2, 3] {
        let ns = n.to_string();
        let r = go(&["--mpi", "pmi1", "-n", &ns, exe_s]);
        assert_eq!(r.code(), 0, "{r:?}");
        assert!(r.stdout.contains("pi is approximately 3.14159265"), "{r:?}");
        assert!(r.stdout.contains(&format!("ranks {n}\n")), "{r:?}");
        for rank in 0..n {
            assert!(
                r.stdout.contains(&format!("rank {rank} of {n} on ")),
                "{r:?}"
            );
        }
        assert!(r.dosrun_lines().is_empty(), "{r:?}");
    }
    // --tag-output tags the program's lines as a dos program's.
    let r = go(&["--tag-output", "--mpi", "pmi1", "-n", "2", exe_s]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stdout.contains("[1,1]<stdout>:rank 1 of 2 on "), "{r:?}");
    assert!(r.stdout.contains("[1,0]<stdout>:ranks 2\n"), "{r:?}");
    assert_none_left(exe_s);
}

#[test]
fn mpich_programs_are_found_without_the_option() {
    let d = TempDir::new("cpi-auto");
    let Some(exe) = own_copy(&d) else { return };
    let exe_s = exe.as_str();
    let r = go(&["-n", "2", exe_s]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stdout.contains("ranks 2\n"), "{r:?}");
    // --mpi none: no PMI-1; MPICH then runs each rank as a job of its own.
    let r = go(&["--mpi", "none", "-n", "2", exe_s]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(r.stdout.matches("ranks 1\n").count(), 2, "{r:?}");
    assert_none_left(exe_s);
}

#[test]
fn a_failed_rank_gives_the_usual_report_and_status() {
    let d = TempDir::new("cpi");
    let Some(exe) = own_copy(&d) else { return };
    let exe_s = exe.as_str();
    let r = go(&["--mpi", "pmi1", "-n", "3", exe_s, "exit", "1", "3"]);
    assert_eq!(r.code(), 3, "{r:?}");
    let blamed = r
        .dosrun_lines()
        .into_iter()
        .find(|l| l.contains("stopping the job"))
        .unwrap_or_default()
        .to_string();
    assert!(
        blamed.starts_with("dosrun: rank 1 (pid ") && blamed.contains("exited with status 3"),
        "{r:?}"
    );
    let r = go(&["--mpi", "pmi1", "-n", "3", exe_s, "abort", "2", "7"]);
    assert_eq!(r.code(), 7, "{r:?}");
    assert!(
        r.dosrun_lines().iter().any(
            |l| l.starts_with("dosrun: rank 2 (pid ") && l.contains("called abort with code 7")
        ),
        "{r:?}"
    );
    assert_none_left(exe_s);
}

#[test]
fn pmi1_usage_errors() {
    let r = go(&["--mpi", "pmix", "-n", "1", "true"]);
    assert_eq!(r.code(), 2, "{r:?}");
    assert!(r.stderr.contains("--mpi: unknown value \"pmix\""), "{r:?}");
    let r = go(&["--mpi", "pmi1", "-n", "1", "no-such-program-here"]);
    assert_eq!(r.code(), 2, "{r:?}");
    assert_eq!(
        r.dosrun_lines(),
        ["dosrun: no-such-program-here: command not found in PATH"],
        "{r:?}"
    );
    // A program that speaks no PMI runs as it would without the option.
    let r = go(&[
        "--mpi",
        "pmi1",
        "-n",
        "2",
        "sh",
        "-c",
        "echo $PMI_RANK/$PMI_SIZE; exit 4",
    ]);
    assert_eq!(r.code(), 4, "{r:?}");
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["0/2", "1/2"], "{r:?}");
}

/// The PMI-1 conversation itself, without MPICH: each rank (bash, on the
/// inherited PMI_FD) inits, reads the maxes, its kvsname and the process
/// mapping, puts its key, enters the barrier, reads the other rank's key
/// and a missing one, and finalizes.
#[test]
fn pmi1_conversation_from_a_shell() {
    let script = r#"
fd=$PMI_FD
ask() { echo "$1" >&$fd; read -r reply <&$fd; echo "$PMI_RANK> $reply"; }
ask "cmd=init pmi_version=1 pmi_subversion=1"
ask "cmd=get_maxes"
ask "cmd=get_appnum"
ask "cmd=get_universe_size"
ask "cmd=get_my_kvsname"
kvs=${reply#*kvsname=}; kvs=${kvs%% *}
ask "cmd=get kvsname=$kvs key=PMI_process_mapping"
ask "cmd=put kvsname=$kvs key=card-$PMI_RANK value=addr=$PMI_RANK;x"
ask "cmd=barrier_in"
ask "cmd=get kvsname=$kvs key=card-$((1 - PMI_RANK))"
ask "cmd=get kvsname=$kvs key=nothing"
ask "cmd=finalize"
"#;
    let r = go(&["--mpi", "pmi1", "-n", "2", "bash", "-c", script]);
    assert_eq!(r.code(), 0, "{r:?}");
    for rank in 0..2 {
        let other = 1 - rank;
        let got: Vec<&str> = r
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{rank}> ")))
            .collect();
        assert_eq!(got.len(), 11, "{r:?}");
        assert_eq!(
            got[0],
            "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0"
        );
        assert_eq!(
            got[1],
            "cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024 rc=0"
        );
        assert_eq!(got[2], "cmd=appnum appnum=0 rc=0");
        assert_eq!(got[3], "cmd=universe_size size=2 rc=0");
        assert!(got[4].starts_with("cmd=my_kvsname kvsname=dos-"), "{r:?}");
        assert_eq!(
            got[5],
            "cmd=get_result rc=0 msg=success value=(vector,(0,1,2))"
        );
        assert_eq!(got[6], "cmd=put_result rc=0 msg=success");
        assert_eq!(got[7], "cmd=barrier_out");
        assert_eq!(
            got[8],
            format!("cmd=get_result rc=0 msg=success value=addr={other};x")
        );
        assert_eq!(got[9], "cmd=get_result rc=-1 msg=key_not_found");
        assert_eq!(got[10], "cmd=finalize_ack");
    }
    // A line that is no PMI-1 ends the rank with a line naming it.
    let r = go(&[
        "--mpi",
        "pmi1",
        "-n",
        "1",
        "bash",
        "-c",
        "echo 'cmd=fly' >&$PMI_FD; sleep 30",
    ]);
    assert_ne!(r.code(), 0, "{r:?}");
    assert!(
        r.stderr
            .contains("dosrun: rank 0: PMI-1: unknown command \"fly\" in \"cmd=fly\""),
        "{r:?}"
    );
    assert!(r.elapsed < std::time::Duration::from_secs(4), "{r:?}");
}

/// A dos program started by another launcher as one of several ranks:
/// under MPICH's mpiexec.hydra (PMI-1, as its debug line says) it joins the job directly (rank,
/// size and node-local ranks from the PMI server, addresses through its
/// key-value space, the node's shared segment made by local rank 0), and
/// collectives and point-to-point across the ranks check out; under Open
/// MPI's mpirun (PMIx only) it fails at once with an error naming the
/// launcher's variable and what to use instead.
#[test]
fn dos_programs_under_other_launchers() {
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let check = |name: &str| {
        Path::new(env!("CARGO_BIN_EXE_dosrun"))
            .with_file_name(name)
            .to_str()
            .unwrap()
            .to_string()
    };
    if have("mpiexec.hydra") && Path::new(&check("collcheck")).exists() {
        for (prog, n, want) in [
            ("collcheck", "4", "collcheck: OK 4 ranks"),
            ("p2pcheck", "3", "p2pcheck: OK 3 ranks"),
        ] {
            let mut c = Command::new("mpiexec.hydra");
            c.env_remove("SLURM_JOB_ID")
                .env_remove("SLURM_STEP_ID")
                .env("DOS_LOG", "warn,dos::pmi::direct=debug")
                .args(["-n", n, &check(prog)]);
            let r = common::run_with(&mut c, b"", common::LIMIT);
            r.assert_no_panic();
            assert_eq!(r.code(), 0, "{prog}: {r:?}");
            assert!(r.stdout.contains(want), "{prog}: {r:?}");
            // Every rank spoke PMI-1 (auto: no Slurm variables).
            assert_eq!(
                r.stderr.matches("direct launch over PMI-1").count(),
                n.parse::<usize>().unwrap(),
                "{prog}: {r:?}"
            );
        }
        // Hydra serves PMI-2 too: DOS_PMI=2 speaks it there (a real PMI-2
        // server on one host; hydra pads the length header on the left).
        let mut c = Command::new("mpiexec.hydra");
        c.env("DOS_PMI", "2")
            .env("DOS_LOG", "warn,dos::pmi::direct=debug")
            .args(["-n", "3", &check("p2pcheck")]);
        let r = common::run_with(&mut c, b"", common::LIMIT);
        r.assert_no_panic();
        assert_eq!(r.code(), 0, "DOS_PMI=2: {r:?}");
        assert!(r.stdout.contains("p2pcheck: OK 3 ranks"), "{r:?}");
        assert_eq!(
            r.stderr.matches("direct launch over PMI-2").count(),
            3,
            "{r:?}"
        );
    } else {
        eprintln!(
            "hydra skipped: mpiexec.hydra or the checks (cargo build -p dos-checks --bins) missing"
        );
    }
    if have("mpirun.openmpi") {
        let mut c = Command::new("mpirun.openmpi");
        c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .args(["--oversubscribe", "-n", "2", common::probe()]);
        let r = common::run_with(&mut c, b"", common::LIMIT);
        assert_ne!(r.code(), 0, "{r:?}");
        assert!(
            r.stderr.contains("PMIX_RANK: started by a PMIx launcher"),
            "{r:?}"
        );
        assert!(r.stderr.contains("srun --mpi=pmi2"), "{r:?}");
    } else {
        eprintln!("mpirun.openmpi skipped: not installed");
    }
}

/// dosrun's PMI server speaks PMI-2 as well: dos programs whose direct
/// launch asks for it (`DOS_PMI=2`, and no `DOS_PMI_ADDR`, which would
/// make them use dosrun's own wire-up) run under `--mpi pmi1`, every rank
/// saying so; a conversation from a shell (init, fullinit, job-getid,
/// job attributes, put, fence, get, finalize); malformed frames end the
/// rank at once with a line naming it, never a hang.
#[test]
fn pmi2_under_dosrun() {
    let check = Path::new(env!("CARGO_BIN_EXE_dosrun")).with_file_name("p2pcheck");
    if check.exists() {
        let mut c = common::dosrun();
        c.env("DOS_PMI", "2")
            .env("DOS_LOG", "warn,dos::pmi::direct=debug")
            // Without DOS_PMI_ADDR a dos program joins through PMI_FD
            // (direct launch), as under srun or hydra.
            .args(["--mpi", "pmi1", "-n", "3", "env", "-u", "DOS_PMI_ADDR"])
            .arg(&check);
        let r = common::run_with(&mut c, b"", common::LIMIT);
        r.assert_no_panic();
        assert_eq!(r.code(), 0, "{r:?}");
        assert!(r.stdout.contains("p2pcheck: OK 3 ranks"), "{r:?}");
        assert_eq!(
            r.stderr.matches("direct launch over PMI-2").count(),
            3,
            "{r:?}"
        );
    } else {
        eprintln!("p2pcheck skipped: build it first (cargo build -p dos-checks --bins)");
    }
    // PMI-2 by hand: 6-character length, then the body.
    let script = r#"
fd=$PMI_FD
echo "cmd=init pmi_version=2 pmi_subversion=0" >&$fd
read -r reply <&$fd; echo "$PMI_RANK> $reply"
ask() {
  printf '%-6d%s' "${#1}" "$1" >&$fd
  read -r -N 6 len <&$fd; read -r -N "$((len))" reply <&$fd
  echo "$PMI_RANK> $reply"
}
ask "cmd=fullinit;pmijobid=-1;pmirank=$PMI_RANK;threaded=FALSE;"
ask "cmd=job-getid;"
ask "cmd=info-getjobattr;key=PMI_process_mapping;"
ask "cmd=info-getjobattr;key=nothing;"
ask "cmd=kvs-put;key=card-$PMI_RANK;value=addr=$PMI_RANK;"
ask "cmd=kvs-fence;"
ask "cmd=kvs-get;jobid=x;srcid=-1;key=card-$((1 - PMI_RANK));"
ask "cmd=kvs-get;jobid=x;srcid=-1;key=nothing;"
ask "cmd=finalize;"
"#;
    let r = go(&["--mpi", "pmi1", "-n", "2", "bash", "-c", script]);
    assert_eq!(r.code(), 0, "{r:?}");
    for rank in 0..2 {
        let other = 1 - rank;
        let got: Vec<&str> = r
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{rank}> ")))
            .collect();
        assert_eq!(got.len(), 10, "{r:?}");
        assert_eq!(
            got[0],
            "cmd=response_to_init pmi_version=2 pmi_subversion=0 rc=0"
        );
        assert!(
            got[1].starts_with(&format!(
                "cmd=fullinit-response;pmi-version=2;pmi-subversion=0;rank={rank};size=2;appnum=0;spawner-jobid=dos-"
            )) && got[1].ends_with(";rc=0;"),
            "{r:?}"
        );
        assert!(
            got[2].starts_with("cmd=job-getid-response;jobid=dos-"),
            "{r:?}"
        );
        assert_eq!(
            got[3],
            "cmd=info-getjobattr-response;rc=0;found=TRUE;value=(vector,(0,1,2));"
        );
        assert_eq!(got[4], "cmd=info-getjobattr-response;rc=0;found=FALSE;");
        assert_eq!(got[5], "cmd=kvs-put-response;rc=0;");
        assert_eq!(got[6], "cmd=kvs-fence-response;rc=0;");
        assert_eq!(
            got[7],
            format!("cmd=kvs-get-response;rc=0;found=TRUE;value=addr={other};")
        );
        assert_eq!(got[8], "cmd=kvs-get-response;rc=0;found=FALSE;");
        assert_eq!(got[9], "cmd=finalize-response;rc=0;");
    }
    // PMI-2's abort: dosrun's usual report, naming the rank and message.
    let script = r#"echo 'cmd=init pmi_version=2 pmi_subversion=0' >&$PMI_FD; read -r r <&$PMI_FD
if [ "$PMI_RANK" = 1 ]; then b='cmd=abort;isworld=TRUE;msg=boom;'; printf '%-6d%s' "${#b}" "$b" >&$PMI_FD; fi
sleep 30"#;
    let r = go(&["--mpi", "pmi1", "-n", "2", "bash", "-c", script]);
    assert_eq!(r.code(), 1, "{r:?}");
    assert!(
        r.stderr.contains("rank 1 (pid") && r.stderr.contains("called abort with code 1: boom"),
        "{r:?}"
    );
    assert!(r.elapsed < std::time::Duration::from_secs(10), "{r:?}");
    // Malformed frames: a bad length header, an unknown command, another
    // rank's fullinit. The rank ends at once, named, and the job fails.
    for (frame, want) in [
        ("zzzzzzcmd=finalize;", "PMI-2: malformed message"),
        ("8     cmd=fly;", "PMI-2: unknown"),
        (
            "50    cmd=fullinit;pmijobid=-1;pmirank=5;threaded=FALSE;",
            "pmirank",
        ),
    ] {
        let script = format!(
            "echo 'cmd=init pmi_version=2 pmi_subversion=0' >&$PMI_FD; read -r r <&$PMI_FD; printf '%s' '{frame}' >&$PMI_FD; sleep 30"
        );
        let r = go(&["--mpi", "pmi1", "-n", "1", "bash", "-c", &script]);
        assert_ne!(r.code(), 0, "{frame}: {r:?}");
        assert!(
            r.stderr.contains("dosrun: rank 0: PMI-2: "),
            "{frame}: {r:?}"
        );
        assert!(r.stderr.contains(want), "{frame}: {r:?}");
        assert!(
            r.elapsed < std::time::Duration::from_secs(4),
            "{frame}: {r:?}"
        );
    }
}
