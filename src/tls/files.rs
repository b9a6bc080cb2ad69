//! A certificate and key from PEM files (`--tls-cert`, `--tls-key`),
//! reloaded when either changes.
//!
//! The files are polled: every interval their modification times and sizes
//! (through symlinks, as certbot's `live/` links point into `archive/`) are
//! compared with those last loaded. A change loads both; a pair that does
//! not parse or whose key does not match the certificate (a renewal caught
//! half-written) is logged and the certificate in use stays, to be tried
//! again at the next change. Polling needs no inotify, works on every file
//! system and costs two `stat` calls per interval.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the files are checked for a change by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The certificate chain and key files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first (certbot's `fullchain.pem`).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What a pair of files looked like when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp([(Option<SystemTime>, u64); 2]);

fn stamp(files: &CertFiles) -> Stamp {
    let one = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    Stamp([one(&files.cert), one(&files.key)])
}

impl CertFiles {
    /// Reads and checks both files.
    pub fn load(&self) -> Result<CertifiedKey, String> {
        let cert = self.cert.display();
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
        if chain.is_empty() {
            return Err(format!("--tls-cert {cert}: no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("--tls-key {}: {e}", self.key.display()))?;
        CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| {
            format!(
                "--tls-cert {cert} and --tls-key {}: {e}",
                self.key.display()
            )
        })
    }
}

/// Resolves every handshake to the certificate loaded last.
pub struct FileResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for FileResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileResolver")
    }
}

impl FileResolver {
    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for FileResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Loads the files (an error if they are unusable now), and keeps
/// reloading them every `interval` until `stop`.
pub fn watch(
    files: CertFiles,
    interval: Duration,
    stop: CancellationToken,
) -> Result<Arc<FileResolver>, String> {
    let mut last = stamp(&files);
    let resolver = Arc::new(FileResolver {
        current: RwLock::new(Arc::new(files.load()?)),
    });
    info!(cert = %files.cert.display(), key = %files.key.display(), ?interval,
          "TLS: certificate loaded; reloaded when the files change");
    let swap = Arc::clone(&resolver);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = stamp(&files);
            if now == last {
                continue;
            }
            last = now;
            // Reading is a few kilobytes: fine on the runtime.
            match files.load() {
                Ok(key) => {
                    swap.set(key);
                    info!(cert = %files.cert.display(), "TLS: certificate reloaded");
                }
                Err(e) => warn!("TLS: not reloaded, the certificate in use stays: {e}"),
            }
        }
    });
    Ok(resolver)
}
