//! `genie install`: puts a copy of the running binary into a CNI bin dir without ever exposing a
//! partial file to a container runtime that execs it at the same moment.
//!
//! Each copy is written to a temp file in the target directory, fsync'd, made 0755, renamed over
//! the target and the directory fsync'd; on any failure the temp file is removed. Names are
//! checked before anything is written: only plain file names, so `--name ../../usr/bin/x` is
//! refused rather than followed.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The name the binary is installed under when no `--name` is given.
pub const DEFAULT_NAME: &str = "genie";

/// Mode of an installed plugin binary.
pub const MODE: u32 = 0o755;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{name:?} is not a plain file name")]
    Name { name: String },
    #[error("usage: genie install --to DIR [--name NAME ...]: {problem}")]
    Usage { problem: String },
    #[error("{dir} is not a directory")]
    NotADirectory { dir: PathBuf },
    #[error("cannot find the running executable")]
    CurrentExe(#[source] io::Error),
    #[error("{action} {path} failed")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

/// The arguments of `genie install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallArgs {
    pub to: PathBuf,
    pub names: Vec<String>,
}

impl InstallArgs {
    /// Parses the arguments after `install`: `--to DIR` once, `--name NAME` any number of times
    /// (default `genie`); `--opt=value` is accepted too.
    pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Self, InstallError> {
        let usage = |problem: String| InstallError::Usage { problem };
        let mut to: Option<PathBuf> = None;
        let mut names = Vec::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let arg = arg
                .into_string()
                .map_err(|a| usage(format!("{a:?} is not valid UTF-8")))?;
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            if flag != "--to" && flag != "--name" {
                return Err(usage(format!("unknown argument {arg:?}")));
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))?
                    .into_string()
                    .map_err(|a| usage(format!("{a:?} is not valid UTF-8")))?,
            };
            if flag == "--to" {
                if to.is_some() {
                    return Err(usage("--to is given twice".into()));
                }
                if value.is_empty() {
                    return Err(usage("--to is empty".into()));
                }
                to = Some(PathBuf::from(value));
            } else {
                check_name(&value)?;
                names.push(value);
            }
        }
        let to = to.ok_or_else(|| usage("--to is missing".into()))?;
        if names.is_empty() {
            names.push(DEFAULT_NAME.to_string());
        }
        Ok(Self { to, names })
    }
}

/// A name that stays in the directory it is joined to: not empty, not `.` or `..`, no `/`, no NUL.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn check_name(name: &str) -> Result<(), InstallError> {
    if is_plain_file_name(name) {
        Ok(())
    } else {
        Err(InstallError::Name {
            name: name.to_string(),
        })
    }
}

/// Installs the running executable into `args.to` under each of `args.names`.
pub fn install_self(args: &InstallArgs) -> Result<Vec<PathBuf>, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
    install_file(&exe, &args.to, &args.names)
}

/// Copies `src` into `dir` under each name, atomically per name; returns the installed paths.
/// Every name is checked before the first copy.
pub fn install_file(
    src: &Path,
    dir: &Path,
    names: &[String],
) -> Result<Vec<PathBuf>, InstallError> {
    for name in names {
        check_name(name)?;
    }
    let meta = fs::metadata(dir).map_err(io_err("reading", dir))?;
    if !meta.is_dir() {
        return Err(InstallError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let mut installed = Vec::with_capacity(names.len());
    for name in names {
        installed.push(install_one(src, dir, name)?);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))?;
    Ok(installed)
}

fn install_one(src: &Path, dir: &Path, name: &str) -> Result<PathBuf, InstallError> {
    let target = dir.join(name);
    let tmp = dir.join(format!(
        ".{name}.install.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut from = File::open(src).map_err(io_err("opening", src))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        io::copy(&mut from, &mut to).map_err(io_err("writing", &tmp))?;
        // The umask applied at creation; set the mode explicitly.
        to.set_permissions(Permissions::from_mode(MODE))
            .map_err(io_err("setting the mode of", &tmp))?;
        to.sync_all().map_err(io_err("syncing", &tmp))?;
        // Closed before the rename: a runtime that execs the new name while it is still open for
        // writing gets ETXTBSY, and a pod's ADD fails during an upgrade.
        drop(to);
        fs::rename(&tmp, &target).map_err(io_err("renaming into place", &target))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    tracing::info!(target = %target.display(), "installed");
    Ok(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<InstallArgs, InstallError> {
        InstallArgs::parse(a.iter().map(OsString::from))
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn installs_twice_with_mode_and_content_and_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src-bin");
        let bin = d.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(&src, b"first version").unwrap();
        fs::set_permissions(&src, Permissions::from_mode(0o600)).unwrap();
        let names = vec!["genie".to_string(), "genie-copy".to_string()];
        let out = install_file(&src, &bin, &names).unwrap();
        assert_eq!(out, vec![bin.join("genie"), bin.join("genie-copy")]);
        fs::write(&src, b"second, longer version").unwrap();
        install_file(&src, &bin, &names).unwrap();
        assert_eq!(names_in(&bin), names);
        for n in &names {
            let p = bin.join(n);
            assert_eq!(fs::read(&p).unwrap(), b"second, longer version");
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, MODE, "{n}");
        }
    }

    #[test]
    fn refuses_names_that_leave_the_directory_before_writing_anything() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src-bin");
        fs::write(&src, b"x").unwrap();
        let bin = d.path().join("bin");
        fs::create_dir(&bin).unwrap();
        for bad in ["", ".", "..", "../genie", "a/b", "/etc/passwd", "nul\0x"] {
            let names = vec!["ok".to_string(), bad.to_string()];
            let err = install_file(&src, &bin, &names).unwrap_err();
            assert!(matches!(err, InstallError::Name { .. }), "{bad:?}: {err}");
            assert!(args(&["--to", "/x", "--name", bad]).is_err(), "{bad:?}");
        }
        assert!(names_in(&bin).is_empty(), "nothing written");
        assert_eq!(names_in(d.path()), vec!["bin", "src-bin"]);
    }

    #[test]
    fn a_failed_copy_leaves_no_temp_file_and_keeps_the_old_target() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("genie"), b"old").unwrap();
        let err = install_file(&d.path().join("missing"), &bin, &["genie".into()]).unwrap_err();
        assert!(matches!(err, InstallError::Io { .. }), "{err}");
        assert_eq!(names_in(&bin), vec!["genie"]);
        assert_eq!(fs::read(bin.join("genie")).unwrap(), b"old");
        // The target dir must exist and be a directory.
        let file = d.path().join("file");
        fs::write(&file, b"").unwrap();
        let src = bin.join("genie");
        assert!(matches!(
            install_file(&src, &file, &["genie".into()]),
            Err(InstallError::NotADirectory { .. })
        ));
        assert!(install_file(&src, &d.path().join("nodir"), &["genie".into()]).is_err());
    }

    #[test]
    fn parses_arguments() {
        assert_eq!(
            args(&["--to", "/host/opt/cni/bin"]).unwrap(),
            InstallArgs {
                to: "/host/opt/cni/bin".into(),
                names: vec!["genie".into()]
            }
        );
        assert_eq!(
            args(&["--name=a", "--to=/d", "--name", "b"]).unwrap(),
            InstallArgs {
                to: "/d".into(),
                names: vec!["a".into(), "b".into()]
            }
        );
        for bad in [
            &[][..],
            &["--to"][..],
            &["--to", "/a", "--to", "/b"][..],
            &["--to", ""][..],
            &["--to", "/a", "--force"][..],
            &["/a"][..],
        ] {
            assert!(
                matches!(args(bad), Err(InstallError::Usage { .. })),
                "{bad:?}"
            );
        }
    }
}
