//! The hardened systemd unit: the directives the operators' checklists ask for are present, and
//! `systemd-analyze security --offline` rates the unit 2.0 or better.

use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/srtp-edge.service");

#[test]
fn unit_has_the_required_hardening() {
    let text = std::fs::read_to_string(UNIT).unwrap();
    for d in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=srtp-edge",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "LimitNOFILE=1048576",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text.lines().any(|l| l.trim() == d), "missing {d}");
    }
}

#[test]
fn systemd_analyze_rates_it_ok() {
    // systemd-analyze ships with systemd, which the test setup installs.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", UNIT])
        .output()
        .expect("systemd-analyze (package systemd) is installed by the test setup");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating in: {text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable rating: {line}"));
    assert!(score <= 2.0, "exposure {score} > 2.0: {line}");
}
