//! Command-line parsing, in mpirun's conventions, with clap.
//!
//! Options come first and stop at the first argument that is not an option
//! (the program) or at `--`. Long options take one or two dashes (`-np`,
//! `--np`, `-tag-output`), one-letter options two as well (`--x`), and a
//! value either as the next argument or after `=` (`--timeout=1.5`). An
//! informational option (`--help`, `--version`, `--info`, `--topology`)
//! ends the options: what follows it is not looked at.
//!
//! Parsing has two stages:
//! 1. [`normalise`] rewrites those mpirun spellings into the one form clap
//!    reads: `--LONG[=VALUE]` (or `-x=VALUE` for `-x`, which has no long
//!    name), then `--` and the program with its arguments, untouched. It
//!    learns the names and which options take a value from clap's own table,
//!    and reports what only it can see: unknown options, missing values,
//!    values given to flags, options that may come once given twice.
//! 2. clap parses the typed values (each option's value parser gives the
//!    one-line error), takes `--grace` from `DOS_KILL_GRACE_MS` when it is not
//!    given, and renders `--help` ([`help`]). What involves several options
//!    (a program, a rank count, hosts from one source) is checked after.
//!
//! `--transports` sets `DOS_TRANSPORTS` for the ranks (it is exported like
//! `-x`); dosrun's own `DOS_TRANSPORTS` is not read as its default, since
//! it would then be exported to the ranks of remote hosts too.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use crate::bind::BindTo;
use crate::hosts::{self, HostEntry};
use crate::plan::{MapBy, MAX_RANKS};

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
    /// Time between SIGTERM and SIGKILL when stopping (`--grace`, or
    /// `DOS_KILL_GRACE_MS` in dosrun's environment); `None`: the
    /// `DOS_KILL_GRACE_MS` tunable's default.
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
    /// `--fs DIR`: a dosfs server on every node over `DIR/<node id>`.
    pub fs: Option<PathBuf>,
    /// `--fs-stage-out PATH`: copy the file system out at the end.
    pub fs_stage_out: Option<PathBuf>,
    /// `--fs-addr FILE` (hidden, for `dosfs up --hostfile`): another address
    /// file, with dosrun's pid.
    pub fs_addr: Option<PathBuf>,
    /// `--max-restarts K`: restart the job after a failure, at most K times.
    pub max_restarts: usize,
    /// `--mpi pmi1` (`Some(true)`) or `none` (`Some(false)`): serve the
    /// ranks PMI-1 (MPICH programs), see `pmi1`; `None`: when the program
    /// links MPICH.
    pub pmi1: Option<bool>,
    /// `--spares N`: the last N hosts are held back to replace failed hosts.
    pub spares: usize,
    /// `--restart-np M`: with no host to replace a failed one, restart on M
    /// ranks.
    pub restart_np: Option<usize>,
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

/// What follows the options in `--help`.
const AFTER_HELP: &str = "\
Options stop at the first argument that is not an option: the program; or at
'--', after which the next argument is the program even if it starts with '-'.
Long options also take one dash (-np, -tag-output), one-letter options two
(--x), and a value after '=' (--np=4).

Without -H or --hostfile every rank runs on this machine, as many as -n asks for
(no --oversubscribe needed here); inside a Slurm allocation (salloc, sbatch) the
hosts and slots are the allocation's (SLURM_JOB_NODELIST, SLURM_TASKS_PER_NODE),
-n defaults to its task count and node agents start through srun. localhost, 127.0.0.1, this machine's name and
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

With --max-restarts K, a failed job (a rank killed by a signal, exiting non-zero
or aborting, a host lost) is ended on every host and started again, at most K
times; --timeout, --stall-timeout, interruptions and programs that cannot start
are not restarted, and --timeout applies to each run. Every rank sees
DOS_RUN_ATTEMPT (0, then k on the k-th restart) and DOS_CKPT_ID (the same on
every attempt of one dosrun; dosrun's own DOS_CKPT_ID or -x DOS_CKPT_ID if set).
Ranks keep their numbers and hosts; a lost host is not used again and its ranks
move together to a spare (--spares N: the last N hosts are held back), else to
free slots of the other hosts, else the job restarts on --restart-np M ranks.
Each restart is reported in one line:
  dosrun: restart k/K: cause: WHAT; failed rank R on host H[; host H excluded;
  ranks ... of host H to spare host S]; checkpoint: NAME; recovered in T s
NAME is what rank 0 put under the wire-up key dos.ckpt.restored after restoring
(else 'none reported'); T runs from the failure to that put (else to the new
run's first wire-up fence). The exit status is 0 only if a run completed; when
the restarts are exhausted, or no host can take a lost host's ranks, it is the
last failure's status.";

/// dosrun's command line, as clap reads it after [`normalise`].
///
/// The doc comment of each field is its `--help` text.
#[derive(Debug, Parser)]
#[command(
    name = "dosrun",
    about = "Runs PROGRAM as the ranks of a dos job, like mpirun.",
    long_about = None,
    override_usage = "dosrun [OPTIONS] [--] PROGRAM [ARGS...]",
    help_template = "{usage-heading} {usage}\n\n{about}\n\n{all-args}{after-help}",
    after_help = AFTER_HELP,
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    term_width = 100
)]
struct Cli {
    /// Number of ranks (default with hosts: their slots; with -N: N per
    /// host; required otherwise); also spelt -np, --n
    #[arg(short = 'n', long = "np", value_name = "N", value_parser = parse_np)]
    np: Option<usize>,
    /// Run on these hosts; a host without :SLOTS has one slot per mention;
    /// repeatable
    #[arg(short = 'H', long = "host", value_name = "HOST[:SLOTS],...",
          action = ArgAction::Append, value_parser = parse_hosts)]
    hosts: Vec<HostList>,
    /// Run on the hosts of FILE: lines "HOST [slots=N] [max_slots=M]",
    /// '#' comments; a line without slots= gives one slot; a host listed
    /// twice adds up its slots (also spelt --machinefile)
    #[arg(long = "hostfile", alias = "machinefile", value_name = "FILE",
          value_parser = parse_hostfile)]
    hostfile: Option<PathBuf>,
    /// slot (default): fill each host's slots in turn; node: one rank per
    /// host in turn
    #[arg(long = "map-by", value_name = "slot|node", value_parser = parse_map_by)]
    map_by: Option<MapBy>,
    /// N ranks on every host
    #[arg(short = 'N', long = "npernode", value_name = "N", value_parser = parse_per_node)]
    per_node: Option<usize>,
    /// Allow more ranks than slots (never more than max_slots)
    #[arg(long)]
    oversubscribe: bool,
    /// Bind each rank to a core, to its core's NUMA node, or not at all
    /// (default: core when a node has no more ranks than cores, else none)
    #[arg(long = "bind-to", value_name = "core|numa|none", value_parser = parse_bind_to)]
    bind_to: Option<BindTo>,
    /// Print each rank's binding on stderr
    #[arg(long = "report-bindings")]
    report_bindings: bool,
    /// pmi1: serve each rank the PMI-1 wire-up of MPICH programs (PMI_FD,
    /// PMI_RANK, PMI_SIZE), and PMI-2 to a rank that asks for it at init,
    /// as mpiexec.hydra does; none: only dos's own
    /// (default: pmi1 when the program links MPICH's libmpich)
    #[arg(long = "mpi", value_name = "pmi1|none", value_parser = parse_mpi)]
    mpi: Option<bool>,
    /// Transports the ranks may use: a comma list of shm, tcp, roce and
    /// verbs (default: shm within a host; between hosts verbs when an RDMA
    /// device is there and dosrun was built with the verbs feature, else
    /// tcp; roce, the soft-RoCE over UDP, when tcp is not listed); without
    /// shm the ranks of one host use the network transport too (sets
    /// DOS_TRANSPORTS for the ranks, as -x would)
    #[arg(long, value_name = "LIST", action = ArgAction::Append,
          value_parser = parse_transports)]
    transports: Vec<String>,
    /// Prefix output lines with their rank and stream.
    #[arg(
        long = "tag-output",
        help = "Prefix output lines with [1,RANK]<stdout>: or [1,RANK]<stderr>:"
    )]
    tag_output: bool,
    /// Stop the job after SECS seconds (fractions allowed); exit status 124
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Milliseconds between SIGTERM and SIGKILL when the job is stopped
    /// (default: DOS_KILL_GRACE_MS, 200)
    #[arg(long, value_name = "MS", env = "DOS_KILL_GRACE_MS", value_parser = parse_grace)]
    grace: Option<Duration>,
    /// Stop the job when a rank stays stopped (SIGSTOP, SIGTSTP, a
    /// debugger) for SECS seconds, naming it; exit status 124
    #[arg(long = "stall-timeout", value_name = "SECS", value_parser = parse_stall_timeout)]
    stall_timeout: Option<Duration>,
    /// Export NAME (its current value, or VALUE) to the ranks; repeatable
    #[arg(short = 'x', value_name = "NAME[=VALUE]", action = ArgAction::Append,
          value_parser = parse_export)]
    exports: Vec<Export>,
    /// How to start node agents on remote hosts (default
    /// "ssh -o BatchMode=yes"); CMD is split at spaces, the host is appended
    /// (or replaces a word {host}), then AGENT-PATH --agent
    #[arg(long = "launch-agent", value_name = "CMD", value_parser = parse_launch_agent)]
    launch_agent: Option<Words>,
    /// dosrun's path on the remote hosts (default: this dosrun's path)
    #[arg(long = "agent-path", value_name = "PATH", value_parser = parse_agent_path)]
    agent_path: Option<PathBuf>,
    /// Milliseconds between heartbeats of dosrun and its node agents
    /// (default 200)
    #[arg(long = "heartbeat-interval", value_name = "MS",
          value_parser = parse_heartbeat_interval)]
    heartbeat_interval: Option<Duration>,
    /// A host whose agent is silent this long is lost: the job stops, exit
    /// status 1 (default 2)
    #[arg(long = "heartbeat-timeout", value_name = "SECS",
          value_parser = parse_heartbeat_timeout)]
    heartbeat_timeout: Option<Duration>,
    /// Start a dosfs server on every node of the job over DIR/NODE-ID
    /// (formatted on first use, reused after: a later job mounts the same
    /// data); the ranks find the address file in $DOSFS (DIR/dosfs-NODE-ID.addr);
    /// servers are synced and stopped when the job ends
    #[arg(long = "fs", value_name = "DIR", value_parser = parse_fs_path)]
    fs: Option<PathBuf>,
    /// With --fs: at the end, copy the whole file system to the directory
    /// PATH on this host before the servers stop
    #[arg(long = "fs-stage-out", value_name = "PATH", value_parser = parse_fs_path)]
    fs_stage_out: Option<PathBuf>,
    /// With --fs: also write the address file to FILE here, with dosrun's
    /// pid (`dosfs up --hostfile` runs dosrun so)
    #[arg(long = "fs-addr", value_name = "FILE", value_parser = parse_fs_path, hide = true)]
    fs_addr: Option<PathBuf>,
    /// Restart the job after a failure (a rank killed, exiting non-zero or
    /// aborting, a host lost), at most K times (default 0)
    #[arg(long = "max-restarts", value_name = "K", value_parser = parse_max_restarts)]
    max_restarts: Option<usize>,
    /// With --max-restarts: hold the last N hosts back as spares that
    /// replace lost hosts
    #[arg(long = "spares", value_name = "N", value_parser = parse_spares)]
    spares: Option<usize>,
    /// With --max-restarts: when no spare nor free slot can take a lost
    /// host's ranks, restart on M ranks (the program must allow it)
    #[arg(long = "restart-np", value_name = "M", value_parser = parse_restart_np)]
    restart_np: Option<usize>,
    /// Print the transports and tunables, then exit
    #[arg(long)]
    info: bool,
    /// Print this machine's packages, NUMA nodes, cores and PUs, then exit
    #[arg(long)]
    topology: bool,
    /// Print this help, then exit
    #[arg(short = 'h', long)]
    help: bool,
    /// Print the version, then exit
    #[arg(short = 'V', long)]
    version: bool,
    /// The program the ranks run, and its arguments (passed as they are:
    /// [`normalise`] puts them after `--`).
    #[arg(num_args = 0.., hide = true)]
    command: Vec<OsString>,
}

/// The hosts of one `-H`.
#[derive(Debug, Clone, PartialEq)]
struct HostList(Vec<HostEntry>);

/// The words of `--launch-agent`.
#[derive(Debug, Clone, PartialEq)]
struct Words(Vec<String>);

/// The options that ask for information instead of a job: the first of
/// them ends the options.
const ACTIONS: [&str; 4] = ["help", "version", "info", "topology"];

/// The error for an option, by clap id, that may be given only once.
fn given_twice(id: &str) -> Option<&'static str> {
    Some(match id {
        "np" => "the number of ranks is given twice",
        "hostfile" => "the hostfile is given twice",
        "map_by" => "--map-by is given twice",
        "per_node" => "the number of ranks per node is given twice",
        "bind_to" => "--bind-to is given twice",
        "fs" => "--fs is given twice",
        "fs_stage_out" => "--fs-stage-out is given twice",
        "max_restarts" => "--max-restarts is given twice",
        "spares" => "--spares is given twice",
        "restart_np" => "--restart-np is given twice",
        _ => return None,
    })
}

/// The usage text printed by `--help`.
pub fn help() -> String {
    // clap ends the options with a line break and starts the text after
    // them with two: keep one blank line between.
    let text = Cli::command().render_help().to_string();
    text.replacen("\n\n\n", "\n\n", 1)
}

/// An mpirun-style command line rewritten for clap.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalised {
    /// `dosrun`, the options as `--LONG[=VALUE]` (`-x=VALUE` for `-x`), then
    /// `--` and the program with its arguments when there is a program.
    pub argv: Vec<OsString>,
    /// The clap ids of the options given, in order.
    pub given: Vec<String>,
}

/// Rewrites dosrun's arguments (without `argv[0]`) into the form clap
/// parses: see the [module docs](self).
pub fn normalise<I>(argv: I) -> Result<Normalised, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let cmd = Cli::command();
    let mut it = argv.into_iter();
    let mut out = Normalised {
        argv: vec!["dosrun".into()],
        given: Vec::new(),
    };
    let mut seen = HashSet::new();
    while let Some(arg) = it.next() {
        let bytes = arg.as_encoded_bytes();
        if bytes == b"--" {
            out.argv.push(arg);
            out.argv.extend(it);
            break;
        }
        if bytes.len() < 2 || bytes[0] != b'-' {
            out.argv.push("--".into());
            out.argv.push(arg);
            out.argv.extend(it);
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
        let option = cmd.get_arguments().find(|a| {
            a.get_long() == Some(name)
                || a.get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&name))
                || (name.chars().count() == 1 && a.get_short() == name.chars().next())
        });
        let Some(option) = option.filter(|a| !a.is_positional()) else {
            return Err(usage(format!("unknown option {text}")));
        };
        let id = option.get_id().as_str();
        if let Some(msg) = given_twice(id) {
            if !seen.insert(id.to_string()) {
                return Err(usage(msg));
            }
        }
        out.given.push(id.to_string());
        let spelled = match option.get_long() {
            Some(long) => format!("--{long}"),
            None => format!("-{}", option.get_short().expect("a named option")),
        };
        if option.get_action().takes_values() {
            let value = match inline {
                Some(v) => v,
                None => match it.next() {
                    Some(v) => v
                        .into_string()
                        .map_err(|_| usage(format!("{text}: the value is not valid UTF-8")))?,
                    None => {
                        let what = option
                            .get_value_names()
                            .and_then(|n| n.first())
                            .map_or("a value".to_string(), ToString::to_string);
                        return Err(usage(format!("{text} needs {what}")));
                    }
                },
            };
            out.argv.push(format!("{spelled}={value}").into());
        } else {
            if inline.is_some() {
                return Err(usage(format!("{name} takes no value")));
            }
            out.argv.push(spelled.into());
            if ACTIONS.contains(&id) {
                break;
            }
        }
    }
    Ok(out)
}

/// Parses dosrun's arguments (without `argv[0]`), outside a Slurm
/// allocation.
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse<I>(argv: I) -> Result<Action, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    parse_in(argv, false)
}

/// Parses dosrun's arguments (without `argv[0]`); `in_allocation`: dosrun
/// runs inside a Slurm allocation, which gives the hosts and `-n` when the
/// command line does not (see `slurm`).
pub fn parse_in<I>(argv: I, in_allocation: bool) -> Result<Action, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let n = normalise(argv)?;
    let matches = Cli::command()
        .try_get_matches_from(&n.argv)
        .map_err(|e| clap_error(&e, &n.given))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| clap_error(&e, &n.given))?;
    if cli.help {
        return Ok(Action::Help);
    }
    if cli.version {
        return Ok(Action::Version);
    }
    if cli.info {
        return Ok(Action::Info);
    }
    if cli.topology {
        return Ok(Action::Topology);
    }

    // -x and --transports both export, in the order given.
    let at = |id: &str| matches.indices_of(id).into_iter().flatten();
    let mut exports: Vec<(usize, Export)> = at("exports").zip(cli.exports).collect();
    exports.extend(
        at("transports").zip(
            cli.transports
                .into_iter()
                .map(|t| Export::Set("DOS_TRANSPORTS".into(), t.into())),
        ),
    );
    exports.sort_by_key(|(i, _)| *i);

    let mut command = cli.command.into_iter();
    let Some(program) = command.next() else {
        return Err(usage("no program given: dosrun -n N PROGRAM [ARGS...]"));
    };
    if program.is_empty() {
        return Err(usage("the program name is empty"));
    }
    let hosts: Vec<HostEntry> = cli.hosts.into_iter().flat_map(|h| h.0).collect();
    if !hosts.is_empty() && cli.hostfile.is_some() {
        return Err(usage("give hosts with -H or with --hostfile, not both"));
    }
    if cli.fs.is_none() && (cli.fs_stage_out.is_some() || cli.fs_addr.is_some()) {
        return Err(usage("--fs-stage-out needs --fs DIR"));
    }
    if cli.np.is_none()
        && hosts.is_empty()
        && cli.hostfile.is_none()
        && cli.per_node.is_none()
        && !in_allocation
    {
        return Err(usage("missing -n N: the number of ranks"));
    }
    let max_restarts = cli.max_restarts.unwrap_or(0);
    if max_restarts == 0 && (cli.spares.is_some() || cli.restart_np.is_some()) {
        return Err(usage("--spares and --restart-np need --max-restarts K"));
    }
    if cli.spares.is_some_and(|n| n > 0)
        && hosts.is_empty()
        && cli.hostfile.is_none()
        && !in_allocation
    {
        return Err(usage(
            "--spares needs hosts (-H, --hostfile or a Slurm allocation)",
        ));
    }
    if max_restarts > 0 && cli.fs.is_some() {
        return Err(usage(
            "--max-restarts cannot be combined with --fs yet (use a dosfs of its own: dosfs up)",
        ));
    }
    Ok(Action::Run(Box::new(RunOpts {
        np: cli.np,
        hosts,
        hostfile: cli.hostfile,
        map_by: cli.map_by.unwrap_or_default(),
        per_node: cli.per_node,
        oversubscribe: cli.oversubscribe,
        bind_to: cli.bind_to,
        report_bindings: cli.report_bindings,
        tag_output: cli.tag_output,
        timeout: cli.timeout,
        grace: cli.grace,
        exports: exports.into_iter().map(|(_, e)| e).collect(),
        launch_agent: cli.launch_agent.map(|w| w.0),
        agent_path: cli.agent_path,
        heartbeat_interval: cli.heartbeat_interval,
        heartbeat_timeout: cli.heartbeat_timeout,
        stall_timeout: cli.stall_timeout,
        fs: cli.fs,
        fs_stage_out: cli.fs_stage_out,
        fs_addr: cli.fs_addr,
        max_restarts,
        pmi1: cli.mpi,
        spares: cli.spares.unwrap_or(0),
        restart_np: cli.restart_np,
        program,
        args: command.collect(),
    })))
}

/// One line for a clap error. After [`normalise`] only values are left for
/// clap to refuse, with the message of their parser; a value that came from
/// the environment names its variable.
fn clap_error(e: &clap::Error, given: &[String]) -> UsageError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let source = std::error::Error::source(e).map(ToString::to_string);
    if let (ErrorKind::ValueValidation, Some(msg)) = (e.kind(), source) {
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(a)) => a.clone(),
            _ => String::new(),
        };
        let cmd = Cli::command();
        let from_env = cmd.get_arguments().find_map(|a| {
            let long = a.get_long()?;
            let named = arg == format!("--{long}") || arg.starts_with(&format!("--{long} "));
            let given = given.iter().any(|g| g == a.get_id().as_str());
            (named && !given).then(|| a.get_env())?
        });
        return match from_env {
            Some(var) => usage(format!("{msg} (from {})", var.to_string_lossy())),
            None => usage(msg),
        };
    }
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    usage(line.strip_prefix("error: ").unwrap_or(line))
}

fn parse_count(opt: &str, v: &str) -> Result<usize, String> {
    let n: usize = v
        .trim()
        .parse()
        .map_err(|_| format!("{opt}: {v:?} is not a number of ranks"))?;
    if n == 0 {
        return Err(format!("{opt}: the number of ranks must be at least 1"));
    }
    if n > MAX_RANKS {
        return Err(format!("{opt}: at most {MAX_RANKS} ranks"));
    }
    Ok(n)
}

fn parse_np(v: &str) -> Result<usize, String> {
    parse_count("-n", v)
}

fn parse_per_node(v: &str) -> Result<usize, String> {
    parse_count("-N", v)
}

/// Most restarts one dosrun may make.
pub const MAX_RESTARTS: usize = 10_000;

fn parse_max_restarts(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(k) if k <= MAX_RESTARTS => Ok(k),
        _ => Err(format!(
            "--max-restarts: not a number from 0 to {MAX_RESTARTS}: {v:?}"
        )),
    }
}

fn parse_spares(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(k) if k < MAX_RANKS => Ok(k),
        _ => Err(format!("--spares: not a number of hosts: {v:?}")),
    }
}

fn parse_restart_np(v: &str) -> Result<usize, String> {
    parse_count("--restart-np", v)
}

fn parse_hosts(v: &str) -> Result<HostList, String> {
    hosts::parse_host_list(v)
        .map(HostList)
        .map_err(|e| e.to_string())
}

fn parse_hostfile(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("--hostfile: empty file name".into());
    }
    Ok(PathBuf::from(v))
}

fn parse_map_by(v: &str) -> Result<MapBy, String> {
    match v {
        "slot" => Ok(MapBy::Slot),
        "node" => Ok(MapBy::Node),
        _ => Err(format!(
            "--map-by: unknown value {v:?} (expected slot or node)"
        )),
    }
}

fn parse_mpi(v: &str) -> Result<bool, String> {
    match v {
        "pmi1" => Ok(true),
        "none" => Ok(false),
        _ => Err(format!(
            "--mpi: unknown value {v:?} (expected pmi1 or none)"
        )),
    }
}

fn parse_bind_to(v: &str) -> Result<BindTo, String> {
    BindTo::parse(v)
        .ok_or_else(|| format!("--bind-to: unknown value {v:?} (expected core, numa or none)"))
}

fn parse_transports(v: &str) -> Result<String, String> {
    match dos::config::Transports::parse(v) {
        Some(_) => Ok(v.to_string()),
        None => Err(format!(
            "--transports: {v:?} is not a comma list of shm, tcp, roce and verbs"
        )),
    }
}

/// A positive number of seconds, fractions allowed.
fn seconds(v: &str) -> Option<Duration> {
    let s: f64 = v.trim().parse().ok()?;
    if s.is_nan() || s <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(s).ok()
}

fn parse_timeout(v: &str) -> Result<Duration, String> {
    seconds(v).ok_or_else(|| format!("--timeout: {v:?} is not a positive number of seconds"))
}

fn parse_stall_timeout(v: &str) -> Result<Duration, String> {
    seconds(v).ok_or_else(|| "--stall-timeout: not a positive number of seconds".into())
}

fn parse_grace(v: &str) -> Result<Duration, String> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("--grace: {v:?} is not a number of milliseconds"))
}

fn parse_export(v: &str) -> Result<Export, String> {
    let (name, value) = match v.split_once('=') {
        Some((n, val)) => (n, Some(val)),
        None => (v, None),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!("-x: {name:?} is not a variable name"));
    }
    Ok(match value {
        Some(val) => Export::Set(name.to_string(), val.into()),
        None => Export::Current(name.to_string()),
    })
}

fn parse_launch_agent(v: &str) -> Result<Words, String> {
    let words: Vec<String> = v.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return Err("--launch-agent: empty command".into());
    }
    Ok(Words(words))
}

fn parse_fs_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("--fs: empty path".into());
    }
    Ok(PathBuf::from(v))
}

fn parse_agent_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("--agent-path: empty path".into());
    }
    Ok(PathBuf::from(v))
}

fn parse_heartbeat_interval(v: &str) -> Result<Duration, String> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|&m| (1..=60_000).contains(&m))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("--heartbeat-interval: {v:?} is not 1 to 60000 milliseconds"))
}

fn parse_heartbeat_timeout(v: &str) -> Result<Duration, String> {
    let t = seconds(v).ok_or("--heartbeat-timeout: not a positive number of seconds")?;
    if t < Duration::from_millis(10) || t > Duration::from_secs(3600) {
        return Err("--heartbeat-timeout: must be 0.01 to 3600 seconds".into());
    }
    Ok(t)
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
    fn mpi_and_the_allocation() {
        assert_eq!(run(&["-n", "1", "p"]).pmi1, None);
        assert_eq!(run(&["--mpi", "pmi1", "-n", "1", "p"]).pmi1, Some(true));
        assert_eq!(run(&["-mpi=pmi1", "-n", "1", "p"]).pmi1, Some(true));
        assert_eq!(
            run(&["--mpi", "pmi1", "--mpi", "none", "-n", "1", "p"]).pmi1,
            Some(false)
        );
        assert!(err(&["--mpi", "pmix", "-n", "1", "p"]).contains("expected pmi1 or none"));
        // In an allocation -n and the hosts may be left out.
        assert_eq!(err(&["p"]), "missing -n N: the number of ranks");
        let Ok(Action::Run(o)) = parse_in(["p".into()], true) else {
            panic!("p in an allocation");
        };
        assert_eq!((o.np, o.hosts.len()), (None, 0));
        assert!(parse_in(
            [
                "--max-restarts".into(),
                "1".into(),
                "--spares".into(),
                "1".into(),
                "p".into()
            ],
            true
        )
        .is_ok());
        assert!(
            err(&["--max-restarts", "1", "--spares", "1", "-n", "2", "p"])
                .contains("a Slurm allocation")
        );
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
    fn fs_options() {
        let o = run(&["-n", "2", "--fs", "/scratch/fs", "--fs-stage-out=out", "p"]);
        assert_eq!(o.fs.as_deref(), Some(std::path::Path::new("/scratch/fs")));
        assert_eq!(o.fs_stage_out.as_deref(), Some(std::path::Path::new("out")));
        assert_eq!(o.fs_addr, None);
        // mpirun's one-dash spelling, and the hidden --fs-addr.
        let o = run(&["-n", "1", "-fs", "d", "-fs-addr", "f.addr", "p"]);
        assert_eq!(o.fs.as_deref(), Some(std::path::Path::new("d")));
        assert_eq!(o.fs_addr.as_deref(), Some(std::path::Path::new("f.addr")));
        let o = run(&["-n", "1", "p", "--fs", "x"]);
        assert_eq!((o.fs, o.args.len()), (None, 2));
        assert_eq!(
            normalised(&["--fs", "d", "--fs-stage-out", "o", "p"]),
            ["--fs=d", "--fs-stage-out=o", "--", "p"]
        );
        assert!(err(&["-n", "1", "--fs-stage-out", "o", "p"]).contains("needs --fs"));
        assert!(err(&["-n", "1", "--fs", "a", "--fs", "b", "p"]).contains("given twice"));
        assert!(err(&[
            "-n",
            "1",
            "--fs",
            "d",
            "--fs-stage-out",
            "a",
            "--fs-stage-out",
            "b",
            "p"
        ])
        .contains("given twice"));
        assert!(err(&["-n", "1", "--fs=", "p"]).contains("empty"));
        assert!(err(&["-n", "1", "--fs"]).contains("--fs needs DIR"));
        assert!(!help().contains("--fs-addr"), "hidden");
        assert!(help().contains("--fs-stage-out"));
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

    #[test]
    fn restart_options() {
        let o = run(&[
            "--max-restarts",
            "3",
            "--spares=1",
            "-restart-np",
            "2",
            "-H",
            "a,b",
            "p",
        ]);
        assert_eq!((o.max_restarts, o.spares, o.restart_np), (3, 1, Some(2)));
        let o = run(&["-n", "1", "p"]);
        assert_eq!((o.max_restarts, o.spares, o.restart_np), (0, 0, None));
        for (args, msg) in [
            (
                &["--max-restarts", "-1", "-n", "1", "p"][..],
                "--max-restarts: not a number",
            ),
            (
                &["--max-restarts", "10001", "-n", "1", "p"][..],
                "--max-restarts: not a number",
            ),
            (
                &["--max-restarts", "1", "--spares", "x", "-n", "1", "p"][..],
                "--spares: not a number",
            ),
            (
                &["--restart-np", "2", "-n", "1", "p"][..],
                "--spares and --restart-np need --max-restarts K",
            ),
            (
                &["--max-restarts", "1", "--spares", "1", "-n", "1", "p"][..],
                "--spares needs hosts",
            ),
            (
                &["--max-restarts", "1", "--fs", "/tmp/x", "-n", "1", "p"][..],
                "--max-restarts cannot be combined with --fs",
            ),
            (
                &["--max-restarts", "1", "--max-restarts", "2", "-n", "1", "p"][..],
                "--max-restarts is given twice",
            ),
        ] {
            let m = err(args);
            assert!(m.starts_with(msg), "{args:?}: {m}");
        }
    }

    fn normalised(args: &[&str]) -> Vec<String> {
        let n = normalise(args.iter().map(OsString::from)).unwrap();
        n.argv
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    /// Every option answers to one dash and to two, by its long name and,
    /// for one-letter options, by its short name; clap sees one spelling.
    #[test]
    fn normaliser_spellings() {
        for (spellings, value, out) in [
            (&["-n", "-np", "--n", "--np"][..], Some("4"), "--np=4"),
            (&["-H", "--H", "-host", "--host"], Some("a:2"), "--host=a:2"),
            (
                &["-N", "--N", "-npernode", "--npernode"],
                Some("2"),
                "--npernode=2",
            ),
            (&["-x", "--x"], Some("A=1"), "-x=A=1"),
            (
                &["-hostfile", "--hostfile", "-machinefile", "--machinefile"],
                Some("f"),
                "--hostfile=f",
            ),
            (&["-map-by", "--map-by"], Some("node"), "--map-by=node"),
            (&["-bind-to", "--bind-to"], Some("core"), "--bind-to=core"),
            (
                &["-transports", "--transports"],
                Some("shm"),
                "--transports=shm",
            ),
            (&["-timeout", "--timeout"], Some("1"), "--timeout=1"),
            (&["-grace", "--grace"], Some("5"), "--grace=5"),
            (
                &["-stall-timeout", "--stall-timeout"],
                Some("1"),
                "--stall-timeout=1",
            ),
            (
                &["-launch-agent", "--launch-agent"],
                Some("ssh"),
                "--launch-agent=ssh",
            ),
            (
                &["-agent-path", "--agent-path"],
                Some("/d"),
                "--agent-path=/d",
            ),
            (
                &["-heartbeat-interval", "--heartbeat-interval"],
                Some("9"),
                "--heartbeat-interval=9",
            ),
            (
                &["-heartbeat-timeout", "--heartbeat-timeout"],
                Some("3"),
                "--heartbeat-timeout=3",
            ),
            (
                &["-oversubscribe", "--oversubscribe"],
                None,
                "--oversubscribe",
            ),
            (
                &["-report-bindings", "--report-bindings"],
                None,
                "--report-bindings",
            ),
            (&["-tag-output", "--tag-output"], None, "--tag-output"),
        ] {
            for s in spellings {
                let mut args = vec![*s];
                args.extend(value);
                args.push("prog");
                assert_eq!(normalised(&args), [out, "--", "prog"], "{args:?}");
                if let Some(v) = value {
                    let joined = format!("{s}={v}");
                    assert_eq!(
                        normalised(&[&joined, "prog"]),
                        [out, "--", "prog"],
                        "{joined}"
                    );
                }
            }
        }
        for (spellings, out) in [
            (&["-h", "--h", "-help", "--help"][..], "--help"),
            (&["-V", "--V", "-version", "--version"], "--version"),
            (&["-info", "--info"], "--info"),
            (&["-topology", "--topology"], "--topology"),
        ] {
            for s in spellings {
                // An informational option ends the options.
                assert_eq!(normalised(&[s, "--bogus", "prog"]), [out], "{s}");
            }
        }
    }

    /// The normaliser knows every option clap knows, and the reverse:
    /// nothing is reachable only through one of them.
    #[test]
    fn normaliser_covers_every_option() {
        for a in Cli::command()
            .get_arguments()
            .filter(|a| !a.is_positional())
        {
            let name = a
                .get_long()
                .map(|l| format!("-{l}"))
                .unwrap_or_else(|| format!("-{}", a.get_short().unwrap()));
            let n = normalise([OsString::from(&name), "1".into(), "p".into()]);
            assert!(n.is_ok(), "{name}: {n:?}");
        }
    }

    /// What follows the program is the program's, options or not.
    #[test]
    fn program_arguments_are_left_alone() {
        let o = run(&["-n", "2", "./prog", "-np", "5"]);
        assert_eq!(
            (o.np, o.program.as_os_str()),
            (Some(2), OsStr::new("./prog"))
        );
        assert_eq!(o.args, ["-np", "5"]);
        let o = run(&["-np", "2", "prog", "--help", "-x", "A", "--", "--", "-H"]);
        assert_eq!(o.args, ["--help", "-x", "A", "--", "--", "-H"]);
        assert!(o.exports.is_empty() && o.hosts.is_empty());
        assert_eq!(
            normalised(&["-n", "2", "prog", "-tag-output"]),
            ["--np=2", "--", "prog", "-tag-output"]
        );
        // After --, the next argument is the program whatever it looks like.
        let o = run(&["-n", "1", "--", "--help", "-n", "3"]);
        assert_eq!(o.program, "--help");
        assert_eq!(o.args, ["-n", "3"]);
        let o = run(&["-n", "1", "--", "--"]);
        assert_eq!((o.program.as_os_str(), o.args.len()), (OsStr::new("--"), 0));
        // Values that look like options are values.
        assert_eq!(normalised(&["-x", "-A", "p"]), ["-x=-A", "--", "p"]);
        assert!(err(&["-x", "-A", "p"]).contains("-x"));
        // Not valid UTF-8 in the program's arguments is passed on as it is.
        use std::os::unix::ffi::OsStrExt;
        let odd = OsStr::from_bytes(b"\xff-x").to_os_string();
        let Ok(Action::Run(o)) = parse(["-n".into(), "1".into(), "p".into(), odd.clone()]) else {
            panic!("should parse");
        };
        assert_eq!(o.args, std::slice::from_ref(&odd));
        assert!(parse(["-n".into(), odd]).is_err());
    }

    #[test]
    fn normaliser_errors() {
        for (args, needle) in [
            (&["-n4", "p"][..], "unknown option -n4"),
            (&["-frobnicate", "p"], "unknown option -frobnicate"),
            (&["-", "-n"], ""),
            (&["--np"], "--np needs N"),
            (&["-hostfile"], "-hostfile needs FILE"),
            (&["-x"], "-x needs NAME[=VALUE]"),
            (
                &["-tag-output=1", "-n", "1", "p"],
                "tag-output takes no value",
            ),
            (&["--help=1"], "help takes no value"),
            (
                &["-np", "1", "--n", "2", "p"],
                "the number of ranks is given twice",
            ),
            (&["-npernode", "1", "--N=2", "p"], "per node is given twice"),
            (
                &["-hostfile", "a", "-machinefile", "b", "p"],
                "hostfile is given twice",
            ),
        ] {
            if needle.is_empty() {
                // "-" alone is a program (stdin's, as in mpirun).
                assert!(normalise(args.iter().map(OsString::from)).is_ok());
                continue;
            }
            let m = err(args);
            assert!(m.contains(needle), "{args:?}: {m}");
        }
        // Options that may be repeated: the last one counts, or all do.
        let o = run(&["--timeout", "1", "-timeout", "2", "-n", "1", "p"]);
        assert_eq!(o.timeout, Some(Duration::from_secs(2)));
        let o = run(&["-tag-output", "--tag-output", "-n", "1", "p"]);
        assert!(o.tag_output);
    }

    /// `--transports` and `-x` export in the order given; the last wins.
    #[test]
    fn transports_export_in_order() {
        let o = run(&[
            "-x",
            "DOS_TRANSPORTS=tcp",
            "--transports",
            "shm,roce",
            "-x",
            "A=1",
            "-transports=verbs",
            "-n",
            "1",
            "p",
        ]);
        let t = |v: &str| Export::Set("DOS_TRANSPORTS".into(), v.into());
        assert_eq!(
            o.exports,
            [
                t("tcp"),
                t("shm,roce"),
                Export::Set("A".into(), "1".into()),
                t("verbs")
            ]
        );
        assert!(err(&["--transports", "ib", "-n", "1", "p"]).contains("--transports"));
    }

    #[test]
    fn help_lists_every_option() {
        let h = help();
        assert!(h.starts_with("Usage: dosrun"));
        // Hidden options (`--fs-addr`, for dosfs) are the exception.
        for a in Cli::command()
            .get_arguments()
            .filter(|a| !a.is_positional() && !a.is_hide_set())
        {
            let name = a
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| format!("-{}", a.get_short().unwrap()));
            assert!(h.contains(&name), "{name} missing from --help");
        }
        for spelled in ["-np", "--machinefile", "DOS_KILL_GRACE_MS", "Exit status"] {
            assert!(h.contains(spelled), "{spelled}");
        }
        assert!(!h.contains("\n\n\n"));
    }
}
