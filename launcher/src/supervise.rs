//! Supervision: one single-threaded poll loop over the ranks' exits
//! (pidfds), their output pipes, dosrun's stdin, stdout and stderr, the
//! signals dosrun receives (a signalfd), the wire-up service and, in a
//! multi-node job, the node agents (whose frames carry the remote ranks'
//! starts, output, exits and fences, see `agent::pool`).
//!
//! The loop deals in [`RankRecord`]s (rank, host, pid, status). A rank's pid
//! is also its process group id; dosrun reaps no rank before the job ends, so
//! a dead rank stays a zombie that keeps its group id from being reused, and
//! `kill(-pgid)` reaches whatever the rank left behind.
//!
//! **Blame.** When a rank dies, its peers see their connections to it fail
//! and often exit or abort ("transport error") before the kernel's word of
//! the death itself reaches dosrun: a socket closes before the dying
//! process's pidfd becomes readable, and a remote death travels through its
//! node agent. So dosrun ranks the evidence: a rank killed by a signal, a
//! lost host, a rank that could not start, `--timeout` and `--stall-timeout`
//! are causes and stop the job at once; a non-zero exit or an abort may be a
//! consequence, and opens a window (`DOS_BLAME_WINDOW_MS`, 200 ms) in which
//! a cause, if one comes, takes the blame. At the end of the window (or once
//! every rank has ended) the first such failure is blamed. The blamed
//! failure is printed first and gives the exit status (137 for a SIGKILL);
//! the failures seen before the decision follow as consequences, and what
//! dies of the stop itself is not reported.
//!
//! **Interruption.** SIGINT, SIGTERM or SIGHUP sent to dosrun is forwarded to
//! every rank, dosrun says that the job was interrupted (blaming no rank)
//! and ends the job after the grace; its exit status is 128 plus the signal
//! unless every rank handled the signal and exited with 0. A second such
//! signal kills the job at once.
//!
//! **Stalls.** SIGCHLD tells dosrun (and each node agent, which forwards it)
//! that a rank was stopped (SIGSTOP, SIGTSTP, a debugger) or continued. With
//! `--stall-timeout SECS`, a rank stopped for that long stops the job with a
//! line naming it (exit status 124, as `--timeout`). A stopped rank stops
//! every rank waiting on it, and is the one stall the kernel reports for
//! certain; a rank spinning without progress is left to `--timeout`.
//!
//! **Restarts.** A run ends with an [`Ended`]: the exit status and, for a
//! failure, what `crate::restart` needs to decide on a restart (the cause
//! and whether a restart may cure it, the blamed rank and its host, the
//! hosts lost, when the first evidence came). A restarted run holds the
//! head of its report line and prints it when rank 0 announces the
//! checkpoint it restored (a put of `dos.ckpt.restored`, see
//! `pmi_server::ANNOUNCED`), `restart::REPORT_WAIT` after its first fence,
//! or when it ends.
//!

//! queued, dosrun stops reading the ranks' pipes and the node agents'
//! connections (the agents in turn stop reading their ranks' pipes, whose
//! writers block). Heartbeat silence is not held against an agent while its
//! connection is not read.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::agent::pool::{AgentEvent, AgentTag, Agents};
use crate::agent::wire::{FromAgent, ToAgent};
use crate::plan::Plan;
use crate::pmi_server::{Event, FenceOutcome, GlobalFence, PollTag, Service};
use crate::restart::Failure;
use crate::spawn::{SpawnError, Spawned};
use crate::stdio::{LineSplitter, Sink};
use crate::sys::{self, ExitCause, SignalFd};

/// Exit status of a usage error (bad options, a program that cannot run
/// here, ranks that do not fit).
pub const STATUS_USAGE: i32 = 2;
/// Exit status when the job ran longer than `--timeout` (as timeout(1)).
pub const STATUS_TIMEOUT: i32 = 124;
/// Exit status when dosrun itself failed.
pub const STATUS_INTERNAL: i32 = 125;
/// Exit status when a host of the job was lost (its node agent or its link).
pub const STATUS_HOST_LOST: i32 = 1;
/// Exit status when a rank stayed stopped longer than `--stall-timeout`.
pub const STATUS_STALLED: i32 = STATUS_TIMEOUT;
/// Most consequences listed after the blamed failure.
const MAX_CONSEQUENCES: usize = 8;

/// Output queued for one of dosrun's descriptors beyond which dosrun stops
/// reading the ranks' pipes (they block: back-pressure).
const HIGH_WATER: usize = 1 << 20;
/// Bytes of dosrun's stdin buffered for rank 0.
const STDIN_BUF: usize = 64 * 1024;
/// How long output pipes may stay open after every rank has exited and its
/// process group was killed (only a process that left its group holds them).
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// One rank as the supervisor sees it.
#[derive(Debug)]
pub struct RankRecord {
    /// Rank in the job.
    pub rank: usize,
    /// Host it runs on.
    pub host: String,
    /// Its pid (on its host), also its process group id; 0 until started.
    pub pid: i32,
    /// How it ended; `None` while it runs.
    pub status: Option<ExitCause>,
    /// Its node.
    pub node: usize,
    /// It runs on another host, under a node agent.
    pub remote: bool,
    /// It never started, or its host was lost: nothing to wait for.
    pub lost: bool,
    /// Since when it is stopped, and by which signal.
    stopped: Option<(Instant, i32)>,
    pidfd: Option<OwnedFd>,
}

impl RankRecord {
    fn done(&self) -> bool {
        self.status.is_some() || self.lost
    }
}

/// Why the job is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    RankFailed(ExitCause),
    Timeout,
    Abort(i32),
    StartFailed(i32),
    HostLost,
    Internal,
    /// dosrun received this signal (SIGINT, SIGTERM, SIGHUP).
    Interrupted(i32),
    Stalled,
}

/// A failure that may be the consequence of another (a non-zero exit, an
/// abort), waiting for the blame window to close.
#[derive(Debug)]
struct Suspect {
    rank: usize,
    cause: Cause,
    /// What happened, without the `dosrun: ` prefix.
    what: String,
}

#[derive(Debug)]
struct Stream {
    /// The pipe, for a local rank; remote output arrives in frames.
    fd: Option<OwnedFd>,
    splitter: LineSplitter,
    /// 0: dosrun's stdout, 1: its stderr.
    sink: usize,
}

/// dosrun's stdin on its way to rank 0.
#[derive(Debug)]
struct StdinRelay {
    to: OwnedFd,
    buf: Vec<u8>,
    eof: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Signal,
    Service(PollTag),
    Agent(AgentTag),
    Exit(usize),
    Output(usize),
    StdinIn,
    StdinOut,
    Sink(usize),
}

/// The supervisor of one job.
#[derive(Debug)]
pub struct Supervisor {
    ranks: Vec<RankRecord>,
    streams: Vec<Option<Stream>>,
    sinks: [Sink<'static>; 2],
    stdin: Option<StdinRelay>,
    signals: SignalFd,
    service: Service,
    fence: GlobalFence,
    local_node: Option<usize>,
    agents: Option<Agents>,
    grace: Duration,
    timeout: Option<Duration>,
    timeout_at: Option<Instant>,
    kill_at: Option<Instant>,
    drain_until: Option<Instant>,
    cause: Option<Cause>,
    stop_signals: u32,
    /// Failures that may be consequences, in the order seen.
    suspects: Vec<Suspect>,
    /// When the first suspect gets the blame if no cause came.
    blame_at: Option<Instant>,
    blame_window: Duration,
    stall_timeout: Option<Duration>,
    /// `--fs`: stage-out and the local server's stop, before the agents exit.
    fs_end: Option<crate::fsjob::FsEnd>,
    /// The rank blamed for the stop, and its host (or the lost host).
    culprit: (Option<usize>, Option<String>),
    /// The stop line, without `dosrun: ` and `; stopping the job`.
    stop_what: Option<String>,
    /// When the first failure (cause or suspect) was seen.
    first_evidence: Option<Instant>,
    /// Hosts lost during the run.
    lost_hosts: Vec<String>,
    /// The report of the restart this run is, until it is printed.
    restart: Option<PendingReport>,
}

/// The line of the restart this run is (see [`crate::restart`]), waiting
/// for the checkpoint rank 0 restored, or for the wait after the fence.
#[derive(Debug)]
struct PendingReport {
    head: String,
    since: Instant,
    fence_at: Option<Instant>,
    report_at: Option<Instant>,
}

/// How a run ended: dosrun's exit status for it and, when it failed, why.
#[derive(Debug)]
pub struct Ended {
    /// The exit status.
    pub status: i32,
    /// The failure, if the run failed.
    pub failure: Option<Failure>,
    /// The run got as far as its supervisor (which printed the restart's
    /// line, if it was a restart); false when it could not be set up.
    pub supervised: bool,
}

/// How a job is watched (from the options and tunables).
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--stall-timeout`.
    pub stall_timeout: Option<Duration>,
    /// `DOS_BLAME_WINDOW_MS`.
    pub blame_window: Duration,
}

impl Supervisor {
    /// A supervisor for the job of `plan`, whose local ranks will be added
    /// with [`Supervisor::add`]; `service` serves node `local_node` (the
    /// node of this host, if it has ranks), and
    /// `agents` runs the other nodes.
    pub fn new(
        plan: &Plan,
        service: Service,
        local_node: Option<usize>,
        agents: Option<Agents>,
        signals: SignalFd,
        tag_output: bool,
        watch: Watch,
    ) -> Supervisor {
        let Watch {
            grace,
            timeout,
            stall_timeout,
            blame_window,
        } = watch;
        let mut ranks = Vec::with_capacity(plan.size());
        let mut streams = Vec::with_capacity(2 * plan.size());
        for p in plan.ranks() {
            let tag = |stream: &str| tag_output.then(|| LineSplitter::tag(p.rank, stream));
            for (k, name) in ["stdout", "stderr"].into_iter().enumerate() {
                streams.push(Some(Stream {
                    fd: None,
                    splitter: LineSplitter::new(tag(name)),
                    sink: k,
                }));
            }
            ranks.push(RankRecord {
                rank: p.rank,
                host: plan.host_of(p.rank).to_string(),
                pid: 0,
                status: None,
                node: p.node_id,
                remote: !plan.nodes()[p.node_id].local,
                lost: false,
                stopped: None,
                pidfd: None,
            });
        }
        Supervisor {
            ranks,
            streams,
            sinks: [
                Sink::new(rustix::stdio::stdout()),
                Sink::new(rustix::stdio::stderr()),
            ],
            stdin: None,
            signals,
            service,
            fence: GlobalFence::new(plan.nodes().len()),
            local_node,
            agents,
            grace,
            timeout,
            timeout_at: timeout.map(|t| Instant::now() + t),
            kill_at: None,
            drain_until: None,
            cause: None,
            stop_signals: 0,
            suspects: Vec::new(),
            blame_at: None,
            blame_window,
            stall_timeout,
            fs_end: None,
            culprit: (None, None),
            stop_what: None,
            first_evidence: None,
            lost_hosts: Vec::new(),
            restart: None,
        }
    }

    /// This run is a restart: `head` is the start of its report line
    /// ([`crate::restart::report_head`]), `since` the failure it recovers
    /// from. The line is printed when rank 0 announces the checkpoint it
    /// restored, or [`crate::restart::REPORT_WAIT`] after the first fence,
    /// or when the run ends.
    pub fn restart_report(&mut self, head: String, since: Instant) {
        self.restart = Some(PendingReport {
            head,
            since,
            fence_at: None,
            report_at: None,
        });
    }

    /// Prints the restart's line, if it is still pending.
    fn report_restart(&mut self, checkpoint: Option<&str>, now: Instant) {
        let Some(p) = self.restart.take() else {
            return;
        };
        let took = match checkpoint {
            Some(_) => Some(now.saturating_duration_since(p.since)),
            None => p.fence_at.map(|f| f.saturating_duration_since(p.since)),
        };
        let line = crate::restart::report_line(&p.head, checkpoint, took);
        self.sinks[1].push(line.as_bytes());
        self.sinks[1].push(b"\n");
    }

    /// A rank put a key dosrun hears of at once.
    fn on_announce(&mut self, key: &str, value: &[u8]) {
        if key == crate::restart::KEY_RESTORED {
            let name = String::from_utf8_lossy(value).into_owned();
            self.report_restart(Some(&name), Instant::now());
        }
    }

    /// Blames `rank` (on `host`) for the stop about to come, unless the job
    /// is already stopping.
    fn blame_rank(&mut self, rank: Option<usize>, host: Option<String>) {
        if self.cause.is_none() {
            let host =
                host.or_else(|| rank.and_then(|r| self.ranks.get(r)).map(|r| r.host.clone()));
            self.culprit = (rank, host);
        }
    }

    /// What the job's file system (`--fs`) does at the end, before the
    /// agents exit.
    pub fn set_fs_end(&mut self, e: crate::fsjob::FsEnd) {
        self.fs_end = Some(e);
    }

    /// Takes charge of a started local rank.
    pub fn add(&mut self, rank: usize, s: Spawned) {
        let Some(r) = self.ranks.get_mut(rank) else {
            return;
        };
        r.pid = s.pid;
        r.pidfd = Some(s.pidfd);
        if let Some(p) = s.pmi {
            self.service.adopt(rank, p);
        }
        for (k, fd) in [s.stdout, s.stderr].into_iter().enumerate() {
            if let Some(Some(st)) = self.streams.get_mut(2 * rank + k) {
                st.fd = Some(fd);
            }
        }
        if let Some(to) = s.stdin {
            self.stdin = Some(StdinRelay {
                to,
                buf: Vec::new(),
                eof: false,
            });
        }
    }

    /// Local rank `rank` could not be started: stops the ranks already
    /// running; the local ranks not started are not waited for.
    pub fn start_failed(&mut self, rank: usize, host: &str, program: &str, e: &SpawnError) {
        let why = format!("cannot start {program}: {e}");
        self.rank_start_failed(rank, host, e.status(), &why);
        for i in 0..self.ranks.len() {
            if !self.ranks[i].remote && self.ranks[i].pid == 0 {
                self.forget(i);
            }
        }
    }

    /// dosrun could not set the job up: stops what runs.
    pub fn internal_failure(&mut self, why: &str) {
        self.stop(Cause::Internal, format!("dosrun: {why}; stopping the job"));
    }

    fn rank_start_failed(&mut self, rank: usize, host: &str, status: i32, why: &str) {
        self.forget(rank);
        self.blame_rank(Some(rank), Some(host.to_string()));
        self.stop(
            Cause::StartFailed(status),
            format!("dosrun: rank {rank} on host {host}: {why}; stopping the job"),
        );
    }

    /// Rank `rank` will not be waited for (never started, or its host lost).
    fn forget(&mut self, rank: usize) {
        let Some(r) = self.ranks.get_mut(rank) else {
            return;
        };
        if r.status.is_none() {
            r.lost = true;
        }
        for k in 0..2 {
            if let Some(Some(mut st)) = self.streams.get_mut(2 * rank + k).map(Option::take) {
                st.splitter.finish(self.sinks[st.sink].queue());
            }
        }
    }

    /// Runs the job to its end; returns dosrun's exit status and the
    /// failure, if any.
    pub fn run(mut self) -> Ended {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut tags: Vec<Tag> = Vec::new();
        loop {
            let now = Instant::now();
            self.deadlines(now);
            if self.ranks.iter().all(RankRecord::done) {
                // No more evidence can come.
                self.blame();
                let until = match self.drain_until {
                    Some(t) => t,
                    None => self.all_exited(now),
                };
                if self.streams.iter().all(Option::is_none) || now >= until {
                    break;
                }
            }
            let read = self.read_agents();
            if let Some(a) = self.agents.as_mut() {
                a.set_reading(read, now);
            }
            fds.clear();
            tags.clear();
            self.poll_set(&mut fds, &mut tags);
            let timeout = self.poll_timeout(now);
            if let Err(e) = sys::poll(&mut fds, timeout) {
                self.stop(
                    Cause::Internal,
                    format!("dosrun: poll failed: {e}; stopping the job"),
                );
                self.kill_all(libc::SIGKILL);
                break;
            }
            for (p, &tag) in fds.iter().zip(&tags) {
                if p.revents != 0 {
                    self.ready(tag, p.revents);
                }
            }
        }
        self.finish()
    }

    /// Every rank has exited: kills what their groups left behind, and
    /// bounds the wait for their output pipes.
    fn all_exited(&mut self, now: Instant) -> Instant {
        self.kill_all(libc::SIGKILL);
        self.kill_at = None;
        self.timeout_at = None;
        self.stdin = None;
        let until = now + DRAIN_LIMIT;
        self.drain_until = Some(until);
        until
    }

    fn deadlines(&mut self, now: Instant) {
        if self.timeout_at.is_some_and(|t| now >= t) {
            self.timeout_at = None;
            // A failure seen before the timeout keeps its blame.
            self.blame();
            let secs = self.timeout.map_or(0.0, |d| d.as_secs_f64());
            self.stop(
                Cause::Timeout,
                format!("dosrun: the job ran longer than --timeout {secs} s; stopping the job"),
            );
        }
        if self.kill_at.is_some_and(|t| now >= t) {
            self.kill_at = None;
            self.kill_all(libc::SIGKILL);
        }
        if self.blame_at.is_some_and(|t| now >= t) {
            self.blame();
        }
        if self
            .restart
            .as_ref()
            .and_then(|p| p.report_at)
            .is_some_and(|t| now >= t)
        {
            self.report_restart(None, now);
        }
        if let Some(stall) = self.stall_timeout {
            let stuck = self
                .ranks
                .iter()
                .find(|r| !r.done() && r.stopped.is_some_and(|(since, _)| now >= since + stall));
            if let (Some(r), None) = (stuck, &self.cause) {
                let sig = r.stopped.map_or(0, |(_, s)| s);
                let what = format!(
                    "rank {} (pid {}) on host {} has been stopped by signal {sig} ({}) for {} s (--stall-timeout)",
                    r.rank,
                    r.pid,
                    r.host,
                    sys::signal_name(sig),
                    stall.as_secs_f64()
                );
                self.stop(Cause::Stalled, format!("dosrun: {what}; stopping the job"));
            }
        }
        self.service.expire(now);
        self.service_events();
        if let Some(a) = self.agents.as_mut() {
            a.tick(now);
        }
        self.agent_events();
    }

    fn poll_timeout(&self, now: Instant) -> i32 {
        let stall = self
            .stall_timeout
            .filter(|_| self.cause.is_none())
            .and_then(|d| {
                self.ranks
                    .iter()
                    .filter(|r| !r.done())
                    .filter_map(|r| r.stopped.map(|(since, _)| since + d))
                    .min()
            });
        [
            self.timeout_at,
            self.kill_at,
            self.drain_until,
            self.blame_at,
            self.restart.as_ref().and_then(|p| p.report_at),
            stall,
            self.service.deadline(),
            self.agents.as_ref().and_then(Agents::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(-1, |t| {
            let d = t.saturating_duration_since(now);
            // Round up so that the deadline has passed when poll returns.
            d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        })
    }

    fn poll_set(&self, fds: &mut Vec<libc::pollfd>, tags: &mut Vec<Tag>) {
        let mut add = |fd: RawFd, events: i16, tag: Tag| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            tags.push(tag);
        };
        add(self.signals.fd(), libc::POLLIN, Tag::Signal);
        for r in &self.ranks {
            if let Some(fd) = &r.pidfd {
                add(fd.as_raw_fd(), libc::POLLIN, Tag::Exit(r.rank));
            }
        }
        let draining = self.drain_until.is_some();
        for (i, s) in self.streams.iter().enumerate() {
            if let Some(Stream {
                fd: Some(fd), sink, ..
            }) = s
            {
                if draining || self.sinks[*sink].pending() < HIGH_WATER {
                    add(fd.as_raw_fd(), libc::POLLIN, Tag::Output(i));
                }
            }
        }
        for (i, k) in self.sinks.iter().enumerate() {
            if k.pending() > 0 {
                add(k.fd(), libc::POLLOUT, Tag::Sink(i));
            }
        }
        if let Some(s) = &self.stdin {
            if !s.eof && s.buf.len() < STDIN_BUF {
                add(0, libc::POLLIN, Tag::StdinIn);
            }
            if !s.buf.is_empty() {
                add(s.to.as_raw_fd(), libc::POLLOUT, Tag::StdinOut);
            }
        }
        let (mut sfds, mut stags) = (Vec::new(), Vec::new());
        self.service.poll_fds(&mut sfds, &mut stags);
        for (p, t) in sfds.into_iter().zip(stags) {
            add(p.fd, p.events, Tag::Service(t));
        }
        if let Some(a) = &self.agents {
            let mut afds = Vec::new();
            a.poll_fds(&mut afds);
            for (p, t) in afds {
                add(p.fd, p.events, Tag::Agent(t));
            }
        }
    }

    /// Whether the agents' connections may be read: not while an output
    /// of dosrun is full (back-pressure), unless the job is draining.
    fn read_agents(&self) -> bool {
        self.drain_until.is_some() || self.sinks.iter().all(|k| k.pending() < HIGH_WATER)
    }

    fn ready(&mut self, tag: Tag, revents: i16) {
        match tag {
            Tag::Signal => {
                while let Some(sig) = self.signals.next() {
                    self.on_signal(sig);
                }
            }
            Tag::Service(t) => {
                self.service.ready(t, revents);
                self.service_events();
            }
            Tag::Agent(t) => {
                if let Some(a) = self.agents.as_mut() {
                    a.ready(t, revents);
                }
                self.agent_events();
            }
            Tag::Exit(rank) => self.on_exit(rank),
            Tag::Output(i) => self.on_output(i),
            Tag::Sink(i) => {
                if self.sinks[i].write_some().is_err() {
                    // The reader went away: so do the ranks' pipes feeding
                    // it, and the ranks see EPIPE as if they wrote to it.
                    for s in &mut self.streams {
                        if s.as_ref().is_some_and(|s| s.sink == i) {
                            *s = None;
                        }
                    }
                }
            }
            Tag::StdinIn => self.on_stdin(),
            Tag::StdinOut => self.on_stdin_writable(),
        }
    }

    fn on_signal(&mut self, sig: i32) {
        if sig == libc::SIGCHLD {
            let now = Instant::now();
            for (pid, stop) in sys::stop_reports() {
                if let Some(r) = self.ranks.iter().position(|r| !r.remote && r.pid == pid) {
                    self.rank_stopped(r, stop, now);
                }
            }
            return;
        }
        // Forwarded to every group, running ranks and what exited ones left.
        self.kill_all(sig);
        if matches!(sig, libc::SIGINT | libc::SIGTERM | libc::SIGHUP) {
            self.stop_signals += 1;
            if self.stop_signals >= 2 {
                // Asked twice: no more grace.
                self.kill_all(libc::SIGKILL);
            } else {
                // A failure seen before the signal keeps its blame.
                self.blame();
                self.stop(
                    Cause::Interrupted(sig),
                    format!(
                        "dosrun: interrupted by signal {sig} ({}), forwarded to the ranks; stopping the job",
                        sys::signal_name(sig)
                    ),
                );
            }
        }
    }

    /// Rank `rank` was stopped by signal `stop`, or continued (`None`).
    fn rank_stopped(&mut self, rank: usize, stop: Option<i32>, now: Instant) {
        if let Some(r) = self.ranks.get_mut(rank) {
            r.stopped = match (stop, r.stopped) {
                (Some(_), Some(old)) => Some(old),
                (Some(sig), None) => Some((now, sig)),
                (None, _) => None,
            };
        }
    }

    fn on_exit(&mut self, rank: usize) {
        let Some(r) = self.ranks.get_mut(rank) else {
            return;
        };
        let Some(cause) = sys::ended(r.pid) else {
            return;
        };
        r.pidfd = None;
        // An abort it sent just before exiting takes precedence.
        self.service.rank_exited(rank);
        self.service_events();
        self.rank_ended(rank, cause);
    }

    /// Rank `rank` (local or remote) ended with `cause`.
    fn rank_ended(&mut self, rank: usize, cause: ExitCause) {
        let Some(r) = self.ranks.get_mut(rank) else {
            return;
        };
        if r.done() {
            return;
        }
        r.status = Some(cause);
        r.stopped = None;
        let what = format!(
            "rank {} (pid {}) on host {} {}",
            r.rank,
            r.pid,
            r.host,
            cause.describe()
        );
        if rank == 0 {
            self.stdin = None;
        }
        match cause {
            _ if cause.success() => {}
            // Killed: no peer's failure does that.
            ExitCause::Signaled { .. } => {
                self.suspects.retain(|s| s.rank != rank);
                self.blame_rank(Some(rank), None);
                self.stop(
                    Cause::RankFailed(cause),
                    format!("dosrun: {what}; stopping the job"),
                );
            }
            ExitCause::Exited(_) => self.suspect(rank, Cause::RankFailed(cause), what),
        }
    }

    /// A failure that may be the consequence of an earlier one: blamed at
    /// the end of the blame window unless a cause comes first.
    fn suspect(&mut self, rank: usize, cause: Cause, what: String) {
        // After the decision, failures are the stop's own doing; a rank
        // that aborted and then exited is one failure.
        if self.cause.is_some() || self.suspects.iter().any(|s| s.rank == rank) {
            return;
        }
        self.suspects.push(Suspect { rank, cause, what });
        self.first_evidence.get_or_insert_with(Instant::now);
        if self.blame_at.is_none() {
            self.blame_at = Some(Instant::now() + self.blame_window);
        }
        if self.blame_window.is_zero() {
            self.blame();
        }
    }

    /// Closes the blame window: the first suspect is blamed (if no cause
    /// came), the others are its consequences.
    fn blame(&mut self) {
        self.blame_at = None;
        if self.suspects.is_empty() {
            return;
        }
        let first = self.suspects.remove(0);
        self.blame_rank(Some(first.rank), None);
        self.stop(
            first.cause,
            format!("dosrun: {}; stopping the job", first.what),
        );
    }

    /// Handles what the wire-up service reported.
    fn service_events(&mut self) {
        loop {
            let events = self.service.take_events();
            if events.is_empty() {
                return;
            }
            for e in events {
                match e {
                    Event::Abort { rank, code, msg } => self.on_abort(rank, code, &msg),
                    Event::FenceEnter(puts) => {
                        if let Some(n) = self.local_node {
                            let out = self.fence.enter(n, puts);
                            self.deliver(out);
                        }
                    }
                    Event::Left(rank) => {
                        let out = self.fence.left(rank);
                        self.deliver(out);
                    }
                    Event::Announce { key, value, .. } => self.on_announce(&key, &value),
                    // Ranks killed while they authenticate are no news.
                    Event::Refused(_) if self.cause.is_some() => {}
                    Event::Refused(why) => {
                        self.sinks[1].push(format!("dosrun: {why}\n").as_bytes());
                    }
                }
            }
        }
    }

    /// Hands the outcomes of the job-wide fence to the nodes.
    fn deliver(&mut self, out: Vec<(usize, FenceOutcome)>) {
        if out.iter().any(|(_, o)| matches!(o, FenceOutcome::Done(_))) {
            if let Some(p) = self.restart.as_mut().filter(|p| p.fence_at.is_none()) {
                let now = Instant::now();
                p.fence_at = Some(now);
                p.report_at = Some(now + crate::restart::REPORT_WAIT);
            }
        }
        for (n, o) in out {
            if Some(n) == self.local_node {
                self.service.fence_outcome(&o);
            } else if let Some(a) = self.agents.as_mut() {
                let m = match o {
                    FenceOutcome::Done(p) => ToAgent::FenceDone(p.as_ref().clone()),
                    FenceOutcome::Failed(why) => ToAgent::FenceFailed(why),
                };
                a.send(n, &m);
            }
        }
    }

    /// Handles what the node agents reported.
    fn agent_events(&mut self) {
        loop {
            let events = match self.agents.as_mut() {
                Some(a) => a.take_events(),
                None => return,
            };
            if events.is_empty() {
                return;
            }
            for e in events {
                match e {
                    AgentEvent::Frame(n, m) => self.on_frame(n, m),
                    AgentEvent::Lost { node, why } => self.on_lost(node, &why),
                    AgentEvent::Refused(_) if self.cause.is_some() => {}
                    AgentEvent::Refused(why) => {
                        self.sinks[1].push(format!("dosrun: {why}\n").as_bytes());
                    }
                }
            }
        }
    }

    /// `rank` if it runs on node `node` (an agent only speaks for its own ranks).
    fn on_node(&self, rank: u32, node: usize) -> Option<usize> {
        let r = usize::try_from(rank).ok()?;
        (self.ranks.get(r)?.node == node).then_some(r)
    }

    fn on_frame(&mut self, n: usize, m: FromAgent) {
        match m {
            FromAgent::Started { rank, pid } => {
                if let Some(r) = self.on_node(rank, n) {
                    self.ranks[r].pid = pid;
                }
            }
            FromAgent::StartFailed { rank, status, why } => {
                if let Some(r) = self.on_node(rank, n) {
                    let host = self.ranks[r].host.clone();
                    self.rank_start_failed(r, &host, status, &why);
                }
            }
            FromAgent::Output { rank, stream, data } => {
                let Some(r) = self.on_node(rank, n) else {
                    return;
                };
                let i = 2 * r + usize::from(stream.saturating_sub(1).min(1));
                let Some(st) = self.streams[i].as_mut() else {
                    return;
                };
                if data.is_empty() {
                    st.splitter.finish(self.sinks[st.sink].queue());
                    self.streams[i] = None;
                } else {
                    st.splitter.push(&data, self.sinks[st.sink].queue());
                }
            }
            FromAgent::Exited { rank, cause } => {
                if let Some(r) = self.on_node(rank, n) {
                    self.rank_ended(r, cause);
                }
            }
            FromAgent::FenceEnter(puts) => {
                let out = self.fence.enter(n, puts);
                self.deliver(out);
            }
            FromAgent::Left { rank } => {
                if let Some(r) = self.on_node(rank, n) {
                    let out = self.fence.left(r);
                    self.deliver(out);
                }
            }
            FromAgent::Abort { rank, code, msg } => {
                if let Some(r) = self.on_node(rank, n) {
                    self.on_abort(r, code, &msg);
                }
            }
            FromAgent::Log(line) => {
                let line: String = line
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                self.sinks[1].push(format!("{line}\n").as_bytes());
            }
            FromAgent::Announce { rank, key, value } => {
                if self.on_node(rank, n).is_some() {
                    self.on_announce(&key, &value);
                }
            }
            // The --fs frames come before the job starts (`fsjob`).
            FromAgent::Heartbeat | FromAgent::FsUp { .. } | FromAgent::FsFailed(_) => {}
            FromAgent::Stopped { rank, sig } => {
                if let Some(r) = self.on_node(rank, n) {
                    let stop = (sig > 0).then_some(sig);
                    self.rank_stopped(r, stop, Instant::now());
                }
            }
        }
    }

    /// Node `node`'s host is lost: its ranks are not waited for, and the
    /// job stops.
    fn on_lost(&mut self, node: usize, why: &str) {
        let host = self
            .agents
            .as_ref()
            .and_then(|a| a.host(node))
            .unwrap_or("?")
            .to_string();
        if !self.lost_hosts.contains(&host) {
            self.lost_hosts.push(host.clone());
        }
        let mut live = Vec::new();
        for i in 0..self.ranks.len() {
            if self.ranks[i].node == node {
                if !self.ranks[i].done() {
                    live.push(i);
                }
                self.forget(i);
            }
        }
        // An agent that goes after its ranks ended, while the job stops, is no news.
        if live.is_empty() && self.cause.is_some() {
            return;
        }
        let ranks = match live.as_slice() {
            [] => String::new(),
            l => format!(
                " (ranks {})",
                l.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.blame_rank(live.first().copied(), Some(host.clone()));
        self.stop(
            Cause::HostLost,
            format!("dosrun: host {host} (node {node}) lost{ranks}: {why}; stopping the job"),
        );
    }

    fn on_abort(&mut self, rank: usize, code: i32, msg: &str) {
        let (pid, host) = self
            .ranks
            .get(rank)
            .map_or((0, "?"), |r| (r.pid, r.host.as_str()));
        let msg: String = msg
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let code = if (1..=255).contains(&code) { code } else { 1 };
        let what =
            format!("rank {rank} (pid {pid}) on host {host} called abort with code {code}: {msg}");
        self.suspect(rank, Cause::Abort(code), what);
    }

    fn on_output(&mut self, i: usize) {
        let Some(s) = self.streams[i].as_mut() else {
            return;
        };
        let Some(fd) = s.fd.as_ref() else {
            return;
        };
        let mut buf = [0u8; 64 * 1024];
        match sys::read(fd.as_fd(), &mut buf) {
            Ok(0) => {}
            Ok(n) => {
                s.splitter.push(&buf[..n], self.sinks[s.sink].queue());
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {}
        }
        // End of the stream.
        s.splitter.finish(self.sinks[s.sink].queue());
        self.streams[i] = None;
    }

    fn on_stdin(&mut self) {
        let Some(s) = self.stdin.as_mut() else {
            return;
        };
        let mut buf = [0u8; STDIN_BUF];
        let room = STDIN_BUF - s.buf.len();
        match sys::read(rustix::stdio::stdin(), &mut buf[..room]) {
            Ok(0) => s.eof = true,
            Ok(n) => s.buf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => s.eof = true,
        }
        if s.eof && s.buf.is_empty() {
            // Closing the pipe gives rank 0 its end of file.
            self.stdin = None;
        }
    }

    fn on_stdin_writable(&mut self) {
        let Some(s) = self.stdin.as_mut() else {
            return;
        };
        match sys::write(s.to.as_fd(), &s.buf) {
            Ok(n) => {
                s.buf.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Rank 0 closed its stdin: nothing more to relay.
            Err(_) => {
                self.stdin = None;
                return;
            }
        }
        if s.eof && s.buf.is_empty() {
            self.stdin = None;
        }
    }

    /// Stops the job for `cause` (the first cause wins, and only its line is
    /// printed, then the suspects it leaves as consequences): SIGTERM to
    /// every rank's group now (the user's signal, already forwarded, when
    /// interrupted) and SIGCONT so that stopped ranks take it, SIGKILL
    /// after the grace.
    fn stop(&mut self, cause: Cause, line: String) {
        if self.cause.is_some() {
            return;
        }
        let interrupted = matches!(cause, Cause::Interrupted(_));
        self.cause = Some(cause);
        self.first_evidence.get_or_insert_with(Instant::now);
        let what = line.strip_prefix("dosrun: ").unwrap_or(&line);
        let what = what.strip_suffix("; stopping the job").unwrap_or(what);
        self.stop_what = Some(what.to_string());
        self.blame_at = None;
        self.sinks[1].push(line.as_bytes());
        self.sinks[1].push(b"\n");
        let consequences = std::mem::take(&mut self.suspects);
        for s in consequences.iter().take(MAX_CONSEQUENCES) {
            let l = format!("dosrun: then {} (a consequence)\n", s.what);
            self.sinks[1].push(l.as_bytes());
        }
        if consequences.len() > MAX_CONSEQUENCES {
            let l = format!(
                "dosrun: and {} more failures (consequences)\n",
                consequences.len() - MAX_CONSEQUENCES
            );
            self.sinks[1].push(l.as_bytes());
        }
        if self.grace.is_zero() {
            self.kill_all(libc::SIGKILL);
        } else {
            if !interrupted {
                self.kill_all(libc::SIGTERM);
            }
            self.kill_all(libc::SIGCONT);
            self.kill_at = Some(Instant::now() + self.grace);
        }
        // Agents that have not connected yet never will: their ranks are
        // not waited for.
        let gone = self
            .agents
            .as_mut()
            .map(Agents::abandon_unconnected)
            .unwrap_or_default();
        for n in gone {
            for i in 0..self.ranks.len() {
                if self.ranks[i].node == n {
                    self.forget(i);
                }
            }
        }
    }

    /// Sends `sig` to every rank's process group, on every host.
    fn kill_all(&mut self, sig: i32) {
        for r in &self.ranks {
            if !r.remote {
                sys::kill_group(r.pid, sig);
            }
        }
        if let Some(a) = self.agents.as_mut() {
            a.broadcast(&ToAgent::Signal(sig));
        }
    }

    /// Flushes output, reaps every rank and computes the exit status.
    fn finish(mut self) -> Ended {
        self.blame();
        self.report_restart(None, Instant::now());
        for s in self.streams.iter_mut() {
            if let Some(mut s) = s.take() {
                s.splitter.finish(self.sinks[s.sink].queue());
            }
        }
        self.stdin = None;
        // Make sure nothing of the job survives, then reap it.
        self.kill_all(libc::SIGKILL);
        for r in &self.ranks {
            if !r.remote && r.pid > 0 {
                sys::reap(r.pid);
            }
        }
        // The servers outlive the ranks: staged out, synced and stopped.
        let mut fs_failed = false;
        if let Some(e) = self.fs_end.take() {
            let sinks = &mut self.sinks;
            let mut say = |l: String| {
                sinks[1].push(l.as_bytes());
                sinks[1].push(b"\n");
            };
            if let Err(why) = e.run(self.agents.as_mut(), &mut say) {
                say(format!("dosrun: --fs: {why}"));
                fs_failed = true;
            }
        }
        if let Some(a) = self.agents.take() {
            a.finish();
        }
        for k in &mut self.sinks {
            k.flush_blocking();
        }
        let status = match self.cause {
            None => self
                .ranks
                .iter()
                .filter_map(|r| r.status)
                .find(|c| !c.success())
                .map_or(0, ExitCause::status),
            Some(Cause::RankFailed(c)) => c.status(),
            Some(Cause::Timeout) => STATUS_TIMEOUT,
            Some(Cause::Abort(code)) | Some(Cause::StartFailed(code)) => code,
            Some(Cause::HostLost) => STATUS_HOST_LOST,
            Some(Cause::Internal) => STATUS_INTERNAL,
            Some(Cause::Stalled) => STATUS_STALLED,
            // Ranks that handled the signal and exited with 0 ended well.
            Some(Cause::Interrupted(sig)) => {
                if self
                    .ranks
                    .iter()
                    .all(|r| r.status.is_some_and(ExitCause::success))
                {
                    0
                } else {
                    128 + sig
                }
            }
        };
        let status = if fs_failed && status == 0 { 1 } else { status };
        let failure = (status != 0).then(|| Failure {
            restartable: matches!(
                self.cause,
                Some(Cause::RankFailed(_) | Cause::Abort(_) | Cause::HostLost)
            ),
            what: self
                .stop_what
                .take()
                .unwrap_or_else(|| format!("the job failed with status {status}")),
            rank: self.culprit.0,
            host: self.culprit.1.take(),
            lost: std::mem::take(&mut self.lost_hosts),
            at: self.first_evidence,
        });
        Ended {
            status,
            failure,
            supervised: true,
        }
    }
}
