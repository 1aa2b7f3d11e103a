//! [`Ckpt`]: one rank's checkpoint session, the collective half of
//! `dos::ckpt` (the pure parts are in the sibling modules).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::groups;
use super::index::{
    check_name, level, read_own, seal_own, write_own, write_own_parts, Dirs, Entry, Index, State,
};
use super::l4::{Body, Flusher, Remote};
use super::mem::{self, Data, Image, Slot, MEMORY};
use super::plan::{self, have, Source};
use super::policy::{Policy, Since};
use super::store::{
    bundle, bundle_one, bundle_prefix, header_for, read_sealed, seal, seal_header, unbundle,
    write_sealed_parts, DieMidWrite, Disk, Files, MappedWrite, Mapping, RealDisk,
};
use super::xor;
use crate::config::Config;
use crate::op::{Max, Min};
use crate::{Comm, World};

/// The wire-up key under which rank 0 tells dosrun which checkpoint a
/// restart used.
pub const RESTORED_KEY: &str = "dos.ckpt.restored";

/// The configuration of a session (from the `DOS_CKPT_*` tunables by
/// [`Options::from_config`], or set by hand).
#[derive(Debug, Clone)]
pub struct Options {
    /// The job-stable id naming the checkpoints (`DOS_CKPT_ID`).
    pub id: String,
    /// Which run this is (`DOS_RUN_ATTEMPT`): 0 starts afresh, more looks
    /// for checkpoints to restore.
    pub attempt: u32,
    /// The node-local directory of L1 (`DOS_CKPT_DIR`).
    pub dir: PathBuf,
    /// Levels written ([`level`] bits, `DOS_CKPT_LEVELS`).
    pub levels: u8,
    /// Failure groups per XOR set (`DOS_CKPT_XOR_SET`).
    pub xor_set: usize,
    /// Each rank its own failure group (`DOS_CKPT_GROUP=rank`) instead of
    /// each node.
    pub group_by_rank: bool,
    /// The L4 target (`DOS_CKPT_FS`).
    pub fs: Option<Remote>,
    /// Every this many checkpoints one also goes to L4 (`DOS_CKPT_FS_EVERY`).
    pub fs_every: u64,
    /// Complete checkpoints kept (`DOS_CKPT_KEEP`).
    pub keep: usize,
    /// When [`Ckpt::need_checkpoint`] says yes.
    pub policy: Policy,
}

impl Options {
    /// The options the tunables `cfg` give.
    pub fn from_config(cfg: &Config) -> Result<Options> {
        let id = if cfg.ckpt_id == "auto" {
            program_id()
        } else {
            cfg.ckpt_id.to_string()
        };
        check_name(&id).map_err(|_| Error::Usage {
            op: "DOS_CKPT_ID",
            reason: "1 to 100 characters from A-Z a-z 0-9 _ -",
        })?;
        Ok(Options {
            id,
            attempt: cfg.run_attempt,
            dir: node_dir(cfg.ckpt_dir, std::env::var(crate::pmi::ENV_NODE_ADDR).ok()),
            levels: cfg.ckpt_levels | level::LOCAL,
            xor_set: cfg.ckpt_xor_set,
            group_by_rank: cfg.ckpt_group == "rank",
            fs: if cfg.ckpt_levels & level::FS != 0 {
                Remote::parse(cfg.ckpt_fs)?
            } else {
                None
            },
            fs_every: cfg.ckpt_fs_every,
            keep: cfg.ckpt_keep,
            policy: Policy {
                every: cfg.ckpt_interval,
                period: Duration::from_secs(cfg.ckpt_seconds),
                mtbf: Duration::from_secs(cfg.ckpt_mtbf),
            },
        })
    }
}

/// `DOS_CKPT_DIR` with `{node}` replaced by the node's address on the
/// job's network (`DOS_NODE_ADDR`; `local` in a one-node job). Hosts that
/// share a file system (the namespace hosts of the tests, or a shared
/// /tmp) still get node-local L1 this way: what a lost node held is gone
/// from the restarted job's view, as on separate disks.
fn node_dir(dir: &str, node_addr: Option<String>) -> PathBuf {
    if !dir.contains("{node}") {
        return PathBuf::from(dir);
    }
    let node = node_addr.unwrap_or_else(|| "local".into());
    let node: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let node = if node.chars().all(|c| c == '.') {
        "_".into()
    } else {
        node
    };
    PathBuf::from(dir.replace("{node}", &node))
}

/// The program's name, made a safe id (`DOS_CKPT_ID=auto`).
fn program_id() -> String {
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dos".into());
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if s.is_empty() {
        "dos".into()
    } else {
        s
    }
}

/// A rank's XOR parity file: the header's length (u64 LE), the header
/// (postcard: set, lengths, chunk), then the segment.
#[derive(Debug)]
struct Parity {
    set: Vec<u32>,
    lens: Vec<u64>,
    c: u64,
    segment: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ParityHead {
    set: Vec<u32>,
    lens: Vec<u64>,
    c: u64,
}

impl Parity {
    fn head(&self) -> Vec<u8> {
        let h = postcard::to_stdvec(&ParityHead {
            set: self.set.clone(),
            lens: self.lens.clone(),
            c: self.c,
        })
        .expect("a parity header serializes");
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out
    }

    fn decode(b: &[u8]) -> Option<Parity> {
        let hl = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
        let h: ParityHead = postcard::from_bytes(b.get(8..8usize.checked_add(hl)?)?).ok()?;
        let segment = b.get(8 + hl..)?.to_vec();
        (segment.len() as u64 == h.c).then_some(Parity {
            set: h.set,
            lens: h.lens,
            c: h.c,
            segment,
        })
    }
}

/// A rank's part of a checkpoint being written.
enum Part<'a> {
    /// The memory API's `memory.bin`, as parts written one after the other.
    Memory(Vec<&'a [u8]>),
    /// The file API's files, already in L1.
    Routed(Files),
}

/// A checkpoint found for a restart, rebuilt.
#[derive(Debug)]
struct Found {
    entry: Entry,
    /// Old ranks' files this rank ended up with.
    mine: Vec<(usize, Files)>,
    /// The report line.
    line: String,
}

/// What the file API is doing.
#[derive(Debug)]
enum Phase {
    Idle,
    Output { name: String, version: u64 },
    Restart,
}

/// One rank's checkpoint session (collective calls: every rank of the
/// communicator makes them in the same order); see the [module docs](super).
#[derive(Debug)]
pub struct Ckpt<'w> {
    world: &'w World,
    comm: Comm,
    opts: Options,
    l1: Dirs,
    /// Failure group of every current rank.
    groups: Vec<usize>,
    index: Index,
    flusher: Option<Flusher>,
    /// L4 writes not yet known complete.
    fs_pending: Vec<Entry>,
    taken: u64,
    calls: u64,
    since: Instant,
    cost: Option<Duration>,
    phase: Phase,
    found: Option<Found>,
    searched: bool,
    restored: Option<String>,
    /// Test hook: the version during whose L1 write this rank dies.
    die_in: Option<u64>,
    /// Mappings of the partner copies this rank holds, newest last (see
    /// [`MappedWrite`]).
    mappings: Vec<Mapping>,
    /// Retired versions whose files are being removed in the background.
    retiring: Vec<(String, u64, std::thread::JoinHandle<()>)>,
}

impl Drop for Ckpt<'_> {
    fn drop(&mut self) {
        self.wait_retired(None);
    }
}

const TAG_PARTNER: i32 = 1 << 20;
const TAG_XOR: i32 = 2 << 20;

impl<'w> Ckpt<'w> {
    /// A session on `world` configured by the `DOS_CKPT_*` tunables
    /// (collective).
    pub fn new(world: &'w World) -> Result<Ckpt<'w>> {
        let opts = Options::from_config(world.config())?;
        Ckpt::with_options(world, opts)
    }

    /// A session with explicit options (collective; every rank passes the same).
    pub fn with_options(world: &'w World, opts: Options) -> Result<Ckpt<'w>> {
        check_name(&opts.id)?;
        let comm = world.comm().dup()?;
        let (me, n) = (comm.rank(), comm.size());
        let leader = node_leader(&comm) as u64;
        let mut all = vec![0u64; n];
        comm.allgather(&[leader], &mut all)?;
        let groups: Vec<usize> = if opts.group_by_rank {
            (0..n).collect()
        } else {
            all.iter().map(|&g| g as usize).collect()
        };
        let l1 = Dirs::new(&opts.dir, &opts.id);
        let index = if opts.attempt == 0 {
            // A fresh run starts a new history for its id: the node's old
            // L1 data (and L4's) of this id goes.
            if leader as usize == me {
                if let Err(e) = RealDisk.remove_all(&l1.root) {
                    tracing::warn!("clearing old checkpoints: {e}");
                }
            }
            if me == 0 {
                if let Some(r) = &opts.fs {
                    if let Err(e) = r.remove_all(&rel_root(&opts.id)) {
                        tracing::warn!("clearing old L4 checkpoints: {e}");
                    }
                }
            }
            comm.barrier()?;
            Index::default()
        } else {
            Index::load(&RealDisk, &l1.index(me)).unwrap_or_else(|e| {
                tracing::warn!("{e}: this rank's index is ignored");
                Index::default()
            })
        };
        let flusher = opts.fs.clone().map(Flusher::start);
        Ok(Ckpt {
            world,
            comm,
            opts,
            l1,
            groups,
            index,
            flusher,
            fs_pending: Vec::new(),
            taken: 0,
            calls: 0,
            since: Instant::now(),
            cost: None,
            phase: Phase::Idle,
            found: None,
            searched: false,
            restored: None,
            die_in: None,
            mappings: Vec::new(),
            retiring: Vec::new(),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Whether to checkpoint now, the same answer on every rank (decided on
    /// rank 0 by the [`Policy`]; collective). Also marks the L4 checkpoints
    /// whose background writes finished on every rank.
    pub fn need_checkpoint(&mut self) -> Result<bool> {
        self.calls += 1;
        // Background L4 writes that finished get their marker here too.
        self.settle_fs()?;
        let mut yes = [u8::from(self.opts.policy.due(Since {
            calls: self.calls,
            elapsed: self.since.elapsed(),
            cost: self.cost,
        }))];
        self.comm.bcast(&mut yes, 0)?;
        Ok(yes[0] == 1)
    }

    /// The cost of the last checkpoint (without its background L4 write).
    pub fn last_cost(&self) -> Option<Duration> {
        self.cost
    }

    /// Test hook (fault injection, not for applications): on the first
    /// attempt of a run (`DOS_RUN_ATTEMPT` 0), this rank dies by SIGKILL in
    /// the middle of writing its L1 file of checkpoint version `version`,
    /// with half of the file on disk under its temporary name and the
    /// checkpoint not complete anywhere. A restart must fall back to the
    /// previous complete checkpoint (`heat_ckpt --die-in-checkpoint`,
    /// tests/ckpt.rs).
    pub fn die_during_checkpoint(&mut self, version: u64) {
        self.die_in = (self.opts.attempt == 0).then_some(version);
    }

    /// Saves `data` as checkpoint `name` version `version` (collective;
    /// every rank passes the same name and version). Fails with
    /// [`Error::Incomplete`] when some rank could not write its part: the
    /// previous checkpoint stays the newest.
    pub fn checkpoint(&mut self, name: &str, version: u64, data: &[Data<'_>]) -> Result<()> {
        check_name(name)?;
        let me = self.comm.rank();
        let ok = match (mem::header(me, data), mem::parts(data)) {
            (Ok(h), Ok(p)) => {
                let mut all: Vec<&[u8]> = vec![&h];
                all.extend(p);
                self.commit(name, version, Ok(Part::Memory(all)))?
            }
            // A local failure still takes part in the agreement.
            (Err(e), _) | (_, Err(e)) => self.commit(name, version, Err(e))?,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Incomplete {
                name: name.into(),
                version,
            })
        }
    }

    /// The checkpoint a restart would restore (`None` on a first run, or
    /// when none survived; collective).
    pub fn latest(&mut self) -> Result<Option<(String, u64)>> {
        self.search()?;
        Ok(self
            .found
            .as_ref()
            .map(|f| (f.entry.name.clone(), f.entry.version)))
    }

    /// On a restart, restores the newest restorable checkpoint into `slots`
    /// (the same pieces, in the same order, as saved) and returns its name
    /// and version; `Ok(None)` when there is nothing to restore (collective).
    ///
    /// Global arrays restore onto any number of ranks. Slices and values
    /// need the rank count that saved them: otherwise [`Error::RankCount`].
    pub fn recover(&mut self, slots: &mut [Slot<'_>]) -> Result<Option<(String, u64)>> {
        self.search()?;
        let Some(found) = self.found.take() else {
            return Ok(None);
        };
        let (n, m) = (found.entry.ranks as usize, self.comm.size());
        let same = n == m;
        let mut images = Vec::new();
        let mut first_err = None;
        for (o, files) in &found.mine {
            match decode_image(files) {
                Ok(img) if img.rank as usize == *o => images.push(img),
                Ok(_) => {
                    first_err = first_err.or(Some(Error::Shape("an image of another rank".into())))
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        let per_rank = images.iter().any(Image::has_per_rank);
        let mut flags = [u8::from(per_rank), u8::from(first_err.is_some())];
        let mut any = [0u8; 2];
        self.comm.allreduce(&flags, &mut any, Max)?;
        if any[0] == 1 && !same {
            self.found = Some(found);
            let f = self.found.as_ref().expect("just put");
            return Err(Error::RankCount {
                name: f.entry.name.clone(),
                version: f.entry.version,
                saved: n,
                now: m,
            });
        }
        let mut res = first_err.map_or(Ok(()), Err);
        if any[1] == 0 {
            for img in &images {
                res = res.and_then(|()| mem::check(img, slots, same));
            }
        }
        flags[0] = u8::from(res.is_err() || any[1] == 1);
        self.comm.allreduce(&flags[..1], &mut any[..1], Max)?;
        if any[0] == 1 {
            return Err(res
                .err()
                .unwrap_or(Error::Shape("some rank's slots do not match".into())));
        }
        for img in &images {
            if same {
                mem::restore_local(img, slots)?;
            }
            mem::restore_global(img, slots)?;
        }
        mem::sync_globals(slots)?;
        let out = (found.entry.name.clone(), found.entry.version);
        self.report(&found.line)?;
        Ok(Some(out))
    }

    /// The line rank 0 reported for the restore (also in the log).
    pub fn restored(&self) -> Option<&str> {
        self.restored.as_deref()
    }

    fn report(&mut self, line: &str) -> Result<()> {
        tracing::info!("restored {line}");
        if self.comm.rank() == 0 {
            self.world.publish(RESTORED_KEY, line.as_bytes())?;
        }
        self.restored = Some(line.to_string());
        Ok(())
    }

    // ---- the file API (SCR) ----

    /// Starts checkpoint `name` (collective); returns its version, one more
    /// than the newest this session knows. Files go where
    /// [`Ckpt::route_file`] says; [`Ckpt::complete_output`] ends it.
    pub fn start_output(&mut self, name: &str) -> Result<u64> {
        check_name(name)?;
        if !matches!(self.phase, Phase::Idle) {
            return Err(Error::Usage {
                op: "start_output",
                reason: "an output or restart is already open",
            });
        }
        let mine = self
            .index
            .entries
            .iter()
            .map(|e| e.version + 1)
            .max()
            .unwrap_or(1);
        let mut v = [0u64];
        self.comm.allreduce(&[mine], &mut v, Max)?;
        let dir = self.l1.files(name, v[0], self.comm.rank());
        // Leftovers of an earlier attempt at this version go (and a
        // background removal of the same version ends first).
        self.wait_retired(Some((name, v[0])));
        RealDisk.remove_all(&dir)?;
        std::fs::create_dir_all(&dir).map_err(Error::file("create", &dir))?;
        self.phase = Phase::Output {
            name: name.into(),
            version: v[0],
        };
        Ok(v[0])
    }

    /// Where to write (during an output) or read (during a restart) the
    /// file `file` of this rank (a plain name, no directories).
    pub fn route_file(&self, file: &str) -> Result<PathBuf> {
        if file.is_empty() || file.contains('/') || file == "." || file == ".." {
            return Err(Error::Usage {
                op: "route_file",
                reason: "a plain file name",
            });
        }
        let me = self.comm.rank();
        match (&self.phase, &self.found) {
            (Phase::Output { name, version }, _) => {
                Ok(self.l1.files(name, *version, me).join(file))
            }
            (Phase::Restart, Some(f)) => {
                Ok(self.l1.files(&f.entry.name, f.entry.version, me).join(file))
            }
            _ => Err(Error::Usage {
                op: "route_file",
                reason: "neither an output nor a restart is open",
            }),
        }
    }

    /// Ends the output (collective): `true` only if every rank passed
    /// `valid` and wrote its part at every level, the same answer on every
    /// rank. A `false` output is not restorable.
    pub fn complete_output(&mut self, valid: bool) -> Result<bool> {
        let Phase::Output { name, version } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return Err(Error::Usage {
                op: "complete_output",
                reason: "no output is open",
            });
        };
        let files = if valid {
            read_dir_files(&self.l1.files(&name, version, self.comm.rank()))
        } else {
            Err(Error::Usage {
                op: "complete_output",
                reason: "the application said its output is invalid",
            })
        };
        self.commit(&name, version, files.map(Part::Routed))
    }

    /// Whether there is a checkpoint to restart from (collective).
    pub fn have_restart(&mut self) -> Result<bool> {
        self.search()?;
        Ok(self.found.is_some())
    }

    /// Opens the newest restorable checkpoint for reading through
    /// [`Ckpt::route_file`]; returns its name and version (collective).
    /// Routed files need the rank count that wrote them
    /// ([`Error::RankCount`] otherwise).
    pub fn start_restart(&mut self) -> Result<(String, u64)> {
        self.search()?;
        let Some(f) = &self.found else {
            return Err(Error::NoCheckpoint);
        };
        if f.entry.ranks as usize != self.comm.size() {
            return Err(Error::RankCount {
                name: f.entry.name.clone(),
                version: f.entry.version,
                saved: f.entry.ranks as usize,
                now: self.comm.size(),
            });
        }
        self.phase = Phase::Restart;
        Ok((f.entry.name.clone(), f.entry.version))
    }

    /// Ends the restart (collective): `true` when every rank passed `valid`.
    /// Otherwise the checkpoint is marked failed everywhere and the next
    /// [`Ckpt::have_restart`] / [`Ckpt::start_restart`] offer the one before.
    pub fn complete_restart(&mut self, valid: bool) -> Result<bool> {
        if !matches!(self.phase, Phase::Restart) {
            return Err(Error::Usage {
                op: "complete_restart",
                reason: "no restart is open",
            });
        }
        self.phase = Phase::Idle;
        let mut all = [0u8];
        self.comm.allreduce(&[u8::from(valid)], &mut all, Min)?;
        let f = self
            .found
            .take()
            .expect("an open restart has its checkpoint");
        if all[0] == 1 {
            self.report(&f.line)?;
            return Ok(true);
        }
        let mut e = f.entry.clone();
        e.state = State::Failed;
        self.index.put(e);
        self.store_index();
        self.searched = false;
        Ok(false)
    }

    /// Waits until every L4 write queued so far is done and marks the
    /// complete ones (collective). Returns whether all succeeded.
    pub fn wait_fs(&mut self) -> Result<bool> {
        let mut all_ok = true;
        if let (Some(f), false) = (&self.flusher, self.fs_pending.is_empty()) {
            f.hurry();
        }
        while !self.fs_pending.is_empty() {
            let before = self.fs_pending.len();
            all_ok &= self.settle_fs()?;
            if self.fs_pending.len() == before {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(all_ok)
    }

    // ---- internals ----

    fn store_index(&self) {
        if let Err(e) = self
            .index
            .store(&RealDisk, &self.l1.index(self.comm.rank()))
        {
            tracing::warn!("storing the checkpoint index: {e}");
        }
    }

    /// The commit protocol (see [`super::index`]); `files` is this rank's
    /// part (the memory image to write to L1, or the routed files already
    /// there) or the local reason it has none. Returns whether every rank
    /// wrote every part.
    fn commit(&mut self, name: &str, version: u64, files: Result<Part<'_>>) -> Result<bool> {
        let t0 = Instant::now();
        // A version written again waits for its old files' removal.
        self.wait_retired(Some((name, version)));
        self.settle_fs()?;
        let fs_due = self.flusher.is_some() && self.taken % self.opts.fs_every == 0;
        if fs_due {
            // At most one L4 checkpoint in flight: the previous one is
            // finished (and marked) before the next is queued.
            self.wait_fs()?;
        }
        let (me, n) = (self.comm.rank(), self.comm.size());
        let levels = self.opts.levels;
        let mut entry = Entry {
            seq: self.index.next_seq(),
            name: name.into(),
            version,
            state: State::Writing,
            ranks: n as u32,
            groups: self.groups.iter().map(|&g| g as u32).collect(),
            xor_set: self.opts.xor_set as u32,
            levels,
            bytes: 0,
            unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        self.index.put(entry.clone());
        self.store_index();
        let mut ok = true;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!("checkpoint {name} v{version}: {e}");
                ok = false;
            }
        };
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                note(Err(e));
                Part::Routed(Vec::new())
            }
        };
        // L1: the files (the file API wrote them already), then the manifest.
        let disk: &dyn Disk = if self.die_in == Some(version) {
            &DieMidWrite
        } else {
            &RealDisk
        };
        let mut parts_crc = None;
        let wrote = match &files {
            Part::Memory(parts) => {
                write_own_parts(disk, &self.l1, name, version, me, MEMORY, parts).map(|(b, c)| {
                    parts_crc = Some(c);
                    b
                })
            }
            Part::Routed(f) => seal_own(disk, &self.l1, name, version, me, f),
        };
        match wrote {
            Ok(b) => entry.bytes = b,
            Err(e) => note(Err(e)),
        }
        // The one byte string the other levels protect (not built for L1 alone).
        let t_l1 = t0.elapsed();
        // The memory image goes to the partner as its parts (no copy) unless
        // the bundle is built anyway (for L3 or L4).
        let need_bundle = levels & level::XOR != 0
            || (matches!(files, Part::Routed(_)) && (fs_due || levels & level::PARTNER != 0));
        let mut bund = if need_bundle {
            match &files {
                Part::Memory(parts) => bundle_one(MEMORY, parts),
                Part::Routed(f) => bundle(f),
            }
        } else {
            Vec::new()
        };
        let t_bundle = t0.elapsed();
        // L2: a copy to the partner; keep the copies of those we partner.
        if levels & level::PARTNER != 0 {
            let partners = groups::partners(&self.groups);
            if let Some(p) = partners[me] {
                let (prefix, pieces): (Vec<u8>, Vec<&[u8]>) = match &files {
                    Part::Memory(parts) if !need_bundle => {
                        let len = parts.iter().map(|x| x.len()).sum();
                        (bundle_prefix(MEMORY, len), parts.clone())
                    }
                    _ => (Vec::new(), vec![&bund[..]]),
                };
                // The copy's crc32c, from the one L1 computed where it can
                // (the partner seals its copy with it rather than making a
                // pass of its own: the copy is checked when it is read).
                let crc = match (&files, parts_crc) {
                    (Part::Memory(parts), Some(c)) => {
                        // The bundle's prefix, then the parts L1 summed.
                        let len = parts.iter().map(|x| x.len()).sum();
                        let head = crc32c::crc32c(&bundle_prefix(MEMORY, len));
                        crc32c::crc32c_combine(head, c, len)
                    }
                    _ => pieces
                        .iter()
                        .fold(crc32c::crc32c(&prefix), |c, x| crc32c::crc32c_append(c, x)),
                };
                // A first message: the pieces' count and lengths, the
                // copy's crc32c and the bundle's prefix; then the pieces.
                let mut meta = (pieces.len() as u32).to_le_bytes().to_vec();
                for x in &pieces {
                    meta.extend_from_slice(&(x.len() as u64).to_le_bytes());
                }
                meta.extend_from_slice(&crc.to_le_bytes());
                meta.extend_from_slice(&prefix);
                let from: Vec<usize> = (0..n).filter(|&q| partners[q] == Some(me)).collect();
                type Got = Vec<(usize, Result<(MappedWrite, u32)>)>;
                let got = crate::scope(|s| -> crate::Result<Got> {
                    let mut sends = vec![self.comm.isend(s, &meta, p, TAG_PARTNER)?];
                    for x in &pieces {
                        sends.push(self.comm.isend(s, x, p, TAG_PARTNER)?);
                    }
                    let mut got = Vec::new();
                    for &q in &from {
                        let (m, _) = self.comm.recv_vec::<u8>(q, TAG_PARTNER)?;
                        let Some((lens, crc, prefix)) = parse_meta(&m) else {
                            // A malformed announcement: the copy is lost, and
                            // the pieces that follow cannot be told apart.
                            got.push((
                                q,
                                Err(Error::Usage {
                                    op: "a partner copy",
                                    reason: "malformed announcement from the partner",
                                }),
                            ));
                            continue;
                        };
                        let total = prefix.len() + lens.iter().sum::<usize>();
                        // Received straight into the copy's file (mapped).
                        let dest = self.l1.partner(name, version, q);
                        let spare = self.l1.spare(q);
                        let cache = &mut self.mappings;
                        match MappedWrite::create(&dest, total, Some(&spare), cache) {
                            Ok(mut w) => {
                                let buf = w.payload();
                                buf[..prefix.len()].copy_from_slice(prefix);
                                let mut at = prefix.len();
                                for l in lens {
                                    self.comm.recv(&mut buf[at..at + l], q, TAG_PARTNER)?;
                                    at += l;
                                }
                                got.push((q, Ok((w, crc))));
                            }
                            Err(e) => {
                                // No room for the copy: drain the pieces.
                                for l in lens {
                                    let mut scratch = vec![0u8; l];
                                    self.comm.recv(&mut scratch, q, TAG_PARTNER)?;
                                }
                                got.push((q, Err(e)));
                            }
                        }
                    }
                    drop(sends);
                    Ok(got)
                })?;
                for (_, r) in got {
                    match r.and_then(|(w, crc)| w.commit(crc)) {
                        Ok(m) => self.mappings.push(m),
                        Err(e) => note(Err(e)),
                    }
                }
                // The mappings of the copies kept and of the spare: the
                // ones the next copies can reuse (older ones go).
                let most = (self.opts.keep + 1) * from.len();
                let extra = self.mappings.len().saturating_sub(most);
                self.mappings.drain(..extra);
            }
        }
        let t_l2 = t0.elapsed();
        // L3: XOR parity in this rank's set.
        if levels & level::XOR != 0 {
            let sets = groups::xor_sets(&self.groups, self.opts.xor_set);
            let mut lens = vec![0u64; n];
            self.comm.allgather(&[bund.len() as u64], &mut lens)?;
            if let Some((s, i)) = groups::set_of(&sets, me) {
                let set = &sets[s];
                let k = set.len();
                let slens: Vec<u64> = set.iter().map(|&r| lens[r]).collect();
                let c = xor::chunk_len(*slens.iter().max().unwrap_or(&0) as usize, k);
                let mut segment = vec![0u8; c];
                let mut inc = vec![0u8; c];
                for step in 1..k {
                    let to = (i + step) % k;
                    let from = (i + k - step) % k;
                    let out = xor::chunk_ref(&bund, i, to, c);
                    self.comm
                        .sendrecv(&out, set[to], TAG_XOR, &mut inc, set[from], TAG_XOR)?;
                    xor::xor_into(&mut segment, &inc);
                }
                let p = Parity {
                    set: set.iter().map(|&r| r as u32).collect(),
                    lens: slens,
                    c: c as u64,
                    segment,
                };
                let head = p.head();
                note(write_sealed_parts(
                    &RealDisk,
                    &self.l1.parity(name, version, me),
                    &[&head, &p.segment],
                ));
            }
        }
        let t_l3 = t0.elapsed();
        tracing::debug!(
            "checkpoint {name} v{version}: L1 {t_l1:?}, bundle {:?}, L2 {:?}, L3 {:?}",
            t_bundle - t_l1,
            t_l2 - t_bundle,
            t_l3 - t_l2
        );
        // Agreement: complete only if every rank wrote every part.
        let mut all = [0u8];
        self.comm.allreduce(&[u8::from(ok)], &mut all, Min)?;
        let complete = all[0] == 1;
        entry.state = if complete {
            State::Complete
        } else {
            State::Failed
        };
        self.index.put(entry.clone());
        self.store_index();
        if complete {
            self.taken += 1;
            let gone = self.index.retire(self.opts.keep);
            self.store_index();
            // The retired versions' files go in the background: the index
            // no longer names them (stored above), so a crash before they
            // are gone leaves only garbage that the next fresh run clears.
            for e in gone {
                let paths = self.paths_of(&e);
                let spawned = std::thread::Builder::new()
                    .name("dos-ckpt-retire".into())
                    .spawn(move || remove_paths(&paths));
                match spawned {
                    Ok(h) => self.retiring.push((e.name.clone(), e.version, h)),
                    Err(_) => remove_paths(&self.paths_of(&e)),
                }
            }
            // L4, in the background.
            if let Some(f) = &self.flusher {
                if fs_due {
                    let rel = rel_root(&self.opts.id)
                        .join(format!("{name}.v{version}"))
                        .join(format!("r{me}.bundle"));
                    // The memory image: the L1 file itself, sealed with
                    // the crc32c L1 computed (nothing copied or summed
                    // here); else the bundle built for L3 or routed files.
                    let from_l1 = match (&files, parts_crc, bund.is_empty()) {
                        (Part::Memory(parts), Some(c), true) => {
                            let len: usize = parts.iter().map(|x| x.len()).sum();
                            let prefix = bundle_prefix(MEMORY, len);
                            let crc = crc32c::crc32c_combine(crc32c::crc32c(&prefix), c, len);
                            let l1 = self.l1.files(name, version, me).join(MEMORY);
                            std::fs::File::open(&l1).ok().map(|file| {
                                let mut head =
                                    header_for((prefix.len() + len) as u64, crc).to_vec();
                                head.extend_from_slice(&prefix);
                                (head, Body::File(file, len as u64))
                            })
                        }
                        _ => None,
                    };
                    let (head, body) = match from_l1 {
                        Some(x) => x,
                        None => {
                            let b = match &files {
                                Part::Memory(parts) if bund.is_empty() => bundle_one(MEMORY, parts),
                                _ => std::mem::take(&mut bund),
                            };
                            (seal_header(&b).to_vec(), Body::Bytes(b))
                        }
                    };
                    if f.submit(entry.seq, rel, head, body) {
                        let mut e = entry.clone();
                        e.levels |= level::FS;
                        self.fs_pending.push(e);
                    }
                }
            }
        } else {
            self.remove_mine(&entry);
        }
        self.cost = Some(t0.elapsed());
        self.since = Instant::now();
        self.calls = 0;
        Ok(complete)
    }

    /// Removes this rank's files of checkpoint `e` from L1.
    fn remove_mine(&mut self, e: &Entry) {
        self.wait_retired(Some((&e.name, e.version)));
        remove_paths(&self.paths_of(e));
    }

    /// This rank's files of checkpoint `e` in L1: what goes, and the
    /// partner copies kept as spares for the next copies to reuse.
    fn paths_of(&self, e: &Entry) -> Retire {
        let me = self.comm.rank();
        let d = &self.l1;
        let remove = vec![
            d.files(&e.name, e.version, me),
            d.manifest(&e.name, e.version, me),
            d.parity(&e.name, e.version, me),
        ];
        let mut recycle = Vec::new();
        let partners = groups::partners(&e.groups.iter().map(|&g| g as usize).collect::<Vec<_>>());
        for (q, p) in partners.iter().enumerate() {
            if *p == Some(me) {
                recycle.push((d.partner(&e.name, e.version, q), d.spare(q)));
            }
        }
        Retire {
            remove,
            recycle,
            dir: d.version(&e.name, e.version),
        }
    }

    /// Waits for the background removal of `(name, version)` (every one
    /// with `None`), and reaps the finished ones.
    fn wait_retired(&mut self, which: Option<(&str, u64)>) {
        let mut keep = Vec::new();
        for (n, v, h) in self.retiring.drain(..) {
            let hit = which.is_none_or(|(wn, wv)| wn == n && wv == v);
            if hit || h.is_finished() {
                let _ = h.join();
            } else {
                keep.push((n, v, h));
            }
        }
        self.retiring = keep;
    }

    /// Marks the L4 checkpoints every rank has flushed (collective).
    fn settle_fs(&mut self) -> Result<bool> {
        let Some(e) = self.fs_pending.first().cloned() else {
            return Ok(true);
        };
        let st = self.flusher.as_ref().and_then(|f| f.status(e.seq));
        // 0: failed, 1: pending, 2: done.
        let mine = match st {
            Some(true) => 2u8,
            Some(false) => 0,
            None => 1,
        };
        let mut low = [0u8];
        self.comm.allreduce(&[mine], &mut low, Min)?;
        if low[0] == 1 {
            return Ok(true);
        }
        self.fs_pending.remove(0);
        if low[0] == 2 && self.comm.rank() == 0 {
            if let Some(r) = &self.opts.fs {
                let rel = rel_root(&self.opts.id)
                    .join(format!("{}.v{}", e.name, e.version))
                    .join("COMPLETE");
                let b = postcard::to_stdvec(&e).expect("an entry serializes");
                if let Err(err) = r.write(&rel, &seal(&b)) {
                    tracing::warn!("marking L4 checkpoint complete: {err}");
                }
                self.retire_fs(r);
            }
        }
        Ok(low[0] == 2)
    }

    /// Keeps the newest `keep` complete checkpoints on L4 (rank 0).
    fn retire_fs(&self, r: &Remote) {
        let mut marked = fs_entries(r, &self.opts.id);
        marked.sort_by_key(|e| e.version);
        let n = marked.len().saturating_sub(self.opts.keep);
        for e in &marked[..n] {
            let rel = rel_root(&self.opts.id).join(format!("{}.v{}", e.name, e.version));
            if let Err(err) = r.remove_all(&rel) {
                tracing::warn!("{err}");
            }
        }
    }

    /// Finds and rebuilds the newest restorable checkpoint, once (collective).
    fn search(&mut self) -> Result<()> {
        if self.searched {
            return Ok(());
        }
        self.searched = true;
        self.found = None;
        if self.opts.attempt == 0 {
            return Ok(());
        }
        // Candidates: every complete entry any rank's index (on any node)
        // lists, less those some rank marked failed; plus L4's marked ones.
        let mut mine: Vec<(Entry, bool)> = Vec::new();
        for f in RealDisk.list(&self.l1.root)? {
            if f.starts_with("index.r") && !f.ends_with(".tmp") {
                match Index::load(&RealDisk, &self.l1.root.join(&f)) {
                    Ok(i) => mine.extend(i.entries.into_iter().map(|e| (e, false))),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
        mine.extend(self.index.entries.iter().cloned().map(|e| (e, false)));
        if self.comm.rank() == 0 {
            if let Some(r) = &self.opts.fs {
                mine.extend(fs_entries(r, &self.opts.id).into_iter().map(|e| (e, true)));
            }
        }
        let enc = postcard::to_stdvec(&mine).expect("entries serialize");
        let mut cands: BTreeMap<(u64, String), (Entry, bool, bool)> = BTreeMap::new();
        for b in allgather_bytes(&self.comm, &enc)? {
            let list: Vec<(Entry, bool)> = postcard::from_bytes(&b).unwrap_or_default();
            for (e, fs) in list {
                let k = (e.version, e.name.clone());
                let failed = e.state == State::Failed && !fs;
                let complete = e.state == State::Complete || fs;
                let slot = cands.entry(k).or_insert_with(|| (e.clone(), false, false));
                slot.1 |= fs;
                slot.2 |= failed;
                if complete && slot.0.state != State::Complete {
                    slot.0 = e;
                }
            }
        }
        for ((_, _), (e, fs, failed)) in cands.into_iter().rev() {
            if failed || (e.state != State::Complete && !fs) {
                continue;
            }
            if e.state == State::Complete {
                if let Some(f) = self.rebuild_local(&e)? {
                    self.found = Some(f);
                    return Ok(());
                }
            }
            if fs {
                if let Some(f) = self.rebuild_fs(&e)? {
                    self.found = Some(f);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Rebuilds `e` from L1, L2 and L3 (collective); `None` if it cannot be.
    fn rebuild_local(&mut self, e: &Entry) -> Result<Option<Found>> {
        let (me, m) = (self.comm.rank(), self.comm.size());
        let n = e.ranks as usize;
        let old_groups: Vec<usize> = e.groups.iter().map(|&g| g as usize).collect();
        if old_groups.len() != n {
            return Ok(None);
        }
        let partners = groups::partners(&old_groups);
        let sets = if e.levels & level::XOR != 0 {
            groups::xor_sets(&old_groups, e.xor_set as usize)
        } else {
            Vec::new()
        };
        let d = &self.l1;
        // What this rank can read.
        let mut avail = vec![0u8; n];
        let mut own: BTreeMap<usize, Files> = BTreeMap::new();
        let mut copies: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut parity: BTreeMap<usize, Parity> = BTreeMap::new();
        for o in 0..n {
            let mine = o == me || (n != m && o % m == me);
            if mine {
                if let Ok(f) = read_own(&RealDisk, d, &e.name, e.version, o) {
                    avail[o] |= have::OWN;
                    own.insert(o, f);
                }
                if let Ok(b) = read_sealed(&RealDisk, &d.parity(&e.name, e.version, o)) {
                    if let Some(p) = Parity::decode(&b) {
                        avail[o] |= have::PARITY;
                        parity.insert(o, p);
                    }
                }
            }
            if partners[o] == Some(me) || (mine && partners[o].is_some_and(|p| p >= m)) {
                if let Ok(b) = read_sealed(&RealDisk, &d.partner(&e.name, e.version, o)) {
                    avail[o] |= have::PARTNER;
                    copies.insert(o, b);
                }
            }
        }
        let mut all = vec![0u8; n * m];
        self.comm.allgather(&avail, &mut all)?;
        let avail: Vec<Vec<u8>> = all.chunks(n.max(1)).map(<[u8]>::to_vec).collect();
        let Some(p) = plan::plan(n, m, &avail, &sets) else {
            return Ok(None);
        };
        // Move the files to their targets.
        let target = |o: usize, s: &Source| if n == m { o } else { s.target() };
        let mut out: Vec<(usize, i32, Vec<u8>)> = Vec::new();
        let mut expect: Vec<(usize, i32)> = Vec::new();
        let mut got: Vec<(usize, Files)> = Vec::new();
        let mut sums: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut ok = true;
        for (o, s) in p.iter().enumerate() {
            let t = target(o, s);
            let tag = o as i32;
            match s {
                Source::Own { holder } | Source::Partner { holder } => {
                    if *holder == me {
                        let b = match s {
                            Source::Own { .. } => own.get(&o).map(bundle),
                            _ => copies.remove(&o),
                        }
                        .unwrap_or_default();
                        if t == me {
                            match unbundle(Path::new("partner copy"), &b) {
                                Ok(f) => got.push((o, f)),
                                Err(_) => ok = false,
                            }
                        } else {
                            out.push((t, tag, b));
                        }
                    } else if t == me {
                        expect.push((*holder, tag));
                    }
                }
                Source::Xor {
                    index,
                    set,
                    holders,
                    root,
                } => {
                    let root = if n == m { o } else { *root };
                    for (k, &h) in holders.iter().enumerate() {
                        if k == *index {
                            continue;
                        }
                        if h == me {
                            let member = set[k];
                            let msg = match (own.get(&member), parity.get(&member)) {
                                (Some(f), Some(par)) => {
                                    let c = par.c as usize;
                                    let mut msg = Vec::with_capacity(16 + set.len() * c);
                                    msg.extend_from_slice(&par.c.to_le_bytes());
                                    msg.extend_from_slice(&par.lens[*index].to_le_bytes());
                                    xor::contribution_into(
                                        &mut msg,
                                        k,
                                        set.len(),
                                        &bundle(f),
                                        &par.segment,
                                        c,
                                    );
                                    msg
                                }
                                _ => Vec::new(),
                            };
                            if root == me {
                                add_contribution(&mut sums, o, &msg, &mut ok);
                            } else {
                                out.push((root, TAG_XOR + tag, msg));
                            }
                        } else if root == me {
                            expect.push((h, TAG_XOR + tag));
                        }
                    }
                }
            }
        }
        let received = crate::scope(|s| -> crate::Result<Vec<(usize, i32, Vec<u8>)>> {
            // Kept until the receives are done (a dropped request waits).
            let _sends = out
                .iter()
                .map(|(t, tag, b)| self.comm.isend(s, b, *t, *tag))
                .collect::<crate::Result<Vec<_>>>()?;
            expect
                .iter()
                .map(|&(h, tag)| Ok((h, tag, self.comm.recv_vec::<u8>(h, tag)?.0)))
                .collect()
        })?;
        for (_, tag, b) in received {
            if tag >= TAG_XOR {
                add_contribution(&mut sums, (tag - TAG_XOR) as usize, &b, &mut ok);
            } else {
                match unbundle(Path::new("moved files"), &b) {
                    Ok(f) if !b.is_empty() => got.push((tag as usize, f)),
                    _ => ok = false,
                }
            }
        }
        for (o, sum) in sums {
            let Source::Xor { index, set, .. } = &p[o] else {
                continue;
            };
            if sum.len() < 16 {
                ok = false;
                continue;
            }
            let c = u64::from_le_bytes(sum[..8].try_into().expect("8 bytes")) as usize;
            let len = u64::from_le_bytes(sum[8..16].try_into().expect("8 bytes")) as usize;
            let (data, _seg) = xor::assemble(*index, set.len(), c, &sum[16..], len);
            match unbundle(Path::new("XOR rebuild"), &data) {
                Ok(f) => got.push((o, f)),
                Err(_) => ok = false,
            }
        }
        // The rebuilt files of this rank return to its L1.
        if n == m {
            for (o, f) in &got {
                if *o == me && !matches!(p[me], Source::Own { holder } if holder == me) {
                    if let Err(err) = write_own(&RealDisk, d, &e.name, e.version, me, f) {
                        tracing::warn!("{err}");
                        ok = false;
                    }
                }
            }
        }
        if n == m && got.iter().all(|(o, _)| *o != me) {
            ok = false;
        }
        let mut low = [0u8];
        self.comm.allreduce(&[u8::from(ok)], &mut low, Min)?;
        if low[0] == 0 {
            return Ok(None);
        }
        let mut mine = e.clone();
        mine.state = State::Complete;
        self.index.put(mine);
        self.store_index();
        let (lvl, rebuilt) = plan::describe(&p);
        let line = format!(
            "{} v{} from {lvl} ({rebuilt} of {n} ranks rebuilt{})",
            e.name,
            e.version,
            if n == m {
                String::new()
            } else {
                format!(", onto {m} ranks")
            }
        );
        got.sort_by_key(|(o, _)| *o);
        Ok(Some(Found {
            entry: e.clone(),
            mine: got,
            line,
        }))
    }

    /// Reads `e` back from L4 (collective); `None` if some rank cannot.
    fn rebuild_fs(&mut self, e: &Entry) -> Result<Option<Found>> {
        let (me, m) = (self.comm.rank(), self.comm.size());
        let n = e.ranks as usize;
        let mut got = Vec::new();
        let mut ok = true;
        if let Some(r) = &self.opts.fs {
            for o in (0..n).filter(|&o| if n == m { o == me } else { o % m == me }) {
                let rel = rel_root(&self.opts.id)
                    .join(format!("{}.v{}", e.name, e.version))
                    .join(format!("r{o}.bundle"));
                match r.read(&rel).and_then(|b| {
                    let p = super::store::unseal(&rel, &b)?.to_vec();
                    unbundle(&rel, &p)
                }) {
                    Ok(f) => got.push((o, f)),
                    Err(err) => {
                        tracing::warn!("{err}");
                        ok = false;
                    }
                }
            }
        } else {
            ok = false;
        }
        if n == m {
            for (_, f) in &got {
                if write_own(&RealDisk, &self.l1, &e.name, e.version, me, f).is_err() {
                    ok = false;
                }
            }
        }
        let mut low = [0u8];
        self.comm.allreduce(&[u8::from(ok)], &mut low, Min)?;
        if low[0] == 0 {
            return Ok(None);
        }
        let mut mine = e.clone();
        mine.state = State::Complete;
        self.index.put(mine);
        self.store_index();
        Ok(Some(Found {
            entry: e.clone(),
            mine: got,
            line: format!(
                "{} v{} from L4 ({n} ranks read back{})",
                e.name,
                e.version,
                if n == m {
                    String::new()
                } else {
                    format!(", onto {m} ranks")
                }
            ),
        }))
    }
}

/// The files of a checkpoint that goes (see `Ckpt::paths_of`).
#[derive(Debug)]
struct Retire {
    /// Files and trees removed.
    remove: Vec<PathBuf>,
    /// Partner copies renamed to spares `(from, to)` (the memory of a
    /// tmpfs file is reused by the next copy instead of freed and
    /// allocated again; /dev/shm then holds between checkpoints what it
    /// holds during one).
    recycle: Vec<(PathBuf, PathBuf)>,
    /// The version's directory, removed if empty.
    dir: PathBuf,
}

/// Removes a retired checkpoint's files (see [`Retire`]).
fn remove_paths(r: &Retire) {
    for (from, to) in &r.recycle {
        if std::fs::rename(from, to).is_err() {
            let _ = std::fs::remove_file(from);
        }
    }
    for p in &r.remove {
        if let Err(err) = RealDisk.remove_all(p) {
            tracing::warn!("{err}");
        }
    }
    let _ = std::fs::remove_dir(&r.dir);
}

/// The pieces' lengths, the copy's crc32c and the bundle prefix of a
/// partner announcement.
fn parse_meta(m: &[u8]) -> Option<(Vec<usize>, u32, &[u8])> {
    let k = u32::from_le_bytes(m.get(..4)?.try_into().ok()?) as usize;
    let end = k.checked_mul(8)?.checked_add(4)?;
    let lens = m
        .get(4..end)?
        .chunks_exact(8)
        .map(|c| usize::try_from(u64::from_le_bytes(c.try_into().expect("8 bytes"))).ok())
        .collect::<Option<Vec<_>>>()?;
    lens.iter().try_fold(0usize, |a, &l| a.checked_add(l))?;
    let crc = u32::from_le_bytes(m.get(end..end + 4)?.try_into().ok()?);
    Some((lens, crc, &m[end + 4..]))
}

/// XORs a contribution (`c`, `len`, chunks) into the running sum for `o`.
fn add_contribution(sums: &mut BTreeMap<usize, Vec<u8>>, o: usize, msg: &[u8], ok: &mut bool) {
    if msg.len() < 16 {
        *ok = false;
        return;
    }
    let s = sums.entry(o).or_insert_with(|| {
        let mut v = msg[..16].to_vec();
        v.resize(msg.len(), 0);
        v
    });
    if s.len() != msg.len() || s[..16] != msg[..16] {
        *ok = false;
        return;
    }
    xor::xor_into(&mut s[16..], &msg[16..]);
}

/// The image in a rank's files.
fn decode_image(files: &Files) -> Result<Image> {
    let (_, b) = files.iter().find(|(f, _)| f == MEMORY).ok_or_else(|| {
        Error::Shape("the checkpoint was written with the file API, not the memory API".into())
    })?;
    Image::decode(b)
}

/// The files in `dir`, sorted by name.
fn read_dir_files(dir: &Path) -> Result<Files> {
    let mut v = Vec::new();
    for name in RealDisk.list(dir)? {
        if name.ends_with(".tmp") {
            continue;
        }
        let b = RealDisk.read(&dir.join(&name))?;
        v.push((name, b));
    }
    Ok(v)
}

/// The L4 directory of a job, relative to the target.
fn rel_root(id: &str) -> PathBuf {
    PathBuf::from(format!("dos-ckpt-{id}"))
}

/// The entries of the L4 checkpoints marked complete.
fn fs_entries(r: &Remote, id: &str) -> Vec<Entry> {
    let root = rel_root(id);
    r.list(&root)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| {
            let rel = root.join(&d).join("COMPLETE");
            let b = r.read(&rel).ok()?;
            let p = super::store::unseal(&rel, &b).ok()?;
            postcard::from_bytes::<Entry>(p).ok()
        })
        .collect()
}

/// Every rank's `bytes` (collective).
fn allgather_bytes(comm: &Comm, bytes: &[u8]) -> crate::Result<Vec<Vec<u8>>> {
    let n = comm.size();
    let mut lens = vec![0u64; n];
    comm.allgather(&[bytes.len() as u64], &mut lens)?;
    let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
    let displs: Vec<usize> = counts
        .iter()
        .scan(0, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect();
    let mut all = vec![0u8; counts.iter().sum()];
    comm.allgatherv(bytes, &mut all, &counts, &displs)?;
    Ok((0..n)
        .map(|r| all[displs[r]..displs[r] + counts[r]].to_vec())
        .collect())
}

/// The lowest rank that shares this rank's node (its shared memory).
fn node_leader(comm: &Comm) -> usize {
    let me = comm.rank();
    let eng = comm.eng.enter();
    (0..comm.size())
        .find(|&r| r == me || comm.peer(r).is_ok_and(|p| eng.local_index(p).is_some()))
        .unwrap_or(me)
}

#[cfg(test)]
mod tests {
    use super::node_dir;
    use std::path::PathBuf;

    #[test]
    fn node_placeholder_names_the_node() {
        assert_eq!(
            node_dir("/dev/shm", Some("198.18.0.2".into())),
            PathBuf::from("/dev/shm")
        );
        assert_eq!(
            node_dir("/tmp/ck/{node}", Some("198.18.0.2".into())),
            PathBuf::from("/tmp/ck/198.18.0.2")
        );
        assert_eq!(
            node_dir("/tmp/ck/{node}", None),
            PathBuf::from("/tmp/ck/local")
        );
        assert_eq!(
            node_dir("/tmp/{node}", Some("../x/y".into())),
            PathBuf::from("/tmp/.._x_y"),
            "no separator can come from the address"
        );
        assert_eq!(
            node_dir("/tmp/{node}", Some("..".into())),
            PathBuf::from("/tmp/_")
        );
    }
}
