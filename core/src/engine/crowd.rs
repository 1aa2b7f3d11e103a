//! How crowded this node's CPUs are: the one signal behind both waiting
//! (`DOS_SPIN_US`/`DOS_YIELD_US` under `auto`) and the rendezvous protocol
//! (`DOS_RNDV=auto`); ARCHITECTURE.md, "Mid sizes" and "Waiting".
//!
//! Three levels ([`Crowd`]):
//! * **Oversubscribed**: this job alone puts more ranks on the node than it
//!   has CPUs. Known at start-up and never changes.
//! * **Crowded**: other work (other jobs, dosfs servers, builds) wants the
//!   CPUs too: both the one-minute load average *and* the number of
//!   runnable threads right now (`/proc/loadavg`'s fourth field, which
//!   counts the reader) exceed the CPUs. The load average alone lags a
//!   minute behind a machine that has gone quiet; the instantaneous count
//!   alone flickers with every wake-up. Re-read at most every [`RECHECK`].
//! * **Free**: neither.
//!
//! What each level means ([`Policy`]): while the ranks have CPUs to
//! themselves a waiter polls for a millisecond (a message 0.2 us away should
//! not pay a wake-up), then yields for 50 us before it sleeps, and large
//! messages take the pipelined rendezvous (16 KiB chunks through the ring,
//! sender and receiver copying at once). When other work crowds the CPUs, a
//! waiter still polls for a millisecond (a rank that sleeps then waits
//! behind the others for a CPU once woken) but yields for 500 us before it
//! sleeps, and large messages take the receiver's single copy
//! (`process_vm_readv`), which needs nothing from the sender, whereas the
//! pipeline stalls at every ring's worth of chunks while one of the two is
//! off its CPU. When this job's own ranks outnumber the CPUs, the rank we
//! wait for may be the one that needs our CPU: a waiter hands it over at once
//! (no spinning, `sched_yield` for 500 us). Measured on this 2-core VM, load
//! average 19-23, `dosbench bw`, GB/s of the pipeline against CMA:
//! 0.60/0.93 at 64 KiB, 0.51/0.83 at 256 KiB, 0.36/1.09 at 1 MiB.
//!
//! Below `DOS_RNDV_CMA_MAX` (64 KiB) a rendezvous takes the single copy at
//! every level under `auto`: there one system call of the receiver beats
//! the pipeline's round trips of chunks even when both ranks have a CPU
//! (ARCHITECTURE.md, "Mid sizes", session 11).
//!
//! The file is read only when a rendezvous starts or a wait has been idle
//! for [`super::wait::POLLS_PER_CLOCK`] polls, never on the path of a small
//! message that arrives in time.

use std::cell::Cell;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::config::RndvMode;

/// How long one reading of `/proc/loadavg` is trusted.
pub(crate) const RECHECK: Duration = Duration::from_millis(100);

/// How crowded the node's CPUs are; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crowd {
    /// The job's ranks have the CPUs to themselves.
    Free,
    /// Other work competes for the CPUs.
    Crowded,
    /// The job has more ranks on the node than it has CPUs.
    Oversubscribed,
}

/// One reading of `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Loadavg {
    /// Runnable threads averaged over the last minute.
    pub(crate) load1: f64,
    /// Runnable threads now (including the reader).
    pub(crate) runnable: u32,
}

/// Parses `/proc/loadavg` ("19.13 19.60 17.87 3/512 12345"), or `None` if
/// `text` is not in that format.
pub(crate) fn parse(text: &[u8]) -> Option<Loadavg> {
    let text = std::str::from_utf8(text).ok()?;
    let mut f = text.split_ascii_whitespace();
    let load1 = f.next()?.parse().ok()?;
    let runnable = f.nth(2)?.split('/').next()?.parse().ok()?;
    Some(Loadavg { load1, runnable })
}

/// The level for `local_ranks` ranks of this job on a node of `cpus` CPUs
/// whose load was last read as `load` (`None`: unreadable, counts as free).
pub(crate) fn judge(local_ranks: usize, cpus: usize, load: Option<Loadavg>) -> Crowd {
    if local_ranks > cpus {
        return Crowd::Oversubscribed;
    }
    match load {
        Some(l) if l.load1 > cpus as f64 && l.runnable as usize > cpus => Crowd::Crowded,
        _ => Crowd::Free,
    }
}

/// What a level means for waiting and for large messages; explicit settings
/// (`DOS_SPIN_US`, `DOS_YIELD_US`, `DOS_RNDV` other than `auto`) win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// How long a waiter polls before yielding.
    pub(crate) spin: Duration,
    /// How long it then polls with `sched_yield` in between, before blocking.
    pub(crate) yield_for: Duration,
    /// The rendezvous protocol between ranks of this node (never `Auto`)
    /// for messages above `cma_max`.
    pub(crate) rndv: RndvMode,
    /// Rendezvous messages up to this many bytes take CMA whatever `rndv`
    /// (`DOS_RNDV_CMA_MAX` under `auto`; 0 otherwise).
    pub(crate) cma_max: usize,
}

impl Policy {
    /// The rendezvous protocol for a message of `len` bytes from a rank of
    /// this node.
    #[inline]
    pub(crate) fn rndv_for(&self, len: usize) -> RndvMode {
        if len <= self.cma_max {
            RndvMode::Cma
        } else {
            self.rndv
        }
    }
}

/// Explicit settings for [`policy`]: `None` and `Auto` leave the choice to
/// the level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) spin_us: Option<u32>,
    pub(crate) yield_us: Option<u32>,
    pub(crate) rndv: RndvMode,
    /// `DOS_RNDV_CMA_MAX` (used under `Auto` only).
    pub(crate) cma_max: usize,
}

/// The policy of level `crowd` under the settings `set`.
pub(crate) fn policy(crowd: Crowd, set: Settings) -> Policy {
    let Settings {
        spin_us,
        yield_us,
        rndv,
        cma_max,
    } = set;
    let (spin, yield_for, auto_rndv) = match crowd {
        Crowd::Free => (1000, 50, RndvMode::Pipeline),
        // Still spin the full millisecond: a rank that blocks on a crowded
        // node waits behind others for a CPU once woken (8-byte allreduce,
        // 2 ranks, load 14: spinning 50 us made the median 15 us in one run
        // of five, 0.25 in another of seven, against 0.20-0.22 with 1000).
        // But yield longer before sleeping: the other work gets the CPU
        // while the rank still needs no wake-up.
        Crowd::Crowded => (1000, 500, RndvMode::Cma),
        Crowd::Oversubscribed => (0, 500, RndvMode::Cma),
    };
    let us = |v: u32| Duration::from_micros(v as u64);
    Policy {
        spin: us(spin_us.unwrap_or(spin)),
        yield_for: us(yield_us.unwrap_or(yield_for)),
        rndv: match rndv {
            RndvMode::Auto => auto_rndv,
            m => m,
        },
        cma_max: match rndv {
            RndvMode::Auto => cma_max,
            _ => 0,
        },
    }
}

/// The node's crowding as this rank last read it, with the policy of each
/// level precomputed.
#[derive(Debug)]
pub(crate) struct Crowding {
    local_ranks: usize,
    cpus: usize,
    policies: [Policy; 3],
    at: Cell<Option<Instant>>,
    level: Cell<Crowd>,
}

impl Crowding {
    /// For `local_ranks` ranks of this job on `cpus` CPUs, with the settings
    /// `set`.
    pub(crate) fn new(local_ranks: usize, cpus: usize, set: Settings) -> Crowding {
        let p = |c| policy(c, set);
        let first = judge(local_ranks, cpus, None);
        Crowding {
            local_ranks,
            cpus,
            policies: [p(Crowd::Free), p(Crowd::Crowded), p(Crowd::Oversubscribed)],
            at: Cell::new(None),
            level: Cell::new(first),
        }
    }

    /// The policy of the level last read (no reading).
    #[inline]
    pub(crate) fn current(&self) -> &Policy {
        &self.policies[self.level.get() as usize]
    }

    /// The policy in force at `now`, reading `/proc/loadavg` again if the
    /// last reading is older than [`RECHECK`].
    #[inline]
    pub(crate) fn at(&self, now: Instant) -> &Policy {
        if self
            .at
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < RECHECK)
        {
            return self.current();
        }
        self.reread(now)
    }

    /// The policy in force now (see [`Crowding::at`]).
    pub(crate) fn now(&self) -> &Policy {
        self.at(Instant::now())
    }

    #[cold]
    fn reread(&self, now: Instant) -> &Policy {
        let level = if self.local_ranks > self.cpus {
            Crowd::Oversubscribed
        } else {
            let mut buf = [0u8; 128];
            let load = std::fs::File::open("/proc/loadavg")
                .and_then(|mut f| f.read(&mut buf))
                .ok()
                .and_then(|n| parse(&buf[..n]));
            judge(self.local_ranks, self.cpus, load)
        };
        self.at.set(Some(now));
        self.level.set(level);
        self.current()
    }

    /// The level last read.
    #[cfg(test)]
    pub(crate) fn level(&self) -> Crowd {
        self.level.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(load1: f64, runnable: u32) -> Option<Loadavg> {
        Some(Loadavg { load1, runnable })
    }

    #[test]
    fn parses_loadavg() {
        assert_eq!(parse(b"19.13 19.60 17.87 3/512 12345\n"), l(19.13, 3));
        assert_eq!(parse(b"0.00 0.01 0.05 1/100 7"), l(0.0, 1));
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"x 1 2 3/4 5"), None);
        assert_eq!(parse(b"1.0 1 2"), None);
        assert_eq!(parse(b"1.0 1 2 x/4 5"), None);
        assert_eq!(parse(&[0xff, b' ', b'1']), None);
    }

    #[test]
    fn more_ranks_than_cpus_is_oversubscribed_whatever_the_load() {
        assert_eq!(judge(4, 2, None), Crowd::Oversubscribed);
        assert_eq!(judge(4, 2, l(0.0, 1)), Crowd::Oversubscribed);
        assert_eq!(judge(3, 2, l(30.0, 30)), Crowd::Oversubscribed);
    }

    #[test]
    fn crowded_needs_both_the_average_and_the_runnable_count_above_the_cpus() {
        assert_eq!(judge(2, 2, l(1.9, 9)), Crowd::Free);
        assert_eq!(judge(2, 2, l(2.0, 3)), Crowd::Free);
        // A machine gone quiet: the average still remembers the last minute.
        assert_eq!(judge(2, 2, l(15.0, 2)), Crowd::Free);
        assert_eq!(judge(2, 2, l(2.1, 3)), Crowd::Crowded);
        assert_eq!(judge(1, 2, l(19.0, 12)), Crowd::Crowded);
        // Unreadable: free.
        assert_eq!(judge(2, 2, None), Crowd::Free);
    }

    fn auto() -> Settings {
        set(None, None, RndvMode::Auto)
    }

    fn set(spin_us: Option<u32>, yield_us: Option<u32>, rndv: RndvMode) -> Settings {
        Settings {
            spin_us,
            yield_us,
            rndv,
            cma_max: 65536,
        }
    }

    #[test]
    fn each_level_has_its_policy_and_explicit_settings_win() {
        let ms = Duration::from_micros;
        let free = policy(Crowd::Free, auto());
        assert_eq!((free.spin, free.yield_for), (ms(1000), ms(50)));
        assert_eq!(free.rndv, RndvMode::Pipeline);
        let crowded = policy(Crowd::Crowded, auto());
        assert_eq!((crowded.spin, crowded.yield_for), (ms(1000), ms(500)));
        assert_eq!(crowded.rndv, RndvMode::Cma);
        let over = policy(Crowd::Oversubscribed, auto());
        assert_eq!((over.spin, over.yield_for), (ms(0), ms(500)));
        assert_eq!(over.rndv, RndvMode::Cma);
        let given = policy(
            Crowd::Oversubscribed,
            set(Some(7), Some(9), RndvMode::Pipeline),
        );
        assert_eq!((given.spin, given.yield_for), (ms(7), ms(9)));
        assert_eq!(given.rndv, RndvMode::Pipeline);
        assert_eq!(given.rndv_for(1000), RndvMode::Pipeline);
        let cma = policy(Crowd::Free, set(None, None, RndvMode::Cma));
        assert_eq!(cma.rndv_for(1 << 30), RndvMode::Cma);
    }

    #[test]
    fn a_free_node_copies_once_up_to_cma_max_and_pipelines_above() {
        let free = policy(Crowd::Free, auto());
        assert_eq!(free.rndv_for(16384), RndvMode::Cma);
        assert_eq!(free.rndv_for(65536), RndvMode::Cma);
        assert_eq!(free.rndv_for(65537), RndvMode::Pipeline);
        let crowded = policy(Crowd::Crowded, auto());
        assert_eq!(crowded.rndv_for(1 << 30), RndvMode::Cma);
        let none = policy(
            Crowd::Free,
            Settings {
                cma_max: 0,
                ..auto()
            },
        );
        assert_eq!(none.rndv_for(16384), RndvMode::Pipeline);
    }

    #[test]
    fn the_cached_level_is_used_until_recheck() {
        let c = Crowding::new(1, 2, auto());
        assert_eq!(c.level(), Crowd::Free);
        let t = Instant::now();
        c.at(t);
        assert_eq!(c.at.get(), Some(t));
        // Within RECHECK nothing is read again.
        c.level.set(Crowd::Crowded);
        assert_eq!(c.at(t + RECHECK / 2).rndv, RndvMode::Cma);
        assert_eq!(c.at.get(), Some(t));
        // After it, the file is read again (this machine answers something).
        c.at(t + RECHECK);
        assert_eq!(c.at.get(), Some(t + RECHECK));
    }

    #[test]
    fn an_oversubscribed_job_never_reads_the_file_into_another_level() {
        let c = Crowding::new(4, 2, auto());
        assert_eq!(c.level(), Crowd::Oversubscribed);
        assert_eq!(c.now().spin, Duration::ZERO);
        assert_eq!(c.level(), Crowd::Oversubscribed);
    }
}
