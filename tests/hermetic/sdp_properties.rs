//! Property-style tests of the SDP model and the crypto parser, driven by a small
//! deterministic generator (so failures reproduce): parse → write → parse is the identity on
//! the model, writing is a fixed point, and mutated inputs never panic.

use srtp_edge::sdp::{inspect_offer, CryptoAttr, Sdp};

/// xorshift64*: deterministic, dependency-free randomness for generated cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ATTRS: &[&str] = &[
    "a=sendrecv",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=rtcp:5001",
    "a=rtpmap:0 PCMU/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=x-weird: spaces  kept ",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
    "a=crypto:2 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==",
    "a=crypto:3 F8_128_HMAC_SHA1_80 inline:junk",
    "a=fingerprint:sha-256 4A:AD:B9",
    "a=setup:actpass",
    "a=ice-ufrag:abcd",
    "a=candidate:1 1 udp 2122260223 192.168.0.196 46243 typ host",
    "b=AS:64",
    "c=IN IP4 198.51.100.7",
    "c=IN IP6 2001:db8::7",
    "i=media title",
];
const MEDIA: &[&str] = &[
    "m=audio 5000 RTP/SAVP 0 8 101",
    "m=audio 0 RTP/AVP 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "m=video 5002/2 RTP/SAVPF 96 97",
    "m=application 5004 UDP/BFCP *",
    "m=audio 6000 RTP/AVP 0",
];

fn generate(rng: &mut Rng) -> String {
    let mut s = String::from("v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\n");
    if rng.below(2) == 0 {
        s.push_str("c=IN IP4 192.0.2.1\r\n");
    }
    s.push_str("t=0 0\r\n");
    for _ in 0..rng.below(4) {
        s.push_str(rng.pick(ATTRS));
        s.push_str("\r\n");
    }
    for _ in 0..rng.below(5) {
        s.push_str(rng.pick(MEDIA));
        s.push_str("\r\n");
        for _ in 0..rng.below(8) {
            s.push_str(rng.pick(ATTRS));
            s.push_str("\r\n");
        }
    }
    s
}

#[test]
fn parse_write_parse_is_idempotent() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..2000 {
        let text = generate(&mut rng);
        let sdp = Sdp::parse(&text).expect("generated SDP is valid");
        let written = sdp.write();
        assert_eq!(written, text, "CRLF input is written back byte for byte");
        let again = Sdp::parse(&written).unwrap();
        assert_eq!(again, sdp);
        assert_eq!(again.write(), written);
        // Policy never panics on any of them.
        let _ = inspect_offer(&sdp);
    }
}

#[test]
fn mutated_inputs_never_panic_and_stay_idempotent_when_accepted() {
    let mut rng = Rng(0xfeed_beef_0000_0042);
    let mut accepted = 0;
    for _ in 0..3000 {
        let mut bytes = generate(&mut rng).into_bytes();
        for _ in 0..1 + rng.below(6) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[i] = rng.next() as u8,
                1 => {
                    bytes.remove(i);
                }
                2 => bytes.insert(i, b"=: /\r\n0a9m"[rng.below(10)]),
                _ => bytes.truncate(i),
            }
        }
        if let Ok(sdp) = Sdp::parse_bytes(&bytes) {
            accepted += 1;
            let again = Sdp::parse(&sdp.write()).expect("our own output parses");
            assert_eq!(again, sdp);
            let _ = inspect_offer(&sdp);
            for m in &sdp.media {
                let _ = m.crypto();
                let _ = m.rtcp();
                let _ = m.connection();
            }
        }
    }
    assert!(
        accepted > 100,
        "the mutator should leave many inputs valid ({accepted})"
    );
}

#[test]
fn crypto_lines_round_trip_and_mutations_never_panic() {
    let seeds = [
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        "2 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw== WSH=64",
        "3 AES_256_CM_HMAC_SHA1_32 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLQ==|1048576",
    ];
    let mut rng = Rng(7);
    for seed in seeds {
        let c = CryptoAttr::parse(seed).unwrap();
        assert_eq!(c.to_attr_value().as_str(), seed);
        for _ in 0..2000 {
            let mut b = seed.as_bytes().to_vec();
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
            if let Ok(s) = std::str::from_utf8(&b) {
                if let Ok(c) = CryptoAttr::parse(s) {
                    let again = CryptoAttr::parse(&c.to_attr_value()).unwrap();
                    assert_eq!(again, c);
                }
            }
        }
    }
}
