//! [`SrtpContext`]: one direction of one stream set (every SSRC under one master key), protecting
//! or unprotecting RTP and RTCP packets in place.
//!
//! The order of work on the way in is: parse the clear header, estimate the index, check the
//! replay window (no crypto spent on replays), verify the tag in constant time and decrypt, and
//! only then advance the stream state. Nothing here allocates after [`SrtpContext::new`].

use std::fmt;

use super::cm::CmSession;
use super::gcm::{self, GcmSession};
use super::header::{self, RTCP_CLEAR_LEN};
use super::kdf::{Kdf, Label};
use super::streams::{estimate_index, StreamTable};
use super::{replay, Error, Profile};

/// Size of the SRTCP `E || index` word.
const SRTCP_INDEX_LEN: usize = 4;
/// The E (encrypted) flag of the SRTCP index word.
const E_FLAG: u32 = 0x8000_0000;
/// Largest SRTCP index (31 bits).
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;

/// Settings of a context that are not keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextConfig {
    /// Replay window in packets, 64..=1024 (RFC 3711 requires at least 64). Default 128.
    pub replay_window: usize,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig { replay_window: 128 }
    }
}

// Inline on purpose (see `AesCm`): the context is created once and used per packet.
#[allow(clippy::large_enum_variant)]
enum Transform {
    Cm { rtp: CmSession, rtcp: CmSession },
    Gcm { rtp: GcmSession, rtcp: GcmSession },
}

/// The SRTP/SRTCP cryptographic context of one direction: derived session keys and per-SSRC
/// state. Use one context to protect (outbound) or one to unprotect (inbound), never both.
pub struct SrtpContext {
    profile: Profile,
    transform: Transform,
    streams: StreamTable,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material is never formatted.
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("replay_window", &self.streams.window())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys (RFC 3711 section 4.3, key derivation rate 0) from a master key
    /// and salt whose lengths must match `profile`.
    pub fn new(
        profile: Profile,
        master_key: &[u8],
        master_salt: &[u8],
        cfg: ContextConfig,
    ) -> Result<Self, Error> {
        if master_key.len() != profile.master_key_len()
            || master_salt.len() != profile.master_salt_len()
        {
            return Err(Error::BadKeyLength);
        }
        let streams = StreamTable::new(cfg.replay_window)?;
        let kdf = Kdf::new(master_key, master_salt)?;
        let key_len = profile.master_key_len();
        let transform = if profile.is_aead() {
            Transform::Gcm {
                rtp: GcmSession::derive(&kdf, key_len, [Label::RtpKey, Label::RtpSalt])?,
                rtcp: GcmSession::derive(&kdf, key_len, [Label::RtcpKey, Label::RtcpSalt])?,
            }
        } else {
            Transform::Cm {
                rtp: CmSession::derive(
                    &kdf,
                    key_len,
                    [Label::RtpKey, Label::RtpAuth, Label::RtpSalt],
                )?,
                rtcp: CmSession::derive(
                    &kdf,
                    key_len,
                    [Label::RtcpKey, Label::RtcpAuth, Label::RtcpSalt],
                )?,
            }
        };
        Ok(SrtpContext {
            profile,
            transform,
            streams,
        })
    }

    /// Like [`SrtpContext::new`] from the concatenated `key || salt`, as carried by an SDES
    /// `inline:` parameter (RFC 4568) after base64 decoding.
    pub fn from_key_salt(
        profile: Profile,
        key_salt: &[u8],
        cfg: ContextConfig,
    ) -> Result<Self, Error> {
        if key_salt.len() != profile.key_salt_len() {
            return Err(Error::BadKeyLength);
        }
        let (key, salt) = key_salt.split_at(profile.master_key_len());
        Self::new(profile, key, salt, cfg)
    }

    /// The protection profile this context was created with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Bytes `protect_rtp` appends (the RTP authentication tag).
    pub fn rtp_overhead(&self) -> usize {
        self.profile.rtp_tag_len()
    }

    /// Bytes `protect_rtcp` appends (the `E || SRTCP index` word and the tag).
    pub fn rtcp_overhead(&self) -> usize {
        SRTCP_INDEX_LEN + self.profile.rtcp_tag_len()
    }

    /// Seeds the rollover counter of `ssrc` (for re-keying or joining a running stream): its next
    /// packet is taken to have this ROC. Has no effect if the ROC is already `roc`; if the stream
    /// table is full and `ssrc` is new, the seed is dropped and that SSRC's packets fail with
    /// [`Error::TooManyStreams`] anyway.
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) {
        if let Ok(slot) = self.streams.find_or_insert(ssrc) {
            if let Some((s, bits)) = self.streams.rtp_mut(slot) {
                if !s.rtp_seen || s.roc != roc {
                    s.roc = roc;
                    s.rtp_seen = false;
                    bits.fill(0);
                }
            }
        }
    }

    /// Protects the RTP packet in `buf[..len]` in place and appends the tag; `buf` must have
    /// [`rtp_overhead`](Self::rtp_overhead) bytes of room after `len`. Returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let tag_len = self.profile.rtp_tag_len();
        let pkt = buf.get(..len).ok_or(Error::TooShort)?;
        let h = header::parse_rtp(pkt)?;
        header::check_padding(h.padding, &pkt[h.len..])?;
        if buf.len() < len + tag_len {
            return Err(Error::BufferTooSmall);
        }
        let slot = self.streams.find(h.ssrc);
        if slot.is_none() && self.streams.is_full() {
            return Err(Error::TooManyStreams);
        }
        let stream = slot.and_then(|i| self.streams.get(i));
        let index = estimate_index(stream, h.seq)?;
        if let (Some(i), Some(s)) = (slot, stream) {
            if s.rtp_seen {
                // Never reuse a keystream: an index protected before is refused.
                replay::check(
                    self.streams.rtp_bits(i),
                    self.streams.window(),
                    s.rtp_highest(),
                    index,
                )?;
            }
        }
        let roc = (index >> 16) as u32;
        match &self.transform {
            Transform::Cm { rtp, .. } => {
                rtp.crypt(h.ssrc, index, &mut buf[h.len..len]);
                let tag = rtp.mac(&buf[..len], &roc.to_be_bytes());
                buf[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
            }
            Transform::Gcm { rtp, .. } => {
                let (hdr, rest) = buf.split_at_mut(h.len);
                let body = len - h.len;
                let tag = rtp.seal(rtp.rtp_iv(h.ssrc, roc, h.seq), hdr, &mut rest[..body])?;
                rest[body..body + gcm::TAG_LEN].copy_from_slice(&tag);
            }
        }
        self.accept_rtp(slot, h.ssrc, index)?;
        Ok(len + tag_len)
    }

    /// Verifies (constant time) and decrypts the SRTP packet `buf` in place. Returns the length
    /// of the RTP packet now in `buf[..n]`. On any error the context state is unchanged (except
    /// [`Error::BadPadding`], reported after an authentic packet was accepted).
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let tag_len = self.profile.rtp_tag_len();
        let len = buf.len().checked_sub(tag_len).ok_or(Error::TooShort)?;
        let h = header::parse_rtp(&buf[..len])?;
        let slot = self.streams.find(h.ssrc);
        if slot.is_none() && self.streams.is_full() {
            return Err(Error::TooManyStreams);
        }
        let stream = slot.and_then(|i| self.streams.get(i));
        let index = estimate_index(stream, h.seq)?;
        if let (Some(i), Some(s)) = (slot, stream) {
            if s.rtp_seen {
                replay::check(
                    self.streams.rtp_bits(i),
                    self.streams.window(),
                    s.rtp_highest(),
                    index,
                )?;
            }
        }
        let roc = (index >> 16) as u32;
        match &self.transform {
            Transform::Cm { rtp, .. } => {
                let (data, tag) = buf.split_at_mut(len);
                rtp.verify(data, &roc.to_be_bytes(), tag)?;
                rtp.crypt(h.ssrc, index, &mut data[h.len..]);
            }
            Transform::Gcm { rtp, .. } => {
                let (hdr, rest) = buf.split_at_mut(h.len);
                rtp.open(rtp.rtp_iv(h.ssrc, roc, h.seq), hdr, rest)?;
            }
        }
        self.accept_rtp(slot, h.ssrc, index)?;
        header::check_padding(h.padding, &buf[h.len..len])?;
        Ok(len)
    }

    /// Records an authenticated (or protected) packet. `known` is the stream's slot when the
    /// caller already looked it up (the common case: no second search of the table).
    fn accept_rtp(&mut self, known: Option<usize>, ssrc: u32, index: u64) -> Result<(), Error> {
        let window = self.streams.window();
        let slot = match known {
            Some(i) => {
                self.streams.note_used(i);
                i
            }
            None => self.streams.find_or_insert(ssrc)?,
        };
        let (s, bits) = self.streams.rtp_mut(slot).ok_or(Error::TooManyStreams)?;
        if s.rtp_seen {
            let hi = replay::accept(bits, window, s.rtp_highest(), index);
            s.roc = (hi >> 16) as u32;
            s.seq = hi as u16;
        } else {
            replay::reset(bits);
            s.rtp_seen = true;
            s.roc = (index >> 16) as u32;
            s.seq = index as u16;
        }
        Ok(())
    }

    /// Protects the RTCP packet in `buf[..len]` in place (always encrypted, E = 1), appending the
    /// `E || SRTCP index` word and the tag; `buf` needs [`rtcp_overhead`](Self::rtcp_overhead)
    /// bytes of room after `len`. Returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let tag_len = self.profile.rtcp_tag_len();
        let pkt = buf.get(..len).ok_or(Error::TooShort)?;
        let ssrc = header::parse_rtcp(pkt)?;
        let total = len + SRTCP_INDEX_LEN + tag_len;
        if buf.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let slot = self.streams.find_or_insert(ssrc)?;
        let (s, _) = self.streams.rtcp_mut(slot).ok_or(Error::TooManyStreams)?;
        if s.rtcp_sent >= MAX_SRTCP_INDEX {
            return Err(Error::KeyExhausted);
        }
        let index = s.rtcp_sent + 1;
        self.seal_rtcp(buf, len, ssrc, index)?;
        if let Some((s, _)) = self.streams.rtcp_mut(slot) {
            s.rtcp_sent = index;
        }
        Ok(total)
    }

    fn seal_rtcp(&self, buf: &mut [u8], len: usize, ssrc: u32, index: u32) -> Result<(), Error> {
        let word = (E_FLAG | index).to_be_bytes();
        match &self.transform {
            Transform::Cm { rtcp, .. } => {
                rtcp.crypt(ssrc, u64::from(index), &mut buf[RTCP_CLEAR_LEN..len]);
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word);
                let end = len + SRTCP_INDEX_LEN;
                let tag = rtcp.mac(&buf[..end], &[]);
                let tag_len = self.profile.rtcp_tag_len();
                buf[end..end + tag_len].copy_from_slice(&tag[..tag_len]);
            }
            Transform::Gcm { rtcp, .. } => {
                let mut aad = [0u8; RTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_CLEAR_LEN].copy_from_slice(&buf[..RTCP_CLEAR_LEN]);
                aad[RTCP_CLEAR_LEN..].copy_from_slice(&word);
                let tag = rtcp.seal(
                    rtcp.rtcp_iv(ssrc, index),
                    &aad,
                    &mut buf[RTCP_CLEAR_LEN..len],
                )?;
                buf[len..len + gcm::TAG_LEN].copy_from_slice(&tag);
                let end = len + gcm::TAG_LEN;
                buf[end..end + SRTCP_INDEX_LEN].copy_from_slice(&word);
            }
        }
        Ok(())
    }

    /// Verifies (constant time) and decrypts the SRTCP packet `buf` in place. Returns the length
    /// of the RTCP packet now in `buf[..n]`. Unencrypted SRTCP (E = 0) is refused.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let tag_len = self.profile.rtcp_tag_len();
        let len = buf
            .len()
            .checked_sub(SRTCP_INDEX_LEN + tag_len)
            .filter(|&l| l >= RTCP_CLEAR_LEN)
            .ok_or(Error::TooShort)?;
        let ssrc = header::parse_rtcp(buf)?;
        let word_at = if self.profile.is_aead() {
            len + tag_len
        } else {
            len
        };
        let word = u32::from_be_bytes(
            buf[word_at..word_at + SRTCP_INDEX_LEN]
                .try_into()
                .map_err(|_| Error::TooShort)?,
        );
        if word & E_FLAG == 0 {
            return Err(Error::Unencrypted);
        }
        let index = word & MAX_SRTCP_INDEX;
        let slot = self.streams.find(ssrc);
        if slot.is_none() && self.streams.is_full() {
            return Err(Error::TooManyStreams);
        }
        if let Some(i) = slot {
            if let Some(s) = self.streams.get(i).filter(|s| s.rtcp_seen) {
                replay::check(
                    self.streams.rtcp_bits(i),
                    self.streams.window(),
                    u64::from(s.rtcp_highest),
                    u64::from(index),
                )?;
            }
        }
        match &self.transform {
            Transform::Cm { rtcp, .. } => {
                let (data, tag) = buf.split_at_mut(len + SRTCP_INDEX_LEN);
                rtcp.verify(data, &[], tag)?;
                rtcp.crypt(ssrc, u64::from(index), &mut data[RTCP_CLEAR_LEN..len]);
            }
            Transform::Gcm { rtcp, .. } => {
                let mut aad = [0u8; RTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_CLEAR_LEN].copy_from_slice(&buf[..RTCP_CLEAR_LEN]);
                aad[RTCP_CLEAR_LEN..].copy_from_slice(&word.to_be_bytes());
                rtcp.open(
                    rtcp.rtcp_iv(ssrc, index),
                    &aad,
                    &mut buf[RTCP_CLEAR_LEN..len + tag_len],
                )?;
            }
        }
        let window = self.streams.window();
        let slot = self.streams.find_or_insert(ssrc)?;
        let (s, bits) = self.streams.rtcp_mut(slot).ok_or(Error::TooManyStreams)?;
        if s.rtcp_seen {
            s.rtcp_highest =
                replay::accept(bits, window, u64::from(s.rtcp_highest), u64::from(index)) as u32;
        } else {
            replay::reset(bits);
            s.rtcp_seen = true;
            s.rtcp_highest = index;
        }
        Ok(len)
    }

    /// Test hook: sets the last SRTCP index sent for `ssrc` (RFC vectors start mid-stream).
    #[cfg(test)]
    pub(crate) fn set_rtcp_sent(&mut self, ssrc: u32, index: u32) {
        let slot = self.streams.find_or_insert(ssrc).unwrap();
        self.streams.rtcp_mut(slot).unwrap().0.rtcp_sent = index;
    }

    /// Test hook: a context whose SRTP and SRTCP session keys are given directly.
    #[cfg(test)]
    pub(crate) fn with_gcm_session_keys(profile: Profile, key: &[u8], salt: [u8; 12]) -> Self {
        SrtpContext {
            profile,
            transform: Transform::Gcm {
                rtp: GcmSession::from_session_keys(key, salt).unwrap(),
                rtcp: GcmSession::from_session_keys(key, salt).unwrap(),
            },
            streams: StreamTable::new(128).unwrap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Media workers move contexts between threads when calls are placed.
    #[test]
    fn contexts_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SrtpContext>();
    }

    /// The key schedule happens at creation: two contexts from the same keys agree, contexts from
    /// keys differing in one bit of the master key or salt do not.
    #[test]
    fn every_master_key_and_salt_bit_matters() {
        let p = Profile::AesCm128HmacSha1_80;
        let key = [3u8; 16];
        let salt = [4u8; 14];
        let mut plain = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        plain.extend_from_slice(&[0u8; 16]);
        let protect = |k: &[u8], s: &[u8]| {
            let mut c = SrtpContext::new(p, k, s, ContextConfig::default()).unwrap();
            let mut buf = plain.clone();
            buf.resize(plain.len() + 10, 0);
            c.protect_rtp(&mut buf, plain.len()).unwrap();
            buf
        };
        let base = protect(&key, &salt);
        assert_eq!(base, protect(&key, &salt));
        for bit in 0..(16 + 14) * 8 {
            let (mut k, mut s) = (key, salt);
            if bit < 128 {
                k[bit / 8] ^= 1 << (bit % 8);
            } else {
                s[(bit - 128) / 8] ^= 1 << (bit % 8);
            }
            assert_ne!(base, protect(&k, &s), "bit {bit}");
        }
    }
}
