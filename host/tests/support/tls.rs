//! Test certificates made with rcgen: a CA, and the certificates it signs for members (valid
//! for server and client authentication, as replicas present theirs to their primary).

use std::path::Path;

use kvpilot::engine::{ClientIdentity, TlsConfig};
use kvpilot::platform::local::server::ServerTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    pub fn identity(&self) -> ClientIdentity<'_> {
        ClientIdentity {
            cert_pem: self.cert_pem.as_bytes(),
            key_pem: self.key_pem.as_bytes(),
        }
    }
}

/// A self-signed CA.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem = pem("CERTIFICATE", cert.der());
        TestCa { params, key, pem }
    }

    /// The CA certificate, PEM (what a Secret's `ca.crt` holds).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `names` (DNS names, wildcards or IP addresses), signed by this CA,
    /// for server and client authentication.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("member"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
        Issued {
            cert_pem: pem("CERTIFICATE", cert.der()),
            key_pem: pem("PRIVATE KEY", &key.serialize_der()),
        }
    }

    /// A client configuration trusting this CA, presenting `client` when given.
    pub fn client_config(&self, client: Option<&Issued>) -> TlsConfig {
        TlsConfig::from_pem(self.pem.as_bytes(), client.map(Issued::identity)).expect("TLS config")
    }

    /// Writes this CA and `issued` into `dir` (created) and returns the member settings that
    /// use them; `server_name` is the name [`kvpilot::platform::local::server::Server::start`]
    /// verifies.
    pub fn member_files(&self, dir: &Path, issued: &Issued, server_name: &str) -> ServerTls {
        std::fs::create_dir_all(dir).expect("tls dir");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write TLS file");
            path
        };
        ServerTls {
            cert_file: write("tls.crt", &issued.cert_pem),
            key_file: write("tls.key", &issued.key_pem),
            ca_file: write("ca.crt", &self.pem),
            server_name: server_name.to_string(),
        }
    }
}

/// DER as PEM with `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Sends one command over a fresh TLS connection to `addr`, verifying the member as
/// `server_name` against `ca` and presenting `client` when given, after `AUTH` with `auth`
/// (`(user, password)`) when given. Errors as `Err` (the test's own client, independent of
/// the engine's).
pub async fn exec_tls(
    addr: std::net::SocketAddr,
    ca: &TestCa,
    client: Option<&Issued>,
    server_name: &str,
    auth: Option<(&str, &str)>,
    args: &[&str],
) -> Result<redis::Value, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::sync::Arc;
    use std::time::Duration;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key =
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
    };
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut info = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some((user, password)) = auth {
            info = info.set_username(user).set_password(password);
        }
        let (mut conn, driver) = redis::aio::MultiplexedConnection::new_with_config(
            &info,
            stream,
            redis::AsyncConnectionConfig::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
        tokio::spawn(driver);
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<redis::Value>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}
