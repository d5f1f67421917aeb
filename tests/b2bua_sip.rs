//! The B2BUA over real TLS connections with a raw SIP client: OPTIONS keepalives, REGISTER 405,
//! requests from outside any trunk 403, plain RTP offers 488 with no port kept, an unreachable
//! route target 503 with every port released, and the RFC 4475 torture messages over the
//! listener (each gets its status; the connection survives where the RFC allows).

mod common;

use std::process::Command;
use std::time::Duration;

use common::b2bua::{certs, header, invite, sdp_offer, simple, start_edge, status_of, SipClient};

const T: Duration = Duration::from_secs(10);

#[test]
fn options_register_and_strangers() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let ca = dir.path().join("ca.pem");
    let edge = start_edge(dir.path(), "127.0.0.0/8", "");
    let mut c = SipClient::connect(edge.sip, &ca);
    let local = c.local();
    c.send(simple("OPTIONS", edge.sip, local, "opt1").as_bytes());
    let r = c.expect_status(200, T);
    assert!(header(&r, "Allow").unwrap().contains("INVITE"), "{r}");
    // RFC 5626 keepalive ping on the same connection, then another OPTIONS.
    c.send(b"\r\n\r\n");
    c.send(simple("OPTIONS", edge.sip, local, "opt2").as_bytes());
    c.expect_status(200, T);
    c.send(simple("REGISTER", edge.sip, local, "reg1").as_bytes());
    let r = c.expect_status(405, T);
    assert!(header(&r, "Allow").is_some(), "{r}");
    c.send(simple("MESSAGE", edge.sip, local, "msg1").as_bytes());
    c.expect_status(405, T);

    // Counted in the metrics.
    let cfg = common::client(common::roots_from(&ca), &[&rustls::version::TLS13]);
    let mut s = common::connect(cfg, edge.daemon.admin).unwrap();
    let auth = format!("Bearer {}", edge.daemon.token());
    let (status, _, body) = common::http_get(&mut s, "/metrics", Some(&auth));
    assert_eq!(status, 200);
    for line in [
        "srtp_edge_sip_requests_total{method=\"OPTIONS\"} 2",
        "srtp_edge_sip_requests_total{method=\"REGISTER\"} 1",
        "srtp_edge_sip_responses_total{status=\"405\"} 2",
        "srtp_edge_sip_responses_total{status=\"200\"} 2",
    ] {
        assert!(body.contains(line), "{line} missing:\n{body}");
    }
    assert!(
        body.contains(
            "srtp_edge_tls_handshakes_total{listener=\"sip\",version=\"1.3\",result=\"ok\"}"
        ),
        "{body}"
    );

    // The same requests from a source outside every trunk.
    let dir2 = tempfile::tempdir().unwrap();
    certs(dir2.path());
    let closed = start_edge(dir2.path(), "10.0.0.0/8", "");
    let mut c = SipClient::connect(closed.sip, &dir2.path().join("ca.pem"));
    let local = c.local();
    c.send(simple("OPTIONS", closed.sip, local, "opt3").as_bytes());
    c.expect_status(403, T);
    c.send(invite(closed.sip, local, "bob", "inv3", &sdp_offer(40000, true)).as_bytes());
    let r = c.expect_status(403, T);
    assert!(!r.contains("v=0"), "{r}");
    assert!(closed.wait_no_media(Duration::from_secs(2)));
}

#[test]
fn plain_offer_488_and_unreachable_target_503_release_every_port() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let ca = dir.path().join("ca.pem");
    // A target nobody listens on.
    let dead = common::free_tcp_port();
    let edge = start_edge(
        dir.path(),
        "127.0.0.0/8",
        &format!("[[routes]]\ntarget = \"sip:127.0.0.1:{dead};transport=tls\"\n"),
    );
    let mut c = SipClient::connect(edge.sip, &ca);
    let local = c.local();
    c.send(invite(edge.sip, local, "bob", "plain1", &sdp_offer(40000, false)).as_bytes());
    c.expect_status(100, T);
    let r = c.expect_status(488, T);
    assert_eq!(
        header(&r, "Warning"),
        Some("399 srtp-edge \"SRTP required\""),
        "{r}"
    );
    assert!(edge.wait_no_media(Duration::from_secs(2)));

    let t0 = std::time::Instant::now();
    c.send(invite(edge.sip, local, "bob", "dead1", &sdp_offer(40002, true)).as_bytes());
    c.expect_status(100, T);
    let r = c.expect_status(503, T);
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert!(header(&r, "To").unwrap().contains("tag="), "{r}");
    assert!(
        edge.wait_no_media(Duration::from_secs(3)),
        "{}",
        edge.media_calls()
    );
    // No route for a call: 404 (no route configured for this trunk is the same thing).
    let log = edge.daemon.log_text();
    assert!(log.contains("cannot reach the route target"), "{log}");
}

fn rfc4475(name: &str) -> Vec<u8> {
    // `../shared` beside the checkout (or `$SRTP_EDGE_SHARED`, or /work/shared).
    let beside = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"));
    let shared = std::env::var_os("SRTP_EDGE_SHARED")
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| Some(beside).filter(|p| p.exists()))
        .unwrap_or_else(|| std::path::PathBuf::from("/work/shared"));
    let p = shared.join("testdata/rfc4475").join(format!("{name}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// RFC 4475 over the TLS listener: requests get the status the parser/validator table in
/// tests/sip_rfc4475.rs gives them, responses are dropped without closing the connection.
#[test]
fn rfc4475_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let ca = dir.path().join("ca.pem");
    let edge = start_edge(dir.path(), "127.0.0.0/8", "");
    // (file, expected first non-100 status; 0 = accepted (any status that is not a rejection);
    // None = no answer and the connection still serves OPTIONS).
    let table: &[(&str, Option<u16>)] = &[
        ("wsinv", Some(0)),
        ("intmeth", Some(0)),
        ("esc01", Some(0)),
        ("escnull", Some(0)),
        ("esc02", Some(0)),
        ("lwsdisp", Some(0)),
        ("longreq", Some(0)),
        ("dblreq", Some(0)),
        ("semiuri", Some(0)),
        ("transports", Some(0)),
        ("mpart01", Some(0)),
        ("unreason", None),
        ("noreason", None),
        ("badinv01", Some(400)),
        ("ncl", Some(400)),
        ("scalar02", Some(400)),
        ("scalarlg", None),
        ("quotbal", Some(400)),
        ("ltgtruri", Some(400)),
        ("lwsruri", Some(400)),
        ("lwsstart", Some(400)),
        ("trws", Some(400)),
        ("escruri", Some(400)),
        ("baddate", Some(400)),
        ("regbadct", Some(400)),
        ("badaspec", Some(400)),
        ("badvers", Some(505)),
        ("mismatch01", Some(400)),
        ("mismatch02", Some(400)),
        ("bigcode", None),
        ("badbranch", Some(0)),
        ("insuf", Some(400)),
        ("unkscm", Some(416)),
        ("novelsc", Some(416)),
        ("unksm2", Some(400)),
        ("bext01", Some(420)),
        ("invut", Some(415)),
        ("regaut01", Some(0)),
        ("multi01", Some(400)),
        ("mcl01", Some(400)),
        ("bcast", None),
        ("zeromf", Some(0)),
        ("cparam01", Some(0)),
        ("cparam02", Some(0)),
        ("regescrt", Some(0)),
        ("sdp01", Some(406)),
        ("inv2543", Some(400)),
        // No Via: a 400 could not be routed back, so nothing is sent; the connection lives on.
        ("test", None),
    ];
    let rejections = [400, 403, 406, 415, 416, 420, 483, 505, 513];
    let mut failures = Vec::new();
    for (name, expect) in table {
        let mut c = SipClient::connect(edge.sip, &ca);
        c.send(&rfc4475(name));
        let first = loop {
            match c.recv(Duration::from_millis(1500)) {
                Some(m) if status_of(&m) == 100 => continue,
                other => break other,
            }
        };
        let got = first.as_deref().map(status_of);
        let ok = match (expect, got) {
            (None, None) => {
                // The connection is still usable.
                let local = c.local();
                c.send(simple("OPTIONS", edge.sip, local, name).as_bytes());
                c.recv(T).map(|m| status_of(&m)) == Some(200)
            }
            (Some(0), Some(s)) => !rejections.contains(&s),
            (Some(e), Some(s)) => *e == s,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    // Messages that cannot be framed on a stream: no answer while the body is incomplete.
    for name in ["clerr", "baddn"] {
        let mut c = SipClient::connect(edge.sip, &ca);
        c.send(&rfc4475(name));
        if let Some(m) = c.recv(Duration::from_millis(800)) {
            failures.push(format!("{name}: unexpected answer {m}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the daemon is still serving.
    let mut c = SipClient::connect(edge.sip, &ca);
    let local = c.local();
    c.send(simple("OPTIONS", edge.sip, local, "after").as_bytes());
    c.expect_status(200, T);
}

/// sslscan (Debian) against the SIP port: TLS 1.3 only by default; with `min_version = "1.2"`,
/// TLS 1.2 offers only ECDHE key exchange with AEAD ciphers.
#[test]
fn sslscan_of_the_sip_port() {
    if Command::new("sslscan").arg("--version").output().is_err() {
        eprintln!("sslscan not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let scan = |addr: std::net::SocketAddr| -> String {
        let out = Command::new("sslscan")
            .args(["--no-colour", "--no-heartbleed"])
            .arg(addr.to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let edge = start_edge(dir.path(), "127.0.0.0/8", "");
    let out = scan(edge.sip);
    let enabled = |out: &str, v: &str| {
        out.lines()
            .any(|l| l.starts_with(v) && l.contains("enabled"))
    };
    assert!(enabled(&out, "TLSv1.3"), "{out}");
    for v in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2"] {
        assert!(!enabled(&out, v), "{v} enabled:\n{out}");
    }
    drop(edge);

    let edge12 = common::b2bua::start_edge_tls12(dir.path());
    let out = scan(edge12.sip);
    assert!(enabled(&out, "TLSv1.2"), "{out}");
    let tls12: Vec<&str> = out
        .lines()
        .filter(|l| {
            (l.starts_with("Accepted") || l.starts_with("Preferred")) && l.contains("TLSv1.2")
        })
        .collect();
    assert!(!tls12.is_empty(), "{out}");
    for l in &tls12 {
        assert!(
            l.contains("ECDHE") && (l.contains("GCM") || l.contains("CHACHA20")),
            "non ECDHE+AEAD suite: {l}\n{out}"
        );
    }
}

/// A trunk recognised by its client certificate (mutual TLS) rather than its address: without a
/// certificate the same source gets 403, with one naming the trunk it is served.
#[test]
fn trunk_by_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let edge = common::b2bua::start_edge_cfg(
        dir.path(),
        "[[trunks]]\nname = \"pbx\"\nclient_names = [\"localhost\"]\n",
    );
    let mut anon = SipClient::connect(edge.sip, &dir.path().join("ca.pem"));
    let local = anon.local();
    anon.send(simple("OPTIONS", edge.sip, local, "anon").as_bytes());
    anon.expect_status(403, T);
    let mut pbx = SipClient::connect_with_cert(edge.sip, dir.path());
    let local = pbx.local();
    pbx.send(simple("OPTIONS", edge.sip, local, "pbx").as_bytes());
    pbx.expect_status(200, T);
    pbx.send(simple("REGISTER", edge.sip, local, "pbx2").as_bytes());
    pbx.expect_status(405, T);
}

/// A source outside every trunk may hold 256 connections; a trunk's source (one SBC opening a
/// TLS connection per call) may hold many more.
#[test]
fn connections_per_source_trunk_and_stranger() {
    const STRANGER_CAP: usize = 256;
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let ca = dir.path().join("ca.pem");
    let cfg = common::client(common::roots_from(&ca), &[&rustls::version::TLS13]);

    let stranger = start_edge(dir.path(), "10.0.0.0/8", "");
    let mut held = Vec::new();
    for i in 0..STRANGER_CAP {
        match common::connect(cfg.clone(), stranger.sip) {
            Ok(s) => held.push(s),
            Err(e) => panic!("connection {i} of a stranger refused below the cap: {e}"),
        }
    }
    assert!(
        common::connect(cfg.clone(), stranger.sip).is_err(),
        "connection {} of a stranger accepted",
        STRANGER_CAP + 1
    );
    drop(held);

    let dir2 = tempfile::tempdir().unwrap();
    certs(dir2.path());
    let ca2 = dir2.path().join("ca.pem");
    let cfg2 = common::client(common::roots_from(&ca2), &[&rustls::version::TLS13]);
    let trunk = start_edge(dir2.path(), "127.0.0.0/8", "");
    let mut held = Vec::new();
    for i in 0..STRANGER_CAP + 64 {
        match common::connect(cfg2.clone(), trunk.sip) {
            Ok(s) => held.push(s),
            Err(e) => panic!("trunk connection {i} refused: {e}"),
        }
    }
    // The last connection carries SIP.
    let mut c = SipClient::connect(trunk.sip, &ca2);
    let local = c.local();
    c.send(simple("OPTIONS", trunk.sip, local, "many").as_bytes());
    c.expect_status(200, T);
}
