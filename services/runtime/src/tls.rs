//! mTLS between clients and nodes (and between nodes), with rustls through tonic.
//!
//! Both sides present a certificate signed by the same CA and check the other's: a client
//! without a valid certificate is refused during the handshake. Plain TCP stays the default;
//! the lab turns TLS on per cluster. [`generate`] makes a throwaway CA and certificates so a
//! user can try it in one command (`kv gen-certs DIR`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::BadInput;

/// The server name every generated node certificate carries, and clients expect by default.
pub const SERVER_NAME: &str = "localhost";

/// A certificate, its key and the CA to check the other side against, read from PEM files.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("TlsFiles { .. }")
    }
}

impl TlsFiles {
    /// Reads the three PEM files; errors name the flag and the file.
    pub fn read(cert: &Path, key: &Path, ca: &Path) -> Result<Self, BadInput> {
        Ok(Self {
            cert: read_pem("--tls-cert", cert, "CERTIFICATE-----")?,
            key: read_pem("--tls-key", key, "PRIVATE KEY-----")?,
            ca: read_pem("--tls-ca", ca, "CERTIFICATE-----")?,
        })
    }

    /// Server side: present our certificate, require a client certificate signed by the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// Client side: present our certificate, trust only servers signed by the CA.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .domain_name(SERVER_NAME)
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
    }
}

fn read_pem(flag: &str, path: &Path, marker: &str) -> Result<Vec<u8>, BadInput> {
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("{flag} {}: cannot read it: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(BadInput(format!(
            "{flag} {}: not a PEM file with a \"-----BEGIN ...{marker}\" block",
            path.display()
        )));
    }
    Ok(bytes)
}

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct GeneratedCerts {
    pub ca: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Writes a throwaway CA, a node certificate (for `localhost` and `127.0.0.1`, usable as server
/// and as client, since nodes call each other) and a client certificate into `dir`.
/// Refuses to overwrite existing files: certificates someone relies on are never lost.
pub fn generate(dir: &Path) -> anyhow::Result<GeneratedCerts> {
    use anyhow::Context;

    let names = [
        "ca.pem",
        "ca-key.pem",
        "node.pem",
        "node-key.pem",
        "client.pem",
        "client-key.pem",
    ];
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            return Err(BadInput(format!(
                "{} already exists; not overwriting it (choose an empty directory)",
                path.display()
            ))
            .into());
        }
    }

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "distlab throwaway CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let leaf = |common_name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = usages;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
    };
    let (node_cert, node_key) = leaf(
        "distlab node",
        vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client_cert, client_key) = leaf(
        "distlab client",
        vec!["client".to_string()],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;

    let contents = [
        ca.pem(),
        ca.key().serialize_pem(),
        node_cert,
        node_key,
        client_cert,
        client_key,
    ];
    for (name, text) in names.iter().zip(contents) {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(GeneratedCerts {
        ca: dir.join("ca.pem"),
        node_cert: dir.join("node.pem"),
        node_key: dir.join("node-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let certs = generate(dir.path()).unwrap();
        TlsFiles::read(&certs.node_cert, &certs.node_key, &certs.ca).unwrap();
        TlsFiles::read(&certs.client_cert, &certs.client_key, &certs.ca).unwrap();
        let before = std::fs::read(&certs.ca).unwrap();
        let err = generate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&certs.ca).unwrap(), before);
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let err = TlsFiles::read(&junk, &junk, &junk).unwrap_err().0;
        assert!(
            err.contains("--tls-cert") && err.contains("junk.pem"),
            "{err}"
        );
    }
}
