use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::sync::watch;
use vfagent::inventory::Inventory;
use vfagent::policy::service::PolicyOptions;
use vfagent::run::RunOptions;
use vfagent::state::Snapshot;
use vfcore::SysRoot;

#[derive(Parser)]
#[command(name = "vfgenie-agent", version, about = "SR-IOV node agent")]
struct Cli {
    /// Root under which /sys and /dev are read (a fixture tree in tests).
    #[arg(long, global = true, default_value = "/", env = "VFGENIE_SYSFS_ROOT")]
    sysfs_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size of the `run` arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Provision VFs and serve the configured pools to the kubelet until SIGTERM or SIGINT.
    Run {
        /// The config file (resourceList and provisioning).
        #[arg(long, default_value = "/etc/vfgenie/config.json")]
        config: PathBuf,
        /// The kubelet's device-plugin directory.
        #[arg(long, default_value = vfdp::paths::DEVICE_PLUGIN_DIR)]
        plugin_dir: PathBuf,
        /// Where device-info files are written.
        #[arg(long, default_value = vfdp::devinfo::DEVINFO_DIR)]
        devinfo_dir: PathBuf,
        /// The kubelet's PodResources socket.
        #[arg(long, default_value = vfdp::paths::POD_RESOURCES_SOCKET)]
        pod_resources_socket: PathBuf,
        /// Seconds between full reconciles without events.
        #[arg(long, default_value_t = 60)]
        resync_seconds: u64,
        /// Milliseconds between health checks without events.
        #[arg(long, default_value_t = 1000)]
        health_ms: u64,
        /// Where /metrics and /healthz are served: one address or a comma-separated list; "off"
        /// serves neither. The default is the node's loopback only (both endpoints are
        /// unauthenticated and the agent uses the host's network); give 0.0.0.0:9808 to let
        /// scrapers from elsewhere in.
        #[arg(long, default_value = vfagent::http::DEFAULT_ADDRS)]
        metrics_addr: String,
        /// At most this many /metrics and /healthz connections are open at once (a new one beyond
        /// it closes the oldest).
        #[arg(long, default_value_t = vfagent::http::DEFAULT_MAX_CONNECTIONS)]
        metrics_max_connections: usize,
        /// genie's `cniDir` on this node: its `quarantine/` is counted in the metrics.
        #[arg(long, default_value = "/var/lib/cni/vfgenie")]
        genie_cni_dir: PathBuf,
        /// The sriov plugin's state directory (`VFGENIE_SRIOV_STATE_DIR`): its `quarantine/` is
        /// counted in the metrics.
        #[arg(long, default_value = "/var/lib/cni/vfgenie/sriov")]
        sriov_state_dir: PathBuf,
        /// Enforce network policies (genieNetworkpolicy, MultiNetworkPolicy) with nftables on this
        /// node: watches the API server (in-cluster config or KUBECONFIG) for this node's pods.
        #[arg(long, env = "VFGENIE_POLICY")]
        policy: bool,
        /// Hot-plug: when a running pod's network annotation changes, run genie's UPDATE for it
        /// (needs --node-name and the API; genie from --cni-bin-dir, its conf from
        /// --cni-conf-dir).
        #[arg(long, env = "VFGENIE_HOTPLUG")]
        hotplug: bool,
        /// The node's CNI plugin directory (genie and its delegates), for hot-plug.
        #[arg(long, default_value = "/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        /// This node's name (the DaemonSet sets NODE_NAME from spec.nodeName).
        #[arg(long, env = "NODE_NAME", default_value = "")]
        node_name: String,
        /// The socket genie asks for a new pod's policy table on ("off": none).
        #[arg(long, default_value = vfagent::policy::socket::DEFAULT_SOCKET)]
        policy_socket: String,
        /// The nft binary (default: from PATH).
        #[arg(long)]
        nft: Option<PathBuf>,
        /// Where the network KPIs are written for genie's smart selection ("off": not sampled).
        #[arg(long, default_value = vfkube::kpi::DEFAULT_KPI_FILE)]
        kpi_file: String,
        /// Seconds between two KPI samples.
        #[arg(long, default_value_t = 10)]
        kpi_interval: u64,
        /// Write a compact KPI summary on this node's Node object (vfgenie.io/network-kpis; needs
        /// --node-name and the API): "true" or "false".
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        kpi_node_annotation: bool,
        /// The CNI conf dir: each conf file there is a network whose KPIs are sampled.
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        /// The agent's audit log (its events, one JSON line each; 10 MB, 5 files); "off": none.
        #[arg(long, default_value = vfaudit::DEFAULT_AGENT_LOG)]
        audit_log: String,
        /// genie's audit log on this node (its conf's `auditLog.path`), read by /report.
        #[arg(long, default_value = vfaudit::DEFAULT_CNI_LOG)]
        genie_audit_log: PathBuf,
    },
    /// Report on the node's audit logs: per network and plugin, calls, failures by CNI code,
    /// p50/p99 durations, addresses handed out and released, VFs allocated, the pods that failed
    /// most, and smart selections with their reasons.
    Report {
        /// Only the lines of this last while (30m, 1h, 2d).
        #[arg(long, value_parser = vfaudit::time::parse_since)]
        since: Option<std::time::Duration>,
        /// Only this network's lines.
        #[arg(long)]
        network: Option<String>,
        /// Only this pod's lines (NAMESPACE/NAME).
        #[arg(long, value_parser = vfaudit::report::Query::parse_pod)]
        pod: Option<(String, String)>,
        /// table, json or csv.
        #[arg(long, default_value = "table")]
        format: vfaudit::Format,
        /// The logs to read, each with its rotated files (default: genie's and the agent's).
        #[arg(long = "log")]
        logs: Vec<PathBuf>,
    },
    /// Move a running pod to another member of a selectable group it is attached to
    /// (make-before-break, same interface name): sets its vfgenie.io/switch-to annotation; the
    /// agent on the pod's node (--hotplug) makes the switch. Uses KUBECONFIG or in-cluster config.
    Switch {
        /// The pod: NAMESPACE/NAME.
        pod: String,
        /// The group member to move to (a NetworkAttachmentDefinition or LogicalNetwork of the
        /// pod's namespace).
        #[arg(long)]
        to: String,
    },
    /// Print the node's SR-IOV capable NICs, their VFs and other network PCI functions.
    Inventory {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The agent's config: with it, each device's pool and health are shown (read when the
        /// file exists; the default is the agent's own).
        #[arg(long, default_value = "/etc/vfgenie/config.json")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VFGENIE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfgenie-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let root = SysRoot::new(cli.sysfs_root);
    match cli.command {
        Command::Run {
            config,
            plugin_dir,
            devinfo_dir,
            pod_resources_socket,
            resync_seconds,
            health_ms,
            metrics_addr,
            metrics_max_connections,
            genie_cni_dir,
            sriov_state_dir,
            policy,
            hotplug,
            cni_bin_dir,
            node_name,
            policy_socket,
            nft,
            audit_log,
            genie_audit_log,
            kpi_file,
            kpi_interval,
            kpi_node_annotation,
            cni_conf_dir,
        } => {
            let mut report_logs = vec![genie_audit_log.clone()];
            if audit_log != "off" {
                let path = PathBuf::from(&audit_log);
                anyhow::ensure!(path.is_absolute(), "--audit-log must be an absolute path");
                vfagent::audit::init(vfaudit::AuditConfig::with_defaults(&path));
                report_logs.push(path);
            }
            let kpi = (kpi_file != "off").then(|| {
                let mut k = vfagent::kpi::KpiOptions::new(PathBuf::from(&kpi_file));
                k.interval = std::time::Duration::from_secs(kpi_interval.max(1));
                k.cni_conf_dir = cni_conf_dir.clone();
                k.genie_cni_dir = genie_cni_dir.clone();
                k.node = node_name.clone();
                k.genie_audit_log = Some(genie_audit_log.clone());
                k
            });
            let hotplug = match hotplug {
                true => {
                    anyhow::ensure!(
                        !node_name.is_empty(),
                        "--hotplug needs the node's name (--node-name or NODE_NAME)"
                    );
                    let mut h = vfagent::hotplug::HotplugOptions::new(node_name.clone());
                    h.genie_cni_dir = genie_cni_dir.clone();
                    h.cni_conf_dir = cni_conf_dir.clone();
                    h.cni_bin_dir = cni_bin_dir;
                    h.kpi_file = (kpi_file != "off").then(|| PathBuf::from(&kpi_file));
                    Some(h)
                }
                false => None,
            };
            let policy = if policy {
                if node_name.is_empty() {
                    anyhow::bail!("--policy needs the node's name (--node-name or NODE_NAME)");
                }
                Some(PolicyOptions {
                    node_name,
                    genie_cni_dir: genie_cni_dir.clone(),
                    socket: (policy_socket != "off").then(|| PathBuf::from(&policy_socket)),
                    nft,
                    resync: vfagent::policy::service::DEFAULT_RESYNC,
                    host_netns: None,
                })
            } else {
                None
            };
            let mut opts = RunOptions::new(config);
            opts.kernel_events = root == SysRoot::host();
            opts.root = root;
            opts.plugin_dir = plugin_dir;
            opts.devinfo_dir = devinfo_dir;
            opts.pod_resources_socket = pod_resources_socket;
            opts.quarantine_dirs = vec![
                ("genie".into(), genie_cni_dir.join("quarantine")),
                ("sriov".into(), sriov_state_dir.join("quarantine")),
            ];
            opts.resync_interval = std::time::Duration::from_secs(resync_seconds.max(1));
            opts.health_interval = std::time::Duration::from_millis(health_ms.max(50));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let metrics = (metrics_addr != "off").then_some(metrics_addr);
            let limits = vfagent::http::Limits {
                max_connections: metrics_max_connections.max(1),
                ..vfagent::http::Limits::default()
            };
            rt.block_on(run_agent(
                opts,
                metrics,
                limits,
                policy,
                report_logs,
                kpi.map(|k| (k, kpi_node_annotation)),
                hotplug,
            ))?;
        }
        Command::Report {
            since,
            network,
            pod,
            format,
            logs,
        } => {
            let logs = match logs.is_empty() {
                true => vfagent::audit::default_logs(),
                false => logs,
            };
            let query = vfaudit::Query {
                since,
                network,
                pod,
            };
            let report = vfaudit::report::report(&logs, &query, std::time::SystemTime::now());
            print!("{}", report.render(format));
        }
        Command::Switch { pod, to } => {
            let Some((namespace, name)) = pod.split_once('/') else {
                anyhow::bail!("{pod:?}: give the pod as NAMESPACE/NAME");
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = kube::Client::try_default().await?;
                vfagent::hotplug::request_switch(client, namespace, name, &to, None)
                    .await
                    .map_err(anyhow::Error::msg)
            })?;
            println!("pod {pod} asked to switch to {to}; the agent on its node makes the switch");
        }
        Command::Inventory { json, config } => {
            let inv = if config.exists() {
                let cfg = vfagent::config::Config::load(&config)?;
                Inventory::read_with_pools(&root, &cfg)?
            } else {
                Inventory::read(&root)?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                print!("{}", inv.table());
            }
        }
    }
    Ok(())
}

async fn run_agent(
    opts: RunOptions,
    metrics: Option<String>,
    limits: vfagent::http::Limits,
    policy: Option<PolicyOptions>,
    report_logs: Vec<PathBuf>,
    // The KPI sampler, and whether it writes its summary on the Node.
    kpi: Option<(vfagent::kpi::KpiOptions, bool)>,
    hotplug: Option<vfagent::hotplug::HotplugOptions>,
) -> anyhow::Result<()> {
    let (state_tx, state_rx) = watch::channel(Snapshot::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let kpi = match kpi {
        Some((k, kpi_node_annotation)) => {
            // The Node summary needs the API; outside a cluster the KPIs go on without it.
            let node = match (k.node.is_empty(), kpi_node_annotation) {
                (false, true) => match kube::Client::try_default().await {
                    Ok(c) => Some(vfagent::kpi::node::NodeAnnotation::new(c, k.node.clone())),
                    Err(e) => {
                        tracing::warn!(error = %e, "no API client: the KPI summary is not written on the Node");
                        None
                    }
                },
                _ => None,
            };
            Some(tokio::spawn(vfagent::kpi::run(
                k,
                state_rx.clone(),
                opts.pod_resources_socket.clone(),
                stop_rx.clone(),
                node,
            )))
        }
        None => None,
    };
    let http = match metrics {
        Some(spec) => {
            let listeners = vfagent::http::bind(&spec).await?;
            Some(tokio::spawn(vfagent::http::serve_all(
                listeners,
                limits,
                state_rx,
                stop_rx.clone(),
                report_logs,
            )))
        }
        None => None,
    };
    let hotplug = match hotplug {
        Some(h) => {
            let client = kube::Client::try_default().await?;
            Some(tokio::spawn(vfagent::hotplug::run(
                client,
                h,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let policy = match policy {
        Some(p) => {
            let client = kube::Client::try_default().await?;
            Some(tokio::spawn(vfagent::policy::service::run(
                client,
                p,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let mut agent = tokio::spawn(vfagent::run::run(opts, state_tx, stop_rx));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut policy = policy;
    let policy_ended = async {
        match policy.as_mut() {
            Some(p) => p.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        // The agent ends on its own only when it cannot start (e.g. an invalid config).
        r = &mut agent => return Ok(r??),
        // The policy engine ends on its own only when it fails: the agent goes too (restarted
        // by its DaemonSet) rather than serve on with policies no longer enforced.
        r = policy_ended => {
            r??;
            anyhow::bail!("the policy engine stopped");
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    agent.await??;
    if let Some(h) = http {
        h.await??;
    }
    if let Some(p) = policy {
        p.await??;
    }
    if let Some(k) = kpi {
        k.await?;
    }
    if let Some(h) = hotplug {
        h.await?;
    }
    Ok(())
}
