//! PMI-2's wire protocol, as Slurm's `mpi/pmi2` plug-in and MPICH's PMI-2
//! client speak it. Sans I/O: bytes in, bytes out.
//!
//! A message is a 6-byte header, the length of the body in ASCII decimal
//! padded with spaces (on the right as Slurm writes it, `"22    "`, or on
//! the left as MPICH's hydra does, `"    22"`; both are read), then the body:
//! `key=value;` pairs, the first being `cmd=NAME;`. A `;` inside a value is
//! doubled (`;;`). [`decode`] reads one message into a [`Message`] (its
//! pairs, in order), [`Message::encode`] writes one, and [`Command`] is the
//! typed view of what a rank sends:
//!
//! | command | fields | response |
//! | --- | --- | --- |
//! | `fullinit` | `pmirank`, `pmiversion`, `pmisubversion` | `fullinit-response`: `rank`, `size`, `appnum`, `spawner-jobid`, `debugged`, `pmiverbose`, `rc` |
//! | `job-getid` | | `job-getid-response`: `jobid`, `rc` |
//! | `kvs-put` | `key`, `value` | `kvs-put-response`: `rc` |
//! | `kvs-fence` | | `kvs-fence-response`: `rc` |
//! | `kvs-get` | `jobid`, `srcid`, `key` | `kvs-get-response`: `found`, `value`, `rc` |
//! | `info-getjobattr` | `key` | `info-getjobattr-response`: `found`, `value`, `rc` |
//! | `info-getnodeattr` | `key`, `wait` | `info-getnodeattr-response`: `found`, `value`, `rc` |
//! | `info-putnodeattr` | `key`, `value` | `info-putnodeattr-response`: `rc` |
//! | `finalize` | | `finalize-response`: `rc` |
//! | `abort` | `isworld`, `msg` | none |
//!
//! Bodies are at most [`MAX_BODY`] bytes, with at most [`MAX_PAIRS`]
//! pairs; the length is checked before anything is allocated. A malformed
//! header, body or command is a [`Pmi2Error`]; decoding never panics.

/// Size of the length header.
pub const HEADER_LEN: usize = 6;
/// Largest body accepted.
pub const MAX_BODY: usize = 64 << 10;
/// Most pairs in one message.
pub const MAX_PAIRS: usize = 64;

/// Why bytes are not a valid PMI-2 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pmi2Error {
    /// The header is not a decimal length padded with spaces.
    #[error("bad length header {header:?}")]
    BadHeader {
        /// The header bytes, as text (lossy).
        header: String,
    },
    /// The length is above [`MAX_BODY`].
    #[error("body of {len} bytes is larger than {MAX_BODY}")]
    TooLong {
        /// The length announced.
        len: usize,
    },
    /// The body is not UTF-8.
    #[error("body is not UTF-8")]
    NotUtf8,
    /// A pair has no `=`, an empty key, or the body does not end with `;`.
    #[error("malformed pair at byte {at}")]
    BadPair {
        /// Where in the body.
        at: usize,
    },
    /// More than [`MAX_PAIRS`] pairs.
    #[error("more than {MAX_PAIRS} pairs")]
    TooManyPairs,
    /// The first pair is not `cmd=...`.
    #[error("the message does not start with cmd=")]
    NoCmd,
    /// A command this codec does not know.
    #[error("unknown command {cmd:?}")]
    Unknown {
        /// Its name (cut to 64 bytes).
        cmd: String,
    },
    /// A field the command needs is missing.
    #[error("cmd={cmd}: field {field} is missing")]
    Missing {
        /// The command.
        cmd: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field does not parse (a number, a boolean).
    #[error("cmd={cmd}: field {field} has a bad value")]
    BadValue {
        /// The command.
        cmd: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A key to encode holds `=` or `;`, or the body would be too long.
    #[error("cannot encode: {why}")]
    Unencodable {
        /// Why.
        why: &'static str,
    },
}

/// One message: its pairs in order, `cmd` first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The pairs, unescaped.
    pub pairs: Vec<(String, String)>,
}

impl Message {
    /// A message `cmd=NAME;` followed by `pairs`.
    pub fn new(cmd: &str, pairs: &[(&str, &str)]) -> Self {
        let mut m = Message {
            pairs: vec![("cmd".into(), cmd.into())],
        };
        m.pairs
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        m
    }

    /// Its command name.
    pub fn cmd(&self) -> &str {
        self.pairs.first().map_or("", |(_, v)| v.as_str())
    }

    /// The first value of `key` (`cmd` excluded).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .skip(1)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Appends the message, header included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Pmi2Error> {
        let mut body = String::new();
        for (k, v) in &self.pairs {
            if k.is_empty() || k.contains(['=', ';']) {
                return Err(Pmi2Error::Unencodable {
                    why: "a key is empty or holds '=' or ';'",
                });
            }
            body.push_str(k);
            body.push('=');
            body.push_str(&v.replace(';', ";;"));
            body.push(';');
        }
        if body.len() > MAX_BODY {
            return Err(Pmi2Error::Unencodable {
                why: "the body would be too long",
            });
        }
        out.extend_from_slice(format!("{:<6}", body.len()).as_bytes());
        out.extend_from_slice(body.as_bytes());
        Ok(())
    }
}

/// Reads one message from the start of `buf`: `Ok(None)` if it is not all
/// there yet, else the message and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, Pmi2Error> {
    if buf.len() < HEADER_LEN {
        // A header that is already wrong is refused at once.
        check_header_prefix(buf)?;
        return Ok(None);
    }
    let len = header_len(&buf[..HEADER_LEN])?;
    if len > MAX_BODY {
        return Err(Pmi2Error::TooLong { len });
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let body = std::str::from_utf8(body).map_err(|_| Pmi2Error::NotUtf8)?;
    Ok(Some((parse_body(body)?, HEADER_LEN + len)))
}

fn bad_header(h: &[u8]) -> Pmi2Error {
    Pmi2Error::BadHeader {
        header: String::from_utf8_lossy(h).into_owned(),
    }
}

/// The digits of a header or of its first bytes: spaces, decimal digits,
/// spaces (Slurm pads on the right, `%-6d`; MPICH's hydra on the left,
/// `%6d`). A complete header needs a digit.
fn header_digits(h: &[u8]) -> Result<&[u8], Pmi2Error> {
    let lead = h.iter().take_while(|&&b| b == b' ').count();
    let digits = h[lead..].iter().take_while(|b| b.is_ascii_digit()).count();
    if h[lead + digits..].iter().any(|&b| b != b' ') || (digits == 0 && lead + digits < h.len()) {
        return Err(bad_header(h));
    }
    Ok(&h[lead..lead + digits])
}

fn check_header_prefix(h: &[u8]) -> Result<(), Pmi2Error> {
    header_digits(h).map(drop)
}

fn header_len(h: &[u8]) -> Result<usize, Pmi2Error> {
    let digits = header_digits(h)?;
    if digits.is_empty() {
        return Err(bad_header(h));
    }
    // At most 6 digits: no overflow.
    Ok(digits
        .iter()
        .fold(0usize, |a, &b| a * 10 + usize::from(b - b'0')))
}

fn parse_body(body: &str) -> Result<Message, Pmi2Error> {
    let b = body.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if pairs.len() == MAX_PAIRS {
            return Err(Pmi2Error::TooManyPairs);
        }
        let start = i;
        let eq = body[i..]
            .find(['=', ';'])
            .map(|p| p + i)
            .filter(|&p| b[p] == b'=' && p > start)
            .ok_or(Pmi2Error::BadPair { at: start })?;
        let key = &body[start..eq];
        i = eq + 1;
        let mut value = String::new();
        loop {
            match body[i..].find(';') {
                None => return Err(Pmi2Error::BadPair { at: start }),
                Some(p) => {
                    value.push_str(&body[i..i + p]);
                    i += p + 1;
                    if b.get(i) == Some(&b';') {
                        value.push(';');
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        pairs.push((key.to_string(), value));
    }
    if pairs.first().is_none_or(|(k, _)| k != "cmd") {
        return Err(Pmi2Error::NoCmd);
    }
    Ok(Message { pairs })
}

/// What a rank sends, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `fullinit`.
    FullInit {
        /// `pmirank`.
        rank: u32,
        /// `pmiversion`.
        version: u32,
        /// `pmisubversion`.
        subversion: u32,
    },
    /// `job-getid`.
    JobGetId,
    /// `kvs-put`.
    KvsPut {
        /// `key`.
        key: String,
        /// `value`.
        value: String,
    },
    /// `kvs-fence`.
    KvsFence,
    /// `kvs-get`.
    KvsGet {
        /// `jobid`, if given.
        jobid: Option<String>,
        /// `srcid` (-1 when not given).
        srcid: i64,
        /// `key`.
        key: String,
    },
    /// `info-getjobattr`.
    GetJobAttr {
        /// `key`.
        key: String,
    },
    /// `info-getnodeattr`.
    GetNodeAttr {
        /// `key`.
        key: String,
        /// `wait`.
        wait: bool,
    },
    /// `info-putnodeattr`.
    PutNodeAttr {
        /// `key`.
        key: String,
        /// `value`.
        value: String,
    },
    /// `finalize`.
    Finalize,
    /// `abort`.
    Abort {
        /// `isworld`.
        world: bool,
        /// `msg`.
        msg: String,
    },
}

fn field<'a>(m: &'a Message, cmd: &'static str, f: &'static str) -> Result<&'a str, Pmi2Error> {
    m.get(f).ok_or(Pmi2Error::Missing { cmd, field: f })
}

fn num<T: std::str::FromStr>(
    m: &Message,
    cmd: &'static str,
    f: &'static str,
) -> Result<T, Pmi2Error> {
    field(m, cmd, f)?
        .parse()
        .map_err(|_| Pmi2Error::BadValue { cmd, field: f })
}

fn boolean(v: &str, cmd: &'static str, f: &'static str) -> Result<bool, Pmi2Error> {
    match v {
        "TRUE" | "true" => Ok(true),
        "FALSE" | "false" => Ok(false),
        _ => Err(Pmi2Error::BadValue { cmd, field: f }),
    }
}

fn flag(b: bool) -> &'static str {
    if b {
        "TRUE"
    } else {
        "FALSE"
    }
}

impl Command {
    /// The typed view of `m`.
    pub fn from_message(m: &Message) -> Result<Self, Pmi2Error> {
        let s = |f: &'static str, cmd| field(m, cmd, f).map(str::to_string);
        Ok(match m.cmd() {
            "fullinit" => Command::FullInit {
                rank: num(m, "fullinit", "pmirank")?,
                version: num(m, "fullinit", "pmiversion")?,
                subversion: num(m, "fullinit", "pmisubversion")?,
            },
            "job-getid" => Command::JobGetId,
            "kvs-put" => Command::KvsPut {
                key: s("key", "kvs-put")?,
                value: s("value", "kvs-put")?,
            },
            "kvs-fence" => Command::KvsFence,
            "kvs-get" => Command::KvsGet {
                jobid: m.get("jobid").map(str::to_string),
                srcid: match m.get("srcid") {
                    None => -1,
                    Some(_) => num(m, "kvs-get", "srcid")?,
                },
                key: s("key", "kvs-get")?,
            },
            "info-getjobattr" => Command::GetJobAttr {
                key: s("key", "info-getjobattr")?,
            },
            "info-getnodeattr" => Command::GetNodeAttr {
                key: s("key", "info-getnodeattr")?,
                wait: match m.get("wait") {
                    None => false,
                    Some(v) => boolean(v, "info-getnodeattr", "wait")?,
                },
            },
            "info-putnodeattr" => Command::PutNodeAttr {
                key: s("key", "info-putnodeattr")?,
                value: s("value", "info-putnodeattr")?,
            },
            "finalize" => Command::Finalize,
            "abort" => Command::Abort {
                world: match m.get("isworld") {
                    None => true,
                    Some(v) => boolean(v, "abort", "isworld")?,
                },
                msg: m.get("msg").unwrap_or_default().to_string(),
            },
            other => {
                let mut end = other.len().min(64);
                while !other.is_char_boundary(end) {
                    end -= 1;
                }
                return Err(Pmi2Error::Unknown {
                    cmd: other[..end].to_string(),
                });
            }
        })
    }

    /// The message that carries it.
    pub fn to_message(&self) -> Message {
        match self {
            Command::FullInit {
                rank,
                version,
                subversion,
            } => Message::new(
                "fullinit",
                &[
                    ("pmirank", &rank.to_string()),
                    ("pmiversion", &version.to_string()),
                    ("pmisubversion", &subversion.to_string()),
                ],
            ),
            Command::JobGetId => Message::new("job-getid", &[]),
            Command::KvsPut { key, value } => {
                Message::new("kvs-put", &[("key", key), ("value", value)])
            }
            Command::KvsFence => Message::new("kvs-fence", &[]),
            Command::KvsGet { jobid, srcid, key } => {
                let srcid = srcid.to_string();
                let mut p: Vec<(&str, &str)> = Vec::new();
                if let Some(j) = jobid {
                    p.push(("jobid", j));
                }
                p.push(("srcid", &srcid));
                p.push(("key", key));
                Message::new("kvs-get", &p)
            }
            Command::GetJobAttr { key } => Message::new("info-getjobattr", &[("key", key)]),
            Command::GetNodeAttr { key, wait } => {
                Message::new("info-getnodeattr", &[("key", key), ("wait", flag(*wait))])
            }
            Command::PutNodeAttr { key, value } => {
                Message::new("info-putnodeattr", &[("key", key), ("value", value)])
            }
            Command::Finalize => Message::new("finalize", &[]),
            Command::Abort { world, msg } => {
                Message::new("abort", &[("isworld", flag(*world)), ("msg", msg)])
            }
        }
    }
}

/// The response to `fullinit` for rank `rank` of `size` ranks.
pub fn fullinit_response(rank: u32, size: u32, jobid: &str) -> Message {
    Message::new(
        "fullinit-response",
        &[
            ("pmi-version", "2"),
            ("pmi-subversion", "0"),
            ("rank", &rank.to_string()),
            ("size", &size.to_string()),
            ("appnum", "0"),
            ("spawner-jobid", jobid),
            ("debugged", "FALSE"),
            ("pmiverbose", "FALSE"),
            ("rc", "0"),
        ],
    )
}

/// A response with a found flag and a value (`kvs-get`, `info-get*`).
pub fn found_response(cmd: &str, value: Option<&str>) -> Message {
    match value {
        Some(v) => Message::new(cmd, &[("rc", "0"), ("found", "TRUE"), ("value", v)]),
        None => Message::new(cmd, &[("rc", "0"), ("found", "FALSE")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(m: &Message) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v).unwrap();
        v
    }

    #[test]
    fn headers_padded_on_either_side_are_read() {
        // Hydra writes "%6d", Slurm "%-6d".
        for h in ["   13 ", "    13", "13    "] {
            let mut b = h.as_bytes().to_vec();
            b.extend_from_slice(b"cmd=finalize;");
            let (m, used) = decode(&b).unwrap().unwrap();
            assert_eq!((m.cmd(), used), ("finalize", 19), "{h:?}");
        }
        // Incomplete headers wait; wrong ones are refused at once.
        assert_eq!(decode(b"   "), Ok(None));
        assert_eq!(decode(b"  1"), Ok(None));
        for bad in [&b"      "[..], b" 1 2  ", b"x", b"  1x"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn messages_are_framed_as_slurm_does() {
        let m = Message::new("kvs-put", &[("key", "a"), ("value", "x;y")]);
        assert_eq!(bytes(&m), b"29    cmd=kvs-put;key=a;value=x;;y;");
        let (back, used) = decode(&bytes(&m)).unwrap().unwrap();
        assert_eq!((back, used), (m, 35));
        let c = Command::from_message(
            &decode(b"52    cmd=fullinit;pmirank=3;pmiversion=2;pmisubversion=0;")
                .unwrap()
                .unwrap()
                .0,
        );
        assert_eq!(
            c,
            Ok(Command::FullInit {
                rank: 3,
                version: 2,
                subversion: 0
            })
        );
        // Partial input waits; the rest stays.
        assert_eq!(decode(b"29 "), Ok(None));
        assert_eq!(decode(b"29    cmd=kvs-put"), Ok(None));
        let r = fullinit_response(1, 4, "j");
        assert!(r.get("size") == Some("4") && r.get("rc") == Some("0"));
        assert_eq!(
            found_response("kvs-get-response", None).get("found"),
            Some("FALSE")
        );
    }

    #[test]
    fn bad_messages_are_refused() {
        use Pmi2Error::*;
        let bad = |b: &[u8]| decode(b).unwrap_err();
        assert!(matches!(bad(b"x"), BadHeader { .. }));
        assert!(matches!(bad(b" 5 x  "), BadHeader { .. }));
        assert!(matches!(bad(b"1 2   "), BadHeader { .. }));
        assert_eq!(bad(b"999999"), TooLong { len: 999_999 });
        assert_eq!(bad(b"4     cmd="), BadPair { at: 0 });
        assert_eq!(bad(b"5     cmd=a"), BadPair { at: 0 });
        assert_eq!(bad(b"2     =;"), BadPair { at: 0 });
        assert_eq!(bad(b"4     a=b;"), NoCmd);
        assert_eq!(bad(b"0     "), NoCmd);
        assert_eq!(bad(b"2     \xff;"), NotUtf8);
        assert_eq!(bad(b"10    cmd=a;b;c;"), BadPair { at: 6 });
        let many = format!("cmd=x;{}", "a=1;".repeat(MAX_PAIRS));
        let mut v = format!("{:<6}", many.len()).into_bytes();
        v.extend_from_slice(many.as_bytes());
        assert_eq!(bad(&v), TooManyPairs);
        let m = |s: &str| Command::from_message(&decode(s.as_bytes()).unwrap().unwrap().0);
        assert_eq!(
            m("12    cmd=kvs-put;"),
            Err(Missing {
                cmd: "kvs-put",
                field: "key"
            })
        );
        assert_eq!(m("8     cmd=fly;"), Err(Unknown { cmd: "fly".into() }));
        assert_eq!(
            m("24    cmd=abort;isworld=maybe;"),
            Err(BadValue {
                cmd: "abort",
                field: "isworld"
            })
        );
        assert!(Message::new("x", &[("a;b", "")])
            .encode(&mut Vec::new())
            .is_err());
    }

    proptest! {
        #[test]
        fn commands_round_trip(key in "[a-zA-Z0-9_-]{1,20}", value in "[ -~]{0,60}",
                               rank in any::<u32>(), srcid in -1i64..100, w in any::<bool>()) {
            for c in [
                Command::FullInit { rank, version: 2, subversion: 0 },
                Command::JobGetId, Command::KvsFence, Command::Finalize,
                Command::KvsPut { key: key.clone(), value: value.clone() },
                Command::KvsGet { jobid: Some(value.clone()), srcid, key: key.clone() },
                Command::KvsGet { jobid: None, srcid, key: key.clone() },
                Command::GetJobAttr { key: key.clone() },
                Command::GetNodeAttr { key: key.clone(), wait: w },
                Command::PutNodeAttr { key: key.clone(), value: value.clone() },
                Command::Abort { world: w, msg: value.clone() },
            ] {
                let b = bytes(&c.to_message());
                let (m, used) = decode(&b).unwrap().unwrap();
                prop_assert_eq!(used, b.len());
                prop_assert_eq!(Command::from_message(&m), Ok(c));
                // Any prefix is incomplete, never an error.
                prop_assert_eq!(decode(&b[..b.len() - 1]), Ok(None));
            }
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some((m, used))) = decode(&b) {
                prop_assert!(used <= b.len());
                let _ = Command::from_message(&m);
            }
        }
    }
}
