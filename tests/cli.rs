//! The command line: `check-config` on good and broken files (exit code 2, one line per problem
//! naming the key, nothing started), `--version`, `--help`.

use std::process::Command;

fn srtp_edge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_srtp-edge"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, text).unwrap();
    let (code, _, err) = srtp_edge(&["check-config", "-c", f.to_str().unwrap()]);
    (code, err)
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/srtp-edge.toml");
    let (code, out, err) = srtp_edge(&["check-config", "-c", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));
}

#[test]
fn broken_configs_name_the_key_and_exit_2() {
    let cases = [
        (
            "[admin]\nlisten = [\"127.0.0.1:9443\"]\nbogus = 1\n",
            "admin.bogus",
        ),
        ("[tls]\nmin_version = \"1.1\"\n", "tls.min_version"),
        ("[media]\nport_min = 70000\n", "media.port_min"),
        ("[sip]\nlisten = [\"127.0.0.1:70000\"]\n", "sip.listen[0]"),
        (
            "[tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"\n",
            "tls.cert_file",
        ),
    ];
    for (text, key) in cases {
        let (code, err) = check(text);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(&format!("config: {key}:")), "{text}: {err}");
    }
    // Several problems: one line each.
    let (code, err) =
        check("[tls]\nmin_version = \"1.0\"\n[media]\nport_max = 99999\nsuites = [\"NULL\"]\n");
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn run_with_a_broken_config_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        format!(
            "state_dir = {:?}\n[tls]\nmin_version = \"1.1\"\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    let (code, _, err) = srtp_edge(&["run", "-c", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        !state.exists(),
        "nothing may be created for a broken config"
    );
}

#[test]
fn version_and_help() {
    let (code, out, _) = srtp_edge(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    let (code, out, _) = srtp_edge(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("check-config") && out.contains("run"));
}
