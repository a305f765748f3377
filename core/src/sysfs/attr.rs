//! Reading single sysfs attributes and links.

use std::io::{ErrorKind, Read};
use std::path::Path;

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
/// matters when discovery reads thousands of attributes.
fn read_text(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = [0u8; 512];
    let mut len = 0;
    loop {
        if len == buf.len() {
            // Longer than any attribute we read: finish the general way.
            let mut all = buf.to_vec();
            f.read_to_end(&mut all)?;
            return String::from_utf8(all)
                .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e));
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    std::str::from_utf8(&buf[..len])
        .map(str::to_string)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

/// The attribute's text without surrounding whitespace.
pub(crate) fn read(path: &Path) -> Result<String, Error> {
    read_text(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| read_error(path, e))
}

/// Like [`read`], with a missing attribute as `None`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match read_text(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path, e)),
    }
}

/// Like [`read_optional`], and an attribute the kernel refuses to answer (`EINVAL`, as `speed`
/// and `carrier` do on a link that is down) is also `None`.
pub(crate) fn read_lenient(path: &Path) -> Result<Option<String>, Error> {
    match read_text(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok(None),
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

/// A link whose target is a PCI device directory (`physfn`, `virtfnN`).
pub(crate) fn link_pci(path: &Path) -> Result<Option<PciAddress>, Error> {
    match link_name(path)? {
        Some(name) => name.parse().map(Some).map_err(|_| Error::BadLink {
            path: path.to_path_buf(),
        }),
        None => Ok(None),
    }
}

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
    fn missing_and_refused_attributes_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&dir.path().join("nope")).unwrap(), None);
        assert_eq!(read_lenient(&dir.path().join("nope")).unwrap(), None);
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
            assert_eq!(read(&p).unwrap(), text, "length {len}");
        }
        let bad = dir.path().join("bad");
        std::fs::write(&bad, [0xff, 0xfe]).unwrap();
        assert!(read(&bad).is_err());
    }
}
