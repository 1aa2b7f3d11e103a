//! Checks the MPI point-to-point features of issue 15 under a real launcher:
//! synchronous sends around a ring, matched probes on ANY_SOURCE with a
//! wildcard receive trying to steal the matched message, `wait_some` over
//! receives from every rank, a persistent ring exchange repeated many times,
//! MINLOC/MAXLOC against a serial computation, and a matrix column sent with
//! a strided layout into another column.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/p2pcheck
//! ```
//!
//! Prints `p2pcheck: OK N ranks` or the first mismatch, and exits non-zero
//! on a mismatch.

use std::process::ExitCode;

use dos::op::{MaxLoc, MinLoc, ValueIndex};
use dos::{Persistent, Request, World, ANY_SOURCE, ANY_TAG};

type Check = Result<(), String>;

fn err(e: dos::Error) -> String {
    e.to_string()
}

fn payload(src: usize, seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (src * 31 + seq * 7 + i) as u8).collect()
}

fn ssend_ring(w: &World) -> Check {
    let (me, n) = (w.rank(), w.size());
    let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
    for (step, len) in [0usize, 5, 3000, 100_000].into_iter().enumerate() {
        let mut rb = vec![0u8; len];
        dos::scope(|s| -> Check {
            let r = w.irecv(s, &mut rb, prev, step as i32).map_err(err)?;
            w.ssend(&payload(me, step, len), next, step as i32)
                .map_err(err)?;
            r.wait().map_err(err)?;
            Ok(())
        })?;
        if rb != payload(prev, step, len) {
            return Err(format!("rank {me}: ssend step {step} from {prev} garbled"));
        }
    }
    Ok(())
}

fn mprobe_all_to_one(w: &World) -> Check {
    const K: usize = 8;
    let (me, n) = (w.rank(), w.size());
    let len = |seq: usize| [0, 17, 50_000, 2000][seq % 4];
    if me != 0 {
        for seq in 0..K {
            w.send(&payload(me, seq, len(seq)), 0, seq as i32)
                .map_err(err)?;
        }
        return Ok(());
    }
    let total = (n - 1) * K;
    let mut next = vec![0usize; n];
    let mut check = |src: usize, tag: i32, data: &[u8]| -> Check {
        let seq = tag as usize;
        if seq != next[src] || data != payload(src, seq, len(seq)) {
            return Err(format!(
                "rank 0: message {seq} from {src} out of order or garbled"
            ));
        }
        next[src] += 1;
        Ok(())
    };
    let mut got = 0;
    while got < total {
        let msg = w.mprobe(ANY_SOURCE, ANY_TAG).map_err(err)?;
        let st = msg.status();
        let mut buf = vec![0u8; st.len];
        if got + 1 < total {
            let mut thief = vec![0u8; 60_000];
            let tst = dos::scope(|s| -> Result<dos::Status, String> {
                let t = w.irecv(s, &mut thief, ANY_SOURCE, ANY_TAG).map_err(err)?;
                w.mrecv(msg, &mut buf).map_err(err)?;
                t.wait().map_err(err)
            })?;
            check(st.source, st.tag, &buf)?;
            check(tst.source, tst.tag, &thief[..tst.len])?;
            got += 2;
        } else {
            w.mrecv(msg, &mut buf).map_err(err)?;
            check(st.source, st.tag, &buf)?;
            got += 1;
        }
    }
    Ok(())
}

fn wait_some_from_all(w: &World) -> Check {
    let (me, n) = (w.rank(), w.size());
    let mut bufs = vec![[0u64; 2]; n];
    let msgs: Vec<[u64; 2]> = (0..n).map(|d| [me as u64, d as u64]).collect();
    dos::scope(|s| -> Check {
        let mut reqs = Vec::new();
        for (src, b) in bufs.iter_mut().enumerate() {
            reqs.push(w.irecv(s, b, src, 11).map_err(err)?);
        }
        let mut sends = Vec::new();
        for (d, m) in msgs.iter().enumerate() {
            sends.push(w.isend(s, m, d, 11).map_err(err)?);
        }
        let mut left = n;
        while left > 0 {
            let done = Request::wait_some(&mut reqs);
            if done.is_empty() {
                return Err(format!("rank {me}: wait_some returned nothing"));
            }
            for (_, r) in done {
                r.map_err(err)?;
                left -= 1;
            }
        }
        Request::wait_all(sends).map_err(err)?;
        Ok(())
    })?;
    for (src, b) in bufs.iter().enumerate() {
        if *b != [src as u64, me as u64] {
            return Err(format!("rank {me}: wait_some got {b:?} from {src}"));
        }
    }
    Ok(())
}

fn persistent_ring(w: &World) -> Check {
    let (me, n) = (w.rank(), w.size());
    let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
    let mut out = vec![0u64; 9000];
    let mut inb = vec![0u64; 9000];
    dos::scope(|s| -> Check {
        let mut send = w.send_init(s, &mut out, next, 5).map_err(err)?;
        let mut recv = w.recv_init(s, &mut inb, prev, 5).map_err(err)?;
        for step in 0..20u64 {
            send.data_mut().map_err(err)?.fill(step * 100 + me as u64);
            Persistent::start_all([&mut recv, &mut send]).map_err(err)?;
            Persistent::wait_all([&mut send, &mut recv]).map_err(err)?;
            let want = step * 100 + prev as u64;
            if recv.data().map_err(err)?.iter().any(|&x| x != want) {
                return Err(format!("rank {me}: persistent step {step} garbled"));
            }
        }
        Ok(())
    })
}

fn minmaxloc(w: &World) -> Check {
    let (me, n) = (w.rank(), w.size());
    let f = |r: usize, i: usize| ((r * 7 + i * 3) % 5) as f64;
    let mine: Vec<ValueIndex<f64>> = (0..100)
        .map(|i| ValueIndex::new(f(me, i), me as i32))
        .collect();
    let mut lo = vec![ValueIndex::default(); 100];
    let mut hi = vec![ValueIndex::default(); 100];
    w.allreduce(&mine, &mut lo, MinLoc).map_err(err)?;
    w.allreduce(&mine, &mut hi, MaxLoc).map_err(err)?;
    for i in 0..100 {
        let (mut l, mut h) = ((f(0, i), 0), (f(0, i), 0));
        for r in 1..n {
            if f(r, i) < l.0 {
                l = (f(r, i), r as i32);
            }
            if f(r, i) > h.0 {
                h = (f(r, i), r as i32);
            }
        }
        if (lo[i].value, lo[i].index) != l || (hi[i].value, hi[i].index) != h {
            return Err(format!("rank {me}: MINLOC/MAXLOC element {i} wrong"));
        }
    }
    Ok(())
}

fn column(w: &World) -> Check {
    use dos::datatype::Vector;
    let (me, n) = (w.rank(), w.size());
    let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
    let (rows, cols) = (3000, 5);
    let a: Vec<u32> = (0..rows * cols)
        .map(|i| (me * 100_000 + i) as u32)
        .collect();
    let col = Vector {
        count: rows,
        blocklen: 1,
        stride: cols,
    };
    let mut b = vec![0u32; rows * cols];
    let mut packed = vec![0u32; rows];
    dos::scope(|s| -> Check {
        let r = w.irecv(s, &mut packed, prev, 21).map_err(err)?;
        w.send_layout(&a, &col.offset(me % cols), next, 21)
            .map_err(err)?;
        r.wait().map_err(err)?;
        Ok(())
    })?;
    // To itself, into column 1 (the send is nonblocking: a large message to
    // oneself completes only once received).
    dos::scope(|s| -> Check {
        let r = w.isend(s, &packed, me, 22).map_err(err)?;
        w.recv_layout(&mut b, &col.offset(1), me, 22).map_err(err)?;
        r.wait().map_err(err)?;
        Ok(())
    })?;
    for i in 0..rows {
        let want = (prev * 100_000 + i * cols + prev % cols) as u32;
        if packed[i] != want || b[i * cols + 1] != want || b[i * cols] != 0 {
            return Err(format!("rank {me}: column element {i} wrong"));
        }
    }
    Ok(())
}

/// Runs every check on `w`, with a barrier after each; the first mismatch.
pub fn check_all(w: &World) -> Check {
    let checks: [fn(&World) -> Check; 6] = [
        ssend_ring,
        mprobe_all_to_one,
        wait_some_from_all,
        persistent_ring,
        minmaxloc,
        column,
    ];
    for c in checks {
        c(w).and_then(|()| w.barrier().map_err(err))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let w = match dos::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("p2pcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(msg) = check_all(&w) {
        eprintln!("p2pcheck: MISMATCH {msg}");
        return ExitCode::FAILURE;
    }
    if w.rank() == 0 {
        println!("p2pcheck: OK {} ranks", w.size());
    }
    ExitCode::SUCCESS
}
