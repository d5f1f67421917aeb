//! The AI audio fork: call audio to a WSS backend (Twilio Media Streams or L16), and the
//! backend's audio back into the call.
//!
//! Layering follows the rest of the crate: [`codec`], [`resample`], [`protocol`], [`playout`] and
//! [`session`] are pure and tested message by message; [`client`] is the IO shell (one tokio task
//! per fork, TLS 1.3 WebSocket) that the media worker talks to through lock-free bounded queues,
//! so the media path never waits for a backend.

pub mod client;
pub mod codec;
pub mod config;
pub mod metrics;
pub mod playout;
pub mod protocol;
pub mod resample;
pub mod session;

pub use client::{spawn_fork, Backend, CallInfo, ForkEvent, ForkHandle, ForkMode, ForkStats};
pub use codec::G711;
pub use protocol::{Protocol, Track};
