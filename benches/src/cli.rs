//! The command line of `dosbench` (a small hand-written parser).

use std::path::PathBuf;

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
    /// Print the usage.
    Help,
}

/// The usage text.
pub fn usage() -> String {
    let mut s = String::from(
        "usage: dosbench <BENCHMARK|all> [--min-size N] [--max-size N] [--iters N] [--warmup N]\n\
         \x20                               [--window N] [--json]\n\
         \x20      dosbench hello                 init and finalize only (job start time)\n\
         \x20      dosbench compare FILE...       medians and dos/mpi ratios of --json runs\n\
         \n\
         Run under `dosrun -n 2` (or `mpirun -n 2` for the build with --features mpi).\n\
         Sizes accept K and M suffixes (binary: 4K = 4096). --iters and --warmup set the\n\
         counts for messages up to 8K; larger messages keep OSU's smaller proportion.\n\
         \n\
         benchmarks:\n",
    );
    for b in Bench::ALL {
        s.push_str(&format!("  {:<10} {}\n", b.name(), b.describe()));
    }
    s
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

fn usage_err(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{}\n\n{}", msg.into(), usage()))
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let Some(first) = args.first() else {
        return Err(usage_err("no benchmark given"));
    };
    match first.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "hello" => {
            return match args.len() {
                1 => Ok(Command::Hello),
                _ => Err(usage_err("hello takes no options")),
            }
        }
        "compare" => {
            let files: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
            if files.is_empty() {
                return Err(usage_err("compare needs at least one file"));
            }
            return Ok(Command::Compare { files });
        }
        _ => {}
    }
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
    let mut opts = Options::default();
    let mut json = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if flag == "--json" {
            json = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| usage_err(format!("{flag} needs a value")))?,
        };
        let num = |v: &str| {
            parse_size(v).ok_or_else(|| usage_err(format!("bad number `{v}` for {flag}")))
        };
        match flag {
            "--min-size" | "-m" => opts.min_size = Some(num(&value)?),
            "--max-size" | "-M" => opts.max_size = Some(num(&value)?),
            "--iters" | "-i" => opts.iters = Some(num(&value)?.max(1)),
            "--warmup" | "-x" => opts.warmup = Some(num(&value)?),
            "--window" | "-W" => opts.window = num(&value)?.max(1),
            _ => return Err(usage_err(format!("unknown option `{flag}`"))),
        }
    }
    if let (Some(lo), Some(hi)) = (opts.min_size, opts.max_size) {
        if lo > hi {
            return Err(usage_err(format!(
                "--min-size {lo} is above --max-size {hi}"
            )));
        }
    }
    Ok(Command::Run {
        benches,
        opts,
        json,
    })
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
}
