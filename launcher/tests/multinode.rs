//! Multi-node jobs on the namespace cluster of `ci/cluster.sh` (3 hosts x 2
//! slots), started through real ssh and node agents: placement and
//! environment on the right hosts, output relay, failing and killed remote
//! ranks, a killed agent, a cut link, and strangers on the control port and
//! on a node's wire-up socket. After every failure no process of the job is
//! left on any host.
//!
//! `dosfs_on_three_hosts`: `dosrun --fs` with a server in each node agent,
//! a second job reading the data back, `--fs-stage-out`, and `dosfs up
//! --hostfile` / `cp` / `down` on the cluster's hosts.
//!
//! Also: which rank is blamed when one is killed during collectives (a
//! few trials; the heavy version is `blame_across_hosts_soak`), a stopped
//! remote rank under `--stall-timeout`, and a remote output flood read
//! slowly, with dosrun's memory bounded (back-pressure).
//!
//! Skipped (with the reason printed) only when not root or when `ip netns`
//! is unavailable; CI runs as root, where it must pass. It brings the
//! cluster up (replacing one that is up) and takes it down at the end.
//! The cluster is one per machine: run these tests under
//! `flock /tmp/dos-cluster.lock`, e.g. the heavy blame soak:
//!
//! ```text
//! flock /tmp/dos-cluster.lock cargo test -p dos-launcher --test multinode -- --ignored blame_across_hosts_soak
//! ```

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{probe, run_with, Run, TempDir};
use dos_transport::auth::{self, Role, Secret};

const STATE: &str = "/tmp/dos-cluster";
const HOSTS: usize = 3;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/cluster.sh")
}

fn cluster(args: &[&str]) -> Run {
    run_with(
        Command::new("bash").arg(script()).args(args),
        b"",
        Duration::from_secs(120),
    )
}

/// Takes the cluster down when the test ends, also when it fails.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = cluster(&["loss", "dos-h3", "0"]);
        let r = cluster(&["down"]);
        if r.code() != 0 {
            eprintln!("cluster.sh down failed: {r:?}");
        }
    }
}

/// The tests of this file share one cluster: they take turns.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for the cluster to be free; hold the guard until after `Down` ran.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|e| e.into_inner())
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns` is unavailable: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`ip` cannot run: {e}")),
    }
}

fn launch() -> String {
    format!("ssh -F {STATE}/ssh_config -o BatchMode=yes")
}

/// dosrun on the cluster's hostfile with `extra` options, then `cmd`.
fn cluster_cmd(extra: &[&str], cmd: &[&str]) -> Command {
    let mut c = common::dosrun();
    c.args([
        "--hostfile",
        &format!("{STATE}/hostfile"),
        "--launch-agent",
        &launch(),
    ])
    .args(extra)
    .args(cmd);
    c
}

fn cluster_run(extra: &[&str], cmd: &[&str]) -> Run {
    run_with(&mut cluster_cmd(extra, cmd), b"", common::LIMIT)
}

fn sorted(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The command lines of the processes in host `k`'s namespace, sshd aside.
fn job_processes(k: usize) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "pids", &format!("dos-h{k}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|p| std::fs::read(format!("/proc/{}/cmdline", p.trim())).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| !c.trim().is_empty() && !c.starts_with("sshd"))
        .collect()
}

/// Asserts that within `limit` no rank (`pids`) nor agent is left anywhere.
fn assert_nothing_left(pids: &[i32], limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let left: Vec<String> = (1..=HOSTS).flat_map(job_processes).collect();
        let live: Vec<i32> = pids.iter().copied().filter(|&p| !common::dead(p)).collect();
        if left.is_empty() && live.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "left behind: processes {left:?}, pids {live:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a job of sleeping ranks that record their pids in `d`; returns
/// dosrun and the 6 pids once all ranks run.
fn start_sleepers(d: &TempDir, extra: &[&str]) -> (std::process::Child, Vec<i32>) {
    let body = format!("{} && exec sleep 30", common::record_pid(d));
    let child = cluster_cmd(extra, &["sh", "-c", &body])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = d.wait_pids(2 * HOSTS);
    (child, pids)
}

fn finish(child: std::process::Child) -> (i32, String, Duration) {
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(common::LIMIT) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            // SAFETY: signalling a child we started and have not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("dosrun did not finish");
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// The rank pid recorded by the rank `rank` (files are shared by the hosts).
fn pid_of(d: &TempDir, rank: usize) -> i32 {
    std::fs::read_to_string(d.path().join(format!("pid.{rank}")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The TCP port dosrun `pid` listens on (its control port).
fn control_port(pid: u32) -> u16 {
    let out = Command::new("ss").args(["-Htlnp"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("pid={pid},")))
        .unwrap_or_else(|| panic!("no listening socket of dosrun {pid} in {text}"));
    let local = line.split_whitespace().nth(3).unwrap();
    local.rsplit(':').next().unwrap().parse().unwrap()
}

fn scenario_placement_and_environment() {
    let show = "echo $(hostname) $DOS_RANK $DOS_NODE_ID $DOS_NNODES $DOS_LOCAL_RANK \
                $DOS_LOCAL_SIZE ${DOS_NODE_ADDR:-none} ${#DOS_JOB_SECRET}";
    let r = cluster_run(&[], &["sh", "-c", show]);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{r:?}");
    let want: Vec<String> = (0..2 * HOSTS)
        .map(|rank| {
            let k = rank / 2 + 1;
            format!("dos-h{k} {rank} {} 3 {} 2 198.18.0.{k} 64", k - 1, rank % 2)
        })
        .collect();
    assert_eq!(sorted(&r.stdout), want, "{r:?}");
    assert!(r.stderr.is_empty(), "{r:?}");

    // -N 1 and --map-by node: one rank per host.
    let r = cluster_run(&["-N", "1"], &["hostname"]);
    assert_eq!(sorted(&r.stdout), ["dos-h1", "dos-h2", "dos-h3"], "{r:?}");

    // Start-up time of a 3 x 2 job (best of 3).
    let best = (0..3)
        .map(|_| {
            let r = cluster_run(&[], &["true"]);
            assert_eq!(r.code(), 0, "{r:?}");
            r.elapsed
        })
        .min()
        .unwrap();
    eprintln!("3 hosts x 2 ranks of `true` through ssh: {best:?}");
}

fn scenario_output_relay() {
    let r = cluster_run(
        &["--tag-output"],
        &[
            "sh",
            "-c",
            "printf 'out %s\\nsecond' $DOS_RANK; echo err $(hostname) >&2",
        ],
    );
    assert_eq!(r.code(), 0, "{r:?}");
    let mut want: Vec<String> = Vec::new();
    for rank in 0..2 * HOSTS {
        want.push(format!("[1,{rank}]<stdout>:out {rank}"));
        want.push(format!("[1,{rank}]<stdout>:second"));
    }
    want.sort();
    assert_eq!(sorted(&r.stdout), want, "{r:?}");
    let err = sorted(&r.stderr);
    assert_eq!(err.len(), 2 * HOSTS, "{r:?}");
    assert!(
        err.contains(&"[1,5]<stderr>:err dos-h3".to_string()),
        "{r:?}"
    );
    // Large output arrives whole.
    let r = cluster_run(&[], &["sh", "-c", "seq 1 20000"]);
    assert_eq!(r.code(), 0, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 2 * HOSTS * 20000);
}

fn scenario_failing_remote_rank() {
    let d = TempDir::new("mn-fail");
    let body = format!(
        "{}; if [ $DOS_RANK = 3 ]; then exit 7; fi; exec sleep 30",
        common::record_pid(&d)
    );
    let r = cluster_run(&[], &["sh", "-c", &body]);
    r.assert_no_panic();
    assert_eq!(r.code(), 7, "{r:?}");
    let lines = r.dosrun_lines();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(
        lines[0].starts_with("dosrun: rank 3 (pid ")
            && lines[0].contains("on host 198.18.0.2 exited with status 7"),
        "{r:?}"
    );
    assert_nothing_left(&d.pids(), Duration::from_secs(5));
}

/// An MPICH program (tests/mpich/cpi.c, compiled with mpicc.mpich) across
/// the hosts with `--mpi pmi1`: its PMI-1 wire-up through the bridges and
/// the node agents; a remote rank exiting 3 is blamed as for dos programs.
fn scenario_mpich_across_hosts() {
    let found = Command::new("mpicc.mpich")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("mpich scenario skipped: mpicc.mpich not found (ci/deps.sh installs mpich)");
        return;
    }
    let d = TempDir::new("mn-mpich");
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
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = exe.to_str().unwrap();
    let r = cluster_run(&["--mpi", "pmi1"], &[exe]);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(r.stdout.contains("pi is approximately 3.14159265"), "{r:?}");
    assert!(r.stdout.contains("ranks 6\n"), "{r:?}");
    for k in 1..=HOSTS {
        let on = r
            .stdout
            .lines()
            .filter(|l| l.ends_with(&format!(" of 6 on dos-h{k}")))
            .count();
        assert_eq!(on, 2, "host dos-h{k}: {r:?}");
    }
    let r = cluster_run(&["--mpi", "pmi1"], &[exe, "exit", "4", "3"]);
    r.assert_no_panic();
    assert_eq!(r.code(), 3, "{r:?}");
    assert!(
        r.dosrun_lines()
            .iter()
            .any(|l| l.starts_with("dosrun: rank 4 (pid ")
                && l.contains("on host 198.18.0.3 exited with status 3; stopping the job")),
        "{r:?}"
    );
}

/// dosrun in a (simulated) Slurm allocation of the 3 hosts: no hostfile,
/// no -n; the node agents start through `srun`, here a stand-in that runs
/// its command on `--nodelist`'s host through the cluster's ssh.
fn scenario_slurm_allocation() {
    let d = TempDir::new("mn-slurm");
    let log = d.path().join("srun.log");
    let srun = d.path().join("srun");
    std::fs::write(
        &srun,
        format!(
            "#!/bin/sh\n\
             for a; do case $a in --nodelist=*) host=${{a#--nodelist=}};; --*) ;; *) break;; esac; shift; done\n\
             echo \"$host\" >> {log}\n\
             exec ssh -F {STATE}/ssh_config -o BatchMode=yes \"$host\" \"$@\"\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&srun, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = common::dosrun();
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLURM_") {
            c.env_remove(k);
        }
    }
    c.env("SLURM_JOB_ID", "77")
        .env("SLURM_JOB_NODELIST", "198.18.0.[1-3]")
        .env("SLURM_TASKS_PER_NODE", "2(x3)")
        .env(
            "PATH",
            format!("{}:{}", d.str(), std::env::var("PATH").unwrap_or_default()),
        )
        .args(["sh", "-c", "echo $DOS_RANK/$DOS_SIZE on $(hostname)"]);
    let r = run_with(&mut c, b"", common::LIMIT);
    r.assert_no_panic();
    assert_eq!(r.code(), 0, "{r:?}");
    let want: Vec<String> = (0..6)
        .map(|i| format!("{i}/6 on dos-h{}", i / 2 + 1))
        .collect();
    assert_eq!(sorted(&r.stdout), want, "{r:?}");
    let mut hosts = sorted(&std::fs::read_to_string(&log).unwrap());
    hosts.dedup();
    assert_eq!(hosts, ["198.18.0.1", "198.18.0.2", "198.18.0.3"], "{r:?}");
}

fn scenario_killed_remote_rank() {
    let d = TempDir::new("mn-kill");
    let (child, pids) = start_sleepers(&d, &[]);
    let victim = pid_of(&d, 4);
    // SAFETY: kill has no memory effects; the pid is a rank of our job.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let (code, err, _) = finish(child);
    assert_eq!(code, 137, "{err}");
    assert!(
        err.contains(&format!(
            "dosrun: rank 4 (pid {victim}) on host 198.18.0.3 was killed by signal 9 (SIGKILL)"
        )),
        "{err}"
    );
    assert_nothing_left(&pids, Duration::from_secs(5));
}

fn scenario_killed_agent() {
    let d = TempDir::new("mn-agent");
    let (child, pids) = start_sleepers(&d, &[]);
    // The agent is the parent of rank 2, on dos-h2.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid_of(&d, 2))).unwrap();
    let ppid: i32 = stat
        .rsplit(") ")
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let cmd = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmd).contains("--agent"));
    // SAFETY: kill has no memory effects; the pid is our job's agent.
    unsafe { libc::kill(ppid, libc::SIGKILL) };
    let (code, err, took) = finish(child);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("dosrun: host 198.18.0.2 (node 1) lost (ranks 2, 3)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_nothing_left(&pids, Duration::from_secs(5));
}

fn scenario_cut_link() {
    let d = TempDir::new("mn-cut");
    let (child, pids) = start_sleepers(&d, &[]);
    let cut = Instant::now();
    let r = cluster(&["loss", "dos-h3", "100"]);
    assert_eq!(r.code(), 0, "{r:?}");
    let (code, err, _) = finish(child);
    let took = cut.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("dosrun: host 198.18.0.3 (node 2) lost (ranks 4, 5): no heartbeat"),
        "{err}"
    );
    // Detected within the 2 s bound (counted from the last frame received).
    assert!(took < Duration::from_millis(2600), "{took:?}");
    // The cut-off agent notices dosrun's silence as fast and kills its ranks.
    assert_nothing_left(&pids, Duration::from_secs(5));
    assert_eq!(cluster(&["loss", "dos-h3", "0"]).code(), 0);
}

fn scenario_strangers() {
    // The ranks wait, then run the wire-up probe (which itself tries
    // garbage and a wrong secret on its node's wire-up socket).
    let body = format!("sleep 1.5; exec {} garbage", probe());
    let child = cluster_cmd(&[], &["sh", "-c", &body])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("ss").args(["-Htlnp"]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&format!("pid={},", child.id())) {
                break control_port(child.id());
            }
            assert!(Instant::now() < until, "no control port");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let addr = ("198.18.0.254", port);
    // A wrong secret (as node 1, and as dosrun's own id).
    let wrong = Secret::generate().unwrap();
    for id in [1, u64::MAX - 1] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = auth::handshake(
            &mut s,
            &wrong,
            b"dos-ctl-v1:0000000000000000",
            Role::Initiator,
            id,
        );
        assert!(r.is_err());
    }
    // Random bytes, a truncated hello, and a connection left silent.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut junk = [0u8; 300];
    auth::fill_random(&mut junk).unwrap();
    s.write_all(&junk).unwrap();
    let mut t = TcpStream::connect(addr).unwrap();
    t.write_all(b"dosH\x01\x01").unwrap();
    drop(t);
    let _silent = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.len() <= auth::HELLO_LEN, "{rest:?}");

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.ends_with("sum 15")).count(), 6);
    // Every stranger was logged; nothing else went wrong.
    assert!(
        stderr
            .lines()
            .all(|l| l.contains("refused a control connection")
                || l.contains("refused a wire-up connection")),
        "{stderr}"
    );
    assert!(
        stderr.matches("refused a control connection").count() >= 4,
        "{stderr}"
    );
    // Each rank's two strangers, logged by its node.
    assert_eq!(
        stderr.matches("refused a wire-up connection").count(),
        12,
        "{stderr}"
    );
    assert!(stderr.contains("dosrun: host dos-h2: refused a wire-up connection"));
}

#[test]
fn three_hosts_two_slots_each() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _serial = serial();
    let up = cluster(&["up", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up: {up:?}");

    scenario_placement_and_environment();
    scenario_output_relay();
    scenario_failing_remote_rank();
    scenario_mpich_across_hosts();
    scenario_slurm_allocation();
    scenario_killed_remote_rank();
    scenario_killed_agent();
    scenario_cut_link();
    scenario_strangers();
    scenario_held_connections_during_start_up();
    scenario_interrupted();
    scenario_stopped_remote_rank();
    scenario_stopped_agent_during_wireup();
    scenario_remote_flood_is_bounded();
    kill_during_collectives(6);
    assert_nothing_left(&[], Duration::from_secs(5));
}

/// dosfs on the 3 hosts: `dosrun --fs` (servers in the node agents) and
/// `dosfs up --hostfile` (the same, through dosrun), then nothing left.
#[test]
fn dosfs_on_three_hosts() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _serial = serial();
    let up = cluster(&["up", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up: {up:?}");
    scenario_fs_per_job();
    scenario_fs_bad_remote_target();
    scenario_fs_dosrun_killed();
    scenario_dosfs_up_hostfile();
    assert_nothing_left(&[], Duration::from_secs(5));
}

fn xorshift(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `dosrun --fs` on the 3 hosts (one server each, in the node agents): the
/// test writes a file striped over the three through the address file the
/// ranks got, a second job reads it back, a third stages it out (bit-exact);
/// the servers are gone after each job.
fn scenario_fs_per_job() {
    use dos_fs::addrfile::AddrFile;
    use dos_fs::client::Client;
    let d = TempDir::new("mnfs");
    let dir = d.path().join("fs");
    let data = xorshift(5 << 20, 11);
    let job = |extra: &[&str], code: i32, during: &dyn Fn(&Client, &AddrFile)| {
        let ctl = TempDir::new("mnfsctl");
        let c = ctl.str().to_string();
        let body = format!(
            "test -n \"$DOSFS\" || exit 9; \
             if [ $DOS_RANK = 0 ]; then cp \"$DOSFS\" {c}/tmp && mv {c}/tmp {c}/addr; fi; \
             while [ ! -e {c}/go ]; do sleep 0.01; done; exit {code}"
        );
        let mut args = vec!["-N", "1", "--fs", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut cmd = cluster_cmd(&args, &["sh", "-c", &body]);
        let child = std::thread::spawn(move || run_with(&mut cmd, b"", common::LIMIT));
        let p = ctl.path().join("addr");
        let until = Instant::now() + common::LIMIT;
        let f = loop {
            if let Ok(t) = std::fs::read_to_string(&p) {
                break AddrFile::parse(&p, &t).unwrap();
            }
            assert!(Instant::now() < until, "no address file from the job");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(f.servers.len(), HOSTS);
        let client = Client::new(&f);
        during(&client, &f);
        drop(client);
        std::fs::write(ctl.path().join("go"), b"").unwrap();
        let r = child.join().unwrap();
        assert_eq!(r.code(), code, "{r:?}");
        for s in &f.servers {
            let a = s.addr.parse().unwrap();
            assert!(TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_err());
        }
        r
    };
    job(&[], 0, &|c: &Client, f: &AddrFile| {
        for (i, s) in f.servers.iter().enumerate() {
            assert!(s.addr.starts_with(&format!("198.18.0.{}:", i + 1)), "{f:?}");
        }
        let a = c.create("/striped", None, true).unwrap();
        assert_eq!(a.layout.stripe_count as usize, HOSTS);
        c.write_at(&a, 0, &data).unwrap();
    });
    // Failing ranks: the servers are still synced and stopped.
    job(&[], 3, &|c: &Client, _: &AddrFile| {
        let a = c.create("/late", None, true).unwrap();
        c.write_at(&a, 0, b"before the failure").unwrap();
    });
    let out = d.path().join("out");
    let r = job(
        &["--fs-stage-out", out.to_str().unwrap()],
        0,
        &|c: &Client, _: &AddrFile| {
            let a = c.stat("/striped").unwrap();
            let mut back = vec![0; a.size as usize];
            c.read_at("/striped", &a, 0, &mut back).unwrap();
            assert!(back == data, "the second job read other bytes");
        },
    );
    assert!(r.stderr.contains("2 files copied"), "{}", r.stderr);
    assert!(std::fs::read(out.join("striped")).unwrap() == data);
    assert_eq!(
        std::fs::read(out.join("late")).unwrap(),
        b"before the failure"
    );
}

/// A remote node whose target is not one (node 1's directory holds a
/// stranger's file): the job stops before any rank runs, naming the host,
/// and every agent leaves (the others had started their servers).
fn scenario_fs_bad_remote_target() {
    let d = TempDir::new("mnfsbad");
    let dir = d.path().join("fs");
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("1/junk"), b"x").unwrap();
    let r = cluster_run(&["-N", "1", "--fs", dir.to_str().unwrap()], &["true"]);
    assert_eq!(r.code(), 2, "{r:?}");
    assert!(
        r.stderr.contains("dosrun: --fs: host 198.18.0.2 (node 1)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("not a dosfs target"), "{}", r.stderr);
    // Agents still connecting are not waited for (they were, 12 s).
    assert!(r.elapsed < Duration::from_secs(8), "{:?}", r.elapsed);
    assert_nothing_left(&[], Duration::from_secs(5));
}

/// dosrun killed (SIGKILL) during a `--fs` job: every agent loses it,
/// syncs and stops its server; a later job reads what was written.
fn scenario_fs_dosrun_killed() {
    use dos_fs::addrfile::AddrFile;
    use dos_fs::client::Client;
    let d = TempDir::new("mnfskill");
    let dir = d.path().join("fs");
    let ctl = d.path().join("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let c = ctl.to_str().unwrap();
    let body = format!(
        "if [ $DOS_RANK = 0 ]; then cp \"$DOSFS\" {c}/tmp && mv {c}/tmp {c}/addr; fi; sleep 1000"
    );
    let mut child = cluster_cmd(
        &["-N", "1", "--fs", dir.to_str().unwrap()],
        &["sh", "-c", &body],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let p = ctl.join("addr");
    let until = Instant::now() + common::LIMIT;
    let f = loop {
        if let Ok(t) = std::fs::read_to_string(&p) {
            break AddrFile::parse(&p, &t).unwrap();
        }
        assert!(Instant::now() < until, "no address file from the job");
        std::thread::sleep(Duration::from_millis(10));
    };
    let client = Client::new(&f);
    let a = client.create("/k", None, true).unwrap();
    let data = xorshift(3 << 20, 9);
    client.write_at(&a, 0, &data).unwrap();
    drop(client);
    child.kill().unwrap();
    child.wait().unwrap();
    // The agents notice at once (closed connection) and stop their servers.
    for s in &f.servers {
        let a = s.addr.parse().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < until, "server {} outlived dosrun", s.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_nothing_left(&[], Duration::from_secs(10));
    let out = d.path().join("out");
    let r = cluster_run(
        &[
            "-N",
            "1",
            "--fs",
            dir.to_str().unwrap(),
            "--fs-stage-out",
            out.to_str().unwrap(),
        ],
        &["true"],
    );
    assert_eq!(r.code(), 0, "{r:?}");
    assert!(std::fs::read(out.join("k")).unwrap() == data);
}

/// `dosfs up --hostfile` on the cluster's hosts, `cp` in and out, `down`.
fn scenario_dosfs_up_hostfile() {
    let d = TempDir::new("mnup");
    let dosrun = Path::new(env!("CARGO_BIN_EXE_dosrun"));
    let dosfs = dosrun.with_file_name("dosfs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut b = Command::new(cargo);
    b.args(["build", "-q", "-p", "dos-fs", "--bin", "dosfs"]);
    if dosrun.parent().and_then(|p| p.file_name()) == Some("release".as_ref()) {
        b.arg("--release");
    }
    assert!(b.status().unwrap().success());
    let addr = d.path().join("fs.addr");
    let fs = |args: &[&str]| {
        let o = Command::new(&dosfs)
            .arg("--fs")
            .arg(&addr)
            .args(args)
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "dosfs {args:?}: {text}");
        text
    };
    let hostfile = format!("{STATE}/hostfile");
    let target = d.path().join("t");
    let out = fs(&[
        "up",
        "--hostfile",
        &hostfile,
        "--launch-agent",
        &launch(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(out.contains("3 servers up"), "{out}");
    let data = xorshift(9 << 20, 5);
    let src = d.path().join("in");
    std::fs::write(&src, &data).unwrap();
    fs(&["cp", src.to_str().unwrap(), ":/in"]);
    let back = d.path().join("back");
    fs(&["cp", ":/in", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data);
    let df = fs(&["df"]);
    assert_eq!(df.matches("198.18.0.").count(), HOSTS, "{df}");
    fs(&["down"]);
    assert!(!addr.exists());
    for k in 0..HOSTS {
        assert!(target.join(format!("{k}/dosfs-target")).is_file());
    }
}

/// Connections held open on dosrun's control port while the agents join,
/// from one of the hosts (the address an agent comes from) and from this
/// one: every job starts (issue 16: 7 of 10 failed when the oldest
/// connection, often the agent's, made room).
fn scenario_held_connections_during_start_up() {
    for trial in 0..3 {
        let child = cluster_cmd(&[], &[probe()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let port = {
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let out = Command::new("ss").args(["-Htlnp"]).output().unwrap();
                if String::from_utf8_lossy(&out.stdout).contains(&format!("pid={},", child.id())) {
                    break control_port(child.id());
                }
                assert!(Instant::now() < until, "no control port");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // Up to 600 connections that send nothing, the newest 200 held,
        // for at most 3 s, from host 1 and from here.
        let script = format!(
            "fds=(); end=$((SECONDS+3)); for i in $(seq 600); do [ $SECONDS -ge $end ] && break; \
             exec {{f}}<>/dev/tcp/198.18.0.254/{port} || break; fds+=($f); \
             if [ ${{#fds[@]}} -gt 200 ]; then eval \"exec ${{fds[0]}}>&-\"; fds=(\"${{fds[@]:1}}\"); fi; \
             done; sleep 2"
        );
        let attackers: Vec<std::process::Child> = [
            vec!["ip", "netns", "exec", "dos-h1", "bash", "-c", &script],
            vec!["bash", "-c", &script],
        ]
        .iter()
        .map(|a| {
            Command::new(a[0])
                .args(&a[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
        let (code, stderr, _) = finish(child);
        for mut a in attackers {
            let _ = a.kill();
            let _ = a.wait();
        }
        assert_eq!(code, 0, "trial {trial}: {stderr}");
        assert!(
            stderr.lines().count() <= 3 * 12,
            "trial {trial}: the log of refusals is long: {stderr}"
        );
    }
}

/// SIGTERM to dosrun: forwarded to every host; the job was interrupted, no
/// rank is blamed for dying of it; status 128 + 15.
fn scenario_interrupted() {
    let d = TempDir::new("mn-term");
    let (child, pids) = start_sleepers(&d, &[]);
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (code, err, took) = finish(child);
    assert_eq!(code, 143, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("dosrun: ")).collect();
    assert_eq!(
        lines,
        ["dosrun: interrupted by signal 15 (SIGTERM), forwarded to the ranks; stopping the job"],
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_nothing_left(&pids, Duration::from_secs(5));
}

/// `--stall-timeout`: a remote rank stopped with SIGSTOP (its agent
/// reports it) stops the job, named.
fn scenario_stopped_remote_rank() {
    let d = TempDir::new("mn-stall");
    let (child, pids) = start_sleepers(&d, &["--stall-timeout", "0.5"]);
    let victim = pid_of(&d, 4);
    // SAFETY: kill has no memory effects; the pid is a rank of our job.
    unsafe { libc::kill(victim, libc::SIGSTOP) };
    let (code, err, took) = finish(child);
    assert_eq!(code, 124, "{err}");
    assert!(
        err.contains(&format!(
            "dosrun: rank 4 (pid {victim}) on host 198.18.0.3 has been stopped by signal 19 (SIGSTOP) for 0.5 s"
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_nothing_left(&pids, Duration::from_secs(5));
}

/// The parent of process `pid`.
fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(") ")
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A node agent stopped (SIGSTOP) while its ranks start their wire-up:
/// dosrun loses the host (heartbeat silence), and the agent's ranks, whose
/// wire-up service no longer answers, fail by themselves after
/// `DOS_WIREUP_TIMEOUT_MS` instead of waiting in a read forever. Once
/// continued, the agent cleans up.
fn scenario_stopped_agent_during_wireup() {
    let d = TempDir::new("mn-stopped-agent");
    let body = format!("{} && sleep 1 && exec {}", common::record_pid(&d), probe());
    // The ranks of the other hosts wait in the fence as long: the host is
    // lost (1 s) before their wire-up times out (4 s).
    let extra = [
        "-x",
        "DOS_WIREUP_TIMEOUT_MS=4000",
        "--heartbeat-timeout",
        "1",
    ];
    let child = cluster_cmd(&extra, &["sh", "-c", &body])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = d.wait_pids(2 * HOSTS);
    let agent = ppid(pid_of(&d, 2));
    let cmd = std::fs::read(format!("/proc/{agent}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmd).contains("--agent"));
    // SAFETY: kill has no memory effects; the pid is our job's agent.
    unsafe { libc::kill(agent, libc::SIGSTOP) };
    let stopped = Instant::now();
    let behind = [pid_of(&d, 2), pid_of(&d, 3)];
    while !behind.iter().all(|&p| common::dead(p)) {
        if stopped.elapsed() > Duration::from_secs(10) {
            // SAFETY: as above.
            unsafe { libc::kill(agent, libc::SIGCONT) };
            panic!("the ranks of a stopped agent still wait in their wire-up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, err, _) = finish(child);
    // SAFETY: as above.
    unsafe { libc::kill(agent, libc::SIGCONT) };
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("dosrun: host 198.18.0.2 (node 1) lost"),
        "{err}"
    );
    assert_nothing_left(&pids, Duration::from_secs(5));
}

/// dosrun's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Two remote ranks write 40 MB each; dosrun's stdout is not read for 3 s,
/// then slowly.
/// Everything arrives, line for line, while dosrun's peak memory stays far
/// below the flood: it stops reading the agents' connections while its
/// output queue is full, and no host is declared lost meanwhile.
fn scenario_remote_flood_is_bounded() {
    const LINES: usize = 400_000; // 100-byte lines: 40 MB per rank
    const LIMIT: u64 = 32 << 20;
    let body = format!("yes \"$DOS_RANK $(printf '%0097d' 0)\" | head -n {LINES}");
    let mut child = cluster_cmd(&["-n", "2", "--map-by", "node"], &["sh", "-c", &body])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut counts = [0usize; 2];
        let mut bad = 0usize;
        let mut partial = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let want_tail = format!(" {:097}", 0);
        // A reader stalled longer than the heartbeat timeout (2 s): the
        // agents' heartbeats wait behind their output, no host is lost.
        std::thread::sleep(Duration::from_secs(3));
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            partial.extend_from_slice(&buf[..n]);
            let end = partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            for l in partial[..end]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let l = String::from_utf8_lossy(l);
                match (l.get(..1), l.get(1..)) {
                    (Some("0"), Some(t)) if t == want_tail => counts[0] += 1,
                    (Some("1"), Some(t)) if t == want_tail => counts[1] += 1,
                    _ => bad += 1,
                }
            }
            partial.drain(..end);
            // A slow reader: at most 64 KiB per 3 ms.
            std::thread::sleep(Duration::from_millis(3));
        }
        (counts, bad, partial.len())
    });
    let mut peak = 0;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if let Some(p) = peak_rss(pid) {
            peak = peak.max(p);
        }
        assert!(start.elapsed() < common::LIMIT, "the flood did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let (counts, bad, rest) = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!((counts, bad, rest), ([LINES, LINES], 0, 0), "{err}");
    eprintln!(
        "remote flood of 2 x {} MB read slowly in {:?}: dosrun peak RSS {} MiB",
        LINES * 100 / 1_000_000,
        start.elapsed(),
        peak >> 20
    );
    assert!(peak > 0 && peak < LIMIT, "dosrun peak RSS {peak} bytes");
}

/// `trials` jobs of collectives on 3 hosts x 2 ranks; in each, one rank is
/// killed with SIGKILL while they run: dosrun must name it and exit 137.
fn kill_during_collectives(trials: usize) {
    let checks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    let prog = checks.join("collcheck");
    if !prog.exists() {
        eprintln!(
            "skipped the blame trials: build the check programs first (cargo build -p dos-checks)"
        );
        return;
    }
    let mut wrong = Vec::new();
    for t in 0..trials {
        let d = TempDir::new("mn-blame");
        let body = format!(
            "{} && exec {} --cases 1000000",
            common::record_pid(&d),
            prog.display()
        );
        let child = cluster_cmd(&[], &["sh", "-c", &body])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pids = d.wait_pids(2 * HOSTS);
        std::thread::sleep(Duration::from_millis(150 + 50 * (t as u64 % 4)));
        let victim = (t * 5 + 2) % (2 * HOSTS);
        let vpid = pid_of(&d, victim);
        // SAFETY: kill has no memory effects; the pid is a rank of our job.
        unsafe { libc::kill(vpid, libc::SIGKILL) };
        let (code, err, _) = finish(child);
        let first = err
            .lines()
            .find(|l| l.starts_with("dosrun: "))
            .unwrap_or("");
        if code != 137
            || !first.starts_with(&format!("dosrun: rank {victim} (pid {vpid}) "))
            || !first.contains("killed by signal 9 (SIGKILL)")
        {
            wrong.push(format!(
                "trial {t}: killed rank {victim}, status {code}: {err}"
            ));
        }
        assert_nothing_left(&pids, Duration::from_secs(5));
    }
    assert!(
        wrong.is_empty(),
        "{} of {trials} trials blamed wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The heavy version of the blame trials across hosts (see the module docs).
#[test]
#[ignore]
fn blame_across_hosts_soak() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _serial = serial();
    let up = cluster(&["up", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up: {up:?}");
    kill_during_collectives(64);
}

/// The one-sided check (`rmacheck`) across the 3 hosts over the soft-RoCE,
/// `runs` times in a row: 6 ranks on the 2 cores, so ranks stall each other
/// for many milliseconds. Issue 16: with 8 tries 20 ms apart, 4 runs in 10
/// failed ("peer rank 4 failed"); the retry budget is now in seconds.
fn rmacheck_over_roce_across_hosts(runs: usize) {
    let checks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    let rmacheck = checks.join("rmacheck");
    if !rmacheck.exists() {
        eprintln!("skipped: build the check programs first (cargo build -p dos-checks)");
        return;
    }
    let mut failed = Vec::new();
    for run in 0..runs {
        let r = cluster_run(
            &["--transports", "shm,roce", "--timeout", "50"],
            &[rmacheck.to_str().unwrap()],
        );
        if r.code() != 0 || !r.stdout.contains("OK") {
            failed.push(format!("run {run}: {r:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// `rmacheck` over `shm,roce` across hosts, a few times (see above).
#[test]
fn one_sided_check_over_roce_across_hosts() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _serial = serial();
    let up = cluster(&["up", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up: {up:?}");
    rmacheck_over_roce_across_hosts(3);
}

/// The same 20 times in a row (the issue's check; `ci/soak.sh`).
#[test]
#[ignore = "heavy: 20 jobs across hosts"]
fn one_sided_check_over_roce_across_hosts_soak() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _serial = serial();
    let up = cluster(&["up", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up: {up:?}");
    rmacheck_over_roce_across_hosts(20);
}

/// An example's output without its timings, sorted.
fn normalized(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.contains(" took "))
        .map(|l| match l.find(" (") {
            Some(i) if l.contains(" us ") || l.contains(" ms ") => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect();
    v.sort();
    v
}

/// The examples and the collective test program across 3 hosts x 2 slots
/// through ssh give the single-host results.
#[test]
fn examples_across_hosts_match_one_host() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/examples");
    if !examples.join("../collcheck").exists() {
        eprintln!("skipped: build the examples and checks first (cargo build --workspace --bins --examples)");
        return;
    }
    let _serial = serial();
    let up = cluster(&["up", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up: {up:?}");
    for ex in [
        &["hello"][..],
        &["ring"],
        &["pi"],
        &["heat", "--check"],
        &["collcheck"],
        &["rpccheck"],
        &["dsmcheck"],
        &["p2pcheck"],
        &["regioncheck", "48"],
        &["rmacheck"],
        &["errcheck", "split"],
        &["errcheck", "mismatch"],
    ] {
        let prog = examples
            .join(if ex[0].ends_with("check") { "../" } else { "" })
            .join(ex[0]);
        let mut cmd = vec![prog.to_str().unwrap()];
        cmd.extend_from_slice(&ex[1..]);
        let multi = cluster_run(&[], &cmd);
        let mut one = vec!["-n", "6"];
        one.extend_from_slice(&cmd);
        let single = common::run(&one);
        assert_eq!(single.code(), 0, "{ex:?} on one host: {single:?}");
        assert_eq!(multi.code(), 0, "{ex:?} on 3 hosts: {multi:?}");
        assert!(
            !multi.stderr.contains("dos: "),
            "{ex:?} on 3 hosts reported an error: {multi:?}"
        );
        assert_eq!(
            normalized(&multi.stdout),
            normalized(&single.stdout),
            "{ex:?}"
        );
    }
}

/// Soft-RoCE between two hosts: a capture of the traffic decodes as RoCE
/// (tshark's InfiniBand dissector) with no malformed packet and every ICRC
/// right (checked by ci/icrc_check.py, independently of our code); then, with
/// 5% of the packets into and out of one host dropped (nftables), 256 MiB of
/// messages and 256 MiB of puts and gets arrive bit-exact.
///
/// The soft-RoCE sends trains of packets with UDP GSO; veth and the bridge
/// carry a train whole. For the capture and the loss, the hosts cut trains
/// into packets as they leave (`cluster.sh segment on`), as a NIC does: each
/// packet then has its own IPv4 identification (0, 1, ... in its train),
/// which its ICRC must cover, and is lost on its own. A last run with whole
/// trains under loss checks the receiving side's GRO path.
#[test]
fn roce_across_hosts_decodes_and_survives_loss() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/examples");
    let bigxfer = examples.join("bigxfer");
    if !bigxfer.exists() {
        eprintln!("skipped: build the examples first (cargo build --examples -p dos)");
        return;
    }
    if Command::new("tshark").arg("--version").output().is_err() {
        panic!("tshark is missing (ci/deps.sh installs it)");
    }
    let _serial = serial();
    let up = cluster(&["up", &HOSTS.to_string()]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up: {up:?}");
    let hosts = "198.18.0.1:1,198.18.0.2:1";
    let opts = ["-H", hosts, "--transports", "shm,roce", "--bind-to", "none"];
    let run = |mib: &str| {
        let mut c = common::dosrun();
        c.args(["--launch-agent", &launch()])
            .args(opts)
            .args(["--timeout", "600"])
            .arg(&bigxfer)
            .arg(mib);
        run_with(&mut c, b"", Duration::from_secs(660))
    };

    // 1. A capture of a clean run, packets as on a wire.
    assert_eq!(cluster(&["segment", "on"]).code(), 0);
    let d = TempDir::new("roce");
    let cap = d.path().join("roce.pcapng");
    let mut tshark = Command::new("tshark")
        // A 64 MiB capture buffer: a slow machine must not drop packets.
        .args([
            "-q",
            "-B",
            "64",
            "-i",
            "dos-br0",
            "-f",
            "udp port 4791",
            "-w",
        ])
        .arg(&cap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tshark says "Capturing on" once it listens; what it says after that
    // (packets captured and dropped) goes into the failure messages.
    let tshark_said = {
        use std::io::Read;
        let mut err = tshark.stderr.take().unwrap();
        let mut seen = Vec::new();
        let mut b = [0u8; 256];
        let until = Instant::now() + Duration::from_secs(20);
        while !String::from_utf8_lossy(&seen).contains("Capturing on") {
            let n = err.read(&mut b).unwrap_or(0);
            assert!(
                n > 0 && Instant::now() < until,
                "tshark did not start: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&b[..n]);
        }
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = err.read_to_end(&mut rest);
            String::from_utf8_lossy(&rest).into_owned()
        })
    };
    let clean = run("4");
    // The job's last packets (the get's READ response LAST and its ACK) may
    // still be in the capture buffer: stop tshark only once its file has
    // stopped growing.
    settle_file(&cap, Duration::from_millis(500), Duration::from_secs(15));
    // SAFETY: signalling the capture we started.
    unsafe { libc::kill(tshark.id() as i32, libc::SIGINT) };
    let _ = tshark.wait();
    let tshark_said = tshark_said.join().unwrap_or_default();
    assert_eq!(clean.code(), 0, "{clean:?}");
    assert!(
        clean.stdout.contains("bigxfer: OK 4 MiB") && clean.stdout.contains("roce"),
        "{clean:?}"
    );
    let fields = Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.protocols",
            "-e",
            "infiniband.bth.opcode",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&fields.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 1000, "few packets captured: {}", lines.len());
    let mut opcodes = std::collections::BTreeSet::new();
    for l in &lines {
        let (protos, op) = l.split_once('\t').unwrap_or((l, ""));
        assert!(protos.contains("infiniband"), "not decoded as RoCE: {l}");
        assert!(!protos.contains("malformed"), "malformed: {l}");
        opcodes.insert(op.to_string());
    }
    // Active messages are SENDs with immediate data, large payloads and
    // window puts RDMA WRITEs (FIRST/MIDDLE/LAST), window gets RDMA READ
    // requests and responses (FIRST/MIDDLE/LAST), and ACKs.
    for want in ["5", "6", "7", "8", "12", "13", "14", "15", "17"] {
        assert!(
            opcodes.contains(want),
            "no opcode {want} among {opcodes:?} in {} packets; tshark: {tshark_said}",
            lines.len()
        );
    }
    let check = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/icrc_check.py"))
        .arg(&cap)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "ICRC check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The trains were cut: more than one identification on the wire.
    let ids = Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args(["-T", "fields", "-e", "ip.id"])
        .output()
        .unwrap();
    let ids: std::collections::BTreeSet<String> = String::from_utf8_lossy(&ids.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        ids.contains("0x0000") && ids.contains("0x0001") && ids.len() > 2,
        "GSO trains not seen as cut packets: identifications {ids:?}"
    );

    // 2. 5% loss into and out of host 2, 256 MiB each way.
    assert_eq!(cluster(&["loss", "dos-h2", "5"]).code(), 0);
    let lossy = run("256");
    assert_eq!(lossy.code(), 0, "{lossy:?}");
    assert!(
        lossy
            .stdout
            .contains("bigxfer: OK 256 MiB sent, 256 MiB put and got"),
        "{lossy:?}"
    );

    // 3. Whole trains (received with GRO), 5% of them lost.
    assert_eq!(cluster(&["segment", "off"]).code(), 0);
    let trains = run("32");
    assert_eq!(cluster(&["loss", "dos-h2", "0"]).code(), 0);
    assert_eq!(trains.code(), 0, "{trains:?}");
    assert!(
        trains
            .stdout
            .contains("bigxfer: OK 32 MiB sent, 32 MiB put and got"),
        "{trains:?}"
    );
}

/// Waits until `path` has kept its size for `quiet` (at most `limit`).
fn settle_file(path: &Path, quiet: Duration, limit: Duration) {
    let until = Instant::now() + limit;
    let size = || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut last = size();
    let mut since = Instant::now();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        let now = size();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}
