//! Fuzzes the SIP message parser, validator, response builder and serializer: no panic, and a
//! message that parses must survive a serialize/parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::sip::validate::{inspect, inspect_response};
use srtp_edge::sip::Message;

fuzz_target!(|data: &[u8]| {
    match Message::parse(data) {
        Ok(m) => {
            match &m {
                Message::Request(r) => {
                    if let Err(rej) = inspect(r) {
                        let resp = rej.reply(r, Some(b"fz"));
                        assert!(Message::parse(&resp.to_bytes()).is_ok());
                    }
                    let _ = r.reply(200, Some(b"fz")).to_bytes();
                }
                Message::Response(r) => {
                    let _ = inspect_response(r);
                }
            }
            let out = m.to_bytes();
            let again = Message::parse(&out).expect("serialized message parses");
            assert_eq!(again.to_bytes(), out, "serialization is stable");
        }
        Err(e) => {
            if let Some(resp) = e.reply(Some(b"fz")) {
                let _ = Message::parse(&resp.to_bytes());
            }
        }
    }
});
