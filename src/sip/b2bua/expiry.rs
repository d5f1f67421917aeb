//! How calls end: timers that expire (Timer B, the wait after a CANCEL, unanswered re-offers,
//! Timer F of relayed requests, the media audit), the media plane ending a call, an unreachable
//! route target, shutdown; and `end_call`, the one place a call is removed (ports released, its
//! timers and transactions dropped, its outcome counted once).

use std::time::Instant;

use crate::side::Side;
use crate::sip::header::Headers;
use crate::sip::message::Request;
use crate::sip::method::Method;

use super::call::{short, State};
use super::output::Outcome;
use super::timers::Timer;
use super::transactions::Tx;
use super::wire::via;
use super::{B2bua, MediaPlane, Peer};

impl<M: MediaPlane> B2bua<M> {
    /// Removes call `key`: ports released, timers and transactions dropped, counted as
    /// `outcome` (or the outcome decided earlier, e.g. a CANCEL waiting for its 487).
    pub(super) fn end_call(&mut self, key: &str, outcome: Outcome) {
        let Some(c) = self.calls.remove(key) else {
            return;
        };
        self.media.delete(key);
        self.by_a.remove(&c.legs[Side::A].call_id);
        if let Some(t) = c.timer {
            self.timers.cancel(t);
        }
        if let Some(p) = &c.offer_pending {
            self.timers.cancel(p.timer);
        }
        self.drop_txs(c.txs);
        let outcome = c.outcome.unwrap_or(outcome);
        self.out.ended(Some(key), outcome);
        tracing::info!(call = %short(key), outcome = outcome.label(), "call ended");
        self.stop_audit_if_idle();
    }

    /// With no call left the media audit has nothing to do: an idle B2BUA has no deadline.
    pub(super) fn stop_audit_if_idle(&mut self) {
        if self.is_empty() {
            if let Some(t) = self.audit.take() {
                self.timers.cancel(t);
            }
        }
    }

    /// CANCELs our INVITE on leg B (same branch, RFC 3261 9.1); the call waits for its final
    /// response.
    pub(super) fn cancel_upstream(&mut self, key: &str) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        c.state = State::Cancelling;
        let leg = &c.legs[Side::B];
        let Some(uri) = leg.ruri.clone() else { return };
        let mut h = Headers::new();
        h.push("Via", via(&self.settings, &c.b_branch));
        h.push("Max-Forwards", "70");
        h.push("From", leg.local.clone());
        h.push("To", leg.remote.clone());
        h.push("Call-ID", c.key.clone());
        h.push("CSeq", "1 CANCEL");
        let cancel = Request {
            method: Method::Cancel,
            uri,
            headers: h,
            body: Vec::new(),
        };
        self.out.request(Peer::Route(c.route), &cancel);
    }

    /// A timer fired.
    pub(super) fn on_timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::Invite(key) => self.invite_expired(now, &key),
            Timer::Offer(key) => self.offer_expired(&key),
            Timer::Relay(branch) => self.relay_expired(&branch),
            Timer::Agent(key) => self.agent_expired(&key),
            Timer::Audit => self.run_audit(now),
        }
    }

    /// Timer B: no final response to our INVITE (408 to the caller, CANCEL upstream, and the
    /// final response it brings is awaited to be ACKed); or no final response after our CANCEL
    /// (the call goes).
    fn invite_expired(&mut self, now: Instant, key: &str) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        c.timer = None;
        match c.state {
            State::Calling => self.cancel_call(now, key, 408, Outcome::Timeout),
            State::Cancelling => self.end_call(key, Outcome::Cancelled),
            State::Confirmed => {}
        }
    }

    /// A relayed offer the other leg never answered: 408 to the sender, the dialog goes on. A
    /// 2xx offer whose ACK never brought the answer: both legs are hung up.
    fn offer_expired(&mut self, key: &str) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        let Some(p) = c.offer_pending.take() else {
            return;
        };
        if c.ack_offer.take().is_some() {
            tracing::info!(call = %short(key), "no ACK with the answer: hanging up");
            self.hang_up_both(key, Outcome::Failed);
            return;
        }
        if let Some(tx) = self.finish_tx(&p.branch) {
            if let Tx::Relay(r) = tx.kind {
                tracing::info!(call = %short(key), method = %r.req.method, "relayed offer unanswered: 408");
                let resp = r.req.reply(408, None);
                self.out.respond(r.from, &resp);
            }
        }
    }

    /// Timer F of a relayed request that started no exchange (INFO, UPDATE without SDP): 408
    /// to the sender.
    fn relay_expired(&mut self, branch: &str) {
        if let Some(tx) = self.finish_tx(branch) {
            if let Tx::Relay(r) = tx.kind {
                tracing::info!(call = %short(&tx.call), method = %r.req.method, "relayed request unanswered: 408");
                let resp = r.req.reply(408, None);
                self.out.respond(r.from, &resp);
            }
        }
    }

    /// Established calls (and answered agent calls) the media plane no longer holds (media
    /// timeout) are hung up; the audit runs again while any is left.
    fn run_audit(&mut self, now: Instant) {
        self.audit = None;
        let confirmed = self.calls.values().any(|c| c.state == State::Confirmed);
        if !confirmed && !self.any_answered_agent() {
            return;
        }
        let live = self.media.live();
        let dead: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.state == State::Confirmed && !live.contains(&c.key))
            .map(|c| c.key.clone())
            .collect();
        for k in dead {
            tracing::info!(call = %short(&k), "media timed out: hanging up both legs");
            self.hang_up_both(&k, Outcome::MediaTimeout);
        }
        self.audit_agents(&live);
        if self.calls.values().any(|c| c.state == State::Confirmed) || self.any_answered_agent() {
            self.ensure_audit(now);
        }
    }

    /// The media plane ended call `key` (media timeout): hang up now.
    pub(super) fn media_ended(&mut self, key: &str) {
        if self
            .calls
            .get(key)
            .is_some_and(|c| c.state == State::Confirmed)
        {
            tracing::info!(call = %short(key), "media timed out: hanging up both legs");
            self.hang_up_both(key, Outcome::MediaTimeout);
        } else {
            self.agent_media_ended(key);
        }
    }

    /// The route target is unreachable: calls waiting on it get 503.
    pub(super) fn route_failed(&mut self, route: usize) {
        let keys: Vec<(String, State)> = self
            .calls
            .values()
            .filter(|c| c.route == route && c.state != State::Confirmed)
            .map(|c| (c.key.clone(), c.state))
            .collect();
        for (k, state) in keys {
            if state == State::Calling {
                self.a_response(&k, 503, None);
            }
            self.end_call(&k, Outcome::Failed);
        }
    }

    /// Ends every call (shutdown): BYE on both legs of established calls, 503 and CANCEL for
    /// those still calling, ports released.
    pub fn shutdown(&mut self) {
        self.agent_shutdown();
        let keys: Vec<(String, State)> = self
            .calls
            .values()
            .map(|c| (c.key.clone(), c.state))
            .collect();
        for (k, state) in keys {
            match state {
                State::Confirmed => {
                    self.send_bye(&k, Side::A);
                    self.send_bye(&k, Side::B);
                }
                State::Calling => {
                    self.a_response(&k, 503, None);
                    self.cancel_upstream(&k);
                }
                State::Cancelling => {}
            }
            self.end_call(&k, Outcome::Failed);
        }
        self.stop_audit_if_idle();
    }
}
