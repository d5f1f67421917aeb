//! Just enough RTP and RTCP header parsing to find where SRTP's encrypted part starts.
//!
//! SRTP never encrypts the RTP header (fixed part, CSRC list, header extension) nor the first
//! 8 bytes of an RTCP packet; these functions compute those lengths from untrusted bytes with
//! checked bounds, and check RTP padding, without allocating.

use super::Error;

/// Length of the fixed RTP header.
pub const RTP_FIXED_HEADER_LEN: usize = 12;
/// Length of the part of an RTCP packet SRTCP leaves in the clear (header + sender SSRC).
pub const RTCP_CLEAR_LEN: usize = 8;

/// What SRTP needs from an RTP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Length of the header including CSRCs and the header extension.
    pub len: usize,
    /// The synchronisation source.
    pub ssrc: u32,
    /// The sequence number.
    pub seq: u16,
    /// True when the padding bit (P) is set.
    pub padding: bool,
}

/// Parses the RTP header at the start of `pkt`, which must hold at least the whole header
/// (`pkt` is the packet without any SRTP trailer).
pub fn parse_rtp(pkt: &[u8]) -> Result<RtpHeader, Error> {
    let fixed: &[u8; RTP_FIXED_HEADER_LEN] = pkt
        .get(..RTP_FIXED_HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::TooShort)?;
    if fixed[0] >> 6 != 2 {
        return Err(Error::BadVersion);
    }
    let cc = usize::from(fixed[0] & 0x0f);
    let mut len = RTP_FIXED_HEADER_LEN + 4 * cc;
    if fixed[0] & 0x10 != 0 {
        let ext = pkt.get(len..len + 4).ok_or(Error::BadHeader)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        len += 4 + 4 * words;
    }
    if len > pkt.len() {
        return Err(Error::BadHeader);
    }
    Ok(RtpHeader {
        len,
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        seq: u16::from_be_bytes([fixed[2], fixed[3]]),
        padding: fixed[0] & 0x20 != 0,
    })
}

/// Checks RTP padding (RFC 3550 section 5.1): when the P bit is set, the last byte counts the
/// padding bytes including itself, and must be between 1 and the payload length.
pub fn check_padding(padding: bool, payload: &[u8]) -> Result<(), Error> {
    if !padding {
        return Ok(());
    }
    match payload.last() {
        Some(&n) if n != 0 && usize::from(n) <= payload.len() => Ok(()),
        _ => Err(Error::BadPadding),
    }
}

/// Parses the first 8 bytes of an RTCP packet: checks the version and returns the sender SSRC.
pub fn parse_rtcp(pkt: &[u8]) -> Result<u32, Error> {
    let clear: &[u8; RTCP_CLEAR_LEN] = pkt
        .get(..RTCP_CLEAR_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::TooShort)?;
    if clear[0] >> 6 != 2 {
        return Err(Error::BadVersion);
    }
    Ok(u32::from_be_bytes([clear[4], clear[5], clear[6], clear[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_header() {
        let mut p = [0u8; 20];
        p[0] = 0x80;
        p[2..4].copy_from_slice(&0x1234u16.to_be_bytes());
        p[8..12].copy_from_slice(&0xcafebabeu32.to_be_bytes());
        let h = parse_rtp(&p).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                len: 12,
                ssrc: 0xcafebabe,
                seq: 0x1234,
                padding: false
            }
        );
    }

    #[test]
    fn csrc_and_extension() {
        let mut p = [0u8; 40];
        p[0] = 0x92; // V=2, X=1, CC=2
        p[20..24].copy_from_slice(&[0xbe, 0xde, 0x00, 0x02]);
        assert_eq!(parse_rtp(&p).unwrap().len, 12 + 8 + 4 + 8);
        assert_eq!(parse_rtp(&p[..32]).unwrap().len, 32);
        assert_eq!(parse_rtp(&p[..31]), Err(Error::BadHeader));
        assert_eq!(parse_rtp(&p[..23]), Err(Error::BadHeader));
        p[0] = 0x8f; // CC=15 needs 72 bytes
        assert_eq!(parse_rtp(&p), Err(Error::BadHeader));
        p[0] = 0x40;
        assert_eq!(parse_rtp(&p), Err(Error::BadVersion));
        assert_eq!(parse_rtp(&p[..11]), Err(Error::TooShort));
    }

    #[test]
    fn padding_rules() {
        assert_eq!(check_padding(false, &[]), Ok(()));
        assert_eq!(check_padding(true, &[]), Err(Error::BadPadding));
        assert_eq!(check_padding(true, &[1, 2, 0]), Err(Error::BadPadding));
        assert_eq!(check_padding(true, &[1, 2, 4]), Err(Error::BadPadding));
        assert_eq!(check_padding(true, &[1, 2, 3]), Ok(()));
        assert_eq!(check_padding(true, &[1]), Ok(()));
    }

    #[test]
    fn rtcp_header() {
        let p = [0x80, 200, 0, 6, 1, 2, 3, 4];
        assert_eq!(parse_rtcp(&p), Ok(0x01020304));
        assert_eq!(parse_rtcp(&p[..7]), Err(Error::TooShort));
        assert_eq!(parse_rtcp(&[0u8; 8]), Err(Error::BadVersion));
    }
}
