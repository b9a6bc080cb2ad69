//! The programs a test needs beside the server (redis-server, openssl,
//! coturn's tools, python3 and its packages). Tests never install them
//! (`scripts/install-test-deps.sh` does); a missing one fails the test with
//! the package to install, instead of letting it pass untested.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::WAIT;

/// Where the install script is, for the messages.
const INSTALL: &str = "scripts/install-test-deps.sh";

/// Where `name` is: on `PATH`, or in the system directories Debian installs
/// daemons and tools to (`/usr/sbin` is not on every user's `PATH`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where `name` is, or why not: it comes with `package`, which the install
/// script installs.
pub fn tool(name: &str, package: &str) -> Result<PathBuf, String> {
    find_tool(name).ok_or_else(|| {
        format!(
            "{name} is not installed (not on PATH, nor in /usr/bin or /usr/sbin): \
             install {package}: {INSTALL}"
        )
    })
}

/// Where `name` is; panics, naming `package`, when it is missing.
///
/// ```no_run
/// let uclient = testkit::require_tool("turnutils_uclient", "coturn");
/// ```
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    tool(name, package).unwrap_or_else(|e| panic!("{e}"))
}

/// `python3`, after checking that it can import every one of `modules`;
/// panics, naming the missing ones, otherwise.
pub fn require_python_modules(modules: &[&str]) -> PathBuf {
    let python = require_tool("python3", "python3");
    const CHECK: &str = "import importlib.util, sys\n\
        missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n\
        print(' '.join(missing))\n";
    let out = Command::new(&python)
        .args(["-c", CHECK])
        .args(modules)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let missing = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && missing.is_empty(),
        "python3 cannot import {missing} (status {}): install the Python packages \
         of tests/e2e/requirements.txt: {INSTALL}",
        out.status
    );
    python
}

/// Runs `cmd` to its end (killed if it takes longer than `within`, which
/// fails the test): what it wrote to stdout, then to stderr.
pub async fn output_within(cmd: &mut tokio::process::Command, within: Duration) -> String {
    let out = tokio::time::timeout(within, cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {within:?}"))
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// coturn's `turnutils_peer` (`bin`: a UDP echo server) on `port` of
/// 127.0.0.1, once it echoes (within [`WAIT`]); killed on drop.
pub async fn echo_peer(bin: &Path, port: u16) -> tokio::process::Child {
    let peer = tokio::process::Command::new(bin)
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let probe = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a UDP probe");
    let until = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 16];
    loop {
        probe
            .send_to(b"ping", ("127.0.0.1", port))
            .await
            .expect("send the probe");
        let r = tokio::time::timeout(Duration::from_millis(200), probe.recv_from(&mut buf)).await;
        if matches!(r, Ok(Ok((4, _)))) {
            return peer;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "turnutils_peer does not echo on port {port}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_on_the_path_is_found() {
        assert!(find_tool("sh").is_some());
    }

    #[test]
    #[should_panic(
        expected = "no-such-tool-x is not installed (not on PATH, nor in /usr/bin or /usr/sbin): \
                    install no-such-package: scripts/install-test-deps.sh"
    )]
    fn a_missing_tool_fails_naming_its_package_and_the_install_script() {
        require_tool("no-such-tool-x", "no-such-package");
    }
}
