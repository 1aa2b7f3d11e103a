//! Batched one-sided access to many pieces of one target: [`Window::get_runs`]
//! (`MPI_Get` with a noncontiguous target datatype).
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

use bytemuck::Pod;

use super::wire::{self, Writer};
use super::{am_chunk, Window};
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
