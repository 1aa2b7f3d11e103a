//! The rank side of the wire-up service: one blocking connection to `dosrun`,
//! the inherited socket pair of `DOS_PMI_FD` or, without it, a connection to
//! `DOS_PMI_ADDR` that authenticates (see [the module](super)).
//!
//! Every read waits at most `DOS_WIREUP_TIMEOUT_MS` (120 s; 0: no limit), the
//! authentication at most 30 s: a service that stops answering (its dosrun
//! or node agent stopped, its host lost) fails the call with an error that
//! says so, rather than holding the rank forever.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

use dos_transport::auth::{self, Role, Secret};

use super::wire::{self, Header, Reply, Request, HEADER_LEN};
use super::{
    auth_context, parse_hex64, ENV_JOBID, ENV_JOB_SECRET, ENV_LOCAL_RANK, ENV_LOCAL_SIZE,
    ENV_NNODES, ENV_NODE_ADDR, ENV_NODE_ID, ENV_PMI_ADDR, ENV_PMI_FD, ENV_RANK, ENV_SHM_FD,
    ENV_SIZE, SERVICE_ID,
};
use crate::{Error, Result};

/// How long the authentication of the wire-up connection may take.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a rank tries to join the wire-up service: a service
/// under a flood of connections may close ours while it authenticates
/// (`launcher/src/pmi_server.rs` makes room by closing the connections
/// that sent nothing valid, the oldest first); we connect again.
const JOIN_ATTEMPTS: u32 = 6;
/// The wait before the second attempt; it doubles for each next one (with
/// up to as much again at random, so ranks do not retry in step).
const JOIN_BACKOFF: Duration = Duration::from_millis(20);

/// What the launcher told this rank through the environment.
#[derive(Debug, Clone)]
struct Wiring {
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    node_id: usize,
    nnodes: usize,
    node_addr: Option<IpAddr>,
    jobid: u64,
    secret: Secret,
    addr: String,
    shm_fd: Option<RawFd>,
    /// `DOS_PMI_FD`: the rank's end of a socket pair joined to the service.
    pmi_fd: Option<RawFd>,
}

impl Wiring {
    /// Parses the launcher's variables; `Ok(None)` when `DOS_PMI_ADDR` is unset.
    fn parse(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Wiring>> {
        let Some(addr) = lookup(ENV_PMI_ADDR) else {
            return Ok(None);
        };
        if addr.is_empty() || addr == "@" {
            return Err(env(ENV_PMI_ADDR, "empty address"));
        }
        let need = |var: &'static str| lookup(var).ok_or(env(var, "not set"));
        let num = |var: &'static str| -> Result<usize> {
            need(var)?
                .parse()
                .map_err(|_| env(var, "not a non-negative integer"))
        };
        let hex = |var: &'static str| -> Result<u64> {
            parse_hex64(&need(var)?).ok_or(env(var, "not 1 to 16 hex digits"))
        };
        let w = Wiring {
            rank: num(ENV_RANK)?,
            size: num(ENV_SIZE)?,
            local_rank: num(ENV_LOCAL_RANK)?,
            local_size: num(ENV_LOCAL_SIZE)?,
            node_id: num(ENV_NODE_ID)?,
            nnodes: match lookup(ENV_NNODES) {
                None => 1,
                Some(_) => num(ENV_NNODES)?,
            },
            node_addr: match lookup(ENV_NODE_ADDR) {
                None => None,
                Some(s) => Some(
                    s.parse::<IpAddr>()
                        .map_err(|_| env(ENV_NODE_ADDR, "not an IP address"))?,
                ),
            },
            jobid: hex(ENV_JOBID)?,
            secret: Secret::from_hex(&need(ENV_JOB_SECRET)?)
                .map_err(|_| env(ENV_JOB_SECRET, "not 32 to 128 hex digits"))?,
            addr,
            shm_fd: match lookup(ENV_SHM_FD) {
                None => None,
                Some(s) => Some(
                    s.parse::<RawFd>()
                        .ok()
                        .filter(|&fd| fd >= 0)
                        .ok_or(env(ENV_SHM_FD, "not a descriptor number"))?,
                ),
            },
            pmi_fd: match lookup(ENV_PMI_FD) {
                None => None,
                Some(s) => Some(
                    s.parse::<RawFd>()
                        .ok()
                        .filter(|&fd| fd >= 0)
                        .ok_or(env(ENV_PMI_FD, "not a descriptor number"))?,
                ),
            },
        };
        if w.size == 0 || w.rank >= w.size {
            return Err(env(ENV_RANK, "rank out of range of DOS_SIZE"));
        }
        if w.local_size == 0 || w.local_rank >= w.local_size || w.local_size > w.size {
            return Err(env(
                ENV_LOCAL_RANK,
                "local rank out of range of DOS_LOCAL_SIZE",
            ));
        }
        if w.nnodes == 0 {
            return Err(env(ENV_NNODES, "must be at least 1"));
        }
        if w.node_id >= w.nnodes {
            return Err(env(ENV_NODE_ID, "node id out of range of DOS_NNODES"));
        }
        if u32::try_from(w.rank).is_err() {
            return Err(env(ENV_RANK, "rank too large"));
        }
        Ok(Some(w))
    }
}

/// Why a program started without dosrun cannot run as a world of one: it
/// was started as one of several ranks by another launcher, whose wire-up
/// dos does not speak (every rank would otherwise think itself rank 0 of 1).
/// Called only without `PMI_FD` (with it, the rank joins directly). `None`: a program started alone (also by `mpirun -n 1`,
/// `srun -n 1`), which runs as a world of one.
///
/// * PMIx (Open MPI's `mpirun`, `srun --mpi=pmix`): `PMIX_RANK` set, with
///   `OMPI_COMM_WORLD_SIZE` or `PMI_SIZE` above 1 or neither given;
/// * PMI-1 or PMI-2 without `PMI_FD` (a server reached through `PMI_PORT`):
///   `PMI_SIZE` above 1.
///
/// A plain `srun -n N` (no PMI plug-in) is not recognised: Slurm's own
/// variables do not tell its steps from a batch script's.
fn foreign_launcher(lookup: impl Fn(&str) -> Option<String>) -> Option<Error> {
    let size = |var: &str| lookup(var).and_then(|v| v.trim().parse::<u64>().ok());
    let several = |var: &str| size(var).is_some_and(|n| n > 1);
    if lookup("PMIX_RANK").is_some() {
        let known = size("OMPI_COMM_WORLD_SIZE").or(size("PMI_SIZE"));
        if known.is_none_or(|n| n > 1) {
            return Some(env(
                "PMIX_RANK",
                "started by a PMIx launcher (Open MPI's mpirun, srun --mpi=pmix), which dos does not speak: start the program with dosrun (inside a Slurm allocation dosrun takes its hosts from it), srun --mpi=pmi2 or mpiexec.hydra",
            ));
        }
    }
    if several("PMI_SIZE") {
        return Some(env(
            "PMI_SIZE",
            "started as one of several ranks by a PMI launcher without PMI_FD (a server reached through PMI_PORT), which dos does not speak: start the program with dosrun, srun --mpi=pmi2 or mpiexec.hydra",
        ));
    }
    None
}

/// Takes `fd` as the rank's end of the launcher's socket pair if it is one:
/// an open, connected, unnamed Unix stream socket whose peer runs as this
/// user in a process other than `me` (this one). Anything else (a wrapper between dosrun and the program closed it,
/// and the number now names another file) is left alone: `None`, and the
/// rank connects to the service's address instead. The socket taken is
/// made close-on-exec, so programs this rank starts do not inherit it.
fn joined_socket(fd: RawFd, me: libc::pid_t) -> Option<UnixStream> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return None;
    }
    let int_opt = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes to `v`; on a
        // descriptor that is not open or not a socket it fails.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(v)
    };
    if int_opt(libc::SO_DOMAIN) != Some(libc::AF_UNIX)
        || int_opt(libc::SO_TYPE) != Some(libc::SOCK_STREAM)
    {
        return None;
    }
    // SAFETY: an all-zero ucred is valid storage.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: writes at most `len` bytes to `cred`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // The peer runs as this user, and is not this process (a pair this
    // program made itself after a wrapper freed the number).
    // SAFETY: geteuid cannot fail.
    if r != 0 || cred.uid != unsafe { libc::geteuid() } || cred.pid == me {
        return None;
    }
    // A socket pair's ends are unnamed: the peer's address is only its
    // family. The service's connections are never made this way.
    // SAFETY: an all-zero sockaddr_un is valid storage.
    let mut peer: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: getpeername writes at most `len` bytes to `peer`.
    let r =
        unsafe { libc::getpeername(fd, (&mut peer as *mut libc::sockaddr_un).cast(), &mut len) };
    if r != 0 || len as usize != std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // Not inherited by programs this rank starts.
    // SAFETY: F_SETFD on an open descriptor (getsockopt succeeded on it).
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the launcher passed this descriptor to this process for its
    // wire-up client (checked above to be such a socket); nothing else in
    // the process uses it.
    Some(unsafe { UnixStream::from_raw_fd(fd) })
}

/// Whether joining may succeed if tried again: the connection could not be
/// made or closed during the handshake (the service was busy), as opposed
/// to a service that failed to prove the job's secret.
fn retriable(e: &Error) -> bool {
    match e {
        // Nobody listens (dosrun is gone), or not for us; or the service
        // stayed silent for the whole deadline (stalled: another attempt
        // would only multiply the wait).
        Error::Wireup { source, .. } => !matches!(
            source.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::NotFound
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::TimedOut
        ),
        Error::Transport(dos_transport::Error::Sys { .. }) => true,
        _ => false,
    }
}

fn env(var: &'static str, reason: &'static str) -> Error {
    Error::Environment { var, reason }
}

/// A rank's connection to the launcher's wire-up service.
///
/// Blocking: each call sends one request and waits for its reply. `fence`
/// returns when every rank of the job has entered the fence.
///
/// Dropping a client without [`Client::finalize`] tells the launcher that the
/// rank left the wire-up abnormally; fences that still need the rank fail.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    w: Wiring,
    buf: Vec<u8>,
    finalized: bool,
    /// Direct launch: the other launcher's PMI server (PMI-1 or PMI-2) instead of dosrun's
    /// service (then `stream` is a copy of its socket, unused).
    direct: Option<super::direct::Direct>,
}

/// The job's size as `dosrun`'s environment gives it, without connecting
/// to anything: `None` when the program was not started by `dosrun` (or the
/// variables are malformed, which [`Client::from_env`] then reports). For a
/// library that must tell the size before joining the job (MPI-4's
/// `MPI_INFO_ENV` before `MPI_Init`).
pub fn size_from_env() -> Option<usize> {
    let lookup = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    Wiring::parse(lookup).ok().flatten().map(|w| w.size)
}

impl Client {
    /// Connects to the wire-up service named by the launcher's environment.
    ///
    /// `Ok(None)` when `DOS_PMI_ADDR` is unset (the program was started
    /// without `dosrun`). Errors when the variables are malformed, the service
    /// cannot be reached, or it refuses this rank.
    pub fn from_env() -> Result<Option<Client>> {
        let lookup = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        let Some(w) = Wiring::parse(lookup)? else {
            if lookup("PMI_FD").is_some() && lookup("PMIX_RANK").is_none() {
                return Client::direct(lookup).map(Some);
            }
            return match foreign_launcher(lookup) {
                Some(e) => Err(e),
                None => Ok(None),
            };
        };
        if let Some(fd) = w.shm_fd {
            // SAFETY: F_GETFD only reads the descriptor flags of `fd`, open or not.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(env(ENV_SHM_FD, "not an open descriptor"));
            }
        }
        Client::join(w).map(Some)
    }

    /// Joins through the launcher's socket pair (`DOS_PMI_FD`) if this
    /// process holds it, else by connecting to the service's address.
    fn join(w: Wiring) -> Result<Client> {
        // SAFETY: getpid cannot fail.
        Client::join_as(w, unsafe { libc::getpid() })
    }

    /// [`Client::join`] for the process `me` (tests take a pair they made
    /// themselves as the launcher's by naming another process).
    fn join_as(w: Wiring, me: libc::pid_t) -> Result<Client> {
        match w.pmi_fd.and_then(|fd| joined_socket(fd, me)) {
            Some(stream) => Client::preconnected(w, stream),
            None => Client::connect(w),
        }
    }

    /// Uses the socket the launcher joined to its service before it started
    /// this rank (`DOS_PMI_FD`): no connection, no handshake. The launcher
    /// made the pair and gave this end to this process only, so whoever is
    /// at the other end is the service.
    fn preconnected(w: Wiring, stream: UnixStream) -> Result<Client> {
        let io = |source| Error::Wireup {
            op: "connect",
            source,
        };
        let limit = crate::config::Config::from_env()
            .unwrap_or_default()
            .wireup_timeout_ms;
        stream
            .set_read_timeout((limit > 0).then(|| Duration::from_millis(limit)))
            .map_err(io)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(256),
            finalized: false,
            w,
            direct: None,
        })
    }

    /// Joins a job started by another launcher's PMI server (`PMI_FD`):
    /// see [`super::direct`].
    fn direct(lookup: impl Fn(&str) -> Option<String>) -> Result<Client> {
        let cfg = crate::config::Config::from_env().unwrap_or_default();
        let limit =
            (cfg.wireup_timeout_ms > 0).then(|| Duration::from_millis(cfg.wireup_timeout_ms));
        let j = super::direct::join(lookup, limit, cfg.shm_ring_bytes, cfg.pmi)?;
        let stream = j.conn.socket_copy()?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            finalized: false,
            w: Wiring {
                rank: j.rank,
                size: j.size,
                local_rank: j.local_rank,
                local_size: j.local_size,
                node_id: j.node_id,
                nnodes: j.nnodes,
                node_addr: j.node_addr,
                jobid: j.jobid,
                secret: j.secret,
                addr: String::new(),
                shm_fd: Some(j.shm_fd),
                pmi_fd: None,
            },
            direct: Some(j.conn),
        })
    }

    /// Connects and authenticates, retrying [`JOIN_ATTEMPTS`] times when
    /// the connection fails or closes during the handshake (not when the
    /// service proves to hold another secret).
    fn connect(w: Wiring) -> Result<Client> {
        let mut wait = JOIN_BACKOFF;
        let mut attempt = 1;
        loop {
            match Client::connect_once(w.clone()) {
                Ok(c) => return Ok(c),
                Err(e) if attempt < JOIN_ATTEMPTS && retriable(&e) => {
                    let mut r = [0u8; 2];
                    let _ = auth::fill_random(&mut r);
                    let jitter = wait.mul_f64(f64::from(u16::from_le_bytes(r)) / 65536.0);
                    std::thread::sleep(wait + jitter);
                    wait *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn connect_once(w: Wiring) -> Result<Client> {
        let wrap = |source| Error::Wireup {
            op: "connect",
            source,
        };
        let stream = match w.addr.strip_prefix('@') {
            Some(name) => {
                let a = SocketAddr::from_abstract_name(name.as_bytes()).map_err(wrap)?;
                UnixStream::connect_addr(&a)
            }
            None => UnixStream::connect(&w.addr),
        }
        .map_err(wrap)?;
        let mut c = Client {
            stream,
            buf: Vec::with_capacity(256),
            finalized: false,
            w,
            direct: None,
        };
        c.authenticate()?;
        Ok(c)
    }

    /// Proves to the service that this rank holds the job's secret (and
    /// checks that the service holds it too).
    fn authenticate(&mut self) -> Result<()> {
        let io = |source| Error::Wireup {
            op: "authenticate",
            source,
        };
        // A service that stops answering (its dosrun or node agent stopped,
        // or its host lost) must not hold the rank in a read forever.
        let limit = crate::config::Config::from_env()
            .unwrap_or_default()
            .wireup_timeout_ms;
        let limit = (limit > 0).then(|| Duration::from_millis(limit));
        let auth_limit = limit.map_or(AUTH_TIMEOUT, |l| l.min(AUTH_TIMEOUT));
        self.stream.set_read_timeout(Some(auth_limit)).map_err(io)?;
        let ctx = auth_context(self.w.jobid);
        let peer = match auth::handshake(
            &mut self.stream,
            &self.w.secret,
            &ctx,
            Role::Initiator,
            self.w.rank as u64,
        ) {
            Err(dos_transport::Error::Sys { source, .. }) if timed_out(&source) => {
                return Err(io(stalled(auth_limit)));
            }
            r => r?,
        };
        if peer != SERVICE_ID {
            return Err(Error::WireupProtocol {
                reason: "the wire-up service presented an unexpected id",
            });
        }
        self.stream.set_read_timeout(limit).map_err(io)?;
        Ok(())
    }

    /// This rank (`DOS_RANK`).
    pub fn rank(&self) -> usize {
        self.w.rank
    }

    /// Number of ranks in the job (`DOS_SIZE`).
    pub fn size(&self) -> usize {
        self.w.size
    }

    /// Rank among the ranks of this node (`DOS_LOCAL_RANK`).
    pub fn local_rank(&self) -> usize {
        self.w.local_rank
    }

    /// Number of ranks on this node (`DOS_LOCAL_SIZE`).
    pub fn local_size(&self) -> usize {
        self.w.local_size
    }

    /// Index of this node in the job (`DOS_NODE_ID`).
    pub fn node_id(&self) -> usize {
        self.w.node_id
    }

    /// Number of nodes of the job (`DOS_NNODES`).
    pub fn nnodes(&self) -> usize {
        self.w.nnodes
    }

    /// The IP address of this node on the job's network (`DOS_NODE_ADDR`),
    /// for listeners other nodes connect to; `None` in a single-node job.
    pub fn node_addr(&self) -> Option<IpAddr> {
        self.w.node_addr
    }

    /// The job's secret (`DOS_JOB_SECRET`), which every connection between
    /// processes of the job must prove knowledge of.
    pub fn job_secret(&self) -> Option<&Secret> {
        Some(&self.w.secret)
    }

    /// The job's id (`DOS_JOBID`).
    pub fn jobid(&self) -> u64 {
        self.w.jobid
    }

    /// The inherited shared segment's descriptor (`DOS_SHM_FD`), if any.
    pub fn shm_fd(&self) -> Option<RawFd> {
        self.w.shm_fd
    }

    /// Publishes `value` under `key`; other ranks see it after the next fence.
    ///
    /// Keys are 1 to [`wire::MAX_KEY`] bytes, values at most [`wire::MAX_VALUE`].
    /// Putting a key again before the fence replaces its value.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        if let Some(d) = &mut self.direct {
            return d.put(key, value);
        }
        match self.call("put", Request::Put { key, value })? {
            Answer::Ok => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// Waits until every rank of the job has entered the fence.
    pub fn fence(&mut self) -> Result<()> {
        if let Some(d) = &mut self.direct {
            return d.barrier();
        }
        match self.call("fence", Request::Fence)? {
            Answer::FenceDone => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// Reads the value of `key` as of the last completed fence.
    ///
    /// [`Error::KeyNotFound`] when no rank put it before that fence.
    pub fn get(&mut self, key: &str) -> Result<Vec<u8>> {
        if let Some(d) = &mut self.direct {
            return d.get(key);
        }
        match self.call("get", Request::Get { key })? {
            Answer::Value(v) => Ok(v),
            Answer::NotFound => Err(Error::KeyNotFound {
                key: key.to_string(),
            }),
            _ => Err(unexpected()),
        }
    }

    /// Asks the launcher to stop the whole job and exit with `code`,
    /// printing `msg` (cut to [`wire::MAX_MSG`] bytes).
    ///
    /// Returns once the launcher has the request; the launcher then ends
    /// every rank of the job, this one included, so the caller normally
    /// exits right after.
    pub fn abort(&mut self, code: i32, msg: &str) -> Result<()> {
        if let Some(d) = &mut self.direct {
            // PMI-1 carries no message (MPICH prints its own): say it here.
            if !msg.is_empty() && d.version() == 1 {
                eprintln!("dos: rank {} aborts the job: {msg}", self.w.rank);
            }
            return d.abort(code, msg);
        }
        let mut end = msg.len().min(wire::MAX_MSG);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        let req = Request::Abort {
            code,
            msg: &msg[..end],
        };
        match self.call("abort", req) {
            Ok(Answer::Ok) => Ok(()),
            Ok(_) => Err(unexpected()),
            // The launcher may stop the job before its reply reaches us.
            Err(Error::Wireup { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Tells the launcher this rank is done with the wire-up service.
    ///
    /// Every later call fails.
    pub fn finalize(&mut self) -> Result<()> {
        if let Some(d) = &mut self.direct {
            if self.finalized {
                return Err(Error::InvalidArgument {
                    op: "finalize",
                    reason: "the wire-up client is finalized",
                });
            }
            d.finalize()?;
            self.finalized = true;
            return Ok(());
        }
        match self.call("finalize", Request::Finalize)? {
            Answer::Ok => {
                self.finalized = true;
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
                Ok(())
            }
            _ => Err(unexpected()),
        }
    }

    /// Sends `req` and waits for its reply.
    fn call(&mut self, op: &'static str, req: Request<'_>) -> Result<Answer> {
        if self.finalized {
            return Err(Error::InvalidArgument {
                op,
                reason: "the wire-up client is finalized",
            });
        }
        let io = |source| Error::Wireup { op, source };
        self.buf.clear();
        req.encode(&mut self.buf)?;
        self.stream.write_all(&self.buf).map_err(io)?;

        // A read timeout (`DOS_WIREUP_TIMEOUT_MS`) says the service stalled.
        let limit = self.stream.read_timeout().ok().flatten();
        let stalled = |e: io::Error| match limit {
            Some(d) if timed_out(&e) => stalled(d),
            _ => e,
        };
        let mut hdr = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut hdr)
            .map_err(|e| io(stalled(e)))?;
        let h = Header::decode(&hdr)?;
        self.buf.clear();
        self.buf.resize(h.len, 0);
        self.stream
            .read_exact(&mut self.buf)
            .map_err(|e| io(stalled(e)))?;
        Ok(match Reply::decode(h, &self.buf)? {
            Reply::Ok => Answer::Ok,
            Reply::Value(v) => Answer::Value(v.to_vec()),
            Reply::NotFound => Answer::NotFound,
            Reply::FenceDone => Answer::FenceDone,
            Reply::Error(m) => {
                return Err(io(io::Error::other(format!("dosrun refused {op}: {m}"))));
            }
        })
    }
}

/// Whether `e` is a read that timed out.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The error of a wire-up service silent for `limit`.
fn stalled(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no answer from the wire-up service (dosrun or its node agent) within {} ms \
             (DOS_WIREUP_TIMEOUT_MS): it is stopped or lost",
            limit.as_millis()
        ),
    )
}

/// An owned reply.
enum Answer {
    Ok,
    Value(Vec<u8>),
    NotFound,
    FenceDone,
}

fn unexpected() -> Error {
    Error::WireupProtocol {
        reason: "unexpected reply kind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const GOOD: &[(&str, &str)] = &[
        ("DOS_PMI_ADDR", "@dos-00000000000000ab-pmi"),
        ("DOS_RANK", "2"),
        ("DOS_SIZE", "4"),
        ("DOS_LOCAL_RANK", "2"),
        ("DOS_LOCAL_SIZE", "4"),
        ("DOS_NODE_ID", "0"),
        ("DOS_JOBID", "00000000000000ab"),
        ("DOS_JOB_SECRET", SECRET_HEX),
        ("DOS_SHM_FD", "3"),
    ];
    const SECRET_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn with(over: &[(&'static str, Option<&'static str>)]) -> Result<Option<Wiring>> {
        let mut m: Vec<(&str, &str)> = GOOD.to_vec();
        for (k, v) in over {
            m.retain(|(n, _)| n != k);
            if let Some(v) = v {
                m.push((k, v));
            }
        }
        Wiring::parse(vars(&m))
    }

    #[test]
    fn parses_the_launcher_environment() {
        let w = Wiring::parse(vars(GOOD)).unwrap().unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.local_size), (2, 4, 2, 4));
        assert_eq!(w.jobid, 0xab);
        assert_eq!(w.secret.to_hex(), SECRET_HEX);
        assert_eq!(w.shm_fd, Some(3));
        assert_eq!((w.nnodes, w.node_addr), (1, None));
        let w = with(&[
            ("DOS_NNODES", Some("3")),
            ("DOS_NODE_ID", Some("2")),
            ("DOS_NODE_ADDR", Some("198.18.0.3")),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(w.nnodes, 3);
        assert_eq!(w.node_addr, Some("198.18.0.3".parse().unwrap()));
        assert_eq!(with(&[("DOS_SHM_FD", None)]).unwrap().unwrap().shm_fd, None);
    }

    #[test]
    fn no_launcher_is_none() {
        assert!(Wiring::parse(vars(&[("DOS_RANK", "0")])).unwrap().is_none());
        // Started by another launcher, as one of several ranks: an error
        // that names it; alone: a world of one.
        let foreign = |v: &[(&str, &str)]| {
            foreign_launcher(vars(v)).map(|e| match e {
                Error::Environment { var, .. } => var,
                other => panic!("{other}"),
            })
        };
        assert_eq!(foreign(&[]), None);
        assert_eq!(foreign(&[("PMI_SIZE", "1"), ("PMI_RANK", "0")]), None);
        assert_eq!(
            foreign(&[("PMI_SIZE", "4"), ("PMI_FD", "3")]),
            Some("PMI_SIZE")
        );
        assert_eq!(foreign(&[("PMIX_RANK", "0")]), Some("PMIX_RANK"));
        assert_eq!(
            foreign(&[("PMIX_RANK", "2"), ("OMPI_COMM_WORLD_SIZE", "4")]),
            Some("PMIX_RANK")
        );
        assert_eq!(
            foreign(&[("PMIX_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")]),
            None
        );
        assert_eq!(
            foreign(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "1")]),
            None
        );
    }

    #[test]
    fn bad_variables_are_typed_errors() {
        let var_of = |r: Result<Option<Wiring>>| match r {
            Err(Error::Environment { var, .. }) => var,
            other => panic!("expected an environment error, got {other:?}"),
        };
        assert_eq!(var_of(with(&[("DOS_RANK", Some("x"))])), "DOS_RANK");
        assert_eq!(var_of(with(&[("DOS_RANK", Some("4"))])), "DOS_RANK");
        assert_eq!(var_of(with(&[("DOS_SIZE", None)])), "DOS_SIZE");
        assert_eq!(var_of(with(&[("DOS_JOBID", Some("zz"))])), "DOS_JOBID");
        assert_eq!(var_of(with(&[("DOS_JOB_SECRET", None)])), "DOS_JOB_SECRET");
        // 64 bits are not a job secret any more.
        assert_eq!(
            var_of(with(&[("DOS_JOB_SECRET", Some("0123456789abcdef"))])),
            "DOS_JOB_SECRET"
        );
        assert_eq!(var_of(with(&[("DOS_NNODES", Some("0"))])), "DOS_NNODES");
        assert_eq!(var_of(with(&[("DOS_NODE_ID", Some("1"))])), "DOS_NODE_ID");
        assert_eq!(
            var_of(with(&[("DOS_NODE_ADDR", Some("host"))])),
            "DOS_NODE_ADDR"
        );
        assert_eq!(var_of(with(&[("DOS_SHM_FD", Some("-1"))])), "DOS_SHM_FD");
        assert_eq!(var_of(with(&[("DOS_PMI_ADDR", Some("@"))])), "DOS_PMI_ADDR");
        assert_eq!(
            var_of(with(&[("DOS_LOCAL_RANK", Some("5"))])),
            "DOS_LOCAL_RANK"
        );
    }

    #[test]
    fn unreachable_service_is_a_wireup_error() {
        let mut w = Wiring::parse(vars(GOOD)).unwrap().unwrap();
        w.addr = format!("@dos-test-nobody-listens-{}", std::process::id());
        assert!(matches!(
            Client::connect(w),
            Err(Error::Wireup { op: "connect", .. })
        ));
    }

    #[test]
    fn talks_to_a_scripted_server() {
        use std::os::unix::net::UnixListener;
        let name = format!("dos-test-client-{}", std::process::id());
        let a = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let l = UnixListener::bind_addr(&a).unwrap();
        let server = std::thread::spawn(move || {
            // A stranger with the wrong secret is refused by the client.
            let (mut s, _) = l.accept().unwrap();
            let wrong = Secret::from_bytes(&[7; 32]).unwrap();
            let ctx = auth_context(0xab);
            assert!(auth::handshake(&mut s, &wrong, &ctx, Role::Responder, SERVICE_ID).is_err());
            drop(s);
            let (mut s, _) = l.accept().unwrap();
            let secret = Secret::from_hex(SECRET_HEX).unwrap();
            assert_eq!(
                auth::handshake(&mut s, &secret, &ctx, Role::Responder, SERVICE_ID).unwrap(),
                2
            );
            let mut expect = |want: Request<'_>, reply: Reply<'_>| serve_one(&mut s, want, reply);
            expect(
                Request::Put {
                    key: "a",
                    value: b"1",
                },
                Reply::Ok,
            );
            expect(Request::Fence, Reply::FenceDone);
            expect(Request::Get { key: "a" }, Reply::Value(b"1"));
            expect(Request::Get { key: "b" }, Reply::NotFound);
            expect(Request::Get { key: "c" }, Reply::Error("nope"));
            expect(Request::Finalize, Reply::Ok);
        });
        let mut w = Wiring::parse(vars(GOOD)).unwrap().unwrap();
        w.addr = format!("@{name}");
        assert!(Client::connect(w.clone()).is_err());
        let mut c = Client::connect(w).unwrap();
        assert_eq!(c.job_secret().unwrap().to_hex(), SECRET_HEX);
        assert_eq!((c.rank(), c.size(), c.jobid()), (2, 4, 0xab));
        c.put("a", b"1").unwrap();
        c.fence().unwrap();
        assert_eq!(c.get("a").unwrap(), b"1");
        assert!(matches!(c.get("b"), Err(Error::KeyNotFound { key }) if key == "b"));
        assert!(matches!(c.get("c"), Err(Error::Wireup { op: "get", .. })));
        c.finalize().unwrap();
        assert!(c.fence().is_err());
        server.join().unwrap();
    }

    /// A process id that is not this test's: pairs the test makes count
    /// as made by the launcher.
    const OTHER: libc::pid_t = -1;

    /// A close-on-exec pipe: (read end, write end).
    fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors to `fds`.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just made and are owned by nobody else.
        unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        }
    }

    /// Reads one request from `s` and answers `reply`.
    fn serve_one(s: &mut UnixStream, want: Request<'_>, reply: Reply<'_>) {
        let mut hdr = [0u8; HEADER_LEN];
        s.read_exact(&mut hdr).unwrap();
        let h = Header::decode(&hdr).unwrap();
        let mut body = vec![0u8; h.len];
        s.read_exact(&mut body).unwrap();
        assert_eq!(Request::decode(h, &body).unwrap(), want);
        let mut out = Vec::new();
        reply.encode(&mut out).unwrap();
        s.write_all(&out).unwrap();
    }

    #[test]
    fn only_an_unnamed_unix_stream_of_this_user_is_taken_as_the_pair() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        use std::os::unix::net::UnixListener;
        // A socket pair's end: taken (and made close-on-exec).
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.into_raw_fd();
        // SAFETY: clears close-on-exec on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        // Made by this process: not the launcher's.
        assert!(joined_socket(fd, std::process::id() as libc::pid_t).is_none());
        let taken = joined_socket(fd, OTHER).expect("a socket pair's end");
        // SAFETY: reads the flags of an open descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        drop(taken);
        // A negative number, a pipe, a file: not taken. (A closed number is
        // not tried here: another test's thread may have reused it.)
        assert!(joined_socket(-1, OTHER).is_none());
        let (r, _w) = pipe();
        assert!(joined_socket(r.as_raw_fd(), OTHER).is_none());
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(joined_socket(f.as_raw_fd(), OTHER).is_none());
        // A connection to a named socket (the service's own kind): not taken.
        let name = format!("dos-test-pair-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let l = UnixListener::bind_addr(&addr).unwrap();
        let c = UnixStream::connect_addr(&addr).unwrap();
        let _accepted = l.accept().unwrap();
        assert!(joined_socket(c.as_raw_fd(), OTHER).is_none());
        // A datagram pair: not taken.
        let (d, _e) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(joined_socket(d.as_raw_fd(), OTHER).is_none());
    }

    /// With the launcher's socket pair the rank speaks the wire-up protocol
    /// at once: no connection (the address leads nowhere here), no handshake.
    #[test]
    fn a_rank_with_its_socket_pair_neither_connects_nor_authenticates() {
        use std::os::fd::IntoRawFd;
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            serve_one(&mut theirs, Request::Fence, Reply::FenceDone);
            serve_one(&mut theirs, Request::Finalize, Reply::Ok);
        });
        let mut w = Wiring::parse(vars(GOOD)).unwrap().unwrap();
        w.addr = format!("@dos-test-nobody-listens-pair-{}", std::process::id());
        w.pmi_fd = Some(ours.into_raw_fd());
        let mut c = Client::join_as(w.clone(), OTHER).unwrap();
        c.fence().unwrap();
        c.finalize().unwrap();
        server.join().unwrap();
        drop(c);
        // A descriptor that is not such a socket (a wrapper reused the
        // number): left alone, and the rank connects to the address
        // instead, here to nobody.
        let (r, _w) = pipe();
        w.pmi_fd = Some(std::os::fd::AsRawFd::as_raw_fd(&r));
        assert!(matches!(
            Client::join_as(w, OTHER),
            Err(Error::Wireup { op: "connect", .. })
        ));
        // Still open: the client did not take it.
        // SAFETY: reads the flags of a descriptor this test owns.
        assert!(unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&r), libc::F_GETFD) } >= 0);
    }

    #[test]
    fn the_pair_descriptor_is_parsed() {
        assert_eq!(with(&[]).unwrap().unwrap().pmi_fd, None);
        assert_eq!(
            with(&[("DOS_PMI_FD", Some("7"))]).unwrap().unwrap().pmi_fd,
            Some(7)
        );
        for bad in ["-1", "x", ""] {
            assert!(matches!(
                with(&[("DOS_PMI_FD", Some(bad))]),
                Err(Error::Environment {
                    var: "DOS_PMI_FD",
                    ..
                })
            ));
        }
    }

    /// A service that closes a connection during the handshake (as it does
    /// to make room under a flood) sees the rank again.
    #[test]
    fn joining_is_retried_when_the_service_drops_the_handshake() {
        use std::os::unix::net::UnixListener;
        let name = format!("dos-test-client-retry-{}", std::process::id());
        let a = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let l = UnixListener::bind_addr(&a).unwrap();
        let server = std::thread::spawn(move || {
            let ctx = auth_context(0xab);
            for _ in 0..2 {
                // Takes the hello, then closes.
                let (mut s, _) = l.accept().unwrap();
                let mut h = [0u8; auth::HELLO_LEN];
                s.read_exact(&mut h).unwrap();
            }
            let (mut s, _) = l.accept().unwrap();
            let secret = Secret::from_hex(SECRET_HEX).unwrap();
            auth::handshake(&mut s, &secret, &ctx, Role::Responder, SERVICE_ID).unwrap()
        });
        let mut w = Wiring::parse(vars(GOOD)).unwrap().unwrap();
        w.addr = format!("@{name}");
        let c = Client::connect(w).unwrap();
        assert_eq!(server.join().unwrap(), 2);
        drop(c);
    }
}
