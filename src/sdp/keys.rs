//! Fresh SDES key material for one leg, from the operating system's random source.
//!
//! Every leg gets its own keys made here; a key parsed from one leg's SDP is never written into
//! the other leg's SDP (the types make that hard: [`KeyMaterial`] has no `Clone`).

use thiserror::Error;
use zeroize::Zeroizing;

use super::crypto::KeyMaterial;
use crate::srtp::Profile;

/// The OS random source failed; the call must be refused rather than keyed weakly.
#[derive(Debug, Error)]
#[error("no OS randomness for SRTP keys: {0}")]
pub struct KeyGenError(String);

/// Generates a fresh master key || master salt of the right length for `profile`.
pub fn generate_key(profile: Profile) -> Result<KeyMaterial, KeyGenError> {
    let mut bytes = Zeroizing::new(vec![0u8; profile.key_salt_len()]);
    getrandom::fill(&mut bytes).map_err(|e| KeyGenError(e.to_string()))?;
    Ok(KeyMaterial::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_suite_length_and_differ() {
        for p in Profile::ALL {
            let a = generate_key(p).unwrap();
            let b = generate_key(p).unwrap();
            assert_eq!(a.len(), p.key_salt_len());
            assert_ne!(a, b, "two fresh keys must differ");
            assert!(a.as_bytes().iter().any(|&x| x != 0));
        }
    }
}
