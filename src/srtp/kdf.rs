//! SRTP key derivation (RFC 3711 section 4.3 with key derivation rate 0; AES-256 PRF per RFC 6188;
//! 96-bit master salts per RFC 7714 section 11).
//!
//! Runs once per context at creation: the six session keys and salts are derived from the master
//! key and salt and then only the expanded forms are kept.

use super::aes_cm::AesCm;
use super::Error;

/// Key derivation labels (RFC 3711 section 4.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Label {
    /// SRTP encryption key.
    RtpKey = 0,
    /// SRTP authentication key.
    RtpAuth = 1,
    /// SRTP salt.
    RtpSalt = 2,
    /// SRTCP encryption key.
    RtcpKey = 3,
    /// SRTCP authentication key.
    RtcpAuth = 4,
    /// SRTCP salt.
    RtcpSalt = 5,
}

/// The AES-CM PRF keyed with a master key, remembering the master salt.
pub struct Kdf {
    prf: AesCm,
    salt: [u8; 14],
}

impl Kdf {
    /// Prepares derivation from a 16/32-byte master key and a 14-byte (AES-CM) or 12-byte (GCM)
    /// master salt; a 12-byte salt is right-padded with zeros to 112 bits, as libsrtp does.
    pub fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Self, Error> {
        if master_salt.len() != 14 && master_salt.len() != 12 {
            return Err(Error::BadKeyLength);
        }
        let mut salt = [0u8; 14];
        salt[..master_salt.len()].copy_from_slice(master_salt);
        Ok(Kdf {
            prf: AesCm::new(master_key)?,
            salt,
        })
    }

    /// Fills `out` with the key material for `label` (index DIV kdr = 0).
    pub fn derive(&self, label: Label, out: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        iv[7] ^= label as u8;
        out.fill(0);
        self.prf.apply(&iv, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derive(key: &str, salt: &str, label: Label, len: usize) -> String {
        let kdf = Kdf::new(&hex::decode(key).unwrap(), &hex::decode(salt).unwrap()).unwrap();
        let mut out = vec![0u8; len];
        kdf.derive(label, &mut out);
        hex::encode_upper(out)
    }

    /// RFC 3711 appendix B.3.
    #[test]
    fn rfc3711_b3() {
        let (k, s) = (
            "E1F97A0D3E018BE0D64FA32C06DE4139",
            "0EC675AD498AFEEBB6960B3AABE6",
        );
        assert_eq!(
            derive(k, s, Label::RtpKey, 16),
            "C61E7A93744F39EE10734AFE3FF7A087"
        );
        assert_eq!(
            derive(k, s, Label::RtpSalt, 14),
            "30CBBC08863D8C85D49DB34A9AE1"
        );
        assert_eq!(
            derive(k, s, Label::RtpAuth, 94),
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE\
             E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25\
             6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
        );
    }

    /// RFC 6188 section 7.2 (AES-256 PRF).
    #[test]
    fn rfc6188_7_2() {
        let k = "F0F04914B513F2763A1B1FA130F10E2998F6F6E43E4309D1E622A0E332B9F1B6";
        let s = "3B04803DE51EE7C96423AB5B78D2";
        assert_eq!(
            derive(k, s, Label::RtpKey, 32),
            "5BA1064E30EC51613CAD926C5A28EF731EC7FB397F70A960653CAF06554CD8C4"
        );
        assert_eq!(
            derive(k, s, Label::RtpSalt, 14),
            "FA31791685CA444A9E07C6C64E93"
        );
        assert_eq!(
            derive(k, s, Label::RtpAuth, 20),
            "FD9C32D39ED5FBB5A9DC96B30818454D1313DC05"
        );
    }

    #[test]
    fn rejects_bad_salt_lengths() {
        assert!(Kdf::new(&[0; 16], &[0; 13]).is_err());
        assert!(Kdf::new(&[0; 16], &[0; 16]).is_err());
        assert!(Kdf::new(&[0; 20], &[0; 14]).is_err());
    }
}
