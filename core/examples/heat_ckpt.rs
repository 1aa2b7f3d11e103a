//! The 2-D heat equation with checkpoints: survives a failure and restarts.
//!
//! The grid is a `GlobalVec<f64>` of N×N cells whose rows are split in
//! contiguous blocks over the ranks; every step swaps edge rows with the
//! neighbours and applies the 5-point stencil
//! `u' = u + a·((n + s) + (w + e) − 4u)` (a = 0.2; edges fixed: top 1,
//! left 0.5, others 0; a hot square in the middle at the start). The grid
//! is checkpointed with `dos::ckpt` every `--every K` steps (or when
//! `need_checkpoint` says so, with `--every 0`); on a restarted run
//! (`DOS_RUN_ATTEMPT` > 0, set by `dosrun --max-restarts`) it resumes from
//! the newest checkpoint, on any number of ranks, and ends with the same
//! bits as an undisturbed run.
//!
//! ```text
//! dosrun -n 4 --max-restarts 3 target/release/examples/heat_ckpt --size 256 --steps 400 --every 20
//! ```
//!
//! Rank 0 prints `heat_ckpt: restored <what>` and the time the restore
//! took after a restore, and at the end `heat_ckpt: N x N grid, T steps: sum S bits B probe P`. To test
//! recovery, `--fail-at STEP --fail-rank R` makes rank R exit with status 3
//! after step STEP on the first attempt (`--kill` instead kills it with
//! SIGKILL); `--die-in-checkpoint V --fail-rank R` makes rank R die by
//! SIGKILL in the middle of writing its L1 file of checkpoint version V on
//! the first attempt (the test hook [`Ckpt::die_during_checkpoint`]);
//! `--delay-ms D` sleeps D ms per step.

use std::error::Error;
use std::process::ExitCode;

use dos::ckpt::{Ckpt, Data, Slot};
use dos::dsm::Distribution;

const ALPHA: f64 = 0.2;
const TAG_UP: dos::Tag = 1;
const TAG_DOWN: dos::Tag = 2;
const USAGE: &str = "usage: heat_ckpt [--size N] [--steps T] [--every K] [--fail-at STEP] [--fail-rank R] [--kill] [--die-in-checkpoint V] [--delay-ms D]";

#[derive(Debug, Clone, Copy)]
struct Args {
    n: usize,
    steps: u64,
    every: u64,
    fail_at: Option<u64>,
    fail_rank: usize,
    kill: bool,
    die_in: Option<u64>,
    delay_ms: u64,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        n: 128,
        steps: 200,
        every: 10,
        fail_at: None,
        fail_rank: 0,
        kill: false,
        die_in: None,
        delay_ms: 0,
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--size" => a.n = number(&arg, it.next())?,
            "--steps" => a.steps = number(&arg, it.next())?,
            "--every" => a.every = number(&arg, it.next())?,
            "--fail-at" => a.fail_at = Some(number(&arg, it.next())?),
            "--fail-rank" => a.fail_rank = number(&arg, it.next())?,
            "--kill" => a.kill = true,
            "--die-in-checkpoint" => a.die_in = Some(number(&arg, it.next())?),
            "--delay-ms" => a.delay_ms = number(&arg, it.next())?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    if a.n < 3 {
        return Err(format!("--size must be at least 3, not {}", a.n));
    }
    Ok(a)
}

fn number<T: std::str::FromStr>(opt: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{opt} needs a value\n{USAGE}"))?;
    v.parse()
        .map_err(|_| format!("{opt}: {v:?} is not a whole number\n{USAGE}"))
}

/// Initial value of cell (`i`, `j`).
fn initial(i: usize, j: usize, n: usize) -> f64 {
    let hot = n / 4..n - n / 4;
    if i == 0 {
        1.0
    } else if j == 0 {
        0.5
    } else if i == n - 1 || j == n - 1 {
        0.0
    } else if hot.contains(&i) && hot.contains(&j) {
        2.0
    } else {
        0.0
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("heat_ckpt: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heat_ckpt: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<(), Box<dyn Error>> {
    let world = dos::init()?;
    let (rank, size, n) = (world.rank(), world.size(), a.n);
    let mut ck = Ckpt::new(&world)?;
    if let (Some(v), true) = (a.die_in, rank == a.fail_rank) {
        ck.die_during_checkpoint(v);
    }
    // Contiguous blocks of whole rows: one block of `rows` rows per rank.
    let rows = n.div_ceil(size);
    let mut u = world.global_vec::<f64>(n * n, Distribution::BlockCyclic { block: rows * n })?;
    let t0 = std::time::Instant::now();
    let restored = ck.recover(&mut [Slot::global(&u)])?;
    let mut step = match restored {
        Some((_, v)) => {
            if rank == 0 {
                println!("heat_ckpt: restored {}", ck.restored().unwrap_or("?"));
                println!(
                    "heat_ckpt: the restore took {:.1} ms",
                    t0.elapsed().as_secs_f64() * 1e3
                );
            }
            v
        }
        None => {
            u.par_for_each_local(|g, x| *x = initial(g / n, g % n, n));
            u.sync()?;
            0
        }
    };
    let lo = (rank * rows).min(n);
    let hi = ((rank + 1) * rows).min(n);
    let mine = hi - lo;
    let up = (rank > 0 && mine > 0).then(|| rank - 1);
    let down = (hi < n && mine > 0).then_some(rank + 1);
    let attempt = world.config().run_attempt;
    let mut above = vec![0.0; n];
    let mut below = vec![0.0; n];
    let mut next = vec![0.0; mine * n];
    while step < a.steps {
        let cur = u.local_mut();
        // Halo rows from the neighbours.
        if let Some(p) = up {
            world.sendrecv(&cur[..n], p, TAG_UP, &mut above, p, TAG_DOWN)?;
        }
        if let Some(q) = down {
            world.sendrecv(
                &cur[(mine - 1) * n..mine * n],
                q,
                TAG_DOWN,
                &mut below,
                q,
                TAG_UP,
            )?;
        }
        for li in 0..mine {
            let i = lo + li;
            for j in 0..n {
                let c = cur[li * n + j];
                next[li * n + j] = if i == 0 || i == n - 1 || j == 0 || j == n - 1 {
                    c
                } else {
                    let nn = if li == 0 {
                        above[j]
                    } else {
                        cur[(li - 1) * n + j]
                    };
                    let ss = if li == mine - 1 {
                        below[j]
                    } else {
                        cur[(li + 1) * n + j]
                    };
                    c + ALPHA * ((nn + ss) + (cur[li * n + j - 1] + cur[li * n + j + 1]) - 4.0 * c)
                };
            }
        }
        cur.copy_from_slice(&next);
        step += 1;
        if a.delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(a.delay_ms));
        }
        let due = if a.every > 0 {
            step % a.every == 0
        } else {
            ck.need_checkpoint()?
        };
        if due {
            ck.checkpoint("heat", step, &[Data::global(&mut u)])?;
        }
        if attempt == 0 && a.fail_at == Some(step) && rank == a.fail_rank {
            eprintln!("heat_ckpt: rank {rank} fails after step {step} (as asked)");
            if a.kill {
                // SAFETY: sends a signal to this process.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            std::process::exit(3);
        }
    }
    u.sync()?;
    if rank == 0 {
        let mut all = vec![0.0; n * n];
        u.get_range(0, &mut all)?;
        let sum = all.chunks(n).map(|r| r.iter().sum::<f64>()).sum::<f64>();
        println!(
            "heat_ckpt: {n} x {n} grid, {} steps: sum {sum:.17e} bits {:016x} probe {:.17e}",
            a.steps,
            sum.to_bits(),
            all[(n / 2) * n + n / 2]
        );
    }
    u.sync()?;
    u.free()?;
    Ok(())
}
