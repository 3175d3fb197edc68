//! TLS for member connections: which CA the member's certificate must chain to, and the
//! client certificate to present when the member requires one.
//!
//! The configuration is built once from PEM (a Kubernetes TLS Secret, files on disk) and shared
//! by every connection; the name the member's certificate is verified against is chosen per
//! connection ([`super::ConnectOptions::server_name`]), because the operator dials pod IPs but
//! verifies pod DNS names.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A client certificate and its private key, both PEM.
#[derive(Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// The certificate chain (leaf first), PEM.
    pub cert_pem: &'a [u8],
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_pem: &'a [u8],
}

/// A rustls client configuration that trusts only the given CA certificates. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ClientConfig>,
    /// A digest of the PEM it was built from, so two configurations built from the same
    /// material compare equal (a reconcile can tell whether a Secret changed).
    fingerprint: [u8; 32],
    presents_certificate: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key; the fingerprint says which material without revealing it.
        f.debug_struct("TlsConfig")
            .field("fingerprint", &hex::encode(&self.fingerprint[..6]))
            .field("presents_certificate", &self.presents_certificate)
            .finish()
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for TlsConfig {}

/// The TLS material could not be used; says which part and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM block did not parse.
    #[error("{what}: not valid PEM: {problem}")]
    Pem {
        /// Which input (`CA certificates`, `client certificate`, `client key`).
        what: &'static str,
        /// The parser's message.
        problem: String,
    },
    /// The input holds no certificate or key at all.
    #[error("{what}: contains no {expected}")]
    Empty {
        /// Which input.
        what: &'static str,
        /// What was expected in it.
        expected: &'static str,
    },
    /// rustls refused the material (a CA that is not a usable trust anchor, a key that does
    /// not match its certificate, ...).
    #[error("{what}: {source}")]
    Rejected {
        /// Which input.
        what: &'static str,
        /// rustls' reason (boxed: `rustls::Error` is large and this error travels in
        /// `Result`s of its callers).
        #[source]
        source: Box<rustls::Error>,
    },
}

impl TlsConfig {
    /// Trusts the CA certificates in `ca_pem` (one or more PEM blocks) and nothing else (no
    /// system roots: a member's certificate comes from the cluster's own CA). With `client`,
    /// presents that certificate when the member asks for one.
    pub fn from_pem(
        ca_pem: &[u8],
        client: Option<ClientIdentity<'_>>,
    ) -> Result<Self, TlsConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| TlsConfigError::Pem {
                what: "CA certificates",
                problem: e.to_string(),
            })?;
            roots.add(cert).map_err(|source| TlsConfigError::Rejected {
                what: "CA certificates",
                source: Box::new(source),
            })?;
        }
        if roots.is_empty() {
            return Err(TlsConfigError::Empty {
                what: "CA certificates",
                expected: "certificate",
            });
        }
        // The provider is named, not taken from the process default, so that another crate
        // enabling a second provider cannot make this panic or change the cipher suites.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsConfigError::Rejected {
                what: "protocol versions",
                source: Box::new(source),
            })?
            .with_root_certificates(roots);
        let mut digest = Sha256::new();
        digest.update(ca_pem);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let chain = CertificateDer::pem_slice_iter(identity.cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsConfigError::Pem {
                        what: "client certificate",
                        problem: e.to_string(),
                    })?;
                if chain.is_empty() {
                    return Err(TlsConfigError::Empty {
                        what: "client certificate",
                        expected: "certificate",
                    });
                }
                let key = PrivateKeyDer::from_pem_slice(identity.key_pem).map_err(|e| {
                    TlsConfigError::Pem {
                        what: "client key",
                        problem: e.to_string(),
                    }
                })?;
                digest.update([0u8]);
                digest.update(identity.cert_pem);
                digest.update([0u8]);
                digest.update(identity.key_pem);
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsConfigError::Rejected {
                        what: "client certificate and key",
                        source: Box::new(source),
                    })?
            }
        };
        Ok(Self {
            config: Arc::new(config),
            fingerprint: digest.finalize().into(),
            presents_certificate: client.is_some(),
        })
    }

    /// Whether connections present a client certificate.
    pub fn presents_certificate(&self) -> bool {
        self.presents_certificate
    }

    pub(super) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_material_that_is_not_a_certificate() {
        let e = TlsConfig::from_pem(b"", None).unwrap_err();
        assert!(
            e.to_string()
                .contains("CA certificates: contains no certificate"),
            "{e}"
        );
        let e =
            TlsConfig::from_pem(b"-----BEGIN CERTIFICATE-----\nnot base64!\n", None).unwrap_err();
        assert!(e.to_string().starts_with("CA certificates"), "{e}");
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn equal_material_compares_equal() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_pem = pem("CERTIFICATE", ca.der());
        let key_pem = pem("PRIVATE KEY", &key.serialize_der());
        let a = TlsConfig::from_pem(cert_pem.as_bytes(), None).unwrap();
        let b = TlsConfig::from_pem(cert_pem.as_bytes(), None).unwrap();
        assert_eq!(a, b);
        let with_cert = TlsConfig::from_pem(
            cert_pem.as_bytes(),
            Some(ClientIdentity {
                cert_pem: cert_pem.as_bytes(),
                key_pem: key_pem.as_bytes(),
            }),
        )
        .unwrap();
        assert_ne!(a, with_cert);
        assert!(with_cert.presents_certificate());
        let debug = format!("{with_cert:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
