//! Typed views of the SDP lines the media policy reads: `c=`, the `m=` protocol, `a=rtcp`,
//! direction attributes, `a=fingerprint`, `a=setup`, `a=tls-id` and the ICE attributes.
//!
//! Each type parses from the line value (what follows `x=` or `a=name:`) and writes back with
//! `Display`, so a rewrite produces canonical text. Parsers are strict about what they use
//! (addresses must be literal IPs: srtp-edge never resolves names found in SDP).

use std::fmt;
use std::net::IpAddr;

use super::model::{parse_decimal, SdpError};

/// A `c=` line: `IN IP4 <addr>` or `IN IP6 <addr>` (an IPv4 multicast `/ttl` is tolerated and
/// dropped; the media policy does not relay multicast anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The connection address (0.0.0.0 is a legacy hold and is kept as such).
    pub addr: IpAddr,
}

impl Connection {
    /// Parses a `c=` value.
    pub fn parse(value: &str) -> Result<Connection, SdpError> {
        let mut it = value.split(' ');
        let (net, fam, addr) = (it.next(), it.next(), it.next());
        if net != Some("IN") || it.next().is_some() {
            return Err(SdpError::BadField("c= line"));
        }
        let addr = addr.ok_or(SdpError::BadField("c= line"))?;
        let addr = addr.split('/').next().unwrap_or(addr);
        let ip: IpAddr = addr.parse().map_err(|_| SdpError::BadField("c= address"))?;
        match (fam, ip) {
            (Some("IP4"), IpAddr::V4(_)) | (Some("IP6"), IpAddr::V6(_)) => {
                Ok(Connection { addr: ip })
            }
            _ => Err(SdpError::BadField("c= address family")),
        }
    }

    /// The `IN IP4 a.b.c.d` / `IN IP6 ...` text for an address.
    pub fn value_for(addr: IpAddr) -> String {
        match addr {
            IpAddr::V4(a) => format!("IN IP4 {a}"),
            IpAddr::V6(a) => format!("IN IP6 {a}"),
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Connection::value_for(self.addr))
    }
}

/// The transport protocol of an `m=` line, as far as SRTP policy cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proto {
    /// `RTP/AVP`: plain RTP, or best-effort SRTP (RFC 8643) when `a=crypto` is present.
    RtpAvp,
    /// `RTP/AVPF`: plain RTP with feedback, or best-effort SRTP with `a=crypto`.
    RtpAvpf,
    /// `RTP/SAVP`: SRTP.
    RtpSavp,
    /// `RTP/SAVPF`: SRTP with feedback.
    RtpSavpf,
    /// `UDP/TLS/RTP/SAVP`: DTLS-SRTP (RFC 5764).
    UdpTlsRtpSavp,
    /// `UDP/TLS/RTP/SAVPF`: DTLS-SRTP with feedback (WebRTC).
    UdpTlsRtpSavpf,
    /// Anything else (`udp`, `TCP/MSRP`, `UDP/BFCP`...), kept verbatim.
    Other(String),
}

impl Proto {
    /// Classifies protocol text (case-insensitive, as peers differ).
    pub fn parse(s: &str) -> Proto {
        match s.to_ascii_uppercase().as_str() {
            "RTP/AVP" => Proto::RtpAvp,
            "RTP/AVPF" => Proto::RtpAvpf,
            "RTP/SAVP" => Proto::RtpSavp,
            "RTP/SAVPF" => Proto::RtpSavpf,
            "UDP/TLS/RTP/SAVP" => Proto::UdpTlsRtpSavp,
            "UDP/TLS/RTP/SAVPF" => Proto::UdpTlsRtpSavpf,
            _ => Proto::Other(s.to_string()),
        }
    }

    /// Canonical text.
    pub fn as_str(&self) -> &str {
        match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            Proto::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            Proto::Other(s) => s,
        }
    }

    /// True for any of the RTP profiles above.
    pub fn is_rtp(&self) -> bool {
        !matches!(self, Proto::Other(_))
    }

    /// True for the feedback (AVPF) variants.
    pub fn has_feedback(&self) -> bool {
        matches!(
            self,
            Proto::RtpAvpf | Proto::RtpSavpf | Proto::UdpTlsRtpSavpf
        )
    }

    /// True for the profiles that by themselves mean plain RTP (`RTP/AVP`, `RTP/AVPF`).
    pub fn is_plain(&self) -> bool {
        matches!(self, Proto::RtpAvp | Proto::RtpAvpf)
    }

    /// True for the DTLS-SRTP profiles.
    pub fn is_dtls(&self) -> bool {
        matches!(self, Proto::UdpTlsRtpSavp | Proto::UdpTlsRtpSavpf)
    }

    /// The SDES-SRTP profile with the same feedback variant (`RTP/SAVP` or `RTP/SAVPF`).
    pub fn sdes_srtp(&self) -> Proto {
        if self.has_feedback() {
            Proto::RtpSavpf
        } else {
            Proto::RtpSavp
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `a=rtcp:<port> [IN IP4|IP6 <addr>]` (RFC 3605).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpAttr {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, if it differs from the media's `c=` address.
    pub addr: Option<IpAddr>,
}

impl RtcpAttr {
    /// Parses an `a=rtcp` value.
    pub fn parse(value: &str) -> Result<RtcpAttr, SdpError> {
        let (port, rest) = match value.split_once(' ') {
            Some((p, r)) => (p, Some(r)),
            None => (value, None),
        };
        let port = parse_decimal(port).ok_or(SdpError::BadField("a=rtcp port"))?;
        let addr = match rest {
            Some(r) => Some(Connection::parse(r)?.addr),
            None => None,
        };
        Ok(RtcpAttr { port, addr })
    }
}

impl fmt::Display for RtcpAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{} {}", self.port, Connection::value_for(a)),
            None => write!(f, "{}", self.port),
        }
    }
}

/// Media direction attribute (RFC 3264 section 5.1, RFC 8866 section 6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default when absent).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// Maps an attribute name to a direction.
    pub fn from_attr(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The attribute name.
    pub fn as_attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// Hash functions allowed in `a=fingerprint` (RFC 8122; MD5 and SHA-1 are accepted for
/// parsing old peers but the DTLS layer decides what it trusts).
const FINGERPRINT_HASHES: [&str; 7] = [
    "sha-1", "sha-224", "sha-256", "sha-384", "sha-512", "md5", "md2",
];

/// `a=fingerprint:<hash> <hex:hex:...>` (RFC 8122), used to bind a DTLS certificate to SDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash function name, lowercased (`sha-256`).
    pub hash: String,
    /// The digest bytes.
    pub digest: Vec<u8>,
}

impl Fingerprint {
    /// Parses an `a=fingerprint` value.
    pub fn parse(value: &str) -> Result<Fingerprint, SdpError> {
        let (hash, hexs) = value
            .split_once(' ')
            .ok_or(SdpError::BadField("a=fingerprint"))?;
        let hash = hash.to_ascii_lowercase();
        if !FINGERPRINT_HASHES.contains(&hash.as_str()) {
            return Err(SdpError::BadField("a=fingerprint hash"));
        }
        let mut digest = Vec::new();
        for part in hexs.trim().split(':') {
            if part.len() != 2 || digest.len() >= 64 {
                return Err(SdpError::BadField("a=fingerprint digest"));
            }
            let b = u8::from_str_radix(part, 16)
                .map_err(|_| SdpError::BadField("a=fingerprint digest"))?;
            digest.push(b);
        }
        Ok(Fingerprint { hash, digest })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hash)?;
        for (i, b) in self.digest.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ":" })?;
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// `a=setup` role (RFC 4145 / RFC 5763): who starts the DTLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// `active`: this side is the DTLS client.
    Active,
    /// `passive`: this side is the DTLS server.
    Passive,
    /// `actpass`: either (offers only).
    ActPass,
    /// `holdconn`: no connection yet.
    HoldConn,
}

impl Setup {
    /// Parses an `a=setup` value.
    pub fn parse(value: &str) -> Option<Setup> {
        Some(match value {
            "active" => Setup::Active,
            "passive" => Setup::Passive,
            "actpass" => Setup::ActPass,
            "holdconn" => Setup::HoldConn,
            _ => return None,
        })
    }

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

/// An `a=candidate` line (RFC 8839): the parts the relay needs, the rest kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Foundation string.
    pub foundation: String,
    /// Component id (1 = RTP, 2 = RTCP).
    pub component: u16,
    /// Transport (`UDP`, `TCP`...).
    pub transport: String,
    /// Priority.
    pub priority: u32,
    /// Connection address (an IP literal, or an mDNS name kept as text).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Candidate type (`host`, `srflx`, `prflx`, `relay`).
    pub typ: String,
    /// Everything after the type (raddr, rport, extensions), verbatim.
    pub rest: String,
}

impl Candidate {
    /// Parses an `a=candidate` value.
    pub fn parse(value: &str) -> Result<Candidate, SdpError> {
        let bad = SdpError::BadField("a=candidate");
        let mut it = value.splitn(9, ' ');
        let mut next = || it.next().filter(|s| !s.is_empty()).ok_or(bad.clone());
        let foundation = next()?.to_string();
        let component = parse_decimal(next()?).ok_or(bad.clone())?;
        let transport = next()?.to_string();
        let priority = parse_decimal(next()?).ok_or(bad.clone())?;
        let address = next()?.to_string();
        let port = parse_decimal(next()?).ok_or(bad.clone())?;
        if next()? != "typ" {
            return Err(bad);
        }
        let typ = next()?.to_string();
        let rest = it.next().unwrap_or("").to_string();
        Ok(Candidate {
            foundation,
            component,
            transport,
            priority,
            address,
            port,
            typ,
            rest,
        })
    }
}

/// The ICE parameters of a media section (RFC 8839), typed; `None` fields were absent.
/// `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IceInfo {
    /// `a=ice-ufrag`.
    pub ufrag: Option<String>,
    /// `a=ice-pwd` (a credential: `Debug` prints it redacted).
    pub pwd: Option<String>,
    /// `a=ice-options` tokens (`trickle`, `ice2`...).
    pub options: Vec<String>,
    /// `a=ice-lite` at session or media level.
    pub lite: bool,
    /// The candidates that parsed.
    pub candidates: Vec<Candidate>,
    /// `a=end-of-candidates` present.
    pub end_of_candidates: bool,
}

impl fmt::Debug for IceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceInfo")
            .field("ufrag", &self.ufrag)
            .field("pwd", &self.pwd.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .field("lite", &self.lite)
            .field("candidates", &self.candidates)
            .field("end_of_candidates", &self.end_of_candidates)
            .finish()
    }
}

impl IceInfo {
    /// Collects the ICE attributes of a media section, falling back to session level for the
    /// ones RFC 8839 allows there. Returns `None` if the section has no ICE at all.
    pub fn collect(sdp: &super::Sdp, m: &super::MediaSection) -> Option<IceInfo> {
        let pick = |name: &str| -> Option<String> {
            m.attr(name)
                .or_else(|| sdp.session_attrs(name).next())
                .flatten()
                .map(str::to_string)
        };
        let info = IceInfo {
            ufrag: pick("ice-ufrag"),
            pwd: pick("ice-pwd"),
            options: pick("ice-options")
                .map(|s| {
                    s.split(' ')
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            lite: sdp.has_session_attr("ice-lite") || m.has_attr("ice-lite"),
            candidates: m
                .attrs("candidate")
                .filter_map(|v| Candidate::parse(v.unwrap_or("")).ok())
                .collect(),
            end_of_candidates: m.has_attr("end-of-candidates")
                || sdp.has_session_attr("end-of-candidates"),
        };
        if info.ufrag.is_none() && info.pwd.is_none() && info.candidates.is_empty() && !info.lite {
            None
        } else {
            Some(info)
        }
    }
}

/// The `a=tls-id` value (RFC 8842), which tells a new DTLS association from a re-offer.
pub fn tls_id(m: &super::MediaSection) -> Option<&str> {
    m.attr("tls-id")
        .flatten()
        .filter(|v| !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lines() {
        assert_eq!(
            Connection::parse("IN IP4 203.0.113.5").unwrap().addr,
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            Connection::parse("IN IP6 2001:db8::1").unwrap().to_string(),
            "IN IP6 2001:db8::1"
        );
        assert!(Connection::parse("IN IP4 224.2.1.1/127").is_ok());
        assert!(Connection::parse("IN IP4 2001:db8::1").is_err());
        assert!(Connection::parse("IN IP4 host.example.com").is_err());
        assert!(Connection::parse("ATM NSAP 1").is_err());
        assert!(Connection::parse("IN IP4").is_err());
        assert!(Connection::parse("IN IP4 1.2.3.4 extra").is_err());
    }

    #[test]
    fn rtcp_attribute() {
        assert_eq!(
            RtcpAttr::parse("53020").unwrap(),
            RtcpAttr {
                port: 53020,
                addr: None
            }
        );
        let r = RtcpAttr::parse("53020 IN IP6 2001:2345:6789:ABCD:EF01:2345:6789:ABCD").unwrap();
        assert!(r.addr.is_some());
        assert_eq!(
            RtcpAttr::parse("9 IN IP4 0.0.0.0").unwrap().to_string(),
            "9 IN IP4 0.0.0.0"
        );
        assert!(RtcpAttr::parse("").is_err());
        assert!(RtcpAttr::parse("65536").is_err());
        assert!(RtcpAttr::parse("5 IN IP4 nope").is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(Proto::parse("rtp/savpf"), Proto::RtpSavpf);
        assert!(Proto::parse("RTP/AVP").is_plain());
        assert!(Proto::parse("UDP/TLS/RTP/SAVPF").is_dtls());
        assert_eq!(Proto::RtpAvpf.sdes_srtp(), Proto::RtpSavpf);
        assert_eq!(Proto::UdpTlsRtpSavp.sdes_srtp(), Proto::RtpSavp);
        assert_eq!(Proto::parse("TCP/MSRP"), Proto::Other("TCP/MSRP".into()));
    }

    #[test]
    fn fingerprints() {
        let v = "sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3C:0F:4F:3B:6D:8C:D0:5D:2E:08:46:F9";
        let f = Fingerprint::parse(v).unwrap();
        assert_eq!(f.digest.len(), 32);
        assert_eq!(f.to_string(), v);
        assert!(Fingerprint::parse("SHA-1 4A:AD").is_ok());
        assert!(Fingerprint::parse("sha-999 4A").is_err());
        assert!(Fingerprint::parse("sha-256 4A:A").is_err());
        assert!(Fingerprint::parse("sha-256 ZZ").is_err());
        assert!(Fingerprint::parse("sha-256").is_err());
        let long = format!("sha-256 {}", vec!["00"; 65].join(":"));
        assert!(Fingerprint::parse(&long).is_err());
    }

    #[test]
    fn setup_and_direction() {
        assert_eq!(Setup::parse("actpass"), Some(Setup::ActPass));
        assert_eq!(Setup::parse("ACTIVE"), None);
        assert_eq!(Direction::from_attr("recvonly"), Some(Direction::RecvOnly));
        assert_eq!(Direction::Inactive.as_attr(), "inactive");
    }

    #[test]
    fn candidates() {
        let c = Candidate::parse(
            "1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0",
        )
        .unwrap();
        assert_eq!(c.component, 1);
        assert_eq!(c.port, 46243);
        assert_eq!(c.typ, "host");
        assert_eq!(c.rest, "generation 0");
        assert!(Candidate::parse("1 1 udp 1 1.2.3.4 5 host").is_err());
        assert!(Candidate::parse("1 x udp 1 1.2.3.4 5 typ host").is_err());
        assert!(Candidate::parse("").is_err());
    }
}
