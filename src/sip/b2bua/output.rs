//! What the B2BUA produces for its shell: messages to send ([`Transmit`]) and events to count
//! ([`Event`], summed in [`Stats`]), queued in the order they happen and drained by
//! `poll_transmit` / `poll_event`. The core records no metric itself: the shell turns events
//! into counters, as quinn's endpoint reads a connection's `stats()`.

use std::collections::VecDeque;

use crate::sip::message::{Request, Response};
use crate::sip::method::Method;

use super::Peer;

/// Bytes for one peer (dropped by the transport if that peer has no connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where they go.
    pub to: Peer,
    /// One serialized SIP message.
    pub bytes: Vec<u8>,
}

/// How a call ended, the label of `srtp_edge_sip_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered, then hung up by either party (or an agent call's backend).
    Answered,
    /// Refused before or by the callee (no route, bad request, an error final response).
    Rejected,
    /// Cancelled by the caller, or the callee's 2xx lost the race with a CANCEL.
    Cancelled,
    /// No final response within Timer B (or no agent backend in time).
    Timeout,
    /// The route target could not be reached, the media plane refused, or shutdown.
    Failed,
    /// A party offered or answered plain RTP (488).
    Plaintext,
    /// The media plane ended the call for lack of media.
    MediaTimeout,
}

impl Outcome {
    /// Every outcome, in [`Outcome::index`] order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Answered,
        Outcome::Rejected,
        Outcome::Cancelled,
        Outcome::Timeout,
        Outcome::Failed,
        Outcome::Plaintext,
        Outcome::MediaTimeout,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
            Outcome::Timeout => "timeout",
            Outcome::Failed => "failed",
            Outcome::Plaintext => "plaintext",
            Outcome::MediaTimeout => "media_timeout",
        }
    }

    /// Position in [`Outcome::ALL`] and in [`Stats::calls_ended`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Something the shell records: each maps to one increment of a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request was received (`srtp_edge_sip_requests_total{method}`; extension methods are
    /// counted as `other`).
    Request {
        /// The method label.
        method: &'static str,
    },
    /// A response was sent or relayed (`srtp_edge_sip_responses_total{status}`).
    Response {
        /// Its status code.
        status: u16,
    },
    /// A call ended, or an INVITE was refused before it became one
    /// (`srtp_edge_sip_calls_total{outcome}`).
    CallEnded {
        /// The call's key (leg B's Call-ID), when the call had been set up.
        key: Option<String>,
        /// How it ended.
        outcome: Outcome,
    },
}

/// Totals of what the B2BUA has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Responses sent or relayed.
    pub responses: u64,
    /// Requests sent (relayed or our own: INVITE, BYE, CANCEL, ACK...).
    pub requests_sent: u64,
    /// Calls ended (or INVITEs refused), by [`Outcome::index`].
    pub calls_ended: [u64; 7],
}

/// The queues behind `poll_transmit` and `poll_event`.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<Event>,
    pub(super) stats: Stats,
}

/// The label of a method in `srtp_edge_sip_requests_total`.
fn method_label(m: &Method) -> &'static str {
    match m {
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Options => "OPTIONS",
        Method::Register => "REGISTER",
        Method::Prack => "PRACK",
        Method::Update => "UPDATE",
        Method::Info => "INFO",
        Method::Subscribe => "SUBSCRIBE",
        Method::Notify => "NOTIFY",
        Method::Refer => "REFER",
        Method::Message => "MESSAGE",
        Method::Publish => "PUBLISH",
        Method::Extension(_) => "other",
    }
}

impl Output {
    /// Counts a received request.
    pub(super) fn received(&mut self, m: &Method) {
        self.stats.requests += 1;
        self.events.push_back(Event::Request {
            method: method_label(m),
        });
    }

    /// Sends a response (counted by status).
    pub(super) fn respond(&mut self, to: Peer, r: &Response) {
        self.stats.responses += 1;
        self.events.push_back(Event::Response { status: r.status });
        self.transmits.push_back(Transmit {
            to,
            bytes: r.to_bytes(),
        });
    }

    /// Sends a request.
    pub(super) fn request(&mut self, to: Peer, r: &Request) {
        self.stats.requests_sent += 1;
        self.transmits.push_back(Transmit {
            to,
            bytes: r.to_bytes(),
        });
    }

    /// Counts a call's end (or an INVITE refused before it became a call).
    pub(super) fn ended(&mut self, key: Option<&str>, outcome: Outcome) {
        self.stats.calls_ended[outcome.index()] += 1;
        self.events.push_back(Event::CallEnded {
            key: key.map(str::to_string),
            outcome,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_index_their_own_slot_and_labels_are_distinct() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        let labels: std::collections::HashSet<_> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
        assert_eq!(method_label(&Method::Extension("FOO".into())), "other");
    }
}
