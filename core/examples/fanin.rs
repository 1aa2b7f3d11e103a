//! All-to-one traffic: every rank but 0 sends bursts of messages to rank 0 at
//! once, and rank 0 takes them in any order and checks every byte.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 16 --transports roce target/release/examples/fanin [ROUNDS [MSGS [BYTES]]]
//! ```
//!
//! In each of ROUNDS rounds (default 20), started together by a barrier, every
//! rank but 0 starts MSGS (default 16) sends of BYTES bytes (default 32768, at
//! least 8) to rank 0 and waits for them; rank 0 receives `(N-1) * MSGS`
//! messages from any source. The receiver is the bottleneck: with many ranks on
//! few cores its socket is where a network transport drops datagrams and must
//! retransmit. Rank 0 prints `fanin: OK N ranks, R rounds of M messages of B
//! bytes, T s` or the first wrong message (exit status 1).

use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: fanin [ROUNDS [MSGS [BYTES]]]";

/// Byte `i` of message `k` of round `r` from rank `src`.
fn pattern(src: usize, r: usize, k: usize, i: usize) -> u8 {
    (src.wrapping_mul(31) ^ r.wrapping_mul(7) ^ k.wrapping_mul(13) ^ i) as u8
}

fn message(src: usize, r: usize, k: usize, bytes: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..bytes).map(|i| pattern(src, r, k, i)).collect();
    m[..4].copy_from_slice(&(k as u32).to_le_bytes());
    m[4..8].copy_from_slice(&(src as u32).to_le_bytes());
    m
}

fn arg(it: &mut impl Iterator<Item = String>, default: usize, min: usize) -> Result<usize, String> {
    match it.next() {
        None => Ok(default),
        Some(a) if a == "-h" || a == "--help" => Err(USAGE.to_string()),
        Some(a) => match a.parse() {
            Ok(v) if v >= min => Ok(v),
            _ => Err(format!(
                "{a:?} is not a whole number of at least {min}\n{USAGE}"
            )),
        },
    }
}

fn run() -> Result<String, String> {
    let mut it = std::env::args().skip(1);
    let rounds = arg(&mut it, 20, 1)?;
    let msgs = arg(&mut it, 16, 1)?;
    let bytes = arg(&mut it, 32768, 8)?;
    if let Some(extra) = it.next() {
        return Err(format!("unexpected argument {extra:?}\n{USAGE}"));
    }
    let world = dos::init().map_err(|e| e.to_string())?;
    let (rank, size) = (world.rank(), world.size());
    let e = |e: dos::Error| format!("rank {rank}: {e}");
    let start = Instant::now();
    for r in 0..rounds {
        world.barrier().map_err(e)?;
        let tag = r as dos::Tag;
        if rank == 0 {
            let mut buf = vec![0u8; bytes];
            for _ in 0..(size - 1) * msgs {
                let st = world.recv(&mut buf, dos::ANY_SOURCE, tag).map_err(e)?;
                let k = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                let src = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
                if st.len != bytes || src != st.source || k >= msgs {
                    return Err(format!(
                        "round {r}: a message of {} bytes from rank {} says it is message {k} from rank {src}: MISMATCH",
                        st.len, st.source
                    ));
                }
                if buf != message(src, r, k, bytes) {
                    return Err(format!(
                        "round {r}: message {k} from rank {src} has wrong bytes: MISMATCH"
                    ));
                }
            }
        } else {
            let out: Vec<Vec<u8>> = (0..msgs).map(|k| message(rank, r, k, bytes)).collect();
            dos::scope(|s| {
                let reqs = out
                    .iter()
                    .map(|m| world.isend(s, m, 0, tag))
                    .collect::<dos::Result<Vec<_>>>()?;
                dos::Request::wait_all(reqs).map(|_| ())
            })
            .map_err(e)?;
        }
    }
    world.barrier().map_err(e)?;
    let secs = start.elapsed().as_secs_f64();
    world.finalize().map_err(e)?;
    Ok(if rank == 0 {
        format!("fanin: OK {size} ranks, {rounds} rounds of {msgs} messages of {bytes} bytes, {secs:.2} s")
    } else {
        String::new()
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            if !line.is_empty() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fanin: {e}");
            ExitCode::FAILURE
        }
    }
}
