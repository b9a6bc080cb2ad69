//! The keys tokens are signed with, and which one a token names.
//!
//! A [`KeyRing`] holds every configured key. Each has an optional key id
//! (`kid`) and one algorithm, fixed by the kind of key: an HMAC secret is
//! HS256, an Ed25519 key is EdDSA. A token is checked against exactly one
//! key: the one its `kid` header names, or, when it has no `kid`, the one key
//! configured without an id (a "bare" key). So a key can be rotated without
//! cutting anyone off: add the new key with a new id and sign with it, keep
//! the old one until its tokens have expired, then remove it.
//!
//! Minting uses the signing key: the one named by `signing_kid`, else the
//! first key added that can sign (a secret or an Ed25519 private key).

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::names::KeyId;

/// Shortest HMAC secret accepted, in bytes (RFC 7518 3.2: a key as long as
/// the hash, 256 bits). `openssl rand -base64 32` prints 44 characters.
pub const MIN_SECRET_LEN: usize = 32;

/// The longest lifetime (`exp - iat`) a token may have unless configured
/// otherwise (`--auth-max-token-lifetime`). It also bounds how long a
/// revocation must be remembered.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// One key.
pub(crate) struct Key {
    pub(crate) kid: Option<KeyId>,
    pub(crate) alg: Algorithm,
    pub(crate) decoding: DecodingKey,
    pub(crate) encoding: Option<EncodingKey>,
}

/// A key's name in messages: "key `kid1`" or "the key without an id".
pub(crate) fn key_label(kid: Option<&KeyId>) -> String {
    match kid {
        Some(k) => format!("key `{k}`"),
        None => "the key without an id".to_string(),
    }
}

fn bad_pem(kid: Option<&KeyId>, what: &str) -> KeyError {
    KeyError::BadPem {
        key: key_label(kid),
        what: what.to_string(),
    }
}

/// A configuration mistake in the keys (a startup error).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than [`MIN_SECRET_LEN`].
    ShortSecret {
        /// "key `kid1`" or "the key without an id".
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Two keys with the same id.
    DuplicateKid(KeyId),
    /// Two keys without an id: a token without `kid` could not say which.
    TwoBareKeys,
    /// A PEM file that is not the Ed25519 key it should be.
    BadPem {
        /// Which key.
        key: String,
        /// What is wrong.
        what: String,
    },
    /// `signing_kid` names no key.
    UnknownSigningKid(KeyId),
    /// `signing_kid` names a verification-only (public) key.
    CannotSign(KeyId),
    /// A lifetime of zero.
    ZeroLifetime,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::ShortSecret { key, len } => write!(
                f,
                "{key}: the secret is {len} bytes; at least {MIN_SECRET_LEN} are needed \
                 (`openssl rand -base64 32` makes one)"
            ),
            KeyError::DuplicateKid(kid) => write!(f, "two keys have the id `{kid}`"),
            KeyError::TwoBareKeys => f.write_str(
                "two keys have no id; give each but one an id (`KID:SECRET`), since a token \
                 without `kid` is checked against the key without an id",
            ),
            KeyError::BadPem { key, what } => write!(f, "{key}: {what}"),
            KeyError::UnknownSigningKid(kid) => {
                write!(f, "the signing key id `{kid}` names no key")
            }
            KeyError::CannotSign(kid) => write!(
                f,
                "key `{kid}` is a public key: it checks tokens but cannot sign them"
            ),
            KeyError::ZeroLifetime => f.write_str("the maximum token lifetime must be at least 1s"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The configured keys and the token policy (maximum lifetime).
pub struct KeyRing {
    pub(crate) keys: Vec<Key>,
    pub(crate) signing: Option<usize>,
    pub(crate) max_lifetime: u64,
}

impl KeyRing {
    /// A builder; add keys, then [`KeyRingBuilder::build`].
    pub fn builder() -> KeyRingBuilder {
        KeyRingBuilder {
            keys: Vec::new(),
            signing_kid: None,
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// A ring of one bare HS256 secret (tests, simple setups).
    pub fn from_secret(secret: &[u8]) -> Result<KeyRing, KeyError> {
        let mut b = KeyRing::builder();
        b.add_secret(None, secret)?;
        b.build()
    }

    /// Whether no key is configured (nothing can be verified).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether tokens can be minted (some key can sign).
    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
    }

    /// The id of the signing key (`None` for a bare key, or when none signs).
    pub fn signing_kid(&self) -> Option<&KeyId> {
        self.signing.and_then(|i| self.keys[i].kid.as_ref())
    }

    /// The longest lifetime (`exp - iat`) a token may have.
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime)
    }

    /// The key a token with header `kid` is checked against.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&Key> {
        self.keys
            .iter()
            .find(|k| k.kid.as_ref().map(KeyId::as_str) == kid)
    }

    /// A line for the startup log: every key by id and algorithm, and the
    /// signing one. No secret material.
    pub fn describe(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                let id = k.kid.as_ref().map_or("(no id)", KeyId::as_str);
                let role = if k.encoding.is_some() {
                    ""
                } else {
                    ", verify only"
                };
                format!("{id} ({:?}{role})", k.alg)
            })
            .collect();
        let signing = match self.signing {
            Some(i) => self.keys[i].kid.as_ref().map_or("(no id)", KeyId::as_str),
            None => "none",
        };
        format!("keys: {}; signing key: {signing}", keys.join(", "))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.describe())
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

/// Builds a [`KeyRing`], refusing mistakes as they are made.
pub struct KeyRingBuilder {
    keys: Vec<Key>,
    signing_kid: Option<KeyId>,
    max_lifetime: Duration,
}

impl KeyRingBuilder {
    fn push(&mut self, key: Key) -> Result<(), KeyError> {
        if self.keys.iter().any(|k| k.kid == key.kid) {
            return Err(match key.kid {
                Some(kid) => KeyError::DuplicateKid(kid),
                None => KeyError::TwoBareKeys,
            });
        }
        self.keys.push(key);
        Ok(())
    }

    /// An HS256 secret (its bytes as given), signing and verifying.
    pub fn add_secret(&mut self, kid: Option<KeyId>, secret: &[u8]) -> Result<(), KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::ShortSecret {
                key: key_label(kid.as_ref()),
                len: secret.len(),
            });
        }
        self.push(Key {
            kid,
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
        })
    }

    /// An Ed25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm
    /// ed25519` writes), signing and verifying (EdDSA).
    pub fn add_ed25519_private_pem(
        &mut self,
        kid: Option<KeyId>,
        pem: &[u8],
    ) -> Result<(), KeyError> {
        let bad = |what: &str| bad_pem(kid.as_ref(), what);
        let encoding = EncodingKey::from_ed_pem(pem)
            .map_err(|_| bad("not an Ed25519 private key in PEM (BEGIN PRIVATE KEY)"))?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(encoding.inner())
            .map_err(|_| bad("not a valid Ed25519 private key"))?;
        let public = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        self.push(Key {
            kid,
            alg: Algorithm::EdDSA,
            decoding: DecodingKey::from_ed_der(&public),
            encoding: Some(encoding),
        })
    }

    /// An Ed25519 public key (SPKI PEM, `BEGIN PUBLIC KEY`), verifying only.
    pub fn add_ed25519_public_pem(
        &mut self,
        kid: Option<KeyId>,
        pem: &[u8],
    ) -> Result<(), KeyError> {
        let bad = |what: &str| bad_pem(kid.as_ref(), what);
        let decoding = DecodingKey::from_ed_pem(pem)
            .map_err(|_| bad("not an Ed25519 public key in PEM (BEGIN PUBLIC KEY)"))?;
        match decoding.kind() {
            jsonwebtoken::DecodingKeyKind::SecretOrDer(raw) if raw.len() == 32 => {}
            _ => return Err(bad("not a 32-byte Ed25519 public key")),
        }
        self.push(Key {
            kid,
            alg: Algorithm::EdDSA,
            decoding,
            encoding: None,
        })
    }

    /// Which key mints (default: the first key added that can sign).
    pub fn signing_kid(&mut self, kid: Option<KeyId>) -> &mut Self {
        self.signing_kid = kid;
        self
    }

    /// The longest lifetime a token may have (default
    /// [`DEFAULT_MAX_TOKEN_LIFETIME`]); whole seconds.
    pub fn max_lifetime(&mut self, lifetime: Duration) -> &mut Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The ring (possibly empty: the caller decides whether that is an error).
    pub fn build(self) -> Result<KeyRing, KeyError> {
        let max_lifetime = self.max_lifetime.as_secs();
        if max_lifetime == 0 {
            return Err(KeyError::ZeroLifetime);
        }
        let signing = match &self.signing_kid {
            Some(kid) => {
                let i = self
                    .keys
                    .iter()
                    .position(|k| k.kid.as_ref() == Some(kid))
                    .ok_or_else(|| KeyError::UnknownSigningKid(kid.clone()))?;
                if self.keys[i].encoding.is_none() {
                    return Err(KeyError::CannotSign(kid.clone()));
                }
                Some(i)
            }
            None => self.keys.iter().position(|k| k.encoding.is_some()),
        };
        Ok(KeyRing {
            keys: self.keys,
            signing,
            max_lifetime,
        })
    }
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Ed25519 keys made on the spot, as PEM.
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use ring::signature::KeyPair as _;

    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        let b64 = STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out.into_bytes()
    }

    /// A new key pair: (private PKCS#8 PEM, public SPKI PEM).
    pub(crate) fn ed25519() -> (Vec<u8>, Vec<u8>) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        // SPKI: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING key }.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        (pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &[u8] = b"0123456789abcdef0123456789abcdef";
    const S2: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn kid(s: &str) -> Option<KeyId> {
        Some(KeyId::new(s).unwrap())
    }

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused() {
        let mut b = KeyRing::builder();
        let e = b.add_secret(kid("k1"), &S1[..31]).unwrap_err();
        assert_eq!(
            e,
            KeyError::ShortSecret {
                key: "key `k1`".into(),
                len: 31
            }
        );
        assert!(e.to_string().contains("at least 32"), "{e}");
        assert!(b.add_secret(None, S1).is_ok());
    }

    #[test]
    fn key_ids_are_unique_and_only_one_key_may_have_none() {
        let mut b = KeyRing::builder();
        b.add_secret(kid("k1"), S1).unwrap();
        assert_eq!(
            b.add_secret(kid("k1"), S2),
            Err(KeyError::DuplicateKid(KeyId::new("k1").unwrap()))
        );
        b.add_secret(None, S1).unwrap();
        assert_eq!(b.add_secret(None, S2), Err(KeyError::TwoBareKeys));
    }

    #[test]
    fn the_first_signing_key_signs_unless_one_is_named() {
        let (_, public) = test_keys::ed25519();
        let mut b = KeyRing::builder();
        b.add_ed25519_public_pem(kid("pub"), &public).unwrap();
        b.add_secret(kid("new"), S1).unwrap();
        b.add_secret(kid("old"), S2).unwrap();
        let ring = b.build().unwrap();
        assert_eq!(ring.signing_kid().map(KeyId::as_str), Some("new"));
        assert!(
            ring.describe().contains("pub (EdDSA, verify only)"),
            "{}",
            ring.describe()
        );

        let mut b = KeyRing::builder();
        b.add_secret(kid("new"), S1).unwrap();
        b.add_secret(kid("old"), S2).unwrap();
        b.signing_kid(kid("old"));
        assert_eq!(
            b.build().unwrap().signing_kid().map(KeyId::as_str),
            Some("old")
        );
    }

    #[test]
    fn a_signing_kid_must_name_a_key_that_can_sign() {
        let (_, public) = test_keys::ed25519();
        let mut b = KeyRing::builder();
        b.add_ed25519_public_pem(kid("pub"), &public).unwrap();
        b.signing_kid(kid("nope"));
        assert!(matches!(b.build(), Err(KeyError::UnknownSigningKid(_))));
        let mut b = KeyRing::builder();
        b.add_ed25519_public_pem(kid("pub"), &public).unwrap();
        b.signing_kid(kid("pub"));
        assert!(matches!(b.build(), Err(KeyError::CannotSign(_))));
        let mut b = KeyRing::builder();
        b.add_ed25519_public_pem(kid("pub"), &public).unwrap();
        let ring = b.build().unwrap();
        assert!(!ring.can_sign());
    }

    #[test]
    fn pem_files_must_hold_the_right_ed25519_key() {
        let (private, public) = test_keys::ed25519();
        let mut b = KeyRing::builder();
        assert!(matches!(
            b.add_ed25519_public_pem(None, &private),
            Err(KeyError::BadPem { .. })
        ));
        assert!(matches!(
            b.add_ed25519_private_pem(None, &public),
            Err(KeyError::BadPem { .. })
        ));
        assert!(matches!(
            b.add_ed25519_private_pem(None, b"garbage"),
            Err(KeyError::BadPem { .. })
        ));
        b.add_ed25519_private_pem(kid("ed"), &private).unwrap();
        b.add_ed25519_public_pem(kid("edpub"), &public).unwrap();
        let ring = b.build().unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.signing_kid().map(KeyId::as_str), Some("ed"));
    }

    #[test]
    fn debug_output_never_shows_secret_bytes() {
        let ring = KeyRing::from_secret(S1).unwrap();
        let shown = format!("{ring:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("(no id) (HS256)"), "{shown}");
    }
}
