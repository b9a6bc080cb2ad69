//! Writing frames: a queue of frames written with gathered writes straight
//! from the messages' own buffers, freed once written.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::{opcode, Utf8Bytes, MAX_CONTROL_PAYLOAD};

/// Frames per gathered write (`writev`).
const GATHER: usize = 32;
/// Bytes at most that are copied together for a plain write instead.
const SMALL_WRITE: usize = 2048;

/// Queues frames and writes them with gathered writes straight from the
/// messages' own buffers: no copy, and nothing held once written.
///
/// At most one pong waits in the queue: a ping answered while the pong of
/// an earlier one is still unwritten replaces it (RFC 6455 §5.5.3 allows
/// answering only the latest ping), so a peer that pings and never reads
/// cannot make pongs pile up.
#[derive(Debug, Default)]
pub struct Writer {
    frames: VecDeque<OutFrame>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Bytes queued and not yet written.
    pending: usize,
    /// Where in `frames` a pong not yet begun waits.
    pong: Option<u32>,
}

#[derive(Debug)]
struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
}

impl OutFrame {
    /// A final, unmasked frame (a server's frame, RFC 6455 §5.1).
    fn new(opcode: u8, payload: Bytes) -> Self {
        let len = payload.len();
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode;
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        OutFrame {
            head,
            head_len,
            payload,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Bytes the writer holds for its queue (for tests and diagnostics).
    pub fn buffered(&self) -> usize {
        self.frames.capacity() * std::mem::size_of::<OutFrame>()
    }

    /// Frames waiting to be written (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        self.frames.len()
    }

    /// Queues a text frame.
    pub fn text(&mut self, text: Utf8Bytes) {
        self.frame(opcode::TEXT, Bytes::from(text));
    }

    /// Queues a ping with an empty payload.
    pub fn ping(&mut self) {
        self.frame(opcode::PING, Bytes::new());
    }

    /// Queues a pong answering a ping's payload, in place of a pong still
    /// waiting unwritten.
    pub fn pong(&mut self, mut payload: Bytes) {
        // A ping's payload is at most 125 bytes; a pong must echo it whole.
        payload.truncate(MAX_CONTROL_PAYLOAD);
        if let Some(i) = self.pong {
            let i = i as usize;
            // Not one already begun: its first bytes are on the wire.
            if i != 0 || self.written == 0 {
                if let Some(old) = self.frames.get_mut(i) {
                    self.pending -= old.len();
                    *old = OutFrame::new(opcode::PONG, payload);
                    self.pending += old.len();
                    return;
                }
            }
        }
        self.frame(opcode::PONG, payload);
        self.pong = u32::try_from(self.frames.len() - 1).ok();
    }

    /// Queues a close frame (the reason is cut to what a control frame holds).
    pub fn close(&mut self, code: u16, reason: &str) {
        let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = BytesMut::with_capacity(2 + cut);
        payload.put_u16(code);
        payload.put_slice(&reason.as_bytes()[..cut]);
        self.frame(opcode::CLOSE, payload.freeze());
    }

    fn frame(&mut self, opcode: u8, payload: Bytes) {
        let frame = OutFrame::new(opcode, payload);
        self.pending += frame.len();
        self.frames.push_back(frame);
    }

    /// Writes what is queued. Ready with `Ok` once all of it is written (the
    /// queue's memory is then freed).
    pub fn poll_flush<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut io: Pin<&mut W>,
    ) -> Poll<io::Result<()>> {
        while !self.frames.is_empty() {
            if self.pending <= SMALL_WRITE {
                // A few small frames: one contiguous copy on the stack and a
                // plain write, cheaper in the kernel than a gathered write of
                // many tiny pieces.
                let mut buf = [0u8; SMALL_WRITE];
                let mut len = 0;
                let mut skip = self.written;
                for frame in &self.frames {
                    let head = &frame.head[..usize::from(frame.head_len)];
                    for part in [head, &frame.payload[..]] {
                        let from = skip.min(part.len());
                        skip -= from;
                        let part = &part[from..];
                        buf[len..len + part.len()].copy_from_slice(part);
                        len += part.len();
                    }
                }
                let n = ready!(io.as_mut().poll_write(cx, &buf[..len]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.advance(n);
                continue;
            }
            let mut slices = [IoSlice::new(&[]); 2 * GATHER];
            let mut k = 0;
            let mut skip = self.written;
            for frame in self.frames.iter().take(GATHER) {
                let head = &frame.head[..usize::from(frame.head_len)];
                if skip < head.len() {
                    slices[k] = IoSlice::new(&head[skip..]);
                    slices[k + 1] = IoSlice::new(&frame.payload);
                    k += 2;
                } else {
                    slices[k] = IoSlice::new(&frame.payload[skip - head.len()..]);
                    k += 1;
                }
                skip = 0;
            }
            let n = ready!(io.as_mut().poll_write_vectored(cx, &slices[..k]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        if self.frames.capacity() != 0 {
            self.frames = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        self.pending -= n;
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.frames.pop_front();
            // The waiting pong moves up one place, or was this frame.
            self.pong = self.pong.and_then(|i| i.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn written_frames_are_what_a_client_library_reads() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::tungstenite::Message;
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut writer = Writer::new();
        let long = "y".repeat(70_000);
        let medium = "m".repeat(300);
        writer.text(Utf8Bytes::from_static("{\"type\":\"offer\"}"));
        writer.text(Utf8Bytes::from(long.clone()));
        writer.text(Utf8Bytes::from(medium.clone()));
        writer.ping();
        writer.pong(Bytes::from_static(b"p1"));
        writer.close(1001, "server shutting down");
        let flush = tokio::spawn(async move {
            poll_fn(|cx| writer.poll_flush(cx, Pin::new(&mut server)))
                .await
                .unwrap();
            assert_eq!(writer.buffered(), 0, "a flushed writer holds no buffer");
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
        });
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got, Message::text("{\"type\":\"offer\"}"));
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(long));
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(medium));
        assert!(matches!(
            ws.next().await.unwrap().unwrap(),
            Message::Ping(_)
        ));
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"p1"))
        );
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1001);
                assert_eq!(frame.reason.as_str(), "server shutting down");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        drop(ws);
        flush.await.unwrap();
    }

    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::tungstenite::Message;
        // A pipe of 7 bytes: every write is cut short, on both paths (small
        // frames copied together, and large ones gathered).
        let (client, mut server) = tokio::io::duplex(7);
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let texts: Vec<String> = (0..40)
            .map(|i| format!("{i}:{}", "z".repeat(i * 37 % 300)))
            .collect();
        let sent = texts.clone();
        let flush = tokio::spawn(async move {
            let mut writer = Writer::new();
            for (i, text) in sent.into_iter().enumerate() {
                writer.text(Utf8Bytes::from(text));
                // Small batches first, then one of about 3 KB.
                if (i < 20 && i % 3 == 0) || i == 35 {
                    poll_fn(|cx| writer.poll_flush(cx, Pin::new(&mut server)))
                        .await
                        .unwrap();
                    assert_eq!(writer.pending(), 0);
                }
            }
            writer.close(1000, "");
            poll_fn(|cx| writer.poll_flush(cx, Pin::new(&mut server)))
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
        });
        for text in texts {
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
        }
        assert!(matches!(
            ws.next().await.unwrap().unwrap(),
            Message::Close(_)
        ));
        drop(ws);
        flush.await.unwrap();
    }

    #[tokio::test]
    async fn only_the_latest_ping_is_answered_while_pongs_wait() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::tungstenite::Message;
        let mut writer = Writer::new();
        writer.text(Utf8Bytes::from_static("a"));
        for i in 0..1000 {
            writer.pong(Bytes::from(format!("ping {i}")));
        }
        writer.text(Utf8Bytes::from_static("b"));
        writer.pong(Bytes::from_static(b"last"));
        assert_eq!(writer.queued(), 3, "one pong waits, however many pings");
        // One begun is not replaced: a new one queues behind it.
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut pipe = tokio::io::duplex(4);
        writer.text(Utf8Bytes::from_static("c"));
        let mut w2 = Writer::new();
        w2.pong(Bytes::from_static(b"first pong"));
        let _ = poll_fn(|cx| Poll::Ready(w2.poll_flush(cx, Pin::new(&mut pipe.0)))).await;
        assert!(w2.pending() > 0, "the pong is partly written");
        w2.pong(Bytes::from_static(b"second"));
        w2.pong(Bytes::from_static(b"third"));
        assert_eq!(w2.queued(), 2);
        drop(pipe);

        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let flush = tokio::spawn(async move {
            poll_fn(|cx| writer.poll_flush(cx, Pin::new(&mut server)))
                .await
                .unwrap();
            server
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(ws.next().await.unwrap().unwrap());
        }
        assert_eq!(
            got,
            vec![
                Message::text("a"),
                Message::Pong(Bytes::from_static(b"last")),
                Message::text("b"),
                Message::text("c"),
            ]
        );
        drop(flush.await.unwrap());
    }
}
