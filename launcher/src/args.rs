//! Command-line parsing, in mpirun's conventions.
//!
//! Options come first and stop at the first argument that is not an option
//! (the program) or at `--`. Long options take one or two dashes (`-np`,
//! `--np`, `-tag-output`), and a value either as the next argument or after
//! `=` (`--timeout=1.5`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::bind::BindTo;
use crate::hosts::{self, HostEntry};
use crate::plan::MapBy;

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
    /// Print this machine's hardware topology.
    Topology,
    /// Run a job.
    Run(Box<RunOpts>),
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
    /// Number of ranks (`-n`); `None` when hosts or `-N` give it.
    pub np: Option<usize>,
    /// Hosts from `-H`, in order.
    pub hosts: Vec<HostEntry>,
    /// `--hostfile` / `--machinefile`.
    pub hostfile: Option<PathBuf>,
    /// `--map-by`.
    pub map_by: MapBy,
    /// Ranks per node (`-N`).
    pub per_node: Option<usize>,
    /// `--oversubscribe`.
    pub oversubscribe: bool,
    /// `--bind-to`; `None`: the default policy.
    pub bind_to: Option<BindTo>,
    /// `--report-bindings`.
    pub report_bindings: bool,
    /// Prefix each output line with its rank and stream (`--tag-output`).
    pub tag_output: bool,
    /// Stop the job after this long (`--timeout`).
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping (`--grace`);
    /// `None`: the `DOS_KILL_GRACE_MS` tunable.
    pub grace: Option<Duration>,
    /// Variables to export (`-x`), in order.
    pub exports: Vec<Export>,
    /// `--launch-agent`: the command that starts node agents, split in words.
    pub launch_agent: Option<Vec<String>>,
    /// `--agent-path`: dosrun's path on the remote hosts.
    pub agent_path: Option<PathBuf>,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Option<Duration>,
    /// `--heartbeat-timeout`.
    pub heartbeat_timeout: Option<Duration>,
    /// `--stall-timeout`: a rank stopped this long stops the job.
    pub stall_timeout: Option<Duration>,
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
  -n, -np, --n, --np N   number of ranks (default with hosts: their slots; with -N: N per host;
                         required otherwise)
  -H, --host HOST[:SLOTS],...
                         run on these hosts; a host without :SLOTS has one slot per
                         mention; repeatable
  --hostfile, --machinefile FILE
                         run on the hosts of FILE: lines \"HOST [slots=N] [max_slots=M]\",
                         '#' comments; a line without slots= gives one slot; a host
                         listed twice adds up its slots
  --map-by slot|node     slot (default): fill each host's slots in turn; node: one rank
                         per host in turn
  -N, --npernode N       N ranks on every host
  --oversubscribe        allow more ranks than slots (never more than max_slots)
  --bind-to core|numa|none
                         bind each rank to a core, to its core's NUMA node, or not at all
                         (default: core when a node has no more ranks than cores, else none)
  --report-bindings      print each rank's binding on stderr
  --transports LIST      transports the ranks may use: a comma list of shm, tcp, roce and
                         verbs (default: shm within a host; between hosts verbs when an
                         RDMA device is there and dosrun was built with the verbs
                         feature, else tcp; roce, the soft-RoCE over UDP, when tcp is
                         not listed);
                         without shm the ranks of one host use the network transport
                         too (sets DOS_TRANSPORTS)
  --tag-output           prefix output lines with [1,RANK]<stdout>: or [1,RANK]<stderr>:
  --timeout SECS         stop the job after SECS seconds (fractions allowed); exit status 124
  --grace MS             milliseconds between SIGTERM and SIGKILL when the job is stopped
                         (default: DOS_KILL_GRACE_MS, 200)
  --stall-timeout SECS   stop the job when a rank stays stopped (SIGSTOP, SIGTSTP, a
                         debugger) for SECS seconds, naming it; exit status 124
  -x NAME[=VALUE]        export NAME (its current value, or VALUE) to the ranks; repeatable
  --launch-agent CMD     how to start node agents on remote hosts (default
                         \"ssh -o BatchMode=yes\"); CMD is split at spaces, the host is
                         appended (or replaces a word {host}), then AGENT-PATH --agent
  --agent-path PATH      dosrun's path on the remote hosts (default: this dosrun's path)
  --heartbeat-interval MS
                         milliseconds between heartbeats of dosrun and its node agents
                         (default 200)
  --heartbeat-timeout SECS
                         a host whose agent is silent this long is lost: the job stops,
                         exit status 1 (default 2)
  --info                 print the transports and tunables, then exit
  --topology             print this machine's packages, NUMA nodes, cores and PUs, then exit
  -h, --help             print this help, then exit
  -V, --version          print the version, then exit
  --                     end of options

Options stop at the first argument that is not an option: the program.
Long options also take one dash (-np, -tag-output) and a value after '=' (--np=4).

Without -H or --hostfile every rank runs on this machine, as many as -n asks for
(no --oversubscribe needed here). localhost, 127.0.0.1, this machine's name and
addresses all name this machine. For the ranks of every other host dosrun starts
a node agent there through the launch agent; the agent connects back to dosrun
over TCP, proves it holds the job's secret and starts, binds and watches its
host's ranks. A host whose agent or link is lost stops the job (exit status 1).

Each rank's stdout and stderr go to dosrun's, line by line; stdin goes to rank 0
when rank 0 runs on this machine.
Signals INT, TERM, HUP, USR1 and USR2 sent to dosrun are forwarded to every rank;
after INT, TERM or HUP the job ends (SIGKILL after the grace period) and dosrun
says it was interrupted (HUP stays ignored if dosrun started with it ignored, as
under nohup). Ranks start with default signal dispositions and mask.
When a rank fails, the others are stopped (SIGTERM, then SIGKILL after the grace
period) and dosrun exits with the failed rank's status (128+N for signal N). The
rank blamed is the first that died by itself: a rank killed by a signal is blamed
before peers that exited or aborted within DOS_BLAME_WINDOW_MS (their transport
errors are listed as consequences).

Exit status: 0 when every rank exited 0; the blamed rank's status; 124 on
--timeout or --stall-timeout; the code given to abort; 128+N when interrupted by
signal N; 1 when a host was lost; 2 for a usage error;
126/127 when the program cannot be executed; 125 when dosrun itself fails.
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
    let mut host_entries: Vec<HostEntry> = Vec::new();
    let mut hostfile: Option<PathBuf> = None;
    let mut map_by: Option<MapBy> = None;
    let mut per_node: Option<usize> = None;
    let mut oversubscribe = false;
    let mut bind_to: Option<BindTo> = None;
    let mut report_bindings = false;
    let mut launch_agent: Option<Vec<String>> = None;
    let mut agent_path: Option<PathBuf> = None;
    let mut heartbeat_interval = None;
    let mut heartbeat_timeout = None;
    let mut stall_timeout = None;

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
            "topology" => {
                flag(&inline)?;
                return Ok(Action::Topology);
            }
            "H" | "host" => {
                let v = value("a list of hosts")?;
                host_entries.extend(hosts::parse_host_list(&v).map_err(|e| usage(e.to_string()))?);
            }
            "hostfile" | "machinefile" => {
                if hostfile.is_some() {
                    return Err(usage("the hostfile is given twice"));
                }
                let v = value("a file name")?;
                if v.is_empty() {
                    return Err(usage(format!("{text}: empty file name")));
                }
                hostfile = Some(PathBuf::from(v));
            }
            "map-by" => {
                if map_by.is_some() {
                    return Err(usage("--map-by is given twice"));
                }
                let v = value("slot or node")?;
                map_by = Some(match v.as_str() {
                    "slot" => MapBy::Slot,
                    "node" => MapBy::Node,
                    _ => {
                        return Err(usage(format!(
                            "--map-by: unknown value {v:?} (expected slot or node)"
                        )))
                    }
                });
            }
            "N" | "npernode" => {
                if per_node.is_some() {
                    return Err(usage("the number of ranks per node is given twice"));
                }
                per_node = Some(parse_np(text, &value("a number of ranks per node")?)?);
            }
            "oversubscribe" => {
                flag(&inline)?;
                oversubscribe = true;
            }
            "bind-to" => {
                if bind_to.is_some() {
                    return Err(usage("--bind-to is given twice"));
                }
                let v = value("core, numa or none")?;
                bind_to = Some(BindTo::parse(&v).ok_or_else(|| {
                    usage(format!(
                        "--bind-to: unknown value {v:?} (expected core, numa or none)"
                    ))
                })?);
            }
            "transports" => {
                let v = value("a comma list of shm, tcp, roce and verbs")?;
                if dos::config::Transports::parse(&v).is_none() {
                    return Err(usage(format!(
                        "--transports: {v:?} is not a comma list of shm, tcp, roce and verbs"
                    )));
                }
                exports.push(Export::Set("DOS_TRANSPORTS".into(), v.into()));
            }
            "report-bindings" => {
                flag(&inline)?;
                report_bindings = true;
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
            "launch-agent" => {
                let v = value("a command")?;
                let words: Vec<String> = v.split_whitespace().map(str::to_string).collect();
                if words.is_empty() {
                    return Err(usage("--launch-agent: empty command"));
                }
                launch_agent = Some(words);
            }
            "agent-path" => {
                let v = value("a path")?;
                if v.is_empty() {
                    return Err(usage("--agent-path: empty path"));
                }
                agent_path = Some(PathBuf::from(v));
            }
            "heartbeat-interval" => {
                let v = value("a number of milliseconds")?;
                let ms = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&m| (1..=60_000).contains(&m));
                heartbeat_interval = Some(Duration::from_millis(ms.ok_or_else(|| {
                    usage(format!(
                        "--heartbeat-interval: {v:?} is not 1 to 60000 milliseconds"
                    ))
                })?));
            }
            "heartbeat-timeout" => {
                let t = parse_timeout(&value("a number of seconds")?)
                    .map_err(|_| usage("--heartbeat-timeout: not a positive number of seconds"))?;
                if t < Duration::from_millis(10) || t > Duration::from_secs(3600) {
                    return Err(usage("--heartbeat-timeout: must be 0.01 to 3600 seconds"));
                }
                heartbeat_timeout = Some(t);
            }
            "stall-timeout" => {
                let t = parse_timeout(&value("a number of seconds")?)
                    .map_err(|_| usage("--stall-timeout: not a positive number of seconds"))?;
                stall_timeout = Some(t);
            }
            _ => return Err(usage(format!("unknown option {text}"))),
        }
    }

    let Some(program) = program else {
        return Err(usage("no program given: dosrun -n N PROGRAM [ARGS...]"));
    };
    if program.is_empty() {
        return Err(usage("the program name is empty"));
    }
    if !host_entries.is_empty() && hostfile.is_some() {
        return Err(usage("give hosts with -H or with --hostfile, not both"));
    }
    if np.is_none() && host_entries.is_empty() && hostfile.is_none() && per_node.is_none() {
        return Err(usage("missing -n N: the number of ranks"));
    }
    Ok(Action::Run(Box::new(RunOpts {
        np,
        hosts: host_entries,
        hostfile,
        map_by: map_by.unwrap_or_default(),
        per_node,
        oversubscribe,
        bind_to,
        report_bindings,
        tag_output,
        timeout,
        grace,
        exports,
        launch_agent,
        agent_path,
        heartbeat_interval,
        heartbeat_timeout,
        stall_timeout,
        program,
        args: it.collect(),
    })))
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
            Ok(Action::Run(o)) => *o,
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
            assert_eq!(o.np, Some(4), "{a:?}");
            assert_eq!(o.program, "prog");
        }
    }

    #[test]
    fn options_stop_at_the_program() {
        let o = run(&["-n", "2", "prog", "-n", "5", "--tag-output", "--"]);
        assert_eq!(o.np, Some(2));
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
        assert_eq!(o.np, Some(3));
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
        assert_eq!(p(&["--topology"]), Ok(Action::Topology));
        assert_eq!(p(&["-topology"]), Ok(Action::Topology));
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
    fn placement_and_binding_options() {
        let o = run(&["-n", "4", "prog"]);
        assert!(o.hosts.is_empty() && o.hostfile.is_none());
        assert_eq!(o.map_by, MapBy::Slot);
        assert_eq!((o.per_node, o.oversubscribe), (None, false));
        assert_eq!((o.bind_to, o.report_bindings), (None, false));

        let o = run(&[
            "-H",
            "a:2,b",
            "--host=c",
            "-host",
            "a",
            "--map-by",
            "node",
            "-N",
            "2",
            "--oversubscribe",
            "--bind-to=numa",
            "--report-bindings",
            "prog",
        ]);
        let e = |h: &str, slots| HostEntry {
            host: h.into(),
            slots,
            max_slots: None,
        };
        assert_eq!(o.hosts, [e("a", 2), e("b", 1), e("c", 1), e("a", 1)]);
        assert_eq!(o.np, None);
        assert_eq!(o.map_by, MapBy::Node);
        assert_eq!(o.per_node, Some(2));
        assert!(o.oversubscribe && o.report_bindings);
        assert_eq!(o.bind_to, Some(BindTo::Numa));

        for f in ["--hostfile", "--machinefile", "-hostfile", "-machinefile"] {
            let o = run(&[f, "hosts.txt", "prog"]);
            assert_eq!(o.hostfile, Some(PathBuf::from("hosts.txt")), "{f}");
            assert_eq!(o.np, None);
        }
        let o = run(&["--npernode", "3", "--map-by=slot", "--bind-to", "none", "p"]);
        assert_eq!((o.np, o.per_node), (None, Some(3)));
        assert_eq!(o.bind_to, Some(BindTo::None));
        assert_eq!(
            run(&["--bind-to", "core", "-n", "1", "p"]).bind_to,
            Some(BindTo::Core)
        );
    }

    #[test]
    fn placement_usage_errors() {
        for (args, needle) in [
            (&["-H", "a,,b", "p"][..], "empty host"),
            (&["-H", "a:0", "p"], "at least 1"),
            (&["-H", "a:x", "p"], "not a number"),
            (&["-H"], "needs"),
            (&["--hostfile", "f", "-H", "a", "p"], "not both"),
            (&["--hostfile", "f", "--machinefile", "g", "p"], "twice"),
            (&["--hostfile=", "p"], "empty file name"),
            (
                &["--map-by", "core", "-n", "1", "p"],
                "--map-by: unknown value \"core\"",
            ),
            (
                &["--map-by", "node", "--map-by", "slot", "-n", "1", "p"],
                "twice",
            ),
            (&["-N", "0", "p"], "at least 1"),
            (&["-N", "x", "p"], "not a number"),
            (&["-N", "1", "-N", "2", "p"], "twice"),
            (&["--oversubscribe=yes", "-n", "1", "p"], "no value"),
            (
                &["--bind-to", "socket", "-n", "1", "p"],
                "expected core, numa or none",
            ),
            (
                &["--bind-to", "core", "--bind-to", "none", "-n", "1", "p"],
                "twice",
            ),
            (&["--report-bindings=1", "-n", "1", "p"], "no value"),
            (&["--topology=x"], "no value"),
            (&["--oversubscribe", "p"], "missing -n"),
        ] {
            let m = err(args);
            assert!(m.contains(needle), "{args:?}: {m}");
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

    #[test]
    fn stall_timeout() {
        let Ok(Action::Run(o)) = p(&["--stall-timeout", "2.5", "-n", "1", "p"]) else {
            panic!("should parse");
        };
        assert_eq!(o.stall_timeout, Some(Duration::from_millis(2500)));
        let Ok(Action::Run(o)) = p(&["-n", "1", "p"]) else {
            panic!("should parse");
        };
        assert_eq!(o.stall_timeout, None);
        for v in ["0", "-1", "x", "inf"] {
            let m = err(&["--stall-timeout", v, "-n", "1", "p"]);
            assert!(m.starts_with("--stall-timeout: "), "{v}: {m}");
        }
    }
}
