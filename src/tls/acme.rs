//! Certificates from an ACME CA (Let's Encrypt by default) through
//! TLS-ALPN-01 on the TLS port, by `rustls-acme` (MIT/Apache, built on
//! ring here).
//!
//! Why `rustls-acme`: it is a resolver for the rustls configuration we
//! already build (no second TLS stack), answers TLS-ALPN-01 itself, so no
//! port 80 is needed, keeps account and certificates in a directory cache,
//! and renews on its own (read in its source, `state.rs`: the next order
//! is due when two thirds of the certificate's validity have passed, 30
//! days before expiry for Let's Encrypt's 90; failed orders are retried
//! with exponential back-off). Its HTTPS client
//! takes our rustls client configuration, so a private ACME CA (pebble,
//! step-ca) can be trusted with `--acme-ca-file`.
//!
//! What the cache directory holds (account key, certificate and its key) is
//! secret: the directory is created mode 0700.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls_acme::caches::DirCache;
use rustls_acme::AcmeConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Let's Encrypt's production directory (the default).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous
/// rate limits: for trying a setup).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// What `--acme-*` says.
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    /// The names of the certificate (the first is its subject).
    pub domains: Vec<String>,
    /// Contact addresses given to the CA (`mailto:` is added).
    pub emails: Vec<String>,
    /// Where account and certificates are kept across restarts; `None`:
    /// nowhere (every start orders a new certificate: mind the CA's rate
    /// limits).
    pub cache: Option<PathBuf>,
    /// The CA's directory URL.
    pub directory: String,
    /// Extra roots to trust for the CA's own HTTPS (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// Starts ordering (or loading from the cache) the certificate, renewing
/// it until `stop`; returns the resolver serving it (and the challenges).
pub fn start(
    options: AcmeOptions,
    stop: CancellationToken,
) -> Result<Arc<rustls_acme::ResolvesServerCertAcme>, String> {
    if options.domains.is_empty() {
        return Err("--acme-domain: at least one is needed".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &options.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|c| c.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--acme-ca-file {}: {e}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "--acme-ca-file {}: no usable certificate in it",
                path.display()
            ));
        }
    }
    let client = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if let Some(dir) = &options.cache {
        create_private_dir(dir).map_err(|e| format!("--acme-cache {}: {e}", dir.display()))?;
    }
    let mut state = AcmeConfig::new_with_client_config(&options.domains, Arc::new(client))
        .contact(options.emails.iter().map(|e| format!("mailto:{e}")))
        .cache_option(options.cache.clone().map(DirCache::new))
        .directory(&options.directory)
        .state();
    let resolver = state.resolver();
    info!(domains = ?options.domains, directory = %options.directory,
          cache = ?options.cache, "ACME: getting a certificate (TLS-ALPN-01 on the TLS port)");
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                event = state.next() => event,
            };
            match event {
                Some(Ok(ok)) => info!("ACME: {ok:?}"),
                Some(Err(err)) => warn!("ACME: {err}"),
                None => break,
            }
        }
    });
    Ok(resolver)
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
