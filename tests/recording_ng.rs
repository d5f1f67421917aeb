//! Encrypted call recording driven through ng, against the real daemon with libsrtp peers
//! (PyPI pylibsrtp): `start recording` and `record-call`, the WAV export (caller left, callee
//! right), an independent Python reader (PyPI `cryptography`, written from
//! docs/recording-format.md), no plaintext audio on disk, tamper detection, shredding, the audit
//! chain, and recording being off by default.

mod common;
#[path = "recording/mod.rs"]
mod recording;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Daemon;
use recording::{cli, needles, plaintext_hits, tone_call, tone_level, wait_sealed, wav_channels};

const ON: &str =
    "[media]\nport_min = 41000\nport_max = 41999\n[recording]\nenabled = true\nchunk_ms = 200\n";

fn config(d: &Daemon) -> PathBuf {
    d.dir.path().join("srtp-edge.toml")
}

fn rec_path(d: &Daemon, id: &str) -> PathBuf {
    d.state.join("recordings").join(format!("{id}.srec"))
}

fn python_reader(file: &Path, kek: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/recording/read_recording.py"
        ))
        .arg(file)
        .arg("--kek-file")
        .arg(kek)
        .args(["--tone", "440", "--tone", "1000"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "reader printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn start_recording_seals_both_tracks_that_export_and_an_independent_reader_decrypt() {
    let d = Daemon::start(ON);
    let ng = d.ng.unwrap();
    let call = tone_call(ng, &["--start-recording", "--packets", "150"]);
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["ng"]["start_recording"], "ok", "{call}");
    let ids = wait_sealed(&config(&d), 1);
    let file = rec_path(&d, &ids[0]);

    // Nothing plaintext on disk: the tones' G.711 payloads and their PCM, anywhere under the
    // recordings directory, the state directory and /tmp (before anything is exported).
    let mut n = needles(call["payloads"]["a"].as_str().unwrap());
    n.extend(needles(call["payloads"]["b"].as_str().unwrap()));
    let hits = plaintext_hits(&[d.state.clone(), PathBuf::from("/tmp")], &n);
    assert!(hits.is_empty(), "plaintext audio found in {hits:?}");
    // The search does find a plaintext copy (the test would otherwise prove nothing).
    let bait = d.dir.path().join("bait.raw");
    std::fs::write(
        &bait,
        hex::decode(call["payloads"]["b"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        plaintext_hits(&[d.dir.path().to_path_buf()], &n),
        vec![bait.clone()]
    );
    std::fs::remove_file(&bait).unwrap();

    let (ok, out) = cli(&config(&d), &["recording", "verify", &ids[0]]);
    assert!(ok, "{out}");
    assert!(out.contains("300 frames"), "{out}");

    // The WAV: caller (440 Hz) left, callee (1000 Hz) right.
    let wav = d.dir.path().join("call.wav");
    let (ok, out) = cli(
        &config(&d),
        &[
            "recording",
            "export",
            &ids[0],
            "--wav",
            wav.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let (rate, left, right) = wav_channels(&wav);
    assert_eq!(rate, 8000);
    assert!(left.len() >= 8000 * 29 / 10, "{} samples", left.len());
    let (l440, l1k) = (
        tone_level(&left, 8000.0, 440.0),
        tone_level(&left, 8000.0, 1000.0),
    );
    let (r440, r1k) = (
        tone_level(&right, 8000.0, 440.0),
        tone_level(&right, 8000.0, 1000.0),
    );
    assert!(
        l440 > 1000.0 && l440 > 100.0 * l1k,
        "left: 440 Hz {l440}, 1 kHz {l1k}"
    );
    assert!(
        r1k > 1000.0 && r1k > 100.0 * r440,
        "right: 1 kHz {r1k}, 440 Hz {r440}"
    );
    std::fs::remove_file(&wav).unwrap();

    // The independent reader agrees.
    let r = python_reader(&file, &d.state.join("keys/kek"));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["frames"]["0"], 150, "{r}");
    assert_eq!(r["frames"]["1"], 150, "{r}");
    let t = &r["tones"];
    assert!(
        t["0"]["440.0"].as_f64().unwrap() > 100.0 * t["0"]["1000.0"].as_f64().unwrap(),
        "{r}"
    );
    assert!(
        t["1"]["1000.0"].as_f64().unwrap() > 100.0 * t["1"]["440.0"].as_f64().unwrap(),
        "{r}"
    );

    // The header holds no Call-ID and no key; the audit log has the daemon's wrap and the
    // CLI's unwraps, and its chain holds.
    let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    assert!(!text.contains(call["call_id"].as_str().unwrap()));
    let (ok, out) = cli(&config(&d), &["audit", "verify"]);
    assert!(ok, "{out}");
    let log = std::fs::read_to_string(d.state.join("keys/audit.log")).unwrap();
    assert!(
        log.contains("\"actor\":\"daemon\",\"op\":\"wrap\""),
        "{log}"
    );
    assert!(log.contains("\"purpose\":\"export\""), "{log}");
    assert!(
        !d.log_text().contains(call["call_id"].as_str().unwrap()),
        "Call-ID in the log"
    );

    // /posture: recording encrypted, the provider, the KEK id and age; no key material.
    let cfg = common::client(
        common::roots_from(&d.state.join("ca.pem")),
        &[&rustls::version::TLS13],
    );
    let mut s = common::connect(cfg, d.admin).unwrap();
    let (status, _, body) =
        common::http_get(&mut s, "/posture", Some(&format!("Bearer {}", d.token())));
    assert_eq!(status, 200);
    for line in [
        "recording enabled",
        "recording_encryption AES-256-GCM",
        "kek_provider file file",
        "kek file:recordings/default/v1 age_days 0",
    ] {
        assert!(body.contains(line), "{line} missing:\n{body}");
    }
    let kek_hex = std::fs::read_to_string(d.state.join("keys/kek")).unwrap();
    let kek_hex = kek_hex
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap();
    assert!(!body.contains(kek_hex), "KEK in /posture");
}

#[test]
fn record_call_flag_records_from_the_answer_and_pause_skips_audio() {
    let d = Daemon::start(ON);
    let ng = d.ng.unwrap();
    // Recorded from the offer's flag; paused for packets 50-99 (1 s of the 3 s).
    let call = tone_call(
        ng,
        &[
            "--record-flag",
            "--packets",
            "150",
            "--pause-at",
            "50",
            "--resume-at",
            "100",
        ],
    );
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["ng"]["pause"], "ok", "{call}");
    assert_eq!(call["ng"]["resume"], "ok", "{call}");
    let ids = wait_sealed(&config(&d), 1);
    assert_eq!(ids.len(), 1, "one recording, resumed in the same file");
    let (ok, out) = cli(&config(&d), &["recording", "verify", &ids[0]]);
    assert!(ok, "{out}");
    // About 100 of 150 packets per track; a few around each switch may go either way.
    let frames: usize = out
        .split(" frames")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((180..=220).contains(&frames), "{out}");
}

#[test]
fn recording_is_off_by_default() {
    let d = Daemon::start("[media]\nport_min = 42000\nport_max = 42999\n");
    let ng = d.ng.unwrap();
    let call = tone_call(
        ng,
        &["--record-flag", "--start-recording", "--packets", "20"],
    );
    // The call itself goes through; recording is refused with a reason.
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(
        call["ng"]["offer_warning"], "recording is not enabled",
        "{call}"
    );
    assert_eq!(call["ng"]["start_recording"], "error", "{call}");
    assert_eq!(
        call["ng"]["start_recording_error"],
        "recording is not enabled"
    );
    assert!(!d.state.join("recordings").exists());
    assert!(!d.state.join("keys").exists());
}

#[test]
fn tampering_truncation_reordering_shredding_and_audit_edits_are_detected() {
    let d = Daemon::start(ON);
    let call = tone_call(d.ng.unwrap(), &["--start-recording", "--packets", "100"]);
    assert_eq!(call["ok"], true, "{call}");
    let ids = wait_sealed(&config(&d), 1);
    let file = rec_path(&d, &ids[0]);
    let orig = std::fs::read(&file).unwrap();
    let verify = |bytes: &[u8]| {
        let p = d.state.join("recordings/copy.srec");
        std::fs::write(&p, bytes).unwrap();
        let r = cli(&config(&d), &["recording", "verify", p.to_str().unwrap()]);
        std::fs::remove_file(&p).unwrap();
        r
    };
    assert!(verify(&orig).0);
    // Chunk boundaries: after the 14-byte prefix, the header, the key block.
    let h = u32::from_be_bytes(orig[10..14].try_into().unwrap()) as usize;
    let k = u16::from_be_bytes(orig[14 + h..16 + h].try_into().unwrap()) as usize;
    let c0 = 16 + h + k;
    let len = |at: usize| 4 + u32::from_be_bytes(orig[at..at + 4].try_into().unwrap()) as usize;
    let c1 = c0 + len(c0);
    let c2 = c1 + len(c1);

    let mut flipped = orig.clone();
    flipped[c1 + 20] ^= 0x01;
    let (ok, out) = verify(&flipped);
    assert!(
        !ok && out.contains("chunk 1: authentication failed"),
        "{out}"
    );

    let mut header = orig.clone();
    header[20] ^= 0x01;
    let (ok, out) = verify(&header);
    assert!(!ok, "a flipped header bit: {out}");

    let (ok, out) = verify(&orig[..orig.len() - 5]);
    assert!(!ok && out.contains("truncated"), "{out}");
    let (ok, out) = verify(&orig[..c2]);
    assert!(!ok && out.contains("final chunk is missing"), "{out}");

    let mut swapped = orig[..c0].to_vec();
    swapped.extend_from_slice(&orig[c1..c2]);
    swapped.extend_from_slice(&orig[c0..c1]);
    swapped.extend_from_slice(&orig[c2..]);
    let (ok, out) = verify(&swapped);
    assert!(
        !ok && out.contains("chunk 0: it is chunk 1 of this file moved here"),
        "{out}"
    );

    // Shred: the key block is gone, export fails, the file is noise.
    let (ok, out) = cli(&config(&d), &["recording", "shred", &ids[0]]);
    assert!(ok, "{out}");
    let wav = d.dir.path().join("x.wav");
    let (ok, out) = cli(
        &config(&d),
        &[
            "recording",
            "export",
            &ids[0],
            "--wav",
            wav.to_str().unwrap(),
        ],
    );
    assert!(!ok && out.contains("shredded"), "{out}");
    assert!(!wav.exists());
    let (_, out) = cli(&config(&d), &["recording", "list"]);
    assert!(out.contains("shredded"), "{out}");
    let log = d.state.join("keys/audit.log");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("\"op\":\"shred\""));

    // The audit chain with one line removed fails, naming where.
    let (ok, out) = cli(&config(&d), &["audit", "verify"]);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    let cut: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| *l)
        .collect();
    std::fs::write(&log, format!("{}\n", cut.join("\n"))).unwrap();
    let (ok, out) = cli(&config(&d), &["audit", "verify"]);
    assert!(!ok && out.contains("line 2"), "{out}");
}

#[test]
fn a_key_file_others_can_read_stops_the_daemon_and_the_cli() {
    let d = Daemon::start(ON);
    let kek = d.state.join("keys/kek");
    assert!(kek.exists());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = cli(&config(&d), &["keys", "list"]);
    assert!(!ok && out.contains("group or others"), "{out}");
    // A new daemon on the same state refuses to start, naming the file.
    let cfg = std::fs::read_to_string(config(&d)).unwrap();
    let mut d = d;
    d.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_srtp-edge"))
        .args(["run", "-c"])
        .arg(config(&d))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{cfg}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keys/kek") && err.contains("chmod 600"),
        "{err}"
    );
}
