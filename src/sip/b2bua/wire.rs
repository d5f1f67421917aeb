//! Building the B2BUA's own messages: our Via and Contact, replies to a request, responses to
//! the caller's INVITE, and the user parts that cross from one leg to the other.

use crate::sip::header::Headers;
use crate::sip::message::{Request, Response};
use crate::sip::response::{reason_phrase, reply_to_headers};
use crate::sip::uri::Uri;

use super::{B2bua, MediaPlane, Peer, Settings};

/// Lossy UTF-8 of a header value (tags, Call-IDs).
pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The user part of a URI (a tel: URI is all user).
pub(super) fn user_of(u: &Uri) -> String {
    match u {
        Uri::Sip(s) => s.user.clone().unwrap_or_default(),
        Uri::Tel(t) => t.clone(),
        Uri::Other { .. } => String::new(),
    }
}

/// Keeps only characters safe in a SIP URI user part (digits, letters, `+-_.!~*'()&=$,;?/`).
pub(super) fn safe_user(u: &str) -> String {
    let s: String = u
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+-_.!~*'()&=$,;?/%".contains(*c))
        .take(64)
        .collect();
    if s.is_empty() {
        "anonymous".into()
    } else {
        s
    }
}

/// Our Via for a request on `branch`.
pub(super) fn via(s: &Settings, branch: &str) -> Vec<u8> {
    format!("SIP/2.0/TLS {};branch={branch}", s.local).into_bytes()
}

/// Our Contact.
pub(super) fn contact(s: &Settings) -> Vec<u8> {
    format!("<sip:edge@{};transport=tls>", s.local).into_bytes()
}

/// A response built from `req`'s headers with the standard reason phrase ("Unknown" for codes
/// without one) and `tag` added to To.
pub(super) fn response_to(req: &Headers, status: u16, tag: Option<&str>) -> Response {
    let reason = reason_phrase(status);
    reply_to_headers(
        req,
        status,
        if reason.is_empty() { "Unknown" } else { reason },
        tag.map(str::as_bytes),
    )
}

/// The `Warning` of a refused SDP: what the party must change.
pub(super) const WARN_SRTP: &str = "399 srtp-edge \"SRTP required\"";

impl<M: MediaPlane> B2bua<M> {
    /// Sends `status` in reply to `req` (To tagged with `tag`).
    pub(super) fn reply(&mut self, peer: Peer, req: &Request, status: u16, tag: Option<&str>) {
        let r = req.reply(status, tag.map(str::as_bytes));
        self.out.respond(peer, &r);
    }

    /// A response to the caller's INVITE of call `key` with our tag, our Contact (1xx/2xx) and
    /// `body` as SDP.
    pub(super) fn a_response(&mut self, key: &str, status: u16, body: Option<&str>) {
        let Some(c) = self.calls.get(key) else { return };
        let mut r = response_to(
            &c.invite.headers,
            status,
            Some(&c.legs[crate::side::Side::A].our_tag),
        );
        if (101..300).contains(&status) {
            r.headers.push("Contact", contact(&self.settings));
        }
        if status == 488 {
            r.headers.push("Warning", WARN_SRTP);
        }
        if let Some(b) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = b.as_bytes().to_vec();
        }
        let peer = c.legs[crate::side::Side::A].peer;
        self.out.respond(peer, &r);
    }
}
