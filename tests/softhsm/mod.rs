//! A throw-away SoftHSM2 token for tests: its own config and token directory under a temp dir,
//! a token labelled `srtp-edge`, a 0600 PIN file. Needs Debian's `softhsm2` (interop/install-peers.sh).
#![allow(dead_code)] // each test binary uses a part of these helpers

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// The SoftHSM2 PKCS#11 module Debian installs.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A token in a temp dir; `conf` must be exported as `SOFTHSM2_CONF` to every process using it.
pub struct SoftHsm {
    /// The temp dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// The softhsm2.conf.
    pub conf: PathBuf,
    /// The user PIN file (0600).
    pub pin_file: PathBuf,
}

impl SoftHsm {
    /// Initialises a fresh token labelled `srtp-edge`.
    pub fn new() -> SoftHsm {
        assert!(
            std::path::Path::new(MODULE).exists(),
            "SoftHSM2 missing: run interop/install-peers.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                "srtp-edge",
                "--so-pin",
                "12345678",
                "--pin",
                "87654321",
            ])
            .output()
            .expect("softhsm2-util");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "87654321\n").unwrap();
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        SoftHsm {
            dir,
            conf,
            pin_file,
        }
    }
}
