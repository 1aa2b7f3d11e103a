//! `dosbench md`: an mdtest-shaped metadata benchmark.
//!
//! Every rank creates `files` empty files, stats them, then removes them,
//! in two placements (mdtest's default and its `-u`):
//!
//! * **shared**: all ranks' files in one directory (`DIR/md.shared`), the
//!   case a directory's data structure and the metadata server's lock decide;
//! * **unique**: each rank's files in a directory of its own (`DIR/md.<rank>`).
//!
//! A phase's time is the slowest rank's, from a barrier to its last
//! operation; its rate is all ranks' operations over that time (mdtest's
//! convention), in operations per second, the median over `--reps`
//! repetitions.
//!
//! The operations go through the runtime's file API ([`MdRuntime`]):
//!
//! * dos (default): `dos::io` on the dosfs of `DOSFS`. A create is
//!   `File::open` with `Mode::create().exclusive()` on a communicator of this
//!   rank alone, then `File::close` (mdtest's open-with-O_CREAT and close);
//!   a stat is the file system's stat; a remove is `File::delete`. With
//!   `--bare`, a create is the file system client's one create request
//!   (`dos::io::Fs::client`), which shows what `File::open` adds.
//! * `--posix` (and always in the MPI build): the process's own file calls
//!   (`open(O_CREAT|O_EXCL)`+`close`, `stat`, `unlink`) on a local
//!   directory: a dosfs FUSE mount (`dosfs mount`), or the local disk for
//!   the baseline.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::runtime::Runtime;
use crate::stats::median;
use crate::{Error, Result};

/// The options of `dosbench md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdOptions {
    /// Files each rank creates, stats and removes per placement.
    pub files: u64,
    /// Repetitions; the median is reported.
    pub reps: usize,
    /// The directory the benchmark's directories go in.
    pub dir: Option<String>,
    /// The process's own file calls on a local path instead of `dos::io`.
    pub posix: bool,
    /// Only the shared-directory placement.
    pub shared_only: bool,
    /// dos: create with the file system client's create (one request)
    /// instead of `File::open` on a one-rank communicator and `close`.
    pub bare: bool,
}

impl Default for MdOptions {
    fn default() -> MdOptions {
        MdOptions {
            files: 1000,
            reps: 3,
            dir: None,
            posix: false,
            shared_only: false,
            bare: false,
        }
    }
}

impl MdOptions {
    /// Checks the options.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.files == 0 {
            return Err("--files must be at least 1".into());
        }
        if self.reps == 0 {
            return Err("--reps must be at least 1".into());
        }
        Ok(())
    }
}

/// What a rank needs of its runtime to run `dosbench md`.
pub trait MdRuntime: Runtime {
    /// Per-run state (a one-rank communicator and the file system, say).
    type Md;
    /// The directory used when `--path` is not given.
    fn md_default_dir(posix: bool) -> &'static str;
    /// Prepares the run. Collective.
    fn md_begin(&self, opts: &MdOptions) -> Result<Self::Md>;
    /// Creates directory `path`.
    fn md_mkdir(&self, md: &Self::Md, path: &str) -> Result<()>;
    /// Creates the empty file `path` (it must not exist), and closes it.
    fn md_create(&self, md: &Self::Md, path: &str) -> Result<()>;
    /// Stats `path`.
    fn md_stat(&self, md: &Self::Md, path: &str) -> Result<()>;
    /// Removes the file `path`.
    fn md_remove(&self, md: &Self::Md, path: &str) -> Result<()>;
    /// Removes the empty directory `path`.
    fn md_rmdir(&self, md: &Self::Md, path: &str) -> Result<()>;
}

/// The process's own file calls (the `--posix` operations).
pub mod posix {
    use super::*;

    fn io<'a>(op: &'static str, path: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |e| Error::Io {
            op,
            what: format!("{path}: {e}"),
        }
    }

    /// `mkdir`.
    pub fn mkdir(path: &str) -> Result<()> {
        std::fs::create_dir(path).map_err(io("mkdir", path))
    }

    /// `open(O_CREAT|O_EXCL|O_WRONLY)` then `close`.
    pub fn create(path: &str) -> Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map(drop)
            .map_err(io("create", path))
    }

    /// `stat`.
    pub fn stat(path: &str) -> Result<()> {
        std::fs::metadata(path).map(drop).map_err(io("stat", path))
    }

    /// `unlink`.
    pub fn remove(path: &str) -> Result<()> {
        std::fs::remove_file(path).map_err(io("unlink", path))
    }

    /// `rmdir`.
    pub fn rmdir(path: &str) -> Result<()> {
        std::fs::remove_dir(path).map_err(io("rmdir", path))
    }
}

/// One placement's rates (operations per second, all ranks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MdRow {
    /// `shared` or `unique`.
    pub placement: String,
    /// Creates per second (median).
    pub create: f64,
    /// Stats per second (median).
    pub stat: f64,
    /// Removes per second (median).
    pub remove: f64,
}

/// What rank 0 reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MdOutcome {
    /// `"md"`.
    pub benchmark: String,
    /// `"dos"` or `"mpi"`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// `"dos::io"` or `"posix"`.
    pub api: String,
    /// Number of ranks.
    pub ranks: usize,
    /// Files per rank and placement.
    pub files: u64,
    /// Repetitions.
    pub reps: usize,
    /// `"ops/s"`.
    pub unit: String,
    /// One row per placement.
    pub rows: Vec<MdRow>,
}

impl MdOutcome {
    /// One JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut s = format!(
            "# dosbench md ({} via {}): {} ranks x {} files, median of {}\n\
             # {:<10} {:>12} {:>12} {:>12}\n",
            self.implementation,
            self.api,
            self.ranks,
            self.files,
            self.reps,
            "placement",
            "create/s",
            "stat/s",
            "remove/s"
        );
        for r in &self.rows {
            s += &format!(
                "  {:<10} {:>12.0} {:>12.0} {:>12.0}\n",
                r.placement, r.create, r.stat, r.remove
            );
        }
        s
    }
}

/// The slowest rank's value of `x` (an alltoall of one `f64` per rank).
fn max_over_ranks<R: Runtime>(rt: &R, x: f64) -> Result<f64> {
    let n = rt.size();
    let send: Vec<u8> = (0..n).flat_map(|_| x.to_le_bytes()).collect();
    let mut recv = vec![0u8; 8 * n];
    rt.alltoall(&send, &mut recv)?;
    Ok(recv
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .fold(x, f64::max))
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Runs `dosbench md` on every rank; rank 0 returns the outcome.
pub fn run<R: MdRuntime>(rt: &R, opts: &MdOptions) -> Result<Option<MdOutcome>> {
    opts.check().map_err(Error::Usage)?;
    let (rank, ranks) = (rt.rank(), rt.size());
    let md = rt.md_begin(opts)?;
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| R::md_default_dir(opts.posix).to_string());
    let placements: &[&str] = if opts.shared_only {
        &["shared"]
    } else {
        &["shared", "unique"]
    };
    let total = (opts.files * ranks as u64) as f64;
    let mut rows = Vec::new();
    for &placement in placements {
        let sub = if placement == "shared" {
            join(&dir, "md.shared")
        } else {
            join(&dir, &format!("md.{rank}"))
        };
        let names: Vec<String> = (0..opts.files)
            .map(|i| join(&sub, &format!("f.{rank}.{i}")))
            .collect();
        let (mut creates, mut stats, mut removes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.reps {
            if placement == "unique" || rank == 0 {
                rt.md_mkdir(&md, &sub)?;
            }
            let phase = |op: &dyn Fn(&str) -> Result<()>| -> Result<f64> {
                rt.barrier()?;
                let t = Instant::now();
                for n in &names {
                    op(n)?;
                }
                Ok(total / max_over_ranks(rt, t.elapsed().as_secs_f64())?)
            };
            creates.push(phase(&|p| rt.md_create(&md, p))?);
            stats.push(phase(&|p| rt.md_stat(&md, p))?);
            removes.push(phase(&|p| rt.md_remove(&md, p))?);
            rt.barrier()?;
            if placement == "unique" || rank == 0 {
                rt.md_rmdir(&md, &sub)?;
            }
        }
        rows.push(MdRow {
            placement: placement.into(),
            create: median(&creates).unwrap_or(0.0),
            stat: median(&stats).unwrap_or(0.0),
            remove: median(&removes).unwrap_or(0.0),
        });
    }
    rt.barrier()?;
    if rank != 0 {
        return Ok(None);
    }
    Ok(Some(MdOutcome {
        benchmark: "md".into(),
        implementation: rt.name().into(),
        api: if opts.posix || rt.name() == "mpi" {
            "posix".into()
        } else if opts.bare {
            "dos-fs client".into()
        } else {
            "dos::io".into()
        },
        ranks,
        files: opts.files,
        reps: opts.reps,
        unit: "ops/s".into(),
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_json() {
        assert!(MdOptions::default().check().is_ok());
        let o = MdOptions {
            files: 0,
            ..MdOptions::default()
        };
        assert!(o.check().is_err());
        let out = MdOutcome {
            benchmark: "md".into(),
            implementation: "dos".into(),
            api: "dos::io".into(),
            ranks: 2,
            files: 10,
            reps: 1,
            unit: "ops/s".into(),
            rows: vec![MdRow {
                placement: "shared".into(),
                create: 1.0,
                stat: 2.0,
                remove: 3.0,
            }],
        };
        let back: MdOutcome = serde_json::from_str(&out.json()).unwrap();
        assert_eq!(back, out);
        assert!(out.table().contains("create/s"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/d", "a"), "/d/a");
    }
}

/// `dos::io` on the dosfs of `DOSFS`, or `--posix` calls.
#[cfg(feature = "dos")]
mod dos_impl {
    use super::*;
    use crate::runtime::dos::DosRuntime;
    use ::dos::io::{File, Fs, Hints, Mode};

    fn io_err(op: &'static str) -> impl FnOnce(::dos::io::Error) -> Error {
        move |e| Error::Io {
            op,
            what: format!("{e}"),
        }
    }

    /// What a dos rank keeps for the run.
    #[derive(Debug)]
    pub enum DosMd {
        /// `--posix`.
        Posix,
        /// The file system and a communicator of this rank alone.
        Fs(Fs, ::dos::Comm),
        /// The file system; creates with its client's create (`--bare`).
        Bare(Fs),
    }

    impl MdRuntime for DosRuntime {
        type Md = DosMd;

        fn md_default_dir(posix: bool) -> &'static str {
            if posix {
                "."
            } else {
                "/"
            }
        }

        fn md_begin(&self, opts: &MdOptions) -> Result<DosMd> {
            if opts.posix {
                return Ok(DosMd::Posix);
            }
            if opts.bare {
                return Ok(DosMd::Bare(Fs::from_env().map_err(io_err("Fs::from_env"))?));
            }
            let w = self.world();
            let me = w
                .split(Some(u32::try_from(w.rank()).unwrap_or(u32::MAX)), 0)
                .map_err(|source| Error::Dos {
                    op: "split",
                    source,
                })?
                .ok_or(Error::Io {
                    op: "split",
                    what: "no communicator of one rank".into(),
                })?;
            Ok(DosMd::Fs(
                Fs::from_env().map_err(io_err("Fs::from_env"))?,
                me,
            ))
        }

        fn md_mkdir(&self, md: &DosMd, path: &str) -> Result<()> {
            match md {
                DosMd::Posix => posix::mkdir(path),
                DosMd::Fs(fs, _) | DosMd::Bare(fs) => {
                    fs.client().mkdir(path).map(drop).map_err(|e| Error::Io {
                        op: "mkdir",
                        what: format!("{path}: {e}"),
                    })
                }
            }
        }

        fn md_create(&self, md: &DosMd, path: &str) -> Result<()> {
            match md {
                DosMd::Posix => posix::create(path),
                DosMd::Bare(fs) => {
                    fs.client()
                        .create(path, None, true)
                        .map(drop)
                        .map_err(|e| Error::Io {
                            op: "create",
                            what: format!("{path}: {e}"),
                        })
                }
                DosMd::Fs(fs, me) => {
                    let mode = Mode::READ_WRITE.create().exclusive();
                    File::open_with(me, fs, path, mode, Hints::default())
                        .map_err(io_err("File::open"))?
                        .close()
                        .map_err(io_err("File::close"))
                }
            }
        }

        fn md_stat(&self, md: &DosMd, path: &str) -> Result<()> {
            match md {
                DosMd::Posix => posix::stat(path),
                DosMd::Fs(fs, _) | DosMd::Bare(fs) => {
                    fs.client().stat(path).map(drop).map_err(|e| Error::Io {
                        op: "stat",
                        what: format!("{path}: {e}"),
                    })
                }
            }
        }

        fn md_remove(&self, md: &DosMd, path: &str) -> Result<()> {
            match md {
                DosMd::Posix => posix::remove(path),
                DosMd::Fs(fs, _) | DosMd::Bare(fs) => {
                    File::delete(fs, path).map_err(io_err("File::delete"))
                }
            }
        }

        fn md_rmdir(&self, md: &DosMd, path: &str) -> Result<()> {
            match md {
                DosMd::Posix => posix::rmdir(path),
                DosMd::Fs(fs, _) | DosMd::Bare(fs) => {
                    fs.client().unlink(path).map(drop).map_err(|e| Error::Io {
                        op: "rmdir",
                        what: format!("{path}: {e}"),
                    })
                }
            }
        }
    }
}

/// The MPI build: POSIX calls on a local directory (mdtest's POSIX backend).
#[cfg(feature = "mpi")]
impl MdRuntime for crate::runtime::mpi::MpiRuntime {
    type Md = ();

    fn md_default_dir(_: bool) -> &'static str {
        "."
    }

    fn md_begin(&self, _: &MdOptions) -> Result<()> {
        Ok(())
    }

    fn md_mkdir(&self, _: &(), path: &str) -> Result<()> {
        posix::mkdir(path)
    }

    fn md_create(&self, _: &(), path: &str) -> Result<()> {
        posix::create(path)
    }

    fn md_stat(&self, _: &(), path: &str) -> Result<()> {
        posix::stat(path)
    }

    fn md_remove(&self, _: &(), path: &str) -> Result<()> {
        posix::remove(path)
    }

    fn md_rmdir(&self, _: &(), path: &str) -> Result<()> {
        posix::rmdir(path)
    }
}
