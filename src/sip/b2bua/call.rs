//! A relayed call as plain data: its state, its two dialog legs as `[DialogLeg; 2]` indexed by
//! [`Side`] (A the caller, B the route target; "the other leg" is always `side.other()`), the
//! offer/answer exchange in flight, its timer and its client transactions.

use std::net::IpAddr;

use crate::media::calls::OfferOptions;
use crate::side::Side;
use crate::sip::header::Headers;
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;
use crate::sip::uri::Uri;
use crate::srtp::Profile;

use super::output::Outcome;
use super::timers::TimerId;
use super::Peer;

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// INVITE sent upstream, no final response yet.
    Calling,
    /// CANCEL sent upstream, waiting for its final response to ACK it.
    Cancelling,
    /// 2xx relayed; dialog established on both legs.
    Confirmed,
}

/// One side's dialog as srtp-edge holds it: enough to send requests in it and to recognise
/// what the party sends.
#[derive(Debug)]
pub(super) struct DialogLeg {
    /// Where messages for this party go.
    pub(super) peer: Peer,
    /// The dialog's Call-ID (leg A: the caller's; leg B: ours, the call key).
    pub(super) call_id: Vec<u8>,
    /// Our tag in this dialog.
    pub(super) our_tag: String,
    /// The party's tag (leg A: its From tag; leg B: the To tag of the callee's responses,
    /// once one came).
    pub(super) their_tag: Option<String>,
    /// Our From header in requests we send.
    pub(super) local: Vec<u8>,
    /// The To header in requests we send; when `remote_tagged` is false the party's tag is
    /// appended once known.
    pub(super) remote: Vec<u8>,
    pub(super) remote_tagged: bool,
    /// The party's Contact: where in-dialog requests go.
    pub(super) target: Option<Uri>,
    /// The Request-URI of our initial INVITE (leg B): used until a Contact is known.
    pub(super) ruri: Option<Uri>,
    /// Our CSeq in this dialog.
    pub(super) cseq: u32,
    /// How offers to this party are keyed: leg A as it last offered (SDES or DTLS-SRTP), leg B
    /// as its route's `media_keying` says.
    pub(super) keying: OfferOptions,
}

impl DialogLeg {
    /// The To header for a request to the party (with its tag when known).
    pub(super) fn to_header(&self) -> Vec<u8> {
        let mut to = self.remote.clone();
        if !self.remote_tagged {
            if let Some(t) = &self.their_tag {
                to.extend_from_slice(format!(";tag={t}").as_bytes());
            }
        }
        to
    }

    /// The Request-URI of in-dialog requests: the party's Contact, else our initial R-URI.
    pub(super) fn request_uri(&self) -> Option<Uri> {
        self.target.clone().or_else(|| self.ruri.clone())
    }

    /// A new in-dialog request to the party in our CSeq space (incremented), with `via` on
    /// top and `contact` for target-refreshing methods. `None` without a Request-URI.
    pub(super) fn request(
        &mut self,
        method: Method,
        via: Vec<u8>,
        contact: &[u8],
    ) -> Option<Request> {
        self.cseq += 1;
        let uri = self.request_uri()?;
        let mut h = Headers::new();
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        h.push("From", self.local.clone());
        h.push("To", self.to_header());
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} {method}", self.cseq));
        if matches!(method, Method::Invite | Method::Update) {
            h.push("Contact", contact.to_vec());
        }
        Some(Request {
            method,
            uri,
            headers: h,
            body: Vec::new(),
        })
    }

    /// The ACK of a 2xx to a re-INVITE we sent this party with CSeq `seq`, carrying `sdp`.
    pub(super) fn ack(&self, seq: u32, via: Vec<u8>, sdp: Option<String>) -> Option<Request> {
        let uri = self.request_uri()?;
        let mut h = Headers::new();
        h.push("Via", via);
        h.push("Max-Forwards", "70");
        h.push("From", self.local.clone());
        h.push("To", self.to_header());
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{seq} ACK"));
        let body = match sdp {
            Some(sdp) => {
                h.push("Content-Type", "application/sdp");
                sdp.into_bytes()
            }
            None => Vec::new(),
        };
        Some(Request {
            method: Method::Ack,
            uri,
            headers: h,
            body,
        })
    }
}

/// An in-dialog offer relayed and not yet answered: the media plane holds one pending offer per
/// call, so a second one meets glare handling (491 or 500).
#[derive(Debug)]
pub(super) struct PendingOffer {
    /// The leg that sent it.
    pub(super) from: Side,
    /// Our client transaction towards the other leg.
    pub(super) branch: String,
    /// When it is given up (408 to the sender).
    pub(super) timer: TimerId,
}

/// A re-INVITE sent without SDP was answered with an offer in the 2xx: the answer comes in the
/// sender's ACK, and our ACK to the answering leg waits for it (RFC 3261 13.2.1).
#[derive(Debug)]
pub(super) struct DelayedAck {
    /// The leg that sent the 2xx with the offer (and gets our ACK with the answer).
    pub(super) answerer: Side,
    /// The offer's tag (the answerer's dialog tag).
    pub(super) offer_tag: String,
    /// The 2xx (its CSeq makes the ACK).
    pub(super) resp: Box<Response>,
}

/// One relayed call.
#[derive(Debug)]
pub(super) struct Call {
    /// Leg B's Call-ID, the key of the call here and in the media plane.
    pub(super) key: String,
    pub(super) state: State,
    /// The route the call took.
    pub(super) route: usize,
    /// The caller's and the callee's dialogs.
    pub(super) legs: [DialogLeg; 2],
    /// The caller's source address: leg A's in-dialog requests must come from it.
    pub(super) a_ip: IpAddr,
    /// The caller's INVITE (responses to it are built from its headers).
    pub(super) invite: Request,
    /// The branch of our INVITE on leg B (its CANCEL and non-2xx ACK reuse it).
    pub(super) b_branch: String,
    /// SDES suites allowed on this call (the trunk's, or `media.suites`).
    pub(super) suites: Vec<Profile>,
    /// The rewritten answer for leg A, once leg B has answered.
    pub(super) answer_sdp: Option<String>,
    pub(super) offer_pending: Option<PendingOffer>,
    pub(super) ack_offer: Option<DelayedAck>,
    /// Timer B while calling, the CANCEL wait while cancelling.
    pub(super) timer: Option<TimerId>,
    /// Branches of this call's client transactions.
    pub(super) txs: Vec<String>,
    /// How the call ends, once decided before it is gone (a CANCEL waiting for the 487).
    pub(super) outcome: Option<Outcome>,
}

impl Call {
    /// The party's leg.
    pub(super) fn leg(&self, side: Side) -> &DialogLeg {
        &self.legs[side]
    }
}

/// The first 8 characters of a call key, for logs.
pub(super) fn short(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}
