//! The recording writer: one thread that drains the frame queue of every media worker, groups
//! frames per recording into chunks of `chunk_ms`, seals each chunk (AES-256-GCM, STREAM) and
//! appends it to the recording's file; plus one key thread that makes each recording's data key
//! (a wrap in the KEK provider, an audit line) and creates its file, so a slow HSM or audit disk
//! never stops the draining.
//!
//! Nothing here can slow a call: the media workers only ever `push` into the bounded queue. When
//! the writer falls behind (slow or full disk), the queue fills and the workers' pushes fail and
//! are counted; a write error ends that recording's file where it is (it then lacks its final
//! chunk, which `verify` reports) and its later frames are counted as dropped.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{self, CallMeta, Header, KeyBlock, Sealer, TrackInfo};
use super::tap::{FrameQueue, RecFrame, RecShared};
use crate::fork::codec::{transcode_in_place, G711};
use crate::keys::{DataClass, Keys, Scope};

/// Recordings started, by result (`started`, `failed`).
pub const RECORDINGS_TOTAL: &str = "srtp_edge_recordings_total";
/// Recordings being written.
pub const RECORDINGS_ACTIVE: &str = "srtp_edge_recordings_active";
/// Frames not recorded, by reason (`queue_full`, `oversize`, `codec`, `write_error`, `keying`).
pub const FRAMES_DROPPED: &str = "srtp_edge_recording_frames_dropped_total";
/// Frames recorded.
pub const FRAMES_WRITTEN: &str = "srtp_edge_recording_frames_total";
/// Bytes written to recording files.
pub const BYTES_WRITTEN: &str = "srtp_edge_recording_bytes_total";

/// Frames buffered per recording while its key is being made (beyond: dropped, `keying`).
const MAX_PENDING_CHUNKS: usize = 64;

/// A recording to start, from signaling.
#[derive(Debug)]
pub struct Start {
    /// Its slot (the frames' `slot`).
    pub slot: u32,
    /// Recording id (32 hex digits).
    pub id: String,
    /// The tenant whose KEK wraps its key.
    pub tenant: String,
    /// Redacted call metadata for the header.
    pub meta: CallMeta,
    /// Shared switches and counters.
    pub shared: Arc<RecShared>,
    /// Wall-clock start, Unix ms.
    pub start_unix_ms: u64,
}

/// Commands to the writer.
#[derive(Debug)]
pub enum WriterCmd {
    /// Start a recording.
    Start(Box<Start>),
    /// Seal every open recording and leave.
    Shutdown,
}

/// The codec of a recorded call as the writer reads it: `0` unknown, else `0x1_0000 | law << 8 |
/// pt` (law 0 PCMU, 1 PCMA). Stored in an atomic so a re-negotiation can change it.
pub fn pack_codec(law: G711, pt: u8) -> u32 {
    0x1_0000 | (u32::from(law == G711::Pcma) << 8) | u32::from(pt)
}

fn unpack_codec(v: u32) -> Option<(G711, u8)> {
    let law = if v & 0x100 != 0 {
        G711::Pcma
    } else {
        G711::Pcmu
    };
    (v & 0x1_0000 != 0).then_some((law, (v & 0x7f) as u8))
}

/// The call codecs of running recordings by slot, written by signaling, read by the writer.
pub type CodecTable = Arc<std::sync::Mutex<HashMap<u32, Arc<AtomicU32>>>>;

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Recordings directory.
    pub directory: PathBuf,
    /// Target audio per chunk.
    pub chunk_ms: u32,
    /// The provider whose KEKs wrap recording keys.
    pub key_provider: String,
}

enum State {
    /// Waiting for the key thread; finished chunk plaintexts wait here.
    Keying(VecDeque<(Vec<u8>, bool)>),
    Open {
        file: File,
        sealer: Sealer,
    },
    Failed,
}

struct Rec {
    id: String,
    shared: Arc<RecShared>,
    /// The file's codec (fixed at start).
    law: G711,
    codec: Arc<AtomicU32>,
    state: State,
    buf: Vec<u8>,
    chunk_start: Option<u32>,
    last_activity: Instant,
    /// Counters already exported.
    exported: (u64, u64, u64),
    codec_drops: u64,
    write_drops: u64,
}

type Keyed = (u32, Result<(File, Sealer), String>);

/// Starts the writer and its key thread. Returns the command channel.
pub fn spawn(
    cfg: WriterConfig,
    keys: Arc<Keys>,
    queue: Arc<FrameQueue>,
    codecs: CodecTable,
) -> std::io::Result<(Sender<WriterCmd>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let (ktx, krx) = mpsc::channel::<(u32, Header)>();
    let (rtx, rrx) = mpsc::channel::<Keyed>();
    let kcfg = cfg.clone();
    std::thread::Builder::new()
        .name("srtp-edge-rec-keys".into())
        .spawn(move || {
            while let Ok((slot, header)) = krx.recv() {
                let r = create_file(&kcfg, &keys, &header);
                if rtx.send((slot, r)).is_err() {
                    break;
                }
            }
        })?;
    let join = std::thread::Builder::new()
        .name("srtp-edge-rec-writer".into())
        .spawn(move || {
            let mut w = Writer {
                cfg,
                queue,
                codecs,
                recs: HashMap::new(),
                keyer: ktx,
                keyed: rrx,
            };
            w.run(rx);
        })?;
    Ok((tx, join))
}

/// Makes the data key (wrap + audit) and creates the file with its header and key block; the
/// file stays locked (`flock`) while it is being written, so the CLI leaves it alone.
fn create_file(cfg: &WriterConfig, keys: &Keys, header: &Header) -> Result<(File, Sealer), String> {
    let scope = Scope::new(DataClass::Recordings, &header.tenant).map_err(|e| e.to_string())?;
    let (dk, wrapped) = keys
        .new_data_key(&cfg.key_provider, &scope, &header.id, "record")
        .map_err(|e| e.to_string())?;
    let aad = format::encode_prefix(header).map_err(|e| e.to_string())?;
    let kb = KeyBlock::from_wrapped(&wrapped)
        .encode()
        .map_err(|e| e.to_string())?;
    let path = cfg.directory.join(format!("{}.srec", header.id));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = crate::keys::sys::flock(&f, crate::keys::sys::Lock::TryExclusive);
    let mut start = aad.clone();
    start.extend_from_slice(&(kb.len() as u16).to_be_bytes());
    start.extend_from_slice(&kb);
    f.write_all(&start)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let prefix = hex::decode(&header.nonce_prefix)
        .ok()
        .and_then(|v| <[u8; format::NONCE_PREFIX_LEN]>::try_from(v).ok())
        .ok_or("bad nonce prefix")?;
    metrics::counter!(BYTES_WRITTEN).increment(start.len() as u64);
    Ok((f, Sealer::new(dk.bytes(), aad, prefix)))
}

struct Writer {
    cfg: WriterConfig,
    queue: Arc<FrameQueue>,
    codecs: CodecTable,
    recs: HashMap<u32, Rec>,
    keyer: Sender<(u32, Header)>,
    keyed: Receiver<Keyed>,
}

fn header_for(s: &Start, law: G711, chunk_ms: u32) -> Result<Header, String> {
    let mut prefix = [0u8; format::NONCE_PREFIX_LEN];
    getrandom::fill(&mut prefix).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(Header {
        format: "srtp-edge recording".into(),
        version: format::VERSION,
        id: s.id.clone(),
        class: DataClass::Recordings.name().into(),
        tenant: s.tenant.clone(),
        codec: match law {
            G711::Pcmu => "PCMU".into(),
            G711::Pcma => "PCMA".into(),
        },
        sample_rate: 8000,
        tracks: vec![
            TrackInfo {
                track: 0,
                role: "caller".into(),
                channel: "left".into(),
            },
            TrackInfo {
                track: 1,
                role: "callee".into(),
                channel: "right".into(),
            },
        ],
        start_unix_ms: s.start_unix_ms,
        chunk_ms,
        nonce_prefix: hex::encode(prefix),
        call: s.meta.clone(),
    })
}

impl Writer {
    fn run(&mut self, rx: Receiver<WriterCmd>) {
        let mut last_export = Instant::now();
        let mut shutdown = false;
        loop {
            while !shutdown {
                match rx.try_recv() {
                    Ok(WriterCmd::Start(s)) => self.start(*s),
                    Ok(WriterCmd::Shutdown) | Err(TryRecvError::Disconnected) => shutdown = true,
                    Err(TryRecvError::Empty) => break,
                }
            }
            while let Ok((slot, r)) = self.keyed.try_recv() {
                self.on_keyed(slot, r);
            }
            let mut n = 0;
            while let Some(f) = self.queue.pop() {
                self.frame(f);
                n += 1;
                if n >= 65_536 {
                    break;
                }
            }
            let now = Instant::now();
            self.flush_idle(now);
            self.finish_ended(shutdown);
            if now.duration_since(last_export) >= Duration::from_secs(1) {
                last_export = now;
                self.export_metrics();
            }
            if shutdown && self.recs.is_empty() {
                return;
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(if shutdown { 1 } else { 5 }));
            }
        }
    }

    fn start(&mut self, s: Start) {
        let codec = self
            .codecs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&s.slot)
            .cloned()
            .unwrap_or_default();
        let Some((law, _)) = unpack_codec(codec.load(Ordering::Relaxed)) else {
            tracing::warn!("recording not started: no G.711 codec");
            return;
        };
        let header = match header_for(&s, law, self.cfg.chunk_ms) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "recording not started");
                metrics::counter!(RECORDINGS_TOTAL, "result" => "failed").increment(1);
                return;
            }
        };
        let _ = self.keyer.send((s.slot, header));
        metrics::gauge!(RECORDINGS_ACTIVE).increment(1.0);
        self.recs.insert(
            s.slot,
            Rec {
                id: s.id,
                shared: s.shared,
                law,
                codec,
                state: State::Keying(VecDeque::new()),
                buf: Vec::with_capacity(8192),
                chunk_start: None,
                last_activity: Instant::now(),
                exported: (0, 0, 0),
                codec_drops: 0,
                write_drops: 0,
            },
        );
    }

    fn on_keyed(&mut self, slot: u32, r: Result<(File, Sealer), String>) {
        let Some(rec) = self.recs.get_mut(&slot) else {
            return;
        };
        match r {
            Ok((file, sealer)) => {
                let pending = match std::mem::replace(&mut rec.state, State::Open { file, sealer })
                {
                    State::Keying(p) => p,
                    _ => VecDeque::new(),
                };
                metrics::counter!(RECORDINGS_TOTAL, "result" => "started").increment(1);
                tracing::info!(recording = %rec.id, "recording started");
                for (plain, last) in pending {
                    write_chunk(rec, &plain, last);
                }
            }
            Err(e) => {
                metrics::counter!(RECORDINGS_TOTAL, "result" => "failed").increment(1);
                tracing::error!(recording = %rec.id, error = %e, "recording failed: no data key or file");
                rec.state = State::Failed;
            }
        }
    }

    fn frame(&mut self, f: RecFrame) {
        let chunk_ms = self.cfg.chunk_ms;
        let Some(rec) = self.recs.get_mut(&f.slot) else {
            return;
        };
        let call = unpack_codec(rec.codec.load(Ordering::Relaxed));
        let law = match (call, G711::from_payload_type(f.pt)) {
            (Some((law, pt)), _) if pt == f.pt => law,
            (_, Some(law)) => law,
            _ => {
                // telephone-event, comfort noise, another codec: not audio we record.
                rec.codec_drops += 1;
                return;
            }
        };
        if matches!(rec.state, State::Failed) {
            rec.write_drops += 1;
            return;
        }
        let mut payload = f.buf;
        let len = usize::from(f.len).min(payload.len());
        transcode_in_place(law, rec.law, &mut payload[..len]);
        let start = *rec.chunk_start.get_or_insert(f.time_ms);
        format::encode_frame(
            &mut rec.buf,
            f.track,
            f.marker,
            f.seq,
            f.rtp_ts,
            f.time_ms,
            &payload[..len],
        );
        rec.last_activity = Instant::now();
        if f.time_ms.saturating_sub(start) >= chunk_ms
            || rec.buf.len() >= format::MAX_CHUNK_PLAIN - 1024
        {
            seal_buffered(rec, false);
        }
    }

    /// A chunk whose audio stopped arriving (hold, silence suppression) is sealed after
    /// `chunk_ms` of wall-clock time, so a crash still loses at most one chunk.
    fn flush_idle(&mut self, now: Instant) {
        let idle = Duration::from_millis(u64::from(self.cfg.chunk_ms));
        for rec in self.recs.values_mut() {
            if !rec.buf.is_empty() && now.duration_since(rec.last_activity) >= idle {
                seal_buffered(rec, false);
            }
        }
    }

    fn finish_ended(&mut self, shutdown: bool) {
        let done: Vec<u32> = self
            .recs
            .iter()
            .filter(|(_, r)| {
                let ended = shutdown || r.shared.ended.load(Ordering::Acquire);
                ended && !matches!(r.state, State::Keying(_))
            })
            .map(|(k, _)| *k)
            .collect();
        if done.is_empty() {
            return;
        }
        // Frames queued before the tap was dropped are in the queue: take them first.
        while let Some(f) = self.queue.pop() {
            self.frame(f);
        }
        for slot in done {
            let Some(mut rec) = self.recs.remove(&slot) else {
                continue;
            };
            seal_buffered(&mut rec, true);
            if let State::Open { file, .. } = &rec.state {
                let _ = file.sync_all();
            }
            export(&mut rec);
            self.codecs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&slot);
            metrics::gauge!(RECORDINGS_ACTIVE).decrement(1.0);
            tracing::info!(
                recording = %rec.id,
                frames = rec.shared.frames.load(Ordering::Relaxed),
                dropped = rec.shared.dropped.load(Ordering::Relaxed),
                "recording sealed"
            );
        }
    }

    fn export_metrics(&mut self) {
        for rec in self.recs.values_mut() {
            export(rec);
        }
    }
}

fn export(rec: &mut Rec) {
    let s = &rec.shared;
    let now = (
        s.frames.load(Ordering::Relaxed),
        s.dropped.load(Ordering::Relaxed),
        s.oversize.load(Ordering::Relaxed),
    );
    metrics::counter!(FRAMES_WRITTEN).increment(now.0 - rec.exported.0);
    metrics::counter!(FRAMES_DROPPED, "reason" => "queue_full").increment(now.1 - rec.exported.1);
    metrics::counter!(FRAMES_DROPPED, "reason" => "oversize").increment(now.2 - rec.exported.2);
    metrics::counter!(FRAMES_DROPPED, "reason" => "codec").increment(rec.codec_drops);
    metrics::counter!(FRAMES_DROPPED, "reason" => "write_error").increment(rec.write_drops);
    rec.codec_drops = 0;
    rec.write_drops = 0;
    rec.exported = now;
}

fn seal_buffered(rec: &mut Rec, last: bool) {
    let plain = std::mem::take(&mut rec.buf);
    rec.chunk_start = None;
    match &mut rec.state {
        State::Keying(pending) => {
            if pending.len() < MAX_PENDING_CHUNKS || last {
                pending.push_back((plain, last));
            } else {
                metrics::counter!(FRAMES_DROPPED, "reason" => "keying").increment(1);
            }
        }
        State::Open { .. } => write_chunk(rec, &plain, last),
        State::Failed => {}
    }
    rec.buf = Vec::with_capacity(8192);
}

fn write_chunk(rec: &mut Rec, plain: &[u8], last: bool) {
    let State::Open { file, sealer } = &mut rec.state else {
        return;
    };
    let Some(bytes) = sealer.seal(plain, last) else {
        return;
    };
    match file.write_all(&bytes) {
        Ok(()) => metrics::counter!(BYTES_WRITTEN).increment(bytes.len() as u64),
        Err(e) => {
            tracing::error!(recording = %rec.id, error = %e, "recording write failed: the file ends here");
            metrics::counter!(FRAMES_DROPPED, "reason" => "write_error").increment(1);
            rec.state = State::Failed;
        }
    }
}
