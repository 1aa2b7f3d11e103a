//! Jobs of ordinary programs under the real dosrun: exit statuses, stopping,
//! cleanup, output and input relay, environment, signals.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{assert_all_dead, await_pids, record_pid, run, run_with, start, wait_child, TempDir};

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn all_ranks_succeed() {
    let r = run(&["-n", "4", "true"]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stderr.is_empty(), "{r:?}");
}

#[test]
fn a_failing_rank_sets_the_status_and_stops_the_others() {
    let d = TempDir::new("fail");
    let script = format!(
        "{}; if [ $DOS_RANK = 1 ]; then {}; exit 3; fi; exec sleep 100",
        record_pid(&d),
        await_pids(&d, 3)
    );
    let r = run(&["-n", "3", "sh", "-c", &script]);
    r.assert_no_panic();
    assert_eq!(r.code(), 3, "{r:?}");
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(lines[0].starts_with("dosrun: rank 1 (pid "), "{}", lines[0]);
    assert!(
        lines[0].contains("exited with status 3; stopping the job"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(" on host "), "{}", lines[0]);
    assert!(r.elapsed < Duration::from_secs(30));
    let pids = d.pids();
    assert_eq!(pids.len(), 3);
    assert!(lines[0].contains(&format!(
        "(pid {})",
        std::fs::read_to_string(d.path().join("pid.1"))
            .unwrap()
            .trim()
    )));
    assert_all_dead(&pids);
}

#[test]
fn a_rank_killed_by_a_signal_gives_128_plus_the_signal() {
    let d = TempDir::new("sigkill");
    let script = format!(
        "{}; if [ $DOS_RANK = 2 ]; then {}; kill -9 $$; fi; exec sleep 100",
        record_pid(&d),
        await_pids(&d, 3)
    );
    let r = run(&["-n", "3", "sh", "-c", &script]);
    assert_eq!(r.code(), 137, "{r:?}");
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(lines[0].starts_with("dosrun: rank 2 "), "{}", lines[0]);
    assert!(
        lines[0].contains("was killed by signal 9 (SIGKILL)"),
        "{}",
        lines[0]
    );
    assert_all_dead(&d.pids());
}

#[test]
fn timeout_ends_the_job_with_124() {
    let d = TempDir::new("timeout");
    let script = format!("{}; exec sleep 100", record_pid(&d));
    let r = run(&["-n", "2", "--timeout", "0.3", "sh", "-c", &script]);
    assert_eq!(r.code(), 124, "{r:?}");
    assert!(r.elapsed >= Duration::from_millis(300));
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(lines[0].contains("--timeout"), "{}", lines[0]);
    assert_all_dead(&d.pids());
}

#[test]
fn ranks_that_ignore_sigterm_get_sigkill_after_the_grace() {
    let d = TempDir::new("grace");
    // An ignored signal stays ignored across exec: sleep ignores SIGTERM.
    // Rank 0 fails once every other rank ignores SIGTERM.
    let script = format!(
        "if [ $DOS_RANK = 0 ]; then {}; exit 1; fi; trap '' TERM; {}; exec sleep 100",
        await_pids(&d, 2),
        record_pid(&d)
    );
    let r = run(&["-n", "3", "--grace", "300", "sh", "-c", &script]);
    assert_eq!(r.code(), 1, "{r:?}");
    assert!(r.elapsed >= Duration::from_millis(300), "{:?}", r.elapsed);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert_all_dead(&d.pids());
}

#[test]
fn children_of_ranks_are_stopped_too() {
    let d = TempDir::new("grandchildren");
    // Each rank starts a background child, records its pid, and waits.
    let script = format!(
        "sleep 100 & echo $! > {d}/tmp.$DOS_RANK && mv {d}/tmp.$DOS_RANK {d}/pid.$DOS_RANK; \
         if [ $DOS_RANK = 0 ]; then {}; exit 1; fi; wait",
        await_pids(&d, 2),
        d = d.str()
    );
    let r = run(&["-n", "2", "sh", "-c", &script]);
    assert_eq!(r.code(), 1, "{r:?}");
    assert_all_dead(&d.pids());
}

#[test]
fn killing_dosrun_kills_the_ranks() {
    let d = TempDir::new("kill9");
    let script = format!("{}; exec sleep 100", record_pid(&d));
    let mut child = start(&["-n", "3", "sh", "-c", &script]);
    let pids = d.wait_pids(3);
    child.kill().unwrap(); // SIGKILL
    wait_child(&mut child, common::LIMIT);
    assert_all_dead(&pids);
}

#[test]
fn sigterm_to_dosrun_is_forwarded() {
    let d = TempDir::new("sigterm");
    let script = format!(
        "trap 'echo got-term-$DOS_RANK; exit 0' TERM; {}; sleep 100 & wait",
        record_pid(&d)
    );
    let mut child = start(&["-n", "3", "sh", "-c", &script]);
    let pids = d.wait_pids(3);
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut child, common::LIMIT);
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(0), "stdout: {out}");
    assert_eq!(
        sorted_lines(&out),
        ["got-term-0", "got-term-1", "got-term-2"]
    );
    assert_all_dead(&pids);
}

#[test]
fn sigint_to_dosrun_ends_ranks_that_do_not_handle_it() {
    let d = TempDir::new("sigint");
    let script = format!("{}; exec sleep 100", record_pid(&d));
    let mut child = start(&["-n", "2", "sh", "-c", &script]);
    let pids = d.wait_pids(2);
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_child(&mut child, common::LIMIT);
    assert_eq!(status.code(), Some(130));
    assert_all_dead(&pids);
}

#[test]
fn output_is_forwarded_line_by_line() {
    let r = run(&["-n", "1", "printf", "a\\nb"]);
    assert_eq!(r.code(), 0);
    assert_eq!(r.stdout, "a\nb");
    let r = run(&[
        "-n",
        "2",
        "sh",
        "-c",
        "echo out$DOS_RANK; echo err$DOS_RANK >&2",
    ]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(sorted_lines(&r.stdout), ["out0", "out1"]);
    assert_eq!(sorted_lines(&r.stderr), ["err0", "err1"]);
}

#[test]
fn tag_output_prefixes_like_open_mpi() {
    let r = run(&[
        "-n",
        "2",
        "--tag-output",
        "sh",
        "-c",
        "echo out$DOS_RANK; echo err$DOS_RANK >&2; printf tail$DOS_RANK",
    ]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(
        sorted_lines(&r.stdout),
        [
            "[1,0]<stdout>:out0",
            "[1,0]<stdout>:tail0",
            "[1,1]<stdout>:out1",
            "[1,1]<stdout>:tail1"
        ]
    );
    assert_eq!(
        sorted_lines(&r.stderr),
        ["[1,0]<stderr>:err0", "[1,1]<stderr>:err1"]
    );
}

#[test]
fn lots_of_output_arrives_whole() {
    let n = 20000;
    let script = format!("seq 1 {n} | sed \"s/^/rank$DOS_RANK-line-/\"");
    let r = run(&["-n", "3", "--tag-output", "sh", "-c", &script]);
    assert_eq!(r.code(), 0);
    let mut count = [0usize; 3];
    for line in r.stdout.lines() {
        let rank: usize = line[3..4].parse().unwrap();
        let want = format!("[1,{rank}]<stdout>:rank{rank}-line-{}", count[rank] + 1);
        assert_eq!(line, want);
        count[rank] += 1;
    }
    assert_eq!(count, [n; 3]);
}

#[test]
fn stdin_goes_to_rank_0_only() {
    let r = run_with(
        common::dosrun().args(["-n", "3", "sh", "-c", "read x; echo \"$DOS_RANK:[$x]\""]),
        b"hello\n",
        common::LIMIT,
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(sorted_lines(&r.stdout), ["0:[hello]", "1:[]", "2:[]"]);
    // A larger input, through the relay's back-pressure.
    let input = vec![b'z'; 300_000];
    let r = run_with(
        common::dosrun().args(["-n", "2", "sh", "-c", "wc -c"]),
        &input,
        common::LIMIT,
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(sorted_lines(&r.stdout), ["0", "300000"]);
}

#[test]
fn exports_and_wiring_variables() {
    let r = run_with(
        common::dosrun().env("DOSRUN_TEST_FOO", "bar").args([
            "-n",
            "3",
            "-x",
            "DOSRUN_TEST_FOO",
            "-x",
            "DOSRUN_TEST_BAZ=qux quux",
            "sh",
            "-c",
            "echo $DOS_RANK $DOS_SIZE $DOS_LOCAL_RANK $DOS_LOCAL_SIZE $DOS_NODE_ID $DOSRUN_TEST_FOO $DOSRUN_TEST_BAZ",
        ]),
        b"",
        common::LIMIT,
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(
        sorted_lines(&r.stdout),
        [
            "0 3 0 3 0 bar qux quux",
            "1 3 1 3 0 bar qux quux",
            "2 3 2 3 0 bar qux quux"
        ]
    );
    let r = run(&[
        "-n",
        "2",
        "sh",
        "-c",
        "echo $DOS_JOBID $DOS_PMI_ADDR $DOS_SHM_FD $DOS_NNODES ${#DOS_JOB_SECRET} ${DOS_NODE_ADDR:-none}",
    ]);
    let lines = sorted_lines(&r.stdout);
    assert_eq!(lines[0], lines[1], "one job id, address and fd for all");
    let f: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(f[0].len(), 16);
    assert!(f[0].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(f[1], format!("@dos-{}-0-pmi", f[0]));
    assert!(f[2].parse::<i32>().unwrap() > 2);
    // One node; a 256-bit secret; no network address for a single node.
    assert_eq!(&f[3..], ["1", "64", "none"]);
}

#[test]
fn the_shared_segment_is_inherited() {
    let r = run(&["-n", "2", "sh", "-c", "readlink /proc/self/fd/$DOS_SHM_FD"]);
    assert_eq!(r.code(), 0, "{r:?}");
    for l in r.stdout.lines() {
        assert!(l.starts_with("/memfd:dos-shm"), "{l}");
    }
}

#[test]
fn exec_failure_in_the_child_is_reported() {
    let d = TempDir::new("execfail");
    // Passes the pre-start check (an executable file) but exec fails:
    // its interpreter does not exist.
    let script = d.path().join("script");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = run(&["-n", "2", script.to_str().unwrap()]);
    r.assert_no_panic();
    assert_eq!(r.code(), 127, "{r:?}");
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(lines[0].contains("rank 0"), "{}", lines[0]);
    assert!(lines[0].contains("cannot start"), "{}", lines[0]);
}

/// A program file without `#!` runs under `/bin/sh`, as `execvp` runs it;
/// a file that is neither a binary the kernel takes nor a script of the
/// shell still fails as the shell says (here 127: a command not found).
#[test]
fn a_script_without_an_interpreter_line_runs_under_the_shell() {
    let d = TempDir::new("noshebang");
    let script = d.path().join("script");
    std::fs::write(&script, "echo plain $DOS_RANK \"$1\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = run(&["-n", "2", script.to_str().unwrap(), "arg one"]);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(
        sorted_lines(&r.stdout),
        ["plain 0 arg one", "plain 1 arg one"]
    );
}

/// Every rank gets its own `DOS_RANK`, `DOS_LOCAL_RANK`, `DOS_LOCAL_SIZE`
/// and `DOS_NODE_ID`, also when dosrun's own environment has them (a
/// dosrun started by a rank), and the variables dosrun inherited.
#[test]
fn per_rank_variables_replace_inherited_ones() {
    let r = run_with(
        common::dosrun()
            .env("DOS_RANK", "77")
            .env("DOS_LOCAL_SIZE", "99")
            .env("START64_INHERITED", "yes")
            .args([
                "-n",
                "3",
                "sh",
                "-c",
                "echo $DOS_RANK $DOS_LOCAL_RANK $DOS_LOCAL_SIZE $DOS_NODE_ID $START64_INHERITED; \
                 env | grep -c '^DOS_RANK='",
            ]),
        b"",
        Duration::from_secs(60),
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(
        sorted_lines(&r.stdout),
        ["0 0 3 0 yes", "1", "1", "1", "1 1 3 0 yes", "2 2 3 0 yes"]
    );
}

#[test]
fn a_rank_exiting_early_with_success_does_not_stop_the_others() {
    let r = run(&[
        "-n",
        "3",
        "sh",
        "-c",
        "[ $DOS_RANK = 0 ] || sleep 0.2; echo done$DOS_RANK",
    ]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(sorted_lines(&r.stdout), ["done0", "done1", "done2"]);
}
