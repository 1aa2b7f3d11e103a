//! `dosbench ckpt`: checkpoint bandwidth per level of `dos::ckpt`, against
//! plain copies measured in the same run (dos only).
//!
//! Every rank saves a slice of `--size` bytes. Rows (medians of `--reps`,
//! each the slowest rank's time):
//!
//! * `memcpy` (RAM to RAM) and `write to DIR` (a plain file write into the
//!   L1 directory, /dev/shm by default: the baseline of L1);
//! * `p2p exchange` (ranks in pairs swap `--size` bytes: the baseline of L2);
//! * `xor encode, 1 core` (the L3 parity of 8 members, computed in memory);
//! * `checkpoint L1`, `L1+L2`, `L1+L3` (every rank its own failure group, so
//!   partner copies and parity cross ranks on one host), with the L2 and L3
//!   parts' own bandwidth: size over the time they add to L1.
//!
//! Run: `dosrun -n 2 target/release/dosbench ckpt [--size 64M] [--reps 5] [--dir /dev/shm]`.

use std::path::PathBuf;
use std::time::Instant;

use dos::ckpt::{Ckpt, Data, Options};
use dos::op::Max;
use dos::World;

use crate::rpc::Row;

/// Options of `dosbench ckpt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CkptOptions {
    /// Bytes each rank saves.
    pub size: usize,
    /// Repetitions (the median is reported).
    pub reps: usize,
    /// The L1 directory (default `/dev/shm`).
    pub dir: Option<String>,
}

impl Default for CkptOptions {
    fn default() -> Self {
        CkptOptions {
            size: 64 << 20,
            reps: 5,
            dir: None,
        }
    }
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The slowest rank's time of `f` (collective), in seconds.
fn timed(w: &World, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    w.barrier()?;
    let t = Instant::now();
    f()?;
    let mine = t.elapsed().as_secs_f64();
    let mut max = [0.0f64];
    w.allreduce(&[mine], &mut max, Max)?;
    Ok(max[0])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mibs(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1 << 20) as f64
}

/// Runs the measurements; rank 0 gets the rows.
pub fn run(w: &World, o: &CkptOptions) -> Res<Vec<Row>> {
    let n = o.size;
    let reps = o.reps.max(1);
    let dir = PathBuf::from(o.dir.clone().unwrap_or_else(|| "/dev/shm".into()));
    let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31)).collect();
    let mut rows = Vec::new();
    let mut row = |what: &'static str, v: f64| {
        rows.push(Row {
            what,
            value: v,
            unit: "MiB/s",
        })
    };

    let mut copy = vec![0u8; n];
    let t = (0..reps)
        .map(|_| {
            timed(w, || {
                copy.copy_from_slice(&data);
                std::hint::black_box(&copy);
                Ok(())
            })
        })
        .collect::<Res<Vec<_>>>()?;
    row("memcpy", mibs(n, median(t)));
    drop(copy);

    let file = dir.join(format!("dosbench-ckpt-{}-{}", std::process::id(), w.rank()));
    let t = (0..reps)
        .map(|_| timed(w, || Ok(std::fs::write(&file, &data)?)))
        .collect::<Res<Vec<_>>>()?;
    let _ = std::fs::remove_file(&file);
    let shm = median(t);
    row("write to DIR (L1 baseline)", mibs(n, shm));

    let peer = w.rank() ^ 1;
    let mut inc = vec![0u8; n];
    let p2p = if peer < w.size() || w.size() == 1 {
        let t = (0..reps)
            .map(|_| {
                timed(w, || {
                    if peer < w.size() {
                        w.sendrecv(&data, peer, 7, &mut inc, peer, 7)?;
                    }
                    Ok(())
                })
            })
            .collect::<Res<Vec<_>>>()?;
        median(t)
    } else {
        f64::NAN
    };
    row("p2p exchange (L2 baseline)", mibs(n, p2p));
    drop(inc);

    // XOR: 8 members of n/8 bytes, one core.
    let members: Vec<&[u8]> = data.chunks(n.div_ceil(8).max(1)).collect();
    let t = (0..reps)
        .map(|_| {
            timed(w, || {
                std::hint::black_box(dos::ckpt::xor::encode(&members));
                Ok(())
            })
        })
        .collect::<Res<Vec<_>>>()?;
    row("xor encode, 1 core (per core)", mibs(n, median(t)));

    let level = |levels: u8| -> Res<f64> {
        let mut opts = Options::from_config(w.config())?;
        opts.id = format!("dosbench-{levels}");
        opts.dir = dir.clone();
        opts.attempt = 0;
        opts.levels = levels;
        opts.group_by_rank = true;
        opts.fs = None;
        opts.keep = 1;
        let mut ck = Ckpt::with_options(w, opts)?;
        let mut t = Vec::new();
        for v in 0..reps as u64 {
            t.push(timed(w, || {
                Ok(ck.checkpoint("bench", v, &[Data::slice(&data)])?)
            })?);
        }
        drop(ck);
        w.barrier()?;
        if w.local_rank() == 0 {
            let _ = std::fs::remove_dir_all(dir.join(format!("dos-ckpt-dosbench-{levels}")));
        }
        Ok(median(t))
    };
    let l1 = level(1)?;
    let l12 = level(1 | 2)?;
    let l13 = level(1 | 4)?;
    row("checkpoint L1", mibs(n, l1));
    row("checkpoint L1+L2", mibs(n, l12));
    row("  L2 part alone", mibs(n, (l12 - l1).max(1e-9)));
    row("checkpoint L1+L3", mibs(n, l13));
    row("  L3 part alone", mibs(n, (l13 - l1).max(1e-9)));
    Ok(rows)
}
