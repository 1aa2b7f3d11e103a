//! The same-node data path: a Unix socket to the server and a shared
//! region of buffer *slots* that data requests name instead of carrying
//! bytes.
//!
//! ## How a client finds it
//! Every [`crate::server::Server`] also listens on an *abstract* Unix socket
//! named [`socket_name`]`(fsid, index)`. Abstract sockets belong to a
//! network namespace, so a client on the server's node (same namespace)
//! can connect to it and a client anywhere else (another machine, or a
//! namespace host of the test cluster on the same kernel) cannot, gets
//! `ECONNREFUSED` at once and uses the server's TCP address. Locality is
//! thus detected by the kernel, for free and never wrongly: nothing is
//! recorded in the address file, and a stale name cannot exist (the name
//! goes away with the server's socket).
//!
//! ## The slots
//! After the usual authenticated handshake on the Unix socket the client
//! sends [`crate::wire::Request::ShmSetup`] (how many slots, of what size);
//! the server clamps it ([`MAX_SLOTS`], [`MAX_SLOT_SIZE`], [`MAX_REGION`]),
//! creates a memfd of that many page-aligned slots, seals its size
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, so a client cannot shrink
//! it under the server's mapping and make it fault) and answers
//! [`crate::wire::Reply::Slots`] with the memfd attached (`SCM_RIGHTS`).
//! A server that cannot make one answers zero slots and the connection
//! carries data inline (still a Unix socket: no TCP stack).
//!
//! Then [`crate::wire::Request::WriteSlot`] and
//! [`crate::wire::Request::ReadSlot`] name a slot and a length instead of
//! carrying the bytes: a write is one copy from the caller's buffer into the
//! slot, a read one copy out of it. A slot belongs to its request from the
//! send until the reply; the number of slots bounds the requests in flight.
//! The server checks every slot index and length it is sent ([`SlotTable`]):
//! one out of range, too long, or already owned by a request in flight is
//! a [`crate::Error::Protocol`] reply, never a panic or an access outside
//! the region. The server copies a written slot into its own buffer before
//! it checksums and writes it, so a client changing the slot meanwhile can
//! only spoil its own request, never make a checksum disagree with the
//! bytes on disk.
//!
//! When the connection ends (the client exits or dies holding slots) the
//! server drops its mapping once the requests in flight are done; the
//! memory goes with the last mapping. A restarted server is a new socket
//! and a new region: the client's next request after the failure connects
//! again and gets fresh slots.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Mutex;

use dos_transport::shm::mem::SharedMapping;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Error, Result};
use crate::target::FsId;

/// Most slots a connection gets.
pub const MAX_SLOTS: u32 = 64;
/// Largest slot (the largest stripe).
pub const MAX_SLOT_SIZE: u32 = crate::layout::MAX_STRIPE_SIZE;
/// Largest region per connection.
pub const MAX_REGION: u64 = 256 << 20;
/// Slot sizes are multiples of this (pages; also `O_DIRECT`'s alignment).
pub const SLOT_ALIGN: u32 = 4096;

/// The abstract Unix socket name of server `index` of file system `fsid`.
pub fn socket_name(fsid: &FsId, index: u32) -> String {
    format!("dosfs-{fsid}-{index}")
}

/// The socket address of [`socket_name`].
pub fn socket_addr(fsid: &FsId, index: u32) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(socket_name(fsid, index).as_bytes())
}

/// What the server grants for a request of `slots` slots of `size` bytes:
/// (slots, slot size), both clamped, the size rounded up to [`SLOT_ALIGN`].
/// (0, 0) when nothing was asked for.
pub fn grant(slots: u32, size: u32) -> (u32, u32) {
    if slots == 0 || size == 0 {
        return (0, 0);
    }
    let size = size
        .min(MAX_SLOT_SIZE)
        .div_ceil(SLOT_ALIGN)
        .saturating_mul(SLOT_ALIGN);
    let by_region = (MAX_REGION / u64::from(size)).max(1) as u32;
    (slots.min(MAX_SLOTS).min(by_region), size)
}

fn sys(op: &'static str, e: rustix::io::Errno) -> Error {
    Error::io(op, "slot region", e.into())
}

/// A shared region of `count` slots of `size` bytes each, mapped here.
#[derive(Debug)]
pub struct Region {
    map: SharedMapping,
    count: u32,
    size: u32,
}

impl Region {
    /// A new sealed memfd region and its descriptor (to send to the peer).
    pub fn create(count: u32, size: u32) -> Result<(Region, OwnedFd)> {
        if count == 0 || size == 0 || size % SLOT_ALIGN != 0 {
            return Err(Error::protocol("an empty or unaligned slot region"));
        }
        let len = u64::from(count) * u64::from(size);
        let fd = rustix::fs::memfd_create(
            c"dosfs-slots",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| sys("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| sys("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| sys("seal", e))?;
        let map = SharedMapping::new(fd.as_fd(), len as usize)
            .map_err(|e| Error::io("map", "slot region", std::io::Error::other(e.to_string())))?;
        Ok((Region { map, count, size }, fd))
    }

    /// Maps a region received from a server, checking that the memfd is
    /// as large as announced and cannot shrink.
    pub fn attach(fd: OwnedFd, count: u32, size: u32) -> Result<Region> {
        let (c, s) = grant(count, size);
        if (c, s) != (count, size) || count == 0 {
            return Err(Error::protocol("slot region out of bounds"));
        }
        let len = u64::from(count) * u64::from(size);
        let st = rustix::fs::fstat(&fd).map_err(|e| sys("fstat", e))?;
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|e| sys("get seals", e))?;
        if u64::try_from(st.st_size).ok() != Some(len) || !seals.contains(SealFlags::SHRINK) {
            return Err(Error::protocol(
                "slot region of the wrong size or not sealed",
            ));
        }
        let map = SharedMapping::new(fd.as_fd(), len as usize)
            .map_err(|e| Error::io("map", "slot region", std::io::Error::other(e.to_string())))?;
        Ok(Region { map, count, size })
    }

    /// Number of slots.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> u32 {
        self.size
    }

    /// Where the region starts in this process (to register it for RDMA,
    /// [`crate::rdma`]).
    pub fn base(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.count as usize * self.size as usize
    }

    /// Whether the region has no bytes (never: a region has a slot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self, slot: u32, len: usize) -> Result<*mut u8> {
        if slot >= self.count {
            return Err(Error::protocol(format!(
                "slot {slot} out of range ({} slots)",
                self.count
            )));
        }
        if len > self.size as usize {
            return Err(Error::protocol(format!(
                "{len} bytes do not fit a slot of {}",
                self.size
            )));
        }
        // SAFETY: slot < count, so the offset is inside the mapping.
        Ok(unsafe { self.map.as_ptr().add(slot as usize * self.size as usize) })
    }

    /// Slot `slot` whole, as a byte slice a server reads into (no copy).
    ///
    /// # Safety
    ///
    /// The caller owns the slot (taken from its [`SlotTable`] for a request
    /// and not given back) and makes no other reference to it while the
    /// slice lives. The peer may write the slot only by breaking the
    /// protocol (it gave it to this request until the reply); the bytes it
    /// then gets back are wrong for it alone, the server only reads and
    /// writes plain bytes there.
    #[allow(clippy::mut_from_ref)] // the slot table hands each slot out once
    pub unsafe fn slot_mut(&self, slot: u32) -> Result<&mut [u8]> {
        let p = self.check(slot, self.size as usize)?;
        // SAFETY: `p..p + size` is slot `slot`, inside the mapping (checked),
        // which lives as long as `self`; exclusive by the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, self.size as usize) })
    }

    /// Copies `data` into slot `slot`.
    pub fn put(&self, slot: u32, data: &[u8]) -> Result<()> {
        let p = self.check(slot, data.len())?;
        // SAFETY: `p..p + data.len()` lies inside the mapping (checked), and
        // a private buffer never overlaps the shared mapping.
        unsafe { dos_transport::shm::mem::copy(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// The first `len` bytes of slot `slot`, copied into a new buffer.
    pub fn get_vec(&self, slot: u32, len: usize) -> Result<Vec<u8>> {
        let p = self.check(slot, len)?;
        let mut v = Vec::with_capacity(len);
        // SAFETY: the slot holds `len` bytes (checked) and `v` has room for
        // them; after the copy they are initialized, so the length may be set.
        unsafe {
            dos_transport::shm::mem::copy(p, v.as_mut_ptr(), len);
            v.set_len(len);
        }
        Ok(v)
    }

    /// Copies the first `out.len()` bytes of slot `slot` into `out`.
    pub fn get(&self, slot: u32, out: &mut [u8]) -> Result<()> {
        let p = self.check(slot, out.len())?;
        // SAFETY: as in `put`, the other way.
        unsafe { dos_transport::shm::mem::copy(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }
}

/// A server's slots of one connection: the region and which slots belong
/// to a request in flight.
#[derive(Debug)]
pub struct SlotTable {
    region: Region,
    busy: Mutex<Vec<bool>>,
}

impl SlotTable {
    /// The table of `region`, every slot free.
    pub fn new(region: Region) -> SlotTable {
        let n = region.count() as usize;
        SlotTable {
            region,
            busy: Mutex::new(vec![false; n]),
        }
    }

    /// The region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Gives slot `slot` to a request of `len` bytes: an error if the slot
    /// does not exist, `len` does not fit, or the slot is owned already.
    pub fn take(&self, slot: u32, len: u32) -> Result<()> {
        self.region.check(slot, len as usize)?;
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut b[slot as usize];
        if *s {
            return Err(Error::protocol(format!(
                "slot {slot} is owned by a request in flight"
            )));
        }
        *s = true;
        Ok(())
    }

    /// Frees slot `slot` (before its request's reply is sent).
    pub fn give_back(&self, slot: u32) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = b.get_mut(slot as usize) {
            *s = false;
        }
    }
}

/// A connected stream to or from a server: TCP, or a Unix socket on the
/// same node.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A Unix socket (the same node).
    Unix(UnixStream),
}

impl Stream {
    /// Another handle of the same socket.
    pub fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Shuts both directions down (errors ignored: the socket may be gone).
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// Sets the read timeout.
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// Sets the write timeout.
    pub fn set_write_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    /// The peer, for messages.
    pub fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            Stream::Unix(_) => "a local client".into(),
        }
    }

    /// Whether this is a Unix socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends `frame` with the descriptor `fd` attached.
pub fn send_with_fd(sock: &UnixStream, frame: &[u8], fd: Option<&OwnedFd>) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd.as_fd()];
        if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(Error::protocol("no room for a descriptor"));
        }
    }
    let n = rustix::net::sendmsg(sock, &[IoSlice::new(frame)], &mut cmsg, SendFlags::NOSIGNAL)
        .map_err(|e| Error::io("send", "slot region", e.into()))?;
    if n != frame.len() {
        // The rest without the descriptor (it went with the first byte).
        use std::io::Write;
        (&*sock)
            .write_all(&frame[n..])
            .map_err(|e| Error::io("send", "slot region", e))?;
    }
    Ok(())
}

/// Fills `buf` from `sock`, returning a descriptor that came with the bytes.
pub fn recv_with_fd(sock: &UnixStream, buf: &mut [u8]) -> Result<Option<OwnedFd>> {
    let mut got = 0;
    let mut fd = None;
    while got < buf.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let r = rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut buf[got..])],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        );
        let n = match r {
            Ok(m) => m.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::io("receive", "slot region", e.into())),
        };
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                for f in fds {
                    // More than one descriptor: keep the first, close the rest.
                    fd.get_or_insert(f);
                }
            }
        }
        if n == 0 {
            return Err(Error::io(
                "receive",
                "slot region",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        got += n;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_clamps_and_aligns() {
        assert_eq!(grant(0, 1 << 20), (0, 0));
        assert_eq!(grant(8, 0), (0, 0));
        assert_eq!(grant(8, 1), (8, 4096));
        assert_eq!(grant(8, 1 << 20), (8, 1 << 20));
        assert_eq!(grant(1000, 1 << 20), (MAX_SLOTS, 1 << 20));
        assert_eq!(grant(64, u32::MAX), (4, MAX_SLOT_SIZE));
    }

    #[test]
    fn slots_check_index_length_and_ownership() {
        let (r, fd) = Region::create(4, 8192).unwrap();
        let t = SlotTable::new(r);
        assert!(t.take(4, 1).is_err(), "slot out of range");
        assert!(t.take(u32::MAX, 1).is_err());
        assert!(t.take(0, 8193).is_err(), "too long");
        t.take(0, 8192).unwrap();
        assert!(t.take(0, 1).is_err(), "owned by a request in flight");
        t.give_back(0);
        t.take(0, 1).unwrap();
        t.give_back(99); // nothing to give back: ignored
                         // A second mapping of the same memfd (what the client does) sees
                         // what this one wrote.
        let peer = Region::attach(fd.try_clone().unwrap(), 4, 8192).unwrap();
        t.region().put(3, b"hello").unwrap();
        let mut back = [0u8; 5];
        peer.get(3, &mut back).unwrap();
        assert_eq!(&back, b"hello");
        assert!(peer.get(4, &mut back).is_err());
        assert!(peer.put(0, &[0u8; 8193]).is_err());
        // Announced wrongly: refused.
        assert!(Region::attach(fd.try_clone().unwrap(), 8, 8192).is_err());
        assert!(Region::attach(fd.try_clone().unwrap(), 4, 4096).is_err());
        // Sealed: the peer cannot shrink it under the server's mapping.
        assert!(rustix::fs::ftruncate(&fd, 4096).is_err());
    }

    #[test]
    fn an_unsealed_memfd_is_refused() {
        let fd = rustix::fs::memfd_create(c"x", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 8192).unwrap();
        assert!(Region::attach(fd, 2, 4096).is_err());
    }

    #[test]
    fn a_descriptor_travels_with_a_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, fd) = Region::create(1, 4096).unwrap();
        r.put(0, b"xyz").unwrap();
        send_with_fd(&a, b"0123456789", Some(&fd)).unwrap();
        let mut buf = [0u8; 10];
        let got = recv_with_fd(&b, &mut buf).unwrap().expect("a descriptor");
        assert_eq!(&buf, b"0123456789");
        let peer = Region::attach(got, 1, 4096).unwrap();
        let mut x = [0u8; 3];
        peer.get(0, &mut x).unwrap();
        assert_eq!(&x, b"xyz");
        send_with_fd(&a, b"ab", None).unwrap();
        let mut buf = [0u8; 2];
        assert!(recv_with_fd(&b, &mut buf).unwrap().is_none());
        drop(a);
        assert!(recv_with_fd(&b, &mut buf).is_err(), "end of stream");
    }
}
