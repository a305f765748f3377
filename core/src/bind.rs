//! PCI driver binding through `driver_override` (Documentation/ABI/testing/sysfs-bus-pci):
//! write the driver's name to the device's `driver_override`, unbind it from its current driver,
//! ask the bus to probe it again through `drivers_probe`, then clear the override so that a later
//! probe (a rebind, a reboot of the driver) follows the ordinary ID tables again.
//!
//! vfio-pci needs the device to be in an IOMMU group (or vfio to be in no-IOMMU mode); once bound,
//! `/dev/vfio/<group>` (or `/dev/vfio/noiommu-<group>`) appears for user space.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::paths::{attr, drivers, modules, params, SysRoot};
use crate::sysfs::io::{poll_until, remaining, write_bounded, WriteError};
use crate::sysfs::{self};
use crate::types::PciAddress;

/// Why a driver could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{driver:?} is not a plain driver name")]
    BadDriverName { driver: String },
    #[error("PCI device {pci} does not exist")]
    NoDevice { pci: PciAddress },
    #[error("driver {driver} is not loaded (no {path})")]
    DriverNotLoaded { driver: String, path: PathBuf },
    #[error("PCI device {pci} has no IOMMU group, so vfio-pci cannot take it")]
    NoIommuGroup { pci: PciAddress },
    #[error("binding PCI device {pci} failed")]
    Write {
        pci: PciAddress,
        #[source]
        source: WriteError,
    },
    #[error(
        "PCI device {pci} is bound to {found:?} rather than {driver} {timeout:?} after the probe"
    )]
    NotBound {
        pci: PciAddress,
        driver: String,
        found: Option<String>,
        timeout: Duration,
    },
    #[error("PCI device {pci} is still bound to {driver} {timeout:?} after the unbind")]
    StillBound {
        pci: PciAddress,
        driver: String,
        timeout: Duration,
    },
    #[error("PCI device {pci} has no driver {timeout:?} after the probe")]
    NoDriver { pci: PciAddress, timeout: Duration },
    #[error("{path} did not appear within {timeout:?} of binding PCI device {pci} to vfio-pci")]
    NoVfioDevice {
        pci: PciAddress,
        path: PathBuf,
        timeout: Duration,
    },
    #[error(transparent)]
    Sysfs(#[from] sysfs::Error),
}

fn require_device(root: &SysRoot, addr: &PciAddress) -> Result<(), Error> {
    if root.pci_device(addr).exists() {
        Ok(())
    } else {
        Err(Error::NoDevice { pci: *addr })
    }
}

/// The name of the driver bound to the device, `None` when it is unbound.
pub fn current_driver(root: &SysRoot, addr: &PciAddress) -> Result<Option<String>, Error> {
    require_device(root, addr)?;
    Ok(sysfs::link_name(&root.pci_attr(addr, attr::DRIVER))?)
}

/// Whether vfio runs in no-IOMMU mode (`enable_unsafe_noiommu_mode` is `Y`), in which vfio-pci
/// takes devices without an IOMMU group and creates one itself.
fn vfio_noiommu(root: &SysRoot) -> Result<bool, Error> {
    let Some(path) = root.module_parameter(modules::VFIO, params::ENABLE_UNSAFE_NOIOMMU_MODE)
    else {
        return Ok(false);
    };
    Ok(sysfs::attr_text(&path)?.is_some_and(|v| v == "Y" || v == "1"))
}

fn write(pci: &PciAddress, path: PathBuf, value: &str, deadline: Instant) -> Result<(), Error> {
    tracing::debug!(pci = %pci, path = %path.display(), value, "sysfs write");
    write_bounded(&path, value, remaining(deadline))
        .map_err(|source| Error::Write { pci: *pci, source })
}

/// Unbinds the device from its driver, if any, and waits for its `driver` link to go (the
/// kernel removes it before the write returns; waiting keeps us correct if that ever changes).
fn unbind(
    root: &SysRoot,
    addr: &PciAddress,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), Error> {
    let Some(current) = current_driver(root, addr)? else {
        return Ok(());
    };
    let unbind = root
        .pci_driver_attr(&current, attr::UNBIND)
        .ok_or_else(|| Error::BadDriverName {
            driver: current.clone(),
        })?;
    write(addr, unbind, &addr.to_string(), deadline)?;
    let gone = poll_until(deadline, || {
        Ok::<_, Error>(current_driver(root, addr)?.is_none().then_some(()))
    })?;
    gone.ok_or(Error::StillBound {
        pci: *addr,
        driver: current,
        timeout,
    })
}

/// Binds the device to `driver` through `driver_override` and waits, within `timeout`, for the
/// device's `driver` link to name it. The override is cleared afterwards on every path.
pub fn bind_driver(
    root: &SysRoot,
    addr: &PciAddress,
    driver: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let driver_dir = root
        .pci_driver(driver)
        .ok_or_else(|| Error::BadDriverName {
            driver: driver.to_string(),
        })?;
    require_device(root, addr)?;
    if driver == drivers::VFIO_PCI
        && sysfs::iommu_group_of(root, addr)?.is_none()
        && !vfio_noiommu(root)?
    {
        return Err(Error::NoIommuGroup { pci: *addr });
    }
    if !driver_dir.exists() {
        return Err(Error::DriverNotLoaded {
            driver: driver.to_string(),
            path: driver_dir,
        });
    }
    if current_driver(root, addr)?.as_deref() == Some(driver) {
        tracing::debug!(pci = %addr, driver, "already bound");
        return Ok(());
    }

    let override_path = root.pci_attr(addr, attr::DRIVER_OVERRIDE);
    write(addr, override_path.clone(), driver, deadline)?;
    let bound = rebind(root, addr, deadline, timeout).and_then(|()| {
        let mut found = None;
        let done = poll_until(deadline, || {
            found = current_driver(root, addr)?;
            Ok::<_, Error>((found.as_deref() == Some(driver)).then_some(()))
        })?;
        done.ok_or_else(|| Error::NotBound {
            pci: *addr,
            driver: driver.to_string(),
            found,
            timeout,
        })
    });
    // Clear the override even when the deadline has passed: give it a short grace period.
    let cleared = write(addr, override_path, "\n", deadline.max(grace()));
    bound?;
    cleared
}

/// A short extra allowance for clean-up writes after the caller's deadline.
fn grace() -> Instant {
    Instant::now() + Duration::from_secs(1)
}

/// Unbinds from the current driver (if any) and asks the bus to probe the device again.
fn rebind(
    root: &SysRoot,
    addr: &PciAddress,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), Error> {
    unbind(root, addr, deadline, timeout)?;
    write(addr, root.pci_drivers_probe(), &addr.to_string(), deadline)
}

/// Binds the device to vfio-pci and waits for its vfio group device; returns that path
/// (`/dev/vfio/<group>`, or `/dev/vfio/noiommu-<group>` in no-IOMMU mode).
pub fn bind_vfio(root: &SysRoot, addr: &PciAddress, timeout: Duration) -> Result<PathBuf, Error> {
    let deadline = Instant::now() + timeout;
    bind_driver(root, addr, drivers::VFIO_PCI, timeout)?;
    let mut expected = None;
    let found = poll_until(deadline, || {
        // In no-IOMMU mode the group only exists once vfio-pci has taken the device.
        let Some(group) = sysfs::iommu_group_of(root, addr)? else {
            return Ok::<_, Error>(None);
        };
        let plain = root.dev_vfio_group(group, false);
        let noiommu = root.dev_vfio_group(group, true);
        let hit = [&plain, &noiommu].into_iter().find(|p| p.exists()).cloned();
        expected = Some(plain);
        Ok(hit)
    })?;
    found.ok_or_else(|| Error::NoVfioDevice {
        pci: *addr,
        path: expected.unwrap_or_else(|| root.dev_vfio()),
        timeout,
    })
}

/// Returns the device to the driver the kernel's ID tables choose: clears any override, unbinds,
/// probes, and waits for a driver. Returns that driver's name.
pub fn bind_default(root: &SysRoot, addr: &PciAddress, timeout: Duration) -> Result<String, Error> {
    let deadline = Instant::now() + timeout;
    require_device(root, addr)?;
    write(
        addr,
        root.pci_attr(addr, attr::DRIVER_OVERRIDE),
        "\n",
        deadline,
    )?;
    rebind(root, addr, deadline, timeout)?;
    poll_until(deadline, || current_driver(root, addr))?.ok_or(Error::NoDriver {
        pci: *addr,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_from_outside_cannot_climb() {
        let root = SysRoot::new("/nonexistent");
        let pci: PciAddress = "0000:03:10.0".parse().unwrap();
        for bad in ["", "..", "../../../../etc", "vfio-pci/..", "a\0b"] {
            let err = bind_driver(&root, &pci, bad, Duration::from_millis(10)).unwrap_err();
            assert!(
                matches!(err, Error::BadDriverName { .. }),
                "{bad:?}: {err:?}"
            );
        }
    }
}
