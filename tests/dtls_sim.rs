//! DTLS-SRTP handshakes of a media leg on a virtual clock, over a lossy, reordering datagram
//! network, replayable from a seed: our leg ([`DtlsLeg`], driven as the media worker drives it)
//! against a peer's DTLS stack (an [`Endpoint`], as a SIP user agent's libssl would run), with
//! retransmission, backoff and the give-up deadline. OpenSSL's retransmission timer follows
//! the virtual clock, so a run with ten seconds of timeouts takes milliseconds.
//!
//! A failing seed replays alone with `SIM_SEED=<seed>`; the panic message names the seed and
//! carries the trace of every datagram and timer. What the seed fixes: which datagrams are lost,
//! every latency (so the order of arrivals), and so every timer; OpenSSL draws its handshake
//! randoms and keys itself, which changes bytes but not the conversation.
//!
//! The pieces ([`Wire`], [`LegSim`]) are meant to join the simulated-time call driver (SIP +
//! calls core) as its DTLS legs: a leg is one more clocked component with a datagram network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srtp_edge::dtls::{
    DtlsConfig, DtlsIdentity, Endpoint, EndpointConfig, EndpointEvent, FailReason,
    PeerFingerprints, Role, State,
};
use srtp_edge::media::dtls_leg::{DtlsEvent, DtlsLeg};
use srtp_edge::media::ice::{binding_request, IceCredentials};
use srtp_edge::rand::{Random, SeededRandom};
use srtp_edge::srtp::{ContextConfig, SrtpContext};

/// The seeds a test runs with: `SIM_SEED` alone when set (replay), else `0..n`.
fn seeds(n: u64) -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (0..n).collect(),
    }
}

/// A datagram network on the virtual clock: each datagram is lost with a probability, or
/// arrives after a latency drawn in `[min, max]` (so datagrams may overtake each other).
struct Wire {
    queue: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    latency: (Duration, Duration),
    loss_per_mille: u64,
}

impl Wire {
    fn new(loss_per_mille: u64) -> Wire {
        Wire {
            queue: BTreeMap::new(),
            seq: 0,
            latency: (Duration::from_millis(5), Duration::from_millis(60)),
            loss_per_mille,
        }
    }

    /// Puts a datagram on the wire at `now`; false if it is lost.
    fn send(
        &mut self,
        rng: &mut SeededRandom,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        if rng.next_u64() % 1000 < self.loss_per_mille {
            return false;
        }
        let (lo, hi) = self.latency;
        let spread = (hi - lo).as_micros() as u64 + 1;
        let at = now + lo + Duration::from_micros(rng.next_u64() % spread);
        self.seq += 1;
        self.queue
            .insert((at, self.seq), (from, to, bytes.to_vec()));
        true
    }

    fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let e = self.queue.first_entry()?;
        (e.key().0 <= now).then(|| e.remove())
    }
}

/// What happened, for the replay check and for a failing run's message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Trace {
    /// A datagram left (`lost`: the wire dropped it). Its length is left out: OpenSSL's
    /// signatures vary by a byte or two between runs.
    Sent {
        at: Duration,
        from: SocketAddr,
        stun: bool,
        lost: bool,
    },
    /// Our leg's timer fired.
    LegTimer(Duration),
    /// The peer's timer fired.
    PeerTimer(Duration),
    /// Our leg reported an outcome.
    Leg(Duration, String),
}

/// The peer's ICE agent: a Binding request with USE-CANDIDATE until one is answered, every
/// `STUN_EVERY` (a lost check or answer is retried).
const STUN_EVERY: Duration = Duration::from_millis(500);

/// Our DTLS leg and a peer on a lossy wire.
struct LegSim {
    seed: u64,
    rng: SeededRandom,
    t0: Instant,
    now: Instant,
    wire: Wire,
    ours: SocketAddr,
    theirs: SocketAddr,
    leg: DtlsLeg,
    peer: Endpoint,
    /// The peer's ICE password for our credentials, while it still checks.
    ice: Option<(String, Instant)>,
    keyed: Option<(Box<SrtpContext>, Box<SrtpContext>, SocketAddr)>,
    failed: Option<FailReason>,
    trace: Vec<Trace>,
}

impl LegSim {
    /// Our leg in `role` (the peer in the other one); with `ice`, the peer must pass a STUN
    /// check before DTLS flows.
    fn new(seed: u64, role: Role, loss_per_mille: u64, ice: bool, cfg: &DtlsConfig) -> LegSim {
        let (ours_id, theirs_id) = identities();
        let t0 = Instant::now();
        let ours: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let theirs: SocketAddr = "10.0.0.2:5004".parse().unwrap();
        let peer_role = match role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        let ep = Endpoint::new(ours_id, role, trust(theirs_id), cfg, t0);
        let creds = ice.then(|| IceCredentials {
            ufrag: "ourufrag".into(),
            pwd: "our-ice-password-24chars".into(),
        });
        let leg = DtlsLeg::new(ep, creds, Some(theirs), 128);
        let peer = Endpoint::new(theirs_id, peer_role, trust(ours_id), cfg, t0);
        LegSim {
            seed,
            rng: SeededRandom::new(seed),
            t0,
            now: t0,
            wire: Wire::new(loss_per_mille),
            ours,
            theirs,
            leg,
            peer,
            ice: ice.then(|| ("our-ice-password-24chars".to_string(), t0)),
            keyed: None,
            failed: None,
            trace: Vec::new(),
        }
    }

    fn at(&self) -> Duration {
        self.now - self.t0
    }

    fn fail(&self, what: &str) -> ! {
        let mut t = String::new();
        for e in &self.trace {
            let _ = writeln!(t, "  {e:?}");
        }
        panic!(
            "seed {} (replay with SIM_SEED={}): {what}\ntrace:\n{t}",
            self.seed, self.seed
        );
    }

    fn check(&self, cond: bool, what: &str) {
        if !cond {
            self.fail(what);
        }
    }

    /// Sends what both sides queued, and takes our leg's events.
    fn flush(&mut self) {
        while let Some(t) = self.leg.poll_transmit() {
            let stun = t.contents.first().is_some_and(|b| *b < 2);
            let (to, bytes) = (t.destination, t.contents.to_vec());
            let sent = self
                .wire
                .send(&mut self.rng, self.now, self.ours, to, &bytes);
            self.trace.push(Trace::Sent {
                at: self.now - self.t0,
                from: self.ours,
                stun,
                lost: !sent,
            });
        }
        while let Some(d) = self.peer.poll_transmit() {
            let sent = self
                .wire
                .send(&mut self.rng, self.now, self.theirs, self.ours, &d);
            self.trace.push(Trace::Sent {
                at: self.at(),
                from: self.theirs,
                stun: false,
                lost: !sent,
            });
        }
        while let Some(e) = self.leg.poll_event() {
            self.trace.push(Trace::Leg(self.at(), format!("{e:?}")));
            match e {
                DtlsEvent::Keyed {
                    inbound,
                    outbound,
                    peer,
                } => {
                    self.check(self.keyed.is_none(), "keyed twice");
                    self.keyed = Some((inbound, outbound, peer));
                }
                DtlsEvent::Failed(r) => {
                    self.check(self.failed.is_none(), "failure reported twice");
                    self.failed = Some(r);
                }
            }
        }
        while let Some(e) = self.peer.poll_event() {
            if let EndpointEvent::Failed(_) = e {
                // The peer gives up too; our leg decides on its own.
            }
        }
    }

    /// The peer's ICE agent sends a check if one is due.
    fn peer_ice(&mut self) {
        let Some((pwd, due)) = self.ice.clone() else {
            return;
        };
        if self.now < due {
            return;
        }
        let req = binding_request("ourufrag:theirufrag", &pwd, true);
        let sent = self
            .wire
            .send(&mut self.rng, self.now, self.theirs, self.ours, &req);
        self.trace.push(Trace::Sent {
            at: self.at(),
            from: self.theirs,
            stun: true,
            lost: !sent,
        });
        self.ice = Some((pwd, self.now + STUN_EVERY));
    }

    /// Runs until nothing is left to happen (both sides done, nothing in flight), or `limit`.
    fn run(&mut self, limit: Duration) {
        for _ in 0..100_000 {
            self.peer_ice();
            self.flush();
            while let Some((from, to, d)) = self.wire.pop_due(self.now) {
                if to == self.ours {
                    if d.first().is_some_and(|b| *b < 2) {
                        self.leg.handle_stun(from, &d);
                    } else {
                        self.leg.handle_dtls(self.now, from, &d);
                    }
                } else if d.first().is_some_and(|b| *b < 2) {
                    // A STUN answer: the peer's check succeeded.
                    self.ice = None;
                } else {
                    self.peer.handle_datagram(self.now, &d);
                }
                self.flush();
            }
            let ice_due = self.ice.as_ref().map(|(_, t)| *t);
            let next = [
                self.wire.next(),
                self.leg.poll_timeout(),
                self.peer.poll_timeout(),
                ice_due.filter(|_| self.leg.handshaking()),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return };
            if next - self.t0 > limit {
                return;
            }
            self.check(next >= self.now, "time went back");
            self.now = next;
            if self.leg.poll_timeout().is_some_and(|t| t <= self.now) {
                self.trace.push(Trace::LegTimer(self.at()));
                self.leg.handle_timeout(self.now);
            }
            if self.peer.poll_timeout().is_some_and(|t| t <= self.now) {
                self.trace.push(Trace::PeerTimer(self.at()));
                self.peer.handle_timeout(self.now);
            }
        }
        self.fail("did not settle");
    }

    /// Our leg's contexts against the peer's keys, both ways.
    fn assert_media_flows(&mut self) {
        let Some((inbound, outbound, latched)) = self.keyed.as_mut() else {
            self.fail("not keyed");
        };
        assert_eq!(
            *latched, self.theirs,
            "the leg latched onto the handshake peer"
        );
        let keys = self.peer.take_srtp_keys().expect("peer keys");
        let cfg = ContextConfig { replay_window: 128 };
        let p = keys.profile();
        let mut peer_tx = SrtpContext::new(p, keys.local_key(), keys.local_salt(), cfg).unwrap();
        let mut peer_rx = SrtpContext::new(p, keys.remote_key(), keys.remote_salt(), cfg).unwrap();
        let rtp = [0x80u8, 0, 0, 7, 0, 0, 0, 160, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut buf = [0u8; 64];
        buf[..16].copy_from_slice(&rtp);
        let n = peer_tx.protect_rtp(&mut buf, 16).unwrap();
        assert_eq!(inbound.unprotect_rtp(&mut buf[..n]).unwrap(), 16);
        assert_eq!(&buf[..16], &rtp);
        let n = outbound.protect_rtp(&mut buf, 16).unwrap();
        assert_eq!(peer_rx.unprotect_rtp(&mut buf[..n]).unwrap(), 16);
    }

    fn sent_by(&self, who: SocketAddr, stun: bool) -> Vec<Duration> {
        self.trace
            .iter()
            .filter_map(|e| match e {
                Trace::Sent {
                    at, from, stun: s, ..
                } if *from == who && *s == stun => Some(*at),
                _ => None,
            })
            .collect()
    }
}

/// Two identities made once (key generation is the slow part of a run).
fn identities() -> (&'static DtlsIdentity, &'static DtlsIdentity) {
    use std::sync::OnceLock;
    static IDS: OnceLock<(DtlsIdentity, DtlsIdentity)> = OnceLock::new();
    let (a, b) = IDS.get_or_init(|| {
        (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        )
    });
    (a, b)
}

fn trust(id: &DtlsIdentity) -> PeerFingerprints {
    let line = format!("a=fingerprint:{}", id.sdp_fingerprint());
    PeerFingerprints::from_sdp_lines([line.as_str()]).unwrap()
}

fn config() -> DtlsConfig {
    EndpointConfig::default().build().unwrap()
}

#[test]
fn lossy_handshakes_recover_by_retransmission_and_replay_from_their_seed() {
    let cfg = config();
    let (mut keyed, mut retransmits) = (0, 0);
    for seed in seeds(40) {
        let role = if seed % 2 == 0 {
            Role::Server
        } else {
            Role::Client
        };
        let mut sim = LegSim::new(seed, role, 300, seed % 4 < 2, &cfg);
        sim.run(Duration::from_secs(30));
        // Either keyed, or given up at the deadline: nothing else is possible on a lossy path.
        let peer_connected = sim.peer.state() == &State::Connected;
        match (&sim.keyed, &sim.failed) {
            (Some(_), None) if peer_connected => {
                keyed += 1;
                sim.assert_media_flows();
            }
            // DTLS 1.2's last flight is the server's: when all its copies are lost, the server
            // has keys and the client gives up (RFC 6347 4.2.4). Signaling ends such a call.
            (Some(_), None) => sim.check(role == Role::Server, "a client keyed alone"),
            (None, Some(FailReason::Timeout)) => {
                sim.check(!sim.leg.handshaking(), "failed yet handshaking");
                sim.check(
                    !peer_connected || role == Role::Client,
                    "a client peer keyed alone",
                );
            }
            other => sim.fail(&format!("unexpected outcome {:?}", other.1)),
        }
        sim.check(
            sim.leg.poll_timeout().is_none(),
            "a timer after the outcome",
        );
        retransmits += sim.leg.stats().retransmits;
        // The same seed plays the same conversation.
        let mut again = LegSim::new(seed, role, 300, seed % 4 < 2, &cfg);
        again.run(Duration::from_secs(30));
        if again.trace != sim.trace {
            sim.fail(&format!("replay differs:\n{:#?}", again.trace));
        }
    }
    if std::env::var("SIM_SEED").is_err() {
        // With 30 % loss most handshakes make it, through retransmissions.
        assert!(keyed >= 25, "only {keyed} of 40 keyed");
        assert!(retransmits >= 20, "only {retransmits} retransmissions");
    }
}

#[test]
fn a_silent_path_backs_off_and_gives_up_exactly_at_the_deadline() {
    let cfg = config();
    for role in [Role::Client, Role::Server] {
        let mut sim = LegSim::new(7, role, 1000, false, &cfg);
        sim.run(Duration::from_secs(60));
        assert_eq!(sim.failed, Some(FailReason::Timeout), "{role:?}");
        assert!(sim.keyed.is_none());
        let secs = |v: &[u64]| {
            v.iter()
                .map(|&s| Duration::from_secs(s))
                .collect::<Vec<_>>()
        };
        let ours = sim.sent_by(sim.ours, false);
        if role == Role::Client {
            // ClientHello at 0 s, then RFC 6347's doubling timer: 1 s, 2 s, 4 s.
            assert_eq!(ours, secs(&[0, 1, 3, 7]), "our flights");
        } else {
            // A server speaks only when spoken to.
            assert!(ours.is_empty(), "{ours:?}");
        }
        // The failure comes exactly at the 10 s deadline, once.
        let outcome: Vec<&Trace> = sim
            .trace
            .iter()
            .filter(|e| matches!(e, Trace::Leg(..)))
            .collect();
        assert_eq!(
            outcome,
            [&Trace::Leg(
                Duration::from_secs(10),
                "Failed(Timeout)".into()
            )]
        );
        assert_eq!(sim.leg.poll_timeout(), None);
        assert_eq!(sim.peer.state(), &State::Failed(FailReason::Timeout));
    }
}

#[test]
fn ice_checks_are_answered_before_dtls_flows_and_lost_checks_are_retried() {
    let cfg = config();
    let mut seen_retry = false;
    for seed in seeds(12) {
        let mut sim = LegSim::new(seed, Role::Client, 250, true, &cfg);
        sim.run(Duration::from_secs(30));
        let first_dtls = sim.sent_by(sim.ours, false).first().copied();
        let first_answer = sim.sent_by(sim.ours, true).first().copied();
        if let Some(d) = first_dtls {
            // Our ClientHello waits for the first authenticated check.
            sim.check(
                first_answer.is_some_and(|a| a <= d),
                "DTLS before any STUN answer",
            );
        }
        seen_retry |= sim.sent_by(sim.theirs, true).len() > 1;
        if sim.keyed.is_some() && sim.peer.state() == &State::Connected {
            sim.assert_media_flows();
        }
    }
    if std::env::var("SIM_SEED").is_err() {
        assert!(seen_retry, "no run lost a check");
    }
}
