//! `dosbench io`: an IOR-shaped parallel file benchmark.
//!
//! Every rank writes `block` bytes in transfers of `transfer` bytes, syncs,
//! then reads them back. The file is one shared file, either *segmented*
//! (each rank a contiguous block, IOR's default) or *strided* (transfer `i`
//! of rank `r` at `(i * ranks + r) * transfer`), or one file per process
//! (`--file-per-proc`). Writes and reads are independent (`write_at`,
//! `MPI_File_write_at`) or collective (`--collective`: `write_at_all`,
//! `MPI_File_write_at_all`).
//!
//! A phase's time is the slowest rank's, from a barrier before its first
//! transfer to the end of its sync (write) or last read (IOR's convention),
//! and its bandwidth is all ranks' bytes over that time, in MiB/s. The
//! result is the median over `--reps` repetitions. `--drop-caches` writes
//! `3` to `/proc/sys/vm/drop_caches` (rank 0, needs root) between the write
//! and the read, for a cold-cache read on one host. `--reorder` (IOR's
//! `-C`) has rank `r` read what rank `r + 1` wrote (its file, with
//! `--file-per-proc`): with one rank per node, every read is of another
//! node's data, so no cache of the reader's node can serve it.
//!
//! The file operations come from [`IoRuntime`], implemented by `dos::io` and
//! by MPI-IO, so both builds time the same pattern.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::runtime::{IoRuntime, Runtime};
use crate::stats::median;
use crate::{Error, Result};

/// How the ranks' data lies in the file(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// One shared file, each rank one contiguous block.
    Segmented,
    /// One shared file, the ranks' transfers interleaved.
    Strided,
    /// One file per rank.
    FilePerProc,
}

impl Pattern {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Segmented => "segmented",
            Pattern::Strided => "strided",
            Pattern::FilePerProc => "file-per-proc",
        }
    }
}

/// The options of `dosbench io`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoOptions {
    /// Bytes each rank writes and reads.
    pub block: u64,
    /// Bytes per call.
    pub transfer: u64,
    /// The layout.
    pub pattern: Pattern,
    /// Collective calls instead of independent ones.
    pub collective: bool,
    /// Drop the page cache between write and read (needs root).
    pub drop_caches: bool,
    /// Repetitions; the median is reported.
    pub reps: usize,
    /// The directory of the file(s): a dosfs path (dos) or a local one (MPI).
    pub dir: Option<String>,
    /// Keep the file(s) after the run.
    pub keep: bool,
    /// Each rank reads the next rank's data (IOR's `-C`).
    pub reorder: bool,
}

impl Default for IoOptions {
    fn default() -> IoOptions {
        IoOptions {
            block: 64 << 20,
            transfer: 1 << 20,
            pattern: Pattern::Segmented,
            collective: false,
            drop_caches: false,
            reps: 3,
            dir: None,
            keep: false,
            reorder: false,
        }
    }
}

impl IoOptions {
    /// Checks the sizes: a transfer is at least one byte and divides the block.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.transfer == 0 {
            return Err("--transfer-size must be at least 1".into());
        }
        if self.block == 0 || self.block % self.transfer != 0 {
            return Err(format!(
                "--block-size {} is not a positive multiple of --transfer-size {}",
                self.block, self.transfer
            ));
        }
        if usize::try_from(self.transfer).is_err() {
            return Err("--transfer-size does not fit in memory".into());
        }
        if self.reps == 0 {
            return Err("--reps must be at least 1".into());
        }
        Ok(())
    }

    /// Transfers per rank.
    pub fn transfers(&self) -> u64 {
        self.block / self.transfer
    }

    /// The file offset of transfer `i` of `rank` among `ranks`.
    pub fn offset(&self, rank: usize, ranks: usize, i: u64) -> u64 {
        let (r, n) = (rank as u64, ranks as u64);
        match self.pattern {
            Pattern::Segmented => r * self.block + i * self.transfer,
            Pattern::Strided => (i * n + r) * self.transfer,
            Pattern::FilePerProc => i * self.transfer,
        }
    }

    /// The file `rank` uses in `dir`.
    pub fn file_name(&self, dir: &str, rank: usize) -> String {
        let dir = dir.trim_end_matches('/');
        match self.pattern {
            Pattern::FilePerProc => format!("{dir}/dosbench-io.{rank:05}"),
            _ => format!("{dir}/dosbench-io.shared"),
        }
    }
}

/// `dosbench io`'s result: one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoOutcome {
    /// Always `"io"`.
    pub benchmark: String,
    /// `"dos"` or `"mpi"`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Ranks in the job.
    pub ranks: usize,
    /// The layout.
    pub pattern: Pattern,
    /// Collective calls.
    pub collective: bool,
    /// Page cache dropped before the read.
    pub drop_caches: bool,
    /// Each rank read the next rank's data.
    #[serde(default)]
    pub reorder: bool,
    /// Bytes per rank.
    pub block: u64,
    /// Bytes per call.
    pub transfer: u64,
    /// Repetitions.
    pub reps: usize,
    /// `"MiB/s"`.
    pub unit: String,
    /// Median write-plus-sync bandwidth.
    pub write: f64,
    /// Median read bandwidth.
    pub read: f64,
    /// Every repetition's write bandwidth.
    pub write_reps: Vec<f64>,
    /// Every repetition's read bandwidth.
    pub read_reps: Vec<f64>,
}

impl IoOutcome {
    /// One JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// A small table for people.
    pub fn table(&self) -> String {
        format!(
            "# dosbench io ({}, {} ranks): {}, {}, block {} B, transfer {} B, {} reps{}{}\n\
             # Phase          MiB/s (median)\n\
             write+sync   {:>14.1}\n\
             read         {:>14.1}\n",
            self.implementation,
            self.ranks,
            self.pattern.name(),
            if self.collective {
                "collective"
            } else {
                "independent"
            },
            self.block,
            self.transfer,
            self.reps,
            if self.drop_caches {
                ", caches dropped before read"
            } else {
                ""
            },
            if self.reorder {
                ", each rank reads the next rank's data"
            } else {
                ""
            },
            self.write,
            self.read
        )
    }
}

/// The slowest rank's value of `x` (an alltoall of one `f64` per rank).
fn max_over_ranks<R: Runtime>(rt: &R, x: f64) -> Result<f64> {
    let n = rt.size();
    let send: Vec<u8> = (0..n).flat_map(|_| x.to_le_bytes()).collect();
    let mut recv = vec![0u8; 8 * n];
    rt.alltoall(&send, &mut recv)?;
    Ok(recv
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .fold(x, f64::max))
}

/// Writes `3` to `/proc/sys/vm/drop_caches` (after a `sync`).
fn drop_caches() -> Result<()> {
    let status = std::process::Command::new("sync").status();
    if !matches!(status, Ok(s) if s.success()) {
        return Err(Error::Io {
            op: "sync",
            what: "the sync command failed".into(),
        });
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| Error::Io {
        op: "drop_caches",
        what: format!("writing /proc/sys/vm/drop_caches (needs root): {e}"),
    })
}

/// The byte rank `rank` writes at `pos` of transfer `i`: checkable on read.
fn fill(buf: &mut [u8], rank: usize, i: u64) {
    let seed = (rank as u64).wrapping_mul(131).wrapping_add(i) as u8;
    for (k, b) in buf.iter_mut().enumerate() {
        *b = seed.wrapping_add(k as u8);
    }
}

/// Runs `dosbench io` on every rank; rank 0 returns the outcome.
pub fn run<R: IoRuntime>(rt: &R, opts: &IoOptions) -> Result<Option<IoOutcome>> {
    opts.check().map_err(Error::Usage)?;
    let (rank, ranks) = (rt.rank(), rt.size());
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| R::DEFAULT_DIR.to_string());
    let path = opts.file_name(&dir, rank);
    let per_proc = opts.pattern == Pattern::FilePerProc;
    let transfer = opts.transfer as usize;
    let mut buf = vec![0u8; transfer];
    let mut check = vec![0u8; transfer];
    let total_mib = (opts.block * ranks as u64) as f64 / (1u64 << 20) as f64;
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    for _ in 0..opts.reps {
        // Write plus sync.
        let f = rt.file_open(&path, per_proc, true)?;
        rt.barrier()?;
        let t = Instant::now();
        for i in 0..opts.transfers() {
            fill(&mut buf, rank, i);
            rt.file_write_at(&f, opts.offset(rank, ranks, i), &buf, opts.collective)?;
        }
        rt.file_sync(&f)?;
        let w = max_over_ranks(rt, t.elapsed().as_secs_f64())?;
        rt.file_close(f)?;
        writes.push(total_mib / w);
        if opts.drop_caches && rank == 0 {
            drop_caches()?;
        }
        // Read, checking the data: this rank's, or the next one's.
        let src = if opts.reorder {
            (rank + 1) % ranks
        } else {
            rank
        };
        let f = rt.file_open(&opts.file_name(&dir, src), per_proc, false)?;
        rt.barrier()?;
        let t = Instant::now();
        for i in 0..opts.transfers() {
            let off = opts.offset(src, ranks, i);
            let got = rt.file_read_at(&f, off, &mut buf, opts.collective)?;
            fill(&mut check, src, i);
            if got != transfer || buf != check {
                return Err(Error::Validation {
                    bench: "io",
                    size: transfer,
                    rank,
                    what: format!("read back wrong data at offset {off} ({got} bytes)"),
                });
            }
        }
        let r = max_over_ranks(rt, t.elapsed().as_secs_f64())?;
        rt.file_close(f)?;
        reads.push(total_mib / r);
    }
    rt.barrier()?;
    if !opts.keep && (per_proc || rank == 0) {
        rt.file_delete(&path)?;
    }
    if rank != 0 {
        return Ok(None);
    }
    Ok(Some(IoOutcome {
        benchmark: "io".into(),
        implementation: rt.name().into(),
        ranks,
        pattern: opts.pattern,
        collective: opts.collective,
        drop_caches: opts.drop_caches,
        reorder: opts.reorder,
        block: opts.block,
        transfer: opts.transfer,
        reps: opts.reps,
        unit: "MiB/s".into(),
        write: median(&writes).unwrap_or(0.0),
        read: median(&reads).unwrap_or(0.0),
        write_reps: writes,
        read_reps: reads,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pattern: Pattern) -> IoOptions {
        IoOptions {
            block: 4096,
            transfer: 1024,
            pattern,
            ..IoOptions::default()
        }
    }

    #[test]
    fn offsets_of_the_patterns() {
        let o = opts(Pattern::Segmented);
        assert_eq!(o.transfers(), 4);
        assert_eq!(o.offset(0, 2, 0), 0);
        assert_eq!(o.offset(0, 2, 3), 3072);
        assert_eq!(o.offset(1, 2, 0), 4096);
        assert_eq!(o.offset(1, 2, 3), 7168);
        let o = opts(Pattern::Strided);
        assert_eq!(o.offset(0, 2, 0), 0);
        assert_eq!(o.offset(1, 2, 0), 1024);
        assert_eq!(o.offset(0, 2, 1), 2048);
        assert_eq!(o.offset(1, 3, 2), 7 * 1024);
        let o = opts(Pattern::FilePerProc);
        assert_eq!(o.offset(5, 8, 2), 2048);
        assert_eq!(o.file_name("/d/", 3), "/d/dosbench-io.00003");
        assert_eq!(
            opts(Pattern::Strided).file_name("/", 3),
            "/dosbench-io.shared"
        );
    }

    #[test]
    fn every_byte_once() {
        // For each shared pattern, the ranks' transfers tile the file exactly.
        for p in [Pattern::Segmented, Pattern::Strided] {
            let o = opts(p);
            let ranks = 3;
            let mut offs: Vec<u64> = (0..ranks)
                .flat_map(|r| (0..o.transfers()).map(move |i| (r, i)))
                .map(|(r, i)| o.offset(r, ranks, i))
                .collect();
            offs.sort_unstable();
            let want: Vec<u64> = (0..ranks as u64 * o.transfers())
                .map(|k| k * o.transfer)
                .collect();
            assert_eq!(offs, want, "{p:?}");
        }
    }

    #[test]
    fn checks() {
        assert!(opts(Pattern::Segmented).check().is_ok());
        let mut o = opts(Pattern::Segmented);
        o.transfer = 0;
        assert!(o.check().is_err());
        o.transfer = 1000;
        assert!(o.check().unwrap_err().contains("multiple"));
        o.transfer = 1024;
        o.reps = 0;
        assert!(o.check().is_err());
    }

    #[test]
    fn json_round_trip() {
        let out = IoOutcome {
            benchmark: "io".into(),
            implementation: "dos".into(),
            ranks: 2,
            pattern: Pattern::FilePerProc,
            collective: true,
            drop_caches: false,
            reorder: true,
            block: 1 << 26,
            transfer: 1 << 20,
            reps: 1,
            unit: "MiB/s".into(),
            write: 1.5,
            read: 2.5,
            write_reps: vec![1.5],
            read_reps: vec![2.5],
        };
        let j = out.json();
        assert!(j.contains("\"pattern\":\"file-per-proc\""), "{j}");
        assert!(j.contains("\"impl\":\"dos\""), "{j}");
        let back: IoOutcome = serde_json::from_str(&j).unwrap();
        assert_eq!(back, out);
        // Lines of earlier builds (no "reorder") still read.
        let old = j.replace("\"reorder\":true,", "");
        assert!(!old.contains("reorder"));
        let back: IoOutcome = serde_json::from_str(&old).unwrap();
        assert!(!back.reorder);
        assert!(out.table().contains("write+sync"));
    }
}
