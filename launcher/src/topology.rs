//! The hardware topology of this machine: packages, NUMA nodes, cores and
//! processing units (PUs, hardware threads), read through hwloc (the
//! `hwlocality` bindings over the system libhwloc) into plain data.
//!
//! Binding (`bind`) and `dosrun --topology` work on [`Topology`] only, so
//! they are tested on made-up machines. Objects keep hwloc's logical index
//! (`L#`, dense, in topology order) and the OS index (`P#`, what the kernel
//! calls it); PUs are always named by OS index, which is what
//! `sched_setaffinity`, `taskset` and `/proc/*/status` use.

use std::fmt::Write as _;

use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;

/// A processor package (socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Logical index.
    pub index: usize,
    /// OS index, when the OS gives one.
    pub os_index: Option<usize>,
    /// OS indexes of its PUs, increasing.
    pub pus: Vec<usize>,
}

/// A NUMA node (memory domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Logical index.
    pub index: usize,
    /// OS index.
    pub os_index: Option<usize>,
    /// OS indexes of the PUs local to it, increasing (empty for memory
    /// without CPUs).
    pub pus: Vec<usize>,
    /// Bytes of memory.
    pub memory: u64,
}

/// A core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    /// Logical index.
    pub index: usize,
    /// OS index.
    pub os_index: Option<usize>,
    /// Logical index of its package.
    pub package: Option<usize>,
    /// OS indexes of its PUs, increasing.
    pub pus: Vec<usize>,
}

/// What binding and `--topology` need to know about a machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// Packages, in logical order.
    pub packages: Vec<Package>,
    /// NUMA nodes, in logical order.
    pub numa_nodes: Vec<NumaNode>,
    /// Cores, in logical order.
    pub cores: Vec<Core>,
}

/// The topology cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// hwloc failed to build the topology.
    #[error("hwloc cannot read this machine's topology: {0}")]
    Load(String),
    /// hwloc found no processing unit.
    #[error("hwloc found no processing unit on this machine")]
    NoPus,
}

fn pus_of(obj: &TopologyObject) -> Vec<usize> {
    obj.cpuset()
        .map(|s| s.iter_set().map(usize::from).collect())
        .unwrap_or_default()
}

impl Topology {
    /// Reads this machine's topology with hwloc. Only the PUs this process
    /// may run on (hwloc leaves out those its cgroup forbids) appear.
    pub fn load() -> Result<Topology, TopologyError> {
        let topo = hwlocality::Topology::new().map_err(|e| TopologyError::Load(e.to_string()))?;
        let packages: Vec<Package> = topo
            .objects_with_type(ObjectType::Package)
            .map(|o| Package {
                index: o.logical_index(),
                os_index: o.os_index(),
                pus: pus_of(o),
            })
            .collect();
        let numa_nodes = topo
            .objects_with_type(ObjectType::NUMANode)
            .map(|o| NumaNode {
                index: o.logical_index(),
                os_index: o.os_index(),
                pus: pus_of(o),
                memory: o.total_memory(),
            })
            .collect();
        let mut cores: Vec<Core> = topo
            .objects_with_type(ObjectType::Core)
            .map(|o| Core {
                index: o.logical_index(),
                os_index: o.os_index(),
                package: o
                    .first_ancestor_with_type(ObjectType::Package)
                    .map(TopologyObject::logical_index),
                pus: pus_of(o),
            })
            .filter(|c| !c.pus.is_empty())
            .collect();
        if cores.is_empty() {
            // Some platforms report no cores: then every PU is one.
            cores = topo
                .objects_with_type(ObjectType::PU)
                .enumerate()
                .map(|(i, o)| Core {
                    index: i,
                    os_index: o.os_index(),
                    package: o
                        .first_ancestor_with_type(ObjectType::Package)
                        .map(TopologyObject::logical_index),
                    pus: pus_of(o),
                })
                .collect();
        }
        let t = Topology {
            packages,
            numa_nodes,
            cores,
        };
        if t.pus().is_empty() {
            return Err(TopologyError::NoPus);
        }
        Ok(t)
    }

    /// A made-up machine: `packages` packages of `cores` cores of `threads`
    /// PUs each, with `numa_per_package` NUMA nodes splitting every
    /// package's cores evenly. PUs are numbered like Linux does on x86:
    /// first thread of every core, then the second threads.
    #[cfg(test)]
    pub fn synthetic(
        packages: usize,
        cores: usize,
        threads: usize,
        numa_per_package: usize,
    ) -> Topology {
        let ncores = packages * cores;
        let pu = |core: usize, thread: usize| thread * ncores + core;
        let mut t = Topology {
            packages: Vec::new(),
            numa_nodes: Vec::new(),
            cores: Vec::new(),
        };
        for p in 0..packages {
            let mut ppus = Vec::new();
            for c in 0..cores {
                let id = p * cores + c;
                let pus: Vec<usize> = (0..threads).map(|th| pu(id, th)).collect();
                ppus.extend(&pus);
                t.cores.push(Core {
                    index: id,
                    os_index: Some(c),
                    package: Some(p),
                    pus,
                });
            }
            ppus.sort_unstable();
            t.packages.push(Package {
                index: p,
                os_index: Some(p),
                pus: ppus,
            });
            let per = cores.div_ceil(numa_per_package.max(1));
            for n in 0..numa_per_package {
                let mut pus: Vec<usize> = (n * per..((n + 1) * per).min(cores))
                    .flat_map(|c| (0..threads).map(move |th| pu(p * cores + c, th)))
                    .collect();
                pus.sort_unstable();
                let index = t.numa_nodes.len();
                t.numa_nodes.push(NumaNode {
                    index,
                    os_index: Some(index),
                    pus,
                    memory: 1 << 30,
                });
            }
        }
        t
    }

    /// Every PU, by OS index, increasing.
    pub fn pus(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .cores
            .iter()
            .flat_map(|c| c.pus.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The part of the machine made of the PUs in `allowed` (say, dosrun's
    /// own affinity): cores without an allowed PU go, and every object keeps
    /// only its allowed PUs. Packages left without PUs go; NUMA nodes stay.
    pub fn restrict(&self, allowed: &[usize]) -> Topology {
        let keep = |pus: &[usize]| -> Vec<usize> {
            pus.iter()
                .copied()
                .filter(|p| allowed.contains(p))
                .collect()
        };
        Topology {
            packages: self
                .packages
                .iter()
                .map(|p| Package {
                    pus: keep(&p.pus),
                    ..p.clone()
                })
                .filter(|p| !p.pus.is_empty())
                .collect(),
            numa_nodes: self
                .numa_nodes
                .iter()
                .map(|n| NumaNode {
                    pus: keep(&n.pus),
                    ..n.clone()
                })
                .collect(),
            cores: self
                .cores
                .iter()
                .map(|c| Core {
                    pus: keep(&c.pus),
                    ..c.clone()
                })
                .filter(|c| !c.pus.is_empty())
                .collect(),
        }
    }

    /// The NUMA node (position in `numa_nodes`) that holds most of
    /// `core`'s PUs, if any holds one.
    pub fn numa_of(&self, core: &Core) -> Option<usize> {
        self.numa_nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (i, core.pus.iter().filter(|p| n.pus.contains(p)).count()))
            .filter(|&(_, k)| k > 0)
            .max_by_key(|&(i, k)| (k, std::cmp::Reverse(i)))
            .map(|(i, _)| i)
    }

    /// The text of `dosrun --topology`. `allowed`: the PUs dosrun may run
    /// on, shown when they are not all of them.
    pub fn render(&self, host: &str, allowed: Option<&[usize]>) -> String {
        let mut s = String::new();
        let pus = self.pus();
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let _ = writeln!(
            s,
            "Host {host}: {}, {}, {}, {}",
            plural(self.packages.len(), "package", "packages"),
            plural(self.numa_nodes.len(), "NUMA node", "NUMA nodes"),
            plural(self.cores.len(), "core", "cores"),
            plural(pus.len(), "PU", "PUs"),
        );
        let _ = writeln!(
            s,
            "(L#: hwloc's logical index; P#: the OS index; PUs are listed by OS index)"
        );
        let numa_line = |n: &NumaNode| {
            let pus = if n.pus.is_empty() {
                "no PUs".to_string()
            } else {
                format!("PUs {}", cpu_list(&n.pus))
            };
            format!(
                "NUMA node L#{} P#{}: {}, {}",
                n.index,
                idx(n.os_index),
                human_bytes(n.memory),
                pus
            )
        };
        let mut shown = vec![false; self.numa_nodes.len()];
        for p in &self.packages {
            let _ = writeln!(
                s,
                "Package L#{} P#{}: PUs {}",
                p.index,
                idx(p.os_index),
                cpu_list(&p.pus)
            );
            for (i, n) in self.numa_nodes.iter().enumerate() {
                if !shown[i] && !n.pus.is_empty() && n.pus.iter().all(|x| p.pus.contains(x)) {
                    shown[i] = true;
                    let _ = writeln!(s, "  {}", numa_line(n));
                }
            }
            for c in self.cores.iter().filter(|c| c.package == Some(p.index)) {
                let _ = writeln!(
                    s,
                    "  Core L#{} P#{}: PUs {}",
                    c.index,
                    idx(c.os_index),
                    cpu_list(&c.pus)
                );
            }
        }
        for (i, n) in self.numa_nodes.iter().enumerate() {
            if !shown[i] {
                let _ = writeln!(s, "{}", numa_line(n));
            }
        }
        let orphans: Vec<&Core> = self
            .cores
            .iter()
            .filter(|c| {
                c.package
                    .is_none_or(|p| !self.packages.iter().any(|q| q.index == p))
            })
            .collect();
        for c in orphans {
            let _ = writeln!(
                s,
                "Core L#{} P#{}: PUs {}",
                c.index,
                idx(c.os_index),
                cpu_list(&c.pus)
            );
        }
        if let Some(a) = allowed {
            let a: Vec<usize> = a.iter().copied().filter(|p| pus.contains(p)).collect();
            if a != pus {
                let _ = writeln!(s, "dosrun may run on PUs {} only", cpu_list(&a));
            }
        }
        s
    }
}

fn idx(i: Option<usize>) -> String {
    i.map_or_else(|| "?".to_string(), |i| i.to_string())
}

/// `1 GiB`, `512 MiB`, ...
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v >= 10.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A CPU list in the kernel's syntax (`0-3,8,10-11`) from increasing
/// indexes.
pub fn cpu_list(pus: &[usize]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < pus.len() {
        let mut j = i;
        while j + 1 < pus.len() && pus[j + 1] == pus[j] + 1 {
            j += 1;
        }
        if !s.is_empty() {
            s.push(',');
        }
        if j == i {
            let _ = write!(s, "{}", pus[i]);
        } else {
            let _ = write!(s, "{}-{}", pus[i], pus[j]);
        }
        i = j + 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list(&[]), "");
        assert_eq!(cpu_list(&[3]), "3");
        assert_eq!(cpu_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(cpu_list(&[0, 2, 3, 4, 7, 9, 10]), "0,2-4,7,9-10");
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(24 << 30), "24 GiB");
    }

    #[test]
    fn synthetic_machines() {
        let t = Topology::synthetic(2, 2, 2, 1);
        assert_eq!(t.pus(), (0..8).collect::<Vec<_>>());
        assert_eq!(t.cores[1].pus, [1, 5]);
        assert_eq!(t.cores[2].package, Some(1));
        assert_eq!(t.packages[1].pus, [2, 3, 6, 7]);
        assert_eq!(t.numa_nodes[1].pus, [2, 3, 6, 7]);
        assert_eq!(t.numa_of(&t.cores[3]), Some(1));
        let t = Topology::synthetic(1, 4, 1, 2);
        assert_eq!(t.numa_nodes[0].pus, [0, 1]);
        assert_eq!(t.numa_nodes[1].pus, [2, 3]);
        assert_eq!(t.numa_of(&t.cores[2]), Some(1));
    }

    #[test]
    fn restricting_to_allowed_pus() {
        let t = Topology::synthetic(2, 2, 2, 1).restrict(&[1, 5, 2]);
        assert_eq!(t.cores.len(), 2);
        assert_eq!(t.cores[0].pus, [1, 5]);
        assert_eq!(t.cores[1].pus, [2]);
        assert_eq!(t.cores[1].index, 2);
        assert_eq!(t.packages.len(), 2);
        let t = Topology::synthetic(2, 2, 1, 1).restrict(&[0, 1]);
        assert_eq!(t.packages.len(), 1);
        assert_eq!(t.numa_nodes.len(), 2);
        assert!(t.numa_nodes[1].pus.is_empty());
    }

    #[test]
    fn renders_every_object() {
        let t = Topology::synthetic(2, 2, 2, 1);
        let text = t.render("box", Some(&[0, 1, 2, 3, 4, 5, 6, 7]));
        assert!(
            text.starts_with("Host box: 2 packages, 2 NUMA nodes, 4 cores, 8 PUs\n"),
            "{text}"
        );
        assert!(text.contains("Package L#1 P#1: PUs 2-3,6-7\n"), "{text}");
        assert!(
            text.contains("  NUMA node L#0 P#0: 1.0 GiB, PUs 0-1,4-5\n"),
            "{text}"
        );
        assert!(text.contains("  Core L#3 P#1: PUs 3,7\n"), "{text}");
        assert!(!text.contains("only"));
        let text = t.render("box", Some(&[0, 4]));
        assert!(text.contains("dosrun may run on PUs 0,4 only"), "{text}");
        let one = Topology::synthetic(1, 1, 1, 1).render("x", None);
        assert!(one.starts_with("Host x: 1 package, 1 NUMA node, 1 core, 1 PU\n"));
    }

    #[test]
    fn this_machine() {
        let t = Topology::load().expect("hwloc reads this machine");
        let pus = t.pus();
        assert!(!pus.is_empty());
        assert!(!t.numa_nodes.is_empty());
        // Every core's PUs are in its package and in some NUMA node.
        for c in &t.cores {
            if let Some(p) = c
                .package
                .and_then(|p| t.packages.iter().find(|q| q.index == p))
            {
                assert!(c.pus.iter().all(|x| p.pus.contains(x)), "{c:?}");
            }
            assert!(t.numa_of(c).is_some(), "{c:?}");
        }
        // hwloc's PUs are the online CPUs the kernel reports.
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
        if !online.trim().is_empty() {
            let listed = crate::bind::parse_cpu_list(online.trim()).unwrap();
            assert!(
                pus.iter().all(|p| listed.contains(p)),
                "{pus:?} vs {listed:?}"
            );
        }
        assert!(t.render("here", None).starts_with("Host here: "));
    }
}
