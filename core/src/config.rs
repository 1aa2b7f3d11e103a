//! Tunables: the one place that reads `DOS_*` configuration variables.
//!
//! Each tunable is declared once, in the `tunables!` table below: its field,
//! type, variable, default, parser and help line. From that table come
//! [`TUNABLES`] (what `dosrun --info` prints), the typed [`Config`] and
//! [`Config::parse`]; [`Config::from_env`] parses them all once. A new
//! tunable is one more entry (and, when no parser fits, one small function
//! `fn(var, text) -> Result<T>` that fails with [`Error::Environment`]).
//! (The launcher's per-rank variables such as `DOS_RANK` are wiring, not
//! tunables; [`crate::pmi`] reads them.)

use crate::{Error, Result};

/// One tunable: an environment variable with a default and a meaning.
#[derive(Debug, Clone, Copy)]
pub struct Tunable {
    /// Variable name.
    pub name: &'static str,
    /// Default value, as text.
    pub default: &'static str,
    /// What it controls.
    pub help: &'static str,
}

/// Which rendezvous protocol large messages use (`DOS_RNDV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RndvMode {
    /// Pipelined unless the node is oversubscribed or crowded (the engine's one crowding signal).
    Auto,
    /// Chunks through the rings; sender and receiver copy concurrently.
    Pipeline,
    /// The receiver copies from the sender's memory with one system call.
    Cma,
}

/// Which transports ranks may use (`DOS_TRANSPORTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// Shared memory between ranks of one node.
    pub shm: bool,
    /// TCP (between nodes, or between all ranks when `shm` is off).
    pub tcp: bool,
    /// Soft-RoCE over UDP (used between nodes when `tcp` is off).
    pub roce: bool,
    /// RDMA devices through libibverbs (builds with the `verbs` feature;
    /// preferred between nodes when a device is present).
    pub verbs: bool,
}

impl Transports {
    /// Every transport.
    pub const ALL: Transports = Transports {
        shm: true,
        tcp: true,
        roce: true,
        verbs: true,
    };

    /// Whether some network transport is allowed.
    pub fn network(&self) -> bool {
        self.tcp || self.roce || self.verbs
    }

    /// Parses `auto` or a comma list of `shm`, `tcp`, `roce` and `verbs`.
    pub fn parse(s: &str) -> Option<Transports> {
        let s = s.trim();
        if s == "auto" {
            return Some(Transports::ALL);
        }
        let mut t = Transports {
            shm: false,
            tcp: false,
            roce: false,
            verbs: false,
        };
        for name in s.split(',') {
            match name.trim() {
                "shm" => t.shm = true,
                "tcp" => t.tcp = true,
                "roce" => t.roce = true,
                "verbs" => t.verbs = true,
                _ => return None,
            }
        }
        (t.shm || t.network()).then_some(t)
    }
}

/// Declares every tunable once and generates from that one list the table
/// [`TUNABLES`] (what `dosrun --info` prints), the typed [`Config`] and its
/// parser [`Config::parse`].
///
/// Each entry reads `field: Type = "DOS_NAME", default "text", parse f, help "…";`
/// where `f(var, text) -> Result<Type>` turns the variable's text (or the
/// default's) into the field, and fails with [`Error::Environment`] naming
/// `var`. Tunables are parsed, and listed, in the order written.
macro_rules! tunables {
    ($(
        $field:ident: $ty:ty = $var:literal,
        default $default:literal,
        parse $parse:path,
        help $help:literal;
    )*) => {
        /// Every tunable of dos.
        pub const TUNABLES: &[Tunable] = &[
            $(Tunable { name: $var, default: $default, help: $help },)*
        ];

        /// Parsed tunables.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Config {
            $(
                #[doc = concat!("`", $var, "` (default `", $default, "`): ", $help, ".")]
                pub $field: $ty,
            )*
        }

        impl Config {
            /// Parses tunables from `lookup` (used by tests and by `from_env`).
            pub fn parse(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
                $(
                    let text = lookup($var);
                    let $field: $ty = $parse($var, text.as_deref().unwrap_or($default))?;
                )*
                Ok(Config { $($field,)* })
            }
        }
    };
}

tunables! {
    eager_limit: usize = "DOS_EAGER_LIMIT",
        default "8192",
        parse number,
        help "largest point-to-point message (bytes) sent eagerly through the rings; larger ones use rendezvous with a single copy";
    net_eager_limit: usize = "DOS_NET_EAGER_LIMIT",
        default "262144",
        parse number,
        help "largest point-to-point message (bytes) sent eagerly to a rank on another node (at most what its transport carries in one message: 64 KiB over roce); larger ones use rendezvous (two more network round trips)";
    rndv: RndvMode = "DOS_RNDV",
        default "auto",
        parse RndvMode::parse,
        help "rendezvous protocol for large messages: pipeline (chunks through the rings, both ranks copy), cma (the receiver copies once with process_vm_readv), auto (pipeline, or cma while the node is crowded: ranks outnumber cores, or both the one-minute load average and the threads runnable now exceed the CPUs; then one of the two ranks is often off its CPU and the pipeline waits for it; the same signal as DOS_SPIN_US's auto)";
    rndv_cma_max: usize = "DOS_RNDV_CMA_MAX",
        default "65536",
        parse number,
        help "under DOS_RNDV=auto, rendezvous messages between ranks of a node up to this many bytes take the receiver's single copy (process_vm_readv) even while the node is free (above it: the pipeline while free); 0: the pipeline for all sizes while free";
    rndv_chunk: usize = "DOS_RNDV_CHUNK",
        default "16384",
        parse chunk,
        help "bytes per chunk of a pipelined rendezvous";
    net_chunk: usize = "DOS_NET_CHUNK",
        default "98304",
        parse chunk,
        help "bytes per frame of a rendezvous payload between nodes";
    shm_ring_bytes: usize = "DOS_SHM_RING_BYTES",
        default "131072",
        parse ring_bytes,
        help "bytes of each shared-memory ring (one per ordered pair of ranks on a node that talks, carved on first use from a pool of at most 1 TiB of address space; a power of two >= 16384)";
    shm_fence: bool = "DOS_SHM_FENCE",
        default "0",
        parse flag,
        help "1: a rank that sends through shared memory makes a full fence before it looks whether the receiver sleeps (about 100 ns per message here); 0: no fence when the kernel offers membarrier's expedited global barrier, which a rank about to sleep runs instead (ARCHITECTURE.md, shared-memory transport)";
    spin_us: Option<u32> = "DOS_SPIN_US",
        default "auto",
        parse auto_number,
        help "microseconds a waiting rank polls before it starts yielding the CPU (auto: 1000, or 0 when ranks outnumber cores; the crowding signal is the one of DOS_RNDV=auto)";
    yield_us: Option<u32> = "DOS_YIELD_US",
        default "auto",
        parse auto_number,
        help "microseconds a waiting rank then polls with sched_yield between polls before it blocks in the kernel (auto: 50 while the node is free, 500 while it is crowded or ranks outnumber cores)";
    reduce_par_bytes: usize = "DOS_REDUCE_PAR_BYTES",
        default "1048576",
        parse number,
        help "local reductions of at least this many bytes run in parallel with rayon";
    node_coll_bytes: usize = "DOS_NODE_COLL_BYTES",
        default "1008",
        parse node_coll_bytes,
        help "barrier, bcast, reduce, allreduce, allgather and alltoall of at most this many bytes (per rank's contribution) among ranks of one node (at most 16) go through shared-memory slots instead of messages; 0 turns this off (at most 1008)";
    transports: Transports = "DOS_TRANSPORTS",
        default "auto",
        parse Transports::parse_var,
        help "transports ranks may use, a comma list of shm, tcp, roce and verbs (what dosrun --transports sets); auto: all of them. Within a node ranks use shared memory; between nodes verbs when this build has it (feature verbs) and the host an RDMA device, else tcp, else roce (soft-RoCE over UDP); without shm, ranks of one node use the network transport too";
    roce_mtu: u32 = "DOS_ROCE_MTU",
        default "4096",
        parse roce_mtu,
        help "largest RoCE MTU of the soft-RoCE (a power of two from 256): each connection uses the largest that its link's MTU carries, up to this (1024 on a 1500-byte Ethernet, 4096 on jumbo frames); 4096 is the IBA's largest, up to 32768 is an extension only dos understands";
    roce_gso: bool = "DOS_ROCE_GSO",
        default "1",
        parse exact_flag,
        help "1: the soft-RoCE sends trains of equal packets with UDP segmentation offload and receives them with UDP GRO (one trip through the kernel per 64 KiB; each packet's ICRC covers the identification the kernel gives it); 0: one datagram at a time";
    roce_retry_budget_ms: u64 = "DOS_ROCE_RETRY_BUDGET_MS",
        default "30000",
        parse positive,
        help "milliseconds a soft-RoCE connection keeps retransmitting without progress (its timeout backing off from 20 ms to 1 s) before it gives the peer up, and that a leaving rank waits at most for its last messages to be acknowledged; a rank that dies is reported by dosrun long before (IBA's local ACK timeout times its retry count, as a time)";
    roce_auth: bool = "DOS_ROCE_AUTH",
        default "1",
        parse flag,
        help "1: every soft-RoCE packet carries a 16-byte tag (keyed BLAKE3 from the job's secret, one key per queue pair and direction) and forged or renumbered packets are dropped; 0: plain RoCEv2 packets, for interoperating with RoCE devices (queue pairs still take packets only from their peer's address and port). Every rank of a job must say the same";
    fs_transport: &'static str = "DOS_FS_TRANSPORT",
        default "auto",
        parse fs_transport,
        help "dosfs clients (dos::io, dosfs, the FUSE mount): how servers on other nodes are reached: tcp, roce (requests over TCP, data by one-sided RDMA into the servers' slots over the soft-RoCE; TCP when a server grants no slots) or auto (tcp: faster than the soft-RoCE on the test cluster's veth, ARCHITECTURE.md); servers on the client's own node are reached through shared slots whatever this says. Read by dos_fs::client::Client::new";
    topology_cache: &'static str = "DOS_TOPOLOGY_CACHE",
        default "auto",
        parse topology_cache,
        help "where dosrun and its node agents keep this machine's hwloc topology between jobs, so that binding ranks does not cost a hwloc load per job (auto: $XDG_RUNTIME_DIR/dos, else /tmp/dos-UID; off: hwloc every time; or an absolute directory); an entry is used only while boot, online CPUs, allowed CPUs, cgroup and HWLOC_* variables are unchanged";
    fs_write_behind: u64 = "DOS_FS_WRITE_BEHIND",
        default "0",
        parse number,
        help "dosfs clients (dos::io): writes left in flight per server by a write that returns once its bytes are sent (write-behind; errors come with the file's next write, sync or close); 0 (the default, measured faster on a loaded 2-core node; BENCHMARKS.md): every write waits for its reply. Read by dos_fs::client::Client::new";
    kill_grace_ms: u64 = "DOS_KILL_GRACE_MS",
        default "200",
        parse number,
        help "dosrun: milliseconds between SIGTERM and SIGKILL when a job is stopped";
    spawn_threads: Option<u32> = "DOS_SPAWN_THREADS",
        default "auto",
        parse auto_number,
        help "dosrun and its node agents: threads that start a node's ranks at once, so that the ranks' execs overlap (a start waits for its child's exec); auto: one per CPU dosrun may run on (at most 16), from 4 ranks on a node; 1: one after the other from dosrun's main thread";
    blame_window_ms: u64 = "DOS_BLAME_WINDOW_MS",
        default "200",
        parse number,
        help "dosrun: after a rank exits with a non-zero status or aborts, milliseconds dosrun waits for evidence of an earlier death (a rank killed by a signal, a host lost) before it blames that rank and stops the job; a peer's transport error is then reported as a consequence";
    wireup_timeout_ms: u64 = "DOS_WIREUP_TIMEOUT_MS",
        default "120000",
        parse number,
        help "milliseconds a rank waits for an answer of its node's wire-up service (dosrun or its node agent) before it fails with an error naming the stall; 0: no limit";
    pmi: crate::pmi::direct::Version = "DOS_PMI",
        default "auto",
        parse pmi_version,
        help "direct launch (a dos program started by srun or mpiexec.hydra, PMI_FD set): the PMI wire protocol spoken to the launcher's server: 1 (PMI-1, simple), 2 (PMI-2) or auto (PMI-2 under Slurm, SLURM_JOB_ID or SLURM_STEP_ID set; else PMI-1, as to MPICH's hydra)";
    log: LogFilter = "DOS_LOG",
        default "warn",
        parse LogFilter::parse_var,
        help "which messages dos and dos-transport write on stderr: a level (error, warn, info, debug, trace, off) or comma-separated directives target=level, e.g. warn,dos_transport::roce=debug (tracing's EnvFilter syntax; targets are module paths)";
    ckpt_id: &'static str = "DOS_CKPT_ID",
        default "auto",
        parse ckpt_text,
        help "dos::ckpt: the job-stable id that names a job's checkpoints (dosrun sets it the same on every attempt of one invocation); auto: the program's name. Letters, digits, _ and - only";
    run_attempt: u32 = "DOS_RUN_ATTEMPT",
        default "0",
        parse number,
        help "dos::ckpt: which run of the job this is, set by dosrun --max-restarts: 0 on the first run, k on the k-th restart (a restart looks for checkpoints to restore)";
    ckpt_dir: &'static str = "DOS_CKPT_DIR",
        default "/dev/shm",
        parse ckpt_text,
        help "dos::ckpt: node-local directory of level 1 (L1) checkpoints, /dev/shm or a local disk; each job's under dos-ckpt-<DOS_CKPT_ID>; {node} in it becomes the node's address (node-local directories on a shared file system)";
    ckpt_levels: u8 = "DOS_CKPT_LEVELS",
        default "1,2,3",
        parse ckpt_levels,
        help "dos::ckpt: redundancy levels written, a comma list of 1 (node-local), 2 (a partner copy on another node), 3 (XOR parity across a set of nodes) and 4 (dosfs, every DOS_CKPT_FS_EVERY-th checkpoint, written in the background)";
    ckpt_xor_set: usize = "DOS_CKPT_XOR_SET",
        default "8",
        parse ckpt_xor_set,
        help "dos::ckpt: failure groups (nodes) per XOR parity set of level 3 (at least 2; with fewer nodes, one set spans them all)";
    ckpt_group: &'static str = "DOS_CKPT_GROUP",
        default "node",
        parse ckpt_group,
        help "dos::ckpt: the unit that fails together, node or rank (rank: every rank its own failure group, to exercise levels 2 and 3 on one host)";
    ckpt_fs: &'static str = "DOS_CKPT_FS",
        default "",
        parse ckpt_text,
        help "dos::ckpt: level 4 target: dosfs:/DIR (a directory in the dosfs whose address file $DOSFS or ./dosfs.addr names) or a directory path (a parallel file system's mount); empty: no level 4";
    ckpt_fs_every: u64 = "DOS_CKPT_FS_EVERY",
        default "10",
        parse positive,
        help "dos::ckpt: every this many checkpoints one also goes to level 4";
    ckpt_keep: usize = "DOS_CKPT_KEEP",
        default "2",
        parse ckpt_keep,
        help "dos::ckpt: complete checkpoints kept per level; older ones are deleted";
    ckpt_interval: u64 = "DOS_CKPT_INTERVAL",
        default "0",
        parse number,
        help "dos::ckpt: need_checkpoint says yes every this many calls (0: not by count)";
    ckpt_seconds: u64 = "DOS_CKPT_SECONDS",
        default "0",
        parse number,
        help "dos::ckpt: need_checkpoint says yes when this many seconds passed since the last checkpoint (0: not by time)";
    ckpt_mtbf: u64 = "DOS_CKPT_MTBF",
        default "0",
        parse number,
        help "dos::ckpt: the job's mean time between failures in seconds; need_checkpoint then checkpoints at Young's interval sqrt(2 * cost * MTBF) from the measured cost of a checkpoint (0: off)";
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(|_| None).expect("defaults parse")
    }
}

impl Config {
    /// Reads every tunable from the environment, falling back to defaults.
    pub fn from_env() -> Result<Config> {
        Config::parse(|name| std::env::var(name).ok())
    }
}

// The parsers of the table: each turns a variable's text into its field.

fn number<T: std::str::FromStr>(var: &'static str, s: &str) -> Result<T> {
    s.trim().parse().map_err(|_| Error::Environment {
        var,
        reason: "not a number",
    })
}

/// `auto` (`None`) or a number.
fn auto_number(var: &'static str, s: &str) -> Result<Option<u32>> {
    if s.trim() == "auto" {
        Ok(None)
    } else {
        number(var, s).map(Some)
    }
}

/// A number of bytes per chunk, at least 1 KiB.
fn chunk(var: &'static str, s: &str) -> Result<usize> {
    let n: usize = number(var, s)?;
    if n < 1024 {
        return Err(Error::Environment {
            var,
            reason: "must be at least 1024",
        });
    }
    Ok(n)
}

fn positive(var: &'static str, s: &str) -> Result<u64> {
    let n: u64 = number(var, s)?;
    if n == 0 {
        return Err(Error::Environment {
            var,
            reason: "must be at least 1",
        });
    }
    Ok(n)
}

fn ring_bytes(var: &'static str, s: &str) -> Result<usize> {
    let n: usize = number(var, s)?;
    if !n.is_power_of_two() || n < 16384 {
        return Err(Error::Environment {
            var,
            reason: "must be a power of two of at least 16384",
        });
    }
    Ok(n)
}

/// At most the payload of a node collective slot.
fn node_coll_bytes(var: &'static str, s: &str) -> Result<usize> {
    Ok(number::<usize>(var, s)?.min(crate::coll::COLL_PAYLOAD))
}

fn roce_mtu(var: &'static str, s: &str) -> Result<u32> {
    let n: u32 = number(var, s)?;
    if !(256..=32768).contains(&n) || !n.is_power_of_two() {
        return Err(Error::Environment {
            var,
            reason: "must be a power of two from 256 to 32768",
        });
    }
    Ok(n)
}

/// `0` or `1`, around spaces.
fn flag(var: &'static str, s: &str) -> Result<bool> {
    exact_flag(var, s.trim())
}

/// `0` or `1`, exactly.
fn exact_flag(var: &'static str, s: &str) -> Result<bool> {
    match s {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(Error::Environment {
            var,
            reason: "must be 0 or 1",
        }),
    }
}

impl RndvMode {
    fn parse(var: &'static str, s: &str) -> Result<RndvMode> {
        match s.trim() {
            "auto" => Ok(RndvMode::Auto),
            "pipeline" => Ok(RndvMode::Pipeline),
            "cma" => Ok(RndvMode::Cma),
            _ => Err(Error::Environment {
                var,
                reason: "must be auto, pipeline or cma",
            }),
        }
    }
}

impl Transports {
    fn parse_var(var: &'static str, s: &str) -> Result<Transports> {
        Transports::parse(s).ok_or(Error::Environment {
            var,
            reason: "must be auto or a comma list of shm, tcp, roce and verbs",
        })
    }
}

/// Which log messages are written (`DOS_LOG`): a filter in the syntax of
/// `tracing_subscriber`'s `EnvFilter`, checked when the tunables are parsed.
///
/// It holds its text (interned: [`Config`] is `Copy`, and a process sees
/// few distinct filters); [`crate::log`] builds the filter from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFilter(&'static str);

impl LogFilter {
    /// The filter's text, e.g. `warn,dos_transport::roce=debug`.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    fn parse_var(var: &'static str, s: &str) -> Result<LogFilter> {
        let s = s.trim();
        if s.is_empty() || tracing_subscriber::EnvFilter::builder().parse(s).is_err() {
            return Err(Error::Environment {
                var,
                reason: "must be a log filter: a level (error, warn, info, debug, trace, off) or target=level directives",
            });
        }
        Ok(LogFilter(intern(s)))
    }
}

/// Text of a checkpoint tunable (kept for the process's life).
fn ckpt_text(_var: &'static str, s: &str) -> Result<&'static str> {
    Ok(intern(s.trim()))
}

/// `DOS_CKPT_LEVELS`: a comma list of 1, 2, 3 and 4, as bits 1, 2, 4, 8.
fn ckpt_levels(var: &'static str, s: &str) -> Result<u8> {
    let mut bits = 0u8;
    for l in s.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        bits |= match l.trim_start_matches(['L', 'l']) {
            "1" => 1,
            "2" => 2,
            "3" => 4,
            "4" => 8,
            _ => {
                return Err(Error::Environment {
                    var,
                    reason: "must be a comma list of the levels 1, 2, 3 and 4",
                })
            }
        };
    }
    Ok(bits)
}

/// `DOS_CKPT_XOR_SET`: at least 2.
fn ckpt_xor_set(var: &'static str, s: &str) -> Result<usize> {
    match number(var, s)? {
        n if n >= 2 => Ok(n),
        _ => Err(Error::Environment {
            var,
            reason: "an XOR set has at least 2 members",
        }),
    }
}

/// `DOS_CKPT_KEEP`: at least 1.
fn ckpt_keep(var: &'static str, s: &str) -> Result<usize> {
    match number(var, s)? {
        n if n >= 1 => Ok(n),
        _ => Err(Error::Environment {
            var,
            reason: "at least 1 checkpoint is kept",
        }),
    }
}

/// `DOS_CKPT_GROUP`: node or rank.
/// `DOS_FS_TRANSPORT`: the words of `dos_fs::rdma::Transport::parse`.
fn fs_transport(var: &'static str, s: &str) -> Result<&'static str> {
    match s.trim() {
        "" | "auto" => Ok("auto"),
        "tcp" => Ok("tcp"),
        "roce" => Ok("roce"),
        _ => Err(Error::Environment {
            var,
            reason: "must be auto, tcp or roce",
        }),
    }
}

fn pmi_version(var: &'static str, s: &str) -> Result<crate::pmi::direct::Version> {
    use crate::pmi::direct::Version;
    match s.trim() {
        "" | "auto" => Ok(Version::Auto),
        "1" => Ok(Version::V1),
        "2" => Ok(Version::V2),
        _ => Err(Error::Environment {
            var,
            reason: "must be auto, 1 or 2",
        }),
    }
}

/// `DOS_TOPOLOGY_CACHE`: `auto`, `off` or an absolute directory.
fn topology_cache(var: &'static str, s: &str) -> Result<&'static str> {
    match s.trim() {
        "" | "auto" => Ok("auto"),
        "off" => Ok("off"),
        d if d.starts_with('/') => Ok(intern(d)),
        _ => Err(Error::Environment {
            var,
            reason: "must be auto, off or an absolute directory",
        }),
    }
}

fn ckpt_group(var: &'static str, s: &str) -> Result<&'static str> {
    match s.trim() {
        "node" => Ok("node"),
        "rank" => Ok("rank"),
        _ => Err(Error::Environment {
            var,
            reason: "must be node or rank",
        }),
    }
}

/// The one `&'static` copy of `s` (filters are few: one a process, in practice).
fn intern(s: &str) -> &'static str {
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&k) = seen.iter().find(|&&k| k == s) {
        return k;
    }
    let k: &'static str = Box::leak(s.into());
    seen.push(k);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_cache_setting() {
        assert_eq!(Config::default().topology_cache, "auto");
        let c =
            |v: &'static str| Config::parse(move |n| (n == "DOS_TOPOLOGY_CACHE").then(|| v.into()));
        assert_eq!(c("off").unwrap().topology_cache, "off");
        assert_eq!(c(" /var/tmp/x ").unwrap().topology_cache, "/var/tmp/x");
        assert!(matches!(
            c("relative/dir"),
            Err(Error::Environment {
                var: "DOS_TOPOLOGY_CACHE",
                ..
            })
        ));
    }

    #[test]
    fn defaults_parse() {
        let c = Config::default();
        assert_eq!(c.eager_limit, 8192);
        assert_eq!(c.rndv_cma_max, 65536);
        assert_eq!(c.spin_us, None);
        assert_eq!(c.roce_retry_budget_ms, 30_000);
        assert!(c.roce_auth);
    }

    #[test]
    fn the_roce_retry_budget_is_a_positive_number_of_milliseconds() {
        let p = |v: &'static str| {
            Config::parse(move |n| (n == "DOS_ROCE_RETRY_BUDGET_MS").then(|| v.into()))
        };
        assert_eq!(p("5000").unwrap().roce_retry_budget_ms, 5000);
        for bad in ["0", "-1", "soon", ""] {
            assert!(
                matches!(
                    p(bad),
                    Err(Error::Environment {
                        var: "DOS_ROCE_RETRY_BUDGET_MS",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roce_auth_is_0_or_1() {
        let c = Config::parse(|n| (n == "DOS_ROCE_AUTH").then(|| "0".into())).unwrap();
        assert!(!c.roce_auth);
        for bad in ["", "yes", "2"] {
            let e = Config::parse(|n| (n == "DOS_ROCE_AUTH").then(|| bad.into()));
            assert!(
                matches!(
                    e,
                    Err(Error::Environment {
                        var: "DOS_ROCE_AUTH",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fs_transport_is_auto_tcp_or_roce() {
        let get = |v: &str| {
            let v = v.to_owned();
            Config::parse(move |n| (n == "DOS_FS_TRANSPORT").then(|| v.clone()))
        };
        assert_eq!(get("roce").unwrap().fs_transport, "roce");
        assert_eq!(get(" tcp").unwrap().fs_transport, "tcp");
        assert_eq!(get("auto").unwrap().fs_transport, "auto");
        assert!(matches!(
            get("verbs"),
            Err(Error::Environment {
                var: "DOS_FS_TRANSPORT",
                ..
            })
        ));
    }

    #[test]
    fn dos_pmi_is_auto_1_or_2() {
        use crate::pmi::direct::Version;
        let v = |s: &str| Config::parse(|n| (n == "DOS_PMI").then(|| s.into())).map(|c| c.pmi);
        assert_eq!(Config::default().pmi, Version::Auto);
        assert_eq!(v("1").unwrap(), Version::V1);
        assert_eq!(v(" 2 ").unwrap(), Version::V2);
        assert_eq!(v("auto").unwrap(), Version::Auto);
        for bad in ["3", "pmi2", "x"] {
            assert!(
                matches!(v(bad), Err(Error::Environment { var: "DOS_PMI", .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let e = Config::parse(|n| (n == "DOS_EAGER_LIMIT").then(|| "lots".into()));
        assert!(matches!(
            e,
            Err(Error::Environment {
                var: "DOS_EAGER_LIMIT",
                ..
            })
        ));
        let e = Config::parse(|n| (n == "DOS_SHM_RING_BYTES").then(|| "1000".into()));
        assert!(matches!(e, Err(Error::Environment { .. })));
        let c = Config::parse(|n| (n == "DOS_SPIN_US").then(|| "7".into())).unwrap();
        assert_eq!(c.spin_us, Some(7));
        let c = Config::parse(|n| (n == "DOS_TRANSPORTS").then(|| "tcp".into())).unwrap();
        assert_eq!(
            c.transports,
            Transports {
                shm: false,
                tcp: true,
                roce: false,
                verbs: false
            }
        );
        for bad in ["", "udp", "shm,", "tcp,ib"] {
            let e = Config::parse(|n| (n == "DOS_TRANSPORTS").then(|| bad.into()));
            assert!(
                matches!(
                    e,
                    Err(Error::Environment {
                        var: "DOS_TRANSPORTS",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_table_lists_each_variable_once_with_a_default_that_parses() {
        let c = Config::default();
        for (i, t) in TUNABLES.iter().enumerate() {
            assert!(t.name.starts_with("DOS_"), "{}", t.name);
            assert!(!t.help.is_empty(), "{}", t.name);
            assert!(
                TUNABLES[..i].iter().all(|u| u.name != t.name),
                "{} listed twice",
                t.name
            );
            // Setting a variable to its default changes nothing.
            let same = Config::parse(|n| (n == t.name).then(|| t.default.to_string())).unwrap();
            assert_eq!(same, c, "{}", t.name);
        }
    }

    #[test]
    fn dos_log_takes_levels_and_target_directives() {
        assert_eq!(Config::default().log.as_str(), "warn");
        let p = |v: &'static str| Config::parse(move |n| (n == "DOS_LOG").then(|| v.into()));
        for good in [
            "error",
            "off",
            "dos_transport::roce=debug",
            "warn,dos=info",
            " debug ",
        ] {
            let c = p(good).unwrap();
            assert_eq!(c.log.as_str(), good.trim());
            // Equal filters are one interned text.
            assert!(std::ptr::eq(c.log.as_str(), p(good).unwrap().log.as_str()));
        }
        for bad in ["", "dos=loud", "dos=[", "warn,=info=x"] {
            assert!(
                matches!(p(bad), Err(Error::Environment { var: "DOS_LOG", .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_transports_help_names_every_transport() {
        let t = TUNABLES
            .iter()
            .find(|t| t.name == "DOS_TRANSPORTS")
            .unwrap();
        for name in ["shm", "tcp", "roce", "verbs"] {
            assert!(t.help.contains(name), "{name}: {}", t.help);
        }
    }
}
