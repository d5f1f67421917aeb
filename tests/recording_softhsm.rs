//! Recording with the KEK in a PKCS#11 token (SoftHSM2): the daemon wraps each recording's key
//! inside the token; `keys rotate` makes new recordings use version 2 while old ones still open;
//! `recording rewrap` moves an old recording to version 2 without touching its audio; `shred`
//! makes it unreadable; every key use is in the audit log, whose chain verifies.

mod common;
#[path = "recording/mod.rs"]
mod recording;
#[path = "softhsm/mod.rs"]
mod softhsm;

use common::Daemon;
use recording::{cli, tone_call, wait_sealed};

#[test]
fn softhsm_kek_records_rotates_rewraps_and_shreds() {
    let hsm = softhsm::SoftHsm::new();
    // The daemon and the CLI inherit it; this binary has only this test.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let d = Daemon::start(&format!(
        "[media]\nport_min = 43000\nport_max = 43999\n\
         [[keys.providers]]\nname = \"hsm\"\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"srtp-edge\"\npin_file = \"{}\"\n\
         [recording]\nenabled = true\nkey_provider = \"hsm\"\n",
        softhsm::MODULE,
        hsm.pin_file.display()
    ));
    let config = d.dir.path().join("srtp-edge.toml");
    let call = tone_call(d.ng.unwrap(), &["--start-recording", "--packets", "50"]);
    assert_eq!(call["ok"], true, "{call}");
    let first = wait_sealed(&config, 1)[0].clone();
    // No key file: the KEK lives in the token only.
    assert!(!d.state.join("keys/kek").exists());
    let (ok, out) = cli(&config, &["recording", "list"]);
    assert!(ok && out.contains("hsm:recordings/default/v1"), "{out}");

    let (ok, out) = cli(&config, &["keys", "rotate", "--tenant", "default"]);
    assert!(ok && out.contains("hsm:recordings/default/v2"), "{out}");
    let call = tone_call(d.ng.unwrap(), &["--start-recording", "--packets", "50"]);
    assert_eq!(call["ok"], true, "{call}");
    let ids = wait_sealed(&config, 2);
    let (_, out) = cli(&config, &["recording", "list"]);
    assert!(
        out.contains("hsm:recordings/default/v2"),
        "new recordings use v2: {out}"
    );
    // The v1 recording still opens.
    let (ok, out) = cli(&config, &["recording", "verify", &first]);
    assert!(ok, "{out}");

    // Rewrap: the old recording moves to v2; its chunks are byte for byte the same.
    let path = d.state.join(format!("recordings/{first}.srec"));
    let before = std::fs::read(&path).unwrap();
    let (ok, out) = cli(&config, &["recording", "rewrap", "--all"]);
    assert!(ok && out.contains("re-wrapped"), "{out}");
    let after = std::fs::read(&path).unwrap();
    assert_eq!(before.len(), after.len());
    let h = u32::from_be_bytes(before[10..14].try_into().unwrap()) as usize;
    let k = u16::from_be_bytes(before[14 + h..16 + h].try_into().unwrap()) as usize;
    assert_eq!(before[..16 + h], after[..16 + h], "header unchanged");
    assert_ne!(
        before[16 + h..16 + h + k],
        after[16 + h..16 + h + k],
        "key block re-wrapped"
    );
    assert_eq!(before[16 + h + k..], after[16 + h + k..], "audio untouched");
    let (_, out) = cli(&config, &["recording", "list"]);
    assert!(!out.contains("/v1"), "{out}");
    let (ok, out) = cli(&config, &["recording", "verify", &first]);
    assert!(ok, "{out}");

    // Shred one: export fails, the other still verifies.
    let (ok, out) = cli(&config, &["recording", "shred", &first]);
    assert!(ok, "{out}");
    let wav = d.dir.path().join("x.wav");
    let (ok, out) = cli(
        &config,
        &[
            "recording",
            "export",
            &first,
            "--wav",
            wav.to_str().unwrap(),
        ],
    );
    assert!(!ok && out.contains("shredded"), "{out}");
    let other = ids.iter().find(|i| **i != first).unwrap();
    let (ok, out) = cli(&config, &["recording", "verify", other]);
    assert!(ok, "{out}");

    let (ok, out) = cli(&config, &["audit", "verify"]);
    assert!(ok, "{out}");
    let log = std::fs::read_to_string(d.state.join("keys/audit.log")).unwrap();
    for op in [
        "\"op\":\"wrap\"",
        "\"op\":\"unwrap\"",
        "\"op\":\"rotate\"",
        "\"op\":\"shred\"",
        "\"purpose\":\"rewrap\"",
    ] {
        assert!(log.contains(op), "{op} missing:\n{log}");
    }
}
