//! A new call from a trunk's INVITE: checks (capacity, route, From tag, SDP offer), the media
//! plane's anchoring, then the two dialog legs — leg A from the caller's INVITE, leg B as a new
//! dialog of ours towards the route target (own Call-ID, tags, Via, Contact; only the user parts
//! and the rewritten SDP cross) — and our INVITE on leg B with Timer B armed.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::MediaKeying;
use crate::media::calls::{offer_keys_with_dtls, CallError, Negotiation, OfferOptions};
use crate::redact::Redacted;
use crate::sip::header::Headers;
use crate::sip::message::Request;
use crate::sip::method::Method;
use crate::sip::name_addr::NameAddr;
use crate::sip::routing::route_for;
use crate::sip::typed::Contacts;
use crate::sip::uri::Uri;
use crate::srtp::Profile;

use super::call::{Call, DialogLeg, State};
use super::output::Outcome;
use super::timers::Timer;
use super::transactions::Tx;
use super::wire::{contact, safe_user, text, user_of, via, WARN_SRTP};
use super::{B2bua, MediaPlane, Peer, ALLOW, MAX_CALLS};

/// What the checks of a new INVITE found.
struct Admitted {
    route: usize,
    trunk_name: String,
    a_tag: String,
    from: NameAddr,
    to: NameAddr,
}

impl<M: MediaPlane> B2bua<M> {
    /// A new INVITE from trunk `trunk` (validated, no To tag).
    pub(super) fn new_call(
        &mut self,
        now: Instant,
        peer: Peer,
        ip: IpAddr,
        trunk: usize,
        req: Request,
    ) {
        let our_tag = self.hex(8);
        self.reply(peer, &req, 100, None);
        let Some(adm) = self.admit(peer, trunk, &req, &our_tag) else {
            return;
        };
        if let Some(agent) = self
            .settings
            .routes
            .get(adm.route)
            .and_then(|r| r.agent.clone())
        {
            return self.new_agent_call(
                now,
                peer,
                ip,
                &adm.trunk_name,
                adm.route,
                &agent,
                our_tag,
                adm.a_tag,
                req,
            );
        }
        let key = self.hex(16);
        let suites = self.trunk_suites(trunk);
        let opts = self.route_offer(adm.route);
        let offer = self.media.offer_with(
            &Negotiation {
                call_id: &key,
                from_tag: &adm.a_tag,
                to_tag: None,
                sdp: &req.body,
                suites: &suites,
            },
            &opts,
        );
        let sdp = match offer {
            Ok(s) => s,
            Err(e) => return self.offer_refused(peer, &req, &our_tag, &key, &e),
        };
        self.start_route_fork(&key, adm.route, &req);
        self.start_route_recording(&key, adm.route, &adm.trunk_name, &req);
        let Some((b_leg, invite)) = self.callee_leg(&key, adm.route, &req, &adm.from, sdp) else {
            self.media.delete(&key);
            self.refuse(peer, &req, &our_tag, 500, Outcome::Failed);
            return;
        };
        let b_branch = invite
            .headers
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(text))
            .unwrap_or_default();
        self.out.request(Peer::Route(adm.route), &invite);
        tracing::info!(
            call = %&key[..8],
            trunk = %adm.trunk_name,
            from = %Redacted(safe_user(&user_of(&adm.from.uri))),
            to = %Redacted(safe_user(&user_of(&req.uri))),
            route = adm.route,
            "call: INVITE relayed"
        );
        let a_leg = caller_leg(peer, &req, &adm, our_tag);
        self.by_a.insert(a_leg.call_id.clone(), key.clone());
        let timer = self.arm(now + self.settings.timer_b, Timer::Invite(key.clone()));
        let call = Call {
            key: key.clone(),
            state: State::Calling,
            route: adm.route,
            legs: [a_leg, b_leg],
            a_ip: ip,
            invite: req,
            b_branch: b_branch.clone(),
            suites,
            answer_sdp: None,
            offer_pending: None,
            ack_offer: None,
            timer: Some(timer),
            txs: Vec::new(),
            outcome: None,
        };
        self.calls.insert(key.clone(), call);
        self.add_tx(&key, b_branch, Method::Invite, Tx::Invite);
    }

    /// The checks before anchoring: capacity (503), a route (404), From/To with a From tag
    /// (400), an SDP offer (488). `None` when the INVITE was answered.
    fn admit(
        &mut self,
        peer: Peer,
        trunk: usize,
        req: &Request,
        our_tag: &str,
    ) -> Option<Admitted> {
        if self.len() >= MAX_CALLS {
            let mut r = req.reply(503, Some(our_tag.as_bytes()));
            r.headers.push("Retry-After", "5");
            self.out.respond(peer, &r);
            return None;
        }
        let trunk_name = self
            .settings
            .trunks
            .get(trunk)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let Some(route) = route_for(&self.settings.routes, &trunk_name, &req.uri) else {
            tracing::info!(trunk = %trunk_name, to = %Redacted(user_of(&req.uri)), "no route: 404");
            self.refuse(peer, req, our_tag, 404, Outcome::Rejected);
            return None;
        };
        let (Ok(from), Ok(to)) = (req.headers.from(), req.headers.to()) else {
            self.refuse(peer, req, our_tag, 400, Outcome::Rejected);
            return None;
        };
        let Some(a_tag) = from.tag().map(text) else {
            self.refuse(peer, req, our_tag, 400, Outcome::Rejected);
            return None;
        };
        if req.body.is_empty() {
            // Offerless INVITEs (offer in the 2xx) are not supported yet.
            let mut r = req.reply(488, Some(our_tag.as_bytes()));
            r.headers
                .push("Warning", "399 srtp-edge \"SDP offer required\"");
            self.out.ended(None, Outcome::Rejected);
            self.out.respond(peer, &r);
            return None;
        }
        Some(Admitted {
            route,
            trunk_name,
            a_tag,
            from,
            to,
        })
    }

    /// Refuses the caller's INVITE with `status` before a call exists, counted as `outcome`.
    fn refuse(&mut self, peer: Peer, req: &Request, our_tag: &str, status: u16, outcome: Outcome) {
        self.out.ended(None, outcome);
        self.reply(peer, req, status, Some(our_tag));
    }

    /// The media plane refused the offer: the status it names (488 with a Warning for plain
    /// RTP, 503 with Retry-After when out of ports), nothing left anchored.
    fn offer_refused(
        &mut self,
        peer: Peer,
        req: &Request,
        our_tag: &str,
        key: &str,
        e: &CallError,
    ) {
        self.media.delete(key);
        let status = e.sip_status();
        tracing::info!(status, error = %e, "offer refused");
        let mut r = req.reply(status, Some(our_tag.as_bytes()));
        let plaintext = status == 488;
        if plaintext {
            r.headers.push("Warning", WARN_SRTP);
        }
        if status == 503 {
            r.headers.push("Retry-After", "5");
        }
        self.out.ended(
            None,
            if plaintext {
                Outcome::Plaintext
            } else {
                Outcome::Failed
            },
        );
        self.out.respond(peer, &r);
    }

    /// Leg B of call `key` and our INVITE opening it, carrying `sdp`: the route target with
    /// the caller's user parts, our own tags, Call-ID, Via and Contact.
    fn callee_leg(
        &mut self,
        key: &str,
        route: usize,
        req: &Request,
        from: &NameAddr,
        sdp: String,
    ) -> Option<(DialogLeg, Request)> {
        let r = self.settings.routes.get(route)?;
        let mut target = r.target.clone();
        let to_user = safe_user(&user_of(&req.uri));
        target.user = Some(to_user.clone());
        target.password = None;
        target.headers.clear();
        let host = target.host.to_string();
        let b_ruri = target.to_string();
        let from_user = safe_user(&user_of(&from.uri));
        let scheme = if target.secure { "sips" } else { "sip" };
        let our_tag = self.hex(8);
        let local = format!(
            "<{scheme}:{from_user}@{}>;tag={our_tag}",
            self.settings.local.rsplit_once(':').map_or("", |x| x.0)
        )
        .into_bytes();
        let remote = format!("<{scheme}:{to_user}@{host}>").into_bytes();
        let branch = self.branch();
        let mf = req
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .map_or(70, |m| m.saturating_sub(1));
        let mut h = Headers::new();
        h.push("Via", via(&self.settings, &branch));
        h.push("Max-Forwards", mf.to_string());
        h.push("From", local.clone());
        h.push("To", remote.clone());
        h.push("Call-ID", key);
        h.push("CSeq", "1 INVITE");
        h.push("Contact", contact(&self.settings));
        h.push("Allow", ALLOW);
        h.push("Content-Type", "application/sdp");
        let uri = Uri::parse(b_ruri.as_bytes())?;
        let invite = Request {
            method: Method::Invite,
            uri: uri.clone(),
            headers: h,
            body: sdp.into_bytes(),
        };
        let leg = DialogLeg {
            peer: Peer::Route(route),
            call_id: key.as_bytes().to_vec(),
            our_tag,
            their_tag: None,
            local,
            remote,
            remote_tagged: false,
            target: None,
            ruri: Some(uri),
            cseq: 1,
            keying: self.route_offer(route),
        };
        Some((leg, invite))
    }

    /// How offers to route `route`'s target are keyed: DTLS-SRTP when its `media_keying` says
    /// so, else SDES in `RTP/SAVP` (no feedback profile towards a SIP trunk).
    pub(super) fn route_offer(&self, route: usize) -> OfferOptions {
        let dtls = self
            .settings
            .routes
            .get(route)
            .is_some_and(|r| r.media_keying == MediaKeying::Dtls);
        OfferOptions {
            dtls,
            no_feedback: !dtls,
        }
    }

    /// The SDES suites a trunk allows (its own list, else `media.suites`).
    pub(super) fn trunk_suites(&self, trunk: usize) -> Vec<Profile> {
        self.settings
            .trunks
            .get(trunk)
            .map(|t| t.sdes_suites.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.settings.suites.clone())
    }
}

/// Leg A from the caller's INVITE: its Call-ID, tag and Contact; our From is its To with our
/// tag, our To its From. It is keyed the way it offered (SDES or DTLS-SRTP).
fn caller_leg(peer: Peer, req: &Request, adm: &Admitted, our_tag: String) -> DialogLeg {
    let target = match req.headers.contacts() {
        Ok(Some(Contacts::List(l))) => l.into_iter().next().map(|c| c.uri),
        _ => None,
    };
    let mut to_tagged = adm.to.clone();
    to_tagged.set_param("tag", Some(our_tag.as_bytes()));
    DialogLeg {
        peer,
        call_id: req
            .headers
            .call_id()
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        our_tag,
        their_tag: Some(adm.a_tag.clone()),
        local: to_tagged.to_bytes(),
        remote: adm.from.to_bytes(),
        remote_tagged: true,
        target,
        ruri: None,
        cseq: 1,
        keying: OfferOptions {
            dtls: offer_keys_with_dtls(&req.body),
            ..Default::default()
        },
    }
}
