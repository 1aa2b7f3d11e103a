//! Checks remote procedure calls under a real launcher: every rank calls
//! every rank (all calls in flight at once), nested calls, failing,
//! panicking and unknown handlers, undecodable arguments, plain-data calls,
//! one-way notifications, and a rank that computes while it is called.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/rpccheck
//! ```
//!
//! Prints `rpccheck: OK N ranks` or the first mismatch, and exits non-zero
//! on a mismatch.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dos::{Error, RpcFailure, World};

/// Notifications each rank sends each rank.
const NOTES: u64 = 200;

/// Runs the checks on `w`; `Ok` with nothing to say, or the first mismatch.
pub fn check(w: &World) -> Result<(), String> {
    let (n, me) = (w.size(), w.rank());
    let err = |e: Error| e.to_string();
    let rpc = w.rpc();
    rpc.register("add", |_ctx, (a, b): (u64, u64)| Ok::<_, String>(a + b));
    rpc.register("echo", |ctx, v: Vec<u8>| Ok::<_, String>((ctx.source(), v)));
    rpc.register("fail", |_ctx, ()| Err::<(), _>("refused"));
    rpc.register("boom", |_ctx, ()| -> Result<(), String> {
        panic!("handler panic (expected by rpccheck)")
    });
    rpc.register_pod("dot", |_ctx, xs: &[f64]| {
        Ok::<_, String>(vec![xs.iter().map(|x| x * x).sum::<f64>()])
    });
    // Nested: calls back into the caller (which serves it while it waits).
    rpc.register("relay", move |ctx, x: u64| {
        let there: usize = ctx
            .call(ctx.source(), "rank", &())
            .map_err(|e| e.to_string())?;
        if there != ctx.source() {
            return Err(format!("the caller says it is rank {there}"));
        }
        Ok(x)
    });
    rpc.register("rank", move |_ctx, ()| Ok::<_, String>(me));
    let notes: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let nn = notes.clone();
    rpc.register("note", move |ctx, k: u64| {
        *nn.lock().unwrap().entry(ctx.source()).or_default() += k;
        Ok::<_, String>(())
    });
    let nn = notes.clone();
    rpc.register("notes_from", move |ctx, ()| {
        Ok::<_, String>(nn.lock().unwrap().get(&ctx.source()).copied().unwrap_or(0))
    });
    w.barrier().map_err(err)?;

    // 1. Every rank calls every rank, all calls in flight at once.
    let pending: Vec<_> = (0..n)
        .flat_map(|t| (0..10u64).map(move |k| (t, k)))
        .map(|(t, k)| {
            rpc.call_async::<_, u64>(t, "add", &(t as u64 * 100, k))
                .map(|p| (t, k, p))
        })
        .collect::<Result<_, _>>()
        .map_err(err)?;
    for (t, k, p) in pending {
        let got = p.wait().map_err(err)?;
        if got != t as u64 * 100 + k {
            return Err(format!(
                "add on rank {t} gave {got}, not {}",
                t as u64 * 100 + k
            ));
        }
    }
    // 2. Payloads of many sizes come back whole, with the caller's rank.
    for t in 0..n {
        for len in [0usize, 1, 1000, 30_000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7 + me) as u8).collect();
            let (src, back): (usize, Vec<u8>) = rpc.call(t, "echo", &v).map_err(err)?;
            if src != me || back != v {
                return Err(format!("echo of {len} bytes on rank {t} came back wrong"));
            }
        }
    }
    // 3. Failures are typed, and each server keeps serving.
    let t = (me + 1) % n;
    match rpc.call::<_, ()>(t, "fail", &()) {
        Err(Error::Rpc {
            failure: RpcFailure::Failed(m),
            rank,
            ..
        }) if m == "refused" && rank == t => {}
        other => return Err(format!("fail on rank {t}: {other:?}")),
    }
    match rpc.call::<_, ()>(t, "boom", &()) {
        Err(Error::Rpc {
            failure: RpcFailure::Panicked(m),
            ..
        }) if m.contains("expected by rpccheck") => {}
        other => return Err(format!("boom on rank {t}: {other:?}")),
    }
    match rpc.call::<_, ()>(t, "no such handler", &()) {
        Err(Error::Rpc {
            failure: RpcFailure::UnknownHandler,
            ..
        }) => {}
        other => return Err(format!("unknown handler on rank {t}: {other:?}")),
    }
    match rpc.call::<_, u64>(t, "add", &()) {
        Err(Error::Rpc {
            failure: RpcFailure::BadArguments(_),
            ..
        }) => {}
        other => return Err(format!("bad arguments on rank {t}: {other:?}")),
    }
    let d: Vec<f64> = rpc.call_pod(t, "dot", &[1.0f64, 2.0, 3.0]).map_err(err)?;
    if d != [14.0] {
        return Err(format!("dot on rank {t} gave {d:?}"));
    }
    // 4. Nested: the target calls back into this rank while it serves us.
    let x: u64 = rpc.call(t, "relay", &42u64).map_err(err)?;
    if x != 42 {
        return Err(format!("relay on rank {t} gave {x}"));
    }
    // 5. One-way notifications, then a call after them in the same order.
    for t in 0..n {
        for _ in 0..NOTES {
            rpc.notify(t, "note", &1u64).map_err(err)?;
        }
    }
    for t in 0..n {
        let got: u64 = rpc.call(t, "notes_from", &()).map_err(err)?;
        if got != NOTES {
            return Err(format!("rank {t} saw {got} of my {NOTES} notifications"));
        }
    }
    let all: Vec<usize> = rpc.call_all("rank", &()).map_err(err)?;
    if all != (0..n).collect::<Vec<_>>() {
        return Err(format!("call_all gave {all:?}"));
    }
    // 6. The last rank computes (outside dos) while the others call it: its
    // service thread answers.
    w.barrier().map_err(err)?;
    let last = n - 1;
    if n > 1 {
        let done = AtomicBool::new(false);
        if me == last {
            let t0 = Instant::now();
            let mut spin = 0u64;
            // Until every other rank called (they tell us with a notification).
            while notes.lock().unwrap().values().sum::<u64>() < (n as u64) * NOTES + (n as u64 - 1)
                && t0.elapsed() < Duration::from_secs(30)
            {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            done.store(t0.elapsed() < Duration::from_secs(30), Ordering::SeqCst);
        } else {
            for k in 0..20u64 {
                let s: u64 = rpc.call(last, "add", &(k, 1u64)).map_err(err)?;
                if s != k + 1 {
                    return Err(format!("add on computing rank {last} gave {s}"));
                }
            }
            rpc.notify(last, "note", &1u64).map_err(err)?;
            done.store(true, Ordering::SeqCst);
        }
        w.barrier().map_err(err)?;
        if !done.load(Ordering::SeqCst) {
            return Err("the computing rank was not served by its service thread".into());
        }
    }
    w.barrier().map_err(err)?;
    Ok(())
}

#[allow(dead_code)]
fn main() -> ExitCode {
    // The "boom" handler's panic is part of the test: do not print it.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .unwrap_or_default();
        if !msg.contains("expected by rpccheck") {
            default(info);
        }
    }));
    let w = match dos::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("rpccheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match check(&w) {
        Ok(()) => {
            if w.rank() == 0 {
                println!("rpccheck: OK {} ranks", w.size());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpccheck: rank {}: MISMATCH {e}", w.rank());
            ExitCode::FAILURE
        }
    }
}
