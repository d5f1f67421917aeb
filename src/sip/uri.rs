//! URIs in SIP: `sip:`/`sips:` (RFC 3261 19.1, with IPv6 references and escaped user, password,
//! parameters and headers), `tel:` (RFC 3966, kept mostly opaque) and any other absolute URI
//! (kept opaque, so a request with an unknown scheme can be answered 416 rather than 400).
//! Components are stored as received (still escaped); comparison follows RFC 3261 19.1.4.

use super::scan::{check_escaped, is_unreserved, unescape};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A host: a domain name, an IPv4 address or an IPv6 reference (`[...]` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A domain name (compared case-insensitively).
    Name(String),
    /// A dotted-quad IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address, written in brackets.
    V6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &[u8]) -> Option<Host> {
        if let Some(inner) = s.strip_prefix(b"[") {
            let inner = inner.strip_suffix(b"]")?;
            let text = std::str::from_utf8(inner).ok()?;
            // std accepts a zone-less textual IPv6 address, which is exactly RFC 3261 IPv6address.
            return text.parse::<Ipv6Addr>().ok().map(Host::V6);
        }
        if s.is_empty() || s.len() > 255 {
            return None;
        }
        if s.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
            let text = std::str::from_utf8(s).ok()?;
            return text.parse::<Ipv4Addr>().ok().map(Host::V4);
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]
        let body = s.strip_suffix(b".").unwrap_or(s);
        let labels: Vec<&[u8]> = body.split(|&b| b == b'.').collect();
        for l in &labels {
            let ok = !l.is_empty()
                && l.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && l.first() != Some(&b'-')
                && l.last() != Some(&b'-');
            if !ok {
                return None;
            }
        }
        if !labels.last()?.first()?.is_ascii_alphabetic() {
            return None;
        }
        Some(Host::Name(String::from_utf8(s.to_vec()).ok()?))
    }

    /// Case-insensitive host comparison.
    pub fn eq_host(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Parses `host [":" port]`; the port must be 1-5 digits and at most 65535.
pub fn parse_hostport(s: &[u8]) -> Option<(Host, Option<u16>)> {
    let (host, port) = if s.first() == Some(&b'[') {
        let close = s.iter().position(|&b| b == b']')?;
        let rest = &s[close + 1..];
        let port = match rest {
            [] => None,
            [b':', p @ ..] => Some(p),
            _ => return None,
        };
        (&s[..=close], port)
    } else {
        match s.iter().position(|&b| b == b':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v: u32 = p.iter().fold(0, |a, &b| a * 10 + u32::from(b - b'0'));
            Some(u16::try_from(v).ok()?)
        }
    };
    Some((Host::parse(host)?, port))
}

/// One `;name[=value]` URI parameter, still escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriParam {
    /// Parameter name (escaped form).
    pub name: String,
    /// Parameter value (escaped form), if any.
    pub value: Option<String>,
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// True for `sips:`.
    pub secure: bool,
    /// The user part, escaped as received.
    pub user: Option<String>,
    /// The password, escaped as received.
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The explicit port, if any.
    pub port: Option<u16>,
    /// URI parameters in order.
    pub params: Vec<UriParam>,
    /// URI headers (`?name=value&...`), escaped as received.
    pub headers: Vec<(String, String)>,
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

fn ascii(s: &[u8]) -> Option<String> {
    if s.is_ascii() {
        String::from_utf8(s.to_vec()).ok()
    } else {
        None
    }
}

impl SipUri {
    /// Parses the part after `sip:`/`sips:`.
    fn parse_rest(secure: bool, s: &[u8]) -> Option<SipUri> {
        // userinfo cannot contain an unescaped '@', nor can anything after it, so the first '@'
        // ends the userinfo even when the user part holds ';' or '?' (RFC 4475 semiuri, intmeth).
        let (userinfo, rest) = match s.iter().position(|&b| b == b'@') {
            Some(at) => (Some(&s[..at]), &s[at + 1..]),
            None => (None, s),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.iter().position(|&b| b == b':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !check_escaped(u, is_user_char) {
                    return None;
                }
                if let Some(p) = p {
                    if !check_escaped(p, is_password_char) {
                        return None;
                    }
                }
                (Some(ascii(u)?), p.map(ascii).map(Option::unwrap_or_default))
            }
        };
        let (before_headers, headers_part) = match rest.iter().position(|&b| b == b'?') {
            Some(q) => (&rest[..q], Some(&rest[q + 1..])),
            None => (rest, None),
        };
        let mut parts = before_headers.split(|&b| b == b';');
        let hostport = parts.next()?;
        let (host, port) = parse_hostport(hostport)?;
        let mut params = Vec::new();
        for p in parts {
            let (n, v) = match p.iter().position(|&b| b == b'=') {
                Some(e) => (&p[..e], Some(&p[e + 1..])),
                None => (p, None),
            };
            if n.is_empty() || !check_escaped(n, is_param_char) {
                return None;
            }
            if let Some(v) = v {
                if v.is_empty() || !check_escaped(v, is_param_char) {
                    return None;
                }
            }
            params.push(UriParam {
                name: ascii(n)?,
                value: v.and_then(ascii),
            });
        }
        let mut headers = Vec::new();
        if let Some(h) = headers_part {
            for kv in h.split(|&b| b == b'&') {
                let e = kv.iter().position(|&b| b == b'=')?;
                let (n, v) = (&kv[..e], &kv[e + 1..]);
                if n.is_empty() || !check_escaped(n, is_hnv_char) || !check_escaped(v, is_hnv_char)
                {
                    return None;
                }
                headers.push((ascii(n)?, ascii(v)?));
            }
        }
        Some(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The user part with escapes decoded (may contain any byte, including NUL).
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user.as_deref().map(|u| unescape(u.as_bytes()))
    }

    /// Finds a URI parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&UriParam> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// RFC 3261 19.1.4 URI comparison: user and password case-sensitive after unescaping, host
    /// case-insensitive, ports must agree, `user`/`ttl`/`method`/`maddr`/`transport` must agree
    /// when either side has them, other parameters only when both have them, and headers must
    /// be the same set.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        if self.secure != other.secure
            || self.user_unescaped() != other.user_unescaped()
            || self.password.as_deref().map(|p| unescape(p.as_bytes()))
                != other.password.as_deref().map(|p| unescape(p.as_bytes()))
            || !self.host.eq_host(&other.host)
            || self.port != other.port
        {
            return false;
        }
        let norm = |v: &Option<String>| {
            v.as_deref()
                .map(|s| unescape(s.as_bytes()).to_ascii_lowercase())
        };
        for p in &self.params {
            match other.param(&unescaped_name(&p.name)) {
                Some(q) => {
                    if norm(&p.value) != norm(&q.value) {
                        return false;
                    }
                }
                None => {
                    let n = unescaped_name(&p.name);
                    if ["user", "ttl", "method", "maddr", "transport"]
                        .iter()
                        .any(|k| n.eq_ignore_ascii_case(k))
                    {
                        return false;
                    }
                }
            }
        }
        for q in &other.params {
            let n = unescaped_name(&q.name);
            if self.param(&n).is_none()
                && ["user", "ttl", "method", "maddr", "transport"]
                    .iter()
                    .any(|k| n.eq_ignore_ascii_case(k))
            {
                return false;
            }
        }
        let hset = |h: &[(String, String)]| {
            let mut v: Vec<(Vec<u8>, Vec<u8>)> = h
                .iter()
                .map(|(n, v)| {
                    (
                        unescape(n.as_bytes()).to_ascii_lowercase(),
                        unescape(v.as_bytes()),
                    )
                })
                .collect();
            v.sort();
            v
        };
        hset(&self.headers) == hset(&other.headers)
    }
}

fn unescaped_name(n: &str) -> String {
    String::from_utf8_lossy(&unescape(n.as_bytes())).into_owned()
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for p in &self.params {
            write!(f, ";{}", p.name)?;
            if let Some(v) = &p.value {
                write!(f, "={v}")?;
            }
        }
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// Any URI that may appear in a Request-URI or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966); the subscriber part and parameters kept as received.
    Tel(String),
    /// Any other absolute URI, kept opaque: the scheme (lower-cased) and the rest.
    Other {
        /// The scheme, lower-cased.
        scheme: String,
        /// Everything after the colon.
        rest: String,
    },
}

fn is_uric(b: u8) -> bool {
    is_unreserved(b) || super::scan::is_reserved(b)
}

fn is_tel_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'+' | b'-'
                | b'.'
                | b'('
                | b')'
                | b'*'
                | b'#'
                | b';'
                | b'='
                | b'%'
                | b'_'
                | b'~'
                | b'!'
                | b'\''
                | b'&'
                | b'$'
                | b'['
                | b']'
                | b'/'
                | b':'
        )
}

impl Uri {
    /// Parses a URI; `None` if it is not a syntactically valid `sip:`, `sips:`, `tel:` or
    /// absolute URI. Schemes are case-insensitive.
    pub fn parse(s: &[u8]) -> Option<Uri> {
        let colon = s.iter().position(|&b| b == b':')?;
        let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
        let first = *scheme.first()?;
        if !first.is_ascii_alphabetic()
            || !scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return None;
        }
        let scheme = String::from_utf8(scheme.to_ascii_lowercase()).ok()?;
        match scheme.as_str() {
            "sip" => SipUri::parse_rest(false, rest).map(Uri::Sip),
            "sips" => SipUri::parse_rest(true, rest).map(Uri::Sip),
            "tel" => {
                if rest.is_empty()
                    || !rest.iter().all(|&b| is_tel_char(b))
                    || !check_escaped(rest, is_tel_char)
                {
                    return None;
                }
                Some(Uri::Tel(ascii(rest)?))
            }
            _ => {
                if rest.is_empty() || !check_escaped(rest, is_uric) {
                    return None;
                }
                Some(Uri::Other {
                    scheme,
                    rest: ascii(rest)?,
                })
            }
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The scheme, lower-cased.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    /// True when the text form contains `,`, `;` or `?`, which forces name-addr form (`<...>`)
    /// in From/To/Contact/Route (RFC 3261 20).
    pub fn needs_angle_brackets(&self) -> bool {
        self.to_string()
            .bytes()
            .any(|b| matches!(b, b',' | b';' | b'?'))
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => write!(f, "{u}"),
            Uri::Tel(t) => write!(f, "tel:{t}"),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s.as_bytes()) {
            Some(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn basic_and_ipv6() {
        let u =
            sip("sip:alice:secret@[2001:db8::10]:5061;transport=tls;lr?Subject=hi&Priority=urgent");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.params.len(), 2);
        assert_eq!(u.headers.len(), 2);
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@[2001:db8::10]:5061;transport=tls;lr?Subject=hi&Priority=urgent"
        );
        let v = sip("sips:[::1]");
        assert!(v.secure);
        assert_eq!(v.host, Host::V6(Ipv6Addr::LOCALHOST));
        assert!(Uri::parse(b"sip:[2001:db8::zz]").is_none());
        assert!(Uri::parse(b"sip:[2001:db8::1").is_none());
        assert!(Uri::parse(b"sip:user@[::1]x").is_none());
    }

    #[test]
    fn escapes_and_odd_users() {
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user_unescaped().unwrap(), b"sips:user@example.com");
        assert_eq!(u.host, Host::Name("example.net".into()));
        let s = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(s.user.as_deref(), Some("user;par=u%40example.net"));
        assert!(s.params.is_empty());
        let n = sip("sip:null-%00-null@example.com");
        assert_eq!(n.user_unescaped().unwrap(), b"null-\0-null");
        let w = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            w.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert!(Uri::parse(b"sip:bad%zzuser@example.com").is_none());
        assert!(Uri::parse(b"sip:user@exa mple.com").is_none());
    }

    #[test]
    fn other_schemes() {
        assert_eq!(
            Uri::parse(b"tel:+1-201-555-0123;phone-context=example.com")
                .unwrap()
                .scheme(),
            "tel"
        );
        assert_eq!(
            Uri::parse(b"soap.beep://192.0.2.103:3002")
                .unwrap()
                .scheme(),
            "soap.beep"
        );
        assert_eq!(
            Uri::parse(b"NobodyKnowsThisScheme:opaque")
                .unwrap()
                .scheme(),
            "nobodyknowsthisscheme"
        );
        assert!(Uri::parse(b"<sip:user@example.com>").is_none());
        assert!(Uri::parse(b"1sip:x").is_none());
        assert!(Uri::parse(b"sip:").is_none());
        assert_eq!(Uri::parse(b"SIP:a@B.com").unwrap().scheme(), "sip");
    }

    #[test]
    fn ports_and_hosts() {
        assert!(Uri::parse(b"sip:a@b.com:65536").is_none());
        assert!(Uri::parse(b"sip:a@b.com:").is_none());
        assert_eq!(
            sip("sip:a@192.0.2.1:5060").host,
            Host::V4(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert!(Uri::parse(b"sip:a@192.0.2.999").is_none());
        assert!(Uri::parse(b"sip:a@-bad.com").is_none());
    }

    #[test]
    fn comparison_rules() {
        // RFC 3261 19.1.4 examples.
        assert!(sip("sip:%61lice@atlanta.com;transport=TCP")
            .equivalent(&sip("sip:alice@AtLanTa.CoM;Transport=tcp")));
        assert!(sip("sip:carol@chicago.com").equivalent(&sip("sip:carol@chicago.com;newparam=5")));
        assert!(
            sip("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com").equivalent(
                &sip("sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com")
            )
        );
        assert!(!sip("SIP:ALICE@AtLanTa.CoM;Transport=udp")
            .equivalent(&sip("sip:alice@AtLanTa.CoM;Transport=UDP")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com:5060")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com;transport=udp")));
        assert!(!sip("sip:carol@chicago.com;security=on")
            .equivalent(&sip("sip:carol@chicago.com;security=off")));
        assert!(!sip("sip:carol@chicago.com")
            .equivalent(&sip("sip:carol@chicago.com?Subject=next%20meeting")));
    }
}
