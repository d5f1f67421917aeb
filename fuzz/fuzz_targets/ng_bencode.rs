//! Fuzzes the bencode decoder: no panic, and a decoded value re-encodes canonically to a
//! document that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::control::bencode::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Value::decode(data) {
        let enc = v.encode();
        assert_eq!(Value::decode(&enc).expect("our own output decodes"), v);
    }
});
