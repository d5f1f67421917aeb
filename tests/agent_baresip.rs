//! Agent mode and route forks on the SIP B2BUA with real peers: baresip (Debian; SIP over TLS,
//! `mediaenc=srtp-mand`) calls srtp-edge, and the AI backend is `interop/fork/backend.py` (a
//! Python `websockets` TLS server speaking Twilio Media Streams, written independently).
//!
//! - agent route, backend hangs up: baresip's 440 Hz reaches the backend (frequency checked on
//!   the decoded μ-law), the backend's 1 kHz is in baresip's recording, and the backend's `stop`
//!   gets baresip a BYE (and the backend our `stop` and a close 1000); ports released.
//! - agent route to a Pipecat bot (`pipecat-ai`): Pipecat's telephony runner recognises our
//!   `start`, its Twilio serializer decodes our audio (440 Hz) and its serialized 1 kHz is heard
//!   by baresip; the bot's close gets baresip a BYE.
//! - agent route, caller hangs up: the backend gets `stop`, then a close 1000.
//! - agent route whose backend is down: 503 to the caller, ports released.
//! - SIP-to-SIP route with a fork: the backend gets both tracks (caller 440 Hz inbound, callee
//!   1 kHz outbound); killed mid-call, the call goes on (both recordings keep their tone) and the
//!   fork reconnects to the restarted backend with a new `start`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::b2bua::{invite, sdp_offer, start_edge_cfg, status_of, Edge, SipClient};
use common::interop::{
    analyse_recording, fill, free_port_pair, interop_dir, make_certs, newest_matching, port_range,
    tcp_up, wait_until, write_tone_wav, Proc, CALLEE_TONE_HZ, CALLER_TONE_HZ,
};
use serde_json::Value as Json;

/// One baresip test at a time: they share the CPU with the daemon and the analysis.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The Python backend, killed on drop.
struct Backend {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Backend {
    /// Starts backend.py with the test's certificate on `port` (0: any).
    fn start(d: &Path, port: u16, args: &[&str]) -> Backend {
        let mut all = vec!["--mode", "twilio"];
        all.extend_from_slice(args);
        Backend::script(d, "fork/backend.py", port, &all)
    }

    /// Starts the Pipecat backend (interop/fork/pipecat_backend.py).
    fn pipecat(d: &Path, args: &[&str]) -> Backend {
        Backend::script(d, "fork/pipecat_backend.py", 0, args)
    }

    fn script(d: &Path, script: &str, port: u16, args: &[&str]) -> Backend {
        let mut child = Command::new("python3")
            .arg(interop_dir().join(script))
            .arg("--cert")
            .arg(d.join("cert.pem"))
            .arg("--key")
            .arg(d.join("key.pem"))
            .args(["--port", &port.to_string()])
            .args(["--freqs", &format!("{CALLER_TONE_HZ},{CALLEE_TONE_HZ}")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with websockets and pipecat-ai (interop/requirements.txt) is needed");
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
            .recv_timeout(Duration::from_secs(60))
            .expect("backend did not start (pipecat-ai and websockets installed?)");
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Backend {
            child,
            lines: rx,
            port,
        }
    }

    /// The summary line the backend prints when a connection closes.
    fn summary(&self, within: Duration) -> Option<Json> {
        self.lines
            .recv_timeout(within)
            .ok()
            .map(|l| serde_json::from_str(&l).unwrap())
    }
}

/// `[[fork.backends]]` named `ai` at `port`, verified with the test CA.
fn backend_cfg(d: &Path, port: u16) -> String {
    format!(
        "[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:{port}/agent\"\n\
         protocol = \"twilio\"\nca_file = {:?}\nconnect_timeout_secs = 3\n",
        d.join("ca.pem")
    )
}

const TRUNK: &str = "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\n";

fn events(s: &Json) -> Vec<String> {
    s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// Purity (dB; 0 is a pure tone) of `hz` on `track` of a backend summary.
fn db(s: &Json, track: &str, hz: f64) -> f64 {
    s["track_tone_db"][track][format!("{}", hz as u32)]
        .as_f64()
        .unwrap_or(-999.0)
}

/// Writes a baresip config for `side` on fresh SIP ports; returns the base port (TLS is +1).
fn write_ua(d: &Path, side: &str, tpl_dir: &str, rtp: (u16, u16)) -> u16 {
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
    for f in ["config", "accounts"] {
        let t = std::fs::read_to_string(tpl.join(tpl_dir).join(f)).unwrap();
        std::fs::write(d.join(side).join(f), fill(&t, &vars)).unwrap();
    }
    port
}

/// Starts a baresip caller dialing `user` at the edge, quitting after `secs`.
fn caller(d: &Path, edge: &Edge, user: &str, secs: u64) -> Proc {
    write_ua(d, "caller", "caller", port_range(100));
    let mut cmd = Command::new("baresip");
    cmd.arg("-f")
        .arg(d.join("caller"))
        .args(["-t", &secs.to_string()])
        .arg("-e")
        .arg(format!("/dial sip:{user}@{};transport=tls", edge.sip));
    Proc::spawn("caller", cmd, &d.join("caller.log")).unwrap()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    write_tone_wav(&dir.path().join("caller.wav"), CALLER_TONE_HZ, 90);
    write_tone_wav(&dir.path().join("callee.wav"), CALLEE_TONE_HZ, 90);
    dir
}

fn logs(edge: &Edge, procs: &[&Proc]) -> String {
    let mut s = String::new();
    for p in procs {
        s.push_str(&format!("===== baresip =====\n{}\n", p.log_text()));
    }
    s.push_str(&format!(
        "===== srtp-edge =====\n{}",
        edge.daemon.log_text()
    ));
    s
}

#[test]
fn agent_route_backend_talks_and_hangs_up_with_bye_to_baresip() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    // The backend ends the stream with a Twilio `stop` (the Pipecat test below closes instead).
    let backend = Backend::start(
        d,
        0,
        &[
            "--tone",
            "1000",
            "--hangup-after",
            "9",
            "--hangup-with",
            "stop",
        ],
    );
    // The DESIGN.md shape: a route whose target is the backend's wss:// URL.
    let edge = start_edge_cfg(
        d,
        &format!(
            "{}{TRUNK}[[routes]]\ntarget = \"wss://127.0.0.1:{}/agent\"\n",
            backend_cfg(d, backend.port),
            backend.port
        ),
    );
    let mut caller = caller(d, &edge, "agent", 60);
    let established = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("Call established")
    });
    assert!(established, "not established\n{}", logs(&edge, &[&caller]));
    let t0 = Instant::now();
    // The backend hangs up 9 s after `start`: baresip gets a BYE long before its own -t 60.
    let bye = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("terminated")
    });
    let call_secs = t0.elapsed();
    let still_running = !caller.exited();
    let summary = backend.summary(Duration::from_secs(10));
    let released = edge.wait_no_media(Duration::from_secs(10));
    caller.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let all = logs(&edge, &[&caller]);
    assert!(bye && still_running, "baresip got no BYE\n{all}");
    eprintln!("call lasted {call_secs:?} after establishment");
    let s = summary.unwrap_or_else(|| panic!("no backend summary\n{all}"));
    eprintln!(
        "backend: events {:?} tone_db {}",
        events(&s),
        s["track_tone_db"]
    );
    assert_eq!(s["hung_up"], Json::Bool(true), "{s}");
    // Its `stop` was answered with ours and a close 1000.
    assert_eq!(s["close_code"], 1000, "{s}");
    assert_eq!(events(&s).last().map(String::as_str), Some("stop"), "{s}");
    assert_eq!(s["tls"], "TLSv1.3");
    let ev = events(&s);
    assert_eq!(&ev[..3], ["connected", "start", "media"], "{ev:?}");
    assert_eq!(
        s["start"]["start"]["tracks"],
        serde_json::json!(["inbound"])
    );
    assert!(
        s["media"]["outbound"].is_null(),
        "agent mode sends the caller's track only"
    );
    assert!(
        db(&s, "inbound", CALLER_TONE_HZ) > -1.0,
        "backend did not get baresip's 440 Hz: {s}"
    );
    let heard = analyse_recording(
        newest_matching(&d.join("rec_caller"), "-dec.wav"),
        CALLEE_TONE_HZ,
        CALLER_TONE_HZ,
    );
    eprintln!("baresip heard: {heard:?}");
    assert!(
        heard.tone_secs() >= 5.0 && heard.tone_share > 0.6 && heard.own_tone_share < 0.1,
        "baresip did not hear the backend's 1 kHz: {heard:?}\n{all}"
    );
    assert!(released, "media ports held: {}\n{all}", edge.media_calls());
    let dlog = edge.daemon.log_text();
    assert!(
        dlog.contains("agent call answered") && dlog.contains("agent backend hung up: BYE"),
        "{dlog}"
    );
}

#[test]
fn agent_route_caller_hangs_up_and_the_backend_gets_stop_and_close_1000() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let backend = Backend::start(d, 0, &["--tone", "1000"]);
    // The explicit shape: agent = "<backend name>".
    let edge = start_edge_cfg(
        d,
        &format!(
            "{}{TRUNK}[[routes]]\nuser_prefix = \"bot\"\nagent = \"ai\"\n",
            backend_cfg(d, backend.port)
        ),
    );
    let mut caller = caller(d, &edge, "bot", 8);
    let established = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("Call established")
    });
    caller.wait_exit(Duration::from_secs(30));
    let summary = backend.summary(Duration::from_secs(15));
    let released = edge.wait_no_media(Duration::from_secs(10));
    let all = logs(&edge, &[&caller]);
    assert!(established, "not established\n{all}");
    let s = summary.unwrap_or_else(|| panic!("no backend summary\n{all}"));
    let ev = events(&s);
    eprintln!("backend events {ev:?}");
    assert_eq!(ev.last().map(String::as_str), Some("stop"), "{ev:?}");
    assert_eq!(s["close_code"], 1000, "{s}");
    assert!(db(&s, "inbound", CALLER_TONE_HZ) > -1.0, "{s}");
    // The start names the route, the numbers masked by default.
    let params = &s["start"]["start"]["customParameters"];
    assert_eq!(params["route"], "route0", "{s}");
    assert!(
        !params["from"].as_str().unwrap_or("").contains("caller"),
        "{s}"
    );
    assert!(released, "media ports held: {}\n{all}", edge.media_calls());
}

#[test]
fn agent_route_with_the_backend_down_gets_503_and_frees_the_ports() {
    let dir = setup();
    let d = dir.path();
    // A port nobody listens on.
    let dead = free_port_pair();
    let edge = start_edge_cfg(
        d,
        &format!(
            "{}{TRUNK}[[routes]]\nagent = \"ai\"\n",
            backend_cfg(d, dead)
        ),
    );
    let mut c = SipClient::connect(edge.sip, &d.join("ca.pem"));
    let local = c.local();
    c.send(invite(edge.sip, local, "bot", "agent503", &sdp_offer(40000, true)).as_bytes());
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match c.recv(Duration::from_secs(1)) {
            Some(m) => {
                statuses.push(status_of(&m));
                if status_of(&m) >= 200 {
                    assert!(m.contains("Retry-After"), "{m}");
                    break;
                }
            }
            None => continue,
        }
    }
    assert_eq!(statuses, [100, 503], "{}", edge.daemon.log_text());
    assert!(
        edge.wait_no_media(Duration::from_secs(5)),
        "ports held: {}",
        edge.media_calls()
    );
    // A plaintext offer on the agent route: 488, nothing anchored, no backend contacted.
    c.send(invite(edge.sip, local, "bot", "agent488", &sdp_offer(40002, false)).as_bytes());
    let m = c.expect_status(488, Duration::from_secs(10));
    assert!(m.contains("SRTP required"), "{m}");
    // An offer without PCMU/PCMA: the backend could not take the audio; 488, nothing anchored.
    let g722 = sdp_offer(40004, true)
        .replace("RTP/SAVP 0", "RTP/SAVP 9")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:9 G722/8000");
    c.send(invite(edge.sip, local, "bot", "agent722", &g722).as_bytes());
    let m = c.expect_status(488, Duration::from_secs(10));
    assert!(m.contains("PCMU or PCMA required"), "{m}");
    assert!(edge.wait_no_media(Duration::from_secs(5)));
}

/// Starts a listening baresip callee; returns it and its TLS address.
fn callee(d: &Path, secs: u64) -> (Proc, SocketAddr) {
    for attempt in 0..3 {
        let port = write_ua(d, "callee", "callee", port_range(100));
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

#[test]
fn forked_route_copies_both_tracks_and_survives_the_backend_dying() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let backend = Backend::start(d, 0, &["--no-playback"]);
    let port = backend.port;
    let (mut callee, callee_tls) = callee(d, 90);
    let edge = start_edge_cfg(
        d,
        &format!(
            "{}{TRUNK}[[routes]]\ntarget = \"sip:{callee_tls};transport=tls\"\nfork = \"ai\"\n",
            backend_cfg(d, port)
        ),
    );
    let call_secs = 20;
    let mut caller = caller(d, &edge, "callee", call_secs);
    let established = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("Call established")
    });
    assert!(
        established,
        "not established\n{}",
        logs(&edge, &[&caller, &callee])
    );
    // Let the fork run, then kill the backend (no close handshake) and bring it back.
    std::thread::sleep(Duration::from_secs(5));
    drop(backend);
    std::thread::sleep(Duration::from_secs(1));
    let backend = Backend::start(d, port, &["--no-playback"]);
    caller.wait_exit(Duration::from_secs(call_secs + 30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !callee.log_text().contains("terminated") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let summary = backend.summary(Duration::from_secs(15));
    let released = edge.wait_no_media(Duration::from_secs(10));
    callee.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let all = logs(&edge, &[&caller, &callee]);
    let s = summary.unwrap_or_else(|| panic!("the fork did not reconnect\n{all}"));
    let ev = events(&s);
    eprintln!(
        "reconnected backend: events {ev:?} frames {} tone_db {}",
        s["track_frames"], s["track_tone_db"]
    );
    assert_eq!(&ev[..2], ["connected", "start"], "a new start: {ev:?}");
    assert_eq!(ev.last().map(String::as_str), Some("stop"));
    assert_eq!(s["close_code"], 1000);
    assert_eq!(
        s["start"]["start"]["tracks"],
        serde_json::json!(["inbound", "outbound"])
    );
    assert!(
        db(&s, "inbound", CALLER_TONE_HZ) > -1.0,
        "caller track: {s}"
    );
    assert!(
        db(&s, "outbound", CALLEE_TONE_HZ) > -1.0,
        "callee track: {s}"
    );
    for t in ["inbound", "outbound"] {
        assert!(
            s["track_frames"][t].as_u64().unwrap_or(0) >= 200,
            "{t}: at least 4 s after the reconnect: {s}"
        );
    }
    // The call itself never noticed: both sides heard each other for the whole call.
    for (who, hz, own) in [
        ("caller", CALLEE_TONE_HZ, CALLER_TONE_HZ),
        ("callee", CALLER_TONE_HZ, CALLEE_TONE_HZ),
    ] {
        let heard = analyse_recording(
            newest_matching(&d.join(format!("rec_{who}")), "-dec.wav"),
            hz,
            own,
        );
        eprintln!("{who} heard: {heard:?}");
        assert!(
            heard.tone_secs() >= 10.0
                && heard.tone_secs() >= heard.secs - 3.0
                && heard.tone_share > 0.6,
            "{who}'s audio was disturbed by the fork: {heard:?}\n{all}"
        );
    }
    assert!(released, "media ports held: {}\n{all}", edge.media_calls());
    let dlog = edge.daemon.log_text();
    assert!(dlog.contains("fork reconnecting"), "{dlog}");
}

#[test]
fn agent_route_to_a_pipecat_bot_twilio_serializer_both_ways() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let backend = Backend::pipecat(d, &["--tone", "1000", "--hangup-after", "8"]);
    let edge = start_edge_cfg(
        d,
        &format!(
            "{}{TRUNK}[[routes]]\nagent = \"ai\"\n",
            backend_cfg(d, backend.port)
        ),
    );
    let mut caller = caller(d, &edge, "bot", 60);
    let established = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("Call established")
    });
    let bye = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("terminated")
    });
    let summary = backend.summary(Duration::from_secs(10));
    let released = edge.wait_no_media(Duration::from_secs(10));
    caller.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let all = logs(&edge, &[&caller]);
    assert!(established && bye, "call or BYE missing\n{all}");
    let s = summary.unwrap_or_else(|| panic!("no pipecat summary\n{all}"));
    eprintln!("pipecat: {s}");
    assert!(s["error"].is_null(), "{s}");
    // Pipecat's runner recognised our `start` as Twilio's, with its ids.
    assert_eq!(s["transport"], "twilio", "{s}");
    assert!(
        s["stream_id"].as_str().unwrap_or("").starts_with("MZ"),
        "{s}"
    );
    assert!(s["call_id"].as_str().unwrap_or("").starts_with("CA"), "{s}");
    // Its serializer decoded our media into 16 kHz PCM carrying the caller's 440 Hz.
    assert_eq!(s["rate_in"], 16000);
    assert!(s["secs_in"].as_f64().unwrap_or(0.0) >= 5.0, "{s}");
    // (Pipecat's stream resampler restarts after 200 ms without input, so a delivery hiccup on
    // a loaded machine leaves a transient: the tone must dominate, not be perfectly pure.)
    assert!(
        s["tone_db"]["440"].as_f64().unwrap_or(-999.0) > -3.0,
        "pipecat did not get the caller's 440 Hz: {s}"
    );
    assert!(s["tone_db"]["1000"].as_f64().unwrap_or(0.0) < -20.0, "{s}");
    // Its serialized output (1 kHz from 16 kHz PCM) was played into the call.
    assert!(s["secs_out"].as_f64().unwrap_or(0.0) >= 5.0, "{s}");
    let heard = analyse_recording(
        newest_matching(&d.join("rec_caller"), "-dec.wav"),
        CALLEE_TONE_HZ,
        CALLER_TONE_HZ,
    );
    eprintln!("baresip heard: {heard:?}");
    assert!(
        heard.tone_secs() >= 5.0 && heard.tone_share > 0.6 && heard.own_tone_share < 0.1,
        "baresip did not hear pipecat's 1 kHz: {heard:?}\n{all}"
    );
    assert!(released, "media ports held: {}\n{all}", edge.media_calls());
}

#[test]
fn agent_route_l16_16k_tone_both_ways() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    // backend.py in L16 mode at 16 kHz: it plays 1 kHz and says `disconnect` after 9 s.
    let backend = Backend::script(
        d,
        "fork/backend.py",
        0,
        &[
            "--mode",
            "l16",
            "--rate",
            "16000",
            "--tone",
            "1000",
            "--hangup-after",
            "9",
        ],
    );
    let cfg = format!(
        "[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:{}/l16\"\n\
         protocol = \"l16\"\nsample_rate = 16000\nca_file = {:?}\nconnect_timeout_secs = 3\n\
         {TRUNK}[[routes]]\nagent = \"ai\"\n",
        backend.port,
        d.join("ca.pem")
    );
    let edge = start_edge_cfg(d, &cfg);
    let mut caller = caller(d, &edge, "l16bot", 60);
    let established = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("Call established")
    });
    assert!(established, "not established\n{}", logs(&edge, &[&caller]));
    let bye = wait_until(&mut caller, Duration::from_secs(30), |p| {
        p.log_text().contains("terminated")
    });
    let summary = backend.summary(Duration::from_secs(10));
    let released = edge.wait_no_media(Duration::from_secs(10));
    caller.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let all = logs(&edge, &[&caller]);
    assert!(
        bye,
        "baresip got no BYE after the backend's disconnect\n{all}"
    );
    let s = summary.unwrap_or_else(|| panic!("no backend summary\n{all}"));
    eprintln!(
        "backend: {} binary frames, l16 tone purity (dB) {}",
        s["binary_lens"].as_array().map_or(0, Vec::len),
        s["l16_tone_db"]
    );
    let pre = &s["preamble"];
    assert_eq!(pre["event"], "websocket:connected", "{s}");
    assert!(
        pre.to_string().contains("16000"),
        "the preamble names the rate: {pre}"
    );
    assert!(events(&s).contains(&"binary".to_string()), "{s}");
    // 440 Hz resampled to 16 kHz L16 reaches the backend as a clean tone.
    let hz = format!("{}", CALLER_TONE_HZ as u32);
    let purity = s["l16_tone_db"][&hz].as_f64().unwrap_or(-999.0);
    assert!(
        purity > -1.0,
        "backend did not get baresip's {hz} Hz as 16 kHz L16: {s}"
    );
    // Enough audio: at least 5 s at 16 kHz.
    assert!(
        s["inbound_samples"].as_u64().unwrap_or(0) > 5 * 16000,
        "{s}"
    );
    let heard = analyse_recording(
        newest_matching(&d.join("rec_caller"), "-dec.wav"),
        CALLEE_TONE_HZ,
        CALLER_TONE_HZ,
    );
    eprintln!("baresip heard: {heard:?}");
    assert!(
        heard.tone_secs() >= 5.0 && heard.tone_share > 0.6 && heard.own_tone_share < 0.1,
        "baresip did not hear the backend's 1 kHz (16 kHz L16 downsampled): {heard:?}\n{all}"
    );
    assert!(released, "media ports held: {}\n{all}", edge.media_calls());
}
