//! The SIP message layer: a strict parser and serializer over bytes, stream framing for SIP over
//! TLS, and request validation with the statuses RFC 3261 and RFC 4475 ask for. Pure functions,
//! no IO: the transport and the B2BUA are built on top of it.
//!
//! Typical use on a connection: [`framing::Framer`] cuts frames; [`message::Message::parse`] turns
//! one into a request or response (or a [`error::ParseError`] whose `reply()` is the 400/505 to
//! send); [`validate::inspect`] decides 400/416/420/483/...; [`message::Request::reply`] builds
//! responses.

pub mod b2bua;
pub mod error;
pub mod framing;
pub mod header;
pub mod message;
pub mod method;
pub mod name_addr;
pub mod response;
pub mod routing;
pub mod scan;
pub mod transport;
pub mod typed;
pub mod uri;
pub mod validate;
pub mod via;

pub use error::ParseError;
pub use framing::{Frame, FrameError, Framer, Limits};
pub use header::Headers;
pub use message::{Message, Request, Response};
pub use method::Method;
pub use validate::{inspect, inspect_response, Reject};

/// The origin of the simulated clock in the B2BUA's unit tests: any instant will do, read once
/// here so that the state machine's modules never read the clock, not even in their tests.
#[cfg(test)]
pub(crate) fn test_origin() -> std::time::Instant {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(std::time::Instant::now)
}
