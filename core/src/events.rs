//! Kernel event sockets: uevents of PCI and network devices (a NIC or VF appeared, went away, or
//! changed driver) and rtnetlink link messages (carrier or admin state changed). Each is a
//! blocking netlink socket; the caller decides on which thread to wait.

use netlink_sys::{protocols, Socket, SocketAddr};

/// What a kernel event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelEvent {
    /// A PCI or net device was added, removed, bound or unbound.
    Device,
    /// A link changed state.
    Link,
    /// The socket's buffer overflowed: events were lost, so whatever they asked for is due.
    Lost,
}

/// The kernel's uevent multicast group (udev re-broadcasts on group 2; the kernel's is 1).
const UEVENT_KERNEL_GROUP: u32 = 1;
/// RTMGRP_LINK
const RTMGRP_LINK: u32 = 1;

/// Whether a uevent payload (`ACTION@DEVPATH\0KEY=VALUE\0...`) concerns SR-IOV devices: an add,
/// remove, bind, unbind or move of a PCI or net device.
pub fn uevent_matters(payload: &[u8]) -> bool {
    let mut action = None;
    let mut subsystem = None;
    for field in payload.split(|b| *b == 0) {
        if let Some(v) = field.strip_prefix(b"ACTION=") {
            action = Some(v);
        } else if let Some(v) = field.strip_prefix(b"SUBSYSTEM=") {
            subsystem = Some(v);
        }
    }
    matches!(subsystem, Some(b"pci") | Some(b"net"))
        && matches!(
            action,
            Some(b"add") | Some(b"remove") | Some(b"bind") | Some(b"unbind") | Some(b"move")
        )
}

/// A netlink socket subscribed to one source of kernel events.
pub struct EventSocket {
    socket: Socket,
    classify: fn(&[u8]) -> Option<KernelEvent>,
    buf: Vec<u8>,
}

impl EventSocket {
    /// The kernel's uevents (not udev's re-broadcast).
    pub fn uevents() -> std::io::Result<Self> {
        Self::open(
            protocols::NETLINK_KOBJECT_UEVENT,
            UEVENT_KERNEL_GROUP,
            |p| uevent_matters(p).then_some(KernelEvent::Device),
        )
    }

    /// rtnetlink's link group: every link message is a [`KernelEvent::Link`].
    pub fn links() -> std::io::Result<Self> {
        Self::open(protocols::NETLINK_ROUTE, RTMGRP_LINK, |_| {
            Some(KernelEvent::Link)
        })
    }

    fn open(
        protocol: isize,
        groups: u32,
        classify: fn(&[u8]) -> Option<KernelEvent>,
    ) -> std::io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind(&SocketAddr::new(0, groups))?;
        Ok(Self {
            socket,
            classify,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Blocks until the next event that matters. An error other than an overflow (which is
    /// [`KernelEvent::Lost`]) means the socket is of no further use.
    pub fn next_event(&mut self) -> std::io::Result<KernelEvent> {
        loop {
            match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => {
                    if let Some(ev) = self.buf.get(..n).and_then(self.classify) {
                        return Ok(ev);
                    }
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Ok(KernelEvent::Lost)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pci_and_net_changes_matter() {
        let pci_add = b"add@/devices/pci0000:00/0000:00:02.0/0000:01:10.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:10.0\0SUBSYSTEM=pci\0PCI_ID=8086:10CA\0";
        assert!(uevent_matters(pci_add));
        let net_remove = b"remove@/devices/virtual/net/x\0ACTION=remove\0SUBSYSTEM=net\0";
        assert!(uevent_matters(net_remove));
        let block = b"add@/devices/virtual/block/loop0\0ACTION=add\0SUBSYSTEM=block\0";
        assert!(!uevent_matters(block));
        let change = b"change@/devices/pci0000:00/x\0ACTION=change\0SUBSYSTEM=pci\0";
        assert!(!uevent_matters(change));
        assert!(!uevent_matters(b""));
    }
}
