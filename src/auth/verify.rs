//! Checking a token ([`KeyRing::verify`]) and making one ([`KeyRing::mint`]).
//!
//! The order of the checks matters, cheapest and most hostile first:
//!
//! 1. length (at most [`MAX_TOKEN_LEN`] bytes), before any parsing;
//! 2. shape: three base64url parts separated by dots (compact JWS only);
//! 3. header: readable, `alg` HS256 or EdDSA (never `none`, RS*, ES*, HS384...),
//!    `typ` absent or `JWT`, no `crit` (no extension is understood);
//! 4. key: the one named by `kid`, or the bare key when there is no `kid`;
//!    the header's `alg` must be that key's (no HS256 token checked against
//!    an Ed25519 key's bytes, no EdDSA token against a secret);
//! 5. signature (by `jsonwebtoken`, with the primitives of `provider.rs`);
//! 6. claims: all present and typed ([`Claims`]), a known grant set, a room
//!    where needed, `exp` after `iat` and `nbf`, lifetime within the ring's
//!    maximum; no `aud`;
//! 7. time, against `now` in whole seconds: `exp` with **no leeway** (valid
//!    while `now < exp`, so a token expired by one second is refused), and
//!    `nbf`/`iat` with [`NOT_BEFORE_LEEWAY_SECS`] of allowance for a minter
//!    whose clock runs ahead of the server's (starting a few seconds early
//!    grants nothing the issuer did not mean; ending late would).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};

use super::claims::{Claims, Grants};
use super::keys::KeyRing;
use super::names::{KeyId, RoomName, Subject, TokenId};
use super::{provider, AuthError};

/// Longest token accepted, in bytes, checked before parsing. Ours are about
/// 300 bytes; 4 KiB leaves room for other issuers' extra claims.
pub const MAX_TOKEN_LEN: usize = 4096;

/// How far in the future `nbf` and `iat` may be, in seconds (clock skew
/// between the machine that minted a token and this server). `exp` gets none.
pub const NOT_BEFORE_LEEWAY_SECS: u64 = 30;

/// Longest claims message echoed back to a client.
const MAX_DETAIL_LEN: usize = 200;

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `alg` of a header `jsonwebtoken` could not read (`none`, `HS999`),
/// for the message; `None` when there is no such string.
fn raw_alg(header_b64: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(header_b64).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let alg = value.get("alg")?.as_str()?;
    let shown = alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_alphanumeric());
    Some(if shown {
        alg.to_string()
    } else {
        "(unrecognised)".to_string()
    })
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_DETAIL_LEN {
        let mut end = MAX_DETAIL_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// What to mint: [`KeyRing::mint`] adds `iat`, `nbf`, `exp` and a random
/// `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Who it is for.
    pub sub: Subject,
    /// The room (needed by `host`, `join`, `watch`).
    pub room: Option<RoomName>,
    /// What it allows.
    pub grants: Grants,
    /// How long it is valid, from now (whole seconds, at least 1).
    pub ttl: Duration,
}

/// A minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The JWT.
    pub token: String,
    /// What it says.
    pub claims: Claims,
    /// The id of the key that signed it (`None`: the bare key).
    pub kid: Option<KeyId>,
    /// `HS256` or `EdDSA`.
    pub alg: &'static str,
}

/// Why a token could not be minted (the operator's mistake, not a peer's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintError {
    /// No configured key can sign.
    NoSigningKey,
    /// The claims fail [`Claims::check`] (no room, lifetime over the maximum).
    Invalid(String),
    /// The encoder failed (should not happen with a valid key).
    Encode(String),
}

impl std::fmt::Display for MintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MintError::NoSigningKey => f.write_str(
                "no key can sign: give a secret (--auth-secret, SIGNAL_SERVER_AUTH_SECRET, \
                 --auth-secret-file) or an Ed25519 private key (--auth-private-key)",
            ),
            MintError::Invalid(what) => f.write_str(what),
            MintError::Encode(what) => write!(f, "cannot sign the token: {what}"),
        }
    }
}

impl std::error::Error for MintError {}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        _ => "HS256",
    }
}

impl KeyRing {
    /// Checks `token` now; see the module documentation for every check.
    /// Revocation is separate: [`RevocationList::is_revoked`](super::RevocationList::is_revoked).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// [`KeyRing::verify`] at `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong { len: token.len() });
        }
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three parts separated by dots",
            ));
        };
        if header_b64.is_empty()
            || payload_b64.is_empty()
            || ![header_b64, payload_b64, signature_b64]
                .into_iter()
                .all(is_b64url)
        {
            return Err(AuthError::Malformed(
                "its parts must be non-empty base64url",
            ));
        }

        provider::install();
        let header: Header =
            jsonwebtoken::decode_header(token).map_err(|_| match raw_alg(header_b64) {
                Some(alg) if alg != "HS256" && alg != "EdDSA" => {
                    AuthError::AlgorithmNotAllowed(alg)
                }
                _ => AuthError::Malformed("unreadable header"),
            })?;
        if !matches!(header.alg, Algorithm::HS256 | Algorithm::EdDSA) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed("the header has `crit` extensions"));
        }
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        {
            return Err(AuthError::Malformed("the header's `typ` is not JWT"));
        }
        if signature_b64.is_empty() {
            return Err(AuthError::Unsigned);
        }

        let key = self
            .find(header.kid.as_deref())
            .ok_or(AuthError::UnknownKey)?;
        if header.alg != key.alg {
            return Err(AuthError::AlgorithmNotAllowed(format!(
                "{:?} for a {:?} key",
                header.alg, key.alg
            )));
        }

        let mut validation = Validation::new(key.alg);
        // The time claims are checked below, typed and against `now`; the
        // crate would read the system clock and allow 60 s on `exp`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        // `validate_aud` stays on with no audience: a token with `aud` fails.
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::InvalidAlgorithmName => {
                    AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg))
                }
                ErrorKind::InvalidKeyFormat | ErrorKind::InvalidEddsaKey => {
                    AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg))
                }
                // Only reachable once the signature is good: the signer's claims.
                ErrorKind::Json(err) => AuthError::InvalidClaims(truncate(err.to_string())),
                ErrorKind::InvalidAudience => AuthError::InvalidClaims(
                    "`aud` is not accepted (this server has no audience)".into(),
                ),
                ErrorKind::Base64(_) => AuthError::Malformed("a part is not valid base64url"),
                ErrorKind::Utf8(_) => AuthError::Malformed("a part is not UTF-8"),
                _ => AuthError::Malformed("unreadable token"),
            },
        )?;
        let claims = data.claims;
        claims.check(self.max_lifetime)?;
        if now >= claims.exp {
            return Err(AuthError::Expired);
        }
        if claims.nbf > now.saturating_add(NOT_BEFORE_LEEWAY_SECS)
            || claims.iat > now.saturating_add(NOT_BEFORE_LEEWAY_SECS)
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(claims)
    }

    /// Mints a token for `request` now.
    pub fn mint(&self, request: &TokenRequest) -> Result<Minted, MintError> {
        self.mint_at(request, unix_now())
    }

    /// [`KeyRing::mint`] at `now`: `iat = nbf = now`, `exp = now + ttl`, and a
    /// random 96-bit `jti`. Refuses what [`KeyRing::verify`] would refuse.
    pub fn mint_at(&self, request: &TokenRequest, now: u64) -> Result<Minted, MintError> {
        let ttl = request.ttl.as_secs();
        if ttl == 0 {
            return Err(MintError::Invalid(
                "the lifetime must be at least 1s".into(),
            ));
        }
        let claims = Claims {
            sub: request.sub.clone(),
            room: request.room.clone(),
            grants: request.grants,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: TokenId::new(crate::token::new_token().into_string())
                .map_err(|e| MintError::Encode(e.to_string()))?,
        };
        claims.check(self.max_lifetime).map_err(|e| match e {
            AuthError::InvalidClaims(what) => MintError::Invalid(what),
            other => MintError::Invalid(other.to_string()),
        })?;
        self.sign(claims)
    }

    /// Signs exactly `claims` with the signing key, unchecked (tests and
    /// tools that need odd tokens: expired, not yet valid). Prefer
    /// [`KeyRing::mint`].
    pub fn sign(&self, claims: Claims) -> Result<Minted, MintError> {
        let key = self
            .signing
            .map(|i| &self.keys[i])
            .ok_or(MintError::NoSigningKey)?;
        let encoding = key.encoding.as_ref().ok_or(MintError::NoSigningKey)?;
        let mut header = Header::new(key.alg);
        header.kid = key.kid.as_ref().map(|k| k.as_str().to_string());
        provider::install();
        let token = jsonwebtoken::encode(&header, &claims, encoding)
            .map_err(|e| MintError::Encode(e.to_string()))?;
        Ok(Minted {
            token,
            claims,
            kid: key.kid.clone(),
            alg: alg_name(key.alg),
        })
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
