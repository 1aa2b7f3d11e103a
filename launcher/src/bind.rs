//! Binding ranks to CPUs, in Open MPI's conventions.
//!
//! * `--bind-to core`: local rank `i` runs on the PUs of core `i` (logical
//!   order); more ranks on a node than cores is an error.
//! * `--bind-to numa`: local rank `i` runs on the PUs of the NUMA node of
//!   core `i mod cores` (ranks fill the first NUMA node's cores, then the
//!   next); more ranks than cores is allowed.
//! * `--bind-to none`: no binding.
//! * Default: `core` when the node has no more ranks than cores, otherwise
//!   `none` (as Open MPI).
//!
//! Only the PUs dosrun itself may run on count (its affinity, e.g. under
//! `taskset`, and hwloc leaves out those its cgroup forbids). The masks are
//! computed here in dosrun; the child applies its mask with one
//! `sched_setaffinity` call between fork and exec ([`CpuMask::apply`],
//! async-signal-safe), before the program starts any thread.

use std::io;
use std::io::Write;

use crate::supervise::{STATUS_INTERNAL, STATUS_USAGE};
use crate::sys;
use crate::topology::{cpu_list, Topology};

/// `--bind-to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindTo {
    /// One core per rank.
    Core,
    /// The NUMA node of the rank's core.
    Numa,
    /// No binding.
    None,
}

impl BindTo {
    /// Parses a `--bind-to` value.
    pub fn parse(s: &str) -> Option<BindTo> {
        match s {
            "core" => Some(BindTo::Core),
            "numa" => Some(BindTo::Numa),
            "none" => Some(BindTo::None),
            _ => None,
        }
    }

    /// The policy used on a node with `ranks` ranks and `cores` cores when
    /// `requested` (`None`: the default).
    pub fn effective(requested: Option<BindTo>, ranks: usize, cores: usize) -> BindTo {
        requested.unwrap_or(if ranks <= cores {
            BindTo::Core
        } else {
            BindTo::None
        })
    }
}

/// What a rank is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Not bound.
    Unbound,
    /// A core (logical index), in a package (logical index).
    Core {
        /// Logical index of the core.
        core: usize,
        /// Logical index of its package.
        package: Option<usize>,
    },
    /// A NUMA node (logical index).
    Numa {
        /// Logical index of the NUMA node.
        node: usize,
    },
}

/// One rank's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// What it is bound to.
    pub target: Target,
    /// The PUs (OS indexes, increasing) it may run on; empty when unbound.
    pub pus: Vec<usize>,
}

impl Binding {
    /// No binding.
    pub fn unbound() -> Binding {
        Binding {
            target: Target::Unbound,
            pus: Vec::new(),
        }
    }

    /// The affinity mask to apply, if bound.
    pub fn mask(&self) -> Option<CpuMask> {
        (!self.pus.is_empty()).then(|| CpuMask::from_pus(&self.pus))
    }

    /// The `--report-bindings` line for `rank` (process `pid` on `host`),
    /// in Open MPI's shape: what it is bound to, its PUs, and a map with
    /// one character per PU (`B` bound, `.` not), `/` between cores and
    /// one `[...]` per package.
    pub fn report(&self, topo: &Topology, host: &str, pid: i32, rank: usize) -> String {
        let head = format!("[{host}:{pid}] MCW rank {rank}");
        let pus = match self.pus.len() {
            1 => format!("PU {}", cpu_list(&self.pus)),
            _ => format!("PUs {}", cpu_list(&self.pus)),
        };
        let what = match self.target {
            Target::Unbound => {
                return format!("{head} is not bound (or bound to all available processors)")
            }
            Target::Core {
                core,
                package: Some(p),
            } => format!("package {p} core {core}"),
            Target::Core {
                core,
                package: None,
            } => format!("core {core}"),
            Target::Numa { node } => format!("NUMA node {node}"),
        };
        format!("{head} bound to {what} ({pus}): {}", self.map(topo))
    }

    fn map(&self, topo: &Topology) -> String {
        let core_map = |pus: &[usize]| -> String {
            pus.iter()
                .map(|p| if self.pus.contains(p) { 'B' } else { '.' })
                .collect()
        };
        let mut s = String::new();
        let mut group = |cores: Vec<&[usize]>| {
            if cores.is_empty() {
                return;
            }
            s.push('[');
            s.push_str(
                &cores
                    .into_iter()
                    .map(core_map)
                    .collect::<Vec<String>>()
                    .join("/"),
            );
            s.push(']');
        };
        for p in &topo.packages {
            group(
                topo.cores
                    .iter()
                    .filter(|c| c.package == Some(p.index))
                    .map(|c| &c.pus[..])
                    .collect(),
            );
        }
        group(
            topo.cores
                .iter()
                .filter(|c| {
                    c.package
                        .is_none_or(|p| !topo.packages.iter().any(|q| q.index == p))
                })
                .map(|c| &c.pus[..])
                .collect(),
        );
        s
    }
}

/// Why the ranks of a node cannot be bound. Each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// `--bind-to core` with more ranks than cores.
    #[error("--bind-to core: {ranks} ranks on {host} but only {cores} cores (use --bind-to none or numa)")]
    TooManyRanks {
        /// The host.
        host: String,
        /// Ranks on it.
        ranks: usize,
        /// Cores dosrun may use there.
        cores: usize,
    },
    /// No core is usable.
    #[error("--bind-to: no usable core on {host}")]
    NoCores {
        /// The host.
        host: String,
    },
    /// `--bind-to numa` but a core belongs to no NUMA node.
    #[error("--bind-to numa: hwloc reports no NUMA node with the PUs of core {core} on {host}")]
    NoNuma {
        /// The host.
        host: String,
        /// Logical index of the core.
        core: usize,
    },
}

/// The bindings of the `ranks` local ranks of a node (indexed by local
/// rank) under `requested` (`None`: the default policy). `topo` is the
/// node's topology restricted to the PUs dosrun may use.
pub fn bind_node(
    topo: &Topology,
    host: &str,
    requested: Option<BindTo>,
    ranks: usize,
) -> Result<Vec<Binding>, BindError> {
    let cores = &topo.cores;
    match BindTo::effective(requested, ranks, cores.len()) {
        BindTo::None => Ok(vec![Binding::unbound(); ranks]),
        _ if ranks == 0 => Ok(Vec::new()),
        _ if cores.is_empty() => Err(BindError::NoCores {
            host: host.to_string(),
        }),
        BindTo::Core => {
            if ranks > cores.len() {
                return Err(BindError::TooManyRanks {
                    host: host.to_string(),
                    ranks,
                    cores: cores.len(),
                });
            }
            Ok(cores[..ranks]
                .iter()
                .map(|c| Binding {
                    target: Target::Core {
                        core: c.index,
                        package: c.package,
                    },
                    pus: c.pus.clone(),
                })
                .collect())
        }
        BindTo::Numa => (0..ranks)
            .map(|i| {
                let c = &cores[i % cores.len()];
                let n = topo.numa_of(c).ok_or_else(|| BindError::NoNuma {
                    host: host.to_string(),
                    core: c.index,
                })?;
                let node = &topo.numa_nodes[n];
                Ok(Binding {
                    target: Target::Numa { node: node.index },
                    pus: node.pus.clone(),
                })
            })
            .collect(),
    }
}

/// This machine's topology, restricted to the CPUs dosrun may use; read
/// from the topology cache in `cache` when it holds this machine's
/// (`crate::topology::cache`).
fn local_topology(cache: Option<&std::path::Path>) -> Result<Topology, String> {
    let key = crate::topology::cache::fingerprint(std::env::vars_os());
    let t =
        crate::topology::cache::load_or(cache, &key, Topology::load).map_err(|e| e.to_string())?;
    Ok(match CpuMask::current() {
        Ok(m) => t.restrict(&m.pus()),
        Err(_) => t,
    })
}

/// The bindings of a node's `local_size` ranks on this machine (named
/// `host`), with the topology when one was loaded (from the topology cache
/// directory `cache` if it has it); an error is (exit status, message).
pub fn node_bindings(
    bind_to: Option<BindTo>,
    report: bool,
    local_size: usize,
    host: &str,
    cache: Option<&std::path::Path>,
) -> Result<(Option<Topology>, Vec<Binding>), (i32, String)> {
    // The default policy binds only when ranks fit on the cores; with more
    // ranks than online CPUs it cannot, so skip loading the topology (hwloc
    // takes a few milliseconds, most of a job's start-up).
    let cannot_bind_by_default = bind_to.is_none() && !report && local_size > sys::online_cpus();
    if local_size == 0 || bind_to == Some(BindTo::None) || cannot_bind_by_default {
        return Ok((None, vec![Binding::unbound(); local_size]));
    }
    match local_topology(cache) {
        Ok(t) => match bind_node(&t, host, bind_to, local_size) {
            Ok(b) => Ok((Some(t), b)),
            Err(e) => Err((STATUS_USAGE, e.to_string())),
        },
        Err(e) if bind_to.is_some() => Err((STATUS_INTERNAL, e)),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "dosrun: warning: ranks on {host} are not bound: {e}"
            );
            Ok((None, vec![Binding::unbound(); local_size]))
        }
    }
}

/// A set of CPUs in the kernel's `cpu_set_t` layout, of any size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask {
    words: Vec<libc::c_ulong>,
}

const WORD_BITS: usize = libc::c_ulong::BITS as usize;

impl CpuMask {
    /// The mask of the PUs with these OS indexes.
    pub fn from_pus(pus: &[usize]) -> CpuMask {
        let len = pus.iter().max().map_or(1, |&m| m / WORD_BITS + 1);
        let mut words = vec![0; len];
        for &p in pus {
            words[p / WORD_BITS] |= 1 << (p % WORD_BITS);
        }
        CpuMask { words }
    }

    /// The OS indexes of its PUs, increasing.
    pub fn pus(&self) -> Vec<usize> {
        (0..self.words.len() * WORD_BITS)
            .filter(|&p| self.words[p / WORD_BITS] & (1 << (p % WORD_BITS)) != 0)
            .collect()
    }

    /// The calling thread's affinity (`sched_getaffinity`).
    pub fn current() -> io::Result<CpuMask> {
        let mut len = 1024 / WORD_BITS;
        loop {
            let mut words: Vec<libc::c_ulong> = vec![0; len];
            let bytes = len * std::mem::size_of::<libc::c_ulong>();
            // SAFETY: the kernel writes at most `bytes` bytes into `words`,
            // which is that large.
            let r =
                unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, bytes, words.as_mut_ptr()) };
            if r >= 0 {
                return Ok(CpuMask { words });
            }
            let e = io::Error::last_os_error();
            // EINVAL: the kernel's CPU mask is larger than our buffer.
            if e.raw_os_error() != Some(libc::EINVAL) || len >= 1 << 16 {
                return Err(e);
            }
            len *= 2;
        }
    }

    /// Sets the calling thread's affinity to this mask. Async-signal-safe
    /// (one system call, no allocation), so it may run between fork and
    /// exec.
    pub fn apply(&self) -> io::Result<()> {
        let bytes = self.words.len() * std::mem::size_of::<libc::c_ulong>();
        // SAFETY: the kernel reads `bytes` bytes from `words`, which holds
        // that many.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_setaffinity, 0, bytes, self.words.as_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Parses a kernel CPU list (`0-3,8,10-11`); `None` if malformed.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pus(b: &[Binding]) -> Vec<Vec<usize>> {
        b.iter().map(|b| b.pus.clone()).collect()
    }

    #[test]
    fn default_policy_is_core_unless_oversubscribed() {
        assert_eq!(BindTo::effective(None, 2, 2), BindTo::Core);
        assert_eq!(BindTo::effective(None, 3, 2), BindTo::None);
        assert_eq!(BindTo::effective(Some(BindTo::Numa), 3, 2), BindTo::Numa);
        assert_eq!(BindTo::parse("core"), Some(BindTo::Core));
        assert_eq!(BindTo::parse("numa"), Some(BindTo::Numa));
        assert_eq!(BindTo::parse("none"), Some(BindTo::None));
        assert_eq!(BindTo::parse("socket"), None);
        assert_eq!(BindTo::parse(""), None);
    }

    #[test]
    fn cores_in_logical_order() {
        let t = Topology::synthetic(2, 2, 2, 1);
        let b = bind_node(&t, "h", None, 3).unwrap();
        assert_eq!(pus(&b), [vec![0, 4], vec![1, 5], vec![2, 6]]);
        assert_eq!(
            b[2].target,
            Target::Core {
                core: 2,
                package: Some(1)
            }
        );
        // Oversubscribed: unbound by default, an error when asked for.
        let b = bind_node(&t, "h", None, 5).unwrap();
        assert!(b
            .iter()
            .all(|b| b.target == Target::Unbound && b.mask().is_none()));
        let e = bind_node(&t, "h", Some(BindTo::Core), 5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--bind-to core: 5 ranks on h but only 4 cores (use --bind-to none or numa)"
        );
        assert!(bind_node(&t, "h", Some(BindTo::None), 2)
            .unwrap()
            .iter()
            .all(|b| b.target == Target::Unbound));
        assert!(bind_node(&t, "h", None, 0).unwrap().is_empty());
    }

    #[test]
    fn numa_nodes_follow_the_cores() {
        let t = Topology::synthetic(1, 4, 1, 2);
        let b = bind_node(&t, "h", Some(BindTo::Numa), 6).unwrap();
        assert_eq!(
            pus(&b),
            [
                vec![0, 1],
                vec![0, 1],
                vec![2, 3],
                vec![2, 3],
                vec![0, 1],
                vec![0, 1]
            ]
        );
        assert_eq!(b[2].target, Target::Numa { node: 1 });
        let mut no_numa = t.clone();
        no_numa.numa_nodes.clear();
        assert!(matches!(
            bind_node(&no_numa, "h", Some(BindTo::Numa), 1),
            Err(BindError::NoNuma { core: 0, .. })
        ));
        let mut empty = t.clone();
        empty.cores.clear();
        assert!(matches!(
            bind_node(&empty, "h", Some(BindTo::Core), 1),
            Err(BindError::NoCores { .. })
        ));
    }

    #[test]
    fn restricted_machines_bind_only_allowed_pus() {
        let t = Topology::synthetic(1, 4, 2, 1).restrict(&[2, 3, 6]);
        let b = bind_node(&t, "h", None, 2).unwrap();
        assert_eq!(pus(&b), [vec![2, 6], vec![3]]);
        let b = bind_node(&t, "h", Some(BindTo::Numa), 1).unwrap();
        assert_eq!(pus(&b), [vec![2, 3, 6]]);
    }

    #[test]
    fn report_lines() {
        let t = Topology::synthetic(2, 2, 2, 1);
        let b = bind_node(&t, "h", None, 4).unwrap();
        assert_eq!(
            b[1].report(&t, "h", 42, 1),
            "[h:42] MCW rank 1 bound to package 0 core 1 (PUs 1,5): [../BB][../..]"
        );
        let one = Topology::synthetic(1, 2, 1, 1);
        let b = bind_node(&one, "vm", None, 1).unwrap();
        assert_eq!(
            b[0].report(&one, "vm", 7, 0),
            "[vm:7] MCW rank 0 bound to package 0 core 0 (PU 0): [B/.]"
        );
        let b = bind_node(&one, "vm", Some(BindTo::Numa), 1).unwrap();
        assert_eq!(
            b[0].report(&one, "vm", 7, 3),
            "[vm:7] MCW rank 3 bound to NUMA node 0 (PUs 0-1): [B/B]"
        );
        assert_eq!(
            Binding::unbound().report(&one, "vm", 7, 2),
            "[vm:7] MCW rank 2 is not bound (or bound to all available processors)"
        );
    }

    #[test]
    fn masks() {
        let m = CpuMask::from_pus(&[0, 3, 64, 130]);
        assert_eq!(m.pus(), [0, 3, 64, 130]);
        assert_eq!(m.words.len(), 3);
        assert_eq!(CpuMask::from_pus(&[]).pus(), Vec::<usize>::new());
        let cur = CpuMask::current().unwrap();
        assert!(!cur.pus().is_empty());
    }

    #[test]
    fn applying_a_mask_in_a_thread() {
        // On a thread of its own, so the test harness keeps its affinity.
        let cur = CpuMask::current().unwrap().pus();
        let first = cur[0];
        let got = std::thread::spawn(move || {
            CpuMask::from_pus(&[first]).apply().unwrap();
            CpuMask::current().unwrap().pus()
        })
        .join()
        .unwrap();
        assert_eq!(got, [first]);
        // A mask of CPUs that do not exist is refused, not ignored.
        let bad = std::thread::spawn(|| CpuMask::from_pus(&[100_000]).apply())
            .join()
            .unwrap();
        assert!(bad.is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
    }
}
