//! The dosfs protocol: requests and replies between clients and servers.
//!
//! Every message is a frame: a 24-byte header, then a body whose layout
//! depends on the header's kind. Fields are little-endian and fixed-width;
//! strings and byte strings carry a `u32` length; lists a `u32` count.
//!
//! ```text
//! 0..4   "dosF"
//! 4      version (VERSION = 1)
//! 5      kind: a request opcode (1..=23) or a reply kind (0x80..=0x88, 0xff)
//! 6..8   zero
//! 8..16  request id (a reply carries its request's id)
//! 16..20 body length (at most MAX_BODY)
//! 20..24 zero
//! ```
//!
//! A connection starts with the [`dos_transport::auth`] handshake under the
//! context [`auth_context`] (file-system id bound in); then the client sends
//! requests and the server answers each with one reply of the same id, in
//! any order (several requests may be in flight on one connection).
//!
//! Decoding never panics and never allocates more than the frame holds:
//! [`Header::decode`] refuses a wrong magic or version, non-zero reserved
//! bytes and a body over [`MAX_BODY`] before the body is read; the body
//! decoders refuse short, long or malformed bodies with
//! [`Error::Protocol`]. The fuzz target `fs_wire` (in `fuzz/`) runs them on
//! arbitrary bytes.
//!
//! Errors travel as [`WireError`]: an [`ErrorCode`], three numbers and a
//! message, turned back into the same [`Error`] variant by the client.

use dos_transport::codec::{utf8, CodecError, Reader, Writer};

use crate::chunk::VerifyReport;
use crate::error::{Error, Result};
use crate::layout::{Layout, LayoutSpec, MAX_STRIPE_SIZE};
use crate::meta::{get_layout, get_spec, put_layout, put_spec, Attr, DirEntry, Kind};
use crate::target::FsId;

/// Frame magic.
pub const MAGIC: &[u8; 4] = b"dosF";
/// Protocol version; bump on any change of a frame. (Version 1 grew the
/// slot requests 19-21 and reply 0x87 without a bump: they are new kinds,
/// sent only on the Unix connections that servers speaking them offer; so
/// did the RDMA setup, request 23 and reply 0x88: a server that does not
/// know it answers with a protocol error, and the client stays on TCP.)
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 24;
/// Largest body: one stripe of data and its fields.
pub const MAX_BODY: u32 = MAX_STRIPE_SIZE + 4096;

/// The handshake context of a file system: its id and the protocol version.
pub fn auth_context(fsid: &FsId) -> Vec<u8> {
    let mut c = b"dosfs v1 ".to_vec();
    c.extend_from_slice(fsid.to_string().as_bytes());
    c
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The request opcode or reply kind.
    pub kind: u8,
    /// The request id.
    pub id: u64,
    /// Body length.
    pub len: u32,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = self.kind;
        h[8..16].copy_from_slice(&self.id.to_le_bytes());
        h[16..20].copy_from_slice(&self.len.to_le_bytes());
        h
    }

    /// Decodes and checks a header.
    pub fn decode(b: &[u8]) -> Result<Header> {
        let mut r = Reader::new(b);
        let magic: [u8; 4] = r.array().map_err(codec)?;
        if &magic != MAGIC {
            return Err(Error::protocol("bad magic (not a dosfs frame)"));
        }
        let version = r.u8().map_err(codec)?;
        if version != VERSION {
            return Err(Error::protocol(format!(
                "protocol version {version}, this dosfs speaks {VERSION}"
            )));
        }
        let kind = r.u8().map_err(codec)?;
        let z = r.u16().map_err(codec)?;
        let id = r.u64().map_err(codec)?;
        let len = r.u32().map_err(codec)?;
        let z2 = r.u32().map_err(codec)?;
        if z != 0 || z2 != 0 {
            return Err(Error::protocol("reserved header bytes set"));
        }
        if len > MAX_BODY {
            return Err(Error::protocol(format!(
                "body of {len} bytes is over the limit"
            )));
        }
        Ok(Header { kind, id, len })
    }
}

fn codec(e: CodecError) -> Error {
    Error::protocol(e.reason())
}

/// Longest RoCE address or remote key a frame may carry.
pub const MAX_RDMA_BLOB: usize = 64;

/// A length-prefixed byte string of at most [`MAX_RDMA_BLOB`] bytes.
fn blob(r: &mut Reader<'_>, what: &str) -> Result<Vec<u8>> {
    let b = r.bytes32().map_err(codec)?;
    if b.len() > MAX_RDMA_BLOB {
        return Err(Error::protocol(format!(
            "{what} of {} bytes is over {MAX_RDMA_BLOB}",
            b.len()
        )));
    }
    Ok(b.to_vec())
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Attributes of a path (metadata server).
    Stat {
        /// The path.
        path: String,
    },
    /// A name in a directory, by inode (metadata server).
    Lookup {
        /// The directory's inode.
        parent: u64,
        /// The name.
        name: String,
    },
    /// Creates a file (metadata server).
    Create {
        /// The path.
        path: String,
        /// Its layout; unset fields come from the directory.
        spec: Option<LayoutSpec>,
        /// Fail if it exists.
        exclusive: bool,
    },
    /// Creates a directory (metadata server).
    Mkdir {
        /// The path.
        path: String,
    },
    /// One page of a directory (metadata server).
    Readdir {
        /// The directory.
        path: String,
        /// Entries after this name (empty: from the start).
        after: String,
        /// Most entries wanted.
        limit: u32,
    },
    /// Removes a file or empty directory (metadata server).
    Unlink {
        /// The path.
        path: String,
    },
    /// Renames (metadata server).
    Rename {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// Sets or grows a file's size (metadata server).
    SetSize {
        /// The inode.
        ino: u64,
        /// The size.
        size: u64,
        /// Only if larger than now.
        grow_only: bool,
    },
    /// Sets a directory's layout, or creates a file with one (metadata server).
    SetStripe {
        /// The path.
        path: String,
        /// The layout.
        spec: LayoutSpec,
    },
    /// Reads a piece of a stripe (data server).
    Read {
        /// The inode.
        ino: u64,
        /// The stripe.
        stripe: u64,
        /// The file's stripe size.
        stripe_size: u32,
        /// Offset in the stripe.
        offset: u32,
        /// Bytes wanted.
        len: u32,
    },
    /// Writes a piece of a stripe (data server).
    Write {
        /// The inode.
        ino: u64,
        /// The stripe.
        stripe: u64,
        /// The file's stripe size.
        stripe_size: u32,
        /// Offset in the stripe.
        offset: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Makes writes durable: a file's chunks (`Some`) or everything (`None`),
    /// and on the metadata server the journal.
    Sync {
        /// The inode, or all.
        ino: Option<u64>,
    },
    /// Space and counts of a server.
    Statfs,
    /// Checks every synced chunk of a file on this server (data server).
    Verify {
        /// The inode.
        ino: u64,
        /// The file's stripe size.
        stripe_size: u32,
    },
    /// Drops every chunk of a deleted file (data server).
    DropFile {
        /// The inode.
        ino: u64,
    },
    /// Cuts a file's chunks to a size (data server).
    Truncate {
        /// The inode.
        ino: u64,
        /// The file's stripe size.
        stripe_size: u32,
        /// The new size.
        size: u64,
    },
    /// Attributes by inode (metadata server).
    StatIno {
        /// The inode.
        ino: u64,
    },
    /// Asks for a region of data slots (first request on a same-node Unix
    /// connection, [`crate::shm`]); answered by [`Reply::Slots`].
    ShmSetup {
        /// Slots wanted.
        slots: u32,
        /// Bytes per slot wanted.
        slot_size: u32,
    },
    /// [`Request::Write`] whose bytes are in slot `slot` (data server, Unix
    /// connections with slots).
    WriteSlot {
        /// The inode.
        ino: u64,
        /// The stripe.
        stripe: u64,
        /// The file's stripe size.
        stripe_size: u32,
        /// Offset in the stripe.
        offset: u32,
        /// Bytes, at the start of the slot.
        len: u32,
        /// The slot.
        slot: u32,
    },
    /// [`Request::Read`] into slot `slot` (data server, Unix connections
    /// with slots); answered by [`Reply::Ok`] once the slot holds the bytes.
    ReadSlot {
        /// The inode.
        ino: u64,
        /// The stripe.
        stripe: u64,
        /// The file's stripe size.
        stripe_size: u32,
        /// Offset in the stripe.
        offset: u32,
        /// Bytes wanted.
        len: u32,
        /// The slot.
        slot: u32,
    },
    /// Asks for data slots reached by RDMA over the soft-RoCE (first request
    /// on a TCP connection, [`crate::rdma`]), sending the client's RoCE
    /// connection address; answered by [`Reply::RoceSlots`].
    RoceSetup {
        /// Slots wanted.
        slots: u32,
        /// Bytes per slot wanted.
        slot_size: u32,
        /// The client's soft-RoCE address (at most [`MAX_RDMA_BLOB`] bytes).
        addr: Vec<u8>,
    },
    /// The inodes this server holds chunks of (synced or pending), in
    /// order, after `after`: [`Reply::Entries`] with empty names and kind
    /// file (orphan collection, `Client::collect_orphans`).
    ListChunks {
        /// Inodes above this one.
        after: u64,
        /// Most wanted.
        limit: u32,
    },
}

impl Request {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Stat { .. } => 1,
            Request::Lookup { .. } => 2,
            Request::Create { .. } => 3,
            Request::Mkdir { .. } => 4,
            Request::Readdir { .. } => 5,
            Request::Unlink { .. } => 6,
            Request::Rename { .. } => 7,
            Request::SetSize { .. } => 8,
            Request::SetStripe { .. } => 9,
            Request::Read { .. } => 11,
            Request::Write { .. } => 12,
            Request::Sync { .. } => 13,
            Request::Statfs => 14,
            Request::Verify { .. } => 15,
            Request::DropFile { .. } => 16,
            Request::Truncate { .. } => 17,
            Request::StatIno { .. } => 18,
            Request::ShmSetup { .. } => 19,
            Request::WriteSlot { .. } => 20,
            Request::ReadSlot { .. } => 21,
            Request::ListChunks { .. } => 22,
            Request::RoceSetup { .. } => 23,
        }
    }

    /// Whether the metadata server handles it (the rest go to data servers;
    /// `Sync` and `Statfs` go to both).
    pub fn is_metadata(&self) -> bool {
        matches!(self.opcode(), 1..=9 | 18)
    }

    /// The whole frame of this request with id `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let mut w = Writer::from_vec(vec![0u8; HEADER_LEN]);
        match self {
            Request::Stat { path } | Request::Mkdir { path } | Request::Unlink { path } => {
                w.bytes32(path.as_bytes());
            }
            Request::Lookup { parent, name } => {
                w.u64(*parent).bytes32(name.as_bytes());
            }
            Request::Create {
                path,
                spec,
                exclusive,
            } => {
                w.bytes32(path.as_bytes()).u8(u8::from(*exclusive));
                match spec {
                    Some(s) => {
                        w.u8(1);
                        put_spec(&mut w, s);
                    }
                    None => {
                        w.u8(0);
                    }
                }
            }
            Request::Readdir { path, after, limit } => {
                w.bytes32(path.as_bytes())
                    .bytes32(after.as_bytes())
                    .u32(*limit);
            }
            Request::Rename { from, to } => {
                w.bytes32(from.as_bytes()).bytes32(to.as_bytes());
            }
            Request::SetSize {
                ino,
                size,
                grow_only,
            } => {
                w.u64(*ino).u64(*size).u8(u8::from(*grow_only));
            }
            Request::SetStripe { path, spec } => {
                w.bytes32(path.as_bytes());
                put_spec(&mut w, spec);
            }
            Request::Read {
                ino,
                stripe,
                stripe_size,
                offset,
                len,
            } => {
                w.u64(*ino)
                    .u64(*stripe)
                    .u32(*stripe_size)
                    .u32(*offset)
                    .u32(*len);
            }
            Request::Write {
                ino,
                stripe,
                stripe_size,
                offset,
                data,
            } => {
                return encode_write(id, *ino, *stripe, *stripe_size, *offset, data);
            }
            Request::Sync { ino } => {
                match ino {
                    Some(i) => w.u8(1).u64(*i),
                    None => w.u8(0).u64(0),
                };
            }
            Request::Statfs => {}
            Request::Verify { ino, stripe_size } => {
                w.u64(*ino).u32(*stripe_size);
            }
            Request::DropFile { ino } | Request::StatIno { ino } => {
                w.u64(*ino);
            }
            Request::ListChunks { after, limit } => {
                w.u64(*after).u32(*limit);
            }
            Request::Truncate {
                ino,
                stripe_size,
                size,
            } => {
                w.u64(*ino).u32(*stripe_size).u64(*size);
            }
            Request::ShmSetup { slots, slot_size } => {
                w.u32(*slots).u32(*slot_size);
            }
            Request::RoceSetup {
                slots,
                slot_size,
                addr,
            } => {
                w.u32(*slots).u32(*slot_size).bytes32(addr);
            }
            Request::WriteSlot {
                ino,
                stripe,
                stripe_size,
                offset,
                len,
                slot,
            }
            | Request::ReadSlot {
                ino,
                stripe,
                stripe_size,
                offset,
                len,
                slot,
            } => {
                w.u64(*ino)
                    .u64(*stripe)
                    .u32(*stripe_size)
                    .u32(*offset)
                    .u32(*len)
                    .u32(*slot);
            }
        }
        finish(w, self.opcode(), id)
    }

    /// Decodes the body of a request of opcode `kind`.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Request> {
        let mut r = Reader::new(body);
        let s = |r: &mut Reader<'_>| -> Result<String> {
            Ok(utf8(r.bytes32().map_err(codec)?).map_err(codec)?.to_owned())
        };
        let flag = |r: &mut Reader<'_>| -> Result<bool> {
            match r.u8().map_err(codec)? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(Error::protocol("flag byte is not 0 or 1")),
            }
        };
        let req = match kind {
            1 => Request::Stat { path: s(&mut r)? },
            2 => Request::Lookup {
                parent: r.u64().map_err(codec)?,
                name: s(&mut r)?,
            },
            3 => {
                let path = s(&mut r)?;
                let exclusive = flag(&mut r)?;
                let spec = if flag(&mut r)? {
                    Some(get_spec(&mut r)?)
                } else {
                    None
                };
                Request::Create {
                    path,
                    spec,
                    exclusive,
                }
            }
            4 => Request::Mkdir { path: s(&mut r)? },
            5 => Request::Readdir {
                path: s(&mut r)?,
                after: s(&mut r)?,
                limit: r.u32().map_err(codec)?,
            },
            6 => Request::Unlink { path: s(&mut r)? },
            7 => Request::Rename {
                from: s(&mut r)?,
                to: s(&mut r)?,
            },
            8 => Request::SetSize {
                ino: r.u64().map_err(codec)?,
                size: r.u64().map_err(codec)?,
                grow_only: flag(&mut r)?,
            },
            9 => Request::SetStripe {
                path: s(&mut r)?,
                spec: get_spec(&mut r)?,
            },
            11 => Request::Read {
                ino: r.u64().map_err(codec)?,
                stripe: r.u64().map_err(codec)?,
                stripe_size: r.u32().map_err(codec)?,
                offset: r.u32().map_err(codec)?,
                len: r.u32().map_err(codec)?,
            },
            12 => Request::Write {
                ino: r.u64().map_err(codec)?,
                stripe: r.u64().map_err(codec)?,
                stripe_size: r.u32().map_err(codec)?,
                offset: r.u32().map_err(codec)?,
                data: r.bytes32().map_err(codec)?.to_vec(),
            },
            13 => {
                let some = flag(&mut r)?;
                let ino = r.u64().map_err(codec)?;
                if !some && ino != 0 {
                    return Err(Error::protocol("sync of all files with an inode set"));
                }
                Request::Sync {
                    ino: some.then_some(ino),
                }
            }
            14 => Request::Statfs,
            15 => Request::Verify {
                ino: r.u64().map_err(codec)?,
                stripe_size: r.u32().map_err(codec)?,
            },
            16 => Request::DropFile {
                ino: r.u64().map_err(codec)?,
            },
            17 => Request::Truncate {
                ino: r.u64().map_err(codec)?,
                stripe_size: r.u32().map_err(codec)?,
                size: r.u64().map_err(codec)?,
            },
            18 => Request::StatIno {
                ino: r.u64().map_err(codec)?,
            },
            19 => Request::ShmSetup {
                slots: r.u32().map_err(codec)?,
                slot_size: r.u32().map_err(codec)?,
            },
            20 | 21 => {
                let ino = r.u64().map_err(codec)?;
                let stripe = r.u64().map_err(codec)?;
                let stripe_size = r.u32().map_err(codec)?;
                let offset = r.u32().map_err(codec)?;
                let len = r.u32().map_err(codec)?;
                let slot = r.u32().map_err(codec)?;
                if kind == 20 {
                    Request::WriteSlot {
                        ino,
                        stripe,
                        stripe_size,
                        offset,
                        len,
                        slot,
                    }
                } else {
                    Request::ReadSlot {
                        ino,
                        stripe,
                        stripe_size,
                        offset,
                        len,
                        slot,
                    }
                }
            }
            22 => Request::ListChunks {
                after: r.u64().map_err(codec)?,
                limit: r.u32().map_err(codec)?,
            },
            23 => Request::RoceSetup {
                slots: r.u32().map_err(codec)?,
                slot_size: r.u32().map_err(codec)?,
                addr: blob(&mut r, "RoCE address")?,
            },
            k => return Err(Error::protocol(format!("unknown request opcode {k}"))),
        };
        r.end().map_err(codec)?;
        Ok(req)
    }
}

/// The frame of a write request, built from a borrowed slice (no copy of the
/// data into a [`Request`]).
pub fn encode_write(
    id: u64,
    ino: u64,
    stripe: u64,
    stripe_size: u32,
    offset: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut w = Writer::from_vec(Vec::with_capacity(HEADER_LEN + 32 + data.len()));
    w.raw(&[0u8; HEADER_LEN]);
    w.u64(ino)
        .u64(stripe)
        .u32(stripe_size)
        .u32(offset)
        .bytes32(data);
    finish(w, 12, id)
}

/// Writes the header in front of a body written after `HEADER_LEN` zeros.
fn finish(w: Writer, kind: u8, id: u64) -> Vec<u8> {
    let mut v = w.into_vec();
    let len = (v.len() - HEADER_LEN) as u32;
    v[..HEADER_LEN].copy_from_slice(&Header { kind, id, len }.encode());
    v
}

/// The kinds of error a server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u16)]
pub enum ErrorCode {
    /// [`Error::NotFound`].
    NotFound = 1,
    /// [`Error::Exists`].
    Exists = 2,
    /// [`Error::NotADirectory`].
    NotADirectory = 3,
    /// [`Error::IsADirectory`].
    IsADirectory = 4,
    /// [`Error::NotEmpty`].
    NotEmpty = 5,
    /// [`Error::InvalidPath`].
    InvalidPath = 6,
    /// [`Error::InvalidLayout`].
    InvalidLayout = 7,
    /// [`Error::LayoutFixed`].
    LayoutFixed = 8,
    /// [`Error::NoSpace`].
    NoSpace = 9,
    /// [`Error::ChunkCorrupt`]: numbers are inode, stripe, file offset.
    ChunkCorrupt = 10,
    /// [`Error::WrongServer`].
    WrongServer = 11,
    /// [`Error::Protocol`].
    Protocol = 12,
    /// Anything else (an I/O error on the server, corrupted metadata).
    Other = 13,
}

impl ErrorCode {
    fn from_u16(c: u16) -> ErrorCode {
        use ErrorCode::*;
        [
            NotFound,
            Exists,
            NotADirectory,
            IsADirectory,
            NotEmpty,
            InvalidPath,
            InvalidLayout,
            LayoutFixed,
            NoSpace,
            ChunkCorrupt,
            WrongServer,
            Protocol,
        ]
        .into_iter()
        .find(|k| *k as u16 == c)
        .unwrap_or(Other)
    }
}

/// An error as it travels in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// What kind.
    pub code: ErrorCode,
    /// Numbers that go with it (see [`ErrorCode`]).
    pub nums: [u64; 3],
    /// The path for namespace errors, or the reason.
    pub message: String,
}

impl WireError {
    /// The wire form of a server's error.
    pub fn from_error(e: &Error) -> WireError {
        let (code, nums, message) = match e {
            Error::NotFound { path } => (ErrorCode::NotFound, [0; 3], path.clone()),
            Error::Exists { path } => (ErrorCode::Exists, [0; 3], path.clone()),
            Error::NotADirectory { path } => (ErrorCode::NotADirectory, [0; 3], path.clone()),
            Error::IsADirectory { path } => (ErrorCode::IsADirectory, [0; 3], path.clone()),
            Error::NotEmpty { path } => (ErrorCode::NotEmpty, [0; 3], path.clone()),
            Error::LayoutFixed { path } => (ErrorCode::LayoutFixed, [0; 3], path.clone()),
            Error::InvalidPath { path, reason } => {
                (ErrorCode::InvalidPath, [0; 3], format!("{path}\0{reason}"))
            }
            Error::InvalidLayout { reason } => (ErrorCode::InvalidLayout, [0; 3], reason.clone()),
            Error::NoSpace { op, server } => (
                ErrorCode::NoSpace,
                [u64::from(*server), 0, 0],
                (*op).to_owned(),
            ),
            Error::ChunkCorrupt {
                ino,
                stripe,
                file_offset,
                reason,
                ..
            } => (
                ErrorCode::ChunkCorrupt,
                [*ino, *stripe, *file_offset],
                reason.clone(),
            ),
            Error::WrongServer { reason, .. } => {
                (ErrorCode::WrongServer, [0; 3], (*reason).to_owned())
            }
            Error::Protocol { reason } => (ErrorCode::Protocol, [0; 3], reason.clone()),
            other => (ErrorCode::Other, [0; 3], other.to_string()),
        };
        WireError {
            code,
            nums,
            message,
        }
    }

    /// The client's [`Error`] for this reply from server `server`.
    pub fn into_error(self, server: u32) -> Error {
        let m = self.message;
        match self.code {
            ErrorCode::NotFound => Error::NotFound { path: m },
            ErrorCode::Exists => Error::Exists { path: m },
            ErrorCode::NotADirectory => Error::NotADirectory { path: m },
            ErrorCode::IsADirectory => Error::IsADirectory { path: m },
            ErrorCode::NotEmpty => Error::NotEmpty { path: m },
            ErrorCode::LayoutFixed => Error::LayoutFixed { path: m },
            ErrorCode::InvalidPath => {
                let (path, reason) = m.split_once('\0').unwrap_or((&m, ""));
                Error::InvalidPath {
                    path: path.to_owned(),
                    reason: crate::target::PATH_REASONS
                        .into_iter()
                        .find(|r| *r == reason)
                        .unwrap_or("refused by the server"),
                }
            }
            ErrorCode::InvalidLayout => Error::InvalidLayout { reason: m },
            ErrorCode::NoSpace => Error::NoSpace {
                op: "write",
                server,
            },
            ErrorCode::ChunkCorrupt => Error::ChunkCorrupt {
                ino: self.nums[0],
                stripe: self.nums[1],
                file_offset: self.nums[2],
                server,
                reason: m,
            },
            ErrorCode::WrongServer => Error::WrongServer {
                server,
                reason: "request sent to the wrong server",
            },
            ErrorCode::Protocol => Error::Protocol { reason: m },
            ErrorCode::Other => Error::Remote { server, message: m },
        }
    }
}

/// Space and counts of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSpace {
    /// The server index.
    pub server: u32,
    /// Bytes in its target's file system.
    pub total: u64,
    /// Bytes free there.
    pub free: u64,
    /// Inodes (metadata server; 0 elsewhere).
    pub inodes: u64,
}

/// A reply from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Done.
    Ok,
    /// Attributes.
    Attr(Attr),
    /// A page of a directory.
    Entries {
        /// The entries.
        entries: Vec<DirEntry>,
        /// Whether more follow.
        more: bool,
    },
    /// Bytes read.
    Data(Vec<u8>),
    /// Space and counts.
    Space(ServerSpace),
    /// What a verify found.
    Verify(VerifyReport),
    /// A rename, and the file it replaced (whose chunks the client drops).
    Renamed(Option<Attr>),
    /// The data slots granted to a same-node connection (the reply to
    /// [`Request::ShmSetup`]); a memfd of `count * size` bytes travels with
    /// it (`SCM_RIGHTS`) unless `count` is 0.
    Slots {
        /// Slots granted (0: none, send data inline).
        count: u32,
        /// Bytes per slot (a multiple of 4096).
        size: u32,
    },
    /// The RDMA data slots granted to a TCP connection (the reply to
    /// [`Request::RoceSetup`], [`crate::rdma`]): the server's soft-RoCE
    /// address and the remote key of its region of `count * size` bytes.
    RoceSlots {
        /// Slots granted (0: none, send data inline over TCP).
        count: u32,
        /// Bytes per slot (a multiple of 4096).
        size: u32,
        /// The server's soft-RoCE address (empty when `count` is 0).
        addr: Vec<u8>,
        /// The remote key of the slot region (empty when `count` is 0).
        rkey: Vec<u8>,
    },
    /// It failed.
    Error(WireError),
}

fn put_attr(w: &mut Writer, a: &Attr) {
    w.u64(a.ino).u8(a.kind.byte()).u64(a.size);
    put_layout(w, &a.layout);
}

fn get_attr(r: &mut Reader<'_>) -> Result<Attr> {
    let ino = r.u64().map_err(codec)?;
    let kind =
        Kind::from_byte(r.u8().map_err(codec)?).ok_or_else(|| Error::protocol("bad kind"))?;
    let size = r.u64().map_err(codec)?;
    let layout: Layout = get_layout(r)?;
    Ok(Attr {
        ino,
        kind,
        size,
        layout,
    })
}

impl Reply {
    /// The reply kind.
    pub fn kind(&self) -> u8 {
        match self {
            Reply::Ok => 0x80,
            Reply::Attr(_) => 0x81,
            Reply::Entries { .. } => 0x82,
            Reply::Data(_) => 0x83,
            Reply::Space(_) => 0x84,
            Reply::Verify(_) => 0x85,
            Reply::Renamed(_) => 0x86,
            Reply::Slots { .. } => 0x87,
            Reply::RoceSlots { .. } => 0x88,
            Reply::Error(_) => 0xff,
        }
    }

    /// The whole frame of this reply to request `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let cap = match self {
            Reply::Data(d) => d.len() + 8,
            _ => 64,
        };
        let mut w = Writer::from_vec(Vec::with_capacity(HEADER_LEN + cap));
        w.raw(&[0u8; HEADER_LEN]);
        match self {
            Reply::Ok => {}
            Reply::Attr(a) => put_attr(&mut w, a),
            Reply::Entries { entries, more } => {
                w.u8(u8::from(*more)).u32(entries.len() as u32);
                for e in entries {
                    w.u64(e.ino).u8(e.kind.byte()).bytes32(e.name.as_bytes());
                }
            }
            Reply::Data(d) => {
                w.bytes32(d);
            }
            Reply::Space(s) => {
                w.u32(s.server).u64(s.total).u64(s.free).u64(s.inodes);
            }
            Reply::Verify(v) => {
                w.u64(v.chunks)
                    .u64(v.bytes)
                    .u64(v.pending)
                    .u32(v.bad.len() as u32);
                for (stripe, reason) in &v.bad {
                    w.u64(*stripe).bytes32(reason.as_bytes());
                }
            }
            Reply::Renamed(a) => match a {
                Some(a) => {
                    w.u8(1);
                    put_attr(&mut w, a);
                }
                None => {
                    w.u8(0);
                }
            },
            Reply::Slots { count, size } => {
                w.u32(*count).u32(*size);
            }
            Reply::RoceSlots {
                count,
                size,
                addr,
                rkey,
            } => {
                w.u32(*count).u32(*size).bytes32(addr).bytes32(rkey);
            }
            Reply::Error(e) => {
                w.u16(e.code as u16)
                    .u64(e.nums[0])
                    .u64(e.nums[1])
                    .u64(e.nums[2])
                    .bytes32(e.message.as_bytes());
            }
        }
        finish(w, self.kind(), id)
    }

    /// Decodes the body of a reply of kind `kind`.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Reply> {
        let mut r = Reader::new(body);
        let rep = match kind {
            0x80 => Reply::Ok,
            0x81 => Reply::Attr(get_attr(&mut r)?),
            0x82 => {
                let more = match r.u8().map_err(codec)? {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::protocol("flag byte is not 0 or 1")),
                };
                let n = r.count(13).map_err(codec)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let ino = r.u64().map_err(codec)?;
                    let kind = Kind::from_byte(r.u8().map_err(codec)?)
                        .ok_or_else(|| Error::protocol("bad kind"))?;
                    let name = utf8(r.bytes32().map_err(codec)?).map_err(codec)?.to_owned();
                    entries.push(DirEntry { name, ino, kind });
                }
                Reply::Entries { entries, more }
            }
            0x83 => Reply::Data(r.bytes32().map_err(codec)?.to_vec()),
            0x84 => Reply::Space(ServerSpace {
                server: r.u32().map_err(codec)?,
                total: r.u64().map_err(codec)?,
                free: r.u64().map_err(codec)?,
                inodes: r.u64().map_err(codec)?,
            }),
            0x85 => {
                let mut v = VerifyReport {
                    chunks: r.u64().map_err(codec)?,
                    bytes: r.u64().map_err(codec)?,
                    pending: r.u64().map_err(codec)?,
                    bad: Vec::new(),
                };
                let n = r.count(12).map_err(codec)?;
                for _ in 0..n {
                    let stripe = r.u64().map_err(codec)?;
                    let reason = utf8(r.bytes32().map_err(codec)?).map_err(codec)?.to_owned();
                    v.bad.push((stripe, reason));
                }
                Reply::Verify(v)
            }
            0x86 => match r.u8().map_err(codec)? {
                0 => Reply::Renamed(None),
                1 => Reply::Renamed(Some(get_attr(&mut r)?)),
                _ => return Err(Error::protocol("flag byte is not 0 or 1")),
            },
            0x87 => Reply::Slots {
                count: r.u32().map_err(codec)?,
                size: r.u32().map_err(codec)?,
            },
            0x88 => Reply::RoceSlots {
                count: r.u32().map_err(codec)?,
                size: r.u32().map_err(codec)?,
                addr: blob(&mut r, "RoCE address")?,
                rkey: blob(&mut r, "remote key")?,
            },
            0xff => Reply::Error(WireError {
                code: ErrorCode::from_u16(r.u16().map_err(codec)?),
                nums: [
                    r.u64().map_err(codec)?,
                    r.u64().map_err(codec)?,
                    r.u64().map_err(codec)?,
                ],
                message: utf8(r.bytes32().map_err(codec)?).map_err(codec)?.to_owned(),
            }),
            k => return Err(Error::protocol(format!("unknown reply kind {k:#x}"))),
        };
        r.end().map_err(codec)?;
        Ok(rep)
    }
}

/// Splits a whole frame into its header and body (for tests and fuzzing; the
/// drivers read the header first, then exactly its body).
pub fn split_frame(b: &[u8]) -> Result<(Header, &[u8])> {
    if b.len() < HEADER_LEN {
        return Err(Error::protocol(CodecError::Truncated.reason()));
    }
    let h = Header::decode(&b[..HEADER_LEN])?;
    let body = &b[HEADER_LEN..];
    if body.len() != h.len as usize {
        return Err(Error::protocol("body length does not match the header"));
    }
    Ok((h, body))
}

/// Decodes a whole request frame.
pub fn decode_request_frame(b: &[u8]) -> Result<(u64, Request)> {
    let (h, body) = split_frame(b)?;
    Ok((h.id, Request::decode(h.kind, body)?))
}

/// Decodes a whole reply frame.
pub fn decode_reply_frame(b: &[u8]) -> Result<(u64, Reply)> {
    let (h, body) = split_frame(b)?;
    Ok((h.id, Reply::decode(h.kind, body)?))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
