//! Network namespaces: opening them (by path, by pid, the calling thread's), creating and deleting
//! named ones the way `ip netns add/delete` does, and running work inside one.
//!
//! Work inside a namespace runs on a fresh OS thread that enters the namespace and then ends, so
//! the caller's thread never changes namespace and there is nothing to restore.

use std::any::Any;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{fstat, Mode};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::netlink::describe_errno;
use crate::paths::{is_plain_name, SysRoot};

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("opening network namespace {} failed: {}", .path.display(), describe_errno(*.errno))]
    Open { path: PathBuf, errno: Errno },

    #[error("{} is not a network namespace", .path.display())]
    NotANetNs { path: PathBuf },

    #[error("{name:?} is not a valid network namespace name: it must be a plain file name")]
    InvalidName { name: String },

    #[error("network namespace {name} already exists")]
    AlreadyExists { name: String },

    #[error("creating network namespace {name} failed while {step}: {}", describe_errno(*.errno))]
    Create {
        name: String,
        step: &'static str,
        errno: Errno,
    },

    #[error("deleting network namespace {name} failed while {step}: {}", describe_errno(*.errno))]
    Delete {
        name: String,
        step: &'static str,
        errno: Errno,
    },

    #[error("entering network namespace {} failed: {}", .path.display(), describe_errno(*.errno))]
    Enter { path: PathBuf, errno: Errno },

    #[error("starting a thread for network namespace {} failed: {reason}", .path.display())]
    Thread { path: PathBuf, reason: String },

    #[error("work inside network namespace {} panicked: {message}", .path.display())]
    Panicked { path: PathBuf, message: String },
}

impl NetNsError {
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetNsError::Open { errno, .. }
            | NetNsError::Create { errno, .. }
            | NetNsError::Delete { errno, .. }
            | NetNsError::Enter { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// An open network namespace: the namespace file descriptor and the path it was opened from.
pub struct NetNs {
    fd: OwnedFd,
    path: PathBuf,
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetNs").field("path", &self.path).finish()
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

impl NetNs {
    /// Opens the namespace file at `path` (`/proc/<pid>/ns/net`, `/run/netns/<name>`, a CNI_NETNS
    /// path) and checks that it is a namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref().to_path_buf();
        let fd =
            open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| {
                NetNsError::Open {
                    path: path.clone(),
                    errno,
                }
            })?;
        let fs = fstatfs(&fd).map_err(|errno| NetNsError::Open {
            path: path.clone(),
            errno,
        })?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(NetNsError::NotANetNs { path });
        }
        Ok(Self { fd, path })
    }

    /// The namespace of process `pid`.
    pub fn of_pid(root: &SysRoot, pid: u32) -> Result<Self, NetNsError> {
        Self::open(root.proc_netns(pid))
    }

    /// The calling thread's namespace (`/proc/thread-self/ns/net`).
    pub fn current() -> Result<Self, NetNsError> {
        Self::open(SysRoot::host().proc_thread_self_netns())
    }

    /// The named namespace `<root>/run/netns/<name>`.
    pub fn named(root: &SysRoot, name: &str) -> Result<Self, NetNsError> {
        Self::open(named_path(root, name)?)
    }

    /// Creates a new namespace and pins it at `<root>/run/netns/<name>` as `ip netns add` does,
    /// so `ip netns exec <name>` and `ip netns list` see it.
    pub fn create_named(root: &SysRoot, name: &str) -> Result<Self, NetNsError> {
        let target = named_path(root, name)?;
        let dir = root.run_netns();
        let err = |step: &'static str| {
            move |errno: Errno| NetNsError::Create {
                name: name.to_string(),
                step,
                errno,
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| err("creating the namespace directory")(errno_of(&e)))?;
        make_shared_mount(&dir).map_err(err("making the namespace directory a shared mount"))?;
        match open(
            &target,
            OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => drop(fd),
            Err(Errno::EEXIST) => {
                return Err(NetNsError::AlreadyExists {
                    name: name.to_string(),
                })
            }
            Err(errno) => return Err(err("creating the mount point")(errno)),
        }
        let source = root.proc_thread_self_netns();
        let created = std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name(format!("netns-add-{name}"))
                .spawn_scoped(s, || -> Result<(), NetNsError> {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(err("creating the namespace (unshare)"))?;
                    mount(
                        Some(&source),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(err("bind-mounting the namespace"))
                });
            match worker {
                Ok(handle) => match handle.join() {
                    Ok(r) => r,
                    Err(payload) => Err(NetNsError::Panicked {
                        path: target.clone(),
                        message: panic_message(payload.as_ref()),
                    }),
                },
                Err(e) => Err(NetNsError::Thread {
                    path: target.clone(),
                    reason: e.to_string(),
                }),
            }
        });
        let opened = created.and_then(|()| Self::open(&target));
        if opened.is_err() {
            // Leave nothing half made: no mount, no file.
            let _ = umount2(&target, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&target);
        }
        opened
    }

    /// Removes the named namespace as `ip netns delete` does (lazy unmount, then the file). The
    /// namespace lives on while something still holds it. Already gone is not an error.
    pub fn delete_named(root: &SysRoot, name: &str) -> Result<(), NetNsError> {
        let target = named_path(root, name)?;
        let err = |step: &'static str| {
            move |errno: Errno| NetNsError::Delete {
                name: name.to_string(),
                step,
                errno,
            }
        };
        match umount2(&target, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (a leftover file); ENOENT: already gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(err("unmounting")(errno)),
        }
        match std::fs::remove_file(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("removing the mount point")(errno_of(&e))),
        }
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's identity: the device and inode of its nsfs file.
    pub fn id(&self) -> Result<(u64, u64), NetNsError> {
        let st = fstat(&self.fd).map_err(|errno| NetNsError::Open {
            path: self.path.clone(),
            errno,
        })?;
        #[allow(clippy::useless_conversion)]
        Ok((u64::from(st.st_dev), u64::from(st.st_ino)))
    }

    /// Whether both handles refer to the same namespace.
    pub fn same_as(&self, other: &NetNs) -> Result<bool, NetNsError> {
        Ok(self.id()? == other.id()?)
    }

    /// Runs `f` on a new OS thread that has entered this namespace, waits for it and returns its
    /// result. The calling thread never changes namespace. A panic in `f` becomes
    /// [`NetNsError::Panicked`].
    ///
    /// Inside `f`, netlink sockets ([`crate::netlink::Netlink::open`]) and any other sockets talk
    /// to this namespace, and child processes spawned by `f` (e.g. `ping` through
    /// `std::process::Command`) run in it, since a child inherits the namespace of the thread
    /// that forks it. `/sys/class/net` is not affected: sysfs shows the namespace it was mounted
    /// in. Threads that `f` starts inherit this namespace too.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("netns-run".to_string())
                .spawn_scoped(s, || -> Result<T, NetNsError> {
                    setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                        NetNsError::Enter {
                            path: self.path.clone(),
                            errno,
                        }
                    })?;
                    Ok(f())
                });
            match worker {
                Ok(handle) => match handle.join() {
                    Ok(r) => r,
                    Err(payload) => Err(NetNsError::Panicked {
                        path: self.path.clone(),
                        message: panic_message(payload.as_ref()),
                    }),
                },
                Err(e) => Err(NetNsError::Thread {
                    path: self.path.clone(),
                    reason: e.to_string(),
                }),
            }
        })
    }
}

fn named_path(root: &SysRoot, name: &str) -> Result<PathBuf, NetNsError> {
    if !is_plain_name(name) || name.chars().any(char::is_control) {
        return Err(NetNsError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(root.run_netns().join(name))
}

/// Makes `dir` a shared mount point, bind-mounting it onto itself first when it is not a mount
/// point, so namespace mounts under it propagate to other mount namespaces (as `ip netns add`).
fn make_shared_mount(dir: &Path) -> Result<(), Errno> {
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            shared()
        }
        Err(errno) => Err(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_outside_are_plain_file_names() {
        let root = SysRoot::new("/tmp/fx");
        for bad in ["", ".", "..", "a/b", "../etc", "x\0y", "tab\tname"] {
            assert!(
                matches!(named_path(&root, bad), Err(NetNsError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            named_path(&root, "cni-1234").unwrap(),
            PathBuf::from("/tmp/fx/run/netns/cni-1234")
        );
    }

    #[test]
    fn opening_a_missing_namespace_names_the_path() {
        let e = NetNs::open("/nonexistent/ns").unwrap_err();
        assert_eq!(
            e.to_string(),
            "opening network namespace /nonexistent/ns failed: no such file or directory (ENOENT)"
        );
    }

    #[test]
    fn a_regular_file_is_not_a_namespace() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            NetNs::open(f.path()),
            Err(NetNsError::NotANetNs { .. })
        ));
    }
}
