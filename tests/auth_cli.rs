//! Access control from the command line, through the built binary:
//! `signal-server token create` and `--auth` at startup. Tokens are checked
//! with the library's verifier and, independently of it, with OpenSSL
//! (HMAC-SHA256 and Ed25519 over the JWT's signing input).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use signal_server::auth::{authorize, Action, AuthError, KeyRing, RoomName};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const SECRET: &str = "test-secret-of-at-least-32-bytes-1234";
const SECRET2: &str = "a-second-secret-for-rotation-tests-5678";

/// Variables of the auth flags: cleared so the caller's environment never
/// leaks into a test.
const AUTH_VARS: &[&str] = &[
    "SIGNAL_SERVER_AUTH",
    "SIGNAL_SERVER_AUTH_SECRET",
    "SIGNAL_SERVER_AUTH_SECRET_FILE",
    "SIGNAL_SERVER_AUTH_PRIVATE_KEY",
    "SIGNAL_SERVER_AUTH_PUBLIC_KEY",
    "SIGNAL_SERVER_AUTH_SIGNING_KID",
    "SIGNAL_SERVER_AUTH_MAX_TOKEN_LIFETIME",
    "SIGNAL_SERVER_PAGE_URL",
];

fn signal_server(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).env_remove("PORT");
    for v in AUTH_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run signal-server")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ss-auth-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(testkit::require_tool("openssl", "openssl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// The three parts of a compact JWT, decoded: header, payload, signature.
fn parts(token: &str) -> (Value, Value, Vec<u8>) {
    let p: Vec<&str> = token.split('.').collect();
    assert_eq!(p.len(), 3, "{token}");
    let json =
        |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (
        json(p[0]),
        json(p[1]),
        URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
    )
}

fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').unwrap().0
}

fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

#[test]
fn token_create_prints_a_token_the_server_accepts_and_a_link_to_the_page() {
    let o = ok(signal_server(
        &[
            "token", "create", "--room", "robot-7", "--grant", "watch", "--ttl", "2h", "--sub",
            "alice",
        ],
        &[("SIGNAL_SERVER_AUTH_SECRET", SECRET)],
    ));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let token = lines[0];
    assert_eq!(lines[1], format!("http://localhost:9090/?token={token}"));
    let said = stderr(&o);
    assert!(
        said.contains("watch token for room robot-7, subject alice"),
        "{said}"
    );

    let ring = KeyRing::from_secret(SECRET.as_bytes()).unwrap();
    let claims = ring
        .verify(token)
        .expect("the server's verifier accepts it");
    assert_eq!(claims.room, Some(room("robot-7")));
    assert_eq!(claims.sub.as_str(), "alice");
    assert_eq!(claims.exp - claims.iat, 7200);
    assert!(claims.nbf <= signal_server::auth::unix_now());
    assert_eq!(
        authorize(&claims, Action::Watch, Some(&room("robot-7"))),
        Ok(())
    );
    assert!(matches!(
        authorize(&claims, Action::Host, Some(&room("robot-7"))),
        Err(AuthError::Forbidden(_))
    ));
    assert!(matches!(
        authorize(&claims, Action::Watch, Some(&room("robot-8"))),
        Err(AuthError::Forbidden(_))
    ));

    let other = KeyRing::from_secret(SECRET2.as_bytes()).unwrap();
    assert_eq!(other.verify(token), Err(AuthError::BadSignature));
}

#[test]
fn token_create_signs_hs256_exactly_as_openssl_computes_it() {
    let o = ok(signal_server(
        &[
            "token", "create", "--room", "robot-7", "--grant", "host", "--sub", "robot-7",
        ],
        &[("SIGNAL_SERVER_AUTH_SECRET", SECRET)],
    ));
    let out = stdout(&o);
    let token = out.lines().next().unwrap();
    let (header, payload, signature) = parts(token);
    assert_eq!(header["alg"], "HS256");
    assert!(
        header.get("kid").is_none(),
        "a bare secret has no kid: {header}"
    );
    assert_eq!(payload["grants"], serde_json::json!(["host"]));
    assert_eq!(payload["room"], "robot-7");
    for claim in ["sub", "iat", "nbf", "exp", "jti"] {
        assert!(payload.get(claim).is_some(), "{claim} missing: {payload}");
    }
    let mac = openssl(
        &["dgst", "-sha256", "-hmac", SECRET, "-binary"],
        Some(signing_input(token).as_bytes()),
    );
    assert!(
        mac.status.success(),
        "{}",
        String::from_utf8_lossy(&mac.stderr)
    );
    assert_eq!(
        mac.stdout, signature,
        "OpenSSL's HMAC-SHA256 of the signing input"
    );
}

#[test]
fn token_create_with_an_openssl_ed25519_key_verifies_with_openssl_and_the_public_key_alone() {
    let dir = TempDir::new("ed25519");
    let private = dir.path("robots.pem");
    let public = dir.path("robots.pub.pem");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    assert!(openssl(
        &["genpkey", "-algorithm", "ed25519", "-out", &p(&private)],
        None
    )
    .status
    .success());
    assert!(openssl(
        &["pkey", "-in", &p(&private), "-pubout", "-out", &p(&public)],
        None
    )
    .status
    .success());

    let o = ok(signal_server(
        &[
            "token",
            "create",
            "--room",
            "robot-7",
            "--grant",
            "join,watch",
            "--auth-private-key",
            &format!("ed1:{}", p(&private)),
        ],
        &[],
    ));
    let out = stdout(&o);
    let token = out.lines().next().unwrap();
    let (header, payload, signature) = parts(token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], "ed1");
    assert_eq!(payload["grants"], serde_json::json!(["join", "watch"]));

    let msg = dir.path("msg");
    let sig = dir.path("sig");
    std::fs::write(&msg, signing_input(token)).unwrap();
    std::fs::write(&sig, &signature).unwrap();
    let check = openssl(
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            &p(&public),
            "-rawin",
            "-in",
            &p(&msg),
            "-sigfile",
            &p(&sig),
        ],
        None,
    );
    assert!(
        check.status.success(),
        "OpenSSL rejects the signature: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let mut b = KeyRing::builder();
    b.add_ed25519_public_pem(
        Some("ed1".parse().unwrap()),
        &std::fs::read(&public).unwrap(),
    )
    .unwrap();
    let verifier = b.build().unwrap();
    let claims = verifier
        .verify(token)
        .expect("verifies with the public key");
    assert_eq!(
        authorize(&claims, Action::Join, Some(&room("robot-7"))),
        Ok(())
    );
    // The same key id with a secret instead: the HS/EdDSA confusion is refused.
    let mut b = KeyRing::builder();
    b.add_secret(Some("ed1".parse().unwrap()), SECRET.as_bytes())
        .unwrap();
    assert!(matches!(
        b.build().unwrap().verify(token),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[test]
fn token_create_json_output_is_one_object_for_scripts() {
    let o = ok(signal_server(
        &[
            "token",
            "create",
            "--room",
            "lab.cam-2",
            "--grant",
            "watch",
            "--ttl",
            "10m",
            "--json",
            "--page-url",
            "https://robots.example.com/view?lang=en",
        ],
        &[("SIGNAL_SERVER_AUTH_SECRET", &format!("k1:{SECRET}"))],
    ));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let token = doc["token"].as_str().unwrap();
    assert_eq!(
        doc["link"].as_str().unwrap(),
        format!("https://robots.example.com/view?lang=en&token={token}")
    );
    assert_eq!(doc["kid"], "k1");
    assert_eq!(doc["alg"], "HS256");
    assert_eq!(doc["claims"]["room"], "lab.cam-2");
    assert_eq!(doc["claims"]["sub"], "anonymous");
    let exp = doc["claims"]["exp"].as_u64().unwrap();
    let iat = doc["claims"]["iat"].as_u64().unwrap();
    assert_eq!(exp - iat, 600);
    let mut b = KeyRing::builder();
    b.add_secret(Some("k1".parse().unwrap()), SECRET.as_bytes())
        .unwrap();
    let claims = b.build().unwrap().verify(token).unwrap();
    assert_eq!(serde_json::to_value(&claims).unwrap(), doc["claims"]);
}

#[test]
fn during_a_rotation_token_create_signs_with_the_first_or_the_named_key() {
    let both = format!("new:{SECRET2},old:{SECRET}");
    let env = [("SIGNAL_SERVER_AUTH_SECRET", both.as_str())];
    let args = [
        "token", "create", "--room", "robot-7", "--grant", "watch", "--json",
    ];
    let first: Value = serde_json::from_str(&stdout(&ok(signal_server(&args, &env)))).unwrap();
    assert_eq!(first["kid"], "new");
    let mut named_args = args.to_vec();
    named_args.extend(["--auth-signing-kid", "old"]);
    let named: Value =
        serde_json::from_str(&stdout(&ok(signal_server(&named_args, &env)))).unwrap();
    assert_eq!(named["kid"], "old");

    // A server holding both keys accepts both tokens; one holding only the
    // new key refuses the old one as signed with an unknown key.
    let mut b = KeyRing::builder();
    b.add_secret(Some("new".parse().unwrap()), SECRET2.as_bytes())
        .unwrap();
    b.add_secret(Some("old".parse().unwrap()), SECRET.as_bytes())
        .unwrap();
    let during = b.build().unwrap();
    let mut b = KeyRing::builder();
    b.add_secret(Some("new".parse().unwrap()), SECRET2.as_bytes())
        .unwrap();
    let after = b.build().unwrap();
    let (t_new, t_old) = (
        first["token"].as_str().unwrap(),
        named["token"].as_str().unwrap(),
    );
    assert!(during.verify(t_new).is_ok() && during.verify(t_old).is_ok());
    assert!(after.verify(t_new).is_ok());
    assert_eq!(after.verify(t_old), Err(AuthError::UnknownKey));
}

#[test]
fn token_create_reads_a_secret_file_with_its_trailing_newline_trimmed() {
    let dir = TempDir::new("secret-file");
    let file = dir.path("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let o = ok(signal_server(
        &["token", "create", "--room", "r1", "--grant", "watch"],
        &[("SIGNAL_SERVER_AUTH_SECRET_FILE", file.to_str().unwrap())],
    ));
    let out = stdout(&o);
    let token = out.lines().next().unwrap();
    assert!(KeyRing::from_secret(SECRET.as_bytes())
        .unwrap()
        .verify(token)
        .is_ok());
}

/// Arguments after `token create`, environment, expected words on stderr.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn token_create_refuses_bad_input_with_a_clear_message_and_no_token() {
    let env = [("SIGNAL_SERVER_AUTH_SECRET", SECRET)];
    let cases: &[Case] = &[
        (
            &["--room", "r", "--grant", "watch"],
            &[("SIGNAL_SERVER_AUTH_SECRET", "short")],
            "at least 32",
        ),
        (&["--room", "r", "--grant", "watch"], &[], "no key can sign"),
        (
            &["--room", "r", "--grant", "admin"],
            &env,
            "invalid value 'admin'",
        ),
        (
            &["--room", "robot 7", "--grant", "watch"],
            &env,
            "room name must be",
        ),
        (&["--room", "r"], &env, "--grant"),
        (&["--grant", "watch"], &env, "needs a `room`"),
        (
            &["--room", "r", "--grant", "watch", "--ttl", "31d"],
            &env,
            "longer than this server allows",
        ),
        (
            &["--room", "r", "--grant", "watch", "--ttl", "500ms"],
            &env,
            "at least 1s",
        ),
        (
            &["--room", "r", "--grant", "watch", "--page-url", "ftp://x/"],
            &env,
            "http:// or https://",
        ),
        (
            &[
                "--room",
                "r",
                "--grant",
                "watch",
                "--auth-signing-kid",
                "nope",
            ],
            &env,
            "names no key",
        ),
    ];
    for (args, envs, expected) in cases {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let o = signal_server(&all, envs);
        assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
        assert!(stdout(&o).is_empty(), "{args:?} printed {}", stdout(&o));
        assert!(
            stderr(&o).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&o)
        );
    }
}

#[test]
fn an_operator_token_without_a_room_is_fleet_wide() {
    let o = ok(signal_server(
        &[
            "token",
            "create",
            "--grant",
            "operator",
            "--sub",
            "ops@example.com",
        ],
        &[("SIGNAL_SERVER_AUTH_SECRET", SECRET)],
    ));
    let out = stdout(&o);
    let claims = KeyRing::from_secret(SECRET.as_bytes())
        .unwrap()
        .verify(out.lines().next().unwrap())
        .unwrap();
    assert_eq!(claims.room, None);
    assert_eq!(authorize(&claims, Action::Operate, None), Ok(()));
    assert!(authorize(&claims, Action::Watch, Some(&room("robot-7"))).is_err());
}

#[test]
fn token_mode_without_a_key_refuses_to_start() {
    let o = signal_server(&["--auth", "token", "--bind", "127.0.0.1:0"], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--auth token needs a key"),
        "{}",
        stderr(&o)
    );
    let o = signal_server(
        &["serve", "--bind", "127.0.0.1:0"],
        &[("SIGNAL_SERVER_AUTH", "token")],
    );
    assert!(
        stderr(&o).contains("--auth token needs a key"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_key_is_a_startup_error_even_in_open_mode() {
    let o = signal_server(
        &["--bind", "127.0.0.1:0"],
        &[("SIGNAL_SERVER_AUTH_SECRET", "k1:too-short")],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("key `k1`: the secret is 9 bytes"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    for args in [&["--help"][..], &["token", "create", "--help"][..]] {
        let o = ok(signal_server(
            args,
            &[("SIGNAL_SERVER_AUTH_SECRET", SECRET)],
        ));
        let help = stdout(&o);
        assert!(help.contains("--auth-secret"), "{help}");
        assert!(!help.contains(SECRET), "{args:?} shows the secret");
    }
}

#[test]
fn a_token_expires_on_the_second_its_exp_names() {
    // On the real clock: a 1 s token is refused as expired (not merely
    // unauthorized) as soon as the clock reaches its `exp`.
    let o = ok(signal_server(
        &[
            "token", "create", "--room", "r", "--grant", "watch", "--ttl", "1s",
        ],
        &[("SIGNAL_SERVER_AUTH_SECRET", SECRET)],
    ));
    let out = stdout(&o);
    let token = out.lines().next().unwrap().to_string();
    let ring = KeyRing::from_secret(SECRET.as_bytes()).unwrap();
    let exp = parts(&token).1["exp"].as_u64().unwrap();
    assert!(
        ring.verify_at(&token, exp - 1).is_ok(),
        "valid in its one second"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while signal_server::auth::unix_now() < exp {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = ring.verify(&token).unwrap_err();
    assert_eq!(e, AuthError::Expired);
    assert_eq!((e.code(), e.http_status()), ("token_expired", 401));
}
