//! The admin API's flags (flattened into `ServeArgs`).

use clap::Args;

use super::key::{parse_admin_key, AdminKey};

/// `--admin-key`.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Turns on the admin API (`/api/v1/`, docs/openapi.json) and the fleet
    /// page (`/fleet`) under this bearer key (at least 16 bytes, e.g. from
    /// `openssl rand -base64 24`). Without it every `/api/v1/` path answers
    /// 404. Prefer the environment variable: a flag shows in `ps`.
    #[arg(long = "admin-key", env = "SIGNAL_SERVER_ADMIN_KEY", value_parser = parse_admin_key, hide_env_values = true)]
    pub admin_key: Option<AdminKey>,
}
