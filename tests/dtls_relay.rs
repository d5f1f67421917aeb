//! DTLS-SRTP legs through the ng control protocol, end to end against the real daemon: aiortc
//! (PyPI; its own DTLS, SRTP and ICE) as a WebRTC peer on the offering leg, a libsrtp SDES peer
//! (PyPI pylibsrtp) on the other, tone both ways; a wrong fingerprint ends the call with nothing
//! relayed; a silent peer ends it at the handshake timeout; ports are released every time.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use srtp_edge::control::bencode::{DictBuilder, Value};

/// Each test its own 20-port range, so parallel tests can check that their ports are released.
fn media(lo: u16) -> String {
    format!(
        "[media]\nport_min = {lo}\nport_max = {}\nworkers = 2\ndtls_handshake_timeout_secs = 3\n",
        lo + 19
    )
}

fn dtls_call(ng: SocketAddr, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/ng/dtls_call.py"
        ))
        .args(["--ng", &ng.to_string()])
        .args(extra)
        .output()
        .expect("python3 (interop/install-peers.sh installs aiortc and pylibsrtp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).unwrap_or_else(|_| {
        panic!(
            "dtls_call.py printed no JSON:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ng_list_len(ng: SocketAddr) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut msg = b"l1 ".to_vec();
    DictBuilder::new()
        .str("command", "list")
        .build()
        .encode_into(&mut msg);
    sock.send_to(&msg, ng).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).unwrap();
    let sp = buf.iter().position(|&c| c == b' ').unwrap();
    let v = Value::decode(&buf[sp + 1..n]).unwrap();
    v.get("calls").and_then(Value::as_list).unwrap().len()
}

/// Every media port of the configured range can be bound again: the calls' sockets are closed.
fn ports_free(lo: u16) -> bool {
    (lo..lo + 20).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

fn wait_ports_free(lo: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if ports_free(lo) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn metric(d: &Daemon, name: &str) -> f64 {
    let roots = common::roots_from(&d.state.join("ca.pem"));
    let cfg = common::client(roots, &[&rustls::version::TLS13]);
    let mut s = common::connect(cfg, d.admin).unwrap();
    let (status, _, body) =
        common::http_get(&mut s, "/metrics", Some(&format!("Bearer {}", d.token())));
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn aiortc_dtls_leg_bridges_to_an_sdes_leg_with_tone_both_ways() {
    let d = Daemon::start(&media(40000));
    let ng = d.ng.unwrap();
    for suite in ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"] {
        let r = dtls_call(ng, &["--suite-b", suite]);
        eprintln!("{suite}: {r}");
        assert_eq!(r["ok"], true, "{suite}: {r}\n{}", d.log_text());
        assert_eq!(r["state"][0], "connected", "{r}");
        assert_eq!(r["answer_to_a_has_crypto"], false, "{r}");
        assert_eq!(r["offer_to_b_has_fingerprint"], false, "{r}");
        let answer: Vec<&str> = r["answer_to_a"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(
            answer
                .iter()
                .any(|l| l.starts_with("m=audio ") && l.contains("UDP/TLS/RTP/SAVPF")),
            "{answer:?}"
        );
        assert!(answer.contains(&"a=setup:active"), "{answer:?}");
        assert!(answer.contains(&"a=ice-lite"), "{answer:?}");
        assert!(answer
            .iter()
            .any(|l| l.starts_with("a=fingerprint:sha-256 ")));
        assert!(answer.iter().any(|l| l.contains("typ host")));
        assert!(r["got_a"]["tone"].as_u64().unwrap() >= 25, "{r}");
        assert!(r["got_b"]["tone"].as_u64().unwrap() >= 25, "{r}");
        assert_eq!(r["delete"], "ok");
    }
    assert_eq!(ng_list_len(ng), 0);
    assert!(wait_ports_free(40000), "ports released");
    assert!(metric(&d, "srtp_edge_dtls_handshakes_total{result=\"ok\"}") >= 2.0);
}

#[test]
fn wrong_fingerprint_ends_the_call_with_nothing_relayed() {
    let d = Daemon::start(&media(40100));
    let ng = d.ng.unwrap();
    let r = dtls_call(ng, &["--wrong-fingerprint"]);
    eprintln!("wrong fingerprint: {r}");
    assert_eq!(r["ok"], true, "{r}\n{}", d.log_text());
    assert_eq!(r["got_b"]["packets"], 0, "{r}");
    assert_eq!(r["got_a"]["frames"], 0, "{r}");
    assert_ne!(r["state"][0], "connected", "{r}");
    assert_ne!(r["query"], "ok", "call gone: {r}");
    assert_eq!(ng_list_len(ng), 0);
    assert!(wait_ports_free(40100), "ports released");
    assert_eq!(
        metric(
            &d,
            "srtp_edge_dtls_handshakes_total{result=\"fingerprint_mismatch\"}"
        ),
        1.0
    );
}

#[test]
fn silent_dtls_peer_ends_the_call_at_the_handshake_timeout() {
    let d = Daemon::start(&media(40200));
    let ng = d.ng.unwrap();
    let t0 = Instant::now();
    let r = dtls_call(ng, &["--silent", "--expect-gone-within", "5"]);
    eprintln!("silent peer: {r}");
    assert_eq!(r["ok"], true, "{r}\n{}", d.log_text());
    let gone = r["gone_after_secs"].as_f64().unwrap();
    assert!(gone >= 2.5, "not before the 3 s timeout: {gone}");
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert_eq!(ng_list_len(ng), 0);
    assert!(wait_ports_free(40200), "ports released");
    assert_eq!(
        metric(&d, "srtp_edge_dtls_handshakes_total{result=\"timeout\"}"),
        1.0
    );
}

#[test]
fn sdes_offerer_bridges_to_an_aiortc_leg_offered_dtls_by_ng_flag() {
    let d = Daemon::start(&media(40300));
    let ng = d.ng.unwrap();
    let r = dtls_call(ng, &["--sdes-dtls", "--suite-a", "AEAD_AES_128_GCM"]);
    eprintln!("sdes -> dtls: {r}");
    assert_eq!(r["ok"], true, "{r}\n{}", d.log_text());
    assert_eq!(r["state"][0], "connected", "{r}");
    // B was offered DTLS-SRTP (no SDES key), A was answered with SDES (no fingerprint).
    assert_eq!(r["offer_to_b_has_fingerprint"], true, "{r}");
    assert_eq!(r["offer_to_b_has_crypto"], false, "{r}");
    assert_eq!(r["answer_to_a_has_fingerprint"], false, "{r}");
    let offer: Vec<&str> = r["offer_to_b"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(offer.contains(&"a=setup:actpass"), "{offer:?}");
    assert!(offer.contains(&"a=ice-lite"), "{offer:?}");
    assert!(
        offer.iter().any(|l| l.contains("UDP/TLS/RTP/SAVP")),
        "{offer:?}"
    );
    assert!(r["got_a"]["tone"].as_u64().unwrap() >= 25, "{r}");
    assert!(r["got_b"]["tone"].as_u64().unwrap() >= 25, "{r}");
    assert_eq!(r["delete"], "ok");
    assert!(wait_ports_free(40300), "ports released");
}

#[test]
fn aiortc_on_both_legs_runs_two_dtls_associations() {
    let d = Daemon::start(&media(40400));
    let ng = d.ng.unwrap();
    let r = dtls_call(ng, &["--dtls-dtls"]);
    eprintln!("dtls -> dtls: {r}");
    assert_eq!(r["ok"], true, "{r}\n{}", d.log_text());
    assert_eq!(
        r["state"],
        serde_json::json!(["connected", "connected"]),
        "{r}"
    );
    assert!(r["got_a"]["tone"].as_u64().unwrap() >= 25, "{r}");
    assert!(r["got_b"]["tone"].as_u64().unwrap() >= 25, "{r}");
    assert_eq!(r["delete"], "ok");
    assert!(wait_ports_free(40400), "ports released");
    assert!(metric(&d, "srtp_edge_dtls_handshakes_total{result=\"ok\"}") >= 2.0);
}

#[test]
fn reoffer_keeps_the_association_and_a_new_certificate_rekeys_the_leg() {
    let d = Daemon::start(&media(40500));
    let ng = d.ng.unwrap();
    let r = dtls_call(ng, &["--reoffer", "--secs", "1.5"]);
    eprintln!("re-offer: {r}");
    assert_eq!(r["ok"], true, "{r}\n{}", d.log_text());
    assert_eq!(r["reoffer_same_tls_id"], true, "{r}");
    assert_eq!(r["rekey_new_tls_id"], true, "{r}");
    assert_eq!(r["state_a2"], "connected", "{r}");
    assert!(r["after_reoffer"]["a"].as_u64().unwrap() >= 25, "{r}");
    assert!(r["after_reoffer"]["b"].as_u64().unwrap() >= 25, "{r}");
    assert!(r["after_rekey"]["a2"].as_u64().unwrap() >= 25, "{r}");
    assert!(r["after_rekey"]["b"].as_u64().unwrap() >= 25, "{r}");
    // Two handshakes: the first association and the re-key; the plain re-offer made none.
    assert_eq!(
        metric(&d, "srtp_edge_dtls_handshakes_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(r["delete"], "ok");
    assert!(wait_ports_free(40500), "ports released");
}

#[test]
fn openssl_s_client_keys_a_leg_and_its_exported_keys_carry_media() {
    let d = Daemon::start(&media(40600));
    let ng = d.ng.unwrap();
    for profile in [
        "SRTP_AEAD_AES_128_GCM",
        "SRTP_AES128_CM_SHA1_80",
        "SRTP_AEAD_AES_256_GCM",
    ] {
        let out = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/interop/ng/dtls_openssl_call.py"
            ))
            .args(["--ng", &ng.to_string(), "--profile", profile])
            .output()
            .expect("python3 with pylibsrtp, and openssl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let r: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
            .unwrap_or_else(|_| panic!("no JSON: {stdout}"));
        eprintln!("openssl {profile}: {r}");
        assert_eq!(r["ok"], true, "{profile}: {r}\n{}", d.log_text());
        assert_eq!(r["openssl_profile"], profile, "{r}");
        assert_eq!(r["answer_setup"][0], "a=setup:passive", "{r}");
        assert_eq!(r["got"]["bad"], 0, "{r}");
        assert_eq!(r["delete"], "ok");
    }
    assert!(wait_ports_free(40600), "ports released");
}
