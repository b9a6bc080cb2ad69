//! The shared registry: several instances serve the same rooms through Redis.
//!
//! Rooms, tokens, membership and host-resume state live in Redis (Lua scripts
//! in [`scripts`] change them atomically and publish what changed). Each
//! instance subscribes to its own channel, `{prefix}i:{instance}`, and keeps a
//! local copy of every room it has members in ([`cache`]), so a relay reads no
//! Redis: a message for a peer on this instance goes straight to its outbox; a
//! message for a peer elsewhere is one `PUBLISH` to that peer's instance.
//!
//! Background tasks: the subscriber (re-subscribes after a failure), the
//! heartbeat (refreshes `{prefix}inst:{instance}`, which expires after
//! `heartbeat_ttl`), the janitor (closes rooms whose grace period ended, and
//! reaps instances whose heartbeat expired: their peers are reported as left)
//! and the reconciler (after Redis was unreachable or lost its data,
//! re-asserts what this instance knows and re-reads each room).
//!
//! The design, its costs and its bounds are in `docs/SCALING.md`.

mod cache;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ws::Utf8Bytes;
use ::redis::aio::ConnectionManager;
use ::redis::{Client, RedisError, Script};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::cache::{
    parse_event, parse_peers, role_code, Applied, Ctx, Event, HostAt, LocalGuest, LocalHost,
    LocalRoom, RoomCache, Snapshot,
};
use super::{room_not_found, Member, PeerLink, Queued, Registry, RoomLimits, Welcome};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, InitRequest, PeerError, RelayKind, Role, ServerMessage};
use crate::token;

/// How long an event for a peer or room that is not registered here yet is
/// kept (a peer's registration follows its script's reply within
/// milliseconds; the events it may race with are kept this long).
const HOLD_FOR: Duration = Duration::from_secs(10);
/// Rooms refreshed per `TOUCH` call.
const TOUCH_BATCH: usize = 200;

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
    fn effective_url(&self) -> String {
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

struct Scripts {
    create: Script,
    attach: Script,
    resume: Script,
    leave: Script,
    leave_host: Script,
    sweep: Script,
    find_dead: Script,
    reap: Script,
    sync: Script,
    touch: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&scripts::source(body));
        Scripts {
            create: s(scripts::CREATE),
            attach: s(scripts::ATTACH),
            resume: s(scripts::RESUME),
            leave: s(scripts::LEAVE),
            leave_host: s(scripts::LEAVE_HOST),
            sweep: s(scripts::SWEEP),
            find_dead: s(scripts::FIND_DEAD),
            reap: s(scripts::REAP),
            sync: s(scripts::SYNC),
            touch: s(scripts::TOUCH),
        }
    }
}

/// Why a Redis call failed (logged, never shown to peers).
#[derive(Debug)]
enum Fail {
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

#[derive(Default)]
struct Local {
    rooms: HashMap<String, Arc<LocalRoom>>,
    /// Events for rooms not (yet) known here.
    orphans: HashMap<String, Vec<(Instant, Event)>>,
    /// Rooms whose shared state this instance failed to update.
    dirty: HashSet<String>,
}

struct Inner {
    me: String,
    opts: RedisOptions,
    limits: RoomLimits,
    metrics: Metrics,
    client: Client,
    conn: ConnectionManager,
    scripts: Scripts,
    local: Mutex<Local>,
    subscribed: AtomicBool,
    /// Subscriptions lost since start.
    losses: AtomicU64,
    reachable: AtomicBool,
    stopped: AtomicBool,
    stop: CancellationToken,
    reconcile: Notify,
    /// Enters and leaves hold it shared across their script; a re-sync holds
    /// it exclusively for one room, so the local peers it asserts are not
    /// changed by an enter or leave whose script runs meanwhile.
    gate: tokio::sync::RwLock<()>,
    /// The background tasks.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The shared registry. Cheap to clone.
#[derive(Clone)]
pub struct RedisRegistry {
    inner: Arc<Inner>,
}

fn unavailable() -> PeerError {
    PeerError::new(
        ErrorCode::Unavailable,
        "rooms are unavailable right now; try again",
    )
}

fn reply_str(v: &[String], i: usize) -> Result<&str, Fail> {
    v.get(i)
        .map(String::as_str)
        .ok_or_else(|| Fail::Reply(format!("{} fields", v.len())))
}

fn reply_u64(v: &[String], i: usize) -> Result<u64, Fail> {
    let s = reply_str(v, i)?;
    s.parse()
        .map_err(|_| Fail::Reply(format!("not a number: {s}")))
}

fn host_at(inst: &str, epoch: u64) -> Option<HostAt> {
    (!inst.is_empty()).then(|| HostAt {
        inst: inst.to_string(),
        epoch,
    })
}

impl RedisRegistry {
    /// Starts a registry on `opts.url` and its background tasks. Redis need
    /// not be reachable yet: until it is, `healthy()` is false and new rooms
    /// are refused with `unavailable`. Fails only on a malformed URL.
    pub fn start(opts: RedisOptions, limits: RoomLimits, metrics: Metrics) -> Result<Self, String> {
        let url = opts.effective_url();
        let client = Client::open(url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
        let insecure = url.ends_with("#insecure");
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.command_timeout))
            .set_response_timeout(Some(opts.command_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        let me = token::new_peer_id();
        info!(
            instance = %me,
            redis = %redact_url(&opts.url),
            prefix = %opts.prefix,
            "rooms are shared through Redis"
        );
        if insecure {
            warn!("Redis TLS certificate verification is disabled (--redis-insecure-tls or #insecure)");
        }
        let registry = RedisRegistry {
            inner: Arc::new(Inner {
                me,
                opts,
                limits,
                metrics,
                client,
                conn,
                scripts: Scripts::new(),
                local: Mutex::new(Local::default()),
                subscribed: AtomicBool::new(false),
                losses: AtomicU64::new(0),
                reachable: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                stop: CancellationToken::new(),
                reconcile: Notify::new(),
                gate: tokio::sync::RwLock::new(()),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let tasks = vec![
            tokio::spawn(registry.clone().subscriber()),
            tokio::spawn(registry.clone().heartbeat()),
            tokio::spawn(registry.clone().janitor()),
            tokio::spawn(registry.clone().reconciler()),
        ];
        *registry.tasks() = tasks;
        Ok(registry)
    }

    /// This instance's id (in Redis keys, channels and logs).
    pub fn instance(&self) -> &str {
        &self.inner.me
    }

    /// How many times the subscription to this instance's channel was lost
    /// since start (each loss is followed by a re-sync of its rooms).
    pub fn subscription_losses(&self) -> u64 {
        self.inner.losses.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    /// Waits until the registry is healthy, up to `timeout`.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.healthy() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops the background tasks and removes this instance's heartbeat, so
    /// the others reap what is left of it at once. Call after the server has
    /// stopped (its sessions have left their rooms by then).
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        // A heartbeat in flight must not re-register us after we leave.
        let tasks = std::mem::take(&mut *self.tasks());
        for task in tasks {
            if tokio::time::timeout(inner.opts.command_timeout * 2, task)
                .await
                .is_err()
            {
                debug!("a background task did not stop in time");
            }
        }
        let mut conn = inner.conn.clone();
        let mut pipe = ::redis::pipe();
        pipe.del(self.key(&format!("inst:{}", inner.me)))
            .ignore()
            .srem(self.key("instances"), &inner.me)
            .ignore();
        let _ = tokio::time::timeout(
            inner.opts.command_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await;
        inner.stopped.store(true, Ordering::SeqCst);
        info!(instance = %inner.me, "left the shared registry");
    }

    /// Stops this registry as if its process had been killed: its background
    /// tasks end, its subscription drops, and from now on it sends Redis
    /// nothing at all, not even the leaves of its peers. For tests of
    /// instance failure.
    pub fn crash(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.stop.cancel();
        for task in self.tasks().drain(..) {
            task.abort();
        }
        warn!(instance = %self.inner.me, "registry crashed (simulated)");
    }

    fn tasks(&self) -> MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{}", self.inner.opts.prefix, rest)
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.opts.key_ttl.as_millis() as u64
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            metrics: &self.inner.metrics,
        }
    }

    /// Runs a script with a timeout.
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, Fail> {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Err(Fail::Stopped);
        }
        let mut inv = script.prepare_invoke();
        inv.arg(&self.inner.opts.prefix);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(self.inner.opts.command_timeout, inv.invoke_async(&mut conn))
            .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Fail::Redis(e)),
            Err(_) => Err(Fail::Timeout),
        }
    }

    /// [`Self::run`] for create and attach: retried once after a connection
    /// error (the first command after Redis returns may get the error of the
    /// last failed reconnection). What a first attempt may nevertheless have
    /// written is removed by the re-sync that a failure schedules.
    async fn run_retrying<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, Fail> {
        match self.run(script, args).await {
            Err(Fail::Redis(e))
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() =>
            {
                debug!("retrying after a connection error: {e}");
                self.inner.reconcile.notify_one();
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.run(script, args).await
            }
            other => other,
        }
    }

    /// Publishes messages, in order, on one connection. Fails if one of
    /// them reached no subscriber (its instance is not listening: it died
    /// and is about to be reaped, or is re-subscribing).
    async fn publish(&self, messages: Vec<(String, String)>) -> Result<(), Fail> {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Err(Fail::Stopped);
        }
        let mut conn = self.inner.conn.clone();
        let result = if let [(channel, text)] = &messages[..] {
            let mut cmd = ::redis::cmd("PUBLISH");
            cmd.arg(channel).arg(text);
            tokio::time::timeout(
                self.inner.opts.command_timeout,
                cmd.query_async::<i64>(&mut conn),
            )
            .await
            .map(|r| r.map(|n| vec![n]))
        } else {
            let mut pipe = ::redis::pipe();
            for (channel, text) in &messages {
                pipe.cmd("PUBLISH").arg(channel).arg(text);
            }
            tokio::time::timeout(
                self.inner.opts.command_timeout,
                pipe.query_async::<Vec<i64>>(&mut conn),
            )
            .await
        };
        match result {
            Ok(Ok(counts)) if counts.contains(&0) => {
                Err(Fail::Reply("an instance is not listening".into()))
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Fail::Redis(e)),
            Err(_) => Err(Fail::Timeout),
        }
    }

    fn channel(&self, inst: &str) -> String {
        format!("{}i:{}", self.inner.opts.prefix, inst)
    }

    fn mark_dirty(&self, room: &str) {
        self.local().dirty.insert(room.to_string());
    }

    /// The room's entry, created from `snapshot` if there is none; events that
    /// arrived for the room before it are moved into it.
    fn room_entry(&self, room: &str, snapshot: &Snapshot) -> (Arc<LocalRoom>, bool) {
        let mut local = self.local();
        if let Some(r) = local.rooms.get(room) {
            return (Arc::clone(r), false);
        }
        let mut cache = RoomCache::from_snapshot(snapshot);
        if let Some(orphans) = local.orphans.remove(room) {
            for (at, e) in orphans {
                cache.hold(at, e);
            }
        }
        let entry = Arc::new(LocalRoom::new(room.to_string(), cache));
        local.rooms.insert(room.to_string(), Arc::clone(&entry));
        (entry, true)
    }

    /// Forgets a room that has no member here any more.
    fn forget_if_empty(&self, room: &Arc<LocalRoom>) {
        let mut local = self.local();
        let mut st = room.lock();
        if st.is_empty() && !st.detached {
            st.detached = true;
            drop(st);
            if local
                .rooms
                .get(&room.id)
                .is_some_and(|r| Arc::ptr_eq(r, room))
            {
                local.rooms.remove(&room.id);
            }
        }
    }

    fn forget(&self, room: &Arc<LocalRoom>) {
        let mut local = self.local();
        room.lock().detached = true;
        if local
            .rooms
            .get(&room.id)
            .is_some_and(|r| Arc::ptr_eq(r, room))
        {
            local.rooms.remove(&room.id);
        }
    }

    // ---- entering ---------------------------------------------------------

    async fn create(
        &self,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> Result<RedisMember, PeerError> {
        let me = self.inner.me.clone();
        let grace = self.inner.limits.host_grace.as_millis().to_string();
        let ttl = self.ttl_ms().to_string();
        for _ in 0..5 {
            let room = token::new_peer_id();
            let host_id = token::new_peer_id();
            let join = token::new_token();
            let watch = token::new_token();
            let resume = token::new_token();
            if join == watch || join == resume || watch == resume {
                continue;
            }
            let reply: String = self
                .run_retrying(
                    &self.inner.scripts.create,
                    &[&room, &host_id, &join, &watch, &resume, &me, &grace, &ttl],
                )
                .await
                .map_err(|e| self.enter_failed("create", e))?;
            if reply == "clash" {
                continue;
            }
            let ver: u64 = reply
                .parse()
                .map_err(|_| self.enter_failed("create", Fail::Reply(reply.clone())))?;
            let snapshot = Snapshot {
                ver,
                host_id: host_id.clone(),
                host: host_at(&me, 1),
                epoch: 1,
                join: join.clone(),
                watch: watch.clone(),
                resume: resume.clone(),
                grace_ms: self.inner.limits.host_grace.as_millis() as u64,
                cinst: me.clone(),
                peers: Some(HashMap::new()),
            };
            let (entry, _) = self.room_entry(&room, &snapshot);
            {
                let mut st = entry.lock();
                link.send_text(welcome(&Welcome {
                    room: room.clone(),
                    peer: host_id.clone(),
                    role: Role::Host,
                    join: Some(join),
                    watch: Some(watch),
                    resume: Some(resume),
                }));
                st.local_host = Some(LocalHost { link, epoch: 1 });
                st.drain_held(&self.ctx());
            }
            self.inner.metrics.room_opened();
            return Ok(RedisMember {
                registry: self.clone(),
                room: entry,
                peer_id: host_id,
                role: Role::Host,
                epoch: 1,
            });
        }
        Err(self.enter_failed("create", Fail::Reply("token clashes".into())))
    }

    fn enter_failed(&self, what: &str, e: Fail) -> PeerError {
        warn!(instance = %self.inner.me, "{what} failed: Redis: {e}");
        // A script that timed out may still have run: the reconciler removes
        // what it left of this instance's peers.
        self.inner.reconcile.notify_one();
        unavailable()
    }

    async fn attach(
        &self,
        role: Role,
        token: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> Result<RedisMember, PeerError> {
        let me = self.inner.me.clone();
        let max = self.inner.limits.max_peers.to_string();
        let ttl = self.ttl_ms().to_string();
        for _ in 0..5 {
            let peer = token::new_peer_id();
            let reply: Vec<String> = self
                .run_retrying(
                    &self.inner.scripts.attach,
                    &[token, role_code(role), &peer, &me, &max, &ttl],
                )
                .await
                .map_err(|e| self.enter_failed("attach", e))?;
            match reply.first().map(String::as_str) {
                Some("nf") => return Err(room_not_found()),
                Some("full") => {
                    return Err(PeerError::new(
                        ErrorCode::RoomFull,
                        format!(
                            "the room already has its maximum of {} peers",
                            self.inner.limits.max_peers
                        ),
                    ))
                }
                Some("clash") => continue,
                Some("ok") => {}
                _ => return Err(self.enter_failed("attach", Fail::Reply(format!("{reply:?}")))),
            }
            let parsed = (|| -> Result<(String, Snapshot), Fail> {
                let epoch = reply_u64(&reply, 5)?;
                Ok((
                    reply_str(&reply, 1)?.to_string(),
                    Snapshot {
                        ver: reply_u64(&reply, 2)?,
                        host_id: reply_str(&reply, 3)?.to_string(),
                        host: host_at(reply_str(&reply, 4)?, epoch),
                        epoch,
                        join: reply_str(&reply, 6)?.to_string(),
                        watch: reply_str(&reply, 7)?.to_string(),
                        resume: reply_str(&reply, 8)?.to_string(),
                        grace_ms: reply_u64(&reply, 9)?,
                        cinst: reply_str(&reply, 10)?.to_string(),
                        peers: None,
                    },
                ))
            })();
            let (room, snapshot) = parsed.map_err(|e| self.enter_failed("attach", e))?;
            let welcome_data = Welcome {
                room: room.clone(),
                peer: peer.clone(),
                role,
                join: None,
                watch: None,
                resume: None,
            };
            let entry = loop {
                let (entry, fresh) = self.room_entry(&room, &snapshot);
                let mut st = entry.lock();
                if st.detached {
                    continue;
                }
                let ctx = self.ctx();
                if !fresh {
                    st.apply_snapshot(&snapshot, &ctx);
                }
                if !st.open {
                    return Err(room_not_found());
                }
                link.send_text(welcome(&welcome_data));
                if st.host.is_none() {
                    link.send_text(ServerMessage::HostLeft.to_json());
                }
                st.local_guests
                    .insert(peer.clone(), LocalGuest { role, link });
                let closed = st.drain_held(&ctx);
                drop(st);
                if closed {
                    self.forget(&entry);
                }
                break entry;
            };
            return Ok(RedisMember {
                registry: self.clone(),
                room: entry,
                peer_id: peer,
                role,
                epoch: 0,
            });
        }
        Err(self.enter_failed("attach", Fail::Reply("peer id clashes".into())))
    }

    async fn resume(
        &self,
        secret: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> Result<RedisMember, PeerError> {
        let me = self.inner.me.clone();
        let ttl = self.ttl_ms().to_string();
        for _ in 0..5 {
            let fresh = token::new_token();
            let reply: Vec<String> = self
                .run(&self.inner.scripts.resume, &[secret, &fresh, &me, &ttl])
                .await
                .map_err(|e| self.enter_failed("resume", e))?;
            match reply.first().map(String::as_str) {
                Some("nf") => return Err(room_not_found()),
                Some("clash") => continue,
                Some("ok") => {}
                _ => return Err(self.enter_failed("resume", Fail::Reply(format!("{reply:?}")))),
            }
            let parsed = (|| -> Result<(String, Snapshot), Fail> {
                let epoch = reply_u64(&reply, 4)?;
                Ok((
                    reply_str(&reply, 1)?.to_string(),
                    Snapshot {
                        ver: reply_u64(&reply, 2)?,
                        host_id: reply_str(&reply, 3)?.to_string(),
                        host: host_at(&me, epoch),
                        epoch,
                        join: reply_str(&reply, 5)?.to_string(),
                        watch: reply_str(&reply, 6)?.to_string(),
                        resume: reply_str(&reply, 7)?.to_string(),
                        grace_ms: reply_u64(&reply, 8)?,
                        cinst: reply_str(&reply, 9)?.to_string(),
                        peers: Some(
                            parse_peers(reply.get(10..).unwrap_or_default())
                                .ok_or_else(|| Fail::Reply("peers".into()))?,
                        ),
                    },
                ))
            })();
            let (room, snapshot) = parsed.map_err(|e| self.enter_failed("resume", e))?;
            let epoch = snapshot.epoch;
            let entry = loop {
                let (entry, created) = self.room_entry(&room, &snapshot);
                let mut st = entry.lock();
                if st.detached {
                    continue;
                }
                let ctx = self.ctx();
                if !created {
                    // Cuts off a replaced host here, tells guests here.
                    st.apply_snapshot(&snapshot, &ctx);
                }
                if !st.open {
                    return Err(room_not_found());
                }
                // The membership as of the resume; later joins and leaves
                // (held until now) follow.
                st.pver = st.pver.max(snapshot.ver);
                st.peers = snapshot.peers.clone().unwrap_or_default();
                link.send_text(welcome(&Welcome {
                    room: room.clone(),
                    peer: snapshot.host_id.clone(),
                    role: Role::Host,
                    join: Some(snapshot.join.clone()),
                    watch: Some(snapshot.watch.clone()),
                    resume: Some(snapshot.resume.clone()),
                }));
                let mut present: Vec<_> = st.peers.iter().collect();
                present.sort_by(|a, b| a.0.cmp(b.0));
                for (id, p) in present {
                    ctx.deliver(
                        &link,
                        ServerMessage::PeerJoined {
                            peer: id,
                            role: p.role,
                        }
                        .to_json(),
                    );
                }
                if st.epoch > epoch {
                    // Another resume got in first.
                    link.kick(super::Kick::Replaced);
                } else {
                    st.local_host = Some(LocalHost { link, epoch });
                }
                let closed = st.drain_held(&ctx);
                drop(st);
                if closed {
                    self.forget(&entry);
                }
                break entry;
            };
            return Ok(RedisMember {
                registry: self.clone(),
                room: entry,
                peer_id: snapshot.host_id,
                role: Role::Host,
                epoch,
            });
        }
        Err(self.enter_failed("resume", Fail::Reply("secret clashes".into())))
    }

    // ---- events -------------------------------------------------------------

    fn on_message(&self, payload: &str) {
        let Some((room, event)) = parse_event(payload) else {
            debug!("ignored a malformed event");
            return;
        };
        tracing::trace!(instance = %self.inner.me, room = %room, "event {}", event.describe());
        if let Event::Closed { counted: true, .. } = &event {
            self.inner.metrics.room_closed();
        }
        let entry = {
            let mut local = self.local();
            match local.rooms.get(&room) {
                Some(r) => Arc::clone(r),
                None => {
                    if !matches!(event, Event::Closed { .. }) {
                        let held = local.orphans.entry(room).or_default();
                        if held.len() < cache::HELD_MAX {
                            held.push((Instant::now(), event));
                        }
                    }
                    return;
                }
            }
        };
        let mut st = entry.lock();
        if st.detached {
            tracing::trace!(room = %room, "event for a detached room dropped");
            return;
        }
        match st.apply(event, &self.ctx()) {
            Applied::Done => {}
            Applied::Hold(event) => {
                tracing::trace!(room = %room, "event held: {}", event.describe());
                st.hold(Instant::now(), event)
            }
            Applied::Closed => {
                drop(st);
                self.forget(&entry);
                debug!(room = %room, "room closed: its host did not come back");
            }
        }
    }

    // ---- background tasks ---------------------------------------------------

    /// Why Redis cannot be used now.
    fn down(&self) -> Fail {
        if self.inner.stopped.load(Ordering::Relaxed) {
            Fail::Stopped
        } else {
            Fail::Reply("Redis is unreachable".into())
        }
    }

    fn healthy_now(&self) -> bool {
        let i = &self.inner;
        !i.stopped.load(Ordering::Relaxed)
            && i.subscribed.load(Ordering::Relaxed)
            && i.reachable.load(Ordering::Relaxed)
    }

    async fn subscriber(self) {
        let stop = self.inner.stop.clone();
        let channel = self.channel(&self.inner.me);
        let mut backoff = Duration::from_millis(50);
        let mut lost = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let connect = async {
                let mut pubsub = self.inner.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(self.inner.opts.command_timeout * 2, connect) => r,
            };
            let pubsub = match pubsub {
                Ok(Ok(p)) => p,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    if !lost {
                        warn!(instance = %self.inner.me, "Redis subscription failed: {why}; retrying");
                        lost = true;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            self.inner.subscribed.store(true, Ordering::SeqCst);
            if lost {
                info!(instance = %self.inner.me, "Redis subscription restored");
                // Events may have been missed meanwhile.
                self.inner.reconcile.notify_one();
            }
            let (mut sink, mut stream) = pubsub.split();
            let mut ping = tokio::time::interval(self.inner.opts.subscription_ping);
            ping.tick().await;
            let why = loop {
                tokio::select! {
                    _ = stop.cancelled() => {
                        self.inner.subscribed.store(false, Ordering::SeqCst);
                        return;
                    }
                    msg = stream.next() => match msg {
                        Some(msg) => match std::str::from_utf8(msg.get_payload_bytes()) {
                            Ok(text) => self.on_message(text),
                            Err(_) => debug!("ignored a non-UTF-8 event"),
                        },
                        None => break "connection closed".to_string(),
                    },
                    _ = ping.tick() => {
                        match tokio::time::timeout(self.inner.opts.command_timeout, sink.ping::<::redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => break e.to_string(),
                            Err(_) => break "ping timed out".to_string(),
                        }
                    }
                }
            };
            self.inner.subscribed.store(false, Ordering::SeqCst);
            self.inner.losses.fetch_add(1, Ordering::Relaxed);
            warn!(instance = %self.inner.me, "Redis subscription lost: {why}; rooms are unavailable until it is back");
            lost = true;
        }
    }

    async fn heartbeat(self) {
        let stop = self.inner.stop.clone();
        let opts = &self.inner.opts;
        let key = self.key(&format!("inst:{}", self.inner.me));
        let mut tick = tokio::time::interval(opts.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let touch_every = (opts.key_ttl / 5).max(opts.heartbeat_interval);
        let mut last_touch = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut pipe = ::redis::pipe();
            pipe.cmd("SET")
                .arg(&key)
                .arg("1")
                .arg("PX")
                .arg(opts.heartbeat_ttl.as_millis() as u64)
                .arg("GET")
                .sadd(self.key("instances"), &self.inner.me)
                .ignore();
            let mut conn = self.inner.conn.clone();
            let result = tokio::time::timeout(
                opts.command_timeout,
                pipe.query_async::<(Option<String>,)>(&mut conn),
            )
            .await;
            let was = self.inner.reachable.load(Ordering::SeqCst);
            match result {
                Ok(Ok((previous,))) => {
                    self.inner.reachable.store(true, Ordering::SeqCst);
                    if !was {
                        info!(instance = %self.inner.me, "Redis is reachable");
                    }
                    // Our heartbeat had expired (we were taken for dead) or
                    // Redis lost its data: put back what we know.
                    if previous.is_none() && !self.local().rooms.is_empty() {
                        info!(instance = %self.inner.me, "heartbeat key was missing: re-asserting this instance's rooms");
                        self.inner.reconcile.notify_one();
                    } else if !was {
                        self.inner.reconcile.notify_one();
                    }
                }
                failed => {
                    self.inner.reachable.store(false, Ordering::SeqCst);
                    if was {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".into(),
                        };
                        warn!(instance = %self.inner.me, "Redis is unreachable: {why}; new rooms are refused until it is back");
                    }
                    continue;
                }
            }
            self.prune();
            if last_touch.elapsed() >= touch_every {
                last_touch = Instant::now();
                self.touch_rooms().await;
            }
        }
    }

    fn prune(&self) {
        let before = Instant::now() - HOLD_FOR;
        let rooms: Vec<Arc<LocalRoom>> = {
            let mut local = self.local();
            local.orphans.retain(|_, held| {
                held.retain(|(at, _)| *at >= before);
                !held.is_empty()
            });
            local.rooms.values().cloned().collect()
        };
        for r in rooms {
            r.lock().prune(before);
        }
    }

    async fn touch_rooms(&self) {
        let rooms: Vec<String> = self.local().rooms.keys().cloned().collect();
        let ttl = self.ttl_ms().to_string();
        for chunk in rooms.chunks(TOUCH_BATCH) {
            let mut args: Vec<&str> = vec![&self.inner.me, &ttl];
            args.extend(chunk.iter().map(String::as_str));
            if let Err(e) = self.run::<i64>(&self.inner.scripts.touch, &args).await {
                debug!("refreshing room expiry failed: {e}");
            }
        }
    }

    async fn janitor(self) {
        let stop = self.inner.stop.clone();
        let opts = self.inner.opts.clone();
        let mut sweep = tokio::time::interval(opts.sweep_interval);
        let mut reap = tokio::time::interval(opts.reap_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sweep.tick() => {
                    if self.healthy_now() {
                        match self.run::<i64>(&self.inner.scripts.sweep, &[]).await {
                            Ok(n) if n > 0 => debug!(closed = n, "closed rooms whose host did not come back"),
                            Ok(_) => {}
                            Err(e) => debug!("grace sweep failed: {e}"),
                        }
                    }
                }
                _ = reap.tick() => {
                    if self.healthy_now() {
                        self.reap_dead().await;
                    }
                }
            }
        }
    }

    async fn reap_dead(&self) {
        let dead: Vec<String> = match self
            .run(&self.inner.scripts.find_dead, &[&self.inner.me])
            .await
        {
            Ok(d) => d,
            Err(e) => {
                debug!("looking for dead instances failed: {e}");
                return;
            }
        };
        for inst in dead {
            let lock = self.key(&format!("reap:{inst}"));
            let mut conn = self.inner.conn.clone();
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(&lock)
                .arg(&self.inner.me)
                .arg("NX")
                .arg("PX")
                .arg((self.inner.opts.heartbeat_ttl * 4).as_millis() as u64);
            let got = tokio::time::timeout(
                self.inner.opts.command_timeout,
                cmd.query_async::<Option<String>>(&mut conn),
            )
            .await;
            if !matches!(got, Ok(Ok(Some(_)))) {
                continue; // another instance reaps it
            }
            let rooms_key = self.key(&format!("inst:{inst}:rooms"));
            let rooms = tokio::time::timeout(
                self.inner.opts.command_timeout,
                ::redis::cmd("SMEMBERS")
                    .arg(&rooms_key)
                    .query_async::<Vec<String>>(&mut conn),
            )
            .await;
            let Ok(Ok(rooms)) = rooms else { continue };
            let mut left = 0;
            for room in &rooms {
                match self
                    .run::<i64>(&self.inner.scripts.reap, &[room, &inst])
                    .await
                {
                    Ok(n) => left += n,
                    Err(e) => {
                        debug!("reaping {inst} in {room} failed: {e}");
                    }
                }
            }
            let mut pipe = ::redis::pipe();
            pipe.del(&rooms_key)
                .ignore()
                .srem(self.key("instances"), &inst)
                .ignore();
            let _ = tokio::time::timeout(
                self.inner.opts.command_timeout,
                pipe.query_async::<()>(&mut conn),
            )
            .await;
            warn!(
                instance = %self.inner.me,
                dead = %inst,
                rooms = rooms.len(),
                left,
                "an instance stopped sending heartbeats: its peers were reported as left"
            );
        }
    }

    async fn reconciler(self) {
        let stop = self.inner.stop.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.reconcile.notified() => {}
            }
            // Let a burst of triggers settle.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !self.healthy_now() {
                continue; // the recovery will notify again
            }
            if let Err(e) = self.reconcile_all().await {
                warn!(instance = %self.inner.me, "re-syncing rooms with Redis failed: {e}; will retry");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                self.inner.reconcile.notify_one();
            }
        }
    }

    async fn reconcile_all(&self) -> Result<(), Fail> {
        let mut rooms: HashSet<String> = {
            let mut local = self.local();
            let mut set: HashSet<String> = local.rooms.keys().cloned().collect();
            set.extend(local.dirty.drain());
            set
        };
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(
            self.inner.opts.command_timeout,
            ::redis::cmd("SMEMBERS")
                .arg(self.key(&format!("inst:{}:rooms", self.inner.me)))
                .query_async::<Vec<String>>(&mut conn),
        )
        .await
        {
            Ok(Ok(listed)) => rooms.extend(listed),
            Ok(Err(e)) => {
                self.local().dirty.extend(rooms);
                return Err(Fail::Redis(e));
            }
            Err(_) => {
                self.local().dirty.extend(rooms);
                return Err(Fail::Timeout);
            }
        }
        let n = rooms.len();
        let mut failed = None;
        let mut again = false;
        for room in rooms {
            let synced = {
                let _gate = self.inner.gate.write().await;
                self.sync_room(&room).await
            };
            match synced {
                Ok(doubt) => again |= doubt,
                Err(e) => {
                    self.mark_dirty(&room);
                    failed = Some(e);
                }
            }
        }
        if n > 0 {
            info!(instance = %self.inner.me, rooms = n, "re-synced rooms with Redis");
        }
        if again {
            // Peers of other instances were missing: look again once their
            // instances have had the time to put them back.
            let registry = self.clone();
            let wait = self.inner.opts.heartbeat_ttl + self.inner.opts.heartbeat_interval;
            tokio::spawn(async move {
                tokio::select! {
                    _ = registry.inner.stop.cancelled() => {}
                    _ = tokio::time::sleep(wait) => registry.inner.reconcile.notify_one(),
                }
            });
        }
        failed.map_or(Ok(()), Err)
    }

    /// Re-syncs one room; `Ok(true)` if it should be re-synced again later.
    async fn sync_room(&self, room: &str) -> Result<bool, Fail> {
        let entry = self.local().rooms.get(room).cloned();
        let me = self.inner.me.clone();
        let ttl = self.ttl_ms().to_string();
        let hbttl = (self.inner.opts.heartbeat_ttl.as_millis() as u64).to_string();
        let mut args: Vec<String> = vec![room.to_string(), me.clone(), ttl];
        if let Some(entry) = &entry {
            let st = entry.lock();
            let hlocal = st.local_host.as_ref();
            args.extend([
                "1".to_string(),
                st.join.clone(),
                st.watch.clone(),
                st.resume.clone(),
                st.host_id.clone(),
                hlocal.map_or(st.epoch, |h| h.epoch).to_string(),
                st.grace_ms.to_string(),
                if hlocal.is_some() { "1" } else { "0" }.to_string(),
                st.host.as_ref().map(|h| h.inst.clone()).unwrap_or_default(),
                st.cinst.clone(),
                hbttl,
            ]);
            for (id, g) in &st.local_guests {
                args.push(id.clone());
                args.push(role_code(g.role).to_string());
            }
        } else {
            args.extend(["0", "", "", "", "", "0", "0", "0", "", ""].map(str::to_string));
            args.push(hbttl);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply: Vec<String> = self.run(&self.inner.scripts.sync, &refs).await?;
        let Some(entry) = entry else { return Ok(false) };
        if reply.first().map(String::as_str) == Some("gone") {
            entry.lock().close(&self.ctx());
            self.forget(&entry);
            info!(room = %room, "room closed: Redis no longer has it");
            return Ok(false);
        }
        let epoch = reply_u64(&reply, 4)?;
        let snapshot = Snapshot {
            ver: reply_u64(&reply, 1)?,
            host_id: reply_str(&reply, 2)?.to_string(),
            host: host_at(reply_str(&reply, 3)?, epoch),
            epoch,
            join: reply_str(&reply, 5)?.to_string(),
            watch: reply_str(&reply, 6)?.to_string(),
            resume: reply_str(&reply, 7)?.to_string(),
            grace_ms: reply_u64(&reply, 8)?,
            cinst: reply_str(&reply, 9)?.to_string(),
            peers: Some(
                parse_peers(reply.get(10..).unwrap_or_default())
                    .ok_or_else(|| Fail::Reply("peers".into()))?,
            ),
        };
        let settle = self.inner.opts.heartbeat_ttl + self.inner.opts.heartbeat_interval;
        let doubt = entry
            .lock()
            .apply_sync(&snapshot, &self.inner.me, settle, &self.ctx());
        Ok(doubt)
    }
}

impl Registry for RedisRegistry {
    type Member = RedisMember;

    async fn enter<F>(
        &self,
        request: InitRequest<'_>,
        link: PeerLink,
        welcome: F,
    ) -> Result<RedisMember, PeerError>
    where
        F: FnOnce(&Welcome) -> String + Send,
    {
        if !self.healthy_now() {
            return Err(unavailable());
        }
        let _gate = self.inner.gate.read().await;
        match request {
            InitRequest::Create => self.create(link, welcome).await,
            InitRequest::Attach(role, token) => self.attach(role, token, link, welcome).await,
            InitRequest::Resume(secret) => self.resume(secret, link, welcome).await,
        }
    }

    async fn has_token(&self, role: Role, token: &str) -> bool {
        if !self.healthy_now() {
            // Let the upgrade through: the peer then gets a clear
            // `unavailable` rather than a misleading 404.
            return true;
        }
        let mut conn = self.inner.conn.clone();
        let got = tokio::time::timeout(
            self.inner.opts.command_timeout,
            ::redis::cmd("GET")
                .arg(self.key(&format!("tok:{token}")))
                .query_async::<Option<String>>(&mut conn),
        )
        .await;
        match got {
            Ok(Ok(Some(v))) => v.starts_with(role_code(role)) && v.as_bytes().get(1) == Some(&b'|'),
            Ok(Ok(None)) => false,
            _ => true,
        }
    }

    fn healthy(&self) -> bool {
        self.healthy_now()
    }
}

/// A peer's membership of a shared room.
pub struct RedisMember {
    registry: RedisRegistry,
    room: Arc<LocalRoom>,
    peer_id: String,
    role: Role,
    /// For the host: the epoch it became host in.
    epoch: u64,
}

impl Member for RedisMember {
    fn peer_id(&self) -> &str {
        &self.peer_id
    }

    fn role(&self) -> Role {
        self.role
    }

    fn room(&self) -> &str {
        &self.room.id
    }

    async fn relay(
        &self,
        kind: RelayKind,
        to: Option<&str>,
        text: Utf8Bytes,
    ) -> Result<(), PeerError> {
        let registry = &self.registry;
        let ctx = registry.ctx();
        let me = &registry.inner.me;
        let len = text.len();
        let mut remote: Vec<(String, String)> = Vec::new();
        {
            let st = self.room.lock();
            if !st.open {
                return Err(room_not_found());
            }
            if self.role != Role::Host {
                let absent = || {
                    PeerError::new(
                        ErrorCode::HostAbsent,
                        "the host is disconnected; it may come back",
                    )
                };
                let host = st.host.as_ref().ok_or_else(absent)?;
                if host.inst == *me {
                    let local = st.local_host.as_ref().ok_or_else(absent)?;
                    let from = st.local_guests.get(&self.peer_id).map(|g| g.link.state());
                    match local.link.send_guest(text, from) {
                        Queued::Yes => ctx.metrics.relayed(kind, len),
                        Queued::Refused => return Err(super::host_busy()),
                        Queued::Full | Queued::Gone => {}
                    }
                    return Ok(());
                }
                remote.push((
                    registry.channel(&host.inst),
                    cache::to_host_envelope(&self.room.id, kind, text.as_str()),
                ));
            } else {
                if st.local_host.as_ref().map(|h| h.epoch) != Some(self.epoch) {
                    return Err(PeerError::new(
                        ErrorCode::NotInRoom,
                        "another connection has resumed hosting this room",
                    ));
                }
                let mut by_inst: Vec<(&str, Vec<&str>)> = Vec::new();
                match to {
                    Some(to) => {
                        let (id, peer) = st.peers.get_key_value(to).ok_or_else(|| {
                            PeerError::new(
                                ErrorCode::PeerNotFound,
                                "`to` names no peer of this room",
                            )
                        })?;
                        if peer.inst == *me {
                            if let Some(g) = st.local_guests.get(id) {
                                if ctx.deliver(&g.link, text.clone()) == Queued::Yes {
                                    ctx.metrics.relayed(kind, len);
                                }
                            }
                        } else {
                            by_inst.push((peer.inst.as_str(), vec![id.as_str()]));
                        }
                    }
                    None => {
                        for (id, peer) in &st.peers {
                            if peer.inst == *me {
                                if let Some(g) = st.local_guests.get(id) {
                                    if ctx.deliver(&g.link, text.clone()) == Queued::Yes {
                                        ctx.metrics.relayed(kind, len);
                                    }
                                }
                            } else {
                                match by_inst.iter_mut().find(|(i, _)| *i == peer.inst) {
                                    Some((_, ids)) => ids.push(id),
                                    None => by_inst.push((peer.inst.as_str(), vec![id.as_str()])),
                                }
                            }
                        }
                    }
                }
                for (inst, ids) in by_inst {
                    remote.push((
                        registry.channel(inst),
                        cache::to_peers_envelope(&self.room.id, kind, &ids, text.as_str()),
                    ));
                }
            }
        }
        if remote.is_empty() {
            return Ok(());
        }
        if !registry.healthy_now() {
            return Err(unavailable());
        }
        registry.publish(remote).await.map_err(|e| {
            debug!(room = %self.room.id, "relay through Redis failed: {e}");
            unavailable()
        })
    }

    async fn leave(self) {
        let registry = &self.registry;
        let _gate = registry.inner.gate.read().await;
        let ctx = registry.ctx();
        let me = registry.inner.me.clone();
        let room = self.room.id.clone();
        if self.role != Role::Host {
            let was_here = {
                let mut st = self.room.lock();
                st.local_guests.remove(&self.peer_id).is_some() && st.open
            };
            if !was_here {
                registry.forget_if_empty(&self.room);
                return;
            }
            let result = if registry.healthy_now() {
                registry
                    .run::<String>(&registry.inner.scripts.leave, &[&room, &self.peer_id, &me])
                    .await
            } else {
                Err(registry.down())
            };
            if let Err(e) = result {
                if !matches!(e, Fail::Stopped) {
                    warn!(room = %room, "leave not recorded in Redis ({e}): will re-sync");
                    // Tell a host here now; others learn at the re-sync.
                    let mut st = self.room.lock();
                    if let Some(h) = &st.local_host {
                        let link = h.link.clone();
                        if st.peers.remove(&self.peer_id).is_some() {
                            ctx.deliver(
                                &link,
                                ServerMessage::PeerLeft {
                                    peer: &self.peer_id,
                                }
                                .to_json(),
                            );
                        }
                    }
                    drop(st);
                    registry.mark_dirty(&room);
                }
            }
            registry.forget_if_empty(&self.room);
            return;
        }
        let current = {
            let mut st = self.room.lock();
            let current = st.open
                && st
                    .local_host
                    .as_ref()
                    .is_some_and(|h| h.epoch == self.epoch);
            if current {
                st.local_host = None;
                st.peers.clear();
            }
            current
        };
        if !current {
            registry.forget_if_empty(&self.room);
            return; // replaced by a resumed host, or the room is gone
        }
        let epoch = self.epoch.to_string();
        let result = if registry.healthy_now() {
            registry
                .run::<String>(&registry.inner.scripts.leave_host, &[&room, &epoch, &me])
                .await
        } else {
            Err(registry.down())
        };
        if let Err(e) = result {
            if !matches!(e, Fail::Stopped) {
                warn!(room = %room, "host leave not recorded in Redis ({e}): will re-sync");
                let mut st = self.room.lock();
                let epoch = st.epoch;
                st.set_host(None, epoch, &ctx);
                drop(st);
                registry.mark_dirty(&room);
            }
        }
        registry.forget_if_empty(&self.room);
    }
}
