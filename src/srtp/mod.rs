//! SRTP and SRTCP (RFC 3711, RFC 6188, RFC 7714): a pure library with no IO and no clock, called
//! by the media workers on every packet.

pub mod profile;

pub use profile::Profile;
