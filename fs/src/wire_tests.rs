use super::*;
use proptest::prelude::*;

fn attr() -> Attr {
    Attr {
        ino: 42,
        kind: Kind::File,
        size: 1 << 33,
        layout: Layout::new(1 << 20, 3, 1, 4).unwrap(),
    }
}

fn requests() -> Vec<Request> {
    let spec = LayoutSpec {
        stripe_size: 65536,
        stripe_count: LayoutSpec::ALL,
        first: 2,
    };
    vec![
        Request::Stat {
            path: "/a/b".into(),
        },
        Request::Lookup {
            parent: 1,
            name: "x".into(),
        },
        Request::Create {
            path: "/f".into(),
            spec: None,
            exclusive: true,
        },
        Request::Create {
            path: "/g".into(),
            spec: Some(spec),
            exclusive: false,
        },
        Request::Mkdir { path: "/d".into() },
        Request::Readdir {
            path: "/".into(),
            after: "m".into(),
            limit: 100,
        },
        Request::Unlink { path: "/f".into() },
        Request::Rename {
            from: "/a".into(),
            to: "/b".into(),
        },
        Request::SetSize {
            ino: 9,
            size: 12345,
            grow_only: true,
        },
        Request::SetStripe {
            path: "/d".into(),
            spec,
        },
        Request::Read {
            ino: 9,
            stripe: 3,
            stripe_size: 4096,
            offset: 10,
            len: 20,
        },
        Request::Write {
            ino: 9,
            stripe: 3,
            stripe_size: 4096,
            offset: 10,
            data: b"payload".to_vec(),
        },
        Request::Sync { ino: Some(9) },
        Request::Sync { ino: None },
        Request::Statfs,
        Request::Verify {
            ino: 9,
            stripe_size: 4096,
        },
        Request::DropFile { ino: 9 },
        Request::Truncate {
            ino: 9,
            stripe_size: 4096,
            size: 7,
        },
        Request::StatIno { ino: 1 },
        Request::ShmSetup {
            slots: 16,
            slot_size: 1 << 20,
        },
        Request::RoceSetup {
            slots: 16,
            slot_size: 1 << 20,
            addr: (0..25).collect(),
        },
        Request::WriteSlot {
            ino: 9,
            stripe: 3,
            stripe_size: 4096,
            offset: 10,
            len: 20,
            slot: 2,
        },
        Request::ReadSlot {
            ino: 9,
            stripe: 3,
            stripe_size: 4096,
            offset: 10,
            len: 20,
            slot: 15,
        },
        Request::ListChunks { after: 7, limit: 3 },
    ]
}

fn replies() -> Vec<Reply> {
    vec![
        Reply::Ok,
        Reply::Attr(attr()),
        Reply::Entries {
            entries: vec![
                DirEntry {
                    name: "a".into(),
                    ino: 2,
                    kind: Kind::Dir,
                },
                DirEntry {
                    name: "ünïcode".into(),
                    ino: 3,
                    kind: Kind::File,
                },
            ],
            more: true,
        },
        Reply::Data(vec![1, 2, 3]),
        Reply::Space(ServerSpace {
            server: 2,
            total: 100,
            free: 50,
            inodes: 7,
        }),
        Reply::Verify(VerifyReport {
            chunks: 4,
            bytes: 400,
            pending: 1,
            bad: vec![(3, "checksum mismatch".into())],
        }),
        Reply::Renamed(None),
        Reply::Renamed(Some(attr())),
        Reply::Slots {
            count: 16,
            size: 1 << 20,
        },
        Reply::RoceSlots {
            count: 16,
            size: 1 << 20,
            addr: vec![7; 25],
            rkey: vec![b'R'; 21],
        },
        Reply::RoceSlots {
            count: 0,
            size: 0,
            addr: Vec::new(),
            rkey: Vec::new(),
        },
        Reply::Error(WireError::from_error(&Error::ChunkCorrupt {
            ino: 5,
            stripe: 6,
            file_offset: 7,
            server: 1,
            reason: "checksum mismatch".into(),
        })),
    ]
}

#[test]
fn every_request_and_reply_round_trips() {
    for (i, req) in requests().into_iter().enumerate() {
        let f = req.encode(i as u64 + 100);
        assert_eq!(
            decode_request_frame(&f).unwrap(),
            (i as u64 + 100, req.clone())
        );
        // Every strict prefix fails.
        for cut in 0..f.len() {
            assert!(
                decode_request_frame(&f[..cut]).is_err(),
                "{req:?} cut {cut}"
            );
        }
    }
    for rep in replies() {
        let f = rep.encode(7);
        assert_eq!(decode_reply_frame(&f).unwrap(), (7, rep.clone()));
        for cut in 0..f.len() {
            assert!(decode_reply_frame(&f[..cut]).is_err());
        }
    }
}

#[test]
fn golden_bytes() {
    let f = Request::Stat { path: "/a".into() }.encode(0x0102);
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'd', b'o', b's', b'F', 1, 1, 0, 0,   // magic, version, kind Stat
        0x02, 0x01, 0, 0, 0, 0, 0, 0,         // id
        6, 0, 0, 0, 0, 0, 0, 0,               // body length, reserved
        2, 0, 0, 0, b'/', b'a',               // path
    ];
    assert_eq!(f, want);
    let f = Request::Read {
        ino: 5,
        stripe: 1,
        stripe_size: 4096,
        offset: 2,
        len: 3,
    }
    .encode(1);
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'd', b'o', b's', b'F', 1, 11, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0,
        28, 0, 0, 0, 0, 0, 0, 0,
        5, 0, 0, 0, 0, 0, 0, 0,               // ino
        1, 0, 0, 0, 0, 0, 0, 0,               // stripe
        0, 0x10, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, // stripe size, offset, len
    ];
    assert_eq!(f, want);
    let e = Reply::Error(WireError {
        code: ErrorCode::NotFound,
        nums: [0; 3],
        message: "/x".into(),
    })
    .encode(9);
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'd', b'o', b's', b'F', 1, 0xff, 0, 0,
        9, 0, 0, 0, 0, 0, 0, 0,
        32, 0, 0, 0, 0, 0, 0, 0,
        1, 0,                                 // code NotFound
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0, b'/', b'x',
    ];
    assert_eq!(e, want);
    let f = Request::WriteSlot {
        ino: 5,
        stripe: 1,
        stripe_size: 4096,
        offset: 2,
        len: 3,
        slot: 7,
    }
    .encode(1);
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'd', b'o', b's', b'F', 1, 20, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0,
        32, 0, 0, 0, 0, 0, 0, 0,
        5, 0, 0, 0, 0, 0, 0, 0,               // ino
        1, 0, 0, 0, 0, 0, 0, 0,               // stripe
        0, 0x10, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, // stripe size, offset, len
        7, 0, 0, 0,                           // slot
    ];
    assert_eq!(f, want);
    let f = Reply::Slots {
        count: 2,
        size: 4096,
    }
    .encode(3);
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'd', b'o', b's', b'F', 1, 0x87, 0, 0,
        3, 0, 0, 0, 0, 0, 0, 0,
        8, 0, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0, 0, 0x10, 0, 0,            // count, size
    ];
    assert_eq!(f, want);
}

#[test]
fn rdma_setup_frames_are_golden_and_their_blobs_bounded() {
    let f = Request::RoceSetup {
        slots: 2,
        slot_size: 4096,
        addr: vec![9, 8, 7],
    }
    .encode(1);
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'd', b'o', b's', b'F', 1, 23, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0,
        15, 0, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0, 0, 0x10, 0, 0,            // slots, slot size
        3, 0, 0, 0, 9, 8, 7,                  // address
    ];
    assert_eq!(f, want);
    let f = Reply::RoceSlots {
        count: 2,
        size: 4096,
        addr: vec![1],
        rkey: vec![2, 3],
    }
    .encode(3);
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'd', b'o', b's', b'F', 1, 0x88, 0, 0,
        3, 0, 0, 0, 0, 0, 0, 0,
        19, 0, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0, 0, 0x10, 0, 0,            // count, size
        1, 0, 0, 0, 1,                        // address
        2, 0, 0, 0, 2, 3,                     // remote key
    ];
    assert_eq!(f, want);
    // An address or key over MAX_RDMA_BLOB is refused, at the limit taken.
    let long = vec![0u8; crate::wire::MAX_RDMA_BLOB + 1];
    let req = |addr: Vec<u8>| Request::RoceSetup {
        slots: 1,
        slot_size: 4096,
        addr,
    };
    assert!(decode_request_frame(&req(long.clone()).encode(1)).is_err());
    let ok = req(long[1..].to_vec());
    assert_eq!(decode_request_frame(&ok.encode(1)).unwrap(), (1, ok));
    let rep = |addr: Vec<u8>, rkey: Vec<u8>| Reply::RoceSlots {
        count: 1,
        size: 4096,
        addr,
        rkey,
    };
    assert!(decode_reply_frame(&rep(long.clone(), Vec::new()).encode(1)).is_err());
    assert!(decode_reply_frame(&rep(Vec::new(), long.clone()).encode(1)).is_err());
    // Truncated or with a byte too many: refused.
    let f = rep(vec![1], vec![2]).encode(1);
    for cut in HEADER_LEN..f.len() {
        let mut b = f[..cut].to_vec();
        let len = (cut - HEADER_LEN) as u32;
        b[16..20].copy_from_slice(&len.to_le_bytes());
        assert!(decode_reply_frame(&b).is_err(), "cut at {cut}");
    }
}

#[test]
fn bad_headers_are_refused_before_the_body() {
    let good = Request::Statfs.encode(1);
    for (i, v) in [(0usize, b'x'), (4, 2), (6, 1), (20, 1)] {
        let mut b = good.clone();
        b[i] = v;
        assert!(Header::decode(&b[..HEADER_LEN]).is_err(), "byte {i}");
    }
    let mut b = good.clone();
    b[16..20].copy_from_slice(&(MAX_BODY + 1).to_le_bytes());
    let e = Header::decode(&b[..HEADER_LEN]).unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    assert!(Request::decode(99, &[]).is_err());
    assert!(Reply::decode(0x90, &[]).is_err());
    // Trailing bytes after a valid body.
    let mut f = Request::DropFile { ino: 1 }.encode(1);
    f.push(0);
    f[16] += 1;
    assert!(decode_request_frame(&f).is_err());
    // A lying entry count does not allocate.
    let mut w = Writer::new();
    w.u8(0).u32(u32::MAX);
    assert!(Reply::decode(0x82, &w.into_vec()).is_err());
}

#[test]
fn errors_come_back_as_the_same_variant() {
    let cases = [
        Error::NotFound { path: "/x".into() },
        Error::Exists { path: "/x".into() },
        Error::NotEmpty { path: "/x".into() },
        Error::LayoutFixed { path: "/x".into() },
        Error::NoSpace {
            op: "write",
            server: 3,
        },
    ];
    for e in cases {
        let back = WireError::from_error(&e).into_error(3);
        assert_eq!(back.to_string(), e.to_string());
    }
    let e = WireError::from_error(&Error::InvalidPath {
        path: "a/..".into(),
        reason: "x",
    })
    .into_error(0);
    assert!(matches!(e, Error::InvalidPath { path, .. } if path == "a/.."));
    let e = WireError::from_error(&Error::io(
        "write",
        "/t",
        std::io::Error::from_raw_os_error(libc::EIO),
    ))
    .into_error(2);
    assert!(matches!(e, Error::Remote { server: 2, .. }), "{e}");
}

proptest! {
    #[test]
    fn decoders_never_panic(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Request::decode(kind, &body);
        let _ = Reply::decode(kind, &body);
        let _ = decode_request_frame(&body);
        let _ = decode_reply_frame(&body);
    }

    #[test]
    fn mutated_frames_never_panic(i in 0usize..22, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut f = requests()[i].encode(1);
        let p = pos.index(f.len());
        f[p] = byte;
        let _ = decode_request_frame(&f);
        let mut g = replies()[i % 10].encode(1);
        let p = pos.index(g.len());
        g[p] = byte;
        let _ = decode_reply_frame(&g);
    }
}
