//! Malformed and hostile input: every truncation length, every flipped bit, CSRC counts and
//! header extensions that overrun the packet, bad padding, wrong versions, unencrypted SRTCP,
//! short buffers, too many SSRCs. Each is a typed error, never a panic, and never changes the
//! context: the genuine packet still unprotects afterwards.

use srtp_edge::srtp::{ContextConfig, Error, Profile, SrtpContext, MAX_STREAMS};

fn ctx(p: Profile) -> SrtpContext {
    let key: Vec<u8> = (0..p.master_key_len() as u8).collect();
    let salt: Vec<u8> = (0..p.master_salt_len() as u8).map(|b| b ^ 0x5a).collect();
    SrtpContext::new(p, &key, &salt, ContextConfig::default()).unwrap()
}

/// An RTP packet with 2 CSRCs, a one-byte header extension and 4 bytes of valid padding.
fn rich_rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0xb2, 0x60];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef]);
    p.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]);
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x7f, 0, 0]);
    p.extend_from_slice(&[0x55; 40]);
    p.extend_from_slice(&[0, 0, 0, 4]);
    p
}

fn protect_rtp(c: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + c.rtp_overhead(), 0);
    let n = c.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn protect_rtcp(c: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + c.rtcp_overhead(), 0);
    let n = c.protect_rtcp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

const RTCP: [u8; 28] = [
    0x81, 0xc9, 0, 6, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20,
];

#[test]
fn every_truncation_and_every_bit_flip_is_a_typed_error() {
    for p in Profile::ALL {
        let plain = rich_rtp(1000);
        let wire = protect_rtp(&mut ctx(p), &plain);
        let rtcp_wire = protect_rtcp(&mut ctx(p), &RTCP);
        let mut rx = ctx(p);
        for cut in 0..wire.len() {
            let mut b = wire[..cut].to_vec();
            let e = rx.unprotect_rtp(&mut b).unwrap_err();
            assert!(
                matches!(e, Error::TooShort | Error::BadHeader | Error::AuthFailed),
                "{p} RTP cut {cut}: {e}"
            );
        }
        for cut in 0..rtcp_wire.len() {
            let mut b = rtcp_wire[..cut].to_vec();
            let e = rx.unprotect_rtcp(&mut b).unwrap_err();
            assert!(
                matches!(e, Error::TooShort | Error::AuthFailed | Error::Unencrypted),
                "{p} RTCP cut {cut}: {e}"
            );
        }
        for bit in 0..wire.len() * 8 {
            let mut b = wire.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let e = rx.unprotect_rtp(&mut b).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::AuthFailed | Error::BadVersion | Error::BadHeader | Error::Replay
                ),
                "{p} RTP bit {bit}: {e}"
            );
        }
        for bit in 0..rtcp_wire.len() * 8 {
            let mut b = rtcp_wire.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let e = rx.unprotect_rtcp(&mut b).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::AuthFailed | Error::BadVersion | Error::Unencrypted
                ),
                "{p} RTCP bit {bit}: {e}"
            );
        }
        // Nothing above advanced the state: the genuine packets still go through, once.
        let mut b = wire.clone();
        assert_eq!(rx.unprotect_rtp(&mut b), Ok(plain.len()), "{p}");
        assert_eq!(&b[..plain.len()], &plain[..]);
        assert_eq!(rx.unprotect_rtp(&mut wire.clone()), Err(Error::Replay));
        let mut b = rtcp_wire.clone();
        assert_eq!(rx.unprotect_rtcp(&mut b), Ok(RTCP.len()), "{p}");
        assert_eq!(&b[..RTCP.len()], &RTCP[..]);
        assert_eq!(
            rx.unprotect_rtcp(&mut rtcp_wire.clone()),
            Err(Error::Replay)
        );
    }
}

#[test]
fn csrc_counts_and_extensions_that_overrun() {
    let p = Profile::AesCm128HmacSha1_80;
    let mut tx = ctx(p);
    let mut rx = ctx(p);
    for cc in 0..16u8 {
        // A header claiming `cc` CSRCs with room for fewer.
        let mut pkt = vec![0x80 | cc, 0, 0, cc, 0, 0, 0, 0, 0, 0, 0, 1];
        pkt.extend(std::iter::repeat_n(0u8, 4 * cc as usize));
        let mut buf = pkt.clone();
        buf.resize(pkt.len() + 10, 0);
        assert!(
            tx.protect_rtp(&mut buf, pkt.len()).is_ok(),
            "cc {cc} exact fit"
        );
        if cc > 0 {
            let short = pkt.len() - 1;
            let mut buf = pkt.clone();
            buf.resize(pkt.len() + 10, 0);
            assert_eq!(
                tx.protect_rtp(&mut buf, short),
                Err(Error::BadHeader),
                "cc {cc}"
            );
            let mut wire = pkt[..short].to_vec();
            wire.extend_from_slice(&[0; 10]);
            // The 10-byte tag must not be taken for CSRCs.
            assert_eq!(
                rx.unprotect_rtp(&mut wire),
                Err(Error::BadHeader),
                "cc {cc}"
            );
        }
    }
    for words in [1u16, 2, 100, u16::MAX] {
        let mut pkt = vec![0x90, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde];
        pkt.extend_from_slice(&words.to_be_bytes());
        let mut buf = pkt.clone();
        buf.resize(pkt.len() + 10, 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, pkt.len()),
            Err(Error::BadHeader),
            "{words}"
        );
        let mut wire = pkt.clone();
        wire.extend_from_slice(&[0u8; 10]);
        if words > 2 {
            assert_eq!(
                rx.unprotect_rtp(&mut wire),
                Err(Error::BadHeader),
                "{words}"
            );
        }
    }
    // Extension flag set but no room for the extension header.
    let mut wire = vec![0x90, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe];
    wire.extend_from_slice(&[0u8; 10]);
    assert_eq!(rx.unprotect_rtp(&mut wire), Err(Error::BadHeader));
}

#[test]
fn bad_padding_is_refused_on_both_sides() {
    for p in Profile::ALL {
        let mut tx = ctx(p);
        for last in [0u8, 200] {
            let mut pkt = vec![0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3];
            pkt.push(last);
            let mut buf = pkt.clone();
            buf.resize(pkt.len() + 16, 0);
            assert_eq!(
                tx.protect_rtp(&mut buf, pkt.len()),
                Err(Error::BadPadding),
                "{p}"
            );
        }
        // P set with no payload at all.
        let pkt = [0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len() + 16, 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, pkt.len()),
            Err(Error::BadPadding),
            "{p}"
        );
    }
    // An authentic packet with bad padding, made by an implementation that does not check it.
    let key = [1u8; 16];
    let salt = [2u8; 14];
    let mut w = webrtc_srtp::context::Context::new(
        &key,
        &salt,
        webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
    )
    .unwrap();
    let wire = w
        .encrypt_rtp(&[0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 9])
        .unwrap();
    let mut rx = SrtpContext::new(
        Profile::AesCm128HmacSha1_80,
        &key,
        &salt,
        ContextConfig::default(),
    )
    .unwrap();
    assert_eq!(rx.unprotect_rtp(&mut wire.to_vec()), Err(Error::BadPadding));
}

#[test]
fn versions_buffers_and_lengths() {
    for p in Profile::ALL {
        let mut c = ctx(p);
        let mut pkt = rich_rtp(5);
        let len = pkt.len();
        pkt[0] = (pkt[0] & 0x3f) | 0x40;
        pkt.resize(len + 16, 0);
        assert_eq!(c.protect_rtp(&mut pkt, len), Err(Error::BadVersion), "{p}");
        assert_eq!(c.unprotect_rtp(&mut pkt), Err(Error::BadVersion), "{p}");
        let mut pkt = rich_rtp(5);
        let len = pkt.len();
        // No room for the tag; a length past the buffer.
        pkt.resize(len + c.rtp_overhead() - 1, 0);
        assert_eq!(
            c.protect_rtp(&mut pkt, len),
            Err(Error::BufferTooSmall),
            "{p}"
        );
        assert_eq!(
            c.protect_rtp(&mut pkt, len + 100),
            Err(Error::TooShort),
            "{p}"
        );
        let mut r = RTCP.to_vec();
        r.resize(RTCP.len() + c.rtcp_overhead() - 1, 0);
        assert_eq!(
            c.protect_rtcp(&mut r, RTCP.len()),
            Err(Error::BufferTooSmall),
            "{p}"
        );
        r[0] = 0x01;
        assert_eq!(
            c.protect_rtcp(&mut r, RTCP.len()),
            Err(Error::BadVersion),
            "{p}"
        );
        assert_eq!(c.protect_rtcp(&mut r, 7), Err(Error::TooShort), "{p}");
        for n in 0..40 {
            assert!(c.unprotect_rtp(&mut vec![0x80; n]).is_err());
            assert!(c.unprotect_rtcp(&mut vec![0x80; n]).is_err());
        }
    }
}

#[test]
fn unencrypted_srtcp_is_refused() {
    for p in Profile::ALL {
        let mut wire = protect_rtcp(&mut ctx(p), &RTCP);
        let word_at = if p.is_aead() {
            wire.len() - 4
        } else {
            wire.len() - 4 - p.rtcp_tag_len()
        };
        assert_eq!(wire[word_at], 0x80, "{p}: E flag set, index 1");
        wire[word_at] = 0;
        assert_eq!(
            ctx(p).unprotect_rtcp(&mut wire),
            Err(Error::Unencrypted),
            "{p}"
        );
    }
}

#[test]
fn the_stream_table_is_bounded() {
    for p in [Profile::AesCm128HmacSha1_80, Profile::AeadAes128Gcm] {
        let mut tx = ctx(p);
        let mut rx = ctx(p);
        let mk = |ssrc: u32, seq: u8| {
            let mut pkt = vec![0x80, 0, 0, seq, 0, 0, 0, 0];
            pkt.extend_from_slice(&ssrc.to_be_bytes());
            pkt.extend_from_slice(&[0u8; 20]);
            pkt
        };
        for ssrc in 0..MAX_STREAMS as u32 {
            let wire = protect_rtp(&mut tx, &mk(ssrc, 1));
            assert!(rx.unprotect_rtp(&mut wire.clone()).is_ok());
        }
        let pkt = mk(0xffff, 1);
        let mut buf = pkt.clone();
        buf.resize(pkt.len() + 16, 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, pkt.len()),
            Err(Error::TooManyStreams),
            "{p}"
        );
        // Made by a context that still has room, refused by the full one.
        let wire = protect_rtp(&mut ctx(p), &pkt);
        assert_eq!(
            rx.unprotect_rtp(&mut wire.clone()),
            Err(Error::TooManyStreams),
            "{p}"
        );
        let mut r = RTCP.to_vec();
        r[4..8].copy_from_slice(&0xffffu32.to_be_bytes());
        r.resize(RTCP.len() + 20, 0);
        assert_eq!(
            tx.protect_rtcp(&mut r, RTCP.len()),
            Err(Error::TooManyStreams),
            "{p}"
        );
        // Known SSRCs keep working; protecting an index twice is refused (no keystream reuse).
        let mut again = mk(3, 1);
        again.resize(again.len() + 16, 0);
        assert_eq!(tx.protect_rtp(&mut again, 32), Err(Error::Replay), "{p}");
        let wire = protect_rtp(&mut tx, &mk(3, 2));
        assert!(rx.unprotect_rtp(&mut wire.clone()).is_ok());
    }
}

#[test]
fn unauthenticated_packets_do_not_create_streams() {
    let p = Profile::AeadAes128Gcm;
    let mut rx = ctx(p);
    // 64 forged packets with fresh SSRCs must not fill the table.
    for ssrc in 0..(MAX_STREAMS as u32 + 10) {
        let mut forged = vec![0x80, 0, 0, 1, 0, 0, 0, 0];
        forged.extend_from_slice(&ssrc.to_be_bytes());
        forged.extend_from_slice(&[0u8; 40]);
        assert_eq!(rx.unprotect_rtp(&mut forged), Err(Error::AuthFailed));
    }
    let mut pkt = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x99, 0x99];
    pkt.extend_from_slice(&[1u8; 20]);
    let wire = protect_rtp(&mut ctx(p), &pkt);
    assert!(rx.unprotect_rtp(&mut wire.clone()).is_ok());
}

#[test]
fn rollover_counter_seeding() {
    for p in [Profile::AesCm128HmacSha1_32, Profile::AeadAes256Gcm] {
        let mut tx = ctx(p);
        tx.set_roc(0xabcd, 7);
        let mut pkt = vec![0x80, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0xab, 0xcd];
        pkt.extend_from_slice(&[4u8; 30]);
        let wire = protect_rtp(&mut tx, &pkt);
        // A receiver that assumes ROC 0 cannot authenticate it; a seeded one can.
        assert_eq!(
            ctx(p).unprotect_rtp(&mut wire.clone()),
            Err(Error::AuthFailed),
            "{p}"
        );
        let mut rx = ctx(p);
        rx.set_roc(0xabcd, 7);
        assert_eq!(rx.unprotect_rtp(&mut wire.clone()), Ok(pkt.len()), "{p}");
        // Seeding the same ROC again keeps the replay state.
        rx.set_roc(0xabcd, 7);
        assert_eq!(
            rx.unprotect_rtp(&mut wire.clone()),
            Err(Error::Replay),
            "{p}"
        );
    }
}

#[test]
fn key_and_config_errors() {
    for p in Profile::ALL {
        let key = vec![0u8; p.master_key_len()];
        let salt = vec![0u8; p.master_salt_len()];
        let cfg = ContextConfig::default();
        assert_eq!(cfg.replay_window, 128);
        assert!(SrtpContext::new(p, &key, &salt, cfg).is_ok());
        assert_eq!(
            SrtpContext::new(p, &key[1..], &salt, cfg).unwrap_err(),
            Error::BadKeyLength
        );
        assert_eq!(
            SrtpContext::new(p, &key, &salt[1..], cfg).unwrap_err(),
            Error::BadKeyLength
        );
        let ks = [key.clone(), salt.clone()].concat();
        let c = SrtpContext::from_key_salt(p, &ks, cfg).unwrap();
        assert_eq!(c.profile(), p);
        assert_eq!(c.rtp_overhead(), p.rtp_tag_len());
        assert_eq!(c.rtcp_overhead(), 4 + p.rtcp_tag_len());
        assert!(
            !format!("{c:?}").contains("00, 00"),
            "Debug must not print keys"
        );
        assert_eq!(
            SrtpContext::from_key_salt(p, &ks[1..], cfg).unwrap_err(),
            Error::BadKeyLength
        );
        for w in [0usize, 63, 1025] {
            let e = SrtpContext::new(p, &key, &salt, ContextConfig { replay_window: w });
            assert_eq!(e.unwrap_err(), Error::BadReplayWindow);
        }
        assert_eq!(Error::BadReplayWindow.label(), "bad_replay_window");
    }
}
