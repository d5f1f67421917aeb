//! The rtpengine "ng" control protocol: datagram framing (`<cookie> <bencode dictionary>`),
//! typed requests for the commands srtp-edge implements, the plaintext-refusal rule, and reply
//! builders with the shapes Kamailio's and OpenSIPS' `rtpengine` modules expect
//! (`result` = `ok` / `pong` / `error` + `error-reason`, `sdp`, query/list/statistics dicts).
//!
//! rtpengine accepts keys and flags spelled with spaces or hyphens (`transport protocol`,
//! `transport-protocol`); so does this parser. Unknown keys and flags are kept in
//! [`Request::unknown`] for a debug log and otherwise ignored, as rtpengine does.

use std::fmt;
use std::net::SocketAddr;

use thiserror::Error;

use super::bencode::{BencodeError, DictBuilder, Value};
use crate::srtp::Profile;

/// Longest cookie accepted (rtpengine's modules send a few dozen characters).
pub const MAX_COOKIE: usize = 128;
/// Most entries accepted in one list-valued key (flags, replace, SDES...).
const MAX_LIST: usize = 64;
/// Longest fork backend name accepted in the `fork` key.
const MAX_FORK_NAME: usize = 128;

/// Why an ng datagram could not be turned into a request. `reply_reason` is the
/// `error-reason` to send back (when a cookie could be read).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NgError {
    /// No space-separated cookie, or an unprintable/oversized cookie: no reply is possible.
    #[error("no valid cookie")]
    NoCookie,
    /// The payload is not valid bencode.
    #[error("malformed bencode: {0}")]
    Bencode(#[from] BencodeError),
    /// The payload is not a dictionary.
    #[error("Could not decode dictionary")]
    NotDict,
    /// No `command` key.
    #[error("No command in message")]
    NoCommand,
    /// A command srtp-edge does not implement.
    #[error("Unrecognized command")]
    UnknownCommand,
    /// A required key is missing or not a string (message in rtpengine's words).
    #[error("{0}")]
    Missing(&'static str),
    /// A key has a value of the wrong type or an invalid value.
    #[error("Invalid value for {0}")]
    Invalid(&'static str),
}

impl NgError {
    /// The `error-reason` text for the error reply.
    pub fn reply_reason(&self) -> String {
        match self {
            NgError::Bencode(_) | NgError::NotDict => "Could not decode dictionary".to_string(),
            other => other.to_string(),
        }
    }
}

/// Splits an ng datagram into its cookie and bencode payload.
pub fn split_datagram(datagram: &[u8]) -> Result<(&[u8], &[u8]), NgError> {
    let sp = datagram
        .iter()
        .take(MAX_COOKIE + 1)
        .position(|&b| b == b' ')
        .ok_or(NgError::NoCookie)?;
    let cookie = &datagram[..sp];
    if cookie.is_empty() || !cookie.iter().all(|b| b.is_ascii_graphic()) {
        return Err(NgError::NoCookie);
    }
    Ok((cookie, &datagram[sp + 1..]))
}

/// The ng commands srtp-edge implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Liveness check; answered `pong`.
    Ping,
    /// An SDP offer to anchor.
    Offer,
    /// The SDP answer for an earlier offer.
    Answer,
    /// End a call (or one branch of it).
    Delete,
    /// Per-call statistics.
    Query,
    /// List call-ids.
    List,
    /// Daemon-wide statistics.
    Statistics,
    /// Fork a running call to the backend named by `fork` (`start forwarding`).
    StartForwarding,
    /// Stop a call's fork (`stop forwarding`).
    StopForwarding,
    /// Record a call (or resume a paused recording): `start recording`.
    StartRecording,
    /// Stop recording a call (`stop recording`; with flag `pause` or `pause=yes`: pause).
    StopRecording,
    /// Pause a call's recording, keeping its file open (`pause recording`).
    PauseRecording,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ping" => Command::Ping,
            "offer" => Command::Offer,
            "answer" => Command::Answer,
            "delete" => Command::Delete,
            "query" => Command::Query,
            "list" => Command::List,
            "statistics" => Command::Statistics,
            "start forwarding" | "start-forwarding" => Command::StartForwarding,
            "stop forwarding" | "stop-forwarding" => Command::StopForwarding,
            "start recording" | "start-recording" => Command::StartRecording,
            "stop recording" | "stop-recording" => Command::StopRecording,
            "pause recording" | "pause-recording" => Command::PauseRecording,
            _ => return None,
        })
    }
}

/// The `ICE` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IceMode {
    /// Strip ICE attributes.
    Remove,
    /// Add our own ICE candidates.
    Force,
    /// Relay-only candidates.
    ForceRelay,
    /// Any other value, kept verbatim.
    Other(String),
}

/// The `DTLS` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtlsMode {
    /// No DTLS-SRTP on the outgoing leg.
    Off,
    /// Be the DTLS server.
    Passive,
    /// Be the DTLS client.
    Active,
    /// Any other value, kept verbatim.
    Other(String),
}

/// One entry of the `SDES` list (or an `SDES-...` flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdesOption {
    /// `off` / `no` / `disable(d)`: no SDES on the outgoing leg.
    Off,
    /// `no-<suite>`: do not offer that suite (the name kept if it is not one we know).
    No(Result<Profile, String>),
    /// `only-<suite>`: offer only the listed suites.
    Only(Result<Profile, String>),
    /// `unencrypted_srtp`, `unencrypted_srtcp`, `unauthenticated_srtp`: weaken protection.
    Weaken(String),
    /// Anything else, kept verbatim.
    Other(String),
}

impl SdesOption {
    fn parse(s: &str) -> SdesOption {
        let suite = |n: &str| Profile::from_sdes_name(n).ok_or_else(|| n.to_string());
        if let Some(n) = s.strip_prefix("no-") {
            return SdesOption::No(suite(n));
        }
        if let Some(n) = s.strip_prefix("only-") {
            return SdesOption::Only(suite(n));
        }
        match s {
            "off" | "no" | "disable" | "disabled" => SdesOption::Off,
            _ if matches!(
                s.to_ascii_lowercase().as_str(),
                "unencrypted_srtp" | "unencrypted_srtcp" | "unauthenticated_srtp"
            ) =>
            {
                SdesOption::Weaken(s.to_string())
            }
            _ => SdesOption::Other(s.to_string()),
        }
    }
}

/// One entry of the `rtcp-mux` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtcpMuxOption {
    /// Offer rtcp-mux to the other leg.
    Offer,
    /// Accept rtcp-mux from the offerer.
    Accept,
    /// Demultiplex towards the other leg.
    Demux,
    /// Refuse rtcp-mux.
    Reject,
    /// Require rtcp-mux.
    Require,
    /// Anything else, kept verbatim.
    Other(String),
}

impl RtcpMuxOption {
    fn parse(s: &str) -> RtcpMuxOption {
        match s {
            "offer" => RtcpMuxOption::Offer,
            "accept" => RtcpMuxOption::Accept,
            "demux" => RtcpMuxOption::Demux,
            "reject" => RtcpMuxOption::Reject,
            "require" => RtcpMuxOption::Require,
            _ => RtcpMuxOption::Other(s.to_string()),
        }
    }
}

/// A typed ng request. `sdp` is never shown by `Debug` (it may carry SDES keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// `call-id`.
    pub call_id: Option<String>,
    /// `from-tag`.
    pub from_tag: Option<String>,
    /// `to-tag`.
    pub to_tag: Option<String>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// `sdp` (offer and answer).
    pub sdp: Option<Vec<u8>>,
    /// `flags` (hyphenated), minus the `SDES-...` ones which go to `sdes`.
    pub flags: Vec<String>,
    /// `replace` entries (`origin`, `session-connection`).
    pub replace: Vec<String>,
    /// `transport-protocol`.
    pub transport_protocol: Option<String>,
    /// `ICE`.
    pub ice: Option<IceMode>,
    /// `DTLS`.
    pub dtls: Option<DtlsMode>,
    /// `SDES` list plus `SDES-...` flags.
    pub sdes: Vec<SdesOption>,
    /// `direction` list (interface names, e.g. `internal`, `external`).
    pub direction: Vec<String>,
    /// `rtcp-mux` list.
    pub rtcp_mux: Vec<RtcpMuxOption>,
    /// `received-from`: address family and address of the SIP message source.
    pub received_from: Option<(String, String)>,
    /// `limit` (list command).
    pub limit: Option<i64>,
    /// `fork`: the name of a configured fork backend (`[[fork.backends]]`), never a URL.
    pub fork: Option<String>,
    /// `record-call` (`yes`/`on` or `no`/`off`), or the `record-call` flag (yes).
    pub record_call: Option<bool>,
    /// `pause` = `yes` (`stop recording` then pauses).
    pub pause: bool,
    /// Keys this parser does not use, for a debug log.
    pub unknown: Vec<String>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("command", &self.command)
            .field("call_id", &self.call_id)
            .field("from_tag", &self.from_tag)
            .field("to_tag", &self.to_tag)
            .field("sdp_len", &self.sdp.as_ref().map(Vec::len))
            .field("flags", &self.flags)
            .field("transport_protocol", &self.transport_protocol)
            .field("ice", &self.ice)
            .field("dtls", &self.dtls)
            .field("sdes", &self.sdes)
            .field("rtcp_mux", &self.rtcp_mux)
            .field("fork", &self.fork)
            .field("record_call", &self.record_call)
            .field("unknown", &self.unknown)
            .finish_non_exhaustive()
    }
}

/// rtpengine's spelling rule: keys and flags may use spaces instead of hyphens.
fn hyphenate(s: &str) -> String {
    s.replace(' ', "-")
}

fn text(v: &Value, key: &'static str) -> Result<String, NgError> {
    v.as_str().map(str::to_string).ok_or(NgError::Invalid(key))
}

fn text_list(v: &Value, key: &'static str) -> Result<Vec<String>, NgError> {
    let l = v.as_list().ok_or(NgError::Invalid(key))?;
    if l.len() > MAX_LIST {
        return Err(NgError::Invalid(key));
    }
    l.iter().map(|i| text(i, key)).collect()
}

impl Request {
    /// Parses the bencode payload of an ng datagram.
    pub fn parse(payload: &[u8]) -> Result<Request, NgError> {
        let v = Value::decode(payload)?;
        Request::from_value(&v)
    }

    /// Builds a typed request from a decoded dictionary.
    pub fn from_value(v: &Value) -> Result<Request, NgError> {
        let dict = v.as_dict().ok_or(NgError::NotDict)?;
        let command = v
            .get("command")
            .ok_or(NgError::NoCommand)?
            .as_str()
            .ok_or(NgError::NoCommand)?;
        let command = Command::parse(command).ok_or(NgError::UnknownCommand)?;
        let mut r = Request {
            command,
            call_id: None,
            from_tag: None,
            to_tag: None,
            via_branch: None,
            sdp: None,
            flags: Vec::new(),
            replace: Vec::new(),
            transport_protocol: None,
            ice: None,
            dtls: None,
            sdes: Vec::new(),
            direction: Vec::new(),
            rtcp_mux: Vec::new(),
            received_from: None,
            limit: None,
            fork: None,
            record_call: None,
            pause: false,
            unknown: Vec::new(),
        };
        for (k, val) in dict {
            let key = hyphenate(&String::from_utf8_lossy(k));
            match key.as_str() {
                "command" => {}
                "call-id" => r.call_id = Some(text(val, "call-id")?),
                "from-tag" => r.from_tag = Some(text(val, "from-tag")?),
                "to-tag" => r.to_tag = Some(text(val, "to-tag")?),
                "via-branch" => r.via_branch = Some(text(val, "via-branch")?),
                "sdp" => {
                    r.sdp = Some(val.as_bytes().ok_or(NgError::Invalid("sdp"))?.to_vec());
                }
                "flags" => {
                    for f in text_list(val, "flags")? {
                        let f = hyphenate(&f);
                        match f.strip_prefix("SDES-") {
                            Some(s) => r.sdes.push(SdesOption::parse(s)),
                            None => r.flags.push(f),
                        }
                    }
                }
                "replace" => {
                    r.replace = text_list(val, "replace")?
                        .iter()
                        .map(|s| hyphenate(s))
                        .collect();
                }
                "transport-protocol" => {
                    r.transport_protocol = Some(text(val, "transport-protocol")?);
                }
                "ICE" => {
                    let s = text(val, "ICE")?;
                    r.ice = Some(match hyphenate(&s).replace('_', "-").as_str() {
                        "remove" => IceMode::Remove,
                        "force" => IceMode::Force,
                        "force-relay" => IceMode::ForceRelay,
                        _ => IceMode::Other(s),
                    });
                }
                "DTLS" => {
                    let s = text(val, "DTLS")?;
                    r.dtls = Some(match s.as_str() {
                        "off" | "no" | "disable" | "disabled" => DtlsMode::Off,
                        "passive" => DtlsMode::Passive,
                        "active" => DtlsMode::Active,
                        _ => DtlsMode::Other(s),
                    });
                }
                "SDES" => {
                    for s in text_list(val, "SDES")? {
                        r.sdes.push(SdesOption::parse(&s));
                    }
                }
                "direction" => r.direction = text_list(val, "direction")?,
                "rtcp-mux" => {
                    r.rtcp_mux = text_list(val, "rtcp-mux")?
                        .iter()
                        .map(|s| RtcpMuxOption::parse(s))
                        .collect();
                }
                "received-from" => {
                    let l = text_list(val, "received-from")?;
                    if let [fam, addr] = l.as_slice() {
                        r.received_from = Some((fam.clone(), addr.clone()));
                    } else {
                        return Err(NgError::Invalid("received-from"));
                    }
                }
                "fork" => {
                    let name = text(val, "fork")?;
                    if name.is_empty() || name.len() > MAX_FORK_NAME {
                        return Err(NgError::Invalid("fork"));
                    }
                    r.fork = Some(name);
                }
                "record-call" => {
                    r.record_call = match text(val, "record-call")?.to_ascii_lowercase().as_str() {
                        "yes" | "on" | "true" => Some(true),
                        "no" | "off" | "false" => Some(false),
                        _ => return Err(NgError::Invalid("record-call")),
                    };
                }
                "pause" => {
                    r.pause = matches!(
                        text(val, "pause")?.to_ascii_lowercase().as_str(),
                        "yes" | "on" | "true"
                    );
                }
                "limit" => {
                    let n = val.as_int().ok_or(NgError::Invalid("limit"))?;
                    if n < 0 {
                        return Err(NgError::Invalid("limit"));
                    }
                    r.limit = Some(n);
                }
                _ => {
                    if r.unknown.len() < MAX_LIST {
                        r.unknown.push(key.chars().take(64).collect());
                    }
                }
            }
        }
        if r.record_call.is_none() && r.has_flag("record-call") {
            r.record_call = Some(true);
        }
        if r.has_flag("pause") {
            r.pause = true;
        }
        r.check_required()?;
        Ok(r)
    }

    fn check_required(&self) -> Result<(), NgError> {
        match self.command {
            Command::Offer | Command::Answer => {
                if self.sdp.is_none() {
                    return Err(NgError::Missing("No SDP body in message"));
                }
                if self.call_id.is_none() {
                    return Err(NgError::Missing("No call-id in message"));
                }
                if self.from_tag.is_none() {
                    return Err(NgError::Missing("No from-tag in message"));
                }
                if self.command == Command::Answer && self.to_tag.is_none() {
                    return Err(NgError::Missing("No to-tag in message"));
                }
            }
            Command::StartForwarding => {
                if self.call_id.is_none() {
                    return Err(NgError::Missing("No call-id in message"));
                }
                if self.fork.is_none() {
                    return Err(NgError::Missing("No fork backend in message"));
                }
            }
            Command::Delete
            | Command::Query
            | Command::StopForwarding
            | Command::StartRecording
            | Command::StopRecording
            | Command::PauseRecording => {
                if self.call_id.is_none() {
                    return Err(NgError::Missing("No call-id in message"));
                }
            }
            Command::Ping | Command::List | Command::Statistics => {}
        }
        Ok(())
    }

    /// True if a flag (hyphenated spelling) is present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The `received-from` address as a socket address with port 0, if it parses.
    pub fn received_from_addr(&self) -> Option<SocketAddr> {
        let (_, a) = self.received_from.as_ref()?;
        a.parse().ok().map(|ip| SocketAddr::new(ip, 0))
    }

    /// The SRTP suites to offer on the outgoing leg: the configured list (preference order)
    /// narrowed by `SDES` `only-<suite>` (if any) and `no-<suite>` entries. Empty means SDES
    /// was turned off or every suite excluded: the offer must then be refused (see
    /// [`refuses_plaintext`]), never sent without keys.
    pub fn sdes_suites(&self, configured: &[Profile]) -> Vec<Profile> {
        if self.sdes.contains(&SdesOption::Off) {
            return Vec::new();
        }
        let only: Vec<&Result<Profile, String>> = self
            .sdes
            .iter()
            .filter_map(|o| match o {
                SdesOption::Only(p) => Some(p),
                _ => None,
            })
            .collect();
        configured
            .iter()
            .copied()
            .filter(|p| only.is_empty() || only.iter().any(|o| o.as_ref() == Ok(p)))
            .filter(|p| {
                !self
                    .sdes
                    .iter()
                    .any(|o| matches!(o, SdesOption::No(Ok(n)) if n == p))
            })
            .collect()
    }
}

/// True if the request asks for media that would be plain RTP on some leg, so it must be
/// answered `error` / "plaintext media refused" without touching any call state:
/// `transport-protocol` `RTP/AVP` or `RTP/AVPF`; SDES turned off (or every suite srtp-edge
/// implements excluded) while DTLS is also off; or SDES options that disable encryption or
/// authentication (`unencrypted_srtp`...).
pub fn refuses_plaintext(req: &Request) -> bool {
    if let Some(tp) = &req.transport_protocol {
        if matches!(tp.to_ascii_uppercase().as_str(), "RTP/AVP" | "RTP/AVPF") {
            return true;
        }
    }
    if req.sdes.iter().any(|o| matches!(o, SdesOption::Weaken(_))) {
        return true;
    }
    let dtls_off = req.dtls == Some(DtlsMode::Off);
    dtls_off && req.sdes_suites(&Profile::ALL).is_empty()
}

/// The ng `error-reason` for a plaintext refusal.
pub const PLAINTEXT_REFUSED: &str = "plaintext media refused";

/// `{"result": "pong"}`.
pub fn reply_pong() -> Value {
    DictBuilder::new().str("result", "pong").build()
}

/// `{"result": "ok"}` (delete and other commands without a payload).
pub fn reply_ok() -> Value {
    DictBuilder::new().str("result", "ok").build()
}

/// `{"result": "ok", "sdp": ...}` for offer and answer.
pub fn reply_sdp(sdp: &str) -> Value {
    DictBuilder::new()
        .str("result", "ok")
        .str("sdp", sdp)
        .build()
}

/// `{"result": "ok", "sdp": ..., "warning": ...}`: the call goes on, something asked for with
/// it did not (a fork refused for the call's codec).
pub fn reply_sdp_warning(sdp: &str, warning: &str) -> Value {
    DictBuilder::new()
        .str("result", "ok")
        .str("sdp", sdp)
        .str("warning", warning)
        .build()
}

/// `{"result": "ok", "warning": ...}` (rtpengine's non-fatal delete of an unknown call).
pub fn reply_warning(warning: &str) -> Value {
    DictBuilder::new()
        .str("result", "ok")
        .str("warning", warning)
        .build()
}

/// `{"result": "error", "error-reason": ...}`.
pub fn reply_error(reason: &str) -> Value {
    DictBuilder::new()
        .str("result", "error")
        .str("error-reason", reason)
        .build()
}

/// `{"result": "ok", "calls": [...]}` for `list`.
pub fn reply_list<'a>(call_ids: impl IntoIterator<Item = &'a str>) -> Value {
    DictBuilder::new()
        .str("result", "ok")
        .value(
            "calls",
            Value::List(call_ids.into_iter().map(Value::str).collect()),
        )
        .build()
}

/// Packet/byte/error counters, as rtpengine reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Errors (dropped: auth, replay, plaintext...).
    pub errors: u64,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Counters {
    fn to_value(self) -> Value {
        DictBuilder::new()
            .int("packets", int(self.packets))
            .int("bytes", int(self.bytes))
            .int("errors", int(self.errors))
            .build()
    }
}

/// One packet stream (RTP or RTCP of one media of one party) in a query reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Our local port.
    pub local_port: u16,
    /// The peer address learned from authenticated media.
    pub endpoint: Option<SocketAddr>,
    /// The peer address from SDP.
    pub advertised_endpoint: Option<SocketAddr>,
    /// The SRTP suite in use.
    pub crypto_suite: Option<Profile>,
    /// Unix time of the last packet.
    pub last_packet: u64,
    /// Flags (`RTP`, `RTCP`, `confirmed`...).
    pub flags: Vec<String>,
    /// Counters.
    pub stats: Counters,
}

/// One media of one party in a query reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// The m-line index, from 1 as rtpengine counts.
    pub index: u32,
    /// `audio`...
    pub media_type: String,
    /// Transport protocol text.
    pub protocol: String,
    /// Flags (`SDES`, `rtcp-mux`, `send`, `recv`...).
    pub flags: Vec<String>,
    /// Packet streams.
    pub streams: Vec<StreamStats>,
    /// The DTLS-SRTP state of this party's leg, if it is keyed with DTLS.
    pub dtls: Option<DtlsStats>,
}

/// A leg's DTLS-SRTP state in a query reply (the `DTLS` dict of a media): where the association
/// is, the negotiated profile and the hash function of the peer's fingerprint. Never key
/// material nor the certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DtlsStats {
    /// `handshaking`, `connected`, `rekeying`, `rekey-failed` or `failed`.
    pub state: String,
    /// The DTLS-SRTP profile of the keys in use (`SRTP_AES128_CM_SHA1_80`...).
    pub profile: Option<String>,
    /// The hash function of the SDP fingerprint the peer's certificate matched (`sha-256`...).
    pub fingerprint_hash: Option<String>,
    /// Re-key handshakes that failed while the leg kept its keys.
    pub rekey_failures: u64,
}

impl DtlsStats {
    fn to_value(&self) -> Value {
        let mut d = DictBuilder::new()
            .str("state", &self.state)
            .int("rekey failures", int(self.rekey_failures));
        if let Some(p) = &self.profile {
            d = d.str("profile", p);
        }
        if let Some(h) = &self.fingerprint_hash {
            d = d.str("fingerprint hash", h);
        }
        d.build()
    }
}

/// One party (tag) in a query reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagStats {
    /// The SIP tag.
    pub tag: String,
    /// Unix time the party was created.
    pub created: u64,
    /// The other party's tag.
    pub in_dialogue_with: Option<String>,
    /// The party's media.
    pub medias: Vec<MediaStats>,
}

/// A call's statistics for a `query` reply (and, optionally, a `delete` reply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Unix time the call was created (seconds and microseconds).
    pub created: u64,
    /// Microsecond part of `created`.
    pub created_us: u32,
    /// Unix time of the last signalling event.
    pub last_signal: u64,
    /// Parties.
    pub tags: Vec<TagStats>,
    /// Totals over RTP streams.
    pub rtp: Counters,
    /// Totals over RTCP streams.
    pub rtcp: Counters,
}

fn endpoint_value(ep: SocketAddr) -> Value {
    DictBuilder::new()
        .str("family", if ep.is_ipv4() { "IPv4" } else { "IPv6" })
        .str("address", &ep.ip().to_string())
        .int("port", i64::from(ep.port()))
        .build()
}

fn str_list(l: &[String]) -> Value {
    Value::List(l.iter().map(|s| Value::str(s)).collect())
}

impl StreamStats {
    fn to_value(&self) -> Value {
        let mut d = DictBuilder::new()
            .int("local port", i64::from(self.local_port))
            .int("last packet", int(self.last_packet))
            .value("flags", str_list(&self.flags))
            .value("stats", self.stats.to_value());
        d = d.value(
            "endpoint",
            self.endpoint
                .map(endpoint_value)
                .unwrap_or_else(|| DictBuilder::new().build()),
        );
        d = d.value(
            "advertised endpoint",
            self.advertised_endpoint
                .map(endpoint_value)
                .unwrap_or_else(|| DictBuilder::new().build()),
        );
        if let Some(p) = self.crypto_suite {
            d = d.str("crypto suite", p.sdes_name());
        }
        d.build()
    }
}

impl CallStats {
    /// The body of a `query` reply (`result` ok plus rtpengine's keys).
    pub fn to_reply(&self) -> Value {
        let mut tags = DictBuilder::new();
        for t in &self.tags {
            let medias = t
                .medias
                .iter()
                .map(|m| {
                    let mut d = DictBuilder::new()
                        .int("index", i64::from(m.index))
                        .str("type", &m.media_type)
                        .str("protocol", &m.protocol)
                        .value("flags", str_list(&m.flags))
                        .value(
                            "streams",
                            Value::List(m.streams.iter().map(StreamStats::to_value).collect()),
                        );
                    if let Some(x) = &m.dtls {
                        d = d.value("DTLS", x.to_value());
                    }
                    d.build()
                })
                .collect();
            let mut td = DictBuilder::new()
                .str("tag", &t.tag)
                .int("created", int(t.created))
                .value("medias", Value::List(medias));
            if let Some(o) = &t.in_dialogue_with {
                td = td.str("in dialogue with", o);
            }
            tags = tags.value(&t.tag, td.build());
        }
        DictBuilder::new()
            .str("result", "ok")
            .int("created", int(self.created))
            .int("created_us", i64::from(self.created_us))
            .int("last signal", int(self.last_signal))
            .value("SSRC", DictBuilder::new().build())
            .value("tags", tags.build())
            .value(
                "totals",
                DictBuilder::new()
                    .value("RTP", self.rtp.to_value())
                    .value("RTCP", self.rtcp.to_value())
                    .build(),
            )
            .build()
    }
}

/// Daemon-wide figures for a `statistics` reply (rtpengine's `currentstatistics` and
/// `totalstatistics` names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Calls currently anchored.
    pub sessions_own: u64,
    /// Seconds since start.
    pub uptime: u64,
    /// Calls handled since start.
    pub managed_sessions: u64,
    /// Offers refused (plaintext, no common suite, no ports...).
    pub rejected_sessions: u64,
    /// Calls ended by media timeout.
    pub timeout_sessions: u64,
    /// Calls ended by a delete.
    pub regular_terminated_sessions: u64,
    /// Packets relayed since start.
    pub relayed_packets: u64,
    /// Packets dropped since start.
    pub relayed_packet_errors: u64,
    /// Current packet rate per second.
    pub packet_rate: u64,
    /// Current byte rate per second.
    pub byte_rate: u64,
    /// Current error rate per second.
    pub error_rate: u64,
    /// DTLS-SRTP handshakes completed since start (first ones and re-keys).
    pub dtls_handshakes: u64,
    /// DTLS-SRTP handshakes that failed and ended their call.
    pub dtls_failed: u64,
    /// Re-key handshakes that failed while the call kept its previous keys.
    pub dtls_rekey_failed: u64,
    /// Legs currently keyed (or keying) with DTLS-SRTP.
    pub dtls_legs: u64,
}

impl Statistics {
    /// The body of a `statistics` reply.
    pub fn to_reply(&self) -> Value {
        let current = DictBuilder::new()
            .int("sessionsown", int(self.sessions_own))
            .int("sessionsforeign", 0)
            .int("sessionstotal", int(self.sessions_own))
            .int("transcodedmedia", 0)
            .int("packetrate", int(self.packet_rate))
            .int("byterate", int(self.byte_rate))
            .int("errorrate", int(self.error_rate))
            .int("dtlslegs", int(self.dtls_legs))
            .build();
        let total = DictBuilder::new()
            .int("uptime", int(self.uptime))
            .int("managedsessions", int(self.managed_sessions))
            .int("rejectedsessions", int(self.rejected_sessions))
            .int("timeoutsessions", int(self.timeout_sessions))
            .int(
                "regularterminatedsessions",
                int(self.regular_terminated_sessions),
            )
            .int("forcedterminatedsessions", 0)
            .int("relayedpackets", int(self.relayed_packets))
            .int("relayedpacketerrors", int(self.relayed_packet_errors))
            .int("dtlshandshakes", int(self.dtls_handshakes))
            .int("dtlshandshakefailures", int(self.dtls_failed))
            .int("dtlsrekeyfailures", int(self.dtls_rekey_failed))
            .build();
        DictBuilder::new()
            .str("result", "ok")
            .value(
                "statistics",
                DictBuilder::new()
                    .value("currentstatistics", current)
                    .value("totalstatistics", total)
                    .build(),
            )
            .build()
    }
}

/// Frames a reply: `<cookie> <bencode>`.
pub fn encode_reply(cookie: &[u8], reply: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 64);
    out.extend_from_slice(cookie);
    out.push(b' ');
    reply.encode_into(&mut out);
    out
}

/// A datagram that could not be turned into a request: the cookie, if one could be read (no
/// reply is possible without it), and the error whose [`NgError::reply_reason`] to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramError<'a> {
    /// The request cookie, if the framing was valid.
    pub cookie: Option<&'a [u8]>,
    /// What was wrong.
    pub error: NgError,
}

/// Parses a whole datagram into its cookie and typed request.
pub fn parse_datagram(datagram: &[u8]) -> Result<(&[u8], Request), DatagramError<'_>> {
    let (cookie, payload) = split_datagram(datagram).map_err(|error| DatagramError {
        cookie: None,
        error,
    })?;
    let req = Request::parse(payload).map_err(|error| DatagramError {
        cookie: Some(cookie),
        error,
    })?;
    Ok((cookie, req))
}
