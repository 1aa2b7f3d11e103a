//! What checkpoints a directory holds, for tools (`dosckpt`): every job id's
//! checkpoints with their state, levels and sizes, merged from the indexes of
//! all ranks (L1) or from the `COMPLETE` markers (L4), and their removal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::index::{level, Entry, Index, State};
use super::store::{read_sealed, Disk, RealDisk};

/// One checkpoint found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The job id (`DOS_CKPT_ID`).
    pub id: String,
    /// The checkpoint's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Complete if any rank's index (or an L4 marker) says so, failed if
    /// some rank marked it failed, else being written (or crashed while).
    pub state: State,
    /// Levels ([`level`] bits).
    pub levels: u8,
    /// Ranks that wrote it.
    pub ranks: u32,
    /// Bytes of the ranks' files, as the indexes found here report them.
    pub bytes: u64,
    /// Bytes its directory takes here (all levels' files).
    pub on_disk: u64,
    /// When it was written (seconds since the Unix epoch).
    pub unix_secs: u64,
}

impl Listed {
    /// `complete`, `failed` or `writing`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Complete => "complete",
            State::Failed => "failed",
            State::Writing => "writing",
        }
    }

    /// `L1+L2`-style levels.
    pub fn level_names(&self) -> String {
        level::names(self.levels)
    }
}

/// The checkpoints under `dir` (a `DOS_CKPT_DIR`, or an L4 target), sorted
/// by id, name and version.
pub fn list(dir: &Path) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for root in RealDisk.list(dir)? {
        let Some(id) = root.strip_prefix("dos-ckpt-") else {
            continue;
        };
        let rootp = dir.join(&root);
        if !rootp.is_dir() {
            continue;
        }
        let mut merged: BTreeMap<(String, u64), Listed> = BTreeMap::new();
        let mut add = |e: Entry, bytes: u64| {
            let l = merged.entry((e.name.clone(), e.version)).or_insert(Listed {
                id: id.to_string(),
                name: e.name.clone(),
                version: e.version,
                state: e.state,
                levels: 0,
                ranks: e.ranks,
                bytes: 0,
                on_disk: 0,
                unix_secs: e.unix_secs,
            });
            l.levels |= e.levels;
            l.bytes += bytes;
            l.state = match (l.state, e.state) {
                (State::Failed, _) | (_, State::Failed) => State::Failed,
                (State::Complete, _) | (_, State::Complete) => State::Complete,
                _ => State::Writing,
            };
        };
        for f in RealDisk.list(&rootp)? {
            if f.starts_with("index.r") && !f.ends_with(".tmp") {
                let idx = Index::load(&RealDisk, &rootp.join(&f))?;
                for e in idx.entries {
                    let b = e.bytes;
                    add(e, b);
                }
            } else if let Ok(b) = read_sealed(&RealDisk, &rootp.join(&f).join("COMPLETE")) {
                if let Ok(mut e) = postcard::from_bytes::<Entry>(&b) {
                    e.state = State::Complete;
                    e.levels = level::FS;
                    add(e, 0);
                }
            }
        }
        for l in merged.values_mut() {
            l.on_disk = du(&rootp.join(format!("{}.v{}", l.name, l.version)));
        }
        out.extend(merged.into_values());
    }
    Ok(out)
}

/// Bytes of the files under `p`.
fn du(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Removes job `id`'s checkpoints under `dir`: all of them, or only
/// `name` version `version` (its data and its index entries). Returns the
/// paths removed.
pub fn remove(dir: &Path, id: &str, only: Option<(&str, u64)>) -> Result<Vec<PathBuf>> {
    super::index::check_name(id)?;
    let root = dir.join(format!("dos-ckpt-{id}"));
    if !root.is_dir() {
        return Err(Error::file("remove", &root)(
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    let Some((name, version)) = only else {
        RealDisk.remove_all(&root)?;
        return Ok(vec![root]);
    };
    super::index::check_name(name)?;
    // Index entries first, then the data (a restart never trusts an entry
    // whose data is gone: it checks, but it need not).
    for f in RealDisk.list(&root)? {
        if f.starts_with("index.r") && !f.ends_with(".tmp") {
            let p = root.join(&f);
            let mut idx = Index::load(&RealDisk, &p)?;
            let before = idx.entries.len();
            idx.entries
                .retain(|e| !(e.name == name && e.version == version));
            if idx.entries.len() != before {
                idx.store(&RealDisk, &p)?;
            }
        }
    }
    let v = root.join(format!("{name}.v{version}"));
    if !v.exists() {
        return Err(Error::file("remove", &v)(
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    RealDisk.remove_all(&v)?;
    Ok(vec![v])
}
