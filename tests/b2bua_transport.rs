//! The SIP transport towards route targets and around the daemon's life, with real peers
//! (SIPp behind stunnel4, which speaks the TLS): mutual TLS to a target that requires a client
//! certificate (call through with it, 503 without), DNS route targets (`localhost`; an
//! unresolvable name gets 503 and frees its ports), a configured Timer B, BYE to both legs of
//! an established call when the daemon gets SIGTERM, and SIGHUP certificate reload on the SIP
//! port (new connections see the new certificate, an established one keeps working).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::b2bua::{
    header, invite, sdp_offer, simple, start_edge_cfg, start_edge_sip, status_of, SipClient,
};
use common::interop::{interop_dir, make_certs, tcp_up, wait_until, Proc};

const T: Duration = Duration::from_secs(15);

fn stunnel(d: &Path, name: &str, body: &str, up: SocketAddr) -> Proc {
    let conf = d.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!("foreground = yes\npid =\nsyslog = no\ndebug = info\n{body}"),
    )
    .unwrap();
    let mut cmd = Command::new("stunnel4");
    cmd.arg(&conf);
    let mut p = Proc::spawn(name, cmd, &d.join(format!("{name}.log"))).unwrap();
    assert!(
        wait_until(&mut p, Duration::from_secs(10), |_| tcp_up(up)),
        "stunnel {name}: {}",
        p.log_text()
    );
    p
}

/// A SIPp UAS (interop/sipp/uas_answer.xml: answers, then waits for BYE) for `calls` calls,
/// behind a stunnel TLS server on the returned address; `require_cert` makes stunnel refuse
/// clients without a certificate from `d/ca.pem`.
fn uas_behind_stunnel(d: &Path, calls: u32, require_cert: bool) -> (SocketAddr, Proc, Proc) {
    let uas_port = common::free_tcp_port();
    let mut cmd = Command::new("sipp");
    cmd.current_dir(d)
        .arg("-sf")
        .arg(interop_dir().join("sipp").join("uas_answer.xml"))
        .args(["-t", "t1", "-i", "127.0.0.1", "-p", &uas_port.to_string()])
        .args(["-m", &calls.to_string(), "-nostdin", "-timeout", "60s"]);
    let mut uas = Proc::spawn("uas", cmd, &d.join("uas.log")).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{uas_port}").parse().unwrap();
    assert!(
        wait_until(&mut uas, Duration::from_secs(10), |_| tcp_up(addr)),
        "uas: {}",
        uas.log_text()
    );
    let back: SocketAddr = format!("127.0.0.1:{}", common::free_tcp_port())
        .parse()
        .unwrap();
    let verify = if require_cert {
        format!(
            "requireCert = yes\nverifyChain = yes\nCAfile = {}\n",
            d.join("ca.pem").display()
        )
    } else {
        String::new()
    };
    let st = stunnel(
        d,
        "stunnel-back",
        &format!(
            "[back]\naccept = {back}\nconnect = {addr}\ncert = {}\nkey = {}\n{verify}",
            d.join("cert.pem").display(),
            d.join("key.pem").display()
        ),
        back,
    );
    (back, uas, st)
}

/// INVITE → 200 (SDP) → ACK from `c`; returns the 200.
fn call_up(c: &mut SipClient, edge: SocketAddr, user: &str, call_id: &str, port: u16) -> String {
    let local = c.local();
    c.send(invite(edge, local, user, call_id, &sdp_offer(port, true)).as_bytes());
    c.expect_status(100, T);
    let ok = c.expect_status(200, T);
    assert!(ok.contains("RTP/SAVP"), "{ok}");
    let to = header(&ok, "To").unwrap();
    c.send(
        format!(
            "ACK sip:{user}@{edge} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-ack-{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag=t-{call_id}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    ok
}

/// BYE from the caller for a call set up by [`call_up`]; waits for its 200.
fn hang_up(c: &mut SipClient, edge: SocketAddr, ok: &str, user: &str, call_id: &str) {
    let local = c.local();
    let to = header(ok, "To").unwrap();
    c.send(
        format!(
            "BYE sip:{user}@{edge} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-bye-{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag=t-{call_id}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    c.expect_status(200, T);
}

/// Mutual TLS towards a route target named by DNS (`localhost`): stunnel in front of the SIPp
/// UAS requires a client certificate from the interop CA. The route presenting one gets the
/// call answered (and hung up: the UAS sees the BYE); the route without one gets 503, and
/// every media port is released.
#[test]
fn mutual_tls_to_a_dns_named_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let (back, mut uas, _st) = uas_behind_stunnel(d, 1, true);
    let edge = start_edge_cfg(
        d,
        &format!(
            "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\nsdes_suites = [\"AES_CM_128_HMAC_SHA1_80\"]\n\
             [[routes]]\nuser_prefix = \"withcert\"\ntarget = \"sips:localhost:{port}\"\n\
             client_cert_file = {cert:?}\nclient_key_file = {key:?}\n\
             [[routes]]\nuser_prefix = \"nocert\"\ntarget = \"sips:localhost:{port}\"\n",
            port = back.port(),
            cert = d.join("cert.pem").display().to_string(),
            key = d.join("key.pem").display().to_string(),
        ),
    );
    let mut c = SipClient::connect(edge.sip, &d.join("ca.pem"));
    let ok = call_up(&mut c, edge.sip, "withcert1", "mtls-ok", 40010);
    hang_up(&mut c, edge.sip, &ok, "withcert1", "mtls-ok");
    assert!(
        uas.wait_exit(Duration::from_secs(20)) && uas.exit_ok(),
        "uas:\n{}\nedge:\n{}",
        uas.log_text(),
        edge.daemon.log_text()
    );

    let local = c.local();
    c.send(
        invite(
            edge.sip,
            local,
            "nocert1",
            "mtls-no",
            &sdp_offer(40012, true),
        )
        .as_bytes(),
    );
    c.expect_status(100, T);
    let r = c.expect_status(503, T);
    assert!(header(&r, "To").unwrap().contains("tag="), "{r}");
    assert!(
        edge.wait_no_media(Duration::from_secs(5)),
        "{}",
        edge.media_calls()
    );
    let st = std::fs::read_to_string(d.join("stunnel-back.log")).unwrap_or_default();
    assert!(
        st.to_lowercase().contains("certificate"),
        "stunnel did not refuse a certificate-less client:\n{st}"
    );
}

/// A route target whose name does not resolve: 503 at once, a log line saying why, and no
/// media port kept.
#[test]
fn unresolvable_target_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let edge = start_edge_cfg(
        d,
        "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\n\
         [[routes]]\ntarget = \"sips:no-such-host.invalid:5061\"\n",
    );
    let mut c = SipClient::connect(edge.sip, &d.join("ca.pem"));
    let local = c.local();
    c.send(invite(edge.sip, local, "bob", "dns1", &sdp_offer(40020, true)).as_bytes());
    c.expect_status(100, T);
    c.expect_status(503, T);
    assert!(
        edge.wait_no_media(Duration::from_secs(5)),
        "{}",
        edge.media_calls()
    );
    let log = edge.daemon.log_text();
    assert!(log.contains("cannot resolve"), "{log}");
    // The listener is unaffected.
    c.send(simple("OPTIONS", edge.sip, local, "dns-opt").as_bytes());
    c.expect_status(200, T);
}

/// `sip.timer_b_secs`: a target that takes the INVITE and never answers makes the caller get 408
/// after the configured Timer B (2 s here, far below the 32 s default the test waits less
/// than), with the media released.
#[test]
fn configured_timer_b_gives_408() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    // A TCP server that accepts and reads but never answers, behind stunnel's TLS.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let sink = std::thread::spawn(move || {
        silent.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok((s, _)) = silent.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let back: SocketAddr = format!("127.0.0.1:{}", common::free_tcp_port())
        .parse()
        .unwrap();
    let _st = stunnel(
        d,
        "stunnel-silent",
        &format!(
            "[back]\naccept = {back}\nconnect = {silent_addr}\ncert = {}\nkey = {}\n",
            d.join("cert.pem").display(),
            d.join("key.pem").display()
        ),
        back,
    );
    let edge = start_edge_sip(
        d,
        "timer_b_secs = 2",
        &format!(
            "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\n\
             [[routes]]\ntarget = \"sip:{back};transport=tls\"\n"
        ),
    );
    let mut c = SipClient::connect(edge.sip, &d.join("ca.pem"));
    let local = c.local();
    c.send(invite(edge.sip, local, "bob", "tb1", &sdp_offer(40030, true)).as_bytes());
    c.expect_status(100, T);
    // 15 s is well under the 32 s default: only the configured value can produce this 408.
    c.expect_status(408, T);
    assert!(
        edge.wait_no_media(Duration::from_secs(5)),
        "{}",
        edge.media_calls()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sink.join().unwrap();
}

/// SIGTERM with a call established: the caller (raw TLS client) and the SIPp UAS (whose
/// scenario only passes once it has received and answered a BYE) each get a BYE before the
/// daemon exits 0.
#[test]
fn sigterm_sends_bye_to_both_legs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let (back, mut uas, _st) = uas_behind_stunnel(d, 1, false);
    let mut edge = start_edge_cfg(
        d,
        &format!(
            "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\nsdes_suites = [\"AES_CM_128_HMAC_SHA1_80\"]\n\
             [[routes]]\ntarget = \"sip:{back};transport=tls\"\n"
        ),
    );
    let mut c = SipClient::connect(edge.sip, &d.join("ca.pem"));
    call_up(&mut c, edge.sip, "bob", "term1", 40040);
    // Let the ACK reach the UAS before the stop.
    std::thread::sleep(Duration::from_millis(300));
    let log_before = edge.daemon.log_text();
    assert_eq!(edge.daemon.stop(), Some(0), "{log_before}");
    let bye = c.recv(T).unwrap_or_default();
    assert!(
        bye.starts_with("BYE "),
        "caller got no BYE: {bye:?}\n{}",
        edge.daemon.log_text()
    );
    assert_eq!(header(&bye, "Call-ID"), Some("term1"), "{bye}");
    assert!(
        uas.wait_exit(Duration::from_secs(20)) && uas.exit_ok(),
        "the UAS got no BYE:\n{}\nedge:\n{}",
        uas.log_text(),
        edge.daemon.log_text()
    );
}

/// The leaf certificate a new TLS connection to `addr` is served, verified against `ca`.
fn served_leaf(addr: SocketAddr, ca: &Path) -> Result<Vec<u8>, String> {
    let cfg = common::client(common::roots_from(ca), &[&rustls::version::TLS13]);
    let s = common::connect(cfg, addr).map_err(|e| e.to_string())?;
    let leaf = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    Ok(leaf)
}

/// SIGHUP on the SIP port: after the certificate files are replaced (by ones from a new CA), a
/// new connection is served the new certificate (and the old CA no longer verifies it), while a
/// connection opened before the reload keeps working.
#[test]
fn sighup_reloads_the_sip_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let old_ca = d.join("old-ca.pem");
    std::fs::copy(d.join("ca.pem"), &old_ca).unwrap();
    let edge = start_edge_cfg(d, "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\n");
    let mut before = SipClient::connect(edge.sip, &old_ca);
    let local = before.local();
    before.send(simple("OPTIONS", edge.sip, local, "hup1").as_bytes());
    before.expect_status(200, T);
    let old_leaf = served_leaf(edge.sip, &old_ca).unwrap();

    // New material from a new CA, written over the configured files.
    let fresh = tempfile::tempdir().unwrap();
    make_certs(fresh.path());
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(fresh.path().join(f), d.join(f)).unwrap();
    }
    let new_ca = fresh.path().join("ca.pem");
    edge.daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + T;
    while !edge.daemon.log_text().contains("certificates reloaded") {
        assert!(Instant::now() < deadline, "{}", edge.daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let new_leaf = served_leaf(edge.sip, &new_ca).unwrap();
    assert_ne!(new_leaf, old_leaf);
    assert!(
        served_leaf(edge.sip, &old_ca).is_err(),
        "the old CA still verifies a new connection"
    );
    let mut after = SipClient::connect(edge.sip, &new_ca);
    let local2 = after.local();
    after.send(simple("OPTIONS", edge.sip, local2, "hup2").as_bytes());
    after.expect_status(200, T);
    // The connection from before the reload still carries requests.
    before.send(simple("OPTIONS", edge.sip, local, "hup3").as_bytes());
    let r = before.expect_status(200, T);
    assert_eq!(status_of(&r), 200);
}
