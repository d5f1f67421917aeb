//! The AEAD AES-GCM transform of one direction (SRTP or SRTCP) of a context (RFC 7714).
//!
//! Backed by aws-lc-rs (AES-NI + CLMUL): the key schedule and GHASH tables are computed once,
//! sealing and opening work in place over the caller's buffer.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use super::kdf::{Kdf, Label};
use super::Error;

/// Length of the GCM authentication tag (RFC 7714 section 7.1: 16 octets).
pub const TAG_LEN: usize = 16;

/// Session key and salt of one AES-GCM direction.
pub struct GcmSession {
    key: LessSafeKey,
    /// The 96-bit salt as a big-endian integer, so an IV is one XOR.
    salt: u128,
}

impl GcmSession {
    /// Derives the session key and 96-bit salt for labels `(key, salt)`.
    pub fn derive(kdf: &Kdf, key_len: usize, labels: [Label; 2]) -> Result<Self, Error> {
        let mut key = [0u8; 32];
        let key = key.get_mut(..key_len).ok_or(Error::BadKeyLength)?;
        kdf.derive(labels[0], key);
        let mut salt = [0u8; 12];
        kdf.derive(labels[1], &mut salt);
        let session = Self::from_session_keys(key, salt);
        key.fill(0);
        session
    }

    /// Builds the transform from a session key and salt directly (used by the RFC vectors).
    pub fn from_session_keys(key: &[u8], salt: [u8; 12]) -> Result<Self, Error> {
        let alg = match key.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            _ => return Err(Error::BadKeyLength),
        };
        let key = UnboundKey::new(alg, key).map_err(|_| Error::BadKeyLength)?;
        let mut wide = [0u8; 16];
        wide[4..].copy_from_slice(&salt);
        Ok(GcmSession {
            key: LessSafeKey::new(key),
            salt: u128::from_be_bytes(wide),
        })
    }

    /// The SRTP IV (RFC 7714 section 8.1): salt ^ (00 00 || SSRC || ROC || SEQ).
    #[inline]
    pub fn rtp_iv(&self, ssrc: u32, roc: u32, seq: u16) -> [u8; 12] {
        self.salted((u128::from(ssrc) << 48) | (u128::from(roc) << 16) | u128::from(seq))
    }

    /// The SRTCP IV (RFC 7714 section 9.1): salt ^ (00 00 || SSRC || 00 00 || 0 || index).
    #[inline]
    pub fn rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; 12] {
        self.salted((u128::from(ssrc) << 48) | u128::from(index & 0x7fff_ffff))
    }

    #[inline]
    /// `salt ^ x` as the 12 IV bytes (x holds the IV fields as a 96-bit big-endian integer).
    fn salted(&self, x: u128) -> [u8; 12] {
        let wide = (self.salt ^ x).to_be_bytes();
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&wide[4..]);
        iv
    }

    /// Encrypts `data` in place and returns the tag.
    #[inline]
    pub fn seal(&self, iv: [u8; 12], aad: &[u8], data: &mut [u8]) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), data)
            .map_err(|_| Error::Crypto)?;
        tag.as_ref().try_into().map_err(|_| Error::Crypto)
    }

    /// Verifies and decrypts `data_and_tag` in place; the plaintext is the first
    /// `data_and_tag.len() - TAG_LEN` bytes.
    #[inline]
    pub fn open(&self, iv: [u8; 12], aad: &[u8], data_and_tag: &mut [u8]) -> Result<(), Error> {
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(aad),
                data_and_tag,
            )
            .map(|_| ())
            .map_err(|_| Error::AuthFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "517569642070726f2071756f"; // "Quid pro quo"

    fn session() -> GcmSession {
        let salt = hex::decode(SALT).unwrap().try_into().unwrap();
        GcmSession::from_session_keys(
            &hex::decode("000102030405060708090a0b0c0d0e0f").unwrap(),
            salt,
        )
        .unwrap()
    }

    /// RFC 7714 sections 16.1 and 17.1: the IVs built from SSRC/ROC/SEQ and SSRC/index.
    #[test]
    fn rfc7714_ivs() {
        let s = session();
        assert_eq!(
            hex::encode(s.rtp_iv(0x5501a0b2, 0, 0xf17b)),
            "51753c6580c2726f20718414"
        );
        assert_eq!(
            hex::encode(s.rtcp_iv(0x4d617273, 0x5d4)),
            "517524055203726f207170bb"
        );
    }
}
