//! Hosts offered to a job, in Open MPI's conventions.
//!
//! * `-H host[:slots],...` (repeatable): a host without `:slots` has one
//!   slot per mention, so `-H a,a,b` gives `a` two slots and `b` one.
//! * `--hostfile FILE` (also `--machinefile`): one host per line,
//!   `host [slots=N] [max_slots=M]`; `#` starts a comment; blank lines are
//!   skipped; a line without `slots=` gives one slot. `max_slots` is a hard
//!   limit that even `--oversubscribe` respects.
//!
//! IPv6 addresses are written in brackets, `[fd00::5]:2` in `-H` (where a
//! bare colon introduces the slots) and `[fd00::5]` or bare `fd00::5` in a
//! hostfile; the host is the address without brackets (as ssh takes it).
//!
//! A hostfile must be a regular file of at most [`MAX_HOSTFILE`] bytes with
//! lines of at most [`MAX_LINE`] bytes: a device (`/dev/zero`) or a FIFO is
//! refused before anything is read from it.
//!
//! A host mentioned more than once adds up its slots (and its `max_slots`,
//! which stays unlimited if one mention has none). Mentions of this machine
//! (`localhost`, loopback addresses, the host name, the addresses of its
//! interfaces) all count as one host, the local node.
//!
//! Parsing is pure; only [`classify`] resolves names (through the system
//! resolver, which reads `/etc/hosts` first) and reads interface addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

/// Longest host name accepted (DNS's limit).
const MAX_HOST_LEN: usize = 253;
/// Largest hostfile accepted, in bytes.
pub const MAX_HOSTFILE: u64 = 1 << 20;
/// Longest hostfile line accepted, in bytes.
pub const MAX_LINE: usize = 4096;

/// One mention of a host, with the slots it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The host as written.
    pub host: String,
    /// Slots this mention adds (at least 1).
    pub slots: usize,
    /// Most ranks this mention allows even when oversubscribing.
    pub max_slots: Option<usize>,
}

/// Why a host list or hostfile cannot be used. Each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostsError {
    /// An `-H` list entry is malformed.
    #[error("-H {spec:?}: {why}")]
    HostList {
        /// The whole `-H` value.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// A hostfile line is malformed.
    #[error("hostfile {path}, line {line}: {why}")]
    Hostfile {
        /// The hostfile as given.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The hostfile cannot be read.
    #[error("cannot read hostfile {path}: {err}")]
    Read {
        /// The hostfile as given.
        path: String,
        /// The error text.
        err: String,
    },
    /// The hostfile is not a regular file, or too large.
    #[error("hostfile {path}: {why}")]
    BadHostfile {
        /// The hostfile as given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The hostfile names no host.
    #[error("hostfile {path} lists no host")]
    EmptyHostfile {
        /// The hostfile as given.
        path: String,
    },
    /// A host name does not resolve to an address.
    #[error("host {host:?} does not resolve: {err}")]
    Resolve {
        /// The host as written.
        host: String,
        /// The resolver's error.
        err: String,
    },
}

/// Checks a host name or address as it may appear in `-H` or a hostfile.
fn check_host(host: &str) -> Result<(), String> {
    if host.contains(':') {
        return match host.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "{host:?} is neither a host name nor an IPv6 address"
            )),
        };
    }
    if host.is_empty() {
        return Err("empty host name".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!("host name longer than {MAX_HOST_LEN} characters"));
    }
    if host.starts_with('-') || host.starts_with('.') {
        return Err(format!("{host:?} is not a host name"));
    }
    if let Some(c) = host
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
    {
        return Err(format!("{host:?} is not a host name (character {c:?})"));
    }
    Ok(())
}

/// Parses a number of slots (`what` names the field in messages).
fn parse_count(what: &str, v: &str) -> Result<usize, String> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("{what} {v:?} is not a number"))?;
    if n == 0 {
        return Err(format!("{what} must be at least 1"));
    }
    if n > crate::plan::MAX_RANKS {
        return Err(format!(
            "{what} {n} is more than {}",
            crate::plan::MAX_RANKS
        ));
    }
    Ok(n)
}

/// Splits `host[:slots]` or `[ipv6][:slots]`.
fn split_host(item: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = item.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("{item:?}: '[' without ']'"));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{item:?}: [{addr}] is not an IPv6 address"));
        }
        return match after {
            "" => Ok((addr, None)),
            _ => match after.strip_prefix(':') {
                Some(s) => Ok((addr, Some(s))),
                None => Err(format!(
                    "{item:?}: expected :SLOTS after the address in brackets"
                )),
            },
        };
    }
    if item.matches(':').count() > 1 && item.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "{item:?}: write an IPv6 address in brackets, [{item}] or [{item}]:SLOTS"
        ));
    }
    Ok(match item.split_once(':') {
        Some((h, s)) => (h, Some(s)),
        None => (item, None),
    })
}

/// Parses one `-H` value: `host[:slots],...`.
pub fn parse_host_list(spec: &str) -> Result<Vec<HostEntry>, HostsError> {
    let bad = |why: String| HostsError::HostList {
        spec: spec.to_string(),
        why,
    };
    let mut out = Vec::new();
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad("empty host name".into()));
        }
        let (host, slots) = match split_host(item).map_err(bad)? {
            (h, Some(s)) => (
                h,
                parse_count("slots", s).map_err(|e| bad(format!("{h}: {e}")))?,
            ),
            (h, None) => (h, 1),
        };
        check_host(host).map_err(bad)?;
        out.push(HostEntry {
            host: host.to_string(),
            slots,
            max_slots: None,
        });
    }
    Ok(out)
}

/// Parses a hostfile's text; `path` is only used in messages.
pub fn parse_hostfile(path: &str, text: &str) -> Result<Vec<HostEntry>, HostsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let bad = |why: String| HostsError::Hostfile {
            path: path.to_string(),
            line: i + 1,
            why,
        };
        if raw.len() > MAX_LINE {
            return Err(bad(format!("longer than {MAX_LINE} bytes")));
        }
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(host) = words.next() else {
            continue;
        };
        let host = match host.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']').ok_or_else(|| {
                bad(format!(
                    "{host:?}: an address in brackets must end with ']'"
                ))
            })?,
            None => host,
        };
        check_host(host).map_err(bad)?;
        let mut slots = None;
        let mut max_slots = None;
        for w in words {
            let Some((key, value)) = w.split_once('=') else {
                return Err(bad(format!(
                    "{w:?} is not key=value (expected: host slots=N [max_slots=M])"
                )));
            };
            let (field, name) = match key {
                "slots" => (&mut slots, "slots"),
                "max_slots" | "max-slots" => (&mut max_slots, "max_slots"),
                _ => {
                    return Err(bad(format!(
                        "unknown field {key:?} (expected slots or max_slots)"
                    )))
                }
            };
            if field.is_some() {
                return Err(bad(format!("{name} given twice")));
            }
            *field = Some(parse_count(name, value).map_err(bad)?);
        }
        let slots = slots.unwrap_or(1);
        if let Some(m) = max_slots {
            if m < slots {
                return Err(bad(format!("max_slots={m} is less than slots={slots}")));
            }
        }
        out.push(HostEntry {
            host: host.to_string(),
            slots,
            max_slots,
        });
    }
    if out.is_empty() {
        return Err(HostsError::EmptyHostfile {
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// Reads and parses a hostfile: a regular file of at most
/// [`MAX_HOSTFILE`] bytes (opened without blocking, so that a FIFO is
/// refused rather than waited on).
pub fn read_hostfile(path: &std::path::Path) -> Result<Vec<HostEntry>, HostsError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let shown = path.display().to_string();
    let read_err = |e: std::io::Error| HostsError::Read {
        path: shown.clone(),
        err: e.to_string(),
    };
    let bad = |why: String| HostsError::BadHostfile {
        path: shown.clone(),
        why,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(bad(format!("is {kind}, not a regular file")));
    }
    let too_big = || bad(format!("is larger than {} KiB", MAX_HOSTFILE >> 10));
    if meta.len() > MAX_HOSTFILE {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    f.take(MAX_HOSTFILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_HOSTFILE {
        return Err(too_big());
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text".into()))?;
    parse_hostfile(&shown, &text)
}

/// What dosrun knows about the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHost {
    /// Its host name.
    pub hostname: String,
    /// The addresses of its network interfaces.
    pub addrs: Vec<IpAddr>,
}

impl LocalHost {
    /// This machine: `hostname` and the addresses of its interfaces.
    pub fn current(hostname: String) -> LocalHost {
        LocalHost {
            hostname,
            addrs: interface_addrs(),
        }
    }

    /// Whether `host` names this machine without resolving it.
    fn named_by(&self, host: &str) -> bool {
        let short = |h: &str| h.split('.').next().unwrap_or(h).to_ascii_lowercase();
        host.eq_ignore_ascii_case("localhost")
            || host.eq_ignore_ascii_case(&self.hostname)
            || (!self.hostname.is_empty()
                && host.parse::<IpAddr>().is_err()
                && short(host) == short(&self.hostname)
                && !host.contains('.'))
    }

    /// Whether `addr` is an address of this machine.
    fn owns(&self, addr: IpAddr) -> bool {
        addr.is_loopback() || addr.is_unspecified() || self.addrs.contains(&addr)
    }
}

/// Where a host is, as far as placement cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// This machine.
    Local,
    /// Another machine.
    Remote,
}

/// Decides whether `host` is this machine or another one. IP addresses and
/// names of this machine need no resolver; other names are resolved with
/// `resolve` (the system resolver in dosrun) and must resolve.
pub fn classify(
    host: &str,
    local: &LocalHost,
    resolve: impl Fn(&str) -> Result<Vec<IpAddr>, String>,
) -> Result<HostKind, HostsError> {
    if local.named_by(host) {
        return Ok(HostKind::Local);
    }
    let addrs = match host.parse::<IpAddr>() {
        Ok(a) => vec![a],
        Err(_) => resolve(host).map_err(|err| HostsError::Resolve {
            host: host.to_string(),
            err,
        })?,
    };
    if addrs.is_empty() {
        return Err(HostsError::Resolve {
            host: host.to_string(),
            err: "no address".into(),
        });
    }
    Ok(if addrs.iter().any(|&a| local.owns(a)) {
        HostKind::Local
    } else {
        HostKind::Remote
    })
}

/// The system resolver (`getaddrinfo`, which reads `/etc/hosts` first).
pub fn system_resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    (host, 0u16)
        .to_socket_addrs()
        .map(|it| it.map(|sa| sa.ip()).collect())
        .map_err(|e| e.to_string())
}

/// A host of the job after merging repeated mentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its name: as first written, or this machine's host name for the
    /// local node.
    pub name: String,
    /// Whether it is this machine.
    pub kind: HostKind,
    /// Slots, summed over its mentions.
    pub slots: usize,
    /// Hard limit, summed over its mentions; `None` if any had none.
    pub max_slots: Option<usize>,
}

/// Classifies every entry and merges the mentions of the same host (by
/// name, and every mention of this machine into one), in order of first
/// mention.
pub fn merge(
    entries: &[HostEntry],
    local: &LocalHost,
    resolve: impl Fn(&str) -> Result<Vec<IpAddr>, String>,
) -> Result<Vec<Host>, HostsError> {
    let mut out: Vec<Host> = Vec::new();
    for e in entries {
        let kind = match out.iter().find(|h| h.name == e.host) {
            Some(h) => h.kind,
            None => classify(&e.host, local, &resolve)?,
        };
        let name = match kind {
            HostKind::Local => local.hostname.clone(),
            HostKind::Remote => e.host.clone(),
        };
        match out
            .iter_mut()
            .find(|h| h.name == name || (kind == HostKind::Local && h.kind == HostKind::Local))
        {
            Some(h) => {
                h.slots = h.slots.saturating_add(e.slots);
                h.max_slots = match (h.max_slots, e.max_slots) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    _ => None,
                };
            }
            None => out.push(Host {
                name,
                kind,
                slots: e.slots,
                max_slots: e.max_slots,
            }),
        }
    }
    Ok(out)
}

/// The addresses of this machine's network interfaces (`getifaddrs`);
/// empty if they cannot be listed.
fn interface_addrs() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head` on success.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, which
        // stays valid until freeifaddrs below.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which
            // larger structure it is; we read only that structure.
            unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(host: &str, slots: usize, max_slots: Option<usize>) -> HostEntry {
        HostEntry {
            host: host.into(),
            slots,
            max_slots,
        }
    }

    fn local() -> LocalHost {
        LocalHost {
            hostname: "node0.example".into(),
            addrs: vec!["10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        }
    }

    /// A resolver that knows a few names and never touches the network.
    fn fake(host: &str) -> Result<Vec<IpAddr>, String> {
        match host {
            "alpha" => Ok(vec!["198.18.0.1".parse().unwrap()]),
            "beta" => Ok(vec!["198.18.0.2".parse().unwrap()]),
            "me-too" => Ok(vec!["10.0.0.5".parse().unwrap()]),
            "empty" => Ok(vec![]),
            _ => Err("Name or service not known".into()),
        }
    }

    #[test]
    fn host_lists() {
        assert_eq!(parse_host_list("a").unwrap(), [e("a", 1, None)]);
        assert_eq!(
            parse_host_list("a:2,b, c:1 ,198.18.0.3:4").unwrap(),
            [
                e("a", 2, None),
                e("b", 1, None),
                e("c", 1, None),
                e("198.18.0.3", 4, None)
            ]
        );
        for (bad, needle) in [
            ("", "empty host"),
            ("a,,b", "empty host"),
            ("a,", "empty host"),
            ("a:0", "at least 1"),
            ("a:x", "not a number"),
            ("a:-1", "not a number"),
            ("a:", "not a number"),
            (":2", "empty host"),
            ("a b", "not a host name"),
            ("-a", "not a host name"),
            ("a:2:3", "not a number"),
            ("a:99999999999", "more than"),
            ("h\u{e9}", "not a host name"),
        ] {
            let err = parse_host_list(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
            assert!(err.starts_with("-H "), "{err}");
            assert!(!err.contains('\n'));
        }
        let long = "a".repeat(300);
        assert!(parse_host_list(&long).is_err());
    }

    #[test]
    fn hostfiles() {
        let text = "\
# cluster
198.18.0.1 slots=2
198.18.0.2 slots=2 max_slots=3   # trailing comment

   beta
alpha max_slots=4
gamma\tslots=1\tmax-slots=1
";
        assert_eq!(
            parse_hostfile("hf", text).unwrap(),
            [
                e("198.18.0.1", 2, None),
                e("198.18.0.2", 2, Some(3)),
                e("beta", 1, None),
                e("alpha", 1, Some(4)),
                e("gamma", 1, Some(1)),
            ]
        );
    }

    #[test]
    fn malformed_hostfiles_name_the_line() {
        for (text, line, needle) in [
            ("a slots=0\n", 1, "at least 1"),
            ("\n\na slots=two\n", 3, "not a number"),
            ("a\nb slots\n", 2, "not key=value"),
            ("a cpus=2\n", 1, "unknown field \"cpus\""),
            ("a slots=1 slots=2\n", 1, "given twice"),
            ("a slots=4 max_slots=2\n", 1, "less than"),
            ("a max_slots=0\n", 1, "at least 1"),
            ("# x\nb@c slots=1\n", 2, "not a host name"),
            ("a slots=-3\n", 1, "not a number"),
            ("a slots=\n", 1, "not a number"),
        ] {
            match parse_hostfile("hf", text) {
                Err(HostsError::Hostfile { line: l, why, .. }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(why.contains(needle), "{text:?}: {why}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let msg = parse_hostfile("hosts.txt", "a\nb slots=x\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("hostfile hosts.txt, line 2: "), "{msg}");
        for empty in ["", "\n\n", "# only a comment\n   \n"] {
            assert_eq!(
                parse_hostfile("hf", empty),
                Err(HostsError::EmptyHostfile { path: "hf".into() })
            );
        }
    }

    #[test]
    fn ipv6_addresses_in_brackets() {
        assert_eq!(
            parse_host_list("[::1]:2,[fe80::1],a:1").unwrap(),
            [e("::1", 2, None), e("fe80::1", 1, None), e("a", 1, None)]
        );
        for (bad, needle) in [
            ("::1", "in brackets"),
            ("fd00::5:2", "in brackets"),
            ("[::1", "without ']'"),
            ("[::1]2", "expected :SLOTS"),
            ("[nothost]:2", "not an IPv6 address"),
            ("[::1]:0", "at least 1"),
            ("[::1]:x", "not a number"),
        ] {
            let err = parse_host_list(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
            assert!(err.starts_with("-H "), "{err}");
        }
        assert_eq!(
            parse_hostfile("hf", "[fd00::5] slots=2\nfd00::6\n").unwrap(),
            [e("fd00::5", 2, None), e("fd00::6", 1, None)]
        );
        for text in ["[fd00::5 slots=2\n", "fd00:::5\n", "a:2\n"] {
            assert!(
                matches!(
                    parse_hostfile("hf", text),
                    Err(HostsError::Hostfile { line: 1, .. })
                ),
                "{text:?}"
            );
        }
        // Loopback in brackets is this machine.
        let l = local();
        assert_eq!(classify("::1", &l, fake), Ok(HostKind::Local));
    }

    #[test]
    fn hostfiles_must_be_small_regular_files() {
        for (path, needle) in [
            ("/dev/zero", "is a character device, not a regular file"),
            ("/dev/null", "is a character device, not a regular file"),
            ("/", "is a directory, not a regular file"),
        ] {
            let err = read_hostfile(std::path::Path::new(path))
                .unwrap_err()
                .to_string();
            assert_eq!(err, format!("hostfile {path}: {needle}"));
        }
        let dir = std::env::temp_dir().join(format!("dos-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO nobody writes to: refused at once, not waited on.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_hostfile(&fifo).unwrap_err().to_string();
        assert!(err.ends_with("is a FIFO, not a regular file"), "{err}");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'#'; MAX_HOSTFILE as usize + 1]).unwrap();
        let err = read_hostfile(&big).unwrap_err().to_string();
        assert!(err.ends_with("is larger than 1024 KiB"), "{err}");
        let long = dir.join("long");
        std::fs::write(&long, format!("a\n{}\n", "b".repeat(MAX_LINE + 1))).unwrap();
        let err = read_hostfile(&long).unwrap_err().to_string();
        assert!(err.contains("line 2: longer than 4096 bytes"), "{err}");
        let ok = dir.join("ok");
        std::fs::write(&ok, "a slots=2\n").unwrap();
        assert_eq!(read_hostfile(&ok).unwrap(), [e("a", 2, None)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reading_a_missing_hostfile_fails_cleanly() {
        let err = read_hostfile(std::path::Path::new("/nonexistent/dosrun-hosts"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read hostfile /nonexistent/dosrun-hosts"));
    }

    #[test]
    fn local_names_and_addresses() {
        let l = local();
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.0.1.1",
            "::1",
            "node0.example",
            "node0",
            "10.0.0.5",
            "me-too",
        ] {
            assert_eq!(classify(h, &l, fake), Ok(HostKind::Local), "{h}");
        }
        for h in ["alpha", "198.18.0.2", "10.0.0.6"] {
            assert_eq!(classify(h, &l, fake), Ok(HostKind::Remote), "{h}");
        }
        // A name other than ours with the same first label is not ours.
        assert!(classify("node0.other", &l, fake).is_err());
        let err = classify("nowhere", &l, fake).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host \"nowhere\" does not resolve: Name or service not known"
        );
        assert!(classify("empty", &l, fake).is_err());
    }

    #[test]
    fn merging_adds_slots_and_unifies_the_local_node() {
        let l = local();
        let hosts = merge(
            &[
                e("alpha", 2, Some(2)),
                e("localhost", 1, None),
                e("beta", 1, None),
                e("alpha", 1, Some(3)),
                e("127.0.0.1", 2, None),
                e("node0", 1, Some(1)),
                e("beta", 2, Some(5)),
            ],
            &l,
            fake,
        )
        .unwrap();
        let h = |name: &str, kind, slots, max_slots| Host {
            name: name.into(),
            kind,
            slots,
            max_slots,
        };
        assert_eq!(
            hosts,
            [
                h("alpha", HostKind::Remote, 3, Some(5)),
                h("node0.example", HostKind::Local, 4, None),
                h("beta", HostKind::Remote, 3, None),
            ]
        );
        assert!(merge(&[e("alpha", 1, None), e("nowhere", 1, None)], &l, fake).is_err());
    }

    #[test]
    fn this_machine_is_local() {
        let l = LocalHost::current("some-host-name".into());
        assert!(l.addrs.iter().any(|a| a.is_loopback()), "{:?}", l.addrs);
        assert_eq!(
            classify("127.0.0.1", &l, |_| Err("no".into())),
            Ok(HostKind::Local)
        );
        // Resolving from /etc/hosts, never the network.
        assert_eq!(
            classify("localhost", &l, system_resolve),
            Ok(HostKind::Local)
        );
    }
}
