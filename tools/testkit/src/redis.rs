//! A `redis-server` of a test's (or a benchmark's) own: a free loopback
//! port, no persistence, a temporary directory; killed and removed on drop.
//! A missing `redis-server` fails the test that needs it, saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::{free_port, require_tool, WAIT};

/// A `redis-server` child process on a loopback port.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    bin: PathBuf,
    /// TLS only (a self-signed certificate in `dir`).
    tls: bool,
}

/// `redis-server`, wherever it is (panics when it is not installed).
pub fn redis_server_binary() -> PathBuf {
    require_tool("redis-server", "redis-server")
}

impl RedisServer {
    /// A Redis on a free port.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// A Redis on `port`.
    pub async fn start_on(port: u16) -> Self {
        Self::launch(&redis_server_binary(), port, false)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A Redis that speaks only TLS, with a self-signed certificate (as
    /// Heroku's does). Makes the certificate with `openssl`.
    pub async fn start_tls() -> Self {
        Self::launch(&redis_server_binary(), free_port(), true)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The binary `bin` on `port`, plain or TLS only; waits until it
    /// answers.
    pub async fn launch(bin: &Path, port: u16, tls: bool) -> Result<Self, String> {
        let kind = if tls { "redis-tls" } else { "redis" };
        let dir =
            std::env::temp_dir().join(format!("testkit-{kind}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if tls {
            crate::tls::self_signed(&dir, "redis-self-signed");
        }
        let mut r = RedisServer {
            port,
            dir,
            child: None,
            bin: bin.to_path_buf(),
            tls,
        };
        r.spawn().await?;
        Ok(r)
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for TLS is the caller's to
    /// write: the URL's options differ by test).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.bin);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("key.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while !self.ping().await {
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("redis-server did not start on port {}", self.port));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn ping(&self) -> bool {
        if self.tls {
            // Listening is all that can be checked without a TLS client.
            return TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
        }
        matches!(self.try_command(&["PING"]).await, Ok(r) if r == "+PONG\r\n")
    }

    /// Kills the server (SIGKILL: no save, every key lost).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// One command over RESP (no client library): the raw reply, read to
    /// its end.
    pub async fn try_command(&self, args: &[&str]) -> Result<String, String> {
        let exchange = async {
            let mut s = TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| format!("connect redis: {e}"))?;
            let mut req = format!("*{}\r\n", args.len());
            for a in args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while resp_len(&out).is_none() {
                let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err(format!("redis closed the connection after {out:?}"));
                }
                out.extend_from_slice(&buf[..n]);
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        timeout(WAIT, exchange)
            .await
            .map_err(|_| format!("no reply to {args:?} within {WAIT:?}"))?
    }

    /// [`RedisServer::try_command`], panicking on failure.
    pub async fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `INFO all` as numbers (a `cmdstat_NAME` field is its call count).
    pub async fn info(&self) -> BTreeMap<String, f64> {
        let raw = self.command(&["INFO", "all"]).await;
        let mut out = BTreeMap::new();
        for line in raw.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if let Ok(n) = v.trim().parse::<f64>() {
                out.insert(k.to_string(), n);
            } else if k.starts_with("cmdstat_") {
                // calls=N,usec=...
                if let Some(calls) = v
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|c| c.parse::<f64>().ok())
                {
                    out.insert(k.to_string(), calls);
                }
            }
        }
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The length of the first complete RESP2 value in `raw`, if it is all
/// there.
fn resp_len(raw: &[u8]) -> Option<usize> {
    let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&raw[1..line_end]).ok()?;
    let after = line_end + 2;
    match raw.first()? {
        b'+' | b'-' | b':' => Some(after),
        b'$' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (raw.len() >= end).then_some(end)
        }
        b'*' => {
            let n: i64 = line.parse().ok()?;
            let mut at = after;
            for _ in 0..n.max(0) {
                at += resp_len(&raw[at..])?;
            }
            Some(at)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::resp_len;

    #[test]
    fn a_reply_is_complete_only_when_all_of_it_has_arrived() {
        assert_eq!(resp_len(b"+PONG\r\n"), Some(7));
        assert_eq!(resp_len(b"+PON"), None);
        assert_eq!(resp_len(b":0\r\n"), Some(4));
        assert_eq!(resp_len(b"$5\r\nhel"), None);
        assert_eq!(resp_len(b"$5\r\nhello\r\n"), Some(11));
        assert_eq!(resp_len(b"$-1\r\n"), Some(5));
        assert_eq!(resp_len(b"*0\r\n"), Some(4));
        assert_eq!(resp_len(b"*2\r\n$1\r\na\r\n"), None);
        assert_eq!(resp_len(b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"), Some(19));
    }
}
