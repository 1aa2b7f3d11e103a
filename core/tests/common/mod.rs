//! Helpers of the launch tests: finding the built binaries, running jobs
//! under `dosrun` with time limits, and checking what a job leaves behind.
#![allow(dead_code)]

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `--timeout` given to dosrun for jobs that should end on their own.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// How much longer than its `--timeout` the harness waits for dosrun before
/// killing it and failing the test.
const HARNESS_SLACK: Duration = Duration::from_secs(30);

/// The name every shared segment of a job carries in `/proc/PID/maps` and
/// `/proc/PID/fd`.
const SEGMENT_NAME: &str = "memfd:dos-shm";

/// `target/<profile>`: this test runs as `target/<profile>/deps/launch-*`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
        .to_path_buf()
}

/// `path`, which must be a built file.
fn built(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins --examples`",
        path.display()
    );
    path
}

/// The `dosrun` binary.
pub fn dosrun() -> PathBuf {
    built(profile_dir().join("dosrun"))
}

/// The binary of example `name` of the `dos` crate.
pub fn example(name: &str) -> PathBuf {
    built(profile_dir().join("examples").join(name))
}

/// The binary of test program `name` (`collcheck`, …) of the `dos-checks` crate.
pub fn check(name: &str) -> PathBuf {
    built(profile_dir().join(name))
}

/// A finished job.
#[derive(Debug)]
pub struct Job {
    /// The command line, for messages.
    pub cmd: String,
    /// dosrun's pid.
    pub pid: i32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// `/dev/shm` entries named `dos*` before the job started.
    pub shm_before: Vec<String>,
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "job: {}", self.cmd)?;
        writeln!(f, "status: {} after {:?}", self.status, self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl Job {
    /// dosrun's exit status (-1 if a signal ended it).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Asserts the job printed no Rust panic.
    pub fn assert_no_panic(&self) {
        assert!(!self.stderr.contains("panicked"), "a rank panicked\n{self}");
    }

    /// Asserts the job succeeded and wrote nothing on stderr.
    pub fn assert_success(&self) {
        self.assert_no_panic();
        assert_eq!(self.code(), 0, "the job failed\n{self}");
        assert!(self.stderr.is_empty(), "unexpected stderr\n{self}");
    }
}

/// The lines dosrun itself wrote on stderr.
pub fn dosrun_lines(j: &Job) -> Vec<&str> {
    j.stderr
        .lines()
        .filter(|l| l.starts_with("dosrun: "))
        .collect()
}

/// A job still running.
pub struct Running {
    cmd: String,
    child: Child,
    start: Instant,
    limit: Duration,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
    shm_before: Vec<String>,
}

fn reader(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Starts `dosrun -n N --timeout T -- PROGRAM ARGS` with output captured.
pub fn start(n: usize, timeout: Duration, program: &Path, args: &[&str]) -> Running {
    start_with(n, timeout, &[], program, args)
}

/// [`start`] with extra dosrun options before the program.
pub fn start_with(
    n: usize,
    timeout: Duration,
    opts: &[&str],
    program: &Path,
    args: &[&str],
) -> Running {
    let dosrun = dosrun();
    let mut cmd = Command::new(&dosrun);
    cmd.arg("-n")
        .arg(n.to_string())
        .arg("--timeout")
        .arg(format!("{}", timeout.as_secs_f64()))
        .args(opts)
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = format!("{cmd:?}");
    let shm_before = shm_entries();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", dosrun.display()));
    let out = reader(child.stdout.take().expect("piped stdout"));
    let err = reader(child.stderr.take().expect("piped stderr"));
    Running {
        cmd: line,
        child,
        start,
        limit: timeout + HARNESS_SLACK,
        out,
        err,
        shm_before,
    }
}

impl Running {
    /// dosrun's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether dosrun has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until `n` ranks recorded their pids in `d`; fails if the job
    /// ends first.
    pub fn wait_pids(mut self, d: &TempDir, n: usize) -> (Running, Vec<i32>) {
        loop {
            let p = d.pids();
            if p.len() >= n {
                return (self, p);
            }
            if self.exited() {
                let j = self.finish();
                panic!("the job ended before {n} ranks recorded their pids\n{j}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for dosrun to end; kills it and fails the test if it runs well
    /// past its own `--timeout`.
    pub fn finish(mut self) -> Job {
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait for dosrun") {
                break st;
            }
            if self.start.elapsed() > self.limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "dosrun did not end within {:?} despite its --timeout: {}",
                    self.limit, self.cmd
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.start.elapsed();
        let pid = self.pid();
        // The pipes close when dosrun exits (ranks write to dosrun, not to us).
        let join = |h: JoinHandle<String>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(h.join().unwrap_or_default());
            });
            rx.recv_timeout(HARNESS_SLACK)
                .unwrap_or_else(|_| "<output pipe still open after dosrun exited>".into())
        };
        Job {
            cmd: self.cmd,
            pid,
            status,
            stdout: join(self.out),
            stderr: join(self.err),
            elapsed,
            shm_before: self.shm_before,
        }
    }
}

/// Runs `dosrun -n N --timeout 60 -- PROGRAM ARGS` to its end.
pub fn run(n: usize, program: &Path, args: &[&str]) -> Job {
    start(n, JOB_TIMEOUT, program, args).finish()
}

/// [`run`] with extra dosrun options before the program.
#[allow(dead_code)]
pub fn run_with(n: usize, opts: &[&str], program: &Path, args: &[&str]) -> Job {
    start_with(n, JOB_TIMEOUT, opts, program, args).finish()
}

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "dos-launch-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn str(&self) -> &str {
        self.0.to_str().expect("temporary directory path is UTF-8")
    }

    /// The pids ranks wrote as `pid.RANK` files, in rank order of the files found.
    pub fn pids(&self) -> Vec<i32> {
        let mut v: Vec<(usize, i32)> = std::fs::read_dir(&self.0)
            .expect("read the temporary directory")
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let rank = name.strip_prefix("pid.")?.parse().ok()?;
                let pid = std::fs::read_to_string(e.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((rank, pid))
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pid rank `rank` recorded in `d`.
pub fn read_pid(d: &TempDir, rank: usize) -> i32 {
    let p = d.path().join(format!("pid.{rank}"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Whether process `pid` is gone (or a zombie: dead, not yet reaped).
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Asserts every pid dies within a generous bound (dosrun has already
/// returned, so they should be dead already or about to be reaped).
pub fn assert_all_dead(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for &p in pids {
        while !dead(p) {
            assert!(
                Instant::now() < deadline,
                "rank process {p} survived the job"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether process `pid` maps the shared segment or holds a descriptor of it.
pub fn maps_segment(pid: i32) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    if maps.contains(SEGMENT_NAME) {
        return true;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|t| t.to_string_lossy().contains(SEGMENT_NAME))
}

/// The `/dev/shm` entries whose name starts with `dos`.
pub fn shm_entries() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("dos"))
        .collect();
    v.sort();
    v
}

/// Asserts no process of the job (its ranks `pids` and dosrun `dosrun`)
/// still maps or holds the shared segment, and that the job left no `dos*`
/// entry in `/dev/shm`.
pub fn assert_no_segment_of(job: &Job, pids: &[i32]) {
    for &p in pids.iter().chain([&job.pid]) {
        assert!(
            !maps_segment(p),
            "process {p} still holds the shared segment after the job\n{job}"
        );
    }
    let left: Vec<String> = shm_entries()
        .into_iter()
        .filter(|e| !job.shm_before.contains(e))
        .collect();
    assert!(left.is_empty(), "the job left {left:?} in /dev/shm\n{job}");
}
