//! The state file: the room's resume secret and links, so that a restarted
//! bridge gets its room (and so its links) back within the server's grace
//! period.
//!
//! The resume secret changes every time the room is resumed, so the file is
//! rewritten after every (re)connection. Writes are atomic (a temporary file in
//! the same directory, synced, then renamed over the old one) and the file is
//! readable by its owner only (mode 0600): the secret lets whoever holds it
//! take the room over.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::BridgeError;

/// Version of the file's format.
const VERSION: u32 = 1;

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRoom {
    /// Format version.
    pub version: u32,
    /// The signalling server the room lives on (a secret is meaningless
    /// elsewhere).
    pub server: String,
    /// The secret that resumes hosting the room (it changes on every resume).
    pub resume: String,
    /// The room's join token.
    pub join: String,
    /// The room's watch token.
    pub watch: String,
    /// The page link for full peers.
    pub join_url: String,
    /// The page link for viewers.
    pub watch_url: String,
    /// When the file was written, in seconds since the Unix epoch.
    pub saved_at: u64,
}

impl SavedRoom {
    /// A record of the current room.
    pub fn new(
        server: &str,
        resume: &str,
        join: &str,
        watch: &str,
        join_url: &str,
        watch_url: &str,
    ) -> Self {
        SavedRoom {
            version: VERSION,
            server: server.to_string(),
            resume: resume.to_string(),
            join: join.to_string(),
            watch: watch.to_string(),
            join_url: join_url.to_string(),
            watch_url: watch_url.to_string(),
            saved_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// Checks that a state file can be written at `path`: its directory exists.
pub fn check_dir(path: &Path) -> Result<(), BridgeError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if dir.is_some_and(|d| !d.is_dir()) {
        return Err(BridgeError::NoStateDir(path.to_path_buf()));
    }
    Ok(())
}

/// Reads the state file: `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> io::Result<Option<SavedRoom>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let saved: SavedRoom =
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if saved.version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown state file version {}", saved.version),
        ));
    }
    Ok(Some(saved))
}

/// Writes the state file atomically, mode 0600.
pub fn save(path: &Path, room: &SavedRoom) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(room).map_err(io::Error::other)?;
    text.push('\n');
    let tmp = temp_path(path);
    let result = write_new(&tmp, text.as_bytes()).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; not every file system can sync a
    // directory, and the file is complete either way.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Removes the state file (the room it named is gone); a missing file is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "bridge-state".into());
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // A leftover temporary file may have had other permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "bridge-state-test-{}-{}",
            std::process::id(),
            crate::token::new_peer_id().as_str()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn room(resume: &str) -> SavedRoom {
        SavedRoom::new(
            "wss://signal.example/webrtc",
            resume,
            "54ICxFae_Ip7TJE2",
            "634w44TblL5Dbd9a",
            "https://signal.example/?join=54ICxFae_Ip7TJE2",
            "https://signal.example/?watch=634w44TblL5Dbd9a",
        )
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let d = dir();
        let path = d.join("bridge.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &room("Zm9vYmFyYmF6cXV4")).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().resume, "Zm9vYmFyYmF6cXV4");
        save(&path, &room("cXV4YmF6YmFyZm9v")).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.resume, "cXV4YmF6YmFyZm9v");
        assert_eq!(back.watch, "634w44TblL5Dbd9a");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("bridge.json")]);
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir();
        let path = d.join("bridge.json");
        fs::write(&path, "{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &room("Zm9vYmFyYmF6cXV4")).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_room() {
        let d = dir();
        let path = d.join("bridge.json");
        fs::write(&path, "not json").unwrap();
        assert!(load(&path).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
