//! The built binary as a child process, as users run it: its arguments and
//! environment, on a loopback port, its log (stderr) in a file, its memory,
//! descriptors and CPU from `/proc`, stopped by a signal.

use std::ffi::{OsStr, OsString};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{self, Response};
use crate::procfs::{self, RssWatch, Sample};
use crate::{free_port, prom, Client, Endpoint, WAIT};

/// The signals tests send.
pub use libc::{SIGINT, SIGKILL, SIGTERM};

/// How a server is started: build one with [`Launch::new`], then
/// [`Launch::start`].
///
/// The child gets `--bind 127.0.0.1:PORT` on a free port (or the one of
/// [`Launch::port`]) and is ready when `GET /healthz` answers 200. Its
/// environment is the caller's without `PORT`, `RUST_LOG`, `REDIS_URL` and
/// every `SIGNAL_SERVER_*` variable, so that none leaks into a run; set
/// them with [`Launch::env`].
#[derive(Debug, Clone)]
pub struct Launch {
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    port: Option<u16>,
    nofile: Option<u32>,
    log: Option<PathBuf>,
    name: String,
}

impl Launch {
    pub fn new(bin: impl AsRef<Path>) -> Launch {
        Launch {
            bin: bin.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            port: None,
            nofile: None,
            log: None,
            name: "server".into(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref().to_os_string();
        self.env.push((key.as_ref().to_os_string(), Some(value)));
        self
    }

    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Binds this port (a restart on the same port); one attempt only.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Runs under this open-files limit (`ulimit -n`, then `exec`: the pid
    /// is the server's).
    pub fn nofile(mut self, limit: u32) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Logs to `path` (emptied at the start, kept). Without it the log goes
    /// to a temporary file, removed on drop unless the test is failing.
    pub fn log_file(mut self, path: impl AsRef<Path>) -> Self {
        self.log = Some(path.as_ref().to_path_buf());
        self
    }

    /// Names the temporary log file.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    fn command(&self, addr: SocketAddr) -> Command {
        let mut cmd = match self.nofile {
            None => Command::new(&self.bin),
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(&self.bin);
                c
            }
        };
        cmd.arg("--bind").arg(addr.to_string()).args(&self.args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SIGNAL_SERVER_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("PORT")
            .env_remove("RUST_LOG")
            .env_remove("REDIS_URL");
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }

    /// Starts the server and waits until it is ready; retries on another
    /// port when the one it was given was taken meanwhile.
    pub async fn start(self) -> Result<ServerProcess, String> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let (log, keep_log) = match &self.log {
            Some(p) => (p.clone(), true),
            None => {
                let n = SERIAL.fetch_add(1, Ordering::Relaxed);
                let file = format!("testkit-{}-{n}-{}.log", std::process::id(), self.name);
                (std::env::temp_dir().join(file), false)
            }
        };
        // A fresh log: what a run reads back (a token, a panic) is its own.
        std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let attempts = if self.port.is_some() { 1 } else { 5 };
        let mut last = String::new();
        for _ in 0..attempts {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port.unwrap_or_else(free_port)));
            let stderr = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| format!("{}: {e}", log.display()))?;
            let child = self
                .command(addr)
                .stderr(stderr)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
            let mut server = ServerProcess {
                addr,
                pid: child.id(),
                child,
                log: log.clone(),
                keep_log: true,
            };
            match server.wait_ready().await {
                Ok(()) => {
                    server.keep_log = keep_log;
                    return Ok(server);
                }
                Err(e) => last = e,
            }
        }
        Err(format!(
            "{last}; log {}:\n{}",
            log.display(),
            tail(&log, 30)
        ))
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The server binary running as a child process; killed on drop.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
    log: PathBuf,
    keep_log: bool,
}

impl Endpoint for ServerProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl ServerProcess {
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + 2 * WAIT;
        while Instant::now() < deadline {
            if let Ok(Response { status: 200, .. }) = http::get(self.addr, "/healthz").await {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill9();
        Err(format!("the server on {} was not ready in time", self.addr))
    }

    /// `ws://ADDR` followed by `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        self.url_to(path_and_query)
    }

    /// A client at `path_and_query`.
    pub async fn connect_to(&self, path_and_query: &str) -> Client {
        Client::connect(&self.url(path_and_query)).await
    }

    /// A client on `/webrtc`.
    pub async fn connect(&self) -> Client {
        self.connect_to("/webrtc").await
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a line of the log gives `find` something (`what` names
    /// it in the failure).
    pub async fn wait_log<T>(&self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            if let Some(v) = text.lines().find_map(&find) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the server's log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET path` (panics when there is no answer).
    pub async fn get(&self, path: &str) -> Response {
        http::get(self.addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.head);
        r.body
    }

    /// The value of one series in `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        prom::metric(&self.metrics().await, series)
    }

    /// `/healthz`, which must answer 200.
    pub async fn health(&self) -> Value {
        let r = self.get("/healthz").await;
        assert_eq!(r.status, 200, "GET /healthz: {}", r.body);
        r.json().unwrap_or_else(|e| panic!("/healthz: {e}"))
    }

    /// Waits until `/healthz` reports `connections` and `rooms`.
    pub async fn wait_health(&self, connections: i64, rooms: i64) {
        let deadline = Instant::now() + WAIT;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(r) = http::get(self.addr, "/healthz").await {
                last = r.json().unwrap_or(Value::Null);
                if last["connections"] == connections && last["rooms"] == rooms {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("/healthz never reached connections={connections} rooms={rooms}; last {last}");
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid).expect("VmRSS of the server")
    }

    /// Open descriptors.
    pub fn fds(&self) -> u64 {
        procfs::open_fds(self.pid).expect("/proc/PID/fd of the server")
    }

    /// CPU time (user + system) so far.
    pub fn cpu_time(&self) -> Duration {
        procfs::cpu_time(self.pid).expect("/proc/PID/stat of the server")
    }

    /// Its resident memory from now on, sampled every 10 ms: (at the
    /// start, peak) when stopped.
    pub fn watch_rss(&self) -> RssWatch {
        RssWatch::start(self.pid, Duration::from_millis(10))
    }

    /// All three, timed from `started`.
    pub fn sample(&self, started: Instant) -> Option<Sample> {
        procfs::sample(self.pid, started)
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGINT`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.pid, signal);
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("server exited: {status}")),
            Err(e) => Err(format!("cannot wait for the server: {e}")),
        }
    }

    /// Its exit code once it exits within `within`; `Err` if it does not,
    /// or dies of a signal.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<i32, String> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return exit_code(status),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Ok(None) => return Err(format!("still running after {within:?}")),
                Err(e) => return Err(format!("cannot wait for the server: {e}")),
            }
        }
    }

    /// SIGTERM, then the exit code within `within` (killed if it has not
    /// exited by then).
    pub async fn terminate(&mut self, within: Duration) -> Result<i32, String> {
        self.signal(libc::SIGTERM);
        let r = self.wait_exit(within).await;
        if r.is_err() {
            self.kill9();
        }
        r
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        self.kill9();
        if std::thread::panicking() {
            eprintln!("server log kept: {}", self.log.display());
        } else if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The exit code, or why there is none.
pub fn exit_code(status: ExitStatus) -> Result<i32, String> {
    status
        .code()
        .ok_or_else(|| format!("exited without a code: {status}"))
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Waits (blocking) for `child` to exit within `within`.
pub fn wait_exit_blocking(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `reader` (a child's stdout or stderr), read on a thread of
/// their own, as they come.
pub fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
