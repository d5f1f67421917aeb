//! Fuzzes the SDP parser, the typed accessors and the offer/answer policy: no panic, and
//! whatever parses writes back to text that parses to the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::config::DEFAULT_SUITES;
use srtp_edge::sdp::{choose_crypto, inspect_answer, inspect_offer, Sdp};

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = Sdp::parse_bytes(data) else {
        return;
    };
    let again = Sdp::parse(&sdp.write()).expect("our own output parses");
    assert_eq!(again, sdp);
    if let Ok(info) = inspect_offer(&sdp) {
        for m in info.media.iter().filter(|m| m.accepted) {
            let _ = choose_crypto(m, &DEFAULT_SUITES);
        }
    }
    let offered = vec![DEFAULT_SUITES.to_vec(); sdp.media.len()];
    let _ = inspect_answer(&sdp, &offered);
});
