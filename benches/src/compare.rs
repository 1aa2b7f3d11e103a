//! dos against MPI: medians over repeated runs and their ratio, as a markdown table.
//!
//! Input is the `--json` output of both builds (one JSON object per line,
//! any number of runs per file). For every benchmark, rank count and message
//! size, the median over runs of each implementation's value is taken, and
//! `dos/mpi` is their ratio: below 1 is better for dos on latencies, above 1
//! on bandwidths.
//!
//! With more than one run of either side, the table also shows each side's
//! spread over runs, `min-max`, after the verdict: the repetitions of
//! `ci/bench-compare.sh` run in whatever phase the machine is in, and a
//! ratio of medians means little when the ranges overlap widely.
//!
//! Results labelled `raw` (`dosbench raw-tcp`: the bare kernel TCP stack
//! between the same hosts) form an optional third column: when the input
//! holds any, the table gains `raw` and `dos/raw` columns, and the `runs`
//! column counts dos/mpi/raw runs. Without raw input the table is unchanged.

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
    /// Median of the raw TCP baseline's values, if it ran.
    pub raw: Option<f64>,
    /// Smallest and largest of dos's values over runs.
    pub dos_range: Option<(f64, f64)>,
    /// Smallest and largest of MPI's values over runs.
    pub mpi_range: Option<(f64, f64)>,
    /// Runs behind each median (dos, MPI).
    pub runs: (usize, usize),
    /// Runs behind the raw median.
    pub raw_runs: usize,
}

impl Compared {
    /// `dos / mpi`.
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.dos?, self.mpi?)
    }

    /// `dos / raw`.
    pub fn raw_ratio(&self) -> Option<f64> {
        ratio(self.dos?, self.raw?)
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
    type Values = (Unit, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut groups: BTreeMap<Key, Values> = BTreeMap::new();
    for o in outcomes {
        for r in &o.rows {
            let e = groups
                .entry((o.benchmark, o.ranks, r.size))
                .or_insert_with(|| (o.unit, Vec::new(), Vec::new(), Vec::new()));
            match o.implementation.as_str() {
                "dos" => e.1.push(r.avg),
                "mpi" => e.2.push(r.avg),
                crate::rawtcp::IMPL => e.3.push(r.avg),
                _ => {}
            }
        }
    }
    groups
        .into_iter()
        .map(|((bench, ranks, size), (unit, d, m, raw))| Compared {
            bench,
            ranks,
            size,
            unit,
            dos: median(&d),
            mpi: median(&m),
            dos_range: range(&d),
            mpi_range: range(&m),
            raw: median(&raw),
            runs: (d.len(), m.len()),
            raw_runs: raw.len(),
        })
        .collect()
}

/// The smallest and largest of `xs`; `None` when empty or holding a NaN.
pub fn range(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo, hi))
}

fn fmt_range(r: Option<(f64, f64)>) -> String {
    match r {
        None => "—".to_string(),
        Some((lo, hi)) => format!("{}-{}", fmt_value(Some(lo)), fmt_value(Some(hi))),
    }
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

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}"))
        .unwrap_or_else(|| "—".to_string())
}

/// The comparison as a markdown table; with `dos min-max` and `mpi
/// min-max` columns when any row has more than one run of a side, and `raw`
/// and `dos/raw` columns when any row has a raw TCP value.
pub fn markdown(rows: &[Compared]) -> String {
    let with_raw = rows.iter().any(|c| c.raw_runs > 0);
    let with_spread = rows.iter().any(|c| c.runs.0 > 1 || c.runs.1 > 1);
    let mut s = String::new();
    let mut head =
        "| benchmark | ranks | size (B) | unit | dos | mpi | dos/mpi | verdict |".to_string();
    let mut rule = "|---|---:|---:|---|---:|---:|---:|---|".to_string();
    if with_spread {
        head.push_str(" dos min-max | mpi min-max |");
        rule.push_str("---:|---:|");
    }
    if with_raw {
        head.push_str(" raw | dos/raw |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(s, "{head} runs |");
    let _ = writeln!(s, "{rule}---:|");
    for c in rows {
        let ratio = fmt_ratio(c.ratio());
        let unit = match c.unit {
            Unit::Micros => "us",
            Unit::MBps => "MB/s",
        };
        let size = if c.bench.sized() {
            human_size(c.size)
        } else {
            "—".to_string()
        };
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.bench.name(),
            c.ranks,
            size,
            unit,
            fmt_value(c.dos),
            fmt_value(c.mpi),
            ratio,
            c.verdict(),
        );
        if with_spread {
            let _ = write!(
                s,
                " {} | {} |",
                fmt_range(c.dos_range),
                fmt_range(c.mpi_range)
            );
        }
        if with_raw {
            let _ = writeln!(
                s,
                " {} | {} | {}/{}/{} |",
                fmt_value(c.raw),
                fmt_ratio(c.raw_ratio()),
                c.runs.0,
                c.runs.1,
                c.raw_runs
            );
        } else {
            let _ = writeln!(s, " {}/{} |", c.runs.0, c.runs.1);
        }
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
            md.contains(
                "| latency | 2 | 1K | us | 1.20 | 2.00 | 0.60 | dos better | 1.00-9.00 | 2.00-2.20 | 3/3 |"
            ),
            "{md}"
        );
        // bw has one run a side: its spread is a single value.
        assert!(
            md.contains("| bw | 2 | 1K | MB/s | 900 | 1000 | 0.90 | mpi better | 900-900 | 1000-1000 | 1/1 |"),
            "{md}"
        );
        assert!(md.starts_with(
            "| benchmark | ranks | size (B) | unit | dos | mpi | dos/mpi | verdict | dos min-max | mpi min-max | runs |\n\
             |---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|\n"
        ));
        assert_eq!(range(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(range(&[]), None);
        assert_eq!(range(&[1.0, f64::NAN]), None);
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
    fn one_sided_rows() {
        let mut atomic = outcome(Bench::AtomicLat, "dos", 0.5);
        atomic.rows[0].size = 8;
        let mut atomic_mpi = outcome(Bench::AtomicLat, "mpi", 1.0);
        atomic_mpi.rows[0].size = 8;
        let c = compare(&[
            outcome(Bench::PutBw, "dos", 2000.0),
            outcome(Bench::PutBw, "mpi", 1000.0),
            outcome(Bench::PutLat, "mpi", 1.0),
            outcome(Bench::PutLat, "dos", 1.0),
            atomic,
            atomic_mpi,
            outcome(Bench::Latency, "dos", 1.0),
        ]);
        let names: Vec<&str> = c.iter().map(|c| c.bench.name()).collect();
        assert_eq!(names, ["latency", "put_lat", "put_bw", "atomic_lat"]);
        assert_eq!(c[2].verdict(), "dos better"); // more MB/s
        let md = markdown(&c);
        assert!(
            md.contains("| put_bw | 2 | 1K | MB/s | 2000 | 1000 | 2.00 | dos better | 1/1 |"),
            "{md}"
        );
        assert!(
            md.contains("| atomic_lat | 2 | 8 | us | 0.50 | 1.00 | 0.50 | dos better | 1/1 |"),
            "{md}"
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(1000), "1000");
        assert_eq!(human_size(4096), "4K");
        assert_eq!(human_size(4 << 20), "4M");
    }

    #[test]
    fn table_without_raw_is_unchanged() {
        let c = compare(&[
            outcome(Bench::Latency, "dos", 1.2),
            outcome(Bench::Latency, "mpi", 2.0),
            outcome(Bench::Barrier, "mpi", 3.0),
            outcome(Bench::Barrier, "other", 5.0), // unknown labels are ignored
        ]);
        assert!(c.iter().all(|c| c.raw.is_none() && c.raw_runs == 0));
        assert_eq!(
            markdown(&c),
            "| benchmark | ranks | size (B) | unit | dos | mpi | dos/mpi | verdict | runs |\n\
             |---|---:|---:|---|---:|---:|---:|---|---:|\n\
             | latency | 2 | 1K | us | 1.20 | 2.00 | 0.60 | dos better | 1/1 |\n\
             | barrier | 2 | — | us | — | 3.00 | — | n/a | 0/1 |\n"
        );
    }

    #[test]
    fn raw_column() {
        let c = compare(&[
            outcome(Bench::Latency, "dos", 6.0),
            outcome(Bench::Latency, "mpi", 5.0),
            outcome(Bench::Latency, "raw", 4.0),
            outcome(Bench::Latency, "raw", 5.0),
            outcome(Bench::Latency, "raw", 2.0),
            outcome(Bench::Bw, "raw", 3000.0),
            outcome(Bench::Barrier, "dos", 1.0),
        ]);
        assert_eq!(c.len(), 3);
        let lat = &c[0];
        assert_eq!((lat.raw, lat.raw_runs, lat.runs), (Some(4.0), 3, (1, 1)));
        assert!((lat.raw_ratio().unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(c[1].raw_ratio(), None); // bw: no dos value
        assert_eq!(c[2].raw, None);
        let md = markdown(&c);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| benchmark | ranks | size (B) | unit | dos | mpi | dos/mpi | verdict | raw | dos/raw | runs |"
        );
        assert_eq!(
            lines[1],
            "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|"
        );
        assert_eq!(
            lines[2],
            "| latency | 2 | 1K | us | 6.00 | 5.00 | 1.20 | mpi better | 4.00 | 1.50 | 1/1/3 |"
        );
        assert_eq!(
            lines[3],
            "| bw | 2 | 1K | MB/s | — | — | — | n/a | 3000 | — | 0/0/1 |"
        );
        assert_eq!(
            lines[4],
            "| barrier | 2 | — | us | 1.00 | — | — | n/a | — | — | 1/0/0 |"
        );
        // Every line has the same number of cells.
        assert!(lines.iter().all(|l| l.matches('|').count() == 12), "{md}");
    }
}
