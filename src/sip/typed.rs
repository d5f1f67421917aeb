//! Typed views of the header fields the edge acts on (CSeq, Max-Forwards, Content-Length,
//! Call-ID, From/To/Contact/Route/Record-Route, Via, option tags, Expires, Date). Each accessor
//! parses on demand from the stored bytes and says precisely what was missing or malformed, so
//! validation can name the header in its 400 reason.

use super::header::Headers;
use super::method::Method;
use super::name_addr::NameAddr;
use super::scan::{is_token, is_token_str, parse_u32, trim};
use super::via::Via;

/// Why a typed header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    /// The header field is required here but absent.
    Missing(&'static str),
    /// Present but not well formed.
    Invalid(&'static str),
    /// A single-valued header field appears more than once (RFC 4475 multi01).
    Duplicate(&'static str),
}

impl FieldError {
    /// A reason phrase naming the header, for a 400 response.
    pub fn reason(&self) -> &'static str {
        // Static strings keep reasons free of peer bytes.
        match self {
            FieldError::Missing(h) => missing_reason(h),
            FieldError::Invalid(h) => invalid_reason(h),
            FieldError::Duplicate(h) => duplicate_reason(h),
        }
    }
}

macro_rules! reasons {
    ($fn:ident, $prefix:literal) => {
        fn $fn(h: &str) -> &'static str {
            match h {
                "Via" => concat!($prefix, " Via"),
                "From" => concat!($prefix, " From"),
                "To" => concat!($prefix, " To"),
                "Call-ID" => concat!($prefix, " Call-ID"),
                "CSeq" => concat!($prefix, " CSeq"),
                "Max-Forwards" => concat!($prefix, " Max-Forwards"),
                "Contact" => concat!($prefix, " Contact"),
                "Route" => concat!($prefix, " Route"),
                "Record-Route" => concat!($prefix, " Record-Route"),
                "Expires" => concat!($prefix, " Expires"),
                "Date" => concat!($prefix, " Date"),
                "Content-Type" => concat!($prefix, " Content-Type"),
                "Content-Length" => concat!($prefix, " Content-Length"),
                "Require" => concat!($prefix, " Require"),
                "Proxy-Require" => concat!($prefix, " Proxy-Require"),
                "Supported" => concat!($prefix, " Supported"),
                "Unsupported" => concat!($prefix, " Unsupported"),
                _ => concat!($prefix, " header field"),
            }
        }
    };
}
reasons!(missing_reason, "Missing");
reasons!(invalid_reason, "Malformed");
reasons!(duplicate_reason, "Duplicate");

/// The CSeq header: sequence number (below 2**31, RFC 3261 8.1.1.5) and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method, which must equal the request method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(s: &[u8]) -> Option<CSeq> {
        let s = trim(s);
        let sp = s.iter().position(|&b| b == b' ' || b == b'\t')?;
        let seq = parse_u32(&s[..sp], 10)?;
        if seq >= 1 << 31 {
            return None;
        }
        let method = Method::parse(trim(&s[sp..]))?;
        Some(CSeq { seq, method })
    }

    /// Wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{} {}", self.seq, self.method).into_bytes()
    }
}

/// A Contact value: `*` (REGISTER removal) or addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *`.
    Star,
    /// One or more addresses.
    List(Vec<NameAddr>),
}

/// Checks an RFC 1123 date as SIP requires it (`Sat, 13 Nov 2010 23:29:00 GMT`, RFC 3261 25.1);
/// other time zones are rejected (RFC 4475 baddate).
pub fn is_sip_date(s: &[u8]) -> bool {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let s = trim(s);
    if s.len() != 29 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| s[r].iter().all(u8::is_ascii_digit);
    DAYS.contains(&&s[0..3])
        && &s[3..5] == b", "
        && digits(5..7)
        && s[7] == b' '
        && MONTHS.contains(&&s[8..11])
        && s[11] == b' '
        && digits(12..16)
        && s[16] == b' '
        && digits(17..19)
        && s[19] == b':'
        && digits(20..22)
        && s[22] == b':'
        && digits(23..25)
        && &s[25..] == b" GMT"
}

/// Checks `type "/" subtype *(SEMI m-parameter)` for Content-Type / Accept entries and returns the
/// lower-cased `type/subtype`.
pub fn media_type(s: &[u8]) -> Option<String> {
    let s = trim(s);
    let main = match s.iter().position(|&b| b == b';') {
        Some(i) => {
            super::scan::parse_params(&s[i + 1..])?;
            trim(&s[..i])
        }
        None => s,
    };
    let slash = main.iter().position(|&b| b == b'/')?;
    let (t, st) = (trim(&main[..slash]), trim(&main[slash + 1..]));
    if !is_token_str(t) || !is_token_str(st) {
        return None;
    }
    let mut out = String::from_utf8_lossy(t).to_ascii_lowercase();
    out.push('/');
    out.push_str(&String::from_utf8_lossy(st).to_ascii_lowercase());
    Some(out)
}

fn is_callid_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'!'
                | b'%'
                | b'*'
                | b'_'
                | b'+'
                | b'`'
                | b'\''
                | b'~'
                | b'('
                | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

impl Headers {
    /// The only value of a single-valued header field.
    fn single(&self, name: &'static str) -> Result<&[u8], FieldError> {
        let mut it = self.get_all(name);
        let first = it.next().ok_or(FieldError::Missing(name))?;
        if it.next().is_some() {
            return Err(FieldError::Duplicate(name));
        }
        Ok(first)
    }

    /// The CSeq header.
    pub fn cseq(&self) -> Result<CSeq, FieldError> {
        CSeq::parse(self.single("CSeq")?).ok_or(FieldError::Invalid("CSeq"))
    }

    /// The Max-Forwards value; `Ok(None)` when absent (RFC 2543 peers, RFC 4475 inv2543).
    pub fn max_forwards(&self) -> Result<Option<u8>, FieldError> {
        match self.single("Max-Forwards") {
            Err(FieldError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(v) => match parse_u32(trim(v), 10) {
                Some(n) if n <= 255 => Ok(Some(n as u8)),
                _ => Err(FieldError::Invalid("Max-Forwards")),
            },
        }
    }

    /// The Content-Length value; `Ok(None)` when absent. Signs and overflow are errors.
    pub fn content_length(&self) -> Result<Option<u32>, FieldError> {
        match self.single("Content-Length") {
            Err(FieldError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(v) => parse_u32(trim(v), 10)
                .map(Some)
                .ok_or(FieldError::Invalid("Content-Length")),
        }
    }

    /// The Call-ID (`word ["@" word]`).
    pub fn call_id(&self) -> Result<&[u8], FieldError> {
        let v = trim(self.single("Call-ID")?);
        let ok = match v.iter().position(|&b| b == b'@') {
            Some(at) => {
                let (a, b) = (&v[..at], &v[at + 1..]);
                !a.is_empty() && !b.is_empty() && a.iter().chain(b).all(|&c| is_callid_char(c))
            }
            None => !v.is_empty() && v.iter().all(|&c| is_callid_char(c)),
        };
        if ok {
            Ok(v)
        } else {
            Err(FieldError::Invalid("Call-ID"))
        }
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr, FieldError> {
        NameAddr::parse(self.single("From")?).ok_or(FieldError::Invalid("From"))
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr, FieldError> {
        NameAddr::parse(self.single("To")?).ok_or(FieldError::Invalid("To"))
    }

    /// Every Via value, top first; at least one is required.
    pub fn vias(&self) -> Result<Vec<Via>, FieldError> {
        let vals = self.values("Via").ok_or(FieldError::Invalid("Via"))?;
        if vals.is_empty() {
            return Err(FieldError::Missing("Via"));
        }
        vals.into_iter()
            .map(|v| Via::parse(v).ok_or(FieldError::Invalid("Via")))
            .collect()
    }

    /// The top Via (where a response goes).
    pub fn top_via(&self) -> Result<Via, FieldError> {
        let first = self.get("Via").ok_or(FieldError::Missing("Via"))?;
        let vals = super::scan::split_list(first).ok_or(FieldError::Invalid("Via"))?;
        vals.first()
            .and_then(|v| Via::parse(v))
            .ok_or(FieldError::Invalid("Via"))
    }

    fn addr_list(&self, name: &'static str, need_angle: bool) -> Result<Vec<NameAddr>, FieldError> {
        let vals = self.values(name).ok_or(FieldError::Invalid(name))?;
        vals.into_iter()
            .map(|v| match NameAddr::parse(v) {
                Some(a) if a.angle || !need_angle => Ok(a),
                _ => Err(FieldError::Invalid(name)),
            })
            .collect()
    }

    /// Contact values; `Ok(None)` when absent. `*` must stand alone.
    pub fn contacts(&self) -> Result<Option<Contacts>, FieldError> {
        if self.count("Contact") == 0 {
            return Ok(None);
        }
        let vals = self
            .values("Contact")
            .ok_or(FieldError::Invalid("Contact"))?;
        if vals.iter().any(|v| trim(v) == b"*") {
            return if vals.len() == 1 {
                Ok(Some(Contacts::Star))
            } else {
                Err(FieldError::Invalid("Contact"))
            };
        }
        let list = self.addr_list("Contact", false)?;
        for c in &list {
            if let Some(e) = c.param("expires") {
                if e.and_then(|v| parse_u32(v, 10)).is_none() {
                    return Err(FieldError::Invalid("Contact"));
                }
            }
        }
        Ok(Some(Contacts::List(list)))
    }

    /// Route values in order (name-addr form required).
    pub fn routes(&self) -> Result<Vec<NameAddr>, FieldError> {
        self.addr_list("Route", true)
    }

    /// Record-Route values in order (name-addr form required).
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, FieldError> {
        self.addr_list("Record-Route", true)
    }

    /// Option tags of Require, Proxy-Require, Supported or Unsupported.
    pub fn option_tags(&self, name: &'static str) -> Result<Vec<String>, FieldError> {
        let vals = self.values(name).ok_or(FieldError::Invalid(name))?;
        let mut out = Vec::new();
        for v in vals {
            if v.is_empty() && name == "Supported" {
                continue; // `Supported:` with no value is legal
            }
            if !v.iter().all(|&b| is_token(b)) || v.is_empty() {
                return Err(FieldError::Invalid(name));
            }
            out.push(String::from_utf8_lossy(v).into_owned());
        }
        Ok(out)
    }

    /// Expires in seconds; `Ok(None)` when absent.
    pub fn expires(&self) -> Result<Option<u32>, FieldError> {
        match self.single("Expires") {
            Err(FieldError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(v) => parse_u32(trim(v), 10)
                .map(Some)
                .ok_or(FieldError::Invalid("Expires")),
        }
    }

    /// The lower-cased `type/subtype` of Content-Type; `Ok(None)` when absent.
    pub fn content_type(&self) -> Result<Option<String>, FieldError> {
        match self.single("Content-Type") {
            Err(FieldError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(v) => media_type(v)
                .map(Some)
                .ok_or(FieldError::Invalid("Content-Type")),
        }
    }

    /// Checks the Date header when present.
    pub fn check_date(&self) -> Result<(), FieldError> {
        match self.single("Date") {
            Err(FieldError::Missing(_)) => Ok(()),
            Err(e) => Err(e),
            Ok(v) if is_sip_date(v) => Ok(()),
            Ok(_) => Err(FieldError::Invalid("Date")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(lines: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in lines {
            h.push(n, v.as_bytes());
        }
        h
    }

    #[test]
    fn cseq_rules() {
        assert_eq!(CSeq::parse(b"0009 INVITE").unwrap().seq, 9);
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_none());
        assert!(CSeq::parse(b"2147483648 INVITE").is_none());
        assert!(CSeq::parse(b"-1 INVITE").is_none());
        assert!(CSeq::parse(b"1").is_none());
        assert!(CSeq::parse(b"1 IN VITE").is_none());
    }

    #[test]
    fn scalars() {
        assert_eq!(hs(&[("Max-Forwards", "0068")]).max_forwards(), Ok(Some(68)));
        assert_eq!(
            hs(&[("Max-Forwards", "300")]).max_forwards(),
            Err(FieldError::Invalid("Max-Forwards"))
        );
        assert_eq!(hs(&[]).max_forwards(), Ok(None));
        assert_eq!(
            hs(&[("l", "-999")]).content_length(),
            Err(FieldError::Invalid("Content-Length"))
        );
        assert_eq!(
            hs(&[("l", "99999999999")]).content_length(),
            Err(FieldError::Invalid("Content-Length"))
        );
        assert_eq!(
            hs(&[("Content-Length", "5"), ("l", "5")]).content_length(),
            Err(FieldError::Duplicate("Content-Length"))
        );
        assert_eq!(
            hs(&[("Expires", "1".repeat(40).as_str())]).expires(),
            Err(FieldError::Invalid("Expires"))
        );
    }

    #[test]
    fn call_id_and_dates() {
        assert!(hs(&[("i", "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")])
            .call_id()
            .is_ok());
        assert!(hs(&[("Call-ID", "a b")]).call_id().is_err());
        assert!(is_sip_date(b"Sat, 15 Oct 2005 04:44:56 GMT"));
        assert!(!is_sip_date(b"Fri, 01 Jan 2010 16:00:00 EST"));
    }

    #[test]
    fn contacts_and_routes() {
        let h = hs(&[
            ("m", "<sip:a@[2001:db8::1]>;expires=10, sip:b@c.com"),
            ("Contact", "<sip:d@e.com>"),
        ]);
        match h.contacts().unwrap().unwrap() {
            Contacts::List(l) => assert_eq!(l.len(), 3),
            Contacts::Star => panic!("not a star"),
        }
        assert_eq!(
            hs(&[("Contact", "*")]).contacts().unwrap(),
            Some(Contacts::Star)
        );
        assert!(hs(&[("Contact", "*, <sip:a@b.com>")]).contacts().is_err());
        assert!(hs(&[("Contact", "<sip:a@b.com>;expires=280297596632815")])
            .contacts()
            .is_err());
        assert!(hs(&[("Route", "sip:a@b.com")]).routes().is_err());
        assert_eq!(
            hs(&[("Route", "<sip:a@b.com;lr>, <sip:[::1];lr>")])
                .routes()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn tags_and_types() {
        let h = hs(&[
            ("Require", "100rel, timer"),
            ("k", ""),
            ("c", "Application/SDP ; charset=x"),
        ]);
        assert_eq!(h.option_tags("Require").unwrap(), ["100rel", "timer"]);
        assert!(h.option_tags("Supported").unwrap().is_empty());
        assert_eq!(
            h.content_type().unwrap().as_deref(),
            Some("application/sdp")
        );
        assert!(hs(&[("Require", "a b")]).option_tags("Require").is_err());
    }
}
