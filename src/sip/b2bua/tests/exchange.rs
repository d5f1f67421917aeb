//! Offer/answer inside a dialog: keying per leg, glare, offerless re-INVITEs, unanswered offers.

use super::*;

/// A DTLS-SRTP offer (baresip `mediaenc=dtls_srtp`).
const DTLS_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n\
    m=audio 4000 UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
    a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
    a=setup:actpass\r\n";

/// The last `offer` line of the media log.
fn last_offer(b: &B2bua<Fake>) -> String {
    b.media()
        .log
        .borrow()
        .iter()
        .rev()
        .find(|l| l.starts_with("offer "))
        .cloned()
        .unwrap()
}

/// A re-INVITE (or UPDATE) from the caller in the dialog whose To tag is `a_tag`.
fn from_caller(method: &str, a_tag: &str, seq: u32, body: &str) -> Message {
    let mut m = req(method, &format!(";tag={a_tag}"), body);
    if let Message::Request(r) = &mut m {
        r.headers.set("CSeq", format!("{seq} {method}"));
    }
    m
}

#[test]
fn route_media_keying_chooses_what_leg_b_is_offered() {
    // SDES caller, DTLS route: leg B is offered DTLS-SRTP, and so is every re-offer to it.
    let mut b = b2bua_keyed("dtls");
    let up = invite(&mut b);
    let key = text(up.headers.call_id().unwrap());
    assert_eq!(last_offer(&b), format!("offer {key} atag dtls"));
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&up, 200, OFFER));
    let Message::Response(ok) = parsed(&out[1]).1 else {
        panic!()
    };
    let a_tag = ok.headers.to().unwrap().tag().map(text).unwrap();
    handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 2, OFFER),
    );
    assert_eq!(last_offer(&b), format!("offer {key} atag dtls"));
    // The callee re-offers towards the SDES caller: SDES.
    let mut b = b2bua_keyed("dtls");
    let (up, _) = established(&mut b);
    handle(
        &mut b,
        now(),
        UP,
        target_ip(),
        from_target(&up, "INVITE", OFFER),
    );
    assert_eq!(
        last_offer(&b),
        format!(
            "offer {key2} btag",
            key2 = text(up.headers.call_id().unwrap())
        )
    );
}

#[test]
fn dtls_caller_is_offered_dtls_again_and_sdes_route_stays_sdes() {
    let mut b = b2bua();
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        req("INVITE", "", DTLS_OFFER),
    );
    let up = request(&out[1]);
    let key = text(up.headers.call_id().unwrap());
    // The caller's DTLS offer goes to the media plane as it is; leg B gets SDES.
    assert_eq!(last_offer(&b), format!("offer {key} atag"));
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&up, 200, OFFER));
    let Message::Response(ok) = parsed(&out[1]).1 else {
        panic!()
    };
    let a_tag = ok.headers.to().unwrap().tag().map(text).unwrap();
    // The callee puts the call on hold: the caller (DTLS) is re-offered DTLS-SRTP.
    let out = handle(
        &mut b,
        now(),
        UP,
        target_ip(),
        from_target(&up, "INVITE", OFFER),
    );
    assert_eq!(last_offer(&b), format!("offer {key} btag dtls"));
    let re = request(&out[0]);
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), {
        let mut r = re.reply(200, None);
        r.headers.push("Content-Type", "application/sdp");
        r.body = DTLS_OFFER.as_bytes().to_vec();
        Message::Response(r)
    });
    assert_eq!(status(&out[0]), 200);
    // The caller re-offers with SDES: from then on it is offered SDES.
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 2, OFFER),
    );
    let re = request(&out[0]);
    handle(&mut b, now(), UP, target_ip(), answer_to(&re, 200, OFFER));
    handle(&mut b, now(), UP, target_ip(), {
        let mut m = from_target(&up, "INVITE", OFFER);
        if let Message::Request(r) = &mut m {
            r.headers.set("CSeq", "6 INVITE");
            r.headers
                .set("Via", "SIP/2.0/TLS 198.51.100.7:5071;branch=z9hG4bKb10");
        }
        m
    });
    assert_eq!(last_offer(&b), format!("offer {key} btag"));
}

#[test]
fn offer_glare_gets_491_and_an_overlapping_offer_500() {
    let mut b = b2bua();
    let (up, a_tag) = established(&mut b);
    // The caller's re-INVITE (hold) is relayed and pending.
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 2, OFFER),
    );
    assert_eq!(out.len(), 1);
    let re = request(&out[0]);
    let offers = b.media().log.borrow().len();
    // The callee's own re-INVITE crosses it: 491, nothing offered to the media plane.
    let out = handle(
        &mut b,
        now(),
        UP,
        target_ip(),
        from_target(&up, "INVITE", OFFER),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), 491);
    assert_eq!(parsed(&out[0]).0, UP);
    // An UPDATE offer from the callee too; an UPDATE without SDP is relayed.
    let out = handle(
        &mut b,
        now(),
        UP,
        target_ip(),
        from_target(&up, "UPDATE", OFFER),
    );
    assert_eq!(status(&out[0]), 491);
    let out = handle(
        &mut b,
        now(),
        UP,
        target_ip(),
        from_target(&up, "UPDATE", ""),
    );
    assert_eq!(request(&out[0]).method, Method::Update);
    // The caller offers again before its first offer is answered: 500 with Retry-After 0-10.
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 3, OFFER),
    );
    assert_eq!(status(&out[0]), 500);
    let ra: u32 = text(parsed(&out[0]).1.headers().get("Retry-After").unwrap())
        .parse()
        .unwrap();
    assert!(ra <= 10);
    assert_eq!(b.media().log.borrow().len(), offers);
    // The callee answers the first re-INVITE: relayed, and the next offer goes through.
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&re, 200, OFFER));
    assert_eq!((status(&out[0]), parsed(&out[0]).0), (200, TRUNK));
    let out = handle(&mut b, now(), UP, target_ip(), {
        let mut m = from_target(&up, "INVITE", OFFER);
        if let Message::Request(r) = &mut m {
            r.headers.set("CSeq", "7 INVITE");
        }
        m
    });
    assert_eq!(request(&out[0]).method, Method::Invite);
    assert_eq!(parsed(&out[0]).0, TRUNK);
    // A non-2xx final answer (the caller's own glare) also ends the pending exchange.
    let re = request(&out[0]);
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        Message::Response(re.reply(491, None)),
    );
    assert_eq!((status(&out[0]), parsed(&out[0]).0), (491, UP));
    let ack = request(&out[1]);
    assert_eq!(
        (ack.method.clone(), parsed(&out[1]).0),
        (Method::Ack, TRUNK)
    );
    assert_eq!(
        ack.headers.top_via().unwrap().branch(),
        re.headers.top_via().unwrap().branch()
    );
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 4, OFFER),
    );
    assert_eq!(request(&out[0]).method, Method::Invite);
    assert_eq!(b.len(), 1);
}

#[test]
fn a_2xx_without_an_answer_to_a_relayed_offer_is_refused() {
    let mut b = b2bua();
    let (_up, a_tag) = established(&mut b);
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 2, OFFER),
    );
    let re = request(&out[0]);
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&re, 200, ""));
    assert_eq!((status(&out[0]), parsed(&out[0]).0), (488, TRUNK));
    assert_eq!(
        (request(&out[1]).method, parsed(&out[1]).0),
        (Method::Ack, UP)
    );
    // The exchange is over: the next offer goes through.
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 3, OFFER),
    );
    assert_eq!(request(&out[0]).method, Method::Invite);
    assert_eq!(b.len(), 1);
}

#[test]
fn offerless_reinvite_gets_the_offer_in_the_2xx_and_the_answer_in_the_ack() {
    let mut b = b2bua();
    let (up, a_tag) = established(&mut b);
    let key = text(up.headers.call_id().unwrap());
    // The caller re-INVITEs without SDP: relayed without SDP, no offer to the media plane.
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 2, ""),
    );
    let re = request(&out[0]);
    assert!(re.body.is_empty());
    let offers = b.media().log.borrow().len();
    // The callee's 2xx carries its offer: re-offered to the caller, no ACK upstream yet.
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&re, 200, OFFER));
    assert_eq!(out.len(), 1, "{out:?}");
    let (p, m) = parsed(&out[0]);
    let Message::Response(ok) = m else { panic!() };
    assert_eq!((ok.status, p), (200, TRUNK));
    assert_eq!(ok.body, b"v=0 edge-offer\r\n");
    assert_eq!(b.media().log.borrow()[offers], format!("offer {key} btag"));
    // Another offer meanwhile meets glare handling.
    let out = handle(
        &mut b,
        now(),
        UP,
        target_ip(),
        from_target(&up, "UPDATE", OFFER),
    );
    assert_eq!(status(&out[0]), 491);
    // The caller's ACK brings the answer: rewritten into our ACK to the callee.
    let mut ack = from_caller("ACK", &a_tag, 2, OFFER);
    if let Message::Request(r) = &mut ack {
        r.headers.set("CSeq", "2 ACK");
    }
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), ack);
    assert_eq!(out.len(), 1, "{out:?}");
    let fwd = request(&out[0]);
    assert_eq!((fwd.method.clone(), parsed(&out[0]).0), (Method::Ack, UP));
    assert_eq!(fwd.headers.cseq().unwrap().seq, 2);
    assert_eq!(fwd.body, b"v=0 edge-answer\r\n");
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("answer {key} btag Some(\"atag\")")
    );
    // The exchange is over.
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 3, OFFER),
    );
    assert_eq!(request(&out[0]).method, Method::Invite);
    assert_eq!(b.len(), 1);
}

#[test]
fn offerless_reinvite_acked_without_an_answer_hangs_up() {
    let mut b = b2bua();
    let (_up, a_tag) = established(&mut b);
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 2, ""),
    );
    let re = request(&out[0]);
    handle(&mut b, now(), UP, target_ip(), answer_to(&re, 200, OFFER));
    let mut ack = from_caller("ACK", &a_tag, 2, "");
    if let Message::Request(r) = &mut ack {
        r.headers.set("CSeq", "2 ACK");
    }
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), ack);
    let kinds: Vec<(Method, Peer)> = out
        .iter()
        .map(|a| (request(a).method, parsed(a).0))
        .collect();
    assert_eq!(
        kinds,
        [(Method::Ack, UP), (Method::Bye, TRUNK), (Method::Bye, UP)]
    );
    assert!(b.is_empty());
}

#[test]
fn unanswered_relayed_offer_gets_408_and_the_call_goes_on() {
    let mut b = b2bua();
    let (_up, a_tag) = established(&mut b);
    let t0 = now();
    let out = handle(
        &mut b,
        t0,
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 2, OFFER),
    );
    assert_eq!(request(&out[0]).method, Method::Invite);
    assert!(tick(&mut b, t0 + Duration::from_secs(1)).is_empty());
    let out = tick(&mut b, t0 + TIMER_B + Duration::from_secs(1));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((status(&out[0]), parsed(&out[0]).0), (408, TRUNK));
    assert_eq!(b.len(), 1);
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        from_caller("INVITE", &a_tag, 3, OFFER),
    );
    assert_eq!(request(&out[0]).method, Method::Invite);
}

#[test]
fn dtls_offers_are_recognised() {
    assert!(offer_keys_with_dtls(DTLS_OFFER.as_bytes()));
    assert!(offer_keys_with_dtls(
        DTLS_OFFER
            .replace("UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
            .as_bytes()
    ));
    assert!(!offer_keys_with_dtls(OFFER.as_bytes()));
    assert!(!offer_keys_with_dtls(b"garbage"));
}
