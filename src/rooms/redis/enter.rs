//! Entering a shared room: create, attach and resume (the [`Registry`]
//! side of the shared registry). Each runs its script, then registers the
//! peer in the room's local entry, where its `init` reply is queued before
//! any event of the room can reach it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::cache::{Ctx, HostAt, LocalGuest, LocalHost, LocalRoom, RoomCache};
use super::member::RedisMember;
use super::scripts::{
    role_code, AttachArgs, Attached, CreateArgs, Created, ResumeArgs, Resumed, Snapshot,
};
use super::store::Fail;
use super::RedisRegistry;
use crate::protocol::{InitRequest, PeerError, Role, ServerMessage};
use crate::rooms::errors::{self, room_not_found, unavailable};
use crate::rooms::{
    named_token, EventSink, Kick, PeerLink, Registry, RoomEvent, RoomInfo, Welcome,
};
use crate::token::{self, PeerId, Token};
use crate::webhooks::RoomRef;

/// Fresh ids drawn for one enter before giving up (a clash is a 96-bit
/// coincidence: a second is never needed in practice).
const ID_ATTEMPTS: usize = 5;

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
            InitRequest::Host(name) => self.host_named(name, link, welcome).await,
        }
    }

    async fn has_token(&self, role: Role, token: &str) -> bool {
        if !self.healthy_now() {
            // Let the upgrade through: the peer then gets a clear
            // `unavailable` rather than a misleading 404.
            return true;
        }
        match self.inner.store.token(token).await {
            Ok(Some(v)) => v.starts_with(role_code(role)) && v.as_bytes().get(1) == Some(&b'|'),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    fn healthy(&self) -> bool {
        self.healthy_now()
    }

    async fn rooms(&self) -> Result<Vec<RoomInfo>, PeerError> {
        self.list_rooms().await
    }

    async fn close_room(&self, room: &str) -> Result<bool, PeerError> {
        self.close_by_admin(room).await
    }

    async fn kick(&self, room: &str, peer: &str) -> Result<bool, PeerError> {
        self.kick_peer(room, peer).await
    }

    fn set_events(&self, sink: EventSink) {
        let _ = self.inner.events.set(sink);
    }

    fn events(&self) -> EventSink {
        self.inner.events.get().cloned().unwrap_or_default()
    }
}

impl RedisRegistry {
    async fn create<F: FnOnce(&Welcome) -> String>(
        &self,
        mut link: PeerLink,
        mut welcome: F,
    ) -> Result<RedisMember, PeerError> {
        for _ in 0..ID_ATTEMPTS {
            let join = token::new_token();
            let watch = token::new_token();
            let resume = token::new_token();
            if join == watch || join == resume || watch == resume {
                continue;
            }
            match self
                .create_with([join, watch, resume], link, welcome)
                .await?
            {
                Ok(member) => return Ok(member),
                Err((l, w)) => (link, welcome) = (l, w),
            }
        }
        Err(self.enter_failed("create", Fail::Reply("token clashes".into())))
    }

    /// Opens the room named `name` as its host, or takes it over (on any
    /// instance: the old host is cut off as replaced). Its tokens are the
    /// name's ([`named_token`]), and its resume secret never changes, so
    /// the room is found again by name after a restart of anything.
    async fn host_named<F: FnOnce(&Welcome) -> String>(
        &self,
        name: &str,
        mut link: PeerLink,
        mut welcome: F,
    ) -> Result<RedisMember, PeerError> {
        let secret = named_token(name, None);
        for _ in 0..ID_ATTEMPTS {
            let args = ResumeArgs {
                secret: secret.as_str(),
                fresh: secret.as_str(),
                inst: &self.inner.me,
                key_ttl: self.inner.opts.key_ttl,
            };
            let resumed = self
                .entering("resume", || self.inner.store.resume(&args))
                .await?;
            if let Resumed::Ok(snapshot) = resumed {
                let entry = self.register(&snapshot, |st, ctx| {
                    seat_host(st, ctx, &snapshot, link, welcome);
                })?;
                let epoch = snapshot.epoch;
                return Ok(self.member(entry, snapshot.host_id, Role::Host, epoch));
            }
            let tokens = [
                named_token(name, Some(Role::Join)),
                named_token(name, Some(Role::Watch)),
                secret.clone(),
            ];
            // A clash: another host opened it meanwhile; take it over.
            match self.create_with(tokens, link, welcome).await? {
                Ok(member) => return Ok(member),
                Err((l, w)) => (link, welcome) = (l, w),
            }
        }
        Err(self.enter_failed("host", Fail::Reply("name clashes".into())))
    }

    /// Creates a room with these tokens; `Ok(Err(..))` hands `link` and
    /// `welcome` back when one of them (or the room id) is taken.
    #[allow(clippy::type_complexity)]
    async fn create_with<F: FnOnce(&Welcome) -> String>(
        &self,
        [join, watch, resume]: [Token; 3],
        link: PeerLink,
        welcome: F,
    ) -> Result<Result<RedisMember, (PeerLink, F)>, PeerError> {
        let me = &self.inner.me;
        let grace = self.inner.limits.host_grace;
        {
            let room = token::new_peer_id().into_string();
            let host_id = token::new_peer_id();
            let args = CreateArgs {
                room: &room,
                host_id: host_id.as_str(),
                join: join.as_str(),
                watch: watch.as_str(),
                resume: resume.as_str(),
                inst: me,
                grace,
                key_ttl: self.inner.opts.key_ttl,
            };
            let created = self
                .entering("create", || self.inner.store.create(&args))
                .await?;
            let Created::Ok { ver } = created else {
                return Ok(Err((link, welcome)));
            };
            let snapshot = Snapshot {
                room,
                ver,
                host_id,
                host: Some(HostAt {
                    inst: me.clone(),
                    epoch: 1,
                }),
                epoch: 1,
                join,
                watch,
                resume,
                grace_ms: grace.as_millis() as u64,
                cinst: me.clone(),
                seq: 1,
                peers: Some(HashMap::new()),
            };
            let entry = self.register(&snapshot, |st, _| {
                link.send_text(welcome(&host_welcome(&snapshot)));
                st.local_host = Some(LocalHost { link, epoch: 1 });
            })?;
            self.inner.metrics.room_opened();
            self.emit(1, || {
                RoomEvent::room_started(RoomRef::label(&snapshot.room), snapshot.host_id.as_str())
            });
            Ok(Ok(self.member(entry, snapshot.host_id, Role::Host, 1)))
        }
    }

    async fn attach(
        &self,
        role: Role,
        token: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> Result<RedisMember, PeerError> {
        let max_peers = self.inner.limits.max_peers;
        for _ in 0..ID_ATTEMPTS {
            let peer = token::new_peer_id();
            let args = AttachArgs {
                token,
                role,
                peer: peer.as_str(),
                inst: &self.inner.me,
                max_peers,
                key_ttl: self.inner.opts.key_ttl,
            };
            let attached = self
                .entering("attach", || self.inner.store.attach(&args))
                .await?;
            let snapshot = match attached {
                Attached::Ok(snapshot) => snapshot,
                Attached::NotFound => return Err(room_not_found()),
                Attached::Full => return Err(errors::room_full(max_peers)),
                Attached::Clash => continue,
            };
            let entry = self.register(&snapshot, |st, _| {
                link.send_text(welcome(&Welcome {
                    room: snapshot.room.clone(),
                    peer: peer.clone(),
                    role,
                    join: None,
                    watch: None,
                    resume: None,
                    peers: None,
                }));
                if st.host.is_none() {
                    link.send_text(ServerMessage::HostLeft.to_json());
                }
                st.local_guests
                    .insert(peer.as_str().to_owned(), LocalGuest { role, link });
            })?;
            self.emit(snapshot.seq, || {
                RoomEvent::peer_joined(RoomRef::label(&snapshot.room), peer.as_str(), role)
            });
            return Ok(self.member(entry, peer, role, 0));
        }
        Err(self.enter_failed("attach", Fail::Reply("peer id clashes".into())))
    }

    async fn resume(
        &self,
        secret: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> Result<RedisMember, PeerError> {
        for _ in 0..ID_ATTEMPTS {
            let fresh = token::new_token();
            let args = ResumeArgs {
                secret,
                fresh: fresh.as_str(),
                inst: &self.inner.me,
                key_ttl: self.inner.opts.key_ttl,
            };
            let resumed = self
                .inner
                .store
                .resume(&args)
                .await
                .map_err(|e| self.enter_failed("resume", e))?;
            let snapshot = match resumed {
                Resumed::Ok(snapshot) => snapshot,
                Resumed::NotFound => return Err(room_not_found()),
                Resumed::Clash => continue,
            };
            let entry = self.register(&snapshot, |st, ctx| {
                seat_host(st, ctx, &snapshot, link, welcome);
            })?;
            let epoch = snapshot.epoch;
            self.emit(snapshot.seq, || {
                RoomEvent::host_joined(RoomRef::label(&snapshot.room), snapshot.host_id.as_str())
            });
            return Ok(self.member(entry, snapshot.host_id, Role::Host, epoch));
        }
        Err(self.enter_failed("resume", Fail::Reply("secret clashes".into())))
    }

    /// Registers a peer that its script has just entered into `snapshot`'s
    /// room: finds (or makes) the room's live entry, brings it up to the
    /// snapshot and, if the room is still open, runs `seat` under the
    /// entry's lock; then applies the events that were waiting for the peer.
    fn register(
        &self,
        snapshot: &Snapshot,
        seat: impl FnOnce(&mut RoomCache, &Ctx<'_>),
    ) -> Result<Arc<LocalRoom>, PeerError> {
        loop {
            let (entry, created) = self.room_entry(snapshot);
            let mut st = entry.lock();
            if st.detached {
                continue; // forgotten meanwhile: make a new entry
            }
            let ctx = self.ctx();
            if !created {
                // Cuts off a replaced host here, tells guests here.
                st.apply_snapshot(snapshot, &ctx);
            }
            if !st.open {
                return Err(room_not_found());
            }
            seat(&mut st, &ctx);
            let closed = st.drain_held(&ctx);
            drop(st);
            if closed {
                self.forget(&entry);
            }
            return Ok(entry);
        }
    }

    fn member(&self, room: Arc<LocalRoom>, peer_id: PeerId, role: Role, epoch: u64) -> RedisMember {
        RedisMember {
            registry: self.clone(),
            room,
            peer_id,
            role,
            epoch,
        }
    }

    /// Runs the script `call` of a create or attach, and once more after a
    /// connection error (the first command after Redis returns may get the
    /// error of the last failed reconnection). What a first attempt may
    /// nevertheless have written is removed by the re-sync that a failure
    /// schedules. (A resume is not retried: its first attempt may have spent
    /// the secret.)
    async fn entering<T, Fut>(&self, what: &str, call: impl Fn() -> Fut) -> Result<T, PeerError>
    where
        Fut: Future<Output = Result<T, Fail>>,
    {
        let result = match call().await {
            Err(e) if e.is_connection_error() => {
                debug!("retrying after a connection error: {e}");
                self.inner.reconcile.notify_one();
                tokio::time::sleep(Duration::from_millis(20)).await;
                call().await
            }
            other => other,
        };
        result.map_err(|e| self.enter_failed(what, e))
    }

    fn enter_failed(&self, what: &str, e: Fail) -> PeerError {
        warn!(instance = %self.inner.me, "{what} failed: Redis: {e}");
        // A script that timed out may still have run: the reconciler removes
        // what it left of this instance's peers.
        self.inner.reconcile.notify_one();
        unavailable()
    }
}

/// Seats a resumed host: the membership as of the resume (later joins and
/// leaves, held until now, follow), its `init` reply, then a `peer_joined`
/// for each member present; or cuts it off if a later resume got in first.
fn seat_host(
    st: &mut RoomCache,
    ctx: &Ctx<'_>,
    snapshot: &Snapshot,
    link: PeerLink,
    welcome: impl FnOnce(&Welcome) -> String,
) {
    st.pver = st.pver.max(snapshot.ver);
    st.peers = snapshot.peers.clone().unwrap_or_default();
    let mut present: Vec<_> = st.peers.iter().collect();
    present.sort_by(|a, b| a.0.cmp(b.0));
    let mut w = host_welcome(snapshot);
    w.peers = Some(
        present
            .iter()
            .map(|(id, p)| (PeerId::from(id.as_str()), p.role))
            .collect(),
    );
    link.send_text(welcome(&w));
    for (id, p) in present {
        ctx.deliver(
            &link,
            ServerMessage::PeerJoined {
                peer: id.into(),
                role: p.role,
            }
            .to_json(),
        );
    }
    if st.epoch > snapshot.epoch {
        // Another resume got in first.
        link.kick(Kick::Replaced);
    } else {
        st.local_host = Some(LocalHost {
            link,
            epoch: snapshot.epoch,
        });
    }
}

/// What the host's `init` reply says.
fn host_welcome(snapshot: &Snapshot) -> Welcome {
    Welcome {
        room: snapshot.room.clone(),
        peer: snapshot.host_id.clone(),
        role: Role::Host,
        join: Some(snapshot.join.clone()),
        watch: Some(snapshot.watch.clone()),
        resume: Some(snapshot.resume.clone()),
        peers: None,
    }
}
