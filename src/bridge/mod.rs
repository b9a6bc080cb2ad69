//! `signal-server bridge`: connects a robot's webrtc_ros to a room.
//!
//! webrtc_ros only *accepts* WebSocket connections, one WebRTC peer
//! connection per WebSocket connection, and robots sit behind NAT. The bridge
//! runs on the robot, connects *out* to the signalling server, becomes the
//! host of a room, and gives every viewer a WebSocket connection of its own to
//! webrtc_ros:
//!
//! ```text
//!  browser A ─┐                        ┌─ ws #A ─┐
//!  browser B ─┼─ signal-server ══ bridge ┼─ ws #B ─┼─ webrtc_ros (robot)
//!  browser C ─┘   (room host: bridge)    └─ ws #C ─┘
//! ```
//!
//! - A viewer's first `configure` opens its robot connection; from then on its
//!   messages go to that connection without the server's `from`, and the
//!   robot's replies go back with `to` set to that viewer. `peer_left` closes
//!   the connection, so webrtc_ros tears that peer connection down.
//! - The robot owner's policy ([`policy`]) is checked before anything reaches
//!   webrtc_ros; a refusal is an `error` for that viewer alone.
//! - The server connection is kept up with pings, re-established with
//!   exponential backoff and full jitter, and the room is resumed with its
//!   `resume` secret, kept in the state file ([`state`]) across restarts.
//!   Robot connections outlive a server reconnection (media flows directly
//!   between the robot and the browsers); a viewer that sends `configure`
//!   again after the reconnection gets a fresh robot connection.
//! - A robot connection that cannot be opened or drops earns its viewer a
//!   `robot_unavailable` error; the viewer's next `configure` retries.
//!
//! One concern per file: [`BridgeArgs`] (`args`), the page links (`links`),
//! reconnection delays (`backoff`), what the user is told (`report`), the
//! WebSocket client both sides use (`websocket`: connect, TLS, the writer
//! task), the server connection and its lifecycle (`host`), the hosted room
//! and its state file (`room`, [`state`]), the viewers and their robot
//! connections (`viewers`, `robot`), the owner's [`policy`], and the TURN
//! credentials kept fresh for webrtc_ros (`ice`) and served to it
//! (`ice_endpoint`, `--ice-endpoint`).

mod args;
mod backoff;
mod error;
mod host;
mod ice;
mod ice_endpoint;
mod links;
pub mod policy;
mod probe;
mod report;
mod robot;
mod room;
pub mod state;
mod viewers;
mod websocket;

use std::future::Future;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use args::BridgeArgs;
pub use error::{BridgeError, UrlError};
pub use host::Disconnect;
pub use links::RoomLinks;
pub use report::BridgeEvent;

/// Runs the bridge until `shutdown` completes, printing the room's links on
/// stdout (text, or JSON lines with `--json`).
pub async fn run(
    args: BridgeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BridgeError> {
    let (events, printer) = report::printer(args.json);
    let result = run_with_events(args, shutdown, events).await;
    let _ = printer.await;
    result
}

/// How long the look at `--robot` at start may take (a robot that does not
/// answer by then is not a signal-server).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the bridge until `shutdown` completes, reporting what happens on
/// `events` (nothing is printed). Returns an error only for bad options: a
/// server or robot that cannot be reached is retried for as long as it takes.
pub async fn run_with_events(
    args: BridgeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    events: mpsc::UnboundedSender<BridgeEvent>,
) -> Result<(), BridgeError> {
    let robot = args.robot.clone();
    let probe_timeout = args.connect_timeout.min(PROBE_TIMEOUT);
    let bridge = host::Bridge::new(args, events)?;
    if let Some(evidence) = probe::signal_server_at(&robot, bridge.connector(), probe_timeout).await
    {
        return Err(BridgeError::RobotIsSignalServer {
            url: robot,
            evidence,
        });
    }
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let result = bridge.run(stop).await;
    watcher.abort();
    result
}
