//! Certificate fingerprints as carried in SDP `a=fingerprint` (RFC 8122 section 5), and the check
//! that binds a DTLS peer's certificate to the signaling that announced it (RFC 5763 section 5).
//!
//! DTLS-SRTP peers use self-signed certificates, so the fingerprint in the SDP is the only thing
//! that authenticates the media path: a certificate that matches none of the peer's fingerprints
//! must end the handshake.

use std::fmt;

use aws_lc_rs::digest;
use subtle::ConstantTimeEq;

/// Most fingerprints accepted from one SDP (one per certificate and hash function; a real peer
/// sends one or two). Bounds the work and memory a hostile SDP can cause.
pub const MAX_FINGERPRINTS: usize = 8;

/// Longest `a=fingerprint` value accepted (sha-512 is `sha-512` + space + 191 characters).
const MAX_VALUE_LEN: usize = 256;

/// A hash function named in `a=fingerprint` (RFC 8122 section 5, IANA "Hash Function Textual
/// Names"). MD2 and MD5 are deliberately absent: they are not safe for binding a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashFunction {
    /// SHA-1 (20 bytes), accepted from legacy peers only.
    Sha1,
    /// SHA-224 (28 bytes).
    Sha224,
    /// SHA-256 (32 bytes), what srtp-edge announces.
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl HashFunction {
    /// Every supported hash function.
    pub const ALL: [HashFunction; 5] = [
        HashFunction::Sha1,
        HashFunction::Sha224,
        HashFunction::Sha256,
        HashFunction::Sha384,
        HashFunction::Sha512,
    ];

    /// Looks a hash function up by its SDP name (case-insensitive, as RFC 8122 says).
    pub fn from_sdp_name(name: &str) -> Option<HashFunction> {
        HashFunction::ALL
            .into_iter()
            .find(|h| h.sdp_name().eq_ignore_ascii_case(name))
    }

    /// The textual name used in SDP (`sha-256`, ...).
    pub const fn sdp_name(self) -> &'static str {
        match self {
            HashFunction::Sha1 => "sha-1",
            HashFunction::Sha224 => "sha-224",
            HashFunction::Sha256 => "sha-256",
            HashFunction::Sha384 => "sha-384",
            HashFunction::Sha512 => "sha-512",
        }
    }

    /// Digest length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            HashFunction::Sha1 => 20,
            HashFunction::Sha224 => 28,
            HashFunction::Sha256 => 32,
            HashFunction::Sha384 => 48,
            HashFunction::Sha512 => 64,
        }
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashFunction::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashFunction::Sha224 => &digest::SHA224,
            HashFunction::Sha256 => &digest::SHA256,
            HashFunction::Sha384 => &digest::SHA384,
            HashFunction::Sha512 => &digest::SHA512,
        }
    }
}

/// Why an `a=fingerprint` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// The value is empty or has no fingerprint after the hash name.
    #[error("a=fingerprint has no hash function and fingerprint")]
    Missing,
    /// The value is longer than any valid fingerprint.
    #[error("a=fingerprint value is too long")]
    TooLong,
    /// The hash function is not one srtp-edge accepts (MD5, MD2 or unknown).
    #[error("a=fingerprint hash function is not supported")]
    UnsupportedHash,
    /// The fingerprint is not colon-separated pairs of hex digits.
    #[error("a=fingerprint is not colon-separated hex")]
    BadHex,
    /// The fingerprint length does not match the hash function.
    #[error("a=fingerprint has {got} bytes, {expected} expected for its hash function")]
    WrongLength {
        /// Digest length of the named hash function.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// More than [`MAX_FINGERPRINTS`] fingerprints.
    #[error("more than {MAX_FINGERPRINTS} a=fingerprint attributes")]
    TooMany,
    /// No usable fingerprint was found at all.
    #[error("no usable a=fingerprint")]
    NoneUsable,
}

/// One certificate fingerprint: a hash function and its digest of the DER certificate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    hash: HashFunction,
    len: u8,
    bytes: [u8; 64],
}

impl Fingerprint {
    /// Computes the fingerprint of a DER certificate, for our own `a=fingerprint` and for tests.
    pub fn of_certificate(hash: HashFunction, cert_der: &[u8]) -> Fingerprint {
        let d = digest::digest(hash.algorithm(), cert_der);
        let mut bytes = [0u8; 64];
        let out = d.as_ref();
        bytes[..out.len()].copy_from_slice(out);
        Fingerprint {
            hash,
            len: out.len() as u8,
            bytes,
        }
    }

    /// Parses an `a=fingerprint` value (`sha-256 AB:CD:...`, without the `a=fingerprint:`
    /// prefix). Hex is accepted in either case; surrounding whitespace is ignored.
    pub fn parse(value: &str) -> Result<Fingerprint, FingerprintError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(FingerprintError::TooLong);
        }
        let value = value.trim();
        let (name, hex) = value
            .split_once([' ', '\t'])
            .ok_or(FingerprintError::Missing)?;
        let hash = HashFunction::from_sdp_name(name).ok_or(FingerprintError::UnsupportedHash)?;
        let hex = hex.trim();
        if hex.is_empty() {
            return Err(FingerprintError::Missing);
        }
        let mut bytes = [0u8; 64];
        let mut n = 0usize;
        for pair in hex.split(':') {
            let p = pair.as_bytes();
            if p.len() != 2 {
                return Err(FingerprintError::BadHex);
            }
            let byte = (hex_val(p[0]).ok_or(FingerprintError::BadHex)? << 4)
                | hex_val(p[1]).ok_or(FingerprintError::BadHex)?;
            let slot = bytes.get_mut(n).ok_or(FingerprintError::WrongLength {
                expected: hash.output_len(),
                got: n + 1,
            })?;
            *slot = byte;
            n += 1;
        }
        if n != hash.output_len() {
            return Err(FingerprintError::WrongLength {
                expected: hash.output_len(),
                got: n,
            });
        }
        Ok(Fingerprint {
            hash,
            len: n as u8,
            bytes,
        })
    }

    /// The hash function.
    pub fn hash(&self) -> HashFunction {
        self.hash
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// True if `cert_der` hashes to this fingerprint (compared in constant time).
    pub fn matches_certificate(&self, cert_der: &[u8]) -> bool {
        let d = digest::digest(self.hash.algorithm(), cert_der);
        bool::from(d.as_ref().ct_eq(self.as_bytes()))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Formats as the `a=fingerprint` value: the hash name, a space, upper-case hex with colons.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hash.sdp_name())?;
        f.write_str(" ")?;
        for (i, b) in self.as_bytes().iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Digest length as an order of strength (SHA-1 weakest).
fn strength(h: HashFunction) -> u8 {
    match h {
        HashFunction::Sha1 => 1,
        HashFunction::Sha224 => 2,
        HashFunction::Sha256 => 3,
        HashFunction::Sha384 => 4,
        HashFunction::Sha512 => 5,
    }
}

/// The fingerprints a peer announced in its SDP; its DTLS certificate must match one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerFingerprints {
    list: Vec<Fingerprint>,
}

impl PeerFingerprints {
    /// An empty set (matches no certificate).
    pub fn new() -> PeerFingerprints {
        PeerFingerprints::default()
    }

    /// Collects the fingerprints from SDP attribute lines (media or session level). Lines that
    /// are not `a=fingerprint:` are skipped; fingerprints with a hash function srtp-edge does not
    /// accept (MD5, unknown names) are skipped as RFC 8122 allows; any other malformed
    /// fingerprint is an error, and so is a set with no usable fingerprint.
    pub fn from_sdp_lines<'a, I>(lines: I) -> Result<PeerFingerprints, FingerprintError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut set = PeerFingerprints::new();
        for line in lines {
            let line = line.trim_end_matches(['\r', '\n']);
            let Some(value) = strip_prefix_ignore_case(line, "a=fingerprint:") else {
                continue;
            };
            match Fingerprint::parse(value) {
                Ok(fp) => set.push(fp)?,
                Err(FingerprintError::UnsupportedHash) => continue,
                Err(e) => return Err(e),
            }
        }
        if set.is_empty() {
            return Err(FingerprintError::NoneUsable);
        }
        Ok(set)
    }

    /// Builds a set from fingerprints known otherwise (configuration, tests); at most
    /// [`MAX_FINGERPRINTS`].
    pub fn from_fingerprints<I>(fps: I) -> Result<PeerFingerprints, FingerprintError>
    where
        I: IntoIterator<Item = Fingerprint>,
    {
        let mut set = PeerFingerprints::new();
        for fp in fps {
            set.push(fp)?;
        }
        Ok(set)
    }

    /// Adds one fingerprint (duplicates are kept once).
    pub fn push(&mut self, fp: Fingerprint) -> Result<(), FingerprintError> {
        if self.list.contains(&fp) {
            return Ok(());
        }
        if self.list.len() >= MAX_FINGERPRINTS {
            return Err(FingerprintError::TooMany);
        }
        self.list.push(fp);
        Ok(())
    }

    /// Number of distinct fingerprints.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when there is none (then no certificate is accepted).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The fingerprints, in SDP order.
    pub fn iter(&self) -> impl Iterator<Item = &Fingerprint> {
        self.list.iter()
    }

    /// True if the DER certificate matches at least one announced fingerprint.
    pub fn matches(&self, cert_der: &[u8]) -> bool {
        // Evaluate every entry so the time taken does not tell which one matched.
        self.list
            .iter()
            .fold(false, |acc, fp| fp.matches_certificate(cert_der) | acc)
    }

    /// The hash function of the fingerprint that `cert_der` matches (the strongest, if several
    /// do), or `None`. Reported per leg (ng `query`) so an operator sees which peers still bind
    /// their certificate with SHA-1; never anything about the certificate itself.
    pub fn matching_hash(&self, cert_der: &[u8]) -> Option<HashFunction> {
        // Evaluate every entry, as `matches` does.
        self.list.iter().fold(None, |best, fp| {
            let hit = fp.matches_certificate(cert_der);
            match (hit, best) {
                (true, Some(b)) if strength(b) >= strength(fp.hash()) => Some(b),
                (true, _) => Some(fp.hash()),
                (false, b) => b,
            }
        })
    }

    /// True if both sets hold the same fingerprints, in any order (a changed set on a re-INVITE
    /// means a new DTLS association, RFC 8842 section 5).
    pub fn same_set(&self, other: &PeerFingerprints) -> bool {
        self.list.len() == other.list.len() && self.list.iter().all(|f| other.list.contains(f))
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = b"not really a certificate, but bytes to hash";

    #[test]
    fn round_trips_every_hash_function() {
        for h in HashFunction::ALL {
            let fp = Fingerprint::of_certificate(h, CERT);
            assert_eq!(fp.as_bytes().len(), h.output_len());
            let text = fp.to_string();
            assert!(text.starts_with(h.sdp_name()));
            let parsed = Fingerprint::parse(&text).unwrap();
            assert_eq!(parsed, fp);
            assert!(parsed.matches_certificate(CERT));
            assert!(!parsed.matches_certificate(b"another certificate"));
            // Lower-case hex and an upper-case hash name are the same fingerprint.
            let lower = format!(
                "{} {}",
                h.sdp_name().to_uppercase(),
                &text[h.sdp_name().len() + 1..].to_lowercase()
            );
            assert_eq!(Fingerprint::parse(&lower).unwrap(), fp);
        }
    }

    #[test]
    fn matching_hash_names_the_strongest_matching_fingerprint() {
        let set = PeerFingerprints::from_fingerprints([
            Fingerprint::of_certificate(HashFunction::Sha1, CERT),
            Fingerprint::of_certificate(HashFunction::Sha384, b"someone else"),
            Fingerprint::of_certificate(HashFunction::Sha256, CERT),
        ])
        .unwrap();
        assert_eq!(set.matching_hash(CERT), Some(HashFunction::Sha256));
        assert_eq!(
            set.matching_hash(b"someone else"),
            Some(HashFunction::Sha384)
        );
        assert_eq!(set.matching_hash(b"nobody"), None);
        let sha1_only = PeerFingerprints::from_fingerprints([Fingerprint::of_certificate(
            HashFunction::Sha1,
            CERT,
        )])
        .unwrap();
        assert_eq!(sha1_only.matching_hash(CERT), Some(HashFunction::Sha1));
    }

    #[test]
    fn known_sha256_value() {
        // sha-256 of "abc" (FIPS 180-2 appendix B.1).
        let fp = Fingerprint::of_certificate(HashFunction::Sha256, b"abc");
        assert_eq!(
            fp.to_string(),
            "sha-256 BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn rejects_malformed_values() {
        let good = Fingerprint::of_certificate(HashFunction::Sha256, CERT).to_string();
        assert_eq!(Fingerprint::parse(""), Err(FingerprintError::Missing));
        assert_eq!(
            Fingerprint::parse("sha-256"),
            Err(FingerprintError::Missing)
        );
        assert_eq!(
            Fingerprint::parse("sha-256   "),
            Err(FingerprintError::Missing)
        );
        assert_eq!(
            Fingerprint::parse("md5 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"),
            Err(FingerprintError::UnsupportedHash)
        );
        assert_eq!(
            Fingerprint::parse("sha-256 0G:11"),
            Err(FingerprintError::BadHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-256 001:11"),
            Err(FingerprintError::BadHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-256 00::11"),
            Err(FingerprintError::BadHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-256 00:11:"),
            Err(FingerprintError::BadHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-256 é0:11"),
            Err(FingerprintError::BadHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-256 00:11"),
            Err(FingerprintError::WrongLength {
                expected: 32,
                got: 2
            })
        );
        // One byte too many for sha-256.
        assert_eq!(
            Fingerprint::parse(&format!("{good}:00")),
            Err(FingerprintError::WrongLength {
                expected: 32,
                got: 33
            })
        );
        // 65 bytes: longer than any digest, must not overflow the buffer.
        let long = format!("sha-512 {}", vec!["AB"; 65].join(":"));
        assert!(Fingerprint::parse(&long).is_err());
        assert_eq!(
            Fingerprint::parse(&"A".repeat(300)),
            Err(FingerprintError::TooLong)
        );
    }

    #[test]
    fn peer_set_from_sdp_lines() {
        let sha256 = Fingerprint::of_certificate(HashFunction::Sha256, CERT);
        let sha1 = Fingerprint::of_certificate(HashFunction::Sha1, b"other cert");
        let sdp = format!(
            "v=0\r\na=setup:actpass\r\nA=Fingerprint:{sha256}\r\na=fingerprint:md5 00:11\r\na=fingerprint:{sha1}\r\na=fingerprint:{sha256}\r\n"
        );
        let set = PeerFingerprints::from_sdp_lines(sdp.split('\n')).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.matches(CERT));
        assert!(set.matches(b"other cert"));
        assert!(!set.matches(b"a third cert"));

        assert_eq!(
            PeerFingerprints::from_sdp_lines(["a=setup:active"]),
            Err(FingerprintError::NoneUsable)
        );
        assert_eq!(
            PeerFingerprints::from_sdp_lines(["a=fingerprint:md5 00:11"]),
            Err(FingerprintError::NoneUsable)
        );
        assert_eq!(
            PeerFingerprints::from_sdp_lines(["a=fingerprint:sha-256 zz"]),
            Err(FingerprintError::BadHex)
        );
        assert!(!PeerFingerprints::new().matches(CERT));
    }

    #[test]
    fn set_is_bounded_and_compares_unordered() {
        let fps: Vec<Fingerprint> = (0..=MAX_FINGERPRINTS)
            .map(|i| Fingerprint::of_certificate(HashFunction::Sha256, &[i as u8]))
            .collect();
        assert_eq!(
            PeerFingerprints::from_fingerprints(fps.iter().cloned()),
            Err(FingerprintError::TooMany)
        );
        let a = PeerFingerprints::from_fingerprints(fps[..3].iter().cloned()).unwrap();
        let b = PeerFingerprints::from_fingerprints(fps[..3].iter().rev().cloned()).unwrap();
        let c = PeerFingerprints::from_fingerprints(fps[..2].iter().cloned()).unwrap();
        assert!(a.same_set(&b));
        assert!(!a.same_set(&c));
        assert!(!c.same_set(&a));
    }
}
