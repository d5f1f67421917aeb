//! SRTP and SRTCP (RFC 3711, RFC 6188, RFC 7714): a pure library with no IO and no clock, called
//! by the media workers on every packet.
//!
//! An [`SrtpContext`] is one direction of one stream set under one master key. It protects or
//! unprotects packets in place in the caller's buffer, keeps per-SSRC rollover counters and
//! replay windows in a table allocated once at creation, and never allocates per packet. The
//! AES-CM profiles use RustCrypto `aes`/`ctr`/`hmac`/`sha1` (AES-NI and SHA-NI detected at run
//! time) with the HMAC pads precomputed; the AEAD profiles use aws-lc-rs AES-GCM. Both were chosen
//! by measurement (`benches/srtp.rs`).

mod aes_cm;
mod cm;
mod context;
mod error;
mod gcm;
mod header;
mod kdf;
pub mod profile;
mod replay;
mod streams;
#[cfg(test)]
mod vectors;

pub use context::{ContextConfig, SrtpContext};
pub use error::Error;
pub use profile::Profile;
pub use replay::{MAX_WINDOW, MIN_WINDOW};
pub use streams::MAX_STREAMS;
