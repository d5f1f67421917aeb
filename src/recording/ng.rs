//! The ng side of recording: `start recording`, `stop recording`, `pause recording` (rtpengine's
//! command names; keys other than `call-id` are ignored, as rtpengine does: the whole call is
//! recorded) and the `record-call` key or flag on `offer`/`answer`.

use super::{RecordError, RecordRequest};
use crate::control::bencode::Value;
use crate::control::ng::{self, Command, Request};
use crate::media::calls::Calls;

fn reason(e: &RecordError) -> String {
    e.to_string()
}

/// Runs a recording command against the call table's recorder.
pub fn execute(calls: &Calls, req: &Request) -> Value {
    let Some(id) = req.call_id.as_deref() else {
        return ng::reply_error("No call-id in message");
    };
    let Some(r) = calls.recorder() else {
        return ng::reply_error(&reason(&RecordError::Disabled));
    };
    let result = match req.command {
        Command::StartRecording => r.request(calls, id, request(calls, r)).map(|_| ()),
        Command::PauseRecording => r.pause(id),
        Command::StopRecording if req.pause => r.pause(id),
        _ => r.stop(id),
    };
    match result {
        Ok(()) => ng::reply_ok(),
        Err(e) => ng::reply_error(&reason(&e)),
    }
}

fn request(_calls: &Calls, r: &super::Recorder) -> RecordRequest {
    RecordRequest {
        tenant: Some(r.config().tenant.clone()),
        meta: super::format::CallMeta {
            source: "ng".into(),
            ..Default::default()
        },
    }
}

/// `record-call` on an offer or answer that succeeded: starts (or stops) recording the call.
/// Returns a warning for the reply when recording was asked for and cannot happen.
pub fn record_call(calls: &Calls, req: &Request, call_id: &str) -> Option<String> {
    match req.record_call? {
        true => {
            let Some(r) = calls.recorder() else {
                return Some(reason(&RecordError::Disabled));
            };
            match r.request(calls, call_id, request(calls, r)) {
                Ok(_) => None,
                Err(e) => Some(reason(&e)),
            }
        }
        false => {
            if let Some(r) = calls.recorder() {
                let _ = r.stop(call_id);
            }
            None
        }
    }
}
