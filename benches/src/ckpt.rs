//! `dosbench ckpt`: checkpoint bandwidth per level of `dos::ckpt`, against
//! plain copies measured in the same run (dos only).
//!
//! Every rank saves a slice of `--size` bytes. Every configuration is
//! measured once per round, `--reps` rounds after two untimed warm-up
//! rounds (steady state: buffers allocated, and the partner copies reuse
//! the memory of retired ones); rows are medians over the rounds, each
//! the slowest rank's time:
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

    // Every configuration is measured once per round, the rounds one
    // after the other, so that a change of load on a shared machine hits
    // them all alike; each row is the median over the rounds.
    let file = dir.join(format!("dosbench-ckpt-{}-{}", std::process::id(), w.rank()));
    let peer = w.rank() ^ 1;
    let paired = peer < w.size();
    let members: Vec<&[u8]> = data.chunks(n.div_ceil(8).max(1)).collect();
    let session = |levels: u8| -> Res<Ckpt<'_>> {
        let mut opts = Options::from_config(w.config())?;
        opts.id = format!("dosbench-{levels}");
        opts.dir = dir.clone();
        opts.attempt = 0;
        opts.levels = levels;
        opts.group_by_rank = true;
        opts.fs = None;
        opts.keep = 1;
        Ok(Ckpt::with_options(w, opts)?)
    };
    let mut sessions = [session(1)?, session(1 | 2)?, session(1 | 4)?];
    let mut copy = vec![0u8; n];
    let mut inc = vec![0u8; n];
    // Warm-up, not timed: the buffers, the files and the spare partner
    // copy that the steady state reuses (see `dos::ckpt::store::MappedWrite`).
    const WARM: u64 = 2;
    for v in 0..WARM {
        std::fs::write(&file, &data)?;
        if paired {
            w.sendrecv(&data, peer, 7, &mut inc, peer, 7)?;
        }
        for ck in &mut sessions {
            ck.checkpoint("bench", v, &[Data::slice(&data)])?;
        }
    }
    let mut t: Vec<Vec<f64>> = vec![Vec::new(); 7];
    for v in WARM..WARM + reps as u64 {
        t[0].push(timed(w, || {
            copy.copy_from_slice(&data);
            std::hint::black_box(&copy);
            Ok(())
        })?);
        t[1].push(timed(w, || Ok(std::fs::write(&file, &data)?))?);
        t[2].push(timed(w, || {
            if paired {
                w.sendrecv(&data, peer, 7, &mut inc, peer, 7)?;
            }
            Ok(())
        })?);
        t[3].push(timed(w, || {
            std::hint::black_box(dos::ckpt::xor::encode(&members));
            Ok(())
        })?);
        for (i, ck) in sessions.iter_mut().enumerate() {
            t[4 + i].push(timed(w, || {
                Ok(ck.checkpoint("bench", v, &[Data::slice(&data)])?)
            })?);
        }
    }
    let _ = std::fs::remove_file(&file);
    drop(sessions);
    w.barrier()?;
    if w.local_rank() == 0 {
        for levels in [1, 1 | 2, 1 | 4] {
            let _ = std::fs::remove_dir_all(dir.join(format!("dos-ckpt-dosbench-{levels}")));
        }
    }
    let m: Vec<f64> = t.into_iter().map(median).collect();
    let p2p = if paired || w.size() == 1 {
        m[2]
    } else {
        f64::NAN
    };
    row("memcpy", mibs(n, m[0]));
    row("write to DIR (L1 baseline)", mibs(n, m[1]));
    row("p2p exchange (L2 baseline)", mibs(n, p2p));
    row("xor encode, 1 core (per core)", mibs(n, m[3]));
    let (l1, l12, l13) = (m[4], m[5], m[6]);
    row("checkpoint L1", mibs(n, l1));
    row("checkpoint L1+L2", mibs(n, l12));
    row("  L2 part alone", mibs(n, (l12 - l1).max(1e-9)));
    row("checkpoint L1+L3", mibs(n, l13));
    row("  L3 part alone", mibs(n, (l13 - l1).max(1e-9)));
    Ok(rows)
}
