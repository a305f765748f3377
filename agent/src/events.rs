//! Kernel events that call for work: a device event (uevent) calls for a full reconcile, a link
//! event for a health refresh. Each source ([`vfcore::events::EventSocket`]) waits on its own
//! thread and feeds a channel; bursts collapse because the channel is small and sends that find it
//! full are dropped (the pending wake-up covers them).

use tokio::sync::mpsc;
use tracing::{debug, warn};
use vfcore::events::{EventSocket, KernelEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A PCI or net device was added, removed, bound or unbound.
    Device,
    /// A link changed state.
    Link,
}

fn listen(
    name: &'static str,
    open: fn() -> std::io::Result<EventSocket>,
    tx: mpsc::Sender<Event>,
) -> std::io::Result<()> {
    let mut socket = open()?;
    std::thread::Builder::new()
        .name(format!("events-{name}"))
        .spawn(move || loop {
            let ev = match socket.next_event() {
                Ok(KernelEvent::Device) => Event::Device,
                Ok(KernelEvent::Link) => Event::Link,
                // Events were lost: ask for the work they would have asked for.
                Ok(KernelEvent::Lost) => Event::Device,
                Err(e) => {
                    warn!(source = name, error = %e, "kernel event socket failed; relying on periodic checks");
                    return;
                }
            };
            debug!(source = name, ?ev, "kernel event");
            if tx.try_send(ev).is_err() && tx.is_closed() {
                return;
            }
        })?;
    Ok(())
}

/// Starts both listeners; a source that cannot start is logged and left to the periodic checks.
pub fn spawn(tx: mpsc::Sender<Event>) {
    if let Err(e) = listen("uevent", EventSocket::uevents, tx.clone()) {
        warn!(error = %e, "cannot listen for uevents");
    }
    if let Err(e) = listen("link", EventSocket::links, tx) {
        warn!(error = %e, "cannot listen for link events");
    }
}
