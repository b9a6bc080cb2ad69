//! Signatures, as the Standard Webhooks specification defines them
//! (<https://www.standardwebhooks.com>, version 1.0.0, symmetric scheme):
//!
//! ```text
//! webhook-id:        evt_...                 (the event's id, the same on every retry)
//! webhook-timestamp: 1750000000              (Unix seconds of this attempt)
//! webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>
//! ```
//!
//! The key is the base64-decoded part of a `whsec_...` secret. With several
//! secrets (rotation), the header lists one `v1,...` per secret, separated by
//! spaces; a receiver accepts the request if any of them verifies.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;

/// Prefix of a secret, as the specification serialises it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest key bytes accepted (the specification's minimum).
pub const MIN_SECRET_BYTES: usize = 24;
/// Most key bytes accepted.
pub const MAX_SECRET_BYTES: usize = 64;

/// A signing secret, `whsec_` followed by 24 to 64 bytes in standard base64.
/// Its `Debug` and `Display` never show the key.
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const HINT: &str = "make one with: echo \"whsec_$(openssl rand -base64 32)\"";
        let Some(b64) = s.trim().strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "a webhook secret starts with `{SECRET_PREFIX}` ({HINT})"
            ));
        };
        // The error of the decoder is not shown: it could quote the secret.
        let key = STANDARD
            .decode(b64)
            .map_err(|_| format!("the part after `{SECRET_PREFIX}` is not base64 ({HINT})"))?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(format!(
                "a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {} ({HINT})",
                key.len()
            ));
        }
        Ok(Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }
}

impl Secret {
    /// The `v1,...` signature of one attempt.
    fn sign(&self, id: &str, timestamp: u64, body: &[u8], out: &mut String) {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        out.push_str("v1,");
        STANDARD.encode_string(ctx.sign().as_ref(), out);
    }
}

/// The value of the `webhook-signature` header: one signature per secret.
pub(crate) fn signature_header(
    secrets: &[Secret],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> String {
    let mut out = String::with_capacity(48 * secrets.len());
    for (i, secret) in secrets.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        secret.sign(id, timestamp, body, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_test_vector() {
        // The vector of the specification's reference libraries
        // (standard-webhooks/libraries, the `test_sign` cases).
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature_header(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn signs_once_per_secret_space_separated() {
        let a: Secret = format!("whsec_{}", STANDARD.encode([1u8; 32]))
            .parse()
            .unwrap();
        let b: Secret = format!("whsec_{}", STANDARD.encode([2u8; 32]))
            .parse()
            .unwrap();
        let header = signature_header(&[a.clone(), b], "evt_x", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts
            .iter()
            .all(|p| p.starts_with("v1,") && p.len() == 3 + 44));
        assert_ne!(parts[0], parts[1]);
        assert_eq!(parts[0], signature_header(&[a], "evt_x", 1, b"{}"));
    }

    #[test]
    fn refuses_malformed_secrets_without_quoting_them() {
        let short = format!("whsec_{}", STANDARD.encode([7u8; 16]));
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        for bad in [
            "",
            "hunter2-hunter2-hunter2-hunter2",
            "whsec_not*base64!",
            &short,
            &long,
        ] {
            let err = bad.parse::<Secret>().unwrap_err();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
        let ok: Secret = format!("whsec_{}", STANDARD.encode([7u8; 24]))
            .parse()
            .unwrap();
        assert_eq!(format!("{ok:?}"), "Secret(redacted)");
    }
}
