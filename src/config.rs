//! Configuration: TOML in, one immutable, validated [`Config`] out.
//!
//! The file is read once at start (and by `srtp-edge check-config`). Every key has a default, the
//! value of the embedded default configuration, so a file holding only the keys a user changes is
//! complete. Unknown keys are errors. Every problem is reported as one [`ConfigError`] naming the
//! dotted key and the reason, and all problems of a file are reported together where possible.
//!
//! The encryption floor is not configurable: TLS below 1.2 cannot be expressed, plain RTP has no
//! switch, and the NULL SRTP cipher has no name.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::srtp::Profile;

/// One problem in a configuration: the dotted key it concerns and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `tls.min_version` (empty for file-level problems).
    pub key: String,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// All the problems found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (journald adds its own timestamps).
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `srtp_edge=debug,info`.
    pub level: String,
    /// Mask phone numbers, SIP URI user parts and caller IPs (default true).
    pub redact: bool,
}

/// The lowest TLS version accepted on any TLS connection srtp-edge makes or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsMinVersion {
    /// TLS 1.2 with ECDHE and AEAD suites only, for legacy trunks.
    Tls12,
    /// TLS 1.3 only (the default).
    Tls13,
}

/// Where the server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A CA and a server certificate generated on first run under the state directory.
    Generated,
    /// PEM files configured by the operator.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, SEC1 or PKCS#1 PEM).
        key: PathBuf,
    },
}

/// TLS policy shared by every listener and client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Lowest version accepted.
    pub min_version: TlsMinVersion,
    /// Server certificate source.
    pub cert: CertSource,
    /// Extra roots to verify servers srtp-edge connects to (SIP trunks, WSS backends); the
    /// system roots are used when unset.
    pub ca_file: Option<PathBuf>,
    /// Host names and addresses put in the generated server certificate.
    pub generated_names: Vec<String>,
}

/// SIP over TLS listener settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    /// Addresses to listen on for SIP over TLS (empty: no SIP listener).
    pub listen: Vec<SocketAddr>,
    /// Timer B: how long an INVITE relayed to a route target waits for a final response before
    /// the caller gets 408 (RFC 3261 17.1.1.2; 64*T1 = 32 s by default). Operators shorten it
    /// to fail over faster on dead trunks.
    pub timer_b_secs: u32,
    /// SIP requests per second accepted from one source address (burst twice that); more get
    /// 503 with Retry-After. A trunk's busy hour at N calls/s sends about 3N (INVITE, ACK, BYE).
    pub source_requests_per_sec: u32,
}

/// A network prefix such as `127.0.0.0/8`, used for source address allow lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `addr/prefix` or a bare address (a host prefix).
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?} has a prefix length outside 0-{max}")),
            },
        };
        Ok(IpNet { addr, prefix })
    }

    /// True when `ip` lies in this prefix (IPv4-mapped IPv6 addresses match IPv4 prefixes).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The rtpengine-compatible ng control listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// UDP addresses to listen on (empty: no ng listener).
    pub listen: Vec<SocketAddr>,
    /// Source prefixes allowed to send commands; everything else is dropped and counted.
    pub allow_from: Vec<IpNet>,
}

/// The admin HTTPS listener (/healthz, /metrics, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Addresses to listen on (empty: no admin listener).
    pub listen: Vec<SocketAddr>,
    /// File holding the bearer token; generated in the state directory when unset.
    pub token_file: Option<PathBuf>,
}

/// The media engine: addresses, port range, timeouts and SRTP policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// IPv4 address media sockets bind to (None: no IPv4 media).
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address media sockets bind to (None: no IPv6 media).
    pub ipv6: Option<Ipv6Addr>,
    /// IPv4 address written into SDP (defaults to `ipv4`), for hosts behind 1:1 NAT.
    pub advertise_ipv4: Option<Ipv4Addr>,
    /// IPv6 address written into SDP (defaults to `ipv6`).
    pub advertise_ipv6: Option<Ipv6Addr>,
    /// First port of the media range (inclusive).
    pub port_min: u16,
    /// Last port of the media range (inclusive).
    pub port_max: u16,
    /// A call with no media in either direction for this many seconds is ended.
    pub timeout_secs: u32,
    /// Media worker threads (0 in the file: one per core).
    pub workers: usize,
    /// SRTP replay window in packets (64-1024).
    pub replay_window: usize,
    /// Consecutive authenticated packets from a new address before the leg re-latches to it
    /// (NAT rebinding); 0 means never.
    pub relatch_packets: u32,
    /// SRTP suites srtp-edge accepts and offers, most preferred first.
    pub suites: Vec<Profile>,
    /// A DTLS-SRTP handshake not complete this many seconds after our SDP went out ends the
    /// call (1-60).
    pub dtls_handshake_timeout_secs: u32,
    /// Read and send each wake-up's packets with one io_uring submission each (falls back to
    /// recvfrom/sendto where io_uring is unavailable); false: always recvfrom/sendto.
    pub io_uring: bool,
    /// Under load, the pause (µs) a worker takes after a busy wake-up so that the next one
    /// relays many packets (0-1000; 0: never pause).
    pub batch_pause_us: u32,
}

/// The whole validated configuration. Immutable once built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where generated certificates and tokens live.
    pub state_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// TLS policy.
    pub tls: TlsConfig,
    /// SIP over TLS.
    pub sip: SipConfig,
    /// ng control.
    pub control: ControlConfig,
    /// Admin HTTPS.
    pub admin: AdminConfig,
    /// Media engine.
    pub media: MediaConfig,
    /// AI audio fork backends.
    pub fork: crate::fork::config::ForkConfig,
    /// SIP trunks allowed to send calls to the B2BUA (none: every request gets 403).
    pub trunks: Vec<TrunkConfig>,
    /// Where the B2BUA sends calls, matched in order.
    pub routes: Vec<RouteConfig>,
    /// KEK providers and the key audit log (`[keys]`).
    pub keys: crate::keys::config::KeysConfig,
    /// Encrypted call recording (`[recording]`, off by default).
    pub recording: crate::recording::config::RecordingConfig,
}

/// A SIP peer allowed to place calls through the B2BUA, recognised by its source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkConfig {
    /// Name routes refer to, and the metrics/log label.
    pub name: String,
    /// Source prefixes of this trunk.
    pub from: Vec<IpNet>,
    /// Names (DNS or IP SAN) a client certificate may prove to be this trunk (mutual TLS).
    pub client_names: Vec<String>,
    /// Roots that verify this trunk's client certificate (default: `tls.ca_file`).
    pub client_ca_file: Option<PathBuf>,
    /// SDES suites for calls from this trunk (empty: `media.suites`).
    pub sdes_suites: Vec<Profile>,
}

/// Where a call goes: the first route whose conditions all hold is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Only calls from this trunk (None: any trunk).
    pub trunk: Option<String>,
    /// Only Request-URI user parts starting with this (empty: any).
    pub user_prefix: String,
    /// Only this Request-URI host (None: any).
    pub host: Option<String>,
    /// The target, a `sips:` URI or a `sip:` URI with `;transport=tls`; the host is an IP
    /// address or a DNS name (resolved to A/AAAA records when a connection is opened).
    pub target: crate::sip::uri::SipUri,
    /// The target's socket address when its host is an IP address (port 5061 when absent);
    /// None for a DNS name, resolved at connect time.
    pub target_addr: Option<SocketAddr>,
    /// The target's host as written (IP address or DNS name, no brackets) and port: what the
    /// transport resolves and connects to.
    pub target_host: (String, u16),
    /// The name verified in the target's certificate and sent as SNI (default: the host).
    pub server_name: String,
    /// Roots to verify the target (default: `tls.ca_file`, else system roots).
    pub ca_file: Option<PathBuf>,
    /// Agent mode: the `[[fork.backends]]` name that answers calls on this route (route
    /// `agent = "name"`, or `target = "wss://…"` equal to that backend's `url`). srtp-edge
    /// answers the INVITE itself; the SIP target fields above are then unused (unspecified
    /// address, never dialed).
    pub agent: Option<String>,
    /// Fork mode: the `[[fork.backends]]` name that gets a copy of both tracks of every call on
    /// this (SIP-to-SIP) route.
    pub fork: Option<String>,
    /// How srtp-edge keys the media it offers to the target (the caller's leg is keyed the way
    /// the caller offered, SDES or DTLS-SRTP).
    pub media_keying: MediaKeying,
    /// Client certificate chain (PEM) presented to the target (mutual TLS), with its key.
    pub client_cert: Option<ClientCert>,
    /// Record every call on this route (needs `[recording] enabled = true`).
    pub record: bool,
    /// The recording tenant of calls on this route (None: by trunk, else `recording.tenant`).
    pub record_tenant: Option<String>,
}

/// A client certificate and key srtp-edge presents when it connects to a route target that
/// identifies its peers by certificate (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl RouteConfig {
    /// The target's IP address when the URI names one (not a DNS name).
    pub fn target_ip(&self) -> Option<IpAddr> {
        self.target_addr.map(|a| a.ip())
    }
}

/// The SRTP keying srtp-edge offers on a leg it places (route `media_keying`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaKeying {
    /// SDES: `RTP/SAVP` with `a=crypto` keys in the SDP (RFC 4568); what SIP trunks expect.
    #[default]
    Sdes,
    /// DTLS-SRTP: `UDP/TLS/RTP/SAVP` with our certificate fingerprint, `a=setup:actpass` and
    /// ICE-lite (RFC 5763/5764); the keys come from a handshake on the media port.
    Dtls,
}

impl MediaKeying {
    /// Parses the config value (`sdes` or `dtls`, any case).
    pub fn parse(s: &str) -> Option<MediaKeying> {
        match s.to_ascii_lowercase().as_str() {
            "sdes" => Some(MediaKeying::Sdes),
            "dtls" | "dtls-srtp" | "dtls_srtp" => Some(MediaKeying::Dtls),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file format: raw serde structs, every field defaulted, unknown keys refused.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
    redact: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "human".into(),
            level: "info".into(),
            redact: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    min_version: String,
    cert_file: String,
    key_file: String,
    ca_file: String,
    generated_names: Vec<String>,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            min_version: "1.3".into(),
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            generated_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSip {
    listen: Vec<String>,
    timer_b_secs: i64,
    source_requests_per_sec: i64,
}

impl Default for RawSip {
    fn default() -> Self {
        RawSip {
            listen: vec!["127.0.0.1:5061".into()],
            timer_b_secs: 32,
            source_requests_per_sec: 1000,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTrunk {
    name: String,
    from: Vec<String>,
    client_names: Vec<String>,
    client_ca_file: String,
    sdes_suites: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRoute {
    trunk: String,
    user_prefix: String,
    host: String,
    target: String,
    ca_file: String,
    server_name: String,
    agent: String,
    fork: String,
    media_keying: String,
    client_cert_file: String,
    client_key_file: String,
    record: bool,
    record_tenant: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawControl {
    listen: Vec<String>,
    allow_from: Vec<String>,
}

impl Default for RawControl {
    fn default() -> Self {
        RawControl {
            listen: vec!["127.0.0.1:2223".into()],
            allow_from: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: Vec<String>,
    token_file: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: vec!["127.0.0.1:9443".into()],
            token_file: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMedia {
    ipv4: String,
    ipv6: String,
    advertise_ipv4: String,
    advertise_ipv6: String,
    port_min: i64,
    port_max: i64,
    timeout_secs: i64,
    workers: i64,
    replay_window: i64,
    relatch_packets: i64,
    suites: Vec<String>,
    dtls_handshake_timeout_secs: i64,
    io_uring: bool,
    batch_pause_us: i64,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            ipv4: "127.0.0.1".into(),
            ipv6: String::new(),
            advertise_ipv4: String::new(),
            advertise_ipv6: String::new(),
            port_min: 30000,
            port_max: 39999,
            timeout_secs: 60,
            workers: 0,
            replay_window: 128,
            relatch_packets: 5,
            suites: DEFAULT_SUITES
                .iter()
                .map(|p| p.sdes_name().into())
                .collect(),
            dtls_handshake_timeout_secs: 10,
            io_uring: true,
            batch_pause_us: 200,
        }
    }
}

/// The default suite preference: GCM first, then the HMAC-SHA1 suites with 80-bit tags.
pub const DEFAULT_SUITES: [Profile; 5] = [
    Profile::AeadAes256Gcm,
    Profile::AeadAes128Gcm,
    Profile::AesCm256HmacSha1_80,
    Profile::AesCm128HmacSha1_80,
    Profile::AesCm128HmacSha1_32,
];

const SECTIONS: &[&str] = &[
    "state_dir",
    "log",
    "tls",
    "sip",
    "control",
    "admin",
    "media",
    "fork",
    "trunks",
    "routes",
    "keys",
    "recording",
];

/// Where the state directory is when the config does not say: systemd's `$STATE_DIRECTORY`,
/// else `$XDG_STATE_HOME/srtp-edge`, else `$HOME/.local/state/srtp-edge`, else
/// `/var/lib/srtp-edge`.
pub fn default_state_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        let s = d.to_string_lossy().into_owned();
        return PathBuf::from(s.split(':').next().unwrap_or(&s));
    }
    if let Some(x) = env("XDG_STATE_HOME") {
        return PathBuf::from(x).join("srtp-edge");
    }
    if let Some(h) = env("HOME") {
        return PathBuf::from(h).join(".local/state/srtp-edge");
    }
    PathBuf::from("/var/lib/srtp-edge")
}

impl Config {
    /// The embedded default: everything on loopback, generated certificates and token.
    pub fn embedded_default() -> Config {
        // The empty document is valid by construction; a failure here is a bug in the defaults,
        // caught by the unit tests.
        match Config::from_toml_str("") {
            Ok(c) => c,
            Err(e) => panic!("embedded default configuration is invalid: {e}"),
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Config::from_toml_str(&text)
    }

    /// Parses and validates configuration text; reports every problem it can find.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("not valid TOML{at}: {msg}"),
            )])
        })?;
        let mut errs = Vec::new();
        for k in table.keys() {
            if !SECTIONS.contains(&k.as_str()) {
                errs.push(ConfigError::new(
                    k.clone(),
                    format!("unknown key (known: {})", SECTIONS.join(", ")),
                ));
            }
        }
        let state_dir = match table.get("state_dir") {
            None => None,
            Some(toml::Value::String(s)) if s.is_empty() => None,
            Some(toml::Value::String(s)) => Some(PathBuf::from(s)),
            Some(_) => {
                errs.push(ConfigError::new("state_dir", "must be a string (a path)"));
                None
            }
        };
        let log: RawLog = section(&table, "log", &mut errs);
        let tls: RawTls = section(&table, "tls", &mut errs);
        let sip: RawSip = section(&table, "sip", &mut errs);
        let control: RawControl = section(&table, "control", &mut errs);
        let admin: RawAdmin = section(&table, "admin", &mut errs);
        let media: RawMedia = section(&table, "media", &mut errs);
        let fork: crate::fork::config::RawFork = section(&table, "fork", &mut errs);
        let trunks: Vec<RawTrunk> = array_section(&table, "trunks", &mut errs);
        let routes: Vec<RawRoute> = array_section(&table, "routes", &mut errs);
        let keys: crate::keys::config::RawKeys = section(&table, "keys", &mut errs);
        let recording: crate::recording::config::RawRecording =
            section(&table, "recording", &mut errs);

        let mut v = Validator { errs };
        let cfg = Config {
            keys: crate::keys::config::validate(keys, &mut v.errs),
            recording: crate::recording::config::validate(recording, &mut v.errs),
            state_dir: state_dir.unwrap_or_else(default_state_dir),
            log: v.log(log),
            tls: v.tls(tls),
            sip: SipConfig {
                listen: v.addrs("sip.listen", &sip.listen),
                timer_b_secs: v.range("sip.timer_b_secs", sip.timer_b_secs, 1, 300) as u32,
                source_requests_per_sec: v.range(
                    "sip.source_requests_per_sec",
                    sip.source_requests_per_sec,
                    1,
                    1_000_000,
                ) as u32,
            },
            control: ControlConfig {
                listen: v.addrs("control.listen", &control.listen),
                allow_from: control
                    .allow_from
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        IpNet::parse(s)
                            .map_err(|r| v.err(format!("control.allow_from[{i}]"), r))
                            .ok()
                    })
                    .collect(),
            },
            admin: AdminConfig {
                listen: v.addrs("admin.listen", &admin.listen),
                token_file: non_empty_path(&admin.token_file),
            },
            media: v.media(media),
            fork: crate::fork::config::validate(fork, &mut v.errs),
            trunks: Vec::new(),
            routes: Vec::new(),
        };
        let mut cfg = cfg;
        cfg.trunks = v.trunks(trunks);
        cfg.routes = v.routes(routes, &cfg.trunks, &cfg.fork);
        // Cross-checks compare values with each other; on fallback values they would only add noise.
        if v.errs.is_empty() {
            v.cross_checks(&cfg);
        }
        if v.errs.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(v.errs))
        }
    }
}

fn non_empty_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Deserializes one section; on error records it (with the full dotted key) and uses defaults.
fn section<T: DeserializeOwned + Default>(
    table: &toml::Table,
    name: &str,
    errs: &mut Vec<ConfigError>,
) -> T {
    opt_section(table, name, errs).unwrap_or_default()
}

/// Deserializes an array of tables (`[[name]]`), reporting `name[i].key` on errors.
fn array_section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    errs: &mut Vec<ConfigError>,
) -> Vec<T> {
    let Some(value) = table.get(name) else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errs.push(ConfigError::new(
            name,
            "must be an array of tables ([[section]])",
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("{name}[{i}]");
        if !item.is_table() {
            errs.push(ConfigError::new(key, "must be a table"));
            continue;
        }
        match serde_path_to_error::deserialize::<_, T>(item.clone()) {
            Ok(v) => out.push(v),
            Err(e) => {
                let path = e.path().to_string();
                let key = if path == "." || path.is_empty() {
                    key
                } else {
                    format!("{key}.{path}")
                };
                errs.push(ConfigError::new(key, e.into_inner().to_string()));
            }
        }
    }
    out
}

fn opt_section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<T> {
    let value = table.get(name)?.clone();
    if !value.is_table() {
        errs.push(ConfigError::new(name, "must be a table ([section])"));
        return None;
    }
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let key = if path == "." || path.is_empty() {
                name.to_string()
            } else {
                format!("{name}.{path}")
            };
            let reason = e.into_inner().to_string();
            // serde's wording for unknown fields names the field; keep it, it lists the known ones.
            errs.push(ConfigError::new(key, reason));
            None
        }
    }
}

struct Validator {
    errs: Vec<ConfigError>,
}

impl Validator {
    fn err(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errs.push(ConfigError::new(key, reason));
    }

    fn log(&mut self, raw: RawLog) -> LogConfig {
        let format = match raw.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                self.err(
                    "log.format",
                    format!("{other:?} is not a log format (use \"human\" or \"json\")"),
                );
                LogFormat::Human
            }
        };
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&raw.level) {
            self.err(
                "log.level",
                format!("{:?} is not a valid filter: {e}", raw.level),
            );
        }
        LogConfig {
            format,
            level: raw.level,
            redact: raw.redact,
        }
    }

    fn tls(&mut self, raw: RawTls) -> TlsConfig {
        let min_version = match raw.min_version.trim() {
            "1.3" => TlsMinVersion::Tls13,
            "1.2" => TlsMinVersion::Tls12,
            v @ ("1.1" | "1.0" | "1" | "ssl3" | "SSLv3") => {
                self.err(
                    "tls.min_version",
                    format!(
                        "TLS {v} is below the encryption floor; only \"1.3\" (default) or \"1.2\" \
                         (ECDHE + AEAD suites only) can be configured"
                    ),
                );
                TlsMinVersion::Tls13
            }
            v => {
                self.err(
                    "tls.min_version",
                    format!("{v:?} is not a TLS version; use \"1.3\" (default) or \"1.2\""),
                );
                TlsMinVersion::Tls13
            }
        };
        let cert = match (raw.cert_file.is_empty(), raw.key_file.is_empty()) {
            (true, true) => CertSource::Generated,
            (false, true) => {
                self.err("tls.key_file", "must be set when tls.cert_file is set");
                CertSource::Generated
            }
            (true, false) => {
                self.err("tls.cert_file", "must be set when tls.key_file is set");
                CertSource::Generated
            }
            (false, false) => {
                let cert = PathBuf::from(&raw.cert_file);
                let key = PathBuf::from(&raw.key_file);
                if let Err(e) = crate::tls::certs::load_chain(&cert) {
                    self.err("tls.cert_file", e);
                }
                if let Err(e) = crate::tls::certs::load_key(&key) {
                    self.err("tls.key_file", e);
                }
                CertSource::Files { cert, key }
            }
        };
        let ca_file = non_empty_path(&raw.ca_file);
        if let Some(ca) = &ca_file {
            if let Err(e) = crate::tls::certs::load_chain(ca) {
                self.err("tls.ca_file", e);
            }
        }
        if raw.generated_names.is_empty() {
            self.err("tls.generated_names", "must name at least one host");
        }
        TlsConfig {
            min_version,
            cert,
            ca_file,
            generated_names: raw.generated_names,
        }
    }

    fn addrs(&mut self, key: &str, raw: &[String]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            match parse_socket_addr(s) {
                Ok(a) => out.push(a),
                Err(r) => self.err(format!("{key}[{i}]"), r),
            }
        }
        out
    }

    fn port(&mut self, key: &str, v: i64) -> Option<u16> {
        match u16::try_from(v) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.err(key, format!("port {v} is out of range (1-65535)"));
                None
            }
        }
    }

    fn range(&mut self, key: &str, v: i64, lo: i64, hi: i64) -> i64 {
        if v < lo || v > hi {
            self.err(key, format!("{v} is out of range ({lo}-{hi})"));
            lo
        } else {
            v
        }
    }

    fn ip<T: std::str::FromStr>(&mut self, key: &str, s: &str) -> Option<T> {
        if s.is_empty() {
            return None;
        }
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(key, format!("{s:?} is not a valid address of this family"));
                None
            }
        }
    }

    fn media(&mut self, raw: RawMedia) -> MediaConfig {
        let min = self.port("media.port_min", raw.port_min);
        let max = self.port("media.port_max", raw.port_max);
        let (port_min, port_max) = (min.unwrap_or(1), max.unwrap_or(1));
        if min.is_none() || max.is_none() {
            // Already reported; comparing fallback values would only add noise.
        } else if port_min > port_max {
            self.err(
                "media.port_max",
                format!("{port_max} is below media.port_min ({port_min})"),
            );
        } else if u32::from(port_max) - u32::from(port_min) < 3 {
            self.err(
                "media.port_max",
                "the media range must hold at least 4 ports (one call, two legs, RTP and RTCP)",
            );
        }
        let ipv4 = self.ip("media.ipv4", &raw.ipv4);
        let ipv6 = self.ip("media.ipv6", &raw.ipv6);
        if ipv4.is_none()
            && ipv6.is_none()
            && !self.errs.iter().any(|e| e.key.starts_with("media.ip"))
        {
            self.err(
                "media.ipv4",
                "at least one of media.ipv4 and media.ipv6 must be set",
            );
        }
        let mut seen = BTreeSet::new();
        let mut suites = Vec::new();
        for (i, s) in raw.suites.iter().enumerate() {
            let key = format!("media.suites[{i}]");
            match Profile::from_sdes_name(s) {
                Some(p) if seen.insert(p) => suites.push(p),
                Some(_) => self.err(key, format!("{s} is listed twice")),
                None => self.err(
                    key,
                    format!(
                        "{s:?} is not a supported SRTP suite (one of {}; NULL and F8 are never allowed)",
                        Profile::ALL.map(|p| p.sdes_name()).join(", ")
                    ),
                ),
            }
        }
        if raw.suites.is_empty() {
            self.err("media.suites", "must list at least one SRTP suite");
        }
        MediaConfig {
            ipv4,
            ipv6,
            advertise_ipv4: self.ip("media.advertise_ipv4", &raw.advertise_ipv4),
            advertise_ipv6: self.ip("media.advertise_ipv6", &raw.advertise_ipv6),
            port_min,
            port_max,
            timeout_secs: self.range("media.timeout_secs", raw.timeout_secs, 5, 86_400) as u32,
            workers: self.range("media.workers", raw.workers, 0, 1024) as usize,
            replay_window: self.range("media.replay_window", raw.replay_window, 64, 1024) as usize,
            relatch_packets: self.range("media.relatch_packets", raw.relatch_packets, 0, 1000)
                as u32,
            suites,
            dtls_handshake_timeout_secs: self.range(
                "media.dtls_handshake_timeout_secs",
                raw.dtls_handshake_timeout_secs,
                1,
                60,
            ) as u32,
            io_uring: raw.io_uring,
            batch_pause_us: self.range("media.batch_pause_us", raw.batch_pause_us, 0, 1000) as u32,
        }
    }

    fn suites(&mut self, key: &str, raw: &[String]) -> Vec<Profile> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let key = format!("{key}[{i}]");
            match Profile::from_sdes_name(s) {
                Some(p) if seen.insert(p) => out.push(p),
                Some(_) => self.err(key, format!("{s} is listed twice")),
                None => self.err(key, format!("{s:?} is not a supported SRTP suite")),
            }
        }
        out
    }

    fn trunks(&mut self, raw: Vec<RawTrunk>) -> Vec<TrunkConfig> {
        let mut out: Vec<TrunkConfig> = Vec::new();
        for (i, t) in raw.into_iter().enumerate() {
            let key = format!("trunks[{i}]");
            if t.name.trim().is_empty() {
                self.err(format!("{key}.name"), "must be set");
            } else if out.iter().any(|o| o.name == t.name) {
                self.err(format!("{key}.name"), format!("{:?} is used twice", t.name));
            }
            if t.from.is_empty() && t.client_names.is_empty() {
                self.err(
                    format!("{key}.from"),
                    "must list at least one source address or prefix (or set client_names)",
                );
            }
            for (j, n) in t.client_names.iter().enumerate() {
                if rustls_pki_types::ServerName::try_from(n.clone()).is_err() {
                    self.err(
                        format!("{key}.client_names[{j}]"),
                        format!("{n:?} is not a DNS name or IP address"),
                    );
                }
            }
            let client_ca_file = non_empty_path(&t.client_ca_file);
            if let Some(ca) = &client_ca_file {
                if let Err(e) = crate::tls::certs::load_chain(ca) {
                    self.err(format!("{key}.client_ca_file"), e);
                }
            }
            let from = t
                .from
                .iter()
                .enumerate()
                .filter_map(|(j, s)| {
                    IpNet::parse(s)
                        .map_err(|r| self.err(format!("{key}.from[{j}]"), r))
                        .ok()
                })
                .collect();
            let sdes_suites = self.suites(&format!("{key}.sdes_suites"), &t.sdes_suites);
            out.push(TrunkConfig {
                name: t.name,
                from,
                client_names: t.client_names,
                client_ca_file,
                sdes_suites,
            });
        }
        out
    }

    fn routes(
        &mut self,
        raw: Vec<RawRoute>,
        trunks: &[TrunkConfig],
        fork: &crate::fork::config::ForkConfig,
    ) -> Vec<RouteConfig> {
        use crate::sip::uri::{Host, Uri};
        let mut out = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            let trunk = (!r.trunk.is_empty()).then(|| r.trunk.clone());
            if let Some(t) = &trunk {
                if !trunks.iter().any(|x| &x.name == t) {
                    self.err(format!("{key}.trunk"), format!("no trunk is named {t:?}"));
                }
            }
            let fork_name = (!r.fork.is_empty()).then(|| r.fork.clone());
            if let Some(f) = &fork_name {
                if fork.backend(f).is_none() {
                    self.err(
                        format!("{key}.fork"),
                        format!("no [[fork.backends]] is named {f:?}"),
                    );
                }
            }
            if !r.agent.is_empty() || r.target.starts_with("wss:") || r.target.starts_with("ws:") {
                if let Some(agent) = self.agent_route(&key, &r, fork) {
                    out.push(RouteConfig {
                        trunk,
                        user_prefix: r.user_prefix,
                        host: (!r.host.is_empty()).then_some(r.host),
                        target: crate::sip::uri::SipUri {
                            secure: true,
                            user: None,
                            password: None,
                            host: Host::V4(std::net::Ipv4Addr::UNSPECIFIED),
                            port: None,
                            params: Vec::new(),
                            headers: Vec::new(),
                        },
                        target_addr: None,
                        target_host: (String::new(), 0),
                        server_name: "0.0.0.0".into(),
                        ca_file: None,
                        client_cert: None,
                        agent: Some(agent),
                        fork: None,
                        media_keying: MediaKeying::default(),
                        record: r.record,
                        record_tenant: self.record_tenant(&key, &r.record_tenant),
                    });
                }
                continue;
            }
            let uri = match Uri::parse(r.target.as_bytes()) {
                Some(Uri::Sip(u)) => u,
                _ => {
                    self.err(
                        format!("{key}.target"),
                        format!("{:?} is not a sip: or sips: URI", r.target),
                    );
                    continue;
                }
            };
            let tls = uri.secure
                || uri
                    .param("transport")
                    .and_then(|p| p.value.as_deref())
                    .is_some_and(|v| v.eq_ignore_ascii_case("tls"));
            if !tls {
                self.err(
                    format!("{key}.target"),
                    "must be sips: or carry ;transport=tls (SIP is only sent over TLS)",
                );
            }
            let port = uri.port.unwrap_or(5061);
            let (host, ip) = match &uri.host {
                Host::V4(a) => (a.to_string(), Some(IpAddr::V4(*a))),
                Host::V6(a) => (a.to_string(), Some(IpAddr::V6(*a))),
                Host::Name(n) => {
                    if rustls_pki_types::ServerName::try_from(n.clone()).is_err() {
                        self.err(format!("{key}.target"), format!("{n:?} is not a DNS name"));
                        continue;
                    }
                    (n.clone(), None)
                }
            };
            let target_addr = ip.map(|ip| SocketAddr::new(ip, port));
            let ca_file = non_empty_path(&r.ca_file);
            if let Some(ca) = &ca_file {
                if let Err(e) = crate::tls::certs::load_chain(ca) {
                    self.err(format!("{key}.ca_file"), e);
                }
            }
            let client_cert = match (
                non_empty_path(&r.client_cert_file),
                non_empty_path(&r.client_key_file),
            ) {
                (None, None) => None,
                (Some(_), None) => {
                    self.err(
                        format!("{key}.client_key_file"),
                        "must be set when client_cert_file is set",
                    );
                    None
                }
                (None, Some(_)) => {
                    self.err(
                        format!("{key}.client_cert_file"),
                        "must be set when client_key_file is set",
                    );
                    None
                }
                (Some(cert), Some(k)) => {
                    if let Err(e) = crate::tls::certs::load_chain(&cert) {
                        self.err(format!("{key}.client_cert_file"), e);
                    }
                    if let Err(e) = crate::tls::certs::load_key(&k) {
                        self.err(format!("{key}.client_key_file"), e);
                    }
                    Some(ClientCert { cert, key: k })
                }
            };
            let server_name = if r.server_name.is_empty() {
                host.clone()
            } else {
                r.server_name.clone()
            };
            if rustls_pki_types::ServerName::try_from(server_name.clone()).is_err() {
                self.err(
                    format!("{key}.server_name"),
                    format!("{server_name:?} is not a DNS name or IP address"),
                );
            }
            let media_keying = if r.media_keying.is_empty() {
                MediaKeying::default()
            } else {
                MediaKeying::parse(&r.media_keying).unwrap_or_else(|| {
                    self.err(
                        format!("{key}.media_keying"),
                        format!("{:?} is neither \"sdes\" nor \"dtls\"", r.media_keying),
                    );
                    MediaKeying::default()
                })
            };
            out.push(RouteConfig {
                trunk,
                user_prefix: r.user_prefix,
                host: (!r.host.is_empty()).then_some(r.host),
                target: uri,
                target_addr,
                target_host: (host, port),
                server_name,
                ca_file,
                agent: None,
                fork: fork_name,
                media_keying,
                client_cert,
                record: r.record,
                record_tenant: self.record_tenant(&key, &r.record_tenant),
            });
        }
        out
    }

    /// A route's `record_tenant`, checked (empty: None).
    fn record_tenant(&mut self, key: &str, t: &str) -> Option<String> {
        if t.is_empty() {
            return None;
        }
        if !crate::keys::valid_tenant(t) {
            self.err(
                format!("{key}.record_tenant"),
                "must be 1-64 of A-Z a-z 0-9 . _ -",
            );
            return None;
        }
        Some(t.to_string())
    }

    /// The backend of an agent route (`agent = "name"` or `target = "wss://…"` naming a
    /// configured backend's URL), or None after recording why not. No route can make srtp-edge
    /// connect to a URL that is not a configured backend.
    fn agent_route(
        &mut self,
        key: &str,
        r: &RawRoute,
        fork: &crate::fork::config::ForkConfig,
    ) -> Option<String> {
        for (k, set) in [
            ("fork", !r.fork.is_empty()),
            ("ca_file", !r.ca_file.is_empty()),
            ("server_name", !r.server_name.is_empty()),
            ("media_keying", !r.media_keying.is_empty()),
        ] {
            if set {
                self.err(
                    format!("{key}.{k}"),
                    "not allowed on an agent route (the backend's own settings apply)",
                );
            }
        }
        if !r.agent.is_empty() {
            if !r.target.is_empty() {
                self.err(
                    format!("{key}.target"),
                    "give either agent or target, not both",
                );
                return None;
            }
            if fork.backend(&r.agent).is_none() {
                self.err(
                    format!("{key}.agent"),
                    format!("no [[fork.backends]] is named {:?}", r.agent),
                );
                return None;
            }
            return Some(r.agent.clone());
        }
        if !r.target.starts_with("wss://") {
            self.err(
                format!("{key}.target"),
                "ws:// is not allowed: agent backends are wss:// only",
            );
            return None;
        }
        let mut found = fork.backends.iter().filter(|b| b.url == r.target);
        match (found.next(), found.next()) {
            (Some(b), None) => Some(b.name.clone()),
            (Some(_), Some(_)) => {
                self.err(
                    format!("{key}.target"),
                    "several [[fork.backends]] have this url; name one with agent = \"name\"",
                );
                None
            }
            (None, _) => {
                self.err(
                    format!("{key}.target"),
                    "no [[fork.backends]] has this url (agent routes only reach configured backends)",
                );
                None
            }
        }
    }

    fn cross_checks(&mut self, cfg: &Config) {
        self.errs.extend(crate::recording::config::cross_check(cfg));
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        let tcp = cfg
            .sip
            .listen
            .iter()
            .map(|a| (*a, "sip.listen"))
            .chain(cfg.admin.listen.iter().map(|a| (*a, "admin.listen")));
        for (a, key) in tcp {
            if let Some((_, other)) = seen.iter().find(|(b, _)| *b == a) {
                self.err(key, format!("{a} is also used by {other}"));
            } else {
                seen.push((a, key));
            }
        }
        for a in &cfg.control.listen {
            if (cfg.media.port_min..=cfg.media.port_max).contains(&a.port()) {
                self.err(
                    "control.listen",
                    format!("port {} lies inside the media port range", a.port()),
                );
            }
        }
    }
}

/// Parses `ip:port` or `[ipv6]:port`, with a message that says which part is wrong.
fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} must be address:port (e.g. \"127.0.0.1:5061\")"))?;
    let port: i64 = port
        .parse()
        .map_err(|_| format!("{s:?} has no numeric port"))?;
    if !(1..=65535).contains(&port) {
        return Err(format!("port {port} in {s:?} is out of range (1-65535)"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("{host:?} in {s:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<ConfigError> {
        match Config::from_toml_str(text) {
            Ok(_) => panic!("expected errors for {text:?}"),
            Err(e) => e.0,
        }
    }

    fn keys(text: &str) -> Vec<String> {
        errors(text).into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn embedded_default_is_loopback_only() {
        let c = Config::embedded_default();
        assert_eq!(c.sip.listen, vec!["127.0.0.1:5061".parse().unwrap()]);
        assert_eq!(c.control.listen, vec!["127.0.0.1:2223".parse().unwrap()]);
        assert_eq!(c.admin.listen, vec!["127.0.0.1:9443".parse().unwrap()]);
        assert_eq!((c.media.port_min, c.media.port_max), (30000, 39999));
        assert_eq!(c.media.ipv4, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(c.tls.min_version, TlsMinVersion::Tls13);
        assert_eq!(c.tls.cert, CertSource::Generated);
        assert!(c.log.redact);
        assert_eq!(c.media.suites, DEFAULT_SUITES.to_vec());
    }

    #[test]
    fn example_config_equals_the_embedded_default() {
        let text = include_str!("../conf/srtp-edge.toml");
        let mut example = Config::from_toml_str(text).unwrap();
        let mut default = Config::embedded_default();
        // The example names a state directory; everything else is the default.
        example.state_dir = PathBuf::new();
        default.state_dir = PathBuf::new();
        assert_eq!(example, default);
    }

    #[test]
    fn a_partial_file_is_complete() {
        let c = Config::from_toml_str("[media]\nport_min = 40000\nport_max = 40100\n").unwrap();
        assert_eq!((c.media.port_min, c.media.port_max), (40000, 40100));
        assert_eq!(c.admin.listen, vec!["127.0.0.1:9443".parse().unwrap()]);
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(keys("bogus = 1"), vec!["bogus"]);
        let e = errors("[tls]\nmin_versoin = \"1.3\"\n");
        assert_eq!(e[0].key, "tls.min_versoin");
        assert!(e[0].reason.contains("min_versoin"), "{}", e[0].reason);
    }

    #[test]
    fn tls_floor_cannot_be_lowered() {
        for v in ["1.1", "1.0", "ssl3"] {
            let e = errors(&format!("[tls]\nmin_version = \"{v}\"\n"));
            assert_eq!(e[0].key, "tls.min_version");
            assert!(e[0].reason.contains("below the encryption floor"));
        }
        let c = Config::from_toml_str("[tls]\nmin_version = \"1.2\"\n").unwrap();
        assert_eq!(c.tls.min_version, TlsMinVersion::Tls12);
        assert_eq!(keys("[tls]\nmin_version = 1.3\n"), vec!["tls.min_version"]);
    }

    #[test]
    fn ports_out_of_range_are_named() {
        assert_eq!(keys("[media]\nport_min = 70000\n"), vec!["media.port_min"]);
        for bad in ["0", "61", "\"10\""] {
            assert_eq!(
                keys(&format!("[media]\ndtls_handshake_timeout_secs = {bad}\n")),
                vec!["media.dtls_handshake_timeout_secs"]
            );
        }
        let e = errors("[sip]\nlisten = [\"127.0.0.1:70000\"]\n");
        assert_eq!(e[0].key, "sip.listen[0]");
        assert!(e[0].reason.contains("out of range"));
        assert_eq!(
            keys("[admin]\nlisten = [\"localhost:9443\"]\n"),
            vec!["admin.listen[0]"]
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let k = keys(
            "[tls]\nmin_version = \"1.1\"\n[media]\nport_min = 0\nsuites = [\"NULL_HMAC_SHA1_80\"]\n[log]\nformat = \"xml\"\n",
        );
        for want in [
            "tls.min_version",
            "media.port_min",
            "media.suites[0]",
            "log.format",
        ] {
            assert!(k.iter().any(|x| x == want), "{want} missing from {k:?}");
        }
    }

    #[test]
    fn unreadable_certificate_is_named() {
        let e = errors(
            "[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n",
        );
        let k: Vec<_> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(k, vec!["tls.cert_file", "tls.key_file"]);
        assert!(e[0].reason.contains("/nonexistent/c.pem"));
        assert_eq!(keys("[tls]\ncert_file = \"/x\"\n"), vec!["tls.key_file"]);
    }

    #[test]
    fn wrong_types_are_named() {
        assert_eq!(
            keys("[media]\ntimeout_secs = \"60\"\n"),
            vec!["media.timeout_secs"]
        );
        assert_eq!(keys("[log]\nredact = \"no\"\n"), vec!["log.redact"]);
        assert_eq!(keys("media = 3\n"), vec!["media"]);
        assert_eq!(
            keys("[media]\nreplay_window = 32\n"),
            vec!["media.replay_window"]
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = errors("[media]\nport_min = \n");
        assert!(e[0].reason.contains("line 2"), "{}", e[0].reason);
    }

    #[test]
    fn overlapping_listeners_are_refused() {
        let k = keys("[admin]\nlisten = [\"127.0.0.1:5061\"]\n");
        assert_eq!(k, vec!["admin.listen"]);
        assert_eq!(
            keys("[control]\nlisten = [\"127.0.0.1:30001\"]\n"),
            vec!["control.listen"]
        );
    }

    #[test]
    fn trunks_and_routes() {
        let c = Config::from_toml_str(
            "[[trunks]]\nname = \"carrier\"\nfrom = [\"127.0.0.0/8\"]\nsdes_suites = [\"AES_CM_128_HMAC_SHA1_80\"]\n\
             [[routes]]\ntrunk = \"carrier\"\nuser_prefix = \"+49\"\ntarget = \"sip:127.0.0.1:5071;transport=tls\"\n\
             [[routes]]\ntarget = \"sips:[::1]\"\nserver_name = \"pbx.example\"\nmedia_keying = \"DTLS\"\n",
        )
        .unwrap();
        assert_eq!(c.routes[0].media_keying, MediaKeying::Sdes);
        assert_eq!(c.routes[1].media_keying, MediaKeying::Dtls);
        assert_eq!(c.trunks[0].name, "carrier");
        assert_eq!(c.trunks[0].sdes_suites, vec![Profile::AesCm128HmacSha1_80]);
        assert_eq!(
            c.routes[0].target_addr,
            Some("127.0.0.1:5071".parse().unwrap())
        );
        assert_eq!(c.routes[0].server_name, "127.0.0.1");
        assert_eq!(c.routes[1].target_addr, Some("[::1]:5061".parse().unwrap()));
        assert_eq!(c.routes[1].target_host, ("::1".to_string(), 5061));
        assert_eq!(c.routes[1].server_name, "pbx.example");
        assert!(c.routes[1].client_cert.is_none());
        assert!(Config::embedded_default().trunks.is_empty());
        assert_eq!(c.sip.timer_b_secs, 32);
        assert_eq!(c.sip.source_requests_per_sec, 1000);
    }

    #[test]
    fn dns_route_targets_and_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let p = crate::tls::certs::GeneratedPaths::in_dir(dir.path());
        crate::tls::certs::ensure_generated(dir.path(), &["localhost".into()]).unwrap();
        let c = Config::from_toml_str(&format!(
            "[sip]\ntimer_b_secs = 4\nsource_requests_per_sec = 5000\n[[routes]]\ntarget = \"sips:pbx.example:5071\"\n\
             client_cert_file = {:?}\nclient_key_file = {:?}\n",
            p.server_cert.display().to_string(),
            p.server_key.display().to_string()
        ))
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.target_addr, None);
        assert_eq!(r.target_ip(), None);
        assert_eq!(r.target_host, ("pbx.example".to_string(), 5071));
        assert_eq!(r.server_name, "pbx.example");
        assert_eq!(r.client_cert.as_ref().unwrap().cert, p.server_cert);
        assert_eq!(c.sip.timer_b_secs, 4);
        assert_eq!(c.sip.source_requests_per_sec, 5000);
        let k = keys(
            "[sip]\ntimer_b_secs = 0\n[[routes]]\ntarget = \"sips:127.0.0.1\"\nclient_cert_file = \"/nonexistent.pem\"\n\
             [[routes]]\ntarget = \"sips:127.0.0.1\"\nclient_cert_file = \"/nonexistent.pem\"\nclient_key_file = \"/nonexistent.key\"\n",
        );
        assert_eq!(
            k,
            vec![
                "sip.timer_b_secs",
                "routes[0].client_key_file",
                "routes[1].client_cert_file",
                "routes[1].client_key_file",
            ]
        );
    }

    #[test]
    fn bad_trunks_and_routes_are_named() {
        let k = keys(
            "[[trunks]]\nname = \"\"\nfrom = [\"x\"]\n[[routes]]\ntrunk = \"nope\"\ntarget = \"sip:10.0.0.1\"\n\
             [[routes]]\ntarget = \"wss://a/b\"\n[[routes]]\ntarget = \"sips:-pbx.example\"\n\
             [[routes]]\ntarget = \"sips:10.0.0.2\"\nmedia_keying = \"zrtp\"\n[[routes]]\nbogus = 1\n",
        );
        assert_eq!(
            k,
            vec![
                "routes[4].bogus",
                "trunks[0].name",
                "trunks[0].from[0]",
                "routes[0].trunk",
                "routes[0].target",
                "routes[1].target",
                "routes[2].target",
                "routes[3].media_keying",
            ]
        );
    }

    #[test]
    fn agent_and_fork_routes_name_configured_backends_only() {
        let be = "[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:8765/stream\"\n\
                  [[fork.backends]]\nname = \"rec\"\nurl = \"wss://127.0.0.1:8766/r\"\n";
        let c = Config::from_toml_str(&format!(
            "{be}[[routes]]\nuser_prefix = \"8\"\ntarget = \"wss://127.0.0.1:8765/stream\"\n\
             [[routes]]\nuser_prefix = \"9\"\nagent = \"rec\"\n\
             [[routes]]\ntarget = \"sips:127.0.0.1:5071\"\nfork = \"rec\"\n"
        ))
        .unwrap();
        assert_eq!(c.routes[0].agent.as_deref(), Some("ai"));
        assert_eq!(c.routes[1].agent.as_deref(), Some("rec"));
        assert_eq!(
            (c.routes[2].agent.as_deref(), c.routes[2].fork.as_deref()),
            (None, Some("rec"))
        );
        assert_eq!(c.routes[0].fork, None);
        assert_eq!(
            keys(&format!(
                "{be}[[routes]]\ntarget = \"wss://evil.example/x\"\n\
                 [[routes]]\ntarget = \"ws://127.0.0.1:8765/stream\"\n\
                 [[routes]]\nagent = \"nope\"\n\
                 [[routes]]\nagent = \"ai\"\ntarget = \"wss://127.0.0.1:8765/stream\"\n\
                 [[routes]]\nagent = \"ai\"\nfork = \"rec\"\n\
                 [[routes]]\ntarget = \"sips:127.0.0.1\"\nfork = \"nope\"\n"
            )),
            vec![
                "routes[0].target",
                "routes[1].target",
                "routes[2].agent",
                "routes[3].target",
                "routes[4].fork",
                "routes[5].fork",
            ]
        );
    }

    #[test]
    fn ip_prefixes() {
        let n = IpNet::parse("127.0.0.0/8").unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains("10.0.0.1".parse().unwrap()));
        let z = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(z.contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("::1/129").is_err());
        assert!(IpNet::parse("::1")
            .unwrap()
            .contains("::1".parse().unwrap()));
    }
}
