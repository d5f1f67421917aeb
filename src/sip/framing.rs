//! Cuts a TLS/TCP byte stream into SIP messages (RFC 3261 18.3): the header section ends at the
//! first empty line, Content-Length (mandatory on streams) gives the body length, and CRLFs
//! between messages are keepalives (RFC 5626 3.5.1: a double CRLF "ping" is answered with one
//! CRLF "pong"). The header section and body are bounded, and so is the buffered input.
//!
//! Framing only needs the start of the header section and Content-Length to be sound; a message
//! that frames but does not parse is handed out anyway so the caller can answer 400 and keep the
//! connection. A [`FrameError`] means the stream cannot be resynchronised: answer if
//! [`FrameError::reply`] gives a response, then close.

use super::error::{ParseError, StartKind};
use super::message::{find_head_end, Message, Response};
use super::response::reply_to_headers;

/// Size limits for one message on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header section (start line through the empty line), in bytes.
    pub max_head: usize,
    /// Largest body, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_body: 64 * 1024,
        }
    }
}

impl Limits {
    /// Most bytes the framer holds at once: one whole message plus one more of read-ahead.
    pub fn max_buffered(&self) -> usize {
        2 * (self.max_head + self.max_body)
    }
}

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A CRLFCRLF keepalive ping: answer with a single CRLF.
    Ping,
    /// One complete message (header section and exactly Content-Length body bytes), not yet
    /// parsed: pass it to [`Message::parse`].
    Message(Vec<u8>),
}

/// Why the stream cannot be framed any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// No end of the header section within the limit (513).
    HeadTooLarge,
    /// Content-Length above the body limit (513).
    BodyTooLarge,
    /// No Content-Length: on a stream the message length is unknowable (400).
    MissingContentLength,
    /// Content-Length negative, overflowing, duplicated or not a number (400).
    BadContentLength,
    /// The caller pushed more than [`Limits::max_buffered`] without draining frames.
    BufferFull,
}

/// A fatal framing error; the header section, when complete, is kept so a reply can be built
/// (`Debug` shows only its length: it holds peer URIs that logs must not show).
#[derive(Clone, PartialEq, Eq)]
pub struct FrameError {
    /// What went wrong.
    pub kind: FrameErrorKind,
    /// The header section of the offending message, when it was complete.
    pub head: Option<Vec<u8>>,
}

impl FrameError {
    /// The status a request in this state should get.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            FrameErrorKind::HeadTooLarge | FrameErrorKind::BodyTooLarge => Some(513),
            FrameErrorKind::MissingContentLength | FrameErrorKind::BadContentLength => Some(400),
            FrameErrorKind::BufferFull => None,
        }
    }

    /// A response to send before closing, when the head is a readable request with a Via.
    pub fn reply(&self, to_tag: Option<&[u8]>) -> Option<Response> {
        let status = self.status()?;
        let head = self.head.as_deref()?;
        let reason = match self.kind {
            FrameErrorKind::BodyTooLarge => "Message Too Large",
            FrameErrorKind::MissingContentLength => "Missing Content-Length",
            _ => "Malformed Content-Length",
        };
        let headers = match Message::parse(head) {
            Ok(m) => {
                if !matches!(m, Message::Request(_)) {
                    return None;
                }
                m.headers().clone()
            }
            Err(ParseError {
                start: StartKind::Request,
                headers: Some(h),
                ..
            }) => *h,
            Err(_) => return None,
        };
        headers.get("Via")?;
        Some(reply_to_headers(&headers, status, reason, to_tag))
    }
}

impl std::fmt::Debug for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameError")
            .field("kind", &self.kind)
            .field("head_len", &self.head.as_ref().map(Vec::len))
            .finish()
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIP stream framing error: {:?}", self.kind)
    }
}

impl std::error::Error for FrameError {}

/// Incremental framer for one connection: `push` received bytes, then call `next_frame` until it
/// returns `Ok(None)`.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    pos: usize,
    /// How far (relative to `pos`) the search for the empty line has already looked.
    scanned: usize,
    /// Total length of the current message once its head has been read.
    pending: Option<usize>,
}

impl Framer {
    /// A framer with the given limits.
    pub fn new(limits: Limits) -> Self {
        Framer {
            limits,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            pending: None,
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends received bytes. Fails when more than [`Limits::max_buffered`] would be held.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len().saturating_add(data.len()) > self.limits.max_buffered() {
            return Err(FrameError {
                kind: FrameErrorKind::BufferFull,
                head: None,
            });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        self.scanned = 0;
        self.pending = None;
        out
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(total) = self.pending {
            return Ok((self.buffered() >= total).then(|| Frame::Message(self.take(total))));
        }
        loop {
            let data = &self.buf[self.pos..];
            if data.starts_with(b"\r\n\r\n") {
                self.pos += 4;
                return Ok(Some(Frame::Ping));
            }
            if data.starts_with(b"\r\n") {
                if data.len() < 4 && b"\r\n\r\n".starts_with(data) {
                    return Ok(None); // may still become a ping
                }
                self.pos += 2;
                continue;
            }
            if data == b"\r" {
                return Ok(None);
            }
            break;
        }
        let data = &self.buf[self.pos..];
        let from = self.scanned.min(data.len()).saturating_sub(3);
        let Some(rel) = find_head_end(&data[from..]) else {
            self.scanned = data.len();
            if data.len() > self.limits.max_head {
                return Err(FrameError {
                    kind: FrameErrorKind::HeadTooLarge,
                    head: None,
                });
            }
            return Ok(None);
        };
        let head_len = from + rel + 4;
        if head_len > self.limits.max_head {
            return Err(FrameError {
                kind: FrameErrorKind::HeadTooLarge,
                head: None,
            });
        }
        let head = &data[..head_len];
        let fail = |kind| FrameError {
            kind,
            head: Some(head.to_vec()),
        };
        let body_len = match content_length(head) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(fail(FrameErrorKind::MissingContentLength)),
            Err(()) => return Err(fail(FrameErrorKind::BadContentLength)),
        };
        if body_len > self.limits.max_body {
            return Err(fail(FrameErrorKind::BodyTooLarge));
        }
        let total = head_len + body_len;
        self.pending = Some(total);
        Ok((self.buffered() >= total).then(|| Frame::Message(self.take(total))))
    }
}

/// Content-Length of a complete header section, read the same way [`Message::parse`] reads it.
fn content_length(head: &[u8]) -> Result<Option<usize>, ()> {
    match Message::parse(head) {
        // A parse with an empty body succeeds only with Content-Length 0 or none at all.
        Ok(m) => match m.headers().content_length() {
            Ok(n) => Ok(n.map(|n| n as usize)),
            Err(_) => Err(()),
        },
        Err(ParseError {
            headers: Some(h), ..
        }) => h
            .content_length()
            .map(|n| n.map(|n| n as usize))
            .map_err(|_| ()),
        Err(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPT: &[u8] = b"OPTIONS sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn byte_by_byte_with_keepalives() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPT);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(OPT);
        let mut f = Framer::new(Limits::default());
        let mut frames = Vec::new();
        for b in &stream {
            f.push(&[*b]).unwrap();
            while let Some(fr) = f.next_frame().unwrap() {
                frames.push(fr);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Ping,
                Frame::Message(OPT.to_vec()),
                Frame::Message(OPT.to_vec())
            ]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn pipelined_in_one_push() {
        let mut f = Framer::new(Limits::default());
        let mut two = OPT.to_vec();
        two.extend_from_slice(OPT);
        f.push(&two).unwrap();
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(OPT.to_vec())));
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(OPT.to_vec())));
        assert_eq!(f.next_frame().unwrap(), None);
    }

    #[test]
    fn limits_and_bad_lengths() {
        let mut f = Framer::new(Limits {
            max_head: 64,
            max_body: 2,
        });
        f.push(&[b'A'; 65]).unwrap();
        assert_eq!(
            f.next_frame().unwrap_err().kind,
            FrameErrorKind::HeadTooLarge
        );

        let mut f = Framer::new(Limits {
            max_head: 1024,
            max_body: 2,
        });
        f.push(OPT).unwrap();
        let e = f.next_frame().unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::BodyTooLarge);
        assert_eq!(e.reply(None).unwrap().status, 513);

        for (cl, kind) in [
            ("", FrameErrorKind::MissingContentLength),
            ("Content-Length: -1\r\n", FrameErrorKind::BadContentLength),
            (
                "Content-Length: 99999999999999999999\r\n",
                FrameErrorKind::BadContentLength,
            ),
            ("l: 1\r\nl: 2\r\n", FrameErrorKind::BadContentLength),
        ] {
            let mut f = Framer::new(Limits::default());
            let raw = format!("INVITE sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/TLS h\r\n{cl}\r\n");
            f.push(raw.as_bytes()).unwrap();
            let e = f.next_frame().unwrap_err();
            assert_eq!(e.kind, kind, "{cl}");
            assert_eq!(e.reply(None).unwrap().status, 400);
        }
        let mut f = Framer::new(Limits {
            max_head: 10,
            max_body: 10,
        });
        assert_eq!(
            f.push(&[0; 41]).unwrap_err().kind,
            FrameErrorKind::BufferFull
        );
    }

    #[test]
    fn unparseable_message_is_still_framed() {
        let bad =
            b"INVITE  sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nl: 2\r\n\r\nhi";
        let mut f = Framer::new(Limits::default());
        f.push(bad).unwrap();
        f.push(OPT).unwrap();
        let Some(Frame::Message(m)) = f.next_frame().unwrap() else {
            panic!()
        };
        let e = Message::parse(&m).unwrap_err();
        assert_eq!(e.reply(None).unwrap().status, 400);
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(OPT.to_vec())));
    }
}
