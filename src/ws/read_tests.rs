//! Tests of the frame reader (`read.rs`).

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
fn read_in_pieces(bytes: &[u8], piece: usize, max: usize) -> (Vec<Incoming>, Result<(), String>) {
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
        (client_frame(0xc1, b"hi"), "protocol"),     // rsv1
        (client_frame(0x83, b"hi"), "protocol"),     // reserved opcode
        (client_frame(0x8b, b"hi"), "protocol"),     // reserved control opcode
        (client_frame(0x09, b"hi"), "protocol"),     // fragmented ping
        (client_frame(0x80, b"hi"), "protocol"),     // stray continuation
        (client_frame(0x88, &[3]), "protocol"),      // close of one byte
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
