//! SRTP master keys and salts from a DTLS-SRTP handshake (RFC 5764 section 4.2), split into what
//! we encrypt with and what we decrypt with.
//!
//! The exporter output `EXTRACTOR-dtls_srtp` is laid out as client key, server key, client salt,
//! server salt. Which half is "local" depends on our DTLS role; getting that wrong silently breaks
//! every packet, so the split is done once, here, and tested against openssl.

use std::fmt;

use zeroize::Zeroizing;

use super::setup::Role;
use crate::srtp::Profile;

/// The RFC 5705 exporter label for DTLS-SRTP keys (RFC 5764 section 4.2).
pub const EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// Why exported keying material could not be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The material does not have the length the profile needs.
    #[error("keying material has {got} bytes, {expected} expected for {profile}")]
    WrongLength {
        /// The negotiated profile.
        profile: Profile,
        /// Bytes the profile needs.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
}

/// The SRTP master keys and salts for one leg after a DTLS-SRTP handshake. Wiped from memory when
/// dropped; `Debug` shows only the profile and role.
pub struct SrtpKeys {
    profile: Profile,
    role: Role,
    local_key: Zeroizing<Vec<u8>>,
    local_salt: Zeroizing<Vec<u8>>,
    remote_key: Zeroizing<Vec<u8>>,
    remote_salt: Zeroizing<Vec<u8>>,
}

impl SrtpKeys {
    /// Length of the exporter output for a profile: 2 × (master key + master salt).
    pub const fn exported_len(profile: Profile) -> usize {
        2 * profile.key_salt_len()
    }

    /// Splits `EXTRACTOR-dtls_srtp` output for `profile` according to our DTLS `role`: the DTLS
    /// client protects with the client write key and salt, the server with the server's.
    pub fn from_exported(profile: Profile, role: Role, material: &[u8]) -> Result<Self, KeyError> {
        let expected = Self::exported_len(profile);
        if material.len() != expected {
            return Err(KeyError::WrongLength {
                profile,
                expected,
                got: material.len(),
            });
        }
        let k = profile.master_key_len();
        let s = profile.master_salt_len();
        let (client_key, rest) = material.split_at(k);
        let (server_key, rest) = rest.split_at(k);
        let (client_salt, server_salt) = rest.split_at(s);
        let copy = |b: &[u8]| Zeroizing::new(b.to_vec());
        let (lk, ls, rk, rs) = match role {
            Role::Client => (client_key, client_salt, server_key, server_salt),
            Role::Server => (server_key, server_salt, client_key, client_salt),
        };
        Ok(SrtpKeys {
            profile,
            role,
            local_key: copy(lk),
            local_salt: copy(ls),
            remote_key: copy(rk),
            remote_salt: copy(rs),
        })
    }

    /// The negotiated protection profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Our DTLS role in the handshake that produced these keys.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Master key we protect outgoing SRTP/SRTCP with.
    pub fn local_key(&self) -> &[u8] {
        &self.local_key
    }

    /// Master salt we protect outgoing SRTP/SRTCP with.
    pub fn local_salt(&self) -> &[u8] {
        &self.local_salt
    }

    /// Master key the peer protects with (we unprotect incoming packets with it).
    pub fn remote_key(&self) -> &[u8] {
        &self.remote_key
    }

    /// Master salt the peer protects with.
    pub fn remote_salt(&self) -> &[u8] {
        &self.remote_salt
    }
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(profile: Profile) -> Vec<u8> {
        (0..SrtpKeys::exported_len(profile) as u8).collect()
    }

    #[test]
    fn splits_per_rfc5764_layout() {
        // AES_CM_128: key 16, salt 14 → [ck 0..16][sk 16..32][cs 32..46][ss 46..60]
        let p = Profile::AesCm128HmacSha1_80;
        let m = material(p);
        let c = SrtpKeys::from_exported(p, Role::Client, &m).unwrap();
        let s = SrtpKeys::from_exported(p, Role::Server, &m).unwrap();
        assert_eq!(c.local_key(), &m[0..16]);
        assert_eq!(c.remote_key(), &m[16..32]);
        assert_eq!(c.local_salt(), &m[32..46]);
        assert_eq!(c.remote_salt(), &m[46..60]);
        assert_eq!(s.local_key(), c.remote_key());
        assert_eq!(s.local_salt(), c.remote_salt());
        assert_eq!(s.remote_key(), c.local_key());
        assert_eq!(s.remote_salt(), c.local_salt());
    }

    #[test]
    fn lengths_follow_the_profile() {
        for p in Profile::ALL.into_iter().filter(|p| p.dtls_id().is_some()) {
            let m = material(p);
            let k = SrtpKeys::from_exported(p, Role::Server, &m).unwrap();
            assert_eq!(k.local_key().len(), p.master_key_len());
            assert_eq!(k.local_salt().len(), p.master_salt_len());
            assert_eq!(k.remote_key().len(), p.master_key_len());
            assert_eq!(k.remote_salt().len(), p.master_salt_len());
            assert_eq!(k.profile(), p);
        }
        assert_eq!(SrtpKeys::exported_len(Profile::AeadAes128Gcm), 56);
        assert_eq!(SrtpKeys::exported_len(Profile::AeadAes256Gcm), 88);
        assert_eq!(
            SrtpKeys::from_exported(Profile::AeadAes128Gcm, Role::Client, &[0; 55]).map(|_| ()),
            Err(KeyError::WrongLength {
                profile: Profile::AeadAes128Gcm,
                expected: 56,
                got: 55
            })
        );
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let p = Profile::AeadAes128Gcm;
        let m = vec![0xAB; SrtpKeys::exported_len(p)];
        let k = SrtpKeys::from_exported(p, Role::Client, &m).unwrap();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("171") && !dbg.to_lowercase().contains("ab, "));
        assert!(dbg.contains("AeadAes128Gcm"));
    }
}
