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
#[path = "read_tests.rs"]
mod tests;
