//! Thin, safe wrappers over the Linux calls dosrun needs (libc directly).
//!
//! Every `unsafe` of the launcher outside the child set-up in `spawn` lives here.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            // SAFETY: a valid NUL-terminated path; the lowest free descriptor
            // is `fd`, which is where we want it. It stays open for good.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The host name (`gethostname`), lossily decoded.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `len - 1` bytes, leaving room for a NUL.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if r != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// 64 random bits from the kernel (`getrandom`).
pub fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: writes at most `len - got` bytes into the rest of `b`.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok(u64::from_ne_bytes(b))
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor the caller borrows.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let new = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    if new != fl {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// A descriptor that becomes readable when process `pid` exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor (close-on-exec by definition) that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
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
    // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; `pid` is our child.
    cvt(unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    })?;
    // SAFETY: waitid filled `info` for a child state change, or left it zeroed.
    let (spid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if spid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ExitCause::Exited(status),
        libc::CLD_DUMPED => ExitCause::Signaled {
            sig: status,
            core: true,
        },
        _ => ExitCause::Signaled {
            sig: status,
            core: false,
        },
    }))
}

/// Reaps child `pid`, waiting for it if it still runs.
pub fn reap(pid: i32) {
    loop {
        let mut st = 0;
        // SAFETY: valid out-pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Sends `sig` to process group `pgid`. Errors (the group is gone) are ignored.
///
/// Callers only name groups whose leader they have not reaped, so the
/// group id cannot have been reused.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(-pgid, sig) };
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
        // SAFETY: an all-zero signalfd_siginfo is a valid value.
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let n = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `n` bytes into `si`.
        let r = unsafe {
            libc::read(
                self.fd(),
                (&mut si as *mut libc::signalfd_siginfo).cast(),
                n,
            )
        };
        (r == n as isize).then_some(si.ssi_signo as i32)
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
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `write(2)` from `buf`, retrying on EINTR.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of its length.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `fd` is a pipe or FIFO (writes of at most `PIPE_BUF` bytes are
/// atomic and do not block once poll reports it writable).
pub fn is_fifo(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO }
}

/// Whether `fd` is a regular file (always writable, never worth chunking).
pub fn is_regular_file(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG }
}

/// Whether `fd` is a terminal that belongs to a foreground job other than
/// ours (reading it would stop dosrun with SIGTTIN).
pub fn is_background_tty(fd: RawFd) -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only query state.
    unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) != libc::getpgrp() }
}

/// The user id of the process at the other end of Unix socket `fd`.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    // SAFETY: an all-zero ucred is a valid value to be overwritten.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid out-pointers sized for a ucred.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// The effective user id of dosrun.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The pid of dosrun.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Whether `path` names a file this process may execute (`access(X_OK)`).
pub fn executable(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// Raises the soft limit on open descriptors to the hard limit (a job with
/// many ranks holds three descriptors per rank), returning the old limits
/// for the ranks to get back.
pub fn raise_nofile_limit() -> Option<libc::rlimit> {
    // SAFETY: an all-zero rlimit is a valid value to be overwritten.
    let mut old: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } != 0 {
        return None;
    }
    if old.rlim_cur >= old.rlim_max {
        return None;
    }
    let new = libc::rlimit {
        rlim_cur: old.rlim_max,
        rlim_max: old.rlim_max,
    };
    // SAFETY: valid in-pointer.
    (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0).then_some(old)
}

/// The current soft limit on open descriptors (`RLIMIT_NOFILE`), if known.
pub fn nofile_limit() -> Option<u64> {
    // SAFETY: an all-zero rlimit is a valid value to be overwritten.
    let mut l: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0).then_some(l.rlim_cur as u64)
}

/// The text of `errno` value `e` (`strerror`), for messages about a child.
pub fn strerror(e: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated string that
    // stays valid until the next call; we copy it at once (single-threaded).
    unsafe { CStr::from_ptr(libc::strerror(e)) }
        .to_string_lossy()
        .into_owned()
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
