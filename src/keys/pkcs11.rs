//! The `pkcs11` KEK provider: KEKs are AES-256 secret keys generated inside a PKCS#11 token (an
//! HSM; SoftHSM2 in tests) with `CKA_EXTRACTABLE = false` and `CKA_SENSITIVE = true`, so their
//! bytes never leave it. Wrapping a data key is `C_Encrypt` with `CKM_AES_GCM` under the KEK
//! handle (12-byte random IV, 128-bit tag, the binding of [`super::wrap_aad`] as AAD); unwrapping
//! is `C_Decrypt`. The data key travels to the token and back, the KEK never does.
//!
//! Objects: label `srtp-edge/<class>/<tenant>/v<N>` (token object, private), `CKA_ID` =
//! `created=<unix seconds>`. The user PIN is read from `pin_file`, which must be 0600 like a key
//! file. One session per provider, behind a mutex (the daemon wraps once per recording).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::file::check_private;
use super::provider::{KekInfo, KekProvider};
use super::{DataClass, KeyError, Scope, KEY_LEN, WRAPPED_LEN, WRAP_NONCE_LEN};

/// Label prefix of our KEK objects.
const PREFIX: &str = "srtp-edge/";

/// One PKCS#11 context per module per process: `C_Initialize` may run once, and finalizing one
/// context would pull the library out from under another.
fn context(module: &Path) -> Result<Pkcs11, KeyError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let c = Pkcs11::new(module)
        .map_err(|e| KeyError::Pkcs11(format!("cannot load {}: {e}", module.display())))?;
    match c.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(e) if e.to_string().contains("ALREADY_INITIALIZED") => {}
        Err(e) => return Err(KeyError::Pkcs11(format!("C_Initialize: {e}"))),
    }
    map.insert(module.to_path_buf(), c.clone());
    Ok(c)
}

fn p11(what: &str) -> impl Fn(cryptoki::error::Error) -> KeyError + '_ {
    move |e| KeyError::Pkcs11(format!("{what}: {e}"))
}

/// KEKs in a PKCS#11 token.
pub struct Pkcs11Provider {
    name: String,
    token_label: String,
    session: Mutex<Session>,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("name", &self.name)
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

fn label(scope: &Scope, version: u32) -> String {
    format!("{PREFIX}{}/{}/v{version}", scope.class, scope.tenant)
}

fn parse_label(l: &str) -> Option<(Scope, u32)> {
    let rest = l.strip_prefix(PREFIX)?;
    let mut it = rest.split('/');
    let class = DataClass::parse(it.next()?)?;
    let tenant = it.next()?;
    let v = it.next()?.strip_prefix('v')?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((Scope::new(class, tenant).ok()?, v))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Pkcs11Provider {
    /// Loads `module`, finds the token labelled `token_label`, logs in as user with the PIN in
    /// `pin_file` (0600).
    pub fn open(
        name: &str,
        module: &Path,
        token_label: &str,
        pin_file: &Path,
    ) -> Result<Pkcs11Provider, KeyError> {
        check_private(pin_file)?;
        let pin =
            Zeroizing::new(std::fs::read_to_string(pin_file).map_err(|e| {
                KeyError::Other(format!("cannot read {}: {e}", pin_file.display()))
            })?);
        let ctx = context(module)?;
        let slots = ctx.get_slots_with_token().map_err(p11("C_GetSlotList"))?;
        let mut found = None;
        for s in slots {
            if let Ok(info) = ctx.get_token_info(s) {
                if info.label().trim_end() == token_label {
                    found = Some(s);
                    break;
                }
            }
        }
        let slot = found.ok_or_else(|| {
            KeyError::Pkcs11(format!(
                "no token labelled {token_label:?} in {}",
                module.display()
            ))
        })?;
        let session = ctx.open_rw_session(slot).map_err(p11("C_OpenSession"))?;
        match session.login(UserType::User, Some(&AuthPin::from(pin.trim().to_string()))) {
            Ok(()) => {}
            Err(e) if e.to_string().contains("USER_ALREADY_LOGGED_IN") => {}
            Err(e) => return Err(KeyError::Pkcs11(format!("C_Login: {e}"))),
        }
        Ok(Pkcs11Provider {
            name: name.to_string(),
            token_label: token_label.to_string(),
            session: Mutex::new(session),
        })
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, s: &Session, scope: &Scope, version: u32) -> Result<ObjectHandle, KeyError> {
        let l = label(scope, version);
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(l.clone().into_bytes()),
            ])
            .map_err(p11("C_FindObjects"))?;
        found
            .into_iter()
            .next()
            .ok_or_else(|| KeyError::NoSuchKek(format!("{}:{scope}/v{version}", self.name)))
    }

    fn all(&self, s: &Session) -> Result<Vec<(KekInfo, ObjectHandle)>, KeyError> {
        let handles = s
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .map_err(p11("C_FindObjects"))?;
        let mut out = Vec::new();
        for h in handles {
            let attrs = s
                .get_attributes(h, &[AttributeType::Label, AttributeType::Id])
                .map_err(p11("C_GetAttributeValue"))?;
            let mut lab = None;
            let mut created = 0;
            for a in attrs {
                match a {
                    Attribute::Label(l) => lab = Some(String::from_utf8_lossy(&l).into_owned()),
                    Attribute::Id(id) => {
                        created = String::from_utf8_lossy(&id)
                            .strip_prefix("created=")
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0)
                    }
                    _ => {}
                }
            }
            if let Some((scope, version)) = lab.as_deref().and_then(parse_label) {
                out.push((
                    KekInfo {
                        scope,
                        version,
                        created_unix: created,
                    },
                    h,
                ));
            }
        }
        Ok(out)
    }

    fn newest(&self, s: &Session, scope: &Scope) -> Result<Option<KekInfo>, KeyError> {
        Ok(self
            .all(s)?
            .into_iter()
            .map(|(i, _)| i)
            .filter(|i| &i.scope == scope)
            .max_by_key(|i| i.version))
    }

    fn generate(&self, s: &Session, scope: &Scope, version: u32) -> Result<KekInfo, KeyError> {
        let created = now_unix();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen((KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(label(scope, version).into_bytes()),
            Attribute::Id(format!("created={created}").into_bytes()),
        ];
        s.generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(p11("C_GenerateKey"))?;
        tracing::info!(provider = %self.name, scope = %scope, version, "new KEK version generated in the token");
        Ok(KekInfo {
            scope: scope.clone(),
            version,
            created_unix: created,
        })
    }
}

impl KekProvider for Pkcs11Provider {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn current(&self, scope: &Scope) -> Result<KekInfo, KeyError> {
        let s = self.session();
        match self.newest(&s, scope)? {
            Some(i) => Ok(i),
            None => self.generate(&s, scope, 1),
        }
    }

    fn rotate(&self, scope: &Scope) -> Result<KekInfo, KeyError> {
        let s = self.session();
        let next = self.newest(&s, scope)?.map_or(1, |i| i.version + 1);
        self.generate(&s, scope, next)
    }

    fn list(&self) -> Result<Vec<KekInfo>, KeyError> {
        let s = self.session();
        let mut v: Vec<KekInfo> = self.all(&s)?.into_iter().map(|(i, _)| i).collect();
        v.sort_by(|a, b| (&a.scope, a.version).cmp(&(&b.scope, b.version)));
        Ok(v)
    }

    fn wrap(
        &self,
        scope: &Scope,
        version: u32,
        key: &[u8; KEY_LEN],
        aad: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let s = self.session();
        let h = self.find(&s, scope, version)?;
        let mut iv = [0u8; WRAP_NONCE_LEN];
        getrandom::fill(&mut iv).map_err(|e| KeyError::Other(format!("no OS randomness: {e}")))?;
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, aad, 128.into()).map_err(p11("GCM params"))?;
        let ct = s
            .encrypt(&Mechanism::AesGcm(params), h, key)
            .map_err(p11("C_Encrypt"))?;
        if ct.len() != KEY_LEN + 16 {
            return Err(KeyError::Pkcs11(format!(
                "C_Encrypt returned {} bytes for a 32-byte key",
                ct.len()
            )));
        }
        let mut out = iv.to_vec();
        out.extend_from_slice(&ct);
        debug_assert_eq!(out.len(), WRAPPED_LEN);
        Ok(out)
    }

    fn unwrap(
        &self,
        scope: &Scope,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
        let failed = || KeyError::UnwrapFailed {
            kek: format!("{}:{scope}/v{version}", self.name),
            object: String::new(),
        };
        if wrapped.len() != WRAPPED_LEN {
            return Err(failed());
        }
        let s = self.session();
        let h = self.find(&s, scope, version)?;
        let mut iv = [0u8; WRAP_NONCE_LEN];
        iv.copy_from_slice(&wrapped[..WRAP_NONCE_LEN]);
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(p11("GCM params"))?;
        let plain = Zeroizing::new(
            s.decrypt(&Mechanism::AesGcm(params), h, &wrapped[WRAP_NONCE_LEN..])
                .map_err(|_| failed())?,
        );
        if plain.len() != KEY_LEN {
            return Err(failed());
        }
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(&plain);
        Ok(out)
    }
}

/// Tries to read the value of every KEK object of the token: for tests and `keys list`, to show
/// that the token refuses (`CKR_ATTRIBUTE_SENSITIVE`). Returns how many values were readable.
pub fn readable_kek_values(p: &Pkcs11Provider) -> Result<usize, KeyError> {
    let s = p.session();
    let mut n = 0;
    for (_, h) in p.all(&s)? {
        if let Ok(attrs) = s.get_attributes(h, &[AttributeType::Value]) {
            n += attrs
                .iter()
                .filter(|a| matches!(a, Attribute::Value(v) if !v.is_empty()))
                .count();
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let s = Scope::new(DataClass::CallState, "acme").unwrap();
        assert_eq!(label(&s, 3), "srtp-edge/call-state/acme/v3");
        assert_eq!(parse_label(&label(&s, 3)), Some((s, 3)));
        assert_eq!(parse_label("other/recordings/a/v1"), None);
        assert_eq!(parse_label("srtp-edge/recordings/a/v1/x"), None);
    }
}
