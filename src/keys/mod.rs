//! Envelope encryption for data at rest: per-object data keys wrapped by key-encryption keys
//! (KEKs) that stay in an HSM (PKCS#11) or in a protected key file, with versions for rotation
//! and a hash-chained audit log of every use.
//!
//! This module knows nothing of calls, SIP or recordings. Its users (call recordings today, sealed
//! call state for failover next) each own a [`DataClass`]; every tenant of a class has its own
//! KEK, so keys are separate per data class and per tenant. The whole API is five operations on
//! [`Keys`]:
//!
//! - [`Keys::new_data_key`]: a fresh random 256-bit data key for one object (a recording, a call
//!   record) and that key wrapped by the current KEK version of `(class, tenant)`. The caller
//!   encrypts the object with the data key (AES-256-GCM), keeps only the [`WrappedKey`] next to
//!   the ciphertext, and drops the data key (it is zeroized).
//! - [`Keys::unwrap`]: the data key back from a [`WrappedKey`], for reading the object.
//! - [`Keys::rewrap`]: the same data key wrapped by the newest KEK version (rotation without
//!   touching the object's ciphertext).
//! - [`Keys::current`] / [`Keys::rotate`]: the KEK version new objects use, and a new one.
//! - [`Keys::audit`]: a line in the audit log for an operation the caller performs on a wrapped
//!   key itself (crypto-shredding: destroying the only copy of a wrapped key).
//!
//! Every wrap and unwrap appends an entry (time, actor, object id, KEK id and version, purpose)
//! to the [`audit`] log before the key is handed out; a failed audit write fails the operation.
//!
//! A wrapped key is bound to its object: the wrap is an AES-256-GCM encryption (inside the token
//! for [`pkcs11`], in memory for [`file`]) whose associated data names the class, the tenant,
//! the KEK version and the object id ([`wrap_aad`]), so a wrapped key copied next to another
//! object does not unwrap.
//!
//! Providers ([`provider::KekProvider`]): [`file`] keeps KEKs in one 0600 file (refused when its
//! group or others may read it); [`pkcs11`] keeps them as non-extractable AES-256 secret keys in a
//! token (SoftHSM2 in tests) and wraps with `C_Encrypt(CKM_AES_GCM)`, so KEK bytes never leave
//! the token. KEK objects are named `srtp-edge/<class>/<tenant>/v<N>`.

pub mod audit;
pub mod config;
pub mod file;
pub mod pkcs11;
pub mod provider;
#[allow(unsafe_code)]
pub mod sys;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use thiserror::Error;
use zeroize::Zeroizing;

pub use audit::{Actor, AuditEntry, AuditLog};
pub use provider::{KekInfo, KekProvider};

/// Length of data keys and KEKs (AES-256).
pub const KEY_LEN: usize = 32;
/// Length of the GCM nonce of a wrap.
pub const WRAP_NONCE_LEN: usize = 12;
/// Length of a wrapped data key: nonce, encrypted key, GCM tag.
pub const WRAPPED_LEN: usize = WRAP_NONCE_LEN + KEY_LEN + 16;
/// Longest tenant name (tenants appear in KEK labels and file names).
pub const MAX_TENANT: usize = 64;

/// What kind of data a key protects; each class has its own KEKs, so a key for call state can
/// never open a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataClass {
    /// Call recordings (audio).
    Recordings,
    /// Call state sealed for failover (SRTP keys, addresses).
    CallState,
}

impl DataClass {
    /// Every class.
    pub const ALL: [DataClass; 2] = [DataClass::Recordings, DataClass::CallState];

    /// The name used in KEK ids, labels and the audit log.
    pub const fn name(self) -> &'static str {
        match self {
            DataClass::Recordings => "recordings",
            DataClass::CallState => "call-state",
        }
    }

    /// Parses [`DataClass::name`].
    pub fn parse(s: &str) -> Option<DataClass> {
        DataClass::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl fmt::Display for DataClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// True if `t` is a valid tenant name: 1-64 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TENANT
        && !t.starts_with('.')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whose keys: a data class and a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The data class.
    pub class: DataClass,
    /// The tenant (see [`valid_tenant`]).
    pub tenant: String,
}

impl Scope {
    /// A scope; the tenant must be valid.
    pub fn new(class: DataClass, tenant: &str) -> Result<Scope, KeyError> {
        if !valid_tenant(tenant) {
            return Err(KeyError::BadTenant(tenant.chars().take(80).collect()));
        }
        Ok(Scope {
            class,
            tenant: tenant.to_string(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.class, self.tenant)
    }
}

/// One KEK version: `provider:class/tenant/vN`, the id written next to wrapped keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KekId {
    /// The configured provider's name (`[[keys.providers]] name`).
    pub provider: String,
    /// Class and tenant.
    pub scope: Scope,
    /// Version, from 1; rotation adds one.
    pub version: u32,
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/v{}", self.provider, self.scope, self.version)
    }
}

impl KekId {
    /// Parses `provider:class/tenant/vN`.
    pub fn parse(s: &str) -> Result<KekId, KeyError> {
        let bad = || KeyError::BadKekId(s.chars().take(120).collect());
        let (provider, rest) = s.split_once(':').ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let (Some(class), Some(tenant), Some(v), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let class = DataClass::parse(class).ok_or_else(bad)?;
        let version: u32 = v
            .strip_prefix('v')
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(bad)?;
        if provider.is_empty() || !valid_tenant(provider) {
            return Err(bad());
        }
        Ok(KekId {
            provider: provider.to_string(),
            scope: Scope::new(class, tenant).map_err(|_| bad())?,
            version,
        })
    }
}

/// A data key wrapped by a KEK version: what is stored next to the object.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The KEK version that wrapped it.
    pub kek: KekId,
    /// GCM nonce, encrypted key and tag ([`WRAPPED_LEN`] bytes).
    pub bytes: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kek", &self.kek.to_string())
            .finish_non_exhaustive()
    }
}

/// A data key in memory; zeroized when dropped, never printed.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; KEY_LEN]) -> DataKey {
        DataKey(Zeroizing::new(b))
    }

    /// The key bytes, for the caller's AEAD.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Why a key operation failed. Never carries key material.
#[derive(Debug, Error)]
pub enum KeyError {
    /// No provider of that name is configured.
    #[error("no key provider named {0:?}")]
    UnknownProvider(String),
    /// A tenant name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid tenant name {0:?}")]
    BadTenant(String),
    /// A KEK id that does not parse.
    #[error("invalid KEK id {0:?}")]
    BadKekId(String),
    /// The KEK version a wrapped key names does not exist (destroyed, or another key store).
    #[error("KEK {0} not found")]
    NoSuchKek(String),
    /// The wrapped key does not authenticate under its KEK (altered, or bound to another object).
    #[error(
        "wrapped key for {object} does not unwrap under {kek} (altered, or not this object's key)"
    )]
    UnwrapFailed {
        /// The KEK id.
        kek: String,
        /// The object id.
        object: String,
    },
    /// The key file is readable by group or others, or not owned by this user.
    #[error("key file {path}: {reason}")]
    UnsafeFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The PKCS#11 module or token failed.
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    /// The audit log could not be written: the operation is refused.
    #[error("audit log: {0}")]
    Audit(String),
    /// Any other IO or format problem.
    #[error("{0}")]
    Other(String),
}

/// The associated data of a wrap: binds a wrapped key to its KEK version and its object, so
/// that it cannot be moved to another object or relabelled to another version.
///
/// `"srtp-edge key-wrap v1" 0x00 class 0x00 tenant 0x00 version(u32 BE) object`
pub fn wrap_aad(kek: &KekId, object: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(64 + object.len());
    a.extend_from_slice(b"srtp-edge key-wrap v1\0");
    a.extend_from_slice(kek.scope.class.name().as_bytes());
    a.push(0);
    a.extend_from_slice(kek.scope.tenant.as_bytes());
    a.push(0);
    a.extend_from_slice(&kek.version.to_be_bytes());
    a.extend_from_slice(object.as_bytes());
    a
}

/// The key service: the configured KEK providers and the audit log, acting for one actor (the
/// daemon, or the user running the CLI).
pub struct Keys {
    providers: HashMap<String, Arc<dyn KekProvider>>,
    audit: AuditLog,
    actor: Actor,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.providers.keys().collect();
        names.sort();
        f.debug_struct("Keys")
            .field("providers", &names)
            .field("actor", &self.actor)
            .finish()
    }
}

impl Keys {
    /// A key service over named providers, logging to `audit` as `actor`.
    pub fn new(
        providers: HashMap<String, Arc<dyn KekProvider>>,
        audit: AuditLog,
        actor: Actor,
    ) -> Keys {
        Keys {
            providers,
            audit,
            actor,
        }
    }

    /// Opens the providers of a validated `[keys]` configuration.
    pub fn open(
        cfg: &config::KeysConfig,
        state_dir: &std::path::Path,
        actor: Actor,
    ) -> Result<Keys, KeyError> {
        let mut providers: HashMap<String, Arc<dyn KekProvider>> = HashMap::new();
        for p in &cfg.providers {
            let prov: Arc<dyn KekProvider> = match &p.kind {
                config::ProviderKind::File { .. } => {
                    let path = p.file_path_in(state_dir).unwrap_or_default();
                    Arc::new(file::FileProvider::open(&p.name, &path)?)
                }
                config::ProviderKind::Pkcs11 {
                    module,
                    token_label,
                    pin_file,
                } => Arc::new(pkcs11::Pkcs11Provider::open(
                    &p.name,
                    module,
                    token_label,
                    pin_file,
                )?),
            };
            providers.insert(p.name.clone(), prov);
        }
        let audit = AuditLog::open(&cfg.audit_log_in(state_dir)).map_err(KeyError::Audit)?;
        Ok(Keys::new(providers, audit, actor))
    }

    fn provider(&self, name: &str) -> Result<&Arc<dyn KekProvider>, KeyError> {
        self.providers
            .get(name)
            .ok_or_else(|| KeyError::UnknownProvider(name.to_string()))
    }

    /// The audit log.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Who this service acts for.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// A fresh random data key for `object`, wrapped by the current KEK of `scope` at
    /// `provider` (version 1 is created on first use). Logged as `wrap` with `purpose`.
    pub fn new_data_key(
        &self,
        provider: &str,
        scope: &Scope,
        object: &str,
        purpose: &str,
    ) -> Result<(DataKey, WrappedKey), KeyError> {
        let p = self.provider(provider)?;
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(raw.as_mut_slice())
            .map_err(|e| KeyError::Other(format!("no OS randomness: {e}")))?;
        let info = p.current(scope)?;
        let kek = KekId {
            provider: provider.to_string(),
            scope: scope.clone(),
            version: info.version,
        };
        let bytes = p.wrap(scope, info.version, &raw, &wrap_aad(&kek, object))?;
        self.log("wrap", &kek, object, purpose)?;
        Ok((DataKey(raw), WrappedKey { kek, bytes }))
    }

    /// The data key inside `wrapped`, for `object`. Logged as `unwrap` with `purpose` before
    /// the key is returned.
    pub fn unwrap(
        &self,
        wrapped: &WrappedKey,
        object: &str,
        purpose: &str,
    ) -> Result<DataKey, KeyError> {
        let p = self.provider(&wrapped.kek.provider)?;
        let aad = wrap_aad(&wrapped.kek, object);
        let raw = p.unwrap(
            &wrapped.kek.scope,
            wrapped.kek.version,
            &wrapped.bytes,
            &aad,
        )?;
        self.log("unwrap", &wrapped.kek, object, purpose)?;
        Ok(DataKey(raw))
    }

    /// Re-wraps `wrapped` with the newest KEK version of its scope; None if it already is.
    /// Logged as `unwrap` and `wrap`, purpose `rewrap`.
    pub fn rewrap(
        &self,
        wrapped: &WrappedKey,
        object: &str,
    ) -> Result<Option<WrappedKey>, KeyError> {
        let p = self.provider(&wrapped.kek.provider)?;
        let current = p.current(&wrapped.kek.scope)?;
        if current.version == wrapped.kek.version {
            return Ok(None);
        }
        let key = self.unwrap(wrapped, object, "rewrap")?;
        let kek = KekId {
            version: current.version,
            ..wrapped.kek.clone()
        };
        let bytes = p.wrap(
            &kek.scope,
            kek.version,
            key.bytes(),
            &wrap_aad(&kek, object),
        )?;
        self.log("wrap", &kek, object, "rewrap")?;
        Ok(Some(WrappedKey { kek, bytes }))
    }

    /// The KEK version new objects of `scope` get (created on first use).
    pub fn current(&self, provider: &str, scope: &Scope) -> Result<KekInfo, KeyError> {
        self.provider(provider)?.current(scope)
    }

    /// Creates the next KEK version of `scope`; new objects use it from now on, older objects
    /// still open with theirs. Logged as `rotate`.
    pub fn rotate(&self, provider: &str, scope: &Scope) -> Result<KekInfo, KeyError> {
        let info = self.provider(provider)?.rotate(scope)?;
        let kek = KekId {
            provider: provider.to_string(),
            scope: scope.clone(),
            version: info.version,
        };
        self.log("rotate", &kek, "", "rotation")?;
        Ok(info)
    }

    /// Every KEK version of every provider (for `/posture` and `keys list`): ids and ages,
    /// never key material.
    pub fn list(&self) -> Vec<(String, &'static str, Vec<KekInfo>)> {
        let mut names: Vec<&String> = self.providers.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let p = &self.providers[n];
                (n.clone(), p.kind(), p.list().unwrap_or_default())
            })
            .collect()
    }

    /// The kind (`file`, `pkcs11`) of each configured provider, by name.
    pub fn provider_kinds(&self) -> Vec<(String, &'static str)> {
        let mut v: Vec<(String, &'static str)> = self
            .providers
            .iter()
            .map(|(n, p)| (n.clone(), p.kind()))
            .collect();
        v.sort();
        v
    }

    /// Logs an operation the caller performed on a wrapped key (e.g. `shred`).
    pub fn audit(
        &self,
        op: &str,
        kek: &KekId,
        object: &str,
        purpose: &str,
    ) -> Result<(), KeyError> {
        self.log(op, kek, object, purpose)
    }

    fn log(&self, op: &str, kek: &KekId, object: &str, purpose: &str) -> Result<(), KeyError> {
        self.audit
            .append(&self.actor, op, kek, object, purpose)
            .map_err(KeyError::Audit)
    }
}

/// AES-256-GCM seal of a data key under a raw KEK (the file provider; tests).
pub(crate) fn gcm_wrap(
    kek: &[u8; KEY_LEN],
    key: &[u8; KEY_LEN],
    aad: &[u8],
) -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| KeyError::Other(format!("no OS randomness: {e}")))?;
    let k = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, kek).map_err(|_| KeyError::Other("bad KEK".into()))?,
    );
    let mut buf = key.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| KeyError::Other("wrap failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(out)
}

/// Opens [`gcm_wrap`]; None if it does not authenticate.
pub(crate) fn gcm_unwrap(
    kek: &[u8; KEY_LEN],
    wrapped: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    if wrapped.len() != WRAPPED_LEN {
        return None;
    }
    let (nonce, ct) = wrapped.split_at(WRAP_NONCE_LEN);
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).ok()?);
    let mut buf = Zeroizing::new(ct.to_vec());
    let n = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let plain = k.open_in_place(n, Aad::from(aad), &mut buf).ok()?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return None;
    }
    out.copy_from_slice(plain);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_ids_round_trip_and_refuse_junk() {
        let id = KekId::parse("hsm:recordings/acme-1/v12").unwrap();
        assert_eq!(id.provider, "hsm");
        assert_eq!(id.scope.class, DataClass::Recordings);
        assert_eq!(id.scope.tenant, "acme-1");
        assert_eq!(id.version, 12);
        assert_eq!(id.to_string(), "hsm:recordings/acme-1/v12");
        for bad in [
            "",
            "hsm",
            "hsm:recordings/acme",
            "hsm:recordings/acme/v0",
            "hsm:recordings/acme/12",
            "hsm:audio/acme/v1",
            "hsm:recordings/../v1",
            "hsm:recordings/a/b/v1",
            ":recordings/a/v1",
        ] {
            assert!(KekId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenants_are_safe_in_labels_and_paths() {
        assert!(valid_tenant("default"));
        assert!(valid_tenant("acme.eu_1-x"));
        for bad in ["", ".hidden", "a/b", "a b", "a\0", &"x".repeat(65)] {
            assert!(!valid_tenant(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_wrap_is_bound_to_its_object_and_version() {
        let kek = [7u8; 32];
        let key = [9u8; 32];
        let id = KekId::parse("f:recordings/t/v1").unwrap();
        let w = gcm_wrap(&kek, &key, &wrap_aad(&id, "rec-a")).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(*gcm_unwrap(&kek, &w, &wrap_aad(&id, "rec-a")).unwrap(), key);
        assert!(gcm_unwrap(&kek, &w, &wrap_aad(&id, "rec-b")).is_none());
        let v2 = KekId {
            version: 2,
            ..id.clone()
        };
        assert!(gcm_unwrap(&kek, &w, &wrap_aad(&v2, "rec-a")).is_none());
        let mut flipped = w.clone();
        flipped[20] ^= 1;
        assert!(gcm_unwrap(&kek, &flipped, &wrap_aad(&id, "rec-a")).is_none());
    }
}
