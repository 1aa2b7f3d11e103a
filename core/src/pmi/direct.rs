//! Direct launch: a dos program started by another launcher's PMI server
//! (`srun --mpi=pmi2`, MPICH's `mpiexec.hydra`) instead of `dosrun`.
//!
//! Both servers are reached on the descriptor `PMI_FD` they pass, with
//! `PMI_RANK` and `PMI_SIZE`. The rank speaks:
//!
//! * **PMI-2** ([`super::pmi2`]) to Slurm's `mpi/pmi2` plug-in: the PMI-1
//!   style line `cmd=init pmi_version=2 pmi_subversion=0`, answered by
//!   `cmd=response_to_init ... pmi_version=2 ... rc=0`; then framed
//!   messages: `fullinit` (`pmijobid` from `PMI_JOBID`, `pmirank`,
//!   `threaded=FALSE`: Slurm refuses a `fullinit` without any of them) whose
//!   `rank` and `size` must be `PMI_RANK` and `PMI_SIZE`, `job-getid`,
//!   `info-getjobattr key=PMI_process_mapping`, `kvs-put`, `kvs-fence`,
//!   `kvs-get` (`jobid`, `srcid=-1`, `key`), `finalize`, and `abort`
//!   (`isworld=TRUE`, `msg`; PMI-2 carries no exit code: Slurm kills the
//!   step). Every answer must be the matching `*-response` with `rc=0`.
//! * **PMI-1** ("simple", [`super::simple`]) to MPICH's `mpiexec.hydra`:
//!   `init`, `get_my_kvsname`, `get` of `PMI_process_mapping`, `put`,
//!   `barrier_in`, `get`, `finalize`, `abort`.
//!
//! Which one is the tunable `DOS_PMI` ([`Version`]): `auto` (the default)
//! speaks PMI-2 when `SLURM_JOB_ID` or `SLURM_STEP_ID` is set (Slurm sets
//! them with `PMI_FD`; hydra sets `PMI_FD` without them), else PMI-1; `1` or
//! `2` forces one (hydra serves PMI-2 as well, Slurm's plug-in PMI-1 as
//! well). It is decided from the environment rather than by trying PMI-2
//! first because Slurm's plug-in fixes the protocol of the whole step at the
//! first `init` it gets: all ranks must ask for the same. A server that
//! answers a PMI-2 `init` with `pmi_version=1` and `rc=0` is spoken to in
//! PMI-1 on the same connection; one that refuses (`rc` not 0) is an error
//! (`DOS_PMI=1` then asks for PMI-1). With `DOS_LOG=dos::pmi::direct=debug`
//! each rank says which it spoke ("direct launch over PMI-2 ...").
//!
//! The rank learns:
//!
//! * its rank and the job's size from `PMI_RANK`, `PMI_SIZE`;
//! * the node of every rank from `PMI_process_mapping` (a job attribute in
//!   PMI-2, a key of the key-value space in PMI-1; MPICH's
//!   `(vector,(node,count,ranks),...)`, [`parse_process_mapping`]): its node
//!   id, the number of nodes, its local rank and the node's rank count;
//! * the job's id: a hash of the key-value space's name (PMI-1) or of the
//!   id `job-getid` gives (PMI-2);
//! * this node's address (multi-node jobs): `DOS_NODE_ADDR` if set, else
//!   the first IPv4 address of an interface that is up and not loopback.
//!
//! What dosrun does for its ranks, the ranks do themselves, through the
//! key-value space, before one barrier:
//!
//! * rank 0 makes the job's secret and puts it (`dos.secret`): the key-value
//!   space is the job's own, so only its ranks read it;
//! * the node's local rank 0 creates the node's shared segment (a memfd,
//!   as dosrun's agent does) and puts `dos.shm.<node>` = `<pid>:<fd>`; after
//!   the barrier the node's other ranks open it through
//!   `/proc/<pid>/fd/<fd>` (the kernel allows that to a process that may
//!   trace the creator: same user, as CMA needs anyway). There is no file to
//!   clean up: the memory goes with its last descriptor or mapping, also when
//!   ranks crash.
//!
//! `put`, `fence` and `get` then map to PMI-1's `put`, `barrier_in` and
//! `get` or PMI-2's `kvs-put`, `kvs-fence` and `kvs-get`; values are sent
//! as hex (PMI-1 values cannot hold spaces or newlines). `abort` and
//! `finalize` are the protocol's own.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use dos_transport::auth::Secret;
use dos_transport::shm::Segment;

use super::pmi2::{self, Message};
use super::simple::{split_line, Command, Response};
use crate::{Error, Result};

/// The largest job this accepts from `PMI_SIZE`.
const MAX_SIZE: usize = 1 << 20;

/// A connection to the launcher's PMI server, PMI-1 or PMI-2.
#[derive(Debug)]
pub(super) struct Direct {
    stream: UnixStream,
    proto: Proto,
    rbuf: Vec<u8>,
}

/// The protocol spoken after the handshake, with what it names the job by.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Proto {
    /// PMI-1 ("simple"), the key-value space's name.
    Simple { kvsname: String },
    /// PMI-2, the job's id (`job-getid`).
    Pmi2 { jobid: String },
}

/// Which PMI version a directly launched rank speaks (`DOS_PMI`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// PMI-2 under Slurm (`SLURM_JOB_ID` or `SLURM_STEP_ID` set), else PMI-1.
    Auto,
    /// PMI-1 ("simple").
    V1,
    /// PMI-2.
    V2,
}

impl Version {
    /// The version to speak given the environment `lookup`.
    fn resolve(self, lookup: &impl Fn(&str) -> Option<String>) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
            Version::Auto => {
                if lookup("SLURM_JOB_ID").is_some() || lookup("SLURM_STEP_ID").is_some() {
                    2
                } else {
                    1
                }
            }
        }
    }
}

/// What a directly launched rank learnt while joining.
#[derive(Debug)]
pub(super) struct Joined {
    pub conn: Direct,
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    pub local_size: usize,
    pub node_id: usize,
    pub nnodes: usize,
    pub node_addr: Option<IpAddr>,
    pub jobid: u64,
    pub secret: Secret,
    pub shm_fd: RawFd,
}

fn env(var: &'static str, reason: &'static str) -> Error {
    Error::Environment { var, reason }
}

fn protocol(reason: &'static str) -> Error {
    Error::WireupProtocol { reason }
}

/// Joins the job of the PMI server behind `PMI_FD`: see the module doc.
/// `ring_bytes`: the shared segment's ring size (`DOS_SHM_RING_BYTES`).
/// `version`: which PMI to speak (`DOS_PMI`).
pub(super) fn join(
    lookup: impl Fn(&str) -> Option<String>,
    timeout: Option<Duration>,
    ring_bytes: usize,
    version: Version,
) -> Result<Joined> {
    let num = |var: &'static str| -> Result<usize> {
        lookup(var)
            .ok_or(env(var, "not set"))?
            .trim()
            .parse()
            .map_err(|_| env(var, "not a non-negative integer"))
    };
    let fd: RawFd = lookup("PMI_FD")
        .ok_or(env("PMI_FD", "not set"))?
        .trim()
        .parse()
        .map_err(|_| env("PMI_FD", "not a descriptor number"))?;
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`, open or not.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(env("PMI_FD", "not an open descriptor"));
    }
    let (rank, size) = (num("PMI_RANK")?, num("PMI_SIZE")?);
    if size == 0 || size > MAX_SIZE || rank >= size {
        return Err(env("PMI_RANK", "rank out of range of PMI_SIZE"));
    }
    // SAFETY: the launcher passed this descriptor (a connected socket) to
    // this process for its PMI client; nothing else uses it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // Not inherited by programs this rank starts.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let io = |source| Error::Wireup {
        op: "connect",
        source,
    };
    stream.set_read_timeout(timeout).map_err(io)?;
    let mut conn = Direct {
        stream,
        proto: Proto::Simple {
            kvsname: String::new(),
        },
        rbuf: Vec::with_capacity(256),
    };
    let want = version.resolve(&lookup);
    conn.handshake(want, rank, size, &lookup)?;
    let mapping = conn
        .job_attr("PMI_process_mapping")?
        .ok_or(protocol("the PMI server has no PMI_process_mapping"))?;
    let node_of = parse_process_mapping(&mapping, size)
        .ok_or(protocol("PMI_process_mapping is malformed"))?;
    let node_id = node_of[rank];
    let nnodes = node_of.iter().max().map_or(1, |m| m + 1);
    let local_rank = node_of[..rank].iter().filter(|&&n| n == node_id).count();
    let local_size = node_of.iter().filter(|&&n| n == node_id).count();
    let node_addr = if nnodes > 1 {
        Some(match lookup(super::ENV_NODE_ADDR) {
            Some(a) => a
                .trim()
                .parse()
                .map_err(|_| env(super::ENV_NODE_ADDR, "not an IP address"))?,
            None => first_address().ok_or(env(
                super::ENV_NODE_ADDR,
                "not set, and this node has no IPv4 address that is up and not loopback",
            ))?,
        })
    } else {
        None
    };
    // The secret (rank 0) and the node's segment (local rank 0), then one
    // barrier, then the others read them.
    let mut own_shm = None;
    if rank == 0 {
        let s = Secret::generate()?;
        conn.put_text("dos.secret", &s.to_hex())?;
    }
    if local_rank == 0 {
        let seg = Segment::create(local_size, ring_bytes)?;
        // SAFETY: dup of a descriptor the segment owns; the copy is ours.
        let fd = unsafe { libc::fcntl(seg.fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(Error::Wireup {
                op: "share the node's segment",
                source: io::Error::last_os_error(),
            });
        }
        own_shm = Some(fd);
        conn.put_text(
            &format!("dos.shm.{node_id}"),
            &format!("{}:{fd}", std::process::id()),
        )?;
    }
    conn.barrier()?;
    let secret = conn
        .get_text("dos.secret")?
        .ok_or(protocol("rank 0 published no job secret"))?;
    let secret = Secret::from_hex(&secret)?;
    let shm_fd = match own_shm {
        Some(fd) => fd,
        None => {
            let v = conn
                .get_text(&format!("dos.shm.{node_id}"))?
                .ok_or(protocol("the node's local rank 0 published no segment"))?;
            let (pid, fd) = v
                .split_once(':')
                .and_then(|(p, f)| Some((p.parse::<u32>().ok()?, f.parse::<RawFd>().ok()?)))
                .ok_or(protocol("the node's segment is not <pid>:<fd>"))?;
            dos_transport::shm::mem::open_peer_fd(pid, fd)?.into_raw_fd()
        }
    };
    let jobid = conn.name().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Ok(Joined {
        conn,
        rank,
        size,
        local_rank,
        local_size,
        node_id,
        nnodes,
        node_addr,
        jobid,
        secret,
        shm_fd,
    })
}

impl Direct {
    /// A second handle on the server's socket.
    pub(super) fn socket_copy(&self) -> Result<UnixStream> {
        self.stream.try_clone().map_err(|source| Error::Wireup {
            op: "connect",
            source,
        })
    }

    /// The PMI version this connection speaks after its handshake.
    pub(super) fn version(&self) -> u32 {
        match self.proto {
            Proto::Simple { .. } => 1,
            Proto::Pmi2 { .. } => 2,
        }
    }

    /// `init` asking for PMI-`want`, then PMI-1's `get_my_kvsname` or
    /// PMI-2's `fullinit` and `job-getid`. A server that answers a PMI-2
    /// `init` with PMI-1 (`pmi_version=1`, `rc=0`) is spoken to in PMI-1 on
    /// the same connection.
    fn handshake(
        &mut self,
        want: u32,
        rank: usize,
        size: usize,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<()> {
        let (version, subversion) = if want == 2 { (2, 0) } else { (1, 1) };
        self.send(
            "init",
            &Command::Init {
                version,
                subversion,
            },
        )?;
        let (rc, got) = self.recv("init", |r| match r {
            Response::Init { rc, version, .. } => Ok((rc, version)),
            _ => Err(protocol("PMI server: unexpected answer to init")),
        })?;
        if rc != 0 {
            return Err(protocol(if want == 2 {
                "the PMI server refused PMI-2 (init rc != 0; DOS_PMI=1 asks for PMI-1)"
            } else {
                "the PMI server refused PMI-1 (init rc != 0)"
            }));
        }
        if want == 2 && got == 2 {
            self.fullinit(rank, size, lookup)?;
            tracing::debug!(
                "direct launch over PMI-2 (rank {rank} of {size}, job {})",
                self.name()
            );
            return Ok(());
        }
        if got != 1 {
            return Err(protocol(
                "the PMI server answered init with another version",
            ));
        }
        self.send("get_my_kvsname", &Command::GetMyKvsname)?;
        let kvsname = self.recv("get_my_kvsname", |r| match r {
            Response::MyKvsname(k) => Ok(k.to_string()),
            _ => Err(protocol("PMI server: unexpected answer to get_my_kvsname")),
        })?;
        self.proto = Proto::Simple { kvsname };
        tracing::debug!(
            "direct launch over PMI-1 (rank {rank} of {size}, job {})",
            self.name()
        );
        Ok(())
    }

    /// PMI-2's `fullinit` (the rank and size must be those of `PMI_RANK`
    /// and `PMI_SIZE`) and `job-getid`.
    fn fullinit(
        &mut self,
        rank: usize,
        size: usize,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<()> {
        // Slurm wants pmijobid, pmirank and threaded (else rc != 0).
        let pmijobid = lookup("PMI_JOBID").unwrap_or_else(|| "-1".into());
        let r = self.call2(
            "fullinit",
            &Message::new(
                "fullinit",
                &[
                    ("pmijobid", &pmijobid),
                    ("pmirank", &rank.to_string()),
                    ("threaded", "FALSE"),
                ],
            ),
            "fullinit-response",
        )?;
        let n = |k: &str| r.get(k).and_then(|v| v.trim().parse::<usize>().ok());
        if n("rank") != Some(rank) || n("size") != Some(size) {
            return Err(protocol(
                "PMI-2 fullinit: the server's rank and size are not PMI_RANK and PMI_SIZE",
            ));
        }
        let r = self.call2(
            "job-getid",
            &Message::new("job-getid", &[]),
            "job-getid-response",
        )?;
        let jobid = r
            .get("jobid")
            .ok_or(protocol("PMI-2 job-getid: no jobid in the answer"))?
            .to_string();
        self.proto = Proto::Pmi2 { jobid };
        Ok(())
    }

    /// The job's name: the key-value space's (PMI-1) or the job id (PMI-2).
    fn name(&self) -> &str {
        match &self.proto {
            Proto::Simple { kvsname } => kvsname,
            Proto::Pmi2 { jobid } => jobid,
        }
    }

    /// A job attribute: PMI-2's `info-getjobattr`, or under PMI-1 the key
    /// of the same name in the key-value space.
    fn job_attr(&mut self, key: &str) -> Result<Option<String>> {
        if let Proto::Simple { .. } = self.proto {
            return self.get_text(key);
        }
        let r = self.call2(
            "info-getjobattr",
            &Message::new("info-getjobattr", &[("key", key)]),
            "info-getjobattr-response",
        )?;
        found(&r)
    }

    /// Sends a PMI-2 message.
    fn send2(&mut self, op: &'static str, m: &Message) -> Result<()> {
        let mut out = Vec::with_capacity(128);
        m.encode(&mut out)
            .map_err(|_| protocol("a PMI-2 message cannot be encoded"))?;
        self.stream
            .write_all(&out)
            .map_err(|source| Error::Wireup { op, source })
    }

    /// Sends `m` and reads the answer, which must be the command `answer`
    /// with `rc=0`.
    fn call2(&mut self, op: &'static str, m: &Message, answer: &str) -> Result<Message> {
        self.send2(op, m)?;
        let r = loop {
            match pmi2::decode(&self.rbuf) {
                Ok(Some((msg, used))) => {
                    self.rbuf.drain(..used);
                    break msg;
                }
                Ok(None) => {}
                Err(_) => return Err(protocol("the PMI server sent a malformed PMI-2 message")),
            }
            self.fill(op)?;
        };
        if r.cmd() != answer {
            return Err(protocol("PMI-2: the server answered with another command"));
        }
        match r.get("rc").map(str::trim) {
            Some("0") => Ok(r),
            Some(_) => Err(protocol("PMI-2: the server refused a request (rc != 0)")),
            None => Err(protocol("PMI-2: an answer without rc")),
        }
    }

    /// Reads more bytes from the server into `rbuf`.
    fn fill(&mut self, op: &'static str) -> Result<()> {
        let mut chunk = [0u8; 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .map_err(|source| Error::Wireup { op, source })?;
        if n == 0 {
            return Err(Error::Wireup {
                op,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the PMI server closed the connection",
                ),
            });
        }
        self.rbuf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn send(&mut self, op: &'static str, c: &Command<'_>) -> Result<()> {
        let mut out = Vec::with_capacity(128);
        c.encode(&mut out)
            .map_err(|_| protocol("a PMI-1 line cannot be encoded"))?;
        self.stream
            .write_all(&out)
            .map_err(|source| Error::Wireup { op, source })
    }

    /// Reads one response line and hands it to `f`.
    fn recv<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(Response<'_>) -> Result<T>,
    ) -> Result<T> {
        loop {
            match split_line(&self.rbuf) {
                Ok(Some((line, used))) => {
                    let r = Response::parse(line)
                        .map_err(|_| protocol("the PMI server sent a malformed line"));
                    let out = r.and_then(f);
                    self.rbuf.drain(..used);
                    return out;
                }
                Ok(None) => {}
                Err(_) => return Err(protocol("the PMI server sent a malformed line")),
            }
            self.fill(op)?;
        }
    }

    fn put_text(&mut self, key: &str, value: &str) -> Result<()> {
        let kvsname = match &self.proto {
            Proto::Simple { kvsname } => kvsname.clone(),
            Proto::Pmi2 { .. } => {
                let m = Message::new("kvs-put", &[("key", key), ("value", value)]);
                return self.call2("put", &m, "kvs-put-response").map(drop);
            }
        };
        self.send(
            "put",
            &Command::Put {
                kvsname: &kvsname,
                key,
                value,
            },
        )?;
        match self.recv("put", |r| match r {
            Response::PutResult { rc, .. } => Ok(rc),
            _ => Err(protocol("PMI server: unexpected answer to put")),
        })? {
            0 => Ok(()),
            _ => Err(protocol("the PMI server refused a put")),
        }
    }

    fn get_text(&mut self, key: &str) -> Result<Option<String>> {
        let kvsname = match &self.proto {
            Proto::Simple { kvsname } => kvsname.clone(),
            Proto::Pmi2 { jobid } => {
                let m = Message::new(
                    "kvs-get",
                    &[("jobid", jobid), ("srcid", "-1"), ("key", key)],
                );
                let r = self.call2("get", &m, "kvs-get-response")?;
                return found(&r);
            }
        };
        self.send(
            "get",
            &Command::Get {
                kvsname: &kvsname,
                key,
            },
        )?;
        self.recv("get", |r| match r {
            Response::GetResult {
                rc: 0,
                value: Some(v),
                ..
            } => Ok(Some(v.to_string())),
            Response::GetResult { .. } => Ok(None),
            _ => Err(protocol("PMI server: unexpected answer to get")),
        })
    }

    pub(super) fn barrier(&mut self) -> Result<()> {
        if let Proto::Pmi2 { .. } = self.proto {
            let m = Message::new("kvs-fence", &[]);
            return self.call2("fence", &m, "kvs-fence-response").map(drop);
        }
        self.send("fence", &Command::BarrierIn)?;
        self.recv("fence", |r| match r {
            Response::BarrierOut => Ok(()),
            _ => Err(protocol("PMI server: unexpected answer to barrier_in")),
        })
    }

    /// `put` of a binary value, as hex.
    pub(super) fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        self.put_text(key, &hex)
    }

    /// `get` of a value put with [`Direct::put`].
    pub(super) fn get(&mut self, key: &str) -> Result<Vec<u8>> {
        let v = self.get_text(key)?.ok_or_else(|| Error::KeyNotFound {
            key: key.to_string(),
        })?;
        let b = v.as_bytes();
        if b.len() % 2 != 0 {
            return Err(protocol("a value in the key-value space is not hex"));
        }
        b.chunks(2)
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .ok_or(protocol("a value in the key-value space is not hex"))
            })
            .collect()
    }

    /// PMI-1's `abort` with `code`, or PMI-2's `abort` of the whole job
    /// (`isworld`, `msg`: PMI-2 carries no exit code; Slurm kills the step).
    pub(super) fn abort(&mut self, code: i32, msg: &str) -> Result<()> {
        if let Proto::Pmi2 { .. } = self.proto {
            let msg = format!("exit code {code}: {msg}");
            return self.send2(
                "abort",
                &Message::new("abort", &[("isworld", "TRUE"), ("msg", &msg)]),
            );
        }
        self.send("abort", &Command::Abort { code, msg: None })
    }

    pub(super) fn finalize(&mut self) -> Result<()> {
        if let Proto::Pmi2 { .. } = self.proto {
            let m = Message::new("finalize", &[]);
            return self.call2("finalize", &m, "finalize-response").map(drop);
        }
        self.send("finalize", &Command::Finalize)?;
        self.recv("finalize", |r| match r {
            Response::FinalizeAck => Ok(()),
            _ => Err(protocol("PMI server: unexpected answer to finalize")),
        })
    }
}

/// The value of a PMI-2 answer with `found` and `value`.
fn found(r: &Message) -> Result<Option<String>> {
    match r.get("found") {
        Some("TRUE" | "true") => Ok(Some(
            r.get("value")
                .ok_or(protocol("PMI-2: found=TRUE without a value"))?
                .to_string(),
        )),
        Some("FALSE" | "false") => Ok(None),
        _ => Err(protocol("PMI-2: an answer without found=TRUE or FALSE")),
    }
}

/// The node of each of the `size` ranks from a `PMI_process_mapping` value
/// (`(vector,(node,count,ranks),...)`; the pattern repeats when it covers
/// fewer ranks, as MPICH reads it). `None` when malformed, when a node id is
/// out of range or when the pattern covers no rank.
pub fn parse_process_mapping(s: &str, size: usize) -> Option<Vec<usize>> {
    let body = s.trim().strip_prefix("(vector")?.strip_suffix(')')?;
    let mut pattern: Vec<usize> = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let t = rest.strip_prefix(",(")?;
        let end = t.find(')')?;
        let mut it = t[..end].split(',').map(|v| v.trim().parse::<usize>().ok());
        let (node, count, ranks) = (it.next()??, it.next()??, it.next()??);
        if it.next().is_some() || node.checked_add(count)? > MAX_SIZE {
            return None;
        }
        for n in node..node + count {
            for _ in 0..ranks {
                if pattern.len() >= size {
                    break;
                }
                pattern.push(n);
            }
        }
        rest = &t[end + 1..];
    }
    if pattern.is_empty() {
        return None;
    }
    let out: Vec<usize> = pattern.iter().copied().cycle().take(size).collect();
    Some(out)
}

/// The first IPv4 address of an interface that is up and not loopback.
fn first_address() -> Option<IpAddr> {
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifs` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut p = ifs;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        let lo = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        if up && !lo && !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null address of the list.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(fam) == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found = Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
                break;
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(ifs) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};

    /// A PMI-1 server for one rank of a job of `size` on one end of a
    /// socket pair, answering as Slurm's plug-in does (no `msg`), or with
    /// `garbage` after init. Returns the rank's end.
    fn fake_server(size: usize, garbage: bool) -> (RawFd, std::thread::JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut kvs: HashMap<String, String> = HashMap::new();
            kvs.insert(
                "PMI_process_mapping".into(),
                format!("(vector,(0,1,{size}))"),
            );
            let mut w = b.try_clone().unwrap();
            for line in BufReader::new(b).lines() {
                let Ok(line) = line else { return };
                let mut out = Vec::new();
                let r = match Command::parse(&line).unwrap() {
                    Command::Init { .. } => {
                        "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0".to_string()
                    }
                    _ if garbage => "cmd=what\n".to_string(),
                    Command::GetMyKvsname => "cmd=my_kvsname kvsname=kvs_42_0 rc=0".into(),
                    Command::Put { key, value, .. } => {
                        kvs.insert(key.into(), value.into());
                        "cmd=put_result rc=0".into()
                    }
                    Command::Get { key, .. } => match kvs.get(key) {
                        Some(v) => format!("cmd=get_result rc=0 value={v}"),
                        None => "cmd=get_result rc=-1".into(),
                    },
                    Command::BarrierIn => "cmd=barrier_out".into(),
                    Command::Finalize => "cmd=finalize_ack".into(),
                    _ => return,
                };
                out.extend_from_slice(r.as_bytes());
                out.push(b'\n');
                if w.write_all(&out).is_err() {
                    return;
                }
            }
        });
        (a.into_raw_fd(), t)
    }

    fn vars(v: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |n| v.iter().find(|(k, _)| *k == n).map(|(_, x)| x.clone())
    }

    /// Joins through `vars` speaking `version`, with the tests' timeout
    /// and ring size.
    fn join_as(vars: impl Fn(&str) -> Option<String>, version: Version) -> Result<Joined> {
        join(vars, Some(Duration::from_secs(10)), 16384, version)
    }

    #[test]
    fn joins_a_pmi1_server_alone_on_its_node() {
        let (fd, t) = fake_server(1, false);
        let j = join(
            vars(vec![
                ("PMI_FD", fd.to_string()),
                ("PMI_RANK", "0".into()),
                ("PMI_SIZE", "1".into()),
            ]),
            Some(Duration::from_secs(10)),
            16384,
            Version::Auto,
        )
        .unwrap();
        assert_eq!((j.rank, j.size, j.local_rank, j.local_size), (0, 1, 0, 1));
        assert_eq!((j.node_id, j.nnodes, j.node_addr), (0, 1, None));
        // The segment local rank 0 made is attachable.
        // SAFETY: join handed this descriptor to us; nothing else owns it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(j.shm_fd) };
        let seg = Segment::attach(fd).unwrap();
        assert_eq!(seg.layout().nranks, 1);
        let mut c = j.conn;
        c.put("tcp.0", &[0, 1, 0xfe, 0xff]).unwrap();
        c.barrier().unwrap();
        assert_eq!(c.get("tcp.0").unwrap(), [0, 1, 0xfe, 0xff]);
        assert!(matches!(c.get("nope"), Err(Error::KeyNotFound { .. })));
        c.finalize().unwrap();
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn bad_servers_and_variables_are_typed_errors() {
        // A server that answers nonsense: a protocol error, not a hang.
        let (fd, t) = fake_server(1, true);
        let e = join(
            vars(vec![
                ("PMI_FD", fd.to_string()),
                ("PMI_RANK", "0".into()),
                ("PMI_SIZE", "1".into()),
            ]),
            Some(Duration::from_secs(10)),
            16384,
            Version::Auto,
        )
        .unwrap_err();
        assert!(matches!(e, Error::WireupProtocol { .. }), "{e}");
        t.join().unwrap();
        // A server that is gone: an I/O error.
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = join(
            vars(vec![
                ("PMI_FD", a.into_raw_fd().to_string()),
                ("PMI_RANK", "0".into()),
                ("PMI_SIZE", "2".into()),
            ]),
            Some(Duration::from_secs(10)),
            16384,
            Version::Auto,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Wireup { .. }), "{e}");
        let var = |v| match join(vars(v), None, 16384, Version::Auto) {
            Err(Error::Environment { var, .. }) => var,
            other => panic!("{other:?}"),
        };
        assert_eq!(var(vec![("PMI_RANK", "0".into())]), "PMI_FD");
        assert_eq!(var(vec![("PMI_FD", "x".into())]), "PMI_FD");
        assert_eq!(var(vec![("PMI_FD", "987654".into())]), "PMI_FD");
        assert_eq!(
            var(vec![
                ("PMI_FD", "0".into()),
                ("PMI_RANK", "3".into()),
                ("PMI_SIZE", "3".into())
            ]),
            "PMI_RANK"
        );
    }

    /// How a scripted PMI-2 server misbehaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        None,
        /// Answers a PMI-2 `init` with PMI-1 (as an old server would).
        Downgrade,
        /// Refuses `init` (`rc=-1`).
        RefuseInit,
        /// Answers `fullinit` with `rc=14`.
        RefuseFullinit,
        /// Sends a malformed frame after `fullinit`.
        Garbage,
        /// Says nothing after `init` (the read timeout must end the wait).
        Silent,
    }

    /// A PMI-2 server for rank `rank` of `size` ranks (two a node), on one
    /// end of a socket pair, answering as Slurm's mpi/pmi2 plug-in does
    /// (field order and all). Records the commands it got.
    fn fake_pmi2_server(
        rank: usize,
        size: usize,
        fault: Fault,
    ) -> (RawFd, std::thread::JoinHandle<Vec<String>>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut kvs: HashMap<String, String> = HashMap::new();
            let mut pending: HashMap<String, String> = HashMap::new();
            // The PMI-1 style init line.
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while b.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            let line = String::from_utf8(line).unwrap();
            seen.push(line.clone());
            let answer = match fault {
                Fault::RefuseInit => "cmd=response_to_init rc=-1 pmi_version=2 pmi_subversion=0\n",
                Fault::Downgrade => "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n",
                _ => "cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0\n",
            };
            if b.write_all(answer.as_bytes()).is_err() || fault == Fault::RefuseInit {
                return seen;
            }
            if fault == Fault::Downgrade {
                // PMI-1 from here on.
                let mut w = b.try_clone().unwrap();
                for l in BufReader::new(b).lines() {
                    let Ok(l) = l else { break };
                    seen.push(l.clone());
                    let r = match Command::parse(&l).unwrap() {
                        Command::GetMyKvsname => "cmd=my_kvsname kvsname=kvs_7_0 rc=0".into(),
                        Command::Get {
                            key: "PMI_process_mapping",
                            ..
                        } => "cmd=get_result rc=0 value=(vector,(0,1,1))".into(),
                        Command::Get { key, .. } => match kvs.get(key) {
                            Some(v) => format!("cmd=get_result rc=0 value={v}"),
                            None => "cmd=get_result rc=-1".into(),
                        },
                        Command::Put { key, value, .. } => {
                            kvs.insert(key.into(), value.into());
                            "cmd=put_result rc=0".to_string()
                        }
                        Command::BarrierIn => "cmd=barrier_out".into(),
                        _ => break,
                    };
                    if w.write_all(format!("{r}\n").as_bytes()).is_err() {
                        break;
                    }
                }
                return seen;
            }
            if fault == Fault::Silent {
                let mut sink = Vec::new();
                let _ = b.read_to_end(&mut sink);
                return seen;
            }
            let mut buf = Vec::new();
            loop {
                let m = loop {
                    match pmi2::decode(&buf).unwrap() {
                        Some((m, used)) => {
                            buf.drain(..used);
                            break Some(m);
                        }
                        None => {
                            let mut chunk = [0u8; 512];
                            match b.read(&mut chunk) {
                                Ok(0) | Err(_) => break None,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                    }
                };
                let Some(m) = m else { return seen };
                seen.push(format!("{:?}", m.pairs));
                let mk = |p: &[(&str, &str)]| {
                    let mut m = Message::new(p[0].1, &[]);
                    m.pairs
                        .extend(p[1..].iter().map(|(k, v)| (k.to_string(), v.to_string())));
                    m
                };
                let (rank_s, size_s) = (rank.to_string(), size.to_string());
                let r = match m.cmd() {
                    "fullinit" if fault == Fault::RefuseFullinit => {
                        mk(&[("cmd", "fullinit-response"), ("rc", "14")])
                    }
                    "fullinit" => mk(&[
                        ("cmd", "fullinit-response"),
                        ("rc", "0"),
                        ("pmi-version", "2"),
                        ("pmi-subversion", "0"),
                        ("rank", &rank_s),
                        ("size", &size_s),
                        ("appnum", "-1"),
                        ("debugged", "FALSE"),
                        ("pmiverbose", "FALSE"),
                    ]),
                    _ if fault == Fault::Garbage => {
                        let _ = b.write_all(b"9x    cmd=what;");
                        continue;
                    }
                    "job-getid" => mk(&[
                        ("cmd", "job-getid-response"),
                        ("rc", "0"),
                        ("jobid", "77.0"),
                    ]),
                    "info-getjobattr" => {
                        let v = format!("(vector,(0,{},2))", size.div_ceil(2));
                        mk(&[
                            ("cmd", "info-getjobattr-response"),
                            ("rc", "0"),
                            ("found", "TRUE"),
                            ("value", &v),
                        ])
                    }
                    "kvs-put" => {
                        pending
                            .insert(m.get("key").unwrap().into(), m.get("value").unwrap().into());
                        mk(&[("cmd", "kvs-put-response"), ("rc", "0")])
                    }
                    "kvs-fence" => {
                        kvs.extend(pending.drain());
                        // What the other ranks put.
                        kvs.insert("dos.secret".into(), "ab".repeat(32));
                        kvs.insert("dos.shm.0".into(), "1:1".into());
                        mk(&[("cmd", "kvs-fence-response"), ("rc", "0")])
                    }
                    "kvs-get" => {
                        assert_eq!(m.get("jobid"), Some("77.0"));
                        assert_eq!(m.get("srcid"), Some("-1"));
                        match kvs.get(m.get("key").unwrap()) {
                            Some(v) => mk(&[
                                ("cmd", "kvs-get-response"),
                                ("rc", "0"),
                                ("found", "TRUE"),
                                ("value", v),
                            ]),
                            None => {
                                mk(&[("cmd", "kvs-get-response"), ("rc", "0"), ("found", "FALSE")])
                            }
                        }
                    }
                    "finalize" => mk(&[("cmd", "finalize-response"), ("rc", "0")]),
                    _ => return seen,
                };
                let mut out = Vec::new();
                r.encode(&mut out).unwrap();
                if b.write_all(&out).is_err() {
                    return seen;
                }
            }
        });
        (a.into_raw_fd(), t)
    }

    fn pmi_vars(fd: RawFd, rank: usize, size: usize, slurm: bool) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("PMI_FD", fd.to_string()),
            ("PMI_RANK", rank.to_string()),
            ("PMI_SIZE", size.to_string()),
            ("PMI_JOBID", "77.0".to_string()),
        ];
        if slurm {
            v.push(("SLURM_JOB_ID", "77".into()));
        }
        v
    }

    #[test]
    fn joins_a_pmi2_server_under_slurm() {
        // Rank 0 of 4, two a node: rank 0 makes the node's segment.
        let (fd, t) = fake_pmi2_server(0, 4, Fault::None);
        let j = join_as(vars(pmi_vars(fd, 0, 4, true)), Version::Auto).unwrap();
        assert_eq!(j.conn.version(), 2);
        assert_eq!((j.rank, j.size, j.local_rank, j.local_size), (0, 4, 0, 2));
        assert_eq!((j.node_id, j.nnodes), (0, 2));
        assert!(j.node_addr.is_some());
        // SAFETY: join handed this descriptor to us; nothing else owns it.
        drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(j.shm_fd) });
        let mut c = j.conn;
        c.put("tcp.0", &[0, 1, 0xfe, 0xff]).unwrap();
        // Not visible before the fence (Slurm's kvs-put is staged).
        assert!(matches!(c.get("tcp.0"), Err(Error::KeyNotFound { .. })));
        c.barrier().unwrap();
        assert_eq!(c.get("tcp.0").unwrap(), [0, 1, 0xfe, 0xff]);
        c.finalize().unwrap();
        drop(c);
        let seen = t.join().unwrap();
        assert_eq!(seen[0], "cmd=init pmi_version=2 pmi_subversion=0");
        let fullinit = &seen[1];
        for f in [
            "\"fullinit\"",
            "(\"pmijobid\", \"77.0\")",
            "(\"pmirank\", \"0\")",
            "(\"threaded\", \"FALSE\")",
        ] {
            assert!(fullinit.contains(f), "{fullinit}");
        }
        assert!(seen[2].contains("job-getid"), "{seen:?}");
        assert!(
            seen[3].contains("info-getjobattr") && seen[3].contains("PMI_process_mapping"),
            "{seen:?}"
        );
        assert!(seen.iter().any(|s| s.contains("kvs-fence")), "{seen:?}");
        assert!(seen.last().unwrap().contains("finalize"), "{seen:?}");
    }

    #[test]
    fn the_pmi_version_follows_dos_pmi_and_the_environment() {
        // Without Slurm's variables auto speaks PMI-1 (hydra) ...
        let (fd, t) = fake_server(1, false);
        let j = join_as(vars(pmi_vars(fd, 0, 1, false)), Version::Auto).unwrap();
        assert_eq!(j.conn.version(), 1);
        drop(j);
        t.join().unwrap();
        // ... and DOS_PMI=2 forces PMI-2 there.
        let (fd, t) = fake_pmi2_server(1, 2, Fault::None);
        let j = join_as(vars(pmi_vars(fd, 1, 2, false)), Version::V2);
        // Rank 1 of a node needs rank 0's segment: this server's is fake,
        // so that fails; the protocol was PMI-2 up to there.
        drop(j);
        let seen = t.join().unwrap();
        assert_eq!(seen[0], "cmd=init pmi_version=2 pmi_subversion=0");
        // DOS_PMI=1 under Slurm speaks PMI-1.
        let (fd, t) = fake_server(1, false);
        let j = join_as(vars(pmi_vars(fd, 0, 1, true)), Version::V1).unwrap();
        assert_eq!(j.conn.version(), 1);
        drop(j);
        t.join().unwrap();
        // A server that answers PMI-2's init with PMI-1: PMI-1 on the same
        // connection.
        let (fd, t) = fake_pmi2_server(0, 1, Fault::Downgrade);
        let j = join_as(vars(pmi_vars(fd, 0, 1, true)), Version::Auto).unwrap();
        assert_eq!(j.conn.version(), 1);
        drop(j);
        let seen = t.join().unwrap();
        assert!(seen[1].starts_with("cmd=get_my_kvsname"), "{seen:?}");
    }

    #[test]
    fn bad_pmi2_servers_are_typed_errors() {
        for fault in [
            Fault::RefuseInit,
            Fault::RefuseFullinit,
            Fault::Garbage,
            Fault::Silent,
        ] {
            let (fd, t) = fake_pmi2_server(0, 1, fault);
            let e = join(
                vars(pmi_vars(fd, 0, 1, true)),
                Some(Duration::from_millis(300)),
                16384,
                Version::Auto,
            )
            .unwrap_err();
            match fault {
                Fault::Silent => assert!(matches!(e, Error::Wireup { .. }), "{e}"),
                _ => assert!(matches!(e, Error::WireupProtocol { .. }), "{e}"),
            }
            t.join().unwrap();
        }
        // A fullinit whose rank is not PMI_RANK.
        let (fd, t) = fake_pmi2_server(1, 2, Fault::None);
        let e = join_as(vars(pmi_vars(fd, 0, 2, true)), Version::Auto).unwrap_err();
        assert!(matches!(e, Error::WireupProtocol { .. }), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn process_mappings_expand() {
        assert_eq!(
            parse_process_mapping("(vector,(0,3,2))", 6),
            Some(vec![0, 0, 1, 1, 2, 2])
        );
        assert_eq!(
            parse_process_mapping("(vector,(0,1,3),(1,1,1))", 4),
            Some(vec![0, 0, 0, 1])
        );
        // Cyclic: the pattern repeats.
        assert_eq!(
            parse_process_mapping("(vector,(0,2,1))", 4),
            Some(vec![0, 1, 0, 1])
        );
        assert_eq!(
            parse_process_mapping("(vector,(0,1,4))", 4),
            Some(vec![0; 4])
        );
        // Round trip with the writer.
        let node_of = [0, 0, 1, 2, 2, 2, 3];
        let s = super::super::simple::process_mapping(&node_of);
        assert_eq!(parse_process_mapping(&s, 7), Some(node_of.to_vec()));
        for bad in [
            "",
            "(vector)",
            "(vector,(0,1))",
            "(vector,(0,1,2,3))",
            "(vector,(a,1,2))",
            "(vector,(0,0,2))",
            "(vector,(0,1,2)",
            "vector,(0,1,2)",
            "(vector,(18446744073709551615,2,1))",
        ] {
            assert_eq!(parse_process_mapping(bad, 4), None, "{bad}");
        }
    }
}
