//! The interface every KEK store implements (a PKCS#11 token, a protected key file): versioned
//! KEKs per [`Scope`], and wrap/unwrap of 256-bit data keys under one version. KEK bytes never
//! leave a provider through this interface.

use zeroize::Zeroizing;

use super::{KeyError, Scope, KEY_LEN};

/// One KEK version as the outside may see it: no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekInfo {
    /// Class and tenant.
    pub scope: Scope,
    /// Version, from 1.
    pub version: u32,
    /// When it was created (Unix seconds; a PKCS#11 token only keeps the day).
    pub created_unix: u64,
}

/// A store of KEKs. Implementations are thread-safe: the daemon's recording writer and key
/// thread share one.
pub trait KekProvider: Send + Sync {
    /// `file` or `pkcs11`.
    fn kind(&self) -> &'static str;

    /// The newest version of `scope`; creates version 1 when there is none yet.
    fn current(&self, scope: &Scope) -> Result<KekInfo, KeyError>;

    /// Creates the next version of `scope` and returns it.
    fn rotate(&self, scope: &Scope) -> Result<KekInfo, KeyError>;

    /// Every version of every scope this provider holds.
    fn list(&self) -> Result<Vec<KekInfo>, KeyError>;

    /// AES-256-GCM seal of `key` under version `version` of `scope` with associated data `aad`:
    /// returns nonce (12 bytes) || ciphertext (32) || tag (16).
    fn wrap(
        &self,
        scope: &Scope,
        version: u32,
        key: &[u8; KEY_LEN],
        aad: &[u8],
    ) -> Result<Vec<u8>, KeyError>;

    /// Opens what [`KekProvider::wrap`] made; fails when the version is missing or the wrapped
    /// bytes or `aad` differ.
    fn unwrap(
        &self,
        scope: &Scope,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError>;
}
