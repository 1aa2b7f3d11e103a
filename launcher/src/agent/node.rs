//! The node agent (`agent::node`): `dosrun --agent`, the process that runs
//! on a remote host, started there by the launch agent (ssh); its
//! counterpart in dosrun is [`super::pool`].
//!
//! It reads the bootstrap line on its stdin, connects back to dosrun's
//! control port, authenticates, receives its node's [`Assign`]ment, creates
//! the node's shared segment, binds and starts the node's ranks exactly as
//! dosrun starts local ones, serves their wire-up socket (forwarding fences
//! to dosrun), relays their output and exit statuses, forwards signals, and
//! sends a heartbeat every interval. It reports its ranks stopped and
//! continued (SIGCHLD) for dosrun's `--stall-timeout`, and stops reading
//! their pipes while its queue towards dosrun is full (back-pressure).
//!
//! In a job with `--fs` it first starts the node's dosfs server (a
//! `FsServe` frame before the assignment, see [`crate::fsjob`]), answers
//! with its address, writes the node's address file when dosrun sends every
//! server's (`FsAddrs`), heartbeating while it waits; the server is synced
//! and stopped when the agent ends, however it ends.
//!
//! It kills its ranks (SIGKILL to their process groups) and exits when
//! dosrun says so (`Exit`), when the control connection closes or stays
//! silent for the heartbeat timeout, when its stdin closes (dosrun or ssh
//! went away), or on SIGINT/SIGTERM/SIGHUP. If the agent itself is killed,
//! its ranks die by their parent-death signal.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dos::config::Config;
use dos_transport::auth::{self, Role};

use super::ctl::{parse_bootstrap, Bootstrap, CtlConn};
use super::wire::{self, Assign, FromAgent, ToAgent};
use crate::fsjob;
use crate::pmi_server::{Event, FenceOutcome, PollTag, Service};
use crate::spawn::{SpawnError, Spawned};
use crate::start::{self, JobEnv, Node, Outcome, Side};
use crate::sys::{self, SignalFd};

/// How long the agent waits for its bootstrap, its connection and its
/// assignment.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Output queued on the control connection beyond which the agent stops
/// reading its ranks' pipes (back-pressure).
const HIGH_WATER: usize = 4 << 20;
/// Longest bootstrap line.
const MAX_BOOTSTRAP: usize = 1024;

/// Exit status of an agent that failed before it could serve its node.
const STATUS_SETUP: i32 = 125;

#[derive(Debug)]
struct LocalRank {
    rank: usize,
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// stdout, stderr.
    pipes: [Option<OwnedFd>; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Ctl,
    Stdin,
    Signal,
    Exit(usize),
    Pipe(usize, usize),
    Service(PollTag),
}

/// Runs the agent; returns its exit status.
pub fn run() -> i32 {
    sys::ensure_std_fds_open();
    let boot = match read_bootstrap() {
        Ok(b) => b,
        Err(e) => return fail(&format!("no bootstrap on stdin: {e}")),
    };
    let mut fs = None;
    let joined = connect(&boot, &mut fs);
    let code = match joined {
        Err(e) if e == ENDED => 0,
        Err(e) => fail(&format!("cannot join dosrun at {}: {e}", boot.addr)),
        Ok((ctl, assign)) => match SignalFd::new() {
            Err(e) => fail(&format!("signalfd: {e}")),
            Ok(signals) => match Agent::start(boot, ctl, *assign, signals) {
                Ok(mut a) => a.run(),
                Err(e) => fail(&e),
            },
        },
    };
    if let Some(f) = fs {
        f.stop();
    }
    code
}

/// The node's dosfs server (`--fs`) and its address file.
struct NodeFs {
    server: dos_fs::standing::Standing,
    dir: std::path::PathBuf,
    secret: dos_transport::auth::Secret,
    node: usize,
    wrote: bool,
}

impl NodeFs {
    /// Syncs and stops the server, removes the address file.
    fn stop(self) {
        if self.wrote {
            let _ = std::fs::remove_file(fsjob::addr_path(&self.dir, self.node));
        }
        if let Err(e) = self.server.stop() {
            eprintln!(
                "dosrun --agent on {}: dosfs server {}: {e}",
                sys::hostname(),
                self.dir.display()
            );
        }
    }
}

/// Handles a `--fs` frame that comes before the assignment.
fn on_fs_frame(b: &Bootstrap, c: &mut CtlConn, m: ToAgent, fs: &mut Option<NodeFs>) {
    match m {
        ToAgent::FsServe { dir, servers, fsid } => {
            if fs.is_none() {
                let dir = std::path::PathBuf::from(dir);
                let started = c
                    .stream()
                    .local_addr()
                    .map_err(|e| format!("control socket: {e}"))
                    .and_then(|a| {
                        let secret = fsjob::fs_secret(&b.secret)?;
                        let s = fsjob::start_server(
                            &dir,
                            b.node,
                            servers as usize,
                            dos_fs::target::FsId(fsid),
                            &secret,
                            a.ip(),
                        )?;
                        Ok(NodeFs {
                            server: s,
                            dir,
                            secret,
                            node: b.node,
                            wrote: false,
                        })
                    });
                match started {
                    Ok(f) => *fs = Some(f),
                    Err(why) => {
                        c.send(|o| FromAgent::FsFailed(why).encode(o));
                        return;
                    }
                }
            }
            if let Some(f) = fs.as_ref() {
                let up = FromAgent::FsUp {
                    fsid: f.server.fsid().0,
                    addr: f.server.addr().to_string(),
                };
                c.send(|o| up.encode(o));
            }
        }
        ToAgent::FsAddrs { fsid, addrs } => {
            if let Some(f) = fs.as_mut() {
                let file = fsjob::addr_file(dos_fs::target::FsId(fsid), &f.secret, &addrs, None);
                match fsjob::write_addr(&fsjob::addr_path(&f.dir, f.node), &file) {
                    Ok(()) => f.wrote = true,
                    Err(e) => {
                        let line = format!("dosrun: host {}: {e}", sys::hostname());
                        c.send(|o| FromAgent::Log(line).encode(o));
                    }
                }
            }
        }
        _ => {}
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("dosrun --agent on {}: {msg}", sys::hostname());
    STATUS_SETUP
}

/// Reads one line from stdin (fd 0), byte by byte so nothing after it is
/// consumed, within [`SETUP_TIMEOUT`].
fn read_bootstrap() -> io::Result<Bootstrap> {
    let until = Instant::now() + SETUP_TIMEOUT;
    let mut line = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let mut p = [libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        }];
        sys::poll(&mut p, left.as_millis().clamp(1, 1000) as i32)?;
        if p[0].revents == 0 {
            continue;
        }
        let mut b = [0u8; 1];
        match sys::read(rustix::stdio::stdin(), &mut b) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if line.len() > MAX_BOOTSTRAP {
            return Err(io::Error::other("bootstrap line too long"));
        }
    }
    let s = String::from_utf8(line).map_err(|_| io::Error::other("bootstrap is not UTF-8"))?;
    parse_bootstrap(&s).ok_or_else(|| io::Error::other("malformed bootstrap line"))
}

/// How many times the agent tries to join dosrun: under a flood of
/// connections dosrun may close ours while it authenticates (it makes room by
/// closing the connections that sent nothing valid first; see `agent::pool`).
const JOIN_ATTEMPTS: u32 = 5;
/// The wait before the second attempt; it doubles for each next one.
const JOIN_BACKOFF: Duration = Duration::from_millis(100);
/// How a failure to join that is not worth retrying starts: the other end
/// is not our dosrun.
const NOT_DOSRUN: &str = "the control port is not this job's dosrun: ";
/// Why the agent leaves when dosrun ends the job before the assignment.
const ENDED: &str = "dosrun ended the job before it started";

/// Joins dosrun, trying again when the connection fails or closes before
/// the assignment came (not when dosrun proves to hold another secret).
fn connect(b: &Bootstrap, fs: &mut Option<NodeFs>) -> Result<(CtlConn, Box<Assign>), String> {
    let mut wait = JOIN_BACKOFF;
    let mut attempt = 1;
    loop {
        match connect_once(b, fs) {
            Ok(x) => return Ok(x),
            Err(e) if attempt < JOIN_ATTEMPTS && !e.starts_with(NOT_DOSRUN) && e != ENDED => {
                std::thread::sleep(wait);
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How often the agent says it is alive while it waits for its assignment
/// (dosrun may be waiting for the other nodes' dosfs servers).
const SETUP_HEARTBEAT: Duration = Duration::from_millis(200);

/// Connects, authenticates and receives the assignment (starting the
/// node's dosfs server first when dosrun asks).
fn connect_once(b: &Bootstrap, fs: &mut Option<NodeFs>) -> Result<(CtlConn, Box<Assign>), String> {
    let mut s = TcpStream::connect_timeout(&b.addr, SETUP_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(SETUP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let ctx = wire::auth_context(b.jobid);
    let peer =
        auth::handshake(&mut s, &b.secret, &ctx, Role::Initiator, b.node as u64).map_err(|e| {
            match e {
                auth_failed @ dos_transport::Error::AuthFailed { .. } => {
                    format!("{NOT_DOSRUN}authentication failed: {auth_failed}")
                }
                e => format!("authentication failed: {e}"),
            }
        })?;
    if peer != wire::DOSRUN_ID {
        return Err(format!("{NOT_DOSRUN}dosrun presented an unexpected id"));
    }
    let mut c = CtlConn::new(s, Vec::new()).map_err(|e| e.to_string())?;
    let until = Instant::now() + SETUP_TIMEOUT;
    let mut next_beat = Instant::now();
    loop {
        loop {
            match c.next_frame(ToAgent::decode) {
                Ok(Some(ToAgent::Assign(a))) => return Ok((c, a)),
                // The job ended before it started here (another node's
                // dosfs server failed).
                Ok(Some(ToAgent::Exit)) => return Err(ENDED.into()),
                Ok(Some(m)) => on_fs_frame(b, &mut c, m, fs),
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if c.closed {
            return Err("dosrun closed the connection".into());
        }
        let now = Instant::now();
        let left = until.saturating_duration_since(now);
        if left.is_zero() {
            return Err("no assignment from dosrun".into());
        }
        if now >= next_beat {
            next_beat = now + SETUP_HEARTBEAT;
            c.send(|o| FromAgent::Heartbeat.encode(o));
        }
        let mut events = libc::POLLIN;
        if c.wants_write() {
            events |= libc::POLLOUT;
        }
        let mut p = [libc::pollfd {
            fd: c.fd(),
            events,
            revents: 0,
        }];
        let wait = left.min(next_beat.saturating_duration_since(now));
        sys::poll(&mut p, wait.as_millis().clamp(1, 1000) as i32).map_err(|e| e.to_string())?;
        if p[0].revents & libc::POLLOUT != 0 {
            c.flush();
        }
        if p[0].revents != 0 {
            c.read();
        }
    }
}

struct Agent {
    ctl: CtlConn,
    host: String,
    service: Service,
    ranks: Vec<LocalRank>,
    signals: SignalFd,
    heartbeat: Duration,
    timeout: Duration,
    next_beat: Instant,
    kill_at: Option<Instant>,
    stdin_open: bool,
    /// The program as dosrun gave it, in start failures.
    program: OsString,
}

impl Agent {
    fn start(
        boot: Bootstrap,
        mut ctl: CtlConn,
        a: Assign,
        signals: SignalFd,
    ) -> Result<Agent, String> {
        let host = sys::hostname();
        let ranks: Vec<usize> = a.ranks.iter().map(|&r| r as usize).collect();
        let cfg = Config::from_env().unwrap_or_default();
        let node = Node {
            id: boot.node,
            ranks: &ranks,
            name: &host,
            hostname: &host,
            bind_to: a.bind,
            report_bindings: a.report_bindings,
            program: &a.program,
            argv0: &a.argv0,
            exports: &a.env,
            shm_ring_bytes: cfg.shm_ring_bytes,
            topology_cache: cfg.topology_cache,
            spawn_threads: cfg.spawn_threads,
        };
        let (pmi_name, service) = start::serve(&node, boot.jobid, &boot.secret)?;
        let node_addr = ctl
            .stream()
            .local_addr()
            .map_err(|e| format!("control socket: {e}"))?
            .ip();
        let mut agent = Agent {
            heartbeat: Duration::from_millis(u64::from(a.heartbeat_ms.max(1))),
            timeout: Duration::from_millis(u64::from(a.heartbeat_timeout_ms.max(1))),
            next_beat: Instant::now(),
            kill_at: None,
            stdin_open: true,
            program: a.program.clone(),
            ranks: Vec::new(),
            service,
            signals,
            host: host.clone(),
            ctl: {
                ctl.send(|o| FromAgent::Heartbeat.encode(o));
                ctl
            },
        };
        let fail_all = |agent: &mut Agent, status: i32, why: &str| {
            for &r in &ranks {
                agent.ctl.send(|o| {
                    FromAgent::StartFailed {
                        rank: r as u32,
                        status,
                        why: why.to_string(),
                    }
                    .encode(o)
                });
            }
        };
        if !a.cwd.is_empty() {
            if let Err(e) = std::env::set_current_dir(&a.cwd) {
                let se = SpawnError {
                    what: "chdir",
                    err: e,
                };
                let why = format!(
                    "cannot enter {}: {se}",
                    std::path::Path::new(&a.cwd).display()
                );
                fail_all(&mut agent, se.status(), &why);
                return Ok(agent);
            }
        }
        let prepared = match node.prepare(Side::Agent) {
            Ok(p) => p,
            Err(e) => {
                fail_all(&mut agent, e.status, &e.why);
                return Ok(agent);
            }
        };
        let job = JobEnv {
            size: a.size as usize,
            nodes: a.nodes as usize,
            jobid: boot.jobid,
            pmi_name: &pmi_name,
            secret: &boot.secret,
            node_addr: Some(node_addr),
        };
        let nofile = sys::raise_nofile_limit();
        prepared.start(&node, job, &a.args, false, nofile, &mut agent);
        Ok(agent)
    }

    fn run(&mut self) -> i32 {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut tags: Vec<Tag> = Vec::new();
        let code = loop {
            let now = Instant::now();
            if now >= self.next_beat {
                self.next_beat = now + self.heartbeat;
                self.ctl.send(|o| FromAgent::Heartbeat.encode(o));
            }
            if self.kill_at.is_some_and(|t| now >= t) {
                self.kill_at = None;
                self.kill_all(libc::SIGKILL);
            }
            self.service.expire(now);
            self.service_events();
            if self.ctl.closed {
                break 1;
            }
            if now >= self.ctl.last_rx + self.timeout {
                self.log_local("no heartbeat from dosrun (dosrun or link lost); killing the ranks");
                break 1;
            }
            if !self.stdin_open {
                break 1;
            }
            fds.clear();
            tags.clear();
            self.poll_set(&mut fds, &mut tags);
            let deadline = [
                Some(self.next_beat),
                self.kill_at,
                Some(self.ctl.last_rx + self.timeout),
                self.service.deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
            let ms = deadline
                .saturating_duration_since(Instant::now())
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32;
            if sys::poll(&mut fds, ms).is_err() {
                break 1;
            }
            let mut exit = false;
            for (p, &tag) in fds.iter().zip(&tags) {
                if p.revents != 0 && self.ready(tag, p.revents) {
                    exit = true;
                }
            }
            if exit {
                break 0;
            }
        };
        self.kill_all(libc::SIGKILL);
        for r in &self.ranks {
            sys::reap(r.pid);
        }
        self.ctl.flush_blocking(Duration::from_millis(100));
        code
    }

    /// A line on the agent's own stderr (travels back through ssh).
    fn log_local(&self, msg: &str) {
        eprintln!("dosrun --agent on {}: {msg}", self.host);
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
        let mut ev = libc::POLLIN;
        if self.ctl.wants_write() {
            ev |= libc::POLLOUT;
        }
        add(self.ctl.fd(), ev, Tag::Ctl);
        if self.stdin_open {
            add(0, libc::POLLIN, Tag::Stdin);
        }
        add(self.signals.fd(), libc::POLLIN, Tag::Signal);
        let room = self.ctl.pending() < HIGH_WATER;
        for (i, r) in self.ranks.iter().enumerate() {
            if let Some(fd) = &r.pidfd {
                add(fd.as_raw_fd(), libc::POLLIN, Tag::Exit(i));
            }
            for (k, p) in r.pipes.iter().enumerate() {
                if let (Some(fd), true) = (p, room) {
                    add(fd.as_raw_fd(), libc::POLLIN, Tag::Pipe(i, k));
                }
            }
        }
        let (mut sfds, mut stags) = (Vec::new(), Vec::new());
        self.service.poll_fds(&mut sfds, &mut stags);
        for (p, t) in sfds.into_iter().zip(stags) {
            add(p.fd, p.events, Tag::Service(t));
        }
    }

    /// Handles one ready descriptor; `true` when dosrun said `Exit`.
    fn ready(&mut self, tag: Tag, revents: i16) -> bool {
        match tag {
            Tag::Ctl => return self.on_ctl(revents),
            Tag::Stdin => {
                let mut b = [0u8; 256];
                match sys::read(rustix::stdio::stdin(), &mut b) {
                    Ok(0) => self.stdin_open = false,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => self.stdin_open = false,
                }
            }
            Tag::Signal => {
                while let Some(sig) = self.signals.next() {
                    if sig == libc::SIGCHLD {
                        self.on_sigchld();
                    } else if matches!(sig, libc::SIGINT | libc::SIGTERM | libc::SIGHUP) {
                        // Our end: the ranks end with us.
                        self.stdin_open = false;
                    } else {
                        self.kill_all(sig);
                    }
                }
            }
            Tag::Exit(i) => self.on_exit(i),
            Tag::Pipe(i, k) => self.on_pipe(i, k),
            Tag::Service(t) => {
                self.service.ready(t, revents);
                self.service_events();
            }
        }
        false
    }

    fn on_ctl(&mut self, revents: i16) -> bool {
        if revents & libc::POLLOUT != 0 {
            self.ctl.flush();
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.ctl.read();
        }
        loop {
            match self.ctl.next_frame(ToAgent::decode) {
                Ok(Some(m)) => match m {
                    // The --fs frames come before the assignment only.
                    ToAgent::Assign(_)
                    | ToAgent::Heartbeat
                    | ToAgent::FsServe { .. }
                    | ToAgent::FsAddrs { .. } => {}
                    ToAgent::FenceDone(p) => {
                        self.service.fence_outcome(&FenceOutcome::Done(Arc::new(p)));
                        self.service_events();
                    }
                    ToAgent::FenceFailed(why) => {
                        self.service.fence_outcome(&FenceOutcome::Failed(why));
                        self.service_events();
                    }
                    ToAgent::Signal(s) => self.kill_all(s),
                    ToAgent::Stop { grace_ms } => {
                        if grace_ms == 0 {
                            self.kill_all(libc::SIGKILL);
                        } else {
                            self.kill_all(libc::SIGTERM);
                            // A stopped rank takes its SIGTERM.
                            self.kill_all(libc::SIGCONT);
                            self.kill_at =
                                Some(Instant::now() + Duration::from_millis(u64::from(grace_ms)));
                        }
                    }
                    ToAgent::Exit => return true,
                },
                Ok(None) => break,
                Err(e) => {
                    self.log_local(&format!("bad frame from dosrun: {e}"));
                    self.stdin_open = false;
                    break;
                }
            }
        }
        false
    }

    /// Tells dosrun which ranks were stopped or continued (dosrun's
    /// `--stall-timeout` watches them).
    fn on_sigchld(&mut self) {
        for (pid, stop) in sys::stop_reports() {
            if let Some(r) = self.ranks.iter().find(|r| r.pid == pid) {
                let m = FromAgent::Stopped {
                    rank: r.rank as u32,
                    sig: stop.unwrap_or(0),
                };
                self.ctl.send(|o| m.encode(o));
            }
        }
    }

    fn on_exit(&mut self, i: usize) {
        let Some(r) = self.ranks.get_mut(i) else {
            return;
        };
        let Some(cause) = sys::ended(r.pid) else {
            return;
        };
        r.pidfd = None;
        let rank = r.rank;
        // What it sent to the wire-up service before it went (an abort) first.
        self.service.rank_exited(rank);
        self.service_events();
        self.ctl.send(|o| {
            FromAgent::Exited {
                rank: rank as u32,
                cause,
            }
            .encode(o)
        });
    }

    fn on_pipe(&mut self, i: usize, k: usize) {
        let Some(r) = self.ranks.get_mut(i) else {
            return;
        };
        let Some(fd) = r.pipes[k].as_ref() else {
            return;
        };
        let mut buf = [0u8; 64 * 1024];
        let data = match sys::read(fd.as_fd(), &mut buf) {
            Ok(0) => Vec::new(),
            Ok(n) => buf[..n].to_vec(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => Vec::new(),
        };
        if data.is_empty() {
            r.pipes[k] = None;
        }
        let rank = r.rank as u32;
        self.ctl.send(|o| {
            FromAgent::Output {
                rank,
                stream: k as u8 + 1,
                data,
            }
            .encode(o)
        });
    }

    fn service_events(&mut self) {
        for e in self.service.take_events() {
            let m = match e {
                Event::Abort { rank, code, msg } => FromAgent::Abort {
                    rank: rank as u32,
                    code,
                    msg,
                },
                Event::FenceEnter(p) => FromAgent::FenceEnter(p),
                Event::Left(rank) => FromAgent::Left { rank: rank as u32 },
                Event::Announce { rank, key, value } => FromAgent::Announce {
                    rank: rank as u32,
                    key,
                    value,
                },
                Event::Refused(why) => FromAgent::Log(format!("dosrun: host {}: {why}", self.host)),
            };
            self.ctl.send(|o| m.encode(o));
        }
    }

    fn kill_all(&self, sig: i32) {
        for r in &self.ranks {
            sys::kill_group(r.pid, sig);
        }
    }
}

/// The agent's ranks as they start: kept for the poll loop, and told to
/// dosrun (with their binding reports) on the control connection.
impl Outcome for Agent {
    fn started(&mut self, rank: usize, s: Spawned) {
        if let Some(p) = s.pmi {
            self.service.adopt(rank, p);
        }
        self.ctl.send(|o| {
            FromAgent::Started {
                rank: rank as u32,
                pid: s.pid,
            }
            .encode(o)
        });
        self.ranks.push(LocalRank {
            rank,
            pid: s.pid,
            pidfd: Some(s.pidfd),
            pipes: [Some(s.stdout), Some(s.stderr)],
        });
    }

    fn report(&mut self, line: String) {
        self.ctl.send(|o| FromAgent::Log(line).encode(o));
    }

    fn failed(&mut self, rank: usize, not_started: &[usize], e: &SpawnError) {
        let why = format!("cannot start {}: {e}", self.program.to_string_lossy());
        self.ctl.send(|o| {
            FromAgent::StartFailed {
                rank: rank as u32,
                status: e.status(),
                why,
            }
            .encode(o)
        });
        // dosrun stops the job; the ranks not started are failed too.
        for &r in not_started {
            self.ctl.send(|o| {
                FromAgent::StartFailed {
                    rank: r as u32,
                    status: e.status(),
                    why: "not started (an earlier rank failed to start)".into(),
                }
                .encode(o)
            });
        }
    }
}

/// Whether the argument list asks for the agent mode (`dosrun --agent`).
pub fn is_agent_mode(first: Option<&OsStr>) -> bool {
    first == Some(OsStr::new("--agent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_mode_is_the_first_argument_only() {
        assert!(is_agent_mode(Some(OsStr::new("--agent"))));
        assert!(!is_agent_mode(Some(OsStr::new("-n"))));
        assert!(!is_agent_mode(None));
    }
}
