//! Real-peer interop harness: one SIP-over-TLS call between two real `baresip` user agents
//! through a real Kamailio proxy whose `rtpengine` module drives an "ng" media relay (the real
//! rtpengine, or srtp-edge's control listener), with SDES-SRTP mandatory on both legs.
//!
//! [`run_call`] generates everything in a temporary directory (CA and certificates, tone WAVs,
//! configs from the templates in `interop/`), starts tshark on `lo` (when running as root),
//! kamailio, the callee then the caller, waits (bounded) for the caller to hang up, stops
//! everything, and analyses what happened:
//! - whether the call connected (the caller's log says "Call established");
//! - the received-audio recordings (baresip `sndfile`, `*-dec.wav`): the share of the energy at
//!   the other side's tone (caller sends 440 Hz, callee sends 1000 Hz), block by block (Goertzel);
//! - the ng requests and replies, decoded from the capture (plaintext bencode on loopback);
//! - every other UDP datagram in the capture (that is, all the media) classified as SRTP, plain
//!   RTP, SRTCP, plain RTCP or other (see [`MediaCheck`] for the rule).
//!
//! Every process is started in its own process group and killed (SIGTERM, then SIGKILL) when
//! its guard is dropped, so a failing or panicking test leaves nothing behind.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Root of the templates (`interop/` in the repository).
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// The tone the caller sends (Hz).
pub const CALLER_TONE_HZ: f64 = 440.0;
/// The tone the callee sends (Hz).
pub const CALLEE_TONE_HZ: f64 = 1000.0;

/// The `rtpengine_offer()` / `rtpengine_answer()` flags: SRTP with SDES on both legs (RTP/SAVP),
/// no DTLS, no ICE, and none of the suites that do not encrypt (NULL) or that srtp-edge does not
/// implement (F8). Nothing here can make a leg plain RTP.
pub const DEFAULT_NG_FLAGS: &str = "RTP/SAVP DTLS=off ICE=remove replace-origin \
     replace-session-connection SDES-no-NULL_HMAC_SHA1_80 SDES-no-NULL_HMAC_SHA1_32 \
     SDES-no-F8_128_HMAC_SHA1_80 SDES-no-F8_128_HMAC_SHA1_32";

/// Only one call at a time per test process: the calls are timing-sensitive on a loaded
/// 2-core machine and share the loopback capture.
static ONE_CALL: Mutex<()> = Mutex::new(());

/// What the caller of [`run_call`] requires beyond a connected call with the tones through.
#[derive(Clone, Debug)]
pub struct Expectations {
    /// How long the caller stays in the call before it hangs up (baresip `-t`), seconds.
    pub call_secs: u64,
    /// Flags given to `rtpengine_offer()` in kamailio.cfg.
    pub offer_flags: String,
    /// Flags given to `rtpengine_answer()` in kamailio.cfg.
    pub answer_flags: String,
    /// Each leg must get its own SDES keys from the relay: no `inline:` key of the offer appears
    /// in the relayed offer, none of the answer in the relayed answer. rtpengine does not do
    /// this (it passes the keys through when both legs use the same suite); srtp-edge must.
    pub distinct_leg_keys: bool,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            call_secs: 8,
            offer_flags: DEFAULT_NG_FLAGS.to_string(),
            answer_flags: DEFAULT_NG_FLAGS.to_string(),
            distinct_leg_keys: false,
        }
    }
}

/// How much of a recording is the expected tone.
#[derive(Clone, Debug, Default)]
pub struct ToneLevel {
    /// The recording analysed, if baresip wrote one.
    pub path: Option<PathBuf>,
    /// Seconds of audio in the recording.
    pub secs: f64,
    /// 100 ms blocks whose energy is not silence.
    pub active_blocks: usize,
    /// Blocks in which the expected tone holds at least half of the block's energy.
    pub tone_blocks: usize,
    /// Mean share (0..1) of the energy at the expected tone, over the active blocks.
    pub tone_share: f64,
    /// Mean share at the sender's own tone (echo / loop-back; must stay near 0).
    pub own_tone_share: f64,
}

impl ToneLevel {
    /// Seconds during which the expected tone dominated.
    pub fn tone_secs(&self) -> f64 {
        self.tone_blocks as f64 * 0.1
    }
}

/// One ng message seen on the wire.
#[derive(Clone, Debug)]
pub struct NgMessage {
    /// Sent to the ng port (true) or from it (false).
    pub request: bool,
    /// The cookie.
    pub cookie: String,
    /// The bencoded dictionary.
    pub body: Bencode,
}

impl NgMessage {
    /// `command` of a request, `result` of a reply.
    pub fn verb(&self) -> String {
        let k = if self.request { "command" } else { "result" };
        self.body.get(k).map(|v| v.text()).unwrap_or_default()
    }

    /// The SDP carried, if any.
    pub fn sdp(&self) -> Option<String> {
        self.body.get("sdp").map(|v| v.text())
    }
}

/// The result of classifying every media datagram of the capture.
///
/// The rule, for each UDP datagram on loopback during the call that is not ng traffic:
/// - RTCP-looking (version 2, packet type 200-204): plain RTCP if its RTCP length fields add
///   up exactly to the datagram size (a compound RTCP packet with nothing after it); SRTCP always
///   has the 4-byte E|index word and an auth tag after the compound packet, so it never does.
///   Plain RTCP from a relay port (a port in the relay's SDPs) is *plain RTCP* (a failure);
///   from a user agent it is *peer plain RTCP* (reported: baresip 1.0 does it, see the field).
/// - RTP-looking (version 2, other packet types): the payload after the header (CSRCs and
///   extension included) must be one PCMU frame (160 bytes, 20 ms) or one RFC 4733 event
///   (4 bytes) *plus* an auth tag of 4, 10 or 16 bytes (HMAC-SHA1-32, -80, GCM). Anything of the
///   plain sizes (160 / 4) or of no SRTP size is *plain RTP*.
/// - Any datagram (RTP or not) whose payload, read as μ-law, carries one of the two tones with
///   at least a quarter of its energy (Goertzel) is *plain RTP*: encrypted payload is noise,
///   with about 1/80 of its energy in any one bin.
///
/// The check is not vacuous: the test also requires a minimum of SRTP packets in each of the
/// four directions (caller→relay, relay→callee, callee→relay, relay→caller).
#[derive(Clone, Debug, Default)]
pub struct MediaCheck {
    /// Datagrams classified SRTP, per (source port, destination port).
    pub srtp_flows: BTreeMap<(u16, u16), usize>,
    /// SRTP datagrams.
    pub srtp: usize,
    /// Plain RTP datagrams (must be 0).
    pub plain_rtp: usize,
    /// SRTCP datagrams.
    pub srtcp: usize,
    /// Plain RTCP datagrams sent by the relay (must be 0).
    pub plain_rtcp: usize,
    /// Plain RTCP datagrams sent by the user agents to the relay. baresip 1.0 sends its RTCP
    /// APP "PING" at stream start and its RTCP BYE at hangup outside SRTP; the relay must drop
    /// them (they never appear on the relay-to-peer side, which `plain_rtcp` covers).
    pub peer_plain_rtcp: usize,
    /// Datagrams carrying a tone in clear (must be 0; also counted in `plain_rtp`).
    pub tone_in_clear: usize,
    /// Other datagrams (not RTP version 2).
    pub other: usize,
    /// A few descriptions of the offending datagrams.
    pub offenders: Vec<String>,
}

/// The packet capture of the call.
#[derive(Clone, Debug)]
pub enum Capture {
    /// No capture (not root, or tshark missing); the reason.
    Skipped(String),
    /// What the capture showed.
    Done {
        /// The pcap file.
        pcap: PathBuf,
        /// ng requests and replies, in capture order.
        ng: Vec<NgMessage>,
        /// The media datagrams, classified.
        media: MediaCheck,
        /// Every RTP packet authenticated and decrypted with the SDP keys, per direction.
        srtp: BTreeMap<(u16, u16), FlowVerdict>,
    },
}

/// Everything [`run_call`] learned about the call.
pub struct CallOutcome {
    /// The caller's log says the call was established.
    pub connected: bool,
    /// What the caller received (should be the callee's 1000 Hz tone).
    pub caller_heard: ToneLevel,
    /// What the callee received (should be the caller's 440 Hz tone).
    pub callee_heard: ToneLevel,
    /// The capture and its analysis.
    pub capture: Capture,
    /// The SDES inline keys per SDP, in ng order: (ng verb, request?, keys).
    pub sdp_keys: Vec<(String, bool, Vec<String>)>,
    /// Offer/answer keys per leg: true when no key was copied from one leg to the other
    /// (None without a capture).
    pub distinct_leg_keys: Option<bool>,
    /// The caller's and the callee's RTP port ranges (every media datagram has one end there).
    pub caller_rtp: (u16, u16),
    /// See `caller_rtp`.
    pub callee_rtp: (u16, u16),
    /// Logs of every process, for failure messages.
    pub logs: String,
    /// The working directory (configs, logs, recordings, `call.pcap`, `ng.txt`); deleted when
    /// the outcome is dropped unless `INTEROP_KEEP` is set in the environment.
    pub dir: PathBuf,
    /// Deletes `dir` on drop (None when kept).
    guard: Option<tempfile::TempDir>,
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "connected: {}", self.connected)?;
        for (who, t) in [
            ("caller", &self.caller_heard),
            ("callee", &self.callee_heard),
        ] {
            writeln!(
                f,
                "{who} heard: {:.1} s recorded, {} active blocks, {} tone blocks ({:.1} s), \
                 tone share {:.3}, own tone share {:.3} ({:?})",
                t.secs,
                t.active_blocks,
                t.tone_blocks,
                t.tone_secs(),
                t.tone_share,
                t.own_tone_share,
                t.path
            )?;
        }
        match &self.capture {
            Capture::Skipped(r) => writeln!(f, "capture skipped: {r}")?,
            Capture::Done {
                pcap,
                ng,
                media,
                srtp,
            } => {
                writeln!(f, "capture: {}", pcap.display())?;
                for m in ng {
                    writeln!(
                        f,
                        "  ng {} {} {}",
                        if m.request { "->" } else { "<-" },
                        m.cookie,
                        m.body.summary()
                    )?;
                }
                writeln!(
                    f,
                    "  media: srtp {} plain_rtp {} srtcp {} plain_rtcp {} peer_plain_rtcp {} \
                     tone_in_clear {} other {}",
                    media.srtp,
                    media.plain_rtp,
                    media.srtcp,
                    media.plain_rtcp,
                    media.peer_plain_rtcp,
                    media.tone_in_clear,
                    media.other
                )?;
                for ((s, d), n) in &media.srtp_flows {
                    writeln!(f, "  srtp flow {s} -> {d}: {n}")?;
                }
                for ((s, d), v) in srtp {
                    writeln!(
                        f,
                        "  srtp verified {s} -> {d}: {} ok, {} failed, key {:?}, \
                         decrypted tone 440 Hz {} / 1000 Hz {}; srtcp {} ok, {} failed",
                        v.verified,
                        v.unverified,
                        v.key,
                        v.caller_tone,
                        v.callee_tone,
                        v.srtcp_verified,
                        v.srtcp_unverified
                    )?;
                }
                for o in &media.offenders {
                    writeln!(f, "  OFFENDER {o}")?;
                }
            }
        }
        for (verb, req, keys) in &self.sdp_keys {
            let dir = if *req { "request" } else { "reply" };
            // Only the first 8 characters: enough to compare, not a usable key.
            let short: Vec<String> = keys.iter().map(|k| format!("{:.8}…", k)).collect();
            writeln!(f, "  sdp keys {verb} {dir}: {short:?}")?;
        }
        writeln!(f, "distinct leg keys: {:?}", self.distinct_leg_keys)
    }
}

impl CallOutcome {
    /// Panics with everything known unless the call connected, each side heard the other's
    /// tone for at least `min_secs`, there was no plain media, and (when captured) each of the
    /// four media directions carried at least `min_packets` SRTP packets.
    pub fn assert_good(&self, expect: &Expectations, min_secs: f64, min_packets: usize) {
        let ctx = || format!("{self}\n--- logs ---\n{}", self.logs);
        assert!(self.connected, "call did not connect\n{}", ctx());
        for (who, t) in [
            ("caller", &self.caller_heard),
            ("callee", &self.callee_heard),
        ] {
            assert!(t.path.is_some(), "{who} wrote no recording\n{}", ctx());
            assert!(
                t.tone_secs() >= min_secs && t.tone_share > 0.8 && t.own_tone_share < 0.05,
                "{who} did not hear the other side's tone\n{}",
                ctx()
            );
        }
        if let Capture::Done {
            ng, media, srtp, ..
        } = &self.capture
        {
            assert_eq!(media.plain_rtp, 0, "plain RTP on the wire\n{}", ctx());
            assert_eq!(media.plain_rtcp, 0, "plain RTCP on the wire\n{}", ctx());
            assert_eq!(
                media.tone_in_clear,
                0,
                "tone in clear on the wire\n{}",
                ctx()
            );
            for verb in ["offer", "answer", "delete"] {
                assert!(
                    ng.iter().any(|m| m.request && m.verb() == verb),
                    "no ng {verb} seen\n{}",
                    ctx()
                );
            }
            let busy = media
                .srtp_flows
                .values()
                .filter(|n| **n >= min_packets)
                .count();
            assert!(
                busy >= 4,
                "fewer than 4 media directions with {min_packets} SRTP packets\n{}",
                ctx()
            );
            // Packet level: each of the four directions authenticates with an SDP key and
            // decrypts to the tone its sender sent; nothing fails to authenticate.
            let inr = |p: u16, r: (u16, u16)| (r.0..=r.1).contains(&p);
            let (cr, ce) = (self.caller_rtp, self.callee_rtp);
            let pick = |f: &dyn Fn(u16, u16) -> bool| {
                srtp.iter()
                    .filter(|((s, d), _)| f(*s, *d))
                    .max_by_key(|(_, v)| v.verified)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let legs = [
                ("caller -> relay", pick(&|s, _| inr(s, cr)), true),
                ("relay -> callee", pick(&|_, d| inr(d, ce)), true),
                ("callee -> relay", pick(&|s, _| inr(s, ce)), false),
                ("relay -> caller", pick(&|_, d| inr(d, cr)), false),
            ];
            for (name, v, from_caller) in &legs {
                let tone = if *from_caller {
                    v.caller_tone
                } else {
                    v.callee_tone
                };
                assert!(
                    v.verified >= min_packets && tone >= min_packets,
                    "{name}: {} packets authenticated, {tone} decrypt to the sender's tone\n{}",
                    v.verified,
                    ctx()
                );
            }
            // RTCP the relay sends must authenticate as SRTCP with a key of the call (the user
            // agents' own plain RTCP, see MediaCheck::peer_plain_rtcp, is theirs).
            let relay_rtcp_bad: usize = srtp
                .iter()
                .filter(|((s, d), _)| !inr(*s, cr) && !inr(*s, ce) && (inr(*d, cr) || inr(*d, ce)))
                .map(|(_, v)| v.srtcp_unverified)
                .sum();
            assert_eq!(
                relay_rtcp_bad,
                0,
                "RTCP from the relay that is not SRTCP under a key of the call\n{}",
                ctx()
            );
            let failed: usize = srtp.values().map(|v| v.unverified).sum();
            assert_eq!(
                failed,
                0,
                "RTP that authenticates with no SDP key\n{}",
                ctx()
            );
            if expect.distinct_leg_keys {
                assert!(
                    legs[0].1.key_salt != legs[1].1.key_salt
                        && legs[2].1.key_salt != legs[3].1.key_salt,
                    "the relay used one leg's key on the other leg on the wire\n{}",
                    ctx()
                );
                assert_eq!(
                    self.distinct_leg_keys,
                    Some(true),
                    "a leg reused the other leg's SDES key\n{}",
                    ctx()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process in its own process group, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Option<Child>,
    /// stdout and stderr of the process.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr to `log`, stdin closed, in a new process group.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Proc> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn()?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// True when the process has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// True when the process has exited with status 0.
    pub fn exit_ok(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(s)) if s.success()),
            None => false,
        }
    }

    /// Waits up to `limit` for the process to exit on its own; true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.exited()
    }

    /// Sends `sig` to the process group, waits up to `grace`, then SIGKILLs the group.
    pub fn stop_with(&mut self, sig: i32, grace: Duration) {
        let Some(pid) = self.pid() else { return };
        if !self.exited() {
            // SAFETY: killpg(2) on the process group we created for our own child.
            unsafe {
                libc::killpg(pid, sig);
            }
            self.wait_exit(grace);
        }
        // The group may hold children (kamailio's workers) even when the leader is gone.
        // SAFETY: as above; ESRCH when the group is empty is harmless.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            s = String::from_utf8_lossy(&b).into_owned();
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(5));
    }
}

/// Waits (bounded) until `ready()` or the process exits; false if it exited or timed out.
pub fn wait_until(p: &mut Proc, limit: Duration, mut ready: impl FnMut(&Proc) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready(p) {
            return true;
        }
        if p.exited() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// True when something accepts TCP connections on `addr`.
pub fn tcp_up(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Two consecutive free TCP+UDP ports `p, p+1` on 127.0.0.1 (baresip listens for UDP/TCP on
/// `p` and for TLS on `p+1`).
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let p = super::free_tcp_port();
        if p >= 65534 {
            continue;
        }
        let ok = (p..=p + 1).all(|q| {
            TcpListener::bind(("127.0.0.1", q)).is_ok() && UdpSocket::bind(("127.0.0.1", q)).is_ok()
        });
        if ok {
            return p;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

/// A port range of `len` ports in 20000-59999 with no UDP socket bound at its first port,
/// different from one call to the next.
pub fn port_range(len: u16) -> (u16, u16) {
    static NEXT: Mutex<u32> = Mutex::new(0);
    let mut n = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(*n * 104_729);
    *n += 1;
    let slots = 40_000 / u32::from(len);
    for i in 0..slots {
        let base = 20_000 + ((seed.wrapping_add(i * 7)) % slots) * u32::from(len);
        let base = base as u16;
        if UdpSocket::bind(("127.0.0.1", base)).is_ok() {
            return (base, base + len - 1);
        }
    }
    panic!("no free port range");
}

// ---------------------------------------------------------------------------------------------
// The relay under test: the real rtpengine

/// A real rtpengine (Debian `rtpengine-daemon`, userspace only) on loopback.
pub struct Rtpengine {
    /// Its ng control address.
    pub ng: SocketAddr,
    /// The process.
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl Rtpengine {
    /// Starts `rtpengine` with ng on a free UDP port and a media range of its own; retries
    /// with other ports if it does not come up (bounded). Panics if it never answers `ping`.
    pub fn start() -> Rtpengine {
        let dir = tempfile::tempdir().unwrap();
        let mut last = String::new();
        for attempt in 0..4 {
            let ng: SocketAddr = format!("127.0.0.1:{}", super::free_udp_port())
                .parse()
                .unwrap();
            let (pmin, pmax) = port_range(200);
            let mut cmd = Command::new("rtpengine");
            cmd.args([
                "--foreground",
                "--config-file=none",
                "--table=-1",
                "--interface=127.0.0.1",
                "--log-stderr",
                "--log-level=6",
                "--num-threads=2",
                "--delete-delay=0",
            ])
            .arg(format!("--listen-ng={ng}"))
            .arg(format!("--port-min={pmin}"))
            .arg(format!("--port-max={pmax}"))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("rtpengine.pid").display()
            ));
            let log = dir.path().join(format!("rtpengine-{attempt}.log"));
            let mut p = Proc::spawn("rtpengine", cmd, &log).expect("spawn rtpengine");
            if wait_until(&mut p, Duration::from_secs(20), |_| ng_ping(ng)) {
                return Rtpengine {
                    ng,
                    proc: p,
                    _dir: dir,
                };
            }
            p.stop_with(libc::SIGTERM, Duration::from_secs(3));
            last = p.log_text();
        }
        panic!("rtpengine did not answer ng ping:\n{last}");
    }
}

/// Sends an ng `ping` to `addr`; true on `pong`.
pub fn ng_ping(addr: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    if s.send_to(b"interop_ping d7:command4:pinge", addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => {
            let reply = &buf[..n];
            reply.starts_with(b"interop_ping ") && contains(reply, b"4:pong")
        }
        Err(_) => false,
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Files: certificates, tones, templates

/// Generates a CA and one certificate for 127.0.0.1/localhost (ECDSA P-256) into `dir`:
/// `ca.pem`, `cert.pem`, `key.pem`, and `cert+key.pem` (what baresip wants).
pub fn make_certs(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "srtp-edge interop CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "127.0.0.1");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("cert+key.pem"),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
    .unwrap();
}

/// Writes a mono 16-bit 8 kHz WAV of a sine at `hz`, half scale, `secs` long.
pub fn write_tone_wav(path: &Path, hz: f64, secs: u32) {
    let n = 8000 * secs as usize;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let v = (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin() * 16384.0;
        data.extend_from_slice(&(v as i16).to_le_bytes());
    }
    let mut w = Vec::with_capacity(44 + data.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    std::fs::write(path, w).unwrap();
}

/// Reads the samples of a 16-bit PCM WAV (first channel), and its sample rate.
pub fn read_wav(path: &Path) -> Option<(u32, Vec<f64>)> {
    let b = std::fs::read(path).ok()?;
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let (mut rate, mut channels, mut bits) = (0u32, 1usize, 16u16);
    let mut i = 12;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().ok()?) as usize;
        let body = &b[i + 8..(i + 8 + len).min(b.len())];
        if id == b"fmt " && body.len() >= 16 {
            channels = u16::from_le_bytes([body[2], body[3]]).max(1) as usize;
            rate = u32::from_le_bytes(body[4..8].try_into().ok()?);
            bits = u16::from_le_bytes([body[14], body[15]]);
        } else if id == b"data" {
            if bits != 16 {
                return None;
            }
            let frame = 2 * channels;
            let s = body
                .chunks_exact(frame)
                .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect();
            return Some((rate, s));
        }
        i += 8 + len + (len & 1);
    }
    None
}

/// Share (0..1) of the energy of `x` at `hz` (Goertzel, sample rate `rate`): 1 for a pure
/// sine at that frequency over a whole number of periods, about 2/N for white noise.
pub fn tone_share(x: &[f64], rate: f64, hz: f64) -> f64 {
    let energy: f64 = x.iter().map(|v| v * v).sum();
    if energy <= 0.0 || x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for v in x {
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - c * s1 * s2;
    (2.0 * power / (x.len() as f64 * energy)).min(1.0)
}

/// Analyses a recording block by block (100 ms) for `hz` (expected) and `own_hz`.
pub fn analyse_recording(path: Option<PathBuf>, hz: f64, own_hz: f64) -> ToneLevel {
    let mut t = ToneLevel {
        path: path.clone(),
        ..ToneLevel::default()
    };
    let Some((rate, s)) = path.as_deref().and_then(read_wav) else {
        return t;
    };
    let rate = f64::from(rate.max(1));
    t.secs = s.len() as f64 / rate;
    let block = (rate / 10.0) as usize;
    let (mut sum, mut own) = (0.0, 0.0);
    for b in s.chunks_exact(block) {
        let rms = (b.iter().map(|v| v * v).sum::<f64>() / b.len() as f64).sqrt();
        if rms < 100.0 {
            continue; // silence (-50 dBFS)
        }
        t.active_blocks += 1;
        let share = tone_share(b, rate, hz);
        sum += share;
        own += tone_share(b, rate, own_hz);
        if share >= 0.5 {
            t.tone_blocks += 1;
        }
    }
    if t.active_blocks > 0 {
        t.tone_share = sum / t.active_blocks as f64;
        t.own_tone_share = own / t.active_blocks as f64;
    }
    t
}

/// Replaces every `@@KEY@@` of `template` from `vars`; panics on a placeholder left over.
pub fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("@@{k}@@"), v);
    }
    let body: String = s
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(!body.contains("@@"), "unfilled placeholder in:\n{s}");
    s
}

pub fn newest_matching(dir: &Path, suffix: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v.pop()
}

// ---------------------------------------------------------------------------------------------
// The call

/// Places one call through kamailio, whose rtpengine module talks ng to `ng_addr`, and reports
/// what happened (see the module documentation). Panics only if a peer cannot be started at
/// all; everything about the call itself is returned for the test to assert.
pub fn run_call(ng_addr: SocketAddr, expect: &Expectations) -> CallOutcome {
    let _one = ONE_CALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tpl = interop_dir();
    make_certs(d);
    for s in ["kamailio", "caller", "callee", "rec_caller", "rec_callee"] {
        std::fs::create_dir_all(d.join(s)).unwrap();
    }
    let tone_secs = (expect.call_secs + 60) as u32;
    write_tone_wav(&d.join("caller.wav"), CALLER_TONE_HZ, tone_secs);
    write_tone_wav(&d.join("callee.wav"), CALLEE_TONE_HZ, tone_secs);

    // Capture first, so the first ng message is in it.
    // Every media datagram of the call has one end in a user agent's RTP range: capturing only
    // those (and ng) keeps other tests' loopback traffic out of the analysis.
    let (callee_rtp_min, callee_rtp_max) = port_range(100);
    let (caller_rtp_min, caller_rtp_max) = port_range(100);
    let in_ua_range = |p: u16| {
        (caller_rtp_min..=caller_rtp_max).contains(&p)
            || (callee_rtp_min..=callee_rtp_max).contains(&p)
    };
    let bpf = format!(
        "udp and (port {} or portrange {caller_rtp_min}-{caller_rtp_max} \
         or portrange {callee_rtp_min}-{callee_rtp_max})",
        ng_addr.port()
    );
    let mut tshark = None;
    let mut capture_skip = None;
    let pcap = d.join("call.pcap");
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        capture_skip = Some("not running as root: no capture on lo".to_string());
    } else {
        let mut cmd = Command::new("tshark");
        cmd.args(["-i", "lo", "-n", "-F", "pcap", "-f", &bpf, "-w"])
            .arg(&pcap);
        match Proc::spawn("tshark", cmd, &d.join("tshark.log")) {
            Ok(mut p) => {
                if wait_until(&mut p, Duration::from_secs(30), |p| {
                    p.log_text().contains("Capturing on")
                }) {
                    tshark = Some(p);
                } else {
                    capture_skip = Some(format!("tshark did not start: {}", p.log_text()));
                }
            }
            Err(e) => capture_skip = Some(format!("tshark not available: {e}")),
        }
    }

    // Callee first, then kamailio (which needs the callee's port), then the caller.
    let call_limit = expect.call_secs + 40;
    let mut peers: Vec<Proc> = Vec::new();
    // Writes a side's baresip config on a fresh pair of SIP ports; returns the UDP/TCP port.
    let write_ua = |side: &str, rmin: u16, rmax: u16| -> u16 {
        let port = free_port_pair();
        let vars = [
            ("SIP_PORT", port.to_string()),
            ("CERT", d.join("cert+key.pem").display().to_string()),
            ("CA", d.join("ca.pem").display().to_string()),
            (
                "TONE_WAV",
                d.join(format!("{side}.wav")).display().to_string(),
            ),
            ("RTP_MIN", rmin.to_string()),
            ("RTP_MAX", rmax.to_string()),
            (
                "SND_PATH",
                d.join(format!("rec_{side}")).display().to_string(),
            ),
        ];
        for f in ["config", "accounts"] {
            let t = std::fs::read_to_string(tpl.join("baresip").join(side).join(f)).unwrap();
            std::fs::write(d.join(side).join(f), fill(&t, &vars)).unwrap();
        }
        port
    };

    // The callee; another port pair if its ports were taken in between (bounded).
    let mut callee_port = 0;
    let mut callee = None;
    for attempt in 0..3 {
        callee_port = write_ua("callee", callee_rtp_min, callee_rtp_max);
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(d.join("callee"))
            .args(["-t", &(call_limit + 20).to_string()]);
        let mut p = Proc::spawn("callee", cmd, &d.join(format!("callee-{attempt}.log"))).unwrap();
        let tls: SocketAddr = format!("127.0.0.1:{}", callee_port + 1).parse().unwrap();
        let up = wait_until(&mut p, Duration::from_secs(30), |_| tcp_up(tls));
        callee = Some(p);
        if up {
            break;
        }
        if let Some(mut p) = callee.take() {
            p.stop_with(libc::SIGTERM, Duration::from_secs(3));
            peers.push(p);
        }
    }
    let callee_ok = callee.is_some();
    let callee = callee.unwrap_or_else(|| peers.pop().expect("a callee attempt"));

    let mut kam = None;
    let mut kam_port = 0;
    let mut kam_logs = String::new();
    for attempt in 0..3 {
        let port = super::free_tcp_port();
        let kd = d.join("kamailio");
        let tls = fill(
            &std::fs::read_to_string(tpl.join("kamailio/tls.cfg")).unwrap(),
            &[
                ("CERT", d.join("cert.pem").display().to_string()),
                ("KEY", d.join("key.pem").display().to_string()),
                ("CA", d.join("ca.pem").display().to_string()),
            ],
        );
        std::fs::write(kd.join("tls.cfg"), tls).unwrap();
        let cfg = fill(
            &std::fs::read_to_string(tpl.join("kamailio/kamailio.cfg")).unwrap(),
            &[
                ("SIP_PORT", port.to_string()),
                ("NG_ADDR", ng_addr.to_string()),
                (
                    "CALLEE_URI",
                    format!("sip:callee@127.0.0.1:{};transport=tls", callee_port + 1),
                ),
                ("TLS_CFG", kd.join("tls.cfg").display().to_string()),
                ("OFFER_FLAGS", expect.offer_flags.clone()),
                ("ANSWER_FLAGS", expect.answer_flags.clone()),
            ],
        );
        std::fs::write(kd.join("kamailio.cfg"), cfg).unwrap();
        let mut cmd = Command::new("kamailio");
        cmd.args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
            .arg(kd.join("kamailio.cfg"))
            .arg("-Y")
            .arg(&kd)
            .arg("-w")
            .arg(&kd)
            .arg("-P")
            .arg(kd.join("kamailio.pid"));
        let mut p =
            Proc::spawn("kamailio", cmd, &d.join(format!("kamailio-{attempt}.log"))).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        if wait_until(&mut p, Duration::from_secs(30), |_| tcp_up(addr)) {
            kam = Some(p);
            kam_port = port;
            break;
        }
        p.stop_with(libc::SIGTERM, Duration::from_secs(3));
        kam_logs.push_str(&p.log_text());
    }
    let kam = kam.unwrap_or_else(|| panic!("kamailio did not start:\n{kam_logs}"));

    let mut caller = None;
    for attempt in 0..3 {
        if !callee_ok {
            break;
        }
        write_ua("caller", caller_rtp_min, caller_rtp_max);
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(d.join("caller"))
            .args(["-t", &expect.call_secs.to_string()])
            .arg("-e")
            .arg(format!("/dial sip:callee@127.0.0.1:{kam_port}"));
        let log = d.join(format!("caller-{attempt}.log"));
        let mut p = Proc::spawn("caller", cmd, &log).unwrap();
        // baresip -t counts from its start; the call limit adds room for a slow setup.
        p.wait_exit(Duration::from_secs(call_limit));
        // Its SIP ports were taken between our probe and its bind: try other ones.
        let retry = p.log_text().contains("baresip init failed");
        caller = Some(p);
        if !retry {
            break;
        }
    }
    // Let the BYE and the ng delete go through before stopping anything.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !callee.log_text().contains("terminated") {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    let mut procs: Vec<Proc> = Vec::new();
    if let Some(c) = caller {
        procs.push(c);
    }
    procs.push(callee);
    procs.push(kam);
    for p in procs.iter_mut() {
        p.stop_with(libc::SIGTERM, Duration::from_secs(5));
    }
    // tshark flushes its file on SIGINT.
    if let Some(t) = tshark.as_mut() {
        std::thread::sleep(Duration::from_millis(300));
        t.stop_with(libc::SIGINT, Duration::from_secs(15));
    }
    peers.extend(procs);
    if let Some(t) = tshark {
        peers.push(t);
    }

    let mut logs = String::new();
    for p in &peers {
        let text = p.log_text();
        // The caller prints a status line many times a second; keep the tail.
        let text: String = if text.len() > 20_000 {
            text[text.len() - 20_000..].to_string()
        } else {
            text
        };
        logs.push_str(&format!("===== {} =====\n{text}\n", p.name));
    }
    if !callee_ok {
        logs.push_str("===== callee never listened on TLS =====\n");
    }
    let caller_log = peers
        .iter()
        .find(|p| p.name == "caller")
        .map(|p| p.log_text())
        .unwrap_or_default();
    let connected = caller_log.contains("Call established");

    let caller_heard = analyse_recording(
        newest_matching(&d.join("rec_caller"), "-dec.wav"),
        CALLEE_TONE_HZ,
        CALLER_TONE_HZ,
    );
    let callee_heard = analyse_recording(
        newest_matching(&d.join("rec_callee"), "-dec.wav"),
        CALLER_TONE_HZ,
        CALLEE_TONE_HZ,
    );

    let capture = match capture_skip {
        Some(r) => Capture::Skipped(r),
        None => match std::fs::read(&pcap) {
            Ok(bytes) => {
                let dgrams = parse_pcap(&bytes);
                let ng_port = ng_addr.port();
                let ng: Vec<NgMessage> = dgrams
                    .iter()
                    .filter(|g| g.dst == ng_port || g.src == ng_port)
                    .filter_map(|g| parse_ng(g.dst == ng_port, &g.payload))
                    .filter(|m| m.cookie != "interop_ping")
                    .collect();
                let relay_ports = relay_media_ports(&ng);
                let is_media = |g: &&Datagram| {
                    g.dst != ng_port
                        && g.src != ng_port
                        && (in_ua_range(g.src) || in_ua_range(g.dst))
                };
                let media = check_media(dgrams.iter().filter(is_media), &relay_ports);
                let mut keys = Vec::new();
                for m in &ng {
                    if let Some(sdp) = m.sdp() {
                        let verb = ng
                            .iter()
                            .find(|r| r.request && r.cookie == m.cookie)
                            .map(|r| r.verb())
                            .unwrap_or_default();
                        let dir = if m.request { "request" } else { "reply" };
                        keys.extend(sdes_keys(&sdp, &format!("{verb} {dir}")));
                    }
                }
                let srtp = verify_srtp(dgrams.iter().filter(is_media), &keys);
                Capture::Done {
                    pcap,
                    ng,
                    media,
                    srtp,
                }
            }
            Err(e) => Capture::Skipped(format!("no capture file: {e}")),
        },
    };

    let mut sdp_keys = Vec::new();
    let mut distinct = None;
    if let Capture::Done { ng, .. } = &capture {
        for m in ng {
            if let Some(sdp) = m.sdp() {
                // A reply's verb is "ok"; name it after its request (same cookie).
                let verb = if m.request {
                    m.verb()
                } else {
                    ng.iter()
                        .find(|r| r.request && r.cookie == m.cookie)
                        .map(|r| r.verb())
                        .unwrap_or_default()
                };
                sdp_keys.push((verb, m.request, inline_keys(&sdp)));
            }
        }
        let keys_of = |verb: &str, req: bool| -> BTreeSet<String> {
            sdp_keys
                .iter()
                .filter(|(v, r, _)| v == verb && *r == req)
                .flat_map(|(_, _, k)| k.iter().cloned())
                .collect()
        };
        let (oq, or) = (keys_of("offer", true), keys_of("offer", false));
        let (aq, ar) = (keys_of("answer", true), keys_of("answer", false));
        if !oq.is_empty() && !or.is_empty() && !aq.is_empty() && !ar.is_empty() {
            distinct = Some(oq.is_disjoint(&or) && aq.is_disjoint(&ar));
        }
    }

    // Every ng message, in full (SDPs included), for people reading along.
    if let Capture::Done { ng, .. } = &capture {
        let mut txt = String::new();
        for m in ng {
            txt.push_str(&format!(
                "{} {} {}\n",
                if m.request { "->" } else { "<-" },
                m.cookie,
                m.body.full()
            ));
        }
        let _ = std::fs::write(d.join("ng.txt"), txt);
    }
    let path = d.to_path_buf();
    let guard = if std::env::var_os("INTEROP_KEEP").is_some() {
        eprintln!("INTEROP_KEEP: call directory kept: {}", path.display());
        let _ = dir.keep();
        None
    } else {
        Some(dir)
    };
    CallOutcome {
        connected,
        caller_heard,
        callee_heard,
        capture,
        sdp_keys,
        distinct_leg_keys: distinct,
        caller_rtp: (caller_rtp_min, caller_rtp_max),
        callee_rtp: (callee_rtp_min, callee_rtp_max),
        logs,
        dir: path,
        guard,
    }
}

/// The relay's media ports: the m= port, port + 1 and any a=rtcp port of every SDP the relay
/// returned in an ng reply.
pub fn relay_media_ports(ng: &[NgMessage]) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for sdp in ng.iter().filter(|m| !m.request).filter_map(|m| m.sdp()) {
        for l in sdp.lines() {
            let port = if let Some(r) = l.strip_prefix("m=") {
                r.split_whitespace().nth(1)
            } else {
                l.strip_prefix("a=rtcp:")
                    .and_then(|r| r.split_whitespace().next())
            };
            if let Some(p) = port.and_then(|p| p.parse::<u16>().ok()) {
                ports.insert(p);
                if l.starts_with("m=") {
                    ports.insert(p.wrapping_add(1));
                }
            }
        }
    }
    ports
}

/// The `inline:` key||salt strings of every `a=crypto` line of `sdp`.
pub fn inline_keys(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("a=crypto:"))
        .filter_map(|l| l.split("inline:").nth(1))
        .map(|k| {
            k.split(['|', ' ', '\r', ';'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// pcap, ng (bencode), media classification

/// One UDP datagram of the capture.
#[derive(Clone, Debug)]
pub struct Datagram {
    /// Source port.
    pub src: u16,
    /// Destination port.
    pub dst: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// The UDP/IPv4 and UDP/IPv6 datagrams of a classic pcap file (Ethernet, as tshark writes for
/// `lo`, Linux cooked v1/v2, or raw IP). Malformed records are skipped.
pub fn parse_pcap(b: &[u8]) -> Vec<Datagram> {
    let mut out = Vec::new();
    if b.len() < 24 {
        return out;
    }
    let le = match &b[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return out,
    };
    let u32_at = |i: usize| -> u32 {
        let a: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(20);
    let mut i = 24;
    while i + 16 <= b.len() {
        let incl = u32_at(i + 8) as usize;
        let start = i + 16;
        let end = (start + incl).min(b.len());
        let frame = &b[start..end];
        i = start + incl;
        let ip = match link {
            1 if frame.len() >= 14 => {
                let et = u16::from_be_bytes([frame[12], frame[13]]);
                if et == 0x0800 || et == 0x86dd {
                    &frame[14..]
                } else {
                    continue;
                }
            }
            113 if frame.len() >= 16 => &frame[16..],
            276 if frame.len() >= 20 => &frame[20..],
            101 | 12 | 14 => frame,
            0 if frame.len() >= 4 => &frame[4..],
            _ => continue,
        };
        if let Some(g) = udp_of_ip(ip) {
            out.push(g);
        }
    }
    out
}

fn udp_of_ip(ip: &[u8]) -> Option<Datagram> {
    let (proto, l4) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            (*ip.get(9)?, ip.get(ihl..total.min(ip.len()))?)
        }
        6 => (*ip.get(6)?, ip.get(40..)?),
        _ => return None,
    };
    if proto != 17 || l4.len() < 8 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([l4[4], l4[5]])).min(l4.len());
    Some(Datagram {
        src: u16::from_be_bytes([l4[0], l4[1]]),
        dst: u16::from_be_bytes([l4[2], l4[3]]),
        payload: l4.get(8..len)?.to_vec(),
    })
}

/// A decoded bencode value.
#[derive(Clone, Debug, PartialEq)]
pub enum Bencode {
    /// `i…e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l…e`
    List(Vec<Bencode>),
    /// `d…e`, keys in wire order
    Dict(Vec<(Vec<u8>, Bencode)>),
}

impl Bencode {
    /// Parses one value at the start of `b`; returns it and the bytes consumed.
    pub fn parse(b: &[u8]) -> Option<(Bencode, usize)> {
        Self::parse_depth(b, 0)
    }

    fn parse_depth(b: &[u8], depth: usize) -> Option<(Bencode, usize)> {
        if depth > 64 {
            return None;
        }
        match *b.first()? {
            b'i' => {
                let end = b.iter().position(|&c| c == b'e')?;
                let n = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
                Some((Bencode::Int(n), end + 1))
            }
            b'l' | b'd' => {
                let dict = b[0] == b'd';
                let mut i = 1;
                let mut items = Vec::new();
                let mut pairs = Vec::new();
                while *b.get(i)? != b'e' {
                    if dict {
                        let (k, n) = Self::parse_depth(&b[i..], depth + 1)?;
                        i += n;
                        let (v, n) = Self::parse_depth(&b[i..], depth + 1)?;
                        i += n;
                        let Bencode::Bytes(k) = k else { return None };
                        pairs.push((k, v));
                    } else {
                        let (v, n) = Self::parse_depth(&b[i..], depth + 1)?;
                        i += n;
                        items.push(v);
                    }
                }
                let v = if dict {
                    Bencode::Dict(pairs)
                } else {
                    Bencode::List(items)
                };
                Some((v, i + 1))
            }
            b'0'..=b'9' => {
                let colon = b.iter().position(|&c| c == b':')?;
                let len: usize = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
                let s = b.get(colon + 1..colon + 1 + len)?;
                Some((Bencode::Bytes(s.to_vec()), colon + 1 + len))
            }
            _ => None,
        }
    }

    /// The value of `key` in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Bencode> {
        match self {
            Bencode::Dict(p) => p.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A byte string as text (lossy); other values in their summary form.
    pub fn text(&self) -> String {
        match self {
            Bencode::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => other.summary(),
        }
    }

    /// A rendering with every value in full (SDP included), for `ng.txt`.
    pub fn full(&self) -> String {
        match self {
            Bencode::Int(n) => n.to_string(),
            Bencode::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Bencode::List(v) => {
                let items: Vec<String> = v.iter().map(|x| x.full()).collect();
                format!("[{}]", items.join(", "))
            }
            Bencode::Dict(p) => {
                let items: Vec<String> = p
                    .iter()
                    .map(|(k, v)| format!("{:?}: {}", String::from_utf8_lossy(k), v.full()))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }

    /// A one-line rendering; SDP bodies are reduced to their m= and a=crypto suite lines (no
    /// keys), so the summary can go into logs and reports.
    pub fn summary(&self) -> String {
        match self {
            Bencode::Int(n) => n.to_string(),
            Bencode::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Bencode::List(v) => {
                let items: Vec<String> = v.iter().map(|x| x.summary()).collect();
                format!("[{}]", items.join(", "))
            }
            Bencode::Dict(p) => {
                let items: Vec<String> = p
                    .iter()
                    .map(|(k, v)| {
                        let k = String::from_utf8_lossy(k);
                        if k == "sdp" {
                            format!("sdp: <{}>", sdp_summary(&v.text()))
                        } else if k == "tags" || k == "totals" {
                            format!("{k}: …")
                        } else {
                            format!("{k}: {}", v.summary())
                        }
                    })
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }
}

/// The m= lines and crypto suites of an SDP (no keys).
pub fn sdp_summary(sdp: &str) -> String {
    let mut parts = Vec::new();
    for l in sdp.lines() {
        if l.starts_with("m=") || l.starts_with("c=") || l.starts_with("a=rtcp") {
            parts.push(l.trim().to_string());
        } else if let Some(rest) = l.strip_prefix("a=crypto:") {
            let mut w = rest.split_whitespace();
            let tag = w.next().unwrap_or_default();
            let suite = w.next().unwrap_or_default();
            parts.push(format!("crypto:{tag} {suite}"));
        }
    }
    parts.join(" | ")
}

/// Parses one ng datagram: `<cookie> <bencode dict>`.
pub fn parse_ng(request: bool, payload: &[u8]) -> Option<NgMessage> {
    let sp = payload.iter().position(|&c| c == b' ')?;
    let (body, _) = Bencode::parse(&payload[sp + 1..])?;
    Some(NgMessage {
        request,
        cookie: String::from_utf8_lossy(&payload[..sp]).into_owned(),
        body,
    })
}

fn ulaw_to_linear(u: u8) -> f64 {
    let u = !u;
    let sign = u & 0x80;
    let exp = (u >> 4) & 0x07;
    let mant = u & 0x0f;
    let mag = ((i32::from(mant) << 3) + 0x84) << exp;
    let v = mag - 0x84;
    f64::from(if sign != 0 { -v } else { v })
}

/// True when `bytes`, read as μ-law, hold one of the two tones with a quarter of the energy.
fn tone_in(bytes: &[u8]) -> bool {
    if bytes.len() < 80 {
        return false;
    }
    let pcm: Vec<f64> = bytes.iter().map(|&b| ulaw_to_linear(b)).collect();
    tone_share(&pcm, 8000.0, CALLER_TONE_HZ) > 0.25
        || tone_share(&pcm, 8000.0, CALLEE_TONE_HZ) > 0.25
}

/// Classifies media datagrams; see [`MediaCheck`] for the rule.
/// `relay_ports` are the relay's media ports (from its SDPs); empty means "treat every sender as
/// the relay" (strictest).
pub fn check_media<'a>(
    dgrams: impl Iterator<Item = &'a Datagram>,
    relay_ports: &BTreeSet<u16>,
) -> MediaCheck {
    let mut m = MediaCheck::default();
    let offend = |m: &mut MediaCheck, why: &str, g: &Datagram| {
        if m.offenders.len() < 10 {
            m.offenders.push(format!(
                "{why}: {} -> {} len {} head {}",
                g.src,
                g.dst,
                g.payload.len(),
                hex::encode(&g.payload[..g.payload.len().min(16)])
            ));
        }
    };
    for g in dgrams {
        let p = &g.payload;
        if tone_in(p.get(12..).unwrap_or_default()) {
            m.tone_in_clear += 1;
            m.plain_rtp += 1;
            offend(&mut m, "tone in clear", g);
            continue;
        }
        if p.len() < 8 || p[0] >> 6 != 2 {
            m.other += 1;
            continue;
        }
        if (200..=204).contains(&p[1]) {
            // Walk the compound RTCP packet's length fields.
            let mut i = 0usize;
            while i + 4 <= p.len() {
                let words = usize::from(u16::from_be_bytes([p[i + 2], p[i + 3]]));
                i += 4 * (words + 1);
            }
            if i == p.len() {
                if relay_ports.is_empty() || relay_ports.contains(&g.src) {
                    m.plain_rtcp += 1;
                    offend(&mut m, "plain RTCP from the relay", g);
                } else {
                    m.peer_plain_rtcp += 1;
                }
            } else {
                m.srtcp += 1;
            }
            continue;
        }
        let cc = usize::from(p[0] & 0x0f);
        let mut hdr = 12 + 4 * cc;
        if p[0] & 0x10 != 0 && p.len() >= hdr + 4 {
            let words = usize::from(u16::from_be_bytes([p[hdr + 2], p[hdr + 3]]));
            hdr += 4 + 4 * words;
        }
        let body = p.len().saturating_sub(hdr);
        let srtp_sized = [4usize, 10, 16]
            .iter()
            .any(|tag| body == 160 + tag || body == 4 + tag);
        if p.len() < hdr || !srtp_sized {
            m.plain_rtp += 1;
            offend(&mut m, "not SRTP-sized RTP", g);
        } else {
            m.srtp += 1;
            *m.srtp_flows.entry((g.src, g.dst)).or_default() += 1;
        }
    }
    m
}

/// Self-checks of the analysis code, run by the interop test binary (no peers needed): the
/// detectors must fire on plain media and stay quiet on encrypted-looking media.
pub fn self_check() {
    srtp_self_check();
    // Tone detection.
    let sine: Vec<f64> = (0..800)
        .map(|i| (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin() * 10000.0)
        .collect();
    assert!(tone_share(&sine, 8000.0, 440.0) > 0.95);
    assert!(tone_share(&sine, 8000.0, 1000.0) < 0.01);
    // A plain PCMU packet of the tone is caught, by size and by content.
    let ulaw: Vec<u8> = sine[..160]
        .iter()
        .map(|&v| linear_to_ulaw(v as i16))
        .collect();
    let mut plain = vec![0x80, 0x00, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
    plain.extend_from_slice(&ulaw);
    let g = Datagram {
        src: 1,
        dst: 2,
        payload: plain.clone(),
    };
    let m = check_media(std::iter::once(&g), &BTreeSet::new());
    assert_eq!((m.plain_rtp, m.tone_in_clear, m.srtp), (1, 1, 0));
    // The same size with a tag but pseudo-random payload passes as SRTP.
    let mut x = 0x1234_5678u32;
    let mut srtp = plain[..12].to_vec();
    for _ in 0..170 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        srtp.push(x as u8);
    }
    let g = Datagram {
        src: 1,
        dst: 2,
        payload: srtp,
    };
    let m = check_media(std::iter::once(&g), &BTreeSet::new());
    assert_eq!((m.plain_rtp, m.srtp), (0, 1), "{m:?}");
    // Plain RTCP (an RR with no report block) is caught; with a trailer it is SRTCP.
    let rr = vec![0x80, 201, 0, 1, 0, 0, 0, 1];
    let g = Datagram {
        src: 1,
        dst: 2,
        payload: rr.clone(),
    };
    assert_eq!(
        check_media(std::iter::once(&g), &BTreeSet::new()).plain_rtcp,
        1
    );
    // ... and counted against the peer, not the relay, when it comes from a non-relay port.
    let m = check_media(std::iter::once(&g), &BTreeSet::from([2u16]));
    assert_eq!((m.plain_rtcp, m.peer_plain_rtcp), (0, 1));
    let m = check_media(std::iter::once(&g), &BTreeSet::from([1u16]));
    assert_eq!((m.plain_rtcp, m.peer_plain_rtcp), (1, 0));
    let mut srtcp = rr;
    srtcp.extend_from_slice(&[0x80, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
    let g = Datagram {
        src: 1,
        dst: 2,
        payload: srtcp,
    };
    let m = check_media(std::iter::once(&g), &BTreeSet::new());
    assert_eq!((m.plain_rtcp, m.srtcp), (0, 1));
    // Bencode round trip of a real ng request shape.
    let msg = parse_ng(
        true,
        b"5_1 d7:command5:offer5:flagsl13:trust-addresse3:sdp3:v=0e",
    )
    .unwrap();
    assert_eq!(msg.verb(), "offer");
    assert_eq!(msg.sdp().as_deref(), Some("v=0"));
    assert!(parse_ng(true, b"x d7:command").is_none());
    assert_eq!(
        inline_keys("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|2^20|1:4\r\n"),
        vec!["QUJD".to_string()]
    );
}

fn linear_to_ulaw(s: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut v = i32::from(s);
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0
    };
    v = (v + BIAS).min(0x7fff);
    let mut exp = 7;
    let mut mask = 0x4000;
    while exp > 0 && v & mask == 0 {
        exp -= 1;
        mask >>= 1;
    }
    let mant = (v >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | mant as u8)
}

// ---------------------------------------------------------------------------------------------
// SRTP verification on the wire: every RTP packet must authenticate with a key from the SDPs

/// An SDES key from an SDP: the suite and the decoded key||salt.
#[derive(Clone, Debug, PartialEq)]
pub struct SdesKey {
    /// Where it was seen: "offer request", "offer reply", "answer request", "answer reply".
    pub seen_in: String,
    /// The suite name.
    pub suite: String,
    /// key || salt.
    pub key_salt: Vec<u8>,
}

/// The `a=crypto` keys of `sdp` (suites this verifier knows; others are skipped).
pub fn sdes_keys(sdp: &str, seen_in: &str) -> Vec<SdesKey> {
    use base64::Engine;
    let mut out = Vec::new();
    for l in sdp.lines().filter(|l| l.starts_with("a=crypto:")) {
        let mut w = l.split_whitespace();
        let _tag = w.next();
        let Some(suite) = w.next() else { continue };
        let Some(inline) = w.next().and_then(|p| p.strip_prefix("inline:")) else {
            continue;
        };
        let b64 = inline.split('|').next().unwrap_or_default();
        let Ok(key_salt) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if suite_lengths(suite).is_some_and(|(k, s, _)| key_salt.len() == k + s) {
            out.push(SdesKey {
                seen_in: seen_in.to_string(),
                suite: suite.to_string(),
                key_salt,
            });
        }
    }
    out
}

/// (master key length, master salt length, tag length) of the suites the verifier handles.
fn suite_lengths(suite: &str) -> Option<(usize, usize, usize)> {
    match suite {
        "AES_CM_128_HMAC_SHA1_80" => Some((16, 14, 10)),
        "AES_CM_128_HMAC_SHA1_32" => Some((16, 14, 4)),
        "AES_256_CM_HMAC_SHA1_80" => Some((32, 14, 10)),
        "AES_256_CM_HMAC_SHA1_32" => Some((32, 14, 4)),
        "AEAD_AES_128_GCM" => Some((16, 12, 16)),
        "AEAD_AES_256_GCM" => Some((32, 12, 16)),
        _ => None,
    }
}

/// AES-CM PRF of RFC 3711 §4.3.3 (key derivation rate 0): `len` bytes for `label`. The salt is
/// right-padded with zeros to 14 bytes (RFC 7714's 12-byte salts, as libsrtp does).
fn srtp_kdf(master_key: &[u8], master_salt: &[u8], label: u8, len: usize) -> Vec<u8> {
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
    let mut iv = [0u8; 16];
    iv[..master_salt.len().min(14)].copy_from_slice(&master_salt[..master_salt.len().min(14)]);
    iv[7] ^= label;
    let alg = if master_key.len() == 32 {
        &AES_256
    } else {
        &AES_128
    };
    let key = EncryptingKey::ctr(UnboundCipherKey::new(alg, master_key).unwrap()).unwrap();
    let mut out = vec![0u8; len];
    key.less_safe_encrypt(&mut out, EncryptionContext::Iv128(iv.into()))
        .unwrap();
    out
}

/// Session keys of one SDES key, ready to check packets.
struct Session {
    key: SdesKey,
    tag: usize,
    enc: Vec<u8>,
    salt: Vec<u8>,
    auth: Vec<u8>,
    /// SRTCP: encryption key, salt (GCM) and authentication key (HMAC suites).
    rtcp_enc: Vec<u8>,
    rtcp_salt: Vec<u8>,
    rtcp_auth: Vec<u8>,
}

impl Session {
    fn new(k: &SdesKey) -> Option<Session> {
        let (kl, sl, tag) = suite_lengths(&k.suite)?;
        let (mk, ms) = k.key_salt.split_at(kl);
        let gcm = k.suite.starts_with("AEAD");
        Some(Session {
            key: k.clone(),
            tag,
            enc: srtp_kdf(mk, ms, 0x00, kl),
            salt: srtp_kdf(mk, ms, 0x02, sl),
            auth: if gcm {
                Vec::new()
            } else {
                srtp_kdf(mk, ms, 0x01, 20)
            },
            rtcp_enc: srtp_kdf(mk, ms, 0x03, kl),
            rtcp_salt: srtp_kdf(mk, ms, 0x05, sl),
            rtcp_auth: if gcm {
                Vec::new()
            } else {
                srtp_kdf(mk, ms, 0x04, 20)
            },
        })
    }

    /// True when the SRTCP packet `p` authenticates: HMAC-SHA1 (80-bit tag for every
    /// AES-CM suite, RFC 3711 / RFC 4568) over everything up to the tag, or AES-GCM (RFC 7714
    /// section 9: AAD = the first 8 octets and the E|index word, tag before that word).
    fn auth_rtcp(&self, p: &[u8]) -> bool {
        if self.rtcp_auth.is_empty() {
            use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
            if p.len() < 8 + 16 + 4 {
                return false;
            }
            let alg = if self.rtcp_enc.len() == 32 {
                &AES_256_GCM
            } else {
                &AES_128_GCM
            };
            let Ok(k) = UnboundKey::new(alg, &self.rtcp_enc) else {
                return false;
            };
            let key = LessSafeKey::new(k);
            let trailer = &p[p.len() - 4..];
            let mut iv = [0u8; 12];
            iv[2..6].copy_from_slice(&p[4..8]);
            iv[8..12].copy_from_slice(trailer);
            iv[8] &= 0x7f;
            for (a, b) in iv.iter_mut().zip(&self.rtcp_salt) {
                *a ^= b;
            }
            let mut aad = p[..8].to_vec();
            aad.extend_from_slice(trailer);
            let mut body = p[8..p.len() - 4].to_vec();
            return key
                .open_in_place(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&aad[..]),
                    &mut body,
                )
                .is_ok();
        }
        use aws_lc_rs::hmac;
        if p.len() < 8 + 4 + 10 {
            return false;
        }
        let (signed, tag) = p.split_at(p.len() - 10);
        let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.rtcp_auth);
        hmac::sign(&k, signed).as_ref()[..10] == *tag
    }

    /// Authenticates and decrypts the SRTP packet `p` (header length `hdr`) with roll-over
    /// counter `roc`; returns the plaintext payload.
    fn open(&self, p: &[u8], hdr: usize, roc: u32) -> Option<Vec<u8>> {
        if p.len() < hdr + self.tag {
            return None;
        }
        let ssrc = &p[8..12];
        let seq = &p[2..4];
        if self.auth.is_empty() {
            use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
            let alg = if self.enc.len() == 32 {
                &AES_256_GCM
            } else {
                &AES_128_GCM
            };
            let key = LessSafeKey::new(UnboundKey::new(alg, &self.enc).ok()?);
            let mut iv = [0u8; 12];
            iv[2..6].copy_from_slice(ssrc);
            iv[6..10].copy_from_slice(&roc.to_be_bytes());
            iv[10..12].copy_from_slice(seq);
            for (a, b) in iv.iter_mut().zip(&self.salt) {
                *a ^= b;
            }
            let mut body = p[hdr..].to_vec();
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&p[..hdr]),
                    &mut body,
                )
                .ok()?;
            return Some(plain.to_vec());
        }
        use aws_lc_rs::hmac;
        let (auth_part, tag) = p.split_at(p.len() - self.tag);
        let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.auth);
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(auth_part);
        ctx.update(&roc.to_be_bytes());
        let mac = ctx.sign();
        if &mac.as_ref()[..self.tag] != tag {
            return None;
        }
        use aws_lc_rs::cipher::{
            EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256,
        };
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt[..14]);
        for i in 0..4 {
            iv[4 + i] ^= ssrc[i];
        }
        let index = (u64::from(roc) << 16) | u64::from(u16::from_be_bytes([seq[0], seq[1]]));
        for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
            iv[8 + i] ^= b;
        }
        let alg = if self.enc.len() == 32 {
            &AES_256
        } else {
            &AES_128
        };
        let key = EncryptingKey::ctr(UnboundCipherKey::new(alg, &self.enc).ok()?).ok()?;
        let mut body = auth_part[hdr..].to_vec();
        key.less_safe_encrypt(&mut body, EncryptionContext::Iv128(iv.into()))
            .ok()?;
        Some(body)
    }
}

/// Per media direction: which SDP key its SRTP packets authenticate with, and what they carry.
#[derive(Clone, Debug, Default)]
pub struct FlowVerdict {
    /// Packets that authenticated with `key`.
    pub verified: usize,
    /// RTP packets that authenticated with no key of the call.
    pub unverified: usize,
    /// Where the key was seen (e.g. "offer request crypto AES_CM_128_HMAC_SHA1_80").
    pub key: Option<String>,
    /// The key||salt itself (to compare the legs; never printed).
    pub key_salt: Vec<u8>,
    /// Verified PCMU packets whose decrypted payload holds the caller's tone (440 Hz).
    pub caller_tone: usize,
    /// ... the callee's tone (1000 Hz).
    pub callee_tone: usize,
    /// RTCP datagrams that authenticated as SRTCP with a key of the call.
    pub srtcp_verified: usize,
    /// RTCP datagrams that did not (plain RTCP, or SRTCP under a key not in any SDP).
    pub srtcp_unverified: usize,
}

/// Authenticates (and decrypts) every SRTP-sized RTP packet of the capture with the keys of the
/// call's SDPs; returns a verdict per (source port, destination port).
pub fn verify_srtp<'a>(
    dgrams: impl Iterator<Item = &'a Datagram>,
    keys: &[SdesKey],
) -> BTreeMap<(u16, u16), FlowVerdict> {
    let sessions: Vec<Session> = keys.iter().filter_map(Session::new).collect();
    let mut flows: BTreeMap<(u16, u16), FlowVerdict> = BTreeMap::new();
    let mut chosen: BTreeMap<(u16, u16), usize> = BTreeMap::new();
    for g in dgrams {
        let p = &g.payload;
        if p.len() >= 8 && p[0] >> 6 == 2 && (200..=204).contains(&p[1]) {
            let v = flows.entry((g.src, g.dst)).or_default();
            if sessions.iter().any(|s| s.auth_rtcp(p)) {
                v.srtcp_verified += 1;
            } else {
                v.srtcp_unverified += 1;
            }
            continue;
        }
        if p.len() < 12 || p[0] >> 6 != 2 {
            continue;
        }
        let cc = usize::from(p[0] & 0x0f);
        let mut hdr = 12 + 4 * cc;
        if p[0] & 0x10 != 0 && p.len() >= hdr + 4 {
            hdr += 4 + 4 * usize::from(u16::from_be_bytes([p[hdr + 2], p[hdr + 3]]));
        }
        if p.len() < hdr {
            continue;
        }
        let flow = (g.src, g.dst);
        let v = flows.entry(flow).or_default();
        // The key this flow used so far first, then every other key; ROC 0 then 1.
        let mut order: Vec<usize> = (0..sessions.len()).collect();
        if let Some(&c) = chosen.get(&flow) {
            order.retain(|&i| i != c);
            order.insert(0, c);
        }
        let mut opened = None;
        'find: for i in order {
            for roc in [0u32, 1] {
                if let Some(plain) = sessions[i].open(p, hdr, roc) {
                    opened = Some((i, plain));
                    break 'find;
                }
            }
        }
        match opened {
            Some((i, plain)) => {
                v.verified += 1;
                if v.key.is_none() {
                    let s = &sessions[i];
                    v.key = Some(format!("{} {}", s.key.seen_in, s.key.suite));
                    v.key_salt = s.key.key_salt.clone();
                    chosen.insert(flow, i);
                }
                if p[1] & 0x7f == 0 && plain.len() == 160 {
                    let pcm: Vec<f64> = plain.iter().map(|&b| ulaw_to_linear(b)).collect();
                    if tone_share(&pcm, 8000.0, CALLER_TONE_HZ) > 0.5 {
                        v.caller_tone += 1;
                    } else if tone_share(&pcm, 8000.0, CALLEE_TONE_HZ) > 0.5 {
                        v.callee_tone += 1;
                    }
                }
            }
            None => v.unverified += 1,
        }
    }
    flows
}

/// RFC 3711 / RFC 7714 known-answer checks of the verifier's key derivation and packet opening.
pub fn srtp_self_check() {
    // RFC 3711 appendix B.3 key derivation test vectors.
    let mk = hex::decode("E1F97A0D3E018BE0D64FA32C06DE4139").unwrap();
    let ms = hex::decode("0EC675AD498AFEEBB6960B3AABE6").unwrap();
    assert_eq!(
        hex::encode(srtp_kdf(&mk, &ms, 0, 16)),
        "c61e7a93744f39ee10734afe3ff7a087"
    );
    assert_eq!(
        hex::encode(srtp_kdf(&mk, &ms, 2, 14)),
        "30cbbc08863d8c85d49db34a9ae1"
    );
    assert_eq!(
        hex::encode(srtp_kdf(&mk, &ms, 1, 20)),
        "cebe321f6ff7716b6fd4ab49af256a156d38baa4"
    );
    // A packet protected here round-trips through `open`, and a flipped bit fails.
    let key = SdesKey {
        seen_in: "test".into(),
        suite: "AES_CM_128_HMAC_SHA1_80".into(),
        key_salt: [mk.clone(), ms.clone()].concat(),
    };
    let s = Session::new(&key).unwrap();
    let hdr = [0x80u8, 0, 0x12, 0x34, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
    let payload = vec![0xffu8; 160];
    // Encrypt with the same CTR keystream (open() of a packet with a valid tag decrypts).
    let mut pkt = hdr.to_vec();
    pkt.extend_from_slice(&payload);
    let ks = {
        use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&s.salt);
        for i in 0..4 {
            iv[4 + i] ^= hdr[8 + i];
        }
        iv[12] ^= 0x12;
        iv[13] ^= 0x34;
        let k = EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &s.enc).unwrap()).unwrap();
        let mut z = vec![0u8; 160];
        k.less_safe_encrypt(&mut z, EncryptionContext::Iv128(iv.into()))
            .unwrap();
        z
    };
    for (b, k) in pkt[12..].iter_mut().zip(&ks) {
        *b ^= k;
    }
    let mac = {
        use aws_lc_rs::hmac;
        let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &s.auth);
        let mut c = hmac::Context::with_key(&k);
        c.update(&pkt);
        c.update(&0u32.to_be_bytes());
        c.sign()
    };
    pkt.extend_from_slice(&mac.as_ref()[..10]);
    assert_eq!(s.open(&pkt, 12, 0).as_deref(), Some(&payload[..]));
    assert!(s.open(&pkt, 12, 1).is_none());
    let mut bad = pkt.clone();
    bad[20] ^= 1;
    assert!(s.open(&bad, 12, 0).is_none());
    let flows = verify_srtp(
        [Datagram {
            src: 5,
            dst: 6,
            payload: pkt,
        }]
        .iter(),
        &[key],
    );
    assert_eq!(flows[&(5, 6)].verified, 1);

    // SRTCP (HMAC-SHA1-80 over the packet and the E|index word) authenticates; one bit off
    // does not; plain RTCP does not.
    let mut rtcp = vec![0x80u8, 201, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4];
    rtcp.extend_from_slice(&[0x80, 0, 0, 1]);
    let mac = {
        use aws_lc_rs::hmac;
        let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &s.rtcp_auth);
        hmac::sign(&k, &rtcp)
    };
    rtcp.extend_from_slice(&mac.as_ref()[..10]);
    assert!(s.auth_rtcp(&rtcp));
    let mut bad = rtcp.clone();
    bad[9] ^= 1;
    assert!(!s.auth_rtcp(&bad));
    assert!(!s.auth_rtcp(&[0x80, 201, 0, 1, 0xde, 0xad, 0xbe, 0xef]));
}
