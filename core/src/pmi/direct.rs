//! Direct launch: a dos program started by another launcher's PMI server
//! (`srun --mpi=pmi2`, MPICH's `mpiexec.hydra`) instead of `dosrun`.
//!
//! Both servers speak PMI-1's "simple" wire protocol ([`super::simple`]) on
//! the descriptor `PMI_FD` they pass (Slurm's `mpi/pmi2` plug-in serves
//! PMI-1 clients as well as PMI-2 ones), with `PMI_RANK` and `PMI_SIZE`. The
//! rank learns:
//!
//! * its rank and the job's size from `PMI_RANK`, `PMI_SIZE`;
//! * the node of every rank from the key `PMI_process_mapping` (MPICH's
//!   `(vector,(node,count,ranks),...)`, [`parse_process_mapping`]): its node
//!   id, the number of nodes, its local rank and the node's rank count;
//! * the job's id: a hash of the key-value space's name;
//! * this node's address (multi-node jobs): `DOS_NODE_ADDR` if set, else
//!   the first IPv4 address of an interface that is up and not loopback.
//!
//! What dosrun does for its ranks, the ranks do themselves, through the
//! key-value space, before one barrier:
//!
//! * rank 0 makes the job's secret and puts it (`dos.secret`): the key-value
//!   space is the job's own, so only its ranks read it;
//! * the node's local rank 0 creates the node's shared segment (a memfd,
//!   as dosrun's agent does) and puts `dos.shm.<node>` = `<pid>:<fd>`; after
//!   the barrier the node's other ranks open it through
//!   `/proc/<pid>/fd/<fd>` (the kernel allows that to a process that may
//!   trace the creator: same user, as CMA needs anyway). There is no file to
//!   clean up: the memory goes with its last descriptor or mapping, also when
//!   ranks crash.
//!
//! `put`, `fence` and `get` then map to PMI-1's `put`, `barrier_in` and
//! `get`; values are sent as hex (PMI-1 values cannot hold spaces or
//! newlines). `abort` is PMI-1's `abort`, `finalize` its `finalize`.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use dos_transport::auth::Secret;
use dos_transport::shm::Segment;

use super::simple::{split_line, Command, Response};
use crate::{Error, Result};

/// The largest job this accepts from `PMI_SIZE`.
const MAX_SIZE: usize = 1 << 20;

/// A PMI-1 connection to the launcher's server.
#[derive(Debug)]
pub(super) struct Direct {
    stream: UnixStream,
    kvsname: String,
    rbuf: Vec<u8>,
}

/// What a directly launched rank learnt while joining.
#[derive(Debug)]
pub(super) struct Joined {
    pub conn: Direct,
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    pub local_size: usize,
    pub node_id: usize,
    pub nnodes: usize,
    pub node_addr: Option<IpAddr>,
    pub jobid: u64,
    pub secret: Secret,
    pub shm_fd: RawFd,
}

fn env(var: &'static str, reason: &'static str) -> Error {
    Error::Environment { var, reason }
}

fn protocol(reason: &'static str) -> Error {
    Error::WireupProtocol { reason }
}

/// Joins the job of the PMI server behind `PMI_FD`: see the module doc.
/// `ring_bytes`: the shared segment's ring size (`DOS_SHM_RING_BYTES`).
pub(super) fn join(
    lookup: impl Fn(&str) -> Option<String>,
    timeout: Option<Duration>,
    ring_bytes: usize,
) -> Result<Joined> {
    let num = |var: &'static str| -> Result<usize> {
        lookup(var)
            .ok_or(env(var, "not set"))?
            .trim()
            .parse()
            .map_err(|_| env(var, "not a non-negative integer"))
    };
    let fd: RawFd = lookup("PMI_FD")
        .ok_or(env("PMI_FD", "not set"))?
        .trim()
        .parse()
        .map_err(|_| env("PMI_FD", "not a descriptor number"))?;
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`, open or not.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(env("PMI_FD", "not an open descriptor"));
    }
    let (rank, size) = (num("PMI_RANK")?, num("PMI_SIZE")?);
    if size == 0 || size > MAX_SIZE || rank >= size {
        return Err(env("PMI_RANK", "rank out of range of PMI_SIZE"));
    }
    // SAFETY: the launcher passed this descriptor (a connected socket) to
    // this process for its PMI client; nothing else uses it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // Not inherited by programs this rank starts.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let io = |source| Error::Wireup {
        op: "connect",
        source,
    };
    stream.set_read_timeout(timeout).map_err(io)?;
    let mut conn = Direct {
        stream,
        kvsname: String::new(),
        rbuf: Vec::with_capacity(256),
    };
    conn.send(
        "init",
        &Command::Init {
            version: 1,
            subversion: 1,
        },
    )?;
    match conn.recv("init", |r| match r {
        Response::Init { rc, .. } => Ok(rc),
        _ => Err(protocol("PMI server: unexpected answer to init")),
    })? {
        0 => {}
        _ => return Err(protocol("the PMI server refused PMI-1 (init rc != 0)")),
    }
    conn.send("get_my_kvsname", &Command::GetMyKvsname)?;
    conn.kvsname = conn.recv("get_my_kvsname", |r| match r {
        Response::MyKvsname(k) => Ok(k.to_string()),
        _ => Err(protocol("PMI server: unexpected answer to get_my_kvsname")),
    })?;
    let mapping = conn
        .get_text("PMI_process_mapping")?
        .ok_or(protocol("the PMI server has no PMI_process_mapping"))?;
    let node_of = parse_process_mapping(&mapping, size)
        .ok_or(protocol("PMI_process_mapping is malformed"))?;
    let node_id = node_of[rank];
    let nnodes = node_of.iter().max().map_or(1, |m| m + 1);
    let local_rank = node_of[..rank].iter().filter(|&&n| n == node_id).count();
    let local_size = node_of.iter().filter(|&&n| n == node_id).count();
    let node_addr = if nnodes > 1 {
        Some(match lookup(super::ENV_NODE_ADDR) {
            Some(a) => a
                .trim()
                .parse()
                .map_err(|_| env(super::ENV_NODE_ADDR, "not an IP address"))?,
            None => first_address().ok_or(env(
                super::ENV_NODE_ADDR,
                "not set, and this node has no IPv4 address that is up and not loopback",
            ))?,
        })
    } else {
        None
    };
    // The secret (rank 0) and the node's segment (local rank 0), then one
    // barrier, then the others read them.
    let mut own_shm = None;
    if rank == 0 {
        let s = Secret::generate()?;
        conn.put_text("dos.secret", &s.to_hex())?;
    }
    if local_rank == 0 {
        let seg = Segment::create(local_size, ring_bytes)?;
        // SAFETY: dup of a descriptor the segment owns; the copy is ours.
        let fd = unsafe { libc::fcntl(seg.fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(Error::Wireup {
                op: "share the node's segment",
                source: io::Error::last_os_error(),
            });
        }
        own_shm = Some(fd);
        conn.put_text(
            &format!("dos.shm.{node_id}"),
            &format!("{}:{fd}", std::process::id()),
        )?;
    }
    conn.barrier()?;
    let secret = conn
        .get_text("dos.secret")?
        .ok_or(protocol("rank 0 published no job secret"))?;
    let secret = Secret::from_hex(&secret)?;
    let shm_fd = match own_shm {
        Some(fd) => fd,
        None => {
            let v = conn
                .get_text(&format!("dos.shm.{node_id}"))?
                .ok_or(protocol("the node's local rank 0 published no segment"))?;
            let (pid, fd) = v
                .split_once(':')
                .and_then(|(p, f)| Some((p.parse::<u32>().ok()?, f.parse::<RawFd>().ok()?)))
                .ok_or(protocol("the node's segment is not <pid>:<fd>"))?;
            dos_transport::shm::mem::open_peer_fd(pid, fd)?.into_raw_fd()
        }
    };
    let jobid = conn.kvsname.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Ok(Joined {
        conn,
        rank,
        size,
        local_rank,
        local_size,
        node_id,
        nnodes,
        node_addr,
        jobid,
        secret,
        shm_fd,
    })
}

impl Direct {
    /// A second handle on the server's socket.
    pub(super) fn socket_copy(&self) -> Result<UnixStream> {
        self.stream.try_clone().map_err(|source| Error::Wireup {
            op: "connect",
            source,
        })
    }

    fn send(&mut self, op: &'static str, c: &Command<'_>) -> Result<()> {
        let mut out = Vec::with_capacity(128);
        c.encode(&mut out)
            .map_err(|_| protocol("a PMI-1 line cannot be encoded"))?;
        self.stream
            .write_all(&out)
            .map_err(|source| Error::Wireup { op, source })
    }

    /// Reads one response line and hands it to `f`.
    fn recv<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(Response<'_>) -> Result<T>,
    ) -> Result<T> {
        loop {
            match split_line(&self.rbuf) {
                Ok(Some((line, used))) => {
                    let r = Response::parse(line)
                        .map_err(|_| protocol("the PMI server sent a malformed line"));
                    let out = r.and_then(f);
                    self.rbuf.drain(..used);
                    return out;
                }
                Ok(None) => {}
                Err(_) => return Err(protocol("the PMI server sent a malformed line")),
            }
            let mut chunk = [0u8; 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|source| Error::Wireup { op, source })?;
            if n == 0 {
                return Err(Error::Wireup {
                    op,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the PMI server closed the connection",
                    ),
                });
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    fn put_text(&mut self, key: &str, value: &str) -> Result<()> {
        let kvsname = self.kvsname.clone();
        self.send(
            "put",
            &Command::Put {
                kvsname: &kvsname,
                key,
                value,
            },
        )?;
        match self.recv("put", |r| match r {
            Response::PutResult { rc, .. } => Ok(rc),
            _ => Err(protocol("PMI server: unexpected answer to put")),
        })? {
            0 => Ok(()),
            _ => Err(protocol("the PMI server refused a put")),
        }
    }

    fn get_text(&mut self, key: &str) -> Result<Option<String>> {
        let kvsname = self.kvsname.clone();
        self.send(
            "get",
            &Command::Get {
                kvsname: &kvsname,
                key,
            },
        )?;
        self.recv("get", |r| match r {
            Response::GetResult {
                rc: 0,
                value: Some(v),
                ..
            } => Ok(Some(v.to_string())),
            Response::GetResult { .. } => Ok(None),
            _ => Err(protocol("PMI server: unexpected answer to get")),
        })
    }

    pub(super) fn barrier(&mut self) -> Result<()> {
        self.send("fence", &Command::BarrierIn)?;
        self.recv("fence", |r| match r {
            Response::BarrierOut => Ok(()),
            _ => Err(protocol("PMI server: unexpected answer to barrier_in")),
        })
    }

    /// `put` of a binary value, as hex.
    pub(super) fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        self.put_text(key, &hex)
    }

    /// `get` of a value put with [`Direct::put`].
    pub(super) fn get(&mut self, key: &str) -> Result<Vec<u8>> {
        let v = self.get_text(key)?.ok_or_else(|| Error::KeyNotFound {
            key: key.to_string(),
        })?;
        let b = v.as_bytes();
        if b.len() % 2 != 0 {
            return Err(protocol("a value in the key-value space is not hex"));
        }
        b.chunks(2)
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .ok_or(protocol("a value in the key-value space is not hex"))
            })
            .collect()
    }

    pub(super) fn abort(&mut self, code: i32) -> Result<()> {
        self.send("abort", &Command::Abort { code, msg: None })
    }

    pub(super) fn finalize(&mut self) -> Result<()> {
        self.send("finalize", &Command::Finalize)?;
        self.recv("finalize", |r| match r {
            Response::FinalizeAck => Ok(()),
            _ => Err(protocol("PMI server: unexpected answer to finalize")),
        })
    }
}

/// The node of each of the `size` ranks from a `PMI_process_mapping` value
/// (`(vector,(node,count,ranks),...)`; the pattern repeats when it covers
/// fewer ranks, as MPICH reads it). `None` when malformed, when a node id is
/// out of range or when the pattern covers no rank.
pub fn parse_process_mapping(s: &str, size: usize) -> Option<Vec<usize>> {
    let body = s.trim().strip_prefix("(vector")?.strip_suffix(')')?;
    let mut pattern: Vec<usize> = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let t = rest.strip_prefix(",(")?;
        let end = t.find(')')?;
        let mut it = t[..end].split(',').map(|v| v.trim().parse::<usize>().ok());
        let (node, count, ranks) = (it.next()??, it.next()??, it.next()??);
        if it.next().is_some() || node.checked_add(count)? > MAX_SIZE {
            return None;
        }
        for n in node..node + count {
            for _ in 0..ranks {
                if pattern.len() >= size {
                    break;
                }
                pattern.push(n);
            }
        }
        rest = &t[end + 1..];
    }
    if pattern.is_empty() {
        return None;
    }
    let out: Vec<usize> = pattern.iter().copied().cycle().take(size).collect();
    Some(out)
}

/// The first IPv4 address of an interface that is up and not loopback.
fn first_address() -> Option<IpAddr> {
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifs` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut p = ifs;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        let lo = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        if up && !lo && !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null address of the list.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(fam) == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found = Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
                break;
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(ifs) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};

    /// A PMI-1 server for one rank of a job of `size` on one end of a
    /// socket pair, answering as Slurm's plug-in does (no `msg`), or with
    /// `garbage` after init. Returns the rank's end.
    fn fake_server(size: usize, garbage: bool) -> (RawFd, std::thread::JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut kvs: HashMap<String, String> = HashMap::new();
            kvs.insert(
                "PMI_process_mapping".into(),
                format!("(vector,(0,1,{size}))"),
            );
            let mut w = b.try_clone().unwrap();
            for line in BufReader::new(b).lines() {
                let Ok(line) = line else { return };
                let mut out = Vec::new();
                let r = match Command::parse(&line).unwrap() {
                    Command::Init { .. } => {
                        "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0".to_string()
                    }
                    _ if garbage => "cmd=what\n".to_string(),
                    Command::GetMyKvsname => "cmd=my_kvsname kvsname=kvs_42_0 rc=0".into(),
                    Command::Put { key, value, .. } => {
                        kvs.insert(key.into(), value.into());
                        "cmd=put_result rc=0".into()
                    }
                    Command::Get { key, .. } => match kvs.get(key) {
                        Some(v) => format!("cmd=get_result rc=0 value={v}"),
                        None => "cmd=get_result rc=-1".into(),
                    },
                    Command::BarrierIn => "cmd=barrier_out".into(),
                    Command::Finalize => "cmd=finalize_ack".into(),
                    _ => return,
                };
                out.extend_from_slice(r.as_bytes());
                out.push(b'\n');
                if w.write_all(&out).is_err() {
                    return;
                }
            }
        });
        (a.into_raw_fd(), t)
    }

    fn vars(v: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |n| v.iter().find(|(k, _)| *k == n).map(|(_, x)| x.clone())
    }

    #[test]
    fn joins_a_pmi1_server_alone_on_its_node() {
        let (fd, t) = fake_server(1, false);
        let j = join(
            vars(vec![
                ("PMI_FD", fd.to_string()),
                ("PMI_RANK", "0".into()),
                ("PMI_SIZE", "1".into()),
            ]),
            Some(Duration::from_secs(10)),
            16384,
        )
        .unwrap();
        assert_eq!((j.rank, j.size, j.local_rank, j.local_size), (0, 1, 0, 1));
        assert_eq!((j.node_id, j.nnodes, j.node_addr), (0, 1, None));
        // The segment local rank 0 made is attachable.
        // SAFETY: join handed this descriptor to us; nothing else owns it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(j.shm_fd) };
        let seg = Segment::attach(fd).unwrap();
        assert_eq!(seg.layout().nranks, 1);
        let mut c = j.conn;
        c.put("tcp.0", &[0, 1, 0xfe, 0xff]).unwrap();
        c.barrier().unwrap();
        assert_eq!(c.get("tcp.0").unwrap(), [0, 1, 0xfe, 0xff]);
        assert!(matches!(c.get("nope"), Err(Error::KeyNotFound { .. })));
        c.finalize().unwrap();
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn bad_servers_and_variables_are_typed_errors() {
        // A server that answers nonsense: a protocol error, not a hang.
        let (fd, t) = fake_server(1, true);
        let e = join(
            vars(vec![
                ("PMI_FD", fd.to_string()),
                ("PMI_RANK", "0".into()),
                ("PMI_SIZE", "1".into()),
            ]),
            Some(Duration::from_secs(10)),
            16384,
        )
        .unwrap_err();
        assert!(matches!(e, Error::WireupProtocol { .. }), "{e}");
        t.join().unwrap();
        // A server that is gone: an I/O error.
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = join(
            vars(vec![
                ("PMI_FD", a.into_raw_fd().to_string()),
                ("PMI_RANK", "0".into()),
                ("PMI_SIZE", "2".into()),
            ]),
            Some(Duration::from_secs(10)),
            16384,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Wireup { .. }), "{e}");
        let var = |v| match join(vars(v), None, 16384) {
            Err(Error::Environment { var, .. }) => var,
            other => panic!("{other:?}"),
        };
        assert_eq!(var(vec![("PMI_RANK", "0".into())]), "PMI_FD");
        assert_eq!(var(vec![("PMI_FD", "x".into())]), "PMI_FD");
        assert_eq!(var(vec![("PMI_FD", "987654".into())]), "PMI_FD");
        assert_eq!(
            var(vec![
                ("PMI_FD", "0".into()),
                ("PMI_RANK", "3".into()),
                ("PMI_SIZE", "3".into())
            ]),
            "PMI_RANK"
        );
    }

    #[test]
    fn process_mappings_expand() {
        assert_eq!(
            parse_process_mapping("(vector,(0,3,2))", 6),
            Some(vec![0, 0, 1, 1, 2, 2])
        );
        assert_eq!(
            parse_process_mapping("(vector,(0,1,3),(1,1,1))", 4),
            Some(vec![0, 0, 0, 1])
        );
        // Cyclic: the pattern repeats.
        assert_eq!(
            parse_process_mapping("(vector,(0,2,1))", 4),
            Some(vec![0, 1, 0, 1])
        );
        assert_eq!(
            parse_process_mapping("(vector,(0,1,4))", 4),
            Some(vec![0; 4])
        );
        // Round trip with the writer.
        let node_of = [0, 0, 1, 2, 2, 2, 3];
        let s = super::super::simple::process_mapping(&node_of);
        assert_eq!(parse_process_mapping(&s, 7), Some(node_of.to_vec()));
        for bad in [
            "",
            "(vector)",
            "(vector,(0,1))",
            "(vector,(0,1,2,3))",
            "(vector,(a,1,2))",
            "(vector,(0,0,2))",
            "(vector,(0,1,2)",
            "vector,(0,1,2)",
            "(vector,(18446744073709551615,2,1))",
        ] {
            assert_eq!(parse_process_mapping(bad, 4), None, "{bad}");
        }
    }
}
