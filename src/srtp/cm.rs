//! The AES-CM + HMAC-SHA1 transform of one direction (SRTP or SRTCP) of a context
//! (RFC 3711 sections 4.1.1 and 4.2; AES-256 per RFC 6188).
//!
//! Holds the expanded AES key, the session salt and an HMAC state that has already absorbed the
//! inner and outer pads, so a packet costs one copy of that state and no key setup.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::aes_cm::AesCm;
use super::kdf::{Kdf, Label};
use super::Error;

/// Length of the session authentication key for HMAC-SHA1 (RFC 3711 section 4.2.1).
const AUTH_KEY_LEN: usize = 20;

/// Session keys of one AES-CM/HMAC-SHA1 direction.
#[derive(Clone)]
pub struct CmSession {
    aes: AesCm,
    salt: [u8; 14],
    mac: Hmac<Sha1>,
}

impl CmSession {
    /// Derives the session key, salt and auth key for labels `(key, auth, salt)`.
    pub fn derive(kdf: &Kdf, key_len: usize, labels: [Label; 3]) -> Result<Self, Error> {
        let mut key = [0u8; 32];
        let key = key.get_mut(..key_len).ok_or(Error::BadKeyLength)?;
        kdf.derive(labels[0], key);
        let mut auth = [0u8; AUTH_KEY_LEN];
        kdf.derive(labels[1], &mut auth);
        let mut salt = [0u8; 14];
        kdf.derive(labels[2], &mut salt);
        let session = Self::from_session_keys(key, &auth, salt);
        key.fill(0);
        auth.fill(0);
        session
    }

    /// Builds the transform from session keys directly (used by the RFC vectors).
    pub fn from_session_keys(key: &[u8], auth: &[u8], salt: [u8; 14]) -> Result<Self, Error> {
        Ok(CmSession {
            aes: AesCm::new(key)?,
            salt,
            mac: <Hmac<Sha1> as Mac>::new_from_slice(auth).map_err(|_| Error::BadKeyLength)?,
        })
    }

    /// XORs the keystream for (`ssrc`, `index`) into `data`: IV = (salt << 16) ^ (SSRC << 64) ^
    /// (index << 16), where the index is the 48-bit SRTP index or the 31-bit SRTCP index.
    pub fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        self.aes.apply(&iv, data);
    }

    /// HMAC-SHA1 over `data || extra` (extra is the ROC for SRTP, empty for SRTCP), full 20 bytes.
    pub fn mac(&self, data: &[u8], extra: &[u8]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.update(extra);
        mac.finalize().into_bytes().into()
    }

    /// Compares a received tag with the computed one in constant time.
    pub fn verify(&self, data: &[u8], extra: &[u8], tag: &[u8]) -> Result<(), Error> {
        let full = self.mac(data, extra);
        let ok = full
            .get(..tag.len())
            .map(|t| t.ct_eq(tag).into())
            .unwrap_or(false);
        if ok && !tag.is_empty() {
            Ok(())
        } else {
            Err(Error::AuthFailed)
        }
    }
}
