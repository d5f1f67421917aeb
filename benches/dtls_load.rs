//! DTLS-SRTP handshakes through the ng control protocol, srtp-edge against Debian's rtpengine
//! (userspace, `--table=-1`) in the same run, with the same client.
//!
//! Each DTLS call: party A offers SDES (`RTP/SAVP`) with the ng flags `DTLS=passive`,
//! `transport-protocol=UDP/TLS/RTP/SAVP` and `ICE=remove`, so the relay offers DTLS-SRTP to
//! party B; B answers `a=setup:active` with its certificate's fingerprint and runs the handshake
//! as the DTLS client (srtp-edge's own sans-IO endpoint over OpenSSL, one ECDSA P-256 identity)
//! against the relay's port, checking the relay's certificate against the relay's SDP. Both
//! relays use an ECDSA P-256 certificate (rtpengine `--dtls-cert-cipher=prime256v1`).
//!
//! Reported per relay:
//! - `sequential`: one handshake at a time, latency p50/p99 (first ClientHello sent to the
//!   client's handshake complete, which needs the relay's Finished);
//! - `burst`: 100 handshakes started at once (calls set up over ng first): handshakes per
//!   second over the burst, latency p50/p99 inside it, the relay's CPU time per handshake;
//! - `under load`: N SDES calls relaying 50 packets/s per direction (A on
//!   AES_CM_128_HMAC_SHA1_80, B on AES_CM_128_HMAC_SHA1_32, as in `relay_load`) while a
//!   100-handshake burst (ng setup included) runs: loss on the running calls over the whole run
//!   and for packets sent during the burst, and relay latency p50/p99 before vs during it.
//!
//! Run: `cargo bench --bench dtls_load -- [--n 300] [--burst 100] [--calls 100]
//! [--only srtp-edge|rtpengine]`
//!
//! The ng client, SDP scanning and bencode codec are deliberately independent of srtp-edge's own
//! (as in `relay_load`), so the harness also checks that srtp-edge speaks ng as rtpengine does.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use srtp_edge::dtls::{
    DtlsConfig, DtlsIdentity, Endpoint, EndpointConfig, PeerFingerprints, Role, State,
};
use srtp_edge::srtp::{ContextConfig, Profile, SrtpContext};

#[path = "common/ng_client.rs"]
mod ng_client;
use ng_client::{get_str, s, Ng, B};

// ---------------------------------------------------------------------------------------------
// SDP.

fn sdes_sdp(origin: u32, port: u16, tag: u32, suite: Profile, key: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!(
        "v=0\r\no=- {origin} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n\
         a=crypto:{tag} {} inline:{b64}\r\n",
        suite.sdes_name()
    )
}

fn dtls_answer_sdp(port: u16, fingerprint: &str) -> String {
    format!(
        "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n\
         a=setup:active\r\na=fingerprint:{fingerprint}\r\n"
    )
}

/// One `a=crypto` line: tag, suite, key||salt.
type Crypto = (u32, Profile, Vec<u8>);

/// The relay's media address, crypto lines and fingerprint lines.
fn scan_sdp(sdp: &str) -> Option<(SocketAddr, Vec<Crypto>, Vec<String>)> {
    let mut ip = None;
    let mut port = None;
    let mut cryptos = Vec::new();
    let mut fps = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.trim().parse::<std::net::IpAddr>().ok();
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split(' ').next()?.parse::<u16>().ok();
        } else if line.starts_with("a=fingerprint:") {
            fps.push(line.to_string());
        } else if let Some(c) = line.strip_prefix("a=crypto:") {
            let mut it = c.split_whitespace();
            let tag = it.next()?.parse().ok()?;
            let Some(suite) = Profile::from_sdes_name(it.next()?) else {
                continue;
            };
            let inline = it.next()?.strip_prefix("inline:")?;
            let b64 = inline.split('|').next()?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
                .ok()?;
            cryptos.push((tag, suite, key));
        }
    }
    Some((SocketAddr::new(ip?, port?), cryptos, fps))
}

fn random_key(p: Profile) -> Vec<u8> {
    let mut k = vec![0u8; p.key_salt_len()];
    getrandom::fill(&mut k).expect("OS randomness");
    k
}

// ---------------------------------------------------------------------------------------------
// DTLS calls.

/// Party B of a DTLS call: its socket, the relay's port facing it and the relay's fingerprints.
struct DtlsCall {
    id: String,
    sock: UdpSocket,
    relay: SocketAddr,
    relay_fps: PeerFingerprints,
}

struct Client {
    id: DtlsIdentity,
    cfg: DtlsConfig,
}

fn setup_dtls_call(ng: &mut Ng, n: usize, client: &Client) -> Result<DtlsCall, String> {
    let a = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let b = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let pa = a.local_addr().map_err(|e| e.to_string())?.port();
    let pb = b.local_addr().map_err(|e| e.to_string())?.port();
    let call_id = format!("dtls-{}-{n}", std::process::id());
    let ka = random_key(SUITE_A);
    let sdp_b = ng.ok(
        "offer",
        vec![
            ("command", s("offer")),
            ("call-id", s(&call_id)),
            ("from-tag", s("tag-a")),
            ("sdp", s(&sdes_sdp(1, pa, 1, SUITE_A, &ka))),
            ("DTLS", s("passive")),
            ("transport-protocol", s("UDP/TLS/RTP/SAVP")),
            ("ICE", s("remove")),
            ("rtcp-mux", B::L(vec![s("accept")])),
        ],
    )?;
    let (relay, _, fps) = scan_sdp(&sdp_b).ok_or("unparsable offer reply sdp")?;
    let relay_fps = PeerFingerprints::from_sdp_lines(fps.iter().map(String::as_str))
        .map_err(|e| format!("relay fingerprint: {e}"))?;
    if relay_fps.is_empty() {
        return Err(format!("relay offered no fingerprint to B:\n{sdp_b}"));
    }
    ng.ok(
        "answer",
        vec![
            ("command", s("answer")),
            ("call-id", s(&call_id)),
            ("from-tag", s("tag-a")),
            ("to-tag", s("tag-b")),
            ("sdp", s(&dtls_answer_sdp(pb, &client.id.sdp_fingerprint()))),
            ("ICE", s("remove")),
            ("rtcp-mux", B::L(vec![s("accept")])),
        ],
    )?;
    b.set_nonblocking(true).map_err(|e| e.to_string())?;
    drop(a);
    Ok(DtlsCall {
        id: call_id,
        sock: b,
        relay,
        relay_fps,
    })
}

/// Runs the handshakes of `calls` all at once, B as the DTLS client; returns each one's latency
/// (None: failed or not complete within 15 s) and the wall time of the whole batch.
fn handshakes(calls: &[DtlsCall], client: &Client) -> (Vec<Option<Duration>>, Duration) {
    let start = Instant::now();
    let mut eps: Vec<Endpoint> = Vec::with_capacity(calls.len());
    let mut t0 = Vec::with_capacity(calls.len());
    let mut done: Vec<Option<Duration>> = vec![None; calls.len()];
    let mut over = vec![false; calls.len()];
    for c in calls {
        let now = Instant::now();
        let mut ep = Endpoint::new(
            &client.id,
            Role::Client,
            c.relay_fps.clone(),
            &client.cfg,
            now,
        );
        while let Some(d) = ep.poll_transmit() {
            let _ = c.sock.send_to(&d, c.relay);
        }
        eps.push(ep);
        t0.push(now);
    }
    let mut pfds: Vec<libc::pollfd> = calls
        .iter()
        .map(|c| libc::pollfd {
            fd: c.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; 4096];
    let deadline = start + Duration::from_secs(15);
    let mut left = calls.len();
    while left > 0 && Instant::now() < deadline {
        let now = Instant::now();
        let next = eps
            .iter()
            .zip(&over)
            .filter(|(_, o)| !**o)
            .filter_map(|(e, _)| e.poll_timeout())
            .min()
            .unwrap_or(now + Duration::from_millis(10));
        let wait = next
            .saturating_duration_since(now)
            .min(Duration::from_millis(10));
        // SAFETY: poll(2) over a valid, live array of pollfd.
        unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                wait.as_millis() as i32 + 1,
            )
        };
        let now = Instant::now();
        for i in 0..calls.len() {
            if over[i] {
                continue;
            }
            if pfds[i].revents & libc::POLLIN != 0 {
                while let Ok((n, _)) = calls[i].sock.recv_from(&mut buf) {
                    eps[i].handle_datagram(Instant::now(), &buf[..n]);
                }
            }
            if eps[i].poll_timeout().is_some_and(|t| t <= now) {
                eps[i].handle_timeout(now);
            }
            while let Some(d) = eps[i].poll_transmit() {
                let _ = calls[i].sock.send_to(&d, calls[i].relay);
            }
            match eps[i].state() {
                State::Connected => {
                    done[i] = Some(t0[i].elapsed());
                    over[i] = true;
                    left -= 1;
                }
                State::Failed(r) => {
                    eprintln!("handshake {i} failed: {r}");
                    over[i] = true;
                    left -= 1;
                }
                _ => {}
            }
        }
    }
    (done, start.elapsed())
}

fn delete_all(ng: &mut Ng, ids: impl IntoIterator<Item = String>) {
    for id in ids {
        let _ = ng.call(vec![("command", s("delete")), ("call-id", s(&id))]);
    }
}

// ---------------------------------------------------------------------------------------------
// SDES calls that carry traffic while handshakes run (as in relay_load).

const SUITE_A: Profile = Profile::AesCm128HmacSha1_80;
const SUITE_B: Profile = Profile::AesCm128HmacSha1_32;
const PAYLOAD: usize = 160;
/// Loss and latency are bucketed by the packet's send time.
const BUCKET: Duration = Duration::from_millis(100);

struct Ua {
    sock: UdpSocket,
    dest: SocketAddr,
    tx: SrtpContext,
    rx: SrtpContext,
    ssrc: u32,
}

fn ctx(p: Profile, key_salt: &[u8]) -> SrtpContext {
    SrtpContext::from_key_salt(p, key_salt, ContextConfig::default()).expect("valid key")
}

fn setup_sdes_call(ng: &mut Ng, n: usize) -> Result<(String, [Ua; 2]), String> {
    let a = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let b = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let pa = a.local_addr().map_err(|e| e.to_string())?.port();
    let pb = b.local_addr().map_err(|e| e.to_string())?.port();
    let call_id = format!("sdes-{}-{n}", std::process::id());
    let ka = random_key(SUITE_A);
    let sdp_b = ng.ok(
        "offer",
        vec![
            ("command", s("offer")),
            ("call-id", s(&call_id)),
            ("from-tag", s("tag-a")),
            ("sdp", s(&sdes_sdp(1, pa, 1, SUITE_A, &ka))),
            ("rtcp-mux", B::L(vec![s("accept")])),
        ],
    )?;
    let (relay_for_b, cryptos_b, _) = scan_sdp(&sdp_b).ok_or("unparsable offer reply sdp")?;
    let (tag_b, _, key_relay_to_b) = cryptos_b
        .iter()
        .find(|(_, p, _)| *p == SUITE_B)
        .cloned()
        .ok_or("relay did not offer AES_CM_128_HMAC_SHA1_32 to leg B")?;
    let kb = random_key(SUITE_B);
    let sdp_a = ng.ok(
        "answer",
        vec![
            ("command", s("answer")),
            ("call-id", s(&call_id)),
            ("from-tag", s("tag-a")),
            ("to-tag", s("tag-b")),
            ("sdp", s(&sdes_sdp(2, pb, tag_b, SUITE_B, &kb))),
            ("rtcp-mux", B::L(vec![s("accept")])),
        ],
    )?;
    let (relay_for_a, cryptos_a, _) = scan_sdp(&sdp_a).ok_or("unparsable answer reply sdp")?;
    let (_, suite_a, key_relay_to_a) = cryptos_a
        .first()
        .cloned()
        .ok_or("answer reply without crypto")?;
    if suite_a != SUITE_A {
        return Err(format!("relay answered A with {suite_a}"));
    }
    for sock in [&a, &b] {
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    Ok((
        call_id,
        [
            Ua {
                sock: a,
                dest: relay_for_a,
                tx: ctx(SUITE_A, &ka),
                rx: ctx(SUITE_A, &key_relay_to_a),
                ssrc: 0x1000_0000 + n as u32,
            },
            Ua {
                sock: b,
                dest: relay_for_b,
                tx: ctx(SUITE_B, &kb),
                rx: ctx(SUITE_B, &key_relay_to_b),
                ssrc: 0x2000_0000 + n as u32,
            },
        ],
    ))
}

/// Per-bucket counts of packets sent and received, and latencies by send bucket.
struct Traffic {
    sent: Vec<u64>,
    received: Vec<u64>,
    /// (send bucket, latency µs)
    lat: Vec<(u32, u32)>,
}

/// Sends 50 packets/s per direction on every call for `total`, receiving on another thread.
fn run_traffic(uas: Vec<[Ua; 2]>, total: Duration, start: Instant) -> Traffic {
    let buckets = (total.as_millis() / BUCKET.as_millis()) as usize + 20;
    let stop = Arc::new(AtomicBool::new(false));
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for call in uas {
        for ua in call {
            let clone = ua.sock.try_clone().expect("clone socket");
            txs.push((clone, ua.dest, ua.tx, ua.ssrc, 1u16, 0u32));
            rxs.push((ua.sock, ua.rx));
        }
    }
    let recv = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut received = vec![0u64; buckets];
            let mut lat = Vec::with_capacity(1 << 20);
            // SAFETY: plain epoll syscalls; the sockets stay open while `rxs` lives here.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            for (i, (sock, _)) in rxs.iter().enumerate() {
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: i as u64,
                };
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) };
            }
            let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 512, 50) };
                for ev in evs.iter().take(n.max(0) as usize) {
                    let (sock, rx) = &mut rxs[ev.u64 as usize];
                    while let Ok((len, _)) = sock.recv_from(&mut buf) {
                        let Ok(plain) = rx.unprotect_rtp(&mut buf[..len]) else {
                            continue;
                        };
                        if plain >= 20 {
                            let mut t = [0u8; 8];
                            t.copy_from_slice(&buf[12..20]);
                            let sent_ns = u64::from_be_bytes(t);
                            let now_ns = start.elapsed().as_nanos() as u64;
                            let b = (sent_ns / BUCKET.as_nanos() as u64) as usize;
                            if let Some(r) = received.get_mut(b) {
                                *r += 1;
                            }
                            let us = (now_ns.saturating_sub(sent_ns) / 1000) as u32;
                            lat.push((b as u32, us));
                        }
                    }
                }
            }
            unsafe { libc::close(ep) };
            (received, lat)
        })
    };
    let mut sent = vec![0u64; buckets];
    let slots = 20usize;
    let mut tick = 0u64;
    let mut buf = [0u8; 2048];
    let t_begin = Instant::now();
    while t_begin.elapsed() < total {
        for slot in 0..slots {
            let due = t_begin
                + Duration::from_millis(tick * 20)
                + Duration::from_micros(slot as u64 * 1000);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let mut i = slot;
            while i < txs.len() {
                let (sock, dest, tx, ssrc, seq, ts) = &mut txs[i];
                buf[0] = 0x80;
                buf[1] = 0;
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                buf[4..8].copy_from_slice(&ts.to_be_bytes());
                buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let ns = start.elapsed().as_nanos() as u64;
                buf[12..20].copy_from_slice(&ns.to_be_bytes());
                buf[20..12 + PAYLOAD].fill(0xff);
                if let Ok(len) = tx.protect_rtp(&mut buf, 12 + PAYLOAD) {
                    if sock.send_to(&buf[..len], *dest).is_ok() {
                        let b = (ns / BUCKET.as_nanos() as u64) as usize;
                        if let Some(x) = sent.get_mut(b) {
                            *x += 1;
                        }
                    }
                }
                *seq = seq.wrapping_add(1);
                *ts = ts.wrapping_add(160);
                i += slots;
            }
        }
        tick += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (received, lat) = recv.join().expect("receiver");
    Traffic {
        sent,
        received,
        lat,
    }
}

// ---------------------------------------------------------------------------------------------
// Relays under test (as in relay_load).

struct Relay {
    name: &'static str,
    child: Child,
    ng: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(22225)
}

fn wait_ng(ng: SocketAddr, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = Ng::new(ng).map_err(|e| e.to_string())?;
    c.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("relay exited: {st}"));
        }
        if let Ok(r) = c.call(vec![("command", s("ping"))]) {
            if get_str(&r, "result").as_deref() == Some("pong") {
                return Ok(());
            }
        }
    }
    Err("relay did not answer ng ping".into())
}

fn start_srtp_edge(workers: usize) -> Result<Relay, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ng: SocketAddr = format!("127.0.0.1:{}", free_udp())
        .parse()
        .map_err(|_| "addr")?;
    let cfg = format!(
        "state_dir = {:?}\n[log]\nlevel = \"warn\"\n[sip]\nlisten = []\n[admin]\nlisten = []\n\
         [control]\nlisten = [\"{ng}\"]\n[media]\nport_min = 21000\nport_max = 25999\n\
         workers = {workers}\ntimeout_secs = 600\n\
         suites = [\"AES_CM_128_HMAC_SHA1_80\", \"AES_CM_128_HMAC_SHA1_32\"]\n",
        dir.path().join("state").display().to_string()
    );
    let path = dir.path().join("srtp-edge.toml");
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_srtp-edge"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("srtp-edge: {e}"))?;
    wait_ng(ng, &mut child)?;
    Ok(Relay {
        name: "srtp-edge",
        child,
        ng,
        _dir: dir,
    })
}

fn start_rtpengine(threads: usize) -> Result<Relay, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ng: SocketAddr = format!("127.0.0.1:{}", free_udp())
        .parse()
        .map_err(|_| "addr")?;
    let mut child = Command::new("rtpengine")
        .args([
            "--foreground",
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            &format!("--listen-ng={ng}"),
            "--port-min=14000",
            "--port-max=18999",
            "--log-stderr",
            "--log-level=3",
            "--timeout=600",
            "--dtls-cert-cipher=prime256v1",
            &format!("--num-threads={threads}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("rtpengine: {e} (install rtpengine-daemon)"))?;
    wait_ng(ng, &mut child)?;
    Ok(Relay {
        name: "rtpengine",
        child,
        ng,
        _dir: dir,
    })
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf is always safe to call.
    let hz = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0);
    (field(11) + field(12)) / hz
}

// ---------------------------------------------------------------------------------------------
// Figures.

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn pct_u32(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64
}

#[derive(Default, Clone, Copy)]
struct Figures {
    seq_p50: Duration,
    seq_p99: Duration,
    seq_failed: usize,
    burst_rate: f64,
    burst_p50: Duration,
    burst_p99: Duration,
    burst_failed: usize,
    cpu_ms_per_handshake: f64,
    load_loss_total: u64,
    load_sent_total: u64,
    load_loss_burst: u64,
    load_sent_burst: u64,
    load_p50_before: f64,
    load_p99_before: f64,
    load_p50_burst: f64,
    load_p99_burst: f64,
    load_burst_ok: usize,
}

fn measure(
    relay: &Relay,
    client: &Client,
    n: usize,
    burst: usize,
    calls: usize,
) -> Result<Figures, String> {
    let mut f = Figures::default();
    let mut ng = Ng::new(relay.ng).map_err(|e| e.to_string())?;
    let pid = relay.child.id();
    let mut serial = 0usize;

    // Warm-up, then one handshake at a time.
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let c = setup_dtls_call(&mut ng, serial, client)?;
        serial += 1;
        let (r, _) = handshakes(std::slice::from_ref(&c), client);
        if i >= 10 {
            match r[0] {
                Some(d) => lat.push(d),
                None => f.seq_failed += 1,
            }
        }
        delete_all(&mut ng, [c.id]);
    }
    f.seq_p50 = pct(&mut lat, 0.50);
    f.seq_p99 = pct(&mut lat, 0.99);

    // Bursts: `burst` handshakes at once, three times.
    let mut lat = Vec::new();
    let (mut wall, mut ok, mut cpu) = (Duration::ZERO, 0usize, 0.0);
    for _ in 0..3 {
        let mut list = Vec::with_capacity(burst);
        for _ in 0..burst {
            list.push(setup_dtls_call(&mut ng, serial, client)?);
            serial += 1;
        }
        let c0 = cpu_secs(pid);
        let (r, w) = handshakes(&list, client);
        cpu += cpu_secs(pid) - c0;
        wall += w;
        for x in r {
            match x {
                Some(d) => {
                    ok += 1;
                    lat.push(d)
                }
                None => f.burst_failed += 1,
            }
        }
        delete_all(&mut ng, list.into_iter().map(|c| c.id));
    }
    f.burst_rate = ok as f64 / wall.as_secs_f64().max(1e-9);
    f.burst_p50 = pct(&mut lat, 0.50);
    f.burst_p99 = pct(&mut lat, 0.99);
    f.cpu_ms_per_handshake = cpu * 1e3 / ok.max(1) as f64;

    // A burst while SDES calls relay traffic.
    let mut uas = Vec::with_capacity(calls);
    let mut ids = Vec::with_capacity(calls);
    for i in 0..calls {
        let (id, ua) = setup_sdes_call(&mut ng, i)?;
        ids.push(id);
        uas.push(ua);
    }
    let start = Instant::now();
    let (before, during_max) = (Duration::from_secs(3), Duration::from_secs(7));
    let total = before + during_max;
    let traffic = std::thread::spawn(move || run_traffic(uas, total, start));
    std::thread::sleep(before);
    let b0 = start.elapsed();
    let mut list = Vec::with_capacity(burst);
    for _ in 0..burst {
        list.push(setup_dtls_call(&mut ng, serial, client)?);
        serial += 1;
    }
    let (r, _) = handshakes(&list, client);
    let b1 = start.elapsed();
    f.load_burst_ok = r.iter().filter(|x| x.is_some()).count();
    let t = traffic.join().map_err(|_| "traffic thread panicked")?;
    delete_all(&mut ng, list.into_iter().map(|c| c.id));
    delete_all(&mut ng, ids);
    // Whole buckets only: the first (pacing starts), and those after the sender stopped, out.
    let last = (total.as_nanos() / BUCKET.as_nanos()) as usize;
    let (bb0, bb1) = (
        (b0.as_nanos() / BUCKET.as_nanos()) as usize,
        (b1.as_nanos() / BUCKET.as_nanos()) as usize,
    );
    for i in 1..last {
        let lost = t.sent[i].saturating_sub(t.received[i]);
        f.load_sent_total += t.sent[i];
        f.load_loss_total += lost;
        if (bb0..=bb1).contains(&i) {
            f.load_sent_burst += t.sent[i];
            f.load_loss_burst += lost;
        }
    }
    let (mut before_l, mut during_l): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for &(b, us) in &t.lat {
        let b = b as usize;
        if (1..bb0).contains(&b) {
            before_l.push(us);
        } else if (bb0..=bb1).contains(&b) {
            during_l.push(us);
        }
    }
    f.load_p50_before = pct_u32(&mut before_l, 0.50);
    f.load_p99_before = pct_u32(&mut before_l, 0.99);
    f.load_p50_burst = pct_u32(&mut during_l, 0.50);
    f.load_p99_burst = pct_u32(&mut during_l, 0.99);
    Ok(f)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    // `cargo test --benches` runs benches without `--bench`: a tiny run.
    let test_mode = !args.iter().any(|a| a == "--bench");
    let num = |name: &str, bench: usize, test: usize| {
        arg(name)
            .and_then(|x| x.parse().ok())
            .unwrap_or(if test_mode { test } else { bench })
    };
    let n = num("--n", 300, 5);
    let burst = num("--burst", 100, 5);
    let calls = num("--calls", 100, 5);
    let only = arg("--only");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let client = Client {
        id: DtlsIdentity::generate().expect("identity"),
        cfg: EndpointConfig::default().build().expect("config"),
    };
    let mut results: Vec<(&'static str, Figures)> = Vec::new();
    for which in ["srtp-edge", "rtpengine"] {
        if only.as_deref().is_some_and(|o| o != which) {
            continue;
        }
        let relay = if which == "srtp-edge" {
            start_srtp_edge(cores)
        } else {
            start_rtpengine(cores)
        };
        let relay = match relay {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{which}: cannot start: {e}");
                continue;
            }
        };
        match measure(&relay, &client, n, burst, calls) {
            Ok(f) => {
                println!(
                    "{:<10} sequential n={n}: p50={:.2?} p99={:.2?} failed={}",
                    relay.name, f.seq_p50, f.seq_p99, f.seq_failed
                );
                println!(
                    "{:<10} burst of {burst} x3: {:.0} handshakes/s, p50={:.2?} p99={:.2?}, relay CPU {:.2} ms/handshake, failed={}",
                    relay.name,
                    f.burst_rate,
                    f.burst_p50,
                    f.burst_p99,
                    f.cpu_ms_per_handshake,
                    f.burst_failed
                );
                println!(
                    "{:<10} {calls} SDES calls + burst of {burst} (ok={}): loss {}/{} overall, {}/{} sent during the burst; relay latency p50/p99 {:.0}/{:.0} µs before, {:.0}/{:.0} µs during",
                    relay.name,
                    f.load_burst_ok,
                    f.load_loss_total,
                    f.load_sent_total,
                    f.load_loss_burst,
                    f.load_sent_burst,
                    f.load_p50_before,
                    f.load_p99_before,
                    f.load_p50_burst,
                    f.load_p99_burst
                );
                results.push((relay.name, f));
            }
            Err(e) => eprintln!("{which}: {e}"),
        }
    }
    let get = |name| results.iter().find(|(r, _)| *r == name).map(|(_, f)| *f);
    if let (Some(a), Some(b)) = (get("srtp-edge"), get("rtpengine")) {
        let r = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64().max(1e-12);
        println!(
            "rtpengine/srtp-edge: sequential p50 {:.2}x p99 {:.2}x; burst p50 {:.2}x p99 {:.2}x; \
             srtp-edge/rtpengine handshakes/s {:.2}x; rtpengine/srtp-edge CPU per handshake {:.2}x; \
             relay p99 during burst rtpengine/srtp-edge {:.2}x",
            r(b.seq_p50, a.seq_p50),
            r(b.seq_p99, a.seq_p99),
            r(b.burst_p50, a.burst_p50),
            r(b.burst_p99, a.burst_p99),
            a.burst_rate / b.burst_rate.max(1e-9),
            b.cpu_ms_per_handshake / a.cpu_ms_per_handshake.max(1e-9),
            b.load_p99_burst / a.load_p99_burst.max(1e-9)
        );
    }
}
