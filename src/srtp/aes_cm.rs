//! AES in counter mode (RFC 3711 section 4.1.1), for AES-128 and AES-256.
//!
//! Used twice: as the SRTP/SRTCP cipher of the AES-CM profiles and as the PRF of the key
//! derivation for every profile. The key schedule runs once, in [`AesCm::new`]; applying the
//! keystream copies the expanded key onto the stack and never allocates.

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128Enc, Aes256Enc};

use super::Error;

/// An expanded AES key used in counter mode with a 16-byte big-endian counter block.
// One context holds a few of these for its whole life; keeping them inline saves a pointer chase
// per packet, so the size difference between the variants is accepted.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum AesCm {
    /// AES with a 128-bit key.
    Aes128(Aes128Enc),
    /// AES with a 256-bit key.
    Aes256(Aes256Enc),
}

impl AesCm {
    /// Expands a 16- or 32-byte key.
    pub fn new(key: &[u8]) -> Result<Self, Error> {
        match key.len() {
            16 => Aes128Enc::new_from_slice(key).map(AesCm::Aes128),
            32 => Aes256Enc::new_from_slice(key).map(AesCm::Aes256),
            _ => return Err(Error::BadKeyLength),
        }
        .map_err(|_| Error::BadKeyLength)
    }

    /// XORs the keystream starting at counter block `iv` into `data`.
    pub fn apply(&self, iv: &[u8; 16], data: &mut [u8]) {
        match self {
            AesCm::Aes128(k) => ctr::Ctr128BE::from_core(ctr::CtrCore::inner_iv_init(k, iv.into()))
                .apply_keystream(data),
            AesCm::Aes256(k) => ctr::Ctr128BE::from_core(ctr::CtrCore::inner_iv_init(k, iv.into()))
                .apply_keystream(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keystream(key: &str, iv: &str, len: usize) -> Vec<u8> {
        let cm = AesCm::new(&hex::decode(key).unwrap()).unwrap();
        let iv: [u8; 16] = hex::decode(iv).unwrap().try_into().unwrap();
        let mut out = vec![0u8; len];
        cm.apply(&iv, &mut out);
        out
    }

    /// RFC 3711 appendix B.2: the AES-CM keystream for session key 2B7E..., salt F0F1...FD,
    /// SSRC 0, index 0 (so the IV is the salt shifted left by 16 bits).
    #[test]
    fn rfc3711_b2_keystream() {
        let ks = keystream(
            "2B7E151628AED2A6ABF7158809CF4F3C",
            "F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000",
            0x10000 * 16 / 64, // enough for blocks 0..=2 and well past one 16-bit carry check
        );
        assert_eq!(
            hex::encode_upper(&ks[..48]),
            "E03EAD0935C95E80E166B16DD92B4EB4\
             D23513162B02D0F72A43A2FE4A5F97AB\
             41E95B3BB0A2E8DD477901E4FCA894C0"
        );
        // Blocks FEFF, FF00 and FF01 of the same table.
        let ks = keystream(
            "2B7E151628AED2A6ABF7158809CF4F3C",
            "F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF",
            48,
        );
        assert_eq!(
            hex::encode_upper(&ks),
            "EC8CDF7398607CB0F2D21675EA9EA1E4\
             362B7C3C6773516318A077D7FC5073AE\
             6A2CC3787889374FBEB4C81B17BA6C44"
        );
    }

    /// RFC 6188 section 7.1: the AES-256-CM keystream (key 57F8..., salt F0F1...FD).
    #[test]
    fn rfc6188_7_1_keystream() {
        let ks = keystream(
            "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98",
            "f0f1f2f3f4f5f6f7f8f9fafbfcfd0000",
            32,
        );
        assert_eq!(
            hex::encode(ks),
            "92bdd28a93c3f52511c677d08b5515a49da71b2378a854f67050756ded165bac"
        );
    }

    #[test]
    fn rejects_other_key_lengths() {
        for n in [0usize, 15, 17, 24, 31, 33] {
            assert!(AesCm::new(&vec![0u8; n]).is_err());
        }
    }
}
