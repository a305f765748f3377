//! Fuzz targets: each feeds one input to the public function production code calls on outside
//! input and checks what must hold whatever the input is.
//!
//! The invariants, for every target: the parser does not panic (the runner catches it), answers
//! within a bounded time (the runner times each case), and keeps its output in proportion to its
//! input (an answer whose `Debug` is far larger than the input, or a size cap that is not
//! enforced, is a violation). A writer/reader pair must also round-trip: whatever the reader
//! accepted, written back and read again, is the same. A target returns `Err` with what was
//! violated; the generators and the runner live in `tests/fuzz.rs` (proptest is a dev-dependency).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use cnispec::{CniArgs, CniResult, CniVersion, NetConf, NetConfList};

/// What shape of input a target reads; the runner picks its generator by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON document (mutated structurally, then sometimes byte-wise).
    Json,
    /// A line of text (annotation short forms, CNI_ARGS, kubeconfig YAML).
    Text,
    /// Binary datagrams (netlink, uevents).
    Binary,
}

/// A scratch directory for the targets whose entry point reads a file.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh empty directory under the scratch directory (removing what a case left).
    fn fresh(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.dir.path().join(name);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("clearing {}: {e}", p.display())),
        }
        std::fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        Ok(p)
    }
}

thread_local! {
    static ACCEPTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A target says whether its main parser accepted the input: the runner reports the share of
/// accepted cases, which shows how deep the generators reach (an input every parser refuses at
/// its first byte exercises little).
fn accepted(yes: bool) {
    ACCEPTED.with(|a| a.set(yes));
}

/// Whether the last case run on this thread was accepted (and reset).
pub fn take_accepted() -> bool {
    ACCEPTED.with(|a| a.replace(false))
}

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub shape: Shape,
    pub run: fn(&Scratch, &[u8]) -> Result<(), String>,
}

/// Every target, in the order the runner lists them.
pub fn targets() -> &'static [Target] {
    TARGETS
}

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The seed corpus directory of a target (`fuzz/corpus/<name>`).
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// The seeds of a target, sorted by file name. Binary targets' seeds are written as hex
/// (`.hex`, whitespace and `#` comments ignored) so they stay reviewable.
pub fn seeds(name: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = corpus_dir(name);
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = e.path();
        let file = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes = if file.ends_with(".hex") {
            from_hex(&String::from_utf8_lossy(&bytes))
                .map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            bytes
        };
        out.push((file, bytes));
    }
    out.sort();
    Ok(out)
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// The answer of a parser may not be much larger than its input: a bound on what one input can
/// make a long-running process hold.
fn proportionate(what: &str, input_len: usize, answer: &dyn std::fmt::Debug) -> Result<(), String> {
    let len = format!("{answer:?}").len();
    let limit = 512 * input_len + 64 * 1024;
    if len > limit {
        return Err(format!(
            "{what}: a {input_len}-byte input gave a {len}-byte answer (limit {limit})"
        ));
    }
    Ok(())
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// CNI: netconf, conflists, results, CNI_ARGS

fn netconf(_: &Scratch, input: &[u8]) -> Result<(), String> {
    let conf = NetConf::from_bytes(input);
    accepted(conf.is_ok());
    proportionate("NetConf::from_bytes", input.len(), &conf)?;
    if let Ok(conf) = &conf {
        for v in CniVersion::ALL {
            let prev = conf.parsed_prev_result(v);
            proportionate("NetConf::parsed_prev_result", input.len(), &prev)?;
        }
    }
    let list = NetConfList::from_bytes_any(input);
    proportionate("NetConfList::from_bytes_any", input.len(), &list)?;
    // The sriov plugin reads the same bytes on its stdin.
    let sriov = vfsriov::netconf::SriovConf::parse(input, &CniArgs::default());
    proportionate("SriovConf::parse", input.len(), &sriov)?;
    Ok(())
}

fn genie_conf(_: &Scratch, input: &[u8]) -> Result<(), String> {
    let conf = vfmeta::genieconf::GenieConf::from_slice(input);
    accepted(conf.is_ok());
    proportionate("GenieConf::from_slice", input.len(), &conf)
}

fn cni_result(_: &Scratch, input: &[u8]) -> Result<(), String> {
    for default in CniVersion::ALL {
        let Ok(result) = CniResult::parse(input, default) else {
            continue;
        };
        accepted(true);
        proportionate("CniResult::parse", input.len(), &result)?;
        // Written as it was read and read back: the same result.
        let again = CniResult::parse(result.to_json().as_bytes(), default)
            .map_err(|e| format!("a result we wrote does not parse: {e}"))?;
        if again != result {
            return Err(format!(
                "result round trip differs:\n read {result:?}\n then {again:?}"
            ));
        }
        // Converting to every version we answer in: a result of that version that parses back.
        for to in CniVersion::ALL {
            let converted = result.to_version(to);
            let back = CniResult::parse(converted.to_json().as_bytes(), to)
                .map_err(|e| format!("a result converted to {to:?} does not parse: {e}"))?;
            if back != converted {
                return Err(format!(
                    "converted to {to:?} then read back differs:\n {converted:?}\n {back:?}"
                ));
            }
        }
        let merged = CniResult::merge(default, &[result.clone(), result]);
        proportionate("CniResult::merge", 2 * input.len(), &merged)?;
    }
    Ok(())
}

fn cni_args(_: &Scratch, input: &[u8]) -> Result<(), String> {
    let args = CniArgs::parse(&text(input));
    accepted(args.is_ok());
    proportionate("CniArgs::parse", input.len(), &args)
}

// ---------------------------------------------------------------------------------------------
// Pod annotations, both styles, and network-status

fn pod() -> vfkube::annotations::PodRef {
    vfkube::annotations::PodRef {
        namespace: "tenant-a".into(),
        name: "pod-1".into(),
    }
}

fn npwg_networks(_: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfkube::annotations::{parse_default_network, parse_networks, NETWORKS};
    use vfkube::objects::is_dns_label;
    let value = text(input);
    let pod = pod();
    let nets = parse_networks(&pod, NETWORKS, &value);
    accepted(nets.is_ok());
    proportionate("parse_networks", input.len(), &nets)?;
    let default = parse_default_network(&pod, &value);
    proportionate("parse_default_network", input.len(), &default)?;
    // What a tenant names becomes a path segment of an API request and a file name: an accepted
    // selection names a network and a namespace by DNS-1123 labels only (no `/`, no `..`).
    let mut accepted_sel: Vec<_> = nets.unwrap_or_default();
    accepted_sel.extend(default.ok().flatten());
    for sel in &accepted_sel {
        let ns_ok = sel.namespace.as_deref().is_none_or(is_dns_label);
        if !is_dns_label(&sel.name) || !ns_ok {
            return Err(format!(
                "accepted a network that is not DNS-1123: {:?}/{:?}",
                sel.namespace, sel.name
            ));
        }
    }
    Ok(())
}

fn genie_annotations(_: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfkube::annotations::{parse_genie_cni, parse_genie_networks};
    let value = text(input);
    let pod = pod();
    let cni = parse_genie_cni(&pod, &value);
    accepted(cni.is_ok());
    proportionate("parse_genie_cni", input.len(), &cni)?;
    let nets = parse_genie_networks(&pod, &value);
    proportionate("parse_genie_networks", input.len(), &nets)?;
    // A plugin name becomes a file name in the conf and bin dirs, a LogicalNetwork name a path
    // segment of an API request.
    for p in cni.ok().flatten().unwrap_or_default() {
        if !vfkube::annotations::is_plugin_name(&p.plugin) {
            return Err(format!("accepted plugin name {:?}", p.plugin));
        }
    }
    for n in nets.unwrap_or_default() {
        if !vfkube::objects::is_object_name(&n.name) {
            return Err(format!("accepted LogicalNetwork name {:?}", n.name));
        }
    }
    Ok(())
}

/// A JSON object of annotations (string values; other values are dropped as the API would
/// refuse them).
fn pod_annotations(_: &Scratch, input: &[u8]) -> Result<(), String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(input) else {
        return Ok(());
    };
    let annotations: BTreeMap<String, String> = map
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect();
    let req = vfkube::annotations::parse_pod_annotations(&pod(), &annotations);
    accepted(req.is_ok());
    proportionate("parse_pod_annotations", input.len(), &req)
}

fn network_status(_: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfkube::netstatus::{
        network_status_json, parse_network_status, AttachmentStatus, STATUS_MAX_BYTES,
    };
    let value = text(input);
    let read = parse_network_status(&value);
    accepted(read.is_ok());
    proportionate("parse_network_status", input.len(), &read)?;
    if value.len() > STATUS_MAX_BYTES && read.is_ok() {
        return Err(format!(
            "a {}-byte network-status was read (cap {STATUS_MAX_BYTES})",
            value.len()
        ));
    }
    let Ok(read) = read else { return Ok(()) };
    // What was read, written as genie writes it, reads back the same.
    let attachments: Vec<AttachmentStatus> = read
        .entries
        .iter()
        .map(|e| AttachmentStatus {
            network: e.name.clone(),
            interface: e.interface.clone(),
            ips: e.ips.clone(),
            default: e.default,
            ..AttachmentStatus::default()
        })
        .collect();
    let written = network_status_json(&attachments).map_err(|e| format!("writing: {e}"))?;
    let again = parse_network_status(&written)
        .map_err(|e| format!("network-status we wrote does not parse: {e}"))?;
    if again.entries != read.entries || !again.skipped.is_empty() {
        return Err(format!(
            "network-status round trip differs:\n read {:?}\n then {again:?}",
            read.entries
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cluster objects: NADs, LogicalNetworks, policies, AdmissionReview

fn nad_config(_: &Scratch, input: &[u8]) -> Result<(), String> {
    let spec = text(input);
    let tenant = vfkube::untrusted::TenantPaths::default();
    let parsed = vfkube::netconf::parse_spec_config("tenant-a", "net1", &spec, &tenant);
    accepted(parsed.is_ok());
    proportionate("parse_spec_config", input.len(), &parsed)?;
    // The whole object as the webhook decodes it.
    let object = serde_json::json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "net1", "namespace": "tenant-a"},
        "spec": {"config": spec},
    });
    let outcome = vfcontroller::validate::nad::validate_nad_object(&object, "tenant-a");
    proportionate("validate_nad_object", input.len(), &outcome)
}

fn admission_review(_: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfcontroller::lookup::{MemoryLookup, Settings};
    let Ok(req) = vfcontroller::review::parse(input) else {
        return Ok(());
    };
    accepted(true);
    proportionate("review::parse", input.len(), &req)?;
    let lookup = MemoryLookup::new();
    let outcome = vfcontroller::validate::review(&req, &lookup, &Settings::default());
    proportionate("validate::review", input.len(), &outcome)
}

fn logical_network(_: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfcontroller::lookup::MemoryLookup;
    let Ok(object) = serde_json::from_slice::<Value>(input) else {
        return Ok(());
    };
    let lookup = MemoryLookup::new();
    let outcome = vfcontroller::validate::logical::validate_logical_network_object(
        &object, "tenant-a", &lookup,
    );
    accepted(outcome.is_ok());
    proportionate("validate_logical_network_object", input.len(), &outcome)
}

fn genie_policy(_: &Scratch, input: &[u8]) -> Result<(), String> {
    let value = text(input);
    let rules = vfkube::policy::parse_genie_policy(&value);
    accepted(rules.is_ok());
    proportionate("parse_genie_policy", input.len(), &rules)?;
    let parsed = vfagent::policy::watch::policies::parse_genie("tenant-a", "p", Some(&value));
    proportionate("parse_genie", input.len(), &parsed)
}

fn multi_policy(_: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfagent::policy::watch::objects::RawMultiPolicy;
    let Ok(raw) = serde_json::from_slice::<RawMultiPolicy>(input) else {
        return Ok(());
    };
    let parsed = vfagent::policy::watch::policies::parse_multi(&raw);
    accepted(matches!(
        parsed,
        vfagent::policy::watch::policies::Parsed::Good(_)
    ));
    proportionate("parse_multi", input.len(), &parsed)?;
    if let Some(v) = raw
        .metadata
        .annotations
        .get(vfkube::policy::POLICY_FOR)
        .cloned()
    {
        let targets = vfkube::policy::parse_policy_for(&v);
        proportionate("parse_policy_for", input.len(), &targets)?;
    }
    Ok(())
}

mod node;
use node::{
    agent_config, device_info, genie_record, kubeconfig, kubelet_checkpoint, netlink,
    policy_request, sriov_record, uevent,
};

const TARGETS: &[Target] = &[
    Target {
        name: "netconf",
        about: "network configs and conflists (NetConf, NetConfList, prevResult, the sriov plugin's SriovConf)",
        shape: Shape::Json,
        run: netconf,
    },
    Target {
        name: "genie-conf",
        about: "genie's own conf in net.d (GenieConf::from_slice)",
        shape: Shape::Json,
        run: genie_conf,
    },
    Target {
        name: "cni-result",
        about: "delegate results of every CNI version: parse, write back, convert to each version, merge",
        shape: Shape::Json,
        run: cni_result,
    },
    Target {
        name: "cni-args",
        about: "CNI_ARGS (K=V;K=V)",
        shape: Shape::Text,
        run: cni_args,
    },
    Target {
        name: "npwg-networks",
        about: "k8s.v1.cni.cncf.io/networks and default-network, JSON and short form",
        shape: Shape::Text,
        run: npwg_networks,
    },
    Target {
        name: "genie-annotations",
        about: "CNI-Genie's cni and networks annotations",
        shape: Shape::Text,
        run: genie_annotations,
    },
    Target {
        name: "pod-annotations",
        about: "every network annotation of a pod together (parse_pod_annotations)",
        shape: Shape::Json,
        run: pod_annotations,
    },
    Target {
        name: "network-status",
        about: "network-status read back (size cap) and written then read again",
        shape: Shape::Text,
        run: network_status,
    },
    Target {
        name: "nad-config",
        about: "a NAD's spec.config from a tenant (parse_spec_config, the webhook's validate_nad_object)",
        shape: Shape::Json,
        run: nad_config,
    },
    Target {
        name: "admission-review",
        about: "AdmissionReview bodies posted to the webhook, parsed and reviewed",
        shape: Shape::Json,
        run: admission_review,
    },
    Target {
        name: "logical-network",
        about: "LogicalNetwork objects as the webhook decodes and validates them",
        shape: Shape::Json,
        run: logical_network,
    },
    Target {
        name: "genie-policy",
        about: "genieNetworkpolicy annotations (kube-types and the agent's watch)",
        shape: Shape::Text,
        run: genie_policy,
    },
    Target {
        name: "multi-policy",
        about: "MultiNetworkPolicy objects and their policy-for annotation (the agent's watch)",
        shape: Shape::Json,
        run: multi_policy,
    },
    Target {
        name: "policy-request",
        about: "the agent's policy socket requests from genie (protocol::parse)",
        shape: Shape::Json,
        run: policy_request,
    },
    Target {
        name: "agent-config",
        about: "the agent's config file (Config::load)",
        shape: Shape::Json,
        run: agent_config,
    },
    Target {
        name: "kubeconfig",
        about: "genie's kubeconfig (ClusterConfig::from_kubeconfig)",
        shape: Shape::Text,
        run: kubeconfig,
    },
    Target {
        name: "kubelet-checkpoint",
        about: "the kubelet's device checkpoint (checkpoint::pod_devices)",
        shape: Shape::Json,
        run: kubelet_checkpoint,
    },
    Target {
        name: "device-info",
        about: "device-info files: read, written back, read again",
        shape: Shape::Json,
        run: device_info,
    },
    Target {
        name: "genie-record",
        about: "genie's pod records: read, listed, written back, read again",
        shape: Shape::Json,
        run: genie_record,
    },
    Target {
        name: "sriov-record",
        about: "the sriov plugin's attachment records: read, listed, written back, read again",
        shape: Shape::Json,
        run: sriov_record,
    },
    Target {
        name: "netlink",
        about: "netlink replies: messages, errors, links, addresses, routes, VF configs",
        shape: Shape::Binary,
        run: netlink,
    },
    Target {
        name: "uevent",
        about: "kernel uevents (uevent_matters)",
        shape: Shape::Binary,
        run: uevent,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_seeds_and_a_unique_name() {
        let mut names: Vec<_> = targets().iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), targets().len());
        for t in targets() {
            let seeds = seeds(t.name).unwrap();
            assert!(!seeds.is_empty(), "{} has no seeds", t.name);
        }
    }

    #[test]
    fn hex_seeds_ignore_comments_and_spaces() {
        assert_eq!(from_hex("0a 0B # x\n ff").unwrap(), vec![0x0a, 0x0b, 0xff]);
        assert!(from_hex("abc").is_err());
    }

    #[test]
    fn an_answer_out_of_proportion_is_a_violation() {
        assert!(proportionate("x", 10, &"y".repeat(100)).is_ok());
        assert!(proportionate("x", 10, &"y".repeat(200_000)).is_err());
    }
}
