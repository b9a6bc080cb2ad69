//! The WebSocket frame reader (`signal_server::ws::Reader`): every byte a
//! peer sends after the upgrade goes through it before anything else.
//!
//! Input layout: the first byte chooses how the rest is cut into reads (a
//! peer's bytes arrive in arbitrary pieces), and how the second phase cuts
//! the rest into fragments; the rest is the byte stream.
//!
//! Phase 1, the rest as a raw byte stream. Invariants:
//! - nothing panics, whatever the bytes and however they are cut;
//! - text messages are valid UTF-8 (by type) and never over the limit;
//! - reading ends (an error or the end of input) without looping;
//! - the reader holds a bounded number of bytes: at most what one message
//!   and one read can need, and nothing once its input is drained;
//! - the same bytes cut differently give the same messages.
//!
//! Phase 2, the rest as the payload of one text message sent in fragments
//! (the cuts from the input), then as a binary one. Invariants (a
//! differential check of the UTF-8 check that runs piece by piece):
//! - the text message is read exactly when the payload is UTF-8, with the
//!   payload's content; otherwise reading fails with `InvalidUtf8`, and
//!   never later than the fragment holding the first invalid byte;
//! - the binary message is read as `Binary`, and its content is not held.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use signal_server::ws::{Incoming, ReadError, Reader, READ_CHUNK};

const MAX: usize = 4096;

/// The messages read from `data` delivered in pieces of `piece` bytes, and
/// how reading ended.
fn read_all(data: &[u8], piece: usize) -> (Vec<String>, &'static str) {
    let mut reader = Reader::new(MAX);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    for (i, chunk) in data.chunks(piece.max(1)).enumerate() {
        let mut input: &[u8] = chunk;
        loop {
            match reader.poll_next(&mut cx, Pin::new(&mut input)) {
                Poll::Ready(Ok(Incoming::Text(t))) => {
                    assert!(t.len() <= MAX);
                    out.push(t.as_str().to_owned());
                }
                Poll::Ready(Ok(m)) => out.push(format!("{m:?}")),
                // An empty slice reads as the end of the stream: this piece
                // is used up, go on with the next.
                Poll::Ready(Err(ReadError::Eof)) => break,
                Poll::Ready(Err(ReadError::Io(e))) => panic!("slice reads cannot fail: {e}"),
                Poll::Ready(Err(ReadError::TooBig { .. })) => return (out, "too big"),
                Poll::Ready(Err(ReadError::Protocol(_))) => return (out, "protocol"),
                Poll::Ready(Err(ReadError::InvalidUtf8)) => return (out, "utf8"),
                Poll::Pending => panic!("slice reads are never pending"),
            }
            assert!(
                reader.buffered() <= 4 * (MAX + 14 + READ_CHUNK),
                "piece {i}: the reader holds {} bytes",
                reader.buffered()
            );
        }
    }
    (out, "end")
}

/// A frame as a client sends it: masked.
fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// `payload` as one message of `opcode` in fragments cut every `step`
/// bytes (at least one fragment): each fragment's frame, with the range of
/// the payload it carries.
fn fragments(opcode: u8, payload: &[u8], step: usize) -> Vec<(Vec<u8>, (usize, usize))> {
    let mut cuts: Vec<usize> = (step..payload.len()).step_by(step.max(1)).collect();
    cuts.push(payload.len());
    let mut out = Vec::new();
    let mut from = 0;
    for (i, &to) in cuts.iter().enumerate() {
        let first = if i == 0 { opcode } else { 0 };
        let fin = if i == cuts.len() - 1 { 0x80 } else { 0 };
        let mask = [i as u8, 0x5a, (to % 251) as u8, 0xc3];
        out.push((client_frame(fin | first, &payload[from..to], mask), (from, to)));
        from = to;
    }
    out
}

/// What the reader makes of the fragments, fed one frame at a time: the
/// message, or the error and the payload range of the fragment it came
/// with.
fn read_fragments(
    frames: &[(Vec<u8>, (usize, usize))],
) -> Result<Incoming, ((usize, usize), &'static str)> {
    let mut reader = Reader::new(MAX);
    let mut cx = Context::from_waker(Waker::noop());
    for (frame, range) in frames {
        let mut input: &[u8] = frame;
        match reader.poll_next(&mut cx, Pin::new(&mut input)) {
            Poll::Ready(Ok(m)) => return Ok(m),
            Poll::Ready(Err(ReadError::Eof)) => {}
            Poll::Ready(Err(ReadError::InvalidUtf8)) => return Err((*range, "utf8")),
            Poll::Ready(Err(e)) => panic!("fragments of a valid message refused: {e:?}"),
            Poll::Pending => panic!("slice reads are never pending"),
        }
        if reader.buffered() > MAX + 14 {
            panic!("the reader holds {} bytes", reader.buffered());
        }
    }
    Err(((usize::MAX, usize::MAX), "no message"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = read_all(bytes, bytes.len());
    let cut_up = read_all(bytes, usize::from(cut % 32) + 1);
    assert_eq!(whole, cut_up, "the same bytes cut differently");

    let payload = &bytes[..bytes.len().min(MAX)];
    let step = usize::from(cut >> 5) * 7 + 1;
    let text = fragments(0x1, payload, step);
    match (read_fragments(&text), std::str::from_utf8(payload)) {
        (Ok(Incoming::Text(t)), Ok(s)) => assert_eq!(t.as_str(), s),
        (Err(((from, to), "utf8")), Err(e)) => {
            // Not before the bad sequence starts arriving, and no later
            // than the fragment with the byte that makes it bad (at most
            // `valid_up_to + error_len`); a code point cut short by the end
            // of the message only with the last fragment.
            assert!(to > e.valid_up_to(), "refused at {from}..{to} before {e}");
            match e.error_len() {
                Some(n) => assert!(
                    from <= e.valid_up_to() + n,
                    "refused at {from}..{to}, later than {e}"
                ),
                None => assert_eq!(to, payload.len(), "{e}"),
            }
        }
        (got, want) => panic!("read {got:?}, payload UTF-8: {want:?}"),
    }
    let binary = fragments(0x2, payload, step);
    assert_eq!(read_fragments(&binary), Ok(Incoming::Binary));
});
