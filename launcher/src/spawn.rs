//! Starting rank processes on this host.
//!
//! Each rank is a child of dosrun in its own process group, with
//! `PR_SET_PDEATHSIG(SIGKILL)` so that it dies with dosrun however dosrun
//! ends, its stdout and stderr on pipes to dosrun, and the node's shared
//! segment inherited at the descriptor number named by `DOS_SHM_FD`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

    /// Starts the rank placed at `p` on a node of `local_size` ranks.
    /// `stdin`: give it a pipe for dosrun's stdin, or `/dev/null`.
    /// `affinity`: the CPUs it may run on, set between fork and exec.
    ///
    /// Must be called from dosrun's main thread: the parent-death signal
    /// fires when the thread that forked the child ends.
    pub fn spawn(
        &self,
        p: Placement,
        local_size: usize,
        stdin: bool,
        affinity: Option<CpuMask>,
    ) -> Result<Spawned, SpawnError> {
        let step = |what| move |err| SpawnError { what, err };
        let (out_r, out_w) = sys::pipe().map_err(step("pipe"))?;
        let (err_r, err_w) = sys::pipe().map_err(step("pipe"))?;
        let (in_w, in_stdio) = if stdin {
            let (r, w) = sys::pipe().map_err(step("pipe"))?;
            (Some(w), Stdio::from(r))
        } else {
            (None, Stdio::null())
        };
        for fd in [Some(&out_r), Some(&err_r), in_w.as_ref()]
            .into_iter()
            .flatten()
        {
            sys::set_nonblocking(fd.as_fd(), true).map_err(step("fcntl"))?;
        }

        let mut cmd = Command::new(&self.program);
        cmd.arg0(&self.argv0)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(pmi::ENV_RANK, p.rank.to_string())
            .env(pmi::ENV_LOCAL_RANK, p.local_rank.to_string())
            .env(pmi::ENV_LOCAL_SIZE, local_size.to_string())
            .env(pmi::ENV_NODE_ID, p.node_id.to_string())
            .stdin(in_stdio)
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .process_group(0);
        let parent = sys::getpid();
        let shm_fd = self.shm_fd;
        let nofile = self.nofile;
        // SAFETY: the closure runs in the child between fork and exec; it only
        // makes async-signal-safe system calls and allocates nothing.
        unsafe {
            cmd.pre_exec(move || child_setup(parent, shm_fd, nofile, affinity.as_ref()));
        }
        // `cmd` (and with it our copies of the child's pipe ends) is dropped
        // when this returns, so the rank holds the only write ends.
        let child = cmd.spawn().map_err(step("exec"))?;
        let pid = child.id() as i32;
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(err) => {
                sys::kill_group(pid, libc::SIGKILL);
                sys::reap(pid);
                return Err(SpawnError {
                    what: "pidfd_open",
                    err,
                });
            }
        };
        Ok(Spawned {
            pid,
            pidfd,
            stdin: in_w,
            stdout: out_r,
            stderr: err_r,
        })
    }
}

/// Runs in the child after fork, before exec: parent-death signal (and
/// the check that the parent is still there), the segment kept open at its
/// number, default signal dispositions and mask, the descriptor limit, the
/// affinity. Only async-signal-safe calls. Also used for launch agents.
pub(crate) fn child_setup(
    parent: i32,
    shm_fd: Option<RawFd>,
    nofile: Option<libc::rlimit>,
    affinity: Option<&CpuMask>,
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
    // an inherited disposition when the mask is cleared.
    // SAFETY: an all-zero sigset_t is valid storage for sigemptyset; the
    // calls are async-signal-safe and only touch `set`; setting SIG_DFL
    // for a signal that cannot be caught fails harmlessly (EINVAL).
    unsafe {
        for sig in 1..libc::SIGRTMAX() + 1 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                // The C library reserves a few signals for itself (32, 33
                // in glibc) and refuses them: ask the kernel directly. An
                // all-zero kernel sigaction, whatever its layout on this
                // architecture, is SIG_DFL with no flags and an empty mask.
                let dfl = [0u64; 4];
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
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
