//! Typed parse errors. Each one says which SIP status a request carrying it should get, so the
//! transport can answer a malformed request (RFC 4475 section 3.1.2) without guessing.

use super::header::Headers;

/// What was wrong with a message, at the level the transport needs to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Syntax error anywhere in the message: 400 Bad Request.
    BadRequest,
    /// SIP version other than 2.0: 505 Version Not Supported.
    VersionNotSupported,
    /// Header section or body larger than the configured limit: 513 Message Too Large.
    TooLarge,
}

/// Whether the broken message started like a request, a response, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// The first line looked like a request line (may still be malformed).
    Request,
    /// The first line started with `SIP/`: a response, which is dropped, never answered.
    Response,
    /// Not even the start line could be classified.
    Unknown,
}

/// A message that could not be parsed. It keeps whatever header fields were readable so a
/// 400/505 can still be built (see [`super::response::reply_to_headers`]). Its `Debug` and
/// `Display` never print those fields: they hold URIs and numbers that logs must not show.
#[derive(Clone)]
pub struct ParseError {
    /// The class of error, which decides the status.
    pub kind: ErrorKind,
    /// A short reason, safe to echo in a reason phrase (never contains peer bytes).
    pub reason: &'static str,
    /// Request, response or unknown.
    pub start: StartKind,
    /// Header fields that parsed, when the header section itself was well formed.
    pub headers: Option<Box<Headers>>,
}

impl ParseError {
    /// Builds an error with no salvaged headers.
    pub fn new(kind: ErrorKind, reason: &'static str) -> Self {
        ParseError {
            kind,
            reason,
            start: StartKind::Unknown,
            headers: None,
        }
    }

    /// Shorthand for a 400 error.
    pub fn bad(reason: &'static str) -> Self {
        Self::new(ErrorKind::BadRequest, reason)
    }

    /// The status to answer with: `None` for a response (RFC 4475: malformed responses are
    /// dropped) or an unclassifiable start line.
    pub fn status(&self) -> Option<u16> {
        if self.start != StartKind::Request {
            return None;
        }
        Some(match self.kind {
            ErrorKind::BadRequest => 400,
            ErrorKind::VersionNotSupported => 505,
            ErrorKind::TooLarge => 513,
        })
    }
}

impl std::fmt::Debug for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParseError")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .field("start", &self.start)
            .field("salvaged_headers", &self.headers.as_ref().map(|h| h.len()))
            .finish()
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed SIP message: {}", self.reason)
    }
}

impl std::error::Error for ParseError {}
