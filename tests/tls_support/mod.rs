//! TLS clients for the tests of TLS termination: rustls (ring) trusting
//! only the CAs a test names, a raw HTTPS GET, a wss:// client of the test
//! kit, and the certificate a server presented.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::client::Client;
use testkit::http::Response;
use testkit::WAIT;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::MaybeTlsStream;

/// The certificates of a PEM file (DER).
pub fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("read PEM")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse PEM")
}

/// A rustls client (ring) trusting only the CAs in `cas`, speaking `alpn`,
/// without session resumption.
pub fn client_config(cas: &[&Path], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in pem_certs(ca) {
            roots.add(cert).expect("add CA");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every connection a full handshake: a resumed session shows the
    // certificate of the handshake it resumes, not the one served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A TLS connection to `addr` for the name `name`, within [`WAIT`].
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .map_err(|_| format!("no TLS connection to {addr} within {WAIT:?}"))?
}

/// The leaf certificate a connection's server presented.
pub fn served_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// `GET path` over TLS (`Connection: close`), within [`WAIT`].
pub async fn get(
    addr: SocketAddr,
    name: &str,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<Response, String> {
    let mut tls = connect(addr, name, config).await?;
    let exchange = async {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        // A server closing without close_notify is an error to rustls
        // after the bytes it read: keep them.
        let _ = tls.read_to_end(&mut raw).await;
        testkit::http::parse(&String::from_utf8_lossy(&raw))
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no answer to GET {path} within {WAIT:?}"))?
}

/// A wss:// client of the test kit on `path`, and the leaf certificate
/// its server presented.
pub async fn wss(
    addr: SocketAddr,
    name: &str,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(Client, CertificateDer<'static>), String> {
    let tls = connect(addr, name, config).await?;
    let leaf = served_leaf(&tls);
    let url = format!("wss://{name}:{}{path}", addr.port());
    let ws = testkit::net::handshake(url, MaybeTlsStream::Rustls(tls))
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok((Client { ws }, leaf))
}
