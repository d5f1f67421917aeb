//! The media plane as the B2BUA needs it: the call table's offer/answer/delete, agent calls and
//! route forks. A trait so the state machine runs without media sockets (fuzzing, simulations)
//! and so the daemon's [`Calls`](crate::media::calls::Calls) plugs in unchanged.

use std::collections::HashSet;

use crate::media::calls::{CallError, ForkMeta, Negotiation, OfferOptions};

/// What the B2BUA asks of the media plane; see the module docs.
pub trait MediaPlane {
    /// Anchors or re-offers with SDES towards the other party; returns the SDP for it.
    fn offer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.offer_with(n, &OfferOptions::default())
    }
    /// Anchors or re-offers, keying the other party as `opts` says (SDES, or DTLS-SRTP when
    /// `opts.dtls`); returns the SDP for it. The offerer's own keying (SDES or DTLS-SRTP) is
    /// read from its SDP.
    fn offer_with(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError>;
    /// Completes an offer; returns the SDP for the offerer.
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError>;
    /// Releases the call's ports (unknown calls are fine).
    fn delete(&self, call_id: &str);
    /// The calls the media plane still holds (it ends calls on its own after a media timeout).
    fn live(&self) -> HashSet<String>;
    /// Agent mode: answers the offer on behalf of the fork backend `agent` (the other party)
    /// and returns our answer SDP for the caller. Nothing is left anchored on error.
    fn offer_agent(
        &self,
        _n: &Negotiation<'_>,
        _agent: &str,
        _meta: ForkMeta,
    ) -> Result<String, CallError> {
        Err(CallError::UnknownForkBackend)
    }
    /// Agent mode: a new offer from the caller in an answered agent call (hold, resume,
    /// re-key, codec change); returns our new answer. On error the call's media is unchanged.
    fn reoffer_agent(&self, _n: &Negotiation<'_>) -> Result<String, CallError> {
        Err(CallError::NotForked)
    }
    /// Fork mode: copies both tracks of the call to `backend` (from the answer on).
    fn fork(&self, _call_id: &str, _backend: &str, _meta: ForkMeta) -> Result<(), CallError> {
        Err(CallError::UnknownForkBackend)
    }
    /// Records the call (a route with `record = true`), from the answer on.
    fn record(&self, _call_id: &str, _req: crate::recording::RecordRequest) -> Result<(), String> {
        Err("recording is not enabled".into())
    }
}

impl<T: MediaPlane> MediaPlane for std::sync::Arc<T> {
    fn offer_with(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError> {
        (**self).offer_with(n, opts)
    }
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        (**self).answer(n)
    }
    fn delete(&self, call_id: &str) {
        (**self).delete(call_id)
    }
    fn live(&self) -> HashSet<String> {
        (**self).live()
    }
    fn offer_agent(
        &self,
        n: &Negotiation<'_>,
        agent: &str,
        meta: ForkMeta,
    ) -> Result<String, CallError> {
        (**self).offer_agent(n, agent, meta)
    }
    fn reoffer_agent(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        (**self).reoffer_agent(n)
    }
    fn fork(&self, call_id: &str, backend: &str, meta: ForkMeta) -> Result<(), CallError> {
        (**self).fork(call_id, backend, meta)
    }
    fn record(&self, call_id: &str, req: crate::recording::RecordRequest) -> Result<(), String> {
        (**self).record(call_id, req)
    }
}

impl MediaPlane for crate::media::calls::Calls {
    fn offer_with(&self, n: &Negotiation<'_>, opts: &OfferOptions) -> Result<String, CallError> {
        crate::media::calls::Calls::offer_with(self, n, opts)
    }
    fn answer(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        crate::media::calls::Calls::answer(self, n)
    }
    fn delete(&self, call_id: &str) {
        let _ = crate::media::calls::Calls::delete(self, call_id);
    }
    fn live(&self) -> HashSet<String> {
        self.list(usize::MAX).into_iter().collect()
    }
    fn offer_agent(
        &self,
        n: &Negotiation<'_>,
        agent: &str,
        meta: ForkMeta,
    ) -> Result<String, CallError> {
        crate::media::calls::Calls::offer_agent(self, n, agent, meta)
    }
    fn reoffer_agent(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        crate::media::calls::Calls::reoffer_agent(self, n)
    }
    fn fork(&self, call_id: &str, backend: &str, meta: ForkMeta) -> Result<(), CallError> {
        self.start_fork_with(call_id, backend, crate::fork::ForkMode::Fork, meta)
            .map(|_| ())
    }
    fn record(&self, call_id: &str, req: crate::recording::RecordRequest) -> Result<(), String> {
        let r = self.recorder().ok_or("recording is not enabled")?;
        r.request(self, call_id, req)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
