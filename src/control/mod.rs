//! The ng control protocol (rtpengine-compatible), as pure code: the bencode codec, typed
//! requests and replies, and the retransmission cache. The UDP server that owns the socket and
//! drives calls lives in the IO layer and uses these.

pub mod bencode;
pub mod ng;
pub mod reply_cache;
pub mod server;
