use super::*;
use proptest::prelude::*;
use std::net::SocketAddr;

fn hdrs() -> IpUdp {
    IpUdp::new(
        "10.0.0.1:49152".parse().unwrap(),
        "10.0.0.2:4791".parse().unwrap(),
    )
}

fn qpn(v: u32) -> Qpn {
    Qpn::new(v).unwrap()
}

/// Rewrites the ICRC at the end of `b` to match its contents.
fn seal(h: &IpUdp, b: &mut [u8]) {
    let n = b.len() - ICRC_LEN;
    let c = icrc::icrc(h, &b[..n]).unwrap();
    b[n..].copy_from_slice(&c.to_le_bytes());
}

fn encode_vec(p: &Packet<'_>, h: &IpUdp) -> Vec<u8> {
    let mut buf = vec![0u8; p.encoded_len()];
    let n = p.encode(h, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn opcode_codes_and_layouts() {
    // (code, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, payload), from the
    // specification's table of RC opcodes and the headers each carries.
    #[rustfmt::skip]
    let table: [(u8, [bool; 6]); 21] = [
        (0x00, [false, false, false, false, false, true]), // SEND_FIRST
        (0x01, [false, false, false, false, false, true]), // SEND_MIDDLE
        (0x02, [false, false, false, false, false, true]), // SEND_LAST
        (0x03, [false, false, false, false, true, true]),  // SEND_LAST_WITH_IMMEDIATE
        (0x04, [false, false, false, false, false, true]), // SEND_ONLY
        (0x05, [false, false, false, false, true, true]),  // SEND_ONLY_WITH_IMMEDIATE
        (0x06, [true, false, false, false, false, true]),  // RDMA_WRITE_FIRST
        (0x07, [false, false, false, false, false, true]), // RDMA_WRITE_MIDDLE
        (0x08, [false, false, false, false, false, true]), // RDMA_WRITE_LAST
        (0x09, [false, false, false, false, true, true]),  // RDMA_WRITE_LAST_WITH_IMMEDIATE
        (0x0A, [true, false, false, false, false, true]),  // RDMA_WRITE_ONLY
        (0x0B, [true, false, false, false, true, true]),   // RDMA_WRITE_ONLY_WITH_IMMEDIATE
        (0x0C, [true, false, false, false, false, false]), // RDMA_READ_REQUEST
        (0x0D, [false, false, true, false, false, true]),  // RDMA_READ_RESPONSE_FIRST
        (0x0E, [false, false, false, false, false, true]), // RDMA_READ_RESPONSE_MIDDLE
        (0x0F, [false, false, true, false, false, true]),  // RDMA_READ_RESPONSE_LAST
        (0x10, [false, false, true, false, false, true]),  // RDMA_READ_RESPONSE_ONLY
        (0x11, [false, false, true, false, false, false]), // ACKNOWLEDGE
        (0x12, [false, false, true, true, false, false]),  // ATOMIC_ACKNOWLEDGE
        (0x13, [false, true, false, false, false, false]), // COMPARE_SWAP
        (0x14, [false, true, false, false, false, false]), // FETCH_ADD
    ];
    assert_eq!(Opcode::ALL.len(), table.len());
    for (op, (code, l)) in Opcode::ALL.iter().zip(table) {
        assert_eq!(op.code(), code, "{op:?}");
        assert_eq!(Opcode::from_code(code), Some(*op));
        let got = op.layout();
        assert_eq!(
            [
                got.reth,
                got.atomic_eth,
                got.aeth,
                got.atomic_ack_eth,
                got.immdt,
                got.payload
            ],
            l,
            "{}",
            op.name()
        );
    }
    assert_eq!(Opcode::RdmaWriteOnlyWithImmediate.headers_len(), 32);
    assert_eq!(Opcode::AtomicAcknowledge.headers_len(), 24);
    assert_eq!(
        Opcode::ALL.iter().map(|o| o.headers_len()).max(),
        Some(MAX_HEADERS_LEN)
    );
    // Reserved RC codes, and other transports (UC, RD, UD, CNP).
    for c in [0x15, 0x16, 0x17, 0x1F, 0x20, 0x24, 0x40, 0x64, 0x81, 0xFF] {
        assert_eq!(Opcode::from_code(c), None, "{c:#x}");
    }
    assert!(Opcode::Acknowledge.is_response());
    assert!(!Opcode::FetchAdd.is_response());
}

#[test]
fn bth_golden_bytes() {
    // RDMA_WRITE_ONLY (0x0A); SE=1 M=0 PadCnt=2 TVer=0 -> 1_0_10_0000 = 0xA0;
    // P_Key 0xFFFF; FECN=0 BECN=1 resv6=0 -> 0_1_000000 = 0x40; DestQP 0x123456;
    // AckReq=1 resv7=0 -> 0x80; PSN 0xABCDEF.
    let b = Bth {
        opcode: Opcode::RdmaWriteOnly,
        solicited: true,
        mig_req: false,
        pad_count: 2,
        pkey: 0xFFFF,
        fecn: false,
        becn: true,
        dest_qp: qpn(0x12_3456),
        ack_req: true,
        psn: Psn::new(0xAB_CDEF),
    };
    let want = [
        0x0A, 0xA0, 0xFF, 0xFF, 0x40, 0x12, 0x34, 0x56, 0x80, 0xAB, 0xCD, 0xEF,
    ];
    assert_eq!(b.encode(), want);
    assert_eq!(Bth::decode(&want).unwrap(), b);
    // ACKNOWLEDGE (0x11); SE=0 M=1 PadCnt=0 TVer=0 -> 0_1_00_0000 = 0x40; P_Key
    // 0x8001; FECN=1 BECN=0 -> 0x80; DestQP 1; AckReq=0; PSN 0xFFFFFF.
    let b = Bth {
        opcode: Opcode::Acknowledge,
        solicited: false,
        mig_req: true,
        pad_count: 0,
        pkey: 0x8001,
        fecn: true,
        becn: false,
        dest_qp: qpn(1),
        ack_req: false,
        psn: Psn::new(0xFF_FFFF),
    };
    let want = [
        0x11, 0x40, 0x80, 0x01, 0x80, 0x00, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0xFF,
    ];
    assert_eq!(b.encode(), want);
    assert_eq!(Bth::decode(&want).unwrap(), b);
    // Reserved bits are ignored: resv6 (byte 4, bits 5..0) and resv7 (byte 8, 6..0).
    let mut r = want;
    r[4] |= 0x3F;
    r[8] |= 0x7F;
    assert_eq!(Bth::decode(&r).unwrap(), b);
}

#[test]
fn bth_rejects_bad_input() {
    let good = Bth::new(Opcode::SendOnly, qpn(5), Psn::new(9)).encode();
    assert!(matches!(
        Bth::decode(&good[..11]),
        Err(WireError::Truncated {
            need: 12,
            have: 11,
            ..
        })
    ));
    let mut b = good;
    b[1] |= 0x01; // TVer 1
    assert_eq!(Bth::decode(&b), Err(WireError::UnsupportedVersion(1)));
    let mut b = good;
    b[0] = 0x64; // UD SEND_ONLY
    assert_eq!(Bth::decode(&b), Err(WireError::UnsupportedOpcode(0x64)));
}

#[test]
fn extension_header_golden_bytes() {
    // RETH: VA 0x0102030405060708 (8 bytes), R_Key 0x090A0B0C, DMA length 0x0D0E0F10.
    let r = Reth {
        va: 0x0102_0304_0506_0708,
        rkey: 0x090A_0B0C,
        dma_len: 0x0D0E_0F10,
    };
    let want: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
    assert_eq!(r.encode(), want);
    assert_eq!(Reth::decode(&want).unwrap(), r);

    // AETH: syndrome byte, then MSN (24 bits).
    // ACK with the "no credits" count: 0_00_11111 = 0x1F; MSN 0x000102.
    let cases = [
        (Syndrome::Ack { credits: 0x1F }, 0x1F),
        (Syndrome::Ack { credits: 0 }, 0x00),
        // RNR NAK, timer 14: 0_01_01110 = 0x2E.
        (Syndrome::RnrNak { timer: 14 }, 0x2E),
        // NAK: 0_11_ccccc with the NAK code.
        (Syndrome::Nak(NakCode::PsnSequenceError), 0x60),
        (Syndrome::Nak(NakCode::InvalidRequest), 0x61),
        (Syndrome::Nak(NakCode::RemoteAccessError), 0x62),
        (Syndrome::Nak(NakCode::RemoteOperationalError), 0x63),
        (Syndrome::Nak(NakCode::InvalidRdRequest), 0x64),
    ];
    for (syndrome, byte) in cases {
        let a = Aeth {
            syndrome,
            msn: Msn::new(0x00_0102),
        };
        let want = [byte, 0x00, 0x01, 0x02];
        assert_eq!(a.encode(), want, "{syndrome:?}");
        assert_eq!(Aeth::decode(&want).unwrap(), a);
    }
    // Reserved: bit 7, type 10, NAK codes 5..=31.
    for byte in [0x80, 0x9F, 0x40, 0x5F, 0x65, 0x7F] {
        assert!(
            matches!(Aeth::decode(&[byte, 0, 0, 0]), Err(WireError::Malformed(_))),
            "{byte:#x}"
        );
    }

    // AtomicETH: VA, R_Key, swap/add data, compare data.
    let a = AtomicEth {
        va: 0x1122_3344_5566_7788,
        rkey: 0x99AA_BBCC,
        swap_add: 1,
        compare: 0xFFFF_FFFF_FFFF_FFFE,
    };
    let want = [
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // VA
        0x99, 0xAA, 0xBB, 0xCC, // R_Key
        0, 0, 0, 0, 0, 0, 0, 1, // swap/add
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, // compare
    ];
    assert_eq!(a.encode(), want);
    assert_eq!(AtomicEth::decode(&want).unwrap(), a);

    // AtomicAckETH: original remote data.
    let a = AtomicAckEth {
        orig: 0x0123_4567_89AB_CDEF,
    };
    let want = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF];
    assert_eq!(a.encode(), want);
    assert_eq!(AtomicAckEth::decode(&want).unwrap(), a);

    // ImmDt: four bytes, big-endian.
    assert_eq!(ImmDt(0xDEAD_BEEF).encode(), [0xDE, 0xAD, 0xBE, 0xEF]);
    assert_eq!(
        ImmDt::decode(&[0xDE, 0xAD, 0xBE, 0xEF]).unwrap(),
        ImmDt(0xDEAD_BEEF)
    );

    // Short input.
    assert!(Reth::decode(&want).is_err());
    assert!(AtomicEth::decode(&[0; 27]).is_err());
    assert!(AtomicAckEth::decode(&[0; 7]).is_err());
    assert!(Aeth::decode(&[0; 3]).is_err());
    assert!(ImmDt::decode(&[0; 3]).is_err());
}

#[test]
fn packet_golden_bytes() {
    // SEND_ONLY_WITH_IMMEDIATE to QP 0x11, PSN 7, SE and AckReq, immediate
    // 0xDEADBEEF, payload "abcde": 5 bytes, so PadCnt 3 (byte 1: 1_0_11_0000 = 0xB0).
    // The ICRC was computed independently (Python's zlib.crc32 over the masked
    // pseudo-packet for 10.0.0.1:49152 -> 10.0.0.2:4791, IPv4 id 0, DF).
    let mut bth = Bth::new(Opcode::SendOnlyWithImmediate, qpn(0x11), Psn::new(7));
    bth.solicited = true;
    bth.ack_req = true;
    let mut p = Packet::new(bth);
    p.imm = Some(ImmDt(0xDEAD_BEEF));
    p.payload = b"abcde";
    #[rustfmt::skip]
    let want = [
        0x05, 0xB0, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x11, 0x80, 0x00, 0x00, 0x07, // BTH
        0xDE, 0xAD, 0xBE, 0xEF, // ImmDt
        b'a', b'b', b'c', b'd', b'e', // payload
        0, 0, 0, // pad
        0x87, 0xF9, 0x1B, 0xD3, // ICRC
    ];
    assert_eq!(encode_vec(&p, &hdrs()), want);
    let mut q = p;
    q.bth.pad_count = 3;
    assert_eq!(Packet::decode(&hdrs(), &want).unwrap(), q);

    // The same packet between fd00::1 and fd00::2 (same ports).
    let h6 = IpUdp::new(
        "[fd00::1]:49152".parse().unwrap(),
        "[fd00::2]:4791".parse().unwrap(),
    );
    let b6 = encode_vec(&p, &h6);
    assert_eq!(b6[..24], want[..24]);
    assert_eq!(b6[24..], [0x9E, 0x4A, 0xD8, 0x62]);
}

#[test]
fn structural_errors_with_a_valid_icrc() {
    let h = hdrs();
    let bth = |op: Opcode| Bth::new(op, qpn(3), Psn::new(1)).encode();
    let reason = |mut b: Vec<u8>| {
        seal(&h, &mut b);
        let e = Packet::decode(&h, &b).unwrap_err();
        assert_eq!(Packet::decode_unverified(&b).unwrap_err(), e);
        e
    };
    // Shorter than BTH + ICRC.
    assert!(matches!(
        Packet::decode(&h, &[0; 15]),
        Err(WireError::Truncated { need: 16, .. })
    ));
    // Not a multiple of four.
    let mut b = bth(Opcode::SendOnly).to_vec();
    b.extend_from_slice(&[1, 0, 0, 0, 0]);
    assert!(matches!(reason(b), WireError::Malformed(_)));
    // Unsupported opcodes and version.
    for code in [0x15, 0x17, 0x24, 0x64, 0x81] {
        let mut b = bth(Opcode::SendOnly).to_vec();
        b[0] = code;
        b.extend_from_slice(&[0; 4]);
        assert_eq!(reason(b), WireError::UnsupportedOpcode(code));
    }
    let mut b = bth(Opcode::SendOnly).to_vec();
    b[1] |= 0x0F;
    b.extend_from_slice(&[0; 4]);
    assert_eq!(reason(b), WireError::UnsupportedVersion(15));
    // An ACK without its AETH; a read request with half a RETH.
    let mut b = bth(Opcode::Acknowledge).to_vec();
    b.extend_from_slice(&[0; 4]);
    assert!(matches!(reason(b), WireError::Truncated { .. }));
    let mut b = bth(Opcode::RdmaReadRequest).to_vec();
    b.extend_from_slice(&[0; 8 + 4]);
    assert!(matches!(
        reason(b),
        WireError::Truncated {
            need: 16,
            have: 8,
            ..
        }
    ));
    // Bytes after an opcode without payload, and a pad count on one.
    let mut b = bth(Opcode::Acknowledge).to_vec();
    b.extend_from_slice(&[0; 4 + 4 + 4]);
    assert!(matches!(reason(b), WireError::Malformed(_)));
    let mut b = bth(Opcode::Acknowledge).to_vec();
    b[1] |= 0x10;
    b.extend_from_slice(&[0; 4 + 4]);
    assert!(matches!(reason(b), WireError::Malformed(_)));
    // A pad count larger than the bytes after the headers.
    let mut b = bth(Opcode::SendOnly).to_vec();
    b[1] |= 0x30;
    b.extend_from_slice(&[0; 4]);
    assert!(matches!(reason(b), WireError::Malformed(_)));
    // A reserved syndrome.
    let mut b = bth(Opcode::Acknowledge).to_vec();
    b.extend_from_slice(&[0x40, 0, 0, 1, 0, 0, 0, 0]);
    assert!(matches!(reason(b), WireError::Malformed(_)));
    // An empty send is fine, with or without pad bytes being all that is left.
    let mut b = bth(Opcode::SendOnly).to_vec();
    b.extend_from_slice(&[0; 4]);
    seal(&h, &mut b);
    assert_eq!(Packet::decode(&h, &b).unwrap().payload, b"");
    let mut b = bth(Opcode::SendOnly).to_vec();
    b[1] |= 0x30;
    b.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
    seal(&h, &mut b);
    assert_eq!(Packet::decode(&h, &b).unwrap().payload, [7]);
}

#[test]
fn encoder_rejects_bad_packets() {
    let h = hdrs();
    let mut buf = [0u8; 128];
    let mut p = Packet::new(Bth::new(Opcode::SendOnly, qpn(1), Psn::new(0)));
    p.reth = Some(Reth {
        va: 0,
        rkey: 0,
        dma_len: 0,
    });
    assert!(matches!(
        p.encode(&h, &mut buf),
        Err(WireError::Malformed(_))
    ));
    let mut p = Packet::new(Bth::new(Opcode::RdmaWriteOnly, qpn(1), Psn::new(0)));
    assert!(matches!(
        p.encode(&h, &mut buf),
        Err(WireError::Malformed(_))
    ));
    p.reth = Some(Reth {
        va: 0,
        rkey: 0,
        dma_len: 3,
    });
    p.payload = b"xyz";
    assert_eq!(p.encode(&h, &mut buf), Ok(12 + 16 + 4 + 4));
    assert_eq!(
        p.encode(&h, &mut buf[..35]),
        Err(WireError::BufferTooSmall { need: 36, have: 35 })
    );
    let mut p = Packet::new(Bth::new(Opcode::Acknowledge, qpn(1), Psn::new(0)));
    p.aeth = Some(Aeth {
        syndrome: Syndrome::Ack { credits: 0 },
        msn: Msn::new(0),
    });
    p.payload = b"no";
    assert!(matches!(
        p.encode(&h, &mut buf),
        Err(WireError::Malformed(_))
    ));
    p.payload = b"";
    let mixed = IpUdp::new(h.src, "[::1]:4791".parse::<SocketAddr>().unwrap());
    assert!(matches!(
        p.encode(&mixed, &mut buf),
        Err(WireError::Malformed(_))
    ));
    assert_eq!(p.encode(&h, &mut buf), Ok(20));
    let e: crate::Error = WireError::Icrc {
        carried: 1,
        computed: 2,
    }
    .into();
    assert!(matches!(
        e,
        crate::Error::Malformed {
            what: "roce packet",
            ..
        }
    ));
}

fn key(b: u8) -> PacketKey {
    PacketKey::from_bytes([b; 32])
}

fn keyed(h: IpUdp, b: u8) -> Framing {
    Framing {
        hdrs: h,
        key: Some(key(b)),
    }
}

fn encode_framed_vec(p: &Packet<'_>, f: &Framing) -> Vec<u8> {
    let mut buf = vec![0u8; p.framed_len(f.tag_len())];
    let n = p.encode_framed(f, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn authenticated_packets_carry_their_tag_before_the_pad() {
    let h = hdrs();
    let f = keyed(h, 1);
    let mut p = Packet::new(Bth::new(Opcode::SendOnly, qpn(0x11), Psn::new(7)));
    p.payload = b"hello";
    let b = encode_framed_vec(&p, &f);
    // BTH, payload, tag, pad (that of the payload), ICRC.
    assert_eq!(b.len(), 12 + 5 + 16 + 3 + 4);
    assert_eq!((b[1] >> 4) & 3, 3);
    assert_eq!(b[12..17], *b"hello");
    assert_eq!(b[17..33], key(1).tag(&b[..17]));
    assert_eq!(b[33..36], [0, 0, 0]);
    assert_eq!(Packet::decode_framed(&f, &b).unwrap(), decoded(&p));
    assert_eq!(
        Packet::decode_unverified_tagged(&b).unwrap(),
        (decoded(&p), 17)
    );
    // Any RoCEv2 decoder sees a valid packet whose payload ends with the tag.
    assert_eq!(Packet::decode(&h, &b).unwrap().payload, &b[12..33]);
    // Another connection's key, or none: not this connection's packet.
    assert_eq!(
        Packet::decode_framed(&keyed(h, 2), &b),
        Err(WireError::Auth)
    );
    let plain = encode_vec(&p, &h);
    assert!(Packet::decode_framed(&f, &plain).is_err());
    assert_eq!(
        Packet::decode_framed(&Framing::plain(h), &b)
            .unwrap()
            .payload,
        &b[12..33]
    );
    // An ACK: the tag is all that follows the AETH.
    let mut a = Packet::new(Bth::new(Opcode::Acknowledge, qpn(0x11), Psn::new(6)));
    a.aeth = Some(Aeth {
        syndrome: Syndrome::Ack { credits: 31 },
        msn: Msn::new(1),
    });
    let b = encode_framed_vec(&a, &f);
    assert_eq!(b.len(), 12 + 4 + 16 + 4);
    assert_eq!(Packet::decode_framed(&f, &b).unwrap(), a);
    assert!(matches!(
        Packet::decode(&h, &b),
        Err(WireError::Malformed(_))
    ));
    // A right tag is enough; a corruption is still reported as one.
    let mut c = encode_framed_vec(&a, &f);
    let n = c.len();
    c[n - 1] ^= 1;
    assert_eq!(Packet::decode_framed(&f, &c).unwrap(), a);
    c[n - 1] ^= 1;
    c[13] ^= 1;
    assert!(matches!(
        Packet::decode_framed(&f, &c),
        Err(WireError::Icrc { .. })
    ));
    // Too short for a tag.
    let mut short = encode_vec(&a, &h);
    assert!(matches!(
        Packet::decode_framed(&f, &short),
        Err(WireError::Malformed(_))
    ));
    short.truncate(12 + 4);
    short.extend_from_slice(&[0; 8 + 4]);
    seal(&h, &mut short);
    assert!(matches!(
        Packet::decode_framed(&f, &short),
        Err(WireError::Malformed(_))
    ));
}

/// What someone without the key who saw a packet can do: renumber it (PSN,
/// QPN), change any header or payload bit, and recompute the ICRC. Every
/// such packet fails (its tag, or its structure), for every opcode; and so
/// does a packet with another IPv4 identification only by its ICRC.
#[test]
fn forged_packets_with_a_valid_icrc_fail() {
    let h = hdrs();
    let f = keyed(h, 9);
    for &op in Opcode::ALL {
        let p = sample_packet(op, b"hello");
        let good = encode_framed_vec(&p, &f);
        assert_eq!(Packet::decode_framed(&f, &good).unwrap(), decoded(&p));
        let body = good.len() - ICRC_LEN;
        for bit in 0..body * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            seal(&h, &mut b);
            let r = Packet::decode_framed(&f, &b);
            assert!(r.is_err(), "{op:?} bit {bit}: {r:?}");
            let tag = body - p.pad_len() - AUTH_TAG_LEN..body - p.pad_len();
            if (5..12).contains(&(bit / 8)) || tag.contains(&(bit / 8)) {
                // QPN, PSN, tag: only the tag can tell (a flipped header
                // bit may also make the packet malformed).
                assert_eq!(r, Err(WireError::Auth), "{op:?} bit {bit}");
            }
        }
        // The next PSN, the right QPN, a valid ICRC: still no.
        let mut next = p;
        next.bth.psn = p.bth.psn.wrapping_add(1);
        let mut b = encode_framed_vec(&next, &keyed(h, 8));
        assert_eq!(Packet::decode_framed(&f, &b), Err(WireError::Auth));
        // A renumbered copy of the right packet.
        b.copy_from_slice(&good);
        b[9..12].copy_from_slice(&next.bth.psn.get().to_be_bytes()[1..]);
        seal(&h, &mut b);
        assert_eq!(Packet::decode_framed(&f, &b), Err(WireError::Auth));
    }
}

#[test]
fn sequence_numbers_wrap_at_24_bits() {
    assert_eq!(Psn::new(0x0100_0005).get(), 5);
    assert_eq!(Psn::new(Psn::MAX).wrapping_add(1), Psn::new(0));
    assert_eq!(Psn::new(2).distance_from(Psn::new(Psn::MAX)), 3);
    assert_eq!(Psn::new(Psn::MAX).distance_from(Psn::new(2)), -3);
    assert_eq!(Psn::new(0x80_0000).distance_from(Psn::new(0)), -0x80_0000);
    assert_eq!(Psn::new(0x7F_FFFF).distance_from(Psn::new(0)), 0x7F_FFFF);
    assert_eq!(Msn::new(u32::MAX).get(), Msn::MAX);
    assert_eq!(Qpn::new(Qpn::MAX).map(Qpn::get), Some(0xFF_FFFF));
    assert_eq!(Qpn::new(1 << 24), None);
}

/// Every bit of every packet is covered by the ICRC, except byte 4 of the BTH.
#[test]
fn every_flipped_bit_fails_the_icrc() {
    let h = hdrs();
    for &op in Opcode::ALL {
        let p = sample_packet(op, b"hello");
        let good = encode_vec(&p, &h);
        assert_eq!(Packet::decode(&h, &good).unwrap(), decoded(&p));
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let r = Packet::decode(&h, &b);
            if bit / 8 == 4 {
                // FECN, BECN, resv6: masked, so not covered.
                let q = r.unwrap();
                assert_eq!((q.bth.fecn, q.bth.becn), (bit == 39, bit == 38));
            } else {
                assert!(
                    matches!(r, Err(WireError::Icrc { .. })),
                    "{op:?} bit {bit}: {r:?}"
                );
            }
        }
        // The wrong IP or UDP headers fail too.
        assert!(matches!(
            Packet::decode(&h.reversed(), &good),
            Err(WireError::Icrc { .. })
        ));
    }
}

#[test]
fn icrcs_for_the_identifications_of_a_gso_send_are_accepted() {
    let h = hdrs();
    let p = sample_packet(Opcode::RdmaWriteMiddle, &[9u8; 1024]);
    let good = encode_vec(&p, &h);
    for id in [0u16, 1, 2, 14, 63, 64, 65, 0x1234, 0xFFFF] {
        let mut b = good.clone();
        seal(&IpUdp { ipv4_id: id, ..h }, &mut b);
        let r = Packet::decode(&h, &b);
        if usize::from(id) < icrc::GSO_MAX_SEGMENTS {
            assert_eq!(r.unwrap(), decoded(&p), "id {id}");
            // A receiver that assumes another small identification agrees.
            assert!(Packet::decode(&IpUdp { ipv4_id: 5, ..h }, &b).is_ok());
        } else {
            assert!(matches!(r, Err(WireError::Icrc { .. })), "id {id}: {r:?}");
            // Unless it knows the identification exactly.
            assert!(Packet::decode(&IpUdp { ipv4_id: id, ..h }, &b).is_ok());
        }
        // Flipped bits still fail with any of them.
        for bit in [0usize, 100, 8 * b.len() - 33, 8 * b.len() - 1] {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Packet::decode(&h, &c).is_err(), "id {id} bit {bit}");
        }
    }
    // IPv6 has no identification: only the exact ICRC passes.
    let h6 = IpUdp::new(
        "[fd00::1]:49152".parse().unwrap(),
        "[fd00::2]:4791".parse().unwrap(),
    );
    let mut b = encode_vec(&p, &h6);
    assert!(Packet::decode(&h6, &b).is_ok());
    let n = b.len();
    let mask = icrc::ipv4_id_mask(n - ICRC_LEN, 1).to_le_bytes();
    for (x, m) in b[n - ICRC_LEN..].iter_mut().zip(mask) {
        *x ^= m;
    }
    assert!(Packet::decode(&h6, &b).is_err());
}

/// A packet of `op` with every header it needs.
fn sample_packet(op: Opcode, payload: &[u8]) -> Packet<'_> {
    let l = op.layout();
    let mut p = Packet::new(Bth::new(op, qpn(0x00AB_CDEF), Psn::new(0x12_3456)));
    p.bth.ack_req = true;
    p.reth = l.reth.then_some(Reth {
        va: 0x7F00_0000_1000,
        rkey: 0x1234,
        dma_len: 4096,
    });
    p.atomic_eth = l.atomic_eth.then_some(AtomicEth {
        va: 0x7F00_0000_2000,
        rkey: 0x5678,
        swap_add: 42,
        compare: 7,
    });
    p.aeth = l.aeth.then_some(Aeth {
        syndrome: Syndrome::Ack { credits: 3 },
        msn: Msn::new(99),
    });
    p.atomic_ack_eth = l.atomic_ack_eth.then_some(AtomicAckEth { orig: 41 });
    p.imm = l.immdt.then_some(ImmDt(0xC0FFEE));
    if l.payload {
        p.payload = payload;
    }
    p
}

/// What decoding the encoding of `p` gives: the pad count filled in.
fn decoded<'a>(p: &Packet<'a>) -> Packet<'a> {
    let mut q = *p;
    q.bth.pad_count = p.pad_len() as u8;
    q
}

prop_compose! {
    fn any_bth()(
        op in proptest::sample::select(Opcode::ALL),
        solicited in any::<bool>(), mig_req in any::<bool>(), pad_count in 0u8..4,
        pkey in any::<u16>(), fecn in any::<bool>(), becn in any::<bool>(),
        dest_qp in 0..=Qpn::MAX, ack_req in any::<bool>(), psn in 0..=Psn::MAX,
    ) -> Bth {
        Bth {
            opcode: op, solicited, mig_req, pad_count, pkey, fecn, becn,
            dest_qp: qpn(dest_qp), ack_req, psn: Psn::new(psn),
        }
    }
}

fn any_syndrome() -> impl Strategy<Value = Syndrome> {
    prop_oneof![
        (0u8..32).prop_map(|credits| Syndrome::Ack { credits }),
        (0u8..32).prop_map(|timer| Syndrome::RnrNak { timer }),
        (0u8..5).prop_map(|c| Syndrome::Nak(NakCode::from_code(c).unwrap())),
    ]
}

prop_compose! {
    fn any_aeth()(syndrome in any_syndrome(), msn in 0..=Msn::MAX) -> Aeth {
        Aeth { syndrome, msn: Msn::new(msn) }
    }
}

prop_compose! {
    fn any_reth()(va in any::<u64>(), rkey in any::<u32>(), dma_len in any::<u32>()) -> Reth {
        Reth { va, rkey, dma_len }
    }
}

prop_compose! {
    fn any_atomic_eth()(va in any::<u64>(), rkey in any::<u32>(), swap_add in any::<u64>(),
                        compare in any::<u64>()) -> AtomicEth {
        AtomicEth { va, rkey, swap_add, compare }
    }
}

/// The parts of a random packet (the payload is owned; build with `packet`).
#[derive(Debug, Clone)]
struct Parts {
    bth: Bth,
    reth: Reth,
    atomic_eth: AtomicEth,
    aeth: Aeth,
    orig: u64,
    imm: u32,
    payload: Vec<u8>,
}

impl Parts {
    fn packet(&self) -> Packet<'_> {
        let l = self.bth.opcode.layout();
        Packet {
            bth: self.bth,
            reth: l.reth.then_some(self.reth),
            atomic_eth: l.atomic_eth.then_some(self.atomic_eth),
            aeth: l.aeth.then_some(self.aeth),
            atomic_ack_eth: l.atomic_ack_eth.then_some(AtomicAckEth { orig: self.orig }),
            imm: l.immdt.then_some(ImmDt(self.imm)),
            payload: if l.payload { &self.payload } else { &[] },
        }
    }
}

prop_compose! {
    fn any_parts()(bth in any_bth(), reth in any_reth(), atomic_eth in any_atomic_eth(),
                   aeth in any_aeth(), orig in any::<u64>(), imm in any::<u32>(),
                   payload in proptest::collection::vec(any::<u8>(), 0..48)) -> Parts {
        Parts { bth, reth, atomic_eth, aeth, orig, imm, payload }
    }
}

fn any_hdrs() -> impl Strategy<Value = IpUdp> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(v6, s, d, sp, dp)| {
            let (s, d): (std::net::IpAddr, std::net::IpAddr) = if v6 {
                (
                    std::net::Ipv6Addr::from(s).into(),
                    std::net::Ipv6Addr::from(d).into(),
                )
            } else {
                (
                    std::net::Ipv4Addr::new(s[0], s[1], s[2], s[3]).into(),
                    std::net::Ipv4Addr::new(d[0], d[1], d[2], d[3]).into(),
                )
            };
            IpUdp::new(SocketAddr::new(s, sp), SocketAddr::new(d, dp))
        })
}

proptest! {
    #[test]
    fn bth_round_trips(b in any_bth()) {
        prop_assert_eq!(Bth::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn extension_headers_round_trip(r in any_reth(), a in any_aeth(), x in any_atomic_eth(),
                                    orig in any::<u64>(), imm in any::<u32>()) {
        prop_assert_eq!(Reth::decode(&r.encode()).unwrap(), r);
        prop_assert_eq!(Aeth::decode(&a.encode()).unwrap(), a);
        prop_assert_eq!(AtomicEth::decode(&x.encode()).unwrap(), x);
        let y = AtomicAckEth { orig };
        prop_assert_eq!(AtomicAckEth::decode(&y.encode()).unwrap(), y);
        prop_assert_eq!(ImmDt::decode(&ImmDt(imm).encode()).unwrap(), ImmDt(imm));
    }

    #[test]
    fn syndrome_bytes_round_trip(v in any::<u8>()) {
        if let Ok(s) = Syndrome::from_byte(v) {
            prop_assert_eq!(s.to_byte(), v);
        }
    }

    #[test]
    fn packets_of_every_opcode_round_trip(parts in any_parts(), h in any_hdrs()) {
        let p = parts.packet();
        let mut buf = [0u8; 128];
        let n = p.encode(&h, &mut buf).unwrap();
        prop_assert_eq!(n, p.encoded_len());
        prop_assert_eq!(n % 4, 0);
        let q = Packet::decode(&h, &buf[..n]).unwrap();
        prop_assert_eq!(q, decoded(&p));
        prop_assert_eq!(Packet::decode_unverified(&buf[..n]).unwrap(), q);
        // Pad bytes are zero.
        let end = n - ICRC_LEN;
        prop_assert!(buf[end - p.pad_len()..end].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_flipped_bit_fails_the_icrc(parts in any_parts(), h in any_hdrs(), bit in any::<usize>()) {
        let p = parts.packet();
        let mut buf = [0u8; 128];
        let n = p.encode(&h, &mut buf).unwrap();
        let bit = bit % (n * 8);
        prop_assume!(bit / 8 != 4);
        buf[bit / 8] ^= 1 << (bit % 8);
        let r = Packet::decode(&h, &buf[..n]);
        prop_assert!(matches!(r, Err(WireError::Icrc { .. })), "{:?}", r);
    }

    #[test]
    fn decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..96), h in any_hdrs()) {
        let _ = Packet::decode(&h, &b);
        check_canonical(&b, &h)?;
        let f = keyed(h, 3);
        if let Ok(p) = Packet::decode_framed(&f, &b) {
            prop_assert_eq!(Packet::decode_unverified_tagged(&b).map(|t| t.0), Ok(p));
        }
    }

    #[test]
    fn authenticated_packets_round_trip(parts in any_parts(), h in any_hdrs(), k in any::<u8>()) {
        let p = parts.packet();
        let f = keyed(h, k);
        let mut buf = [0u8; 160];
        let n = p.encode_framed(&f, &mut buf).unwrap();
        prop_assert_eq!(n, p.framed_len(AUTH_TAG_LEN));
        prop_assert_eq!(n % 4, 0);
        prop_assert_eq!(Packet::decode_framed(&f, &buf[..n]).unwrap(), decoded(&p));
        let (q, at) = Packet::decode_unverified_tagged(&buf[..n]).unwrap();
        prop_assert_eq!(q, decoded(&p));
        prop_assert_eq!(&buf[at..at + AUTH_TAG_LEN], &key(k).tag(&buf[..at])[..]);
        prop_assert_eq!(
            Packet::decode_framed(&keyed(h, k.wrapping_add(1)), &buf[..n]),
            Err(WireError::Auth)
        );
    }

    /// Random packets that get past the opcode, version and ICRC checks.
    #[test]
    fn decoder_never_panics_on_plausible_packets(
        op in proptest::sample::select(Opcode::ALL),
        mut b in proptest::collection::vec(any::<u8>(), 16..96),
        h in any_hdrs(),
    ) {
        b[0] = op.code();
        b[1] &= 0xF0;
        let n = b.len();
        seal(&h, &mut b);
        check_canonical(&b, &h)?;
        b.truncate(n & !3);
        if b.len() >= 16 {
            seal(&h, &mut b);
            check_canonical(&b, &h)?;
        }
    }
}

/// Decodes `b` both ways; a packet that decodes encodes again to the same length,
/// and that encoding decodes to the same packet.
fn check_canonical(b: &[u8], h: &IpUdp) -> Result<(), TestCaseError> {
    let unverified = Packet::decode_unverified(b);
    if let Ok(p) = Packet::decode(h, b) {
        prop_assert_eq!(Ok(p), unverified);
    }
    if let Ok(p) = unverified {
        let mut buf = [0u8; 128];
        let n = p.encode(h, &mut buf).unwrap();
        prop_assert_eq!(n, b.len());
        prop_assert_eq!(Packet::decode(h, &buf[..n]).unwrap(), p);
    }
    Ok(())
}
