//! Agent routes with DTLS-SRTP and mid-call re-offers, against real peers: the caller is
//! interop/sip/aiortc_ua.py (aiortc: its own ECDSA certificate, DTLS, SRTP and ICE; or, with
//! `--sdes-rekey`, a libsrtp SDES caller via PyPI `pylibsrtp`), the agent backend is
//! interop/fork/backend.py (Python `websockets` TLS server, Twilio Media Streams).
//!
//! - aiortc offers `UDP/TLS/RTP/SAVPF` to an agent route: srtp-edge answers with its own
//!   fingerprint and runs the handshake on the caller's leg; the backend gets aiortc's 440 Hz
//!   (frequency checked on the decoded μ-law) and aiortc hears the backend's 1 kHz.
//! - an SDES caller re-keys (re-INVITE with a new key: taken; our key kept, RFC 4568 7.1.4),
//!   holds (a=sendonly: answered recvonly, the backend's audio is not played) and resumes
//!   (played again), hearing the backend in every phase but the hold.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::b2bua::{start_edge_cfg, Edge};
use common::interop::{interop_dir, make_certs, Proc, CALLEE_TONE_HZ, CALLER_TONE_HZ};
use serde_json::Value as Json;

/// One peer test at a time: they share the CPU with the daemon.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// backend.py playing 1 kHz in Twilio mode, killed on drop.
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
    fn start(d: &Path) -> Backend {
        let mut child = Command::new("python3")
            .arg(interop_dir().join("fork/backend.py"))
            .arg("--cert")
            .arg(d.join("cert.pem"))
            .arg("--key")
            .arg(d.join("key.pem"))
            .args(["--port", "0", "--mode", "twilio", "--tone", "1000"])
            .args(["--freqs", &format!("{CALLER_TONE_HZ},{CALLEE_TONE_HZ}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with websockets (interop/requirements.txt)");
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
            .expect("backend did not start");
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

    fn summary(&self, within: Duration) -> Option<Json> {
        self.lines
            .recv_timeout(within)
            .ok()
            .and_then(|l| serde_json::from_str(&l).ok())
    }
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    dir
}

/// The edge with one loopback trunk and an agent route to `backend`.
fn edge(d: &Path, backend: &Backend) -> Edge {
    start_edge_cfg(
        d,
        &format!(
            "[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:{}/agent\"\n\
             protocol = \"twilio\"\nca_file = {:?}\nconnect_timeout_secs = 3\n\
             [[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\n\
             [[routes]]\nagent = \"ai\"\n",
            backend.port,
            d.join("ca.pem")
        ),
    )
}

/// Runs aiortc_ua.py as a caller of the agent route with `extra` arguments; its JSON result.
fn call(d: &Path, edge: &Edge, secs: u64, extra: &[&str]) -> (Json, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(interop_dir().join("sip").join("aiortc_ua.py"))
        .args([
            "--call",
            &format!("sip:bot@{};transport=tls", edge.sip),
            "--connect",
            &edge.sip.to_string(),
            "--ca",
            &d.join("ca.pem").display().to_string(),
            "--secs",
            &secs.to_string(),
            "--hz",
            &CALLER_TONE_HZ.to_string(),
            "--listen-hz",
            &CALLEE_TONE_HZ.to_string(),
        ])
        .args(extra);
    let mut p = Proc::spawn("aiortc", cmd, &d.join("aiortc.log"))
        .expect("python3 (interop/install-peers.sh installs aiortc)");
    p.wait_exit(Duration::from_secs(secs + 90));
    let log = p.log_text();
    let r = log
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or(Json::Null);
    (r, log)
}

fn inbound_purity(s: &Json) -> f64 {
    s["track_tone_db"]["inbound"][format!("{}", CALLER_TONE_HZ as u32)]
        .as_f64()
        .unwrap_or(-999.0)
}

#[test]
fn aiortc_dtls_caller_talks_to_the_agent_backend_both_ways() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let backend = Backend::start(d);
    let edge = edge(d, &backend);
    let secs = 8;
    let (r, log) = call(d, &edge, secs, &[]);
    let summary = backend.summary(Duration::from_secs(15));
    let released = edge.wait_no_media(Duration::from_secs(10));
    let all = format!("{log}\n===== srtp-edge =====\n{}", edge.daemon.log_text());
    eprintln!("aiortc: {r}");
    assert_eq!(r["status"], 200, "{all}");
    assert_eq!(r["offer_proto"], "UDP/TLS/RTP/SAVPF", "{r}");
    // Our answer keeps the offerer's DTLS profile (no a=crypto).
    assert_eq!(r["peer_proto"], "UDP/TLS/RTP/SAVPF", "{r}\n{all}");
    assert_eq!(r["connection"], "connected", "{r}\n{all}");
    assert_eq!(r["ok"], true, "{r}\n{all}");
    // 50 frames/s; half the call allows for ICE/DTLS set-up on a loaded machine.
    let want = secs * 50 / 2;
    assert!(
        r["tone"].as_u64().unwrap_or(0) >= want,
        "aiortc heard the backend's 1 kHz in fewer than {want} frames: {r}\n{all}"
    );
    let s = summary.unwrap_or_else(|| panic!("no backend summary\n{all}"));
    eprintln!("backend: {}", s["track_tone_db"]);
    assert!(
        inbound_purity(&s) > -1.0,
        "backend did not get aiortc's 440 Hz through the DTLS leg: {s}\n{all}"
    );
    assert!(released, "media ports held: {}\n{all}", edge.media_calls());
    let elog = edge.daemon.log_text();
    assert!(elog.contains("dtls=true"), "{elog}");
}

#[test]
fn sdes_caller_rekeys_holds_and_resumes_an_agent_call() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = setup();
    let d = dir.path();
    let backend = Backend::start(d);
    let edge = edge(d, &backend);
    let secs = 16;
    let (r, log) = call(d, &edge, secs, &["--sdes-rekey", "--hold"]);
    let summary = backend.summary(Duration::from_secs(15));
    let released = edge.wait_no_media(Duration::from_secs(10));
    let all = format!("{log}\n===== srtp-edge =====\n{}", edge.daemon.log_text());
    eprintln!("sdes caller: {r}");
    assert_eq!(r["status"], 200, "{all}");
    assert_eq!(r["rekey_status"], 200, "re-key refused: {r}\n{all}");
    assert_eq!(r["hold_status"], 200, "hold refused: {r}\n{all}");
    assert_eq!(r["resume_status"], 200, "resume refused: {r}\n{all}");
    assert_eq!(r["ok"], true, "{r}\n{all}");
    // RFC 4568 7.1.4: our key towards the caller is the same in the re-answer.
    assert_eq!(r["edge_key_kept"], true, "{r}");
    // The hold is answered recvonly (the caller sends only).
    assert_eq!(r["hold_answer_dir"], serde_json::json!(["recvonly"]), "{r}");
    let heard = |k: &str| r[k].as_u64().unwrap_or(0);
    // Phases (of 16 s): 0-4.8 s, 4.8-8.8 s after the re-key, 8.8-12.8 s held, 12.8-16 s
    // resumed; half of each phase's frames at least, for the loaded machine.
    assert!(heard("heard_before") >= 80, "{r}\n{all}");
    assert!(
        heard("heard_after") >= 80,
        "backend not heard after the re-key: {r}\n{all}"
    );
    assert!(
        heard("heard_hold") <= 3,
        "backend audio played while the call was on hold: {r}\n{all}"
    );
    assert!(
        heard("heard_resumed") >= 50,
        "backend not heard after the resume: {r}\n{all}"
    );
    let s = summary.unwrap_or_else(|| panic!("no backend summary\n{all}"));
    eprintln!("backend: {}", s["track_tone_db"]);
    // The caller's tone reached the backend across the re-key (the new inbound key was taken).
    assert!(inbound_purity(&s) > -1.0, "{s}\n{all}");
    let frames = s["track_frames"]["inbound"].as_u64().unwrap_or(0);
    assert!(
        frames >= (secs * 50 / 2),
        "backend got {frames} frames of the caller: the new key was not taken? {s}\n{all}"
    );
    assert!(released, "media ports held: {}\n{all}", edge.media_calls());
    let elog = edge.daemon.log_text();
    assert!(
        elog.contains("hold=true") && elog.contains("hold=false"),
        "{elog}"
    );
}
