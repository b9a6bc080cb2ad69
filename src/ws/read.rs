//! Reading frames and assembling messages (RFC 6455 §5), with the checks a
//! server makes on what a client sends: masking, reserved bits and opcodes,
//! control frame rules, the order of fragments, the message size, UTF-8.
//!
//! Each check is made as soon as the bytes it needs are there: a frame is
//! judged from its first two bytes (and the rest of its header for its
//! length), before its payload arrives; a text message's UTF-8 is checked
//! piece by piece as it arrives.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use super::{opcode, Utf8Bytes, MAX_CONTROL_PAYLOAD};

/// Bytes read per system call, into the thread's scratch buffer. Large
/// enough for a burst of candidates or a whole SDP in one read.
pub const READ_CHUNK: usize = 16 * 1024;

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
/// [`ReadError::Eof`] is the peer's fault and gets a close code
/// ([`ReadError::close_code`]).
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

impl ReadError {
    /// The close code that answers this error, if the peer caused it.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ReadError::Eof | ReadError::Io(_) => None,
            ReadError::TooBig { .. } => Some(super::close::TOO_BIG),
            ReadError::Protocol(_) => Some(super::close::PROTOCOL),
            ReadError::InvalidUtf8 => Some(super::close::INVALID_DATA),
        }
    }
}

thread_local! {
    /// Where reads land: one buffer per thread instead of one per connection.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads frames and assembles messages. Holds memory only while a frame is
/// partly read or a burst is partly handled.
#[derive(Debug)]
pub struct Reader {
    /// Bytes read but not yet handled (a frame header or a control frame
    /// still arriving, or the rest of a burst); empty, without capacity,
    /// when idle.
    buf: BytesMut,
    /// The message whose frames are arriving. Boxed: most messages arrive
    /// whole in one read and never need one.
    message: Option<Box<Assembly>>,
    max_message: u32,
    /// A close frame has arrived (well-formed or not): the peer sends
    /// nothing more.
    peer_closed: bool,
}

/// A message whose frames are still arriving.
#[derive(Debug)]
struct Assembly {
    content: Content,
    /// Payload bytes of the message so far, the frame in progress included
    /// (what the size limit counts).
    len: u64,
    /// The data frame whose payload is arriving; `None` between the frames
    /// of a fragmented message.
    frame: Option<FrameLeft>,
}

#[derive(Debug)]
enum Content {
    /// Text: the payload so far, unmasked, and the UTF-8 check after it.
    Text { bytes: BytesMut, utf8: Utf8Check },
    /// Binary: the content is dropped as it arrives.
    Binary,
}

/// What is left of a data frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct FrameLeft {
    /// Payload bytes still to come.
    left: u64,
    /// The masking key, turned to where the next byte is.
    mask: [u8; 4],
    /// The frame ends its message.
    fin: bool,
}

impl Assembly {
    /// Takes `chunk`, the next payload bytes of the frame in progress:
    /// unmasked, checked and kept for text, dropped for binary.
    fn absorb(&mut self, frame: &mut FrameLeft, chunk: &mut [u8]) -> Result<(), ReadError> {
        frame.left -= chunk.len() as u64;
        if let Content::Text { bytes, utf8 } = &mut self.content {
            unmask(chunk, frame.mask);
            utf8.feed(chunk)?;
            bytes.extend_from_slice(chunk);
        }
        frame.mask.rotate_left(chunk.len() % 4);
        Ok(())
    }

    /// The finished message.
    fn finish(self) -> Result<Incoming, ReadError> {
        match self.content {
            Content::Binary => Ok(Incoming::Binary),
            Content::Text { bytes, utf8 } => {
                if !utf8.is_complete() {
                    return Err(ReadError::InvalidUtf8);
                }
                // A fragmented message's buffer may have grown past its
                // size: copied to one of its own size rather than pin the
                // spare capacity while it waits in a slow peer's queue.
                let bytes = if bytes.capacity() > bytes.len() + bytes.len() / 8 {
                    Bytes::copy_from_slice(&bytes)
                } else {
                    bytes.freeze()
                };
                Utf8Bytes::try_from(bytes)
                    .map_err(|_| ReadError::InvalidUtf8)
                    .map(Incoming::Text)
            }
        }
    }
}

/// UTF-8 validation of a text arriving in pieces: the bytes of a code point
/// cut between two pieces (at most three) are carried to the next.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Utf8Check {
    carry: [u8; 4],
    len: u8,
}

impl Utf8Check {
    /// Checks the next piece: an error at the first byte that cannot be
    /// part of valid UTF-8, whatever follows.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ReadError> {
        if self.len > 0 {
            let have = usize::from(self.len);
            // The carried bytes start a code point: its lead byte says how
            // long it is.
            let width = match self.carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - have).min(bytes.len());
            self.carry[have..have + take].copy_from_slice(&bytes[..take]);
            match std::str::from_utf8(&self.carry[..have + take]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still cut short: this piece was all of it.
                    self.len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(ReadError::InvalidUtf8),
            }
            bytes = &bytes[take..];
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let rest = &bytes[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.len = rest.len() as u8;
                Ok(())
            }
            Err(_) => Err(ReadError::InvalidUtf8),
        }
    }

    /// No code point is cut short.
    pub(super) fn is_complete(&self) -> bool {
        self.len == 0
    }
}

impl Reader {
    /// A reader for messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Reader {
            buf: BytesMut::new(),
            message: None,
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            peer_closed: false,
        }
    }

    /// Whether the peer has sent a close frame, even one refused as
    /// malformed: it has begun the closing handshake, so there is no answer
    /// to wait for.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Bytes the reader holds (for tests and diagnostics).
    pub fn buffered(&self) -> usize {
        let assembling = match self.message.as_deref() {
            Some(Assembly {
                content: Content::Text { bytes, .. },
                ..
            }) => bytes.capacity(),
            _ => 0,
        };
        self.buf.capacity() + assembling
    }

    /// The next message, read from `io` if it is not buffered yet.
    pub fn poll_next<R: AsyncRead + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut io: Pin<&mut R>,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if !self.buf.is_empty() {
                let parsed = parse(
                    &mut self.buf[..],
                    &mut self.message,
                    self.max_message as usize,
                    &mut self.peer_closed,
                )?;
                self.buf.advance(parsed.consumed);
                if self.buf.is_empty() {
                    // Drained: let the allocation go rather than keep it
                    // while idle.
                    self.buf = BytesMut::new();
                } else if parsed.need > self.buf.len() {
                    // A header or control frame still arriving: make room
                    // for all of it.
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
                let parsed = parse(
                    &mut scratch[..n],
                    &mut self.message,
                    self.max_message as usize,
                    &mut self.peer_closed,
                )?;
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
    /// Bytes handled (whole frames, or the payload of a frame in progress).
    consumed: usize,
    /// The message they completed, if any.
    message: Option<Incoming>,
    /// When the bytes after `consumed` hold only part of a header or of a
    /// control frame: its whole size, if known (0 otherwise).
    need: usize,
}

/// A frame header (RFC 6455 §5.2).
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
    /// Bytes of the header.
    size: usize,
}

/// Judges a frame from its first two bytes: everything but its length can
/// be refused before the rest arrives.
fn check_start(b0: u8, b1: u8, in_message: bool) -> Result<(), ReadError> {
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol(
            "reserved bits set (no extension agreed)",
        ));
    }
    let fin = b0 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    match b0 & 0x0f {
        opcode::CONTINUATION if !in_message => {
            return Err(ReadError::Protocol("continuation without a message"))
        }
        opcode::TEXT | opcode::BINARY if in_message => {
            return Err(ReadError::Protocol("new message before the last one ended"))
        }
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {
            if !fin {
                return Err(ReadError::Protocol("fragmented control frame"));
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(ReadError::Protocol("control frame over 125 bytes"));
            }
        }
        _ => return Err(ReadError::Protocol("reserved opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol("client frames must be masked"));
    }
    Ok(())
}

/// The header at the front of `bytes`, once all of it is there (and judged).
fn parse_header(bytes: &[u8], in_message: bool) -> Result<Option<Header>, ReadError> {
    let [b0, b1, ..] = *bytes else {
        return Ok(None);
    };
    check_start(b0, b1, in_message)?;
    let (len, at) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(l) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(l);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("64-bit length with its top bit set"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let Some(m) = bytes.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask: [m[0], m[1], m[2], m[3]],
        len,
        size: at + 4,
    }))
}

/// Handles frames from the front of `bytes` (unmasking them in place) until
/// one completes a message or the bytes run out. `peer_closed` is set when a
/// close frame arrives.
fn parse(
    bytes: &mut [u8],
    message: &mut Option<Box<Assembly>>,
    max_message: usize,
    peer_closed: &mut bool,
) -> Result<Parsed, ReadError> {
    let mut at = 0;
    loop {
        // The payload of a data frame in progress goes straight into its
        // message.
        if let Some(assembly) = message.as_deref_mut() {
            if let Some(mut frame) = assembly.frame {
                let rest = &mut bytes[at..];
                let take = frame.left.min(rest.len() as u64) as usize;
                assembly.absorb(&mut frame, &mut rest[..take])?;
                at += take;
                if frame.left > 0 {
                    assembly.frame = Some(frame);
                    return Ok(Parsed {
                        consumed: at,
                        message: None,
                        need: 0,
                    });
                }
                assembly.frame = None;
                if frame.fin {
                    if let Some(done) = message.take() {
                        return Ok(Parsed {
                            consumed: at,
                            message: Some(done.finish()?),
                            need: 0,
                        });
                    }
                }
                continue;
            }
        }
        let rest = &mut bytes[at..];
        let not_yet = |need| Parsed {
            consumed: at,
            message: None,
            need,
        };
        if rest.first().is_some_and(|b0| b0 & 0x0f == opcode::CLOSE) {
            *peer_closed = true;
        }
        let Some(header) = parse_header(rest, message.is_some())? else {
            return Ok(not_yet(0));
        };
        if header.opcode & 0x8 != 0 {
            // A control frame (≤ 125 bytes): handled once it is all here.
            let end = header.size + header.len as usize;
            if rest.len() < end {
                return Ok(not_yet(end));
            }
            let payload = &mut rest[header.size..end];
            unmask(payload, header.mask);
            at += end;
            let incoming = match header.opcode {
                opcode::PING => Incoming::Ping(Bytes::copy_from_slice(payload)),
                opcode::PONG => Incoming::Pong,
                _ => Incoming::Close(close_frame(payload)?),
            };
            return Ok(Parsed {
                consumed: at,
                message: Some(incoming),
                need: 0,
            });
        }
        let before = message.as_ref().map_or(0, |m| m.len);
        let size = header.len.saturating_add(before);
        if size > max_message as u64 {
            return Err(ReadError::TooBig {
                size,
                max: max_message,
            });
        }
        // Within the limit, so it fits in memory.
        let len = header.len as usize;
        let text = header.opcode == opcode::TEXT;
        at += header.size;
        if header.fin && header.opcode != opcode::CONTINUATION && rest.len() >= header.size + len {
            // The usual case: a whole message in one frame, all here.
            let payload = &mut rest[header.size..header.size + len];
            at += len;
            let incoming = if text {
                unmask(payload, header.mask);
                let text = std::str::from_utf8(payload).map_err(|_| ReadError::InvalidUtf8)?;
                // Copied out of the read buffer into an allocation of its
                // own size, so that a message queued for a slow peer never
                // pins a burst's worth of buffer.
                Incoming::Text(Utf8Bytes::from(text.to_owned()))
            } else {
                Incoming::Binary
            };
            return Ok(Parsed {
                consumed: at,
                message: Some(incoming),
                need: 0,
            });
        }
        let frame = FrameLeft {
            left: header.len,
            mask: header.mask,
            fin: header.fin,
        };
        match message {
            Some(assembly) => {
                // A continuation (checked from its first byte).
                if let Content::Text { bytes, .. } = &mut assembly.content {
                    bytes.reserve(len);
                }
                assembly.len = size;
                assembly.frame = Some(frame);
            }
            None => {
                let content = if text {
                    Content::Text {
                        bytes: BytesMut::with_capacity(len),
                        utf8: Utf8Check::default(),
                    }
                } else {
                    Content::Binary
                };
                *message = Some(Box::new(Assembly {
                    content,
                    len: size,
                    frame: Some(frame),
                }));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    /// A frame as a client sends it: masked.
    pub(crate) fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
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

    /// What the reader makes of `bytes` fed `piece` bytes at a time: the
    /// messages, then how it ended (`Ok` if it wants more bytes).
    fn read_in_pieces(
        bytes: &[u8],
        piece: usize,
        max: usize,
    ) -> (Vec<Incoming>, Result<(), String>) {
        let mut reader = Reader::new(max);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            let mut input: &[u8] = chunk;
            loop {
                match reader.poll_next(&mut cx, Pin::new(&mut input)) {
                    Poll::Ready(Ok(m)) => out.push(m),
                    Poll::Ready(Err(ReadError::Eof)) => break,
                    Poll::Ready(Err(e)) => return (out, Err(format!("{e:?}"))),
                    Poll::Pending => unreachable!("slices are never pending"),
                }
            }
        }
        (out, Ok(()))
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

    #[test]
    fn utf8_is_checked_across_cuts_anywhere() {
        let text = "a€𝄞é\u{10FFFF}z".as_bytes();
        for cut in 0..=text.len() {
            for cut2 in cut..=text.len() {
                let mut c = Utf8Check::default();
                c.feed(&text[..cut]).unwrap();
                c.feed(&text[cut..cut2]).unwrap();
                c.feed(&text[cut2..]).unwrap();
                assert!(c.is_complete(), "cuts {cut} {cut2}");
            }
        }
        // A bad byte is refused when it arrives, not when the text ends.
        let mut c = Utf8Check::default();
        c.feed(&[0xe2, 0x82]).unwrap();
        assert!(c.feed(&[0x28]).is_err(), "a broken code point");
        let mut c = Utf8Check::default();
        assert!(c.feed(&[0xf0]).is_ok());
        assert!(
            c.feed(&[0x80]).is_err(),
            "an overlong start is refused at once"
        );
        let mut c = Utf8Check::default();
        assert!(c.feed(&[0xed, 0xa0]).is_err(), "a surrogate");
        let mut c = Utf8Check::default();
        assert!(c.feed(&[0xf4, 0x90]).is_err(), "over U+10FFFF");
        let mut c = Utf8Check::default();
        c.feed(&[0xf0, 0x9d]).unwrap();
        assert!(!c.is_complete(), "cut short at the end");
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
        assert_eq!(reader.buffered(), 0, "nothing held after the message");
        drop(writer.await.unwrap());
        assert!(matches!(
            next_err(&mut reader, &mut server).await,
            ReadError::Eof
        ));
    }

    #[test]
    fn every_cut_of_the_same_bytes_reads_the_same() {
        let mut bytes = Vec::new();
        bytes.extend(client_frame(0x01, "héllo ".as_bytes()));
        bytes.extend(client_frame(0x89, b"ping"));
        bytes.extend(client_frame(0x00, &"wörld €".as_bytes()[..8]));
        bytes.extend(client_frame(0x80, &"wörld €".as_bytes()[8..]));
        bytes.extend(client_frame(0x82, &[0; 300]));
        bytes.extend(client_frame(0x02, &[1; 200]));
        bytes.extend(client_frame(0x8a, b""));
        bytes.extend(client_frame(0x80, &[2; 70_000]));
        bytes.extend(client_frame(0x81, "x".repeat(200).as_bytes()));
        bytes.extend(client_frame(0x88, &[0x03, 0xe8]));
        let want = vec![
            Incoming::Ping(Bytes::from_static(b"ping")),
            Incoming::Text(Utf8Bytes::from_static("héllo wörld €")),
            Incoming::Binary,
            Incoming::Pong,
            Incoming::Binary,
            Incoming::Text(Utf8Bytes::from("x".repeat(200))),
            Incoming::Close(Some(1000)),
        ];
        for piece in [1, 2, 3, 5, 7, 64, 1000, bytes.len()] {
            let (got, end) = read_in_pieces(&bytes, piece, 1 << 17);
            assert_eq!(got, want, "pieces of {piece}");
            assert_eq!(end, Ok(()), "pieces of {piece}");
        }
    }

    #[test]
    fn peer_faults_are_classified() {
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
            (client_frame(0x8b, b"hi"), "protocol"), // reserved control opcode
            (client_frame(0x09, b"hi"), "protocol"), // fragmented ping
            (client_frame(0x80, b"hi"), "protocol"), // stray continuation
            (client_frame(0x88, &[3]), "protocol"),  // close of one byte
            (client_frame(0x89, &[0; 126]), "protocol"), // long ping
            (
                [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(),
                "protocol", // a new message inside a fragmented one
            ),
            (client_frame(0x88, &[0x03, 0xe8, 0xff]), "utf8"), // close reason
        ];
        for (bytes, want) in cases {
            for piece in [1, bytes.len()] {
                let (_, end) = read_in_pieces(&bytes, piece, 1000);
                let got = match end {
                    Err(e) if e.starts_with("InvalidUtf8") => "utf8",
                    Err(e) if e.starts_with("TooBig") => "big",
                    Err(e) if e.starts_with("Protocol") => "protocol",
                    other => panic!("unexpected {other:?} for {bytes:02x?}"),
                };
                assert_eq!(got, want, "frame {bytes:02x?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_malformed_close_frame_still_counts_as_the_peer_closing() {
        let mut reader = Reader::new(1000);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let bytes = client_frame(0x88, &[3]);
        let mut input: &[u8] = &bytes;
        assert!(matches!(
            reader.poll_next(&mut cx, Pin::new(&mut input)),
            Poll::Ready(Err(ReadError::Protocol(_)))
        ));
        assert!(reader.peer_closed());
        assert!(!Reader::new(10).peer_closed());
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

    #[test]
    fn a_bad_control_frame_or_length_is_refused_before_its_payload() {
        // A ping announcing 126 bytes: refused from its first two bytes.
        let (got, end) = read_in_pieces(&[0x89, 0x80 | 126], 2, 1000);
        assert!(got.is_empty());
        assert!(end.is_err_and(|e| e.contains("125")));
        // A 64-bit length with its top bit set: a protocol error (1002),
        // not a message too big (1009), from the header alone.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
        let (_, end) = read_in_pieces(&header, header.len(), 1000);
        assert!(end.is_err_and(|e| e.contains("top bit")));
    }

    #[test]
    fn invalid_utf8_is_refused_in_the_fragment_that_holds_it() {
        // The first fragment ends inside a code point, the second breaks
        // it: refused with the second, before the last fragment is sent.
        let mut bytes = client_frame(0x01, &"ok €".as_bytes()[..4]);
        bytes.extend(client_frame(0x00, &[0x82, 0x28]));
        let (got, end) = read_in_pieces(&bytes, bytes.len(), 1000);
        assert!(got.is_empty());
        assert!(end.is_err_and(|e| e.starts_with("InvalidUtf8")));
        // And within one frame still arriving: refused at the bad byte.
        let frame = client_frame(
            0x81,
            &[b"abc".as_slice(), &[0xc0, 0x80], &[b'x'; 500]].concat(),
        );
        let (_, end) = read_in_pieces(&frame[..12], 12, 1000);
        assert!(end.is_err_and(|e| e.starts_with("InvalidUtf8")));
        // A code point cut between two fragments is fine.
        let euro = "€".as_bytes();
        let mut bytes = client_frame(0x01, &euro[..1]);
        bytes.extend(client_frame(0x00, &euro[1..2]));
        bytes.extend(client_frame(0x80, &euro[2..]));
        let (got, end) = read_in_pieces(&bytes, 1, 1000);
        assert_eq!(got, vec![Incoming::Text(Utf8Bytes::from_static("€"))]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn binary_payloads_are_dropped_as_they_arrive() {
        // A 60 KB binary frame read in small pieces never costs its size.
        let frame = client_frame(0x82, &vec![7; 60_000]);
        let mut reader = Reader::new(1 << 16);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut most = 0;
        let mut got = Vec::new();
        for chunk in frame.chunks(1000) {
            let mut input: &[u8] = chunk;
            loop {
                match reader.poll_next(&mut cx, Pin::new(&mut input)) {
                    Poll::Ready(Ok(m)) => got.push(m),
                    Poll::Ready(Err(ReadError::Eof)) => break,
                    other => panic!("{other:?}"),
                }
            }
            most = most.max(reader.buffered());
        }
        assert_eq!(got, vec![Incoming::Binary]);
        assert!(most < 100, "the reader held {most} bytes");
    }
}
