//! Target directories and path safety.
//!
//! A *target* is the directory on a server's local disk that holds its part
//! of the file system. It describes itself in a small text file,
//! [`DESCRIPTOR`]:
//!
//! ```text
//! dosfs target
//! format 2
//! fsid 5f0c...(32 hex digits)
//! index 0
//! servers 3
//! ```
//!
//! [`Target::open`] reads it and refuses, with a typed error, a directory that
//! is not a target ([`Error::NotATarget`]), a target of another file system
//! ([`Error::WrongFileSystem`]), of another server ([`Error::WrongServerIndex`])
//! or of a newer format ([`Error::NewerFormat`]) or an older one
//! ([`Error::OldFormat`]: format 1 stored one file per stripe; format 2 one
//! data object per file and a chunk map journal, see [`crate::chunk`]). [`Target::format`] writes it
//! (atomically: temporary file, fsync, rename, fsync of the directory), and
//! only into an empty directory or one that already is the same target.
//!
//! Inside, `meta/` holds the metadata (on the metadata server, see
//! [`crate::meta`]) and `chunks/` the data (see [`crate::chunk`]). Both must be
//! real directories: a symbolic link there is refused ([`Error::Symlink`]), so
//! a target cannot be redirected elsewhere.
//!
//! ## Paths
//! Names in the file system ([`FsPath`]) are never joined onto the target:
//! the metadata maps them to inode numbers and chunks are stored under names
//! made of those numbers. [`FsPath::parse`] still refuses what no name may
//! hold (`.` and `..`, NUL bytes, names over 255 bytes, paths over 4096), so
//! the namespace itself has no way up from its root, and a mount or a copy out
//! cannot be steered by a stored name.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The descriptor file in a target.
pub const DESCRIPTOR: &str = "dosfs-target";
/// The newest target format this build reads and writes.
pub const FORMAT: u32 = 2;
/// The oldest target format this build reads (older ones are refused with
/// [`Error::OldFormat`]: format 1 kept one file per stripe, see
/// [`crate::chunk`]).
pub const MIN_FORMAT: u32 = 2;
/// Longest name of one path component, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest path, in bytes.
pub const MAX_PATH: usize = 4096;

/// A file system's identity: 128 random bits, written in every target.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsId(pub [u8; 16]);

impl FsId {
    /// A fresh random id.
    pub fn generate() -> Result<FsId> {
        let mut b = [0u8; 16];
        dos_transport::auth::fill_random(&mut b).map_err(|source| Error::Random { source })?;
        Ok(FsId(b))
    }

    /// Parses the 32 hex digits of [`FsId`]'s `Display` form.
    pub fn parse(s: &str) -> Option<FsId> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(FsId(b))
    }
}

impl fmt::Display for FsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FsId({self})")
    }
}

/// What a target says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetInfo {
    /// Its format version.
    pub format: u32,
    /// The file system it belongs to.
    pub fsid: FsId,
    /// Which server of the file system it is (0 is the metadata server).
    pub index: u32,
    /// How many servers the file system has.
    pub servers: u32,
}

impl TargetInfo {
    fn render(&self) -> String {
        format!(
            "dosfs target\nformat {}\nfsid {}\nindex {}\nservers {}\n",
            self.format, self.fsid, self.index, self.servers
        )
    }

    fn parse(path: &Path, text: &str) -> Result<TargetInfo> {
        let bad = |reason: &str| Error::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some("dosfs target") {
            return Err(bad("first line is not \"dosfs target\""));
        }
        let mut field = |key: &str| -> Result<&str> {
            let line = lines.next().ok_or_else(|| bad("truncated"))?;
            line.strip_prefix(key)
                .and_then(|v| v.strip_prefix(' '))
                .ok_or_else(|| bad(&format!("expected \"{key} ...\", found {line:?}")))
        };
        let format: u32 = field("format")?
            .parse()
            .map_err(|_| bad("format is not a number"))?;
        if format > FORMAT {
            // Checked before the rest: a newer format may lay out the rest differently.
            return Err(Error::NewerFormat {
                dir: path.parent().unwrap_or(path).to_owned(),
                found: format,
                supported: FORMAT,
            });
        }
        if format < MIN_FORMAT {
            return Err(Error::OldFormat {
                dir: path.parent().unwrap_or(path).to_owned(),
                found: format,
                supported: MIN_FORMAT,
            });
        }
        let fsid = FsId::parse(field("fsid")?).ok_or_else(|| bad("fsid is not 32 hex digits"))?;
        let index: u32 = field("index")?
            .parse()
            .map_err(|_| bad("index is not a number"))?;
        let servers: u32 = field("servers")?
            .parse()
            .map_err(|_| bad("servers is not a number"))?;
        if servers == 0 || index >= servers {
            return Err(bad("index is not below servers"));
        }
        if lines.next().is_some() {
            return Err(bad("trailing lines"));
        }
        Ok(TargetInfo {
            format,
            fsid,
            index,
            servers,
        })
    }
}

/// What [`Target::open`] must find; `None` accepts anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// The file system.
    pub fsid: Option<FsId>,
    /// The server index.
    pub index: Option<u32>,
}

/// An opened target directory.
#[derive(Debug, Clone)]
pub struct Target {
    dir: PathBuf,
    info: TargetInfo,
}

impl Target {
    /// Makes `dir` (created if missing) a target of file system `fsid`, as
    /// server `index` of `servers`; a directory that already is this very
    /// target is opened instead. Refuses a non-empty directory that is not a
    /// target, and a target of another identity.
    pub fn format(dir: &Path, fsid: FsId, index: u32, servers: u32) -> Result<Target> {
        if servers == 0 || index >= servers {
            return Err(Error::InvalidLayout {
                reason: format!("server index {index} is not below the server count {servers}"),
            });
        }
        fs::create_dir_all(dir).map_err(|e| Error::io("create target", dir, e))?;
        let expect = Expect {
            fsid: Some(fsid),
            index: Some(index),
        };
        match Target::open(dir, expect) {
            Ok(t) => return Ok(t),
            Err(Error::NotATarget { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut entries = fs::read_dir(dir).map_err(|e| Error::io("list target", dir, e))?;
        if entries.next().is_some() {
            return Err(Error::Malformed {
                path: dir.to_owned(),
                reason: "not empty and not a dosfs target; refusing to format it".into(),
            });
        }
        let info = TargetInfo {
            format: FORMAT,
            fsid,
            index,
            servers,
        };
        for sub in ["meta", "chunks"] {
            let p = dir.join(sub);
            fs::create_dir(&p).map_err(|e| Error::io("create", &p, e))?;
        }
        write_atomic(&dir.join(DESCRIPTOR), info.render().as_bytes())?;
        Target::open(dir, expect)
    }

    /// Opens the target in `dir`, checking its descriptor against `expect`.
    pub fn open(dir: &Path, expect: Expect) -> Result<Target> {
        let path = dir.join(DESCRIPTOR);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotATarget {
                    dir: dir.to_owned(),
                    file: DESCRIPTOR,
                })
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let text = String::from_utf8(text).map_err(|_| Error::Malformed {
            path: path.clone(),
            reason: "not UTF-8".into(),
        })?;
        let info = TargetInfo::parse(&path, &text)?;
        if let Some(want) = expect.fsid {
            if want != info.fsid {
                return Err(Error::WrongFileSystem {
                    dir: dir.to_owned(),
                    found: info.fsid.to_string(),
                    expected: want.to_string(),
                });
            }
        }
        if let Some(want) = expect.index {
            if want != info.index {
                return Err(Error::WrongServerIndex {
                    dir: dir.to_owned(),
                    found: info.index,
                    servers: info.servers,
                    expected: want,
                });
            }
        }
        let t = Target {
            dir: dir.to_owned(),
            info,
        };
        t.real_dir(&t.meta_dir())?;
        t.real_dir(&t.chunk_dir())?;
        Ok(t)
    }

    fn real_dir(&self, p: &Path) -> Result<()> {
        let m = fs::symlink_metadata(p).map_err(|e| Error::io("stat", p, e))?;
        if m.file_type().is_symlink() {
            return Err(Error::Symlink { path: p.to_owned() });
        }
        if !m.is_dir() {
            return Err(Error::Malformed {
                path: p.to_owned(),
                reason: "not a directory".into(),
            });
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the target says about itself.
    pub fn info(&self) -> TargetInfo {
        self.info
    }

    /// Where the metadata lives.
    pub fn meta_dir(&self) -> PathBuf {
        self.dir.join("meta")
    }

    /// Where the chunks live.
    pub fn chunk_dir(&self) -> PathBuf {
        self.dir.join("chunks")
    }
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the
/// same directory, fsync, rename over `path`, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    fsync_dir(dir)
}

/// Makes the entries of directory `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// A validated path in the file system: its names, from the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FsPath {
    names: Vec<String>,
}

impl FsPath {
    /// The root directory.
    pub fn root() -> FsPath {
        FsPath { names: Vec::new() }
    }

    /// Parses `/a/b/c` (the leading slash is optional: every path starts at
    /// the file system's root). Empty components (`a//b`, a trailing `/`)
    /// are skipped; `.`, `..`, NUL bytes and over-long names are refused.
    pub fn parse(path: &str) -> Result<FsPath> {
        let bad = |reason| Error::InvalidPath {
            path: path.chars().take(MAX_PATH).collect(),
            reason,
        };
        if path.len() > MAX_PATH {
            return Err(bad(PATH_REASONS[4]));
        }
        if path.contains('\0') {
            return Err(bad(PATH_REASONS[3]));
        }
        let mut names = Vec::new();
        for n in path.split('/').filter(|n| !n.is_empty()) {
            check_name(n).map_err(|_| bad(name_problem(n)))?;
            names.push(n.to_owned());
        }
        Ok(FsPath { names })
    }

    /// The names from the root.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.names.is_empty()
    }

    /// The parent and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(FsPath, &str)> {
        let (last, rest) = self.names.split_last()?;
        Some((
            FsPath {
                names: rest.to_vec(),
            },
            last,
        ))
    }

    /// This path with `name` appended (checked).
    pub fn join(&self, name: &str) -> Result<FsPath> {
        check_name(name)?;
        let mut names = self.names.clone();
        names.push(name.to_owned());
        Ok(FsPath { names })
    }
}

impl fmt::Display for FsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.names.is_empty() {
            return f.write_str("/");
        }
        for n in &self.names {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

/// Every reason a path is refused for (so a client can name the server's reason).
pub const PATH_REASONS: [&str; 8] = [
    "\".\" and \"..\" are not names",
    "a name is longer than 255 bytes",
    "a name contains '/' or NUL",
    "contains a NUL byte",
    "longer than 4096 bytes",
    "empty name",
    "a directory cannot move into itself",
    "the root directory cannot be created, removed or renamed",
];

fn name_problem(n: &str) -> &'static str {
    if n == "." || n == ".." {
        PATH_REASONS[0]
    } else if n.len() > MAX_NAME {
        PATH_REASONS[1]
    } else {
        PATH_REASONS[2]
    }
}

/// Checks one name of a directory entry.
pub fn check_name(n: &str) -> Result<()> {
    if n.is_empty() || n == "." || n == ".." || n.len() > MAX_NAME || n.contains(['/', '\0']) {
        return Err(Error::InvalidPath {
            path: n.chars().take(MAX_NAME + 1).collect(),
            reason: if n.is_empty() {
                PATH_REASONS[5]
            } else {
                name_problem(n)
            },
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh empty directory under the system's temporary directory,
    /// removed on drop.
    #[derive(Debug)]
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "dosfs-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Unmounts on drop.
    #[derive(Debug)]
    pub(crate) struct Mount(pub PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// A tmpfs of `size` (e.g. "256k") mounted on a new directory `dir/mnt`:
    /// a small full-able disk. `None` where mounting is not allowed (not root).
    pub(crate) fn small_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs (not root?)");
            return None;
        }
        Some(Mount(mnt))
    }

    #[test]
    fn format_then_open_and_refusals() {
        let d = TempDir::new("target");
        let dir = d.0.join("t0");
        let id = FsId::generate().unwrap();
        let t = Target::format(&dir, id, 1, 3).unwrap();
        assert_eq!(t.info().index, 1);
        // Formatting again as the same target opens it.
        Target::format(&dir, id, 1, 3).unwrap();
        let other = FsId::generate().unwrap();
        let e = Target::format(&dir, other, 1, 3).unwrap_err();
        assert!(matches!(e, Error::WrongFileSystem { .. }), "{e}");
        let e = Target::open(
            &dir,
            Expect {
                fsid: Some(id),
                index: Some(2),
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::WrongServerIndex {
                    found: 1,
                    expected: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("server 1 of 3"), "{e}");
        // Not a target; a non-empty non-target is not formatted.
        let e = Target::open(&d.0, Expect::default()).unwrap_err();
        assert!(matches!(e, Error::NotATarget { .. }), "{e}");
        let e = Target::format(&d.0, id, 0, 1).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
    }

    #[test]
    fn newer_format_is_refused() {
        let d = TempDir::new("newer");
        let id = FsId::generate().unwrap();
        Target::format(&d.0, id, 0, 1).unwrap();
        let p = d.0.join(DESCRIPTOR);
        let text = fs::read_to_string(&p)
            .unwrap()
            .replace("format 2", "format 3");
        fs::write(&p, text).unwrap();
        let e = Target::open(&d.0, Expect::default()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NewerFormat {
                    found: 3,
                    supported: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("newer"), "{e}");
        fs::write(&p, "dosfs target\nformat x\n").unwrap();
        assert!(matches!(
            Target::open(&d.0, Expect::default()),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn symlinked_subdirectory_is_refused() {
        let d = TempDir::new("symlink");
        let id = FsId::generate().unwrap();
        Target::format(&d.0, id, 0, 1).unwrap();
        let elsewhere = TempDir::new("elsewhere");
        fs::remove_dir(d.0.join("chunks")).unwrap();
        std::os::unix::fs::symlink(&elsewhere.0, d.0.join("chunks")).unwrap();
        let e = Target::open(&d.0, Expect::default()).unwrap_err();
        assert!(matches!(e, Error::Symlink { .. }), "{e}");
    }

    #[test]
    fn paths_are_validated() {
        assert_eq!(FsPath::parse("/a/b").unwrap().names(), ["a", "b"]);
        assert_eq!(FsPath::parse("a//b/").unwrap().to_string(), "/a/b");
        assert!(FsPath::parse("/").unwrap().is_root());
        for bad in [
            "/a/../b",
            "..",
            "/.",
            "a/\0b",
            &"x".repeat(256),
            &"/a".repeat(3000),
        ] {
            let e = FsPath::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidPath { .. }), "{bad:?}: {e}");
        }
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("ok name").is_ok());
        let p = FsPath::parse("/x/y").unwrap();
        let (parent, last) = p.split_last().unwrap();
        assert_eq!((parent.to_string().as_str(), last), ("/x", "y"));
        assert!(p.join("..").is_err());
    }

    #[test]
    fn fsid_text_round_trip() {
        let id = FsId::generate().unwrap();
        assert_eq!(FsId::parse(&id.to_string()), Some(id));
        assert_eq!(FsId::parse("zz"), None);
        assert_eq!(FsId::parse(&"é".repeat(16)), None);
    }
}
