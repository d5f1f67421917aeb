//! The fork wired into calls, end to end: the real daemon with a `[[fork.backends]]` pointing at
//! `interop/fork/backend.py` (a Python `websockets` TLS server with a CA made by the test), calls
//! set up through ng between two libsrtp peers (`interop/ng/fork_call.py`) sending PCMU tones of
//! different frequencies. Checks both tracks reach the backend with the right tone, DTMF, `stop
//! forwarding` (stop + close 1000), `start forwarding` mid-call, unknown backends, refusals for
//! plaintext and non-G.711 calls, that no audio reaches a log or a file, and that a backend that
//! stops reading does not disturb the relay.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Daemon;
use serde_json::Value as Json;
use srtp_edge::control::bencode::{DictBuilder, Value};

const MEDIA: &str = "[media]\nport_min = 20000\nport_max = 29999\nworkers = 2\n";

/// The Python backend, killed on drop.
struct Backend {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
    _certs: tempfile::TempDir,
    ca: PathBuf,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Backend {
    fn start(args: &[&str]) -> Backend {
        let certs = tempfile::tempdir().unwrap();
        srtp_edge::tls::certs::ensure_generated(
            certs.path(),
            &["127.0.0.1".into(), "localhost".into()],
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/fork/backend.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--cert")
            .arg(certs.path().join("server.pem"))
            .arg("--key")
            .arg(certs.path().join("server.key"))
            .args(["--mode", "twilio", "--freqs", "600,1000"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with websockets (interop/requirements.txt) is needed");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("backend did not start");
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let ca = certs.path().join("ca.pem");
        Backend {
            child,
            lines: rx,
            port,
            _certs: certs,
            ca,
        }
    }

    /// The daemon configuration naming this backend `ai`.
    fn config(&self) -> String {
        format!(
            "{MEDIA}[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:{}/stream\"\n\
             protocol = \"twilio\"\nca_file = {:?}\n",
            self.port, self.ca
        )
    }

    /// The summary line the backend prints when a connection closes.
    fn summary(&self, within: Duration) -> Option<Json> {
        self.lines
            .recv_timeout(within)
            .ok()
            .map(|l| serde_json::from_str(&l).unwrap())
    }
}

fn fork_call(ng: SocketAddr, args: &[&str]) -> Json {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/ng/fork_call.py"
        ))
        .args(["--ng", &ng.to_string()])
        .args(args)
        .output()
        .expect("python3 (interop/install-peers.sh installs pylibsrtp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "fork_call.py printed no JSON:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn events(s: &Json) -> Vec<String> {
    s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

fn db(s: &Json, track: &str, freq: &str) -> f64 {
    s["track_tone_db"][track][freq].as_f64().unwrap_or(-999.0)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Asserts that no file of the daemon (state dir, config, log) holds any of the audio frames
/// the peers sent, as raw μ-law or as base64.
fn assert_no_audio_written(d: &Daemon, call: &Json) {
    let mut probes: Vec<(Vec<u8>, String)> = Vec::new();
    for side in ["a", "b"] {
        for p in call["probes"][side].as_array().unwrap() {
            let b64 = p.as_str().unwrap().to_string();
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&b64)
                .unwrap();
            probes.push((raw, b64));
        }
    }
    assert!(probes.len() >= 12, "the peers reported their probe frames");
    let mut all = Vec::new();
    files(d.dir.path(), &mut all);
    assert!(all.iter().any(|p| p.ends_with("daemon.log")));
    for f in &all {
        let data = std::fs::read(f).unwrap_or_default();
        for (raw, b64) in &probes {
            // 40 bytes of a frame is far beyond chance; the whole base64 frame is what a log of
            // a Twilio media message would hold.
            assert!(
                !data.windows(40).any(|w| w == &raw[40..80]),
                "raw audio found in {}",
                f.display()
            );
            assert!(
                !data.windows(b64.len()).any(|w| w == b64.as_bytes()),
                "base64 audio found in {}",
                f.display()
            );
        }
    }
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
        .unwrap_or(-1.0)
}

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

    fn call(&mut self, d: DictBuilder) -> Value {
        self.seq += 1;
        let cookie = format!("f{}", self.seq);
        let mut msg = format!("{cookie} ").into_bytes();
        d.build().encode_into(&mut msg);
        self.sock.send(&msg).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = self.sock.recv(&mut buf).expect("ng reply");
        let sp = buf.iter().position(|&c| c == b' ').unwrap();
        Value::decode(&buf[sp + 1..n]).unwrap()
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

const PLAIN_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const SDES_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                        m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
                        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

fn offer(ng: &mut Ng, call: &str, sdp: &str, fork: &str) -> Value {
    ng.call(
        DictBuilder::new()
            .str("command", "offer")
            .str("call-id", call)
            .str("from-tag", "ft")
            .str("sdp", sdp)
            .str("fork", fork),
    )
}

#[test]
fn forked_call_sends_both_tracks_with_their_tones_and_stop_forwarding_closes_1000() {
    let b = Backend::start(&["--no-playback"]);
    let d = Daemon::start(&b.config());
    let ng = d.ng.unwrap();
    let call = fork_call(
        ng,
        &[
            "--fork",
            "ai",
            "--seconds",
            "5",
            "--stop-at",
            "3.5",
            "--call-id",
            "fork-both@test",
        ],
    );
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["offer"]["result"], "ok", "{call}");
    assert!(call["offer"].get("warning").is_none(), "{call}");
    assert_eq!(call["ng"]["stop_forwarding"]["result"], "ok", "{call}");
    // The relay is not disturbed by the fork: nothing lost either way, before or after the stop.
    assert_eq!(call["lost"], serde_json::json!({"a": 0, "b": 0}), "{call}");
    assert_eq!(call["got"]["a"], call["sent"]["a"], "{call}");
    assert_eq!(call["got"]["b"], call["sent"]["b"], "{call}");
    assert_eq!(call["got"]["dtmf"], 4, "telephone-event relayed: {call}");

    let s = b
        .summary(Duration::from_secs(5))
        .expect("the backend saw the fork close");
    let ev = events(&s);
    assert_eq!(&ev[..3], &["connected", "start", "media"], "{ev:?}");
    assert!(ev.contains(&"dtmf".to_string()), "{ev:?}");
    assert_eq!(ev.last().map(String::as_str), Some("stop"), "{ev:?}");
    assert_eq!(s["close_code"], 1000, "stop forwarding closes 1000");
    assert_eq!(s["tls"], "TLSv1.3");
    assert_eq!(s["dtmf"][0]["digit"], "5", "{s}");
    assert_eq!(
        s["start"]["start"]["tracks"],
        serde_json::json!(["inbound", "outbound"])
    );
    assert_eq!(
        s["start"]["start"]["customParameters"]["sip_call_id"],
        "fork-both@test"
    );
    assert_eq!(s["seq_ok"], true);
    assert_eq!(s["chunk_ok"], true);
    assert_eq!(s["payload_lens"], serde_json::json!([160]));
    // 3.5 s of audio per track before the stop: 175 frames (the fork connects within a few
    // hundred ms; frames before that wait in its queue).
    let fin = s["track_frames"]["inbound"].as_u64().unwrap();
    let fout = s["track_frames"]["outbound"].as_u64().unwrap();
    eprintln!("frames received by the backend: inbound {fin}, outbound {fout}; tones {s}");
    assert!((150..=185).contains(&fin), "inbound frames {fin}");
    assert!((150..=185).contains(&fout), "outbound frames {fout}");
    // Leg A (the caller, 600 Hz) is the inbound track; leg B (1000 Hz) the outbound one.
    assert!(db(&s, "inbound", "600") > -1.0, "{}", s["track_tone_db"]);
    assert!(db(&s, "inbound", "1000") < -20.0, "{}", s["track_tone_db"]);
    assert!(db(&s, "outbound", "1000") > -1.0, "{}", s["track_tone_db"]);
    assert!(db(&s, "outbound", "600") < -20.0, "{}", s["track_tone_db"]);
    assert!(
        b.summary(Duration::from_secs(1)).is_none(),
        "one connection only"
    );

    // The fork's counters reach /metrics: every frame the backend got was counted as sent,
    // none dropped.
    let body = scrape(&d);
    let sent = value(&body, "srtp_edge_fork_frames_sent_total{backend=\"ai\"}");
    assert!(
        sent >= (fin + fout) as f64,
        "{sent} < {fin} + {fout}\n{body}"
    );
    assert_eq!(
        value(
            &body,
            "srtp_edge_fork_frames_dropped_total{backend=\"ai\",reason=\"queue_full\"}"
        ),
        0.0
    );
    assert!(
        body.contains("srtp_edge_fork_calls_total{backend=\"ai\"} 1"),
        "{body}"
    );

    // No decrypted audio on disk or in the log, even at debug level.
    let log = d.log_text();
    assert!(log.contains("fork started"), "{log}");
    assert!(log.contains("fork stopped"), "{log}");
    assert_no_audio_written(&d, &call);
}

#[test]
fn start_forwarding_mid_call_then_delete_ends_the_fork_and_unknown_backends_are_errors() {
    let b = Backend::start(&["--no-playback"]);
    let d = Daemon::start(&b.config());
    let ng = d.ng.unwrap();
    let call = fork_call(
        ng,
        &["--seconds", "3", "--start-at", "1.0", "--fork-name", "ai"],
    );
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["ng"]["start_forwarding"]["result"], "ok", "{call}");
    assert_eq!(call["delete"]["result"], "ok", "{call}");
    assert_eq!(call["lost"], serde_json::json!({"a": 0, "b": 0}), "{call}");
    let s = b
        .summary(Duration::from_secs(5))
        .expect("the delete closed the fork");
    assert_eq!(s["close_code"], 1000, "{s}");
    assert_eq!(events(&s).last().map(String::as_str), Some("stop"));
    // About 2 s of each track (started after 1 s of a 3 s call).
    let fin = s["track_frames"]["inbound"].as_u64().unwrap();
    let fout = s["track_frames"]["outbound"].as_u64().unwrap();
    assert!((80..=115).contains(&fin), "inbound frames {fin}");
    assert!((80..=115).contains(&fout), "outbound frames {fout}");
    assert!(db(&s, "inbound", "600") > -1.0, "{}", s["track_tone_db"]);
    assert!(db(&s, "outbound", "1000") > -1.0, "{}", s["track_tone_db"]);

    // Unknown backends: mid-call, and on an offer (which then anchors nothing).
    let call = fork_call(
        ng,
        &["--seconds", "1", "--start-at", "0.2", "--fork-name", "nope"],
    );
    assert_eq!(call["ng"]["start_forwarding"]["result"], "error", "{call}");
    assert_eq!(
        call["ng"]["start_forwarding"]["error-reason"],
        "unknown fork backend"
    );
    let mut c = Ng::new(ng);
    let r = offer(&mut c, "u1", SDES_SDP, "wss://evil.example/steal");
    assert_eq!(
        result(&r),
        ("error".into(), "unknown fork backend".into()),
        "a URL is not a backend name"
    );
    let list = c.call(DictBuilder::new().str("command", "list"));
    assert_eq!(list.get("calls").and_then(Value::as_list).unwrap().len(), 0);
    // stop forwarding on a call without a fork, and on no call.
    let r = offer(&mut c, "u2", SDES_SDP, "ai");
    assert_eq!(result(&r).0, "ok", "{r:?}");
    let r = c.call(
        DictBuilder::new()
            .str("command", "stop forwarding")
            .str("call-id", "nosuchcall"),
    );
    assert_eq!(result(&r), ("error".into(), "Unknown call-id".into()));
    let r = c.call(
        DictBuilder::new()
            .str("command", "start forwarding")
            .str("call-id", "u2"),
    );
    assert_eq!(
        result(&r),
        ("error".into(), "No fork backend in message".into())
    );
    assert!(
        b.summary(Duration::from_secs(1)).is_none(),
        "no connection for refused or unanswered forks"
    );
}

#[test]
fn plaintext_and_non_g711_calls_refuse_the_fork_clearly() {
    let b = Backend::start(&["--no-playback"]);
    let d = Daemon::start(&b.config());
    let ng = d.ng.unwrap();
    let mut c = Ng::new(ng);
    let r = offer(&mut c, "p1", PLAIN_SDP, "ai");
    assert_eq!(
        result(&r),
        ("error".into(), "plaintext media refused".into())
    );
    // A G.722 call is relayed, but not forked: the offer says why in a warning.
    let call = fork_call(ng, &["--fork", "ai", "--codec", "g722", "--seconds", "1"]);
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["offer"]["result"], "ok");
    assert_eq!(
        call["offer"]["warning"], "fork refused: the offer has no PCMU or PCMA codec",
        "{call}"
    );
    assert_eq!(call["lost"], serde_json::json!({"a": 0, "b": 0}), "{call}");
    // And mid-call.
    let call = fork_call(
        ng,
        &[
            "--codec",
            "g722",
            "--seconds",
            "1",
            "--start-at",
            "0.2",
            "--fork-name",
            "ai",
        ],
    );
    assert_eq!(
        call["ng"]["start_forwarding"]["error-reason"],
        "fork refused: codec G722 is not PCMU or PCMA",
        "{call}"
    );
    assert!(
        b.summary(Duration::from_secs(2)).is_none(),
        "the backend never saw a connection"
    );
    let log = d.log_text();
    assert!(
        log.contains("fork refused") && log.contains("G722 is not PCMU or PCMA"),
        "{log}"
    );
}

#[test]
fn a_backend_that_stops_reading_for_10_s_does_not_disturb_the_relay() {
    let b = Backend::start(&["--no-playback", "--stall-after", "50", "--stall-secs", "10"]);
    let d = Daemon::start(&b.config());
    let call = fork_call(
        d.ng.unwrap(),
        &["--fork", "ai", "--seconds", "14", "--call-id", "stall@test"],
    );
    let log = d.log_text();
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(
        call["lost"],
        serde_json::json!({"a": 0, "b": 0}),
        "no relay loss while the backend stalls: {call} {log}"
    );
    assert_eq!(call["got"]["a"], 700, "{call}");
    assert_eq!(call["got"]["b"], 700, "{call}");
    let s = b
        .summary(Duration::from_secs(10))
        .expect("the fork closed at delete");
    assert_eq!(s["stalled_s"], 10.0, "{s}");
    let fin = s["track_frames"]["inbound"].as_u64().unwrap();
    eprintln!("after a 10 s stall the backend received {fin} inbound frames of 700");
    // The backend got audio again after its stall (the queue keeps the newest 2 s).
    assert!(fin > 100, "{fin}");
}

/// One SDES peer of the in-process agent test (the crate's SRTP contexts; the relay path itself
/// is checked against libsrtp above and in ng_relay.rs).
struct Peer {
    sock: UdpSocket,
    tx: srtp_edge::srtp::SrtpContext,
    rx: Option<srtp_edge::srtp::SrtpContext>,
    key: Vec<u8>,
}

const SUITE: srtp_edge::srtp::Profile = srtp_edge::srtp::Profile::AesCm128HmacSha1_80;

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let key: Vec<u8> = (0..30u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let tx =
            srtp_edge::srtp::SrtpContext::from_key_salt(SUITE, &key, Default::default()).unwrap();
        Peer {
            sock,
            tx,
            rx: None,
            key,
        }
    }

    fn sdp(&self, tag: u32) -> String {
        use base64::Engine as _;
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\n\
             a=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            self.sock.local_addr().unwrap().port(),
            base64::engine::general_purpose::STANDARD.encode(&self.key)
        )
    }

    /// Reads the relay's port and key for us from the SDP it sent us; returns the crypto tag.
    fn learn(&mut self, sdp: &str) -> (SocketAddr, u32) {
        let parsed = srtp_edge::sdp::Sdp::parse(sdp).unwrap();
        let m = &parsed.media[0];
        let c = m
            .crypto()
            .into_iter()
            .flatten()
            .find(|c| c.suite == SUITE)
            .unwrap();
        self.rx = Some(
            srtp_edge::srtp::SrtpContext::from_key_salt(
                SUITE,
                c.keys[0].key.as_bytes(),
                Default::default(),
            )
            .unwrap(),
        );
        (format!("127.0.0.1:{}", m.port).parse().unwrap(), c.tag)
    }
}

#[test]
fn agent_mode_plays_the_backend_audio_into_the_caller_and_reports_its_hangup() {
    use srtp_edge::fork::ForkMode;
    use srtp_edge::media::calls::{Calls, ForkBackends, ForkStart, Negotiation};
    use srtp_edge::media::worker::Event;

    let b = Backend::start(&[]);
    let cfg = srtp_edge::config::Config::from_toml_str(&b.config()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (engine, mut events) = srtp_edge::media::engine::Engine::start(&cfg.media).unwrap();
    let backend = srtp_edge::fork::Backend::from_config(&cfg.fork.backends[0], &cfg.tls).unwrap();
    let calls = Calls::with_forks(
        engine.clone(),
        ForkBackends::new(vec![backend], rt.handle().clone()),
    );
    // The daemon's event loop, as main.rs runs it.
    let pump = {
        let calls = calls.clone();
        std::thread::spawn(move || {
            while let Some(ev) = events.blocking_recv() {
                match ev {
                    Event::Fork { key, event } => calls.fork_event(key, event),
                    Event::TimedOut { key, .. } => calls.timed_out(key),
                    Event::DtlsFailed { key, reason, .. } => calls.dtls_failed(key, &reason),
                    Event::DtlsRekeyFailed { key, leg, reason } => {
                        calls.dtls_rekey_failed(key, leg, &reason)
                    }
                }
            }
        })
    };
    let mut hangups = calls.fork_hangups();

    let (mut a, mut peer_b) = (Peer::new(), Peer::new());
    let suites = [SUITE];
    let to_b = calls
        .offer(&Negotiation {
            call_id: "agent@test",
            from_tag: "A",
            to_tag: None,
            sdp: a.sdp(1).as_bytes(),
            suites: &suites,
        })
        .unwrap();
    let (_relay_b, tag) = peer_b.learn(&to_b);
    let to_a = calls
        .answer(&Negotiation {
            call_id: "agent@test",
            from_tag: "A",
            to_tag: Some("B"),
            sdp: peer_b.sdp(tag).as_bytes(),
            suites: &suites,
        })
        .unwrap();
    let (relay_a, _) = a.learn(&to_a);
    assert!(matches!(
        calls.start_fork("agent@test", "nope", ForkMode::Agent),
        Err(srtp_edge::media::calls::CallError::UnknownForkBackend)
    ));
    assert_eq!(
        calls
            .start_fork("agent@test", "ai", ForkMode::Agent)
            .unwrap(),
        ForkStart::Started
    );

    // The caller talks (a 1 kHz tone) while the backend's audio comes back.
    let mut played: Vec<(u16, u32, u32, bool, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 2048];
    let start = std::time::Instant::now();
    let mut n: u32 = 0;
    while start.elapsed() < Duration::from_secs(4) {
        if start.elapsed() >= Duration::from_millis(20 * u64::from(n)) {
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xA];
            pkt[2..4].copy_from_slice(&(n as u16 + 1).to_be_bytes());
            pkt[4..8].copy_from_slice(&(n * 160).to_be_bytes());
            pkt.extend((0..160).map(|i| {
                srtp_edge::fork::codec::linear_to_ulaw(
                    (8000.0 * (2.0 * std::f64::consts::PI * f64::from(i) / 8.0).sin()) as i16,
                )
            }));
            let len = pkt.len();
            pkt.resize(len + 16, 0);
            let out = a.tx.protect_rtp(&mut pkt, len).unwrap();
            a.sock.send_to(&pkt[..out], relay_a).unwrap();
            n += 1;
        }
        if let Ok(len) = a.sock.recv(&mut buf) {
            let plain =
                a.rx.as_mut()
                    .unwrap()
                    .unprotect_rtp(&mut buf[..len])
                    .unwrap();
            let p = &buf[..plain];
            let seq = u16::from_be_bytes([p[2], p[3]]);
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            played.push((seq, ts, ssrc, p[1] & 0x80 != 0, p[12..].to_vec()));
            assert_eq!(p[1] & 0x7f, 0, "played in the call's codec");
        }
    }
    // The ramp the backend sent comes back byte for byte, 20 ms per packet, one SSRC, one
    // talkspurt: consecutive sequence numbers and timestamps 160 apart.
    let ramp: Vec<u8> = (0..2400u32).map(|k| ((k * 7 + 3) % 251) as u8).collect();
    assert!(played.len() >= 15, "{} packets played", played.len());
    for (i, (_, _, _, _, payload)) in played[..15].iter().enumerate() {
        assert_eq!(payload[..], ramp[i * 160..(i + 1) * 160], "frame {i}");
    }
    assert!(
        played[0].3,
        "the first packet of a talkspurt has the marker bit"
    );
    for w in played[..15].windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1));
        assert_eq!(w[1].1, w[0].1.wrapping_add(160));
        assert_eq!(w[1].2, w[0].2);
        assert!(!w[1].3);
    }
    assert_ne!(played[0].2, 0xB, "our own SSRC, not the other leg's");
    // After the ramp, the 0x55 audio until the backend's clear (sent 200 ms after m2's echo).
    let after = played[15..].iter().filter(|p| p.4 == [0x55; 160]).count();
    assert!(
        (3..=30).contains(&after),
        "{after} frames of 0x55 before the clear"
    );
    let stats = calls.query("agent@test").unwrap().counters.unwrap();
    assert_eq!(stats.played as usize, played.len(), "{stats:?}");

    // The backend goes away: in agent mode the call is hung up through the control plane.
    drop(b);
    let hung =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), hangups.recv()).await });
    assert_eq!(hung.ok().flatten().as_deref(), Some("agent@test"));
    calls.delete("agent@test").unwrap();
    engine.shutdown();
    pump.join().unwrap();
}

#[test]
fn stopping_the_daemon_ends_forks_with_stop_and_close_1000() {
    let b = Backend::start(&["--no-playback"]);
    let mut d = Daemon::start(&b.config());
    let call = fork_call(d.ng.unwrap(), &["--fork", "ai", "--seconds", "1", "--keep"]);
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(d.stop(), Some(0));
    let s = b
        .summary(Duration::from_secs(5))
        .expect("the backend saw the fork close");
    assert_eq!(s["close_code"], 1000, "{s}");
    assert_eq!(events(&s).last().map(String::as_str), Some("stop"), "{s}");
}

/// An SDES offer/answer from `p` with one audio codec (`pt` `name`) and telephone-event.
fn sdp_with(p: &Peer, tag: u32, pt: u8, name: &str) -> String {
    p.sdp(tag)
        .replace("RTP/SAVP 0 101", &format!("RTP/SAVP {pt} 101"))
        .replace(
            "a=rtpmap:0 PCMU/8000",
            &format!("a=rtpmap:{pt} {name}/8000"),
        )
}

#[test]
fn a_forked_call_switching_pcmu_to_pcma_keeps_the_fork_right_and_g722_stops_it() {
    use srtp_edge::fork::codec::{linear_to_alaw, linear_to_ulaw};
    use srtp_edge::fork::ForkMode;
    use srtp_edge::media::calls::{Calls, ForkBackends, ForkStart, Negotiation};

    let b = Backend::start(&["--no-playback"]);
    let cfg = srtp_edge::config::Config::from_toml_str(&b.config()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (engine, mut media_events) = srtp_edge::media::engine::Engine::start(&cfg.media).unwrap();
    let backend = srtp_edge::fork::Backend::from_config(&cfg.fork.backends[0], &cfg.tls).unwrap();
    let calls = Calls::with_forks(
        engine.clone(),
        ForkBackends::new(vec![backend], rt.handle().clone()),
    );
    let pump = {
        let calls = calls.clone();
        std::thread::spawn(move || {
            while let Some(ev) = media_events.blocking_recv() {
                if let srtp_edge::media::worker::Event::Fork { key, event } = ev {
                    calls.fork_event(key, event);
                }
            }
        })
    };
    let (mut a, mut pb) = (Peer::new(), Peer::new());
    let suites = [SUITE];
    let id = "codec-switch@test";
    // One offer/answer round: A offers `pt`, B answers it; the relay's address for each.
    let round = |a: &mut Peer, pb: &mut Peer, pt: u8, name: &str| {
        let to_b = calls
            .offer(&Negotiation {
                call_id: id,
                from_tag: "A",
                to_tag: None,
                sdp: sdp_with(a, 1, pt, name).as_bytes(),
                suites: &suites,
            })
            .unwrap();
        let (relay_b, tag) = pb.learn(&to_b);
        let to_a = calls
            .answer(&Negotiation {
                call_id: id,
                from_tag: "A",
                to_tag: Some("B"),
                sdp: sdp_with(pb, tag, pt, name).as_bytes(),
                suites: &suites,
            })
            .unwrap();
        let (relay_a, _) = a.learn(&to_a);
        (relay_a, relay_b)
    };
    let (relay_a, relay_b) = round(&mut a, &mut pb, 0, "PCMU");
    assert_eq!(
        calls.start_fork(id, "ai", ForkMode::Fork).unwrap(),
        ForkStart::Started
    );
    // Both peers talk (A 600 Hz, B 1 kHz) for `secs` in codec `pt`; sequence numbers go on.
    let mut n: u32 = 0;
    let mut talk = |a: &mut Peer, pb: &mut Peer, pt: u8, secs: u64| {
        let start = std::time::Instant::now();
        let first = n;
        let mut buf = [0u8; 2048];
        while start.elapsed() < Duration::from_secs(secs) {
            if start.elapsed() >= Duration::from_millis(20 * u64::from(n - first)) {
                for (p, relay, ssrc, hz) in [
                    (&mut *a, relay_a, 0xAu8, 600.0),
                    (&mut *pb, relay_b, 0xB, 1000.0),
                ] {
                    let mut pkt = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, ssrc];
                    pkt[2..4].copy_from_slice(&(n as u16 + 1).to_be_bytes());
                    pkt[4..8].copy_from_slice(&(n * 160).to_be_bytes());
                    pkt.extend((0..160u32).map(|i| {
                        let t = f64::from(n * 160 + i) / 8000.0;
                        let s = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
                        if pt == 8 {
                            linear_to_alaw(s)
                        } else {
                            linear_to_ulaw(s)
                        }
                    }));
                    let len = pkt.len();
                    pkt.resize(len + 16, 0);
                    let out = p.tx.protect_rtp(&mut pkt, len).unwrap();
                    p.sock.send_to(&pkt[..out], relay).unwrap();
                }
                n += 1;
            }
            // Keep the peers' sockets drained.
            let _ = a.sock.recv(&mut buf);
            let _ = pb.sock.recv(&mut buf);
        }
        n - first
    };
    let sent_pcmu = talk(&mut a, &mut pb, 0, 2);
    // Re-INVITE switching the call to PCMA: the fork goes on, transcoding.
    round(&mut a, &mut pb, 8, "PCMA");
    assert!(calls.fork_of(id).is_some(), "fork kept on PCMU -> PCMA");
    let sent_pcma = talk(&mut a, &mut pb, 8, 2);
    assert!(calls.fork_of(id).is_some());
    // Another re-INVITE to G.722: the fork cannot take it and is stopped; the call goes on.
    round(&mut a, &mut pb, 9, "G722");
    assert!(calls.fork_of(id).is_none(), "fork stopped on G.722");
    let s = b.summary(Duration::from_secs(10)).expect("backend summary");
    eprintln!("backend: {}", s);
    assert_eq!(events(&s).last().map(String::as_str), Some("stop"), "{s}");
    assert_eq!(s["close_code"], 1000, "{s}");
    // Both tracks got the PCMA half too (not only the PCMU half), and as the right tone.
    let sent = u64::from(sent_pcmu + sent_pcma);
    for (track, hz) in [("inbound", "600"), ("outbound", "1000")] {
        let frames = s["track_frames"][track].as_u64().unwrap_or(0);
        assert!(
            frames * 10 >= sent * 8,
            "{track}: {frames} frames of {sent} sent reached the fork: {s}"
        );
        assert!(db(&s, track, hz) > -1.0, "{track} not a clean {hz} Hz: {s}");
    }
    calls.delete(id).unwrap();
    engine.shutdown();
    pump.join().unwrap();
}

#[test]
fn an_agent_call_holds_one_media_port_pair_and_frees_it() {
    use srtp_edge::media::calls::{Calls, ForkBackends, ForkMeta, Negotiation};

    let b = Backend::start(&["--no-playback"]);
    let cfg = srtp_edge::config::Config::from_toml_str(&b.config()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (engine, _media_events) = srtp_edge::media::engine::Engine::start(&cfg.media).unwrap();
    let backend = srtp_edge::fork::Backend::from_config(&cfg.fork.backends[0], &cfg.tls).unwrap();
    let calls = Calls::with_forks(
        engine.clone(),
        ForkBackends::new(vec![backend], rt.handle().clone()),
    );
    let (a, c) = (Peer::new(), Peer::new());
    let suites = [SUITE];
    let n = |id: &'static str, p: &Peer| (id, p.sdp(1));
    let (id, sdp) = n("agent-ports@test", &a);
    let answer = calls
        .offer_agent(
            &Negotiation {
                call_id: id,
                from_tag: "A",
                to_tag: None,
                sdp: sdp.as_bytes(),
                suites: &suites,
            },
            "ai",
            ForkMeta::default(),
        )
        .unwrap();
    assert!(
        answer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80"),
        "{answer}"
    );
    // The caller's leg only: the backend is the other party, no second port pair is held.
    assert_eq!(engine.ports_in_use(), 1);
    // A relayed call holds two, as before.
    let (id2, sdp2) = n("relayed-ports@test", &c);
    calls
        .offer(&Negotiation {
            call_id: id2,
            from_tag: "A",
            to_tag: None,
            sdp: sdp2.as_bytes(),
            suites: &suites,
        })
        .unwrap();
    assert_eq!(engine.ports_in_use(), 3);
    calls.delete(id).unwrap();
    assert_eq!(engine.ports_in_use(), 2);
    calls.delete(id2).unwrap();
    assert_eq!(engine.ports_in_use(), 0);
    engine.shutdown();
}
