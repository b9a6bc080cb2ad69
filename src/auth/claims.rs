//! What a token says (its claims) and what it allows ([`authorize`]).
//!
//! ```json
//! {"sub":"alice","room":"robot-7","grants":["watch"],
//!  "iat":1767225600,"nbf":1767225600,"exp":1767232800,"jti":"54ICxFae_Ip7TJE2"}
//! ```
//!
//! Every claim but `room` is required, with exactly these types (numbers are
//! whole seconds since the Unix epoch); claims this server does not know
//! (`iss`, `name`, ...) are ignored, except `aud`, which is refused because
//! no audience is configured (RFC 7519 4.1.3). Unknown grant names are
//! refused, so that a token meant for a newer server never grants less than
//! its issuer thinks.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::names::{RoomName, Subject, TokenId};
use super::AuthError;

/// One permission a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Open or resume the room named by `room` as its host (a robot's bridge).
    Host,
    /// Join `room` as a full peer (may send media and `expect_*` actions).
    Join,
    /// Watch `room`: a receive-only viewer.
    Watch,
    /// See the fleet (every named room, its peers) and mint watch links for
    /// it; fleet-wide without `room`, one room's with it.
    Operator,
}

impl Grant {
    /// Every grant, in wire order.
    pub const ALL: [Grant; 4] = [Grant::Host, Grant::Join, Grant::Watch, Grant::Operator];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Host => "host",
            Grant::Join => "join",
            Grant::Watch => "watch",
            Grant::Operator => "operator",
        }
    }

    /// Whether the grant acts on one room, so needs the `room` claim.
    pub fn needs_room(self) -> bool {
        !matches!(self, Grant::Operator)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty set of grants; on the wire a JSON array of names
/// (`["host"]`, `["join","watch"]`). Grants do not imply each other: a host
/// token does not join, a join token does not watch, unless it says so.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grants(u8);

impl Grants {
    /// The set of `grants`; `None` when empty (a token must grant something).
    pub fn new(grants: impl IntoIterator<Item = Grant>) -> Option<Self> {
        let bits = grants.into_iter().fold(0, |acc, g| acc | g.bit());
        (bits != 0).then_some(Grants(bits))
    }

    /// Whether `grant` is in the set.
    pub fn contains(self, grant: Grant) -> bool {
        self.0 & grant.bit() != 0
    }

    /// The grants in the set, in wire order.
    pub fn iter(self) -> impl Iterator<Item = Grant> {
        Grant::ALL.into_iter().filter(move |g| self.contains(*g))
    }

    /// Whether some grant acts on one room.
    pub fn need_room(self) -> bool {
        self.iter().any(Grant::needs_room)
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(g.as_str())?;
        }
        Ok(())
    }
}

impl Serialize for Grants {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Grants {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GrantsVisitor;
        impl<'de> Visitor<'de> for GrantsVisitor {
            type Value = Grants;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-empty array of grant names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Grants, A::Error> {
                let mut bits = 0u8;
                // Unknown names fail here (serde's "unknown variant" error).
                while let Some(g) = seq.next_element::<Grant>()? {
                    bits |= g.bit();
                }
                if bits == 0 {
                    return Err(de::Error::custom("`grants` is empty"));
                }
                Ok(Grants(bits))
            }
        }
        d.deserialize_seq(GrantsVisitor)
    }
}

/// The claims of a verified token. Built by
/// [`KeyRing::verify`](super::KeyRing::verify) (which also checks the times
/// and [`Claims::check`]) or [`KeyRing::mint`](super::KeyRing::mint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for.
    pub sub: Subject,
    /// The room it acts on; required by the `host`, `join` and `watch`
    /// grants, optional with `operator` alone (fleet-wide when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    /// What it allows.
    pub grants: Grants,
    /// Issued at (seconds since the Unix epoch).
    pub iat: u64,
    /// Not valid before.
    pub nbf: u64,
    /// Not valid from this second on.
    pub exp: u64,
    /// The token's id, for revocation.
    pub jti: TokenId,
}

impl Claims {
    /// The checks that need no clock: a `room` where the grants need one,
    /// `exp` after both `iat` and `nbf`, and a lifetime (`exp - iat`) of at
    /// most `max_lifetime` seconds.
    pub fn check(&self, max_lifetime: u64) -> Result<(), AuthError> {
        if self.grants.need_room() && self.room.is_none() {
            return Err(AuthError::InvalidClaims(format!(
                "the {} grant needs a `room`",
                self.grants
            )));
        }
        if self.exp <= self.iat {
            return Err(AuthError::InvalidClaims("`exp` is not after `iat`".into()));
        }
        if self.exp <= self.nbf {
            return Err(AuthError::InvalidClaims("`exp` is not after `nbf`".into()));
        }
        if self.exp - self.iat > max_lifetime {
            return Err(AuthError::InvalidClaims(format!(
                "the token lives longer than this server allows ({})",
                humantime::format_duration(std::time::Duration::from_secs(max_lifetime))
            )));
        }
        Ok(())
    }

    /// Seconds left at `now` (0 once expired): when a live session must end.
    pub fn remaining(&self, now: u64) -> u64 {
        self.exp.saturating_sub(now)
    }
}

/// What a peer asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Open or resume a room as its host: needs the `host` grant.
    Host,
    /// Join a room as a full peer: needs `join`.
    Join,
    /// Watch a room: needs `watch`.
    Watch,
    /// Fleet operations (list rooms and peers, mint watch links): needs
    /// `operator`.
    Operate,
}

impl Action {
    /// The grant the action needs.
    pub fn grant(self) -> Grant {
        match self {
            Action::Host => Grant::Host,
            Action::Join => Grant::Join,
            Action::Watch => Grant::Watch,
            Action::Operate => Grant::Operator,
        }
    }
}

/// Whether `claims` (already verified) allow `action` on `room`.
///
/// - `Host`, `Join`, `Watch` need the matching grant and `room` equal to the
///   token's `room` (`None` is always refused: these act on a room).
/// - `Operate` needs `operator`; with `room: None` (the whole fleet) the
///   token must be fleet-wide (no `room` claim); with `Some(room)` the token
///   must be fleet-wide or for that room.
///
/// Refusals are [`AuthError::Forbidden`] (`forbidden`, HTTP 403). Revocation
/// is a separate check ([`RevocationList::is_revoked`](super::RevocationList::is_revoked)).
pub fn authorize(
    claims: &Claims,
    action: Action,
    room: Option<&RoomName>,
) -> Result<(), AuthError> {
    let grant = action.grant();
    if !claims.grants.contains(grant) {
        return Err(AuthError::Forbidden(format!(
            "it grants {} but not {grant}",
            claims.grants
        )));
    }
    match (action, room, claims.room.as_ref()) {
        (Action::Operate, None, None) => Ok(()),
        (Action::Operate, None, Some(_)) => Err(AuthError::Forbidden(
            "it is for one room, not the whole fleet".into(),
        )),
        (Action::Operate, Some(_), None) => Ok(()),
        (_, None, _) => Err(AuthError::Forbidden(format!("{grant} needs a room"))),
        (_, Some(wanted), Some(own)) if wanted == own => Ok(()),
        (_, Some(_), _) => Err(AuthError::Forbidden("it is for another room".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(grants: &[Grant], room: Option<&str>) -> Claims {
        Claims {
            sub: Subject::new("alice").unwrap(),
            room: room.map(|r| RoomName::new(r).unwrap()),
            grants: Grants::new(grants.iter().copied()).unwrap(),
            iat: 1000,
            nbf: 1000,
            exp: 2000,
            jti: TokenId::new("t1").unwrap(),
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn refused(r: Result<(), AuthError>) -> bool {
        matches!(r, Err(ref e) if e.code() == "forbidden" && e.http_status() == 403)
    }

    #[test]
    fn a_watch_token_watches_its_room_and_cannot_host_or_join() {
        let c = claims(&[Grant::Watch], Some("robot-7"));
        let r = room("robot-7");
        assert_eq!(authorize(&c, Action::Watch, Some(&r)), Ok(()));
        assert!(refused(authorize(&c, Action::Host, Some(&r))));
        assert!(refused(authorize(&c, Action::Join, Some(&r))));
        assert!(refused(authorize(&c, Action::Operate, Some(&r))));
        assert!(refused(authorize(&c, Action::Operate, None)));
    }

    #[test]
    fn a_join_token_joins_its_room_and_cannot_host_or_watch() {
        let c = claims(&[Grant::Join], Some("robot-7"));
        let r = room("robot-7");
        assert_eq!(authorize(&c, Action::Join, Some(&r)), Ok(()));
        assert!(refused(authorize(&c, Action::Host, Some(&r))));
        assert!(refused(authorize(&c, Action::Watch, Some(&r))));
        assert!(refused(authorize(&c, Action::Operate, None)));
    }

    #[test]
    fn a_host_token_hosts_only_its_own_room() {
        let c = claims(&[Grant::Host], Some("robot-7"));
        assert_eq!(authorize(&c, Action::Host, Some(&room("robot-7"))), Ok(()));
        assert!(refused(authorize(&c, Action::Host, Some(&room("robot-8")))));
        assert!(refused(authorize(&c, Action::Host, Some(&room("Robot-7")))));
        assert!(refused(authorize(&c, Action::Join, Some(&room("robot-8")))));
        assert!(refused(authorize(
            &c,
            Action::Watch,
            Some(&room("robot-7"))
        )));
        assert!(refused(authorize(&c, Action::Host, None)));
    }

    #[test]
    fn grants_combine_but_never_reach_another_room() {
        let c = claims(&[Grant::Join, Grant::Watch], Some("robot-7"));
        let r = room("robot-7");
        assert_eq!(authorize(&c, Action::Join, Some(&r)), Ok(()));
        assert_eq!(authorize(&c, Action::Watch, Some(&r)), Ok(()));
        assert!(refused(authorize(&c, Action::Host, Some(&r))));
        assert!(refused(authorize(
            &c,
            Action::Watch,
            Some(&room("robot-8"))
        )));
    }

    #[test]
    fn a_fleet_operator_token_operates_on_every_room_but_joins_none() {
        let c = claims(&[Grant::Operator], None);
        assert_eq!(authorize(&c, Action::Operate, None), Ok(()));
        assert_eq!(
            authorize(&c, Action::Operate, Some(&room("robot-7"))),
            Ok(())
        );
        assert!(refused(authorize(
            &c,
            Action::Watch,
            Some(&room("robot-7"))
        )));
        assert!(refused(authorize(&c, Action::Host, Some(&room("robot-7")))));
    }

    #[test]
    fn a_room_operator_token_operates_on_its_room_only() {
        let c = claims(&[Grant::Operator], Some("robot-7"));
        assert_eq!(
            authorize(&c, Action::Operate, Some(&room("robot-7"))),
            Ok(())
        );
        assert!(refused(authorize(
            &c,
            Action::Operate,
            Some(&room("robot-8"))
        )));
        assert!(refused(authorize(&c, Action::Operate, None)));
    }

    #[test]
    fn room_grants_without_a_room_fail_the_claims_check() {
        let mut c = claims(&[Grant::Watch], None);
        assert!(matches!(c.check(10_000), Err(AuthError::InvalidClaims(_))));
        c.grants = Grants::new([Grant::Operator]).unwrap();
        assert_eq!(c.check(10_000), Ok(()));
    }

    #[test]
    fn the_claims_check_wants_exp_after_iat_and_nbf_and_a_bounded_lifetime() {
        let mut c = claims(&[Grant::Watch], Some("r"));
        assert_eq!(c.check(1000), Ok(()));
        assert!(c.check(999).is_err(), "exp - iat = 1000 > 999");
        c.exp = 1000;
        assert!(c.check(10_000).is_err(), "exp == iat");
        c.exp = 2000;
        c.nbf = 2000;
        assert!(c.check(10_000).is_err(), "exp == nbf");
    }

    #[test]
    fn grants_travel_as_an_array_of_names() {
        let g = Grants::new([Grant::Watch, Grant::Host]).unwrap();
        assert_eq!(serde_json::to_string(&g).unwrap(), r#"["host","watch"]"#);
        let back: Grants = serde_json::from_str(r#"["watch","host","watch"]"#).unwrap();
        assert_eq!(back, g);
        assert!(serde_json::from_str::<Grants>("[]").is_err());
        assert!(serde_json::from_str::<Grants>(r#""watch""#).is_err());
        let e = serde_json::from_str::<Grants>(r#"["watch","admin"]"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `admin`"), "{e}");
        assert!(Grants::new([]).is_none());
    }
}
