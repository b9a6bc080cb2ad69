//! The tests of `verify.rs`: every hostile token of issue 13, and the good ones.

use super::*;
use crate::auth::claims::Grant;
use crate::auth::keys::test_keys;

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const SECRET: &[u8] = b"an example secret of 32 bytes!!!";
const OTHER: &[u8] = b"another secret, 32 bytes long!!!";

fn kid(s: &str) -> Option<KeyId> {
    Some(KeyId::new(s).unwrap())
}

fn claims(grants: &[Grant], room: &str) -> Claims {
    Claims {
        sub: Subject::new("alice").unwrap(),
        room: Some(RoomName::new(room).unwrap()),
        grants: Grants::new(grants.iter().copied()).unwrap(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        jti: TokenId::new("jti-1").unwrap(),
    }
}

fn watch() -> Claims {
    claims(&[Grant::Watch], "robot-7")
}

fn ring() -> KeyRing {
    KeyRing::from_secret(SECRET).unwrap()
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// A compact JWT with this header and payload JSON, HMAC-signed with
/// `secret` by hand (not through `jsonwebtoken`).
fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn payload(c: &Claims) -> String {
    serde_json::to_string(c).unwrap()
}

const HS: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[test]
fn a_minted_token_verifies_and_says_what_was_asked() {
    let ring = ring();
    let req = TokenRequest {
        sub: Subject::new("alice").unwrap(),
        room: Some(RoomName::new("robot-7").unwrap()),
        grants: Grants::new([Grant::Watch]).unwrap(),
        ttl: Duration::from_secs(7200),
    };
    let minted = ring.mint_at(&req, NOW).unwrap();
    assert_eq!(minted.alg, "HS256");
    assert_eq!(minted.kid, None);
    let c = ring.verify_at(&minted.token, NOW + 10).unwrap();
    assert_eq!(c, minted.claims);
    assert_eq!((c.iat, c.nbf, c.exp), (NOW, NOW, NOW + 7200));
    assert_eq!(c.sub.as_str(), "alice");
    assert_eq!(c.jti.as_str().len(), crate::token::TOKEN_LEN);
    let again = ring.mint_at(&req, NOW).unwrap();
    assert_ne!(again.claims.jti, c.jti, "every token has its own jti");
}

#[test]
fn a_hand_made_hs256_token_verifies() {
    let t = forge(HS, &payload(&watch()), SECRET);
    assert_eq!(ring().verify_at(&t, NOW).unwrap(), watch());
}

#[test]
fn an_unsigned_token_is_refused() {
    let t = format!("{}.{}.", b64(HS), b64(&payload(&watch())));
    assert_eq!(ring().verify_at(&t, NOW), Err(AuthError::Unsigned));
}

#[test]
fn alg_none_is_refused_with_or_without_a_signature() {
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let unsigned = format!("{}.{}.", b64(header), b64(&payload(&watch())));
        let e = ring().verify_at(&unsigned, NOW).unwrap_err();
        assert!(
            matches!(e, AuthError::AlgorithmNotAllowed(ref a) if a.eq_ignore_ascii_case("none")),
            "{e:?}"
        );
        let signed = forge(header, &payload(&watch()), SECRET);
        assert!(matches!(
            ring().verify_at(&signed, NOW),
            Err(AuthError::AlgorithmNotAllowed(_))
        ));
        assert_eq!(e.code(), "unauthorized");
    }
}

#[test]
fn other_algorithms_are_refused_even_when_correctly_signed_with_hmac() {
    for alg in ["HS384", "HS512", "RS256", "ES256", "PS256", "HS999"] {
        let t = forge(&format!(r#"{{"alg":"{alg}"}}"#), &payload(&watch()), SECRET);
        let e = ring().verify_at(&t, NOW).unwrap_err();
        assert!(
            matches!(e, AuthError::AlgorithmNotAllowed(_)),
            "{alg}: {e:?}"
        );
    }
}

#[test]
fn an_hs256_token_signed_with_the_public_key_of_an_ed25519_key_is_refused() {
    // The classic confusion: the attacker knows the public key and uses
    // its bytes as an HMAC secret, hoping the server does the same.
    let (_, public) = test_keys::ed25519();
    let mut b = KeyRing::builder();
    b.add_ed25519_public_pem(kid("ed"), &public).unwrap();
    let ring = b.build().unwrap();
    let raw = match ring.keys[0].decoding.kind() {
        jsonwebtoken::DecodingKeyKind::SecretOrDer(raw) => raw.clone(),
        _ => unreachable!(),
    };
    for secret in [raw.as_slice(), public.as_slice()] {
        let t = forge(r#"{"alg":"HS256","kid":"ed"}"#, &payload(&watch()), secret);
        let e = ring.verify_at(&t, NOW).unwrap_err();
        assert!(matches!(e, AuthError::AlgorithmNotAllowed(_)), "{e:?}");
    }
}

#[test]
fn an_eddsa_token_for_a_secret_key_is_refused() {
    let (private, _) = test_keys::ed25519();
    let mut b = KeyRing::builder();
    b.add_ed25519_private_pem(kid("k"), &private).unwrap();
    let ed = b.build().unwrap();
    let minted = ed.sign(watch()).unwrap();
    let mut b = KeyRing::builder();
    b.add_secret(kid("k"), SECRET).unwrap();
    let hs = b.build().unwrap();
    assert!(matches!(
        hs.verify_at(&minted.token, NOW),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[test]
fn eddsa_tokens_verify_with_the_public_key_alone() {
    let (private, public) = test_keys::ed25519();
    let mut b = KeyRing::builder();
    b.add_ed25519_private_pem(kid("ed1"), &private).unwrap();
    let signer = b.build().unwrap();
    let minted = signer.sign(watch()).unwrap();
    assert_eq!(minted.alg, "EdDSA");
    let mut b = KeyRing::builder();
    b.add_ed25519_public_pem(kid("ed1"), &public).unwrap();
    let verifier = b.build().unwrap();
    assert_eq!(verifier.verify_at(&minted.token, NOW).unwrap(), watch());
    assert_eq!(signer.verify_at(&minted.token, NOW).unwrap(), watch());
    assert!(matches!(
        verifier.sign(watch()),
        Err(MintError::NoSigningKey)
    ));
}

#[test]
fn a_tampered_payload_is_refused() {
    let t = ring().sign(watch()).unwrap().token;
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    let mut hosted = watch();
    hosted.grants = Grants::new([Grant::Host]).unwrap();
    parts[1] = b64(&payload(&hosted));
    let tampered = parts.join(".");
    assert_eq!(
        ring().verify_at(&tampered, NOW),
        Err(AuthError::BadSignature)
    );
    // One flipped character of the signature too.
    let mut sig: Vec<u8> = t.rsplit('.').next().unwrap().bytes().collect();
    sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
    let flipped = format!(
        "{}.{}",
        t.rsplit_once('.').unwrap().0,
        String::from_utf8(sig).unwrap()
    );
    assert_eq!(
        ring().verify_at(&flipped, NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let t = forge(HS, &payload(&watch()), OTHER);
    assert_eq!(ring().verify_at(&t, NOW), Err(AuthError::BadSignature));
}

#[test]
fn a_token_naming_an_unknown_key_id_is_refused() {
    let mut b = KeyRing::builder();
    b.add_secret(kid("k1"), SECRET).unwrap();
    b.add_secret(None, OTHER).unwrap();
    let ring = b.build().unwrap();
    let t = forge(r#"{"alg":"HS256","kid":"k2"}"#, &payload(&watch()), SECRET);
    assert_eq!(ring.verify_at(&t, NOW), Err(AuthError::UnknownKey));
    // A bad kid is not tried against the bare key either.
    let t = forge(r#"{"alg":"HS256","kid":"k2"}"#, &payload(&watch()), OTHER);
    assert_eq!(ring.verify_at(&t, NOW), Err(AuthError::UnknownKey));
}

#[test]
fn a_token_without_key_id_is_tried_only_against_the_bare_key() {
    let mut b = KeyRing::builder();
    b.add_secret(kid("k1"), SECRET).unwrap();
    let only_named = b.build().unwrap();
    let t = forge(HS, &payload(&watch()), SECRET);
    assert_eq!(only_named.verify_at(&t, NOW), Err(AuthError::UnknownKey));

    let mut b = KeyRing::builder();
    b.add_secret(kid("k1"), SECRET).unwrap();
    b.add_secret(None, OTHER).unwrap();
    let both = b.build().unwrap();
    assert_eq!(both.verify_at(&t, NOW), Err(AuthError::BadSignature));
    let t = forge(HS, &payload(&watch()), OTHER);
    assert_eq!(both.verify_at(&t, NOW).unwrap(), watch());
}

#[test]
fn rotation_keeps_old_tokens_valid_until_their_key_is_removed() {
    let mut b = KeyRing::builder();
    b.add_secret(kid("old"), SECRET).unwrap();
    let before = b.build().unwrap();
    let old_token = before.sign(watch()).unwrap().token;

    let mut b = KeyRing::builder();
    b.add_secret(kid("new"), OTHER).unwrap();
    b.add_secret(kid("old"), SECRET).unwrap();
    let during = b.build().unwrap();
    let new = during.sign(watch()).unwrap();
    assert_eq!(new.kid.as_ref().map(KeyId::as_str), Some("new"));
    assert!(during.verify_at(&old_token, NOW).is_ok());
    assert!(during.verify_at(&new.token, NOW).is_ok());

    let mut b = KeyRing::builder();
    b.add_secret(kid("new"), OTHER).unwrap();
    let after = b.build().unwrap();
    assert_eq!(after.verify_at(&old_token, NOW), Err(AuthError::UnknownKey));
    assert!(after.verify_at(&new.token, NOW).is_ok());
}

#[test]
fn an_over_long_token_is_refused_before_parsing() {
    let mut c = watch();
    c.sub = Subject::new("s".repeat(128)).unwrap();
    let fits = ring().sign(c).unwrap().token;
    assert!(fits.len() < MAX_TOKEN_LEN);
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        ring().verify_at(&long, NOW),
        Err(AuthError::TooLong {
            len: MAX_TOKEN_LEN + 1
        })
    );
    // A genuine, correctly signed token padded with an ignored claim.
    let padded = format!(
        r#"{{"sub":"alice","room":"robot-7","grants":["watch"],"iat":{NOW},"nbf":{NOW},"exp":{},"jti":"j","x":"{}"}}"#,
        NOW + 60,
        "x".repeat(MAX_TOKEN_LEN)
    );
    let t = forge(HS, &padded, SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::TooLong { .. })
    ));
}

#[test]
fn a_token_expired_by_one_second_is_refused() {
    let t = ring().sign(watch()).unwrap().token;
    let exp = watch().exp;
    assert!(
        ring().verify_at(&t, exp - 1).is_ok(),
        "valid in its last second"
    );
    let e = ring().verify_at(&t, exp).unwrap_err();
    assert_eq!(e, AuthError::Expired);
    assert_eq!(e.code(), "token_expired");
    assert_eq!(ring().verify_at(&t, exp + 1), Err(AuthError::Expired));
}

#[test]
fn a_token_expired_by_one_second_is_refused_on_the_real_clock() {
    let now = unix_now();
    let mut c = watch();
    c.iat = now - 60;
    c.nbf = now - 60;
    c.exp = now - 1;
    let t = ring().sign(c).unwrap().token;
    assert_eq!(ring().verify(&t), Err(AuthError::Expired));
}

#[test]
fn a_token_whose_nbf_is_in_the_future_is_refused() {
    let mut c = watch();
    c.nbf = NOW + 120;
    let t = ring().sign(c).unwrap().token;
    assert_eq!(ring().verify_at(&t, NOW), Err(AuthError::NotYetValid));
    assert_eq!(
        ring().verify_at(&t, NOW + 120 - NOT_BEFORE_LEEWAY_SECS - 1),
        Err(AuthError::NotYetValid)
    );
    assert!(
        ring()
            .verify_at(&t, NOW + 120 - NOT_BEFORE_LEEWAY_SECS)
            .is_ok(),
        "clock skew allowance"
    );
    assert!(ring().verify_at(&t, NOW + 120).is_ok());
}

#[test]
fn a_token_issued_in_the_future_is_refused() {
    let mut c = watch();
    c.iat = NOW + 600;
    c.exp = NOW + 1200;
    let t = ring().sign(c).unwrap().token;
    assert_eq!(ring().verify_at(&t, NOW), Err(AuthError::NotYetValid));
}

#[test]
fn a_token_missing_any_required_claim_is_refused() {
    let full: serde_json::Value = serde_json::to_value(watch()).unwrap();
    for claim in ["sub", "grants", "iat", "nbf", "exp", "jti"] {
        let mut p = full.clone();
        p.as_object_mut().unwrap().remove(claim);
        let t = forge(HS, &p.to_string(), SECRET);
        let e = ring().verify_at(&t, NOW).unwrap_err();
        assert!(
            matches!(e, AuthError::InvalidClaims(ref m) if m.contains(claim)),
            "{claim}: {e:?}"
        );
    }
    let mut p = full.clone();
    p.as_object_mut().unwrap().remove("room");
    let t = forge(HS, &p.to_string(), SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn mistyped_time_claims_are_refused_not_skipped() {
    // jsonwebtoken < 10.3 skipped `nbf`/`exp` checks when the claim was a
    // string; here the typed claims refuse it outright.
    let mut p: serde_json::Value = serde_json::to_value(watch()).unwrap();
    p["nbf"] = serde_json::json!("99999999999");
    let t = forge(HS, &p.to_string(), SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
    let mut p: serde_json::Value = serde_json::to_value(watch()).unwrap();
    p["exp"] = serde_json::json!(1.0e12);
    let t = forge(HS, &p.to_string(), SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
    p["exp"] = serde_json::json!(-1);
    let t = forge(HS, &p.to_string(), SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn unknown_grant_names_are_refused() {
    let mut p: serde_json::Value = serde_json::to_value(watch()).unwrap();
    p["grants"] = serde_json::json!(["watch", "admin"]);
    let t = forge(HS, &p.to_string(), SECRET);
    let e = ring().verify_at(&t, NOW).unwrap_err();
    assert!(
        matches!(e, AuthError::InvalidClaims(ref m) if m.contains("admin")),
        "{e:?}"
    );
    p["grants"] = serde_json::json!([]);
    let t = forge(HS, &p.to_string(), SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn a_bad_room_name_in_a_signed_token_is_refused() {
    let mut p: serde_json::Value = serde_json::to_value(watch()).unwrap();
    p["room"] = serde_json::json!("robot 7/../x");
    let t = forge(HS, &p.to_string(), SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn a_token_with_an_audience_is_refused() {
    let mut p: serde_json::Value = serde_json::to_value(watch()).unwrap();
    p["aud"] = serde_json::json!("some-other-service");
    let t = forge(HS, &p.to_string(), SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn unknown_claims_from_other_issuers_are_ignored() {
    let mut p: serde_json::Value = serde_json::to_value(watch()).unwrap();
    p["iss"] = serde_json::json!("fleet-console");
    p["name"] = serde_json::json!("Alice");
    let t = forge(HS, &p.to_string(), SECRET);
    assert_eq!(ring().verify_at(&t, NOW).unwrap(), watch());
}

#[test]
fn a_token_living_longer_than_the_maximum_is_refused() {
    let mut b = KeyRing::builder();
    b.add_secret(None, SECRET).unwrap();
    b.max_lifetime(Duration::from_secs(3599));
    let strict = b.build().unwrap();
    let t = strict.sign(watch()).unwrap().token;
    assert!(matches!(
        strict.verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
    let req = TokenRequest {
        sub: Subject::new("a").unwrap(),
        room: Some(RoomName::new("r").unwrap()),
        grants: Grants::new([Grant::Watch]).unwrap(),
        ttl: Duration::from_secs(3600),
    };
    assert!(matches!(
        strict.mint_at(&req, NOW),
        Err(MintError::Invalid(_))
    ));
}

#[test]
fn garbage_is_malformed_not_a_crash() {
    let r = ring();
    for t in [
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "a..c",
        ".b.c",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "eyJ hbGc.e30.abc",
        "eyJhbGciOiJIUzI1NiJ9.eyJ9.a+b/",
        "\u{0}.\u{0}.\u{0}",
        "ééé.ééé.ééé",
    ] {
        let e = r.verify_at(t, NOW).unwrap_err();
        assert_eq!(e.code(), "unauthorized", "{t:?}: {e:?}");
    }
    assert_eq!(r.verify_at("", NOW), Err(AuthError::Missing));
    // A valid header and signature over a payload that is not JSON.
    let t = forge(HS, "not json", SECRET);
    assert!(matches!(
        r.verify_at(&t, NOW),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn headers_with_crit_or_another_typ_are_refused() {
    let p = payload(&watch());
    let t = forge(r#"{"alg":"HS256","crit":["exp"]}"#, &p, SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::Malformed(_))
    ));
    let t = forge(r#"{"alg":"HS256","typ":"at+jwt"}"#, &p, SECRET);
    assert!(matches!(
        ring().verify_at(&t, NOW),
        Err(AuthError::Malformed(_))
    ));
    let t = forge(r#"{"alg":"HS256","typ":"jwt"}"#, &p, SECRET);
    assert!(ring().verify_at(&t, NOW).is_ok());
    let t = forge(r#"{"alg":"HS256"}"#, &p, SECRET);
    assert!(ring().verify_at(&t, NOW).is_ok());
}

#[test]
fn messages_never_echo_the_token() {
    let t = forge(
        r#"{"alg":"HS256","kid":"SECRET-LOOKING-KID"}"#,
        &payload(&watch()),
        SECRET,
    );
    let e = ring().verify_at(&t, NOW).unwrap_err();
    assert!(!e.to_string().contains("SECRET-LOOKING"), "{e}");
    let t = forge(
        r#"{"alg":"<script>alert(1)</script>"}"#,
        &payload(&watch()),
        SECRET,
    );
    let e = ring().verify_at(&t, NOW).unwrap_err();
    assert!(!e.to_string().contains("script"), "{e}");
}

#[test]
fn minting_without_a_signing_key_or_room_fails_clearly() {
    let empty = KeyRing::builder().build().unwrap();
    let req = TokenRequest {
        sub: Subject::new("a").unwrap(),
        room: None,
        grants: Grants::new([Grant::Watch]).unwrap(),
        ttl: Duration::from_secs(60),
    };
    assert_eq!(
        ring().mint_at(&req, NOW).unwrap_err().to_string(),
        "the watch grant needs a `room`"
    );
    let req = TokenRequest {
        room: Some(RoomName::new("r").unwrap()),
        ..req
    };
    assert!(matches!(
        empty.mint_at(&req, NOW),
        Err(MintError::NoSigningKey)
    ));
    let zero = TokenRequest {
        ttl: Duration::from_millis(500),
        ..req
    };
    assert!(matches!(
        ring().mint_at(&zero, NOW),
        Err(MintError::Invalid(_))
    ));
}
