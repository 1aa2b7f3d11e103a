//! The command line of `dosbench`, with clap (derive).
//!
//! `dosbench BENCH[,BENCH...]|all [OPTIONS]` runs benchmarks; other first
//! words are commands (`hello`, `compare`, `rpc`, `dsm`, `raw-tcp`, `help`).
//! A benchmark list is no command name: clap hands it over as an external
//! subcommand, and [`parse`] reads its options with the same `RunFlags`
//! that `rpc`, `dsm` and `raw-tcp` use. Every `--help` prints the one usage
//! text ([`usage`]), which ends with the list of benchmarks.

use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::io::{IoOptions, Pattern};
use crate::md::MdOptions;
use crate::rawtcp;
use crate::sched::Bench;
use crate::suite::Options;
use crate::{Error, Result};

/// What `dosbench` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run benchmarks under a launcher.
    Run {
        /// In order.
        benches: Vec<Bench>,
        /// Sizes and counts.
        opts: Options,
        /// JSON lines instead of tables.
        json: bool,
    },
    /// Only initialize and finalize (to time job start-up).
    Hello,
    /// Compare dos and MPI results files.
    Compare {
        /// Files of `--json` output.
        files: Vec<PathBuf>,
    },
    /// Serve one raw TCP baseline client (`raw-tcp serve ADDR:PORT`).
    RawTcpServe {
        /// `HOST:PORT` to listen on (port 0 picks a free one).
        addr: String,
    },
    /// Measure raw TCP latency and bandwidth against a `raw-tcp serve`
    /// (`raw-tcp ADDR:PORT [options]`).
    RawTcp {
        /// The server's `HOST:PORT`.
        addr: String,
        /// Sizes and counts (the `latency` and `bw` schedules).
        opts: Options,
        /// JSON lines instead of tables.
        json: bool,
    },
    /// Global arrays and the distributed lock (dos only).
    Dsm {
        /// `--iters`, `--warmup`.
        opts: Options,
        /// JSON lines instead of a table.
        json: bool,
    },
    /// Remote procedure calls between ranks 0 and 1 (dos only).
    Rpc {
        /// `--iters`, `--warmup`, `--window`.
        opts: Options,
        /// JSON lines instead of a table.
        json: bool,
    },
    /// The IOR-shaped file benchmark (`io [OPTIONS]`).
    Io {
        /// Sizes, pattern, repetitions.
        opts: IoOptions,
        /// A JSON line instead of a table.
        json: bool,
    },
    /// Checkpoint bandwidth per level (`ckpt [OPTIONS]`, dos only).
    Ckpt {
        /// Bytes per rank, repetitions, directory.
        size: usize,
        /// Repetitions.
        reps: usize,
        /// The L1 directory.
        dir: Option<String>,
    },
    /// The mdtest-shaped metadata benchmark (`md [OPTIONS]`).
    Md {
        /// Files, placement, repetitions.
        opts: MdOptions,
        /// A JSON line instead of a table.
        json: bool,
    },
    /// Print the usage.
    Help,
}

/// What follows the list of commands in the usage.
const NOTES: &str = "\
Run under `dosrun -n 2` (or `mpirun -n 2` for the build with --features mpi).
raw-tcp needs no launcher: start the server on one host, then the client on
the other; its results are labelled `raw` and `compare` adds a dos/raw column.
Sizes accept K and M suffixes (binary: 4K = 4096). --iters and --warmup set the
counts for messages up to 8K; larger messages keep OSU's smaller proportion.";

/// dosbench's command line.
#[derive(Debug, Parser)]
#[command(
    name = "dosbench",
    about = "OSU-style benchmarks for dos (under dosrun) or MPI (under mpirun).",
    override_usage = "dosbench <BENCHMARK[,BENCHMARK...]|all> [OPTIONS]\n       \
                      dosbench <COMMAND> [ARGS]",
    help_template = "{usage-heading} {usage}\n\n{about}\n\nCommands:\n{subcommands}\n{after-help}",
    disable_help_flag = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    args_override_self = true,
    term_width = 100
)]
struct Cli {
    /// Print this help, then exit.
    #[arg(short = 'h', long)]
    help: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

/// The commands other than a benchmark run.
#[derive(Debug, Subcommand)]
enum Sub {
    /// Init and finalize only (job start time)
    Hello {
        /// Anything here is refused.
        #[arg(hide = true, num_args = 0.., allow_hyphen_values = true)]
        extra: Vec<String>,
    },
    /// Medians and dos/mpi ratios of --json runs: compare FILE...
    Compare {
        /// The files, whatever they are named.
        #[arg(value_name = "FILE", num_args = 0.., allow_hyphen_values = true)]
        files: Vec<PathBuf>,
    },
    /// RPC latency and rates, ranks 0 and 1 (dos only): rpc [OPTIONS]
    Rpc(RunFlags),
    /// Global-array and lock latencies (dos only): dsm [OPTIONS]
    Dsm(RunFlags),
    /// Raw TCP baseline: `raw-tcp serve ADDR:PORT` serves one client, then
    /// exits; `raw-tcp ADDR:PORT [OPTIONS]` measures latency and bw over
    /// one bare TCP connection to it
    RawTcp(RawTcpArgs),
    /// IOR-shaped file benchmark: write+sync then read, MiB/s: io [--block-size N]
    /// [--transfer-size N] [--strided|--file-per-proc] [--collective] [--drop-caches]
    /// [--reps N] [--path DIR] [--keep] [--reorder] [--json]
    Io(IoArgs),
    /// Checkpoint bandwidth per level of dos::ckpt vs memcpy, /dev/shm and p2p (dos
    /// only): ckpt [--size N] [--reps N] [--dir DIR]
    Ckpt(CkptArgs),
    /// mdtest-shaped metadata benchmark: create, stat, remove, ops/s: md [--files N]
    /// [--reps N] [--path DIR] [--posix|--bare] [--shared-only] [--json]
    Md(MdArgs),
    /// Print this help
    #[command(hide = true)]
    Help {
        /// Ignored.
        #[arg(hide = true, num_args = 0.., allow_hyphen_values = true)]
        extra: Vec<String>,
    },
    /// A benchmark list: its name, then its options.
    #[command(external_subcommand)]
    Run(Vec<String>),
}

/// The options of a benchmark run (and of `rpc`, `dsm` and `raw-tcp`).
#[derive(Debug, Args)]
#[command(disable_help_flag = true, args_override_self = true)]
struct RunFlags {
    /// Smallest message size [default: the benchmark's own]
    #[arg(short = 'm', long = "min-size", value_name = "N", value_parser = size)]
    min_size: Option<usize>,
    /// Largest message size [default: the benchmark's own]
    #[arg(short = 'M', long = "max-size", value_name = "N", value_parser = size)]
    max_size: Option<usize>,
    /// Timed iterations for messages up to 8K (at least 1)
    #[arg(short = 'i', long, value_name = "N", value_parser = size)]
    iters: Option<usize>,
    /// Warm-up iterations for messages up to 8K
    #[arg(short = 'x', long, value_name = "N", value_parser = size)]
    warmup: Option<usize>,
    /// Messages per window in bw and bibw, puts per flush in put_bw, calls in
    /// flight in rpc (at least 1) [default: 64]
    #[arg(short = 'W', long, value_name = "N", value_parser = size)]
    window: Option<usize>,
    /// JSON lines instead of tables
    #[arg(long)]
    json: bool,
    /// Print this help, then exit
    #[arg(short = 'h', long)]
    help: bool,
}

/// The options of `io`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, args_override_self = true)]
struct IoArgs {
    /// Bytes each rank writes and reads [default: 64M]
    #[arg(short = 'b', long = "block-size", value_name = "N", value_parser = size)]
    block: Option<usize>,
    /// Bytes per call; divides the block [default: 1M]
    #[arg(short = 't', long = "transfer-size", value_name = "N", value_parser = size)]
    transfer: Option<usize>,
    /// One shared file, the ranks' transfers interleaved (default: segmented)
    #[arg(long, conflicts_with = "file_per_proc")]
    strided: bool,
    /// One file per rank instead of one shared file
    #[arg(short = 'F', long = "file-per-proc")]
    file_per_proc: bool,
    /// Collective calls (write_at_all, read_at_all)
    #[arg(short = 'c', long)]
    collective: bool,
    /// Drop the page cache between write and read (root)
    #[arg(long = "drop-caches")]
    drop_caches: bool,
    /// Repetitions; the median is reported (at least 1) [default: 3]
    #[arg(short = 'r', long, value_name = "N", value_parser = size)]
    reps: Option<usize>,
    /// Directory of the file(s): dosfs path (dos, default /) or local (MPI, default .)
    #[arg(short = 'p', long = "path", value_name = "DIR")]
    path: Option<String>,
    /// Keep the file(s) afterwards
    #[arg(long)]
    keep: bool,
    /// Each rank reads the data the next rank wrote (IOR's -C)
    #[arg(short = 'C', long)]
    reorder: bool,
    /// A JSON line instead of a table
    #[arg(long)]
    json: bool,
    /// Print this help, then exit
    #[arg(short = 'h', long)]
    help: bool,
}

/// The options of `ckpt`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
struct CkptArgs {
    /// Bytes each rank saves [default: 64M]
    #[arg(short = 's', long, value_name = "N", value_parser = size)]
    size: Option<usize>,
    /// Repetitions; the median is reported [default: 5]
    #[arg(short = 'r', long, value_name = "N", value_parser = size)]
    reps: Option<usize>,
    /// The L1 directory [default: /dev/shm]
    #[arg(long, value_name = "DIR")]
    dir: Option<String>,
}

impl IoArgs {
    fn command(self) -> Result<Command> {
        if self.help {
            return Ok(Command::Help);
        }
        let d = IoOptions::default();
        let opts = IoOptions {
            block: self.block.map_or(d.block, |b| b as u64),
            transfer: self.transfer.map_or(d.transfer, |t| t as u64),
            pattern: if self.file_per_proc {
                Pattern::FilePerProc
            } else if self.strided {
                Pattern::Strided
            } else {
                Pattern::Segmented
            },
            collective: self.collective,
            drop_caches: self.drop_caches,
            reps: self.reps.unwrap_or(d.reps),
            dir: self.path,
            keep: self.keep,
            reorder: self.reorder,
        };
        opts.check().map_err(usage_err)?;
        Ok(Command::Io {
            opts,
            json: self.json,
        })
    }
}

/// What follows `md`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct MdArgs {
    /// Files each rank creates, stats and removes per placement [default: 1000]
    #[arg(short = 'n', long = "files", value_name = "N", value_parser = size)]
    files: Option<usize>,
    /// Repetitions; the median is reported (at least 1) [default: 3]
    #[arg(short = 'r', long, value_name = "N", value_parser = size)]
    reps: Option<usize>,
    /// Directory for the benchmark's directories: dosfs path (default /) or local (--posix, MPI; default .)
    #[arg(short = 'p', long = "path", value_name = "DIR")]
    path: Option<String>,
    /// The process's own file calls on a local path (a FUSE mount, the local disk)
    #[arg(long)]
    posix: bool,
    /// Only the shared-directory placement
    #[arg(long = "shared-only")]
    shared_only: bool,
    /// dos: create with one client request instead of File::open and close
    #[arg(long, conflicts_with = "posix")]
    bare: bool,
    /// A JSON line instead of a table
    #[arg(long)]
    json: bool,
    /// Print this help, then exit
    #[arg(short = 'h', long)]
    help: bool,
}

impl MdArgs {
    fn command(self) -> Result<Command> {
        if self.help {
            return Ok(Command::Help);
        }
        let d = MdOptions::default();
        let opts = MdOptions {
            files: self.files.map_or(d.files, |n| n as u64),
            reps: self.reps.unwrap_or(d.reps),
            dir: self.path,
            posix: self.posix,
            shared_only: self.shared_only,
            bare: self.bare,
        };
        opts.check().map_err(usage_err)?;
        Ok(Command::Md {
            opts,
            json: self.json,
        })
    }
}

/// What follows `raw-tcp`: `serve ADDR:PORT`, or `ADDR:PORT` and options.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct RawTcpArgs {
    /// `serve ADDR:PORT` or `ADDR:PORT`.
    #[arg(value_name = "ADDR:PORT", num_args = 0..)]
    words: Vec<String>,
    #[command(flatten)]
    flags: RunFlags,
}

/// A benchmark run's options, parsed after its name.
#[derive(Debug, Parser)]
#[command(
    name = "dosbench BENCHMARK",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    term_width = 100
)]
struct RunArgs {
    #[command(flatten)]
    flags: RunFlags,
}

impl RunFlags {
    fn options(&self) -> Options {
        let mut o = Options {
            min_size: self.min_size,
            max_size: self.max_size,
            iters: self.iters.map(|i| i.max(1)),
            warmup: self.warmup,
            ..Options::default()
        };
        if let Some(w) = self.window {
            o.window = w.max(1);
        }
        o
    }

    /// The options, checked against each other.
    fn checked(&self) -> Result<Options> {
        let opts = self.options();
        if let (Some(lo), Some(hi)) = (opts.min_size, opts.max_size) {
            if lo > hi {
                return Err(usage_err(format!(
                    "--min-size {lo} is above --max-size {hi}"
                )));
            }
        }
        Ok(opts)
    }
}

/// The usage text.
pub fn usage() -> String {
    let options = RunArgs::command()
        .help_template("{options}")
        .render_help()
        .to_string();
    let mut benches = String::new();
    for b in Bench::ALL {
        benches.push_str(&format!("  {:<10} {}\n", b.name(), b.describe()));
    }
    Cli::command()
        .after_help(format!(
            "Options (of a benchmark run, rpc, dsm and raw-tcp):\n{}\n\n{NOTES}\n\nbenchmarks:\n{benches}",
            options.trim_end()
        ))
        .render_help()
        .to_string()
        // clap ends the commands with a line break and starts the text after
        // them with two: keep one blank line between.
        .replacen("\n\n\n", "\n\n", 1)
}

/// Parses a byte count: `4096`, `4K`, `4k`, `4KiB`, `1M`, `1MiB`.
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mul) = if let Some(n) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix("kb"))
        .or_else(|| lower.strip_suffix('k'))
    {
        (n.to_string(), 1usize << 10)
    } else if let Some(n) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix("mb"))
        .or_else(|| lower.strip_suffix('m'))
    {
        (n.to_string(), 1 << 20)
    } else {
        (lower.clone(), 1)
    };
    num.parse::<usize>().ok()?.checked_mul(mul)
}

fn size(v: &str) -> std::result::Result<usize, String> {
    parse_size(v).ok_or_else(|| "not a number".to_string())
}

fn usage_err(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{}\n\n{}", msg.into(), usage()))
}

/// The usage error for what clap refused, in dosbench's words.
fn clap_err(e: &clap::Error) -> Error {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    // "--iters <N>" -> "--iters"; "--bogus=3" -> "--bogus".
    let arg = context(ContextKind::InvalidArg);
    let flag = arg.split([' ', '=']).next().unwrap_or_default().to_string();
    usage_err(match e.kind() {
        ErrorKind::UnknownArgument if flag.starts_with('-') => {
            format!("unknown option `{flag}`")
        }
        ErrorKind::UnknownArgument => format!("unexpected argument `{flag}`"),
        ErrorKind::ValueValidation => format!(
            "bad number `{}` for {flag}",
            context(ContextKind::InvalidValue)
        ),
        ErrorKind::InvalidValue | ErrorKind::NoEquals => format!("{flag} needs a value"),
        _ => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            line.strip_prefix("error: ").unwrap_or(line).to_string()
        }
    })
}

/// Parses what follows `raw-tcp`.
fn raw_tcp(a: RawTcpArgs) -> Result<Command> {
    if a.flags.help {
        return Ok(Command::Help);
    }
    if a.words.first().map(String::as_str) == Some("serve") {
        let f = &a.flags;
        let given = f.min_size.is_some()
            || f.max_size.is_some()
            || f.iters.is_some()
            || f.warmup.is_some()
            || f.window.is_some()
            || f.json;
        if given {
            return Err(usage_err("raw-tcp serve takes no options"));
        }
        let addr = match &a.words[1..] {
            [a] => a.clone(),
            [] => return Err(usage_err("raw-tcp serve needs ADDR:PORT to listen on")),
            _ => return Err(usage_err("raw-tcp serve takes one ADDR:PORT")),
        };
        check_addr(&addr, true).map_err(usage_err)?;
        return Ok(Command::RawTcpServe { addr });
    }
    let addr = match a.words.as_slice() {
        [a] => a.clone(),
        [] => return Err(usage_err("raw-tcp needs the server's ADDR:PORT")),
        _ => return Err(usage_err("raw-tcp takes one ADDR:PORT")),
    };
    check_addr(&addr, false).map_err(usage_err)?;
    let opts = a.flags.checked()?;
    rawtcp::check_options(&opts).map_err(usage_err)?;
    Ok(Command::RawTcp {
        addr,
        opts,
        json: a.flags.json,
    })
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let cli = Cli::try_parse_from(std::iter::once("dosbench".to_string()).chain(args))
        .map_err(|e| clap_err(&e))?;
    if cli.help {
        return Ok(Command::Help);
    }
    let flags_command = |f: RunFlags, make: fn(Options, bool) -> Command| {
        if f.help {
            return Ok(Command::Help);
        }
        Ok(make(f.checked()?, f.json))
    };
    match cli.command {
        None => Err(usage_err("no benchmark given")),
        Some(Sub::Help { .. }) => Ok(Command::Help),
        Some(Sub::Hello { extra }) if extra.is_empty() => Ok(Command::Hello),
        Some(Sub::Hello { .. }) => Err(usage_err("hello takes no options")),
        Some(Sub::Compare { files }) if files.is_empty() => {
            Err(usage_err("compare needs at least one file"))
        }
        Some(Sub::Compare { files }) => Ok(Command::Compare { files }),
        Some(Sub::Rpc(f)) => flags_command(f, |opts, json| Command::Rpc { opts, json }),
        Some(Sub::Dsm(f)) => flags_command(f, |opts, json| Command::Dsm { opts, json }),
        Some(Sub::RawTcp(a)) => raw_tcp(a),
        Some(Sub::Io(a)) => a.command(),
        Some(Sub::Ckpt(a)) => Ok(Command::Ckpt {
            size: a.size.unwrap_or(64 << 20),
            reps: a.reps.unwrap_or(5).max(1),
            dir: a.dir,
        }),
        Some(Sub::Md(a)) => a.command(),
        Some(Sub::Run(words)) => {
            let (first, rest) = words.split_first().expect("clap names the subcommand");
            let benches = if first == "all" {
                Bench::ALL.to_vec()
            } else {
                let mut v = Vec::new();
                for name in first.split(',') {
                    v.push(
                        Bench::from_name(name)
                            .ok_or_else(|| usage_err(format!("unknown benchmark `{name}`")))?,
                    );
                }
                v
            };
            let run = RunArgs::try_parse_from(
                std::iter::once("dosbench".to_string()).chain(rest.iter().cloned()),
            )
            .map_err(|e| clap_err(&e))?;
            if run.flags.help {
                return Ok(Command::Help);
            }
            Ok(Command::Run {
                benches,
                opts: run.flags.checked()?,
                json: run.flags.json,
            })
        }
    }
}

/// Checks a `HOST:PORT` address without resolving it: a host name, an IPv4
/// address or a bracketed IPv6 address, and a port (0 only if `port0_ok`).
pub fn check_addr(addr: &str, port0_ok: bool) -> std::result::Result<(), String> {
    let bad = |why: &str| Err(format!("bad address `{addr}`: {why}"));
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("expected HOST:PORT");
    };
    let Ok(port) = port.parse::<u16>() else {
        return bad("the port is not a number in 0..=65535");
    };
    if port == 0 && !port0_ok {
        return bad("port 0 can only be listened on");
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match v6.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => bad("not an IPv6 address in brackets"),
        };
    }
    if host.is_empty() {
        return bad("no host");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match host.parse::<std::net::Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => bad("not an IPv4 address"),
        };
    }
    let name_ok = host
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !name_ok {
        return bad("not a host name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("4kib"), Some(4096));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("-1"), None);
    }

    #[test]
    fn run_command() {
        let c = parse(["latency", "--max-size", "4K", "--iters=50", "--json"]).unwrap();
        let Command::Run {
            benches,
            opts,
            json,
        } = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(benches, vec![Bench::Latency]);
        assert_eq!(opts.max_size, Some(4096));
        assert_eq!(opts.iters, Some(50));
        assert!(json);
        let Command::Run { benches, .. } = parse(["all"]).unwrap() else {
            panic!()
        };
        assert_eq!(benches.len(), Bench::ALL.len());
        let Command::Run { benches, .. } = parse(["bw,bibw"]).unwrap() else {
            panic!()
        };
        assert_eq!(benches, vec![Bench::Bw, Bench::Bibw]);
        let Command::Run { benches, opts, .. } =
            parse(["put_lat,get_lat,put_bw,atomic_lat", "--window", "16"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            benches,
            vec![Bench::PutLat, Bench::GetLat, Bench::PutBw, Bench::AtomicLat]
        );
        assert_eq!(opts.window, 16);
        assert!(usage().contains("atomic_lat "));
    }

    #[test]
    fn other_commands_and_errors() {
        assert_eq!(parse(["hello"]).unwrap(), Command::Hello);
        assert_eq!(parse(["--help"]).unwrap(), Command::Help);
        assert!(
            matches!(parse(["compare", "a.json"]).unwrap(), Command::Compare { files } if files.len() == 1)
        );
        assert!(parse(Vec::<String>::new()).is_err());
        assert!(parse(["nope"]).is_err());
        assert!(parse(["latency", "--iters"]).is_err());
        assert!(parse(["latency", "--bogus", "1"]).is_err());
        assert!(parse(["latency", "--min-size", "8", "--max-size", "4"]).is_err());
    }
    fn usage_error(args: &[&str]) -> String {
        match parse(args.iter().copied()) {
            Err(Error::Usage(m)) => m,
            other => panic!("{args:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn io_command() {
        let c = parse([
            "io",
            "--block-size",
            "64M",
            "--transfer-size=1M",
            "--collective",
            "--drop-caches",
            "--reps",
            "5",
            "--path",
            "/tmp/x",
            "--json",
        ])
        .unwrap();
        let Command::Io { opts, json } = c else {
            panic!("{c:?}")
        };
        assert!(json);
        assert_eq!(
            (opts.block, opts.transfer, opts.reps),
            (64 << 20, 1 << 20, 5)
        );
        assert_eq!(opts.pattern, Pattern::Segmented);
        assert!(opts.collective && opts.drop_caches && !opts.keep);
        assert_eq!(opts.dir.as_deref(), Some("/tmp/x"));
        let Command::Io { opts, json } = parse(["io"]).unwrap() else {
            panic!()
        };
        assert!(!json);
        assert_eq!(opts, IoOptions::default());
        let Command::Io { opts, .. } = parse(["io", "-F", "-b", "4K", "-t", "1K"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            (opts.pattern, opts.block, opts.transfer),
            (Pattern::FilePerProc, 4096, 1024)
        );
        let Command::Io { opts, .. } = parse(["io", "--strided"]).unwrap() else {
            panic!()
        };
        assert_eq!(opts.pattern, Pattern::Strided);
        let Command::Io { opts, .. } = parse(["io", "-C"]).unwrap() else {
            panic!()
        };
        assert!(opts.reorder);
        assert_eq!(parse(["io", "--help"]).unwrap(), Command::Help);
        assert!(
            usage_error(&["io", "--block-size", "3M", "--transfer-size", "2M"])
                .contains("multiple of --transfer-size")
        );
        usage_error(&["io", "--transfer-size", "0"]);
        usage_error(&["io", "--reps", "0"]);
        usage_error(&["io", "--strided", "--file-per-proc"]);
        assert!(usage_error(&["io", "--bogus"]).contains("unknown option `--bogus`"));
        assert!(usage().contains("io "));
    }

    #[test]
    fn raw_tcp_commands() {
        assert_eq!(
            parse(["raw-tcp", "serve", "127.0.0.1:0"]).unwrap(),
            Command::RawTcpServe {
                addr: "127.0.0.1:0".into()
            }
        );
        assert_eq!(
            parse(["raw-tcp", "serve", "[::1]:5000"]).unwrap(),
            Command::RawTcpServe {
                addr: "[::1]:5000".into()
            }
        );
        let c = parse([
            "raw-tcp",
            "node-2.cluster:5000",
            "--max-size",
            "64K",
            "--iters=20",
            "--warmup",
            "2",
            "--json",
        ])
        .unwrap();
        let Command::RawTcp { addr, opts, json } = c else {
            panic!("{c:?}")
        };
        assert_eq!(addr, "node-2.cluster:5000");
        assert_eq!(
            (opts.min_size, opts.max_size, opts.iters, opts.warmup),
            (None, Some(64 << 10), Some(20), Some(2))
        );
        assert!(json);
        // Options may come first, too.
        let Command::RawTcp { addr, json, .. } =
            parse(["raw-tcp", "--min-size", "8", "10.0.0.2:1"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(addr, "10.0.0.2:1");
        assert!(!json);
        assert_eq!(parse(["raw-tcp", "--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn raw_tcp_errors() {
        // Missing addresses.
        assert!(usage_error(&["raw-tcp"]).contains("ADDR:PORT"));
        assert!(usage_error(&["raw-tcp", "--json"]).contains("ADDR:PORT"));
        assert!(usage_error(&["raw-tcp", "serve"]).contains("ADDR:PORT"));
        // Bad addresses.
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:http",
            "127.0.0.1:65536",
            ":5000",
            "300.1.1.1:5000",
            "1.2.3:5000",
            "::1:5000",
            "[::1:5000",
            "host_name:5000",
            "a..b:5000",
        ] {
            assert!(
                usage_error(&["raw-tcp", bad]).contains("bad address"),
                "{bad}"
            );
        }
        // The client cannot connect to port 0; the server can listen on it.
        assert!(usage_error(&["raw-tcp", "127.0.0.1:0"]).contains("port 0"));
        // Unknown flags, missing values, extra arguments.
        for args in [
            &["raw-tcp", "127.0.0.1:5000", "--bogus", "1"][..],
            &["raw-tcp", "127.0.0.1:5000", "--bogus"],
            &["raw-tcp", "--bogus=3", "127.0.0.1:5000"],
            &["raw-tcp", "serve", "127.0.0.1:5000", "--bogus"],
        ] {
            assert!(
                usage_error(args).contains("unknown option `--bogus`"),
                "{args:?}"
            );
        }
        usage_error(&["raw-tcp", "127.0.0.1:5000", "--iters"]);
        usage_error(&["raw-tcp", "127.0.0.1:5000", "--iters", "many"]);
        usage_error(&["raw-tcp", "127.0.0.1:5000", "127.0.0.1:5001"]);
        usage_error(&["raw-tcp", "serve", "127.0.0.1:5000", "--iters", "5"]);
        usage_error(&["raw-tcp", "serve", "127.0.0.1:5000", "127.0.0.1:5001"]);
        usage_error(&["raw-tcp", "serve", "localhost"]);
        // Out of the server's bounds.
        usage_error(&["raw-tcp", "127.0.0.1:5000", "--max-size", "128M"]);
        usage_error(&["raw-tcp", "127.0.0.1:5000", "--iters", "10000000"]);
        usage_error(&[
            "raw-tcp",
            "127.0.0.1:5000",
            "--min-size",
            "8",
            "--max-size",
            "4",
        ]);
        // Still an error for the other benchmarks.
        usage_error(&["latency", "stray"]);
    }

    #[test]
    fn clap_spellings_and_messages() {
        // Short options, values after '=' or in the next argument.
        let Command::Run { opts, .. } =
            parse(["bw", "-m", "8", "-M=1K", "-i", "0", "-x", "3", "-W", "0"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                opts.min_size,
                opts.max_size,
                opts.iters,
                opts.warmup,
                opts.window
            ),
            (Some(8), Some(1024), Some(1), Some(3), 1)
        );
        // The last of a repeated option counts.
        let Command::Run { opts, .. } = parse(["bw", "--iters", "5", "--iters=7"]).unwrap() else {
            panic!()
        };
        assert_eq!(opts.iters, Some(7));
        for args in [
            &["latency", "-h"][..],
            &["help"],
            &["-h"],
            &["rpc", "--help"],
            &["dsm", "-h"],
            &["raw-tcp", "serve", "--help"],
        ] {
            assert_eq!(
                parse(args.iter().copied()).unwrap(),
                Command::Help,
                "{args:?}"
            );
        }
        let Command::Rpc { opts, json } = parse(["rpc", "--window", "4", "--json"]).unwrap() else {
            panic!()
        };
        assert_eq!((opts.window, json), (4, true));
        assert!(matches!(
            parse(["dsm"]).unwrap(),
            Command::Dsm { json: false, .. }
        ));
        // compare takes every argument as a file.
        assert!(matches!(
            parse(["compare", "--json", "b.json"]).unwrap(),
            Command::Compare { files } if files == [PathBuf::from("--json"), "b.json".into()]
        ));
        for (args, needle) in [
            (&["latency", "stray"][..], "unexpected argument `stray`"),
            (&["latency", "--bogus=3"], "unknown option `--bogus`"),
            (&["latency", "--iters"], "--iters needs a value"),
            (
                &["latency", "--iters", "many"],
                "bad number `many` for --iters",
            ),
            (&["latency", "-i", "x"], "bad number `x` for --iters"),
            (&["nope"], "unknown benchmark `nope`"),
            (&["bw,nope"], "unknown benchmark `nope`"),
            (&[], "no benchmark given"),
            (&["hello", "--json"], "hello takes no options"),
            (&["compare"], "compare needs at least one file"),
            (&["rpc", "x"], "unexpected argument `x`"),
            (
                &["bw", "--min-size", "8", "--max-size", "4"],
                "is above --max-size",
            ),
        ] {
            let m = usage_error(args);
            assert!(m.starts_with(needle) || m.contains(needle), "{args:?}: {m}");
            // One line, then the usage.
            assert!(m.contains("\n\nUsage: dosbench"), "{args:?}: {m}");
        }
        assert!(!usage().contains("\n\n\n"));
    }

    #[test]
    fn md_options() {
        let Command::Md { opts, json } = parse(["md", "-n", "10", "--bare", "--json"]).unwrap()
        else {
            panic!("not md");
        };
        assert!(json && opts.bare && !opts.posix);
        assert_eq!(opts.files, 10);
        assert_eq!(opts.reps, 3);
        assert!(parse(["md", "-n", "0"]).is_err());
        assert!(parse(["md", "--bare", "--posix"]).is_err());
    }
}
