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

/// The topology cache: hwloc reads some 140 files of /sys and loads its
/// plugins, a few milliseconds of CPU (tens of wall milliseconds on a busy
/// machine), which was most of a small job's start-up. The first job on a
/// machine stores what [`Topology::load`] found in a small text file; later
/// jobs read it back if the machine still looks the same.
///
/// "The same" is a [`cache::fingerprint`]: the boot (`boot_id`), the online and
/// present CPUs and NUMA nodes, the CPUs and memory nodes this process may
/// use and its cgroup, every `HWLOC_*` variable, and dosrun's version and
/// the file format. Any difference is a miss: hwloc loads the topology and
/// the file is rewritten. A file that cannot be read, parsed, or that is not
/// the user's own (or is writable by others) is a miss too, never an error.
/// One thing the key does not see is a new libhwloc installed without a
/// reboot; `DOS_TOPOLOGY_CACHE=off` (or removing the directory) covers it.
///
/// Where: `DOS_TOPOLOGY_CACHE` (`auto`: `$XDG_RUNTIME_DIR/dos`, else
/// `/tmp/dos-<uid>`; `off`; or a directory), one file per fingerprint named
/// by its hash, written to a temporary name and renamed into place so
/// concurrent jobs never read half a file.
pub mod cache {
    use std::ffi::OsString;
    use std::fmt::Write as _;
    use std::fs;
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    use std::path::{Path, PathBuf};

    use super::{Core, NumaNode, Package, Topology, TopologyError};

    /// First line of a cache file; bump when the format changes.
    const MAGIC: &str = "dos-topology-cache 1";

    /// Where the cache lives, from `DOS_TOPOLOGY_CACHE`: `None` when it is
    /// `off` or no directory can be named.
    pub fn dir(setting: &str) -> Option<PathBuf> {
        match setting {
            "off" => None,
            "auto" | "" => {
                let uid = crate::sys::euid();
                match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
                    Some(d) => Some(Path::new(&d).join("dos")),
                    None => Some(std::env::temp_dir().join(format!("dos-{uid}"))),
                }
            }
            d => Some(PathBuf::from(d)),
        }
    }

    /// What a cached topology must have been read under: see the module
    /// docs. `env` is the process environment (only `HWLOC_*` counts).
    pub fn fingerprint(env: impl Iterator<Item = (OsString, OsString)>) -> String {
        let mut k = String::new();
        let _ = writeln!(k, "{MAGIC} dosrun {}", env!("CARGO_PKG_VERSION"));
        for f in [
            "/proc/sys/kernel/random/boot_id",
            "/sys/devices/system/cpu/online",
            "/sys/devices/system/cpu/present",
            "/sys/devices/system/node/online",
            "/proc/self/cgroup",
        ] {
            let v = fs::read_to_string(f).unwrap_or_default();
            let _ = writeln!(k, "{f}: {}", v.trim().replace('\n', " | "));
        }
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        for l in status
            .lines()
            .filter(|l| l.starts_with("Cpus_allowed_list:") || l.starts_with("Mems_allowed_list:"))
        {
            let _ = writeln!(k, "{}", l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        let mut hw: Vec<String> = env
            .filter(|(n, _)| n.to_string_lossy().starts_with("HWLOC_"))
            .map(|(n, v)| format!("{}={}", n.to_string_lossy(), v.to_string_lossy()))
            .collect();
        hw.sort();
        for v in hw {
            let _ = writeln!(k, "env {v}");
        }
        k
    }

    /// FNV-1a, 64 bits: names the file of a fingerprint (the file holds the
    /// whole fingerprint, which is what is compared).
    fn hash(s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The file of `key` in `dir`.
    pub fn path(dir: &Path, key: &str) -> PathBuf {
        dir.join(format!("topology-{:016x}", hash(key)))
    }

    /// The topology: from the cache in `dir` when it holds one for `key`,
    /// else from `load`, then stored there for the next job. Problems with
    /// the cache are misses; only `load`'s error is returned.
    pub fn load_or(
        dir: Option<&Path>,
        key: &str,
        load: impl FnOnce() -> Result<Topology, TopologyError>,
    ) -> Result<Topology, TopologyError> {
        let Some(dir) = dir else {
            return load();
        };
        let file = path(dir, key);
        if let Some(t) = read(&file).and_then(|text| decode(&text, key)) {
            return Ok(t);
        }
        let t = load()?;
        // Not written (a read-only or foreign directory): the next job
        // loads with hwloc again, which is all a cache failure costs.
        let _ = store(dir, &file, &encode(&t, key));
        Ok(t)
    }

    /// The file's text, if it is ours and no one else may write it.
    fn read(file: &Path) -> Option<String> {
        let f = fs::File::open(file).ok()?;
        let m = f.metadata().ok()?;
        if !m.is_file() || m.uid() != crate::sys::euid() || m.mode() & 0o022 != 0 {
            return None;
        }
        std::io::read_to_string(f).ok()
    }

    fn store(dir: &Path, file: &Path, text: &str) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let m = fs::metadata(dir)?;
        if m.uid() != crate::sys::euid() || m.mode() & 0o022 != 0 {
            return Err(std::io::Error::other("directory not private to this user"));
        }
        let tmp = dir.join(format!(
            ".topology-{}-{:x}",
            std::process::id(),
            crate::sys::random_u64().unwrap_or(0)
        ));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let r = f
            .write_all(text.as_bytes())
            .and_then(|()| fs::rename(&tmp, file));
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r
    }

    fn opt(v: Option<usize>) -> String {
        v.map_or_else(|| "-".to_string(), |v| v.to_string())
    }

    fn list(pus: &[usize]) -> String {
        if pus.is_empty() {
            "-".to_string()
        } else {
            super::cpu_list(pus)
        }
    }

    /// The cache file's text: the magic line, the fingerprint's length and
    /// text, then one line per object (`P`ackage, `N`UMA node, `C`ore) of
    /// numbers, with `-` for none.
    pub fn encode(t: &Topology, key: &str) -> String {
        let mut s = format!("{MAGIC}\n{}\n{key}", key.len());
        for p in &t.packages {
            let _ = writeln!(s, "P {} {} {}", p.index, opt(p.os_index), list(&p.pus));
        }
        for n in &t.numa_nodes {
            let _ = writeln!(
                s,
                "N {} {} {} {}",
                n.index,
                opt(n.os_index),
                n.memory,
                list(&n.pus)
            );
        }
        for c in &t.cores {
            let _ = writeln!(
                s,
                "C {} {} {} {}",
                c.index,
                opt(c.os_index),
                opt(c.package),
                list(&c.pus)
            );
        }
        s.push_str("end\n");
        s
    }

    /// The topology `text` holds if it was stored under `key` and is whole.
    pub fn decode(text: &str, key: &str) -> Option<Topology> {
        let rest = text.strip_prefix(MAGIC)?.strip_prefix('\n')?;
        let (len, rest) = rest.split_once('\n')?;
        let len: usize = len.parse().ok()?;
        if rest.get(..len)? != key {
            return None;
        }
        let mut t = Topology::default();
        let mut ended = false;
        for line in rest[len..].lines() {
            if ended {
                return None;
            }
            let f: Vec<&str> = line.split(' ').collect();
            let num = |s: &str| s.parse::<usize>().ok();
            let opt = |s: &str| {
                if s == "-" {
                    Some(None)
                } else {
                    num(s).map(Some)
                }
            };
            let pus = |s: &str| {
                if s == "-" {
                    Some(Vec::new())
                } else {
                    crate::bind::parse_cpu_list(s)
                }
            };
            match f.as_slice() {
                ["P", i, os, p] => t.packages.push(Package {
                    index: num(i)?,
                    os_index: opt(os)?,
                    pus: pus(p)?,
                }),
                ["N", i, os, mem, p] => t.numa_nodes.push(NumaNode {
                    index: num(i)?,
                    os_index: opt(os)?,
                    memory: mem.parse().ok()?,
                    pus: pus(p)?,
                }),
                ["C", i, os, pkg, p] => t.cores.push(Core {
                    index: num(i)?,
                    os_index: opt(os)?,
                    package: opt(pkg)?,
                    pus: pus(p)?,
                }),
                ["end"] => ended = true,
                _ => return None,
            }
        }
        (ended && !t.pus().is_empty()).then_some(t)
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

    /// A fresh private directory for one cache test.
    fn cache_dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("dos-topocache-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn cache_text_round_trips() {
        for t in [
            Topology::synthetic(2, 2, 2, 1),
            Topology::synthetic(1, 4, 1, 2),
            Topology::synthetic(2, 2, 1, 1).restrict(&[0, 1]),
        ] {
            let text = cache::encode(&t, "key\nwith lines\n");
            assert_eq!(cache::decode(&text, "key\nwith lines\n"), Some(t.clone()));
            // Another key, a cut file, a bad line: misses, not errors.
            assert_eq!(cache::decode(&text, "key\nwith lines\nmore\n"), None);
            assert_eq!(
                cache::decode(&text[..text.len() - 4], "key\nwith lines\n"),
                None
            );
            let bad = text.replacen("C 0", "C x", 1);
            assert_eq!(cache::decode(&bad, "key\nwith lines\n"), None);
            assert_eq!(cache::decode("", "k"), None);
            assert_eq!(cache::decode("dos-topology-cache 1\n999\nk", "k"), None);
        }
        let mut unknown = Topology::synthetic(1, 2, 1, 1);
        unknown.cores[1].package = None;
        unknown.packages[0].os_index = None;
        let text = cache::encode(&unknown, "k\n");
        assert_eq!(cache::decode(&text, "k\n"), Some(unknown));
    }

    #[test]
    fn cache_hits_only_for_the_same_fingerprint() {
        let dir = cache_dir("hits");
        let loads = std::cell::Cell::new(0);
        let machine = |t: Topology| {
            let loads = &loads;
            move || {
                loads.set(loads.get() + 1);
                Ok(t)
            }
        };
        let a = Topology::synthetic(1, 2, 1, 1);
        let b = Topology::synthetic(2, 2, 2, 1);
        // First job: hwloc, then stored.
        let got = cache::load_or(Some(&dir), "machine A\n", machine(a.clone())).unwrap();
        assert_eq!((got, loads.get()), (a.clone(), 1));
        // Same fingerprint: from the file, hwloc not called.
        let got = cache::load_or(Some(&dir), "machine A\n", machine(b.clone())).unwrap();
        assert_eq!((got, loads.get()), (a.clone(), 1));
        // Anything in the fingerprint differs: hwloc again.
        let got =
            cache::load_or(Some(&dir), "machine A, CPU 1 offline\n", machine(b.clone())).unwrap();
        assert_eq!((got, loads.get()), (b.clone(), 2));
        // A damaged file is a miss and is rewritten.
        let file = cache::path(&dir, "machine A\n");
        std::fs::write(&file, "dos-topology-cache 1\ngarbage").unwrap();
        let got = cache::load_or(Some(&dir), "machine A\n", machine(b.clone())).unwrap();
        assert_eq!((got, loads.get()), (b.clone(), 3));
        let got = cache::load_or(Some(&dir), "machine A\n", machine(a.clone())).unwrap();
        assert_eq!((got, loads.get()), (b.clone(), 3));
        // A file others may write is not trusted.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let got = cache::load_or(Some(&dir), "machine A\n", machine(a.clone())).unwrap();
        assert_eq!((got, loads.get()), (a.clone(), 4));
        // Off: hwloc every time, nothing written.
        let off = cache_dir("off");
        cache::load_or(None, "machine A\n", machine(a.clone())).unwrap();
        cache::load_or(None, "machine A\n", machine(a.clone())).unwrap();
        assert_eq!(loads.get(), 6);
        assert!(!off.exists());
        // hwloc's error comes through; the cache's own problems never do.
        let err = cache::load_or(Some(&dir), "machine C\n", || Err(TopologyError::NoPus));
        assert!(matches!(err, Err(TopologyError::NoPus)));
        let unwritable = std::path::Path::new("/proc/no-such-dir/cache");
        let got = cache::load_or(Some(unwritable), "k\n", machine(a.clone())).unwrap();
        assert_eq!(got, a);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fingerprint_sees_hwloc_variables_and_the_machine() {
        let plain = cache::fingerprint(std::iter::empty());
        let same = cache::fingerprint([("PATH".into(), "/bin".into())].into_iter());
        assert_eq!(plain, same);
        let hw =
            cache::fingerprint([("HWLOC_XMLFILE".into(), "/tmp/other.xml".into())].into_iter());
        assert_ne!(plain, hw);
        assert!(plain.contains("Cpus_allowed_list:"), "{plain}");
        assert!(
            plain.contains("/sys/devices/system/cpu/online: "),
            "{plain}"
        );
        assert!(
            cache::path(std::path::Path::new("/d"), &plain)
                != cache::path(std::path::Path::new("/d"), &hw)
        );
    }

    #[test]
    fn cache_directory_setting() {
        assert_eq!(cache::dir("off"), None);
        assert_eq!(cache::dir("/x/y"), Some("/x/y".into()));
        let auto = cache::dir("auto").unwrap();
        assert!(
            auto.ends_with("dos")
                || auto
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("dos-")
        );
    }

    #[test]
    fn this_machine_through_the_cache() {
        let dir = cache_dir("real");
        let key = cache::fingerprint(std::env::vars_os());
        let fresh = cache::load_or(Some(&dir), &key, Topology::load).unwrap();
        let cached = cache::load_or(Some(&dir), &key, || Err(TopologyError::NoPus)).unwrap();
        assert_eq!(fresh, cached);
        let _ = std::fs::remove_dir_all(&dir);
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
