//! What the chaos runs share (`hack/chaos` on the host, `hack/vmlab chaos` in the lab): the seeded
//! generator, genie killed mid-call, the node's processes still running, and a pod's
//! network-status as interface → addresses.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::runtime::Node;

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A seed from the clock, when none is given.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1
}

/// The pod a genie call is for.
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub namespace: &'a str,
    pub pod: &'a str,
}

/// Runs genie (the node's) with `call` and kills it (SIGKILL) after `after`, as a node losing the
/// process would.
pub fn kill_genie_during(
    node: &Node,
    call: &Call<'_>,
    conf: &Value,
    after: Duration,
) -> anyhow::Result<()> {
    use std::io::Write;
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
        call.namespace, call.pod, call.container_id
    );
    let path = format!("{}:{}", node.bin_dir.display(), node.plugin_dir.display());
    let mut child = Command::new(node.bin_dir.join("genie"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&serde_json::to_vec(conf)?);
    }
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// genie or delegate processes of `node` still running: those whose command line or environment
/// (genie hands its delegates a CNI_PATH starting with the node's bin dir) names the node's bin
/// dir. Other tests running the same plugins at the same time are not counted.
pub fn node_processes(node: &Node) -> anyhow::Result<Vec<String>> {
    std::thread::sleep(Duration::from_millis(20));
    let bin = node.bin_dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let read = |f: &str| std::fs::read(e.path().join(f)).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
        let environ = String::from_utf8_lossy(&read("environ")).into_owned();
        if cmdline.contains(&bin) || environ.contains(&bin) {
            out.push(format!("{name} {}", cmdline.trim()));
        }
    }
    Ok(out)
}

/// `kind=N (M ADDs failed)` for every fault injected but `none`, comma-separated.
pub fn faults_summary(
    faults: &BTreeMap<&'static str, usize>,
    failed_adds: &BTreeMap<&'static str, usize>,
) -> String {
    faults
        .iter()
        .filter(|(k, _)| **k != "none")
        .map(|(k, v)| {
            let failed = failed_adds.get(k).copied().unwrap_or(0);
            format!("{k}={v} ({failed} ADDs failed)")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Interface → sorted IPv4/IPv6 addresses (without prefix length).
pub type Addresses = BTreeMap<String, Vec<String>>;

/// The last network-status genie wrote for `pod`, as [`Addresses`]; none when it wrote none.
pub fn status_addresses(node: &Node, pod: &str) -> anyhow::Result<Option<Addresses>> {
    let Some(w) = node.api.writes().into_iter().rev().find(|w| w.name == pod) else {
        return Ok(None);
    };
    let Some(text) = w.annotation("k8s.v1.cni.cncf.io/network-status") else {
        return Ok(None);
    };
    let status: Value = serde_json::from_str(text)?;
    let mut said = Addresses::new();
    for s in status.as_array().into_iter().flatten() {
        let ifname = s["interface"].as_str().unwrap_or_default().to_string();
        let ips = s["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string));
        said.entry(ifname).or_default().extend(ips);
    }
    for v in said.values_mut() {
        v.sort();
    }
    Ok(Some(said))
}

/// `(name, ["addr/len", ...])` links as read from a pod, as [`Addresses`] (`lo` left out).
pub fn addresses_of(links: impl IntoIterator<Item = (String, Vec<String>)>) -> Addresses {
    links
        .into_iter()
        .filter(|(n, _)| n != "lo")
        .map(|(n, addrs)| {
            let mut v: Vec<String> = addrs
                .into_iter()
                .map(|a| a.split('/').next().unwrap_or_default().to_string())
                .collect();
            v.sort();
            (n, v)
        })
        .collect()
}
