//! The `file` KEK provider: KEKs in one local file, for small deployments without an HSM.
//!
//! The file must be owned by the user running srtp-edge and give no permission to group or others
//! (mode 0600 or stricter); anything else is refused at every read, so a key file that was
//! copied with the wrong mode stops the service instead of being used. Created empty (0600) in a
//! 0700 directory when missing. One KEK per line, appended under an exclusive `flock` (the daemon
//! and the CLI may rotate at the same time); read under a shared one:
//!
//! ```text
//! # srtp-edge KEK file: class tenant version created_unix key_hex
//! recordings default 1 1765000000 6f1c...(64 hex digits)
//! ```
//!
//! Wrapping is AES-256-GCM in process memory; the KEK bytes live in memory only for the duration
//! of one operation (zeroized after).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::provider::{KekInfo, KekProvider};
use super::{gcm_unwrap, gcm_wrap, DataClass, KeyError, Scope, KEY_LEN};

const HEADER: &str = "# srtp-edge KEK file: class tenant version created_unix key_hex\n";

/// KEKs in a 0600 file.
#[derive(Debug)]
pub struct FileProvider {
    name: String,
    path: PathBuf,
}

struct Entry {
    info: KekInfo,
    key: Zeroizing<[u8; KEY_LEN]>,
}

/// Refuses a key file that group or others may access, or that another user owns.
pub fn check_private(path: &Path) -> Result<(), KeyError> {
    let meta = std::fs::metadata(path).map_err(|e| KeyError::UnsafeFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let unsafe_file = |reason: String| KeyError::UnsafeFile {
        path: path.display().to_string(),
        reason,
    };
    if !meta.is_file() {
        return Err(unsafe_file("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unsafe_file(format!(
            "mode {mode:04o} lets group or others access it (chmod 600)"
        )));
    }
    let me = super::sys::euid();
    if meta.uid() != me {
        return Err(unsafe_file(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    Ok(())
}

fn flock(f: &File, how: super::sys::Lock) -> Result<(), KeyError> {
    super::sys::flock(f, how).map_err(|e| KeyError::Other(format!("cannot lock the key file: {e}")))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FileProvider {
    /// Opens (creating it empty, 0600, when missing) the key file at `path`, checking its mode.
    pub fn open(name: &str, path: &Path) -> Result<FileProvider, KeyError> {
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    KeyError::Other(format!("cannot create {}: {e}", dir.display()))
                })?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match &mut f {
                Ok(f) => {
                    let _ = f.write_all(HEADER.as_bytes());
                    let _ = f.sync_all();
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(KeyError::Other(format!(
                        "cannot create {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        check_private(path)?;
        Ok(FileProvider {
            name: name.to_string(),
            path: path.to_path_buf(),
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_locked(&self, exclusive: bool) -> Result<File, KeyError> {
        check_private(&self.path)?;
        let f = OpenOptions::new()
            .read(true)
            .append(exclusive)
            .open(&self.path)
            .map_err(|e| KeyError::Other(format!("cannot open {}: {e}", self.path.display())))?;
        flock(
            &f,
            if exclusive {
                super::sys::Lock::Exclusive
            } else {
                super::sys::Lock::Shared
            },
        )?;
        Ok(f)
    }

    fn read_all(&self, f: &mut File) -> Result<Vec<Entry>, KeyError> {
        let mut text = Zeroizing::new(String::new());
        f.read_to_string(&mut text)
            .map_err(|e| KeyError::Other(format!("cannot read {}: {e}", self.path.display())))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                KeyError::Other(format!(
                    "{} line {}: expected `class tenant version created_unix key_hex`",
                    self.path.display(),
                    n + 1
                ))
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let [class, tenant, version, created, key] = f.as_slice() else {
                return Err(bad());
            };
            let class = DataClass::parse(class).ok_or_else(bad)?;
            let scope = Scope::new(class, tenant).map_err(|_| bad())?;
            let version: u32 = version.parse().map_err(|_| bad())?;
            let created_unix: u64 = created.parse().map_err(|_| bad())?;
            let mut k = Zeroizing::new([0u8; KEY_LEN]);
            hex::decode_to_slice(key, k.as_mut_slice()).map_err(|_| bad())?;
            out.push(Entry {
                info: KekInfo {
                    scope,
                    version,
                    created_unix,
                },
                key: k,
            });
        }
        Ok(out)
    }

    fn newest<'a>(entries: &'a [Entry], scope: &Scope) -> Option<&'a Entry> {
        entries
            .iter()
            .filter(|e| &e.info.scope == scope)
            .max_by_key(|e| e.info.version)
    }

    /// Appends the next version of `scope` (the file is locked exclusively by the caller).
    fn append_next(
        &self,
        f: &mut File,
        entries: &[Entry],
        scope: &Scope,
    ) -> Result<KekInfo, KeyError> {
        let version = Self::newest(entries, scope).map_or(1, |e| e.info.version + 1);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(key.as_mut_slice())
            .map_err(|e| KeyError::Other(format!("no OS randomness: {e}")))?;
        let info = KekInfo {
            scope: scope.clone(),
            version,
            created_unix: now_unix(),
        };
        let line = Zeroizing::new(format!(
            "{} {} {} {} {}\n",
            scope.class,
            scope.tenant,
            version,
            info.created_unix,
            hex::encode(key.as_slice())
        ));
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| KeyError::Other(format!("cannot write {}: {e}", self.path.display())))?;
        tracing::info!(provider = %self.name, scope = %scope, version, "new KEK version created");
        Ok(info)
    }

    fn with_key<T>(
        &self,
        scope: &Scope,
        version: u32,
        f: impl FnOnce(&[u8; KEY_LEN]) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let mut file = self.open_locked(false)?;
        let entries = self.read_all(&mut file)?;
        let e = entries
            .iter()
            .find(|e| &e.info.scope == scope && e.info.version == version)
            .ok_or_else(|| KeyError::NoSuchKek(format!("{}:{scope}/v{version}", self.name)))?;
        f(&e.key)
    }
}

impl KekProvider for FileProvider {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn current(&self, scope: &Scope) -> Result<KekInfo, KeyError> {
        {
            let mut f = self.open_locked(false)?;
            if let Some(e) = Self::newest(&self.read_all(&mut f)?, scope) {
                return Ok(e.info.clone());
            }
        }
        let mut f = self.open_locked(true)?;
        let entries = self.read_all(&mut f)?;
        // Another process may have created it between the two locks.
        if let Some(e) = Self::newest(&entries, scope) {
            return Ok(e.info.clone());
        }
        self.append_next(&mut f, &entries, scope)
    }

    fn rotate(&self, scope: &Scope) -> Result<KekInfo, KeyError> {
        let mut f = self.open_locked(true)?;
        let entries = self.read_all(&mut f)?;
        self.append_next(&mut f, &entries, scope)
    }

    fn list(&self) -> Result<Vec<KekInfo>, KeyError> {
        let mut f = self.open_locked(false)?;
        let mut v: Vec<KekInfo> = self.read_all(&mut f)?.into_iter().map(|e| e.info).collect();
        v.sort_by(|a, b| (&a.scope, a.version).cmp(&(&b.scope, b.version)));
        Ok(v)
    }

    fn wrap(
        &self,
        scope: &Scope,
        version: u32,
        key: &[u8; KEY_LEN],
        aad: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.with_key(scope, version, |kek| gcm_wrap(kek, key, aad))
    }

    fn unwrap(
        &self,
        scope: &Scope,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
        let id = format!("{}:{scope}/v{version}", self.name);
        self.with_key(scope, version, |kek| {
            gcm_unwrap(kek, wrapped, aad).ok_or(KeyError::UnwrapFailed {
                kek: id,
                object: String::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rotate_and_old_ones_still_unwrap() {
        let d = tempfile::tempdir().unwrap();
        let p = FileProvider::open("f", &d.path().join("keys/kek")).unwrap();
        let s = Scope::new(DataClass::Recordings, "acme").unwrap();
        let v1 = p.current(&s).unwrap();
        assert_eq!(v1.version, 1);
        assert_eq!(
            p.current(&s).unwrap().version,
            1,
            "current does not create twice"
        );
        let key = [3u8; 32];
        let w1 = p.wrap(&s, 1, &key, b"ctx").unwrap();
        assert_eq!(p.rotate(&s).unwrap().version, 2);
        assert_eq!(p.current(&s).unwrap().version, 2);
        assert_eq!(*p.unwrap(&s, 1, &w1, b"ctx").unwrap(), key);
        assert!(p.unwrap(&s, 2, &w1, b"ctx").is_err(), "wrong version");
        // Another tenant and another class have their own KEKs.
        let other = Scope::new(DataClass::CallState, "acme").unwrap();
        assert_eq!(p.current(&other).unwrap().version, 1);
        assert!(p.unwrap(&other, 1, &w1, b"ctx").is_err());
        assert_eq!(p.list().unwrap().len(), 3);
        let mode = std::fs::metadata(p.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("kek");
        let p = FileProvider::open("f", &path).unwrap();
        let s = Scope::new(DataClass::Recordings, "t").unwrap();
        p.current(&s).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = FileProvider::open("f", &path).unwrap_err();
            assert!(e.to_string().contains("group or others"), "{e}");
            // A provider opened before the chmod refuses too, at its next use.
            assert!(p.current(&s).is_err());
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(FileProvider::open("f", &path).is_ok());
    }
}
