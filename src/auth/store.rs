//! Revocations kept in Redis (with `--redis-url`): every instance refuses a
//! revoked token and ends the sessions it covers, also after a restart.
//!
//! ```text
//! {prefix}rev:jti:{jti}    expires_at            EXPIREAT expires_at
//! {prefix}rev:sub:{sub}    issued_before         EXPIREAT expires_at (both only ever grow)
//! {prefix}rev:room:{room}  issued_before         EXPIREAT expires_at (both only ever grow)
//! {prefix}rev              pub/sub channel: each revocation as JSON
//! ```
//!
//! [`RevocationStore::put`] writes the key and publishes the revocation in
//! one script, so neither goes without the other. Each instance's task
//! subscribes to the channel first, then loads every `{prefix}rev:*` key
//! (SCAN), so that nothing published in between is missed; it does so
//! again after every lost subscription. Applying a revocation twice is
//! harmless ([`RevocationList::apply`] only widens). Redis's own key expiry
//! forgets what no longer matters. Names are safe in keys: room names,
//! subjects and token ids hold no space, `*`, `?`, `[` or `{`, and the
//! kind comes before the name.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands as _, Client, Script};
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::names::{RoomName, Subject, TokenId};
use super::verify::unix_now;
use super::{Revocation, RevocationList, RevocationTarget};
use crate::rooms::RedisOptions;

/// Longest wait between two subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Writes a revocation's key (widening what is there) and publishes it.
/// KEYS: the key. ARGV: kind (`jti`/`sub`/`room`), issued_before (0 for a
/// jti), expires_at, channel, the revocation as JSON.
const PUT: &str = r#"
local k, kind, ib, exp, chan, json = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local old = redis.call('GET', k)
local oldexp = redis.call('EXPIRETIME', k)
if kind ~= 'jti' and old and tonumber(old) and tonumber(old) > ib then ib = tonumber(old) end
if oldexp and oldexp > exp then exp = oldexp end
if kind == 'jti' then
  redis.call('SET', k, string.format('%.0f', exp))
else
  redis.call('SET', k, string.format('%.0f', ib))
end
redis.call('EXPIREAT', k, exp)
redis.call('PUBLISH', chan, json)
return 1
"#;

/// Revocations in Redis, and the task that applies every instance's.
#[derive(Debug)]
pub struct RevocationStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RevocationStore {
    /// Connects (lazily) and starts the task that feeds `list` from Redis
    /// until `stop`.
    pub fn start(
        opts: &RedisOptions,
        list: Arc<RevocationList>,
        stop: CancellationToken,
    ) -> Result<Self, String> {
        let (client, conn) = crate::rooms::redis::connect(opts)?;
        let store = RevocationStore {
            conn,
            prefix: opts.prefix.clone(),
            timeout: opts.command_timeout,
        };
        let follower = Follower {
            client,
            conn: store.conn.clone(),
            prefix: store.prefix.clone(),
            timeout: opts.command_timeout,
            ping: opts.subscription_ping,
            list,
        };
        tokio::spawn(follower.run(stop));
        Ok(store)
    }

    /// Stores `revocation` and publishes it to every instance.
    pub async fn put(&self, revocation: &Revocation) -> Result<(), String> {
        let (kind, name, issued_before) = match &revocation.target {
            RevocationTarget::Token { jti, .. } => ("jti", jti.as_str(), 0),
            RevocationTarget::Subject { sub, issued_before } => {
                ("sub", sub.as_str(), *issued_before)
            }
            RevocationTarget::Room {
                room,
                issued_before,
            } => ("room", room.as_str(), *issued_before),
        };
        let key = format!("{}rev:{kind}:{name}", self.prefix);
        let json = serde_json::to_string(revocation).map_err(|e| e.to_string())?;
        let mut conn = self.conn.clone();
        let call = async {
            Script::new(PUT)
                .key(key)
                .arg(kind)
                .arg(issued_before)
                .arg(revocation.expires_at)
                .arg(channel(&self.prefix))
                .arg(json)
                .invoke_async::<i64>(&mut conn)
                .await
        };
        match tokio::time::timeout(self.timeout * 2, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

fn channel(prefix: &str) -> String {
    format!("{prefix}rev")
}

/// The task applying every instance's revocations to this one's list.
struct Follower {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    ping: Duration,
    list: Arc<RevocationList>,
}

impl Follower {
    async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        let mut lost = false;
        loop {
            let attempt = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(channel(&self.prefix)).await?;
                let loaded = self.load().await?;
                Ok::<_, ::redis::RedisError>((pubsub, loaded))
            };
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(self.timeout * 4, attempt) => r,
            };
            let pubsub = match result {
                Ok(Ok((pubsub, loaded))) => {
                    if lost || loaded > 0 {
                        info!(loaded, "revocations loaded from Redis");
                    }
                    backoff = Duration::from_millis(50);
                    pubsub
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    if !lost {
                        warn!("revocations: Redis subscription failed: {why}; retrying");
                        lost = true;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            let mut ping = tokio::time::interval(self.ping);
            ping.tick().await;
            let why = loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = stream.next() => match msg {
                        Some(msg) => self.on_message(msg.get_payload_bytes()),
                        None => break "connection closed".to_string(),
                    },
                    _ = ping.tick() => {
                        match tokio::time::timeout(self.timeout, sink.ping::<::redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => break e.to_string(),
                            Err(_) => break "ping timed out".to_string(),
                        }
                    }
                }
            };
            warn!("revocations: Redis subscription lost: {why}; re-subscribing");
            lost = true;
        }
    }

    fn on_message(&self, payload: &[u8]) {
        match serde_json::from_slice::<Revocation>(payload) {
            Ok(r) => self.apply(&r),
            Err(e) => debug!("ignored a malformed revocation: {e}"),
        }
    }

    fn apply(&self, r: &Revocation) {
        if let Err(e) = self.list.apply(r, unix_now()) {
            warn!("revocation not applied: {e}");
        }
    }

    /// Applies every stored revocation; how many there were.
    async fn load(&self) -> Result<usize, ::redis::RedisError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}rev:*", self.prefix);
        let keys: Vec<String> = {
            let mut iter = conn.scan_match::<_, String>(&pattern).await?;
            let mut keys = Vec::new();
            while let Some(k) = iter.next_item().await {
                keys.push(k?);
            }
            keys
        };
        let mut n = 0;
        for key in keys {
            let (value, expires_at): (Option<u64>, i64) = ::redis::pipe()
                .get(&key)
                .cmd("EXPIRETIME")
                .arg(&key)
                .query_async(&mut conn)
                .await?;
            let (Some(value), Ok(expires_at)) = (value, u64::try_from(expires_at)) else {
                continue; // gone meanwhile, or without an expiry
            };
            if let Some(r) = decode(&key[self.prefix.len()..], value, expires_at) {
                self.apply(&r);
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The revocation a stored key (without its prefix) holds.
fn decode(key: &str, value: u64, expires_at: u64) -> Option<Revocation> {
    let rest = key.strip_prefix("rev:")?;
    let (kind, name) = rest.split_once(':')?;
    let target = match kind {
        "jti" => RevocationTarget::Token {
            jti: TokenId::new(name).ok()?,
            exp: None,
        },
        "sub" => RevocationTarget::Subject {
            sub: Subject::new(name).ok()?,
            issued_before: value,
        },
        "room" => RevocationTarget::Room {
            room: RoomName::new(name).ok()?,
            issued_before: value,
        },
        _ => return None,
    };
    Some(Revocation { target, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_decode_into_their_revocations() {
        let r = decode("rev:room:robot-7", 100, 200).unwrap();
        assert_eq!(
            r.target,
            RevocationTarget::Room {
                room: RoomName::new("robot-7").unwrap(),
                issued_before: 100
            }
        );
        assert_eq!(r.expires_at, 200);
        let r = decode("rev:sub:ops@example.com:x", 5, 9).unwrap();
        assert!(matches!(r.target, RevocationTarget::Subject { .. }));
        assert!(matches!(
            decode("rev:jti:abc", 9, 9).unwrap().target,
            RevocationTarget::Token { .. }
        ));
        assert!(decode("rev:room:a b", 1, 2).is_none());
        assert!(decode("rev:what:x", 1, 2).is_none());
        assert!(decode("room:x", 1, 2).is_none());
    }
}
