//! Log output: `tracing` with a human or JSON format, level from the config (or `SRTP_EDGE_LOG`),
//! and redaction switched on before the first line is written.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Library warnings any peer can trigger on every TLS handshake (rustls warns about each
/// IP-address SNI, which stunnel and many SBCs send: 13 000 lines in one bench run), kept to
/// errors so a peer cannot flood the log; failed handshakes are counted in metrics instead.
const PEER_FLOOD_DIRECTIVES: &[&str] = &["rustls::msgs::handshake=error"];

/// Installs the global subscriber. Lines go to stderr, which journald captures under systemd
/// (timestamps are then left to journald).
pub fn init(cfg: &LogConfig) {
    crate::redact::set_enabled(cfg.redact);
    let directive = std::env::var("SRTP_EDGE_LOG").unwrap_or_else(|_| cfg.level.clone());
    let mut filter = EnvFilter::builder()
        .parse(&directive)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Whatever the level, libraries that would log audio frames or secrets stay quiet.
    for d in crate::fork::LOG_DIRECTIVES
        .iter()
        .chain(PEER_FLOOD_DIRECTIVES)
    {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = match (cfg.format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Human, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Human, false) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
