//! The container images `hack/image` builds, checked as a user and a runtime see them:
//! - the manifests name exactly these images, by the workspace's version;
//! - each archive is a valid OCI layout (every blob matches its digest, the layer its diff_id),
//!   labelled with the version and the commit, under 20 MB, and the same bytes when built twice;
//! - each image's rootfs runs its entrypoint the way a runtime starts it (a chroot into the
//!   unpacked layer with the config's user, environment and arguments): the agent and its `nft`,
//!   the CNI DaemonSet's two scripts (install, token refresh) with busybox, the controller as a
//!   non-root user;
//! - containerd (`ctr images import`, then `ctr run` with runc), docker (`docker load`, `docker
//!   run`) and podman (`podman load`) take each archive under the manifests' name.
//!
//! `hack/test` runs `hack/image` before the tests; here it is run again with `--no-build` (into
//! temp dirs), so the static binaries must exist: when they do not, this runs `hack/image` once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

const NAMES: [&str; 3] = ["vfgenie-agent", "vfgenie-cni", "vfgenie-controller"];
const VERSION: &str = env!("CARGO_PKG_VERSION");
const LIMIT_BYTES: u64 = 20_000_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn reference(name: &str) -> String {
    format!("localhost/{name}:{VERSION}")
}

fn archive_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{VERSION}.oci.tar"))
}

/// `hack/image --no-build --out DIR` (the binaries are built first when missing).
fn build_into(dir: &Path) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let built = target.join("x86_64-unknown-linux-gnu/release/vfgenie-agent");
    let mut cmd = Command::new(workspace().join("hack/image"));
    if built.exists() {
        cmd.arg("--no-build");
    }
    run(cmd.arg("--out").arg(dir));
}

/// Two builds of all three images, each in a temp dir.
fn builds() -> &'static [tempfile::TempDir; 2] {
    static B: OnceLock<[tempfile::TempDir; 2]> = OnceLock::new();
    B.get_or_init(|| {
        let a = tempfile::tempdir().unwrap();
        build_into(a.path());
        let b = tempfile::tempdir().unwrap();
        build_into(b.path());
        [a, b]
    })
}

fn sha256_of(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An image archive, unpacked as a runtime would: layout checked, layer extracted.
struct Unpacked {
    _dir: tempfile::TempDir,
    index: Value,
    config: Value,
    layer_bytes: u64,
    rootfs: PathBuf,
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digests");
    let path = layout.join("blobs/sha256").join(hex);
    assert_eq!(
        sha256_of(&path),
        hex,
        "blob {digest} does not match its name"
    );
    path
}

fn unpack(archive: &Path) -> Unpacked {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout));
    assert_eq!(
        read_json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = read_json(&layout.join("index.json"));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one manifest per archive");
    let manifest_path = blob(&layout, entries[0]["digest"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&manifest_path).unwrap().len(),
        entries[0]["size"].as_u64().unwrap()
    );
    let manifest = read_json(&manifest_path);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = read_json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    let mut layer_bytes = 0;
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let path = blob(&layout, layer["digest"].as_str().unwrap());
        layer_bytes += std::fs::metadata(&path).unwrap().len();
        let plain = dir.path().join("layer.tar");
        let gz = run(Command::new("gzip").arg("-dc").arg(&path));
        std::fs::write(&plain, gz.stdout).unwrap();
        assert_eq!(
            format!("sha256:{}", sha256_of(&plain)),
            diff_id.as_str().unwrap(),
            "the layer's diff_id"
        );
        run(Command::new("tar")
            .args(["-xpf"])
            .arg(&plain)
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&rootfs));
        std::fs::remove_file(&plain).unwrap();
    }
    // docker load's manifest.json names the same config and layers.
    let docker = read_json(&layout.join("manifest.json"));
    assert_eq!(
        docker[0]["Config"].as_str().unwrap(),
        format!(
            "blobs/sha256/{}",
            manifest["config"]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        )
    );
    Unpacked {
        _dir: dir,
        index,
        config,
        layer_bytes,
        rootfs,
    }
}

fn image(name: &str) -> Unpacked {
    unpack(&archive_in(builds()[0].path(), name))
}

/// The image's process as a runtime would start it: in a mount namespace of its own with /proc
/// and /dev mounted in the rootfs, chrooted into it, as the config's user, with only the config's
/// environment; `args` replace the config's Cmd, `entrypoint` (when set) its Entrypoint. With
/// `own_netns`, in a new network namespace too. The process is the chroot'd program itself (the
/// wrapper execs it), so signals reach it.
fn start(img: &Unpacked, entrypoint: Option<&[&str]>, args: &[&str], own_netns: bool) -> Command {
    let c = &img.config["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut argv: Vec<String> = match entrypoint {
        Some(e) => e.iter().map(|s| s.to_string()).collect(),
        None => strings(&c["Entrypoint"]),
    };
    argv.extend(args.iter().map(|s| s.to_string()));
    let user = c["User"].as_str().unwrap_or("0:0");
    let mut cmd = Command::new("unshare");
    cmd.arg("--mount");
    if own_netns {
        cmd.arg("--net");
    }
    cmd.args(["--", "/bin/sh", "-c"])
        .arg(
            r#"root=$1 user=$2; shift 2
mkdir -p "$root/proc" "$root/dev" && mount --bind /proc "$root/proc" && mount --rbind /dev "$root/dev" &&
exec chroot --userspec="$user" "$root" "$@""#,
        )
        .arg("runtime")
        .arg(&img.rootfs)
        .arg(user)
        .args(&argv)
        .env_clear();
    for kv in strings(&c["Env"]) {
        let (k, v) = kv.split_once('=').unwrap();
        cmd.env(k, v);
    }
    cmd.current_dir("/");
    cmd
}

/// Every `image:` of every container in the manifests.
fn manifest_images() -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "image" {
                        if let Some(s) = v.as_str() {
                            out.insert(s.to_string());
                        }
                    }
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for file in yaml_files(&workspace().join("manifests")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = v["kind"].as_str().unwrap_or_default();
            if matches!(kind, "DaemonSet" | "Deployment") {
                walk(&v["spec"]["template"], &mut out);
            }
        }
    }
    out
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn the_manifests_name_exactly_the_images_built_with_the_workspace_version() {
    let want: BTreeSet<String> = NAMES.iter().map(|n| reference(n)).collect();
    assert_eq!(manifest_images(), want);
    for name in NAMES {
        let img = image(name);
        let ann = &img.index["manifests"][0]["annotations"];
        assert_eq!(ann["org.opencontainers.image.ref.name"], reference(name));
        assert_eq!(ann["io.containerd.image.name"], reference(name));
    }
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let root = workspace().join("manifests");
    let k: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root.join("kustomization.yaml")).unwrap())
            .unwrap();
    let listed: BTreeSet<PathBuf> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| root.join(r.as_str().unwrap()))
        .collect();
    // cert-manager's objects only where cert-manager runs: its own overlay.
    let optional = root.join("controller/cert-manager");
    let all: BTreeSet<PathBuf> = yaml_files(&root)
        .into_iter()
        .filter(|p| !p.ends_with("kustomization.yaml") && !p.starts_with(&optional))
        .collect();
    assert_eq!(listed, all);
    let overlay: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(optional.join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let res: Vec<&str> = overlay["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(res.contains(&"certificate.yaml"), "{res:?}");
}

#[test]
fn images_are_labelled_small_and_reproducible() {
    let head = run(Command::new("git")
        .arg("-C")
        .arg(workspace())
        .args(["rev-parse", "HEAD"]));
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    for name in NAMES {
        let first = archive_in(builds()[0].path(), name);
        let second = archive_in(builds()[1].path(), name);
        assert_eq!(
            sha256_of(&first),
            sha256_of(&second),
            "{name}: two builds of the same tree differ"
        );
        let img = image(name);
        let labels = &img.config["config"]["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], VERSION);
        assert_eq!(labels["org.opencontainers.image.title"], name);
        let rev = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap();
        assert!(
            rev == head || rev == format!("{head}-dirty"),
            "{name}: revision {rev}, HEAD {head}"
        );
        assert!(
            img.layer_bytes < LIMIT_BYTES,
            "{name}: layer of {} bytes",
            img.layer_bytes
        );
        assert_eq!(img.config["os"], "linux");
        assert_eq!(img.config["architecture"], "amd64");
    }
}

#[test]
fn the_agent_image_runs_the_agent_and_nft() {
    let img = image("vfgenie-agent");
    let out = run(&mut start(&img, None, &["--help"], false));
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "inventory"] {
        assert!(help.contains(sub), "{help}");
    }
    // The policy engine runs `nft` from PATH; from the image, in a network namespace of its own.
    let out = run(&mut start(
        &img,
        Some(&["nft"]),
        &["-j", "list", "ruleset"],
        true,
    ));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed["nftables"].is_array(), "{listed}");
}

#[test]
fn the_controller_image_runs_as_a_non_root_user() {
    let img = image("vfgenie-controller");
    assert_eq!(img.config["config"]["User"], "65532:65532");
    let out = run(&mut start(&img, None, &["--help"], false));
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
    let who = run(&mut start(
        &img,
        Some(&["/usr/local/bin/vfgenie-controller"]),
        &["serve", "--help"],
        false,
    ));
    assert!(String::from_utf8_lossy(&who.stdout).contains("--tls-dir"));
    // Nothing in the image is writable by that user.
    for entry in walk(&img.rootfs) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        let sticky_tmp = entry.ends_with("tmp") && mode & 0o1000 != 0;
        assert!(
            mode & 0o002 == 0 || sticky_tmp,
            "{} is world-writable",
            entry.display()
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            0,
            "{}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A container's `sh -c` script from the CNI DaemonSet.
fn cni_script(init: bool) -> String {
    let text = std::fs::read_to_string(workspace().join("manifests/cni/daemonset.yaml")).unwrap();
    let ds: Value = serde_yaml_ng::from_str(&text).unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    let c = if init {
        &spec["initContainers"][0]
    } else {
        &spec["containers"][0]
    };
    let cmd = c["command"].as_array().unwrap();
    assert_eq!(cmd[0], "/bin/sh");
    assert_eq!(cmd[1], "-c");
    cmd[2].as_str().unwrap().to_string()
}

/// The files the CNI DaemonSet mounts, placed at their paths inside the rootfs.
fn mount_cni_volumes(rootfs: &Path) {
    let at = |p: &str| rootfs.join(p.trim_start_matches('/'));
    let sa = at("/var/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(sa.join("token"), "t0ken-1").unwrap();
    for d in ["/host/opt/cni/bin", "/host/etc/cni/net.d"] {
        std::fs::create_dir_all(at(d)).unwrap();
    }
    // The ConfigMaps' mount points, as the DaemonSet names them.
    let text = std::fs::read_to_string(workspace().join("manifests/cni/daemonset.yaml")).unwrap();
    let ds: Value = serde_yaml_ng::from_str(&text).unwrap();
    let cms = std::fs::read_to_string(workspace().join("manifests/cni/configmap.yaml")).unwrap();
    let cm: Value = serde_yaml_ng::from_str(&cms).unwrap();
    let init = &ds["spec"]["template"]["spec"]["initContainers"][0];
    for vm in init["volumeMounts"].as_array().unwrap() {
        let path = vm["mountPath"].as_str().unwrap();
        if vm["name"] == "genie-conf" {
            std::fs::create_dir_all(at(path)).unwrap();
            for (k, v) in cm["data"].as_object().unwrap() {
                std::fs::write(at(path).join(k), v.as_str().unwrap()).unwrap();
            }
        }
    }
    let agent = at("/etc/vfgenie");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(agent.join("config.json"), r#"{"resourceList":[]}"#).unwrap();
}

#[test]
fn the_cni_image_runs_both_daemonset_scripts_with_its_own_shell() {
    let img = image("vfgenie-cni");
    mount_cni_volumes(&img.rootfs);
    let host = img.rootfs.join("host");
    let service = |cmd: &mut Command| {
        cmd.env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443");
    };
    let mut install = start(&img, Some(&["/bin/sh", "-c"]), &[&cni_script(true)], false);
    service(&mut install);
    run(&mut install);
    let installed = host.join("opt/cni/bin/genie");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(img.rootfs.join("usr/local/bin/genie")).unwrap()
    );
    assert!(host.join("opt/cni/bin/sriov").exists());
    let kubeconfig = host.join("etc/cni/net.d/vfgenie.d/kubeconfig");
    assert!(std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .contains("https://10.96.0.1:443"));
    let confs: Vec<String> = std::fs::read_dir(host.join("etc/cni/net.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".conflist") || n.ends_with(".conf"))
        .collect();
    assert_eq!(confs.len(), 1, "{confs:?}");
    // The installed binary answers the runtime's VERSION call.
    let mut version = start(&img, Some(&["/host/opt/cni/bin/genie"]), &[], false);
    version.env("CNI_COMMAND", "VERSION").stdin(Stdio::null());
    let out = run(&mut version);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["supportedVersions"].as_array().unwrap().len() > 3, "{v}");

    // token-refresh: a rotated token reaches the host copy; SIGTERM ends it with status 0.
    std::fs::write(
        img.rootfs
            .join("var/run/secrets/kubernetes.io/serviceaccount/token"),
        "t0ken-2",
    )
    .unwrap();
    let mut refresh = start(&img, Some(&["/bin/sh", "-c"]), &[&cni_script(false)], false);
    // A group of its own: SIGTERM goes to the shell and its sleep, as when the container stops.
    std::os::unix::process::CommandExt::process_group(&mut refresh, 0);
    let mut child = refresh.spawn().unwrap();
    let token = host.join("etc/cni/net.d/vfgenie.d/token");
    let t0 = std::time::Instant::now();
    let copied = loop {
        if std::fs::read_to_string(&token).is_ok_and(|t| t == "t0ken-2") {
            break true;
        }
        if t0.elapsed() > std::time::Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    run(Command::new("kill")
        .arg("-TERM")
        .arg("--")
        .arg(format!("-{}", child.id())));
    let status = child.wait().unwrap();
    assert!(copied, "the rotated token was not copied");
    assert!(status.success(), "token-refresh ended with {status}");
}

/// Podman (Debian's) loads each archive under the name the manifests use, with the digest
/// hack/image printed and the config a runtime starts from. (Running a container with it does
/// not work on these machines: crun's setrlimit is refused and cgroups are in hybrid mode; the
/// chroot tests above start the entrypoints instead.)
#[test]
fn podman_loads_each_archive_with_its_name_digest_and_config() {
    let store = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(store.path().join("root"))
            .arg("--runroot")
            .arg(store.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        String::from_utf8(run(&mut cmd).stdout).unwrap()
    };
    for name in NAMES {
        let archive = archive_in(builds()[0].path(), name);
        let img = image(name);
        let loaded = podman(&["load", "-i", archive.to_str().unwrap()]);
        assert!(loaded.contains(&reference(name)), "{loaded}");
        let inspect: Value =
            serde_json::from_str(&podman(&["image", "inspect", &reference(name)])).unwrap();
        let got = &inspect[0];
        assert_eq!(got["Digest"], img.index["manifests"][0]["digest"], "{name}");
        assert_eq!(
            got["Config"]["User"], img.config["config"]["User"],
            "{name}"
        );
        assert_eq!(
            got["Config"]["Entrypoint"], img.config["config"]["Entrypoint"],
            "{name}"
        );
        assert_eq!(
            got["Labels"]["org.opencontainers.image.version"], VERSION,
            "{name}"
        );
    }
}

/// A containerd of its own (Debian's, CRI off) with state under a temp dir, driven by `ctr`: the
/// runtime Kubernetes nodes run, with runc.
struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{d}/containerd.sock\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = Self { dir, child };
        let t0 = std::time::Instant::now();
        while !me.ctr(&["version"]).status.success() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "containerd did not start: {}",
                std::fs::read_to_string(me.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        me
    }

    /// `ctr` with our socket, bounded to two minutes (a stuck container fails the test).
    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["120", "ctr"])
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["-n", "k8s.io"])
            .args(args);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Unpacked snapshots may still be mounted under the root.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("root"))
            .output();
    }
}

/// What a node does: `ctr images import` each archive into containerd's k8s.io namespace (the
/// one the kubelet uses), where it appears under the manifests' name with hack/image's digest;
/// then containerd and runc start each image's entrypoint: the agent's nft (privileged, as its
/// DaemonSet runs it), the installer's genie answering a runtime's VERSION call, the controller
/// as its non-root user.
#[test]
fn containerd_imports_and_runs_each_image() {
    let c = Containerd::start();
    for name in NAMES {
        let archive = archive_in(builds()[0].path(), name);
        let out = c.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ls = String::from_utf8(c.ctr(&["images", "ls"]).stdout).unwrap();
        let digest = image(name).index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            ls.lines()
                .any(|l| l.starts_with(&format!("{} ", reference(name))) && l.contains(&digest)),
            "{ls}"
        );
    }
    let run_in = |name: &str, id: &str, extra: &[&str], argv: &[&str]| {
        let r = reference(name);
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.push(&r);
        args.push(id);
        args.extend_from_slice(argv);
        // ctr does not pass stdin's end on to the container: nothing is read from it.
        let out = c.ctr_cmd(&args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let nft = run_in(
        "vfgenie-agent",
        "agent-nft",
        &["--privileged"],
        &["nft", "-j", "list", "ruleset"],
    );
    let listed: Value = serde_json::from_str(&nft).unwrap();
    assert!(listed["nftables"].is_array(), "{listed}");
    let help = run_in(
        "vfgenie-agent",
        "agent-help",
        &[],
        &["/usr/local/bin/vfgenie-agent", "--help"],
    );
    assert!(help.contains("inventory"), "{help}");
    // The runtime's VERSION call, its config piped by the image's own shell.
    let version = run_in(
        "vfgenie-cni",
        "cni-version",
        &["--env", "CNI_COMMAND=VERSION"],
        &["/bin/sh", "-c", r#"echo '{"cniVersion":"1.0.0"}' | genie"#],
    );
    let v: Value = serde_json::from_str(&version).unwrap();
    assert!(v["supportedVersions"].as_array().unwrap().len() > 3, "{v}");
    let help = run_in(
        "vfgenie-controller",
        "controller-help",
        &[],
        &["/usr/local/bin/vfgenie-controller", "--help"],
    );
    assert!(help.contains("serve"), "{help}");
}

/// Docker (Debian's dockerd, with state under a temp dir, no iptables, no bridge) loads each
/// archive through its `manifest.json` and runs its entrypoint.
#[test]
fn docker_loads_and_runs_each_image() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}/docker.sock", dir.path().display());
    let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
    let mut dockerd = Command::new("dockerd")
        .arg("--data-root")
        .arg(dir.path().join("data"))
        .arg("--exec-root")
        .arg(dir.path().join("exec"))
        .arg("--pidfile")
        .arg(dir.path().join("dockerd.pid"))
        .args(["-H", &sock])
        .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
        .args(["--containerd-namespace", "vfgenie-test"])
        .args(["--containerd-plugins-namespace", "vfgenie-test-plugins"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let docker = |args: &[&str]| {
        Command::new("timeout")
            .args(["120", "docker", "-H", &sock])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let t0 = std::time::Instant::now();
    while !docker(&["version"]).status.success() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "dockerd did not start: {}",
            std::fs::read_to_string(dir.path().join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let checked = std::panic::catch_unwind(|| {
        for (name, argv, says) in [
            ("vfgenie-agent", vec!["--help"], "inventory"),
            (
                "vfgenie-cni",
                vec![
                    "/bin/sh",
                    "-c",
                    r#"echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION genie"#,
                ],
                "supportedVersions",
            ),
            ("vfgenie-controller", vec!["--help"], "serve"),
        ] {
            let archive = archive_in(builds()[0].path(), name);
            let out = docker(&["load", "-i", archive.to_str().unwrap()]);
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && said.contains(&reference(name)),
                "{said}"
            );
            let mut args = vec!["run", "--rm", "--network", "none"];
            let r = reference(name);
            args.push(&r);
            args.extend(argv);
            let out = docker(&args);
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && said.contains(says),
                "{name}: {said}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    // SIGTERM: dockerd stops the containerd it started.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(dockerd.id().to_string())
        .status();
    let _ = dockerd.wait();
    if let Err(e) = checked {
        std::panic::resume_unwind(e);
    }
}
