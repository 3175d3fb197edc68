//! One reconciler per local group: `kvpilot local up` holds an exclusive `flock` on
//! `<group>/operator.pid` for as long as it runs, and writes its pid into it.
//!
//! The kernel drops an `flock` when the last descriptor of the open file closes, so a run that
//! was killed leaves no stale lock: the file stays, but nothing holds it. The descriptor is
//! opened close-on-exec (Rust's default), so the member processes a run starts, which outlive
//! it, never inherit the lock. `local status` and `local down` ask the same lock whether a
//! reconciler runs, which also tells them that the pid in the file is alive and is that
//! reconciler (a pid left by a killed run may belong to another process by now).

use rustix::fs::{FlockOperation, flock};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lock file in a group's directory; it also holds the running reconciler's pid.
pub const LOCK_FILE: &str = "operator.pid";
/// A probe ([`holder`]) holds a shared lock for a moment: an exclusive attempt that meets one
/// is tried again this many times, [`RETRY_PAUSE`] apart, before it counts as refused.
const RETRIES: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Why the group's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "group in {dir} is already running (pid {}): one `kvpilot local up` per state \
         directory; stop it with Ctrl-C or `kvpilot local down`",
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held lock of one group; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock of the group in `dir` (created if missing) and records this process's
    /// pid in it; refused, with the holder's pid, while another run holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let mut attempt = 0;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if attempt < RETRIES => {
                    attempt += 1;
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        pid: read_pid(&mut file),
                    });
                }
                Err(e) => return Err(io_err(e.into())),
            }
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        file.flush().map_err(io_err)?;
        Ok(StateLock { _file: file })
    }
}

/// Whether a reconciler holds the lock of the group in `dir` now: `Some(pid)` if one does
/// (`None` inside when its pid cannot be read yet), `None` if none does (never started, or
/// stopped or killed since).
pub fn holder(dir: &Path) -> io::Result<Option<Option<u32>>> {
    let mut file = match File::open(dir.join(LOCK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        // Nobody holds it; the shared lock goes with `file` at once.
        Ok(()) => Ok(None),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(Some(read_pid(&mut file))),
        Err(e) => Err(e.into()),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()).unwrap(), None, "no file yet");
        let held = StateLock::acquire(dir.path()).unwrap();
        let me = std::process::id();
        assert_eq!(holder(dir.path()).unwrap(), Some(Some(me)));
        let refused = StateLock::acquire(dir.path()).unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains(&format!("already running (pid {me})")),
            "{text}"
        );
        drop(held);
        // The file stays, but nothing holds it: not a stale lock.
        assert!(dir.path().join(LOCK_FILE).exists());
        assert_eq!(holder(dir.path()).unwrap(), None);
        let again = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(holder(dir.path()).unwrap(), Some(Some(me)));
        drop(again);
    }
}
