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
fn a_torn_pending_chunk_never_replaces_synced_data() {
    let d = TempDir::new("chunk-torn");
    let (t, s) = store(&d.0);
    let a = pattern(SS as usize, 4);
    s.write(8, 2, SS, 0, &a).unwrap();
    s.sync(None).unwrap();
    s.write(8, 2, SS, 10, b"zzzz").unwrap();
    drop(s);
    // A crash in the middle of writing the pending copy: cut it short.
    let new = t.chunk_dir().join("08/8/2.new");
    assert!(new.exists());
    let f = OpenOptions::new().write(true).open(&new).unwrap();
    f.set_len(HEADER as u64 + 5).unwrap();
    let s = ChunkStore::open(&t).unwrap();
    assert!(!new.exists());
    assert_eq!(s.read(8, 2, SS, 0, SS).unwrap(), a);
}

#[test]
fn corruption_is_reported_with_file_offset_and_never_returned() {
    let d = TempDir::new("chunk-corrupt");
    let (t, s) = store(&d.0);
    s.write(9, 4, SS, 0, &pattern(SS as usize, 5)).unwrap();
    s.write(9, 5, SS, 0, &pattern(100, 6)).unwrap();
    s.sync(None).unwrap();
    let p = t.chunk_dir().join("09/9/4");
    let mut b = fs::read(&p).unwrap();
    b[HEADER + 77] ^= 0x40;
    fs::write(&p, &b).unwrap();
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
    // A chunk renamed to another stripe's name is caught by its header.
    fs::copy(t.chunk_dir().join("09/9/5"), t.chunk_dir().join("09/9/6")).unwrap();
    assert!(matches!(
        s.read(9, 6, SS, 0, 1),
        Err(Error::ChunkCorrupt { stripe: 6, .. })
    ));
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
    // A 4 KiB write: the pending chunk holds its header and that block only.
    s.write(4, 0, MIB, 300_000, &[7u8; 4096]).unwrap();
    let new = t.chunk_dir().join("04/4/0.new");
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
    let p = t.chunk_dir().join("02/2/1");
    let mut b = fs::read(&p).unwrap();
    let at = data_offset(MIB) as usize + 3 * BLOCK as usize + 5;
    b[at] ^= 1;
    fs::write(&p, &b).unwrap();
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
fn format_1_chunks_are_read_and_newer_formats_refused() {
    let d = TempDir::new("chunk-v1");
    let (t, s) = store(&d.0);
    let data = pattern(5000, 13);
    // A format-1 chunk as the previous dosfs wrote it.
    let mut h = vec![0u8; 32];
    h[0..4].copy_from_slice(b"dosC");
    h[4..6].copy_from_slice(&1u16.to_le_bytes());
    h[8..16].copy_from_slice(&6u64.to_le_bytes());
    h[16..24].copy_from_slice(&0u64.to_le_bytes());
    h[24..28].copy_from_slice(&5000u32.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..28]), &data);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&data);
    let dir = t.chunk_dir().join("06/6");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("0"), &h).unwrap();
    assert_eq!(s.read(6, 0, SS, 0, 5000).unwrap(), data);
    // A small write and a sync rewrite it as format 2.
    s.write(6, 0, SS, 4, b"v2").unwrap();
    s.sync(None).unwrap();
    let b = fs::read(dir.join("0")).unwrap();
    assert_eq!(u16::from_le_bytes([b[4], b[5]]), VERSION);
    let mut want = data.clone();
    want[4..6].copy_from_slice(b"v2");
    assert_eq!(s.read(6, 0, SS, 0, 5000).unwrap(), want);
    // A newer format is refused, naming it.
    let mut b = b;
    b[4] = 9;
    fs::write(dir.join("0"), &b).unwrap();
    let e = s.read(6, 0, SS, 0, 1).unwrap_err();
    assert!(e.to_string().contains("format 9"), "{e}");
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
