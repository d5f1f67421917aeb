//! srtp-edge: an encrypted-only SIP-TLS / SRTP edge daemon.
//!
//! The protocol logic (SIP, SDP, SRTP, DTLS, the ng control protocol and the fork protocol) lives
//! in pure, sans-IO modules that are tested with RFC vectors; sockets, timers and tasks live in a
//! thin IO layer around them. See `DESIGN.md` in the shared design folder for the whole picture.
//!
//! `unsafe` code lives in three small modules only: the OpenSSL calls in `dtls::ffi`, the
//! epoll/eventfd/io_uring syscalls in `media::sys`, and `flock`/uid calls in `keys::sys`;
//! everything else is checked by the compiler.
#![deny(unsafe_code)]
#![forbid(unsafe_op_in_unsafe_fn)]
pub mod admin;
pub mod config;
pub mod control;
pub mod dtls;
pub mod fork;
pub mod keys;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod notify;
pub mod rand;
pub mod recording;
pub mod redact;
pub mod sdp;
pub mod side;
pub mod sip;
pub mod srtp;
pub mod tls;
