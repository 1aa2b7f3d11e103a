use super::*;
use crate::target::tests::TempDir;
use crate::target::FsId;

fn p(s: &str) -> FsPath {
    FsPath::parse(s).unwrap()
}

fn target(d: &TempDir, servers: u32) -> Target {
    Target::format(&d.0.join("t0"), FsId([7; 16]), 0, servers).unwrap()
}

/// Every path with its kind, size and layout, sorted.
fn dump(m: &Meta) -> Vec<(String, Attr)> {
    let mut out = Vec::new();
    let mut stack = vec![FsPath::root()];
    while let Some(dir) = stack.pop() {
        let mut after = String::new();
        loop {
            let (page, more) = m.readdir(&dir, &after, 3).unwrap();
            for e in &page {
                let child = dir.join(&e.name).unwrap();
                let a = m.stat(&child).unwrap();
                out.push((child.to_string(), a));
                if e.kind == Kind::Dir {
                    stack.push(child);
                }
            }
            match page.last() {
                Some(last) if more => after = last.name.clone(),
                _ => break,
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn namespace_operations() {
    let d = TempDir::new("meta-ops");
    let mut m = Meta::open(&target(&d, 3)).unwrap();
    m.mkdir(&p("/a")).unwrap();
    let f = m.create(&p("/a/f"), None, true).unwrap();
    assert_eq!(f.kind, Kind::File);
    assert_eq!(f.layout.stripe_count, 3);
    assert!(matches!(
        m.create(&p("/a/f"), None, true),
        Err(Error::Exists { .. })
    ));
    assert_eq!(m.create(&p("/a/f"), None, false).unwrap().ino, f.ino);
    assert!(matches!(m.mkdir(&p("/a")), Err(Error::Exists { .. })));
    assert!(matches!(
        m.create(&p("/nope/f"), None, true),
        Err(Error::NotFound { path }) if path == "/nope"
    ));
    assert!(matches!(
        m.create(&p("/a/f/g"), None, true),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(m.unlink(&p("/a")), Err(Error::NotEmpty { .. })));
    assert_eq!(m.lookup(ROOT, "a").unwrap().kind, Kind::Dir);
    assert!(m.lookup(ROOT, "..").is_err());

    // Sizes: grow-only reports never shrink; set_size does.
    assert_eq!(m.set_size(f.ino, 100, true).unwrap().size, 100);
    assert_eq!(m.set_size(f.ino, 50, true).unwrap().size, 100);
    assert_eq!(m.set_size(f.ino, 50, false).unwrap().size, 50);

    // Rename over a file returns the replaced one; into itself is refused.
    let g = m.create(&p("/g"), None, true).unwrap();
    let replaced = m.rename(&p("/g"), &p("/a/f")).unwrap().unwrap();
    assert_eq!(replaced.ino, f.ino);
    assert_eq!(m.stat(&p("/a/f")).unwrap().ino, g.ino);
    assert!(m.stat(&p("/g")).is_err());
    m.mkdir(&p("/a/sub")).unwrap();
    assert!(matches!(
        m.rename(&p("/a"), &p("/a/sub/x")),
        Err(Error::InvalidPath { .. })
    ));
    m.rename(&p("/a/sub"), &p("/sub2")).unwrap();
    assert_eq!(m.stat(&p("/sub2")).unwrap().kind, Kind::Dir);
    assert_eq!(m.unlink(&p("/a/f")).unwrap().ino, g.ino);
    assert!(matches!(m.unlink(&p("/")), Err(Error::InvalidPath { .. })));
    assert!(matches!(m.mkdir(&p("/")), Err(Error::Exists { .. })));
}

#[test]
fn layouts_are_inherited_and_fixed() {
    let d = TempDir::new("meta-stripe");
    let mut m = Meta::open(&target(&d, 4)).unwrap();
    m.mkdir(&p("/d")).unwrap();
    let spec = LayoutSpec {
        stripe_size: 65536,
        stripe_count: 2,
        first: LayoutSpec::ANY,
    };
    m.set_stripe(&p("/d"), spec).unwrap();
    m.mkdir(&p("/d/e")).unwrap();
    let f = m.create(&p("/d/e/f"), None, true).unwrap();
    assert_eq!((f.layout.stripe_size, f.layout.stripe_count), (65536, 2));
    // An explicit spec on create overrides only what it sets.
    let g = m
        .create(
            &p("/d/g"),
            Some(LayoutSpec {
                stripe_count: 4,
                ..LayoutSpec::default()
            }),
            true,
        )
        .unwrap();
    assert_eq!((g.layout.stripe_size, g.layout.stripe_count), (65536, 4));
    // setstripe on a new path creates the file; on an existing one it fails.
    let h = m
        .set_stripe(
            &p("/h"),
            LayoutSpec {
                stripe_size: 8192,
                stripe_count: 1,
                first: 3,
            },
        )
        .unwrap();
    assert_eq!(h.layout, Layout::new(8192, 1, 3, 4).unwrap());
    assert!(matches!(
        m.set_stripe(&p("/h"), spec),
        Err(Error::LayoutFixed { .. })
    ));
    let bad = LayoutSpec {
        stripe_size: 1000,
        ..LayoutSpec::default()
    };
    assert!(matches!(
        m.set_stripe(&p("/d"), bad),
        Err(Error::InvalidLayout { .. })
    ));
}

#[test]
fn restart_finds_every_synced_change() {
    let d = TempDir::new("meta-restart");
    let t = target(&d, 2);
    let before = {
        let mut m = Meta::open(&t).unwrap();
        for i in 0..50 {
            m.mkdir(&p(&format!("/d{}", i % 5))).ok();
            let f = m
                .create(&p(&format!("/d{}/f{i}", i % 5)), None, true)
                .unwrap();
            m.set_size(f.ino, i * 1000, true).unwrap();
        }
        m.rename(&p("/d1/f1"), &p("/d2/moved")).unwrap();
        m.unlink(&p("/d3/f3")).unwrap();
        m.sync().unwrap();
        dump(&m)
    };
    let m = Meta::open(&t).unwrap();
    assert_eq!(dump(&m), before);
    assert_eq!(m.stat(&p("/d2/moved")).unwrap().size, 1000);
    // New inodes do not reuse old numbers.
    let mut m = m;
    let n = m.create(&p("/new"), None, true).unwrap();
    assert!(before.iter().all(|(_, a)| a.ino != n.ino));
}

#[test]
fn torn_journal_tail_loses_only_the_last_change() {
    let d = TempDir::new("meta-torn");
    let t = target(&d, 1);
    let mut m = Meta::open(&t).unwrap();
    m.create(&p("/a"), None, true).unwrap();
    m.create(&p("/b"), None, true).unwrap();
    m.sync().unwrap();
    drop(m);
    let j = t.meta_dir().join("journal");
    let len = std::fs::metadata(&j).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&j).unwrap();
    f.set_len(len - 3).unwrap();
    let m = Meta::open(&t).unwrap();
    assert!(m.stat(&p("/a")).is_ok());
    assert!(matches!(m.stat(&p("/b")), Err(Error::NotFound { .. })));
}

#[test]
fn corrupted_journal_is_detected() {
    let d = TempDir::new("meta-corrupt");
    let t = target(&d, 1);
    let mut m = Meta::open(&t).unwrap();
    m.create(&p("/a"), None, true).unwrap();
    m.create(&p("/b"), None, true).unwrap();
    drop(m);
    let j = t.meta_dir().join("journal");
    let mut b = std::fs::read(&j).unwrap();
    b[20] ^= 0x01;
    std::fs::write(&j, &b).unwrap();
    let e = Meta::open(&t).unwrap_err();
    assert!(matches!(e, Error::MetaCorrupt { .. }), "{e}");
    assert!(e.to_string().contains("journal"), "{e}");
}

#[test]
fn snapshots_keep_the_namespace() {
    let d = TempDir::new("meta-snap");
    let t = target(&d, 3);
    let mut m = Meta::open(&t).unwrap();
    m.snapshot_after = 512;
    for i in 0..40 {
        m.mkdir(&p(&format!("/x{}", i % 4))).ok();
        m.create(&p(&format!("/x{}/y{i}", i % 4)), None, true)
            .unwrap();
        if i % 10 == 9 {
            m.sync().unwrap();
        }
    }
    m.set_stripe(
        &p("/x1"),
        LayoutSpec {
            stripe_size: 8192,
            ..LayoutSpec::default()
        },
    )
    .unwrap();
    m.unlink(&p("/x0/y0")).unwrap();
    m.sync().unwrap();
    let before = dump(&m);
    assert!(t.meta_dir().join("snapshot").exists());
    drop(m);
    let mut m = Meta::open(&t).unwrap();
    assert_eq!(dump(&m), before);
    let f = m.create(&p("/x1/new"), None, true).unwrap();
    assert_eq!(f.layout.stripe_size, 8192);
}

#[test]
fn many_files_in_one_directory_page_in_order() {
    let d = TempDir::new("meta-many");
    let mut m = Meta::open(&target(&d, 2)).unwrap();
    let n = 5000;
    let start = std::time::Instant::now();
    for i in 0..n {
        m.create(&p(&format!("/f{i:06}")), None, true).unwrap();
    }
    m.sync().unwrap();
    let took = start.elapsed();
    let mut after = String::new();
    let mut seen = 0;
    loop {
        let (page, more) = m.readdir(&FsPath::root(), &after, 1000).unwrap();
        for e in &page {
            assert_eq!(e.name, format!("f{seen:06}"));
            seen += 1;
        }
        if !more {
            break;
        }
        after = page.last().unwrap().name.clone();
    }
    assert_eq!(seen, n);
    // Far below the 20,000 creates/s target even in a debug build on a
    // loaded machine: no per-create fsync, O(log n) insert.
    assert!(took.as_secs() < 10, "{n} creates took {took:?}");
}

#[test]
fn journal_records_round_trip() {
    let ops = [
        Op::Mkdir {
            parent: 1,
            name: "a".into(),
            ino: 2,
            spec: LayoutSpec::DEFAULT,
        },
        Op::Create {
            parent: 2,
            name: "b".into(),
            ino: 3,
            layout: Layout::new(4096, 2, 1, 3).unwrap(),
        },
        Op::Unlink {
            parent: 2,
            name: "b".into(),
        },
        Op::Rename {
            from_parent: 1,
            from_name: "x".into(),
            to_parent: 2,
            to_name: "y".into(),
        },
        Op::SetSize {
            ino: 9,
            size: u64::MAX,
        },
        Op::SetSpec {
            ino: 2,
            spec: LayoutSpec::default(),
        },
    ];
    for op in ops {
        let b = op.encode();
        assert_eq!(Op::decode(&b).unwrap(), op);
        for cut in 0..b.len() {
            assert!(Op::decode(&b[..cut]).is_err());
        }
    }
}

/// A full disk under the journal: the create fails with ENOSPC, and every
/// change before it survives a restart.
#[test]
fn full_disk_fails_the_change_and_keeps_the_rest() {
    let d = TempDir::new("meta-enospc");
    let Some(m) = crate::target::tests::small_tmpfs(&d.0, "64k") else {
        return;
    };
    let t = Target::format(&m.0.join("t"), FsId([7; 16]), 0, 1).unwrap();
    let mut meta = Meta::open(&t).unwrap();
    let long = "n".repeat(200);
    let mut made = Vec::new();
    let err = loop {
        let path = p(&format!("/{long}{}", made.len()));
        match meta.create(&path, None, true) {
            Ok(_) => made.push(path),
            Err(e) => break e,
        }
        assert!(made.len() < 100_000, "the tmpfs never filled");
    };
    assert!(matches!(err, Error::NoSpace { server: 0, .. }), "{err}");
    // The failed create is not visible, and the namespace still works.
    assert_eq!(
        meta.readdir(&FsPath::root(), "", MAX_READDIR)
            .unwrap()
            .0
            .len(),
        made.len().min(MAX_READDIR as usize)
    );
    meta.sync().unwrap();
    drop(meta);
    let meta = Meta::open(&t).unwrap();
    for path in &made {
        meta.stat(path).unwrap();
    }
    assert_eq!(meta.inode_count(), made.len() as u64 + 1);
}

mod crash {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Mkdir(u8),
        Create(u8, u8),
        Unlink(u8, u8),
        Rename(u8, u8, u8, u8),
        Size(u8, u8, u32),
        Sync,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..3).prop_map(Step::Mkdir),
            (0u8..3, 0u8..4).prop_map(|(d, f)| Step::Create(d, f)),
            (0u8..3, 0u8..4).prop_map(|(d, f)| Step::Unlink(d, f)),
            (0u8..3, 0u8..4, 0u8..3, 0u8..4).prop_map(|(a, b, c, d)| Step::Rename(a, b, c, d)),
            (0u8..3, 0u8..4, any::<u32>()).prop_map(|(d, f, s)| Step::Size(d, f, s)),
            Just(Step::Sync),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// A crash cuts the journal anywhere after the last sync: the
        /// restarted namespace is exactly the one after some operation at
        /// or after that sync (never a mix, never less than was synced).
        #[test]
        fn any_cut_after_the_last_sync_replays_to_a_prefix(steps in proptest::collection::vec(step(), 1..30), cut in any::<prop::sample::Index>()) {
            let d = TempDir::new("meta-crash");
            let t = target(&d, 2);
            let mut m = Meta::open(&t).unwrap();
            let f = |d: u8, f: u8| p(&format!("/d{d}/f{f}"));
            // (journal length, namespace) after each change.
            let mut states = vec![(0u64, dump(&m))];
            let mut synced = 0u64;
            for s in steps {
                let changed = match s {
                    Step::Mkdir(d) => m.mkdir(&p(&format!("/d{d}"))).is_ok(),
                    Step::Create(d, x) => m.create(&f(d, x), None, true).is_ok(),
                    Step::Unlink(d, x) => m.unlink(&f(d, x)).is_ok(),
                    Step::Rename(a, b, c, e) => m.rename(&f(a, b), &f(c, e)).is_ok(),
                    Step::Size(d, x, size) => match m.stat(&f(d, x)) {
                        Ok(a) => m.set_size(a.ino, u64::from(size), false).is_ok(),
                        Err(_) => false,
                    },
                    Step::Sync => {
                        m.sync().unwrap();
                        synced = m.journal.len();
                        false
                    }
                };
                if changed && m.journal.len() != states.last().unwrap().0 {
                    states.push((m.journal.len(), dump(&m)));
                }
            }
            let end = m.journal.len();
            drop(m);
            let c = synced + cut.index((end - synced + 1) as usize) as u64;
            let j = t.meta_dir().join("journal");
            std::fs::OpenOptions::new().write(true).open(&j).unwrap().set_len(c).unwrap();
            let m = Meta::open(&t).unwrap();
            let want = &states.iter().rev().find(|(len, _)| *len <= c).unwrap().1;
            prop_assert_eq!(&dump(&m), want);
        }
    }
}

/// Creates lost with the journal's unsynced tail (a power cut) never let a
/// later file reuse their inode numbers: data servers may hold chunks
/// under them.
#[test]
fn inode_numbers_are_never_reused_after_a_lost_tail() {
    let d = TempDir::new("meta-reserve");
    let t = target(&d, 2);
    let mut m = Meta::open(&t).unwrap();
    m.create(&p("/first"), None, true).unwrap();
    // The reservation made by the first create was fsynced; what follows
    // is not.
    let durable = m.journal.len();
    let mut handed_out = Vec::new();
    for i in 0..10 {
        handed_out.push(m.create(&p(&format!("/lost{i}")), None, true).unwrap().ino);
    }
    drop(m);
    let j = t.meta_dir().join("journal");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&j)
        .unwrap()
        .set_len(durable)
        .unwrap();
    let mut m = Meta::open(&t).unwrap();
    assert!(m.stat(&p("/lost0")).is_err());
    let fresh = m.create(&p("/new"), None, true).unwrap().ino;
    assert!(
        handed_out.iter().all(|&i| i < fresh),
        "{fresh} reuses one of {handed_out:?}"
    );
    // Across a snapshot too.
    m.snapshot_after = 0;
    m.sync().unwrap();
    let last = m.create(&p("/new2"), None, true).unwrap().ino;
    drop(m);
    let mut m = Meta::open(&t).unwrap();
    assert!(m.create(&p("/new3"), None, true).unwrap().ino > last);
}

/// A sync in two halves (the fsync outside the namespace lock): the handle
/// taken before more creates, then the snapshot; a reopen finds everything.
#[test]
fn a_sync_in_two_halves_keeps_everything() {
    let d = TempDir::new("meta-sync-halves");
    let t = target(&d, 1);
    let mut m = Meta::open(&t).unwrap();
    m.snapshot_after = 0;
    m.create(&p("/a"), None, true).unwrap();
    let h = m.sync_handle().unwrap();
    // Metadata goes on while the fsync would run.
    m.mkdir(&p("/d")).unwrap();
    h.sync().unwrap();
    m.create(&p("/d/b"), None, true).unwrap();
    m.finish_sync().unwrap();
    let before = dump(&m);
    drop(m);
    let m = Meta::open(&t).unwrap();
    assert_eq!(dump(&m), before);
    assert_eq!(before.len(), 3);
}

/// The next inode reservation is fsynced ahead of need, off the namespace
/// lock: creates never hand out a number beyond what is durable, and a
/// reopen after a lost tail at any point resumes above every number given.
#[test]
fn reservations_are_made_durable_ahead_of_need() {
    let d = TempDir::new("meta-refill");
    let t = target(&d, 1);
    let mut m = Meta::open(&t).unwrap();
    let mut last = 0;
    for i in 0..(3 * INODE_BATCH) {
        let ino = m.create(&p(&format!("/f{i}")), None, true).unwrap().ino;
        assert!(ino < m.durable.load(Ordering::Acquire), "{ino} not durable");
        last = ino;
    }
    // The refill thread's fsync, not the create path, made the later
    // batches durable: at most the first batch was synced inline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while m.refilling.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(m.durable.load(Ordering::Acquire) > last);
    drop(m);
    let mut m = Meta::open(&t).unwrap();
    assert!(m.create(&p("/after"), None, true).unwrap().ino > last);
}
