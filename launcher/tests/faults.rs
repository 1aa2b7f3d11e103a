//! Faults on one host, as a user and the kernel cause them: which rank
//! dosrun blames when one dies and its peers fail after it, a user's signal
//! (also when dosrun starts with SIGINT ignored), a stopped rank under
//! `--stall-timeout`, and a wire-up service that stops answering.
//!
//! The kill -9 trials during a collective loop need the examples
//! (`cargo build --examples -p dos`); without them they are skipped with a
//! message. The heavy version runs 300 trials:
//!
//! ```text
//! cargo test -p dos-launcher --test faults -- --ignored blame_soak
//! ```

mod common;

use std::io::Read;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_all_dead, await_pids, record_pid, run_with, wait_child, TempDir};

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A rank that exits with a non-zero status is blamed only if no rank is
/// killed by a signal within the blame window: here rank 1 exits 1 and
/// rank 3 is killed by SIGKILL 50 ms later (as when a peer's transport
/// error beats the kernel's word of the death to dosrun).
#[test]
fn a_signal_death_is_blamed_over_an_earlier_failed_peer() {
    let d = TempDir::new("blame-order");
    let script = format!(
        "{}; {}; if [ $DOS_RANK = 1 ]; then (sleep 0.05; kill -9 $(cat {}/pid.3)) & exit 1; fi; \
         exec sleep 100",
        record_pid(&d),
        await_pids(&d, 4),
        d.str()
    );
    let r = run_with(
        common::dosrun()
            .env("DOS_BLAME_WINDOW_MS", "3000")
            .args(["-n", "4", "sh", "-c", &script]),
        b"",
        common::LIMIT,
    );
    r.assert_no_panic();
    assert_eq!(r.code(), 137, "{r:?}");
    let lines = r.dosrun_lines();
    let pid3 = std::fs::read_to_string(d.path().join("pid.3")).unwrap();
    assert!(
        lines[0].starts_with(&format!("dosrun: rank 3 (pid {}) ", pid3.trim()))
            && lines[0].ends_with("was killed by signal 9 (SIGKILL); stopping the job"),
        "{r:?}"
    );
    assert_eq!(lines.len(), 2, "{r:?}");
    assert!(
        lines[1].starts_with("dosrun: then rank 1 (pid ")
            && lines[1].ends_with("exited with status 1 (a consequence)"),
        "{r:?}"
    );
    assert_all_dead(&d.pids());
}

/// A lone failing rank is still blamed, after the window, and the job is
/// stopped well within a second.
#[test]
fn a_lone_failure_is_blamed_after_the_window() {
    let d = TempDir::new("blame-lone");
    let script = format!(
        "{}; {}; if [ $DOS_RANK = 2 ]; then exit 5; fi; exec sleep 100",
        record_pid(&d),
        await_pids(&d, 3)
    );
    let r = run_with(
        common::dosrun()
            .env("DOS_BLAME_WINDOW_MS", "100")
            .args(["-n", "3", "sh", "-c", &script]),
        b"",
        common::LIMIT,
    );
    assert_eq!(r.code(), 5, "{r:?}");
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(lines[0].contains("exited with status 5"), "{r:?}");
    assert_all_dead(&d.pids());
}

/// The collective test program, when built.
fn collcheck() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/collcheck");
    p.exists().then_some(p)
}

/// `trials` jobs of 4 ranks running collectives; in each, one rank is
/// killed with SIGKILL while they run: dosrun must name that rank and exit
/// with 137, every time.
fn kill_during_collectives(trials: usize) {
    let Some(prog) = collcheck() else {
        eprintln!("skipped: build the check programs first (cargo build -p dos-checks)");
        return;
    };
    let mut wrong = Vec::new();
    for t in 0..trials {
        let d = TempDir::new("blame-coll");
        let script = format!(
            "{}; exec {} --cases 1000000",
            record_pid(&d),
            sh_quote(prog.to_str().unwrap())
        );
        let child = common::dosrun()
            .args(["-n", "4", "--bind-to", "none", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pids = d.wait_pids(4);
        // Let the collectives run (wire-up takes some of this).
        std::thread::sleep(Duration::from_millis(50 + 37 * (t as u64 % 5)));
        let victim = (t * 7 + 3) % 4;
        let vpid = std::fs::read_to_string(d.path().join(format!("pid.{victim}")))
            .unwrap()
            .trim()
            .to_string();
        // SAFETY: kill has no memory effects; the pid is a rank of our job.
        unsafe { libc::kill(vpid.parse().unwrap(), libc::SIGKILL) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let first = err
            .lines()
            .find(|l| l.starts_with("dosrun: "))
            .unwrap_or("")
            .to_string();
        let want = format!("dosrun: rank {victim} (pid {vpid}) ");
        if out.status.code() != Some(137)
            || !first.starts_with(&want)
            || !first.contains("killed by signal 9 (SIGKILL)")
        {
            wrong.push(format!(
                "trial {t}: killed rank {victim}, status {:?}: {err}",
                out.status.code()
            ));
        }
        assert_all_dead(&pids);
    }
    assert!(
        wrong.is_empty(),
        "{} of {trials} trials blamed wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn kill_9_during_collectives_blames_the_killed_rank() {
    kill_during_collectives(20);
}

/// The heavy version (see the module docs for the command).
#[test]
#[ignore]
fn blame_soak() {
    kill_during_collectives(300);
}

/// SIGTERM to dosrun: the job was interrupted; no rank is blamed for dying
/// of the signal dosrun forwarded; the status is 128 + 15.
#[test]
fn a_users_signal_is_an_interruption_not_a_rank_failure() {
    let d = TempDir::new("interrupt");
    let script = format!("{}; exec sleep 100", record_pid(&d));
    let mut child = common::start(&["-n", "3", "sh", "-c", &script]);
    let pids = d.wait_pids(3);
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut child, common::LIMIT);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("dosrun: ")).collect();
    assert_eq!(
        lines,
        ["dosrun: interrupted by signal 15 (SIGTERM), forwarded to the ranks; stopping the job"],
        "{err}"
    );
    assert_all_dead(&pids);
}

/// dosrun started with SIGINT and SIGQUIT ignored (`dosrun ... &` in a
/// script): its ranks start with no signal ignored or blocked.
#[test]
fn ranks_start_with_default_signal_dispositions() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' INT QUIT; exec \"$0\" -n 2 grep -E '^Sig(Blk|Ign):' /proc/self/status")
        .arg(env!("CARGO_BIN_EXE_dosrun"));
    let r = run_with(&mut cmd, b"", common::LIMIT);
    assert_eq!(r.code(), 0, "{r:?}");
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "SigBlk:\t0000000000000000",
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
            "SigIgn:\t0000000000000000"
        ],
        "{r:?}"
    );
}

/// dosrun started with SIGINT ignored: a SIGINT sent to it still ends the
/// job at once (the ranks die of it; the long grace shows that no SIGKILL
/// was needed).
#[test]
fn sigint_ends_the_job_when_dosrun_started_with_it_ignored() {
    let d = TempDir::new("sigint-ign");
    let script = format!("{}; exec sleep 100", record_pid(&d));
    let mut cmd = common::dosrun();
    cmd.args(["-n", "2", "--grace", "30000", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child before exec and only calls
    // signal(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pids = d.wait_pids(2);
    let t = Instant::now();
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_child(&mut child, common::LIMIT);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(status.code(), Some(130));
    assert_all_dead(&pids);
}

/// `nohup dosrun ...`: dosrun started with SIGHUP ignored keeps it ignored
/// (the job survives a hangup), while SIGINT is taken as usual.
#[test]
fn a_hangup_is_ignored_under_nohup() {
    let d = TempDir::new("nohup");
    let script = format!("{}; exec sleep 1", record_pid(&d));
    let mut cmd = common::dosrun();
    cmd.args(["-n", "2", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child before exec and only calls
    // signal(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pids = d.wait_pids(2);
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let status = wait_child(&mut child, common::LIMIT);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_all_dead(&pids);
}

/// `--stall-timeout`: a rank stopped with SIGSTOP for that long stops the
/// job, named, with status 124; a rank stopped and continued in time does
/// not.
#[test]
fn a_stopped_rank_is_named_after_the_stall_timeout() {
    let d = TempDir::new("stall");
    let script = format!("{}; exec sleep 100", record_pid(&d));
    let mut child = common::start(&["-n", "3", "--stall-timeout", "1.5", "sh", "-c", &script]);
    let pids = d.wait_pids(3);
    let pid = |r: usize| -> i32 {
        std::fs::read_to_string(d.path().join(format!("pid.{r}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // Stopped 0.2 s and continued: no stall.
    // SAFETY: kill has no memory effects; the pids are ranks of our job.
    unsafe { libc::kill(pid(0), libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe { libc::kill(pid(0), libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(1700));
    assert!(child.try_wait().unwrap().is_none(), "the job ended early");
    let t = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid(2), libc::SIGSTOP) };
    let status = wait_child(&mut child, common::LIMIT);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(status.code(), Some(124), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("dosrun: ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(&format!("dosrun: rank 2 (pid {}) on host ", pid(2)))
            && lines[0].contains("has been stopped by signal 19 (SIGSTOP) for 1.5 s"),
        "{err}"
    );
    assert_all_dead(&pids);
}

/// A wire-up service that authenticates a rank and then never answers
/// (its dosrun or node agent stopped): the rank's call fails after
/// `DOS_WIREUP_TIMEOUT_MS` with a message that says so, instead of hanging.
#[test]
fn a_silent_wireup_service_fails_the_rank_in_time() {
    silent_service(true);
}

/// The same when the service does not even authenticate the rank.
#[test]
fn a_wireup_service_silent_from_the_start_fails_the_rank_in_time() {
    silent_service(false);
}

fn silent_service(authenticate: bool) {
    let name = format!("dos-test-silent-{}-{authenticate}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    let jobid = 0xabcu64;
    let secret = dos::pmi::Secret::generate().unwrap();
    let hex = secret.to_hex();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let ctx = dos::pmi::auth_context(jobid);
        if authenticate {
            dos_transport::auth::handshake(
                &mut s,
                &secret,
                &ctx,
                dos_transport::auth::Role::Responder,
                dos::pmi::SERVICE_ID,
            )
            .unwrap();
        }
        // Hold the connection, answer nothing, until the rank goes.
        let mut b = [0u8; 256];
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    });
    let mut cmd = Command::new(common::probe());
    cmd.env("DOS_PMI_ADDR", format!("@{name}"))
        .env("DOS_RANK", "0")
        .env("DOS_SIZE", "1")
        .env("DOS_LOCAL_RANK", "0")
        .env("DOS_LOCAL_SIZE", "1")
        .env("DOS_NODE_ID", "0")
        .env("DOS_JOBID", format!("{jobid:x}"))
        .env("DOS_JOB_SECRET", hex)
        // Its stdin, inherited: the probe only checks that it is open.
        .env("DOS_SHM_FD", "0")
        .env("DOS_WIREUP_TIMEOUT_MS", "500");
    let r = run_with(&mut cmd, b"", Duration::from_secs(7));
    assert_eq!(r.code(), 3, "{r:?}");
    assert!(r.elapsed < Duration::from_secs(5), "{r:?}");
    assert!(
        r.stderr.contains("no answer from the wire-up service")
            && r.stderr.contains("within 500 ms"),
        "{r:?}"
    );
    server.join().unwrap();
}
