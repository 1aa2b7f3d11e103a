//! MPICH programs under dosrun, through PMI-1 (and PMI-2 when asked).
//!
//! A program built with MPICH (`mpicc.mpich`) finds its launcher through
//! PMI-1's "simple" protocol ([`dos::pmi::simple`]) on the descriptor named
//! by `PMI_FD`, and learns its rank and the job's size from `PMI_RANK` and
//! `PMI_SIZE`. dosrun serves it when the program links MPICH (its ELF
//! `DT_NEEDED` names `libmpich.so*` or `libmpi.so.12`: [`links_mpich`],
//! checked where dosrun runs ranks itself), or with `--mpi pmi1` (a script
//! that starts an MPICH program, a static one, or a program only on other
//! hosts); `--mpi none` turns it off. Every rank is then started through a
//! bridge,
//! `dosrun --pmi1-bridge PROGRAM ARGV0 ARGS...` (hidden), which:
//!
//! * makes a socket pair and starts the program as its child with one end
//!   inherited as `PMI_FD`, `PMI_RANK`=`DOS_RANK`, `PMI_SIZE`=`DOS_SIZE`,
//!   in the bridge's process group, with the parent-death signal;
//! * answers the program's PMI-1 commands, translating the key-value space
//!   to dos's own wire-up ([`dos::pmi::Client`], connected at `init`):
//!   `put` is a put, `barrier_in` a fence, `get` a get (after the fence, as
//!   PMI-1 has it), `abort` the job's abort (dosrun's usual report and
//!   status), `finalize` the client's finalize; `get_maxes`, `get_appnum`
//!   (0), `get_universe_size` (the job's size) and `get_my_kvsname`
//!   (`dos-JOBID`) are answered by the bridge; `get` of
//!   `PMI_process_mapping` is answered from `DOS_PMI_PROCESS_MAPPING`, which
//!   dosrun computes from its plan ([`dos::pmi::simple::process_mapping`]);
//! * exits as the program did: with its status, or killed by the same
//!   signal, so that dosrun's report, blame and exit status are those of a
//!   dos program. The signals dosrun forwards to a rank's process group
//!   (INT, TERM, HUP, USR1, USR2, QUIT) are ignored by the bridge and at
//!   their default in the program, which decides.
//!
//! A program whose `init` asks for `pmi_version=2` (MPICH built for
//! PMI-2, or a dos program with `DOS_PMI=2` and no `DOS_PMI_ADDR`) is
//! answered `pmi_version=2 pmi_subversion=0 rc=0` and then served PMI-2's
//! length-prefixed messages ([`dos::pmi::pmi2`]) on the same socket, by
//! the same put, fence, get, abort and finalize as PMI-1's: `fullinit`
//! (its `pmirank` must be the rank's; answered with rank, size, appnum 0,
//! the job id as `spawner-jobid`), `job-getid` (`dos-JOBID`),
//! `info-getjobattr` (`PMI_process_mapping`; any other key is not found),
//! `kvs-put`, `kvs-fence` (the barrier after which the puts are visible),
//! `kvs-get` (found or not), `abort` (exit code 1: PMI-2 carries none),
//! `finalize` (answered, then the conversation ends). Node attributes
//! would need a space shared by the node's bridges: `info-getnodeattr`
//! finds none and `info-putnodeattr` is refused (`rc=-1`). A malformed
//! message is the rank's own fault, as a line that is no PMI-1.
//!
//! A wire-up call that fails (a fence fails when another rank ended)
//! leaves the program waiting unanswered for up to 5 s, so that dosrun,
//! which is stopping the job, ends it and blames the rank that failed
//! first; after that, or at once for a line that is no PMI-1, the bridge
//! ends the program (SIGKILL) after a line on stderr naming the rank and
//! the problem, and exits 1. Standard streams are the program's
//! own (inherited), so `--tag-output` and stdin work unchanged. Ranks on
//! other hosts run their bridge from the agent's dosrun (`--agent-path`).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use dos::pmi::pmi2;
use dos::pmi::simple::{split_line, Command as Pmi, Response};
use dos::pmi::{self, Client};

/// The hidden first argument of the bridge mode.
pub const BRIDGE_ARG: &str = "--pmi1-bridge";
/// What dosrun exports to the bridges: the `PMI_process_mapping` value.
pub const ENV_PROCESS_MAPPING: &str = "DOS_PMI_PROCESS_MAPPING";
/// The sizes the bridge announces (`get_maxes`), those of hydra.
const KVSNAME_MAX: u32 = 256;
const KEYLEN_MAX: u32 = 64;
const VALLEN_MAX: u32 = 1024;
/// The signals dosrun forwards, which the bridge leaves to the program.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGQUIT,
];

/// Whether the argument list asks for the bridge mode.
pub fn is_bridge_mode(first: Option<&OsStr>) -> bool {
    first == Some(OsStr::new(BRIDGE_ARG))
}

/// The bridge's arguments for `program` (resolved) run as `argv0 args`.
pub fn bridge_args(program: &OsStr, argv0: &OsStr, args: &[OsString]) -> Vec<OsString> {
    let mut v = vec![
        OsString::from(BRIDGE_ARG),
        program.to_os_string(),
        argv0.to_os_string(),
    ];
    v.extend_from_slice(args);
    v
}

/// Runs the bridge; `argv` is dosrun's whole argument list. Returns the
/// exit status (or does not return: killed by the program's signal).
pub fn run(argv: Vec<OsString>) -> i32 {
    let rank = std::env::var(pmi::ENV_RANK).unwrap_or_else(|_| "0".into());
    let say = |msg: &str| {
        // PMI-2's errors name their protocol themselves.
        let proto = if msg.starts_with("PMI-2: ") {
            ""
        } else {
            "PMI-1: "
        };
        let _ = writeln!(io::stderr().lock(), "dosrun: rank {rank}: {proto}{msg}");
    };
    let [_, _, program, argv0, args @ ..] = argv.as_slice() else {
        say("usage: dosrun --pmi1-bridge PROGRAM ARGV0 [ARGS...]");
        return 2;
    };
    let size = std::env::var(pmi::ENV_SIZE).unwrap_or_else(|_| "1".into());
    let (ours, theirs) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            say(&format!("socketpair: {e}"));
            return 125;
        }
    };
    for &sig in &FORWARDED {
        // SAFETY: setting a signal's disposition to SIG_IGN.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // The bridge's own socket pair to dosrun's service (`DOS_PMI_FD`) is
    // the bridge's: the program neither inherits it nor hears of it.
    if let Some(pfd) = std::env::var(pmi::ENV_PMI_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: F_SETFD on a descriptor number dosrun gave this process;
        // on a number that is not open it fails harmlessly.
        unsafe { libc::fcntl(pfd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let fd = theirs.as_raw_fd();
    let parent = std::process::id() as i32;
    let mut cmd = Command::new(program);
    cmd.arg0(argv0)
        .args(args)
        .env_remove(pmi::ENV_PMI_FD)
        .env("PMI_FD", fd.to_string())
        .env("PMI_RANK", &rank)
        .env("PMI_SIZE", &size);
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl,
    // prctl, getppid, signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            for &sig in &FORWARDED {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
                _ => 126,
            };
            say(&format!("cannot start {}: {e}", program.to_string_lossy()));
            return status;
        }
    };
    drop(OwnedFd::from(theirs));
    let mut bridge = Bridge {
        rank: rank.parse().unwrap_or(0),
        size: size.parse().unwrap_or(1),
        client: None,
        mapping: std::env::var(ENV_PROCESS_MAPPING).ok(),
        pmi2: false,
        finalized2: false,
    };
    let mut ours = ours;
    if let Err((e, hold)) = bridge.serve(&mut ours) {
        // A fence fails because another rank ended: dosrun is stopping the
        // job and blames that rank, unless this one exits first. The
        // program waits (unanswered) until dosrun ends it, or HOLD passes.
        // A line that is no PMI-1 is this rank's own fault: no wait.
        let until = std::time::Instant::now() + if hold { HOLD } else { Default::default() };
        while std::time::Instant::now() < until {
            match child.try_wait() {
                Ok(Some(st)) => return exit_as(st),
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        say(&e);
        let _ = child.kill();
        let _ = child.wait();
        return 1;
    }
    drop(ours);
    match child.wait() {
        Ok(st) => exit_as(st),
        Err(e) => {
            say(&format!("wait: {e}"));
            125
        }
    }
}

/// How long the bridge leaves dosrun to end a program whose wire-up call
/// failed before ending it itself.
const HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// Exits as the program did: its status, or its signal raised again here.
fn exit_as(st: std::process::ExitStatus) -> i32 {
    {
        match (st.code(), st.signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => {
                // SAFETY: back to the default disposition, then the signal
                // the program died of, to ourselves.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
                128 + sig
            }
            _ => 1,
        }
    }
}

/// The bridge's state.
struct Bridge {
    rank: usize,
    size: usize,
    client: Option<Client>,
    mapping: Option<String>,
    /// PMI-2 was asked for at `init`: framed messages follow.
    pmi2: bool,
    /// PMI-2's `finalize` was answered: the conversation is over.
    finalized2: bool,
}

impl Bridge {
    /// Answers the program until it closes its end; `Err` is the line to
    /// print before ending it, and whether the failure is a wire-up call's
    /// (then dosrun is given time to end the job first).
    fn serve(&mut self, s: &mut UnixStream) -> Result<(), (String, bool)> {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut out = Vec::new();
        loop {
            loop {
                out.clear();
                let used = if self.pmi2 {
                    let Some((m, used)) = pmi2::decode(&buf)
                        .map_err(|e| (format!("PMI-2: malformed message: {e}"), false))?
                    else {
                        break;
                    };
                    self.answer2(&m, &mut out)?;
                    used
                } else {
                    let Some((line, used)) =
                        split_line(&buf).map_err(|e| (e.to_string(), false))?
                    else {
                        break;
                    };
                    let cmd = Pmi::parse(line).map_err(|e| (format!("{e} in {line:?}"), false))?;
                    self.answer(cmd, &mut out).map_err(|e| (e, true))?;
                    used
                };
                buf.drain(..used);
                if !out.is_empty() {
                    if let Err(e) = s.write_all(&out) {
                        // The program is gone: its exit tells the rest.
                        let _ = e;
                        return Ok(());
                    }
                }
                if self.finalized2 {
                    // PMI-2's finalize ends the conversation.
                    return Ok(());
                }
            }
            match s.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset connection: the program exited.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Answers one PMI-2 message; `Err` as for [`Bridge::serve`].
    fn answer2(&mut self, m: &pmi2::Message, out: &mut Vec<u8>) -> Result<(), (String, bool)> {
        let own = |e: String| (format!("PMI-2: {e}"), false);
        let wireup = |e: String| (format!("PMI-2: {e}"), true);
        let send = |m: pmi2::Message, out: &mut Vec<u8>| {
            m.encode(out)
                .map_err(|e| (format!("PMI-2: cannot encode an answer: {e}"), false))
        };
        // MPICH's and dos's fullinit carry pmijobid, pmirank and threaded
        // (no pmiversion, which the typed view wants): read it as it is.
        if m.cmd() == "fullinit" {
            let rank = m
                .get("pmirank")
                .ok_or_else(|| own("fullinit without pmirank".into()))?;
            if rank.trim().parse::<usize>().ok() != Some(self.rank) {
                return Err(own(format!(
                    "fullinit: pmirank {rank:?} is not this rank ({})",
                    self.rank
                )));
            }
            let size = u32::try_from(self.size).unwrap_or(u32::MAX);
            let rank = u32::try_from(self.rank).unwrap_or(u32::MAX);
            return send(pmi2::fullinit_response(rank, size, &kvsname()), out);
        }
        match pmi2::Command::from_message(m).map_err(|e| own(e.to_string()))? {
            // Answered above (the typed view is never reached for it).
            pmi2::Command::FullInit { .. } => Err(own("fullinit: unexpected".into())),
            pmi2::Command::JobGetId => send(
                pmi2::Message::new("job-getid-response", &[("jobid", &kvsname()), ("rc", "0")]),
                out,
            ),
            pmi2::Command::GetJobAttr { key } => {
                let v = (key == "PMI_process_mapping").then(|| self.mapping());
                send(
                    pmi2::found_response("info-getjobattr-response", v.as_deref()),
                    out,
                )
            }
            // Node attributes would need a space shared by the node's
            // bridges, which dosrun has not: none is found, none is kept.
            pmi2::Command::GetNodeAttr { .. } => {
                send(pmi2::found_response("info-getnodeattr-response", None), out)
            }
            pmi2::Command::PutNodeAttr { .. } => send(
                pmi2::Message::new(
                    "info-putnodeattr-response",
                    &[
                        ("rc", "-1"),
                        ("errmsg", "node attributes are not supported"),
                    ],
                ),
                out,
            ),
            pmi2::Command::KvsPut { key, value } => {
                self.put(&key, &value).map_err(wireup)?;
                send(pmi2::Message::new("kvs-put-response", &[("rc", "0")]), out)
            }
            pmi2::Command::KvsFence => {
                self.fence().map_err(wireup)?;
                send(
                    pmi2::Message::new("kvs-fence-response", &[("rc", "0")]),
                    out,
                )
            }
            pmi2::Command::KvsGet { key, .. } => {
                let v = self.get(&key).map_err(wireup)?;
                send(pmi2::found_response("kvs-get-response", v.as_deref()), out)
            }
            pmi2::Command::Finalize => {
                self.finalize().map_err(wireup)?;
                self.finalized2 = true;
                send(pmi2::Message::new("finalize-response", &[("rc", "0")]), out)
            }
            pmi2::Command::Abort { msg, .. } => {
                // PMI-2 carries no exit code: 1, as MPI_Abort's default.
                let msg = if msg.is_empty() {
                    "MPI_Abort".into()
                } else {
                    msg
                };
                self.abort(1, &msg).map_err(wireup)
            }
        }
    }

    /// The `PMI_process_mapping` value.
    fn mapping(&self) -> String {
        self.mapping
            .clone()
            .unwrap_or_else(|| dos::pmi::simple::process_mapping(&vec![0; self.size]))
    }

    /// A put into the job's key-value space (PMI-1 `put`, PMI-2 `kvs-put`).
    fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.client()?
            .put(key, value.as_bytes())
            .map_err(|e| format!("put {key}: {e}"))
    }

    /// A get from the key-value space (after a fence); `None`: no such key.
    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.client()?.get(key) {
            Ok(v) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| format!("get {key}: the value is not text")),
            Err(dos::Error::KeyNotFound { .. }) => Ok(None),
            Err(e) => Err(format!("get {key}: {e}")),
        }
    }

    /// The barrier over all ranks after which the puts are visible (PMI-1
    /// `barrier_in`, PMI-2 `kvs-fence`).
    fn fence(&mut self) -> Result<(), String> {
        self.client()?.fence().map_err(|e| format!("barrier: {e}"))
    }

    fn finalize(&mut self) -> Result<(), String> {
        if let Some(c) = self.client.as_mut() {
            c.finalize().map_err(|e| format!("finalize: {e}"))?;
        }
        Ok(())
    }

    /// The job's abort: dosrun's report names this rank and `msg`.
    fn abort(&mut self, code: i32, msg: &str) -> Result<(), String> {
        let rank = self.rank;
        self.client()?
            .abort(code, msg)
            .map_err(|e| format!("rank {rank}: abort: {e}"))
    }

    fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            match Client::from_env() {
                Ok(Some(c)) => self.client = Some(c),
                Ok(None) => return Err("not started by dosrun (no DOS_PMI_ADDR)".into()),
                Err(e) => return Err(format!("cannot reach dosrun's wire-up: {e}")),
            }
        }
        self.client
            .as_mut()
            .ok_or_else(|| "no wire-up client".to_string())
    }

    fn answer(&mut self, cmd: Pmi<'_>, out: &mut Vec<u8>) -> Result<(), String> {
        let kvsname = kvsname();
        let reply = |r: Response<'_>, out: &mut Vec<u8>| r.encode(out).map_err(|e| e.to_string());
        match cmd {
            Pmi::Init { version, .. } => {
                self.client()?;
                // PMI-2 is asked for with `pmi_version=2`; its framed
                // messages follow on the same connection.
                let (version, subversion) = if version == 2 { (2, 0) } else { (1, 1) };
                self.pmi2 = version == 2;
                reply(
                    Response::Init {
                        version,
                        subversion,
                        rc: 0,
                    },
                    out,
                )
            }
            Pmi::GetMaxes => reply(
                Response::Maxes {
                    kvsname_max: KVSNAME_MAX,
                    keylen_max: KEYLEN_MAX,
                    vallen_max: VALLEN_MAX,
                },
                out,
            ),
            Pmi::GetAppnum => reply(Response::Appnum(0), out),
            Pmi::GetUniverseSize => reply(
                Response::UniverseSize(u32::try_from(self.size).unwrap_or(u32::MAX)),
                out,
            ),
            Pmi::GetMyKvsname => reply(Response::MyKvsname(&kvsname), out),
            Pmi::Put { key, value, .. } => {
                self.put(key, value)?;
                reply(
                    Response::PutResult {
                        rc: 0,
                        msg: "success",
                    },
                    out,
                )
            }
            Pmi::Get { key, .. } => {
                let v = if key == "PMI_process_mapping" {
                    Some(self.mapping())
                } else {
                    self.get(key)?
                };
                reply(
                    match &v {
                        Some(v) => Response::GetResult {
                            rc: 0,
                            msg: "success",
                            value: Some(v),
                        },
                        None => Response::GetResult {
                            rc: -1,
                            msg: "key_not_found",
                            value: None,
                        },
                    },
                    out,
                )
            }
            Pmi::BarrierIn => {
                self.fence()?;
                reply(Response::BarrierOut, out)
            }
            Pmi::Finalize => {
                self.finalize()?;
                reply(Response::FinalizeAck, out)
            }
            Pmi::Abort { code, msg } => self.abort(code, msg.unwrap_or("MPI_Abort")),
        }
    }
}

/// The job's key-value space name, PMI-2's job id as well: `dos-JOBID`.
fn kvsname() -> String {
    format!(
        "dos-{}",
        std::env::var(pmi::ENV_JOBID).unwrap_or_else(|_| "0".into())
    )
}

/// Longest dynamic section and string table read when looking for MPICH.
const MAX_ELF_READ: u64 = 1 << 20;

/// Whether the ELF executable at `path` links MPICH (a `DT_NEEDED` entry
/// `libmpich.so*` or MPICH's ABI `libmpi.so.12`): then dosrun serves it
/// PMI-1 without `--mpi pmi1`. Reads at most a few bounded pieces of the
/// file; anything that is not a little-endian ELF64 with a dynamic section
/// (a script, a static program, a truncated file) is `false`.
pub fn links_mpich(path: &std::path::Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    needed(&mut f)
        .unwrap_or_default()
        .iter()
        .any(|n| n.starts_with("libmpich.so") || n == "libmpi.so.12")
}

/// The `DT_NEEDED` names of a little-endian ELF64 file; `None` when it is
/// not one or is malformed.
fn needed(f: &mut (impl Read + std::io::Seek)) -> Option<Vec<String>> {
    use std::io::SeekFrom;
    let mut read_at = |off: u64, len: u64| -> Option<Vec<u8>> {
        if len > MAX_ELF_READ {
            return None;
        }
        f.seek(SeekFrom::Start(off)).ok()?;
        let mut v = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact(&mut v).ok()?;
        Some(v)
    };
    let u16_at = |b: &[u8], o: usize| -> Option<u64> {
        Some(u64::from(u16::from_le_bytes(
            b.get(o..o + 2)?.try_into().ok()?,
        )))
    };
    let u64_at = |b: &[u8], o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
    };
    let h = read_at(0, 64)?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if h[..4] != *b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(&h, 32)?, u16_at(&h, 54)?, u16_at(&h, 56)?);
    if phentsize < 56 || phnum > 512 {
        return None;
    }
    let ph = read_at(phoff, phentsize * phnum)?;
    // (type, offset, vaddr, filesz) of each program header.
    let phdrs: Vec<(u32, u64, u64, u64)> = (0..phnum as usize)
        .map(|i| {
            let b = &ph[i * phentsize as usize..];
            Some((
                u32::try_from(u64_at(b, 0)? & 0xffff_ffff).ok()?,
                u64_at(b, 8)?,
                u64_at(b, 16)?,
                u64_at(b, 32)?,
            ))
        })
        .collect::<Option<_>>()?;
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    let &(_, dyn_off, _, dyn_size) = phdrs.iter().find(|p| p.0 == PT_DYNAMIC)?;
    let dynamic = read_at(dyn_off, dyn_size)?;
    let (mut strtab, mut strsz, mut needed) = (None, None, Vec::new());
    for e in dynamic.chunks_exact(16) {
        let (tag, val) = (u64_at(e, 0)?, u64_at(e, 8)?);
        match tag {
            0 => break,
            1 => needed.push(val),
            5 => strtab = Some(val),
            10 => strsz = Some(val),
            _ => {}
        }
    }
    let (addr, size) = (strtab?, strsz?);
    let &(_, off, vaddr, _) = phdrs
        .iter()
        .find(|p| p.0 == PT_LOAD && p.2 <= addr && addr - p.2 < p.3)?;
    let table = read_at(off.checked_add(addr - vaddr)?, size)?;
    Some(
        needed
            .into_iter()
            .filter_map(|o| {
                let s = table.get(usize::try_from(o).ok()?..)?;
                let end = s.iter().position(|&b| b == 0)?;
                Some(String::from_utf8_lossy(&s[..end]).into_owned())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// A minimal ELF64: one PT_LOAD over the whole file at vaddr 0x1000,
    /// one PT_DYNAMIC, a string table with `libs`.
    fn elf(libs: &[&str]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut offs = Vec::new();
        for l in libs {
            offs.push(strtab.len() as u64);
            strtab.extend_from_slice(l.as_bytes());
            strtab.push(0);
        }
        let phoff = 64u64;
        let dyn_off = phoff + 2 * 56;
        let ndyn = libs.len() as u64 + 3;
        let str_off = dyn_off + ndyn * 16;
        let total = str_off + strtab.len() as u64;
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[32..40].copy_from_slice(&phoff.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |t: u32, off: u64, vaddr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&t.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p
        };
        b.extend(ph(1, 0, 0x1000, total));
        b.extend(ph(2, dyn_off, 0x1000 + dyn_off, ndyn * 16));
        let mut dynent = |tag: u64, val: u64| {
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&val.to_le_bytes());
        };
        for o in &offs {
            dynent(1, *o);
        }
        dynent(5, 0x1000 + str_off);
        dynent(10, strtab.len() as u64);
        dynent(0, 0);
        b.extend_from_slice(&strtab);
        b
    }

    #[test]
    fn finds_the_needed_libraries() {
        let libs = ["libmpich.so.12", "libc.so.6"];
        assert_eq!(
            needed(&mut Cursor::new(elf(&libs))),
            Some(libs.map(String::from).to_vec())
        );
        // The detection itself, on files.
        let dir = std::env::temp_dir().join(format!("dosrun-pmi1-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (libs, want) in [
            (&["libmpich.so.12", "libc.so.6"][..], true),
            (&["libmpi.so.12"], true),
            (&["libmpi.so.40", "libc.so.6"], false),
            (&["libc.so.6"], false),
        ] {
            let p = dir.join("prog");
            std::fs::write(&p, elf(libs)).unwrap();
            assert_eq!(links_mpich(&p), want, "{libs:?}");
        }
        std::fs::write(dir.join("script"), "#!/bin/sh\n").unwrap();
        assert!(!links_mpich(&dir.join("script")));
        assert!(!links_mpich(&dir.join("missing")));
        std::fs::remove_dir_all(&dir).unwrap();
        // This test program is an ELF that does not link MPICH.
        let me = std::env::current_exe().unwrap();
        assert!(needed(&mut std::fs::File::open(&me).unwrap()).is_some_and(|n| !n.is_empty()));
        assert!(!links_mpich(&me));
    }

    #[test]
    fn truncated_files_are_not_elf() {
        let full = elf(&["libmpich.so.12"]);
        for n in 0..full.len() {
            assert_eq!(needed(&mut Cursor::new(&full[..n])), None, "{n}");
        }
    }

    proptest! {
        #[test]
        fn corrupted_files_never_panic(at in 0usize..200, byte in any::<u8>()) {
            let mut b = elf(&["libmpich.so.12", "libc.so.6"]);
            let i = at % b.len();
            b[i] = byte;
            let _ = needed(&mut Cursor::new(b));
        }
    }
}
