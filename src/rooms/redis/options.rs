//! The shared registry's settings, and the Redis URL as logs may show it.

use std::fmt;
use std::time::Duration;

/// Settings of the shared registry.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL (a `#insecure` fragment on `rediss://`
    /// skips certificate verification).
    pub url: String,
    /// Skip TLS certificate verification (Heroku Redis presents a
    /// self-signed chain). Same as a `#insecure` fragment.
    pub insecure_tls: bool,
    /// Prefix of every key and channel, so several deployments (or tests) can
    /// share one Redis.
    pub prefix: String,
    /// How often the heartbeat key is refreshed.
    pub heartbeat_interval: Duration,
    /// How long the heartbeat key lives: an instance silent this long is
    /// taken for dead and its peers are reported as left.
    pub heartbeat_ttl: Duration,
    /// How often each instance looks for dead instances.
    pub reap_interval: Duration,
    /// How often each instance closes rooms whose grace period has ended.
    pub sweep_interval: Duration,
    /// Longest wait for one Redis command.
    pub command_timeout: Duration,
    /// How often the subscription connection is pinged, so that a silent
    /// half-open connection is noticed.
    pub subscription_ping: Duration,
    /// Expiry of room and token keys, refreshed by the instances that have
    /// members in the room (a backstop against leaks, not a protocol timer).
    pub key_ttl: Duration,
}

impl RedisOptions {
    /// The defaults for `url`: heartbeat every 1 s with a 3 s TTL, dead
    /// instances looked for every 1 s, grace deadlines swept every 500 ms.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            insecure_tls: false,
            prefix: "ss:".into(),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(3),
            reap_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(500),
            command_timeout: Duration::from_secs(2),
            subscription_ping: Duration::from_secs(5),
            key_ttl: Duration::from_secs(600),
        }
    }

    /// The longest time between an instance dying and its peers being
    /// reported as left elsewhere: its heartbeat key expires, then the next
    /// check finds it (plus a few milliseconds of scripts and pub/sub).
    pub fn death_bound(&self) -> Duration {
        self.heartbeat_ttl + self.reap_interval
    }

    /// The URL to connect with: `insecure_tls` adds `#insecure` to a
    /// `rediss://` URL.
    pub(super) fn effective_url(&self) -> String {
        let tls = self.url.starts_with("rediss://") || self.url.starts_with("valkeys://");
        if self.insecure_tls && tls && !self.url.contains('#') {
            format!("{}#insecure", self.url)
        } else {
            self.url.clone()
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("insecure_tls", &self.insecure_tls)
            .field("prefix", &self.prefix)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_ttl", &self.heartbeat_ttl)
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
