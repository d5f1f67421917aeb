//! SIP requests and responses: parse from bytes, serialize to bytes. Parsing checks the start
//! line strictly (single spaces, RFC 4475 lwsstart/trws/lwsruri/ltgtruri), the header section
//! structure (CRLF lines, folding, token names, no stray control bytes) and Content-Length;
//! header semantics are checked by [`super::validate`]. When the start line is broken the header
//! fields are still salvaged into the error so a 400/505 can be answered.

use super::error::{ErrorKind, ParseError, StartKind};
use super::header::Headers;
use super::method::Method;
use super::scan::{is_token_str, is_wsp, parse_u32, trim};
use super::uri::Uri;

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Header fields in order.
    pub headers: Headers,
    /// The body (exactly Content-Length bytes).
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100-699.
    pub status: u16,
    /// Reason phrase bytes (UTF-8 allowed, may be empty).
    pub reason: Vec<u8>,
    /// Header fields in order.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// Either kind of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Position of the CRLFCRLF that ends the header section, if any.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Splits the header section (without its final CRLF) into logical lines, folded continuations
/// joined by one SP, and parses each `name: value`. A bad line is skipped so the other fields can
/// still be salvaged for a reply; the first error is returned beside them.
fn parse_header_lines(section: &[u8]) -> (Headers, Option<ParseError>) {
    let mut headers = Headers::new();
    let mut first_err: Option<ParseError> = None;
    if section.is_empty() {
        return (headers, None);
    }
    let mut name: Option<String> = None;
    let mut value: Vec<u8> = Vec::new();
    let mut skipping = false;
    let pieces: Vec<&[u8]> = section.split(|&b| b == b'\n').collect();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let line = if i < last {
            piece.strip_suffix(b"\r")
        } else {
            Some(piece)
        };
        let checked = match line {
            None => Err(ParseError::bad("bare LF in header section")),
            Some(l) if l.contains(&b'\r') => Err(ParseError::bad("bare CR in header section")),
            Some(l) => check_value_bytes(l).map(|()| l),
        };
        let line = match checked {
            Ok(l) => l,
            Err(e) => {
                first_err.get_or_insert(e);
                if let Some(n) = name.take() {
                    headers.push(&n, std::mem::take(&mut value));
                }
                skipping = true;
                continue;
            }
        };
        if line.first().copied().is_some_and(is_wsp) {
            // Folded continuation of the previous header field.
            if skipping {
                continue;
            }
            if name.is_none() {
                first_err
                    .get_or_insert(ParseError::bad("continuation line without a header field"));
                continue;
            }
            let part = trim(line);
            if !part.is_empty() {
                if !value.is_empty() {
                    value.push(b' ');
                }
                value.extend_from_slice(part);
            }
            continue;
        }
        if let Some(n) = name.take() {
            headers.push(&n, std::mem::take(&mut value));
        }
        skipping = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            first_err.get_or_insert(ParseError::bad("header line without a colon"));
            skipping = true;
            continue;
        };
        let n = trim(&line[..colon]);
        if !is_token_str(n) {
            first_err.get_or_insert(ParseError::bad("malformed header field name"));
            skipping = true;
            continue;
        }
        // Token characters are ASCII.
        name = Some(String::from_utf8_lossy(n).into_owned());
        value = trim(&line[colon + 1..]).to_vec();
    }
    if let Some(n) = name.take() {
        headers.push(&n, value);
    }
    (headers, first_err)
}

/// Rejects control bytes in header lines except HTAB, and except right after a backslash (a
/// quoted-pair may carry NUL, BEL or DEL: RFC 4475 intmeth).
fn check_value_bytes(line: &[u8]) -> Result<(), ParseError> {
    let mut prev_backslash = false;
    for &b in line {
        let ctl = (b < 0x20 && b != b'\t') || b == 0x7f;
        if ctl && !prev_backslash {
            return Err(ParseError::bad("control character in header field"));
        }
        prev_backslash = b == b'\\' && !prev_backslash;
    }
    Ok(())
}

fn check_version(v: &[u8]) -> Result<(), ErrorKind> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    // SIP/x.y with digits is a version we do not speak; anything else is garbage.
    match v.get(..4) {
        Some(p) if p.eq_ignore_ascii_case(b"SIP/") => {
            let rest = &v[4..];
            let dot = rest.iter().position(|&b| b == b'.');
            let ok = dot.is_some_and(|d| {
                let (a, b) = (&rest[..d], &rest[d + 1..]);
                !a.is_empty() && !b.is_empty() && a.iter().chain(b).all(u8::is_ascii_digit)
            });
            if ok {
                Err(ErrorKind::VersionNotSupported)
            } else {
                Err(ErrorKind::BadRequest)
            }
        }
        _ => Err(ErrorKind::BadRequest),
    }
}

enum Start {
    Request(Method, Uri),
    Response(u16, Vec<u8>),
}

fn parse_start(line: &[u8]) -> Result<Start, ParseError> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        let fail = |r| ParseError {
            start: StartKind::Response,
            ..ParseError::bad(r)
        };
        let sp = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or(fail("malformed status line"))?;
        check_version(&line[..sp]).map_err(|k| ParseError {
            kind: k,
            ..fail("unsupported SIP version")
        })?;
        let rest = &line[sp + 1..];
        let (code, reason) = match rest.iter().position(|&b| b == b' ') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        if code.len() != 3 {
            return Err(fail("malformed status code"));
        }
        let status = parse_u32(code, 3).ok_or(fail("malformed status code"))?;
        if !(100..=699).contains(&status) {
            return Err(fail("status code out of range"));
        }
        if reason
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(fail("control character in reason phrase"));
        }
        return Ok(Start::Response(status as u16, reason.to_vec()));
    }
    let fail = |r| ParseError {
        start: StartKind::Request,
        ..ParseError::bad(r)
    };
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [m, u, v] = parts.as_slice() else {
        return Err(fail("malformed request line"));
    };
    let method = Method::parse(m).ok_or(fail("malformed method"))?;
    check_version(v).map_err(|k| ParseError {
        kind: k,
        ..fail(if k == ErrorKind::VersionNotSupported {
            "SIP version not supported"
        } else {
            "malformed SIP version"
        })
    })?;
    let uri = Uri::parse(u).ok_or(fail("malformed Request-URI"))?;
    Ok(Start::Request(method, uri))
}

impl Message {
    /// Parses one message from `buf`. Leading CRLFs are skipped (RFC 3261 7.5). The body is
    /// exactly Content-Length bytes; bytes beyond it are ignored as RFC 3261 18.3 asks for
    /// datagrams (use [`super::framing::Framer`] on streams). Without Content-Length the body is
    /// the rest of `buf`. A Content-Length larger than what is there is an error (RFC 4475 clerr).
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        let lead = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(buf.len());
        let buf = &buf[lead..];
        let line_end = buf
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(ParseError::bad("no CRLF after start line"))?;
        let start_line = &buf[..line_end];
        let start = parse_start(start_line);
        let start_kind = match &start {
            Ok(Start::Request(..)) => StartKind::Request,
            Ok(Start::Response(..)) => StartKind::Response,
            Err(e) => e.start,
        };
        let after_start = line_end + 2;
        let (section, body_start, head_ok) =
            if buf.get(after_start..after_start + 2) == Some(b"\r\n") {
                (&b""[..], after_start + 2, true)
            } else {
                match find_head_end(&buf[line_end..]) {
                    Some(e) => (&buf[after_start..line_end + e], line_end + e + 4, true),
                    // No blank line: salvage the header lines for a reply, then fail.
                    None => (
                        buf[after_start..]
                            .strip_suffix(b"\r\n")
                            .unwrap_or(&buf[after_start..]),
                        buf.len(),
                        false,
                    ),
                }
            };
        let (headers, header_err) = parse_header_lines(section);
        let with_headers = |e: ParseError| ParseError {
            start: start_kind,
            headers: Some(Box::new(headers.clone())),
            ..e
        };
        let start = start.map_err(with_headers)?;
        if let Some(e) = header_err {
            return Err(with_headers(e));
        }
        if !head_ok {
            return Err(with_headers(ParseError::bad(
                "no empty line after header section",
            )));
        }
        let rest = &buf[body_start..];
        let body = match headers.content_length() {
            Ok(Some(n)) => {
                let n = n as usize;
                rest.get(..n).ok_or_else(|| {
                    with_headers(ParseError::bad("body shorter than Content-Length"))
                })?
            }
            Ok(None) => rest,
            Err(e) => return Err(with_headers(ParseError::bad(e.reason()))),
        }
        .to_vec();
        Ok(match start {
            Start::Request(method, uri) => Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }),
            Start::Response(status, reason) => Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }),
        })
    }

    /// Serializes (see [`Request::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// The header fields of either kind.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

/// Writes header fields with Content-Length forced to the body length, at the position of the
/// first Content-Length field or at the end.
fn write_head_and_body(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    let mut wrote_len = false;
    for h in headers.iter() {
        if h.name == "Content-Length" {
            if !wrote_len {
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                wrote_len = true;
            }
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_len {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

impl Request {
    /// Parses a request (a response is an error).
    pub fn parse(buf: &[u8]) -> Result<Request, ParseError> {
        match Message::parse(buf)? {
            Message::Request(r) => Ok(r),
            Message::Response(_) => Err(ParseError {
                start: StartKind::Response,
                ..ParseError::bad("expected a request")
            }),
        }
    }

    /// Serializes with canonical header names, folding removed and Content-Length always equal
    /// to the body length (so a message built or edited in code cannot be mis-framed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(format!("{} {} SIP/2.0\r\n", self.method, self.uri).as_bytes());
        write_head_and_body(&mut out, &self.headers, &self.body);
        out
    }
}

impl Response {
    /// Parses a response (a request is an error).
    pub fn parse(buf: &[u8]) -> Result<Response, ParseError> {
        match Message::parse(buf)? {
            Message::Response(r) => Ok(r),
            Message::Request(_) => Err(ParseError {
                start: StartKind::Request,
                ..ParseError::bad("expected a response")
            }),
        }
    }

    /// Serializes like [`Request::to_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(format!("SIP/2.0 {} ", self.status).as_bytes());
        out.extend_from_slice(&self.reason);
        out.extend_from_slice(b"\r\n");
        write_head_and_body(&mut out, &self.headers, &self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@[2001:db8::2]:5061;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sips:bob@biloxi.example.com>\r\n\
f: Alice <sips:alice@atlanta.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
m: <sips:alice@[2001:db8::1]:5061>\r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\nv=0\r\n";

    #[test]
    fn parse_and_round_trip() {
        let m = Message::parse(INVITE).unwrap();
        let Message::Request(r) = &m else {
            panic!("request expected")
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.body, b"v=0\r");
        assert_eq!(
            r.headers.get("Call-ID").unwrap(),
            b"a84b4c76e66710@pc33.atlanta.example.com"
        );
        let out = m.to_bytes();
        assert!(out.windows(13).any(|w| w == b"\r\nCall-ID: a8"));
        assert_eq!(Message::parse(&out).unwrap(), m);
    }

    #[test]
    fn folding_is_unfolded() {
        let raw =
            b"OPTIONS sip:a@b.com SIP/2.0\r\nSubject: one\r\n  two\r\n\tthree\r\nl: 0\r\n\r\n";
        let r = Request::parse(raw).unwrap();
        assert_eq!(r.headers.get("Subject").unwrap(), b"one two three");
    }

    #[test]
    fn start_line_errors() {
        for (raw, status) in [
            (&b"INVITE  sip:a@b.com SIP/2.0\r\n\r\n"[..], Some(400)),
            (b"INVITE sip:a@b.com SIP/2.0 \r\n\r\n", Some(400)),
            (b"INVITE <sip:a@b.com> SIP/2.0\r\n\r\n", Some(400)),
            (b"INVITE sip:a@b.com SIP/7.0\r\n\r\n", Some(505)),
            (b"INVITE sip:a@b.com HTTP/1.1\r\n\r\n", Some(400)),
            (b"SIP/2.0 4294967301 big\r\n\r\n", None),
            (b"SIP/2.0 99 low\r\n\r\n", None),
            (b"SIP/2.0 2000 OK\r\n\r\n", None),
        ] {
            let e = Message::parse(raw).unwrap_err();
            assert_eq!(e.status(), status, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn header_section_errors_and_salvage() {
        let e = Message::parse(
            b"INVITE  sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nl: 0\r\n\r\n",
        )
        .unwrap_err();
        assert_eq!(
            e.headers.unwrap().get("Via").unwrap(),
            b"SIP/2.0/TLS h;branch=z9hG4bK1"
        );
        assert!(Message::parse(b"OPTIONS sip:a@b.com SIP/2.0\r\nFoobar roobar\r\n\r\n").is_err());
        assert!(
            Message::parse(b"OPTIONS sip:a@b.com SIP/2.0\r\n folded-first: x\r\n\r\n").is_err()
        );
        assert!(Message::parse(b"OPTIONS sip:a@b.com SIP/2.0\r\nX: a\nY: b\r\n\r\n").is_err());
        assert!(Message::parse(b"OPTIONS sip:a@b.com SIP/2.0\r\nX: a\x01b\r\n\r\n").is_err());
        assert!(Message::parse(b"OPTIONS sip:a@b.com SIP/2.0\r\nX y: a\r\n\r\n").is_err());
        assert!(Message::parse(b"").is_err());
        assert!(Message::parse(b"\r\n\r\n").is_err());
    }

    #[test]
    fn content_length_rules() {
        let base = "OPTIONS sip:a@b.com SIP/2.0\r\n";
        for bad in ["l: -1", "l: 4294967296", "l: 1e3", "l: +5", "l:", "l: 10"] {
            let raw = format!("{base}{bad}\r\n\r\nabc");
            let e = Message::parse(raw.as_bytes()).unwrap_err();
            assert_eq!(e.status(), Some(400), "{bad}");
        }
        let two = format!("{base}Content-Length: 3\r\nl: 3\r\n\r\nabc");
        assert!(Message::parse(two.as_bytes()).is_err());
        let extra = format!("{base}l: 3\r\n\r\nabcdef");
        let Message::Request(r) = Message::parse(extra.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn response_parse_and_serialize() {
        let raw =
            b"SIP/2.0 100 \r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";
        let r = Response::parse(raw).unwrap();
        assert_eq!(r.status, 100);
        assert!(r.reason.is_empty());
        assert_eq!(r.to_bytes(), raw.to_vec());
    }

    #[test]
    fn edited_body_reframes() {
        let mut r = Request::parse(INVITE).unwrap();
        r.body = b"v=0\r\no=- 1 1 IN IP6 ::1\r\n".to_vec();
        r.headers.set("Max-Forwards", "69");
        let again = Request::parse(&r.to_bytes()).unwrap();
        assert_eq!(again.body, r.body);
        assert_eq!(again.headers.max_forwards(), Ok(Some(69)));
    }
}
