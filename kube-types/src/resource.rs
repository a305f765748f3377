//! Device-plugin resource names: the extended resources a NetworkAttachmentDefinition's
//! `k8s.v1.cni.cncf.io/resourceName` and the agent's pools are called by.

/// Checks a device-plugin resource name (`k8s.v1.cni.cncf.io/resourceName`): an extended resource
/// `<domain>/<name>`, the domain a DNS subdomain, the name a qualified name. It becomes part of a
/// file name, so nothing else is accepted.
pub fn validate_resource_name(s: &str) -> Result<(), String> {
    let Some((domain, name)) = s.split_once('/') else {
        return Err(format!(
            "resource name {s:?} is not <domain>/<name> (e.g. intel.com/sriov_net)"
        ));
    };
    let domain_ok = !domain.is_empty()
        && crate::objects::is_dns_subdomain(domain)
        && domain.split('.').all(|l| l.len() <= 63);
    let nb = name.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    let name_ok = name.len() <= 63
        && nb.first().is_some_and(edge)
        && nb.last().is_some_and(edge)
        && nb
            .iter()
            .all(|c| edge(c) || matches!(c, b'-' | b'_' | b'.'))
        && !name.contains("..");
    if domain_ok && name_ok {
        Ok(())
    } else {
        Err(format!(
            "resource name {s:?} is not <domain>/<name> with a DNS domain and a name of letters, digits, '-', '_' and '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_extended_resource_names() {
        for ok in ["intel.com/sriov_a", "example.com/vf.net-1", "a/b"] {
            assert!(validate_resource_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "sriov",
            "intel.com/../../etc",
            "../x/y",
            "intel.com/a/b",
            "/a",
            "a/",
            "Intel.com/a",
            "intel.com/a..b",
            "intel.com/.a",
        ] {
            assert!(validate_resource_name(bad).is_err(), "{bad}");
        }
    }
}
