//! The Prometheus registry: one recorder for the process, every metric name described once here
//! (all prefixed `srtp_edge_`), rendered by the admin listener at `/metrics`.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// TLS handshakes completed or failed, by listener, version and result.
pub const TLS_HANDSHAKES: &str = "srtp_edge_tls_handshakes_total";
/// Admin HTTP requests by path class and status code.
pub const ADMIN_REQUESTS: &str = "srtp_edge_admin_requests_total";
/// Certificate reloads by result.
pub const CERT_RELOADS: &str = "srtp_edge_cert_reloads_total";
/// Seconds since the Unix epoch at which the process started.
pub const START_TIME: &str = "srtp_edge_start_time_seconds";

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

fn describe() {
    describe_counter!(
        TLS_HANDSHAKES,
        "TLS handshakes by listener, version and result"
    );
    describe_counter!(ADMIN_REQUESTS, "Admin HTTPS requests by path and status");
    describe_counter!(CERT_RELOADS, "Certificate reloads (SIGHUP) by result");
    describe_gauge!(START_TIME, Unit::Seconds, "Process start time (Unix epoch)");
    crate::fork::metrics::describe();
}
