//! Whether a VF may be changed (removed with its PF's VF count, or rebound to another driver).
//!
//! Fail closed: a VF is changed only when both the kernel's own evidence ([`vfcore::inuse`]) and the
//! kubelet ([`Held`]) agree it is free. A kubelet that is expected but does not answer, or kernel
//! state that cannot be read, refuses the change; the reconcile reports a condition and retries.
//! VFs the reconcile created itself moments before are exempt: nothing can hold them yet, and their
//! netdevs may not have appeared.

use vfcore::inuse::{self, Usage};
use vfcore::{PciAddress, SysRoot};

use crate::podres::Held;

/// Why VFs may not be changed now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refusal {
    /// At least one VF is known to be in use (not merely unknown).
    pub in_use: bool,
    /// One sentence per VF that blocks the change.
    pub details: Vec<String>,
}

impl Refusal {
    /// The condition reason: `in_use` names the reason when a VF is certainly used, `maybe` when
    /// only unknowns block the change.
    pub fn reason<'a>(&self, in_use: &'a str, maybe: &'a str) -> &'a str {
        if self.in_use {
            in_use
        } else {
            maybe
        }
    }
}

/// What is known about one VF: the kubelet's word, then the kernel's.
fn usage(root: &SysRoot, vf: &PciAddress, held: &Held) -> Usage {
    if let Held::Known(h) = held {
        if h.contains(vf) {
            return Usage::InUse(format!(
                "VF {vf} is held by a pod (the kubelet's PodResources)"
            ));
        }
    }
    match inuse::vf_usage(root, vf) {
        Usage::Free => match held {
            Held::Unknown(why) => Usage::Unknown(format!(
                "VF {vf} may be held by a pod: the kubelet cannot tell ({why})"
            )),
            Held::NoKubelet | Held::Known(_) => Usage::Free,
        },
        other => other,
    }
}

/// `None` when every VF of `vfs` may be changed; otherwise why not.
pub fn refusal<'a>(
    root: &SysRoot,
    vfs: impl IntoIterator<Item = &'a PciAddress>,
    held: &Held,
) -> Option<Refusal> {
    let mut r = Refusal::default();
    for vf in vfs {
        match usage(root, vf, held) {
            Usage::Free => {}
            Usage::InUse(why) => {
                r.in_use = true;
                r.details.push(why);
            }
            Usage::Unknown(why) => r.details.push(why),
        }
    }
    (!r.details.is_empty()).then_some(r)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::testutil::copy_fixture;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn both_the_kernel_and_the_kubelet_must_say_free() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let vfs = [
            addr("0000:03:10.0"),
            addr("0000:03:10.2"),
            addr("0000:03:10.6"),
        ];
        let nothing = Held::Known(BTreeSet::new());
        assert_eq!(refusal(&root, &vfs, &nothing), None);
        assert_eq!(refusal(&root, &vfs, &Held::NoKubelet), None);

        // The kubelet holds one.
        let r = refusal(&root, &vfs, &Held::Known([addr("0000:03:10.0")].into())).unwrap();
        assert!(r.in_use);
        assert_eq!(r.details.len(), 1);
        assert!(r.details[0].contains("0000:03:10.0"), "{:?}", r.details);

        // The kubelet does not answer: every VF may be held.
        let r = refusal(&root, &vfs, &Held::Unknown("socket missing".into())).unwrap();
        assert!(!r.in_use);
        assert_eq!(r.details.len(), 3);
        assert_eq!(r.reason("VfsInUse", "VfsMaybeInUse"), "VfsMaybeInUse");

        // The kernel shows VF 10.2's netdev gone from the host: in use, whatever the kubelet says.
        std::fs::remove_dir_all(root.pci_attr(&addr("0000:03:10.2"), "net")).unwrap();
        for held in [nothing, Held::NoKubelet] {
            let r = refusal(&root, &vfs, &held).unwrap();
            assert!(r.in_use);
            assert_eq!(r.details.len(), 1, "{:?}", r.details);
            assert!(r.details[0].contains("0000:03:10.2"), "{:?}", r.details);
        }
    }
}
