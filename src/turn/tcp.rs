//! TURN over TCP, and over TLS ([`run_tls`]: the server's certificate,
//! through the same resolver as its HTTPS port): one task per connection
//! owns its [`Client`], the stream and the relay socket.
//!
//! The stream carries STUN messages and ChannelData back to back. We frame
//! it ourselves, as RFC 8656 §12.5 says: ChannelData is padded to a multiple
//! of four bytes on TCP, in both directions. (`turn-server-proto`'s own TCP
//! buffer neither expects nor writes that padding, so it is handed exactly
//! one unpadded frame at a time and never buffers.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::client::{Client, ClientSink};
use super::metrics::{Refusal, Transport};
use super::{
    Context, MAX_TCP_HANDSHAKES, RELAY_DATAGRAM_MAX, TCP_OUTBOX_LIMIT, TLS_HANDSHAKE_TIMEOUT,
};

/// The largest frame accepted from a client: a STUN header and the longest
/// length its 16-bit field can give, padded.
const MAX_FRAME: usize = 20 + 65_535 + 3;

/// The stream is neither STUN nor ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotTurn;

/// The length of the frame at the start of `buf` (with padding, and the
/// length without it), `Ok(None)` if more bytes are needed, `Err` if the
/// stream is not TURN.
pub fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, NotTurn> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (whole, exact) = match buf[0] >> 6 {
        // STUN: 20-byte header; the length is already a multiple of four.
        0 => {
            if len % 4 != 0 {
                return Err(NotTurn);
            }
            (20 + len, 20 + len)
        }
        // ChannelData: 4-byte header, data padded to four bytes.
        1 => (4 + len.div_ceil(4) * 4, 4 + len),
        _ => return Err(NotTurn),
    };
    Ok((buf.len() >= whole).then_some((whole, exact)))
}

/// Bytes queued towards the client, ChannelData padded.
struct TcpSink {
    out: BytesMut,
}

impl ClientSink for TcpSink {
    fn send(&mut self, bytes: &[u8], relayed: bool) -> bool {
        if relayed && self.out.len() + bytes.len() > TCP_OUTBOX_LIMIT {
            return false;
        }
        self.out.extend_from_slice(bytes);
        if bytes.first().is_some_and(|b| b >> 6 == 1) {
            let pad = (4 - bytes.len() % 4) % 4;
            self.out.extend_from_slice(&[0; 3][..pad]);
        }
        true
    }
}

/// The next TCP connection to serve, with its local address, until
/// shutdown (`None`); connections over [`MAX_TCP_HANDSHAKES`] are closed
/// at once.
async fn next(
    listener: &TcpListener,
    ctx: &Context,
) -> Option<(tokio::net::TcpStream, SocketAddr, SocketAddr)> {
    loop {
        let (stream, remote) = tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        if ctx.tcp_handshakes.load(Ordering::Relaxed) >= MAX_TCP_HANDSHAKES {
            ctx.metrics.refused(Refusal::Capacity);
            continue;
        }
        let _ = stream.set_nodelay(true);
        if let Ok(local) = stream.local_addr() {
            return Some((stream, local, remote));
        }
    }
}

/// Accepts TURN-over-TCP connections until shutdown.
pub(crate) async fn run(listener: TcpListener, ctx: Arc<Context>, tracker: TaskTracker) {
    while let Some((stream, local, remote)) = next(&listener, &ctx).await {
        let span = tracing::info_span!("turn_allocation", transport = "tcp", client = %remote);
        tracker.spawn(
            serve_stream(stream, local, remote, ctx.clone(), Transport::Tcp).instrument(span),
        );
    }
}

/// Accepts TURN-over-TLS connections until shutdown. A TLS handshake
/// counts as a TCP handshake (at most [`MAX_TCP_HANDSHAKES`] at once) and
/// must end within [`TLS_HANDSHAKE_TIMEOUT`].
pub(crate) async fn run_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Arc<Context>,
    tracker: TaskTracker,
) {
    while let Some((stream, local, remote)) = next(&listener, &ctx).await {
        let span = tracing::info_span!("turn_allocation", transport = "tls", client = %remote);
        let ctx = ctx.clone();
        let acceptor = acceptor.clone();
        let serve = async move {
            ctx.tcp_handshakes.fetch_add(1, Ordering::Relaxed);
            let mut handshake = Handshake {
                ctx: &ctx,
                counted: true,
            };
            let accept = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                r = accept => match r {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                },
            };
            handshake.done();
            drop(handshake);
            serve_stream(tls, local, remote, ctx.clone(), Transport::Tls).await;
        };
        tracker.spawn(serve.instrument(span));
    }
}

/// Counts a connection as mid-handshake until it has allocated (or ends).
struct Handshake<'a> {
    ctx: &'a Context,
    counted: bool,
}

impl Handshake<'_> {
    fn done(&mut self) {
        if self.counted {
            self.counted = false;
            self.ctx.tcp_handshakes.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Handshake<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

/// Serves one TURN client over a byte stream (TCP, or TLS around it) that
/// reached the relay at `local` from `remote`, until either side closes,
/// the allocation ends or the relay shuts down.
pub(crate) async fn serve_stream<S>(
    stream: S,
    local: SocketAddr,
    remote: SocketAddr,
    ctx: Arc<Context>,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ctx.tcp_handshakes.fetch_add(1, Ordering::Relaxed);
    let mut handshake = Handshake {
        ctx: &ctx,
        counted: true,
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let now = ctx.clock.now();
    let mut client = Client::new(ctx.clone(), transport, local, remote, now);
    let done = client.done().clone();
    let mut input = BytesMut::with_capacity(4096);
    let mut sink = TcpSink {
        out: BytesMut::new(),
    };
    let mut relay: Option<Arc<UdpSocket>> = None;
    let mut datagram = Vec::new();
    let mut wake = client.wake();
    let sleep = tokio::time::sleep_until(ctx.clock.deadline(wake));
    tokio::pin!(sleep);
    let finished = done.cancelled();
    tokio::pin!(finished);
    loop {
        tokio::select! {
            _ = &mut finished => break,
            r = rd.read_buf(&mut input) => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let now = ctx.clock.now();
                loop {
                    match frame_len(&input) {
                        Ok(Some((whole, exact))) => {
                            client.on_client(&input[..exact], now, &mut sink);
                            input.advance(whole);
                        }
                        Ok(None) => break,
                        Err(NotTurn) => {
                            tracing::debug!("not TURN framing: closing");
                            return;
                        }
                    }
                }
                if input.capacity() - input.len() < 1024 && input.len() < MAX_FRAME {
                    input.reserve(4096);
                }
            }
            r = recv(&relay, &mut datagram) => {
                let Ok((n, peer)) = r else { continue };
                if n == datagram.len() {
                    continue; // possibly truncated
                }
                let now = ctx.clock.now();
                client.on_peer(&datagram[..n], peer, now, &mut sink);
            }
            r = wr.write(&sink.out), if !sink.out.is_empty() => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.out.advance(n),
                }
            }
            () = &mut sleep => {
                client.on_timer(ctx.clock.now(), &mut sink);
                wake = client.wake();
                sleep.as_mut().reset(ctx.clock.deadline(wake));
            }
        }
        if let Some(r) = client.take_new_relay() {
            handshake.done();
            if let Some(addr) = client.relayed_addr() {
                tracing::debug!(relayed = %addr, "allocated");
            }
            datagram.resize(RELAY_DATAGRAM_MAX, 0);
            relay = Some(r);
        }
        if client.is_done() {
            break;
        }
        if client.wake() != wake {
            wake = client.wake();
            sleep.as_mut().reset(ctx.clock.deadline(wake));
        }
    }
    // Best effort: the last responses (a refusal, a deletion's success).
    if !sink.out.is_empty() {
        let flush = wr.write_all(&sink.out);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    }
    let _ = wr.shutdown().await;
    client.finish();
    tracing::debug!("closed");
}

/// Receives on the relay socket, or waits forever without one.
async fn recv(
    relay: &Option<Arc<UdpSocket>>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match relay {
        Some(r) => r.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_with_channel_data_padding() {
        // ChannelData of 5 bytes takes 4 + 8 on the wire.
        let mut buf = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(frame_len(&buf), Ok(Some((12, 9))));
        assert_eq!(frame_len(&buf[..11]), Ok(None));
        // ChannelData of 4 bytes: no padding.
        buf[3] = 4;
        assert_eq!(frame_len(&buf), Ok(Some((8, 8))));
        // A STUN header announcing 8 attribute bytes.
        let stun = [0x00, 0x01, 0x00, 0x08];
        assert_eq!(frame_len(&stun), Ok(None));
        let mut whole = stun.to_vec();
        whole.resize(28, 0);
        assert_eq!(frame_len(&whole), Ok(Some((28, 28))));
        // Neither STUN nor ChannelData, or a STUN length not a multiple of 4.
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(NotTurn));
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x06]), Err(NotTurn));
        assert_eq!(frame_len(&[0x40]), Ok(None));
    }

    #[test]
    fn channel_data_to_the_client_is_padded() {
        let mut sink = TcpSink {
            out: BytesMut::new(),
        };
        assert!(sink.send(&[0x40, 0x00, 0x00, 0x01, 9], true));
        assert_eq!(&sink.out[..], &[0x40, 0, 0, 1, 9, 0, 0, 0]);
        // STUN messages go as they are.
        let msg = [0x01, 0x01, 0x00, 0x00];
        assert!(sink.send(&msg, false));
        assert_eq!(sink.out.len(), 12);
        // Relayed data past the limit is dropped; responses are not.
        sink.out.resize(TCP_OUTBOX_LIMIT, 0);
        assert!(!sink.send(&[0x40, 0, 0, 1, 9], true));
        assert!(sink.send(&msg, false));
    }
}
