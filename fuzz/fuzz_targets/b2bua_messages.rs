//! Fuzzes the B2BUA state machine with both peers talking at once: the input is a program of
//! operations (a new INVITE from the trunk, a response or in-dialog request built from the last
//! message the B2BUA sent to either side with fuzzed method/status/SDP/header bytes, raw bytes
//! as a message from either side, ticks that advance the clock past Timer B and the media audit,
//! route failures, connection close, the media plane ending a call, shutdown), on a simulated
//! clock, with the B2BUA's randomness seeded from the input. The media plane is a fake that
//! answers, refuses plain RTP and drops calls at random. Nothing may panic, every message the
//! B2BUA sends parses, and after shutdown no call, transaction or timer is left.
#![no_main]

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srtp_edge::config::Config;
use srtp_edge::media::calls::{CallError, Negotiation, OfferOptions};
use srtp_edge::rand::SeededRandom;
use srtp_edge::sdp::policy::PolicyError;
use srtp_edge::sip::b2bua::{B2bua, ConnEvent, MediaEvent, MediaPlane, Peer, Settings};
use srtp_edge::sip::Message;

#[derive(Default)]
struct FakeMedia {
    live: RefCell<HashSet<String>>,
    fail_next: RefCell<bool>,
}

impl MediaPlane for FakeMedia {
    fn offer_with(&self, n: &Negotiation<'_>, _: &OfferOptions) -> Result<String, CallError> {
        if n.sdp.windows(8).any(|w| w == b"RTP/AVP ") {
            return Err(CallError::Policy(PolicyError::PlaintextMedia { index: 0 }));
        }
        if self.fail_next.replace(false) {
            return Err(CallError::EngineGone);
        }
        self.live.borrow_mut().insert(n.call_id.to_string());
        Ok("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n".into())
    }
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        if n.sdp.windows(8).any(|w| w == b"RTP/AVP ") {
            return Err(CallError::Policy(PolicyError::PlaintextMedia { index: 0 }));
        }
        if !self.live.borrow().contains(n.call_id) {
            return Err(CallError::UnknownCall);
        }
        Ok("v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/SAVP 0\r\n".into())
    }
    fn delete(&self, call_id: &str) {
        self.live.borrow_mut().remove(call_id);
    }
    fn live(&self) -> HashSet<String> {
        self.live.borrow().clone()
    }
}

const SRTP_SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
const PLAIN_SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

const METHODS: [&str; 10] = [
    "BYE", "INVITE", "UPDATE", "INFO", "ACK", "CANCEL", "OPTIONS", "PRACK", "REFER", "MESSAGE",
];
const STATUSES: [u16; 12] = [100, 180, 183, 200, 202, 302, 404, 408, 481, 486, 488, 503];

/// Reads the fuzz input as a stream of small numbers and byte strings.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn bytes(&mut self) -> &[u8] {
        let n = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// The last message the B2BUA sent to each side.
#[derive(Default)]
struct Seen {
    to_a: Option<Message>,
    to_b: Option<Message>,
}

fn header<'a>(m: &'a Message, name: &str) -> &'a [u8] {
    let h = match m {
        Message::Request(r) => &r.headers,
        Message::Response(r) => &r.headers,
    };
    h.get(name).unwrap_or_default()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A request inside the dialog `m` belongs to, sent by the side that received `m`.
/// `m` was sent by the B2BUA: as a request its From is the B2BUA's; as a response its To is.
fn dialog_request(
    m: &Message,
    method: &str,
    cseq: u32,
    sdp: Option<&str>,
    extra: &[u8],
) -> Vec<u8> {
    let call_id = text(header(m, "Call-ID"));
    let (from, to) = match m {
        // The B2BUA's request: we answer in its dialog, From = its To (+ our tag).
        Message::Request(_) => {
            let mut f = text(header(m, "To"));
            if !f.contains("tag=") {
                f.push_str(";tag=btag");
            }
            (f, text(header(m, "From")))
        }
        // The B2BUA's response to our request: From/To as we sent them.
        Message::Response(_) => (text(header(m, "From")), text(header(m, "To"))),
    };
    let body = sdp.unwrap_or("");
    let mut out = format!(
        "{method} sip:edge@203.0.113.1:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.5:5061;branch=z9hG4bK{cseq}{method}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
         Contact: <sip:peer@192.0.2.5:5061;transport=tls>\r\n"
    )
    .into_bytes();
    if !extra.is_empty() {
        out.extend_from_slice(b"X-Fuzz: ");
        out.extend(extra.iter().filter(|b| !matches!(b, b'\r' | b'\n')));
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(b"Content-Type: application/sdp\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    out
}

fn invite(n: u8, sdp: &str, extra: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "INVITE sip:+1555{n}@edge.example SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.5:5061;branch=z9hG4bKinv{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+1555000@carrier.example>;tag=a{n}\r\nTo: <sip:+1555{n}@edge.example>\r\n\
         Call-ID: call-{n}@192.0.2.5\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.5:5061;transport=tls>\r\n"
    )
    .into_bytes();
    if !extra.is_empty() {
        out.extend_from_slice(b"Subject: ");
        out.extend(extra.iter().filter(|b| !matches!(b, b'\r' | b'\n')));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .as_bytes(),
    );
    out
}

/// The B2BUA under test with its simulated clock, the two peers' addresses and what it last
/// sent to each side.
struct Harness {
    b: B2bua<FakeMedia>,
    seen: Seen,
    now: Instant,
    cseq: u32,
    a_ip: IpAddr,
    b_ip: IpAddr,
}

impl Harness {
    fn new(seed: u64) -> Option<Harness> {
        let c = Config::from_toml_str(
            "[[trunks]]\nname = \"t\"\nfrom = [\"192.0.2.0/24\"]\n\
             [[routes]]\nuser_prefix = \"+1555\"\ntarget = \"sips:198.51.100.7:5071\"\n\
             [[routes]]\ntarget = \"sips:pbx.example:5071\"\n",
        )
        .ok()?;
        let b = B2bua::new(
            Settings {
                local: "203.0.113.1:5061".into(),
                trunks: c.trunks,
                routes: c.routes,
                suites: c.media.suites,
                timer_b: Duration::from_secs(32),
            },
            FakeMedia::default(),
            Box::new(SeededRandom::new(seed)),
        );
        let mut h = Harness {
            b,
            seen: Seen::default(),
            now: Instant::now(),
            cseq: 1,
            a_ip: "192.0.2.5".parse().ok()?,
            b_ip: "198.51.100.7".parse().ok()?,
        };
        let ips = vec![h.b_ip];
        h.b.handle_conn(h.now, ConnEvent::RouteResolved { route: 1, ips });
        Some(h)
    }

    /// Hands `bytes` (if they parse) to the B2BUA as a message from `peer`.
    fn feed(&mut self, peer: Peer, ip: IpAddr, bytes: &[u8]) {
        if let Ok(m) = Message::parse(bytes) {
            self.b.handle_message(self.now, peer, ip, m);
            self.record();
        }
    }

    /// Drains what the B2BUA produced; remembers the last message to each side.
    fn record(&mut self) {
        while self.b.poll_event().is_some() {}
        while let Some(t) = self.b.poll_transmit() {
            // Everything the B2BUA sends must be a message that parses.
            let m = Message::parse(&t.bytes).expect("B2BUA output parses");
            match t.to {
                Peer::Conn(_) => self.seen.to_a = Some(m),
                Peer::Route(_) => self.seen.to_b = Some(m),
            }
        }
    }

    /// A response from B (`from_b`) or A to the last request the B2BUA sent it.
    fn respond(&mut self, from_b: bool, peer: Peer, arg: u8) {
        let (last, ip) = if from_b {
            (self.seen.to_b.as_ref(), self.b_ip)
        } else {
            (self.seen.to_a.as_ref(), self.a_ip)
        };
        let Some(Message::Request(r)) = last else {
            return;
        };
        let status = STATUSES[usize::from(arg) % STATUSES.len()];
        let mut resp = r.reply(status, Some(b"btag"));
        resp.headers
            .push("Contact", "<sip:bob@198.51.100.7:5071;transport=tls>");
        if arg & 0x40 != 0 {
            let sdp = if arg & 0x80 != 0 { PLAIN_SDP } else { SRTP_SDP };
            resp.headers.push("Content-Type", "application/sdp");
            resp.body = sdp.as_bytes().to_vec();
        }
        let bytes = resp.to_bytes();
        self.feed(peer, ip, &bytes);
    }

    /// An in-dialog request from B (`from_b`) or A, in the dialog of the last message the
    /// B2BUA sent it.
    fn request(&mut self, from_b: bool, peer: Peer, arg: u8, extra: &[u8]) {
        let (last, ip) = if from_b {
            (self.seen.to_b.as_ref(), self.b_ip)
        } else {
            (self.seen.to_a.as_ref(), self.a_ip)
        };
        let Some(m) = last else { return };
        let method = METHODS[usize::from(arg) % METHODS.len()];
        let sdp = match arg >> 6 {
            1 => Some(SRTP_SDP),
            2 => Some(PLAIN_SDP),
            _ => None,
        };
        self.cseq = self.cseq.wrapping_add(1);
        let bytes = dialog_request(m, method, self.cseq, sdp, extra);
        self.feed(peer, ip, &bytes);
    }

    /// The clock moves (at most to the next deadline when arg is odd, as the transport's timer
    /// task would wake), and the due timers run: nothing is due in the past afterwards.
    fn tick(&mut self, arg: u8) {
        let step = self.now + Duration::from_millis(u64::from(arg) * 250);
        self.now = match self.b.poll_timeout() {
            Some(t) if arg & 1 == 1 && t > self.now => t.min(step),
            _ => step,
        };
        self.b.handle_timeout(self.now);
        self.record();
        assert!(self.b.poll_timeout().is_none_or(|t| t > self.now));
    }

    /// Connection events, or the media plane refusing its next offer.
    fn conn(&mut self, arg: u8) {
        let conn = u64::from(arg % 3);
        match arg % 3 {
            0 => self.b.handle_conn(self.now, ConnEvent::Closed { conn }),
            1 => self
                .b
                .handle_conn(self.now, ConnEvent::Identified { conn, trunk: 0 }),
            _ => {
                self.b.media().fail_next.replace(true);
            }
        }
    }

    /// The media plane ends a call on its own (media timeout), telling the B2BUA when arg is
    /// odd (else the audit finds out).
    fn media_ends_a_call(&mut self, arg: u8) {
        let first = self.b.media().live.borrow().iter().next().cloned();
        if let Some(k) = first {
            self.b.media().delete(&k);
            if arg & 1 == 1 {
                self.b.handle_media(self.now, MediaEvent::Ended(k));
                self.record();
            }
        }
    }

    /// One operation of the program.
    fn op(&mut self, op: u8, arg: u8, input: &mut Input<'_>) {
        let conn = Peer::Conn(u64::from(arg % 3));
        let route = Peer::Route(usize::from(arg % 2));
        match op % 10 {
            0 => {
                let sdp = if arg & 0x80 != 0 { PLAIN_SDP } else { SRTP_SDP };
                let bytes = invite(arg % 4, sdp, input.bytes());
                self.feed(conn, self.a_ip, &bytes);
            }
            1 => self.respond(true, route, arg),
            2 => self.respond(false, conn, arg),
            3 => self.request(true, route, arg, &input.bytes().to_vec()),
            4 => self.request(false, conn, arg, &input.bytes().to_vec()),
            5 => {
                // Raw bytes as a message from either side.
                let raw = input.bytes().to_vec();
                if arg & 1 == 0 {
                    self.feed(conn, self.a_ip, &raw);
                } else {
                    self.feed(route, self.b_ip, &raw);
                }
            }
            6 => self.tick(arg),
            7 => {
                let route = usize::from(arg % 2);
                self.b
                    .handle_conn(self.now, ConnEvent::RouteFailed { route });
                self.record();
            }
            8 => self.conn(arg),
            _ => self.media_ends_a_call(arg),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let seed = input
        .bytes()
        .iter()
        .fold(0u64, |s, &x| s.rotate_left(8) ^ u64::from(x));
    let Some(mut h) = Harness::new(seed) else {
        return;
    };
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 64 {
            break;
        }
        let arg = input.byte().unwrap_or(0);
        h.op(op, arg, &mut input);
    }
    h.b.shutdown();
    h.record();
    assert!(h.b.is_empty(), "calls left after shutdown");
    assert_eq!(h.b.transactions(), 0, "transactions left after shutdown");
    assert_eq!(h.b.poll_timeout(), None, "timers left after shutdown");
    assert!(
        h.b.media().live.borrow().is_empty(),
        "media left after shutdown"
    );
});
