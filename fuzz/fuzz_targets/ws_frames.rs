//! The WebSocket frame reader (`signal_server::ws::Reader`): every byte a
//! peer sends after the upgrade goes through it before anything else.
//!
//! Input layout: the first byte chooses how the rest is cut into reads (a
//! peer's bytes arrive in arbitrary pieces); the rest is the byte stream.
//!
//! Invariants:
//! - nothing panics, whatever the bytes and however they are cut;
//! - text messages are valid UTF-8 (by type) and never over the limit;
//! - reading ends (an error or the end of input) without looping;
//! - the reader holds a bounded number of bytes: at most what one message
//!   and one read can need, and nothing once its input is drained;
//! - the same bytes cut differently give the same messages.
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

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = read_all(bytes, bytes.len());
    let cut_up = read_all(bytes, usize::from(cut % 32) + 1);
    assert_eq!(whole, cut_up, "the same bytes cut differently");
});
