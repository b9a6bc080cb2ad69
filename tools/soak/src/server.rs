//! The server under test: the binary as a child process (the test kit's
//! [`ServerProcess`]), watched through /proc/PID, stopped with SIGTERM at
//! the end.

use std::path::Path;

pub use testkit::procfs::{sample as now_sample, sampler, Sample};
pub use testkit::prom::{metric, nonzero_samples as metrics_json};
pub use testkit::ServerProcess as Server;

/// Starts `bin` with `args` on a free loopback port, logging to `log`
/// (`RUST_LOG` from `SOAK_SERVER_LOG`, `info` by default).
pub async fn start(bin: &Path, args: &[String], log: &Path) -> Result<Server, String> {
    testkit::Launch::new(bin)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("SOAK_SERVER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .log_file(log)
        .start()
        .await
}
