//! The `[recording]` configuration. Off by default: no call is recorded unless this section says
//! `enabled = true` and a route (`record = true`), an ng `offer`/`answer` (`record-call`) or an
//! ng `start recording` asks for it.
//!
//! ```toml
//! [recording]
//! enabled = false
//! directory = ""            # default <state_dir>/recordings (created 0700)
//! retention_days = 0        # 0: kept until shredded by hand; N: shredded and removed after N days
//! key_provider = "file"     # a [[keys.providers]] name
//! tenant = "default"        # the tenant of calls no rule below names (ng calls too)
//! trunk_tenants = { carrier-a = "acme" }   # SIP calls from a trunk; a route's record_tenant wins
//! chunk_ms = 250            # audio sealed per chunk (a crash loses at most one chunk)
//! queue_frames = 16384      # frames waiting for the writer, all calls together (drops beyond)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ConfigError;

/// The `[recording]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    /// Recording may be asked for at all.
    pub enabled: bool,
    /// Where sealed recordings are written (None: `<state_dir>/recordings`).
    pub directory: Option<PathBuf>,
    /// Days a recording is kept before the daemon shreds and removes it (0: forever).
    pub retention_days: u32,
    /// The `[[keys.providers]]` name whose KEKs wrap recording keys.
    pub key_provider: String,
    /// Tenant of calls without a more specific rule.
    pub tenant: String,
    /// Tenant by trunk name (SIP calls).
    pub trunk_tenants: BTreeMap<String, String>,
    /// Milliseconds of audio per sealed chunk (50-2000).
    pub chunk_ms: u32,
    /// Capacity of the queue from the media workers to the writer, in frames (256-1048576).
    pub queue_frames: u32,
}

impl RecordingConfig {
    /// The recordings directory.
    pub fn directory_in(&self, state_dir: &Path) -> PathBuf {
        self.directory
            .clone()
            .unwrap_or_else(|| state_dir.join("recordings"))
    }

    /// The tenant of a SIP call from `trunk` on a route with `route_tenant`.
    pub fn tenant_for(&self, trunk: Option<&str>, route_tenant: Option<&str>) -> String {
        route_tenant
            .or_else(|| trunk.and_then(|t| self.trunk_tenants.get(t).map(String::as_str)))
            .unwrap_or(&self.tenant)
            .to_string()
    }
}

impl Default for RecordingConfig {
    /// Off; the documented defaults.
    fn default() -> RecordingConfig {
        RecordingConfig {
            enabled: false,
            directory: None,
            retention_days: 0,
            key_provider: "file".into(),
            tenant: "default".into(),
            trunk_tenants: BTreeMap::new(),
            chunk_ms: 250,
            queue_frames: 16384,
        }
    }
}

/// The file format of `[recording]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRecording {
    enabled: bool,
    directory: String,
    retention_days: Option<i64>,
    key_provider: String,
    tenant: String,
    trunk_tenants: BTreeMap<String, String>,
    chunk_ms: Option<i64>,
    queue_frames: Option<i64>,
}

fn err(errs: &mut Vec<ConfigError>, key: &str, reason: impl Into<String>) {
    errs.push(ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    });
}

fn range(
    errs: &mut Vec<ConfigError>,
    key: &str,
    v: Option<i64>,
    default: u32,
    lo: i64,
    hi: i64,
) -> u32 {
    match v {
        None => default,
        Some(n) if (lo..=hi).contains(&n) => n as u32,
        Some(n) => {
            err(errs, key, format!("{n} is outside {lo}-{hi}"));
            default
        }
    }
}

/// Validates `[recording]` (provider and trunk names are checked by the caller, which knows them).
pub(crate) fn validate(raw: RawRecording, errs: &mut Vec<ConfigError>) -> RecordingConfig {
    let mut c = RecordingConfig {
        enabled: raw.enabled,
        ..Default::default()
    };
    if !raw.directory.is_empty() {
        c.directory = Some(PathBuf::from(raw.directory));
    }
    c.retention_days = range(
        errs,
        "recording.retention_days",
        raw.retention_days,
        0,
        0,
        36500,
    );
    if !raw.key_provider.is_empty() {
        c.key_provider = raw.key_provider;
    }
    if !raw.tenant.is_empty() {
        if crate::keys::valid_tenant(&raw.tenant) {
            c.tenant = raw.tenant;
        } else {
            err(
                errs,
                "recording.tenant",
                "must be 1-64 of A-Z a-z 0-9 . _ -",
            );
        }
    }
    for (trunk, tenant) in raw.trunk_tenants {
        if !crate::keys::valid_tenant(&tenant) {
            err(
                errs,
                &format!("recording.trunk_tenants.{trunk}"),
                "must be 1-64 of A-Z a-z 0-9 . _ -",
            );
            continue;
        }
        c.trunk_tenants.insert(trunk, tenant);
    }
    c.chunk_ms = range(errs, "recording.chunk_ms", raw.chunk_ms, 250, 50, 2000);
    c.queue_frames = range(
        errs,
        "recording.queue_frames",
        raw.queue_frames,
        16384,
        256,
        1 << 20,
    );
    c
}

/// Checks between `[recording]`, `[keys]`, trunks and routes.
pub(crate) fn cross_check(cfg: &crate::config::Config) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let r = &cfg.recording;
    if cfg.keys.provider(&r.key_provider).is_none() {
        err(
            &mut errs,
            "recording.key_provider",
            format!("no [[keys.providers]] is named {:?}", r.key_provider),
        );
    }
    for trunk in r.trunk_tenants.keys() {
        if !cfg.trunks.iter().any(|t| &t.name == trunk) {
            err(
                &mut errs,
                &format!("recording.trunk_tenants.{trunk}"),
                format!("no trunk is named {trunk:?}"),
            );
        }
    }
    for (i, route) in cfg.routes.iter().enumerate() {
        if route.record && route.agent.is_some() {
            err(
                &mut errs,
                &format!("routes[{i}].record"),
                "agent routes cannot be recorded yet (record the call at the backend)",
            );
        }
        if route.record && !r.enabled {
            err(
                &mut errs,
                &format!("routes[{i}].record"),
                "needs [recording] enabled = true",
            );
        }
    }
    errs
}
