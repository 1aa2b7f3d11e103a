//! `dosrun --fs DIR`: a dosfs file system on the job's own nodes, as
//! BeeOND does.
//!
//! * **Servers.** Every node of the job runs one server inside the process
//!   that runs its ranks: dosrun for its own host, the node agent
//!   (`dosrun --agent`) for the others ([`dos_fs::standing`]). Server index
//!   = node id; its target is `DIR/<node id>` on that node (so the targets
//!   of several nodes sharing one disk do not collide, and `dosfs up --local
//!   N --target DIR` names the same targets). A target is formatted on first
//!   use and reused when it exists, so a later job over the same `DIR` and
//!   as many nodes mounts the same data again; a target of another server
//!   count, or nodes whose targets belong to different file systems, stop
//!   the job before any rank starts, with a line naming the node.
//! * **Id and secret.** The file-system id is the existing targets' (a new
//!   random one for new targets). The secret is per job, derived from the
//!   job's secret (HMAC-SHA256 with a fixed label, [`fs_secret`]): dosrun
//!   and every agent already hold the job secret, so the file system's
//!   secret is never sent, and it dies with the job (nothing secret is kept
//!   in `DIR`).
//! * **Start-up.** dosrun's agents get a `FsServe` frame before their
//!   assignment, start their server, and answer `FsUp` with its address
//!   (the address of their control connection's end: the one that routes to
//!   dosrun, `FsFailed` with a reason otherwise); dosrun collects every
//!   address, sends them back (`FsAddrs`), and only then sends the
//!   assignments and starts its own ranks. Each node writes the address file
//!   (`DIR/dosfs-<node id>.addr`, mode 0600, one per node so that nodes
//!   sharing the directory do not race) and the ranks get its path in
//!   `DOSFS` (which `dos::io` and the `dosfs` command read).
//! * **End.** However the job ends (success, a failed rank, a lost host, a
//!   signal to dosrun), dosrun first copies the file system out if asked
//!   (`--fs-stage-out PATH`, while the servers still run; heartbeats keep
//!   flowing), then stops its own server and tells the agents to exit; each
//!   server is synced before it stops.
//!
//!   **A failed job is staged out too**, and dosrun's exit status stays
//!   the job's (the failed rank's code; a failed copy adds its own line).
//!   What a failed job wrote (partial results, its last checkpoint, logs)
//!   is what one inspects or restarts from, and the targets in `DIR` may be
//!   on nodes a later job does not get; BeeOND does the same (its stage-out
//!   runs at `beeond stop`, whatever the job's status). A job that should
//!   not keep a failed run's output deletes `PATH` itself on a non-zero
//!   status. The copy is of what the servers hold when the ranks are gone:
//!   writes a rank had not synced are included (the servers are still up),
//!   a rank killed mid-write leaves a file cut where it stopped. A killed dosrun still gets its
//!   agents' servers synced: an agent that loses dosrun stops its server the
//!   same way.
//! * **Standing file systems** (`dosfs up --hostfile`): the same job with a
//!   rank per host that only waits (`--fs-addr FILE`, hidden, writes the
//!   address file there too, with dosrun's pid: `dosfs down` stops dosrun,
//!   which stops the servers as above).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use dos_fs::addrfile::{AddrFile, ServerAddr};
use dos_fs::client::Client;
use dos_fs::meta::Kind;
use dos_fs::server::ServerConfig;
use dos_fs::standing::{self, Standing, StandingSpec};
use dos_fs::target::{FsId, FsPath};
use dos_transport::auth::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The label of [`fs_secret`]'s derivation.
const LABEL: &[u8] = b"dosfs job secret v1";

/// The file system's secret of a job: HMAC-SHA256(job secret, label).
pub fn fs_secret(job: &Secret) -> Result<Secret, String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(job.as_bytes())
        .map_err(|e| format!("derive the file system's secret: {e}"))?;
    mac.update(LABEL);
    let bytes = mac.finalize().into_bytes();
    Secret::from_bytes(&bytes).map_err(|e| format!("derive the file system's secret: {e}"))
}

/// Node `node`'s target in `dir`.
pub fn target_dir(dir: &Path, node: usize) -> PathBuf {
    dir.join(node.to_string())
}

/// Node `node`'s address file in `dir`, `dosfs-<node>.addr` (one per node:
/// nodes that share the directory do not write over each other's).
pub fn addr_path(dir: &Path, node: usize) -> PathBuf {
    dir.join(format!("dosfs-{node}.addr"))
}

/// `dir` made absolute against the current directory (the agents' and
/// ranks' working directory is dosrun's).
pub fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::path::absolute(dir).map_err(|e| format!("--fs {}: {e}", dir.display()))
}

/// Starts node `node`'s server of `servers` over `DIR/<node>`, listening
/// on `ip`.
pub fn start_server(
    dir: &Path,
    node: usize,
    servers: usize,
    fsid: FsId,
    secret: &Secret,
    ip: IpAddr,
) -> Result<Standing, String> {
    let target = target_dir(dir, node);
    let listen = std::net::SocketAddr::new(ip, 0).to_string();
    standing::start(StandingSpec {
        dir: &target,
        fsid,
        index: node as u32,
        servers: servers as u32,
        secret: secret.clone(),
        listen: &listen,
        config: ServerConfig::default(),
    })
    .map_err(|e| format!("cannot start the dosfs server on {}: {e}", target.display()))
}

/// The address file of a job's servers.
pub fn addr_file(fsid: FsId, secret: &Secret, addrs: &[String], pid: Option<u32>) -> AddrFile {
    AddrFile {
        fsid,
        secret: secret.clone(),
        servers: addrs
            .iter()
            .map(|a| ServerAddr {
                addr: a.clone(),
                pid,
            })
            .collect(),
    }
}

/// Writes `file` to `path` (mode 0600).
pub fn write_addr(path: &Path, file: &AddrFile) -> Result<(), String> {
    file.write(path)
        .map_err(|e| format!("cannot write the address file {}: {e}", path.display()))
}

/// Checks that every node's server belongs to one file system; returns it.
pub fn agree(fsids: &[(usize, FsId)]) -> Result<FsId, String> {
    let Some(&(n0, first)) = fsids.first() else {
        return Err("the job has no node to run a dosfs server".into());
    };
    for &(n, f) in fsids {
        if f != first {
            return Err(format!(
                "the --fs targets of node {n0} and node {n} belong to different file systems ({first} and {f}); give a new --fs directory or the one the same nodes used"
            ));
        }
    }
    Ok(first)
}

/// Copies the whole file system out to `to` (a directory, created):
/// directories as directories, files byte for byte. Returns the number of
/// files copied.
pub fn stage_out(file: &AddrFile, to: &Path) -> Result<u64, String> {
    let c = Client::new(file);
    let mut files = 0;
    copy_dir(&c, &FsPath::root(), to, &mut files)?;
    Ok(files)
}

/// Bytes read per request while staging out.
const STAGE_BATCH: u64 = 16 << 20;

fn copy_dir(c: &Client, from: &FsPath, to: &Path, files: &mut u64) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    let name = from.to_string();
    let entries = c.readdir(&name).map_err(|e| format!("list {name}: {e}"))?;
    for e in entries {
        let child = from
            .join(&e.name)
            .map_err(|err| format!("{name}/{}: {err}", e.name))?;
        // Names were checked by FsPath (no '/', '.', '..' or NUL).
        let dst = to.join(&e.name);
        if e.kind == Kind::Dir {
            copy_dir(c, &child, &dst, files)?;
            continue;
        }
        let path = child.to_string();
        let a = c.stat(&path).map_err(|err| format!("stat {path}: {err}"))?;
        let mut out =
            fs::File::create(&dst).map_err(|e| format!("create {}: {e}", dst.display()))?;
        let mut buf = vec![0u8; STAGE_BATCH.min(a.size.max(1)) as usize];
        let mut off = 0u64;
        while off < a.size {
            let n = (a.size - off).min(STAGE_BATCH) as usize;
            c.read_at(&path, &a, off, &mut buf[..n])
                .map_err(|err| format!("read {path}: {err}"))?;
            out.write_all(&buf[..n])
                .map_err(|e| format!("write {}: {e}", dst.display()))?;
            off += n as u64;
        }
        out.sync_all()
            .map_err(|e| format!("write {}: {e}", dst.display()))?;
        *files += 1;
    }
    Ok(())
}

/// A `--fs` job's file system, as asked.
#[derive(Debug, Clone)]
pub struct FsJob {
    /// The `--fs` directory, absolute.
    pub dir: PathBuf,
    /// The id for new targets.
    pub fsid: FsId,
    /// The file system's secret ([`fs_secret`]).
    pub secret: Secret,
    /// `--fs-stage-out`.
    pub stage_out: Option<PathBuf>,
    /// `--fs-addr`: another address file to write on dosrun's host, with
    /// dosrun's pid (a standing file system, `dosfs up --hostfile`).
    pub addr_out: Option<PathBuf>,
}

/// How long dosrun waits for the agents' servers beyond the agents' own
/// start-up bound (which loses a node whose agent does not connect).
const SERVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl FsJob {
    /// Starts the servers: dosrun's own (node `local`, listening on `ip`),
    /// and, through `agents` (which were told [`crate::agent::pool::Agents::set_fs`]
    /// before their launch), one per node of `remote`; collects their
    /// addresses, writes the address files and releases the agents'
    /// assignments. On failure, what started is stopped.
    pub fn start(
        self,
        local: Option<usize>,
        ip: IpAddr,
        nodes: usize,
        remote: &[usize],
        agents: Option<&mut crate::agent::pool::Agents>,
    ) -> Result<FsEnd, String> {
        let own = match local {
            Some(n) => Some(start_server(
                &self.dir,
                n,
                nodes,
                self.fsid,
                &self.secret,
                ip,
            )?),
            None => None,
        };
        let mut end = FsEnd {
            file: addr_file(self.fsid, &self.secret, &[], None),
            local: own,
            written: Vec::new(),
            stage_out: self.stage_out.clone(),
        };
        match self.collect(local, nodes, remote, agents, &mut end) {
            Ok(()) => Ok(end),
            Err(e) => {
                let _ = end.run(None, &mut |_: String| {});
                Err(e)
            }
        }
    }

    fn collect(
        &self,
        local: Option<usize>,
        nodes: usize,
        remote: &[usize],
        agents: Option<&mut crate::agent::pool::Agents>,
        end: &mut FsEnd,
    ) -> Result<(), String> {
        use crate::agent::pool::AgentEvent;
        use crate::agent::wire::{FromAgent, ToAgent};
        let mut addrs: Vec<Option<String>> = vec![None; nodes];
        let mut fsids = Vec::new();
        if let (Some(n), Some(s)) = (local, end.local.as_ref()) {
            addrs[n] = Some(s.addr().to_string());
            fsids.push((n, s.fsid()));
        }
        if let Some(a) = agents {
            let until = std::time::Instant::now() + SERVE_TIMEOUT;
            while remote.iter().any(|&n| addrs[n].is_none()) {
                if std::time::Instant::now() >= until {
                    return Err("the node agents' dosfs servers did not start in time".into());
                }
                for e in a.pump(std::time::Duration::from_millis(100)) {
                    let host = |n: usize| a.host(n).unwrap_or("?").to_string();
                    match e {
                        AgentEvent::Frame(n, FromAgent::FsUp { fsid, addr }) if n < nodes => {
                            addrs[n] = Some(addr);
                            fsids.push((n, FsId(fsid)));
                        }
                        AgentEvent::Frame(n, FromAgent::FsFailed(why)) => {
                            return Err(format!("host {} (node {n}): {why}", host(n)));
                        }
                        AgentEvent::Frame(_, FromAgent::Log(l)) => eprintln!("{l}"),
                        AgentEvent::Lost { node, why } => {
                            return Err(format!(
                                "host {} (node {node}) lost while its dosfs server started: {why}",
                                host(node)
                            ));
                        }
                        _ => {}
                    }
                }
            }
            fsids.sort_by_key(|&(n, _)| n);
            let fsid = agree(&fsids)?;
            let list: Vec<String> = addrs
                .iter()
                .map(|a| a.clone().unwrap_or_default())
                .collect();
            let m = ToAgent::FsAddrs {
                fsid: fsid.0,
                addrs: list,
            };
            for &n in remote {
                a.release(n, &m);
            }
        }
        let fsid = agree(&fsids)?;
        let list: Vec<String> = addrs.into_iter().map(Option::unwrap_or_default).collect();
        end.file = addr_file(fsid, &self.secret, &list, None);
        if let Some(n) = local {
            let p = addr_path(&self.dir, n);
            write_addr(&p, &end.file)?;
            end.written.push(p);
        }
        if let Some(p) = &self.addr_out {
            let f = addr_file(fsid, &self.secret, &list, Some(std::process::id()));
            write_addr(p, &f)?;
        }
        Ok(())
    }
}

/// What a `--fs` job does at its end ([`FsEnd::run`], from the
/// supervisor, before the agents are told to exit).
#[derive(Debug)]
pub struct FsEnd {
    /// The address file's content.
    pub file: AddrFile,
    /// dosrun's own server, if its host is a node.
    pub local: Option<Standing>,
    /// The address file written on dosrun's host, removed at the end.
    pub written: Vec<PathBuf>,
    /// `--fs-stage-out`.
    pub stage_out: Option<PathBuf>,
}

impl FsEnd {
    /// Stages the file system out (if asked), keeping the agents
    /// heartbeating meanwhile, then syncs and stops dosrun's own server and
    /// removes the address files. Lines for dosrun's stderr go to `say`.
    pub fn run(
        self,
        mut agents: Option<&mut crate::agent::pool::Agents>,
        say: &mut dyn FnMut(String),
    ) -> Result<(), String> {
        let mut result = Ok(());
        if let Some(to) = self.stage_out.clone() {
            let file = self.file.clone();
            let copy = std::thread::spawn(move || stage_out(&file, &to));
            while !copy.is_finished() {
                match agents.as_deref_mut() {
                    Some(a) => {
                        a.pump(std::time::Duration::from_millis(50));
                    }
                    None => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
            result = match copy.join() {
                Ok(Ok(n)) => {
                    say(format!(
                        "dosrun: --fs-stage-out: {n} files copied to {}",
                        self.stage_out.as_deref().unwrap_or(Path::new("")).display()
                    ));
                    Ok(())
                }
                Ok(Err(e)) => Err(format!("--fs-stage-out: {e}")),
                Err(_) => Err("--fs-stage-out: the copy failed".into()),
            };
        }
        for p in &self.written {
            let _ = fs::remove_file(p);
        }
        if let Some(s) = self.local {
            if let Err(e) = s.stop() {
                let e = format!("dosfs server of this host: {e}");
                result = result.and(Err(e));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_derived_and_stable() {
        let j = Secret::from_bytes(&[7; 32]).unwrap();
        let a = fs_secret(&j).unwrap();
        let b = fs_secret(&j).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), j.as_bytes());
        let k = Secret::from_bytes(&[8; 32]).unwrap();
        assert_ne!(fs_secret(&k).unwrap().as_bytes(), a.as_bytes());
    }

    #[test]
    fn nodes_must_agree_on_the_file_system() {
        let (a, b) = (FsId([1; 16]), FsId([2; 16]));
        assert_eq!(agree(&[(0, a), (1, a)]), Ok(a));
        let e = agree(&[(0, a), (2, b)]).unwrap_err();
        assert!(e.contains("node 0 and node 2"), "{e}");
        assert!(agree(&[]).is_err());
        assert_eq!(target_dir(Path::new("/d"), 3), Path::new("/d/3"));
        assert_eq!(addr_path(Path::new("/d"), 3), Path::new("/d/dosfs-3.addr"));
    }
}
