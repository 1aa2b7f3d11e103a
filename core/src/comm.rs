//! Communicators and point-to-point communication.

use std::rc::Rc;

use bytemuck::Pod;

use crate::p2p::wire::Envelope;
use crate::p2p::{Shared, Source, Status, Tag, TagSel};
use crate::request::{Request, Scope};
use crate::{Error, Result};

/// A group of ranks with a private communication context (`MPI_Comm`).
///
/// Cheap to clone (clones share the context). Messages on one communicator never
/// match receives on another. Not `Send`: a communicator is driven by the
/// thread that called [`crate::init`].
#[derive(Clone)]
pub struct Comm {
    pub(crate) eng: Shared,
    /// Context id: point-to-point traffic uses `2 * ctx`, collectives `2 * ctx + 1`.
    ctx: u32,
    rank: usize,
    /// Transport peer index of each rank of this communicator.
    peers: Rc<[u32]>,
    /// Shared-memory index of each rank, when every rank is on this node and
    /// the context has node-collective slots (see `coll::node`).
    pub(crate) node: Option<Rc<[u32]>>,
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comm")
            .field("ctx", &self.ctx)
            .field("rank", &self.rank)
            .field("size", &self.size())
            .finish()
    }
}

/// Which traffic class of a communicator a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// User point-to-point.
    P2p,
    /// Collective operations (and communicator management).
    Coll,
}

/// Tag used by `split`/`dup` on the collective context.
const TAG_SPLIT: Tag = -0x5000;

/// How `split` encodes the color `None` (`MPI_UNDEFINED`) on the wire: above
/// every `u32` color.
const UNDEFINED_COLOR: u64 = u64::MAX;

impl Comm {
    pub(crate) fn new(eng: Shared, ctx: u32, rank: usize, peers: Rc<[u32]>) -> Comm {
        let node = crate::coll::node::local_indices(&eng.enter(), ctx, &peers);
        Comm {
            eng,
            ctx,
            rank,
            peers,
            node,
        }
    }

    /// The context id (point-to-point traffic uses `2 * ctx`, collectives `2 * ctx + 1`).
    #[inline]
    pub(crate) fn ctx(&self) -> u32 {
        self.ctx
    }

    /// This process's rank in the communicator.
    #[inline]
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    #[inline]
    pub fn size(&self) -> usize {
        self.peers.len()
    }

    #[inline]
    fn ctx_of(&self, class: Class) -> u32 {
        match class {
            Class::P2p => self.ctx * 2,
            Class::Coll => self.ctx * 2 + 1,
        }
    }

    #[inline]
    pub(crate) fn peer(&self, rank: usize) -> Result<usize> {
        match self.peers.get(rank) {
            Some(&p) => Ok(p as usize),
            None => Err(bad_rank(rank, self.size())),
        }
    }

    #[inline]
    fn check_src(&self, src: Source) -> Result<()> {
        match src {
            Source::Rank(r) if r >= self.size() => Err(bad_rank(r, self.size())),
            _ => Ok(()),
        }
    }

    /// Checks the source and tag selectors of a receive or probe.
    #[inline]
    pub(crate) fn check_match(&self, src: Source, tag: TagSel) -> Result<()> {
        self.check_src(src)?;
        check_tag_sel(tag)
    }

    // ----- raw byte operations shared by p2p and collectives -----

    /// Blocking send of bytes in traffic class `class`.
    #[inline]
    pub(crate) fn send_raw(&self, class: Class, buf: &[u8], dest: usize, tag: Tag) -> Result<()> {
        let peer = self.peer(dest)?;
        let env = Envelope {
            ctx: self.ctx_of(class),
            src: self.rank as u32,
            tag,
        };
        // SAFETY: `buf` is borrowed for this whole call, and we wait for the
        // request before returning.
        match unsafe { self.eng.enter().isend(peer, env, buf.as_ptr(), buf.len())? } {
            None => Ok(()),
            Some(id) => self.eng.enter().wait(id).map(|_| ()),
        }
    }

    /// Blocking receive of bytes in traffic class `class`.
    #[inline]
    pub(crate) fn recv_raw(
        &self,
        class: Class,
        buf: &mut [u8],
        src: Source,
        tag: TagSel,
    ) -> Result<Status> {
        self.check_src(src)?;
        // SAFETY: `buf` is exclusively borrowed for this whole call, and we wait
        // for the request before returning.
        let id = unsafe {
            self.eng
                .enter()
                .irecv(self.ctx_of(class), src, tag, buf.as_mut_ptr(), buf.len())?
        };
        self.eng.enter().wait(id)
    }

    /// Nonblocking send of bytes in traffic class `class`.
    pub(crate) fn isend_raw<'s>(
        &self,
        class: Class,
        s: &'s Scope<'s, '_>,
        buf: &'s [u8],
        dest: usize,
        tag: Tag,
    ) -> Result<Request<'s>> {
        let peer = self.peer(dest)?;
        let env = Envelope {
            ctx: self.ctx_of(class),
            src: self.rank as u32,
            tag,
        };
        // SAFETY: `buf` is borrowed for `'s`, and the scope completes the request
        // before `'s` ends.
        match unsafe { self.eng.enter().isend(peer, env, buf.as_ptr(), buf.len())? } {
            None => Ok(s.completed()),
            Some(id) => Ok(s.register(&self.eng, id)),
        }
    }

    /// Nonblocking receive of bytes in traffic class `class`.
    pub(crate) fn irecv_raw<'s>(
        &self,
        class: Class,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [u8],
        src: Source,
        tag: TagSel,
    ) -> Result<Request<'s>> {
        self.check_src(src)?;
        // SAFETY: `buf` is exclusively borrowed for `'s`, and the scope completes
        // the request before `'s` ends.
        let id = unsafe {
            self.eng
                .enter()
                .irecv(self.ctx_of(class), src, tag, buf.as_mut_ptr(), buf.len())?
        };
        Ok(s.register(&self.eng, id))
    }

    /// Send and receive at once (deadlock-free exchange) in traffic class `class`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sendrecv_raw(
        &self,
        class: Class,
        sbuf: &[u8],
        dest: usize,
        stag: Tag,
        rbuf: &mut [u8],
        src: Source,
        rtag: TagSel,
    ) -> Result<Status> {
        self.check_src(src)?;
        let peer = self.peer(dest)?;
        // SAFETY: both buffers are borrowed for this whole call and both requests
        // are waited for before returning (also on the error path).
        unsafe {
            let rid = self.eng.enter().irecv(
                self.ctx_of(class),
                src,
                rtag,
                rbuf.as_mut_ptr(),
                rbuf.len(),
            )?;
            let env = Envelope {
                ctx: self.ctx_of(class),
                src: self.rank as u32,
                tag: stag,
            };
            let sent = match self.eng.enter().isend(peer, env, sbuf.as_ptr(), sbuf.len()) {
                Ok(None) => Ok(()),
                Ok(Some(sid)) => self.eng.enter().wait(sid).map(|_| ()),
                Err(e) => Err(e),
            };
            let got = self.eng.enter().wait(rid);
            sent?;
            got
        }
    }

    // ----- typed point-to-point -----

    /// Sends `buf` to `dest` with `tag` (`MPI_Send`). Returns when `buf` may be reused.
    ///
    /// ```
    /// let world = dos::init().unwrap();
    /// world.send(&[1.5f64, 2.5], world.rank(), 7).unwrap();
    /// let mut x = [0f64; 2];
    /// world.recv(&mut x, world.rank(), 7).unwrap();
    /// assert_eq!(x, [1.5, 2.5]);
    /// ```
    #[inline]
    pub fn send<T: Pod>(&self, buf: &[T], dest: usize, tag: Tag) -> Result<()> {
        check_tag(tag)?;
        self.send_raw(Class::P2p, bytemuck::cast_slice(buf), dest, tag)
    }

    /// Receives into `buf` from `src` (a rank or [`crate::ANY_SOURCE`]) with
    /// `tag` (a tag or [`crate::ANY_TAG`]) (`MPI_Recv`).
    ///
    /// A message longer than `buf` gives [`Error::Truncated`].
    #[inline]
    pub fn recv<T: Pod>(
        &self,
        buf: &mut [T],
        src: impl Into<Source>,
        tag: impl Into<TagSel>,
    ) -> Result<Status> {
        let tag = tag.into();
        check_tag_sel(tag)?;
        let st = self.recv_raw(Class::P2p, bytemuck::cast_slice_mut(buf), src.into(), tag)?;
        check_elems::<T>(st)
    }

    /// Receives a message of unknown length from `src` with `tag` into a new vector.
    pub fn recv_vec<T: Pod>(
        &self,
        src: impl Into<Source>,
        tag: impl Into<TagSel>,
    ) -> Result<(Vec<T>, Status)> {
        let tag = tag.into();
        let st = self.probe(src, tag)?;
        let mut v = vec![T::zeroed(); st.len.div_ceil(std::mem::size_of::<T>().max(1))];
        let got = self.recv(&mut v, st.source, st.tag)?;
        Ok((v, got))
    }

    /// Starts sending `buf` (`MPI_Isend`); `buf` stays borrowed until the scope ends.
    pub fn isend<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s [T],
        dest: usize,
        tag: Tag,
    ) -> Result<Request<'s>> {
        check_tag(tag)?;
        self.isend_raw(Class::P2p, s, bytemuck::cast_slice(buf), dest, tag)
    }

    /// Starts receiving into `buf` (`MPI_Irecv`); `buf` stays borrowed until the scope ends.
    pub fn irecv<'s, T: Pod>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        src: impl Into<Source>,
        tag: impl Into<TagSel>,
    ) -> Result<Request<'s>> {
        let tag = tag.into();
        check_tag_sel(tag)?;
        self.irecv_raw(
            Class::P2p,
            s,
            bytemuck::cast_slice_mut(buf),
            src.into(),
            tag,
        )
    }

    /// Sends `sbuf` to `dest` and receives into `rbuf` from `src`, without
    /// deadlock whatever the order of the peers' calls (`MPI_Sendrecv`).
    pub fn sendrecv<S: Pod, R: Pod>(
        &self,
        sbuf: &[S],
        dest: usize,
        stag: Tag,
        rbuf: &mut [R],
        src: impl Into<Source>,
        rtag: impl Into<TagSel>,
    ) -> Result<Status> {
        check_tag(stag)?;
        let rtag = rtag.into();
        check_tag_sel(rtag)?;
        let st = self.sendrecv_raw(
            Class::P2p,
            bytemuck::cast_slice(sbuf),
            dest,
            stag,
            bytemuck::cast_slice_mut(rbuf),
            src.into(),
            rtag,
        )?;
        check_elems::<R>(st)
    }

    /// Waits until a matching message can be received and describes it (`MPI_Probe`).
    pub fn probe(&self, src: impl Into<Source>, tag: impl Into<TagSel>) -> Result<Status> {
        let (src, tag) = (src.into(), tag.into());
        self.check_match(src, tag)?;
        let ctx = self.ctx_of(Class::P2p);
        let mut found = None;
        self.eng.enter().wait_until(|e| {
            found = e.iprobe(ctx, src, tag);
            found.is_some()
        })?;
        Ok(found.expect("wait_until returned"))
    }

    /// Describes a matching message if one has arrived (`MPI_Iprobe`).
    pub fn iprobe(&self, src: impl Into<Source>, tag: impl Into<TagSel>) -> Result<Option<Status>> {
        let (src, tag) = (src.into(), tag.into());
        self.check_match(src, tag)?;
        Ok(self.eng.enter().iprobe(self.ctx_of(Class::P2p), src, tag))
    }

    // ----- communicator management -----

    /// A communicator with the same ranks and a new context (`MPI_Comm_dup`). Collective.
    pub fn dup(&self) -> Result<Comm> {
        Ok(self
            .split(Some(0), self.rank as i32)?
            .expect("every rank has a color"))
    }

    /// Splits into one communicator per `color`, ranked by `key` then by the
    /// old rank (`MPI_Comm_split`). Collective. A rank passing `None`
    /// (`MPI_UNDEFINED`) gets `None`.
    ///
    /// ```
    /// let world = dos::init().unwrap();
    /// let half = world.split(Some((world.rank() % 2) as u32), 0).unwrap().unwrap();
    /// assert_eq!(half.size(), (world.size() + 1 - world.rank() % 2) / 2);
    /// ```
    pub fn split(&self, color: Option<u32>, key: i32) -> Result<Option<Comm>> {
        let n = self.size();
        // Every rank learns every rank's (color, key, next free context id).
        // `None` is encoded outside the range of `u32` colors, so that no
        // valid color (`u32::MAX` included) is taken for it.
        let mine = [
            color.map_or(UNDEFINED_COLOR, u64::from),
            key as u32 as u64,
            self.eng.enter().next_ctx() as u64,
        ];
        let mut all = vec![[0u64; 3]; n];
        crate::scope(|s| -> Result<()> {
            let mut reqs = Vec::with_capacity(2 * n);
            for (r, slot) in all.iter_mut().enumerate() {
                reqs.push(self.irecv_raw(
                    Class::Coll,
                    s,
                    bytemuck::cast_slice_mut(slot),
                    Source::Rank(r),
                    TagSel::Tag(TAG_SPLIT),
                )?);
            }
            for r in 0..n {
                reqs.push(self.isend_raw(
                    Class::Coll,
                    s,
                    bytemuck::cast_slice(&mine),
                    r,
                    TAG_SPLIT,
                )?);
            }
            Request::wait_all(reqs).map(|_| ())
        })?;
        let new_ctx = all.iter().map(|e| e[2] as u32).max().expect("n >= 1");
        self.eng.enter().bump_ctx(new_ctx + 1);
        let Some(color) = color else {
            return Ok(None);
        };
        let mut members: Vec<(i32, usize)> = all
            .iter()
            .enumerate()
            .filter(|(_, e)| e[0] == color as u64)
            .map(|(r, e)| (e[1] as u32 as i32, r))
            .collect();
        members.sort();
        let rank = members
            .iter()
            .position(|&(_, r)| r == self.rank)
            .expect("own color is among the members");
        let peers: Rc<[u32]> = members.iter().map(|&(_, r)| self.peers[r]).collect();
        Ok(Some(Comm::new(self.eng.clone(), new_ctx, rank, peers)))
    }
}

/// Building blocks for communicators made above dos, as the MPI library's
/// intercommunicators: the caller agrees on a context id among every process
/// that will use it (the largest [`Comm::free_context`] of them), reserves
/// it everywhere, and builds communicators over lists of world ranks.
impl Comm {
    /// The lowest context id not yet used on this process.
    pub fn free_context(&self) -> u32 {
        self.eng.enter().next_ctx()
    }

    /// Marks every context id below `upto` as used on this process.
    pub fn reserve_contexts(&self, upto: u32) {
        self.eng.enter().bump_ctx(upto)
    }

    /// A communicator on context `ctx` whose rank `i` is world rank
    /// `members[i]`; this process must be among them. Every member must
    /// build it with the same `ctx` and `members`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if this process is not a member.
    pub fn with_members(&self, ctx: u32, members: &[usize]) -> Result<Comm> {
        let me = self.peer(self.rank)?;
        let rank = members
            .iter()
            .position(|&m| m == me)
            .ok_or(Error::InvalidArgument {
                op: "with_members",
                reason: "the calling process is not a member",
            })?;
        let peers: Rc<[u32]> = members.iter().map(|&m| m as u32).collect();
        Ok(Comm::new(self.eng.clone(), ctx, rank, peers))
    }

    /// One side of an intercommunicator on context `ctx`: point-to-point
    /// rank `d` is world rank `remote[d]`, and messages sent carry `rank`
    /// (this process's rank in its own group) as their source, so that a
    /// receive names the sender by its rank in the remote group. Only the
    /// point-to-point operations are meaningful on it (no collectives, no
    /// `group`).
    pub fn remote_view(&self, ctx: u32, rank: usize, remote: &[usize]) -> Comm {
        Comm {
            eng: self.eng.clone(),
            ctx,
            rank,
            peers: remote.iter().map(|&m| m as u32).collect(),
            node: None,
        }
    }
}

#[cold]
fn bad_rank(rank: usize, size: usize) -> Error {
    Error::InvalidRank { rank, size }
}

#[inline]
pub(crate) fn check_tag(tag: Tag) -> Result<()> {
    if tag < 0 {
        return Err(Error::InvalidTag { tag });
    }
    Ok(())
}

#[inline]
fn check_tag_sel(tag: TagSel) -> Result<()> {
    match tag {
        TagSel::Tag(t) => check_tag(t),
        TagSel::Any => Ok(()),
    }
}

/// `st`, if its length is a whole number of `T`s.
#[inline]
pub(crate) fn check_elems<T>(st: Status) -> Result<Status> {
    let sz = std::mem::size_of::<T>();
    if sz > 1 && st.len % sz != 0 {
        return Err(Error::ElementMismatch {
            len: st.len,
            elem: sz,
        });
    }
    Ok(st)
}
