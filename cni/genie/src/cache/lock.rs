//! Per-attachment locks: ADD, DEL and CHECK of one pod attachment (container ID + CNI_IFNAME)
//! run one at a time, so a DEL that the runtime sends while an ADD it gave up on is still running
//! waits for that ADD instead of racing it (and an ADD's last record write cannot bring back a
//! record that DEL removed).
//!
//! The lock is `flock(2)` on `<cniDir>/locks/<containerID>-<ifname>.lock` (mode 0600, directory
//! 0700). While it is held, its descriptor is inheritable: every delegate (and whatever a delegate
//! starts) shares the lock, so when genie is killed mid-ADD the kernel keeps the lock until the
//! last of its delegates has exited too. A DEL that follows waits for them, then works from the
//! record. A plugin that leaves a daemon behind holding inherited descriptors would hold the lock
//! as long as that daemon lives; the DEL then fails with "try again later" naming the container.
//!
//! A lock file is removed by the holder that finished the attachment (a successful DEL); a waiter
//! that then gets the lock of the removed file notices that the path no longer names what it
//! locked and locks the new file instead, so two holders never coexist.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, Flock, FlockArg};

use super::{ensure_dir, io, CacheDir, CacheError, PodKey};

const LOCKS_DIR: &str = "locks";

/// How long a DEL or CHECK waits for the attachment's lock by default.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// First and longest pause between two tries while the lock is busy.
const RETRY_FIRST: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_millis(100);

/// A held attachment lock; released when dropped.
#[derive(Debug)]
pub struct AttachmentLock {
    path: PathBuf,
    held: Flock<File>,
}

impl CacheDir {
    fn locks_dir(&self) -> PathBuf {
        self.root.join(LOCKS_DIR)
    }

    /// The lock file of `key`.
    pub fn lock_path(&self, key: &PodKey) -> PathBuf {
        self.locks_dir()
            .join(format!("{}-{}.lock", key.container_id, key.ifname))
    }

    /// Takes the lock of `key`, waiting up to `wait` while another ADD, DEL or CHECK of the same
    /// attachment (or a delegate one of them left running) holds it. [`CacheError::Busy`] when
    /// the wait ran out.
    pub fn lock(&self, key: &PodKey, wait: Duration) -> Result<AttachmentLock, CacheError> {
        let started = Instant::now();
        let deadline = started + wait;
        let mut pause = RETRY_FIRST;
        loop {
            if let Some(lock) = self.try_lock(key)? {
                if started.elapsed() > RETRY_MAX {
                    tracing::info!(waited = ?started.elapsed(), "waited for the attachment lock");
                }
                return Ok(lock);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CacheError::Busy {
                    container_id: key.container_id.clone(),
                    ifname: key.ifname.clone(),
                    waited: wait,
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Takes the lock of `key` if nobody holds it; `None` when it is busy.
    pub fn try_lock(&self, key: &PodKey) -> Result<Option<AttachmentLock>, CacheError> {
        let dir = self.locks_dir();
        ensure_dir(&dir)?;
        let path = self.lock_path(key);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io("opening lock", &path))?;
            let held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(h) => h,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(io("locking", &path)(e.into())),
            };
            // The previous holder may have removed the file after we opened it: then we hold the
            // lock of a name nobody else will find; start again with the current file.
            if !same_file(&held, &path)? {
                continue;
            }
            // Inheritable while held: the delegates keep the lock if we are killed.
            fcntl(held.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(|e| io("making lock inheritable", &path)(e.into()))?;
            return Ok(Some(AttachmentLock { path, held }));
        }
    }
}

fn same_file(held: &File, path: &Path) -> Result<bool, CacheError> {
    let ours = held.metadata().map_err(io("inspecting lock", path))?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == ours.dev() && now.ino() == ours.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("inspecting lock", path)(e)),
    }
}

impl AttachmentLock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file, then releases the lock: for the holder that finished the
    /// attachment (nothing of it is left to serialize against).
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "lock file not removed");
        }
    }
}

impl Drop for AttachmentLock {
    fn drop(&mut self) {
        // Not inherited by anything started after this point (the lock itself goes with the
        // Flock's own drop, for every descriptor sharing it).
        let _ = fcntl(self.held.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn one_holder_at_a_time_and_a_bounded_wait() {
        let d = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(d.path());
        let key = PodKey::new("c1", "eth0").unwrap();
        let first = cache.lock(&key, Duration::ZERO).unwrap();
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(d.path().join(LOCKS_DIR))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert!(cache.try_lock(&key).unwrap().is_none());
        let t0 = Instant::now();
        let e = cache.lock(&key, Duration::from_millis(200)).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert!(e.to_string().contains("c1"), "{e}");
        assert_eq!(crate::genie::error::cni_code(e), 11);
        // Another attachment of the same container is independent.
        let other = PodKey::new("c1", "eth1").unwrap();
        assert!(cache.try_lock(&other).unwrap().is_some());
        drop(first);
        assert!(cache.try_lock(&key).unwrap().is_some());
    }

    #[test]
    fn a_waiter_follows_a_removed_lock_file() {
        let d = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(d.path());
        let key = PodKey::new("c2", "eth0").unwrap();
        let first = cache.lock(&key, Duration::ZERO).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| cache.lock(&key, Duration::from_secs(10)).unwrap());
            first.remove();
            let second = waiter.join().unwrap();
            // The waiter holds the lock of the file that is at the path now.
            assert!(second.path().exists());
            assert!(cache.try_lock(&key).unwrap().is_none());
        });
    }
}
