//! Issue 16, item 11, as an attacker on the host does it: a soft-RoCE job on
//! the loopback (`--transports roce`, so that its ranks talk RoCEv2 over UDP)
//! while a packet socket watches the traffic and, for every message packet it
//! sees, sends copies renumbered to the next PSNs, with the payload changed and
//! the ICRC recomputed: from a port of its own, and with the sender's own
//! address and port (a raw socket). The job must finish with the right result.
//!
//! Needs root (a packet socket and a raw socket) and the examples built
//! (`cargo build --examples -p dos`); skipped otherwise.

mod common;
#[path = "../../transport/tests/forge/mod.rs"]
mod forge;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dos_transport::roce::icrc::{icrc, IpUdp, ICRC_LEN};

#[test]
fn a_roce_job_survives_forged_packets() {
    let ring = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/examples/ring");
    if !ring.exists() {
        eprintln!("skipped: build the examples first (cargo build --examples -p dos)");
        return;
    }
    // The job, the capture and the forgeries live in a network namespace of
    // their own (this thread's, which its children and threads inherit), so
    // that the attacker sees and hits nothing but this job.
    let worker = std::thread::spawn(move || {
        // SAFETY: moves this thread alone into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err("cannot make a network namespace (not root)");
        }
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            return Err("cannot bring the namespace's loopback up");
        }
        let cap = forge::capture_socket().ok_or("no packet socket")?;
        // SAFETY: plain system call; closed by the attacker thread.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        let stop = Arc::new(AtomicBool::new(false));
        let attacker = {
            let stop = stop.clone();
            std::thread::spawn(move || attack(cap, raw, &stop))
        };
        let mut c = common::dosrun();
        // Authentication is the default; say so, so that the environment
        // cannot turn it off (with DOS_ROCE_AUTH=0 this job fails: the packets
        // spoofed with the sender's address get through).
        c.env("DOS_ROCE_AUTH", "1")
            .args(["-n", "3", "--transports", "roce", "--timeout", "120"])
            .arg(&ring)
            .arg("300");
        let run = common::run_with(&mut c, b"", Duration::from_secs(150));
        stop.store(true, Ordering::Release);
        let (plain, spoofed) = attacker.join().unwrap();
        Ok((run, plain, spoofed))
    });
    let (run, plain, spoofed) = match worker.join().unwrap() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    eprintln!("forged {plain} packets from another port, {spoofed} with the sender's address");
    assert_eq!(run.code(), 0, "{run:?}");
    assert!(run.stdout.contains("laps on 3 ranks OK"), "{run:?}");
    assert!(plain > 100, "the attacker saw too little traffic: {plain}");
}

/// Forges from what `cap` captures until `stop`; returns how many packets it
/// sent from its own port and with a spoofed source. Bounded: at most 20 000.
fn attack(cap: i32, raw: i32, stop: &AtomicBool) -> (u32, u32) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    let (mut plain, mut spoofed) = (0u32, 0u32);
    while !stop.load(Ordering::Acquire) && plain < 10_000 {
        let Some((id, from, to, pkt)) = forge::capture_udp(cap, &mut buf) else {
            continue;
        };
        // Our own spoofed packets (identification 1) we leave alone; what we
        // take for RoCE: a SEND opcode, transport version 0, default P_Key.
        if id != 0
            || pkt.len() < 24
            || pkt.len() % 4 != 0
            || !matches!(pkt[0], 0x00..=0x05)
            || pkt[1] & 0x0F != 0
            || pkt[2..4] != [0xFF, 0xFF]
            || from.port() == stranger.port()
        {
            continue;
        }
        let psn = u32::from_be_bytes([0, pkt[9], pkt[10], pkt[11]]);
        for k in 1..=2u32 {
            let mut f = pkt.clone();
            f[9..12].copy_from_slice(&((psn + k) & 0xFF_FFFF).to_be_bytes()[1..]);
            let n = f.len() - ICRC_LEN;
            for x in &mut f[16..n.min(64)] {
                *x ^= 0x5A;
            }
            let c = icrc(&IpUdp::new(stranger, to.into()), &f[..n]).unwrap();
            f[n..].copy_from_slice(&c.to_le_bytes());
            if sock.send_to(&f, to).is_ok() {
                plain += 1;
            }
            if raw >= 0 {
                let h = IpUdp {
                    ipv4_id: 1,
                    ..IpUdp::new(from.into(), to.into())
                };
                let c = icrc(&h, &f[..n]).unwrap();
                f[n..].copy_from_slice(&c.to_le_bytes());
                if forge::send_spoofed(raw, from, to, &f) {
                    spoofed += 1;
                }
            }
        }
    }
    // SAFETY: closing the descriptors this thread owns.
    unsafe {
        libc::close(cap);
        if raw >= 0 {
            libc::close(raw);
        }
    }
    (plain, spoofed)
}
