//! Who is calling: the admin key, or a token with the `operator` grant.
//!
//! A credential comes as `Authorization: Bearer CREDENTIAL`, or, for what a
//! browser opens without headers (the `/fleet` page itself and its
//! `EventSource`), as `?access_token=CREDENTIAL` (RFC 6750 §2.3). The admin
//! key is compared in constant time; anything else is checked as a JWT with
//! the `operator` grant (token mode only), revocation included.

use axum::http::{header, HeaderMap};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::key::AdminKey;
use crate::auth::{authorize, Action, Claims, RoomName};

/// `?access_token=` (and nothing else is read from the query here).
#[derive(Debug, Default, Deserialize)]
pub struct AccessQuery {
    /// The credential, for clients that cannot send a header.
    pub access_token: Option<String>,
}

impl AccessQuery {
    /// The first `access_token` of a raw query string (others ignored;
    /// never a refusal: a query the API cannot read has no credential).
    pub fn from_raw(query: Option<&str>) -> AccessQuery {
        AccessQuery {
            access_token: query.and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "access_token")
                    .map(|(_, v)| v.into_owned())
            }),
        }
    }
}

/// A caller whose credential checked out.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The admin key: everything.
    Admin,
    /// A valid, unrevoked token with the `operator` grant: reading the
    /// fleet (all of it, or its one room) and minting watch links for it.
    Operator(Box<Claims>),
}

/// Checks an operator token (the auth state's key ring and revocation
/// list); `None` when the server is not in token mode.
pub type OperatorCheck<'a> = Option<&'a dyn Fn(&str) -> ApiResult<Claims>>;

/// The credential the request carries, if any: the header wins over the
/// query.
pub fn credential<'a>(
    headers: &'a HeaderMap,
    query: &'a AccessQuery,
) -> ApiResult<Option<&'a str>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized(
                "use `Authorization: Bearer KEY` (the admin key or an operator token)",
            ));
        }
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(ApiError::unauthorized("the bearer credential is empty"));
        }
        return Ok(Some(rest));
    }
    Ok(query.access_token.as_deref().filter(|t| !t.is_empty()))
}

/// The caller: the admin key, or an operator token checked by `operator`.
pub fn caller(
    key: &AdminKey,
    credential: Option<&str>,
    operator: OperatorCheck<'_>,
) -> ApiResult<Caller> {
    let Some(credential) = credential else {
        return Err(ApiError::unauthorized(
            "this needs the admin key or an operator token: `Authorization: Bearer KEY`",
        ));
    };
    if key.matches(credential.as_bytes()) {
        return Ok(Caller::Admin);
    }
    let looks_like_jwt = credential.bytes().filter(|b| *b == b'.').count() == 2;
    match operator {
        Some(check) if looks_like_jwt => check(credential).map(|c| Caller::Operator(Box::new(c))),
        _ => Err(ApiError::unauthorized("wrong admin key")),
    }
}

impl Caller {
    /// Only the admin key may do this (kick, close, revoke).
    pub fn admin_only(&self) -> ApiResult<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Operator(_) => Err(ApiError::forbidden(
                "only the admin key may do this; an operator token reads the fleet and mints watch links",
            )),
        }
    }

    /// Whether the caller may see (and mint watch links for) room `room`.
    pub fn may_operate(&self, room: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Operator(claims) => RoomName::new(room)
                .is_ok_and(|r| authorize(claims, Action::Operate, Some(&r)).is_ok()),
        }
    }

    /// [`Caller::may_operate`], as an error (404, not 403: a room-scoped
    /// operator learns nothing of other rooms).
    pub fn operate(&self, room: &str) -> ApiResult<()> {
        if self.may_operate(room) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no room `{room}`")))
        }
    }

    /// Who minted links are attributed to (`sub` of watch links by default).
    pub fn subject(&self) -> &str {
        match self {
            Caller::Admin => "admin",
            Caller::Operator(claims) => claims.sub.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key() -> AdminKey {
        AdminKey::new("0123456789abcdef-admin").unwrap()
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn the_bearer_header_wins_over_the_query() {
        let q = AccessQuery {
            access_token: Some("from-query".into()),
        };
        let h = headers("Bearer from-header");
        assert_eq!(credential(&h, &q).unwrap(), Some("from-header"));
        assert_eq!(
            credential(&HeaderMap::new(), &q).unwrap(),
            Some("from-query")
        );
        assert!(credential(&headers("Basic abc"), &q).is_err());
        assert!(credential(&headers("Bearer "), &q).is_err());
    }

    #[test]
    fn only_the_key_makes_an_admin() {
        let k = key();
        assert!(matches!(
            caller(&k, Some("0123456789abcdef-admin"), None),
            Ok(Caller::Admin)
        ));
        let e = caller(&k, Some("nope"), None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, "unauthorized"));
        assert_eq!(caller(&k, None, None).unwrap_err().status.as_u16(), 401);
        // Without token mode a JWT is just a wrong key.
        assert_eq!(
            caller(&k, Some("a.b.c"), None).unwrap_err().status.as_u16(),
            401
        );
    }
}
