//! SDP (RFC 8866) as srtp-edge needs it: an owned model that parses a peer's session description,
//! gives typed access to the lines the media policy decides on, and writes it back with every line
//! it does not understand preserved in order.
//!
//! Everything here is pure: peer bytes in, typed values or a typed error out, never a panic.
//! The modules are:
//! - [`model`]: the line-preserving session/media model, its parser, writer and size limits;
//! - [`attr`]: typed views of `c=`, `a=rtcp`, `a=fingerprint`, `a=setup`, ICE and direction lines;
//! - [`crypto`]: the RFC 4568 `a=crypto` parser and writer (SDES keys, redacted in `Debug`);
//! - [`keys`]: fresh SDES key material from the OS random source;
//! - [`policy`]: the offer/answer decisions (SRTP only, rewrite to our ports, suite choice).

pub mod attr;
pub mod crypto;
pub mod keys;
pub mod model;
pub mod policy;

pub use attr::{Connection, Direction, Fingerprint, Proto, RtcpAttr, Setup};
pub use crypto::{CryptoAttr, CryptoError, KeyMaterial, KeyParam, Lifetime, Mki};
pub use keys::{generate_key, KeyGenError};
pub use model::{Line, MediaSection, Sdp, SdpError, MAX_LINES, MAX_MEDIA, MAX_SDP_LEN};
pub use policy::{
    choose_crypto, inspect_answer, inspect_offer, rewrite_answer, rewrite_offer, AnswerInfo,
    AnswerPlan, ChosenCrypto, DtlsInfo, LocalMedia, MediaInfo, OfferInfo, OfferPlan, PolicyError,
    SdesKey,
};
