//! Tunables: the one place that reads `DOS_*` configuration variables.
//!
//! Each tunable has a name, a default and a help line in [`TUNABLES`];
//! `dosrun --info` prints the table. [`Config::from_env`] parses them all once.
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

/// Every tunable of dos.
pub const TUNABLES: &[Tunable] = &[
    Tunable {
        name: "DOS_EAGER_LIMIT",
        default: "16384",
        help: "largest point-to-point message (bytes) sent eagerly through the rings; larger ones use rendezvous with a single copy",
    },
    Tunable {
        name: "DOS_NET_EAGER_LIMIT",
        default: "262144",
        help: "largest point-to-point message (bytes) sent eagerly to a rank on another node (at most what its transport carries in one message: 64 KiB over roce); larger ones use rendezvous (two more network round trips). Between namespaces over tcp, eager took 64 KiB messages from 1.7 to 3.2 GB/s, 128 KiB from 2.4 to 4.4 and 256 KiB from 3.0 to 5.5; at 512 KiB rendezvous is as fast",
    },
    Tunable {
        name: "DOS_RNDV",
        default: "auto",
        help: "rendezvous protocol for large messages: pipeline (chunks through the rings, both ranks copy), cma (the receiver copies once with process_vm_readv), auto (pipeline, or cma when ranks outnumber cores)",
    },
    Tunable {
        name: "DOS_RNDV_CHUNK",
        default: "16384",
        help: "bytes per chunk of a pipelined rendezvous",
    },
    Tunable {
        name: "DOS_NET_CHUNK",
        default: "98304",
        help: "bytes per frame of a rendezvous payload between nodes; frames of 64-192 KiB streamed best over TCP here (6-7 GB/s between namespaces), 512 KiB and up only half as fast",
    },
    Tunable {
        name: "DOS_SHM_RING_BYTES",
        default: "131072",
        help: "bytes of each shared-memory ring (one per ordered pair of ranks on a node that talks, carved on first use from a pool of at most 1 TiB of address space; a power of two >= 16384)",
    },
    Tunable {
        name: "DOS_SPIN_US",
        default: "auto",
        help: "microseconds a waiting rank polls before it starts yielding the CPU (auto: 1000, or 0 when ranks outnumber cores)",
    },
    Tunable {
        name: "DOS_YIELD_US",
        default: "auto",
        help: "microseconds a waiting rank then polls with sched_yield between polls before it blocks in the kernel (auto: 50, or 500 when ranks outnumber cores)",
    },
    Tunable {
        name: "DOS_REDUCE_PAR_BYTES",
        default: "1048576",
        help: "local reductions of at least this many bytes run in parallel with rayon",
    },
    Tunable {
        name: "DOS_NODE_COLL_BYTES",
        default: "1008",
        help: "barrier, bcast, reduce, allreduce, allgather and alltoall of at most this many bytes (per rank's contribution) among ranks of one node (at most 16) go through shared-memory slots instead of messages; 0 turns this off (at most 1008)",
    },
    Tunable {
        name: "DOS_TRANSPORTS",
        default: "auto",
        help: "transports ranks may use, a comma list of shm, tcp and roce (what dosrun --transports sets); auto: shared memory within a node, tcp between nodes; roce (soft-RoCE over UDP) is used between nodes when tcp is not listed; without shm, ranks of one node use the network transport too",
    },
    Tunable {
        name: "DOS_ROCE_MTU",
        default: "4096",
        help: "largest RoCE MTU of the soft-RoCE (a power of two from 256): each connection uses the largest that its link's MTU carries, up to this (1024 on a 1500-byte Ethernet, 4096 on jumbo frames); 4096 is the IBA's largest, up to 32768 is an extension only dos understands",
    },
    Tunable {
        name: "DOS_ROCE_GSO",
        default: "1",
        help: "1: the soft-RoCE sends trains of equal packets with UDP segmentation offload and receives them with UDP GRO (one trip through the kernel per 64 KiB; each packet's ICRC covers the identification the kernel gives it); 0: one datagram at a time",
    },
    Tunable {
        name: "DOS_ROCE_RETRY_BUDGET_MS",
        default: "30000",
        help: "milliseconds a soft-RoCE connection keeps retransmitting without progress (its timeout backing off from 20 ms to 1 s) before it gives the peer up, and that a leaving rank waits at most for its last messages to be acknowledged; a rank that dies is reported by dosrun long before (IBA's local ACK timeout times its retry count, as a time)",
    },
    Tunable {
        name: "DOS_ROCE_AUTH",
        default: "1",
        help: "1: every soft-RoCE packet carries a 16-byte tag (keyed BLAKE3 from the job's secret, one key per queue pair and direction) and forged or renumbered packets are dropped; 0: plain RoCEv2 packets, for interoperating with RoCE devices (queue pairs still take packets only from their peer's address and port). Every rank of a job must say the same",
    },
    Tunable {
        name: "DOS_KILL_GRACE_MS",
        default: "200",
        help: "dosrun: milliseconds between SIGTERM and SIGKILL when a job is stopped",
    },
    Tunable {
        name: "DOS_BLAME_WINDOW_MS",
        default: "200",
        help: "dosrun: after a rank exits with a non-zero status or aborts, milliseconds dosrun waits for evidence of an earlier death (a rank killed by a signal, a host lost) before it blames that rank and stops the job; a peer's transport error is then reported as a consequence",
    },
    Tunable {
        name: "DOS_WIREUP_TIMEOUT_MS",
        default: "120000",
        help: "milliseconds a rank waits for an answer of its node's wire-up service (dosrun or its node agent) before it fails with an error naming the stall; 0: no limit",
    },
];

/// Which rendezvous protocol large messages use (`DOS_RNDV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RndvMode {
    /// Pipelined unless the node is oversubscribed.
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

/// Parsed tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `DOS_EAGER_LIMIT`.
    pub eager_limit: usize,
    /// `DOS_NET_EAGER_LIMIT`.
    pub net_eager_limit: usize,
    /// `DOS_RNDV`.
    pub rndv: RndvMode,
    /// `DOS_RNDV_CHUNK`.
    pub rndv_chunk: usize,
    /// `DOS_NET_CHUNK`.
    pub net_chunk: usize,
    /// `DOS_SHM_RING_BYTES`.
    pub shm_ring_bytes: usize,
    /// `DOS_SPIN_US`; `None` means automatic.
    pub spin_us: Option<u32>,
    /// `DOS_YIELD_US`; `None` means automatic.
    pub yield_us: Option<u32>,
    /// `DOS_REDUCE_PAR_BYTES`.
    pub reduce_par_bytes: usize,
    /// `DOS_NODE_COLL_BYTES` (at most the slot payload).
    pub node_coll_bytes: usize,
    /// `DOS_KILL_GRACE_MS`.
    pub kill_grace_ms: u64,
    /// `DOS_BLAME_WINDOW_MS`.
    pub blame_window_ms: u64,
    /// `DOS_WIREUP_TIMEOUT_MS` (0: none).
    pub wireup_timeout_ms: u64,
    /// `DOS_ROCE_MTU`.
    pub roce_mtu: u32,
    /// `DOS_ROCE_GSO`.
    pub roce_gso: bool,
    /// `DOS_ROCE_RETRY_BUDGET_MS`.
    pub roce_retry_budget_ms: u64,
    /// `DOS_ROCE_AUTH`.
    pub roce_auth: bool,
    /// `DOS_TRANSPORTS`.
    pub transports: Transports,
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

    /// Parses tunables from `lookup` (used by tests and by `from_env`).
    pub fn parse(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let raw = |name: &'static str| -> String {
            lookup(name).unwrap_or_else(|| {
                TUNABLES
                    .iter()
                    .find(|t| t.name == name)
                    .expect("tunable listed")
                    .default
                    .to_string()
            })
        };
        fn num<T: std::str::FromStr>(name: &'static str, s: &str) -> Result<T> {
            s.trim().parse().map_err(|_| Error::Environment {
                var: name,
                reason: "not a number",
            })
        }
        fn auto(name: &'static str, s: &str) -> Result<Option<u32>> {
            if s.trim() == "auto" {
                Ok(None)
            } else {
                num(name, s).map(Some)
            }
        }
        let shm_ring_bytes: usize = num("DOS_SHM_RING_BYTES", &raw("DOS_SHM_RING_BYTES"))?;
        if !shm_ring_bytes.is_power_of_two() || shm_ring_bytes < 16384 {
            return Err(Error::Environment {
                var: "DOS_SHM_RING_BYTES",
                reason: "must be a power of two of at least 16384",
            });
        }
        let rndv = match raw("DOS_RNDV").trim() {
            "auto" => RndvMode::Auto,
            "pipeline" => RndvMode::Pipeline,
            "cma" => RndvMode::Cma,
            _ => {
                return Err(Error::Environment {
                    var: "DOS_RNDV",
                    reason: "must be auto, pipeline or cma",
                })
            }
        };
        let rndv_chunk: usize = num("DOS_RNDV_CHUNK", &raw("DOS_RNDV_CHUNK"))?;
        if rndv_chunk < 1024 {
            return Err(Error::Environment {
                var: "DOS_RNDV_CHUNK",
                reason: "must be at least 1024",
            });
        }
        let net_chunk: usize = num("DOS_NET_CHUNK", &raw("DOS_NET_CHUNK"))?;
        if net_chunk < 1024 {
            return Err(Error::Environment {
                var: "DOS_NET_CHUNK",
                reason: "must be at least 1024",
            });
        }
        let roce_mtu: u32 = num("DOS_ROCE_MTU", &raw("DOS_ROCE_MTU"))?;
        if !(256..=32768).contains(&roce_mtu) || !roce_mtu.is_power_of_two() {
            return Err(Error::Environment {
                var: "DOS_ROCE_MTU",
                reason: "must be a power of two from 256 to 32768",
            });
        }
        let roce_gso = match raw("DOS_ROCE_GSO").as_str() {
            "1" => true,
            "0" => false,
            _ => {
                return Err(Error::Environment {
                    var: "DOS_ROCE_GSO",
                    reason: "must be 0 or 1",
                })
            }
        };
        let roce_retry_budget_ms: u64 =
            num("DOS_ROCE_RETRY_BUDGET_MS", &raw("DOS_ROCE_RETRY_BUDGET_MS"))?;
        if roce_retry_budget_ms == 0 {
            return Err(Error::Environment {
                var: "DOS_ROCE_RETRY_BUDGET_MS",
                reason: "must be at least 1",
            });
        }
        let roce_auth = match raw("DOS_ROCE_AUTH").trim() {
            "1" => true,
            "0" => false,
            _ => {
                return Err(Error::Environment {
                    var: "DOS_ROCE_AUTH",
                    reason: "must be 0 or 1",
                })
            }
        };
        Ok(Config {
            roce_mtu,
            roce_retry_budget_ms,
            roce_gso,
            roce_auth,
            rndv,
            rndv_chunk,
            net_chunk,
            eager_limit: num("DOS_EAGER_LIMIT", &raw("DOS_EAGER_LIMIT"))?,
            net_eager_limit: num("DOS_NET_EAGER_LIMIT", &raw("DOS_NET_EAGER_LIMIT"))?,
            shm_ring_bytes,
            spin_us: auto("DOS_SPIN_US", &raw("DOS_SPIN_US"))?,
            yield_us: auto("DOS_YIELD_US", &raw("DOS_YIELD_US"))?,
            reduce_par_bytes: num("DOS_REDUCE_PAR_BYTES", &raw("DOS_REDUCE_PAR_BYTES"))?,
            node_coll_bytes: num::<usize>("DOS_NODE_COLL_BYTES", &raw("DOS_NODE_COLL_BYTES"))?
                .min(crate::coll::COLL_PAYLOAD),
            transports: Transports::parse(&raw("DOS_TRANSPORTS")).ok_or(Error::Environment {
                var: "DOS_TRANSPORTS",
                reason: "must be auto or a comma list of shm, tcp, roce and verbs",
            })?,
            kill_grace_ms: num("DOS_KILL_GRACE_MS", &raw("DOS_KILL_GRACE_MS"))?,
            blame_window_ms: num("DOS_BLAME_WINDOW_MS", &raw("DOS_BLAME_WINDOW_MS"))?,
            wireup_timeout_ms: num("DOS_WIREUP_TIMEOUT_MS", &raw("DOS_WIREUP_TIMEOUT_MS"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::default();
        assert_eq!(c.eager_limit, 16384);
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
}
