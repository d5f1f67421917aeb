//! The IO shell of the fork: one tokio task per forked call holding a TLS 1.3 WebSocket to the
//! backend, and the [`ForkHandle`] the media worker uses to talk to it.
//!
//! The media worker must never wait for a backend, so the handle is three lock-free bounded
//! queues: call audio to the task (drop-oldest, counted), 20 ms playout frames to the worker,
//! and the marks the worker has played back to the task. The worker never blocks, never
//! allocates and never touches the metrics registry; the task batches everything on a 20 ms tick.
//! All protocol decisions are in [`ForkSession`]; this module only moves bytes and keeps time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use crossbeam_queue::ArrayQueue;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::codec::G711;
use super::config::ForkBackendConfig;
use super::playout::{PlayItem, FRAME_SAMPLES};
use super::protocol::{self, CallMeta, Protocol, Track};
pub use super::session::ForkMode;
use super::session::{ForkSession, Outgoing, SessionEvent, SessionParams};
use crate::config::{TlsConfig, TlsMinVersion};
use crate::metrics as m;
use crate::rand::OsRandom;

/// Longest RTP payload accepted from the media worker (40 ms of G.711); longer ones are dropped
/// and counted, which keeps the hand-off queue's memory fixed.
pub const MAX_PAYLOAD: usize = 320;

/// Largest WebSocket message or frame accepted from a backend (1 MiB: about 2 minutes of μ-law
/// as base64, far more than any backend sends at once).
pub const MAX_MESSAGE: usize = 1 << 20;

/// Frames handed to the media worker ahead of time (the rest waits in the session's queue).
const PLAYOUT_RING: usize = 25;

/// The media tick while connected: the worker's queue has no wake-up (it must never wait on
/// a lock), so the task collects call audio and tops up the playout every 20 ms.
const TICK: Duration = Duration::from_millis(20);
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Fork tasks of this process that have not finished yet.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Fork tasks still running in this process: a shutdown waits (bounded) for this to reach zero
/// so that every backend gets its `stop` and close 1000 before the runtime goes away.
pub fn running_forks() -> usize {
    RUNNING.load(Ordering::Relaxed)
}

/// Why a backend could not be prepared or a fork could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// A secret file could not be read (the message names the file, never its content).
    #[error("fork backend {backend}: {reason}")]
    Secret {
        /// Backend name.
        backend: String,
        /// What went wrong.
        reason: String,
    },
    /// The TLS client configuration could not be built.
    #[error("fork backend {backend}: {source}")]
    Tls {
        /// Backend name.
        backend: String,
        /// The TLS module's error.
        source: crate::tls::TlsError,
    },
    /// The L16 resampler could not be built for the configured rate.
    #[error("fork: {0}")]
    Resample(#[from] super::resample::ResampleError),
}

/// A configured backend, ready to connect to: TLS config built and secrets loaded once.
pub struct Backend {
    name: String,
    url: String,
    protocol: Protocol,
    tls: Arc<rustls::ClientConfig>,
    bearer: Option<String>,
    twilio_signature: Option<String>,
    headers: BTreeMap<String, String>,
    send_numbers: bool,
    connect_timeout: Duration,
    queue_frames: usize,
    max_playout_frames: usize,
    account_sid: String,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets are never printed.
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

fn read_secret(backend: &str, path: &std::path::Path) -> Result<String, ForkError> {
    let s = std::fs::read_to_string(path).map_err(|e| ForkError::Secret {
        backend: backend.into(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(ForkError::Secret {
            backend: backend.into(),
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(s)
}

/// `X-Twilio-Signature`: base64 of HMAC-SHA1 over the full URL (a WebSocket upgrade has no POST
/// parameters to append), keyed with the account's auth token, as Twilio's validators compute it.
pub fn twilio_signature(secret: &str, url: &str) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, url.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

impl Backend {
    /// Builds a backend from its validated configuration and the global TLS settings. The
    /// connection is always TLS 1.3 with the server certificate verified against the backend's
    /// `ca_file`, else `tls.ca_file`, else the system roots.
    pub fn from_config(
        cfg: &ForkBackendConfig,
        tls: &TlsConfig,
    ) -> Result<Arc<Backend>, ForkError> {
        let tls_err = |source| ForkError::Tls {
            backend: cfg.name.clone(),
            source,
        };
        let mut t = tls.clone();
        if let Some(ca) = &cfg.ca_file {
            t.ca_file = Some(ca.clone());
        }
        let roots = crate::tls::client_roots(&t).map_err(tls_err)?;
        let client =
            crate::tls::client_config(TlsMinVersion::Tls13, roots, &[]).map_err(tls_err)?;
        let bearer = match &cfg.bearer_token_file {
            Some(p) => Some(read_secret(&cfg.name, p)?),
            None => None,
        };
        let twilio_signature = match &cfg.twilio_secret_file {
            Some(p) => Some(twilio_signature(&read_secret(&cfg.name, p)?, &cfg.url)),
            None => None,
        };
        Ok(Arc::new(Backend {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            protocol: cfg.protocol,
            tls: client,
            bearer,
            twilio_signature,
            headers: cfg.headers.clone(),
            send_numbers: cfg.send_numbers,
            connect_timeout: Duration::from_secs(u64::from(cfg.connect_timeout_secs)),
            // Two tracks of 20 ms frames.
            queue_frames: (cfg.queue_ms as usize / 20).max(1) * 2,
            max_playout_frames: cfg.max_playout_secs as usize * 50,
            account_sid: protocol::random_sid(&mut OsRandom, "AC"),
        }))
    }

    /// The configured name (used in metrics and logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wire dialect.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

/// What the media side knows about the call when it starts a fork.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// Caller number or URI user part (masked unless the backend has `send_numbers`).
    pub from: String,
    /// Called number (same rule).
    pub to: String,
    /// SIP Call-ID of the leg.
    pub sip_call_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Route or ng client that asked for the fork.
    pub route: String,
    /// The call's codec (calls with other codecs are not forked; the caller checks).
    pub codec: G711,
    /// Fork or agent.
    pub mode: ForkMode,
}

/// Something the call must react to, read with [`ForkHandle::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkEvent {
    /// The WebSocket is up and `start` (or the preamble) was sent.
    Connected,
    /// The connection was lost; the fork is reconnecting (fork mode only).
    Reconnecting,
    /// Agent mode: the backend is gone, asked to disconnect, or closed: send BYE.
    Hangup,
    /// The task has finished (after [`ForkHandle::stop`], a close 1000 from the backend in
    /// fork mode, or a hangup); nothing more will happen.
    Ended,
}

// Fixed-size slots on purpose: the queue is allocated once; boxing would allocate per packet.
#[allow(clippy::large_enum_variant)]
enum MediaItem {
    Audio {
        track: Track,
        len: u16,
        buf: [u8; MAX_PAYLOAD],
    },
    Event {
        track: Track,
        payload: [u8; 4],
        len: u8,
        rtp_timestamp: u32,
    },
}

struct Shared {
    to_backend: ArrayQueue<MediaItem>,
    playout: ArrayQueue<PlayItem>,
    reached: ArrayQueue<u64>,
    events: ArrayQueue<ForkEvent>,
    stop: AtomicBool,
    /// Wakes the task at once on a stop (also while it waits to reconnect).
    wake: Notify,
    dropped: AtomicU64,
    oversize: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
}

/// Counters of one fork, for tests, benchmarks and `/calls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForkStats {
    /// Frames sent to the backend (both tracks).
    pub frames_sent: u64,
    /// WebSocket payload bytes sent.
    pub bytes_sent: u64,
    /// Frames dropped because the backend did not keep up (drop-oldest).
    pub dropped: u64,
    /// Payloads refused for being longer than [`MAX_PAYLOAD`].
    pub oversize: u64,
}

/// The media worker's end of one fork. Every method returns at once; dropping it stops the fork.
pub struct ForkHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ForkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForkHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ForkHandle {
    /// Hands one decrypted G.711 RTP payload (in the call's codec) to the fork. Never blocks:
    /// when the backend is behind, the oldest queued frame is dropped and counted. Returns false
    /// when this payload itself was refused (longer than [`MAX_PAYLOAD`]).
    pub fn push_g711(&self, track: Track, payload: &[u8]) -> bool {
        if payload.len() > MAX_PAYLOAD {
            self.shared.oversize.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut buf = [0u8; MAX_PAYLOAD];
        buf[..payload.len()].copy_from_slice(payload);
        self.push(MediaItem::Audio {
            track,
            len: payload.len() as u16,
            buf,
        });
        true
    }

    /// [`push_g711`](Self::push_g711) for a payload in codec `from` that the fork's session
    /// takes in `to` (the call's codec changed mid-call): transcoded while copied, no allocation.
    pub fn push_g711_transcoded(&self, track: Track, from: G711, to: G711, payload: &[u8]) -> bool {
        if payload.len() > MAX_PAYLOAD {
            self.shared.oversize.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut buf = [0u8; MAX_PAYLOAD];
        buf[..payload.len()].copy_from_slice(payload);
        super::codec::transcode_in_place(from, to, &mut buf[..payload.len()]);
        self.push(MediaItem::Audio {
            track,
            len: payload.len() as u16,
            buf,
        });
        true
    }

    /// Hands an RFC 4733 telephone-event payload and its RTP timestamp to the fork (it becomes
    /// a `dtmf` message once per key press). Never blocks.
    pub fn push_telephone_event(&self, track: Track, payload: &[u8], rtp_timestamp: u32) {
        let mut p = [0u8; 4];
        let len = payload.len().min(4);
        p[..len].copy_from_slice(&payload[..len]);
        // A wrong length is kept as such so that the session counts it as malformed.
        let len = if payload.len() > 4 { 5 } else { len as u8 };
        self.push(MediaItem::Event {
            track,
            payload: p,
            len,
            rtp_timestamp,
        });
    }

    fn push(&self, item: MediaItem) {
        if self.shared.to_backend.force_push(item).is_some() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next 20 ms of backend audio to play (in the call's codec), pulled by the call's
    /// 20 ms clock; None when nothing is queued (play nothing or comfort noise).
    pub fn next_playout_payload(&self) -> Option<[u8; FRAME_SAMPLES]> {
        loop {
            match self.shared.playout.pop()? {
                PlayItem::Audio(f) => return Some(f),
                PlayItem::Mark(seq) => {
                    // A later mark implies the earlier ones, so losing an old report is harmless.
                    self.shared.reached.force_push(seq);
                }
            }
        }
    }

    /// The next event for the call (connected, reconnecting, hangup, ended), if any.
    pub fn poll_event(&self) -> Option<ForkEvent> {
        self.shared.events.pop()
    }

    /// Ends the fork: `stop` is sent, then a close with code 1000. Idempotent.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// The fork's counters so far.
    pub fn stats(&self) -> ForkStats {
        let s = &self.shared;
        ForkStats {
            frames_sent: s.frames_sent.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            oversize: s.oversize.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ForkHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Mask<'a>(&'a str);

impl fmt::Display for Mask<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::redact::write_masked(f, self.0)
    }
}

/// Starts a fork of one call on `rt` and returns the media worker's handle at once; the
/// connection is made in the background ([`ForkEvent::Connected`] when it is up).
pub fn spawn_fork(
    rt: &tokio::runtime::Handle,
    backend: Arc<Backend>,
    call: CallInfo,
) -> Result<ForkHandle, ForkError> {
    let (from, to) = if backend.send_numbers {
        (call.from.clone(), call.to.clone())
    } else {
        (Mask(&call.from).to_string(), Mask(&call.to).to_string())
    };
    let tracks = match call.mode {
        ForkMode::Fork => vec![Track::Inbound, Track::Outbound],
        ForkMode::Agent => vec![Track::Inbound],
    };
    let session = ForkSession::new(
        SessionParams {
            protocol: backend.protocol,
            mode: call.mode,
            codec: call.codec,
            tracks,
            meta: CallMeta {
                from,
                to,
                sip_call_id: call.sip_call_id,
                direction: call.direction,
                route: call.route,
            },
            call_sid: protocol::random_sid(&mut OsRandom, "CA"),
            account_sid: backend.account_sid.clone(),
            max_playout_frames: backend.max_playout_frames,
        },
        Box::new(OsRandom),
    )?;
    let shared = Arc::new(Shared {
        to_backend: ArrayQueue::new(backend.queue_frames),
        playout: ArrayQueue::new(PLAYOUT_RING),
        reached: ArrayQueue::new(64),
        events: ArrayQueue::new(16),
        stop: AtomicBool::new(false),
        wake: Notify::new(),
        dropped: AtomicU64::new(0),
        oversize: AtomicU64::new(0),
        frames_sent: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
    });
    let task = Task {
        metrics: Metrics::new(&backend.name),
        backend,
        shared: shared.clone(),
        session,
        reported: ForkStats::default(),
        reported_playout_drops: 0,
        queued_frames_seen: 0,
        idle_ticks: 0,
        reconnecting: false,
    };
    RUNNING.fetch_add(1, Ordering::Relaxed);
    rt.spawn(task.run());
    Ok(ForkHandle { shared })
}

struct Metrics {
    sent: metrics::Counter,
    bytes: metrics::Counter,
    received: metrics::Counter,
    queue_full: metrics::Counter,
    playout_full: metrics::Counter,
    oversize: metrics::Counter,
    reconnects: metrics::Counter,
    active: metrics::Gauge,
    backend: String,
}

impl Metrics {
    fn new(backend: &str) -> Metrics {
        let b = backend.to_string();
        Metrics {
            sent: metrics::counter!(m::FORK_FRAMES_SENT, "backend" => b.clone()),
            bytes: metrics::counter!(m::FORK_BYTES_SENT, "backend" => b.clone()),
            received: metrics::counter!(m::FORK_FRAMES_RECEIVED, "backend" => b.clone()),
            queue_full: metrics::counter!(m::FORK_FRAMES_DROPPED, "backend" => b.clone(), "reason" => "queue_full"),
            playout_full: metrics::counter!(m::FORK_FRAMES_DROPPED, "backend" => b.clone(), "reason" => "playout_full"),
            oversize: metrics::counter!(m::FORK_FRAMES_DROPPED, "backend" => b.clone(), "reason" => "oversize"),
            reconnects: metrics::counter!(m::FORK_RECONNECTS, "backend" => b.clone()),
            active: metrics::gauge!(m::FORK_SESSIONS_ACTIVE),
            backend: b,
        }
    }

    fn error(&self, reason: &'static str) {
        metrics::counter!(m::FORK_ERRORS, "backend" => self.backend.clone(), "reason" => reason)
            .increment(1);
    }

    fn close(&self, code: u16) {
        metrics::counter!(m::FORK_BACKEND_CLOSES, "backend" => self.backend.clone(), "code" => code.to_string())
            .increment(1);
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Task {
    backend: Arc<Backend>,
    shared: Arc<Shared>,
    session: ForkSession,
    metrics: Metrics,
    reported: ForkStats,
    reported_playout_drops: u64,
    queued_frames_seen: u64,
    /// Ticks in a row with nothing left to play (the backend paused).
    idle_ticks: u32,
    /// Between a lost connection and the next one (call audio queued meanwhile is stale).
    reconnecting: bool,
}

fn classify(e: &WsError) -> &'static str {
    match e {
        WsError::Io(io) => {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                "tls"
            } else {
                "io"
            }
        }
        WsError::Tls(_) => "tls",
        WsError::Http(_) | WsError::HttpFormat(_) => "http",
        WsError::Capacity(_) => "protocol",
        WsError::Protocol(_) => "protocol",
        _ => "connect",
    }
}

/// The clock handed to the session (tokio's, so a paused runtime clock would drive it too).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Sleeps until the session's next deadline; forever without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// The next message of the connection; never, without one.
async fn next_message(ws: &mut Option<Ws>) -> Option<Result<Message, WsError>> {
    match ws {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

impl Task {
    fn event(&self, e: ForkEvent) {
        self.shared.events.force_push(e);
    }

    /// Drives the session: does what it asks (connect, clear, close, ...), sends what it
    /// queued, and sleeps until its next deadline, a backend message, the 20 ms media tick
    /// while connected, or the call's stop.
    async fn run(mut self) {
        self.metrics.active.increment(1.0);
        let mut ws: Option<Ws> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if !self.act(&mut ws).await {
                break;
            }
            let connected = ws.is_some();
            let deadline = self.session.poll_timeout();
            tokio::select! {
                _ = tick.tick(), if connected => {
                    if self.stopping() {
                        self.stop();
                    } else {
                        self.on_tick();
                        self.report();
                    }
                }
                _ = self.shared.wake.notified() => {
                    if self.stopping() {
                        self.stop();
                    }
                }
                _ = sleep_until(deadline) => self.session.handle_timeout(now()),
                msg = next_message(&mut ws) => self.on_message(&mut ws, msg).await,
            }
        }
        self.report();
        self.metrics.active.decrement(1.0);
        self.event(ForkEvent::Ended);
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sends what the session queued and carries out its events until it has none; false
    /// once it ended.
    async fn act(&mut self, ws: &mut Option<Ws>) -> bool {
        loop {
            self.flush_or_lose(ws).await;
            let Some(ev) = self.session.poll_event() else {
                return true;
            };
            match ev {
                SessionEvent::Connect => self.connect_or_lose(ws).await,
                SessionEvent::Connected => {}
                SessionEvent::Lost(reason) => {
                    self.metrics.error(reason);
                    *ws = None;
                }
                SessionEvent::Reconnecting => {
                    self.event(ForkEvent::Reconnecting);
                    self.metrics.reconnects.increment(1);
                    self.reconnecting = true;
                    self.drop_stale_frames();
                    self.report();
                }
                SessionEvent::Clear => self.clear(),
                SessionEvent::Close => {
                    if let Some(w) = ws.take() {
                        close(w).await;
                    }
                }
                SessionEvent::Hangup => self.event(ForkEvent::Hangup),
                SessionEvent::Ended => return false,
            }
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// The call stopped the fork: whatever the worker queued before the stop still goes out,
    /// then `stop` and a close 1000.
    fn stop(&mut self) {
        if self.session.is_connected() {
            self.on_tick();
        }
        self.session.handle_stop();
    }

    /// Frames that wait for a connection are stale by the time it is up: dropped, counted.
    fn drop_stale_frames(&self) {
        while self.shared.to_backend.pop().is_some() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn connect_or_lose(&mut self, ws: &mut Option<Ws>) {
        if self.reconnecting {
            self.drop_stale_frames();
        }
        match connect(&self.backend).await {
            Ok(w) => {
                self.event(ForkEvent::Connected);
                tracing::info!(backend = %self.backend.name, "fork connected");
                // Audio queued while disconnected belongs to nobody: the worker's ring too.
                while self.shared.playout.pop().is_some() {}
                while self.shared.reached.pop().is_some() {}
                *ws = Some(w);
                self.reconnecting = false;
                self.session.handle_connected(now());
            }
            Err(reason) => {
                self.metrics.error(reason);
                tracing::warn!(backend = %self.backend.name, reason, "fork connection failed");
                self.session.handle_lost(now());
            }
        }
    }

    async fn flush_or_lose(&mut self, ws: &mut Option<Ws>) {
        let Some(w) = ws.as_mut() else {
            // Nothing can be queued without a stream; nothing to send it on anyway.
            while self.session.poll_transmit().is_some() {}
            return;
        };
        if let Err(r) = self.flush(w).await {
            self.metrics.error(r);
            *ws = None;
            self.lost(r);
        }
    }

    /// The connection failed (`reason` already counted where it was seen).
    fn lost(&mut self, reason: &'static str) {
        tracing::info!(backend = %self.backend.name, reason, "fork connection lost");
        self.session.handle_lost(now());
    }

    /// A message (or the end) of the connection.
    async fn on_message(&mut self, ws: &mut Option<Ws>, msg: Option<Result<Message, WsError>>) {
        let result = match msg {
            None => {
                *ws = None;
                return self.lost("io");
            }
            Some(Err(e)) => {
                let r = classify(&e);
                self.metrics.error(r);
                *ws = None;
                return self.lost(r);
            }
            Some(Ok(Message::Text(t))) => self.session.handle_text(t.as_str()),
            Some(Ok(Message::Binary(b))) => self.session.handle_binary(&b),
            Some(Ok(Message::Pong(_))) => {
                self.session.handle_pong(now());
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                self.metrics.close(code);
                tracing::info!(backend = %self.backend.name, code, "fork backend closed the stream");
                if let Some(mut w) = ws.take() {
                    // tungstenite queued the close reply; push it out.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, w.flush()).await;
                }
                self.session.handle_backend_closed(now(), code);
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
        };
        if let Err(e) = result {
            self.metrics.error("malformed");
            // The error names the problem, never the content (it may be audio).
            tracing::debug!(backend = %self.backend.name, error = %e, "fork: message ignored");
        }
    }

    /// Sends everything the session queued, with a bound on how long a stuck backend can hold
    /// the task (the media worker is unaffected either way: its queue drops the oldest).
    async fn flush(&mut self, ws: &mut Ws) -> Result<(), &'static str> {
        let mut frames = 0u64;
        let mut bytes = 0u64;
        let mut msgs = Vec::new();
        while let Some(o) = self.session.poll_transmit() {
            msgs.push(match o {
                Outgoing::Text(t) => {
                    bytes += t.len() as u64;
                    if t.starts_with(r#"{"event":"media""#) {
                        frames += 1;
                    }
                    Message::text(t)
                }
                Outgoing::Binary(b) => {
                    bytes += b.len() as u64;
                    frames += 1;
                    Message::binary(b)
                }
                Outgoing::Ping => Message::Ping(Vec::new().into()),
            });
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let send = async {
            for msg in msgs {
                ws.feed(msg).await?;
            }
            ws.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, send).await {
            Err(_) => Err("write_timeout"),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(())) => {
                self.shared.frames_sent.fetch_add(frames, Ordering::Relaxed);
                self.shared.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The 20 ms media tick: the worker's audio and mark reports into the session, the
    /// session's playout into the worker's ring.
    fn on_tick(&mut self) {
        while let Some(item) = self.shared.to_backend.pop() {
            match item {
                MediaItem::Audio { track, len, buf } => {
                    let n = usize::from(len).min(MAX_PAYLOAD);
                    self.session.handle_audio(track, &buf[..n]);
                }
                MediaItem::Event {
                    track,
                    payload,
                    len,
                    rtp_timestamp,
                } => {
                    let p: &[u8] = if len <= 4 {
                        &payload[..usize::from(len)]
                    } else {
                        &[0; 5]
                    };
                    if self
                        .session
                        .handle_telephone_event(track, p, rtp_timestamp)
                        .is_err()
                    {
                        self.metrics.error("malformed");
                    }
                }
            }
        }
        while let Some(seq) = self.shared.reached.pop() {
            self.session.handle_marks_played(seq);
        }
        // Backend audio that stopped mid-frame is padded once the worker has caught up.
        if self.shared.playout.is_empty() && self.session.playout().queued_frames() == 0 {
            self.idle_ticks += 1;
            if self.idle_ticks >= 2 {
                self.session.flush_playout();
            }
        } else {
            self.idle_ticks = 0;
        }
        self.queued_frames_seen += self.top_up();
    }

    /// Moves items from the session's queue into the worker's ring while there is room.
    fn top_up(&mut self) -> u64 {
        let mut frames = 0;
        while self.shared.playout.len() < self.shared.playout.capacity() {
            let Some(item) = self.session.pop_playout() else {
                break;
            };
            if matches!(item, PlayItem::Audio(_)) {
                frames += 1;
            }
            // Only this task pushes, so the length check guarantees room.
            let _ = self.shared.playout.push(item);
        }
        frames
    }

    fn clear(&mut self) {
        // Marks the worker already played are echoed as played, then the rest as cleared.
        while let Some(seq) = self.shared.reached.pop() {
            self.session.handle_marks_played(seq);
        }
        while self.shared.playout.pop().is_some() {}
        self.session.handle_cleared();
    }

    /// Adds the counters' progress since the last report to the metrics registry.
    fn report(&mut self) {
        let s = ForkStats {
            frames_sent: self.shared.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.shared.bytes_sent.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            oversize: self.shared.oversize.load(Ordering::Relaxed),
        };
        let r = self.reported;
        self.metrics.sent.increment(s.frames_sent - r.frames_sent);
        self.metrics.bytes.increment(s.bytes_sent - r.bytes_sent);
        self.metrics.queue_full.increment(s.dropped - r.dropped);
        self.metrics.oversize.increment(s.oversize - r.oversize);
        self.reported = s;
        let pd = self.session.playout().dropped_frames();
        self.metrics
            .playout_full
            .increment(pd - self.reported_playout_drops);
        self.reported_playout_drops = pd;
        self.metrics.received.increment(self.queued_frames_seen);
        self.queued_frames_seen = 0;
    }
}

/// Opens the WebSocket to the backend: TLS 1.3 with the backend's roots, its headers and
/// credentials, bounded message sizes and a connect timeout; the error is a metrics label.
async fn connect(b: &Backend) -> Result<Ws, &'static str> {
    let mut req = b
        .url
        .as_str()
        .into_client_request()
        .map_err(|_| "connect")?;
    let h = req.headers_mut();
    for (k, v) in &b.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            h.insert(k, v);
        }
    }
    if let Some(t) = &b.bearer {
        let v = HeaderValue::try_from(format!("Bearer {t}")).map_err(|_| "connect")?;
        h.insert("authorization", v);
    }
    if let Some(sig) = &b.twilio_signature {
        let v = HeaderValue::try_from(sig.as_str()).map_err(|_| "connect")?;
        h.insert("x-twilio-signature", v);
    }
    // A 16 KiB read buffer instead of tungstenite's 128 KiB: forks are many and their
    // messages small; larger messages still grow it up to MAX_MESSAGE.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let fut = tokio_tungstenite::connect_async_tls_with_config(
        req,
        Some(cfg),
        true,
        Some(Connector::Rustls(b.tls.clone())),
    );
    match tokio::time::timeout(b.connect_timeout, fut).await {
        Err(_) => Err("timeout"),
        Ok(Err(e)) => Err(classify(&e)),
        Ok(Ok((ws, _resp))) => Ok(ws),
    }
}

/// Closes a connection normally: close 1000, then waits (bounded) for the backend's reply so
/// the close handshake completes.
async fn close(mut ws: Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let closing = async {
        ws.send(Message::Close(Some(frame))).await?;
        while let Some(m) = ws.next().await {
            m?;
        }
        Ok::<(), WsError>(())
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_the_reference_algorithm() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog") is the RFC 2104
        // example de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9.
        let sig = twilio_signature("key", "The quick brown fox jumps over the lazy dog");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap();
        assert_eq!(hex::encode(raw), "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
    }

    fn handle(queue: usize) -> ForkHandle {
        ForkHandle {
            shared: Arc::new(Shared {
                to_backend: ArrayQueue::new(queue),
                playout: ArrayQueue::new(PLAYOUT_RING),
                reached: ArrayQueue::new(4),
                events: ArrayQueue::new(4),
                stop: AtomicBool::new(false),
                wake: Notify::new(),
                dropped: AtomicU64::new(0),
                oversize: AtomicU64::new(0),
                frames_sent: AtomicU64::new(0),
                bytes_sent: AtomicU64::new(0),
            }),
        }
    }

    #[test]
    fn the_media_side_never_blocks_and_drops_the_oldest() {
        let h = handle(4);
        for i in 0..10u8 {
            assert!(h.push_g711(Track::Inbound, &[i; 160]));
        }
        assert_eq!(h.stats().dropped, 6);
        assert!(!h.push_g711(Track::Inbound, &[0; MAX_PAYLOAD + 1]));
        assert_eq!(h.stats().oversize, 1);
        // The newest four survive.
        let mut firsts = Vec::new();
        while let Some(MediaItem::Audio { buf, .. }) = h.shared.to_backend.pop() {
            firsts.push(buf[0]);
        }
        assert_eq!(firsts, vec![6, 7, 8, 9]);
    }

    #[test]
    fn playout_pull_reports_marks_and_skips_them() {
        let h = handle(4);
        h.shared.playout.push(PlayItem::Mark(0)).unwrap();
        h.shared.playout.push(PlayItem::Audio([7; 160])).unwrap();
        h.shared.playout.push(PlayItem::Mark(1)).unwrap();
        assert_eq!(h.next_playout_payload(), Some([7; 160]));
        assert_eq!(h.shared.reached.pop(), Some(0));
        assert_eq!(h.next_playout_payload(), None);
        assert_eq!(h.shared.reached.pop(), Some(1));
        let s = h.shared.clone();
        drop(h);
        assert!(
            s.stop.load(Ordering::Relaxed),
            "dropping the handle stops the fork"
        );
    }
}
