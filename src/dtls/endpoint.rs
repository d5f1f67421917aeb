//! One leg's DTLS-SRTP handshake as a sans-IO state machine: datagrams and the clock go in,
//! datagrams to send, a timer and (on success) SRTP keys come out. No sockets, no clock reads.
//!
//! The DTLS 1.2 engine is `dimpl`; this wrapper adds what srtp-edge needs around it: the peer
//! certificate must match a fingerprint from the peer's SDP before any key is handed out, the
//! handshake has a hard deadline, a failure is final and observable (`State::Failed`), and
//! hostile input is bounded before it reaches the engine.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cert::DtlsIdentity;
use super::fingerprint::{HashFunction, PeerFingerprints};
use super::keys::SrtpKeys;
use super::setup::Role;
use crate::srtp::Profile;

/// Largest datagram handed to the DTLS engine. DTLS-SRTP peers send flights fragmented to the
/// path MTU; 4 KiB leaves room for large-MTU paths while bounding what a peer can make us buffer.
pub const MAX_DATAGRAM: usize = 4096;

/// Datagrams the engine may hold for reassembly. Together with [`MAX_DATAGRAM`] it bounds the
/// largest peer certificate (and so our output buffer) to 64 KiB.
const MAX_QUEUE_RX: usize = 16;

/// Output buffer while handshaking: large enough for any certificate the engine can reassemble.
const HANDSHAKE_BUF: usize = MAX_DATAGRAM * MAX_QUEUE_RX;

/// Output buffer once connected (only retransmitted final flights, at most the MTU, go out).
const CONNECTED_BUF: usize = 2048;

/// Datagrams queued for sending; the oldest is dropped beyond this (they are retransmitted).
const MAX_QUEUED_TX: usize = 32;

/// Engine outputs drained per call; a safety net against a misbehaving engine.
const MAX_OUTPUTS_PER_CALL: usize = 256;

/// Fatal alert `bad_certificate` (RFC 5246 section 7.2).
const ALERT_BAD_CERTIFICATE: u8 = 42;

/// Sequence number of the plaintext alert we send on a fingerprint mismatch: above anything
/// we sent in epoch 0, so the peer's replay window accepts it.
const ALERT_SEQUENCE: u64 = 1 << 32;

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

impl EndpointConfig {
    /// Builds the engine configuration once, to share between the endpoints of many legs.
    pub fn build(&self) -> Result<DtlsConfig, FailReason> {
        let cfg = dimpl::Config::builder()
            .mtu(self.mtu.clamp(256, MAX_DATAGRAM))
            .max_queue_rx(MAX_QUEUE_RX)
            .require_client_certificate(true)
            .use_server_cookie(true)
            .flight_start_rto(self.initial_rto)
            .flight_retries(16)
            // Our own deadline fires first; the engine's is a backstop.
            .handshake_timeout(self.handshake_timeout + Duration::from_secs(1))
            .build()
            .map_err(|e| FailReason::Protocol(e.to_string()))?;
        Ok(DtlsConfig {
            engine: Arc::new(cfg),
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// A validated, shareable handshake configuration (see [`EndpointConfig::build`]).
#[derive(Clone)]
pub struct DtlsConfig {
    engine: Arc<dimpl::Config>,
    handshake_timeout: Duration,
}

impl fmt::Debug for DtlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsConfig")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a handshake failed. The leg ends; the reason is what gets counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The peer's certificate matches no fingerprint from its SDP.
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

/// The DTLS-SRTP state machine of one leg (client or server per `a=setup`).
pub struct Endpoint {
    dtls: dimpl::Dtls,
    role: Role,
    peer: PeerFingerprints,
    state: State,
    deadline: Instant,
    engine_timer: Option<Instant>,
    out: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    cert_ok: bool,
    /// The hash function of the peer fingerprint its certificate matched.
    peer_hash: Option<HashFunction>,
    connected_seen: bool,
    keys: Option<SrtpKeys>,
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
        let mut dtls = dimpl::Dtls::new_12(
            Arc::clone(&config.engine),
            identity.dimpl_certificate(),
            now,
        );
        if role == Role::Client {
            dtls.set_active(true);
        }
        let mut ep = Endpoint {
            dtls,
            role,
            peer,
            state: State::Handshaking,
            deadline: now + config.handshake_timeout,
            engine_timer: None,
            out: VecDeque::new(),
            buf: vec![0; HANDSHAKE_BUF],
            cert_ok: false,
            peer_hash: None,
            connected_seen: false,
            keys: None,
            ignored: 0,
        };
        ep.advance(now);
        ep
    }

    /// Feeds one received datagram (already demultiplexed as DTLS by the leg, RFC 7983). Empty,
    /// oversized or non-DTLS datagrams are ignored and counted; malformed DTLS is dropped by the
    /// engine; only a fatal protocol error fails the handshake.
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
        if let Err(e) = self.dtls.handle_timeout(now) {
            self.fail(map_error(e), false);
            return;
        }
        match self.dtls.handle_packet(data) {
            Ok(()) => {}
            // A record that does not decrypt (a stray record of an older association, say the
            // close_notify of a peer connection being replaced, or a forgery) is discarded
            // (RFC 6347 section 4.1.2.7); it must not end a handshake anyone can reach.
            Err(dimpl::Error::CryptoError(_)) => {
                self.ignored = self.ignored.saturating_add(1);
                return;
            }
            Err(e) => {
                self.fail(map_error(e), false);
                return;
            }
        }
        self.pump();
    }

    /// Advances timers: retransmits a lost flight, or fails the handshake past its deadline.
    /// Call at or after [`poll_timeout`](Self::poll_timeout); earlier calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_live() {
            return;
        }
        self.advance(now);
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

    /// Datagrams ignored before reaching the engine (empty, oversized, not DTLS).
    pub fn ignored_datagrams(&self) -> u64 {
        self.ignored
    }

    fn is_live(&self) -> bool {
        matches!(self.state, State::Handshaking | State::Connected)
    }

    fn advance(&mut self, now: Instant) {
        if self.check_deadline(now) {
            return;
        }
        if let Err(e) = self.dtls.handle_timeout(now) {
            self.fail(map_error(e), false);
            return;
        }
        self.pump();
    }

    /// Fails a handshake past its deadline; true if it did.
    fn check_deadline(&mut self, now: Instant) -> bool {
        if self.state == State::Handshaking && now >= self.deadline {
            self.fail(FailReason::Timeout, false);
            return true;
        }
        false
    }

    /// Drains the engine: packets to the send queue, events into our state.
    fn pump(&mut self) {
        for _ in 0..MAX_OUTPUTS_PER_CALL {
            if !self.is_live() {
                return;
            }
            match self.dtls.poll_output(&mut self.buf) {
                dimpl::Output::Packet(p) => {
                    if self.out.len() >= MAX_QUEUED_TX {
                        self.out.pop_front();
                    }
                    self.out.push_back(p.to_vec());
                }
                dimpl::Output::BufferTooSmall { needed } => {
                    if needed > HANDSHAKE_BUF {
                        self.fail(FailReason::Protocol("oversized DTLS output".into()), false);
                        return;
                    }
                    self.buf.resize(needed, 0);
                }
                dimpl::Output::Timeout(t) => {
                    self.engine_timer = Some(t);
                    break;
                }
                dimpl::Output::PeerCert(der) => {
                    if let Some(h) = self.peer.matching_hash(der) {
                        self.cert_ok = true;
                        self.peer_hash = Some(h);
                    } else {
                        self.fail(FailReason::FingerprintMismatch, true);
                        return;
                    }
                }
                dimpl::Output::KeyingMaterial(material, profile) => {
                    let keys = srtp_profile(profile)
                        .and_then(|p| SrtpKeys::from_exported(p, self.role, &material).ok());
                    match keys {
                        Some(k) => self.keys = Some(k),
                        None => {
                            self.fail(FailReason::NoSrtpProfile, false);
                            return;
                        }
                    }
                }
                dimpl::Output::Connected => self.connected_seen = true,
                dimpl::Output::CloseNotify => {
                    if self.state == State::Connected {
                        self.state = State::Closed;
                        self.release_buffers();
                    } else {
                        self.fail(FailReason::PeerClosed, false);
                    }
                    return;
                }
                // DTLS-SRTP carries no application data; anything else is not for us.
                _ => {}
            }
        }
        if self.state == State::Handshaking && self.connected_seen {
            if !self.cert_ok {
                // The engine requires a certificate; never hand out keys without the check.
                self.fail(FailReason::FingerprintMismatch, true);
            } else if self.keys.is_none() {
                self.fail(FailReason::NoSrtpProfile, false);
            } else {
                self.state = State::Connected;
                self.buf.truncate(CONNECTED_BUF);
                self.buf.shrink_to_fit();
            }
        }
    }

    /// Ends the handshake for good. With `alert`, the queued flight is replaced by a fatal
    /// `bad_certificate` alert so the peer fails at once instead of timing out.
    fn fail(&mut self, reason: FailReason, alert: bool) {
        self.state = State::Failed(reason);
        self.keys = None;
        self.out.clear();
        if alert {
            self.out
                .push_back(plaintext_fatal_alert(ALERT_BAD_CERTIFICATE));
        }
        self.release_buffers();
    }

    fn release_buffers(&mut self) {
        self.buf = Vec::new();
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

/// A DTLS 1.2 record in epoch 0 carrying one fatal alert. Before the peer has received our
/// ChangeCipherSpec it reads epoch 0, so this is understood in the middle of a handshake.
fn plaintext_fatal_alert(description: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(15);
    r.push(21); // ContentType alert
    r.extend_from_slice(&[0xfe, 0xfd]); // DTLS 1.2
    r.extend_from_slice(&[0, 0]); // epoch 0
    r.extend_from_slice(&ALERT_SEQUENCE.to_be_bytes()[2..]); // 48-bit sequence number
    r.extend_from_slice(&[0, 2]); // length
    r.extend_from_slice(&[2, description]); // fatal
    r
}

fn srtp_profile(p: dimpl::SrtpProfile) -> Option<Profile> {
    match p {
        dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(Profile::AesCm128HmacSha1_80),
        dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(Profile::AeadAes128Gcm),
        dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(Profile::AeadAes256Gcm),
        _ => None,
    }
}

fn map_error(e: dimpl::Error) -> FailReason {
    match e {
        dimpl::Error::Timeout(_) => FailReason::Timeout,
        dimpl::Error::SecurityError(dimpl::SecurityError::FatalAlert { description }) => {
            FailReason::PeerAlert(description)
        }
        dimpl::Error::ConnectionClosed => FailReason::PeerClosed,
        other => FailReason::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_record_layout() {
        let a = plaintext_fatal_alert(42);
        assert_eq!(a, [21, 0xfe, 0xfd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 2, 42]);
    }

    #[test]
    fn dimpl_profiles_map_to_ours() {
        for p in [
            dimpl::SrtpProfile::AES128_CM_SHA1_80,
            dimpl::SrtpProfile::AEAD_AES_128_GCM,
            dimpl::SrtpProfile::AEAD_AES_256_GCM,
        ] {
            let ours = srtp_profile(p).unwrap();
            assert_eq!(
                SrtpKeys::exported_len(ours),
                p.keying_material_len(),
                "{p:?}"
            );
        }
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
}
