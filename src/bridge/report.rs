//! What the bridge tells its user: events for a program embedding it, and
//! their rendering on stdout (the links in text, or JSON lines with
//! `--json`). Logs go to stderr through `tracing`, apart from this.

use std::io::Write;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::host::Disconnect;
use super::links::RoomLinks;

/// What the bridge reports as it runs (see [`run_with_events`](super::run_with_events)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// The bridge is the host of a room: at first, and again after every
    /// reconnection (`resumed` tells whether the links stayed the same).
    Room(RoomLinks),
    /// The connection to the server ended; the bridge reconnects.
    Disconnected {
        /// Why.
        reason: Disconnect,
    },
    /// `--ice-endpoint` listens here (reported once, at start).
    IceEndpoint {
        /// The bound address.
        addr: std::net::SocketAddr,
    },
}

/// A task printing the events sent on the returned channel, until it closes.
pub fn printer(json: bool) -> (mpsc::UnboundedSender<BridgeEvent>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut printed: Option<RoomLinks> = None;
        while let Some(event) = rx.recv().await {
            if let Some(text) = render(&event, json, &mut printed) {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
    });
    (tx, task)
}

/// What is printed for an event: JSON lines, or the links in text when they
/// differ from the last ones printed.
fn render(event: &BridgeEvent, json: bool, printed: &mut Option<RoomLinks>) -> Option<String> {
    let text = match (event, json) {
        (BridgeEvent::Room(links), true) => {
            let mut v = serde_json::json!({"event": "room"});
            if let (Some(obj), Ok(serde_json::Value::Object(l))) =
                (v.as_object_mut(), serde_json::to_value(links))
            {
                obj.extend(l);
            }
            format!("{v}\n")
        }
        (BridgeEvent::Disconnected { reason }, true) => {
            format!(
                "{}\n",
                serde_json::json!({"event": "disconnected", "reason": reason.to_string()})
            )
        }
        (BridgeEvent::Room(links), false) if links.room.is_some() => {
            let room = links.room.as_deref().unwrap_or_default();
            if printed.as_ref().is_some_and(|p| p.room == links.room) {
                return None;
            }
            *printed = Some(links.clone());
            format!(
                "Robot room {room} ready (token mode). Viewers need a watch token for it:\n  \
                 signal-server token create --room {room} --grant watch --ttl 2h --sub NAME\n"
            )
        }
        (BridgeEvent::Room(links), false) => {
            let same = printed
                .as_ref()
                .is_some_and(|p| p.watch == links.watch && p.join == links.join);
            if same {
                return None;
            }
            *printed = Some(links.clone());
            format!(
                "Robot room ready. Share these links:\n  watch (view only): {}\n  join (full peer):  {}\n",
                links.watch_url, links.join_url
            )
        }
        (BridgeEvent::Disconnected { .. }, false) => return None,
        (BridgeEvent::IceEndpoint { addr }, true) => format!(
            "{}\n",
            serde_json::json!({"event": "ice_endpoint", "url": format!("http://{addr}/")})
        ),
        (BridgeEvent::IceEndpoint { addr }, false) => format!(
            "TURN credentials for webrtc_ros: set turn_server_creds_uri to http://{addr}/\n"
        ),
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::super::links::Links;
    use super::*;

    #[test]
    fn prints_text_once_per_room_and_json_always() {
        let links = Links::new("ws://127.0.0.1:9/webrtc", None).unwrap().room(
            "54ICxFae_Ip7TJE2",
            "634w44TblL5Dbd9a",
            false,
        );
        let event = BridgeEvent::Room(links.clone());
        let mut printed = None;
        let text = render(&event, false, &mut printed).unwrap();
        assert!(
            text.contains("http://127.0.0.1:9/?watch=634w44TblL5Dbd9a"),
            "{text}"
        );
        assert!(
            text.contains("http://127.0.0.1:9/?join=54ICxFae_Ip7TJE2"),
            "{text}"
        );
        let resumed = BridgeEvent::Room(RoomLinks {
            resumed: true,
            ..links.clone()
        });
        assert_eq!(render(&resumed, false, &mut printed), None);
        let lost = BridgeEvent::Disconnected {
            reason: Disconnect::Closed,
        };
        assert_eq!(render(&lost, false, &mut printed), None);
        let line = render(&resumed, true, &mut printed).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "room");
        assert_eq!(v["watch_url"], "http://127.0.0.1:9/?watch=634w44TblL5Dbd9a");
        assert_eq!(v["resumed"], true);
        let line = render(&lost, true, &mut printed).unwrap();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "disconnected");
        assert_eq!(v["reason"], "connection closed");
    }
}
