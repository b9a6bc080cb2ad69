//! Protocol adapters: how each server is connected to, how a room is set up,
//! and what a relayed ICE- or SDP-sized message looks like on its wire.
//!
//! Every data message carries a marker `~VIEWER~SEQ~T_NS~` inside its
//! candidate or SDP string, so the generator finds who sent it and when it was
//! meant to be sent without parsing JSON on the hot path.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Time allowed for one set-up step.
pub const STEP: Duration = Duration::from_secs(15);

/// Which server's protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// signal-server (docs/PROTOCOL.md).
    Ours,
    /// benches/python_relay.py: the same protocol, in Python `websockets`.
    Python,
    /// matchbox_server 0.15.
    Matchbox,
    /// The PeerJS server (`peer` on npm).
    Peerjs,
    /// minimal-relay: the two connections of a path, frames forwarded as is.
    Minimal,
}

/// ICE-sized or SDP-sized message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ICE candidate.
    Ice,
    /// An offer or answer.
    Sdp,
}

type BoxError = Box<dyn std::error::Error>;

/// Where and how to connect.
pub struct Target {
    pub proto: Proto,
    pub server: SocketAddr,
    sources: Vec<Ipv4Addr>,
    next: Cell<usize>,
    /// Makes room names and PeerJS ids unique to this process.
    pub nonce: String,
}

impl Target {
    pub fn new(proto: Proto, server: SocketAddr, sources: usize) -> Target {
        let sources = (0..sources.max(1))
            .map(|i| Ipv4Addr::new(127, 0, (2 + i / 250) as u8, 2 + (i % 250) as u8))
            .collect();
        let nonce = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        Target {
            proto,
            server,
            sources,
            next: Cell::new(0),
            nonce,
        }
    }

    /// Opens a WebSocket to `path` from the next source address.
    pub async fn connect(&self, path: &str) -> Result<Ws, BoxError> {
        let i = self.next.get();
        self.next.set(i + 1);
        let source = self.sources[i % self.sources.len()];
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let tcp = timeout(STEP, socket.connect(self.server)).await??;
        tcp.set_nodelay(true)?;
        let url = format!("ws://{}{}", self.server, path);
        let request = url.into_client_request()?;
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(64 * 1024)
            .max_write_buffer_size(usize::MAX);
        let (ws, _) = timeout(
            STEP,
            tokio_tungstenite::client_async_with_config(request, tcp, Some(config)),
        )
        .await??;
        Ok(ws)
    }

    /// Connects the host of room `room` and reads its id.
    pub async fn host(&self, room: usize) -> Result<(Ws, Joined), BoxError> {
        match self.proto {
            Proto::Ours | Proto::Python => {
                let mut ws = self.connect("/webrtc").await?;
                send(&mut ws, r#"{"type":"init"}"#.to_string()).await?;
                let reply = read_json_where(&mut ws, |v| v["type"] == "init").await?;
                let id = str_field(&reply, "peer")?;
                let token = str_field(&reply, "join")?;
                Ok((ws, Joined { id, token }))
            }
            Proto::Matchbox => {
                let mut ws = self.connect(&format!("/b{}r{room}", self.nonce)).await?;
                let reply = read_json_where(&mut ws, |v| v.get("IdAssigned").is_some()).await?;
                let id = str_field(&reply, "IdAssigned")?;
                Ok((
                    ws,
                    Joined {
                        id,
                        token: String::new(),
                    },
                ))
            }
            Proto::Peerjs => {
                let id = format!("b{}r{room}h", self.nonce);
                let ws = self.peerjs_open(&id).await?;
                Ok((
                    ws,
                    Joined {
                        id,
                        token: String::new(),
                    },
                ))
            }
            Proto::Minimal => {
                let mut ws = self.connect(&format!("/b{}r{room}", self.nonce)).await?;
                read_json_where(&mut ws, |v| v.get("ready").is_some()).await?;
                Ok((
                    ws,
                    Joined {
                        id: "h".into(),
                        token: String::new(),
                    },
                ))
            }
        }
    }

    /// Connects viewer `v` of room `room`, given what its host's set-up
    /// returned, and reads its id.
    pub async fn viewer(
        &self,
        room: usize,
        v: usize,
        host: &Joined,
    ) -> Result<(Ws, String), BoxError> {
        match self.proto {
            Proto::Ours | Proto::Python => {
                let mut ws = self.connect("/webrtc").await?;
                send(
                    &mut ws,
                    format!(r#"{{"type":"init","join":"{}"}}"#, host.token),
                )
                .await?;
                let reply = read_json_where(&mut ws, |v| v["type"] == "init").await?;
                Ok((ws, str_field(&reply, "peer")?))
            }
            Proto::Matchbox => {
                let mut ws = self.connect(&format!("/b{}r{room}", self.nonce)).await?;
                let reply = read_json_where(&mut ws, |v| v.get("IdAssigned").is_some()).await?;
                Ok((ws, str_field(&reply, "IdAssigned")?))
            }
            Proto::Peerjs => {
                let id = format!("b{}r{room}v{v}", self.nonce);
                Ok((self.peerjs_open(&id).await?, id))
            }
            Proto::Minimal => {
                let mut ws = self.connect(&format!("/b{}r{room}", self.nonce)).await?;
                read_json_where(&mut ws, |v| v.get("ready").is_some()).await?;
                Ok((ws, format!("v{v}")))
            }
        }
    }

    /// For the host, after `viewers` have entered: reads the join events its
    /// protocol sends.
    pub async fn host_sees_viewers(&self, host: &mut Ws, viewers: usize) -> Result<(), BoxError> {
        let wanted: fn(&Value) -> bool = match self.proto {
            Proto::Ours | Proto::Python => |v| v["type"] == "peer_joined",
            Proto::Matchbox => |v| v.get("NewPeer").is_some(),
            Proto::Peerjs | Proto::Minimal => return Ok(()),
        };
        for _ in 0..viewers {
            read_json_where(host, wanted).await?;
        }
        Ok(())
    }

    async fn peerjs_open(&self, id: &str) -> Result<Ws, BoxError> {
        let mut ws = self
            .connect(&format!("/peerjs?key=peerjs&id={id}&token=t{}", self.nonce))
            .await?;
        read_json_where(&mut ws, |v| v["type"] == "OPEN").await?;
        Ok(ws)
    }

    /// The frame templates for a room whose viewers have these ids.
    pub fn templates(
        &self,
        host_id: &str,
        viewer_ids: &[String],
        kind: Kind,
        size: usize,
    ) -> Templates {
        let (v2h, suffix) = self.prefix(host_id, kind, false);
        let h2v = viewer_ids
            .iter()
            .map(|id| self.prefix(id, kind, true).0)
            .collect();
        Templates {
            v2h,
            h2v,
            suffix,
            size,
        }
    }

    /// The text before the marker, and after the padding, of a message to
    /// `to`; `from_host` marks the host's messages (ours adds `to` only there).
    fn prefix(&self, to: &str, kind: Kind, from_host: bool) -> (String, &'static str) {
        match (self.proto, kind) {
            (Proto::Ours | Proto::Python | Proto::Minimal, Kind::Ice) => {
                let to = if from_host && self.proto != Proto::Minimal {
                    format!(r#""to":"{to}","#)
                } else {
                    String::new()
                };
                (
                    format!(
                        r#"{{"type":"ice_candidate",{to}"sdp_mid":"0","sdp_mline_index":0,"candidate":"candidate:"#
                    ),
                    "\"}",
                )
            }
            (Proto::Ours | Proto::Python | Proto::Minimal, Kind::Sdp) => {
                let (ty, to) = if from_host && self.proto != Proto::Minimal {
                    ("offer", format!(r#""to":"{to}","#))
                } else if from_host {
                    ("offer", String::new())
                } else {
                    ("answer", String::new())
                };
                (
                    format!(r#"{{"type":"{ty}",{to}"sdp":"v=0\r\no=- "#),
                    "\\r\\n\"}",
                )
            }
            (Proto::Matchbox, Kind::Ice) => (
                format!(
                    r#"{{"Signal":{{"receiver":"{to}","data":{{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candidate":"candidate:"#
                ),
                "\"}}}",
            ),
            (Proto::Matchbox, Kind::Sdp) => {
                let ty = if from_host { "offer" } else { "answer" };
                (
                    format!(
                        r#"{{"Signal":{{"receiver":"{to}","data":{{"type":"{ty}","sdp":"v=0\r\no=- "#
                    ),
                    "\\r\\n\"}}}",
                )
            }
            (Proto::Peerjs, Kind::Ice) => (
                format!(
                    r#"{{"type":"CANDIDATE","dst":"{to}","payload":{{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:"#
                ),
                "\"}}",
            ),
            (Proto::Peerjs, Kind::Sdp) => {
                let ty = if from_host { "OFFER" } else { "ANSWER" };
                (
                    format!(r#"{{"type":"{ty}","dst":"{to}","payload":{{"sdp":"v=0\r\no=- "#),
                    "\\r\\n\"}}",
                )
            }
        }
    }
}

/// What a host learnt when it entered.
pub struct Joined {
    /// Its peer id.
    pub id: String,
    /// What viewers enter with (ours: the join token).
    pub token: String,
}

/// The frames of one room.
pub struct Templates {
    v2h: String,
    h2v: Vec<String>,
    suffix: &'static str,
    size: usize,
}

impl Templates {
    /// A message from viewer `v` to the host.
    pub fn to_host(&self, v: usize, seq: u64, t: u64) -> Message {
        self.frame(&self.v2h, v, seq, t)
    }

    /// A message from the host to viewer `v`.
    pub fn to_viewer(&self, v: usize, seq: u64, t: u64) -> Message {
        self.frame(&self.h2v[v], v, seq, t)
    }

    fn frame(&self, prefix: &str, v: usize, seq: u64, t: u64) -> Message {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(self.size.max(64) + 16);
        s.push_str(prefix);
        let _ = write!(s, "~{v}~{seq}~{t}~");
        let fill = self.size.saturating_sub(s.len() + self.suffix.len());
        (0..fill).for_each(|_| s.push('a'));
        s.push_str(self.suffix);
        Message::text(s)
    }
}

/// The marker of a data message: (viewer, seq, intended send time in ns).
pub fn marker(text: &str) -> Option<(usize, u64, u64)> {
    let start = text.find('~')?;
    let mut it = text[start + 1..].splitn(4, '~');
    let v = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    it.next()?;
    Some((v, seq, t))
}

/// Sends one text frame and flushes.
pub async fn send(ws: &mut Ws, text: String) -> Result<(), BoxError> {
    timeout(STEP, ws.send(Message::text(text))).await??;
    Ok(())
}

/// Sends one frame and flushes.
pub async fn send_msg(ws: &mut Ws, m: Message) -> Result<(), BoxError> {
    timeout(STEP, ws.send(m)).await??;
    Ok(())
}

/// Reads until a text frame whose JSON satisfies `want`.
pub async fn read_json_where(
    ws: &mut Ws,
    want: impl Fn(&Value) -> bool,
) -> Result<Value, BoxError> {
    loop {
        let text = read_text(ws).await?;
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if want(&v) {
                return Ok(v);
            }
            if v["type"] == "error" {
                return Err(format!("server error: {text}").into());
            }
        }
    }
}

/// Reads until a data message (one with a marker); returns its marker.
pub async fn read_data(ws: &mut Ws) -> Result<(usize, u64, u64), BoxError> {
    loop {
        let text = read_text(ws).await?;
        if let Some(m) = marker(&text) {
            return Ok(m);
        }
        if text.contains("\"error\"") || text.contains("\"ERROR\"") {
            return Err(format!("server error: {text}").into());
        }
    }
}

async fn read_text(ws: &mut Ws) -> Result<String, BoxError> {
    loop {
        match timeout(STEP, ws.next()).await? {
            None => return Err("connection closed".into()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
            Some(Ok(Message::Close(c))) => return Err(format!("closed by server: {c:?}").into()),
            Some(Ok(_)) => {}
        }
    }
}

fn str_field(v: &Value, name: &str) -> Result<String, BoxError> {
    v[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no string `{name}` in {v}").into())
}

/// A room: its host and viewers, connected, with ids.
pub struct Room {
    pub host: Ws,
    pub host_id: String,
    pub viewers: Vec<Ws>,
    pub viewer_ids: Vec<String>,
}

/// Sets up room `room` with `k` viewers; with `exchange`, also runs the
/// offer/answer/ICE exchange (4 KB offer and answer, two 200 B candidates each
/// way) between the host and each viewer.
pub async fn setup_room(
    t: &Target,
    room: usize,
    k: usize,
    exchange: bool,
) -> Result<Room, BoxError> {
    let (mut host, joined) = t.host(room).await?;
    let mut viewers = Vec::with_capacity(k);
    let mut viewer_ids = Vec::with_capacity(k);
    for v in 0..k {
        let (ws, id) = t.viewer(room, v, &joined).await?;
        viewers.push(ws);
        viewer_ids.push(id);
    }
    t.host_sees_viewers(&mut host, k).await?;
    if exchange {
        let sdp = t.templates(&joined.id, &viewer_ids, Kind::Sdp, 4096);
        let ice = t.templates(&joined.id, &viewer_ids, Kind::Ice, 200);
        for (v, ws) in viewers.iter_mut().enumerate() {
            send_msg(&mut host, sdp.to_viewer(v, 0, 0)).await?;
            read_data(ws).await?;
            send_msg(ws, sdp.to_host(v, 0, 0)).await?;
            read_data(&mut host).await?;
            for s in 1..=2 {
                send_msg(&mut host, ice.to_viewer(v, s, 0)).await?;
                send_msg(ws, ice.to_host(v, s, 0)).await?;
            }
            for _ in 0..2 {
                read_data(ws).await?;
                read_data(&mut host).await?;
            }
        }
    }
    Ok(Room {
        host,
        host_id: joined.id,
        viewers,
        viewer_ids,
    })
}

/// The set-up the rate mode counts: host enters, one viewer enters, and the
/// first relayed message (the host's offer) reaches the viewer.
pub async fn setup_first_relay(t: &Target, room: usize) -> Result<(Ws, Ws), BoxError> {
    let (mut host, joined) = t.host(room).await?;
    let (mut viewer, id) = t.viewer(room, 0, &joined).await?;
    t.host_sees_viewers(&mut host, 1).await?;
    let sdp = t.templates(&joined.id, &[id], Kind::Sdp, 4096);
    send_msg(&mut host, sdp.to_viewer(0, 0, 0)).await?;
    read_data(&mut viewer).await?;
    Ok((host, viewer))
}
