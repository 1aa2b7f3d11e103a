//! Frames of the wire-up protocol between a rank and `dosrun`.
//!
//! Every frame is an 8-byte header followed by a body of `len` bytes:
//!
//! ```text
//! offset  size  field
//!      0     2  magic, b"DW"
//!      2     1  version, VERSION (2)
//!      3     1  kind: 0x02..=0x06 requests, 0x81..=0x85 replies
//!      4     4  len: body length, u32 little-endian, at most MAX_BODY
//! ```
//!
//! Bodies (all integers little-endian, strings UTF-8, no trailing bytes):
//!
//! | kind | frame | body |
//! | --- | --- | --- |
//! | 0x02 | `Put` | key_len u16, key, value_len u32, value |
//! | 0x03 | `Fence` | empty |
//! | 0x04 | `Get` | key_len u16, key |
//! | 0x05 | `Abort` | code i32, msg_len u32, msg |
//! | 0x06 | `Finalize` | empty |
//! | 0x81 | `Ok` | empty |
//! | 0x82 | `Value` | the value (the whole body) |
//! | 0x83 | `NotFound` | empty |
//! | 0x84 | `FenceDone` | empty |
//! | 0x85 | `Error` | message (the whole body) |
//!
//! Frames start after the connection's authentication: the rank and the
//! service first run the HMAC challenge-response of
//! [`dos_transport::auth`] with the job's secret and the context
//! [`super::auth_context`] (the rank's id is its rank, the service's
//! [`super::SERVICE_ID`]). Version 1 had a `Hello` frame (0x01) carrying a
//! 64-bit secret in clear; that kind is now unknown.
//!
//! Decoding never panics and never allocates: a short, oversized or malformed
//! frame is an [`Error::WireupProtocol`].

use crate::{Error, Result};
use dos_transport::codec::{CodecError, Reader};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"DW";
/// Protocol version carried in every header.
pub const VERSION: u8 = 2;
/// Size of the frame header.
pub const HEADER_LEN: usize = 8;
/// Largest body accepted; a larger length is rejected before any allocation.
pub const MAX_BODY: usize = 1 << 20;
/// Longest key.
pub const MAX_KEY: usize = 1024;
/// Longest abort or error message.
pub const MAX_MSG: usize = 4096;
/// Largest value that fits a `Put` with the longest key.
pub const MAX_VALUE: usize = MAX_BODY - 2 - MAX_KEY - 4;

/// Frame kinds.
pub mod kind {
    /// `Put` request.
    pub const PUT: u8 = 0x02;
    /// `Fence` request.
    pub const FENCE: u8 = 0x03;
    /// `Get` request.
    pub const GET: u8 = 0x04;
    /// `Abort` request.
    pub const ABORT: u8 = 0x05;
    /// `Finalize` request.
    pub const FINALIZE: u8 = 0x06;
    /// `Ok` reply.
    pub const OK: u8 = 0x81;
    /// `Value` reply.
    pub const VALUE: u8 = 0x82;
    /// `NotFound` reply.
    pub const NOT_FOUND: u8 = 0x83;
    /// `FenceDone` reply.
    pub const FENCE_DONE: u8 = 0x84;
    /// `Error` reply.
    pub const ERROR: u8 = 0x85;
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame kind (see [`kind`]).
    pub kind: u8,
    /// Body length, at most [`MAX_BODY`].
    pub len: usize,
}

impl Header {
    /// Decodes and checks a header from the first [`HEADER_LEN`] bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<Header> {
        let h: &[u8; HEADER_LEN] = b
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(bad("short header"))?;
        if h[0..2] != MAGIC {
            return Err(bad("bad magic"));
        }
        if h[2] != VERSION {
            return Err(bad("unsupported protocol version"));
        }
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        if len > MAX_BODY {
            return Err(bad("frame too large"));
        }
        Ok(Header { kind: h[3], len })
    }

    fn encode(kind: u8, len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind);
        // `len <= MAX_BODY` is checked by every caller.
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
}

/// Splits the first complete frame off `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more),
/// `Ok(Some((header, body, consumed)))` for a complete one, and an error when
/// the header is invalid (the stream cannot be resynchronised: close it).
pub fn split_frame(buf: &[u8]) -> Result<Option<(Header, &[u8], usize)>> {
    if buf.len() < HEADER_LEN {
        // Reject garbage as early as its first bytes allow.
        let n = buf.len().min(2);
        if buf[..n] != MAGIC[..n] {
            return Err(bad("bad magic"));
        }
        if buf.len() > 2 && buf[2] != VERSION {
            return Err(bad("unsupported protocol version"));
        }
        return Ok(None);
    }
    let h = Header::decode(buf)?;
    let end = HEADER_LEN + h.len;
    match buf.get(HEADER_LEN..end) {
        Some(body) => Ok(Some((h, body, end))),
        None => Ok(None),
    }
}

/// A request from a rank to the wire-up service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Publishes `value` under `key`, visible after the next fence.
    Put {
        /// The key, at most [`MAX_KEY`] bytes.
        key: &'a str,
        /// The value.
        value: &'a [u8],
    },
    /// Waits until every rank has entered the fence.
    Fence,
    /// Reads the value of `key`.
    Get {
        /// The key.
        key: &'a str,
    },
    /// Asks the launcher to stop the whole job with exit status `code`.
    Abort {
        /// The job's exit status.
        code: i32,
        /// Why, at most [`MAX_MSG`] bytes.
        msg: &'a str,
    },
    /// The rank is done with the wire-up service.
    Finalize,
}

/// A reply of the wire-up service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The request succeeded.
    Ok,
    /// The value of the key asked for.
    Value(&'a [u8]),
    /// No such key before the last fence.
    NotFound,
    /// The fence completed.
    FenceDone,
    /// The request failed; the message says why.
    Error(&'a str),
}

impl Request<'_> {
    /// Appends the frame to `out`. Fails, leaving `out` unchanged, when a
    /// field exceeds its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match *self {
            Request::Put { key, value } => {
                check_key("put", key)?;
                if value.len() > MAX_VALUE {
                    return Err(Error::InvalidArgument {
                        op: "put",
                        reason: "value longer than pmi::wire::MAX_VALUE",
                    });
                }
                Header::encode(kind::PUT, 2 + key.len() + 4 + value.len(), out);
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            Request::Fence => Header::encode(kind::FENCE, 0, out),
            Request::Get { key } => {
                check_key("get", key)?;
                Header::encode(kind::GET, 2 + key.len(), out);
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key.as_bytes());
            }
            Request::Abort { code, msg } => {
                if msg.len() > MAX_MSG {
                    return Err(Error::InvalidArgument {
                        op: "abort",
                        reason: "message longer than pmi::wire::MAX_MSG",
                    });
                }
                Header::encode(kind::ABORT, 4 + 4 + msg.len(), out);
                out.extend_from_slice(&code.to_le_bytes());
                out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
                out.extend_from_slice(msg.as_bytes());
            }
            Request::Finalize => Header::encode(kind::FINALIZE, 0, out),
        }
        Ok(())
    }
}

impl<'a> Request<'a> {
    /// Decodes the body of a request frame of kind `h.kind`.
    pub fn decode(h: Header, body: &'a [u8]) -> Result<Request<'a>> {
        if body.len() != h.len {
            return Err(bad("body length disagrees with header"));
        }
        let mut r = Reader::new(body);
        let req = match h.kind {
            kind::PUT => {
                let key = key(&mut r)?;
                Request::Put {
                    key,
                    value: r.bytes32().map_err(codec)?,
                }
            }
            kind::FENCE => Request::Fence,
            kind::GET => Request::Get { key: key(&mut r)? },
            kind::ABORT => {
                let code = r.i32().map_err(codec)?;
                let msg = r.bytes32().map_err(codec)?;
                if msg.len() > MAX_MSG {
                    return Err(bad("abort message too long"));
                }
                Request::Abort {
                    code,
                    msg: utf8(msg)?,
                }
            }
            kind::FINALIZE => Request::Finalize,
            kind::OK..=kind::ERROR => return Err(bad("reply where a request was expected")),
            _ => return Err(bad("unknown frame kind")),
        };
        r.end().map_err(codec)?;
        Ok(req)
    }
}

impl Reply<'_> {
    /// Appends the frame to `out`. Fails, leaving `out` unchanged, when the
    /// value or message exceeds its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match *self {
            Reply::Ok => Header::encode(kind::OK, 0, out),
            Reply::Value(v) => {
                if v.len() > MAX_BODY {
                    return Err(Error::InvalidArgument {
                        op: "reply",
                        reason: "value longer than pmi::wire::MAX_BODY",
                    });
                }
                Header::encode(kind::VALUE, v.len(), out);
                out.extend_from_slice(v);
            }
            Reply::NotFound => Header::encode(kind::NOT_FOUND, 0, out),
            Reply::FenceDone => Header::encode(kind::FENCE_DONE, 0, out),
            Reply::Error(m) => {
                if m.len() > MAX_MSG {
                    return Err(Error::InvalidArgument {
                        op: "reply",
                        reason: "message longer than pmi::wire::MAX_MSG",
                    });
                }
                Header::encode(kind::ERROR, m.len(), out);
                out.extend_from_slice(m.as_bytes());
            }
        }
        Ok(())
    }
}

impl<'a> Reply<'a> {
    /// Decodes the body of a reply frame of kind `h.kind`.
    pub fn decode(h: Header, body: &'a [u8]) -> Result<Reply<'a>> {
        if body.len() != h.len {
            return Err(bad("body length disagrees with header"));
        }
        let empty = |r: Reply<'a>| {
            if body.is_empty() {
                Ok(r)
            } else {
                Err(bad("trailing bytes in frame"))
            }
        };
        match h.kind {
            kind::OK => empty(Reply::Ok),
            kind::VALUE => Ok(Reply::Value(body)),
            kind::NOT_FOUND => empty(Reply::NotFound),
            kind::FENCE_DONE => empty(Reply::FenceDone),
            kind::ERROR => {
                if body.len() > MAX_MSG {
                    return Err(bad("error message too long"));
                }
                Ok(Reply::Error(utf8(body)?))
            }
            kind::PUT..=kind::FINALIZE => Err(bad("request where a reply was expected")),
            _ => Err(bad("unknown frame kind")),
        }
    }
}

fn bad(reason: &'static str) -> Error {
    Error::WireupProtocol { reason }
}

fn check_key(op: &'static str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(Error::InvalidArgument {
            op,
            reason: "key must be 1 to pmi::wire::MAX_KEY bytes",
        });
    }
    Ok(())
}

fn utf8(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| bad("string is not UTF-8"))
}

/// A key: its length as a `u16` (1 to [`MAX_KEY`]), then UTF-8.
fn key<'a>(r: &mut Reader<'a>) -> Result<&'a str> {
    let b = r.bytes16().map_err(codec)?;
    if b.is_empty() || b.len() > MAX_KEY {
        return Err(bad("key length out of range"));
    }
    utf8(b)
}

fn codec(e: CodecError) -> Error {
    bad(e.reason())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req_bytes(r: Request<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        r.encode(&mut v).unwrap();
        v
    }

    fn rep_bytes(r: Reply<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        r.encode(&mut v).unwrap();
        v
    }

    fn decode_req(b: &[u8]) -> Result<Request<'_>> {
        let (h, body, used) = split_frame(b)?.ok_or(bad("incomplete"))?;
        assert_eq!(used, b.len());
        Request::decode(h, body)
    }

    fn decode_rep(b: &[u8]) -> Result<Reply<'_>> {
        let (h, body, used) = split_frame(b)?.ok_or(bad("incomplete"))?;
        assert_eq!(used, b.len());
        Reply::decode(h, body)
    }

    #[test]
    fn golden_requests() {
        assert_eq!(
            req_bytes(Request::Put {
                key: "ab",
                value: &[0xff, 0]
            }),
            [b'D', b'W', 2, 0x02, 10, 0, 0, 0, 2, 0, b'a', b'b', 2, 0, 0, 0, 0xff, 0]
        );
        assert_eq!(req_bytes(Request::Fence), [b'D', b'W', 2, 0x03, 0, 0, 0, 0]);
        assert_eq!(
            req_bytes(Request::Get { key: "k" }),
            [b'D', b'W', 2, 0x04, 3, 0, 0, 0, 1, 0, b'k']
        );
        assert_eq!(
            req_bytes(Request::Abort { code: -2, msg: "x" }),
            [b'D', b'W', 2, 0x05, 9, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 1, 0, 0, 0, b'x']
        );
        assert_eq!(
            req_bytes(Request::Finalize),
            [b'D', b'W', 2, 0x06, 0, 0, 0, 0]
        );
    }

    #[test]
    fn golden_replies() {
        assert_eq!(rep_bytes(Reply::Ok), [b'D', b'W', 2, 0x81, 0, 0, 0, 0]);
        assert_eq!(
            rep_bytes(Reply::Value(&[9, 8, 7])),
            [b'D', b'W', 2, 0x82, 3, 0, 0, 0, 9, 8, 7]
        );
        assert_eq!(
            rep_bytes(Reply::NotFound),
            [b'D', b'W', 2, 0x83, 0, 0, 0, 0]
        );
        assert_eq!(
            rep_bytes(Reply::FenceDone),
            [b'D', b'W', 2, 0x84, 0, 0, 0, 0]
        );
        assert_eq!(
            rep_bytes(Reply::Error("no")),
            [b'D', b'W', 2, 0x85, 2, 0, 0, 0, b'n', b'o']
        );
    }

    #[test]
    fn round_trips() {
        let reqs = [
            Request::Put {
                key: "clé",
                value: b"",
            },
            Request::Put {
                key: "k",
                value: &[1; 300],
            },
            Request::Fence,
            Request::Get { key: "shm-addr-7" },
            Request::Abort {
                code: i32::MIN,
                msg: "",
            },
            Request::Finalize,
        ];
        for r in reqs {
            assert_eq!(decode_req(&req_bytes(r)).unwrap(), r);
        }
        let reps = [
            Reply::Ok,
            Reply::Value(b""),
            Reply::Value(b"hello"),
            Reply::NotFound,
            Reply::FenceDone,
            Reply::Error("bad rank"),
        ];
        for r in reps {
            assert_eq!(decode_rep(&rep_bytes(r)).unwrap(), r);
        }
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let b = req_bytes(Request::Get { key: "key" });
        for n in 0..b.len() {
            assert_eq!(split_frame(&b[..n]).unwrap(), None, "prefix of {n}");
        }
        let mut two = b.clone();
        two.extend_from_slice(&b);
        let (_, _, used) = split_frame(&two).unwrap().unwrap();
        assert_eq!(used, b.len());
    }

    #[test]
    fn bad_frames_are_errors() {
        let err = |b: &[u8]| matches!(split_frame(b), Err(Error::WireupProtocol { .. }));
        assert!(err(b"GET /"));
        assert!(err(b"DX"));
        assert!(err(&[b'D', b'W', 3]));
        // Oversized length: rejected from the header alone.
        assert!(err(&[b'D', b'W', 2, 0x02, 0x01, 0x00, 0x10, 0x00]));
        // Valid header, bad bodies.
        let bad_req = |b: &[u8]| {
            matches!(
                split_frame(b)
                    .unwrap()
                    .map(|(h, body, _)| Request::decode(h, body)),
                Some(Err(Error::WireupProtocol { .. }))
            )
        };
        assert!(bad_req(&[
            b'D', b'W', 2, 0x01, 12, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8
        ])); // version 1's hello
        assert!(err(&[b'D', b'W', 1, 0x02, 0, 0, 0, 0])); // version 1
        assert!(bad_req(&[b'D', b'W', 2, 0x03, 1, 0, 0, 0, 0])); // fence with a body
        assert!(bad_req(&[b'D', b'W', 2, 0x04, 2, 0, 0, 0, 0, 0])); // empty key
        assert!(bad_req(&[b'D', b'W', 2, 0x04, 3, 0, 0, 0, 5, 0, b'k'])); // key past body
        assert!(bad_req(&[
            b'D', b'W', 2, 0x04, 4, 0, 0, 0, 2, 0, 0xff, 0xfe
        ])); // not UTF-8
        assert!(bad_req(&[b'D', b'W', 2, 0x81, 0, 0, 0, 0])); // reply as request
        assert!(bad_req(&[b'D', b'W', 2, 0x42, 0, 0, 0, 0])); // unknown kind
        let (h, body, _) = split_frame(&[b'D', b'W', 2, 0x03, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert!(Reply::decode(h, body).is_err()); // request as reply
        assert!(Reply::decode(
            Header {
                kind: kind::OK,
                len: 1
            },
            &[0]
        )
        .is_err());
    }

    #[test]
    fn encode_limits_are_errors() {
        let mut out = Vec::new();
        let long_key = "k".repeat(MAX_KEY + 1);
        assert!(Request::Get { key: &long_key }.encode(&mut out).is_err());
        assert!(Request::Get { key: "" }.encode(&mut out).is_err());
        let big = vec![0u8; MAX_VALUE + 1];
        assert!(Request::Put {
            key: "k",
            value: &big
        }
        .encode(&mut out)
        .is_err());
        let long_msg = "m".repeat(MAX_MSG + 1);
        assert!(Request::Abort {
            code: 1,
            msg: &long_msg
        }
        .encode(&mut out)
        .is_err());
        assert!(out.is_empty());
        let max_key = "k".repeat(MAX_KEY);
        let max = vec![7u8; MAX_VALUE];
        let put = Request::Put {
            key: &max_key,
            value: &max,
        };
        put.encode(&mut out).unwrap();
        assert_eq!(out.len(), HEADER_LEN + MAX_BODY);
        assert_eq!(decode_req(&out).unwrap(), put);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = split_frame(&b);
            if !b.is_empty() {
                let h = Header { kind: b[0], len: b.len() - 1 };
                let _ = Request::decode(h, &b[1..]);
                let _ = Reply::decode(h, &b[1..]);
            }
        }

        #[test]
        fn valid_headers_with_random_bodies_never_panic(
            k in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut f = vec![b'D', b'W', VERSION, k];
            f.extend_from_slice(&(body.len() as u32).to_le_bytes());
            f.extend_from_slice(&body);
            if let Ok(Some((h, body, _))) = split_frame(&f) {
                let _ = Request::decode(h, body);
                let _ = Reply::decode(h, body);
            }
        }

        #[test]
        fn puts_round_trip(key in "[a-z0-9:/_-]{1,40}", value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let r = Request::Put { key: &key, value: &value };
            let b = req_bytes(r);
            prop_assert_eq!(decode_req(&b).unwrap(), r);
        }
    }
}
