//! The cryptography behind `jsonwebtoken`: HS256 and EdDSA (Ed25519) through
//! ring, which the server already links for TLS.
//!
//! `jsonwebtoken` parses and checks JWTs and leaves the signature primitives
//! to a process-wide `CryptoProvider`. Its two built-in providers would pull
//! an RSA implementation (`rust_crypto`) or a C library (`aws_lc_rs`) into
//! the binary for algorithms this server refuses anyway, so this module
//! installs one that knows exactly the two it accepts; any other algorithm
//! is an error here too, whatever a header says.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    // JWK thumbprints and key extraction are never used here.
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes this module's provider the process default. Called before every
/// sign or verify; cheap after the first call. Should something else in the
/// process have installed a provider first, that one stays (and the keys'
/// fixed algorithms still hold).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    match alg {
        Algorithm::HS256 => Ok(Box::new(Hs256(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            key.try_get_hmac_secret()?,
        )))),
        Algorithm::EdDSA if key.family() == AlgorithmFamily::Ed => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.inner())
                .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?;
            Ok(Box::new(EdSigner(pair)))
        }
        Algorithm::EdDSA => Err(ErrorKind::InvalidKeyFormat.into()),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    match alg {
        Algorithm::HS256 => Ok(Box::new(Hs256(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            key.try_get_hmac_secret()?,
        )))),
        Algorithm::EdDSA if key.family() == AlgorithmFamily::Ed => match key.kind() {
            DecodingKeyKind::SecretOrDer(raw) => Ok(Box::new(EdVerifier(raw.clone()))),
            _ => Err(ErrorKind::InvalidKeyFormat.into()),
        },
        Algorithm::EdDSA => Err(ErrorKind::InvalidKeyFormat.into()),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

/// HMAC-SHA256, both ways; ring compares tags in constant time.
struct Hs256(ring::hmac::Key);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(ring::hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
        ring::hmac::verify(&self.0, msg, tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

struct EdSigner(Ed25519KeyPair);

impl Signer<Vec<u8>> for EdSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for EdSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

/// An Ed25519 public key: its 32 raw bytes.
struct EdVerifier(Vec<u8>);

impl Verifier<Vec<u8>> for EdVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for EdVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}
