//! Agent-mode calls and route forks, against a fake media plane.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use super::super::{MediaEvent, Settings, Transmit, TIMER_B};
use super::*;
use crate::config::Config;
use crate::rand::SeededRandom;
use crate::sip::message::Message;

#[derive(Default)]
struct Fake {
    log: RefCell<Vec<String>>,
    live: RefCell<HashSet<String>>,
}

impl MediaPlane for Fake {
    fn offer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.log.borrow_mut().push(format!("offer {}", n.call_id));
        self.live.borrow_mut().insert(n.call_id.to_string());
        Ok("v=0 edge-offer\r\n".into())
    }
    fn offer_with(
        &self,
        n: &Negotiation<'_>,
        _opts: &crate::media::calls::OfferOptions,
    ) -> Result<String, CallError> {
        self.offer(n)
    }
    fn answer(&self, _n: &Negotiation<'_>) -> Result<String, CallError> {
        Ok("v=0 edge-answer\r\n".into())
    }
    fn delete(&self, call_id: &str) {
        self.live.borrow_mut().remove(call_id);
        self.log.borrow_mut().push(format!("delete {call_id}"));
    }
    fn live(&self) -> HashSet<String> {
        self.live.borrow().clone()
    }
    fn offer_agent(
        &self,
        n: &Negotiation<'_>,
        agent: &str,
        meta: ForkMeta,
    ) -> Result<String, CallError> {
        self.log.borrow_mut().push(format!(
            "agent {} {agent} {} {}",
            n.call_id, meta.from, meta.to
        ));
        if n.sdp.windows(8).any(|w| w == b"RTP/AVP ") {
            return Err(CallError::Policy(
                crate::sdp::policy::PolicyError::PlaintextMedia { index: 0 },
            ));
        }
        self.live.borrow_mut().insert(n.call_id.to_string());
        Ok("v=0 agent-answer\r\n".into())
    }
    fn reoffer_agent(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.log
            .borrow_mut()
            .push(format!("reoffer {} {}", n.call_id, n.from_tag));
        if n.sdp.windows(8).any(|w| w == b"RTP/AVP ") {
            return Err(CallError::Policy(
                crate::sdp::policy::PolicyError::PlaintextMedia { index: 0 },
            ));
        }
        Ok("v=0 agent-reanswer\r\n".into())
    }
    fn fork(&self, call_id: &str, backend: &str, meta: ForkMeta) -> Result<(), CallError> {
        self.log
            .borrow_mut()
            .push(format!("fork {call_id} {backend} {}", meta.route));
        Ok(())
    }
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n";
const TRUNK: Peer = Peer::Conn(7);

fn b2bua() -> B2bua<Fake> {
    let c = Config::from_toml_str(
        "[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:8765/s\"\n\
         [[trunks]]\nname = \"t\"\nfrom = [\"192.0.2.0/24\"]\n\
         [[routes]]\nuser_prefix = \"+1555\"\ntarget = \"wss://127.0.0.1:8765/s\"\n\
         [[routes]]\ntarget = \"sip:198.51.100.7:5071;transport=tls\"\nfork = \"ai\"\n",
    )
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
        Box::new(SeededRandom::new(3)),
    )
}

fn drain(b: &mut B2bua<Fake>) -> Vec<Transmit> {
    while b.poll_event().is_some() {}
    std::iter::from_fn(|| b.poll_transmit()).collect()
}

fn handle(b: &mut B2bua<Fake>, now: Instant, peer: Peer, ip: IpAddr, m: Message) -> Vec<Transmit> {
    b.handle_message(now, peer, ip, m);
    drain(b)
}

fn tick(b: &mut B2bua<Fake>, now: Instant) -> Vec<Transmit> {
    b.handle_timeout(now);
    drain(b)
}

fn connected(b: &mut B2bua<Fake>, key: &str) -> Vec<Transmit> {
    b.handle_media(t0(), MediaEvent::AgentConnected(key.to_string()));
    drain(b)
}

fn hangup(b: &mut B2bua<Fake>, key: &str) -> Vec<Transmit> {
    b.handle_media(t0(), MediaEvent::AgentHangup(key.to_string()));
    drain(b)
}

/// A fixed origin for the simulated clock.
fn t0() -> Instant {
    crate::sip::test_origin()
}

fn ip() -> IpAddr {
    "192.0.2.5".parse().unwrap()
}

fn req(method: &str, user: &str, extra: &str, body: &str) -> Message {
    let raw = format!(
        "{method} sip:{user}@edge.example SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.5:5061;branch=z9hG4bKa1\r\n\
         Max-Forwards: 70\r\nFrom: \"Alice\" <sip:+15550001111@carrier.example>;tag=atag\r\n\
         To: <sip:{user}@edge.example>{extra}\r\nCall-ID: a-call@192.0.2.5\r\n\
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

/// An agent INVITE: 100 only, and the call's key.
fn invite(b: &mut B2bua<Fake>) -> String {
    let out = handle(
        b,
        t0(),
        TRUNK,
        ip(),
        req("INVITE", "+15551234567", "", OFFER),
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(status(&out[0]), 100);
    let log = b.media().log.borrow().last().cloned().unwrap();
    assert!(log.starts_with("agent "), "{log}");
    assert!(log.ends_with(" ai +15550001111 +15551234567"), "{log}");
    log.split(' ').nth(1).unwrap().to_string()
}

/// An agent call answered (the backend connected): its key and the `;tag=` of our To.
fn answered(b: &mut B2bua<Fake>) -> (String, String) {
    let key = invite(b);
    assert!(connected(b, "unknown").is_empty());
    let out = connected(b, &key);
    let (p, Message::Response(ok)) = parsed(&out[0]) else {
        panic!()
    };
    assert_eq!((p, ok.status), (TRUNK, 200));
    assert_eq!(ok.body, b"v=0 agent-answer\r\n");
    assert!(ok.headers.get("Contact").is_some());
    let tag = ok
        .headers
        .to()
        .unwrap()
        .tag()
        .map(|t| String::from_utf8_lossy(t).into_owned());
    let to = format!(";tag={}", tag.unwrap());
    // Connected twice: no second 200.
    assert!(connected(b, &key).is_empty());
    (key, to)
}

#[test]
fn answered_when_the_backend_connects_and_refreshes_keep_the_answer() {
    let mut b = b2bua();
    let (key, to) = answered(&mut b);
    assert!(handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("ACK", "+15551234567", &to, "")
    )
    .is_empty());
    // The same INVITE body again (session refresh) keeps the answer.
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("INVITE", "+15551234567", &to, OFFER),
    );
    assert_eq!(status(&out[0]), 200);
    let Message::Response(r) = parsed(&out[0]).1 else {
        panic!()
    };
    assert_eq!(r.body, b"v=0 agent-answer\r\n");
    // An offerless re-INVITE gets the SDP in force as our offer.
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("INVITE", "+15551234567", &to, ""),
    );
    let Message::Response(r) = parsed(&out[0]).1 else {
        panic!()
    };
    assert_eq!((r.status, &r.body[..]), (200, &b"v=0 agent-answer\r\n"[..]));
    // A new offer (hold, re-key, new address) is answered by the media plane.
    let other = OFFER.replace("4000", "4002");
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("INVITE", "+15551234567", &to, &other),
    );
    let Message::Response(r) = parsed(&out[0]).1 else {
        panic!()
    };
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"v=0 agent-reanswer\r\n"[..])
    );
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("reoffer {key} atag")
    );
    // Repeated (a retransmission-free refresh with the same body): no new negotiation.
    let n = b.media().log.borrow().len();
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("UPDATE", "+15551234567", &to, &other),
    );
    assert_eq!(status(&out[0]), 200);
    assert_eq!(b.media().log.borrow().len(), n);
}

#[test]
fn a_refused_reoffer_keeps_the_media_and_the_caller_bye_deletes_the_call() {
    let mut b = b2bua();
    let (key, to) = answered(&mut b);
    // A plaintext re-offer: 488 with the reason, and the media in force stays.
    let plain = OFFER.replace("RTP/SAVP", "RTP/AVP");
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("INVITE", "+15551234567", &to, &plain),
    );
    let Message::Response(r) = parsed(&out[0]).1 else {
        panic!()
    };
    assert_eq!(r.status, 488);
    assert!(r
        .headers
        .get("Warning")
        .is_some_and(|w| String::from_utf8_lossy(w).contains("SRTP required")));
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("INVITE", "+15551234567", &to, ""),
    );
    let Message::Response(r) = parsed(&out[0]).1 else {
        panic!()
    };
    assert_eq!(&r.body[..], b"v=0 agent-answer\r\n");
    // From another address: refused.
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        "192.0.2.9".parse().unwrap(),
        req("BYE", "+15551234567", &to, ""),
    );
    assert_eq!(status(&out[0]), 403);
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("BYE", "+15551234567", &to, ""),
    );
    assert_eq!(status(&out[0]), 200);
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("delete {key}")
    );
    assert!(b.is_empty());
    // The backend's late hangup is ignored.
    assert!(hangup(&mut b, &key).is_empty());
}

#[test]
fn backend_hangup_sends_bye_to_the_caller() {
    let mut b = b2bua();
    let key = invite(&mut b);
    let out = connected(&mut b, &key);
    let Message::Response(ok) = parsed(&out[0]).1 else {
        panic!()
    };
    let our_tag = ok.headers.to().unwrap().tag().unwrap().to_vec();
    let out = hangup(&mut b, &key);
    let (p, Message::Request(bye)) = parsed(&out[0]) else {
        panic!()
    };
    assert_eq!((p, bye.method.clone()), (TRUNK, Method::Bye));
    assert_eq!(
        bye.uri.to_string(),
        "sip:alice@192.0.2.5:5061;transport=tls"
    );
    assert_eq!(bye.headers.call_id().unwrap(), b"a-call@192.0.2.5");
    assert_eq!(bye.headers.from().unwrap().tag(), Some(&our_tag[..]));
    assert_eq!(bye.headers.to().unwrap().tag(), Some(&b"atag"[..]));
    assert_eq!(bye.headers.cseq().unwrap().seq, 2);
    assert!(b.is_empty());
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("delete {key}")
    );
}

#[test]
fn unreachable_backend_cancel_timeout_and_plaintext() {
    let mut b = b2bua();
    let key = invite(&mut b);
    let out = hangup(&mut b, &key);
    assert_eq!(status(&out[0]), 503);
    assert!(b.is_empty());
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("delete {key}")
    );

    let key = invite(&mut b);
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("CANCEL", "+15551234567", "", ""),
    );
    assert_eq!((status(&out[0]), status(&out[1])), (200, 487));
    assert!(b.is_empty());
    assert!(connected(&mut b, &key).is_empty());

    let start = t0();
    let key = invite(&mut b);
    assert!(tick(&mut b, start + Duration::from_secs(1)).is_empty());
    let out = tick(&mut b, start + TIMER_B + Duration::from_secs(1));
    assert_eq!(status(&out[0]), 503);
    assert!(b.is_empty());
    assert_eq!(
        b.media().log.borrow().last().unwrap(),
        &format!("delete {key}")
    );

    let plain = OFFER.replace("RTP/SAVP", "RTP/AVP");
    let out = handle(
        &mut b,
        t0(),
        TRUNK,
        ip(),
        req("INVITE", "+15551234567", "", &plain),
    );
    assert_eq!(status(&out[1]), 488);
    assert!(b.is_empty());
}

#[test]
fn media_timeout_of_an_agent_call_sends_bye() {
    let mut b = b2bua();
    let key = invite(&mut b);
    connected(&mut b, &key);
    let start = t0();
    assert!(tick(&mut b, start).is_empty());
    b.media().live.borrow_mut().remove(&key);
    let out = tick(&mut b, start + super::super::AUDIT_EVERY);
    let Message::Request(bye) = parsed(&out[0]).1 else {
        panic!()
    };
    assert_eq!(bye.method, Method::Bye);
    assert!(b.is_empty());
}

#[test]
fn a_route_with_a_fork_forks_the_relayed_call() {
    let mut b = b2bua();
    let out = handle(&mut b, t0(), TRUNK, ip(), req("INVITE", "+4930", "", OFFER));
    assert_eq!(status(&out[0]), 100);
    let Message::Request(up) = parsed(&out[1]).1 else {
        panic!()
    };
    let key = String::from_utf8_lossy(up.headers.call_id().unwrap()).into_owned();
    let log = b.media().log.borrow().clone();
    assert_eq!(
        log,
        [format!("offer {key}"), format!("fork {key} ai route1")]
    );
}
