//! The media relay driven through the ng control protocol, end to end against the real daemon:
//! libsrtp peers (PyPI pylibsrtp) on both legs, every suite pair, attacks, refusals, timeouts and
//! port-pool hygiene.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use srtp_edge::control::bencode::{DictBuilder, Value};

const MEDIA: &str = "[media]\nport_min = 20000\nport_max = 29999\nworkers = 2\n";

/// A small ng client over the library's bencode codec.
struct Ng {
    sock: UdpSocket,
    seq: u64,
}

impl Ng {
    fn new(addr: SocketAddr) -> Ng {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Ng { sock, seq: 0 }
    }

    fn raw(&mut self, msg: &[u8]) -> Option<Vec<u8>> {
        self.sock.send(msg).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    }

    fn call(&mut self, d: DictBuilder) -> Value {
        self.seq += 1;
        let cookie = format!("t{}", self.seq);
        let mut msg = format!("{cookie} ").into_bytes();
        d.build().encode_into(&mut msg);
        let reply = self.raw(&msg).expect("ng reply");
        let sp = reply.iter().position(|&c| c == b' ').unwrap();
        assert_eq!(&reply[..sp], cookie.as_bytes(), "reply carries the cookie");
        Value::decode(&reply[sp + 1..]).unwrap()
    }
}

fn result(v: &Value) -> (String, String) {
    (
        v.get("result").and_then(Value::as_str).unwrap_or("").into(),
        v.get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
    )
}

fn libsrtp_call(ng: SocketAddr, a: &str, b: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/ng/libsrtp_call.py"
        ))
        .args(["--ng", &ng.to_string(), "--suite-a", a, "--suite-b", b])
        .args(extra)
        .output()
        .expect("python3 (interop/install-peers.sh installs pylibsrtp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "libsrtp_call.py printed no JSON:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn scrape(d: &Daemon) -> String {
    let roots = common::roots_from(&d.state.join("ca.pem"));
    let cfg = common::client(roots, &[&rustls::version::TLS13]);
    let mut s = common::connect(cfg, d.admin).unwrap();
    let (status, _, body) =
        common::http_get(&mut s, "/metrics", Some(&format!("Bearer {}", d.token())));
    assert_eq!(status, 200);
    body
}

fn value(body: &str, name_and_labels: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Metric values once `done` holds for them (the exporter copies worker counters about once a
/// second), or the last values seen after a bounded wait.
fn metrics_when(d: &Daemon, names: &[&str], done: impl Fn(&[f64]) -> bool) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let body = scrape(d);
        let v: Vec<f64> = names.iter().map(|n| value(&body, n)).collect();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
    }
}

fn metric(d: &Daemon, name_and_labels: &str, expect: f64) -> f64 {
    metrics_when(d, &[name_and_labels], |v| v[0] == expect)[0]
}

const SUITES: [&str; 4] = [
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
];

#[test]
fn libsrtp_peers_relay_every_suite_pair_with_separate_keys() {
    let d = Daemon::start(&format!(
        "{MEDIA}suites = [\"AEAD_AES_256_GCM\", \"AEAD_AES_128_GCM\", \"AES_256_CM_HMAC_SHA1_80\", \
         \"AES_CM_128_HMAC_SHA1_80\", \"AES_256_CM_HMAC_SHA1_32\", \"AES_CM_128_HMAC_SHA1_32\"]\n"
    ));
    let ng = d.ng.unwrap();
    for (i, a) in SUITES.iter().enumerate() {
        // Every suite on A against a different one on B (and the same once), both directions.
        for b in [SUITES[(i + 1) % 4], SUITES[(i + 2) % 4], a] {
            let r = libsrtp_call(ng, a, b, &["--packets", "30"]);
            assert_eq!(r["ok"], true, "{a} -> {b}: {r}\n{}", d.log_text());
            for side in ["a", "b"] {
                assert_eq!(
                    r["got"][side], r["sent"][side],
                    "{a} -> {b}: RTP {side}: {r}"
                );
                assert_eq!(
                    r["got"][format!("{side}_rtcp")],
                    r["sent"][format!("{side}_rtcp")],
                    "{a} -> {b}: SRTCP {side}: {r}"
                );
            }
            assert_eq!(r["distinct_keys"], true, "each leg has its own keys: {r}");
            assert_eq!(r["key_prefix_reuse"], false, "{r}");
            assert_eq!(r["answer_to_a_suites"].as_array().unwrap().len(), 1);
            let offered: Vec<&str> = r["offer_to_b_suites"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert_eq!(offered.len(), 6, "every enabled suite offered: {offered:?}");
            assert_eq!(offered[0], "AEAD_AES_256_GCM", "preference order");
            assert_eq!(r["delete"], "ok");
        }
    }
    // Every call was deleted: no port pair is left.
    let mut c = Ng::new(ng);
    let list = c.call(DictBuilder::new().str("command", "list"));
    assert_eq!(
        list.get("calls").and_then(Value::as_list).map(|l| l.len()),
        Some(0)
    );
}

/// The recvfrom/sendto path (no io_uring, or `io_uring = false`) and the path without the
/// batching pause relay and refuse exactly as the default one does.
#[test]
fn every_io_path_relays_and_refuses_the_same() {
    for io in [
        "io_uring = false\nbatch_pause_us = 200\n",
        "io_uring = false\nbatch_pause_us = 0\n",
        "io_uring = true\nbatch_pause_us = 0\n",
    ] {
        let d = Daemon::start(&format!("{MEDIA}{io}"));
        let ng = d.ng.unwrap();
        let r = libsrtp_call(
            ng,
            "AES_CM_128_HMAC_SHA1_80",
            "AEAD_AES_128_GCM",
            &["--packets", "30"],
        );
        assert_eq!(r["ok"], true, "{io}: {r}\n{}", d.log_text());
        for side in ["a", "b", "a_rtcp", "b_rtcp"] {
            assert_eq!(r["got"][side], r["sent"][side], "{io}: {side}: {r}");
        }
        let r = libsrtp_call(
            ng,
            "AEAD_AES_256_GCM",
            "AES_CM_128_HMAC_SHA1_32",
            &["--attack", "--packets", "40"],
        );
        assert_eq!(r["ok"], true, "{io}: {r}\n{}", d.log_text());
        assert_eq!(r["attacks"]["leaked"], 0, "{io}: {r}");
        assert_eq!(r["got"]["a"], r["sent"]["a"], "{io}: {r}");
        assert_eq!(r["got"]["b"], r["sent"]["b"], "{io}: {r}");
    }
}

#[test]
fn plain_rtp_forgeries_and_replays_never_leave_and_are_counted() {
    let d = Daemon::start(MEDIA);
    let r = libsrtp_call(
        d.ng.unwrap(),
        "AES_CM_128_HMAC_SHA1_80",
        "AEAD_AES_128_GCM",
        &["--attack", "--packets", "40"],
    );
    assert_eq!(r["ok"], true, "{r}\n{}", d.log_text());
    assert!(r["attacks"]["injected"].as_u64().unwrap() >= 40, "{r}");
    assert_eq!(r["attacks"]["leaked"], 0, "{r}");
    assert_eq!(r["got"]["bad"], 0, "{r}");
    // The legitimate stream was never redirected by the stranger.
    assert_eq!(r["got"]["a"], r["sent"]["a"], "{r}");
    assert_eq!(r["got"]["b"], r["sent"]["b"], "{r}");
    // Plain RTP fails authentication; packets whose index is older than the replay window
    // (the injected ones use far-away sequence numbers) and replays are refused before it.
    let injected = r["attacks"]["injected"].as_u64().unwrap() as f64;
    let v = metrics_when(
        &d,
        &[
            "srtp_edge_packets_dropped_total{reason=\"auth\"}",
            "srtp_edge_packets_dropped_total{reason=\"replay\"}",
        ],
        |v| v[0] + v[1] >= injected,
    );
    let (auth, replay) = (v[0], v[1]);
    assert!(auth >= 20.0, "plain RTP counted as auth failures: {auth}");
    assert!(replay >= 6.0, "replays counted: {replay}");
    assert!(
        auth + replay >= injected,
        "every injected packet counted: {auth} + {replay} < {injected}"
    );
}

fn offer(ng: &mut Ng, call: &str, sdp: &str, extra: &[(&str, &str)]) -> Value {
    let mut d = DictBuilder::new()
        .str("command", "offer")
        .str("call-id", call)
        .str("from-tag", "ft")
        .str("sdp", sdp);
    for (k, v) in extra {
        d = d.str(k, v);
    }
    ng.call(d)
}

const PLAIN_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const SDES_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                        m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
                        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

#[test]
fn plaintext_requests_are_refused_and_nothing_is_anchored() {
    let d = Daemon::start(MEDIA);
    let mut ng = Ng::new(d.ng.unwrap());
    let r = offer(&mut ng, "p1", PLAIN_SDP, &[]);
    assert_eq!(
        result(&r),
        ("error".into(), "plaintext media refused".into())
    );
    let r = offer(
        &mut ng,
        "p2",
        SDES_SDP,
        &[("transport-protocol", "RTP/AVP")],
    );
    assert_eq!(
        result(&r),
        ("error".into(), "plaintext media refused".into())
    );
    // An offer with SRTP works on the same daemon.
    let r = offer(&mut ng, "p3", SDES_SDP, &[]);
    assert_eq!(result(&r).0, "ok", "{r:?}");
    let sdp = r.get("sdp").and_then(Value::as_str).unwrap();
    assert!(sdp.contains("RTP/SAVP") && sdp.contains("a=crypto:1 AEAD_AES_256_GCM inline:"));
    assert!(
        !sdp.contains("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"),
        "A's key never crosses legs"
    );
    let list = ng.call(DictBuilder::new().str("command", "list"));
    let calls = list.get("calls").and_then(Value::as_list).unwrap();
    assert_eq!(calls.len(), 1, "only the SRTP call is anchored");
    assert!(
        !d.log_text()
            .contains("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"),
        "keys never logged"
    );
}

#[test]
fn malformed_and_retransmitted_requests() {
    let d = Daemon::start(MEDIA);
    let mut ng = Ng::new(d.ng.unwrap());
    for junk in [
        &b"c1 d7:command"[..],
        b"c2 i12e",
        b"c3 l4:spame",
        b"c4 dee",
        b"c5 d7:command4:nopee",
    ] {
        let r = ng.raw(junk).expect("an error reply for a readable cookie");
        assert!(
            String::from_utf8_lossy(&r).contains("6:result5:error"),
            "{junk:?}"
        );
    }
    // No cookie at all: silently dropped.
    assert!(ng.raw(b"nocookie").is_none());
    // A retransmitted offer (same cookie) gets the same reply and anchors one call only.
    let mut msg = b"same ".to_vec();
    DictBuilder::new()
        .str("command", "offer")
        .str("call-id", "rt")
        .str("from-tag", "ft")
        .str("sdp", SDES_SDP)
        .build()
        .encode_into(&mut msg);
    let r1 = ng.raw(&msg).unwrap();
    let r2 = ng.raw(&msg).unwrap();
    assert_eq!(r1, r2, "cached reply, keys and ports identical");
    let ping = ng.call(DictBuilder::new().str("command", "ping"));
    assert_eq!(result(&ping).0, "pong");
}

#[test]
fn requests_from_outside_allow_from_are_ignored() {
    let port = common::free_udp_port();
    let d = Daemon::start(&format!(
        "{MEDIA}[control]\nlisten = [\"127.0.0.1:{port}\"]\nallow_from = [\"10.0.0.0/8\"]\n"
    ));
    let mut ng = Ng::new(format!("127.0.0.1:{port}").parse().unwrap());
    ng.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut msg = b"x1 ".to_vec();
    DictBuilder::new()
        .str("command", "ping")
        .build()
        .encode_into(&mut msg);
    assert!(
        ng.raw(&msg).is_none(),
        "no reply to a source outside allow_from"
    );
    drop(d);
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_offer_delete_cycles_leave_no_port_or_fd_behind() {
    let d = Daemon::start(MEDIA);
    let pid = d.child.as_ref().unwrap().id();
    let mut ng = Ng::new(d.ng.unwrap());
    // Warm up once so lazily created fds (metrics, runtime) exist before the baseline.
    let r = offer(&mut ng, "warm", SDES_SDP, &[]);
    assert_eq!(result(&r).0, "ok");
    ng.call(
        DictBuilder::new()
            .str("command", "delete")
            .str("call-id", "warm"),
    );
    let fds0 = fd_count(pid);
    let start = Instant::now();
    for i in 0..10_000 {
        let id = format!("cycle-{i}");
        let r = offer(&mut ng, &id, SDES_SDP, &[]);
        assert_eq!(result(&r).0, "ok", "cycle {i}: {r:?}");
        let r = ng.call(
            DictBuilder::new()
                .str("command", "delete")
                .str("call-id", &id),
        );
        assert_eq!(result(&r).0, "ok", "cycle {i}: {r:?}");
    }
    eprintln!("10000 offer/delete cycles in {:?}", start.elapsed());
    assert_eq!(fd_count(pid), fds0, "file descriptors leaked");
    let list = ng.call(DictBuilder::new().str("command", "list"));
    assert_eq!(
        list.get("calls").and_then(Value::as_list).map(|l| l.len()),
        Some(0)
    );
    assert_eq!(
        metric(
            &d,
            "srtp_edge_media_port_pairs_in_use{family=\"ipv4\"}",
            0.0
        ),
        0.0,
        "every port pair returned to the pool"
    );
}

#[test]
fn a_call_without_media_times_out_and_frees_its_ports() {
    let d = Daemon::start(&format!("{MEDIA}timeout_secs = 5\n"));
    let mut ng = Ng::new(d.ng.unwrap());
    let r = offer(&mut ng, "silent", SDES_SDP, &[]);
    assert_eq!(result(&r).0, "ok");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = ng.call(DictBuilder::new().str("command", "list"));
        if list.get("calls").and_then(Value::as_list).map(|l| l.len()) == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "call did not time out");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        metric(&d, "srtp_edge_calls_total{end=\"timeout\"}", 1.0),
        1.0
    );
    assert_eq!(
        metric(
            &d,
            "srtp_edge_media_port_pairs_in_use{family=\"ipv4\"}",
            0.0
        ),
        0.0
    );
}
