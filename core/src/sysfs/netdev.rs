//! Reading the netdevs of a PCI function.

use std::path::Path;

use super::attr;
use super::model::Netdev;
use super::Error;
use crate::paths::attr as a;

/// A candidate netdev: its directory relative to the device's, its name, and whether the listing
/// showed it to be a directory (`None`: it did not say).
struct Candidate {
    rel: String,
    name: String,
    is_dir: Option<bool>,
}

impl Candidate {
    /// A directory, as listed, or (a link, say) as it leads to one.
    fn is_dir(&self, dev_dir: &attr::Dir) -> bool {
        self.is_dir == Some(true) || dev_dir.join(&self.rel).is_dir()
    }
}

/// The netdev directories of a PCI function: `net/*`, and with `virtio` also `virtioN/net/*`
/// (virtio-net hangs its netdev off the virtio bus device; only virtio functions have such
/// children, so other functions skip listing their directory).
fn candidates(dev_dir: &attr::Dir, virtio: bool) -> Result<Vec<Candidate>, Error> {
    let mut net_dirs = vec![a::NET.to_string()];
    if virtio {
        for (name, _) in dev_dir.list_sub(".")? {
            let is_virtio = name
                .strip_prefix(a::VIRTIO_PREFIX)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
            if is_virtio {
                net_dirs.push(format!("{name}/{}", a::NET));
            }
        }
    }
    let mut out = Vec::new();
    for dir in net_dirs {
        for (name, is_dir) in dev_dir.list_sub(&dir)? {
            out.push(Candidate {
                rel: format!("{dir}/{name}"),
                name,
                is_dir,
            });
        }
    }
    Ok(out)
}

/// The device directory `dev_dir` held open; `None` when it does not exist.
fn open_device(dev_dir: &Path) -> Result<Option<attr::Dir>, Error> {
    match attr::Dir::open(dev_dir) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_vanished() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The netdevs of the PCI function whose directory is `dev_dir`, sorted by name (looking under
/// `virtioN` children too). A netdev renamed or removed while it is being read is left out.
pub(crate) fn read_netdevs(dev_dir: &Path) -> Result<Vec<Netdev>, Error> {
    match open_device(dev_dir)? {
        Some(d) => read_netdevs_in(&d, true),
        None => Ok(Vec::new()),
    }
}

/// [`read_netdevs`] for a device directory held open; `virtio` also looks under `virtioN`
/// children.
pub(crate) fn read_netdevs_in(dev_dir: &attr::Dir, virtio: bool) -> Result<Vec<Netdev>, Error> {
    let mut out = Vec::new();
    for c in candidates(dev_dir, virtio)? {
        if c.is_dir == Some(false) && !c.is_dir(dev_dir) {
            continue; // a file, or a link that leads to no directory
        }
        match dev_dir
            .sub(&c.rel)
            .and_then(|dir| read_netdev_in(&dir, c.name))
        {
            Ok(n) => out.push(n),
            Err(e) if e.is_vanished() => {
                tracing::debug!(path = %dev_dir.join(&c.rel).display(), "netdev vanished while being read");
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(out)
}

/// True when the PCI function whose directory is `dev_dir` has a netdev in view (without reading
/// the netdevs' attributes).
pub(crate) fn has_netdev(dev_dir: &Path) -> Result<bool, Error> {
    let Some(d) = open_device(dev_dir)? else {
        return Ok(false);
    };
    Ok(candidates(&d, true)?.iter().any(|c| c.is_dir(&d)))
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
