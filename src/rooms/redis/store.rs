//! The registry's connection to Redis: every command bounded by the command
//! timeout, the plain commands the registry sends (the Lua scripts have typed
//! calls of their own in [`super::scripts`]), and why a call failed.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, Script, ScriptInvocation};

use super::scripts::Scripts;

/// Why a Redis call failed (logged, never shown to peers).
#[derive(Debug)]
pub(super) enum Fail {
    Redis(RedisError),
    Timeout,
    Stopped,
    Reply(String),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Redis(e) => write!(f, "{e}"),
            Fail::Timeout => f.write_str("timed out"),
            Fail::Stopped => f.write_str("registry stopped"),
            Fail::Reply(r) => write!(f, "unexpected reply: {r}"),
        }
    }
}

impl Fail {
    /// A connection error, after which one retry is worth it (the first
    /// command after Redis returns may get the error of the last failed
    /// reconnection).
    pub fn is_connection_error(&self) -> bool {
        matches!(self, Fail::Redis(e)
            if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
    }
}

/// Redis as the registry sees it: one multiplexed connection (reconnecting
/// by itself), the key prefix, the scripts.
pub(super) struct Store {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// Set once the registry has stopped (or crashed): scripts and publishes
    /// are no longer sent.
    stopped: AtomicBool,
    pub(super) scripts: Scripts,
}

impl Store {
    pub fn new(conn: ConnectionManager, prefix: String, timeout: Duration) -> Self {
        Store {
            conn,
            prefix,
            timeout,
            stopped: AtomicBool::new(false),
            scripts: Scripts::new(),
        }
    }

    /// `{prefix}{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{}", self.prefix, rest)
    }

    /// The pub/sub channel of instance `inst`.
    pub fn channel(&self, inst: &str) -> String {
        format!("{}i:{}", self.prefix, inst)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    async fn timed<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Result<T, Fail> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Fail::Redis(e)),
            Err(_) => Err(Fail::Timeout),
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Fail> {
        let mut conn = self.conn.clone();
        self.timed(cmd.query_async(&mut conn)).await
    }

    async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Fail> {
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async(&mut conn)).await
    }

    /// Runs `script` with the key prefix as `ARGV[1]` and the arguments
    /// `args` adds. Only [`super::scripts`] calls it.
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        script: &Script,
        args: impl FnOnce(&mut ScriptInvocation<'_>),
    ) -> Result<T, Fail> {
        if self.is_stopped() {
            return Err(Fail::Stopped);
        }
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix);
        args(&mut inv);
        let mut conn = self.conn.clone();
        self.timed(inv.invoke_async(&mut conn)).await
    }

    /// Publishes `(channel, text)` messages, in order, on one connection.
    /// Fails if one of them reached no subscriber (its instance is not
    /// listening: it died and is about to be reaped, or is re-subscribing).
    pub async fn publish(&self, messages: Vec<(String, String)>) -> Result<(), Fail> {
        if self.is_stopped() {
            return Err(Fail::Stopped);
        }
        let counts = if let [(channel, text)] = &messages[..] {
            let mut cmd = ::redis::cmd("PUBLISH");
            cmd.arg(channel).arg(text);
            vec![self.query::<i64>(&cmd).await?]
        } else {
            let mut pipe = ::redis::pipe();
            for (channel, text) in &messages {
                pipe.cmd("PUBLISH").arg(channel).arg(text);
            }
            self.query_pipe::<Vec<i64>>(&pipe).await?
        };
        if counts.contains(&0) {
            return Err(Fail::Reply("an instance is not listening".into()));
        }
        Ok(())
    }

    /// What `{p}tok:{token}` holds (`j|room`, `w|room` or `r|room`), if any.
    pub async fn token(&self, token: &str) -> Result<Option<String>, Fail> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.key(&format!("tok:{token}")));
        self.query(&cmd).await
    }

    /// Refreshes instance `me`'s heartbeat key (it lives `ttl`) and lists
    /// the instance. Returns whether the key was still there: `false` means
    /// this instance was taken for dead or Redis lost its data.
    pub async fn heartbeat(&self, me: &str, ttl: Duration) -> Result<bool, Fail> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(&format!("inst:{me}")))
            .arg("1")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .arg("GET")
            .sadd(self.key("instances"), me)
            .ignore();
        let (previous,): (Option<String>,) = self.query_pipe(&pipe).await?;
        Ok(previous.is_some())
    }

    /// The rooms instance `inst` has the host or peers in.
    pub async fn instance_rooms(&self, inst: &str) -> Result<Vec<String>, Fail> {
        let mut cmd = ::redis::cmd("SMEMBERS");
        cmd.arg(self.key(&format!("inst:{inst}:rooms")));
        self.query(&cmd).await
    }

    /// Takes the lock for reaping dead instance `inst` (held `ttl`); `false`
    /// if another instance has it.
    pub async fn lock_reap(&self, inst: &str, me: &str, ttl: Duration) -> bool {
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.key(&format!("reap:{inst}")))
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        matches!(self.query::<Option<String>>(&cmd).await, Ok(Some(_)))
    }

    /// Forgets a reaped instance: its room list and its place in the list
    /// of instances.
    pub async fn forget_instance(&self, inst: &str) -> Result<(), Fail> {
        self.unlist_instance(inst, &format!("inst:{inst}:rooms"))
            .await
    }

    /// Removes instance `me`'s heartbeat and its place in the list of
    /// instances, so the others reap what is left of it at once.
    pub async fn deregister(&self, me: &str) -> Result<(), Fail> {
        self.unlist_instance(me, &format!("inst:{me}")).await
    }

    /// Deletes `{p}{key}` and takes `inst` out of the list of instances.
    async fn unlist_instance(&self, inst: &str, key: &str) -> Result<(), Fail> {
        let mut pipe = ::redis::pipe();
        pipe.del(self.key(key))
            .ignore()
            .srem(self.key("instances"), inst)
            .ignore();
        self.query_pipe(&pipe).await
    }
}
