//! RFC 4568 SDES: the `a=crypto` attribute, its parser and writer.
//!
//! `a=crypto:<tag> <crypto-suite> <key-params>[;<key-params>...] [<session-param>...]` where a
//! key-params is `inline:<base64(key||salt)>[|<lifetime>][|<MKI>:<length>]`. The suite is looked
//! up with [`Profile::from_sdes_name`] (the NULL cipher and F8 cannot be named, so they cannot be
//! negotiated), and the decoded key||salt must have exactly the suite's length. Unknown session
//! parameters are kept as text; [`CryptoAttr::weakens_protection`] flags the ones that would
//! switch encryption or authentication off.
//!
//! Key bytes live in [`KeyMaterial`], which is wiped on drop, cannot be cloned by accident, and
//! prints as `<redacted>` in `Debug`: no log line can carry a key.

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use thiserror::Error;
use zeroize::Zeroizing;

use super::model::parse_decimal;
use crate::srtp::Profile;

/// Most key-params accepted on one line (RFC 4568 allows several, real peers send one).
const MAX_KEY_PARAMS: usize = 16;
/// Most session parameters accepted on one line.
const MAX_SESSION_PARAMS: usize = 16;
/// Longest base64 key text accepted before decoding (the longest suite needs 64 characters).
const MAX_KEY_TEXT: usize = 128;

/// Standard base64 that accepts key text with or without `=` padding (peers differ), and
/// writes it padded as RFC 4568 / RFC 4648 expect.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an `a=crypto` line was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The line does not have a tag, a suite and key parameters.
    #[error("a=crypto line is incomplete")]
    Incomplete,
    /// The tag is not 1 to 9 digits.
    #[error("a=crypto tag is not 1-9 digits")]
    BadTag,
    /// The suite is not one srtp-edge implements (name shown truncated).
    #[error("unsupported crypto suite {0}")]
    UnknownSuite(String),
    /// A key-params is not `inline:...`.
    #[error("key method is not inline")]
    NotInline,
    /// The key text is not base64.
    #[error("inline key is not base64")]
    BadBase64,
    /// The decoded key||salt has the wrong length for the suite.
    #[error("inline key is {got} bytes, the suite needs {want}")]
    BadKeyLength {
        /// Bytes decoded.
        got: usize,
        /// Bytes the suite needs.
        want: usize,
    },
    /// The lifetime is not `2^n` or a decimal number.
    #[error("bad key lifetime")]
    BadLifetime,
    /// The MKI is not `<value>:<length>` with a length of 1-128 that holds the value.
    #[error("bad MKI")]
    BadMki,
    /// Too many key or session parameters.
    #[error("too many parameters")]
    TooMany,
}

/// SRTP master key || master salt bytes. Wiped on drop; `Debug` never shows the bytes; no
/// `Clone`, so a key cannot be copied from one leg to another by accident.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    /// Wraps key||salt bytes (taken by value so the caller keeps no copy).
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> KeyMaterial {
        KeyMaterial(bytes)
    }

    /// The key||salt bytes, for building an SRTP context.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty (never for a parsed or generated key).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The base64 text for an `inline:` parameter (wiped when dropped).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_slice()))
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial(<redacted {} bytes>)", self.0.len())
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

/// Master key lifetime (RFC 4568 section 6.1): how many packets a key may protect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// `2^n` packets.
    PowerOfTwo(u8),
    /// A decimal number of packets.
    Packets(u64),
}

impl Lifetime {
    fn parse(s: &str) -> Result<Lifetime, CryptoError> {
        if let Some(exp) = s.strip_prefix("2^") {
            let n: u8 = parse_decimal(exp).ok_or(CryptoError::BadLifetime)?;
            if n == 0 || n > 64 {
                return Err(CryptoError::BadLifetime);
            }
            Ok(Lifetime::PowerOfTwo(n))
        } else {
            let n: u64 = parse_decimal(s).ok_or(CryptoError::BadLifetime)?;
            if n == 0 {
                return Err(CryptoError::BadLifetime);
            }
            Ok(Lifetime::Packets(n))
        }
    }

    /// The number of packets, saturated at `u64::MAX`.
    pub fn packets(self) -> u64 {
        match self {
            Lifetime::PowerOfTwo(n) => 1u64.checked_shl(u32::from(n)).unwrap_or(u64::MAX),
            Lifetime::Packets(n) => n,
        }
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lifetime::PowerOfTwo(n) => write!(f, "2^{n}"),
            Lifetime::Packets(n) => write!(f, "{n}"),
        }
    }
}

/// Master key identifier (RFC 4568 section 6.1): its value and its length in bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mki {
    /// The MKI value.
    pub value: u64,
    /// The MKI field length in bytes carried in each SRTP packet (1-128).
    pub len: u8,
}

impl Mki {
    fn parse(s: &str) -> Result<Mki, CryptoError> {
        let (v, l) = s.split_once(':').ok_or(CryptoError::BadMki)?;
        let value: u64 = parse_decimal(v).ok_or(CryptoError::BadMki)?;
        let len: u8 = parse_decimal(l).ok_or(CryptoError::BadMki)?;
        if len == 0 || len > 128 || (len < 8 && value >> (8 * u32::from(len)) != 0) {
            return Err(CryptoError::BadMki);
        }
        Ok(Mki { value, len })
    }
}

/// One `inline:` key parameter.
#[derive(Debug, PartialEq)]
pub struct KeyParam {
    /// The master key || master salt.
    pub key: KeyMaterial,
    /// Optional lifetime.
    pub lifetime: Option<Lifetime>,
    /// Optional MKI.
    pub mki: Option<Mki>,
}

impl KeyParam {
    /// A key parameter with just a key (what srtp-edge itself offers).
    pub fn new(key: KeyMaterial) -> KeyParam {
        KeyParam {
            key,
            lifetime: None,
            mki: None,
        }
    }

    fn parse(text: &str, profile: Profile) -> Result<KeyParam, CryptoError> {
        let info = text.strip_prefix("inline:").ok_or(CryptoError::NotInline)?;
        let mut parts = info.split('|');
        let b64 = parts.next().unwrap_or("");
        if b64.is_empty() || b64.len() > MAX_KEY_TEXT {
            return Err(CryptoError::BadBase64);
        }
        let bytes = Zeroizing::new(B64.decode(b64).map_err(|_| CryptoError::BadBase64)?);
        if bytes.len() != profile.key_salt_len() {
            return Err(CryptoError::BadKeyLength {
                got: bytes.len(),
                want: profile.key_salt_len(),
            });
        }
        let mut lifetime = None;
        let mut mki = None;
        for p in parts {
            if p.contains(':') {
                if mki.is_some() {
                    return Err(CryptoError::BadMki);
                }
                mki = Some(Mki::parse(p)?);
            } else {
                // The lifetime comes before the MKI (RFC 4568 grammar).
                if lifetime.is_some() || mki.is_some() {
                    return Err(CryptoError::BadLifetime);
                }
                lifetime = Some(Lifetime::parse(p)?);
            }
        }
        Ok(KeyParam {
            key: KeyMaterial::new(bytes),
            lifetime,
            mki,
        })
    }

    fn write(&self, out: &mut String) {
        out.push_str("inline:");
        out.push_str(&self.key.to_base64());
        if let Some(l) = self.lifetime {
            out.push_str(&format!("|{l}"));
        }
        if let Some(m) = self.mki {
            out.push_str(&format!("|{}:{}", m.value, m.len));
        }
    }
}

/// A parsed `a=crypto` attribute. `Debug` shows tag, suite and parameters but never keys.
#[derive(Debug, PartialEq)]
pub struct CryptoAttr {
    /// The tag (1-999999999) that the answer echoes to say which line it accepted.
    pub tag: u32,
    /// The suite.
    pub suite: Profile,
    /// One or more key parameters.
    pub keys: Vec<KeyParam>,
    /// Session parameters (`KDR=`, `UNENCRYPTED_SRTCP`, `WSH=`, unknown ones), verbatim.
    pub session_params: Vec<String>,
}

impl CryptoAttr {
    /// An attribute with one key and no session parameters (what srtp-edge writes).
    pub fn new(tag: u32, suite: Profile, key: KeyMaterial) -> CryptoAttr {
        CryptoAttr {
            tag,
            suite,
            keys: vec![KeyParam::new(key)],
            session_params: Vec::new(),
        }
    }

    /// Parses the value of an `a=crypto` attribute (after `a=crypto:`).
    pub fn parse(value: &str) -> Result<CryptoAttr, CryptoError> {
        let mut it = value.split(' ').filter(|s| !s.is_empty());
        let tag = it.next().ok_or(CryptoError::Incomplete)?;
        if tag.len() > 9 {
            return Err(CryptoError::BadTag);
        }
        let tag: u32 = parse_decimal(tag).ok_or(CryptoError::BadTag)?;
        let suite_name = it.next().ok_or(CryptoError::Incomplete)?;
        // RFC 4568 names are upper case; some stacks (old pjsip tests, hand-written SDP) send
        // them lower case, which names the same suite unambiguously.
        let upper = suite_name
            .chars()
            .take(64)
            .collect::<String>()
            .to_ascii_uppercase();
        let suite = Profile::from_sdes_name(&upper)
            .ok_or_else(|| CryptoError::UnknownSuite(suite_name.chars().take(64).collect()))?;
        let key_text = it.next().ok_or(CryptoError::Incomplete)?;
        let mut keys = Vec::new();
        for kp in key_text.split(';') {
            if keys.len() >= MAX_KEY_PARAMS {
                return Err(CryptoError::TooMany);
            }
            keys.push(KeyParam::parse(kp, suite)?);
        }
        let mut session_params = Vec::new();
        for p in it {
            if session_params.len() >= MAX_SESSION_PARAMS {
                return Err(CryptoError::TooMany);
            }
            session_params.push(p.to_string());
        }
        Ok(CryptoAttr {
            tag,
            suite,
            keys,
            session_params,
        })
    }

    /// The attribute value to put after `a=crypto:` in an SDP. Contains the key: it goes into
    /// the SDP body only, and is wiped when dropped.
    pub fn to_attr_value(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(96));
        out.push_str(&format!("{} {} ", self.tag, self.suite.sdes_name()));
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            k.write(&mut out);
        }
        for p in &self.session_params {
            out.push(' ');
            out.push_str(p);
        }
        out
    }

    /// True if a session parameter turns off encryption or authentication
    /// (`UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`, `UNAUTHENTICATED_SRTP`): such a line is
    /// never accepted, because it would put readable or forgeable media on the wire.
    pub fn weakens_protection(&self) -> bool {
        self.session_params.iter().any(|p| {
            matches!(
                p.as_str(),
                "UNENCRYPTED_SRTP" | "UNENCRYPTED_SRTCP" | "UNAUTHENTICATED_SRTP"
            )
        })
    }

    /// True if the relay's SRTP engine can use this line as is: one key, no MKI, no key
    /// derivation rate and no FEC key (parameters the engine does not implement), and nothing
    /// that weakens protection. Other lines are skipped when choosing a suite.
    pub fn usable_by_relay(&self) -> bool {
        self.keys.len() == 1
            && self.keys[0].mki.is_none()
            && !self.weakens_protection()
            && !self
                .session_params
                .iter()
                .any(|p| p.starts_with("KDR=") || p.starts_with("FEC_KEY="))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_text(len: usize) -> String {
        B64.encode((0..len as u8).collect::<Vec<u8>>())
    }

    #[test]
    fn rfc4568_example_parses() {
        // RFC 4568 section 5.1 (the example's lifetime and MKI).
        let v =
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";
        let c = CryptoAttr::parse(v).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite, Profile::AesCm128HmacSha1_80);
        assert_eq!(c.keys[0].key.len(), 30);
        assert_eq!(c.keys[0].lifetime, Some(Lifetime::PowerOfTwo(20)));
        assert_eq!(c.keys[0].mki, Some(Mki { value: 1, len: 4 }));
        assert!(!c.usable_by_relay());
        assert_eq!(c.to_attr_value().as_str(), v);
    }

    #[test]
    fn rfc4568_multiple_keys_and_session_params() {
        // RFC 4568 section 9.1 style: two keys with lifetimes and MKIs, plus session params.
        let v = "1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:32 KDR=1 FEC_ORDER=FEC_SRTP";
        let c = CryptoAttr::parse(v).unwrap();
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys[1].mki, Some(Mki { value: 2, len: 32 }));
        assert_eq!(c.session_params, ["KDR=1", "FEC_ORDER=FEC_SRTP"]);
        assert!(!c.usable_by_relay());
        assert_eq!(c.to_attr_value().as_str(), v);
    }

    #[test]
    fn every_suite_needs_its_exact_length() {
        for p in Profile::ALL {
            let want = p.key_salt_len();
            let ok = format!("7 {} inline:{}", p.sdes_name(), key_text(want));
            let c = CryptoAttr::parse(&ok).unwrap();
            assert_eq!(c.suite, p);
            assert!(c.usable_by_relay());
            for bad in [want - 1, want + 1, 1] {
                let v = format!("7 {} inline:{}", p.sdes_name(), key_text(bad));
                assert_eq!(
                    CryptoAttr::parse(&v),
                    Err(CryptoError::BadKeyLength { got: bad, want })
                );
            }
        }
    }

    #[test]
    fn unpadded_base64_is_accepted_and_written_padded() {
        let t = key_text(Profile::AeadAes128Gcm.key_salt_len());
        assert!(t.ends_with("=="));
        let v = format!("2 AEAD_AES_128_GCM inline:{}", t.trim_end_matches('='));
        let c = CryptoAttr::parse(&v).unwrap();
        assert_eq!(
            c.to_attr_value().as_str(),
            format!("2 AEAD_AES_128_GCM inline:{t}")
        );
    }

    #[test]
    fn alias_and_lifetimes() {
        let v = format!("3 AES_CM_256_HMAC_SHA1_80 inline:{}|1048576", key_text(46));
        let c = CryptoAttr::parse(&v).unwrap();
        assert_eq!(c.suite, Profile::AesCm256HmacSha1_80);
        assert_eq!(c.keys[0].lifetime, Some(Lifetime::Packets(1 << 20)));
        assert_eq!(c.keys[0].lifetime.unwrap().packets(), 1 << 20);
        assert_eq!(Lifetime::PowerOfTwo(64).packets(), u64::MAX);
        assert_eq!(Lifetime::PowerOfTwo(31).packets(), 1 << 31);
        let k = key_text(30);
        for bad in [
            "|2^",
            "|2^0",
            "|2^65",
            "|0",
            "|x",
            "|2^20|2^20",
            "|1:1|2^20",
        ] {
            let v = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}{bad}");
            assert!(CryptoAttr::parse(&v).is_err(), "{bad}");
        }
    }

    #[test]
    fn mki_bounds() {
        let k = key_text(30);
        let good = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|255:1");
        assert!(CryptoAttr::parse(&good).is_ok());
        for bad in ["|256:1", "|1:0", "|1:129", "|1:", "|:1", "|1:1|2:1", "|a:1"] {
            let v = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}{bad}");
            assert!(CryptoAttr::parse(&v).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_lines() {
        let k = key_text(30);
        let cases = [
            String::new(),
            "1".into(),
            "1 AES_CM_128_HMAC_SHA1_80".into(),
            format!("x AES_CM_128_HMAC_SHA1_80 inline:{k}"),
            format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{k}"),
            format!("1 NULL_HMAC_SHA1_80 inline:{k}"),
            format!("1 F8_128_HMAC_SHA1_80 inline:{k}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 uri:{k}"),
            "1 AES_CM_128_HMAC_SHA1_80 inline:".into(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".into(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", "A".repeat(200)),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k};"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}{}", " X".repeat(17)),
        ];
        for c in &cases {
            assert!(CryptoAttr::parse(c).is_err(), "{c}");
        }
    }

    #[test]
    fn weakening_params_are_flagged() {
        let k = key_text(30);
        for p in [
            "UNENCRYPTED_SRTP",
            "UNENCRYPTED_SRTCP",
            "UNAUTHENTICATED_SRTP",
        ] {
            let c =
                CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} {p}")).unwrap();
            assert!(c.weakens_protection());
            assert!(!c.usable_by_relay());
        }
        let c = CryptoAttr::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{k} WSH=64 X-FOO"
        ))
        .unwrap();
        assert!(!c.weakens_protection());
        assert!(c.usable_by_relay());
    }

    #[test]
    fn debug_never_shows_keys() {
        let k = key_text(30);
        let c = CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}")).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains(&k[..10]), "{d}");
        assert!(d.contains("redacted 30 bytes"));
    }
}
