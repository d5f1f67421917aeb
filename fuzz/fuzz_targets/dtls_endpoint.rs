//! Datagrams from a hostile peer into a DTLS-SRTP `Endpoint` (either role), with the clock
//! moving: never panics, never hands out keys without a completed, verified handshake.
//!
//! Input: byte 0 picks the role; then records of [u16 length][datagram] with a time step taken
//! from each length's top bits.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srtp_edge::dtls::{
    DtlsConfig, DtlsIdentity, Endpoint, EndpointConfig, PeerFingerprints, Role, State,
};

fn fixtures() -> &'static (DtlsIdentity, DtlsConfig, PeerFingerprints) {
    static F: OnceLock<(DtlsIdentity, DtlsConfig, PeerFingerprints)> = OnceLock::new();
    F.get_or_init(|| {
        let id = DtlsIdentity::generate().expect("identity");
        let cfg = EndpointConfig::default().build().expect("config");
        let trust =
            PeerFingerprints::from_fingerprints([id.fingerprint().clone()]).expect("fingerprint");
        (id, cfg, trust)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let (id, cfg, trust) = fixtures();
    let role = if first & 1 == 0 {
        Role::Client
    } else {
        Role::Server
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut ep = Endpoint::new(id, role, trust.clone(), cfg, now);
    while rest.len() >= 2 {
        let header = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(header & 0x0fff).min(rest.len() - 2);
        now += Duration::from_millis(u64::from(header >> 12) * 250);
        ep.handle_datagram(now, &rest[2..2 + len]);
        while ep.poll_transmit().is_some() {}
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        rest = &rest[2 + len..];
    }
    if ep.srtp_keys().is_some() {
        assert!(matches!(ep.state(), State::Connected | State::Closed));
    }
    if now >= t0 + Duration::from_secs(10) {
        assert_ne!(ep.state(), &State::Handshaking);
    }
});
