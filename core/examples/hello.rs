//! Hello, world: every rank says hello, then rank 0 checks that every rank
//! took part.
//!
//! Shows [`dos::init`], the rank and size of the world, a `gather` to rank 0
//! and a `barrier`.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/examples/hello
//! ```
//!
//! Each rank prints `hello from rank R of N` (the lines come in any order),
//! then rank 0 prints `hello: N ranks OK`.
//!
//! Two options exist for the launcher's tests, which need a real dos program
//! that fails in a known way:
//!
//! * `--pid-dir DIR`: each rank writes its pid to `DIR/pid.RANK` once it has
//!   joined the job;
//! * `--fail RANK:HOW`: once every rank has joined (after a barrier), rank
//!   RANK fails while the others wait in a second barrier. HOW is `exit`
//!   (exit status 3), `abort` (`World::abort` with code 3), `kill` (SIGKILL to
//!   itself) or `hang` (it waits forever, and so does the job, until
//!   `dosrun --timeout` ends it);
//! * `--transports`: each rank says which transports it uses
//!   (`hello from rank R of N over shm+tcp`).

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

/// How `--fail` makes a rank fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Exit,
    Abort,
    Kill,
    Hang,
}

#[derive(Debug, Default)]
struct Args {
    pid_dir: Option<PathBuf>,
    fail: Option<(usize, How)>,
    transports: bool,
}

/// A tag no rank sends on.
const NEVER_SENT: dos::Tag = 0x7fff_0000;

const USAGE: &str =
    "usage: hello [--pid-dir DIR] [--fail RANK:exit|abort|kill|hang] [--transports]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--transports" => a.transports = true,
            "--pid-dir" => {
                let d = it.next().ok_or("--pid-dir needs a directory")?;
                a.pid_dir = Some(PathBuf::from(d));
            }
            "--fail" => {
                let v = it.next().ok_or("--fail needs RANK:HOW")?;
                let (rank, how) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--fail {v}: expected RANK:HOW"))?;
                let rank = rank
                    .parse()
                    .map_err(|_| format!("--fail {v}: bad rank {rank:?}"))?;
                let how = match how {
                    "exit" => How::Exit,
                    "abort" => How::Abort,
                    "kill" => How::Kill,
                    "hang" => How::Hang,
                    _ => return Err(format!("--fail {v}: HOW is exit, abort, kill or hang")),
                };
                a.fail = Some((rank, how));
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args(std::env::args().skip(1))?;
    let world = dos::init()?;
    let (rank, size) = (world.rank(), world.size());
    if let Some((r, _)) = args.fail {
        if r >= size {
            return Err(format!("--fail: rank {r} is not in a job of {size}").into());
        }
    }

    if args.transports {
        println!(
            "hello from rank {rank} of {size} over {}",
            world.transport_name()
        );
    } else {
        println!("hello from rank {rank} of {size}");
    }

    if let Some(dir) = &args.pid_dir {
        // Write then rename, so a reader never sees a partial file.
        let tmp = dir.join(format!("tmp.{rank}"));
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, dir.join(format!("pid.{rank}")))?;
    }

    // Rank 0 learns every rank's number; each must appear exactly once.
    let mut all = vec![0u64; if rank == 0 { size } else { 0 }];
    world.gather(&[rank as u64], &mut all, 0)?;

    if let Some((r, how)) = args.fail {
        world.barrier()?;
        if r == rank {
            fail(&world, how);
        }
        // The failing rank never joins: dosrun has to stop us.
        world.barrier()?;
        return Err("the failing rank joined the barrier".into());
    }

    world.barrier()?;
    if rank == 0 {
        let mut seen = vec![false; size];
        for &r in &all {
            match seen.get_mut(r as usize) {
                Some(s) if !*s => *s = true,
                _ => return Err(format!("gathered ranks {all:?}: MISMATCH").into()),
            }
        }
        println!("hello: {size} ranks OK");
    }
    world.finalize()?;
    Ok(())
}

/// Fails as asked, without returning.
fn fail(world: &dos::World, how: How) -> ! {
    let rank = world.rank();
    match how {
        How::Exit => {
            eprintln!("hello: rank {rank} exits with status 3 as asked");
            std::process::exit(3)
        }
        How::Abort => world.abort(3, &format!("hello: rank {rank} aborts as asked")),
        How::Kill => {
            // SAFETY: raise only sends a signal to this process; SIGKILL ends it
            // at once, so nothing runs after it.
            unsafe { libc::raise(libc::SIGKILL) };
            unreachable!("SIGKILL did not end the process")
        }
        How::Hang => {
            // Wait in dos for a message nobody sends.
            let mut b = [0u8; 1];
            let _ = world.recv(&mut b, dos::ANY_SOURCE, NEVER_SENT);
            loop {
                std::thread::park();
            }
        }
    }
}
