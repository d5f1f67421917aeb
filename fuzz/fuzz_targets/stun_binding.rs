//! STUN from a hostile peer on a DTLS leg's media socket, through the ICE-lite checker
//! (`srtp_edge::media::ice::answer_binding`). Two shapes of input: raw datagrams, and
//! fuzzer-chosen attributes wrapped into a Binding request that carries our USERNAME and a
//! MESSAGE-INTEGRITY (and, by choice, a FINGERPRINT) computed with our password, so the fuzzer
//! also reaches the attribute walk after authentication and the response writer.
//!
//! Never panics; a request is answered only if it authenticates with our password (the same
//! bytes with another password are refused); an answer is a Binding success response for the
//! same transaction, with a consistent length, that fits `MAX_RESPONSE`.
#![no_main]

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha1::Sha1;
use srtp_edge::media::ice::{answer_binding, IceCredentials, MAX_RESPONSE};

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

fn creds(pwd: &str) -> IceCredentials {
    IceCredentials {
        ufrag: "ours".into(),
        pwd: pwd.into(),
    }
}

fn set_len(m: &mut [u8], body: usize) {
    let l = (body as u16).to_be_bytes();
    m[2] = l[0];
    m[3] = l[1];
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// A Binding request: header, the fuzzer's attributes (padded to 4), USERNAME, then a valid
/// MESSAGE-INTEGRITY and, if `fingerprint`, a valid FINGERPRINT.
fn signed(attrs: &[u8], txid: &[u8], fingerprint: bool, pwd: &str) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0];
    m.extend_from_slice(&MAGIC);
    let mut t = [0u8; 12];
    for (d, s) in t.iter_mut().zip(txid) {
        *d = *s;
    }
    m.extend_from_slice(&t);
    m.extend_from_slice(&attrs[..attrs.len().min(512)]);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m.extend_from_slice(&[0x00, 0x06, 0x00, 0x0b]);
    m.extend_from_slice(b"ours:theirs\0");
    let mi = m.len();
    set_len(&mut m, mi + 24 - 20);
    let mut mac = Hmac::<Sha1>::new_from_slice(pwd.as_bytes()).expect("any key length");
    mac.update(&m);
    let tag = mac.finalize().into_bytes();
    m.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    m.extend_from_slice(&tag);
    if fingerprint {
        let fp = m.len();
        set_len(&mut m, fp + 8 - 20);
        let crc = crc32(&m) ^ 0x5354_554E;
        m.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        m.extend_from_slice(&crc.to_be_bytes());
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ours = creds("our-password-of-24-chars");
    let msg = match mode % 3 {
        0 => rest.to_vec(),
        m => {
            let (txid, attrs) = rest.split_at(rest.len().min(12));
            signed(attrs, txid, m == 2, &ours.pwd)
        }
    };
    let src: SocketAddr = if mode & 0x80 == 0 {
        "192.0.2.1:40000".parse().unwrap()
    } else {
        "[2001:db8::1]:40000".parse().unwrap()
    };
    let mut out = [0u8; MAX_RESPONSE];
    let first = answer_binding(&ours, &msg, src, &mut out);
    // Deterministic.
    let mut again = [0u8; MAX_RESPONSE];
    assert_eq!(first, answer_binding(&ours, &msg, src, &mut again));
    if let Ok(a) = first {
        assert_eq!(out[..a.len], again[..a.len]);
        assert!(a.len <= MAX_RESPONSE && a.len >= 20 && a.len % 4 == 0);
        assert_eq!(&out[..2], &[0x01, 0x01], "Binding success");
        assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), a.len - 20);
        assert_eq!(&out[4..20], &msg[4..20], "same magic cookie and transaction");
        // Only our password authenticates it.
        let other = creds("another-password-24-char");
        let mut o = [0u8; MAX_RESPONSE];
        assert!(answer_binding(&other, &msg, src, &mut o).is_err());
    }
    // Too small an output buffer is refused, never written past.
    let mut small = [0u8; MAX_RESPONSE - 1];
    assert!(answer_binding(&ours, &msg, src, &mut small).is_err() || first.is_err());
});
