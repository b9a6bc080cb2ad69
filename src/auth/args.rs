//! The command-line side of access control: `--auth` and the key flags,
//! shared by the server and `token create`.
//!
//! ```text
//! --auth open|token                      SIGNAL_SERVER_AUTH (default open)
//! --auth-secret [KID:]SECRET             SIGNAL_SERVER_AUTH_SECRET (comma-separated)
//! --auth-secret-file [KID:]PATH          SIGNAL_SERVER_AUTH_SECRET_FILE
//! --auth-private-key [KID:]PATH          SIGNAL_SERVER_AUTH_PRIVATE_KEY (Ed25519, PKCS#8 PEM)
//! --auth-public-key [KID:]PATH           SIGNAL_SERVER_AUTH_PUBLIC_KEY  (Ed25519, SPKI PEM)
//! --auth-signing-kid KID                 SIGNAL_SERVER_AUTH_SIGNING_KID
//! --auth-max-token-lifetime DURATION     SIGNAL_SERVER_AUTH_MAX_TOKEN_LIFETIME (default 30d)
//! ```
//!
//! Every key flag repeats. `KID:` is optional: the text before the first `:`
//! is the key id, so a bare secret that contains `:` is written `:SECRET`
//! (an empty id). Secrets cannot contain `,` (the variables' separator).
//! A secret given as a flag is visible to every user of the machine (`ps`);
//! the variable or a file (`--auth-secret-file`, surrounding whitespace
//! trimmed) is the recommended way.

use std::fmt;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::keys::{KeyError, KeyRing};
use super::names::KeyId;

/// Largest key file read, in bytes (a PEM key is under 200).
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// Who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AuthMode {
    /// Anyone who reaches the server may open rooms, and room tokens are
    /// random strings handed out by the server (the original protocol).
    #[default]
    Open,
    /// Every action needs a token signed with a configured key
    /// (docs/AUTH.md).
    Token,
}

/// A secret, never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// `[KID:]VALUE`: the id before the first `:`, if any.
fn split_kid(s: &str) -> Result<(Option<KeyId>, &str), String> {
    match s.split_once(':') {
        None => Ok((None, s)),
        Some(("", rest)) => Ok((None, rest)),
        Some((kid, rest)) => {
            let kid = KeyId::new(kid).map_err(|e| {
                format!("{e} (the text before the first `:` is the key id; write `:SECRET` for a bare secret containing `:`)")
            })?;
            Ok((Some(kid), rest))
        }
    }
}

/// An HMAC secret with an optional key id: `[KID:]SECRET`.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    /// The key id.
    pub kid: Option<KeyId>,
    /// The secret (its UTF-8 bytes as given).
    pub secret: Secret,
}

impl std::str::FromStr for SecretSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kid, secret) = split_kid(s)?;
        if secret.is_empty() {
            return Err("empty secret".into());
        }
        Ok(SecretSpec {
            kid,
            secret: Secret(secret.as_bytes().to_vec()),
        })
    }
}

/// A key file with an optional key id: `[KID:]PATH`.
#[derive(Debug, Clone)]
pub struct PathSpec {
    /// The key id.
    pub kid: Option<KeyId>,
    /// The file.
    pub path: PathBuf,
}

impl std::str::FromStr for PathSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kid, path) = split_kid(s)?;
        if path.is_empty() {
            return Err("empty path".into());
        }
        Ok(PathSpec {
            kid,
            path: PathBuf::from(path),
        })
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 2h, 30d, 1y)"))
}

/// The keys tokens are signed and checked with, and the token policy.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// HS256 secret, `[KID:]SECRET`, at least 32 bytes (repeatable;
    /// comma-separated in the variable). Prefer the variable or
    /// --auth-secret-file: a flag shows in `ps`.
    #[arg(
        long = "auth-secret",
        env = "SIGNAL_SERVER_AUTH_SECRET",
        value_name = "[KID:]SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub secrets: Vec<SecretSpec>,

    /// File holding an HS256 secret (surrounding whitespace trimmed),
    /// `[KID:]PATH` (repeatable).
    #[arg(
        long = "auth-secret-file",
        env = "SIGNAL_SERVER_AUTH_SECRET_FILE",
        value_name = "[KID:]PATH",
        value_delimiter = ','
    )]
    pub secret_files: Vec<PathSpec>,

    /// Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm
    /// ed25519`), `[KID:]PATH`: signs and checks EdDSA tokens (repeatable).
    #[arg(
        long = "auth-private-key",
        env = "SIGNAL_SERVER_AUTH_PRIVATE_KEY",
        value_name = "[KID:]PATH",
        value_delimiter = ','
    )]
    pub private_keys: Vec<PathSpec>,

    /// Ed25519 public key (PEM, `openssl pkey -pubout`), `[KID:]PATH`:
    /// checks EdDSA tokens minted elsewhere (repeatable).
    #[arg(
        long = "auth-public-key",
        env = "SIGNAL_SERVER_AUTH_PUBLIC_KEY",
        value_name = "[KID:]PATH",
        value_delimiter = ','
    )]
    pub public_keys: Vec<PathSpec>,

    /// Key id of the key that mints tokens. Default: the first
    /// --auth-secret, else the first --auth-secret-file, else the first
    /// --auth-private-key.
    #[arg(
        long = "auth-signing-kid",
        env = "SIGNAL_SERVER_AUTH_SIGNING_KID",
        value_name = "KID"
    )]
    pub signing_kid: Option<KeyId>,

    /// Longest lifetime (`exp - iat`) a token may have; longer ones are
    /// refused. Revocations are remembered this long.
    #[arg(
        long = "auth-max-token-lifetime",
        env = "SIGNAL_SERVER_AUTH_MAX_TOKEN_LIFETIME",
        value_name = "DURATION",
        value_parser = duration,
        default_value = "30d"
    )]
    pub max_token_lifetime: Duration,
}

/// A key file that could not be used.
fn file_error(flag: &str, spec: &PathSpec, what: impl fmt::Display) -> String {
    format!("{flag} {}: {what}", spec.path.display())
}

fn read_key_file(flag: &str, spec: &PathSpec) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(&spec.path).map_err(|e| file_error(flag, spec, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(flag, spec, e))?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(file_error(
            flag,
            spec,
            "larger than a key file can be (64 KiB)",
        ));
    }
    Ok(bytes)
}

impl KeyArgs {
    /// Whether any key is given.
    pub fn any(&self) -> bool {
        !(self.secrets.is_empty()
            && self.secret_files.is_empty()
            && self.private_keys.is_empty()
            && self.public_keys.is_empty())
    }

    /// Reads the key files and builds the ring (possibly empty). Errors are
    /// sentences naming the flag and the key.
    pub fn key_ring(&self) -> Result<KeyRing, String> {
        let mut b = KeyRing::builder();
        let key = |e: KeyError| e.to_string();
        for s in &self.secrets {
            b.add_secret(s.kid.clone(), s.secret.expose())
                .map_err(|e| format!("--auth-secret: {}", key(e)))?;
        }
        for f in &self.secret_files {
            let bytes = read_key_file("--auth-secret-file", f)?;
            let trimmed = bytes.trim_ascii();
            b.add_secret(f.kid.clone(), trimmed)
                .map_err(|e| file_error("--auth-secret-file", f, key(e)))?;
        }
        for f in &self.private_keys {
            let pem = read_key_file("--auth-private-key", f)?;
            b.add_ed25519_private_pem(f.kid.clone(), &pem)
                .map_err(|e| file_error("--auth-private-key", f, key(e)))?;
        }
        for f in &self.public_keys {
            let pem = read_key_file("--auth-public-key", f)?;
            b.add_ed25519_public_pem(f.kid.clone(), &pem)
                .map_err(|e| file_error("--auth-public-key", f, key(e)))?;
        }
        b.signing_kid(self.signing_kid.clone());
        b.max_lifetime(self.max_token_lifetime);
        b.build().map_err(key)
    }
}

/// Access control of the server (flattened into `ServeArgs`).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Access control: `open` (anyone may open rooms; the original protocol)
    /// or `token` (every action needs a signed token; see docs/AUTH.md).
    #[arg(long = "auth", env = "SIGNAL_SERVER_AUTH", value_enum, default_value_t = AuthMode::Open)]
    pub mode: AuthMode,

    /// The keys.
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Access control as the server runs it.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// No tokens are checked.
    Open,
    /// Tokens are checked against these keys (never empty).
    Token(Arc<KeyRing>),
}

impl AuthConfig {
    /// The mode.
    pub fn mode(&self) -> AuthMode {
        match self {
            AuthConfig::Open => AuthMode::Open,
            AuthConfig::Token(_) => AuthMode::Token,
        }
    }
}

impl AuthArgs {
    /// The configuration, checked: token mode needs at least one key, and
    /// every key given must be usable (in open mode too, so a typo shows
    /// before the day the mode is switched). Keys given in open mode are
    /// logged as unused.
    pub fn config(&self) -> Result<AuthConfig, String> {
        let ring = self.keys.key_ring()?;
        match self.mode {
            AuthMode::Open => {
                if !ring.is_empty() {
                    tracing::warn!(
                        "auth keys are configured but --auth is open: no token is checked \
                         (set --auth token or SIGNAL_SERVER_AUTH=token)"
                    );
                }
                Ok(AuthConfig::Open)
            }
            AuthMode::Token if ring.is_empty() => Err(
                "--auth token needs a key: set SIGNAL_SERVER_AUTH_SECRET (at least 32 bytes, e.g. \
                 from `openssl rand -base64 32`), --auth-secret-file, or --auth-public-key"
                    .into(),
            ),
            AuthMode::Token => Ok(AuthConfig::Token(Arc::new(ring))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
    }

    const S1: &str = "0123456789abcdef0123456789abcdef";
    const S2: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn the_default_is_open_mode() {
        // Unless the environment of this test run says otherwise.
        if std::env::var_os("SIGNAL_SERVER_AUTH").is_none() {
            let cli = parse(&[]).unwrap();
            assert_eq!(cli.auth.mode, AuthMode::Open);
        }
    }

    #[test]
    fn secrets_take_an_optional_key_id_before_the_first_colon() {
        let cli = parse(&[
            "--auth-secret",
            &format!("k1:{S1}"),
            "--auth-secret",
            &format!(":{S2}:with:colons"),
        ])
        .unwrap();
        let s = &cli.auth.keys.secrets;
        assert_eq!(s[0].kid.as_ref().map(KeyId::as_str), Some("k1"));
        assert_eq!(s[0].secret.expose(), S1.as_bytes());
        assert_eq!(s[1].kid, None);
        assert_eq!(s[1].secret.expose(), format!("{S2}:with:colons").as_bytes());
        let cli = parse(&["--auth-secret", S1]).unwrap();
        assert_eq!(cli.auth.keys.secrets[0].kid, None);
        assert!(parse(&["--auth-secret", "bad kid:secret"]).is_err());
        assert!(parse(&["--auth-secret", "k1:"]).is_err());
    }

    #[test]
    fn secrets_are_never_shown_by_debug() {
        let cli = parse(&["--auth-secret", &format!("k1:{S1}")]).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains(S1), "{shown}");
        assert!(shown.contains("Secret(32 bytes)"), "{shown}");
    }

    #[test]
    fn token_mode_without_a_key_is_a_startup_error() {
        let cli = parse(&["--auth", "token"]).unwrap();
        if cli.auth.keys.any() {
            return; // the environment of this run sets keys
        }
        let e = cli.auth.config().unwrap_err();
        assert!(e.contains("--auth token needs a key"), "{e}");
        let cli = parse(&["--auth", "token", "--auth-secret", S1]).unwrap();
        assert_eq!(cli.auth.config().unwrap().mode(), AuthMode::Token);
    }

    #[test]
    fn a_short_secret_is_a_startup_error_in_open_mode_too() {
        let cli = parse(&["--auth-secret", "k1:short"]).unwrap();
        let e = cli.auth.config().unwrap_err();
        assert!(e.contains("key `k1`") && e.contains("at least 32"), "{e}");
    }

    #[test]
    fn secret_files_are_trimmed_and_key_files_are_read() {
        let dir = std::env::temp_dir().join(format!("ss-auth-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("  {S1}\n")).unwrap();
        let (private, public) = crate::auth::keys::test_keys::ed25519();
        let private_path = dir.join("ed.pem");
        let public_path = dir.join("ed.pub.pem");
        std::fs::write(&private_path, &private).unwrap();
        std::fs::write(&public_path, &public).unwrap();
        let cli = parse(&[
            "--auth",
            "token",
            "--auth-secret-file",
            &format!("file:{}", secret.display()),
            "--auth-private-key",
            &format!("ed:{}", private_path.display()),
            "--auth-public-key",
            &format!("edpub:{}", public_path.display()),
            "--auth-signing-kid",
            "ed",
        ])
        .unwrap();
        let ring = cli.auth.keys.key_ring().unwrap();
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.signing_kid().map(KeyId::as_str), Some("ed"));
        let mut b = KeyRing::builder();
        b.add_secret(Some(KeyId::new("file").unwrap()), S1.as_bytes())
            .unwrap();
        let direct = b.build().unwrap();
        let c = crate::auth::Claims {
            sub: crate::auth::Subject::new("a").unwrap(),
            room: Some(crate::auth::RoomName::new("r").unwrap()),
            grants: crate::auth::Grants::new([crate::auth::Grant::Watch]).unwrap(),
            iat: crate::auth::unix_now(),
            nbf: crate::auth::unix_now(),
            exp: crate::auth::unix_now() + 60,
            jti: crate::auth::TokenId::new("j").unwrap(),
        };
        let t = direct.sign(c).unwrap().token;
        assert!(ring.verify(&t).is_ok(), "the file's secret, trimmed");

        let missing = parse(&["--auth-secret-file", "/nonexistent/ss-secret"]).unwrap();
        let e = missing.auth.keys.key_ring().unwrap_err();
        assert!(
            e.starts_with("--auth-secret-file /nonexistent/ss-secret:"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
