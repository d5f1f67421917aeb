//! Offer/answer policy on real-world SDP shapes (baresip, pjsip, rtpengine's own test offers,
//! Chrome WebRTC, plain-RTP PBX offers): what is refused, what is relayed, and that keys never
//! cross from one leg to the other.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use srtp_edge::config::DEFAULT_SUITES;
use srtp_edge::sdp::{
    choose_crypto, inspect_answer, inspect_offer, rewrite_answer, rewrite_offer, AnswerPlan,
    CryptoAttr, LocalMedia, OfferPlan, PolicyError, SdesKey, Sdp,
};
use srtp_edge::srtp::Profile;

/// Deterministic, distinct key text of the right length for a suite.
fn key(seed: u8, p: Profile) -> String {
    let bytes: Vec<u8> = (0..p.key_salt_len() as u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(seed))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A baresip 3.x offer with `mediaenc=srtp-mand`: RTP/SAVP, rtcp-mux, four suites.
fn baresip_offer() -> String {
    format!(
        "v=0\r\n\
o=- 3482751263 2516093870 IN IP4 192.168.1.10\r\n\
s=-\r\n\
c=IN IP4 192.168.1.10\r\n\
t=0 0\r\n\
a=tool:baresip 3.10.1\r\n\
m=audio 10310 RTP/SAVP 96 0 8 101\r\n\
b=AS:128\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=rtcp-rsize\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{}\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n\
a=crypto:3 AEAD_AES_256_GCM inline:{}\r\n\
a=crypto:4 AEAD_AES_128_GCM inline:{}\r\n\
a=ptime:20\r\n",
        key(1, Profile::AesCm128HmacSha1_32),
        key(2, Profile::AesCm128HmacSha1_80),
        key(3, Profile::AeadAes256Gcm),
        key(4, Profile::AeadAes128Gcm),
    )
}

/// rtpengine's SDES test offer shape: media-level c=, four AES-CM suites, no rtcp-mux.
fn rtpengine_offer() -> String {
    format!(
        "v=0\n\
o=- 1545997027 1 IN IP4 198.51.100.1\n\
s=tester\n\
t=0 0\n\
m=audio 2000 RTP/SAVP 0\n\
c=IN IP4 198.51.100.1\n\
a=sendrecv\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}\n\
a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:{}\n\
a=crypto:4 AES_256_CM_HMAC_SHA1_32 inline:{}\n",
        key(5, Profile::AesCm128HmacSha1_80),
        key(6, Profile::AesCm128HmacSha1_32),
        key(7, Profile::AesCm256HmacSha1_80),
        key(8, Profile::AesCm256HmacSha1_32),
    )
}

/// A plain-RTP PBX offer (Asterisk-style), the thing srtp-edge exists to refuse.
const PLAIN_OFFER: &str = "v=0\r\n\
o=root 1234 1234 IN IP4 10.0.0.5\r\n\
s=Asterisk PBX 18\r\n\
c=IN IP4 10.0.0.5\r\n\
t=0 0\r\n\
m=audio 17010 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// A Chrome WebRTC offer (trimmed): BUNDLE, ICE, DTLS fingerprint, audio + video.
const CHROME_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0\r\n\
a=ice-ufrag:Oyef\r\n\
a=ice-pwd:7DpzAzNbOW3YOhWHIEbA2CfP\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3C:0F:4F:3B:6D:8C:D0:5D:2E:08:46:F9\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Oyef\r\n\
a=ice-pwd:7DpzAzNbOW3YOhWHIEbA2CfP\r\n\
a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3C:0F:4F:3B:6D:8C:D0:5D:2E:08:46:F9\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=rtpmap:96 VP8/90000\r\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn local(addr: &str, port: u16, mux: bool) -> LocalMedia {
    LocalMedia {
        addr: ip(addr),
        rtp_port: port,
        rtcp_port: if mux { None } else { Some(port + 1) },
        rtcp_mux: mux,
    }
}

fn crypto_lines(sdp: &Sdp, m: usize) -> Vec<CryptoAttr> {
    sdp.media[m]
        .crypto()
        .into_iter()
        .map(|c| c.expect("srtp-edge writes valid crypto lines"))
        .collect()
}

#[test]
fn plain_rtp_offer_is_refused_with_488() {
    let err = inspect_offer(&Sdp::parse(PLAIN_OFFER).unwrap()).unwrap_err();
    assert_eq!(err, PolicyError::PlaintextMedia { index: 0 });
    assert!(err.is_plaintext());
    assert_eq!(err.sip_status(), 488);
    assert_eq!(err.ng_reason(), "plaintext media refused");
    // AVPF without crypto is plaintext too.
    let avpf = PLAIN_OFFER.replace("RTP/AVP", "RTP/AVPF");
    assert!(inspect_offer(&Sdp::parse(&avpf).unwrap())
        .unwrap_err()
        .is_plaintext());
}

#[test]
fn savp_without_keys_or_only_unknown_suites_is_refused() {
    let savp = PLAIN_OFFER.replace("RTP/AVP", "RTP/SAVP");
    let err = inspect_offer(&Sdp::parse(&savp).unwrap()).unwrap_err();
    assert_eq!(err, PolicyError::NoCommonSuite { index: 0 });
    assert_eq!(err.sip_status(), 488);

    // Only suites srtp-edge does not implement: inspection passes, choosing fails.
    let f8 = format!(
        "{savp}a=crypto:1 F8_128_HMAC_SHA1_80 inline:{}\r\n",
        key(9, Profile::AesCm128HmacSha1_80)
    );
    let sdp = Sdp::parse(&f8).unwrap();
    let info = inspect_offer(&sdp).unwrap();
    assert!(info.media[0].crypto.is_empty());
    assert_eq!(
        choose_crypto(&info.media[0], &DEFAULT_SUITES).unwrap_err(),
        PolicyError::NoCommonSuite { index: 0 }
    );
}

#[test]
fn weakened_crypto_lines_are_never_chosen() {
    let k = key(1, Profile::AesCm128HmacSha1_80);
    let sdp = format!(
        "{}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{k} UNENCRYPTED_SRTP\r\n",
        PLAIN_OFFER.replace("RTP/AVP", "RTP/SAVP")
    );
    let sdp = Sdp::parse(&sdp).unwrap();
    let info = inspect_offer(&sdp).unwrap();
    assert!(choose_crypto(&info.media[0], &DEFAULT_SUITES).is_err());
}

#[test]
fn chrome_offer_is_dtls_only_and_video_is_rejected() {
    let sdp = Sdp::parse(CHROME_OFFER).unwrap();
    let info = inspect_offer(&sdp).unwrap();
    assert!(info.media[0].accepted);
    assert!(!info.media[1].accepted, "video is never relayed");
    let dtls = info.media[0].dtls.as_ref().unwrap();
    assert_eq!(dtls.fingerprints[0].digest.len(), 32);
    assert_eq!(dtls.setup, Some(srtp_edge::sdp::Setup::ActPass));
    let ice = info.media[0].ice.as_ref().unwrap();
    assert_eq!(ice.ufrag.as_deref(), Some("Oyef"));
    assert_eq!(ice.candidates.len(), 1);
    assert_eq!(ice.pwd.as_deref(), Some("7DpzAzNbOW3YOhWHIEbA2CfP"));
    assert!(
        !format!("{info:?}").contains("7DpzAzNb"),
        "ICE password in Debug"
    );
    assert_eq!(info.media[0].rtcp, Some("0.0.0.0:9".parse().unwrap()));
    assert!(info.media[0].rtcp_mux);
    let err = choose_crypto(&info.media[0], &DEFAULT_SUITES).unwrap_err();
    assert_eq!(err, PolicyError::DtlsUnavailable { index: 0 });
    assert_eq!(err.sip_status(), 488);
}

#[test]
fn preference_order_picks_the_offerers_line() {
    let sdp = Sdp::parse(&baresip_offer()).unwrap();
    let info = inspect_offer(&sdp).unwrap();
    let m = &info.media[0];
    assert_eq!(m.rtp, Some("192.168.1.10:10310".parse().unwrap()));
    assert!(m.rtcp_mux);
    assert_eq!(m.crypto.len(), 4);
    let c = choose_crypto(m, &DEFAULT_SUITES).unwrap();
    assert_eq!((c.tag, c.suite), (3, Profile::AeadAes256Gcm));
    let c = choose_crypto(m, &[Profile::AesCm128HmacSha1_80, Profile::AeadAes128Gcm]).unwrap();
    assert_eq!((c.tag, c.suite), (2, Profile::AesCm128HmacSha1_80));
    let expected = base64::engine::general_purpose::STANDARD
        .decode(key(2, Profile::AesCm128HmacSha1_80))
        .unwrap();
    assert_eq!(c.key.as_bytes(), expected.as_slice());

    // rtpengine's offer with the AES-256 suites and no GCM: AES_256_CM_HMAC_SHA1_80 wins.
    let sdp = Sdp::parse(&rtpengine_offer()).unwrap();
    let info = inspect_offer(&sdp).unwrap();
    assert_eq!(
        info.media[0].rtcp,
        Some("198.51.100.1:2001".parse().unwrap())
    );
    let c = choose_crypto(&info.media[0], &DEFAULT_SUITES).unwrap();
    assert_eq!((c.tag, c.suite), (3, Profile::AesCm256HmacSha1_80));
}

/// The whole SDES flow A → srtp-edge → B and back, checking every rule along the way.
#[test]
fn full_offer_answer_flow_keeps_keys_per_leg() {
    let a_text = baresip_offer();
    let a_offer = Sdp::parse(&a_text).unwrap();
    let a_info = inspect_offer(&a_offer).unwrap();
    let chosen_a = choose_crypto(&a_info.media[0], &DEFAULT_SUITES).unwrap();

    // Offer to B: all enabled suites, fresh keys, our transport, RTP/SAVP.
    let suites = DEFAULT_SUITES.to_vec();
    let b_plan = OfferPlan {
        local: local("203.0.113.9", 40000, false),
        keys: SdesKey::generate_all(&suites).unwrap(),
    };
    let b_offer = rewrite_offer(&a_offer, &[Some(b_plan)]).unwrap();
    let b_text = b_offer.write();
    assert!(b_text.contains("c=IN IP4 203.0.113.9\r\n"), "{b_text}");
    assert!(b_text.contains("o=- 3482751263 2516093870 IN IP4 203.0.113.9\r\n"));
    assert!(b_text.contains("m=audio 40000 RTP/SAVP 96 0 8 101\r\n"));
    assert!(b_text.contains("a=rtcp:40001\r\n"));
    assert!(!b_text.contains("a=rtcp-mux"));
    assert!(!b_text.contains("192.168.1.10"), "no topology leak");
    assert!(b_text.contains("a=tool:baresip"), "unknown lines preserved");
    assert!(b_text.contains("a=fmtp:96 stereo=1;sprop-stereo=1\r\n"));
    for seed in 1..=4 {
        for p in Profile::ALL {
            assert!(!b_text.contains(&key(seed, p)), "A's key leaked to B");
        }
    }
    let offered = crypto_lines(&b_offer, 0);
    assert_eq!(offered.len(), suites.len());
    for (i, c) in offered.iter().enumerate() {
        assert_eq!(c.tag as usize, i + 1);
        assert_eq!(c.suite, suites[i]);
    }
    // Our re-parsed offer passes our own policy.
    assert!(inspect_offer(&Sdp::parse(&b_text).unwrap()).is_ok());

    // B answers with tag 4 (AES_CM_128_HMAC_SHA1_80) and its own key.
    let b_key = key(42, Profile::AesCm128HmacSha1_80);
    let b_answer_text = format!(
        "v=0\r\no=B 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n\
m=audio 30000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\na=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{b_key}\r\n"
    );
    let b_answer = Sdp::parse(&b_answer_text).unwrap();
    let b_info = inspect_answer(&b_answer, std::slice::from_ref(&suites)).unwrap();
    let picked = b_info.chosen(0).unwrap();
    assert_eq!(
        (picked.tag, picked.suite),
        (4, Profile::AesCm128HmacSha1_80)
    );
    assert_eq!(
        b_info.media[0].rtp,
        Some("198.51.100.20:30000".parse::<SocketAddr>().unwrap())
    );

    // Answer to A: exactly one crypto line, A's tag and suite, a fresh key of ours; mux kept.
    let our_a_key = SdesKey::generate(chosen_a.suite).unwrap();
    let a_plan = AnswerPlan {
        local: local("203.0.113.9", 50000, true),
        tag: chosen_a.tag,
        key: our_a_key,
    };
    let a_answer = rewrite_answer(&b_answer, &a_info, &[Some(a_plan)]).unwrap();
    let a_text_out = a_answer.write();
    assert!(
        a_text_out.contains("m=audio 50000 RTP/SAVP 0 101\r\n"),
        "{a_text_out}"
    );
    assert!(a_text_out.contains("a=rtcp-mux\r\n"));
    assert!(!a_text_out.contains("198.51.100.20"));
    assert!(!a_text_out.contains(&b_key), "B's key leaked to A");
    let lines = crypto_lines(&a_answer, 0);
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].tag, lines[0].suite), (3, Profile::AeadAes256Gcm));
    assert_ne!(lines[0].keys[0].key.as_bytes(), chosen_a.key.as_bytes());
}

#[test]
fn osrtp_offer_is_answered_with_rtp_avp_and_one_crypto_line() {
    // RFC 8643: RTP/AVP with a=crypto is best-effort SRTP; the answer keeps RTP/AVP.
    let k = key(11, Profile::AesCm128HmacSha1_80);
    let offer = format!("{PLAIN_OFFER}a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{k}\r\n");
    let offer = Sdp::parse(&offer).unwrap();
    let info = inspect_offer(&offer).unwrap();
    let chosen = choose_crypto(&info.media[0], &DEFAULT_SUITES).unwrap();
    assert_eq!(chosen.tag, 7);

    // The other leg gets mandatory SRTP.
    let plan = OfferPlan {
        local: local("203.0.113.9", 40000, false),
        keys: SdesKey::generate_all(&[Profile::AesCm128HmacSha1_80]).unwrap(),
    };
    let b_offer = rewrite_offer(&offer, &[Some(plan)]).unwrap();
    assert_eq!(b_offer.media[0].proto, "RTP/SAVP");

    let b_answer = Sdp::parse(&format!(
        "v=0\r\no=- 1 1 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n\
m=audio 3000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        key(12, Profile::AesCm128HmacSha1_80)
    ))
    .unwrap();
    let plan = AnswerPlan {
        local: local("203.0.113.9", 50000, false),
        tag: chosen.tag,
        key: SdesKey::generate(chosen.suite).unwrap(),
    };
    let a_answer = rewrite_answer(&b_answer, &info, &[Some(plan)]).unwrap();
    assert_eq!(a_answer.media[0].proto, "RTP/AVP");
    let lines = crypto_lines(&a_answer, 0);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].tag, 7);
    assert!(a_answer.write().contains("a=rtcp:50001\r\n"));
}

#[test]
fn answers_without_matching_crypto_are_refused() {
    let offered = vec![vec![Profile::AeadAes128Gcm, Profile::AesCm128HmacSha1_80]];
    let base = "v=0\r\no=- 1 1 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\nm=audio 3000 RTP/SAVP 0\r\n";
    // No crypto at all: plaintext.
    let err = inspect_answer(&Sdp::parse(base).unwrap(), &offered).unwrap_err();
    assert!(err.is_plaintext());
    // Tag/suite mismatch (tag 1 was GCM-128).
    let wrong = format!(
        "{base}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        key(1, Profile::AesCm128HmacSha1_80)
    );
    assert_eq!(
        inspect_answer(&Sdp::parse(&wrong).unwrap(), &offered).unwrap_err(),
        PolicyError::AnswerCryptoMismatch { index: 0 }
    );
    // Tag we never offered.
    let tag9 = format!(
        "{base}a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        key(1, Profile::AesCm128HmacSha1_80)
    );
    assert!(inspect_answer(&Sdp::parse(&tag9).unwrap(), &offered).is_err());
    // Tag 0 does not underflow.
    let tag0 = tag9.replace("crypto:9", "crypto:0");
    assert!(inspect_answer(&Sdp::parse(&tag0).unwrap(), &offered).is_err());
    // Rejected stream: no audio to relay.
    let rejected = base.replace("audio 3000", "audio 0");
    assert_eq!(
        inspect_answer(&Sdp::parse(&rejected).unwrap(), &offered).unwrap_err(),
        PolicyError::NoAudio
    );
    // Count mismatch.
    assert_eq!(
        inspect_answer(&Sdp::parse(base).unwrap(), &[]).unwrap_err(),
        PolicyError::MediaCountMismatch
    );
}

#[test]
fn non_audio_lines_are_rejected_in_the_rewrite() {
    let k = key(1, Profile::AesCm128HmacSha1_80);
    let offer = format!(
        "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
m=audio 5000 RTP/SAVP 0\r\na=rtcp:5005 IN IP6 2001:db8::6\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{k}\r\n\
m=video 5002 RTP/SAVP 96\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{k}\r\na=rtpmap:96 H264/90000\r\n\
m=application 5004 UDP/BFCP *\r\n"
    );
    let offer = Sdp::parse(&offer).unwrap();
    let info = inspect_offer(&offer).unwrap();
    assert_eq!(
        info.media[0].rtcp,
        Some("[2001:db8::6]:5005".parse().unwrap())
    );
    assert!(!info.media[1].accepted && !info.media[2].accepted);
    let plan = OfferPlan {
        local: local("2001:db8::100", 6000, false),
        keys: SdesKey::generate_all(&[Profile::AeadAes128Gcm]).unwrap(),
    };
    let out = rewrite_offer(&offer, &[Some(plan), None, None]).unwrap();
    let text = out.write();
    assert!(text.contains("c=IN IP6 2001:db8::100\r\n"));
    assert!(text.contains("m=video 0 RTP/SAVP 96\r\n"));
    assert!(text.contains("m=application 0 UDP/BFCP *\r\n"));
    assert!(
        !text.contains(&k),
        "the peer's key must not survive in a rejected m-line"
    );
    assert!(!text.contains("2001:db8::5"));
    // Plans must match the m-line count.
    assert!(matches!(
        rewrite_offer(&offer, &[None]),
        Err(PolicyError::InvalidPlan(_))
    ));
    // An accepted m-line without keys is a caller bug, never a plaintext offer.
    let empty = OfferPlan {
        local: local("2001:db8::100", 6000, false),
        keys: Vec::new(),
    };
    assert!(matches!(
        rewrite_offer(&offer, &[Some(empty), None, None]),
        Err(PolicyError::InvalidPlan(_))
    ));
}

#[test]
fn offers_without_audio_or_address_are_refused() {
    let video_only = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n";
    assert_eq!(
        inspect_offer(&Sdp::parse(video_only).unwrap()).unwrap_err(),
        PolicyError::NoAudio
    );
    let k = key(1, Profile::AesCm128HmacSha1_80);
    let no_c = format!(
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{k}\r\n"
    );
    let err = inspect_offer(&Sdp::parse(&no_c).unwrap()).unwrap_err();
    assert_eq!(err, PolicyError::MissingConnection { index: 0 });
    assert_eq!(err.sip_status(), 400);
    let fqdn = no_c.replace("t=0 0", "c=IN IP4 pbx.example.com\r\nt=0 0");
    assert!(matches!(
        inspect_offer(&Sdp::parse(&fqdn).unwrap()).unwrap_err(),
        PolicyError::Sdp(_)
    ));
}

#[test]
fn chrome_offer_is_answered_with_our_dtls_and_ice_lite_and_the_other_leg_gets_sdes() {
    use srtp_edge::sdp::policy::{
        rewrite_answer_keyed, rewrite_offer_keyed, AnswerKeying, DtlsPlan, OfferKeying,
    };
    let sdp = Sdp::parse(CHROME_OFFER).unwrap();
    let info = inspect_offer(&sdp).unwrap();
    // The other leg: SDES only, nothing of Chrome's transport or keying.
    let plan = OfferPlan {
        local: local("203.0.113.9", 40000, true),
        keys: SdesKey::generate_all(&[Profile::AeadAes128Gcm]).unwrap(),
    };
    let b_offer = rewrite_offer_keyed(&sdp, &[Some(OfferKeying::Sdes(&plan)), None])
        .unwrap()
        .write();
    assert!(b_offer.contains("m=audio 40000 RTP/SAVPF 111"), "{b_offer}");
    assert!(b_offer.contains("a=crypto:1 AEAD_AES_128_GCM inline:"));
    for leaked in ["fingerprint", "ice-ufrag", "candidate", "setup", "0.0.0.0"] {
        assert!(
            !b_offer.contains(leaked),
            "{leaked} crossed legs: {b_offer}"
        );
    }
    // B's SDES answer becomes a DTLS answer to Chrome.
    let b_answer = Sdp::parse(&format!(
        "v=0\r\no=- 1 1 IN IP4 198.51.100.2\r\ns=-\r\nc=IN IP4 198.51.100.2\r\nt=0 0\r\n\
m=audio 3000 RTP/SAVPF 111\r\na=mid:0\r\na=rtcp-mux\r\n\
a=crypto:1 AEAD_AES_128_GCM inline:{}\r\nm=video 0 RTP/SAVPF 96\r\n",
        key(3, Profile::AeadAes128Gcm)
    ))
    .unwrap();
    let dtls = DtlsPlan {
        local: local("203.0.113.9", 40002, true),
        fingerprint: "sha-256 AA:BB".into(),
        setup: "active",
        tls_id: "abcdefghijklmnopqrstuvwxyz".into(),
        ice: Some(("ufrag123".into(), "pwd-of-twenty-four-chars".into())),
    };
    let a_answer = rewrite_answer_keyed(&b_answer, &info, &[Some(AnswerKeying::Dtls(&dtls)), None])
        .unwrap()
        .write();
    let session = &a_answer[..a_answer.find("m=audio").unwrap()];
    assert!(
        session.contains("a=ice-lite\r\n"),
        "session-level ice-lite: {a_answer}"
    );
    for line in [
        "m=audio 40002 UDP/TLS/RTP/SAVPF 111\r\n",
        "a=rtcp-mux\r\n",
        "a=fingerprint:sha-256 AA:BB\r\n",
        "a=setup:active\r\n",
        "a=tls-id:abcdefghijklmnopqrstuvwxyz\r\n",
        "a=ice-ufrag:ufrag123\r\n",
        "a=ice-pwd:pwd-of-twenty-four-chars\r\n",
        "a=candidate:1 1 udp 2130706431 203.0.113.9 40002 typ host\r\n",
        "a=end-of-candidates\r\n",
        "m=video 0 ",
    ] {
        assert!(a_answer.contains(line), "missing {line:?}: {a_answer}");
    }
    assert!(!a_answer.contains("a=crypto"), "no SDES key on a DTLS leg");
    assert!(!a_answer.contains("198.51.100.2"), "B's address hidden");
}

#[test]
fn feedback_profile_dropped_for_a_sip_trunk() {
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio 4000 RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-fb:0 nack\r\n\
                 m=audio 4002 UDP/TLS/RTP/SAVPF 0\r\na=rtcp-fb:0 nack pli\r\na=sendrecv\r\n";
    let mut sdp = Sdp::parse_bytes(offer.as_bytes()).unwrap();
    srtp_edge::sdp::policy::drop_feedback(&mut sdp, 0);
    srtp_edge::sdp::policy::drop_feedback(&mut sdp, 1);
    srtp_edge::sdp::policy::drop_feedback(&mut sdp, 7);
    let out = sdp.write();
    assert!(out.contains("m=audio 4000 RTP/SAVP 0\r\n"), "{out}");
    assert!(out.contains("m=audio 4002 UDP/TLS/RTP/SAVP 0\r\n"), "{out}");
    assert!(!out.contains("rtcp-fb"), "{out}");
    assert!(
        out.contains("a=rtpmap:0 PCMU/8000") && out.contains("a=sendrecv"),
        "{out}"
    );
}

#[test]
fn answer_carries_the_offerers_mid() {
    use srtp_edge::sdp::policy::{rewrite_answer_keyed, AnswerKeying};
    let offer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/SAVP 0\r\na=mid:0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        key(1, Profile::AesCm128HmacSha1_80)
    );
    let info = inspect_offer(&Sdp::parse(&offer).unwrap()).unwrap();
    assert_eq!(info.media[0].mid.as_deref(), Some("0"));
    // The other leg's answer has no a=mid (a SIP phone) or another one.
    for other in ["", "a=mid:audio\r\n"] {
        let answer = format!(
            "v=0\r\no=- 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
             m=audio 5000 RTP/SAVP 0\r\n{other}"
        );
        let plan = AnswerPlan {
            local: local("192.0.2.1", 30000, false),
            tag: 1,
            key: SdesKey::generate(Profile::AesCm128HmacSha1_80).unwrap(),
        };
        let out = rewrite_answer_keyed(
            &Sdp::parse(&answer).unwrap(),
            &info,
            &[Some(AnswerKeying::Sdes(&plan))],
        )
        .unwrap()
        .write();
        assert_eq!(out.matches("a=mid:").count(), 1, "{out}");
        assert!(out.contains("a=mid:0\r\n"), "{out}");
    }
}
