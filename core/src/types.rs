//! Newtypes for the identifiers the kernel hands us: PCI addresses, VF indexes, MAC addresses,
//! interface indexes and interface names. Each one validates on construction so that a value that
//! reaches a sysfs path or a netlink message is already known to be well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a textual identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{input:?} is not a PCI address (expected dddd:bb:dd.f or bb:dd.f)")]
    PciAddress { input: String },
    #[error("{input:?} is not a MAC address (expected six hex pairs separated by ':')")]
    MacAddr { input: String },
    #[error("{input:?} is not a valid interface name: {reason}")]
    IfName { input: String, reason: &'static str },
}

/// A PCI function address, `domain:bus:device.function` (e.g. `0000:03:00.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    pub const fn new(domain: u32, bus: u8, device: u8, function: u8) -> Self {
        Self {
            domain,
            bus,
            device,
            function,
        }
    }

    /// Routing ID (bus << 8 | devfn), the number SR-IOV offsets and strides are added to.
    pub const fn routing_id(&self) -> u16 {
        ((self.bus as u16) << 8) | ((self.device as u16) << 3) | (self.function as u16)
    }

    /// The address with the given routing ID in the same domain.
    pub const fn from_routing_id(domain: u32, rid: u16) -> Self {
        Self {
            domain,
            bus: (rid >> 8) as u8,
            device: ((rid >> 3) & 0x1f) as u8,
            function: (rid & 0x7) as u8,
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::PciAddress {
            input: s.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [d, b, df] => (*d, *b, *df),
            [b, df] => ("0000", *b, *df),
            _ => return Err(err()),
        };
        let (dev, func) = devfn.split_once('.').ok_or_else(err)?;
        let hex = |t: &str, max_len: usize| -> Result<u32, ParseError> {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            u32::from_str_radix(t, 16).map_err(|_| err())
        };
        let domain = hex(domain, 8)?;
        let bus = hex(bus, 2)?;
        let device = hex(dev, 2)?;
        let function = hex(func, 1)?;
        if device > 0x1f || function > 7 {
            return Err(err());
        }
        Ok(Self::new(domain, bus as u8, device as u8, function as u8))
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The index of a VF on its PF (the N of `virtfnN`, the `vf N` of netlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VfIndex(pub u32);

impl fmt::Display for VfIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A unicast address the kernel will accept as a device address.
    pub fn is_valid_unicast(&self) -> bool {
        !self.is_zero() && !self.is_multicast()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::MacAddr {
            input: s.to_string(),
        };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 || part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A kernel interface index (`ifindex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IfIndex(pub u32);

impl fmt::Display for IfIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A network interface name the kernel keeps as it is: 1 to 15 bytes, no `/`, no `:`, no `%`, no
/// whitespace or control characters, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

/// The kernel's IFNAMSIZ less the terminating NUL.
pub const IFNAME_MAX: usize = 15;

impl IfName {
    pub fn new(name: impl Into<String>) -> Result<Self, ParseError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > IFNAME_MAX {
            Some("it is longer than 15 bytes")
        } else if name == "." || name == ".." {
            Some("it is '.' or '..'")
        } else if name.contains('/') {
            Some("it contains '/'")
        } else if name.contains(':') {
            Some("it contains ':'")
        } else if name.contains('%') {
            // The kernel expands a `%d` in a new link's name to a free number: the link would not
            // be called what was asked, and nothing could find it again to undo it.
            Some("it contains '%', which the kernel expands to a number")
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("it contains whitespace or control characters")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ParseError::IfName {
                input: name,
                reason,
            }),
            None => Ok(Self(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IfName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for IfName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IfName::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_round_trips_and_rejects_garbage() {
        let a: PciAddress = "0000:03:10.1".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 3, 0x10, 1));
        assert_eq!(a.to_string(), "0000:03:10.1");
        let short: PciAddress = "3b:00.0".parse().unwrap();
        assert_eq!(short.to_string(), "0000:3b:00.0");
        for bad in [
            "",
            "0000:03:10",
            "0000:03:20.0",
            "0000:03:10.8",
            "0000:003:10.0",
            "../../etc",
            "0000:03:10.1/..",
            "g000:03:10.1",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn routing_id_matches_sriov_arithmetic() {
        // 82576 PF 0000:01:00.0 with VF offset 0x80 and stride 2: VF 0 is 0000:01:10.0.
        let pf: PciAddress = "0000:01:00.0".parse().unwrap();
        let vf0 = PciAddress::from_routing_id(pf.domain, pf.routing_id() + 0x80);
        assert_eq!(vf0.to_string(), "0000:01:10.0");
        let vf1 = PciAddress::from_routing_id(pf.domain, pf.routing_id() + 0x80 + 2);
        assert_eq!(vf1.to_string(), "0000:01:10.2");
    }

    #[test]
    fn mac_parses_and_classifies() {
        let m: MacAddr = "02:00:00:00:00:10".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:00:00:10");
        assert!(m.is_valid_unicast());
        assert!(!"01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_valid_unicast());
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:10:11",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:00",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ifname_follows_kernel_rules() {
        assert!(IfName::new("net1").is_ok());
        assert!(IfName::new("enp3s0f0v12345").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "eth 0",
            "eth0:1",
            "sixteen-bytes-xx",
            "tab\tx",
            "net%d",
            "%",
        ] {
            assert!(IfName::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
