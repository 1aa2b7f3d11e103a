//! `dosckpt`: the checkpoints `dos::ckpt` keeps in a directory, and their removal.
//!
//! ```text
//! dosckpt list [DIR]                 # DIR: $DOS_CKPT_DIR, else /dev/shm (or an L4 target)
//! dosckpt rm ID [NAME VERSION] [--dir DIR]
//! ```
//!
//! `list` prints one line per checkpoint: the job id (`DOS_CKPT_ID`), name
//! and version, state (`complete`, `failed`, `writing`), levels (`L1+L2`,
//! `L4`), ranks, the bytes the ranks' indexes report and what the
//! directory takes on disk here. `rm ID` removes all of a job's
//! checkpoints in DIR; `rm ID NAME VERSION` one of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "dosckpt",
    version,
    about = "List and remove dos::ckpt checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the checkpoints in DIR ($DOS_CKPT_DIR, else /dev/shm).
    List {
        /// The directory (node-local L1, or an L4 target).
        dir: Option<PathBuf>,
    },
    /// Remove a job's checkpoints, or one of them.
    Rm {
        /// The job id (DOS_CKPT_ID).
        id: String,
        /// Only this checkpoint's name ...
        name: Option<String>,
        /// ... and version.
        version: Option<u64>,
        /// The directory ($DOS_CKPT_DIR, else /dev/shm).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn default_dir() -> PathBuf {
    std::env::var_os("DOS_CKPT_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::List { dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            match dos::ckpt::catalog::list(&dir) {
                Ok(v) if v.is_empty() => {
                    println!("no checkpoints in {}", dir.display());
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    println!(
                        "{:<20} {:<24} {:<9} {:<12} {:>5} {:>11} {:>11}",
                        "ID", "CHECKPOINT", "STATE", "LEVELS", "RANKS", "DATA", "ON DISK"
                    );
                    for l in v {
                        println!(
                            "{:<20} {:<24} {:<9} {:<12} {:>5} {:>11} {:>11}",
                            l.id,
                            format!("{} v{}", l.name, l.version),
                            l.state_name(),
                            l.level_names(),
                            l.ranks,
                            size(l.bytes),
                            size(l.on_disk)
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dosckpt: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Rm {
            id,
            name,
            version,
            dir,
        } => {
            let dir = dir.unwrap_or_else(default_dir);
            let only = match (&name, version) {
                (Some(n), Some(v)) => Some((n.as_str(), v)),
                (None, None) => None,
                _ => {
                    eprintln!(
                        "dosckpt: rm ID [NAME VERSION]: give both a name and a version, or neither"
                    );
                    return ExitCode::from(2);
                }
            };
            match dos::ckpt::catalog::remove(&dir, &id, only) {
                Ok(paths) => {
                    for p in paths {
                        println!("removed {}", p.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dosckpt: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
