//! One fork of one call as a sans-IO state machine: stream ids, sequence numbers, per-track
//! chunk counters and timestamps, 20 ms re-framing, DTMF de-duplication, the L16 resamplers and
//! the playout queue. The WSS task feeds it media and backend messages and sends what it emits;
//! it never touches a socket or a clock, so its behaviour is tested message by message.

use super::codec::{self, TelephoneEvent, G711};
use super::playout::{MarkEcho, PlayItem, Playout, FRAME_SAMPLES};
use super::protocol::{self, BackendMessage, CallMeta, Protocol, ProtocolError, StreamIds, Track};
use super::resample::{ResampleError, Resampler};

/// A message for the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text (JSON) frame.
    Text(String),
    /// A binary frame (L16 audio).
    Binary(Vec<u8>),
}

/// What the IO shell must do after a backend message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond sending what was emitted.
    None,
    /// Flush the playout: collect the worker's mark reports, drain the worker's queue, then
    /// call [`ForkSession::clear`].
    Clear,
    /// The backend asked to hang up (L16 `disconnect`).
    Hangup,
}

/// Everything that defines a fork session; fixed for the life of the call.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// Wire dialect.
    pub protocol: Protocol,
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

/// The state of one fork (see the module documentation).
#[derive(Debug)]
pub struct ForkSession {
    p: SessionParams,
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
}

impl ForkSession {
    /// A session that has not started a stream yet.
    pub fn new(p: SessionParams) -> Result<ForkSession, ResampleError> {
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
        })
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Starts a stream (on connect, and again on every reconnect with a new stream id):
    /// `connected` + `start`, or the L16 preamble. Audio still queued for playout belongs to
    /// the previous stream and is dropped with its marks.
    pub fn start(&mut self, out: &mut Vec<Outgoing>) {
        self.ids.stream_sid = protocol::random_sid("MZ");
        self.seq = 0;
        self.tracks = [TrackState::new(); 2];
        self.carry = None;
        let mut discarded = Vec::new();
        self.playout.clear(&mut discarded);
        match self.p.protocol {
            Protocol::Twilio => {
                out.push(Outgoing::Text(protocol::twilio_connected()));
                let seq = self.next_seq();
                out.push(Outgoing::Text(protocol::twilio_start(
                    seq,
                    &self.ids,
                    &self.p.tracks,
                    &self.p.meta,
                )));
            }
            Protocol::L16 { sample_rate } => {
                out.push(Outgoing::Text(protocol::l16_preamble(
                    sample_rate,
                    &self.ids,
                    &self.p.meta,
                )));
            }
        }
        self.started = true;
    }

    /// The current stream id (`MZ…`), empty before the first start.
    pub fn stream_sid(&self) -> &str {
        &self.ids.stream_sid
    }

    /// Audio from the call in its codec; emits one message per complete 20 ms chunk.
    pub fn audio(&mut self, track: Track, payload: &[u8], out: &mut Vec<Outgoing>) {
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
                self.emit_frame(track, frame, chunk, out);
            }
        }
    }

    fn emit_frame(
        &mut self,
        track: Track,
        mut frame: [u8; FRAME_SAMPLES],
        chunk: u64,
        out: &mut Vec<Outgoing>,
    ) {
        match self.p.protocol {
            Protocol::Twilio => {
                codec::transcode_in_place(self.p.codec, G711::Pcmu, &mut frame);
                let seq = self.next_seq();
                out.push(Outgoing::Text(protocol::twilio_media(
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
                    out.push(Outgoing::Binary(b));
                    start += per_frame;
                }
                self.resampled.drain(..start);
            }
        }
    }

    /// An RFC 4733 telephone-event packet from the call. Each key press is sent once, when its
    /// end is first seen (the end packet is repeated, same RTP timestamp). L16 has no DTMF message.
    pub fn telephone_event(
        &mut self,
        track: Track,
        payload: &[u8],
        rtp_timestamp: u32,
        out: &mut Vec<Outgoing>,
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
            out.push(Outgoing::Text(protocol::twilio_dtmf(
                seq,
                &self.ids.stream_sid,
                track,
                digit,
            )));
        }
        Ok(())
    }

    /// The call or the fork ends: Twilio `stop` (L16 just closes).
    pub fn stop(&mut self, out: &mut Vec<Outgoing>) {
        if self.started && self.p.protocol == Protocol::Twilio {
            let seq = self.next_seq();
            out.push(Outgoing::Text(protocol::twilio_stop(seq, &self.ids)));
        }
        self.started = false;
    }

    /// A text frame from the backend.
    pub fn on_text(
        &mut self,
        text: &str,
        out: &mut Vec<Outgoing>,
    ) -> Result<Action, ProtocolError> {
        let msg = match self.p.protocol {
            Protocol::Twilio => protocol::parse_twilio(text),
            Protocol::L16 { .. } => protocol::parse_l16_text(text),
        };
        match msg {
            Ok(m) => Ok(self.apply(m, out)),
            Err(e) => {
                self.malformed += 1;
                Err(e)
            }
        }
    }

    /// A binary frame from the backend (L16 audio; an error in Twilio mode).
    pub fn on_binary(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<Outgoing>,
    ) -> Result<Action, ProtocolError> {
        match self.p.protocol {
            Protocol::Twilio => {
                self.malformed += 1;
                Err(ProtocolError::UnexpectedBinary)
            }
            Protocol::L16 { .. } => Ok(self.apply(protocol::l16_audio(bytes), out)),
        }
    }

    fn apply(&mut self, m: BackendMessage, out: &mut Vec<Outgoing>) -> Action {
        match m {
            BackendMessage::Audio(bytes) => {
                self.play(bytes);
                Action::None
            }
            BackendMessage::Mark(name) => {
                self.playout.push_mark(name);
                let _ = out;
                Action::None
            }
            BackendMessage::Clear => Action::Clear,
            BackendMessage::Disconnect => Action::Hangup,
            BackendMessage::Ignored => Action::None,
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

    /// Flushes the playout queue and echoes every pending mark (after `Action::Clear`).
    pub fn clear(&mut self, out: &mut Vec<Outgoing>) {
        let mut echoes = Vec::new();
        self.playout.clear(&mut echoes);
        self.echo(&echoes, out);
        if let Protocol::L16 { .. } = self.p.protocol {
            out.push(Outgoing::Text(protocol::l16_cleared()));
        }
    }

    /// The media worker reached mark `seq`; echoes it and every earlier mark.
    pub fn marks_played(&mut self, seq: u64, out: &mut Vec<Outgoing>) {
        let mut echoes = Vec::new();
        self.playout.marks_played(seq, &mut echoes);
        self.echo(&echoes, out);
    }

    fn echo(&mut self, echoes: &[MarkEcho], out: &mut Vec<Outgoing>) {
        for m in echoes {
            let text = match self.p.protocol {
                Protocol::Twilio => {
                    let seq = self.next_seq();
                    protocol::twilio_mark(seq, &self.ids.stream_sid, &m.name)
                }
                Protocol::L16 { .. } => protocol::l16_mark(&m.name, m.cleared),
            };
            out.push(Outgoing::Text(text));
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
mod tests {
    use super::*;
    use serde_json::Value;

    fn params(protocol: Protocol, codec: G711) -> SessionParams {
        SessionParams {
            protocol,
            codec,
            tracks: vec![Track::Inbound, Track::Outbound],
            meta: CallMeta::default(),
            call_sid: protocol::random_sid("CA"),
            account_sid: protocol::random_sid("AC"),
            max_playout_frames: 3000,
        }
    }

    fn json(o: &Outgoing) -> Value {
        match o {
            Outgoing::Text(t) => serde_json::from_str(t).unwrap(),
            Outgoing::Binary(_) => panic!("binary where text expected"),
        }
    }

    #[test]
    fn twilio_sequence_numbers_chunks_and_timestamps() {
        let mut s = ForkSession::new(params(Protocol::Twilio, G711::Pcma)).unwrap();
        let mut out = Vec::new();
        s.audio(Track::Inbound, &[0xD5; 160], &mut out);
        assert!(out.is_empty(), "nothing before start");
        s.start(&mut out);
        assert_eq!(json(&out[0])["event"], "connected");
        assert_eq!(json(&out[1])["event"], "start");
        assert_eq!(json(&out[1])["sequenceNumber"], "1");
        out.clear();
        // 30 ms packets are re-framed into 20 ms chunks per track.
        s.audio(Track::Inbound, &[0xD5; 240], &mut out);
        s.audio(Track::Outbound, &[0xD5; 160], &mut out);
        s.audio(Track::Inbound, &[0xD5; 240], &mut out);
        let got: Vec<(String, String, String, String)> = out
            .iter()
            .map(json)
            .map(|v| {
                (
                    v["sequenceNumber"].as_str().unwrap().to_string(),
                    v["media"]["track"].as_str().unwrap().to_string(),
                    v["media"]["chunk"].as_str().unwrap().to_string(),
                    v["media"]["timestamp"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = [
            ("2", "inbound", "1", "0"),
            ("3", "outbound", "1", "0"),
            ("4", "inbound", "2", "20"),
            ("5", "inbound", "3", "40"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str(), g.3.as_str()), w);
        }
        // A-law silence went out as μ-law silence-ish (transcoded, not passed through).
        let p = json(&out[0])["media"]["payload"]
            .as_str()
            .unwrap()
            .to_string();
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        assert_eq!(b.len(), 160);
        assert!(b
            .iter()
            .all(|&c| c == G711::Pcmu.encode(G711::Pcma.decode(0xD5))));
        out.clear();
        s.stop(&mut out);
        let stop = json(&out[0]);
        assert_eq!(stop["event"], "stop");
        assert_eq!(stop["sequenceNumber"], "6");
        assert_eq!(stop["streamSid"], s.stream_sid());
    }

    #[test]
    fn dtmf_is_sent_once_per_key_press() {
        let mut s = ForkSession::new(params(Protocol::Twilio, G711::Pcmu)).unwrap();
        let mut out = Vec::new();
        s.start(&mut out);
        out.clear();
        s.telephone_event(Track::Inbound, &[5, 0x0A, 0, 160], 1000, &mut out)
            .unwrap();
        for _ in 0..3 {
            s.telephone_event(Track::Inbound, &[5, 0x8A, 3, 32], 1000, &mut out)
                .unwrap();
        }
        s.telephone_event(Track::Inbound, &[11, 0x8A, 3, 32], 5000, &mut out)
            .unwrap();
        let digits: Vec<_> = out
            .iter()
            .map(|o| json(o)["dtmf"]["digit"].clone())
            .collect();
        assert_eq!(digits, vec!["5", "#"]);
        assert!(s
            .telephone_event(Track::Inbound, &[1, 2], 1, &mut out)
            .is_err());
    }

    #[test]
    fn twilio_playback_marks_and_clear() {
        let mut s = ForkSession::new(params(Protocol::Twilio, G711::Pcmu)).unwrap();
        let mut out = Vec::new();
        s.start(&mut out);
        out.clear();
        let media = r#"{"event":"media","streamSid":"x","media":{"payload":"#.to_string();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode([0x12u8; 400]);
        let a = s
            .on_text(&format!("{media}\"{b64}\"}}}}"), &mut out)
            .unwrap();
        assert_eq!(a, Action::None);
        s.on_text(r#"{"event":"mark","mark":{"name":"m1"}}"#, &mut out)
            .unwrap();
        assert!(out.is_empty(), "mark not echoed before its audio played");
        let mut frames = 0;
        while let Some(it) = s.pop_playout() {
            match it {
                PlayItem::Audio(f) => {
                    frames += 1;
                    assert_eq!(f[0], 0x12);
                }
                PlayItem::Mark(seq) => s.marks_played(seq, &mut out),
            }
        }
        assert_eq!(frames, 3, "400 bytes = 2 frames + a padded one");
        assert_eq!(json(&out[0])["mark"]["name"], "m1");
        out.clear();
        s.on_text(&format!("{media}\"{b64}\"}}}}"), &mut out)
            .unwrap();
        s.on_text(r#"{"event":"mark","mark":{"name":"m2"}}"#, &mut out)
            .unwrap();
        s.on_text(r#"{"event":"mark","mark":{"name":"m3"}}"#, &mut out)
            .unwrap();
        let a = s
            .on_text(r#"{"event":"clear","streamSid":"x"}"#, &mut out)
            .unwrap();
        assert_eq!(a, Action::Clear);
        s.clear(&mut out);
        let names: Vec<_> = out
            .iter()
            .map(|o| json(o)["mark"]["name"].clone())
            .collect();
        assert_eq!(names, vec!["m2", "m3"]);
        assert!(s.pop_playout().is_none());
        assert!(s.on_binary(&[1, 2], &mut out).is_err());
        assert!(s.on_text("{}", &mut out).is_err());
        assert_eq!(s.malformed(), 2);
    }

    #[test]
    fn l16_sends_the_preamble_and_resampled_binary_frames() {
        let mut p = params(Protocol::L16 { sample_rate: 16000 }, G711::Pcmu);
        p.tracks = vec![Track::Inbound];
        let mut s = ForkSession::new(p).unwrap();
        let mut out = Vec::new();
        s.start(&mut out);
        assert_eq!(json(&out[0])["content-type"], "audio/l16;rate=16000");
        out.clear();
        for _ in 0..10 {
            s.audio(Track::Inbound, &[0x80; 160], &mut out);
            s.audio(Track::Outbound, &[0x80; 160], &mut out);
        }
        assert_eq!(out.len(), 10, "one binary frame per 20 ms of inbound audio");
        for o in &out {
            match o {
                Outgoing::Binary(b) => assert_eq!(b.len(), 640),
                Outgoing::Text(t) => panic!("unexpected text {t}"),
            }
        }
        s.stop(&mut out);
        assert_eq!(out.len(), 10, "l16 has no stop message");
    }

    #[test]
    fn l16_playback_clear_and_disconnect() {
        let mut s =
            ForkSession::new(params(Protocol::L16 { sample_rate: 8000 }, G711::Pcma)).unwrap();
        let mut out = Vec::new();
        s.start(&mut out);
        out.clear();
        // 161 samples split across frames with an odd byte boundary.
        let mut bytes = Vec::new();
        protocol::l16_bytes(&[1000i16; 161], &mut bytes);
        s.on_binary(&bytes[..101], &mut out).unwrap();
        s.on_binary(&bytes[101..], &mut out).unwrap();
        assert_eq!(s.playout().queued_frames(), 1);
        match s.pop_playout() {
            Some(PlayItem::Audio(f)) => assert!(f.iter().all(|&c| c == G711::Pcma.encode(1000))),
            other => panic!("{other:?}"),
        }
        s.on_text(r#"{"type":"mark","data":{"name":"a"}}"#, &mut out)
            .unwrap();
        assert_eq!(
            s.on_text(r#"{"action":"clear"}"#, &mut out).unwrap(),
            Action::Clear
        );
        s.clear(&mut out);
        assert_eq!(json(&out[0])["data"]["name"], "a");
        assert_eq!(json(&out[0])["data"]["event"], "cleared");
        assert_eq!(json(&out[1])["event"], "websocket:cleared");
        assert_eq!(
            s.on_text(r#"{"type":"disconnect"}"#, &mut out).unwrap(),
            Action::Hangup
        );
    }

    #[test]
    fn a_restart_is_a_new_stream() {
        let mut s = ForkSession::new(params(Protocol::Twilio, G711::Pcmu)).unwrap();
        let mut out = Vec::new();
        s.start(&mut out);
        let first = s.stream_sid().to_string();
        s.audio(Track::Inbound, &[0xFF; 160], &mut out);
        out.clear();
        s.start(&mut out);
        assert_ne!(s.stream_sid(), first);
        assert_eq!(json(&out[1])["sequenceNumber"], "1");
        out.clear();
        s.audio(Track::Inbound, &[0xFF; 160], &mut out);
        assert_eq!(json(&out[0])["media"]["chunk"], "1");
    }

    #[test]
    fn hostile_backend_input_never_panics_and_stays_bounded() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for proto in [Protocol::Twilio, Protocol::L16 { sample_rate: 24000 }] {
            let mut p = params(proto, G711::Pcma);
            p.max_playout_frames = 100;
            let mut s = ForkSession::new(p).unwrap();
            let mut out = Vec::new();
            s.start(&mut out);
            let seeds = [
                r#"{"event":"media","media":{"payload":"AAAA"}}"#,
                r#"{"event":"mark","mark":{"name":"m"}}"#,
                r#"{"type":"mark","data":{"name":"m"}}"#,
                r#"{"event":"clear"}"#,
                r#"{"action":"clear"}"#,
            ];
            for i in 0..3000 {
                let len = (rnd() % 700) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                let _ = s.on_binary(&bytes, &mut out);
                let mut t = seeds[i % seeds.len()].as_bytes().to_vec();
                if i % 3 == 0 && !t.is_empty() {
                    let at = (rnd() as usize) % t.len();
                    t[at] = rnd() as u8;
                }
                if let Ok(text) = std::str::from_utf8(&t) {
                    if let Ok(Action::Clear) = s.on_text(text, &mut out) {
                        s.clear(&mut out);
                    }
                }
                out.clear();
            }
            assert!(s.playout().queued_frames() <= 100);
            assert!(s.playout().pending_marks() <= crate::fork::playout::MAX_PENDING_MARKS);
        }
    }
}
