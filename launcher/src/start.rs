//! Starting one node's ranks: the same steps on dosrun's own host and in a
//! node agent on another host (`dosrun --agent`, [`crate::agent::node`]).
//!
//! 1. [`Node::prepare`]: the program, looked up in the exported `PATH`
//!    (else the launcher's own), the CPUs each local rank is bound to
//!    ([`crate::bind::node_bindings`]), and the node's shared segment. It
//!    fails with a status and a line ([`PrepareError`]); only the status of
//!    a program that cannot run differs between the two sides ([`Side`]).
//! 2. [`Prepared::start`]: the ranks' environment (the exports, the job's
//!    `DOS_*` variables, the node's address), then one spawn per rank, from
//!    several threads so that the execs overlap ([`crate::spawn_pool`],
//!    `DOS_SPAWN_THREADS`), stopping at the first rank that cannot start.
//!    The outcomes are told in local-rank order, each with its
//!    `--report-bindings` line; where each goes is the caller's
//!    ([`Outcome`]): dosrun's supervisor for its own ranks, control frames
//!    to dosrun for an agent's.
//!
//! The segment is dropped once the ranks have started: they hold it.

use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use dos::pmi::{self, Secret};
use dos_transport::shm::Segment;

use crate::bind::{self, BindTo, Binding};
use crate::plan::Placement;
use crate::pmi_server::Service;
use crate::spawn::{self, Launcher, ResolveError, SpawnError, Spawned};
use crate::spawn_pool;
use crate::supervise::{STATUS_INTERNAL, STATUS_USAGE};
use crate::topology::Topology;

/// Who starts the node's ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// dosrun, on its own host: a program that cannot run here is a usage
    /// error of the whole job, found before anything starts.
    Launcher,
    /// A node agent: a program that cannot run there fails the node's
    /// ranks with the shell's status (127 not found, 126 otherwise).
    Agent,
}

/// One node's share of a job.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// Node id (`DOS_NODE_ID`).
    pub id: usize,
    /// The node's job ranks; `ranks[i]` has local rank `i`.
    pub ranks: &'a [usize],
    /// The node's name in `--report-bindings` lines.
    pub name: &'a str,
    /// This machine's host name, in binding errors.
    pub hostname: &'a str,
    /// `--bind-to` (`None`: the default policy).
    pub bind_to: Option<BindTo>,
    /// `--report-bindings`.
    pub report_bindings: bool,
    /// The program as the user gave it.
    pub program: &'a OsStr,
    /// The ranks' `argv[0]`.
    pub argv0: &'a OsStr,
    /// The variables exported to the ranks (`-x`, `--transports`...).
    pub exports: &'a [(OsString, OsString)],
    /// Bytes of each ring of the node's shared segment.
    pub shm_ring_bytes: usize,
    /// `DOS_TOPOLOGY_CACHE`: where the machine's topology is cached
    /// (`crate::topology::cache::dir`).
    pub topology_cache: &'a str,
    /// `DOS_SPAWN_THREADS`: threads that start the ranks (`None`: auto,
    /// [`crate::spawn_pool::auto_threads`]).
    pub spawn_threads: Option<u32>,
}

/// Why a node's ranks cannot start; nothing has started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareError {
    /// The exit status it stands for.
    pub status: i32,
    /// One line.
    pub why: String,
}

/// A node ready to start its ranks.
#[derive(Debug)]
pub struct Prepared {
    program: PathBuf,
    topo: Option<Topology>,
    bindings: Vec<Binding>,
    seg: Segment,
}

/// The job-wide part of the ranks' environment.
#[derive(Debug, Clone, Copy)]
pub struct JobEnv<'a> {
    /// Ranks of the job.
    pub size: usize,
    /// Nodes of the job.
    pub nodes: usize,
    /// The job id.
    pub jobid: u64,
    /// The abstract name of the node's wire-up socket.
    pub pmi_name: &'a str,
    /// The job's secret.
    pub secret: &'a Secret,
    /// The node's address towards the other nodes, if the job has others.
    pub node_addr: Option<IpAddr>,
}

/// What happens to each rank, told as the ranks start.
pub trait Outcome {
    /// Job rank `rank` started.
    fn started(&mut self, rank: usize, s: Spawned);
    /// A `--report-bindings` line.
    fn report(&mut self, line: String);
    /// Job rank `rank` could not start; `not_started` are the node's ranks
    /// after it, which were not tried.
    fn failed(&mut self, rank: usize, not_started: &[usize], e: &SpawnError);
}

/// The `PATH` the ranks see: the exported one, else the launcher's.
pub fn ranks_path(exports: &[(OsString, OsString)]) -> Option<OsString> {
    exports
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
}

/// The node's wire-up service: its abstract socket name, and the service
/// listening there for the node's ranks.
pub fn serve(node: &Node<'_>, jobid: u64, secret: &Secret) -> Result<(String, Service), String> {
    let name = pmi::socket_name(jobid, node.id);
    match Service::bind(&name, node.ranks.to_vec(), jobid, secret.clone()) {
        Ok(s) => Ok((name, s)),
        Err(e) => Err(format!("cannot listen on the wire-up socket @{name}: {e}")),
    }
}

impl Node<'_> {
    /// Finds the program, binds the ranks and creates the node's segment.
    pub fn prepare(&self, side: Side) -> Result<Prepared, PrepareError> {
        let path = ranks_path(self.exports);
        let program = spawn::resolve_program(self.program, path.as_deref()).map_err(|e| {
            let status = match (side, &e) {
                (Side::Launcher, _) => STATUS_USAGE,
                (Side::Agent, ResolveError::NotFound(_)) => 127,
                (Side::Agent, _) => 126,
            };
            PrepareError {
                status,
                why: e.to_string(),
            }
        })?;
        let local_size = self.ranks.len();
        let (topo, bindings) = bind::node_bindings(
            self.bind_to,
            self.report_bindings,
            local_size,
            self.hostname,
            crate::topology::cache::dir(self.topology_cache).as_deref(),
        )
        .map_err(|(status, why)| PrepareError { status, why })?;
        let seg = Segment::create(local_size, self.shm_ring_bytes).map_err(|e| PrepareError {
            status: STATUS_INTERNAL,
            why: format!("cannot create the shared segment: {e}"),
        })?;
        Ok(Prepared {
            program,
            topo,
            bindings,
            seg,
        })
    }
}

impl Prepared {
    /// Starts the ranks of `node`, telling `out` of them in local-rank
    /// order, stopping at the first that cannot start (the ranks after it
    /// are not started). `stdin`: rank 0, if it is here, reads dosrun's
    /// stdin. `nofile`: the descriptor limits the ranks get back.
    /// Must be called from the main thread (see [`crate::spawn::Spawner::spawn`]).
    pub fn start(
        self,
        node: &Node<'_>,
        job: JobEnv<'_>,
        args: &[OsString],
        stdin: bool,
        nofile: Option<libc::rlimit>,
        out: &mut impl Outcome,
    ) {
        let shm_fd = self.seg.fd().as_raw_fd();
        let mut env: Vec<(OsString, OsString)> = node.exports.to_vec();
        env.extend(Launcher::job_env(
            job.size,
            job.nodes,
            job.jobid,
            job.pmi_name,
            job.secret,
            Some(shm_fd),
        ));
        if let Some(ip) = job.node_addr {
            env.push((pmi::ENV_NODE_ADDR.into(), ip.to_string().into()));
        }
        let launcher = Launcher {
            program: self.program,
            argv0: node.argv0.to_os_string(),
            args: args.to_vec(),
            env,
            shm_fd: Some(shm_fd),
            nofile,
            pmi_pair: true,
        };
        let local_size = node.ranks.len();
        let spawner = match launcher.spawner() {
            Ok(s) => s,
            Err(e) => {
                if let Some((&first, rest)) = node.ranks.split_first() {
                    out.failed(first, rest, &e);
                }
                return;
            }
        };
        let reqs = node
            .ranks
            .iter()
            .enumerate()
            .map(|(i, &rank)| spawn_pool::Request {
                placement: Placement {
                    rank,
                    node_id: node.id,
                    local_rank: i,
                },
                stdin: stdin && rank == 0,
                affinity: self.bindings.get(i).and_then(Binding::mask),
            })
            .collect();
        let threads = match node.spawn_threads {
            Some(t) => t as usize,
            None => spawn_pool::auto_threads(local_size),
        };
        let done = spawn_pool::spawn_all(spawner, local_size, reqs, threads);
        for (i, s) in done.started.into_iter().enumerate() {
            let (rank, pid) = (node.ranks[i], s.pid);
            out.started(rank, s);
            if node.report_bindings {
                let unbound = Binding::unbound();
                let b = self.bindings.get(i).unwrap_or(&unbound);
                let topo = self.topo.clone().unwrap_or_default();
                out.report(b.report(&topo, node.name, pid, rank));
            }
        }
        if let Some((i, e)) = done.failed {
            out.failed(node.ranks[i], &node.ranks[i + 1..], &e);
        }
        // The ranks hold the segment now.
        drop(self.seg);
    }
}
