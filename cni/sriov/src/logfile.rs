//! The sriov plugin's `logFile`, confined. The plugin runs as root and its config may be a
//! tenant's (a NAD's `spec.config`), so the file it appends to must be one an admin would expect:
//! an absolute path under `/var/log/` without `.`, `..` or empty components, reached without
//! following a symlink anywhere below `/var/log` (each directory opened with `O_NOFOLLOW`
//! relative to the one before), a regular file with no other hard link, created mode 0600,
//! opened for appending. Anything else is refused with the reason; the binary then logs to
//! stderr and says why (a log path never fails an invocation).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

/// The only directory the sriov plugin's log files may be under.
pub const LOG_DIR: &str = "/var/log";

#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error("log file {path:?} is not an absolute path under {root}/")]
    NotUnder { path: String, root: String },
    #[error("log file {path:?} has a component {component:?}: \".\", \"..\" and empty components are not allowed")]
    Component { path: String, component: String },
    #[error("log file {path:?}: {} is a symlink", .at.display())]
    Symlink { path: String, at: PathBuf },
    #[error("log file {path:?}: {} is not a directory", .at.display())]
    NotDirectory { path: String, at: PathBuf },
    #[error("log file {path:?} is not a regular file")]
    NotRegular { path: String },
    #[error("log file {path:?} has other hard links")]
    HardLinked { path: String },
    #[error("log file {path:?}: opening {} failed", .at.display())]
    Open {
        path: String,
        at: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Opens `path` for appending when it is a file the plugin may log to (under [`LOG_DIR`]).
pub fn open_confined(path: &str) -> Result<File, LogFileError> {
    open_beneath(Path::new(LOG_DIR), path)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Opens `path`, which must be under `root` (followed itself: the admin's), for appending; every
/// component below `root` is checked as [`open_confined`] describes.
pub fn open_beneath(root: &Path, path: &str) -> Result<File, LogFileError> {
    let root_s = root.to_string_lossy();
    let root_s = root_s.trim_end_matches('/');
    let not_under = || LogFileError::NotUnder {
        path: path.to_string(),
        root: root_s.to_string(),
    };
    let rel = path
        .strip_prefix(root_s)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(not_under)?;
    let parts: Vec<&str> = rel.split('/').collect();
    if let Some(bad) = parts
        .iter()
        .find(|c| c.is_empty() || **c == "." || **c == ".." || c.contains('\0'))
    {
        return Err(LogFileError::Component {
            path: path.to_string(),
            component: bad.to_string(),
        });
    }
    let Some((file, dirs)) = parts.split_last() else {
        return Err(not_under());
    };
    let mut at = root.to_path_buf();
    let open_err = |at: &Path, source| LogFileError::Open {
        path: path.to_string(),
        at: at.to_path_buf(),
        source,
    };
    let mut dir: OwnedFd = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open_err(&at, e))?;
    for name in dirs {
        at.push(name);
        match fstatat(&dir, *name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(&st) == SFlag::S_IFLNK => {
                return Err(LogFileError::Symlink {
                    path: path.to_string(),
                    at,
                })
            }
            Ok(st) if kind(&st) != SFlag::S_IFDIR => {
                return Err(LogFileError::NotDirectory {
                    path: path.to_string(),
                    at,
                })
            }
            Ok(_) => {}
            Err(e) => return Err(open_err(&at, e)),
        }
        // O_NOFOLLOW: a symlink swapped in since the check is refused, not followed.
        dir = openat(
            &dir,
            *name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_err(&at, e))?;
    }
    at.push(file);
    match fstatat(&dir, *file, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if kind(&st) == SFlag::S_IFLNK => {
            return Err(LogFileError::Symlink {
                path: path.to_string(),
                at,
            })
        }
        // Not even opened: opening a FIFO or a device can block or act.
        Ok(st) if kind(&st) != SFlag::S_IFREG => {
            return Err(LogFileError::NotRegular {
                path: path.to_string(),
            })
        }
        Ok(_) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(open_err(&at, e)),
    }
    let fd = openat(
        &dir,
        *file,
        OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| match e {
        Errno::ELOOP => LogFileError::Symlink {
            path: path.to_string(),
            at: at.clone(),
        },
        e => open_err(&at, e),
    })?;
    let st = fstat(&fd).map_err(|e| open_err(&at, e))?;
    if kind(&st) != SFlag::S_IFREG {
        return Err(LogFileError::NotRegular {
            path: path.to_string(),
        });
    }
    if st.st_nlink > 1 {
        return Err(LogFileError::HardLinked {
            path: path.to_string(),
        });
    }
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn a_plain_path_under_the_root_is_created_0600_and_appended() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        let p = format!("{}/sub/sriov.log", root.path().display());
        open_beneath(root.path(), &p)
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        open_beneath(root.path(), &p)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn anything_else_is_refused_and_nothing_is_written_outside() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root.path().display().to_string();
        let target = outside.path().join("victim");
        std::fs::write(&target, b"keep\n").unwrap();
        symlink(&target, root.path().join("file-link")).unwrap();
        symlink(outside.path(), root.path().join("dir-link")).unwrap();
        std::fs::hard_link(&target, root.path().join("hard")).unwrap();
        std::fs::create_dir(root.path().join("adir")).unwrap();
        nix::unistd::mkfifo(&root.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let cases = [
            (
                outside.path().join("new").display().to_string(),
                "not an absolute path under",
            ),
            ("relative.log".to_string(), "not an absolute path under"),
            (format!("{r}/../{}", target.display()), "\"..\""),
            (format!("{r}/./x.log"), "\".\""),
            (format!("{r}//x.log"), "\"\""),
            (format!("{r}/"), "\"\""),
            (format!("{r}/file-link"), "symlink"),
            (format!("{r}/dir-link/victim"), "symlink"),
            (format!("{r}/dir-link/new.log"), "symlink"),
            (format!("{r}/hard"), "hard links"),
            (format!("{r}/adir"), "not a regular file"),
            (format!("{r}/fifo"), "not a regular file"),
            (format!("{r}/nodir/x.log"), "opening"),
        ];
        for (p, why) in cases {
            let e = open_beneath(root.path(), &p).unwrap_err();
            assert!(e.to_string().contains(why), "{p}: {e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
        assert!(!outside.path().join("new").exists());
        assert!(!outside.path().join("new.log").exists());
    }
}
