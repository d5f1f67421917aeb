//! The simulated-time driver: the real B2BUA and the real call table (`Calls` on a one-worker
//! `Engine`) between two simulated SIP peers (a trunk's caller and a route target's callee), on
//! a virtual clock, without SIP sockets and without sleeping — in the spirit of quinn-proto's
//! `Pair` and str0m's `progress()`.
//!
//! - Every message crosses a simulated [`Network`] as bytes (serialized and parsed again), with a
//!   latency drawn from the seed and FIFO order per direction of a link (TLS over TCP never
//!   reorders), so which of two messages sent at the same time on different links arrives first
//!   (a CANCEL and a 200, two crossing re-INVITEs) is decided by the seed.
//! - [`Sim::run_until`] advances the clock to the next event — a delivery, or the B2BUA's
//!   `poll_timeout()` — runs it, and repeats; Timer B (32 s) passes in microseconds.
//! - The peers are scripted by the test: [`Sim::send`] puts a message on the wire at the current
//!   time; [`Sim::take_request`] / [`Sim::take_response`] pop what a peer received.
//! - Everything random (the B2BUA's tags, branches and Call-IDs, the peers' tags and keys, the
//!   latencies) comes from the seed: a failing run replays exactly with `SIM_SEED=<seed>` (the
//!   panic message says which seed, and the trace of every delivery). Only the media plane's
//!   own SDES keys still come from the OS (they do not steer any SIP decision).
//!
//! Extending it (DTLS legs, the CallTable): another component joins by exposing
//! `poll_timeout()`/`handle_timeout(now)` ([`Clocked`]) and, for datagrams, a second
//! [`Network`] of its own (the network is generic over its endpoints, with optional loss).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use srtp_edge::config::Config;
use srtp_edge::media::calls::Calls;
use srtp_edge::media::engine::Engine;
use srtp_edge::rand::{Random, SeededRandom};
use srtp_edge::sip::b2bua::{B2bua, Event, Outcome, Peer, Settings, Transmit, TIMER_B};
use srtp_edge::sip::{Headers, Message, Method, Request, Response};

/// Another clocked component of a simulation (a DTLS leg, a media worker's timers).
pub trait Clocked {
    /// Its next deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The clock reached a deadline.
    fn handle_timeout(&mut self, now: Instant);
}

/// The seeds a test runs with: `SIM_SEED` alone when set (replay), else `0..n`.
pub fn seeds(n: u64) -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (0..n).collect(),
    }
}

/// A simulated network between endpoints of type `E`: per-message latency in `[min, max]`,
/// FIFO per (from, to) link, optional loss (datagram links).
pub struct Network<E> {
    queue: BTreeMap<(Instant, u64), (E, E, Vec<u8>)>,
    last: HashMap<(E, E), Instant>,
    seq: u64,
    /// Latency bounds.
    pub latency: (Duration, Duration),
    /// Share of messages lost, in per mille (0 for the TLS links of SIP).
    pub loss_per_mille: u64,
}

impl<E: Copy + Eq + Hash + Debug> Network<E> {
    /// A lossless network with 1-20 ms of latency.
    pub fn new() -> Self {
        Network {
            queue: BTreeMap::new(),
            last: HashMap::new(),
            seq: 0,
            latency: (Duration::from_millis(1), Duration::from_millis(20)),
            loss_per_mille: 0,
        }
    }

    /// Puts `bytes` on the link `from` → `to` at `now`.
    pub fn send(&mut self, rng: &mut SeededRandom, now: Instant, from: E, to: E, bytes: Vec<u8>) {
        if self.loss_per_mille > 0 && rng.next_u64() % 1000 < self.loss_per_mille {
            return;
        }
        let (lo, hi) = self.latency;
        let spread = (hi - lo).as_micros() as u64 + 1;
        let mut at = now + lo + Duration::from_micros(rng.next_u64() % spread);
        if let Some(prev) = self.last.get(&(from, to)) {
            at = at.max(*prev);
        }
        self.last.insert((from, to), at);
        self.seq += 1;
        self.queue.insert((at, self.seq), (from, to, bytes));
    }

    /// When the next message arrives.
    pub fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    /// The next message due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(E, E, Vec<u8>)> {
        let e = self.queue.first_entry()?;
        (e.key().0 <= now).then(|| e.remove())
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

/// The parties of a SIP simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// srtp-edge.
    Edge,
    /// The trunk's user agent (leg A), on an inbound connection.
    Caller,
    /// The route target (leg B), reached over srtp-edge's connection to it.
    Callee,
}

/// One side of a dialog as a simulated peer holds it.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our From (with our tag).
    pub local: String,
    /// Our To (with the other party's tag once known).
    pub remote: String,
    /// Where in-dialog requests go.
    pub target: String,
    /// Our CSeq.
    pub cseq: u32,
}

/// A simulated SIP user agent: what it received, its dialog, its address.
pub struct Ua {
    /// Messages received and not yet taken by the test.
    pub inbox: VecDeque<Message>,
    /// Its tag.
    pub tag: String,
    /// `host:port` in its Via and Contact.
    pub host: String,
    /// The dialog of its current call.
    pub dialog: Option<Dialog>,
    /// Its last INVITE (the caller's initial one, for CANCEL and ACK of a non-2xx).
    pub invite: Option<Request>,
}

/// The simulation; see the module docs.
pub struct Sim {
    /// The seed everything random derives from.
    pub seed: u64,
    /// The virtual clock.
    pub now: Instant,
    t0: Instant,
    /// srtp-edge's B2BUA over the real call table.
    pub edge: B2bua<Arc<Calls>>,
    /// The call table (also inside `edge`).
    pub calls: Arc<Calls>,
    engine: Arc<Engine>,
    net: Network<Node>,
    /// The peers' and the network's randomness (the B2BUA has its own stream, same seed).
    pub rng: SeededRandom,
    /// The caller (trunk, 192.0.2.5).
    pub caller: Ua,
    /// The callee (route target, 198.51.100.7).
    pub callee: Ua,
    /// One line per delivery and timer, printed when a check fails.
    pub trace: Vec<String>,
    /// The B2BUA's events so far.
    pub events: Vec<Event>,
    /// Other clocked components.
    pub others: Vec<Box<dyn Clocked>>,
}

/// The caller's source address (inside the trunk's prefix).
pub const CALLER_IP: &str = "192.0.2.5";
/// The route target's address.
pub const CALLEE_IP: &str = "198.51.100.7";
const CALLER_CONN: Peer = Peer::Conn(1);
const CALLEE_ROUTE: Peer = Peer::Route(0);

/// srtp-edge's configuration in simulations: one trunk, one route, one media worker, media
/// on loopback.
fn config(extra: &str) -> Config {
    Config::from_toml_str(&format!(
        "[media]\nipv4 = \"127.0.0.1\"\nport_min = 45000\nport_max = 47999\nworkers = 1\n\
         [[trunks]]\nname = \"t\"\nfrom = [\"192.0.2.0/24\"]\n\
         [[routes]]\ntarget = \"sip:{CALLEE_IP}:5071;transport=tls\"\n{extra}"
    ))
    .expect("simulation config")
}

impl Sim {
    /// A simulation from `seed` with the default route (SDES towards the callee).
    pub fn new(seed: u64) -> Sim {
        Sim::with_route(seed, "")
    }

    /// A simulation whose route has the extra TOML `route` (e.g. `media_keying = "dtls"`).
    pub fn with_route(seed: u64, route: &str) -> Sim {
        let cfg = config(route);
        let (engine, _events) = Engine::start(&cfg.media).expect("media engine");
        let identity = Arc::new(srtp_edge::dtls::DtlsIdentity::generate().expect("identity"));
        let calls =
            Calls::with_dtls(engine.clone(), identity, &Default::default()).expect("DTLS config");
        let edge = B2bua::new(
            Settings {
                local: "203.0.113.1:5061".into(),
                trunks: cfg.trunks,
                routes: cfg.routes,
                suites: cfg.media.suites,
                timer_b: TIMER_B,
            },
            calls.clone(),
            Box::new(SeededRandom::new(seed)),
        );
        let mut rng = SeededRandom::new(seed ^ 0x5eed_5eed);
        let ua = |rng: &mut SeededRandom, host: &str| Ua {
            inbox: VecDeque::new(),
            tag: rng.hex(4),
            host: host.to_string(),
            dialog: None,
            invite: None,
        };
        let caller = ua(&mut rng, "192.0.2.5:5061");
        let callee = ua(&mut rng, "198.51.100.7:5071");
        let t0 = Instant::now();
        Sim {
            seed,
            now: t0,
            t0,
            edge,
            calls,
            engine,
            net: Network::new(),
            rng,
            caller,
            callee,
            trace: Vec::new(),
            events: Vec::new(),
            others: Vec::new(),
        }
    }

    /// The user agent of `who`.
    pub fn ua(&mut self, who: Node) -> &mut Ua {
        match who {
            Node::Caller => &mut self.caller,
            Node::Callee => &mut self.callee,
            Node::Edge => panic!("the edge is not a simulated user agent"),
        }
    }

    /// The user agent of `who`, to read.
    pub fn peer(&self, who: Node) -> &Ua {
        match who {
            Node::Caller => &self.caller,
            Node::Callee => &self.callee,
            Node::Edge => panic!("the edge is not a simulated user agent"),
        }
    }

    /// Fails the test with the seed and the trace.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} (replay: SIM_SEED={}): {what}\n--- trace ---\n{}",
            self.seed,
            self.seed,
            self.trace.join("\n")
        )
    }

    /// Checks `cond`, failing with the seed and trace.
    pub fn check(&self, cond: bool, what: &str) {
        if !cond {
            self.fail(what);
        }
    }

    /// `who` sends `m` to srtp-edge now.
    pub fn send(&mut self, who: Node, m: &Message) {
        let bytes = m.to_bytes();
        self.trace.push(format!(
            "{:>9.3} ms {who:?} sends {}",
            self.ms(),
            first_line(&bytes)
        ));
        self.net
            .send(&mut self.rng, self.now, who, Node::Edge, bytes);
    }

    /// Milliseconds since the start of the simulation (for the trace).
    fn ms(&self) -> f64 {
        self.now.duration_since(self.start()).as_secs_f64() * 1000.0
    }

    /// When the simulation started.
    pub fn start(&self) -> Instant {
        self.t0
    }

    /// The next instant anything happens (a delivery or a timer).
    fn next_event(&self) -> Option<Instant> {
        [
            self.net.next(),
            self.edge.poll_timeout(),
            self.others.iter().filter_map(|o| o.poll_timeout()).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs everything due by `until` in time order and leaves the clock at `until`.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps = 0;
        while let Some(t) = self.next_event().filter(|t| *t <= until) {
            steps += 1;
            if steps > 100_000 {
                self.fail("simulation does not settle");
            }
            self.now = self.now.max(t);
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Delivers every message in flight (and the timers due meanwhile).
    pub fn settle(&mut self) {
        while let Some(t) = self.net.next() {
            self.run_until(t);
        }
    }

    /// One event at `self.now`: deliveries first, then timers.
    fn step(&mut self) {
        if let Some((from, to, bytes)) = self.net.pop_due(self.now) {
            return self.deliver(from, to, bytes);
        }
        if self.edge.poll_timeout().is_some_and(|t| t <= self.now) {
            self.trace
                .push(format!("{:>9.3} ms edge timers", self.ms()));
            self.edge.handle_timeout(self.now);
            self.drain_edge();
        }
        let now = self.now;
        for o in &mut self.others {
            if o.poll_timeout().is_some_and(|t| t <= now) {
                o.handle_timeout(now);
            }
        }
    }

    fn deliver(&mut self, from: Node, to: Node, bytes: Vec<u8>) {
        self.trace.push(format!(
            "{:>9.3} ms {from:?} -> {to:?}: {}",
            self.ms(),
            first_line(&bytes)
        ));
        let m = match Message::parse(&bytes) {
            Ok(m) => m,
            Err(e) => self.fail(&format!("unparseable message on the wire: {e}")),
        };
        match to {
            Node::Edge => {
                let (peer, ip) = match from {
                    Node::Caller => (CALLER_CONN, CALLER_IP),
                    _ => (CALLEE_ROUTE, CALLEE_IP),
                };
                let ip: IpAddr = ip.parse().expect("ip");
                self.edge.handle_message(self.now, peer, ip, m);
                self.drain_edge();
            }
            who => self.ua(who).inbox.push_back(m),
        }
    }

    /// Puts what the B2BUA produced on the wire.
    fn drain_edge(&mut self) {
        while let Some(e) = self.edge.poll_event() {
            self.events.push(e);
        }
        while let Some(Transmit { to, bytes }) = self.edge.poll_transmit() {
            let to = match to {
                CALLER_CONN => Node::Caller,
                CALLEE_ROUTE => Node::Callee,
                other => self.fail(&format!("message for an unknown peer {other:?}")),
            };
            self.net
                .send(&mut self.rng, self.now, Node::Edge, to, bytes);
        }
    }

    /// The media plane reports `ev` to the B2BUA now.
    pub fn media_event(&mut self, ev: srtp_edge::sip::b2bua::MediaEvent) {
        self.trace
            .push(format!("{:>9.3} ms media: {ev:?}", self.ms()));
        self.edge.handle_media(self.now, ev);
        self.drain_edge();
    }

    /// Pops the first message `who` received that `pred` accepts.
    pub fn take(&mut self, who: Node, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let inbox = &mut self.ua(who).inbox;
        match inbox.iter().position(pred) {
            Some(i) => inbox.remove(i).expect("index"),
            None => {
                let got: Vec<String> = self
                    .ua(who)
                    .inbox
                    .iter()
                    .map(|m| first_line(&m.to_bytes()))
                    .collect();
                self.fail(&format!("{who:?} did not receive {what}; inbox: {got:?}"))
            }
        }
    }

    /// Pops the first `method` request `who` received.
    pub fn take_request(&mut self, who: Node, method: Method) -> Request {
        match self.take(
            who,
            &format!("a {method}"),
            |m| matches!(m, Message::Request(r) if r.method == method),
        ) {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    /// Pops the first response with `status` that `who` received.
    pub fn take_response(&mut self, who: Node, status: u16) -> Response {
        match self.take(
            who,
            &format!("a {status}"),
            |m| matches!(m, Message::Response(r) if r.status == status),
        ) {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!(),
        }
    }

    /// Pops the first response with `status` to a `method` request that `who` received.
    pub fn take_response_to(&mut self, who: Node, status: u16, method: Method) -> Response {
        let what = format!("a {status} to {method}");
        match self.take(who, &what, |m| {
            matches!(m, Message::Response(r) if r.status == status
                && r.headers.cseq().is_ok_and(|c| c.method == method))
        }) {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!(),
        }
    }

    /// True when `who` received nothing not yet taken.
    pub fn nothing_for(&self, who: Node) -> bool {
        self.peer(who).inbox.is_empty()
    }

    /// Statuses and methods in `who`'s inbox, in order (for checks and messages).
    pub fn inbox(&self, who: Node) -> Vec<String> {
        self.peer(who)
            .inbox
            .iter()
            .map(|m| match m {
                Message::Request(r) => r.method.to_string(),
                Message::Response(r) => r.status.to_string(),
            })
            .collect()
    }

    /// How many calls ended with `outcome` so far.
    pub fn ended(&self, outcome: Outcome) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::CallEnded { outcome: o, .. } if *o == outcome))
            .count()
    }

    /// Nothing is left anywhere: no call in the B2BUA, no transaction, no timer, no media
    /// call, no port.
    pub fn assert_clean(&self) {
        self.check(self.edge.is_empty(), "calls left in the B2BUA");
        self.check(self.edge.transactions() == 0, "transactions left");
        self.check(self.edge.poll_timeout().is_none(), "timers left");
        self.check(self.calls.is_empty(), "media calls left");
        self.check(self.engine.ports_in_use() == 0, "media ports left");
    }

    // ----- The peers' side: building what they send. -----

    /// A random number below `n` from the peers' stream (waits, jitter).
    pub fn rng_below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    /// `who` ACKs a final response to its re-INVITE (or any INVITE of its dialog).
    pub fn caller_or_callee_ack(&mut self, who: Node, resp: &Response) {
        let seq = resp.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = self.dialog_message(who, Method::Ack, Some(seq), None);
        self.send(who, &Message::Request(ack));
    }

    /// A fresh branch for `who`'s request.
    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.rng.hex(8))
    }

    /// The caller's INVITE for a new call to `+15551234567` with `sdp` (new Call-ID).
    pub fn caller_invite(&mut self, sdp: &str) -> Request {
        let call_id = format!("{}@192.0.2.5", self.rng.hex(6));
        let from = format!(
            "\"Alice\" <sip:+15550001111@carrier.example>;tag={}",
            self.caller.tag
        );
        let to = "<sip:+15551234567@edge.example>".to_string();
        let branch = self.branch();
        let mut h = Headers::new();
        h.push(
            "Via",
            format!("SIP/2.0/TLS {};branch={branch}", self.caller.host),
        );
        h.push("Max-Forwards", "70");
        h.push("From", from.clone());
        h.push("To", to.clone());
        h.push("Call-ID", call_id.clone());
        h.push("CSeq", "1 INVITE");
        h.push(
            "Contact",
            format!("<sip:alice@{};transport=tls>", self.caller.host),
        );
        let req = with_sdp(
            Request {
                method: Method::Invite,
                uri: uri("sip:+15551234567@edge.example"),
                headers: h,
                body: Vec::new(),
            },
            Some(sdp),
        );
        self.caller.dialog = Some(Dialog {
            call_id,
            local: from,
            remote: to,
            target: "sip:edge@203.0.113.1:5061;transport=tls".into(),
            cseq: 1,
        });
        self.caller.invite = Some(req.clone());
        self.send(Node::Caller, &Message::Request(req.clone()));
        req
    }

    /// The caller CANCELs its INVITE (same branch and CSeq number, RFC 3261 9.1).
    pub fn caller_cancel(&mut self) {
        let Some(inv) = self.caller.invite.clone() else {
            self.fail("no INVITE to cancel")
        };
        let mut h = Headers::new();
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(v) = inv.headers.get(name) {
                h.push(name, v.to_vec());
            }
        }
        h.push("CSeq", "1 CANCEL");
        let cancel = Request {
            method: Method::Cancel,
            uri: inv.uri.clone(),
            headers: h,
            body: Vec::new(),
        };
        self.send(Node::Caller, &Message::Request(cancel));
    }

    /// The caller learns the dialog from a response to its INVITE (the edge's tag).
    pub fn caller_learns(&mut self, resp: &Response) {
        let to = text(resp.headers.get("To").unwrap_or_default());
        if let Some(d) = &mut self.caller.dialog {
            d.remote = to;
        }
    }

    /// The caller ACKs a 2xx to its INVITE (or to its re-INVITE of CSeq `resp`'s), with
    /// `sdp` when the 2xx carried an offer.
    pub fn caller_ack(&mut self, resp: &Response, sdp: Option<&str>) {
        self.caller_learns(resp);
        let seq = resp.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = self.dialog_message(Node::Caller, Method::Ack, Some(seq), sdp);
        self.send(Node::Caller, &Message::Request(ack));
    }

    /// The callee takes the INVITE that opens its dialog: remembers the dialog (its tag on
    /// every response).
    pub fn callee_accepts(&mut self, inv: &Request) {
        let to = text(inv.headers.get("To").unwrap_or_default());
        let local = format!("{to};tag={}", self.callee.tag);
        let target = inv
            .headers
            .contacts()
            .ok()
            .flatten()
            .and_then(|c| match c {
                srtp_edge::sip::typed::Contacts::List(l) => l.into_iter().next(),
                _ => None,
            })
            .map(|c| c.uri.to_string())
            .unwrap_or_default();
        self.callee.dialog = Some(Dialog {
            call_id: text(inv.headers.call_id().unwrap_or_default()),
            local,
            remote: text(inv.headers.get("From").unwrap_or_default()),
            target,
            cseq: 100,
        });
    }

    /// `who` answers `req` with `status` (its tag added to To), with `sdp` as body.
    pub fn respond(
        &mut self,
        who: Node,
        req: &Request,
        status: u16,
        sdp: Option<&str>,
    ) -> Response {
        let tag = self.ua(who).tag.clone();
        let mut r = req.reply(status, Some(tag.as_bytes()));
        if (101..300).contains(&status) {
            let host = self.ua(who).host.clone();
            r.headers
                .push("Contact", format!("<sip:peer@{host};transport=tls>"));
        }
        if let Some(s) = sdp {
            r.headers.push("Content-Type", "application/sdp");
            r.body = s.as_bytes().to_vec();
        }
        self.send(who, &Message::Response(r.clone()));
        r
    }

    /// `who` sends a request in its dialog (new CSeq), with `sdp` as body.
    pub fn request(&mut self, who: Node, method: Method, sdp: Option<&str>) -> Request {
        let r = self.dialog_message(who, method, None, sdp);
        self.send(who, &Message::Request(r.clone()));
        r
    }

    /// A request in `who`'s dialog: CSeq `seq` (ACK) or the next one.
    fn dialog_message(
        &mut self,
        who: Node,
        method: Method,
        seq: Option<u32>,
        sdp: Option<&str>,
    ) -> Request {
        let branch = self.branch();
        let host = self.ua(who).host.clone();
        let Some(d) = self.ua(who).dialog.as_mut() else {
            self.fail(&format!("{who:?} has no dialog"))
        };
        let seq = seq.unwrap_or_else(|| {
            d.cseq += 1;
            d.cseq
        });
        let mut h = Headers::new();
        h.push("Via", format!("SIP/2.0/TLS {host};branch={branch}"));
        h.push("Max-Forwards", "70");
        h.push("From", d.local.clone());
        h.push("To", d.remote.clone());
        h.push("Call-ID", d.call_id.clone());
        h.push("CSeq", format!("{seq} {method}"));
        h.push("Contact", format!("<sip:peer@{host};transport=tls>"));
        let target = d.target.clone();
        with_sdp(
            Request {
                method,
                uri: uri(&target),
                headers: h,
                body: Vec::new(),
            },
            sdp,
        )
    }

    /// An SDES offer from a peer (RTP/SAVP, AES_CM_128_HMAC_SHA1_80, a key from the seed).
    pub fn sdes_offer(&mut self, port: u16) -> String {
        let key = self.key(30);
        format!(
            "v=0\r\no=- {port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
        )
    }

    /// A plain RTP offer (refused by srtp-edge).
    pub fn plain_offer(&self) -> String {
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            .into()
    }

    /// An SDES answer to `offer`: its first crypto line's tag and suite with a key of ours.
    pub fn sdes_answer(&mut self, offer: &[u8], port: u16) -> String {
        let offer = String::from_utf8_lossy(offer);
        let Some(line) = offer.lines().find(|l| l.starts_with("a=crypto:")) else {
            self.fail("the offer has no a=crypto line")
        };
        let mut parts = line.trim_start_matches("a=crypto:").split_whitespace();
        let (tag, suite) = (parts.next().unwrap_or("1"), parts.next().unwrap_or(""));
        let len = match suite {
            "AES_256_CM_HMAC_SHA1_80" | "AES_256_CM_HMAC_SHA1_32" => 46,
            "AEAD_AES_128_GCM" => 28,
            "AEAD_AES_256_GCM" => 44,
            _ => 30,
        };
        let key = self.key(len);
        format!(
            "v=0\r\no=- {port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
             a=crypto:{tag} {suite} inline:{key}\r\n"
        )
    }

    fn key(&mut self, n: usize) -> String {
        let mut k = vec![0u8; n];
        self.rng.fill_or_counter(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    // ----- Whole steps of a call, shared by the tests. -----

    /// INVITE from the caller until the callee holds it (the caller got 100). Returns the
    /// INVITE as the callee received it.
    pub fn invite_to_callee(&mut self) -> Request {
        let offer = self.sdes_offer(4000);
        self.caller_invite(&offer);
        self.settle();
        self.take_response(Node::Caller, 100);
        let inv = self.take_request(Node::Callee, Method::Invite);
        self.callee_accepts(&inv);
        inv
    }

    /// A whole call set up: INVITE, 180, 200 with an answer, ACK. Returns the callee's INVITE.
    pub fn established(&mut self) -> Request {
        let inv = self.invite_to_callee();
        self.respond(Node::Callee, &inv, 180, None);
        self.settle();
        let ringing = self.take_response(Node::Caller, 180);
        self.caller_learns(&ringing);
        let answer = self.sdes_answer(&inv.body, 5000);
        self.respond(Node::Callee, &inv, 200, Some(&answer));
        self.settle();
        let ack = self.take_request(Node::Callee, Method::Ack);
        self.check(ack.body.is_empty(), "ACK to the callee carries no SDP");
        let ok = self.take_response(Node::Caller, 200);
        self.check(!ok.body.is_empty(), "the caller's 200 carries the answer");
        self.caller_ack(&ok, None);
        self.settle();
        inv
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.calls.clear();
        self.engine.shutdown();
    }
}

/// The request-line or status-line of a serialized message.
pub fn first_line(b: &[u8]) -> String {
    let end = b.windows(2).position(|w| w == b"\r\n").unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Lossy text of a header value.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn uri(s: &str) -> srtp_edge::sip::uri::Uri {
    srtp_edge::sip::uri::Uri::parse(s.as_bytes()).expect("URI")
}

fn with_sdp(mut r: Request, sdp: Option<&str>) -> Request {
    if let Some(s) = sdp {
        r.headers.push("Content-Type", "application/sdp");
        r.body = s.as_bytes().to_vec();
    }
    r
}

/// The `inline:` key of the first crypto line of an SDP.
pub fn sdes_key(sdp: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(sdp);
    let line = s.lines().find(|l| l.starts_with("a=crypto:"))?;
    let k = line.split("inline:").nth(1)?;
    Some(k.split(['|', ' ']).next()?.trim().to_string())
}
