//! Time-bounded sysfs writes and bounded polling, shared by provisioning and binding.
//!
//! Some sysfs writes block for a long time (`sriov_numvfs` waits for the PF driver to create every
//! VF; a driver probe can hang on broken hardware). Each write therefore runs on its own helper
//! thread and the caller waits at most a given time. A write that does not answer in time leaves
//! its thread blocked in the kernel; there is no way to cancel a write(2) already in progress.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often [`poll_until`] looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Why a sysfs write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot open {path} for writing")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused {value:?} written to {path}")]
    Refused {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path} did not finish within {timeout:?}")]
    Timeout {
        path: PathBuf,
        value: String,
        timeout: Duration,
    },
    #[error("cannot start a helper thread to write {path}")]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WriteError {
    /// The errno the kernel answered the write itself with (not the open).
    pub fn refused_errno(&self) -> Option<i32> {
        match self {
            WriteError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            WriteError::Open { path, .. }
            | WriteError::Refused { path, .. }
            | WriteError::Timeout { path, .. }
            | WriteError::Thread { path, .. } => path,
        }
    }
}

/// Writes `value` to the existing attribute `path` in one write(2), giving up after `timeout`.
pub fn write_bounded(path: &Path, value: &str, timeout: Duration) -> Result<(), WriteError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let owned_path = path.to_path_buf();
    let owned_value = value.to_string();
    let spawned = std::thread::Builder::new()
        .name("sysfs-write".into())
        .spawn(move || {
            let result = write_now(&owned_path, &owned_value);
            // The receiver is gone when the caller timed out; nothing is left to tell.
            let _ = tx.send(result);
        });
    if let Err(source) = spawned {
        return Err(WriteError::Thread {
            path: path.to_path_buf(),
            source,
        });
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(WriteError::Timeout {
            path: path.to_path_buf(),
            value: value.to_string(),
            timeout,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(WriteError::Thread {
            path: path.to_path_buf(),
            source: std::io::Error::other("the helper thread ended without an answer"),
        }),
    }
}

fn write_now(path: &Path, value: &str) -> Result<(), WriteError> {
    // No O_CREAT: a missing attribute must fail, not become a new file.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|source| WriteError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(value.as_bytes())
        .map_err(|source| WriteError::Refused {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// The time left until `deadline` (zero once it has passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Calls `check` until it returns `Some`, an error, or `deadline` passes (then `Ok(None)`).
/// `check` always runs at least once.
pub fn poll_until<T, E>(
    deadline: Instant,
    mut check: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    loop {
        if let Some(v) = check()? {
            return Ok(Some(v));
        }
        let left = remaining(deadline);
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(left.min(POLL_INTERVAL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_existing_attributes_and_never_create() {
        let dir = tempfile::tempdir().unwrap();
        let attr = dir.path().join("sriov_numvfs");
        std::fs::write(&attr, "12\n").unwrap();
        write_bounded(&attr, "4\n", Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read_to_string(&attr).unwrap(), "4\n");

        let missing = dir.path().join("driver_override");
        let err = write_bounded(&missing, "vfio-pci", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, WriteError::Open { .. }), "{err:?}");
        assert!(!missing.exists());
        assert_eq!(err.path(), missing);
    }

    #[test]
    fn a_write_that_blocks_times_out_naming_the_path() {
        // Opening a FIFO for writing blocks until a reader appears: a stand-in for a stuck
        // sysfs write.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("sriov_numvfs");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = write_bounded(&fifo, "4\n", Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, WriteError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("sriov_numvfs"));
        assert!(err.to_string().contains("did not finish within 100ms"));
        // Release the blocked helper thread.
        let _reader = std::fs::File::open(&fifo).unwrap();
    }

    #[test]
    fn polling_stops_at_the_deadline() {
        let start = Instant::now();
        let mut calls = 0;
        let got: Result<Option<()>, ()> = poll_until(start + Duration::from_millis(60), || {
            calls += 1;
            Ok(None)
        });
        assert_eq!(got, Ok(None));
        assert!(calls >= 2);
        assert!(start.elapsed() >= Duration::from_millis(60));
        let now: Result<Option<u8>, ()> = poll_until(start, || Ok(Some(7)));
        assert_eq!(now, Ok(Some(7)));
    }
}
