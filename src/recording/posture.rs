//! The recording lines of the admin `/posture`: whether recordings are encrypted (always, when
//! recording is on), the KEK providers and every KEK version's id and age. Never key material.

use std::sync::{Arc, OnceLock};

use super::Recorder;

static RECORDER: OnceLock<Arc<Recorder>> = OnceLock::new();

/// Registers the running recorder (once, at start).
pub fn register(r: Arc<Recorder>) {
    let _ = RECORDER.set(r);
}

/// The lines, read live (KEK ages grow; rotations appear).
pub fn live() -> String {
    let Some(r) = RECORDER.get() else {
        return "recording disabled\n".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let c = r.config();
    let mut s = format!(
        "recording enabled\nrecording_encryption AES-256-GCM STREAM, one data key per recording, wrapped by a KEK\nrecording_key_provider {}\nrecording_retention_days {}\n",
        c.key_provider, c.retention_days
    );
    for (name, kind, keks) in r.keys().list() {
        s.push_str(&format!("kek_provider {name} {kind}\n"));
        for k in keks {
            s.push_str(&format!(
                "kek {name}:{}/v{} age_days {}\n",
                k.scope,
                k.version,
                now.saturating_sub(k.created_unix) / 86_400
            ));
        }
    }
    s
}
