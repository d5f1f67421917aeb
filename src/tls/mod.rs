//! The one place where rustls configurations are built: SIP server and client, WSS client, admin
//! server. Every TLS connection srtp-edge makes or accepts goes through the policy here.
//!
//! Policy (the encryption floor, not a set of toggles):
//! - TLS 1.3 only by default. `tls.min_version = "1.2"` adds TLS 1.2 with ECDHE key exchange and
//!   AEAD suites (AES-GCM, CHACHA20-POLY1305) only. Lower versions, CBC, RSA key exchange and
//!   SHA-1 signatures cannot be configured: they are not in the provider at all.
//! - Key exchange: X25519MLKEM768 (post-quantum hybrid) first, then X25519, then secp256r1.
//! - Server certificates come from a [`CertStore`] that SIGHUP reloads without touching
//!   established connections.

pub mod certs;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::aws_lc_rs as provider;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

use crate::config::{CertSource, TlsConfig, TlsMinVersion};

/// The cipher suites srtp-edge may ever use: TLS 1.3 suites, and the TLS 1.2 ECDHE + AEAD ones.
fn suites(min: TlsMinVersion) -> Vec<rustls::SupportedCipherSuite> {
    use provider::cipher_suite as cs;
    let mut v = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    if min == TlsMinVersion::Tls12 {
        v.extend([
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]);
    }
    v
}

/// Signature schemes that use SHA-1 are removed from verification, whatever the provider offers.
fn no_sha1(algs: WebPkiSupportedAlgorithms) -> WebPkiSupportedAlgorithms {
    let mapping: Vec<_> = algs
        .mapping
        .iter()
        .filter(|(s, _)| {
            !matches!(
                s,
                SignatureScheme::RSA_PKCS1_SHA1 | SignatureScheme::ECDSA_SHA1_Legacy
            )
        })
        .copied()
        .collect();
    WebPkiSupportedAlgorithms {
        all: algs.all,
        // The provider's tables are static; ours is built once per process and lives as long.
        mapping: Box::leak(mapping.into_boxed_slice()),
    }
}

/// The crypto provider for a minimum version: aws-lc-rs restricted to the policy above.
pub fn crypto_provider(min: TlsMinVersion) -> Arc<CryptoProvider> {
    let base = provider::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: suites(min),
        kx_groups: vec![
            provider::kx_group::X25519MLKEM768,
            provider::kx_group::X25519,
            provider::kx_group::SECP256R1,
        ],
        signature_verification_algorithms: no_sha1(base.signature_verification_algorithms),
        ..base
    })
}

/// The protocol versions allowed by a minimum version.
pub fn versions(min: TlsMinVersion) -> &'static [&'static SupportedProtocolVersion] {
    static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static TLS13_AND_12: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    match min {
        TlsMinVersion::Tls13 => &TLS13_ONLY,
        TlsMinVersion::Tls12 => &TLS13_AND_12,
    }
}

/// Errors building TLS configurations or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key could not be loaded (the message names the file).
    #[error("{0}")]
    Load(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A client certificate verifier could not be built from the configured roots.
    #[error("TLS client verifier: {0}")]
    Verifier(String),
}

/// Where the server certificate is read from on start and on every reload.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl CertPaths {
    /// The files of a TLS config: the operator's, or the generated ones in the state directory.
    pub fn for_config(tls: &TlsConfig, state_dir: &std::path::Path) -> CertPaths {
        match &tls.cert {
            CertSource::Files { cert, key } => CertPaths {
                cert: cert.clone(),
                key: key.clone(),
            },
            CertSource::Generated => {
                let g = certs::GeneratedPaths::in_dir(state_dir);
                CertPaths {
                    cert: g.server_cert,
                    key: g.server_key,
                }
            }
        }
    }
}

/// The server certificate in use, swappable at run time (SIGHUP). Each new handshake picks up
/// the current one; established connections keep theirs.
#[derive(Debug)]
pub struct CertStore {
    paths: CertPaths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the certificate and key now; fails with a message naming the file.
    pub fn load(
        paths: CertPaths,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<CertStore>, TlsError> {
        let ck = Self::read(&paths, &provider)?;
        Ok(Arc::new(CertStore {
            paths,
            provider,
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    fn read(paths: &CertPaths, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = certs::load_chain(&paths.cert).map_err(TlsError::Load)?;
        let key = certs::load_key(&paths.key).map_err(TlsError::Load)?;
        let ck = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
            TlsError::Load(format!(
                "{} and {} do not form a usable certificate and key: {e}",
                paths.cert.display(),
                paths.key.display()
            ))
        })?;
        Ok(ck)
    }

    /// Re-reads the files; on failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = Self::read(&self.paths, &self.provider)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(ck);
        }
        Ok(())
    }

    /// The certificate chain currently served (leaf first).
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server config for one listener, with the given ALPN protocols.
pub fn server_config(
    min: TlsMinVersion,
    store: Arc<CertStore>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(crypto_provider(min))
        .with_protocol_versions(versions(min))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// A server config that also requires a client certificate from one of `client_roots` (mutual
/// TLS for trunks); clients without one are still accepted when `optional` is true, so that
/// trunks matched by address can coexist with trunks matched by certificate.
pub fn server_config_mtls(
    min: TlsMinVersion,
    store: Arc<CertStore>,
    client_roots: RootCertStore,
    optional: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider(min);
    let b = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone());
    let b = if optional {
        b.allow_unauthenticated()
    } else {
        b
    };
    let verifier = b.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    Ok(Arc::new(cfg))
}

/// The roots used to verify servers: the configured CA file, else the system's roots.
pub fn client_roots(tls: &TlsConfig) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for c in certs::load_chain(path).map_err(TlsError::Load)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Load(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                // A broken system root is skipped, not fatal: the others still verify.
                let _ = roots.add(c);
            }
        }
    }
    Ok(roots)
}

/// A client config (SIP trunks, WSS backends) that verifies the server against `roots`.
pub fn client_config(
    min: TlsMinVersion,
    roots: RootCertStore,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crypto_provider(min);
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A client config for SIP route targets: verifies the server against `roots` and, when
/// `client_cert` is given, presents the certificate it holds (mutual TLS, for targets that
/// identify their peers by certificate). The store is read at each handshake, so a SIGHUP
/// reload of it applies to the next connection. Same version and suite policy as every other
/// config.
pub fn client_config_with_cert(
    min: TlsMinVersion,
    roots: RootCertStore,
    client_cert: Option<Arc<CertStore>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let Some(store) = client_cert else {
        return client_config(min, roots, &[]);
    };
    let provider = crypto_provider(min);
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min))?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(store);
    Ok(Arc::new(cfg))
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The label used in metrics for a negotiated protocol version.
pub fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CipherSuite, NamedGroup};

    fn names(min: TlsMinVersion) -> Vec<CipherSuite> {
        crypto_provider(min)
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn tls13_only_by_default() {
        let v = versions(TlsMinVersion::Tls13);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].version, rustls::ProtocolVersion::TLSv1_3);
        assert!(names(TlsMinVersion::Tls13)
            .iter()
            .all(|s| format!("{s:?}").starts_with("TLS13_")));
    }

    #[test]
    fn tls12_is_ecdhe_aead_only() {
        let n = names(TlsMinVersion::Tls12);
        assert_eq!(n.len(), 9);
        for s in n {
            let name = format!("{s:?}");
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
            assert!(!name.contains("CBC") && !name.ends_with("_SHA"), "{name}");
        }
    }

    #[test]
    fn groups_put_post_quantum_first() {
        let g: Vec<NamedGroup> = crypto_provider(TlsMinVersion::Tls13)
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(
            g,
            vec![
                NamedGroup::X25519MLKEM768,
                NamedGroup::X25519,
                NamedGroup::secp256r1
            ]
        );
    }

    #[test]
    fn client_config_presents_the_configured_certificate() {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::certs::ensure_generated(dir.path(), &["localhost".into()]).unwrap();
        let g = certs::GeneratedPaths::in_dir(dir.path());
        let store = |cert: &std::path::Path, key: &std::path::Path| {
            CertStore::load(
                CertPaths {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                },
                crypto_provider(TlsMinVersion::Tls13),
            )
        };
        let roots = || {
            let mut r = RootCertStore::empty();
            for c in certs::load_chain(&g.ca_cert).unwrap() {
                r.add(c).unwrap();
            }
            r
        };
        let cc = store(&g.server_cert, &g.server_key).unwrap();
        let c = client_config_with_cert(TlsMinVersion::Tls13, roots(), Some(cc)).unwrap();
        assert!(c.client_auth_cert_resolver.has_certs());
        let plain = client_config_with_cert(TlsMinVersion::Tls13, roots(), None).unwrap();
        assert!(!plain.client_auth_cert_resolver.has_certs());
        // A key that does not belong to the certificate is refused with both file names.
        let other = tempfile::tempdir().unwrap();
        crate::tls::certs::ensure_generated(other.path(), &["localhost".into()]).unwrap();
        let e = store(
            &g.server_cert,
            &certs::GeneratedPaths::in_dir(other.path()).server_key,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("server.pem"), "{e}");
    }

    #[test]
    fn no_sha1_signatures() {
        let p = crypto_provider(TlsMinVersion::Tls12);
        for (s, _) in p.signature_verification_algorithms.mapping {
            assert!(!format!("{s:?}").contains("SHA1"), "{s:?}");
        }
    }
}
