//! The SRTP protection profiles srtp-edge implements, and their parameters.
//!
//! One enum is shared by the SRTP engine, the SDES (`a=crypto`) parser and writer, and DTLS-SRTP
//! (`use_srtp`), so the three always agree on names, key lengths and tag lengths. The NULL cipher
//! and AES-F8 are deliberately absent: they cannot be named, so they cannot be negotiated.

use std::fmt;

/// An SRTP/SRTCP protection profile (RFC 3711, RFC 6188, RFC 7714).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Profile {
    /// AES-128 counter mode, HMAC-SHA1 80-bit tag (RFC 3711 / RFC 4568).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 32-bit RTP tag (RTCP keeps 80 bits).
    AesCm128HmacSha1_32,
    /// AES-256 counter mode, HMAC-SHA1 80-bit tag (RFC 6188).
    AesCm256HmacSha1_80,
    /// AES-256 counter mode, HMAC-SHA1 32-bit RTP tag (RFC 6188; RTCP keeps 80 bits).
    AesCm256HmacSha1_32,
    /// AES-128 GCM AEAD, 16-byte tag (RFC 7714).
    AeadAes128Gcm,
    /// AES-256 GCM AEAD, 16-byte tag (RFC 7714).
    AeadAes256Gcm,
}

impl Profile {
    /// Every profile, in srtp-edge's default order of preference (most preferred first).
    pub const ALL: [Profile; 6] = [
        Profile::AeadAes256Gcm,
        Profile::AeadAes128Gcm,
        Profile::AesCm256HmacSha1_80,
        Profile::AesCm128HmacSha1_80,
        Profile::AesCm256HmacSha1_32,
        Profile::AesCm128HmacSha1_32,
    ];

    /// Length in bytes of the master key.
    pub const fn master_key_len(self) -> usize {
        match self {
            Profile::AesCm128HmacSha1_80
            | Profile::AesCm128HmacSha1_32
            | Profile::AeadAes128Gcm => 16,
            Profile::AesCm256HmacSha1_80
            | Profile::AesCm256HmacSha1_32
            | Profile::AeadAes256Gcm => 32,
        }
    }

    /// Length in bytes of the master salt (14 for AES-CM, 12 for AEAD per RFC 7714).
    pub const fn master_salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// Length of key || salt, as carried base64-encoded in an SDES `inline:` parameter.
    pub const fn key_salt_len(self) -> usize {
        self.master_key_len() + self.master_salt_len()
    }

    /// Authentication tag length in bytes appended to SRTP packets.
    pub const fn rtp_tag_len(self) -> usize {
        match self {
            Profile::AesCm128HmacSha1_80 | Profile::AesCm256HmacSha1_80 => 10,
            Profile::AesCm128HmacSha1_32 | Profile::AesCm256HmacSha1_32 => 4,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 16,
        }
    }

    /// Authentication tag length in bytes appended to SRTCP packets (the _32 profiles use 80 bits
    /// for SRTCP, RFC 3711 section 5.2 / RFC 5764 section 4.1.2).
    pub const fn rtcp_tag_len(self) -> usize {
        match self {
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 16,
            _ => 10,
        }
    }

    /// True for the RFC 7714 AEAD profiles.
    pub const fn is_aead(self) -> bool {
        matches!(self, Profile::AeadAes128Gcm | Profile::AeadAes256Gcm)
    }

    /// The crypto-suite name used in SDP `a=crypto` lines (RFC 4568, RFC 6188, RFC 7714).
    pub const fn sdes_name(self) -> &'static str {
        match self {
            Profile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Profile::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Profile::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Profile::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            Profile::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Profile::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Looks a profile up by its SDES crypto-suite name (exact, case-sensitive as RFC 4568 says).
    /// Also accepts the `AES_CM_256_HMAC_SHA1_*` spelling some peers (older rtpengine) emit.
    pub fn from_sdes_name(name: &str) -> Option<Profile> {
        Some(match name {
            "AES_CM_128_HMAC_SHA1_80" => Profile::AesCm128HmacSha1_80,
            "AES_CM_128_HMAC_SHA1_32" => Profile::AesCm128HmacSha1_32,
            "AES_256_CM_HMAC_SHA1_80" | "AES_CM_256_HMAC_SHA1_80" => Profile::AesCm256HmacSha1_80,
            "AES_256_CM_HMAC_SHA1_32" | "AES_CM_256_HMAC_SHA1_32" => Profile::AesCm256HmacSha1_32,
            "AEAD_AES_128_GCM" => Profile::AeadAes128Gcm,
            "AEAD_AES_256_GCM" => Profile::AeadAes256Gcm,
            _ => return None,
        })
    }

    /// The DTLS-SRTP protection profile identifier (RFC 5764 section 4.1.2, RFC 7714 section 14.2),
    /// or `None` for the AES-256-CM profiles, which have no registered DTLS-SRTP identifier.
    pub const fn dtls_id(self) -> Option<u16> {
        match self {
            Profile::AesCm128HmacSha1_80 => Some(0x0001),
            Profile::AesCm128HmacSha1_32 => Some(0x0002),
            Profile::AeadAes128Gcm => Some(0x0007),
            Profile::AeadAes256Gcm => Some(0x0008),
            Profile::AesCm256HmacSha1_80 | Profile::AesCm256HmacSha1_32 => None,
        }
    }

    /// The DTLS-SRTP protection profile name (RFC 5764 section 4.1.2, RFC 7714 section 14.2),
    /// as `openssl -use_srtp` and operators spell it; `None` where [`dtls_id`](Self::dtls_id)
    /// is.
    pub const fn dtls_name(self) -> Option<&'static str> {
        match self {
            Profile::AesCm128HmacSha1_80 => Some("SRTP_AES128_CM_SHA1_80"),
            Profile::AesCm128HmacSha1_32 => Some("SRTP_AES128_CM_SHA1_32"),
            Profile::AeadAes128Gcm => Some("SRTP_AEAD_AES_128_GCM"),
            Profile::AeadAes256Gcm => Some("SRTP_AEAD_AES_256_GCM"),
            Profile::AesCm256HmacSha1_80 | Profile::AesCm256HmacSha1_32 => None,
        }
    }

    /// Looks a profile up by its DTLS-SRTP protection profile identifier.
    pub fn from_dtls_id(id: u16) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.dtls_id() == Some(id))
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(Profile::from_sdes_name(p.sdes_name()), Some(p));
            if let Some(id) = p.dtls_id() {
                assert_eq!(Profile::from_dtls_id(id), Some(p));
            }
        }
        assert_eq!(Profile::from_sdes_name("NULL_HMAC_SHA1_80"), None);
        assert_eq!(Profile::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
        assert_eq!(Profile::from_dtls_id(0x0005), None); // SRTP_NULL_HMAC_SHA1_80
    }

    #[test]
    fn lengths_match_the_rfcs() {
        assert_eq!(Profile::AesCm128HmacSha1_80.key_salt_len(), 30);
        assert_eq!(Profile::AesCm256HmacSha1_32.key_salt_len(), 46);
        assert_eq!(Profile::AeadAes128Gcm.key_salt_len(), 28);
        assert_eq!(Profile::AeadAes256Gcm.key_salt_len(), 44);
        assert_eq!(Profile::AesCm128HmacSha1_32.rtp_tag_len(), 4);
        assert_eq!(Profile::AesCm128HmacSha1_32.rtcp_tag_len(), 10);
    }
}
