//! Errors of the netlink layer. Each names the operation (which carries the link and VF) and, for
//! kernel refusals, the errno and the kernel's extended-ACK message when it sent one.

use std::time::Duration;

use nix::errno::Errno;

/// Formats an errno as `operation not supported (EOPNOTSUPP)`.
pub(crate) fn describe_errno(errno: Errno) -> String {
    // The C library's strerror text, without std's " (os error N)" suffix.
    let text = std::io::Error::from_raw_os_error(errno as i32).to_string();
    let desc = text.split(" (os error").next().unwrap_or_default();
    let mut chars = desc.chars();
    let lowered = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect::<String>(),
        None => String::new(),
    };
    format!("{lowered} ({errno:?})")
}

fn ext_ack_suffix(ext_ack: &Option<String>) -> String {
    match ext_ack {
        Some(msg) => format!("; the kernel says: {msg}"),
        None => String::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket failed: {}", describe_errno(*.errno))]
    Socket { errno: Errno },

    #[error("{op} failed: {}{}", describe_errno(*.errno), ext_ack_suffix(.ext_ack))]
    Kernel {
        op: String,
        errno: Errno,
        ext_ack: Option<String>,
    },

    #[error("{op} failed: {link} is up; set it down first (links are renamed only while down)")]
    LinkUp { op: String, link: String },

    #[error("{op} failed: {link} does not exist")]
    NoSuchLink { op: String, link: String },

    #[error("{op} failed: no answer from the kernel within {timeout:?}")]
    Timeout { op: String, timeout: Duration },

    #[error("{op} failed: sending or receiving on the netlink socket: {}", describe_errno(*.errno))]
    Io { op: String, errno: Errno },

    #[error("{op} failed: the kernel's answer could not be decoded: {reason}")]
    Decode { op: String, reason: String },

    #[error("{op} failed: the link dump was interrupted by concurrent changes {attempts} times")]
    DumpInterrupted { op: String, attempts: u32 },

    #[error("{op}: {reason}")]
    Invalid { op: String, reason: String },

    #[error("no link named {name:?} appeared within {timeout:?}")]
    WaitTimeout { name: String, timeout: Duration },
}

impl NetlinkError {
    /// The errno behind this error, when the kernel or the socket gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Socket { errno }
            | NetlinkError::Kernel { errno, .. }
            | NetlinkError::Io { errno, .. } => Some(*errno),
            NetlinkError::LinkUp { .. } => Some(Errno::EBUSY),
            NetlinkError::NoSuchLink { .. } => Some(Errno::ENODEV),
            _ => None,
        }
    }

    /// Replaces the operation description (used to add the link name once it is known).
    pub(crate) fn with_op(self, new_op: String) -> Self {
        match self {
            NetlinkError::Kernel { errno, ext_ack, .. } => NetlinkError::Kernel {
                op: new_op,
                errno,
                ext_ack,
            },
            NetlinkError::Timeout { timeout, .. } => NetlinkError::Timeout {
                op: new_op,
                timeout,
            },
            NetlinkError::Io { errno, .. } => NetlinkError::Io { op: new_op, errno },
            NetlinkError::Decode { reason, .. } => NetlinkError::Decode { op: new_op, reason },
            NetlinkError::DumpInterrupted { attempts, .. } => NetlinkError::DumpInterrupted {
                op: new_op,
                attempts,
            },
            NetlinkError::Invalid { reason, .. } => NetlinkError::Invalid { op: new_op, reason },
            NetlinkError::LinkUp { link, .. } => NetlinkError::LinkUp { op: new_op, link },
            NetlinkError::NoSuchLink { link, .. } => NetlinkError::NoSuchLink { op: new_op, link },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_read_as_sentences() {
        let e = NetlinkError::Kernel {
            op: "setting link-state of VF 2 on enp1s0".into(),
            errno: Errno::EOPNOTSUPP,
            ext_ack: None,
        };
        assert_eq!(
            e.to_string(),
            "setting link-state of VF 2 on enp1s0 failed: operation not supported (EOPNOTSUPP)"
        );
        let e = NetlinkError::Kernel {
            op: "setting VLAN of VF 0 on enp1s0".into(),
            errno: Errno::EINVAL,
            ext_ack: Some("Invalid VLAN".into()),
        };
        assert_eq!(
            e.to_string(),
            "setting VLAN of VF 0 on enp1s0 failed: invalid argument (EINVAL); the kernel says: Invalid VLAN"
        );
        assert_eq!(e.errno(), Some(Errno::EINVAL));
    }
}
