//! ACME against a real ACME server: Debian's `pebble`, with its own HTTPS
//! certificate made by the test and `pebble-challtestsrv` answering DNS
//! with 127.0.0.1, so that pebble's TLS-ALPN-01 validation reaches the
//! server under test on its TLS port.

mod common;
mod tls_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{require_tool, WAIT};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use signal_server::config::Config;
use signal_server::tls::{AcmeOptions, ServerTls};
use tokio_util::sync::CancellationToken;

/// How long an order may take: pebble validates at once
/// (`PEBBLE_VA_NOSLEEP`), but rustls-acme polls the order with growing
/// delays (1 s, 2 s, 4 s...).
const ORDER_WAIT: Duration = Duration::from_secs(60);
const DOMAIN: &str = "signal.test";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ss-acme-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A child process killed on drop, its output in a file.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &Path, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Killed {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    Killed(child)
}

/// pebble and its DNS, validating TLS-ALPN-01 on `tls_port`.
struct Pebble {
    _dns: Killed,
    _ca: Killed,
    /// The ACME directory URL.
    directory: String,
    /// The CA of pebble's own HTTPS certificate.
    https_ca: PathBuf,
    management: SocketAddr,
    dir: PathBuf,
}

impl Pebble {
    async fn start(dir: &Path, tls_port: u16) -> Pebble {
        let pebble = require_tool("pebble", "pebble");
        let challtestsrv = require_tool("pebble-challtestsrv", "pebble");
        let https = testkit::tls::ca_and_leaf(&dir.join("pebble-https"), "pebble-https-ca");
        let dns_port = testkit::free_udp_port();
        let dns_mgmt = testkit::free_port();
        let dns = spawn(
            &challtestsrv,
            &[
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
            ],
            &[],
            &dir.join("challtestsrv.log"),
        );
        let acme = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let config = json!({"pebble": {
            "listenAddress": acme.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": https.cert,
            "privateKey": https.key,
            "httpPort": testkit::free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        let ca = spawn(
            &pebble,
            &[
                "-config",
                config_path.to_str().expect("utf-8 path"),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ],
            // No random validation delays, no nonces refused at random.
            &[("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0")],
            &dir.join("pebble.log"),
        );
        let pebble = Pebble {
            _dns: dns,
            _ca: ca,
            directory: format!("https://127.0.0.1:{}/dir", acme.port()),
            https_ca: https.ca,
            management,
            dir: dir.to_path_buf(),
        };
        // Up when its directory answers.
        let client = tls_support::client_config(&[&pebble.https_ca], &[]);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = tls_support::get(acme, "localhost", &client, "/dir").await {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pebble did not start: {}",
                pebble.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pebble
    }

    /// The root pebble issues under (made at its start), as a client
    /// trusts it.
    async fn root(&self) -> PathBuf {
        let client = tls_support::client_config(&[&self.https_ca], &[]);
        let root = tls_support::get(self.management, "localhost", &client, "/roots/0")
            .await
            .expect("pebble's root");
        assert_eq!(root.status, 200, "{}", root.head);
        let path = self.dir.join("pebble-root.pem");
        // The body may be chunked: keep the PEM block.
        let begin = root.body.find("-----BEGIN").expect("a PEM root");
        let end = root
            .body
            .rfind("-----END CERTIFICATE-----")
            .expect("a PEM root")
            + "-----END CERTIFICATE-----".len();
        std::fs::write(&path, &root.body[begin..end]).expect("write root");
        path
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "pebble:\n{}\nchalltestsrv:\n{}",
            read("pebble.log"),
            read("challtestsrv.log")
        )
    }
}

/// A server on `port` getting its certificate for [`DOMAIN`] from
/// `pebble`, its ACME state in `cache`.
async fn acme_server(
    pebble: &Pebble,
    port: u16,
    cache: &Path,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let resolver = signal_server::tls::acme::start(
        AcmeOptions {
            domains: vec![DOMAIN.into()],
            emails: vec!["ops@signal.test".into()],
            cache: Some(cache.to_path_buf()),
            directory: pebble.directory.clone(),
            ca_file: Some(pebble.https_ca.clone()),
        },
        stop.clone(),
    )
    .expect("ACME starts");
    let config = Config {
        tls: Some(ServerTls::new(resolver, true, vec![DOMAIN.into()]).expect("TLS config")),
        ..Config::default()
    };
    let listener = signal_server::server::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind the TLS port");
    let stopped = stop.clone();
    tokio::spawn(signal_server::server::run(listener, config, async move {
        stopped.cancelled().await
    }))
}

/// The certificate served for [`DOMAIN`] on `port` once it verifies
/// under `root`, within [`ORDER_WAIT`].
async fn served_once_valid(port: u16, root: &Path, pebble: &Pebble) -> CertificateDer<'static> {
    let client = tls_support::client_config(&[root], &[b"http/1.1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + ORDER_WAIT;
    loop {
        match tls_support::connect(addr, DOMAIN, &client).await {
            Ok(tls) => return tls_support::served_leaf(&tls),
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no valid certificate for {DOMAIN} within {ORDER_WAIT:?}: {e}\n{}",
                pebble.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_certificate_is_obtained_from_pebble_served_over_wss_and_reused_from_the_cache_on_restart(
) {
    let dir = temp_dir("pebble");
    let port = testkit::free_port();
    let pebble = Pebble::start(&dir, port).await;
    let root = pebble.root().await;
    let cache = dir.join("cache");

    let stop = CancellationToken::new();
    let server = acme_server(&pebble, port, &cache, &stop).await;
    let leaf = served_once_valid(port, &root, &pebble).await;
    // wss:// with it, for a client that trusts pebble's root.
    let client = tls_support::client_config(&[&root], &[b"http/1.1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut host, _) = tls_support::wss(addr, DOMAIN, &client, "/webrtc")
        .await
        .unwrap();
    host.send(r#"{"type":"init"}"#).await;
    assert_eq!(host.recv_type("init").await["role"], "host");
    let health = tls_support::get(addr, DOMAIN, &client, "/healthz")
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    // The cache holds the certificate, and only its owner may read it.
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    assert!(
        cached.iter().any(|n| n.starts_with("cached_cert_")),
        "{cached:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "cache dir mode {mode:o}");
    }
    drop(host);
    stop.cancel();
    let _ = tokio::time::timeout(WAIT, server).await;

    // Restarted on the same cache: the same certificate, no new order.
    let stop = CancellationToken::new();
    let _server = acme_server(&pebble, port, &cache, &stop).await;
    let again = served_once_valid(port, &root, &pebble).await;
    assert_eq!(
        again, leaf,
        "the cached certificate is served after a restart"
    );
    let pem = std::fs::read(
        cache.join(
            cached
                .iter()
                .find(|n| n.starts_with("cached_cert_"))
                .unwrap(),
        ),
    )
    .unwrap();
    let first_in_cache = CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate in the cache")
        .expect("PEM");
    assert_eq!(first_in_cache, leaf);
    stop.cancel();
}
