//! Helpers shared by the launcher's integration tests: run the real `dosrun`
//! with a time limit, private temporary directories, and process checks.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous bound for any single job in these tests.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A `Command` for the dosrun binary under test.
pub fn dosrun() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dosrun"))
}

/// Path of the wire-up probe.
pub fn probe() -> &'static str {
    env!("CARGO_BIN_EXE_dos-pmi-probe")
}

/// What a finished dosrun left.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// The lines dosrun itself wrote on stderr.
    pub fn dosrun_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("dosrun: "))
            .collect()
    }

    /// Asserts the run printed no Rust panic.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "panic in stderr: {}",
            self.stderr
        );
    }
}

/// Runs `cmd` to completion with `input` on its stdin, killing it and
/// failing the test after `limit`.
pub fn run_with(cmd: &mut Command, input: &[u8], limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dosrun");
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(o) => o.expect("wait for dosrun"),
        Err(_) => {
            // SAFETY: signalling a child we started and have not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("dosrun did not finish within {limit:?}");
        }
    };
    let elapsed = start.elapsed();
    let _ = writer.join();
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}

/// Runs dosrun with `args` and empty stdin.
pub fn run(args: &[&str]) -> Run {
    run_with(dosrun().args(args), b"", LIMIT)
}

/// Starts dosrun with `args` in the background (stdout/stderr piped).
pub fn start(args: &[&str]) -> Child {
    dosrun()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dosrun")
}

/// Waits for `child` with a deadline, killing it and failing after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "dosrun-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// The pids ranks wrote as `pid.*` files.
    pub fn pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = std::fs::read_dir(&self.0)
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                if !name.starts_with("pid.") {
                    return None;
                }
                std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()
            })
            .collect();
        v.sort();
        v
    }

    /// Waits (bounded) until `n` ranks wrote their pid files.
    pub fn wait_pids(&self, n: usize) -> Vec<i32> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let p = self.pids();
            if p.len() >= n {
                return p;
            }
            assert!(Instant::now() < deadline, "ranks did not start in time");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A shell snippet that records the rank's pid in `dir` atomically.
pub fn record_pid(dir: &TempDir) -> String {
    format!(
        "echo $$ > {d}/tmp.$DOS_RANK && mv {d}/tmp.$DOS_RANK {d}/pid.$DOS_RANK",
        d = dir.str()
    )
}

/// A shell snippet that waits until `n` ranks recorded their pids.
pub fn await_pids(dir: &TempDir, n: usize) -> String {
    format!(
        "while [ $(ls {d} | grep -c '^pid\\.') -lt {n} ]; do sleep 0.01; done",
        d = dir.str()
    )
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet: dead).
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Asserts every pid dies within a generous bound.
pub fn assert_all_dead(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for &p in pids {
        while !dead(p) {
            assert!(Instant::now() < deadline, "process {p} survived the job");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
