//! Starting rank processes on this host.
//!
//! Each rank is a child of dosrun in its own process group, with
//! `PR_SET_PDEATHSIG(SIGKILL)` so that it dies with dosrun however dosrun
//! ends, its stdout and stderr on pipes to dosrun, and the node's shared
//! segment inherited at the descriptor number named by `DOS_SHM_FD`, and
//! (with [`Launcher::pmi_pair`]) one end of a socket pair joined to the
//! node's wire-up service at the number named by `DOS_PMI_FD`.
//!
//! [`Launcher::spawner`] prepares, once per node, what all ranks share
//! (argv and the environment as C strings); each [`Spawner::spawn`] is then
//! one `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` on a [`ChildStack`] of
//! the calling thread, whose child sets itself up and execs, in the manner
//! of `posix_spawn`, rather than a `fork` of dosrun (see [`Spawner`]).
//! [`crate::spawn_pool`] calls it from several threads at once, so that the
//! execs of a node's ranks overlap.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use dos::pmi::{self, Secret};

use crate::bind::CpuMask;
use crate::plan::Placement;
use crate::sys;

/// The search path `execvp` uses when `PATH` is unset.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Why the program cannot be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No such file (a path), or not in any `PATH` directory (a name).
    NotFound(OsString),
    /// It exists but may not be executed.
    NotExecutable(PathBuf),
    /// It is a directory.
    IsDirectory(PathBuf),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound(p) if p.as_bytes().contains(&b'/') => {
                write!(f, "{}: no such file", Path::new(p).display())
            }
            ResolveError::NotFound(p) => {
                write!(f, "{}: command not found in PATH", Path::new(p).display())
            }
            ResolveError::NotExecutable(p) => {
                write!(f, "{}: permission denied (not executable)", p.display())
            }
            ResolveError::IsDirectory(p) => write!(f, "{}: is a directory", p.display()),
        }
    }
}

/// Finds the file `program` names, as `execvp` would: a name with a `/` is
/// a path; any other name is looked up in the directories of `path` (an
/// empty entry is the current directory), taking the first executable match.
pub fn resolve_program(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, ResolveError> {
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return check_candidate(&p).map(|()| p);
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = None;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let cand = dir.join(program);
        match check_candidate(&cand) {
            Ok(()) => return Ok(cand),
            Err(e @ ResolveError::NotExecutable(_)) => {
                denied.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or_else(|| ResolveError::NotFound(program.to_os_string())))
}

fn check_candidate(p: &Path) -> Result<(), ResolveError> {
    match std::fs::metadata(p) {
        Err(_) => Err(ResolveError::NotFound(p.as_os_str().to_os_string())),
        Ok(m) if m.is_dir() => Err(ResolveError::IsDirectory(p.to_path_buf())),
        Ok(_) if !sys::executable(p) => Err(ResolveError::NotExecutable(p.to_path_buf())),
        Ok(_) => Ok(()),
    }
}

/// What every rank of the job gets.
#[derive(Debug)]
pub struct Launcher {
    /// The resolved program.
    pub program: PathBuf,
    /// `argv[0]`: the program as the user wrote it.
    pub argv0: OsString,
    /// The arguments.
    pub args: Vec<OsString>,
    /// Variables set in every rank (exports, then the job's `DOS_*`).
    pub env: Vec<(OsString, OsString)>,
    /// The node's shared segment, inherited by the ranks at this number.
    pub shm_fd: Option<RawFd>,
    /// Descriptor limits to give back to the ranks (dosrun raised its own).
    pub nofile: Option<libc::rlimit>,
    /// Give each rank one end of a socket pair for the wire-up
    /// (`DOS_PMI_FD`), the other end in [`Spawned::pmi`] for the node's
    /// service: the rank neither connects nor authenticates.
    pub pmi_pair: bool,
}

/// A started rank.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// Readable when it exits.
    pub pidfd: OwnedFd,
    /// Write end of its stdin, when it reads dosrun's stdin (non-blocking).
    pub stdin: Option<OwnedFd>,
    /// Read end of its stdout (non-blocking).
    pub stdout: OwnedFd,
    /// Read end of its stderr (non-blocking).
    pub stderr: OwnedFd,
    /// dosrun's end of the rank's wire-up socket pair ([`Launcher::pmi_pair`]).
    pub pmi: Option<UnixStream>,
}

/// Why a rank could not be started.
#[derive(Debug)]
pub struct SpawnError {
    /// The failed step (`"exec"` when the program itself could not run).
    pub what: &'static str,
    /// The error.
    pub err: io::Error,
}

impl SpawnError {
    /// The shell's status for this failure: 127 not found, 126 otherwise.
    pub fn status(&self) -> i32 {
        match self.err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
            _ => 126,
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.err.raw_os_error() {
            Some(e) => write!(f, "{}: {}", self.what, sys::strerror(e)),
            None => write!(f, "{}: {}", self.what, self.err),
        }
    }
}

impl Launcher {
    /// Variables common to every rank of a job, in the order they are set.
    /// The secret goes in the environment only: never on a command line.
    pub fn job_env(
        size: usize,
        nnodes: usize,
        jobid: u64,
        pmi_name: &str,
        secret: &Secret,
        shm_fd: Option<RawFd>,
    ) -> Vec<(OsString, OsString)> {
        let mut v: Vec<(OsString, OsString)> = vec![
            (pmi::ENV_SIZE.into(), size.to_string().into()),
            (pmi::ENV_NNODES.into(), nnodes.to_string().into()),
            (pmi::ENV_JOBID.into(), pmi::format_hex64(jobid).into()),
            (pmi::ENV_PMI_ADDR.into(), format!("@{pmi_name}").into()),
            (pmi::ENV_JOB_SECRET.into(), secret.to_hex().into()),
        ];
        if let Some(fd) = shm_fd {
            v.push((pmi::ENV_SHM_FD.into(), fd.to_string().into()));
        }
        v
    }

    /// Makes what every spawn of this job shares, once: the program, its
    /// arguments and the environment as C strings, `/dev/null` and the list
    /// of signals to reset.
    pub fn spawner(&self) -> Result<Spawner, SpawnError> {
        let step = |what| move |err| SpawnError { what, err };
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| SpawnError {
                what: "exec",
                err: io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument"),
            })
        };
        let path = cstr(self.program.as_os_str())?;
        let mut argv = vec![cstr(&self.argv0)?];
        for a in &self.args {
            argv.push(cstr(a)?);
        }
        let env = merged_env(std::env::vars_os(), &self.env, &RANK_VARS)
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                cstr(&kv)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let devnull = std::fs::File::open("/dev/null").map_err(step("open /dev/null"))?;
        let reset = signals_to_reset();
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        // A file the kernel cannot exec (no `#!`) runs under the shell, as
        // `execvp` does it: `/bin/sh path args...`.
        let sh_argv_ptrs = [SHELL.as_ptr(), path.as_ptr()]
            .into_iter()
            .chain(argv[1..].iter().map(|a| a.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Ok(Spawner {
            path,
            _argv: argv,
            argv_ptrs,
            sh_argv_ptrs,
            env,
            devnull: devnull.into(),
            reset,
            parent: sys::getpid(),
            shm_fd: self.shm_fd,
            nofile: self.nofile,
            pmi_pair: self.pmi_pair,
        })
    }
}

/// The shell that runs a program file without `#!` (as `execvp` does).
const SHELL: &std::ffi::CStr = c"/bin/sh";

/// The variables that differ between the ranks of a node, set by
/// [`Spawner::spawn`].
const RANK_VARS: [&str; 5] = [
    pmi::ENV_RANK,
    pmi::ENV_LOCAL_RANK,
    pmi::ENV_LOCAL_SIZE,
    pmi::ENV_NODE_ID,
    pmi::ENV_PMI_FD,
];

/// The environment a rank starts with, as `Command` would make it: dosrun's
/// own (`inherited`), each of `set` replacing the variable of its name or
/// added at the end (a later one wins), without the variables named in
/// `without` (the per-rank ones, added at each spawn).
pub fn merged_env(
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    set: &[(OsString, OsString)],
    without: &[&str],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = inherited.into_iter().collect();
    for (k, v) in set {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env.retain(|(k, _)| !without.iter().any(|w| k == w));
    env
}

/// Starts a node's ranks, one [`Spawner::spawn`] each.
///
/// A rank is started the way `posix_spawn` starts a process:
/// `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`. The child runs on a
/// stack of its own inside dosrun's memory, so nothing is copied (a
/// `fork` copies dosrun's page tables and write-protects its pages, which
/// then fault on every first write after each fork), makes the set-up
/// calls of [`child_setup`] and `execve`s; dosrun sleeps until the exec
/// has replaced the child's memory (or the child failed, leaving its
/// `errno` in the [`ChildArgs`] they share), and gets the pidfd from the
/// same call. Everything the child reads (argv, envp, the stack) is made
/// before: the child allocates nothing.
///
/// Every thread that calls [`Spawner::spawn`] must have all signals
/// blocked ([`BlockedSignals`]): a handler of dosrun must never run in a
/// child that shares its memory. The child resets the signals that are
/// not at their default and clears its mask before it execs.
///
/// A `Spawner` only reads its strings once made, so any number of threads
/// may spawn with it at once, each on a [`ChildStack`] of its own.
pub struct Spawner {
    path: CString,
    /// Owns what `argv_ptrs` points to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// The argv of the shell, for a file without `#!` (see `child_exec`).
    sh_argv_ptrs: Vec<*const libc::c_char>,
    env: Vec<CString>,
    devnull: OwnedFd,
    reset: Vec<libc::c_int>,
    parent: i32,
    shm_fd: Option<RawFd>,
    nofile: Option<libc::rlimit>,
    pmi_pair: bool,
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("path", &self.path)
            .field("argc", &self._argv.len())
            .field("envc", &self.env.len())
            .finish()
    }
}

// SAFETY: the raw pointers point into the `CString`s the `Spawner` owns
// (`_argv`, `path`), which are never changed or moved after `spawner()`
// made them (a `CString`'s bytes are on the heap); everything else is
// plain data. Sharing or sending a `Spawner` shares only reads.
unsafe impl Send for Spawner {}
// SAFETY: as for `Send`: `spawn` takes `&self` and only reads.
unsafe impl Sync for Spawner {}

/// All signals blocked in the calling thread while it lives; dropping it
/// restores the thread's mask. A thread must hold one while it calls
/// [`Spawner::spawn`] (see [`Spawner`]).
pub struct BlockedSignals(libc::sigset_t, std::marker::PhantomData<*const ()>);

impl BlockedSignals {
    /// Blocks every signal in the calling thread.
    pub fn new() -> io::Result<BlockedSignals> {
        block_all_signals().map(|m| BlockedSignals(m, std::marker::PhantomData))
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `block_all_signals` in this
        // thread (the raw-pointer marker keeps the guard on its thread).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

impl fmt::Debug for BlockedSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlockedSignals")
    }
}

impl Spawner {
    /// Starts the rank placed at `p` on a node of `local_size` ranks, its
    /// child running on `stack` until it execs. `stdin`: give it a pipe for
    /// dosrun's stdin, or `/dev/null`. `affinity`: the CPUs it may run on,
    /// set before the exec.
    ///
    /// The calling thread must have all signals blocked ([`BlockedSignals`])
    /// and must live as long as the rank: the parent-death signal fires
    /// when the thread that started the child ends (the main thread, or a
    /// thread of [`crate::spawn_pool`], which never end before dosrun).
    pub fn spawn(
        &self,
        stack: &mut ChildStack,
        p: Placement,
        local_size: usize,
        stdin: bool,
        affinity: Option<CpuMask>,
    ) -> Result<Spawned, SpawnError> {
        let step = |what| move |err| SpawnError { what, err };
        let (out_r, out_w) = sys::pipe().map_err(step("pipe"))?;
        let (err_r, err_w) = sys::pipe().map_err(step("pipe"))?;
        let (in_w, in_r) = if stdin {
            let (r, w) = sys::pipe().map_err(step("pipe"))?;
            (Some(w), Some(r))
        } else {
            (None, None)
        };
        for fd in [Some(&out_r), Some(&err_r), in_w.as_ref()]
            .into_iter()
            .flatten()
        {
            sys::set_nonblocking(fd.as_fd(), true).map_err(step("fcntl"))?;
        }
        let (pmi_ours, pmi_theirs) = if self.pmi_pair {
            let (a, b) = sys::socketpair().map_err(step("socketpair"))?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let pmi_fd = pmi_theirs.as_ref().map(|s| s.as_raw_fd());
        let rank_env: Vec<CString> = [
            (pmi::ENV_RANK, Some(p.rank)),
            (pmi::ENV_LOCAL_RANK, Some(p.local_rank)),
            (pmi::ENV_LOCAL_SIZE, Some(local_size)),
            (pmi::ENV_NODE_ID, Some(p.node_id)),
            (pmi::ENV_PMI_FD, pmi_fd.map(|fd| fd as usize)),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.map(|v| CString::new(format!("{k}={v}")).expect("no NUL in a number"))
        })
        .collect();
        let envp: Vec<*const libc::c_char> = self
            .env
            .iter()
            .chain(rank_env.iter())
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let stdin_fd = in_r.as_ref().unwrap_or(&self.devnull).as_raw_fd();
        let args = ChildArgs {
            path: self.path.as_ptr(),
            argv: self.argv_ptrs.as_ptr(),
            sh_argv: self.sh_argv_ptrs.as_ptr(),
            envp: envp.as_ptr(),
            stdio: [stdin_fd, out_w.as_raw_fd(), err_w.as_raw_fd()],
            parent: self.parent,
            shm_fd: self.shm_fd,
            pmi_fd,
            nofile: self.nofile,
            affinity: affinity.as_ref(),
            reset: &self.reset,
            err: AtomicI32::new(0),
        };
        let mut pidfd: libc::c_int = -1;
        // SAFETY: `child_main` runs on `stack`, which nothing else uses
        // (`&mut`), and only reads `args` and the `Spawner`'s strings (and
        // writes `args.err`), all of which outlive the call: CLONE_VFORK
        // suspends this thread until the child has exec'd or exited, and
        // then the child no longer uses this memory; other threads never
        // write what it reads. It shares this thread's thread-local storage
        // (`errno`), which nothing touches while this thread is suspended.
        // All signals are blocked in this thread (see `Spawner`), so no
        // handler of dosrun runs on the child's stack. With CLONE_PIDFD the
        // kernel writes the pidfd to `pidfd`.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&args as *const ChildArgs<'_>).cast_mut().cast(),
                &mut pidfd as *mut libc::c_int,
            )
        };
        if pid < 0 {
            return Err(SpawnError {
                what: "clone",
                err: io::Error::last_os_error(),
            });
        }
        // SAFETY: CLONE_PIDFD made this descriptor for us.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let failed = args.err.load(Ordering::Acquire);
        // Our copies of the child's ends close here: it holds the only ones.
        drop((out_w, err_w, in_r, pmi_theirs));
        if failed != 0 {
            // It has exited (status 127) without exec'ing.
            sys::reap(pid);
            return Err(SpawnError {
                what: "exec",
                err: io::Error::from_raw_os_error(failed),
            });
        }
        Ok(Spawned {
            pid,
            pidfd,
            stdin: in_w,
            stdout: out_r,
            stderr: err_r,
            pmi: pmi_ours,
        })
    }
}

/// What the child of [`Spawner::spawn`] reads; it lives on dosrun's stack,
/// which the child shares.
struct ChildArgs<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    sh_argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Its stdin, stdout and stderr, moved to 0, 1, 2.
    stdio: [RawFd; 3],
    parent: i32,
    shm_fd: Option<RawFd>,
    /// Its end of the wire-up socket pair, kept open at its number.
    pmi_fd: Option<RawFd>,
    nofile: Option<libc::rlimit>,
    affinity: Option<&'a CpuMask>,
    reset: &'a [libc::c_int],
    /// The child's `errno` when it could not exec; 0 if it did.
    err: AtomicI32,
}

/// The child of [`Spawner::spawn`]: moves its standard streams into place,
/// makes its own process group, does [`child_setup`] and execs; on failure
/// leaves the error in `err` and exits with 127. Allocates nothing and
/// makes only async-signal-safe calls.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `Spawner::spawn` passed, alive
    // until this child execs or exits (CLONE_VFORK).
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    let e = match child_exec(a) {
        Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
        Ok(never) => match never {},
    };
    a.err
        .store(if e == 0 { libc::EINVAL } else { e }, Ordering::Release);
    // SAFETY: _exit ends the child at once, running nothing of dosrun's.
    unsafe { libc::_exit(127) }
}

/// The steps of [`child_main`] up to the exec, which returns only on failure.
fn child_exec(a: &ChildArgs<'_>) -> io::Result<std::convert::Infallible> {
    for (target, &fd) in a.stdio.iter().enumerate() {
        let target = target as RawFd;
        // SAFETY: both are open descriptors of this process (dosrun keeps
        // 0, 1 and 2 open, so `fd` is never one of them; if it were,
        // clearing close-on-exec keeps it).
        let r = unsafe {
            if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: setpgid(0, 0) makes this process a group leader; no memory.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(fd) = a.pmi_fd {
        // Close-on-exec in dosrun; the rank keeps it at the same number.
        // SAFETY: F_SETFD on the socket dosrun made for this child.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    child_setup(a.parent, a.shm_fd, a.nofile, a.affinity, a.reset)?;
    // SAFETY: `path`, `argv` and `envp` are NUL-terminated strings and
    // null-terminated arrays that outlive this call (see `ChildArgs`).
    unsafe { libc::execve(a.path, a.argv, a.envp) };
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOEXEC) {
        // Not a binary and no `#!`: a shell script, as `execvp` has it.
        // SAFETY: as above; `sh_argv` is null-terminated and outlives us.
        unsafe { libc::execve(SHELL.as_ptr(), a.sh_argv, a.envp) };
        return Err(io::Error::last_os_error());
    }
    Err(err)
}

/// The stack the child of [`Spawner::spawn`] runs on before it execs:
/// anonymous memory with an inaccessible page below it, so that an
/// overflow faults rather than writes into dosrun's heap. One per thread
/// that spawns.
pub struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Bytes the child may use: its calls are a few system calls deep.
    const USABLE: usize = 64 << 10;

    /// Maps a stack.
    pub fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(4096);
        let len = Self::USABLE + page;
        // SAFETY: a fresh anonymous private mapping; no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer (the stack grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

// SAFETY: the mapping is owned by the `ChildStack` alone; moving it to
// another thread moves that ownership (it is used through `&mut`).
unsafe impl Send for ChildStack {}

impl fmt::Debug for ChildStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildStack")
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no child runs on it any more
        // (each spawn returns after its child exec'd or exited).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Blocks every signal in the calling thread; returns the previous mask.
fn block_all_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: all-zero sigset_t values are valid storage; the calls only
    // write to them.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let r = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(old)
    }
}

/// The size of the kernel's signal mask, for `rt_sigaction`.
const KERNEL_SIGSET_BYTES: usize = 8;

/// The signals whose disposition in dosrun is not the default (ignored or
/// handled): the ones a rank must reset before it execs, since a rank
/// starts, as under mpirun, with every disposition at its default. Asked
/// of the kernel directly (`rt_sigaction`): the C library refuses the
/// signals it reserves for itself (32 and 33 in glibc).
pub(crate) fn signals_to_reset() -> Vec<libc::c_int> {
    (1..libc::SIGRTMAX() + 1)
        .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
        .filter(|&sig| {
            // The kernel's sigaction: handler, flags, restorer, mask.
            let mut old = [0u64; 4];
            // SAFETY: a null new action only reads the current one into
            // `old`, which is large enough for the kernel's structure.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<u64>(),
                    old.as_mut_ptr(),
                    KERNEL_SIGSET_BYTES,
                )
            };
            // Unknown: reset it to be sure.
            r != 0 || old[0] != 0
        })
        .collect()
}

/// Runs in the child before exec: parent-death signal (and the check that
/// the parent is still there), the segment kept open at its number,
/// default dispositions for the signals of `reset` (from
/// [`signals_to_reset`]) and an empty mask, the descriptor limit, the
/// affinity. Only async-signal-safe calls, no allocation. Also used for
/// launch agents.
pub(crate) fn child_setup(
    parent: i32,
    shm_fd: Option<RawFd>,
    nofile: Option<libc::rlimit>,
    affinity: Option<&CpuMask>,
    reset: &[libc::c_int],
) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // dosrun may have died before the prctl: then nobody would kill us.
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    if let Some(fd) = shm_fd {
        // The segment is close-on-exec in dosrun; the rank keeps it at the
        // same number. SAFETY: F_SETFD on a descriptor inherited from dosrun.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // dosrun blocks the signals it reads through its signalfd and ignores
    // SIGPIPE, and may itself have been started with signals ignored (a
    // `dosrun ... &` in a script inherits SIGINT and SIGQUIT ignored): the
    // rank starts, as under mpirun, with every disposition at its default
    // and an empty mask, so that a forwarded SIGINT does what it says.
    // Dispositions first, so that no signal pending under the mask runs
    // an inherited disposition when the mask is cleared. An all-zero
    // kernel sigaction, whatever its layout on this architecture, is
    // SIG_DFL with no flags and an empty mask.
    let dfl = [0u64; 4];
    for &sig in reset {
        // SAFETY: the kernel reads the action from `dfl`; setting SIG_DFL
        // for a signal that cannot be caught fails harmlessly (EINVAL).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                KERNEL_SIGSET_BYTES,
            )
        };
    }
    // SAFETY: an all-zero sigset_t is valid storage for sigemptyset; the
    // calls are async-signal-safe and only touch `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(l) = nofile {
        // SAFETY: valid in-pointer; lowering the soft limit cannot fail
        // in a way that matters, so its result is ignored.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) };
    }
    if let Some(m) = affinity {
        m.apply()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dosrun-spawn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn resolves_like_execvp() {
        let d = tmpdir("resolve");
        let exe = d.join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = d.join("data");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();

        let path = OsString::from(format!("/nonexistent:{}", d.display()));
        assert_eq!(resolve_program("tool".as_ref(), Some(&path)).unwrap(), exe);
        assert_eq!(
            resolve_program("data".as_ref(), Some(&path)),
            Err(ResolveError::NotExecutable(plain.clone()))
        );
        assert!(matches!(
            resolve_program("nope".as_ref(), Some(&path)),
            Err(ResolveError::NotFound(_))
        ));
        assert_eq!(resolve_program(exe.as_os_str(), None).unwrap(), exe);
        assert_eq!(
            resolve_program(d.as_os_str(), None),
            Err(ResolveError::IsDirectory(d.clone()))
        );
        assert!(matches!(
            resolve_program(d.join("missing").as_os_str(), None),
            Err(ResolveError::NotFound(_))
        ));
        // PATH unset: the default search path.
        assert!(resolve_program("sh".as_ref(), None).is_ok());
        let msg = resolve_program("nope".as_ref(), Some(&path))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "nope: command not found in PATH");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn merged_env_overrides_in_place_and_drops_per_rank_names() {
        let o = |k: &str, v: &str| (OsString::from(k), OsString::from(v));
        let inherited = vec![o("A", "1"), o("DOS_RANK", "9"), o("B", "2")];
        let set = [o("B", "3"), o("C", "4"), o("C", "5"), o("DOS_SIZE", "2")];
        assert_eq!(
            merged_env(inherited, &set, &RANK_VARS),
            [o("A", "1"), o("B", "3"), o("C", "5"), o("DOS_SIZE", "2")]
        );
    }

    #[test]
    fn ignored_and_handled_signals_are_reset() {
        // On a thread of its own is not enough: dispositions are the
        // process's. SIGURG is default-ignored but not SIG_IGN: it is not
        // listed until set so, and setting it back removes it again.
        let sig = libc::SIGURG;
        assert!(!signals_to_reset().contains(&sig));
        // SAFETY: SIG_IGN for SIGURG, which nothing in the tests uses.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
        let listed = signals_to_reset().contains(&sig);
        // SAFETY: back to the default.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        assert!(listed);
        assert!(!signals_to_reset().contains(&libc::SIGKILL));
    }

    #[test]
    fn spawn_errors_map_to_shell_statuses() {
        let e = |n| SpawnError {
            what: "exec",
            err: io::Error::from_raw_os_error(n),
        };
        assert_eq!(e(libc::ENOENT).status(), 127);
        assert_eq!(e(libc::EACCES).status(), 126);
        assert!(e(libc::ENOENT).to_string().starts_with("exec: "));
    }
}
