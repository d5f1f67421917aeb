//! The `[keys]` configuration: the audit log and the named KEK providers that data classes
//! (`[recording] key_provider`, later the failover's call state) refer to.
//!
//! ```toml
//! [keys]
//! audit_log = ""                      # default <state_dir>/keys/audit.log
//!
//! [[keys.providers]]
//! name = "hsm"
//! kind = "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_label = "srtp-edge"
//! pin_file = "/etc/srtp-edge/hsm-pin"   # mode 0600
//!
//! [[keys.providers]]
//! name = "local"
//! kind = "file"
//! path = ""                           # default <state_dir>/keys/kek, mode 0600
//! ```
//!
//! With no provider configured there is one, `file`, of kind `file` at the default path.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ConfigError;

/// A validated provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The name data classes refer to; also the first part of KEK ids.
    pub name: String,
    /// Where the KEKs are.
    pub kind: ProviderKind,
}

/// Where a provider keeps its KEKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// A 0600 key file.
    File {
        /// The file (None: `<state_dir>/keys/kek` for the provider named `file`,
        /// `<state_dir>/keys/kek-<name>` for others).
        path: Option<PathBuf>,
    },
    /// A PKCS#11 token.
    Pkcs11 {
        /// The module (`.so`).
        module: PathBuf,
        /// The token's label.
        token_label: String,
        /// File holding the user PIN (0600).
        pin_file: PathBuf,
    },
}

/// The `[keys]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    /// The hash-chained audit log (None: `<state_dir>/keys/audit.log`).
    pub audit_log: Option<PathBuf>,
    /// Providers, names unique.
    pub providers: Vec<ProviderConfig>,
}

impl KeysConfig {
    /// The provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The audit log's path.
    pub fn audit_log_in(&self, state_dir: &Path) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| state_dir.join("keys/audit.log"))
    }
}

impl ProviderConfig {
    /// A `file` provider's key file.
    pub fn file_path_in(&self, state_dir: &Path) -> Option<PathBuf> {
        match &self.kind {
            ProviderKind::File { path: Some(p) } => Some(p.clone()),
            ProviderKind::File { path: None } if self.name == "file" => {
                Some(state_dir.join("keys/kek"))
            }
            ProviderKind::File { path: None } => {
                Some(state_dir.join("keys").join(format!("kek-{}", self.name)))
            }
            ProviderKind::Pkcs11 { .. } => None,
        }
    }
}

impl Default for KeysConfig {
    /// One provider, `file`, at the default path.
    fn default() -> KeysConfig {
        KeysConfig {
            audit_log: None,
            providers: vec![ProviderConfig {
                name: "file".into(),
                kind: ProviderKind::File { path: None },
            }],
        }
    }
}

/// The file format of `[keys]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawKeys {
    audit_log: String,
    providers: Vec<RawProvider>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawProvider {
    name: String,
    kind: String,
    path: String,
    module: String,
    token_label: String,
    pin_file: String,
}

fn err(errs: &mut Vec<ConfigError>, key: String, reason: impl Into<String>) {
    errs.push(ConfigError {
        key,
        reason: reason.into(),
    });
}

/// Validates `[keys]`; every problem names its key.
pub(crate) fn validate(raw: RawKeys, errs: &mut Vec<ConfigError>) -> KeysConfig {
    let mut cfg = KeysConfig::default();
    if !raw.audit_log.is_empty() {
        cfg.audit_log = Some(PathBuf::from(&raw.audit_log));
    }
    if raw.providers.is_empty() {
        return cfg;
    }
    cfg.providers.clear();
    for (i, p) in raw.providers.into_iter().enumerate() {
        let k = |f: &str| format!("keys.providers[{i}].{f}");
        if !super::valid_tenant(&p.name) {
            err(errs, k("name"), "must be 1-64 of A-Z a-z 0-9 . _ -");
            continue;
        }
        if cfg.providers.iter().any(|q| q.name == p.name) {
            err(errs, k("name"), format!("{:?} is used twice", p.name));
            continue;
        }
        let kind = match p.kind.as_str() {
            "file" => {
                for (f, v) in [
                    ("module", &p.module),
                    ("token_label", &p.token_label),
                    ("pin_file", &p.pin_file),
                ] {
                    if !v.is_empty() {
                        err(errs, k(f), "only for kind = \"pkcs11\"");
                    }
                }
                ProviderKind::File {
                    path: (!p.path.is_empty()).then(|| PathBuf::from(&p.path)),
                }
            }
            "pkcs11" => {
                if !p.path.is_empty() {
                    err(errs, k("path"), "only for kind = \"file\"");
                }
                for (f, v) in [
                    ("module", &p.module),
                    ("token_label", &p.token_label),
                    ("pin_file", &p.pin_file),
                ] {
                    if v.is_empty() {
                        err(errs, k(f), "required for kind = \"pkcs11\"");
                    }
                }
                ProviderKind::Pkcs11 {
                    module: PathBuf::from(&p.module),
                    token_label: p.token_label.clone(),
                    pin_file: PathBuf::from(&p.pin_file),
                }
            }
            other => {
                err(
                    errs,
                    k("kind"),
                    format!("{other:?} is not a provider kind (use \"pkcs11\" or \"file\")"),
                );
                continue;
            }
        };
        cfg.providers.push(ProviderConfig { name: p.name, kind });
    }
    cfg
}
