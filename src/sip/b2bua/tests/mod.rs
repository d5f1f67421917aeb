//! The B2BUA against a fake media plane: call setup, relays, timers, teardown (this file) and
//! offer/answer inside a dialog (`exchange`).

mod exchange;

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::wire::text;
use super::*;
use crate::config::Config;
use crate::media::calls::{offer_keys_with_dtls, CallError, Negotiation, OfferOptions};
use crate::rand::SeededRandom;
use crate::sdp::policy::PolicyError;
use crate::sip::message::Request;
use crate::sip::method::Method;

/// The media plane stand-in: answers with marked SDP, refuses `RTP/AVP ` offers and
/// answers as plaintext, and records every call.
#[derive(Default)]
struct Fake {
    log: RefCell<Vec<String>>,
    live: RefCell<std::collections::HashSet<String>>,
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n";

impl MediaPlane for Fake {
    fn offer_with(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError> {
        let keying = if opts.dtls { " dtls" } else { "" };
        self.log
            .borrow_mut()
            .push(format!("offer {} {}{keying}", n.call_id, n.from_tag));
        if n.sdp.windows(8).any(|w| w == b"RTP/AVP ") {
            return Err(CallError::Policy(PolicyError::PlaintextMedia { index: 0 }));
        }
        self.live.borrow_mut().insert(n.call_id.to_string());
        Ok("v=0 edge-offer\r\n".into())
    }
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.log.borrow_mut().push(format!(
            "answer {} {} {:?}",
            n.call_id, n.from_tag, n.to_tag
        ));
        if n.sdp.windows(8).any(|w| w == b"RTP/AVP ") {
            return Err(CallError::Policy(PolicyError::PlaintextMedia { index: 0 }));
        }
        Ok("v=0 edge-answer\r\n".into())
    }
    fn delete(&self, call_id: &str) {
        self.live.borrow_mut().remove(call_id);
        self.log.borrow_mut().push(format!("delete {call_id}"));
    }
    fn live(&self) -> std::collections::HashSet<String> {
        self.live.borrow().clone()
    }
}

fn b2bua() -> B2bua<Fake> {
    b2bua_keyed("sdes")
}

/// The B2BUA with its one route offering `keying` (`media_keying`).
fn b2bua_keyed(keying: &str) -> B2bua<Fake> {
    let c = Config::from_toml_str(&format!(
        "[[trunks]]\nname = \"t\"\nfrom = [\"192.0.2.0/24\"]\n\
         [[routes]]\ntarget = \"sip:198.51.100.7:5071;transport=tls\"\nmedia_keying = \"{keying}\"\n",
    ))
    .unwrap();
    B2bua::new(
        Settings {
            local: "203.0.113.1:5061".into(),
            trunks: c.trunks,
            routes: c.routes,
            suites: c.media.suites,
            timer_b: TIMER_B,
        },
        Fake::default(),
        Box::new(SeededRandom::new(12)),
    )
}

/// Everything the B2BUA sends after one input.
fn drain(b: &mut B2bua<Fake>) -> Vec<Transmit> {
    while b.poll_event().is_some() {}
    std::iter::from_fn(|| b.poll_transmit()).collect()
}

/// One message in, what goes out.
fn handle(b: &mut B2bua<Fake>, now: Instant, peer: Peer, ip: IpAddr, m: Message) -> Vec<Transmit> {
    b.handle_message(now, peer, ip, m);
    drain(b)
}

/// The clock reaches `now`.
fn tick(b: &mut B2bua<Fake>, now: Instant) -> Vec<Transmit> {
    b.handle_timeout(now);
    drain(b)
}

/// A connection event, what goes out.
fn conn(b: &mut B2bua<Fake>, ev: ConnEvent) -> Vec<Transmit> {
    b.handle_conn(now(), ev);
    drain(b)
}

const TRUNK: Peer = Peer::Conn(7);
const UP: Peer = Peer::Route(0);

fn trunk_ip() -> IpAddr {
    "192.0.2.5".parse().unwrap()
}

fn target_ip() -> IpAddr {
    "198.51.100.7".parse().unwrap()
}

fn req(method: &str, extra: &str, body: &str) -> Message {
    let raw = format!(
        "{method} sip:+15551234567@edge.example SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.5:5061;branch=z9hG4bKa1\r\n\
         Max-Forwards: 70\r\nFrom: \"Alice\" <sip:+15550001111@carrier.example>;tag=atag\r\n\
         To: <sip:+15551234567@edge.example>{extra}\r\nCall-ID: a-call@192.0.2.5\r\n\
         CSeq: 1 {method}\r\nContact: <sip:alice@192.0.2.5:5061;transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Message::parse(raw.as_bytes()).unwrap()
}

fn parsed(a: &Transmit) -> (Peer, Message) {
    (a.to, Message::parse(&a.bytes).unwrap())
}

fn status(a: &Transmit) -> u16 {
    match parsed(a).1 {
        Message::Response(r) => r.status,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

fn request(a: &Transmit) -> Request {
    match parsed(a).1 {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {}", r.status),
    }
}

/// A response from the target to `r` with To tag `btag`.
fn answer_to(r: &Request, status: u16, body: &str) -> Message {
    let mut resp = r.reply(status, Some(b"btag"));
    resp.headers
        .push("Contact", "<sip:bob@198.51.100.7:5071;transport=tls>");
    if !body.is_empty() {
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = body.as_bytes().to_vec();
    }
    Message::Response(resp)
}

/// A fixed origin for the simulated clock.
fn now() -> Instant {
    crate::sip::test_origin()
}

/// Sets up a call to the point of the upstream INVITE; returns it.
fn invite(b: &mut B2bua<Fake>) -> Request {
    let out = handle(b, now(), TRUNK, trunk_ip(), req("INVITE", "", OFFER));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(&out[0]), 100);
    assert_eq!(parsed(&out[1]).0, UP);
    request(&out[1])
}

#[test]
fn options_register_and_strangers() {
    let mut b = b2bua();
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), req("OPTIONS", "", ""));
    assert_eq!(status(&out[0]), 200);
    assert!(parsed(&out[0]).1.headers().get("Allow").is_some());
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), req("REGISTER", "", ""));
    assert_eq!(status(&out[0]), 405);
    assert_eq!(
        parsed(&out[0]).1.headers().get("Allow"),
        Some(ALLOW.as_bytes())
    );
    let stranger: IpAddr = "192.0.3.5".parse().unwrap();
    let out = handle(&mut b, now(), TRUNK, stranger, req("INVITE", "", OFFER));
    assert_eq!(status(&out[0]), 403);
    assert!(b.media().log.borrow().is_empty());
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), req("BYE", ";tag=zz", ""));
    assert_eq!(status(&out[0]), 481);
    assert!(handle(&mut b, now(), TRUNK, trunk_ip(), req("ACK", ";tag=zz", "")).is_empty());
}

#[test]
fn trunk_by_client_certificate() {
    let mut b = b2bua();
    let elsewhere: IpAddr = "203.0.113.77".parse().unwrap();
    let out = handle(
        &mut b,
        now(),
        Peer::Conn(3),
        elsewhere,
        req("OPTIONS", "", ""),
    );
    assert_eq!(status(&out[0]), 403);
    conn(&mut b, ConnEvent::Identified { conn: 3, trunk: 0 });
    let out = handle(
        &mut b,
        now(),
        Peer::Conn(3),
        elsewhere,
        req("OPTIONS", "", ""),
    );
    assert_eq!(status(&out[0]), 200);
    let out = handle(
        &mut b,
        now(),
        Peer::Conn(4),
        elsewhere,
        req("OPTIONS", "", ""),
    );
    assert_eq!(status(&out[0]), 403);
    conn(&mut b, ConnEvent::Closed { conn: 3 });
    let out = handle(
        &mut b,
        now(),
        Peer::Conn(3),
        elsewhere,
        req("OPTIONS", "", ""),
    );
    assert_eq!(status(&out[0]), 403);
}

#[test]
fn invalid_requests_get_the_validator_status() {
    let mut b = b2bua();
    let raw = "INVITE sip:x@edge.example SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.5;branch=z9hG4bKa1\r\n\
               Max-Forwards: 0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@edge.example>\r\nCall-ID: c\r\n\
               CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        Message::parse(raw.as_bytes()).unwrap(),
    );
    assert_eq!(status(&out[0]), 483);
}

#[test]
fn call_setup_relay_and_bye_with_topology_hidden() {
    let mut b = b2bua();
    let up = invite(&mut b);
    let bytes = String::from_utf8_lossy(&up.to_bytes()).into_owned();
    for leak in [
        "192.0.2.5",
        "a-call",
        "carrier.example",
        "atag",
        "Alice",
        "edge.example",
    ] {
        assert!(!bytes.contains(leak), "{leak} leaked upstream:\n{bytes}");
    }
    assert!(bytes.starts_with("INVITE sip:+15551234567@198.51.100.7:5071;transport=tls SIP/2.0"));
    assert!(bytes.contains("From: <sip:+15550001111@203.0.113.1>;tag="));
    assert!(bytes.contains("edge-offer"));
    let key = text(up.headers.call_id().unwrap());
    assert_eq!(b.media().log.borrow()[0], format!("offer {key} atag"));

    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&up, 180, ""));
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), 180);
    assert_eq!(parsed(&out[0]).0, TRUNK);

    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&up, 200, OFFER));
    assert_eq!(out.len(), 2, "{out:?}");
    let ack = request(&out[0]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(parsed(&out[0]).0, UP);
    assert_eq!(
        ack.uri.to_string(),
        "sip:bob@198.51.100.7:5071;transport=tls"
    );
    let (p, ok) = parsed(&out[1]);
    assert_eq!(p, TRUNK);
    let Message::Response(ok) = ok else { panic!() };
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"v=0 edge-answer\r\n");
    let ok_bytes = String::from_utf8_lossy(&ok.to_bytes()).into_owned();
    assert!(
        !ok_bytes.contains("198.51.100.7")
            && !ok_bytes.contains("btag")
            && !ok_bytes.contains(&key)
    );
    let a_tag = ok.headers.to().unwrap().tag().map(text).unwrap();
    assert_eq!(
        b.media().log.borrow()[1],
        format!("answer {key} atag Some(\"btag\")")
    );

    // ACK from A is absorbed; BYE from A: 200 to A, BYE upstream, ports released.
    assert!(handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        req("ACK", &format!(";tag={a_tag}"), "")
    )
    .is_empty());
    let out = handle(
        &mut b,
        now(),
        TRUNK,
        trunk_ip(),
        req("BYE", &format!(";tag={a_tag}"), ""),
    );
    assert_eq!(status(&out[0]), 200);
    let bye = request(&out[1]);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(text(bye.headers.call_id().unwrap()), key);
    assert_eq!(bye.headers.to().unwrap().tag(), Some(&b"btag"[..]));
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("delete {key}")
    );
    assert!(b.is_empty());
}

fn established(b: &mut B2bua<Fake>) -> (Request, String) {
    let up = invite(b);
    let out = handle(b, now(), UP, target_ip(), answer_to(&up, 200, OFFER));
    let Message::Response(ok) = parsed(&out[1]).1 else {
        panic!()
    };
    (up, ok.headers.to().unwrap().tag().map(text).unwrap())
}

/// A request from the target in the dialog of `up`.
fn from_target(up: &Request, method: &str, body: &str) -> Message {
    let from = up.headers.get("From").map(text).unwrap();
    let key = text(up.headers.call_id().unwrap());
    let raw = format!(
        "{method} sip:edge@203.0.113.1:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 198.51.100.7:5071;branch=z9hG4bKb9\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@198.51.100.7>;tag=btag\r\nTo: {from}\r\nCall-ID: {key}\r\n\
         CSeq: 5 {method}\r\nContact: <sip:bob@198.51.100.7:5071;transport=tls>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Message::parse(raw.as_bytes()).unwrap()
}

#[test]
fn bye_from_the_callee_reaches_the_caller() {
    let mut b = b2bua();
    let (up, a_tag) = established(&mut b);
    // From the target's address but on a new inbound connection.
    let out = handle(
        &mut b,
        now(),
        Peer::Conn(9),
        target_ip(),
        from_target(&up, "BYE", ""),
    );
    assert_eq!(status(&out[0]), 200);
    assert_eq!(parsed(&out[0]).0, Peer::Conn(9));
    let bye = request(&out[1]);
    assert_eq!(parsed(&out[1]).0, TRUNK);
    assert_eq!(
        bye.uri.to_string(),
        "sip:alice@192.0.2.5:5061;transport=tls"
    );
    assert_eq!(text(bye.headers.call_id().unwrap()), "a-call@192.0.2.5");
    assert_eq!(bye.headers.from().unwrap().tag().map(text), Some(a_tag));
    assert_eq!(bye.headers.to().unwrap().tag(), Some(&b"atag"[..]));
    assert!(b.is_empty());
    // The same BYE from elsewhere is not accepted for a live dialog.
    let (up, _) = established(&mut b);
    let out = handle(
        &mut b,
        now(),
        Peer::Conn(9),
        trunk_ip(),
        from_target(&up, "BYE", ""),
    );
    assert_eq!(status(&out[0]), 403);
    assert_eq!(b.len(), 1);
}

#[test]
fn reinvite_from_the_callee_is_offered_to_the_caller() {
    let mut b = b2bua();
    let (up, _) = established(&mut b);
    let key = text(up.headers.call_id().unwrap());
    let out = handle(
        &mut b,
        now(),
        UP,
        target_ip(),
        from_target(&up, "INVITE", OFFER),
    );
    assert_eq!(out.len(), 1);
    let re = request(&out[0]);
    assert_eq!(parsed(&out[0]).0, TRUNK);
    assert_eq!(re.body, b"v=0 edge-offer\r\n");
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("offer {key} btag")
    );
    // The caller answers: the answer goes back rewritten, the caller is ACKed.
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), {
        let mut r = re.reply(200, None);
        r.headers.push("Content-Type", "application/sdp");
        r.body = OFFER.as_bytes().to_vec();
        Message::Response(r)
    });
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(&out[0]), 200);
    assert_eq!(parsed(&out[0]).0, UP);
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("answer {key} btag Some(\"atag\")")
    );
    let ack = request(&out[1]);
    assert_eq!((ack.method, parsed(&out[1]).0), (Method::Ack, TRUNK));
}

#[test]
fn reinvite_info_and_unknown_methods_from_the_caller() {
    let mut b = b2bua();
    let (up, a_tag) = established(&mut b);
    let key = text(up.headers.call_id().unwrap());
    let to = format!(";tag={a_tag}");
    // re-INVITE from the caller (hold, re-key): offered upstream with CSeq 2 in leg B's space.
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), req("INVITE", &to, OFFER));
    assert_eq!(out.len(), 1, "{out:?}");
    let re = request(&out[0]);
    assert_eq!(parsed(&out[0]).0, UP);
    assert_eq!(re.headers.cseq().unwrap().seq, 2);
    assert_eq!(text(re.headers.call_id().unwrap()), key);
    assert_eq!(
        re.uri.to_string(),
        "sip:bob@198.51.100.7:5071;transport=tls"
    );
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("offer {key} atag")
    );
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&re, 200, OFFER));
    assert_eq!(status(&out[0]), 200);
    assert_eq!(parsed(&out[0]).0, TRUNK);
    assert_eq!(parsed(&out[1]).0, UP);
    assert_eq!(request(&out[1]).method, Method::Ack);
    assert_eq!(request(&out[1]).headers.cseq().unwrap().seq, 2);
    // INFO (DTMF) is relayed with its body; the answer comes back.
    let mut info = req("INFO", &to, "Signal=5\r\nDuration=160\r\n");
    if let Message::Request(r) = &mut info {
        r.headers.set("Content-Type", "application/dtmf-relay");
        r.headers.set("CSeq", "3 INFO");
    }
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), info);
    let fwd = request(&out[0]);
    assert_eq!(fwd.method, Method::Info);
    assert_eq!(fwd.body, b"Signal=5\r\nDuration=160\r\n");
    assert_eq!(
        fwd.headers.get("Content-Type"),
        Some(&b"application/dtmf-relay"[..])
    );
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&fwd, 200, ""));
    assert_eq!((status(&out[0]), parsed(&out[0]).0), (200, TRUNK));
    // An in-dialog method the edge does not relay.
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), req("REFER", &to, ""));
    assert_eq!(status(&out[0]), 501);
    assert_eq!(b.len(), 1);
}

#[test]
fn plaintext_offer_gets_488_and_no_ports() {
    let mut b = b2bua();
    let plain = OFFER.replace("RTP/SAVP", "RTP/AVP");
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), req("INVITE", "", &plain));
    assert_eq!(status(&out[1]), 488);
    assert_eq!(
        parsed(&out[1]).1.headers().get("Warning"),
        Some(&b"399 srtp-edge \"SRTP required\""[..])
    );
    assert!(b
        .media()
        .log
        .borrow()
        .last()
        .unwrap()
        .starts_with("delete "));
    assert!(b.is_empty());
}

#[test]
fn plaintext_answer_tears_both_legs_down() {
    let mut b = b2bua();
    let up = invite(&mut b);
    let plain = OFFER.replace("RTP/SAVP", "RTP/AVP");
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&up, 200, &plain));
    let kinds: Vec<String> = out
        .iter()
        .map(|a| match parsed(a).1 {
            Message::Request(r) => r.method.to_string(),
            Message::Response(r) => r.status.to_string(),
        })
        .collect();
    assert_eq!(kinds, ["ACK", "488", "BYE"]);
    assert!(b.is_empty());
    assert!(b
        .media()
        .log
        .borrow()
        .last()
        .unwrap()
        .starts_with("delete "));
}

#[test]
fn cancel_then_487_from_the_target() {
    let mut b = b2bua();
    let up = invite(&mut b);
    handle(&mut b, now(), UP, target_ip(), answer_to(&up, 180, ""));
    let out = handle(&mut b, now(), TRUNK, trunk_ip(), req("CANCEL", "", ""));
    assert_eq!(status(&out[0]), 200);
    assert_eq!(status(&out[1]), 487);
    assert_eq!(parsed(&out[1]).0, TRUNK);
    let cancel = request(&out[2]);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(
        cancel.headers.top_via().unwrap().branch(),
        up.headers.top_via().unwrap().branch()
    );
    assert!(b
        .media()
        .log
        .borrow()
        .last()
        .unwrap()
        .starts_with("delete "));
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&up, 487, ""));
    assert_eq!(out.len(), 1);
    assert_eq!(request(&out[0]).method, Method::Ack);
    assert!(b.is_empty());
}

#[test]
fn timer_b_gives_408_and_unreachable_target_503() {
    let mut b = b2bua();
    let t0 = now();
    invite(&mut b);
    assert!(tick(&mut b, t0 + Duration::from_secs(1)).is_empty());
    let out = tick(&mut b, t0 + TIMER_B + Duration::from_secs(1));
    assert_eq!(status(&out[0]), 408);
    assert_eq!(request(&out[1]).method, Method::Cancel);
    assert!(b
        .media()
        .log
        .borrow()
        .last()
        .unwrap()
        .starts_with("delete "));
    // The ports are released at once; the call waits for the final response the CANCEL brings
    // (to ACK it), at most another Timer B.
    assert_eq!(b.len(), 1);
    assert_eq!(
        b.poll_timeout(),
        Some(t0 + TIMER_B + Duration::from_secs(1) + TIMER_B)
    );
    assert!(tick(&mut b, t0 + 2 * TIMER_B + Duration::from_secs(1)).is_empty());
    assert!(b.is_empty());
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(b.stats().calls_ended[Outcome::Timeout.index()], 1);

    invite(&mut b);
    let out = conn(&mut b, ConnEvent::RouteFailed { route: 0 });
    assert_eq!(status(&out[0]), 503);
    assert!(b.is_empty());
    assert!(b
        .media()
        .log
        .borrow()
        .last()
        .unwrap()
        .starts_with("delete "));
}

#[test]
fn media_timeout_hangs_up_both_legs() {
    let mut b = b2bua();
    let (up, _) = established(&mut b);
    let key = text(up.headers.call_id().unwrap());
    let t0 = now();
    assert!(tick(&mut b, t0).is_empty());
    // The engine ends the call on its own (media timeout).
    b.media().live.borrow_mut().remove(&key);
    assert!(
        tick(&mut b, t0 + Duration::from_secs(1)).is_empty(),
        "audited too often"
    );
    let out = tick(&mut b, t0 + AUDIT_EVERY);
    let byes: Vec<Peer> = out
        .iter()
        .filter(|a| request(a).method == Method::Bye)
        .map(|a| parsed(a).0)
        .collect();
    assert_eq!(byes, [TRUNK, UP]);
    assert!(b.is_empty());
}

#[test]
fn error_final_is_relayed_and_acked() {
    let mut b = b2bua();
    let up = invite(&mut b);
    let out = handle(&mut b, now(), UP, target_ip(), answer_to(&up, 486, ""));
    assert_eq!(request(&out[0]).method, Method::Ack);
    assert_eq!(status(&out[1]), 486);
    assert!(b.is_empty());
}
