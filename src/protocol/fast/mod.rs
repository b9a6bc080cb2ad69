//! The fast path of [`parse`](super::parse): one pass over the text, no
//! intermediate buffering. Returns `None` whenever it is not certain that
//! serde would accept the text with this very result; the caller then asks
//! serde. The differential tests below hold it to that.

mod scanner;

use super::client::{
    Action, ClientMessage, Configure, ExpectedTrack, IceCandidate, Init, Present, RelayedError,
    Route, Sdp, Stream, Track,
};
use scanner::{Fields, Scanner, Val};

pub(super) fn parse(text: &str) -> Option<ClientMessage<'_>> {
    let mut sc = Scanner::new(text, 0);
    let mut f = sc.fields(1)?;
    sc.ws();
    if sc.i != text.len() {
        return None;
    }
    let message = match f.tag()? {
        "init" => {
            let init = Init {
                join: f.opt_str("join")?,
                watch: f.opt_str("watch")?,
                resume: f.opt_str("resume")?,
                token: f.opt_str("token")?,
            };
            init.request().ok()?;
            ClientMessage::Init(init)
        }
        "offer" => ClientMessage::Offer(f.sdp()?),
        "answer" => ClientMessage::Answer(f.sdp()?),
        "ice_candidate" => ClientMessage::IceCandidate(f.ice_candidate()?),
        "configure" => {
            // Only an array is `Other`; its elements are checked by `actions`.
            let Val::Other(at) = f.take("actions")? else {
                return None;
            };
            ClientMessage::Configure(Configure {
                actions: actions(text, at)?,
                route: f.route()?,
            })
        }
        "error" => ClientMessage::Error(RelayedError {
            code: f.req_str("code")?,
            message: f.opt_str("message")?,
            route: f.route()?,
        }),
        // Its other members are ignored, as serde ignores them.
        "ice_servers" => ClientMessage::IceServers,
        "close_room" => ClientMessage::CloseRoom,
        _ => return None,
    };
    Some(message)
}

/// The array of actions at byte `at` (already known to be valid JSON). An
/// element that is not an object (serde would read an array as an action)
/// is left to serde, which refuses it.
fn actions(text: &str, at: usize) -> Option<Vec<Action<'_>>> {
    let mut sc = Scanner::new(text, at);
    sc.eat(b'[')?;
    let mut out = Vec::new();
    sc.ws();
    if sc.peek()? == b']' {
        return Some(out);
    }
    loop {
        let mut f = sc.fields(2)?;
        let action = match f.tag()? {
            "add_stream" => Action::AddStream(f.stream()?),
            "remove_stream" => Action::RemoveStream(f.stream()?),
            "add_video_track" => Action::AddVideoTrack(f.track()?),
            "add_audio_track" => Action::AddAudioTrack(f.track()?),
            "expect_stream" => Action::ExpectStream(f.stream()?),
            "expect_video_track" => Action::ExpectVideoTrack(ExpectedTrack {
                stream_id: f.req_str("stream_id")?,
                id: f.req_str("id")?,
                dest: f.req_str("dest")?,
            }),
            _ => return None,
        };
        out.push(action);
        sc.ws();
        match sc.peek()? {
            b',' => sc.i += 1,
            b']' => return Some(out),
            _ => return None,
        }
    }
}

/// The message-level readings of an object's members.
impl<'a> Fields<'a> {
    fn route(&mut self) -> Option<Route<'a>> {
        let to = self.opt_str("to")?;
        let from = Present(self.take("from").is_some());
        Some(Route { to, from })
    }

    fn sdp(&mut self) -> Option<Sdp<'a>> {
        Some(Sdp {
            sdp: self.req_str("sdp")?,
            route: self.route()?,
        })
    }

    fn ice_candidate(&mut self) -> Option<IceCandidate<'a>> {
        let candidate = self.opt_str("candidate")?;
        let candiate = self.opt_str("candiate")?;
        if candidate.is_none() && candiate.is_none() {
            return None;
        }
        let sdp_mline_index = match self.take("sdp_mline_index") {
            None | Some(Val::Null) => None,
            Some(Val::UInt(n)) => Some(u32::try_from(n).ok()?),
            Some(_) => return None,
        };
        Some(IceCandidate {
            candidate,
            candiate,
            sdp_mid: self.opt_str("sdp_mid")?,
            sdp_mline_index,
            route: self.route()?,
        })
    }

    fn stream(&mut self) -> Option<Stream<'a>> {
        Some(Stream {
            id: self.req_str("id")?,
        })
    }

    fn track(&mut self) -> Option<Track<'a>> {
        Some(Track {
            stream_id: self.req_str("stream_id")?,
            id: self.req_str("id")?,
            src: self.req_str("src")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse_with_serde, CLIENT_TYPES};
    use super::super::{parse, ErrorCode};

    /// Whether the fast path accepted `text`; if it did, serde must accept
    /// it too, with an equal result.
    fn fast_agrees(text: &str) -> bool {
        match super::parse(text) {
            Some(m) => {
                assert_eq!(Ok(m), parse_with_serde(text), "{text}");
                true
            }
            None => false,
        }
    }

    const CORPUS: [&str; 19] = [
        r#"{"type": "init"}"#,
        r#"{"type":"init","watch":"634w44TblL5Dbd9a"}"#,
        r#"{"type":"init","join":"54ICxFae_Ip7TJE2","to":5,"from":[1]}"#,
        r#"{"type":"init","resume":"q2Vx0lDnZ1aK8m3B","join":null}"#,
        r#"{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n","to":"w4tch3rZ"}"#,
        r#"{"type":"answer","sdp":"v=0\r\n","x-extra":{"a":[1,2,{"b":null}],"c":true,"d":false}}"#,
        r#" {"type":"answer","sdp":"s \u00e9\u0000\/\"\\\b\f\t","from":null} "#,
        r#"{"type":"ice_candidate","sdp_mid":"video","sdp_mline_index":0,"candidate":"candidate:842163049 1 udp 1677729535 198.51.100.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0","to":"w4tch3rZ"}"#,
        r#"{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":4294967295,"candiate":"candidate:1 1 UDP 2122252543 198.51.100.2 50000 typ host"}"#,
        r#"{"type":"ice_candidate","sdp_mid":null,"sdp_mline_index":null,"candidate":"","n":-12}"#,
        r#"{"type":"configure","actions":[{"type":"add_stream","id":"webrtc_ros-stream-123"},{"type":"add_video_track","stream_id":"webrtc_ros-stream-123","id":"webrtc_ros-stream-123/subscribed_video","src":"ros_image:/camera/image_raw"}]}"#,
        r#"{"type":"configure","actions":[{"type":"remove_stream","id":"webrtc_ros-stream-123"}]}"#,
        r#"{"type":"configure","actions":[{"type":"add_audio_track","stream_id":"s","id":"s/audio","src":"local:","x":1}]}"#,
        r#"{"type":"configure","actions":[{"type":"expect_stream","id":"up"},{"type":"expect_video_track","stream_id":"up","id":"up/video","dest":"ros_image:/browser/image"}],"to":"abc"}"#,
        r#"{"type":"configure","actions":[]}"#,
        r#"{"type":"error","code":"not_allowed","message":"this robot does not share ros_image:/secret","to":"w4tch3rZ"}"#,
        r#"{"type":"ice_servers"}"#,
        r#"{"type":"ice_servers","to":"h0st1234","from":null,"x":[{"y":1}]}"#,
        r#"{"type":"close_room"}"#,
    ];

    #[test]
    fn the_fast_path_takes_the_protocol_examples() {
        for text in CORPUS {
            assert!(fast_agrees(text), "fast path declined {text}");
        }
        // Every type a peer may send is in the corpus.
        for kind in CLIENT_TYPES {
            let tag = format!(r#""type":"{kind}""#);
            assert!(CORPUS.iter().any(|t| t.contains(&tag)), "{kind}");
        }
    }

    #[test]
    fn the_fast_path_never_accepts_what_serde_refuses() {
        // Every deletion of one byte, and every replacement of one byte by
        // one that matters to JSON, of every example: whatever the fast path
        // accepts, serde accepts with an equal result.
        let swaps = b"\"\\{}[],:0123456789-+.eEntfalsru \t\x01/";
        let mut accepted = 0;
        let mut tried = 0;
        for text in CORPUS {
            let bytes = text.as_bytes();
            for i in 0..bytes.len() {
                let mut del = bytes.to_vec();
                del.remove(i);
                let mut variants = vec![del];
                for &c in swaps {
                    let mut v = bytes.to_vec();
                    v[i] = c;
                    variants.push(v);
                    let mut ins = bytes.to_vec();
                    ins.insert(i, c);
                    variants.push(ins);
                }
                for v in variants {
                    if let Ok(s) = String::from_utf8(v) {
                        tried += 1;
                        accepted += usize::from(fast_agrees(&s));
                    }
                }
            }
        }
        assert!(accepted > 1000 && tried > 50_000, "{accepted} of {tried}");
    }

    #[test]
    fn the_fast_path_leaves_rarities_to_serde() {
        for text in [
            r#"{"type":"offer","sdp":"s","sdp":"t"}"#,
            r#"{"type":"offer","type":"answer","sdp":"s"}"#,
            r#"{"\u0074ype":"offer","sdp":"s"}"#,
            r#"{"type":"offe\u0072","sdp":"s"}"#,
            r#"{"type":"offer","sdp":"s","n":1e400}"#,
            r#"{"type":"offer","sdp":"s","n":1.5}"#,
            r#"{"type":"offer","sdp":"\ud83d\ude00"}"#,
            r#"{"type":"ice_candidate","candidate":"c","sdp_mline_index":-0}"#,
            r#"{"type":"ice_candidate","candidate":"c","sdp_mline_index":4294967296}"#,
            r#"["init"]"#,
            "{\"type\":\"init\"}\u{feff}",
        ] {
            assert!(super::parse(text).is_none(), "{text}");
            // Whatever serde says stands.
            let _ = parse(text);
        }
        let deep = format!(
            r#"{{"type":"offer","sdp":"s","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(super::parse(&deep).is_none());
        assert_eq!(parse(&deep).unwrap_err().code, ErrorCode::BadJson);
    }

    #[test]
    fn array_form_actions_are_refused_by_both_paths() {
        // Each example's actions, with one written as an array instead of
        // an object: the fast path declines, serde refuses.
        for text in [
            r#"{"type":"configure","actions":[["add_stream","x"]]}"#,
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"s"},["add_video_track","s","s/v","ros_image:/c"]]}"#,
            r#"{"type":"configure","actions":[["expect_video_track","up","up/video","ros_image:/in"]],"to":"abc"}"#,
            r#"{"type":"configure","actions":[["remove_stream"]]}"#,
        ] {
            assert!(super::parse(text).is_none(), "{text}");
            assert_eq!(
                parse_with_serde(text).unwrap_err().code,
                ErrorCode::BadMessage,
                "{text}"
            );
        }
    }
}
