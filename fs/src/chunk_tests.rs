use super::*;
use crate::target::tests::TempDir;
use crate::target::FsId;

const SS: u32 = 8192;

fn store(dir: &Path) -> (Target, ChunkStore) {
    let t = Target::format(dir, FsId([1; 16]), 2, 3).unwrap();
    let s = ChunkStore::open(&t).unwrap();
    (t, s)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn writes_read_back_before_and_after_sync() {
    let d = TempDir::new("chunk-rw");
    let (_, s) = store(&d.0);
    let a = pattern(SS as usize, 1);
    s.write(5, 3, SS, 0, &a).unwrap();
    s.write(5, 3, SS, 100, b"hello").unwrap();
    let mut want = a.clone();
    want[100..105].copy_from_slice(b"hello");
    assert_eq!(s.read(5, 3, SS, 0, SS).unwrap(), want);
    s.sync(Some(5)).unwrap();
    assert_eq!(s.read(5, 3, SS, 0, SS).unwrap(), want);
    // A later partial write starts from the synced bytes.
    s.write(5, 3, SS, 8000, b"tail").unwrap();
    want[8000..8004].copy_from_slice(b"tail");
    assert_eq!(s.read(5, 3, SS, 7990, 202).unwrap(), &want[7990..8192]);
    s.sync(None).unwrap();
    assert_eq!(s.read(5, 3, SS, 0, SS).unwrap(), want);
    // Holes and never-written chunks read as zeros.
    s.write(6, 0, SS, 4000, b"x").unwrap();
    let r = s.read(6, 0, SS, 0, SS).unwrap();
    assert_eq!(r[4000], b'x');
    assert!(r[..4000].iter().chain(&r[4001..]).all(|&b| b == 0));
    assert_eq!(s.read(9, 9, SS, 0, 10).unwrap(), vec![0; 10]);
    // Pieces outside a stripe are refused.
    assert!(s.write(5, 3, SS, SS - 1, b"ab").is_err());
    assert!(s.read(5, 3, SS, 1, SS).is_err());
}

#[test]
fn restart_keeps_synced_data_and_drops_unsynced() {
    let d = TempDir::new("chunk-restart");
    let (t, s) = store(&d.0);
    let a = pattern(SS as usize, 2);
    s.write(7, 0, SS, 0, &a).unwrap();
    s.sync(Some(7)).unwrap();
    // Unsynced overwrite, then a crash (the store is dropped, not synced).
    s.write(7, 0, SS, 0, &pattern(SS as usize, 3)).unwrap();
    s.write(7, 1, SS, 0, b"never synced").unwrap();
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(7, 0, SS, 0, SS).unwrap(), a);
    assert_eq!(s.read(7, 1, SS, 0, 12).unwrap(), vec![0; 12]);
    let v = s.verify(7, SS).unwrap();
    assert_eq!((v.chunks, v.bytes, v.pending), (1, SS as u64, 0));
    assert!(v.bad.is_empty());
}

#[test]
fn a_crash_between_data_and_commit_keeps_the_synced_data() {
    let d = TempDir::new("chunk-torn");
    let (t, s) = store(&d.0);
    let a = pattern(SS as usize, 4);
    s.write(8, 2, SS, 0, &a).unwrap();
    s.sync(None).unwrap();
    // An overwrite lands in the other slot, whole or torn: the synced one
    // is not touched.
    s.write(8, 2, SS, 10, b"zzzz").unwrap();
    s.write(8, 3, SS, 0, b"fresh, never committed").unwrap();
    let (path, pos, len) = s.locate(8, 2).unwrap();
    assert_eq!((pos, len), (2 * u64::from(SS), SS));
    assert_eq!(
        fs::read(&path).unwrap()[pos as usize..][..SS as usize],
        a[..]
    );
    // The data is flushed, then the commit does not happen (a crash).
    s.fail_before_commit.store(true, Ordering::Relaxed);
    assert!(s.sync(None).is_err());
    drop(s);
    // Half-written bytes in the new slot change nothing either.
    let other = s_other(&t, 8);
    let f = OpenOptions::new().write(true).open(&other).unwrap();
    f.write_all_at(b"torn", 2 * u64::from(SS) + 100).unwrap();
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(8, 2, SS, 0, SS).unwrap(), a);
    assert_eq!(s.read(8, 3, SS, 0, 4).unwrap(), vec![0; 4]);
    let v = s.verify(8, SS).unwrap();
    assert_eq!((v.chunks, v.pending, v.bad.len()), (1, 0, 0));
    // A later overwrite and sync commit normally.
    s.write(8, 2, SS, 10, b"yyyy").unwrap();
    s.sync(None).unwrap();
    let mut want = a.clone();
    want[10..14].copy_from_slice(b"yyyy");
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(8, 2, SS, 0, SS).unwrap(), want);
}

/// The data object of `ino` that does not hold its synced stripes (slot 1
/// for a file written once).
fn s_other(t: &Target, ino: u64) -> PathBuf {
    t.chunk_dir().join(format!("{:02x}/{ino:x}/d1", ino & 0xff))
}

#[test]
fn a_torn_journal_tail_is_dropped_and_damage_before_it_refused() {
    let d = TempDir::new("chunk-journal");
    let (t, s) = store(&d.0);
    let a = pattern(SS as usize, 30);
    s.write(11, 0, SS, 0, &a).unwrap();
    s.sync(None).unwrap();
    s.write(11, 1, SS, 0, &a).unwrap();
    s.sync(None).unwrap();
    drop(s);
    let j = t.chunk_dir().join("journal");
    let good = fs::read(&j).unwrap();
    // A record cut by a crash: the stripe it named was never synced.
    let mut torn = good.clone();
    torn.truncate(good.len() - 7);
    fs::write(&j, &torn).unwrap();
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(11, 0, SS, 0, SS).unwrap(), a);
    assert_eq!(s.stripes(11).unwrap().into_iter().collect::<Vec<_>>(), [0]);
    // Stripe 1 is written and committed again after the cut tail.
    s.write(11, 1, SS, 0, &a).unwrap();
    s.sync(None).unwrap();
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(11, 1, SS, 0, SS).unwrap(), a);
    drop(s);
    // A flipped bit in the first record, with good records after it, is
    // corruption: the server does not start on a silently shorter map.
    let mut bad = fs::read(&j).unwrap();
    bad[20] ^= 1;
    fs::write(&j, &bad).unwrap();
    assert!(matches!(
        ChunkStore::open(&t),
        Err(Error::MetaCorrupt { .. })
    ));
}

#[test]
fn a_target_of_the_old_format_is_refused_with_a_clear_message() {
    let d = TempDir::new("chunk-oldformat");
    let (t, _) = store(&d.0);
    let desc = t.dir().join(crate::target::DESCRIPTOR);
    let text = fs::read_to_string(&desc).unwrap();
    assert!(text.contains("format 2"), "{text}");
    fs::write(&desc, text.replace("format 2", "format 1")).unwrap();
    let e = Target::open(&d.0, crate::target::Expect::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::OldFormat {
                found: 1,
                supported: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("format 1 is older"), "{e}");
}
#[test]
fn corruption_is_reported_with_file_offset_and_never_returned() {
    let d = TempDir::new("chunk-corrupt");
    let (t, s) = store(&d.0);
    s.write(9, 4, SS, 0, &pattern(SS as usize, 5)).unwrap();
    s.write(9, 5, SS, 0, &pattern(100, 6)).unwrap();
    s.sync(None).unwrap();
    flip(&s, 9, 4, 77, 0x40);
    let e = s.read(9, 4, SS, 0, 16).unwrap_err();
    match &e {
        Error::ChunkCorrupt {
            ino: 9,
            stripe: 4,
            file_offset,
            server: 2,
            ..
        } => assert_eq!(*file_offset, 4 * SS as u64),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("file offset 32768"), "{e}");
    // A partial write does not build on corrupted bytes; verify names it.
    assert!(matches!(
        s.write(9, 4, SS, 0, b"x"),
        Err(Error::ChunkCorrupt { .. })
    ));
    let v = s.verify(9, SS).unwrap();
    assert_eq!(v.chunks, 2);
    assert_eq!(v.bad.len(), 1);
    assert_eq!(v.bad[0].0, 4);
    // A whole-stripe write replaces it.
    s.write(9, 4, SS, 0, &pattern(SS as usize, 7)).unwrap();
    s.sync(None).unwrap();
    assert_eq!(s.read(9, 4, SS, 0, SS).unwrap(), pattern(SS as usize, 7));
    assert!(s.verify(9, SS).unwrap().bad.is_empty());
    drop(t);
}

/// Flips bits `mask` of byte `at` of the synced stripe `stripe` of `ino`.
fn flip(s: &ChunkStore, ino: u64, stripe: u64, at: u64, mask: u8) {
    let (p, pos, _) = s.locate(ino, stripe).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, pos + at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, pos + at).unwrap();
}

#[test]
fn truncate_and_remove() {
    let d = TempDir::new("chunk-trunc");
    let (_, s) = store(&d.0);
    for st in 0..4 {
        s.write(3, st, SS, 0, &pattern(SS as usize, st as u8))
            .unwrap();
    }
    s.sync(None).unwrap();
    // Cut in the middle of stripe 1.
    s.truncate(3, SS, SS as u64 + 100).unwrap();
    s.sync(None).unwrap();
    assert_eq!(
        s.stripes(3).unwrap().into_iter().collect::<Vec<_>>(),
        [0, 1]
    );
    let r = s.read(3, 1, SS, 0, SS).unwrap();
    assert_eq!(&r[..100], &pattern(SS as usize, 1)[..100]);
    assert!(r[100..].iter().all(|&b| b == 0));
    s.remove(3).unwrap();
    assert!(s.stripes(3).unwrap().is_empty());
    s.remove(3).unwrap();
}

/// A full disk: a tiny tmpfs target (needs root to mount; skipped otherwise).
#[test]
fn enospc_reaches_the_writer_and_corrupts_nothing() {
    let d = TempDir::new("chunk-enospc");
    let Some(m) = crate::target::tests::small_tmpfs(&d.0, "256k") else {
        return;
    };
    let mnt = m.0.clone();
    let (_, s) = store(&mnt.join("t"));
    let a = pattern(SS as usize, 9);
    s.write(1, 0, SS, 0, &a).unwrap();
    s.sync(None).unwrap();
    let mut err = None;
    for st in 1..100 {
        if let Err(e) = s.write(1, st, SS, 0, &pattern(SS as usize, st as u8)) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("a 256 KiB target filled up");
    assert!(matches!(e, Error::NoSpace { server: 2, .. }), "{e}");
    // Synced data is intact, and a partial write into it fails cleanly or succeeds.
    assert_eq!(s.read(1, 0, SS, 0, SS).unwrap(), a);
    let _ = s.write(1, 0, SS, 5, b"abc");
    let _ = s.sync(None);
    let r = s.read(1, 0, SS, 0, SS).unwrap();
    assert_eq!(&r[..5], &a[..5]);
    assert_eq!(&r[8..], &a[8..]);
    let v = s.verify(1, SS).unwrap();
    assert!(v.bad.is_empty(), "{v:?}");
}

const MIB: u32 = 1 << 20;

#[test]
fn a_small_write_after_a_sync_copies_nothing() {
    let d = TempDir::new("chunk-small");
    let (t, s) = store(&d.0);
    let a = pattern(MIB as usize, 11);
    s.write(4, 0, MIB, 0, &a).unwrap();
    s.sync(None).unwrap();
    // A 4 KiB write: the other slot holds that block only.
    s.write(4, 0, MIB, 300_000, &[7u8; 4096]).unwrap();
    let new = s_other(&t, 4);
    use std::os::unix::fs::MetadataExt;
    let allocated = fs::metadata(&new).unwrap().blocks() * 512;
    assert!(
        allocated <= 64 << 10,
        "a 4 KiB write allocated {allocated} bytes"
    );
    let mut want = a.clone();
    want[300_000..304_096].fill(7);
    assert_eq!(s.read(4, 0, MIB, 0, MIB).unwrap(), want);
    assert_eq!(
        s.read(4, 0, MIB, 299_000, 6000).unwrap(),
        &want[299_000..305_000]
    );
    // More small writes, overlapping, then a truncate and a write past it.
    s.write(4, 0, MIB, 303_000, &[8u8; 10]).unwrap();
    want[303_000..303_010].fill(8);
    s.sync(Some(4)).unwrap();
    assert_eq!(s.read(4, 0, MIB, 0, MIB).unwrap(), want);
    s.truncate(4, MIB, 500_000).unwrap();
    s.write(4, 0, MIB, 600_000, b"end").unwrap();
    want[500_000..].fill(0);
    want[600_000..600_003].copy_from_slice(b"end");
    assert_eq!(
        s.read(4, 0, MIB, 0, MIB).unwrap()[..600_003],
        want[..600_003]
    );
    s.sync(None).unwrap();
    let r = s.read(4, 0, MIB, 0, MIB).unwrap();
    assert_eq!(r[..600_003], want[..600_003]);
    assert!(r[600_003..].iter().all(|&b| b == 0));
    let v = s.verify(4, MIB).unwrap();
    assert_eq!((v.chunks, v.bytes, v.pending), (1, 600_003, 0));
    assert!(v.bad.is_empty());
    // A crash with small writes pending: the synced chunk is intact.
    s.write(4, 0, MIB, 10, b"lost").unwrap();
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(4, 0, MIB, 0, 600_003).unwrap(), &r[..600_003]);
}

#[test]
fn a_read_checks_only_the_blocks_it_reads() {
    let d = TempDir::new("chunk-blocks");
    let (t, s) = store(&d.0);
    let a = pattern(MIB as usize, 12);
    s.write(2, 1, MIB, 0, &a).unwrap();
    s.sync(None).unwrap();
    // Flip a byte in block 3 of the data.
    flip(&s, 2, 1, 3 * u64::from(BLOCK) + 5, 1);
    drop(t);
    // Blocks 0-2 and 4.. still read; block 3 is an error at its offset.
    assert_eq!(
        s.read(2, 1, MIB, 0, 3 * BLOCK).unwrap(),
        &a[..3 * BLOCK as usize]
    );
    assert_eq!(
        s.read(2, 1, MIB, 4 * BLOCK, 100).unwrap(),
        &a[4 * BLOCK as usize..4 * BLOCK as usize + 100]
    );
    for (off, len) in [(3 * BLOCK + 10, 1), (0, MIB), (3 * BLOCK - 1, 2)] {
        match s.read(2, 1, MIB, off, len).unwrap_err() {
            Error::ChunkCorrupt { file_offset, .. } => {
                assert_eq!(file_offset, u64::from(MIB) + u64::from(3 * BLOCK))
            }
            e => panic!("{e}"),
        }
    }
    let v = s.verify(2, MIB).unwrap();
    assert_eq!(v.bad.len(), 1);
    assert!(v.bad[0].1.contains(&(3 * BLOCK).to_string()), "{:?}", v.bad);
    // A small write into a sound block works; into the bad one it fails.
    s.write(2, 1, MIB, 10, b"ok").unwrap();
    assert!(matches!(
        s.write(2, 1, MIB, 3 * BLOCK + 1, b"no"),
        Err(Error::ChunkCorrupt { .. })
    ));
}

#[test]
fn a_stripe_size_other_than_the_pending_chunks_is_refused() {
    let d = TempDir::new("chunk-ss");
    let (_, s) = store(&d.0);
    s.write(1, 0, SS, 0, b"abc").unwrap();
    assert!(matches!(
        s.write(1, 0, SS * 2, 0, b"x"),
        Err(Error::InvalidLayout { .. })
    ));
    assert!(matches!(
        s.read(1, 0, SS * 2, 0, 1),
        Err(Error::InvalidLayout { .. })
    ));
}

mod ranges {
    use super::super::Ranges;
    use proptest::prelude::*;

    proptest! {
        /// Against a bitmap: inserts, clips, and the parts inside and outside.
        #[test]
        fn ranges_match_a_bitmap(ops in proptest::collection::vec((0u32..200, 0u32..60, any::<bool>()), 0..40), q in (0u32..260, 0u32..260)) {
            let mut r = Ranges::default();
            let mut bits = vec![false; 260];
            for (s, l, clip) in ops {
                if clip {
                    r.clip(s);
                    for b in &mut bits[s as usize..] { *b = false; }
                } else {
                    r.insert(s, s + l);
                    for b in &mut bits[s as usize..(s + l) as usize] { *b = true; }
                }
            }
            let (a, b) = (q.0.min(q.1), q.0.max(q.1));
            let mut inside = vec![false; 260];
            for (x, y) in r.inside(a, b) {
                prop_assert!(a <= x && x < y && y <= b);
                for i in x..y { inside[i as usize] = true; }
            }
            let mut gaps = vec![false; 260];
            for (x, y) in r.gaps(a, b) {
                prop_assert!(a <= x && x < y && y <= b);
                for i in x..y { gaps[i as usize] = true; }
            }
            for i in 0..260usize {
                let want = bits[i] && (a as usize..b as usize).contains(&i);
                prop_assert_eq!(inside[i], want, "inside at {}", i);
                let gap = !bits[i] && (a as usize..b as usize).contains(&i);
                prop_assert_eq!(gaps[i], gap, "gap at {}", i);
            }
            let end = bits.iter().rposition(|&b| b).map_or(0, |i| i as u32 + 1);
            prop_assert_eq!(r.end(), end);
            // Disjoint and not adjacent.
            let all = r.inside(0, 260);
            for w in all.windows(2) { prop_assert!(w[0].1 < w[1].0); }
        }
    }
}

#[test]
fn whole_stripes_written_directly_then_partly_rewritten() {
    let d = TempDir::new("chunk-direct");
    let (t, s) = store(&d.0);
    let a = pattern(MIB as usize, 14);
    s.write(3, 0, MIB, 0, &a).unwrap();
    // Read back before the sync (from the disk if it went direct).
    assert_eq!(s.read(3, 0, MIB, 0, MIB).unwrap(), a);
    // A partial write over it, then the seal: its checksums are right.
    s.write(3, 0, MIB, 70_000, b"mixed").unwrap();
    s.sync(None).unwrap();
    let mut want = a.clone();
    want[70_000..70_005].copy_from_slice(b"mixed");
    assert_eq!(s.read(3, 0, MIB, 0, MIB).unwrap(), want);
    let v = s.verify(3, MIB).unwrap();
    assert!(v.bad.is_empty(), "{v:?}");
    // A stripe size that is not a 4 KiB multiple goes buffered, and reads back.
    let odd = 5000u32;
    let b = pattern(odd as usize, 15);
    s.write(13, 0, odd, 0, &b).unwrap();
    s.sync(None).unwrap();
    assert_eq!(s.read(13, 0, odd, 0, odd).unwrap(), b);
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(3, 0, MIB, 0, MIB).unwrap(), want);
    assert!(s.verify(3, MIB).unwrap().bad.is_empty());
}

/// A store over `dir` with other [`DiskOptions`].
fn store_with(dir: &Path, o: DiskOptions) -> (Target, ChunkStore) {
    let t = Target::format(dir, FsId([1; 16]), 2, 3).unwrap();
    let s = ChunkStore::open_with(&t, o).unwrap();
    (t, s)
}

#[test]
fn direct_reads_check_every_block_and_stop_at_the_chunk_end() {
    let d = TempDir::new("chunk-direct-read");
    let (t, s) = store(&d.0);
    // A whole stripe (written direct) and a short one whose end is not a
    // 4 KiB multiple (the direct read comes back short at the file's end).
    let a = pattern(MIB as usize, 21);
    let b = pattern(300_001, 22);
    s.write(21, 0, MIB, 0, &a).unwrap();
    s.write(21, 1, MIB, 0, &b).unwrap();
    s.sync(None).unwrap();
    assert_eq!(s.read(21, 0, MIB, 0, MIB).unwrap(), a);
    let r = s.read(21, 1, MIB, 0, MIB).unwrap();
    assert_eq!(&r[..300_001], &b[..]);
    assert!(r[300_001..].iter().all(|&x| x == 0));
    assert_eq!(
        s.read(21, 1, MIB, 4096, 290_000).unwrap(),
        &b[4096..294_096]
    );
    // The end of a chunk is not mistaken for a file system without
    // direct I/O.
    assert!(s.direct_ok.load(Ordering::Relaxed));
    // A flipped bit in block 9 of the whole stripe: a direct read of the
    // stripe is refused naming that block, and returns nothing.
    flip(&s, 21, 0, 9 * u64::from(BLOCK) + 5, 1);
    match s.read(21, 0, MIB, 0, MIB) {
        Err(Error::ChunkCorrupt { file_offset, .. }) => {
            assert_eq!(file_offset, 9 * u64::from(BLOCK));
        }
        other => panic!("{other:?}"),
    }
    // The blocks before it still read (a read checks only its blocks).
    assert_eq!(
        s.read(21, 0, MIB, 0, 9 * BLOCK).unwrap(),
        &a[..9 * BLOCK as usize]
    );
    drop(t);
}

#[test]
fn a_store_without_direct_io_reads_and_writes_buffered() {
    let d = TempDir::new("chunk-direct-fallback");
    let (_, s) = store(&d.0.join("t"));
    s.direct_ok.store(false, Ordering::Relaxed);
    let a = pattern(MIB as usize, 24);
    s.write(2, 0, MIB, 0, &a).unwrap();
    s.sync(None).unwrap();
    assert_eq!(s.read(2, 0, MIB, 0, MIB).unwrap(), a);
    assert!(s.verify(2, MIB).unwrap().bad.is_empty());
}
#[test]
fn aligned_large_writes_go_direct_and_mix_with_buffered_ones() {
    let d = TempDir::new("chunk-direct-mix");
    let (t, s) = store(&d.0);
    // 512 KiB at 256 KiB (direct: aligned, >= 256 KiB), a 100-byte write
    // inside it (buffered) and an unaligned large one (buffered).
    let mut want = vec![0u8; MIB as usize];
    let x = pattern(512 << 10, 25);
    s.write(30, 0, MIB, 256 << 10, &x).unwrap();
    want[256 << 10..768 << 10].copy_from_slice(&x);
    s.write(30, 0, MIB, 300_000, &[9; 100]).unwrap();
    want[300_000..300_100].fill(9);
    let y = pattern(260_000, 26);
    s.write(30, 0, MIB, 700_001, &y).unwrap();
    want[700_001..960_001].copy_from_slice(&y);
    assert_eq!(
        s.read(30, 0, MIB, 0, MIB).unwrap()[..960_001],
        want[..960_001]
    );
    s.sync(None).unwrap();
    assert_eq!(s.read(30, 0, MIB, 0, 960_001).unwrap(), &want[..960_001]);
    assert!(s.verify(30, MIB).unwrap().bad.is_empty());
    // The buffered engine reads what the direct one wrote, and back.
    drop(s);
    let s = ChunkStore::open_with(&t, DiskOptions::buffered()).unwrap();
    assert_eq!(s.read(30, 0, MIB, 0, 960_001).unwrap(), &want[..960_001]);
    s.write(30, 1, MIB, 0, &want).unwrap();
    s.sync(None).unwrap();
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    assert_eq!(s.read(30, 1, MIB, 0, MIB).unwrap(), want);
}

#[test]
fn parallel_flushes_all_land_and_a_failed_sync_keeps_the_synced_stripes() {
    let d = TempDir::new("chunk-seals");
    let (t, s) = store_with(
        &d.0,
        DiskOptions {
            seal_threads: 4,
            ..DiskOptions::default()
        },
    );
    let old: Vec<Vec<u8>> = (0..12).map(|k| pattern(SS as usize, k)).collect();
    // Stripes of several files, synced together (one commit).
    for (k, a) in old.iter().enumerate() {
        s.write(40 + k as u64 % 3, k as u64, SS, 0, a).unwrap();
    }
    s.sync(None).unwrap();
    for (k, a) in old.iter().enumerate() {
        assert_eq!(&s.read(40 + k as u64 % 3, k as u64, SS, 0, SS).unwrap(), a);
    }
    // New data for every stripe; the sync fails before its commit: a
    // writer still reads its writes, a restart finds the old data.
    let new: Vec<Vec<u8>> = (0..12).map(|k| pattern(SS as usize, 100 + k)).collect();
    for (k, a) in new.iter().enumerate() {
        s.write(40 + k as u64 % 3, k as u64, SS, 0, a).unwrap();
    }
    s.fail_before_commit.store(true, Ordering::Relaxed);
    assert!(s.sync(None).is_err());
    for (k, a) in new.iter().enumerate() {
        assert_eq!(&s.read(40 + k as u64 % 3, k as u64, SS, 0, SS).unwrap(), a);
    }
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    for (k, a) in old.iter().enumerate() {
        assert_eq!(&s.read(40 + k as u64 % 3, k as u64, SS, 0, SS).unwrap(), a);
    }
    // Written again and synced: every stripe is new after a restart.
    for (k, a) in new.iter().enumerate() {
        s.write(40 + k as u64 % 3, k as u64, SS, 0, a).unwrap();
    }
    s.sync(None).unwrap();
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    for (k, a) in new.iter().enumerate() {
        assert_eq!(&s.read(40 + k as u64 % 3, k as u64, SS, 0, SS).unwrap(), a);
    }
    for ino in 40..43 {
        let v = s.verify(ino, SS).unwrap();
        assert_eq!((v.chunks, v.pending), (4, 0));
        assert!(v.bad.is_empty());
    }
}
/// A full disk under direct whole-stripe writes (root: a tmpfs target).
#[test]
fn enospc_from_a_direct_write_is_no_space_and_corrupts_nothing() {
    let d = TempDir::new("chunk-enospc-direct");
    let Some(m) = crate::target::tests::small_tmpfs(&d.0, "4m") else {
        return;
    };
    let (_, s) = store(&m.0.join("t"));
    let a = pattern(MIB as usize, 27);
    s.write(1, 0, MIB, 0, &a).unwrap();
    s.sync(None).unwrap();
    let mut err = None;
    for st in 1..20 {
        if let Err(e) = s.write(1, st, MIB, 0, &a) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("a 4 MiB target filled up");
    assert!(matches!(e, Error::NoSpace { server: 2, .. }), "{e}");
    assert_eq!(s.read(1, 0, MIB, 0, MIB).unwrap(), a);
}

#[test]
fn the_chunk_map_survives_snapshots_of_its_journal() {
    let d = TempDir::new("chunk-snapshot");
    let (t, s) = store(&d.0);
    // Enough commits to pass the (test-sized) snapshot bound several
    // times, with rewrites (slot flips), a cut and a removed file between.
    for round in 0..40u8 {
        for st in 0..4u64 {
            s.write(50, st, SS, 0, &pattern(SS as usize, round ^ st as u8))
                .unwrap();
        }
        s.write(51, u64::from(round), SS, 0, &[round; 10]).unwrap();
        s.sync(None).unwrap();
    }
    s.truncate(51, SS, 20 * u64::from(SS)).unwrap();
    s.write(52, 0, SS, 0, b"gone").unwrap();
    s.sync(None).unwrap();
    s.remove(52).unwrap();
    assert!(t.chunk_dir().join("snapshot").exists());
    drop(s);
    let s = ChunkStore::open(&t).unwrap();
    for st in 0..4u64 {
        assert_eq!(
            s.read(50, st, SS, 0, SS).unwrap(),
            pattern(SS as usize, 39 ^ st as u8)
        );
    }
    assert_eq!(s.stripes(51).unwrap().len(), 20);
    assert_eq!(s.read(51, 19, SS, 0, 10).unwrap(), vec![19; 10]);
    assert!(s.stripes(52).unwrap().is_empty());
    assert!(s.verify(50, SS).unwrap().bad.is_empty());
}

/// `read_into` an aligned buffer (a server's reply slot): the same bytes
/// as `read` in every case, the fast path (one direct read into the
/// buffer) included; its checksums are checked there, and a pending
/// rewrite, an unaligned buffer or a range past the stripe's end take the
/// general path.
#[test]
fn reads_into_a_buffer_match_reads_and_check_every_block() {
    let d = TempDir::new("chunk-read-into");
    let (t, s) = store(&d.0);
    let a = pattern(MIB as usize, 41);
    let b = pattern(300_001, 42);
    s.write(41, 0, MIB, 0, &a).unwrap();
    s.write(41, 1, MIB, 0, &b).unwrap();
    s.sync(None).unwrap();
    let cases: [(u64, u32, u32); 7] = [
        (0, 0, MIB),               // whole stripe: direct into the buffer
        (0, 256 << 10, 256 << 10), // a read piece: direct
        (1, 0, 300_001),           // to the stripe's unaligned end: direct
        (1, 0, MIB),               // past the end: zeros after it
        (1, 262_144, 37_857),      // small: general path
        (0, 4097, 300_000),        // unaligned offset: general path
        (0, 0, 0),                 // nothing
    ];
    with_staging(MIB as usize, |out| {
        for (stripe, off, len) in cases {
            out.fill(0xee);
            s.read_into(41, stripe, MIB, off, len, out).unwrap();
            let want = s.read(41, stripe, MIB, off, len).unwrap();
            assert!(out[..len as usize] == want[..], "{stripe} {off} {len}");
        }
        // A buffer shorter than the read is an error, not a panic.
        assert!(s.read_into(41, 0, MIB, 0, MIB, &mut out[..100]).is_err());
    });
    // An unaligned buffer: the same bytes.
    let mut v = vec![0u8; MIB as usize + 1];
    s.read_into(41, 0, MIB, 0, MIB, &mut v[1..]).unwrap();
    assert!(v[1..] == a[..]);
    assert!(s.direct_ok.load(Ordering::Relaxed));
    // A flipped bit in block 9: refused naming the block, on both paths.
    flip(&s, 41, 0, 9 * u64::from(BLOCK) + 5, 1);
    with_staging(MIB as usize, |out| {
        match s.read_into(41, 0, MIB, 0, MIB, out) {
            Err(Error::ChunkCorrupt { file_offset, .. }) => {
                assert_eq!(file_offset, 9 * u64::from(BLOCK));
            }
            other => panic!("{other:?}"),
        }
    });
    assert!(matches!(
        s.read_into(41, 0, MIB, 0, MIB, &mut v[1..]),
        Err(Error::ChunkCorrupt { .. })
    ));
    // A pending rewrite of the whole stripe, written from an aligned
    // buffer (no copy): read back before and after its sync.
    let c = pattern(MIB as usize, 43);
    with_staging(MIB as usize, |buf| {
        buf.copy_from_slice(&c);
        s.write(41, 0, MIB, 0, buf).unwrap();
    });
    with_staging(MIB as usize, |out| {
        s.read_into(41, 0, MIB, 0, MIB, out).unwrap();
        assert!(out[..] == c[..]);
        s.sync(None).unwrap();
        out.fill(0);
        s.read_into(41, 0, MIB, 0, MIB, out).unwrap();
        assert!(out[..] == c[..]);
    });
    assert!(s.verify(41, MIB).unwrap().bad.is_empty());
    drop(t);
}
