//! A real HTTP receiver for the webhook tests (hyper on a loopback port, TLS
//! optional), which records every request and answers as the test says, and
//! a signature check written apart from the server's (RustCrypto's HMAC, not
//! ring; the Standard Webhooks rules read from the specification).

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use signal_server::metrics::Metrics;
use signal_server::webhooks::{
    self, Backoff, Delivery, Secret, WebhookOptions, WebhookUrl, Webhooks,
};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How long a test waits for something that should happen.
pub use testkit::WAIT;
/// The tolerance the docs tell receivers to apply to `webhook-timestamp`.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// A secret for the tests, and its key bytes.
pub fn secret(fill: u8) -> (String, Vec<u8>) {
    let key = vec![fill; 32];
    (format!("whsec_{}", STANDARD.encode(&key)), key)
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered with (`None`: never answered).
    pub status: Option<u16>,
    pub at: Instant,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("an ASCII header")
    }

    pub fn id(&self) -> String {
        self.header("webhook-id").to_string()
    }

    /// Whether the timestamp is within the tolerance of now and one of the
    /// `webhook-signature` entries verifies under `key`.
    pub fn verifies(&self, key: &[u8]) -> bool {
        let Ok(ts) = self.header("webhook-timestamp").parse::<u64>() else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        now.abs_diff(ts) <= TOLERANCE.as_secs() && signature_matches(&self.headers, &self.body, key)
    }
}

/// Whether one of the `webhook-signature` entries of `headers` is the
/// HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` under `key`.
pub fn signature_matches(headers: &HeaderMap, body: &[u8], key: &[u8]) -> bool {
    use hmac::{Hmac, Mac as _};
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    header("webhook-signature").split(' ').any(|entry| {
        entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|sig| sig.as_slice() == expected.as_slice())
    })
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answers.
    Hang,
}

/// Decides the reply from the body and the number of this attempt for the
/// event (1 for the first).
pub type Script = Arc<dyn Fn(&Value, usize) -> Reply + Send + Sync>;

pub fn always(reply: Reply) -> Script {
    Arc::new(move |_, _| reply)
}

#[derive(Default)]
struct Log {
    hits: Vec<Hit>,
    attempts: HashMap<String, usize>,
}

/// A receiver on a loopback port. [`Receiver::stop`] closes the port and
/// every connection (an outage); [`Receiver::restart`] listens again on the
/// same port.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    script: Arc<Mutex<Script>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    pub async fn start(script: Script) -> Self {
        Self::start_with(script, None).await
    }

    pub async fn start_tls(script: Script, tls: rustls::ServerConfig) -> Self {
        Self::start_with(script, Some(Arc::new(tls))).await
    }

    async fn start_with(script: Script, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut r = Receiver {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
            script: Arc::new(Mutex::new(script)),
            tls,
            task: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: TcpListener) {
        let log = Arc::clone(&self.log);
        let script = Arc::clone(&self.script);
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        self.task = Some(tokio::spawn(async move {
            // Dropped with the task: aborting it closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (log, script, tls) = (Arc::clone(&log), Arc::clone(&script), tls.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(Arc::clone(&log), Arc::clone(&script), req)
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    pub fn url(&self, path: &str) -> WebhookUrl {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = if self.tls.is_some() {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        format!("{scheme}://{host}{path}")
            .parse()
            .expect("a webhook URL")
    }

    pub fn set_script(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    /// Closes the port and every open connection.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the same port again");
        self.serve(listener);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.log.lock().unwrap().hits.clone()
    }

    /// The answered-2xx requests, in the order they arrived.
    pub fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.status.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// Waits until `cond` holds of the hits so far.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + WAIT;
        loop {
            let hits = self.hits();
            if cond(&hits) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {} requests",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn handle(
    log: Arc<Mutex<Log>>,
    script: Arc<Mutex<Script>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let script = script.lock().unwrap().clone();
    let index;
    {
        let mut log = log.lock().unwrap();
        let attempt = log.attempts.entry(id).or_default();
        *attempt += 1;
        let reply = script(&value, *attempt);
        index = log.hits.len();
        log.hits.push(Hit {
            headers,
            body,
            status: None,
            at: Instant::now(),
        });
        let (status, retry_after) = match reply {
            Reply::Hang => None,
            Reply::Status(s) => Some((s, None)),
            Reply::RetryAfter(s, secs) => Some((s, Some(secs))),
        }
        .unzip();
        log.hits[index].status = status;
        if let Some(status) = status {
            let mut response = Response::builder().status(status);
            if let Some(Some(secs)) = retry_after {
                response = response.header("retry-after", secs.to_string());
            }
            return Ok(response.body(Full::new(Bytes::from_static(b"ok"))).unwrap());
        }
    }
    std::future::pending::<()>().await;
    unreachable!()
}

/// Options for tests: quick retries, a generous timeout.
pub fn options(urls: Vec<WebhookUrl>, secrets: &[&str]) -> WebhookOptions {
    let secrets: Vec<Secret> = secrets
        .iter()
        .map(|s| s.parse().expect("a secret"))
        .collect();
    let mut o = WebhookOptions::new(urls, secrets);
    o.backoff = Backoff {
        first: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    o.retry_window = Duration::from_secs(60);
    o.timeout = Duration::from_secs(60);
    o.flush_timeout = Duration::from_secs(5);
    o
}

/// Delivery started with `options`, and the metrics it counts into.
pub fn start(options: WebhookOptions) -> (Webhooks, Delivery, Metrics) {
    let metrics = Metrics::new();
    let (hooks, delivery) =
        webhooks::start(Some(options), metrics.webhooks().clone()).expect("start webhooks");
    (hooks, delivery, metrics)
}

/// Waits until `cond` holds.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it, made
/// by `openssl` in `dir`: returns the CA file and the server's TLS config.
pub fn tls_fixture(dir: &Path) -> (PathBuf, rustls::ServerConfig) {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let made = testkit::tls::ca_and_leaf(dir, "webhook test CA");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&made.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&made.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (made.ca, config)
}
