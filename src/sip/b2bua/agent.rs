//! Agent-mode calls and route forks in the B2BUA state machine.
//!
//! An agent route's call has one SIP leg: srtp-edge answers the INVITE itself (100 at once, the
//! 200 with its SDP once the WSS backend has accepted the stream), and the backend is the other
//! party. The backend hanging up (close, `disconnect`, lost connection) sends BYE to the caller;
//! the caller's BYE deletes the call, which ends the fork with `stop` and a close 1000. A
//! backend that cannot be reached before the 200 gets the caller a 503 and frees the ports.
//!
//! A route with `fork = "name"` is a normal SIP-to-SIP call whose two tracks are copied to the
//! backend; the fork starts at the answer and a lost backend never affects the call.

use std::net::IpAddr;
use std::time::Instant;

use super::{
    rand_hex, response_bytes, safe_user, user_of, Action, B2bua, MediaPlane, Peer, ALLOW, SIP_CALLS,
};
use crate::media::calls::{ForkMeta, Negotiation};
use crate::redact::Redacted;
use crate::sip::header::Headers;
use crate::sip::message::Request;
use crate::sip::method::Method;
use crate::sip::response::{reason_phrase, reply_to_headers};
use crate::sip::typed::Contacts;
use crate::sip::uri::Uri;

/// Where an agent call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AgentState {
    /// 100 sent; waiting for the backend to accept the stream.
    Connecting,
    /// 200 sent.
    Answered,
}

/// One agent-mode call: the caller's dialog only (the backend is not a SIP party).
#[derive(Debug)]
pub(super) struct AgentCall {
    key: String,
    state: AgentState,
    /// Answer by then (Timer B) or give up with 503.
    deadline: Instant,
    peer: Peer,
    ip: IpAddr,
    invite: Request,
    call_id: Vec<u8>,
    our_tag: String,
    contact: Option<Uri>,
    /// Our From (their To with our tag) and To (their From) for requests we send.
    from: Vec<u8>,
    to: Vec<u8>,
    cseq: u32,
    /// Our SDP in force (the last answer).
    answer: String,
    /// The caller's offer that `answer` answers (a repeat of it changes nothing).
    offer: Vec<u8>,
    /// The caller's From tag and the SDES suites its trunk allows (for re-offers).
    a_tag: String,
    suites: Vec<crate::srtp::Profile>,
}

impl<M: MediaPlane> B2bua<M> {
    /// Agent calls in progress (any state).
    pub fn agent_calls(&self) -> usize {
        self.agents.len()
    }

    /// A new INVITE on an agent route: anchor the caller's leg and start the backend; the 200
    /// goes out on [`B2bua::agent_connected`]. `req` has passed validation and carries an offer
    /// and a From tag.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_agent_call(
        &mut self,
        now: Instant,
        peer: Peer,
        ip: IpAddr,
        trunk_name: &str,
        route: usize,
        agent: &str,
        our_tag: String,
        a_tag: String,
        req: Request,
        out: &mut Vec<Action>,
    ) {
        let key = rand_hex(16);
        let suites = self.suites_for_trunk_name(trunk_name);
        let from_user = req
            .headers
            .from()
            .map(|f| safe_user(&user_of(&f.uri)))
            .unwrap_or_default();
        let to_user = safe_user(&user_of(&req.uri));
        let meta = ForkMeta {
            from: from_user.clone(),
            to: to_user.clone(),
            route: format!("route{route}"),
        };
        let answer = self.media.offer_agent(
            &Negotiation {
                call_id: &key,
                from_tag: &a_tag,
                to_tag: None,
                sdp: &req.body,
                suites: &suites,
            },
            agent,
            meta,
        );
        let offer = req.body.clone();
        let answer = match answer {
            Ok(s) => s,
            Err(e) => {
                // No PCMU/PCMA in the offer: the backend cannot take the call's audio (488).
                let codec = matches!(e, crate::media::calls::CallError::ForkRefused(_));
                let status = if codec { 488 } else { e.sip_status() };
                tracing::info!(status, error = %e, agent, "agent call refused");
                let mut r = req.reply(status, Some(our_tag.as_bytes()));
                if codec {
                    r.headers
                        .push("Warning", "399 srtp-edge \"PCMU or PCMA required\"");
                } else if matches!(&e, crate::media::calls::CallError::Policy(p) if p.is_plaintext())
                {
                    r.headers.push("Warning", "399 srtp-edge \"SRTP required\"");
                }
                if status == 503 {
                    r.headers.push("Retry-After", "5");
                }
                metrics::counter!(SIP_CALLS, "outcome" => "rejected").increment(1);
                out.push(Action::Send(peer, response_bytes(&r)));
                return;
            }
        };
        let contact = match req.headers.contacts() {
            Ok(Some(Contacts::List(l))) => l.into_iter().next().map(|c| c.uri),
            _ => None,
        };
        let call_id = req
            .headers
            .call_id()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let (from, to) = match (req.headers.from(), req.headers.to()) {
            (Ok(f), Ok(t)) => {
                let mut t = t.clone();
                t.set_param("tag", Some(our_tag.as_bytes()));
                (t.to_bytes(), f.to_bytes())
            }
            _ => (Vec::new(), Vec::new()),
        };
        tracing::info!(
            call = %&key[..8],
            trunk = %trunk_name,
            from = %Redacted(&from_user),
            to = %Redacted(&to_user),
            route,
            agent,
            "agent call: connecting to the backend"
        );
        self.agent_by_a.insert(call_id.clone(), key.clone());
        self.agents.insert(
            key.clone(),
            AgentCall {
                key,
                state: AgentState::Connecting,
                deadline: now + self.settings.timer_b,
                peer,
                ip,
                invite: req,
                call_id,
                our_tag,
                contact,
                from,
                to,
                cseq: 1,
                answer,
                offer,
                a_tag,
                suites,
            },
        );
    }

    fn suites_for_trunk_name(&self, trunk: &str) -> Vec<crate::srtp::Profile> {
        self.settings
            .trunks
            .iter()
            .find(|t| t.name == trunk)
            .map(|t| t.sdes_suites.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.settings.suites.clone())
    }

    /// The agent call whose caller dialog has this Call-ID, if any.
    pub(super) fn agent_for(&self, call_id: &[u8]) -> Option<String> {
        self.agent_by_a.get(call_id).cloned()
    }

    /// A final or provisional response to the caller's INVITE.
    fn agent_response(&self, c: &AgentCall, status: u16, body: Option<&str>) -> Action {
        let reason = reason_phrase(status);
        let mut r = reply_to_headers(
            &c.invite.headers,
            status,
            if reason.is_empty() { "Unknown" } else { reason },
            Some(c.our_tag.as_bytes()),
        );
        if (101..300).contains(&status) {
            r.headers.push("Contact", self.contact());
            r.headers.push("Allow", ALLOW);
        }
        if status == 503 {
            r.headers.push("Retry-After", "5");
        }
        if let Some(b) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = b.as_bytes().to_vec();
        }
        Action::Send(c.peer, response_bytes(&r))
    }

    /// A BYE to the caller in its dialog (our CSeq space).
    fn agent_bye(&mut self, key: &str) -> Option<Action> {
        let b = super::branch();
        let via = self.via(&b);
        let c = self.agents.get_mut(key)?;
        c.cseq += 1;
        let mut h = Headers::new();
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        h.push("From", c.from.clone());
        h.push("To", c.to.clone());
        h.push("Call-ID", c.call_id.clone());
        h.push("CSeq", format!("{} BYE", c.cseq));
        let bye = Request {
            method: Method::Bye,
            uri: c.contact.clone()?,
            headers: h,
            body: Vec::new(),
        };
        Some(Action::Send(c.peer, bye.to_bytes()))
    }

    fn end_agent(&mut self, key: &str, outcome: &'static str) {
        if let Some(c) = self.agents.remove(key) {
            self.media.delete(key);
            self.agent_by_a.remove(&c.call_id);
            metrics::counter!(SIP_CALLS, "outcome" => outcome).increment(1);
            tracing::info!(call = %&key[..key.len().min(8)], outcome, "agent call ended");
        }
    }

    /// The backend of agent call `key` accepted the stream: the caller gets the 200 with our
    /// SDP. Unknown or already answered calls are ignored.
    pub fn agent_connected(&mut self, key: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(c) = self.agents.get(key) {
            if c.state == AgentState::Connecting {
                out.push(self.agent_response(c, 200, Some(&c.answer)));
                tracing::info!(call = %&key[..key.len().min(8)], "agent call answered");
                if let Some(c) = self.agents.get_mut(key) {
                    c.state = AgentState::Answered;
                }
            }
        }
        out
    }

    /// The backend of agent call `key` is gone (unreachable, closed, asked to hang up): BYE to
    /// the caller, or 503 when the call was not answered yet; ports released either way.
    pub fn agent_hangup(&mut self, key: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(state) = self.agents.get(key).map(|c| c.state) else {
            return out;
        };
        match state {
            AgentState::Connecting => {
                tracing::info!(call = %&key[..key.len().min(8)], "agent backend unreachable: 503");
                if let Some(c) = self.agents.get(key) {
                    out.push(self.agent_response(c, 503, None));
                }
                self.end_agent(key, "failed");
            }
            AgentState::Answered => {
                tracing::info!(call = %&key[..key.len().min(8)], "agent backend hung up: BYE");
                out.extend(self.agent_bye(key));
                self.end_agent(key, "answered");
            }
        }
        out
    }

    /// A request in an agent call's dialog (or a retransmitted/merged INVITE) from `ip`.
    pub(super) fn agent_in_dialog(
        &mut self,
        key: String,
        peer: Peer,
        ip: IpAddr,
        req: Request,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.agents.get(&key) else {
            return;
        };
        if c.ip != ip {
            if req.method != Method::Ack {
                out.push(self.reply(peer, &req, 403, Some("x")));
            }
            return;
        }
        let our_tag = c.our_tag.clone();
        let state = c.state;
        let in_dialog = req.headers.to().map(|t| t.tag().is_some()).unwrap_or(false);
        match req.method {
            Method::Ack => {}
            Method::Invite if !in_dialog => {
                out.push(self.reply(peer, &req, 482, Some(&our_tag)));
            }
            Method::Cancel => {
                out.push(self.reply(peer, &req, 200, Some(&our_tag)));
                if state == AgentState::Connecting {
                    if let Some(c) = self.agents.get(&key) {
                        out.push(self.agent_response(c, 487, None));
                    }
                    self.end_agent(&key, "cancelled");
                }
            }
            Method::Bye => {
                out.push(self.reply(peer, &req, 200, Some(&our_tag)));
                if state == AgentState::Connecting {
                    if let Some(c) = self.agents.get(&key) {
                        out.push(self.agent_response(c, 487, None));
                    }
                }
                // Deleting the call drops the fork: the backend gets `stop` and a close 1000.
                self.end_agent(&key, "answered");
            }
            Method::Invite | Method::Update if state == AgentState::Answered => {
                // A session refresh (no SDP, or the offer in force again) gets the SDP in force
                // (an offerless re-INVITE: as our offer); a new offer (hold, resume, re-key,
                // codec, address) is answered by the media plane, or refused with 488 and the
                // call keeps its media as it was.
                let same = req.body.is_empty() || self.same_offer(&key, &req.body);
                let body = if same {
                    let with_sdp = !req.body.is_empty() || req.method == Method::Invite;
                    self.agents
                        .get(&key)
                        .map(|c| c.answer.clone())
                        .filter(|_| with_sdp)
                } else {
                    let answer = self.agents.get(&key).map(|c| {
                        self.media.reoffer_agent(&Negotiation {
                            call_id: &key,
                            from_tag: &c.a_tag,
                            to_tag: None,
                            sdp: &req.body,
                            suites: &c.suites,
                        })
                    });
                    match answer {
                        Some(Ok(a)) => {
                            if let Some(c) = self.agents.get_mut(&key) {
                                c.answer = a.clone();
                                c.offer = req.body.clone();
                            }
                            Some(a)
                        }
                        Some(Err(e)) => {
                            tracing::info!(call = %&key[..key.len().min(8)], error = %e, "agent re-offer refused: 488, media unchanged");
                            let mut r = req.reply(488, Some(our_tag.as_bytes()));
                            if matches!(&e, crate::media::calls::CallError::Policy(p) if p.is_plaintext())
                            {
                                r.headers.push("Warning", "399 srtp-edge \"SRTP required\"");
                            } else if matches!(e, crate::media::calls::CallError::ForkRefused(_)) {
                                r.headers
                                    .push("Warning", "399 srtp-edge \"PCMU or PCMA required\"");
                            }
                            out.push(Action::Send(peer, response_bytes(&r)));
                            return;
                        }
                        None => None,
                    }
                };
                let mut r = req.reply(200, Some(our_tag.as_bytes()));
                r.headers.push("Contact", self.contact());
                if let Some(b) = body {
                    r.headers.push("Content-Type", "application/sdp");
                    r.body = b.into_bytes();
                }
                out.push(Action::Send(peer, response_bytes(&r)));
            }
            Method::Invite | Method::Update => {
                out.push(self.reply(peer, &req, 491, Some(&our_tag)));
            }
            Method::Info | Method::Options => {
                let mut r = req.reply(200, Some(our_tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                out.push(Action::Send(peer, response_bytes(&r)));
            }
            _ => out.push(self.reply(peer, &req, 501, Some(&our_tag))),
        }
    }

    /// True when `sdp` repeats the caller's offer in force (same origin version and body).
    fn same_offer(&self, key: &str, sdp: &[u8]) -> bool {
        self.agents
            .get(key)
            .is_some_and(|c| c.offer.as_slice() == sdp)
    }

    /// Agent calls' timers: no backend by the deadline → 503; answered calls the media plane
    /// no longer holds (media timeout) → BYE.
    pub(super) fn agent_tick(&mut self, now: Instant, audit: bool, out: &mut Vec<Action>) {
        let late: Vec<String> = self
            .agents
            .values()
            .filter(|c| c.state == AgentState::Connecting && c.deadline <= now)
            .map(|c| c.key.clone())
            .collect();
        for k in late {
            if let Some(c) = self.agents.get(&k) {
                out.push(self.agent_response(c, 503, None));
            }
            self.end_agent(&k, "timeout");
        }
        if audit
            && self
                .agents
                .values()
                .any(|c| c.state == AgentState::Answered)
        {
            let live = self.media.live();
            let dead: Vec<String> = self
                .agents
                .values()
                .filter(|c| c.state == AgentState::Answered && !live.contains(&c.key))
                .map(|c| c.key.clone())
                .collect();
            for k in dead {
                tracing::info!(call = %&k[..k.len().min(8)], "agent call media timed out: BYE");
                out.extend(self.agent_bye(&k));
                self.end_agent(&k, "media_timeout");
            }
        }
    }

    /// Ends every agent call (shutdown).
    pub(super) fn agent_shutdown(&mut self, out: &mut Vec<Action>) {
        let keys: Vec<String> = self.agents.keys().cloned().collect();
        for k in keys {
            out.extend(self.agent_hangup(&k));
        }
    }

    /// A route with `fork = "name"`: copy both tracks of call `key` to that backend from the
    /// answer on. A refusal (codec, unknown backend) is logged; the call goes on unforked.
    pub(super) fn start_route_fork(&self, key: &str, route: usize, req: &Request) {
        let Some(backend) = self
            .settings
            .routes
            .get(route)
            .and_then(|r| r.fork.as_deref())
        else {
            return;
        };
        let meta = ForkMeta {
            from: req
                .headers
                .from()
                .map(|f| safe_user(&user_of(&f.uri)))
                .unwrap_or_default(),
            to: safe_user(&user_of(&req.uri)),
            route: format!("route{route}"),
        };
        if let Err(e) = self.media.fork(key, backend, meta) {
            tracing::warn!(call = %&key[..key.len().min(8)], backend, error = %e, "route fork not started; the call goes on");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::time::Duration;

    use super::super::{Settings, TIMER_B};
    use super::*;
    use crate::config::Config;
    use crate::media::calls::CallError;
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
        )
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

    fn parsed(a: &Action) -> (Peer, Message) {
        let Action::Send(p, b) = a;
        (*p, Message::parse(b).unwrap())
    }

    fn status(a: &Action) -> u16 {
        match parsed(a).1 {
            Message::Response(r) => r.status,
            Message::Request(r) => panic!("expected a response, got {}", r.method),
        }
    }

    /// An agent INVITE: 100 only, and the call's key.
    fn invite(b: &mut B2bua<Fake>) -> String {
        let out = b.handle(
            Instant::now(),
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

    #[test]
    fn answered_when_the_backend_connects_and_the_caller_bye_deletes_the_call() {
        let mut b = b2bua();
        let key = invite(&mut b);
        assert!(b.agent_connected("unknown").is_empty());
        let out = b.agent_connected(&key);
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
        assert!(b.agent_connected(&key).is_empty());
        assert!(b
            .handle(
                Instant::now(),
                TRUNK,
                ip(),
                req("ACK", "+15551234567", &to, "")
            )
            .is_empty());
        // The same INVITE body again (session refresh) keeps the answer.
        let out = b.handle(
            Instant::now(),
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
        let out = b.handle(
            Instant::now(),
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
        let out = b.handle(
            Instant::now(),
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
        let out = b.handle(
            Instant::now(),
            TRUNK,
            ip(),
            req("UPDATE", "+15551234567", &to, &other),
        );
        assert_eq!(status(&out[0]), 200);
        assert_eq!(b.media().log.borrow().len(), n);
        // A plaintext re-offer: 488 with the reason, and the media in force stays.
        let plain = OFFER.replace("RTP/SAVP", "RTP/AVP");
        let out = b.handle(
            Instant::now(),
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
        let out = b.handle(
            Instant::now(),
            TRUNK,
            ip(),
            req("INVITE", "+15551234567", &to, ""),
        );
        let Message::Response(r) = parsed(&out[0]).1 else {
            panic!()
        };
        assert_eq!(&r.body[..], b"v=0 agent-reanswer\r\n");
        // From another address: refused.
        let out = b.handle(
            Instant::now(),
            TRUNK,
            "192.0.2.9".parse().unwrap(),
            req("BYE", "+15551234567", &to, ""),
        );
        assert_eq!(status(&out[0]), 403);
        let out = b.handle(
            Instant::now(),
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
        assert!(b.agent_hangup(&key).is_empty());
    }

    #[test]
    fn backend_hangup_sends_bye_to_the_caller() {
        let mut b = b2bua();
        let key = invite(&mut b);
        let out = b.agent_connected(&key);
        let Message::Response(ok) = parsed(&out[0]).1 else {
            panic!()
        };
        let our_tag = ok.headers.to().unwrap().tag().unwrap().to_vec();
        let out = b.agent_hangup(&key);
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
        let out = b.agent_hangup(&key);
        assert_eq!(status(&out[0]), 503);
        assert!(b.is_empty());
        assert_eq!(
            b.media().log.borrow().last().unwrap(),
            &format!("delete {key}")
        );

        let key = invite(&mut b);
        let out = b.handle(
            Instant::now(),
            TRUNK,
            ip(),
            req("CANCEL", "+15551234567", "", ""),
        );
        assert_eq!((status(&out[0]), status(&out[1])), (200, 487));
        assert!(b.is_empty());
        assert!(b.agent_connected(&key).is_empty());

        let t0 = Instant::now();
        let key = invite(&mut b);
        assert!(b.tick(t0 + Duration::from_secs(1)).is_empty());
        let out = b.tick(t0 + TIMER_B + Duration::from_secs(1));
        assert_eq!(status(&out[0]), 503);
        assert!(b.is_empty());
        assert_eq!(
            b.media().log.borrow().last().unwrap(),
            &format!("delete {key}")
        );

        let plain = OFFER.replace("RTP/SAVP", "RTP/AVP");
        let out = b.handle(
            Instant::now(),
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
        b.agent_connected(&key);
        let t0 = Instant::now();
        assert!(b.tick(t0).is_empty());
        b.media().live.borrow_mut().remove(&key);
        let out = b.tick(t0 + super::super::AUDIT_EVERY);
        let Message::Request(bye) = parsed(&out[0]).1 else {
            panic!()
        };
        assert_eq!(bye.method, Method::Bye);
        assert!(b.is_empty());
    }

    #[test]
    fn a_route_with_a_fork_forks_the_relayed_call() {
        let mut b = b2bua();
        let out = b.handle(
            Instant::now(),
            TRUNK,
            ip(),
            req("INVITE", "+4930", "", OFFER),
        );
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
}
