//! The audit log of key use: one JSON line per wrap, unwrap, rotation or shred, each holding the
//! SHA-256 of the line before it, so that a removed or altered line breaks the chain.
//!
//! ```text
//! {"seq":1,"time":1765000000,"actor":"daemon","op":"wrap","kek":"file:recordings/acme/v1","object":"9f2c…","purpose":"record","prev":"000…0"}
//! ```
//!
//! `prev` is the hex SHA-256 of the previous line's bytes (without its newline), 64 zeros for the
//! first line; `seq` counts from 1. After every append the head file (`<log>.head`: `seq hash`)
//! names the last line, so cutting lines off the end is detected too. Appends take an exclusive
//! `flock` on the log (the daemon and CLI users append to the same file) and are synced to disk
//! before the key operation they describe returns. `srtp-edge audit verify` runs [`verify`].
//!
//! Limits, stated plainly: the chain proves order and completeness against anyone who edits the
//! file without recomputing every later hash and the head; someone able to rewrite the whole
//! file and its head can forge a consistent history. Ship the log off the host (journald, syslog)
//! when that matters.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KekId;

/// Who used a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The running daemon.
    Daemon,
    /// A person running the CLI: user name (from the environment, informative) and real uid.
    Cli {
        /// `$SUDO_USER`, `$USER` or `?`.
        user: String,
        /// The real uid.
        uid: u32,
    },
}

impl Actor {
    /// The CLI user running this process.
    pub fn cli_user() -> Actor {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "?".into());
        let user: String = user
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(32)
            .collect();
        let user = if user.is_empty() { "?".into() } else { user };
        Actor::Cli {
            user,
            uid: super::sys::uid(),
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Daemon => f.write_str("daemon"),
            Actor::Cli { user, uid } => write!(f, "cli:{user}(uid {uid})"),
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// `daemon` or `cli:user(uid N)`.
    pub actor: String,
    /// `wrap`, `unwrap`, `rotate`, `shred`.
    pub op: String,
    /// The KEK version used.
    pub kek: String,
    /// The object (recording id...), empty for a rotation.
    pub object: String,
    /// Why (`record`, `export`, `verify`, `rewrap`, `retention`...).
    pub purpose: String,
    /// Hex SHA-256 of the previous line.
    pub prev: String,
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

/// The append side of the log.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

fn head_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

/// Reads the last line of an open log (None when empty).
fn last_line(f: &mut File) -> std::io::Result<Option<String>> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    // Lines are a few hundred bytes; read back in growing windows until a newline before the
    // last line is found.
    let mut window: u64 = 4096;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        std::io::Read::by_ref(f)
            .take(len - start)
            .read_to_end(&mut buf)?;
        let trimmed = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(i) = trimmed.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(
                String::from_utf8_lossy(&trimmed[i + 1..]).into_owned(),
            ));
        }
        if start == 0 {
            return Ok(Some(String::from_utf8_lossy(trimmed).into_owned()));
        }
        window *= 4;
    }
}

impl AuditLog {
    /// The log at `path` (created 0600, with its directory, when missing).
    pub fn open(path: &Path) -> Result<AuditLog, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry, chained to the last line, synced; then updates the head file.
    pub fn append(
        &self,
        actor: &Actor,
        op: &str,
        kek: &KekId,
        object: &str,
        purpose: &str,
    ) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(err)?;
        super::sys::flock(&f, super::sys::Lock::Exclusive).map_err(err)?;
        let (seq, prev) = match last_line(&mut f).map_err(err)? {
            None => (1, ZERO.to_string()),
            Some(line) => {
                let last: AuditEntry = serde_json::from_str(&line)
                    .map_err(|e| format!("{}: last line unreadable: {e}", self.path.display()))?;
                (last.seq + 1, sha256_hex(line.as_bytes()))
            }
        };
        let entry = AuditEntry {
            seq,
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            actor: actor.to_string(),
            op: op.to_string(),
            kek: kek.to_string(),
            object: object.to_string(),
            purpose: purpose.to_string(),
            prev,
        };
        let line = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
        f.write_all(format!("{line}\n").as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(err)?;
        let head = head_path(&self.path);
        let tmp = head.with_extension("head.tmp");
        let mut h = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        h.write_all(format!("{seq} {}\n", sha256_hex(line.as_bytes())).as_bytes())
            .and_then(|_| h.sync_data())
            .map_err(err)?;
        std::fs::rename(&tmp, &head).map_err(err)?;
        Ok(())
    }
}

/// What [`verify`] found in an intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked.
    pub entries: u64,
}

/// Checks the whole chain and the head. The error names the first line that breaks it.
pub fn verify(path: &Path) -> Result<Verified, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut prev_hash = ZERO.to_string();
    let mut n: u64 = 0;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let e: AuditEntry = serde_json::from_str(line)
            .map_err(|err| format!("line {lineno}: not an audit entry ({err})"))?;
        if e.seq != n + 1 {
            return Err(format!(
                "line {lineno}: sequence {} where {} was expected (an entry was removed or inserted)",
                e.seq,
                n + 1
            ));
        }
        if e.prev != prev_hash {
            return Err(format!(
                "line {lineno}: the hash of the previous line does not match (line {} was altered, or a line was removed)",
                lineno.saturating_sub(1).max(1)
            ));
        }
        prev_hash = sha256_hex(line.as_bytes());
        n += 1;
    }
    let head = head_path(path);
    match std::fs::read_to_string(&head) {
        Ok(h) => {
            let mut it = h.split_whitespace();
            let seq: Option<u64> = it.next().and_then(|s| s.parse().ok());
            let hash = it.next().unwrap_or("");
            if seq != Some(n) || hash != prev_hash {
                return Err(format!(
                    "the log ends at entry {n} but its head names entry {} (entries were cut off the end, or the last one was altered)",
                    seq.map_or("?".to_string(), |s| s.to_string())
                ));
            }
        }
        Err(_) if n == 0 => {}
        Err(e) => return Err(format!("{}: {e}", head.display())),
    }
    Ok(Verified { entries: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: usize) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open(&p).unwrap();
        let kek = KekId::parse("f:recordings/t/v1").unwrap();
        for i in 0..n {
            log.append(&Actor::Daemon, "wrap", &kek, &format!("obj{i}"), "record")
                .unwrap();
        }
        (d, p)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_d, p) = log_with(5);
        assert_eq!(verify(&p).unwrap().entries, 5);
    }

    #[test]
    fn a_removed_line_is_detected_anywhere() {
        for drop in 0..5 {
            let (_d, p) = log_with(5);
            let text = std::fs::read_to_string(&p).unwrap();
            let kept: Vec<&str> = text
                .lines()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, l)| l)
                .collect();
            std::fs::write(&p, format!("{}\n", kept.join("\n"))).unwrap();
            assert!(
                verify(&p).is_err(),
                "removing line {} went unnoticed",
                drop + 1
            );
        }
    }

    #[test]
    fn an_altered_line_is_detected() {
        let (_d, p) = log_with(3);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("obj1", "objX", 1)).unwrap();
        let e = verify(&p).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
    }
}
