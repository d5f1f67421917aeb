//! The ng control protocol as Kamailio's and OpenSIPS' rtpengine modules speak it: request
//! parsing (both key spellings), the plaintext refusal, reply shapes, and hostile datagrams.

use std::collections::BTreeMap;

use srtp_edge::config::DEFAULT_SUITES;
use srtp_edge::control::bencode::{BencodeError, DictBuilder, Value};
use srtp_edge::control::ng::{
    encode_reply, parse_datagram, refuses_plaintext, reply_error, reply_list, reply_pong,
    reply_sdp, CallStats, Command, Counters, DtlsMode, IceMode, MediaStats, NgError, Request,
    RtcpMuxOption, SdesOption, Statistics, StreamStats, TagStats, PLAINTEXT_REFUSED,
};
use srtp_edge::srtp::Profile;

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::str(s)).collect())
}

/// An offer the way Kamailio's `rtpengine_offer("trust-address replace-origin
/// replace-session-connection ICE=remove RTP/SAVP")` sends it.
fn kamailio_offer() -> Value {
    DictBuilder::new()
        .str("command", "offer")
        .str("call-id", "a84b4c76e66710@pc33.example.com")
        .str("from-tag", "1928301774")
        .str("via-branch", "z9hG4bK776asdhds")
        .str("sdp", "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n")
        .value("flags", list(&["trust-address", "SDES-no-AES_CM_128_HMAC_SHA1_32", "loop protect"]))
        .value("replace", list(&["origin", "session connection"]))
        .str("ICE", "remove")
        .str("transport protocol", "RTP/SAVP")
        .value("received from", list(&["IP4", "192.0.2.1"]))
        .value("rtcp-mux", list(&["demux", "offer", "bogus"]))
        .str("record call", "no")
        .build()
}

#[test]
fn kamailio_offer_parses_with_both_spellings() {
    let dgram = [b"5323_1 ".as_slice(), &kamailio_offer().encode()].concat();
    let (cookie, r) = parse_datagram(&dgram).unwrap();
    assert_eq!(cookie, b"5323_1");
    assert_eq!(r.command, Command::Offer);
    assert_eq!(
        r.call_id.as_deref(),
        Some("a84b4c76e66710@pc33.example.com")
    );
    assert_eq!(r.via_branch.as_deref(), Some("z9hG4bK776asdhds"));
    assert!(r.has_flag("trust-address"));
    assert!(r.has_flag("loop-protect"), "spaces become hyphens");
    assert_eq!(r.sdes, [SdesOption::No(Ok(Profile::AesCm128HmacSha1_32))]);
    assert_eq!(r.replace, ["origin", "session-connection"]);
    assert_eq!(r.ice, Some(IceMode::Remove));
    assert_eq!(r.transport_protocol.as_deref(), Some("RTP/SAVP"));
    assert_eq!(
        r.received_from,
        Some(("IP4".to_string(), "192.0.2.1".to_string()))
    );
    assert_eq!(
        r.received_from_addr().unwrap().ip().to_string(),
        "192.0.2.1"
    );
    assert_eq!(
        r.rtcp_mux,
        [
            RtcpMuxOption::Demux,
            RtcpMuxOption::Offer,
            RtcpMuxOption::Other("bogus".into())
        ]
    );
    // `record call` is understood (recording, issue 13): "no" leaves the call unrecorded.
    assert_eq!(r.record_call, Some(false));
    assert!(r.unknown.is_empty(), "{:?}", r.unknown);
    assert!(!refuses_plaintext(&r));
    let dbg = format!("{r:?}");
    assert!(
        !dbg.contains("PS1uQCVe"),
        "Debug must not print the SDP: {dbg}"
    );
}

fn request(entries: &[(&str, Value)]) -> Result<Request, NgError> {
    let mut d = DictBuilder::new().str("command", "offer");
    for (k, v) in entries {
        d = d.value(k, v.clone());
    }
    let d = d
        .str("call-id", "c")
        .str("from-tag", "f")
        .str("sdp", "v=0\r\n");
    Request::from_value(&d.build())
}

#[test]
fn plaintext_requests_are_refused() {
    let tp = |s: &str| request(&[("transport-protocol", Value::str(s))]).unwrap();
    assert!(refuses_plaintext(&tp("RTP/AVP")));
    assert!(refuses_plaintext(&tp("rtp/avpf")));
    assert!(!refuses_plaintext(&tp("RTP/SAVPF")));
    assert!(!refuses_plaintext(&tp("UDP/TLS/RTP/SAVP")));

    let sdes_off_dtls_off =
        request(&[("SDES", list(&["off"])), ("DTLS", Value::str("off"))]).unwrap();
    assert!(refuses_plaintext(&sdes_off_dtls_off));
    // SDES off alone leaves DTLS as the keying: not plaintext by itself.
    let sdes_off = request(&[("SDES", list(&["off"]))]).unwrap();
    assert!(!refuses_plaintext(&sdes_off));
    assert!(sdes_off.sdes_suites(&DEFAULT_SUITES).is_empty());
    // The SDES-off flag spelling.
    let flag = request(&[("flags", list(&["SDES-off"])), ("DTLS", Value::str("no"))]).unwrap();
    assert_eq!(flag.dtls, Some(DtlsMode::Off));
    assert!(refuses_plaintext(&flag));
    // Every suite excluded with DTLS off.
    let names: Vec<String> = Profile::ALL
        .iter()
        .map(|p| format!("no-{}", p.sdes_name()))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let none_left = request(&[("SDES", list(&refs)), ("DTLS", Value::str("off"))]).unwrap();
    assert!(refuses_plaintext(&none_left));
    // only-<unknown suite> with DTLS off leaves nothing.
    let only_null = request(&[
        ("SDES", list(&["only-NULL_HMAC_SHA1_80"])),
        ("DTLS", Value::str("off")),
    ])
    .unwrap();
    assert!(refuses_plaintext(&only_null));
    // SDES options that switch protection off.
    let weak = request(&[("SDES", list(&["unencrypted_srtp"]))]).unwrap();
    assert!(refuses_plaintext(&weak));
    assert_eq!(PLAINTEXT_REFUSED, "plaintext media refused");
}

#[test]
fn sdes_suites_follow_configuration_and_flags() {
    let r = request(&[(
        "SDES",
        list(&["only-AES_CM_128_HMAC_SHA1_80", "only-AEAD_AES_128_GCM"]),
    )])
    .unwrap();
    assert_eq!(
        r.sdes_suites(&DEFAULT_SUITES),
        [Profile::AeadAes128Gcm, Profile::AesCm128HmacSha1_80],
        "configured preference order wins over the order of the flags"
    );
    let r = request(&[("SDES", list(&["no-AEAD_AES_256_GCM"]))]).unwrap();
    assert_eq!(r.sdes_suites(&DEFAULT_SUITES)[0], Profile::AeadAes128Gcm);
    let r = request(&[]).unwrap();
    assert_eq!(r.sdes_suites(&DEFAULT_SUITES), DEFAULT_SUITES.to_vec());
}

#[test]
fn missing_keys_give_rtpengines_error_reasons() {
    let offer_without = |skip: &str| {
        let mut d = BTreeMap::new();
        for (k, v) in [
            ("command", "answer"),
            ("call-id", "c"),
            ("from-tag", "f"),
            ("to-tag", "t"),
            ("sdp", "v=0"),
        ] {
            if k != skip {
                d.insert(k.as_bytes().to_vec(), Value::str(v));
            }
        }
        Request::from_value(&Value::Dict(d))
            .unwrap_err()
            .reply_reason()
    };
    assert_eq!(offer_without("sdp"), "No SDP body in message");
    assert_eq!(offer_without("call-id"), "No call-id in message");
    assert_eq!(offer_without("from-tag"), "No from-tag in message");
    assert_eq!(offer_without("to-tag"), "No to-tag in message");
    assert_eq!(offer_without("command"), "No command in message");

    let delete = DictBuilder::new().str("command", "delete").build();
    assert_eq!(
        Request::from_value(&delete).unwrap_err().reply_reason(),
        "No call-id in message"
    );
    let unknown = DictBuilder::new().str("command", "block DTMF").build();
    assert_eq!(
        Request::from_value(&unknown).unwrap_err(),
        NgError::UnknownCommand
    );
    for cmd in ["ping", "list", "statistics"] {
        let r = Request::from_value(&DictBuilder::new().str("command", cmd).build()).unwrap();
        assert!(!refuses_plaintext(&r));
    }
    let bad_limit = DictBuilder::new()
        .str("command", "list")
        .int("limit", -1)
        .build();
    assert_eq!(
        Request::from_value(&bad_limit).unwrap_err(),
        NgError::Invalid("limit")
    );
    let wrong_type = DictBuilder::new()
        .str("command", "query")
        .int("call-id", 5)
        .build();
    assert_eq!(
        Request::from_value(&wrong_type).unwrap_err(),
        NgError::Invalid("call-id")
    );
}

#[test]
fn hostile_datagrams_are_errors_not_panics() {
    assert_eq!(parse_datagram(b"").unwrap_err().cookie, None);
    assert_eq!(
        parse_datagram(b"nocookie").unwrap_err().error,
        NgError::NoCookie
    );
    assert_eq!(
        parse_datagram(b" d4:test1:xe").unwrap_err().error,
        NgError::NoCookie
    );
    let long = [vec![b'c'; 200], b" de".to_vec()].concat();
    assert_eq!(parse_datagram(&long).unwrap_err().error, NgError::NoCookie);
    let e = parse_datagram(b"abc d7:command").unwrap_err();
    assert_eq!(e.cookie, Some(&b"abc"[..]));
    assert_eq!(e.error, NgError::Bencode(BencodeError::Truncated));
    assert_eq!(e.error.reply_reason(), "Could not decode dictionary");
    assert_eq!(
        parse_datagram(b"abc li1ee").unwrap_err().error,
        NgError::NotDict
    );
    let many_flags = DictBuilder::new()
        .str("command", "ping")
        .value("flags", Value::List(vec![Value::str("x"); 65]))
        .build();
    assert_eq!(
        Request::from_value(&many_flags).unwrap_err(),
        NgError::Invalid("flags")
    );
}

#[test]
fn reply_shapes_match_rtpengine() {
    assert_eq!(encode_reply(b"c1", &reply_pong()), b"c1 d6:result4:ponge");
    assert_eq!(
        encode_reply(b"c2", &reply_error(PLAINTEXT_REFUSED)),
        b"c2 d12:error-reason23:plaintext media refused6:result5:errore".to_vec()
    );
    assert_eq!(
        reply_sdp("v=0\r\n").encode(),
        b"d6:result2:ok3:sdp5:v=0\r\ne".to_vec()
    );
    assert_eq!(
        reply_list(["a", "b"]).encode(),
        b"d5:callsl1:a1:be6:result2:oke".to_vec()
    );

    let stats = CallStats {
        created: 1_700_000_000,
        created_us: 5,
        last_signal: 1_700_000_010,
        tags: vec![TagStats {
            tag: "ft".into(),
            created: 1_700_000_000,
            in_dialogue_with: Some("tt".into()),
            medias: vec![MediaStats {
                index: 1,
                media_type: "audio".into(),
                protocol: "RTP/SAVP".into(),
                flags: vec!["SDES".into()],
                streams: vec![StreamStats {
                    local_port: 30000,
                    endpoint: Some("192.0.2.1:4000".parse().unwrap()),
                    advertised_endpoint: None,
                    crypto_suite: Some(Profile::AesCm128HmacSha1_80),
                    last_packet: 1_700_000_009,
                    flags: vec!["RTP".into()],
                    stats: Counters {
                        packets: 10,
                        bytes: 1720,
                        errors: 1,
                    },
                }],
                dtls: None,
            }],
        }],
        rtp: Counters {
            packets: 10,
            bytes: 1720,
            errors: 1,
        },
        rtcp: Counters::default(),
    };
    let v = Value::decode(&stats.to_reply().encode()).unwrap();
    assert_eq!(v.get("result").unwrap().as_str(), Some("ok"));
    assert_eq!(v.get("last signal").unwrap().as_int(), Some(1_700_000_010));
    let tag = v.get("tags").unwrap().get("ft").unwrap();
    assert_eq!(tag.get("in dialogue with").unwrap().as_str(), Some("tt"));
    let stream = &tag.get("medias").unwrap().as_list().unwrap()[0]
        .get("streams")
        .unwrap()
        .as_list()
        .unwrap()[0];
    assert_eq!(stream.get("local port").unwrap().as_int(), Some(30000));
    assert_eq!(
        stream
            .get("endpoint")
            .unwrap()
            .get("family")
            .unwrap()
            .as_str(),
        Some("IPv4")
    );
    assert_eq!(
        stream.get("crypto suite").unwrap().as_str(),
        Some("AES_CM_128_HMAC_SHA1_80")
    );
    let totals = v.get("totals").unwrap();
    assert_eq!(
        totals.get("RTP").unwrap().get("packets").unwrap().as_int(),
        Some(10)
    );

    let s = Statistics {
        sessions_own: 3,
        relayed_packets: u64::MAX,
        ..Statistics::default()
    };
    let v = s.to_reply();
    let st = v.get("statistics").unwrap();
    assert_eq!(
        st.get("currentstatistics")
            .unwrap()
            .get("sessionsown")
            .unwrap()
            .as_int(),
        Some(3)
    );
    assert_eq!(
        st.get("totalstatistics")
            .unwrap()
            .get("relayedpackets")
            .unwrap()
            .as_int(),
        Some(i64::MAX),
        "counters saturate instead of wrapping negative"
    );
}

#[test]
fn fork_key_and_forwarding_commands() {
    let offer = DictBuilder::new()
        .str("command", "offer")
        .str("call-id", "c1")
        .str("from-tag", "t1")
        .str("sdp", "v=0\r\n")
        .str("fork", "ai")
        .build();
    let r = Request::from_value(&offer).unwrap();
    assert_eq!(r.fork.as_deref(), Some("ai"));
    assert!(r.unknown.is_empty());
    // Empty, over-long or non-string names are refused outright.
    for bad in [
        Value::str(""),
        Value::str(&"x".repeat(129)),
        Value::Int(3),
        list(&["ai"]),
    ] {
        let v = DictBuilder::new()
            .str("command", "offer")
            .str("call-id", "c1")
            .str("from-tag", "t1")
            .str("sdp", "v=0\r\n")
            .value("fork", bad)
            .build();
        assert_eq!(Request::from_value(&v), Err(NgError::Invalid("fork")));
    }
    for spelling in ["start forwarding", "start-forwarding"] {
        let v = DictBuilder::new()
            .str("command", spelling)
            .str("call-id", "c1")
            .str("fork", "ai")
            .build();
        assert_eq!(
            Request::from_value(&v).unwrap().command,
            Command::StartForwarding
        );
        // The backend must be named.
        let v = DictBuilder::new()
            .str("command", spelling)
            .str("call-id", "c1")
            .build();
        assert_eq!(
            Request::from_value(&v),
            Err(NgError::Missing("No fork backend in message"))
        );
    }
    let v = DictBuilder::new()
        .str("command", "stop forwarding")
        .str("call-id", "c1")
        .build();
    assert_eq!(
        Request::from_value(&v).unwrap().command,
        Command::StopForwarding
    );
    let v = DictBuilder::new().str("command", "stop forwarding").build();
    assert_eq!(
        Request::from_value(&v),
        Err(NgError::Missing("No call-id in message"))
    );
}
