//! Recording in the running daemon: opens the key service and starts the recorder when
//! `[recording] enabled`, and runs the periodic upkeep (forgetting ended calls, retention).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Recorder;
use crate::config::Config;
use crate::keys::{Actor, Keys};
use crate::media::calls::Calls;
use crate::media::engine::Engine;

/// How often the upkeep runs.
const UPKEEP: Duration = Duration::from_secs(60);

/// Starts recording when enabled: the key service (as the daemon), the recorder and writer,
/// and the upkeep task (pushed on `tasks`). None when recording is off.
pub fn start(
    cfg: &Arc<Config>,
    calls: &Arc<Calls>,
    engine: &Arc<Engine>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Arc<Recorder>>, String> {
    if !cfg.recording.enabled {
        return Ok(None);
    }
    let keys = Arc::new(
        Keys::open(&cfg.keys, &cfg.state_dir, Actor::Daemon).map_err(|e| format!("keys: {e}"))?,
    );
    // Fail at start, not at the first call: the provider must give a KEK for the default tenant.
    let scope = crate::keys::Scope::new(crate::keys::DataClass::Recordings, &cfg.recording.tenant)
        .map_err(|e| e.to_string())?;
    keys.current(&cfg.recording.key_provider, &scope)
        .map_err(|e| {
            format!(
                "recording.key_provider {:?}: {e}",
                cfg.recording.key_provider
            )
        })?;
    let r = Recorder::start(&cfg.recording, &cfg.state_dir, keys, engine.clone())?;
    calls.set_recorder(r.clone());
    super::posture::register(r.clone());
    tracing::info!(
        directory = %cfg.recording.directory_in(&cfg.state_dir).display(),
        provider = %cfg.recording.key_provider,
        retention_days = cfg.recording.retention_days,
        "call recording enabled (AES-256-GCM, keys wrapped by the KEK provider)"
    );
    let (calls, rec, cfg, mut stop) = (calls.clone(), r.clone(), cfg.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let live = calls.list(usize::MAX).into_iter().collect();
                    rec.prune(&live);
                    if cfg.recording.retention_days > 0 {
                        let (rec, cfg) = (rec.clone(), cfg.clone());
                        let _ = tokio::task::spawn_blocking(move || {
                            super::store::enforce_retention(
                                &cfg.recording.directory_in(&cfg.state_dir),
                                cfg.recording.retention_days,
                                rec.keys(),
                            )
                        })
                        .await;
                    }
                }
                _ = stop.changed() => break,
            }
        }
    }));
    Ok(Some(r))
}
