//! Measurements, not timed tests: ignored by default. Run them with
//!
//! ```text
//! cargo test -p dos-fs --release --test perf -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `cp_1gib_in_and_out_bit_exact` copies 1 GiB through `dosfs up --local 3`
//! and prints the rates; `creates_per_second` times file creates through
//! one client; `small_random_writes` times 4 KiB random writes into a
//! synced 256 MiB file (then a sync), three rounds, and prints the median.
//!
//! `disk_engine` measures the servers' disk engine alone ([`ChunkStore`],
//! no network): 8 threads (the server's worker pool) writing whole 1 MiB
//! stripes then one sync, and 2 threads (`DOSFS_PERF_READERS`) each
//! reading its share in order, like 2 ranks, with the page cache dropped
//! (as root; warm otherwise), for each [`DiskOptions`] variant,
//! interleaved with fio doing the same (if installed), 3 rounds, medians, the sync's share of write+sync, and crc32c's rate. `DOSFS_PERF_DIR`
//! picks the disk (default: the temporary directory). `ci/bench-io.sh`
//! runs fio on the same directory for the comparison.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use dos_fs::addrfile::AddrFile;
use dos_fs::chunk::{ChunkStore, DiskOptions};
use dos_fs::client::Client;
use dos_fs::target::{FsId, Target};

struct Up {
    dir: PathBuf,
}

impl Up {
    fn new(tag: &str, n: u32) -> Up {
        let dir = std::env::temp_dir().join(format!("dosfs-perf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let up = Up { dir };
        up.ok(&["up", "--local", &n.to_string(), "--target", "targets"]);
        up
    }

    fn ok(&self, args: &[&str]) {
        let o = Command::new(env!("CARGO_BIN_EXE_dosfs"))
            .args(args)
            .current_dir(&self.dir)
            .env("DOSFS", self.dir.join("dosfs.addr"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.ok(&["down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "a measurement: 1 GiB of disk and tens of seconds"]
fn cp_1gib_in_and_out_bit_exact() {
    let up = Up::new("cp", 3);
    let src = up.dir.join("in.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
        f.into_inner().unwrap().sync_all().unwrap();
    }
    let t = Instant::now();
    up.ok(&["cp", "in.bin", ":/big"]);
    let w = t.elapsed().as_secs_f64();
    let t = Instant::now();
    up.ok(&["cp", ":/big", "out.bin"]);
    let r = t.elapsed().as_secs_f64();
    println!(
        "cp 1 GiB in (with sync): {:.0} MiB/s; out: {:.0} MiB/s (page cache warm)",
        1024.0 / w,
        1024.0 / r
    );
    let same = Command::new("cmp")
        .arg(&src)
        .arg(up.dir.join("out.bin"))
        .status()
        .unwrap();
    assert!(same.success(), "1 GiB copy differs");
    up.ok(&["verify"]);
}

#[test]
#[ignore = "a measurement"]
fn creates_per_second() {
    let up = Up::new("md", 3);
    let c = Client::new(&AddrFile::read(&up.dir.join("dosfs.addr")).unwrap());
    c.mkdir("/d").unwrap();
    let n = 20_000;
    let t = Instant::now();
    for i in 0..n {
        c.create(&format!("/d/f{i}"), None, true).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{n} creates in one directory, one client, one at a time: {:.0}/s",
        n as f64 / s
    );
    let t = Instant::now();
    assert_eq!(c.readdir("/d").unwrap().len(), n);
    println!(
        "readdir of {n} entries: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "a measurement"]
fn small_random_writes() {
    let up = Up::new("small", 3);
    let c = Client::new(&AddrFile::read(&up.dir.join("dosfs.addr")).unwrap());
    let size: u64 = 256 << 20;
    let a = c.create("/f", None, true).unwrap();
    let block = vec![0x5au8; 1 << 20];
    for i in 0..size >> 20 {
        c.write_at(&a, i << 20, &block).unwrap();
    }
    c.sync(&a).unwrap();
    let n = 4096u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rates = Vec::new();
    let mut iops = Vec::new();
    for round in 0..3u8 {
        let data = vec![round; 4096];
        let t = Instant::now();
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % (size / 4096)) * 4096;
            c.write_at(&a, off, &data).unwrap();
        }
        let w = t.elapsed().as_secs_f64();
        c.sync(&a).unwrap();
        let all = t.elapsed().as_secs_f64();
        iops.push(n as f64 / w);
        rates.push((n * 4096) as f64 / (1 << 20) as f64 / all);
    }
    iops.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    println!(
        "{n} random 4 KiB writes into a synced 256 MiB file: median {:.0} writes/s; with the sync: {:.1} MiB/s (rounds {rates:.1?})",
        iops[1], rates[1]
    );
}

thread_local! {
    /// The sync's share of each write+sync time in [`engine_round`].
    static SYNC_SHARE: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `mib` whole 1 MiB stripes of inode `ino` from `threads` threads,
/// syncs; then drops the page cache and reads them back. MiB/s of both.
fn engine_round(
    store: &ChunkStore,
    ino: u64,
    mib: u64,
    threads: u64,
    readers: u64,
) -> (f64, f64, bool) {
    const SS: u32 = 1 << 20;
    let t = Instant::now();
    std::thread::scope(|sc| {
        for w in 0..threads {
            sc.spawn(move || {
                let data = vec![(w as u8).wrapping_mul(37); SS as usize];
                let mut s = w;
                while s < mib {
                    store.write(ino, s, SS, 0, &data).unwrap();
                    s += threads;
                }
            });
        }
    });
    let written = t.elapsed().as_secs_f64();
    store.sync(Some(ino)).unwrap();
    let all = t.elapsed().as_secs_f64();
    SYNC_SHARE.with(|v| v.borrow_mut().push((all - written) / all));
    let write = mib as f64 / all;
    let cold = drop_caches();
    let t = Instant::now();
    // Each reader reads its share in order (stripes r, r + readers, ...).
    std::thread::scope(|sc| {
        for r in 0..readers {
            sc.spawn(move || {
                let mut s = r;
                while s < mib {
                    let d = store.read(ino, s, SS, 0, SS).unwrap();
                    assert_eq!(d[12345], ((s % threads) as u8).wrapping_mul(37));
                    s += readers;
                }
            });
        }
    });
    let read = mib as f64 / t.elapsed().as_secs_f64();
    store.remove(ino).unwrap();
    (write, read, cold)
}

/// fio doing what [`engine_round`] does (if fio is installed): `threads`
/// jobs writing `mib` MiB in 1 MiB O_DIRECT writes with a final fsync,
/// then `readers` jobs reading it with the page cache dropped. MiB/s.
fn fio_round(dir: &std::path::Path, mib: u64, threads: u64, readers: u64) -> Option<(f64, f64)> {
    std::fs::create_dir_all(dir).ok()?;
    let run = |rw: &str, jobs: u64, direct: u8| -> Option<f64> {
        let o = Command::new("fio")
            .args([
                "--name=f",
                &format!("--directory={}", dir.display()),
                &format!("--rw={rw}"),
                "--bs=1M",
                &format!("--size={}M", mib / threads),
                &format!("--numjobs={jobs}"),
                "--group_reporting",
                &format!("--direct={direct}"),
                "--ioengine=psync",
                "--end_fsync=1",
                "--output-format=terse",
                "--terse-version=3",
            ])
            .output()
            .ok()?;
        let line = String::from_utf8_lossy(&o.stdout);
        let f: Vec<&str> = line.trim().split(';').collect();
        let kib: f64 = f.get(if rw == "write" { 47 } else { 6 })?.parse().ok()?;
        Some(kib / 1024.0)
    };
    let w = run("write", threads, 1)?;
    drop_caches();
    // Each reader job reads one of the written files in order (a rate:
    // fewer bytes than the engine's readers read).
    let r = run("read", readers.min(threads), 1)?;
    let _ = std::fs::remove_dir_all(dir);
    Some((w, r))
}

#[test]
#[ignore = "a measurement: 256 MiB of disk per variant and round"]
fn disk_engine() {
    let base = std::env::var_os("DOSFS_PERF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("dosfs-perf-engine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let target = Target::format(&base, FsId([7; 16]), 0, 1).unwrap();
    let variants = [
        (
            "default (direct >= 256 KiB, 8 object flushes at once)",
            DiskOptions::default(),
        ),
        (
            "direct writes, buffered reads",
            DiskOptions {
                direct_read_min: u32::MAX,
                ..DiskOptions::default()
            },
        ),
        (
            "direct, one object flush at a time",
            DiskOptions {
                seal_threads: 1,
                ..DiskOptions::default()
            },
        ),
        ("buffered, one flush at a time", DiskOptions::buffered()),
    ];
    let stores: Vec<ChunkStore> = variants
        .iter()
        .map(|(_, o)| ChunkStore::open_with(&target, *o).unwrap())
        .collect();
    let (mib, threads, rounds) = (256, 8, 3);
    let readers = std::env::var("DOSFS_PERF_READERS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let mut res = vec![(Vec::new(), Vec::new()); variants.len()];
    let mut sync_share = vec![Vec::new(); variants.len()];
    let mut fio_res = (Vec::new(), Vec::new());
    let mut cold = true;
    for round in 0..rounds {
        for (i, s) in stores.iter().enumerate() {
            let (w, r, c) = engine_round(s, 100 + (round * 10 + i) as u64, mib, threads, readers);
            cold &= c;
            sync_share[i].push(SYNC_SHARE.with(|v| v.borrow_mut().pop().unwrap_or(0.0)));
            res[i].0.push(w);
            res[i].1.push(r);
        }
        if let Some((w, r)) = fio_round(&base.join("fio"), mib, threads, readers) {
            fio_res.0.push(w);
            fio_res.1.push(r);
        }
    }
    println!(
        "| engine variant ({threads} writers, {readers} readers, {mib} x 1 MiB stripes) | write+sync MiB/s | {} read MiB/s |",
        if cold { "cold" } else { "warm (not root)" }
    );
    println!("|---|---:|---:|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let (w, r) = &res[i];
        println!(
            "| {name} | {:.0} ({:.0}-{:.0}) | {:.0} ({:.0}-{:.0}) |",
            median(w.clone()),
            w.iter().copied().fold(f64::MAX, f64::min),
            w.iter().copied().fold(0.0, f64::max),
            median(r.clone()),
            r.iter().copied().fold(f64::MAX, f64::min),
            r.iter().copied().fold(0.0, f64::max),
        );
    }
    // crc32c per second of this thread's CPU time (the machine's load
    // does not count), over 64 KiB blocks as the engine checks them.
    if !fio_res.0.is_empty() {
        let (w, r) = &fio_res;
        println!(
            "| fio, same files: {threads} psync jobs writing 1 MiB O_DIRECT (end fsync), {readers} reading | {:.0} ({:.0}-{:.0}) | {:.0} ({:.0}-{:.0}) |",
            median(w.clone()),
            w.iter().copied().fold(f64::MAX, f64::min),
            w.iter().copied().fold(0.0, f64::max),
            median(r.clone()),
            r.iter().copied().fold(f64::MAX, f64::min),
            r.iter().copied().fold(0.0, f64::max),
        );
    }
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "{name}: the sync took {:.0}% of write+sync (median)",
            100.0 * median(sync_share[i].clone())
        );
    }
    let buf: Vec<u8> = (0..64u32 << 20).map(|i| i as u8).collect();
    let cpu = || {
        // SAFETY: clock_gettime fills the timespec it is given.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `ts` is a valid out pointer for the call.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    let t = cpu();
    let mut x = 0u32;
    for _ in 0..8 {
        for b in buf.chunks(64 << 10) {
            x = x.wrapping_add(crc32c::crc32c(b));
        }
    }
    println!(
        "crc32c: {:.0} MiB per CPU-second, 64 KiB blocks (sum {x:08x})",
        512.0 / (cpu() - t)
    );
    drop(stores);
    let _ = std::fs::remove_dir_all(&base);
}
