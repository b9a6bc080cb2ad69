//! Shared helpers for the integration tests: the test kit (`tools/testkit`)
//! under the names the tests use. A real server on port 0 (in this process,
//! or the built binary as a child process) and real WebSocket clients
//! (tokio-tungstenite) that read with timeouts.

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub use testkit::client::WsStream;
pub use testkit::in_process::{
    init_logs, memory_registry, quick_config, room_limits, upgrade_status, TestServer,
};
pub use testkit::process::{Launch, ServerProcess};
pub use testkit::{
    attach, free_port, join, join_by_query, require_python_modules, require_tool, room,
    series_value, Client, ConnectError, Ended, Endpoint, Room, WAIT,
};

/// The server binary this test run built.
pub const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

/// The built binary, to start as a child process ([`Launch::start`]).
pub fn binary() -> Launch {
    Launch::new(BIN)
}
