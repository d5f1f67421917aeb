//! baresip (Debian) → srtp-edge B2BUA → baresip over SIP TLS beyond the basic SDES call.
//!
//! Hold: the caller puts the call on hold and resumes it (two re-INVITEs, `a=sendonly` then
//! `a=sendrecv`, sent through baresip's ctrl_tcp interface); each is re-offered to the callee by
//! srtp-edge, answered, and after the resume both sides decrypt the other's audio (no SRTP
//! failure, audio received at full rate), ports released after the BYE. baresip 1.0 does not take
//! a changed SDES key from a re-INVITE: this fails unless srtp-edge re-offers a leg its running
//! key (RFC 4568 7.1.4), which it does.
//!
//! DTLS-SRTP (`mediaenc=dtls_srtp`) on one leg or both (route `media_keying = "dtls"`): Debian
//! 12's baresip 1.0 signs DTLS with a self-signed RSA certificate (`tls_set_selfsigned_rsa`), so
//! srtp-edge (OpenSSL engine) takes an ECDHE-RSA suite as DTLS client and an RSA client
//! certificate as DTLS server; both recordings carry the other side's tone and baresip logs the
//! completed DTLS-SRTP handshake.
//!
//! DTLS-SRTP with a real peer: aiortc (PyPI: its own ECDSA certificate, DTLS, SRTP and ICE)
//! behind a minimal SIP-over-TLS user agent (interop/sip/aiortc_ua.py), in every mix: aiortc →
//! srtp-edge → aiortc (DTLS↔DTLS, route `media_keying = "dtls"`), aiortc → baresip (DTLS↔SDES:
//! the WebRTC `UDP/TLS/RTP/SAVPF` caller reaches the trunk as `RTP/SAVP`), baresip → aiortc
//! (SDES↔DTLS). Each side hears the other's tone over a connected DTLS/ICE leg, ports released.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::b2bua::{start_edge, Edge};
use common::interop::{
    analyse_recording, fill, free_port_pair, interop_dir, make_certs, newest_matching, port_range,
    tcp_up, wait_until, write_tone_wav, Proc, ToneLevel, CALLEE_TONE_HZ, CALLER_TONE_HZ,
};

/// One baresip call at a time: they share the CPU with the daemon and the analysis.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What baresip's dtls_srtp module logs when a handshake completed and SRTP is keyed.
const DTLS_DONE: &str = "DTLS-SRTP complete";

/// Writes a baresip config for `side` (config template from `cfg_dir`, accounts from `acc_dir`,
/// `extra` lines appended to the config) on fresh SIP ports; returns the base port (TLS is +1).
fn write_ua(d: &Path, side: &str, cfg_dir: &str, acc_dir: &str, extra: &str) -> u16 {
    let tpl = interop_dir().join("baresip");
    let port = free_port_pair();
    let rtp = port_range(100);
    let vars = [
        ("SIP_PORT", port.to_string()),
        ("CERT", d.join("cert+key.pem").display().to_string()),
        ("CA", d.join("ca.pem").display().to_string()),
        (
            "TONE_WAV",
            d.join(format!("{side}.wav")).display().to_string(),
        ),
        ("RTP_MIN", rtp.0.to_string()),
        ("RTP_MAX", rtp.1.to_string()),
        (
            "SND_PATH",
            d.join(format!("rec_{side}")).display().to_string(),
        ),
    ];
    std::fs::create_dir_all(d.join(side)).unwrap();
    std::fs::create_dir_all(d.join(format!("rec_{side}"))).unwrap();
    for (f, dir) in [("config", cfg_dir), ("accounts", acc_dir)] {
        let mut t = fill(
            &std::fs::read_to_string(tpl.join(dir).join(f)).unwrap(),
            &vars,
        );
        if f == "config" {
            t.push_str(extra);
        }
        std::fs::write(d.join(side).join(f), t).unwrap();
    }
    port
}

/// Starts a listening callee with the `dir` config and accounts; returns it and its TLS address.
fn callee(d: &Path, dir: &str, secs: u64) -> (Proc, SocketAddr) {
    for attempt in 0..3 {
        let port = write_ua(d, "callee", dir, dir, "");
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(d.join("callee"))
            .args(["-t", &secs.to_string()]);
        let mut p = Proc::spawn("callee", cmd, &d.join(format!("callee-{attempt}.log"))).unwrap();
        let tls: SocketAddr = format!("127.0.0.1:{}", port + 1).parse().unwrap();
        if wait_until(&mut p, Duration::from_secs(30), |_| tcp_up(tls)) {
            return (p, tls);
        }
        p.stop_with(libc::SIGTERM, Duration::from_secs(3));
    }
    panic!("baresip callee did not listen on TLS");
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    write_tone_wav(&dir.path().join("caller.wav"), CALLER_TONE_HZ, 90);
    write_tone_wav(&dir.path().join("callee.wav"), CALLEE_TONE_HZ, 90);
    dir
}

fn edge_to(d: &Path, target: SocketAddr, keying: &str) -> Edge {
    start_edge(
        d,
        "127.0.0.0/8",
        &format!(
            "[[routes]]\ntarget = \"sip:{target};transport=tls\"\nmedia_keying = \"{keying}\"\n"
        ),
    )
}

/// What one call through the edge left behind.
struct CallRun {
    established: bool,
    callee_terminated: bool,
    released: bool,
    caller_log: String,
    callee_log: String,
    edge_log: String,
    caller_heard: ToneLevel,
    callee_heard: ToneLevel,
}

impl CallRun {
    fn logs(&self) -> String {
        format!(
            "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
            self.caller_log, self.callee_log, self.edge_log
        )
    }

    /// The call was set up, torn down by the BYE with its ports released, and each side heard
    /// the other's tone for at least `min_secs`.
    fn assert_good(&self, min_secs: f64) {
        let logs = self.logs();
        assert!(self.established, "call not established\n{logs}");
        eprintln!(
            "caller heard: {:?}\ncallee heard: {:?}",
            self.caller_heard, self.callee_heard
        );
        for (who, t) in [
            ("caller", &self.caller_heard),
            ("callee", &self.callee_heard),
        ] {
            assert!(
                t.tone_secs() >= min_secs && t.tone_share > 0.6 && t.own_tone_share < 0.1,
                "{who} did not hear the other side's tone: {t:?}\n{logs}"
            );
        }
        assert!(self.callee_terminated, "callee never got the BYE\n{logs}");
        assert!(self.released, "media ports still held\n{logs}");
    }
}

/// srtp-edge completed `n` DTLS-SRTP handshakes, each with baresip's RSA certificate.
fn assert_edge_keyed_with_rsa(r: &CallRun, n: usize) {
    let done: Vec<&str> = r
        .edge_log
        .lines()
        .filter(|l| l.contains("DTLS-SRTP handshake complete"))
        .collect();
    assert_eq!(done.len(), n, "{}", r.logs());
    for l in done {
        assert!(l.contains("RSA-"), "not an RSA peer: {l}");
    }
}

/// Runs one call: the caller (config `caller_dir`) dials through an edge whose route offers
/// `keying` to a callee (config `callee_dir`), talks for `secs` and hangs up. `during` runs
/// while the call is up (given the caller's ctrl_tcp port when `ctrl` is set).
fn run_call(
    caller_dir: &str,
    callee_dir: &str,
    keying: &str,
    secs: u64,
    ctrl: bool,
    during: impl FnOnce(Option<SocketAddr>),
) -> CallRun {
    let dir = setup();
    let d = dir.path();
    let (mut callee, callee_tls) = callee(d, callee_dir, secs + 60);
    let edge = edge_to(d, callee_tls, keying);
    let ctrl_addr: Option<SocketAddr> = ctrl.then(|| {
        format!("127.0.0.1:{}", common::free_tcp_port())
            .parse()
            .unwrap()
    });
    let extra = match ctrl_addr {
        Some(a) => format!("module_app\t\tctrl_tcp.so\nctrl_tcp_listen\t\t{a}\n"),
        None => String::new(),
    };
    write_ua(d, "caller", caller_dir, caller_dir, &extra);
    let mut cmd = Command::new("baresip");
    cmd.arg("-f")
        .arg(d.join("caller"))
        .args(["-t", &secs.to_string()])
        .arg("-e")
        .arg(format!("/dial sip:callee@{};transport=tls", edge.sip));
    let mut caller = Proc::spawn("caller", cmd, &d.join("caller.log")).unwrap();
    let established = wait_until(&mut caller, Duration::from_secs(20), |p| {
        p.log_text().contains("Call established")
    });
    if established {
        during(ctrl_addr);
    }
    caller.wait_exit(Duration::from_secs(secs + 20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !callee.log_text().contains("terminated") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let released = edge.wait_no_media(Duration::from_secs(5));
    callee.stop_with(libc::SIGTERM, Duration::from_secs(5));
    for side in ["rec_caller", "rec_callee"] {
        for e in std::fs::read_dir(d.join(side)).unwrap().flatten() {
            eprintln!(
                "{side}: {:?} {} bytes",
                e.file_name(),
                e.metadata().map_or(0, |m| m.len())
            );
        }
    }
    CallRun {
        established,
        callee_terminated: callee.log_text().contains("terminated"),
        released,
        caller_log: caller.log_text(),
        callee_log: callee.log_text(),
        edge_log: edge.daemon.log_text(),
        caller_heard: analyse_recording(
            newest_matching(&d.join("rec_caller"), "-dec.wav"),
            CALLEE_TONE_HZ,
            CALLER_TONE_HZ,
        ),
        callee_heard: analyse_recording(
            newest_matching(&d.join("rec_callee"), "-dec.wav"),
            CALLER_TONE_HZ,
            CALLEE_TONE_HZ,
        ),
    }
}

#[test]
fn dtls_caller_to_sdes_callee() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let r = run_call("caller-dtls", "callee", "sdes", 10, false, |_| {});
    r.assert_good(4.0);
    assert_edge_keyed_with_rsa(&r, 1);
    assert!(r.caller_log.contains(DTLS_DONE), "{}", r.logs());
    assert!(!r.callee_log.contains(DTLS_DONE), "{}", r.logs());
}

#[test]
fn sdes_caller_to_dtls_callee() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let r = run_call("caller", "callee-dtls", "dtls", 10, false, |_| {});
    r.assert_good(4.0);
    assert_edge_keyed_with_rsa(&r, 1);
    assert!(!r.caller_log.contains(DTLS_DONE), "{}", r.logs());
    assert!(r.callee_log.contains(DTLS_DONE), "{}", r.logs());
}

#[test]
fn dtls_on_both_legs() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let r = run_call("caller-dtls", "callee-dtls", "dtls", 10, false, |_| {});
    r.assert_good(4.0);
    assert_edge_keyed_with_rsa(&r, 2);
    assert!(r.caller_log.contains(DTLS_DONE), "{}", r.logs());
    assert!(r.callee_log.contains(DTLS_DONE), "{}", r.logs());
}

/// Sends one command to baresip's ctrl_tcp interface (a JSON object in a netstring) and reads
/// the netstring reply.
fn ctrl(addr: SocketAddr, command: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let json = format!("{{\"command\":\"{command}\",\"params\":\"\",\"token\":\"t-{command}\"}}");
    s.write_all(format!("{}:{json},", json.len()).as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !got.ends_with(b",") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The last `audio=<tx>/<rx>` bit rates baresip printed on its status line.
fn last_rates(log: &str) -> Option<(u64, u64)> {
    let at = log.rfind("audio=")?;
    let rest = &log[at + 6..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '/'))?;
    let (tx, rx) = rest[..end].split_once('/')?;
    Some((tx.parse().ok()?, rx.parse().ok()?))
}

#[test]
fn caller_holds_and_resumes_through_reinvites() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut replies = Vec::new();
    // 14 s call: 3 s talking, hold (a=sendonly re-INVITE) for 3 s, resume, 8 s talking.
    let r = run_call("caller", "callee", "sdes", 14, true, |ctrl_addr| {
        let Some(a) = ctrl_addr else { return };
        std::thread::sleep(Duration::from_secs(3));
        replies.push(ctrl(a, "hold"));
        std::thread::sleep(Duration::from_secs(3));
        replies.push(ctrl(a, "resume"));
    });
    eprintln!("ctrl_tcp replies: {replies:?}");
    let logs = r.logs();
    assert!(r.established, "{logs}");
    assert_eq!(replies.len(), 2, "{logs}");
    assert!(
        replies.iter().all(|x| x.contains("\"ok\":true")),
        "{replies:?}\n{logs}"
    );
    // Both re-INVITEs reached the callee (one SDP update at the answer, one per re-INVITE) and
    // their answers reached the caller.
    for (who, log) in [("caller", &r.caller_log), ("callee", &r.callee_log)] {
        let updates = log.matches("stream: update 'audio'").count();
        assert!(updates >= 3, "{who} saw {updates} SDP updates\n{logs}");
        assert!(
            !log.contains("failed to decrypt"),
            "{who} could not decrypt\n{logs}"
        );
    }
    // Media flowed both ways before the hold (baresip 1.0's recorder stops at the first SDP
    // update, through srtp-edge or not, so the recordings cover the first 3 s) ...
    for (who, t) in [("caller", &r.caller_heard), ("callee", &r.callee_heard)] {
        assert!(
            t.tone_secs() >= 2.0 && t.tone_share > 0.6 && t.own_tone_share < 0.1,
            "{who} did not hear the other side's tone: {t:?}\n{logs}"
        );
    }
    // ... and after the resume, with the keys of the re-offers: each side's last status line
    // shows it receiving (and decrypting) audio at the PCMU rate.
    for (who, log) in [("caller", &r.caller_log), ("callee", &r.callee_log)] {
        let rates = last_rates(log);
        eprintln!("{who} last rates (tx/rx bit/s): {rates:?}");
        assert!(
            rates.is_some_and(|(tx, rx)| tx >= 32_000 && rx >= 32_000),
            "{who} not sending and receiving at the end: {rates:?}\n{logs}"
        );
    }
    assert!(r.callee_terminated, "callee never got the BYE\n{logs}");
    assert!(r.released, "media ports still held\n{logs}");
    // The edge re-offered twice (once per re-INVITE) on top of the initial offer.
    assert!(
        r.edge_log.matches("offer anchored").count() >= 3,
        "{}",
        r.edge_log
    );
}

// ---------------------------------------------------------------------------------------------
// DTLS-SRTP legs with a real peer: aiortc (PyPI; its own ECDSA certificate, DTLS, SRTP and ICE)
// behind a minimal SIP-over-TLS user agent (interop/sip/aiortc_ua.py).

/// Starts interop/sip/aiortc_ua.py with `args`, sending `hz` and listening for `listen_hz`.
fn aiortc(d: &Path, name: &str, args: &[String], hz: f64, listen_hz: f64) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg(interop_dir().join("sip").join("aiortc_ua.py"))
        .args(args)
        .args([
            "--hz",
            &hz.to_string(),
            "--listen-hz",
            &listen_hz.to_string(),
        ]);
    Proc::spawn(name, cmd, &d.join(format!("{name}.log")))
        .expect("python3 (interop/install-peers.sh installs aiortc)")
}

/// The JSON line aiortc_ua.py printed last.
fn aiortc_result(p: &Proc) -> serde_json::Value {
    p.log_text()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// An aiortc callee listening for SIP over TLS; returns it and its address.
fn aiortc_callee(d: &Path, secs: u64) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_tcp_port())
        .parse()
        .unwrap();
    let args = [
        "--listen".to_string(),
        addr.to_string(),
        "--cert".into(),
        d.join("cert.pem").display().to_string(),
        "--key".into(),
        d.join("key.pem").display().to_string(),
        "--secs".into(),
        secs.to_string(),
    ];
    let mut p = aiortc(d, "aiortc-callee", &args, CALLEE_TONE_HZ, CALLER_TONE_HZ);
    assert!(
        wait_until(&mut p, Duration::from_secs(30), |_| tcp_up(addr)),
        "aiortc callee did not listen: {}",
        p.log_text()
    );
    (p, addr)
}

/// An aiortc caller dialling `callee` through the edge for `secs`.
fn aiortc_caller(d: &Path, edge: &Edge, secs: u64) -> Proc {
    let args = [
        "--call".to_string(),
        format!("sip:callee@{};transport=tls", edge.sip),
        "--connect".into(),
        edge.sip.to_string(),
        "--ca".into(),
        d.join("ca.pem").display().to_string(),
        "--secs".into(),
        secs.to_string(),
    ];
    aiortc(d, "aiortc-caller", &args, CALLER_TONE_HZ, CALLEE_TONE_HZ)
}

/// aiortc heard the other side's tone on most of a `secs` call, over a connected DTLS/ICE leg.
fn assert_aiortc_heard(who: &str, r: &serde_json::Value, secs: u64, logs: &str) {
    eprintln!("{who}: {r}");
    assert_eq!(r["ok"], true, "{who}: {r}\n{logs}");
    assert_eq!(r["connection"], "connected", "{who}: {r}\n{logs}");
    // 50 frames/s; allow for set-up (ICE, DTLS) and the loaded machine.
    let want = secs * 50 / 2;
    assert!(
        r["tone"].as_u64().unwrap_or(0) >= want,
        "{who} heard the other tone in fewer than {want} frames: {r}\n{logs}"
    );
}

#[test]
fn aiortc_dtls_on_both_legs() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let secs = 6;
    let (mut callee, callee_addr) = aiortc_callee(d, secs);
    let edge = edge_to(d, callee_addr, "dtls");
    let mut caller = aiortc_caller(d, &edge, secs);
    caller.wait_exit(Duration::from_secs(secs + 60));
    callee.wait_exit(Duration::from_secs(15));
    let released = edge.wait_no_media(Duration::from_secs(5));
    let logs = format!(
        "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        callee.log_text(),
        edge.daemon.log_text()
    );
    let (a, b) = (aiortc_result(&caller), aiortc_result(&callee));
    // The caller offered WebRTC's DTLS profile; srtp-edge offered its own DTLS-SRTP to the callee.
    assert_eq!(a["offer_proto"], "UDP/TLS/RTP/SAVPF", "{logs}");
    assert_eq!(a["peer_proto"], "UDP/TLS/RTP/SAVPF", "{logs}");
    assert!(
        b["offer_proto"]
            .as_str()
            .is_some_and(|p| p.starts_with("UDP/TLS/RTP/SAVP")),
        "{b}\n{logs}"
    );
    assert_aiortc_heard("caller", &a, secs, &logs);
    assert_aiortc_heard("callee", &b, secs, &logs);
    assert!(released, "media ports still held\n{logs}");
}

#[test]
fn aiortc_dtls_caller_to_baresip_sdes_callee() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let secs = 8;
    let (mut callee, callee_tls) = callee(d, "callee", secs + 60);
    let edge = edge_to(d, callee_tls, "sdes");
    let mut caller = aiortc_caller(d, &edge, secs);
    caller.wait_exit(Duration::from_secs(secs + 60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !callee.log_text().contains("terminated") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let released = edge.wait_no_media(Duration::from_secs(5));
    callee.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let logs = format!(
        "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        callee.log_text(),
        edge.daemon.log_text()
    );
    let a = aiortc_result(&caller);
    assert_eq!(a["offer_proto"], "UDP/TLS/RTP/SAVPF", "{logs}");
    assert_aiortc_heard("caller", &a, secs, &logs);
    let heard = analyse_recording(
        newest_matching(&d.join("rec_callee"), "-dec.wav"),
        CALLER_TONE_HZ,
        CALLEE_TONE_HZ,
    );
    eprintln!("baresip callee heard: {heard:?}");
    assert!(
        heard.tone_secs() >= secs as f64 / 2.0 && heard.tone_share > 0.6,
        "callee did not hear the caller: {heard:?}\n{logs}"
    );
    // The callee's leg was SDES.
    assert!(callee.log_text().contains("SRTP is Enabled"), "{logs}");
    assert!(!callee.log_text().contains(DTLS_DONE), "{logs}");
    assert!(callee.log_text().contains("terminated"), "{logs}");
    assert!(released, "media ports still held\n{logs}");
}

#[test]
fn baresip_sdes_caller_to_aiortc_dtls_callee() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let secs = 8;
    let (mut callee, callee_addr) = aiortc_callee(d, secs + 30);
    let edge = edge_to(d, callee_addr, "dtls");
    write_ua(d, "caller", "caller", "caller", "");
    let mut cmd = Command::new("baresip");
    cmd.arg("-f")
        .arg(d.join("caller"))
        .args(["-t", &secs.to_string()])
        .arg("-e")
        .arg(format!("/dial sip:callee@{};transport=tls", edge.sip));
    let mut caller = Proc::spawn("caller", cmd, &d.join("caller.log")).unwrap();
    let established = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("Call established")
    });
    caller.wait_exit(Duration::from_secs(secs + 20));
    callee.wait_exit(Duration::from_secs(15));
    let released = edge.wait_no_media(Duration::from_secs(5));
    let logs = format!(
        "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        callee.log_text(),
        edge.daemon.log_text()
    );
    assert!(established, "{logs}");
    let b = aiortc_result(&callee);
    // srtp-edge offered the callee DTLS-SRTP (route media_keying = "dtls").
    assert!(
        b["offer_proto"]
            .as_str()
            .is_some_and(|p| p.starts_with("UDP/TLS/RTP/SAVP")),
        "{b}\n{logs}"
    );
    assert_aiortc_heard("callee", &b, secs - 2, &logs);
    let heard = analyse_recording(
        newest_matching(&d.join("rec_caller"), "-dec.wav"),
        CALLEE_TONE_HZ,
        CALLER_TONE_HZ,
    );
    eprintln!("baresip caller heard: {heard:?}");
    assert!(
        heard.tone_secs() >= secs as f64 / 2.0 && heard.tone_share > 0.6,
        "caller did not hear the callee: {heard:?}\n{logs}"
    );
    assert!(caller.log_text().contains("SRTP is Enabled"), "{logs}");
    assert!(released, "media ports still held\n{logs}");
}

#[test]
fn sdes_caller_rekeys_mid_call_and_the_dtls_callee_keeps_hearing() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let secs = 8;
    let (mut callee, callee_addr) = aiortc_callee(d, secs + 30);
    let edge = edge_to(d, callee_addr, "dtls");
    let args = [
        "--sdes-rekey".to_string(),
        "--call".into(),
        format!("sip:callee@{};transport=tls", edge.sip),
        "--connect".into(),
        edge.sip.to_string(),
        "--ca".into(),
        d.join("ca.pem").display().to_string(),
        "--secs".into(),
        secs.to_string(),
    ];
    let mut caller = aiortc(d, "sdes-caller", &args, CALLER_TONE_HZ, CALLEE_TONE_HZ);
    caller.wait_exit(Duration::from_secs(secs + 60));
    callee.wait_exit(Duration::from_secs(15));
    let released = edge.wait_no_media(Duration::from_secs(5));
    let logs = format!(
        "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        callee.log_text(),
        edge.daemon.log_text()
    );
    let (a, b) = (aiortc_result(&caller), aiortc_result(&callee));
    eprintln!("caller: {a}\ncallee: {b}");
    assert_eq!(a["ok"], true, "{logs}");
    assert_eq!(a["rekey_status"], 200, "{logs}");
    // srtp-edge kept its own key to the caller (RFC 4568 7.1.4) ...
    assert_eq!(a["edge_key_kept"], true, "{logs}");
    // ... the caller decrypted the callee's tone on both sides of the re-key ...
    let half = secs * 50 / 2;
    for k in ["heard_before", "heard_after"] {
        assert!(
            a[k].as_u64().unwrap_or(0) >= half / 2,
            "caller {k}: {a}\n{logs}"
        );
    }
    // ... and the callee heard the caller through both halves: had srtp-edge kept the caller's
    // first key, everything sent after the re-INVITE would fail authentication and be dropped.
    assert_eq!(b["connection"], "connected", "{logs}");
    assert!(
        b["tone"].as_u64().unwrap_or(0) >= half + half / 2,
        "callee heard too little (re-key not taken?): {b}\n{logs}"
    );
    assert!(released, "media ports still held\n{logs}");
}
