//! The media engine: every call's media is anchored here; each leg has its own SRTP keys, every
//! packet is authenticated and decrypted on the way in and re-encrypted on the way out.

pub mod batch;
pub mod calls;
pub mod demux;
pub mod dtls_leg;
pub mod engine;
pub mod ice;
pub mod latch;
pub mod ports;
pub mod relay;
// The epoll, eventfd and io_uring syscalls: the only unsafe code of the media plane.
#[allow(unsafe_code)]
pub mod sys;
pub mod worker;
