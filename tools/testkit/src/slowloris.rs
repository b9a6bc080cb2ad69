//! Slowloris: connections that send a request head a byte at a time, or
//! nothing at all, and hold their socket until the server closes it; and
//! the wait for a connection the server should close.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How a slow connection behaves once connected.
#[derive(Debug, Clone, Copy)]
pub struct Slow {
    /// Written at once (the start of a request head, or nothing).
    pub head: &'static [u8],
    /// Then this byte every so often, if any.
    pub trickle: Option<(Duration, u8)>,
}

impl Slow {
    /// Sends nothing.
    pub const SILENT: Slow = Slow {
        head: b"",
        trickle: None,
    };

    /// Sends `head`, then nothing.
    pub const fn stalled(head: &'static [u8]) -> Slow {
        Slow {
            head,
            trickle: None,
        }
    }

    /// Sends `head`, then `byte` every `every`.
    pub const fn trickling(head: &'static [u8], every: Duration, byte: u8) -> Slow {
        Slow {
            head,
            trickle: Some((every, byte)),
        }
    }
}

/// Holds `tcp` as `how` says until the server ends the connection (end of
/// stream, a reset, or a write that fails); reads and discards whatever the
/// server sends before that. Bound it with a timeout: a server that never
/// cuts it off keeps it forever.
pub async fn hold(mut tcp: TcpStream, how: Slow) {
    if !how.head.is_empty() {
        let _ = tcp.write_all(how.head).await;
    }
    let every = how.trickle.map_or(Duration::from_secs(3600), |t| t.0);
    let mut tick = tokio::time::interval(every);
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tick.tick(), if how.trickle.is_some() => {
                let byte = how.trickle.map_or(b'a', |t| t.1);
                if tcp.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether the server ends `tcp` (end of stream or a reset, after reading
/// and discarding whatever it sent) within `within`.
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
