//! The hermetic tier: every test that needs no process besides this one — no srtp-edge daemon,
//! no real peer (baresip, Kamailio, SIPp, aiortc, libsrtp, openssl), no network beyond
//! in-memory pipes and the media engine's loopback sockets — in one test binary (as rustls
//! does), so that the whole tier builds and links once and runs in well under a minute:
//!
//! ```sh
//! cargo test --lib --test hermetic     # the library's unit tests and this binary
//! ```
//!
//! The other test binaries (`tests/*.rs`) start the srtp-edge binary and, most of them, real
//! peers; `./interop/test-all.sh` runs everything (see README.md).

#[path = "hermetic/sim.rs"]
mod sim;
#[path = "hermetic/sip_calls.rs"]
mod sip_calls;

#[path = "hermetic/dtls_endpoint.rs"]
mod dtls_endpoint;
#[path = "hermetic/ng_bencode.rs"]
mod ng_bencode;
#[path = "hermetic/ng_protocol.rs"]
mod ng_protocol;
#[path = "hermetic/sdp_policy.rs"]
mod sdp_policy;
#[path = "hermetic/sdp_properties.rs"]
mod sdp_properties;
#[path = "hermetic/sip_message.rs"]
mod sip_message;
#[path = "hermetic/sip_rfc4475.rs"]
mod sip_rfc4475;
#[path = "hermetic/srtp_alloc.rs"]
mod srtp_alloc;
#[path = "hermetic/srtp_malformed.rs"]
mod srtp_malformed;
#[path = "hermetic/srtp_webrtc.rs"]
mod srtp_webrtc;
