//! Certificates and keys on disk: loading the operator's PEM files, and generating the
//! self-signed CA and server certificate the embedded default runs on.
//!
//! Generated material lives in the state directory (mode 0700): `ca.pem`, `ca.key`, `server.pem`
//! (leaf then CA), `server.key`; private keys are written with mode 0600 and reused on later runs,
//! so clients can pin `ca.pem` once.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a PEM certificate chain; the error names the file and says what is wrong.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&data).collect();
    let certs = certs.map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no CERTIFICATE block", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, SEC1 or PKCS#1); the error never contains key bytes.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|_| format!("{} holds no usable PEM private key", path.display()))
}

/// Paths of the generated certificate material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedPaths {
    /// The CA certificate clients trust (`curl --cacert`).
    pub ca_cert: PathBuf,
    /// The server chain (leaf, then CA).
    pub server_cert: PathBuf,
    /// The server private key (0600).
    pub server_key: PathBuf,
}

impl GeneratedPaths {
    /// The file names under a state directory.
    pub fn in_dir(state_dir: &Path) -> Self {
        GeneratedPaths {
            ca_cert: state_dir.join("ca.pem"),
            server_cert: state_dir.join("server.pem"),
            server_key: state_dir.join("server.key"),
        }
    }
}

/// Creates the state directory (0700) if needed.
pub fn ensure_state_dir(state_dir: &Path) -> Result<(), String> {
    fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;
    fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", state_dir.display()))
}

/// Writes a secret file with mode 0600 from creation on (never world-readable, not even briefly).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_public(path: &Path, data: &[u8]) -> Result<(), String> {
    fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes sure a CA and a server certificate for `names` exist under `state_dir`, generating
/// them on first run (ECDSA P-256). Returns the paths and whether anything was generated.
pub fn ensure_generated(
    state_dir: &Path,
    names: &[String],
) -> Result<(GeneratedPaths, bool), String> {
    ensure_state_dir(state_dir)?;
    let paths = GeneratedPaths::in_dir(state_dir);
    let ca_key_path = state_dir.join("ca.key");
    if paths.ca_cert.exists()
        && ca_key_path.exists()
        && paths.server_cert.exists()
        && paths.server_key.exists()
    {
        load_chain(&paths.server_cert)?;
        load_key(&paths.server_key)?;
        return Ok((paths, false));
    }

    let err = |e: rcgen::Error| format!("certificate generation failed: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "srtp-edge");
    dn.push(DnType::CommonName, "srtp-edge local CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    for n in names {
        params
            .subject_alt_names
            .push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().map_err(err)?),
            });
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "srtp-edge");
    dn.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("srtp-edge"),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let server_cert = params.signed_by(&server_key, &issuer).map_err(err)?;

    write_private(&ca_key_path, issuer_key_pem(&issuer).as_bytes())?;
    write_public(&paths.ca_cert, ca_cert.pem().as_bytes())?;
    write_private(&paths.server_key, server_key.serialize_pem().as_bytes())?;
    let chain = format!("{}{}", server_cert.pem(), ca_cert.pem());
    write_public(&paths.server_cert, chain.as_bytes())?;
    Ok((paths, true))
}

fn issuer_key_pem(issuer: &Issuer<'_, KeyPair>) -> String {
    issuer.key().serialize_pem()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (p, fresh) = ensure_generated(&state, &names).unwrap();
        assert!(fresh);
        for k in [&p.server_key, &state.join("ca.key")] {
            let mode = fs::metadata(k).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", k.display());
        }
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(load_chain(&p.server_cert).unwrap().len(), 2);
        let before = fs::read(&p.server_cert).unwrap();
        let (_, fresh) = ensure_generated(&state, &names).unwrap();
        assert!(!fresh);
        assert_eq!(
            fs::read(&p.server_cert).unwrap(),
            before,
            "reused on later runs"
        );
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.pem");
        fs::write(&f, b"not pem").unwrap();
        assert!(load_chain(&f).unwrap_err().contains("empty.pem"));
        assert!(load_key(&f).unwrap_err().contains("empty.pem"));
        assert!(load_chain(Path::new("/nonexistent"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
