//! Kernel events that call for work: uevents of PCI and network devices (a NIC or VF appeared,
//! went away, or changed driver) call for a full reconcile; rtnetlink link messages (carrier or
//! admin state changed) call for a health refresh. Each source is a blocking netlink socket on its
//! own thread, feeding a channel; bursts collapse because the channel is small and sends that
//! find it full are dropped (the pending wake-up covers them).

use netlink_sys::{protocols, Socket, SocketAddr};
use tokio::sync::mpsc;
use tracing::{debug, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A PCI or net device was added, removed, bound or unbound.
    Device,
    /// A link changed state.
    Link,
}

/// The kernel's uevent multicast group (udev re-broadcasts on group 2; the kernel's is 1).
const UEVENT_KERNEL_GROUP: u32 = 1;
/// RTMGRP_LINK
const RTMGRP_LINK: u32 = 1;

/// Whether a uevent payload (`ACTION@DEVPATH\0KEY=VALUE\0...`) concerns us.
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

fn listen(
    name: &'static str,
    protocol: isize,
    groups: u32,
    tx: mpsc::Sender<Event>,
    classify: fn(&[u8]) -> Option<Event>,
) -> std::io::Result<()> {
    let mut socket = Socket::new(protocol)?;
    socket.bind(&SocketAddr::new(0, groups))?;
    std::thread::Builder::new()
        .name(format!("events-{name}"))
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.recv(&mut &mut buf[..], 0) {
                    Ok(n) => {
                        if let Some(ev) = buf.get(..n).and_then(classify) {
                            debug!(source = name, ?ev, "kernel event");
                            if tx.try_send(ev).is_err() && tx.is_closed() {
                                return;
                            }
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                        // Events were lost: ask for the work they would have asked for.
                        let _ = tx.try_send(Event::Device);
                    }
                    Err(e) => {
                        warn!(source = name, error = %e, "kernel event socket failed; relying on periodic checks");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// Starts both listeners; a source that cannot start is logged and left to the periodic checks.
pub fn spawn(tx: mpsc::Sender<Event>) {
    if let Err(e) = listen(
        "uevent",
        protocols::NETLINK_KOBJECT_UEVENT,
        UEVENT_KERNEL_GROUP,
        tx.clone(),
        |p| uevent_matters(p).then_some(Event::Device),
    ) {
        warn!(error = %e, "cannot listen for uevents");
    }
    if let Err(e) = listen("link", protocols::NETLINK_ROUTE, RTMGRP_LINK, tx, |_| {
        Some(Event::Link)
    }) {
        warn!(error = %e, "cannot listen for link events");
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
