//! The command line of `dosbench` (a small hand-written parser).

use std::path::PathBuf;

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
         \x20      dosbench rpc [--iters N] [--warmup N] [--window N] [--json]\n\
         \x20                                     RPC latency and rates, ranks 0 and 1 (dos only)\n\
         \x20      dosbench dsm [--iters N] [--warmup N] [--json]\n\
         \x20                                     global-array and lock latencies (dos only)\n\
         \x20      dosbench raw-tcp serve ADDR:PORT\n\
         \x20                                     raw TCP baseline: serve one client, then exit\n\
         \x20      dosbench raw-tcp ADDR:PORT [--min-size N] [--max-size N] [--iters N]\n\
         \x20                                 [--warmup N] [--window N] [--json]\n\
         \x20                                     latency and bw over one bare TCP connection\n\
         \n\
         Run under `dosrun -n 2` (or `mpirun -n 2` for the build with --features mpi).\n\
         raw-tcp needs no launcher: start the server on one host, then the client on\n\
         the other; its results are labelled `raw` and `compare` adds a dos/raw column.\n\
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

/// Options and positional arguments after the command word.
struct Flags {
    opts: Options,
    json: bool,
    help: bool,
    positional: Vec<String>,
}

/// Parses `--min-size`, `--max-size`, `--iters`, `--warmup`, `--window`
/// (as `--flag V` or `--flag=V`), `--json` and `--help`; anything not
/// starting with `-` is collected as a positional argument.
fn parse_flags(args: &[String]) -> Result<Flags> {
    let mut f = Flags {
        opts: Options::default(),
        json: false,
        help: false,
        positional: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !a.starts_with('-') {
            f.positional.push(a.clone());
            continue;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((fl, v)) if fl.starts_with("--") => (fl, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if flag == "--json" {
            f.json = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            f.help = true;
            continue;
        }
        const VALUED: [&str; 10] = [
            "--min-size",
            "-m",
            "--max-size",
            "-M",
            "--iters",
            "-i",
            "--warmup",
            "-x",
            "--window",
            "-W",
        ];
        if !VALUED.contains(&flag) {
            return Err(usage_err(format!("unknown option `{flag}`")));
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
        let o = &mut f.opts;
        match flag {
            "--min-size" | "-m" => o.min_size = Some(num(&value)?),
            "--max-size" | "-M" => o.max_size = Some(num(&value)?),
            "--iters" | "-i" => o.iters = Some(num(&value)?.max(1)),
            "--warmup" | "-x" => o.warmup = Some(num(&value)?),
            "--window" | "-W" => o.window = num(&value)?.max(1),
            _ => return Err(usage_err(format!("unknown option `{flag}`"))),
        }
    }
    if let (Some(lo), Some(hi)) = (f.opts.min_size, f.opts.max_size) {
        if lo > hi {
            return Err(usage_err(format!(
                "--min-size {lo} is above --max-size {hi}"
            )));
        }
    }
    Ok(f)
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

/// Parses what follows `raw-tcp`.
fn parse_raw_tcp(args: &[String]) -> Result<Command> {
    if args.first().map(String::as_str) == Some("serve") {
        let f = parse_flags(&args[1..])?;
        if f.help {
            return Ok(Command::Help);
        }
        if f.opts != Options::default() || f.json {
            return Err(usage_err("raw-tcp serve takes no options"));
        }
        let addr = match f.positional.as_slice() {
            [a] => a.clone(),
            [] => return Err(usage_err("raw-tcp serve needs ADDR:PORT to listen on")),
            _ => return Err(usage_err("raw-tcp serve takes one ADDR:PORT")),
        };
        check_addr(&addr, true).map_err(usage_err)?;
        return Ok(Command::RawTcpServe { addr });
    }
    let f = parse_flags(args)?;
    if f.help {
        return Ok(Command::Help);
    }
    let addr = match f.positional.as_slice() {
        [a] => a.clone(),
        [] => return Err(usage_err("raw-tcp needs the server's ADDR:PORT")),
        _ => return Err(usage_err("raw-tcp takes one ADDR:PORT")),
    };
    check_addr(&addr, false).map_err(usage_err)?;
    rawtcp::check_options(&f.opts).map_err(usage_err)?;
    Ok(Command::RawTcp {
        addr,
        opts: f.opts,
        json: f.json,
    })
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
        "raw-tcp" => return parse_raw_tcp(&args[1..]),
        "rpc" | "dsm" => {
            let f = parse_flags(&args[1..])?;
            if let Some(p) = f.positional.first() {
                return Err(usage_err(format!("unexpected argument `{p}`")));
            }
            return Ok(if first == "rpc" {
                Command::Rpc {
                    opts: f.opts,
                    json: f.json,
                }
            } else {
                Command::Dsm {
                    opts: f.opts,
                    json: f.json,
                }
            });
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
    let f = parse_flags(&args[1..])?;
    if f.help {
        return Ok(Command::Help);
    }
    if let Some(p) = f.positional.first() {
        return Err(usage_err(format!("unexpected argument `{p}`")));
    }
    Ok(Command::Run {
        benches,
        opts: f.opts,
        json: f.json,
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
}
