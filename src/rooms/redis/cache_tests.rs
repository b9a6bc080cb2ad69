//! Tests of the room cache ([`super`]): events applied in order, held
//! until their turn, and what local peers are told.

use super::*;
use crate::rooms::Outgoing;

fn snapshot(ver: u64, peers: &[(&str, &str)]) -> Snapshot {
    Snapshot {
        room: "r00m".into(),
        ver,
        host_id: "h0st0000".into(),
        host: Some(HostAt {
            inst: "A".into(),
            epoch: 1,
        }),
        epoch: 1,
        join: "j".into(),
        watch: "w".into(),
        resume: "r".into(),
        grace_ms: 1000,
        cinst: "A".into(),
        seq: 0,
        peers: Some(
            peers
                .iter()
                .map(|(id, inst)| {
                    (
                        id.to_string(),
                        PeerAt {
                            role: Role::Join,
                            inst: inst.to_string(),
                        },
                    )
                })
                .collect(),
        ),
    }
}

fn texts(rx: &mut tokio::sync::mpsc::Receiver<Outgoing>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(Outgoing::Text(t)) = rx.try_recv() {
        out.push(t.to_string());
    }
    out
}

#[test]
fn a_resync_confirms_a_missing_foreign_peer_before_reporting_it() {
    let metrics = Metrics::new();
    let ctx = Ctx { metrics: &metrics };
    let mut room = RoomCache::from_snapshot(&snapshot(10, &[("p1", "B"), ("p2", "A")]));
    let (link, mut rx) = PeerLink::new(16);
    room.local_host = Some(LocalHost { link, epoch: 1 });
    // B has not put p1 back yet: not reported, re-check asked.
    let settle = Duration::from_secs(60);
    assert!(room.apply_sync(&snapshot(11, &[("p2", "A")]), "A", settle, &ctx));
    assert!(texts(&mut rx).is_empty());
    assert!(room.peers.contains_key("p1"));
    // B puts it back: nothing to report, nothing in doubt.
    assert!(!room.apply_sync(
        &snapshot(12, &[("p1", "B"), ("p2", "A")]),
        "A",
        settle,
        &ctx
    ));
    assert!(texts(&mut rx).is_empty());
    assert!(room.suspects.is_empty());
    // Missing again, and still missing after the settle time: reported.
    assert!(!room.apply_sync(&snapshot(13, &[("p2", "A")]), "A", Duration::ZERO, &ctx));
    let got = texts(&mut rx);
    assert_eq!(got, [r#"{"type":"peer_left","peer":"p1"}"#], "{got:?}");
    // A peer of this instance missing from Redis is reported at once.
    assert!(!room.apply_sync(&snapshot(14, &[]), "A", settle, &ctx));
    assert_eq!(texts(&mut rx), [r#"{"type":"peer_left","peer":"p2"}"#]);
    // A snapshot older than applied events changes nothing, and asks
    // for another look.
    room.apply(
        Event::Joined {
            ver: 20,
            peer: "p3".into(),
            role: Role::Watch,
            inst: "B".into(),
        },
        &ctx,
    );
    assert_eq!(
        texts(&mut rx),
        [r#"{"type":"peer_joined","peer":"p3","role":"watch"}"#]
    );
    assert!(room.apply_sync(&snapshot(15, &[]), "A", Duration::ZERO, &ctx));
    assert!(room.peers.contains_key("p3"));
    assert!(texts(&mut rx).is_empty());
}

#[test]
fn membership_events_wait_for_the_host_and_stale_ones_are_ignored() {
    let metrics = Metrics::new();
    let ctx = Ctx { metrics: &metrics };
    let mut room = RoomCache::from_snapshot(&snapshot(10, &[]));
    let joined = Event::Joined {
        ver: 11,
        peer: "p1".into(),
        role: Role::Join,
        inst: "B".into(),
    };
    // No host registered here yet: held.
    assert!(matches!(room.apply(joined.clone(), &ctx), Applied::Hold(_)));
    room.hold(Instant::now(), joined.clone());
    let (link, mut rx) = PeerLink::new(16);
    room.local_host = Some(LocalHost { link, epoch: 1 });
    assert!(!room.drain_held(&ctx));
    assert_eq!(
        texts(&mut rx),
        [r#"{"type":"peer_joined","peer":"p1","role":"join"}"#]
    );
    // The same event again, or an older one: ignored.
    room.apply(joined, &ctx);
    room.apply(
        Event::Left {
            ver: 9,
            peer: "p1".into(),
        },
        &ctx,
    );
    assert!(texts(&mut rx).is_empty());
    assert!(room.peers.contains_key("p1"));
}
