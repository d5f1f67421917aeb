//! One fork of one call as a sans-IO state machine: the connection's life (connect, keepalive,
//! reconnection with backoff in fork mode, hang-up in agent mode) and the stream on it (stream
//! ids, sequence numbers, per-track chunk counters and timestamps, 20 ms re-framing, DTMF
//! de-duplication, the L16 resamplers and the playout queue).
//!
//! Driven like every core here (quinn-proto's `Connection`): the WSS task hands in what
//! happened with `now` (`handle_connected`, `handle_text`, `handle_audio`, `handle_lost`,
//! `handle_timeout`, ...), then drains [`ForkSession::poll_transmit`] (messages for the
//! backend) and [`ForkSession::poll_event`] (what the task must do: connect, clear the playout,
//! close, hang up) until both are empty, and sleeps until [`ForkSession::poll_timeout`]. It
//! never touches a socket, a clock or the OS random source, so its behaviour is tested message
//! by message and timer by timer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::codec::{self, TelephoneEvent, G711};
use super::playout::{MarkEcho, PlayItem, Playout, FRAME_SAMPLES};
use super::protocol::{self, BackendMessage, CallMeta, Protocol, ProtocolError, StreamIds, Track};
use super::resample::{ResampleError, Resampler};
use crate::rand::Random;

/// A WebSocket ping goes out this long after the last one.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// Without a pong for this long (checked when a ping is due), the connection is lost.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(30);
/// First reconnection delay; doubled per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How the call uses the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkMode {
    /// A copy of both tracks of a SIP-to-SIP call; a lost backend is reconnected with backoff
    /// and a new `start`, the call goes on.
    Fork,
    /// The backend is the other party (route target `wss://…`): the caller's track goes to it,
    /// its audio is played; a lost or closed backend ends the call.
    Agent,
}

/// A message for the backend, read with [`ForkSession::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text (JSON) frame.
    Text(String),
    /// A binary frame (L16 audio).
    Binary(Vec<u8>),
    /// A WebSocket ping (keepalive).
    Ping,
}

/// What the IO shell must do, read with [`ForkSession::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Open a connection to the backend, then report [`ForkSession::handle_connected`] or
    /// [`ForkSession::handle_lost`].
    Connect,
    /// The stream started on the new connection (its first messages are queued).
    Connected,
    /// The connection is unusable (the reason is a metrics label): drop it without a close.
    /// What follows (a reconnection, or a hang-up) comes as further events.
    Lost(&'static str),
    /// Fork mode: the connection was lost; a [`SessionEvent::Connect`] follows after a backoff.
    Reconnecting,
    /// Flush the playout: collect the worker's mark reports, drain the worker's queue, then
    /// call [`ForkSession::handle_cleared`].
    Clear,
    /// Close the connection normally (close 1000), after sending what is queued.
    Close,
    /// Agent mode: the backend is gone, asked to hang up, or closed: the call ends.
    Hangup,
    /// Nothing more will happen: the task ends.
    Ended,
}

/// Everything that defines a fork session; fixed for the life of the call.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// Wire dialect.
    pub protocol: Protocol,
    /// Fork or agent.
    pub mode: ForkMode,
    /// The call's codec (what the media worker hands over and gets back).
    pub codec: G711,
    /// The tracks sent to the backend (L16 sends the first one only: it is mono).
    pub tracks: Vec<Track>,
    /// Call metadata for `start` / the preamble (already redacted as configured).
    pub meta: CallMeta,
    /// `CA…` id of the call, kept across reconnects.
    pub call_sid: String,
    /// `AC…` id of the backend.
    pub account_sid: String,
    /// Playout bound in 20 ms frames.
    pub max_playout_frames: usize,
}

#[derive(Debug, Clone, Copy)]
struct TrackState {
    buf: [u8; FRAME_SAMPLES],
    len: usize,
    chunk: u64,
}

impl TrackState {
    fn new() -> TrackState {
        TrackState {
            buf: [0; FRAME_SAMPLES],
            len: 0,
            chunk: 0,
        }
    }
}

/// Where the connection to the backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// A connection is being opened by the shell.
    Connecting,
    /// Streaming; a ping is due at `next_ping`.
    Up {
        next_ping: Instant,
        last_pong: Instant,
    },
    /// Fork mode: waiting to reconnect.
    Backoff { until: Instant },
    /// Over (stopped, hung up, or closed by the backend).
    Done,
}

/// The state of one fork (see the module documentation).
pub struct ForkSession {
    p: SessionParams,
    rng: Box<dyn Random>,
    link: Link,
    /// Failed connection attempts in a row (the backoff's exponent).
    failures: u32,
    ids: StreamIds,
    seq: u64,
    tracks: [TrackState; 2],
    last_dtmf: [Option<u32>; 2],
    up: Option<Resampler>,
    down: Option<Resampler>,
    pcm: Vec<i16>,
    resampled: Vec<i16>,
    carry: Option<u8>,
    playout: Playout,
    started: bool,
    malformed: u64,
    out: VecDeque<Outgoing>,
    events: VecDeque<SessionEvent>,
}

impl std::fmt::Debug for ForkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkSession")
            .field("protocol", &self.p.protocol)
            .field("mode", &self.p.mode)
            .field("link", &self.link)
            .field("stream_sid", &self.ids.stream_sid)
            .finish_non_exhaustive()
    }
}

impl ForkSession {
    /// A session that asks at once to connect ([`SessionEvent::Connect`]); `rng` draws the
    /// stream ids.
    pub fn new(p: SessionParams, rng: Box<dyn Random>) -> Result<ForkSession, ResampleError> {
        let (up, down) = match p.protocol {
            Protocol::Twilio => (None, None),
            Protocol::L16 { sample_rate } => (
                Some(Resampler::new(8000, sample_rate)?),
                Some(Resampler::new(sample_rate, 8000)?),
            ),
        };
        Ok(ForkSession {
            ids: StreamIds {
                stream_sid: String::new(),
                call_sid: p.call_sid.clone(),
                account_sid: p.account_sid.clone(),
            },
            playout: Playout::new(p.codec, p.max_playout_frames),
            p,
            rng,
            link: Link::Connecting,
            failures: 0,
            seq: 0,
            tracks: [TrackState::new(); 2],
            last_dtmf: [None; 2],
            up,
            down,
            pcm: Vec::with_capacity(FRAME_SAMPLES * 3),
            resampled: Vec::new(),
            carry: None,
            started: false,
            malformed: 0,
            out: VecDeque::new(),
            events: VecDeque::from([SessionEvent::Connect]),
        })
    }

    // ---- connection life ----------------------------------------------------------------

    /// The connection the shell opened is up: a new stream starts on it (`connected` +
    /// `start`, or the L16 preamble, with a new stream id). Audio still queued for playout
    /// belongs to the previous stream and is dropped with its marks.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.link != Link::Connecting {
            return;
        }
        self.failures = 0;
        self.link = Link::Up {
            next_ping: now + PING_EVERY,
            last_pong: now,
        };
        self.start_stream();
        self.events.push_back(SessionEvent::Connected);
    }

    /// The connection could not be opened, or was lost (the shell has counted why): fork mode
    /// reconnects after a backoff (250 ms doubled per failure, at most 10 s), agent mode hangs
    /// up.
    pub fn handle_lost(&mut self, now: Instant) {
        if matches!(self.link, Link::Done | Link::Backoff { .. }) {
            return;
        }
        self.started = false;
        match self.p.mode {
            ForkMode::Agent => self.end(true),
            ForkMode::Fork => {
                self.failures = self.failures.saturating_add(1);
                let backoff = BACKOFF_BASE
                    .saturating_mul(1u32 << self.failures.min(6))
                    .min(BACKOFF_MAX);
                self.link = Link::Backoff {
                    until: now + backoff,
                };
                self.events.push_back(SessionEvent::Reconnecting);
            }
        }
    }

    /// The backend closed the connection with `code`: 1000 ends the fork (and an agent call);
    /// anything else is a lost connection.
    pub fn handle_backend_closed(&mut self, now: Instant, code: u16) {
        if code == 1000 {
            self.started = false;
            self.end(self.p.mode == ForkMode::Agent);
        } else {
            self.handle_lost(now);
        }
    }

    /// A pong from the backend.
    pub fn handle_pong(&mut self, now: Instant) {
        if let Link::Up { last_pong, .. } = &mut self.link {
            *last_pong = now;
        }
    }

    /// The call stops the fork: the stream ends (Twilio `stop`; L16 just closes) and the
    /// connection is closed normally.
    pub fn handle_stop(&mut self) {
        if self.link == Link::Done {
            return;
        }
        let up = matches!(self.link, Link::Up { .. });
        self.stop_stream();
        if up {
            self.events.push_back(SessionEvent::Close);
        }
        self.link = Link::Done;
        self.events.push_back(SessionEvent::Ended);
    }

    /// Runs the timers due at `now`: a keepalive ping (or, without a pong for 30 s, a lost
    /// connection), or the end of a reconnection backoff.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.link {
            Link::Up {
                next_ping,
                last_pong,
            } if now >= next_ping => {
                if now.saturating_duration_since(last_pong) > PONG_TIMEOUT {
                    self.events.push_back(SessionEvent::Lost("ping_timeout"));
                    self.handle_lost(now);
                    return;
                }
                self.out.push_back(Outgoing::Ping);
                self.link = Link::Up {
                    next_ping: now + PING_EVERY,
                    last_pong,
                };
            }
            Link::Backoff { until } if now >= until => {
                self.link = Link::Connecting;
                self.events.push_back(SessionEvent::Connect);
            }
            _ => {}
        }
    }

    /// The next message for the backend.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    /// The next thing the shell must do.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next (a ping, the end of a
    /// backoff); `None` while connecting or once over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Up { next_ping, .. } => Some(next_ping),
            Link::Backoff { until } => Some(until),
            Link::Connecting | Link::Done => None,
        }
    }

    /// True while a stream runs on a connection.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Ends the session: no more connections, an agent call hangs up.
    fn end(&mut self, hangup: bool) {
        self.link = Link::Done;
        if hangup && self.p.mode == ForkMode::Agent {
            self.events.push_back(SessionEvent::Hangup);
        }
        self.events.push_back(SessionEvent::Ended);
    }

    // ---- the stream ---------------------------------------------------------------------

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn start_stream(&mut self) {
        self.ids.stream_sid = protocol::random_sid(&mut *self.rng, "MZ");
        self.seq = 0;
        self.tracks = [TrackState::new(); 2];
        self.carry = None;
        let mut discarded = Vec::new();
        self.playout.clear(&mut discarded);
        match self.p.protocol {
            Protocol::Twilio => {
                self.out
                    .push_back(Outgoing::Text(protocol::twilio_connected()));
                let seq = self.next_seq();
                self.out.push_back(Outgoing::Text(protocol::twilio_start(
                    seq,
                    &self.ids,
                    &self.p.tracks,
                    &self.p.meta,
                )));
            }
            Protocol::L16 { sample_rate } => {
                self.out.push_back(Outgoing::Text(protocol::l16_preamble(
                    sample_rate,
                    &self.ids,
                    &self.p.meta,
                )));
            }
        }
        self.started = true;
    }

    fn stop_stream(&mut self) {
        if self.started && self.p.protocol == Protocol::Twilio {
            let seq = self.next_seq();
            self.out
                .push_back(Outgoing::Text(protocol::twilio_stop(seq, &self.ids)));
        }
        self.started = false;
    }

    /// The current stream id (`MZ…`), empty before the first connection.
    pub fn stream_sid(&self) -> &str {
        &self.ids.stream_sid
    }

    /// Audio from the call in its codec; queues one message per complete 20 ms chunk.
    pub fn handle_audio(&mut self, track: Track, payload: &[u8]) {
        if !self.started || !self.p.tracks.contains(&track) {
            return;
        }
        if matches!(self.p.protocol, Protocol::L16 { .. }) && self.p.tracks.first() != Some(&track)
        {
            return;
        }
        let mut rest = payload;
        while !rest.is_empty() {
            let t = &mut self.tracks[track.index()];
            let take = (FRAME_SAMPLES - t.len).min(rest.len());
            t.buf[t.len..t.len + take].copy_from_slice(&rest[..take]);
            t.len += take;
            rest = &rest[take..];
            if t.len == FRAME_SAMPLES {
                t.len = 0;
                t.chunk += 1;
                let (frame, chunk) = (t.buf, t.chunk);
                self.emit_frame(track, frame, chunk);
            }
        }
    }

    fn emit_frame(&mut self, track: Track, mut frame: [u8; FRAME_SAMPLES], chunk: u64) {
        match self.p.protocol {
            Protocol::Twilio => {
                codec::transcode_in_place(self.p.codec, G711::Pcmu, &mut frame);
                let seq = self.next_seq();
                self.out.push_back(Outgoing::Text(protocol::twilio_media(
                    seq,
                    &self.ids.stream_sid,
                    track,
                    chunk,
                    (chunk - 1) * 20,
                    &frame,
                )));
            }
            Protocol::L16 { sample_rate } => {
                let mut lin = [0i16; FRAME_SAMPLES];
                codec::decode_into(self.p.codec, &frame, &mut lin);
                let per_frame = (sample_rate / 50) as usize;
                if let Some(up) = self.up.as_mut() {
                    // A failure here is a bug in the buffer sizes; the frame is skipped.
                    if up.process(&lin, &mut self.resampled).is_err() {
                        self.resampled.clear();
                    }
                }
                let mut start = 0;
                while self.resampled.len() - start >= per_frame {
                    let mut b = Vec::with_capacity(per_frame * 2);
                    protocol::l16_bytes(&self.resampled[start..start + per_frame], &mut b);
                    self.out.push_back(Outgoing::Binary(b));
                    start += per_frame;
                }
                self.resampled.drain(..start);
            }
        }
    }

    /// An RFC 4733 telephone-event packet from the call. Each key press is sent once, when its
    /// end is first seen (the end packet is repeated, same RTP timestamp). L16 has no DTMF message.
    pub fn handle_telephone_event(
        &mut self,
        track: Track,
        payload: &[u8],
        rtp_timestamp: u32,
    ) -> Result<(), codec::CodecError> {
        let ev = TelephoneEvent::parse(payload)?;
        let (Some(digit), true) = (ev.digit(), ev.end) else {
            return Ok(());
        };
        let last = &mut self.last_dtmf[track.index()];
        if *last == Some(rtp_timestamp) {
            return Ok(());
        }
        *last = Some(rtp_timestamp);
        if self.started && self.p.protocol == Protocol::Twilio {
            let seq = self.next_seq();
            self.out.push_back(Outgoing::Text(protocol::twilio_dtmf(
                seq,
                &self.ids.stream_sid,
                track,
                digit,
            )));
        }
        Ok(())
    }

    /// A text frame from the backend. A malformed one is counted and refused (the error names
    /// the problem, never the content).
    pub fn handle_text(&mut self, text: &str) -> Result<(), ProtocolError> {
        let msg = match self.p.protocol {
            Protocol::Twilio => protocol::parse_twilio(text),
            Protocol::L16 { .. } => protocol::parse_l16_text(text),
        };
        match msg {
            Ok(m) => {
                self.apply(m);
                Ok(())
            }
            Err(e) => {
                self.malformed += 1;
                Err(e)
            }
        }
    }

    /// A binary frame from the backend (L16 audio; an error in Twilio mode).
    pub fn handle_binary(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        match self.p.protocol {
            Protocol::Twilio => {
                self.malformed += 1;
                Err(ProtocolError::UnexpectedBinary)
            }
            Protocol::L16 { .. } => {
                self.apply(protocol::l16_audio(bytes));
                Ok(())
            }
        }
    }

    fn apply(&mut self, m: BackendMessage) {
        match m {
            BackendMessage::Audio(bytes) => self.play(bytes),
            BackendMessage::Mark(name) => {
                self.playout.push_mark(name);
            }
            BackendMessage::Clear => self.events.push_back(SessionEvent::Clear),
            BackendMessage::Disconnect => {
                // The backend hangs up (L16 `disconnect`): the stream ends, the connection is
                // closed, and an agent call ends.
                self.stop_stream();
                self.events.push_back(SessionEvent::Close);
                self.end(true);
            }
            BackendMessage::Ignored => {}
        }
    }

    fn play(&mut self, mut bytes: Vec<u8>) {
        match self.p.protocol {
            Protocol::Twilio => {
                codec::transcode_in_place(G711::Pcmu, self.p.codec, &mut bytes);
                self.playout.push_audio(&bytes);
            }
            Protocol::L16 { .. } => {
                let mut lin: Vec<i16> = Vec::with_capacity(bytes.len() / 2 + 1);
                let mut it = bytes.iter().copied();
                if let Some(lo) = self.carry.take() {
                    if let Some(hi) = it.next() {
                        lin.push(i16::from_le_bytes([lo, hi]));
                    } else {
                        self.carry = Some(lo);
                    }
                }
                loop {
                    match (it.next(), it.next()) {
                        (Some(lo), Some(hi)) => lin.push(i16::from_le_bytes([lo, hi])),
                        (Some(lo), None) => {
                            self.carry = Some(lo);
                            break;
                        }
                        _ => break,
                    }
                }
                self.pcm.clear();
                if let Some(down) = self.down.as_mut() {
                    if down.process(&lin, &mut self.pcm).is_err() {
                        self.pcm.clear();
                    }
                }
                let codec = self.p.codec;
                let coded: Vec<u8> = self.pcm.iter().map(|&s| codec.encode(s)).collect();
                self.playout.push_audio(&coded);
            }
        }
    }

    /// After [`SessionEvent::Clear`], once the worker's queue is drained: flushes the playout
    /// queue and echoes every pending mark.
    pub fn handle_cleared(&mut self) {
        let mut echoes = Vec::new();
        self.playout.clear(&mut echoes);
        self.echo(&echoes);
        if let Protocol::L16 { .. } = self.p.protocol {
            self.out.push_back(Outgoing::Text(protocol::l16_cleared()));
        }
    }

    /// The media worker reached mark `seq`; echoes it and every earlier mark.
    pub fn handle_marks_played(&mut self, seq: u64) {
        let mut echoes = Vec::new();
        self.playout.marks_played(seq, &mut echoes);
        self.echo(&echoes);
    }

    fn echo(&mut self, echoes: &[MarkEcho]) {
        for m in echoes {
            let text = match self.p.protocol {
                Protocol::Twilio => {
                    let seq = self.next_seq();
                    protocol::twilio_mark(seq, &self.ids.stream_sid, &m.name)
                }
                Protocol::L16 { .. } => protocol::l16_mark(&m.name, m.cleared),
            };
            self.out.push_back(Outgoing::Text(text));
        }
    }

    /// The next playout item for the media worker's queue.
    pub fn pop_playout(&mut self) -> Option<PlayItem> {
        self.playout.pop()
    }

    /// Pads and queues a trailing partial frame (the backend has paused).
    pub fn flush_playout(&mut self) {
        self.playout.flush_partial();
    }

    /// Read access to the playout queue (sizes and counters).
    pub fn playout(&self) -> &Playout {
        &self.playout
    }

    /// Backend messages that could not be parsed, since the start.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests;
