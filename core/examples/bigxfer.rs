//! Moves a lot of data between two ranks and checks every byte: messages
//! (send/recv in pieces) and one-sided puts and gets into a window.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 2 target/release/examples/bigxfer [MIB]
//! ```
//!
//! Rank 0 sends MIB mebibytes (default 64) to rank 1 in 4 MiB messages, then
//! puts MIB mebibytes into rank 1's window and gets them back; every byte follows a
//! pattern derived from its position, so a lost, duplicated or misplaced byte
//! shows. Prints `bigxfer: OK N MiB sent, M MiB put and got, T s` or the first
//! mismatch (exit status 1). Used across namespace hosts with packet loss.

use std::process::ExitCode;
use std::time::Instant;

const PIECE: usize = 4 << 20;

fn pattern(pos: u64) -> u8 {
    (pos.wrapping_mul(0x9E37_79B9) >> 13) as u8
}

fn run() -> Result<String, String> {
    let mib: usize = match std::env::args().nth(1) {
        None => 64,
        Some(a) => a
            .parse()
            .map_err(|_| format!("MIB must be a number, not {a:?}"))?,
    };
    let w = dos::init().map_err(|e| e.to_string())?;
    if w.size() != 2 {
        return Err(format!("needs 2 ranks, not {}", w.size()));
    }
    let err = |e: dos::Error| e.to_string();
    let total = mib << 20;
    let t0 = Instant::now();
    let mut buf = vec![0u8; PIECE];
    let mut off = 0usize;
    while off < total {
        let n = PIECE.min(total - off);
        if w.rank() == 0 {
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern((off + i) as u64);
            }
            w.send(&buf[..n], 1, 1).map_err(err)?;
        } else {
            w.recv(&mut buf[..n], 0, 1).map_err(err)?;
            if let Some(i) = (0..n).find(|&i| buf[i] != pattern((off + i) as u64)) {
                return Err(format!("message byte {} is wrong", off + i));
            }
        }
        off += n;
    }
    // One-sided: as much again through a window on rank 1.
    let wlen = total.max(1);
    let win = w
        .win_allocate::<u8>(if w.rank() == 1 { wlen } else { 0 })
        .map_err(err)?;
    if w.rank() == 0 {
        let src: Vec<u8> = (0..wlen).map(|i| pattern(i as u64 ^ 0x55)).collect();
        for (k, chunk) in src.chunks(PIECE).enumerate() {
            win.put(chunk, 1, k * PIECE).map_err(err)?;
        }
        win.flush(1).map_err(err)?;
        let mut back = vec![0u8; wlen];
        for (k, chunk) in back.chunks_mut(PIECE).enumerate() {
            win.get(chunk, 1, k * PIECE).map_err(err)?;
        }
        if let Some(i) = (0..wlen).find(|&i| back[i] != src[i]) {
            return Err(format!("window byte {i} is wrong after put and get"));
        }
    }
    win.free().map_err(err)?;
    Ok(format!(
        "bigxfer: OK {mib} MiB sent, {} MiB put and got, {:.1} s over {}",
        wlen >> 20,
        t0.elapsed().as_secs_f64(),
        w.transport_name()
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            if std::env::var("DOS_RANK").map_or(true, |r| r == "0") {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bigxfer: MISMATCH {e}");
            ExitCode::FAILURE
        }
    }
}
