//! The back-to-back user agent as a state machine: messages in, messages out, no sockets, no clock
//! reads and no OS randomness. It is driven like quinn-proto's `Connection` or str0m's `Rtc`:
//!
//! - input: [`B2bua::handle_message`] (a parsed SIP message from a peer),
//!   [`B2bua::handle_conn`] (connections identified, closed, route targets resolved or
//!   unreachable), [`B2bua::handle_media`] (agent backends connected or gone, calls the media
//!   plane ended), [`B2bua::handle_timeout`] (the clock reached [`B2bua::poll_timeout`]) and
//!   [`B2bua::shutdown`], each with the current time where time matters;
//! - output: [`B2bua::poll_transmit`] (bytes for a peer) and [`B2bua::poll_event`] (what the
//!   shell counts in metrics), drained until `None` after every input, and
//!   [`B2bua::poll_timeout`], the next deadline (Timer B, Timer F, unanswered re-offers, the
//!   media audit), until which the shell may sleep.
//!
//! Tags, branches, Call-IDs and `Retry-After` values are drawn from the injected
//! [`Random`](crate::rand::Random), so a whole call replays from a seed in simulated time.
//!
//! A call has leg A (the trunk that sent the INVITE, reached over the connection the INVITE came
//! on) and leg B (the route target, reached over srtp-edge's own connection to it), held as
//! `[DialogLeg; 2]` indexed by [`Side`](crate::side::Side). Leg B gets its own Call-ID, tags,
//! Via, Contact and CSeq space; only the From/To user parts and the SDP (rewritten by the media
//! plane, fresh keys per leg) cross. Media is anchored through [`MediaPlane`] with leg B's
//! Call-ID as the call key and leg A's From tag as the offerer's tag, and every way a call ends
//! goes through [`MediaPlane::delete`].
//!
//! Module map: [`media_plane`] (what the B2BUA needs of the media plane), `call` (a call and its
//! dialog legs), `transactions` (our client transactions, indexed per call), `timers` (every
//! deadline in one ordered set), `output` (the transmit and event queues), `request` (routing of
//! incoming requests), `setup` (a new call), `in_dialog` and `exchange` (requests and offer/answer
//! inside a dialog), `response` (responses from either leg), `expiry` (timers, audit, teardown),
//! `agent` (agent-mode calls and route forks).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{RouteConfig, TrunkConfig};
use crate::rand::Random;
use crate::srtp::Profile;

use super::message::Message;

mod agent;
mod call;
mod exchange;
mod expiry;
mod in_dialog;
pub mod media_plane;
mod output;
mod record;
mod request;
mod response;
mod setup;
mod timers;
mod transactions;
mod wire;

#[cfg(test)]
mod tests;

pub use media_plane::MediaPlane;
pub use output::{Event, Outcome, Stats, Transmit};

use call::Call;
use output::Output;
use timers::{Timer, Timers};
use transactions::Transactions;

/// Timer B over a reliable transport: 64 * T1 (RFC 3261 17.1.1.2). Timer F (non-INVITE client
/// transactions, 17.1.2.2) has the same value; both follow [`Settings::timer_b`].
pub const TIMER_B: Duration = Duration::from_secs(32);
/// Most calls held at once; more INVITEs get 503.
pub const MAX_CALLS: usize = 20_000;
/// How often established calls are checked against the media plane (media timeouts).
pub const AUDIT_EVERY: Duration = Duration::from_secs(5);
/// Methods answered in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";

/// Who a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// An accepted connection on the SIP listener.
    Conn(u64),
    /// srtp-edge's own connection to a route target (route index).
    Route(usize),
}

/// What the transport learnt about its connections: the input of [`B2bua::handle_conn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// Connection `conn` presented a client certificate valid for `trunk`: its requests come
    /// from that trunk, whatever their source address.
    Identified {
        /// The inbound connection.
        conn: u64,
        /// The trunk index its certificate proves.
        trunk: usize,
    },
    /// Connection `conn` is gone.
    Closed {
        /// The inbound connection.
        conn: u64,
    },
    /// Route `route`'s target resolved to `ips` (replacing what it held): in-dialog requests
    /// the target sends over a connection of its own are accepted from those addresses.
    RouteResolved {
        /// The route index.
        route: usize,
        /// The addresses its host name resolved to.
        ips: Vec<IpAddr>,
    },
    /// The route target could not be reached (connect, TLS or write failure): calls still
    /// waiting on it fail with 503.
    RouteFailed {
        /// The route index.
        route: usize,
    },
}

/// What the media plane tells the B2BUA: the input of [`B2bua::handle_media`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The backend of agent call `key` accepted the stream: the caller gets the 200.
    AgentConnected(String),
    /// The backend of agent call `key` is gone (unreachable, closed, asked to hang up).
    AgentHangup(String),
    /// The media plane ended call `key` on its own (media timeout): both legs are hung up
    /// now rather than at the next audit.
    Ended(String),
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
    /// How long an INVITE waits for a final response (Timer B), and any other request we
    /// relay (Timer F).
    pub timer_b: Duration,
}

/// The B2BUA; see the module docs for how it is driven.
pub struct B2bua<M: MediaPlane> {
    settings: Settings,
    media: M,
    rng: Box<dyn Random>,
    /// Relayed calls by key (leg B's Call-ID), and their keys by the caller's Call-ID.
    calls: HashMap<String, Call>,
    by_a: HashMap<Vec<u8>, String>,
    /// Our client transactions, by branch; each call lists its own.
    txs: Transactions,
    timers: Timers,
    /// The media audit's timer while one is armed.
    audit: Option<timers::TimerId>,
    out: Output,
    /// Connections whose client certificate proved a trunk (mutual TLS).
    conn_trunks: HashMap<u64, usize>,
    /// Agent-mode calls by key, and their keys by the caller's Call-ID.
    agents: HashMap<String, agent::AgentCall>,
    agent_by_a: HashMap<Vec<u8>, String>,
    /// Addresses a route target's DNS name last resolved to (for in-dialog requests it sends
    /// from a connection of its own).
    route_ips: HashMap<usize, Vec<IpAddr>>,
}

impl<M: MediaPlane> B2bua<M> {
    /// A B2BUA with no calls, drawing its identifiers from `rng` (the daemon hands it
    /// [`OsRandom`](crate::rand::OsRandom); simulations a seeded source).
    pub fn new(settings: Settings, media: M, rng: Box<dyn Random>) -> Self {
        B2bua {
            settings,
            media,
            rng,
            calls: HashMap::new(),
            by_a: HashMap::new(),
            txs: Transactions::default(),
            timers: Timers::default(),
            audit: None,
            out: Output::default(),
            conn_trunks: HashMap::new(),
            agents: HashMap::new(),
            agent_by_a: HashMap::new(),
            route_ips: HashMap::new(),
        }
    }

    /// Handles one message from `peer` (whose source address is `ip`) received at `now`.
    pub fn handle_message(&mut self, now: Instant, peer: Peer, ip: IpAddr, msg: Message) {
        match msg {
            Message::Request(r) => self.on_request(now, peer, ip, r),
            Message::Response(r) => self.on_response(now, r),
        }
    }

    /// Handles what the transport learnt about a connection or a route target.
    pub fn handle_conn(&mut self, _now: Instant, ev: ConnEvent) {
        match ev {
            ConnEvent::Identified { conn, trunk } => {
                self.conn_trunks.insert(conn, trunk);
            }
            ConnEvent::Closed { conn } => {
                self.conn_trunks.remove(&conn);
            }
            ConnEvent::RouteResolved { route, ips } => {
                self.route_ips.insert(route, ips);
            }
            ConnEvent::RouteFailed { route } => self.route_failed(route),
        }
    }

    /// Handles what the media plane reports about a call.
    pub fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::AgentConnected(key) => self.agent_connected(now, &key),
            MediaEvent::AgentHangup(key) => self.agent_hangup(&key),
            MediaEvent::Ended(key) => self.media_ended(&key),
        }
    }

    /// Runs every timer due at `now` (the shell calls it once [`B2bua::poll_timeout`] has
    /// passed; calling it early does nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            self.on_timer(now, t);
        }
    }

    /// The next deadline: the shell calls [`B2bua::handle_timeout`] once it has passed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next message to send, in the order the state machine produced them.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next event for the shell (metrics, logs of call outcomes).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// Counters since start (what the events added up to).
    pub fn stats(&self) -> Stats {
        self.out.stats
    }

    /// Calls in progress (any state), agent calls included.
    pub fn len(&self) -> usize {
        self.calls.len() + self.agents.len()
    }

    /// True when no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.agents.is_empty()
    }

    /// Agent calls in progress (any state).
    pub fn agent_calls(&self) -> usize {
        self.agents.len()
    }

    /// Client transactions in progress (for tests of teardown cost and leaks).
    pub fn transactions(&self) -> usize {
        self.txs.len()
    }

    /// The media plane (for the transport and tests).
    pub fn media(&self) -> &M {
        &self.media
    }

    /// The media plane, mutably (simulations drive it alongside).
    pub fn media_mut(&mut self) -> &mut M {
        &mut self.media
    }

    /// Arms a timer for `at`.
    fn arm(&mut self, at: Instant, t: Timer) -> timers::TimerId {
        self.timers.arm(at, t)
    }

    /// A fresh random identifier of `bytes` random bytes in hex.
    fn hex(&mut self, bytes: usize) -> String {
        self.rng.hex(bytes)
    }

    /// A fresh RFC 3261 branch (magic cookie + 80 random bits).
    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.rng.hex(10))
    }
}
