//! Operations on sealed recording files, shared by the CLI and the daemon's retention: list,
//! verify, export to WAV, shred (crypto-shredding: the wrapped data key is overwritten, the
//! audio becomes noise), rewrap (the data key re-wrapped by the newest KEK version; the audio
//! chunks are copied byte for byte, never decrypted).
//!
//! A file being written is locked (`flock`) by the daemon; shred and rewrap skip it, list shows
//! it as `recording`.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::format::{self, Frame, Opened};
use crate::keys::Keys;

/// Largest recording file read whole (a day of a G.711 call is about 1.6 GB; beyond, refuse).
const MAX_FILE: u64 = 4 << 30;

/// One line of `recording list`.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The file.
    pub path: PathBuf,
    /// Recording id.
    pub id: String,
    /// Start, Unix ms.
    pub start_unix_ms: u64,
    /// Tenant.
    pub tenant: String,
    /// Codec.
    pub codec: String,
    /// The KEK version wrapping its key (empty once shredded).
    pub kek: String,
    /// File size.
    pub bytes: u64,
    /// `sealed`, `recording` (being written), `shredded`, or `unreadable: why`.
    pub state: String,
}

fn try_lock(f: &File) -> bool {
    crate::keys::sys::flock(f, crate::keys::sys::Lock::TryExclusive).is_ok()
}

fn read_head(f: &mut File) -> Result<Vec<u8>, String> {
    let mut head = Vec::new();
    std::io::Read::by_ref(f)
        .take((format::PREFIX_LEN + format::MAX_HEADER + 2 + format::MAX_KEYBLOCK) as u64)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    Ok(head)
}

/// Every `*.srec` file of `dir`, oldest first. Reads headers only (no key is unwrapped).
pub fn list(dir: &Path) -> Result<Vec<Listing>, String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let Ok(e) = e else { continue };
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("srec") {
            continue;
        }
        let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
        let mut l = Listing {
            path: path.clone(),
            id: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            start_unix_ms: 0,
            tenant: String::new(),
            codec: String::new(),
            kek: String::new(),
            bytes,
            state: String::new(),
        };
        match File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|mut f| {
                let head = read_head(&mut f)?;
                let busy = !try_lock(&f);
                Ok((format::open(&head).map_err(|e| e.to_string())?, busy))
            }) {
            Ok((o, busy)) => {
                l.id = o.header.id.clone();
                l.start_unix_ms = o.header.start_unix_ms;
                l.tenant = o.header.tenant.clone();
                l.codec = o.header.codec.clone();
                l.kek = o
                    .keyblock
                    .as_ref()
                    .map(|k| k.kek.clone())
                    .unwrap_or_default();
                l.state = if o.keyblock.is_none() {
                    "shredded".into()
                } else if busy {
                    "recording".into()
                } else {
                    "sealed".into()
                };
            }
            Err(e) => l.state = format!("unreadable: {e}"),
        }
        out.push(l);
    }
    out.sort_by_key(|l| (l.start_unix_ms, l.id.clone()));
    Ok(out)
}

/// Finds a recording by id (or id prefix of 8+ digits) in `dir`, or takes `arg` as a path.
pub fn resolve(dir: &Path, arg: &str) -> Result<PathBuf, String> {
    let p = Path::new(arg);
    if arg.contains('/') || arg.ends_with(".srec") {
        return Ok(p.to_path_buf());
    }
    if arg.len() < 8 || !arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{arg:?} is neither a recording id nor a path"));
    }
    let matches: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|x| x.to_str()) == Some("srec")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.starts_with(&arg.to_ascii_lowercase()))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no recording {arg} in {}", dir.display())),
        _ => Err(format!("{arg} matches {} recordings", matches.len())),
    }
}

/// A recording opened and decrypted.
pub struct Decrypted {
    /// Its beginning.
    pub opened: Opened,
    /// Frames of every chunk that authenticated, in order.
    pub chunks: Vec<Vec<Frame>>,
    /// Ok, or the first integrity problem (the chunks before it are still good).
    pub integrity: Result<(), format::FormatError>,
}

/// Reads, unwraps the key (audited with `purpose`) and authenticates a recording.
pub fn decrypt(keys: &Keys, path: &Path, purpose: &str) -> Result<Decrypted, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} bytes", path.display()));
    }
    let mut all = Vec::with_capacity(len as usize);
    f.read_to_end(&mut all)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let o = format::open(&all).map_err(|e| e.to_string())?;
    let kb = o
        .keyblock
        .as_ref()
        .ok_or(format::FormatError::Shredded.to_string())?;
    let wrapped = kb.wrapped().map_err(|e| e.to_string())?;
    let key = keys
        .unwrap(&wrapped, &o.header.id, purpose)
        .map_err(|e| e.to_string())?;
    let (chunks, integrity) = format::open_chunks(&o, key.bytes(), &all[o.chunks_offset..]);
    Ok(Decrypted {
        opened: o,
        chunks,
        integrity,
    })
}

/// What `verify` found in an intact recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Chunks.
    pub chunks: usize,
    /// Frames.
    pub frames: usize,
    /// Time of the last frame, ms.
    pub duration_ms: u32,
}

/// Checks a recording end to end: key, every chunk, order, the final chunk.
pub fn verify(keys: &Keys, path: &Path) -> Result<Verified, String> {
    let d = decrypt(keys, path, "verify")?;
    d.integrity.map_err(|e| e.to_string())?;
    Ok(Verified {
        chunks: d.chunks.len(),
        frames: d.chunks.iter().map(Vec::len).sum(),
        duration_ms: d
            .chunks
            .iter()
            .flatten()
            .map(|f| f.time_ms)
            .max()
            .unwrap_or(0),
    })
}

/// Writes a stereo WAV (caller left, callee right). A damaged or truncated file is refused
/// unless `partial`, which exports the chunks that authenticated before the damage.
pub fn export_wav(keys: &Keys, path: &Path, out: &Path, partial: bool) -> Result<Verified, String> {
    let d = decrypt(keys, path, "export")?;
    if let Err(e) = &d.integrity {
        if !partial {
            return Err(format!("{e} (--partial exports the chunks before it)"));
        }
        eprintln!(
            "srtp-edge: warning: {e}; exporting the {} chunks before it",
            d.chunks.len()
        );
    }
    let frames: Vec<&Frame> = d.chunks.iter().flatten().collect();
    let wav = super::wav::render(&d.opened.header, &frames).map_err(|e| e.to_string())?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    f.write_all(&wav)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Verified {
        chunks: d.chunks.len(),
        frames: frames.len(),
        duration_ms: frames.iter().map(|f| f.time_ms).max().unwrap_or(0),
    })
}

fn open_locked(path: &Path) -> Result<(File, Opened), String> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !try_lock(&f) {
        return Err(format!(
            "{}: being recorded (the daemon holds it); try again when the call has ended",
            path.display()
        ));
    }
    let head = read_head(&mut f)?;
    let o = format::open(&head).map_err(|e| e.to_string())?;
    Ok((f, o))
}

/// Crypto-shreds a recording: overwrites its key block with zeros (synced) and logs `shred`.
/// Without its data key the audio can never be decrypted again.
pub fn shred(keys: &Keys, path: &Path, purpose: &str) -> Result<(), String> {
    let (f, o) = open_locked(path)?;
    let Some(kb) = &o.keyblock else {
        return Ok(());
    };
    let wrapped = kb.wrapped().map_err(|e| e.to_string())?;
    f.write_all_at(&vec![0u8; o.keyblock_len], (o.keyblock_offset + 2) as u64)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    keys.audit("shred", &wrapped.kek, &o.header.id, purpose)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Re-wraps a recording's data key with the newest KEK version of its tenant: a new file with
/// the new key block and the same header and chunks (copied, not decrypted) replaces the old one.
/// Returns false when the key already used the newest version.
pub fn rewrap(keys: &Keys, path: &Path) -> Result<bool, String> {
    let (mut f, o) = open_locked(path)?;
    let kb = o
        .keyblock
        .as_ref()
        .ok_or(format::FormatError::Shredded.to_string())?;
    let wrapped = kb.wrapped().map_err(|e| e.to_string())?;
    let Some(new) = keys
        .rewrap(&wrapped, &o.header.id)
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let nkb = format::KeyBlock::from_wrapped(&new)
        .encode()
        .map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    std::io::Seek::rewind(&mut f).map_err(|e| e.to_string())?;
    f.read_to_end(&mut all).map_err(|e| e.to_string())?;
    let mut out = all[..o.keyblock_offset].to_vec();
    out.extend_from_slice(&(nkb.len() as u16).to_be_bytes());
    out.extend_from_slice(&nkb);
    out.extend_from_slice(&all[o.chunks_offset..]);
    let tmp = path.with_extension("srec.rewrap");
    let mut t = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    t.write_all(&out)
        .and_then(|_| t.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(true)
}

/// Shreds and removes recordings that started more than `days` days ago (the daemon's
/// retention). Files being written are left for the next pass. Returns how many were removed.
pub fn enforce_retention(dir: &Path, days: u32, keys: &Keys) -> usize {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let limit = now_ms.saturating_sub(u64::from(days) * 86_400_000);
    let mut n = 0;
    for l in list(dir).unwrap_or_default() {
        if l.start_unix_ms == 0 || l.start_unix_ms >= limit || l.state == "recording" {
            continue;
        }
        match shred(keys, &l.path, "retention").and_then(|_| {
            std::fs::remove_file(&l.path).map_err(|e| format!("{}: {e}", l.path.display()))
        }) {
            Ok(()) => {
                n += 1;
                tracing::info!(recording = %l.id, "recording past retention shredded and removed");
            }
            Err(e) => tracing::warn!(recording = %l.id, error = %e, "retention: cannot shred"),
        }
    }
    n
}
