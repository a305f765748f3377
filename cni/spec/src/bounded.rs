//! Bounded reads of files that configuration names (conf files, kubeconfigs, tokens, CA files,
//! cache records): a path that turns out to be `/dev/zero`, a FIFO with no writer or a huge file
//! fails at once with an error that says why, instead of hanging or eating the node's memory.
//!
//! The file is opened with `O_NONBLOCK` (opening a FIFO does not wait for a writer), must be a
//! regular file by `fstat` of what was opened (not of the path, which could change), and at most
//! `limit + 1` bytes are read: one byte more than the limit means the file is too large.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Limit for configuration files: CNI confs and conflists, kubeconfigs, tokens, CA bundles.
pub const CONFIG_MAX: u64 = 4 << 20;
/// Limit for cache records (a pod record with hundreds of results stays far below).
pub const RECORD_MAX: u64 = 16 << 20;

/// Reads the whole of `path`, a regular file of at most `limit` bytes. A missing file keeps its
/// `NotFound` kind; anything but a regular file and anything larger than `limit` is an
/// `InvalidData` error whose message names the file type or the limit (callers add the path).
pub fn read(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(path)?;
    read_open(file, limit)
}

/// As [`read`], as text.
pub fn read_to_string(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, limit)?)
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidData, "it is not UTF-8 text"))
}

fn read_open(file: File, limit: u64) -> std::io::Result<Vec<u8>> {
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("it is {what}, not a regular file"),
        ));
    }
    if meta.len() > limit {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

fn too_large(limit: u64) -> std::io::Error {
    std::io::Error::new(
        ErrorKind::InvalidData,
        format!("it is larger than the limit of {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn regular_files_within_the_limit_are_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("conf");
        std::fs::write(&p, b"{\"a\":1}").unwrap();
        assert_eq!(read(&p, 7).unwrap(), b"{\"a\":1}");
        assert_eq!(read_to_string(&p, 100).unwrap(), "{\"a\":1}");
        let e = read(&d.path().join("missing"), 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn a_file_over_the_limit_is_refused_naming_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'x'; 1001]).unwrap();
        let e = read(&p, 1000).unwrap_err();
        assert!(e.to_string().contains("limit of 1000 bytes"), "{e}");
        // A sparse 1 GB file is refused without reading it.
        let huge = d.path().join("huge");
        File::create(&huge).unwrap().set_len(1 << 30).unwrap();
        let t0 = Instant::now();
        let e = read(&huge, CONFIG_MAX).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(e.to_string().contains("limit"), "{e}");
    }

    #[test]
    fn devices_fifos_and_directories_fail_fast() {
        let t0 = Instant::now();
        let e = read(Path::new("/dev/zero"), CONFIG_MAX).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&fifo, CONFIG_MAX).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read(d.path(), CONFIG_MAX).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
