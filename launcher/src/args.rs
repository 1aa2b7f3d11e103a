//! Command-line parsing, in mpirun's conventions.
//!
//! Options come first and stop at the first argument that is not an option
//! (the program) or at `--`. Long options take one or two dashes (`-np`,
//! `--np`, `-tag-output`), and a value either as the next argument or after
//! `=` (`--timeout=1.5`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::time::Duration;

/// Most ranks one job may have.
pub const MAX_RANKS: usize = 1 << 20;

/// What dosrun was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
    /// Print transports and tunables.
    Info,
    /// Run a job.
    Run(RunOpts),
}

/// A variable to set in the ranks' environment (`-x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// `-x NAME`: the value NAME has in dosrun's environment.
    Current(String),
    /// `-x NAME=VALUE`.
    Set(String, OsString),
}

/// Options of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOpts {
    /// Number of ranks (`-n`).
    pub np: usize,
    /// Prefix each output line with its rank and stream (`--tag-output`).
    pub tag_output: bool,
    /// Stop the job after this long (`--timeout`).
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping (`--grace`);
    /// `None`: the `DOS_KILL_GRACE_MS` tunable.
    pub grace: Option<Duration>,
    /// Variables to export (`-x`), in order.
    pub exports: Vec<Export>,
    /// The program, as given.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// A usage error: its text is one line, without the `dosrun: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// The usage text printed by `--help`.
pub const HELP: &str = "\
Usage: dosrun [OPTIONS] [--] PROGRAM [ARGS...]

Runs PROGRAM as the ranks of a dos job, like mpirun.

Options:
  -n, -np, --n, --np N   number of ranks (required)
  --tag-output           prefix output lines with [1,RANK]<stdout>: or [1,RANK]<stderr>:
  --timeout SECS         stop the job after SECS seconds (fractions allowed); exit status 124
  --grace MS             milliseconds between SIGTERM and SIGKILL when the job is stopped
                         (default: DOS_KILL_GRACE_MS, 200)
  -x NAME[=VALUE]        export NAME (its current value, or VALUE) to the ranks; repeatable
  --info                 print the transports and tunables, then exit
  -h, --help             print this help, then exit
  -V, --version          print the version, then exit
  --                     end of options

Options stop at the first argument that is not an option: the program.
Long options also take one dash (-np, -tag-output) and a value after '=' (--np=4).

Each rank's stdout and stderr go to dosrun's, line by line; stdin goes to rank 0.
Signals INT, TERM, HUP, USR1 and USR2 sent to dosrun are forwarded to every rank.
When a rank fails, the others are stopped (SIGTERM, then SIGKILL after the grace
period) and dosrun exits with the failed rank's status (128+N for signal N).

Exit status: 0 when every rank exited 0; the first failed rank's status; 124 on
--timeout; the code given to abort; 2 for a usage error; 126/127 when the program
cannot be executed; 125 when dosrun itself fails.
";

/// Parses dosrun's arguments (without `argv[0]`).
pub fn parse<I>(argv: I) -> Result<Action, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut it = argv.into_iter();
    let mut np: Option<usize> = None;
    let mut tag_output = false;
    let mut timeout = None;
    let mut grace = None;
    let mut exports = Vec::new();
    let mut program = None;

    while let Some(arg) = it.next() {
        let bytes = arg.as_encoded_bytes();
        if bytes == b"--" {
            program = it.next();
            break;
        }
        if bytes.len() < 2 || bytes[0] != b'-' {
            program = Some(arg);
            break;
        }
        let Some(text) = arg.to_str() else {
            return Err(usage("unknown option (not valid UTF-8)"));
        };
        let stripped = text.strip_prefix("--").unwrap_or(&text[1..]);
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        let mut value = |what: &str| -> Result<String, UsageError> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            match it.next() {
                Some(v) => v
                    .into_string()
                    .map_err(|_| usage(format!("{text}: {what} is not valid UTF-8"))),
                None => Err(usage(format!("{text} needs {what}"))),
            }
        };
        let flag = |inline: &Option<String>| match inline {
            Some(_) => Err(usage(format!("{name} takes no value"))),
            None => Ok(()),
        };
        match name {
            "h" | "help" => {
                flag(&inline)?;
                return Ok(Action::Help);
            }
            "V" | "version" => {
                flag(&inline)?;
                return Ok(Action::Version);
            }
            "info" => {
                flag(&inline)?;
                return Ok(Action::Info);
            }
            "n" | "np" => {
                if np.is_some() {
                    return Err(usage("the number of ranks is given twice"));
                }
                np = Some(parse_np(text, &value("a number of ranks")?)?);
            }
            "tag-output" => {
                flag(&inline)?;
                tag_output = true;
            }
            "timeout" => timeout = Some(parse_timeout(&value("a number of seconds")?)?),
            "grace" => grace = Some(parse_grace(&value("a number of milliseconds")?)?),
            "x" => exports.push(parse_export(&value("NAME or NAME=VALUE")?)?),
            _ => return Err(usage(format!("unknown option {text}"))),
        }
    }

    let Some(program) = program else {
        return Err(usage("no program given: dosrun -n N PROGRAM [ARGS...]"));
    };
    if program.is_empty() {
        return Err(usage("the program name is empty"));
    }
    let Some(np) = np else {
        return Err(usage("missing -n N: the number of ranks"));
    };
    Ok(Action::Run(RunOpts {
        np,
        tag_output,
        timeout,
        grace,
        exports,
        program,
        args: it.collect(),
    }))
}

fn parse_np(opt: &str, v: &str) -> Result<usize, UsageError> {
    let n: usize = v
        .trim()
        .parse()
        .map_err(|_| usage(format!("{opt}: {v:?} is not a number of ranks")))?;
    if n == 0 {
        return Err(usage(format!(
            "{opt}: the number of ranks must be at least 1"
        )));
    }
    if n > MAX_RANKS {
        return Err(usage(format!("{opt}: at most {MAX_RANKS} ranks")));
    }
    Ok(n)
}

fn parse_timeout(v: &str) -> Result<Duration, UsageError> {
    let bad = || {
        usage(format!(
            "--timeout: {v:?} is not a positive number of seconds"
        ))
    };
    let s: f64 = v.trim().parse().map_err(|_| bad())?;
    if s.is_nan() || s <= 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(s).map_err(|_| bad())
}

fn parse_grace(v: &str) -> Result<Duration, UsageError> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| usage(format!("--grace: {v:?} is not a number of milliseconds")))
}

fn parse_export(v: &str) -> Result<Export, UsageError> {
    let (name, value) = match v.split_once('=') {
        Some((n, val)) => (n, Some(val)),
        None => (v, None),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(usage(format!("-x: {name:?} is not a variable name")));
    }
    Ok(match value {
        Some(val) => Export::Set(name.to_string(), val.into()),
        None => Export::Current(name.to_string()),
    })
}

/// Resolves `-x` exports against dosrun's environment: the variables to set
/// in every rank. `-x NAME` of an unset variable sets nothing.
pub fn resolve_exports(
    exports: &[Export],
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = Vec::new();
    for e in exports {
        let (name, value) = match e {
            Export::Current(n) => match lookup(n) {
                Some(v) => (n, v),
                None => continue,
            },
            Export::Set(n, v) => (n, v.clone()),
        };
        out.retain(|(k, _)| k != OsStr::new(name));
        out.push((name.into(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Action, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> RunOpts {
        match p(args) {
            Ok(Action::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        match p(args) {
            Err(UsageError(m)) => m,
            other => panic!("{args:?} should fail: {other:?}"),
        }
    }

    #[test]
    fn rank_count_spellings() {
        for a in [
            &["-n", "4", "prog"][..],
            &["-np", "4", "prog"],
            &["--n", "4", "prog"],
            &["--np", "4", "prog"],
            &["-n=4", "prog"],
            &["--np=4", "prog"],
        ] {
            let o = run(a);
            assert_eq!(o.np, 4, "{a:?}");
            assert_eq!(o.program, "prog");
        }
    }

    #[test]
    fn options_stop_at_the_program() {
        let o = run(&["-n", "2", "prog", "-n", "5", "--tag-output", "--"]);
        assert_eq!(o.np, 2);
        assert!(!o.tag_output);
        assert_eq!(o.args, ["-n", "5", "--tag-output", "--"]);
        let o = run(&["-n", "1", "--", "-weird", "x"]);
        assert_eq!(o.program, "-weird");
        assert_eq!(o.args, ["x"]);
    }

    #[test]
    fn every_option() {
        let o = run(&[
            "--tag-output",
            "-np",
            "3",
            "--timeout",
            "1.5",
            "--grace=50",
            "-x",
            "A",
            "-x",
            "B=c=d",
            "--x=C=",
            "prog",
            "arg",
        ]);
        assert!(o.tag_output);
        assert_eq!(o.np, 3);
        assert_eq!(o.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(o.grace, Some(Duration::from_millis(50)));
        assert_eq!(
            o.exports,
            [
                Export::Current("A".into()),
                Export::Set("B".into(), "c=d".into()),
                Export::Set("C".into(), "".into()),
            ]
        );
        assert_eq!(o.args, ["arg"]);
        assert!(run(&["-tag-output", "-n", "1", "p"]).tag_output);
    }

    #[test]
    fn informational_actions() {
        assert_eq!(p(&["--help"]), Ok(Action::Help));
        assert_eq!(p(&["-h"]), Ok(Action::Help));
        assert_eq!(p(&["-n", "2", "--help", "prog"]), Ok(Action::Help));
        assert_eq!(p(&["--version"]), Ok(Action::Version));
        assert_eq!(p(&["-V"]), Ok(Action::Version));
        assert_eq!(p(&["--info"]), Ok(Action::Info));
    }

    #[test]
    fn usage_errors() {
        assert!(err(&[]).contains("no program"));
        assert!(err(&["-n", "2"]).contains("no program"));
        assert!(err(&["-n", "2", "--"]).contains("no program"));
        assert!(err(&["prog"]).contains("missing -n"));
        assert!(err(&["-n"]).contains("needs"));
        assert!(err(&["-n", "0", "prog"]).contains("at least 1"));
        assert!(err(&["-n", "four", "prog"]).contains("not a number"));
        assert!(err(&["-n", "-1", "prog"]).contains("not a number"));
        assert!(err(&["-n", "2", "-n", "3", "prog"]).contains("twice"));
        assert!(err(&["-n", "99999999", "prog"]).contains("at most"));
        assert!(err(&["--frobnicate", "prog"]).contains("unknown option --frobnicate"));
        assert!(err(&["--timeout", "0", "-n", "1", "p"]).contains("--timeout"));
        assert!(err(&["--timeout", "-1", "-n", "1", "p"]).contains("--timeout"));
        assert!(err(&["--timeout", "NaN", "-n", "1", "p"]).contains("--timeout"));
        assert!(err(&["--timeout", "inf", "-n", "1", "p"]).contains("--timeout"));
        assert!(err(&["--timeout", "1e300", "-n", "1", "p"]).contains("--timeout"));
        assert!(err(&["--grace", "1.5", "-n", "1", "p"]).contains("--grace"));
        assert!(err(&["-x", "=v", "-n", "1", "p"]).contains("-x"));
        assert!(err(&["-x", "1A", "-n", "1", "p"]).contains("-x"));
        assert!(err(&["--tag-output=yes", "-n", "1", "p"]).contains("no value"));
        assert!(err(&["-n", "1", ""]).contains("empty"));
        for m in [err(&[]), err(&["-n"]), err(&["--frobnicate"])] {
            assert!(!m.contains('\n'));
        }
    }

    #[test]
    fn exports_resolve_against_the_environment() {
        let env = |n: &str| (n == "HOME").then(|| OsString::from("/root"));
        let x = [
            Export::Current("HOME".into()),
            Export::Current("UNSET".into()),
            Export::Set("A".into(), "1".into()),
            Export::Set("A".into(), "2".into()),
        ];
        assert_eq!(
            resolve_exports(&x, env),
            [
                (OsString::from("HOME"), OsString::from("/root")),
                (OsString::from("A"), OsString::from("2")),
            ]
        );
    }
}
