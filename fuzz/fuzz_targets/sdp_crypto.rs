//! Fuzzes the RFC 4568 `a=crypto` parser: no panic, and an accepted line writes back to text
//! that parses to the same attribute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::sdp::CryptoAttr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = CryptoAttr::parse(text) {
        let again = CryptoAttr::parse(&c.to_attr_value()).expect("our own output parses");
        assert_eq!(again, c);
        let _ = c.usable_by_relay();
    }
});
