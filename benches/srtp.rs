//! SRTP engine benchmark: protect, unprotect and the protect+unprotect pair for a 172-byte RTP
//! packet (12-byte header + 160 bytes of PCMU, one 20 ms G.711 frame), every profile, with
//! webrtc-srtp 0.17 measured in the same run. For the AEAD profiles it also measures the floor:
//! the same sealing and opening in place with aws-lc-rs directly (header as AAD, a fresh nonce
//! per packet, no SRTP bookkeeping), so the table shows what the SRTP layer adds to the cipher. Criterion measures each case; a closing table
//! prints ns per pair for both and the ratio; to damp noise from other work on the machine it
//! counts this thread's CPU time and keeps the best of interleaved rounds.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use criterion::{BatchSize, Criterion};
use srtp_edge::srtp::{ContextConfig, Profile, SrtpContext};
use webrtc_srtp::context::Context as WContext;
use webrtc_srtp::protection_profile::ProtectionProfile as WProfile;

const PAYLOAD: usize = 160;
const PLAIN_LEN: usize = 12 + PAYLOAD;

fn wprofile(p: Profile) -> WProfile {
    match p {
        Profile::AesCm128HmacSha1_80 => WProfile::Aes128CmHmacSha1_80,
        Profile::AesCm128HmacSha1_32 => WProfile::Aes128CmHmacSha1_32,
        Profile::AesCm256HmacSha1_80 => WProfile::Aes256CmHmacSha1_80,
        Profile::AesCm256HmacSha1_32 => WProfile::Aes256CmHmacSha1_32,
        Profile::AeadAes128Gcm => WProfile::AeadAes128Gcm,
        Profile::AeadAes256Gcm => WProfile::AeadAes256Gcm,
    }
}

fn keys(p: Profile) -> (Vec<u8>, Vec<u8>) {
    let key = (0..p.master_key_len() as u8).collect();
    let salt = (0..p.master_salt_len() as u8).map(|b| b ^ 0xa5).collect();
    (key, salt)
}

fn ours(p: Profile) -> SrtpContext {
    let (k, s) = keys(p);
    SrtpContext::new(p, &k, &s, ContextConfig::default()).unwrap()
}

fn theirs(p: Profile) -> WContext {
    let (k, s) = keys(p);
    WContext::new(
        &k,
        &s,
        wprofile(p),
        Some(webrtc_srtp::option::srtp_replay_protection(128)),
        None,
    )
    .unwrap()
}

/// Writes the 172-byte RTP packet with sequence number `seq` into `buf`.
fn packet(buf: &mut [u8], seq: u16) {
    buf[..12].copy_from_slice(&[0x80, 0x00, 0, 0, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe]);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    buf[12..PLAIN_LEN].fill(0xd5);
}

struct Ours {
    tx: SrtpContext,
    rx: SrtpContext,
    seq: u16,
    buf: [u8; 256],
}

impl Ours {
    fn new(p: Profile) -> Self {
        Ours {
            tx: ours(p),
            rx: ours(p),
            seq: 0,
            buf: [0; 256],
        }
    }
    fn protect(&mut self) -> usize {
        self.seq = self.seq.wrapping_add(1);
        packet(&mut self.buf, self.seq);
        self.tx.protect_rtp(&mut self.buf, PLAIN_LEN).unwrap()
    }
    fn pair(&mut self) -> usize {
        let n = self.protect();
        self.rx.unprotect_rtp(&mut self.buf[..n]).unwrap()
    }
}

/// The floor for AEAD profiles: aws-lc-rs sealing and opening the same packet in place, with
/// the header as AAD and the tag appended, as SRTP does, and nothing else.
struct Floor {
    key: LessSafeKey,
    seq: u16,
    buf: [u8; 256],
}

impl Floor {
    fn new(p: Profile) -> Option<Self> {
        let alg = match p {
            Profile::AeadAes128Gcm => &AES_128_GCM,
            Profile::AeadAes256Gcm => &AES_256_GCM,
            _ => return None,
        };
        let (k, _) = keys(p);
        Some(Floor {
            key: LessSafeKey::new(UnboundKey::new(alg, &k).ok()?),
            seq: 0,
            buf: [0; 256],
        })
    }
    fn nonce(seq: u16) -> Nonce {
        let mut iv = [0xa5u8; 12];
        iv[10..].copy_from_slice(&seq.to_be_bytes());
        Nonce::assume_unique_for_key(iv)
    }
    fn pair(&mut self) -> usize {
        self.seq = self.seq.wrapping_add(1);
        packet(&mut self.buf, self.seq);
        let (hdr, rest) = self.buf.split_at_mut(12);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Self::nonce(self.seq),
                Aad::from(&*hdr),
                &mut rest[..PAYLOAD],
            )
            .unwrap();
        rest[PAYLOAD..PAYLOAD + 16].copy_from_slice(tag.as_ref());
        let plain = self
            .key
            .open_in_place(
                Self::nonce(self.seq),
                Aad::from(&*hdr),
                &mut rest[..PAYLOAD + 16],
            )
            .unwrap();
        12 + plain.len()
    }
}

struct Theirs {
    tx: WContext,
    rx: WContext,
    seq: u16,
    plain: Vec<u8>,
}

impl Theirs {
    fn new(p: Profile) -> Self {
        Theirs {
            tx: theirs(p),
            rx: theirs(p),
            seq: 0,
            plain: vec![0; PLAIN_LEN],
        }
    }
    fn protect(&mut self) -> bytes::Bytes {
        self.seq = self.seq.wrapping_add(1);
        packet(&mut self.plain, self.seq);
        self.tx.encrypt_rtp(&self.plain).unwrap()
    }
    fn pair(&mut self) -> usize {
        let wire = self.protect();
        self.rx.decrypt_rtp(&wire).unwrap().len()
    }
}

fn criterion_benches(c: &mut Criterion) {
    for p in Profile::ALL {
        let mut g = c.benchmark_group(format!("srtp/{p}"));
        let mut o = Ours::new(p);
        g.bench_function("srtp-edge/protect", |b| b.iter(|| black_box(o.protect())));
        let mut o = Ours::new(p);
        let mut rx = ours(p);
        g.bench_function("srtp-edge/unprotect", |b| {
            b.iter_batched_ref(
                || {
                    let n = o.protect();
                    (o.buf, n)
                },
                |(buf, n)| black_box(rx.unprotect_rtp(&mut buf[..*n]).unwrap()),
                BatchSize::SmallInput,
            )
        });
        let mut o = Ours::new(p);
        g.bench_function("srtp-edge/pair", |b| b.iter(|| black_box(o.pair())));

        let mut t = Theirs::new(p);
        g.bench_function("webrtc-srtp/protect", |b| b.iter(|| black_box(t.protect())));
        let mut t = Theirs::new(p);
        let mut wrx = theirs(p);
        g.bench_function("webrtc-srtp/unprotect", |b| {
            b.iter_batched_ref(
                || t.protect(),
                |wire| black_box(wrx.decrypt_rtp(wire).unwrap()),
                BatchSize::SmallInput,
            )
        });
        let mut t = Theirs::new(p);
        g.bench_function("webrtc-srtp/pair", |b| b.iter(|| black_box(t.pair())));
        if let Some(mut f) = Floor::new(p) {
            g.bench_function("aws-lc-rs-floor/pair", |b| b.iter(|| black_box(f.pair())));
        }
        g.finish();
    }
}

/// CPU time consumed by this thread, in ns. The machine is shared with other builds, so the
/// summary counts the CPU time the calls used rather than wall time spent descheduled.
fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// Average thread-CPU ns per call of `f` over one round of `n` calls.
fn round_ns(f: &mut impl FnMut() -> usize, n: u32) -> f64 {
    let t = thread_cpu_ns();
    for _ in 0..n {
        black_box(f());
    }
    (thread_cpu_ns() - t) as f64 / f64::from(n)
}

const ROUNDS: usize = 15;
const PAIRS_PER_ROUND: u32 = 10_000;

fn summary() {
    println!();
    println!(
        "protect+unprotect pair, 172-byte RTP packet: thread CPU ns per pair, best of {ROUNDS} \
         interleaved rounds of {PAIRS_PER_ROUND} pairs"
    );
    println!(
        "{:<26} {:>14} {:>16} {:>8} {:>16} {:>13}",
        "profile", "srtp-edge ns", "webrtc-srtp ns", "ratio", "aws-lc-rs floor", "edge/floor"
    );
    for p in Profile::ALL {
        let mut o = Ours::new(p);
        let mut t = Theirs::new(p);
        let mut fl = Floor::new(p);
        let mut ours = || o.pair();
        let mut theirs = || t.pair();
        round_ns(&mut ours, PAIRS_PER_ROUND / 4);
        round_ns(&mut theirs, PAIRS_PER_ROUND / 4);
        let (mut best_ours, mut best_theirs, mut best_floor) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            best_ours = best_ours.min(round_ns(&mut ours, PAIRS_PER_ROUND));
            best_theirs = best_theirs.min(round_ns(&mut theirs, PAIRS_PER_ROUND));
            if let Some(f) = fl.as_mut() {
                best_floor = best_floor.min(round_ns(&mut || f.pair(), PAIRS_PER_ROUND));
            }
        }
        let (floor, vs_floor) = if fl.is_some() {
            (
                format!("{best_floor:.0}"),
                format!("{:.2}x", best_ours / best_floor),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<26} {:>14.0} {:>16.0} {:>7.2}x {:>16} {:>13}",
            p.sdes_name(),
            best_ours,
            best_theirs,
            best_theirs / best_ours,
            floor,
            vs_floor
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
    // `cargo test --benches` runs this binary with `--test`/`--bench` flags; the table is for
    // `cargo bench` only.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
