//! Appending records: one `write(2)` of one whole line on an `O_APPEND` descriptor, so that lines
//! of concurrent writers (many genie processes) never interleave. The file is created 0600 in a
//! directory created 0700. When a line would take the file past `max_size`, the set is rotated
//! (`x.log` → `x.log.1` → ... → `x.log.<max_files-1>`, the oldest dropped) under an exclusive
//! `flock` on `x.log.lock`, so that concurrent writers rotate once; a writer that opened the file
//! before a rotation finishes its line in the rotated file, whole.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{flock, FlockOperation, OFlags};
use tracing::warn;

use crate::record::Record;

/// Records that could not be written, in this process.
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many records this process failed to write.
pub fn write_failures() -> u64 {
    WRITE_FAILURES.load(Ordering::Relaxed)
}

/// Where the log goes and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate when a line would take the file past this many bytes.
    pub max_size: u64,
    /// Files kept, the live one included (at least 1).
    pub max_files: u32,
}

impl AuditConfig {
    /// 10 MB and 5 files.
    pub fn with_defaults(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }

    /// The `n`th rotated file (`x.log.n`); 0 is the live one.
    pub fn rotated(&self, n: u32) -> PathBuf {
        rotated(&self.path, n)
    }
}

pub(crate) fn rotated(path: &Path, n: u32) -> PathBuf {
    match n {
        0 => path.to_path_buf(),
        _ => {
            let mut s = path.as_os_str().to_owned();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        }
    }
}

/// Why a record was not written (logged and counted, never returned to the caller of
/// [`Writer::write`]).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the record cannot be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("cannot create the directory {}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rotate {}", .path.display())]
    Rotate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("only {written} of {len} bytes were written to {}", .path.display())]
    Short {
        path: PathBuf,
        written: usize,
        len: usize,
    },
}

/// Appends records to one log.
#[derive(Debug, Clone)]
pub struct Writer {
    config: AuditConfig,
}

impl Writer {
    pub fn new(config: AuditConfig) -> Self {
        Writer { config }
    }

    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Appends `record`; a failure is logged (naming the file) and counted, never returned.
    pub fn write(&self, record: &Record) {
        if let Err(e) = self.try_write(record) {
            WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
            warn!(path = %self.config.path.display(), error = %chain(&e), "audit record not written");
        }
    }

    /// Appends `record`, saying why not.
    pub fn try_write(&self, record: &Record) -> Result<(), WriteError> {
        let line = record.to_line().map_err(WriteError::Encode)?;
        let path = &self.config.path;
        let mut file = open(path)?;
        let size = file
            .metadata()
            .map_err(|source| WriteError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        if size > 0 && size + line.len() as u64 > self.config.max_size {
            file = self.rotate(file)?;
        }
        // One write(2): on an O_APPEND regular file the kernel writes it whole at the end.
        let written = file.write(&line).map_err(|source| WriteError::Write {
            path: path.clone(),
            source,
        })?;
        match written == line.len() {
            true => Ok(()),
            false => Err(WriteError::Short {
                path: path.clone(),
                written,
                len: line.len(),
            }),
        }
    }

    /// Rotates under the lock unless another writer already did, and returns the live file.
    fn rotate(&self, current: File) -> Result<File, WriteError> {
        let path = &self.config.path;
        let err = |source| WriteError::Rotate {
            path: path.clone(),
            source,
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags((OFlags::CLOEXEC | OFlags::NOFOLLOW).bits() as i32)
            .open(rotated_lock(path))
            .map_err(err)?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| err(e.into()))?;
        // Rotated by another writer while this one waited: the name no longer is this file.
        let same = match (current.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            _ => false,
        };
        if same {
            let keep = self.config.max_files.max(1);
            if keep == 1 {
                std::fs::remove_file(path).map_err(err)?;
            } else {
                for n in (1..keep).rev() {
                    let from = rotated(path, n - 1);
                    match std::fs::rename(&from, rotated(path, n)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(err(e)),
                    }
                }
            }
        }
        let file = open(path)?;
        drop(lock); // unlocks
        Ok(file)
    }
}

fn rotated_lock(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Opens the live file for appending, creating it 0600 (and its directory 0700).
fn open(path: &Path) -> Result<File, WriteError> {
    let opts = {
        let mut o = OpenOptions::new();
        o.append(true)
            .create(true)
            .mode(0o600)
            .custom_flags((OFlags::CLOEXEC | OFlags::NOFOLLOW).bits() as i32);
        o
    };
    match opts.open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| WriteError::Dir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
            opts.open(path).map_err(|source| WriteError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(WriteError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The error and its sources, `: `-joined.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, Source};
    use std::os::unix::fs::PermissionsExt;

    fn rec(i: usize) -> Record {
        Record {
            container_id: Some(format!("container-{i:04}")),
            detail: Some("x".repeat(100)),
            ..Record::new(Source::Cni, Kind::Call)
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
    }

    #[test]
    fn rotation_keeps_max_files_each_0600_in_a_0700_dir() -> Result<(), Box<dyn std::error::Error>>
    {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("sub/x.log");
        let w = Writer::new(AuditConfig {
            path: path.clone(),
            max_size: 1000,
            max_files: 3,
        });
        let line_len = rec(0).to_line()?.len() as u64;
        for i in 0..40 {
            w.try_write(&rec(i))?;
        }
        assert_eq!(mode(&tmp.path().join("sub")), 0o700);
        let mut names: Vec<String> = std::fs::read_dir(tmp.path().join("sub"))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        assert_eq!(names, ["x.log", "x.log.1", "x.log.2", "x.log.lock"]);
        let per_file = 1000 / line_len;
        let mut all = Vec::new();
        for n in (0..3).rev() {
            let p = rotated(&path, n);
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            let text = std::fs::read_to_string(&p)?;
            assert!(text.len() as u64 <= 1000);
            if n > 0 {
                assert_eq!(text.lines().count() as u64, per_file, "{}", p.display());
            }
            all.extend(text.lines().map(|l| l.to_string()));
        }
        // The newest lines, oldest first, none lost within the kept files.
        let ids: Vec<String> = all
            .iter()
            .filter_map(|l| serde_json::from_str::<Record>(l).ok()?.container_id)
            .collect();
        let first = 40 - ids.len();
        let want: Vec<String> = (first..40).map(|i| format!("container-{i:04}")).collect();
        assert_eq!(ids, want);
        Ok(())
    }

    #[test]
    fn a_failed_write_is_counted_and_not_returned_to_write(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("x.log");
        std::fs::create_dir(&path)?;
        let w = Writer::new(AuditConfig::with_defaults(&path));
        assert!(matches!(w.try_write(&rec(1)), Err(WriteError::Open { .. })));
        let before = write_failures();
        w.write(&rec(1));
        assert!(write_failures() > before);
        Ok(())
    }
}
