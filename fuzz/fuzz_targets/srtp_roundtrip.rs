//! Round trip: for any input that protect accepts, unprotect by a peer context must give back
//! exactly the original packet, for every profile, RTP and RTCP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::srtp::{ContextConfig, Profile, SrtpContext};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, plain)) = data.split_first() else {
        return;
    };
    let p = Profile::ALL[usize::from(sel % 6)];
    let rtcp = sel & 0x08 != 0;
    let key: Vec<u8> = (0..p.master_key_len() as u8).collect();
    let salt: Vec<u8> = (0..p.master_salt_len() as u8).collect();
    let cfg = ContextConfig::default();
    let mut tx = SrtpContext::new(p, &key, &salt, cfg).expect("valid keys");
    let mut rx = SrtpContext::new(p, &key, &salt, cfg).expect("valid keys");
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 32, 0);
    let n = if rtcp {
        tx.protect_rtcp(&mut buf, plain.len())
    } else {
        tx.protect_rtp(&mut buf, plain.len())
    };
    let Ok(n) = n else { return };
    buf.truncate(n);
    let m = if rtcp {
        rx.unprotect_rtcp(&mut buf)
    } else {
        rx.unprotect_rtp(&mut buf)
    };
    assert_eq!(m, Ok(plain.len()));
    assert_eq!(&buf[..plain.len()], plain);
});
