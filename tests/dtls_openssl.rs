//! The DTLS-SRTP `Endpoint` against a real peer: `openssl s_server` / `s_client -dtls1_2
//! -use_srtp` over loopback UDP. The test does the socket IO around the sans-IO endpoint and
//! checks that the negotiated profile and the exported keys (`-keymatexport
//! EXTRACTOR-dtls_srtp`) are the ones openssl computed, and that the fingerprint check holds.

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use srtp_edge::dtls::{
    DtlsIdentity, Endpoint, EndpointConfig, FailReason, PeerFingerprints, Role, SrtpKeys, State,
    EXPORTER_LABEL,
};
use srtp_edge::srtp::Profile;

/// Longest exporter output of any profile (AEAD_AES_256_GCM: 2 × (32 + 12)). The TLS 1.2
/// exporter is a PRF stream, so a shorter export is a prefix of this one.
const EXPORT_LEN: usize = 88;

/// A peer certificate made by openssl itself, with openssl's own fingerprint of it.
struct OpensslCert {
    dir: tempfile::TempDir,
}

impl OpensslCert {
    fn new() -> OpensslCert {
        Self::with_key(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
    }

    fn rsa() -> OpensslCert {
        Self::with_key(&["-newkey", "rsa:2048"])
    }

    fn with_key(newkey: &[&str]) -> OpensslCert {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("openssl")
            .args(["req", "-x509"])
            .args(newkey)
            .args(["-nodes", "-days", "1"])
            .args(["-subj", "/CN=openssl-peer", "-keyout"])
            .arg(dir.path().join("k.pem"))
            .arg("-out")
            .arg(dir.path().join("c.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl must be installed for this test (apt-get install openssl)");
        assert!(ok.success());
        OpensslCert { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("c.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("k.pem")
    }

    /// `a=fingerprint` built from `openssl x509 -fingerprint` (`sha256 Fingerprint=AB:...`).
    fn sdp_fingerprints(&self, hash: &str) -> PeerFingerprints {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", &format!("-{hash}"), "-in"])
            .arg(self.cert())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text.trim().split('=').nth(1).expect("fingerprint output");
        let name = match hash {
            "sha1" => "sha-1",
            "sha256" => "sha-256",
            "sha384" => "sha-384",
            "sha512" => "sha-512",
            other => panic!("{other}"),
        };
        // Lower-case on purpose: the comparison must be case-insensitive.
        let line = format!("a=fingerprint:{name} {}", hex.to_lowercase());
        PeerFingerprints::from_sdp_lines([line.as_str()]).unwrap()
    }
}

/// An openssl process; killed by its own handle if still running when dropped.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Peer {
    fn spawn(args: &[String]) -> Peer {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl must be installed for this test");
        let stdin = child.stdin.take();
        Peer { child, stdin }
    }

    /// Closes openssl's stdin (it then shuts the session down and exits) and returns its
    /// stdout and stderr.
    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out).unwrap();
        }
        if let Some(mut s) = self.child.stderr.take() {
            s.read_to_string(&mut out).unwrap();
        }
        out
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the endpoint on a real socket until it is connected or failed (or 15 s pass). A client
/// sends to `peer`; a server learns the peer from the first datagram.
fn drive(ep: &mut Endpoint, sock: &UdpSocket, mut peer: Option<SocketAddr>) {
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let limit = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 65536];
    while *ep.state() == State::Handshaking {
        assert!(Instant::now() < limit, "handshake did not settle");
        if let Some(to) = peer {
            while let Some(d) = ep.poll_transmit() {
                // Before openssl listens the send may be refused; the endpoint retransmits.
                let _ = sock.send_to(&d, to);
            }
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            peer.get_or_insert(from);
            ep.handle_datagram(Instant::now(), &buf[..n]);
        }
        if ep.poll_timeout().is_some_and(|t| Instant::now() >= t) {
            ep.handle_timeout(Instant::now());
        }
    }
    // Flush what the last step produced (a final flight or a fatal alert).
    if let Some(to) = peer {
        while let Some(d) = ep.poll_transmit() {
            let _ = sock.send_to(&d, to);
        }
    }
}

fn endpoint(id: &DtlsIdentity, role: Role, trust: PeerFingerprints) -> Endpoint {
    let cfg = EndpointConfig {
        // Retransmit quickly in case openssl was not listening yet.
        initial_rto: Duration::from_millis(200),
        ..EndpointConfig::default()
    }
    .build()
    .unwrap();
    Endpoint::new(id, role, trust, &cfg, Instant::now())
}

fn openssl_profile_name(p: Profile) -> &'static str {
    match p {
        Profile::AesCm128HmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
        Profile::AesCm128HmacSha1_32 => "SRTP_AES128_CM_SHA1_32",
        Profile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
        Profile::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
        other => panic!("{other} has no DTLS-SRTP name"),
    }
}

fn common_args(srtp: &str, cert: &OpensslCert) -> Vec<String> {
    let mut v: Vec<String> = [
        "-dtls1_2",
        "-use_srtp",
        srtp,
        "-keymatexport",
        EXPORTER_LABEL,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(["-keymatexportlen".into(), EXPORT_LEN.to_string()]);
    v.extend([
        "-cert".into(),
        path(&cert.cert()),
        "-key".into(),
        path(&cert.key()),
    ]);
    v
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// What openssl printed: the negotiated profile and the exported keying material.
fn parse_openssl(out: &str) -> (Profile, Vec<u8>) {
    let name = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("SRTP Extension negotiated, profile="))
        .unwrap_or_else(|| panic!("no SRTP profile in openssl output:\n{out}"));
    let profile = [
        Profile::AesCm128HmacSha1_80,
        Profile::AesCm128HmacSha1_32,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ]
    .into_iter()
    .find(|p| openssl_profile_name(*p) == name.trim())
    .unwrap_or_else(|| panic!("unknown profile {name}"));
    let hex = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Keying material: "))
        .unwrap_or_else(|| panic!("no keying material in openssl output:\n{out}"));
    (profile, hex::decode(hex.trim()).unwrap())
}

/// Rebuilds the RFC 5764 exporter layout (client key, server key, client salt, server salt)
/// from our role-split keys.
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

/// openssl `s_server`, our endpoint as DTLS client. Returns our endpoint and openssl's output.
fn against_s_server(
    srtp: &str,
    trust: impl FnOnce(&OpensslCert) -> PeerFingerprints,
) -> (Endpoint, DtlsIdentity, String) {
    against_s_server_with(OpensslCert::new(), srtp, trust)
}

fn against_s_server_with(
    cert: OpensslCert,
    srtp: &str,
    trust: impl FnOnce(&OpensslCert) -> PeerFingerprints,
) -> (Endpoint, DtlsIdentity, String) {
    let port = free_udp_port();
    let mut args: Vec<String> = vec![
        "s_server".into(),
        "-accept".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(["-naccept".into(), "1".into(), "-verify".into(), "1".into()]);
    args.extend(common_args(srtp, &cert));
    let peer = Peer::spawn(&args);
    let id = DtlsIdentity::generate().unwrap();
    let mut ep = endpoint(&id, Role::Client, trust(&cert));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    drive(
        &mut ep,
        &sock,
        Some(SocketAddr::from(([127, 0, 0, 1], port))),
    );
    // Give openssl a moment to process our last flight before it is told to stop.
    std::thread::sleep(Duration::from_millis(100));
    let out = peer.finish();
    (ep, id, out)
}

/// openssl `s_client`, our endpoint as DTLS server.
fn against_s_client(
    srtp: &str,
    trust: impl FnOnce(&OpensslCert) -> PeerFingerprints,
) -> (Endpoint, String) {
    against_s_client_with(OpensslCert::new(), srtp, trust)
}

fn against_s_client_with(
    cert: OpensslCert,
    srtp: &str,
    trust: impl FnOnce(&OpensslCert) -> PeerFingerprints,
) -> (Endpoint, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut args: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(common_args(srtp, &cert));
    let id = DtlsIdentity::generate().unwrap();
    let mut ep = endpoint(&id, Role::Server, trust(&cert));
    let peer = Peer::spawn(&args);
    drive(&mut ep, &sock, None);
    std::thread::sleep(Duration::from_millis(100));
    let out = peer.finish();
    (ep, out)
}

fn assert_keys_equal_openssl(ep: &Endpoint, out: &str, expected: Option<Profile>) {
    assert_eq!(ep.state(), &State::Connected, "openssl said:\n{out}");
    let (profile, material) = parse_openssl(out);
    if let Some(p) = expected {
        assert_eq!(profile, p);
    }
    let keys = ep.srtp_keys().unwrap();
    assert_eq!(
        keys.profile(),
        profile,
        "both sides negotiated the same profile"
    );
    let ours = rfc5764_layout(keys);
    assert_eq!(ours.len(), SrtpKeys::exported_len(profile));
    assert_eq!(
        ours,
        material[..ours.len()],
        "exported keys differ from openssl's"
    );
}

#[test]
fn client_against_s_server_each_profile() {
    for p in [
        Profile::AesCm128HmacSha1_80,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ] {
        let (ep, id, out) =
            against_s_server(openssl_profile_name(p), |c| c.sdp_fingerprints("sha256"));
        assert_keys_equal_openssl(&ep, &out, Some(p));
        // openssl received our certificate (it asked with -verify): the one we announce.
        let pem = out
            .split("Client certificate\n")
            .nth(1)
            .and_then(|s| s.split("-----END CERTIFICATE-----").next())
            .expect("openssl printed our certificate");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(der, id.certificate_der());
    }
}

#[test]
fn client_against_s_server_profile_list() {
    let (ep, _, out) = against_s_server("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM", |c| {
        c.sdp_fingerprints("sha512")
    });
    assert_keys_equal_openssl(&ep, &out, None);
}

#[test]
fn server_against_s_client() {
    let (ep, out) = against_s_client("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM", |c| {
        c.sdp_fingerprints("sha1")
    });
    assert_keys_equal_openssl(&ep, &out, None);
    for p in [Profile::AesCm128HmacSha1_80, Profile::AeadAes256Gcm] {
        let (ep, out) = against_s_client(openssl_profile_name(p), |c| c.sdp_fingerprints("sha384"));
        assert_keys_equal_openssl(&ep, &out, Some(p));
    }
}

#[test]
fn client_rejects_s_server_with_wrong_fingerprint() {
    let other = OpensslCert::new();
    let (ep, _, out) = against_s_server("SRTP_AES128_CM_SHA1_80", |_| {
        other.sdp_fingerprints("sha256")
    });
    assert_eq!(ep.state(), &State::Failed(FailReason::FingerprintMismatch));
    assert!(ep.srtp_keys().is_none());
    assert!(
        !out.contains("Keying material: "),
        "openssl completed:\n{out}"
    );
    assert!(
        out.contains("alert bad certificate") || out.contains("alert number 42"),
        "openssl saw our bad_certificate alert:\n{out}"
    );
}

#[test]
fn server_rejects_s_client_with_wrong_fingerprint() {
    let other = OpensslCert::new();
    let (ep, out) = against_s_client("SRTP_AEAD_AES_128_GCM", |_| {
        other.sdp_fingerprints("sha256")
    });
    assert_eq!(ep.state(), &State::Failed(FailReason::FingerprintMismatch));
    assert!(ep.srtp_keys().is_none());
    assert!(
        out.contains("alert bad certificate") || out.contains("alert number 42"),
        "openssl saw our bad_certificate alert:\n{out}"
    );
}

#[test]
fn aes128_cm_sha1_32_in_both_roles() {
    // SRTP_AES128_CM_SHA1_32 (4-byte RTP tag, RFC 5764) is negotiated when it is all the peer
    // offers, and keyed with openssl's exporter output.
    let p = Profile::AesCm128HmacSha1_32;
    let (ep, _, out) = against_s_server(openssl_profile_name(p), |c| c.sdp_fingerprints("sha256"));
    assert_keys_equal_openssl(&ep, &out, Some(p));
    let (ep, out) = against_s_client(openssl_profile_name(p), |c| c.sdp_fingerprints("sha256"));
    assert_keys_equal_openssl(&ep, &out, Some(p));
}

#[test]
fn rsa_peer_certificate_in_both_roles() {
    // SIP endpoints (baresip 1.0, FreeSWITCH, Asterisk) sign DTLS with self-signed RSA
    // certificates: as client we take the ECDHE-RSA suite they serve with, as server their RSA
    // client certificate; either way the fingerprint is checked and the keys are openssl's.
    let (ep, _, out) = against_s_server_with(OpensslCert::rsa(), "SRTP_AES128_CM_SHA1_80", |c| {
        c.sdp_fingerprints("sha256")
    });
    assert_keys_equal_openssl(&ep, &out, Some(Profile::AesCm128HmacSha1_80));
    assert!(out.contains("ECDHE-RSA-"), "openssl served RSA:\n{out}");
    let (ep, out) = against_s_client_with(OpensslCert::rsa(), "SRTP_AEAD_AES_128_GCM", |c| {
        c.sdp_fingerprints("sha1")
    });
    assert_keys_equal_openssl(&ep, &out, Some(Profile::AeadAes128Gcm));
    // And a wrong fingerprint still refuses the RSA peer with bad_certificate.
    let other = OpensslCert::rsa();
    let (ep, _, out) = against_s_server_with(OpensslCert::rsa(), "SRTP_AES128_CM_SHA1_80", |_| {
        other.sdp_fingerprints("sha256")
    });
    assert_eq!(ep.state(), &State::Failed(FailReason::FingerprintMismatch));
    assert!(
        out.contains("alert bad certificate") || out.contains("alert number 42"),
        "openssl saw our bad_certificate alert:\n{out}"
    );
}
