//! PMI-1's "simple" wire protocol, as MPICH's `simple_pmi` client and its
//! launchers (hydra, dosrun) speak it. Sans I/O: lines in, lines out.
//!
//! Every message is one line of `key=value` pairs separated by single
//! spaces and ended by `\n`, the first pair being `cmd=NAME`. Values hold no
//! space, `=` is allowed in values (the first `=` of a pair separates). The
//! client (a rank) writes a [`Command`], the server (the launcher) answers
//! with a [`Response`], except that `abort` gets none:
//!
//! | command | response |
//! | --- | --- |
//! | `cmd=init pmi_version=1 pmi_subversion=1` | `cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0` |
//! | `cmd=get_maxes` | `cmd=maxes kvsname_max=K keylen_max=L vallen_max=V rc=0` |
//! | `cmd=get_appnum` | `cmd=appnum appnum=0 rc=0` |
//! | `cmd=get_universe_size` | `cmd=universe_size size=N rc=0` |
//! | `cmd=get_my_kvsname` | `cmd=my_kvsname kvsname=NAME rc=0` |
//! | `cmd=put kvsname=NAME key=K value=V` | `cmd=put_result rc=0 msg=success` |
//! | `cmd=get kvsname=NAME key=K` | `cmd=get_result rc=0 msg=success value=V` (`rc=-1` when not found) |
//! | `cmd=barrier_in` | `cmd=barrier_out` (once every rank entered) |
//! | `cmd=finalize` | `cmd=finalize_ack` |
//! | `cmd=abort exitcode=N [msg=TEXT]` | none |
//!
//! [`process_mapping`] writes the value of the key `PMI_process_mapping`,
//! which tells MPICH which ranks share a node.
//!
//! Lines are at most [`MAX_LINE`] bytes (newline excluded); a longer line,
//! a line that is not UTF-8, a missing or repeated field, a number that
//! does not parse or an unknown command is a [`SimpleError`]; parsing never
//! panics and borrows from the line.

use std::fmt::Write as _;

/// Longest line accepted, without its newline (MPICH's own lines are at
/// most 1024 bytes; hydra accepts more).
pub const MAX_LINE: usize = 4096;
/// Most `key=value` pairs in one line.
pub const MAX_PAIRS: usize = 16;

/// Why a line is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimpleError {
    /// No newline within [`MAX_LINE`] bytes.
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// The line is not UTF-8.
    #[error("line is not UTF-8")]
    NotUtf8,
    /// A word is not `key=value`, or a key is empty.
    #[error("{word:?} is not key=value")]
    NotPair {
        /// The word (cut to 64 bytes).
        word: String,
    },
    /// More than [`MAX_PAIRS`] pairs.
    #[error("more than {MAX_PAIRS} fields")]
    TooManyPairs,
    /// The first pair is not `cmd=...`.
    #[error("the line does not start with cmd=")]
    NoCmd,
    /// A command or response this codec does not know.
    #[error("unknown command {cmd:?}")]
    Unknown {
        /// Its name (cut to 64 bytes).
        cmd: String,
    },
    /// A field the message needs is missing.
    #[error("cmd={cmd}: field {field} is missing")]
    Missing {
        /// The command.
        cmd: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field appears twice.
    #[error("field {field:?} appears twice")]
    Repeated {
        /// The field (cut to 64 bytes).
        field: String,
    },
    /// A numeric field does not parse.
    #[error("cmd={cmd}: field {field}={value:?} is not a number")]
    BadNumber {
        /// The command.
        cmd: &'static str,
        /// The field.
        field: &'static str,
        /// Its value (cut to 64 bytes).
        value: String,
    },
    /// A value to encode holds a space, a newline or is too long.
    #[error("field {field} cannot be sent: {why}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// Why.
        why: &'static str,
    },
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Finds the first complete line of `buf`: returns it (without `\n`) and
/// the bytes it used, `Ok(None)` if no newline yet.
pub fn split_line(buf: &[u8]) -> Result<Option<(&str, usize)>, SimpleError> {
    let window = &buf[..buf.len().min(MAX_LINE + 1)];
    match window.iter().position(|&b| b == b'\n') {
        Some(n) => {
            let line = std::str::from_utf8(&buf[..n]).map_err(|_| SimpleError::NotUtf8)?;
            Ok(Some((line, n + 1)))
        }
        None if buf.len() > MAX_LINE => Err(SimpleError::TooLong),
        None => Ok(None),
    }
}

/// A line's pairs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pairs<'a> {
    cmd: &'a str,
    rest: Vec<(&'a str, &'a str)>,
}

impl<'a> Pairs<'a> {
    fn parse(line: &'a str) -> Result<Self, SimpleError> {
        if line.len() > MAX_LINE {
            return Err(SimpleError::TooLong);
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            let Some((k, v)) = word.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(SimpleError::NotPair { word: cut(word) });
            };
            if pairs.len() == MAX_PAIRS {
                return Err(SimpleError::TooManyPairs);
            }
            if pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(SimpleError::Repeated { field: cut(k) });
            }
            pairs.push((k, v));
        }
        match pairs.split_first() {
            Some((("cmd", cmd), rest)) => Ok(Pairs {
                cmd,
                rest: rest.to_vec(),
            }),
            _ => Err(SimpleError::NoCmd),
        }
    }

    fn opt(&self, field: &str) -> Option<&'a str> {
        self.rest.iter().find(|(k, _)| *k == field).map(|(_, v)| *v)
    }

    fn get(&self, cmd: &'static str, field: &'static str) -> Result<&'a str, SimpleError> {
        self.opt(field).ok_or(SimpleError::Missing { cmd, field })
    }

    fn num<T: std::str::FromStr>(
        &self,
        cmd: &'static str,
        field: &'static str,
    ) -> Result<T, SimpleError> {
        let v = self.get(cmd, field)?;
        v.parse().map_err(|_| SimpleError::BadNumber {
            cmd,
            field,
            value: cut(v),
        })
    }
}

/// A message from a rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `cmd=init`: the client's protocol version.
    Init {
        /// `pmi_version`.
        version: u32,
        /// `pmi_subversion`.
        subversion: u32,
    },
    /// `cmd=get_maxes`.
    GetMaxes,
    /// `cmd=get_appnum`.
    GetAppnum,
    /// `cmd=get_universe_size`.
    GetUniverseSize,
    /// `cmd=get_my_kvsname`.
    GetMyKvsname,
    /// `cmd=put`.
    Put {
        /// `kvsname`.
        kvsname: &'a str,
        /// `key`.
        key: &'a str,
        /// `value` (may be empty).
        value: &'a str,
    },
    /// `cmd=get`.
    Get {
        /// `kvsname`.
        kvsname: &'a str,
        /// `key`.
        key: &'a str,
    },
    /// `cmd=barrier_in`.
    BarrierIn,
    /// `cmd=finalize`.
    Finalize,
    /// `cmd=abort`: the job is to end with `code`.
    Abort {
        /// `exitcode`.
        code: i32,
        /// `msg` (MPICH sends none; it prints its message itself).
        msg: Option<&'a str>,
    },
}

impl<'a> Command<'a> {
    /// Parses one line (without its newline).
    pub fn parse(line: &'a str) -> Result<Self, SimpleError> {
        let p = Pairs::parse(line)?;
        Ok(match p.cmd {
            "init" => Command::Init {
                version: p.num("init", "pmi_version")?,
                subversion: p.num("init", "pmi_subversion")?,
            },
            "get_maxes" => Command::GetMaxes,
            "get_appnum" => Command::GetAppnum,
            "get_universe_size" => Command::GetUniverseSize,
            "get_my_kvsname" => Command::GetMyKvsname,
            "put" => Command::Put {
                kvsname: p.get("put", "kvsname")?,
                key: nonempty("put", "key", p.get("put", "key")?)?,
                value: p.get("put", "value")?,
            },
            "get" => Command::Get {
                kvsname: p.get("get", "kvsname")?,
                key: nonempty("get", "key", p.get("get", "key")?)?,
            },
            "barrier_in" => Command::BarrierIn,
            "finalize" => Command::Finalize,
            "abort" => Command::Abort {
                code: p.num("abort", "exitcode")?,
                msg: p.opt("msg").or(p.opt("message")),
            },
            other => return Err(SimpleError::Unknown { cmd: cut(other) }),
        })
    }

    /// Appends the line (with its newline) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SimpleError> {
        let mut s = String::new();
        match *self {
            Command::Init {
                version,
                subversion,
            } => {
                let _ = write!(
                    s,
                    "cmd=init pmi_version={version} pmi_subversion={subversion}"
                );
            }
            Command::GetMaxes => s.push_str("cmd=get_maxes"),
            Command::GetAppnum => s.push_str("cmd=get_appnum"),
            Command::GetUniverseSize => s.push_str("cmd=get_universe_size"),
            Command::GetMyKvsname => s.push_str("cmd=get_my_kvsname"),
            Command::Put {
                kvsname,
                key,
                value,
            } => {
                check("kvsname", kvsname)?;
                check_key(key)?;
                check("value", value)?;
                let _ = write!(s, "cmd=put kvsname={kvsname} key={key} value={value}");
            }
            Command::Get { kvsname, key } => {
                check("kvsname", kvsname)?;
                check_key(key)?;
                let _ = write!(s, "cmd=get kvsname={kvsname} key={key}");
            }
            Command::BarrierIn => s.push_str("cmd=barrier_in"),
            Command::Finalize => s.push_str("cmd=finalize"),
            Command::Abort { code, msg } => {
                let _ = write!(s, "cmd=abort exitcode={code}");
                if let Some(m) = msg {
                    check("msg", m)?;
                    let _ = write!(s, " msg={m}");
                }
            }
        }
        finish(s, out)
    }
}

fn nonempty<'a>(
    cmd: &'static str,
    field: &'static str,
    v: &'a str,
) -> Result<&'a str, SimpleError> {
    if v.is_empty() {
        return Err(SimpleError::Missing { cmd, field });
    }
    Ok(v)
}

/// Checks that a value can be sent in a line.
fn check(field: &'static str, v: &str) -> Result<(), SimpleError> {
    if v.contains([' ', '\n', '\r']) {
        return Err(SimpleError::BadValue {
            field,
            why: "it holds a space or a newline",
        });
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), SimpleError> {
    check("key", key)?;
    if key.is_empty() || key.contains('=') {
        return Err(SimpleError::BadValue {
            field: "key",
            why: "it is empty or holds '='",
        });
    }
    Ok(())
}

fn finish(s: String, out: &mut Vec<u8>) -> Result<(), SimpleError> {
    if s.len() > MAX_LINE {
        return Err(SimpleError::BadValue {
            field: "line",
            why: "the line would be too long",
        });
    }
    out.extend_from_slice(s.as_bytes());
    out.push(b'\n');
    Ok(())
}

/// A message from the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// `cmd=response_to_init`.
    Init {
        /// `pmi_version`.
        version: u32,
        /// `pmi_subversion`.
        subversion: u32,
        /// `rc`: 0 when the version is served.
        rc: i32,
    },
    /// `cmd=maxes`.
    Maxes {
        /// `kvsname_max`.
        kvsname_max: u32,
        /// `keylen_max`.
        keylen_max: u32,
        /// `vallen_max`.
        vallen_max: u32,
    },
    /// `cmd=appnum`.
    Appnum(i32),
    /// `cmd=universe_size`.
    UniverseSize(u32),
    /// `cmd=my_kvsname`.
    MyKvsname(&'a str),
    /// `cmd=put_result`.
    PutResult {
        /// `rc`.
        rc: i32,
        /// `msg`.
        msg: &'a str,
    },
    /// `cmd=get_result`: `value` when found (`rc=0`).
    GetResult {
        /// `rc`.
        rc: i32,
        /// `msg`.
        msg: &'a str,
        /// `value`.
        value: Option<&'a str>,
    },
    /// `cmd=barrier_out`.
    BarrierOut,
    /// `cmd=finalize_ack`.
    FinalizeAck,
}

impl<'a> Response<'a> {
    /// Parses one line (without its newline).
    pub fn parse(line: &'a str) -> Result<Self, SimpleError> {
        let p = Pairs::parse(line)?;
        Ok(match p.cmd {
            "response_to_init" => Response::Init {
                version: p.num("response_to_init", "pmi_version")?,
                subversion: p.num("response_to_init", "pmi_subversion")?,
                rc: p.num("response_to_init", "rc")?,
            },
            "maxes" => Response::Maxes {
                kvsname_max: p.num("maxes", "kvsname_max")?,
                keylen_max: p.num("maxes", "keylen_max")?,
                vallen_max: p.num("maxes", "vallen_max")?,
            },
            "appnum" => Response::Appnum(p.num("appnum", "appnum")?),
            "universe_size" => Response::UniverseSize(p.num("universe_size", "size")?),
            "my_kvsname" => Response::MyKvsname(p.get("my_kvsname", "kvsname")?),
            // Slurm's mpi/pmi2 plug-in sends no `msg`: empty then.
            "put_result" => Response::PutResult {
                rc: p.num("put_result", "rc")?,
                msg: p.opt("msg").unwrap_or(""),
            },
            "get_result" => Response::GetResult {
                rc: p.num("get_result", "rc")?,
                msg: p.opt("msg").unwrap_or(""),
                value: p.opt("value"),
            },
            "barrier_out" => Response::BarrierOut,
            "finalize_ack" => Response::FinalizeAck,
            other => return Err(SimpleError::Unknown { cmd: cut(other) }),
        })
    }

    /// Appends the line (with its newline) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SimpleError> {
        let mut s = String::new();
        match *self {
            Response::Init {
                version,
                subversion,
                rc,
            } => {
                let _ = write!(
                    s,
                    "cmd=response_to_init pmi_version={version} pmi_subversion={subversion} rc={rc}"
                );
            }
            Response::Maxes {
                kvsname_max,
                keylen_max,
                vallen_max,
            } => {
                let _ = write!(
                    s,
                    "cmd=maxes kvsname_max={kvsname_max} keylen_max={keylen_max} vallen_max={vallen_max} rc=0"
                );
            }
            Response::Appnum(n) => {
                let _ = write!(s, "cmd=appnum appnum={n} rc=0");
            }
            Response::UniverseSize(n) => {
                let _ = write!(s, "cmd=universe_size size={n} rc=0");
            }
            Response::MyKvsname(k) => {
                check("kvsname", k)?;
                let _ = write!(s, "cmd=my_kvsname kvsname={k} rc=0");
            }
            Response::PutResult { rc, msg } => {
                check("msg", msg)?;
                let _ = write!(s, "cmd=put_result rc={rc} msg={msg}");
            }
            Response::GetResult { rc, msg, value } => {
                check("msg", msg)?;
                let _ = write!(s, "cmd=get_result rc={rc} msg={msg}");
                if let Some(v) = value {
                    check("value", v)?;
                    let _ = write!(s, " value={v}");
                }
            }
            Response::BarrierOut => s.push_str("cmd=barrier_out"),
            Response::FinalizeAck => s.push_str("cmd=finalize_ack"),
        }
        finish(s, out)
    }
}

/// The `PMI_process_mapping` value of a job whose rank `r` runs on node
/// `node_of[r]`: MPICH's `(vector,(node,count,ranks),...)`, each triple
/// saying that `count` nodes from `node` on each hold `ranks` consecutive
/// ranks, the triples in rank order.
pub fn process_mapping(node_of: &[usize]) -> String {
    // Runs of consecutive ranks on one node.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &n in node_of {
        match runs.last_mut() {
            Some((node, len)) if *node == n => *len += 1,
            _ => runs.push((n, 1)),
        }
    }
    // Runs of equal length on consecutive nodes make one triple.
    let mut triples: Vec<(usize, usize, usize)> = Vec::new();
    for (node, len) in runs {
        match triples.last_mut() {
            Some((start, count, ranks)) if *ranks == len && *start + *count == node => *count += 1,
            _ => triples.push((node, 1, len)),
        }
    }
    let mut s = String::from("(vector");
    for (node, count, ranks) in triples {
        let _ = write!(s, ",({node},{count},{ranks})");
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(c: &Command<'_>) -> String {
        let mut v = Vec::new();
        c.encode(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    fn rline(r: &Response<'_>) -> String {
        let mut v = Vec::new();
        r.encode(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn mpich_lines_parse() {
        // As MPICH's simple_pmi.c writes them.
        assert_eq!(
            Command::parse("cmd=init pmi_version=1 pmi_subversion=1"),
            Ok(Command::Init {
                version: 1,
                subversion: 1
            })
        );
        assert_eq!(Command::parse("cmd=get_maxes"), Ok(Command::GetMaxes));
        assert_eq!(
            Command::parse("cmd=put kvsname=kvs_1 key=P0-businesscard value=a=b;c"),
            Ok(Command::Put {
                kvsname: "kvs_1",
                key: "P0-businesscard",
                value: "a=b;c"
            })
        );
        assert_eq!(
            Command::parse("cmd=put kvsname=k key=x value="),
            Ok(Command::Put {
                kvsname: "k",
                key: "x",
                value: ""
            })
        );
        assert_eq!(
            Command::parse("cmd=get kvsname=kvs_1 key=PMI_process_mapping"),
            Ok(Command::Get {
                kvsname: "kvs_1",
                key: "PMI_process_mapping"
            })
        );
        assert_eq!(
            Command::parse("cmd=abort exitcode=3"),
            Ok(Command::Abort { code: 3, msg: None })
        );
        assert_eq!(
            Command::parse("cmd=abort exitcode=-1 msg=boom\r"),
            Ok(Command::Abort {
                code: -1,
                msg: Some("boom")
            })
        );
        assert_eq!(Command::parse("cmd=barrier_in "), Ok(Command::BarrierIn));
        assert_eq!(
            Response::parse("cmd=get_result rc=-1 msg=key_x_not_found"),
            Ok(Response::GetResult {
                rc: -1,
                msg: "key_x_not_found",
                value: None
            })
        );
        // Slurm's mpi/pmi2 plug-in answers PMI-1 clients without `msg`.
        assert_eq!(
            Response::parse("cmd=get_result rc=0 value=(vector,(0,1,2))"),
            Ok(Response::GetResult {
                rc: 0,
                msg: "",
                value: Some("(vector,(0,1,2))")
            })
        );
        assert_eq!(
            Response::parse("cmd=put_result rc=0"),
            Ok(Response::PutResult { rc: 0, msg: "" })
        );
    }

    #[test]
    fn responses_are_written_as_mpich_reads_them() {
        assert_eq!(
            rline(&Response::Init {
                version: 1,
                subversion: 1,
                rc: 0
            }),
            "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n"
        );
        assert_eq!(
            rline(&Response::Maxes {
                kvsname_max: 256,
                keylen_max: 64,
                vallen_max: 1024
            }),
            "cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024 rc=0\n"
        );
        assert_eq!(
            rline(&Response::GetResult {
                rc: 0,
                msg: "success",
                value: Some("(vector,(0,2,1))")
            }),
            "cmd=get_result rc=0 msg=success value=(vector,(0,2,1))\n"
        );
        assert_eq!(rline(&Response::BarrierOut), "cmd=barrier_out\n");
        assert!(Response::MyKvsname("a b").encode(&mut Vec::new()).is_err());
        assert!(Command::Put {
            kvsname: "k",
            key: "a=b",
            value: ""
        }
        .encode(&mut Vec::new())
        .is_err());
    }

    #[test]
    fn bad_lines_are_refused() {
        use SimpleError::*;
        let cases: &[(&str, SimpleError)] = &[
            ("", NoCmd),
            (
                "get_maxes",
                NotPair {
                    word: "get_maxes".into(),
                },
            ),
            ("=x", NotPair { word: "=x".into() }),
            ("key=x cmd=get", NoCmd),
            ("cmd=fly", Unknown { cmd: "fly".into() }),
            (
                "cmd=init pmi_version=1",
                Missing {
                    cmd: "init",
                    field: "pmi_subversion",
                },
            ),
            (
                "cmd=init pmi_version=x pmi_subversion=1",
                BadNumber {
                    cmd: "init",
                    field: "pmi_version",
                    value: "x".into(),
                },
            ),
            (
                "cmd=get kvsname=k key=",
                Missing {
                    cmd: "get",
                    field: "key",
                },
            ),
            (
                "cmd=get kvsname=k key=a key=b",
                Repeated {
                    field: "key".into(),
                },
            ),
            (
                "cmd=abort exitcode=99999999999",
                BadNumber {
                    cmd: "abort",
                    field: "exitcode",
                    value: "99999999999".into(),
                },
            ),
        ];
        for (l, want) in cases {
            assert_eq!(Command::parse(l).as_ref(), Err(want), "{l:?}");
        }
        let many: String = (0..MAX_PAIRS).map(|i| format!(" a{i}=1")).collect();
        let many = format!("cmd=get_maxes{many}");
        assert_eq!(Command::parse(&many), Err(TooManyPairs));
        assert_eq!(
            Command::parse(&"x".repeat(MAX_LINE + 1)),
            Err(SimpleError::TooLong)
        );
    }

    #[test]
    fn process_mappings() {
        assert_eq!(process_mapping(&[0, 0, 0]), "(vector,(0,1,3))");
        assert_eq!(process_mapping(&[0, 0, 1, 1, 2, 2]), "(vector,(0,3,2))");
        assert_eq!(
            process_mapping(&[0, 0, 1, 1, 2]),
            "(vector,(0,2,2),(2,1,1))"
        );
        assert_eq!(process_mapping(&[0, 1, 0, 1]), "(vector,(0,2,1),(0,2,1))");
        assert_eq!(process_mapping(&[]), "(vector)");
    }

    #[test]
    fn lines_split() {
        assert_eq!(split_line(b"cmd=a"), Ok(None));
        assert_eq!(split_line(b"cmd=a\ncmd=b"), Ok(Some(("cmd=a", 6))));
        assert_eq!(split_line(b"\xff\n"), Err(SimpleError::NotUtf8));
        assert_eq!(split_line(&vec![b'a'; MAX_LINE]), Ok(None));
        assert_eq!(
            split_line(&vec![b'a'; MAX_LINE + 1]),
            Err(SimpleError::TooLong)
        );
        let mut exact = vec![b'a'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split_line(&exact).unwrap().unwrap().1, MAX_LINE + 1);
    }

    fn word() -> impl Strategy<Value = String> {
        "[!-~&&[^ =]][!-~&&[^ ]]{0,20}"
    }

    proptest! {
        #[test]
        fn commands_round_trip(k in word(), key in "[a-zA-Z0-9_-]{1,20}", v in "[!-~]{0,40}",
                               code in any::<i32>(), n in any::<u32>()) {
            for c in [
                Command::Init { version: n, subversion: 1 },
                Command::GetMaxes, Command::GetAppnum, Command::GetUniverseSize,
                Command::GetMyKvsname, Command::BarrierIn, Command::Finalize,
                Command::Put { kvsname: &k, key: &key, value: &v },
                Command::Get { kvsname: &k, key: &key },
                Command::Abort { code, msg: None },
                Command::Abort { code, msg: Some(&v) },
            ] {
                let l = line(&c);
                let (text, used) = split_line(l.as_bytes()).unwrap().unwrap();
                prop_assert_eq!(used, l.len());
                let back = Command::parse(text);
                if let Command::Abort { msg: Some(""), .. } = c {
                    // An empty msg= reads back as present and empty.
                    prop_assert!(back.is_ok());
                } else {
                    prop_assert_eq!(back, Ok(c));
                }
            }
        }

        #[test]
        fn responses_round_trip(k in word(), v in "[!-~]{0,40}", rc in any::<i32>(), n in any::<u32>()) {
            for r in [
                Response::Init { version: 1, subversion: 1, rc },
                Response::Maxes { kvsname_max: n, keylen_max: 64, vallen_max: 1024 },
                Response::Appnum(rc), Response::UniverseSize(n), Response::MyKvsname(&k),
                Response::PutResult { rc, msg: &k },
                Response::GetResult { rc, msg: &k, value: Some(&v) },
                Response::GetResult { rc, msg: "x", value: None },
                Response::BarrierOut, Response::FinalizeAck,
            ] {
                let l = rline(&r);
                prop_assert_eq!(Response::parse(l.trim_end_matches('\n')), Ok(r));
            }
        }

        #[test]
        fn random_lines_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some((l, _))) = split_line(&b) {
                let _ = Command::parse(l);
                let _ = Response::parse(l);
            }
        }
    }
}
