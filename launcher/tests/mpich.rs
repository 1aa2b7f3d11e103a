//! MPICH programs under `dosrun --mpi pmi1` on this host: a cpi-shaped
//! program (tests/mpich/cpi.c: MPI_Bcast, MPI_Reduce) compiled here with
//! Debian's `mpicc.mpich` (package mpich, ch4:ucx, PMI-1 to its launcher),
//! run on 1, 2 and 3 ranks; a rank that exits 3 or calls MPI_Abort, with
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
