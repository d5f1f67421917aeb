//! Full-packet known-answer tests: libsrtp's `srtp_validate` reference packets (SSRC 0xcafebabe)
//! and RFC 7714 sections 16 and 17. Key-derivation and keystream vectors (RFC 3711 B.2/B.3,
//! RFC 6188 section 7) live next to `kdf.rs` and `aes_cm.rs`.

use super::{ContextConfig, Error, Profile, SrtpContext};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn ctx(p: Profile, key: &str, salt: &str) -> SrtpContext {
    SrtpContext::new(p, &h(key), &h(salt), ContextConfig::default()).unwrap()
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

const LIBSRTP_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139";
const LIBSRTP_SALT: &str = "0ec675ad498afeebb6960b3aabe6";
const RTP_PLAIN: &str = "800f1234decafbadcafebabe abababababababababababababababab";
const RTCP_PLAIN: &str = "81c8000bcafebabe abababababababababababababababab";

/// libsrtp `srtp_validate`: AES_CM_128_HMAC_SHA1_80, RTP and RTCP, both directions.
#[test]
fn libsrtp_validate_cm128_80() {
    let srtp = h("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb");
    let srtcp =
        h("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798");
    let p = Profile::AesCm128HmacSha1_80;
    let mut tx = ctx(p, LIBSRTP_KEY, LIBSRTP_SALT);
    assert_eq!(protect_rtp(&mut tx, &h(RTP_PLAIN)), srtp);
    assert_eq!(protect_rtcp(&mut tx, &h(RTCP_PLAIN)), srtcp);

    let mut rx = ctx(p, LIBSRTP_KEY, LIBSRTP_SALT);
    let mut buf = srtp.clone();
    let n = rx.unprotect_rtp(&mut buf).unwrap();
    assert_eq!(&buf[..n], &h(RTP_PLAIN)[..]);
    let mut buf = srtcp.clone();
    let n = rx.unprotect_rtcp(&mut buf).unwrap();
    assert_eq!(&buf[..n], &h(RTCP_PLAIN)[..]);
    // The same packets again are replays.
    assert_eq!(rx.unprotect_rtp(&mut srtp.clone()), Err(Error::Replay));
    assert_eq!(rx.unprotect_rtcp(&mut srtcp.clone()), Err(Error::Replay));
}

/// The same reference packet with the 32-bit tag profile: the ciphertext is identical and the tag
/// is the first 4 bytes of the 80-bit one; SRTCP keeps the 80-bit tag.
#[test]
fn libsrtp_validate_cm128_32() {
    let p = Profile::AesCm128HmacSha1_32;
    let mut tx = ctx(p, LIBSRTP_KEY, LIBSRTP_SALT);
    assert_eq!(
        protect_rtp(&mut tx, &h(RTP_PLAIN)),
        h("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc")
    );
    assert_eq!(
        protect_rtcp(&mut tx, &h(RTCP_PLAIN)),
        h("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798")
    );
}

/// libsrtp `srtp_validate_aes_256`: AES_256_CM_HMAC_SHA1_80 with the RFC 6188 master key.
#[test]
fn libsrtp_validate_aes256() {
    let p = Profile::AesCm256HmacSha1_80;
    let key = "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6";
    let salt = "3b04803de51ee7c96423ab5b78d2";
    let srtp = h("800f1234decafbadcafebabe f1d9de17ff251ff1aa007774b0b4b40d a08d9d9a5b3a55d8873b");
    assert_eq!(protect_rtp(&mut ctx(p, key, salt), &h(RTP_PLAIN)), srtp);
    let mut buf = srtp;
    let n = ctx(p, key, salt).unprotect_rtp(&mut buf).unwrap();
    assert_eq!(&buf[..n], &h(RTP_PLAIN)[..]);
}

const GCM_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const GCM_KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const GCM_SALT: &str = "517569642070726f2071756f";
const GCM_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
                       69736120 696e2070 61727465 73207472 6573";
const GCM_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
                        deadbeef deadbeef deadbeef deadbeef deadbeef";

fn gcm(p: Profile, key: &str) -> SrtpContext {
    SrtpContext::with_gcm_session_keys(p, &h(key), h(GCM_SALT).try_into().unwrap())
}

/// RFC 7714 sections 16.1 (AEAD_AES_128_GCM) and 16.2 (AEAD_AES_256_GCM): SRTP encryption and
/// decryption with the session key and salt given directly.
#[test]
fn rfc7714_section16_rtp() {
    let cases = [
        (
            Profile::AeadAes128Gcm,
            GCM_KEY_128,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        ),
        (
            Profile::AeadAes256Gcm,
            GCM_KEY_256,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
             9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
        ),
    ];
    for (p, key, want) in cases {
        let want = h(want);
        assert_eq!(protect_rtp(&mut gcm(p, key), &h(GCM_RTP)), want, "{p}");
        let mut rx = gcm(p, key);
        let mut buf = want.clone();
        let n = rx.unprotect_rtp(&mut buf).unwrap();
        assert_eq!(&buf[..n], &h(GCM_RTP)[..]);
        // One flipped bit anywhere (header included, as AAD) fails authentication.
        for i in [0usize, 5, 11, 12, want.len() - 1] {
            let mut bad = want.clone();
            bad[i] ^= 0x01;
            let err = gcm(p, key).unprotect_rtp(&mut bad).unwrap_err();
            assert!(
                matches!(err, Error::AuthFailed | Error::BadVersion),
                "{p} byte {i}: {err}"
            );
        }
    }
}

/// RFC 7714 sections 17.1 and 17.2: SRTCP with the E flag set and SRTCP index 0x5d4.
#[test]
fn rfc7714_section17_rtcp() {
    let cases = [
        (
            Profile::AeadAes128Gcm,
            GCM_KEY_128,
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
             c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
             45d9eade 800005d4",
        ),
        (
            Profile::AeadAes256Gcm,
            GCM_KEY_256,
            "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50
             a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c
             b26ac3be 800005d4",
        ),
    ];
    for (p, key, want) in cases {
        let want = h(want);
        let mut tx = gcm(p, key);
        tx.set_rtcp_sent(0x4d617273, 0x5d3);
        assert_eq!(protect_rtcp(&mut tx, &h(GCM_RTCP)), want, "{p}");
        let mut buf = want.clone();
        let n = gcm(p, key).unprotect_rtcp(&mut buf).unwrap();
        assert_eq!(&buf[..n], &h(GCM_RTCP)[..]);
    }
}

/// RFC 7714 sections 17.3 and 17.4 are authentication-only SRTCP (E = 0): srtp-edge only accepts
/// encrypted SRTCP and says so with a typed error, before spending any crypto.
#[test]
fn rfc7714_section17_unencrypted_rtcp_is_refused() {
    let pkt = h(
        "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
                 deadbeef deadbeef deadbeef deadbeef deadbeef 91db4afb feee5a97 8fab4393
                 ed2615fe 000005d4",
    );
    let mut rx = gcm(Profile::AeadAes256Gcm, GCM_KEY_256);
    assert_eq!(rx.unprotect_rtcp(&mut pkt.clone()), Err(Error::Unencrypted));
}
