//! Handshakes of an [`Endpoint`] against a plain OpenSSL DTLS peer (no srtp-edge code) over the
//! same datagram pipe: RSA and EC peers, refused keys, versions and profiles, and the timers.

use super::*;
use crate::dtls::pipe::DatagramPipe;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::ssl::SslStream;
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
fn timer_doubles_from_the_configured_start_on_the_callers_clock() {
    let cfg = EndpointConfig {
        initial_rto: Duration::from_millis(250),
        ..EndpointConfig::default()
    }
    .build()
    .unwrap();
    let id = DtlsIdentity::generate().unwrap();
    let t0 = Instant::now();
    let mut ep = Endpoint::new(&id, Role::Client, PeerFingerprints::new(), &cfg, t0);
    assert!(ep.poll_transmit().is_some(), "ClientHello");
    assert!(
        ep.timer_follows_clock(),
        "OpenSSL {}: its DTLS timer stays on the wall clock",
        openssl::version::version()
    );
    // The timer runs on the clock handed in, not the wall clock: no time passes here.
    let mut at = t0;
    for rto_ms in [250, 500, 1000, 2000, 4000] {
        let next = ep.poll_timeout().unwrap();
        assert_eq!(next - at, Duration::from_millis(rto_ms));
        // Early: nothing happens.
        ep.handle_timeout(next - Duration::from_millis(1));
        assert!(ep.poll_transmit().is_none());
        ep.handle_timeout(next);
        assert!(ep.poll_transmit().is_some(), "retransmitted at {rto_ms} ms");
        at = next;
    }
    assert_eq!(ep.stats().retransmits, 5);
    // 7750 ms so far; the next retransmission (8 s later) is past the 10 s deadline.
    assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    ep.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        ep.poll_event(),
        Some(EndpointEvent::Failed(FailReason::Timeout))
    );
    assert_eq!(ep.poll_event(), None);
}
