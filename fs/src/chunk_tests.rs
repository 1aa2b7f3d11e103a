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
