//! Fuzzes SRTP and SRTCP unprotect with hostile bytes. Two shapes: raw input (exercises parsing,
//! length and replay checks, and tag rejection), and a genuine packet protected by a peer context
//! then damaged by the fuzzer (one byte XOR and a truncation), so the authenticated paths are
//! reached too. Any panic is a bug; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::srtp::{ContextConfig, Profile, SrtpContext};

fn ctx(p: Profile) -> SrtpContext {
    let key = vec![0x42; p.master_key_len()];
    let salt = vec![0x24; p.master_salt_len()];
    SrtpContext::new(p, &key, &salt, ContextConfig::default()).expect("valid keys")
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let p = Profile::ALL[usize::from(sel % 6)];
    let rtcp = sel & 0x08 != 0;
    let mut rx = ctx(p);
    if sel & 0x10 == 0 {
        let mut buf = rest.to_vec();
        let _ = if rtcp {
            rx.unprotect_rtcp(&mut buf)
        } else {
            rx.unprotect_rtp(&mut buf)
        };
        return;
    }
    // Genuine packet, then damage: rest = [xor_at, xor_val, cut, plaintext...].
    let [at, val, cut, plain @ ..] = rest else {
        return;
    };
    let mut tx = ctx(p);
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 32, 0);
    let n = if rtcp {
        tx.protect_rtcp(&mut buf, plain.len())
    } else {
        tx.protect_rtp(&mut buf, plain.len())
    };
    let Ok(n) = n else { return };
    buf.truncate(n);
    if let Some(b) = buf.get_mut(usize::from(*at)) {
        *b ^= val;
    }
    buf.truncate(n.saturating_sub(usize::from(*cut) % 8));
    let r = if rtcp {
        rx.unprotect_rtcp(&mut buf)
    } else {
        rx.unprotect_rtp(&mut buf)
    };
    if *val == 0 && *cut % 8 == 0 {
        assert_eq!(
            r.ok(),
            Some(plain.len()),
            "an undamaged packet must unprotect"
        );
    }
});
