//! Requests inside a relayed call's dialogs, from either side: what the B2BUA answers itself
//! (CANCEL, BYE, OPTIONS, a merged INVITE, methods it does not relay) and what it relays to the
//! other side (re-INVITE, UPDATE, INFO; see the `exchange` module). Everything here is written
//! once for both sides: the sender is `side`, the other party `side.other()`.

use std::time::Instant;

use crate::side::Side;
use crate::sip::message::Request;
use crate::sip::method::Method;

use super::call::{short, State};
use super::output::Outcome;
use super::timers::Timer;
use super::{B2bua, MediaPlane, Peer, ALLOW};

impl<M: MediaPlane> B2bua<M> {
    /// A request from `side` of call `key`, arrived over `peer`.
    pub(super) fn in_dialog(
        &mut self,
        now: Instant,
        side: Side,
        key: String,
        peer: Peer,
        req: Request,
    ) {
        let Some(c) = self.calls.get(&key) else {
            return;
        };
        let state = c.state;
        let our_tag = c.leg(side).our_tag.clone();
        match req.method {
            Method::Ack => self.on_dialog_ack(&key, side, &req),
            Method::Cancel if side == Side::A => {
                self.reply(peer, &req, 200, Some(&our_tag));
                if state == State::Calling {
                    self.cancel_call(now, &key, 487, Outcome::Cancelled);
                }
            }
            Method::Invite
                if side == Side::A
                    && req.headers.to().map(|t| t.tag().is_none()).unwrap_or(true) =>
            {
                // The same INVITE again (or a merged one): not a new call.
                self.reply(peer, &req, 482, Some(&our_tag));
            }
            Method::Bye => {
                self.reply(peer, &req, 200, Some(&our_tag));
                match state {
                    State::Confirmed => self.send_bye(&key, side.other()),
                    State::Calling if side == Side::B => self.a_response(&key, 480, None),
                    _ => {}
                }
                self.end_call(&key, Outcome::Answered);
            }
            Method::Invite | Method::Update | Method::Info if state == State::Confirmed => {
                self.relay_in_dialog(now, side, &key, peer, req, &our_tag);
            }
            Method::Invite | Method::Update | Method::Info => {
                self.reply(peer, &req, 491, Some(&our_tag));
            }
            Method::Options => {
                let mut r = req.reply(200, Some(our_tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                self.out.respond(peer, &r);
            }
            _ => self.reply(peer, &req, 501, Some(&our_tag)),
        }
    }

    /// Gives up a call still calling: `status` to the caller, CANCEL to the target, ports
    /// released; the call waits (Timer B again) for the target's final response to ACK it and
    /// is counted as `outcome` when it goes.
    pub(super) fn cancel_call(&mut self, now: Instant, key: &str, status: u16, outcome: Outcome) {
        self.a_response(key, status, None);
        self.cancel_upstream(key);
        self.media.delete(key);
        let at = now + self.settings.timer_b;
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        c.outcome = Some(outcome);
        if let Some(old) = c.timer.take() {
            self.timers.cancel(old);
        }
        c.timer = Some(self.timers.arm(at, Timer::Invite(key.to_string())));
        tracing::debug!(call = %short(key), outcome = outcome.label(), "INVITE cancelled upstream");
    }
}
