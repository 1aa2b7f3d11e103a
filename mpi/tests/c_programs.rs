//! The C (and C++) test programs of `mpi/tests/c`, compiled with `dosmpicc`
//! (`dosmpicxx`) against this build's `libmpi.so` and run under the real
//! `dosrun` on 1 to 4 ranks.
//!
//! Needs `dosrun` built in the same profile (`cargo build -p dos-launcher
//! --bin dosrun`, or `cargo build --workspace --bins` as `ci/test.sh` does)
//! and a C and C++ compiler (`cc`, `c++`; `ci/deps.sh` installs gcc and g++).
//! Each program prints `OK <name> <n> ranks` on rank 0 when every check
//! passed; a failed check aborts the job through `MPI_Abort`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>`: this test runs as `target/<profile>/deps/c_programs-*`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
        .to_path_buf()
}

fn dosrun() -> PathBuf {
    let p = profile_dir().join("dosrun");
    assert!(
        p.is_file(),
        "{} is missing: build it first with `cargo build -p dos-launcher --bin dosrun`",
        p.display()
    );
    p
}

fn mpi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of this build's `libmpi.so`: `target/<profile>/deps`,
/// where `cargo test` puts every crate type of the library it builds for
/// the tests (only `cargo build` copies them up to `target/<profile>`).
fn lib_dir() -> PathBuf {
    let deps = profile_dir().join("deps");
    assert!(
        deps.join("libmpi.so").is_file(),
        "{} has no libmpi.so: build it with `cargo build -p dos-mpi`",
        deps.display()
    );
    deps
}

/// Compiles `mpi/tests/c/<file>` with the wrapper `wrapper` into
/// `target/<profile>/mpi-tests/`; returns the program's path.
fn compile(wrapper: &str, file: &str) -> PathBuf {
    compile_as(wrapper, file, "", &[])
}

/// As [`compile`], the program named with `suffix`, with extra wrapper options.
fn compile_as(wrapper: &str, file: &str, suffix: &str, extra: &[&str]) -> PathBuf {
    let lib = lib_dir();
    let out_dir = profile_dir().join("mpi-tests");
    std::fs::create_dir_all(&out_dir).expect("create target/<profile>/mpi-tests");
    let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
    let exe = out_dir.join(format!("{stem}{suffix}"));
    let out = Command::new(mpi_dir().join("bin").join(wrapper))
        .env("DOSMPICC_LIBDIR", &lib)
        .args(extra)
        .args(["-Wall", "-Werror", "-O1", "-g", "-o"])
        .arg(&exe)
        .arg(mpi_dir().join("tests").join("c").join(file))
        .output()
        .unwrap_or_else(|e| panic!("run {wrapper}: {e}"));
    assert!(
        out.status.success(),
        "{wrapper} {file} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A finished job.
struct Job {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `prog` on `n` ranks under dosrun; kills the job after `limit`.
fn run(n: usize, prog: &Path, limit: Duration) -> Job {
    run_full(n, &[], prog, &[], limit)
}

const LIMIT: Duration = Duration::from_secs(120);

/// Compiles `file` and runs it on 1, 2, 3 and 4 ranks; each run must succeed
/// and print its OK line.
fn passes(wrapper: &str, file: &str) {
    let prog = compile(wrapper, file);
    let name = prog.file_name().unwrap().to_str().unwrap().to_string();
    for n in 1..=4 {
        let j = run(n, &prog, LIMIT);
        let want = format!("OK {name} {n} ranks");
        assert!(
            j.code == Some(0) && j.stdout.lines().any(|l| l == want),
            "{name} on {n} ranks: expected exit 0 and {want:?}\n{j}"
        );
    }
}

#[test]
fn environment() {
    passes("dosmpicc", "env.c");
}

#[test]
fn point_to_point() {
    passes("dosmpicc", "p2p.c");
}

#[test]
fn nonblocking_and_every_wait_and_test() {
    passes("dosmpicc", "nb.c");
}

#[test]
fn communicators_and_error_handlers() {
    passes("dosmpicc", "comm.c");
}

#[test]
fn groups_and_communicators_from_groups() {
    passes("dosmpicc", "groups.c");
}

#[test]
fn user_operations_in_rank_order() {
    passes("dosmpicc", "userop.c");
}

#[test]
fn persistent_requests_matched_probes_and_cancel() {
    passes("dosmpicc", "persist.c");
}

#[test]
fn info_objects() {
    passes("dosmpicc", "info.c");
}

#[test]
fn derived_datatypes() {
    passes("dosmpicc", "types.c");
}

#[test]
fn pair_types_have_the_c_structs_size_and_extent() {
    passes("dosmpicc", "types_pairs.c");
}

#[test]
fn darray_external32_match_size_f90_and_large_counts() {
    passes("dosmpicc", "types_layouts.c");
}

#[test]
fn user_ops_on_types_with_holes_and_long_double_reductions() {
    passes("dosmpicc", "types_userop.c");
}

#[test]
fn collectives() {
    passes("dosmpicc", "coll.c");
}

#[test]
fn nonblocking_collectives_against_a_serial_model() {
    passes("dosmpicc", "nbc_coll.c");
}

#[test]
fn persistent_collectives_started_many_times() {
    passes("dosmpicc", "nbc_persist.c");
}

#[test]
fn bad_arguments_return_the_standard_error_classes() {
    passes("dosmpicc", "errors.c");
}

#[test]
fn a_cxx_program_through_dosmpicxx() {
    passes("dosmpicxx", "cxx.cpp");
}

#[test]
fn errors_are_fatal_by_default_and_dosrun_reports_the_rank() {
    let prog = compile("dosmpicc", "fatal.c");
    for n in [1, 3] {
        let j = run(n, &prog, LIMIT);
        let last = n - 1;
        assert!(
            j.code.is_some_and(|c| c != 0)
                && !j.stdout.contains("not reached")
                && j.stderr
                    .contains(&format!("rank {last}: MPI_Send: MPI_ERR_RANK"))
                && j.stderr.contains(&format!("dosrun: rank {last} (pid")),
            "fatal on {n} ranks\n{j}"
        );
    }
}

#[test]
fn abort_ends_the_job_with_its_code() {
    let prog = compile("dosmpicc", "abort.c");
    for n in [1, 2, 4] {
        let j = run(n, &prog, LIMIT);
        let last = n - 1;
        assert!(
            j.code == Some(7)
                && !j.stdout.contains("not reached")
                && j.stderr.contains(&format!("dosrun: rank {last} (pid"))
                && j.stderr.contains("abort with code 7"),
            "abort on {n} ranks\n{j}"
        );
    }
}

#[test]
fn a_program_linked_with_the_static_library() {
    let prog = compile_as("dosmpicc", "env.c", "_static", &["-static-dos"]);
    let ldd = Command::new("ldd").arg(&prog).output();
    if let Ok(o) = ldd {
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(!s.contains("libmpi.so"), "linked dynamically:\n{s}");
    }
    for n in [1, 2] {
        let j = run(n, &prog, LIMIT);
        assert!(
            j.code == Some(0) && j.stdout.contains(&format!("OK env {n} ranks")),
            "static env on {n} ranks\n{j}"
        );
    }
}

#[test]
fn dosmpicc_shows_its_command() {
    let lib = lib_dir();
    let out = Command::new(mpi_dir().join("bin/dosmpicc"))
        .env("DOSMPICC_LIBDIR", &lib)
        .args(["-show", "-O2", "-o", "x", "x.c"])
        .output()
        .expect("run dosmpicc -show");
    let s = String::from_utf8_lossy(&out.stdout);
    let inc = mpi_dir().join("include").canonicalize().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(s.starts_with("cc "), "{s}");
    assert!(s.contains(&format!("-I{}", inc.display())), "{s}");
    assert!(s.contains("-lmpi") && s.contains("-Wl,-rpath,"), "{s}");
    assert!(s.contains("-O2 -o x x.c"), "{s}");
    // -c compiles only: no link flags.
    let out = Command::new(mpi_dir().join("bin/dosmpicxx"))
        .env("DOSMPICC_LIBDIR", &lib)
        .args(["-show", "-c", "y.cpp"])
        .output()
        .expect("run dosmpicxx -show");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("c++ ") && !s.contains("-lmpi"), "{s}");
}

#[test]
fn the_pkg_config_file_gives_the_flags() {
    let Ok(out) = Command::new("pkg-config")
        .arg("--cflags")
        .arg("--libs")
        .arg(mpi_dir().join("dos-mpi.pc"))
        .output()
    else {
        eprintln!("pkg-config is not installed: skipped");
        return;
    };
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(s.contains("/include") && s.contains("-lmpi"), "{s}");
}

/// Runs `prog args` on `n` ranks under `dosrun`, with `dosrun_args` before
/// the program (`--fs DIR` for a dosfs of the job); kills it after [`LIMIT`].
fn run_with(n: usize, dosrun_args: &[&std::ffi::OsStr], prog: &Path, args: &[&str]) -> Job {
    run_full(n, dosrun_args, prog, args, LIMIT)
}

/// Runs `prog args` on `n` ranks under `dosrun`, with `dosrun_args` before
/// the program; kills the job after `limit`.
fn run_full(
    n: usize,
    dosrun_args: &[&std::ffi::OsStr],
    prog: &Path,
    args: &[&str],
    limit: Duration,
) -> Job {
    // `cargo test` puts target/<profile> on LD_LIBRARY_PATH, ahead of the
    // programs' rpath (target/<profile>/deps): a libmpi.so that `cargo build`
    // left there would be loaded instead of the one under test.
    let mut child = Command::new(dosrun())
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("DOSFS")
        .arg("-n")
        .arg(n.to_string())
        .args(dosrun_args)
        .arg(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dosrun");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for dosrun") {
            break Some(st);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let job = Job {
        code: status.and_then(|s| s.code()),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "{} on {n} ranks timed out\n{job}",
        prog.display()
    );
    job
}

/// A fresh directory for a job's dosfs (`dosrun --fs`), removed on drop.
struct FsDir(PathBuf);

impl FsDir {
    fn new(tag: &str) -> FsDir {
        let d = profile_dir()
            .join("mpi-tests")
            .join(format!("fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the dosfs directory");
        FsDir(d)
    }

    fn args(&self) -> [&std::ffi::OsStr; 2] {
        ["--fs".as_ref(), self.0.as_os_str()]
    }
}

impl Drop for FsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn expect_ok(j: &Job, what: &str, want: &str) {
    assert!(
        j.code == Some(0) && j.stdout.lines().any(|l| l == want),
        "{what}: expected exit 0 and {want:?}\n{j}"
    );
}

#[test]
fn mpi_io_on_the_jobs_dosfs() {
    for file in ["io_basic.c", "io_views.c", "io_shared.c"] {
        let prog = compile("dosmpicc", file);
        let name = prog.file_name().unwrap().to_str().unwrap().to_string();
        for n in 1..=4 {
            let fs = FsDir::new(&format!("{name}-{n}"));
            let j = run_with(n, &fs.args(), &prog, &[]);
            expect_ok(
                &j,
                &format!("{name} on {n} ranks"),
                &format!("OK {name} {n} ranks"),
            );
        }
    }
}

#[test]
fn an_mpi_io_file_is_read_by_a_later_job_with_another_rank_count() {
    let prog = compile("dosmpicc", "io_reread.c");
    for (w, readers) in [(3, [2, 4]), (4, [1, 3])] {
        let fs = FsDir::new(&format!("reread-{w}"));
        let j = run_with(w, &fs.args(), &prog, &["write"]);
        expect_ok(
            &j,
            &format!("write on {w} ranks"),
            &format!("OK write {w} ranks"),
        );
        for r in readers {
            let j = run_with(r, &fs.args(), &prog, &["read"]);
            expect_ok(
                &j,
                &format!("read on {r} ranks after {w}"),
                &format!("OK read {r} ranks"),
            );
        }
    }
    // A file error under MPI_ERRORS_ARE_FATAL ends the job, and says why.
    let fs = FsDir::new("fatal");
    let j = run_with(2, &fs.args(), &prog, &["write"]);
    expect_ok(&j, "write on 2 ranks", "OK write 2 ranks");
    let j = run_with(2, &fs.args(), &prog, &["fatal"]);
    assert!(
        j.code != Some(0)
            && !j.stdout.contains("not reached")
            && j.stderr.contains("MPI_File_write_at: MPI_ERR_ACCESS"),
        "a fatal file error: {j}"
    );
    // Without a dosfs in the job: MPI_ERR_IO with a message, no crash.
    let j = run_with(2, &[], &prog, &["nofs"]);
    expect_ok(&j, "a job without dosfs", "OK nofs 2 ranks");
}

#[test]
fn one_sided_every_sync_mode_and_operation_against_a_serial_model() {
    passes("dosmpicc", "rma_ops.c");
}

#[test]
fn one_sided_bad_arguments_return_their_classes() {
    passes("dosmpicc", "rma_errors.c");
}

#[test]
fn one_sided_dynamic_windows() {
    passes("dosmpicc", "rma_dynamic.c");
}

#[test]
fn attributes_keyvals_callbacks_and_names() {
    passes("dosmpicc", "attr.c");
}

#[test]
fn user_error_handlers_and_added_error_classes() {
    passes("dosmpicc", "errhan.c");
}

#[test]
fn topologies_against_a_serial_model() {
    passes("dosmpicc", "topo.c");
}

#[test]
fn alloc_mem_and_the_programs_window_attributes() {
    passes("dosmpicc", "alloc_winattr.c");
}

#[test]
fn neighbourhood_collectives_on_every_topology() {
    passes("dosmpicc", "neighbor.c");
}

#[test]
fn user_operations_on_whole_elements_of_a_derived_type() {
    passes("dosmpicc", "userop_derived.c");
}

#[test]
fn request_get_status_any_all_some_and_aint_arithmetic() {
    passes("dosmpicc", "status_peek.c");
}

#[test]
fn persistent_collectives_match_in_init_order() {
    passes("dosmpicc", "persist_order.c");
}

#[test]
fn a_files_own_error_handler() {
    let prog = compile("dosmpicc", "io_errhandler.c");
    for n in [1, 3] {
        let fs = FsDir::new(&format!("io_errhandler-{n}"));
        let j = run_with(n, &fs.args(), &prog, &[]);
        expect_ok(
            &j,
            &format!("io_errhandler on {n} ranks"),
            &format!("OK io_errhandler {n} ranks"),
        );
    }
}

#[test]
fn intercommunicators_create_merge_split_and_point_to_point() {
    passes("dosmpicc", "inter_comm.c");
}

#[test]
fn intercommunicator_collectives_root_semantics_and_nonblocking_forms() {
    passes("dosmpicc", "inter_coll.c");
}

#[test]
fn completed_requests_complete_on_the_fast_path_as_on_the_general_one() {
    passes("dosmpicc", "fastpath.c");
}

#[test]
fn a_second_thread_calling_mpi_is_refused() {
    let prog = compile_as("dosmpicc", "other_thread.c", "", &["-pthread"]);
    let j = run(1, &prog, LIMIT);
    assert!(
        j.code.is_some_and(|c| c != 0)
            && j.stdout.contains("MPI_Initialized and MPI_Wtime work")
            && !j.stdout.contains("not reached")
            && j.stderr.contains("MPI_Comm_size")
            && j.stderr.contains("not on this thread"),
        "a call from another thread\n{j}"
    );
}

#[test]
fn mpi4_point_to_point_isendrecv_large_counts_bounded_bsend_and_statuses() {
    passes("dosmpicc", "p2p_mpi4.c");
}

#[test]
fn info_objects_before_mpi_init_and_after_mpi_finalize() {
    passes("dosmpicc", "info_outside.c");
}

#[test]
fn generalized_requests_complete_with_the_query_functions_status() {
    passes("dosmpicc", "greq.c");
}

#[test]
fn split_type_with_different_types_on_different_ranks() {
    passes("dosmpicc", "split_type_mixed.c");
}

#[test]
fn comm_idup_is_nonblocking_on_intra_and_intercommunicators() {
    passes("dosmpicc", "idup.c");
}

#[test]
fn neighbourhood_and_intercommunicator_nonblocking_collectives_progress_after_the_call() {
    passes("dosmpicc", "nbc_overlap.c");
}

#[test]
fn blocking_and_one_sided_fast_paths_match_the_general_ones() {
    passes("dosmpicc", "blocking_fast.c");
}

#[test]
fn mpi_init_sends_no_message_and_comm_self_still_works() {
    passes("dosmpicc", "init_local.c");
}

#[test]
fn accumulates_on_derived_types_long_double_and_pair_vectors() {
    passes("dosmpicc", "rma_derived_acc.c");
}

#[test]
fn shared_window_layout_queries_proc_null_requests_and_mpi_bottom() {
    passes("dosmpicc", "rma_shared_layout.c");
}

#[test]
fn mpi_io_external32_views() {
    let prog = compile("dosmpicc", "io_external32.c");
    for n in [1, 3] {
        let fs = FsDir::new(&format!("io_external32-{n}"));
        let j = run_with(n, &fs.args(), &prog, &[]);
        expect_ok(
            &j,
            &format!("io_external32 on {n} ranks"),
            &format!("OK io_external32 {n} ranks"),
        );
    }
}

#[test]
fn a_datatype_of_too_many_pieces_answers_queries_and_refuses_data() {
    passes("dosmpicc", "types_unlisted.c");
}

#[test]
fn dynamic_window_accesses_across_adjacent_attached_regions() {
    passes("dosmpicc", "rma_dynamic_seam.c");
}

#[test]
fn window_error_handlers_of_the_program() {
    passes("dosmpicc", "rma_errhandler.c");
}

#[test]
fn large_count_collectives_and_op_create_c() {
    passes("dosmpicc", "coll_large.c");
}

#[test]
fn nonblocking_fast_paths_and_waitall_batches_match_the_general_ones() {
    passes("dosmpicc", "nonblocking_fast.c");
}

#[test]
fn overlapping_filetypes_on_read_only_files() {
    let prog = compile("dosmpicc", "io_view_overlap.c");
    for n in [1, 3] {
        let fs = FsDir::new(&format!("io_view_overlap-{n}"));
        let j = run_with(n, &fs.args(), &prog, &[]);
        expect_ok(
            &j,
            &format!("io_view_overlap on {n} ranks"),
            &format!("OK io_view_overlap {n} ranks"),
        );
    }
}

#[test]
fn dims_create_balances_every_factor() {
    passes("dosmpicc", "dims_balanced.c");
}

#[test]
fn mpi_io_on_local_files_without_a_dosfs_and_with_ufs_names() {
    let prog = compile("dosmpicc", "io_local.c");
    let dir = profile_dir()
        .join("mpi-tests")
        .join(format!("io_local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let d = dir.to_str().unwrap();
    for n in [1, 3] {
        let j = run_with(n, &[], &prog, &["nofs", d]);
        expect_ok(
            &j,
            &format!("plain local names on {n} ranks"),
            &format!("OK nofs {n} ranks"),
        );
    }
    let fs = FsDir::new("io_local");
    let j = run_with(2, &fs.args(), &prog, &["withfs", d]);
    expect_ok(&j, "ufs: names beside a dosfs", "OK withfs 2 ranks");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_blocking_receive_completes_alike_and_allreduce_checks_its_common_case() {
    passes("dosmpicc", "recv_complete.c");
}
