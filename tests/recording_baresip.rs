//! baresip → srtp-edge B2BUA → baresip over SIP-TLS (SDES SRTP, stock G.711) on a route with
//! `record = true`: the call is recorded, sealed, verifies, exports as a WAV whose left channel
//! carries the caller's tone and right channel the callee's, and the independent Python reader
//! decrypts it too. The tenant comes from `[recording] trunk_tenants`.

mod common;
#[path = "recording/mod.rs"]
mod recording;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::b2bua::start_edge_cfg;
use common::interop::{
    fill, free_port_pair, interop_dir, make_certs, port_range, tcp_up, wait_until, write_tone_wav,
    Proc, CALLEE_TONE_HZ, CALLER_TONE_HZ,
};
use recording::{cli, tone_level, wait_sealed, wav_channels};

fn write_ua(d: &Path, side: &str, rtp: (u16, u16)) -> u16 {
    let tpl = interop_dir().join("baresip");
    let port = free_port_pair();
    let vars = [
        ("SIP_PORT", port.to_string()),
        ("CERT", d.join("cert+key.pem").display().to_string()),
        ("CA", d.join("ca.pem").display().to_string()),
        (
            "TONE_WAV",
            d.join(format!("{side}.wav")).display().to_string(),
        ),
        ("RTP_MIN", rtp.0.to_string()),
        ("RTP_MAX", rtp.1.to_string()),
        (
            "SND_PATH",
            d.join(format!("rec_{side}")).display().to_string(),
        ),
    ];
    std::fs::create_dir_all(d.join(side)).unwrap();
    std::fs::create_dir_all(d.join(format!("rec_{side}"))).unwrap();
    for f in ["config", "accounts"] {
        let t = std::fs::read_to_string(tpl.join(side).join(f)).unwrap();
        std::fs::write(d.join(side).join(f), fill(&t, &vars)).unwrap();
    }
    port
}

#[test]
fn baresip_call_on_a_recording_route_is_recorded_both_tracks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    write_tone_wav(&d.join("caller.wav"), CALLER_TONE_HZ, 60);
    write_tone_wav(&d.join("callee.wav"), CALLEE_TONE_HZ, 60);
    let (callee_rtp, caller_rtp) = (port_range(100), port_range(100));
    let port = write_ua(d, "callee", callee_rtp);
    let mut cmd = Command::new("baresip");
    cmd.arg("-f").arg(d.join("callee")).args(["-t", "60"]);
    let mut callee = Proc::spawn("callee", cmd, &d.join("callee.log")).unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", port + 1).parse().unwrap();
    assert!(
        wait_until(&mut callee, Duration::from_secs(30), |_| tcp_up(tls)),
        "callee not listening"
    );
    let edge = start_edge_cfg(
        d,
        &format!(
            "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\n\
             [[routes]]\ntarget = \"sip:{tls};transport=tls\"\nrecord = true\n\
             [recording]\nenabled = true\ntrunk_tenants = {{ lo = \"acme\" }}\n"
        ),
    );
    let config = edge.daemon.dir.path().join("srtp-edge.toml");

    let call_secs = 8;
    write_ua(d, "caller", caller_rtp);
    let mut cmd = Command::new("baresip");
    cmd.arg("-f")
        .arg(d.join("caller"))
        .args(["-t", &call_secs.to_string()])
        .arg("-e")
        .arg(format!("/dial sip:callee@{};transport=tls", edge.sip));
    let mut caller = Proc::spawn("caller", cmd, &d.join("caller.log")).unwrap();
    let established = wait_until(&mut caller, Duration::from_secs(20), |p| {
        p.log_text().contains("Call established")
    });
    caller.wait_exit(Duration::from_secs(call_secs + 20));
    let released = edge.wait_no_media(Duration::from_secs(10));
    callee.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let logs = format!(
        "===== caller =====\n{}\n===== srtp-edge =====\n{}",
        caller.log_text(),
        edge.daemon.log_text()
    );
    assert!(established, "call not established\n{logs}");
    assert!(released, "media still held\n{logs}");

    let ids = wait_sealed(&config, 1);
    let (ok, out) = cli(&config, &["recording", "list"]);
    assert!(
        ok && out.contains("acme") && out.contains("file:recordings/acme/v1"),
        "{out}"
    );
    let (ok, out) = cli(&config, &["recording", "verify", &ids[0]]);
    assert!(ok, "{out}\n{logs}");

    let wav = d.join("export.wav");
    let (ok, out) = cli(
        &config,
        &[
            "recording",
            "export",
            &ids[0],
            "--wav",
            wav.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let (rate, left, right) = wav_channels(&wav);
    let (l_own, l_other) = (
        tone_level(&left, f64::from(rate), CALLER_TONE_HZ),
        tone_level(&left, f64::from(rate), CALLEE_TONE_HZ),
    );
    let (r_own, r_other) = (
        tone_level(&right, f64::from(rate), CALLEE_TONE_HZ),
        tone_level(&right, f64::from(rate), CALLER_TONE_HZ),
    );
    eprintln!("left: caller tone {l_own:.0}, callee tone {l_other:.0}; right: callee tone {r_own:.0}, caller tone {r_other:.0}");
    assert!(
        l_own > 300.0 && l_own > 20.0 * l_other,
        "left channel is not the caller\n{logs}"
    );
    assert!(
        r_own > 300.0 && r_own > 20.0 * r_other,
        "right channel is not the callee\n{logs}"
    );

    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/recording/read_recording.py"
        ))
        .arg(
            edge.daemon
                .state
                .join(format!("recordings/{}.srec", ids[0])),
        )
        .arg("--kek-file")
        .arg(edge.daemon.state.join("keys/kek"))
        .args(["--tone", "440", "--tone", "1000"])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["header"]["call"]["source"], "sip", "{r}");
    assert_eq!(r["header"]["call"]["route"], "route0", "{r}");
    assert!(
        r["header"]["call"]["to"]
            .as_str()
            .unwrap()
            .starts_with("***"),
        "{r}"
    );
}
