//! The reference point of the benchmarks: a minimal tokio-tungstenite relay.
//!
//! The two connections that open the same path are paired, and every data
//! frame one sends is forwarded to the other as it is: no parsing, no
//! validation, no rooms beyond the pairing, no limits. Each connection has a
//! reader task and a writer task (feeding what is queued, flushing once), a
//! 4 KiB read buffer, on a single-threaded runtime (plain `tokio::spawn`). When a connection is
//! registered it is sent `{"ready":true}`, so a client knows frames it sends
//! from then on reach its partner.
//!
//! Usage: `minimal-relay [ADDR] [READ_BUFFER_BYTES]` (default 127.0.0.1:3540,
//! 4096).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Slot = Arc<Mutex<Option<UnboundedSender<Message>>>>;
type Waiting = Arc<Mutex<HashMap<String, (UnboundedSender<Message>, Slot)>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3540".into());
    let read_buffer: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        let waiting: Waiting = Arc::default();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(connection(tcp, Arc::clone(&waiting), read_buffer));
        }
    });
}

async fn connection(tcp: TcpStream, waiting: Waiting, read_buffer: usize) {
    let mut path = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(8 * 1024 + 2 * 65536)
        .max_message_size(Some(65536))
        .max_frame_size(Some(65536));
    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await
    else {
        return;
    };
    let (tx, rx) = unbounded_channel();
    let slot: Slot = Arc::default();
    let paired = waiting.lock().unwrap().remove(&path);
    match paired {
        Some((other_tx, other_slot)) => {
            *other_slot.lock().unwrap() = Some(tx.clone());
            *slot.lock().unwrap() = Some(other_tx);
        }
        None => {
            waiting
                .lock()
                .unwrap()
                .insert(path.clone(), (tx.clone(), Arc::clone(&slot)));
        }
    }
    let _ = tx.send(Message::text(r#"{"ready":true}"#));
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, rx));
    while let Some(Ok(m)) = stream.next().await {
        match m {
            Message::Text(_) | Message::Binary(_) => {
                if let Some(peer) = slot.lock().unwrap().as_ref() {
                    let _ = peer.send(m);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    {
        let mut w = waiting.lock().unwrap();
        if w.get(&path).is_some_and(|(t, _)| t.same_channel(&tx)) {
            w.remove(&path);
        }
    }
    writer.abort();
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<TcpStream>,
        Message,
    >,
    mut rx: UnboundedReceiver<Message>,
) {
    while let Some(first) = rx.recv().await {
        if sink.feed(first).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
