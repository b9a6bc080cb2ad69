//! The TLS options of `serve` (flattened into its flags).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{acme, AcmeOptions, CertFiles, ServerTls};

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 1m)"))
}

/// TLS on the listening port: certificate files, or ACME.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Serve HTTPS and wss:// with this PEM certificate chain (leaf first,
    /// e.g. certbot's fullchain.pem); reloaded when it changes.
    #[arg(
        long,
        env = "SIGNAL_SERVER_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key",
        conflicts_with = "acme_domain"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert (e.g. certbot's privkey.pem).
    #[arg(
        long,
        env = "SIGNAL_SERVER_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// How often --tls-cert and --tls-key are checked for a change
    /// (a renewal): new connections get the new certificate, open ones
    /// stay up.
    #[arg(long, env = "SIGNAL_SERVER_TLS_RELOAD_INTERVAL", value_parser = duration,
          default_value = "10s", value_name = "DURATION")]
    pub tls_reload_interval: Duration,

    /// Get the certificate for this name from an ACME CA (Let's Encrypt by
    /// default) through TLS-ALPN-01 on the TLS port, which must be
    /// reachable on port 443 from the internet (repeatable; the first is
    /// the certificate's subject).
    #[arg(
        long = "acme-domain",
        env = "SIGNAL_SERVER_ACME_DOMAINS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub acme_domain: Vec<String>,

    /// Contact address given to the ACME CA (expiry notices; repeatable).
    #[arg(
        long = "acme-email",
        env = "SIGNAL_SERVER_ACME_EMAIL",
        value_delimiter = ',',
        value_name = "ADDRESS",
        requires = "acme_domain"
    )]
    pub acme_email: Vec<String>,

    /// Keep the ACME account and certificates in this directory (created
    /// mode 0700), so that a restart reuses them instead of ordering again
    /// (Let's Encrypt limits orders to 5 a week per set of names).
    #[arg(
        long,
        env = "SIGNAL_SERVER_ACME_CACHE",
        value_name = "DIR",
        requires = "acme_domain"
    )]
    pub acme_cache: Option<PathBuf>,

    /// The ACME directory URL. Let's Encrypt's staging CA, for trying a
    /// setup without its production rate limits (its certificates are not
    /// trusted by browsers):
    /// https://acme-staging-v02.api.letsencrypt.org/directory
    #[arg(long, env = "SIGNAL_SERVER_ACME_DIRECTORY", value_name = "URL",
          default_value = acme::LETS_ENCRYPT, requires = "acme_domain")]
    pub acme_directory: String,

    /// Also trust these PEM roots for the ACME CA's own HTTPS (a private
    /// ACME CA such as step-ca or pebble).
    #[arg(
        long,
        env = "SIGNAL_SERVER_ACME_CA_FILE",
        value_name = "PEM",
        requires = "acme_domain"
    )]
    pub acme_ca_file: Option<PathBuf>,

    /// Also listen for plain HTTP here and answer every request with a
    /// redirect (308) to the same URL over https:// on the TLS port, except
    /// /healthz, answered as on the TLS port (for load balancers and
    /// probes that check plain HTTP). Only with TLS. Usually 0.0.0.0:80.
    #[arg(
        long,
        env = "SIGNAL_SERVER_HTTP_REDIRECT_BIND",
        value_name = "ADDRESS:PORT"
    )]
    pub http_redirect_bind: Option<SocketAddr>,
}

impl TlsArgs {
    /// The TLS these options ask for (`None`: plain HTTP), its reloading or
    /// renewing task running until `stop`.
    pub fn start(&self, stop: CancellationToken) -> Result<Option<ServerTls>, String> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let files = CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                let resolver = super::files::watch(files, self.tls_reload_interval, stop)?;
                Some(ServerTls::new(resolver, false, Vec::new())?)
            }
            _ if !self.acme_domain.is_empty() => {
                let resolver = acme::start(
                    AcmeOptions {
                        domains: self.acme_domain.clone(),
                        emails: self.acme_email.clone(),
                        cache: self.acme_cache.clone(),
                        directory: self.acme_directory.clone(),
                        ca_file: self.acme_ca_file.clone(),
                    },
                    stop,
                )?;
                Some(ServerTls::new(resolver, true, self.acme_domain.clone())?)
            }
            _ => None,
        };
        if tls.is_none() && self.http_redirect_bind.is_some() {
            return Err(
                "--http-redirect-bind redirects to https://: it needs --tls-cert/--tls-key or --acme-domain"
                    .into(),
            );
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn parse(args: &[&str]) -> Result<TlsArgs, clap::Error> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.tls)
    }

    #[test]
    fn tls_options_come_in_pairs_and_one_source_at_a_time() {
        let none = parse(&[]).unwrap();
        assert!(none.tls_cert.is_none() && none.acme_domain.is_empty());
        assert_eq!(none.acme_directory, acme::LETS_ENCRYPT);
        assert_eq!(none.tls_reload_interval, Duration::from_secs(10));
        assert!(parse(&["--tls-cert", "c.pem"]).is_err(), "a key is needed");
        assert!(
            parse(&["--tls-key", "k.pem"]).is_err(),
            "a certificate is needed"
        );
        assert!(parse(&[
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--acme-domain",
            "a.example"
        ])
        .is_err());
        assert!(
            parse(&["--acme-email", "ops@example.com"]).is_err(),
            "needs a domain"
        );
        let acme = parse(&[
            "--acme-domain",
            "a.example",
            "--acme-domain",
            "b.example",
            "--acme-directory",
            acme::LETS_ENCRYPT_STAGING,
        ])
        .unwrap();
        assert_eq!(acme.acme_domain, ["a.example", "b.example"]);
    }

    #[tokio::test]
    async fn the_redirect_port_needs_tls_and_bad_files_fail_at_start() {
        let stop = CancellationToken::new();
        let redirect = parse(&["--http-redirect-bind", "127.0.0.1:80"]).unwrap();
        assert!(redirect
            .start(stop.clone())
            .unwrap_err()
            .contains("--tls-cert"));
        assert!(parse(&[]).unwrap().start(stop.clone()).unwrap().is_none());
        let missing = parse(&[
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .unwrap();
        assert!(missing
            .start(stop)
            .unwrap_err()
            .contains("/nonexistent/c.pem"));
    }
}
