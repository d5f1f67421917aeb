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
//! Time: the handshake deadline follows the `now` the caller passes. Retransmission is
//! OpenSSL's own timer (`DTLSv1_get_timeout` / `DTLSv1_handle_timeout`, RFC 6347 4.2.4.1: the
//! configured initial timeout, doubled per retransmission), which runs on the wall clock, so
//! `now` must be the current time (the media worker passes `Instant::now()`).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::Id;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509StoreContextRef, X509VerifyResult};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::cert::DtlsIdentity;
use super::fingerprint::{HashFunction, PeerFingerprints};
use super::keys::{SrtpKeys, EXPORTER_LABEL};
use super::setup::Role;
use crate::srtp::Profile;

/// Largest datagram handed to the DTLS engine. DTLS-SRTP peers send flights fragmented to the
/// path MTU; 4 KiB leaves room for large-MTU paths while bounding what a peer can make us buffer.
pub const MAX_DATAGRAM: usize = 4096;

/// Datagrams queued for sending; the oldest is dropped beyond this (they are retransmitted).
const MAX_QUEUED_TX: usize = 32;

/// Records read per received datagram once connected (DTLS-SRTP carries no application data;
/// this only drains what a peer might send anyway).
const MAX_READS_PER_DATAGRAM: usize = 8;

/// Largest peer certificate chain OpenSSL accepts (its default is 100 KiB).
const MAX_CERT_LIST: usize = 32 * 1024;

/// Ceiling of the doubled retransmission timeout (RFC 6347 4.2.4.1: at least 60 s).
const MAX_RTO_US: u32 = 60_000_000;

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

/// `SSL_ctrl` commands behind the `DTLSv1_get_timeout` and `DTLSv1_handle_timeout` macros
/// (openssl/ssl.h), which the `openssl` crate does not wrap.
const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;

/// OpenSSL's library code of libssl errors (`ERR_LIB_SSL`).
const ERR_LIB_SSL: libc::c_int = 20;
/// OpenSSL's reason code for a received alert is this offset plus the alert description.
const SSL_AD_REASON_OFFSET: libc::c_int = 1000;
/// OpenSSL's reason code after too many retransmissions (`SSL_R_READ_TIMEOUT_EXPIRED`).
const SSL_R_READ_TIMEOUT_EXPIRED: libc::c_int = 312;
/// OpenSSL's reason code for a client that sent no certificate
/// (`SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE`).
const SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: libc::c_int = 199;

extern "C" {
    /// `void DTLS_set_timer_cb(SSL *s, DTLS_timer_cb cb)` (OpenSSL 1.1.1+), not in openssl-sys.
    fn DTLS_set_timer_cb(
        s: *mut openssl_sys::SSL,
        cb: Option<unsafe extern "C" fn(*mut openssl_sys::SSL, libc::c_uint) -> libc::c_uint>,
    );
}

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
    /// Initial retransmission timeout of this endpoint, microseconds.
    rto_us: Index<Ssl, u32>,
    /// This endpoint's HelloVerifyRequest cookie.
    cookie: Index<Ssl, [u8; COOKIE_LEN]>,
}

fn slots() -> Result<&'static Slots, FailReason> {
    static SLOTS: OnceLock<Result<Slots, String>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            Ok(Slots {
                rto_us: Ssl::new_ex_index().map_err(|e| e.to_string())?,
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
        set_max_cert_list(&mut b);
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

/// Caps the peer certificate chain OpenSSL buffers (`SSL_CTX_set_max_cert_list`, a macro over
/// `SSL_CTX_ctrl` the `openssl` crate does not wrap).
fn set_max_cert_list(b: &mut SslContextBuilder) {
    const SSL_CTRL_SET_MAX_CERT_LIST: libc::c_int = 51;
    // SAFETY: a plain integer setting on a valid SSL_CTX; no pointer is passed.
    unsafe {
        openssl_sys::SSL_CTX_ctrl(
            b.as_ptr(),
            SSL_CTRL_SET_MAX_CERT_LIST,
            MAX_CERT_LIST as libc::c_long,
            std::ptr::null_mut(),
        );
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

/// The datagram pipe between OpenSSL and the endpoint. OpenSSL reads one whole datagram per
/// `read` (DTLS needs datagram boundaries, which a byte-stream memory BIO would lose) and
/// writes one datagram per `write` (it packs a flight's records up to the MTU before writing).
#[derive(Default)]
struct DatagramPipe {
    rx: Option<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

impl Read for DatagramPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.rx.take() {
            Some(d) => {
                // OpenSSL reads into a buffer of a full record (16 KiB+), larger than any
                // datagram we pass; a shorter read would only truncate a record it then drops.
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DatagramPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tx.len() >= MAX_QUEUED_TX {
            self.tx.pop_front();
        }
        self.tx.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the verification callback found about the peer's certificate.
const CERT_UNCHECKED: u8 = 0;
const CERT_MATCHED: u8 = 1;
const CERT_MISMATCH: u8 = 2;
const CERT_WEAK_KEY: u8 = 3;

/// The DTLS-SRTP state machine of one leg (client or server per `a=setup`).
pub struct Endpoint {
    /// The engine; dropped (and its memory freed) once the endpoint failed or was closed.
    tls: Option<SslStream<DatagramPipe>>,
    role: Role,
    peer: PeerFingerprints,
    verdict: Arc<AtomicU8>,
    state: State,
    deadline: Instant,
    engine_timer: Option<Instant>,
    out: VecDeque<Vec<u8>>,
    keys: Option<SrtpKeys>,
    cipher: Option<&'static str>,
    peer_key: Option<String>,
    /// The hash function of the peer fingerprint its certificate matched.
    peer_hash: Option<HashFunction>,
    ignored: u64,
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
        let tls = engine(identity, role, &peer, &verdict, config);
        let mut ep = Endpoint {
            tls: None,
            role,
            peer,
            verdict,
            state: State::Handshaking,
            deadline: now + config.handshake_timeout,
            engine_timer: None,
            out: VecDeque::new(),
            keys: None,
            cipher: None,
            peer_key: None,
            peer_hash: None,
            ignored: 0,
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
            self.ignored = self.ignored.saturating_add(1);
            return;
        }
        if self.check_deadline(now) {
            return;
        }
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        tls.get_mut().rx = Some(data.to_vec());
        match self.state {
            State::Handshaking => self.handshake(now),
            _ => self.read_connected(),
        }
        if let Some(tls) = self.tls.as_mut() {
            // Whatever the engine did not read (it stopped on an error) is not kept.
            tls.get_mut().rx = None;
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
        // SAFETY: DTLSv1_handle_timeout(ssl): an SSL_ctrl on a valid SSL without a pointer
        // argument. It retransmits the last flight (through our pipe) if OpenSSL's timer expired,
        // and does nothing otherwise.
        let rc = unsafe {
            openssl_sys::SSL_ctrl(
                tls.ssl().as_ptr(),
                DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let reason = classify_stack(&ErrorStack::get());
            self.engine_failed(reason);
            return;
        }
        self.collect_output();
        self.update_timer(now);
    }

    /// The next datagram to send to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` once nothing
    /// more will happen by itself (connected, closed or failed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshaking => Some(match self.engine_timer {
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
        self.ignored
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

    /// Runs the engine's handshake as far as the input allows.
    fn handshake(&mut self, now: Instant) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        match tls.do_handshake() {
            Ok(()) => {
                self.collect_output();
                self.finish_handshake();
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                self.collect_output();
                self.update_timer(now);
            }
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
                self.engine_timer = None;
            }
            None => self.fail(FailReason::NoSrtpProfile),
        }
    }

    /// After the handshake: lets the engine answer a retransmitted final flight and notice
    /// `close_notify` or a fatal alert. Application data (none in DTLS-SRTP) is discarded.
    fn read_connected(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let mut scratch = [0u8; 1500];
        for _ in 0..MAX_READS_PER_DATAGRAM {
            match tls.ssl_read(&mut scratch) {
                Ok(_) => continue,
                Err(e) if e.code() == ErrorCode::WANT_READ => break,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.collect_output();
                    self.state = State::Closed;
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
        for d in tls.get_mut().tx.drain(..) {
            if self.out.len() >= MAX_QUEUED_TX {
                self.out.pop_front();
            }
            self.out.push_back(d);
        }
    }

    /// Re-reads the engine's retransmission timer (wall clock) relative to `now`.
    fn update_timer(&mut self, now: Instant) {
        self.engine_timer = self
            .tls
            .as_ref()
            .and_then(|t| engine_timeout(t.ssl()))
            .map(|left| now + left);
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
                t.get_mut()
                    .tx
                    .drain(..)
                    .filter(|d| d.first() == Some(&21))
                    .collect()
            })
            .unwrap_or_default();
        self.fail(reason);
        self.out.extend(alerts);
    }

    /// Ends the handshake for good: no keys, nothing queued, the engine freed.
    fn fail(&mut self, reason: FailReason) {
        self.state = State::Failed(reason);
        self.keys = None;
        self.out.clear();
        self.tls = None;
        self.engine_timer = None;
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
) -> Result<SslStream<DatagramPipe>, ErrorStack> {
    let slots = slots().map_err(|_| ErrorStack::get())?;
    let mut ssl = Ssl::new(&config.ctx)?;
    ssl.set_certificate(identity.x509())?;
    ssl.set_private_key(identity.private_key())?;
    ssl.set_mtu(config.mtu)?;
    ssl.set_ex_data(slots.rto_us, config.rto_us);
    let mut cookie = [0u8; COOKIE_LEN];
    openssl::rand::rand_bytes(&mut cookie)?;
    ssl.set_ex_data(slots.cookie, cookie);
    // SAFETY: installs a plain function pointer on a valid SSL; the callback only reads this
    // SSL's ex_data slot.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(retransmit_timer)) };
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
    SslStream::new(ssl, DatagramPipe::default())
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
        // SAFETY: a verification result code OpenSSL defines (maps to `bad_certificate`).
        let rejected = unsafe { X509VerifyResult::from_raw(openssl_sys::X509_V_ERR_CERT_REJECTED) };
        ctx.set_error(rejected);
        return false;
    }
    let weak = cert
        .public_key()
        .is_ok_and(|k| k.id() == Id::RSA && k.bits() < 2048);
    if weak {
        verdict.store(CERT_WEAK_KEY, Ordering::Release);
        // SAFETY: a verification result code OpenSSL defines (maps to `bad_certificate`).
        let small = unsafe { X509VerifyResult::from_raw(openssl_sys::X509_V_ERR_EE_KEY_TOO_SMALL) };
        ctx.set_error(small);
        return false;
    }
    verdict.store(CERT_MATCHED, Ordering::Release);
    true
}

/// OpenSSL's retransmission timer callback (`DTLS_set_timer_cb`): a flight's first timeout is
/// the configured initial timeout, each retransmission doubles it up to 60 s (RFC 6347 4.2.4.1).
unsafe extern "C" fn retransmit_timer(
    ssl: *mut openssl_sys::SSL,
    current_us: libc::c_uint,
) -> libc::c_uint {
    if current_us != 0 {
        return current_us.saturating_mul(2).min(MAX_RTO_US);
    }
    let initial = slots().ok().and_then(|s| {
        // SAFETY: OpenSSL passes the SSL whose timer this is, valid for the call.
        let ssl = unsafe { SslRef::from_ptr(ssl) };
        ssl.ex_data(s.rto_us).copied()
    });
    initial.unwrap_or(1_000_000)
}

/// The time left on OpenSSL's retransmission timer (`DTLSv1_get_timeout`), if it runs.
fn engine_timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: DTLSv1_get_timeout(ssl, &tv): SSL_ctrl writes one struct timeval through the
    // pointer, which is valid and exclusively ours for the call.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut libc::timeval).cast(),
        )
    };
    if running != 1 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
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
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509NameBuilder, X509};

    fn trust(der: &[u8]) -> PeerFingerprints {
        let fp = super::super::fingerprint::Fingerprint::of_certificate(
            super::super::fingerprint::HashFunction::Sha256,
            der,
        );
        PeerFingerprints::from_fingerprints([fp]).unwrap()
    }

    /// A self-signed certificate made with OpenSSL for `key`.
    fn self_signed(key: &PKey<openssl::pkey::Private>) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "raw-openssl-peer").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(0x5eed).unwrap().to_asn1_integer().unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn rsa_key(bits: u32) -> PKey<openssl::pkey::Private> {
        PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
    }

    /// A plain OpenSSL DTLS peer (no srtp-edge code) over the same datagram pipe, as a SIP
    /// endpoint's libssl would be configured: DTLS 1.2, `use_srtp`, any self-signed certificate.
    struct RawPeer {
        tls: SslStream<DatagramPipe>,
        cert_der: Vec<u8>,
        outcome: Option<Result<(), String>>,
    }

    impl RawPeer {
        fn new(role: Role, key: PKey<openssl::pkey::Private>, srtp_profiles: &str) -> RawPeer {
            Self::with_versions(role, key, srtp_profiles, SslVersion::DTLS1_2)
        }

        fn with_versions(
            role: Role,
            key: PKey<openssl::pkey::Private>,
            srtp_profiles: &str,
            max: SslVersion,
        ) -> RawPeer {
            let cert = self_signed(&key);
            let mut b = SslContextBuilder::new(SslMethod::dtls()).unwrap();
            b.set_min_proto_version(Some(SslVersion::DTLS1)).unwrap();
            b.set_max_proto_version(Some(max)).unwrap();
            // An old peer: whatever key it has (Debian's default level 2 would refuse RSA-1024).
            b.set_security_level(0);
            if !srtp_profiles.is_empty() {
                b.set_tlsext_use_srtp(srtp_profiles).unwrap();
            }
            b.set_certificate(&cert).unwrap();
            b.set_private_key(&key).unwrap();
            b.set_verify_callback(
                SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
                |_, _| true,
            );
            let ctx = b.build();
            let mut ssl = Ssl::new(&ctx).unwrap();
            ssl.set_mtu(1200).unwrap();
            match role {
                Role::Client => ssl.set_connect_state(),
                Role::Server => ssl.set_accept_state(),
            }
            let mut peer = RawPeer {
                tls: SslStream::new(ssl, DatagramPipe::default()).unwrap(),
                cert_der: cert.to_der().unwrap(),
                outcome: None,
            };
            peer.step();
            peer
        }

        fn step(&mut self) {
            if self.outcome.is_some() {
                return;
            }
            match self.tls.do_handshake() {
                Ok(()) => self.outcome = Some(Ok(())),
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => self.outcome = Some(Err(e.to_string())),
            }
        }

        fn feed(&mut self, d: &[u8]) {
            self.tls.get_mut().rx = Some(d.to_vec());
            self.step();
        }

        /// The peer's `EXTRACTOR-dtls_srtp` output in the RFC 5764 layout.
        fn exported(&self, len: usize) -> Vec<u8> {
            let mut m = vec![0; len];
            self.tls
                .ssl()
                .export_keying_material(&mut m, EXPORTER_LABEL, None)
                .unwrap();
            m
        }
    }

    /// Exchanges datagrams (no loss, one instant) until neither side moves.
    fn converse(ep: &mut Endpoint, peer: &mut RawPeer, now: Instant) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(d) = ep.poll_transmit() {
                moved = true;
                peer.feed(&d);
            }
            let flight: Vec<Vec<u8>> = peer.tls.get_mut().tx.drain(..).collect();
            for d in flight {
                moved = true;
                ep.handle_datagram(now, &d);
            }
            if !moved {
                return;
            }
        }
        panic!("handshake did not settle");
    }

    /// Our role-split keys back in the exporter layout (client key, server key, client salt,
    /// server salt).
    fn rfc5764_layout(k: &SrtpKeys) -> Vec<u8> {
        let (ck, sk, cs, ss) = match k.role() {
            Role::Client => (
                k.local_key(),
                k.remote_key(),
                k.local_salt(),
                k.remote_salt(),
            ),
            Role::Server => (
                k.remote_key(),
                k.local_key(),
                k.remote_salt(),
                k.local_salt(),
            ),
        };
        [ck, sk, cs, ss].concat()
    }

    fn handshake_with(
        role: Role,
        peer_key: PKey<openssl::pkey::Private>,
        peer_profiles: &str,
    ) -> (Endpoint, RawPeer) {
        let id = DtlsIdentity::generate().unwrap();
        let cfg = EndpointConfig::default().build().unwrap();
        let peer_role = match role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        let t0 = Instant::now();
        // The peer speaks first when it is the client; its certificate is known up front.
        let mut peer = RawPeer::new(peer_role, peer_key, peer_profiles);
        let mut ep = Endpoint::new(&id, role, trust(&peer.cert_der), &cfg, t0);
        converse(&mut ep, &mut peer, t0);
        // The peer saw our certificate.
        if let Some(Ok(())) = peer.outcome {
            let seen = peer.tls.ssl().peer_certificate().unwrap().to_der().unwrap();
            assert_eq!(seen, id.certificate_der());
        }
        (ep, peer)
    }

    fn assert_same_keys(ep: &Endpoint, peer: &RawPeer, profile: Profile) {
        assert_eq!(ep.state(), &State::Connected, "peer: {:?}", peer.outcome);
        assert_eq!(peer.outcome, Some(Ok(())));
        assert_eq!(ep.profile(), Some(profile));
        let keys = ep.srtp_keys().unwrap();
        let ours = rfc5764_layout(keys);
        assert_eq!(ours, peer.exported(SrtpKeys::exported_len(profile)));
    }

    #[test]
    fn rsa_2048_peer_in_both_roles() {
        for role in [Role::Client, Role::Server] {
            let (ep, peer) = handshake_with(role, rsa_key(2048), SRTP_PROFILES);
            assert_same_keys(&ep, &peer, Profile::AeadAes256Gcm);
            let cipher = peer.tls.ssl().current_cipher().unwrap().name();
            assert!(
                cipher.starts_with("ECDHE-") && cipher.contains("GCM"),
                "{cipher}"
            );
            if role == Role::Client {
                // The peer served with its RSA certificate.
                assert!(cipher.starts_with("ECDHE-RSA-"), "{cipher}");
            }
        }
    }

    #[test]
    fn rsa_1024_peer_is_refused() {
        for role in [Role::Client, Role::Server] {
            let (ep, peer) = handshake_with(role, rsa_key(1024), SRTP_PROFILES);
            assert_eq!(
                ep.state(),
                &State::Failed(FailReason::Protocol(
                    "peer certificate key too small".into()
                )),
                "{role:?}"
            );
            assert!(ep.srtp_keys().is_none());
            // The peer learns why at once.
            let err = peer.outcome.clone().unwrap().unwrap_err();
            assert!(err.contains("bad certificate"), "{role:?}: {err}");
        }
    }

    #[test]
    fn rsa_peer_with_the_wrong_fingerprint_gets_bad_certificate() {
        for role in [Role::Client, Role::Server] {
            let id = DtlsIdentity::generate().unwrap();
            let cfg = EndpointConfig::default().build().unwrap();
            let t0 = Instant::now();
            let peer_role = if role == Role::Client {
                Role::Server
            } else {
                Role::Client
            };
            let mut peer = RawPeer::new(peer_role, rsa_key(2048), SRTP_PROFILES);
            let stranger = self_signed(&rsa_key(2048)).to_der().unwrap();
            let mut ep = Endpoint::new(&id, role, trust(&stranger), &cfg, t0);
            converse(&mut ep, &mut peer, t0);
            assert_eq!(ep.state(), &State::Failed(FailReason::FingerprintMismatch));
            let err = peer.outcome.clone().unwrap().unwrap_err();
            assert!(err.contains("bad certificate"), "{role:?}: {err}");
        }
    }

    #[test]
    fn aes128_cm_sha1_32_is_negotiated() {
        for role in [Role::Client, Role::Server] {
            let key = PKey::ec_gen("prime256v1").unwrap();
            let (ep, peer) = handshake_with(role, key, "SRTP_AES128_CM_SHA1_32");
            assert_same_keys(&ep, &peer, Profile::AesCm128HmacSha1_32);
            let keys = ep.srtp_keys().unwrap();
            assert_eq!(keys.local_key().len(), 16);
            assert_eq!(keys.local_salt().len(), 14);
        }
    }

    #[test]
    fn dtls_1_0_peer_is_refused() {
        for role in [Role::Client, Role::Server] {
            let id = DtlsIdentity::generate().unwrap();
            let cfg = EndpointConfig::default().build().unwrap();
            let t0 = Instant::now();
            let peer_role = if role == Role::Client {
                Role::Server
            } else {
                Role::Client
            };
            let key = PKey::ec_gen("prime256v1").unwrap();
            let mut peer = RawPeer::with_versions(peer_role, key, SRTP_PROFILES, SslVersion::DTLS1);
            let mut ep = Endpoint::new(&id, role, trust(&peer.cert_der), &cfg, t0);
            converse(&mut ep, &mut peer, t0);
            assert!(
                matches!(ep.state(), State::Failed(_)),
                "{role:?}: {:?}",
                ep.state()
            );
            assert!(ep.srtp_keys().is_none());
            assert!(matches!(peer.outcome, Some(Err(_))), "{:?}", peer.outcome);
        }
    }

    #[test]
    fn peer_without_srtp_gets_no_keys() {
        // A peer without use_srtp completes a plain DTLS handshake; it must not yield keys.
        for role in [Role::Client, Role::Server] {
            let key = PKey::ec_gen("prime256v1").unwrap();
            let (ep, _) = handshake_with(role, key, "");
            assert_eq!(ep.state(), &State::Failed(FailReason::NoSrtpProfile));
            assert!(ep.srtp_keys().is_none());
        }
    }

    #[test]
    fn every_offered_profile_maps_to_ours() {
        for name in SRTP_PROFILES.split(':') {
            let id = match name {
                "SRTP_AEAD_AES_256_GCM" => openssl::srtp::SrtpProfileId::SRTP_AEAD_AES_256_GCM,
                "SRTP_AEAD_AES_128_GCM" => openssl::srtp::SrtpProfileId::SRTP_AEAD_AES_128_GCM,
                "SRTP_AES128_CM_SHA1_80" => openssl::srtp::SrtpProfileId::SRTP_AES128_CM_SHA1_80,
                "SRTP_AES128_CM_SHA1_32" => openssl::srtp::SrtpProfileId::SRTP_AES128_CM_SHA1_32,
                other => panic!("{other}"),
            };
            let ours = srtp_profile(u16::try_from(id.as_raw()).unwrap()).unwrap();
            let expected = match name {
                "SRTP_AEAD_AES_256_GCM" => Profile::AeadAes256Gcm,
                "SRTP_AEAD_AES_128_GCM" => Profile::AeadAes128Gcm,
                "SRTP_AES128_CM_SHA1_80" => Profile::AesCm128HmacSha1_80,
                _ => Profile::AesCm128HmacSha1_32,
            };
            assert_eq!(ours, expected, "{name}");
        }
        assert_eq!(srtp_profile(0x0005), None, "SRTP_NULL_HMAC_SHA1_80");
    }

    #[test]
    fn server_ignores_junk_and_times_out() {
        let id = DtlsIdentity::generate().unwrap();
        let cfg = EndpointConfig::default().build().unwrap();
        let t0 = Instant::now();
        let mut ep = Endpoint::new(&id, Role::Server, PeerFingerprints::new(), &cfg, t0);
        assert_eq!(ep.poll_transmit(), None, "a server speaks second");
        ep.handle_datagram(t0, &[]);
        ep.handle_datagram(t0, &[0x80, 0, 0, 0]); // RTP
        ep.handle_datagram(t0, &vec![22; MAX_DATAGRAM + 1]);
        assert_eq!(ep.ignored_datagrams(), 3);
        ep.handle_datagram(t0, &[22, 0xfe, 0xfd, 0, 0]); // truncated DTLS: dropped by the engine
        assert_eq!(ep.state(), &State::Handshaking);
        assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        ep.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(ep.state(), &State::Failed(FailReason::Timeout));
        assert_eq!(ep.poll_timeout(), None);
        assert!(ep.srtp_keys().is_none());
    }

    #[test]
    fn timer_doubles_from_the_configured_start() {
        let cfg = EndpointConfig {
            initial_rto: Duration::from_millis(250),
            ..EndpointConfig::default()
        }
        .build()
        .unwrap();
        let id = DtlsIdentity::generate().unwrap();
        let t0 = Instant::now();
        let ep = Endpoint::new(&id, Role::Client, PeerFingerprints::new(), &cfg, t0);
        // The ClientHello is out and OpenSSL's timer runs with our initial timeout.
        let next = ep.poll_timeout().unwrap();
        assert!(
            next > t0 && next <= t0 + Duration::from_millis(250),
            "{:?}",
            next - t0
        );
        let tls = ep.tls.as_ref().unwrap();
        // SAFETY (test): the callback reads only this SSL's ex_data.
        let ptr = tls.ssl().as_ptr();
        assert_eq!(unsafe { retransmit_timer(ptr, 0) }, 250_000);
        assert_eq!(unsafe { retransmit_timer(ptr, 250_000) }, 500_000);
        assert_eq!(unsafe { retransmit_timer(ptr, MAX_RTO_US) }, MAX_RTO_US);
    }
}
