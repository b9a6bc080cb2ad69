//! Loopback connections (the test kit's): WebSocket clients spread over
//! 127.0.0.x source addresses, reads that say what came, and a minimal HTTP
//! GET for /healthz and /metrics; and the soak's own random choices.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use testkit::frames::{read, read_to_end, read_until, send, Read};
pub use testkit::http::http_get;
pub use testkit::net::{ConnectError, Net};

pub type Ws = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Ws, Message>;
pub type Stream = SplitStream<Ws>;

/// Time allowed for any one step (a connect, an expected reply).
pub const STEP: Duration = testkit::WAIT;

/// A random 16-character base64url string (token-shaped, never issued).
pub fn random_token(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..16)
        .map(|_| ALPHABET[(rng.next() % 64) as usize] as char)
        .collect()
}

/// A small xorshift generator: reproducible from `--seed`, and enough for
/// choosing what a client does.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}
