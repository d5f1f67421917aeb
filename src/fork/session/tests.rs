//! The fork session message by message and timer by timer: stream messages, playout, marks,
//! clear, the connection's life (keepalive, backoff, hang-up) on a virtual clock.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::rand::SeededRandom;

fn params(protocol: Protocol, codec: G711) -> SessionParams {
    let mut r = SeededRandom::new(9);
    SessionParams {
        protocol,
        mode: ForkMode::Fork,
        codec,
        tracks: vec![Track::Inbound, Track::Outbound],
        meta: CallMeta::default(),
        call_sid: protocol::random_sid(&mut r, "CA"),
        account_sid: protocol::random_sid(&mut r, "AC"),
        max_playout_frames: 3000,
    }
}

fn session(p: SessionParams) -> ForkSession {
    ForkSession::new(p, Box::new(SeededRandom::new(1))).unwrap()
}

/// A session whose connection is up (its opening messages drained).
fn connected(p: SessionParams, now: Instant) -> (ForkSession, Vec<Outgoing>) {
    let mut s = session(p);
    assert_eq!(s.poll_event(), Some(SessionEvent::Connect));
    s.handle_connected(now);
    assert_eq!(s.poll_event(), Some(SessionEvent::Connected));
    assert_eq!(s.poll_event(), None);
    let opening = drain(&mut s);
    (s, opening)
}

fn drain(s: &mut ForkSession) -> Vec<Outgoing> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events(s: &mut ForkSession) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn json(o: &Outgoing) -> Value {
    match o {
        Outgoing::Text(t) => serde_json::from_str(t).unwrap(),
        other => panic!("{other:?} where text expected"),
    }
}

#[test]
fn twilio_sequence_numbers_chunks_and_timestamps() {
    let mut s = session(params(Protocol::Twilio, G711::Pcma));
    s.handle_audio(Track::Inbound, &[0xD5; 160]);
    assert!(s.poll_transmit().is_none(), "nothing before start");
    s.handle_connected(Instant::now());
    let out = drain(&mut s);
    assert_eq!(json(&out[0])["event"], "connected");
    assert_eq!(json(&out[1])["event"], "start");
    assert_eq!(json(&out[1])["sequenceNumber"], "1");
    // 30 ms packets are re-framed into 20 ms chunks per track.
    s.handle_audio(Track::Inbound, &[0xD5; 240]);
    s.handle_audio(Track::Outbound, &[0xD5; 160]);
    s.handle_audio(Track::Inbound, &[0xD5; 240]);
    let out = drain(&mut s);
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
    s.handle_stop();
    let out = drain(&mut s);
    let stop = json(&out[0]);
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["sequenceNumber"], "6");
    assert_eq!(stop["streamSid"], s.stream_sid());
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::Connect,
            SessionEvent::Connected,
            SessionEvent::Close,
            SessionEvent::Ended
        ]
    );
}

#[test]
fn dtmf_is_sent_once_per_key_press() {
    let (mut s, _) = connected(params(Protocol::Twilio, G711::Pcmu), Instant::now());
    s.handle_telephone_event(Track::Inbound, &[5, 0x0A, 0, 160], 1000)
        .unwrap();
    for _ in 0..3 {
        s.handle_telephone_event(Track::Inbound, &[5, 0x8A, 3, 32], 1000)
            .unwrap();
    }
    s.handle_telephone_event(Track::Inbound, &[11, 0x8A, 3, 32], 5000)
        .unwrap();
    let digits: Vec<_> = drain(&mut s)
        .iter()
        .map(|o| json(o)["dtmf"]["digit"].clone())
        .collect();
    assert_eq!(digits, vec!["5", "#"]);
    assert!(s
        .handle_telephone_event(Track::Inbound, &[1, 2], 1)
        .is_err());
}

#[test]
fn twilio_playback_marks_and_clear() {
    let (mut s, _) = connected(params(Protocol::Twilio, G711::Pcmu), Instant::now());
    let media = r#"{"event":"media","streamSid":"x","media":{"payload":"#.to_string();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode([0x12u8; 400]);
    s.handle_text(&format!("{media}\"{b64}\"}}}}")).unwrap();
    s.handle_text(r#"{"event":"mark","mark":{"name":"m1"}}"#)
        .unwrap();
    assert!(
        s.poll_transmit().is_none(),
        "mark not echoed before its audio played"
    );
    assert!(s.poll_event().is_none());
    let mut frames = 0;
    while let Some(it) = s.pop_playout() {
        match it {
            PlayItem::Audio(f) => {
                frames += 1;
                assert_eq!(f[0], 0x12);
            }
            PlayItem::Mark(seq) => s.handle_marks_played(seq),
        }
    }
    assert_eq!(frames, 3, "400 bytes = 2 frames + a padded one");
    assert_eq!(json(&drain(&mut s)[0])["mark"]["name"], "m1");
    s.handle_text(&format!("{media}\"{b64}\"}}}}")).unwrap();
    s.handle_text(r#"{"event":"mark","mark":{"name":"m2"}}"#)
        .unwrap();
    s.handle_text(r#"{"event":"mark","mark":{"name":"m3"}}"#)
        .unwrap();
    s.handle_text(r#"{"event":"clear","streamSid":"x"}"#)
        .unwrap();
    assert_eq!(events(&mut s), [SessionEvent::Clear]);
    s.handle_cleared();
    let names: Vec<_> = drain(&mut s)
        .iter()
        .map(|o| json(o)["mark"]["name"].clone())
        .collect();
    assert_eq!(names, vec!["m2", "m3"]);
    assert!(s.pop_playout().is_none());
    assert!(s.handle_binary(&[1, 2]).is_err());
    assert!(s.handle_text("{}").is_err());
    assert_eq!(s.malformed(), 2);
}

#[test]
fn l16_sends_the_preamble_and_resampled_binary_frames() {
    let mut p = params(Protocol::L16 { sample_rate: 16000 }, G711::Pcmu);
    p.tracks = vec![Track::Inbound];
    let (mut s, opening) = connected(p, Instant::now());
    assert_eq!(json(&opening[0])["content-type"], "audio/l16;rate=16000");
    for _ in 0..10 {
        s.handle_audio(Track::Inbound, &[0x80; 160]);
        s.handle_audio(Track::Outbound, &[0x80; 160]);
    }
    let out = drain(&mut s);
    assert_eq!(out.len(), 10, "one binary frame per 20 ms of inbound audio");
    for o in &out {
        match o {
            Outgoing::Binary(b) => assert_eq!(b.len(), 640),
            other => panic!("unexpected {other:?}"),
        }
    }
    s.handle_stop();
    assert!(s.poll_transmit().is_none(), "l16 has no stop message");
}

#[test]
fn l16_playback_clear_and_disconnect() {
    let mut p = params(Protocol::L16 { sample_rate: 8000 }, G711::Pcma);
    p.mode = ForkMode::Agent;
    let (mut s, _) = connected(p, Instant::now());
    // 161 samples split across frames with an odd byte boundary.
    let mut bytes = Vec::new();
    protocol::l16_bytes(&[1000i16; 161], &mut bytes);
    s.handle_binary(&bytes[..101]).unwrap();
    s.handle_binary(&bytes[101..]).unwrap();
    assert_eq!(s.playout().queued_frames(), 1);
    match s.pop_playout() {
        Some(PlayItem::Audio(f)) => assert!(f.iter().all(|&c| c == G711::Pcma.encode(1000))),
        other => panic!("{other:?}"),
    }
    s.handle_text(r#"{"type":"mark","data":{"name":"a"}}"#)
        .unwrap();
    s.handle_text(r#"{"action":"clear"}"#).unwrap();
    assert_eq!(events(&mut s), [SessionEvent::Clear]);
    s.handle_cleared();
    let out = drain(&mut s);
    assert_eq!(json(&out[0])["data"]["name"], "a");
    assert_eq!(json(&out[0])["data"]["event"], "cleared");
    assert_eq!(json(&out[1])["event"], "websocket:cleared");
    s.handle_text(r#"{"type":"disconnect"}"#).unwrap();
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::Close,
            SessionEvent::Hangup,
            SessionEvent::Ended
        ]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_reconnection_is_a_new_stream() {
    let t0 = Instant::now();
    let (mut s, _) = connected(params(Protocol::Twilio, G711::Pcmu), t0);
    let first = s.stream_sid().to_string();
    s.handle_audio(Track::Inbound, &[0xFF; 160]);
    drain(&mut s);
    s.handle_lost(t0);
    assert_eq!(events(&mut s), [SessionEvent::Reconnecting]);
    s.handle_audio(Track::Inbound, &[0xFF; 160]);
    assert!(s.poll_transmit().is_none(), "no audio while disconnected");
    let at = s.poll_timeout().unwrap();
    s.handle_timeout(at);
    assert_eq!(events(&mut s), [SessionEvent::Connect]);
    s.handle_connected(at);
    assert_ne!(s.stream_sid(), first);
    let out = drain(&mut s);
    assert_eq!(json(&out[1])["sequenceNumber"], "1");
    s.handle_audio(Track::Inbound, &[0xFF; 160]);
    assert_eq!(json(&drain(&mut s)[0])["media"]["chunk"], "1");
}

#[test]
fn stream_ids_replay_from_the_seed() {
    let t0 = Instant::now();
    let (a, _) = connected(params(Protocol::Twilio, G711::Pcmu), t0);
    let (b, _) = connected(params(Protocol::Twilio, G711::Pcmu), t0);
    assert_eq!(a.stream_sid(), b.stream_sid());
    assert_eq!(a.stream_sid().len(), 34);
}

#[test]
fn keepalive_pings_every_10_s_and_a_silent_backend_is_lost_after_30_s() {
    let t0 = Instant::now();
    let (mut s, _) = connected(params(Protocol::Twilio, G711::Pcmu), t0);
    let secs = Duration::from_secs;
    assert_eq!(s.poll_timeout(), Some(t0 + secs(10)));
    s.handle_timeout(t0 + secs(9));
    assert!(s.poll_transmit().is_none(), "not yet");
    s.handle_timeout(t0 + secs(10));
    assert_eq!(drain(&mut s), [Outgoing::Ping]);
    s.handle_pong(t0 + secs(10));
    for at in [20, 30, 40] {
        assert_eq!(s.poll_timeout(), Some(t0 + secs(at)));
        s.handle_timeout(t0 + secs(at));
        assert_eq!(drain(&mut s), [Outgoing::Ping], "at {at} s");
    }
    // No pong since 10 s: at 50 s the connection is lost, and fork mode reconnects.
    s.handle_timeout(t0 + secs(50));
    assert!(s.poll_transmit().is_none());
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::Lost("ping_timeout"),
            SessionEvent::Reconnecting
        ]
    );
    assert!(!s.is_connected());
}

#[test]
fn fork_mode_backs_off_250_ms_doubling_to_10_s_and_agent_mode_hangs_up() {
    let t0 = Instant::now();
    let mut s = session(params(Protocol::Twilio, G711::Pcmu));
    assert_eq!(events(&mut s), [SessionEvent::Connect]);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..8 {
        s.handle_lost(now);
        assert_eq!(events(&mut s), [SessionEvent::Reconnecting]);
        let at = s.poll_timeout().unwrap();
        waits.push((at - now).as_millis());
        now = at;
        s.handle_timeout(now);
        assert_eq!(events(&mut s), [SessionEvent::Connect]);
    }
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
    // A connection resets the backoff.
    s.handle_connected(now);
    s.handle_lost(now);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_millis(500)));
    // A close 1000 from the backend ends a fork without a reconnection.
    let (mut f, _) = connected(params(Protocol::Twilio, G711::Pcmu), t0);
    f.handle_backend_closed(t0, 1000);
    assert_eq!(events(&mut f), [SessionEvent::Ended]);
    // Agent mode: any loss ends the call.
    let mut p = params(Protocol::Twilio, G711::Pcmu);
    p.mode = ForkMode::Agent;
    let (mut a, _) = connected(p, t0);
    a.handle_backend_closed(t0, 1011);
    assert_eq!(events(&mut a), [SessionEvent::Hangup, SessionEvent::Ended]);
    assert_eq!(a.poll_timeout(), None);
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
        let (mut s, _) = connected(p, Instant::now());
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
            let _ = s.handle_binary(&bytes);
            let mut t = seeds[i % seeds.len()].as_bytes().to_vec();
            if i % 3 == 0 && !t.is_empty() {
                let at = (rnd() as usize) % t.len();
                t[at] = rnd() as u8;
            }
            if let Ok(text) = std::str::from_utf8(&t) {
                let _ = s.handle_text(text);
            }
            while let Some(e) = s.poll_event() {
                if e == SessionEvent::Clear {
                    s.handle_cleared();
                }
            }
            drain(&mut s);
        }
        assert!(s.playout().queued_frames() <= 100);
        assert!(s.playout().pending_marks() <= crate::fork::playout::MAX_PENDING_MARKS);
    }
}
