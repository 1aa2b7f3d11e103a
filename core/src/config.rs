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
        name: "DOS_SHM_RING_BYTES",
        default: "262144",
        help: "bytes of each shared-memory ring (one per ordered pair of ranks on a node; a power of two >= 16384)",
    },
    Tunable {
        name: "DOS_SPIN",
        default: "auto",
        help: "polls of the transport before a waiting rank yields the CPU (auto: 4000, or 50 when ranks outnumber cores)",
    },
    Tunable {
        name: "DOS_YIELDS",
        default: "auto",
        help: "sched_yield calls after spinning before a waiting rank blocks in the kernel (auto: 20, or 4 when ranks outnumber cores)",
    },
    Tunable {
        name: "DOS_REDUCE_PAR_BYTES",
        default: "1048576",
        help: "local reductions of at least this many bytes run in parallel with rayon",
    },
    Tunable {
        name: "DOS_KILL_GRACE_MS",
        default: "200",
        help: "dosrun: milliseconds between SIGTERM and SIGKILL when a job is stopped",
    },
];

/// Parsed tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `DOS_EAGER_LIMIT`.
    pub eager_limit: usize,
    /// `DOS_SHM_RING_BYTES`.
    pub shm_ring_bytes: usize,
    /// `DOS_SPIN`; `None` means automatic.
    pub spin: Option<u32>,
    /// `DOS_YIELDS`; `None` means automatic.
    pub yields: Option<u32>,
    /// `DOS_REDUCE_PAR_BYTES`.
    pub reduce_par_bytes: usize,
    /// `DOS_KILL_GRACE_MS`.
    pub kill_grace_ms: u64,
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
        Ok(Config {
            eager_limit: num("DOS_EAGER_LIMIT", &raw("DOS_EAGER_LIMIT"))?,
            shm_ring_bytes,
            spin: auto("DOS_SPIN", &raw("DOS_SPIN"))?,
            yields: auto("DOS_YIELDS", &raw("DOS_YIELDS"))?,
            reduce_par_bytes: num("DOS_REDUCE_PAR_BYTES", &raw("DOS_REDUCE_PAR_BYTES"))?,
            kill_grace_ms: num("DOS_KILL_GRACE_MS", &raw("DOS_KILL_GRACE_MS"))?,
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
        assert_eq!(c.spin, None);
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let e = Config::parse(|n| (n == "DOS_EAGER_LIMIT").then(|| "lots".into()));
        assert!(matches!(e, Err(Error::Environment { var: "DOS_EAGER_LIMIT", .. })));
        let e = Config::parse(|n| (n == "DOS_SHM_RING_BYTES").then(|| "1000".into()));
        assert!(matches!(e, Err(Error::Environment { .. })));
        let c = Config::parse(|n| (n == "DOS_SPIN").then(|| "7".into())).unwrap();
        assert_eq!(c.spin, Some(7));
    }
}
