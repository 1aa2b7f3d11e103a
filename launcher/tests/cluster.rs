//! The namespace test cluster of `ci/cluster.sh`: two hosts come up, answer
//! over ssh with their own names and addresses, lose packets on demand, and
//! leave nothing behind when it goes down.
//!
//! Skipped (with the reason printed) only when not root or when `ip netns`
//! is unavailable; CI runs as root, where it must pass. It replaces a cluster
//! that is already up on this machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{run_with, Run};

const STATE: &str = "/tmp/dos-cluster";

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

fn ssh(host: &str, command: &str, extra: &[&str]) -> Run {
    run_with(
        Command::new("ssh")
            .args(["-F", &format!("{STATE}/ssh_config")])
            .args(extra)
            .args([host, command]),
        b"",
        Duration::from_secs(60),
    )
}

/// Takes the cluster down when the test ends, also when it fails.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let r = cluster(&["down"]);
        if r.code() != 0 {
            eprintln!("cluster.sh down failed: {r:?}");
        }
    }
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

fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

#[test]
fn two_hosts_up_ssh_loss_and_down() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let up = cluster(&["up", "2"]);
    let _down = Down;
    assert_eq!(up.code(), 0, "cluster.sh up 2: {up:?}");
    assert!(
        up.stdout.contains("ssh -F /tmp/dos-cluster/ssh_config"),
        "{up:?}"
    );

    let hostfile = std::fs::read_to_string(format!("{STATE}/hostfile")).unwrap();
    assert_eq!(hostfile, "198.18.0.1 slots=2\n198.18.0.2 slots=2\n");
    let sshd_pids: Vec<i32> = (1..=2)
        .map(|k| {
            std::fs::read_to_string(format!("{STATE}/h{k}/sshd.pid"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(sshd_pids.iter().all(|&p| running(p)), "{sshd_pids:?}");

    for k in 1..=2 {
        let addr = format!("198.18.0.{k}");
        let r = ssh(&addr, "hostname; ip -br addr", &[]);
        assert_eq!(r.code(), 0, "ssh {addr}: {r:?}");
        let mut lines = r.stdout.lines();
        assert_eq!(lines.next(), Some(format!("dos-h{k}").as_str()), "{r:?}");
        assert!(r.stdout.contains(&format!("{addr}/24")), "{r:?}");
        // The only addresses are loopback and the host's own.
        assert!(!r.stdout.contains("198.18.0.254"), "{r:?}");
        // The name alias of ssh_config reaches the same host.
        let r = ssh(&format!("dos-h{k}"), "hostname", &[]);
        assert_eq!(r.stdout.trim(), format!("dos-h{k}"), "{r:?}");
    }

    let status = cluster(&["status"]);
    assert_eq!(status.code(), 0, "{status:?}");
    assert!(status.stdout.contains("2 host(s)"), "{status:?}");

    // Each host runs on its own CPUs (a share of this machine's), as a node
    // has its own cores: processes of different hosts are not bound to one
    // core while another idles.
    let cpus: Vec<String> = (1..=2)
        .map(|k| {
            let r = ssh(
                &format!("198.18.0.{k}"),
                "awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status",
                &[],
            );
            assert_eq!(r.code(), 0, "{r:?}");
            r.stdout.trim().to_string()
        })
        .collect();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert_ne!(cpus[0], cpus[1], "both hosts on the same CPUs");
    }

    // All packets of host 2 lost: ssh cannot connect; 0% restores it.
    let r = cluster(&["loss", "dos-h2", "100"]);
    assert_eq!(r.code(), 0, "{r:?}");
    let r = ssh("198.18.0.2", "true", &["-o", "ConnectTimeout=2"]);
    assert_ne!(r.code(), 0, "{r:?}");
    assert_eq!(ssh("198.18.0.1", "true", &[]).code(), 0);
    assert_eq!(cluster(&["loss", "198.18.0.2", "0"]).code(), 0);
    assert_eq!(ssh("198.18.0.2", "true", &[]).code(), 0);
    assert_ne!(cluster(&["loss", "dos-h7", "5"]).code(), 0);

    // dosrun runs a job on the cluster's hosts through node agents.
    let r = run_with(
        common::dosrun().args([
            "--hostfile",
            &format!("{STATE}/hostfile"),
            "--launch-agent",
            &format!("ssh -F {STATE}/ssh_config -o BatchMode=yes"),
            "hostname",
        ]),
        b"",
        common::LIMIT,
    );
    assert_eq!(r.code(), 0, "{r:?}");
    let mut names: Vec<&str> = r.stdout.lines().collect();
    names.sort();
    assert_eq!(names, ["dos-h1", "dos-h1", "dos-h2", "dos-h2"], "{r:?}");

    let down = cluster(&["down"]);
    assert_eq!(down.code(), 0, "{down:?}");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.contains("dos-h"), "{netns}");
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("dos-br0") && !links.contains("dos-v"),
        "{links}"
    );
    assert!(!Path::new(STATE).exists());
    assert!(sshd_pids.iter().all(|&p| !running(p)), "{sshd_pids:?}");
    // Idempotent.
    assert_eq!(cluster(&["down"]).code(), 0);
    let status = cluster(&["status"]);
    assert_eq!(status.stdout.trim(), "cluster: down", "{status:?}");
}
