//! A recording disk that fills up never touches the call: the daemon runs in a private mount
//! namespace whose recordings directory is a 64 KiB tmpfs; a 10-second recorded call between
//! libsrtp peers loses no packet while the recording fails (`write_error` drops counted, the
//! file ends where the disk did). Needs root (mount namespace), as CI runs.

mod common;
#[path = "recording/mod.rs"]
mod recording;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recording::tone_call;

#[test]
fn a_full_recording_disk_costs_the_call_no_packet() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot make a mount namespace; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", common::free_tcp_port())
        .parse()
        .unwrap();
    let ng: SocketAddr = format!("127.0.0.1:{}", common::free_udp_port())
        .parse()
        .unwrap();
    let sip = common::free_tcp_port();
    let cfg = dir.path().join("srtp-edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\n[admin]\nlisten = [\"{admin}\"]\n[control]\nlisten = [\"{ng}\"]\n\
             [sip]\nlisten = [\"127.0.0.1:{sip}\"]\n[media]\nport_min = 44000\nport_max = 44999\n\
             [recording]\nenabled = true\ndirectory = {:?}\nchunk_ms = 100\n",
            state.display().to_string(),
            rec.display().to_string()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount -t tmpfs -o size=64k,mode=0700 tmpfs \"$0\" && exec \"$1\" run -c \"$2\"")
        .arg(&rec)
        .arg(env!("CARGO_BIN_EXE_srtp-edge"))
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // Wait for ng.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 256];
    loop {
        assert!(Instant::now() < deadline, "daemon not up:\n{}", logs());
        if let Ok(Some(s)) = child.try_wait() {
            panic!("daemon exited ({s}):\n{}", logs());
        }
        let _ = sock.send_to(b"r d7:command4:pinge", ng);
        if sock.recv(&mut buf).is_ok() {
            break;
        }
    }

    let call = tone_call(ng, &["--start-recording", "--packets", "500"]);
    assert_eq!(call["ng"]["start_recording"], "ok", "{call}\n{}", logs());
    assert_eq!(
        call["got"]["a"],
        500,
        "relay loss A→B with the disk full: {call}\n{}",
        logs()
    );
    assert_eq!(
        call["got"]["b"],
        500,
        "relay loss B→A with the disk full: {call}\n{}",
        logs()
    );

    std::thread::sleep(Duration::from_millis(1500));
    let token = std::fs::read_to_string(state.join("admin-token")).unwrap();
    let cfg_tls = common::client(
        common::roots_from(&state.join("ca.pem")),
        &[&rustls::version::TLS13],
    );
    let mut s = common::connect(cfg_tls, admin).unwrap();
    let (status, _, metrics) = common::http_get(
        &mut s,
        "/metrics",
        Some(&format!("Bearer {}", token.trim())),
    );
    // SAFETY: kill(2) on the pid we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(status, 200);
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("srtp_edge_recording_frames_dropped_total{reason=\"write_error\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "no write error counted:\n{metrics}\n{}",
        logs()
    );
    assert!(logs().contains("recording write failed"), "{}", logs());
}
