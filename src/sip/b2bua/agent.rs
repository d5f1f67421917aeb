//! Agent-mode calls and route forks in the B2BUA state machine.
//!
//! An agent route's call has one SIP leg: srtp-edge answers the INVITE itself (100 at once, the
//! 200 with its SDP once the WSS backend has accepted the stream), and the backend is the other
//! party. The backend hanging up (close, `disconnect`, lost connection) sends BYE to the caller;
//! the caller's BYE deletes the call, which ends the fork with `stop` and a close 1000. A
//! backend that cannot be reached before the 200 gets the caller a 503 and frees the ports.
//!
//! A route with `fork = "name"` is a normal SIP-to-SIP call whose two tracks are copied to the
//! backend; the fork starts at the answer and a lost backend never affects the call.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Instant;

use crate::media::calls::{CallError, ForkMeta, Negotiation, OfferOptions};
use crate::redact::Redacted;
use crate::sip::message::Request;
use crate::sip::method::Method;
use crate::sip::typed::Contacts;

use super::call::{short, DialogLeg};
use super::output::Outcome;
use super::timers::{Timer, TimerId};
use super::wire::{contact, response_to, safe_user, user_of, via, WARN_SRTP};
use super::{B2bua, MediaPlane, Peer, ALLOW};

#[cfg(test)]
mod tests;

/// Where an agent call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AgentState {
    /// 100 sent; waiting for the backend to accept the stream.
    Connecting,
    /// 200 sent.
    Answered,
}

/// One agent-mode call: the caller's dialog only (the backend is not a SIP party).
#[derive(Debug)]
pub(super) struct AgentCall {
    key: String,
    state: AgentState,
    /// Answer by then (Timer B) or give up with 503.
    timer: Option<TimerId>,
    /// The caller's dialog.
    leg: DialogLeg,
    /// The caller's source address (its in-dialog requests must come from it).
    ip: IpAddr,
    invite: Request,
    /// Our SDP in force (the last answer).
    answer: String,
    /// The caller's offer that `answer` answers (a repeat of it changes nothing).
    offer: Vec<u8>,
    /// The SDES suites the caller's trunk allows (for re-offers).
    suites: Vec<crate::srtp::Profile>,
}

/// The `Warning` for a refused agent offer, if the error names what the caller must change.
fn agent_warning(e: &CallError) -> Option<&'static str> {
    match e {
        CallError::ForkRefused(_) => Some("399 srtp-edge \"PCMU or PCMA required\""),
        CallError::Policy(p) if p.is_plaintext() => Some(WARN_SRTP),
        _ => None,
    }
}

impl<M: MediaPlane> B2bua<M> {
    /// A new INVITE on an agent route: anchor the caller's leg and start the backend; the 200
    /// goes out on [`MediaEvent::AgentConnected`](super::MediaEvent). `req` has passed
    /// validation and carries an offer and a From tag.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_agent_call(
        &mut self,
        now: Instant,
        peer: Peer,
        ip: IpAddr,
        trunk_name: &str,
        route: usize,
        agent: &str,
        our_tag: String,
        a_tag: String,
        req: Request,
    ) {
        let key = self.hex(16);
        let suites = self.suites_for_trunk_name(trunk_name);
        let from_user = req
            .headers
            .from()
            .map(|f| safe_user(&user_of(&f.uri)))
            .unwrap_or_default();
        let to_user = safe_user(&user_of(&req.uri));
        let meta = ForkMeta {
            from: from_user.clone(),
            to: to_user.clone(),
            route: format!("route{route}"),
        };
        let answer = self.media.offer_agent(
            &Negotiation {
                call_id: &key,
                from_tag: &a_tag,
                to_tag: None,
                sdp: &req.body,
                suites: &suites,
            },
            agent,
            meta,
        );
        let answer = match answer {
            Ok(s) => s,
            Err(e) => return self.agent_refused(peer, &req, &our_tag, agent, &e),
        };
        tracing::info!(
            call = %&key[..8],
            trunk = %trunk_name,
            from = %Redacted(&from_user),
            to = %Redacted(&to_user),
            route,
            agent,
            "agent call: connecting to the backend"
        );
        let leg = agent_leg(peer, &req, our_tag, a_tag);
        self.agent_by_a.insert(leg.call_id.clone(), key.clone());
        let timer = self.arm(now + self.settings.timer_b, Timer::Agent(key.clone()));
        self.agents.insert(
            key.clone(),
            AgentCall {
                key,
                state: AgentState::Connecting,
                timer: Some(timer),
                leg,
                ip,
                offer: req.body.clone(),
                invite: req,
                answer,
                suites,
            },
        );
    }

    /// The media plane refused an agent call: 488 when the offer has no PCMU/PCMA (the backend
    /// cannot take the call's audio), else the error's status; nothing is left anchored.
    fn agent_refused(
        &mut self,
        peer: Peer,
        req: &Request,
        our_tag: &str,
        agent: &str,
        e: &CallError,
    ) {
        let codec = matches!(e, CallError::ForkRefused(_));
        let status = if codec { 488 } else { e.sip_status() };
        tracing::info!(status, error = %e, agent, "agent call refused");
        let mut r = req.reply(status, Some(our_tag.as_bytes()));
        if let Some(w) = agent_warning(e) {
            r.headers.push("Warning", w);
        }
        if status == 503 {
            r.headers.push("Retry-After", "5");
        }
        self.out.ended(None, Outcome::Rejected);
        self.out.respond(peer, &r);
    }

    fn suites_for_trunk_name(&self, trunk: &str) -> Vec<crate::srtp::Profile> {
        self.settings
            .trunks
            .iter()
            .find(|t| t.name == trunk)
            .map(|t| t.sdes_suites.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.settings.suites.clone())
    }

    /// A final or provisional response to the caller's INVITE.
    fn agent_response(&mut self, key: &str, status: u16, body: Option<&str>) {
        let Some(c) = self.agents.get(key) else {
            return;
        };
        let mut r = response_to(&c.invite.headers, status, Some(&c.leg.our_tag));
        if (101..300).contains(&status) {
            r.headers.push("Contact", contact(&self.settings));
            r.headers.push("Allow", ALLOW);
        }
        if status == 503 {
            r.headers.push("Retry-After", "5");
        }
        if let Some(b) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = b.as_bytes().to_vec();
        }
        let peer = c.leg.peer;
        self.out.respond(peer, &r);
    }

    /// A BYE to the caller in its dialog (our CSeq space).
    fn agent_bye(&mut self, key: &str) {
        let branch = self.branch();
        let v = via(&self.settings, &branch);
        let contact = contact(&self.settings);
        let Some(c) = self.agents.get_mut(key) else {
            return;
        };
        if let Some(bye) = c.leg.request(Method::Bye, v, &contact) {
            let peer = c.leg.peer;
            self.out.request(peer, &bye);
        }
    }

    fn end_agent(&mut self, key: &str, outcome: Outcome) {
        if let Some(c) = self.agents.remove(key) {
            self.media.delete(key);
            self.agent_by_a.remove(&c.leg.call_id);
            if let Some(t) = c.timer {
                self.timers.cancel(t);
            }
            self.out.ended(Some(key), outcome);
            tracing::info!(call = %short(key), outcome = outcome.label(), "agent call ended");
            self.stop_audit_if_idle();
        }
    }

    /// The backend of agent call `key` accepted the stream: the caller gets the 200 with our
    /// SDP. Unknown or already answered calls are ignored.
    pub(super) fn agent_connected(&mut self, now: Instant, key: &str) {
        let Some(c) = self.agents.get_mut(key) else {
            return;
        };
        if c.state != AgentState::Connecting {
            return;
        }
        c.state = AgentState::Answered;
        if let Some(t) = c.timer.take() {
            self.timers.cancel(t);
        }
        let answer = c.answer.clone();
        self.agent_response(key, 200, Some(&answer));
        tracing::info!(call = %short(key), "agent call answered");
        self.ensure_audit(now);
    }

    /// The backend of agent call `key` is gone (unreachable, closed, asked to hang up): BYE to
    /// the caller, or 503 when the call was not answered yet; ports released either way.
    pub(super) fn agent_hangup(&mut self, key: &str) {
        let Some(state) = self.agents.get(key).map(|c| c.state) else {
            return;
        };
        match state {
            AgentState::Connecting => {
                tracing::info!(call = %short(key), "agent backend unreachable: 503");
                self.agent_response(key, 503, None);
                self.end_agent(key, Outcome::Failed);
            }
            AgentState::Answered => {
                tracing::info!(call = %short(key), "agent backend hung up: BYE");
                self.agent_bye(key);
                self.end_agent(key, Outcome::Answered);
            }
        }
    }

    /// A request in an agent call's dialog (or a retransmitted/merged INVITE) from `ip`.
    pub(super) fn agent_in_dialog(&mut self, key: String, peer: Peer, ip: IpAddr, req: Request) {
        let Some(c) = self.agents.get(&key) else {
            return;
        };
        if c.ip != ip {
            if req.method != Method::Ack {
                self.reply(peer, &req, 403, Some("x"));
            }
            return;
        }
        let our_tag = c.leg.our_tag.clone();
        let state = c.state;
        let in_dialog = req.headers.to().map(|t| t.tag().is_some()).unwrap_or(false);
        match req.method {
            Method::Ack => {}
            Method::Invite if !in_dialog => self.reply(peer, &req, 482, Some(&our_tag)),
            Method::Cancel => {
                self.reply(peer, &req, 200, Some(&our_tag));
                if state == AgentState::Connecting {
                    self.agent_response(&key, 487, None);
                    self.end_agent(&key, Outcome::Cancelled);
                }
            }
            Method::Bye => {
                self.reply(peer, &req, 200, Some(&our_tag));
                if state == AgentState::Connecting {
                    self.agent_response(&key, 487, None);
                }
                // Deleting the call drops the fork: the backend gets `stop` and a close 1000.
                self.end_agent(&key, Outcome::Answered);
            }
            Method::Invite | Method::Update if state == AgentState::Answered => {
                self.agent_reoffer(&key, peer, &req, &our_tag);
            }
            Method::Invite | Method::Update => self.reply(peer, &req, 491, Some(&our_tag)),
            Method::Info | Method::Options => {
                let mut r = req.reply(200, Some(our_tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                self.out.respond(peer, &r);
            }
            _ => self.reply(peer, &req, 501, Some(&our_tag)),
        }
    }

    /// A re-INVITE or UPDATE in an answered agent call. A session refresh (no SDP, or the
    /// offer in force again) gets the SDP in force (an offerless re-INVITE: as our offer); a
    /// new offer (hold, resume, re-key, codec, address) is answered by the media plane, or
    /// refused with 488 and the call keeps its media as it was.
    fn agent_reoffer(&mut self, key: &str, peer: Peer, req: &Request, our_tag: &str) {
        let Some(c) = self.agents.get(key) else {
            return;
        };
        let same = req.body.is_empty() || c.offer.as_slice() == req.body.as_slice();
        let body = if same {
            let with_sdp = !req.body.is_empty() || req.method == Method::Invite;
            with_sdp.then(|| c.answer.clone())
        } else {
            let answer = self.media.reoffer_agent(&Negotiation {
                call_id: key,
                from_tag: c.leg.their_tag.as_deref().unwrap_or_default(),
                to_tag: None,
                sdp: &req.body,
                suites: &c.suites,
            });
            match answer {
                Ok(a) => {
                    if let Some(c) = self.agents.get_mut(key) {
                        c.answer = a.clone();
                        c.offer = req.body.clone();
                    }
                    Some(a)
                }
                Err(e) => {
                    tracing::info!(call = %short(key), error = %e, "agent re-offer refused: 488, media unchanged");
                    let mut r = req.reply(488, Some(our_tag.as_bytes()));
                    if let Some(w) = agent_warning(&e) {
                        r.headers.push("Warning", w);
                    }
                    self.out.respond(peer, &r);
                    return;
                }
            }
        };
        let mut r = req.reply(200, Some(our_tag.as_bytes()));
        r.headers.push("Contact", contact(&self.settings));
        if let Some(b) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = b.into_bytes();
        }
        self.out.respond(peer, &r);
    }

    /// No backend by the deadline: 503 to the caller.
    pub(super) fn agent_expired(&mut self, key: &str) {
        let Some(c) = self.agents.get_mut(key) else {
            return;
        };
        c.timer = None;
        if c.state == AgentState::Connecting {
            self.agent_response(key, 503, None);
            self.end_agent(key, Outcome::Timeout);
        }
    }

    /// True when an agent call is answered (the media audit has work).
    pub(super) fn any_answered_agent(&self) -> bool {
        self.agents
            .values()
            .any(|c| c.state == AgentState::Answered)
    }

    /// Answered agent calls the media plane no longer holds (media timeout): BYE.
    pub(super) fn audit_agents(&mut self, live: &HashSet<String>) {
        let dead: Vec<String> = self
            .agents
            .values()
            .filter(|c| c.state == AgentState::Answered && !live.contains(&c.key))
            .map(|c| c.key.clone())
            .collect();
        for k in dead {
            self.agent_media_ended(&k);
        }
    }

    /// The media plane ended agent call `key` (media timeout): BYE if it was answered.
    pub(super) fn agent_media_ended(&mut self, key: &str) {
        if self
            .agents
            .get(key)
            .is_some_and(|c| c.state == AgentState::Answered)
        {
            tracing::info!(call = %short(key), "agent call media timed out: BYE");
            self.agent_bye(key);
            self.end_agent(key, Outcome::MediaTimeout);
        }
    }

    /// Ends every agent call (shutdown).
    pub(super) fn agent_shutdown(&mut self) {
        let keys: Vec<String> = self.agents.keys().cloned().collect();
        for k in keys {
            self.agent_hangup(&k);
        }
    }

    /// A route with `fork = "name"`: copy both tracks of call `key` to that backend from the
    /// answer on. A refusal (codec, unknown backend) is logged; the call goes on unforked.
    pub(super) fn start_route_fork(&self, key: &str, route: usize, req: &Request) {
        let Some(backend) = self
            .settings
            .routes
            .get(route)
            .and_then(|r| r.fork.as_deref())
        else {
            return;
        };
        let meta = ForkMeta {
            from: req
                .headers
                .from()
                .map(|f| safe_user(&user_of(&f.uri)))
                .unwrap_or_default(),
            to: safe_user(&user_of(&req.uri)),
            route: format!("route{route}"),
        };
        if let Err(e) = self.media.fork(key, backend, meta) {
            tracing::warn!(call = %short(key), backend, error = %e, "route fork not started; the call goes on");
        }
    }
}

/// The caller's dialog of an agent call: our From is its To with our tag, our To its From.
fn agent_leg(peer: Peer, req: &Request, our_tag: String, a_tag: String) -> DialogLeg {
    let target = match req.headers.contacts() {
        Ok(Some(Contacts::List(l))) => l.into_iter().next().map(|c| c.uri),
        _ => None,
    };
    let (local, remote) = match (req.headers.from(), req.headers.to()) {
        (Ok(f), Ok(t)) => {
            let mut t = t.clone();
            t.set_param("tag", Some(our_tag.as_bytes()));
            (t.to_bytes(), f.to_bytes())
        }
        _ => (Vec::new(), Vec::new()),
    };
    DialogLeg {
        peer,
        call_id: req
            .headers
            .call_id()
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        our_tag,
        their_tag: Some(a_tag),
        local,
        remote,
        remote_tagged: true,
        target,
        ruri: None,
        cseq: 1,
        keying: OfferOptions::default(),
    }
}
