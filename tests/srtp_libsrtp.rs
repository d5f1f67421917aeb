//! Interoperability with the reference implementation, libsrtp 2, through PyPI `pylibsrtp`
//! (installed by `interop/install-peers.sh`, pinned in `interop/requirements.txt`).
//!
//! For every profile pylibsrtp offers, RTP (with a sequence-number wrap, CSRCs, extensions and
//! padding, several SSRCs) and RTCP go both ways: srtp-edge protects and libsrtp unprotects, and
//! libsrtp protects and srtp-edge unprotects; the plaintexts must come back unchanged. libsrtp
//! must also reject a packet srtp-edge tampered with, and vice versa.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use srtp_edge::srtp::{ContextConfig, Error, Profile, SrtpContext};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/srtp/libsrtp_peer.py");

fn python(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("python3")
        .arg(PEER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is required (interop/install-peers.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "libsrtp peer failed (is pylibsrtp installed? run interop/install-peers.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rtp_plain(i: usize) -> Vec<u8> {
    let ssrc: u32 = [0x1111_1111, 0xcafe_babe][i % 2];
    let seq = (65_400 + i / 2) as u16; // both SSRCs wrap 65535 -> 0
    let cc = (i % 3) as u8;
    let ext = i % 4 == 1;
    let pad = i % 5 == 2;
    let mut p = vec![
        0x80 | cc | if ext { 0x10 } else { 0 } | if pad { 0x20 } else { 0 },
        0,
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&((i as u32) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..cc {
        p.extend_from_slice(&[c; 4]);
    }
    if ext {
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, i as u8, 0, 0]);
    }
    p.extend((0..(i * 7) % 200).map(|b| (b + i) as u8));
    if pad {
        p.extend_from_slice(&[0, 0, 3]);
    }
    p
}

fn rtcp_plain(i: usize) -> Vec<u8> {
    let ssrc: u32 = [0x1111_1111, 0xcafe_babe][i % 2];
    let words = 1 + i % 10;
    let mut p = vec![0x81, 200 + (i % 2) as u8];
    p.extend_from_slice(&(words as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..words * 4 - 4).map(|b| (b * 3 + i) as u8));
    p
}

fn hexes(v: &[Vec<u8>]) -> Vec<String> {
    v.iter().map(hex::encode).collect()
}

fn ok_packets(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| hex::decode(x.as_str().unwrap_or_else(|| panic!("libsrtp error: {x}"))).unwrap())
        .collect()
}

#[test]
fn interoperates_with_libsrtp_both_ways() {
    let offered: Vec<String> = serde_json::from_str(&python(&["--profiles"], "")).unwrap();
    assert_eq!(
        offered.len(),
        4,
        "pylibsrtp 1.0 offers AES-CM-128 _80/_32 and GCM-128/256"
    );
    let n = 400;
    let rtp: Vec<Vec<u8>> = (0..n).map(rtp_plain).collect();
    let rtcp: Vec<Vec<u8>> = (0..n / 4).map(rtcp_plain).collect();

    for name in &offered {
        let p = Profile::from_sdes_name(name).unwrap();
        let key_salt: Vec<u8> = (0..p.key_salt_len()).map(|b| (b * 37 + 11) as u8).collect();
        let cfg = ContextConfig::default();

        // srtp-edge -> libsrtp.
        let mut tx = SrtpContext::from_key_salt(p, &key_salt, cfg).unwrap();
        let protect = |plain: &Vec<u8>, rtcp: bool, tx: &mut SrtpContext| {
            let mut buf = plain.clone();
            buf.resize(plain.len() + 32, 0);
            let n = if rtcp {
                tx.protect_rtcp(&mut buf, plain.len())
            } else {
                tx.protect_rtp(&mut buf, plain.len())
            }
            .unwrap();
            buf.truncate(n);
            buf
        };
        let srtp: Vec<Vec<u8>> = rtp.iter().map(|x| protect(x, false, &mut tx)).collect();
        let srtcp: Vec<Vec<u8>> = rtcp.iter().map(|x| protect(x, true, &mut tx)).collect();
        let mut tampered = srtp[n - 1].clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x80;
        let mut srtp_jobs = hexes(&srtp[..n - 1]);
        srtp_jobs.insert(0, hex::encode(&tampered));
        srtp_jobs.push(hex::encode(&srtp[3])); // a replay

        // libsrtp -> srtp-edge.
        let jobs = json!([
            {"profile": name, "key": hex::encode(&key_salt), "op": "unprotect", "kind": "rtp", "packets": srtp_jobs},
            {"profile": name, "key": hex::encode(&key_salt), "op": "unprotect", "kind": "rtcp", "packets": hexes(&srtcp)},
            {"profile": name, "key": hex::encode(&key_salt), "op": "protect", "kind": "rtp", "packets": hexes(&rtp)},
            {"profile": name, "key": hex::encode(&key_salt), "op": "protect", "kind": "rtcp", "packets": hexes(&rtcp)},
        ]);
        let out: Value = serde_json::from_str(&python(&[], &jobs.to_string())).unwrap();
        let out = out.as_array().unwrap();

        let rtp_results = out[0].as_array().unwrap();
        assert!(
            rtp_results[0].get("error").is_some(),
            "{name}: libsrtp accepted a tampered packet"
        );
        assert!(
            rtp_results[n].get("error").is_some(),
            "{name}: libsrtp accepted a replay"
        );
        let back = ok_packets(&Value::Array(rtp_results[1..n].to_vec()));
        assert_eq!(
            back,
            rtp[..n - 1],
            "{name}: libsrtp decrypted our SRTP differently"
        );
        assert_eq!(
            ok_packets(&out[1]),
            rtcp,
            "{name}: libsrtp decrypted our SRTCP differently"
        );

        let their_srtp = ok_packets(&out[2]);
        let their_srtcp = ok_packets(&out[3]);
        let mut rx = SrtpContext::from_key_salt(p, &key_salt, cfg).unwrap();
        // Our own protected packets are byte-identical to libsrtp's.
        assert_eq!(their_srtp, srtp, "{name}: SRTP differs from libsrtp");
        assert_eq!(their_srtcp, srtcp, "{name}: SRTCP differs from libsrtp");
        // Delivered with some reordering.
        let mut order: Vec<usize> = (0..n).collect();
        for i in (2..n).step_by(7) {
            order.swap(i, i - 1);
        }
        for i in order {
            let mut buf = their_srtp[i].clone();
            let len = rx
                .unprotect_rtp(&mut buf)
                .unwrap_or_else(|e| panic!("{name} RTP {i}: {e}"));
            assert_eq!(&buf[..len], &rtp[i][..], "{name} RTP {i}");
        }
        for (i, w) in their_srtcp.iter().enumerate() {
            let mut buf = w.clone();
            let len = rx
                .unprotect_rtcp(&mut buf)
                .unwrap_or_else(|e| panic!("{name} RTCP {i}: {e}"));
            assert_eq!(&buf[..len], &rtcp[i][..], "{name} RTCP {i}");
        }
        let mut again = their_srtp[10].clone();
        assert_eq!(rx.unprotect_rtp(&mut again), Err(Error::Replay), "{name}");
    }
}
