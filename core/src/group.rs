//! Process groups (`MPI_Group`) and communicators made from them
//! (`MPI_Comm_create`, `MPI_Comm_create_group`).
//!
//! A [`Group`] is an ordered set of processes, taken from a communicator
//! ([`Comm::group`]) and combined locally, without communication:
//! [`Group::incl`], [`Group::excl`], [`Group::union`],
//! [`Group::intersection`], [`Group::difference`]; ranks translate between
//! groups with [`Group::translate_ranks`]. A group's rank `i` is its `i`-th
//! process. [`Comm::create`] turns a group into a communicator: collective
//! over the parent, every rank passes the same group, members get
//! `Some(comm)` ranked in group order and the others `None`.
//! [`Comm::create_group`] is collective over the group's members only.
//!
//! ```
//! dos::testing::run_threads(5, |world| {
//!     let all = world.group();
//!     let evens = all.incl(&[0, 2, 4]).unwrap();
//!     let odd = all.difference(&evens);
//!     assert_eq!(odd.size(), 2);
//!     // World rank 4 is rank 2 of `evens`; world rank 1 is not in it.
//!     assert_eq!(all.translate_ranks(&[4, 1], &evens).unwrap(), [Some(2), None]);
//!     let sub = world.create(&evens).unwrap();
//!     assert_eq!(sub.is_some(), world.rank() % 2 == 0);
//!     if let Some(c) = sub {
//!         assert_eq!(c.rank(), world.rank() / 2);
//!         let mut n = [0u32];
//!         c.allreduce(&[1u32], &mut n, dos::op::Sum).unwrap();
//!         assert_eq!(n, [3]);
//!     }
//! });
//! ```

use std::rc::Rc;

use crate::comm::Class;
use crate::p2p::{Source, Tag, TagSel};
use crate::{Comm, Error, Result};

/// An ordered set of processes (`MPI_Group`); see the [module docs](self).
///
/// Processes are named by their world rank; the group's rank `i` is
/// `members()[i]`. Groups are plain values: building and combining them
/// never communicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// World rank of each member, in group order.
    members: Vec<usize>,
    /// World rank of the calling process.
    me: usize,
}

/// How two groups relate ([`Group::compare`], `MPI_Group_compare`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCompare {
    /// Same members in the same order (`MPI_IDENT`).
    Ident,
    /// Same members in another order (`MPI_SIMILAR`).
    Similar,
    /// Different members (`MPI_UNEQUAL`).
    Unequal,
}

impl Group {
    /// Number of processes.
    #[inline]
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The calling process's rank in the group, `None` if it is not a member
    /// (`MPI_UNDEFINED`).
    pub fn rank(&self) -> Option<usize> {
        self.members.iter().position(|&m| m == self.me)
    }

    /// The world rank of every member, in group order.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    fn with(&self, members: Vec<usize>) -> Group {
        Group {
            members,
            me: self.me,
        }
    }

    fn check_ranks(&self, op: &'static str, ranks: &[usize]) -> Result<()> {
        let mut seen = vec![false; self.size()];
        for &r in ranks {
            match seen.get_mut(r) {
                None => {
                    return Err(Error::InvalidRank {
                        rank: r,
                        size: self.size(),
                    })
                }
                Some(s) if *s => {
                    return Err(Error::InvalidArgument {
                        op,
                        reason: "a rank is listed twice",
                    })
                }
                Some(s) => *s = true,
            }
        }
        Ok(())
    }

    /// The group of members `ranks` (ranks of this group), in that order
    /// (`MPI_Group_incl`).
    ///
    /// # Errors
    /// [`Error::InvalidRank`] for a rank outside the group,
    /// [`Error::InvalidArgument`] for a rank listed twice.
    pub fn incl(&self, ranks: &[usize]) -> Result<Group> {
        self.check_ranks("Group::incl", ranks)?;
        Ok(self.with(ranks.iter().map(|&r| self.members[r]).collect()))
    }

    /// The group without members `ranks`, others in their order (`MPI_Group_excl`).
    ///
    /// # Errors
    /// As [`Group::incl`].
    pub fn excl(&self, ranks: &[usize]) -> Result<Group> {
        self.check_ranks("Group::excl", ranks)?;
        let mut drop = vec![false; self.size()];
        for &r in ranks {
            drop[r] = true;
        }
        Ok(self.with(
            self.members
                .iter()
                .zip(drop)
                .filter(|(_, d)| !d)
                .map(|(&m, _)| m)
                .collect(),
        ))
    }

    /// Members of `self`, then those of `other` not in `self`, each in their
    /// order (`MPI_Group_union`).
    pub fn union(&self, other: &Group) -> Group {
        let mut m = self.members.clone();
        m.extend(other.members.iter().filter(|x| !self.members.contains(x)));
        self.with(m)
    }

    /// Members of `self` that are also in `other`, in `self`'s order
    /// (`MPI_Group_intersection`).
    pub fn intersection(&self, other: &Group) -> Group {
        self.with(
            self.members
                .iter()
                .copied()
                .filter(|x| other.members.contains(x))
                .collect(),
        )
    }

    /// Members of `self` that are not in `other`, in `self`'s order
    /// (`MPI_Group_difference`).
    pub fn difference(&self, other: &Group) -> Group {
        self.with(
            self.members
                .iter()
                .copied()
                .filter(|x| !other.members.contains(x))
                .collect(),
        )
    }

    /// The rank in `other` of each of `ranks` (ranks of this group); `None`
    /// for a process not in `other` (`MPI_Group_translate_ranks`).
    ///
    /// # Errors
    /// [`Error::InvalidRank`] for a rank outside this group.
    pub fn translate_ranks(&self, ranks: &[usize], other: &Group) -> Result<Vec<Option<usize>>> {
        ranks
            .iter()
            .map(|&r| match self.members.get(r) {
                None => Err(Error::InvalidRank {
                    rank: r,
                    size: self.size(),
                }),
                Some(w) => Ok(other.members.iter().position(|m| m == w)),
            })
            .collect()
    }

    /// How this group relates to `other` (`MPI_Group_compare`).
    pub fn compare(&self, other: &Group) -> GroupCompare {
        if self.members == other.members {
            return GroupCompare::Ident;
        }
        let mut a = self.members.clone();
        let mut b = other.members.clone();
        a.sort_unstable();
        b.sort_unstable();
        if a == b {
            GroupCompare::Similar
        } else {
            GroupCompare::Unequal
        }
    }

    /// A digest of the members in order, to check that ranks agree.
    fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &m in self.members.iter().chain(std::iter::once(&usize::MAX)) {
            for b in (m as u64).to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// Tag of `create_group`'s messages on the parent's collective class, for
/// user tag `t` (below 2^28).
fn create_group_tag(t: Tag) -> Tag {
    -(0x2000_0000 + t)
}

impl Comm {
    /// The group of this communicator's processes, in rank order (`MPI_Comm_group`).
    pub fn group(&self) -> Group {
        Group {
            members: (0..self.size())
                .map(|r| self.peer(r).expect("every rank has a peer"))
                .collect(),
            me: self.peer(self.rank()).expect("own rank"),
        }
    }

    /// The world rank of each member of `group` as a rank of this
    /// communicator, or an error naming the first process that is not in it.
    fn ranks_of(&self, op: &'static str, group: &Group) -> Result<Vec<usize>> {
        let mine = self.group();
        group
            .members
            .iter()
            .map(|w| {
                mine.members
                    .iter()
                    .position(|m| m == w)
                    .ok_or(Error::InvalidArgument {
                        op,
                        reason: "the group has a process outside the communicator",
                    })
            })
            .collect()
    }

    /// A new communicator of the processes of `group`, ranked in group order
    /// (`MPI_Comm_create`). Collective over this communicator: every rank
    /// passes the same group, a subset of this communicator's; members get
    /// `Some`, the others `None`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on every rank if the group has a process
    /// outside this communicator or if ranks passed different groups.
    pub fn create(&self, group: &Group) -> Result<Option<Comm>> {
        const OP: &str = "Comm::create";
        let inside = self.ranks_of(OP, group);
        let digest = group.digest();
        // One allreduce agrees on the context and checks the arguments:
        // the largest next free context, the largest and (negated) smallest
        // digest, and whether any rank found the group outside.
        let mine = [
            self.eng.enter().next_ctx() as u64,
            digest,
            !digest,
            inside.is_err() as u64,
        ];
        let mut all = [0u64; 4];
        self.allreduce(&mine, &mut all, crate::op::Max)?;
        let new_ctx = all[0] as u32;
        self.eng.enter().bump_ctx(new_ctx + 1);
        if all[3] != 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                reason: "the group has a process outside the communicator",
            });
        }
        if all[1] != !all[2] {
            return Err(Error::InvalidArgument {
                op: OP,
                reason: "ranks passed different groups",
            });
        }
        Ok(self.comm_of(group, new_ctx))
    }

    /// This process's communicator over `group` with context `ctx`, if a member.
    fn comm_of(&self, group: &Group, ctx: u32) -> Option<Comm> {
        let rank = group.rank()?;
        let peers: Rc<[u32]> = group.members.iter().map(|&m| m as u32).collect();
        Some(Comm::new(self.eng.clone(), ctx, rank, peers))
    }

    /// A new communicator of the processes of `group`, ranked in group order
    /// (`MPI_Comm_create_group`): collective over the members of `group`
    /// only, which all pass the same group and `tag` (`0..2^28`); other
    /// ranks do not take part. Concurrent calls on one communicator with
    /// overlapping groups must use different tags.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the calling process is not in `group`
    /// or the group has processes outside this communicator,
    /// [`Error::InvalidTag`] for a tag out of range.
    ///
    /// ```
    /// dos::testing::run_threads(4, |world| {
    ///     // Only ranks 1 and 3 call it.
    ///     if world.rank() % 2 == 1 {
    ///         let g = world.group().incl(&[3, 1]).unwrap();
    ///         let c = world.create_group(&g, 7).unwrap();
    ///         assert_eq!(c.rank(), if world.rank() == 3 { 0 } else { 1 });
    ///     }
    /// });
    /// ```
    pub fn create_group(&self, group: &Group, tag: Tag) -> Result<Comm> {
        const OP: &str = "Comm::create_group";
        if !(0..0x1000_0000).contains(&tag) {
            return Err(Error::InvalidTag { tag });
        }
        let ranks = self.ranks_of(OP, group)?;
        let Some(me) = group.rank() else {
            return Err(Error::InvalidArgument {
                op: OP,
                reason: "the calling process is not in the group",
            });
        };
        // The members agree on the context: each sends its next free one to
        // the group's first member, which sends back the largest.
        let tag = create_group_tag(tag);
        let send = |v: u64, to: usize| self.send_raw(Class::Coll, &v.to_le_bytes(), to, tag);
        let recv = |from: usize| -> Result<u64> {
            let mut b = [0u8; 8];
            let st = self.recv_raw(Class::Coll, &mut b, Source::Rank(from), TagSel::Tag(tag))?;
            crate::coll::check_received(OP, st.len, 8)?;
            Ok(u64::from_le_bytes(b))
        };
        let next = self.eng.enter().next_ctx() as u64;
        let ctx = if me == 0 {
            let mut m = next;
            for &r in &ranks[1..] {
                m = m.max(recv(r)?);
            }
            for &r in &ranks[1..] {
                send(m, r)?;
            }
            m
        } else {
            send(next, ranks[0])?;
            recv(ranks[0])?
        } as u32;
        self.eng.enter().bump_ctx(ctx + 1);
        Ok(self.comm_of(group, ctx).expect("the caller is a member"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(members: &[usize], me: usize) -> Group {
        Group {
            members: members.to_vec(),
            me,
        }
    }

    #[test]
    fn set_operations_keep_mpi_order() {
        let a = g(&[5, 1, 3, 7], 3);
        let b = g(&[7, 2, 1], 3);
        assert_eq!(a.union(&b).members(), [5, 1, 3, 7, 2]);
        assert_eq!(a.intersection(&b).members(), [1, 7]);
        assert_eq!(a.difference(&b).members(), [5, 3]);
        assert_eq!(b.difference(&a).members(), [2]);
        assert_eq!(a.rank(), Some(2));
        assert_eq!(b.rank(), None);
        assert_eq!(a.incl(&[3, 0]).unwrap().members(), [7, 5]);
        assert_eq!(a.excl(&[3, 0]).unwrap().members(), [1, 3]);
        assert!(matches!(
            a.incl(&[4]),
            Err(Error::InvalidRank { rank: 4, size: 4 })
        ));
        assert!(matches!(
            a.excl(&[1, 1]),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(
            a.translate_ranks(&[0, 1, 3], &b).unwrap(),
            [None, Some(2), Some(0)]
        );
        assert!(a.translate_ranks(&[9], &b).is_err());
        assert_eq!(a.compare(&a.clone()), GroupCompare::Ident);
        assert_eq!(a.compare(&g(&[7, 5, 3, 1], 0)), GroupCompare::Similar);
        assert_eq!(a.compare(&b), GroupCompare::Unequal);
        assert_ne!(a.digest(), g(&[1, 5, 3, 7], 3).digest());
        assert_eq!(g(&[], 0).union(&g(&[], 0)).size(), 0);
    }
}
