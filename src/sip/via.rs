//! One Via value (RFC 3261 20.42): sent-protocol (whitespace allowed around the slashes, RFC 4475
//! wsinv), sent-by with IPv6 references, and the parameters the transaction layer and response
//! routing need (branch, received, rport, maddr, ttl).

use super::scan::{find_param, is_token_str, parse_params, skip_wsp, trim, write_params, Param};
use super::uri::{parse_hostport, Host};

/// A single Via header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name, `SIP` in practice.
    pub protocol: String,
    /// Protocol version, `2.0` in practice.
    pub version: String,
    /// Transport token (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, ... or an unknown token).
    pub transport: String,
    /// Host of sent-by.
    pub host: Host,
    /// Port of sent-by.
    pub port: Option<u16>,
    /// Parameters in order.
    pub params: Vec<Param>,
}

/// Reads a token at `i`; returns it and the index after it.
fn token_at(s: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let end = s[i.min(s.len())..]
        .iter()
        .position(|&b| !super::scan::is_token(b))
        .map_or(s.len(), |p| i + p);
    let t = s.get(i..end)?;
    if t.is_empty() {
        None
    } else {
        Some((t, end))
    }
}

fn expect_slash(s: &[u8], i: usize) -> Option<usize> {
    let i = skip_wsp(s, i);
    if s.get(i) != Some(&b'/') {
        return None;
    }
    Some(skip_wsp(s, i + 1))
}

fn ascii(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

impl Via {
    /// Parses one via-parm (already split from its list).
    pub fn parse(s: &[u8]) -> Option<Via> {
        let s = trim(s);
        let (head, params) = match s.iter().position(|&b| b == b';') {
            Some(i) => (trim(&s[..i]), parse_params(&s[i + 1..])?),
            None => (s, Vec::new()),
        };
        let (protocol, i) = token_at(head, 0)?;
        let i = expect_slash(head, i)?;
        let (version, i) = token_at(head, i)?;
        let i = expect_slash(head, i)?;
        let (transport, i) = token_at(head, i)?;
        let j = skip_wsp(head, i);
        if j == i {
            return None; // LWS is required between sent-protocol and sent-by
        }
        let sent_by = &head[j..];
        // COLON = SWS ":" SWS: allow whitespace around the port colon, nowhere else.
        let colon = match sent_by.iter().rposition(|&b| b == b']') {
            Some(close) => sent_by[close..]
                .iter()
                .position(|&b| b == b':')
                .map(|p| close + p),
            None => sent_by.iter().position(|&b| b == b':'),
        };
        let (host, port) = match colon {
            Some(c) => {
                let mut hp = trim(&sent_by[..c]).to_vec();
                hp.push(b':');
                hp.extend_from_slice(trim(&sent_by[c + 1..]));
                parse_hostport(&hp)?
            }
            None => parse_hostport(sent_by)?,
        };
        let v = Via {
            protocol: ascii(protocol),
            version: ascii(version),
            transport: ascii(transport),
            host,
            port,
            params,
        };
        v.check_params().then_some(v)
    }

    fn check_params(&self) -> bool {
        if let Some(p) = find_param(&self.params, "ttl") {
            match p
                .value
                .as_deref()
                .and_then(|v| super::scan::parse_u32(v, 3))
            {
                Some(t) if t <= 255 => {}
                _ => return false,
            }
        }
        if let Some(p) = find_param(&self.params, "received") {
            // RFC 3261 writes a bare IPv6address here, RFC 5118 the bracketed reference.
            let bare_v6 = p.value.as_deref().and_then(|v| {
                std::str::from_utf8(v)
                    .ok()?
                    .parse::<std::net::Ipv6Addr>()
                    .ok()
            });
            match p.value.as_deref().and_then(Host::parse) {
                Some(Host::V4(_) | Host::V6(_)) => {}
                _ if bare_v6.is_some() => {}
                _ => return false,
            }
        }
        if let Some(p) = find_param(&self.params, "maddr") {
            if p.value.as_deref().and_then(Host::parse).is_none() {
                return false;
            }
        }
        if let Some(p) = find_param(&self.params, "rport") {
            if let Some(v) = &p.value {
                match super::scan::parse_u32(v, 5) {
                    Some(n) if n <= 65535 => {}
                    _ => return false,
                }
            }
        }
        if let Some(p) = find_param(&self.params, "branch") {
            match &p.value {
                Some(v) if is_token_str(v) => {}
                _ => return false,
            }
        }
        true
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&[u8]> {
        find_param(&self.params, "branch").and_then(|p| p.value.as_deref())
    }

    /// True when the branch carries the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(b"z9hG4bK"))
    }

    /// A parameter's raw value (`Some(None)` for a flag such as `rport`).
    pub fn param(&self, name: &str) -> Option<Option<&[u8]>> {
        find_param(&self.params, name).map(|p| p.value.as_deref())
    }

    /// Sets or replaces a parameter (e.g. `received`, `rport=`).
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

    /// Serializes in canonical form (`SIP/2.0/TLS host:port;params`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.host
        )
        .into_bytes();
        if let Some(p) = self.port {
            out.extend_from_slice(format!(":{p}").as_bytes());
        }
        write_params(&mut out, &self.params);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_protocol() {
        let v =
            Via::parse(b"SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, Host::Name("spindle.example.com".into()));
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
        assert!(v.has_rfc3261_branch());
        assert_eq!(Via::parse(&v.to_bytes()).unwrap(), v);
    }

    #[test]
    fn ipv6_sent_by_and_params() {
        let v = Via::parse(b"SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKx;rport;received=2001:db8::1;ttl=16;maddr=224.2.0.1").unwrap();
        assert_eq!(v.host, Host::V6("2001:db8::9".parse().unwrap()));
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.param("rport"), Some(None));
        let w = Via::parse(b"SIP/2.0/TLS [2001:db8::9];received=[2001:db8::1]").unwrap();
        assert_eq!(w.port, None);
        assert_eq!(Via::parse(&v.to_bytes()).unwrap(), v);
        assert!(Via::parse(b"SIP/2.0/UDP host : 5060").unwrap().port == Some(5060));
    }

    #[test]
    fn rejects() {
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP").is_none());
        assert!(Via::parse(b"SIP/2.0/UDPhost").is_none());
        assert!(Via::parse(b"SIP/2.0 host").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP h;ttl=256").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP h;received=h.example.com").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP h;rport=70000").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP h;branch").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP [::1").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP h:99999").is_none());
    }
}
