//! dosrun inside a Slurm allocation (`salloc`, `sbatch`).
//!
//! Without `-H` or `--hostfile`, dosrun run in an allocation (its
//! environment has `SLURM_JOB_ID` and `SLURM_JOB_NODELIST`) takes its hosts
//! from the allocation instead of this machine alone:
//!
//! * the hosts: `SLURM_JOB_NODELIST` (older Slurm: `SLURM_NODELIST`), in
//!   Slurm's compressed syntax (`node[01-04,07],gpu5`, see
//!   [`dos::pmi::slurm`]);
//! * each host's slots: `SLURM_TASKS_PER_NODE` (`2(x3),1`), else
//!   `SLURM_JOB_CPUS_PER_NODE`, else one per host; the list must have one
//!   count per host;
//! * `-n` defaults to the allocation's task count (the sum of the slots);
//! * node agents start through `srun` ([`SRUN_LAUNCH`]: one step of one task
//!   per host, `--kill-on-bad-exit`, no CPU binding of the agent, no PMI
//!   plug-in, `--overlap` so that the steps of several dosruns in one
//!   allocation do not wait for each other; without `--exact` a step has
//!   every CPU of the job on its node, so the agent's ranks may use them
//!   all) instead of ssh, as Open MPI and hydra do. The options are those
//!   of Slurm 22.05's srun (Debian 12's; `--whole` does not exist there);
//!   `--launch-agent` still overrides it. With `-H` or a hostfile dosrun
//!   keeps ssh, since those hosts need not belong to the allocation.
//!
//! A malformed variable is a usage error naming the variable and the
//! problem; dosrun starts nothing. `dosrun --info` says which launch
//! mechanism a job would use here ([`launch_line`]).

use crate::hosts::HostEntry;
use dos::pmi::slurm::{parse_hostlist, parse_tasks_per_node, SlurmListError};

/// The launch agent command inside an allocation; `{host}` is the host.
pub const SRUN_LAUNCH: &[&str] = &[
    "srun",
    "--nodes=1",
    "--ntasks=1",
    "--nodelist={host}",
    "--kill-on-bad-exit=1",
    "--cpu-bind=none",
    "--mpi=none",
    "--overlap",
    "--input=0",
];

/// Why the allocation's variables cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlurmError {
    /// A variable is malformed.
    #[error("{name}={value:?}: {err}")]
    Var {
        /// The variable.
        name: &'static str,
        /// Its value (cut to 200 characters).
        value: String,
        /// What is wrong.
        err: SlurmListError,
    },
    /// The counts do not match the hosts.
    #[error("{name} has {counts} counts for the {hosts} hosts of {list}")]
    Mismatch {
        /// The count variable.
        name: &'static str,
        /// Its number of counts.
        counts: usize,
        /// The host list variable.
        list: &'static str,
        /// Its number of hosts.
        hosts: usize,
    },
}

/// The hosts and slots of the allocation dosrun runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// `SLURM_JOB_ID`.
    pub job: String,
    /// The host list as Slurm gave it (for messages).
    pub nodelist: String,
    /// One entry per host, with its slots.
    pub hosts: Vec<HostEntry>,
}

impl Allocation {
    /// Reads the allocation through `lookup` (the environment); `Ok(None)`
    /// outside one.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SlurmError> {
        let Some(job) = lookup("SLURM_JOB_ID").or_else(|| lookup("SLURM_JOBID")) else {
            return Ok(None);
        };
        let Some((list_name, nodelist)) = ["SLURM_JOB_NODELIST", "SLURM_NODELIST"]
            .into_iter()
            .find_map(|n| lookup(n).map(|v| (n, v)))
        else {
            return Ok(None);
        };
        let bad = |name, value: &str, err| SlurmError::Var {
            name,
            value: value.chars().take(200).collect(),
            err,
        };
        let names = parse_hostlist(&nodelist).map_err(|e| bad(list_name, &nodelist, e))?;
        let counts = match ["SLURM_TASKS_PER_NODE", "SLURM_JOB_CPUS_PER_NODE"]
            .into_iter()
            .find_map(|n| lookup(n).map(|v| (n, v)))
        {
            Some((name, v)) => {
                let c = parse_tasks_per_node(&v).map_err(|e| bad(name, &v, e))?;
                if c.len() != names.len() {
                    return Err(SlurmError::Mismatch {
                        name,
                        counts: c.len(),
                        list: list_name,
                        hosts: names.len(),
                    });
                }
                c
            }
            None => vec![1; names.len()],
        };
        let hosts = names
            .into_iter()
            .zip(counts)
            .map(|(host, slots)| HostEntry {
                host,
                slots: slots.min(crate::plan::MAX_RANKS),
                max_slots: None,
            })
            .collect();
        Ok(Some(Allocation {
            job,
            nodelist,
            hosts,
        }))
    }

    /// Its task count: the sum of its slots.
    pub fn tasks(&self) -> usize {
        self.hosts
            .iter()
            .fold(0usize, |a, h| a.saturating_add(h.slots))
    }
}

/// The launch agent command of [`SRUN_LAUNCH`], as words.
pub fn srun_launch() -> Vec<String> {
    SRUN_LAUNCH.iter().map(|w| w.to_string()).collect()
}

/// What `dosrun --info` says of the launch mechanism, from the environment
/// `lookup`.
pub fn launch_line(lookup: impl Fn(&str) -> Option<String>) -> String {
    match Allocation::from_env(lookup) {
        Ok(None) => "Launch: ssh (-o BatchMode=yes) starts the node agents of other hosts (-H, --hostfile); not inside a Slurm allocation".into(),
        Ok(Some(a)) => format!(
            "Launch: srun starts the node agents (Slurm job {}, {} hosts {}, {} tasks: the default -n) when no -H or --hostfile is given; ssh otherwise\n        {}",
            a.job,
            a.hosts.len(),
            a.nodelist,
            a.tasks(),
            SRUN_LAUNCH.join(" ")
        ),
        Err(e) => format!("Launch: inside a Slurm allocation whose variables are malformed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |n| m.get(n).cloned()
    }

    fn slots(a: &Allocation) -> Vec<(&str, usize)> {
        a.hosts.iter().map(|h| (h.host.as_str(), h.slots)).collect()
    }

    #[test]
    fn allocation_from_the_environment() {
        assert_eq!(Allocation::from_env(env(&[])), Ok(None));
        assert_eq!(
            Allocation::from_env(env(&[("SLURM_JOB_NODELIST", "a")])),
            Ok(None),
            "a node list without a job is not an allocation"
        );
        let a = Allocation::from_env(env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_NODELIST", "node[01-03],gpu5"),
            ("SLURM_TASKS_PER_NODE", "2(x3),1"),
            ("SLURM_JOB_CPUS_PER_NODE", "8(x4)"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(a.job, "42");
        assert_eq!(
            slots(&a),
            [("node01", 2), ("node02", 2), ("node03", 2), ("gpu5", 1)]
        );
        assert_eq!(a.tasks(), 7);
        // CPUs per node when tasks are not given, one slot per host when
        // neither is; older names.
        let a = Allocation::from_env(env(&[
            ("SLURM_JOBID", "7"),
            ("SLURM_NODELIST", "n[1-2]"),
            ("SLURM_JOB_CPUS_PER_NODE", "4,3"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(slots(&a), [("n1", 4), ("n2", 3)]);
        let a = Allocation::from_env(env(&[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NODELIST", "n[1-2]"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(a.tasks(), 2);
    }

    #[test]
    fn malformed_allocations_name_the_variable() {
        let e = Allocation::from_env(env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_JOB_NODELIST", "n[1-"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().starts_with("SLURM_JOB_NODELIST=\"n[1-\": "),
            "{e}"
        );
        let e = Allocation::from_env(env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_JOB_NODELIST", "n[1-3]"),
            ("SLURM_TASKS_PER_NODE", "2(x2)"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SLURM_TASKS_PER_NODE has 2 counts for the 3 hosts of SLURM_JOB_NODELIST"
        );
        let e = Allocation::from_env(env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_JOB_NODELIST", "n1"),
            ("SLURM_TASKS_PER_NODE", "0"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("SLURM_TASKS_PER_NODE"), "{e}");
    }

    #[test]
    fn info_says_which_launch() {
        assert!(launch_line(env(&[])).starts_with("Launch: ssh"));
        let l = launch_line(env(&[
            ("SLURM_JOB_ID", "9"),
            ("SLURM_JOB_NODELIST", "h[1-3]"),
            ("SLURM_TASKS_PER_NODE", "2(x3)"),
        ]));
        assert!(l.starts_with("Launch: srun"), "{l}");
        assert!(l.contains("Slurm job 9, 3 hosts h[1-3], 6 tasks"), "{l}");
        assert!(l.contains("--kill-on-bad-exit=1 --cpu-bind=none"), "{l}");
        let l = launch_line(env(&[("SLURM_JOB_ID", "9"), ("SLURM_JOB_NODELIST", "h[")]));
        assert!(l.contains("malformed"), "{l}");
    }
}
