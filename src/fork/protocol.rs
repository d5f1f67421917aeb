//! The fork wire protocols as pure functions: the JSON and binary messages srtp-edge sends to an
//! AI backend and the parsing of what the backend sends back (DESIGN.md, "Fork wire protocol").
//!
//! Two dialects: `twilio` (Twilio Media Streams, so Pipecat, Vocode, Ultravox and other existing
//! consumers work unchanged) and `l16` (a JSON preamble then raw 16-bit little-endian PCM, as
//! jambonz- and Vonage-style consumers expect). Nothing here does IO; backend input is hostile and
//! every parse returns a typed error instead of panicking.

use crate::rand::Random;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Longest mark name accepted from a backend (longer ones are refused, not truncated).
pub const MAX_MARK_NAME: usize = 256;

/// Which party's audio a message carries, from the call's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// Audio from the caller (leg A) towards srtp-edge.
    Inbound,
    /// Audio from the called party (leg B), or what the agent plays into the call.
    Outbound,
}

impl Track {
    /// The Twilio track name.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
        }
    }

    /// Index 0 (inbound) or 1 (outbound), for per-track state arrays.
    pub fn index(self) -> usize {
        match self {
            Track::Inbound => 0,
            Track::Outbound => 1,
        }
    }
}

/// Which wire dialect a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Twilio Media Streams: JSON text frames, base64 μ-law 8 kHz.
    Twilio,
    /// JSON preamble, then binary 16-bit little-endian mono PCM at this rate (8/16/24 kHz).
    L16 {
        /// Sample rate of the binary frames in both directions.
        sample_rate: u32,
    },
}

/// The identifiers of one Twilio-style stream: `MZ`/`CA`/`AC` followed by 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIds {
    /// One per `start` (a reconnect starts a new stream).
    pub stream_sid: String,
    /// One per call.
    pub call_sid: String,
    /// One per backend.
    pub account_sid: String,
}

/// A Twilio-style identifier: the prefix and 32 random lowercase hex digits from `rng` (ids
/// are not secrets; a failing source falls back to a process-unique counter).
pub fn random_sid(rng: &mut dyn Random, prefix: &str) -> String {
    format!("{prefix}{}", rng.hex(16))
}

/// What the backend is told about the call (the `start` customParameters / the L16 preamble).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallMeta {
    /// Caller (already redacted by the caller of this module unless configured otherwise).
    pub from: String,
    /// Called party (same redaction rule).
    pub to: String,
    /// The SIP Call-ID of the leg the fork belongs to.
    pub sip_call_id: String,
    /// `inbound` or `outbound`, from srtp-edge's point of view.
    pub direction: String,
    /// The route (or ng caller) that asked for the fork.
    pub route: String,
}

/// A message that could not be understood. The connection goes on; the message is counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed message: {0}")]
    Json(String),
    /// A `media` payload that is not base64.
    #[error("media payload is not base64")]
    Base64,
    /// A mark without a name, or with a name longer than [`MAX_MARK_NAME`].
    #[error("mark name missing or longer than {MAX_MARK_NAME} bytes")]
    MarkName,
    /// A binary frame sent to a Twilio-mode stream (Twilio is text-only).
    #[error("binary frame in twilio mode")]
    UnexpectedBinary,
}

/// What a backend asked for, after parsing one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    /// Audio to play into the call: μ-law 8 kHz bytes (twilio) or little-endian L16 bytes (l16).
    Audio(Vec<u8>),
    /// Echo this mark once everything queued before it has been played.
    Mark(String),
    /// Flush the playout queue and echo pending marks.
    Clear,
    /// End the stream (l16 `disconnect`, twilio `stop` from the backend): an agent-mode call is
    /// hung up; a fork ends and its call goes on.
    Disconnect,
    /// A well-formed message this relay has no use for (e.g. a Twilio `dtmf` echo).
    Ignored,
}

// ---- Twilio, relay -> backend ---------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwConnected<'a> {
    event: &'a str,
    protocol: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
struct MediaFormat {
    encoding: &'static str,
    #[serde(rename = "sampleRate")]
    sample_rate: u32,
    channels: u32,
}

#[derive(Serialize)]
struct CustomParameters<'a> {
    from: &'a str,
    to: &'a str,
    sip_call_id: &'a str,
    direction: &'a str,
    route: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwStartBody<'a> {
    account_sid: &'a str,
    stream_sid: &'a str,
    call_sid: &'a str,
    tracks: Vec<&'static str>,
    custom_parameters: CustomParameters<'a>,
    media_format: MediaFormat,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwStart<'a> {
    event: &'a str,
    sequence_number: String,
    start: TwStartBody<'a>,
    stream_sid: &'a str,
}

#[derive(Serialize)]
struct TwMediaBody<'a> {
    track: &'a str,
    chunk: String,
    timestamp: String,
    payload: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwMedia<'a> {
    event: &'a str,
    sequence_number: String,
    media: TwMediaBody<'a>,
    stream_sid: &'a str,
}

#[derive(Serialize)]
struct TwDtmfBody<'a> {
    track: &'a str,
    digit: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwDtmf<'a> {
    event: &'a str,
    stream_sid: &'a str,
    sequence_number: String,
    dtmf: TwDtmfBody<'a>,
}

#[derive(Serialize, Deserialize)]
struct MarkBody {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwMark<'a> {
    event: &'a str,
    sequence_number: String,
    stream_sid: &'a str,
    mark: MarkBody,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwStopBody<'a> {
    account_sid: &'a str,
    call_sid: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwStop<'a> {
    event: &'a str,
    sequence_number: String,
    stream_sid: &'a str,
    stop: TwStopBody<'a>,
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs of strings and integers cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// `connected`: the first message of every Twilio stream.
pub fn twilio_connected() -> String {
    to_json(&TwConnected {
        event: "connected",
        protocol: "Call",
        version: "1.0.0",
    })
}

/// `start`: stream metadata, the tracks sent, and the media format (μ-law, 8000 Hz, mono).
pub fn twilio_start(seq: u64, ids: &StreamIds, tracks: &[Track], meta: &CallMeta) -> String {
    to_json(&TwStart {
        event: "start",
        sequence_number: seq.to_string(),
        start: TwStartBody {
            account_sid: &ids.account_sid,
            stream_sid: &ids.stream_sid,
            call_sid: &ids.call_sid,
            tracks: tracks.iter().map(|t| t.as_str()).collect(),
            custom_parameters: CustomParameters {
                from: &meta.from,
                to: &meta.to,
                sip_call_id: &meta.sip_call_id,
                direction: &meta.direction,
                route: &meta.route,
            },
            media_format: MediaFormat {
                encoding: "audio/x-mulaw",
                sample_rate: 8000,
                channels: 1,
            },
        },
        stream_sid: &ids.stream_sid,
    })
}

/// `media`: one 20 ms chunk of μ-law; `timestamp` is milliseconds since the stream started.
pub fn twilio_media(
    seq: u64,
    stream_sid: &str,
    track: Track,
    chunk: u64,
    timestamp_ms: u64,
    ulaw: &[u8],
) -> String {
    to_json(&TwMedia {
        event: "media",
        sequence_number: seq.to_string(),
        media: TwMediaBody {
            track: track.as_str(),
            chunk: chunk.to_string(),
            timestamp: timestamp_ms.to_string(),
            payload: base64::engine::general_purpose::STANDARD.encode(ulaw),
        },
        stream_sid,
    })
}

/// `dtmf`: a key pressed on a track (Twilio names the track `inbound_track`).
pub fn twilio_dtmf(seq: u64, stream_sid: &str, track: Track, digit: char) -> String {
    let track = match track {
        Track::Inbound => "inbound_track",
        Track::Outbound => "outbound_track",
    };
    to_json(&TwDtmf {
        event: "dtmf",
        stream_sid,
        sequence_number: seq.to_string(),
        dtmf: TwDtmfBody {
            track,
            digit: digit.to_string(),
        },
    })
}

/// `mark`: the echo of a backend mark whose audio has been played (or cleared).
pub fn twilio_mark(seq: u64, stream_sid: &str, name: &str) -> String {
    to_json(&TwMark {
        event: "mark",
        sequence_number: seq.to_string(),
        stream_sid,
        mark: MarkBody { name: name.into() },
    })
}

/// `stop`: the stream ends (the call ended or the fork was stopped).
pub fn twilio_stop(seq: u64, ids: &StreamIds) -> String {
    to_json(&TwStop {
        event: "stop",
        sequence_number: seq.to_string(),
        stream_sid: &ids.stream_sid,
        stop: TwStopBody {
            account_sid: &ids.account_sid,
            call_sid: &ids.call_sid,
        },
    })
}

// ---- Twilio, backend -> relay ---------------------------------------------------------------

#[derive(Deserialize)]
struct TwInMedia {
    payload: String,
}

#[derive(Deserialize)]
struct TwIn {
    event: String,
    #[serde(default)]
    media: Option<TwInMedia>,
    #[serde(default)]
    mark: Option<MarkBody>,
}

fn mark_name(m: Option<MarkBody>) -> Result<String, ProtocolError> {
    match m {
        Some(m) if !m.name.is_empty() && m.name.len() <= MAX_MARK_NAME => Ok(m.name),
        _ => Err(ProtocolError::MarkName),
    }
}

/// Parses one text frame from a Twilio-mode backend.
pub fn parse_twilio(text: &str) -> Result<BackendMessage, ProtocolError> {
    let m: TwIn = serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))?;
    match m.event.as_str() {
        "media" => {
            let p = m
                .media
                .ok_or_else(|| ProtocolError::Json("media event without media".into()))?;
            base64::engine::general_purpose::STANDARD
                .decode(p.payload.as_bytes())
                .map(BackendMessage::Audio)
                .map_err(|_| ProtocolError::Base64)
        }
        "mark" => mark_name(m.mark).map(BackendMessage::Mark),
        "clear" => Ok(BackendMessage::Clear),
        // Not in Twilio's backend-to-Twilio set; backends that end a stream with the same
        // `stop` Twilio sends them are taken at their word.
        "stop" => Ok(BackendMessage::Disconnect),
        _ => Ok(BackendMessage::Ignored),
    }
}

// ---- L16 ------------------------------------------------------------------------------------

#[derive(Serialize)]
struct L16Preamble<'a> {
    event: &'a str,
    #[serde(rename = "content-type")]
    content_type: String,
    #[serde(rename = "sampleRate")]
    sample_rate: u32,
    #[serde(rename = "streamId")]
    stream_id: &'a str,
    #[serde(rename = "callId")]
    call_id: &'a str,
    from: &'a str,
    to: &'a str,
    sip_call_id: &'a str,
    direction: &'a str,
    route: &'a str,
}

/// The L16 preamble: `websocket:connected`, the content type and rate, and the call metadata.
pub fn l16_preamble(sample_rate: u32, ids: &StreamIds, meta: &CallMeta) -> String {
    to_json(&L16Preamble {
        event: "websocket:connected",
        content_type: format!("audio/l16;rate={sample_rate}"),
        sample_rate,
        stream_id: &ids.stream_sid,
        call_id: &ids.call_sid,
        from: &meta.from,
        to: &meta.to,
        sip_call_id: &meta.sip_call_id,
        direction: &meta.direction,
        route: &meta.route,
    })
}

/// The answer to an L16 `clear` / `killAudio`.
pub fn l16_cleared() -> String {
    r#"{"event":"websocket:cleared"}"#.to_string()
}

#[derive(Serialize)]
struct L16MarkEchoData<'a> {
    name: &'a str,
    event: &'a str,
}

#[derive(Serialize)]
struct L16MarkEcho<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: L16MarkEchoData<'a>,
}

/// The echo of an L16 mark: `event` is `playout` once played, `cleared` when flushed.
pub fn l16_mark(name: &str, cleared: bool) -> String {
    to_json(&L16MarkEcho {
        kind: "mark",
        data: L16MarkEchoData {
            name,
            event: if cleared { "cleared" } else { "playout" },
        },
    })
}

#[derive(Deserialize)]
struct L16In {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    data: Option<MarkBody>,
}

/// Parses one text frame from an L16-mode backend (binary frames are audio, see [`l16_audio`]).
pub fn parse_l16_text(text: &str) -> Result<BackendMessage, ProtocolError> {
    let m: L16In = serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let verb = m.action.as_deref().or(m.kind.as_deref()).unwrap_or("");
    match verb {
        "clear" | "killAudio" => Ok(BackendMessage::Clear),
        "mark" => mark_name(m.data).map(BackendMessage::Mark),
        "disconnect" => Ok(BackendMessage::Disconnect),
        _ => Ok(BackendMessage::Ignored),
    }
}

/// A binary L16 frame from the backend is audio as it stands (little-endian samples).
pub fn l16_audio(bytes: &[u8]) -> BackendMessage {
    BackendMessage::Audio(bytes.to_vec())
}

/// Little-endian bytes of 16-bit samples, the L16 wire format.
pub fn l16_bytes(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ids() -> StreamIds {
        StreamIds {
            stream_sid: format!("MZ{}", "a".repeat(32)),
            call_sid: format!("CA{}", "b".repeat(32)),
            account_sid: format!("AC{}", "c".repeat(32)),
        }
    }

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn sids_have_the_twilio_shape() {
        let s = random_sid(&mut crate::rand::OsRandom, "MZ");
        assert_eq!(s.len(), 34);
        assert!(s.starts_with("MZ"));
        assert!(s[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let mut r = crate::rand::SeededRandom::new(1);
        assert_ne!(random_sid(&mut r, "MZ"), random_sid(&mut r, "MZ"));
    }

    #[test]
    fn twilio_outgoing_messages() {
        let i = ids();
        let mz = i.stream_sid.clone();
        assert_eq!(
            v(&twilio_connected()),
            json!({"event":"connected","protocol":"Call","version":"1.0.0"})
        );
        let meta = CallMeta {
            from: "***0123".into(),
            to: "***4567".into(),
            sip_call_id: "abc@host".into(),
            direction: "inbound".into(),
            route: "ai".into(),
        };
        assert_eq!(
            v(&twilio_start(
                1,
                &i,
                &[Track::Inbound, Track::Outbound],
                &meta
            )),
            json!({"event":"start","sequenceNumber":"1","streamSid":mz,"start":{
                "accountSid":i.account_sid,"streamSid":mz,"callSid":i.call_sid,
                "tracks":["inbound","outbound"],
                "customParameters":{"from":"***0123","to":"***4567","sip_call_id":"abc@host",
                                    "direction":"inbound","route":"ai"},
                "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}})
        );
        assert_eq!(
            v(&twilio_media(
                2,
                &mz,
                Track::Outbound,
                3,
                40,
                &[0xFF, 0x7F, 0x00]
            )),
            json!({"event":"media","sequenceNumber":"2","streamSid":mz,
                   "media":{"track":"outbound","chunk":"3","timestamp":"40","payload":"/38A"}})
        );
        assert_eq!(
            v(&twilio_dtmf(4, &mz, Track::Inbound, '#')),
            json!({"event":"dtmf","sequenceNumber":"4","streamSid":mz,
                   "dtmf":{"track":"inbound_track","digit":"#"}})
        );
        assert_eq!(
            v(&twilio_mark(5, &mz, "m1")),
            json!({"event":"mark","sequenceNumber":"5","streamSid":mz,"mark":{"name":"m1"}})
        );
        assert_eq!(
            v(&twilio_stop(6, &i)),
            json!({"event":"stop","sequenceNumber":"6","streamSid":mz,
                   "stop":{"accountSid":i.account_sid,"callSid":i.call_sid}})
        );
    }

    #[test]
    fn twilio_incoming_messages() {
        assert_eq!(
            parse_twilio(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/38A"}}"#),
            Ok(BackendMessage::Audio(vec![0xFF, 0x7F, 0x00]))
        );
        assert_eq!(
            parse_twilio(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"x"}}"#),
            Ok(BackendMessage::Mark("x".into()))
        );
        assert_eq!(
            parse_twilio(r#"{"event":"clear","streamSid":"MZ1"}"#),
            Ok(BackendMessage::Clear)
        );
        assert_eq!(
            parse_twilio(r#"{"event":"stop","streamSid":"MZ1"}"#),
            Ok(BackendMessage::Disconnect)
        );
        assert_eq!(
            parse_twilio(r#"{"event":"whatever"}"#),
            Ok(BackendMessage::Ignored)
        );
    }

    #[test]
    fn twilio_malformed_input_is_an_error() {
        for bad in [
            "",
            "null",
            "[]",
            "{",
            r#"{"event":3}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{"payload":"***"}}"#,
            r#"{"event":"media","media":{"payload":7}}"#,
            r#"{"event":"mark"}"#,
            r#"{"event":"mark","mark":{"name":""}}"#,
        ] {
            assert!(parse_twilio(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!(
            r#"{{"event":"mark","mark":{{"name":"{}"}}}}"#,
            "x".repeat(MAX_MARK_NAME + 1)
        );
        assert_eq!(parse_twilio(&long), Err(ProtocolError::MarkName));
    }

    #[test]
    fn l16_messages() {
        let i = ids();
        let meta = CallMeta {
            route: "r".into(),
            ..CallMeta::default()
        };
        let p = v(&l16_preamble(16000, &i, &meta));
        assert_eq!(p["event"], "websocket:connected");
        assert_eq!(p["content-type"], "audio/l16;rate=16000");
        assert_eq!(p["sampleRate"], 16000);
        assert_eq!(p["route"], "r");
        assert_eq!(p["callId"], i.call_sid.as_str());
        assert_eq!(v(&l16_cleared()), json!({"event":"websocket:cleared"}));
        assert_eq!(
            v(&l16_mark("a", false)),
            json!({"type":"mark","data":{"name":"a","event":"playout"}})
        );
        assert_eq!(
            v(&l16_mark("a", true)),
            json!({"type":"mark","data":{"name":"a","event":"cleared"}})
        );
        assert_eq!(
            parse_l16_text(r#"{"action":"clear"}"#),
            Ok(BackendMessage::Clear)
        );
        assert_eq!(
            parse_l16_text(r#"{"type":"killAudio"}"#),
            Ok(BackendMessage::Clear)
        );
        assert_eq!(
            parse_l16_text(r#"{"type":"mark","data":{"name":"n"}}"#),
            Ok(BackendMessage::Mark("n".into()))
        );
        assert_eq!(
            parse_l16_text(r#"{"type":"disconnect"}"#),
            Ok(BackendMessage::Disconnect)
        );
        assert_eq!(
            parse_l16_text(r#"{"type":"x"}"#),
            Ok(BackendMessage::Ignored)
        );
        assert!(parse_l16_text(r#"{"type":"mark"}"#).is_err());
        assert!(parse_l16_text("nope").is_err());
        let mut b = Vec::new();
        l16_bytes(&[1, -2], &mut b);
        assert_eq!(b, vec![1, 0, 0xFE, 0xFF]);
    }
}
