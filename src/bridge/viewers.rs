//! The room's viewers, as the bridge serves them: who is in the room (from
//! `peer_joined` and `peer_left`), and each viewer's robot connection, opened
//! on its first `configure` after the owner's policy allows it. Messages go
//! from a viewer to its robot connection without the server's `from`, and
//! from the robot back to that viewer alone with `to`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tracing::{debug, info, info_span, warn};

use crate::protocol::{self, Action, ClientMessage, ErrorCode, RelayedError, Role};

use super::host::ServerOutbox;
use super::policy::{Policy, Refusal};
use super::robot::{self, Robot, RobotEvent, RobotLink};
use super::websocket::SendError;

/// Events from robot connections waiting for the bridge.
const ROBOT_EVENTS: usize = 1024;

/// The viewers of the room and their robot connections. Its methods are the
/// only way in; none waits.
pub struct Viewers {
    policy: Policy,
    robot: Robot,
    /// Peers of the room and their roles, from `peer_joined`.
    peers: HashMap<Arc<str>, Role>,
    /// Robot connections, by viewer.
    links: HashMap<Arc<str>, RobotLink>,
    next_link: u64,
    /// Bumped every time the bridge becomes host (at first and after every
    /// reconnection). A viewer's `configure` reaching a link of an earlier
    /// generation opens a new robot connection: the server told the viewer
    /// `host_joined`, and the viewer is starting over.
    generation: u64,
    events: mpsc::Receiver<RobotEvent>,
}

impl Viewers {
    /// No viewers yet; robot connections go to webrtc_ros at `robot_url`.
    pub fn new(
        policy: Policy,
        robot_url: String,
        connector: Connector,
        connect_timeout: Duration,
    ) -> Self {
        let (tx, events) = mpsc::channel(ROBOT_EVENTS);
        Viewers {
            policy,
            robot: Robot::new(robot_url, connector, connect_timeout, tx),
            peers: HashMap::new(),
            links: HashMap::new(),
            next_link: 0,
            generation: 0,
            events,
        }
    }

    /// The owner's policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// webrtc_ros's URL.
    pub fn robot_url(&self) -> &str {
        self.robot.url()
    }

    /// The next event from a robot connection.
    pub async fn next_event(&mut self) -> Option<RobotEvent> {
        self.events.recv().await
    }

    /// The bridge is the host again (a new room, or the same one resumed):
    /// the server lists the peers present anew.
    pub fn new_generation(&mut self) {
        self.generation += 1;
        self.peers.clear();
    }

    /// The room is gone: so are its peers and their robot connections.
    pub fn forget_room(&mut self) {
        self.peers.clear();
        self.close_all();
    }

    /// `peer_joined`.
    pub fn joined(&mut self, peer: &str, role: Role) {
        // Anything unexpected gets the narrowest rights.
        let role = if role == Role::Join {
            Role::Join
        } else {
            Role::Watch
        };
        if self.peers.get(peer) == Some(&role) {
            return; // listed by the resume reply already
        }
        info!(peer = %peer, role = role.as_str(), "peer joined");
        self.peers.insert(Arc::from(peer), role);
    }

    /// `peer_left`: its robot connection closes.
    pub fn left(&mut self, peer: &str) {
        self.peers.remove(peer);
        match self.links.remove(peer) {
            Some(link) => {
                link.close();
                info!(peer = %peer, "peer left: closing its robot connection");
            }
            None => info!(peer = %peer, "peer left"),
        }
    }

    /// A message from viewer `from` (`text` as the server relayed it).
    pub fn on_message(
        &mut self,
        out: &mut ServerOutbox,
        from: &str,
        message: &ClientMessage<'_>,
        text: &str,
    ) {
        let span = info_span!("viewer", peer = %from);
        let _entered = span.enter();
        let role = match self.peers.get(from) {
            Some(role) => *role,
            None => {
                warn!("message from a peer the server has not announced: treating it as a watcher");
                Role::Watch
            }
        };
        match message {
            ClientMessage::Configure(configure) => {
                self.on_configure(out, from, role, &configure.actions, text)
            }
            ClientMessage::Offer(_) | ClientMessage::Answer(_) | ClientMessage::IceCandidate(_) => {
                self.forward(out, from, text)
            }
            ClientMessage::Error(e) => info!(
                code = %e.code,
                "the viewer reported an error: {}",
                e.message.as_deref().unwrap_or("")
            ),
            // For the server only: never relayed.
            ClientMessage::Init(_) | ClientMessage::IceServers | ClientMessage::CloseRoom => {}
        }
    }

    fn on_configure(
        &mut self,
        out: &mut ServerOutbox,
        from: &str,
        role: Role,
        actions: &[Action<'_>],
        text: &str,
    ) {
        if let Err(refusal) = self.policy.check_actions(role, actions) {
            refuse(out, from, &refusal);
            return;
        }
        let current = self
            .links
            .get(from)
            .is_some_and(|l| l.generation == self.generation);
        if current {
            // A renegotiation on the viewer's robot connection.
            self.forward(out, from, text);
            return;
        }
        if let Some(old) = self.links.remove(from) {
            info!("the viewer starts over after the bridge reconnected: new robot connection");
            old.close();
        }
        if let Err(refusal) = self.policy.check_capacity(self.links.len()) {
            refuse(out, from, &refusal);
            return;
        }
        self.next_link += 1;
        let peer: Arc<str> = Arc::from(from);
        let link = self.robot.open(
            Arc::clone(&peer),
            self.next_link,
            self.generation,
            first_configure(text),
        );
        info!(
            link = link.id,
            viewers = self.links.len() + 1,
            "opening a robot connection"
        );
        self.links.insert(peer, link);
    }

    /// Passes a viewer's message to its robot connection.
    fn forward(&mut self, out: &mut ServerOutbox, from: &str, text: &str) {
        let Some(link) = self.links.get(from) else {
            debug!(
                "no robot connection for this viewer (it opens on `configure`): message dropped"
            );
            return;
        };
        match link.send(protocol::without_from(text, from).into_owned()) {
            Ok(()) => {}
            Err(SendError::Full) => {
                warn!("webrtc_ros is not reading this viewer's messages: closing its connection");
                self.links.remove(from);
                out.send(refusal(
                    from,
                    ErrorCode::RobotUnavailable,
                    "the robot's video service is not responding; send configure again to retry",
                ));
            }
            // Its `Closed` event is on the way and tells the viewer.
            Err(SendError::Gone) => debug!("the robot connection has just ended"),
        }
    }

    /// An event from a robot connection; `out` when the bridge hosts the room
    /// on a live server connection.
    pub fn on_robot_event(&mut self, event: RobotEvent, out: Option<&mut ServerOutbox>) {
        match event {
            RobotEvent::Message { peer, link, text } => {
                if !self.links.get(&peer).is_some_and(|l| l.id == link) {
                    return;
                }
                let Some(out) = out else {
                    debug!(%peer, "not connected to the server: a message from webrtc_ros is dropped");
                    return;
                };
                match addressed(&text, &peer) {
                    Ok(text) => out.send(text),
                    Err(e) => warn!(%peer, "dropping a message from webrtc_ros: {e}"),
                }
            }
            RobotEvent::Closed { peer, link, why } => {
                if !self.links.get(&peer).is_some_and(|l| l.id == link) {
                    return;
                }
                self.links.remove(&peer);
                if !why.is_failure() || !self.peers.contains_key(&peer) {
                    return;
                }
                let message = match why {
                    robot::Ended::ConnectFailed(_) => {
                        "the robot's video service (webrtc_ros) cannot be reached right now; send configure again to retry"
                    }
                    _ => "the connection to the robot's video service (webrtc_ros) was lost; send configure again to retry",
                };
                if let Some(out) = out {
                    out.send(refusal(&peer, ErrorCode::RobotUnavailable, message));
                }
            }
        }
    }

    /// Closes the robot connections of viewers no longer in the room.
    pub fn reconcile(&mut self) {
        let gone: Vec<Arc<str>> = self
            .links
            .keys()
            .filter(|p| !self.peers.contains_key(*p))
            .cloned()
            .collect();
        for peer in gone {
            if let Some(link) = self.links.remove(&peer) {
                info!(%peer, "the viewer left while the bridge was away: closing its robot connection");
                link.close();
            }
        }
    }

    /// Closes every robot connection.
    pub fn close_all(&mut self) {
        for (peer, link) in self.links.drain() {
            debug!(%peer, "closing robot connection");
            link.close();
        }
    }

    /// Closes every robot connection and waits up to `timeout` for them to
    /// end; whether they all did.
    pub async fn shut_down(&mut self, timeout: Duration) -> bool {
        self.links.clear();
        self.robot.closed(timeout).await
    }
}

fn refuse(out: &mut ServerOutbox, to: &str, why: &Refusal) {
    info!(code = %why.code, "refused: {}", why.message);
    out.send(refusal(to, why.code, &why.message));
}

/// An error for viewer `to`: `{"type":"error","code":C,"message":M,"to":P}`.
fn refusal(to: &str, code: ErrorCode, message: &str) -> String {
    ClientMessage::Error(RelayedError::to(to, code, message)).to_json()
}

/// A viewer's first `configure` for a new robot connection: without `from`,
/// and without `remove_stream` actions (a new webrtc_ros connection has no
/// streams to remove; a viewer retrying after a failure sends them for the
/// connection that is gone). Unknown fields are kept.
fn first_configure(text: &str) -> String {
    let Ok(mut map) = serde_json::from_str::<serde_json::Map<String, Value>>(text) else {
        return text.to_string();
    };
    map.shift_remove("from");
    if let Some(Value::Array(actions)) = map.get_mut("actions") {
        actions.retain(|a| a.get("type").and_then(Value::as_str) != Some("remove_stream"));
    }
    Value::Object(map).to_string()
}

/// A message from webrtc_ros, addressed to viewer `to`. The text is checked
/// against the protocol first: something the server would refuse (and could
/// only answer with an error that names no peer) is dropped here, as is an
/// `init` (the robot must never steer the bridge's room).
fn addressed(text: &str, to: &str) -> Result<String, String> {
    let message = protocol::parse(text).map_err(|e| e.to_string())?;
    let Some(relay) = message.relay() else {
        return Err("webrtc_ros sent `init`".into());
    };
    protocol::with_to(text, to, &relay).ok_or_else(|| "not a JSON object".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_configure_drops_remove_stream() {
        let text = r#"{"from":"p","type":"configure","actions":[{"type":"remove_stream","id":"old"},{"type":"add_stream","id":"new"},{"type":"add_video_track","stream_id":"new","id":"new/v","src":"ros_image:/c"}]}"#;
        assert_eq!(
            first_configure(text),
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"new"},{"type":"add_video_track","stream_id":"new","id":"new/v","src":"ros_image:/c"}]}"#
        );
    }

    #[test]
    fn robot_messages_go_to_their_viewer_alone() {
        // The rewrite itself is protocol::with_to's (tested there).
        let ice = r#"{"type":"ice_candidate","candidate":"candidate:1","to":"other"}"#;
        let out: Value = serde_json::from_str(&addressed(ice, "AbCdEf12").unwrap()).unwrap();
        assert_eq!(out["to"], "AbCdEf12");
        assert_eq!(out["candidate"], "candidate:1");
    }

    #[test]
    fn robot_messages_the_server_would_refuse_are_dropped() {
        assert!(addressed("not json", "p").is_err());
        assert!(addressed(r#"{"type":"offer"}"#, "p").is_err());
        assert!(addressed(r#"{"type":"mystery"}"#, "p").is_err());
        assert!(addressed(r#"{"type":"init"}"#, "p").is_err());
        assert!(addressed(r#"{"type":"init","resume":"x"}"#, "p").is_err());
        assert!(addressed(
            r#"{"type":"configure","actions":[["add_stream","x"]]}"#,
            "p"
        )
        .is_err());
    }

    #[test]
    fn refusals_name_their_viewer() {
        let e = refusal("p1", ErrorCode::RobotUnavailable, "the robot is \"down\"");
        assert_eq!(
            e,
            r#"{"type":"error","code":"robot_unavailable","message":"the robot is \"down\"","to":"p1"}"#
        );
        assert!(protocol::parse(&e).is_ok());
    }
}
