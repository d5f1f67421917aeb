//! Encrypted call recording: both tracks of a call, decrypted in memory by the relay, sealed with
//! AES-256-GCM (STREAM construction) under a fresh per-recording data key before any byte reaches
//! the disk; the data key is wrapped by a KEK of the class "recordings" for the call's tenant
//! ([`crate::keys`]). The format is specified in `docs/recording-format.md`.

pub mod config;
pub mod format;
pub mod recorder;
pub mod tap;
pub mod writer;

pub use recorder::{RecordError, RecordRequest, RecordStart, Recorder};
pub use tap::RecordTap;
pub mod cli;
pub mod daemon;
pub mod ng;
pub mod posture;
pub mod store;
pub mod wav;
