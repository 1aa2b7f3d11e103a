//! Thin, safe wrappers over the Linux calls dosrun needs.
//!
//! Most go through `rustix` (safe, typed, no `errno` juggling); 64 random
//! bits come from `getrandom`. A few stay on `libc`, each for a reason given
//! at the function: the signalfd and the signal mask ([`SignalFd`], which
//! rustix does not wrap), the reports of stopped children
//! ([`stop_reports`]: rustix's `waitid` does not tell which child),
//! `poll` (dosrun's poll sets are arrays of `libc::pollfd`, which rustix's
//! borrowed `PollFd`s would not hold across the loop), and
//! `sysconf` ([`online_cpus`]). Every `unsafe` of the launcher outside the
//! child set-up in `spawn` lives here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::fs::{Access, FileType, Mode, OFlags};
use rustix::process::{Pid, Resource, Rlimit, Signal, WaitId, WaitIdOptions, WaitOptions};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// It called `exit(code)`.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal.
        sig: i32,
        /// It dumped core.
        core: bool,
    },
}

impl ExitCause {
    /// The shell's view: the exit code, or 128 plus the signal.
    pub fn status(self) -> i32 {
        match self {
            ExitCause::Exited(c) => c,
            ExitCause::Signaled { sig, .. } => 128 + sig,
        }
    }

    /// Exited with status 0.
    pub fn success(self) -> bool {
        self == ExitCause::Exited(0)
    }

    /// "exited with status 3", "was killed by signal 9 (SIGKILL)".
    pub fn describe(self) -> String {
        match self {
            ExitCause::Exited(c) => format!("exited with status {c}"),
            ExitCause::Signaled { sig, core } => format!(
                "was killed by signal {sig} ({}){}",
                signal_name(sig),
                if core { " (core dumped)" } else { "" }
            ),
        }
    }
}

/// The conventional name of signal `sig` (`"SIGKILL"`), or `"unknown signal"`.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        s if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s) => "a real-time signal",
        _ => "unknown signal",
    }
}

/// A `libc` return value as a result.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens `/dev/null` on any of descriptors 0, 1 and 2 that is closed, so that
/// descriptors dosrun opens later never land there.
pub fn ensure_std_fds_open() {
    // `open` takes the lowest free descriptor: while that is one of 0, 1
    // and 2, it stays open for good (inherited, as a standard stream is).
    while let Ok(fd) = rustix::fs::open("/dev/null", OFlags::RDWR, Mode::empty()) {
        if fd.as_raw_fd() > 2 {
            break;
        }
        let _ = fd.into_raw_fd();
    }
}

/// The host name (`uname`'s node name), lossily decoded.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// 64 random bits from the kernel (`getrandom`).
pub fn random_u64() -> io::Result<u64> {
    getrandom::u64().map_err(io::Error::from)
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A close-on-exec pair of connected Unix stream sockets.
pub fn socketpair() -> io::Result<(UnixStream, UnixStream)> {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((UnixStream::from(a), UnixStream::from(b)))
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let fl = rustix::fs::fcntl_getfl(fd)?;
    let new = if on {
        fl | OFlags::NONBLOCK
    } else {
        fl - OFlags::NONBLOCK
    };
    if new != fl {
        rustix::fs::fcntl_setfl(fd, new)?;
    }
    Ok(())
}

/// Process `pid` as rustix names it (`EINVAL` for 0 or less).
fn pid_of(pid: i32) -> io::Result<Pid> {
    Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A descriptor that becomes readable when process `pid` exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(
        pid_of(pid)?,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// How child `pid` ended, if it did ([`peek_exit`]); an error, which cannot
/// happen for an unreaped child of ours, counts as killed.
pub fn ended(pid: i32) -> Option<ExitCause> {
    match peek_exit(pid) {
        Ok(c) => c,
        Err(_) => Some(ExitCause::Signaled {
            sig: libc::SIGKILL,
            core: false,
        }),
    }
}

/// How child `pid` ended, without reaping it (`WNOWAIT`): the zombie keeps
/// its pid and process group reserved until [`reap`]. `None` while it runs.
pub fn peek_exit(pid: i32) -> io::Result<Option<ExitCause>> {
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    let Some(st) = rustix::process::waitid(WaitId::Pid(pid_of(pid)?), opts)? else {
        return Ok(None);
    };
    Ok(Some(match st.exit_status() {
        Some(code) if st.exited() => ExitCause::Exited(code),
        _ => ExitCause::Signaled {
            sig: st.terminating_signal().unwrap_or(0),
            core: st.dumped(),
        },
    }))
}

/// Reaps child `pid`, waiting for it if it still runs.
pub fn reap(pid: i32) {
    let Ok(pid) = pid_of(pid) else { return };
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(Some(pid), WaitOptions::empty())
    {}
}

/// Sends `sig` to process group `pgid`. Errors (the group is gone) are
/// ignored, and so are numbers that name no signal.
///
/// Callers only name groups whose leader they have not reaped, so the
/// group id cannot have been reused.
pub fn kill_group(pgid: i32, sig: i32) {
    if let (Some(pgid), Some(sig)) = (Pid::from_raw(pgid), Signal::from_named_raw(sig)) {
        if !pgid.is_init() {
            let _ = rustix::process::kill_process_group(pgid, sig);
        }
    }
}

/// The signals dosrun takes through its signalfd.
pub const HANDLED_SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// A signalfd receiving [`HANDLED_SIGNALS`] and SIGCHLD, which are blocked
/// in this thread. A blocked signal is queued even when its disposition is
/// to ignore it (as `dosrun ... &` in a script inherits SIGINT), so dosrun
/// sees every one of them, except SIGHUP when it is ignored (`nohup
/// dosrun ...` asks to survive a hangup). SIGCHLD tells of children stopped and continued
/// ([`stop_reports`]); their exits are watched through pidfds.
#[derive(Debug)]
pub struct SignalFd(OwnedFd);

impl SignalFd {
    /// Blocks the signals and opens the descriptor (non-blocking, close-on-exec).
    pub fn new() -> io::Result<SignalFd> {
        // SAFETY: an all-zero sigset_t is valid storage for sigemptyset.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is valid storage; the signal numbers are valid.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in HANDLED_SIGNALS {
                // Started under nohup: hangups stay ignored, not forwarded.
                if s == libc::SIGHUP && ignored(s) {
                    continue;
                }
                libc::sigaddset(&mut set, s);
            }
            libc::sigaddset(&mut set, libc::SIGCHLD);
        }
        // SIGCHLD for stops too (no SA_NOCLDSTOP): the default disposition.
        // SAFETY: resetting a disposition has no memory effects.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
        // SAFETY: valid set pointer; dosrun is single-threaded.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: valid set pointer; -1 asks for a new descriptor.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: a fresh descriptor that we own.
        Ok(SignalFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The next pending signal, if any.
    pub fn next(&self) -> Option<i32> {
        // A `signalfd_siginfo` is 128 bytes, the signal number first.
        let mut si = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match rustix::io::read(&self.0, &mut si[..]) {
            Ok(n) if n == si.len() => {
                let signo = u32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
                i32::try_from(signo).ok()
            }
            _ => None,
        }
    }
}

/// Whether signal `sig` is ignored (its disposition is SIG_IGN).
fn ignored(sig: i32) -> bool {
    // SAFETY: an all-zero sigaction is valid storage for the old action.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    r == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// Children stopped or continued since the last call, as the kernel
/// reports them (`waitid(WSTOPPED | WCONTINUED)`, which consumes these
/// reports and never reaps): `(pid, Some(signal))` for a child stopped by
/// `signal`, `(pid, None)` for one continued.
pub fn stop_reports() -> Vec<(i32, Option<i32>)> {
    let mut out = Vec::new();
    // Each call consumes one report; a bound keeps a storm finite.
    for _ in 0..65536 {
        // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer; P_ALL names only our own children.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG,
            )
        };
        // SAFETY: waitid filled `info` for a child state change, or left it zeroed.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if r != 0 || pid == 0 {
            break;
        }
        match info.si_code {
            libc::CLD_STOPPED | libc::CLD_TRAPPED => out.push((pid, Some(status))),
            libc::CLD_CONTINUED => out.push((pid, None)),
            _ => {}
        }
    }
    out
}

/// `poll(2)`; an interrupted call reports nothing ready.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid array of `len` pollfd structs.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// `read(2)` into `buf`, retrying on EINTR.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// `write(2)` from `buf`, retrying on EINTR.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::io::write(fd, buf) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// The type of the file open at `fd`, if it can be told.
fn file_type(fd: BorrowedFd<'_>) -> Option<FileType> {
    rustix::fs::fstat(fd)
        .ok()
        .map(|st| FileType::from_raw_mode(st.st_mode))
}

/// Whether `fd` is a pipe or FIFO (writes of at most `PIPE_BUF` bytes are
/// atomic and do not block once poll reports it writable).
pub fn is_fifo(fd: BorrowedFd<'_>) -> bool {
    file_type(fd) == Some(FileType::Fifo)
}

/// Whether `fd` is a regular file (always writable, never worth chunking).
pub fn is_regular_file(fd: BorrowedFd<'_>) -> bool {
    file_type(fd) == Some(FileType::RegularFile)
}

/// Whether `fd` is a terminal that belongs to a foreground job other than
/// ours (reading it would stop dosrun with SIGTTIN).
pub fn is_background_tty(fd: BorrowedFd<'_>) -> bool {
    rustix::termios::isatty(fd)
        && rustix::termios::tcgetpgrp(fd).ok() != Some(rustix::process::getpgrp())
}

/// The user id of the process at the other end of Unix socket `fd`.
pub fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(fd)?.uid.as_raw())
}

/// The effective user id of dosrun.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The pid of dosrun.
pub fn getpid() -> i32 {
    rustix::process::getpid().as_raw_pid()
}

/// Whether `path` names a file this process may execute (`access(X_OK)`).
pub fn executable(path: &Path) -> bool {
    rustix::fs::access(path, Access::EXEC_OK).is_ok()
}

/// Raises the soft limit on open descriptors to the hard limit (a job with
/// many ranks holds three descriptors per rank), returning the old limits
/// for the ranks to get back.
pub fn raise_nofile_limit() -> Option<libc::rlimit> {
    let old = rustix::process::getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let (cur, max) = (
        old.current.unwrap_or(libc::RLIM_INFINITY),
        old.maximum.unwrap_or(libc::RLIM_INFINITY),
    );
    if cur >= max {
        return None;
    }
    let new = Rlimit {
        current: old.maximum,
        maximum: old.maximum,
    };
    rustix::process::setrlimit(Resource::Nofile, new)
        .ok()
        .map(|()| libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        })
}

/// The current soft limit on open descriptors (`RLIMIT_NOFILE`), if known.
pub fn nofile_limit() -> Option<u64> {
    let l = rustix::process::getrlimit(Resource::Nofile);
    Some(l.current.unwrap_or(libc::RLIM_INFINITY))
}

/// The text of `errno` value `e` (`strerror`), for messages about a child.
pub fn strerror(e: i32) -> String {
    let s = io::Error::from_raw_os_error(e).to_string();
    match s.strip_suffix(&format!(" (os error {e})")) {
        Some(t) => t.to_string(),
        None => s,
    }
}

/// Number of CPUs online on this machine (at least 1).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn exit_causes_read_like_a_shell() {
        assert_eq!(ExitCause::Exited(3).status(), 3);
        let k = ExitCause::Signaled {
            sig: libc::SIGKILL,
            core: false,
        };
        assert_eq!(k.status(), 137);
        assert_eq!(k.describe(), "was killed by signal 9 (SIGKILL)");
        assert_eq!(ExitCause::Exited(3).describe(), "exited with status 3");
        assert!(ExitCause::Exited(0).success());
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(1000), "unknown signal");
    }

    #[test]
    fn errno_texts_are_strerror_s() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(strerror(libc::EACCES), "Permission denied");
    }

    #[test]
    fn pipes_are_close_on_exec_and_switch_blocking() {
        let (r, w) = pipe().unwrap();
        let fd_flags = rustix::io::fcntl_getfd(&r).unwrap();
        assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert!(is_fifo(r.as_fd()) && !is_regular_file(r.as_fd()));
        set_nonblocking(r.as_fd(), true).unwrap();
        let mut b = [0u8; 4];
        assert_eq!(
            read(r.as_fd(), &mut b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(write(w.as_fd(), b"ab").unwrap(), 2);
        assert_eq!(read(r.as_fd(), &mut b).unwrap(), 2);
        set_nonblocking(r.as_fd(), false).unwrap();
        assert!(!rustix::fs::fcntl_getfl(&r)
            .unwrap()
            .contains(OFlags::NONBLOCK));
    }

    #[test]
    fn process_ids_and_limits() {
        assert_eq!(getpid() as u32, std::process::id());
        assert!(nofile_limit().is_some_and(|l| l > 0));
        assert!(!hostname().is_empty());
        // Not a signal, not a group: nothing happens.
        kill_group(getpid(), 1000);
        kill_group(0, libc::SIGKILL);
    }

    #[test]
    fn a_killed_child_reads_as_signaled() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let fd = pidfd_open(pid).unwrap();
        assert_eq!(peek_exit(pid).unwrap(), None);
        child.kill().unwrap();
        let mut p = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut p, 10_000).unwrap(), 1);
        let killed = ExitCause::Signaled {
            sig: libc::SIGKILL,
            core: false,
        };
        assert_eq!(ended(pid), Some(killed));
        reap(pid);
        assert!(peek_exit(pid).is_err());
        // Reaped already: nothing left for the standard library to wait for.
        assert!(child.try_wait().is_err());
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random_u64().unwrap(), random_u64().unwrap());
    }

    #[test]
    fn children_stay_zombies_until_reaped() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let fd = pidfd_open(pid).unwrap();
        let mut p = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut p, 10_000).unwrap(), 1);
        assert_eq!(peek_exit(pid).unwrap(), Some(ExitCause::Exited(7)));
        assert_eq!(peek_exit(pid).unwrap(), Some(ExitCause::Exited(7)));
        assert_eq!(child.wait().unwrap().code(), Some(7));
        assert!(peek_exit(pid).is_err());
    }
}
