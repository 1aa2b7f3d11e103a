//! Results: OSU-like tables for people, JSON lines for scripts.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::sched::{Bench, Unit};

/// One message size's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Message size in bytes (0 for barrier).
    pub size: usize,
    /// Mean over ranks (point-to-point: rank 0's value).
    pub avg: f64,
    /// Smallest rank's value.
    pub min: f64,
    /// Largest rank's value.
    pub max: f64,
    /// Timed iterations.
    pub iters: usize,
}

/// One benchmark's results: one JSON line in `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Which benchmark.
    pub benchmark: Bench,
    /// `"dos"`, `"mpi"`, or `"raw"` for the raw TCP baseline.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Ranks in the job.
    pub ranks: usize,
    /// What the values are.
    pub unit: Unit,
    /// One row per message size.
    pub rows: Vec<Row>,
}

impl Outcome {
    /// The OSU-style table: a `#` header, then one line per size.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let b = self.benchmark;
        let _ = writeln!(
            s,
            "# dosbench {} ({}, {} ranks): {}",
            b.name(),
            self.implementation,
            self.ranks,
            b.describe()
        );
        if !b.pairwise() {
            let _ = writeln!(
                s,
                "# {:<10} {:>16} {:>16} {:>16} {:>10}",
                "Size", "Avg Latency(us)", "Min Latency(us)", "Max Latency(us)", "Iterations"
            );
            for r in &self.rows {
                let _ = writeln!(
                    s,
                    "{:<12} {:>16.2} {:>16.2} {:>16.2} {:>10}",
                    r.size, r.avg, r.min, r.max, r.iters
                );
            }
        } else {
            let _ = writeln!(s, "# {:<10} {:>18}", "Size", self.unit.heading());
            for r in &self.rows {
                let _ = writeln!(s, "{:<12} {:>18.2}", r.size, r.avg);
            }
        }
        s
    }

    /// One line of JSON (no trailing newline).
    pub fn json(&self) -> String {
        // Serializing plain numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Outcome {
        Outcome {
            benchmark: Bench::Latency,
            implementation: "mpi".into(),
            ranks: 2,
            unit: Unit::Micros,
            rows: vec![Row {
                size: 8,
                avg: 0.25,
                min: 0.25,
                max: 0.25,
                iters: 10,
            }],
        }
    }

    #[test]
    fn json_round_trip() {
        let o = sample();
        let j = o.json();
        assert!(j.contains(r#""benchmark":"latency""#), "{j}");
        assert!(j.contains(r#""impl":"mpi""#), "{j}");
        assert!(j.contains(r#""unit":"us""#), "{j}");
        let back: Outcome = serde_json::from_str(&j).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn table_has_osu_header() {
        let t = sample().table();
        let mut lines = t.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("# dosbench latency (mpi, 2 ranks)"));
        assert!(lines.next().unwrap().contains("Latency (us)"));
        assert!(lines.next().unwrap().starts_with("8 "));
    }

    #[test]
    fn one_sided_tables_and_json() {
        let mut o = sample();
        o.benchmark = Bench::PutBw;
        o.unit = Bench::PutBw.unit();
        let t = o.table();
        assert!(
            t.starts_with("# dosbench put_bw (mpi, 2 ranks): one-sided"),
            "{t}"
        );
        assert!(
            t.lines().nth(1).unwrap().contains("Bandwidth (MB/s)"),
            "{t}"
        );
        let j = o.json();
        assert!(j.contains(r#""benchmark":"put_bw""#), "{j}");
        assert!(j.contains(r#""unit":"MB/s""#), "{j}");
        assert_eq!(serde_json::from_str::<Outcome>(&j).unwrap(), o);
        o.benchmark = Bench::AtomicLat;
        o.unit = Bench::AtomicLat.unit();
        let t = o.table();
        assert!(t.lines().nth(1).unwrap().contains("Latency (us)"), "{t}");
    }
}
