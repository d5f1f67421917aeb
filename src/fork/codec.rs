//! G.711 (PCMU / PCMA) to and from 16-bit linear PCM, and RFC 4733 telephone-event payloads.
//!
//! The fork protocols speak μ-law (Twilio) or 16-bit linear (L16) while calls may negotiate
//! either G.711 law, so every conversion the fork needs is here, exact per ITU-T G.711 (the
//! decoders are 256-entry tables built at compile time from the reference algorithm, the encoders
//! are the reference segment search). Pure functions, no allocation.

/// Why a telephone-event payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// An RFC 4733 event payload is exactly 4 bytes (one event per packet).
    #[error("telephone-event payload of {0} bytes (expected 4)")]
    EventLength(usize),
}

/// The two codecs a fork can carry: calls negotiating anything else are not forked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// μ-law, RTP payload type 0 (North America, Japan; the Twilio wire format).
    Pcmu,
    /// A-law, RTP payload type 8 (the rest of the world).
    Pcma,
}

impl G711 {
    /// The codec of a static RTP payload type, if it is one of the two G.711 laws.
    pub fn from_payload_type(pt: u8) -> Option<G711> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }

    /// The codec named by an SDP `a=rtpmap` encoding name (case-insensitive) at 8000 Hz.
    pub fn from_encoding_name(name: &str) -> Option<G711> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(G711::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(G711::Pcma)
        } else {
            None
        }
    }

    /// The code word for digital silence (what a padded frame is filled with).
    pub fn silence(self) -> u8 {
        match self {
            G711::Pcmu => 0xFF,
            G711::Pcma => 0xD5,
        }
    }

    /// Decodes one code word.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            G711::Pcmu => ulaw_to_linear(code),
            G711::Pcma => alaw_to_linear(code),
        }
    }

    /// Encodes one linear sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            G711::Pcmu => linear_to_ulaw(sample),
            G711::Pcma => linear_to_alaw(sample),
        }
    }
}

const fn ulaw_decode_ref(code: u8) -> i16 {
    let u = !code;
    let mut t: i32 = (((u & 0x0F) as i32) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

const fn alaw_decode_ref(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t: i32 = ((a & 0x0F) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_ref(i as u8)
        } else {
            ulaw_decode_ref(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = table(false);
static ALAW_TABLE: [i16; 256] = table(true);

/// μ-law code word to 16-bit linear (the 14-bit G.711 value scaled by 4).
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// A-law code word to 16-bit linear (the 13-bit G.711 value scaled by 8).
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// 16-bit linear to μ-law (G.711 segment encoding with the reference clipping at 8159).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut v = i32::from(sample) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(8159) + (0x84 >> 2);
    let seg = SEG_END.iter().position(|&e| v <= e).unwrap_or(8);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let u = ((seg as u8) << 4) | (((v >> (seg + 1)) & 0x0F) as u8);
    u ^ mask
}

/// 16-bit linear to A-law (G.711 segment encoding).
pub fn linear_to_alaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = i32::from(sample) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = SEG_END.iter().position(|&e| v <= e).unwrap_or(8);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let q = if seg < 2 { v >> 1 } else { v >> seg };
    let a = ((seg as u8) << 4) | ((q & 0x0F) as u8);
    a ^ mask
}

/// Decodes a G.711 payload into `out` (as many samples as both hold); returns the count.
pub fn decode_into(codec: G711, payload: &[u8], out: &mut [i16]) -> usize {
    let n = payload.len().min(out.len());
    for (o, &c) in out.iter_mut().zip(payload) {
        *o = codec.decode(c);
    }
    n
}

/// Converts a payload from one G.711 law to the other in place (no-op when they are the same).
pub fn transcode_in_place(from: G711, to: G711, payload: &mut [u8]) {
    if from != to {
        for c in payload {
            *c = to.encode(from.decode(*c));
        }
    }
}

/// One RFC 4733 telephone-event payload (a DTMF key press report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 `A`-`D`, others non-DTMF events.
    pub event: u8,
    /// The E bit: this packet reports the end of the event (sent up to three times).
    pub end: bool,
    /// Power level in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the 4-byte payload; anything else is refused (never panics on peer input).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, CodecError> {
        let [event, flags, d0, d1] = payload else {
            return Err(CodecError::EventLength(payload.len()));
        };
        Ok(TelephoneEvent {
            event: *event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([*d0, *d1]),
        })
    }

    /// The DTMF key of the event, or None for non-DTMF events (tones, flash, ...).
    pub fn digit(&self) -> Option<char> {
        match self.event {
            0..=9 => Some(char::from(b'0' + self.event)),
            10 => Some('*'),
            11 => Some('#'),
            12..=15 => Some(char::from(b'A' + self.event - 12)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        // ITU-T G.711 table 2a end points, 14-bit values scaled by 4.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 8031 * 4);
        assert_eq!(ulaw_to_linear(0x00), -8031 * 4);
        assert_eq!(ulaw_to_linear(0xFE), 2 * 4);
        assert_eq!(ulaw_to_linear(0xF0), 30 * 4);
        assert_eq!(ulaw_to_linear(0xEF), 33 * 4);
        assert_eq!(ulaw_to_linear(0xE0), 93 * 4);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(3), 0xFF);
        assert_eq!(linear_to_ulaw(-8), 0x7E);
    }

    #[test]
    fn alaw_known_values() {
        // ITU-T G.711 table 1a: 13-bit decoded values scaled by 8.
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 4032 * 8);
        assert_eq!(alaw_to_linear(0x2A), -4032 * 8);
        assert_eq!(alaw_to_linear(0xD4), 3 * 8);
        assert_eq!(alaw_to_linear(0xC5), 33 * 8);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_word_round_trips() {
        for c in 0..=255u8 {
            assert_eq!(
                ulaw_to_linear(linear_to_ulaw(ulaw_to_linear(c))),
                ulaw_to_linear(c)
            );
            if c != 0x7F {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), c, "ulaw {c:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#x}");
        }
    }

    #[test]
    fn encoders_are_monotonic_and_within_one_step() {
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let u = ulaw_to_linear(linear_to_ulaw(s));
            let a = alaw_to_linear(linear_to_alaw(s));
            assert!(u >= prev_u && a >= prev_a, "not monotonic at {s}");
            prev_u = u;
            prev_a = a;
            // Quantisation error is at most half the largest step (1024 linear units).
            assert!(
                (i32::from(u) - i32::from(s)).abs() <= 1024 + 640,
                "ulaw at {s}: {u}"
            );
            assert!(
                (i32::from(a) - i32::from(s)).abs() <= 1024,
                "alaw at {s}: {a}"
            );
        }
    }

    #[test]
    fn transcoding_between_laws() {
        let mut p = [0xFFu8, 0x80, 0x00];
        transcode_in_place(G711::Pcmu, G711::Pcma, &mut p);
        assert_eq!(p, [0xD5, 0xAA, 0x2A]);
        let mut q = p;
        transcode_in_place(G711::Pcma, G711::Pcma, &mut q);
        assert_eq!(q, p);
    }

    #[test]
    fn telephone_events() {
        let e = TelephoneEvent::parse(&[11, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(e.digit(), Some('#'));
        assert!(e.end);
        assert_eq!(e.volume, 10);
        assert_eq!(e.duration, 800);
        let s = TelephoneEvent::parse(&[5, 0x0A, 0, 160]).unwrap();
        assert_eq!((s.digit(), s.end), (Some('5'), false));
        assert_eq!(
            TelephoneEvent::parse(&[10, 0, 0, 0]).unwrap().digit(),
            Some('*')
        );
        assert_eq!(
            TelephoneEvent::parse(&[15, 0, 0, 0]).unwrap().digit(),
            Some('D')
        );
        assert_eq!(TelephoneEvent::parse(&[16, 0, 0, 0]).unwrap().digit(), None);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(CodecError::EventLength(3))
        );
        assert_eq!(TelephoneEvent::parse(&[]), Err(CodecError::EventLength(0)));
        assert!(TelephoneEvent::parse(&[1, 2, 3, 4, 5]).is_err());
    }

    #[test]
    fn payload_types_and_names() {
        assert_eq!(G711::from_payload_type(0), Some(G711::Pcmu));
        assert_eq!(G711::from_payload_type(8), Some(G711::Pcma));
        assert_eq!(G711::from_payload_type(9), None);
        assert_eq!(G711::from_encoding_name("pcma"), Some(G711::Pcma));
        assert_eq!(G711::from_encoding_name("opus"), None);
    }
}
