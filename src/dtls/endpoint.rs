//! One leg's DTLS-SRTP handshake as a sans-IO state machine: datagrams and the clock go in,
//! datagrams to send, a timer and (on success) SRTP keys come out. No sockets.
//!
//! The DTLS 1.2 engine is OpenSSL (the system libssl 3, as in rtpengine, baresip and
//! FreeSWITCH), driven through an in-memory datagram pipe: each `read` hands OpenSSL one
//! received datagram, each `write` from OpenSSL is one datagram to send. It was chosen over the
//! pure-Rust options because SIP peers sign DTLS with RSA certificates (baresip 1.0's
//! `tls_set_selfsigned_rsa`, FreeSWITCH's and Asterisk's defaults): `dimpl` refuses RSA peers
//! and lacks `SRTP_AES128_CM_SHA1_32`, and webrtc-rs' `dtls` is async, not sans-IO.
//!
//! This wrapper adds what srtp-edge needs around the engine: DTLS 1.2 only with ECDHE + AEAD
//! suites, the peer certificate must match a fingerprint from the peer's SDP before any key is
//! handed out (checked in the verification callback, so a stranger gets a `bad_certificate`
//! alert mid-handshake, and again after it), the handshake has a hard deadline, a failure is
//! final and observable (`State::Failed`), and hostile input is bounded before it reaches the
//! engine.
//!
//! Driving: like quinn-proto's `Connection`, the caller hands in datagrams
//! ([`Endpoint::handle_datagram`]) and expired timers ([`Endpoint::handle_timeout`]) with the
//! current `now`, then drains [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`] until
//! they are empty, and calls again at [`Endpoint::poll_timeout`].
//!
//! Time: everything follows the `now` the caller passes, never the wall clock: the handshake
//! deadline, and OpenSSL's own retransmission timer (RFC 6347 4.2.4.1: the configured initial
//! timeout, doubled per retransmission), which [`super::ffi`] moves onto the caller's clock. A
//! simulation can therefore run a lossy handshake with minutes of timeouts in milliseconds.
//! (Randomness is OpenSSL's: its handshake randoms, keys and our cookie come from its CSPRNG.)

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::Id;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::X509StoreContextRef;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::cert::DtlsIdentity;
use super::ffi::{self, Engine, MAX_RTO_US};
use super::fingerprint::{HashFunction, PeerFingerprints};
use super::keys::{SrtpKeys, EXPORTER_LABEL};
use super::pipe::MAX_QUEUED_TX;
use super::setup::Role;
use crate::srtp::Profile;

/// Largest datagram handed to the DTLS engine. DTLS-SRTP peers send flights fragmented to the
/// path MTU; 4 KiB leaves room for large-MTU paths while bounding what a peer can make us buffer.
pub const MAX_DATAGRAM: usize = 4096;

/// Records read per received datagram once connected (DTLS-SRTP carries no application data;
/// this only drains what a peer might send anyway).
const MAX_READS_PER_DATAGRAM: usize = 8;

/// Largest peer certificate chain OpenSSL accepts (its default is 100 KiB).
const MAX_CERT_LIST: usize = 32 * 1024;

/// Bytes of the per-endpoint HelloVerifyRequest cookie.
const COOKIE_LEN: usize = 16;

/// DTLS 1.2 cipher suites: ECDHE key exchange with AEAD only. Our own certificate is ECDSA, so
/// as a server only the ECDSA suites can be chosen; as a client the RSA ones let a peer with an
/// RSA certificate (baresip 1.0, FreeSWITCH, Asterisk) serve.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-RSA-CHACHA20-POLY1305";

/// Key exchange groups, preferred first.
const GROUPS: &str = "X25519:P-256:P-384";

/// `use_srtp` profiles (RFC 5764, RFC 7714), our preference first: as a server the first one the
/// client also offers is chosen.
const SRTP_PROFILES: &str =
    "SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80:SRTP_AES128_CM_SHA1_32";

/// OpenSSL security level 2: RSA and DH keys of at least 2048 bits, EC keys of at least 224
/// bits, no SHA-1 handshake signatures.
const SECURITY_LEVEL: u32 = 2;

/// OpenSSL's library code of libssl errors (`ERR_LIB_SSL`).
const ERR_LIB_SSL: libc::c_int = 20;
/// OpenSSL's reason code for a received alert is this offset plus the alert description.
const SSL_AD_REASON_OFFSET: libc::c_int = 1000;
/// OpenSSL's reason code after too many retransmissions (`SSL_R_READ_TIMEOUT_EXPIRED`).
const SSL_R_READ_TIMEOUT_EXPIRED: libc::c_int = 312;
/// OpenSSL's reason code for a client that sent no certificate
/// (`SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE`).
const SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: libc::c_int = 199;

/// Tunables of a handshake. The defaults follow RFC 6347 (1 s initial retransmission timer,
/// doubled per retransmission) and the 10 s handshake deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The handshake must complete within this time from the endpoint's creation.
    pub handshake_timeout: Duration,
    /// First retransmission timeout of a flight; doubled on each retransmission.
    pub initial_rto: Duration,
    /// Largest datagram we send (handshake flights are fragmented to it).
    pub mtu: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            handshake_timeout: Duration::from_secs(10),
            initial_rto: Duration::from_secs(1),
            mtu: 1150,
        }
    }
}

/// Per-`SSL` data slots, registered once per process.
struct Slots {
    /// This endpoint's HelloVerifyRequest cookie.
    cookie: Index<Ssl, [u8; COOKIE_LEN]>,
}

fn slots() -> Result<&'static Slots, FailReason> {
    static SLOTS: OnceLock<Result<Slots, String>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            Ok(Slots {
                cookie: Ssl::new_ex_index().map_err(|e| e.to_string())?,
            })
        })
        .as_ref()
        .map_err(|e| FailReason::Protocol(e.clone()))
}

impl EndpointConfig {
    /// Builds the engine configuration once, to share between the endpoints of many legs.
    pub fn build(&self) -> Result<DtlsConfig, FailReason> {
        let slots = slots()?;
        let err = |e: ErrorStack| FailReason::Protocol(e.to_string());
        let mut b = SslContextBuilder::new(SslMethod::dtls()).map_err(err)?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))
            .map_err(err)?;
        b.set_max_proto_version(Some(SslVersion::DTLS1_2))
            .map_err(err)?;
        b.set_security_level(SECURITY_LEVEL);
        b.set_cipher_list(CIPHERS).map_err(err)?;
        b.set_groups_list(GROUPS).map_err(err)?;
        b.set_tlsext_use_srtp(SRTP_PROFILES).map_err(err)?;
        b.set_options(
            // We set the MTU; a memory pipe has none to query.
            SslOptions::NO_QUERY_MTU
                // A server answers a ClientHello without our cookie with a small
                // HelloVerifyRequest, so a spoofed source gets no certificate flight.
                | SslOptions::COOKIE_EXCHANGE
                | SslOptions::NO_RENEGOTIATION
                | SslOptions::NO_TICKET
                | SslOptions::CIPHER_SERVER_PREFERENCE,
        );
        // Every handshake is a full one with a certificate to check against the SDP.
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        b.set_mode(SslMode::RELEASE_BUFFERS);
        ffi::set_max_cert_list(&mut b, MAX_CERT_LIST);
        let cookie = slots.cookie;
        b.set_cookie_generate_cb(move |ssl, buf| match ssl.ex_data(cookie) {
            Some(c) if buf.len() >= c.len() => {
                buf[..c.len()].copy_from_slice(c);
                Ok(c.len())
            }
            _ => Err(ErrorStack::get()),
        });
        b.set_cookie_verify_cb(move |ssl, got| {
            ssl.ex_data(cookie)
                .is_some_and(|c| bool::from(c[..].ct_eq(got)))
        });
        let rto_us = u32::try_from(self.initial_rto.as_micros())
            .unwrap_or(MAX_RTO_US)
            .clamp(1_000, MAX_RTO_US);
        Ok(DtlsConfig {
            ctx: b.build(),
            handshake_timeout: self.handshake_timeout,
            rto_us,
            mtu: self.mtu.clamp(256, MAX_DATAGRAM) as u32,
        })
    }
}

/// A validated, shareable handshake configuration (see [`EndpointConfig::build`]).
#[derive(Clone)]
pub struct DtlsConfig {
    ctx: SslContext,
    handshake_timeout: Duration,
    rto_us: u32,
    mtu: u32,
}

impl fmt::Debug for DtlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsConfig")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("initial_rto_us", &self.rto_us)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

/// Why a handshake failed. The leg ends; the reason is what gets counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The peer's certificate matches no fingerprint from its SDP (or it sent none).
    FingerprintMismatch,
    /// The handshake did not complete before the deadline (peer silent or flights lost).
    Timeout,
    /// The peer sent a fatal alert (the TLS alert description).
    PeerAlert(u8),
    /// The peer closed the association before it was established.
    PeerClosed,
    /// The handshake completed without a usable DTLS-SRTP profile and keys.
    NoSrtpProfile,
    /// Any other fatal DTLS error (the engine's description; never contains key material).
    Protocol(String),
}

impl FailReason {
    /// A short, fixed label for metrics (`srtp_edge_dtls_handshakes_total{result=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            FailReason::FingerprintMismatch => "fingerprint_mismatch",
            FailReason::Timeout => "timeout",
            FailReason::PeerAlert(_) => "peer_alert",
            FailReason::PeerClosed => "peer_closed",
            FailReason::NoSrtpProfile => "no_srtp_profile",
            FailReason::Protocol(_) => "protocol",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::FingerprintMismatch => {
                f.write_str("peer certificate matches no SDP fingerprint")
            }
            FailReason::Timeout => f.write_str("DTLS handshake timed out"),
            FailReason::PeerAlert(d) => write!(f, "peer sent fatal alert {d}"),
            FailReason::PeerClosed => f.write_str("peer closed before the handshake completed"),
            FailReason::NoSrtpProfile => f.write_str("no DTLS-SRTP profile negotiated"),
            FailReason::Protocol(e) => write!(f, "DTLS error: {e}"),
        }
    }
}

/// Where a leg's handshake is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Flights are being exchanged.
    Handshaking,
    /// Keys are available ([`Endpoint::srtp_keys`]).
    Connected,
    /// The peer sent `close_notify` after the handshake; the keys stay valid for the leg to
    /// decide what to do.
    Closed,
    /// The handshake failed for good; nothing more is sent.
    Failed(FailReason),
}

/// What the verification callback found about the peer's certificate.
const CERT_UNCHECKED: u8 = 0;
const CERT_MATCHED: u8 = 1;
const CERT_MISMATCH: u8 = 2;
const CERT_WEAK_KEY: u8 = 3;

/// The DTLS-SRTP state machine of one leg (client or server per `a=setup`).
pub struct Endpoint {
    /// The engine; dropped (and its memory freed) once the endpoint failed or was closed.
    tls: Option<Engine>,
    role: Role,
    peer: PeerFingerprints,
    verdict: Arc<AtomicU8>,
    state: State,
    deadline: Instant,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<EndpointEvent>,
    keys: Option<SrtpKeys>,
    cipher: Option<&'static str>,
    peer_key: Option<String>,
    /// The hash function of the peer fingerprint its certificate matched.
    peer_hash: Option<HashFunction>,
    stats: EndpointStats,
    follows_clock: bool,
}

/// A change the owner of an endpoint acts on, read with [`Endpoint::poll_event`]; each is
/// reported once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// The handshake completed with a matching certificate: keys are available
    /// ([`Endpoint::take_srtp_keys`]).
    Connected,
    /// The peer sent `close_notify` after the handshake.
    Closed,
    /// The handshake failed for good.
    Failed(FailReason),
}

/// Counters of one endpoint, for the IO shell to record (the core touches no metrics registry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams handed to the engine.
    pub datagrams_in: u64,
    /// Datagrams ignored before reaching the engine (empty, oversized, not DTLS).
    pub ignored: u64,
    /// Datagrams the engine produced for the peer.
    pub datagrams_out: u64,
    /// Flights retransmitted because their timer expired.
    pub retransmits: u64,
}

impl Endpoint {
    /// Starts a handshake at `now`. A client queues its ClientHello at once
    /// ([`poll_transmit`](Self::poll_transmit)); a server waits for one. The peer's certificate
    /// must match one of `peer` (an empty set fails every handshake).
    pub fn new(
        identity: &DtlsIdentity,
        role: Role,
        peer: PeerFingerprints,
        config: &DtlsConfig,
        now: Instant,
    ) -> Endpoint {
        let verdict = Arc::new(AtomicU8::new(CERT_UNCHECKED));
        let tls = engine(identity, role, &peer, &verdict, config, now);
        let mut ep = Endpoint {
            tls: None,
            role,
            peer,
            verdict,
            state: State::Handshaking,
            deadline: now + config.handshake_timeout,
            out: VecDeque::new(),
            events: VecDeque::new(),
            keys: None,
            cipher: None,
            peer_key: None,
            peer_hash: None,
            stats: EndpointStats::default(),
            follows_clock: false,
        };
        match tls {
            Ok(tls) => {
                ep.tls = Some(tls);
                ep.handshake(now);
            }
            Err(e) => ep.fail(FailReason::Protocol(e.to_string())),
        }
        ep
    }

    /// Feeds one received datagram (already demultiplexed as DTLS by the leg, RFC 7983). Empty,
    /// oversized or non-DTLS datagrams are ignored and counted; malformed or unauthentic records
    /// are dropped by the engine (RFC 6347 4.1.2.7); only a fatal protocol error fails the
    /// handshake.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) {
        if !self.is_live() {
            return;
        }
        let plausible =
            !data.is_empty() && data.len() <= MAX_DATAGRAM && (20..=63).contains(&data[0]);
        if !plausible {
            self.stats.ignored = self.stats.ignored.saturating_add(1);
            return;
        }
        if self.check_deadline(now) {
            return;
        }
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        self.stats.datagrams_in = self.stats.datagrams_in.saturating_add(1);
        tls.pipe().rx = Some(data.to_vec());
        match self.state {
            State::Handshaking => self.handshake(now),
            _ => self.read_connected(now),
        }
        if let Some(tls) = self.tls.as_mut() {
            // Whatever the engine did not read (it stopped on an error) is not kept.
            tls.pipe().rx = None;
        }
    }

    /// Advances timers: retransmits a lost flight, or fails the handshake past its deadline.
    /// Call at or after [`poll_timeout`](Self::poll_timeout); earlier calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Handshaking || self.check_deadline(now) {
            return;
        }
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let result = tls.handle_timeout(now);
        self.after_engine();
        match result {
            Ok(()) => self.collect_output(),
            Err(stack) => self.engine_failed(classify_stack(&stack)),
        }
    }

    /// The next datagram to send to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next change to act on (connected, closed, failed), if any.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` once nothing
    /// more will happen by itself (connected, closed or failed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshaking => Some(match self.tls.as_ref().and_then(Engine::timer_deadline) {
                Some(t) if t < self.deadline => t,
                _ => self.deadline,
            }),
            // A DTLS 1.2 association needs no timer once established: the server re-sends its
            // final flight only in answer to a retransmitted client flight.
            State::Connected | State::Closed | State::Failed(_) => None,
        }
    }

    /// Where the handshake is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Our DTLS role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The negotiated SRTP profile, once connected.
    pub fn profile(&self) -> Option<Profile> {
        self.keys.as_ref().map(SrtpKeys::profile)
    }

    /// The SRTP keys, once connected (the peer's certificate matched its fingerprint).
    pub fn srtp_keys(&self) -> Option<&SrtpKeys> {
        match self.state {
            State::Connected | State::Closed => self.keys.as_ref(),
            _ => None,
        }
    }

    /// Moves the SRTP keys out (to the SRTP contexts), leaving none here.
    pub fn take_srtp_keys(&mut self) -> Option<SrtpKeys> {
        match self.state {
            State::Connected | State::Closed => self.keys.take(),
            _ => None,
        }
    }

    /// The hash function of the SDP fingerprint the peer's certificate matched, once it did.
    pub fn peer_fingerprint_hash(&self) -> Option<HashFunction> {
        self.peer_hash
    }

    /// The negotiated DTLS cipher suite (OpenSSL's name), once connected.
    pub fn cipher(&self) -> Option<&'static str> {
        self.cipher
    }

    /// The peer certificate's key type and size (`RSA-2048`, `EC-256`), once connected.
    pub fn peer_key(&self) -> Option<&str> {
        self.peer_key.as_deref()
    }

    /// Datagrams ignored before reaching the engine (empty, oversized, not DTLS).
    pub fn ignored_datagrams(&self) -> u64 {
        self.stats.ignored
    }

    /// This endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// True once OpenSSL's retransmission timer has been seen to follow the `now` handed in
    /// (see [`super::ffi`]); false before the first flight, and on an OpenSSL whose timer stays
    /// on the wall clock (then `now` must be the current time).
    pub fn timer_follows_clock(&self) -> bool {
        self.follows_clock
    }

    fn is_live(&self) -> bool {
        matches!(self.state, State::Handshaking | State::Connected)
    }

    /// Fails a handshake past its deadline; true if it did.
    fn check_deadline(&mut self, now: Instant) -> bool {
        if self.state == State::Handshaking && now >= self.deadline {
            self.fail(FailReason::Timeout);
            return true;
        }
        false
    }

    /// Takes the engine's counters after a call into it.
    fn after_engine(&mut self) {
        if let Some(tls) = self.tls.as_ref() {
            self.stats.retransmits = tls.retransmits();
            self.follows_clock |= tls.follows_clock();
        }
    }

    /// Runs the engine's handshake as far as the input allows.
    fn handshake(&mut self, now: Instant) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let result = tls.do_handshake(now);
        self.after_engine();
        match result {
            Ok(()) => {
                self.collect_output();
                self.finish_handshake();
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => self.collect_output(),
            Err(e) => {
                let reason = self.classify(&e);
                self.engine_failed(reason);
            }
        }
    }

    /// The engine completed the handshake: check the peer once more, export the keys.
    fn finish_handshake(&mut self) {
        let Some(tls) = self.tls.as_ref() else {
            return;
        };
        let ssl = tls.ssl();
        let peer_cert = ssl.peer_certificate();
        // The verification callback already refused any other certificate; this re-checks the
        // certificate the handshake ended with, so no path hands out keys without the match.
        let matched = peer_cert
            .as_ref()
            .and_then(|c| c.to_der().ok())
            .and_then(|der| self.peer.matching_hash(&der));
        let Some(hash) = matched.filter(|_| self.verdict.load(Ordering::Acquire) == CERT_MATCHED)
        else {
            self.fail(FailReason::FingerprintMismatch);
            return;
        };
        self.peer_hash = Some(hash);
        match export_keys(ssl, self.role) {
            Some(keys) => {
                self.keys = Some(keys);
                self.cipher = ssl.current_cipher().map(|c| c.name());
                self.peer_key = peer_cert
                    .and_then(|c| c.public_key().ok())
                    .map(|k| key_label(k.id(), k.bits()));
                self.state = State::Connected;
                self.events.push_back(EndpointEvent::Connected);
            }
            None => self.fail(FailReason::NoSrtpProfile),
        }
    }

    /// After the handshake: lets the engine answer a retransmitted final flight and notice
    /// `close_notify` or a fatal alert. Application data (none in DTLS-SRTP) is discarded.
    fn read_connected(&mut self, now: Instant) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let mut scratch = [0u8; 1500];
        for _ in 0..MAX_READS_PER_DATAGRAM {
            match tls.ssl_read(now, &mut scratch) {
                Ok(_) => continue,
                Err(e) if e.code() == ErrorCode::WANT_READ => break,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.collect_output();
                    self.state = State::Closed;
                    self.events.push_back(EndpointEvent::Closed);
                    self.tls = None;
                    return;
                }
                Err(e) => {
                    let reason = self.classify(&e);
                    self.engine_failed(reason);
                    return;
                }
            }
        }
        self.collect_output();
    }

    /// Moves what the engine wrote to the send queue.
    fn collect_output(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        for d in tls.pipe().tx.drain(..) {
            if self.out.len() >= MAX_QUEUED_TX {
                self.out.pop_front();
            }
            self.out.push_back(d);
            self.stats.datagrams_out = self.stats.datagrams_out.saturating_add(1);
        }
    }

    /// Maps an engine error, preferring what the verification callback found.
    fn classify(&self, e: &openssl::ssl::Error) -> FailReason {
        match self.verdict.load(Ordering::Acquire) {
            CERT_MISMATCH => return FailReason::FingerprintMismatch,
            CERT_WEAK_KEY => {
                return FailReason::Protocol("peer certificate key too small".into());
            }
            _ => {}
        }
        if e.code() == ErrorCode::ZERO_RETURN {
            return FailReason::PeerClosed;
        }
        match e.ssl_error() {
            Some(stack) => classify_stack(stack),
            None => FailReason::Protocol(e.code_name()),
        }
    }

    /// The engine failed: the queued flights are dropped, but the fatal alert it just wrote (if
    /// any) goes out so the peer fails at once instead of timing out.
    fn engine_failed(&mut self, reason: FailReason) {
        let alerts: Vec<Vec<u8>> = self
            .tls
            .as_mut()
            .map(|t| {
                t.pipe()
                    .tx
                    .drain(..)
                    .filter(|d| d.first() == Some(&21))
                    .collect()
            })
            .unwrap_or_default();
        self.fail(reason);
        self.stats.datagrams_out = self.stats.datagrams_out.saturating_add(alerts.len() as u64);
        self.out.extend(alerts);
    }

    /// Ends the handshake for good: no keys, nothing queued, the engine freed.
    fn fail(&mut self, reason: FailReason) {
        if !matches!(self.state, State::Failed(_)) {
            self.events.push_back(EndpointEvent::Failed(reason.clone()));
        }
        self.state = State::Failed(reason);
        self.keys = None;
        self.out.clear();
        self.tls = None;
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("profile", &self.profile())
            .finish_non_exhaustive()
    }
}

/// A readable name for an engine error without an OpenSSL error stack.
trait CodeName {
    fn code_name(&self) -> String;
}

impl CodeName for openssl::ssl::Error {
    fn code_name(&self) -> String {
        match self.io_error() {
            Some(io) => format!("engine I/O error: {io}"),
            None => format!("engine error code {}", self.code().as_raw()),
        }
    }
}

/// Builds the engine for one endpoint: our certificate, the MTU, the retransmission timer, the
/// cookie and the peer check.
fn engine(
    identity: &DtlsIdentity,
    role: Role,
    peer: &PeerFingerprints,
    verdict: &Arc<AtomicU8>,
    config: &DtlsConfig,
    now: Instant,
) -> Result<Engine, ErrorStack> {
    let slots = slots().map_err(|_| ErrorStack::get())?;
    let mut ssl = Ssl::new(&config.ctx)?;
    ssl.set_certificate(identity.x509())?;
    ssl.set_private_key(identity.private_key())?;
    ssl.set_mtu(config.mtu)?;
    let mut cookie = [0u8; COOKIE_LEN];
    openssl::rand::rand_bytes(&mut cookie)?;
    ssl.set_ex_data(slots.cookie, cookie);
    let (peer, verdict) = (peer.clone(), Arc::clone(verdict));
    ssl.set_verify_callback(
        // Request and require the peer's certificate in both roles.
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        move |_preverified, ctx| verify_peer(&peer, &verdict, ctx),
    );
    match role {
        Role::Client => ssl.set_connect_state(),
        Role::Server => ssl.set_accept_state(),
    }
    Engine::new(ssl, config.rto_us, now)
}

/// The certificate check, run by OpenSSL for each certificate of the peer's chain. DTLS-SRTP
/// certificates are self-signed and vouched for only by the SDP fingerprint (RFC 5763), so any
/// chain error is accepted; the leaf must match a fingerprint and an RSA key must have at least
/// 2048 bits. A refusal makes OpenSSL send a fatal `bad_certificate` alert.
fn verify_peer(peer: &PeerFingerprints, verdict: &AtomicU8, ctx: &mut X509StoreContextRef) -> bool {
    if ctx.error_depth() != 0 {
        return true;
    }
    let Some(cert) = ctx.current_cert() else {
        return false;
    };
    let matched = cert.to_der().is_ok_and(|der| peer.matches(&der));
    if !matched {
        verdict.store(CERT_MISMATCH, Ordering::Release);
        ctx.set_error(ffi::cert_rejected());
        return false;
    }
    let weak = cert
        .public_key()
        .is_ok_and(|k| k.id() == Id::RSA && k.bits() < 2048);
    if weak {
        verdict.store(CERT_WEAK_KEY, Ordering::Release);
        ctx.set_error(ffi::key_too_small());
        return false;
    }
    verdict.store(CERT_MATCHED, Ordering::Release);
    true
}

/// A short label of a public key for logs: algorithm and size in bits.
fn key_label(id: Id, bits: u32) -> String {
    let alg = match id {
        Id::RSA => "RSA",
        Id::EC => "EC",
        Id::ED25519 => "Ed25519",
        Id::ED448 => "Ed448",
        _ => "other",
    };
    format!("{alg}-{bits}")
}

/// The negotiated SRTP profile and the exported keys, split by our role.
fn export_keys(ssl: &SslRef, role: Role) -> Option<SrtpKeys> {
    let id = ssl.selected_srtp_profile()?.id().as_raw();
    let profile = srtp_profile(u16::try_from(id).ok()?)?;
    let mut material = Zeroizing::new(vec![0u8; SrtpKeys::exported_len(profile)]);
    ssl.export_keying_material(&mut material, EXPORTER_LABEL, None)
        .ok()?;
    SrtpKeys::from_exported(profile, role, &material).ok()
}

/// Our profile for a negotiated `use_srtp` protection profile id (RFC 5764 4.1.2, RFC 7714
/// 14.2): the four we offer.
fn srtp_profile(id: u16) -> Option<Profile> {
    Profile::from_dtls_id(id)
}

/// Maps OpenSSL's error stack to a failure reason: a received alert, too many
/// retransmissions, a missing client certificate, or the first error's text.
fn classify_stack(stack: &ErrorStack) -> FailReason {
    let ssl_errors = || {
        stack
            .errors()
            .iter()
            .filter(|e| e.library_code() == ERR_LIB_SSL)
    };
    for e in ssl_errors() {
        let r = e.reason_code();
        if (SSL_AD_REASON_OFFSET..SSL_AD_REASON_OFFSET + 256).contains(&r) {
            return FailReason::PeerAlert((r - SSL_AD_REASON_OFFSET) as u8);
        }
        if r == SSL_R_READ_TIMEOUT_EXPIRED {
            return FailReason::Timeout;
        }
        if r == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE {
            return FailReason::FingerprintMismatch;
        }
    }
    let text = stack
        .errors()
        .first()
        .and_then(|e| e.reason())
        .unwrap_or("unknown engine error");
    FailReason::Protocol(text.to_owned())
}

#[cfg(test)]
mod tests;
