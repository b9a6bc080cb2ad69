//! Revoked tokens: by `jti`, by subject, or every token of a room issued
//! before a time.
//!
//! [`RevocationList`] is checked synchronously on every use
//! ([`RevocationList::is_revoked`]: three hash look-ups under a read lock,
//! no I/O), and tells live sessions when to look again: every applied
//! revocation bumps a generation counter on a `tokio::sync::watch` channel,
//! which [`RevocationList::wait_revoked`] awaits, so a session ends as soon
//! as the revocation reaches its instance.
//!
//! # Bounded
//!
//! An entry is kept only while a token it covers could still be valid, which
//! the key ring's maximum lifetime `L` (`exp - iat <= L`) and the `nbf`/`iat`
//! allowance `S` ([`NOT_BEFORE_LEEWAY_SECS`]) bound:
//!
//! - by subject or room, tokens issued before `T`: `exp < T + L`, so the
//!   entry expires at `T + L`;
//! - by `jti`: at the token's `exp` when the revoker knows it, else at
//!   `now + S + L` (a token valid now was issued at most `S` ahead).
//!
//! [`RevocationList::prune`] drops expired entries (run on every revocation,
//! and by whoever owns the list on a timer if it likes). Apart from that,
//! at most `capacity` entries ([`DEFAULT_REVOCATION_CAPACITY`]) are held;
//! past it a revocation is refused ([`RevocationError::Full`]) rather than
//! forgetting an older one.
//!
//! # Shared through Redis
//!
//! With `--redis-url` this type stays each instance's local copy (so the
//! check stays synchronous); `store.rs` keeps revocations in Redis and
//! applies every instance's to it, and `live.rs`'s `Auth::revoke` puts a
//! new one there. The key layout is in `store.rs`.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::claims::Claims;
use super::names::{RoomName, Subject, TokenId};
use super::verify::{unix_now, NOT_BEFORE_LEEWAY_SECS};

/// Entries held at most, by default. Revocations come from administrators,
/// so reaching this means a runaway script; each entry costs under 200
/// bytes, so the bound is about 20 MB.
pub const DEFAULT_REVOCATION_CAPACITY: usize = 100_000;

/// What a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RevocationTarget {
    /// One token, by its `jti`.
    Token {
        /// The token's id.
        jti: TokenId,
        /// The token's `exp`, when known (from the token itself): lets the
        /// entry go as soon as the token would have expired anyway.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    },
    /// Every token of `sub` with `iat < issued_before`. Tokens minted for the
    /// subject afterwards are valid; to revoke everything issued so far,
    /// pass `now + 1`.
    Subject {
        /// The subject.
        sub: Subject,
        /// Seconds since the Unix epoch.
        issued_before: u64,
    },
    /// Every token for `room` with `iat < issued_before`, whatever its
    /// grants and subject.
    Room {
        /// The room.
        room: RoomName,
        /// Seconds since the Unix epoch.
        issued_before: u64,
    },
}

/// A revocation and when it may be forgotten: what is applied, stored and
/// sent between instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// What it covers.
    #[serde(flatten)]
    pub target: RevocationTarget,
    /// No token it covers is valid from this second on.
    pub expires_at: u64,
}

/// A revocation that could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationError {
    /// The list holds its maximum number of live entries.
    Full {
        /// That maximum.
        capacity: usize,
    },
}

impl std::fmt::Display for RevocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevocationError::Full { capacity } => write!(
                f,
                "the revocation list is full ({capacity} live entries); entries go as the tokens \
                 they cover expire"
            ),
        }
    }
}

impl std::error::Error for RevocationError {}

/// `iat < issued_before`, remembered until `expires_at`.
#[derive(Debug, Clone, Copy)]
struct Window {
    issued_before: u64,
    expires_at: u64,
}

#[derive(Debug, Default)]
struct Entries {
    jti: HashMap<TokenId, u64>,
    sub: HashMap<Subject, Window>,
    room: HashMap<RoomName, Window>,
}

impl Entries {
    fn len(&self) -> usize {
        self.jti.len() + self.sub.len() + self.room.len()
    }

    fn prune(&mut self, now: u64) -> usize {
        let before = self.len();
        self.jti.retain(|_, expires_at| *expires_at > now);
        self.sub.retain(|_, w| w.expires_at > now);
        self.room.retain(|_, w| w.expires_at > now);
        before - self.len()
    }

    fn contains(&self, target: &RevocationTarget) -> bool {
        match target {
            RevocationTarget::Token { jti, .. } => self.jti.contains_key(jti),
            RevocationTarget::Subject { sub, .. } => self.sub.contains_key(sub),
            RevocationTarget::Room { room, .. } => self.room.contains_key(room),
        }
    }
}

/// Widens `slot` to cover `w` too; whether anything changed.
fn widen(slot: &mut Window, w: Window) -> bool {
    let old = *slot;
    slot.issued_before = slot.issued_before.max(w.issued_before);
    slot.expires_at = slot.expires_at.max(w.expires_at);
    old.issued_before != slot.issued_before || old.expires_at != slot.expires_at
}

/// The revoked tokens this instance knows of. One per server, shared by
/// `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct RevocationList {
    entries: RwLock<Entries>,
    generation: watch::Sender<u64>,
    max_lifetime: u64,
    capacity: usize,
}

impl RevocationList {
    /// An empty list for tokens living at most `max_lifetime` (the key
    /// ring's [`max_lifetime`](super::KeyRing::max_lifetime)).
    pub fn new(max_lifetime: Duration) -> Self {
        Self::with_capacity(max_lifetime, DEFAULT_REVOCATION_CAPACITY)
    }

    /// [`RevocationList::new`] holding at most `capacity` live entries.
    pub fn with_capacity(max_lifetime: Duration, capacity: usize) -> Self {
        RevocationList {
            entries: RwLock::new(Entries::default()),
            generation: watch::Sender::new(0),
            max_lifetime: max_lifetime.as_secs(),
            capacity,
        }
    }

    /// The revocation of `target` made at `now`, with the expiry its
    /// covered tokens allow (see the module documentation).
    pub fn revocation(&self, target: RevocationTarget, now: u64) -> Revocation {
        let expires_at = match &target {
            RevocationTarget::Token { exp, .. } => {
                let bound = now
                    .saturating_add(NOT_BEFORE_LEEWAY_SECS)
                    .saturating_add(self.max_lifetime);
                exp.map_or(bound, |exp| exp.min(bound))
            }
            RevocationTarget::Subject { issued_before, .. }
            | RevocationTarget::Room { issued_before, .. } => {
                issued_before.saturating_add(self.max_lifetime)
            }
        };
        Revocation { target, expires_at }
    }

    /// Revokes `target` now; returns what was applied (to store or send to
    /// other instances).
    pub fn revoke(&self, target: RevocationTarget) -> Result<Revocation, RevocationError> {
        let now = unix_now();
        let revocation = self.revocation(target, now);
        self.apply(&revocation, now)?;
        Ok(revocation)
    }

    /// Records `revocation` (made here, or received from another instance
    /// or a store) at `now`. Applying the same revocation twice, or an older
    /// one, changes nothing; an entry for the same `jti`, subject or room is
    /// widened, never narrowed. Wakes the waiting sessions when something
    /// changed, and returns whether it did.
    pub fn apply(&self, revocation: &Revocation, now: u64) -> Result<bool, RevocationError> {
        if revocation.expires_at <= now {
            return Ok(false); // every token it covers has expired
        }
        let changed = {
            let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
            if !entries.contains(&revocation.target) && entries.len() >= self.capacity {
                entries.prune(now);
                if entries.len() >= self.capacity {
                    return Err(RevocationError::Full {
                        capacity: self.capacity,
                    });
                }
            }
            let expires_at = revocation.expires_at;
            match &revocation.target {
                RevocationTarget::Token { jti, .. } => {
                    let slot = entries.jti.entry(jti.clone()).or_insert(0);
                    let changed = *slot < expires_at;
                    *slot = (*slot).max(expires_at);
                    changed
                }
                RevocationTarget::Subject { sub, issued_before } => {
                    let w = Window {
                        issued_before: *issued_before,
                        expires_at,
                    };
                    match entries.sub.get_mut(sub) {
                        Some(slot) => widen(slot, w),
                        None => entries.sub.insert(sub.clone(), w).is_none(),
                    }
                }
                RevocationTarget::Room {
                    room,
                    issued_before,
                } => {
                    let w = Window {
                        issued_before: *issued_before,
                        expires_at,
                    };
                    match entries.room.get_mut(room) {
                        Some(slot) => widen(slot, w),
                        None => entries.room.insert(room.clone(), w).is_none(),
                    }
                }
            }
        };
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
        Ok(changed)
    }

    /// Whether a revocation covers `claims`. Entries past their expiry may
    /// still answer yes until pruned; that is harmless, as the tokens they
    /// cover have expired too.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.jti.contains_key(&claims.jti)
            || entries
                .sub
                .get(&claims.sub)
                .is_some_and(|w| claims.iat < w.issued_before)
            || claims.room.as_ref().is_some_and(|room| {
                entries
                    .room
                    .get(room)
                    .is_some_and(|w| claims.iat < w.issued_before)
            })
    }

    /// Completes when a revocation covering `claims` has been applied
    /// (at once if one already has). For a session's `select!`: revocations
    /// elsewhere wake it only to look again.
    pub async fn wait_revoked(&self, claims: &Claims) {
        let mut changes = self.generation.subscribe();
        loop {
            // Marked seen before looking, so a revocation applied between the
            // look and the wait still wakes us.
            changes.borrow_and_update();
            if self.is_revoked(claims) {
                return;
            }
            if changes.changed().await.is_err() {
                // Unreachable while `self` lives (it owns the sender).
                std::future::pending::<()>().await;
            }
        }
    }

    /// A receiver of the generation counter, bumped by every change: for
    /// callers that check many sessions at once.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The number of changes applied so far.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Drops entries expired at `now`; returns how many.
    pub fn prune(&self, now: u64) -> usize {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .prune(now)
    }

    /// Live entries (expired ones not yet pruned included).
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the list holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, as revocations (for an admin listing, or to seed a store).
    pub fn entries(&self) -> Vec<Revocation> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let jti = entries.jti.iter().map(|(jti, &expires_at)| Revocation {
            target: RevocationTarget::Token {
                jti: jti.clone(),
                exp: None,
            },
            expires_at,
        });
        let sub = entries.sub.iter().map(|(sub, w)| Revocation {
            target: RevocationTarget::Subject {
                sub: sub.clone(),
                issued_before: w.issued_before,
            },
            expires_at: w.expires_at,
        });
        let room = entries.room.iter().map(|(room, w)| Revocation {
            target: RevocationTarget::Room {
                room: room.clone(),
                issued_before: w.issued_before,
            },
            expires_at: w.expires_at,
        });
        jti.chain(sub).chain(room).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::{Grant, Grants};
    use std::sync::Arc;

    const NOW: u64 = 1_767_225_600;
    const DAY: u64 = 24 * 3600;

    fn list() -> RevocationList {
        RevocationList::new(Duration::from_secs(30 * DAY))
    }

    fn claims(sub: &str, room: &str, jti: &str, iat: u64) -> Claims {
        Claims {
            sub: Subject::new(sub).unwrap(),
            room: Some(RoomName::new(room).unwrap()),
            grants: Grants::new([Grant::Watch]).unwrap(),
            iat,
            nbf: iat,
            exp: iat + 3600,
            jti: TokenId::new(jti).unwrap(),
        }
    }

    fn by_jti(jti: &str, exp: Option<u64>) -> RevocationTarget {
        RevocationTarget::Token {
            jti: TokenId::new(jti).unwrap(),
            exp,
        }
    }

    fn by_sub(sub: &str, issued_before: u64) -> RevocationTarget {
        RevocationTarget::Subject {
            sub: Subject::new(sub).unwrap(),
            issued_before,
        }
    }

    fn by_room(room: &str, issued_before: u64) -> RevocationTarget {
        RevocationTarget::Room {
            room: RoomName::new(room).unwrap(),
            issued_before,
        }
    }

    fn apply(l: &RevocationList, t: RevocationTarget) -> bool {
        let r = l.revocation(t, NOW);
        l.apply(&r, NOW).unwrap()
    }

    #[test]
    fn revoking_a_jti_revokes_that_token_only() {
        let l = list();
        apply(&l, by_jti("t1", None));
        assert!(l.is_revoked(&claims("alice", "robot-7", "t1", NOW)));
        assert!(!l.is_revoked(&claims("alice", "robot-7", "t2", NOW)));
    }

    #[test]
    fn revoking_a_subject_covers_its_tokens_issued_before_the_time_only() {
        let l = list();
        apply(&l, by_sub("alice", NOW + 1));
        assert!(l.is_revoked(&claims("alice", "robot-7", "a", NOW)));
        assert!(l.is_revoked(&claims("alice", "robot-8", "b", NOW - 100)));
        assert!(
            !l.is_revoked(&claims("alice", "robot-7", "c", NOW + 1)),
            "minted afterwards"
        );
        assert!(!l.is_revoked(&claims("bob", "robot-7", "d", NOW)));
    }

    #[test]
    fn revoking_a_room_covers_every_token_for_it_issued_before_the_time() {
        let l = list();
        apply(&l, by_room("robot-7", NOW));
        assert!(l.is_revoked(&claims("alice", "robot-7", "a", NOW - 1)));
        assert!(l.is_revoked(&claims("bob", "robot-7", "b", NOW - 500)));
        assert!(
            !l.is_revoked(&claims("alice", "robot-7", "c", NOW)),
            "iat == T is not before T"
        );
        assert!(!l.is_revoked(&claims("alice", "robot-8", "d", NOW - 1)));
        let mut fleet = claims("op", "robot-7", "e", NOW - 1);
        fleet.room = None;
        assert!(!l.is_revoked(&fleet));
    }

    #[test]
    fn entries_expire_when_the_tokens_they_cover_can_no_longer_be_valid() {
        let l = list();
        let known = l.revocation(by_jti("t1", Some(NOW + 3600)), NOW);
        assert_eq!(known.expires_at, NOW + 3600);
        let unknown = l.revocation(by_jti("t2", None), NOW);
        assert_eq!(unknown.expires_at, NOW + NOT_BEFORE_LEEWAY_SECS + 30 * DAY);
        let far = l.revocation(by_jti("t3", Some(u64::MAX)), NOW);
        assert_eq!(
            far.expires_at, unknown.expires_at,
            "a claimed exp never extends the bound"
        );
        let sub = l.revocation(by_sub("alice", NOW), NOW);
        assert_eq!(sub.expires_at, NOW + 30 * DAY);

        for r in [&known, &unknown, &sub] {
            l.apply(r, NOW).unwrap();
        }
        assert_eq!(l.len(), 3);
        assert_eq!(l.prune(NOW + 3599), 0);
        assert_eq!(l.prune(NOW + 3600), 1);
        assert_eq!(l.prune(NOW + 30 * DAY), 1);
        assert_eq!(l.len(), 1);
        assert_eq!(l.prune(NOW + 31 * DAY), 1);
        assert!(l.is_empty());
        // An already-dead revocation is not even stored.
        assert!(!l.apply(&known, NOW + 3600).unwrap());
        assert!(l.is_empty());
    }

    #[test]
    fn the_list_is_bounded_and_refuses_rather_than_forgets() {
        let l = RevocationList::with_capacity(Duration::from_secs(DAY), 2);
        let r1 = l.revocation(by_jti("a", Some(NOW + 10)), NOW);
        let r2 = l.revocation(by_jti("b", Some(NOW + 1000)), NOW);
        let r3 = l.revocation(by_jti("c", None), NOW);
        l.apply(&r1, NOW).unwrap();
        l.apply(&r2, NOW).unwrap();
        assert_eq!(
            l.apply(&r3, NOW),
            Err(RevocationError::Full { capacity: 2 })
        );
        assert!(
            l.apply(&r2, NOW).is_ok(),
            "an existing entry can still be widened"
        );
        // Once `a` has expired its place is free.
        assert_eq!(l.apply(&r3, NOW + 10), Ok(true));
        assert!(l.is_revoked(&claims("x", "r", "b", NOW)));
        assert!(l.is_revoked(&claims("x", "r", "c", NOW)));
    }

    #[test]
    fn applying_twice_or_an_older_revocation_changes_nothing() {
        let l = list();
        assert!(apply(&l, by_room("robot-7", NOW)));
        let g = l.generation();
        assert!(!apply(&l, by_room("robot-7", NOW)));
        assert!(!apply(&l, by_room("robot-7", NOW - 100)), "never narrowed");
        assert_eq!(l.generation(), g);
        assert!(l.is_revoked(&claims("a", "robot-7", "x", NOW - 50)));
        assert!(apply(&l, by_room("robot-7", NOW + 100)), "widened");
        assert!(l.is_revoked(&claims("a", "robot-7", "x", NOW + 50)));
        assert_eq!(l.generation(), g + 1);
    }

    #[test]
    fn revocations_round_trip_as_json() {
        let l = list();
        for t in [
            by_jti("t1", Some(NOW + 5)),
            by_sub("alice", NOW),
            by_room("robot-7", NOW),
        ] {
            let r = l.revocation(t, NOW);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(
                serde_json::from_str::<Revocation>(&json).unwrap(),
                r,
                "{json}"
            );
        }
        let r: Revocation = serde_json::from_str(
            r#"{"kind":"room","room":"robot-7","issued_before":5,"expires_at":9}"#,
        )
        .unwrap();
        assert_eq!(r.target, by_room("robot-7", 5));
        assert!(serde_json::from_str::<Revocation>(
            r#"{"kind":"room","room":"a b","issued_before":5,"expires_at":9}"#
        )
        .is_err());
        assert_eq!(l.entries().len(), 0);
        apply(&l, by_sub("alice", NOW));
        assert_eq!(l.entries(), vec![l.revocation(by_sub("alice", NOW), NOW)]);
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_when_its_token_is_revoked() {
        let l = Arc::new(list());
        let c = claims("alice", "robot-7", "t1", unix_now());
        let waiter = {
            let l = l.clone();
            let c = c.clone();
            tokio::spawn(async move { l.wait_revoked(&c).await })
        };
        tokio::task::yield_now().await;
        l.revoke(by_sub("bob", unix_now() + 1)).unwrap();
        l.revoke(by_jti("t1", None)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken within the wait")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_of_other_tokens_does_not_end_a_session() {
        let l = list();
        let c = claims("alice", "robot-7", "t1", NOW);
        let wait = l.wait_revoked(&c);
        tokio::pin!(wait);
        apply(&l, by_jti("t2", None));
        apply(&l, by_room("robot-8", NOW + 1));
        assert!(tokio::time::timeout(Duration::from_secs(5), &mut wait)
            .await
            .is_err());
        apply(&l, by_room("robot-7", NOW + 1));
        assert!(tokio::time::timeout(Duration::from_secs(5), &mut wait)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_session_whose_token_is_already_revoked_ends_at_once() {
        let l = list();
        let c = claims("alice", "robot-7", "t1", NOW);
        apply(&l, by_jti("t1", None));
        tokio::time::timeout(Duration::from_secs(10), l.wait_revoked(&c))
            .await
            .expect("no wait");
    }
}
