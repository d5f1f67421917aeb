//! `(name-addr / addr-spec) *(SEMI generic-param)`: the value shape of From, To, Contact, Route,
//! Record-Route and Reply-To. Display names may be a quoted string (with escapes) or a run of
//! tokens; an addr-spec without `<>` may not hold `,`, `;` or `?` (RFC 4475 regbadct), and no
//! whitespace is allowed inside `<>` (badaspec).

use super::scan::{
    find_param, is_token, parse_params, quoted_end, trim, unquote, write_params, Param,
};
use super::uri::Uri;

/// One address with its header parameters (`tag`, `expires`, `q`, `lr`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as received (quoted form keeps its quotes and escapes).
    pub display: Option<Vec<u8>>,
    /// The address.
    pub uri: Uri,
    /// True when the address was (or must be) written in `<>`.
    pub angle: bool,
    /// Header parameters after the address.
    pub params: Vec<Param>,
}

fn is_display_tokens(s: &[u8]) -> bool {
    // *(token LWS): tokens separated by whitespace.
    s.split(|&b| b == b' ' || b == b'\t')
        .all(|t| t.iter().all(|&b| is_token(b)))
}

impl NameAddr {
    /// Parses one element (already split from a list where the header is a list).
    pub fn parse(s: &[u8]) -> Option<NameAddr> {
        let s = trim(s);
        if s.is_empty() {
            return None;
        }
        let (display, after_display) = if s[0] == b'"' {
            let q = quoted_end(s, 0)?;
            let rest = trim(&s[q..]);
            if rest.first() != Some(&b'<') {
                return None;
            }
            (Some(s[..q].to_vec()), rest)
        } else {
            match s.iter().position(|&b| b == b'<') {
                Some(lt) => {
                    let d = trim(&s[..lt]);
                    if !is_display_tokens(d) {
                        return None;
                    }
                    (if d.is_empty() { None } else { Some(d.to_vec()) }, &s[lt..])
                }
                None => (None, s),
            }
        };
        if after_display.first() == Some(&b'<') {
            let gt = after_display.iter().position(|&b| b == b'>')?;
            let uri = Uri::parse(&after_display[1..gt])?;
            let rest = trim(&after_display[gt + 1..]);
            let params = match rest {
                [] => Vec::new(),
                [b';', tail @ ..] => parse_params(tail)?,
                _ => return None,
            };
            return Some(NameAddr {
                display,
                uri,
                angle: true,
                params,
            });
        }
        // addr-spec form: the URI ends at the first ';' and may not hold ',' or '?'.
        let (uri_part, params) = match after_display.iter().position(|&b| b == b';') {
            Some(i) => (
                trim(&after_display[..i]),
                parse_params(&after_display[i + 1..])?,
            ),
            None => (after_display, Vec::new()),
        };
        if uri_part
            .iter()
            .any(|&b| matches!(b, b',' | b'?' | b' ' | b'\t'))
        {
            return None;
        }
        let uri = Uri::parse(uri_part)?;
        Some(NameAddr {
            display: None,
            uri,
            angle: false,
            params,
        })
    }

    /// A bare address in `<>` with no display name or parameters.
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display: None,
            uri,
            angle: true,
            params: Vec::new(),
        }
    }

    /// The display name with quotes and escapes removed.
    pub fn display_text(&self) -> Option<Vec<u8>> {
        self.display.as_ref().map(|d| {
            if d.first() == Some(&b'"') {
                unquote(d)
            } else {
                d.clone()
            }
        })
    }

    /// A header parameter's raw value (`Some(None)` for a flag such as `lr`).
    pub fn param(&self, name: &str) -> Option<Option<&[u8]>> {
        find_param(&self.params, name).map(|p| p.value.as_deref())
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&[u8]> {
        self.param("tag").flatten()
    }

    /// Sets or replaces a parameter (e.g. adding our To tag).
    pub fn set_param(&mut self, name: &str, value: Option<&[u8]>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value.map(<[u8]>::to_vec),
            None => self.params.push(Param::new(name, value)),
        }
    }

    /// Serializes; `<>` is used whenever there is a display name, it was received that way, or
    /// the URI contains `,`, `;` or `?`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let angle = self.angle || self.display.is_some() || self.uri.needs_angle_brackets();
        if let Some(d) = &self.display {
            out.extend_from_slice(d);
            out.push(b' ');
        }
        if angle {
            out.push(b'<');
        }
        out.extend_from_slice(self.uri.to_string().as_bytes());
        if angle {
            out.push(b'>');
        }
        write_params(&mut out, &self.params);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Host;

    #[test]
    fn forms() {
        let a = NameAddr::parse(
            br#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.display_text().unwrap(), br#"J Rosenberg \""#);
        assert_eq!(a.tag(), Some(&b"98asjd8"[..]));
        let b = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(b.display.as_deref(), Some(&b"caller"[..]));
        let c = NameAddr::parse(b"sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(c.uri.as_sip().unwrap().params.is_empty());
        assert_eq!(c.param("unknownparam"), Some(None));
        let d = NameAddr::parse(b"<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert_eq!(d.uri.as_sip().unwrap().params.len(), 1);
        assert!(d.params.is_empty());
    }

    #[test]
    fn ipv6_contact() {
        let a =
            NameAddr::parse(b"<sip:alice@[2001:db8::5]:5061;transport=tls>;expires=60").unwrap();
        assert_eq!(
            a.uri.as_sip().unwrap().host,
            Host::V6("2001:db8::5".parse().unwrap())
        );
        assert_eq!(a.param("expires"), Some(Some(&b"60"[..])));
        assert_eq!(NameAddr::parse(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn rejects() {
        assert!(NameAddr::parse(br#""Mr. J. User <sip:j.user@example.com>"#).is_none());
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_none());
        assert!(NameAddr::parse(b"\"Watson, Thomas\" < sip:t.watson@example.org >").is_none());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_none());
        assert!(NameAddr::parse(b"\"Joe\" <sip:joe@example.org>;;;;").is_none());
        assert!(NameAddr::parse(b"<sip:joe@example.org> junk").is_none());
        assert!(NameAddr::parse(b"").is_none());
        assert!(NameAddr::parse(b"<http://www.example.com>;tag=3234233").is_some());
    }

    #[test]
    fn round_trip_adds_brackets_when_needed() {
        let mut a = NameAddr::parse(b"sip:bob@example.com").unwrap();
        a.set_param("tag", Some(b"abc"));
        assert_eq!(a.to_bytes(), b"sip:bob@example.com;tag=abc");
        let b = NameAddr::parse(b"<sip:bob@example.com;lr>").unwrap();
        assert_eq!(b.to_bytes(), b"<sip:bob@example.com;lr>");
    }
}
