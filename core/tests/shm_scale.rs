//! Many ranks on one node under the real `dosrun`: the node's shared segment
//! holds memory for the pairs of ranks that talk, not for every ordered pair
//! (`dos_transport::shm::wire`), and a node with more ranks than a segment
//! serves is refused at start with one clear line.
//!
//! Build the binaries first: `cargo build --workspace --bins --examples`.
//! The jobs of 64, 200 and 1024 ranks (oversubscribed 512 to 1 on 2 cores)
//! take about 3 s together in a debug build.

mod common;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{example, start, Job, JOB_TIMEOUT};
use dos_transport::shm::wire::MAX_RANKS;
use dos_transport::shm::Segment;

/// Bytes of one ring with dosrun's default `DOS_SHM_RING_BYTES`.
const RING: u64 = 128 << 10;

/// A descriptor of the shared segment that dosrun `pid` made, once it has one.
fn segment_file(pid: i32) -> Option<File> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let is_seg = std::fs::read_link(e.path())
            .is_ok_and(|t| t.to_string_lossy().contains("memfd:dos-shm"));
        if is_seg {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
                .ok();
        }
    }
    None
}

/// What the segment of a job held at its end.
#[derive(Debug)]
struct Usage {
    /// Size of the segment (address space).
    size: u64,
    /// Bytes of its pages that were touched (memory).
    resident: u64,
    /// Rings handed out to pairs of ranks.
    rings: usize,
}

/// Runs `program` on `n` ranks and reports what its segment holds at the end
/// (a descriptor opened while the job runs keeps the segment after dosrun
/// exits; shared-memory pages are never given back before that).
fn run_measured(n: usize, program: &str, args: &[&str]) -> (Job, Usage) {
    let mut job = start(n, JOB_TIMEOUT, &example(program), args);
    let pid = job.pid();
    let mut file = None;
    while file.is_none() && !job.exited() {
        file = segment_file(pid);
        std::thread::sleep(Duration::from_millis(2));
    }
    let j = job.finish();
    let file = file.unwrap_or_else(|| panic!("never saw the job's segment\n{j}"));
    let meta = file.metadata().expect("fstat of the segment");
    let seg = Segment::attach(OwnedFd::from(file)).expect("attach the job's segment");
    let usage = Usage {
        size: meta.size(),
        resident: meta.blocks() * 512,
        rings: seg.rings_used(),
    };
    (j, usage)
}

/// The token ring on `n` ranks passes, and the segment holds a few rings per
/// rank and little memory: far below `n^2` rings.
fn ring_on(n: usize) {
    let laps = 2;
    let (j, u) = run_measured(n, "ring", &[&laps.to_string()]);
    j.assert_success();
    let want = format!(
        "ring: token {} after {laps} laps on {n} ranks OK ",
        laps * n * (n - 1) / 2
    );
    assert!(j.stdout.contains(&want), "expected {want:?}\n{j}");
    eprintln!("{n} ranks: {u:?}");
    let pairs = (n * n) as u64;
    assert!(u.rings <= 16 * n, "{u:?}: more rings than pairs that talk");
    assert!(
        u.size <= (64 << 30) + (n as u64) * (33 << 10) + (64 << 20),
        "{u:?}"
    );
    // The old layout (one ring per ordered pair, each polled by its receiver)
    // touched a page of each of the n^2 rings: 16 MiB at 64 ranks.
    assert!(
        u.resident < (n as u64) * (48 << 10) + (2 << 20),
        "{u:?}: {} bytes for {n} ranks ({pairs} rings of {RING} bytes would be {})",
        u.resident,
        pairs * RING
    );
}

#[test]
fn a_node_of_64_ranks_holds_memory_for_the_pairs_that_talk() {
    ring_on(64);
}

#[test]
fn a_node_of_200_ranks_holds_memory_for_the_pairs_that_talk() {
    ring_on(200);
}

#[test]
fn a_node_of_1024_ranks_starts() {
    let (j, u) = run_measured(1024, "hello", &[]);
    j.assert_success();
    assert!(j.stdout.contains("hello: 1024 ranks OK"), "{j}");
    eprintln!("1024 ranks: {u:?}");
    assert!(u.resident < 256 << 20, "{u:?}");
}

#[test]
fn more_ranks_than_a_segment_serves_are_refused_at_start() {
    for n in [MAX_RANKS + 1, 100_000] {
        let out = std::process::Command::new(common::dosrun())
            .args(["-n", &n.to_string(), "true"])
            .output()
            .expect("run dosrun");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let want = format!(
            "dosrun: too many ranks on one node for the shared segment: {n} ranks, at most {MAX_RANKS}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&want), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
