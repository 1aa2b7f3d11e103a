//! Groups and communicators made from them, against serial models, on 1, 2,
//! 3, 4 and 7 ranks run as threads over the real shm stack.

use dos::op::Sum;
use dos::testing::run_threads;
use dos::{Comm, Error, Group, GroupCompare};

const SIZES: [usize; 5] = [1, 2, 3, 4, 7];

/// A deterministic pseudo-random subset of `0..n` in a shuffled order.
fn pick(n: usize, salt: u64) -> Vec<usize> {
    let mut h = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        h
    };
    let mut v: Vec<usize> = (0..n).filter(|_| next() % 3 != 0).collect();
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Checks a communicator made of world ranks `members` (in order) at world rank `me`.
fn check_made(c: Option<Comm>, members: &[usize], me: usize) {
    match members.iter().position(|&m| m == me) {
        None => assert!(c.is_none(), "rank {me} is not in {members:?}"),
        Some(pos) => {
            let c = c.expect("a member gets a communicator");
            assert_eq!((c.rank(), c.size()), (pos, members.len()));
            assert_eq!(c.group().members(), members);
            // A collective and point-to-point on it.
            let mut sum = [0u64];
            c.allreduce(&[me as u64], &mut sum, Sum).unwrap();
            assert_eq!(sum[0], members.iter().map(|&m| m as u64).sum::<u64>());
            let n = c.size();
            let mut got = [0u64];
            c.sendrecv(
                &[me as u64],
                (pos + 1) % n,
                5,
                &mut got,
                (pos + n - 1) % n,
                5,
            )
            .unwrap();
            assert_eq!(got[0], members[(pos + n - 1) % n] as u64);
            // And a nonblocking one.
            let mine = [pos as u32 + 1];
            let mut all = vec![0u32; n];
            dos::scope(|s| c.iallgather(s, &mine, &mut all).unwrap().wait().unwrap());
            assert_eq!(all, (1..=n as u32).collect::<Vec<_>>());
        }
    }
}

#[test]
fn group_operations_match_the_set_model() {
    for n in SIZES {
        run_threads(n, |w| {
            let me = w.rank();
            let all = w.group();
            assert_eq!(all.members(), (0..n).collect::<Vec<_>>());
            assert_eq!((all.size(), all.rank()), (n, Some(me)));
            for salt in 0..6 {
                let (ia, ib) = (pick(n, salt), pick(n, salt + 100));
                let a = all.incl(&ia).unwrap();
                let b = all.incl(&ib).unwrap();
                assert_eq!(a.members(), ia);
                assert_eq!(a.rank(), ia.iter().position(|&m| m == me));
                let ex = all.excl(&ia).unwrap();
                let want: Vec<usize> = (0..n).filter(|x| !ia.contains(x)).collect();
                assert_eq!(ex.members(), want);
                let mut u = ia.clone();
                u.extend(ib.iter().filter(|x| !ia.contains(x)));
                assert_eq!(a.union(&b).members(), u);
                let i: Vec<usize> = ia.iter().copied().filter(|x| ib.contains(x)).collect();
                assert_eq!(a.intersection(&b).members(), i);
                let d: Vec<usize> = ia.iter().copied().filter(|x| !ib.contains(x)).collect();
                assert_eq!(a.difference(&b).members(), d);
                let ranks: Vec<usize> = (0..ia.len()).collect();
                let t = a.translate_ranks(&ranks, &b).unwrap();
                for (k, got) in t.into_iter().enumerate() {
                    assert_eq!(got, ib.iter().position(|&m| m == ia[k]));
                }
                let mut sa = ia.clone();
                let mut sb = ib.clone();
                sa.sort();
                sb.sort();
                let want = if ia == ib {
                    GroupCompare::Ident
                } else if sa == sb {
                    GroupCompare::Similar
                } else {
                    GroupCompare::Unequal
                };
                assert_eq!(a.compare(&b), want);
            }
            let rev: Vec<usize> = (0..n).rev().collect();
            let r = all.incl(&rev).unwrap();
            assert_eq!(
                r.compare(&all),
                if n == 1 {
                    GroupCompare::Ident
                } else {
                    GroupCompare::Similar
                }
            );
            assert!(matches!(
                all.incl(&[n]),
                Err(Error::InvalidRank { rank, size }) if rank == n && size == n
            ));
            assert!(matches!(
                all.excl(&[0, 0]),
                Err(Error::InvalidArgument { .. })
            ));
        });
    }
}

#[test]
fn create_matches_the_model() {
    for n in SIZES {
        run_threads(n, |w| {
            let me = w.rank();
            let all = w.group();
            for salt in 0..5 {
                let members = pick(n, salt);
                let g = all.incl(&members).unwrap();
                check_made(w.create(&g).unwrap(), &members, me);
            }
            // The whole world reversed, and the empty group.
            let rev: Vec<usize> = (0..n).rev().collect();
            check_made(w.create(&all.incl(&rev).unwrap()).unwrap(), &rev, me);
            assert!(w.create(&all.incl(&[]).unwrap()).unwrap().is_none());
            // From a split communicator: its group names world ranks.
            let half = w.split(Some((me % 2) as u32), 0).unwrap().unwrap();
            let hg = half.group();
            let keep = pick(hg.size(), 7);
            let sub = hg.incl(&keep).unwrap();
            let world_members: Vec<usize> = keep.iter().map(|&k| hg.members()[k]).collect();
            check_made(half.create(&sub).unwrap(), &world_members, me);
        });
    }
}

#[test]
fn create_rejects_bad_groups_on_every_rank() {
    for n in [2usize, 3, 4, 7] {
        run_threads(n, |w| {
            let me = w.rank();
            let half = w.split(Some((me % 2) as u32), 0).unwrap().unwrap();
            // The world's group is not inside the half.
            assert!(matches!(
                half.create(&w.group()),
                Err(Error::InvalidArgument { .. })
            ));
            // Ranks that disagree on the group all get an error.
            let g: Group = if me == 0 {
                w.group().incl(&[0]).unwrap()
            } else {
                w.group()
            };
            assert!(matches!(w.create(&g), Err(Error::InvalidArgument { .. })));
            // The parent still works.
            w.barrier().unwrap();
            check_made(
                w.create(&w.group()).unwrap(),
                &(0..n).collect::<Vec<_>>(),
                me,
            );
        });
    }
}

#[test]
fn create_group_involves_only_the_members() {
    for n in SIZES {
        run_threads(n, |w| {
            let me = w.rank();
            // Two disjoint groups at once, each building its communicator
            // without the other; the order within each is reversed.
            let evens: Vec<usize> = (0..n).filter(|r| r % 2 == 0).rev().collect();
            let odds: Vec<usize> = (0..n).filter(|r| r % 2 == 1).rev().collect();
            let (mine, tag) = if me % 2 == 0 { (&evens, 1) } else { (&odds, 2) };
            let g = w.group().incl(mine).unwrap();
            let c = w.create_group(&g, tag).unwrap();
            check_made(Some(c), mine, me);
            assert!(matches!(
                w.create_group(&g, -1),
                Err(Error::InvalidTag { tag: -1 })
            ));
            let other = w.group().difference(&g);
            assert!(matches!(
                w.create_group(&other, 3),
                Err(Error::InvalidArgument { .. })
            ));
            w.barrier().unwrap();
        });
    }
}
