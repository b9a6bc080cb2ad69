//! The server side of a WebSocket connection (RFC 6455) over the upgraded
//! TCP socket: the handshake checks, a frame [`Reader`] and a frame
//! [`Writer`].
//!
//! Why not tungstenite's `WebSocket` (which axum wraps): its read and write
//! buffers belong to the connection, grow to the largest frame it has seen
//! and are never released, so an idle connection that once carried a 4 KB
//! SDP keeps about 10 KB of buffers for its whole life; its split halves
//! share the stream through a lock, and each poll goes through a waker proxy.
//! Signalling connections are idle nearly all the time and busy in short
//! bursts, so here every buffer is held only while it has bytes in it:
//!
//! - reads go into one scratch buffer per thread; only bytes not yet handled
//!   (the rest of a burst, or a frame still arriving) are copied into the
//!   connection's own buffer, which is freed as soon as it is drained;
//! - frames to send are encoded into the connection's write buffer, written
//!   with as few system calls as the socket allows, and the buffer is freed
//!   once it is written.
//!
//! Frame headers are parsed and formatted by tungstenite's [`FrameHeader`];
//! what is ours is the buffer policy and the checks a server makes (masking,
//! reserved bits, control frame rules, message size, UTF-8).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

pub use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
pub use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Bytes read per system call, into the thread's scratch buffer. Large
/// enough for a burst of candidates or a whole SDP in one read.
pub const READ_CHUNK: usize = 16 * 1024;
/// The longest payload a control frame may carry (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why a request is not a WebSocket upgrade this server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotUpgrade {
    /// Not an upgrade request at all (a plain GET).
    Plain,
    /// An upgrade request for a WebSocket version other than 13.
    Version,
    /// An upgrade request without `Sec-WebSocket-Key`.
    Key,
}

/// The `Sec-WebSocket-Accept` value if `headers` ask for a WebSocket
/// (HTTP/1.1 `Connection: upgrade`, `Upgrade: websocket`, version 13).
pub fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, NotUpgrade> {
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(NotUpgrade::Plain);
    }
    if !header_has_token(headers, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(NotUpgrade::Version);
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        // Base64 is always a valid header value.
        Some(key) if !key.is_empty() => {
            HeaderValue::try_from(derive_accept_key(key.as_bytes())).map_err(|_| NotUpgrade::Key)
        }
        _ => Err(NotUpgrade::Key),
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// A message read from the peer.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A complete text message (valid UTF-8).
    Text(Utf8Bytes),
    /// A complete binary message (its content is not kept).
    Binary,
    /// A ping, with its payload (to send back in the pong).
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why reading ended or failed. Every variant but [`ReadError::Io`] and
/// [`ReadError::Eof`] is the peer's fault and gets a close code.
#[derive(Debug)]
pub enum ReadError {
    /// The connection ended without a close frame.
    Eof,
    /// The transport failed.
    Io(io::Error),
    /// A message over the size limit (close code 1009).
    TooBig {
        /// Its size, or the size it had reached.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A framing error (close code 1002).
    Protocol(&'static str),
    /// A text message that is not UTF-8 (close code 1007).
    InvalidUtf8,
}

thread_local! {
    /// Where reads land: one buffer per thread instead of one per connection.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads frames and assembles messages. Holds memory only while a frame is
/// partly read or a burst is partly handled.
#[derive(Debug)]
pub struct Reader {
    /// Bytes read but not yet handled; empty, without capacity, when idle.
    buf: BytesMut,
    /// A fragmented message being assembled: text or not, and its bytes.
    fragments: Option<(bool, BytesMut)>,
    max_message: usize,
}

impl Reader {
    /// A reader for messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Reader {
            buf: BytesMut::new(),
            fragments: None,
            max_message,
        }
    }

    /// Bytes the reader holds (for tests and diagnostics).
    pub fn buffered(&self) -> usize {
        self.buf.capacity() + self.fragments.as_ref().map_or(0, |(_, b)| b.capacity())
    }

    /// The next message, read from `io` if it is not buffered yet.
    pub fn poll_next<R: AsyncRead + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut io: Pin<&mut R>,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if !self.buf.is_empty() {
                let parsed = parse(&mut self.buf[..], &mut self.fragments, self.max_message)?;
                self.buf.advance(parsed.consumed);
                if self.buf.is_empty() {
                    // Drained: let the allocation go rather than keep it
                    // while idle.
                    self.buf = BytesMut::new();
                } else if parsed.need > self.buf.len() {
                    // A frame still arriving: make room for all of it.
                    self.buf.reserve(parsed.need - self.buf.len());
                }
                if let Some(message) = parsed.message {
                    return Poll::Ready(Ok(message));
                }
                // Otherwise nothing more can be parsed without more bytes.
            }
            let step = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut rb = ReadBuf::new(&mut scratch[..]);
                match io.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ReadError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                }
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(ReadError::Eof));
                }
                if !self.buf.is_empty() {
                    self.buf.extend_from_slice(&scratch[..n]);
                    return Poll::Ready(Ok(None));
                }
                // The usual case: whole frames, parsed where they landed;
                // only what is left after the first message is kept.
                let parsed = parse(&mut scratch[..n], &mut self.fragments, self.max_message)?;
                let rest = &scratch[parsed.consumed..n];
                if !rest.is_empty() {
                    self.buf.reserve(parsed.need.max(rest.len()));
                    self.buf.extend_from_slice(rest);
                }
                Poll::Ready(Ok(parsed.message))
            });
            match ready!(step) {
                Ok(Some(message)) => return Poll::Ready(Ok(message)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// What [`parse`] found.
struct Parsed {
    /// Bytes of whole frames handled.
    consumed: usize,
    /// The message they completed, if any.
    message: Option<Incoming>,
    /// When the bytes after `consumed` hold only part of a frame: its whole
    /// size, if known (0 otherwise).
    need: usize,
}

/// Handles whole frames from the front of `bytes` (unmasking them in place)
/// until one completes a message or a frame is incomplete.
fn parse(
    bytes: &mut [u8],
    fragments: &mut Option<(bool, BytesMut)>,
    max_message: usize,
) -> Result<Parsed, ReadError> {
    let mut at = 0;
    loop {
        let rest = &mut bytes[at..];
        let not_yet = |need| Parsed {
            consumed: at,
            message: None,
            need,
        };
        if rest.is_empty() {
            return Ok(not_yet(0));
        }
        let mut cursor = Cursor::new(&rest[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(not_yet(0)),
            Err(_) => return Err(ReadError::Protocol("invalid frame header")),
        };
        let header_len = cursor.position() as usize;
        // A continuation counts with the fragments before it.
        let assembled = match (&*fragments, header.opcode) {
            (Some((_, b)), OpCode::Data(Data::Continue)) => b.len() as u64,
            _ => 0,
        };
        let size = len.saturating_add(assembled);
        if size > max_message as u64 {
            return Err(ReadError::TooBig {
                size,
                max: max_message,
            });
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ReadError::Protocol(
                "reserved bits set (no extension agreed)",
            ));
        }
        let Some(mask) = header.mask else {
            return Err(ReadError::Protocol("client frames must be masked"));
        };
        let len = len as usize;
        if rest.len() < header_len + len {
            return Ok(not_yet(header_len + len));
        }
        let payload = &mut rest[header_len..header_len + len];
        unmask(payload, mask);
        at += header_len + len;
        if let Some(message) = on_frame(fragments, header.opcode, header.is_final, payload)? {
            return Ok(Parsed {
                consumed: at,
                message: Some(message),
                need: 0,
            });
        }
    }
}

/// Handles one frame's unmasked payload.
fn on_frame(
    fragments: &mut Option<(bool, BytesMut)>,
    opcode: OpCode,
    is_final: bool,
    payload: &[u8],
) -> Result<Option<Incoming>, ReadError> {
    match opcode {
        OpCode::Control(control) => {
            if !is_final || payload.len() > MAX_CONTROL_PAYLOAD {
                return Err(ReadError::Protocol("invalid control frame"));
            }
            match control {
                Control::Ping => Ok(Some(Incoming::Ping(Bytes::copy_from_slice(payload)))),
                Control::Pong => Ok(Some(Incoming::Pong)),
                Control::Close => close_frame(payload).map(|code| Some(Incoming::Close(code))),
                Control::Reserved(_) => Err(ReadError::Protocol("reserved opcode")),
            }
        }
        OpCode::Data(Data::Continue) => {
            let Some((text, mut assembled)) = fragments.take() else {
                return Err(ReadError::Protocol("continuation without a message"));
            };
            assembled.extend_from_slice(payload);
            if is_final {
                finish(text, &assembled).map(Some)
            } else {
                *fragments = Some((text, assembled));
                Ok(None)
            }
        }
        OpCode::Data(data @ (Data::Text | Data::Binary)) => {
            if fragments.is_some() {
                return Err(ReadError::Protocol("new message before the last one ended"));
            }
            let text = data == Data::Text;
            if is_final {
                finish(text, payload).map(Some)
            } else {
                *fragments = Some((text, BytesMut::from(payload)));
                Ok(None)
            }
        }
        OpCode::Data(Data::Reserved(_)) => Err(ReadError::Protocol("reserved opcode")),
    }
}

/// A whole message. Text is copied out of the read buffer into an allocation
/// of its own size, so a message queued for a slow peer never pins a burst's
/// worth of buffer.
fn finish(text: bool, payload: &[u8]) -> Result<Incoming, ReadError> {
    if !text {
        return Ok(Incoming::Binary);
    }
    let text = std::str::from_utf8(payload).map_err(|_| ReadError::InvalidUtf8)?;
    Ok(Incoming::Text(Utf8Bytes::from(text.to_owned())))
}

/// The status code of a close frame's payload.
fn close_frame(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("close frame of one byte")),
        [hi, lo, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(ReadError::InvalidUtf8);
            }
            Ok(Some(u16::from_be_bytes([*hi, *lo])))
        }
    }
}

/// XORs `buf` with the frame's masking key, eight bytes at a time.
pub fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Frames per gathered write (`writev`).
const GATHER: usize = 32;
/// Bytes at most that are copied together for a plain write instead.
const SMALL_WRITE: usize = 2048;

/// Queues frames and writes them with gathered writes straight from the
/// messages' own buffers: no copy, and nothing held once written.
#[derive(Debug, Default)]
pub struct Writer {
    frames: VecDeque<OutFrame>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Bytes queued and not yet written.
    pending: usize,
}

#[derive(Debug)]
struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
}

impl OutFrame {
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

    /// Queues a text frame.
    pub fn text(&mut self, text: Utf8Bytes) {
        self.frame(OpCode::Data(Data::Text), Bytes::from(text));
    }

    /// Queues a ping with an empty payload.
    pub fn ping(&mut self) {
        self.frame(OpCode::Control(Control::Ping), Bytes::new());
    }

    /// Queues a pong answering a ping's payload.
    pub fn pong(&mut self, payload: Bytes) {
        self.frame(OpCode::Control(Control::Pong), payload);
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
        self.frame(OpCode::Control(Control::Close), payload.freeze());
    }

    fn frame(&mut self, opcode: OpCode, payload: Bytes) {
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        let len = payload.len() as u64;
        let mut head = [0u8; 10];
        let mut w = &mut head[..];
        // A server frame's header is at most 10 bytes: this cannot fail.
        let _ = header.format(len, &mut w);
        let head_len = (10 - w.len()) as u8;
        let frame = OutFrame {
            head,
            head_len,
            payload,
        };
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A frame as a client sends it: masked.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len < 65536 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn next(reader: &mut Reader, io: &mut tokio::io::DuplexStream) -> Incoming {
        poll_fn(|cx| reader.poll_next(cx, Pin::new(&mut *io)))
            .await
            .expect("a message")
    }

    async fn next_err(reader: &mut Reader, io: &mut tokio::io::DuplexStream) -> ReadError {
        poll_fn(|cx| reader.poll_next(cx, Pin::new(&mut *io)))
            .await
            .expect_err("an error")
    }

    #[test]
    fn unmask_matches_the_byte_by_byte_definition() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut fast = original.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }

    #[tokio::test]
    async fn a_burst_of_frames_is_read_and_the_buffer_released() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let mut burst = Vec::new();
        for i in 0..5 {
            burst.extend(client_frame(0x81, format!("message {i}").as_bytes()));
        }
        client.write_all(&burst).await.unwrap();
        let mut reader = Reader::new(1024);
        for i in 0..5 {
            assert_eq!(
                next(&mut reader, &mut server).await,
                Incoming::Text(Utf8Bytes::from(format!("message {i}")))
            );
        }
        assert_eq!(reader.buffered(), 0, "an idle reader holds no buffer");
    }

    #[tokio::test]
    async fn a_frame_split_across_reads_and_fragments_are_assembled() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let big = "x".repeat(5000);
        let frame = client_frame(0x81, big.as_bytes());
        let mut reader = Reader::new(1 << 16);
        let writer = tokio::spawn(async move {
            for part in frame.chunks(700) {
                client.write_all(part).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Then a message in three fragments, with a ping between them.
            client.write_all(&client_frame(0x01, b"ab")).await.unwrap();
            client.write_all(&client_frame(0x89, b"p")).await.unwrap();
            client.write_all(&client_frame(0x00, b"cd")).await.unwrap();
            client.write_all(&client_frame(0x80, b"ef")).await.unwrap();
            client
        });
        assert_eq!(
            next(&mut reader, &mut server).await,
            Incoming::Text(Utf8Bytes::from(big))
        );
        assert_eq!(
            next(&mut reader, &mut server).await,
            Incoming::Ping(Bytes::from_static(b"p"))
        );
        assert_eq!(
            next(&mut reader, &mut server).await,
            Incoming::Text(Utf8Bytes::from_static("abcdef"))
        );
        drop(writer.await.unwrap());
        assert!(matches!(
            next_err(&mut reader, &mut server).await,
            ReadError::Eof
        ));
    }

    #[tokio::test]
    async fn peer_faults_are_classified() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (client_frame(0x81, &[0xff, 0xfe]), "utf8"),
            (client_frame(0x81, &vec![b'a'; 2000]), "big"),
            (
                {
                    let mut f = client_frame(0x81, b"hi");
                    f[1] &= 0x7f; // unmasked
                    f.drain(2..6);
                    f
                },
                "protocol",
            ),
            (client_frame(0xc1, b"hi"), "protocol"), // rsv1
            (client_frame(0x83, b"hi"), "protocol"), // reserved opcode
            (client_frame(0x09, b"hi"), "protocol"), // fragmented ping
            (client_frame(0x80, b"hi"), "protocol"), // stray continuation
            (client_frame(0x88, &[3]), "protocol"),  // close of one byte
            (client_frame(0x89, &[0; 126]), "protocol"), // long ping
        ];
        for (bytes, want) in cases {
            let (mut client, mut server) = tokio::io::duplex(1 << 16);
            client.write_all(&bytes).await.unwrap();
            let mut reader = Reader::new(1000);
            let err = next_err(&mut reader, &mut server).await;
            let got = match err {
                ReadError::InvalidUtf8 => "utf8",
                ReadError::TooBig { .. } => "big",
                ReadError::Protocol(_) => "protocol",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want, "frame {bytes:02x?}");
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_from_its_header() {
        // The header announces 1 MB: refused before any payload arrives.
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        client.write_all(&header).await.unwrap();
        let mut reader = Reader::new(65536);
        assert!(matches!(
            next_err(&mut reader, &mut server).await,
            ReadError::TooBig { size, max: 65536 } if size == 1 << 20
        ));
    }

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
        writer.text(Utf8Bytes::from_static("{\"type\":\"offer\"}"));
        writer.text(Utf8Bytes::from(long.clone()));
        writer.ping();
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
        assert!(matches!(
            ws.next().await.unwrap().unwrap(),
            Message::Ping(_)
        ));
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

    #[test]
    fn upgrade_headers_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(accept_key(&h), Err(NotUpgrade::Plain));
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(accept_key(&h), Err(NotUpgrade::Version));
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        assert_eq!(accept_key(&h), Err(NotUpgrade::Key));
        // The example of RFC 6455 §1.3.
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        assert_eq!(
            accept_key(&h).as_ref().map(|v| v.as_bytes()),
            Ok(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
    }
}
