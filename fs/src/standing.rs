//! Starting a server from a library call: what `dosrun --fs` runs inside
//! each node agent (and dosrun itself for its own host), so that a server
//! lives and dies with the process that started it.
//!
//! [`start`] opens (or, on first use, formats) a target, binds a
//! [`Server`] and serves it on a thread; the [`Standing`] handle it returns
//! says where the server listens and stops it: [`Standing::stop`] syncs
//! every chunk and the journal first (through the server's own protocol, so
//! nothing here reaches inside the server), then stops accepting.
//!
//! A target is reused when it exists: it must be server `index` of a file
//! system of `servers` servers (its file-system id is then the target's,
//! whatever `fsid` was given); a new one is formatted with `fsid`. So a
//! later job over the same directories mounts the same data again.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use dos_transport::auth::Secret;

use crate::addrfile::AddrFile;
use crate::client::Conn;
use crate::error::{Error, Result};
use crate::server::{Server, ServerConfig, Service};
use crate::target::{Expect, FsId, Target};
use crate::wire::Request;

/// How long [`Standing::stop`] waits for the sync.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Standing::stop`] waits for the server's threads (clients
/// still connected hold them; the data is synced by then).
pub const JOIN_WAIT: Duration = Duration::from_secs(2);

/// What a server is started as.
#[derive(Debug, Clone)]
pub struct StandingSpec<'a> {
    /// The target directory (created and formatted when it holds no target).
    pub dir: &'a Path,
    /// The file-system id for a new target.
    pub fsid: FsId,
    /// This server's index.
    pub index: u32,
    /// The number of servers of the file system.
    pub servers: u32,
    /// The secret clients must prove.
    pub secret: Secret,
    /// The address to listen on (`IP:0` for any port).
    pub listen: &'a str,
    /// Server tunables.
    pub config: ServerConfig,
}

/// A running server, stopped by [`Standing::stop`] (dropping it leaves the
/// server running until the process ends).
#[derive(Debug)]
pub struct Standing {
    addr: SocketAddr,
    fsid: FsId,
    index: u32,
    secret: Secret,
    stop: Arc<AtomicBool>,
    done: Receiver<Result<()>>,
}

/// Opens or formats the target of `spec` and starts its server on a thread.
pub fn start(spec: StandingSpec<'_>) -> Result<Standing> {
    let target = match Target::open(
        spec.dir,
        Expect {
            fsid: None,
            index: Some(spec.index),
        },
    ) {
        Ok(t) if t.info().servers != spec.servers => {
            return Err(Error::Malformed {
                path: spec.dir.to_owned(),
                reason: format!(
                    "target of a file system of {} servers, not {}",
                    t.info().servers,
                    spec.servers
                ),
            })
        }
        Ok(t) => t,
        Err(Error::NotATarget { .. }) => {
            Target::format(spec.dir, spec.fsid, spec.index, spec.servers)?
        }
        Err(e) => return Err(e),
    };
    let fsid = target.info().fsid;
    let server = Server::bind(
        Service::open(&target)?,
        &fsid,
        spec.secret.clone(),
        spec.listen,
        spec.config,
    )?;
    let addr = server.local_addr()?;
    let stop = server.stop_flag();
    let (tx, done) = channel();
    std::thread::Builder::new()
        .name(format!("dosfs-server-{}", spec.index))
        .spawn(move || {
            let _ = tx.send(server.serve());
        })
        .map_err(|e| Error::io("spawn", "server thread", e))?;
    Ok(Standing {
        addr,
        fsid,
        index: spec.index,
        secret: spec.secret,
        stop,
        done,
    })
}

impl Standing {
    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The file system's id (the target's).
    pub fn fsid(&self) -> FsId {
        self.fsid
    }

    /// The server's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Makes everything the server holds durable (chunks and, on server 0,
    /// the journal).
    pub fn sync(&self) -> Result<()> {
        let mut c = Conn::connect(
            &self.addr.to_string(),
            self.index,
            &self.fsid,
            &self.secret,
            STOP_TIMEOUT,
        )?;
        c.call(&Request::Sync { ino: None }).map(|_| ())
    }

    /// Syncs, then stops the server: it accepts no more connections; its
    /// threads end once its clients have gone (waited for up to
    /// [`JOIN_WAIT`]; the process may end before). The sync's error, if
    /// any, is returned after the server was stopped.
    pub fn stop(self) -> Result<()> {
        let synced = self.sync();
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let served = self.done.recv_timeout(JOIN_WAIT).unwrap_or(Ok(()));
        synced.and(served)
    }
}

/// `dosfs up --hostfile`: what to start.
#[derive(Debug, Clone)]
pub struct HostsSpec<'a> {
    /// The `dosrun` to run.
    pub dosrun: &'a Path,
    /// The hosts, one server each (dosrun's hostfile).
    pub hostfile: &'a Path,
    /// The directory of the targets on every host (`DIR/<node id>`).
    pub target: &'a Path,
    /// The address file to write here.
    pub addr_file: &'a Path,
    /// dosrun's `--launch-agent`.
    pub launch_agent: Option<&'a str>,
    /// How long the servers may take to come up.
    pub timeout: Duration,
}

/// Why [`launch_hosts`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// dosrun could not be run.
    #[error("cannot run {dosrun}: {source}")]
    Spawn {
        /// The dosrun path.
        dosrun: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// dosrun ended before the servers were up.
    #[error("the servers did not start (dosrun {status}): {last_line} (log: {log})")]
    Exited {
        /// dosrun's exit status.
        status: std::process::ExitStatus,
        /// The last line of its log.
        last_line: String,
        /// The log.
        log: std::path::PathBuf,
    },
    /// The servers were not up in time (dosrun was stopped).
    #[error("the servers did not start within {secs} s (log: {log})")]
    Timeout {
        /// The bound.
        secs: u64,
        /// The log.
        log: std::path::PathBuf,
    },
    /// The address file could not be read or written.
    #[error(transparent)]
    Fs(#[from] Error),
}

/// Starts one server per host of `spec.hostfile` through dosrun's node
/// agents, as `dosrun --fs` does for a job: dosrun runs a job of one rank per
/// host that only waits (`sleep infinity`), with `--fs TARGET` and the hidden
/// `--fs-addr FILE`, in the background (its own process group, output in
/// `FILE.log`). Returns once dosrun wrote the address file (each server's
/// entry carries dosrun's pid: stopping that dosrun, as `dosfs down` does
/// after a sync, syncs and stops every server). So the agents, their
/// launch, authentication, heartbeats and failure detection are dosrun's
/// own, not a second copy.
pub fn launch_hosts(spec: &HostsSpec<'_>) -> std::result::Result<AddrFile, LaunchError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut log = spec.addr_file.as_os_str().to_owned();
    log.push(".log");
    let log = std::path::PathBuf::from(log);
    let out = std::fs::File::create(&log).map_err(|e| Error::io("create", &log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("open", &log, e))?;
    match std::fs::remove_file(spec.addr_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", spec.addr_file, e).into()),
    }
    let mut cmd = Command::new(spec.dosrun);
    cmd.arg("--hostfile")
        .arg(spec.hostfile)
        .args(["-N", "1", "--fs"])
        .arg(spec.target)
        .arg("--fs-addr")
        .arg(spec.addr_file);
    if let Some(l) = spec.launch_agent {
        cmd.args(["--launch-agent", l]);
    }
    cmd.args(["--", "sleep", "infinity"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        dosrun: spec.dosrun.to_owned(),
        source,
    })?;
    let until = std::time::Instant::now() + spec.timeout;
    loop {
        if let Ok(f) = AddrFile::read(spec.addr_file) {
            return Ok(f);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(LaunchError::Exited {
                status,
                last_line: text.lines().last().unwrap_or("(no output)").to_owned(),
                log,
            });
        }
        if std::time::Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::Timeout {
                secs: spec.timeout.as_secs(),
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrfile::ServerAddr;
    use crate::client::Client;
    use crate::target::tests::TempDir;

    fn spec<'a>(dir: &'a Path, fsid: FsId, secret: &Secret, servers: u32) -> StandingSpec<'a> {
        StandingSpec {
            dir,
            fsid,
            index: 0,
            servers,
            secret: secret.clone(),
            listen: "127.0.0.1:0",
            config: ServerConfig::default(),
        }
    }

    /// A server started by a call formats its target, serves, is stopped
    /// synced, and a second start on the same target finds the data (and
    /// keeps the target's id).
    #[test]
    fn start_stop_and_reuse() {
        let d = TempDir::new("standing");
        let dir = d.0.join("t");
        let secret = Secret::generate().unwrap();
        let fsid = FsId::generate().unwrap();
        let s = start(spec(&dir, fsid, &secret, 1)).unwrap();
        assert_eq!(s.fsid(), fsid);
        let file = AddrFile {
            fsid,
            secret: secret.clone(),
            servers: vec![ServerAddr {
                addr: s.addr().to_string(),
                pid: None,
            }],
        };
        let c = Client::new(&file);
        let a = c.create("/f", None, true).unwrap();
        c.write_at(&a, 0, b"kept across starts").unwrap();
        drop(c);
        let addr = s.addr();
        s.stop().unwrap();
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());

        let other = FsId::generate().unwrap();
        let s = start(spec(&dir, other, &secret, 1)).unwrap();
        assert_eq!(s.fsid(), fsid, "an existing target keeps its id");
        let file = AddrFile {
            servers: vec![ServerAddr {
                addr: s.addr().to_string(),
                pid: None,
            }],
            ..file
        };
        let c = Client::new(&file);
        let a = c.stat("/f").unwrap();
        let mut back = vec![0; a.size as usize];
        c.read_at("/f", &a, 0, &mut back).unwrap();
        assert_eq!(back, b"kept across starts");
        drop(c);
        s.stop().unwrap();

        // Another server count is refused with a typed error.
        let e = start(spec(&dir, fsid, &secret, 3)).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
    }
}
