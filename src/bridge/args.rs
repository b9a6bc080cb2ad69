//! The command line of `signal-server bridge`. New options go here, as a
//! field of [`BridgeArgs`]; checking them is left to the part of the bridge
//! that uses them (URLs in `websocket`, links in `links`, patterns in
//! `policy`), which `Bridge::new` calls.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 20s, 500ms, 1m)"))
}

/// Options of `signal-server bridge`.
#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// The signalling server's WebSocket URL, e.g. wss://signal.example.com/webrtc
    /// (ws:// for a server without TLS).
    #[arg(long, env = "SIGNAL_BRIDGE_SERVER", value_name = "URL")]
    pub server: String,

    /// webrtc_ros's WebSocket URL on the robot.
    #[arg(
        long,
        env = "SIGNAL_BRIDGE_ROBOT",
        value_name = "URL",
        default_value = "ws://127.0.0.1:9090/webrtc"
    )]
    pub robot: String,

    /// Media a viewer may ask for: a glob on the `src` of add_video_track and
    /// add_audio_track and the `dest` of expect_video_track (repeatable). `*`
    /// and `?` stay within one `/` segment, `**` crosses segments:
    /// `ros_image:/camera/*`. Without any, every source is allowed.
    #[arg(long = "allow-src", value_name = "PATTERN")]
    pub allow_src: Vec<String>,

    /// Viewers served at once (each one is a WebRTC peer connection, and an
    /// encoder, on the robot).
    #[arg(long, env = "SIGNAL_BRIDGE_MAX_VIEWERS", default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_viewers: u32,

    /// Keep the room's resume secret and links in this file (written
    /// atomically, mode 0600), so that a restarted bridge gets the same room
    /// and links back within the server's grace period.
    #[arg(long, env = "SIGNAL_BRIDGE_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// A host token for the room to claim, when the server runs with
    /// `--auth token` (`signal-server token create --room NAME --grant host`).
    /// The bridge then hosts the room of that name, the same room after
    /// every reconnection or restart, and --state-file is not needed.
    /// Prefer the variable: a flag shows in `ps`.
    #[arg(
        long,
        env = "SIGNAL_BRIDGE_TOKEN",
        value_name = "JWT",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Print the links as JSON lines on stdout (one per room established,
    /// and one per lost server connection) instead of text.
    #[arg(long)]
    pub json: bool,

    /// The viewer page to link to. Default: the server's own page, from
    /// --server (wss://host/webrtc -> https://host/). When given, the links
    /// also carry `server=` so the page knows where to connect.
    #[arg(long, env = "SIGNAL_BRIDGE_PAGE_URL", value_name = "URL")]
    pub page_url: Option<String>,

    /// How long connecting to the server or to webrtc_ros may take.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "10s")]
    pub connect_timeout: Duration,

    /// First delay before reconnecting to the server; it doubles after each
    /// failure up to --backoff-max, each delay drawn at random below it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "500ms")]
    pub backoff_min: Duration,

    /// Longest delay between reconnection attempts.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "30s")]
    pub backoff_max: Duration,

    /// Interval of the bridge's pings to the server; a server silent for
    /// three intervals counts as gone and the bridge reconnects.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "15s")]
    pub keepalive: Duration,

    /// Serve the TURN credentials of the bridge's own `init` over HTTP on
    /// this address, as webrtc_ros's ICE server provider reads them (set its
    /// `turn_server_creds_uri` to http://ADDRESS/). Off by default; only a
    /// loopback address unless --ice-endpoint-public.
    #[arg(long, env = "SIGNAL_BRIDGE_ICE_ENDPOINT", value_name = "ADDRESS:PORT")]
    pub ice_endpoint: Option<std::net::SocketAddr>,

    /// Allow --ice-endpoint on a non-loopback address: anyone who reaches
    /// it gets credentials for the TURN relay.
    #[arg(long, requires = "ice_endpoint")]
    pub ice_endpoint_public: bool,

    /// On SIGTERM or SIGINT, end the room (`close_room`: its viewers are
    /// told at once, its links stop working, the state file is removed)
    /// instead of leaving it to wait for a restarted bridge to resume it.
    #[arg(long, env = "SIGNAL_BRIDGE_END_ROOM_ON_EXIT")]
    pub end_room_on_exit: bool,
    /// Also trust the CA certificates in this PEM file for wss:// (a server
    /// with a self-made certificate), beside the bundled web PKI roots.
    #[arg(long, env = "SIGNAL_BRIDGE_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

impl BridgeArgs {
    /// Parses bridge options as the command line would (`args[0]` is the
    /// program name), for tests and tools.
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BridgeArgs,
        }
        Wrapper::try_parse_from(args).map(|w| w.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_robot_defaults() {
        let args =
            BridgeArgs::parse_from(["bridge", "--server", "wss://s.example/webrtc"]).unwrap();
        assert_eq!(args.robot, "ws://127.0.0.1:9090/webrtc");
        assert_eq!(args.max_viewers, 4);
        assert!(args.allow_src.is_empty());
        assert_eq!(args.backoff_min, Duration::from_millis(500));
        assert_eq!(args.backoff_max, Duration::from_secs(30));
        let args = BridgeArgs::parse_from([
            "bridge",
            "--server",
            "ws://127.0.0.1:1/webrtc",
            "--allow-src",
            "ros_image:/camera/*",
            "--allow-src",
            "ros_image:/arm/{left,right}",
            "--max-viewers",
            "2",
            "--state-file",
            "/var/lib/bridge/state.json",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            args.allow_src,
            ["ros_image:/camera/*", "ros_image:/arm/{left,right}"]
        );
        assert_eq!(args.max_viewers, 2);
        assert!(args.json);
        assert_eq!(args.ice_endpoint, None);
        let args = BridgeArgs::parse_from([
            "bridge",
            "--server",
            "ws://127.0.0.1:1/webrtc",
            "--ice-endpoint",
            "127.0.0.1:8099",
        ])
        .unwrap();
        assert_eq!(args.ice_endpoint, Some("127.0.0.1:8099".parse().unwrap()));
        assert!(!args.ice_endpoint_public);
        assert!(
            BridgeArgs::parse_from(["bridge", "--server", "ws://x/", "--ice-endpoint-public"])
                .is_err()
        );
        assert!(
            BridgeArgs::parse_from(["bridge", "--server", "ws://x/", "--max-viewers", "0"])
                .is_err()
        );
        assert!(
            BridgeArgs::parse_from(["bridge"]).is_err()
                || std::env::var_os("SIGNAL_BRIDGE_SERVER").is_some()
        );
    }
}
