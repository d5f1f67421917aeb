//! Load harness for the media relay: drives N calls through the ng control protocol against
//! srtp-edge and against Debian's rtpengine (userspace, `--table=-1`) in the same run, sends
//! 50 SRTP packets/s per direction per call with real 20 ms pacing, and reports relay CPU µs per
//! packet (from /proc of the daemon), loss, added latency p50/p99 and RSS per call, with the
//! ratio between the two.
//!
//! Each call is SDES on both legs with a different suite per leg (AES_CM_128_HMAC_SHA1_80 on
//! A, AES_CM_128_HMAC_SHA1_32 on B), so both relays must really decrypt and re-encrypt.
//!
//! Run: `cargo bench --bench relay_load -- [--calls 100,500,1000] [--secs 10]
//! [--only srtp-edge|rtpengine] [--record]`
//!
//! `--record` records every call (`record-call` on the offer): srtp-edge seals both tracks
//! (AES-256-GCM, `[recording] enabled`, key file provider), rtpengine writes them unencrypted
//! (`--recording-method=pcap`); the report adds the disk bytes per call-minute of each.
//!
//! The ng client, the SDP scanning and the bencode codec here are deliberately independent of
//! srtp-edge's own (a few lines each), so the harness also checks that srtp-edge speaks ng the way
//! rtpengine does. The client's SRTP uses srtp-edge's engine (the peer's crypto cost is the same
//! for both relays).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use srtp_edge::srtp::{ContextConfig, Profile, SrtpContext};

#[path = "common/ng_client.rs"]
mod ng_client;
use ng_client::{get_str, s, Ng, B};

// ---------------------------------------------------------------------------------------------
// SDP for the two simulated UAs, and the scanning of the relay's rewritten SDP.

fn offer_sdp(port: u16, suite: Profile, key: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n\
         a=crypto:1 {} inline:{b64}\r\n",
        suite.sdes_name()
    )
}

fn answer_sdp(port: u16, tag: u32, suite: Profile, key: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!(
        "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n\
         a=crypto:{tag} {} inline:{b64}\r\n",
        suite.sdes_name()
    )
}

/// The relay's media address and its crypto lines (tag, suite, key||salt).
/// One `a=crypto` line: tag, suite, key||salt.
type Crypto = (u32, Profile, Vec<u8>);

fn scan_sdp(sdp: &str) -> Option<(SocketAddr, Vec<Crypto>)> {
    let mut ip = None;
    let mut port = None;
    let mut cryptos = Vec::new();
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.trim().parse::<std::net::IpAddr>().ok();
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split(' ').next()?.parse::<u16>().ok();
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
    Some((SocketAddr::new(ip?, port?), cryptos))
}

fn random_key(p: Profile) -> Vec<u8> {
    let mut k = vec![0u8; p.key_salt_len()];
    getrandom::fill(&mut k).expect("OS randomness");
    k
}

// ---------------------------------------------------------------------------------------------
// Calls.

const SUITE_A: Profile = Profile::AesCm128HmacSha1_80;
const SUITE_B: Profile = Profile::AesCm128HmacSha1_32;
const PAYLOAD: usize = 160;

/// One simulated UA endpoint: its socket, where it sends, and its two contexts.
struct Ua {
    sock: UdpSocket,
    dest: SocketAddr,
    tx: SrtpContext,
    rx: SrtpContext,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

struct Call {
    id: String,
    ua: [Ua; 2],
}

fn ctx(p: Profile, key_salt: &[u8]) -> SrtpContext {
    SrtpContext::from_key_salt(p, key_salt, ContextConfig::default()).expect("valid key")
}

/// Sets up one call through the relay: offer from A, answer from B.
fn setup_call(ng: &mut Ng, n: usize, extra_flags: &[&str]) -> Result<Call, String> {
    let a = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let b = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let pa = a.local_addr().map_err(|e| e.to_string())?.port();
    let pb = b.local_addr().map_err(|e| e.to_string())?.port();
    let call_id = format!("load-{}-{n}", std::process::id());
    let ka = random_key(SUITE_A);
    let flags = || B::L(extra_flags.iter().map(|f| s(f)).collect());
    let r = ng.call(vec![
        ("command", s("offer")),
        ("call-id", s(&call_id)),
        ("from-tag", s("tag-a")),
        ("sdp", s(&offer_sdp(pa, SUITE_A, &ka))),
        ("flags", flags()),
        ("rtcp-mux", B::L(vec![s("accept")])),
    ])?;
    if get_str(&r, "result").as_deref() != Some("ok") {
        return Err(format!(
            "offer: {:?} {:?} {:?}",
            get_str(&r, "result"),
            get_str(&r, "error-reason"),
            get_str(&r, "warning")
        ));
    }
    let sdp_b = get_str(&r, "sdp").ok_or("offer reply without sdp")?;
    let (relay_for_b, cryptos_b) = scan_sdp(&sdp_b).ok_or("unparsable offer reply sdp")?;
    let (tag_b, _, key_relay_to_b) = cryptos_b
        .iter()
        .find(|(_, p, _)| *p == SUITE_B)
        .cloned()
        .ok_or("relay did not offer AES_CM_128_HMAC_SHA1_32 to leg B")?;
    let kb = random_key(SUITE_B);
    let r = ng.call(vec![
        ("command", s("answer")),
        ("call-id", s(&call_id)),
        ("from-tag", s("tag-a")),
        ("to-tag", s("tag-b")),
        ("sdp", s(&answer_sdp(pb, tag_b, SUITE_B, &kb))),
        ("flags", flags()),
        ("rtcp-mux", B::L(vec![s("accept")])),
    ])?;
    if get_str(&r, "result").as_deref() != Some("ok") {
        return Err(format!(
            "answer: {:?} {:?}",
            get_str(&r, "result"),
            get_str(&r, "error-reason")
        ));
    }
    let sdp_a = get_str(&r, "sdp").ok_or("answer reply without sdp")?;
    let (relay_for_a, cryptos_a) = scan_sdp(&sdp_a).ok_or("unparsable answer reply sdp")?;
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
    Ok(Call {
        id: call_id,
        ua: [
            Ua {
                sock: a,
                dest: relay_for_a,
                tx: ctx(SUITE_A, &ka),
                rx: ctx(SUITE_A, &key_relay_to_a),
                ssrc: 0x1000_0000 + n as u32,
                seq: 1,
                ts: 0,
            },
            Ua {
                sock: b,
                dest: relay_for_b,
                tx: ctx(SUITE_B, &kb),
                rx: ctx(SUITE_B, &key_relay_to_b),
                ssrc: 0x2000_0000 + n as u32,
                seq: 1,
                ts: 0,
            },
        ],
    })
}

// ---------------------------------------------------------------------------------------------
// Relays under test.

struct Relay {
    name: &'static str,
    child: Child,
    ng: SocketAddr,
    _dir: tempfile::TempDir,
    flags: &'static [&'static str],
    /// Where its recordings go (`--record`).
    rec_dir: Option<std::path::PathBuf>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SIGTERM, then SIGKILL if it lingers.
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
        .unwrap_or(22223)
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

fn start_srtp_edge(workers: usize, record: bool) -> Result<Relay, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ng: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse().unwrap();
    let cfg = format!(
        "state_dir = {:?}\n[log]\nlevel = \"warn\"\n[sip]\nlisten = []\n[admin]\nlisten = []\n\
         [control]\nlisten = [\"{ng}\"]\n[media]\nport_min = 20000\nport_max = 29999\n\
         workers = {workers}\ntimeout_secs = 600\n\
         suites = [\"AES_CM_128_HMAC_SHA1_80\", \"AES_CM_128_HMAC_SHA1_32\"]\n{}",
        dir.path().join("state").display().to_string(),
        if record {
            "[recording]\nenabled = true\nqueue_frames = 65536\n"
        } else {
            ""
        }
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
    let rec_dir = record.then(|| dir.path().join("state/recordings"));
    Ok(Relay {
        name: "srtp-edge",
        child,
        ng,
        _dir: dir,
        flags: if record { &["record-call"] } else { &[] },
        rec_dir,
    })
}

fn start_rtpengine(threads: usize, record: bool) -> Result<Relay, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ng: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse().unwrap();
    let rec_dir = dir.path().join("rec");
    let mut rec_args = Vec::new();
    if record {
        std::fs::create_dir_all(&rec_dir).map_err(|e| e.to_string())?;
        rec_args.push(format!("--recording-dir={}", rec_dir.display()));
        rec_args.push("--recording-method=pcap".to_string());
    }
    let mut child = Command::new("rtpengine")
        .args(&rec_args)
        .args([
            "--foreground",
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            &format!("--listen-ng={ng}"),
            "--port-min=10000",
            "--port-max=19999",
            "--log-stderr",
            "--log-level=3",
            "--timeout=600",
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
        // Keep SDES on both sides; rtpengine picks its own keys per leg for the suites it offers.
        flags: if record { &["record-call"] } else { &[] },
        rec_dir: record.then_some(rec_dir),
    })
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let (u, s) = cpu_split(pid);
    u + s
}

/// (utime, stime) of a process, in seconds.
fn cpu_split(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after ")" start at index 2 (state); utime is field 14, stime 15 (1-based).
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf is always safe to call.
    let hz = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0);
    (field(11) / hz, field(12) / hz)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The load itself.

struct Outcome {
    relay: &'static str,
    calls: usize,
    sent: u64,
    received: u64,
    cpu_us_per_packet: f64,
    cpu_percent: f64,
    p50_us: f64,
    p99_us: f64,
    rss_per_call_kib: f64,
    /// Share of the relay's CPU time spent in user space (the rest is the kernel: syscalls).
    user_share: f64,
}

fn run_load(relay: &mut Relay, calls: usize, secs: u64) -> Result<Outcome, String> {
    let mut ng = Ng::new(relay.ng).map_err(|e| e.to_string())?;
    let pid = relay.child.id();
    let rss0 = rss_kib(pid);
    let mut list = Vec::with_capacity(calls);
    for n in 0..calls {
        list.push(setup_call(&mut ng, n, relay.flags)?);
    }
    let rss1 = rss_kib(pid);
    let socks: Vec<(usize, usize, i32)> = list
        .iter()
        .enumerate()
        .flat_map(|(c, call)| (0..2).map(move |u| (c, u, call.ua[u].sock.as_raw_fd())))
        .collect();

    // Receiver: one epoll over every UA socket; decrypts and records latency.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (tx_calls, rx_calls) = std::sync::mpsc::channel::<Vec<Call>>();
    let recv_thread = {
        let stop = stop.clone();
        let received = received.clone();
        std::thread::spawn(move || -> (Vec<u32>, Vec<Call>) {
            let mut calls: Vec<Call> = rx_calls.recv().unwrap_or_default();
            let mut lat_us = Vec::with_capacity(1 << 20);
            // SAFETY: plain syscalls; fds stay open while `calls` lives in this thread.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            for &(c, u, fd) in &socks {
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: ((c as u64) << 1) | u as u64,
                };
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
            }
            let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 512, 50) };
                for ev in evs.iter().take(n.max(0) as usize) {
                    let c = (ev.u64 >> 1) as usize;
                    let u = (ev.u64 & 1) as usize;
                    let ua = &mut calls[c].ua[u];
                    while let Ok((len, _)) = ua.sock.recv_from(&mut buf) {
                        let Ok(plain) = ua.rx.unprotect_rtp(&mut buf[..len]) else {
                            continue;
                        };
                        if plain >= 12 + 8 {
                            let mut t = [0u8; 8];
                            t.copy_from_slice(&buf[12..20]);
                            let sent_ns = u64::from_be_bytes(t);
                            let now_ns = start.elapsed().as_nanos() as u64;
                            lat_us.push((now_ns.saturating_sub(sent_ns) / 1000) as u32);
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            unsafe { libc::close(ep) };
            (lat_us, calls)
        })
    };

    // Sender: the receiver thread owns the calls' receive contexts, so the sender works on its
    // own copies of the transmit side (socket clones share the fd).
    struct Tx {
        sock: UdpSocket,
        dest: SocketAddr,
        ctx: SrtpContext,
        ssrc: u32,
        seq: u16,
        ts: u32,
    }
    let mut txs = Vec::with_capacity(calls * 2);
    for call in &mut list {
        for ua in &mut call.ua {
            let placeholder = ctx(SUITE_A, &[0u8; 30]);
            txs.push(Tx {
                sock: ua.sock.try_clone().map_err(|e| e.to_string())?,
                dest: ua.dest,
                ctx: std::mem::replace(&mut ua.tx, placeholder),
                ssrc: ua.ssrc,
                seq: ua.seq,
                ts: ua.ts,
            });
        }
    }
    let ids: Vec<String> = list.iter().map(|c| c.id.clone()).collect();
    tx_calls.send(list).map_err(|_| "receiver gone")?;

    // 20 ms ticks, each spread over 20 slots of 1 ms so the load is smooth.
    let warmup = Duration::from_secs(2);
    let total = warmup + Duration::from_secs(secs);
    let mut sent: u64 = 0;
    let mut cpu0 = None;
    let mut split0 = (0.0, 0.0);
    let mut recv_at_warm = 0;
    let mut buf = [0u8; 2048];
    let slots = 20usize;
    let mut tick = 0u64;
    let mut t_measure = start;
    while start.elapsed() < total {
        for slot in 0..slots {
            let due = start
                + Duration::from_millis(tick * 20)
                + Duration::from_micros((slot as u64) * 1000);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let mut i = slot;
            while i < txs.len() {
                let tx = &mut txs[i];
                buf[0] = 0x80;
                buf[1] = 0;
                buf[2..4].copy_from_slice(&tx.seq.to_be_bytes());
                buf[4..8].copy_from_slice(&tx.ts.to_be_bytes());
                buf[8..12].copy_from_slice(&tx.ssrc.to_be_bytes());
                let ns = start.elapsed().as_nanos() as u64;
                buf[12..20].copy_from_slice(&ns.to_be_bytes());
                buf[20..12 + PAYLOAD].fill(0xff);
                if let Ok(len) = tx.ctx.protect_rtp(&mut buf, 12 + PAYLOAD) {
                    if tx.sock.send_to(&buf[..len], tx.dest).is_ok() {
                        sent += 1;
                    }
                }
                tx.seq = tx.seq.wrapping_add(1);
                tx.ts = tx.ts.wrapping_add(160);
                i += slots;
            }
        }
        tick += 1;
        if cpu0.is_none() && start.elapsed() >= warmup {
            cpu0 = Some(cpu_secs(pid));
            split0 = cpu_split(pid);
            recv_at_warm = received.load(Ordering::Relaxed);
            t_measure = Instant::now();
        }
    }
    let cpu1 = cpu_secs(pid);
    let split1 = cpu_split(pid);
    let wall = t_measure.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut lat, _calls) = recv_thread.join().map_err(|_| "receiver panicked")?;
    let recv_total = received.load(Ordering::Relaxed);
    let relayed_measured = recv_total.saturating_sub(recv_at_warm).max(1);
    for id in &ids {
        let _ = ng.call(vec![("command", s("delete")), ("call-id", s(id))]);
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() - 1) as f64 * p) as usize] as f64
    };
    let cpu = cpu1 - cpu0.unwrap_or(cpu1);
    let user_share = (split1.0 - split0.0) / cpu.max(1e-9);
    Ok(Outcome {
        relay: relay.name,
        calls,
        sent,
        received: recv_total,
        cpu_us_per_packet: cpu * 1e6 / relayed_measured as f64,
        cpu_percent: cpu * 100.0 / wall.max(1e-9),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rss_per_call_kib: rss1.saturating_sub(rss0) as f64 / calls.max(1) as f64,
        user_share,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    // `cargo bench` passes `--bench`; `cargo test --benches` runs benches in test mode: do a tiny run.
    let test_mode = !args.iter().any(|a| a == "--bench");
    let calls: Vec<usize> = arg("--calls")
        .unwrap_or_else(|| {
            if test_mode {
                "5".into()
            } else {
                "100,500,1000".into()
            }
        })
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let secs: u64 = arg("--secs")
        .and_then(|x| x.parse().ok())
        .unwrap_or(if test_mode { 1 } else { 10 });
    let only = arg("--only");
    let record = args.iter().any(|a| a == "--record");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results: Vec<Outcome> = Vec::new();
    for &n in &calls {
        for which in ["srtp-edge", "rtpengine"] {
            if only.as_deref().is_some_and(|o| o != which) {
                continue;
            }
            let relay = if which == "srtp-edge" {
                start_srtp_edge(cores, record)
            } else {
                start_rtpengine(cores, record)
            };
            let mut relay = match relay {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{which}: cannot start: {e}");
                    continue;
                }
            };
            match run_load(&mut relay, n, secs) {
                Ok(o) => {
                    println!(
                        "{:<10} calls={:<5} sent={:<8} recv={:<8} loss={:.3}% cpu={:.2}µs/pkt ({:.1}% of a core) latency p50={:.0}µs p99={:.0}µs rss/call={:.1}KiB user={:.0}%",
                        o.relay,
                        o.calls,
                        o.sent,
                        o.received,
                        100.0 * (o.sent.saturating_sub(o.received)) as f64 / o.sent.max(1) as f64,
                        o.cpu_us_per_packet,
                        o.cpu_percent,
                        o.p50_us,
                        o.p99_us,
                        o.rss_per_call_kib,
                        o.user_share * 100.0
                    );
                    if let Some(d) = &relay.rec_dir {
                        // Let the writer seal the last chunks, then weigh what is on disk.
                        std::thread::sleep(Duration::from_secs(2));
                        let bytes = dir_bytes(d);
                        let call_min = n as f64 * (secs + 2) as f64 / 60.0;
                        println!(
                            "{:<10} calls={:<5} recordings on disk: {} bytes, {:.0} bytes per call-minute",
                            o.relay,
                            n,
                            bytes,
                            bytes as f64 / call_min.max(1e-9)
                        );
                    }
                    results.push(o);
                }
                Err(e) => eprintln!("{which} calls={n}: {e}"),
            }
        }
    }
    for &n in &calls {
        let get = |name| results.iter().find(|o| o.relay == name && o.calls == n);
        if let (Some(a), Some(b)) = (get("srtp-edge"), get("rtpengine")) {
            println!(
                "calls={n}: rtpengine/srtp-edge CPU per packet = {:.2}x",
                b.cpu_us_per_packet / a.cpu_us_per_packet.max(1e-9)
            );
        }
    }
}

/// Bytes of every file under `d`.
fn dir_bytes(d: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
