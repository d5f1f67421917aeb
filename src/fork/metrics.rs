//! Names and descriptions of the fork's Prometheus metrics (`srtp_edge_fork_*`).
//!
//! The media worker never touches the registry: it only bumps per-fork atomics, and the fork
//! task adds the deltas to these metrics on its own 20 ms tick. Labels are the configured
//! backend name (bounded by the configuration) and a fixed set of reasons and close codes.

use metrics::{describe_counter, describe_gauge, Unit};

/// Forks with a task running (connected, connecting or waiting to reconnect).
pub const SESSIONS_ACTIVE: &str = "srtp_edge_fork_sessions_active";
/// 20 ms frames sent to backends, by backend.
pub const FRAMES_SENT: &str = "srtp_edge_fork_frames_sent_total";
/// WebSocket payload bytes sent to backends, by backend.
pub const BYTES_SENT: &str = "srtp_edge_fork_bytes_sent_total";
/// 20 ms frames of backend audio queued for playout, by backend.
pub const FRAMES_RECEIVED: &str = "srtp_edge_fork_frames_received_total";
/// Frames dropped, by backend and reason (`queue_full`: backend too slow, drop-oldest;
/// `playout_full`: backend sent more than the playout bound; `oversize`: packet too long).
pub const FRAMES_DROPPED: &str = "srtp_edge_fork_frames_dropped_total";
/// Connection attempts after a lost connection, by backend.
pub const RECONNECTS: &str = "srtp_edge_fork_reconnects_total";
/// Failures by backend and reason (`tls`, `timeout`, `http`, `connect`, `io`, `protocol`,
/// `malformed`, `ping_timeout`, `write_timeout`).
pub const ERRORS: &str = "srtp_edge_fork_errors_total";
/// WebSocket close frames received from backends, by backend and close code.
pub const BACKEND_CLOSES: &str = "srtp_edge_fork_backend_closes_total";

/// Registers the descriptions (called once with the process-wide recorder installed).
pub fn describe() {
    describe_gauge!(SESSIONS_ACTIVE, "Fork sessions with a running task");
    describe_counter!(FRAMES_SENT, "20 ms frames sent to fork backends");
    describe_counter!(
        BYTES_SENT,
        Unit::Bytes,
        "WebSocket payload bytes sent to fork backends"
    );
    describe_counter!(
        FRAMES_RECEIVED,
        "20 ms frames of backend audio queued for playout"
    );
    describe_counter!(FRAMES_DROPPED, "Fork frames dropped, by reason");
    describe_counter!(RECONNECTS, "Fork reconnection attempts");
    describe_counter!(ERRORS, "Fork failures, by reason");
    describe_counter!(
        BACKEND_CLOSES,
        "Close frames received from fork backends, by code"
    );
}
