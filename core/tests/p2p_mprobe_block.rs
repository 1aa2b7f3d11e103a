//! A matched probe (`mprobe`) that blocks must not lose a message.
//!
//! Before it sleeps, a waiting rank asks its condition once more (so that a
//! wake-up between its last poll and its sleep cannot be missed). For
//! `mprobe` that condition takes the matched message out of the queue; the
//! wait loop used to ask it again after it had held, which took a second
//! message and dropped the first. `p2pcheck`'s `mprobe_all_to_one` saw this
//! as "message N out of order" (its predecessor gone) about 1 run in 100, or
//! as a hang when the lost message was the last.
//!
//! Here the waits block at once (no spinning, no yielding) and the messages
//! come in pairs, so that a pair often arrives just as the receiver goes to
//! sleep. The soak repeats it:
//!
//! ```text
//! cargo test -p dos --test p2p_mprobe_block -- --ignored
//! ```

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dos::config::Config;
use dos::testing::run_cluster_with;
use dos::{ANY_SOURCE, ANY_TAG};

/// Waits that block at once, so that every idle wait goes to sleep.
fn blocking() -> Config {
    Config {
        spin_us: Some(0),
        yield_us: Some(0),
        ..Config::from_env().expect("valid DOS_* tunables")
    }
}

/// Aborts the process if `done` is not set within `limit`: a lost last
/// message leaves the receiver waiting forever.
fn watchdog(limit: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while !d.load(Ordering::Relaxed) {
            if t0.elapsed() > limit {
                let _ = writeln!(
                    std::io::stderr(),
                    "mprobe lost a message: still waiting after {limit:?}"
                );
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    done
}

/// Rank 1 sends `pairs` pairs of small messages (tags counting up), a short
/// pause after each pair; rank 0 takes them with `mprobe` + `mrecv` and
/// checks that none is missing.
fn pairs_over_tcp(pairs: usize, pause_us: u64) {
    let done = watchdog(Duration::from_secs(120));
    let r = run_cluster_with(&[1, 1], blocking(), |w| -> Result<(), String> {
        let n = 2 * pairs;
        if w.rank() == 1 {
            for i in 0..n {
                w.send(&(i as u64).to_le_bytes(), 0, i as i32)
                    .map_err(|e| e.to_string())?;
                if i % 2 == 1 {
                    // A pause about as long as the receiver's idle round.
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(pause_us) {
                        std::hint::spin_loop();
                    }
                }
            }
        } else {
            for i in 0..n {
                let msg = w.mprobe(ANY_SOURCE, ANY_TAG).map_err(|e| e.to_string())?;
                let mut b = [0u8; 8];
                let st = w.mrecv(msg, &mut b).map_err(|e| e.to_string())?;
                if st.tag != i as i32 || u64::from_le_bytes(b) != i as u64 {
                    // A panic aborts the job (rank 1 would wait in the barrier).
                    // (Straight to stderr: the harness's captured output dies with the process.)
                    let e = format!("message {i} missing: mprobe gave tag {}", st.tag);
                    let _ = writeln!(std::io::stderr(), "{e}");
                    panic!("{e}");
                }
            }
        }
        w.barrier().map_err(|e| e.to_string())
    });
    done.store(true, Ordering::Relaxed);
    for (rank, x) in r.into_iter().enumerate() {
        x.unwrap_or_else(|e| panic!("rank {rank}: {e}"));
    }
}

#[test]
fn a_blocking_mprobe_loses_no_message() {
    // Before the fix each of these lost a message in about 3 runs out of 5.
    for pause_us in [20, 40, 60] {
        pairs_over_tcp(2000, pause_us);
    }
}

#[test]
#[ignore = "soak: many more pairs"]
fn a_blocking_mprobe_loses_no_message_soak() {
    for _ in 0..20 {
        for pause_us in [10, 20, 40, 60, 100] {
            pairs_over_tcp(5000, pause_us);
        }
    }
}
