//! One delivery attempt: a signed POST over hyper-util's pooled client, TLS by
//! rustls (webpki roots, plus `--webhook-ca-file`), and what its outcome
//! means for retrying.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;

use super::retry::retry_after;

/// `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str =
    concat!("signal-server/", env!("CARGO_PKG_VERSION"), " (webhooks)");
/// How much of a response body is read (and thrown away) so that the
/// connection can be used again; a longer body closes the connection.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// The outcome of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// 2xx: done.
    Delivered,
    /// Worth trying again (5xx, 408, 429, a timeout, a connection error);
    /// with the receiver's `Retry-After`, if it gave one.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Refused for good (any other status).
    Rejected { why: String },
}

/// The headers of one attempt besides the fixed ones.
pub(crate) struct Signed<'a> {
    pub id: &'a str,
    pub timestamp: u64,
    pub signature: String,
}

/// The HTTP client shared by every URL.
pub(crate) struct Client {
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// The TLS settings of webhook requests: rustls with ring (as the rest of the
/// server), the webpki roots, and the certificates of `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> std::io::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth())
}

/// The webpki roots, and the certificates of `ca_file`.
fn root_store(ca_file: Option<&Path>) -> std::io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("webhook CA file {}: {e}", path.display()),
            )
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"no certificate in it"));
        }
    }
    Ok(roots)
}

impl Client {
    /// A client whose attempts time out after `timeout`.
    pub(crate) fn new(
        ca_file: Option<&Path>,
        timeout: Duration,
        max_idle_per_host: usize,
    ) -> std::io::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca_file)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(max_idle_per_host)
            .build(https);
        Ok(Client { pool, timeout })
    }

    /// POSTs `body` to `url` once.
    pub(crate) async fn post(&self, url: &Uri, signed: Signed<'_>, body: Bytes) -> Attempt {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header("webhook-id", signed.id)
            .header("webhook-timestamp", signed.timestamp)
            .header("webhook-signature", signed.signature)
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            // Not expected: the URL was parsed at start, and ids, numbers and
            // base64 are valid header values.
            Err(e) => {
                return Attempt::Rejected {
                    why: format!("cannot build the request: {e}"),
                }
            }
        };
        let response = match tokio::time::timeout(self.timeout, self.pool.request(request)).await {
            Err(_) => {
                return Attempt::Retry {
                    after: None,
                    why: format!("no response within {:?}", self.timeout),
                }
            }
            Ok(Err(e)) => {
                return Attempt::Retry {
                    after: None,
                    why: error_chain(&e),
                }
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let after = retry_after(response.headers());
        // Read what little the receiver said, so the connection can be
        // reused; its content does not matter.
        let drain = Limited::new(response.into_body(), MAX_RESPONSE_BODY).collect();
        let _ = tokio::time::timeout(self.timeout, drain).await;
        classify(status, after)
    }
}

/// The error and its sources, `: `-separated (hyper's top-level errors say
/// little: "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What a status means: 2xx delivered; 408, 429 and 5xx worth a retry;
/// anything else (3xx: redirects are not followed; 4xx) refused.
pub(crate) fn classify(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Attempt::Retry {
            after: retry_after,
            why: format!("HTTP {}", status.as_u16()),
        }
    } else {
        Attempt::Rejected {
            why: format!("HTTP {}", status.as_u16()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_delivers_and_only_5xx_408_429_retry() {
        for code in [200, 201, 202, 204, 299] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(matches!(classify(s, None), Attempt::Delivered), "{code}");
        }
        for code in [500, 502, 503, 504, 599, 408, 429] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(matches!(classify(s, None), Attempt::Retry { .. }), "{code}");
        }
        for code in [301, 302, 307, 400, 401, 403, 404, 410, 413, 422] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, None), Attempt::Rejected { .. }),
                "{code}"
            );
        }
        let a = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(3)),
        );
        assert!(matches!(a, Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(3)));
    }

    #[test]
    fn the_webpki_roots_are_trusted() {
        assert!(tls_config(None).is_ok());
        let roots = root_store(None).unwrap();
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(roots.len() > 100, "{}", roots.len());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("ss-webhook-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = tls_config(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        assert!(tls_config(Some(&dir.join("missing.pem"))).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
