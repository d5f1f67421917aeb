//! The admin HTTPS listener of the real daemon, probed with real TLS clients (rustls and
//! openssl): the TLS policy (versions, suites, groups), the bearer token, hostile input, and
//! SIGHUP certificate reload.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

fn ca(d: &Daemon) -> std::path::PathBuf {
    d.state.join("ca.pem")
}

#[test]
fn tls13_with_post_quantum_group_and_token_check() {
    let mut d = Daemon::start("");
    let cfg = client(roots_from(&ca(&d)), &[&rustls::version::TLS13]);
    let mut s = connect(cfg, d.admin).expect("TLS 1.3 handshake");
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        s.conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519MLKEM768)
    );
    let (status, head, body) = http_get(&mut s, "/healthz", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(head
        .to_ascii_lowercase()
        .contains("strict-transport-security: max-age=31536000"));

    // Same connection (keep-alive): metrics need the token; a wrong one leaks nothing.
    let (status, _, body) = http_get(&mut s, "/metrics", None);
    assert_eq!((status, body.as_str()), (401, ""));
    let (status, _, body) = http_get(&mut s, "/metrics", Some("Bearer not-the-token-at-all"));
    assert_eq!((status, body.as_str()), (401, ""));
    let (status, _, body) = http_get(&mut s, "/posture", Some(&format!("Basic {}", d.token())));
    assert_eq!((status, body.as_str()), (401, ""));
    let auth = format!("Bearer {}", d.token());
    let (status, _, body) = http_get(&mut s, "/metrics", Some(&auth));
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "srtp_edge_tls_handshakes_total{listener=\"admin\",version=\"1.3\",result=\"ok\"}"
        ),
        "{body}"
    );
    assert!(
        body.contains("srtp_edge_admin_requests_total{path=\"/metrics\",status=\"401\"} 2"),
        "{body}"
    );
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("srtp_edge_"), "unprefixed metric: {line}");
    }
    let (status, _, body) = http_get(&mut s, "/posture", Some(&auth));
    assert_eq!(status, 200);
    assert!(
        body.contains("tls_min_version 1.3") && body.contains("plain_rtp refused"),
        "{body}"
    );
    assert!(
        !d.log_text().contains(&d.token()),
        "the token must never be logged"
    );
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn tls12_is_refused_by_default() {
    let d = Daemon::start("");
    let cfg = client(roots_from(&ca(&d)), &[&rustls::version::TLS12]);
    let Err(err) = connect(cfg, d.admin) else {
        panic!("a TLS 1.2-only client must fail");
    };
    assert!(err.to_string().to_lowercase().contains("version"), "{err}");
    // openssl as an independent client: TLS 1.2 and below fail, TLS 1.3 works.
    for flag in ["-tls1_2", "-tls1_1", "-tls1"] {
        let out = openssl_s_client(&d, &[flag]);
        assert!(
            !out.contains("Cipher is TLS") && !out.contains("Cipher is ECDHE"),
            "{flag}: {out}"
        );
    }
    let out = openssl_s_client(&d, &["-tls1_3"]);
    assert!(out.contains("TLSv1.3"), "{out}");
}

#[test]
fn tls12_when_configured_is_ecdhe_aead_only() {
    let d = Daemon::start("[tls]\nmin_version = \"1.2\"\n");
    let cfg = client(roots_from(&ca(&d)), &[&rustls::version::TLS12]);
    let s = connect(cfg, d.admin).expect("TLS 1.2 handshake when configured");
    let suite = format!("{:?}", s.conn.negotiated_cipher_suite().unwrap().suite());
    assert!(
        suite.starts_with("TLS_ECDHE_ECDSA_WITH_") && suite.contains("GCM"),
        "{suite}"
    );
    // CBC, RSA key exchange and SHA-1 suites are refused even then.
    for cipher in [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "AES128-GCM-SHA256",
    ] {
        let out = openssl_s_client(&d, &["-tls1_2", "-cipher", cipher]);
        assert!(
            out.contains("Cipher is (NONE)") || out.contains("alert"),
            "{cipher}: {out}"
        );
    }
    let out = openssl_s_client(&d, &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"]);
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"),
        "{out}"
    );
}

fn openssl_s_client(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &d.admin.to_string(), "-CAfile"])
        .arg(ca(d))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by the test setup");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn garbage_and_oversized_headers_close_only_that_connection() {
    let d = Daemon::start("");
    // Non-TLS garbage: the connection is closed.
    let mut g = TcpStream::connect(d.admin).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = g.read(&mut buf).unwrap_or(0);
    assert!(n < 16, "a plaintext request must not get an HTTP answer");

    // TLS, then non-HTTP garbage.
    let cfg = client(roots_from(&ca(&d)), &[&rustls::version::TLS13]);
    let mut s = connect(cfg.clone(), d.admin).unwrap();
    s.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400") || buf.is_empty());

    // Oversized header block: refused, not buffered without bound.
    let mut s = connect(cfg.clone(), d.admin).unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(big.as_bytes());
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );

    // The listener still serves others.
    let mut s = connect(cfg, d.admin).unwrap();
    assert_eq!(http_get(&mut s, "/healthz", None).0, 200);
}

#[test]
fn sighup_reloads_certificates_and_keeps_connections() {
    // Operator-provided certificate files, which the test swaps under the daemon.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    srtp_edge::tls::certs::ensure_generated(&a, &["127.0.0.1".into()]).unwrap();
    srtp_edge::tls::certs::ensure_generated(&b, &["127.0.0.1".into()]).unwrap();
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    std::fs::copy(a.join("server.pem"), &live_cert).unwrap();
    std::fs::copy(a.join("server.key"), &live_key).unwrap();
    let mut d = Daemon::start(&format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        live_cert.display().to_string(),
        live_key.display().to_string()
    ));
    let cfg_a = client(roots_from(&a.join("ca.pem")), &[&rustls::version::TLS13]);
    let cfg_b = client(roots_from(&b.join("ca.pem")), &[&rustls::version::TLS13]);
    let mut established = connect(cfg_a.clone(), d.admin).unwrap();
    assert!(
        connect(cfg_b.clone(), d.admin).is_err(),
        "CA b does not verify cert a"
    );

    std::fs::copy(b.join("server.pem"), &live_cert).unwrap();
    std::fs::copy(b.join("server.key"), &live_key).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("certificates reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(connect(cfg_b, d.admin).is_ok(), "new handshakes get cert b");
    assert!(
        connect(cfg_a, d.admin).is_err(),
        "cert a is gone for new handshakes"
    );
    assert_eq!(
        http_get(&mut established, "/healthz", None).0,
        200,
        "old connection kept"
    );

    // A broken file on reload keeps the previous certificate.
    std::fs::write(&live_cert, b"broken").unwrap();
    d.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("certificate reload failed") {
        assert!(std::time::Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(&mut established, "/healthz", None).0, 200);
    assert_eq!(d.stop(), Some(0));
}
