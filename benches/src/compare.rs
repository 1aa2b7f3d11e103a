//! dos against MPI: medians over repeated runs and their ratio, as a markdown table.
//!
//! Input is the `--json` output of both builds (one JSON object per line,
//! any number of runs per file). For every benchmark, rank count and message
//! size, the median over runs of each implementation's value is taken, and
//! `dos/mpi` is their ratio: below 1 is better for dos on latencies, above 1
//! on bandwidths.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::report::Outcome;
use crate::sched::{Bench, Unit};
use crate::stats::{median, ratio};
use crate::{Error, Result};

/// Within this relative difference the two count as even.
pub const EVEN: f64 = 0.05;

/// One line of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    /// Benchmark.
    pub bench: Bench,
    /// Ranks in the job.
    pub ranks: usize,
    /// Message size in bytes.
    pub size: usize,
    /// What the values are.
    pub unit: Unit,
    /// Median of dos's values, if dos ran.
    pub dos: Option<f64>,
    /// Median of MPI's values, if MPI ran.
    pub mpi: Option<f64>,
    /// Runs behind each median (dos, MPI).
    pub runs: (usize, usize),
}

impl Compared {
    /// `dos / mpi`.
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.dos?, self.mpi?)
    }

    /// Who is ahead, allowing [`EVEN`] either way.
    pub fn verdict(&self) -> &'static str {
        let Some(r) = self.ratio() else {
            return "n/a";
        };
        let dos_ahead = if self.unit.higher_is_better() {
            r > 1.0 + EVEN
        } else {
            r < 1.0 - EVEN
        };
        let mpi_ahead = if self.unit.higher_is_better() {
            r < 1.0 - EVEN
        } else {
            r > 1.0 + EVEN
        };
        match (dos_ahead, mpi_ahead) {
            (true, _) => "dos better",
            (_, true) => "mpi better",
            _ => "even",
        }
    }
}

/// Reads every JSON line of every file.
pub fn load(paths: &[impl AsRef<Path>]) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
            path: p.to_path_buf(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || !line.trim_start().starts_with('{') {
                continue;
            }
            let o = serde_json::from_str(line).map_err(|source| Error::Parse {
                path: p.to_path_buf(),
                line: i + 1,
                source,
            })?;
            out.push(o);
        }
    }
    Ok(out)
}

/// Groups the outcomes by benchmark, ranks and size and takes medians.
pub fn compare(outcomes: &[Outcome]) -> Vec<Compared> {
    type Key = (Bench, usize, usize);
    let mut groups: BTreeMap<Key, (Unit, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for o in outcomes {
        for r in &o.rows {
            let e = groups
                .entry((o.benchmark, o.ranks, r.size))
                .or_insert_with(|| (o.unit, Vec::new(), Vec::new()));
            match o.implementation.as_str() {
                "dos" => e.1.push(r.avg),
                "mpi" => e.2.push(r.avg),
                _ => {}
            }
        }
    }
    groups
        .into_iter()
        .map(|((bench, ranks, size), (unit, d, m))| Compared {
            bench,
            ranks,
            size,
            unit,
            dos: median(&d),
            mpi: median(&m),
            runs: (d.len(), m.len()),
        })
        .collect()
}

/// A human size: `512`, `4K`, `1M`.
pub fn human_size(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "—".to_string(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The comparison as a markdown table.
pub fn markdown(rows: &[Compared]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| benchmark | ranks | size (B) | unit | dos | mpi | dos/mpi | verdict | runs |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|---|---:|");
    for c in rows {
        let ratio = c
            .ratio()
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "—".to_string());
        let unit = match c.unit {
            Unit::Micros => "us",
            Unit::MBps => "MB/s",
        };
        let size = if c.bench.sized() {
            human_size(c.size)
        } else {
            "—".to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            c.bench.name(),
            c.ranks,
            size,
            unit,
            fmt_value(c.dos),
            fmt_value(c.mpi),
            ratio,
            c.verdict(),
            c.runs.0,
            c.runs.1
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Row;

    fn outcome(bench: Bench, imp: &str, v: f64) -> Outcome {
        Outcome {
            benchmark: bench,
            implementation: imp.into(),
            ranks: 2,
            unit: bench.unit(),
            rows: vec![Row {
                size: 1024,
                avg: v,
                min: v,
                max: v,
                iters: 1,
            }],
        }
    }

    #[test]
    fn medians_and_ratios() {
        let runs = [
            outcome(Bench::Latency, "dos", 1.0),
            outcome(Bench::Latency, "mpi", 2.0),
            outcome(Bench::Latency, "dos", 9.0), // an outlier
            outcome(Bench::Latency, "mpi", 2.0),
            outcome(Bench::Latency, "dos", 1.2),
            outcome(Bench::Latency, "mpi", 2.2),
            outcome(Bench::Bw, "dos", 900.0),
            outcome(Bench::Bw, "mpi", 1000.0),
        ];
        let c = compare(&runs);
        assert_eq!(c.len(), 2);
        let lat = &c[0];
        assert_eq!(
            (lat.bench, lat.size, lat.runs),
            (Bench::Latency, 1024, (3, 3))
        );
        assert_eq!(lat.dos, Some(1.2));
        assert_eq!(lat.mpi, Some(2.0));
        assert!((lat.ratio().unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(lat.verdict(), "dos better");
        let bw = &c[1];
        assert!((bw.ratio().unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(bw.verdict(), "mpi better"); // less bandwidth is worse
        let md = markdown(&c);
        assert!(
            md.contains("| latency | 2 | 1K | us | 1.20 | 2.00 | 0.60 | dos better | 3/3 |"),
            "{md}"
        );
    }

    #[test]
    fn missing_side_and_even() {
        let c = compare(&[
            outcome(Bench::Barrier, "mpi", 3.0),
            outcome(Bench::Bcast, "dos", 3.0),
            outcome(Bench::Bcast, "mpi", 3.1),
        ]);
        assert_eq!(c[0].verdict(), "even");
        assert_eq!(c[1].ratio(), None);
        assert_eq!(c[1].verdict(), "n/a");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(1000), "1000");
        assert_eq!(human_size(4096), "4K");
        assert_eq!(human_size(4 << 20), "4M");
    }
}
