//! The back-to-back user agent as a state machine: messages in, messages out, no sockets and no
//! clock reads. The transport ([`super::transport`]) feeds it every parsed message with the peer
//! it came from, calls [`B2bua::tick`] with the time, and sends what comes back.
//!
//! A call has leg A (the trunk that sent the INVITE, reached over the connection the INVITE came
//! on) and leg B (the route target, reached over srtp-edge's own connection to it). Leg B gets
//! its own Call-ID, tags, Via, Contact and CSeq space; only the From/To user parts and the SDP
//! (rewritten by the media plane, fresh keys per leg) cross. Media is anchored through
//! [`MediaPlane`] with leg B's Call-ID as the call key and leg A's From tag as the offerer's tag,
//! and every way a call ends goes through [`MediaPlane::delete`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{MediaKeying, RouteConfig, TrunkConfig};
use crate::media::calls::{offer_keys_with_dtls, CallError, ForkMeta, Negotiation, OfferOptions};
use crate::redact::Redacted;
use crate::srtp::Profile;

use super::header::Headers;
use super::message::{Message, Request, Response};
use super::method::Method;
use super::response::{reason_phrase, reply_to_headers};
use super::routing::{route_for, trunk_for};
use super::typed::Contacts;
use super::uri::Uri;
use super::validate::{inspect, inspect_response};

mod agent;
mod record;

use crate::metrics::{SIP_CALLS, SIP_REQUESTS, SIP_RESPONSES};

/// Timer B over a reliable transport: 64 * T1 (RFC 3261 17.1.1.2).
pub const TIMER_B: Duration = Duration::from_secs(32);
/// Most calls held at once; more INVITEs get 503.
pub const MAX_CALLS: usize = 20_000;
/// How often established calls are checked against the media plane (media timeouts).
pub const AUDIT_EVERY: Duration = Duration::from_secs(5);
/// Methods answered in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";

/// The media plane as the B2BUA needs it: the call table's offer/answer/delete. A trait so the
/// state machine is testable without media sockets.
pub trait MediaPlane {
    /// Anchors or re-offers with SDES towards the other party; returns the SDP for it.
    fn offer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.offer_with(n, &OfferOptions::default())
    }
    /// Anchors or re-offers, keying the other party as `opts` says (SDES, or DTLS-SRTP when
    /// `opts.dtls`); returns the SDP for it. The offerer's own keying (SDES or DTLS-SRTP) is
    /// read from its SDP.
    fn offer_with(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError>;
    /// Completes an offer; returns the SDP for the offerer.
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError>;
    /// Releases the call's ports (unknown calls are fine).
    fn delete(&self, call_id: &str);
    /// The calls the media plane still holds (it ends calls on its own after a media timeout).
    fn live(&self) -> std::collections::HashSet<String>;
    /// Agent mode: answers the offer on behalf of the fork backend `agent` (the other party)
    /// and returns our answer SDP for the caller. Nothing is left anchored on error.
    fn offer_agent(
        &self,
        _n: &Negotiation<'_>,
        _agent: &str,
        _meta: ForkMeta,
    ) -> Result<String, CallError> {
        Err(CallError::UnknownForkBackend)
    }
    /// Agent mode: a new offer from the caller in an answered agent call (hold, resume,
    /// re-key, codec change); returns our new answer. On error the call's media is unchanged.
    fn reoffer_agent(&self, _n: &Negotiation<'_>) -> Result<String, CallError> {
        Err(CallError::NotForked)
    }
    /// Fork mode: copies both tracks of the call to `backend` (from the answer on).
    fn fork(&self, _call_id: &str, _backend: &str, _meta: ForkMeta) -> Result<(), CallError> {
        Err(CallError::UnknownForkBackend)
    }
    /// Records the call (a route with `record = true`), from the answer on.
    fn record(&self, _call_id: &str, _req: crate::recording::RecordRequest) -> Result<(), String> {
        Err("recording is not enabled".into())
    }
}

impl<T: MediaPlane> MediaPlane for std::sync::Arc<T> {
    fn offer_with(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError> {
        (**self).offer_with(n, opts)
    }
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        (**self).answer(n)
    }
    fn delete(&self, call_id: &str) {
        (**self).delete(call_id)
    }
    fn live(&self) -> std::collections::HashSet<String> {
        (**self).live()
    }
    fn offer_agent(
        &self,
        n: &Negotiation<'_>,
        agent: &str,
        meta: ForkMeta,
    ) -> Result<String, CallError> {
        (**self).offer_agent(n, agent, meta)
    }
    fn reoffer_agent(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        (**self).reoffer_agent(n)
    }
    fn fork(&self, call_id: &str, backend: &str, meta: ForkMeta) -> Result<(), CallError> {
        (**self).fork(call_id, backend, meta)
    }
    fn record(&self, call_id: &str, req: crate::recording::RecordRequest) -> Result<(), String> {
        (**self).record(call_id, req)
    }
}

impl MediaPlane for crate::media::calls::Calls {
    fn offer_with(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError> {
        crate::media::calls::Calls::offer_with(self, n, opts)
    }
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        crate::media::calls::Calls::answer(self, n)
    }
    fn delete(&self, call_id: &str) {
        let _ = crate::media::calls::Calls::delete(self, call_id);
    }
    fn live(&self) -> std::collections::HashSet<String> {
        self.list(usize::MAX).into_iter().collect()
    }
    fn offer_agent(
        &self,
        n: &Negotiation<'_>,
        agent: &str,
        meta: ForkMeta,
    ) -> Result<String, CallError> {
        crate::media::calls::Calls::offer_agent(self, n, agent, meta)
    }
    fn reoffer_agent(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        crate::media::calls::Calls::reoffer_agent(self, n)
    }
    fn fork(&self, call_id: &str, backend: &str, meta: ForkMeta) -> Result<(), CallError> {
        self.start_fork_with(call_id, backend, crate::fork::ForkMode::Fork, meta)
            .map(|_| ())
    }
    fn record(&self, call_id: &str, req: crate::recording::RecordRequest) -> Result<(), String> {
        let r = self.recorder().ok_or("recording is not enabled")?;
        r.request(self, call_id, req)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Who a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// An accepted connection on the SIP listener.
    Conn(u64),
    /// srtp-edge's own connection to a route target (route index).
    Route(usize),
}

/// Something the transport must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes to that peer (dropped if it has no connection).
    Send(Peer, Vec<u8>),
}

/// Static settings of the B2BUA.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host:port` written in our Via and Contact.
    pub local: String,
    /// Trunks, as configured.
    pub trunks: Vec<TrunkConfig>,
    /// Routes, as configured.
    pub routes: Vec<RouteConfig>,
    /// Default SDES suites (`media.suites`).
    pub suites: Vec<Profile>,
    /// How long an INVITE waits for a final response.
    pub timer_b: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// INVITE sent upstream, no final response yet.
    Calling,
    /// CANCEL sent upstream, waiting for its final response to ACK it.
    Cancelling,
    /// 2xx relayed; dialog established on both legs.
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// What a client transaction of ours is for.
#[derive(Debug, Clone)]
enum Tx {
    /// The initial INVITE upstream.
    Invite,
    /// Fire-and-forget (BYE, CANCEL): the response is only consumed.
    Consume,
    /// A request relayed from the other side; the response goes back to `req` on `from`.
    Relay {
        from: Peer,
        req: Box<Request>,
        /// The offerer's tag when the relayed request carried an SDP offer.
        offer_tag: Option<String>,
        /// The leg the request was relayed to (which answers it).
        to: Side,
    },
}

#[derive(Debug)]
struct Call {
    key: String,
    state: State,
    deadline: Instant,
    trunk: usize,
    route: usize,
    // Leg A.
    a_peer: Peer,
    a_ip: IpAddr,
    a_invite: Request,
    a_call_id: Vec<u8>,
    a_tag: String,
    a_our_tag: String,
    a_contact: Option<Uri>,
    a_from: Vec<u8>,
    a_to: Vec<u8>,
    a_cseq: u32,
    // Leg B.
    b_branch: String,
    b_ruri: String,
    b_from: Vec<u8>,
    b_our_tag: String,
    b_to: Vec<u8>,
    b_tag: Option<String>,
    b_target: Option<Uri>,
    b_cseq: u32,
    /// The rewritten answer for leg A, once leg B has answered.
    answer_sdp: Option<String>,
    /// A provisional with a To tag has been relayed (so a CANCEL can follow).
    b_provisional: bool,
    /// Leg A keys its media with DTLS-SRTP (from its last offer): offers relayed to it are
    /// DTLS-SRTP too. Leg B gets what its route's `media_keying` says.
    a_dtls: bool,
    /// An in-dialog offer (re-INVITE, or UPDATE with SDP) relayed and not yet answered; the
    /// media plane holds one pending offer per call, so a second one meets glare handling.
    offer_pending: Option<PendingOffer>,
    /// A re-INVITE sent without SDP was answered with an offer in the 2xx: the answer comes in
    /// the sender's ACK, and our ACK to the answering leg waits for it (RFC 3261 13.2.1).
    ack_offer: Option<DelayedAck>,
}

/// The 2xx whose ACK waits for the answer in the other leg's ACK.
#[derive(Debug)]
struct DelayedAck {
    /// The leg that sent the 2xx with the offer (and gets our ACK with the answer).
    answerer: Side,
    /// The offer's tag (the answerer's dialog tag).
    offer_tag: String,
    /// The 2xx (its CSeq makes the ACK).
    resp: Box<Response>,
}

/// A relayed in-dialog offer waiting for the other leg's final response.
#[derive(Debug)]
struct PendingOffer {
    /// The leg that sent it.
    from: Side,
    /// Our client transaction towards the other leg.
    branch: String,
    /// When it is given up (408 to the sender).
    deadline: Instant,
}

/// The B2BUA.
pub struct B2bua<M: MediaPlane> {
    settings: Settings,
    media: M,
    calls: HashMap<String, Call>,
    by_a: HashMap<Vec<u8>, String>,
    txs: HashMap<String, (String, Tx)>,
    next_audit: Option<Instant>,
    /// Connections whose client certificate proved a trunk (mutual TLS).
    conn_trunks: HashMap<u64, usize>,
    /// Agent-mode calls by key, and their keys by the caller's Call-ID.
    agents: HashMap<String, agent::AgentCall>,
    agent_by_a: HashMap<Vec<u8>, String>,
    /// Addresses a route target's DNS name last resolved to (for in-dialog requests it sends
    /// from a connection of its own).
    route_ips: HashMap<usize, Vec<IpAddr>>,
}

fn rand_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // getrandom failing means no OS randomness at all; fall back to the clock-free counter so
    // identifiers stay unique in this process (they are not secrets).
    if getrandom::fill(&mut b).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        let n = N.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = n[i % 8];
        }
    }
    hex::encode(b)
}

/// A random `Retry-After` for a 500 to an overlapping offer: 0 to 10 seconds (RFC 3261 14.2).
fn retry_after() -> u8 {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    b[0] % 11
}

fn branch() -> String {
    format!("z9hG4bK{}", rand_hex(10))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn count_request(m: &Method) {
    let label = match m {
        Method::Extension(_) => "other".to_string(),
        m => m.as_str().to_string(),
    };
    metrics::counter!(SIP_REQUESTS, "method" => label).increment(1);
}

fn response_bytes(r: &Response) -> Vec<u8> {
    metrics::counter!(SIP_RESPONSES, "status" => r.status.to_string()).increment(1);
    r.to_bytes()
}

fn user_of(u: &Uri) -> String {
    match u {
        Uri::Sip(s) => s.user.clone().unwrap_or_default(),
        Uri::Tel(t) => t.clone(),
        Uri::Other { .. } => String::new(),
    }
}

/// Keeps only characters safe in a SIP URI user part (digits, letters, `+-_.!~*'()&=$,;?/`).
fn safe_user(u: &str) -> String {
    let s: String = u
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+-_.!~*'()&=$,;?/%".contains(*c))
        .take(64)
        .collect();
    if s.is_empty() {
        "anonymous".into()
    } else {
        s
    }
}

impl<M: MediaPlane> B2bua<M> {
    /// A B2BUA with no calls.
    pub fn new(settings: Settings, media: M) -> Self {
        B2bua {
            settings,
            media,
            calls: HashMap::new(),
            by_a: HashMap::new(),
            txs: HashMap::new(),
            next_audit: None,
            conn_trunks: HashMap::new(),
            agents: HashMap::new(),
            agent_by_a: HashMap::new(),
            route_ips: HashMap::new(),
        }
    }

    /// The transport resolved route `route`'s target to `ips` (replacing what it held).
    pub fn route_resolved(&mut self, route: usize, ips: Vec<IpAddr>) {
        self.route_ips.insert(route, ips);
    }

    /// Connection `conn` presented a client certificate valid for `trunk`: its requests come
    /// from that trunk, whatever their source address.
    pub fn conn_identified(&mut self, conn: u64, trunk: usize) {
        self.conn_trunks.insert(conn, trunk);
    }

    /// Connection `conn` is gone.
    pub fn conn_closed(&mut self, conn: u64) {
        self.conn_trunks.remove(&conn);
    }

    /// Calls in progress (any state), agent calls included.
    pub fn len(&self) -> usize {
        self.calls.len() + self.agents.len()
    }

    /// True when no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.agents.is_empty()
    }

    /// The media plane (for the transport and tests).
    pub fn media(&self) -> &M {
        &self.media
    }

    fn via(&self, branch: &str) -> Vec<u8> {
        format!("SIP/2.0/TLS {};branch={branch}", self.settings.local).into_bytes()
    }

    fn contact(&self) -> Vec<u8> {
        format!("<sip:edge@{};transport=tls>", self.settings.local).into_bytes()
    }

    /// Handles one message from `peer` (whose source address is `ip`).
    pub fn handle(&mut self, now: Instant, peer: Peer, ip: IpAddr, msg: Message) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            Message::Request(r) => self.on_request(now, peer, ip, r, &mut out),
            Message::Response(r) => self.on_response(r, &mut out),
        }
        out
    }

    fn reply(&self, peer: Peer, req: &Request, status: u16, tag: Option<&str>) -> Action {
        let r = req.reply(status, tag.map(str::as_bytes));
        Action::Send(peer, response_bytes(&r))
    }

    fn on_request(
        &mut self,
        now: Instant,
        peer: Peer,
        ip: IpAddr,
        req: Request,
        out: &mut Vec<Action>,
    ) {
        count_request(&req.method);
        if let Err(rej) = inspect(&req) {
            if req.method != Method::Ack {
                let tag = rand_hex(6);
                out.push(Action::Send(
                    peer,
                    response_bytes(&rej.reply(&req, Some(tag.as_bytes()))),
                ));
            }
            return;
        }
        let Ok(call_id) = req.headers.call_id().map(<[u8]>::to_vec) else {
            return;
        };
        // Leg B requests carry our leg-B Call-ID (the call key); leg A ones the trunk's.
        if let Some(key) = std::str::from_utf8(&call_id)
            .ok()
            .filter(|k| self.calls.contains_key(*k))
            .map(str::to_string)
        {
            // From the route target: over our connection to it, or from its address (an IP
            // target's, or what its name last resolved to).
            let allowed = self.calls.get(&key).is_some_and(|c| {
                peer == Peer::Route(c.route)
                    || self
                        .settings
                        .routes
                        .get(c.route)
                        .is_some_and(|r| r.target_ip() == Some(ip))
                    || self
                        .route_ips
                        .get(&c.route)
                        .is_some_and(|ips| ips.contains(&ip))
            });
            if allowed {
                self.in_dialog(now, Side::B, key, peer, req, out);
            } else if req.method != Method::Ack {
                out.push(self.reply(peer, &req, 403, Some("x")));
            }
            return;
        }
        if let Some(key) = self.by_a.get(&call_id).cloned() {
            if self.calls.get(&key).is_some_and(|c| c.a_ip == ip) {
                self.in_dialog(now, Side::A, key, peer, req, out);
            } else if req.method != Method::Ack {
                out.push(self.reply(peer, &req, 403, Some("x")));
            }
            return;
        }
        if let Some(key) = self.agent_for(&call_id) {
            self.agent_in_dialog(key, peer, ip, req, out);
            return;
        }
        // Out of dialog.
        if req.method == Method::Ack {
            return;
        }
        let by_cert = match peer {
            Peer::Conn(id) => self.conn_trunks.get(&id).copied(),
            Peer::Route(_) => None,
        };
        let Some(trunk) = by_cert.or_else(|| trunk_for(&self.settings.trunks, ip)) else {
            tracing::info!(ip = %Redacted(ip), method = %req.method, "SIP request not from a trunk: 403");
            out.push(self.reply(peer, &req, 403, Some(&rand_hex(6))));
            return;
        };
        let has_to_tag = req.headers.to().map(|t| t.tag().is_some()).unwrap_or(false);
        let tag = rand_hex(6);
        match req.method {
            Method::Options => {
                let mut r = req.reply(200, Some(tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", "application/sdp");
                out.push(Action::Send(peer, response_bytes(&r)));
            }
            Method::Invite if !has_to_tag => self.new_call(now, peer, ip, trunk, req, out),
            Method::Cancel => out.push(self.reply(peer, &req, 481, Some(&tag))),
            _ if has_to_tag => out.push(self.reply(peer, &req, 481, Some(&tag))),
            _ => {
                let mut r = req.reply(405, Some(tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                out.push(Action::Send(peer, response_bytes(&r)));
            }
        }
    }

    fn new_call(
        &mut self,
        now: Instant,
        peer: Peer,
        ip: IpAddr,
        trunk: usize,
        req: Request,
        out: &mut Vec<Action>,
    ) {
        let our_tag = rand_hex(8);
        out.push(self.reply(peer, &req, 100, None));
        let fail = |s: &Self, status: u16, out: &mut Vec<Action>, outcome: &'static str| {
            metrics::counter!(SIP_CALLS, "outcome" => outcome).increment(1);
            out.push(s.reply(peer, &req, status, Some(&our_tag)));
        };
        if self.calls.len() + self.agents.len() >= MAX_CALLS {
            let mut r = req.reply(503, Some(our_tag.as_bytes()));
            r.headers.push("Retry-After", "5");
            out.push(Action::Send(peer, response_bytes(&r)));
            return;
        }
        let trunk_name = self
            .settings
            .trunks
            .get(trunk)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let Some(route) = route_for(&self.settings.routes, &trunk_name, &req.uri) else {
            tracing::info!(trunk = %trunk_name, to = %Redacted(user_of(&req.uri)), "no route: 404");
            return fail(self, 404, out, "rejected");
        };
        let (Ok(from), Ok(to)) = (req.headers.from(), req.headers.to()) else {
            return fail(self, 400, out, "rejected");
        };
        let Some(a_tag) = from.tag().map(text) else {
            return fail(self, 400, out, "rejected");
        };
        if req.body.is_empty() {
            // Offerless INVITEs (offer in the 2xx) are not supported yet.
            let mut r = req.reply(488, Some(our_tag.as_bytes()));
            r.headers
                .push("Warning", "399 srtp-edge \"SDP offer required\"");
            metrics::counter!(SIP_CALLS, "outcome" => "rejected").increment(1);
            out.push(Action::Send(peer, response_bytes(&r)));
            return;
        }
        if let Some(agent) = self
            .settings
            .routes
            .get(route)
            .and_then(|r| r.agent.clone())
        {
            return self.new_agent_call(
                now,
                peer,
                ip,
                &trunk_name,
                route,
                &agent,
                our_tag,
                a_tag,
                req,
                out,
            );
        }
        let key = rand_hex(16);
        let suites = self
            .settings
            .trunks
            .get(trunk)
            .map(|t| t.sdes_suites.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.settings.suites.clone());
        // Leg A is keyed the way the caller offered; leg B as the route says.
        let a_dtls = offer_keys_with_dtls(&req.body);
        let opts = self.route_offer(route);
        let offer = self.media.offer_with(
            &Negotiation {
                call_id: &key,
                from_tag: &a_tag,
                to_tag: None,
                sdp: &req.body,
                suites: &suites,
            },
            &opts,
        );
        let sdp = match offer {
            Ok(s) => s,
            Err(e) => {
                self.media.delete(&key);
                let status = e.sip_status();
                tracing::info!(status, error = %e, "offer refused");
                let mut r = req.reply(status, Some(our_tag.as_bytes()));
                let plaintext = status == 488;
                if plaintext {
                    r.headers.push("Warning", "399 srtp-edge \"SRTP required\"");
                }
                if status == 503 {
                    r.headers.push("Retry-After", "5");
                }
                metrics::counter!(SIP_CALLS, "outcome" => if plaintext { "plaintext" } else { "failed" })
                    .increment(1);
                out.push(Action::Send(peer, response_bytes(&r)));
                return;
            }
        };
        self.start_route_fork(&key, route, &req);
        self.start_route_recording(&key, route, &trunk_name, &req);
        let Some(r) = self.settings.routes.get(route) else {
            return fail(self, 500, out, "failed");
        };
        let mut target = r.target.clone();
        let to_user = safe_user(&user_of(&req.uri));
        target.user = Some(to_user.clone());
        target.password = None;
        target.headers.clear();
        let host = target.host.to_string();
        let b_ruri = target.to_string();
        let from_user = safe_user(&user_of(&from.uri));
        let b_from_tag = rand_hex(8);
        let scheme = if target.secure { "sips" } else { "sip" };
        let b_from = format!(
            "<{scheme}:{from_user}@{}>;tag={b_from_tag}",
            self.settings.local.rsplit_once(':').map_or("", |x| x.0)
        )
        .into_bytes();
        let b_to = format!("<{scheme}:{to_user}@{host}>").into_bytes();
        let b_branch = branch();
        let mf = req
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .map_or(70, |m| m.saturating_sub(1));
        let mut h = Headers::new();
        h.push("Via", self.via(&b_branch));
        h.push("Max-Forwards", mf.to_string());
        h.push("From", b_from.clone());
        h.push("To", b_to.clone());
        h.push("Call-ID", key.clone());
        h.push("CSeq", "1 INVITE");
        h.push("Contact", self.contact());
        h.push("Allow", ALLOW);
        h.push("Content-Type", "application/sdp");
        let Some(uri) = Uri::parse(b_ruri.as_bytes()) else {
            self.media.delete(&key);
            return fail(self, 500, out, "failed");
        };
        let invite = Request {
            method: Method::Invite,
            uri,
            headers: h,
            body: sdp.into_bytes(),
        };
        out.push(Action::Send(Peer::Route(route), invite.to_bytes()));
        tracing::info!(
            call = %&key[..8],
            trunk = %trunk_name,
            from = %Redacted(&from_user),
            to = %Redacted(&to_user),
            route,
            "call: INVITE relayed"
        );
        let a_contact = match req.headers.contacts() {
            Ok(Some(Contacts::List(l))) => l.into_iter().next().map(|c| c.uri),
            _ => None,
        };
        let call_id = req
            .headers
            .call_id()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        self.txs.insert(b_branch.clone(), (key.clone(), Tx::Invite));
        self.by_a.insert(call_id.clone(), key.clone());
        let mut to_tagged = to.clone();
        to_tagged.set_param("tag", Some(our_tag.as_bytes()));
        let a_from = to_tagged.to_bytes();
        let call = Call {
            key: key.clone(),
            state: State::Calling,
            deadline: now + self.settings.timer_b,
            trunk,
            route,
            a_peer: peer,
            a_ip: ip,
            a_call_id: call_id,
            a_tag,
            a_our_tag: our_tag,
            a_contact,
            a_from,
            a_to: from.to_bytes(),
            a_cseq: 1,
            a_invite: req,
            b_branch,
            b_ruri,
            b_from,
            b_our_tag: b_from_tag,
            b_to,
            b_tag: None,
            b_target: None,
            b_cseq: 1,
            answer_sdp: None,
            b_provisional: false,
            a_dtls,
            offer_pending: None,
            ack_offer: None,
        };
        self.calls.insert(key, call);
    }

    /// A response to leg A's INVITE with our tag, Contact and `body` as SDP.
    fn a_response(&self, c: &Call, status: u16, body: Option<&str>) -> Action {
        let reason = reason_phrase(status);
        let mut r = reply_to_headers(
            &c.a_invite.headers,
            status,
            if reason.is_empty() { "Unknown" } else { reason },
            Some(c.a_our_tag.as_bytes()),
        );
        if (101..300).contains(&status) {
            r.headers.push("Contact", self.contact());
        }
        if status == 488 {
            r.headers.push("Warning", "399 srtp-edge \"SRTP required\"");
        }
        if let Some(b) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = b.as_bytes().to_vec();
        }
        Action::Send(c.a_peer, response_bytes(&r))
    }

    /// A new in-dialog request towards `side` of call `c` (our own CSeq space on that leg).
    fn dialog_request(
        &mut self,
        key: &str,
        side: Side,
        method: Method,
    ) -> Option<(Peer, Request, String)> {
        let b = branch();
        let via = self.via(&b);
        let contact = self.contact();
        let c = self.calls.get_mut(key)?;
        let mut h = Headers::new();
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        let (peer, uri, call_id, seq) = match side {
            Side::A => {
                c.a_cseq += 1;
                h.push("From", c.a_from.clone());
                h.push("To", c.a_to.clone());
                (
                    c.a_peer,
                    c.a_contact.clone()?,
                    c.a_call_id.clone(),
                    c.a_cseq,
                )
            }
            Side::B => {
                c.b_cseq += 1;
                h.push("From", c.b_from.clone());
                let mut to = c.b_to.clone();
                if let Some(t) = &c.b_tag {
                    to.extend_from_slice(format!(";tag={t}").as_bytes());
                }
                h.push("To", to);
                let uri = c
                    .b_target
                    .clone()
                    .or_else(|| Uri::parse(c.b_ruri.as_bytes()))?;
                (
                    Peer::Route(c.route),
                    uri,
                    c.key.as_bytes().to_vec(),
                    c.b_cseq,
                )
            }
        };
        h.push("Call-ID", call_id);
        h.push("CSeq", format!("{seq} {method}"));
        if matches!(method, Method::Invite | Method::Update) {
            h.push("Contact", contact);
        }
        Some((
            peer,
            Request {
                method,
                uri,
                headers: h,
                body: Vec::new(),
            },
            b,
        ))
    }

    /// ACK for a final response to our initial INVITE on leg B (`to` with the response's tag).
    fn b_ack(&self, c: &Call, to: &[u8], same_branch: bool) -> Option<Action> {
        let b = if same_branch {
            c.b_branch.clone()
        } else {
            branch()
        };
        let mut h = Headers::new();
        h.push("Via", self.via(&b));
        h.push("Max-Forwards", "70");
        h.push("From", c.b_from.clone());
        h.push("To", to.to_vec());
        h.push("Call-ID", c.key.clone());
        h.push("CSeq", "1 ACK");
        let uri = if same_branch {
            Uri::parse(c.b_ruri.as_bytes())?
        } else {
            c.b_target
                .clone()
                .or_else(|| Uri::parse(c.b_ruri.as_bytes()))?
        };
        let ack = Request {
            method: Method::Ack,
            uri,
            headers: h,
            body: Vec::new(),
        };
        Some(Action::Send(Peer::Route(c.route), ack.to_bytes()))
    }

    fn send_dialog(
        &mut self,
        key: &str,
        side: Side,
        method: Method,
        tx: Tx,
        body: Option<String>,
        out: &mut Vec<Action>,
    ) {
        if let Some((peer, mut req, b)) = self.dialog_request(key, side, method) {
            if let Some(sdp) = body {
                req.headers.push("Content-Type", "application/sdp");
                req.body = sdp.into_bytes();
            }
            self.txs.insert(b, (key.to_string(), tx));
            out.push(Action::Send(peer, req.to_bytes()));
        }
    }

    fn end_call(&mut self, key: &str, outcome: &'static str) {
        if let Some(c) = self.calls.remove(key) {
            self.media.delete(key);
            self.by_a.remove(&c.a_call_id);
            self.txs.retain(|_, (k, _)| k != key);
            metrics::counter!(SIP_CALLS, "outcome" => outcome).increment(1);
            tracing::info!(call = %&key[..key.len().min(8)], outcome, "call ended");
        }
    }

    fn cancel_upstream(&mut self, key: &str, out: &mut Vec<Action>) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        c.state = State::Cancelling;
        let mut h = Headers::new();
        h.push(
            "Via",
            format!("SIP/2.0/TLS {};branch={}", self.settings.local, c.b_branch),
        );
        h.push("Max-Forwards", "70");
        h.push("From", c.b_from.clone());
        h.push("To", c.b_to.clone());
        h.push("Call-ID", c.key.clone());
        h.push("CSeq", "1 CANCEL");
        if let Some(uri) = Uri::parse(c.b_ruri.as_bytes()) {
            let cancel = Request {
                method: Method::Cancel,
                uri,
                headers: h,
                body: Vec::new(),
            };
            out.push(Action::Send(Peer::Route(c.route), cancel.to_bytes()));
        }
    }

    fn in_dialog(
        &mut self,
        now: Instant,
        side: Side,
        key: String,
        peer: Peer,
        req: Request,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.calls.get(&key) else {
            return;
        };
        let state = c.state;
        let other = if side == Side::A { Side::B } else { Side::A };
        let our_tag = match side {
            Side::A => c.a_our_tag.clone(),
            Side::B => c.b_our_tag.clone(),
        };
        match req.method {
            Method::Ack => self.on_dialog_ack(&key, side, &req, out),
            Method::Cancel if side == Side::A => {
                out.push(self.reply(peer, &req, 200, Some(&our_tag)));
                if state == State::Calling {
                    if let Some(c) = self.calls.get(&key) {
                        out.push(self.a_response(c, 487, None));
                    }
                    self.cancel_upstream(&key, out);
                    self.media.delete(&key);
                    metrics::counter!(SIP_CALLS, "outcome" => "cancelled").increment(1);
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.deadline = now + self.settings.timer_b;
                    }
                }
            }
            Method::Invite
                if side == Side::A
                    && req.headers.to().map(|t| t.tag().is_none()).unwrap_or(true) =>
            {
                // The same INVITE again (or a merged one): not a new call.
                out.push(self.reply(peer, &req, 482, Some(&our_tag)));
            }
            Method::Bye => {
                out.push(self.reply(peer, &req, 200, Some(&our_tag)));
                match state {
                    State::Confirmed => {
                        self.send_dialog(&key, other, Method::Bye, Tx::Consume, None, out);
                    }
                    State::Calling if side == Side::B => {
                        if let Some(c) = self.calls.get(&key) {
                            out.push(self.a_response(c, 480, None));
                        }
                    }
                    _ => {}
                }
                self.end_call(&key, "answered");
            }
            Method::Invite | Method::Update | Method::Info if state == State::Confirmed => {
                let sdp_offer = !req.body.is_empty() && req.method != Method::Info;
                // A re-INVITE (with or without SDP) or an UPDATE offer starts an offer/answer
                // exchange; only one can be in flight per call.
                let starts_exchange = req.method == Method::Invite || sdp_offer;
                if let Some(p) = c.offer_pending.as_ref().filter(|_| starts_exchange) {
                    let mut r = if p.from == side {
                        // The sender's own offer is still unanswered (RFC 3261 14.2, RFC 3311
                        // 5.2): 500 with a random Retry-After of 0-10 s.
                        let mut r = req.reply(500, Some(our_tag.as_bytes()));
                        r.headers.push("Retry-After", retry_after().to_string());
                        r
                    } else {
                        // Our offer to the sender crossed its own: glare (RFC 3261 14.1).
                        req.reply(491, Some(our_tag.as_bytes()))
                    };
                    r.headers.push("Allow", ALLOW);
                    tracing::info!(call = %&key[..key.len().min(8)], status = r.status, method = %req.method, "offer while another is pending");
                    out.push(Action::Send(peer, response_bytes(&r)));
                    return;
                }
                let offer_tag = if sdp_offer {
                    let tag = match side {
                        Side::A => Some(c.a_tag.clone()),
                        Side::B => c.b_tag.clone(),
                    };
                    let Some(tag) = tag else { return };
                    let suites = self.suites_for(&key);
                    // The other party keeps its keying: leg A what the caller offered, leg B
                    // the route's `media_keying`.
                    let opts = match other {
                        Side::A => OfferOptions {
                            dtls: c.a_dtls,
                            ..Default::default()
                        },
                        Side::B => self.route_offer(c.route),
                    };
                    match self.media.offer_with(
                        &Negotiation {
                            call_id: &key,
                            from_tag: &tag,
                            to_tag: None,
                            sdp: &req.body,
                            suites: &suites,
                        },
                        &opts,
                    ) {
                        Ok(s) => {
                            if side == Side::A {
                                let a_dtls = offer_keys_with_dtls(&req.body);
                                if let Some(c) = self.calls.get_mut(&key) {
                                    c.a_dtls = a_dtls;
                                }
                            }
                            Some((tag, s))
                        }
                        Err(e) => {
                            let mut r = req.reply(e.sip_status(), Some(our_tag.as_bytes()));
                            if e.sip_status() == 488 {
                                r.headers.push("Warning", "399 srtp-edge \"SRTP required\"");
                            }
                            out.push(Action::Send(peer, response_bytes(&r)));
                            return;
                        }
                    }
                } else {
                    None
                };
                let method = req.method.clone();
                let (tag, body) = match offer_tag {
                    Some((t, s)) => (Some(t), Some(s)),
                    None => (None, None),
                };
                let info_body = (method == Method::Info && !req.body.is_empty()).then(|| {
                    (
                        req.headers.get("Content-Type").map(<[u8]>::to_vec),
                        req.body.clone(),
                    )
                });
                let tx = Tx::Relay {
                    from: peer,
                    req: Box::new(req),
                    offer_tag: tag,
                    to: other,
                };
                if let Some((p, mut r, b)) = self.dialog_request(&key, other, method) {
                    if let Some(sdp) = body {
                        r.headers.push("Content-Type", "application/sdp");
                        r.body = sdp.into_bytes();
                    } else if let Some((ct, b)) = info_body {
                        if let Some(ct) = ct {
                            r.headers.push("Content-Type", ct);
                        }
                        r.body = b;
                    }
                    if starts_exchange {
                        if let Some(c) = self.calls.get_mut(&key) {
                            c.offer_pending = Some(PendingOffer {
                                from: side,
                                branch: b.clone(),
                                deadline: now + self.settings.timer_b,
                            });
                        }
                    }
                    self.txs.insert(b, (key.clone(), tx));
                    out.push(Action::Send(p, r.to_bytes()));
                }
            }
            Method::Invite | Method::Update | Method::Info => {
                out.push(self.reply(peer, &req, 491, Some(&our_tag)));
            }
            Method::Options => {
                let mut r = req.reply(200, Some(our_tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                out.push(Action::Send(peer, response_bytes(&r)));
            }
            _ => out.push(self.reply(peer, &req, 501, Some(&our_tag))),
        }
    }

    /// The 2xx to a re-INVITE sent without SDP carries the answering leg's offer: it is
    /// re-offered to the sender in the relayed 2xx, and the exchange stays pending until the
    /// sender's ACK brings the answer. A refused offer ends the call (neither leg can go on).
    fn delayed_offer(
        &mut self,
        key: &str,
        from: Peer,
        req: &Request,
        resp: Response,
        answerer: Side,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.calls.get(key) else { return };
        let (offer_tag, opts) = match answerer {
            Side::B => (
                c.b_tag.clone(),
                OfferOptions {
                    dtls: c.a_dtls,
                    ..Default::default()
                },
            ),
            Side::A => (Some(c.a_tag.clone()), self.route_offer(c.route)),
        };
        let Some(offer_tag) = offer_tag else { return };
        let offered = self.media.offer_with(
            &Negotiation {
                call_id: key,
                from_tag: &offer_tag,
                to_tag: None,
                sdp: &resp.body,
                suites: &self.suites_for(key),
            },
            &opts,
        );
        let sdp = match offered {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(call = %&key[..key.len().min(8)], error = %e, "offer in a re-INVITE 2xx refused: hanging up");
                let mut r = req.reply(e.sip_status(), None);
                if e.sip_status() == 488 {
                    r.headers.push("Warning", "399 srtp-edge \"SRTP required\"");
                }
                out.push(Action::Send(from, response_bytes(&r)));
                self.ack_relayed(key, &resp, answerer, out);
                let sender = if answerer == Side::A {
                    Side::B
                } else {
                    Side::A
                };
                self.send_dialog(key, sender, Method::Bye, Tx::Consume, None, out);
                self.send_dialog(key, answerer, Method::Bye, Tx::Consume, None, out);
                self.end_call(key, "failed");
                return;
            }
        };
        let reason = reason_phrase(resp.status);
        let mut r = reply_to_headers(
            &req.headers,
            resp.status,
            if reason.is_empty() { "Unknown" } else { reason },
            None,
        );
        r.headers.push("Contact", self.contact());
        r.headers.push("Content-Type", "application/sdp");
        r.body = sdp.into_bytes();
        out.push(Action::Send(from, response_bytes(&r)));
        if let Some(c) = self.calls.get_mut(key) {
            c.ack_offer = Some(DelayedAck {
                answerer,
                offer_tag,
                resp: Box::new(resp),
            });
        }
    }

    /// An in-dialog ACK: absorbed, unless it brings the answer a delayed ACK waits for.
    fn on_dialog_ack(&mut self, key: &str, side: Side, ack: &Request, out: &mut Vec<Action>) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        let Some(d) = c.ack_offer.take_if(|d| d.answerer != side) else {
            return;
        };
        c.offer_pending = None;
        let to_tag = match side {
            Side::A => Some(c.a_tag.clone()),
            Side::B => c.b_tag.clone(),
        };
        let answer = if ack.body.is_empty() {
            None
        } else {
            self.media
                .answer(&Negotiation {
                    call_id: key,
                    from_tag: &d.offer_tag,
                    to_tag: to_tag.as_deref(),
                    sdp: &ack.body,
                    suites: &self.suites_for(key),
                })
                .map_err(|e| tracing::info!(call = %&key[..key.len().min(8)], error = %e, "answer in an ACK refused"))
                .ok()
        };
        let ok = answer.is_some();
        self.ack_relayed_with(key, &d.resp, d.answerer, answer, out);
        if !ok {
            // The offer in the 2xx got no usable answer: neither leg has a session to go on with.
            self.send_dialog(key, Side::A, Method::Bye, Tx::Consume, None, out);
            self.send_dialog(key, Side::B, Method::Bye, Tx::Consume, None, out);
            self.end_call(key, "failed");
        }
    }

    /// How offers to route `route`'s target are keyed: DTLS-SRTP when its `media_keying` says
    /// so, else SDES in `RTP/SAVP` (no feedback profile towards a SIP trunk).
    fn route_offer(&self, route: usize) -> OfferOptions {
        let dtls = self
            .settings
            .routes
            .get(route)
            .is_some_and(|r| r.media_keying == MediaKeying::Dtls);
        OfferOptions {
            dtls,
            no_feedback: !dtls,
        }
    }

    fn suites_for(&self, key: &str) -> Vec<Profile> {
        self.calls
            .get(key)
            .and_then(|c| self.settings.trunks.get(c.trunk))
            .map(|t| t.sdes_suites.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.settings.suites.clone())
    }

    fn on_response(&mut self, resp: Response, out: &mut Vec<Action>) {
        if inspect_response(&resp).is_err() {
            return; // RFC 4475: a malformed response is dropped.
        }
        let Some(b) = resp
            .headers
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(text))
        else {
            return;
        };
        let Some((key, tx)) = self.txs.get(&b).cloned() else {
            return;
        };
        if resp.status >= 200 {
            self.txs.remove(&b);
        }
        match tx {
            Tx::Consume => {}
            Tx::Invite => self.on_invite_response(&key, resp, out),
            Tx::Relay {
                from,
                req,
                offer_tag,
                to,
            } => {
                if resp.status == 100 {
                    return;
                }
                // A 2xx carrying an offer (re-INVITE sent without SDP) keeps the exchange
                // pending until the ACK brings the answer.
                let offer_in_2xx = offer_tag.is_none()
                    && req.method == Method::Invite
                    && (200..300).contains(&resp.status)
                    && !resp.body.is_empty();
                if resp.status >= 200 && !offer_in_2xx {
                    if let Some(c) = self.calls.get_mut(&key) {
                        if c.offer_pending.as_ref().is_some_and(|p| p.branch == b) {
                            c.offer_pending = None;
                        }
                    }
                }
                if offer_tag.is_some() && (200..300).contains(&resp.status) && resp.body.is_empty()
                {
                    // A 2xx to our offer must carry the answer (RFC 3264): the exchange failed,
                    // the sender keeps its previous session; the answering leg is ACKed.
                    tracing::info!(call = %&key[..key.len().min(8)], "2xx to a relayed offer without an answer");
                    let mut r = req.reply(488, None);
                    r.headers.push(
                        "Warning",
                        "399 srtp-edge \"no SDP answer from the other party\"",
                    );
                    out.push(Action::Send(from, response_bytes(&r)));
                    if req.method == Method::Invite {
                        self.ack_relayed(&key, &resp, to, out);
                    }
                    return;
                }
                if offer_in_2xx {
                    self.delayed_offer(&key, from, &req, resp, to, out);
                    return;
                }
                let mut body = None;
                if let Some(tag) = offer_tag.as_ref().filter(|_| !resp.body.is_empty()) {
                    let to_tag = self.calls.get(&key).and_then(|c| {
                        if Some(tag) == c.b_tag.as_ref() {
                            Some(c.a_tag.clone())
                        } else {
                            c.b_tag.clone()
                        }
                    });
                    match self.media.answer(&Negotiation {
                        call_id: &key,
                        from_tag: tag,
                        to_tag: to_tag.as_deref(),
                        sdp: &resp.body,
                        suites: &self.suites_for(&key),
                    }) {
                        Ok(s) => body = Some(s),
                        Err(e) => {
                            tracing::info!(error = %e, "re-INVITE answer refused");
                            let status = e.sip_status();
                            let r = req.reply(status, None);
                            out.push(Action::Send(from, response_bytes(&r)));
                            if (200..300).contains(&resp.status) {
                                self.ack_relayed(&key, &resp, to, out);
                            }
                            return;
                        }
                    }
                }
                let reason = reason_phrase(resp.status);
                let mut r = reply_to_headers(
                    &req.headers,
                    resp.status,
                    if reason.is_empty() { "Unknown" } else { reason },
                    None,
                );
                if req.method == Method::Invite || req.method == Method::Update {
                    r.headers.push("Contact", self.contact());
                }
                if let Some(s) = body {
                    r.headers.push("Content-Type", "application/sdp");
                    r.body = s.into_bytes();
                }
                out.push(Action::Send(from, response_bytes(&r)));
                if req.method == Method::Invite && (200..300).contains(&resp.status) {
                    self.ack_relayed(&key, &resp, to, out);
                }
            }
        }
    }

    /// ACKs a 2xx to a re-INVITE we relayed, on the leg that answered it (the other leg's ACK
    /// to our 2xx is absorbed).
    fn ack_relayed(&mut self, key: &str, resp: &Response, to: Side, out: &mut Vec<Action>) {
        self.ack_relayed_with(key, resp, to, None, out);
    }

    /// [`ack_relayed`](Self::ack_relayed) carrying `answer` as SDP (the answer to an offer the
    /// 2xx carried, for a re-INVITE sent without one).
    fn ack_relayed_with(
        &mut self,
        key: &str,
        resp: &Response,
        to: Side,
        answer: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let Ok(cseq) = resp.headers.cseq() else {
            return;
        };
        let Some(c) = self.calls.get(key) else { return };
        let answered_by_b = to == Side::B;
        let mut h = Headers::new();
        h.push("Via", self.via(&branch()));
        h.push("Max-Forwards", "70");
        let (peer, uri) = if answered_by_b {
            h.push("From", c.b_from.clone());
            let mut to = c.b_to.clone();
            if let Some(t) = &c.b_tag {
                to.extend_from_slice(format!(";tag={t}").as_bytes());
            }
            h.push("To", to);
            h.push("Call-ID", c.key.clone());
            (
                Peer::Route(c.route),
                c.b_target
                    .clone()
                    .or_else(|| Uri::parse(c.b_ruri.as_bytes())),
            )
        } else {
            h.push("From", c.a_from.clone());
            h.push("To", c.a_to.clone());
            h.push("Call-ID", c.a_call_id.clone());
            (c.a_peer, c.a_contact.clone())
        };
        h.push("CSeq", format!("{} ACK", cseq.seq));
        let body = match answer {
            Some(sdp) => {
                h.push("Content-Type", "application/sdp");
                sdp.into_bytes()
            }
            None => Vec::new(),
        };
        if let Some(uri) = uri {
            let ack = Request {
                method: Method::Ack,
                uri,
                headers: h,
                body,
            };
            out.push(Action::Send(peer, ack.to_bytes()));
        }
    }

    fn on_invite_response(&mut self, key: &str, resp: Response, out: &mut Vec<Action>) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        let status = resp.status;
        if status == 100 {
            return;
        }
        let to = resp
            .headers
            .get("To")
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let resp_tag = resp.headers.to().ok().and_then(|t| t.tag().map(text));
        if let Some(t) = &resp_tag {
            if c.b_tag.is_none() || status >= 200 {
                c.b_tag = Some(t.clone());
            }
        }
        if status >= 300 {
            // Non-2xx final: ACK it on the same branch; relay unless we already answered A.
            let state = c.state;
            let ack = self.calls.get(key).and_then(|c| self.b_ack(c, &to, true));
            out.extend(ack);
            if state == State::Calling {
                let relayed = match status {
                    300..=399 => 480,
                    s => s,
                };
                if let Some(c) = self.calls.get(key) {
                    out.push(self.a_response(c, relayed, None));
                }
                self.end_call(key, "rejected");
            } else {
                self.end_call(key, "cancelled");
            }
            return;
        }
        if status >= 200 {
            if let Ok(Some(Contacts::List(l))) = resp.headers.contacts() {
                c.b_target = l.into_iter().next().map(|a| a.uri);
            }
            let ack = self.calls.get(key).and_then(|c| self.b_ack(c, &to, false));
            out.extend(ack);
            let Some(c) = self.calls.get(key) else { return };
            if c.state != State::Calling {
                // Cancelled meanwhile: the 200 won the race; hang up leg B.
                self.send_dialog(key, Side::B, Method::Bye, Tx::Consume, None, out);
                self.end_call(key, "cancelled");
                return;
            }
        }
        // 1xx (above 100) or 2xx: rewrite the answer if one is carried.
        let Some(c) = self.calls.get(key) else { return };
        let mut body = c.answer_sdp.clone();
        if body.is_none() && !resp.body.is_empty() {
            let suites = self.suites_for(key);
            let Some(c) = self.calls.get(key) else { return };
            match self.media.answer(&Negotiation {
                call_id: key,
                from_tag: &c.a_tag,
                to_tag: resp_tag.as_deref(),
                sdp: &resp.body,
                suites: &suites,
            }) {
                Ok(s) => {
                    body = Some(s.clone());
                    if let Some(c) = self.calls.get_mut(key) {
                        c.answer_sdp = Some(s);
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, status, "answer from the route target refused; tearing down");
                    let Some(c) = self.calls.get(key) else { return };
                    out.push(self.a_response(c, 488, None));
                    if status >= 200 {
                        self.send_dialog(key, Side::B, Method::Bye, Tx::Consume, None, out);
                        self.end_call(key, "plaintext");
                    } else {
                        self.cancel_upstream(key, out);
                        self.media.delete(key);
                        metrics::counter!(SIP_CALLS, "outcome" => "plaintext").increment(1);
                    }
                    return;
                }
            }
        }
        let Some(c) = self.calls.get(key) else { return };
        if status >= 200 && body.is_none() {
            // A 2xx without an answer cannot be anchored: refuse leg A, hang up leg B.
            out.push(self.a_response(c, 488, None));
            self.send_dialog(key, Side::B, Method::Bye, Tx::Consume, None, out);
            self.end_call(key, "failed");
            return;
        }
        let relay_status = if status >= 200 { 200 } else { status };
        out.push(self.a_response(c, relay_status, body.as_deref()));
        if let Some(c) = self.calls.get_mut(key) {
            if status >= 200 {
                c.state = State::Confirmed;
                tracing::info!(call = %&key[..key.len().min(8)], "call answered");
            } else {
                c.b_provisional = true;
            }
        }
    }

    /// The transport could not reach a route target (connect, TLS or write failure): calls
    /// still waiting on it fail with 503.
    pub fn route_failed(&mut self, route: usize) -> Vec<Action> {
        let mut out = Vec::new();
        let keys: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.route == route && c.state != State::Confirmed)
            .map(|c| c.key.clone())
            .collect();
        for k in keys {
            if let Some(c) = self.calls.get(&k) {
                if c.state == State::Calling {
                    out.push(self.a_response(c, 503, None));
                }
            }
            self.end_call(&k, "failed");
        }
        out
    }

    /// Timer B and the wait after a CANCEL: calls with no final response by their deadline fail
    /// with 408 (CANCEL sent upstream).
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let audit = self.next_audit.is_none_or(|t| t <= now);
        self.agent_tick(now, audit, &mut out);
        // Established calls whose media the engine ended (no media for media.timeout_secs):
        // hang up both legs.
        if audit {
            self.next_audit = Some(now + AUDIT_EVERY);
            if self.calls.values().any(|c| c.state == State::Confirmed) {
                let live = self.media.live();
                let dead: Vec<String> = self
                    .calls
                    .values()
                    .filter(|c| c.state == State::Confirmed && !live.contains(&c.key))
                    .map(|c| c.key.clone())
                    .collect();
                for k in dead {
                    tracing::info!(call = %&k[..k.len().min(8)], "media timed out: hanging up both legs");
                    self.send_dialog(&k, Side::A, Method::Bye, Tx::Consume, None, &mut out);
                    self.send_dialog(&k, Side::B, Method::Bye, Tx::Consume, None, &mut out);
                    self.end_call(&k, "media_timeout");
                }
            }
        }
        // Relayed offers the other leg never answered: 408 to the sender, the dialog goes on.
        let stale: Vec<(String, String)> = self
            .calls
            .values()
            .filter_map(|c| {
                c.offer_pending
                    .as_ref()
                    .filter(|p| p.deadline <= now)
                    .map(|p| (c.key.clone(), p.branch.clone()))
            })
            .collect();
        for (k, b) in stale {
            let mut delayed = false;
            if let Some(c) = self.calls.get_mut(&k) {
                c.offer_pending = None;
                delayed = c.ack_offer.take().is_some();
            }
            if delayed {
                // The sender never ACKed the 2xx that carried an offer: hang up both legs.
                tracing::info!(call = %&k[..k.len().min(8)], "no ACK with the answer: hanging up");
                self.send_dialog(&k, Side::A, Method::Bye, Tx::Consume, None, &mut out);
                self.send_dialog(&k, Side::B, Method::Bye, Tx::Consume, None, &mut out);
                self.end_call(&k, "failed");
                continue;
            }
            if let Some((_, Tx::Relay { from, req, .. })) = self.txs.remove(&b) {
                tracing::info!(call = %&k[..k.len().min(8)], method = %req.method, "relayed offer unanswered: 408");
                let r = req.reply(408, None);
                out.push(Action::Send(from, response_bytes(&r)));
            }
        }
        let due: Vec<(String, State)> = self
            .calls
            .values()
            .filter(|c| c.state != State::Confirmed && c.deadline <= now)
            .map(|c| (c.key.clone(), c.state))
            .collect();
        for (k, state) in due {
            if state == State::Calling {
                if let Some(c) = self.calls.get(&k) {
                    out.push(self.a_response(c, 408, None));
                }
                self.cancel_upstream(&k, &mut out);
                self.end_call(&k, "timeout");
            } else {
                self.end_call(&k, "cancelled");
            }
        }
        out
    }

    /// Ends every call (shutdown): BYE or CANCEL on both legs, ports released.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.agent_shutdown(&mut out);
        let keys: Vec<(String, State)> = self
            .calls
            .values()
            .map(|c| (c.key.clone(), c.state))
            .collect();
        for (k, state) in keys {
            match state {
                State::Confirmed => {
                    self.send_dialog(&k, Side::A, Method::Bye, Tx::Consume, None, &mut out);
                    self.send_dialog(&k, Side::B, Method::Bye, Tx::Consume, None, &mut out);
                }
                State::Calling => {
                    if let Some(c) = self.calls.get(&k) {
                        out.push(self.a_response(c, 503, None));
                    }
                    self.cancel_upstream(&k, &mut out);
                }
                State::Cancelling => {}
            }
            self.end_call(&k, "failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::sdp::policy::PolicyError;
    use std::cell::RefCell;

    /// The media plane stand-in: answers with marked SDP, refuses `RTP/AVP ` offers and
    /// answers as plaintext, and records every call.
    #[derive(Default)]
    struct Fake {
        log: RefCell<Vec<String>>,
        live: RefCell<std::collections::HashSet<String>>,
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n";

    impl MediaPlane for Fake {
        fn offer_with(
            &self,
            n: &Negotiation<'_>,
            opts: &OfferOptions,
        ) -> Result<String, CallError> {
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
        )
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

    fn request(a: &Action) -> Request {
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

    fn now() -> Instant {
        Instant::now()
    }

    /// Sets up a call to the point of the upstream INVITE; returns it.
    fn invite(b: &mut B2bua<Fake>) -> Request {
        let out = b.handle(now(), TRUNK, trunk_ip(), req("INVITE", "", OFFER));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(status(&out[0]), 100);
        assert_eq!(parsed(&out[1]).0, UP);
        request(&out[1])
    }

    #[test]
    fn options_register_and_strangers() {
        let mut b = b2bua();
        let out = b.handle(now(), TRUNK, trunk_ip(), req("OPTIONS", "", ""));
        assert_eq!(status(&out[0]), 200);
        assert!(parsed(&out[0]).1.headers().get("Allow").is_some());
        let out = b.handle(now(), TRUNK, trunk_ip(), req("REGISTER", "", ""));
        assert_eq!(status(&out[0]), 405);
        assert_eq!(
            parsed(&out[0]).1.headers().get("Allow"),
            Some(ALLOW.as_bytes())
        );
        let stranger: IpAddr = "192.0.3.5".parse().unwrap();
        let out = b.handle(now(), TRUNK, stranger, req("INVITE", "", OFFER));
        assert_eq!(status(&out[0]), 403);
        assert!(b.media().log.borrow().is_empty());
        let out = b.handle(now(), TRUNK, trunk_ip(), req("BYE", ";tag=zz", ""));
        assert_eq!(status(&out[0]), 481);
        assert!(b
            .handle(now(), TRUNK, trunk_ip(), req("ACK", ";tag=zz", ""))
            .is_empty());
    }

    #[test]
    fn trunk_by_client_certificate() {
        let mut b = b2bua();
        let elsewhere: IpAddr = "203.0.113.77".parse().unwrap();
        let out = b.handle(now(), Peer::Conn(3), elsewhere, req("OPTIONS", "", ""));
        assert_eq!(status(&out[0]), 403);
        b.conn_identified(3, 0);
        let out = b.handle(now(), Peer::Conn(3), elsewhere, req("OPTIONS", "", ""));
        assert_eq!(status(&out[0]), 200);
        let out = b.handle(now(), Peer::Conn(4), elsewhere, req("OPTIONS", "", ""));
        assert_eq!(status(&out[0]), 403);
        b.conn_closed(3);
        let out = b.handle(now(), Peer::Conn(3), elsewhere, req("OPTIONS", "", ""));
        assert_eq!(status(&out[0]), 403);
    }

    #[test]
    fn invalid_requests_get_the_validator_status() {
        let mut b = b2bua();
        let raw = "INVITE sip:x@edge.example SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.5;branch=z9hG4bKa1\r\n\
                   Max-Forwards: 0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@edge.example>\r\nCall-ID: c\r\n\
                   CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let out = b.handle(
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
        assert!(
            bytes.starts_with("INVITE sip:+15551234567@198.51.100.7:5071;transport=tls SIP/2.0")
        );
        assert!(bytes.contains("From: <sip:+15550001111@203.0.113.1>;tag="));
        assert!(bytes.contains("edge-offer"));
        let key = text(up.headers.call_id().unwrap());
        assert_eq!(b.media().log.borrow()[0], format!("offer {key} atag"));

        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 180, ""));
        assert_eq!(out.len(), 1);
        assert_eq!(status(&out[0]), 180);
        assert_eq!(parsed(&out[0]).0, TRUNK);

        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 200, OFFER));
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
        assert!(b
            .handle(
                now(),
                TRUNK,
                trunk_ip(),
                req("ACK", &format!(";tag={a_tag}"), "")
            )
            .is_empty());
        let out = b.handle(
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
        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 200, OFFER));
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
        let out = b.handle(
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
        let out = b.handle(
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
        let out = b.handle(now(), UP, target_ip(), from_target(&up, "INVITE", OFFER));
        assert_eq!(out.len(), 1);
        let re = request(&out[0]);
        assert_eq!(parsed(&out[0]).0, TRUNK);
        assert_eq!(re.body, b"v=0 edge-offer\r\n");
        assert_eq!(
            b.media().log.borrow().last().unwrap(),
            &format!("offer {key} btag")
        );
        // The caller answers: the answer goes back rewritten, the caller is ACKed.
        let out = b.handle(now(), TRUNK, trunk_ip(), {
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
        let out = b.handle(now(), TRUNK, trunk_ip(), req("INVITE", &to, OFFER));
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
        let out = b.handle(now(), UP, target_ip(), answer_to(&re, 200, OFFER));
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
        let out = b.handle(now(), TRUNK, trunk_ip(), info);
        let fwd = request(&out[0]);
        assert_eq!(fwd.method, Method::Info);
        assert_eq!(fwd.body, b"Signal=5\r\nDuration=160\r\n");
        assert_eq!(
            fwd.headers.get("Content-Type"),
            Some(&b"application/dtmf-relay"[..])
        );
        let out = b.handle(now(), UP, target_ip(), answer_to(&fwd, 200, ""));
        assert_eq!((status(&out[0]), parsed(&out[0]).0), (200, TRUNK));
        // An in-dialog method the edge does not relay.
        let out = b.handle(now(), TRUNK, trunk_ip(), req("REFER", &to, ""));
        assert_eq!(status(&out[0]), 501);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn plaintext_offer_gets_488_and_no_ports() {
        let mut b = b2bua();
        let plain = OFFER.replace("RTP/SAVP", "RTP/AVP");
        let out = b.handle(now(), TRUNK, trunk_ip(), req("INVITE", "", &plain));
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
        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 200, &plain));
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
        b.handle(now(), UP, target_ip(), answer_to(&up, 180, ""));
        let out = b.handle(now(), TRUNK, trunk_ip(), req("CANCEL", "", ""));
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
        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 487, ""));
        assert_eq!(out.len(), 1);
        assert_eq!(request(&out[0]).method, Method::Ack);
        assert!(b.is_empty());
    }

    #[test]
    fn timer_b_gives_408_and_unreachable_target_503() {
        let mut b = b2bua();
        let t0 = now();
        invite(&mut b);
        assert!(b.tick(t0 + Duration::from_secs(1)).is_empty());
        let out = b.tick(t0 + TIMER_B + Duration::from_secs(1));
        assert_eq!(status(&out[0]), 408);
        assert_eq!(request(&out[1]).method, Method::Cancel);
        assert!(b.is_empty());
        assert!(b
            .media()
            .log
            .borrow()
            .last()
            .unwrap()
            .starts_with("delete "));

        invite(&mut b);
        let out = b.route_failed(0);
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
        assert!(b.tick(t0).is_empty());
        // The engine ends the call on its own (media timeout).
        b.media().live.borrow_mut().remove(&key);
        assert!(
            b.tick(t0 + Duration::from_secs(1)).is_empty(),
            "audited too often"
        );
        let out = b.tick(t0 + AUDIT_EVERY);
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
        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 486, ""));
        assert_eq!(request(&out[0]).method, Method::Ack);
        assert_eq!(status(&out[1]), 486);
        assert!(b.is_empty());
    }
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
        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 200, OFFER));
        let Message::Response(ok) = parsed(&out[1]).1 else {
            panic!()
        };
        let a_tag = ok.headers.to().unwrap().tag().map(text).unwrap();
        b.handle(
            now(),
            TRUNK,
            trunk_ip(),
            from_caller("INVITE", &a_tag, 2, OFFER),
        );
        assert_eq!(last_offer(&b), format!("offer {key} atag dtls"));
        // The callee re-offers towards the SDES caller: SDES.
        let mut b = b2bua_keyed("dtls");
        let (up, _) = established(&mut b);
        b.handle(now(), UP, target_ip(), from_target(&up, "INVITE", OFFER));
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
        let out = b.handle(now(), TRUNK, trunk_ip(), req("INVITE", "", DTLS_OFFER));
        let up = request(&out[1]);
        let key = text(up.headers.call_id().unwrap());
        // The caller's DTLS offer goes to the media plane as it is; leg B gets SDES.
        assert_eq!(last_offer(&b), format!("offer {key} atag"));
        let out = b.handle(now(), UP, target_ip(), answer_to(&up, 200, OFFER));
        let Message::Response(ok) = parsed(&out[1]).1 else {
            panic!()
        };
        let a_tag = ok.headers.to().unwrap().tag().map(text).unwrap();
        // The callee puts the call on hold: the caller (DTLS) is re-offered DTLS-SRTP.
        let out = b.handle(now(), UP, target_ip(), from_target(&up, "INVITE", OFFER));
        assert_eq!(last_offer(&b), format!("offer {key} btag dtls"));
        let re = request(&out[0]);
        let out = b.handle(now(), TRUNK, trunk_ip(), {
            let mut r = re.reply(200, None);
            r.headers.push("Content-Type", "application/sdp");
            r.body = DTLS_OFFER.as_bytes().to_vec();
            Message::Response(r)
        });
        assert_eq!(status(&out[0]), 200);
        // The caller re-offers with SDES: from then on it is offered SDES.
        let out = b.handle(
            now(),
            TRUNK,
            trunk_ip(),
            from_caller("INVITE", &a_tag, 2, OFFER),
        );
        let re = request(&out[0]);
        b.handle(now(), UP, target_ip(), answer_to(&re, 200, OFFER));
        b.handle(now(), UP, target_ip(), {
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
        let out = b.handle(
            now(),
            TRUNK,
            trunk_ip(),
            from_caller("INVITE", &a_tag, 2, OFFER),
        );
        assert_eq!(out.len(), 1);
        let re = request(&out[0]);
        let offers = b.media().log.borrow().len();
        // The callee's own re-INVITE crosses it: 491, nothing offered to the media plane.
        let out = b.handle(now(), UP, target_ip(), from_target(&up, "INVITE", OFFER));
        assert_eq!(out.len(), 1);
        assert_eq!(status(&out[0]), 491);
        assert_eq!(parsed(&out[0]).0, UP);
        // An UPDATE offer from the callee too; an UPDATE without SDP is relayed.
        let out = b.handle(now(), UP, target_ip(), from_target(&up, "UPDATE", OFFER));
        assert_eq!(status(&out[0]), 491);
        let out = b.handle(now(), UP, target_ip(), from_target(&up, "UPDATE", ""));
        assert_eq!(request(&out[0]).method, Method::Update);
        // The caller offers again before its first offer is answered: 500 with Retry-After 0-10.
        let out = b.handle(
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
        let out = b.handle(now(), UP, target_ip(), answer_to(&re, 200, OFFER));
        assert_eq!((status(&out[0]), parsed(&out[0]).0), (200, TRUNK));
        let out = b.handle(now(), UP, target_ip(), {
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
        let out = b.handle(
            now(),
            TRUNK,
            trunk_ip(),
            Message::Response(re.reply(491, None)),
        );
        assert_eq!((status(&out[0]), parsed(&out[0]).0), (491, UP));
        let out = b.handle(
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
        let out = b.handle(
            now(),
            TRUNK,
            trunk_ip(),
            from_caller("INVITE", &a_tag, 2, OFFER),
        );
        let re = request(&out[0]);
        let out = b.handle(now(), UP, target_ip(), answer_to(&re, 200, ""));
        assert_eq!((status(&out[0]), parsed(&out[0]).0), (488, TRUNK));
        assert_eq!(
            (request(&out[1]).method, parsed(&out[1]).0),
            (Method::Ack, UP)
        );
        // The exchange is over: the next offer goes through.
        let out = b.handle(
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
        let out = b.handle(
            now(),
            TRUNK,
            trunk_ip(),
            from_caller("INVITE", &a_tag, 2, ""),
        );
        let re = request(&out[0]);
        assert!(re.body.is_empty());
        let offers = b.media().log.borrow().len();
        // The callee's 2xx carries its offer: re-offered to the caller, no ACK upstream yet.
        let out = b.handle(now(), UP, target_ip(), answer_to(&re, 200, OFFER));
        assert_eq!(out.len(), 1, "{out:?}");
        let (p, m) = parsed(&out[0]);
        let Message::Response(ok) = m else { panic!() };
        assert_eq!((ok.status, p), (200, TRUNK));
        assert_eq!(ok.body, b"v=0 edge-offer\r\n");
        assert_eq!(b.media().log.borrow()[offers], format!("offer {key} btag"));
        // Another offer meanwhile meets glare handling.
        let out = b.handle(now(), UP, target_ip(), from_target(&up, "UPDATE", OFFER));
        assert_eq!(status(&out[0]), 491);
        // The caller's ACK brings the answer: rewritten into our ACK to the callee.
        let mut ack = from_caller("ACK", &a_tag, 2, OFFER);
        if let Message::Request(r) = &mut ack {
            r.headers.set("CSeq", "2 ACK");
        }
        let out = b.handle(now(), TRUNK, trunk_ip(), ack);
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
        let out = b.handle(
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
        let out = b.handle(
            now(),
            TRUNK,
            trunk_ip(),
            from_caller("INVITE", &a_tag, 2, ""),
        );
        let re = request(&out[0]);
        b.handle(now(), UP, target_ip(), answer_to(&re, 200, OFFER));
        let mut ack = from_caller("ACK", &a_tag, 2, "");
        if let Message::Request(r) = &mut ack {
            r.headers.set("CSeq", "2 ACK");
        }
        let out = b.handle(now(), TRUNK, trunk_ip(), ack);
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
        let out = b.handle(
            t0,
            TRUNK,
            trunk_ip(),
            from_caller("INVITE", &a_tag, 2, OFFER),
        );
        assert_eq!(request(&out[0]).method, Method::Invite);
        assert!(b.tick(t0 + Duration::from_secs(1)).is_empty());
        let out = b.tick(t0 + TIMER_B + Duration::from_secs(1));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((status(&out[0]), parsed(&out[0]).0), (408, TRUNK));
        assert_eq!(b.len(), 1);
        let out = b.handle(
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
}
