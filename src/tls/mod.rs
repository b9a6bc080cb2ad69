//! TLS termination: the server's certificate, from PEM files reloaded when
//! they change ([`files`]) or obtained by ACME through TLS-ALPN-01
//! ([`acme`]), and the rustls configurations that serve it.
//!
//! One certificate resolver serves every TLS listener of the process: the
//! signalling port (HTTP/1.1, WebSockets, and ACME's `acme-tls/1`
//! challenges) and TURN over TLS. Swapping the certificate is swapping one
//! `Arc` inside the resolver: connections already up keep the certificate
//! they were made with, new handshakes get the new one, nothing is
//! restarted.
//!
//! rustls runs on the ring provider, as everywhere else in the tree.

pub mod acme;
mod args;
pub mod files;

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;

pub use acme::AcmeOptions;
pub use args::TlsArgs;
pub use files::{CertFiles, DEFAULT_RELOAD_INTERVAL};

/// The ALPN protocol of TLS-ALPN-01 validations (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The crypto provider of every TLS configuration here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS side of a server: the configurations of its listeners, sharing
/// one certificate resolver.
#[derive(Clone)]
pub struct ServerTls {
    web: Arc<ServerConfig>,
    turn: Arc<ServerConfig>,
    /// The names the certificate is for, when known (ACME's domains).
    domains: Vec<String>,
    source: &'static str,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("source", &self.source)
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Configurations around `resolver`; with `acme`, the signalling port
    /// also answers TLS-ALPN-01 challenges.
    pub fn new(
        resolver: Arc<dyn ResolvesServerCert>,
        acme: bool,
        domains: Vec<String>,
    ) -> Result<ServerTls, String> {
        let build = || {
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|b| b.with_no_client_auth().with_cert_resolver(resolver.clone()))
                .map_err(|e| format!("TLS setup failed: {e}"))
        };
        let mut web = build()?;
        // HTTP/1.1 only: the edge is an HTTP/1 server (WebSockets upgrade
        // from it), so a client offering h2 falls back to HTTP/1.1.
        web.alpn_protocols = vec![b"http/1.1".to_vec()];
        if acme {
            web.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        // TURN clients send no ALPN, or RFC 7443's "stun.turn": accept
        // either (a server without ALPN protocols ignores the extension).
        let turn = build()?;
        Ok(ServerTls {
            web: Arc::new(web),
            turn: Arc::new(turn),
            domains,
            source: if acme { "acme" } else { "files" },
        })
    }

    /// The configuration of the signalling port.
    pub fn web_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.web)
    }

    /// The configuration of TURN over TLS.
    pub fn turn_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.turn)
    }

    /// The names the certificate is for, when the server knows them
    /// (`--acme-domain`); empty for certificate files.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }
}

/// A TLS connection made only to answer an ACME TLS-ALPN-01 validation:
/// the handshake is all it is for.
pub fn is_acme_validation(conn: &rustls::ServerConnection) -> bool {
    conn.alpn_protocol() == Some(ACME_TLS_ALPN)
}
