//! Request validation before the B2BUA acts on a request (RFC 3261 8.2 and 16.3, RFC 4475
//! section 3): mandatory and single-valued header fields, typed syntax of every header field the
//! edge reads, CSeq/method agreement, Max-Forwards, Require/Proxy-Require, URI scheme, body type
//! and Accept. A rejection carries the status, a reason and any header fields the answer needs
//! (Unsupported, Accept). Responses get [`inspect_response`]: a malformed one is dropped.

use super::header::Headers;
use super::message::{Request, Response};
use super::method::Method;
use super::response::reply_to_headers;
use super::typed::{media_type, Contacts, FieldError};
use super::uri::Uri;

/// Why a request is refused, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Status code of the answer.
    pub status: u16,
    /// Reason phrase (static, never peer bytes).
    pub reason: &'static str,
    /// Extra header fields for the answer, e.g. `Unsupported` for 420, `Accept` for 415.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

impl Reject {
    fn new(status: u16, reason: &'static str) -> Self {
        Reject {
            status,
            reason,
            headers: Vec::new(),
        }
    }

    /// The full response to `req` (Via/From/To+tag/Call-ID/CSeq copied, extra fields added).
    pub fn reply(&self, req: &Request, to_tag: Option<&[u8]>) -> Response {
        let mut r = reply_to_headers(&req.headers, self.status, self.reason, to_tag);
        for (n, v) in &self.headers {
            r.headers.push(n, v.clone());
        }
        r
    }
}

impl From<FieldError> for Reject {
    fn from(e: FieldError) -> Self {
        Reject::new(400, e.reason())
    }
}

/// What the element supports; decides 416, 420, 415 and 406.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Request-URI schemes served (others get 416).
    pub uri_schemes: Vec<String>,
    /// Option tags we implement (anything else in Require gets 420).
    pub supported: Vec<String>,
    /// Whether Proxy-Require is enforced too (true for an edge that forwards requests).
    pub check_proxy_require: bool,
    /// Body types accepted on session-carrying methods (INVITE, UPDATE, PRACK, ACK).
    pub body_types: Vec<String>,
    /// Methods the element answers itself, for which Max-Forwards 0 is not an error (RFC 3261
    /// 16.3 lets a proxy answer OPTIONS; RFC 4475 zeromf).
    pub local_methods: Vec<Method>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            uri_schemes: vec!["sip".into(), "sips".into(), "tel".into()],
            supported: Vec::new(),
            check_proxy_require: true,
            body_types: vec!["application/sdp".into()],
            local_methods: vec![Method::Options],
        }
    }
}

/// Single-valued header fields the transaction and dialog layers read.
const CORE_SINGLE: &[&str] = &[
    "To",
    "From",
    "Call-ID",
    "CSeq",
    "Content-Length",
    "Content-Type",
];

/// Header fields that may appear only once in a request.
const SINGLE: &[&str] = &[
    "To",
    "From",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Expires",
    "Date",
    "Min-Expires",
    "Content-Disposition",
    "MIME-Version",
    "Session-Expires",
    "Min-SE",
    "RSeq",
    "RAck",
    "Refer-To",
    "Subject",
];

fn check_singles(h: &Headers, names: &[&'static str]) -> Result<(), FieldError> {
    for name in names {
        if h.count(name) > 1 {
            return Err(FieldError::Duplicate(name));
        }
    }
    Ok(())
}

/// Checks what the transaction and dialog layers read, in requests and responses alike.
fn check_core(h: &Headers) -> Result<(), FieldError> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if h.count(name) == 0 {
            return Err(FieldError::Missing(name));
        }
    }
    check_singles(h, CORE_SINGLE)?;
    h.vias()?;
    h.from()?;
    h.to()?;
    h.call_id()?;
    h.cseq()?;
    h.contacts()?;
    h.record_routes()?;
    h.content_type()?;
    Ok(())
}

/// Checks every header field a request may be refused for (RFC 4475 3.1.2 and 3.3).
fn check_request_fields(h: &Headers) -> Result<(), FieldError> {
    check_core(h)?;
    check_singles(h, SINGLE)?;
    h.max_forwards()?;
    h.routes()?;
    h.expires()?;
    h.check_date()?;
    for name in ["Require", "Proxy-Require", "Supported", "Unsupported"] {
        h.option_tags(name)?;
    }
    Ok(())
}

/// Checks a request with the default [`Policy`].
pub fn inspect(req: &Request) -> Result<(), Reject> {
    inspect_with(req, &Policy::default())
}

/// Checks a request against `policy`; the first problem found decides the answer.
pub fn inspect_with(req: &Request, policy: &Policy) -> Result<(), Reject> {
    let h = &req.headers;
    check_request_fields(h)?;
    let cseq = h.cseq()?;
    if cseq.method != req.method {
        return Err(Reject::new(
            400,
            "CSeq method does not match the request method",
        ));
    }
    if let Ok(Some(n)) = h.content_length() {
        if n as usize != req.body.len() {
            return Err(Reject::new(400, "Content-Length does not match the body"));
        }
    }
    if !req.body.is_empty() && h.content_type()?.is_none() {
        return Err(Reject::new(400, "Missing Content-Type"));
    }
    if let Uri::Sip(u) = &req.uri {
        if !u.headers.is_empty() {
            // RFC 4475 escruri: headers are not allowed in a Request-URI.
            return Err(Reject::new(400, "Headers in Request-URI"));
        }
    }
    if !policy.uri_schemes.iter().any(|s| s == req.uri.scheme()) {
        return Err(Reject::new(416, "Unsupported URI Scheme"));
    }
    if req.method == Method::Register {
        // The To of a REGISTER is an address-of-record, which must be a SIP or SIPS URI
        // (RFC 3261 10.2; RFC 4475 unksm2).
        if h.to()?.uri.as_sip().is_none() {
            return Err(Reject::new(400, "To of REGISTER is not a SIP URI"));
        }
    } else if let Ok(Some(Contacts::Star)) = h.contacts() {
        return Err(Reject::new(400, "Contact * outside REGISTER"));
    }
    if h.max_forwards()? == Some(0) && !policy.local_methods.contains(&req.method) {
        return Err(Reject::new(483, "Too Many Hops"));
    }
    if req.method != Method::Ack && req.method != Method::Cancel {
        let mut unsupported = Vec::new();
        let mut names = vec!["Require"];
        if policy.check_proxy_require {
            names.push("Proxy-Require");
        }
        for name in names {
            for tag in h.option_tags(name)? {
                if !policy
                    .supported
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&tag))
                    && !unsupported.contains(&tag)
                {
                    unsupported.push(tag);
                }
            }
        }
        if !unsupported.is_empty() {
            let mut r = Reject::new(420, "Bad Extension");
            r.headers
                .push(("Unsupported", unsupported.join(", ").into_bytes()));
            return Err(r);
        }
    }
    let carries_session = matches!(
        req.method,
        Method::Invite | Method::Update | Method::Prack | Method::Ack
    );
    if carries_session && !req.body.is_empty() {
        let ct = h.content_type()?.unwrap_or_default();
        if !policy.body_types.contains(&ct) && req.method != Method::Ack {
            let mut r = Reject::new(415, "Unsupported Media Type");
            r.headers
                .push(("Accept", policy.body_types.join(", ").into_bytes()));
            return Err(r);
        }
    }
    if matches!(req.method, Method::Invite | Method::Update) && h.count("Accept") > 0 {
        // Our answer carries SDP; an Accept without it cannot be satisfied (RFC 4475 sdp01).
        let accepts = h.values("Accept").ok_or(FieldError::Invalid("Accept"))?;
        let mut ok = false;
        for a in accepts.into_iter().filter(|a| !a.is_empty()) {
            let t = media_type(a).ok_or(FieldError::Invalid("Accept"))?;
            ok |= policy.body_types.iter().any(|b| {
                t == *b || t == "*/*" || (t.ends_with("/*") && b.starts_with(&t[..t.len() - 1]))
            });
        }
        if !ok {
            let mut r = Reject::new(406, "Not Acceptable");
            r.headers.push((
                "Warning",
                b"399 srtp-edge \"only application/sdp bodies are produced\"".to_vec(),
            ));
            return Err(r);
        }
    }
    Ok(())
}

/// Checks a received response; an error means drop it silently (RFC 4475 scalarlg, bigcode).
/// Only what the transaction and dialog layers read is checked, so an upstream's odd Date or
/// Subject does not lose a call.
pub fn inspect_response(resp: &Response) -> Result<(), FieldError> {
    check_core(&resp.headers)?;
    if let Ok(Some(n)) = resp.headers.content_length() {
        if n as usize != resp.body.len() {
            return Err(FieldError::Invalid("Content-Length"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str, method: &str, cseq_method: &str) -> Request {
        let raw = format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TLS [2001:db8::1];branch=z9hG4bK1\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 {cseq_method}\r\n\
Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Request::parse(raw.as_bytes()).unwrap()
    }

    #[test]
    fn good_request_passes() {
        assert_eq!(inspect(&req("", "INVITE", "INVITE")), Ok(()));
    }

    #[test]
    fn statuses() {
        assert_eq!(
            inspect(&req("", "OPTIONS", "INVITE")).unwrap_err().status,
            400
        );
        let mut r = req("", "INVITE", "INVITE");
        r.headers.set("Max-Forwards", "0");
        assert_eq!(inspect(&r).unwrap_err().status, 483);
        r.method = Method::Options;
        r.headers.set("CSeq", "1 OPTIONS");
        assert_eq!(inspect(&r), Ok(()));
        let e = inspect(&req(
            "Require: 100rel, foo\r\nProxy-Require: foo, bar\r\n",
            "INVITE",
            "INVITE",
        ))
        .unwrap_err();
        assert_eq!(e.status, 420);
        assert_eq!(
            e.headers,
            vec![("Unsupported", b"100rel, foo, bar".to_vec())]
        );
        let p = Policy {
            supported: vec!["100rel".into(), "foo".into(), "bar".into()],
            ..Policy::default()
        };
        assert_eq!(
            inspect_with(
                &req(
                    "Require: 100rel, foo\r\nProxy-Require: foo, bar\r\n",
                    "INVITE",
                    "INVITE"
                ),
                &p
            ),
            Ok(())
        );
        assert_eq!(inspect(&req("Require: foo\r\n", "ACK", "ACK")), Ok(()));
        let mut u = req("", "INVITE", "INVITE");
        u.uri = Uri::parse(b"im:bob@example.com").unwrap();
        assert_eq!(inspect(&u).unwrap_err().status, 416);
    }

    #[test]
    fn missing_and_duplicate() {
        let mut r = req("", "INVITE", "INVITE");
        r.headers.remove("Call-ID");
        assert_eq!(inspect(&r).unwrap_err().reason, "Missing Call-ID");
        let mut d = req("", "INVITE", "INVITE");
        d.headers.push("t", "<sip:x@y.com>");
        assert_eq!(inspect(&d).unwrap_err().reason, "Duplicate To");
        let mut v = req("", "INVITE", "INVITE");
        v.headers.remove("Via");
        assert_eq!(inspect(&v).unwrap_err().reason, "Missing Via");
    }

    #[test]
    fn bodies() {
        let mut r = req("", "INVITE", "INVITE");
        r.body = b"<xml/>".to_vec();
        assert_eq!(
            inspect(&r).unwrap_err().reason,
            "Content-Length does not match the body"
        );
        r.headers.remove("Content-Length");
        assert_eq!(inspect(&r).unwrap_err().reason, "Missing Content-Type");
        r.headers.push("Content-Type", "application/xml");
        let e = inspect(&r).unwrap_err();
        assert_eq!((e.status, e.headers[0].0), (415, "Accept"));
        r.headers.set("Content-Type", "application/sdp");
        assert_eq!(inspect(&r), Ok(()));
        r.headers.push("Accept", "text/plain");
        assert_eq!(inspect(&r).unwrap_err().status, 406);
        r.headers.set("Accept", "application/*");
        assert_eq!(inspect(&r), Ok(()));
    }

    #[test]
    fn responses_are_checked_for_what_matters_only() {
        let raw = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@b.com>;tag=1\r\n\
To: <sip:c@d.com>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nDate: Fri, 01 Jan 2010 16:00:00 EST\r\n\
Subject: a\r\nSubject: b\r\nContent-Length: 0\r\n\r\n";
        let mut r = Response::parse(raw).unwrap();
        assert_eq!(inspect_response(&r), Ok(()));
        r.headers.set("CSeq", "99999999999 INVITE");
        assert_eq!(inspect_response(&r), Err(FieldError::Invalid("CSeq")));
        r.headers.set("CSeq", "1 INVITE");
        r.headers.push("Call-ID", "y");
        assert_eq!(inspect_response(&r), Err(FieldError::Duplicate("Call-ID")));
    }

    #[test]
    fn reject_reply_has_extra_headers() {
        let r = req("Require: foo\r\n", "INVITE", "INVITE");
        let e = inspect(&r).unwrap_err();
        let resp = e.reply(&r, Some(b"x"));
        assert_eq!(resp.status, 420);
        assert_eq!(resp.headers.get("Unsupported"), Some(&b"foo"[..]));
        assert_eq!(resp.headers.to().unwrap().tag(), Some(&b"x"[..]));
    }
}
