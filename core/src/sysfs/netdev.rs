//! Reading the netdevs of a PCI function.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::attr;
use super::model::Netdev;
use super::Error;
use crate::paths::attr as a;

/// A candidate netdev directory, and whether the listing already showed it to be a directory.
struct Candidate {
    dir: PathBuf,
    known_dir: bool,
}

/// The netdev directories of a PCI function: `<dev>/net/*`, and for virtio functions
/// `<dev>/virtioN/net/*` (virtio-net hangs its netdev off the virtio bus device).
fn netdev_dirs(dev_dir: &Path) -> Result<Vec<Candidate>, Error> {
    let mut net_dirs = vec![dev_dir.join(a::NET)];
    for entry in list(dev_dir)? {
        let name = entry.file_name();
        let is_virtio = name
            .to_str()
            .and_then(|n| n.strip_prefix(a::VIRTIO_PREFIX))
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
        if is_virtio {
            net_dirs.push(entry.path().join(a::NET));
        }
    }
    let mut out = Vec::new();
    for dir in net_dirs {
        out.extend(list(&dir)?.into_iter().map(|e| Candidate {
            known_dir: e.file_type().is_ok_and(|t| t.is_dir()),
            dir: e.path(),
        }));
    }
    Ok(out)
}

/// Directory entries, empty when the directory does not exist.
fn list(dir: &Path) -> Result<Vec<std::fs::DirEntry>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    entries
        .map(|e| {
            e.map_err(|source| Error::Read {
                path: dir.to_path_buf(),
                source,
            })
        })
        .collect()
}

/// The netdevs of the PCI function whose directory is `dev_dir`, sorted by name. A netdev renamed
/// or removed while it is being read is left out.
pub(crate) fn read_netdevs(dev_dir: &Path) -> Result<Vec<Netdev>, Error> {
    let mut out = Vec::new();
    for Candidate { dir, known_dir } in netdev_dirs(dev_dir)? {
        match read_netdev(&dir, known_dir) {
            Ok(Some(n)) => out.push(n),
            Ok(None) => {}
            Err(e) if e.is_vanished() && !dir.exists() => {
                tracing::debug!(path = %dir.display(), "netdev vanished while being read");
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(out)
}

/// [`read_netdevs`] for a device directory held open; `virtio` also looks under `virtioN`
/// children (only virtio functions have them, so other functions skip listing their directory).
pub(crate) fn read_netdevs_in(dev_dir: &attr::Dir, virtio: bool) -> Result<Vec<Netdev>, Error> {
    if virtio {
        return read_netdevs(dev_dir.path());
    }
    let mut out = Vec::new();
    for (name, is_dir) in dev_dir.list_sub(a::NET)? {
        let rel = format!("{}/{name}", a::NET);
        if is_dir == Some(false) {
            // A link or file, not a netdev directory: follow it only if it leads to one.
            if !dev_dir.join(&rel).is_dir() {
                continue;
            }
        }
        let read = dev_dir.sub(&rel).and_then(|dir| read_netdev_in(&dir, name));
        match read {
            Ok(n) => out.push(n),
            Err(e) if e.is_vanished() => {
                tracing::debug!(path = %dev_dir.join(&rel).display(), "netdev vanished while being read");
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(out)
}

/// The netdev whose held directory is `dir`.
fn read_netdev_in(dir: &attr::Dir, name: String) -> Result<Netdev, Error> {
    let mac = dir.apply_lenient(a::ADDRESS, |m| m.parse().ok())?.flatten();
    let operstate = dir.read_lenient(a::OPERSTATE)?;
    let carrier = dir.lenient(a::CARRIER, attr::parse_bool)?;
    let speed_mbps = dir
        .lenient(a::SPEED, attr::parse_u32_or_negative)?
        .flatten()
        .filter(|s| *s != u32::MAX);
    let mtu = dir.lenient(a::MTU, attr::parse_u32)?;
    Ok(Netdev {
        name,
        mac,
        operstate,
        carrier,
        speed_mbps,
        mtu,
    })
}

/// True when the PCI function whose directory is `dev_dir` has a netdev in view (without reading
/// the netdevs' attributes).
pub(crate) fn has_netdev(dev_dir: &Path) -> Result<bool, Error> {
    Ok(netdev_dirs(dev_dir)?.iter().any(|c| {
        c.dir.file_name().and_then(|n| n.to_str()).is_some() && (c.known_dir || c.dir.is_dir())
    }))
}

/// `known_dir`: the listing said it is a directory (else, a link say, it is checked here).
fn read_netdev(dir: &Path, known_dir: bool) -> Result<Option<Netdev>, Error> {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    if !known_dir && !dir.is_dir() {
        return Ok(None);
    }
    let mac = attr::read_lenient(&dir.join(a::ADDRESS))?.and_then(|m| m.parse().ok());
    let operstate = attr::read_lenient(&dir.join(a::OPERSTATE))?;
    let carrier_path = dir.join(a::CARRIER);
    let carrier = attr::read_lenient(&carrier_path)?
        .map(|v| attr::parse_bool(&carrier_path, &v))
        .transpose()?;
    let speed_path = dir.join(a::SPEED);
    let speed_mbps = attr::read_lenient(&speed_path)?
        .map(|v| attr::parse_u32_or_negative(&speed_path, &v))
        .transpose()?
        .flatten()
        .filter(|s| *s != u32::MAX);
    let mtu_path = dir.join(a::MTU);
    let mtu = attr::read_lenient(&mtu_path)?
        .map(|v| attr::parse_u32(&mtu_path, &v))
        .transpose()?;
    Ok(Some(Netdev {
        name: name.to_string(),
        mac,
        operstate,
        carrier,
        speed_mbps,
        mtu,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_netdev_is_in_view_only_when_its_directory_is() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("0000:01:10.0");
        std::fs::create_dir_all(&dev).unwrap();
        assert!(!has_netdev(&dev).unwrap());
        std::fs::create_dir_all(dev.join("net")).unwrap();
        assert!(!has_netdev(&dev).unwrap());
        std::fs::create_dir_all(dev.join("virtio3/net/eth0")).unwrap();
        assert!(has_netdev(&dev).unwrap());
        assert_eq!(read_netdevs(&dev).unwrap()[0].name, "eth0");
    }
}
