//! Rate-limited logging of refused connections.
//!
//! Anyone who can reach a port of dosrun (the agents' control port over the
//! network, a node's wire-up socket on its host) can make it refuse
//! connections as fast as they can open them. Each refusal is worth a line,
//! but a flood of them must neither flood dosrun's stderr nor grow its
//! memory when stderr is not read. [`RefusalLog`] passes the first
//! [`BURST`] lines through, then only counts, and sums up what it counted
//! once every [`SUMMARY_EVERY`] ("refused N more connections ..."); after a
//! quiet period of the same length it passes lines through again. It holds
//! a count and one line (the last refusal, cut to [`MAX_LINE`] bytes),
//! whatever the flood.
//!
//! No I/O: the owner gives the time, prints what comes back and polls
//! [`RefusalLog::poll`] at [`RefusalLog::deadline`].
//!
//! [`evict`] is the other half of the defence: which authenticating
//! connection makes room when a bound is reached. Both serve
//! [`crate::acceptor::Acceptor`], the one acceptor of the wire-up sockets
//! and the control port.

use std::time::{Duration, Instant};

/// Refusals logged in full before counting starts.
pub const BURST: u32 = 10;
/// How often a summary of the counted refusals is given.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// Longest refusal line kept for a summary.
pub const MAX_LINE: usize = 200;

/// How many of the oldest connections [`evict`] reads once more before it
/// closes one unread.
pub const EVICT_PROBES: usize = 8;

/// A table of connections in authentication, as [`evict`] sees it.
pub trait Admission {
    /// The oldest connection that has sent no valid hello (`hailed`: that
    /// sent a hello but no proof), among those eviction may pick.
    fn oldest(&self, hailed: bool) -> Option<u64>;
    /// Reads once more what `id` sent and advances its handshake; `true`
    /// when it left the table (it authenticated, or closed).
    fn read_again(&mut self, id: u64) -> bool;
    /// Closes `id` and logs the refusal with `why`.
    fn refuse(&mut self, id: u64, why: &str);
}

/// Closes the oldest connection of `t` that has sent no valid hello
/// (`hailed`: that sent a hello but no proof), after reading once more
/// what the oldest few sent (a rank's or an agent's message may be waiting
/// unread, and then room is made without closing anybody); `false` if
/// there was none.
///
/// Strangers cannot crowd out the job this way: a connection of the job
/// sends its hello as soon as it connects, so the oldest silent ones are
/// the strangers'.
pub fn evict(t: &mut impl Admission, hailed: bool, why: &str) -> bool {
    for probe in 0..=EVICT_PROBES {
        let Some(id) = t.oldest(hailed) else {
            return false;
        };
        if probe < EVICT_PROBES {
            if t.read_again(id) {
                return true;
            }
            if t.oldest(hailed) != Some(id) {
                continue;
            }
        }
        let what = if hailed {
            "sent a hello but no proof"
        } else {
            "sent nothing valid"
        };
        t.refuse(id, &format!("{why} (the oldest that {what})"));
        return true;
    }
    false
}

/// Refusal lines, rate-limited (see the module documentation).
#[derive(Debug)]
pub struct RefusalLog {
    /// What is refused, for the summary ("wire-up", "control").
    what: &'static str,
    /// Lines passed through since the last quiet period.
    shown: u32,
    /// Refusals counted since the last summary.
    counted: u64,
    /// When the current counting window started.
    window: Option<Instant>,
    /// The last refusal counted.
    last: String,
    /// The last refusal of any kind.
    latest: Option<Instant>,
}

impl RefusalLog {
    /// A log of refused `what` connections.
    pub fn new(what: &'static str) -> RefusalLog {
        RefusalLog {
            what,
            shown: 0,
            counted: 0,
            window: None,
            last: String::new(),
            latest: None,
        }
    }

    /// A connection was refused at `now` with `line`: the line to print
    /// now, if any.
    pub fn note(&mut self, now: Instant, line: String) -> Option<String> {
        self.reset_if_quiet(now);
        self.latest = Some(now);
        if self.shown < BURST {
            self.shown += 1;
            let mut line = line;
            if self.shown == BURST {
                line.push_str(&format!(
                    " (further refusals are counted and summed up every {} s)",
                    SUMMARY_EVERY.as_secs()
                ));
            }
            return Some(line);
        }
        self.counted += 1;
        self.window.get_or_insert(now);
        self.last = truncate(line, MAX_LINE);
        None
    }

    /// When [`RefusalLog::poll`] has a summary to give, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.window.map(|w| w + SUMMARY_EVERY)
    }

    /// The summary line due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<String> {
        let w = self.window?;
        if now < w + SUMMARY_EVERY {
            return None;
        }
        self.flush(now)
    }

    /// The summary of what was counted so far, if anything, due or not
    /// (at the end of the job).
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        let w = self.window?;
        let secs = now.saturating_duration_since(w).as_secs_f64();
        let line = format!(
            "refused {} more {} connection{} in the last {secs:.1} s; the last: {}",
            self.counted,
            self.what,
            if self.counted == 1 { "" } else { "s" },
            self.last
        );
        self.counted = 0;
        self.window = None;
        self.last = String::new();
        Some(line)
    }

    /// After a quiet period, lines pass through again.
    fn reset_if_quiet(&mut self, now: Instant) {
        if self.window.is_none() && self.latest.is_some_and(|l| now >= l + SUMMARY_EVERY) {
            self.shown = 0;
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_a_burst_then_summaries() {
        let mut log = RefusalLog::new("wire-up");
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // 100,000 refusals over 12 s.
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_micros(i * 120);
            if let Some(l) = log.note(now, format!("refused #{i}: {}", "x".repeat(1000))) {
                lines.push(l);
            }
            if let Some(l) = log.poll(now) {
                lines.push(l);
            }
            assert!(log.last.len() <= MAX_LINE + 3);
        }
        assert_eq!(lines.len(), BURST as usize + 2, "{lines:?}");
        assert!(lines[BURST as usize - 1].contains("further refusals are counted"));
        assert!(
            lines[BURST as usize].starts_with("refused "),
            "{}",
            lines[10]
        );
        assert!(lines[BURST as usize].contains(" more wire-up connections in the last "));
        // The rest is given at the deadline.
        let end = t0 + Duration::from_secs(12);
        let d = log.deadline().unwrap();
        assert!(d > end && d <= end + SUMMARY_EVERY);
        let last = log.poll(d).unwrap();
        let counted = |l: &str| -> u64 { l.split_whitespace().nth(1).unwrap().parse().unwrap() };
        let total: u64 = lines[BURST as usize..]
            .iter()
            .chain([&last])
            .map(|l| counted(l))
            .sum();
        assert_eq!(total + u64::from(BURST), 100_000);
        assert!(log.poll(d + SUMMARY_EVERY).is_none());
        // After a quiet period, lines pass through again.
        let later = d + 2 * SUMMARY_EVERY;
        assert!(log.deadline().is_none());
        assert!(log.note(later, "again".into()).is_some());
    }

    #[test]
    fn a_few_refusals_are_all_shown() {
        let mut log = RefusalLog::new("control");
        let t0 = Instant::now();
        for i in 0..BURST {
            let l = log.note(t0, format!("r{i}")).unwrap();
            assert!(l.starts_with(&format!("r{i}")));
        }
        assert!(log.poll(t0 + SUMMARY_EVERY * 2).is_none());
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let s = truncate("é".repeat(300), MAX_LINE);
        assert!(s.len() <= MAX_LINE + 3 && s.ends_with("..."));
    }
}
