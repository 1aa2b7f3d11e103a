//! Soft-RoCE jobs under the faults a real cluster has: a rank stopped for a
//! while, many ranks sending to one on an oversubscribed node, packet loss
//! while ranks leave.
//!
//! The jobs run with `--transports roce`: on one host `shm,roce` would carry
//! everything through shared memory.
//!
//! Needs the binaries: `cargo build --workspace --bins --examples`. The lossy
//! tests run each job in a private network namespace (`unshare -n`) whose
//! loopback drops a share of the UDP datagrams (nftables `numgen random`); they
//! need root, `unshare` and `nft`, and say so and pass without them.
//!
//! The heavier versions are ignored; run them with
//! `cargo test -p dos --test roce -- --ignored`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{example, run_with, start_with, Job};

/// The ranks of a single-host job: dosrun's children.
fn rank_pids(dosrun: i32) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{dosrun}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                v.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    v.sort();
    v
}

fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: plain system call on a pid of our own job.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// A rank stopped (SIGSTOP) for `pause` in the middle of a job over the
/// soft-RoCE whose ranks always have messages in flight (`fanin`: bursts to
/// rank 0, a barrier per round), then continued: the job must pass. With the
/// old retry policy (8 tries 20 ms apart) a 200 ms pause killed the job ("peer
/// rank N failed").
fn stopped_rank_survives(pause: Duration) {
    let n = 3;
    let job = start_with(
        n,
        Duration::from_secs(120),
        &["--transports", "roce"],
        &example("fanin"),
        &["600", "16", "4096"],
    );
    let t0 = Instant::now();
    let ranks = loop {
        let r = rank_pids(job.pid());
        if r.len() == n {
            break r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the ranks did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Let the job get going, then stop one rank for a while.
    std::thread::sleep(Duration::from_millis(300));
    let victim = ranks[1];
    assert!(signal(victim, libc::SIGSTOP), "SIGSTOP {victim}");
    std::thread::sleep(pause);
    // It was stopped in the middle of the job: it is still there.
    assert!(
        signal(victim, libc::SIGCONT),
        "SIGCONT {victim}: the job ended early"
    );
    let j = job.finish();
    j.assert_success();
    assert!(
        j.stdout
            .contains("fanin: OK 3 ranks, 600 rounds of 16 messages of 4096 bytes"),
        "{j}"
    );
    assert!(j.elapsed >= pause, "{j}");
}

#[test]
fn a_rank_stopped_for_a_second_does_not_kill_a_roce_job() {
    stopped_rank_survives(Duration::from_secs(1));
}

#[test]
#[ignore = "slow: a 5 s pause"]
fn a_rank_stopped_for_five_seconds_does_not_kill_a_roce_job() {
    stopped_rank_survives(Duration::from_secs(5));
}

/// `n` ranks over the soft-RoCE (on this host's 2 or so cores), every rank
/// sending bursts to rank 0 at once: the receiver's socket overflows now and
/// then, and the job must still pass (it failed with "peer rank 0 failed"
/// and thousands of UDP receive-buffer errors).
fn all_to_one(n: usize, rounds: &str) {
    let j = run_with(
        n,
        &["--transports", "roce"],
        &example("fanin"),
        &[rounds, "16", "32768"],
    );
    j.assert_success();
    let want = format!("fanin: OK {n} ranks, {rounds} rounds of 16 messages of 32768 bytes");
    assert!(j.stdout.contains(&want), "{j}");
}

#[test]
fn sixteen_ranks_send_to_one_over_roce() {
    all_to_one(16, "10");
}

#[test]
#[ignore = "heavy: 32 ranks"]
fn thirty_two_ranks_send_to_one_over_roce() {
    all_to_one(32, "20");
}

/// Whether this process may make a network namespace with lossy loopback.
fn can_make_lossy_namespaces() -> bool {
    let ok = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "command -v nft >/dev/null && nft list tables >/dev/null",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: needs root, unshare and nft for a lossy private loopback");
    }
    ok
}

/// Runs `dosrun -n N --transports roce --timeout T -- PROGRAM ARGS` in a new
/// network namespace whose loopback drops `loss_pct`% of UDP datagrams.
fn run_lossy(n: usize, loss_pct: u32, timeout: Duration, program: &str, args: &[&str]) -> Job {
    assert!(timeout >= Duration::from_secs(1));
    let setup = "set -e; ip link set lo up; \
        nft add table inet dos_loss; \
        nft add chain inet dos_loss out '{ type filter hook output priority 0 ; }'; \
        nft add rule inet dos_loss out meta l4proto udp numgen random mod 100 '<' \"$DOS_TEST_LOSS\" drop; \
        exec \"$@\"";
    let dosrun = common::dosrun();
    let prog = example(program);
    let mut cmd = vec![
        "-n".to_string(),
        "sh".into(),
        "-c".into(),
        setup.into(),
        "sh".into(),
        dosrun.display().to_string(),
        "-n".into(),
        n.to_string(),
        "--transports".into(),
        "roce".into(),
        "--timeout".into(),
        timeout.as_secs_f64().to_string(),
        "--".into(),
        prog.display().to_string(),
    ];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let mut c = Command::new("unshare");
    c.args(&cmd).env("DOS_TEST_LOSS", loss_pct.to_string());
    let line = format!("{c:?}");
    let start = Instant::now();
    // dosrun's --timeout bounds the wait.
    let out = c.output().expect("run unshare");
    Job {
        cmd: line,
        pid: 0,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
        shm_before: Vec::new(),
    }
}

/// Short jobs whose last messages are lost now and then: every rank must
/// leave (a rank that left without resending its lost last message left its
/// peer waiting in the final barrier until --timeout, 5 jobs in 20).
fn short_lossy_jobs(jobs: usize, n: usize, loss: u32) {
    if !can_make_lossy_namespaces() {
        return;
    }
    let timeout = Duration::from_secs(15);
    let mut hung = Vec::new();
    for k in 0..jobs {
        let j = run_lossy(n, loss, timeout, "ring", &["30"]);
        if j.code() == 124 {
            hung.push(k);
            continue;
        }
        j.assert_success();
        assert!(j.stdout.contains("ring: token"), "{j}");
        // Leaving waits for the last acknowledgements, not for a timeout.
        assert!(
            j.elapsed < Duration::from_secs(10),
            "job {k} took {:?}\n{j}",
            j.elapsed
        );
    }
    assert!(
        hung.is_empty(),
        "jobs {hung:?} of {jobs} hung until --timeout"
    );
}

#[test]
fn twenty_short_roce_jobs_under_five_percent_loss_all_end() {
    short_lossy_jobs(20, 3, 5);
}

#[test]
#[ignore = "heavy: 200 jobs"]
fn two_hundred_short_roce_jobs_under_loss_all_end() {
    short_lossy_jobs(200, 4, 10);
}
