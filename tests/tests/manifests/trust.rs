//! Privilege and trust across the manifests (design: "Trust boundaries").

use super::*;

/// The agent stays privileged for the two things nothing narrower grants (the device cgroup for
/// opening `/dev/vfio/<group>`, the runtime's LSM profile for sysfs writes), the manifest says so
/// where it sets it, and it carries no narrowing field that a privileged container ignores (or
/// the API refuses), which would only suggest a confinement that is not there.
#[test]
fn the_agent_is_privileged_only_with_its_reasons_and_no_ineffective_narrowing() {
    let m = load();
    let ds = agent_daemon_set(&m);
    let spec = pod_spec(ds);
    assert_ne!(spec.host_pid, Some(true), "the agent needs no host PIDs");
    assert_ne!(spec.host_ipc, Some(true), "the agent needs no host IPC");
    assert_ne!(spec.share_process_namespace, Some(true));
    let c = agent_container(ds);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "sysfs and the kubelet dirs are root's"
    );
    // Ignored for a privileged container: every capability is granted, no seccomp profile is
    // applied. And the API refuses allowPrivilegeEscalation: false together with privileged.
    assert!(sc.capabilities.is_none(), "capabilities mean nothing here");
    assert!(sc.seccomp_profile.is_none(), "seccomp is not applied here");
    assert!(spec
        .security_context
        .as_ref()
        .is_none_or(|p| p.seccomp_profile.is_none()));
    assert!(sc.allow_privilege_escalation.is_none());
    // The reasons, in the manifest: which operation needs what, and why nothing narrower works.
    let text = std::fs::read_to_string(workspace().join("manifests/agent/daemonset.yaml")).unwrap();
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for reason in [
        "open(/dev/vfio/<group>)",
        "device cgroup",
        "AppArmor",
        "SELinux",
        "CAP_NET_ADMIN",
        "sriov_numvfs",
    ] {
        assert!(
            header.contains(reason),
            "the header does not explain {reason}"
        );
    }
}

/// The agent's HTTP server binds node-local by default; with host network the kubelet probes it
/// from the host's netns, so every probe must name 127.0.0.1 (the default host is the pod IP,
/// which on host network is the node's address, where nothing listens).
#[test]
fn the_agent_probes_ask_the_node_local_server() {
    let m = load();
    let ds = agent_daemon_set(&m);
    assert_eq!(pod_spec(ds).host_network, Some(true));
    let c = agent_container(ds);
    let probes = [
        ("startupProbe", &c.startup_probe),
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
    ];
    for (name, probe) in probes {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{name} is not an HTTP probe"));
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"), "{name}");
        assert!(
            get.scheme.as_deref().is_none_or(|s| s == "HTTP"),
            "{name}: the agent serves plain HTTP"
        );
    }
}

/// Both CNI containers: root (the host's CNI dirs are root's) but with no capability at all, no
/// privilege escalation, a read-only root filesystem and the runtime's default seccomp profile.
#[test]
fn the_cni_containers_run_with_no_capabilities() {
    let m = load();
    let ds = cni_daemon_set(&m);
    let spec = pod_spec(ds);
    let pod_seccomp = spec
        .security_context
        .as_ref()
        .and_then(|p| p.seccomp_profile.as_ref());
    let all: Vec<&Container> = std::iter::once(init_container(ds))
        .chain(&spec.containers)
        .collect();
    assert_eq!(all.len(), 2);
    for c in all {
        let sc = c.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{}",
            c.name
        );
        assert!(
            caps.add.as_ref().is_none_or(Vec::is_empty),
            "{}: adds capabilities",
            c.name
        );
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.run_as_user,
            Some(0),
            "{}: writes root-owned host dirs",
            c.name
        );
        assert_ne!(sc.run_as_non_root, Some(true), "{}", c.name);
        let seccomp = sc.seccomp_profile.as_ref().or(pod_seccomp);
        assert_eq!(
            seccomp.map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{}",
            c.name
        );
    }
    assert_ne!(spec.host_pid, Some(true));
    assert_ne!(spec.host_ipc, Some(true));
}

/// The token genie uses lies on every node's disk and can update any pod's status: it is a
/// projected token of at most an hour (not the auto-mounted one, which the API server may extend
/// to a year), mounted read-only where the scripts read it, with the cluster CA beside it.
#[test]
fn the_cni_token_on_the_host_is_short_lived() {
    let m = load();
    let ds = cni_daemon_set(&m);
    let spec = pod_spec(ds);
    assert_eq!(spec.automount_service_account_token, Some(false));
    let volume = token_volume(ds).expect("a projected ServiceAccount token volume");
    let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let token = sources
        .iter()
        .find_map(|s| s.service_account_token.as_ref())
        .unwrap();
    assert_eq!(token.path, "token");
    assert!(token.audience.is_none(), "the API server's own audience");
    let ttl = token.expiration_seconds.expect("an explicit lifetime");
    // 3607 is the lifetime of the auto-mounted token, which the API server extends to a year.
    assert!((600..=3600).contains(&ttl), "token lifetime {ttl}s");
    let ca = sources
        .iter()
        .find_map(|s| s.config_map.as_ref())
        .expect("the cluster CA beside the token");
    assert_eq!(ca.name, "kube-root-ca.crt");
    let items = ca.items.as_ref().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("ca.crt", "ca.crt")
    );
    let all: Vec<&Container> = std::iter::once(init_container(ds))
        .chain(&spec.containers)
        .collect();
    for c in all {
        assert!(script(c).contains(&format!("sa={SA_DIR}\n")), "{}", c.name);
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|vm| vm.mount_path == SA_DIR)
            .unwrap_or_else(|| panic!("{}: nothing mounted at {SA_DIR}", c.name));
        assert_eq!(mount.name, volume.name, "{}", c.name);
        assert_eq!(mount.read_only, Some(true), "{}", c.name);
    }
}

/// The shipped conf is for a multi-tenant cluster: a pod may use only its own namespace's NADs
/// (no global namespaces), and the node's own default network is not a NAD, so isolation cannot
/// refuse it to pods outside kube-system.
#[test]
fn the_shipped_genie_conf_isolates_namespaces() {
    let m = load();
    let (list, conf) = genie_conf(&m);
    assert_eq!(list["plugins"][0]["namespaceIsolation"], true);
    assert!(conf.namespace_isolation);
    assert!(conf.global_namespaces.is_empty());
    assert!(conf
        .check_isolation("tenant-a", "p", "tenant-a", "net")
        .is_ok());
    assert!(conf
        .check_isolation("tenant-a", "p", "tenant-b", "net")
        .is_err());
    assert!(conf
        .check_isolation("tenant-a", "p", "kube-system", "net")
        .is_err());
    // clusterNetwork and defaultNetworks naming NADs are checked like the pod's own choices:
    // the shipped default network is a conf file, and there are no defaultNetworks.
    let cluster_network = conf.cluster_network.as_deref().unwrap();
    assert!(
        cluster_network.starts_with('/'),
        "clusterNetwork {cluster_network} must not be a NAD while isolation is on"
    );
    assert!(conf.default_networks.is_empty());
}
