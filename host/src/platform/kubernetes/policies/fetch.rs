//! Downloads a PolicyPlugin's `url` source: one bounded HTTP/1.1 GET (`http://` or `https://`
//! over rustls with the system's roots), checked against the declared sha256. Bytes that
//! matched are kept per URL and digest, so a reconcile does not download them again.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Longest wait for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time for the whole download (connect, TLS, headers and body).
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How every WebAssembly file starts.
const MAGIC: &[u8] = b"\0asm";
/// Downloads kept; the oldest goes first. A few plugins per cluster is the expected use.
const CACHE_ENTRIES: usize = 16;

/// Why a URL source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not an http:// or https:// URL ({reason})")]
    BadUrl { url: String, reason: String },
    #[error("{url}: cannot set up TLS: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url}: request failed: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: no complete answer within {}s", TOTAL_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error(
        "{url}: answered {status}{location}; only 200 is accepted and redirects are not followed"
    )]
    Status {
        url: String,
        status: StatusCode,
        location: String,
    },
    #[error("{url}: the component is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: the answer is not a WebAssembly file (no `\\0asm` header); refused")]
    NotWasm { url: String },
    #[error("{url}: sha256 mismatch: declared {declared}, found {found}; refused")]
    Mismatch {
        url: String,
        declared: String,
        found: String,
    },
}

type Entry = (String, String, Arc<[u8]>);

fn cache() -> &'static Mutex<VecDeque<Entry>> {
    static CACHE: OnceLock<Mutex<VecDeque<Entry>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn cached(url: &str, sha256: &str) -> Option<Arc<[u8]>> {
    cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(u, d, _)| u == url && d == sha256)
        .map(|(_, _, b)| b.clone())
}

fn remember(url: &str, sha256: &str, bytes: Arc<[u8]>) {
    let mut entries = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if entries.iter().any(|(u, d, _)| u == url && d == sha256) {
        return;
    }
    while entries.len() >= CACHE_ENTRIES {
        entries.pop_front();
    }
    entries.push_back((url.to_string(), sha256.to_string(), bytes));
}

/// The component at `url` whose sha256 is `declared` (lowercase hex), from the cache or
/// downloaded (at most `max` bytes). Bytes with another digest are refused and not kept.
pub async fn fetch_pinned(url: &str, declared: &str, max: usize) -> Result<Arc<[u8]>, FetchError> {
    if let Some(bytes) = cached(url, declared) {
        return Ok(bytes);
    }
    let bytes = download(url, max).await?;
    let found = hex::encode(Sha256::digest(&bytes));
    if found != declared {
        return Err(FetchError::Mismatch {
            url: url.to_string(),
            declared: declared.to_string(),
            found,
        });
    }
    let bytes: Arc<[u8]> = bytes.into();
    remember(url, declared, bytes.clone());
    Ok(bytes)
}

/// One GET of `url` within [`TOTAL_TIMEOUT`], at most `max` bytes (a longer declared length
/// is refused before the body is read), 200 only, and refused as soon as its first bytes are
/// not a WebAssembly preamble; `https://` trusts the system's roots.
pub async fn download(url: &str, max: usize) -> Result<Vec<u8>, FetchError> {
    download_trusting(url, max, None).await
}

/// [`download`], with `tls` (its roots) instead of the system's roots when given: the tests
/// use it to serve a certificate of their own.
async fn download_trusting(
    url: &str,
    max: usize,
    tls: Option<rustls::ClientConfig>,
) -> Result<Vec<u8>, FetchError> {
    let bad = |reason: String| FetchError::BadUrl {
        url: url.to_string(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let fetch = async {
        match uri.scheme_str() {
            Some("http") => get(http, uri, url, max).await,
            Some("https") => {
                http.enforce_http(false);
                let builder = hyper_rustls::HttpsConnectorBuilder::new();
                let builder = match tls {
                    Some(config) => builder.with_tls_config(config),
                    None => builder
                        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                        .map_err(|e| FetchError::Tls {
                            url: url.to_string(),
                            reason: e.to_string(),
                        })?,
                };
                let https = builder.https_only().enable_http1().wrap_connector(http);
                get(https, uri, url, max).await
            }
            other => Err(bad(format!("scheme {other:?}"))),
        }
    };
    tokio::time::timeout(TOTAL_TIMEOUT, fetch)
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_string(),
        })?
}

async fn get<C>(connector: C, uri: Uri, url: &str, max: usize) -> Result<Vec<u8>, FetchError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let failed = |reason: String| FetchError::Request {
        url: url.to_string(),
        reason,
    };
    let client: Client<C, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = Request::get(uri)
        .header(hyper::header::USER_AGENT, "kvpilot")
        .body(Empty::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| failed(with_causes(&e)))?;
    let status = response.status();
    if status != StatusCode::OK {
        let location = response
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| format!(" (redirect to {l})"))
            .unwrap_or_default();
        return Err(FetchError::Status {
            url: url.to_string(),
            status,
            location,
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_string(),
        limit: max,
    };
    let declared_length = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.parse::<u64>().ok());
    if declared_length.is_some_and(|l| l > u64::try_from(max).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    // Ends with the body, past `max`, at a wrong preamble, or at the caller's TOTAL_TIMEOUT.
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
            let seen = bytes.len().min(MAGIC.len());
            if bytes[..seen] != MAGIC[..seen] {
                return Err(FetchError::NotWasm {
                    url: url.to_string(),
                });
            }
        }
    }
    if bytes.len() < MAGIC.len() {
        return Err(FetchError::NotWasm {
            url: url.to_string(),
        });
    }
    Ok(bytes)
}

/// `e` and its sources: hyper's own message is only "client error (Connect)", and the
/// reason (a refused certificate, a refused connection) is further down the chain.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one connection with `head` and then `body_len` bytes (in 64 KiB writes).
    async fn serve_once(head: String, body_len: usize) -> (String, tokio::task::JoinHandle<()>) {
        serve_body(head, body_len, false).await
    }

    /// [`serve_once`]; with `garbage`, the body does not start with a WebAssembly preamble.
    async fn serve_body(
        head: String,
        body_len: usize,
        garbage: bool,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/plugin.wasm", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let _ = stream.write_all(head.as_bytes()).await;
            // A component's preamble, then zeros (or, with `garbage`, no preamble).
            let mut chunk = vec![0u8; 64 * 1024];
            if !garbage {
                chunk[..8].copy_from_slice(b"\0asm\x0d\0\x01\0");
            }
            for _ in 0..body_len.div_ceil(chunk.len()) {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                chunk[..8].fill(0);
            }
        });
        (url, task)
    }

    const MAX_BYTES: usize = 16 << 20;

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused() {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BYTES + 1
        );
        let (url, task) = serve_once(head, 0).await;
        let err = download(&url, MAX_BYTES).await.unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("limit of 16777216 bytes"), "{err}");
        task.abort();
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_refused() {
        let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string();
        let (url, task) = serve_once(head, MAX_BYTES + 64 * 1024).await;
        let err = download(&url, MAX_BYTES).await.unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
        task.abort();
    }

    /// A body that does not start as WebAssembly is refused on its first bytes, not after
    /// downloading it all (here it would be 1 GiB).
    #[tokio::test]
    async fn a_body_without_the_preamble_is_refused_on_its_first_bytes() {
        let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string();
        let (url, task) = serve_body(head, 1 << 30, true).await;
        let err = download(&url, usize::MAX).await.unwrap_err();
        assert!(matches!(err, FetchError::NotWasm { .. }), "{err}");
        task.abort();
        // Too short to be one.
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\0as".to_string();
        let (url, task) = serve_once(head, 0).await;
        let err = download(&url, MAX_BYTES).await.unwrap_err();
        assert!(matches!(err, FetchError::NotWasm { .. }), "{err}");
        task.abort();
    }

    /// Serves `body` over TLS with a self-signed certificate for `names`, to one client;
    /// returns the URL (always by IP, 127.0.0.1) and the certificate to trust.
    async fn serve_tls_once(
        names: &[&str],
        body: &'static [u8],
    ) -> (
        String,
        rustls::pki_types::CertificateDer<'static>,
        tokio::task::JoinHandle<()>,
    ) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = generated.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/plugin.wasm", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            // A client that refuses the certificate ends the handshake here.
            let Ok(mut stream) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body).await;
            let _ = stream.shutdown().await;
        });
        (url, cert, task)
    }

    fn trusting(cert: rustls::pki_types::CertificateDer<'static>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    #[tokio::test]
    async fn https_downloads_from_a_trusted_server() {
        let (url, cert, task) = serve_tls_once(&["127.0.0.1"], b"\0asm component").await;
        let bytes = download_trusting(&url, MAX_BYTES, Some(trusting(cert)))
            .await
            .unwrap();
        assert_eq!(bytes, b"\0asm component");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn https_refuses_a_certificate_the_system_does_not_trust() {
        let (url, _cert, task) = serve_tls_once(&["127.0.0.1"], b"never read").await;
        let err = download(&url, MAX_BYTES).await.unwrap_err();
        assert!(matches!(err, FetchError::Request { .. }), "{err}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn https_refuses_a_certificate_for_another_name() {
        let (url, cert, task) = serve_tls_once(&["plugins.example"], b"never read").await;
        let err = download_trusting(&url, MAX_BYTES, Some(trusting(cert)))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Request { .. }), "{err}");
        assert!(err.to_string().contains("not valid for name"), "{err}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let err = download("ftp://127.0.0.1/plugin.wasm", MAX_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::BadUrl { .. }), "{err}");
    }
}
