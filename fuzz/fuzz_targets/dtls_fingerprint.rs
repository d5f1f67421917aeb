//! SDP DTLS attributes from a hostile peer: `a=fingerprint`, `a=setup`, `a=tls-id`.
//! Never panics; whatever parses prints back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::dtls::{Fingerprint, PeerFingerprints, Setup, TlsId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fp) = Fingerprint::parse(text) {
        let again = Fingerprint::parse(&fp.to_string()).expect("own output parses");
        assert_eq!(again, fp);
        assert_eq!(fp.as_bytes().len(), fp.hash().output_len());
    }
    if let Ok(set) = PeerFingerprints::from_sdp_lines(text.lines()) {
        assert!(!set.is_empty());
        assert!(set.len() <= srtp_edge::dtls::fingerprint::MAX_FINGERPRINTS);
        let _ = set.matches(data);
    }
    if let Ok(s) = Setup::parse(text) {
        assert_eq!(Setup::parse(s.as_str()), Ok(s));
    }
    if let Ok(id) = TlsId::parse(text) {
        assert_eq!(TlsId::parse(id.as_str()), Ok(id.clone()));
    }
});
