//! Classifies a datagram on a media socket by its first bytes (RFC 7983, RFC 5761), so each kind
//! goes to the code that understands it and nothing unexpected is relayed.

/// What a datagram received on a media port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// STUN (first byte 0-3): ICE connectivity checks.
    Stun,
    /// DTLS (first byte 20-63): the DTLS-SRTP handshake.
    Dtls,
    /// RTP (first byte 128-191, payload type outside the RTCP range).
    Rtp,
    /// RTCP (first byte 128-191, packet type 192-223, RFC 5761 section 4).
    Rtcp,
    /// Anything else (ZRTP, TURN channels, garbage): dropped.
    Other,
}

/// Classifies `pkt`. Never panics; a datagram shorter than an RTP header is `Other` unless its
/// first byte says STUN or DTLS (whose own parsers check lengths).
pub fn classify(pkt: &[u8]) -> Kind {
    let Some(&b0) = pkt.first() else {
        return Kind::Other;
    };
    match b0 {
        0..=3 => Kind::Stun,
        20..=63 => Kind::Dtls,
        128..=191 => {
            if pkt.len() < 8 {
                return Kind::Other;
            }
            // The second byte is the RTCP packet type, or marker bit + RTP payload type. RTCP
            // packet types 192-223 map to RTP payload types 64-95, which RFC 5761 reserves.
            match pkt[1] & 0x7f {
                64..=95 => Kind::Rtcp,
                _ if pkt.len() >= 12 => Kind::Rtp,
                _ => Kind::Other,
            }
        }
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_rfc_7983() {
        assert_eq!(classify(&[0x00, 0x01, 0, 0]), Kind::Stun);
        assert_eq!(classify(&[22, 0xfe, 0xfd]), Kind::Dtls);
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 0x00; // PCMU
        assert_eq!(classify(&rtp), Kind::Rtp);
        rtp[1] = 0x80 | 8; // marker + PCMA
        assert_eq!(classify(&rtp), Kind::Rtp);
        let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 1]; // SR
        assert_eq!(classify(&rtcp), Kind::Rtcp);
        assert_eq!(classify(&[0x81, 201, 0, 1, 0, 0, 0, 1]), Kind::Rtcp); // RR
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[0x80]), Kind::Other);
        assert_eq!(classify(&[0x80, 0, 0, 0, 0, 0, 0, 0]), Kind::Other); // short RTP
        assert_eq!(classify(&[16, 0, 0, 0]), Kind::Other); // ZRTP
        assert_eq!(classify(&[64, 0, 0, 0]), Kind::Other); // TURN channel
        assert_eq!(classify(&[0xff; 20]), Kind::Other);
    }
}
