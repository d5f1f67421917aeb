//! Offer/answer inside an established call: a re-INVITE, UPDATE or INFO from one side is
//! relayed to the other in our own dialog with it (an SDP offer rewritten by the media plane,
//! with the other party's keying); one exchange at a time per call (RFC 3261 14.1/14.2,
//! RFC 3311 5.2: 491 for glare, 500 with a random Retry-After for the sender's own overlap);
//! a re-INVITE without SDP gets the other side's offer in its 2xx and the answer in its ACK
//! (RFC 3261 13.2.1), which our ACK to the answering side then carries.

use std::time::Instant;

use crate::media::calls::{offer_keys_with_dtls, Negotiation};
use crate::side::Side;
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;

use super::call::{short, DelayedAck, PendingOffer};
use super::output::Outcome;
use super::timers::Timer;
use super::transactions::{Relay, Tx};
use super::wire::{contact, response_to, via, WARN_SRTP};
use super::{B2bua, MediaPlane, Peer, ALLOW};

impl<M: MediaPlane> B2bua<M> {
    /// Relays a re-INVITE, UPDATE or INFO from `side` of an established call to the other side.
    pub(super) fn relay_in_dialog(
        &mut self,
        now: Instant,
        side: Side,
        key: &str,
        peer: Peer,
        req: Request,
        our_tag: &str,
    ) {
        let sdp_offer = !req.body.is_empty() && req.method != Method::Info;
        // A re-INVITE (with or without SDP) or an UPDATE offer starts an offer/answer
        // exchange; only one can be in flight per call.
        let starts_exchange = req.method == Method::Invite || sdp_offer;
        if starts_exchange && self.refuse_overlap(side, key, peer, &req, our_tag) {
            return;
        }
        let mut offer = None;
        if sdp_offer {
            match self.reoffer(side, key, peer, &req, our_tag) {
                Some(o) => offer = Some(o),
                None => return,
            }
        }
        let other = side.other();
        let method = req.method.clone();
        let Some((to, mut r, branch)) = self.dialog_request(key, other, method.clone()) else {
            return;
        };
        let offer_tag = match offer {
            Some((tag, sdp)) => {
                r.headers.push("Content-Type", "application/sdp");
                r.body = sdp.into_bytes();
                Some(tag)
            }
            None => {
                if method == Method::Info && !req.body.is_empty() {
                    if let Some(ct) = req.headers.get("Content-Type") {
                        r.headers.push("Content-Type", ct.to_vec());
                    }
                    r.body = req.body.clone();
                }
                None
            }
        };
        let deadline = now + self.settings.timer_b;
        let mut timer = None;
        if starts_exchange {
            let t = self.arm(deadline, Timer::Offer(key.to_string()));
            if let Some(c) = self.calls.get_mut(key) {
                c.offer_pending = Some(PendingOffer {
                    from: side,
                    branch: branch.clone(),
                    timer: t,
                });
            }
        } else {
            timer = Some(self.arm(deadline, Timer::Relay(branch.clone())));
        }
        let relay = Relay {
            from: peer,
            req,
            offer_tag,
            to: other,
            timer,
        };
        self.add_tx(key, branch, method, Tx::Relay(Box::new(relay)));
        self.out.request(to, &r);
    }

    /// An offer while another is pending: 500 with Retry-After 0-10 s when it is the sender's
    /// own (RFC 3261 14.2, RFC 3311 5.2), 491 when ours to the sender crossed it (glare,
    /// RFC 3261 14.1). True when the request was answered so.
    fn refuse_overlap(
        &mut self,
        side: Side,
        key: &str,
        peer: Peer,
        req: &Request,
        our_tag: &str,
    ) -> bool {
        let Some(from) = self
            .calls
            .get(key)
            .and_then(|c| c.offer_pending.as_ref())
            .map(|p| p.from)
        else {
            return false;
        };
        let mut r = if from == side {
            let mut r = req.reply(500, Some(our_tag.as_bytes()));
            let wait = self.rng.next_u64() % 11;
            r.headers.push("Retry-After", wait.to_string());
            r
        } else {
            req.reply(491, Some(our_tag.as_bytes()))
        };
        r.headers.push("Allow", ALLOW);
        tracing::info!(call = %short(key), status = r.status, method = %req.method, "offer while another is pending");
        self.out.respond(peer, &r);
        true
    }

    /// The media plane re-offers `side`'s SDP to the other side (keyed as that side is):
    /// the offerer's tag and our SDP, or `None` once the request has been refused (the
    /// media plane's status, the call's media unchanged).
    fn reoffer(
        &mut self,
        side: Side,
        key: &str,
        peer: Peer,
        req: &Request,
        our_tag: &str,
    ) -> Option<(String, String)> {
        let c = self.calls.get(key)?;
        let tag = c.leg(side).their_tag.clone()?;
        let opts = c.leg(side.other()).keying;
        let offered = self.media.offer_with(
            &Negotiation {
                call_id: key,
                from_tag: &tag,
                to_tag: None,
                sdp: &req.body,
                suites: &c.suites,
            },
            &opts,
        );
        match offered {
            Ok(sdp) => {
                if side == Side::A {
                    let dtls = offer_keys_with_dtls(&req.body);
                    if let Some(c) = self.calls.get_mut(key) {
                        c.legs[Side::A].keying.dtls = dtls;
                    }
                }
                Some((tag, sdp))
            }
            Err(e) => {
                let mut r = req.reply(e.sip_status(), Some(our_tag.as_bytes()));
                if e.sip_status() == 488 {
                    r.headers.push("Warning", WARN_SRTP);
                }
                self.out.respond(peer, &r);
                None
            }
        }
    }

    /// A new in-dialog request to `side` of call `key` in our CSeq space: where it goes, the
    /// request, and its branch.
    pub(super) fn dialog_request(
        &mut self,
        key: &str,
        side: Side,
        method: Method,
    ) -> Option<(Peer, Request, String)> {
        let branch = self.branch();
        let v = via(&self.settings, &branch);
        let contact = contact(&self.settings);
        let leg = &mut self.calls.get_mut(key)?.legs[side];
        let req = leg.request(method, v, &contact)?;
        Some((leg.peer, req, branch))
    }

    /// Sends BYE to `side` of call `key` (the call is ending: its response is not awaited).
    pub(super) fn send_bye(&mut self, key: &str, side: Side) {
        if let Some((to, r, _)) = self.dialog_request(key, side, Method::Bye) {
            self.out.request(to, &r);
        }
    }

    /// Hangs up both legs of call `key` and ends it as `outcome`.
    pub(super) fn hang_up_both(&mut self, key: &str, outcome: Outcome) {
        self.send_bye(key, Side::A);
        self.send_bye(key, Side::B);
        self.end_call(key, outcome);
    }

    /// The 2xx to a re-INVITE sent without SDP carries the answering leg's offer: it is
    /// re-offered to the sender in the relayed 2xx, and the exchange stays pending until the
    /// sender's ACK brings the answer. A refused offer ends the call (neither leg can go on).
    pub(super) fn delayed_offer(
        &mut self,
        key: &str,
        from: Peer,
        req: &Request,
        resp: Response,
        answerer: Side,
    ) {
        let Some(c) = self.calls.get(key) else { return };
        let Some(offer_tag) = c.leg(answerer).their_tag.clone() else {
            return;
        };
        let opts = c.leg(answerer.other()).keying;
        let offered = self.media.offer_with(
            &Negotiation {
                call_id: key,
                from_tag: &offer_tag,
                to_tag: None,
                sdp: &resp.body,
                suites: &c.suites,
            },
            &opts,
        );
        let sdp = match offered {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(call = %short(key), error = %e, "offer in a re-INVITE 2xx refused: hanging up");
                let mut r = req.reply(e.sip_status(), None);
                if e.sip_status() == 488 {
                    r.headers.push("Warning", WARN_SRTP);
                }
                self.out.respond(from, &r);
                self.ack_relayed(key, &resp, answerer, None);
                self.send_bye(key, answerer.other());
                self.send_bye(key, answerer);
                self.end_call(key, Outcome::Failed);
                return;
            }
        };
        let mut r = response_to(&req.headers, resp.status, None);
        r.headers.push("Contact", contact(&self.settings));
        r.headers.push("Content-Type", "application/sdp");
        r.body = sdp.into_bytes();
        self.out.respond(from, &r);
        if let Some(c) = self.calls.get_mut(key) {
            c.ack_offer = Some(DelayedAck {
                answerer,
                offer_tag,
                resp: Box::new(resp),
            });
        }
    }

    /// An in-dialog ACK: absorbed, unless it brings the answer a delayed ACK waits for.
    pub(super) fn on_dialog_ack(&mut self, key: &str, side: Side, ack: &Request) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        let Some(d) = c.ack_offer.take_if(|d| d.answerer != side) else {
            return;
        };
        if let Some(p) = c.offer_pending.take() {
            self.timers.cancel(p.timer);
        }
        let Some(c) = self.calls.get(key) else { return };
        let answer = if ack.body.is_empty() {
            None
        } else {
            self.media
                .answer(&Negotiation {
                    call_id: key,
                    from_tag: &d.offer_tag,
                    to_tag: c.leg(side).their_tag.as_deref(),
                    sdp: &ack.body,
                    suites: &c.suites,
                })
                .map_err(
                    |e| tracing::info!(call = %short(key), error = %e, "answer in an ACK refused"),
                )
                .ok()
        };
        let ok = answer.is_some();
        self.ack_relayed(key, &d.resp, d.answerer, answer);
        if !ok {
            // The offer in the 2xx got no usable answer: neither leg has a session to go on with.
            self.hang_up_both(key, Outcome::Failed);
        }
    }

    /// ACKs a 2xx to a re-INVITE we relayed, on the leg that answered it (the other leg's ACK
    /// to our 2xx is absorbed), carrying `answer` as SDP (the answer to an offer the 2xx
    /// carried, for a re-INVITE sent without one).
    pub(super) fn ack_relayed(
        &mut self,
        key: &str,
        resp: &Response,
        to: Side,
        answer: Option<String>,
    ) {
        let Ok(cseq) = resp.headers.cseq() else {
            return;
        };
        let branch = self.branch();
        let v = via(&self.settings, &branch);
        let Some(leg) = self.calls.get(key).map(|c| c.leg(to)) else {
            return;
        };
        if let Some(ack) = leg.ack(cseq.seq, v, answer) {
            let peer = leg.peer;
            self.out.request(peer, &ack);
        }
    }
}
