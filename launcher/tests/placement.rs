//! Placement (`-H`, `--hostfile`, `--map-by`, `-N`, `--oversubscribe`) and
//! binding (`--bind-to`, `--report-bindings`, `--topology`) through the real
//! dosrun. Every host used here is this machine, or an address of the test
//! range 198.18.0.0/24 reached through a launch agent that sends nothing.

mod common;

use std::process::Command;

use common::{run, run_with, TempDir, LIMIT};

/// One line per rank: `RANK LOCAL_RANK LOCAL_SIZE NODE_ID`, sorted.
const SHOW_ENV: &str = "echo $DOS_RANK $DOS_LOCAL_RANK $DOS_LOCAL_SIZE $DOS_NODE_ID";

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn expect_ranks(args: &[&str], n: usize) {
    let mut a = args.to_vec();
    a.extend(["sh", "-c", SHOW_ENV]);
    let r = run(&a);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{args:?}: {r:?}");
    let want: Vec<String> = (0..n).map(|i| format!("{i} {i} {n} 0")).collect();
    assert_eq!(sorted_lines(&r.stdout), want, "{args:?}");
    assert!(r.stderr.is_empty(), "{args:?}: {r:?}");
}

fn expect_error(args: &[&str], needle: &str) {
    let r = run(args);
    r.assert_no_panic();
    assert_eq!(r.code(), 2, "{args:?}: {r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {:?}", r.stderr);
    assert!(lines[0].starts_with("dosrun: "), "{:?}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} lacks {needle:?}",
        lines[0]
    );
    assert!(r.stdout.is_empty(), "{args:?}: {:?}", r.stdout);
}

fn hostfile(d: &TempDir, text: &str) -> String {
    let p = d.path().join("hosts");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn local_hosts_form_one_node() {
    expect_ranks(&["-H", "localhost:2", "-n", "2"], 2);
    // -n defaults to the slots; every name of this machine is one node.
    expect_ranks(&["-H", "localhost,127.0.0.1"], 2);
    expect_ranks(&["-H", "localhost", "-H", "127.0.0.1:2"], 3);
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if !name.is_empty() {
        expect_ranks(&["-H", &format!("{name}:2,localhost")], 3);
    }
    expect_ranks(&["-H", "localhost:4", "-N", "2"], 2);
    expect_ranks(&["-H", "localhost:3", "--map-by", "node", "-n", "3"], 3);
    // Without hosts: as many ranks as asked, -N alone gives the count.
    expect_ranks(&["-N", "3"], 3);
}

#[test]
fn hostfiles() {
    let d = TempDir::new("hostfile");
    let f = hostfile(
        &d,
        "# this machine\nlocalhost slots=2\n\n127.0.0.1 slots=1 # again\n",
    );
    expect_ranks(&["--hostfile", &f], 3);
    expect_ranks(&["--machinefile", &f, "-n", "2"], 2);
    let bad = hostfile(&d, "localhost slots=2\nlocalhost slots=zero\n");
    expect_error(
        &["--hostfile", &bad, "true"],
        "line 2: slots \"zero\" is not a number",
    );
    let zero = hostfile(&d, "localhost slots=0\n");
    expect_error(
        &["--hostfile", &zero, "true"],
        "line 1: slots must be at least 1",
    );
    let missing = format!("{}/none", d.str());
    expect_error(&["--hostfile", &missing, "true"], "cannot read hostfile");
    let empty = hostfile(&d, "# nothing\n");
    expect_error(&["--hostfile", &empty, "true"], "lists no host");
}

#[test]
fn too_many_ranks_need_oversubscribe() {
    expect_error(
        &["-H", "localhost:2", "-n", "3", "true"],
        "3 ranks but only 2 slot(s) on the hosts (give more slots, or --oversubscribe)",
    );
    expect_ranks(&["-H", "localhost:2", "-n", "3", "--oversubscribe"], 3);
    let d = TempDir::new("maxslots");
    let f = hostfile(&d, "localhost slots=1 max_slots=2\n");
    expect_error(
        &["--hostfile", &f, "-n", "3", "--oversubscribe", "true"],
        "max_slots allow only 2",
    );
    expect_error(&["-H", "localhost", "-N", "2", "true"], "-N 2: host ");
    expect_error(
        &["-N", "2", "-n", "3", "true"],
        "3 ranks do not fit 2 per host on 1 host(s)",
    );
}

#[test]
fn bad_option_values() {
    expect_error(&["-H", "localhost:0", "true"], "at least 1");
    expect_error(&["-H", "a,,b", "true"], "empty host name");
    expect_error(
        &["--map-by", "core", "-n", "1", "true"],
        "--map-by: unknown value",
    );
    expect_error(
        &["--bind-to", "socket", "-n", "1", "true"],
        "--bind-to: unknown value",
    );
    expect_error(
        &["-H", "localhost", "--hostfile", "/dev/null", "true"],
        "not both",
    );
}

#[test]
fn remote_hosts_go_through_the_launch_agent() {
    // `false` as the launch agent: nothing is sent to the (test range)
    // hosts; the agent never connects and the job stops, naming the host.
    let lost = |args: &[&str]| {
        let mut a = vec!["--launch-agent", "false"];
        a.extend_from_slice(args);
        let r = run(&a);
        r.assert_no_panic();
        assert_eq!(r.code(), 1, "{args:?}: {r:?}");
        let lines = r.dosrun_lines();
        assert_eq!(lines.len(), 1, "{args:?}: {r:?}");
        assert!(
            lines[0].starts_with("dosrun: host 198.18.0.")
                && lines[0].contains("the launch agent (false) exited with status 1"),
            "{r:?}"
        );
        assert!(r.elapsed < std::time::Duration::from_secs(10), "{r:?}");
    };
    lost(&["-H", "198.18.0.2", "true"]);
    lost(&["-H", "localhost:1,198.18.0.2:1", "-n", "2", "sleep", "30"]);
    // A plan that leaves the remote host out runs.
    expect_ranks(&["-H", "localhost:1,198.18.0.2:1", "-n", "1"], 1);
    let d = TempDir::new("remote");
    let f = hostfile(&d, "198.18.0.2 slots=2\n198.18.0.3 slots=2\n");
    lost(&["--hostfile", &f, "true"]);
}

#[test]
fn unresolvable_hosts_are_usage_errors() {
    // Resolving an unknown name would ask the DNS server: do it only in a
    // network namespace of our own, where no packet can leave.
    let unshare = Command::new("unshare")
        .args(["--net", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !unshare {
        eprintln!("skipped: cannot create a network namespace (unshare --net; needs root)");
        return;
    }
    let r = run_with(
        Command::new("unshare").args([
            "--net",
            env!("CARGO_BIN_EXE_dosrun"),
            "-H",
            "no-such-host.invalid",
            "true",
        ]),
        b"",
        LIMIT,
    );
    r.assert_no_panic();
    assert_eq!(r.code(), 2, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("dosrun: host \"no-such-host.invalid\" does not resolve"),
        "{r:?}"
    );
}

/// The CPUs in `Cpus_allowed_list` of a status file's text.
fn allowed(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    let mut out = Vec::new();
    for part in line.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// Each rank's allowed CPUs, indexed by rank.
fn rank_cpus(args: &[&str], n: usize) -> (Vec<Vec<usize>>, String) {
    let mut a = args.to_vec();
    let script = "echo $DOS_RANK $(grep Cpus_allowed_list /proc/self/status | tr -d '\\t')";
    a.extend(["sh", "-c", script]);
    let r = run(&a);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{args:?}: {r:?}");
    let mut v = vec![Vec::new(); n];
    for l in r.stdout.lines() {
        let (rank, rest) = l.split_once(' ').unwrap();
        v[rank.parse::<usize>().unwrap()] = allowed(rest);
    }
    (v, r.stderr)
}

#[test]
fn binding_to_cores() {
    let mine = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let (cpus, _) = rank_cpus(&["-n", "1", "--bind-to", "none"], 1);
    assert_eq!(cpus[0], mine);
    let (cpus, _) = rank_cpus(&["-n", "1", "--bind-to", "core"], 1);
    assert!(!cpus[0].is_empty() && cpus[0].iter().all(|c| mine.contains(c)));
    let (cpus, _) = rank_cpus(&["-n", "1", "--bind-to", "numa"], 1);
    assert!(!cpus[0].is_empty() && cpus[0].iter().all(|c| mine.contains(c)));
    if mine.len() < 2 {
        eprintln!("skipped the two-rank checks: dosrun may use one CPU only");
        return;
    }
    let topo = run(&["--topology"]);
    let cores: usize = topo
        .stdout
        .lines()
        .next()
        .and_then(|l| l.split(", ").find(|w| w.ends_with(" cores")))
        .and_then(|w| w.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if cores < 2 || topo.stdout.contains(" only") {
        eprintln!("skipped the two-rank checks: fewer than 2 usable cores");
        return;
    }
    // By default, two ranks on two or more cores get one core each.
    let (cpus, stderr) = rank_cpus(&["-n", "2", "--report-bindings"], 2);
    assert!(cpus[0].iter().all(|c| !cpus[1].contains(c)), "{cpus:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with('['), "{l}");
        assert!(
            l.contains(&format!("] MCW rank {i} bound to ")) && l.contains(" core "),
            "{l}"
        );
    }
    // More ranks than cores: unbound by default, an error when asked for.
    let n = cores + 1;
    let ns = n.to_string();
    let (cpus, stderr) = rank_cpus(&["-n", &ns, "--report-bindings"], n);
    assert!(cpus.iter().all(|c| *c == mine), "{cpus:?}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("is not bound"))
            .count(),
        n,
        "{stderr}"
    );
    expect_error(
        &["-n", &ns, "--bind-to", "core", "true"],
        &format!("--bind-to core: {n} ranks on "),
    );
}

#[test]
fn topology_lists_the_machine() {
    let r = run(&["--topology"]);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{r:?}");
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(first.starts_with("Host "), "{}", r.stdout);
    for needle in [" package", " NUMA node", " core", " PU"] {
        assert!(first.contains(needle), "{first}");
    }
    assert!(r.stdout.contains("Package L#0 P#"), "{}", r.stdout);
    assert!(r.stdout.contains("Core L#0 P#"), "{}", r.stdout);
    assert!(r.stdout.contains("NUMA node L#0 P#"), "{}", r.stdout);
    assert!(r.stderr.is_empty());
}

/// IPv6 addresses in brackets: `[::1]` is this machine.
#[test]
fn bracketed_ipv6_hosts() {
    expect_ranks(&["-H", "[::1]:2"], 2);
    expect_ranks(&["-H", "[::1],localhost"], 2);
    let d = TempDir::new("v6");
    expect_ranks(&["--hostfile", &hostfile(&d, "[::1] slots=2\n::1\n")], 3);
    expect_error(&["-H", "::1", "true"], "write an IPv6 address in brackets");
    expect_error(&["-H", "[::1", "true"], "without ']'");
}

/// Hostfiles that are no regular file, or too large, are refused at once
/// with one line (a FIFO is not waited on, /dev/zero is not read).
#[test]
fn hostfiles_that_are_not_small_regular_files() {
    expect_error(
        &["--hostfile", "/dev/zero", "true"],
        "hostfile /dev/zero: is a character device, not a regular file",
    );
    let d = TempDir::new("hostfile-kinds");
    let fifo = d.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    expect_error(
        &["--hostfile", fifo.to_str().unwrap(), "true"],
        "is a FIFO, not a regular file",
    );
    let big = d.path().join("big");
    std::fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
    expect_error(
        &["--hostfile", big.to_str().unwrap(), "true"],
        "larger than",
    );
}
