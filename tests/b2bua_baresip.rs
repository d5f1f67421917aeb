//! baresip (Debian) → srtp-edge B2BUA → baresip, everything SIP over TLS with SDES SRTP
//! (`mediaenc=srtp-mand`): the call is set up, each recording carries the other side's tone, a
//! loopback capture shows no cleartext SIP and no plain RTP, the BYE tears both legs down and
//! every media port is released. Also: a baresip offering plain RTP gets 488, and a CANCEL of a
//! ringing call gets 487 with the ports released.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::b2bua::{cancel, invite, sdp_offer, start_edge, status_of, Edge, SipClient};
use common::interop::{
    analyse_recording, check_media, contains, fill, free_port_pair, interop_dir, make_certs,
    newest_matching, parse_pcap, port_range, tcp_up, wait_until, write_tone_wav, Proc,
    CALLEE_TONE_HZ, CALLER_TONE_HZ,
};

/// One baresip at a time: they share the CPU with the daemon and the analysis.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes a baresip config for `side` (config template from `cfg_dir`, accounts from
/// `acc_dir`) on fresh SIP ports; returns the base port (TLS is port + 1).
fn write_ua(d: &Path, side: &str, cfg_dir: &str, acc_dir: &str, rtp: (u16, u16)) -> u16 {
    let tpl = interop_dir().join("baresip");
    let port = free_port_pair();
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
        let t = std::fs::read_to_string(tpl.join(dir).join(f)).unwrap();
        std::fs::write(d.join(side).join(f), fill(&t, &vars)).unwrap();
    }
    port
}

/// Starts a listening callee; returns it and its TLS address.
fn callee(d: &Path, acc_dir: &str, rtp: (u16, u16), secs: u64) -> (Proc, SocketAddr) {
    for attempt in 0..3 {
        let port = write_ua(d, "callee", "callee", acc_dir, rtp);
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

fn edge_to(d: &Path, target: SocketAddr) -> Edge {
    start_edge(
        d,
        "127.0.0.0/8",
        &format!("[[routes]]\ntarget = \"sip:{target};transport=tls\"\n"),
    )
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    write_tone_wav(&dir.path().join("caller.wav"), CALLER_TONE_HZ, 90);
    write_tone_wav(&dir.path().join("callee.wav"), CALLEE_TONE_HZ, 90);
    dir
}

#[test]
fn baresip_call_through_the_b2bua() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let (callee_rtp, caller_rtp) = (port_range(100), port_range(100));
    let (mut callee, callee_tls) = callee(d, "callee", callee_rtp, 90);
    let edge = edge_to(d, callee_tls);

    // Capture media on both user agents' RTP ranges and SIP on both TLS hops.
    let pcap = d.join("call.pcap");
    let bpf = format!(
        "(udp and (portrange {}-{} or portrange {}-{})) or (tcp and (port {} or port {}))",
        callee_rtp.0,
        callee_rtp.1,
        caller_rtp.0,
        caller_rtp.1,
        edge.sip.port(),
        callee_tls.port()
    );
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut tshark = None;
    if root {
        let mut cmd = Command::new("tshark");
        cmd.args(["-i", "lo", "-n", "-F", "pcap", "-f", &bpf, "-w"])
            .arg(&pcap);
        let mut p = Proc::spawn("tshark", cmd, &d.join("tshark.log")).unwrap();
        assert!(
            wait_until(&mut p, Duration::from_secs(30), |p| p
                .log_text()
                .contains("Capturing on")),
            "tshark: {}",
            p.log_text()
        );
        tshark = Some(p);
    } else {
        eprintln!("not root: no capture on lo");
    }

    let call_secs = 10;
    write_ua(d, "caller", "caller", "caller", caller_rtp);
    let mut cmd = Command::new("baresip");
    cmd.arg("-f")
        .arg(d.join("caller"))
        .args(["-t", &call_secs.to_string()])
        .arg("-e")
        .arg(format!("/dial sip:callee@{};transport=tls", edge.sip));
    let t0 = Instant::now();
    let mut caller = Proc::spawn("caller", cmd, &d.join("caller.log")).unwrap();
    let established = wait_until(&mut caller, Duration::from_secs(20), |p| {
        p.log_text().contains("Call established")
    });
    let setup = t0.elapsed();
    caller.wait_exit(Duration::from_secs(call_secs + 20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !callee.log_text().contains("terminated") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let released = edge.wait_no_media(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    if let Some(t) = tshark.as_mut() {
        t.stop_with(libc::SIGINT, Duration::from_secs(15));
    }
    callee.stop_with(libc::SIGTERM, Duration::from_secs(5));

    let logs = format!(
        "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        callee.log_text(),
        edge.daemon.log_text()
    );
    assert!(established, "call not established\n{logs}");
    eprintln!("call established {setup:?} after the caller started (baresip start-up included)");
    let caller_heard = analyse_recording(
        newest_matching(&d.join("rec_caller"), "-dec.wav"),
        CALLEE_TONE_HZ,
        CALLER_TONE_HZ,
    );
    let callee_heard = analyse_recording(
        newest_matching(&d.join("rec_callee"), "-dec.wav"),
        CALLER_TONE_HZ,
        CALLEE_TONE_HZ,
    );
    eprintln!("caller heard: {caller_heard:?}\ncallee heard: {callee_heard:?}");
    for (who, t) in [("caller", &caller_heard), ("callee", &callee_heard)] {
        assert!(
            t.tone_secs() >= 4.0 && t.tone_share > 0.6 && t.own_tone_share < 0.1,
            "{who} did not hear the other side's tone: {t:?}\n{logs}"
        );
    }
    assert!(
        released,
        "media ports still held: {}\n{logs}",
        edge.media_calls()
    );
    assert!(
        callee.log_text().contains("terminated"),
        "callee never got the BYE\n{logs}"
    );
    let dlog = edge.daemon.log_text();
    assert!(
        dlog.contains("call answered") && dlog.contains("call ended"),
        "{dlog}"
    );

    if let Some(_t) = tshark {
        let raw = std::fs::read(&pcap).unwrap();
        for clear in [&b"SIP/2.0"[..], b"INVITE sip:", b"a=crypto"] {
            assert!(
                !contains(&raw, clear),
                "cleartext {:?} on the wire",
                String::from_utf8_lossy(clear)
            );
        }
        let dgrams = parse_pcap(&raw);
        let relay: std::collections::BTreeSet<u16> = (edge.media.0..=edge.media.1).collect();
        let m = check_media(dgrams.iter(), &relay);
        eprintln!(
            "capture: {} datagrams, {} SRTP, {} SRTCP, {} plain RTP, flows {:?}",
            dgrams.len(),
            m.srtp,
            m.srtcp,
            m.plain_rtp,
            m.srtp_flows
        );
        assert_eq!(m.plain_rtp, 0, "{:?}", m.offenders);
        assert_eq!(m.plain_rtcp, 0, "{:?}", m.offenders);
        assert_eq!(m.tone_in_clear, 0);
        // Four directions: caller→edge, edge→callee, callee→edge, edge→caller.
        let flows: Vec<usize> = m
            .srtp_flows
            .values()
            .copied()
            .filter(|n| *n >= 100)
            .collect();
        assert!(flows.len() >= 4, "SRTP flows {:?}", m.srtp_flows);
    }
}

#[test]
fn baresip_plain_rtp_offer_gets_488() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let (mut callee, callee_tls) = callee(d, "callee", port_range(100), 60);
    let edge = edge_to(d, callee_tls);
    write_ua(d, "caller", "caller", "caller-plain", port_range(100));
    let mut cmd = Command::new("baresip");
    cmd.arg("-f")
        .arg(d.join("caller"))
        .args(["-t", "6"])
        .arg("-e")
        .arg(format!("/dial sip:callee@{};transport=tls", edge.sip));
    let mut caller = Proc::spawn("caller", cmd, &d.join("caller.log")).unwrap();
    caller.wait_exit(Duration::from_secs(20));
    callee.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let logs = format!(
        "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        callee.log_text(),
        edge.daemon.log_text()
    );
    assert!(caller.log_text().contains("488"), "{logs}");
    assert!(!caller.log_text().contains("Call established"), "{logs}");
    assert!(edge.wait_no_media(Duration::from_secs(3)), "{logs}");
}

#[test]
fn cancel_of_a_ringing_baresip_gets_487_and_frees_ports() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let (mut callee, callee_tls) = callee(d, "callee-ringing", port_range(100), 60);
    let edge = edge_to(d, callee_tls);
    let mut c = SipClient::connect(edge.sip, &d.join("ca.pem"));
    let local = c.local();
    let t = Duration::from_secs(10);
    c.send(
        invite(
            edge.sip,
            local,
            "callee",
            "cancel1",
            &sdp_offer(40010, true),
        )
        .as_bytes(),
    );
    c.expect_status(100, t);
    let ringing = c.expect_status(180, t);
    assert!(
        !ringing.contains(&callee_tls.port().to_string()),
        "{ringing}"
    );
    assert!(
        !edge.media_calls().contains("5:callsle"),
        "no media anchored while ringing"
    );
    c.send(cancel(edge.sip, local, "callee", "cancel1").as_bytes());
    let mut got = Vec::new();
    for _ in 0..2 {
        if let Some(m) = c.recv(t) {
            got.push(status_of(&m));
        }
    }
    got.sort();
    assert_eq!(got, [200, 487]);
    assert!(
        edge.wait_no_media(Duration::from_secs(3)),
        "{}\n{}",
        edge.media_calls(),
        edge.daemon.log_text()
    );
    callee.stop_with(libc::SIGTERM, Duration::from_secs(5));
}

#[test]
fn callee_hangs_up_and_the_bye_reaches_the_caller() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    // The callee quits (hanging up with a BYE) 8 s after it starts; the caller would stay 30 s.
    let (mut callee, callee_tls) = callee(d, "callee", port_range(100), 8);
    let edge = edge_to(d, callee_tls);
    write_ua(d, "caller", "caller", "caller", port_range(100));
    let mut cmd = Command::new("baresip");
    cmd.arg("-f")
        .arg(d.join("caller"))
        .args(["-t", "30"])
        .arg("-e")
        .arg(format!("/dial sip:callee@{};transport=tls", edge.sip));
    let mut caller = Proc::spawn("caller", cmd, &d.join("caller.log")).unwrap();
    let established = wait_until(&mut caller, Duration::from_secs(20), |p| {
        p.log_text().contains("Call established")
    });
    callee.wait_exit(Duration::from_secs(20));
    let hung_up = wait_until(&mut caller, Duration::from_secs(10), |p| {
        p.log_text().contains("terminated")
    });
    let released = edge.wait_no_media(Duration::from_secs(5));
    caller.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let logs = format!(
        "===== caller =====\n{}\n===== callee =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        callee.log_text(),
        edge.daemon.log_text()
    );
    assert!(established, "{logs}");
    assert!(hung_up, "the caller never got the callee's BYE\n{logs}");
    assert!(released, "{}\n{logs}", edge.media_calls());
}
