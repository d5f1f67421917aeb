//! A route with `record = true`: every call on it is recorded from its answer on
//! ([`crate::recording`]); the recording's tenant comes from the route (`record_tenant`), else
//! from the calling trunk (`[recording] trunk_tenants`), else `[recording] tenant`.

use super::wire::{safe_user, user_of};
use super::{B2bua, MediaPlane};
use crate::recording::format::CallMeta;
use crate::recording::RecordRequest;
use crate::sip::message::Request;

/// `***` and the last 4 characters: numbers in a recording's header are always masked.
pub(crate) fn mask(s: &str) -> String {
    let n = s.chars().count();
    let tail: String = s.chars().skip(n.saturating_sub(4)).collect();
    format!("***{tail}")
}

impl<M: MediaPlane> B2bua<M> {
    /// Asks the media plane to record call `key` when its route says so. A refusal (recording
    /// off, codec) is logged; the call goes on unrecorded.
    pub(super) fn start_route_recording(
        &self,
        key: &str,
        route: usize,
        trunk: &str,
        req: &Request,
    ) {
        let Some(r) = self.settings.routes.get(route).filter(|r| r.record) else {
            return;
        };
        let rec = RecordRequest {
            tenant: r.record_tenant.clone(),
            meta: CallMeta {
                source: "sip".into(),
                call_id_sha256: String::new(),
                from: req
                    .headers
                    .from()
                    .map(|f| mask(&safe_user(&user_of(&f.uri))))
                    .unwrap_or_default(),
                to: mask(&safe_user(&user_of(&req.uri))),
                trunk: trunk.to_string(),
                route: format!("route{route}"),
            },
        };
        if let Err(e) = self.media.record(key, rec) {
            tracing::warn!(call = %&key[..key.len().min(8)], error = %e, "route recording not started; the call goes on");
        }
    }
}
