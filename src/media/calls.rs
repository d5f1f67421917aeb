//! Calls as the control planes see them: offer/answer orchestration over the media engine, shared
//! by the ng control server and the SIP B2BUA.
//!
//! A call has two sides. Side 0 is the party that sent the first offer (its tag is the ng
//! `from-tag`), side 1 the party that answered. Each side has its own leg: a port pair of ours
//! that faces that party, srtp-edge's own SDES key towards it, and the party's key. An offer from
//! either side (re-INVITEs flow both ways) goes through [`Calls::offer`], its answer through
//! [`Calls::answer`]; keys are generated fresh for every offer and never copied across legs.
//!
//! The first offer registers the call's sockets with its media worker at once (packets before the
//! answer are dropped and counted as `not_ready`); everything an offer/answer changes is applied
//! to the worker when the answer arrives, so a running call keeps its keys until the new ones are
//! agreed. The table here is only touched by signaling; the media workers never lock it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::dtls_leg::DtlsLeg;
use super::engine::Engine;
use super::ice::IceCredentials;
use super::latch::Latch;
use super::ports::PoolError;
use super::relay::Leg;
use super::worker::{CallCounters, Command, ForkTap, LegSetup, LegUpdate};
use crate::dtls::{
    setup as dtls_setup, DtlsConfig, DtlsIdentity, Endpoint, EndpointConfig, PeerFingerprints,
    Role, Setup as DtlsSetup, TlsId,
};
use crate::fork::{spawn_fork, Backend, CallInfo, ForkEvent, ForkMode, ForkStats, Track, G711};
use crate::redact::Redacted;
use crate::sdp::policy::{
    self, AnswerKeying, AnswerPlan, DtlsPlan, LocalMedia, OfferInfo, OfferKeying, OfferPlan,
    PolicyError, SdesKey,
};
use crate::sdp::{MediaSection, Sdp};
use crate::srtp::{ContextConfig, Profile, SrtpContext};

mod agent;
pub use agent::AgentEvent;

use crate::metrics::{
    CALLS_STARTED, CALLS_TOTAL, FORKS_STARTED, FORKS_STOPPED_CODEC, NEGOTIATIONS_REFUSED,
};

/// Why an offer, answer or delete failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The SDP was refused by policy (plain RTP, no common suite, malformed...).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No call with that Call-ID (or that tag).
    #[error("Unknown call-id")]
    UnknownCall,
    /// The media port range is exhausted or the address family is not configured.
    #[error("no media ports: {0}")]
    Ports(#[from] PoolError),
    /// An answer arrived without an offer pending.
    #[error("no offer pending for this answer")]
    NoPendingOffer,
    /// The media worker is gone (shutting down).
    #[error("media engine unavailable")]
    EngineGone,
    /// A fork named a backend that is not in `[[fork.backends]]`.
    #[error("unknown fork backend")]
    UnknownForkBackend,
    /// The call cannot be forked (its codec is not PCMU/PCMA, or the fork could not start).
    #[error("fork refused: {0}")]
    ForkRefused(String),
    /// `stop forwarding` on a call that has no fork.
    #[error("call is not forked")]
    NotForked,
}

impl CallError {
    /// The SIP status for a B2BUA to answer with.
    pub fn sip_status(&self) -> u16 {
        match self {
            CallError::Policy(p) => p.sip_status(),
            CallError::UnknownCall => 481,
            CallError::NoPendingOffer => 491,
            CallError::Ports(_) | CallError::EngineGone => 503,
            CallError::UnknownForkBackend | CallError::ForkRefused(_) | CallError::NotForked => 500,
        }
    }

    /// The ng `error-reason`.
    pub fn ng_reason(&self) -> String {
        match self {
            CallError::Policy(p) => p.ng_reason(),
            other => other.to_string(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            CallError::Policy(PolicyError::PlaintextMedia { .. }) => "plaintext",
            CallError::Policy(PolicyError::NoCommonSuite { .. }) => "no_common_suite",
            CallError::Policy(PolicyError::DtlsUnavailable { .. }) => "dtls_unavailable",
            CallError::Policy(_) => "sdp",
            CallError::UnknownCall => "unknown_call",
            CallError::Ports(_) => "ports",
            CallError::NoPendingOffer => "no_offer",
            CallError::EngineGone => "engine",
            CallError::UnknownForkBackend => "unknown_fork_backend",
            CallError::ForkRefused(_) => "fork_refused",
            CallError::NotForked => "not_forked",
        }
    }
}

/// An offer or answer, from either control plane.
#[derive(Debug, Clone)]
pub struct Negotiation<'a> {
    /// The Call-ID.
    pub call_id: &'a str,
    /// The tag of the party that sent the offer (ng `from-tag`).
    pub from_tag: &'a str,
    /// The tag of the answering party (ng `to-tag`; answers only).
    pub to_tag: Option<&'a str>,
    /// The SDP body.
    pub sdp: &'a [u8],
    /// SDES suites allowed for this negotiation, most preferred first (configuration narrowed by
    /// ng `SDES` flags or route policy).
    pub suites: &'a [Profile],
}

/// Options of an offer beyond its SDP, from the control plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OfferOptions {
    /// Offer DTLS-SRTP (with ICE-lite) to the other side instead of SDES (ng `DTLS=passive` or
    /// `active`, or `transport-protocol: UDP/TLS/RTP/SAVP(F)`).
    pub dtls: bool,
    /// Offer the other side the profile without RTCP feedback (`RTP/SAVP`, `UDP/TLS/RTP/SAVP`)
    /// and none of the offerer's `a=rtcp-fb` lines, even when the offerer used `RTP/SAVPF` or
    /// `UDP/TLS/RTP/SAVPF` (a WebRTC peer): SIP trunks and phones keyed with SDES expect
    /// `RTP/SAVP` and reject a feedback profile. The offerer's answer keeps its own profile.
    pub no_feedback: bool,
}

/// One side's leg as signaling knows it.
#[derive(Debug)]
struct LegSig {
    v6: bool,
    local: IpAddr,
    rtp_port: u16,
    /// The suite in use towards this party (after an answer).
    suite: Option<Profile>,
    /// The party's signalled RTP address.
    signalled: Option<SocketAddr>,
    rtcp_mux: bool,
    /// The DTLS association on this leg, if it is keyed with DTLS-SRTP.
    dtls: Option<LegDtls>,
    /// The SDES keys on this leg, if it is keyed with SDES.
    sdes: Option<LegSdes>,
}

/// A leg's SDES keys as signaling knows them. A re-offer or re-answer (hold, resume, session
/// refresh) gives this party the same key again, and the running SRTP contexts (with their
/// rollover counters) stay for every direction whose key did not change (RFC 4568 7.1.4: an
/// unchanged crypto attribute continues the context). User agents that do not take a changed
/// key from a re-INVITE (Debian's baresip 1.0) keep hearing the call, and a context is never
/// restarted under a key it already used (no keystream reuse after a rollover).
struct LegSdes {
    suite: Profile,
    /// srtp-edge's key towards this party (our outbound).
    ours: zeroize::Zeroizing<Vec<u8>>,
    /// This party's key (our inbound).
    theirs: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for LegSdes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegSdes")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl LegSdes {
    /// Our key for `suite` again, if this leg already has one in that suite.
    fn ours_for(&self, suite: Profile) -> Option<SdesKey> {
        (self.suite == suite).then(|| SdesKey {
            suite,
            key: crate::sdp::crypto::KeyMaterial::new(self.ours.clone()),
        })
    }

    fn same_ours(&self, suite: Profile, ours: &[u8]) -> bool {
        self.suite == suite && self.ours.as_slice() == ours
    }

    fn same_theirs(&self, suite: Profile, theirs: &[u8]) -> bool {
        self.suite == suite && self.theirs.as_slice() == theirs
    }
}

/// A leg's DTLS association as signaling knows it: a re-offer or re-answer with the same peer
/// fingerprints and tls-id keeps it (no new handshake, RFC 8842); anything else starts a new
/// one, which re-keys the leg when it completes.
#[derive(Debug)]
struct LegDtls {
    fingerprints: PeerFingerprints,
    tls_id: Option<String>,
    role: Role,
    ours_tls_id: String,
    ice: Option<IceCredentials>,
    /// Its handshake failed while the leg kept earlier keys: nothing is kept from it, the next
    /// offer or answer starts a new association (with a new tls-id of ours).
    failed: bool,
}

impl LegDtls {
    fn keeps(&self, fingerprints: &PeerFingerprints, tls_id: &Option<String>) -> bool {
        !self.failed && self.fingerprints.same_set(fingerprints) && &self.tls_id == tls_id
    }
}

/// What srtp-edge needs to terminate DTLS-SRTP: its certificate and the handshake settings.
struct DtlsContext {
    identity: Arc<DtlsIdentity>,
    cfg: DtlsConfig,
}

/// An offerer that keys its leg with DTLS-SRTP (srtp-edge answers it and runs the handshake).
struct DtlsOffer {
    fingerprints: PeerFingerprints,
    setup: DtlsSetup,
    /// The peer's `a=tls-id`.
    tls_id: Option<String>,
    /// The offerer does ICE (it sent ufrag and pwd): we answer as ICE-lite.
    ice: bool,
}

/// An offer waiting for its answer.
struct Pending {
    /// Side that offered.
    side: usize,
    /// Set when the offerer keys with DTLS-SRTP (then the SDES fields below are unused).
    offerer_dtls: Option<DtlsOffer>,
    /// Set when we offered DTLS-SRTP to the other side: our ICE-lite credentials and tls-id
    /// there (then `offered` is empty).
    other_dtls: Option<(IceCredentials, String)>,
    /// The offer as inspected (the answer back to it is built from this).
    offer: OfferInfo,
    /// The m-line relayed.
    index: usize,
    /// The offerer's chosen crypto: tag, suite, its key (our inbound on its leg).
    offerer_tag: u32,
    offerer_suite: Profile,
    offerer_key: zeroize::Zeroizing<Vec<u8>>,
    offerer_rtp: Option<SocketAddr>,
    offerer_rtcp: Option<SocketAddr>,
    offerer_mux: bool,
    /// Our keys offered to the other side, one per suite (tags 1..n), for the relayed m-line.
    offered: Vec<SdesKey>,
    /// Suites offered per m-line (empty for rejected ones), for `inspect_answer`.
    offered_suites: Vec<Vec<Profile>>,
}

struct Call {
    key: u64,
    tags: [Option<String>; 2],
    legs: [LegSig; 2],
    pending: Option<Pending>,
    created: SystemTime,
    last_signal: SystemTime,
    /// The codec of the last offer's relayed m-line (None: none of PCMU/PCMA offered).
    offered_g711: bool,
    /// The negotiated codec, once an answer was applied.
    codec: Option<Result<CallCodec, String>>,
    /// The fork asked for on this call, if any.
    fork: Option<CallFork>,
    /// Agent calls: the session id and version of the SDP srtp-edge answers with (the version
    /// goes up with every answer).
    origin: Option<(u64, u64)>,
}

/// A fork asked for on a call: started once the codec is known (at the answer).
#[derive(Debug, Clone)]
struct CallFork {
    backend: Arc<Backend>,
    mode: ForkMode,
    /// The worker has the handle (false: waiting for the answer).
    running: bool,
    /// What the backend's `start` says about the call.
    meta: ForkMeta,
    /// The call's codec as the running tap knows it (None: not started).
    codec: Option<CallCodec>,
    /// Agent call on hold: the backend's audio is not played.
    paused: bool,
}

/// Call metadata for a fork's `start` (Twilio `customParameters`, L16 preamble), from the
/// signaling that asked for the fork. Empty fields are left out or defaulted.
#[derive(Debug, Clone, Default)]
pub struct ForkMeta {
    /// Caller (number or URI user part; masked unless the backend has `send_numbers`).
    pub from: String,
    /// Called number (same rule).
    pub to: String,
    /// The route (or ng client) that asked for the fork; empty: `ng` or `agent` by mode.
    pub route: String,
}

/// The audio format a call negotiated, as far as a fork cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCodec {
    /// The G.711 law.
    pub g711: G711,
    /// Its RTP payload type.
    pub pt: u8,
    /// The telephone-event (RFC 4733) payload type at 8000 Hz, if negotiated.
    pub event_pt: Option<u8>,
}

fn static_name(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        8 => "PCMA",
        9 => "G722",
        13 => "CN",
        18 => "G729",
        _ => return None,
    })
}

/// The encoding name and clock rate of a payload type of an m-line, from `a=rtpmap` or the
/// static table (RFC 3551).
fn encoding(m: &MediaSection, pt: u8) -> (String, Option<u32>) {
    for v in m.attrs("rtpmap").flatten() {
        let Some((p, rest)) = v.trim().split_once(' ') else {
            continue;
        };
        if p.parse::<u8>().ok() != Some(pt) {
            continue;
        }
        let mut it = rest.trim().split('/');
        let name: String = it.next().unwrap_or("").chars().take(32).collect();
        let rate = it.next().and_then(|r| r.parse().ok());
        return (name, rate);
    }
    match static_name(pt) {
        Some(n) => (n.to_string(), Some(8000)),
        None => (format!("payload type {pt}"), None),
    }
}

/// The codec of an m-line as a fork sees it: the first audio format (telephone-event and comfort
/// noise skipped) must be PCMU or PCMA at 8000 Hz; otherwise the error names what was found.
pub fn call_codec(m: &MediaSection) -> Result<CallCodec, String> {
    let mut event_pt = None;
    let mut first: Option<(u8, String, Option<u32>)> = None;
    for f in &m.fmts {
        let Some(pt) = f.parse::<u8>().ok().filter(|p| *p < 128) else {
            continue;
        };
        let (name, rate) = encoding(m, pt);
        if name.eq_ignore_ascii_case("telephone-event") {
            if rate == Some(8000) && event_pt.is_none() {
                event_pt = Some(pt);
            }
            continue;
        }
        if name.eq_ignore_ascii_case("CN") {
            continue;
        }
        if first.is_none() {
            first = Some((pt, name, rate));
        }
    }
    let (pt, name, rate) = first.ok_or_else(|| "no audio codec".to_string())?;
    match G711::from_encoding_name(&name) {
        Some(g711) if rate.unwrap_or(8000) == 8000 => Ok(CallCodec { g711, pt, event_pt }),
        _ => Err(match rate {
            Some(r) if r != 8000 => format!("codec {name}/{r} is not PCMU or PCMA"),
            _ => format!("codec {name} is not PCMU or PCMA"),
        }),
    }
}

/// True if an m-line offers PCMU or PCMA at all.
fn offers_g711(m: &MediaSection) -> bool {
    m.fmts
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .any(|pt| {
            let (name, rate) = encoding(m, pt);
            G711::from_encoding_name(&name).is_some() && rate.unwrap_or(8000) == 8000
        })
}

/// What [`Calls::start_fork`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkStart {
    /// The fork is attached to the call's worker and connecting.
    Started,
    /// The call has no answer yet: the fork starts when the answer gives the codec.
    Pending,
}

/// The named fork backends and the runtime their connections run on.
#[derive(Clone)]
pub struct ForkBackends {
    backends: HashMap<String, Arc<Backend>>,
    rt: tokio::runtime::Handle,
}

impl ForkBackends {
    /// Backends built once at start ([`Backend::from_config`]); `rt` runs their connections.
    pub fn new(backends: Vec<Arc<Backend>>, rt: tokio::runtime::Handle) -> ForkBackends {
        ForkBackends {
            backends: backends
                .into_iter()
                .map(|b| (b.name().to_string(), b))
                .collect(),
            rt,
        }
    }

    /// The backend called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.get(name)
    }
}

impl std::fmt::Debug for ForkBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.backends.keys().collect();
        names.sort();
        f.debug_struct("ForkBackends")
            .field("backends", &names)
            .finish()
    }
}

/// The call table.
pub struct Calls {
    engine: Arc<Engine>,
    table: Mutex<HashMap<String, Call>>,
    by_key: Mutex<HashMap<u64, String>>,
    replay_window: usize,
    relatch: u32,
    started: Instant,
    stats: Mutex<EndStats>,
    forks: Option<ForkBackends>,
    hangups: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    agent_events: Mutex<Option<tokio::sync::mpsc::UnboundedSender<AgentEvent>>>,
    dtls: Option<DtlsContext>,
    /// The recorder, when recording is enabled (told of every applied answer).
    recorder: std::sync::OnceLock<Arc<crate::recording::Recorder>>,
}

/// How calls have ended since start (ng `statistics`).
#[derive(Debug, Default, Clone, Copy)]
pub struct EndStats {
    /// Calls ended by `delete` / BYE.
    pub deleted: u64,
    /// Calls ended by the media timeout.
    pub timed_out: u64,
    /// Offers and answers refused.
    pub refused: u64,
    /// Calls ended because a DTLS-SRTP handshake failed.
    pub dtls_failed: u64,
    /// Re-key handshakes that failed while the call went on with its previous keys.
    pub dtls_rekey_failed: u64,
}

/// What a call looked like when asked (`query`) or when it ended (`delete`).
#[derive(Debug, Clone)]
pub struct CallReport {
    /// Tags of side 0 and side 1.
    pub tags: [Option<String>; 2],
    /// Our local RTP port per side.
    pub ports: [u16; 2],
    /// Suite per side.
    pub suites: [Option<Profile>; 2],
    /// Signalled peer address per side.
    pub signalled: [Option<SocketAddr>; 2],
    /// Worker counters (None if the worker did not answer).
    pub counters: Option<CallCounters>,
    /// When the call was created.
    pub created: SystemTime,
    /// Last offer/answer.
    pub last_signal: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("calls", &lock(&self.table).len())
            .finish()
    }
}

impl Calls {
    /// A call table over a running engine, without fork backends.
    pub fn new(engine: Arc<Engine>) -> Arc<Calls> {
        Calls::build(engine, None, None)
    }

    /// A call table whose calls can be forked to the given backends.
    pub fn with_forks(engine: Arc<Engine>, forks: ForkBackends) -> Arc<Calls> {
        Calls::build(engine, Some(forks), None)
    }

    /// A call table that also terminates DTLS-SRTP with `identity` (its sha-256 fingerprint
    /// goes in our SDP), handshakes bounded by `handshake`.
    pub fn with_dtls(
        engine: Arc<Engine>,
        identity: Arc<DtlsIdentity>,
        handshake: &EndpointConfig,
    ) -> Result<Arc<Calls>, crate::dtls::FailReason> {
        let cfg = handshake.build()?;
        Ok(Self::build(
            engine,
            None,
            Some(DtlsContext { identity, cfg }),
        ))
    }

    /// The daemon's call table: fork backends and DTLS-SRTP both available.
    pub fn with_forks_and_dtls(
        engine: Arc<Engine>,
        forks: ForkBackends,
        identity: Arc<DtlsIdentity>,
        handshake: &EndpointConfig,
    ) -> Result<Arc<Calls>, crate::dtls::FailReason> {
        let cfg = handshake.build()?;
        Ok(Self::build(
            engine,
            Some(forks),
            Some(DtlsContext { identity, cfg }),
        ))
    }

    fn build(
        engine: Arc<Engine>,
        forks: Option<ForkBackends>,
        dtls: Option<DtlsContext>,
    ) -> Arc<Calls> {
        let replay_window = engine.cfg.replay_window;
        let relatch = engine.cfg.relatch_packets;
        Arc::new(Calls {
            engine,
            table: Mutex::new(HashMap::new()),
            by_key: Mutex::new(HashMap::new()),
            replay_window,
            relatch,
            started: Instant::now(),
            stats: Mutex::new(EndStats::default()),
            forks,
            hangups: Mutex::new(None),
            agent_events: Mutex::new(None),
            dtls,
            recorder: std::sync::OnceLock::new(),
        })
    }

    /// The configured fork backend called `name` (None: unknown, an error for the caller).
    pub fn fork_backend(&self, name: &str) -> Option<&Arc<Backend>> {
        self.forks.as_ref()?.get(name)
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Seconds since the table was created.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// How calls have ended so far.
    pub fn end_stats(&self) -> EndStats {
        *lock(&self.stats)
    }

    /// Call-IDs of the calls in the table (at most `limit`).
    pub fn list(&self, limit: usize) -> Vec<String> {
        lock(&self.table).keys().take(limit).cloned().collect()
    }

    /// Legs currently keyed, or keying, with DTLS-SRTP (ng `statistics`).
    pub fn dtls_legs(&self) -> usize {
        lock(&self.table)
            .values()
            .flat_map(|c| c.legs.iter())
            .filter(|l| l.dtls.is_some())
            .count()
    }

    /// Number of calls in the table.
    pub fn len(&self) -> usize {
        lock(&self.table).len()
    }

    /// True when no call is anchored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ctx(&self, suite: Profile, key: &[u8]) -> Result<SrtpContext, CallError> {
        SrtpContext::from_key_salt(
            suite,
            key,
            ContextConfig {
                replay_window: self.replay_window,
            },
        )
        .map_err(|_| CallError::Policy(PolicyError::InvalidPlan("key length for suite")))
    }

    fn refused(&self, e: CallError) -> CallError {
        metrics::counter!(NEGOTIATIONS_REFUSED, "reason" => e.label()).increment(1);
        lock(&self.stats).refused += 1;
        e
    }

    /// Handles an offer: checks it against the policy, anchors the call (new or known), and
    /// returns the SDP to send to the other party.
    pub fn offer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.offer_with(n, &OfferOptions::default())
    }

    /// [`offer`](Self::offer) with options from the control plane (ng `DTLS`,
    /// `transport-protocol`).
    pub fn offer_with(
        &self,
        n: &Negotiation<'_>,
        opts: &OfferOptions,
    ) -> Result<String, CallError> {
        self.offer_inner(n, opts).map_err(|e| self.refused(e))
    }

    fn offer_inner(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError> {
        let sdp = Sdp::parse_bytes(n.sdp).map_err(PolicyError::from)?;
        let info = policy::inspect_offer(&sdp)?;
        // srtp-edge relays the first accepted audio stream; further ones are rejected (port 0).
        let index = info
            .media
            .iter()
            .position(|m| m.accepted)
            .ok_or(PolicyError::NoAudio)?;
        let m = &info.media[index];
        let offered_g711 = sdp.media.get(index).is_some_and(offers_g711);
        let offerer_dtls = self.dtls_offer(m)?;
        let (offerer_tag, offerer_suite, offerer_key) = if offerer_dtls.is_some() {
            // Placeholders: a DTLS leg's keys come from its handshake.
            (
                0,
                Profile::AesCm128HmacSha1_80,
                zeroize::Zeroizing::new(Vec::new()),
            )
        } else {
            let chosen = policy::choose_crypto(m, n.suites)?;
            let offerer_key = zeroize::Zeroizing::new(chosen.key.as_bytes().to_vec());
            // The suite was checked usable, so its key length is right; check anyway before
            // anchoring anything.
            self.ctx(chosen.suite, &offerer_key)?;
            (chosen.tag, chosen.suite, offerer_key)
        };
        let (offerer_rtp, offerer_rtcp, offerer_mux) = (m.rtp, m.rtcp, m.rtcp_mux);
        let peer_v6 = offerer_rtp.is_some_and(|a| a.is_ipv6());

        let mut table = lock(&self.table);
        let (side, new_call) = match table.get(n.call_id) {
            None => (0, true),
            Some(c) if c.tags[0].as_deref() == Some(n.from_tag) => (0, false),
            Some(c) if c.tags[1].as_deref() == Some(n.from_tag) => (1, false),
            // A forked or replaced offer with a new tag: treat as side 0 again.
            Some(_) => (0, false),
        };
        let other = 1 - side;
        if new_call {
            let call = self.anchor(n, peer_v6)?;
            let key = call.key;
            table.insert(n.call_id.to_string(), call);
            lock(&self.by_key).insert(key, n.call_id.to_string());
        }
        let call = table.get_mut(n.call_id).ok_or(CallError::UnknownCall)?;
        call.last_signal = SystemTime::now();
        call.offered_g711 = offered_g711;

        let mut offered = SdesKey::generate_all(n.suites)?;
        // A leg already keyed with SDES is offered its running key again in that suite.
        if let Some(prev) = call.legs[other].sdes.as_ref() {
            for k in offered.iter_mut() {
                if let Some(same) = prev.ours_for(k.suite) {
                    *k = same;
                }
            }
        }
        let offered_suites: Vec<Vec<Profile>> = info
            .media
            .iter()
            .map(|mi| {
                if mi.index == index {
                    n.suites.to_vec()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let leg = &call.legs[other];
        let local = LocalMedia {
            addr: self.advertised(leg),
            rtp_port: leg.rtp_port,
            rtcp_port: Some(leg.rtp_port + 1),
            rtcp_mux: true,
        };
        let (out, offered, other_dtls) = if opts.dtls {
            // DTLS-SRTP towards the other side: our fingerprint, actpass, ICE-lite.
            let ctx = self
                .dtls
                .as_ref()
                .ok_or(PolicyError::DtlsUnavailable { index })?;
            // A running association keeps our tls-id and ICE credentials (RFC 8842).
            let (ice, tls_id) = match &leg.dtls {
                Some(LegDtls {
                    ice: Some(ice),
                    ours_tls_id,
                    failed: false,
                    ..
                }) => (ice.clone(), ours_tls_id.clone()),
                // After a failed handshake: same ICE agent, new association.
                Some(LegDtls {
                    ice: Some(ice),
                    failed: true,
                    ..
                }) => (ice.clone(), new_tls_id()?),
                _ => (
                    IceCredentials::generate().map_err(|_| PolicyError::KeyGen)?,
                    new_tls_id()?,
                ),
            };
            let plan = DtlsPlan {
                local: LocalMedia {
                    rtcp_port: None,
                    ..local
                },
                fingerprint: ctx.identity.sdp_fingerprint(),
                setup: dtls_setup::offer_setup().as_str(),
                tls_id: tls_id.clone(),
                ice: Some((ice.ufrag.clone(), ice.pwd.clone())),
            };
            let mut plans: Vec<Option<OfferKeying<'_>>> =
                (0..info.media.len()).map(|_| None).collect();
            plans[index] = Some(OfferKeying::Dtls(&plan));
            let out = policy::rewrite_offer_keyed(&sdp, &plans)?;
            (out, Vec::new(), Some((ice, tls_id)))
        } else {
            // rewrite_offer consumes plans by reference; keys are moved back out afterwards.
            let mut plans: Vec<Option<OfferPlan>> = (0..info.media.len()).map(|_| None).collect();
            plans[index] = Some(OfferPlan {
                local,
                keys: offered,
            });
            let out = policy::rewrite_offer(&sdp, &plans)?;
            let offered = plans.swap_remove(index).map(|p| p.keys).unwrap_or_default();
            (out, offered, None)
        };

        let mut out = out;
        if opts.no_feedback {
            policy::drop_feedback(&mut out, index);
        }

        if new_call {
            // The offerer's leg can decrypt at once (SDES); nothing can be sent until the answer.
            let inbound = if offerer_dtls.is_some() {
                None
            } else {
                Some(self.ctx(offerer_suite, &offerer_key)?)
            };
            self.engine
                .worker(call.key)
                .send(Command::Update {
                    key: call.key,
                    leg: side,
                    update: Box::new(LegUpdate {
                        inbound,
                        outbound: None,
                        signalled: Some((
                            offerer_rtp,
                            if offerer_mux { None } else { offerer_rtcp },
                        )),
                        rtcp_mux: Some(offerer_mux),
                        relatch: false,
                        dtls: None,
                        clear_dtls: false,
                    }),
                })
                .map_err(|_| CallError::EngineGone)?;
        }
        call.tags[side].get_or_insert_with(|| n.from_tag.to_string());
        call.pending = Some(Pending {
            side,
            offerer_dtls,
            other_dtls,
            offer: info,
            index,
            offerer_tag,
            offerer_suite,
            offerer_key,
            offerer_rtp,
            offerer_rtcp,
            offerer_mux,
            offered,
            offered_suites,
        });
        tracing::debug!(call = %Redacted(n.call_id), side, suite = %offerer_suite, "offer anchored");
        Ok(out.write())
    }

    /// Allocates both legs' ports and registers the call with its worker.
    fn anchor(&self, n: &Negotiation<'_>, peer_v6: bool) -> Result<Call, CallError> {
        self.anchor_legs(n, peer_v6, true)
    }

    /// [`anchor`](Self::anchor); with `second_leg` false (agent calls: the backend is the
    /// other party) the second leg is parked ([`PortPair::parked`]) and holds no media port.
    fn anchor_legs(
        &self,
        n: &Negotiation<'_>,
        peer_v6: bool,
        second_leg: bool,
    ) -> Result<Call, CallError> {
        let fam = |want_v6: bool| {
            if self.engine.advertised(want_v6).is_some() {
                want_v6
            } else {
                !want_v6
            }
        };
        let (v6a, v6b) = (fam(peer_v6), fam(false));
        let a = self.engine.allocate(v6a)?;
        let b = if second_leg {
            self.engine.allocate(v6b)
        } else {
            super::ports::PortPair::parked().map_err(|_| PoolError::Exhausted)
        };
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                let port = a.rtp_port;
                drop(a);
                self.engine.release(v6a, port);
                return Err(e.into());
            }
        };
        let key = self.engine.new_key();
        let sig = |v6: bool, port: u16| LegSig {
            v6,
            local: self
                .engine
                .advertised(v6)
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            rtp_port: port,
            suite: None,
            signalled: None,
            rtcp_mux: false,
            dtls: None,
            sdes: None,
        };
        let legs = [sig(v6a, a.rtp_port), sig(v6b, b.rtp_port)];
        let setup = |p: super::ports::PortPair| LegSetup {
            rtp: p.rtp,
            rtcp: p.rtcp,
            leg: Leg {
                inbound: None,
                outbound: None,
                rtp_latch: Latch::new(None, self.relatch),
                rtcp_latch: Latch::new(None, self.relatch),
                rtcp_mux: false,
            },
            dtls: None,
        };
        let (pa, pb) = (a.rtp_port, b.rtp_port);
        if self
            .engine
            .worker(key)
            .send(Command::Add {
                key,
                legs: Box::new([setup(a), setup(b)]),
            })
            .is_err()
        {
            self.engine.release(v6a, pa);
            if pb != 0 {
                self.engine.release(v6b, pb);
            }
            return Err(CallError::EngineGone);
        }
        metrics::counter!(CALLS_STARTED).increment(1);
        tracing::info!(call = %Redacted(n.call_id), ports = ?[pa, pb], "call anchored");
        let now = SystemTime::now();
        Ok(Call {
            key,
            tags: [None, None],
            legs,
            pending: None,
            created: now,
            last_signal: now,
            offered_g711: false,
            codec: None,
            fork: None,
            origin: None,
        })
    }

    fn advertised(&self, leg: &LegSig) -> IpAddr {
        self.engine.advertised(leg.v6).unwrap_or(leg.local)
    }

    /// Handles the answer to the pending offer: keys both legs, applies them to the worker, and
    /// returns the SDP for the offerer.
    pub fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.answer_inner(n).map_err(|e| self.refused(e))
    }

    fn answer_inner(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        let sdp = Sdp::parse_bytes(n.sdp).map_err(PolicyError::from)?;
        let mut table = lock(&self.table);
        let call = table.get_mut(n.call_id).ok_or(CallError::UnknownCall)?;
        let pending = call.pending.as_ref().ok_or(CallError::NoPendingOffer)?;
        let side = pending.side;
        let other = 1 - side;
        let pending_index = pending.index;
        let mut new_other_state: Option<LegDtls> = None;
        let mut new_offerer_state: Option<LegDtls> = None;
        let mut new_other_sdes: Option<LegSdes> = None;
        let (other_in, other_out, other_suite, mut other_dtls, other_rtp, other_rtcp, other_mux) =
            match &pending.other_dtls {
                None => {
                    let ans = policy::inspect_answer(&sdp, &pending.offered_suites)?;
                    let chosen =
                        ans.chosen(pending.index)
                            .ok_or(PolicyError::AnswerCryptoMismatch {
                                index: pending.index,
                            })?;
                    // Tags are 1..n in offer order.
                    // (inspect_answer already refused tag 0; checked again, never underflow.)
                    let ours_to_other = (chosen.tag as usize)
                        .checked_sub(1)
                        .and_then(|i| pending.offered.get(i))
                        .ok_or(PolicyError::AnswerCryptoMismatch {
                            index: pending.index,
                        })?;
                    // A direction whose key did not change keeps its running context.
                    let prev = call.legs[other].sdes.as_ref();
                    let other_in = if prev
                        .is_some_and(|p| p.same_theirs(chosen.suite, chosen.key.as_bytes()))
                    {
                        None
                    } else {
                        Some(self.ctx(chosen.suite, chosen.key.as_bytes())?)
                    };
                    let other_out = if prev
                        .is_some_and(|p| p.same_ours(chosen.suite, ours_to_other.key.as_bytes()))
                    {
                        None
                    } else {
                        Some(self.ctx(chosen.suite, ours_to_other.key.as_bytes())?)
                    };
                    new_other_sdes = Some(LegSdes {
                        suite: chosen.suite,
                        ours: zeroize::Zeroizing::new(ours_to_other.key.as_bytes().to_vec()),
                        theirs: zeroize::Zeroizing::new(chosen.key.as_bytes().to_vec()),
                    });
                    let am = &ans.media[pending.index];
                    (
                        other_in,
                        other_out,
                        Some(chosen.suite),
                        None,
                        am.rtp,
                        am.rtcp,
                        am.rtcp_mux,
                    )
                }
                Some((our_ice, ours_tls_id)) => {
                    // We offered DTLS-SRTP to this side: its answer says our role and its
                    // certificate's fingerprint.
                    let am = policy::inspect_answer_dtls(
                        &sdp,
                        pending.offer.media.len(),
                        pending.index,
                    )?;
                    let dtls = self.dtls_offer(&am)?.ok_or(PolicyError::DtlsUnavailable {
                        index: pending.index,
                    })?;
                    let role = dtls_setup::role_from_answer(dtls_setup::offer_setup(), dtls.setup)
                        .map_err(|_| PolicyError::Sdp(crate::sdp::SdpError::BadField("a=setup")))?;
                    let ctx = self.dtls.as_ref().ok_or(PolicyError::DtlsUnavailable {
                        index: pending.index,
                    })?;
                    let ice = if dtls.ice {
                        Some(our_ice.clone())
                    } else {
                        None
                    };
                    let kept = call.legs[other].dtls.as_ref().is_some_and(|k| {
                        k.keeps(&dtls.fingerprints, &dtls.tls_id) && k.role == role
                    });
                    let leg = if kept {
                        None
                    } else {
                        let endpoint = Endpoint::new(
                            &ctx.identity,
                            role,
                            dtls.fingerprints.clone(),
                            &ctx.cfg,
                            Instant::now(),
                        );
                        new_other_state = Some(LegDtls {
                            fingerprints: dtls.fingerprints,
                            tls_id: dtls.tls_id,
                            role,
                            ours_tls_id: ours_tls_id.clone(),
                            ice: Some(our_ice.clone()),
                            failed: false,
                        });
                        Some(Box::new(DtlsLeg::new(
                            endpoint,
                            ice,
                            am.rtp,
                            self.replay_window,
                        )))
                    };
                    (None, None, None, leg, am.rtp, None, true)
                }
            };

        let offerer_mux = pending.offerer_mux || pending.offerer_dtls.is_some();
        let leg = &call.legs[side];
        let local = LocalMedia {
            addr: self.advertised(leg),
            rtp_port: leg.rtp_port,
            rtcp_port: Some(leg.rtp_port + 1),
            rtcp_mux: true,
        };
        // The offerer's leg: our SDES key towards it in the suite we chose from its offer, or a
        // DTLS-SRTP handshake whose keys replace the contexts when it completes.
        let mut new_offerer_sdes: Option<LegSdes> = None;
        let (offerer_in, offerer_out, offerer_dtls, out) = match &pending.offerer_dtls {
            None => {
                let k = self.key_sdes_offerer(
                    call.legs[side].sdes.as_ref(),
                    pending.offerer_suite,
                    pending.offerer_tag,
                    &pending.offerer_key,
                    local,
                )?;
                let mut plans: Vec<Option<AnswerKeying<'_>>> =
                    (0..pending.offer.media.len()).map(|_| None).collect();
                plans[pending.index] = Some(AnswerKeying::Sdes(&k.plan));
                let out = policy::rewrite_answer_keyed(&sdp, &pending.offer, &plans)?;
                new_offerer_sdes = Some(k.state);
                (k.inbound, k.outbound, None, out)
            }
            Some(d) => {
                let k = self.key_dtls_offerer(
                    d,
                    call.legs[side].dtls.as_ref(),
                    local,
                    pending.index,
                    pending.offerer_rtp,
                )?;
                let mut plans: Vec<Option<AnswerKeying<'_>>> =
                    (0..pending.offer.media.len()).map(|_| None).collect();
                plans[pending.index] = Some(AnswerKeying::Dtls(&k.plan));
                let out = policy::rewrite_answer_keyed(&sdp, &pending.offer, &plans)?;
                match k.handshake {
                    // Same peer certificate and tls-id: the running association and its keys
                    // stay (a re-INVITE that changes nothing must not re-handshake).
                    None => (None, None, None, out),
                    Some((leg, st)) => {
                        new_offerer_state = Some(st);
                        (None, None, Some(leg), out)
                    }
                }
            }
        };
        let mut offerer_dtls = offerer_dtls;

        let worker = self.engine.worker(call.key);
        let (offerer_rtp, offerer_rtcp) = (pending.offerer_rtp, pending.offerer_rtcp);
        for (leg_i, inbound, outbound, rtp, rtcp, mux) in [
            (
                side,
                offerer_in,
                offerer_out,
                offerer_rtp,
                offerer_rtcp,
                offerer_mux,
            ),
            (other, other_in, other_out, other_rtp, other_rtcp, other_mux),
        ] {
            worker
                .send(Command::Update {
                    key: call.key,
                    leg: leg_i,
                    update: Box::new(LegUpdate {
                        inbound,
                        outbound,
                        signalled: Some((rtp, if mux { None } else { rtcp })),
                        rtcp_mux: Some(mux),
                        relatch: false,
                        dtls: if leg_i == side {
                            offerer_dtls.take()
                        } else {
                            other_dtls.take()
                        },
                        // An SDES leg that was DTLS: its association goes.
                        clear_dtls: if leg_i == side {
                            pending.offerer_dtls.is_none()
                        } else {
                            pending.other_dtls.is_none()
                        },
                    }),
                })
                .map_err(|_| CallError::EngineGone)?;
            let l = &mut call.legs[leg_i];
            l.signalled = rtp;
            l.rtcp_mux = mux;
        }
        call.legs[side].suite = if pending.offerer_dtls.is_some() {
            None
        } else {
            Some(pending.offerer_suite)
        };
        call.legs[other].suite = other_suite;
        if let Some(t) = n.to_tag {
            call.tags[other].get_or_insert_with(|| t.to_string());
        }
        call.legs[side].sdes = new_offerer_sdes;
        call.legs[other].sdes = new_other_sdes;
        if let Some(st) = new_offerer_state {
            call.legs[side].dtls = Some(st);
        }
        if let Some(st) = new_other_state {
            call.legs[other].dtls = Some(st);
        }
        // A leg now keyed with SDES forgets its DTLS association (DTLS→SDES re-offer): a later
        // switch back to DTLS starts a new one.
        if pending.offerer_dtls.is_none() {
            call.legs[side].dtls = None;
        }
        if pending.other_dtls.is_none() {
            call.legs[other].dtls = None;
        }
        call.pending = None;
        call.last_signal = SystemTime::now();
        // The answerer's m-line lists what both sides will send (its first codec first).
        call.codec = sdp.media.get(pending_index).map(call_codec);
        let fork_now = call.fork.as_ref().is_some_and(|f| !f.running);
        // A running fork follows a codec change (or stops on a codec it cannot take).
        self.retune_fork(n.call_id, call);
        tracing::debug!(call = %Redacted(n.call_id), suites = ?[call.legs[0].suite, call.legs[1].suite], "answer applied");
        let key = call.key;
        let codec = call.codec.clone();
        if fork_now {
            // The fork asked for at the offer starts now that the codec is known; a refusal
            // (codec) is logged and the call itself goes on.
            if let Err(e) = self.attach_fork(n.call_id, call) {
                tracing::warn!(call = %Redacted(n.call_id), error = %e, "fork not started");
                call.fork = None;
            }
        }
        drop(table);
        if let Some(r) = self.recorder.get() {
            r.answered(n.call_id, key, codec.as_ref());
        }
        // A barrier: the worker handles commands in order, so once it answers this query the
        // new keys are in place, and the first packet a peer sends after our reply is relayed.
        let _ = self
            .engine
            .worker(key)
            .ask(|reply| Command::Query { key, reply });
        Ok(out.write())
    }

    /// Forks a call to a configured backend (ng `fork` key on offer/answer, ng `start
    /// forwarding`, and the SIP B2BUA for routes with a fork or a `wss://` target).
    ///
    /// `mode` [`ForkMode::Fork`]: both tracks (leg A's audio as `inbound`, leg B's as
    /// `outbound`) are copied to the backend; nothing is played back. [`ForkMode::Agent`]: leg
    /// A's audio goes to the backend as `inbound` and the backend's audio is played into leg A
    /// on the media worker's 20 ms clock; when the backend hangs up, the call-id is sent to the
    /// receiver from [`Calls::fork_hangups`] (the B2BUA then sends BYE and deletes the call).
    ///
    /// Before the answer the fork is recorded and starts when the answer gives the codec
    /// ([`ForkStart::Pending`]). Errors: unknown backend or call; [`CallError::ForkRefused`] when
    /// the call's codec is not PCMU/PCMA (logged). The same backend and mode again is a no-op;
    /// another one replaces the running fork.
    pub fn start_fork(
        &self,
        call_id: &str,
        backend: &str,
        mode: ForkMode,
    ) -> Result<ForkStart, CallError> {
        self.start_fork_with(call_id, backend, mode, ForkMeta::default())
    }

    /// [`start_fork`](Self::start_fork) with the call's metadata for the backend's `start`
    /// (the SIP B2BUA knows caller, callee and route).
    pub fn start_fork_with(
        &self,
        call_id: &str,
        backend: &str,
        mode: ForkMode,
        meta: ForkMeta,
    ) -> Result<ForkStart, CallError> {
        let backend = self
            .fork_backend(backend)
            .ok_or(CallError::UnknownForkBackend)?
            .clone();
        let mut table = lock(&self.table);
        let call = table.get_mut(call_id).ok_or(CallError::UnknownCall)?;
        if let Some(f) = &call.fork {
            // The same fork asked for again (ng flags repeated on offer and answer): keep it.
            if Arc::ptr_eq(&f.backend, &backend) && f.mode == mode {
                return Ok(if f.running {
                    ForkStart::Started
                } else {
                    ForkStart::Pending
                });
            }
        }
        if call.codec.is_none() && !call.offered_g711 {
            let e = CallError::ForkRefused("the offer has no PCMU or PCMA codec".into());
            tracing::warn!(call = %Redacted(call_id), backend = backend.name(), error = %e, "fork refused");
            return Err(e);
        }
        let previous = call.fork.replace(CallFork {
            backend,
            mode,
            running: false,
            meta,
            codec: None,
            paused: false,
        });
        if call.codec.is_none() {
            if previous.is_some_and(|p| p.running) {
                // Stop the old one now; the new one starts at the answer.
                let key = call.key;
                let _ = self.engine.worker(key).send(Command::Unfork {
                    key,
                    reply: std::sync::mpsc::channel().0,
                });
            }
            return Ok(ForkStart::Pending);
        }
        match self.attach_fork(call_id, call) {
            Ok(()) => Ok(ForkStart::Started),
            Err(e) => {
                tracing::warn!(call = %Redacted(call_id), error = %e, "fork refused");
                call.fork = None;
                Err(e)
            }
        }
    }

    /// Starts the fork recorded on `call` (its codec known) and hands it to the call's worker.
    fn attach_fork(&self, call_id: &str, call: &mut Call) -> Result<(), CallError> {
        let forks = self.forks.as_ref().ok_or(CallError::UnknownForkBackend)?;
        let f = call.fork.as_mut().ok_or(CallError::NotForked)?;
        let codec = match &call.codec {
            Some(Ok(c)) => *c,
            Some(Err(why)) => return Err(CallError::ForkRefused(why.clone())),
            None => return Err(CallError::ForkRefused("call not answered".into())),
        };
        let info = CallInfo {
            from: f.meta.from.clone(),
            to: f.meta.to.clone(),
            sip_call_id: call_id.to_string(),
            direction: "inbound".into(),
            route: match (f.meta.route.is_empty(), f.mode) {
                (false, _) => f.meta.route.clone(),
                (true, ForkMode::Fork) => "ng".into(),
                (true, ForkMode::Agent) => "agent".into(),
            },
            codec: codec.g711,
            mode: f.mode,
        };
        let handle = spawn_fork(&forks.rt, f.backend.clone(), info)
            .map_err(|e| CallError::ForkRefused(e.to_string()))?;
        let (tracks, playout_leg) = match f.mode {
            ForkMode::Fork => ([Some(Track::Inbound), Some(Track::Outbound)], None),
            ForkMode::Agent => ([Some(Track::Inbound), None], Some(0)),
        };
        let key = call.key;
        self.engine
            .worker(key)
            .send(Command::Fork {
                key,
                tap: Box::new(ForkTap {
                    handle,
                    audio_pt: codec.pt,
                    event_pt: codec.event_pt,
                    codec: codec.g711,
                    fork_codec: codec.g711,
                    paused: f.paused,
                    tracks,
                    playout_leg,
                }),
            })
            .map_err(|_| CallError::EngineGone)?;
        f.running = true;
        f.codec = Some(codec);
        metrics::counter!(FORKS_STARTED, "backend" => f.backend.name().to_string()).increment(1);
        tracing::info!(call = %Redacted(call_id), backend = f.backend.name(), mode = ?f.mode, codec = ?codec.g711, "fork started");
        Ok(())
    }

    /// After a re-negotiation of `call`: a running fork follows the call's codec (a switch
    /// between PCMU and PCMA is transcoded on the worker, so the backend keeps getting correct
    /// audio in the codec its stream started with) and an agent call's hold state; a codec other
    /// than PCMU/PCMA stops the fork with a clear log (never garbage to the backend).
    fn retune_fork(&self, call_id: &str, call: &mut Call) {
        let Some(f) = call.fork.as_mut().filter(|f| f.running) else {
            return;
        };
        let key = call.key;
        match &call.codec {
            Some(Ok(c)) => {
                let Some(was) = f.codec else {
                    return;
                };
                if was != *c {
                    tracing::info!(call = %Redacted(call_id), from = ?was.g711, to = ?c.g711, pt = c.pt, "call codec changed: the fork follows");
                }
                f.codec = Some(*c);
                let _ = self.engine.worker(key).send(Command::RetuneFork {
                    key,
                    audio_pt: c.pt,
                    event_pt: c.event_pt,
                    codec: c.g711,
                    paused: f.paused,
                });
            }
            Some(Err(why)) => {
                tracing::warn!(call = %Redacted(call_id), backend = f.backend.name(), reason = %why, "call codec changed to one the fork cannot take: fork stopped");
                metrics::counter!(FORKS_STOPPED_CODEC, "backend" => f.backend.name().to_string())
                    .increment(1);
                call.fork = None;
                let _ = self.engine.worker(key).send(Command::Unfork {
                    key,
                    reply: std::sync::mpsc::channel().0,
                });
            }
            None => {}
        }
    }

    /// Stops a call's fork (ng `stop forwarding`): the backend gets `stop` and a close 1000;
    /// the call goes on. Returns the fork's final counters (None if it had not started yet).
    pub fn stop_fork(&self, call_id: &str) -> Result<Option<ForkStats>, CallError> {
        let (key, running) = {
            let mut table = lock(&self.table);
            let call = table.get_mut(call_id).ok_or(CallError::UnknownCall)?;
            let f = call.fork.take().ok_or(CallError::NotForked)?;
            (call.key, f.running)
        };
        tracing::info!(call = %Redacted(call_id), "fork stopped");
        if !running {
            return Ok(None);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.engine
            .worker(key)
            .send(Command::Unfork { key, reply: tx })
            .map_err(|_| CallError::EngineGone)?;
        Ok(rx
            .recv_timeout(std::time::Duration::from_secs(2))
            .ok()
            .flatten())
    }

    /// The backend and mode of a call's fork, if it has one.
    pub fn fork_of(&self, call_id: &str) -> Option<(String, ForkMode)> {
        let table = lock(&self.table);
        let f = table.get(call_id)?.fork.as_ref()?;
        Some((f.backend.name().to_string(), f.mode))
    }

    /// Call-IDs of agent-mode calls whose backend hung up (disconnect, close, or lost
    /// connection). One receiver: a new call replaces the previous one. The B2BUA owns it and
    /// answers each with a BYE and [`Calls::delete`].
    pub fn fork_hangups(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&self.hangups) = Some(tx);
        rx
    }

    /// A worker reported a fork event (the daemon's event loop calls this).
    pub fn fork_event(&self, key: u64, event: ForkEvent) {
        let Some(call_id) = lock(&self.by_key).get(&key).cloned() else {
            return;
        };
        let call = Redacted(call_id.as_str());
        match event {
            ForkEvent::Connected => {
                tracing::debug!(%call, "fork connected");
                let agent = lock(&self.table)
                    .get(&call_id)
                    .and_then(|c| c.fork.as_ref())
                    .is_some_and(|f| f.mode == ForkMode::Agent);
                if agent {
                    self.agent_event(AgentEvent::Connected(call_id.clone()));
                }
            }
            ForkEvent::Reconnecting => tracing::info!(%call, "fork reconnecting"),
            ForkEvent::Hangup => {
                tracing::info!(%call, "agent backend hung up");
                let tx = lock(&self.hangups).clone();
                let sent = tx.is_some_and(|tx| tx.send(call_id.clone()).is_ok());
                let sent = self.agent_event(AgentEvent::Hangup(call_id.clone())) || sent;
                if !sent {
                    tracing::warn!(%call, "agent hangup with no signaling to end the call");
                }
            }
            ForkEvent::Ended => {
                // The backend ended the stream (close 1000): detach it; the call goes on.
                let mut table = lock(&self.table);
                if let Some(c) = table.get_mut(&call_id) {
                    c.fork = None;
                }
                drop(table);
                let _ = self.engine.worker(key).send(Command::Unfork {
                    key,
                    reply: std::sync::mpsc::channel().0,
                });
                tracing::info!(%call, "fork ended");
            }
        }
    }

    fn report(&self, call: &Call, counters: Option<CallCounters>) -> CallReport {
        CallReport {
            tags: call.tags.clone(),
            ports: [call.legs[0].rtp_port, call.legs[1].rtp_port],
            suites: [call.legs[0].suite, call.legs[1].suite],
            signalled: [call.legs[0].signalled, call.legs[1].signalled],
            counters,
            created: call.created,
            last_signal: call.last_signal,
        }
    }

    /// A call's state and counters (ng `query`).
    pub fn query(&self, call_id: &str) -> Result<CallReport, CallError> {
        let (key, mut report) = {
            let table = lock(&self.table);
            let call = table.get(call_id).ok_or(CallError::UnknownCall)?;
            (call.key, self.report(call, None))
        };
        report.counters = self
            .engine
            .worker(key)
            .ask(|reply| Command::Query { key, reply });
        Ok(report)
    }

    /// Ends a call: its sockets close, its ports return to the pool (ng `delete`, SIP BYE).
    pub fn delete(&self, call_id: &str) -> Result<CallReport, CallError> {
        let call = lock(&self.table)
            .remove(call_id)
            .ok_or(CallError::UnknownCall)?;
        lock(&self.by_key).remove(&call.key);
        let key = call.key;
        let counters = self
            .engine
            .worker(key)
            .ask(|reply| Command::Remove { key, reply });
        self.release(&call);
        lock(&self.stats).deleted += 1;
        metrics::counter!(CALLS_TOTAL, "end" => "deleted").increment(1);
        tracing::info!(call = %Redacted(call_id), "call deleted");
        Ok(self.report(&call, counters))
    }

    fn release(&self, call: &Call) {
        // Port 0: a parked leg (agent call) that holds no port of the range.
        for l in call.legs.iter().filter(|l| l.rtp_port != 0) {
            self.engine.release(l.v6, l.rtp_port);
        }
    }

    /// A worker ended a call for lack of media: forget it and free its ports.
    pub fn timed_out(&self, key: u64) {
        let Some(call_id) = lock(&self.by_key).remove(&key) else {
            return;
        };
        let Some(call) = lock(&self.table).remove(&call_id) else {
            return;
        };
        self.release(&call);
        lock(&self.stats).timed_out += 1;
        metrics::counter!(CALLS_TOTAL, "end" => "timeout").increment(1);
        tracing::info!(call = %Redacted(call_id.as_str()), "call ended: no media for the timeout");
    }

    /// A worker ended a call because a leg's DTLS-SRTP handshake failed (wrong fingerprint,
    /// timeout, alert): forget it and free its ports.
    pub fn dtls_failed(&self, key: u64, reason: &crate::dtls::FailReason) {
        let Some(call_id) = lock(&self.by_key).remove(&key) else {
            return;
        };
        let Some(call) = lock(&self.table).remove(&call_id) else {
            return;
        };
        self.release(&call);
        lock(&self.stats).dtls_failed += 1;
        metrics::counter!(CALLS_TOTAL, "end" => "failed").increment(1);
        tracing::info!(call = %Redacted(call_id.as_str()), %reason, "call ended: DTLS-SRTP handshake failed");
    }

    /// A worker reports that a leg's re-key handshake failed and the leg kept its previous
    /// keys: the call goes on, and signaling marks the failed association so that the next
    /// offer or answer on that leg, even with the same fingerprint, starts a new handshake.
    pub fn dtls_rekey_failed(&self, key: u64, leg: usize, reason: &crate::dtls::FailReason) {
        let Some(call_id) = lock(&self.by_key).get(&key).cloned() else {
            return;
        };
        if let Some(d) = lock(&self.table)
            .get_mut(&call_id)
            .and_then(|c| c.legs.get_mut(leg))
            .and_then(|l| l.dtls.as_mut())
        {
            d.failed = true;
        }
        lock(&self.stats).dtls_rekey_failed += 1;
        tracing::warn!(call = %Redacted(call_id.as_str()), leg, %reason, "DTLS-SRTP re-key failed: call goes on with its previous keys");
    }

    /// Reads the DTLS-SRTP keying of an offered m-line: `Some` when the offerer keys with DTLS
    /// (a `UDP/TLS/RTP/SAVP(F)` profile, or a fingerprint and no `a=crypto`), `None` for SDES.
    fn dtls_offer(&self, m: &policy::MediaInfo) -> Result<Option<DtlsOffer>, CallError> {
        let Some(d) = m.dtls.as_ref().filter(|_| keys_with_dtls(m)) else {
            return Ok(None);
        };
        if self.dtls.is_none() {
            return Err(PolicyError::DtlsUnavailable { index: m.index }.into());
        }
        let lines: Vec<String> = d
            .fingerprints
            .iter()
            .map(|f| format!("a=fingerprint:{f}"))
            .collect();
        let fingerprints = PeerFingerprints::from_sdp_lines(lines.iter().map(String::as_str))
            .map_err(|_| PolicyError::Sdp(crate::sdp::SdpError::BadField("a=fingerprint")))?;
        // RFC 4145: an absent a=setup means active.
        let setup = match d.setup {
            Some(s) => DtlsSetup::parse(s.as_str())
                .map_err(|_| PolicyError::Sdp(crate::sdp::SdpError::BadField("a=setup")))?,
            None => DtlsSetup::Active,
        };
        let ice = m
            .ice
            .as_ref()
            .is_some_and(|i| i.ufrag.is_some() && i.pwd.is_some());
        Ok(Some(DtlsOffer {
            fingerprints,
            setup,
            tls_id: d.tls_id.clone(),
            ice,
        }))
    }

    /// Hands the call table the recorder (once, at start): it is told of every applied answer.
    pub fn set_recorder(&self, r: Arc<crate::recording::Recorder>) {
        let _ = self.recorder.set(r);
    }

    /// The recorder, when recording is enabled.
    pub fn recorder(&self) -> Option<&Arc<crate::recording::Recorder>> {
        self.recorder.get()
    }

    /// What the recorder needs of a call: its worker key and its codec (None before the answer).
    pub fn recording_target(
        &self,
        call_id: &str,
    ) -> Result<(u64, Option<Result<CallCodec, String>>), CallError> {
        let table = lock(&self.table);
        let call = table.get(call_id).ok_or(CallError::UnknownCall)?;
        Ok((call.key, call.codec.clone()))
    }

    /// Ends every call (shutdown).
    pub fn clear(&self) {
        let ids: Vec<String> = lock(&self.table).keys().cloned().collect();
        for id in ids {
            let _ = self.delete(&id);
        }
    }
}

/// How srtp-edge keys an SDES offerer's leg when it answers (B2BUA/ng answer, agent calls).
struct SdesOffererKeys {
    plan: AnswerPlan,
    /// New contexts, None for a direction whose key did not change (its context runs on).
    inbound: Option<SrtpContext>,
    outbound: Option<SrtpContext>,
    state: LegSdes,
}

/// How srtp-edge keys a DTLS-SRTP offerer's leg when it answers.
struct DtlsOffererKeys {
    plan: DtlsPlan,
    /// A new handshake (and the association's state once applied); None: the running
    /// association is kept (same peer certificate and tls-id).
    handshake: Option<(Box<DtlsLeg>, LegDtls)>,
}

impl Calls {
    /// The answer keying of an SDES offerer's leg: its running key again in the same suite
    /// (RFC 4568 7.1.4: an unchanged direction keeps its context), else a fresh key of ours;
    /// the offerer's (possibly new) key is our inbound.
    fn key_sdes_offerer(
        &self,
        prev: Option<&LegSdes>,
        suite: Profile,
        tag: u32,
        theirs: &zeroize::Zeroizing<Vec<u8>>,
        local: LocalMedia,
    ) -> Result<SdesOffererKeys, CallError> {
        let ours = match prev.and_then(|p| p.ours_for(suite)) {
            Some(k) => k,
            None => SdesKey::generate(suite)?,
        };
        let inbound = if prev.is_some_and(|p| p.same_theirs(suite, theirs)) {
            None
        } else {
            Some(self.ctx(suite, theirs)?)
        };
        let outbound = if prev.is_some_and(|p| p.same_ours(suite, ours.key.as_bytes())) {
            None
        } else {
            Some(self.ctx(suite, ours.key.as_bytes())?)
        };
        let state = LegSdes {
            suite,
            ours: zeroize::Zeroizing::new(ours.key.as_bytes().to_vec()),
            theirs: theirs.clone(),
        };
        Ok(SdesOffererKeys {
            plan: AnswerPlan {
                local,
                tag,
                key: ours,
            },
            inbound,
            outbound,
            state,
        })
    }

    /// The answer keying of a DTLS-SRTP offerer's leg: our fingerprint, the setup role from
    /// its offer, ICE-lite when it does ICE, and a new handshake unless the running
    /// association (same fingerprints and tls-id, RFC 8842) is kept.
    fn key_dtls_offerer(
        &self,
        d: &DtlsOffer,
        prev: Option<&LegDtls>,
        local: LocalMedia,
        index: usize,
        rtp: Option<SocketAddr>,
    ) -> Result<DtlsOffererKeys, CallError> {
        let ctx = self
            .dtls
            .as_ref()
            .ok_or(PolicyError::DtlsUnavailable { index })?;
        let kept = prev.filter(|k| k.keeps(&d.fingerprints, &d.tls_id));
        let (our_setup, role) = dtls_setup::answer_setup(d.setup, kept.map(|k| k.role))
            .map_err(|_| PolicyError::Sdp(crate::sdp::SdpError::BadField("a=setup")))?;
        let kept = kept.filter(|k| k.role == role);
        let ice = match kept {
            Some(k) if d.ice => k.ice.clone(),
            _ if d.ice => Some(IceCredentials::generate().map_err(|_| PolicyError::KeyGen)?),
            _ => None,
        };
        let tls_id = match kept {
            Some(k) => k.ours_tls_id.clone(),
            None => new_tls_id()?,
        };
        let plan = DtlsPlan {
            local: LocalMedia {
                rtcp_port: None,
                ..local
            },
            fingerprint: ctx.identity.sdp_fingerprint(),
            setup: our_setup.as_str(),
            tls_id: tls_id.clone(),
            ice: ice.as_ref().map(|c| (c.ufrag.clone(), c.pwd.clone())),
        };
        if kept.is_some() {
            return Ok(DtlsOffererKeys {
                plan,
                handshake: None,
            });
        }
        let endpoint = Endpoint::new(
            &ctx.identity,
            role,
            d.fingerprints.clone(),
            &ctx.cfg,
            Instant::now(),
        );
        let state = LegDtls {
            fingerprints: d.fingerprints.clone(),
            tls_id: d.tls_id.clone(),
            role,
            ours_tls_id: tls_id,
            ice: ice.clone(),
            failed: false,
        };
        let leg = DtlsLeg::new(endpoint, ice, rtp, self.replay_window);
        Ok(DtlsOffererKeys {
            plan,
            handshake: Some((Box::new(leg), state)),
        })
    }
}

/// True when an offered m-line is keyed with DTLS-SRTP rather than SDES: it carries a
/// fingerprint and either a `UDP/TLS/RTP/SAVP(F)` profile or no `a=crypto` (the rule the call
/// table answers by).
fn keys_with_dtls(m: &policy::MediaInfo) -> bool {
    m.dtls.is_some() && (m.proto.is_dtls() || m.crypto.is_empty())
}

/// True when `sdp` is an offer whose relayed audio stream (the first accepted one) is keyed with
/// DTLS-SRTP. The SIP B2BUA uses it to offer that party DTLS-SRTP again when the other side
/// re-offers (hold, re-key). Unparsable SDP is `false`; the offer itself reports the error.
pub fn offer_keys_with_dtls(sdp: &[u8]) -> bool {
    let Ok(sdp) = Sdp::parse_bytes(sdp) else {
        return false;
    };
    policy::inspect_offer(&sdp)
        .ok()
        .and_then(|info| info.media.into_iter().find(|m| m.accepted))
        .is_some_and(|m| keys_with_dtls(&m))
}

/// A fresh `a=tls-id` for a new DTLS association (RFC 8842), as SDP text.
fn new_tls_id() -> Result<String, PolicyError> {
    Ok(TlsId::generate()
        .map_err(|_| PolicyError::KeyGen)?
        .as_str()
        .to_string())
}

/// Seconds since the Unix epoch, for ng replies.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(fmts: &str, attrs: &[&str]) -> MediaSection {
        let mut text = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/SAVP {fmts}\r\n"
        );
        for a in attrs {
            text.push_str(&format!("a={a}\r\n"));
        }
        Sdp::parse(&text).unwrap().media.remove(0)
    }

    #[test]
    fn codec_is_the_first_audio_format_with_telephone_event_found() {
        let c = call_codec(&m(
            "101 0 8",
            &["rtpmap:101 telephone-event/8000", "rtpmap:0 PCMU/8000"],
        ))
        .unwrap();
        assert_eq!(
            c,
            CallCodec {
                g711: G711::Pcmu,
                pt: 0,
                event_pt: Some(101)
            }
        );
        // Static types without rtpmap, comfort noise skipped, a dynamic PCMA.
        let c = call_codec(&m("13 8", &[])).unwrap();
        assert_eq!((c.g711, c.pt, c.event_pt), (G711::Pcma, 8, None));
        let c = call_codec(&m("96", &["rtpmap:96 pcma/8000"])).unwrap();
        assert_eq!((c.g711, c.pt), (G711::Pcma, 96));
        // Telephone-event at another rate is not the call's.
        let c = call_codec(&m("0 100", &["rtpmap:100 telephone-event/48000"])).unwrap();
        assert_eq!(c.event_pt, None);
    }

    #[test]
    fn other_codecs_are_named_in_the_refusal() {
        assert_eq!(
            call_codec(&m("9 0", &["rtpmap:9 G722/8000"])),
            Err("codec G722 is not PCMU or PCMA".into())
        );
        assert_eq!(
            call_codec(&m("111 0", &["rtpmap:111 opus/48000/2"])),
            Err("codec opus/48000 is not PCMU or PCMA".into())
        );
        assert_eq!(
            call_codec(&m("0", &["rtpmap:0 PCMU/16000"])),
            Err("codec PCMU/16000 is not PCMU or PCMA".into())
        );
        assert_eq!(
            call_codec(&m("101", &["rtpmap:101 telephone-event/8000"])),
            Err("no audio codec".into())
        );
        assert_eq!(
            call_codec(&m("77", &[])),
            Err("codec payload type 77 is not PCMU or PCMA".into())
        );
        assert!(!offers_g711(&m("9 101", &["rtpmap:9 G722/8000"])));
        assert!(offers_g711(&m("9 8", &[])));
    }
}
