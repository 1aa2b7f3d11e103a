//! The address file (`dosfs.addr`): how clients find and authenticate to a
//! running file system.
//!
//! `dosfs up` writes it with mode 0600 (it holds the secret); clients name
//! it with `--fs FILE` or the `DOSFS` environment variable, default
//! `./dosfs.addr`.
//!
//! ```text
//! dosfs 1
//! fsid 5f0c...(32 hex)
//! secret 8a1b...(64 hex)
//! server 0 127.0.0.1:40123 pid 4711
//! server 1 127.0.0.1:40124 pid 4712
//! ```
//!
//! `pid` is present for servers started on this host by `dosfs up --local`
//! (`dosfs down` stops them by it).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dos_transport::auth::Secret;

use crate::error::{Error, Result};
use crate::target::FsId;

/// The default address file.
pub const DEFAULT: &str = "dosfs.addr";
/// The environment variable naming the address file.
pub const ENV: &str = "DOSFS";

/// One server's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Its address (`host:port`).
    pub addr: String,
    /// Its process id, when started on this host.
    pub pid: Option<u32>,
}

/// The content of an address file.
#[derive(Debug, Clone)]
pub struct AddrFile {
    /// The file system's id.
    pub fsid: FsId,
    /// Its secret.
    pub secret: Secret,
    /// Its servers, by index.
    pub servers: Vec<ServerAddr>,
}

impl AddrFile {
    /// The path to use: `given`, else `$DOSFS`, else `./dosfs.addr`.
    pub fn locate(given: Option<&Path>) -> PathBuf {
        match given {
            Some(p) => p.to_owned(),
            None => std::env::var_os(ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT)),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "dosfs 1\nfsid {}\nsecret {}\n",
            self.fsid,
            self.secret.to_hex()
        );
        for (i, a) in self.servers.iter().enumerate() {
            s.push_str(&format!("server {i} {}", a.addr));
            if let Some(p) = a.pid {
                s.push_str(&format!(" pid {p}"));
            }
            s.push('\n');
        }
        s
    }

    /// Parses the file's text.
    pub fn parse(path: &Path, text: &str) -> Result<AddrFile> {
        let bad = |reason: String| Error::AddrFile {
            path: path.to_owned(),
            reason,
        };
        let mut lines = text.lines();
        if lines.next() != Some("dosfs 1") {
            return Err(bad("first line is not \"dosfs 1\"".into()));
        }
        let fsid = lines
            .next()
            .and_then(|l| l.strip_prefix("fsid "))
            .and_then(FsId::parse)
            .ok_or_else(|| bad("no valid \"fsid\" line".into()))?;
        let secret = lines
            .next()
            .and_then(|l| l.strip_prefix("secret "))
            .and_then(|h| Secret::from_hex(h).ok())
            .ok_or_else(|| bad("no valid \"secret\" line".into()))?;
        let mut servers = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            let pid = match f.as_slice() {
                ["server", _, _] => None,
                ["server", _, _, "pid", pid] => Some(
                    pid.parse()
                        .map_err(|_| bad(format!("bad pid in {line:?}")))?,
                ),
                _ => return Err(bad(format!("unexpected line {line:?}"))),
            };
            if f[1] != servers.len().to_string() {
                return Err(bad(format!("servers out of order at {line:?}")));
            }
            servers.push(ServerAddr {
                addr: f[2].to_owned(),
                pid,
            });
        }
        if servers.is_empty() {
            return Err(bad("no servers".into()));
        }
        Ok(AddrFile {
            fsid,
            secret,
            servers,
        })
    }

    /// Reads `path`; refuses a file others can read (it holds the secret).
    pub fn read(path: &Path) -> Result<AddrFile> {
        let text = fs::read_to_string(path).map_err(|e| Error::AddrFile {
            path: path.to_owned(),
            reason: format!("cannot read it ({e}); start the file system with `dosfs up` or name its file with --fs or DOSFS"),
        })?;
        let mode = fs::metadata(path)
            .map_err(|e| Error::io("stat", path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::AddrFile {
                path: path.to_owned(),
                reason: format!(
                    "mode {:o} lets others read the secret; chmod 600 it",
                    mode & 0o777
                ),
            });
        }
        AddrFile::parse(path, &text)
    }

    /// Writes `path` with mode 0600, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(self.render().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::tests::TempDir;

    #[test]
    fn round_trip_and_mode() {
        let d = TempDir::new("addr");
        let a = AddrFile {
            fsid: FsId([3; 16]),
            secret: Secret::generate().unwrap(),
            servers: vec![
                ServerAddr {
                    addr: "127.0.0.1:1".into(),
                    pid: Some(5),
                },
                ServerAddr {
                    addr: "[::1]:2".into(),
                    pid: None,
                },
            ],
        };
        let p = d.0.join("fs.addr");
        a.write(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = AddrFile::read(&p).unwrap();
        assert_eq!(b.servers, a.servers);
        assert_eq!(b.secret.as_bytes(), a.secret.as_bytes());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(AddrFile::read(&p), Err(Error::AddrFile { .. })));
        for bad in [
            "",
            "dosfs 1\n",
            "dosfs 1\nfsid zz\n",
            &a.render().replace("server 1", "server 7"),
        ] {
            assert!(AddrFile::parse(&p, bad).is_err(), "{bad:?}");
        }
    }
}
