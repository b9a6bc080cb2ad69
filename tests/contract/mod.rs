//! The registry contract: what every [`Registry`] must do, as one generic
//! suite that drives the registry the way a session does (`enter`, `relay`,
//! `leave`) and reads each peer's [`PeerLink`] outbox directly, without
//! sockets. `tests/registry_contract.rs` runs it for each registry.
//!
//! A [`Fleet`] is a registry as several instances see it: for the in-memory
//! registry every instance is the same registry; for Redis each is a
//! registry of its own sharing one `redis-server`, so every scenario also
//! runs across instances (host on one, its peers on others).
//!
//! Waits are for events, bounded by `WAIT`. To show that a peer did *not*
//! get a message, a later message is sent on a path that is ordered after it
//! (the same sender), and must be the next one the peer gets.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use signal_server::metrics::Metrics;
use signal_server::protocol::{InitRequest, PeerError, RelayKind, Role};
use signal_server::rooms::{
    errors, EventSink, Kick, Member, Outgoing, PeerLink, Registry, RoomEvent, RoomInfo, RoomLimits,
    Welcome, KICKED,
};
use signal_server::webhooks::{EventKind, Webhooks};
use signal_server::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use crate::common::{series_value, WAIT};

/// A registry as seen from several instances.
pub trait Fleet: Sized {
    type R: Registry;

    /// A grace period this registry can be waited for in a test (its timers
    /// included).
    const SHORT_GRACE: Duration;

    /// Starts the registry (all its instances) with `limits`.
    async fn start(limits: RoomLimits) -> Self;

    /// Instance `i` (any `i`: they wrap around).
    fn at(&self, i: usize) -> &Self::R;

    /// The metrics of each distinct instance.
    fn metrics(&self) -> Vec<&Metrics>;

    /// Every instance, once each.
    fn instances(&self) -> usize;
}

type M<F> = <<F as Fleet>::R as Registry>::Member;

/// Limits with room for every scenario's peers and a grace period no
/// scenario waits out.
pub fn limits() -> RoomLimits {
    RoomLimits {
        max_peers: 16,
        host_grace: Duration::from_secs(60),
    }
}

// ---- peers -------------------------------------------------------------------

/// One connection as the registry sees it: its link, and the outbox the
/// session's writer would drain.
pub struct Peer {
    pub link: PeerLink,
    rx: mpsc::Receiver<Outgoing>,
    pub welcome: Welcome,
}

/// The `init` reply a session would render from `w`.
fn init_text(w: &Welcome) -> String {
    let peers: Option<Vec<Value>> = w.peers.as_ref().map(|peers| {
        peers
            .iter()
            .map(|(id, role)| json!({"id": id, "role": role.as_str()}))
            .collect()
    });
    json!({"type": "init", "room": w.room, "peer": w.peer, "role": w.role.as_str(),
           "join": w.join, "watch": w.watch, "resume": w.resume, "peers": peers})
    .to_string()
}

impl Peer {
    pub fn id(&self) -> &str {
        self.welcome.peer.as_str()
    }

    /// The next thing in the outbox.
    pub async fn next(&mut self) -> Outgoing {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(out)) => out,
            Ok(None) => panic!("{}: the registry dropped the link", self.id()),
            Err(_) => panic!("{}: nothing arrived within {WAIT:?}", self.id()),
        }
    }

    /// The next text message.
    pub async fn text(&mut self) -> String {
        match self.next().await {
            Outgoing::Text(t) => t.to_string(),
            other => panic!("{}: expected a text, got {other:?}", self.id()),
        }
    }

    /// The next text message, as JSON.
    pub async fn json(&mut self) -> Value {
        let text = self.text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// What is in the outbox now, without waiting.
    pub fn queued(&mut self) -> Vec<Outgoing> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

fn text(s: impl Into<String>) -> Utf8Bytes {
    Utf8Bytes::from(s.into())
}

/// Enters as `request` says, with an outbox of `capacity`; checks that the
/// `init` reply is the first message queued.
pub async fn enter<R: Registry>(
    registry: &R,
    request: InitRequest<'_>,
    capacity: usize,
) -> Result<(R::Member, Peer), PeerError> {
    let (link, rx) = PeerLink::new(capacity);
    let mut seen = None;
    let member = registry
        .enter(request, link.clone(), |w: &Welcome| {
            seen = Some(w.clone());
            init_text(w)
        })
        .await?;
    let welcome = seen.expect("the welcome was rendered");
    assert_eq!(member.peer_id(), welcome.peer.as_str());
    assert_eq!(member.role(), welcome.role);
    assert_eq!(member.room(), welcome.room);
    let mut peer = Peer { link, rx, welcome };
    assert_eq!(
        peer.text().await,
        init_text(&peer.welcome),
        "init comes first"
    );
    Ok((member, peer))
}

/// An entry the registry must refuse with `want`.
async fn refused<R: Registry>(registry: &R, request: InitRequest<'_>, want: PeerError) {
    match enter(registry, request, 8).await {
        Ok((_, p)) => panic!("entered as {}, expected {want}", p.id()),
        Err(e) => assert_eq!((e.code, e.message), (want.code, want.message)),
    }
}

fn same_error(got: Result<(), PeerError>, want: PeerError) {
    match got {
        Ok(()) => panic!("accepted, expected {want}"),
        Err(e) => assert_eq!((e.code, e.message), (want.code, want.message)),
    }
}

/// A room and its host.
pub struct Room<Mb> {
    pub host: Mb,
    pub hp: Peer,
    pub join: String,
    pub watch: String,
    pub resume: String,
}

/// The host's outbox holds more than any scenario sends it unread.
const HOST_OUTBOX: usize = 512;

pub async fn open_room<F: Fleet>(fleet: &F, at: usize) -> Room<M<F>> {
    let (host, hp) = enter(fleet.at(at), InitRequest::Create, HOST_OUTBOX)
        .await
        .expect("create");
    let w = hp.welcome.clone();
    assert_eq!(w.role, Role::Host);
    Room {
        host,
        join: w.join.expect("join token").into_string(),
        watch: w.watch.expect("watch token").into_string(),
        resume: w.resume.expect("resume secret").into_string(),
        hp,
    }
}

impl<Mb> Room<Mb> {
    fn token(&self, role: Role) -> &str {
        if role == Role::Watch {
            &self.watch
        } else {
            &self.join
        }
    }
}

/// Attaches a guest or watcher on instance `at`; the host must be told.
pub async fn attach<F: Fleet>(
    fleet: &F,
    at: usize,
    room: &mut Room<M<F>>,
    role: Role,
    capacity: usize,
) -> (M<F>, Peer) {
    let token = room.token(role).to_string();
    let (m, p) = enter(fleet.at(at), InitRequest::Attach(role, &token), capacity)
        .await
        .expect("attach");
    assert_eq!(p.welcome.role, role);
    assert_eq!(
        (&p.welcome.join, &p.welcome.watch, &p.welcome.resume),
        (&None, &None, &None),
        "only the host gets the room's tokens"
    );
    assert_eq!(
        room.hp.json().await,
        json!({"type": "peer_joined", "peer": p.id(), "role": role.as_str()})
    );
    (m, p)
}

/// A room hosted on instance 0, with a guest on instance 1, a watcher on
/// instance 2 and a guest on the host's own instance 0, in that order; their
/// outboxes hold `capacity` messages.
async fn populated<F: Fleet>(fleet: &F, capacity: usize) -> (Room<M<F>>, [(M<F>, Peer); 3]) {
    let mut room = open_room(fleet, 0).await;
    let guest = attach(fleet, 1, &mut room, Role::Join, capacity).await;
    let watcher = attach(fleet, 2, &mut room, Role::Watch, capacity).await;
    let local = attach(fleet, 0, &mut room, Role::Join, capacity).await;
    (room, [guest, watcher, local])
}

/// `member` (whose outbox is `peer`'s) leaves; the host is told.
async fn leaves<Mb: Member>(member: Mb, peer: &Peer, room: &mut Room<Mb>) {
    let id = peer.id().to_string();
    member.leave().await;
    assert_eq!(
        room.hp.json().await,
        json!({"type": "peer_left", "peer": id})
    );
}

/// The host sends `s` to every peer.
async fn broadcast(host: &impl Member, s: &str) {
    host.relay(RelayKind::Offer, None, text(s))
        .await
        .expect("broadcast");
}

/// The sum of a series over the fleet's instances.
fn total<F: Fleet>(fleet: &F, series: &str) -> f64 {
    fleet
        .metrics()
        .iter()
        .map(|m| series_value(&m.render(), series).unwrap_or(0.0))
        .sum()
}

/// Waits until `done` holds (sleeping between looks), up to `WAIT`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn kicked(link: &PeerLink, why: Kick) {
    timeout(WAIT, link.kicked())
        .await
        .unwrap_or_else(|_| panic!("not kicked ({why:?}) within {WAIT:?}"));
    assert_eq!(link.kick_reason(), Some(why));
}

// ---- the scenarios -----------------------------------------------------------

/// Create: the host gets fresh, distinct tokens that work on every instance
/// for their own role only.
pub async fn a_room_is_created_with_fresh_tokens_for_its_roles<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let a = open_room(&fleet, 0).await;
    let b = open_room(&fleet, 1).await;
    let tokens: BTreeSet<&str> = [&a, &b]
        .iter()
        .flat_map(|r| [r.join.as_str(), r.watch.as_str(), r.resume.as_str()])
        .collect();
    assert_eq!(tokens.len(), 6, "tokens are distinct");
    assert_ne!(a.hp.welcome.room, b.hp.welcome.room);
    assert!(!a.hp.id().is_empty() && a.hp.id() != b.hp.id());
    for i in 0..fleet.instances() {
        let r = fleet.at(i);
        assert!(r.has_token(Role::Join, &a.join).await);
        assert!(r.has_token(Role::Watch, &a.watch).await);
        assert!(r.has_token(Role::Join, &b.join).await);
        assert!(
            !r.has_token(Role::Join, &a.watch).await,
            "watch is not join"
        );
        assert!(
            !r.has_token(Role::Watch, &a.join).await,
            "join is not watch"
        );
        assert!(
            !r.has_token(Role::Join, &a.resume).await,
            "resume is secret"
        );
        assert!(!r.has_token(Role::Join, "AAAAAAAAAAAAAAAA").await);
    }
    // The tokens are not interchangeable at the door either.
    let r = fleet.at(1);
    refused(
        r,
        InitRequest::Attach(Role::Join, &a.watch),
        errors::room_not_found(),
    )
    .await;
    refused(
        r,
        InitRequest::Attach(Role::Watch, &a.join),
        errors::room_not_found(),
    )
    .await;
    refused(
        r,
        InitRequest::Attach(Role::Join, &a.resume),
        errors::room_not_found(),
    )
    .await;
    refused(r, InitRequest::Resume(&a.join), errors::room_not_found()).await;
    refused(
        r,
        InitRequest::Attach(Role::Join, "AAAAAAAAAAAAAAAA"),
        errors::room_not_found(),
    )
    .await;
}

/// Attach: guests and watchers enter on any instance, get ids of their own,
/// and the host is told who joined, in which role.
pub async fn guests_and_watchers_attach_and_the_host_is_told<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let (room, [(_g, gp), (_w, wp), (_l, lp)]) = populated(&fleet, 8).await;
    let ids: BTreeSet<&str> = [room.hp.id(), gp.id(), wp.id(), lp.id()].into();
    assert_eq!(ids.len(), 4, "peer ids are distinct");
    for p in [&gp, &wp, &lp] {
        assert_eq!(p.welcome.room, room.hp.welcome.room);
    }
}

/// Full room: past `max_peers` guests and watchers, entering is refused
/// (and the host hears nothing of it); a place frees when one leaves.
pub async fn a_full_room_refuses_more_peers_until_one_leaves<F: Fleet>() {
    let fleet = F::start(RoomLimits {
        max_peers: 2,
        ..limits()
    })
    .await;
    let mut room = open_room(&fleet, 0).await;
    let (g, mut gp) = attach(&fleet, 1, &mut room, Role::Join, 8).await;
    let (_w, _wp) = attach(&fleet, 2, &mut room, Role::Watch, 8).await;
    for (i, role) in [(0, Role::Join), (1, Role::Watch), (2, Role::Join)] {
        let token = room.token(role).to_string();
        refused(
            fleet.at(i),
            InitRequest::Attach(role, &token),
            errors::room_full(2),
        )
        .await;
    }
    g.relay(RelayKind::Answer, None, text("still two"))
        .await
        .expect("relay");
    assert_eq!(
        room.hp.text().await,
        "still two",
        "no peer_joined for a refused peer"
    );
    leaves(g, &gp, &mut room).await;
    assert!(gp.queued().is_empty());
    let (_g2, _) = attach(&fleet, 0, &mut room, Role::Join, 8).await;
}

/// Relay: the host reaches one peer with `to` or every peer without; guests
/// and watchers reach only the host, whatever their `to`; each sender's
/// order is kept; rooms never mix; each delivery is counted once.
pub async fn the_host_reaches_one_peer_with_to_or_all_without<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let (mut room, [(a, mut ap), (w, mut wp), (_b, mut bp)]) = populated(&fleet, 512).await;
    let host = &room.host;

    // `to` reaches exactly that peer, byte for byte.
    let exact = r#"{"type":"offer", "sdp":"v=0\r\n\u00e9|,", "to":"x"}"#;
    host.relay(RelayKind::Offer, Some(ap.id()), text(exact))
        .await
        .expect("relay to a");
    assert_eq!(ap.text().await, exact);
    // Without `to`: everyone; for b and w it is the next message, so the
    // one for a did not reach them.
    host.relay(RelayKind::Configure, None, text("all"))
        .await
        .expect("broadcast");
    for p in [&mut ap, &mut bp, &mut wp] {
        assert_eq!(p.text().await, "all");
    }
    let nobody = host
        .relay(RelayKind::Offer, Some("nobody00"), text("x"))
        .await;
    same_error(nobody, errors::peer_not_found());

    // A guest's `to` is ignored: its message goes to the host only.
    a.relay(RelayKind::Answer, Some(bp.id()), text("from a"))
        .await
        .expect("guest relay");
    w.relay(RelayKind::IceCandidate, None, text("from w"))
        .await
        .expect("watcher relay");
    let mut got = [room.hp.text().await, room.hp.text().await];
    got.sort();
    assert_eq!(got, ["from a", "from w"]);
    broadcast(host, "marker").await;
    for p in [&mut ap, &mut bp, &mut wp] {
        assert_eq!(p.text().await, "marker", "b never got a's message");
    }

    // Each sender's order is kept, both ways, across instances.
    const N: usize = 100;
    for i in 0..N {
        a.relay(RelayKind::IceCandidate, None, text(format!("a{i}")))
            .await
            .expect("a");
        w.relay(RelayKind::IceCandidate, None, text(format!("w{i}")))
            .await
            .expect("w");
        host.relay(
            RelayKind::IceCandidate,
            Some(ap.id()),
            text(format!("h{i}")),
        )
        .await
        .expect("h");
    }
    let (mut from_a, mut from_w) = (0, 0);
    for _ in 0..2 * N {
        let m = room.hp.text().await;
        if m.starts_with('a') {
            assert_eq!(m, format!("a{from_a}"));
            from_a += 1;
        } else {
            assert_eq!(m, format!("w{from_w}"));
            from_w += 1;
        }
    }
    for i in 0..N {
        assert_eq!(ap.text().await, format!("h{i}"));
    }

    // Another room shares nothing with this one.
    let mut other = open_room(&fleet, 1).await;
    let (_o, mut op) = attach(&fleet, 2, &mut other, Role::Join, 8).await;
    let cross = room
        .host
        .relay(RelayKind::Offer, Some(op.id()), text("x"))
        .await;
    same_error(cross, errors::peer_not_found());
    broadcast(&other.host, "other room").await;
    assert_eq!(op.text().await, "other room");
    broadcast(&room.host, "this room").await;
    for p in [&mut ap, &mut bp, &mut wp] {
        assert_eq!(p.text().await, "this room");
    }

    // Counted once per receiver, where it was delivered.
    assert_eq!(
        total(&fleet, "signal_messages_relayed_total{type=\"configure\"}"),
        3.0
    );
    assert_eq!(
        total(&fleet, "signal_messages_relayed_total{type=\"answer\"}"),
        1.0
    );
    assert_eq!(
        total(
            &fleet,
            "signal_messages_relayed_total{type=\"ice_candidate\"}"
        ),
        (3 * N + 1) as f64
    );
}

/// Leave: a guest leaving is told to the host only; the room outlives its
/// guests; the host leaving is told to every guest and watcher, whose
/// messages are then refused, and a guest entering meanwhile hears it too.
pub async fn leaving_is_told_to_the_peers_it_concerns<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let (mut room, [(g, gp), (w, mut wp), (_l, mut lp)]) = populated(&fleet, 8).await;
    leaves(g, &gp, &mut room).await;
    broadcast(&room.host, "after g").await;
    for p in [&mut wp, &mut lp] {
        assert_eq!(p.text().await, "after g", "only the host hears of a leave");
    }
    let (_g2, mut g2p) = attach(&fleet, 1, &mut room, Role::Join, 8).await;

    let Room {
        host, join, watch, ..
    } = room;
    host.leave().await;
    for p in [&mut wp, &mut lp, &mut g2p] {
        assert_eq!(p.json().await, json!({"type": "host_left"}));
    }
    same_error(
        w.relay(RelayKind::Answer, None, text("anyone?")).await,
        errors::host_absent(),
    );
    // The room waits for its host: its tokens still work.
    for i in 0..fleet.instances() {
        assert!(fleet.at(i).has_token(Role::Join, &join).await);
    }
    let (late, mut latep) = enter(fleet.at(1), InitRequest::Attach(Role::Watch, &watch), 8)
        .await
        .expect("attach while the host is away");
    assert_eq!(latep.json().await, json!({"type": "host_left"}));
    late.leave().await;
}

/// Grace period: a room whose host does not come back closes once the
/// grace period has passed, not before: its peers get `room_closed` and the
/// close, its tokens die everywhere; other rooms carry on.
pub async fn the_room_closes_when_the_grace_period_ends<F: Fleet>() {
    let grace = F::SHORT_GRACE;
    let fleet = F::start(RoomLimits {
        host_grace: grace,
        ..limits()
    })
    .await;
    let mut room = open_room(&fleet, 0).await;
    let (g, mut gp) = attach(&fleet, 1, &mut room, Role::Join, 8).await;
    let (_w, mut wp) = attach(&fleet, 0, &mut room, Role::Watch, 8).await;
    let mut kept = open_room(&fleet, 2).await;
    let (_k, mut kp) = attach(&fleet, 1, &mut kept, Role::Join, 8).await;
    eventually("two rooms counted", || {
        fleet.metrics().iter().map(|m| m.rooms()).sum::<i64>() == 2
    })
    .await;

    let Room {
        host,
        join,
        watch,
        resume,
        ..
    } = room;
    let left_at = Instant::now();
    host.leave().await;
    let (code, reason) = errors::ROOM_CLOSED;
    for p in [&mut gp, &mut wp] {
        assert_eq!(p.json().await, json!({"type": "host_left"}));
        assert_eq!(p.json().await, json!({"type": "room_closed"}));
        assert_eq!(p.next().await, Outgoing::Close(code, reason));
        assert!(
            left_at.elapsed() >= grace,
            "closed after {:?}, before the grace period of {grace:?}",
            left_at.elapsed()
        );
    }
    for i in 0..fleet.instances() {
        let r = fleet.at(i);
        assert!(!r.has_token(Role::Join, &join).await);
        assert!(!r.has_token(Role::Watch, &watch).await);
        refused(
            r,
            InitRequest::Attach(Role::Join, &join),
            errors::room_not_found(),
        )
        .await;
        refused(r, InitRequest::Resume(&resume), errors::room_not_found()).await;
    }
    same_error(
        g.relay(RelayKind::Answer, None, text("late")).await,
        errors::room_not_found(),
    );
    g.leave().await;
    eventually("one room counted", || {
        fleet.metrics().iter().map(|m| m.rooms()).sum::<i64>() == 1
    })
    .await;
    broadcast(&kept.host, "still here").await;
    assert_eq!(kp.text().await, "still here");
}

/// Resume: the host comes back (on any instance) with its secret, gets the
/// room's tokens, a fresh secret and the peers present; they hear it is
/// back. The old secret is spent. Resuming again replaces a connection that
/// is still there: it is cut off, and what it does then changes nothing.
pub async fn resuming_replaces_the_host<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let (room, [(g, mut gp), (_w, mut wp), (_l, mut lp)]) = populated(&fleet, 64).await;
    let first = room.hp.welcome.clone();
    room.host.leave().await;
    for p in [&mut gp, &mut wp, &mut lp] {
        assert_eq!(p.json().await, json!({"type": "host_left"}));
    }
    let (_late, mut latep) = enter(fleet.at(1), InitRequest::Attach(Role::Join, &room.join), 64)
        .await
        .expect("attach while the host is away");
    assert_eq!(latep.json().await, json!({"type": "host_left"}));
    let present: BTreeSet<(String, &str)> = [
        (gp.id(), "join"),
        (wp.id(), "watch"),
        (lp.id(), "join"),
        (latep.id(), "join"),
    ]
    .into_iter()
    .map(|(id, role)| (id.to_string(), role))
    .collect();

    // Back, on an instance the host never used.
    let (host2, mut h2p) = resume_host(&fleet, 2, &room.resume, &first, &present).await;
    let secret2 = h2p
        .welcome
        .resume
        .clone()
        .expect("fresh secret")
        .into_string();
    assert_ne!(secret2, room.resume);
    for p in [&mut gp, &mut wp, &mut lp, &mut latep] {
        assert_eq!(p.json().await, json!({"type": "host_joined"}));
    }
    g.relay(RelayKind::Answer, None, text("again"))
        .await
        .expect("guest relay");
    assert_eq!(h2p.text().await, "again");
    host2
        .relay(RelayKind::Offer, Some(lp.id()), text("to l"))
        .await
        .expect("host relay");
    assert_eq!(lp.text().await, "to l");
    for i in 0..fleet.instances() {
        refused(
            fleet.at(i),
            InitRequest::Resume(&room.resume),
            errors::room_not_found(),
        )
        .await;
    }

    // Resuming again while host2 is still connected (half-open) replaces it.
    let (host3, mut h3p) = resume_host(&fleet, 1, &secret2, &first, &present).await;
    kicked(&h2p.link, Kick::Replaced).await;
    for p in [&mut gp, &mut wp, &mut lp, &mut latep] {
        assert_eq!(p.json().await, json!({"type": "host_joined"}));
    }
    same_error(
        host2.relay(RelayKind::Offer, None, text("stale")).await,
        errors::replaced(),
    );
    host2.leave().await; // its session ends: must not unseat host3
    broadcast(&host3, "host3").await;
    for p in [&mut gp, &mut wp, &mut lp, &mut latep] {
        assert_eq!(
            p.text().await,
            "host3",
            "no host_left from the replaced host"
        );
    }
    g.relay(RelayKind::Answer, None, text("to host3"))
        .await
        .expect("guest relay");
    assert_eq!(h3p.text().await, "to host3");
}

/// Resumes on instance `at` with `secret`: the welcome keeps the room's
/// identity; the peers present are announced.
async fn resume_host<F: Fleet>(
    fleet: &F,
    at: usize,
    secret: &str,
    first: &Welcome,
    present: &BTreeSet<(String, &str)>,
) -> (M<F>, Peer) {
    let (host, mut hp) = enter(fleet.at(at), InitRequest::Resume(secret), 64)
        .await
        .expect("resume");
    let w = &hp.welcome;
    assert_eq!(
        (&w.room, &w.peer, w.role, &w.join, &w.watch),
        (
            &first.room,
            &first.peer,
            Role::Host,
            &first.join,
            &first.watch
        )
    );
    assert_ne!(
        w.resume.as_ref().map(|t| t.as_str()),
        Some(secret),
        "a fresh secret"
    );
    let listed: BTreeSet<(String, &str)> = w
        .peers
        .as_ref()
        .expect("a resumed host's welcome lists the peers present")
        .iter()
        .map(|(id, role)| (id.as_str().to_owned(), role.as_str()))
        .collect();
    assert_eq!(&listed, present, "the welcome's peers");
    let mut announced = BTreeSet::new();
    for _ in 0..present.len() {
        let m = hp.json().await;
        assert_eq!(m["type"], "peer_joined", "{m}");
        let role = if m["role"] == "watch" {
            "watch"
        } else {
            "join"
        };
        announced.insert((m["peer"].as_str().unwrap_or_default().to_string(), role));
    }
    assert_eq!(&announced, present);
    (host, hp)
}

/// Slow consumer: a peer whose outbox is full is cut off by the send that
/// found it full, counted once however many messages it then misses, and
/// its room carries on.
pub async fn a_slow_consumer_is_cut_off_once_and_its_room_carries_on<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let mut room = open_room(&fleet, 0).await;
    // Room for two messages once `init` is read; it reads nothing more.
    let (slow, mut sp) = attach(&fleet, 1, &mut room, Role::Watch, 2).await;
    let (_r, mut rp) = attach(&fleet, 1, &mut room, Role::Join, 64).await;
    const N: usize = 10;
    for i in 0..N {
        room.host
            .relay(RelayKind::Offer, None, text(format!("{i}")))
            .await
            .expect("broadcast");
    }
    for i in 0..N {
        assert_eq!(
            rp.text().await,
            format!("{i}"),
            "the reader gets everything"
        );
    }
    kicked(&sp.link, Kick::SlowConsumer).await;
    let dropped = "signal_slow_peers_dropped_total";
    eventually("the slow peer counted", || total(&fleet, dropped) >= 1.0).await;
    let got: Vec<Outgoing> = sp.queued();
    assert_eq!(
        got,
        [Outgoing::Text("0".into()), Outgoing::Text("1".into())]
    );
    // The session leaves the room when its peer is cut off.
    leaves(slow, &sp, &mut room).await;
    broadcast(&room.host, "after").await;
    assert_eq!(rp.text().await, "after");
    assert_eq!(room.hp.link.kick_reason(), None);
    assert_eq!(rp.link.kick_reason(), None);
    assert_eq!(total(&fleet, dropped), 1.0, "counted once");
    assert_eq!(
        total(&fleet, "signal_messages_relayed_total{type=\"offer\"}"),
        (N + 2 + 1) as f64,
        "what the reader got, and what the slow peer's outbox took"
    );
}

// ---- operations for operators --------------------------------------------------

/// The room labelled `label` in `rooms`, if listed.
fn listed<'a>(rooms: &'a [RoomInfo], label: &str) -> Option<&'a RoomInfo> {
    rooms.iter().find(|r| r.label == label)
}

/// The (id, role) pairs of a listed room's peers.
fn peer_set(room: &RoomInfo) -> BTreeSet<(String, &'static str)> {
    room.peers
        .iter()
        .map(|p| (p.id.as_str().to_owned(), p.role.as_str()))
        .collect()
}

/// `rooms()`: every instance lists every open room, with its host's id
/// and presence, when it opened, and its guests and watchers wherever they
/// are connected; a room whose host left is listed as waiting; a closed
/// room is not listed.
pub async fn every_instance_lists_every_open_room_with_its_host_and_peers<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (room, [(_g, gp), (_w, wp), (_l, lp)]) = populated(&fleet, 8).await;
    let other = open_room(&fleet, 1).await;
    let label = room.hp.welcome.room.clone();
    let want: BTreeSet<(String, &str)> = [(gp.id(), "join"), (wp.id(), "watch"), (lp.id(), "join")]
        .into_iter()
        .map(|(id, role)| (id.to_string(), role))
        .collect();
    for i in 0..fleet.instances() {
        let rooms = fleet.at(i).rooms().await.expect("rooms");
        assert_eq!(rooms.len(), 2, "{rooms:?}");
        let r = listed(&rooms, &label).expect("the populated room is listed");
        assert_eq!(r.host, room.hp.id());
        assert!(r.host_connected);
        assert!(r.since >= before && r.host_since >= r.since, "{r:?}");
        assert_eq!(peer_set(r), want);
        for p in &r.peers {
            assert!(p.since >= r.since, "{p:?}");
        }
        let o = listed(&rooms, &other.hp.welcome.room).expect("the other room");
        assert!(o.peers.is_empty() && o.host_connected);
    }
    other.host.leave().await;
    for i in 0..fleet.instances() {
        let rooms = fleet.at(i).rooms().await.expect("rooms");
        let o = listed(&rooms, &other.hp.welcome.room).expect("a waiting room is listed");
        assert!(!o.host_connected, "{o:?}");
    }
    assert!(fleet.at(2).close_room(&label).await.expect("close"));
    for i in 0..fleet.instances() {
        let rooms = fleet.at(i).rooms().await.expect("rooms");
        assert!(
            listed(&rooms, &label).is_none(),
            "a closed room is not listed"
        );
        assert_eq!(rooms.len(), 1);
    }
}

/// Every peer of a room that closed at once (`close_room`): `room_closed`,
/// then the close 1000.
async fn all_told_closed(peers: &mut [&mut Peer]) {
    let (code, reason) = errors::ROOM_CLOSED;
    for p in peers.iter_mut() {
        assert_eq!(p.json().await, json!({"type": "room_closed"}), "{}", p.id());
        assert_eq!(p.next().await, Outgoing::Close(code, reason));
    }
}

/// `close_room(label)` on any instance ends the room at once (well inside
/// its grace period): every peer, wherever it is, and the host get
/// `room_closed` and the close; its tokens die everywhere; closing it
/// again, or a label no room has, answers `false`; other rooms carry on.
pub async fn an_administrator_closes_a_room_from_any_instance<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let (mut room, [(_g, mut gp), (_w, mut wp), (_l, mut lp)]) = populated(&fleet, 8).await;
    let mut kept = open_room(&fleet, 2).await;
    let (_k, mut kp) = attach(&fleet, 0, &mut kept, Role::Join, 8).await;
    let label = room.hp.welcome.room.clone();
    assert!(fleet.at(2).close_room(&label).await.expect("close_room"));
    all_told_closed(&mut [&mut gp, &mut wp, &mut lp, &mut room.hp]).await;
    for i in 0..fleet.instances() {
        let r = fleet.at(i);
        assert!(!r.has_token(Role::Join, &room.join).await);
        refused(
            r,
            InitRequest::Resume(&room.resume),
            errors::room_not_found(),
        )
        .await;
        assert!(!r.close_room(&label).await.expect("close again"));
    }
    assert!(!fleet.at(1).close_room("nosuchrm").await.expect("close"));
    same_error(
        room.host.relay(RelayKind::Offer, None, text("late")).await,
        errors::room_not_found(),
    );
    room.host.leave().await;
    eventually("one room counted", || {
        fleet.metrics().iter().map(|m| m.rooms()).sum::<i64>() == 1
    })
    .await;
    broadcast(&kept.host, "still here").await;
    assert_eq!(kp.text().await, "still here");
}

/// A host's own `close_room` ends its room at once, for every peer on
/// every instance; a guest's or watcher's is refused (`forbidden`) and
/// changes nothing.
pub async fn the_host_closes_its_room_and_no_one_else_may<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let (mut room, [(g, mut gp), (w, mut wp), (_l, mut lp)]) = populated(&fleet, 8).await;
    for m in [&g, &w] {
        same_error(m.close_room().await, errors::not_host());
    }
    broadcast(&room.host, "still open").await;
    for p in [&mut gp, &mut wp, &mut lp] {
        assert_eq!(p.text().await, "still open");
    }
    room.host
        .close_room()
        .await
        .expect("the host closes its room");
    all_told_closed(&mut [&mut gp, &mut wp, &mut lp, &mut room.hp]).await;
    for i in 0..fleet.instances() {
        assert!(!fleet.at(i).has_token(Role::Watch, &room.watch).await);
        let rooms = fleet.at(i).rooms().await.expect("rooms");
        assert!(rooms.is_empty(), "{rooms:?}");
    }
    // The sessions then leave: nothing more happens.
    g.leave().await;
    room.host.leave().await;
    assert!(gp.queued().is_empty());
}

/// `kick(room, peer)` from any instance closes that peer's connection with
/// 4003 and tells the host at once; its session's later leave tells nobody
/// again. A kicked host leaves its room waiting, as a dropped one does.
pub async fn an_administrator_kicks_a_peer_or_the_host_from_any_instance<F: Fleet>() {
    let fleet = F::start(limits()).await;
    let (mut room, [(g, mut gp), (_w, mut wp), (_l, mut lp)]) = populated(&fleet, 8).await;
    let label = room.hp.welcome.room.clone();
    let gid = gp.id().to_string();
    assert!(fleet.at(2).kick(&label, &gid).await.expect("kick"));
    assert_eq!(gp.next().await, Outgoing::Close(KICKED.0, KICKED.1));
    assert_eq!(
        room.hp.json().await,
        json!({"type": "peer_left", "peer": gid})
    );
    g.leave().await;
    for i in 0..fleet.instances() {
        assert!(!fleet.at(i).kick(&label, &gid).await.expect("kick again"));
        let rooms = fleet.at(i).rooms().await.expect("rooms");
        let r = listed(&rooms, &label).expect("listed");
        assert!(r.peers.iter().all(|p| p.id != gid), "{r:?}");
    }
    assert!(!fleet.at(0).kick(&label, "nobody00").await.expect("kick"));
    assert!(!fleet.at(0).kick("nosuchrm", &gid).await.expect("kick"));
    broadcast(&room.host, "after the kick").await;
    for p in [&mut wp, &mut lp] {
        assert_eq!(p.text().await, "after the kick");
    }
    let (_g2, _) = attach(&fleet, 1, &mut room, Role::Join, 8).await;

    // The host, from another instance.
    let host_id = room.hp.id().to_string();
    assert!(fleet.at(1).kick(&label, &host_id).await.expect("kick host"));
    assert_eq!(room.hp.next().await, Outgoing::Close(KICKED.0, KICKED.1));
    for p in [&mut wp, &mut lp] {
        assert_eq!(p.json().await, json!({"type": "host_left"}));
    }
    let Room { host, resume, .. } = room;
    host.leave().await; // its session ends: no second host_left
    let (_h2, _h2p) = enter(fleet.at(2), InitRequest::Resume(&resume), 64)
        .await
        .expect("the kicked host resumes");
    for p in [&mut wp, &mut lp] {
        assert_eq!(
            p.json().await,
            json!({"type": "host_joined"}),
            "no second host_left"
        );
    }
}

/// The next room event a live subscriber gets.
async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<RoomEvent>) -> RoomEvent {
    timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no room event within {WAIT:?}"))
        .expect("the feed is open")
}

/// Live subscribers (the fleet page's feed) of any instance hear every
/// room's events, wherever they happened, each once.
pub async fn room_events_reach_live_subscribers_on_every_instance<F: Fleet>() {
    let fleet = F::start(limits()).await;
    for i in 0..fleet.instances() {
        fleet.at(i).set_events(EventSink::new(Webhooks::disabled()));
    }
    let mut feeds: Vec<_> = (0..fleet.instances())
        .map(|i| fleet.at(i).events().subscribe().expect("a feed"))
        .collect();
    let mut room = open_room(&fleet, 0).await;
    let (g, gp) = attach(&fleet, 1, &mut room, Role::Join, 8).await;
    let gid = gp.id().to_string();
    leaves(g, &gp, &mut room).await;
    room.host.close_room().await.expect("close");
    let want = [
        (EventKind::RoomStarted, room.hp.id().to_string()),
        (EventKind::PeerJoined, gid.clone()),
        (EventKind::PeerLeft, gid.clone()),
        (EventKind::RoomEnded, String::new()),
    ];
    for feed in &mut feeds {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(next_event(feed).await);
        }
        // Events of different instances may interleave; with Redis, `seq`
        // gives the room's order (in memory there is none: they come in
        // order, and a stable sort keeps it).
        got.sort_by_key(|e| e.seq);
        let kinds: Vec<(EventKind, String)> = got
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.peer.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(kinds, want);
        assert!(got.iter().all(|e| e.room.label == room.hp.welcome.room));
    }
    // Nothing more: the next event is the next room's.
    let next = open_room(&fleet, 2).await;
    for feed in &mut feeds {
        let e = next_event(feed).await;
        assert_eq!(
            (e.kind, e.room.label.as_str()),
            (EventKind::RoomStarted, next.hp.welcome.room.as_str())
        );
    }
}
