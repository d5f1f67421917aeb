//! DTLS-SRTP keying (RFC 5763, RFC 5764, RFC 8842) for a media leg, sans-IO.
//!
//! - [`cert`]: our certificate and its `a=fingerprint`;
//! - [`fingerprint`]: the peer's `a=fingerprint` set and the certificate check;
//! - [`setup`]: `a=setup` roles and `a=tls-id` change detection;
//! - [`endpoint`]: the handshake state machine of one leg;
//! - `ffi`: the OpenSSL calls the `openssl` crate does not wrap, and OpenSSL's retransmission
//!   timer moved onto the caller's clock (the only `unsafe` code here);
//! - `pipe`: the in-memory datagram pipe between OpenSSL and an endpoint;
//! - [`keys`]: the exported SRTP master keys and salts, split by role.
//!
//! The media worker owns the socket and the clock and drives an [`Endpoint`]; the SDP layer
//! decides roles and when a new association (and so a new `Endpoint`) is needed.

pub mod cert;
pub mod endpoint;
#[allow(unsafe_code)]
mod ffi;
pub mod fingerprint;
pub mod keys;
mod pipe;
pub mod setup;

pub use cert::{DtlsIdentity, IdentityError};
pub use endpoint::{
    DtlsConfig, Endpoint, EndpointConfig, EndpointEvent, EndpointStats, FailReason, State,
    MAX_DATAGRAM,
};
pub use fingerprint::{Fingerprint, FingerprintError, HashFunction, PeerFingerprints};
pub use keys::{KeyError, SrtpKeys, EXPORTER_LABEL};
pub use setup::{Role, Setup, SetupError, TlsId, TlsIdError};
