//! Which of our devices pods hold now, from the kubelet's PodResources API.
//!
//! Three answers, and the difference matters before a VF is changed:
//! - [`Held::NoKubelet`]: the PodResources socket's directory does not exist, so no kubelet runs on
//!   this node (a lab, a bare host); nothing is held through a kubelet.
//! - [`Held::Known`]: the kubelet answered List.
//! - [`Held::Unknown`]: the directory is there but the socket is missing or does not answer (the
//!   kubelet is restarting, say). Any VF may be held: nothing that could touch one is changed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use vfcore::PciAddress;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the kubelet's PodResources socket {path} is missing, though its directory exists")]
    Missing { path: String },
    #[error(transparent)]
    List(#[from] vfdp::podres::ListError),
}

/// What the kubelet says pods hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// No kubelet on this node: nothing is held through one.
    NoKubelet,
    /// The kubelet answered: pods hold exactly these devices.
    Known(BTreeSet<PciAddress>),
    /// A kubelet is expected but did not answer; the sentence says why.
    Unknown(String),
}

impl Held {
    /// Whether a pod may hold `dev`: certainly when the kubelet says so, possibly when it did not
    /// answer.
    pub fn may_hold(&self, dev: &PciAddress) -> bool {
        match self {
            Held::NoKubelet => false,
            Held::Known(held) => held.contains(dev),
            Held::Unknown(_) => true,
        }
    }
}

impl From<BTreeSet<PciAddress>> for Held {
    fn from(held: BTreeSet<PciAddress>) -> Self {
        Held::Known(held)
    }
}

/// What the kubelet at `socket` says pods hold of `resources`.
pub async fn held_devices(socket: &Path, resources: &BTreeSet<String>, timeout: Duration) -> Held {
    let dir_exists = socket.parent().is_some_and(|d| d.is_dir());
    if !dir_exists {
        return Held::NoKubelet;
    }
    match list(socket, resources, timeout).await {
        Ok(held) => Held::Known(held),
        Err(e) => Held::Unknown(e.to_string()),
    }
}

async fn list(
    socket: &Path,
    resources: &BTreeSet<String>,
    timeout: Duration,
) -> Result<BTreeSet<PciAddress>, Error> {
    if !socket.exists() {
        return Err(Error::Missing {
            path: socket.display().to_string(),
        });
    }
    let pods = vfdp::podres::list(socket, timeout).await?;
    Ok(vfdp::podres::held_of(&pods, resources)
        .filter_map(|id| id.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn no_directory_means_no_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("pod-resources/kubelet.sock");
        assert_eq!(
            held_devices(&socket, &BTreeSet::new(), T).await,
            Held::NoKubelet
        );
    }

    #[tokio::test]
    async fn a_missing_or_silent_socket_is_unknown_not_nothing_held() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let held = held_devices(&socket, &BTreeSet::new(), T).await;
        assert!(
            matches!(&held, Held::Unknown(why) if why.contains("kubelet.sock") && why.contains("missing")),
            "{held:?}"
        );
        assert!(held.may_hold(&"0000:03:10.2".parse().unwrap()));

        // A socket file nobody listens on (a kubelet that died without removing it).
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        drop(listener);
        let held = held_devices(&socket, &BTreeSet::new(), T).await;
        assert!(matches!(held, Held::Unknown(_)), "{held:?}");
    }
}
