//! The Prometheus catalogue: every metric the daemon records is named and described here, once
//! (all prefixed `srtp_edge_`), and rendered by the admin listener at `/metrics` with its
//! `# HELP` line. Recording sites use these constants, never a string literal; the protocol
//! cores record nothing themselves (they expose counters and events, and their IO shells record
//! them here). A new metric is one more line in [`catalogue!`] below.

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What kind of value a metric holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One catalogued metric: what `/metrics` shows as `# HELP` and `# TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its unit, when it has one.
    pub unit: Option<Unit>,
    /// The `# HELP` text: what is counted, and by which labels.
    pub help: &'static str,
}

/// Declares each metric's name constant (documented with its help text) and the [`CATALOGUE`]
/// listing them all, so that no metric can be recorded without a description.
macro_rules! catalogue {
    ($($id:ident: $kind:ident $(($unit:ident))? $name:literal, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: &str = $name;
        )*
        /// Every metric of the daemon, in the order `/metrics` readers find them documented.
        pub const CATALOGUE: &[Metric] = &[
            $(Metric {
                name: $id,
                kind: Kind::$kind,
                unit: catalogue!(@unit $($unit)?),
                help: $help,
            },)*
        ];
    };
    (@unit) => { None };
    (@unit $unit:ident) => { Some(Unit::$unit) };
}

catalogue! {
    // Process and admin listener.
    START_TIME: Gauge(Seconds) "srtp_edge_start_time_seconds",
        "Process start time, seconds since the Unix epoch";
    TLS_HANDSHAKES: Counter "srtp_edge_tls_handshakes_total",
        "TLS handshakes by listener (sip, sip_client, admin), version and result";
    ADMIN_REQUESTS: Counter "srtp_edge_admin_requests_total",
        "Admin HTTPS requests by path and status";
    CERT_RELOADS: Counter "srtp_edge_cert_reloads_total",
        "Certificate reloads (SIGHUP) by result";

    // SIP.
    SIP_REQUESTS: Counter "srtp_edge_sip_requests_total",
        "SIP requests received, by method";
    SIP_RESPONSES: Counter "srtp_edge_sip_responses_total",
        "SIP responses sent by the B2BUA and the transport, by status code";
    SIP_CALLS: Counter "srtp_edge_sip_calls_total",
        "B2BUA calls ended, by outcome (answered, rejected, cancelled, timeout, failed, plaintext)";
    SIP_CONN_REFUSED: Counter "srtp_edge_sip_connections_refused_total",
        "SIP connections refused or closed, by reason (connections, framing, buffer)";
    SIP_QUEUE_DROPS: Counter "srtp_edge_sip_send_queue_drops_total",
        "SIP messages dropped because a connection's send queue was full, by peer kind";
    SIP_ROUTE_FAILURES: Counter "srtp_edge_sip_route_failures_total",
        "Connections to SIP route targets that could not be opened, by reason (dns, connect, tls, timeout)";

    // ng control protocol.
    NG_REQUESTS: Counter "srtp_edge_ng_requests_total",
        "ng control requests by command and result";

    // Calls and media.
    CALLS_ACTIVE: Gauge "srtp_edge_calls_active",
        "Calls with media anchored here";
    CALLS_STARTED: Counter "srtp_edge_calls_started_total",
        "Calls whose media was set up";
    CALLS_TOTAL: Counter "srtp_edge_calls_total",
        "Calls ended, by how (deleted, timeout, failed)";
    NEGOTIATIONS_REFUSED: Counter "srtp_edge_negotiations_refused_total",
        "Offers and answers refused, by reason (plaintext, no common suite, ...)";
    PACKETS_RELAYED: Counter "srtp_edge_packets_relayed_total",
        "SRTP/SRTCP packets relayed, by direction (a_to_b: from the offerer's leg)";
    BYTES_RELAYED: Counter(Bytes) "srtp_edge_bytes_relayed_total",
        "Bytes relayed (as sent), by direction";
    PACKETS_DROPPED: Counter "srtp_edge_packets_dropped_total",
        "Packets dropped, by reason (auth, replay, stun, ...)";
    SEND_ERRORS: Counter "srtp_edge_media_send_errors_total",
        "Media datagrams the kernel refused to send";
    PORTS_IN_USE: Gauge "srtp_edge_media_port_pairs_in_use",
        "Media RTP/RTCP port pairs in use, by address family";
    PORTS_CAPACITY: Gauge "srtp_edge_media_port_pairs_capacity",
        "Media RTP/RTCP port pairs configured, by address family";
    WAIT_ERRORS: Counter "srtp_edge_media_wait_errors_total",
        "Failed waits of the media workers for their sockets (each followed by a back-off)";

    // DTLS-SRTP.
    DTLS_HANDSHAKES: Counter "srtp_edge_dtls_handshakes_total",
        "DTLS-SRTP handshakes by result (ok, fingerprint_mismatch, timeout, peer_alert, ...)";
    DTLS_REKEY_FAILURES: Counter "srtp_edge_dtls_rekey_failures_total",
        "DTLS-SRTP re-key handshakes that failed while the leg kept its keys, by reason";

    // AI fork.
    FORKS_STARTED: Counter "srtp_edge_fork_calls_total",
        "Calls forked to an AI backend, by backend";
    FORKS_STOPPED_CODEC: Counter "srtp_edge_fork_stopped_codec_total",
        "Forks stopped because the call changed to a codec the fork cannot carry, by backend";
    FORK_SESSIONS_ACTIVE: Gauge "srtp_edge_fork_sessions_active",
        "Fork sessions with a running task (connected, connecting or waiting to reconnect)";
    FORK_FRAMES_SENT: Counter "srtp_edge_fork_frames_sent_total",
        "20 ms frames sent to fork backends, by backend";
    FORK_BYTES_SENT: Counter(Bytes) "srtp_edge_fork_bytes_sent_total",
        "WebSocket payload bytes sent to fork backends, by backend";
    FORK_FRAMES_RECEIVED: Counter "srtp_edge_fork_frames_received_total",
        "20 ms frames of backend audio queued for playout, by backend";
    FORK_FRAMES_DROPPED: Counter "srtp_edge_fork_frames_dropped_total",
        "Fork frames dropped, by backend and reason (queue_full, playout_full, oversize)";
    FORK_RECONNECTS: Counter "srtp_edge_fork_reconnects_total",
        "Fork connection attempts after a lost connection, by backend";
    FORK_ERRORS: Counter "srtp_edge_fork_errors_total",
        "Fork failures by backend and reason (tls, timeout, http, connect, io, protocol, malformed, ping_timeout, write_timeout)";
    FORK_BACKEND_CLOSES: Counter "srtp_edge_fork_backend_closes_total",
        "WebSocket close frames received from fork backends, by backend and close code";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle used to render it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // If another recorder is already installed (tests embedding the library), rendering
            // still works and simply shows what this recorder saw.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Registers every catalogued description with the installed recorder.
fn describe() {
    for m in CATALOGUE {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_metric_is_described_and_named_once() {
        let mut names = HashSet::new();
        for m in CATALOGUE {
            assert!(names.insert(m.name), "{} is catalogued twice", m.name);
            assert!(m.name.starts_with("srtp_edge_"), "{}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
            assert!(m.help.len() >= 10, "{} has no real description", m.name);
            assert!(!m.help.contains('\n'), "{}", m.name);
        }
    }

    #[test]
    fn metrics_page_has_a_help_line_for_every_catalogued_metric() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            for m in CATALOGUE {
                match m.kind {
                    Kind::Counter => metrics::counter!(m.name).increment(1),
                    Kind::Gauge => metrics::gauge!(m.name).set(1.0),
                }
            }
        });
        let page = handle.render();
        for m in CATALOGUE {
            let help = format!("# HELP {} {}", m.name, m.help);
            assert!(page.contains(&help), "no `{help}` in:\n{page}");
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let ty = format!("# TYPE {} {kind}", m.name);
            assert!(page.contains(&ty), "no `{ty}`");
        }
    }
}
