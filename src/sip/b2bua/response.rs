//! Responses from either leg, matched to our client transaction by the top Via's branch and the
//! CSeq method (RFC 3261 17.1.3): the callee's responses to our INVITE (relayed to the caller
//! with the rewritten answer, ACKed, the call confirmed or ended) and the responses to requests
//! relayed inside a dialog (relayed back to the sender, 2xx ACKed on the answering leg).

use std::time::Instant;

use crate::media::calls::Negotiation;
use crate::side::Side;
use crate::sip::header::Headers;
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;
use crate::sip::typed::Contacts;
use crate::sip::validate::inspect_response;

use super::call::{short, State};
use super::output::Outcome;
use super::timers::Timer;
use super::transactions::{Relay, Tx};
use super::wire::{contact, response_to, text, via};
use super::{B2bua, MediaPlane, AUDIT_EVERY};

impl<M: MediaPlane> B2bua<M> {
    pub(super) fn on_response(&mut self, now: Instant, resp: Response) {
        if inspect_response(&resp).is_err() {
            return; // RFC 4475: a malformed response is dropped.
        }
        let Some(b) = resp
            .headers
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(text))
        else {
            return;
        };
        let Some(tx) = self.txs.get(&b) else {
            return;
        };
        // The 200 to our CANCEL shares the INVITE's branch: it is not the INVITE's response.
        if resp.headers.cseq().ok().map(|c| c.method).as_ref() != Some(&tx.method) {
            return;
        }
        if resp.status >= 200 {
            let Some(tx) = self.finish_tx(&b) else { return };
            match tx.kind {
                Tx::Invite => self.on_invite_response(now, &tx.call, resp),
                Tx::Relay(r) => self.on_relayed_response(&tx.call, &b, *r, resp),
            }
            return;
        }
        let key = tx.call.clone();
        match &tx.kind {
            Tx::Invite => self.on_invite_response(now, &key, resp),
            Tx::Relay(r) if resp.status > 100 => {
                let r = Relay {
                    from: r.from,
                    req: r.req.clone(),
                    offer_tag: r.offer_tag.clone(),
                    to: r.to,
                    timer: None,
                };
                self.on_relayed_response(&key, &b, r, resp);
            }
            Tx::Relay(_) => {}
        }
    }

    /// The ACK of a final response to our INVITE on leg B (`to`: the response's To): on the
    /// INVITE's branch for a non-2xx (RFC 3261 17.1.1.3), a new one for a 2xx (13.2.2.4).
    fn b_ack(&mut self, key: &str, to: &[u8], same_branch: bool) {
        let branch = match (same_branch, self.calls.get(key)) {
            (true, Some(c)) => c.b_branch.clone(),
            (false, Some(_)) => self.branch(),
            (_, None) => return,
        };
        let Some(c) = self.calls.get(key) else { return };
        let leg = c.leg(Side::B);
        let uri = if same_branch {
            leg.ruri.clone()
        } else {
            leg.request_uri()
        };
        let Some(uri) = uri else { return };
        let mut h = Headers::new();
        h.push("Via", via(&self.settings, &branch));
        h.push("Max-Forwards", "70");
        h.push("From", leg.local.clone());
        h.push("To", to.to_vec());
        h.push("Call-ID", c.key.clone());
        h.push("CSeq", "1 ACK");
        let ack = Request {
            method: Method::Ack,
            uri,
            headers: h,
            body: Vec::new(),
        };
        self.out.request(leg.peer, &ack);
    }

    /// A response of the callee to our INVITE.
    fn on_invite_response(&mut self, now: Instant, key: &str, resp: Response) {
        let status = resp.status;
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        if status == 100 || (status < 200 && c.state != State::Calling) {
            return; // A provisional after our CANCEL: the caller already has its 487.
        }
        let to = resp
            .headers
            .get("To")
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let resp_tag = resp.headers.to().ok().and_then(|t| t.tag().map(text));
        let leg = &mut c.legs[Side::B];
        if let Some(t) = &resp_tag {
            if leg.their_tag.is_none() || status >= 200 {
                leg.their_tag = Some(t.clone());
            }
        }
        let state = c.state;
        if status >= 300 {
            // Non-2xx final: ACK it on the same branch; relay unless we already answered A.
            self.b_ack(key, &to, true);
            if state == State::Calling {
                let relayed = if (300..400).contains(&status) {
                    480
                } else {
                    status
                };
                self.a_response(key, relayed, None);
                self.end_call(key, Outcome::Rejected);
            } else {
                self.end_call(key, Outcome::Cancelled);
            }
            return;
        }
        if status >= 200 {
            if let Ok(Some(Contacts::List(l))) = resp.headers.contacts() {
                leg.target = l.into_iter().next().map(|a| a.uri);
            }
            self.b_ack(key, &to, false);
            if state != State::Calling {
                // Cancelled meanwhile: the 200 won the race; hang up leg B.
                self.send_bye(key, Side::B);
                self.end_call(key, Outcome::Cancelled);
                return;
            }
        }
        self.relay_answer(now, key, &resp, resp_tag.as_deref());
    }

    /// A 1xx (above 100) or 2xx from the callee while calling: its answer rewritten by the
    /// media plane (once) and relayed to the caller; a 2xx confirms the call. An answer the
    /// media plane refuses (plain RTP) tears both legs down with 488 to the caller.
    fn relay_answer(&mut self, now: Instant, key: &str, resp: &Response, resp_tag: Option<&str>) {
        let status = resp.status;
        let Some(c) = self.calls.get(key) else { return };
        let mut body = c.answer_sdp.clone();
        if body.is_none() && !resp.body.is_empty() {
            let answered = self.media.answer(&Negotiation {
                call_id: key,
                from_tag: c.leg(Side::A).their_tag.as_deref().unwrap_or_default(),
                to_tag: resp_tag,
                sdp: &resp.body,
                suites: &c.suites,
            });
            match answered {
                Ok(s) => {
                    body = Some(s.clone());
                    if let Some(c) = self.calls.get_mut(key) {
                        c.answer_sdp = Some(s);
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, status, "answer from the route target refused; tearing down");
                    if status >= 200 {
                        self.a_response(key, 488, None);
                        self.send_bye(key, Side::B);
                        self.end_call(key, Outcome::Plaintext);
                    } else {
                        self.cancel_call(now, key, 488, Outcome::Plaintext);
                    }
                    return;
                }
            }
        }
        if status >= 200 && body.is_none() {
            // A 2xx without an answer cannot be anchored: refuse leg A, hang up leg B.
            self.a_response(key, 488, None);
            self.send_bye(key, Side::B);
            self.end_call(key, Outcome::Failed);
            return;
        }
        let relay_status = if status >= 200 { 200 } else { status };
        self.a_response(key, relay_status, body.as_deref());
        if status >= 200 {
            self.confirm(now, key);
        }
    }

    /// The call is established on both legs: Timer B stops, the media audit runs.
    fn confirm(&mut self, now: Instant, key: &str) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        c.state = State::Confirmed;
        if let Some(t) = c.timer.take() {
            self.timers.cancel(t);
        }
        tracing::info!(call = %short(key), "call answered");
        self.ensure_audit(now);
    }

    /// Arms the media audit if it is not armed.
    pub(super) fn ensure_audit(&mut self, now: Instant) {
        if self.audit.is_none() {
            self.audit = Some(self.arm(now + AUDIT_EVERY, Timer::Audit));
        }
    }

    /// A response (above 100) to a request relayed from `r.from`'s side; `branch` is our
    /// transaction's.
    fn on_relayed_response(&mut self, key: &str, branch: &str, r: Relay, resp: Response) {
        let ok = (200..300).contains(&resp.status);
        // A 2xx carrying an offer (re-INVITE sent without SDP) keeps the exchange pending until
        // the ACK brings the answer.
        let offer_in_2xx =
            r.offer_tag.is_none() && r.req.method == Method::Invite && ok && !resp.body.is_empty();
        if resp.status >= 200 && !offer_in_2xx {
            self.end_exchange(key, branch);
        }
        if r.offer_tag.is_some() && ok && resp.body.is_empty() {
            // A 2xx to our offer must carry the answer (RFC 3264): the exchange failed, the
            // sender keeps its previous session; the answering leg is ACKed.
            tracing::info!(call = %short(key), "2xx to a relayed offer without an answer");
            let mut rr = r.req.reply(488, None);
            rr.headers.push(
                "Warning",
                "399 srtp-edge \"no SDP answer from the other party\"",
            );
            self.out.respond(r.from, &rr);
            if r.req.method == Method::Invite {
                self.ack_relayed(key, &resp, r.to, None);
            }
            return;
        }
        if offer_in_2xx {
            self.delayed_offer(key, r.from, &r.req, resp, r.to);
            return;
        }
        let mut body = None;
        if let Some(tag) = r.offer_tag.as_ref().filter(|_| !resp.body.is_empty()) {
            let Some(c) = self.calls.get(key) else { return };
            let answered = self.media.answer(&Negotiation {
                call_id: key,
                from_tag: tag,
                to_tag: c.leg(r.to).their_tag.as_deref(),
                sdp: &resp.body,
                suites: &c.suites,
            });
            match answered {
                Ok(s) => body = Some(s),
                Err(e) => {
                    tracing::info!(error = %e, "re-INVITE answer refused");
                    let rr = r.req.reply(e.sip_status(), None);
                    self.out.respond(r.from, &rr);
                    if ok {
                        self.ack_relayed(key, &resp, r.to, None);
                    }
                    return;
                }
            }
        }
        let mut rr = response_to(&r.req.headers, resp.status, None);
        if r.req.method == Method::Invite || r.req.method == Method::Update {
            rr.headers.push("Contact", contact(&self.settings));
        }
        if let Some(s) = body {
            rr.headers.push("Content-Type", "application/sdp");
            rr.body = s.into_bytes();
        }
        self.out.respond(r.from, &rr);
        if r.req.method == Method::Invite && ok {
            self.ack_relayed(key, &resp, r.to, None);
        } else if r.req.method == Method::Invite && resp.status >= 300 {
            // A non-2xx final response to our INVITE is ACKed by our client transaction, on
            // its branch (RFC 3261 17.1.1.3); the sender's ACK of the relayed one is absorbed.
            self.ack_non_2xx(key, r.to, branch, &resp);
        }
    }

    /// ACKs a non-2xx final response to a re-INVITE we sent `to`'s leg, on its `branch`.
    fn ack_non_2xx(&mut self, key: &str, to: Side, branch: &str, resp: &Response) {
        let Ok(cseq) = resp.headers.cseq() else {
            return;
        };
        let v = via(&self.settings, branch);
        let Some(leg) = self.calls.get(key).map(|c| c.leg(to)) else {
            return;
        };
        if let Some(ack) = leg.ack(cseq.seq, v, None) {
            let peer = leg.peer;
            self.out.request(peer, &ack);
        }
    }

    /// The exchange of call `key` on `branch` (if that is the pending one) is over.
    fn end_exchange(&mut self, key: &str, branch: &str) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        if let Some(p) = c.offer_pending.take_if(|p| p.branch == branch) {
            self.timers.cancel(p.timer);
        }
    }
}
