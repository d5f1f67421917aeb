//! Fuzzes what a fork backend can send: the Twilio and L16 inbound parsers
//! (`fork::protocol::parse_twilio`, `parse_l16_text`) on arbitrary text, and a whole
//! `ForkSession` in each mode fed a sequence of text/binary frames cut from the input (audio,
//! marks, clear, disconnect, garbage). No panic; parsed marks respect the name limit; decoded
//! media is never larger than its base64; the playout queue never exceeds its bound; clear
//! leaves nothing queued.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;

use srtp_edge::fork::protocol::{self, BackendMessage, CallMeta, Protocol, Track, MAX_MARK_NAME};
use srtp_edge::fork::session::{ForkMode, ForkSession, SessionEvent, SessionParams};
use srtp_edge::fork::G711;
use srtp_edge::rand::SeededRandom;

const MAX_FRAMES: usize = 50;

fn check(text: &str, m: &BackendMessage) {
    match m {
        BackendMessage::Mark(n) => assert!(!n.is_empty() && n.len() <= MAX_MARK_NAME),
        BackendMessage::Audio(a) => assert!(a.len() <= text.len()),
        _ => {}
    }
}

fn session(protocol: Protocol, codec: G711) -> ForkSession {
    let mut rng = SeededRandom::new(1);
    ForkSession::new(
        SessionParams {
            protocol,
            mode: ForkMode::Agent,
            codec,
            tracks: vec![Track::Inbound],
            meta: CallMeta {
                from: String::new(),
                to: String::new(),
                sip_call_id: "fuzz".into(),
                direction: "inbound".into(),
                route: "fuzz".into(),
            },
            call_sid: protocol::random_sid(&mut rng, "CA"),
            account_sid: protocol::random_sid(&mut rng, "AC"),
            max_playout_frames: MAX_FRAMES,
        },
        Box::new(rng),
    )
    .expect("supported rates")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = protocol::parse_twilio(text) {
            check(text, &m);
        }
        if let Ok(m) = protocol::parse_l16_text(text) {
            check(text, &m);
        }
    }
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let protocol = match sel % 4 {
        0 | 1 => Protocol::Twilio,
        2 => Protocol::L16 { sample_rate: 16000 },
        _ => Protocol::L16 { sample_rate: 8000 },
    };
    let codec = if sel & 4 == 0 { G711::Pcmu } else { G711::Pcma };
    let mut s = session(protocol, codec);
    s.handle_connected(Instant::now());
    // Frames separated by 0xFF (never in UTF-8); a leading 0x00 makes a frame binary.
    for frame in rest.split(|&b| b == 0xFF).take(64) {
        while s.poll_transmit().is_some() {}
        let _ = match frame.split_first() {
            Some((0, bin)) => s.handle_binary(bin),
            _ => match std::str::from_utf8(frame) {
                Ok(t) => s.handle_text(t),
                Err(_) => continue,
            },
        };
        while let Some(e) = s.poll_event() {
            if e == SessionEvent::Clear {
                s.handle_cleared();
                assert_eq!(s.playout().queued_frames(), 0);
            }
        }
        assert!(s.playout().queued_frames() <= MAX_FRAMES + 1);
        // The worker's clock pulls a frame now and then.
        if frame.len() % 3 == 0 {
            let _ = s.pop_playout();
        }
    }
    s.handle_stop();
    while s.poll_transmit().is_some() {}
});
