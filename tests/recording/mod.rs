//! Helpers shared by the recording tests: run a recorded tone call through ng, run the CLI,
//! analyse WAV files, and search the disk for plaintext audio.
#![allow(dead_code)] // each test binary uses a part of these helpers

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use srtp_edge::fork::G711;

/// Runs `interop/recording/tone_call.py` against `ng` with `args`; returns its JSON.
pub fn tone_call(ng: std::net::SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/recording/tone_call.py"
        ))
        .arg("--ng")
        .arg(ng.to_string())
        .args(args)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "tone_call.py printed no JSON:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `srtp-edge ARGS -c CONFIG`; returns (success, stdout + stderr).
pub fn cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_srtp-edge"))
        .args(&args[..1])
        .arg("-c")
        .arg(config)
        .args(&args[1..])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits (bounded) until `dir` holds `n` recordings whose writer has let go of them.
pub fn wait_sealed(config: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out) = cli(config, &["recording", "list"]);
        let sealed: Vec<String> = out
            .lines()
            .skip(1)
            .filter(|l| l.ends_with("sealed"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        if sealed.len() >= n {
            return sealed;
        }
        assert!(Instant::now() < deadline, "recordings not sealed:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Goertzel magnitude of `freq` in `x` (per sample).
pub fn tone_level(x: &[i16], rate: f64, freq: f64) -> f64 {
    let c = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0).sqrt() / x.len().max(1) as f64
}

/// The left and right channels of a 16-bit stereo WAV written by `recording export`.
pub fn wav_channels(path: &Path) -> (u32, Vec<i16>, Vec<i16>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"RIFF");
    assert_eq!(&b[8..16], b"WAVEfmt ");
    assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2, "stereo");
    let rate = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    let s: Vec<i16> = b[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (
        rate,
        s.iter().step_by(2).copied().collect(),
        s.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// The byte runs a plaintext copy of a G.711 payload would leave: 32-byte windows of the payload
/// and of its PCM decoding in both byte orders.
pub fn needles(payload_hex: &str) -> Vec<Vec<u8>> {
    let p = hex::decode(payload_hex).unwrap();
    let pcm: Vec<i16> = p.iter().map(|&c| G711::Pcmu.decode(c)).collect();
    let le: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    let be: Vec<u8> = pcm.iter().flat_map(|s| s.to_be_bytes()).collect();
    let mut v = Vec::new();
    for run in [&p[..], &le[..], &be[..]] {
        for w in run.chunks(32).filter(|w| w.len() == 32) {
            v.push(w.to_vec());
        }
    }
    v
}

/// Every regular file under `roots` (not following symlinks) that contains one of the 32-byte
/// `needles`. Any occurrence covers a 16-aligned offset of the file, so the scan looks up the
/// 16 bytes at each such offset among every 16-byte slice of the needles, then confirms.
pub fn plaintext_hits(roots: &[PathBuf], needles: &[Vec<u8>]) -> Vec<PathBuf> {
    use std::collections::HashSet;
    let mut grams: HashSet<[u8; 16]> = HashSet::new();
    // A cheap first filter on the gram's first 4 bytes (1 Mi bits), then the set.
    let mut filter = vec![0u64; 1 << 14];
    let slot = |b: &[u8]| (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0xF_FFFF) as usize;
    for n in needles {
        assert_eq!(n.len(), 32);
        for k in 0..=16 {
            grams.insert(n[k..k + 16].try_into().unwrap());
            let i = slot(&n[k..]);
            filter[i / 64] |= 1 << (i % 64);
        }
    }
    let confirm = |data: &[u8], q: usize| {
        needles.iter().any(|n| {
            (0..=16).any(|d| {
                q >= d
                    && data
                        .get(q - d..q - d + 32)
                        .is_some_and(|w| w == n.as_slice())
            })
        })
    };
    let mut hits = Vec::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
            continue;
        }
        if !meta.is_file() || meta.len() > 256 << 20 {
            continue;
        }
        let Ok(data) = std::fs::read(&p) else {
            continue;
        };
        seen += 1;
        let found = (0..data.len().saturating_sub(15)).step_by(16).any(|q| {
            let i = slot(&data[q..]);
            filter[i / 64] & (1 << (i % 64)) != 0 && {
                let g: [u8; 16] = data[q..q + 16].try_into().unwrap();
                grams.contains(&g) && confirm(&data, q)
            }
        });
        if found {
            hits.push(p);
        }
    }
    assert!(seen > 0, "no file searched");
    hits
}
