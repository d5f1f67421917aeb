//! Fuzzes whole ng datagrams: framing, bencode, typed request, plaintext rule and the reply
//! cache, as the control server will drive them. No panic on any input.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srtp_edge::config::DEFAULT_SUITES;
use srtp_edge::control::ng::{encode_reply, parse_datagram, refuses_plaintext, reply_error, reply_ok};
use srtp_edge::control::reply_cache::ReplyCache;

fuzz_target!(|data: &[u8]| {
    let mut cache = ReplyCache::new(4, 4096, Duration::from_secs(30));
    let now = Instant::now();
    match parse_datagram(data) {
        Ok((cookie, req)) => {
            let _ = req.sdes_suites(&DEFAULT_SUITES);
            let _ = req.received_from_addr();
            let reply = if refuses_plaintext(&req) {
                reply_error("plaintext media refused")
            } else {
                reply_ok()
            };
            cache.insert(cookie, encode_reply(cookie, &reply), now);
            assert!(cache.get(cookie, now).is_some());
            let _ = format!("{req:?}");
        }
        Err(e) => {
            if let Some(cookie) = e.cookie {
                let _ = encode_reply(cookie, &reply_error(&e.error.reply_reason()));
            }
        }
    }
});
