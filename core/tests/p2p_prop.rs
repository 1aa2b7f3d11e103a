//! Property test of the matching engine: random traffic with random tags,
//! sizes across the eager/rendezvous boundary and wildcard receives must obey
//! MPI's matching rules (non-overtaking per sender and tag, wildcards take the
//! earliest eligible message of the chosen sender) and deliver intact payloads.

use dos::config::{Config, RndvMode};
use dos::testing::run_threads_with;
use dos::{Source, TagSel, ANY_SOURCE, ANY_TAG};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Msg {
    tag: i32,
    len: usize,
}

fn payload(src: usize, k: usize, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(16));
    v.extend_from_slice(&(src as u64).to_le_bytes());
    v.extend_from_slice(&(k as u64).to_le_bytes());
    while v.len() < len {
        v.push((v.len() * 7 + k + src) as u8);
    }
    v.truncate(len.max(16));
    v
}

fn msgs() -> impl Strategy<Value = Vec<Msg>> {
    prop::collection::vec(
        (
            0..3i32,
            prop_oneof![16usize..200, 16_000usize..20_000, 60_000usize..70_000],
        )
            .prop_map(|(tag, len)| Msg { tag, len }),
        0..12,
    )
}

/// How rank 0 receives: `(source, tag)` selectors, `None` meaning any.
fn selectors(n: usize) -> impl Strategy<Value = Vec<(Option<usize>, Option<i32>)>> {
    prop::collection::vec((prop::option::of(1..n), prop::option::of(0..3i32)), 64)
}

fn run(traffic: Vec<Vec<Msg>>, sel: Vec<(Option<usize>, Option<i32>)>, mode: RndvMode) {
    let n = traffic.len() + 1;
    let cfg = Config {
        rndv: mode,
        ..Config::default()
    };
    let traffic = &traffic;
    let sel = &sel;
    run_threads_with(n, cfg, |w| {
        let me = w.rank();
        if me > 0 {
            // Nonblocking sends: every message is announced at once, so rank 0 may
            // receive them in any order its selectors ask for (blocking rendezvous
            // sends would make some orders deadlock, as in MPI).
            let bufs: Vec<Vec<u8>> = traffic[me - 1]
                .iter()
                .enumerate()
                .map(|(k, m)| payload(me, k, m.len))
                .collect();
            dos::scope(|s| {
                let reqs: Vec<_> = bufs
                    .iter()
                    .zip(&traffic[me - 1])
                    .map(|(b, m)| w.isend(s, b, 0, m.tag).unwrap())
                    .collect();
                dos::Request::wait_all(reqs).unwrap();
            });
            return;
        }
        // Rank 0: the model is, per sender, the list of messages not yet received.
        let mut left: Vec<Vec<(usize, Msg)>> = std::iter::once(Vec::new())
            .chain(
                traffic
                    .iter()
                    .map(|t| t.iter().cloned().enumerate().collect()),
            )
            .collect();
        let mut sel_iter = sel.iter().cycle();
        while left.iter().any(|l| !l.is_empty()) {
            let (s, t) = *sel_iter.next().unwrap();
            // Only use a selector that some remaining message satisfies, so the
            // receive cannot block forever.
            let eligible =
                |src: usize, m: &Msg| s.is_none_or(|s| s == src) && t.is_none_or(|t| t == m.tag);
            if !(1..n).any(|src| left[src].iter().any(|(_, m)| eligible(src, m))) {
                continue;
            }
            let src_sel = s.map_or(ANY_SOURCE, Source::Rank);
            let tag_sel = t.map_or(ANY_TAG, TagSel::Tag);
            let (data, st) = w.recv_vec::<u8>(src_sel, tag_sel).unwrap();
            let src = st.source;
            assert!(s.is_none_or(|s| s == src));
            // It must be the earliest remaining message of that sender that matches.
            let pos = left[src]
                .iter()
                .position(|(_, m)| eligible(src, m))
                .expect("received a message that should not match");
            let (k, m) = left[src].remove(pos);
            assert_eq!(st.tag, m.tag);
            assert_eq!(
                data,
                payload(src, k, m.len),
                "payload of message {k} from {src}"
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn matching_obeys_mpi_rules(
        traffic in prop::collection::vec(msgs(), 1..4),
        sel in selectors(4),
        cma in any::<bool>(),
    ) {
        let sel = sel
            .into_iter()
            .map(|(s, t)| (s.filter(|&s| s <= traffic.len()), t))
            .collect();
        run(traffic, sel, if cma { RndvMode::Cma } else { RndvMode::Pipeline });
    }
}
