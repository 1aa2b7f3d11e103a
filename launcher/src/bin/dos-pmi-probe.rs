//! `dos-pmi-probe`: checks the wire-up service of `dosrun` from inside a job.
//!
//! Run it under dosrun: `dosrun -n 4 dos-pmi-probe`. Each rank puts its rank
//! under `rank-R`, fences, reads every rank's key and prints
//! `rank R of N: sum S` (S = 0 + 1 + ... + N-1). Modes for launcher tests:
//!
//! * `exchange` (default): as above;
//! * `abort CODE MSG`: rank 1 (or 0 in a job of 1) aborts the job, the others exchange;
//! * `garbage`: first sends bytes that are no handshake on a second
//!   connection, and a handshake with a wrong secret on a third; the service
//!   must close both; then exchanges;
//! * `skip RANK`: rank RANK exits 0 at once without connecting; the others'
//!   fence must fail;
//! * `flood N`: rank 0 first makes N connections that send junk and close
//!   (dosrun's log of refusals must stay short), then all exchange;
//! * `hold N`: rank 0 holds N connections open that send nothing, and keeps
//!   opening more (up to 4 N in all, for at most 3 s, holding the newest N)
//!   while every rank joins and exchanges; the other ranks join 300 ms
//!   late, amid the held connections. Nobody may be crowded out.
//!
//! Exits 0 on success, 3 when a wire-up call fails (printing why).

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::process::ExitCode;

use dos::pmi::{self, Client};
use dos_transport::auth;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("exchange");
    let rank: Option<usize> = std::env::var(pmi::ENV_RANK)
        .ok()
        .and_then(|s| s.parse().ok());
    if mode == "skip" && args.get(1).and_then(|s| s.parse().ok()) == rank && rank.is_some() {
        return ExitCode::SUCCESS;
    }
    match probe(mode, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let r = rank.map_or("?".to_string(), |r| r.to_string());
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("dos-pmi-probe: rank {r}: {msg}");
            ExitCode::from(3)
        }
    }
}

fn probe(mode: &str, args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    if mode == "garbage" {
        send_garbage()?;
    }
    let count = || -> usize { args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100) };
    let rank0 = std::env::var(pmi::ENV_RANK).ok().as_deref() == Some("0");
    if mode == "flood" && rank0 {
        for _ in 0..count() {
            let mut s = connect_raw()?;
            let _ = s.write_all(&[b'J'; auth::HELLO_LEN]);
        }
    }
    let mut holder = None;
    if mode == "hold" {
        if rank0 {
            let n = count();
            let mut held: std::collections::VecDeque<UnixStream> =
                (0..n).map(|_| connect_raw()).collect::<Result<_, _>>()?;
            holder = Some(std::thread::spawn(move || {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
                for _ in 0..3 * n {
                    if std::time::Instant::now() > until {
                        break;
                    }
                    match connect_raw() {
                        Ok(s) => held.push_back(s),
                        Err(_) => break,
                    }
                    held.pop_front();
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
                held
            }));
        } else {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    let _hold = holder;
    let mut c = Client::from_env()?.ok_or("not started by dosrun (DOS_PMI_ADDR unset)")?;
    let (rank, size) = (c.rank(), c.size());
    if mode == "abort" && rank == 1.min(size - 1) {
        let code: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
        let msg = args.get(2).map(String::as_str).unwrap_or("probe abort");
        c.abort(code, msg)?;
        // Like a program that goes on after asking: dosrun must stop it.
        loop {
            std::thread::park();
        }
    }
    let fd = c.shm_fd().ok_or("no DOS_SHM_FD")?;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } != 0 {
        return Err("DOS_SHM_FD is not an open, inheritable descriptor".into());
    }
    c.put(&format!("rank-{rank}"), &(rank as u64).to_le_bytes())?;
    match c.get(&format!("rank-{rank}")) {
        Err(dos::Error::KeyNotFound { .. }) => {}
        other => return Err(format!("get before the fence: {other:?}").into()),
    }
    c.fence()?;
    let mut sum = 0u64;
    for r in 0..size {
        let v = c.get(&format!("rank-{r}"))?;
        let v: [u8; 8] = v
            .as_slice()
            .try_into()
            .map_err(|_| "value of the wrong size")?;
        let v = u64::from_le_bytes(v);
        if v != r as u64 {
            return Err(format!("rank-{r} holds {v}").into());
        }
        sum += v;
    }
    match c.get("never-put") {
        Err(dos::Error::KeyNotFound { .. }) => {}
        other => return Err(format!("get of a missing key: {other:?}").into()),
    }
    c.fence()?;
    c.finalize()?;
    println!("rank {rank} of {size}: sum {sum}");
    Ok(())
}

/// A fresh connection to the node's wire-up socket.
fn connect_raw() -> Result<UnixStream, Box<dyn std::error::Error>> {
    let addr = std::env::var(pmi::ENV_PMI_ADDR)?;
    let name = addr
        .strip_prefix('@')
        .ok_or("DOS_PMI_ADDR is not abstract")?;
    Ok(UnixStream::connect_addr(&SocketAddr::from_abstract_name(
        name.as_bytes(),
    )?)?)
}

/// Sends garbage, then a proof made with a wrong secret, on fresh
/// connections; the service must close both.
fn send_garbage() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var(pmi::ENV_PMI_ADDR)?;
    let name = addr
        .strip_prefix('@')
        .ok_or("DOS_PMI_ADDR is not abstract")?;
    let connect = || UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?);
    let mut s = connect()?;
    s.write_all(&[b'G'; auth::HELLO_LEN])?;
    let mut rest = Vec::new();
    // The service sends its hello, then closes: read to the end.
    s.read_to_end(&mut rest)?;
    if rest.len() != auth::HELLO_LEN || rest[..4] != auth::HELLO_MAGIC {
        return Err(format!("unexpected answer to garbage: {rest:?}").into());
    }
    let jobid = std::env::var(pmi::ENV_JOBID)?;
    let jobid = pmi::parse_hex64(&jobid).ok_or("bad DOS_JOBID")?;
    let rank: u64 = std::env::var(pmi::ENV_RANK)?.parse()?;
    let wrong = auth::Secret::generate()?;
    let mut s = connect()?;
    let r = auth::handshake(
        &mut s,
        &wrong,
        &pmi::auth_context(jobid),
        auth::Role::Initiator,
        rank,
    );
    if r.is_ok() {
        return Err("a wrong secret was accepted".into());
    }
    Ok(())
}
