//! The webhook settings: the `--webhook-*` flags ([`WebhookArgs`], flattened
//! into the server's options) and what they describe ([`WebhookOptions`]).

use std::ffi::OsStr;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::Args;
use hyper::Uri;

use super::retry::Backoff;
use super::sign::Secret;

/// Default capacity of each URL's queue, in events.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default time one attempt may take, from connecting to the response's
/// status line (the Standard Webhooks specification recommends 15 to 30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time an event is retried for, from its first attempt.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Default time a shutdown gives queued events to be delivered.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of requests in flight to one URL at once (for different
/// rooms: one room's events go one after the other).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// A webhook URL (`http://` or `https://`). Its `Debug` and [`label`]
/// show only the scheme, host and port: the path or query of a webhook URL
/// often holds a credential.
///
/// [`label`]: WebhookUrl::label
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    uri: Uri,
    label: String,
}

impl WebhookUrl {
    /// The full URL, to send to.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `scheme://host:port`, for logs.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({}/…)", self.label)
    }
}

impl FromStr for WebhookUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The parser's error is not shown: it could quote a credential.
        let uri: Uri = s.trim().parse().map_err(|_| {
            "not a URL (expected http://host/path or https://host/path)".to_string()
        })?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s,
            _ => return Err("a webhook URL starts with http:// or https://".into()),
        };
        let Some(authority) = uri.authority() else {
            return Err("a webhook URL names a host".into());
        };
        if authority.as_str().contains('@') {
            return Err(
                "a webhook URL may not carry a user or password (put a credential in the path \
                 or query; the signature already proves who sent the event)"
                    .into(),
            );
        }
        let label = match authority.port() {
            Some(port) => format!("{scheme}://{}:{port}", authority.host()),
            None => format!("{scheme}://{}", authority.host()),
        };
        Ok(WebhookUrl { uri, label })
    }
}

/// Everything webhook delivery needs. Build it with [`WebhookOptions::new`]
/// (defaults) or from the flags with [`WebhookArgs::options`].
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Where to POST every event.
    pub urls: Vec<WebhookUrl>,
    /// Signing secrets; every request carries one signature per secret.
    pub secrets: Vec<Secret>,
    /// Events queued per URL before new ones are dropped (`queue_full`).
    pub queue_capacity: usize,
    /// Time one attempt may take.
    pub timeout: Duration,
    /// Time an event is retried for, from its first attempt.
    pub retry_window: Duration,
    /// Time a shutdown gives queued events to be delivered.
    pub flush_timeout: Duration,
    /// The retry schedule.
    pub backoff: Backoff,
    /// Requests in flight to one URL at once.
    pub max_in_flight: usize,
    /// PEM certificates trusted for `https://` URLs besides the webpki
    /// (Mozilla) roots: a private CA of internal receivers.
    pub ca_file: Option<PathBuf>,
}

impl WebhookOptions {
    /// Delivery to `urls`, signed with `secrets`, with the default limits.
    pub fn new(urls: Vec<WebhookUrl>, secrets: Vec<Secret>) -> Self {
        WebhookOptions {
            urls,
            secrets,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            timeout: DEFAULT_TIMEOUT,
            retry_window: DEFAULT_RETRY_WINDOW,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            backoff: Backoff::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            ca_file: None,
        }
    }
}

/// Parses a flag's value with `FromStr` like clap's own parsers, except that
/// its error does not quote the value: a malformed secret or URL may still be
/// a credential, and startup errors end up in logs.
#[derive(Clone)]
struct Unquoted<T>(PhantomData<fn() -> T>);

impl<T> Unquoted<T> {
    fn new() -> Self {
        Unquoted(PhantomData)
    }
}

impl<T> TypedValueParser for Unquoted<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map(ToString::to_string).unwrap_or_default();
        let refuse = |why: &str| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value for {name}: {why}\n"),
            )
            .with_cmd(cmd)
        };
        value
            .to_str()
            .ok_or_else(|| refuse("not UTF-8"))?
            .parse()
            .map_err(|why: String| refuse(&why))
    }
}

/// Webhook options of the server.
#[derive(Debug, Args, Clone)]
pub struct WebhookArgs {
    /// POST every room and peer event, signed, to this URL (repeatable, or
    /// comma-separated in the variable). See docs/WEBHOOKS.md.
    #[arg(
        long = "webhook-url",
        env = "SIGNAL_SERVER_WEBHOOK_URLS",
        value_delimiter = ',',
        value_parser = Unquoted::<WebhookUrl>::new(),
        hide_env_values = true,
        requires = "webhook_secrets"
    )]
    pub webhook_urls: Vec<WebhookUrl>,

    /// Secret the webhooks are signed with: `whsec_` and 24 to 64 random
    /// bytes in base64 (echo "whsec_$(openssl rand -base64 32)"). Required
    /// with --webhook-url. Give two while rotating: each request is signed
    /// with both. Never logged.
    #[arg(
        long = "webhook-secret",
        env = "SIGNAL_SERVER_WEBHOOK_SECRET",
        value_delimiter = ',',
        value_parser = Unquoted::<Secret>::new(),
        hide_env_values = true
    )]
    pub webhook_secrets: Vec<Secret>,

    /// Events queued per webhook URL; when full, new events for that URL are
    /// dropped and counted (the relay never waits for a webhook).
    #[arg(long, env = "SIGNAL_SERVER_WEBHOOK_QUEUE", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    pub webhook_queue: usize,

    /// Time one delivery attempt may take before it counts as failed.
    #[arg(long, env = "SIGNAL_SERVER_WEBHOOK_TIMEOUT", value_parser = crate::cli::duration, default_value = "15s")]
    pub webhook_timeout: Duration,

    /// How long a failing event is retried (5xx, 408, 429, timeouts,
    /// connection errors), from its first attempt; then it is dropped.
    #[arg(long, env = "SIGNAL_SERVER_WEBHOOK_RETRY_WINDOW", value_parser = crate::cli::duration, default_value = "10m")]
    pub webhook_retry_window: Duration,

    /// On shutdown, how long to keep delivering what is queued.
    #[arg(long, env = "SIGNAL_SERVER_WEBHOOK_FLUSH_TIMEOUT", value_parser = crate::cli::duration, default_value = "5s")]
    pub webhook_flush_timeout: Duration,

    /// Also trust the CA certificates in this PEM file for https:// webhook
    /// URLs (the webpki roots are always trusted).
    #[arg(long, env = "SIGNAL_SERVER_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
}

impl WebhookArgs {
    /// The delivery these flags describe; `None` without a URL.
    pub fn options(&self) -> Option<WebhookOptions> {
        if self.webhook_urls.is_empty() {
            return None;
        }
        let mut o = WebhookOptions::new(self.webhook_urls.clone(), self.webhook_secrets.clone());
        o.queue_capacity = self.webhook_queue.max(1);
        o.timeout = self.webhook_timeout;
        o.retry_window = self.webhook_retry_window;
        o.flush_timeout = self.webhook_flush_timeout;
        o.ca_file.clone_from(&self.webhook_ca_file);
        Some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory as _, Parser as _};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_webhook_url_needs_a_secret() {
        let err = Cli::try_parse_from(["signal-server", "--webhook-url", "https://h.example/x"])
            .unwrap_err();
        assert!(err.to_string().contains("--webhook-secret"), "{err}");
    }

    #[test]
    fn the_flags_describe_the_delivery_with_documented_defaults() {
        let cli = Cli::try_parse_from(["signal-server"]).unwrap();
        if std::env::var_os("SIGNAL_SERVER_WEBHOOK_URLS").is_none() {
            assert!(cli.serve.config().webhooks.is_none());
        }
        let cli = Cli::try_parse_from([
            "signal-server",
            "--webhook-url",
            "https://a.example/hook",
            "--webhook-url",
            "http://127.0.0.1:9/b",
            "--webhook-secret",
            SECRET,
        ])
        .unwrap();
        let o = cli.serve.config().webhooks.unwrap();
        assert_eq!(o.urls.len(), 2);
        assert_eq!(o.secrets.len(), 1);
        assert_eq!(o.queue_capacity, 10_000);
        assert_eq!(o.timeout, Duration::from_secs(15));
        assert_eq!(o.retry_window, Duration::from_secs(600));
        assert_eq!(o.flush_timeout, Duration::from_secs(5));
        let cli = Cli::try_parse_from([
            "signal-server",
            "--webhook-url",
            "https://a.example/hook",
            "--webhook-secret",
            SECRET,
            "--webhook-queue",
            "4",
            "--webhook-retry-window",
            "30s",
        ])
        .unwrap();
        let o = cli.serve.config().webhooks.unwrap();
        assert_eq!(
            (o.queue_capacity, o.retry_window),
            (4, Duration::from_secs(30))
        );
        for (url, secret) in [
            ("ftp://x/y", SECRET),
            ("https://x/y", "whsec_hunter2hunter2"),
        ] {
            let err = Cli::try_parse_from([
                "signal-server",
                "--webhook-url",
                url,
                "--webhook-secret",
                secret,
            ])
            .unwrap_err()
            .to_string();
            assert!(err.contains("invalid value for --webhook-"), "{err}");
            // A malformed secret may still be a secret: errors do not quote it.
            assert!(
                !err.contains("hunter2") && !err.contains("ftp://x"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_secret_appears_neither_in_debug_output_nor_in_help() {
        let cli = Cli::try_parse_from([
            "signal-server",
            "--webhook-url",
            "https://a.example/hook?key=k3y",
            "--webhook-secret",
            SECRET,
        ])
        .unwrap();
        let debug = format!("{:?} {:?}", cli.serve, cli.serve.config());
        assert!(
            !debug.contains("MfKQ9r8G") && !debug.contains("k3y"),
            "{debug}"
        );
        let command = Cli::command();
        for id in ["webhook_secrets", "webhook_urls"] {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(arg.is_hide_env_values_set(), "{id}");
        }
    }

    #[test]
    fn urls_are_http_or_https_and_their_labels_hide_path_and_query() {
        let u: WebhookUrl = "https://hooks.example.com/services/T0/B0/s3cr3t?k=v"
            .parse()
            .unwrap();
        assert_eq!(u.label(), "https://hooks.example.com");
        assert_eq!(format!("{u:?}"), "WebhookUrl(https://hooks.example.com/…)");
        assert_eq!(u.uri().path(), "/services/T0/B0/s3cr3t");
        let u: WebhookUrl = "http://127.0.0.1:8080/hook".parse().unwrap();
        assert_eq!(u.label(), "http://127.0.0.1:8080");
        for bad in [
            "ftp://x/y",
            "hooks.example.com/x",
            "/relative",
            "https://",
            "not a url",
        ] {
            assert!(bad.parse::<WebhookUrl>().is_err(), "{bad}");
        }
        let err = "https://me:hunter2@example.com/h"
            .parse::<WebhookUrl>()
            .unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
