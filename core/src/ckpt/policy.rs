//! When to checkpoint (sans-IO): [`Policy`] and its decision.
//!
//! * `DOS_CKPT_INTERVAL=K`: every K-th call of `need_checkpoint`.
//! * `DOS_CKPT_SECONDS=S`: when S seconds passed since the last checkpoint.
//! * `DOS_CKPT_MTBF=M` (seconds, the job's mean time between failures):
//!   automatic, by **Young's formula**: the optimal interval of computation
//!   between checkpoints is `sqrt(2 * C * M)`, with `C` the measured cost
//!   (seconds) of the last checkpoint (the first call says yes, to measure
//!   it). Young's first-order formula is accurate when `C` is much smaller
//!   than `M`, the usual case; Daly's higher-order refinement changes the
//!   interval by less than `C`.
//!
//! When several are set, any one that is due makes the answer yes. The
//! decision is taken on rank 0 and broadcast, so every rank gets the same
//! answer.

use std::time::Duration;

/// What drives `need_checkpoint`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Policy {
    /// Every this many calls (0: off).
    pub every: u64,
    /// After this long since the last checkpoint (zero: off).
    pub period: Duration,
    /// The job's mean time between failures, for Young's formula (zero: off).
    pub mtbf: Duration,
}

/// What the decision looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Since {
    /// Calls of `need_checkpoint` since the last checkpoint (this one included).
    pub calls: u64,
    /// Time since the last checkpoint ended (or since start).
    pub elapsed: Duration,
    /// The cost of the last checkpoint, once measured.
    pub cost: Option<Duration>,
}

/// Young's optimal interval `sqrt(2 * cost * mtbf)`.
pub fn young(cost: Duration, mtbf: Duration) -> Duration {
    Duration::from_secs_f64((2.0 * cost.as_secs_f64() * mtbf.as_secs_f64()).sqrt())
}

impl Policy {
    /// Whether a checkpoint is due.
    pub fn due(&self, s: Since) -> bool {
        let by_count = self.every > 0 && s.calls >= self.every;
        let by_time = !self.period.is_zero() && s.elapsed >= self.period;
        let auto = !self.mtbf.is_zero()
            && match s.cost {
                None => true,
                Some(c) => s.elapsed >= young(c, self.mtbf),
            };
        by_count || by_time || auto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_decides() {
        let s = |calls, secs: u64, cost: Option<u64>| Since {
            calls,
            elapsed: Duration::from_secs(secs),
            cost: cost.map(Duration::from_secs),
        };
        assert!(!Policy::default().due(s(100, 100, Some(1))));
        let every = Policy {
            every: 3,
            ..Default::default()
        };
        assert!(!every.due(s(2, 0, None)) && every.due(s(3, 0, None)));
        let period = Policy {
            period: Duration::from_secs(10),
            ..Default::default()
        };
        assert!(!period.due(s(9, 9, None)) && period.due(s(1, 10, None)));
        // C = 2 s, MTBF = 3600 s: sqrt(2 * 2 * 3600) = 120 s.
        let auto = Policy {
            mtbf: Duration::from_secs(3600),
            ..Default::default()
        };
        assert_eq!(
            young(Duration::from_secs(2), Duration::from_secs(3600)),
            Duration::from_secs(120)
        );
        assert!(auto.due(s(1, 0, None)), "first call measures the cost");
        assert!(!auto.due(s(5, 119, Some(2))) && auto.due(s(5, 120, Some(2))));
    }
}
