//! Restarts: `dosrun --max-restarts K [--spares N] [--restart-np M]`.
//!
//! `main` runs the job as a sequence of attempts. Each attempt is a whole
//! run with a fresh job id and secret (so nothing left of the old run can
//! join the new one): ranks, node agents, segments and wire-up services
//! are made anew, and the previous run was ended on every host (SIGTERM,
//! SIGKILL after the grace, agents finished) before the next starts.
//!
//! * **What is restarted.** A rank killed by a signal, a rank that exited
//!   non-zero or aborted, a host lost (its node agent or its link). Not:
//!   `--timeout`, `--stall-timeout`, an interruption of dosrun, a program
//!   that cannot start, a failure of dosrun itself ([`Failure::restartable`]).
//! * **Where.** Ranks keep their numbers and hosts. A lost host is excluded
//!   for the rest of the invocation; its ranks move together to the first
//!   spare (`--spares N`: the last N hosts of `-H` or the hostfile are held
//!   back at the first run), else to one other host of the job with as many
//!   free slots (hosts of the list that got no rank count), else spread over
//!   the free slots (beyond the slots, up to `max_slots`, when the job is
//!   `--oversubscribe`d), else the job restarts on `--restart-np M` ranks on the
//!   hosts left ([`HostPool::replan`]). With none of these, dosrun gives up
//!   with the failure's status. A spare takes the lost node's place, so
//!   every node keeps its id (`DOS_NODE_ID`); ranks moved to free slots
//!   join another node, and the nodes after an emptied one shift down.
//! * **The ranks' side.** Every rank sees [`ENV_RUN_ATTEMPT`] (0, then k on
//!   the k-th restart) and [`ENV_CKPT_ID`] (one id per dosrun invocation,
//!   or dosrun's own `DOS_CKPT_ID` / `-x DOS_CKPT_ID`), which `dos::ckpt`
//!   keys its checkpoints by. After restoring, rank 0 puts the wire-up key
//!   [`KEY_RESTORED`] (one UTF-8 line naming the checkpoint) at any time
//!   after init: the wire-up service reports that put to dosrun at once,
//!   fence or not (`pmi_server::Event::Announce`, through the node agent for
//!   a remote rank).
//! * **The report.** One line per restart ([`report_line`]): the cause, the
//!   failed rank and host (and where a lost host's ranks went), the
//!   checkpoint used, and the time to recover, from the first evidence of
//!   the failure to the put of [`KEY_RESTORED`]; without that put, to the
//!   new run's first completed wire-up fence, and the checkpoint is "none
//!   reported" once [`REPORT_WAIT`] has passed after that fence or the new
//!   run has ended.
//! * **Per run.** `--timeout` and the other watches apply to each run;
//!   stdin goes to rank 0 of every run (what the first took is gone).
//!   `--fs` cannot be combined with restarts yet (a usage error): its
//!   servers live in the processes of one run (dosrun and its agents), and
//!   dosfs stripes every file over all targets without redundancy, so a
//!   lost node's target takes a part of every striped file (every L4
//!   checkpoint) with it; bringing the servers back per run is not enough.
//!   A standing file system (`dosfs up`, which outlives the runs) with
//!   `DOS_CKPT_FS=dosfs:/DIR` is the way to combine restarts and dosfs.
//! * **Exit status.** 0 only if a run completed; when the restarts are
//!   exhausted (or no host can take a lost host's ranks), the last
//!   failure's status, the same codes as without restarts.

use std::time::Duration;

use crate::hosts::{Host, HostKind};
use crate::plan::{Node, Plan, PlanError, Request};

/// The ranks' variable: 0 on the first run, k on the k-th restart.
pub const ENV_RUN_ATTEMPT: &str = "DOS_RUN_ATTEMPT";
/// The ranks' variable: the same on every attempt of one dosrun
/// invocation, new per invocation unless the user set it.
pub const ENV_CKPT_ID: &str = "DOS_CKPT_ID";
/// The wire-up key rank 0 puts after restoring: one UTF-8 line naming the
/// checkpoint used (`dos::ckpt` puts it).
pub const KEY_RESTORED: &str = dos::ckpt::RESTORED_KEY;
/// How long after the restarted run's first fence dosrun waits for
/// [`KEY_RESTORED`] before it reports "none reported".
pub const REPORT_WAIT: Duration = Duration::from_secs(10);
/// Longest checkpoint name reported.
const MAX_NAME: usize = 200;

/// Why the job cannot be placed again (or spares cannot be held back).
/// Each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestartError {
    /// `--spares N` leaves no host to run the job.
    #[error("--spares {spares}: only {hosts} host(s) given; at least one must run the job")]
    TooManySpares {
        /// `--spares`.
        spares: usize,
        /// The hosts given.
        hosts: usize,
    },
    /// No spare, no free slot, and no `--restart-np`.
    #[error("no spare host nor free slot can take ranks {ranks} of host {host} (give --spares N, more hosts or slots, or --restart-np M)")]
    NoRoom {
        /// The ranks, as a list.
        ranks: String,
        /// The lost host.
        host: String,
    },
    /// `--restart-np M` ranks do not fit the hosts left.
    #[error("--restart-np {np}: {source} (after host {host} was lost)")]
    RestartNp {
        /// `--restart-np`.
        np: usize,
        /// Why they do not fit.
        source: PlanError,
        /// The lost host.
        host: String,
    },
    /// The new placement lost or doubled a rank (a bug of dosrun).
    #[error("internal error: the new placement lost or doubled a rank")]
    Internal,
}

/// The hosts of an invocation: those the job may use, the spares, and the
/// hosts excluded after they were lost.
#[derive(Debug, Clone)]
pub struct HostPool {
    hosts: Vec<Host>,
    spares: Vec<Host>,
    excluded: Vec<String>,
}

/// The plan of the next attempt, and what moved.
#[derive(Debug, Clone)]
pub struct Replan {
    /// The placement of the next attempt.
    pub plan: Plan,
    /// Where the ranks of each lost host went (`"ranks 2, 3 of host A to
    /// host B"`), or how the job shrank.
    pub moves: Vec<String>,
}

impl HostPool {
    /// The hosts of `-H` or the hostfile, the last `spares` held back.
    pub fn new(mut list: Vec<Host>, spares: usize) -> Result<HostPool, RestartError> {
        if spares > 0 && spares >= list.len() {
            return Err(RestartError::TooManySpares {
                spares,
                hosts: list.len(),
            });
        }
        let held = list.split_off(list.len() - spares);
        Ok(HostPool {
            hosts: list,
            spares: held,
            excluded: Vec::new(),
        })
    }

    /// The hosts the job may use now (spares not included).
    pub fn active(&self) -> &[Host] {
        &self.hosts
    }

    /// The hosts excluded so far.
    #[cfg(test)]
    pub fn excluded(&self) -> &[String] {
        &self.excluded
    }

    /// The plan of the next attempt after the hosts `lost` (names) of
    /// `plan` were lost; see the module documentation for the order of
    /// choices. `req` is the job's request (for `--restart-np`).
    pub fn replan(
        &mut self,
        plan: &Plan,
        lost: &[String],
        restart_np: Option<usize>,
        req: Request,
    ) -> Result<Replan, RestartError> {
        let mut nodes: Vec<Node> = plan.nodes().to_vec();
        let mut moves = Vec::new();
        for name in lost {
            if self.excluded.contains(name) {
                continue;
            }
            self.excluded.push(name.clone());
            self.hosts.retain(|h| &h.name != name);
            self.spares.retain(|h| &h.name != name);
        }
        let mut orphans: Vec<(String, Vec<usize>)> = Vec::new();
        for n in nodes.iter_mut().filter(|n| lost.contains(&n.host)) {
            if self.spares.is_empty() {
                orphans.push((n.host.clone(), std::mem::take(&mut n.ranks)));
                continue;
            }
            let s = self.spares.remove(0);
            moves.push(format!(
                "ranks {} of host {} to spare host {}",
                list(&n.ranks),
                n.host,
                s.name
            ));
            n.host = s.name.clone();
            n.local = s.kind == HostKind::Local;
            self.hosts.push(s);
        }
        for (from, ranks) in orphans {
            let placed = self
                .free_slots(&mut nodes, &from, &ranks, false)
                .or_else(|| {
                    req.oversubscribe
                        .then(|| self.free_slots(&mut nodes, &from, &ranks, true))
                        .flatten()
                });
            match placed {
                Some(m) => moves.push(m),
                None => {
                    return match restart_np {
                        Some(m) => {
                            let req = Request {
                                np: Some(m),
                                per_node: None,
                                ..req
                            };
                            let plan = Plan::build(&self.hosts, req).map_err(|source| {
                                RestartError::RestartNp {
                                    np: m,
                                    source,
                                    host: from.clone(),
                                }
                            })?;
                            moves.push(format!(
                                "no room for the ranks of host {from}: the job restarts on {m} ranks (--restart-np)"
                            ));
                            Ok(Replan { plan, moves })
                        }
                        None => Err(RestartError::NoRoom {
                            ranks: list(&ranks),
                            host: from,
                        }),
                    };
                }
            }
        }
        // Every rank was kept, moved whole or placed in a free slot once.
        let plan = Plan::from_nodes(nodes).ok_or(RestartError::Internal)?;
        Ok(Replan { plan, moves })
    }

    /// Places `ranks` (of lost host `from`) in free slots of the hosts in
    /// use: on one host that takes them all, else spread in host order.
    /// `over`: beyond the slots, up to `max_slots` (`--oversubscribe`).
    fn free_slots(
        &self,
        nodes: &mut Vec<Node>,
        from: &str,
        ranks: &[usize],
        over: bool,
    ) -> Option<String> {
        let free: Vec<usize> = self
            .hosts
            .iter()
            .map(|h| {
                let cap = match (over, h.max_slots) {
                    (true, m) => m.unwrap_or(usize::MAX),
                    (false, m) => m.map_or(h.slots, |m| m.min(h.slots)),
                };
                let used: usize = nodes
                    .iter()
                    .filter(|n| n.host == h.name)
                    .map(|n| n.ranks.len())
                    .sum();
                cap.saturating_sub(used)
            })
            .collect();
        if free.iter().fold(0usize, |a, &f| a.saturating_add(f)) < ranks.len() {
            return None;
        }
        let mut give = |h: &Host, rs: &[usize]| match nodes.iter_mut().find(|n| n.host == h.name) {
            Some(n) => n.ranks.extend_from_slice(rs),
            None => nodes.push(Node {
                host: h.name.clone(),
                local: h.kind == HostKind::Local,
                ranks: rs.to_vec(),
            }),
        };
        if let Some(i) = free.iter().position(|&f| f >= ranks.len()) {
            give(&self.hosts[i], ranks);
            return Some(format!(
                "ranks {} of host {from} to host {}",
                list(ranks),
                self.hosts[i].name
            ));
        }
        let mut rest = ranks;
        let mut to = Vec::new();
        for (i, &f) in free.iter().enumerate() {
            if rest.is_empty() {
                break;
            }
            let take = f.min(rest.len());
            if take > 0 {
                give(&self.hosts[i], &rest[..take]);
                to.push(self.hosts[i].name.clone());
                rest = &rest[take..];
            }
        }
        Some(format!(
            "ranks {} of host {from} to hosts {}",
            list(ranks),
            to.join(", ")
        ))
    }
}

fn list(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a run ended badly, as the supervisor saw it.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// Whether a restart may cure it.
    pub restartable: bool,
    /// What happened, one line without `dosrun: ` (the stop line).
    pub what: String,
    /// The rank blamed, if a rank was.
    pub rank: Option<usize>,
    /// Its host, or the lost host.
    pub host: Option<String>,
    /// The hosts lost during the run.
    pub lost: Vec<String>,
    /// When dosrun saw the first evidence of the failure.
    pub at: Option<std::time::Instant>,
}

/// The parts of a restart's line known when the restart begins.
pub fn report_head(k: usize, max: usize, f: &Failure, moves: &[String]) -> String {
    let mut s = format!("dosrun: restart {k}/{max}: cause: {}", f.what);
    match (f.rank, &f.host) {
        (Some(r), Some(h)) => s.push_str(&format!("; failed rank {r} on host {h}")),
        (None, Some(h)) => s.push_str(&format!("; failed host {h}")),
        _ => {}
    }
    for h in &f.lost {
        s.push_str(&format!("; host {h} excluded"));
    }
    for m in moves {
        s.push_str(&format!("; {m}"));
    }
    s
}

/// The whole line: `head`, the checkpoint used (`None`: none reported) and
/// the time to recover (`None`: the new run ended before its wire-up).
pub fn report_line(head: &str, checkpoint: Option<&str>, took: Option<Duration>) -> String {
    let (cp, to) = match checkpoint {
        Some(c) => (clean(c), "to the checkpoint's restore"),
        None => ("none reported".to_string(), "to the new run's wire-up"),
    };
    match took {
        Some(t) => format!(
            "{head}; checkpoint: {cp}; recovered in {:.3} s ({to})",
            t.as_secs_f64()
        ),
        None => format!(
            "{head}; checkpoint: {cp}; not recovered (the new run ended before its wire-up)"
        ),
    }
}

/// The first line of a checkpoint name, without control characters, bounded.
fn clean(name: &str) -> String {
    let line = name.lines().next().unwrap_or("").trim();
    let mut s: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NAME)
        .collect();
    if s.is_empty() {
        s = "(empty name)".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::MapBy;

    fn host(name: &str, slots: usize) -> Host {
        Host {
            name: name.into(),
            kind: HostKind::Remote,
            slots,
            max_slots: None,
        }
    }

    fn req(np: usize) -> Request {
        Request {
            np: Some(np),
            per_node: None,
            map_by: MapBy::Slot,
            oversubscribe: false,
        }
    }

    fn hosts_of(p: &Plan) -> Vec<(String, Vec<usize>)> {
        p.nodes()
            .iter()
            .map(|n| (n.host.clone(), n.ranks.clone()))
            .collect()
    }

    #[test]
    fn spares_are_the_last_hosts_and_take_a_lost_hosts_ranks_in_place() {
        let mut pool = HostPool::new(vec![host("a", 2), host("b", 2), host("c", 2)], 1).unwrap();
        assert_eq!(pool.active().len(), 2);
        let plan = Plan::build(pool.active(), req(4)).unwrap();
        let r = pool.replan(&plan, &["a".into()], None, req(4)).unwrap();
        assert_eq!(
            hosts_of(&r.plan),
            [("c".into(), vec![0, 1]), ("b".into(), vec![2, 3])]
        );
        assert_eq!(r.moves, ["ranks 0, 1 of host a to spare host c"]);
        assert_eq!(pool.excluded(), ["a"]);
        // Survivors keep their node ids: rank 0 stays node 0.
        assert_eq!(r.plan.ranks()[2].node_id, 1);
        // No spare left, no free slot: a second loss gives up, or shrinks.
        let e = pool
            .replan(&r.plan, &["b".into()], None, req(4))
            .unwrap_err();
        assert!(matches!(e, RestartError::NoRoom { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("no spare host nor free slot can take ranks 2, 3 of host b"),
            "{e}"
        );
        let mut pool2 = pool.clone();
        let r2 = pool2
            .replan(&r.plan, &["b".into()], Some(2), req(4))
            .unwrap();
        assert_eq!(hosts_of(&r2.plan), [("c".into(), vec![0, 1])]);
    }

    #[test]
    fn free_slots_take_the_ranks_together_else_spread() {
        let mut pool = HostPool::new(vec![host("a", 2), host("b", 3), host("c", 1)], 0).unwrap();
        let plan = Plan::build(pool.active(), req(4)).unwrap();
        assert_eq!(
            hosts_of(&plan),
            [("a".into(), vec![0, 1]), ("b".into(), vec![2, 3])]
        );
        // a's 2 ranks: b has 1 free, c 1: spread.
        let r = pool.replan(&plan, &["a".into()], None, req(4)).unwrap();
        assert_eq!(
            hosts_of(&r.plan),
            [("b".into(), vec![0, 2, 3]), ("c".into(), vec![1])]
        );
        assert_eq!(r.moves, ["ranks 0, 1 of host a to hosts b, c"]);
        // A host with room for all of them is preferred.
        let mut pool = HostPool::new(vec![host("a", 2), host("b", 2), host("c", 4)], 0).unwrap();
        let plan = Plan::build(pool.active(), req(4)).unwrap();
        let r = pool.replan(&plan, &["b".into()], None, req(4)).unwrap();
        assert_eq!(
            hosts_of(&r.plan),
            [("a".into(), vec![0, 1]), ("c".into(), vec![2, 3])]
        );
    }

    #[test]
    fn oversubscribed_jobs_move_beyond_the_slots() {
        let over = Request {
            oversubscribe: true,
            ..req(4)
        };
        let mut pool = HostPool::new(vec![host("a", 2), host("b", 2)], 0).unwrap();
        let plan = Plan::build(pool.active(), over).unwrap();
        assert!(pool
            .clone()
            .replan(&plan, &["b".into()], None, req(4))
            .is_err());
        let r = pool.replan(&plan, &["b".into()], None, over).unwrap();
        assert_eq!(hosts_of(&r.plan), [("a".into(), vec![0, 1, 2, 3])]);
    }

    #[test]
    fn too_many_spares_is_an_error() {
        let e = HostPool::new(vec![host("a", 2)], 1).unwrap_err();
        assert_eq!(
            e,
            RestartError::TooManySpares {
                spares: 1,
                hosts: 1
            }
        );
        assert!(HostPool::new(vec![host("a", 2)], 0).is_ok());
    }

    #[test]
    fn report_lines() {
        let f = Failure {
            restartable: true,
            what: "rank 1 (pid 7) on host h was killed by signal 9 (SIGKILL)".into(),
            rank: Some(1),
            host: Some("h".into()),
            lost: vec![],
            at: None,
        };
        let head = report_head(1, 3, &f, &[]);
        assert_eq!(
            report_line(&head, Some("heat v4\nmore"), Some(Duration::from_millis(250))),
            "dosrun: restart 1/3: cause: rank 1 (pid 7) on host h was killed by signal 9 (SIGKILL); failed rank 1 on host h; checkpoint: heat v4; recovered in 0.250 s (to the checkpoint's restore)"
        );
        assert!(report_line(&head, None, None).ends_with(
            "checkpoint: none reported; not recovered (the new run ended before its wire-up)"
        ));
        assert!(report_line(&head, Some("a\u{1b}b"), None).contains("checkpoint: a b;"));
    }
}
