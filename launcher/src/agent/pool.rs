//! The agent pool (`agent::pool`): dosrun's side of the node agents, on the
//! launching host: starting them through the launch agent (ssh), their
//! control connections, heartbeats and failure detection. The agent itself
//! is [`super::node`].
//!
//! For every remote node dosrun runs `LAUNCH... HOST AGENT-PATH --agent`
//! (default `ssh -o BatchMode=yes`), writes the bootstrap line (control
//! address, job id, node id, secret) on its stdin and keeps that pipe open
//! for the whole job: the agent treats the end of its stdin as dosrun's end.
//! The agent connects back to the control port, proves it holds the secret
//! (HMAC handshake, context [`wire::auth_context`]) and gets its node's
//! [`Assign`]ment. Both ends then send a heartbeat every interval; a node
//! whose connection is silent for the timeout, closes, or whose launch
//! agent exits before it connected, is lost ([`AgentEvent::Lost`]).
//!
//! The supervisor stops reading the connections while its output is full
//! ([`Agents::set_reading`]): the agents' frames then wait in the kernel's
//! buffers and in the agents' bounded queues, whose ranks block on their
//! pipes. Silence is not counted while dosrun does not read: an agent's
//! heartbeats wait behind its output, they are not missing.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dos::pmi::Secret;

use super::ctl::{bootstrap_line, CtlConn};
use super::wire::{self, Assign, FromAgent, ToAgent};
use crate::acceptor::{AcceptTag, Acceptor, Identity, Limits};
use crate::sys::{self, ExitCause};

/// Control connections that may authenticate at once beyond the nodes whose
/// agent has not connected yet.
const AUTH_SLACK: usize = 64;
/// Control connections from one address that may authenticate at once
/// beyond the nodes whose agent has not connected yet: a source at its
/// bound makes room among its own connections, never among the others'.
const SOURCE_SLACK: usize = 8;
/// How long dosrun waits for the launch agents to exit at the end.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// How the agents are started and watched.
#[derive(Debug, Clone)]
pub struct AgentsConfig {
    /// The launch agent command before the host (`ssh -o BatchMode=yes`);
    /// a word `{host}` is replaced by the host instead of appending it.
    pub launch: Vec<String>,
    /// The dosrun executable on the remote hosts.
    pub agent_path: PathBuf,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Silence after which a node is lost.
    pub timeout: Duration,
    /// How long an agent may take to connect after its launch.
    pub start_timeout: Duration,
}

/// What the agents report to the supervisor.
#[derive(Debug)]
pub enum AgentEvent {
    /// A frame from node `.0`'s agent.
    Frame(usize, FromAgent),
    /// Node `node` is lost.
    Lost {
        /// The node.
        node: usize,
        /// Why (one line).
        why: String,
    },
    /// A connection was refused (one line, without a prefix).
    Refused(String),
}

/// What a polled descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTag {
    /// The control listener, or a connection authenticating.
    Accept(AcceptTag),
    /// A node's control connection.
    Conn(usize),
    /// A node's launch agent process exited.
    Child(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Launching,
    Connected,
    Lost,
}

#[derive(Debug)]
struct Remote {
    host: String,
    assign: Option<Box<Assign>>,
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// The write end of the launch agent's stdin, open for the whole job.
    stdin: Option<OwnedFd>,
    conn: Option<CtlConn>,
    started: Instant,
    state: State,
}

/// The node agents of a job.
#[derive(Debug)]
pub struct Agents {
    /// The control port and its connections authenticating.
    acceptor: Acceptor<TcpListener>,
    addr: SocketAddr,
    jobid: u64,
    secret: Secret,
    cfg: AgentsConfig,
    nodes: HashMap<usize, Remote>,
    next_beat: Instant,
    events: Vec<AgentEvent>,
    /// The connections are read (false: back-pressure).
    reading: bool,
    /// `--fs`: the directory, server count and id for new targets; agents
    /// then get `FsServe` when they join and their assignment at
    /// [`Agents::release`].
    fs: Option<(OsString, u32, [u8; 16])>,
}

/// The address of this machine that reaches `remote` (no packet is sent:
/// connecting a UDP socket only picks the route).
pub fn local_addr_towards(remote: IpAddr) -> io::Result<IpAddr> {
    let bind: SocketAddr = match remote {
        IpAddr::V4(_) => "0.0.0.0:0".parse().map_err(io::Error::other)?,
        IpAddr::V6(_) => "[::]:0".parse().map_err(io::Error::other)?,
    };
    let s = UdpSocket::bind(bind)?;
    s.connect((remote, 9))?;
    Ok(s.local_addr()?.ip())
}

impl Agents {
    /// Listens on `ip` (any port) for the agents of job `jobid`.
    pub fn bind(ip: IpAddr, jobid: u64, secret: Secret, cfg: AgentsConfig) -> io::Result<Agents> {
        let listener = TcpListener::bind((ip, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let who = Identity {
            secret: secret.clone(),
            context: wire::auth_context(jobid),
            id: wire::DOSRUN_ID,
            same_user: None,
        };
        let limits = Limits {
            slack: AUTH_SLACK,
            source_slack: Some(SOURCE_SLACK),
        };
        Ok(Agents {
            acceptor: Acceptor::new(listener, "control", who, limits),
            addr,
            jobid,
            secret,
            cfg,
            nodes: HashMap::new(),
            next_beat: Instant::now(),
            events: Vec::new(),
            reading: true,
            fs: None,
        })
    }

    /// The control address (its IP is the job's address on this host).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host of node `node`.
    pub fn host(&self, node: usize) -> Option<&str> {
        self.nodes.get(&node).map(|r| r.host.as_str())
    }

    /// Starts the agent of node `node` on `host`, which will run `assign`.
    /// Must be called from dosrun's main thread (parent-death signal).
    pub fn launch(&mut self, node: usize, host: &str, assign: Assign) -> io::Result<()> {
        let mut argv: Vec<OsString> = Vec::new();
        let mut placed = false;
        for w in &self.cfg.launch {
            if w.contains("{host}") {
                argv.push(w.replace("{host}", host).into());
                placed = true;
            } else {
                argv.push(w.into());
            }
        }
        if !placed {
            argv.push(host.into());
        }
        argv.push(self.cfg.agent_path.clone().into_os_string());
        argv.push("--agent".into());
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty launch agent command"))?;
        let (in_r, in_w) = sys::pipe()?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::from(in_r))
            .stdout(Stdio::null())
            .process_group(0);
        let parent = sys::getpid();
        let reset = crate::spawn::signals_to_reset();
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes async-signal-safe calls (see `spawn::child_setup`).
        unsafe {
            cmd.pre_exec(move || crate::spawn::child_setup(parent, None, None, None, &reset));
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                sys::kill_group(pid, libc::SIGKILL);
                sys::reap(pid);
                return Err(e);
            }
        };
        // The line is far below a pipe's capacity: this write does not block.
        let line = bootstrap_line(self.addr, self.jobid, node, &self.secret.to_hex());
        let mut w = std::fs::File::from(in_w);
        if let Err(e) = w.write_all(line.as_bytes()) {
            sys::kill_group(pid, libc::SIGKILL);
            sys::reap(pid);
            return Err(e);
        }
        self.nodes.insert(
            node,
            Remote {
                host: host.to_string(),
                assign: Some(Box::new(assign)),
                pid,
                pidfd: Some(pidfd),
                stdin: Some(OwnedFd::from(w)),
                conn: None,
                started: Instant::now(),
                state: State::Launching,
            },
        );
        Ok(())
    }

    /// Every agent that joins from now on starts a dosfs server over `dir`
    /// (`FsServe`) and waits for [`Agents::release`] for its assignment.
    pub fn set_fs(&mut self, dir: OsString, servers: u32, fsid: [u8; 16]) {
        self.fs = Some((dir, servers, fsid));
    }

    /// Sends node `node` the file system's addresses (`FsAddrs`), then its
    /// assignment.
    pub fn release(&mut self, node: usize, addrs: &ToAgent) {
        let Some(r) = self.nodes.get_mut(&node) else {
            return;
        };
        let (Some(c), Some(a)) = (r.conn.as_mut(), r.assign.take()) else {
            return;
        };
        c.send(|o| addrs.encode(o));
        c.send(|o| ToAgent::Assign(a).encode(o));
    }

    /// One round of the agents' work outside the supervisor's loop (while
    /// the servers start, and while the file system is staged out): waits up
    /// to `wait` for their descriptors, handles them, sends heartbeats;
    /// returns the events.
    pub fn pump(&mut self, wait: Duration) -> Vec<AgentEvent> {
        let mut set = Vec::new();
        self.poll_fds(&mut set);
        let mut fds: Vec<libc::pollfd> = set.iter().map(|(p, _)| *p).collect();
        let now = Instant::now();
        let until = self.deadline().map_or(now + wait, |d| d.min(now + wait));
        let ms = until
            .saturating_duration_since(now)
            .as_millis()
            .clamp(1, i32::MAX as u128) as i32;
        if sys::poll(&mut fds, ms).is_ok() {
            for (p, (_, t)) in fds.iter().zip(&set) {
                if p.revents != 0 {
                    self.ready(*t, p.revents);
                }
            }
        }
        self.tick(Instant::now());
        self.take_events()
    }

    /// Whether the agents' connections are read (`false` while dosrun's
    /// output is full). Heartbeat silence counts only while they are read:
    /// when reading resumes at `now`, every connection counts as heard.
    pub fn set_reading(&mut self, on: bool, now: Instant) {
        if on && !self.reading {
            for c in self.nodes.values_mut().filter_map(|r| r.conn.as_mut()) {
                c.last_rx = c.last_rx.max(now);
            }
        }
        self.reading = on;
    }

    /// Adds the descriptors to poll.
    pub fn poll_fds(&self, out: &mut Vec<(libc::pollfd, AgentTag)>) {
        let pfd = |fd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        self.acceptor
            .poll_fds(|p, t| out.push((p, AgentTag::Accept(t))));
        for (&n, r) in &self.nodes {
            if let Some(c) = &r.conn {
                let mut ev = if self.reading { libc::POLLIN } else { 0 };
                if c.wants_write() {
                    ev |= libc::POLLOUT;
                }
                out.push((pfd(c.fd(), ev), AgentTag::Conn(n)));
            }
            if let Some(fd) = &r.pidfd {
                out.push((pfd(fd.as_raw_fd(), libc::POLLIN), AgentTag::Child(n)));
            }
        }
    }

    /// The next time [`Agents::tick`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        let mut d = vec![self.next_beat];
        d.extend(self.acceptor.deadline());
        for r in self.nodes.values() {
            match r.state {
                State::Launching => d.push(r.started + self.cfg.start_timeout),
                State::Connected if self.reading => {
                    if let Some(c) = &r.conn {
                        d.push(c.last_rx + self.cfg.timeout);
                    }
                }
                _ => {}
            }
        }
        d.into_iter().min()
    }

    /// Heartbeats and timeouts.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next_beat {
            self.next_beat = now + self.cfg.heartbeat;
            for r in self.nodes.values_mut() {
                if let (State::Connected, Some(c)) = (r.state, r.conn.as_mut()) {
                    c.send(|o| ToAgent::Heartbeat.encode(o));
                }
            }
        }
        self.acceptor.expire(now);
        self.joined();
        let timeout = self.cfg.timeout;
        let start_timeout = self.cfg.start_timeout;
        let mut lost = Vec::new();
        for (&n, r) in &self.nodes {
            match (r.state, &r.conn) {
                (State::Launching, _) if now >= r.started + start_timeout => lost.push((
                    n,
                    format!(
                        "its node agent did not connect within {} s",
                        start_timeout.as_secs_f64()
                    ),
                )),
                (State::Connected, Some(c)) if self.reading && now >= c.last_rx + timeout => lost
                    .push((
                        n,
                        format!(
                            "no heartbeat from its node agent for {} s (agent or link lost)",
                            timeout.as_secs_f64()
                        ),
                    )),
                _ => {}
            }
        }
        for (n, why) in lost {
            self.lose(n, why);
        }
    }

    /// Handles readiness of one descriptor.
    pub fn ready(&mut self, tag: AgentTag, revents: i16) {
        match tag {
            AgentTag::Accept(t) => {
                let expected = self.expected();
                self.acceptor.ready(t, revents, expected);
                self.joined();
            }
            AgentTag::Conn(n) => self.on_conn(n, revents),
            AgentTag::Child(n) => self.on_child(n),
        }
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<AgentEvent> {
        std::mem::take(&mut self.events)
    }

    /// Sends `m` to every connected agent.
    pub fn broadcast(&mut self, m: &ToAgent) {
        for r in self.nodes.values_mut() {
            if let Some(c) = r.conn.as_mut() {
                c.send(|o| m.encode(o));
            }
        }
    }

    /// Sends `m` to node `node`'s agent.
    pub fn send(&mut self, node: usize, m: &ToAgent) {
        if let Some(c) = self.nodes.get_mut(&node).and_then(|r| r.conn.as_mut()) {
            c.send(|o| m.encode(o));
        }
    }

    /// Nodes whose agent has not connected yet (the job is stopping: they
    /// will not be waited for).
    pub fn abandon_unconnected(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (&n, r) in self.nodes.iter_mut() {
            if r.state == State::Launching {
                r.state = State::Lost;
                r.stdin = None;
                sys::kill_group(r.pid, libc::SIGKILL);
                out.push(n);
            }
        }
        out
    }

    /// End of the job: tells every agent to exit, waits a little for the
    /// launch agents, kills what is left and reaps them.
    pub fn finish(mut self) {
        for r in self.nodes.values_mut() {
            if let Some(c) = r.conn.as_mut() {
                c.send(|o| ToAgent::Exit.encode(o));
                c.flush_blocking(Duration::from_millis(200));
            }
        }
        // Agents sync and stop their dosfs servers before they exit.
        let wait = if self.fs.is_some() {
            EXIT_WAIT + dos_fs::standing::STOP_TIMEOUT
        } else {
            EXIT_WAIT
        };
        let until = Instant::now() + wait;
        loop {
            let mut fds: Vec<libc::pollfd> = self
                .nodes
                .values()
                .filter_map(|r| r.pidfd.as_ref())
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let live = fds.len();
            let left = until.saturating_duration_since(Instant::now());
            if live == 0 || left.is_zero() {
                break;
            }
            if sys::poll(&mut fds, left.as_millis().clamp(1, 1000) as i32).is_err() {
                break;
            }
            for r in self.nodes.values_mut() {
                if r.pidfd.is_some() && matches!(sys::peek_exit(r.pid), Ok(Some(_)) | Err(_)) {
                    r.pidfd = None;
                }
            }
        }
        for r in self.nodes.values_mut() {
            r.stdin = None;
            sys::kill_group(r.pid, libc::SIGKILL);
            sys::reap(r.pid);
        }
    }

    fn lose(&mut self, n: usize, why: String) {
        let Some(r) = self.nodes.get_mut(&n) else {
            return;
        };
        if matches!(r.state, State::Lost) {
            return;
        }
        r.state = State::Lost;
        r.conn = None;
        // Its end: the agent (if it still hears us) sees its stdin close.
        r.stdin = None;
        sys::kill_group(r.pid, libc::SIGKILL);
        self.events.push(AgentEvent::Lost { node: n, why });
    }

    /// Nodes whose agent has not connected yet.
    fn expected(&self) -> usize {
        self.nodes
            .values()
            .filter(|r| r.state == State::Launching)
            .count()
    }

    /// Takes the control connections that authenticated (each the agent
    /// of a node that expects it, or refused) and the acceptor's refusal
    /// lines.
    fn joined(&mut self) {
        for j in self.acceptor.take_joined() {
            let node = j.peer;
            let fresh = usize::try_from(node)
                .ok()
                .and_then(|n| self.nodes.get(&n).map(|r| (n, r.state)));
            let Some((n, State::Launching)) = fresh else {
                let why = format!("node {node} is not expecting its agent");
                self.acceptor.refuse_joined(j, &why);
                continue;
            };
            let mut conn = match CtlConn::new(j.stream, j.inbuf) {
                Ok(c) => c,
                Err(e) => {
                    self.lose(n, format!("control connection: {e}"));
                    continue;
                }
            };
            let Some(r) = self.nodes.get_mut(&n) else {
                continue;
            };
            r.state = State::Connected;
            // The end of our handshake, if the socket did not take it yet.
            conn.send(|o| {
                o.extend_from_slice(&j.unsent);
                Ok(())
            });
            match &self.fs {
                // The assignment waits for every node's server.
                Some((dir, servers, fsid)) => conn.send(|o| {
                    ToAgent::FsServe {
                        dir: dir.clone(),
                        servers: *servers,
                        fsid: *fsid,
                    }
                    .encode(o)
                }),
                None => {
                    let assign = r.assign.take().unwrap_or_default();
                    conn.send(|o| ToAgent::Assign(assign).encode(o));
                }
            }
            r.conn = Some(conn);
            // Frames may have come with the proof.
            self.on_conn(n, libc::POLLIN);
        }
        let lines = self.acceptor.take_lines();
        self.events
            .extend(lines.into_iter().map(AgentEvent::Refused));
    }

    fn on_conn(&mut self, n: usize, revents: i16) {
        let Some(c) = self.nodes.get_mut(&n).and_then(|r| r.conn.as_mut()) else {
            return;
        };
        if revents & libc::POLLOUT != 0 {
            c.flush();
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            c.read();
        }
        loop {
            match c.next_frame(FromAgent::decode) {
                Ok(Some(m)) => self.events.push(AgentEvent::Frame(n, m)),
                Ok(None) => break,
                Err(e) => {
                    return self.lose(n, format!("its node agent sent a bad frame: {e}"));
                }
            }
        }
        if c.closed {
            self.lose(
                n,
                "the connection to its node agent closed (agent or link lost)".into(),
            );
        }
    }

    fn on_child(&mut self, n: usize) {
        let Some(r) = self.nodes.get_mut(&n) else {
            return;
        };
        let cause = match sys::peek_exit(r.pid) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(_) => ExitCause::Exited(-1),
        };
        r.pidfd = None;
        if r.state == State::Launching {
            let what = self.cfg.launch.first().cloned().unwrap_or_default();
            self.lose(
                n,
                format!(
                    "the launch agent ({what}) {} before the node agent connected",
                    cause.describe()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusals::BURST;
    use dos_transport::auth::{Handshake, Role, HELLO_LEN, PROOF_LEN};
    use std::io::Read;
    use std::net::TcpStream;

    fn agents(jobid: u64, secret: &Secret) -> Agents {
        let cfg = AgentsConfig {
            // Stands for ssh: waits for the end of its stdin.
            launch: ["sh", "-c", "cat >/dev/null", "{host}"]
                .map(str::to_string)
                .to_vec(),
            agent_path: "/nonexistent/dosrun".into(),
            heartbeat: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(30),
        };
        Agents::bind("127.0.0.1".parse().unwrap(), jobid, secret.clone(), cfg).unwrap()
    }

    fn drive(a: &mut Agents, rounds: usize) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        for _ in 0..rounds {
            let mut set = Vec::new();
            a.poll_fds(&mut set);
            let mut fds: Vec<libc::pollfd> = set.iter().map(|(p, _)| *p).collect();
            sys::poll(&mut fds, 10).unwrap();
            for (p, (_, t)) in fds.iter().zip(&set) {
                if p.revents != 0 {
                    a.ready(*t, p.revents);
                }
            }
            a.tick(Instant::now());
            events.extend(a.take_events());
        }
        events
    }

    /// Strangers holding connections open on the control port, from the
    /// agent's own address, before and after the agent's: it still joins.
    #[test]
    fn held_connections_cannot_crowd_out_an_agent() {
        let secret = Secret::generate().unwrap();
        let mut a = agents(9, &secret);
        a.launch(0, "node-a", Assign::default()).unwrap();
        let addr = a.addr();
        let early: Vec<TcpStream> = (0..AUTH_SLACK)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut events = drive(&mut a, 3);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hs = Handshake::new(&secret, &wire::auth_context(9), Role::Initiator, 0).unwrap();
        s.write_all(&hs.hello()).unwrap();
        let late: Vec<TcpStream> = (0..2 * AUTH_SLACK)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        events.extend(drive(&mut a, 5));
        let mut h = [0u8; HELLO_LEN];
        s.read_exact(&mut h).unwrap();
        s.write_all(&hs.on_hello(&h).unwrap()).unwrap();
        events.extend(drive(&mut a, 5));
        let mut p = [0u8; PROOF_LEN];
        s.read_exact(&mut p).unwrap();
        assert_eq!(hs.on_proof(&p).unwrap(), wire::DOSRUN_ID);
        assert_eq!(a.nodes[&0].state, State::Connected);
        let lost = events.iter().any(|e| matches!(e, AgentEvent::Lost { .. }));
        assert!(!lost, "{events:?}");
        let refused: Vec<&String> = events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Refused(l) => Some(l),
                _ => None,
            })
            .collect();
        assert!(
            !refused.is_empty() && refused.len() <= BURST as usize,
            "{refused:?}"
        );
        assert!(refused[0].contains("sent nothing valid"), "{refused:?}");
        assert!(a.acceptor.pending() <= 1 + SOURCE_SLACK);
        drop((early, late));
        a.finish();
    }

    /// A flood of connections that send junk: a bounded log, nothing kept.
    #[test]
    fn a_flood_of_bad_control_connections_is_logged_rate_limited() {
        let secret = Secret::generate().unwrap();
        let mut a = agents(10, &secret);
        let addr = a.addr();
        let mut refused = 0;
        for i in 0..1000 {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(&[0x5a; HELLO_LEN]);
            drop(s);
            if i % 50 == 49 {
                refused += drive(&mut a, 1)
                    .iter()
                    .filter(|e| matches!(e, AgentEvent::Refused(_)))
                    .count();
            }
        }
        refused += drive(&mut a, 3)
            .iter()
            .filter(|e| matches!(e, AgentEvent::Refused(_)))
            .count();
        assert_eq!(refused, BURST as usize);
        assert!(a.acceptor.pending() == 0);
        a.finish();
    }
}
