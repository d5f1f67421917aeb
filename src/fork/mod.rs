//! The AI audio fork: call audio to a WSS backend (Twilio Media Streams or L16), and the
//! backend's audio back into the call.
//!
//! Layering follows the rest of the crate: [`codec`], [`resample`], [`protocol`], [`playout`] and
//! [`session`] are pure and tested message by message; [`client`] is the IO shell (one tokio task
//! per fork, TLS 1.3 WebSocket) that the media worker talks to through lock-free bounded queues,
//! so the media path never waits for a backend.

pub mod client;
pub mod codec;
pub mod config;
pub mod playout;
pub mod protocol;
pub mod resample;
pub mod session;

pub use client::{spawn_fork, Backend, CallInfo, ForkEvent, ForkHandle, ForkMode, ForkStats};
pub use codec::G711;
pub use protocol::{Protocol, Track};

/// `tracing` filter directives the logging setup must always append, whatever `log.level` says:
/// tungstenite logs whole frames (audio) and the upgrade request (bearer token, signature) at
/// trace level, and decrypted audio and secrets never reach a log.
pub const LOG_DIRECTIVES: &[&str] = &["tungstenite=info", "tokio_tungstenite=info"];

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tracing_subscriber::prelude::*;

    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn log_directives_silence_tungstenite_frames_even_at_trace() {
        let mut f = tracing_subscriber::EnvFilter::builder()
            .parse("trace")
            .unwrap();
        for d in super::LOG_DIRECTIVES {
            f = f.add_directive(d.parse().unwrap());
        }
        let n = Arc::new(AtomicUsize::new(0));
        let sub = tracing_subscriber::registry().with(Count(n.clone()).with_filter(f));
        tracing::subscriber::with_default(sub, || {
            tracing::trace!(target: "tungstenite::protocol", "Received message <audio>");
            tracing::debug!(target: "tokio_tungstenite::compat", "frame");
            tracing::trace!(target: "srtp_edge::fork", "kept");
            tracing::info!(target: "tungstenite::protocol", "kept");
        });
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
