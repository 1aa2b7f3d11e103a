//! Frames of the control protocol between dosrun and its node agents.
//!
//! An agent opens one TCP connection to dosrun's control port. The two first
//! run the HMAC challenge-response of [`dos_transport::auth`] with the job's
//! secret and the context [`auth_context`] (the agent's id is its node id,
//! dosrun's [`DOSRUN_ID`]); then both send frames:
//!
//! ```text
//! offset  size  field
//!      0     2  magic, b"DC"
//!      2     1  version, VERSION (1)
//!      3     1  kind: 0x01..=0x09 dosrun -> agent, 0x81..=0x8d agent -> dosrun
//!      4     4  len: body length, u32 little-endian, at most MAX_BODY
//! ```
//!
//! Bodies are little-endian; `bytes` is a u32 length then the bytes, `str`
//! the same with UTF-8, `list<T>` a u32 count then the items, `puts` a
//! `list<(str key, bytes value)>`; there are no trailing bytes.
//!
//! | kind | frame | body |
//! | --- | --- | --- |
//! | 0x01 | `Assign` | see [`Assign`] |
//! | 0x02 | `FenceDone` | puts |
//! | 0x03 | `FenceFailed` | str why |
//! | 0x04 | `Signal` | i32 signal |
//! | 0x05 | `Stop` | u32 grace (ms) |
//! | 0x06 | `Heartbeat` | empty |
//! | 0x07 | `Exit` | empty |
//! | 0x08 | `FsServe` | bytes dir, u32 servers, 16 bytes fsid (for a new target) |
//! | 0x09 | `FsAddrs` | 16 bytes fsid, `list<str>` addresses (by server index) |
//! | 0x81 | `Started` | u32 rank, i32 pid |
//! | 0x82 | `StartFailed` | u32 rank, i32 status, str why |
//! | 0x83 | `Output` | u32 rank, u8 stream (1 stdout, 2 stderr), bytes (empty: end of stream) |
//! | 0x84 | `Exited` | u32 rank, u8 how (0 exited, 1 signal, 2 signal and core), i32 code or signal |
//! | 0x85 | `FenceEnter` | puts |
//! | 0x86 | `Left` | u32 rank |
//! | 0x87 | `Abort` | u32 rank, i32 code, str msg |
//! | 0x88 | `Log` | str line |
//! | 0x89 | `Heartbeat` | empty |
//! | 0x8a | `Stopped` | u32 rank, i32 signal that stopped it (0: it was continued) |
//! | 0x8b | `FsUp` | 16 bytes fsid (the target's), str address |
//! | 0x8c | `FsFailed` | str why |
//! | 0x8d | `Announce` | u32 rank, str key, bytes value (a put dosrun hears of at once) |
//!
//! `FsServe`, `FsAddrs` (before `Assign`), `FsUp` and `FsFailed` exist only in
//! jobs with `--fs` (see `crate::fsjob`).
//!
//! Decoding never panics, and never allocates more than the frame holds: a
//! short, oversized or malformed frame is a [`WireError`]. Bad frames can only
//! come after authentication (the handshake has fixed-size messages).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::bind::BindTo;
use crate::sys::ExitCause;
use dos_transport::codec::{CodecError, Reader};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"DC";
/// Protocol version carried in every header.
pub const VERSION: u8 = 1;
/// Size of the frame header.
pub const HEADER_LEN: usize = 8;
/// Largest body: a fence's puts of the whole job (the wire-up store's bound)
/// plus room for the framing of its entries.
pub const MAX_BODY: usize = (256 << 20) + (16 << 20);

/// The authenticated id of dosrun on control connections (agents use their
/// node id).
pub const DOSRUN_ID: u64 = u64::MAX;

/// The handshake context of job `jobid`'s control connections (distinct
/// from the wire-up one).
pub fn auth_context(jobid: u64) -> Vec<u8> {
    format!("dos-ctl-v{VERSION}:{jobid:016x}").into_bytes()
}

/// Frame kinds.
pub mod kind {
    /// [`super::ToAgent::Assign`].
    pub const ASSIGN: u8 = 0x01;
    /// [`super::ToAgent::FenceDone`].
    pub const FENCE_DONE: u8 = 0x02;
    /// [`super::ToAgent::FenceFailed`].
    pub const FENCE_FAILED: u8 = 0x03;
    /// [`super::ToAgent::Signal`].
    pub const SIGNAL: u8 = 0x04;
    /// [`super::ToAgent::Stop`].
    pub const STOP: u8 = 0x05;
    /// [`super::ToAgent::Heartbeat`].
    pub const HEARTBEAT_DOWN: u8 = 0x06;
    /// [`super::ToAgent::Exit`].
    pub const EXIT: u8 = 0x07;
    /// [`super::ToAgent::FsServe`].
    pub const FS_SERVE: u8 = 0x08;
    /// [`super::ToAgent::FsAddrs`].
    pub const FS_ADDRS: u8 = 0x09;
    /// [`super::FromAgent::FsUp`].
    pub const FS_UP: u8 = 0x8b;
    /// [`super::FromAgent::FsFailed`].
    pub const FS_FAILED: u8 = 0x8c;
    /// [`super::FromAgent::Started`].
    pub const STARTED: u8 = 0x81;
    /// [`super::FromAgent::StartFailed`].
    pub const START_FAILED: u8 = 0x82;
    /// [`super::FromAgent::Output`].
    pub const OUTPUT: u8 = 0x83;
    /// [`super::FromAgent::Exited`].
    pub const EXITED: u8 = 0x84;
    /// [`super::FromAgent::Stopped`].
    pub const STOPPED: u8 = 0x8a;
    /// [`super::FromAgent::FenceEnter`].
    pub const FENCE_ENTER: u8 = 0x85;
    /// [`super::FromAgent::Left`].
    pub const LEFT: u8 = 0x86;
    /// [`super::FromAgent::Abort`].
    pub const ABORT: u8 = 0x87;
    /// [`super::FromAgent::Log`].
    pub const LOG: u8 = 0x88;
    /// [`super::FromAgent::Heartbeat`].
    pub const HEARTBEAT_UP: u8 = 0x89;
    /// [`super::FromAgent::Announce`].
    pub const ANNOUNCE: u8 = 0x8d;
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("control protocol: {0}")]
pub struct WireError(pub &'static str);

/// Key/value pairs of a fence.
pub type Puts = Vec<(String, Vec<u8>)>;

/// What a node agent is to run: everything about its node's ranks.
///
/// Body: `u32 node, u32 nodes, u32 size, bytes program, bytes argv0,
/// list<bytes> args, bytes cwd, list<(bytes, bytes)> env, list<u32> ranks,
/// u8 bind (0 default, 1 core, 2 numa, 3 none), u8 flags (bit 0
/// report-bindings), u32 grace (ms), u32 heartbeat interval (ms), u32
/// heartbeat timeout (ms)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assign {
    /// The node's id.
    pub node: u32,
    /// Number of nodes of the job.
    pub nodes: u32,
    /// Number of ranks of the job.
    pub size: u32,
    /// The program as the user gave it (resolved on the node).
    pub program: OsString,
    /// `argv[0]`.
    pub argv0: OsString,
    /// The arguments.
    pub args: Vec<OsString>,
    /// The working directory of the ranks.
    pub cwd: OsString,
    /// Variables to set in the ranks (`-x` exports).
    pub env: Vec<(OsString, OsString)>,
    /// The node's ranks: `ranks[i]` has local rank `i`.
    pub ranks: Vec<u32>,
    /// `--bind-to` (`None`: the default policy); on the wire a u8, 0
    /// default, 1 core, 2 numa, 3 none.
    pub bind: Option<BindTo>,
    /// `--report-bindings`.
    pub report_bindings: bool,
    /// Milliseconds between SIGTERM and SIGKILL when stopping.
    pub grace_ms: u32,
    /// Milliseconds between heartbeats.
    pub heartbeat_ms: u32,
    /// Milliseconds of silence after which the other end is lost.
    pub heartbeat_timeout_ms: u32,
}

/// A frame from dosrun to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    /// The node's work; the first frame.
    Assign(Box<Assign>),
    /// The job-wide fence completed with these puts.
    FenceDone(Puts),
    /// The job-wide fence cannot complete.
    FenceFailed(String),
    /// Send this signal to every rank's process group.
    Signal(i32),
    /// Stop the ranks: SIGTERM, SIGKILL after the grace.
    Stop {
        /// Milliseconds between SIGTERM and SIGKILL.
        grace_ms: u32,
    },
    /// dosrun is alive.
    Heartbeat,
    /// The job is over: kill what is left and exit.
    Exit,
    /// Start the node's dosfs server (`--fs`), before the assignment; its
    /// index is the agent's node id, its target `dir/<node id>`.
    FsServe {
        /// The `--fs` directory (absolute).
        dir: OsString,
        /// The number of servers (nodes).
        servers: u32,
        /// The file-system id for a new target.
        fsid: [u8; 16],
    },
    /// Every server is up: the file system and its servers' addresses,
    /// for the node's address file.
    FsAddrs {
        /// The file system's id.
        fsid: [u8; 16],
        /// The servers' addresses, by index.
        addrs: Vec<String>,
    },
}

/// A frame from an agent to dosrun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromAgent {
    /// A rank started.
    Started {
        /// The rank.
        rank: u32,
        /// Its pid on the node.
        pid: i32,
    },
    /// A rank could not be started.
    StartFailed {
        /// The rank.
        rank: u32,
        /// The shell's status for the failure (126, 127).
        status: i32,
        /// Why.
        why: String,
    },
    /// Bytes a rank wrote.
    Output {
        /// The rank.
        rank: u32,
        /// 1 stdout, 2 stderr.
        stream: u8,
        /// The bytes; empty at the end of the stream.
        data: Vec<u8>,
    },
    /// A rank ended.
    Exited {
        /// The rank.
        rank: u32,
        /// How.
        cause: ExitCause,
    },
    /// Every rank of the node is in the fence.
    FenceEnter(Puts),
    /// A rank left the wire-up.
    Left {
        /// The rank.
        rank: u32,
    },
    /// A rank asked to stop the job.
    Abort {
        /// The rank.
        rank: u32,
        /// The exit status asked for.
        code: i32,
        /// Its message.
        msg: String,
    },
    /// A line for dosrun's stderr.
    Log(String),
    /// The agent is alive.
    Heartbeat,
    /// A rank was stopped (`sig` > 0: SIGSTOP, SIGTSTP, ...) or continued
    /// (`sig` 0), as the kernel reported it to the agent.
    Stopped {
        /// The rank.
        rank: u32,
        /// The signal that stopped it; 0 when it runs again.
        sig: i32,
    },
    /// The node's dosfs server is up.
    FsUp {
        /// The file system's id, as its target says.
        fsid: [u8; 16],
        /// Where it listens (`ip:port`).
        addr: String,
    },
    /// The node's dosfs server could not start.
    FsFailed(String),
    /// A rank put a key dosrun hears of at once
    /// (`pmi_server::ANNOUNCED`: the checkpoint a restarted run restored).
    Announce {
        /// The rank.
        rank: u32,
        /// The key.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
}

fn header(kind: u8, out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&[0; 4]);
    out.len()
}

/// Patches the body length into the header at `start - 4`; fails (and
/// removes the frame) when the body is too long.
fn finish(start: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let len = out.len() - start;
    if len > MAX_BODY {
        out.truncate(start - HEADER_LEN);
        return Err(WireError("frame body too long"));
    }
    out[start - 4..start].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths above u32 cannot fit MAX_BODY; `finish` rejects the frame.
    put_u32(out, b.len().min(u32::MAX as usize) as u32);
    out.extend_from_slice(b);
}

fn put_puts(out: &mut Vec<u8>, p: &[(String, Vec<u8>)]) {
    put_u32(out, p.len() as u32);
    for (k, v) in p {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v);
    }
}

impl ToAgent {
    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start;
        match self {
            ToAgent::Assign(a) => {
                start = header(kind::ASSIGN, out);
                put_u32(out, a.node);
                put_u32(out, a.nodes);
                put_u32(out, a.size);
                put_bytes(out, a.program.as_bytes());
                put_bytes(out, a.argv0.as_bytes());
                put_u32(out, a.args.len() as u32);
                for x in &a.args {
                    put_bytes(out, x.as_bytes());
                }
                put_bytes(out, a.cwd.as_bytes());
                put_u32(out, a.env.len() as u32);
                for (k, v) in &a.env {
                    put_bytes(out, k.as_bytes());
                    put_bytes(out, v.as_bytes());
                }
                put_u32(out, a.ranks.len() as u32);
                for &r in &a.ranks {
                    put_u32(out, r);
                }
                put_bind(out, a.bind);
                out.push(u8::from(a.report_bindings));
                put_u32(out, a.grace_ms);
                put_u32(out, a.heartbeat_ms);
                put_u32(out, a.heartbeat_timeout_ms);
            }
            ToAgent::FenceDone(p) => {
                start = header(kind::FENCE_DONE, out);
                put_puts(out, p);
            }
            ToAgent::FenceFailed(m) => {
                start = header(kind::FENCE_FAILED, out);
                put_bytes(out, m.as_bytes());
            }
            ToAgent::Signal(s) => {
                start = header(kind::SIGNAL, out);
                put_i32(out, *s);
            }
            ToAgent::Stop { grace_ms } => {
                start = header(kind::STOP, out);
                put_u32(out, *grace_ms);
            }
            ToAgent::Heartbeat => start = header(kind::HEARTBEAT_DOWN, out),
            ToAgent::Exit => start = header(kind::EXIT, out),
            ToAgent::FsServe { dir, servers, fsid } => {
                start = header(kind::FS_SERVE, out);
                put_bytes(out, dir.as_bytes());
                put_u32(out, *servers);
                out.extend_from_slice(fsid);
            }
            ToAgent::FsAddrs { fsid, addrs } => {
                start = header(kind::FS_ADDRS, out);
                out.extend_from_slice(fsid);
                put_u32(out, addrs.len() as u32);
                for a in addrs {
                    put_bytes(out, a.as_bytes());
                }
            }
        }
        finish(start, out)
    }

    /// Decodes a frame's body.
    pub fn decode(h: Header, body: &[u8]) -> Result<ToAgent, WireError> {
        let mut r = Reader::new(body);
        let m = match h.kind {
            kind::ASSIGN => {
                let mut a = Assign {
                    node: r.u32()?,
                    nodes: r.u32()?,
                    size: r.u32()?,
                    program: os(&mut r)?,
                    argv0: os(&mut r)?,
                    ..Assign::default()
                };
                let n = r.count(4)?;
                for _ in 0..n {
                    a.args.push(os(&mut r)?);
                }
                a.cwd = os(&mut r)?;
                let n = r.count(8)?;
                for _ in 0..n {
                    a.env.push((os(&mut r)?, os(&mut r)?));
                }
                let n = r.count(4)?;
                for _ in 0..n {
                    a.ranks.push(r.u32()?);
                }
                a.bind = bind(&mut r)?;
                a.report_bindings = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError("unknown assignment flags")),
                };
                a.grace_ms = r.u32()?;
                a.heartbeat_ms = r.u32()?;
                a.heartbeat_timeout_ms = r.u32()?;
                ToAgent::Assign(Box::new(a))
            }
            kind::FENCE_DONE => ToAgent::FenceDone(puts(&mut r)?),
            kind::FENCE_FAILED => ToAgent::FenceFailed(string(&mut r)?),
            kind::SIGNAL => ToAgent::Signal(r.i32()?),
            kind::STOP => ToAgent::Stop { grace_ms: r.u32()? },
            kind::HEARTBEAT_DOWN => ToAgent::Heartbeat,
            kind::EXIT => ToAgent::Exit,
            kind::FS_SERVE => ToAgent::FsServe {
                dir: os(&mut r)?,
                servers: r.u32()?,
                fsid: fsid(&mut r)?,
            },
            kind::FS_ADDRS => {
                let fsid = fsid(&mut r)?;
                let n = r.count(4)?;
                let mut addrs = Vec::with_capacity(n);
                for _ in 0..n {
                    addrs.push(string(&mut r)?);
                }
                ToAgent::FsAddrs { fsid, addrs }
            }
            _ => return Err(WireError("unknown frame kind for an agent")),
        };
        r.end()?;
        Ok(m)
    }
}

impl FromAgent {
    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start;
        match self {
            FromAgent::Started { rank, pid } => {
                start = header(kind::STARTED, out);
                put_u32(out, *rank);
                put_i32(out, *pid);
            }
            FromAgent::StartFailed { rank, status, why } => {
                start = header(kind::START_FAILED, out);
                put_u32(out, *rank);
                put_i32(out, *status);
                put_bytes(out, why.as_bytes());
            }
            FromAgent::Output { rank, stream, data } => {
                start = header(kind::OUTPUT, out);
                put_u32(out, *rank);
                out.push(*stream);
                put_bytes(out, data);
            }
            FromAgent::Exited { rank, cause } => {
                start = header(kind::EXITED, out);
                put_u32(out, *rank);
                let (how, v) = match *cause {
                    ExitCause::Exited(c) => (0, c),
                    ExitCause::Signaled { sig, core: false } => (1, sig),
                    ExitCause::Signaled { sig, core: true } => (2, sig),
                };
                out.push(how);
                put_i32(out, v);
            }
            FromAgent::FenceEnter(p) => {
                start = header(kind::FENCE_ENTER, out);
                put_puts(out, p);
            }
            FromAgent::Left { rank } => {
                start = header(kind::LEFT, out);
                put_u32(out, *rank);
            }
            FromAgent::Abort { rank, code, msg } => {
                start = header(kind::ABORT, out);
                put_u32(out, *rank);
                put_i32(out, *code);
                put_bytes(out, msg.as_bytes());
            }
            FromAgent::Log(l) => {
                start = header(kind::LOG, out);
                put_bytes(out, l.as_bytes());
            }
            FromAgent::Heartbeat => start = header(kind::HEARTBEAT_UP, out),
            FromAgent::Stopped { rank, sig } => {
                start = header(kind::STOPPED, out);
                put_u32(out, *rank);
                put_i32(out, *sig);
            }
            FromAgent::FsUp { fsid, addr } => {
                start = header(kind::FS_UP, out);
                out.extend_from_slice(fsid);
                put_bytes(out, addr.as_bytes());
            }
            FromAgent::FsFailed(why) => {
                start = header(kind::FS_FAILED, out);
                put_bytes(out, why.as_bytes());
            }
            FromAgent::Announce { rank, key, value } => {
                start = header(kind::ANNOUNCE, out);
                put_u32(out, *rank);
                put_bytes(out, key.as_bytes());
                put_bytes(out, value);
            }
        }
        finish(start, out)
    }

    /// Decodes a frame's body.
    pub fn decode(h: Header, body: &[u8]) -> Result<FromAgent, WireError> {
        let mut r = Reader::new(body);
        let m = match h.kind {
            kind::STARTED => FromAgent::Started {
                rank: r.u32()?,
                pid: r.i32()?,
            },
            kind::START_FAILED => FromAgent::StartFailed {
                rank: r.u32()?,
                status: r.i32()?,
                why: string(&mut r)?,
            },
            kind::OUTPUT => {
                let rank = r.u32()?;
                let stream = r.u8()?;
                if !(1..=2).contains(&stream) {
                    return Err(WireError("unknown output stream"));
                }
                FromAgent::Output {
                    rank,
                    stream,
                    data: r.bytes32()?.to_vec(),
                }
            }
            kind::EXITED => {
                let rank = r.u32()?;
                let how = r.u8()?;
                let v = r.i32()?;
                let cause = match how {
                    0 => ExitCause::Exited(v),
                    1 | 2 => ExitCause::Signaled {
                        sig: v,
                        core: how == 2,
                    },
                    _ => return Err(WireError("unknown exit kind")),
                };
                FromAgent::Exited { rank, cause }
            }
            kind::FENCE_ENTER => FromAgent::FenceEnter(puts(&mut r)?),
            kind::LEFT => FromAgent::Left { rank: r.u32()? },
            kind::ABORT => FromAgent::Abort {
                rank: r.u32()?,
                code: r.i32()?,
                msg: string(&mut r)?,
            },
            kind::LOG => FromAgent::Log(string(&mut r)?),
            kind::HEARTBEAT_UP => FromAgent::Heartbeat,
            kind::STOPPED => FromAgent::Stopped {
                rank: r.u32()?,
                sig: r.i32()?,
            },
            kind::FS_UP => FromAgent::FsUp {
                fsid: fsid(&mut r)?,
                addr: string(&mut r)?,
            },
            kind::FS_FAILED => FromAgent::FsFailed(string(&mut r)?),
            kind::ANNOUNCE => FromAgent::Announce {
                rank: r.u32()?,
                key: string(&mut r)?,
                value: r.bytes32()?.to_vec(),
            },
            _ => return Err(WireError("unknown frame kind for dosrun")),
        };
        r.end()?;
        Ok(m)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame kind.
    pub kind: u8,
    /// Body length, at most [`MAX_BODY`].
    pub len: usize,
}

/// A complete frame: its header, its body, and the bytes it took.
pub type Frame<'a> = (Header, &'a [u8], usize);

/// Splits the first complete frame off `buf`: `Ok(None)` when more bytes
/// are needed, `Ok(Some((header, body, consumed)))`, or an error when the
/// header is invalid (the connection cannot be resynchronised).
pub fn split_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    let n = buf.len().min(2);
    if buf[..n] != MAGIC[..n] {
        return Err(WireError("bad magic"));
    }
    if buf.len() > 2 && buf[2] != VERSION {
        return Err(WireError("unsupported protocol version"));
    }
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > MAX_BODY {
        return Err(WireError("frame too large"));
    }
    let end = HEADER_LEN + len;
    Ok(buf
        .get(HEADER_LEN..end)
        .map(|body| (Header { kind: h[3], len }, body, end)))
}

impl From<CodecError> for WireError {
    fn from(e: CodecError) -> WireError {
        WireError(e.reason())
    }
}

/// The wire code of a binding policy.
fn put_bind(out: &mut Vec<u8>, b: Option<BindTo>) {
    out.push(match b {
        None => 0,
        Some(BindTo::Core) => 1,
        Some(BindTo::Numa) => 2,
        Some(BindTo::None) => 3,
    });
}

fn bind(r: &mut Reader<'_>) -> Result<Option<BindTo>, WireError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(BindTo::Core)),
        2 => Ok(Some(BindTo::Numa)),
        3 => Ok(Some(BindTo::None)),
        _ => Err(WireError("unknown binding policy")),
    }
}

fn os(r: &mut Reader<'_>) -> Result<OsString, WireError> {
    Ok(OsString::from_vec(r.bytes32()?.to_vec()))
}

fn string(r: &mut Reader<'_>) -> Result<String, WireError> {
    Ok(r.str32()?.to_string())
}

fn fsid(r: &mut Reader<'_>) -> Result<[u8; 16], WireError> {
    let mut f = [0u8; 16];
    for b in &mut f {
        *b = r.u8()?;
    }
    Ok(f)
}

fn puts(r: &mut Reader<'_>) -> Result<Puts, WireError> {
    let n = r.count(8)?;
    let mut p = Vec::with_capacity(n);
    for _ in 0..n {
        p.push((string(r)?, r.bytes32()?.to_vec()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_bytes(m: &ToAgent) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v).unwrap();
        v
    }

    fn from_bytes(m: &FromAgent) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v).unwrap();
        v
    }

    fn assign() -> Assign {
        Assign {
            node: 2,
            nodes: 3,
            size: 6,
            program: "./prog".into(),
            argv0: "prog".into(),
            args: vec!["a b".into(), OsString::from_vec(vec![0xff])],
            cwd: "/tmp".into(),
            env: vec![("X".into(), "1".into())],
            ranks: vec![4, 5],
            bind: Some(BindTo::Core),
            report_bindings: true,
            grace_ms: 200,
            heartbeat_ms: 200,
            heartbeat_timeout_ms: 2000,
        }
    }

    #[test]
    fn golden_frames() {
        assert_eq!(
            to_bytes(&ToAgent::Stop { grace_ms: 0x0102 }),
            [b'D', b'C', 1, 0x05, 4, 0, 0, 0, 2, 1, 0, 0]
        );
        assert_eq!(
            to_bytes(&ToAgent::Heartbeat),
            [b'D', b'C', 1, 0x06, 0, 0, 0, 0]
        );
        assert_eq!(
            to_bytes(&ToAgent::FenceDone(vec![("k".into(), vec![9])])),
            [b'D', b'C', 1, 0x02, 14, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, 9]
        );
        assert_eq!(
            from_bytes(&FromAgent::Started { rank: 3, pid: 77 }),
            [b'D', b'C', 1, 0x81, 8, 0, 0, 0, 3, 0, 0, 0, 77, 0, 0, 0]
        );
        assert_eq!(
            from_bytes(&FromAgent::Stopped { rank: 3, sig: 19 }),
            [b'D', b'C', 1, 0x8a, 8, 0, 0, 0, 3, 0, 0, 0, 19, 0, 0, 0]
        );
        assert_eq!(
            from_bytes(&FromAgent::Exited {
                rank: 1,
                cause: ExitCause::Signaled {
                    sig: 9,
                    core: false
                }
            }),
            [b'D', b'C', 1, 0x84, 9, 0, 0, 0, 1, 0, 0, 0, 1, 9, 0, 0, 0]
        );
        assert_eq!(
            from_bytes(&FromAgent::Output {
                rank: 0,
                stream: 1,
                data: b"hi".to_vec()
            }),
            [b'D', b'C', 1, 0x83, 11, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, b'h', b'i']
        );
        let mut serve = vec![
            b'D', b'C', 1, 0x08, 25, 0, 0, 0, 1, 0, 0, 0, b'/', 3, 0, 0, 0,
        ];
        serve.extend_from_slice(&[0xab; 16]);
        assert_eq!(
            to_bytes(&ToAgent::FsServe {
                dir: "/".into(),
                servers: 3,
                fsid: [0xab; 16]
            }),
            serve
        );
        let mut addrs = vec![b'D', b'C', 1, 0x09, 31, 0, 0, 0];
        addrs.extend_from_slice(&[1; 16]);
        addrs.extend_from_slice(&[1, 0, 0, 0, 7, 0, 0, 0]);
        addrs.extend_from_slice(b"1.2.3:4");
        assert_eq!(
            to_bytes(&ToAgent::FsAddrs {
                fsid: [1; 16],
                addrs: vec!["1.2.3:4".into()]
            }),
            addrs
        );
        let mut up = vec![b'D', b'C', 1, 0x8b, 21, 0, 0, 0];
        up.extend_from_slice(&[2; 16]);
        up.extend_from_slice(&[1, 0, 0, 0, b'a']);
        assert_eq!(
            from_bytes(&FromAgent::FsUp {
                fsid: [2; 16],
                addr: "a".into()
            }),
            up
        );
        assert_eq!(
            from_bytes(&FromAgent::FsFailed("no".into())),
            [b'D', b'C', 1, 0x8c, 6, 0, 0, 0, 2, 0, 0, 0, b'n', b'o']
        );
        let a = to_bytes(&ToAgent::Assign(Box::default()));
        assert_eq!(a[..8], [b'D', b'C', 1, 0x01, 50, 0, 0, 0]);
        assert_eq!(a.len(), 8 + 50);
    }

    #[test]
    fn binding_policies_have_fixed_codes() {
        let body = |b| {
            let f = to_bytes(&ToAgent::Assign(Box::new(Assign {
                bind: b,
                ..Assign::default()
            })));
            // The policy follows the 36 bytes of a default assignment's
            // numbers, empty strings and empty lists (after the 8 of the header).
            f[8 + 36]
        };
        assert_eq!(body(None), 0);
        assert_eq!(body(Some(BindTo::Core)), 1);
        assert_eq!(body(Some(BindTo::Numa)), 2);
        assert_eq!(body(Some(BindTo::None)), 3);
        for b in [
            None,
            Some(BindTo::Core),
            Some(BindTo::Numa),
            Some(BindTo::None),
        ] {
            round_to(ToAgent::Assign(Box::new(Assign {
                bind: b,
                ..assign()
            })));
        }
        let mut f = to_bytes(&ToAgent::Assign(Box::default()));
        f[8 + 36] = 4;
        let (h, body, _) = split_frame(&f).unwrap().unwrap();
        assert_eq!(
            ToAgent::decode(h, body),
            Err(WireError("unknown binding policy"))
        );
    }

    fn round_to(m: ToAgent) {
        let b = to_bytes(&m);
        let (h, body, used) = split_frame(&b).unwrap().unwrap();
        assert_eq!(used, b.len());
        assert_eq!(ToAgent::decode(h, body).unwrap(), m);
    }

    fn round_from(m: FromAgent) {
        let b = from_bytes(&m);
        let (h, body, used) = split_frame(&b).unwrap().unwrap();
        assert_eq!(used, b.len());
        assert_eq!(FromAgent::decode(h, body).unwrap(), m);
    }

    #[test]
    fn round_trips() {
        round_to(ToAgent::Assign(Box::new(assign())));
        round_to(ToAgent::FenceDone(vec![
            ("a".into(), vec![]),
            ("tcp.3".into(), vec![1; 40]),
        ]));
        round_to(ToAgent::FenceFailed("rank 3 left".into()));
        round_to(ToAgent::Signal(10));
        round_to(ToAgent::Stop { grace_ms: 200 });
        round_to(ToAgent::Heartbeat);
        round_to(ToAgent::Exit);
        round_to(ToAgent::FsServe {
            dir: OsString::from_vec(b"/tmp/fs \xff".to_vec()),
            servers: 3,
            fsid: [9; 16],
        });
        round_to(ToAgent::FsAddrs {
            fsid: [4; 16],
            addrs: vec!["198.18.0.2:4000".into(), "[::1]:5".into()],
        });
        round_to(ToAgent::FsAddrs {
            fsid: [0; 16],
            addrs: vec![],
        });
        round_from(FromAgent::FsUp {
            fsid: [5; 16],
            addr: "127.0.0.1:9".into(),
        });
        round_from(FromAgent::FsFailed("target of another file system".into()));
        round_from(FromAgent::Announce {
            rank: 0,
            key: "dos.ckpt.restored".into(),
            value: b"heat v3 (L2)".to_vec(),
        });
        round_from(FromAgent::Started { rank: 5, pid: 1234 });
        round_from(FromAgent::StartFailed {
            rank: 5,
            status: 127,
            why: "no such file".into(),
        });
        round_from(FromAgent::Output {
            rank: 1,
            stream: 2,
            data: vec![],
        });
        for cause in [
            ExitCause::Exited(3),
            ExitCause::Signaled {
                sig: 11,
                core: true,
            },
        ] {
            round_from(FromAgent::Exited { rank: 2, cause });
        }
        round_from(FromAgent::FenceEnter(vec![("k".into(), b"v".to_vec())]));
        round_from(FromAgent::Left { rank: 9 });
        round_from(FromAgent::Abort {
            rank: 1,
            code: -1,
            msg: "bye".into(),
        });
        round_from(FromAgent::Log("dosrun: x".into()));
        round_from(FromAgent::Heartbeat);
        round_from(FromAgent::Stopped { rank: 4, sig: 19 });
        round_from(FromAgent::Stopped { rank: 4, sig: 0 });
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(split_frame(b"GET").is_err());
        assert!(split_frame(&[b'D', b'C', 2]).is_err());
        assert_eq!(split_frame(b"DC").unwrap(), None);
        assert_eq!(split_frame(&[b'D', b'C', 1, 6, 1, 0]).unwrap(), None);
        assert!(split_frame(&[b'D', b'C', 1, 6, 0xff, 0xff, 0xff, 0xff]).is_err());
        let h = |kind, len| Header { kind, len };
        // A list count larger than the frame.
        assert!(ToAgent::decode(h(kind::FENCE_DONE, 4), &[0xff, 0xff, 0, 0]).is_err());
        // Trailing bytes, truncated bodies, wrong direction, unknown kinds.
        assert!(ToAgent::decode(h(kind::HEARTBEAT_DOWN, 1), &[0]).is_err());
        assert!(FromAgent::decode(h(kind::STARTED, 3), &[0, 0, 0]).is_err());
        assert!(FromAgent::decode(h(kind::STOP, 4), &[0; 4]).is_err());
        assert!(ToAgent::decode(h(kind::STARTED, 8), &[0; 8]).is_err());
        assert!(ToAgent::decode(h(0x42, 0), &[]).is_err());
        assert!(FromAgent::decode(h(kind::OUTPUT, 9), &[0, 0, 0, 0, 3, 0, 0, 0, 0]).is_err());
        assert!(FromAgent::decode(h(kind::LOG, 5), &[1, 0, 0, 0, 0xff]).is_err());
        // Every prefix of a valid frame is incomplete, not an error.
        let b = to_bytes(&ToAgent::Assign(Box::new(assign())));
        for n in 0..b.len() {
            assert_eq!(split_frame(&b[..n]).unwrap(), None, "prefix {n}");
        }
        // Every truncated body is an error, never a panic.
        let (hd, body, _) = split_frame(&b).unwrap().unwrap();
        for n in 0..body.len() {
            assert!(ToAgent::decode(hd, &body[..n]).is_err(), "body prefix {n}");
        }
        for m in [
            ToAgent::FsServe {
                dir: "/d".into(),
                servers: 2,
                fsid: [1; 16],
            },
            ToAgent::FsAddrs {
                fsid: [1; 16],
                addrs: vec!["a:1".into(), "b:2".into()],
            },
        ] {
            let b = to_bytes(&m);
            let (hd, body, _) = split_frame(&b).unwrap().unwrap();
            for n in 0..body.len() {
                assert!(ToAgent::decode(hd, &body[..n]).is_err(), "{m:?} prefix {n}");
            }
        }
        let b = from_bytes(&FromAgent::FsUp {
            fsid: [3; 16],
            addr: "x:1".into(),
        });
        let (hd, body, _) = split_frame(&b).unwrap().unwrap();
        for n in 0..body.len() {
            assert!(
                FromAgent::decode(hd, &body[..n]).is_err(),
                "FsUp prefix {n}"
            );
        }
        // An address list longer than the frame.
        let h = Header {
            kind: kind::FS_ADDRS,
            len: 20,
        };
        let mut body = vec![0u8; 16];
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        assert!(ToAgent::decode(h, &body).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = split_frame(&b);
            if let Some((&k, body)) = b.split_first() {
                let h = Header { kind: k, len: body.len() };
                let _ = ToAgent::decode(h, body);
                let _ = FromAgent::decode(h, body);
            }
        }

        #[test]
        fn valid_headers_with_random_bodies_never_panic(
            k in prop_oneof![0x01u8..=0x09, 0x81u8..=0x8c],
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let h = Header { kind: k, len: body.len() };
            let _ = ToAgent::decode(h, &body);
            let _ = FromAgent::decode(h, &body);
        }

        #[test]
        fn outputs_and_puts_round_trip(
            rank in any::<u32>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key in "[a-z0-9.]{1,20}",
        ) {
            let m = FromAgent::Output { rank, stream: 1, data: data.clone() };
            let b = from_bytes(&m);
            let (h, body, _) = split_frame(&b).unwrap().unwrap();
            prop_assert_eq!(FromAgent::decode(h, body).unwrap(), m);
            let m = ToAgent::FenceDone(vec![(key, data)]);
            let b = to_bytes(&m);
            let (h, body, _) = split_frame(&b).unwrap().unwrap();
            prop_assert_eq!(ToAgent::decode(h, body).unwrap(), m);
        }
    }
}
