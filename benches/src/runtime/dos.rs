//! [`Runtime`] over the dos runtime.

use super::{pieces, Runtime, WinElem};
use crate::{Error, Result};

/// A dos world.
#[derive(Debug)]
pub struct DosRuntime {
    world: ::dos::World,
}

fn err(op: &'static str) -> impl FnOnce(::dos::Error) -> Error {
    move |source| Error::Dos { op, source }
}

impl DosRuntime {
    /// Joins the job (`dos::init`): a real world under `dosrun`, a world of one otherwise.
    pub fn init() -> Result<DosRuntime> {
        Ok(DosRuntime {
            world: ::dos::init().map_err(err("init"))?,
        })
    }

    /// Wraps a world made elsewhere (for example by `dos::testing::run_threads`).
    pub fn from_world(world: ::dos::World) -> DosRuntime {
        DosRuntime { world }
    }

    /// The world (for benchmarks that need more of dos than [`Runtime`] has).
    pub fn world(&self) -> &::dos::World {
        &self.world
    }

    /// The world back (for example to end it with `dos::testing::vanish`).
    pub fn into_world(self) -> ::dos::World {
        self.world
    }
}

impl Runtime for DosRuntime {
    fn name(&self) -> &'static str {
        "dos"
    }

    fn rank(&self) -> usize {
        self.world.rank()
    }

    fn size(&self) -> usize {
        self.world.size()
    }

    #[inline]
    fn send(&self, buf: &[u8], dest: usize, tag: i32) -> Result<()> {
        self.world.send(buf, dest, tag).map_err(err("send"))
    }

    #[inline]
    fn recv(&self, buf: &mut [u8], src: usize, tag: i32) -> Result<()> {
        self.world
            .recv(buf, src, tag)
            .map(drop)
            .map_err(err("recv"))
    }

    fn send_window(&self, buf: &[u8], n: usize, dest: usize, tag: i32) -> Result<()> {
        let w = &self.world;
        ::dos::scope(move |s| -> ::dos::Result<()> {
            let mut reqs = Vec::with_capacity(n);
            for _ in 0..n {
                reqs.push(w.isend(s, buf, dest, tag)?);
            }
            ::dos::Request::wait_all(reqs).map(drop)
        })
        .map_err(err("isend"))
    }

    fn recv_window(
        &self,
        bufs: &mut [u8],
        len: usize,
        n: usize,
        src: usize,
        tag: i32,
    ) -> Result<()> {
        let w = &self.world;
        ::dos::scope(move |s| -> ::dos::Result<()> {
            let mut reqs = Vec::with_capacity(n);
            for piece in pieces(bufs, len, n) {
                reqs.push(w.irecv(s, piece, src, tag)?);
            }
            ::dos::Request::wait_all(reqs).map(drop)
        })
        .map_err(err("irecv"))
    }

    fn exchange_window(
        &self,
        sbuf: &[u8],
        rbufs: &mut [u8],
        n: usize,
        peer: usize,
        tag: i32,
    ) -> Result<()> {
        let w = &self.world;
        let len = sbuf.len();
        ::dos::scope(move |s| -> ::dos::Result<()> {
            let mut reqs = Vec::with_capacity(2 * n);
            for piece in pieces(rbufs, len, n) {
                reqs.push(w.irecv(s, piece, peer, tag)?);
            }
            for _ in 0..n {
                reqs.push(w.isend(s, sbuf, peer, tag)?);
            }
            ::dos::Request::wait_all(reqs).map(drop)
        })
        .map_err(err("isend/irecv"))
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier().map_err(err("barrier"))
    }

    fn bcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.world.bcast(buf, root).map_err(err("bcast"))
    }

    fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.world
            .allreduce(send, recv, ::dos::op::Sum)
            .map_err(err("allreduce"))
    }

    fn alltoall(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.world.alltoall(send, recv).map_err(err("alltoall"))
    }

    type Win<T: WinElem> = ::dos::Window<'static, T>;

    fn win_allocate<T: WinElem>(&self, count: usize) -> Result<Self::Win<T>> {
        self.world.win_allocate(count).map_err(err("win_allocate"))
    }

    fn win_free<T: WinElem>(&self, win: Self::Win<T>) -> Result<()> {
        win.free().map_err(err("window free"))
    }

    /// dos has no lock-all: a shared lock of every target, as MPI's is.
    fn epoch_begin<T: WinElem>(&self, win: &Self::Win<T>) -> Result<()> {
        (0..self.size())
            .try_for_each(|t| win.lock(t, ::dos::LockKind::Shared))
            .map_err(err("window lock"))
    }

    fn epoch_end<T: WinElem>(&self, win: &Self::Win<T>) -> Result<()> {
        (0..self.size())
            .try_for_each(|t| win.unlock(t))
            .map_err(err("window unlock"))
    }

    #[inline]
    unsafe fn put<T: WinElem>(
        &self,
        win: &Self::Win<T>,
        src: &[T],
        target: usize,
        disp: usize,
    ) -> Result<()> {
        win.put(src, target, disp).map_err(err("put"))
    }

    #[inline]
    fn get<T: WinElem>(
        &self,
        win: &Self::Win<T>,
        dst: &mut [T],
        target: usize,
        disp: usize,
    ) -> Result<()> {
        win.get(dst, target, disp).map_err(err("get"))
    }

    #[inline]
    fn flush<T: WinElem>(&self, win: &Self::Win<T>, target: usize) -> Result<()> {
        win.flush(target).map_err(err("flush"))
    }

    #[inline]
    fn fetch_add(
        &self,
        win: &Self::Win<u64>,
        target: usize,
        disp: usize,
        value: u64,
    ) -> Result<u64> {
        win.fetch_add(target, disp, value).map_err(err("fetch_add"))
    }

    fn win_read_local<T: WinElem>(
        &self,
        win: &Self::Win<T>,
        dst: &mut [T],
        disp: usize,
    ) -> Result<()> {
        win.read_local(dst, disp).map_err(err("window read"))
    }

    fn win_write_local<T: WinElem>(
        &self,
        win: &Self::Win<T>,
        src: &[T],
        disp: usize,
    ) -> Result<()> {
        win.write_local(src, disp).map_err(err("window write"))
    }

    fn abort(&self, code: i32, msg: &str) -> ! {
        self.world.abort(code, msg)
    }

    fn finalize(self) -> Result<()> {
        self.world.finalize().map_err(err("finalize"))
    }
}

fn io_err(op: &'static str) -> impl FnOnce(::dos::io::Error) -> Error {
    move |e| Error::Io {
        op,
        what: format!("{e}"),
    }
}

/// `dos::io` on the dosfs of the environment (`DOSFS`).
impl super::IoRuntime for DosRuntime {
    type File = ::dos::io::File;
    const DEFAULT_DIR: &'static str = "/";

    fn file_open(&self, path: &str, per_proc: bool, write: bool) -> Result<::dos::io::File> {
        use ::dos::io::{File, Mode};
        let mode = if write {
            Mode::READ_WRITE.create()
        } else {
            Mode::READ_ONLY
        };
        if per_proc {
            let color = u32::try_from(self.world.rank()).unwrap_or(u32::MAX);
            let me = self
                .world
                .split(Some(color), 0)
                .map_err(err("split"))?
                .ok_or(Error::Io {
                    op: "split",
                    what: "no communicator of one rank".into(),
                })?;
            File::open(&me, path, mode).map_err(io_err("File::open"))
        } else {
            File::open(&self.world, path, mode).map_err(io_err("File::open"))
        }
    }

    fn file_write_at(
        &self,
        file: &::dos::io::File,
        offset: u64,
        data: &[u8],
        collective: bool,
    ) -> Result<()> {
        if collective {
            file.write_at_all(offset, data)
                .map_err(io_err("File::write_at_all"))
        } else {
            file.write_at(offset, data)
                .map_err(io_err("File::write_at"))
        }
    }

    fn file_read_at(
        &self,
        file: &::dos::io::File,
        offset: u64,
        buf: &mut [u8],
        collective: bool,
    ) -> Result<usize> {
        if collective {
            file.read_at_all(offset, buf)
                .map_err(io_err("File::read_at_all"))
        } else {
            file.read_at(offset, buf).map_err(io_err("File::read_at"))
        }
    }

    fn file_sync(&self, file: &::dos::io::File) -> Result<()> {
        file.sync().map_err(io_err("File::sync"))
    }

    fn file_close(&self, file: ::dos::io::File) -> Result<()> {
        file.close().map_err(io_err("File::close"))
    }

    fn file_delete(&self, path: &str) -> Result<()> {
        let fs = ::dos::io::Fs::from_env().map_err(io_err("Fs::from_env"))?;
        ::dos::io::File::delete(&fs, path).map_err(io_err("File::delete"))
    }
}
