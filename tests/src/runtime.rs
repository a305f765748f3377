//! A container runtime's side of CNI, for host-tier tests: a node directory (CNI conf dir, bin dir
//! with our `genie` beside Debian's plugins, cache and IPAM dirs), pod sandboxes as real network
//! namespaces, and the CNI binary exec'd with the environment and stdin a runtime gives it.
//!
//! Later issues add SR-IOV VFs to the same pods: a [`Node`] takes extra conf files and NADs, and
//! [`Sandbox`] is a plain network namespace any link can be moved into.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::apiserver::{ApiServer, KubeAuth};

/// Where Debian's containernetworking-plugins live.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, short enough for link names (`<prefix><pid%10000><n>`).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        std::process::id() % 10000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `genie` binary of this build (target/<profile>/genie: beside the running executable, or
/// beside its directory for test executables in target/<profile>/deps).
pub fn genie_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let exe_dir = exe.parent().context("the executable has no directory")?;
    let profile_dir = if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir
            .parent()
            .context("test executable has no target dir")?
    } else {
        exe_dir
    };
    let bin = profile_dir.join("genie");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first (cargo build -p vfgenie-cni; cargo test --workspace does)",
            bin.display()
        );
    }
    // `cargo test -p vfgenie-tests` does not rebuild another package's binary: refuse a stale one
    // rather than test old code.
    let built = std::fs::metadata(&bin)?.modified()?;
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The binary's crates: cni/ (the binary, spec, sriov, genie) and the Kubernetes types.
    let newest = [here.join("../cni"), here.join("../kube-types/src")]
        .iter()
        .filter_map(|d| newest_file(d))
        .max_by_key(|(t, _)| *t);
    if let Some(newer) = newest.filter(|(t, _)| *t > built) {
        bail!(
            "{} is older than {}: rebuild it (cargo build -p vfgenie-cni; cargo test --workspace does)",
            bin.display(),
            newer.1.display()
        );
    }
    Ok(bin)
}

fn newest_file(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let cand = if p.is_dir() {
            newest_file(&p)
        } else {
            e.metadata().ok()?.modified().ok().map(|t| (t, p))
        };
        if let Some(c) = cand {
            if best.as_ref().is_none_or(|b| c.0 > b.0) {
                best = Some(c);
            }
        }
    }
    best
}

/// Fails the test unless it runs as root: the host tier creates namespaces and links.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "host-tier tests create network namespaces and links: run them as root (hack/test does)"
    );
}

/// A pod sandbox: a named network namespace, deleted on drop.
pub struct Sandbox {
    pub name: String,
    pub path: PathBuf,
}

impl Sandbox {
    pub fn new() -> anyhow::Result<Self> {
        let name = unique("gpod");
        run("ip", &["netns", "add", &name])?;
        Ok(Self {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        })
    }

    /// `ip -j addr` inside the sandbox: interface name → its addresses (CIDR strings).
    pub fn addresses(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let out = run("ip", &["-n", &self.name, "-j", "addr"])?;
        let v: Value = serde_json::from_str(&out)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                let name = l["ifname"].as_str().unwrap_or_default().to_string();
                let addrs = l["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["scope"] != "link" && a["scope"] != "host")
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
                    .collect();
                (name, addrs)
            })
            .collect())
    }

    /// Interface names in the sandbox, `lo` excluded.
    pub fn links(&self) -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = self
            .addresses()?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n != "lo")
            .collect();
        v.sort();
        Ok(v)
    }

    /// Default routes in the sandbox as `(family, gateway, dev)`.
    pub fn default_routes(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            let text = run(
                "ip",
                &[fam, "-n", &self.name, "-j", "route", "show", "default"],
            )?;
            let v: Value = serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text })?;
            for r in v.as_array().into_iter().flatten() {
                out.push((
                    fam.to_string(),
                    r["gateway"].as_str().unwrap_or_default().to_string(),
                    r["dev"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        Ok(out)
    }

    /// Deletes the namespace now (as when a pod's sandbox is already gone before DEL).
    pub fn destroy(&mut self) {
        if !self.name.is_empty() {
            let _ = run("ip", &["netns", "del", &self.name]);
            self.name.clear();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Runs a command and returns its stdout, or an error with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A link in the host namespace, deleted (with its veth peer) when dropped; one already gone
/// (moved away, deleted with its peer) is fine.
pub struct HostLink(pub String);

impl HostLink {
    /// A veth pair in the host, both ends up, named `<prefix><unique>` and `...p`: an Ethernet
    /// link to use as a macvlan master (this kernel has no dummy driver). Deleted on drop.
    pub fn veth(prefix: &str) -> anyhow::Result<Self> {
        let name = unique(prefix);
        let peer = format!("{name}p");
        run(
            "ip",
            &["link", "add", &name, "type", "veth", "peer", "name", &peer],
        )?;
        let link = HostLink(name);
        run("ip", &["link", "set", &link.0, "up"])?;
        run("ip", &["link", "set", &peer, "up"])?;
        Ok(link)
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Execs a CNI plugin `binary` as a runtime does: only `env` in its environment, `stdin` as its
/// config, stdout and stderr collected.
pub fn exec_cni(binary: &Path, env: &[(&str, &str)], stdin: &[u8]) -> anyhow::Result<CniOutput> {
    use std::io::Write;
    let mut child = Command::new(binary)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("no stdin")?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    Ok(CniOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// What one CNI call returned.
#[derive(Debug)]
pub struct CniOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("stdout is not JSON: {:?}", self.stdout))
    }
}

/// The bearer token a [`Node`]'s API stand-in requires (genie's kubeconfig sends it).
pub const NODE_TOKEN: &str = "t0ken";

/// A node: its CNI directories and the API server stand-in it talks to.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub api: ApiServer,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// host-local's dataDir for every network the tests define: leaked leases show here.
    pub ipam_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// A unique bridge name for the cluster network.
    pub bridge: String,
    /// Where the delegates (bridge, host-local, ...) are, after `bin_dir` in CNI_PATH.
    pub plugin_dir: PathBuf,
}

impl Node {
    pub fn new() -> anyhow::Result<Self> {
        Self::with_binaries(&genie_binary()?, Path::new(DEBIAN_CNI_DIR))
    }

    /// As [`Node::new`], with `genie` as the CNI binary (the lab guest has no target dir).
    pub fn with_genie(genie: &Path) -> anyhow::Result<Self> {
        Self::with_binaries(genie, Path::new(DEBIAN_CNI_DIR))
    }

    /// A node running `genie` with the delegates of `plugin_dir` (the SR-IOV lab's guest keeps
    /// its binaries elsewhere than a build tree and Debian's package).
    pub fn with_binaries(genie: &Path, plugin_dir: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let api = ApiServer::start()?;
        let conf_dir = dir.path().join("net.d");
        let bin_dir = dir.path().join("bin");
        let cache_dir = dir.path().join("cache");
        let ipam_dir = dir.path().join("ipam");
        for d in [&conf_dir, &bin_dir, &ipam_dir] {
            std::fs::create_dir_all(d)?;
        }
        std::os::unix::fs::symlink(genie, bin_dir.join("genie"))?;
        let kubeconfig =
            api.write_kubeconfig(&dir.path().join("kubeconfig"), KubeAuth::Token(NODE_TOKEN))?;
        api.set_token(Some(NODE_TOKEN));
        Ok(Self {
            dir,
            api,
            conf_dir,
            bin_dir,
            cache_dir,
            ipam_dir,
            kubeconfig,
            bridge: unique("gbr"),
            plugin_dir: plugin_dir.to_path_buf(),
        })
    }

    /// host-local IPAM for `subnet`, with its data kept under this node.
    pub fn ipam(&self, subnet: &str) -> Value {
        json!({"type": "host-local", "subnet": subnet, "dataDir": self.ipam_dir.display().to_string()})
    }

    /// Writes a conf file into the conf dir.
    pub fn write_conf(&self, file: &str, conf: &Value) -> anyhow::Result<()> {
        std::fs::write(self.conf_dir.join(file), serde_json::to_vec_pretty(conf)?)?;
        Ok(())
    }

    /// The genie conf: `cniVersion`, the node's directories and kubeconfig, host-local's `dataDir`
    /// allowed to tenants under `ipam_dir`, plus `extra` keys.
    pub fn genie_conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "genie",
            "type": "genie",
            "kubeconfig": self.kubeconfig.display().to_string(),
            "confDir": self.conf_dir.display().to_string(),
            "cniDir": self.cache_dir.display().to_string(),
            "binDir": self.bin_dir.display().to_string(),
            // The tests' NADs keep host-local's leases under this node (`Node::ipam`).
            "allowedTenantPaths": {"dataDir": [self.ipam_dir.display().to_string()]},
            // The audit log stays under this node, never the host's.
            "auditLog": {"path": self.audit_log().display().to_string()},
        });
        if let (Some(m), Value::Object(e)) = (c.as_object_mut(), extra) {
            m.extend(e);
        }
        c
    }

    /// genie's audit log under this node (set by [`Node::genie_conf`]).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("log/cni-audit.log")
    }

    /// Adds (or replaces) NAD `namespace/name`: ptp with host-local on `subnet`, and `routes`
    /// (host-local's `routes`, `[]` for none) from the pod.
    pub fn add_ptp_nad(&self, namespace: &str, name: &str, subnet: &str, routes: Value) {
        let mut ipam = self.ipam(subnet);
        ipam["routes"] = routes;
        let c = json!({"cniVersion": "1.0.0", "name": name, "type": "ptp", "ipMasq": false,
                       "ipam": ipam});
        self.api.add_nad(namespace, name, &c.to_string(), None);
    }

    /// The agent's hot-plug options for this node: node `node-1` (the stand-in's pods' node),
    /// genie's records, confs and binary here, Debian's plugins beside it.
    pub fn hotplug_options(&self) -> vfagent::hotplug::HotplugOptions {
        let mut opts = vfagent::hotplug::HotplugOptions::new("node-1");
        opts.genie_cni_dir = self.cache_dir.clone();
        opts.cni_conf_dir = self.conf_dir.clone();
        opts.cni_bin_dir = self.bin_dir.clone();
        opts.cni_path = Some(format!(
            "{}:{}",
            self.bin_dir.display(),
            self.plugin_dir.display()
        ));
        opts
    }

    /// The cluster network: a bridge (default gateway) with host-local on `subnet`.
    pub fn cluster_conflist(&self, subnet: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "cluster",
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": true, "isDefaultGateway": true,
                 "ipMasq": false, "ipam": self.ipam(subnet)}
            ]
        })
    }

    /// Execs genie as a runtime does.
    pub fn cni(
        &self,
        command: &str,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        pod: Option<(&str, &str)>,
        conf: &Value,
    ) -> anyhow::Result<CniOutput> {
        self.cni_with_args(command, container_id, netns, ifname, pod, "", conf)
    }

    /// As [`Node::cni`], with `extra` (`K=V;K=V`) appended to CNI_ARGS (e.g. `K8S_POD_UID=...`).
    #[allow(clippy::too_many_arguments)]
    pub fn cni_with_args(
        &self,
        command: &str,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        pod: Option<(&str, &str)>,
        extra: &str,
        conf: &Value,
    ) -> anyhow::Result<CniOutput> {
        let genie = self.bin_dir.join("genie");
        self.exec_plugin(
            &genie,
            command,
            container_id,
            netns,
            ifname,
            pod,
            extra,
            conf,
        )
    }

    /// Execs any CNI plugin `binary` as a runtime does (the same environment genie gets; benchmarks
    /// call Debian's plugins directly with it to compare), `extra` appended to CNI_ARGS.
    #[allow(clippy::too_many_arguments)]
    pub fn exec_plugin(
        &self,
        binary: &Path,
        command: &str,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        pod: Option<(&str, &str)>,
        extra: &str,
        conf: &Value,
    ) -> anyhow::Result<CniOutput> {
        let mut args = String::from("IgnoreUnknown=true");
        if let Some((ns, name)) = pod {
            args.push_str(&format!(
                ";K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id}"
            ));
        }
        if !extra.is_empty() {
            args.push(';');
            args.push_str(extra);
        }
        let path = format!("{}:{}", self.bin_dir.display(), self.plugin_dir.display());
        let netns = netns.to_string_lossy();
        exec_cni(
            binary,
            &[
                ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container_id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", &args),
                ("CNI_PATH", &path),
            ],
            &serde_json::to_vec(conf)?,
        )
    }

    /// host-local leases currently held under this node (files named after an IP).
    pub fn leases(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(nets) = std::fs::read_dir(&self.ipam_dir) {
            for n in nets.flatten() {
                if let Ok(files) = std::fs::read_dir(n.path()) {
                    for f in files.flatten() {
                        let name = f.file_name().to_string_lossy().into_owned();
                        if name.parse::<std::net::IpAddr>().is_ok() {
                            out.push(name);
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Asserts that nothing of a pod is left: no link in its sandbox, no lease, no cache record.
    pub fn assert_nothing_left(&self, sb: &Sandbox) {
        let links = sb
            .links()
            .unwrap_or_else(|e| vec![format!("cannot list: {e}")]);
        assert!(links.is_empty(), "links left in the pod: {links:?}");
        assert!(self.leases().is_empty(), "leases left: {:?}", self.leases());
        assert!(
            self.cache_records().is_empty(),
            "cache records left: {:?}",
            self.cache_records()
        );
    }

    /// Pod cache records left under the cache dir.
    pub fn cache_records(&self) -> Vec<String> {
        std::fs::read_dir(self.cache_dir.join("vfgenie"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
