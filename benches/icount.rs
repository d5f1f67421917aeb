//! Instruction-count benchmark of the media hot path, for regression checks that the noise of a
//! shared machine cannot blur: `benches/icount.sh` runs each case of this binary under
//! valgrind's callgrind, which counts the instructions executed inside [`measured`] only, and
//! compares instructions per packet with the committed baseline (`benches/icount-baseline.txt`).
//!
//! Cases (`icount CASE`): `relay/<in>-><out>` is the whole relay step of one packet (classify,
//! unprotect with the receiving leg's context, latch check, protect with the other leg's
//! context), `protect/<profile>` and `unprotect/<profile>` one SRTP operation on a 172-byte RTP
//! packet (12-byte header + 160 bytes of G.711). Keys, packets and addresses are fixed, so the
//! same binary gives the same count on every run. `icount --list` prints the cases; without
//! valgrind the binary simply runs the case (which is what `cargo test --benches` does).

use std::hint::black_box;
use std::net::SocketAddr;

use srtp_edge::media::latch::Latch;
use srtp_edge::media::relay::{self, Leg};
use srtp_edge::srtp::{ContextConfig, Profile, SrtpContext};

/// Packets per case: enough that the set-up outside [`measured`] does not matter, few enough
/// that a case takes about a second under callgrind.
const PACKETS: usize = 2000;
const PAYLOAD: usize = 160;
const PLAIN_LEN: usize = 12 + PAYLOAD;
const BUF: usize = 256;

fn ctx(p: Profile, seed: u8) -> SrtpContext {
    let key: Vec<u8> = (0..p.master_key_len() as u8)
        .map(|b| b.wrapping_mul(7) ^ seed)
        .collect();
    let salt: Vec<u8> = (0..p.master_salt_len() as u8)
        .map(|b| b ^ 0xa5 ^ seed)
        .collect();
    SrtpContext::new(p, &key, &salt, ContextConfig::default()).expect("valid key")
}

fn plain(buf: &mut [u8], seq: u16) {
    buf[..12].copy_from_slice(&[0x80, 0x00, 0, 0, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe]);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    buf[12..PLAIN_LEN].fill(0xd5);
}

/// `PACKETS` packets protected with `p` (the input of unprotect and relay cases).
fn protected(p: Profile, seed: u8) -> Vec<([u8; BUF], usize)> {
    let mut tx = ctx(p, seed);
    (0..PACKETS)
        .map(|i| {
            let mut b = [0u8; BUF];
            plain(&mut b, i as u16 + 1);
            let n = tx.protect_rtp(&mut b, PLAIN_LEN).expect("protect");
            (b, n)
        })
        .collect()
}

fn profile(name: &str) -> Option<Profile> {
    Profile::ALL.into_iter().find(|p| p.sdes_name() == name)
}

/// What one case does, set up outside the measured function.
enum Case {
    Protect(SrtpContext, Vec<[u8; BUF]>),
    Unprotect(SrtpContext, Vec<([u8; BUF], usize)>),
    Relay(Box<[Leg; 2]>, SocketAddr, Vec<([u8; BUF], usize)>),
}

fn leg(inbound: Option<SrtpContext>, outbound: Option<SrtpContext>, peer: &str) -> Leg {
    let peer: SocketAddr = peer.parse().expect("address");
    Leg {
        inbound,
        outbound,
        rtp_latch: Latch::new(Some(peer), 0),
        rtcp_latch: Latch::new(Some(peer), 0),
        rtcp_mux: true,
    }
}

fn setup(name: &str) -> Option<Case> {
    let (kind, arg) = name.split_once('/')?;
    match kind {
        "protect" => {
            let p = profile(arg)?;
            let bufs = (0..PACKETS)
                .map(|i| {
                    let mut b = [0u8; BUF];
                    plain(&mut b, i as u16 + 1);
                    b
                })
                .collect();
            Some(Case::Protect(ctx(p, 1), bufs))
        }
        "unprotect" => {
            let p = profile(arg)?;
            Some(Case::Unprotect(ctx(p, 1), protected(p, 1)))
        }
        "relay" => {
            let (a, b) = arg.split_once("->")?;
            let (pa, pb) = (profile(a)?, profile(b)?);
            let src = "127.0.0.1:40000";
            // Leg A's peer sends with key 1; the relay sends to leg B's peer with key 2.
            let legs = [
                leg(Some(ctx(pa, 1)), Some(ctx(pa, 3)), src),
                leg(Some(ctx(pb, 4)), Some(ctx(pb, 2)), "127.0.0.1:50000"),
            ];
            Some(Case::Relay(
                Box::new(legs),
                src.parse().ok()?,
                protected(pa, 1),
            ))
        }
        _ => None,
    }
}

/// The only function callgrind counts (`--toggle-collect=*icount*measured*`).
#[inline(never)]
fn measured(case: &mut Case) -> usize {
    let mut total = 0;
    match case {
        Case::Protect(tx, bufs) => {
            for b in bufs.iter_mut() {
                total += tx.protect_rtp(b, PLAIN_LEN).unwrap_or(0);
            }
        }
        Case::Unprotect(rx, pkts) => {
            for (b, n) in pkts.iter_mut() {
                total += rx.unprotect_rtp(&mut b[..*n]).unwrap_or(0);
            }
        }
        Case::Relay(legs, src, pkts) => {
            let [a, b] = &mut **legs;
            for (buf, n) in pkts.iter_mut() {
                if let Ok(f) = relay::relay(a, b, *src, buf, *n, false) {
                    total += f.len;
                }
            }
        }
    }
    total
}

/// Every case `icount.sh` measures.
fn cases() -> Vec<String> {
    let mut v = vec![
        "relay/AES_CM_128_HMAC_SHA1_80->AES_CM_128_HMAC_SHA1_32".to_string(),
        "relay/AEAD_AES_128_GCM->AEAD_AES_128_GCM".to_string(),
        "relay/AEAD_AES_256_GCM->AES_CM_128_HMAC_SHA1_80".to_string(),
    ];
    for p in Profile::ALL {
        v.push(format!("protect/{}", p.sdes_name()));
        v.push(format!("unprotect/{}", p.sdes_name()));
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for c in cases() {
            println!("{c}");
        }
        return;
    }
    // Under `cargo bench`/`cargo test --benches` (flags only): run every case once, natively,
    // and check each relays or protects every packet.
    let named: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let run: Vec<String> = if named.is_empty() {
        cases()
    } else {
        named.into_iter().cloned().collect()
    };
    for name in run {
        let Some(mut case) = setup(&name) else {
            eprintln!("unknown case {name} (see --list)");
            std::process::exit(2);
        };
        let total = black_box(measured(black_box(&mut case)));
        let per = total / PACKETS;
        if per < PLAIN_LEN {
            eprintln!("{name}: only {total} bytes for {PACKETS} packets: the case is broken");
            std::process::exit(1);
        }
        println!("{name}: {PACKETS} packets, {per} bytes each");
    }
}
