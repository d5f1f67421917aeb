//! The media engine: every call's media is anchored here; each leg has its own SRTP keys, every
//! packet is authenticated and decrypted on the way in and re-encrypted on the way out.

pub mod calls;
pub mod demux;
pub mod dtls_leg;
pub mod engine;
pub mod ice;
pub mod latch;
pub mod ports;
pub mod relay;
// Until the epoll/eventfd calls move to their own `sys` module (perf, issue 19).
#[allow(unsafe_code)]
pub mod worker;
