//! Where an incoming request goes: validation (RFC 3261/4475 statuses), then the dialog it
//! belongs to (leg B by our Call-ID, leg A by the caller's, an agent call), each checked
//! against the address it must come from; otherwise it is out of dialog: OPTIONS, a new
//! INVITE from a trunk, or a refusal (403, 405, 481).

use std::net::IpAddr;
use std::time::Instant;

use crate::redact::Redacted;
use crate::side::Side;
use crate::sip::message::Request;
use crate::sip::method::Method;
use crate::sip::routing::trunk_for;
use crate::sip::validate::inspect;

use super::{B2bua, MediaPlane, Peer, ALLOW};

impl<M: MediaPlane> B2bua<M> {
    pub(super) fn on_request(&mut self, now: Instant, peer: Peer, ip: IpAddr, req: Request) {
        self.out.received(&req.method);
        if let Err(rej) = inspect(&req) {
            if req.method != Method::Ack {
                let tag = self.hex(6);
                let r = rej.reply(&req, Some(tag.as_bytes()));
                self.out.respond(peer, &r);
            }
            return;
        }
        let Ok(call_id) = req.headers.call_id().map(<[u8]>::to_vec) else {
            return;
        };
        // Leg B requests carry our leg-B Call-ID (the call key); leg A ones the trunk's.
        if let Some(key) = std::str::from_utf8(&call_id)
            .ok()
            .filter(|k| self.calls.contains_key(*k))
            .map(str::to_string)
        {
            if self.sent_by_route_target(&key, peer, ip) {
                self.in_dialog(now, Side::B, key, peer, req);
            } else if req.method != Method::Ack {
                self.reply(peer, &req, 403, Some("x"));
            }
            return;
        }
        if let Some(key) = self.by_a.get(&call_id).cloned() {
            if self.calls.get(&key).is_some_and(|c| c.a_ip == ip) {
                self.in_dialog(now, Side::A, key, peer, req);
            } else if req.method != Method::Ack {
                self.reply(peer, &req, 403, Some("x"));
            }
            return;
        }
        if let Some(key) = self.agent_by_a.get(&call_id).cloned() {
            self.agent_in_dialog(key, peer, ip, req);
            return;
        }
        if req.method != Method::Ack {
            self.out_of_dialog(now, peer, ip, req);
        }
    }

    /// True when a request in call `key`'s leg B dialog really comes from the route target:
    /// over our connection to it, or from its address (an IP target's, or what its name last
    /// resolved to).
    fn sent_by_route_target(&self, key: &str, peer: Peer, ip: IpAddr) -> bool {
        self.calls.get(key).is_some_and(|c| {
            peer == Peer::Route(c.route)
                || self
                    .settings
                    .routes
                    .get(c.route)
                    .is_some_and(|r| r.target_ip() == Some(ip))
                || self
                    .route_ips
                    .get(&c.route)
                    .is_some_and(|ips| ips.contains(&ip))
        })
    }

    /// A request in no dialog we know (not an ACK): only trunks are served.
    fn out_of_dialog(&mut self, now: Instant, peer: Peer, ip: IpAddr, req: Request) {
        let by_cert = match peer {
            Peer::Conn(id) => self.conn_trunks.get(&id).copied(),
            Peer::Route(_) => None,
        };
        let Some(trunk) = by_cert.or_else(|| trunk_for(&self.settings.trunks, ip)) else {
            tracing::info!(ip = %Redacted(ip), method = %req.method, "SIP request not from a trunk: 403");
            let tag = self.hex(6);
            self.reply(peer, &req, 403, Some(&tag));
            return;
        };
        let has_to_tag = req.headers.to().map(|t| t.tag().is_some()).unwrap_or(false);
        let tag = self.hex(6);
        match req.method {
            Method::Options => {
                let mut r = req.reply(200, Some(tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", "application/sdp");
                self.out.respond(peer, &r);
            }
            Method::Invite if !has_to_tag => self.new_call(now, peer, ip, trunk, req),
            Method::Cancel => self.reply(peer, &req, 481, Some(&tag)),
            _ if has_to_tag => self.reply(peer, &req, 481, Some(&tag)),
            _ => {
                let mut r = req.reply(405, Some(tag.as_bytes()));
                r.headers.push("Allow", ALLOW);
                self.out.respond(peer, &r);
            }
        }
    }
}
