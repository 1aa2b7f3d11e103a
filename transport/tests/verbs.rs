//! Hardware tests of the verbs backend: the transport contract over several
//! endpoints on one RDMA device, in one process. They need a device (an
//! InfiniBand or RoCE adapter, or soft-RoCE: `rdma link add rxe0 type rxe
//! netdev eth0`), so they are ignored by default:
//!
//! ```sh
//! DOS_TEST_DEVICE=rxe0 cargo test -p dos-transport --features verbs --test verbs -- --ignored
//! ```
#![cfg(feature = "verbs")]

use std::time::{Duration, Instant};

use dos_transport::contract;
use dos_transport::verbs::{devices, Prepared, VerbsBuilder, VerbsIface};
use dos_transport::{ActiveMessages, Error, Event, Iface, Progress, Rma, Sent};

/// The device under test.
fn device() -> String {
    match std::env::var("DOS_TEST_DEVICE") {
        Ok(d) if !d.is_empty() => d,
        _ => panic!(
            "set DOS_TEST_DEVICE to an RDMA device of this host (found: {:?})",
            devices()
        ),
    }
}

fn prepare(n: usize) -> Vec<Prepared> {
    let dev = device();
    (0..n)
        .map(|i| {
            VerbsBuilder::open(Some(&dev))
                .unwrap_or_else(|e| panic!("open {dev}: {e:?}"))
                .prepare(i, n)
                .unwrap_or_else(|e| panic!("prepare {i} of {n}: {e:?}"))
        })
        .collect()
}

/// `n` endpoints, all connected to each other.
fn endpoints(n: usize) -> Vec<VerbsIface> {
    let prepared = prepare(n);
    let addrs: Vec<Option<Vec<u8>>> = prepared.iter().map(|p| Some(p.address())).collect();
    prepared
        .into_iter()
        .map(|p| p.connect(&addrs).unwrap())
        .collect()
}

/// Progresses `t` until `want` accepts an event, within 20 s.
fn until<T: Progress>(t: &T, mut want: impl FnMut(&Event<'_>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hit = false;
    while !hit {
        t.progress(|ev| hit |= want(&ev));
        assert!(Instant::now() < deadline, "event never came");
        if !hit {
            let _ = t.wait(Duration::from_millis(5));
        }
    }
}

#[test]
#[ignore = "needs an RDMA device named by DOS_TEST_DEVICE"]
fn contract_suite() {
    contract::run_all(4, endpoints);
}

#[test]
#[ignore = "needs an RDMA device named by DOS_TEST_DEVICE"]
fn zero_copy_from_registered_memory() {
    let mut eps = endpoints(2);
    let b = eps.pop().unwrap();
    let a = eps.pop().unwrap();
    let inline = a.caps().max_inline;
    let len = (inline + 1000).min(a.caps().max_am - 16);

    let mut target = vec![0u8; 2 * len];
    let tr = b.mem_register(target.as_mut_ptr(), target.len()).unwrap();
    let src: Vec<u8> = (0..2 * len).map(|i| (i * 7 + 3) as u8).collect();
    let sr = a.mem_register(src.as_ptr(), src.len()).unwrap();

    // A put from registered memory is lent, and released with SendDone.
    // SAFETY: `src` stays alive and unchanged until the SendDone below.
    let s = unsafe { a.put_zc(1, src.as_ptr(), len, &tr.rkey, len, 7) }.unwrap();
    assert_eq!(s, Sent::Pending);
    // So is the body of an active message.
    // SAFETY: as above.
    let s = unsafe { a.am_send_zc(1, 3, b"hdr", src.as_ptr(), len, 8) }.unwrap();
    assert_eq!(s, Sent::Pending);
    let mut done = Vec::new();
    until(&a, |ev| {
        if let Event::SendDone { peer: 1, token } = ev {
            done.push(*token);
        }
        done.len() == 2
    });
    done.sort();
    assert_eq!(done, [7, 8]);
    let mut got = None;
    until(&b, |ev| {
        if let Event::Am {
            src: 0,
            id: 3,
            data,
        } = ev
        {
            got = Some(data.to_vec());
        }
        got.is_some()
    });
    let got = got.unwrap();
    assert_eq!(&got[..3], b"hdr");
    assert_eq!(&got[3..], &src[..len]);
    // The put landed before the message that followed it.
    assert_eq!(&target[len..], &src[..len]);
    assert!(target[..len].iter().all(|&x| x == 0));
    a.mem_deregister(&sr).unwrap();
    b.mem_deregister(&tr).unwrap();
}

#[test]
#[ignore = "needs an RDMA device named by DOS_TEST_DEVICE"]
fn peers_without_address_are_unreachable() {
    // Endpoints 0 and 2 do not talk over verbs (as if on one host).
    let prepared = prepare(3);
    let all: Vec<Option<Vec<u8>>> = prepared.iter().map(|p| Some(p.address())).collect();
    let eps: Vec<VerbsIface> = prepared
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut addrs = all.clone();
            if i != 1 {
                addrs[2 - i] = None;
            }
            p.connect(&addrs).unwrap()
        })
        .collect();
    assert!(matches!(
        eps[0].am_send(2, 1, b"x", b""),
        Err(Error::PeerUnreachable { peer: 2 })
    ));
    assert!(eps[0].reaches(1) && !eps[0].reaches(2));
    eps[0].am_send(1, 1, b"x", b"").unwrap();
    eps[2].am_send(1, 2, b"y", b"").unwrap();
    let mut got = Vec::new();
    until(&eps[1], |ev| {
        if let Event::Am { src, id, .. } = ev {
            got.push((*src, *id));
        }
        got.len() == 2
    });
    got.sort();
    assert_eq!(got, [(0, 1), (2, 2)]);
}

#[test]
#[ignore = "needs an RDMA device named by DOS_TEST_DEVICE"]
fn dead_peer_is_reported() {
    let mut eps = endpoints(2);
    drop(eps.pop());
    let a = eps.pop().unwrap();
    // The peer's queue pair is gone: the device retries, gives up, and the
    // connection is reported broken once.
    a.am_send(1, 1, b"anyone?", b"").unwrap();
    let mut seen = 0;
    until(&a, |ev| {
        if let Event::Disconnected { peer: 1 } = ev {
            seen += 1;
        }
        seen > 0
    });
    assert_eq!(seen, 1);
    assert!(matches!(
        a.am_send(1, 1, b"x", b""),
        Err(Error::PeerUnreachable { peer: 1 })
    ));
}

#[test]
#[ignore = "needs an RDMA device named by DOS_TEST_DEVICE"]
fn addresses_of_another_job_shape_are_refused() {
    let mut two = prepare(2);
    let three = prepare(3);
    let addrs: Vec<Option<Vec<u8>>> = vec![Some(two[0].address()), Some(three[1].address())];
    let e = two.remove(0).connect(&addrs).unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
}
