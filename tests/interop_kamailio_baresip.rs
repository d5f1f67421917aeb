//! Real peers end to end: two Debian `baresip` user agents call each other over SIP-TLS through
//! a Debian Kamailio proxy whose `rtpengine` module drives a media relay over the "ng" protocol,
//! with SDES-SRTP mandatory on both legs. The same harness runs against the real rtpengine
//! (the reference) and against srtp-edge's ng listener. See `interop/README.md`.

mod common;

use std::time::Duration;

use common::interop::{self, Capture, Expectations};

/// Each side must hear the other's tone for at least this long (the call lasts 8 s, minus the
/// setup).
const MIN_TONE_SECS: f64 = 3.0;
/// Each of the four media directions must carry at least this many SRTP packets (50 per second).
const MIN_PACKETS: usize = 150;

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn require_peers() {
    for t in ["kamailio", "baresip", "rtpengine", "tshark"] {
        assert!(
            have(t),
            "{t} is not installed: run interop/install-peers.sh (the interop tests need real peers)"
        );
    }
}

/// The analysis code (tone detector, plain-media classifier, bencode) catches what it must.
#[test]
fn analysis_self_check() {
    interop::self_check();
}

/// The reference: Kamailio + real rtpengine 10.5 + two baresip over TLS with SDES. The call
/// connects, both recordings carry the other side's tone, and no plain RTP/RTCP crosses `lo`.
/// rtpengine passes SDES keys through from one leg to the other (same suite on both sides), so
/// distinct per-leg keys are not required of it; the outcome reports what it did.
#[test]
fn kamailio_baresip_call_through_rtpengine() {
    require_peers();
    let rtpe = interop::Rtpengine::start();
    let expect = Expectations::default();
    let outcome = interop::run_call(rtpe.ng, &expect);
    eprintln!("{outcome}");
    outcome.assert_good(&expect, MIN_TONE_SECS, MIN_PACKETS);
    if let Capture::Done { ng, .. } = &outcome.capture {
        // Kamailio really asked for SRTP with SDES on every request it sent.
        for m in ng.iter().filter(|m| m.request) {
            let v = m.verb();
            if v == "offer" || v == "answer" {
                assert_eq!(
                    m.body
                        .get("transport-protocol")
                        .map(|t| t.text())
                        .as_deref(),
                    Some("RTP/SAVP"),
                    "{}",
                    m.body.summary()
                );
            }
        }
    }
    drop(rtpe);
}

/// Negative control on real traffic: the harness must catch plain RTP when there is some.
/// Kamailio asks rtpengine for `SDES-no-AES_CM_128_HMAC_SHA1_80/_32`, the only suite the caller
/// (baresip 1.0) offers. rtpengine then offers the callee AEAD_AES_256_GCM etc. (the callee picks
/// AEAD_AES_256_GCM), but answers the caller `RTP/SAVP` with no `a=crypto` at all, and baresip,
/// although configured `mediaenc=srtp-mand`, sends its audio in clear. The wire check must see
/// plain PCMU carrying the caller's tone, `assert_good` must fail, and the callee leg must verify
/// as GCM (the GCM path of the verifier on real packets). srtp-edge must never answer
/// RTP/SAVP without a crypto line.
#[test]
fn harness_catches_plain_rtp_on_a_real_call() {
    require_peers();
    let rtpe = interop::Rtpengine::start();
    let expect = Expectations {
        offer_flags: format!(
            "{} SDES-no-AES_CM_128_HMAC_SHA1_80 SDES-no-AES_CM_128_HMAC_SHA1_32",
            interop::DEFAULT_NG_FLAGS
        ),
        ..Expectations::default()
    };
    let outcome = interop::run_call(rtpe.ng, &expect);
    eprintln!("{outcome}");
    drop(rtpe);
    let Capture::Done { media, srtp, .. } = &outcome.capture else {
        eprintln!("capture skipped: the negative control needs root for tshark");
        return;
    };
    assert!(outcome.connected, "{outcome}");
    assert!(
        media.plain_rtp >= MIN_PACKETS && media.tone_in_clear >= MIN_PACKETS,
        "the plain RTP sent by the caller was not detected\n{outcome}"
    );
    let (lo, hi) = outcome.callee_rtp;
    let gcm = srtp
        .iter()
        .find(|((s, _), v)| (lo..=hi).contains(s) && v.verified > 0)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        gcm.key
            .as_deref()
            .is_some_and(|k| k.ends_with("AEAD_AES_256_GCM"))
            && gcm.verified >= MIN_PACKETS
            && gcm.callee_tone >= MIN_PACKETS,
        "callee leg not verified as GCM\n{outcome}"
    );
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        outcome.assert_good(&expect, MIN_TONE_SECS, MIN_PACKETS)
    }));
    assert!(failed.is_err(), "assert_good accepted plain RTP\n{outcome}");
}

/// The same call with srtp-edge as the media relay (its ng listener on the port Kamailio uses),
/// and in addition each leg must carry its own SDES keys.
#[test]
fn kamailio_baresip_call_through_srtp_edge() {
    require_peers();
    let (pmin, pmax) = interop::port_range(200);
    let ng = (0..1000)
        .map(|_| common::free_udp_port())
        .find(|p| !(pmin..=pmax).contains(p))
        .expect("a free UDP port outside the media range");
    let mut d = common::Daemon::start(&format!(
        "[sip]\nlisten = []\n[control]\nlisten = [\"127.0.0.1:{ng}\"]\n\
         [media]\nipv4 = \"127.0.0.1\"\nport_min = {pmin}\nport_max = {pmax}\n"
    ));
    let ng_addr = format!("127.0.0.1:{ng}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !interop::ng_ping(ng_addr) {
        assert!(
            std::time::Instant::now() < deadline,
            "srtp-edge ng did not answer ping:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let expect = Expectations {
        distinct_leg_keys: true,
        ..Expectations::default()
    };
    let outcome = interop::run_call(ng_addr, &expect);
    eprintln!("{outcome}");
    outcome.assert_good(&expect, MIN_TONE_SECS, MIN_PACKETS);
    assert_eq!(d.stop(), Some(0), "{}", d.log_text());
}
