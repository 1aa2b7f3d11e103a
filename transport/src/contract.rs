//! The transport contract, as executable checks that every backend must pass.
//!
//! A backend's test file instantiates the suite with a factory that builds `n`
//! connected endpoints (endpoint `i` has index `i`):
//!
//! ```
//! dos_transport::contract::run_all(1, |_| vec![dos_transport::loopback::Loopback::new()]);
//! ```
//!
//! Every check panics with a message naming the broken rule.

use std::time::{Duration, Instant};

use crate::{ActiveMessages, Error, Event, Progress, Rma};

/// What a backend under test must implement.
pub trait Endpoint: ActiveMessages + Progress + Rma + Send + std::fmt::Debug + 'static {}
impl<T: ActiveMessages + Progress + Rma + Send + std::fmt::Debug + 'static> Endpoint for T {}

/// Runs every check with up to `max_peers` endpoints from `make(n)`.
pub fn run_all<T: Endpoint, F: Fn(usize) -> Vec<T>>(max_peers: usize, make: F) {
    caps_agree(&make(1).remove(0));
    bad_peer_rejected(&make(1).remove(0));
    too_large_rejected(&make(1).remove(0));
    self_messages_in_order(&make(1).remove(0));
    rma_on_self_checks_bounds(&make(1).remove(0));
    if max_peers >= 2 {
        ordered_stream(make(2), 2000);
        zero_copy_stream(make(2), 400);
        put_zc_between_peers(make(2));
        atomics_between_peers(make(2));
        wait_is_woken(make(2));
        rma_between_peers(make(2));
    }
    if max_peers >= 3 {
        all_to_all(make(max_peers.min(4)), 300);
    }
}

/// Sends, retrying while the backend says `Busy` and draining its own input into `sink`.
pub fn send_retry<T: Endpoint>(
    t: &T,
    peer: usize,
    id: u8,
    hdr: &[u8],
    body: &[u8],
    sink: &mut Vec<(usize, u8, Vec<u8>)>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match t.am_send(peer, id, hdr, body) {
            Ok(()) => return,
            Err(Error::Busy { .. }) => {
                drain(t, sink);
                assert!(Instant::now() < deadline, "send stayed Busy for 30 s");
                std::thread::yield_now();
            }
            Err(e) => panic!("am_send failed: {e}"),
        }
    }
}

fn drain<T: Endpoint>(t: &T, sink: &mut Vec<(usize, u8, Vec<u8>)>) -> usize {
    t.progress(|ev| match ev {
        Event::Am { src, id, data } => sink.push((src, id, data.to_vec())),
        Event::Disconnected { peer } => panic!("peer {peer} disconnected"),
        Event::SendDone { token, .. } => panic!("SendDone {token} without a zero-copy send"),
        Event::Placed { src, .. } => panic!("a placed message from {src} without a placer"),
    })
}

/// Deterministic message body `k` from `src`.
fn body(src: usize, k: usize, max: usize) -> Vec<u8> {
    // Leave room for the up-to-8-byte headers the checks put in front.
    let len = (k * 7919 + src * 31) % (max.min(20_000) - 8);
    (0..len).map(|i| (i ^ k ^ src) as u8).collect()
}

/// Declared capabilities agree with behaviour.
pub fn caps_agree<T: Endpoint>(t: &T) {
    let c = t.caps();
    assert!(c.am, "every backend has active messages");
    assert!(
        c.max_inline <= c.max_am,
        "max_inline must not exceed max_am"
    );
    assert!(c.max_am >= 1024, "max_am below 1 KiB");
    let buf = [1u8; 64];
    let r = t.mem_register(buf.as_ptr(), buf.len());
    assert_eq!(
        r.is_ok(),
        c.rma || c.put_zc,
        "mem_register must succeed exactly when caps.rma or caps.put_zc"
    );
    if let Ok(r) = r {
        t.mem_deregister(&r).unwrap();
    }
    assert!(c.put_zc || !c.rma, "rma implies put_zc");
    assert!(t.index() < t.npeers());
}

/// A peer index outside the set gives `NoSuchPeer`.
pub fn bad_peer_rejected<T: Endpoint>(t: &T) {
    let n = t.npeers();
    assert!(matches!(
        t.am_send(n, 1, b"x", b""),
        Err(Error::NoSuchPeer { .. })
    ));
}

/// A message above `max_am` gives `TooLarge`; one at `max_am` goes through.
pub fn too_large_rejected<T: Endpoint>(t: &T) {
    let max = t.caps().max_am;
    let big = vec![0u8; max + 1];
    assert!(matches!(
        t.am_send(t.index(), 1, &big[..1], &big[1..]),
        Err(Error::TooLarge { .. })
    ));
    let mut sink = Vec::new();
    send_retry(t, t.index(), 1, &big[..1], &big[1..max], &mut sink);
    while sink.is_empty() {
        drain(t, &mut sink);
    }
    assert_eq!(sink[0].2.len(), max);
}

/// Messages to oneself arrive, in order, with header and body joined.
pub fn self_messages_in_order<T: Endpoint>(t: &T) {
    let me = t.index();
    let mut got = Vec::new();
    for k in 0..100usize {
        let b = body(me, k, t.caps().max_am);
        send_retry(
            t,
            me,
            (k % 200) as u8,
            &(k as u32).to_le_bytes(),
            &b,
            &mut got,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 100 {
        drain(t, &mut got);
        assert!(Instant::now() < deadline, "self messages lost");
    }
    for (k, (src, id, data)) in got.iter().enumerate() {
        assert_eq!(*src, me);
        assert_eq!(*id as usize, k % 200);
        assert_eq!(&data[..4], &(k as u32).to_le_bytes());
        assert_eq!(&data[4..], &body(me, k, t.caps().max_am)[..]);
    }
}

/// Get/put on one's own region: in-bounds works, out-of-bounds fails and writes nothing.
pub fn rma_on_self_checks_bounds<T: Endpoint>(t: &T) {
    if !t.caps().rma {
        return;
    }
    let mut region = vec![0xAAu8; 4096];
    let r = t.mem_register(region.as_mut_ptr(), region.len()).unwrap();
    let src = [0x55u8; 100];
    // SAFETY: `src` is valid for 100 bytes; `region` stays alive and is not
    // otherwise accessed during the calls.
    unsafe {
        t.put(t.index(), src.as_ptr(), 100, &r.rkey, 10).unwrap();
        let e = t.put(t.index(), src.as_ptr(), 100, &r.rkey, 4000);
        assert!(matches!(e, Err(Error::RemoteAccess { .. })), "{e:?}");
        let e = t.put(t.index(), src.as_ptr(), 1, &r.rkey, usize::MAX);
        assert!(matches!(e, Err(Error::RemoteAccess { .. })), "{e:?}");
    }
    let mut back = [0u8; 120];
    // SAFETY: `back` is valid for 120 bytes.
    unsafe {
        t.get(t.index(), back.as_mut_ptr(), 120, &r.rkey, 0)
            .unwrap()
    };
    assert!(back[..10].iter().all(|&b| b == 0xAA));
    assert!(back[10..110].iter().all(|&b| b == 0x55));
    assert!(
        region[3990..].iter().all(|&b| b == 0xAA),
        "out-of-bounds put wrote"
    );
    let bad = crate::RemoteKey::from_bytes(&[9, 9, 9]).unwrap();
    // SAFETY: as above.
    let e = unsafe { t.get(t.index(), back.as_mut_ptr(), 1, &bad, 0) };
    assert!(matches!(e, Err(Error::Malformed { .. })), "{e:?}");
}

/// A long stream 0 -> 1 arrives complete and in order, across ring wrap-around and back-pressure.
pub fn ordered_stream<T: Endpoint>(mut eps: Vec<T>, count: usize) {
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let max = a.caps().max_am;
    let tx = std::thread::spawn(move || {
        let mut sink = Vec::new();
        for k in 0..count {
            send_retry(
                &a,
                1,
                5,
                &(k as u64).to_le_bytes(),
                &body(0, k, max),
                &mut sink,
            );
        }
        assert!(sink.is_empty(), "nothing was sent to 0");
        a
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0usize;
    while next < count {
        b.progress(|ev| {
            let Event::Am { src, id, data } = ev else {
                panic!("unexpected {ev:?}");
            };
            assert_eq!((src, id), (0, 5));
            let k = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
            assert_eq!(k, next, "out of order");
            assert_eq!(&data[8..], &body(0, k, max)[..], "corrupted payload");
            next += 1;
        });
        assert!(Instant::now() < deadline, "stream stalled at {next}");
    }
    tx.join().unwrap();
}

/// Zero-copy sends, mixed with copied ones, arrive in order and intact; every
/// `Pending` one gets exactly one `SendDone`, after which the backend no longer
/// reads its body: the sender scribbles over each body as soon as it is
/// released and reuses it, so a late read would show as a corrupted message.
pub fn zero_copy_stream<T: Endpoint>(mut eps: Vec<T>, count: usize) {
    const SLOTS: usize = 8;
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let max = a.caps().max_am;
    let msg = move |k: usize| -> Vec<u8> {
        // Large bodies (up to max_am - 8, at most 300 kB) in between small ones.
        let len = if k % 3 == 0 {
            (k * 7919) % 300
        } else {
            (max - 8).min(300_000) - (k % 5) * 1000
        };
        (0..len).map(|i| ((i * 13) ^ k) as u8).collect()
    };
    /// The sender's bodies: a slot is lent from a `Pending` send to its `SendDone`.
    struct Lender {
        bufs: Vec<Vec<u8>>,
        lent: [bool; SLOTS],
        pending: usize,
        sink: Vec<(usize, u8, Vec<u8>)>,
    }
    impl Lender {
        fn poll<T: Endpoint>(&mut self, a: &T) {
            a.progress(|ev| match ev {
                Event::SendDone { peer, token } => {
                    assert_eq!(peer, 1);
                    let slot = token as usize;
                    assert!(self.lent[slot], "SendDone {token} twice or for nothing");
                    self.lent[slot] = false;
                    self.pending -= 1;
                    // Scribble: the backend must not read this any more.
                    self.bufs[slot].iter_mut().for_each(|x| *x = 0xEE);
                }
                Event::Am { src, id, data } => self.sink.push((src, id, data.to_vec())),
                Event::Placed { src, .. } => panic!("a placed message from {src} without a placer"),
                Event::Disconnected { peer } => panic!("peer {peer} disconnected"),
            });
        }
    }
    let tx = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut l = Lender {
            bufs: (0..SLOTS).map(|_| Vec::new()).collect(),
            lent: [false; SLOTS],
            pending: 0,
            sink: Vec::new(),
        };
        for k in 0..count {
            let slot = k % SLOTS;
            let hdr = (k as u64).to_le_bytes();
            if k % 4 == 3 {
                // A copied send in between: order with the zero-copy ones.
                let mut sink = std::mem::take(&mut l.sink);
                send_retry(&a, 1, 6, &hdr, &msg(k), &mut sink);
                l.sink = sink;
                continue;
            }
            while l.lent[slot] {
                l.poll(&a);
                assert!(Instant::now() < deadline, "SendDone never came");
                std::thread::yield_now();
            }
            l.bufs[slot] = msg(k);
            let (ptr, len) = (l.bufs[slot].as_ptr(), l.bufs[slot].len());
            loop {
                // SAFETY: the body is neither written nor freed until its
                // SendDone (or Done): `lent` guards the slot, and polling only
                // touches released slots.
                match unsafe { a.am_send_zc(1, 6, &hdr, ptr, len, slot as u64) } {
                    Ok(crate::Sent::Done) => break,
                    Ok(crate::Sent::Pending) => {
                        l.lent[slot] = true;
                        l.pending += 1;
                        break;
                    }
                    Err(Error::Busy { .. }) => {
                        l.poll(&a);
                        assert!(Instant::now() < deadline, "send stayed Busy");
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("am_send_zc failed: {e}"),
                }
            }
        }
        while l.pending > 0 {
            l.poll(&a);
            let _ = a.wait(Duration::from_millis(10));
            assert!(
                Instant::now() < deadline,
                "{} SendDone never came",
                l.pending
            );
        }
        assert!(l.sink.is_empty(), "nothing was sent to 0");
        a
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0usize;
    while next < count {
        b.progress(|ev| {
            let Event::Am { src, id, data } = ev else {
                panic!("unexpected {ev:?}");
            };
            assert_eq!((src, id), (0, 6));
            let k = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
            assert_eq!(k, next, "out of order");
            assert!(
                data[8..] == msg(k)[..],
                "message {k} corrupted (read after SendDone?)"
            );
            next += 1;
        });
        assert!(Instant::now() < deadline, "stream stalled at {next}");
    }
    drop(tx.join().unwrap());
}

/// Zero-copy puts land in the target's registered memory at their offsets,
/// before an active message sent after them; one outside the region fails
/// at the origin; every `Pending` put gets its `SendDone`.
pub fn put_zc_between_peers<T: Endpoint>(mut eps: Vec<T>) {
    if !eps[0].caps().put_zc {
        return;
    }
    const LEN: usize = 200_000;
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let max = (a.caps().max_am - 64).min(LEN);
    // Puts (offset, length): small, unaligned, large, overlapping.
    let puts: Vec<(usize, usize)> = (0..40)
        .map(|k| {
            let len = match k % 4 {
                0 => 1 + k,
                1 => max.min(50_000 + k * 997),
                2 => max.min(4096),
                _ => max.min(LEN / 3),
            };
            ((k * 7919) % (LEN - len), len)
        })
        .collect();
    let src: Vec<u8> = (0..LEN).map(|i| (i * 31 + 7) as u8).collect();
    let mut want = vec![0x11u8; LEN];
    for &(off, len) in &puts {
        want[off..off + len].copy_from_slice(&src[off..off + len]);
    }
    let mut region = vec![0x11u8; LEN];
    let r = b.mem_register(region.as_mut_ptr(), LEN).unwrap();
    b.am_send(0, 9, r.rkey.as_bytes(), &[]).unwrap();
    let tx = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut key = None;
        while key.is_none() {
            a.progress(|ev| {
                if let Event::Am { id: 9, data, .. } = ev {
                    key = Some(crate::RemoteKey::from_bytes(data).unwrap());
                }
            });
            assert!(Instant::now() < deadline, "no key");
        }
        let key = key.unwrap();
        // SAFETY: `src` outlives every put (we wait for every SendDone).
        let e = unsafe { a.put_zc(1, src.as_ptr(), 10, &key, LEN - 5, 999) };
        assert!(matches!(e, Err(Error::RemoteAccess { .. })), "{e:?}");
        let mut pending = std::collections::HashSet::new();
        for (k, &(off, len)) in puts.iter().enumerate() {
            loop {
                // SAFETY: as above.
                match unsafe { a.put_zc(1, src[off..].as_ptr(), len, &key, off, k as u64) } {
                    Ok(crate::Sent::Done) => break,
                    Ok(crate::Sent::Pending) => {
                        pending.insert(k as u64);
                        break;
                    }
                    Err(Error::Busy { .. }) => {}
                    Err(e) => panic!("put_zc: {e}"),
                }
                a.progress(|ev| {
                    if let Event::SendDone { token, .. } = ev {
                        assert!(pending.remove(&token), "SendDone {token} twice");
                    }
                });
                assert!(Instant::now() < deadline, "put stayed Busy");
            }
        }
        let mut sink = Vec::new();
        send_retry(&a, 1, 10, b"done", &[], &mut sink);
        while !pending.is_empty() {
            a.progress(|ev| {
                if let Event::SendDone { token, .. } = ev {
                    assert!(pending.remove(&token), "SendDone {token} twice");
                }
            });
            let _ = a.wait(Duration::from_millis(5));
            assert!(
                Instant::now() < deadline,
                "{} SendDone missing",
                pending.len()
            );
        }
        (a, src)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = false;
    while !done {
        b.progress(|ev| match ev {
            Event::Am { src: 0, id: 10, .. } => done = true,
            ev => panic!("unexpected {ev:?}"),
        });
        assert!(Instant::now() < deadline, "puts never done");
    }
    // Puts precede the active message sent after them.
    assert!(region == want, "puts did not land as written");
    b.mem_deregister(&r).unwrap();
    drop(tx.join().unwrap());
}

/// With `Caps.atomics`: fetch-and-add from two endpoints at once on one word
/// gives the exact total and distinct old values; compare-and-swap swaps only
/// on equality; an access outside the region is refused. Without it, atomics
/// are `Unsupported`.
pub fn atomics_between_peers<T: Endpoint>(mut eps: Vec<T>) {
    use crate::RemoteAtomic::{CompareSwap, FetchAdd};
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let mut words = vec![0u64; 4];
    if !a.caps().atomics {
        let r = a.mem_register(words.as_mut_ptr().cast(), 32);
        if let Ok(r) = r {
            assert!(matches!(
                a.atomic(a.index(), &r.rkey, 0, FetchAdd(1)),
                Err(Error::Unsupported { .. })
            ));
        }
        return;
    }
    const N: u64 = 200;
    let r = b.mem_register(words.as_mut_ptr().cast(), 32).unwrap();
    let key = r.rkey;
    // `a` adds remotely from a thread while `b` adds to its own word.
    let t = std::thread::spawn(move || {
        let mut olds = Vec::new();
        for _ in 0..N {
            olds.push(a.atomic(1, &key, 8, FetchAdd(1)).unwrap());
        }
        assert!(matches!(
            a.atomic(1, &key, 32, FetchAdd(1)),
            Err(Error::RemoteAccess { .. })
        ));
        assert_eq!(
            a.atomic(
                1,
                &key,
                16,
                CompareSwap {
                    compare: 5,
                    swap: 9
                }
            )
            .unwrap(),
            0
        );
        assert_eq!(
            a.atomic(
                1,
                &key,
                16,
                CompareSwap {
                    compare: 0,
                    swap: 9
                }
            )
            .unwrap(),
            0
        );
        (a, olds)
    });
    let mut mine = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..N {
        mine.push(b.atomic(b.index(), &key, 8, FetchAdd(1)).unwrap());
        b.progress(|_| {});
    }
    while !t.is_finished() {
        b.progress(|_| {});
        assert!(Instant::now() < deadline, "remote atomics stalled");
    }
    let (a, olds) = t.join().unwrap();
    let mut all: Vec<u64> = olds.into_iter().chain(mine).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..2 * N).collect::<Vec<_>>(),
        "every add saw a distinct old value"
    );
    assert_eq!(words[1], 2 * N);
    assert_eq!(words[2], 9);
    assert_eq!((words[0], words[3]), (0, 0), "neighbours untouched");
    b.mem_deregister(&r).unwrap();
    drop(a);
}

/// A peer blocked in `wait` is woken by a send, long before its timeout.
pub fn wait_is_woken<T: Endpoint>(mut eps: Vec<T>) {
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let waiter = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut got = 0;
        while got == 0 {
            b.wait(Duration::from_secs(20)).unwrap();
            got = b.progress(|_| {});
            assert!(t0.elapsed() < Duration::from_secs(15), "wait was not woken");
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    a.am_send(1, 1, b"wake", b"").unwrap();
    waiter.join().unwrap();
}

/// Get and put between two peers reach the other's registered memory, within bounds only.
pub fn rma_between_peers<T: Endpoint>(mut eps: Vec<T>) {
    if !eps[0].caps().rma {
        return;
    }
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let (ktx, krx) = std::sync::mpsc::channel();
    let (dtx, drx) = std::sync::mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let mut region: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
        let r = b.mem_register(region.as_mut_ptr(), region.len()).unwrap();
        ktx.send(r.rkey).unwrap();
        drx.recv().unwrap();
        let _ = &b;
        region
    });
    let rkey = krx.recv().unwrap();
    let mut got = vec![0u8; 65536];
    // SAFETY: `got` is valid for its length; the owner keeps its region alive
    // until we signal.
    unsafe {
        a.get(1, got.as_mut_ptr(), 65536, &rkey, 0).unwrap();
        let e = a.get(1, got.as_mut_ptr(), 2, &rkey, 65535);
        assert!(matches!(e, Err(Error::RemoteAccess { .. })));
        a.put(1, [7u8; 16].as_ptr(), 16, &rkey, 100).unwrap();
        let e = a.put(1, [7u8; 16].as_ptr(), 16, &rkey, 65530);
        assert!(matches!(e, Err(Error::RemoteAccess { .. })));
    }
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as u8));
    dtx.send(()).unwrap();
    let region = owner.join().unwrap();
    assert!(region[100..116].iter().all(|&v| v == 7));
    assert!(region[65530..]
        .iter()
        .enumerate()
        .all(|(i, &v)| v == (65530 + i) as u8));
}

/// Every endpoint sends to every endpoint (itself included); all arrive in per-sender order.
pub fn all_to_all<T: Endpoint>(eps: Vec<T>, per_peer: usize) {
    let n = eps.len();
    let handles: Vec<_> = eps
        .into_iter()
        .map(|t| {
            std::thread::spawn(move || {
                let me = t.index();
                let max = t.caps().max_am.min(3000);
                let mut got = Vec::new();
                for k in 0..per_peer {
                    for p in 0..n {
                        let dst = (me + p) % n;
                        send_retry(
                            &t,
                            dst,
                            9,
                            &(k as u32).to_le_bytes(),
                            &body(me, k, max),
                            &mut got,
                        );
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                while got.len() < per_peer * n {
                    if drain(&t, &mut got) == 0 {
                        t.wait(Duration::from_millis(10)).unwrap();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "all_to_all stalled: {} of {} messages; {t:#?}",
                        got.len(),
                        per_peer * n
                    );
                }
                let mut next = vec![0usize; n];
                for (src, _, data) in got {
                    let k = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
                    assert_eq!(k, next[src], "order from {src}");
                    assert_eq!(&data[4..], &body(src, k, max)[..]);
                    next[src] += 1;
                }
                // Stay attached until everybody has drained: an endpoint that
                // received all it expects may still owe others its own messages
                // (a soft-RoCE endpoint retransmits them, for instance after a
                // peer's RNR NAK), so none is dropped before every thread is done.
                t
            })
        })
        .collect();
    let done: Vec<T> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(done);
}
