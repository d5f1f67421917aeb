//! The owned SDP model: a session part and media sections, each an ordered list of `x=value`
//! lines, so that a rewrite changes only the lines it means to and keeps everything else
//! (codecs, unknown attributes, their order) byte for byte.
//!
//! Parsing is bounded ([`MAX_SDP_LEN`], [`MAX_LINES`], [`MAX_MEDIA`]) and never panics; the
//! writer always emits CRLF line ends. `Debug` of a line hides `a=crypto` key parameters and
//! `a=ice-pwd`, and crypto lines are wiped from memory when dropped.

use std::fmt;

use thiserror::Error;
use zeroize::Zeroize;

/// Largest SDP body accepted, in bytes (far above any real offer, small enough to bound work).
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Largest number of lines accepted in one SDP.
pub const MAX_LINES: usize = 2048;
/// Largest number of `m=` sections accepted in one SDP.
pub const MAX_MEDIA: usize = 32;
/// Largest number of formats on one `m=` line.
const MAX_FMTS: usize = 128;

/// Why an SDP body was refused by the parser.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The body is larger than [`MAX_SDP_LEN`].
    #[error("SDP larger than {MAX_SDP_LEN} bytes")]
    TooLarge,
    /// The body has more than [`MAX_LINES`] lines.
    #[error("SDP has more than {MAX_LINES} lines")]
    TooManyLines,
    /// The body has more than [`MAX_MEDIA`] media sections.
    #[error("SDP has more than {MAX_MEDIA} media sections")]
    TooManyMedia,
    /// The body is not UTF-8 text.
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// The body is empty or does not start with `v=0`.
    #[error("SDP does not start with v=0")]
    NoVersion,
    /// A line is not of the form `x=value` with a lowercase letter `x`.
    #[error("malformed SDP line {0}")]
    BadLine(usize),
    /// An `m=` line could not be parsed.
    #[error("malformed m= line {0}")]
    BadMedia(usize),
    /// A typed field (address, port, attribute) could not be parsed.
    #[error("malformed {0}")]
    BadField(&'static str),
}

/// One `x=value` line, kept as text so unknown lines survive a rewrite unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct Line {
    /// The line type letter (`v`, `o`, `c`, `a`, ...).
    pub kind: char,
    /// Everything after `x=`, without the line end.
    pub value: String,
}

impl Line {
    /// Builds a line from its type letter and value.
    pub fn new(kind: char, value: impl Into<String>) -> Line {
        Line {
            kind,
            value: value.into(),
        }
    }

    /// Builds an `a=` line from an attribute name and optional value (`a=name` or `a=name:value`).
    pub fn attr(name: &str, value: Option<&str>) -> Line {
        match value {
            Some(v) => Line::new('a', format!("{name}:{v}")),
            None => Line::new('a', name),
        }
    }

    /// For an `a=` line, its attribute name and value (`None` for a flag attribute).
    pub fn as_attr(&self) -> Option<(&str, Option<&str>)> {
        if self.kind != 'a' {
            return None;
        }
        Some(match self.value.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (self.value.as_str(), None),
        })
    }

    /// True if this is an `a=` line with that attribute name (case-sensitive, as RFC 8866 says).
    pub fn is_attr(&self, name: &str) -> bool {
        self.as_attr().is_some_and(|(n, _)| n == name)
    }

    fn is_secret(&self) -> bool {
        self.kind == 'a' && self.value.starts_with("crypto:")
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.is_secret() {
            self.value.zeroize();
        }
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_secret() {
            // Keep the tag and suite, never the key parameters.
            let shown: Vec<&str> = self.value.splitn(3, ' ').take(2).collect();
            write!(f, "{}={} <key redacted>", self.kind, shown.join(" "))
        } else if self.kind == 'a' && self.value.starts_with("ice-pwd:") {
            write!(f, "a=ice-pwd:<redacted>")
        } else {
            write!(f, "{}={}", self.kind, self.value)
        }
    }
}

/// One media section: the parsed `m=` line and the lines that follow it up to the next `m=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSection {
    /// Media type (`audio`, `video`, `application`, ...).
    pub media: String,
    /// Transport port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// The optional `/<number of ports>` after the port.
    pub port_count: Option<u16>,
    /// Transport protocol text (`RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, ...).
    pub proto: String,
    /// Media formats (RTP payload types for RTP protocols), in order.
    pub fmts: Vec<String>,
    /// The lines after the `m=` line (`i=`, `c=`, `b=`, `k=`, `a=`), in order.
    pub lines: Vec<Line>,
}

/// A whole session description: the session-level lines and the media sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp {
    /// Session-level lines from `v=` up to the first `m=`, in order.
    pub session: Vec<Line>,
    /// Media sections in order (their index is the m-line index used everywhere).
    pub media: Vec<MediaSection>,
}

fn parse_line(raw: &str, n: usize) -> Result<Line, SdpError> {
    let b = raw.as_bytes();
    if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
        return Err(SdpError::BadLine(n));
    }
    if raw.chars().any(|c| c.is_control() && c != '\t') {
        return Err(SdpError::BadLine(n));
    }
    Ok(Line::new(b[0] as char, &raw[2..]))
}

fn parse_media_line(value: &str, n: usize) -> Result<MediaSection, SdpError> {
    let mut it = value.split(' ');
    let media = it
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(SdpError::BadMedia(n))?;
    let port_field = it.next().ok_or(SdpError::BadMedia(n))?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, c)) => (p, Some(c)),
        None => (port_field, None),
    };
    let port: u16 = parse_decimal(port).ok_or(SdpError::BadMedia(n))?;
    let port_count = match port_count {
        Some(c) => Some(parse_decimal::<u16>(c).ok_or(SdpError::BadMedia(n))?),
        None => None,
    };
    let proto = it
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(SdpError::BadMedia(n))?;
    let mut fmts = Vec::new();
    for f in it {
        if f.is_empty() {
            return Err(SdpError::BadMedia(n));
        }
        if fmts.len() >= MAX_FMTS {
            return Err(SdpError::BadMedia(n));
        }
        fmts.push(f.to_string());
    }
    Ok(MediaSection {
        media: media.to_string(),
        port,
        port_count,
        proto: proto.to_string(),
        fmts,
        lines: Vec::new(),
    })
}

/// Parses an unsigned decimal made only of ASCII digits (no sign, no spaces), bounded by `T`.
pub(crate) fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Sdp {
    /// Parses an SDP body received from a peer (bytes, as they come off a SIP or ng message).
    pub fn parse_bytes(body: &[u8]) -> Result<Sdp, SdpError> {
        if body.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        Sdp::parse(text)
    }

    /// Parses an SDP body. Accepts CRLF or bare LF line ends and ignores empty lines.
    pub fn parse(text: &str) -> Result<Sdp, SdpError> {
        if text.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge);
        }
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
        };
        let mut count = 0usize;
        for (n, raw) in text.split('\n').enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_LINES {
                return Err(SdpError::TooManyLines);
            }
            let line = parse_line(raw, n + 1)?;
            if count == 1 && (line.kind != 'v' || line.value != "0") {
                return Err(SdpError::NoVersion);
            }
            if line.kind == 'm' {
                if sdp.media.len() >= MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                sdp.media.push(parse_media_line(&line.value, n + 1)?);
            } else if let Some(m) = sdp.media.last_mut() {
                m.lines.push(line);
            } else {
                sdp.session.push(line);
            }
        }
        if count == 0 {
            return Err(SdpError::NoVersion);
        }
        Ok(sdp)
    }

    /// Writes the SDP back as text with CRLF line ends.
    pub fn write(&self) -> String {
        let mut out = String::with_capacity(1024);
        for l in &self.session {
            push_line(&mut out, l);
        }
        for m in &self.media {
            out.push_str("m=");
            out.push_str(&m.m_line_value());
            out.push_str("\r\n");
            for l in &m.lines {
                push_line(&mut out, l);
            }
        }
        out
    }

    /// The first session-level line of a kind (`o`, `s`, `c`, `t`...).
    pub fn session_line(&self, kind: char) -> Option<&Line> {
        self.session.iter().find(|l| l.kind == kind)
    }

    /// Values of the session-level attributes with that name, in order.
    pub fn session_attrs<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a str>> {
        attrs_named(&self.session, name)
    }

    /// True if the session part has that attribute.
    pub fn has_session_attr(&self, name: &str) -> bool {
        self.session.iter().any(|l| l.is_attr(name))
    }

    /// The session-level `c=` line, typed.
    pub fn session_connection(&self) -> Result<Option<crate::sdp::Connection>, SdpError> {
        self.session_line('c')
            .map(|l| crate::sdp::Connection::parse(&l.value))
            .transpose()
    }
}

fn push_line(out: &mut String, l: &Line) {
    out.push(l.kind);
    out.push('=');
    out.push_str(&l.value);
    out.push_str("\r\n");
}

pub(crate) fn attrs_named<'a>(
    lines: &'a [Line],
    name: &'a str,
) -> impl Iterator<Item = Option<&'a str>> {
    lines
        .iter()
        .filter_map(move |l| l.as_attr().filter(|(n, _)| *n == name).map(|(_, v)| v))
}

impl MediaSection {
    /// The `m=` value as written back (`audio 4000 RTP/SAVP 0 8`).
    pub fn m_line_value(&self) -> String {
        let mut s = format!("{} {}", self.media, self.port);
        if let Some(c) = self.port_count {
            s.push_str(&format!("/{c}"));
        }
        s.push(' ');
        s.push_str(&self.proto);
        for f in &self.fmts {
            s.push(' ');
            s.push_str(f);
        }
        s
    }

    /// The first media-level line of a kind.
    pub fn line(&self, kind: char) -> Option<&Line> {
        self.lines.iter().find(|l| l.kind == kind)
    }

    /// Values of this section's attributes with that name, in order.
    pub fn attrs<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a str>> {
        attrs_named(&self.lines, name)
    }

    /// The value of the first attribute with that name (`Some(None)` for a flag attribute).
    pub fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.lines
            .iter()
            .find_map(|l| l.as_attr().filter(|(n, _)| *n == name).map(|(_, v)| v))
    }

    /// True if this section has that attribute.
    pub fn has_attr(&self, name: &str) -> bool {
        self.lines.iter().any(|l| l.is_attr(name))
    }

    /// Removes every attribute with one of these names.
    pub fn remove_attrs(&mut self, names: &[&str]) {
        self.lines
            .retain(|l| !l.as_attr().is_some_and(|(n, _)| names.contains(&n)));
    }

    /// Appends an attribute line at the end of the section.
    pub fn push_attr(&mut self, name: &str, value: Option<&str>) {
        self.lines.push(Line::attr(name, value));
    }

    /// The media-level `c=` line, typed.
    pub fn connection(&self) -> Result<Option<crate::sdp::Connection>, SdpError> {
        self.line('c')
            .map(|l| crate::sdp::Connection::parse(&l.value))
            .transpose()
    }

    /// The transport protocol, typed.
    pub fn protocol(&self) -> crate::sdp::Proto {
        crate::sdp::Proto::parse(&self.proto)
    }

    /// The `a=rtcp` attribute (RFC 3605), typed, if present.
    pub fn rtcp(&self) -> Result<Option<crate::sdp::RtcpAttr>, SdpError> {
        match self.attr("rtcp") {
            None => Ok(None),
            Some(v) => crate::sdp::RtcpAttr::parse(v.unwrap_or("")).map(Some),
        }
    }

    /// True if `a=rtcp-mux` (RFC 5761) is present.
    pub fn rtcp_mux(&self) -> bool {
        self.has_attr("rtcp-mux")
    }

    /// The direction attribute of this section, if any.
    pub fn direction(&self) -> Option<crate::sdp::Direction> {
        self.lines.iter().find_map(|l| {
            l.as_attr()
                .filter(|(_, v)| v.is_none())
                .and_then(|(n, _)| crate::sdp::Direction::from_attr(n))
        })
    }

    /// Every `a=crypto` line of this section that parses; lines that do not (unknown suite,
    /// bad key length...) are returned as errors with their position so policy can skip them.
    pub fn crypto(&self) -> Vec<Result<crate::sdp::CryptoAttr, crate::sdp::CryptoError>> {
        self.attrs("crypto")
            .map(|v| crate::sdp::CryptoAttr::parse(v.unwrap_or("")))
            .collect()
    }

    /// Every `a=fingerprint` (RFC 8122) that parses.
    pub fn fingerprints(&self) -> Vec<crate::sdp::Fingerprint> {
        self.attrs("fingerprint")
            .filter_map(|v| crate::sdp::Fingerprint::parse(v.unwrap_or("")).ok())
            .collect()
    }

    /// The `a=setup` (RFC 4145) role, if present and valid.
    pub fn setup(&self) -> Option<crate::sdp::Setup> {
        self.attr("setup")
            .flatten()
            .and_then(crate::sdp::Setup::parse)
    }

    /// Sets the transport port, keeping the rest of the `m=` line.
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
        if port == 0 {
            self.port_count = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=x-unknown:keep me\r\nm=audio 4000 RTP/SAVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=sendrecv\r\nm=video 0/2 RTP/AVP 31\r\n";

    #[test]
    fn parses_and_writes_back_identically() {
        let sdp = Sdp::parse(BASIC).unwrap();
        assert_eq!(sdp.session.len(), 6);
        assert_eq!(sdp.media.len(), 2);
        assert_eq!(sdp.media[0].port, 4000);
        assert_eq!(sdp.media[0].fmts, ["0", "8", "101"]);
        assert_eq!(sdp.media[1].port_count, Some(2));
        assert_eq!(sdp.write(), BASIC);
    }

    #[test]
    fn bare_lf_is_accepted_and_normalised() {
        let lf = BASIC.replace("\r\n", "\n");
        assert_eq!(Sdp::parse(&lf).unwrap().write(), BASIC);
    }

    #[test]
    fn debug_hides_inline_keys() {
        let sdp = Sdp::parse(BASIC).unwrap();
        let dbg = format!("{sdp:?}");
        assert!(!dbg.contains("WVNfX19"), "{dbg}");
        assert!(dbg.contains("AES_CM_128_HMAC_SHA1_80"));
        let ice = Sdp::parse("v=0\r\na=ice-pwd:s3cr3tpassw0rd\r\n").unwrap();
        assert!(!format!("{ice:?}").contains("s3cr3t"));
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        assert_eq!(Sdp::parse(""), Err(SdpError::NoVersion));
        assert_eq!(Sdp::parse("v=1\r\n"), Err(SdpError::NoVersion));
        assert_eq!(Sdp::parse("o=x\r\nv=0\r\n"), Err(SdpError::NoVersion));
        assert_eq!(Sdp::parse("v=0\r\nX=1\r\n"), Err(SdpError::BadLine(2)));
        assert_eq!(Sdp::parse("v=0\r\nnoequals\r\n"), Err(SdpError::BadLine(2)));
        assert_eq!(Sdp::parse("v=0\r\na=x\0y\r\n"), Err(SdpError::BadLine(2)));
        assert_eq!(Sdp::parse("v=0\r\nm=audio\r\n"), Err(SdpError::BadMedia(2)));
        assert_eq!(
            Sdp::parse("v=0\r\nm=audio 70000 RTP/AVP 0\r\n"),
            Err(SdpError::BadMedia(2))
        );
        assert_eq!(
            Sdp::parse("v=0\r\nm=audio -1 RTP/AVP 0\r\n"),
            Err(SdpError::BadMedia(2))
        );
        assert_eq!(
            Sdp::parse("v=0\r\nm=audio 1  RTP/AVP 0\r\n"),
            Err(SdpError::BadMedia(2))
        );
        assert_eq!(
            Sdp::parse_bytes(b"v=0\r\ns=\xff\r\n"),
            Err(SdpError::NotUtf8)
        );
    }

    #[test]
    fn limits_are_enforced() {
        let big = format!("v=0\r\ns={}\r\n", "x".repeat(MAX_SDP_LEN));
        assert_eq!(Sdp::parse(&big), Err(SdpError::TooLarge));
        let many = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_LINES));
        assert_eq!(Sdp::parse(&many), Err(SdpError::TooManyLines));
        let media = format!("v=0\r\n{}", "m=audio 0 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1));
        assert_eq!(Sdp::parse(&media), Err(SdpError::TooManyMedia));
        let fmts = format!("v=0\r\nm=audio 1 RTP/AVP{}\r\n", " 0".repeat(MAX_FMTS + 1));
        assert_eq!(Sdp::parse(&fmts), Err(SdpError::BadMedia(2)));
    }

    #[test]
    fn attribute_helpers() {
        let mut sdp = Sdp::parse(BASIC).unwrap();
        assert!(sdp.has_session_attr("x-unknown"));
        let m = &mut sdp.media[0];
        assert_eq!(m.attr("rtpmap"), Some(Some("101 telephone-event/8000")));
        assert_eq!(m.direction(), Some(crate::sdp::Direction::SendRecv));
        m.remove_attrs(&["crypto", "sendrecv"]);
        assert!(!m.has_attr("crypto"));
        m.push_attr("rtcp-mux", None);
        assert!(m.rtcp_mux());
        m.set_port(0);
        assert_eq!(m.m_line_value(), "audio 0 RTP/SAVP 0 8 101");
    }
}
