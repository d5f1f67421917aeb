//! The relay step for one datagram, as a pure function over a leg pair and a buffer: classify,
//! authenticate and decrypt with the receiving leg's inbound context, check the source against
//! the latch, re-encrypt in place with the other leg's outbound context, and say where to send.
//!
//! No packet is ever forwarded without passing authentication, even if both legs use the same
//! suite: each leg has its own keys, made by srtp-edge. No IO and no clock here; the worker owns
//! the sockets and passes bytes in.

use std::net::SocketAddr;

use super::demux::{self, Kind};
use super::latch::{Latch, Verdict};
use crate::srtp::{self, SrtpContext};

/// Why a datagram was dropped; each is a label of `srtp_edge_packets_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Failed SRTP/SRTCP authentication: forged, corrupted, or plain RTP (which cannot carry a
    /// valid tag; SRTP cannot tell plaintext from forgery, and treats both the same).
    Auth = 0,
    /// Authentic but already seen, or too old for the replay window.
    Replay,
    /// Authentic, but from an address other than the one the leg latched onto.
    NotLatchedSource,
    /// Not RTP/RTCP, too short, bad version, or otherwise unparsable.
    Malformed,
    /// The leg has no keys yet (offer seen, answer not yet), or the other leg has none.
    NotReady,
    /// STUN on a leg without ICE.
    Stun,
    /// DTLS on a leg without DTLS-SRTP.
    Dtls,
    /// The other leg has no address to send to yet.
    NoDestination,
}

impl Drop {
    /// Number of reasons, for fixed-size counter arrays.
    pub const COUNT: usize = 8;

    /// Every reason, in counter-array order.
    pub const ALL: [Drop; Drop::COUNT] = [
        Drop::Auth,
        Drop::Replay,
        Drop::NotLatchedSource,
        Drop::Malformed,
        Drop::NotReady,
        Drop::Stun,
        Drop::Dtls,
        Drop::NoDestination,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Drop::Auth => "auth",
            Drop::Replay => "replay",
            Drop::NotLatchedSource => "not_latched_source",
            Drop::Malformed => "malformed",
            Drop::NotReady => "not_ready",
            Drop::Stun => "stun",
            Drop::Dtls => "dtls",
            Drop::NoDestination => "no_destination",
        }
    }
}

/// A relayed datagram: the buffer now holds `len` bytes protected for the other leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Length of the re-encrypted packet at the start of the buffer.
    pub len: usize,
    /// Where to send it.
    pub dest: SocketAddr,
    /// Send it from the other leg's RTCP socket (RTCP without rtcp-mux) instead of its RTP one.
    pub via_rtcp_socket: bool,
    /// It was RTCP.
    pub rtcp: bool,
}

/// One leg's media state: its SRTP contexts and where its peer is.
pub struct Leg {
    /// Decrypts what the peer sends (the peer's key). None until the peer's key is known.
    pub inbound: Option<SrtpContext>,
    /// Encrypts what srtp-edge sends to the peer (srtp-edge's key for this leg).
    pub outbound: Option<SrtpContext>,
    /// Where RTP (and RTCP with rtcp-mux) goes.
    pub rtp_latch: Latch,
    /// Where RTCP goes without rtcp-mux.
    pub rtcp_latch: Latch,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
}

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leg")
            .field("keyed_in", &self.inbound.is_some())
            .field("keyed_out", &self.outbound.is_some())
            .field("rtp_latch", &self.rtp_latch)
            .field("rtcp_mux", &self.rtcp_mux)
            .finish()
    }
}

fn map_err(e: srtp::Error) -> Drop {
    match e {
        srtp::Error::AuthFailed => Drop::Auth,
        srtp::Error::Replay => Drop::Replay,
        _ => Drop::Malformed,
    }
}

/// The audio part of a decrypted RTP packet, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPayload<'a> {
    /// Payload type (7 bits).
    pub pt: u8,
    /// RTP timestamp.
    pub timestamp: u32,
    /// The payload, without CSRC list, header extension or padding.
    pub payload: &'a [u8],
}

/// Finds the payload of a plaintext RTP packet (CSRCs, extension and padding stripped). None
/// for anything malformed: lengths that do not fit, or padding longer than the payload.
pub fn rtp_payload(pkt: &[u8]) -> Option<RtpPayload<'_>> {
    let b0 = *pkt.first()?;
    if b0 >> 6 != 2 {
        return None;
    }
    let pt = pkt.get(1)? & 0x7f;
    let ts = pkt.get(4..8)?;
    let timestamp = u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]]);
    let mut off = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let ext = pkt.get(off..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    let mut end = pkt.len();
    if b0 & 0x20 != 0 {
        let pad = usize::from(*pkt.last()?);
        if pad == 0 {
            return None;
        }
        end = end.checked_sub(pad)?;
    }
    let payload = pkt.get(off..end)?;
    Some(RtpPayload {
        pt,
        timestamp,
        payload,
    })
}

/// Relays one datagram that arrived on `from`'s socket (its RTCP socket if `on_rtcp_socket`)
/// from `src`, holding `len` bytes at the start of `buf`, towards `to`. On success the buffer
/// holds the packet protected for `to`; `buf` must have room for the tag beyond `len`.
pub fn relay(
    from: &mut Leg,
    to: &mut Leg,
    src: SocketAddr,
    buf: &mut [u8],
    len: usize,
    on_rtcp_socket: bool,
) -> Result<Forward, Drop> {
    relay_tapped(from, to, src, buf, len, on_rtcp_socket, |_| {})
}

/// [`relay`], handing each authenticated RTP packet from the latched source, decrypted, to
/// `tap` before it is re-encrypted (the fork's tap point). RTCP is never tapped. The tap sees
/// the plaintext packet only for the duration of the call and must not keep it.
pub fn relay_tapped(
    from: &mut Leg,
    to: &mut Leg,
    src: SocketAddr,
    buf: &mut [u8],
    len: usize,
    on_rtcp_socket: bool,
    mut tap: impl FnMut(&[u8]),
) -> Result<Forward, Drop> {
    let len = len.min(buf.len());
    let rtcp = match demux::classify(&buf[..len]) {
        Kind::Rtp if !on_rtcp_socket => false,
        Kind::Rtcp => true,
        Kind::Stun => return Err(Drop::Stun),
        Kind::Dtls => return Err(Drop::Dtls),
        Kind::Rtp | Kind::Other => return Err(Drop::Malformed),
    };
    let inbound = from.inbound.as_mut().ok_or(Drop::NotReady)?;
    let plain = if rtcp {
        inbound.unprotect_rtcp(&mut buf[..len])
    } else {
        inbound.unprotect_rtp(&mut buf[..len])
    }
    .map_err(map_err)?;

    let latch = if rtcp && !from.rtcp_mux && on_rtcp_socket {
        &mut from.rtcp_latch
    } else {
        &mut from.rtp_latch
    };
    if latch.on_authenticated(src) == Verdict::Foreign {
        return Err(Drop::NotLatchedSource);
    }
    if !rtcp {
        tap(buf.get(..plain).unwrap_or_default());
    }

    let via_rtcp_socket = rtcp && !to.rtcp_mux;
    let dest = if via_rtcp_socket {
        to.rtcp_latch.destination()
    } else {
        to.rtp_latch.destination()
    }
    .ok_or(Drop::NoDestination)?;
    let outbound = to.outbound.as_mut().ok_or(Drop::NotReady)?;
    let out = if rtcp {
        outbound.protect_rtcp(buf, plain)
    } else {
        outbound.protect_rtp(buf, plain)
    }
    .map_err(|_| Drop::Malformed)?;
    Ok(Forward {
        len: out,
        dest,
        via_rtcp_socket,
        rtcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(b0: u8, extra: &[u8], payload: &[u8], pad: &[u8]) -> Vec<u8> {
        let mut p = vec![b0, 0x80 | 8, 0, 1, 0, 0, 0x01, 0x40, 0, 0, 0, 9];
        p.extend_from_slice(extra);
        p.extend_from_slice(payload);
        p.extend_from_slice(pad);
        p
    }

    #[test]
    fn payload_skips_csrcs_extension_and_padding() {
        let plain = pkt(0x80, &[], &[1, 2, 3], &[]);
        let r = rtp_payload(&plain).unwrap();
        assert_eq!((r.pt, r.timestamp, r.payload), (8, 320, &[1u8, 2, 3][..]));
        // Two CSRCs, a one-word extension, three bytes of padding.
        let extra = [[0u8; 8].as_slice(), &[0xbe, 0xde, 0, 1, 9, 9, 9, 9]].concat();
        let p = pkt(0x80 | 0x20 | 0x10 | 2, &extra, &[7; 160], &[0, 0, 3]);
        let r = rtp_payload(&p).unwrap();
        assert_eq!(r.payload, &[7u8; 160][..]);
    }

    #[test]
    fn payload_refuses_lengths_that_do_not_fit() {
        assert!(rtp_payload(&[]).is_none());
        assert!(rtp_payload(&[0x80, 0, 0]).is_none());
        assert!(
            rtp_payload(&pkt(0x40, &[], &[1], &[])).is_none(),
            "version 1"
        );
        assert!(
            rtp_payload(&pkt(0x8f, &[], &[1], &[])).is_none(),
            "15 CSRCs missing"
        );
        assert!(rtp_payload(&pkt(0x90, &[0, 0, 0xff, 0xff], &[], &[])).is_none());
        assert!(
            rtp_payload(&pkt(0xa0, &[], &[1], &[0, 200])).is_none(),
            "padding > payload"
        );
        assert!(
            rtp_payload(&pkt(0xa0, &[], &[1], &[0])).is_none(),
            "zero padding count"
        );
    }
}
