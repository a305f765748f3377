//! Reading single sysfs attributes and links.

use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::Error;
use crate::types::PciAddress;

fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The whole text of a small file: open, read until end, close. Unlike `fs::read_to_string` it
/// does not stat the file first (sysfs reports a size of 4096 for every attribute anyway), which
/// matters when discovery reads thousands of attributes. The text comes back trimmed.
fn read_text(path: &Path) -> std::io::Result<String> {
    text_of(std::fs::File::open(path)?, str::to_string)
}

/// Reads the open attribute `file` to its end and hands its trimmed text to `f`. Attributes are
/// read into a buffer on the stack; only one longer than that is read into a `String`.
fn text_of<T>(mut file: std::fs::File, f: impl FnOnce(&str) -> T) -> std::io::Result<T> {
    let mut buf = [0u8; 256];
    let len = read_short(&mut file, &mut buf)?;
    if len < buf.len() {
        let text = std::str::from_utf8(&buf[..len])
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
        return Ok(f(text.trim()));
    }
    let mut all = buf.to_vec();
    file.read_to_end(&mut all)?;
    let text =
        String::from_utf8(all).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    Ok(f(text.trim()))
}

/// Fills `buf` from `f` until the end or until `buf` is full, and says how much it read. A read
/// that returns less than it was offered is the end: sysfs answers an attribute in one read, and
/// a regular file reads short only at its end. So only a full buffer costs a second read.
fn read_short(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// The attribute's text without surrounding whitespace; a missing attribute is `None`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match read_text(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path, e)),
    }
}

/// The last component of a symlink's target (`driver` -> `.../drivers/ixgbe` gives `ixgbe`);
/// `None` when the link does not exist.
pub(crate) fn link_name(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_link(path) {
        Ok(target) => match target.file_name().and_then(|n| n.to_str()) {
            Some(name) => Ok(Some(name.to_string())),
            None => Err(Error::BadLink {
                path: path.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path, e)),
    }
}

/// A directory held open (`O_PATH`) so that the attributes in it are opened relative to it: one
/// lookup of the long `bus/pci/devices/<addr>` path (through its symlink) per device instead of one
/// per attribute. Errors still name the full path of the attribute.
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    pub(crate) fn open(path: &Path) -> Result<Dir, Error> {
        let fd = nix::fcntl::open(path, DIR_FLAGS, Mode::empty())
            .map_err(|e| read_error(path, e.into()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory `name` inside this one.
    pub(crate) fn sub(&self, name: &str) -> Result<Dir, Error> {
        let fd = nix::fcntl::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| read_error(&self.path.join(name), e.into()))?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// The full path of `name` in this directory, for messages.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `name` and hands its trimmed text to `f`.
    fn with_text<T>(&self, name: &str, f: impl FnOnce(&str) -> T) -> std::io::Result<T> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        text_of(std::fs::File::from(fd), f)
    }

    /// `f` applied to the attribute's text; `None` when it is missing or, with `lenient`, when
    /// the kernel refuses to answer it (`EINVAL`).
    fn apply<T>(
        &self,
        name: &str,
        lenient: bool,
        f: impl FnOnce(&str) -> T,
    ) -> Result<Option<T>, Error> {
        match self.with_text(name, f) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) if lenient && e.raw_os_error() == Some(nix::libc::EINVAL) => Ok(None),
            Err(e) => Err(read_error(&self.join(name), e)),
        }
    }

    /// Runs `parse` on `value` of attribute `name`; an error names the attribute's full path
    /// (built only then).
    fn parse_in<T>(
        &self,
        name: &str,
        value: &str,
        parse: impl FnOnce(&Path, &str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        parse(Path::new(name), value).map_err(|e| match e {
            Error::Parse {
                value, expected, ..
            } => Error::Parse {
                path: self.join(name),
                value,
                expected,
            },
            other => other,
        })
    }

    /// `f` applied to the attribute's text, `None` as [`Dir::read_lenient`] has it.
    pub(crate) fn apply_lenient<T>(
        &self,
        name: &str,
        f: impl FnOnce(&str) -> T,
    ) -> Result<Option<T>, Error> {
        self.apply(name, true, f)
    }

    /// The attribute's text; `None` when it is missing or the kernel refuses to answer it
    /// (`EINVAL`, as `speed` and `carrier` do on a link that is down).
    pub(crate) fn read_lenient(&self, name: &str) -> Result<Option<String>, Error> {
        self.apply(name, true, str::to_string)
    }

    /// Like [`optional`], relative to this directory.
    pub(crate) fn optional<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&Path, &str) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        self.apply(name, false, |v| self.parse_in(name, v, parse))?
            .transpose()
    }

    /// Like [`optional`] with [`Dir::read_lenient`]'s notion of missing.
    pub(crate) fn lenient<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&Path, &str) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        self.apply(name, true, |v| self.parse_in(name, v, parse))?
            .transpose()
    }

    /// A required attribute, parsed.
    pub(crate) fn parsed<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&Path, &str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.optional(name, parse)?
            .ok_or_else(|| read_error(&self.join(name), ErrorKind::NotFound.into()))
    }

    /// Like [`link_name`], relative to this directory.
    pub(crate) fn link_name(&self, name: &str) -> Result<Option<String>, Error> {
        match nix::fcntl::readlinkat(&self.fd, name) {
            Ok(target) => match Path::new(&target).file_name().and_then(|n| n.to_str()) {
                Some(last) => Ok(Some(last.to_string())),
                None => Err(Error::BadLink {
                    path: self.join(name),
                }),
            },
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(read_error(&self.join(name), e.into())),
        }
    }

    /// A link whose target is a PCI device directory (`physfn`, `virtfnN`).
    pub(crate) fn link_pci(&self, name: &str) -> Result<Option<PciAddress>, Error> {
        match self.link_name(name)? {
            Some(target) => target.parse().map(Some).map_err(|_| Error::BadLink {
                path: self.join(name),
            }),
            None => Ok(None),
        }
    }

    /// The names in this directory with whether each is a directory (`None`: the listing did not
    /// say), without `.` and `..`; empty when the directory does not exist.
    pub(crate) fn list_sub(&self, name: &str) -> Result<Vec<(String, Option<bool>)>, Error> {
        let fd = match nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(read_error(&self.join(name), e.into())),
        };
        list_open(&fd).map_err(|e| read_error(&self.join(name), e))
    }
}

/// The entries of an open directory, read with getdents64 directly: `opendir` on an fd would
/// add an fstat and an fcntl to every listing, and discovery lists a directory per function.
fn list_open(fd: &OwnedFd) -> std::io::Result<Vec<(String, Option<bool>)>> {
    use rustix::fs::{FileType, RawDir};
    let mut buf = Vec::with_capacity(8192);
    let mut entries = RawDir::new(fd, buf.spare_capacity_mut());
    let mut out = Vec::new();
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let is_dir = match entry.file_type() {
            FileType::Unknown => None,
            t => Some(t == FileType::Directory),
        };
        out.push((name.to_string(), is_dir));
    }
    Ok(out)
}

const DIR_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

fn parse_error(path: &Path, value: &str, expected: &'static str) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        value: value.to_string(),
        expected,
    }
}

/// A hexadecimal number with or without `0x` (`vendor`, `class`, `sriov_vf_device`).
pub(crate) fn parse_hex(path: &Path, value: &str, max: u32) -> Result<u32, Error> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .unwrap_or(value);
    match u32::from_str_radix(digits, 16) {
        Ok(n) if n <= max && !digits.is_empty() => Ok(n),
        _ => Err(parse_error(path, value, "a hexadecimal number in range")),
    }
}

/// A 16-bit hexadecimal ID.
pub(crate) fn parse_hex16(path: &Path, value: &str) -> Result<u16, Error> {
    parse_hex(path, value, u32::from(u16::MAX)).map(|n| n as u16)
}

/// A non-negative decimal number.
pub(crate) fn parse_u32(path: &Path, value: &str) -> Result<u32, Error> {
    value
        .parse()
        .map_err(|_| parse_error(path, value, "a non-negative decimal number"))
}

/// A decimal number where any negative value means "none" (`numa_node`, `speed`).
pub(crate) fn parse_u32_or_negative(path: &Path, value: &str) -> Result<Option<u32>, Error> {
    match value.parse::<i64>() {
        Ok(n) if n < 0 => Ok(None),
        Ok(n) => Ok(u32::try_from(n).ok()),
        Err(_) => Err(parse_error(path, value, "a decimal number")),
    }
}

/// `0`/`1` flags (`carrier`, `sriov_drivers_autoprobe`).
pub(crate) fn parse_bool(path: &Path, value: &str) -> Result<bool, Error> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(parse_error(path, value, "0 or 1")),
    }
}

/// Reads and parses an optional attribute.
pub(crate) fn optional<T>(
    path: &Path,
    parse: impl FnOnce(&Path, &str) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    read_optional(path)?.map(|v| parse(path, &v)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_number_formats() {
        let p = Path::new("x");
        assert_eq!(parse_hex16(p, "0x8086").unwrap(), 0x8086);
        assert_eq!(parse_hex16(p, "10ed").unwrap(), 0x10ed);
        assert!(parse_hex16(p, "0x18086").is_err());
        assert!(parse_hex16(p, "0x").is_err());
        assert_eq!(parse_hex(p, "0x020000", 0xff_ffff).unwrap(), 0x020000);
        assert_eq!(parse_u32_or_negative(p, "-1").unwrap(), None);
        assert_eq!(
            parse_u32_or_negative(p, "4294967295").unwrap(),
            Some(u32::MAX)
        );
        assert_eq!(parse_u32_or_negative(p, "10000").unwrap(), Some(10000));
        assert!(parse_u32_or_negative(p, "fast").is_err());
        assert!(parse_bool(p, "2").is_err());
        let e = parse_u32(Path::new("/s/sriov_numvfs"), "four").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/s/sriov_numvfs holds \"four\", which is not a non-negative decimal number"
        );
    }

    #[test]
    fn a_bad_value_in_a_held_directory_names_the_full_path() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("0000:01:00.0");
        std::fs::create_dir_all(dev.join("net/eth0")).unwrap();
        std::fs::write(dev.join("sriov_numvfs"), "four\n").unwrap();
        std::fs::write(dev.join("net/eth0/mtu"), "1500\n").unwrap();
        let held = Dir::open(&dev).unwrap();
        let err = held.parsed("sriov_numvfs", parse_u32).unwrap_err();
        let want = format!(
            "{} holds \"four\", which is not a non-negative decimal number",
            dev.join("sriov_numvfs").display()
        );
        assert_eq!(err.to_string(), want);
        assert_eq!(held.optional("sriov_totalvfs", parse_u32).unwrap(), None);
        assert!(held.parsed("sriov_totalvfs", parse_u32).is_err());
        let net = held.sub("net/eth0").unwrap();
        assert_eq!(net.lenient("mtu", parse_u32).unwrap(), Some(1500));
        assert_eq!(net.lenient("speed", parse_u32).unwrap(), None);
        let listed = held.list_sub("net").unwrap();
        assert_eq!(listed, vec![("eth0".to_string(), Some(true))]);
        assert!(held.list_sub("absent").unwrap().is_empty());
    }

    #[test]
    fn missing_and_refused_attributes_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&dir.path().join("nope")).unwrap(), None);
        assert_eq!(
            Dir::open(dir.path()).unwrap().read_lenient("nope").unwrap(),
            None
        );
        assert_eq!(link_name(&dir.path().join("nope")).unwrap(), None);
        // Reading a directory is an error other than "missing": it must surface with its path.
        let err = read_optional(dir.path()).unwrap_err();
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn attributes_of_any_length_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 511, 512, 513, 5000] {
            let p = dir.path().join(format!("a{len}"));
            let text = "x".repeat(len);
            std::fs::write(&p, format!(" {text}\n")).unwrap();
            assert_eq!(read_optional(&p).unwrap().unwrap(), text, "length {len}");
            let held = Dir::open(dir.path()).unwrap();
            let read = held.parsed(&format!("a{len}"), |_, v| Ok(v.to_string()));
            assert_eq!(read.unwrap(), text, "length {len}");
        }
        let bad = dir.path().join("bad");
        std::fs::write(&bad, [0xff, 0xfe]).unwrap();
        assert!(read_optional(&bad).is_err());
        let err = Dir::open(dir.path())
            .unwrap()
            .parsed("bad", |_, v| Ok(v.to_string()))
            .unwrap_err();
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
    }
}
