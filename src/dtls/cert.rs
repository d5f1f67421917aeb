//! The certificate srtp-edge presents in DTLS-SRTP handshakes, and the `a=fingerprint` that
//! announces it in our SDP.
//!
//! DTLS-SRTP certificates are self-signed and authenticated only by the fingerprint in the
//! signaling (RFC 5763), so a fresh ECDSA P-256 key generated at start (rotated on every restart)
//! is the default; an operator may configure one instead. Our own key is always ECDSA (small
//! flights, fast signatures); peers may present ECDSA or RSA certificates.

use std::fmt;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SerialNumber};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::fingerprint::{Fingerprint, HashFunction};

/// Why a DTLS identity could not be created or loaded. Never carries key bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Key or certificate generation failed (no randomness, crypto library error).
    #[error("cannot generate the DTLS certificate: {0}")]
    Generate(String),
    /// The certificate PEM holds no usable CERTIFICATE block.
    #[error("DTLS certificate PEM holds no certificate")]
    Certificate,
    /// The key PEM holds no usable private key.
    #[error("DTLS private key PEM holds no usable private key")]
    Key,
    /// The key is not ECDSA P-256 or P-384 (srtp-edge signs DTLS handshakes with ECDSA only).
    #[error("DTLS private key must be ECDSA P-256 or P-384")]
    KeyType,
    /// The certificate does not carry the key's public key.
    #[error("DTLS certificate does not match the private key")]
    Mismatch,
}

/// Our DTLS certificate and private key (shared by every leg; cheap to clone) and its
/// `a=fingerprint`. The private key is wiped from memory when the last clone is dropped.
#[derive(Clone)]
pub struct DtlsIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    cert_der: Vec<u8>,
    /// The certificate and key parsed once for the DTLS engine (shared by every handshake;
    /// OpenSSL wipes the private key when the last reference is freed).
    x509: X509,
    key: PKey<Private>,
    fingerprint: Fingerprint,
}

impl DtlsIdentity {
    /// Generates a self-signed ECDSA P-256 certificate with a random serial number (browsers
    /// reject two certificates with the same issuer and serial) and a random common name, from
    /// the OS random source (what the daemon does once at start).
    pub fn generate() -> Result<DtlsIdentity, IdentityError> {
        Self::generate_with(&mut crate::rand::OsRandom)
    }

    /// [`generate`](Self::generate) with the serial number and name drawn from `rng` (a
    /// simulation's seeded source). The key pair always comes from the crypto library's own
    /// generator.
    pub fn generate_with(rng: &mut dyn crate::rand::Random) -> Result<DtlsIdentity, IdentityError> {
        let gen = |e: rcgen::Error| IdentityError::Generate(e.to_string());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        let mut serial = [0u8; 16];
        rng.fill(&mut serial)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        serial[0] &= 0x7f; // a positive INTEGER
        serial[0] |= 0x01; // and no leading zero byte to strip
        params.serial_number = Some(SerialNumber::from(serial.to_vec()));
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("srtp-edge {}", hex::encode(&serial[..6])),
        );
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).map_err(gen)?;
        Self::from_parts(cert.der().to_vec(), Zeroizing::new(key.serialize_der()))
            .map_err(|e| IdentityError::Generate(e.to_string()))
    }

    /// Loads a configured certificate (first PEM CERTIFICATE block) and its ECDSA private key
    /// (PKCS#8 or SEC1 PEM), checking that they belong together.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<DtlsIdentity, IdentityError> {
        let cert = CertificateDer::pem_slice_iter(cert_pem)
            .next()
            .and_then(Result::ok)
            .ok_or(IdentityError::Certificate)?;
        let key_text = Zeroizing::new(
            std::str::from_utf8(key_pem)
                .map_err(|_| IdentityError::Key)?
                .to_owned(),
        );
        let key = KeyPair::from_pem(&key_text).map_err(|_| IdentityError::Key)?;
        let alg = key.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256 && alg != &rcgen::PKCS_ECDSA_P384_SHA384 {
            return Err(IdentityError::KeyType);
        }
        // The certificate's SubjectPublicKeyInfo carries the raw public point.
        let public = key.public_key_raw();
        if !cert.as_ref().windows(public.len()).any(|w| w == public) {
            return Err(IdentityError::Mismatch);
        }
        Self::from_parts(cert.as_ref().to_vec(), Zeroizing::new(key.serialize_der()))
    }

    /// Parses the certificate and PKCS#8 key for the DTLS engine.
    fn from_parts(
        cert_der: Vec<u8>,
        key_der: Zeroizing<Vec<u8>>,
    ) -> Result<DtlsIdentity, IdentityError> {
        let x509 = X509::from_der(&cert_der).map_err(|_| IdentityError::Certificate)?;
        let key = PKey::private_key_from_der(&key_der).map_err(|_| IdentityError::Key)?;
        let fingerprint = Fingerprint::of_certificate(HashFunction::Sha256, &cert_der);
        Ok(DtlsIdentity {
            inner: Arc::new(Inner {
                cert_der,
                x509,
                key,
                fingerprint,
            }),
        })
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.inner.cert_der
    }

    /// The sha-256 fingerprint of our certificate.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.inner.fingerprint
    }

    /// The value for our SDP `a=fingerprint:` (`sha-256 AB:CD:...`).
    pub fn sdp_fingerprint(&self) -> String {
        self.inner.fingerprint.to_string()
    }

    /// The certificate as the DTLS engine takes it.
    pub(crate) fn x509(&self) -> &X509 {
        &self.inner.x509
    }

    /// The private key as the DTLS engine takes it.
    pub(crate) fn private_key(&self) -> &PKey<Private> {
        &self.inner.key
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.inner.fingerprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_has_a_matching_fingerprint() {
        let id = DtlsIdentity::generate().unwrap();
        let fp = id.sdp_fingerprint();
        assert!(fp.starts_with("sha-256 "));
        assert_eq!(fp.len(), "sha-256 ".len() + 32 * 3 - 1);
        let parsed = Fingerprint::parse(&fp).unwrap();
        assert!(parsed.matches_certificate(id.certificate_der()));
        // Rotated on every start: two identities never share a certificate.
        let other = DtlsIdentity::generate().unwrap();
        assert_ne!(other.certificate_der(), id.certificate_der());
        assert!(!format!("{id:?}").contains("key_der"));
    }

    #[test]
    fn loads_pem_and_checks_the_pair() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let id =
            DtlsIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        assert_eq!(id.certificate_der(), cert.der().as_ref());

        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert_eq!(
            DtlsIdentity::from_pem(cert.pem().as_bytes(), other.serialize_pem().as_bytes())
                .map(|_| ()),
            Err(IdentityError::Mismatch)
        );
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(
            DtlsIdentity::from_pem(cert.pem().as_bytes(), ed.serialize_pem().as_bytes())
                .map(|_| ()),
            Err(IdentityError::KeyType)
        );
        assert_eq!(
            DtlsIdentity::from_pem(b"garbage", key.serialize_pem().as_bytes()).map(|_| ()),
            Err(IdentityError::Certificate)
        );
        assert_eq!(
            DtlsIdentity::from_pem(cert.pem().as_bytes(), b"garbage").map(|_| ()),
            Err(IdentityError::Key)
        );
    }
}
