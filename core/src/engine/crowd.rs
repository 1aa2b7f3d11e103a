//! Whether this node's CPUs are crowded: the rendezvous protocol's choice
//! under `DOS_RNDV=auto` (ARCHITECTURE.md, "Mid sizes").
//!
//! The pipelined rendezvous (16 KiB chunks through the ring, sender and
//! receiver copying at once) is the fastest way to move 32 KiB-4 MiB while
//! both ranks have a CPU; when more threads want to run than there are
//! CPUs, one of the two is often off its CPU and the other waits for it at
//! every ring's worth of chunks, while a single-copy `process_vm_readv` by
//! the receiver needs nothing from the sender. Measured on this 2-core VM,
//! load average 19-23, `dosbench bw`, GB/s of the pipeline against CMA:
//! 0.60/0.93 at 64 KiB, 0.51/0.83 at 256 KiB, 0.36/1.09 at 1 MiB.
//!
//! The signal is the kernel's one-minute load average against the online
//! CPUs, read from `/proc/loadavg` at most every [`RECHECK`] and only when a
//! rendezvous starts (never on the path of small messages).

use std::cell::Cell;
use std::io::Read;
use std::time::{Duration, Instant};

/// How long one reading of the load average is trusted.
pub(crate) const RECHECK: Duration = Duration::from_millis(100);

/// The load average's first field (runnable threads averaged over a
/// minute), or `None` if `text` is not in `/proc/loadavg`'s format.
pub(crate) fn load1(text: &[u8]) -> Option<f64> {
    let first = text.split(|&b| b == b' ').next()?;
    std::str::from_utf8(first).ok()?.trim().parse().ok()
}

/// True if a load of `load` runnable threads crowds `cpus` CPUs.
pub(crate) fn crowded_by(load: f64, cpus: usize) -> bool {
    load > cpus as f64
}

/// A cached reading of the node's crowding.
#[derive(Debug)]
pub(crate) struct Crowding {
    cpus: usize,
    at: Cell<Option<Instant>>,
    crowded: Cell<bool>,
}

impl Crowding {
    pub(crate) fn new(cpus: usize) -> Crowding {
        Crowding {
            cpus,
            at: Cell::new(None),
            crowded: Cell::new(false),
        }
    }

    /// Whether the node is crowded (re-read at most every [`RECHECK`]; an
    /// unreadable `/proc/loadavg` counts as not crowded).
    #[cold]
    pub(crate) fn crowded(&self) -> bool {
        let now = Instant::now();
        if self
            .at
            .get()
            .is_some_and(|t| now.duration_since(t) < RECHECK)
        {
            return self.crowded.get();
        }
        let mut buf = [0u8; 128];
        let load = std::fs::File::open("/proc/loadavg")
            .and_then(|mut f| f.read(&mut buf))
            .ok()
            .and_then(|n| load1(&buf[..n]));
        let c = load.is_some_and(|l| crowded_by(l, self.cpus));
        self.at.set(Some(now));
        self.crowded.set(c);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_field_of_loadavg() {
        assert_eq!(load1(b"19.13 19.60 17.87 3/512 12345\n"), Some(19.13));
        assert_eq!(load1(b"0.00 0.01 0.05 1/100 7"), Some(0.0));
        assert_eq!(load1(b""), None);
        assert_eq!(load1(b"x 1 2"), None);
        assert_eq!(load1(&[0xff, b' ', b'1']), None);
    }

    #[test]
    fn crowded_above_one_thread_per_cpu() {
        assert!(!crowded_by(1.9, 2));
        assert!(!crowded_by(2.0, 2));
        assert!(crowded_by(2.1, 2));
        assert!(crowded_by(19.0, 2));
    }

    #[test]
    fn this_machine_gives_an_answer_and_caches_it() {
        let c = Crowding::new(1);
        let a = c.crowded();
        assert!(c.at.get().is_some());
        assert_eq!(c.crowded(), a);
    }
}
