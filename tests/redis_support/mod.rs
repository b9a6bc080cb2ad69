//! Helpers for the shared-registry tests, from the test kit: a real
//! `redis-server` on a free loopback port (no persistence, a temporary
//! directory), and server instances in this process sharing it. A missing
//! `redis-server` fails the test that needs it, saying so.

#![allow(unused_imports)] // not every test uses every helper

pub use testkit::in_process::{init_logs, quick_options, RedisInstance as Instance};
pub use testkit::redis::{redis_server_binary, RedisServer};
