//! The planner against a serial model: applying a plan to a model file gives
//! exactly what applying every rank's ranges one after the other gives.

use super::*;
use crate::io::view::View;
use proptest::prelude::*;

/// The byte rank `rank` writes at position `i` of its packed buffer.
fn byte(rank: usize, i: u64) -> u8 {
    (rank as u64 * 131 + i * 7 + 1) as u8
}

fn packed_data(rank: usize, len: u64) -> Vec<u8> {
    (0..len).map(|i| byte(rank, i)).collect()
}

/// The serial model of a collective write.
fn serial_write(file: &mut [u8], accesses: &[Vec<(u64, u64)>]) {
    for (rank, acc) in accesses.iter().enumerate() {
        let mut b = 0u64;
        for &(off, len) in acc {
            for i in 0..len {
                file[(off + i) as usize] = byte(rank, b + i);
            }
            b += len;
        }
    }
}

/// The serial model of a collective read: each rank's packed buffer.
fn serial_read(file: &[u8], accesses: &[Vec<(u64, u64)>]) -> Vec<Vec<u8>> {
    accesses
        .iter()
        .map(|acc| {
            acc.iter()
                .flat_map(|&(o, l)| file[o as usize..(o + l) as usize].to_vec())
                .collect()
        })
        .collect()
}

/// Checks the plan's invariants that make concurrent workers independent.
fn check_shape(plan: &Plan, ss: u64, aggregators: &[usize]) -> Result<(), TestCaseError> {
    let mut all: Vec<(u64, u64)> = Vec::new();
    for w in &plan.workers {
        if !plan.direct {
            prop_assert!(aggregators.contains(&w.rank));
            prop_assert_eq!(w.domain.0 % ss, 0);
            prop_assert_eq!(w.domain.1 % ss, 0);
        } else {
            prop_assert!(w.parts.iter().all(|p| p.rank == w.rank));
        }
        for e in &w.extents {
            prop_assert!(e.len > 0);
            prop_assert!(e.offset >= w.domain.0 && e.offset + e.len <= w.domain.1);
            all.push((e.offset, e.offset + e.len));
        }
        for p in &w.parts {
            let inside = w
                .extents
                .iter()
                .filter(|e| p.offset >= e.offset && p.offset + p.len <= e.offset + e.len)
                .count();
            prop_assert_eq!(inside, 1, "part {:?} not in exactly one extent", p);
        }
        // Parts in rank order.
        prop_assert!(w.parts.windows(2).all(|x| x[0].rank <= x[1].rank));
    }
    all.sort_unstable();
    for x in all.windows(2) {
        prop_assert!(x[0].1 <= x[1].0, "extents {:?} overlap", x);
    }
    if !plan.direct {
        let mut doms: Vec<(u64, u64)> = plan.workers.iter().map(|w| w.domain).collect();
        doms.sort_unstable();
        prop_assert!(doms.windows(2).all(|x| x[0].1 <= x[1].0));
        let ranks: Vec<usize> = plan.workers.iter().map(|w| w.rank).collect();
        let mut dedup = ranks.clone();
        dedup.dedup();
        prop_assert_eq!(ranks, dedup);
    }
    Ok(())
}

/// What the ranks send each worker, as bytes, from their packed buffers.
fn messages(plan: &Plan, data: &[Vec<u8>]) -> BTreeMap<(usize, usize), Vec<u8>> {
    let mut out = BTreeMap::new();
    for (rank, buf) in data.iter().enumerate() {
        for (w, parts) in plan.send_parts(rank) {
            let mut m = Vec::new();
            for p in parts {
                m.extend_from_slice(&buf[p.buf_offset as usize..(p.buf_offset + p.len) as usize]);
            }
            out.insert((rank, w), m);
        }
    }
    out
}

/// Applies a write plan: every worker reads its holed extents from the file
/// as it was (workers run concurrently), lays its parts over them in order,
/// and writes the extents back.
fn apply_write(plan: &Plan, file: &mut [u8], data: &[Vec<u8>]) {
    let before = file.to_vec();
    let msgs = messages(plan, data);
    for w in &plan.workers {
        let mut cursor: BTreeMap<usize, usize> = BTreeMap::new();
        let mut bufs: Vec<Vec<u8>> = w
            .extents
            .iter()
            .map(|e| {
                if e.full {
                    vec![0xEE; e.len as usize]
                } else {
                    before[e.offset as usize..(e.offset + e.len) as usize].to_vec()
                }
            })
            .collect();
        for p in &w.parts {
            let src: &[u8] = if plan.direct {
                &data[p.rank][p.buf_offset as usize..(p.buf_offset + p.len) as usize]
            } else {
                let c = cursor.entry(p.rank).or_insert(0);
                let m = &msgs[&(p.rank, w.rank)];
                let s = &m[*c..*c + p.len as usize];
                *c += p.len as usize;
                s
            };
            let k = w
                .extents
                .iter()
                .position(|e| p.offset >= e.offset && p.offset + p.len <= e.offset + e.len)
                .unwrap();
            let at = (p.offset - w.extents[k].offset) as usize;
            bufs[k][at..at + p.len as usize].copy_from_slice(src);
        }
        for (e, b) in w.extents.iter().zip(bufs) {
            file[e.offset as usize..(e.offset + e.len) as usize].copy_from_slice(&b);
        }
    }
}

/// Applies a read plan: workers read their extents and send each rank its
/// parts; each rank unpacks into its buffer.
fn apply_read(plan: &Plan, file: &[u8], out: &mut [Vec<u8>]) {
    for w in &plan.workers {
        let bufs: Vec<&[u8]> = w
            .extents
            .iter()
            .map(|e| &file[e.offset as usize..(e.offset + e.len) as usize])
            .collect();
        // The message to each rank, in part order.
        let mut msgs: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for p in &w.parts {
            let k = w
                .extents
                .iter()
                .position(|e| p.offset >= e.offset && p.offset + p.len <= e.offset + e.len)
                .unwrap();
            let at = (p.offset - w.extents[k].offset) as usize;
            msgs.entry(p.rank)
                .or_default()
                .extend_from_slice(&bufs[k][at..at + p.len as usize]);
        }
        for (rank, m) in msgs {
            let parts = if plan.direct {
                w.parts.clone()
            } else {
                plan.send_parts(rank).remove(&w.rank).unwrap()
            };
            let mut c = 0usize;
            for p in parts {
                out[rank][p.buf_offset as usize..(p.buf_offset + p.len) as usize]
                    .copy_from_slice(&m[c..c + p.len as usize]);
                c += p.len as usize;
            }
        }
    }
}

/// Whether some stripe is touched by two ranks (the model of "interleave").
fn interleaved(accesses: &[Vec<(u64, u64)>], ss: u64) -> bool {
    let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
    for (rank, acc) in accesses.iter().enumerate() {
        for &(o, l) in acc {
            for b in o..o + l {
                if *owner.entry(b / ss).or_insert(rank) != rank {
                    return true;
                }
            }
        }
    }
    false
}

const FILE: u64 = 4000;

fn access_lists() -> impl Strategy<Value = Vec<Vec<(u64, u64)>>> {
    let range = (0..FILE, 0u64..300).prop_map(|(o, l)| (o, l.min(FILE - o)));
    proptest::collection::vec(proptest::collection::vec(range, 0..6), 1..8)
}

/// Aggregators as the lowest rank of each node, with ranks dealt to
/// `nodes` nodes in blocks (as dosrun places them) or round robin.
fn aggregators_of(ranks: usize, nodes: usize, blocked: bool) -> Vec<usize> {
    let nodes = nodes.clamp(1, ranks);
    let node_of = |r: usize| {
        if blocked {
            r * nodes / ranks
        } else {
            r % nodes
        }
    };
    let mut lowest: BTreeMap<usize, usize> = BTreeMap::new();
    for r in 0..ranks {
        lowest.entry(node_of(r)).or_insert(r);
    }
    let mut v: Vec<usize> = lowest.into_values().collect();
    v.sort_unstable();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn write_plan_matches_serial_model(
        accesses in access_lists(),
        ss in 1u64..700,
        nodes in 1usize..5,
        blocked in any::<bool>(),
        hole in prop_oneof![Just(0u64), 1u64..200, Just(u64::MAX)],
        allow_direct in any::<bool>(),
        seed in any::<u8>(),
        window in prop_oneof![Just(u64::MAX), 1u64..2000],
    ) {
        let n = accesses.len();
        let aggs = aggregators_of(n, nodes, blocked);
        let refs: Vec<&Access> = accesses.iter().map(|a| a.as_slice()).collect();
        let opts = Options { sieve_hole: hole, allow_direct };
        let p = plan(&refs, ss, &aggs, opts).unwrap();
        check_shape(&p, ss, &aggs)?;
        if allow_direct {
            prop_assert_eq!(p.direct, !interleaved(&accesses, ss));
        }
        let file0: Vec<u8> = (0..FILE).map(|i| (i as u8) ^ seed).collect();
        let mut want = file0.clone();
        serial_write(&mut want, &accesses);
        let data: Vec<Vec<u8>> = (0..n).map(|r| packed_data(r, p.packed[r])).collect();
        // In rounds of at most `window` bytes per worker (one round for MAX).
        let rounds = p.rounds(window, ss, hole);
        let mut got = file0.clone();
        for r in &rounds {
            check_shape(r, ss, &aggs)?;
            for w in r.workers.iter().filter(|_| !p.direct) {
                prop_assert!(w.domain.1 - w.domain.0 <= window.div_ceil(ss).saturating_mul(ss));
            }
            apply_write(r, &mut got, &data);
        }
        prop_assert!(got == want, "plan {:?}", p);

        // Reads of the written file.
        let want_r = serial_read(&want, &accesses);
        let mut got_r: Vec<Vec<u8>> = p.packed.iter().map(|&n| vec![0xAA; n as usize]).collect();
        for r in &rounds {
            apply_read(r, &want, &mut got_r);
        }
        prop_assert_eq!(got_r, want_r);
    }
}

/// A random view: segments with gaps, an extent, a displacement, and an
/// access of it (offset in etypes, length in bytes, whole etypes).
fn view_access() -> impl Strategy<Value = (View, u64, u64, u64)> {
    (
        prop_oneof![Just(1u64), Just(4), 1u64..6],
        proptest::collection::vec((0u64..5, 1u64..4), 1..5),
        0u64..4,
        0u64..200,
        0u64..30,
        0u64..60,
    )
        .prop_map(|(e, gaps, tail, disp, off, len)| {
            let mut segs = Vec::new();
            let mut at = 0;
            for (gap, l) in gaps {
                at += gap * e;
                segs.push((at, l * e));
                at += l * e;
            }
            let v = View::new(e, &segs, at + tail * e).unwrap();
            (v, disp, off, len * e)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Views through the planner: every rank's view access, mapped to file
    /// ranges and planned, writes what a byte-by-byte serial write through
    /// the views writes, and reads it back.
    #[test]
    fn views_through_the_planner_match_a_byte_model(
        views in proptest::collection::vec(view_access(), 1..5),
        ss in 1u64..300,
        hole in prop_oneof![Just(0u64), 1u64..100],
        allow_direct in any::<bool>(),
    ) {
        let n = views.len();
        let accesses: Vec<Vec<(u64, u64)>> = views
            .iter()
            .map(|(v, d, o, l)| v.map(*d, *o, *l).unwrap())
            .collect();
        let end = accesses.iter().flatten().map(|r| r.0 + r.1).max().unwrap_or(0);
        let mut want = vec![0u8; end as usize];
        for (rank, (v, d, o, l)) in views.iter().enumerate() {
            // Byte k of the view lies in tile k / size, at the k % size-th
            // selected byte of the tile.
            let sel: Vec<u64> = v.segments().iter().flat_map(|&(a, b)| a..a + b).collect();
            for i in 0..*l {
                let k = o * v.etype() + i;
                let at = d + (k / v.size()) * v.extent() + sel[(k % v.size()) as usize];
                want[at as usize] = byte(rank, i);
            }
        }
        let refs: Vec<&Access> = accesses.iter().map(|a| a.as_slice()).collect();
        let aggs: Vec<usize> = (0..n).step_by(2).collect();
        let opts = Options { sieve_hole: hole, allow_direct };
        let p = plan(&refs, ss, &aggs, opts).unwrap();
        let data: Vec<Vec<u8>> = (0..n).map(|r| packed_data(r, p.packed[r])).collect();
        let mut got = vec![0u8; end as usize];
        apply_write(&p, &mut got, &data);
        prop_assert_eq!(&got, &want);
        let mut back: Vec<Vec<u8>> = p.packed.iter().map(|&k| vec![0xAA; k as usize]).collect();
        apply_read(&p, &want, &mut back);
        // Where views overlap, the higher rank's bytes are in the file.
        prop_assert_eq!(back, serial_read(&want, &accesses));
    }
}

#[test]
fn segmented_is_direct_and_strided_is_aggregated() {
    let ss = 100;
    // Segmented: rank r owns 0..300 + 300 r, stripe aligned.
    let seg: Vec<Vec<(u64, u64)>> = (0..3).map(|r| vec![(300 * r, 300)]).collect();
    let refs: Vec<&Access> = seg.iter().map(|a| a.as_slice()).collect();
    let p = plan(&refs, ss, &[0, 2], Options::default()).unwrap();
    assert!(p.direct);
    assert_eq!(p.workers.len(), 3);
    assert!(p.send_parts(1).is_empty() || p.send_parts(1).keys().all(|&w| w == 1));

    // Strided: 10-byte blocks interleaved every 30 bytes.
    let strided: Vec<Vec<(u64, u64)>> = (0..3)
        .map(|r| (0..20).map(|k| (30 * k + 10 * r, 10)).collect())
        .collect();
    let refs: Vec<&Access> = strided.iter().map(|a| a.as_slice()).collect();
    let p = plan(&refs, ss, &[0, 2], Options::default()).unwrap();
    assert!(!p.direct);
    assert_eq!(p.workers.len(), 2);
    assert_eq!(p.workers[0].domain, (0, 300));
    assert_eq!(p.workers[1].domain, (300, 600));
    // Every domain is covered by one full extent: no read before writing.
    for w in &p.workers {
        assert_eq!(w.extents.len(), 1);
        assert!(w.extents[0].full);
    }
    assert_eq!(p.bytes_between(1, 2), 100);
}

#[test]
fn holes_are_sieved_up_to_the_threshold() {
    let a = [(0u64, 10u64), (20, 10), (1000, 10)];
    let b = [(5u64, 10u64)];
    let refs: Vec<&Access> = vec![&a, &b];
    let opts = Options {
        sieve_hole: 100,
        allow_direct: true,
    };
    let p = plan(&refs, 4096, &[0], opts).unwrap();
    assert!(!p.direct);
    let e = &p.workers[0].extents;
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].offset, e[0].len, e[0].full), (0, 30, false));
    assert_eq!((e[1].offset, e[1].len, e[1].full), (1000, 10, true));
}

#[test]
fn direct_holes_are_not_filled_over_another_ranks_stripe() {
    // Rank 0 has stripes 0 and 2, rank 1 stripe 1: rank 0 must not write
    // stripe 1 back, whatever the threshold.
    let a = [(0u64, 10u64), (25, 5)];
    let b = [(12u64, 3u64)];
    let refs: Vec<&Access> = vec![&a, &b];
    let opts = Options {
        sieve_hole: u64::MAX,
        allow_direct: true,
    };
    let p = plan(&refs, 10, &[0], opts).unwrap();
    assert!(p.direct);
    assert_eq!(p.workers[0].extents.len(), 2);
    // Within its own stripe, a hole is filled.
    let c = [(0u64, 2u64), (5, 2)];
    let refs: Vec<&Access> = vec![&c];
    let p = plan(&refs, 10, &[0], opts).unwrap();
    assert_eq!(p.workers[0].extents.len(), 1);
}

#[test]
fn bad_input_is_a_typed_error() {
    let a = [(u64::MAX, 2u64)];
    let refs: Vec<&Access> = vec![&a];
    assert!(matches!(
        plan(&refs, 10, &[0], Options::default()),
        Err(PlanError::Overflow { rank: 0, .. })
    ));
    let a = [(0u64, 20u64)];
    let refs: Vec<&Access> = vec![&a, &a];
    assert!(matches!(
        plan(&refs, 0, &[0], Options::default()),
        Err(PlanError::ZeroStripe)
    ));
    for bad in [&[][..], &[1, 0], &[0, 2]] {
        assert!(matches!(
            plan(&refs, 10, bad, Options::default()),
            Err(PlanError::BadAggregators { .. })
        ));
    }
    // Nothing to do: an empty plan.
    let e: [(u64, u64); 0] = [];
    let refs: Vec<&Access> = vec![&e, &e];
    let p = plan(&refs, 10, &[], Options::default()).unwrap();
    assert!(p.workers.is_empty());
}

/// IOR's segmented pattern with random ranges: rank `r`'s ranges lie in its
/// own block `r * block..(r + 1) * block` (not aligned to stripes in
/// general, so neighbouring ranks may still share a stripe); some ranks
/// have none.
fn segmented_lists() -> impl Strategy<Value = Vec<Vec<(u64, u64)>>> {
    (1usize..7, 50u64..600).prop_flat_map(|(n, block)| {
        proptest::collection::vec(proptest::collection::vec((0..block, 0u64..250), 0..5), n)
            .prop_map(move |lists| {
                lists
                    .into_iter()
                    .enumerate()
                    .map(|(r, l)| {
                        l.into_iter()
                            .map(|(o, len)| (r as u64 * block + o, len.min(block - o)))
                            .collect()
                    })
                    .collect()
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// The path decided from the summaries alone gives the file bytes (and
    /// read buffers) of the two-phase path and of the serial model, each
    /// rank planning only its own list when it is direct.
    #[test]
    fn summary_path_matches_two_phase(
        accesses in prop_oneof![access_lists(), segmented_lists()],
        ss in 1u64..700,
        nodes in 1usize..5,
        blocked in any::<bool>(),
        hole in prop_oneof![Just(0u64), 1u64..200, Just(u64::MAX)],
        seed in any::<u8>(),
    ) {
        let n = accesses.len();
        let aggs = aggregators_of(n, nodes, blocked);
        let refs: Vec<&Access> = accesses.iter().map(|a| a.as_slice()).collect();
        let sums: Vec<Summary> = accesses.iter().map(|a| Summary::of(a)).collect();
        for s in &sums {
            prop_assert_eq!(Summary::from_words(s.to_words()), *s);
        }
        let path = decide(&sums, ss, true).unwrap();
        prop_assert_eq!(decide(&sums, ss, false).unwrap() == Path::Direct, false);
        let full = plan(&refs, ss, &aggs, Options { sieve_hole: hole, allow_direct: true }).unwrap();
        let two = plan(&refs, ss, &aggs, Options { sieve_hole: hole, allow_direct: false }).unwrap();

        let file0: Vec<u8> = (0..FILE).map(|i| (i as u8) ^ seed).collect();
        let mut want = file0.clone();
        serial_write(&mut want, &accesses);
        let data: Vec<Vec<u8>> = (0..n).map(|r| packed_data(r, two.packed[r])).collect();
        let mut got_two = file0.clone();
        for r in two.rounds(u64::MAX, ss, hole) {
            apply_write(&r, &mut got_two, &data);
        }
        prop_assert!(got_two == want);
        if sums.iter().all(|s| s.count <= 1) {
            prop_assert_eq!(path == Path::Direct, !interleaved(&accesses, ss));
        }
        match path {
            Path::Direct => {
                prop_assert!(!interleaved(&accesses, ss));
                prop_assert!(full.direct);
                let mine: Vec<Plan> = (0..n)
                    .filter_map(|r| direct_worker(r, &accesses[r], hole).unwrap())
                    .map(|w| Plan { direct: true, workers: vec![w], packed: full.packed.clone() })
                    .collect();
                let workers: Vec<Worker> = mine.iter().map(|p| p.workers[0].clone()).collect();
                prop_assert_eq!(&workers, &full.workers);
                // Together they have the shape of one plan (disjoint extents).
                let joint = Plan { direct: true, workers, packed: full.packed.clone() };
                check_shape(&joint, ss, &aggs)?;
                // Each rank writes on its own, against the file as it was.
                let mut got = file0.clone();
                for p in &mine {
                    let mut alone = file0.clone();
                    apply_write(p, &mut alone, &data);
                    for e in &p.workers[0].extents {
                        let r = e.offset as usize..(e.offset + e.len) as usize;
                        got[r.clone()].copy_from_slice(&alone[r]);
                    }
                }
                prop_assert!(got == want, "direct plans {:?}", mine);
                let mut got_r: Vec<Vec<u8>> =
                    full.packed.iter().map(|&n| vec![0xAA; n as usize]).collect();
                for p in &mine {
                    apply_read(p, &want, &mut got_r);
                }
                prop_assert_eq!(got_r, serial_read(&want, &accesses));
            }
            Path::Known(lists) => {
                prop_assert!(sums.iter().all(|s| s.count <= 1));
                let refs: Vec<&Access> = lists.iter().map(|a| a.as_slice()).collect();
                let known = plan(&refs, ss, &aggs, Options { sieve_hole: hole, allow_direct: true }).unwrap();
                prop_assert_eq!(known, full);
            }
            Path::Gather => {
                prop_assert!(sums.iter().any(|s| s.count > 1));
            }
        }
    }
}

#[test]
fn summaries_decide_the_path() {
    let ss = 100;
    let seg: Vec<Vec<(u64, u64)>> = (0..3)
        .map(|r| vec![(300 * r, 100), (300 * r + 150, 150)])
        .collect();
    let sums: Vec<Summary> = seg.iter().map(|a| Summary::of(a)).collect();
    assert_eq!(
        sums[1],
        Summary {
            count: 2,
            first: 300,
            end: 600
        }
    );
    assert_eq!(decide(&sums, ss, true), Ok(Path::Direct));
    assert_eq!(decide(&sums, ss, false), Ok(Path::Gather));
    // Spans sharing stripe 2 (ranks 0 and 1 at 250..350): the lists decide.
    assert_eq!(decide(&sums, 250, true), Ok(Path::Gather));
    // One range each, interleaved: the summaries are the lists.
    let one = [
        Summary::of(&[(0, 10)]),
        Summary::of(&[(5, 10)]),
        Summary::of(&[]),
    ];
    assert_eq!(
        decide(&one, ss, true),
        Ok(Path::Known(vec![vec![(0, 10)], vec![(5, 10)], vec![]]))
    );
    // Empty ranges and empty ranks do not count for the span.
    let e = [Summary::of(&[(50, 0), (0, 10)]), Summary::of(&[(5, 0)])];
    assert_eq!(
        e[1],
        Summary {
            count: 1,
            first: 0,
            end: 0
        }
    );
    assert_eq!(decide(&e, ss, true), Ok(Path::Direct));
}

#[test]
fn bad_summaries_are_a_typed_error_on_every_rank() {
    let bad = [
        Summary::of(&[(0, 10)]),
        Summary::of(&[(1, 1), (u64::MAX, 2)]),
    ];
    assert_eq!(bad[1].count, Summary::OVERFLOW);
    assert_eq!(
        decide(&bad, 10, true),
        Err(PlanError::Overflow {
            rank: 1,
            offset: u64::MAX,
            len: 2
        })
    );
    assert_eq!(decide(&bad[..1], 0, true), Err(PlanError::ZeroStripe));
    assert!(matches!(
        direct_worker(0, &[(u64::MAX, 2)], 0),
        Err(PlanError::Overflow { rank: 0, .. })
    ));
    assert_eq!(direct_worker(0, &[(7, 0)], 0), Ok(None));
}
