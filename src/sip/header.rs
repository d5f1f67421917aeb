//! Header fields as an ordered list of (name, value) pairs: compact forms expanded, names compared
//! case-insensitively, values kept as bytes (unfolded), and comma lists split only for the
//! header fields whose grammar is a list (so a comma in a Date or a quoted display name is safe).

use super::scan::split_list;

/// (compact form, canonical name) pairs from RFC 3261 7.3.3 and later extensions.
const COMPACT: &[(u8, &str)] = &[
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Canonical spellings of the header fields the edge knows, used when serializing.
const KNOWN: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Header fields whose value is a comma-separated list (RFC 3261 7.3.1), so several values on one
/// line are equivalent to several lines.
const LIST: &[&str] = &[
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Call-Info",
    "Contact",
    "Content-Encoding",
    "Content-Language",
    "Error-Info",
    "In-Reply-To",
    "Proxy-Require",
    "Record-Route",
    "Require",
    "Route",
    "Supported",
    "Unsupported",
    "Via",
    "Warning",
];

/// The canonical name for `name`: compact forms expanded, known names in their usual spelling,
/// anything else as received.
pub fn canonical_name(name: &str) -> &str {
    if let [c] = name.as_bytes() {
        let c = c.to_ascii_lowercase();
        if let Some((_, full)) = COMPACT.iter().find(|(k, _)| *k == c) {
            return full;
        }
    }
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or(name, |k| k)
}

/// True when `a` and `b` name the same header field (compact forms and case folded).
pub fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || canonical_name(a).eq_ignore_ascii_case(canonical_name(b))
}

/// True when the header field's grammar is a comma-separated list.
pub fn is_list(name: &str) -> bool {
    let c = canonical_name(name);
    LIST.iter().any(|l| l.eq_ignore_ascii_case(c))
}

/// One header field line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name (see [`canonical_name`]).
    pub name: String,
    /// Value with folding replaced by a single space and outer whitespace trimmed.
    pub value: Vec<u8>,
}

/// All header fields of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    list: Vec<Header>,
}

/// A predicate matching stored fields (whose names are canonical) against `name`.
fn named(name: &str) -> impl Fn(&&Header) -> bool + '_ {
    let q = canonical_name(name);
    move |h| h.name.eq_ignore_ascii_case(q)
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header field at the end.
    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.list.push(Header {
            name: canonical_name(name).to_string(),
            value: value.into(),
        });
    }

    /// Inserts a header field before all others of any name (e.g. our own Via on top).
    pub fn push_front(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.list.insert(
            0,
            Header {
                name: canonical_name(name).to_string(),
                value: value.into(),
            },
        );
    }

    /// All header fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.list.iter()
    }

    /// Number of header field lines.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when there are no header fields.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The first field named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.list
            .iter()
            .find(named(name))
            .map(|h| h.value.as_slice())
    }

    /// Every line named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.list
            .iter()
            .filter(named(name))
            .map(|h| h.value.as_slice())
    }

    /// Number of lines named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Every value of a list header across all its lines, split at top-level commas. `None` when
    /// a line has an unterminated quote or `<`.
    pub fn values(&self, name: &str) -> Option<Vec<&[u8]>> {
        let mut out = Vec::new();
        let list = is_list(name);
        for v in self
            .list
            .iter()
            .filter(named(name))
            .map(|h| h.value.as_slice())
        {
            if list {
                out.extend(split_list(v)?);
            } else {
                out.push(v);
            }
        }
        Some(out)
    }

    /// Replaces the first field named `name` in place (keeping its position), removes any later
    /// ones, or appends when there is none.
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        let value = value.into();
        let q = canonical_name(name);
        match self
            .list
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(q))
        {
            Some(i) => {
                self.list[i].value = value;
                let mut seen = 0usize;
                self.list.retain(|h| {
                    if h.name.eq_ignore_ascii_case(q) {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.push(name, value),
        }
    }

    /// Removes every field named `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.list.len();
        let q = canonical_name(name);
        self.list.retain(|h| !h.name.eq_ignore_ascii_case(q));
        before - self.list.len()
    }

    /// Removes the first field named `name` and returns its value (e.g. popping the top Via).
    pub fn remove_first(&mut self, name: &str) -> Option<Vec<u8>> {
        let q = canonical_name(name);
        let i = self
            .list
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(q))?;
        Some(self.list.remove(i).value)
    }

    /// Writes every field as `Name: value\r\n`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for h in &self.list {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case() {
        assert_eq!(canonical_name("i"), "Call-ID");
        assert_eq!(canonical_name("M"), "Contact");
        assert_eq!(canonical_name("vIa"), "Via");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("C%6Fntact"), "C%6Fntact");
        assert!(same_name("l", "content-length"));
        assert!(!same_name("C%6Fntact", "Contact"));
    }

    #[test]
    fn order_preserving_edits() {
        let mut h = Headers::new();
        h.push("v", "SIP/2.0/TLS a");
        h.push("To", "<sip:b@c>");
        h.push("Via", "SIP/2.0/TLS b");
        h.push("i", "x");
        assert_eq!(h.count("via"), 2);
        h.set("VIA", "SIP/2.0/TLS z");
        assert_eq!(
            h.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
            ["Via", "To", "Call-ID"]
        );
        h.push_front("Via", "SIP/2.0/TLS top");
        assert_eq!(h.get("v"), Some(&b"SIP/2.0/TLS top"[..]));
        assert_eq!(h.remove_first("Via").unwrap(), b"SIP/2.0/TLS top");
        assert_eq!(h.remove("call-id"), 1);
        assert_eq!(h.get("Call-ID"), None);
        h.set("Max-Forwards", "70");
        assert_eq!(h.iter().last().unwrap().name, "Max-Forwards");
    }

    #[test]
    fn list_values_split_only_for_lists() {
        let mut h = Headers::new();
        h.push("Contact", r#""Doe, J" <sip:a@b;x=1,2>, <sip:c@d>"#);
        h.push("m", "<sip:e@f>");
        h.push("Date", "Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(h.values("Contact").unwrap().len(), 3);
        assert_eq!(h.values("Date").unwrap().len(), 1);
        h.push("Route", "<sip:unterminated");
        assert!(h.values("Route").is_none());
    }
}
