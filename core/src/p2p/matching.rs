//! Tag matching: posted receives and unexpected messages, matched in post
//! order and, per sender, in send order (MPI's non-overtaking rule).

use dos_transport::RemoteKey;

use super::wire::Envelope;
use super::{Source, Status, TagSel};
use crate::engine::{Engine, ReqId, State};
use crate::{Error, Result};

/// Most buffers kept for unexpected messages.
pub(crate) const MAX_SPARE: usize = 64;

/// Largest buffer kept for reuse.
pub(crate) const MAX_SPARE_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Posted {
    pub(crate) ctx: u32,
    pub(crate) src: i64,
    pub(crate) tag: i64,
    pub(crate) buf: *mut u8,
    pub(crate) cap: usize,
    pub(crate) req: ReqId,
}

#[derive(Debug)]
pub(crate) enum Body {
    Eager(Vec<u8>),
    Rts {
        len: u64,
        sreq: u32,
        rkey: RemoteKey,
    },
}

#[derive(Debug)]
pub(crate) struct Unexpected {
    pub(crate) env: Envelope,
    pub(crate) peer: usize,
    pub(crate) body: Body,
}

impl Unexpected {
    pub(crate) fn len(&self) -> usize {
        match &self.body {
            Body::Eager(v) => v.len(),
            Body::Rts { len, .. } => *len as usize,
        }
    }
}

impl State {
    /// Removes and returns the first posted receive that matches `env`, if
    /// it holds at least `min_cap` bytes (MPI's matching order: post order).
    pub(crate) fn take_posted(&mut self, env: &Envelope, min_cap: usize) -> Option<Posted> {
        let i = self
            .posted
            .iter()
            .position(|p| matches(p.ctx, p.src, p.tag, env))
            .filter(|&i| self.posted[i].cap >= min_cap)?;
        self.posted.remove(i)
    }
}

pub(crate) fn sel_src(s: Source) -> i64 {
    match s {
        Source::Any => -1,
        Source::Rank(r) => r as i64,
    }
}

/// Selector value of `TagSel::Any` (internal tags may be negative).
pub(crate) const ANY_TAG_SEL: i64 = i64::MIN;

pub(crate) fn sel_tag(t: TagSel) -> i64 {
    match t {
        TagSel::Any => ANY_TAG_SEL,
        TagSel::Tag(t) => t as i64,
    }
}

#[inline]
pub(crate) fn matches(ctx: u32, src: i64, tag: i64, env: &Envelope) -> bool {
    ctx == env.ctx
        && (src < 0 || src == env.src as i64)
        && (tag == ANY_TAG_SEL || tag == env.tag as i64)
}

impl Engine {
    /// Posts a receive into `cap` bytes at `buf`; returns its request.
    ///
    /// # Safety
    /// `buf` must stay valid for writes of `cap` bytes, and not be accessed
    /// otherwise, until the request completes.
    pub(crate) unsafe fn irecv(
        &self,
        ctx: u32,
        src: Source,
        tag: TagSel,
        buf: *mut u8,
        cap: usize,
    ) -> Result<ReqId> {
        let (src, tag) = (sel_src(src), sel_tag(tag));
        let mut st = self.st.borrow_mut();
        let id = Self::alloc_req(&mut st);
        let found = st
            .unexpected
            .iter()
            .position(|u| matches(ctx, src, tag, &u.env));
        match found {
            Some(i) => {
                let u = st.unexpected.remove(i).expect("index from position");
                drop(st);
                self.deliver_unexpected(u, buf, cap, id);
            }
            None => st.posted.push_back(Posted {
                ctx,
                src,
                tag,
                buf,
                cap,
                req: id,
            }),
        }
        Ok(id)
    }

    pub(crate) fn deliver_unexpected(&self, u: Unexpected, buf: *mut u8, cap: usize, id: ReqId) {
        let status = Status {
            source: u.env.src as usize,
            tag: u.env.tag,
            len: u.len(),
        };
        match u.body {
            Body::Eager(v) => {
                // SAFETY: `buf` is valid for `cap` bytes (irecv's contract).
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len().min(cap)) };
                let mut st = self.st.borrow_mut();
                Self::complete(&mut st, id, truncation(status, cap));
                if st.spare.len() < MAX_SPARE && v.capacity() <= MAX_SPARE_BYTES {
                    st.spare.push(v);
                }
            }
            Body::Rts { sreq, rkey, .. } => {
                self.rdv_start(u.peer, status, sreq, &rkey, buf, cap, id)
            }
        }
    }

    /// Looks for a matching unexpected message without receiving it.
    pub(crate) fn iprobe(&self, ctx: u32, src: Source, tag: TagSel) -> Option<Status> {
        self.progress();
        let (src, tag) = (sel_src(src), sel_tag(tag));
        self.st
            .borrow()
            .unexpected
            .iter()
            .find(|u| matches(ctx, src, tag, &u.env))
            .map(|u| Status {
                source: u.env.src as usize,
                tag: u.env.tag,
                len: u.len(),
            })
    }
}

#[inline]
pub(crate) fn truncation(status: Status, cap: usize) -> Result<Status> {
    if status.len > cap {
        Err(Error::Truncated {
            len: status.len,
            capacity: cap,
        })
    } else {
        Ok(status)
    }
}
