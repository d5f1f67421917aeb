//! Recording as signaling sees it: which calls are asked to be recorded (ng `start recording`,
//! `record-call`, a route's `record = true`), starting each once its codec is known (at the
//! answer), pausing, stopping. It attaches a [`RecordTap`] to the call on its media worker and
//! tells the writer thread; it never touches audio itself.
//!
//! Calls are known by their Call-ID; the call table ([`crate::media::calls::Calls`]) reports each
//! applied answer through [`Recorder::answered`] and answers [`Calls::recording_target`].

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::config::RecordingConfig;
use super::format::CallMeta;
use super::tap::{FrameQueue, RecShared, RecordTap};
use super::writer::{self, pack_codec, CodecTable, Start, WriterCmd, WriterConfig};
use crate::keys::Keys;
use crate::media::calls::{CallCodec, Calls};
use crate::media::engine::Engine;
use crate::media::worker::Command;

/// Why a recording request failed; `ng_reason` is the ng `error-reason`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// `[recording] enabled` is false.
    #[error("recording is not enabled")]
    Disabled,
    /// No such call.
    #[error("Unknown call-id")]
    UnknownCall,
    /// The call is not being recorded.
    #[error("call is not being recorded")]
    NotRecording,
    /// The call's codec cannot be recorded.
    #[error("recording refused: {0}")]
    Refused(String),
}

/// What a recording request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordStart {
    /// Recording now, into this recording id.
    Started(String),
    /// Starts when the call is answered.
    Pending,
}

/// Who asked, for the header and the key: tenant and redacted call facts.
#[derive(Debug, Clone, Default)]
pub struct RecordRequest {
    /// The tenant whose KEK wraps the key (None: `[recording] tenant`).
    pub tenant: Option<String>,
    /// Redacted metadata (`call_id_sha256` is filled in here).
    pub meta: CallMeta,
}

struct Running {
    id: String,
    key: u64,
    shared: Arc<RecShared>,
    codec: Arc<AtomicU32>,
}

struct CallRec {
    request: RecordRequest,
    running: Option<Running>,
}

/// The recorder of a running daemon.
pub struct Recorder {
    cfg: RecordingConfig,
    keys: Arc<Keys>,
    queue: Arc<FrameQueue>,
    writer: Mutex<Sender<WriterCmd>>,
    join: Mutex<Option<std::thread::JoinHandle<()>>>,
    codecs: CodecTable,
    calls: Mutex<HashMap<String, CallRec>>,
    next_slot: AtomicU32,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("enabled", &self.cfg.enabled)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// First 16 hex digits of SHA-256(Call-ID).
pub fn call_id_hash(call_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, call_id.as_bytes());
    hex::encode(&d.as_ref()[..8])
}

impl Recorder {
    /// Creates the recordings directory (0700) and starts the writer threads.
    pub fn start(
        cfg: &RecordingConfig,
        state_dir: &Path,
        keys: Arc<Keys>,
        engine: Arc<Engine>,
    ) -> Result<Arc<Recorder>, String> {
        let dir = cfg.directory_in(state_dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let queue = Arc::new(FrameQueue::new(cfg.queue_frames as usize));
        let codecs: CodecTable = Arc::default();
        let (tx, join) = writer::spawn(
            WriterConfig {
                directory: dir,
                chunk_ms: cfg.chunk_ms,
                key_provider: cfg.key_provider.clone(),
            },
            keys.clone(),
            queue.clone(),
            codecs.clone(),
        )
        .map_err(|e| format!("recording writer: {e}"))?;
        Ok(Arc::new(Recorder {
            cfg: cfg.clone(),
            keys,
            queue,
            writer: Mutex::new(tx),
            join: Mutex::new(Some(join)),
            codecs,
            calls: Mutex::new(HashMap::new()),
            next_slot: AtomicU32::new(1),
            engine,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &RecordingConfig {
        &self.cfg
    }

    /// The key service.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// Records `call_id` (ng `start recording`, `record-call`, a recording route): now if it
    /// is answered, else from its answer on. A paused recording resumes; a running one goes on.
    pub fn request(
        &self,
        calls: &Calls,
        call_id: &str,
        mut req: RecordRequest,
    ) -> Result<RecordStart, RecordError> {
        if !self.cfg.enabled {
            return Err(RecordError::Disabled);
        }
        let (key, codec) = calls
            .recording_target(call_id)
            .map_err(|_| RecordError::UnknownCall)?;
        let mut table = lock(&self.calls);
        if let Some(r) = table.get(call_id).and_then(|c| c.running.as_ref()) {
            if r.key == key {
                r.shared.paused.store(false, Ordering::Relaxed);
                return Ok(RecordStart::Started(r.id.clone()));
            }
        }
        req.meta.call_id_sha256 = call_id_hash(call_id);
        if req.tenant.is_none() {
            let trunk = (!req.meta.trunk.is_empty()).then_some(req.meta.trunk.as_str());
            req.tenant = Some(self.cfg.tenant_for(trunk, None));
        }
        let entry = table.entry(call_id.to_string()).or_insert(CallRec {
            request: req.clone(),
            running: None,
        });
        entry.request = req;
        match codec {
            None => Ok(RecordStart::Pending),
            Some(Err(why)) => {
                table.remove(call_id);
                Err(RecordError::Refused(why))
            }
            Some(Ok(c)) => {
                let id = self.begin(entry, key, c)?;
                drop(table);
                // A barrier: the worker handles commands in order, so once it answers the tap
                // is attached, and every packet relayed after this reply is recorded.
                let _ = self
                    .engine
                    .worker(key)
                    .ask(|reply| Command::Query { key, reply });
                Ok(RecordStart::Started(id))
            }
        }
    }

    /// An answer was applied to `call_id` (whose worker key is `key`): a pending recording
    /// starts, a running one follows a codec change.
    pub fn answered(&self, call_id: &str, key: u64, codec: Option<&Result<CallCodec, String>>) {
        let mut table = lock(&self.calls);
        let Some(entry) = table.get_mut(call_id) else {
            return;
        };
        match (&entry.running, codec) {
            (Some(r), Some(Ok(c))) if r.key == key => {
                r.codec.store(pack_codec(c.g711, c.pt), Ordering::Relaxed);
            }
            (Some(r), _) if r.key == key => {}
            (_, Some(Ok(c))) => {
                if let Err(e) = self.begin(entry, key, *c) {
                    tracing::warn!(error = %e, "recording not started");
                }
            }
            (_, Some(Err(why))) => {
                tracing::warn!(reason = %why, "recording refused: the call's codec is not recorded");
                metrics::counter!(writer::RECORDINGS_TOTAL, "result" => "refused_codec")
                    .increment(1);
                table.remove(call_id);
            }
            (_, None) => {}
        }
    }

    fn begin(&self, entry: &mut CallRec, key: u64, c: CallCodec) -> Result<String, RecordError> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw)
            .map_err(|e| RecordError::Refused(format!("no OS randomness: {e}")))?;
        let id = hex::encode(raw);
        let shared = Arc::new(RecShared::default());
        let codec = Arc::new(AtomicU32::new(pack_codec(c.g711, c.pt)));
        lock(&self.codecs).insert(slot, codec.clone());
        let tenant = entry
            .request
            .tenant
            .clone()
            .unwrap_or_else(|| self.cfg.tenant.clone());
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let sent = lock(&self.writer).send(WriterCmd::Start(Box::new(Start {
            slot,
            id: id.clone(),
            tenant,
            meta: entry.request.meta.clone(),
            shared: shared.clone(),
            start_unix_ms,
        })));
        if sent.is_err() {
            lock(&self.codecs).remove(&slot);
            return Err(RecordError::Refused(
                "the recording writer has stopped".into(),
            ));
        }
        entry.running = Some(Running {
            id: id.clone(),
            key,
            shared: shared.clone(),
            codec,
        });
        let tap = RecordTap::new(shared, self.queue.clone(), slot, Instant::now());
        self.send_worker(
            key,
            Command::Record {
                key,
                tap: Box::new(tap),
            },
        );
        Ok(id)
    }

    fn send_worker(&self, key: u64, cmd: Command) {
        let _ = self.engine.worker(key).send(cmd);
    }

    /// Pauses (`pause recording`) the call's recording: the file stays open, nothing is written
    /// until `start recording` resumes it.
    pub fn pause(&self, call_id: &str) -> Result<(), RecordError> {
        let table = lock(&self.calls);
        let r = table
            .get(call_id)
            .and_then(|c| c.running.as_ref())
            .ok_or(RecordError::NotRecording)?;
        r.shared.paused.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Stops (`stop recording`) the call's recording: its file gets its final chunk. A pending
    /// request is forgotten.
    pub fn stop(&self, call_id: &str) -> Result<(), RecordError> {
        let entry = lock(&self.calls)
            .remove(call_id)
            .ok_or(RecordError::NotRecording)?;
        if let Some(r) = entry.running {
            self.send_worker(r.key, Command::Unrecord { key: r.key });
        }
        Ok(())
    }

    /// The recording id of a call being recorded.
    pub fn recording_of(&self, call_id: &str) -> Option<String> {
        lock(&self.calls)
            .get(call_id)
            .and_then(|c| c.running.as_ref())
            .map(|r| r.id.clone())
    }

    /// Forgets calls that are gone (`live`: the Call-IDs the call table still holds).
    pub fn prune(&self, live: &HashSet<String>) {
        lock(&self.calls).retain(|id, _| live.contains(id));
    }

    /// Seals every open recording and stops the writer (after the calls were removed).
    pub fn shutdown(&self) {
        let _ = lock(&self.writer).send(WriterCmd::Shutdown);
        if let Some(j) = lock(&self.join).take() {
            let _ = j.join();
        }
    }
}
