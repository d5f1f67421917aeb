//! The errors an SRTP context returns.
//!
//! One small `Copy` enum so the media workers can drop a packet and bump a counter without
//! allocating; [`Error::label`] is the `reason` label of `srtp_edge_packets_dropped_total`.

/// Why a packet was not protected or unprotected, or why a context could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The packet is shorter than its fixed header (plus index and tag, when unprotecting).
    #[error("packet too short")]
    TooShort,
    /// The RTP/RTCP version field is not 2.
    #[error("RTP/RTCP version is not 2")]
    BadVersion,
    /// The CSRC list or header extension runs past the end of the packet.
    #[error("CSRC list or header extension exceeds the packet")]
    BadHeader,
    /// The padding bit is set but the padding count is zero or exceeds the payload.
    #[error("bad RTP/RTCP padding")]
    BadPadding,
    /// The caller's buffer has no room for the index and authentication tag.
    #[error("buffer too small for the SRTP trailer")]
    BufferTooSmall,
    /// The authentication tag did not verify.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// The packet index was seen before or is older than the replay window.
    #[error("SRTP replay or index too old")]
    Replay,
    /// The master key or salt length does not match the profile.
    #[error("master key or salt length does not match the profile")]
    BadKeyLength,
    /// The replay window size in the configuration is outside 64..=1024.
    #[error("replay window must be between 64 and 1024")]
    BadReplayWindow,
    /// The context already tracks its maximum number of SSRCs.
    #[error("too many SSRCs in one SRTP context")]
    TooManyStreams,
    /// An SRTCP packet arrived with the E flag clear; srtp-edge only accepts encrypted SRTCP.
    #[error("unencrypted SRTCP packet")]
    Unencrypted,
    /// The 48-bit SRTP index or the 31-bit SRTCP index is used up; the stream needs new keys.
    #[error("packet index exhausted, re-key needed")]
    KeyExhausted,
    /// The crypto backend refused an operation it should not refuse.
    #[error("crypto backend failure")]
    Crypto,
}

impl Error {
    /// A short, stable, snake_case name for metric labels.
    pub const fn label(self) -> &'static str {
        match self {
            Error::TooShort => "too_short",
            Error::BadVersion => "bad_version",
            Error::BadHeader => "bad_header",
            Error::BadPadding => "bad_padding",
            Error::BufferTooSmall => "buffer_too_small",
            Error::AuthFailed => "auth_failed",
            Error::Replay => "replay",
            Error::BadKeyLength => "bad_key_length",
            Error::BadReplayWindow => "bad_replay_window",
            Error::TooManyStreams => "too_many_streams",
            Error::Unencrypted => "unencrypted",
            Error::KeyExhausted => "key_exhausted",
            Error::Crypto => "crypto",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case() {
        let all = [
            Error::TooShort,
            Error::BadVersion,
            Error::BadHeader,
            Error::BadPadding,
            Error::BufferTooSmall,
            Error::AuthFailed,
            Error::Replay,
            Error::BadKeyLength,
            Error::BadReplayWindow,
            Error::TooManyStreams,
            Error::Unencrypted,
            Error::KeyExhausted,
            Error::Crypto,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            let l = e.label();
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
            assert!(seen.insert(l), "duplicate label {l}");
            assert!(!e.to_string().is_empty());
        }
    }
}
