//! The robot owner's policy: what a viewer may ask of the robot. Pure, no I/O.
//!
//! The signalling server already refuses `expect_*` actions from watchers, but
//! the robot's owner decides what leaves (and enters) the robot, so the bridge
//! checks again with its own rules before anything reaches webrtc_ros:
//!
//! - an allow-list of media URIs (`--allow-src`, globs on the `src` of
//!   `add_video_track`/`add_audio_track` and the `dest` of
//!   `expect_video_track`);
//! - no `expect_*` actions from watchers (they would write media into the
//!   robot);
//! - at most `--max-viewers` robot connections at once.
//!
//! A refusal becomes an `error` message for that peer alone; the robot never
//! sees the refused message.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::protocol::{Action, ErrorCode, Role};

/// Why the bridge refused a peer's request: sent back to that peer only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code: `source_not_allowed`, `forbidden` or `viewer_limit`.
    pub code: ErrorCode,
    /// For humans.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The policy. Build it once from the command line.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: Option<GlobSet>,
    patterns: Vec<String>,
    max_viewers: usize,
}

/// Longest media URI echoed back in a refusal.
const MAX_ECHO: usize = 120;

impl Policy {
    /// A policy allowing the media URIs matched by `patterns` (every URI when
    /// `patterns` is empty) and at most `max_viewers` robot connections.
    ///
    /// Patterns are globs in which `*` and `?` stay within one `/`-separated
    /// segment and `**` crosses segments: `ros_image:/camera/*` allows
    /// `ros_image:/camera/image_raw` but not `ros_image:/camera/left/image_raw`.
    pub fn new(patterns: &[String], max_viewers: usize) -> Result<Self, globset::Error> {
        let allow = if patterns.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for p in patterns {
                set.add(GlobBuilder::new(p).literal_separator(true).build()?);
            }
            Some(set.build()?)
        };
        Ok(Policy {
            allow,
            patterns: patterns.to_vec(),
            max_viewers,
        })
    }

    /// The allow-list as given (empty: everything is allowed).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The maximum number of simultaneous robot connections.
    pub fn max_viewers(&self) -> usize {
        self.max_viewers
    }

    /// Whether `uri` may be read from (or written to).
    pub fn allows_uri(&self, uri: &str) -> bool {
        // A ROS graph name never has empty, `.` or `..` segments, nor control
        // characters; refusing them keeps `**` from reaching outside its tree.
        let odd = uri.chars().any(char::is_control)
            || uri
                .split('/')
                .skip(1)
                .any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if odd {
            return false;
        }
        match &self.allow {
            None => true,
            Some(set) => set.is_match(uri),
        }
    }

    /// Checks the actions of a `configure` from a peer of `role`.
    pub fn check_actions(&self, role: Role, actions: &[Action<'_>]) -> Result<(), Refusal> {
        for action in actions {
            if action.writes_into_receiver() && role != Role::Join {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "a watcher may not send expect_* actions: this robot takes no media from viewers",
                ));
            }
            if let Some(uri) = action.media_uri() {
                if !self.allows_uri(uri) {
                    return Err(Refusal::new(
                        ErrorCode::SourceNotAllowed,
                        format!("`{}` is not among the sources this robot shares", echo(uri)),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that one more robot connection may open while `open` are open.
    pub fn check_capacity(&self, open: usize) -> Result<(), Refusal> {
        if open >= self.max_viewers {
            return Err(Refusal::new(
                ErrorCode::ViewerLimit,
                format!(
                    "this robot already serves its maximum of {} viewers; try again later",
                    self.max_viewers
                ),
            ));
        }
        Ok(())
    }
}

fn echo(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match clean.char_indices().nth(MAX_ECHO) {
        Some((i, _)) => format!("{}…", &clean[..i]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, ClientMessage};

    fn actions(json: &str) -> Vec<Action<'_>> {
        match parse(json).unwrap() {
            ClientMessage::Configure(c) => c.actions,
            other => panic!("not configure: {other:?}"),
        }
    }

    fn video(src: &str) -> String {
        format!(
            r#"{{"type":"configure","actions":[{{"type":"add_stream","id":"s"}},{{"type":"add_video_track","stream_id":"s","id":"s/v","src":{}}}]}}"#,
            serde_json::to_string(src).unwrap()
        )
    }

    fn policy(patterns: &[&str]) -> Policy {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Policy::new(&p, 2).unwrap()
    }

    #[test]
    fn no_patterns_allow_every_source() {
        let p = policy(&[]);
        let text = video("ros_image:/anything/at/all");
        assert_eq!(p.check_actions(Role::Watch, &actions(&text)), Ok(()));
    }

    #[test]
    fn globs_stay_within_a_segment() {
        let p = policy(&["ros_image:/camera/*"]);
        assert!(p.allows_uri("ros_image:/camera/image_raw"));
        assert!(!p.allows_uri("ros_image:/camera/left/image_raw"));
        assert!(!p.allows_uri("ros_image:/secret/image_raw"));
        assert!(!p.allows_uri("local:/camera/image_raw"));
        assert!(!p.allows_uri("ros_image:/camera"));
        let p = policy(&["ros_image:/camera/**", "local:*"]);
        assert!(p.allows_uri("ros_image:/camera/left/image_raw"));
        assert!(p.allows_uri("local:"));
        assert!(p.allows_uri("local:mic"));
        assert!(!p.allows_uri("ros_image:/cameras/x"));
    }

    #[test]
    fn dot_segments_and_control_characters_are_refused() {
        let p = policy(&["ros_image:/camera/**"]);
        assert!(!p.allows_uri("ros_image:/camera/../secret/image"));
        assert!(!p.allows_uri("ros_image:/camera/./image"));
        assert!(!p.allows_uri("ros_image:/camera//image"));
        assert!(!p.allows_uri("ros_image:/camera/im\nage"));
        let open = policy(&[]);
        assert!(!open.allows_uri("ros_image:/a/../b"));
    }

    #[test]
    fn refuses_sources_outside_the_allow_list() {
        let p = policy(&["ros_image:/camera/*"]);
        let ok = video("ros_image:/camera/image_raw");
        assert_eq!(p.check_actions(Role::Watch, &actions(&ok)), Ok(()));
        let bad = video("ros_image:/secret/map");
        let err = p.check_actions(Role::Watch, &actions(&bad)).unwrap_err();
        assert_eq!(err.code, ErrorCode::SourceNotAllowed);
        assert!(
            err.message.contains("ros_image:/secret/map"),
            "{}",
            err.message
        );
        // Guests are held to the same list.
        assert_eq!(
            p.check_actions(Role::Join, &actions(&bad))
                .unwrap_err()
                .code,
            ErrorCode::SourceNotAllowed
        );
    }

    #[test]
    fn refusal_messages_are_bounded() {
        let p = policy(&["ros_image:/camera/*"]);
        let long = format!("ros_image:/{}", "x".repeat(5000));
        let err = p
            .check_actions(Role::Watch, &actions(&video(&long)))
            .unwrap_err();
        assert!(err.message.len() < 300);
    }

    #[test]
    fn watchers_may_not_send_expect_actions() {
        let p = policy(&[]);
        let text = r#"{"type":"configure","actions":[{"type":"expect_stream","id":"s"}]}"#;
        let err = p.check_actions(Role::Watch, &actions(text)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
        let text = r#"{"type":"configure","actions":[{"type":"expect_video_track","stream_id":"s","id":"t","dest":"ros_image:/in"}]}"#;
        assert_eq!(
            p.check_actions(Role::Watch, &actions(text))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        // A guest may, when the destination is allowed.
        assert_eq!(p.check_actions(Role::Join, &actions(text)), Ok(()));
        let strict = policy(&["ros_image:/camera/*"]);
        assert_eq!(
            strict
                .check_actions(Role::Join, &actions(text))
                .unwrap_err()
                .code,
            ErrorCode::SourceNotAllowed
        );
        // Whoever the server could not name is treated as a watcher by the
        // caller; a host never sends to itself.
        assert_eq!(
            p.check_actions(Role::Host, &actions(text))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn caps_the_number_of_viewers() {
        let p = policy(&[]);
        assert_eq!(p.max_viewers(), 2);
        assert_eq!(p.check_capacity(0), Ok(()));
        assert_eq!(p.check_capacity(1), Ok(()));
        let err = p.check_capacity(2).unwrap_err();
        assert_eq!(err.code, ErrorCode::ViewerLimit);
        assert!(err.message.contains('2'));
    }

    #[test]
    fn bad_patterns_are_reported() {
        assert!(Policy::new(&["ros_image:/camera/[".to_string()], 1).is_err());
    }
}
