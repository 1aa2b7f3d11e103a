//! The tcp backend: the transport contract over 127.0.0.1, authentication, hostile
//! input on listening and connected sockets, and peers that go away.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use dos_transport::auth::{self, Role, Secret};
use dos_transport::tcp::wire::{auth_context, encode_addr, FrameHeader};
use dos_transport::tcp::{Prepared, TcpBuilder, TcpIface};
use dos_transport::{contract, ActiveMessages, Error, Event, Iface, Progress, Rma, Transport};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const T: Duration = Duration::from_secs(20);

fn secret() -> Secret {
    Secret::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
}

/// Connects prepared endpoints, each in its own thread, with the given address table.
fn connect_all(preps: Vec<Prepared>, addrs: &[Option<Vec<u8>>]) -> Vec<TcpIface> {
    let hs: Vec<_> = preps
        .into_iter()
        .map(|p| {
            let a = addrs.to_vec();
            thread::spawn(move || p.connect(&a, T).unwrap())
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

fn make_with(n: usize, tweak: impl Fn(TcpBuilder) -> TcpBuilder) -> Vec<TcpIface> {
    let preps: Vec<Prepared> = (0..n)
        .map(|i| {
            tweak(TcpIface::builder(i, n, LO))
                .prepare(&secret())
                .unwrap()
        })
        .collect();
    let addrs: Vec<_> = preps.iter().map(|p| Some(p.address())).collect();
    connect_all(preps, &addrs)
}

fn make(n: usize) -> Vec<TcpIface> {
    make_with(n, |b| b)
}

/// Everything `t` delivers within `d`, or until `stop` says enough.
fn collect(t: &TcpIface, d: Duration, mut stop: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
    let deadline = Instant::now() + d;
    let mut got = Vec::new();
    while !stop(&got) && Instant::now() < deadline {
        if t.progress(|ev| got.push(Got::from(ev))) == 0 {
            t.wait(Duration::from_millis(10)).unwrap();
        }
    }
    got
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Am(usize, u8, Vec<u8>),
    Gone(usize),
    Released(usize, u64),
}

impl From<Event<'_>> for Got {
    fn from(ev: Event<'_>) -> Got {
        match ev {
            Event::Am { src, id, data } => Got::Am(src, id, data.to_vec()),
            Event::Disconnected { peer } => Got::Gone(peer),
            Event::SendDone { peer, token } => Got::Released(peer, token),
            Event::Placed { src, id, head } => Got::Am(src, id, head.to_vec()),
        }
    }
}

/// Sends one message, retrying while Busy.
fn send(t: &TcpIface, peer: usize, id: u8, data: &[u8], sink: &mut Vec<Got>) {
    let deadline = Instant::now() + T;
    loop {
        match t.am_send(peer, id, &[], data) {
            Ok(()) => return,
            Err(Error::Busy { .. }) => {
                t.progress(|ev| sink.push(Got::from(ev)));
                assert!(Instant::now() < deadline, "Busy for too long");
            }
            Err(e) => panic!("send to {peer}: {e}"),
        }
    }
}

/// Every endpoint in `eps` sends one message to every one (itself included); all arrive.
fn check_mesh(eps: &[TcpIface]) {
    for t in eps {
        for u in eps {
            t.am_send(u.index(), 42, &[t.index() as u8], b"mesh")
                .unwrap();
        }
    }
    for t in eps {
        let got = collect(t, T, |g| g.len() >= eps.len());
        assert_eq!(got.len(), eps.len(), "endpoint {}: {got:?}", t.index());
        for g in got {
            let Got::Am(src, 42, data) = g else {
                panic!("{g:?}")
            };
            assert_eq!(data, [&[src as u8][..], b"mesh"].concat());
        }
    }
}

#[test]
fn contract_tcp() {
    contract::run_all(4, make);
}

#[test]
fn contract_tcp_small_frames_and_queues() {
    contract::run_all(3, |n| {
        make_with(n, |b| b.max_am(4096).max_queued(16 * 1024))
    });
}

#[test]
fn contract_tcp_through_transport_enum() {
    contract::run_all(3, |n| make(n).into_iter().map(Transport::Tcp).collect());
}

#[test]
fn caps_and_unsupported_rma() {
    let t = make(1).remove(0);
    let c = t.caps();
    assert_eq!(t.name(), "tcp");
    assert!(c.am && !c.rma && c.put_zc && !c.atomics && c.inter_node);
    assert_eq!(c.max_am, dos_transport::tcp::DEFAULT_MAX_AM);
    let buf = [0u8; 8];
    let r = t.mem_register(buf.as_ptr(), 8).unwrap();
    t.mem_deregister(&r).unwrap();
    assert!(
        matches!(t.mem_deregister(&r), Err(Error::Malformed { .. })),
        "twice"
    );
    let key = dos_transport::RemoteKey::from_bytes(&[1]).unwrap();
    let mut dst = [0u8; 8];
    // SAFETY: `dst` and `buf` are valid for 8 bytes.
    unsafe {
        assert!(matches!(
            t.get(0, dst.as_mut_ptr(), 8, &key, 0),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            t.put(0, buf.as_ptr(), 8, &key, 0),
            Err(Error::Unsupported { .. })
        ));
    }
}

/// Large frames (read in place), mixed with small ones, arrive whole and in order.
#[test]
fn large_and_mixed_messages() {
    let mut eps = make(2);
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let max = a.caps().max_am;
    let sizes: Vec<usize> = (0..120)
        .map(|k| match k % 6 {
            0 => max,
            1 => 0,
            2 => 33 * 1024,
            3 => 300_000,
            4 => 7,
            _ => (k * 7919) % max,
        })
        .collect();
    let body = |k: usize, len: usize| -> Vec<u8> { (0..len).map(|i| (i * 31 + k) as u8).collect() };
    let sz = sizes.clone();
    let tx = thread::spawn(move || {
        let mut sink = Vec::new();
        for (k, &len) in sz.iter().enumerate() {
            send(&a, 1, (k % 250) as u8, &body(k, len), &mut sink);
        }
        assert!(sink.is_empty());
        // Stay until the receiver has everything (dropping would also deliver it).
        a
    });
    let got = collect(&b, Duration::from_secs(60), |g| g.len() >= sizes.len());
    assert_eq!(got.len(), sizes.len());
    for (k, g) in got.into_iter().enumerate() {
        assert_eq!(
            g,
            Got::Am(0, (k % 250) as u8, body(k, sizes[k])),
            "message {k}"
        );
    }
    tx.join().unwrap();
}

#[test]
fn busy_when_the_queue_is_full_and_order_is_kept() {
    let mut eps = make_with(2, |b| b.max_queued(64 * 1024));
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let chunk = vec![5u8; 60_000];
    let mut sent = 0u32;
    let mut busy = false;
    // Nobody reads: the socket buffers fill, then the queue, then Busy.
    for _ in 0..10_000 {
        match a.am_send(1, 1, &sent.to_le_bytes(), &chunk) {
            Ok(()) => sent += 1,
            Err(Error::Busy { peer: 1 }) => {
                busy = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(busy, "never Busy after {sent} messages");
    assert!(a.queued(1) >= 64 * 1024);
    let rx = thread::spawn(move || {
        let got = collect(&b, T, |g| g.len() >= sent as usize);
        for (k, g) in got.iter().enumerate() {
            let Got::Am(0, 1, d) = g else { panic!("{g:?}") };
            assert_eq!(&d[..4], &(k as u32).to_le_bytes());
        }
        got.len()
    });
    let deadline = Instant::now() + T;
    while a.queued(1) > 0 {
        a.progress(|ev| panic!("{:?}", Got::from(ev)));
        a.wait(Duration::from_millis(10)).unwrap();
        assert!(Instant::now() < deadline);
    }
    assert_eq!(rx.join().unwrap(), sent as usize);
}

/// Messages queued behind a full socket arrive although the sender never calls
/// into its endpoint again (the flusher sends them).
#[test]
fn queued_messages_arrive_from_an_idle_sender() {
    let mut eps = make_with(2, |b| b.max_queued(64 << 20));
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let msg = vec![3u8; 1 << 20];
    let count = 24;
    for k in 0..count {
        a.am_send(1, 1, &(k as u32).to_le_bytes(), &msg[4..])
            .unwrap();
    }
    assert!(
        a.queued(1) > 0,
        "the socket took everything: the test proves little"
    );
    // `a` stays alive and idle on this thread while `b` reads on another.
    let rx = thread::spawn(move || collect(&b, T, |g| g.len() >= count));
    let got = rx.join().unwrap();
    assert_eq!(got.len(), count);
    for (k, g) in got.iter().enumerate() {
        let Got::Am(0, 1, d) = g else { panic!("{g:?}") };
        assert_eq!((&d[..4], d.len()), (&(k as u32).to_le_bytes()[..], 1 << 20));
    }
    assert_eq!(a.queued(1), 0);
}

#[test]
fn sends_from_callbacks_and_reentrant_progress() {
    let mut eps = make(2);
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    a.am_send(1, 1, b"ping", b"").unwrap();
    let mut seen = 0;
    let deadline = Instant::now() + T;
    while seen == 0 {
        b.progress(|ev| {
            assert!(matches!(ev, Event::Am { .. }));
            // Progress from inside a callback does nothing (and does not panic).
            assert_eq!(b.progress(|_| panic!("re-entered")), 0);
            b.am_send(0, 2, b"pong", b"").unwrap();
            b.am_send(1, 3, b"self", b"").unwrap();
            seen += 1;
        });
        assert!(Instant::now() < deadline);
    }
    let got = collect(&b, T, |g| !g.is_empty());
    assert_eq!(got, vec![Got::Am(1, 3, b"self".to_vec())]);
    let got = collect(&a, T, |g| !g.is_empty());
    assert_eq!(got, vec![Got::Am(1, 2, b"pong".to_vec())]);
}

#[test]
fn waker_interrupts_wait() {
    let t = make(1).remove(0);
    let w = t.waker();
    let t0 = Instant::now();
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        w.wake();
    });
    t.wait(Duration::from_secs(20)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    h.join().unwrap();
    assert_eq!(t.progress(|_| {}), 0);
}

#[test]
fn peers_without_address_are_unreachable_and_sends_to_self_work() {
    // 0 and 1 "share a host" (no tcp between them); 2 is remote to both.
    let preps: Vec<Prepared> = (0..3)
        .map(|i| TcpIface::prepare(i, 3, LO, &secret()).unwrap())
        .collect();
    let a: Vec<_> = preps.iter().map(|p| Some(p.address())).collect();
    let tables = [
        vec![None, None, a[2].clone()],
        vec![None, None, a[2].clone()],
        a.clone(),
    ];
    let hs: Vec<_> = preps
        .into_iter()
        .zip(tables)
        .map(|(p, t)| thread::spawn(move || p.connect(&t, T).unwrap()))
        .collect();
    let eps: Vec<TcpIface> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(matches!(
        eps[0].am_send(1, 1, b"", b""),
        Err(Error::PeerUnreachable { peer: 1 })
    ));
    assert!(!eps[0].reaches(1) && eps[0].reaches(0) && eps[0].reaches(2));
    assert!(matches!(
        eps[0].am_send(3, 1, b"", b""),
        Err(Error::NoSuchPeer { .. })
    ));
    eps[0].am_send(0, 1, b"me", b"").unwrap();
    eps[0].am_send(2, 1, b"to2", b"").unwrap();
    eps[1].am_send(2, 1, b"to2", b"").unwrap();
    assert_eq!(
        collect(&eps[0], T, |g| !g.is_empty()),
        vec![Got::Am(0, 1, b"me".to_vec())]
    );
    let mut got = collect(&eps[2], T, |g| g.len() >= 2);
    got.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(
        got,
        vec![
            Got::Am(0, 1, b"to2".to_vec()),
            Got::Am(1, 1, b"to2".to_vec())
        ]
    );
}

#[test]
fn bring_up_errors_are_typed() {
    let s = secret();
    assert!(matches!(
        TcpIface::prepare(2, 2, LO, &s),
        Err(Error::NoSuchPeer { .. })
    ));
    assert!(matches!(
        TcpIface::prepare(0, 2, Ipv4Addr::UNSPECIFIED.into(), &s),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        TcpIface::builder(0, 2, LO).max_am(10).prepare(&s),
        Err(Error::Malformed { .. })
    ));
    let p = TcpIface::prepare(0, 2, LO, &s).unwrap();
    let me = p.address();
    assert!(matches!(
        p.connect(&[Some(me.clone())], T),
        Err(Error::Malformed { .. })
    ));
    let p = TcpIface::prepare(0, 2, LO, &s).unwrap();
    assert!(matches!(
        p.connect(&[None, Some(vec![9, 9, 9])], T),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn connect_timeout_names_the_missing_peers() {
    let s = secret();
    // Peer 1 listens but never runs its handshake; peer 2's port is closed.
    let silent = TcpIface::prepare(1, 3, LO, &s).unwrap();
    let closed = TcpListener::bind((LO, 0)).unwrap();
    let closed_addr = encode_addr(closed.local_addr().unwrap());
    drop(closed);
    let p = TcpIface::prepare(0, 3, LO, &s).unwrap();
    let addrs = vec![Some(p.address()), Some(silent.address()), Some(closed_addr)];
    let t0 = Instant::now();
    match p.connect(&addrs, Duration::from_millis(700)) {
        Err(Error::ConnectTimeout { missing }) => assert_eq!(missing, vec![1, 2]),
        r => panic!("{r:?}"),
    }
    let e = t0.elapsed();
    assert!(
        e >= Duration::from_millis(650) && e < Duration::from_secs(5),
        "{e:?}"
    );
}

#[test]
fn endpoint_with_a_wrong_secret_cannot_join() {
    let p0 = TcpIface::prepare(0, 2, LO, &secret()).unwrap();
    let p1 = TcpIface::prepare(1, 2, LO, &Secret::from_bytes(&[7; 32]).unwrap()).unwrap();
    let addrs = vec![Some(p0.address()), Some(p1.address())];
    let a2 = addrs.clone();
    let h = thread::spawn(move || p1.connect(&a2, Duration::from_millis(800)));
    let r0 = p0.connect(&addrs, Duration::from_millis(800));
    assert!(
        matches!(r0, Err(Error::ConnectTimeout { ref missing }) if missing == &[1]),
        "{r0:?}"
    );
    let r1 = h.join().unwrap();
    assert!(
        matches!(r1, Err(Error::ConnectTimeout { ref missing }) if missing == &[0]),
        "{r1:?}"
    );
}

/// Waits until the other end closes `s` (end of stream or reset).
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(T)).unwrap();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    }
}

#[test]
fn strangers_with_a_wrong_secret_are_rejected_and_others_complete() {
    let n = 3;
    let preps: Vec<Prepared> = (0..n)
        .map(|i| TcpIface::prepare(i, n, LO, &secret()).unwrap())
        .collect();
    let addrs: Vec<_> = preps.iter().map(|p| Some(p.address())).collect();
    let targets = [preps[1].local_addr(), preps[2].local_addr()];
    let mut preps = preps.into_iter();
    let p0 = preps.next().unwrap();
    // 1 and 2 start accepting; 0 holds back until the strangers were turned away.
    let late: Vec<_> = preps
        .map(|p| {
            let a = addrs.clone();
            thread::spawn(move || p.connect(&a, T).unwrap())
        })
        .collect();
    let wrong = Secret::from_bytes(&[0x55; 32]).unwrap();
    for t in targets {
        let mut s = TcpStream::connect(t).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        // Claims to be endpoint 0, with the wrong secret.
        let r = auth::handshake(&mut s, &wrong, &auth_context(n), Role::Initiator, 0);
        assert!(matches!(r, Err(Error::AuthFailed { .. })), "{r:?}");
        assert!(
            closed_by_peer(&mut s),
            "the endpoint kept a rejected connection"
        );
    }
    let e0 = p0.connect(&addrs, T).unwrap();
    let mut eps = vec![e0];
    eps.extend(late.into_iter().map(|h| h.join().unwrap()));
    check_mesh(&eps);
}

#[test]
fn garbage_on_a_listening_port_does_not_disturb_bring_up() {
    let n = 3;
    let preps: Vec<Prepared> = (0..n)
        .map(|i| TcpIface::prepare(i, n, LO, &secret()).unwrap())
        .collect();
    let addrs: Vec<_> = preps.iter().map(|p| Some(p.address())).collect();
    let target = preps[2].local_addr();
    let mut strangers = Vec::new();
    // Random bytes.
    let mut s = TcpStream::connect(target).unwrap();
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    s.write_all(&junk).unwrap();
    strangers.push((s, true));
    // A truncated hello, then close.
    let hs = auth::Handshake::new(&secret(), &auth_context(n), Role::Initiator, 0).unwrap();
    let mut s = TcpStream::connect(target).unwrap();
    s.write_all(&hs.hello()[..20]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    strangers.push((s, true));
    // A hello of another version.
    let mut h = hs.hello();
    h[4] = 99;
    let mut s = TcpStream::connect(target).unwrap();
    s.write_all(&h).unwrap();
    strangers.push((s, true));
    // A valid hello claiming an index that should not connect to 2 (itself).
    let hs2 = auth::Handshake::new(&secret(), &auth_context(n), Role::Initiator, 7).unwrap();
    let mut s = TcpStream::connect(target).unwrap();
    s.write_all(&hs2.hello()).unwrap();
    strangers.push((s, true));
    // Silent: connects and says nothing.
    strangers.push((TcpStream::connect(target).unwrap(), false));

    let t0 = Instant::now();
    let eps = connect_all(preps, &addrs);
    assert!(t0.elapsed() < Duration::from_secs(10));
    for (s, must_close) in &mut strangers {
        if *must_close {
            assert!(closed_by_peer(s));
        }
    }
    check_mesh(&eps);
}

/// What a fake peer sends after some valid frames.
#[derive(Debug, Clone, Copy)]
enum Bad {
    Magic,
    Oversized,
    Truncated,
    Random,
    Version,
}

/// Endpoint 0 is a fake made of raw sockets that passes the handshake, sends two
/// good frames to endpoint 1 and then `bad`. Endpoint 1 gets both frames, then
/// `Disconnected { 0 }`; its sends to 0 fail; traffic between 1 and 2, and from
/// the fake to 2, is undisturbed.
fn bad_frames_from_connected_peer(bad: Bad) {
    let n = 3;
    let s = secret();
    let fake_listener = TcpListener::bind((LO, 0)).unwrap();
    let preps: Vec<Prepared> = (1..n)
        .map(|i| {
            TcpIface::builder(i, n, LO)
                .max_am(64 * 1024)
                .prepare(&s)
                .unwrap()
        })
        .collect();
    let mut addrs = vec![Some(encode_addr(fake_listener.local_addr().unwrap()))];
    addrs.extend(preps.iter().map(|p| Some(p.address())));
    let targets: Vec<_> = preps.iter().map(|p| p.local_addr()).collect();
    let hs: Vec<_> = preps
        .into_iter()
        .map(|p| {
            let a = addrs.clone();
            thread::spawn(move || p.connect(&a, T).unwrap())
        })
        .collect();
    let mut fake: Vec<TcpStream> = targets
        .iter()
        .map(|t| {
            let mut c = TcpStream::connect(t).unwrap();
            let peer = auth::handshake(&mut c, &s, &auth_context(n), Role::Initiator, 0).unwrap();
            assert!(peer == 1 || peer == 2);
            c
        })
        .collect();
    let eps: Vec<TcpIface> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let (e1, e2) = (&eps[0], &eps[1]);

    let frame = |id: u8, data: &[u8]| {
        let mut v = FrameHeader::am(id, data.len() as u32).encode().to_vec();
        v.extend_from_slice(data);
        v
    };
    let mut out = frame(1, b"ok1");
    out.extend(frame(1, b"ok2"));
    match bad {
        Bad::Magic => out.extend([0u8; 16]),
        Bad::Version => {
            let mut f = frame(1, b"x");
            f[1] = 1;
            out.extend(f);
        }
        // Claims 1 GiB and sends nothing more: must not wait for it or allocate it.
        Bad::Oversized => out.extend(FrameHeader::am(1, 1 << 30).encode()),
        Bad::Truncated => out.extend(&frame(1, &[9; 100])[..58]),
        Bad::Random => out.extend((0..1000u32).map(|i| (i.wrapping_mul(0x9E3779B1) >> 7) as u8)),
    }
    fake[0].write_all(&out).unwrap();
    if let Bad::Truncated = bad {
        fake[0].shutdown(std::net::Shutdown::Write).unwrap();
    }
    let got = collect(e1, T, |g| g.len() >= 3);
    assert_eq!(
        got,
        vec![
            Got::Am(0, 1, b"ok1".to_vec()),
            Got::Am(0, 1, b"ok2".to_vec()),
            Got::Gone(0)
        ],
        "{bad:?}"
    );
    assert!(matches!(
        e1.am_send(0, 1, b"x", b""),
        Err(Error::PeerUnreachable { peer: 0 })
    ));
    assert!(!e1.reaches(0));
    // Nothing more about 0, ever.
    assert!(collect(e1, Duration::from_millis(100), |_| false).is_empty());
    // The fake's connection to 1 is closed by 1.
    assert!(closed_by_peer(&mut fake[0]));
    // 1 <-> 2 and fake -> 2 still work.
    fake[1].write_all(&frame(4, b"still here")).unwrap();
    assert_eq!(
        collect(e2, T, |g| !g.is_empty()),
        vec![Got::Am(0, 4, b"still here".to_vec())]
    );
    check_mesh(&eps);
    // And 2 can still send to the fake.
    e2.am_send(0, 6, b"hi", b"").unwrap();
    let mut b = [0u8; 10];
    fake[1].read_exact(&mut b).unwrap();
    assert_eq!(&b[8..], b"hi");
}

#[test]
fn bad_magic_from_a_connected_peer() {
    bad_frames_from_connected_peer(Bad::Magic);
}

#[test]
fn bad_version_from_a_connected_peer() {
    bad_frames_from_connected_peer(Bad::Version);
}

#[test]
fn oversized_length_from_a_connected_peer() {
    bad_frames_from_connected_peer(Bad::Oversized);
}

#[test]
fn truncated_frame_from_a_connected_peer() {
    bad_frames_from_connected_peer(Bad::Truncated);
}

#[test]
fn random_bytes_from_a_connected_peer() {
    bad_frames_from_connected_peer(Bad::Random);
}

/// The receiver drops its endpoint while a stream to it is running: the sender
/// gets `Disconnected` once and a typed send error, without hanging.
#[test]
fn receiver_dropped_mid_stream() {
    let mut eps = make(3);
    let c = eps.pop().unwrap();
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let rx = thread::spawn(move || {
        let got = collect(&b, T, |g| g.len() >= 10);
        assert!(got.len() >= 10);
        drop(b);
    });
    let chunk = vec![1u8; 50_000];
    let deadline = Instant::now() + T;
    let mut events = Vec::new();
    let err = loop {
        assert!(Instant::now() < deadline, "sends never failed");
        match a.am_send(1, 1, &[], &chunk) {
            Ok(()) => {}
            Err(Error::Busy { .. }) => {
                a.progress(|ev| events.push(Got::from(ev)));
                a.wait(Duration::from_millis(5)).unwrap();
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::PeerUnreachable { peer: 1 }), "{err}");
    rx.join().unwrap();
    if !events.contains(&Got::Gone(1)) {
        events.extend(collect(&a, T, |g| g.contains(&Got::Gone(1))));
    }
    events.extend(collect(&a, Duration::from_millis(100), |_| false));
    assert_eq!(events, vec![Got::Gone(1)]);
    assert!(matches!(
        a.am_send(1, 1, b"", b""),
        Err(Error::PeerUnreachable { peer: 1 })
    ));
    // The third endpoint saw 1 go too, and still talks to 0.
    assert_eq!(collect(&c, T, |g| !g.is_empty()), vec![Got::Gone(1)]);
    c.am_send(0, 2, b"ok", b"").unwrap();
    assert_eq!(
        collect(&a, T, |g| !g.is_empty()),
        vec![Got::Am(2, 2, b"ok".to_vec())]
    );
}

/// The sender drops its endpoint with more queued than the receiver takes
/// before the linger time ends: the receiver gets whole messages, in order, then
/// `Disconnected`, and never the cut-off part of the last one.
#[test]
fn sender_dropped_mid_stream() {
    let mut eps = make_with(2, |b| {
        b.max_queued(64 << 20).linger(Duration::from_millis(100))
    });
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let max = a.caps().max_am;
    let body = move |k: usize| -> Vec<u8> { (0..max - 3).map(|i| (i + k) as u8).collect() };
    let sent = 24;
    thread::spawn(move || {
        for k in 0..sent {
            a.am_send(1, 1, b"abc", &body(k)).unwrap();
        }
        drop(a);
    })
    .join()
    .unwrap();
    let got = collect(&b, T, |g| g.contains(&Got::Gone(0)));
    let (last, whole) = got.split_last().unwrap();
    assert_eq!(last, &Got::Gone(0));
    assert!(
        whole.len() < sent,
        "nothing was cut off: the test proves little"
    );
    for (k, g) in whole.iter().enumerate() {
        let want = [&b"abc"[..], &body(k)].concat();
        assert!(g == &Got::Am(0, 1, want), "message {k}");
    }
    assert!(matches!(
        b.am_send(0, 1, b"", b""),
        Err(Error::PeerUnreachable { peer: 0 })
    ));
}

#[test]
fn ipv6_loopback_if_available() {
    let lo6: IpAddr = "::1".parse().unwrap();
    if TcpListener::bind((lo6, 0)).is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let preps: Vec<Prepared> = (0..2)
        .map(|i| TcpIface::prepare(i, 2, lo6, &secret()).unwrap())
        .collect();
    assert_eq!(preps[0].address()[1], 6);
    let addrs: Vec<_> = preps.iter().map(|p| Some(p.address())).collect();
    let eps = connect_all(preps, &addrs);
    check_mesh(&eps);
}

#[test]
fn zero_copy_bodies_are_lent_then_released_once() {
    // A sender that queues more than the socket takes lends its bodies (no
    // copy); each loan ends with exactly one SendDone, after the last byte left.
    let mut eps = make_with(2, |b| b.max_queued(64 << 20));
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let count = 16usize;
    let bodies: Vec<Vec<u8>> = (0..count).map(|k| vec![k as u8; 1 << 20]).collect();
    let mut lent = 0;
    for (k, body) in bodies.iter().enumerate() {
        // SAFETY: `bodies` outlives every loan (we wait for all SendDone below).
        let r = unsafe { a.am_send_zc(1, 3, &[k as u8], body.as_ptr(), body.len() - 1, k as u64) };
        if r.unwrap() == dos_transport::Sent::Pending {
            lent += 1;
        }
    }
    assert!(
        lent > 0,
        "the socket took everything: the test proves little"
    );
    let rx = thread::spawn(move || collect(&b, T, |g| g.len() >= count));
    let released = collect(&a, T, |g| g.len() >= lent);
    let mut tokens: Vec<u64> = released
        .iter()
        .map(|g| match g {
            Got::Released(1, t) => *t,
            g => panic!("{g:?}"),
        })
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), lent, "one SendDone per loan");
    for (k, g) in rx.join().unwrap().iter().enumerate() {
        let Got::Am(0, 3, d) = g else { panic!("{g:?}") };
        assert_eq!((d[0], d.len(), d[d.len() - 1]), (k as u8, 1 << 20, k as u8));
    }
    // No second SendDone (the receiver's end, dropped with its thread, may show).
    let late = collect(&a, Duration::from_millis(50), |_| false);
    assert!(late.iter().all(|g| *g == Got::Gone(1)), "{late:?}");
}

#[test]
fn zero_copy_loans_end_before_disconnected() {
    // The receiver goes away with loans outstanding: they are released (the
    // memory is no longer read) no later than the Disconnected that follows.
    let mut eps = make_with(2, |b| b.max_queued(64 << 20));
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let bodies: Vec<Vec<u8>> = (0..16).map(|k| vec![k as u8; 1 << 20]).collect();
    let mut lent = Vec::new();
    for (k, body) in bodies.iter().enumerate() {
        // SAFETY: `bodies` outlives every loan.
        if unsafe { a.am_send_zc(1, 3, &[], body.as_ptr(), body.len(), k as u64) }.unwrap()
            == dos_transport::Sent::Pending
        {
            lent.push(k as u64);
        }
    }
    assert!(
        !lent.is_empty(),
        "the socket took everything: the test proves little"
    );
    drop(b);
    let got = collect(&a, T, |g| g.contains(&Got::Gone(1)));
    let gone = got.iter().position(|g| *g == Got::Gone(1)).unwrap();
    let mut released: Vec<u64> = got[..gone]
        .iter()
        .map(|g| match g {
            Got::Released(1, t) => *t,
            g => panic!("{g:?}"),
        })
        .collect();
    released.sort_unstable();
    assert_eq!(released, lent, "every loan ended before Disconnected");
}

#[test]
fn puts_with_stale_or_forged_keys_touch_nothing() {
    // The target checks every put against its live registrations: a key used
    // after deregistration, or one forged to reach past its region, is
    // dropped (logged), the memory around stays as it was, and the connection
    // carries on.
    use dos_transport::tcp::wire::TcpKey;
    let mut eps = make(2);
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let mut mem = vec![0u8; 3000];
    // Register only the middle 1000 bytes.
    let r = b.mem_register(mem[1000..].as_mut_ptr(), 1000).unwrap();
    let key = r.rkey;
    let src = vec![7u8; 500];
    let put = |rkey: &dos_transport::RemoteKey, off: usize, len: usize| {
        // SAFETY: `src` outlives the endpoint `a` (we wait for delivery below).
        let s = unsafe { a.put_zc(1, src.as_ptr(), len, rkey, off, 0) }.unwrap();
        assert_eq!(s, dos_transport::Sent::Done);
    };
    put(&key, 100, 50);
    let mut forged = TcpKey::unpack(key.as_bytes()).unwrap();
    forged.len = 1 << 20;
    put(
        &dos_transport::RemoteKey::from_bytes(&forged.pack()).unwrap(),
        990,
        500,
    );
    let mut wrong = TcpKey::unpack(key.as_bytes()).unwrap();
    wrong.key ^= 1;
    put(
        &dos_transport::RemoteKey::from_bytes(&wrong.pack()).unwrap(),
        0,
        10,
    );
    a.am_send(1, 1, b"first", b"").unwrap();
    assert_eq!(
        collect(&b, T, |g| !g.is_empty()),
        vec![Got::Am(0, 1, b"first".to_vec())]
    );
    b.mem_deregister(&r).unwrap();
    put(&key, 0, 100); // stale
    a.am_send(1, 1, b"second", b"").unwrap();
    assert_eq!(
        collect(&b, T, |g| !g.is_empty()),
        vec![Got::Am(0, 1, b"second".to_vec())]
    );
    let mut want = vec![0u8; 3000];
    want[1100..1150].fill(7);
    assert!(mem == want, "only the valid put landed");
}
