//! The `pkcs11` KEK provider against a real token (SoftHSM2): KEKs are generated in the token,
//! cannot be read out, wrap and unwrap inside it, rotate, and every use is in the audit log.

#[path = "softhsm/mod.rs"]
mod softhsm;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use srtp_edge::keys::pkcs11::{readable_kek_values, Pkcs11Provider};
use srtp_edge::keys::{audit, Actor, AuditLog, DataClass, KekProvider, Keys, Scope};

#[test]
fn softhsm_keks_are_non_extractable_rotate_and_are_audited() {
    let hsm = softhsm::SoftHsm::new();
    // The module reads its configuration from the environment when it is loaded (once per
    // process); this test binary has only this test, so setting it here is safe.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let p = Arc::new(
        Pkcs11Provider::open(
            "hsm",
            Path::new(softhsm::MODULE),
            "srtp-edge",
            &hsm.pin_file,
        )
        .unwrap(),
    );
    let log = hsm.dir.path().join("audit.log");
    let mut providers: HashMap<String, Arc<dyn KekProvider>> = HashMap::new();
    providers.insert("hsm".into(), p.clone());
    let keys = Keys::new(providers, AuditLog::open(&log).unwrap(), Actor::Daemon);
    let acme = Scope::new(DataClass::Recordings, "acme").unwrap();

    let (dk, wrapped) = keys.new_data_key("hsm", &acme, "rec-1", "record").unwrap();
    assert_eq!(wrapped.kek.to_string(), "hsm:recordings/acme/v1");
    // The token refuses to give out the KEK's value.
    assert_eq!(
        readable_kek_values(&p).unwrap(),
        0,
        "a KEK value was readable"
    );

    let back = keys.unwrap(&wrapped, "rec-1", "export").unwrap();
    assert_eq!(back.bytes(), dk.bytes());
    // Bound to its object.
    assert!(keys.unwrap(&wrapped, "rec-2", "export").is_err());

    // Rotation: new keys under v2, the old wrapped key still opens, rewrap moves it to v2.
    assert_eq!(keys.rotate("hsm", &acme).unwrap().version, 2);
    let (_, w2) = keys.new_data_key("hsm", &acme, "rec-2", "record").unwrap();
    assert_eq!(w2.kek.version, 2);
    assert!(keys.unwrap(&wrapped, "rec-1", "export").is_ok());
    let re = keys.rewrap(&wrapped, "rec-1").unwrap().expect("rewrapped");
    assert_eq!(re.kek.version, 2);
    assert_eq!(
        keys.unwrap(&re, "rec-1", "export").unwrap().bytes(),
        dk.bytes()
    );
    assert!(
        keys.rewrap(&re, "rec-1").unwrap().is_none(),
        "already current"
    );

    // Other tenants and classes have their own KEKs.
    let other = Scope::new(DataClass::CallState, "acme").unwrap();
    let (_, w3) = keys.new_data_key("hsm", &other, "call-1", "seal").unwrap();
    assert_eq!(w3.kek.to_string(), "hsm:call-state/acme/v1");
    let listed = p.list().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");

    // Every use was logged and the chain holds.
    let v = audit::verify(&log).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(v.entries >= 9, "{text}");
    assert!(text.contains("\"op\":\"rotate\""));
    assert!(
        !text.contains(&hex::encode(dk.bytes())),
        "key material in the audit log"
    );
}
