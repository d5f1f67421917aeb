//! Building a response to a request (RFC 3261 8.2.6): Via, From, To (plus our tag), Call-ID and
//! CSeq are copied. It works from bare header fields because 400/416/420/483/505 answers are
//! built from requests that did not fully parse.

use super::error::ParseError;
use super::header::Headers;
use super::message::{Request, Response};
use super::name_addr::NameAddr;

/// The standard reason phrase for a status code (empty for unknown codes).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "",
    }
}

/// Builds a response from a request's header fields. `to_tag` is added to To when the status is
/// above 100 and To has no tag yet (a To that does not parse is copied unchanged). Every Via line
/// is copied in order. Content-Length is written on serialization.
pub fn reply_to_headers(
    req: &Headers,
    status: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
) -> Response {
    let mut headers = Headers::new();
    for v in req.get_all("Via") {
        headers.push("Via", v);
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let Some(v) = req.get(name) else { continue };
        if name == "To" && status > 100 {
            if let (Some(tag), Some(mut to)) = (to_tag, NameAddr::parse(v)) {
                if to.tag().is_none() {
                    to.set_param("tag", Some(tag));
                    headers.push("To", to.to_bytes());
                    continue;
                }
            }
        }
        headers.push(name, v);
    }
    Response {
        status,
        reason: reason.as_bytes().to_vec(),
        headers,
        body: Vec::new(),
    }
}

impl Request {
    /// A response to this request with the standard reason phrase.
    pub fn reply(&self, status: u16, to_tag: Option<&[u8]>) -> Response {
        reply_to_headers(&self.headers, status, reason_phrase(status), to_tag)
    }
}

impl ParseError {
    /// The response a malformed request deserves (400/505/513 with the parse reason), built from
    /// the salvaged header fields. `None` for responses (they are dropped) and when no Via was
    /// readable (the peer could not match the answer).
    pub fn reply(&self, to_tag: Option<&[u8]>) -> Option<Response> {
        let status = self.status()?;
        let headers = self.headers.as_deref()?;
        headers.get("Via")?;
        Some(reply_to_headers(headers, status, self.reason, to_tag))
    }
}

#[cfg(test)]
mod tests {
    use crate::sip::message::Message;

    #[test]
    fn copies_dialog_headers_and_adds_tag() {
        let raw = b"BYE sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/TLS x;branch=z9hG4bK1\r\nv: SIP/2.0/TLS y;branch=z9hG4bK2\r\n\
From: <sip:c@d.com>;tag=1\r\nTo: <sip:a@b.com>\r\ni: id1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n";
        let req = crate::sip::message::Request::parse(raw).unwrap();
        let r = req.reply(200, Some(b"srv1"));
        assert_eq!(r.headers.count("Via"), 2);
        assert_eq!(r.headers.to().unwrap().tag(), Some(&b"srv1"[..]));
        assert_eq!(r.headers.get("Max-Forwards"), None);
        let Message::Response(back) = Message::parse(&r.to_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(back.status, 200);
        assert_eq!(back.reason, b"OK");
        let trying = req.reply(100, Some(b"srv1"));
        assert_eq!(trying.headers.to().unwrap().tag(), None);
    }

    #[test]
    fn reply_to_broken_request() {
        let raw = b"OPTIONS sip:a@b.com SIP/7.0\r\nVia: SIP/7.0/TLS x;branch=z9hG4bK1\r\nTo: <sip:a@b.com>\r\nl: 0\r\n\r\n";
        let e = Message::parse(raw).unwrap_err();
        assert!(
            !format!("{e:?} {e}").contains("a@b.com"),
            "no peer URIs in logs"
        );
        let r = e.reply(Some(b"t")).unwrap();
        assert_eq!(r.status, 505);
        assert_eq!(r.headers.to().unwrap().tag(), Some(&b"t"[..]));
        let resp = Message::parse(b"SIP/2.0 999 x\r\nVia: SIP/2.0/TLS x\r\n\r\n").unwrap_err();
        assert!(resp.reply(None).is_none());
    }
}
