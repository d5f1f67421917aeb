//! The `[[fork.backends]]` configuration: named WSS backends that routes and ng commands refer to.
//!
//! Only backends named here can receive audio; the control plane names a backend, never a URL.
//! Validation follows the crate's style: every problem names its dotted key
//! (`fork.backends[0].url`) and all problems are reported together. Secrets stay in their files:
//! the validated config holds paths, and the files are read when the backend is built.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};

use super::protocol::Protocol;
use crate::config::ConfigError;

/// One backend, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkBackendConfig {
    /// The name routes and ng `fork` keys use.
    pub name: String,
    /// The `wss://` URL (never `ws://`).
    pub url: String,
    /// Wire dialect (and the L16 sample rate).
    pub protocol: Protocol,
    /// Roots (PEM) that verify the backend; None: `tls.ca_file`, else the system roots.
    pub ca_file: Option<PathBuf>,
    /// File holding the token sent as `Authorization: Bearer`.
    pub bearer_token_file: Option<PathBuf>,
    /// File holding the secret that signs `X-Twilio-Signature`.
    pub twilio_secret_file: Option<PathBuf>,
    /// Extra HTTP headers on the WebSocket upgrade request (e.g. a tenant id).
    pub headers: BTreeMap<String, String>,
    /// Send caller and called numbers unredacted in `start` / the preamble (default false).
    pub send_numbers: bool,
    /// Give up a connection attempt after this many seconds.
    pub connect_timeout_secs: u32,
    /// Media waiting for the backend, per call, in milliseconds (drop-oldest beyond it).
    pub queue_ms: u32,
    /// Backend audio waiting to be played, per call, in seconds (newer audio dropped beyond it).
    pub max_playout_secs: u32,
}

/// The `[fork]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForkConfig {
    /// Backends by declaration order; names are unique.
    pub backends: Vec<ForkBackendConfig>,
}

impl ForkConfig {
    /// The backend called `name`, if configured (an unknown name is an error for the caller).
    pub fn backend(&self, name: &str) -> Option<&ForkBackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// The file format of `[fork]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawFork {
    backends: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: String,
    url: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    sample_rate: Option<i64>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<String>,
    #[serde(default)]
    twilio_secret_file: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    send_numbers: bool,
    #[serde(default)]
    connect_timeout_secs: Option<i64>,
    #[serde(default)]
    queue_ms: Option<i64>,
    #[serde(default)]
    max_playout_secs: Option<i64>,
}

fn err(errs: &mut Vec<ConfigError>, key: String, reason: impl Into<String>) {
    errs.push(ConfigError {
        key,
        reason: reason.into(),
    });
}

fn secret_file(errs: &mut Vec<ConfigError>, key: String, raw: Option<String>) -> Option<PathBuf> {
    let p = PathBuf::from(raw.filter(|s| !s.is_empty())?);
    match std::fs::read_to_string(&p) {
        Ok(s) if s.trim().is_empty() => err(errs, key, format!("{} is empty", p.display())),
        Ok(_) => {}
        Err(e) => err(errs, key, format!("cannot read {}: {e}", p.display())),
    }
    Some(p)
}

fn ranged(
    errs: &mut Vec<ConfigError>,
    key: String,
    v: Option<i64>,
    def: u32,
    lo: u32,
    hi: u32,
) -> u32 {
    match v {
        None => def,
        Some(v) if v >= i64::from(lo) && v <= i64::from(hi) => v as u32,
        Some(v) => {
            err(errs, key, format!("{v} is out of range ({lo}-{hi})"));
            def
        }
    }
}

/// Checks a backend URL: `wss://` with a host, no credentials in it.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("wss") => {}
        Some("ws") => {
            return Err("ws:// is not allowed: fork audio leaves only over TLS (use wss://)".into())
        }
        _ => return Err(format!("{url:?} must start with wss://")),
    }
    let auth = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if auth.as_str().contains('@') {
        return Err("credentials in the URL are not allowed (use bearer_token_file)".into());
    }
    if auth.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// Validates `[fork]`, appending one error per problem.
pub(crate) fn validate(raw: RawFork, errs: &mut Vec<ConfigError>) -> ForkConfig {
    let mut backends: Vec<ForkBackendConfig> = Vec::new();
    for (i, b) in raw.backends.into_iter().enumerate() {
        let k = |f: &str| format!("fork.backends[{i}].{f}");
        if b.name.is_empty()
            || !b
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            err(
                errs,
                k("name"),
                format!(
                    "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                    b.name
                ),
            );
        } else if backends.iter().any(|o| o.name == b.name) {
            err(errs, k("name"), format!("{:?} is defined twice", b.name));
        }
        if let Err(r) = check_url(&b.url) {
            err(errs, k("url"), r);
        }
        let protocol = match b.protocol.as_deref().unwrap_or("twilio") {
            "twilio" => {
                if b.sample_rate.is_some_and(|r| r != 8000) {
                    err(
                        errs,
                        k("sample_rate"),
                        "twilio streams are 8000 Hz μ-law; sample_rate applies to l16 only",
                    );
                }
                Protocol::Twilio
            }
            "l16" => match b.sample_rate.unwrap_or(16000) {
                r @ (8000 | 16000 | 24000) => Protocol::L16 {
                    sample_rate: r as u32,
                },
                r => {
                    err(
                        errs,
                        k("sample_rate"),
                        format!("{r} is not supported (8000, 16000 or 24000)"),
                    );
                    Protocol::L16 { sample_rate: 16000 }
                }
            },
            other => {
                err(
                    errs,
                    k("protocol"),
                    format!("{other:?} is not a fork protocol (use \"twilio\" or \"l16\")"),
                );
                Protocol::Twilio
            }
        };
        let ca_file = b.ca_file.filter(|s| !s.is_empty()).map(PathBuf::from);
        if let Some(ca) = &ca_file {
            if let Err(e) = crate::tls::certs::load_chain(ca) {
                err(errs, k("ca_file"), e);
            }
        }
        for (h, v) in &b.headers {
            let key = format!("fork.backends[{i}].headers.{h}");
            if HeaderName::try_from(h.as_str()).is_err() {
                err(errs, key, "not a valid HTTP header name");
            } else if HeaderValue::try_from(v.as_str()).is_err() {
                err(errs, key, "not a valid HTTP header value");
            } else if h.eq_ignore_ascii_case("authorization")
                || h.eq_ignore_ascii_case("x-twilio-signature")
            {
                err(
                    errs,
                    key,
                    "set by srtp-edge (use bearer_token_file / twilio_secret_file)",
                );
            }
        }
        backends.push(ForkBackendConfig {
            bearer_token_file: secret_file(errs, k("bearer_token_file"), b.bearer_token_file),
            twilio_secret_file: secret_file(errs, k("twilio_secret_file"), b.twilio_secret_file),
            connect_timeout_secs: ranged(
                errs,
                k("connect_timeout_secs"),
                b.connect_timeout_secs,
                5,
                1,
                60,
            ),
            queue_ms: ranged(errs, k("queue_ms"), b.queue_ms, 2000, 100, 10_000),
            max_playout_secs: ranged(errs, k("max_playout_secs"), b.max_playout_secs, 60, 1, 600),
            name: b.name,
            url: b.url,
            protocol,
            ca_file,
            headers: b.headers,
            send_numbers: b.send_numbers,
        });
    }
    ForkConfig { backends }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    fn fork(text: &str) -> Result<ForkConfig, Vec<(String, String)>> {
        Config::from_toml_str(text)
            .map(|c| c.fork)
            .map_err(|e| e.0.into_iter().map(|e| (e.key, e.reason)).collect())
    }

    fn keys(text: &str) -> Vec<String> {
        fork(text).unwrap_err().into_iter().map(|e| e.0).collect()
    }

    #[test]
    fn the_issue_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        let sec = dir.path().join("secret");
        std::fs::write(&tok, "t0k\n").unwrap();
        std::fs::write(&sec, "s3cret").unwrap();
        let text = format!(
            "[[fork.backends]]\nname = \"ai\"\nurl = \"wss://127.0.0.1:8765/stream\"\n\
             protocol = \"twilio\"\nbearer_token_file = {tok:?}\ntwilio_secret_file = {sec:?}\n\
             [[fork.backends]]\nname = \"l16\"\nurl = \"wss://ai.example/x\"\nprotocol = \"l16\"\n\
             sample_rate = 24000\nheaders = {{ \"X-Tenant\" = \"acme\" }}\n"
        );
        let f = fork(&text).unwrap();
        let ai = f.backend("ai").unwrap();
        assert_eq!(ai.protocol, Protocol::Twilio);
        assert_eq!(ai.bearer_token_file.as_deref(), Some(tok.as_path()));
        assert_eq!(
            (ai.queue_ms, ai.max_playout_secs, ai.connect_timeout_secs),
            (2000, 60, 5)
        );
        assert!(!ai.send_numbers);
        let l = f.backend("l16").unwrap();
        assert_eq!(l.protocol, Protocol::L16 { sample_rate: 24000 });
        assert_eq!(l.headers.get("X-Tenant").map(String::as_str), Some("acme"));
        assert!(f.backend("nope").is_none());
        assert!(Config::embedded_default().fork.backends.is_empty());
    }

    #[test]
    fn plain_ws_and_bad_urls_are_refused() {
        let e = fork("[[fork.backends]]\nname = \"a\"\nurl = \"ws://127.0.0.1/x\"\n").unwrap_err();
        assert_eq!(e[0].0, "fork.backends[0].url");
        assert!(e[0].1.contains("ws:// is not allowed"), "{}", e[0].1);
        for url in ["https://h/x", "wss://user:pw@h/x", "wss:///x", "not a url"] {
            assert_eq!(
                keys(&format!("[[fork.backends]]\nname = \"a\"\nurl = {url:?}\n")),
                vec!["fork.backends[0].url"],
                "{url}"
            );
        }
    }

    #[test]
    fn every_key_is_checked() {
        let base = "[[fork.backends]]\nname = \"a\"\nurl = \"wss://h/x\"\n";
        assert_eq!(
            keys(&format!("{base}protocol = \"sip\"\n")),
            vec!["fork.backends[0].protocol"]
        );
        assert_eq!(
            keys(&format!("{base}protocol = \"l16\"\nsample_rate = 44100\n")),
            vec!["fork.backends[0].sample_rate"]
        );
        assert_eq!(
            keys(&format!("{base}sample_rate = 16000\n")),
            vec!["fork.backends[0].sample_rate"]
        );
        assert_eq!(
            keys(&format!("{base}bearer_token_file = \"/nonexistent/t\"\n")),
            vec!["fork.backends[0].bearer_token_file"]
        );
        assert_eq!(
            keys(&format!("{base}ca_file = \"/nonexistent/ca.pem\"\n")),
            vec!["fork.backends[0].ca_file"]
        );
        assert_eq!(
            keys(&format!("{base}queue_ms = 5\n")),
            vec!["fork.backends[0].queue_ms"]
        );
        assert_eq!(
            keys(&format!(
                "{base}headers = {{ \"Authorization\" = \"x\" }}\n"
            )),
            vec!["fork.backends[0].headers.Authorization"]
        );
        assert_eq!(
            keys(&format!("{base}bogus = 1\n")),
            vec!["fork.backends[0].bogus"]
        );
        assert_eq!(
            keys(&format!("{base}{base}")),
            vec!["fork.backends[1].name"]
        );
        assert_eq!(
            keys("[[fork.backends]]\nname = \"a b\"\nurl = \"wss://h/\"\n"),
            vec!["fork.backends[0].name"]
        );
        assert_eq!(keys("[fork]\nbackend = []\n"), vec!["fork.backend"]);
    }
}
