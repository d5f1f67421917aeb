//! Proof that the SRTP hot path never touches the heap: a counting global allocator records every
//! allocation made by this thread while packets are protected and unprotected, for every profile,
//! RTP and RTCP, including rejected packets (auth failure, replay). Context creation allocates
//! (once) and is outside the counted region.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use srtp_edge::srtp::{ContextConfig, Error, Profile, SrtpContext};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.load(Ordering::Relaxed) - before)
}

#[test]
fn zero_allocations_per_packet() {
    // Sanity: the counter does see allocations made in the counted region.
    let (_, n) = counted(|| std::hint::black_box(vec![1u8; 16]));
    assert_eq!(n, 1, "the counting allocator is not counting");

    for p in Profile::ALL {
        let key = vec![7u8; p.master_key_len()];
        let salt = vec![9u8; p.master_salt_len()];
        let cfg = ContextConfig {
            replay_window: 1024,
        };
        let mut tx = SrtpContext::new(p, &key, &salt, cfg).unwrap();
        let mut rx = SrtpContext::new(p, &key, &salt, cfg).unwrap();
        let mut buf = [0u8; 1500];
        let (packets, allocs) = counted(|| {
            let mut ok = 0u32;
            for i in 0..10_000u32 {
                let ssrc = 0x1000 + (i % 3);
                let seq = (65_000 + i) as u16; // wraps: ROC 0 -> 1
                                               // RTP: 12-byte header + 160 bytes of PCMU.
                buf[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                buf[12..172].fill(i as u8);
                let n = tx.protect_rtp(&mut buf, 172).unwrap();
                let mut copy = [0u8; 200];
                copy[..n].copy_from_slice(&buf[..n]);
                assert_eq!(rx.unprotect_rtp(&mut buf[..n]), Ok(172));
                // The same packet again (replay) and a forged one: rejected, still no allocation.
                assert_eq!(rx.unprotect_rtp(&mut copy[..n]), Err(Error::Replay));
                copy[20] ^= 1;
                copy[3] = copy[3].wrapping_add(1);
                let _ = rx.unprotect_rtp(&mut copy[..n]);
                if i % 5 == 0 {
                    buf[..8].copy_from_slice(&[0x81, 200, 0, 6, 0, 0, 0, 0]);
                    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
                    buf[8..28].fill(3);
                    let n = tx.protect_rtcp(&mut buf, 28).unwrap();
                    assert_eq!(rx.unprotect_rtcp(&mut buf[..n]), Ok(28));
                }
                ok += 1;
            }
            ok
        });
        assert_eq!(packets, 10_000);
        println!("{p}: {allocs} allocations over 10000 RTP pairs + 2000 RTCP pairs");
        assert_eq!(allocs, 0, "{p} allocated on the packet path");
    }
}

/// The relay step with the fork tap, as the media worker runs it for a forked call: unprotect,
/// payload found (CSRCs skipped), handed to the fork's queue (audio and telephone-event, with
/// the queue full so drop-oldest runs too), re-protect. No allocation per packet.
#[test]
fn forked_relay_step_allocates_nothing_per_packet() {
    use srtp_edge::fork::{spawn_fork, Backend, CallInfo, ForkMode, Track, G711};
    use srtp_edge::media::latch::Latch;
    use srtp_edge::media::relay::{relay_tapped, rtp_payload, Leg};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Nothing listens there: the fork keeps its queue full and never drains it in this test
    // (the current-thread runtime is not driven), which exercises drop-oldest.
    let cfg = srtp_edge::config::Config::from_toml_str(
        "[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:9/x\"\nqueue_ms = 100\n",
    )
    .unwrap();
    let backend = Backend::from_config(&cfg.fork.backends[0], &cfg.tls).unwrap();
    let fork = spawn_fork(
        rt.handle(),
        backend,
        CallInfo {
            from: String::new(),
            to: String::new(),
            sip_call_id: "x".into(),
            direction: "inbound".into(),
            route: "ng".into(),
            codec: G711::Pcmu,
            mode: ForkMode::Fork,
        },
    )
    .unwrap();
    let p = Profile::AesCm128HmacSha1_80;
    let ctx = |k: u8| {
        let key = vec![k; p.master_key_len()];
        let salt = vec![k ^ 0xff; p.master_salt_len()];
        SrtpContext::new(p, &key, &salt, ContextConfig::default()).unwrap()
    };
    let src: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let dst: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let leg = |inbound, outbound, peer| Leg {
        inbound: Some(inbound),
        outbound: Some(outbound),
        rtp_latch: Latch::new(Some(peer), 8),
        rtcp_latch: Latch::new(None, 8),
        rtcp_mux: true,
    };
    let mut from = leg(ctx(1), ctx(2), src);
    let mut to = leg(ctx(3), ctx(4), dst);
    let mut sender = ctx(1);
    let mut buf = vec![0u8; 2048];
    let mut tapped = 0usize;
    let (_, n) = counted(|| {
        for seq in 1..=600u16 {
            // Every tenth packet is a telephone-event with one CSRC.
            let event = seq % 10 == 0;
            let hdr: &[u8] = if event {
                &[0x81, 101, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7]
            } else {
                &[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
            };
            buf[..hdr.len()].copy_from_slice(hdr);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            let body = if event { 4 } else { 160 };
            buf[hdr.len()..hdr.len() + body].fill(seq as u8);
            let len = sender.protect_rtp(&mut buf, hdr.len() + body).unwrap();
            let fwd = relay_tapped(&mut from, &mut to, src, &mut buf, len, false, |pkt| {
                let Some(r) = rtp_payload(pkt) else { return };
                tapped += 1;
                if r.pt == 0 {
                    fork.push_g711(Track::Inbound, r.payload);
                } else {
                    fork.push_telephone_event(Track::Inbound, r.payload, r.timestamp);
                }
            })
            .unwrap();
            assert_eq!(fwd.dest, dst);
        }
    });
    assert_eq!(tapped, 600);
    assert_eq!(n, 0, "{n} allocations in 600 forked relay steps");
    assert!(
        fork.stats().dropped > 0,
        "drop-oldest ran in the counted region"
    );
}
