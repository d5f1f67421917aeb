//! The DTLS-SRTP (and ICE-lite) side of one media leg, sans-IO: the worker hands it the DTLS
//! and STUN datagrams that arrive on the leg's RTP socket and sends what it returns. On a
//! completed, fingerprint-verified handshake it yields the leg's inbound and outbound SRTP
//! contexts and the address the handshake ran with (the leg latches onto it).
//!
//! Driven like every core here (quinn-proto's `Connection`): [`DtlsLeg::handle_dtls`],
//! [`DtlsLeg::handle_stun`] and [`DtlsLeg::handle_timeout`] take the input with `now`; the
//! owner then drains [`DtlsLeg::poll_transmit`] and [`DtlsLeg::poll_event`] until both are
//! empty, and calls again at [`DtlsLeg::poll_timeout`]. The leg records no metrics: its events
//! and [`DtlsLeg::stats`] are what the owner counts.
//!
//! Handshake datagrams may allocate (they are rare); STUN answers do not; the SRTP path is not
//! touched here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::ice::{self, IceCredentials, MAX_RESPONSE};
use crate::dtls::{Endpoint, EndpointEvent, EndpointStats, FailReason, HashFunction, State};
use crate::srtp::{ContextConfig, Profile, SrtpContext};

/// Where a leg's DTLS association is, as the control plane reports it (ng `query`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsPhase {
    /// The first handshake runs; the leg has no DTLS keys yet.
    Handshaking,
    /// A handshake completed; its keys are in use.
    Connected,
    /// A new handshake (re-key) runs; the keys of the previous one stay in use until it
    /// completes.
    Rekeying,
    /// The last re-key failed; the keys of the previous handshake are still in use.
    RekeyFailed,
    /// The handshake failed (the call is being torn down).
    Failed,
}

impl DtlsPhase {
    /// The text reported over ng.
    pub const fn as_str(self) -> &'static str {
        match self {
            DtlsPhase::Handshaking => "handshaking",
            DtlsPhase::Connected => "connected",
            DtlsPhase::Rekeying => "rekeying",
            DtlsPhase::RekeyFailed => "rekey-failed",
            DtlsPhase::Failed => "failed",
        }
    }
}

/// A leg's DTLS state for reports: no key material, no certificate, only what an operator needs
/// to see which association a leg runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtlsInfo {
    /// Where the association is.
    pub phase: DtlsPhase,
    /// The SRTP profile of the keys in use (from the last completed handshake).
    pub profile: Option<Profile>,
    /// The hash function of the SDP fingerprint the peer's certificate matched (last completed
    /// handshake).
    pub peer_hash: Option<HashFunction>,
    /// Re-key handshakes on this leg that failed while the previous keys kept running.
    pub rekey_failures: u32,
}

/// What a leg's DTLS association tells its owner, read with [`DtlsLeg::poll_event`]; each
/// outcome is reported once.
pub enum DtlsEvent {
    /// The handshake completed: the leg's new contexts and the handshake peer.
    Keyed {
        /// Decrypts what the peer sends.
        inbound: Box<SrtpContext>,
        /// Encrypts what we send to the peer.
        outbound: Box<SrtpContext>,
        /// The address the handshake ran with.
        peer: SocketAddr,
    },
    /// The handshake failed for good: the leg (and so the call, unless it keeps earlier keys)
    /// ends.
    Failed(FailReason),
}

impl std::fmt::Debug for DtlsEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The contexts hold keys: only say that they are there.
            DtlsEvent::Keyed { peer, .. } => f.debug_struct("Keyed").field("peer", peer).finish(),
            DtlsEvent::Failed(r) => f.debug_tuple("Failed").field(r).finish(),
        }
    }
}

/// A datagram for the owner to send on the leg's RTP socket, read with
/// [`DtlsLeg::poll_transmit`].
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where it goes.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: &'a [u8],
}

/// A STUN answer waiting to be sent (fixed size: answering checks never allocates).
struct StunAnswer {
    buf: [u8; MAX_RESPONSE],
    len: usize,
    to: SocketAddr,
}

/// One leg's DTLS association and ICE-lite credentials.
pub struct DtlsLeg {
    endpoint: Endpoint,
    ice: Option<IceCredentials>,
    /// The address DTLS datagrams go to: the ICE-nominated one, the handshake peer, or the
    /// signalled one (without ICE).
    peer: Option<SocketAddr>,
    replay_window: usize,
    keyed: bool,
    /// Profile and peer fingerprint hash of the keys in use (this handshake's, or the previous
    /// association's while this one re-keys).
    in_use: Option<(Profile, Option<HashFunction>)>,
    rekey_failed: bool,
    rekey_failures: u32,
    /// Outcomes not yet read by the owner. The endpoint reports a failure once, so datagrams
    /// or timers after it never report (count, log, tear down) it again.
    events: VecDeque<DtlsEvent>,
    /// A STUN answer not yet sent.
    stun: Option<StunAnswer>,
    /// What the last [`DtlsLeg::poll_transmit`] handed out (it lends a slice of it).
    sending: Sending,
}

/// The datagram lent by the last [`DtlsLeg::poll_transmit`].
enum Sending {
    Nothing,
    Stun(StunAnswer),
    Dtls(Vec<u8>, SocketAddr),
}

impl std::fmt::Debug for DtlsLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsLeg")
            .field("state", self.endpoint.state())
            .field("ice", &self.ice.is_some())
            .field("peer", &self.peer)
            .finish()
    }
}

impl DtlsLeg {
    /// A leg keyed by `endpoint`. With `ice`, DTLS datagrams wait until a STUN check that
    /// authenticates with our credentials tells where the peer is; without, they go to
    /// `signalled` (and to whoever sends us a DTLS datagram first).
    pub fn new(
        endpoint: Endpoint,
        ice: Option<IceCredentials>,
        signalled: Option<SocketAddr>,
        replay_window: usize,
    ) -> DtlsLeg {
        let peer = if ice.is_some() { None } else { signalled };
        DtlsLeg {
            endpoint,
            ice,
            peer,
            replay_window,
            keyed: false,
            in_use: None,
            rekey_failed: false,
            rekey_failures: 0,
            events: VecDeque::new(),
            stun: None,
            sending: Sending::Nothing,
        }
    }

    /// Takes over what a replaced association of the same leg reports (the keys it left in
    /// use, its failure count), so a re-key in progress shows as such.
    pub fn succeed(&mut self, previous: &DtlsLeg) {
        self.in_use = previous.in_use;
        self.rekey_failures = previous.rekey_failures;
    }

    /// Records that this handshake failed while the leg keeps the keys it had (a failed
    /// re-key).
    pub fn note_rekey_failure(&mut self) {
        self.rekey_failed = true;
        self.rekey_failures = self.rekey_failures.saturating_add(1);
    }

    /// The leg's DTLS state for reports.
    pub fn info(&self) -> DtlsInfo {
        let phase = match self.endpoint.state() {
            State::Handshaking if self.in_use.is_some() => DtlsPhase::Rekeying,
            State::Handshaking => DtlsPhase::Handshaking,
            State::Failed(_) if self.rekey_failed => DtlsPhase::RekeyFailed,
            State::Failed(_) => DtlsPhase::Failed,
            State::Connected | State::Closed if self.keyed => DtlsPhase::Connected,
            State::Connected | State::Closed => DtlsPhase::Handshaking,
        };
        DtlsInfo {
            phase,
            profile: self.in_use.map(|(p, _)| p),
            peer_hash: self.in_use.and_then(|(_, h)| h),
            rekey_failures: self.rekey_failures,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    /// True while the handshake runs.
    pub fn handshaking(&self) -> bool {
        matches!(self.endpoint.state(), State::Handshaking)
    }

    /// The handshake's counters (datagrams, retransmissions), for the owner to record.
    pub fn stats(&self) -> EndpointStats {
        self.endpoint.stats()
    }

    /// A STUN datagram from `src`. A Binding request that authenticates with our credentials
    /// is answered (the answer is the next [`poll_transmit`](Self::poll_transmit)) and true
    /// returned; anything else is refused (false: the owner counts a drop). An authenticated
    /// check from a new address makes it the DTLS peer while the handshake runs.
    pub fn handle_stun(&mut self, src: SocketAddr, msg: &[u8]) -> bool {
        let Some(creds) = self.ice.as_ref() else {
            return false;
        };
        let mut buf = [0u8; MAX_RESPONSE];
        let Ok(a) = ice::answer_binding(creds, msg, src, &mut buf) else {
            return false;
        };
        if !self.keyed && (a.use_candidate || self.peer.is_none()) {
            self.peer = Some(src);
        }
        // One answer waits at most: the owner drains after each datagram.
        self.stun = Some(StunAnswer {
            buf,
            len: a.len,
            to: src,
        });
        true
    }

    /// A DTLS datagram from `src`. With ICE, only the address of an authenticated check may
    /// talk to the endpoint. Without ICE, before the handshake completes, any source may (keys
    /// come only from a handshake whose certificate matched the fingerprint) and the last one
    /// becomes the peer.
    pub fn handle_dtls(&mut self, now: Instant, src: SocketAddr, data: &[u8]) {
        // Once keyed, and on ICE legs always (the peer is the address an authenticated check
        // came from), DTLS from anywhere else is dropped: stray records of a replaced
        // association or a third party's datagrams never reach the handshake.
        if (self.keyed || self.ice.is_some()) && self.peer != Some(src) {
            return;
        }
        if self.peer.is_none() || (self.ice.is_none() && !self.keyed) {
            self.peer = Some(src);
        }
        self.endpoint.handle_datagram(now, data);
        self.take_endpoint_events();
    }

    /// Runs the retransmission and deadline timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.take_endpoint_events();
    }

    /// The next datagram to send: a STUN answer, else a DTLS datagram if the peer is known
    /// (DTLS datagrams wait, bounded, in the endpoint while it is not).
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        if let Some(a) = self.stun.take() {
            self.sending = Sending::Stun(a);
        } else {
            let peer = self.peer?;
            let d = self.endpoint.poll_transmit()?;
            self.sending = Sending::Dtls(d, peer);
        }
        match &self.sending {
            Sending::Stun(a) => Some(Transmit {
                destination: a.to,
                contents: &a.buf[..a.len],
            }),
            Sending::Dtls(d, to) => Some(Transmit {
                destination: *to,
                contents: d,
            }),
            Sending::Nothing => None,
        }
    }

    /// The next outcome (keyed, failed), if any.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Turns what the endpoint reported into the leg's events: keys into SRTP contexts.
    fn take_endpoint_events(&mut self) {
        while let Some(e) = self.endpoint.poll_event() {
            match e {
                EndpointEvent::Failed(r) => self.events.push_back(DtlsEvent::Failed(r)),
                EndpointEvent::Connected if !self.keyed => {
                    if let Some(ev) = self.keyed_event() {
                        self.events.push_back(ev);
                    }
                }
                EndpointEvent::Connected | EndpointEvent::Closed => {}
            }
        }
    }

    fn keyed_event(&mut self) -> Option<DtlsEvent> {
        let keys = self.endpoint.take_srtp_keys()?;
        let cfg = ContextConfig {
            replay_window: self.replay_window,
        };
        let p = keys.profile();
        let inbound = SrtpContext::new(p, keys.remote_key(), keys.remote_salt(), cfg);
        let outbound = SrtpContext::new(p, keys.local_key(), keys.local_salt(), cfg);
        let (Ok(inbound), Ok(outbound), Some(peer)) = (inbound, outbound, self.peer) else {
            return Some(DtlsEvent::Failed(FailReason::NoSrtpProfile));
        };
        self.keyed = true;
        self.in_use = Some((p, self.endpoint.peer_fingerprint_hash()));
        tracing::info!(
            profile = %p,
            %peer,
            cipher = self.endpoint.cipher().unwrap_or("-"),
            peer_key = self.endpoint.peer_key().unwrap_or("-"),
            "DTLS-SRTP handshake complete"
        );
        Some(DtlsEvent::Keyed {
            inbound: Box::new(inbound),
            outbound: Box::new(outbound),
            peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtls::{DtlsIdentity, EndpointConfig, PeerFingerprints, Role};
    use crate::media::ice::binding_request;

    fn fps(id: &DtlsIdentity) -> PeerFingerprints {
        let line = format!("a=fingerprint:{}", id.sdp_fingerprint());
        PeerFingerprints::from_sdp_lines([line.as_str()]).unwrap()
    }

    fn creds() -> IceCredentials {
        IceCredentials {
            ufrag: "ours".into(),
            pwd: "our-password-of-24-chars".into(),
        }
    }

    #[test]
    fn unauthenticated_stun_never_sets_the_dtls_peer() {
        let (ours, theirs) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let cfg = EndpointConfig::default().build().unwrap();
        let now = Instant::now();
        let ep = Endpoint::new(&ours, Role::Client, fps(&theirs), &cfg, now);
        let signalled = "127.0.0.1:5000".parse().unwrap();
        let mut leg = DtlsLeg::new(ep, Some(creds()), Some(signalled), 128);
        // With ICE, the ClientHello waits for a checked address (not the signalled one).
        assert!(leg.poll_transmit().is_none());
        let attacker: SocketAddr = "192.0.2.66:4000".parse().unwrap();
        for req in [
            binding_request("ours:theirs", "wrong-password", true),
            binding_request("other:theirs", "our-password-of-24-chars", true),
        ] {
            assert!(!leg.handle_stun(attacker, &req));
            assert!(
                leg.poll_transmit().is_none(),
                "unauthenticated STUN set the peer"
            );
        }
        // DTLS from an unchecked address does not reach the handshake either.
        leg.handle_dtls(
            now,
            attacker,
            &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        assert!(leg.poll_transmit().is_none());
        assert!(leg.poll_event().is_none());
        assert_eq!(leg.stats().datagrams_in, 0);
        let peer: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let req = binding_request("ours:theirs", "our-password-of-24-chars", true);
        assert!(leg.handle_stun(peer, &req));
        // The STUN answer first, then the ClientHello, both to the checked address.
        let answer = leg.poll_transmit().expect("STUN answer");
        assert_eq!(answer.destination, peer);
        assert_eq!(answer.contents[0] >> 6, 0, "a STUN message");
        let hello = leg
            .poll_transmit()
            .expect("ClientHello goes out once checked");
        assert_eq!(hello.destination, peer);
        assert_eq!(hello.contents[0], 22, "a handshake record");
        assert!(leg.poll_transmit().is_none());
    }

    #[test]
    fn a_failure_is_reported_once() {
        let (ours, theirs) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let cfg = EndpointConfig {
            handshake_timeout: std::time::Duration::from_millis(10),
            ..EndpointConfig::default()
        }
        .build()
        .unwrap();
        let now = Instant::now();
        let ep = Endpoint::new(&ours, Role::Server, fps(&theirs), &cfg, now);
        let peer: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let mut leg = DtlsLeg::new(ep, None, Some(peer), 128);
        let later = now + std::time::Duration::from_secs(1);
        leg.handle_timeout(later);
        assert!(matches!(
            leg.poll_event(),
            Some(DtlsEvent::Failed(FailReason::Timeout))
        ));
        assert!(leg.poll_event().is_none());
        // A failed re-key leaves the leg in place: later timers and datagrams (a peer's stray
        // flight) must not report the failure again.
        leg.handle_timeout(later);
        let hello = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        leg.handle_dtls(later, peer, &hello);
        assert!(leg.poll_event().is_none());
        assert_eq!(leg.poll_timeout(), None);
        assert_eq!(leg.info().phase, DtlsPhase::Failed);
    }

    #[test]
    fn handshake_keys_the_leg_in_the_right_direction() {
        let (ours, theirs) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let cfg = EndpointConfig::default().build().unwrap();
        let now = Instant::now();
        let peer_addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let ep = Endpoint::new(&ours, Role::Client, fps(&theirs), &cfg, now);
        let mut leg = DtlsLeg::new(ep, None, Some(peer_addr), 128);
        let mut server = Endpoint::new(&theirs, Role::Server, fps(&ours), &cfg, now);
        let mut keyed = None;
        for _ in 0..20 {
            while let Some(t) = leg.poll_transmit() {
                assert_eq!(t.destination, peer_addr);
                server.handle_datagram(now, t.contents);
            }
            while let Some(d) = server.poll_transmit() {
                leg.handle_dtls(now, peer_addr, &d);
                while let Some(e) = leg.poll_event() {
                    match e {
                        DtlsEvent::Keyed {
                            inbound,
                            outbound,
                            peer,
                        } => keyed = Some((inbound, outbound, peer)),
                        DtlsEvent::Failed(r) => panic!("{r}"),
                    }
                }
            }
            if keyed.is_some() {
                break;
            }
        }
        let (mut inbound, mut outbound, peer) = keyed.expect("handshake completes");
        assert_eq!(peer, peer_addr);
        assert!(!leg.handshaking());
        let info = leg.info();
        assert_eq!(info.phase, DtlsPhase::Connected);
        assert_eq!(info.peer_hash, Some(crate::dtls::HashFunction::Sha256));
        assert!(info.profile.is_some());
        // A re-key takes over the report of the association it replaces.
        let ep = Endpoint::new(&ours, Role::Client, fps(&theirs), &cfg, now);
        let mut next = DtlsLeg::new(ep, None, Some(peer_addr), 128);
        assert_eq!(next.info().phase, DtlsPhase::Handshaking);
        next.succeed(&leg);
        assert_eq!(next.info().phase, DtlsPhase::Rekeying);
        assert_eq!(next.info().profile, info.profile);
        next.note_rekey_failure();
        assert_eq!(next.info().rekey_failures, 1);
        // What the peer protects with its local key, our inbound context opens; what we
        // protect, the peer opens with its remote key.
        let keys = server.take_srtp_keys().unwrap();
        let cfg = ContextConfig { replay_window: 128 };
        let p = keys.profile();
        let mut peer_tx = SrtpContext::new(p, keys.local_key(), keys.local_salt(), cfg).unwrap();
        let mut peer_rx = SrtpContext::new(p, keys.remote_key(), keys.remote_salt(), cfg).unwrap();
        let rtp = [0x80u8, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 9, 9, 9, 9];
        let mut buf = [0u8; 64];
        buf[..16].copy_from_slice(&rtp);
        let n = peer_tx.protect_rtp(&mut buf, 16).unwrap();
        assert_eq!(inbound.unprotect_rtp(&mut buf[..n]).unwrap(), 16);
        assert_eq!(&buf[..16], &rtp);
        let n = outbound.protect_rtp(&mut buf, 16).unwrap();
        assert_eq!(peer_rx.unprotect_rtp(&mut buf[..n]).unwrap(), 16);
        assert_eq!(&buf[..16], &rtp);
    }
}
