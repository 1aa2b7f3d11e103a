//! Batched one-sided access to many pieces of one target: [`Window::get_runs`]
//! (`MPI_Get` with a noncontiguous target datatype) and
//! [`Window::accumulate_raw_runs`] (`MPI_Accumulate`'s).
//!
//! A get of a derived target type used to be one [`Window::get`], and so one
//! round trip through the target, per piece of the type: MPICH's
//! `rma/transpose7` reads a 1000 x 1000 transpose, a million pieces of 4
//! bytes. Here the pieces go as one list: to a target whose memory is mapped
//! or reached with RDMA, a copy or an RDMA READ per piece without leaving
//! the call; through active messages, GETV messages (`wire.rs`) that each
//! carry as many `(offset, length)` pairs as fit one message and whose
//! pieces fit one reply, answered by one GETRESP with the pieces' bytes in
//! order. A piece longer than a reply is cut into several.
//!
//! Accumulates of many pieces likewise: one ACCV message carries as many
//! pieces with their operands as fit (the entries of a PUTV), the target
//! combines each in turn under the window's accumulate lock; a piece it
//! refuses is counted for the next flush, as for ACC. (Puts of small pieces
//! were already gathered into PUTV messages by [`Window::put`].)

use bytemuck::Pod;

use super::raw;
use super::wire::{self, Writer};
use super::{am_chunk, gather_room, Window};
use crate::{Error, Result};
use dos_transport::shm::mem::copy as shm_copy;
use dos_transport::Rma;

/// Bytes of a GETV message besides its entries (window id and token), with
/// room for the transport's own header.
const GETV_HEAD: usize = 8 + 64;

impl<T: Pod> Window<'_, T> {
    /// Reads the pieces `runs` of `target`'s part, each `(disp, count)` in
    /// elements, into `dst` one after another (`dst.len()` is the sum of the
    /// counts); complete when it returns. The same as one [`Window::get`]
    /// per piece, in far fewer messages. Every piece is checked before
    /// anything is read: one outside the part is [`Error::RemoteAccess`].
    pub fn get_runs(&self, dst: &mut [T], target: usize, runs: &[(usize, usize)]) -> Result<()> {
        let mut spans = Vec::with_capacity(runs.len());
        let mut total = 0usize;
        for &(disp, count) in runs {
            let (off, n) = self.span(target, disp, count)?;
            if n > 0 {
                spans.push((off, n));
            }
            total = total.saturating_add(count);
        }
        if total != dst.len() {
            return Err(Error::InvalidBuffer {
                op: "get_runs",
                reason: format!("the pieces hold {total} elements, the buffer {}", dst.len()),
            });
        }
        let out: &mut [u8] = bytemuck::cast_slice_mut(dst);
        let p = &self.parts[target];
        if let Some(d) = p.data {
            let mut pos = 0;
            for &(off, n) in &spans {
                // SAFETY: inside the target's mapped part (checked by `span`);
                // `out` has room for every piece.
                unsafe { shm_copy(d.add(off), out[pos..pos + n].as_mut_ptr(), n) };
                pos += n;
            }
            return Ok(());
        }
        let eng = self.comm.eng.enter();
        if let Some((net, idx, key)) = Self::rdma_data(&eng, p) {
            let mut pos = 0;
            for &(off, n) in &spans {
                // SAFETY: `out[pos..pos + n]` is valid and exclusively ours
                // during the call, which completes the RDMA READ.
                unsafe { net.get(idx, out[pos..pos + n].as_mut_ptr(), n, key, off) }?;
                pos += n;
            }
            return Ok(());
        }
        drop(eng);
        let eng = self.comm.eng.enter();
        let per = am_chunk(&eng, p.world);
        let room = eng
            .max_am_to(p.world)
            .saturating_sub(GETV_HEAD)
            .max(wire::GETV_ENTRY);
        drop(eng);
        let mut body = Vec::new();
        let (mut start, mut pos, mut bytes) = (0usize, 0usize, 0usize);
        for &(off, n) in &spans {
            let mut done = 0;
            while done < n {
                let l = (n - done).min(per);
                if bytes + l > per || body.len() + wire::GETV_ENTRY > room {
                    self.get_batch(target, &body, &mut out[start..pos])?;
                    body.clear();
                    (start, bytes) = (pos, 0);
                }
                wire::getv_push(&mut body, (off + done) as u64, l as u32);
                (done, pos, bytes) = (done + l, pos + l, bytes + l);
            }
        }
        if !body.is_empty() {
            self.get_batch(target, &body, &mut out[start..pos])?;
        }
        Ok(())
    }

    /// One GETV of the entries `body` to `target`, its reply into `out`.
    fn get_batch(&self, target: usize, body: &[u8], out: &mut [u8]) -> Result<()> {
        let eng = self.comm.eng.enter();
        let world = self.parts[target].world;
        let tok = eng
            .rma()
            .borrow_mut()
            .expect(Some((out.as_mut_ptr(), out.len())));
        let w = Writer::<8>::default().u32(self.id).u32(tok);
        let status = self
            .send_gathered(&eng, target)
            .and_then(|()| eng.send_copy(world, wire::GETV, w.bytes(), body))
            .and_then(|()| self.await_reply(tok))
            .map(|r| r.status);
        if status? != Some(wire::OK) {
            let first = wire::getv_entries(body, 0).next().and_then(Result::ok);
            let off = first.map_or(0, |(o, _)| o as usize);
            return Err(self.refused(target, off, out.len()));
        }
        Ok(())
    }
}

impl Window<'_, u8> {
    /// Combines `src` into the pieces `runs` of `target`'s part, each
    /// `(byte offset, length)`, one after another (`src.len()` is the sum of
    /// the lengths), with operation code `op` on element code `ty`: the same
    /// as one [`Window::accumulate_raw`] per piece, in far fewer messages.
    /// Every piece is checked before anything is sent. Complete at the
    /// target after a flush.
    pub fn accumulate_raw_runs(
        &self,
        src: &[u8],
        target: usize,
        runs: &[(usize, usize)],
        op: u8,
        ty: u8,
    ) -> Result<()> {
        if !raw::supported(op, ty) || op == raw::CAS {
            return self.accumulate_raw(&[], target, 0, op, ty);
        }
        let sz = raw::type_size(ty).unwrap_or(1);
        let mut total = 0usize;
        for &(off, n) in runs {
            if n % sz != 0 {
                return Err(Error::InvalidBuffer {
                    op: "accumulate",
                    reason: format!("a piece of {n} bytes is not whole elements of {sz} bytes"),
                });
            }
            self.span(target, off, n)?;
            total = total.saturating_add(n);
        }
        if total != src.len() {
            return Err(Error::InvalidBuffer {
                op: "accumulate",
                reason: format!("the pieces hold {total} bytes, the operands {}", src.len()),
            });
        }
        if op == raw::NO_OP || src.is_empty() {
            return Ok(());
        }
        let p = &self.parts[target];
        let direct = p.data.is_some() && p.header.is_some();
        if direct || op >= raw::LAND || ty >= raw::COMPLEX_F32 {
            // Mapped memory (no messages), or the operations only the
            // fetching path knows: piece by piece.
            let mut pos = 0;
            for &(off, n) in runs {
                self.accumulate_raw(&src[pos..pos + n], target, off, op, ty)?;
                pos += n;
            }
            return Ok(());
        }
        let eng = self.comm.eng.enter();
        let per = (am_chunk(&eng, p.world) / sz).max(1) * sz;
        let room = gather_room(&eng, p.world).max(wire::PUTV_ENTRY + per);
        self.send_gathered(&eng, target)?;
        drop(eng);
        let mut body = Vec::new();
        let mut pos = 0;
        for &(off, n) in runs {
            let mut done = 0;
            while done < n {
                let l = (n - done).min(per);
                if !body.is_empty() && body.len() + wire::PUTV_ENTRY + l > room {
                    self.send_accv(target, op, ty, &body)?;
                    body.clear();
                }
                wire::putv_push(&mut body, (off + done) as u64, &src[pos..pos + l]);
                (done, pos) = (done + l, pos + l);
            }
        }
        if !body.is_empty() {
            self.send_accv(target, op, ty, &body)?;
        }
        self.note_sent(target);
        Ok(())
    }

    /// One ACCV of the entries `body` to `target`.
    fn send_accv(&self, target: usize, op: u8, ty: u8, body: &[u8]) -> Result<()> {
        let eng = self.comm.eng.enter();
        let w = Writer::<8>::default().u32(self.id).u8(op).u8(ty);
        eng.send_copy(self.parts[target].world, wire::ACCV, w.bytes(), body)
    }
}

/// The bytes a GETV from world rank `src` asks for, in order, from the
/// window memory `reach` gives (`None` outside it); `None` if any piece is
/// outside, the body is malformed, or the pieces exceed `cap` bytes.
pub(crate) fn gather_pieces<'m>(
    body: &[u8],
    src: usize,
    cap: usize,
    mut reach: impl FnMut(u64, usize) -> Option<&'m [u8]>,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for entry in wire::getv_entries(body, src) {
        let (off, len) = entry.ok()?;
        let len = len as usize;
        if out.len() + len > cap {
            return None;
        }
        out.extend_from_slice(reach(off, len)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// A window of `len` bytes on every rank, rank 1's filled with `fill`;
    /// rank 0 reads `runs` of it with `get_runs` and with one `get` per run
    /// (the serial model), under `DOS_RMA_MAP`'s choice of path.
    fn both(
        len: usize,
        fill: Vec<u8>,
        runs: Vec<(usize, usize)>,
        create: bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        crate::testing::run_threads(2, move |world| {
            let mut own = vec![0u8; len];
            if world.rank() == 1 {
                own.copy_from_slice(&fill[..len]);
            }
            let run = |win: &crate::rma::Window<'_, u8>| {
                win.fence().unwrap();
                let mut got = (Vec::new(), Vec::new());
                if world.rank() == 0 {
                    let total: usize = runs.iter().map(|r| r.1).sum();
                    let mut batched = vec![0u8; total];
                    win.get_runs(&mut batched, 1, &runs).unwrap();
                    let mut serial = Vec::new();
                    for &(d, c) in &runs {
                        let mut piece = vec![0u8; c];
                        win.get(&mut piece, 1, d).unwrap();
                        serial.extend_from_slice(&piece);
                    }
                    got = (batched, serial);
                }
                win.fence().unwrap();
                got
            };
            if create {
                let win = world.win_create(&mut own).unwrap();
                run(&win)
            } else {
                let mut win = world.win_allocate::<u8>(len).unwrap();
                win.local_mut().copy_from_slice(&own);
                run(&win)
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// `get_runs` reads what one `get` per piece reads, through messages
        /// (a created window between threads) and mapped memory (an
        /// allocated one), for pieces in any order, overlapping, empty, and
        /// longer than one message.
        #[test]
        fn batched_get_matches_one_get_per_piece(
            len in 1usize..60_000,
            fill in proptest::collection::vec(any::<u8>(), 60_000),
            picks in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..64, 0u8..20), 0..300),
            create in any::<bool>(),
        ) {
            // Short pieces anywhere, and now and then one to the end.
            let runs: Vec<(usize, usize)> = picks
                .iter()
                .map(|&(i, c, k)| {
                    let d = i.index(len);
                    (d, if k == 0 { len - d } else { c.min(len - d) })
                })
                .collect();
            for (batched, serial) in both(len, fill, runs, create) {
                prop_assert_eq!(batched, serial);
            }
        }
    }

    /// Rank 0 sums `ops` (i32 operands) into the pieces `runs` (in i32
    /// elements) of rank 1's window with one `accumulate_raw_runs`; rank
    /// 1's memory after the fence.
    fn summed(len: usize, runs: Vec<(usize, usize)>, ops: Vec<i32>, create: bool) -> Vec<i32> {
        let got = crate::testing::run_threads(2, move |world| {
            let mut own = vec![0u8; len * 4];
            let runs_b: Vec<(usize, usize)> = runs.iter().map(|&(d, c)| (d * 4, c * 4)).collect();
            let go = |win: &crate::rma::Window<'_, u8>| {
                win.fence().unwrap();
                if world.rank() == 0 {
                    let sum = <crate::op::Sum as crate::rma::AccOp>::CODE;
                    let i32c = <i32 as crate::rma::AccType>::CODE;
                    win.accumulate_raw_runs(bytemuck::cast_slice(&ops), 1, &runs_b, sum, i32c)
                        .unwrap();
                }
                win.fence().unwrap();
            };
            if create {
                let win = world.win_create(&mut own).unwrap();
                go(&win);
                drop(win);
            } else {
                let mut win = world.win_allocate::<u8>(len * 4).unwrap();
                go(&win);
                own.copy_from_slice(win.local_mut());
            }
            own.chunks_exact(4)
                .map(bytemuck::pod_read_unaligned)
                .collect::<Vec<i32>>()
        });
        got[1].clone()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// `accumulate_raw_runs` leaves what one accumulate per piece would,
        /// the serial model, for pieces in any order, overlapping and
        /// longer than one message, through messages and mapped memory.
        #[test]
        fn batched_accumulate_matches_one_per_piece(
            len in 1usize..12_000,
            picks in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..40, 0u8..15), 0..200),
            create in any::<bool>(),
        ) {
            let runs: Vec<(usize, usize)> = picks
                .iter()
                .map(|&(i, c, k)| {
                    let d = i.index(len);
                    (d, if k == 0 { len - d } else { c.min(len - d) })
                })
                .collect();
            let total: usize = runs.iter().map(|r| r.1).sum();
            let ops: Vec<i32> = (0..total).map(|k| (k as i32).wrapping_mul(2_654_435_761u32 as i32)).collect();
            let mut model = vec![0i32; len];
            let mut pos = 0;
            for &(d, c) in &runs {
                for k in 0..c {
                    model[d + k] = model[d + k].wrapping_add(ops[pos + k]);
                }
                pos += c;
            }
            prop_assert_eq!(summed(len, runs, ops, create), model);
        }
    }

    /// The target's side of GETV on a window of 100 bytes: the pieces in
    /// order, or nothing for a piece outside, a malformed list, or more
    /// bytes than a reply carries.
    #[test]
    fn the_target_answers_all_pieces_or_none() {
        use super::{gather_pieces, wire};
        let mem: Vec<u8> = (0..100).collect();
        let reach = |off: u64, len: usize| {
            let o = usize::try_from(off).ok()?;
            mem.get(o..o.checked_add(len)?)
        };
        let mut body = Vec::new();
        for (o, l) in [(10u64, 3u32), (0, 2), (98, 2), (50, 0)] {
            wire::getv_push(&mut body, o, l);
        }
        assert_eq!(
            gather_pieces(&body, 0, 64, reach),
            Some(vec![10, 11, 12, 0, 1, 98, 99])
        );
        assert_eq!(
            gather_pieces(&body, 0, 6, reach),
            None,
            "over the reply's size"
        );
        assert_eq!(
            gather_pieces(&body[..body.len() - 1], 0, 64, reach),
            None,
            "malformed"
        );
        let mut outside = body.clone();
        wire::getv_push(&mut outside, 99, 2);
        assert_eq!(
            gather_pieces(&outside, 0, 64, reach),
            None,
            "outside the window"
        );
        wire::getv_push(&mut outside, u64::MAX, u32::MAX);
        assert_eq!(gather_pieces(&outside, 0, usize::MAX, reach), None);
        assert_eq!(gather_pieces(&[], 0, 0, reach), Some(Vec::new()));
    }

    #[test]
    fn a_piece_outside_is_refused_before_anything_is_read() {
        let got = crate::testing::run_threads(2, |world| {
            let mut own = vec![7u8; 100];
            let win = world.win_create(&mut own).unwrap();
            win.fence().unwrap();
            let mut r = None;
            if world.rank() == 0 {
                let mut buf = vec![0u8; 20];
                let bad = win.get_runs(&mut buf, 1, &[(0, 10), (95, 10)]);
                let short = win.get_runs(&mut buf, 1, &[(0, 10)]);
                r = Some((
                    matches!(bad, Err(crate::Error::RemoteAccess { .. })),
                    matches!(short, Err(crate::Error::InvalidBuffer { .. })),
                    buf.iter().all(|&b| b == 0),
                ));
            }
            win.fence().unwrap();
            r
        });
        assert_eq!(got[0], Some((true, true, true)));
    }
}
