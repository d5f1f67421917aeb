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
//! [--only srtp-edge|rtpengine] [--srtp-edge-bin PATH] [--media "io_uring = false; ..."] [--record]`
//!
//! It also measures the machine's floor in the same run: a saturated plain UDP echo (recvfrom +
//! sendto per packet, no crypto), before and after the relays, and prints srtp-edge / floor.
//!
//! `--record` records every call (`record-call` on the offer): srtp-edge seals both tracks
//! (AES-256-GCM, `[recording] enabled`, key file provider), rtpengine writes them unencrypted
//! (`--recording-method=pcap`); the report adds the disk bytes per recorded packet and per
//! call-minute of each.
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
#[path = "common/udp_batch.rs"]
mod udp_batch;
use ng_client::{get_str, s, Ng, B};
use udp_batch::{RecvBatch, BATCH, DGRAM};

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

/// One simulated UA endpoint: which shared socket it uses, where it sends, its two contexts.
struct Ua {
    sock: usize,
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

/// Sockets per side the simulated UAs share (call n uses socket n % SOCKS on each side), so
/// one generator thread can send with `sendmmsg` and receive with `recvmmsg` in batches. Many
/// calls from one address is what a trunk or an SBC in front of a relay looks like.
const SOCKS: usize = 16;

/// The SSRC of call `n`'s side `side` (0 = A): the top nibble says the side, the rest the call.
fn ssrc_of(side: usize, n: usize) -> u32 {
    ((side as u32 + 1) << 28) | n as u32
}

fn ctx(p: Profile, key_salt: &[u8]) -> SrtpContext {
    SrtpContext::from_key_salt(p, key_salt, ContextConfig::default()).expect("valid key")
}

/// Sets up one call through the relay: offer from A, answer from B.
fn setup_call(
    ng: &mut Ng,
    n: usize,
    extra_flags: &[&str],
    socks: &[Vec<UdpSocket>; 2],
) -> Result<Call, String> {
    let sock = n % SOCKS;
    let port = |side: usize| -> Result<u16, String> {
        Ok(socks[side][sock]
            .local_addr()
            .map_err(|e| e.to_string())?
            .port())
    };
    let (pa, pb) = (port(0)?, port(1)?);
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
    Ok(Call {
        id: call_id,
        ua: [
            Ua {
                sock,
                dest: relay_for_a,
                tx: ctx(SUITE_A, &ka),
                rx: ctx(SUITE_A, &key_relay_to_a),
                ssrc: ssrc_of(0, n),
                seq: 1,
                ts: 0,
            },
            Ua {
                sock,
                dest: relay_for_b,
                tx: ctx(SUITE_B, &kb),
                rx: ctx(SUITE_B, &key_relay_to_b),
                ssrc: ssrc_of(1, n),
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

/// The media port range for a run of `calls` calls: two pairs per call (one per leg), rtpengine
/// even takes two ports per leg without rtcp-mux pairing, so four ports per call and a margin.
/// Below 2,000 calls the relays keep apart ranges (10000-19999, 20000-29999); above, each uses
/// 20000 up, one after the other.
fn port_range(calls: usize, default: (u16, u16)) -> (u16, u16) {
    if calls <= 2000 {
        default
    } else {
        (20000, (20000 + calls * 4 + 2000).min(65000) as u16)
    }
}

/// Raises this process's open-file limit (inherited by the relays it starts) so that 10,000
/// calls (40,000 sockets in a relay) fit; returns the limit in force.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let want = libc::rlimit {
            rlim_cur: 200_000,
            rlim_max: r.rlim_max.max(200_000),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

fn start_srtp_edge(
    workers: usize,
    bin: &str,
    calls: usize,
    media: &str,
    record: bool,
) -> Result<Relay, String> {
    let (port_min, port_max) = port_range(calls, (20000, 29999));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ng: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse().unwrap();
    let cfg = format!(
        "state_dir = {:?}\n[log]\nlevel = \"warn\"\n[sip]\nlisten = []\n[admin]\nlisten = []\n\
         [control]\nlisten = [\"{ng}\"]\n[media]\nport_min = {port_min}\nport_max = {port_max}\n\
         workers = {workers}\ntimeout_secs = 600\n\
         suites = [\"AES_CM_128_HMAC_SHA1_80\", \"AES_CM_128_HMAC_SHA1_32\"]\n{media}\n{}",
        dir.path().join("state").display().to_string(),
        if record {
            "[recording]\nenabled = true\nqueue_frames = 65536\n"
        } else {
            ""
        }
    );
    let path = dir.path().join("srtp-edge.toml");
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
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

fn start_rtpengine(threads: usize, calls: usize, record: bool) -> Result<Relay, String> {
    let (port_min, port_max) = port_range(calls, (10000, 19999));
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
            &format!("--port-min={port_min}"),
            &format!("--port-max={port_max}"),
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
// The machine's floor: a plain UDP echo on loopback (one recvfrom + one sendto per packet, no
// crypto, never idle), measured in this process in the same run as the relays.

/// CPU time of the calling thread, in seconds.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU µs per packet of a saturated UDP echo: a client keeps `WINDOW` 192-byte datagrams in
/// flight to an echo thread that receives and sends each back, for `secs` seconds. The echo
/// thread's own CPU time (which includes waking the client, as a relay's sends do) divided by
/// the packets it echoed.
fn udp_echo_floor(secs: f64) -> Result<(f64, u64), String> {
    const WINDOW: usize = 32;
    let echo = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let echo_addr = echo.local_addr().map_err(|e| e.to_string())?;
    echo.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (mut n, mut cpu0) = (0u64, None);
            while !stop.load(Ordering::Relaxed) {
                if let Ok((len, src)) = echo.recv_from(&mut buf) {
                    // Start the clock at the first packet: the thread's start-up is not counted.
                    cpu0.get_or_insert_with(thread_cpu_secs);
                    if echo.send_to(&buf[..len], src).is_ok() {
                        n += 1;
                    }
                }
            }
            (thread_cpu_secs() - cpu0.unwrap_or(0.0), n)
        })
    };
    let client = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let pkt = [0x80u8; 192];
    let mut buf = [0u8; 2048];
    for _ in 0..WINDOW {
        let _ = client.send_to(&pkt, echo_addr);
    }
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        match client.recv_from(&mut buf) {
            Ok(_) => {
                let _ = client.send_to(&pkt, echo_addr);
            }
            // A datagram lost on the way: put one back in flight.
            Err(_) => {
                let _ = client.send_to(&pkt, echo_addr);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (cpu, n) = server.join().map_err(|_| "echo thread panicked")?;
    Ok((cpu * 1e6 / n.max(1) as f64, n))
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
    /// Packets sent in the measured window / the target rate (the generator keeps up if ~1).
    rate_reached: f64,
    /// The generator's CPU (sender + receiver threads), percent of a core.
    gen_cpu_percent: f64,
}

/// Open descriptors and sockets of a process (from /proc/PID/fd).
fn fds_and_sockets(pid: u32) -> (usize, usize) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let mut fds = 0;
    let mut socks = 0;
    for e in dir.flatten() {
        fds += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            socks += 1;
        }
    }
    (fds, socks)
}

/// Prints one soak sample: the relay's descriptors, sockets, RSS, and CPU per packet and loss
/// since the previous sample.
struct Sampler {
    every: Duration,
    last: Instant,
    cpu: f64,
    sent: u64,
    recv: u64,
    t0: Instant,
}

impl Sampler {
    fn sample(&mut self, pid: u32, sent: u64, recv: u64) {
        let now = Instant::now();
        if now.duration_since(self.last) < self.every {
            return;
        }
        let cpu = cpu_secs(pid);
        let (fds, socks) = fds_and_sockets(pid);
        let (ds, dr) = (sent - self.sent, recv.saturating_sub(self.recv));
        println!(
            "soak t={:>5.0}s fds={fds} sockets={socks} rss={}KiB cpu={:.2}µs/pkt sent={ds} recv={dr} loss={:.3}%",
            now.duration_since(self.t0).as_secs_f64(),
            rss_kib(pid),
            (cpu - self.cpu) * 1e6 / dr.max(1) as f64,
            100.0 * ds.saturating_sub(dr) as f64 / ds.max(1) as f64
        );
        (self.last, self.cpu, self.sent, self.recv) = (now, cpu, sent, recv);
    }
}

fn run_load(
    relay: &mut Relay,
    calls: usize,
    secs: u64,
    sample_every: Option<Duration>,
) -> Result<Outcome, String> {
    let mut ng = Ng::new(relay.ng).map_err(|e| e.to_string())?;
    let pid = relay.child.id();
    let rss0 = rss_kib(pid);
    let socks: [Vec<UdpSocket>; 2] = [
        (0..SOCKS)
            .map(|_| udp_batch::bind_loopback())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
        (0..SOCKS)
            .map(|_| udp_batch::bind_loopback())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
    ];
    let mut list = Vec::with_capacity(calls);
    for n in 0..calls {
        list.push(setup_call(&mut ng, n, relay.flags, &socks)?);
    }
    let rss1 = rss_kib(pid);

    // The transmit side stays with the sender (this thread), the receive contexts go to the
    // receiver thread.
    struct Tx {
        sock: usize,
        dest: SocketAddr,
        ctx: SrtpContext,
        ssrc: u32,
        seq: u16,
        ts: u32,
    }
    let mut txs: Vec<Tx> = Vec::with_capacity(calls * 2);
    let mut rxs: Vec<[SrtpContext; 2]> = Vec::with_capacity(calls);
    let ids: Vec<String> = list.iter().map(|c| c.id.clone()).collect();
    for call in list {
        let [a, b] = call.ua;
        rxs.push([a.rx, b.rx]);
        for ua in [a.tx, b.tx].into_iter().zip([
            (a.sock, a.dest, a.ssrc, a.seq, a.ts),
            (b.sock, b.dest, b.ssrc, b.seq, b.ts),
        ]) {
            let (ctx, (sock, dest, ssrc, seq, ts)) = ua;
            txs.push(Tx {
                sock,
                dest,
                ctx,
                ssrc,
                seq,
                ts,
            });
        }
    }

    // Receiver: one epoll over the shared sockets, recvmmsg, kernel receive timestamps.
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let rx_socks: Vec<UdpSocket> = socks
        .iter()
        .flatten()
        .map(|s| s.try_clone())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let recv_thread = {
        let stop = stop.clone();
        let received = received.clone();
        std::thread::spawn(move || -> (Vec<u32>, f64) {
            let cpu0 = thread_cpu_secs();
            let mut lat_us = Vec::with_capacity(1 << 20);
            // SAFETY: plain syscalls; the fds stay open while `rx_socks` lives in this thread.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            for (i, sock) in rx_socks.iter().enumerate() {
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: i as u64,
                };
                // SAFETY: valid epoll fd, valid socket fd, live event.
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) };
            }
            let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
            let mut rb = RecvBatch::new();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `evs` has room for 64 events.
                let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 64, 50) };
                for ev in evs.iter().take(n.max(0) as usize) {
                    let sock = &rx_socks[ev.u64 as usize];
                    loop {
                        let got = udp_batch::recv_batch(sock, &mut rb);
                        for i in 0..got {
                            let buf = &mut rb.bufs[i][..rb.lens[i]];
                            let Some(h) = buf.get(8..12) else { continue };
                            let ssrc = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                            // Side A's packets arrive at B (and the other way round).
                            let to = match ssrc >> 28 {
                                1 => 1,
                                2 => 0,
                                _ => continue,
                            };
                            let Some(c) = rxs.get_mut((ssrc & 0x0fff_ffff) as usize) else {
                                continue;
                            };
                            let Ok(plain) = c[to].unprotect_rtp(buf) else {
                                continue;
                            };
                            if plain >= 12 + 8 && rb.stamps[i] != 0 {
                                let mut t = [0u8; 8];
                                t.copy_from_slice(&buf[12..20]);
                                let sent_ns = u64::from_be_bytes(t);
                                let us = rb.stamps[i].saturating_sub(sent_ns) / 1000;
                                lat_us.push(us.min(u64::from(u32::MAX)) as u32);
                            }
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        if got < BATCH {
                            break;
                        }
                    }
                }
            }
            // SAFETY: closing the epoll fd this thread created.
            unsafe { libc::close(ep) };
            (lat_us, thread_cpu_secs() - cpu0)
        })
    };

    // Sender: 20 ms ticks, each spread over 20 slots of 1 ms so the load is smooth; in a slot,
    // each shared socket sends its calls' packets with sendmmsg, BATCH at a time, each
    // timestamped (CLOCK_REALTIME) just before its batch is built.
    let mut by_slot_sock: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); SOCKS * 2]; 20];
    for (i, tx) in txs.iter().enumerate() {
        let side = i % 2;
        by_slot_sock[(i / 2) % 20][side * SOCKS + tx.sock].push(i);
    }
    let send_socks: Vec<&UdpSocket> = socks.iter().flatten().collect();
    let start = Instant::now();
    let warmup = Duration::from_secs(2);
    let total = warmup + Duration::from_secs(secs);
    let mut sent: u64 = 0;
    let mut sent_at_warm = 0;
    let mut cpu0 = None;
    let mut split0 = (0.0, 0.0);
    let mut recv_at_warm = 0;
    let mut gen_cpu0 = 0.0;
    let mut bufs = vec![[0u8; DGRAM]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut dests = ["127.0.0.1:9".parse::<SocketAddr>().unwrap(); BATCH];
    let mut tick = 0u64;
    let mut t_measure = start;
    let mut sampler = sample_every.map(|every| Sampler {
        every,
        last: start,
        cpu: cpu_secs(pid),
        sent: 0,
        recv: 0,
        t0: start,
    });
    while start.elapsed() < total {
        for (slot, socks_of_slot) in by_slot_sock.iter().enumerate() {
            let due = start
                + Duration::from_millis(tick * 20)
                + Duration::from_micros((slot as u64) * 1000);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            for (si, members) in socks_of_slot.iter().enumerate() {
                for chunk in members.chunks(BATCH) {
                    let ns = udp_batch::realtime_ns();
                    let mut k = 0;
                    for &i in chunk {
                        let tx = &mut txs[i];
                        let buf = &mut bufs[k];
                        buf[0] = 0x80;
                        buf[1] = 0;
                        buf[2..4].copy_from_slice(&tx.seq.to_be_bytes());
                        buf[4..8].copy_from_slice(&tx.ts.to_be_bytes());
                        buf[8..12].copy_from_slice(&tx.ssrc.to_be_bytes());
                        buf[12..20].copy_from_slice(&ns.to_be_bytes());
                        buf[20..12 + PAYLOAD].fill(0xff);
                        tx.seq = tx.seq.wrapping_add(1);
                        tx.ts = tx.ts.wrapping_add(160);
                        if let Ok(len) = tx.ctx.protect_rtp(buf, 12 + PAYLOAD) {
                            lens[k] = len;
                            dests[k] = tx.dest;
                            k += 1;
                        }
                    }
                    sent +=
                        udp_batch::send_batch(send_socks[si], &bufs[..k], &lens[..k], &dests[..k])
                            as u64;
                }
            }
        }
        tick += 1;
        if let Some(sm) = sampler.as_mut() {
            sm.sample(pid, sent, received.load(Ordering::Relaxed));
        }
        if cpu0.is_none() && start.elapsed() >= warmup {
            cpu0 = Some(cpu_secs(pid));
            split0 = cpu_split(pid);
            recv_at_warm = received.load(Ordering::Relaxed);
            sent_at_warm = sent;
            gen_cpu0 = thread_cpu_secs();
            t_measure = Instant::now();
        }
    }
    let cpu1 = cpu_secs(pid);
    let split1 = cpu_split(pid);
    let wall = t_measure.elapsed().as_secs_f64();
    let gen_cpu = thread_cpu_secs() - gen_cpu0;
    let sent_measured = sent - sent_at_warm;
    // Let what is still queued (in the relay or in the receiver's sockets) arrive: wait until
    // nothing more came for 300 ms, at most 10 s.
    let drain_end = Instant::now() + Duration::from_secs(10);
    let mut last = received.load(Ordering::Relaxed);
    while Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(300));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut lat, recv_cpu) = recv_thread.join().map_err(|_| "receiver panicked")?;
    let recv_total = received.load(Ordering::Relaxed);
    let relayed_measured = recv_total.saturating_sub(recv_at_warm).max(1);
    let mut ended = 0;
    for id in &ids {
        let r = ng.call(vec![("command", s("delete")), ("call-id", s(id))]);
        if r.is_ok_and(|r| get_str(&r, "result").as_deref() == Some("ok")) {
            ended += 1;
        }
    }
    if sample_every.is_some() || ended != ids.len() {
        std::thread::sleep(Duration::from_millis(500));
        let (fds, socks) = fds_and_sockets(pid);
        println!(
            "{}: {ended}/{} calls ended cleanly (ng delete ok); after: fds={fds} sockets={socks} rss={}KiB",
            relay.name,
            ids.len(),
            rss_kib(pid)
        );
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
    let target = (calls * 2 * 50) as f64 * wall;
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
        rate_reached: sent_measured as f64 / target.max(1.0),
        gen_cpu_percent: (gen_cpu + recv_cpu) * 100.0 / wall.max(1e-9),
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
    // Soak mode: print the relay's descriptors, RSS, CPU per packet and loss every N seconds.
    let sample_every = arg("--sample-secs")
        .and_then(|x| x.parse().ok())
        .map(Duration::from_secs);
    // Another build of srtp-edge (an older commit, to compare in one run); default: this one.
    let bin = arg("--srtp-edge-bin").unwrap_or_else(|| env!("CARGO_BIN_EXE_srtp-edge").into());
    // Extra `[media]` lines for srtp-edge, e.g. "io_uring = false" or "batch_pause_us = 0".
    let media = arg("--media").unwrap_or_default().replace(';', "\n");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nofile = raise_nofile();
    if let Some(&max) = calls.iter().max() {
        if (max * 4 + 100) as u64 > nofile {
            eprintln!("open-file limit {nofile} is too low for {max} calls (4 sockets per call)");
        }
    }
    let mut results: Vec<Outcome> = Vec::new();
    let floor_secs = if test_mode { 0.2 } else { 2.0 };
    let mut floors = Vec::new();
    match udp_echo_floor(floor_secs) {
        Ok((us, n)) => {
            println!(
                "udp-echo floor: {us:.2}µs/pkt ({n} packets, saturated recvfrom+sendto, no crypto)"
            );
            floors.push(us);
        }
        Err(e) => eprintln!("udp-echo floor: {e}"),
    }
    for &n in &calls {
        for which in ["srtp-edge", "rtpengine"] {
            if only.as_deref().is_some_and(|o| o != which) {
                continue;
            }
            let relay = if which == "srtp-edge" {
                start_srtp_edge(cores, &bin, n, &media, record)
            } else {
                start_rtpengine(cores, n, record)
            };
            let mut relay = match relay {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{which}: cannot start: {e}");
                    continue;
                }
            };
            match run_load(&mut relay, n, secs, sample_every) {
                Ok(o) => {
                    println!(
                        "{:<10} calls={:<5} sent={:<8} recv={:<8} loss={:.3}% cpu={:.2}µs/pkt ({:.1}% of a core) latency p50={:.0}µs p99={:.0}µs rss/call={:.1}KiB user={:.0}% rate={:.1}% gen-cpu={:.0}%",
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
                        o.user_share * 100.0,
                        o.rate_reached * 100.0,
                        o.gen_cpu_percent
                    );
                    if let Some(d) = &relay.rec_dir {
                        // Let the writer seal the last chunks, then weigh what is on disk.
                        std::thread::sleep(Duration::from_secs(2));
                        let bytes = dir_bytes(d);
                        // Per relayed packet (what reached the disk for what was relayed), and per
                        // call-minute at the nominal 2 x 50 packets/s.
                        let per_pkt = bytes as f64 / o.received.max(1) as f64;
                        println!(
                            "{:<10} calls={:<5} recordings on disk: {} bytes, {:.0} bytes per relayed packet, {:.0} bytes per call-minute",
                            o.relay,
                            n,
                            bytes,
                            per_pkt,
                            per_pkt * 100.0 * 60.0
                        );
                    }
                    if o.rate_reached < 0.99 {
                        println!(
                            "  (the load generator reached only {:.1}% of the target rate)",
                            o.rate_reached * 100.0
                        );
                    }
                    results.push(o);
                }
                Err(e) => eprintln!("{which} calls={n}: {e}"),
            }
        }
    }
    if let Ok((us, n)) = udp_echo_floor(floor_secs) {
        println!("udp-echo floor (again, after the relays): {us:.2}µs/pkt ({n} packets)");
        floors.push(us);
    }
    // The lower of the two: the floor is what the machine can do when it is least disturbed.
    let floor = floors.iter().copied().fold(f64::NAN, f64::min);
    for &n in &calls {
        let get = |name| results.iter().find(|o| o.relay == name && o.calls == n);
        if let (Some(a), Some(b)) = (get("srtp-edge"), get("rtpengine")) {
            println!(
                "calls={n}: rtpengine/srtp-edge CPU per packet = {:.2}x",
                b.cpu_us_per_packet / a.cpu_us_per_packet.max(1e-9)
            );
        }
        if let Some(a) = get("srtp-edge") {
            println!(
                "calls={n}: srtp-edge / udp-echo floor = {:.2}x",
                a.cpu_us_per_packet / floor
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
