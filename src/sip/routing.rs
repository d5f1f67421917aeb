//! Which trunk a request comes from and which route takes a call: pure lookups over the
//! validated `[[trunks]]` and `[[routes]]` configuration, kept apart so the B2BUA state machine
//! and the transport can share them and tests can pin the matching order.

use std::net::IpAddr;

use crate::config::{RouteConfig, TrunkConfig};

use super::uri::Uri;

/// The first trunk whose source prefixes hold `ip`, by index.
pub fn trunk_for(trunks: &[TrunkConfig], ip: IpAddr) -> Option<usize> {
    trunks
        .iter()
        .position(|t| t.from.iter().any(|n| n.contains(ip)))
}

/// The first route, by index, whose conditions (trunk name, Request-URI user prefix, host) all
/// hold for a call from `trunk` to `ruri`.
pub fn route_for(routes: &[RouteConfig], trunk: &str, ruri: &Uri) -> Option<usize> {
    let (user, host) = match ruri {
        Uri::Sip(u) => (u.user.clone().unwrap_or_default(), u.host.to_string()),
        Uri::Tel(t) => (t.clone(), String::new()),
        Uri::Other { .. } => return None,
    };
    routes.iter().position(|r| {
        r.trunk.as_deref().is_none_or(|t| t == trunk)
            && user.starts_with(&r.user_prefix)
            && r.host
                .as_deref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&host))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn first_matching_route_wins() {
        let c = Config::from_toml_str(
            "[[trunks]]\nname = \"a\"\nfrom = [\"10.0.0.0/8\"]\n[[trunks]]\nname = \"b\"\nfrom = [\"127.0.0.1\"]\n\
             [[routes]]\ntrunk = \"a\"\nuser_prefix = \"+49\"\ntarget = \"sips:10.1.1.1\"\n\
             [[routes]]\nhost = \"edge.example\"\ntarget = \"sips:10.1.1.2\"\n\
             [[routes]]\ntrunk = \"b\"\ntarget = \"sips:10.1.1.3\"\n",
        )
        .unwrap();
        assert_eq!(trunk_for(&c.trunks, "10.2.3.4".parse().unwrap()), Some(0));
        assert_eq!(trunk_for(&c.trunks, "127.0.0.1".parse().unwrap()), Some(1));
        assert_eq!(trunk_for(&c.trunks, "127.0.0.2".parse().unwrap()), None);
        let u = |s: &str| Uri::parse(s.as_bytes()).unwrap();
        assert_eq!(route_for(&c.routes, "a", &u("sip:+4930@x")), Some(0));
        assert_eq!(route_for(&c.routes, "a", &u("sip:+4430@x")), None);
        assert_eq!(
            route_for(&c.routes, "a", &u("sip:+4430@EDGE.example")),
            Some(1)
        );
        assert_eq!(route_for(&c.routes, "b", &u("sip:+4930@x")), Some(2));
        assert_eq!(route_for(&c.routes, "b", &u("tel:+4930")), Some(2));
    }
}
